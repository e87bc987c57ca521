//! Hot copies of the reference store under a running workload: full, incremental and journal elements read back
//! structurally and restore (by the test's own restore) to exactly the workload's replay oracle at each end point,
//! also with every earlier `data/` moved away; a simple hot copy opens as the database at its end point; a
//! coordinated hot copy of two storage groups shares one end point, and the storage group rule refuses a partial one.
//! Every job of an archive copies through its SM's one copier.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backset_engine::hotcopy::{HotCopyError, HotCopyManager, HotCopyRequest, HotCopyType};
use backset_engine::set::BackupSet;
use backset_engine::{check, restore};
use backset_refstore::workload::{replay_upto, AckedTxn, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Config, Database};
use support::hotcopy::{check_set, move_data_away, move_data_back, range_of, restore_by_hand, wait_completed};
use support::{assert_entries_eq, config, east_west, live, more_load, tempdir, wait_until};

/// How long a test waits for the workload to make progress.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Background checkpoints: atoms change and the journal recycles while they are copied.
fn live_config(name: &str) -> Config {
    live(config(name), Duration::from_millis(5))
}

fn workload(seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        threads: 2,
        rate_txns_per_second: Some(1500.0),
        key_space: 400,
        delete_fraction: 0.25,
        ..WorkloadConfig::default()
    }
}

/// Restores `set` to `t` by hand and returns the restored key/value content.
fn restored(set: &Path, t: u64, scratch: &Path) -> (String, BTreeMap<Vec<u8>, Vec<u8>>) {
    let out = scratch.join(format!("restore-{}-{t}", set.file_name().unwrap().to_string_lossy()));
    let base = restore_by_hand(set, t, &out);
    let data = read_archive(&out).unwrap();
    (base, data.entries)
}

fn oracle(acked: &[AckedTxn], t: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    replay_upto(acked, t)
}

#[test]
fn full_incremental_and_journal_elements_restore_the_state_at_each_end_point() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), live_config("chain")).unwrap());
    let wl = Workload::start(Arc::clone(&db), workload(7));
    more_load(&wl, 300, LOAD_TIMEOUT);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);

    let full = wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    assert_eq!(full.coordinator_start_id, 1);
    assert_eq!(full.participants[0].element.as_deref(), Some("full"));
    assert!(full.bytes_done > 0 && full.bytes_done == full.bytes_total, "{full:?}");
    more_load(&wl, 200, LOAD_TIMEOUT);
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    more_load(&wl, 200, LOAD_TIMEOUT);
    // An incremental and a journal hot copy read only control/: move every data/ away first.
    let moved = move_data_away(&set);
    let inc1 = wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    assert_eq!(inc1.participants[0].element.as_deref(), Some("1.inc"));
    more_load(&wl, 200, LOAD_TIMEOUT);
    let moved2 = move_data_away(&set);
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    more_load(&wl, 200, LOAD_TIMEOUT);
    let moved3 = move_data_away(&set);
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    more_load(&wl, 200, LOAD_TIMEOUT);
    let j3 = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    // All six jobs of archive 0 copied through its SM's one copier: one ring and one pool, set up once for all.
    let stats = m.sm_copier(0).unwrap().unwrap().stats();
    assert!(stats.jobs_started >= 6, "six jobs, one copier call or more each: {stats:?}");
    assert_eq!(stats.rings_set_up, u64::from(stats.backend.name() == "uring"), "{stats:?}");
    assert_eq!(stats.jobs_running, 0, "{stats:?}");
    move_data_back(&moved);
    move_data_back(&moved2);
    move_data_back(&moved3);
    more_load(&wl, 50, LOAD_TIMEOUT);
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let acked_all = report.acked.clone();

    let summary = check_set(&set);
    let names: Vec<&str> = summary.elements.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["full", "1.jnl", "1.inc", "2.jnl", "2.inc", "3.jnl"]);
    let e_j3 = range_of(&set, "3.jnl").1;
    assert_eq!(j3.participants[0].txn_range, Some((range_of(&set, "2.jnl").1 + 1, e_j3)));
    assert!(report.acked.last().unwrap().txn_id > e_j3, "the load went on after the last hot copy");

    // Each full/incremental restores to its own E; the journal reaches the last E; a T between elements too.
    let scratch = dir.path().join("scratch");
    for name in ["full", "1.inc", "2.inc"] {
        let e = range_of(&set, name).1;
        let (base, entries) = restored(&set, e, &scratch);
        assert_eq!(base, name);
        assert_entries_eq(&entries, &oracle(&report.acked, e), &format!("restore of {name} at its E = {e}"));
    }
    let between = (range_of(&set, "1.inc").1 + range_of(&set, "2.jnl").1) / 2;
    let (base, entries) = restored(&set, between, &scratch);
    assert_eq!(base, "1.inc");
    assert_entries_eq(&entries, &oracle(&report.acked, between), &format!("restore at T = {between}"));
    let (base, entries) = restored(&set, e_j3, &scratch);
    assert_eq!(base, "2.inc");
    assert_entries_eq(&entries, &oracle(&report.acked, e_j3), &format!("restore at the last journal E = {e_j3}"));
    assert_eq!(BackupSet::open(&set).unwrap().restorable().last().map(|r| r.last), Some(e_j3));

    // The engine's own check and restore read these sets the same way.
    let report = check::check_set(&set, &check::CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "check: {:?}", report.defects.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert_eq!(report.restorable_max(), Some(e_j3));
    for t in [range_of(&set, "full").1, between, e_j3] {
        let dest = scratch.join(format!("engine-restore-{t}"));
        restore::restore(&set, &dest, restore::RestorePoint::Transaction(t), &restore::RestoreOptions::default())
            .unwrap();
        let entries = read_archive(&dest).unwrap().entries;
        assert_entries_eq(&entries, &oracle(&acked_all, t), &format!("the engine's restore to {t}"));
    }
}

#[test]
fn a_simple_hot_copy_opens_as_the_database_at_its_end_point() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), live_config("simple")).unwrap());
    let wl = Workload::start(Arc::clone(&db), workload(21));
    more_load(&wl, 400, LOAD_TIMEOUT);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let copy = dir.path().join("copy");
    // A cancelled simple hot copy keeps its `.incomplete` directory (as NuoDB does); the next one replaces it.
    m.set_sm_rate(0, Some(0)).unwrap();
    let held = m.start(HotCopyRequest::new(HotCopyType::Simple).backup_dir(0, &copy)).unwrap();
    wait_until("the simple hot copy copying atoms", Duration::from_secs(30), || {
        m.status(held.0, held.1, None).unwrap().message == "Stage1: Copy atoms"
    });
    let cancelled = m.cancel(held.0, held.1, Some(support::hotcopy::JOB_TIMEOUT)).unwrap();
    assert_eq!(cancelled.message, "Hot copy cancelled");
    assert!(dir.path().join("copy.incomplete/atoms").is_dir() && !copy.exists());
    m.set_sm_rate(0, None).unwrap();
    let status = wait_completed(&m, m.start(HotCopyRequest::new(HotCopyType::Simple).backup_dir(0, &copy)).unwrap());
    let (_, e) = status.participants[0].txn_range.unwrap();
    assert!(!dir.path().join("copy.incomplete").exists(), "the .incomplete directory was renamed");
    more_load(&wl, 100, LOAD_TIMEOUT);
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Every segment file of the copy starts with its header (copied from offset 0).
    for seg in support::segment_files(&copy) {
        let bytes = std::fs::read(&seg).unwrap();
        backset_format::read_segment(&bytes).unwrap();
    }
    let expected = oracle(&report.acked, e);
    assert_entries_eq(&read_archive(&copy).unwrap().entries, &expected, &format!("simple copy at E = {e}"));
    let root = dir.path().join("reopened");
    std::fs::create_dir(&root).unwrap();
    std::fs::rename(&copy, root.join("0")).unwrap();
    let mut cfg = config("simple");
    cfg.database_id = Some(db.database_id());
    let reopened = Database::open(&root, cfg).unwrap();
    assert_entries_eq(&reopened.entries().unwrap(), &expected, "the simple copy opened by the store");
    reopened.close().unwrap();
}

fn grouped(name: &str) -> Config {
    east_west(live_config(name))
}

#[test]
fn a_coordinated_hot_copy_of_two_storage_groups_shares_one_end_point() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), grouped("coord")).unwrap());
    let wl = Workload::start(Arc::clone(&db), WorkloadConfig { cross_group_fraction: 0.5, ..workload(33) });
    more_load(&wl, 400, LOAD_TIMEOUT);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let sets = dir.path().join("sets");
    std::fs::create_dir(&sets).unwrap();
    let req = |kind| HotCopyRequest::new(kind).default_dir(&sets).shared(true);

    // Archive 0 alone misses storage group "west": refused with NuoDB's message, accepted when partial is allowed.
    let alone = dir.path().join("alone");
    let err = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &alone)).unwrap_err();
    assert!(matches!(err, HotCopyError::MissingStorageGroups { .. }));
    assert_eq!(err.to_string(), "Not all storage groups are included in hot-copy for dbName=coord, missingSgs=[west]");
    assert!(!alone.exists());

    let full = wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    assert_eq!(full.participants.len(), 2);
    assert_eq!(full.coordinator_start_id, 1);
    let e_full = full.participants[0].txn_range.unwrap().1;
    assert_eq!(full.participants[1].txn_range.unwrap().1, e_full, "one end point for both archives");
    more_load(&wl, 300, LOAD_TIMEOUT);
    let jnl = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    let e_jnl = jnl.participants[0].txn_range.unwrap().1;
    assert_eq!(jnl.participants[1].txn_range.unwrap().1, e_jnl);
    let partial = wait_completed(
        &m,
        m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &alone).partial_storage_groups(true)).unwrap(),
    );
    assert_eq!(partial.participants.len(), 1);
    // Each SM has its own copier, which all its jobs used: archive 0 ran three jobs, archive 1 two.
    let jobs_of = |a| m.sm_copier(a).unwrap().unwrap().stats().jobs_started;
    assert!(jobs_of(0) >= 3 && jobs_of(1) >= 2, "{} and {} copier calls", jobs_of(0), jobs_of(1));
    assert!(m.sm_copier(2).is_none(), "no copier for an archive the manager does not serve");
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let crossing = report
        .acked
        .iter()
        .filter(|a| a.txn_id <= e_full)
        .filter(|a| {
            let groups: std::collections::BTreeSet<_> =
                a.txn.puts.iter().map(|(k, _)| k).chain(&a.txn.deletes).map(|k| db.group_of(k)).collect();
            groups.len() > 1
        })
        .count();
    assert!(crossing > 10, "only {crossing} cross-group transactions before E");

    let (s0, s1) = (check_set(&sets.join("0")), check_set(&sets.join("1")));
    assert_eq!(s0.hot_copy_ids, s1.hot_copy_ids, "the elements of both sets come from the same hot copies");
    assert_eq!(s0.hot_copy_ids, vec![full.id, jnl.id]);
    for (a, s) in [(0u64, &sets.join("0")), (1, &sets.join("1"))] {
        let set = BackupSet::open(s).unwrap();
        assert_eq!(set.state().archive_id, a);
        for e in set.elements() {
            let info = &e.info;
            assert_eq!(info.coordinator_start_id, 1);
            let parts: Vec<(u64, u64)> = info.participants.iter().map(|p| (p.start_id, p.archive_id)).collect();
            assert_eq!(parts, [(1, 0), (2, 1)]);
        }
    }
    assert_eq!(range_of(&sets.join("0"), "full").1, e_full);
    assert_eq!(range_of(&sets.join("1"), "1.jnl").1, e_jnl);
    check_set(&alone);

    // Both sets restored to the shared E together hold exactly the database at E.
    let scratch = dir.path().join("scratch");
    for t in [e_full, e_jnl] {
        let mut union = restored(&sets.join("0"), t, &scratch).1;
        let east = union.len();
        union.extend(restored(&sets.join("1"), t, &scratch).1);
        assert!(east > 0 && union.len() > east, "both archives hold data");
        assert_entries_eq(&union, &oracle(&report.acked, t), &format!("both sets restored to {t}"));
    }
}
