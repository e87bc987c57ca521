//! Replays every committed fuzz corpus and crash file through the same target bodies the fuzzer runs, so CI covers
//! what the fuzzers found without running a fuzzer.

use std::path::PathBuf;

use backset_format::fuzz::{run, TARGETS};

#[test]
fn every_corpus_and_crash_file_parses_without_panic() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for target in TARGETS {
        let mut files = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| run(target, &data));
                assert!(outcome.is_ok(), "fuzz target {target} panics on {}", path.display());
                files += 1;
            }
        }
        assert!(files > 0, "fuzz/corpus/{target} has no seed files");
    }
}
