//! Commit, get, scan, reopen: the reference store's basic contract.

mod common;

use backset_engine::store::{read_archive, CommitError, Database, Txn};
use common::{config, tempdir};

#[test]
fn commit_get_delete_and_reopen() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("basic")).unwrap();
    let c1 = db.commit(&Txn::new().put("a", "1").put("b", "2")).unwrap();
    let c2 = db.commit(&Txn::new().put("a", "3").delete("b").delete("never")).unwrap();
    assert_eq!((c1.txn_id, c2.txn_id), (1, 2));
    assert!(c2.timestamp_micros >= c1.timestamp_micros);
    assert_eq!(db.get(b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(db.get(b"b").unwrap(), None);
    assert_eq!(db.durable_watermark(), 2);
    let entries = db.entries().unwrap();
    assert_eq!(entries.into_iter().collect::<Vec<_>>(), vec![(b"a".to_vec(), b"3".to_vec())]);
    db.close().unwrap();
    drop(db);

    let db = Database::open(dir.path(), config("basic")).unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(db.commit(&Txn::new().put("c", "4")).unwrap().txn_id, 3, "the txn sequence continues");
    db.close().unwrap();
    let data = read_archive(&dir.path().join("0")).unwrap();
    assert_eq!(data.entries.len(), 2);
    assert_eq!(data.last_txn, 3);
}

#[test]
fn refusals_name_the_problem() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("refuse")).unwrap();
    assert!(matches!(db.commit(&Txn::new()), Err(CommitError::Empty)));
    let e = db.commit(&Txn::new().put("k", "1").delete("k")).unwrap_err();
    assert!(matches!(e, CommitError::DuplicateKey { .. }), "{e}");
    assert!(e.to_string().contains("\"k\""), "{e}");
    assert!(matches!(db.commit(&Txn::new().put("", "1")), Err(CommitError::BadKey { .. })));
    assert_eq!(db.last_txn(), 0, "refused commits take no transaction id");
    db.close().unwrap();
    let e = db.commit(&Txn::new().put("k", "1")).unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
}
