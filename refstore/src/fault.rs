//! A test-only fault point of the reference store, so a test can make its journal writer fail as a shortage of
//! descriptors would.
//!
//! `BACKSET_FAULT_JOURNAL_CREATE=<n>` makes the first `n` attempts of the process's journal writers to create their
//! next segment (at a rollover) fail with an injected I/O error naming the variable, as EMFILE would: fewer than
//! [`JOURNAL_RETRY_ATTEMPTS`](crate::limits::JOURNAL_RETRY_ATTEMPTS) are retried away, more stop the SM.
//!
//! Never set it outside tests. The engine's fault points (hot copies, restores) are in `backset_engine::hotcopy::fault`.

use std::sync::OnceLock;

/// The environment variable giving how many journal segment creations fail.
pub const FAULT_JOURNAL_CREATE_ENV: &str = "BACKSET_FAULT_JOURNAL_CREATE";

/// Fails (an injected I/O error) while the test-only `BACKSET_FAULT_JOURNAL_CREATE` count lasts; each call takes one.
pub(crate) fn journal_create() -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LEFT: OnceLock<AtomicU64> = OnceLock::new();
    let left = LEFT.get_or_init(|| {
        let value = std::env::var(FAULT_JOURNAL_CREATE_ENV).unwrap_or_default();
        AtomicU64::new(value.parse().unwrap_or_else(|_| {
            if !value.is_empty() {
                tracing::warn!("{FAULT_JOURNAL_CREATE_ENV}={value} is not a count; ignored");
            }
            0
        }))
    });
    match left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(n) => Err(std::io::Error::other(format!(
            "test-only {FAULT_JOURNAL_CREATE_ENV}: failure injected ({} more to come)",
            n - 1
        ))),
        Err(_) => Ok(()),
    }
}
