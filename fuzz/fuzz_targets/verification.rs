#![no_main]
//! Fuzz target `verification`: see `backset_format::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backset_format::fuzz::run("verification", data));
