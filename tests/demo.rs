//! End to end: the README's first command, `backset demo`, run as the real binary on a real directory.

use std::process::Command;

#[test]
fn demo_writes_and_verifies_an_archive_and_a_backup_set() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let work = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_backset"))
        .args(["demo", "--commits", "500", "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("500 commits"), "{stdout}");
    // What it wrote is in the format: the state decodes, the journal reads back whole.
    let state: backset::format::State = backset::format::fsio::read_metadata(&work.join("backup-set/state")).unwrap();
    assert_eq!(state.database_name, "demo");
    let seg = std::fs::read(work.join("archive/journal/0000000000000001")).unwrap();
    let (_, reader) = backset::format::read_segment(&seg).unwrap();
    assert_eq!(reader.map(|r| r.unwrap().txn_id).collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>());
}

#[test]
fn demo_refuses_a_non_empty_directory_and_leaves_it_alone() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(dir.path().join("keep"), b"mine").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backset")).arg("demo").arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read(dir.path().join("keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_backset")).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
