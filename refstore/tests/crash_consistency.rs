//! What commit acknowledged survives a crash; recovery replays exactly the records above each atom's LSN, is
//! idempotent, truncates a torn tail and refuses real corruption.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use backset_format::JournalError;
use backset_refstore::workload::{replay, Workload, WorkloadConfig};
use backset_refstore::{Database, StoreError, Txn};
use support::{assert_entries_eq, config, journal_records, segment_files, tempdir, wait_until};

#[test]
fn acknowledged_commits_survive_a_crash_under_concurrent_writers_and_checkpoints() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), config("crash")).unwrap());
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 7, threads: 4, key_space: 200, ..WorkloadConfig::default() },
    );
    wait_until("100 acknowledged commits", Duration::from_secs(30), || wl.acked_count() >= 100);
    db.checkpoint_now().unwrap();
    wait_until("200 acknowledged commits", Duration::from_secs(30), || wl.acked_count() >= 200);
    db.crash();
    let report = wl.stop();
    // A thread whose commit was queued gets "closed"; one whose commit was being written is acknowledged and then
    // stops on the stop flag.
    assert!(report.errors.len() <= 4, "{:?}", report.errors);
    assert!(report.errors.iter().all(|e| e.contains("closed")), "{:?}", report.errors);
    let last_acked = report.acked.last().unwrap().txn_id;
    drop(db);

    let db = Database::open(dir.path(), config("crash")).unwrap();
    assert_entries_eq(&db.entries().unwrap(), &replay(&report.acked), "store after crash vs replay of the acked txns");
    assert!(db.archives()[0].recovery_report().records_replayed > 0, "the crash left work for recovery");
    let next = db.commit(&Txn::new().put("after", "crash")).unwrap();
    assert!(next.txn_id > last_acked, "the txn sequence continues after {last_acked}, got {}", next.txn_id);
    db.close().unwrap();
}

#[test]
fn recovery_replays_exactly_the_records_above_the_atom_lsn_and_is_idempotent() {
    let dir = tempdir();
    let mut cfg = config("replay");
    cfg.atom_buckets = Some(1); // one atom: its LSN decides for every record
    let db = Database::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..10 {
        db.commit(&Txn::new().put(format!("k{i}"), "v1")).unwrap();
    }
    db.checkpoint_now().unwrap();
    let atom = db.archives()[0].atoms_lsns();
    assert_eq!(atom, vec![(0, 10)]);
    for i in 0..5 {
        db.commit(&Txn::new().put(format!("k{i}"), "v2").delete(format!("k{}", 9 - i))).unwrap();
    }
    let expected = db.entries().unwrap();
    db.crash();
    drop(db);

    for round in 0..2 {
        let db = Database::open(dir.path(), cfg.clone()).unwrap();
        let report = db.archives()[0].recovery_report().clone();
        assert_eq!(report.records_replayed, 5, "round {round}: records 11..=15 are above the atom's LSN 10");
        assert_eq!(report.last_txn, 15);
        assert_eq!(db.entries().unwrap(), expected, "round {round}");
        assert_eq!(db.archives()[0].atoms_lsns(), vec![(0, 10)], "no checkpoint ran: the file is still at LSN 10");
        db.crash();
    }
    let db = Database::open(dir.path(), cfg.clone()).unwrap();
    db.checkpoint_now().unwrap();
    db.close().unwrap();
    drop(db);
    let db = Database::open(dir.path(), cfg).unwrap();
    assert_eq!(db.archives()[0].recovery_report().records_replayed, 0, "everything is in the atom after a checkpoint");
    assert_eq!(db.entries().unwrap(), expected);
}

#[test]
fn a_torn_tail_is_truncated_at_recovery() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("torn")).unwrap();
    for i in 0..3 {
        db.commit(&Txn::new().put(format!("k{i}"), "v")).unwrap();
    }
    let expected = db.entries().unwrap();
    db.crash();
    drop(db);
    let archive = dir.path().join("0");
    let last = segment_files(&archive).pop().unwrap();
    let clean_len = std::fs::metadata(&last).unwrap().len();
    // A record of txn 4 cut short after 40 of its bytes, as a crash mid-write leaves it.
    let mut rec = Vec::new();
    backset_format::encode_record(&mut rec, 4, 1, b"a payload that never made it").unwrap();
    OpenOptions::new().append(true).open(&last).unwrap().write_all(&rec[..40]).unwrap();

    let db = Database::open(dir.path(), config("torn")).unwrap();
    let seg: u64 = u64::from_str_radix(last.file_name().unwrap().to_str().unwrap(), 16).unwrap();
    assert_eq!(db.archives()[0].recovery_report().torn_tails, vec![(seg, clean_len, 40)]);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), clean_len, "the torn bytes are gone");
    assert_eq!(db.entries().unwrap(), expected);
    assert_eq!(db.commit(&Txn::new().put("k", "v")).unwrap().txn_id, 4);
    let txns: Vec<u64> = journal_records(&archive).iter().map(|r| r.1).collect();
    assert_eq!(txns, vec![1, 2, 3, 4], "the journal parses cleanly end to end");
    db.close().unwrap();
}

#[test]
fn a_segment_whose_header_was_torn_at_creation_is_removed() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("torn-header")).unwrap();
    db.commit(&Txn::new().put("k", "v")).unwrap();
    db.crash();
    drop(db);
    let archive = dir.path().join("0");
    let segs = segment_files(&archive);
    let n = segs.len() as u64;
    let torn = archive.join("journal").join(format!("{:016x}", n + 1));
    std::fs::write(&torn, &[0x89, b'B', b'K', b'J', 0, 0, 0][..]).unwrap();
    let db = Database::open(dir.path(), config("torn-header")).unwrap();
    assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db.commit(&Txn::new().put("k2", "v")).unwrap().txn_id, 2);
    db.close().unwrap();
}

/// Recovery took any last segment without a header and with no valid record for one cut short at its creation, and
/// removed it: zeros where a segment of acknowledged records had been (lost blocks) made the store open without
/// them. A crash leaves at most one block without a header (`MAX_TORN_SEGMENT_BYTES`); more is damage, refused.
#[test]
fn regression_a_zero_filled_last_segment_was_removed_at_open_with_its_acknowledged_records() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("zeroed")).unwrap();
    db.commit(&Txn::new().put("first", "v")).unwrap();
    // A value larger than a segment's rollover size: the last segment is more than a block long.
    db.commit(&Txn::new().put("big", "x".repeat(6000))).unwrap();
    db.crash();
    drop(db);
    let archive = dir.path().join("0");
    let last = segment_files(&archive).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    assert!(len > backset_format::limits::MAX_TORN_SEGMENT_BYTES, "the last segment is {len} bytes");
    std::fs::write(&last, vec![0u8; len as usize]).unwrap();
    let err = Database::open(dir.path(), config("zeroed")).unwrap_err().to_string();
    assert!(err.contains(last.to_str().unwrap()) && err.contains("header was durable once"), "{err}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len, "the damaged segment is left for the operator");
}

#[test]
fn damage_followed_by_valid_records_is_corruption_not_a_torn_tail() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("corrupt")).unwrap();
    for i in 0..3 {
        db.commit(&Txn::new().put(format!("k{i}"), "value")).unwrap();
    }
    db.crash();
    drop(db);
    let seg = segment_files(&dir.path().join("0")).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    // Damage the first record's payload (it starts at 64 + 32); records 2 and 3 stay valid.
    bytes[64 + 32 + 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Database::open(dir.path(), config("corrupt")).unwrap_err();
    match &err {
        StoreError::Journal { path, source: JournalError::Corrupt { segment: 1, offset: 64, .. } } => {
            assert_eq!(path, &seg)
        }
        other => panic!("expected corruption at segment 1 offset 64, got {other:?}"),
    }
    assert!(err.to_string().contains("not a torn write"), "{err}");
}
