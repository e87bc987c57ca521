//! The workload generator: reproducible per seed, paced, bounded; its replay oracle equals the store's contents
//! after concurrent load, after a clean reopen and after a crash.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backset_refstore::workload::{replay, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Database, Txn};
use support::{assert_entries_eq, config, tempdir};

fn run(seed: u64) -> Vec<Txn> {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), config("seeded")).unwrap());
    let report =
        Workload::start(db, WorkloadConfig { seed, threads: 1, max_txns: Some(40), ..WorkloadConfig::default() })
            .join();
    report.acked.into_iter().map(|a| a.txn).collect()
}

#[test]
fn one_thread_with_one_seed_is_reproducible() {
    let a = run(42);
    assert_eq!(a.len(), 40);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
}

#[test]
fn pacing_holds_the_rate_and_max_txns_bounds_the_run() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), config("paced")).unwrap());
    let report = Workload::start(
        db,
        WorkloadConfig {
            threads: 2,
            rate_txns_per_second: Some(400.0),
            max_txns: Some(60),
            ..WorkloadConfig::default()
        },
    )
    .join();
    assert!((60..=61).contains(&report.acked.len()), "{} txns", report.acked.len());
    // 60 txns at 400/s over two threads: each thread's 30th txn starts 29 periods of 5 ms after its first.
    assert!(report.elapsed >= Duration::from_millis(140), "paced run took only {:?}", report.elapsed);
}

#[test]
fn the_replay_oracle_equals_the_store_after_load_reopen_and_crash() {
    let dir = tempdir();
    let mut cfg = config("oracle");
    cfg.sms = 2; // no storage groups: both archives hold everything
    cfg.checkpoint_interval = Some(Duration::from_millis(5));
    let db = Arc::new(Database::open(dir.path(), cfg.clone()).unwrap());
    let report = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 5, threads: 4, key_space: 500, max_txns: Some(800), ..WorkloadConfig::default() },
    )
    .join();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let oracle = replay(&report.acked);
    assert_entries_eq(&db.entries().unwrap(), &oracle, "after concurrent load");
    db.close().unwrap();
    drop(db);
    for a in 0..2 {
        assert_entries_eq(&read_archive(&dir.path().join(a.to_string())).unwrap().entries, &oracle, "archive");
    }

    let db = Arc::new(Database::open(dir.path(), cfg.clone()).unwrap());
    assert_entries_eq(&db.entries().unwrap(), &oracle, "after a clean reopen");
    let more = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 6, threads: 3, key_space: 500, max_txns: Some(300), ..WorkloadConfig::default() },
    )
    .join();
    db.crash();
    drop(db);
    let all: Vec<_> = report.acked.iter().chain(&more.acked).cloned().collect();
    let db = Database::open(dir.path(), cfg).unwrap();
    assert_entries_eq(&db.entries().unwrap(), &replay(&all), "after a crash");
}
