//! Edges of the hot copy jobs found by the server's tests.

mod support;

use std::sync::Arc;

use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType};
use backset_refstore::{Database, Txn};
use support::hotcopy::{check_set, wait_completed};
use support::{config, tempdir};

#[test]
fn a_journal_hot_copy_of_a_database_that_committed_nothing_completes_with_nothing_to_copy() {
    let dir = tempdir();
    let mut c = config("empty");
    c.journal_hot_copy = true;
    let db = Arc::new(Database::open(dir.path().join("db"), c).unwrap());
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    // The full of an empty database covers transaction 0 only; a journal hot copy then has nothing to copy (it used
    // to ask the archive for the journal from transaction 0, which never exists, and fail).
    let s = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    assert_eq!(s.participants[0].element, None, "{s:?}");
    // Once something is committed, the next journal hot copy copies it.
    db.commit(&Txn::new().put(b"k".to_vec(), b"v".to_vec())).unwrap();
    let s = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    assert_eq!(s.participants[0].element.as_deref(), Some("1.jnl"), "{s:?}");
    check_set(&set);
}
