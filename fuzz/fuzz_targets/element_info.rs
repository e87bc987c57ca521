#![no_main]
//! Fuzz target `element_info`: see `backset_format::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backset_format::fuzz::run("element_info", data));
