//! The bulk loader's output opens quickly, reads back, and continues the transaction sequence.

mod support;

use std::time::Instant;

use backset_engine::archive::Archive;
use backset_refstore::bulk::{bulk_key, bulk_load, bulk_value, BulkSpec};
use backset_refstore::{read_archive, Database, Txn};
use support::{config, tempdir};

#[test]
fn bulk_loaded_archives_open_and_read_back() {
    let dir = tempdir();
    let mut cfg = config("bulk");
    cfg.sms = 2;
    let spec = BulkSpec { bytes_per_archive: 8 << 20, value_bytes: 64 << 10, seed: 9 };
    let report = bulk_load(dir.path(), &cfg, &spec).unwrap();
    assert!(report.keys >= 128, "{report:?}");
    assert_eq!(report.atom_files, 2 * 16, "every bucket of both archives got keys");
    assert!(report.bytes_written >= 2 * (8 << 20));

    let started = Instant::now();
    let db = Database::open(dir.path(), cfg.clone()).unwrap();
    let opened = started.elapsed();
    let sm = &db.archives()[0];
    assert_eq!(sm.recovery_report().records_replayed, 0);
    assert!(sm.atoms().unwrap().iter().all(|a| a.lsn == 1));
    assert_eq!(sm.recovery_start(), 2, "everything up to txn 1 is in atom files");
    for n in [0, 7, report.keys - 1] {
        let k = bulk_key(n);
        assert_eq!(db.get(&k).unwrap(), Some(bulk_value(9, &k, 64 << 10)), "key {n}");
    }
    assert_eq!(db.get(&bulk_key(report.keys)).unwrap(), None);
    assert_eq!(db.commit(&Txn::new().put(bulk_key(0), "small")).unwrap().txn_id, 2);
    let mut count = 0;
    db.scan(|_, _| count += 1).unwrap();
    assert_eq!(count, report.keys);
    db.close().unwrap();
    let data = read_archive(&dir.path().join("1")).unwrap();
    assert_eq!(data.entries.len() as u64, report.keys);
    assert_eq!(data.entries[&bulk_key(0)], b"small");
    eprintln!("bulk: {report:?}, opened in {opened:?}");

    let e = bulk_load(dir.path(), &cfg, &spec).unwrap_err();
    assert!(e.to_string().contains("already holds a database"), "{e}");
}
