//! Commit, get, scan, reopen: the reference store's basic contract.

mod support;

use backset_engine::check::{check_archive, CheckError};
use backset_engine::lock::{DirKind, DirLock, Holder, LockError, LOCK_FILE};
use backset_refstore::{read_archive, CommitError, Database, StoreError, Txn};
use support::{config, tempdir};

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

/// The holder a refusal names, with the directory and its kind; panics on any other error.
fn in_use(e: &LockError) -> (DirKind, &std::path::Path, &Holder) {
    match e {
        LockError::InUse { kind, dir, holder } => (*kind, dir, holder),
        other => panic!("expected an in-use refusal, got: {other}"),
    }
}

#[test]
fn a_second_open_of_one_directory_is_refused_until_the_first_closes() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("lock")).unwrap();
    assert_eq!(db.commit(&Txn::new().put("a", "1")).unwrap().txn_id, 1);
    let me = Holder::Process {
        pid: std::process::id(),
        program: std::env::current_exe().unwrap().file_name().unwrap().to_string_lossy().into_owned(),
    };

    // A second open in the same process: refused before it reads or writes anything, naming this process.
    let segments_before = support::file_names(&dir.path().join("0").join("journal"));
    let Err(StoreError::Locked(e)) = Database::open(dir.path(), config("lock")) else {
        panic!("the second open of {} was not refused as locked", dir.path().display())
    };
    assert_eq!(in_use(&e), (DirKind::Database, dir.path(), &me));
    assert_eq!(
        e.to_string(),
        format!("database directory {} is in use by {me}; stop it first", dir.path().display()),
        "the message names the directory and the holder"
    );
    assert_eq!(support::file_names(&dir.path().join("0").join("journal")), segments_before, "nothing written");

    // The offline readers refuse the archive the store holds.
    let archive = dir.path().join("0");
    let Err(StoreError::Locked(e)) = read_archive(&archive) else { panic!("read_archive of a held archive") };
    assert_eq!(in_use(&e), (DirKind::Archive, archive.as_path(), &me));
    let Err(CheckError::Locked(e)) = check_archive(&archive) else { panic!("check_archive of a held archive") };
    assert_eq!(in_use(&e).0, DirKind::Archive);

    // The first keeps working; once closed, the directory opens again and the sequence continues.
    assert_eq!(db.commit(&Txn::new().put("b", "2")).unwrap().txn_id, 2);
    db.close().unwrap();
    assert_eq!(read_archive(&archive).unwrap().last_txn, 2, "a closed store's archive reads");
    let db2 = Database::open(dir.path(), config("lock")).unwrap();
    assert_eq!(db2.commit(&Txn::new().put("c", "3")).unwrap().txn_id, 3);
    assert_eq!(db2.get(b"b").unwrap(), Some(b"2".to_vec()));
    drop(db2);
    drop(db);

    // A crash releases the locks as the death of a process does (the file stays and means nothing).
    let db = Database::open(dir.path(), config("lock")).unwrap();
    db.crash();
    assert!(dir.path().join(LOCK_FILE).is_file() && archive.join(LOCK_FILE).is_file());
    let db = Database::open(dir.path(), config("lock")).unwrap();
    assert_eq!(db.get(b"c").unwrap(), Some(b"3".to_vec()));
    db.close().unwrap();

    // An archive being read (a shared lock) is refused to a store, which names the readers.
    let reading = DirLock::shared(&archive, DirKind::Archive).unwrap().expect("the archive has a lock file");
    let Err(StoreError::Locked(e)) = Database::open(dir.path(), config("lock")) else {
        panic!("an open while the archive is being read was not refused")
    };
    assert_eq!(in_use(&e), (DirKind::Archive, archive.as_path(), &Holder::Readers));
    // Readers share: a second reader and read_archive work beside it.
    assert_eq!(read_archive(&archive).unwrap().last_txn, 3);
    drop(reading);
    Database::open(dir.path(), config("lock")).unwrap().close().unwrap();

    // A FIFO in the lock file's place is refused, never waited on (an open for reading would block for a writer).
    std::fs::remove_file(archive.join(LOCK_FILE)).unwrap();
    let st = std::process::Command::new("mkfifo").arg(archive.join(LOCK_FILE)).status().unwrap();
    assert!(st.success(), "mkfifo failed");
    let Err(StoreError::Locked(e @ LockError::File { .. })) = read_archive(&archive) else {
        panic!("read_archive with a FIFO as the lock file")
    };
    assert!(e.to_string().contains("is not a regular file"), "{e}");
    let Err(StoreError::Locked(LockError::File { .. })) = Database::open(dir.path(), config("lock")) else {
        panic!("an open with a FIFO as the archive's lock file")
    };
}
