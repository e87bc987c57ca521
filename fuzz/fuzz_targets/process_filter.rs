#![no_main]
//! Fuzz target `process_filter`: NuoDB's process filter parser (`--process-filter`, `filterQuery`), compiled from
//! `src/process_filter.rs` alone (it needs only `std`), so this crate does not build the server. Body:
//! `backset::process_filter::fuzz::process_filter`, shared with `tests/process_filter_corpus.rs`.

// The target uses the parser and the fuzz body; the rest of the module (what the server uses) is dead code here.
#[allow(dead_code)]
#[path = "../../src/process_filter.rs"]
mod process_filter;

libfuzzer_sys::fuzz_target!(|data: &[u8]| process_filter::fuzz::process_filter(data));
