#![no_main]
//! Fuzz target `atom_header`: see `backset_format::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backset_format::fuzz::run("atom_header", data));
