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
