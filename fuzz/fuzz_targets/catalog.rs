#![no_main]
//! Fuzz target `catalog`: see `backset_format::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backset_format::fuzz::run("catalog", data));
