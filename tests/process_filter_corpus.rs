//! Replays the committed corpus and crash files of the fuzz target `process_filter` (`fuzz/corpus/process_filter/`,
//! `fuzz/artifacts/process_filter/`) through the body the fuzzer runs, so CI keeps what a fuzzer found fixed without
//! running a fuzzer.

use std::path::PathBuf;

use backset::process_filter::fuzz::process_filter;

#[test]
fn every_process_filter_corpus_and_crash_file_passes() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("process_filter")) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| process_filter(&data));
            assert!(outcome.is_ok(), "fuzz target process_filter panics on {}", path.display());
            files += 1;
        }
    }
    assert!(files >= 10, "fuzz/corpus/process_filter has {files} seed files");
}
