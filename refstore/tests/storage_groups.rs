//! Storage groups: one txn id per transaction with a record in each involved SM's journal, per-journal ids strictly
//! increasing, the durable watermark D correct under concurrent writers, each archive holding its groups only.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backset_engine::archive::Archive;
use backset_refstore::workload::{key, replay, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Config, Database, StorageGroup, Txn};
use support::{assert_entries_eq, config, journal_records, slice_txns, tempdir, wait_until};

fn grouped(name: &str) -> Config {
    let mut c = config(name);
    c.sms = 3;
    c.storage_groups = Some(vec![
        StorageGroup { id: 1, name: "east".into(), archives: vec![0] },
        StorageGroup { id: 2, name: "west".into(), archives: vec![1] },
        StorageGroup { id: 3, name: "shared".into(), archives: vec![1, 2] },
    ]);
    c
}

/// Archives serving each group of `grouped`.
fn serving(group: u32) -> &'static [u64] {
    match group {
        1 => &[0],
        2 => &[1],
        3 => &[1, 2],
        _ => unreachable!(),
    }
}

fn key_in(db: &Database, group: u32) -> Vec<u8> {
    (0..).map(key).find(|k| db.group_of(k) == Some(group)).unwrap()
}

#[test]
fn a_cross_group_transaction_has_one_id_and_a_record_in_each_involved_journal() {
    let dir = tempdir();
    let db = Database::open(dir.path(), grouped("groups")).unwrap();
    assert_eq!(db.archives()[1].identity().storage_groups, vec![(2, "west".into()), (3, "shared".into())]);
    let (east, west, shared) = (key_in(&db, 1), key_in(&db, 2), key_in(&db, 3));
    let t1 = db.commit(&Txn::new().put(east.clone(), "e")).unwrap().txn_id;
    let t2 = db.commit(&Txn::new().put(east.clone(), "e2").put(west.clone(), "w")).unwrap().txn_id;
    let t3 = db.commit(&Txn::new().put(shared.clone(), "s").delete(west.clone())).unwrap().txn_id;
    assert_eq!((t1, t2, t3), (1, 2, 3));
    let txns = |a: u64| journal_records(&dir.path().join(a.to_string())).iter().map(|r| r.1).collect::<Vec<_>>();
    assert_eq!(txns(0), vec![1, 2]);
    assert_eq!(txns(1), vec![2, 3]);
    assert_eq!(txns(2), vec![3]);
    assert_eq!(db.get(&east).unwrap(), Some(b"e2".to_vec()));
    assert_eq!(db.get(&west).unwrap(), None);
    assert_eq!(db.get(&shared).unwrap(), Some(b"s".to_vec()));
    // Archive 2 has no record of 1 and 2, yet it is durable up to 3: they did not involve it.
    assert_eq!(db.archives()[2].durable_txn(), 3);
    assert_eq!(db.durable_watermark(), 3);
    db.close().unwrap();
    drop(db);
    let db = Database::open(dir.path(), grouped("groups")).unwrap();
    assert_eq!(db.get(&shared).unwrap(), Some(b"s".to_vec()));
    assert_eq!(db.commit(&Txn::new().put(west, "w2")).unwrap().txn_id, 4);
}

#[test]
fn the_durable_watermark_is_correct_under_concurrent_cross_group_writers() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), grouped("watermark")).unwrap());
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 3, threads: 4, key_space: 400, cross_group_fraction: 0.5, ..WorkloadConfig::default() },
    );
    // Sample D while commits run, and right after each sample what every journal holds durably up to D.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (db, done) = (Arc::clone(&db), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut samples: Vec<(u64, Vec<BTreeSet<u64>>)> = Vec::new();
            while !done.load(Ordering::Acquire) && samples.len() < 25 {
                let d = db.durable_watermark();
                if d == 0 || samples.last().is_some_and(|s| s.0 == d) {
                    std::thread::yield_now();
                    continue;
                }
                let held = db
                    .archives()
                    .iter()
                    .map(|sm| sm.journal_slices(1, d).unwrap().iter().flat_map(slice_txns).collect())
                    .collect();
                samples.push((d, held));
            }
            samples
        })
    };
    wait_until("load", Duration::from_secs(60), || wl.acked_count() >= 600);
    done.store(true, Ordering::Release);
    let samples = sampler.join().unwrap();
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(samples.len() >= 5, "only {} samples of D", samples.len());

    // Which archives each acknowledged txn involves.
    let involved: BTreeMap<u64, BTreeSet<u64>> = report
        .acked
        .iter()
        .map(|a| {
            let keys = a.txn.puts.iter().map(|(k, _)| k).chain(&a.txn.deletes);
            (a.txn_id, keys.flat_map(|k| serving(db.group_of(k).unwrap()).iter().copied()).collect())
        })
        .collect();
    let cross = report.acked.iter().filter(|a| {
        let keys = a.txn.puts.iter().map(|(k, _)| k).chain(&a.txn.deletes);
        keys.map(|k| db.group_of(k)).collect::<BTreeSet<_>>().len() > 1
    });
    assert!(cross.count() > 50, "the load has cross-group transactions");
    for w in samples.windows(2) {
        assert!(w[0].0 <= w[1].0, "D never decreases");
    }
    for (d, held) in &samples {
        for (&t, archives) in involved.range(..=*d) {
            for &a in archives {
                assert!(held[a as usize].contains(&t), "D = {d} but txn {t} is not durable in archive {a}");
            }
        }
        for (a, txns) in held.iter().enumerate() {
            for t in txns {
                assert!(involved[t].contains(&(a as u64)), "archive {a} holds txn {t} that does not involve it");
            }
        }
    }
    // Every journal receives its records in strictly increasing id order; timestamps never go back.
    for a in 0..3 {
        let recs = journal_records(&dir.path().join(a.to_string()));
        assert!(recs.windows(2).all(|w| w[0].1 < w[1].1 && w[0].2 <= w[1].2), "archive {a}");
    }
    assert!(report.acked.windows(2).all(|w| w[0].timestamp_micros <= w[1].timestamp_micros));
    let last = report.acked.last().unwrap().txn_id;
    assert_eq!(db.durable_watermark(), last);

    // Each archive holds exactly its groups' data, readable on its own.
    let oracle = replay(&report.acked);
    assert_entries_eq(&db.entries().unwrap(), &oracle, "store");
    db.close().unwrap();
    for a in 0..3u64 {
        let data = read_archive(&dir.path().join(a.to_string())).unwrap();
        let mine: BTreeMap<_, _> = oracle
            .iter()
            .filter(|(k, _)| serving(db.group_of(k).unwrap()).contains(&a))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_entries_eq(&data.entries, &mine, &format!("archive {a} on its own"));
    }
}

#[test]
fn storage_group_configuration_is_checked() {
    let dir = tempdir();
    let mut c = grouped("bad");
    c.storage_groups.as_mut().unwrap()[2].archives = vec![1];
    let e = Database::open(dir.path(), c).unwrap_err();
    assert!(e.to_string().contains("archive 2 serves no storage group"), "{e}");
    let db = Database::open(dir.path(), grouped("bad")).unwrap();
    db.close().unwrap();
    drop(db);
    let mut c = grouped("bad");
    c.atom_buckets = Some(8);
    let e = Database::open(dir.path(), c).unwrap_err();
    assert!(e.to_string().contains("atom_buckets = 16"), "{e}");
}
