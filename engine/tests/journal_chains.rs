//! Journal hot copies continue one chain per archive, the newest backup set's: a new full keeps the journal from its
//! start even when an older set's journal hot copies went further (the defect the load test found: the new set's
//! first journal hot copy found its journal recycled), and a journal hot copy into an older set is refused, also
//! after a restart of the manager. The weekly rotation: once a new full has begun, journal hot copies go into its set
//! (not the old one), the old set stays restorable up to its last element and the new one from its full's end
//! point; a new full that fails gives the chain back to the old set. The first journal hot copy after the full of a
//! bulk-loaded database (whose journal never held the full's first transaction) starts the chain there all the same.

mod support;

use std::path::Path;
use std::sync::Arc;

use backset_engine::check::CheckOptions;
use backset_engine::hotcopy::{HotCopyError, HotCopyManager, HotCopyRequest, HotCopyType, JobState};
use backset_engine::restore::{restore, RestoreOptions, RestorePoint};
use backset_format::TxnRange;
use backset_refstore::workload::{replay_upto, AckedTxn};
use backset_refstore::{read_archive, Config, Database};
use support::hotcopy::{check_set, load, range_of, wait_completed, JOB_TIMEOUT};
use support::{assert_entries_eq, config, tempdir};

fn cfg() -> Config {
    let mut c = config("chains");
    c.journal_hot_copy = true;
    c
}

fn run(m: &HotCopyManager, kind: HotCopyType, set: &Path) {
    wait_completed(m, m.start(HotCopyRequest::new(kind).backup_dir(0, set)).unwrap());
}

#[test]
fn regression_a_new_sets_first_journal_hot_copy_found_its_journal_recycled_by_an_older_sets() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    load(&db, 1, 300);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&m, HotCopyType::Full, &a);
    load(&db, 2, 300);
    run(&m, HotCopyType::Journal, &a);
    let (_, a_journal_end) = range_of(&a, "1.jnl");
    // No checkpoint since the database opened: the next full starts its journal below what set a's journal copied.
    run(&m, HotCopyType::Full, &b);
    let (b_start, _) = range_of(&b, "full");
    assert!(b_start <= a_journal_end, "the case needs b's full to start at or below {a_journal_end}, not {b_start}");
    load(&db, 3, 300);
    // A checkpoint recycles what retention lets go: before the fix, everything up to set a's journal end.
    db.checkpoint_now().unwrap();
    run(&m, HotCopyType::Journal, &b);
    let (j_first, _) = range_of(&b, "1.jnl");
    assert_eq!(j_first, b_start, "b's journal chain starts where its full did");
    check_set(&b);
}

#[test]
fn a_journal_hot_copy_into_an_older_set_is_refused_also_after_a_restart() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    load(&db, 4, 200);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    {
        let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
        run(&m, HotCopyType::Full, &a);
        load(&db, 5, 100);
        run(&m, HotCopyType::Journal, &a);
        run(&m, HotCopyType::Full, &b);
    }
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    load(&db, 6, 100);
    let e = m.start(HotCopyRequest::new(HotCopyType::Journal).backup_dir(0, &a)).unwrap_err();
    assert!(matches!(e, HotCopyError::JournalChainMoved { archive_id: 0, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&a.display().to_string()) && msg.contains(&b.display().to_string()), "{msg}");
    // The newest set goes on, and an incremental into the older set is still allowed (it needs no retained journal).
    run(&m, HotCopyType::Journal, &b);
    run(&m, HotCopyType::Incremental, &a);
    check_set(&a);
    check_set(&b);
}

/// Restores `set` to `txn` with the engine's restore and compares it with the acknowledged state.
fn restores_exactly(set: &Path, txn: u64, acked: &[AckedTxn]) {
    let out = tempdir();
    let dest = out.path().join("r");
    restore(set, &dest, RestorePoint::Transaction(txn), &RestoreOptions::default())
        .unwrap_or_else(|e| panic!("restore {} to {txn}: {e}", set.display()));
    assert_entries_eq(&read_archive(&dest).unwrap().entries, &replay_upto(acked, txn), &format!("restore to {txn}"));
}

fn restorable(set: &Path) -> Vec<TxnRange> {
    let report = backset_engine::check::check_set(set, &CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:#?}", report.defects);
    report.restorable
}

#[test]
fn the_weekly_rotation_moves_the_journal_chain_to_the_new_set_once_its_full_has_begun() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    let mut acked = load(&db, 7, 200);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let (old, new) = (dir.path().join("week1"), dir.path().join("week2"));
    run(&m, HotCopyType::Full, &old);
    acked.extend(load(&db, 8, 100));
    run(&m, HotCopyType::Journal, &old);
    acked.extend(load(&db, 9, 100));
    run(&m, HotCopyType::Journal, &old);
    let old_last = range_of(&old, "2.jnl").1;

    // The new week's full, held in its atom stage by a paused rate: its start returns once the set is initialised.
    let full = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &new).max_rate(Some(0))).unwrap();
    let r_new = range_of(&new, "full").0;
    acked.extend(load(&db, 10, 100));
    // Journal hot copies now go into the new set, from its full's start...
    run(&m, HotCopyType::Journal, &new);
    assert_eq!(range_of(&new, "1.jnl").0, r_new, "the new set's journal chain starts at its full's start");
    // ...and no longer into the old one: the message names the new set.
    let e = m.start(HotCopyRequest::new(HotCopyType::Journal).backup_dir(0, &old)).unwrap_err();
    match &e {
        HotCopyError::JournalChainMoved { dir, newest, .. } => assert_eq!((dir, newest), (&old, &new), "{e}"),
        other => panic!("{other:?}"),
    }
    // An incremental into the new set says that its full runs, and which.
    let e = m.start(HotCopyRequest::new(HotCopyType::Incremental).backup_dir(0, &new)).unwrap_err();
    assert!(matches!(e, HotCopyError::FullRunning { id, .. } if id == full.1), "{e:?}");
    assert!(e.to_string().contains(&format!("full hot copy {} into backup set {}", full.1, new.display())), "{e}");

    acked.extend(load(&db, 11, 100));
    m.set_max_rate(full.0, full.1, None).unwrap();
    wait_completed(&m, full);
    let e_new = range_of(&new, "full").1;
    acked.extend(load(&db, 12, 100));
    db.checkpoint_now().unwrap();
    run(&m, HotCopyType::Journal, &new);
    let new_last = range_of(&new, "2.jnl").1;
    assert_eq!(range_of(&new, "2.jnl").0, range_of(&new, "1.jnl").1 + 1, "the chain goes on without a gap");

    // The old set restores up to its last element and no further; the new one from its full's end point on.
    assert_eq!(restorable(&old), [TxnRange { first: range_of(&old, "full").1, last: old_last }]);
    assert_eq!(restorable(&new), [TxnRange { first: e_new, last: new_last }]);
    restores_exactly(&old, old_last, &acked);
    for txn in [e_new, (e_new + new_last) / 2, new_last] {
        restores_exactly(&new, txn, &acked);
    }
    check_set(&old);
    check_set(&new);
}

#[test]
fn a_new_full_that_fails_gives_the_chain_back_and_takes_its_journal_elements_with_it() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    let mut acked = load(&db, 21, 200);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let (old, new) = (dir.path().join("week1"), dir.path().join("week2"));
    run(&m, HotCopyType::Full, &old);
    acked.extend(load(&db, 22, 100));
    run(&m, HotCopyType::Journal, &old);
    let old_last = range_of(&old, "1.jnl").1;

    let full = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &new).max_rate(Some(0))).unwrap();
    acked.extend(load(&db, 23, 100));
    run(&m, HotCopyType::Journal, &new);
    // The journal copied into the new set moved no mark: a checkpoint recycles nothing the old set still needs.
    db.checkpoint_now().unwrap();
    let s = m.cancel(full.0, full.1, Some(JOB_TIMEOUT)).unwrap();
    assert_eq!(s.status, JobState::Cancelled, "{}", s.message);
    assert!(!new.exists(), "the cancelled full leaves its directory as it found it (absent), journal element and all");

    // The old set continues the chain from where its last element ended, without a gap.
    acked.extend(load(&db, 24, 100));
    db.checkpoint_now().unwrap();
    run(&m, HotCopyType::Journal, &old);
    assert_eq!(range_of(&old, "2.jnl").0, old_last + 1);
    let latest = range_of(&old, "2.jnl").1;
    assert_eq!(latest, acked.iter().map(|a| a.txn_id).max().unwrap());
    restores_exactly(&old, latest, &acked);
    check_set(&old);
}

#[test]
fn regression_the_first_journal_hot_copy_after_the_full_of_a_bulk_loaded_database() {
    use backset_refstore::bulk::{bulk_key, bulk_load, bulk_value, BulkSpec};
    use backset_refstore::Txn;
    let dir = tempdir();
    let root = dir.path().join("db");
    let spec = BulkSpec { bytes_per_archive: 1 << 20, value_bytes: 4096, seed: 3 };
    let loaded = bulk_load(&root, &cfg(), &spec).unwrap();
    let db = Arc::new(Database::open(&root, cfg()).unwrap());
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    // Nothing committed since the load: the full pins a fully checkpointed archive (R = 2) and claims [1, 1], while
    // the journal never held a record of transaction 1. Before the fix the journal hot copy asked for it and failed.
    run(&m, HotCopyType::Full, &set);
    assert_eq!(range_of(&set, "full").0, loaded.txn_id);
    let mut acked = load(&db, 2, 50);
    run(&m, HotCopyType::Journal, &set);
    let (first, last) = range_of(&set, "1.jnl");
    assert_eq!(first, loaded.txn_id, "the chain starts at the full's first transaction");
    check_set(&set);
    assert_eq!(restorable(&set), vec![TxnRange { first: loaded.txn_id, last }]);
    let puts = (0..loaded.keys).map(|n| (bulk_key(n), bulk_value(spec.seed, &bulk_key(n), spec.value_bytes))).collect();
    acked.push(AckedTxn { txn_id: loaded.txn_id, timestamp_micros: 0, txn: Txn { puts, deletes: Vec::new() } });
    restores_exactly(&set, last, &acked);
}
