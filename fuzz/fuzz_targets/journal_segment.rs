#![no_main]
//! Fuzz target `journal_segment`: see `backset_format::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backset_format::fuzz::run("journal_segment", data));
