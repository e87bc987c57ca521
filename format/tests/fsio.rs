//! Reading and atomically writing metadata files on a real file system.

mod common;

use std::os::unix::fs::symlink;

use backset_format::fsio::{read_metadata, write_file_atomic, write_metadata, TMP_FILE_PREFIX};
use backset_format::*;

fn scratch() -> tempfile::TempDir {
    // Under the target directory: a real disk, not a tmpfs.
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::tempdir_in(base).unwrap()
}

#[test]
fn write_then_read_back() {
    let dir = scratch();
    write_metadata(dir.path(), "state", &common::sample_state()).unwrap();
    assert_eq!(read_metadata::<State>(&dir.path().join("state")).unwrap(), common::sample_state());
}

#[test]
fn atomic_write_replaces_whole_and_leaves_no_temporary() {
    let dir = scratch();
    write_file_atomic(dir.path(), "f", b"old contents").unwrap();
    write_file_atomic(dir.path(), "f", b"new").unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["f"]);
}

#[test]
fn failed_atomic_write_keeps_the_old_file() {
    let dir = scratch();
    write_file_atomic(dir.path(), "f", b"old").unwrap();
    // A directory in the way of the rename makes the rename fail after the temporary was written.
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/x"), b"").unwrap();
    assert!(write_file_atomic(dir.path(), "d", b"new").is_err());
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
    let stray = std::fs::read_dir(dir.path())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(TMP_FILE_PREFIX));
    assert!(!stray, "a failed write leaves no temporary file");
}

#[test]
fn invalid_value_is_not_written() {
    let dir = scratch();
    let mut s = common::sample_state();
    s.database_name = "a/b".into();
    let err = write_metadata(dir.path(), "state", &s).unwrap_err();
    assert!(err.to_string().contains("state") && err.to_string().contains("'/'"), "{err}");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn symlinks_and_directories_are_refused() {
    let dir = scratch();
    write_metadata(dir.path(), "real", &common::sample_catalog()).unwrap();
    symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let err = read_metadata::<Catalog>(&dir.path().join("link")).unwrap_err();
    assert!(matches!(err, ReadError::NotRegular { .. }), "{err}");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert!(matches!(read_metadata::<Catalog>(&dir.path().join("sub")), Err(ReadError::NotRegular { .. })));
}

#[test]
fn errors_name_the_file() {
    let dir = scratch();
    let path = dir.path().join("state");
    let err = read_metadata::<State>(&path).unwrap_err();
    assert!(err.to_string().starts_with(&format!("open {}", path.display())), "{err}");
    std::fs::write(&path, b"not metadata at all, but long enough to hold a whole header, surely").unwrap();
    let err = read_metadata::<State>(&path).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()) && err.to_string().contains("magic"), "{err}");
}

#[test]
fn a_file_larger_than_the_limit_is_refused_without_reading_it_whole() {
    let dir = scratch();
    let path = dir.path().join("huge");
    let f = std::fs::File::create(&path).unwrap();
    // Sparse: no disk space used.
    f.set_len(56 + limits::MAX_METADATA_BODY_BYTES + 1).unwrap();
    let err = read_metadata::<State>(&path).unwrap_err();
    assert!(matches!(err, ReadError::Metadata { source: MetadataError::BodyTooLarge { .. }, .. }), "{err}");
}
