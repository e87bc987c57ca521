//! Limits at the edge: the largest allowed value passes, one more is refused with a message naming the limit.

mod support;

use backset_format::limits::MAX_RECORD_PAYLOAD_BYTES;
use backset_refstore::limits::{
    MAX_CONFIG_SEGMENT_BYTES, MAX_KEY_BYTES, MAX_OPS_PER_TXN, MAX_VALUE_BYTES, MIN_SEGMENT_BYTES,
};
use backset_refstore::{CommitError, Database, StoreError, Txn};
use support::{config, tempdir};

#[test]
fn a_record_payload_at_the_limit_commits_and_one_byte_more_is_refused() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("payload")).unwrap();
    let mut txn = Txn::new().put("a", vec![1u8; MAX_VALUE_BYTES]).put("b", vec![2u8; MAX_VALUE_BYTES - 100]);
    let len = db.record_payload_len(&txn);
    // Grow the second value by what is missing (its length varint keeps its size).
    let missing = u64::from(MAX_RECORD_PAYLOAD_BYTES) - len;
    txn.puts[1].1.resize(MAX_VALUE_BYTES - 100 + missing as usize, 2);
    assert_eq!(db.record_payload_len(&txn), u64::from(MAX_RECORD_PAYLOAD_BYTES));
    let c = db.commit(&txn).unwrap();
    assert_eq!(db.get(b"b").unwrap().unwrap().len(), txn.puts[1].1.len());

    txn.puts[1].1.push(3);
    let e = db.commit(&txn).unwrap_err();
    assert!(matches!(e, CommitError::PayloadTooLarge { len, .. } if len == u64::from(MAX_RECORD_PAYLOAD_BYTES) + 1));
    assert!(e.to_string().contains(&MAX_RECORD_PAYLOAD_BYTES.to_string()), "{e}");
    assert!(e.to_string().contains("split it"), "{e}");
    assert_eq!(db.last_txn(), c.txn_id, "a refused commit takes no id");
    db.close().unwrap();
    drop(db);
    let db = Database::open(dir.path(), config("payload")).unwrap();
    assert_eq!(db.get(b"a").unwrap().unwrap().len(), MAX_VALUE_BYTES, "the largest record replays");
}

#[test]
fn keys_values_and_operation_counts_at_their_limits() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("edges")).unwrap();
    db.commit(&Txn::new().put(vec![b'k'; MAX_KEY_BYTES], "v")).unwrap();
    let e = db.commit(&Txn::new().put(vec![b'k'; MAX_KEY_BYTES + 1], "v")).unwrap_err();
    assert!(matches!(e, CommitError::BadKey { len, .. } if len == MAX_KEY_BYTES + 1), "{e}");
    let e = db.commit(&Txn::new().put("big", vec![0u8; MAX_VALUE_BYTES + 1])).unwrap_err();
    assert!(matches!(e, CommitError::ValueTooLarge { .. }), "{e}");
    assert!(e.to_string().contains(&MAX_VALUE_BYTES.to_string()), "{e}");

    let mut txn = Txn::new();
    txn.deletes = (0..MAX_OPS_PER_TXN).map(|i| format!("d{i}").into_bytes()).collect();
    db.commit(&txn).unwrap();
    txn.deletes.push(b"one-more".to_vec());
    let e = db.commit(&txn).unwrap_err();
    assert!(matches!(e, CommitError::TooManyOps { count, .. } if count == MAX_OPS_PER_TXN + 1), "{e}");
}

#[test]
fn segment_size_is_bounded_both_ways() {
    let dir = tempdir();
    for bad in [MIN_SEGMENT_BYTES - 1, MAX_CONFIG_SEGMENT_BYTES + 1] {
        let mut c = config("segments");
        c.segment_bytes = bad;
        let e = Database::open(dir.path(), c).unwrap_err();
        assert!(matches!(e, StoreError::Config { .. }), "{e}");
        assert!(e.to_string().contains(&format!("segment_bytes = {bad}")), "{e}");
    }
    let mut c = config("segments");
    c.segment_bytes = MAX_CONFIG_SEGMENT_BYTES;
    Database::open(dir.path(), c).unwrap().close().unwrap();
}

#[test]
fn atom_buckets_are_bounded_per_group_and_per_archive() {
    use backset_refstore::limits::{default_atom_buckets, DEFAULT_ATOM_BUCKETS, MAX_ARCHIVE_ATOMS, MAX_ATOM_BUCKETS};
    use backset_refstore::StorageGroup;
    let dir = tempdir();
    // Per storage group: MAX_ATOM_BUCKETS opens, one more (and 0) is refused naming the limit.
    for bad in [0, MAX_ATOM_BUCKETS + 1] {
        let mut c = config("buckets");
        c.atom_buckets = Some(bad);
        let e = Database::open(dir.path().join("bad"), c).unwrap_err();
        assert!(matches!(e, StoreError::Config { .. }), "{e}");
        assert!(e.to_string().contains(&format!("atom_buckets = {bad}, must be 1..={MAX_ATOM_BUCKETS}")), "{e}");
    }
    let mut c = config("buckets");
    c.atom_buckets = Some(MAX_ATOM_BUCKETS);
    let db = Database::open(dir.path().join("max"), c).unwrap();
    db.commit(&Txn::new().put("k", "v")).unwrap();
    assert!(db.atom_of(b"k") < u64::from(MAX_ATOM_BUCKETS));
    db.close().unwrap();

    // Per archive: buckets times the groups one archive serves, at most MAX_ARCHIVE_ATOMS.
    let groups = |n: u32| {
        Some((1..=n).map(|id| StorageGroup { id, name: format!("g{id}"), archives: vec![0] }).collect::<Vec<_>>())
    };
    let per_group = (MAX_ARCHIVE_ATOMS / 2) as u32;
    let mut c = config("archive");
    (c.storage_groups, c.atom_buckets) = (groups(2), Some(per_group));
    Database::open(dir.path().join("two"), c).unwrap().close().unwrap();
    let mut c = config("archive");
    (c.storage_groups, c.atom_buckets) = (groups(3), Some(per_group));
    let e = Database::open(dir.path().join("three"), c).unwrap_err();
    assert!(e.to_string().contains(&format!("more than the limit of {MAX_ARCHIVE_ATOMS} atoms per archive")), "{e}");
    // Without a count, the default shrinks to fit the archive serving the most groups.
    assert_eq!(default_atom_buckets(1), DEFAULT_ATOM_BUCKETS);
    let many = MAX_ARCHIVE_ATOMS / u64::from(DEFAULT_ATOM_BUCKETS) * 4;
    assert_eq!(u64::from(default_atom_buckets(many)), MAX_ARCHIVE_ATOMS / many);
    let mut c = config("archive");
    (c.storage_groups, c.atom_buckets) = (groups(many as u32), None);
    let db = Database::open(dir.path().join("many"), c).unwrap();
    assert_eq!(u64::from(db.meta().atom_buckets) * many, MAX_ARCHIVE_ATOMS);
}

#[test]
fn a_database_keeps_the_atom_buckets_it_was_created_with() {
    let dir = tempdir();
    let mut c = config("kept");
    c.atom_buckets = Some(300);
    let db = Database::open(dir.path(), c).unwrap();
    db.commit(&Txn::new().put("k", "v")).unwrap();
    db.close().unwrap();
    drop(db);
    // Opened without a count (as a database created before the default changed is): the stored one.
    let mut c = config("kept");
    c.atom_buckets = None;
    let db = Database::open(dir.path(), c).unwrap();
    assert_eq!(db.meta().atom_buckets, 300);
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
    drop(db);
    let mut c = config("kept");
    c.atom_buckets = Some(256);
    let e = Database::open(dir.path(), c).unwrap_err();
    assert!(e.to_string().contains("created with atom_buckets = 300, the configuration asks for 256"), "{e}");
}
