//! Round-trip property tests: every structure encodes and decodes back to itself.

mod common;

use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::*;
use proptest::prelude::*;

fn roundtrip<T: Metadata + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = meta::encode(value).expect("valid values encode");
    assert_eq!(&meta::decode::<T>(&bytes).expect("encoded values decode"), value);
}

proptest! {
    #[test]
    fn state_roundtrips(s in common::state()) { roundtrip(&s) }

    #[test]
    fn manifest_roundtrips(m in common::manifest()) { roundtrip(&m) }

    #[test]
    fn catalog_roundtrips(c in common::catalog()) { roundtrip(&c) }

    #[test]
    fn element_info_roundtrips(i in common::element_info()) { roundtrip(&i) }

    #[test]
    fn segment_header_roundtrips(db in common::uuid(), archive_id: u64, segment: u64, first_txn in 1u64..) {
        let h = SegmentHeader { database_id: db, archive_id, segment, first_txn };
        prop_assert_eq!(SegmentHeader::parse(&h.encode()), Ok(h));
    }

    #[test]
    fn journal_records_roundtrip(
        first_txn in 1u64..1_000_000,
        records in proptest::collection::vec((1u64..100, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
    ) {
        let header = SegmentHeader { database_id: common::DB_ID, archive_id: 1, segment: 9, first_txn };
        let mut w = SegmentWriter::create(Vec::new(), header).unwrap();
        let mut txn = first_txn - 1;
        let mut expected = Vec::new();
        for (gap, ts, payload) in &records {
            txn += gap;
            let offset = w.append(txn, *ts, payload).unwrap();
            expected.push((txn, *ts, payload.clone(), offset));
        }
        let bytes = w.into_inner();
        let (h, mut reader) = read_segment(&bytes).unwrap();
        prop_assert_eq!(h, header);
        let got: Vec<_> = reader.by_ref()
            .map(|r| r.map(|r| (r.txn_id, r.timestamp_micros, r.payload.to_vec(), r.offset)))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(reader.tail(), Some(Tail::Clean));
    }

    #[test]
    fn atom_roundtrips(atom_id: u64, lsn: u64, body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let bytes = encode_atom(atom_id, lsn, &body).unwrap();
        prop_assert_eq!(bytes.len(), ATOM_HEADER_BYTES + body.len());
        let (h, b) = decode_atom(&bytes).unwrap();
        prop_assert_eq!((h.atom_id, h.lsn, b), (atom_id, lsn, &body[..]));
    }

    #[test]
    fn element_names_roundtrip(n in 1u32..=limits::MAX_ELEMENT_SEQUENCE, k in 0u8..3) {
        let name = [ElementName::Full, ElementName::Incremental(n), ElementName::Journal(n)][k as usize];
        prop_assert_eq!(name.to_string().parse::<ElementName>(), Ok(name));
    }

    #[test]
    fn id_names_roundtrip(id: u64) {
        prop_assert_eq!(layout::parse_id_name(&layout::atom_file_name(id)), Some(id));
    }
}

#[test]
fn element_names_are_strict() {
    for bad in [
        "",
        "full ",
        "Full",
        "0.inc",
        "01.inc",
        "+1.inc",
        "1.INC",
        "1.jnl/",
        "../1.inc",
        "1.inc.x",
        "1",
        ".inc",
        "100000000.jnl",
        "4294967296.inc",
        "1.tmp",
    ] {
        assert!(bad.parse::<ElementName>().is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn writers_refuse_what_readers_would_reject() {
    let mut s = common::sample_state();
    s.elements[1].sequence = 0;
    assert!(matches!(meta::encode(&s), Err(MetadataError::Invalid { .. })));
    let mut m = common::sample_manifest();
    m.files.swap(0, 1);
    assert!(matches!(meta::encode(&m), Err(MetadataError::Invalid { .. })));
    let mut m = common::sample_manifest();
    m.files[1].chunk_hashes.pop();
    assert!(matches!(meta::encode(&m), Err(MetadataError::Invalid { .. })));
    let mut c = common::sample_catalog();
    c.atoms[1].atom_id = 1;
    assert!(matches!(meta::encode(&c), Err(MetadataError::Invalid { .. })));
    let mut i = common::sample_element_info();
    i.parent = None;
    assert!(matches!(meta::encode(&i), Err(MetadataError::Invalid { .. })));
    let mut i = common::sample_element_info();
    i.coordinator_start_id = 99;
    assert!(matches!(meta::encode(&i), Err(MetadataError::Invalid { .. })));
    let mut v = common::sample_verification();
    v.elements[1].element_id = v.elements[0].element_id;
    assert!(matches!(meta::encode(&v), Err(MetadataError::Invalid { .. })), "an element verified twice");
    let mut v = common::sample_verification();
    v.elements[1].result = VerifyResult::Failed { defects: 0 };
    assert!(matches!(meta::encode(&v), Err(MetadataError::Invalid { .. })), "failed without a defect");
    let mut v = common::sample_verification();
    let newer = Verified { verified_micros: v.elements[0].verified_micros + 1, ..v.elements[0] };
    let older = Verified { verified_micros: 1, result: VerifyResult::Failed { defects: 1 }, ..v.elements[0] };
    v.record(older);
    assert_eq!(v.elements.len(), 2, "an older entry does not replace a newer one");
    assert_eq!(v.elements[0].result, VerifyResult::Passed);
    v.record(newer);
    assert_eq!((v.elements.len(), v.elements[0]), (2, newer), "a newer entry replaces the element's entry");
    let mut w = SegmentWriter::create(Vec::new(), common::sample_segment_header()).unwrap();
    assert!(w.append(4479, 0, b"").is_err(), "below first_txn");
    w.append(4480, 0, b"").unwrap();
    assert!(w.append(4480, 0, b"").is_err(), "repeated txn id");
    let too_big = vec![0u8; limits::MAX_RECORD_PAYLOAD_BYTES as usize + 1];
    assert!(w.append(4481, 0, &too_big).is_err(), "payload over the limit");
    w.append(4481, 0, &too_big[1..]).unwrap();
}
