//! Which transactions a set can restore, beyond the common case: without journal elements (an incremental's
//! journal may or may not reach back to the full's end point), and for an archive that holds only some storage
//! groups (its journal has records for only some transaction ids); `--report-timestamps` lists exactly the
//! transactions a restore accepts.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backset_engine::check::{check_set, CheckOptions};
use backset_engine::restore::{
    for_each_timestamp, report_timestamps, restore, RestoreError, RestoreOptions, RestorePoint, TimestampFilter,
    TimestampItem,
};
use backset_format::TxnRange;
use backset_refstore::workload::{key, replay_upto, AckedTxn, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Database, Txn};
use rand::RngExt;
use support::setmaker::SetMaker;
use support::{assert_entries_eq, config, east_west, live, more_load, rng, tempdir};

/// Commits `n` transactions one after another, recording each as the workload would.
fn commit_n(db: &Database, n: u64, salt: u64, acked: &mut Vec<AckedTxn>) {
    let mut rng = rng(salt);
    for _ in 0..n {
        let k = key(rng.random_range(0..120));
        let txn = if rng.random_bool(0.2) {
            Txn::new().delete(k)
        } else {
            Txn::new().put(k, vec![rng.random_range(b'a'..=b'z'); rng.random_range(8..80)])
        };
        let c = db.commit(&txn).unwrap();
        acked.push(AckedTxn { txn_id: c.txn_id, timestamp_micros: c.timestamp_micros, txn });
    }
}

fn restore_matches(set: &std::path::Path, txn: u64, acked: &[AckedTxn]) {
    let dest = tempdir();
    let report = restore(set, dest.path(), RestorePoint::Transaction(txn), &RestoreOptions::default())
        .unwrap_or_else(|e| panic!("restore to {txn}: {e}"));
    assert_eq!(report.target_txn, txn);
    let restored = read_archive(dest.path()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(acked, txn), &format!("restore to {txn}"));
}

#[test]
fn without_journal_elements_transactions_between_bases_need_the_later_incrementals_journal() {
    for checkpoint_between in [true, false] {
        let dir = tempdir();
        let db = Arc::new(Database::open(dir.path(), config("ranges")).unwrap());
        let mut acked = Vec::new();
        commit_n(&db, 100, 1, &mut acked);
        db.checkpoint_now().unwrap();
        commit_n(&db, 50, 2, &mut acked);
        let sets = tempdir();
        let set = sets.path().join("set");
        let mut maker = SetMaker::full(&set, &db, 0);
        commit_n(&db, 100, 3, &mut acked);
        if checkpoint_between {
            db.checkpoint_now().unwrap();
        }
        commit_n(&db, 50, 4, &mut acked);
        let inc = maker.incremental();
        commit_n(&db, 20, 5, &mut acked); // after the set: never restored
        let full = maker.elements()[0].clone();
        let (e_full, (r_inc, e_inc)) = (full.txn_range.last, (inc.txn_range.first, inc.txn_range.last));

        // Between the full's E and the incremental's E, a restore starts from the full and needs every record from
        // the full's R: only the incremental's journal can supply those after the full's E, and only from its R on.
        let expected = if r_inc <= e_full + 1 {
            vec![TxnRange { first: e_full, last: e_inc }]
        } else {
            vec![TxnRange { first: e_full, last: e_full }, TxnRange { first: e_inc, last: e_inc }]
        };
        assert_eq!(checkpoint_between, expected.len() == 2, "R of the incremental {r_inc}, E of the full {e_full}");
        let report = check_set(&set, &CheckOptions::default()).unwrap();
        assert!(report.is_ok(), "{:#?}", report.defects);
        assert_eq!(report.restorable, expected);

        for txn in [e_full, e_full + 1, (e_full + e_inc) / 2, e_inc - 1, e_inc] {
            if expected.iter().any(|r| r.contains(txn)) {
                restore_matches(&set, txn, &acked);
            } else {
                let dest = tempdir();
                let err =
                    restore(&set, dest.path(), RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap_err();
                assert!(matches!(err, RestoreError::OutOfRange { .. }), "{err}");
                let text = format!(
                    "transaction {txn} is outside the restorable ranges [{e_full}, {e_full}], [{e_inc}, {e_inc}] of \
                     backup set {}",
                    set.display()
                );
                assert!(err.to_string().starts_with(&text), "{err}");
            }
        }
        db.close().unwrap();
    }
}

#[test]
fn a_set_of_an_archive_with_some_storage_groups_restores_its_groups_at_any_transaction() {
    let dir = tempdir();
    let cfg = live(east_west(config("groups")), Duration::from_millis(3));
    let db = Arc::new(Database::open(dir.path(), cfg).unwrap());
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 3, threads: 3, key_space: 300, cross_group_fraction: 0.3, ..WorkloadConfig::default() },
    );
    let more = |n: u64| more_load(&wl, n, Duration::from_secs(60));
    more(200);
    let sets = tempdir();
    let set = sets.path().join("set");
    let mut maker = SetMaker::full(&set, &db, 1);
    more(150);
    maker.journal();
    more(150);
    maker.incremental();
    more(150);
    maker.journal();
    more(50);
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let elements = maker.elements();
    let e_full = elements[0].txn_range.last;
    let latest = elements.iter().map(|e| e.txn_range.last).max().unwrap();
    let west = |m: BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        m.into_iter().filter(|(k, _)| db.group_of(k) == Some(2)).collect()
    };
    assert_eq!(
        check_set(&set, &CheckOptions::default()).unwrap().restorable,
        [TxnRange { first: e_full, last: latest }]
    );

    // A transaction that did not touch archive 1: its journal has no record of it, yet a restore to it works.
    let involves =
        |a: &AckedTxn| a.txn.puts.iter().map(|(k, _)| k).chain(&a.txn.deletes).any(|k| db.group_of(k) == Some(2));
    let skipped = report.acked.iter().find(|a| a.txn_id > e_full && a.txn_id <= latest && !involves(a)).unwrap().txn_id;

    let mut rng = rng(5);
    let mut targets: Vec<u64> = (0..6).map(|_| rng.random_range(e_full..=latest)).collect();
    targets.extend(elements.iter().map(|e| e.txn_range.last));
    targets.push(skipped);
    for txn in targets {
        let dest = tempdir();
        let r = restore(&set, dest.path(), RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap();
        let restored = read_archive(dest.path()).unwrap();
        assert_entries_eq(&restored.entries, &west(replay_upto(&report.acked, txn)), &format!("archive 1 at {txn}"));
        assert!(restored.last_txn <= txn && r.journal_txns.is_none_or(|j| j.last <= txn));
        if txn == skipped {
            assert!(restored.last_txn < txn, "archive 1 has no record of {txn}");
        }
    }
    db.close().unwrap();
}

#[test]
fn report_timestamps_lists_exactly_the_restore_points_and_where_a_gap_lies() {
    let dir = tempdir();
    let mut cfg = config("points");
    cfg.journal_hot_copy = true;
    let db = Arc::new(Database::open(dir.path(), cfg).unwrap());
    let mut acked = Vec::new();
    // The full's journal holds records below its end point (no checkpoint since they were committed).
    commit_n(&db, 30, 11, &mut acked);
    let sets = tempdir();
    let set = sets.path().join("set");
    let mut maker = SetMaker::full(&set, &db, 0);
    commit_n(&db, 30, 12, &mut acked);
    let jnl = maker.journal();
    // A checkpoint, then an incremental whose journal starts past the journal element: a gap between them.
    commit_n(&db, 30, 13, &mut acked);
    db.checkpoint_now().unwrap();
    commit_n(&db, 5, 14, &mut acked);
    let inc = maker.incremental();
    let full = maker.elements()[0].clone();
    let (r_full, e_full) = (full.txn_range.first, full.txn_range.last);
    let (j_last, e_inc) = (jnl.txn_range.last, inc.txn_range.last);
    assert!(r_full < e_full && inc.txn_range.first > j_last + 1, "the case needs records below E and a gap");
    let ranges = vec![TxnRange { first: e_full, last: j_last }, TxnRange { first: e_inc, last: e_inc }];
    assert_eq!(check_set(&set, &CheckOptions::default()).unwrap().restorable, ranges);

    let mut items = Vec::new();
    for_each_timestamp(&set, &TimestampFilter::default(), |i| items.push(i)).unwrap();
    let listed: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            TimestampItem::Line(l) => Some(l.txn_id),
            TimestampItem::Gap(_) => None,
        })
        .collect();
    let want: Vec<u64> = acked.iter().map(|a| a.txn_id).filter(|&t| ranges.iter().any(|r| r.contains(t))).collect();
    assert_eq!(listed, want, "the restore points, in order");
    let gap = TxnRange { first: j_last + 1, last: e_inc - 1 };
    let at = items.iter().position(|i| *i == TimestampItem::Gap(gap)).expect("the gap is reported");
    assert!(matches!(items[at - 1], TimestampItem::Line(l) if l.txn_id == j_last), "{:?}", items[at - 1]);
    assert!(matches!(items[at + 1], TimestampItem::Line(l) if l.txn_id == e_inc), "{:?}", items[at + 1]);

    // Every listed transaction restores to the acknowledged state; the one below each listed range is refused.
    for &txn in &listed {
        restore_matches(&set, txn, &acked);
    }
    for txn in [e_full - 1, e_inc - 1] {
        let dest = tempdir();
        let err = restore(&set, dest.path(), RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap_err();
        assert!(matches!(err, RestoreError::OutOfRange { .. }), "{txn}: {err}");
    }

    // The whole journal on request: from the full's R, with no gap inside a run of elements.
    let all = report_timestamps(&set, &TimestampFilter { journal: true, ..TimestampFilter::default() }).unwrap();
    let journal: Vec<u64> = all.iter().map(|l| l.txn_id).collect();
    assert_eq!(journal.first(), Some(&r_full));
    assert!(journal.contains(&(e_full - 1)) && journal.contains(&e_inc));
    db.close().unwrap();
}
