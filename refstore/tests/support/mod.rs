//! The reference store's integration test support: every helper two of its test files need, once. The engine's
//! tests use it too (engine/tests/support), since they hot-copy the store's archives.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use backset_refstore::Config;
use tempfile::TempDir;

/// A fresh directory on the real disk, under the target directory (never /tmp, which may be tmpfs).
pub fn tempdir() -> TempDir {
    TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("create a test directory under CARGO_TARGET_TMPDIR")
}

/// A small configuration for tests: no background checkpointer (tests call checkpoint_now), 4 KiB segments.
pub fn config(name: &str) -> Config {
    let mut c = Config::new(name);
    c.checkpoint_interval = None;
    c.segment_bytes = backset_refstore::limits::MIN_SEGMENT_BYTES;
    c.atom_buckets = Some(16);
    c
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        // Poll, but leave the cores to the threads being waited for (two cores here).
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The segment files of an archive's journal, in number order.
pub fn segment_files(archive: &Path) -> Vec<std::path::PathBuf> {
    let dir = archive.join("journal");
    file_names(&dir).into_iter().filter(|n| n.len() == 16).map(|n| dir.join(n)).collect()
}

/// Every record of an archive's journal: `(segment, txn id, timestamp)`, read with the format's reader.
pub fn journal_records(archive: &Path) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for path in segment_files(archive) {
        let bytes = std::fs::read(&path).unwrap();
        let (h, reader) = backset_format::read_segment(&bytes).unwrap();
        for r in reader {
            let r = r.unwrap();
            out.push((h.segment, r.txn_id, r.timestamp_micros));
        }
    }
    out
}

/// Asserts two key/value maps are equal, reporting the first few differences rather than both maps.
pub fn assert_entries_eq(
    actual: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    expected: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    what: &str,
) {
    if actual == expected {
        return;
    }
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing {}", show(k))),
            Some(a) if a != v => diffs.push(format!("{}: {} bytes, expected {} bytes", show(k), a.len(), v.len())),
            _ => {}
        }
    }
    diffs.extend(actual.keys().filter(|k| !expected.contains_key(*k)).map(|k| format!("unexpected {}", show(k))));
    panic!(
        "{what}: {} keys, expected {}; {} differences, first: {:?}",
        actual.len(),
        expected.len(),
        diffs.len(),
        &diffs[..diffs.len().min(8)]
    );
}

/// Reads the bytes of a journal slice and parses its records with the format's reader: a slice at offset 0 as a
/// whole segment, any other from its record boundary. Checks that it ends cleanly. Returns the txn ids.
pub fn slice_txns(slice: &backset_engine::archive::JournalSlice) -> Vec<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&slice.path).unwrap();
    f.seek(SeekFrom::Start(slice.offset)).unwrap();
    let mut bytes = vec![0u8; slice.len as usize];
    f.read_exact(&mut bytes).unwrap();
    let mut reader = if slice.offset == 0 {
        let (h, r) = backset_format::read_segment(&bytes).unwrap();
        assert_eq!(h.segment, slice.segment);
        r
    } else {
        backset_format::RecordReader::new(slice.segment, slice.offset, &bytes, slice.first_txn - 1)
    };
    let txns: Vec<u64> = reader.by_ref().map(|r| r.unwrap().txn_id).collect();
    assert_eq!(reader.tail(), Some(backset_format::Tail::Clean), "slice {slice:?} ends on a record boundary");
    assert_eq!((txns.first().copied(), txns.last().copied()), (Some(slice.first_txn), Some(slice.last_txn)));
    txns
}

/// Lays a hot copy's journal slices down as restorable segments in `target/journal`: a slice at offset 0 as is, a
/// mid-segment slice behind a segment header whose first txn is the slice's first.
pub fn write_slices(
    slices: &[backset_engine::archive::JournalSlice],
    database_id: uuid::Uuid,
    archive_id: u64,
    target: &Path,
) {
    use std::io::{Read, Seek, SeekFrom};
    let dir = target.join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    for s in slices {
        let mut f = std::fs::File::open(&s.path).unwrap();
        f.seek(SeekFrom::Start(s.offset)).unwrap();
        let mut bytes = vec![0u8; s.len as usize];
        f.read_exact(&mut bytes).unwrap();
        let mut out = Vec::new();
        if s.offset != 0 {
            let h =
                backset_format::SegmentHeader { database_id, archive_id, segment: s.segment, first_txn: s.first_txn };
            out.extend_from_slice(&h.encode());
        }
        out.extend_from_slice(&bytes);
        std::fs::write(dir.join(format!("{:016x}", s.segment)), out).unwrap();
    }
}
