//! Journal segments: torn tails end the journal cleanly, damage before valid data is corruption at its offset.

mod common;

use backset_format::journal::SEGMENT_HEADER_BYTES;
use backset_format::*;

/// Record offsets of the sample segment and its length.
fn layout(bytes: &[u8]) -> Vec<u64> {
    let (_, reader) = read_segment(bytes).unwrap();
    reader.map(|r| r.unwrap().offset).collect()
}

fn read_all(bytes: &[u8]) -> (Vec<u64>, Result<Option<Tail>, JournalError>) {
    let (_, mut reader) = read_segment(bytes).unwrap();
    let mut txns = Vec::new();
    for r in reader.by_ref() {
        match r {
            Ok(r) => txns.push(r.txn_id),
            Err(e) => return (txns, Err(e)),
        }
    }
    (txns, Ok(reader.tail()))
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record_is_a_clean_end() {
    let bytes = common::sample_segment();
    let last = *layout(&bytes).last().unwrap();
    for cut in last..bytes.len() as u64 {
        let (txns, tail) = read_all(&bytes[..cut as usize]);
        assert_eq!(txns, [4480, 4481, 4482, 4483], "cut at {cut}");
        let expected = if cut == last { Tail::Clean } else { Tail::Torn { offset: last, len: cut - last } };
        assert_eq!(tail, Ok(Some(expected)), "cut at {cut}");
    }
    assert_eq!(read_all(&bytes), (vec![4480, 4481, 4482, 4483, 4484], Ok(Some(Tail::Clean))));
}

#[test]
fn damage_in_the_last_record_is_a_torn_tail() {
    let bytes = common::sample_segment();
    let last = *layout(&bytes).last().unwrap() as usize;
    for i in last..bytes.len() {
        let mut d = bytes.clone();
        d[i] ^= 0x40;
        let (txns, tail) = read_all(&d);
        assert_eq!(txns.len(), 4, "flip at {i}");
        assert_eq!(tail, Ok(Some(Tail::Torn { offset: last as u64, len: (bytes.len() - last) as u64 })));
    }
}

#[test]
fn damage_before_valid_records_is_corruption_at_the_damaged_record() {
    let bytes = common::sample_segment();
    let offsets = layout(&bytes);
    for (k, pair) in offsets.windows(2).enumerate() {
        for i in pair[0]..pair[1] {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = bytes.clone();
                d[i as usize] ^= flip;
                let (txns, result) = read_all(&d);
                assert_eq!(txns, (4480..4480 + k as u64).collect::<Vec<_>>(), "flip {flip:#x} at {i}");
                match result {
                    Err(JournalError::Corrupt { segment: 3, offset, .. }) => {
                        assert_eq!(offset, pair[0], "flip {flip:#x} at {i}")
                    }
                    other => panic!("flip {flip:#x} at byte {i} (record at {}) gave {other:?}", pair[0]),
                }
            }
        }
    }
}

#[test]
fn corruption_error_names_segment_and_offset() {
    let mut bytes = common::sample_segment();
    let offsets = layout(&bytes);
    bytes[offsets[1] as usize + 8] ^= 1;
    let (_, result) = read_all(&bytes);
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("segment 3") && msg.contains(&format!("offset {}", offsets[1])), "{msg}");
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let mut bytes = common::sample_segment();
    let end = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    assert_eq!(read_all(&bytes).1, Ok(Some(Tail::Torn { offset: end, len: 4096 })));
}

#[test]
fn a_valid_record_with_a_repeated_txn_id_is_corruption() {
    let mut bytes = common::sample_segment();
    let end = bytes.len() as u64;
    encode_record(&mut bytes, 4484, common::T0, b"again").unwrap();
    let (txns, result) = read_all(&bytes);
    assert_eq!(txns.len(), 5);
    assert!(matches!(result, Err(JournalError::Corrupt { offset, .. }) if offset == end), "{result:?}");
}

#[test]
fn a_slice_from_a_record_boundary_reads_like_the_segment() {
    let bytes = common::sample_segment();
    let offsets = layout(&bytes);
    let start = offsets[2];
    let mut reader = RecordReader::new(3, start, &bytes[start as usize..], 4481);
    let got: Vec<_> = reader.by_ref().map(|r| r.map(|r| (r.txn_id, r.offset))).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, [(4482, offsets[2]), (4483, offsets[3]), (4484, offsets[4])]);
    assert_eq!(reader.tail(), Some(Tail::Clean));
    assert_eq!(reader.valid_end(), bytes.len() as u64);
}

#[test]
fn an_empty_segment_has_a_clean_end() {
    let bytes = SegmentWriter::create(Vec::new(), common::sample_segment_header()).unwrap().into_inner();
    assert_eq!(bytes.len(), SEGMENT_HEADER_BYTES);
    assert_eq!(read_all(&bytes), (vec![], Ok(Some(Tail::Clean))));
}
