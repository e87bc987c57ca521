//! The wall clock as Backset records it: microseconds since the Unix epoch (a hot copy's begin and end, a status's
//! times; the reference store's commit timestamps take it too).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now (0 for a clock set before 1970).
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
