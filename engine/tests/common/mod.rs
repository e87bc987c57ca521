//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use backset_engine::store::Config;
use tempfile::TempDir;

/// A fresh directory on the real disk, under the target directory (never /tmp, which may be tmpfs).
pub fn tempdir() -> TempDir {
    TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("create a test directory under CARGO_TARGET_TMPDIR")
}

/// A small configuration for tests: no background checkpointer (tests call checkpoint_now), 4 KiB segments.
pub fn config(name: &str) -> Config {
    let mut c = Config::new(name);
    c.checkpoint_interval = None;
    c.segment_bytes = backset_engine::limits::MIN_SEGMENT_BYTES;
    c.atom_buckets = 16;
    c
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::yield_now();
    }
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
