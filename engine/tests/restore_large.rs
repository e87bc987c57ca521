//! Data files of several 1 MiB chunks: atom files and journal slices whose records straddle chunk boundaries, read
//! chunk by chunk (each verified before its records are used) by restore, check and report-timestamps; a damaged
//! chunk in the middle of a slice is named by check and refused by restore.

mod support;

use std::fs;
use std::sync::Arc;

use backset_engine::check::{check_set, CheckOptions, DefectKind};
use backset_engine::restore::{
    report_timestamps, restore, RestoreError, RestoreOptions, RestorePoint, TimestampFilter,
};
use backset_format::limits::CHUNK_BYTES;
use backset_refstore::workload::{key, replay_upto, AckedTxn};
use backset_refstore::{read_archive, Database, Txn};
use support::setmaker::SetMaker;
use support::{assert_entries_eq, config, file_names, flip_byte, tempdir};

/// Commits `n` transactions of one or two values of 100 to 300 KB each.
fn commit_large(db: &Database, n: u64, salt: u64, acked: &mut Vec<AckedTxn>) {
    for i in 0..n {
        let k = |j: u64| key((i * 7 + j * 13 + salt) % 40);
        let len = |j: u64| 100_000 + ((i * 31 + j * 17 + salt) % 200) as usize * 1000;
        let mut txn = Txn::new().put(k(0), vec![(i + salt) as u8; len(0)]);
        if i % 3 == 0 {
            txn = txn.put(k(1), vec![(i * 2 + salt) as u8; len(1)]);
        }
        if i % 5 == 4 {
            txn = txn.delete(k(2));
        }
        let c = db.commit(&txn).unwrap();
        acked.push(AckedTxn { txn_id: c.txn_id, timestamp_micros: c.timestamp_micros, txn });
    }
}

#[test]
fn multi_chunk_atoms_and_slices_restore_check_and_report() {
    let dir = tempdir();
    let mut cfg = config("large");
    cfg.segment_bytes = 64 << 20;
    cfg.atom_buckets = Some(2);
    cfg.journal_hot_copy = true;
    let db = Arc::new(Database::open(dir.path(), cfg).unwrap());
    let mut acked = Vec::new();
    commit_large(&db, 30, 1, &mut acked);
    db.checkpoint_now().unwrap();
    commit_large(&db, 20, 2, &mut acked);
    let sets = tempdir();
    let set = sets.path().join("set");
    let mut maker = SetMaker::full(&set, &db, 0);
    commit_large(&db, 30, 3, &mut acked);
    let jnl = maker.journal();
    commit_large(&db, 5, 4, &mut acked); // after the set
    let full = maker.elements()[0].clone();

    // The files really span several chunks.
    let biggest =
        |d: &std::path::Path| file_names(d).iter().map(|n| fs::metadata(d.join(n)).unwrap().len()).max().unwrap();
    assert!(biggest(&set.join("full/data/atoms")) > 2 * CHUNK_BYTES);
    let slices = set.join("1.jnl/data/journal");
    assert!(biggest(&slices) > 3 * CHUNK_BYTES, "{}", biggest(&slices));

    let report = check_set(&set, &CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:#?}", report.defects);
    let (e_full, e_jnl) = (full.txn_range.last, jnl.txn_range.last);
    for txn in [e_full, e_full + 1, (e_full + e_jnl) / 2, e_jnl - 1, e_jnl] {
        let dest = tempdir();
        restore(&set, dest.path(), RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap();
        let restored = read_archive(dest.path()).unwrap();
        assert_entries_eq(&restored.entries, &replay_upto(&acked, txn), &format!("restore to {txn}"));
    }
    let lines = report_timestamps(&set, &TimestampFilter { journal: true, ..TimestampFilter::default() }).unwrap();
    let expected: Vec<u64> =
        acked.iter().map(|a| a.txn_id).filter(|&t| t >= full.txn_range.first && t <= e_jnl).collect();
    assert_eq!(lines.iter().map(|l| l.txn_id).collect::<Vec<_>>(), expected);

    // A flipped byte in the third chunk of the biggest slice.
    let name = file_names(&slices).into_iter().max_by_key(|n| fs::metadata(slices.join(n)).unwrap().len()).unwrap();
    let path = slices.join(name);
    flip_byte(&path, 2 * CHUNK_BYTES + 12345, 0xff);
    let report = check_set(&set, &CheckOptions::default()).unwrap();
    let d = report.defects.iter().find(|d| d.file.as_deref() == Some(path.as_path())).expect("a defect for the slice");
    assert_eq!(d.kind, DefectKind::Hash);
    assert!(d.what.contains(&format!("bytes {}..{} (chunk 2)", 2 * CHUNK_BYTES, 3 * CHUNK_BYTES)), "{}", d.what);
    let dest = tempdir();
    match restore(&set, dest.path(), RestorePoint::Transaction(e_jnl), &RestoreOptions::default()).unwrap_err() {
        RestoreError::DataFile { element, path: p, reason, .. } => {
            assert_eq!((element.to_string(), p), ("1.jnl".to_string(), path.clone()));
            assert!(reason.contains("(chunk 2)"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(file_names(dest.path()).is_empty());
    db.close().unwrap();
}
