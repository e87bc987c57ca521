//! Golden files: one committed file per structure, so that no format change slips in unnoticed.
//!
//! Each test checks that today's encoder writes the committed bytes exactly and that the decoder reads them back as
//! the sample value. The header fields are also read straight from the bytes at the offsets FORMAT.md states, with
//! literals rather than the crate's constants. To regenerate after a deliberate format change (which also needs a
//! version bump, see FORMAT.md "Versioning"): `BACKSET_BLESS=1 cargo test -p backset-format --test golden`.

mod common;

use std::path::PathBuf;

use backset_format::*;

fn golden(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("BACKSET_BLESS").is_some() {
        std::fs::write(&path, fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == fresh,
        "{name}: the encoder's output differs from the committed golden file; a format change needs a version bump"
    );
    committed
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The metadata header as FORMAT.md lays it out: magic, version 1, kind, reserved 0, body length, body BLAKE3.
fn check_metadata_layout(bytes: &[u8], kind: u16) {
    assert_eq!(&bytes[0..8], b"\x89BKM\r\n\x1a\n");
    assert_eq!(le16(bytes, 8), 1);
    assert_eq!(le16(bytes, 10), kind);
    assert_eq!(le32(bytes, 12), 0);
    assert_eq!(le64(bytes, 16), bytes.len() as u64 - 56);
    assert_eq!(&bytes[24..56], blake3::hash(&bytes[56..]).as_bytes());
}

/// Every single-byte change and every truncation is a typed error: never a panic, never a silent success.
fn check_damage_detected<T: Metadata + std::fmt::Debug>(bytes: &[u8]) {
    let mut damaged = bytes.to_vec();
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            if v == bytes[i] {
                continue;
            }
            damaged[i] = v;
            let r = meta::decode::<T>(&damaged);
            assert!(r.is_err(), "byte {i} set to {v:#x} decoded silently: {r:?}");
            damaged[i] = bytes[i];
        }
    }
    for len in 0..bytes.len() {
        assert!(meta::decode::<T>(&bytes[..len]).is_err(), "truncation to {len} bytes decoded silently");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(meta::decode::<T>(&longer), Err(MetadataError::LengthMismatch { .. })));
}

fn metadata_golden<T: Metadata + PartialEq + std::fmt::Debug>(name: &str, value: T, kind: u16) {
    let bytes = golden(name, &meta::encode(&value).unwrap());
    check_metadata_layout(&bytes, kind);
    assert_eq!(meta::decode::<T>(&bytes).unwrap(), value);
    check_damage_detected::<T>(&bytes);
}

#[test]
fn state_golden() {
    metadata_golden("state", common::sample_state(), 1);
}

#[test]
fn manifest_golden() {
    metadata_golden("manifest", common::sample_manifest(), 2);
}

#[test]
fn catalog_golden() {
    metadata_golden("catalog", common::sample_catalog(), 3);
}

#[test]
fn element_info_golden() {
    metadata_golden("element", common::sample_element_info(), 4);
}

#[test]
fn verification_golden() {
    metadata_golden("verified", common::sample_verification(), 5);
}

#[test]
fn a_metadata_file_of_another_kind_is_refused() {
    let bytes = meta::encode(&common::sample_catalog()).unwrap();
    let err = meta::decode::<Manifest>(&bytes).unwrap_err();
    assert_eq!(err, MetadataError::WrongKind { expected: "manifest", found: "catalog".into() });
    assert!(err.to_string().contains("swapped"), "{err}");
}

#[test]
fn segment_golden() {
    let bytes = golden("segment", &common::sample_segment());
    assert_eq!(&bytes[0..8], b"\x89BKJ\r\n\x1a\n");
    assert_eq!(le16(&bytes, 8), 1);
    assert_eq!(&bytes[10..16], &[0u8; 6]);
    assert_eq!(&bytes[16..32], common::DB_ID.as_bytes());
    assert_eq!((le64(&bytes, 32), le64(&bytes, 40), le64(&bytes, 48)), (0, 3, 4480));
    assert_eq!(le64(&bytes, 56), le64(blake3::hash(&bytes[..56]).as_bytes(), 0));
    // First record at 64: txn, timestamp, length, reserved, check over bytes 0..24 + payload.
    let r = &bytes[64..];
    assert_eq!((le64(r, 0), le64(r, 8), le32(r, 16), le32(r, 20)), (4480, common::T0, 0, 0));
    assert_eq!(le64(r, 24), le64(blake3::hash(&r[..24]).as_bytes(), 0));

    let (header, mut reader) = read_segment(&bytes).unwrap();
    assert_eq!(header, common::sample_segment_header());
    let records: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.iter().map(|r| r.txn_id).collect::<Vec<_>>(), [4480, 4481, 4482, 4483, 4484]);
    assert_eq!(records.iter().map(|r| r.payload.len()).collect::<Vec<_>>(), [0, 1, 10, 100, 1000]);
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [64, 96, 129, 171, 303]);
    assert_eq!(reader.tail(), Some(Tail::Clean));
}

#[test]
fn segment_header_damage_is_detected() {
    let bytes = common::sample_segment();
    for i in 0..64 {
        for v in 0..=255u8 {
            if v != bytes[i] {
                let mut d = bytes.clone();
                d[i] = v;
                assert!(read_segment(&d).is_err(), "header byte {i} set to {v:#x} went unnoticed");
            }
        }
    }
    for len in 0..64 {
        assert!(matches!(read_segment(&bytes[..len]), Err(JournalError::BadHeader { .. })));
    }
}

#[test]
fn atom_golden() {
    let bytes = golden("atom", &common::sample_atom());
    assert_eq!(&bytes[0..8], b"\x89BKA\r\n\x1a\n");
    assert_eq!(le16(&bytes, 8), 1);
    assert_eq!(&bytes[10..16], &[0u8; 6]);
    assert_eq!((le64(&bytes, 16), le64(&bytes, 24), le64(&bytes, 32)), (42, 4484, bytes.len() as u64 - 80));
    assert_eq!(&bytes[40..72], blake3::hash(&bytes[80..]).as_bytes());
    assert_eq!(le64(&bytes, 72), le64(blake3::hash(&bytes[..72]).as_bytes(), 0));
    let (h, body) = decode_atom(&bytes).unwrap();
    assert_eq!((h.atom_id, h.lsn, body), (42, 4484, &b"the body of atom 42, opaque to Backset"[..]));
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            if v != bytes[i] {
                let mut d = bytes.clone();
                d[i] = v;
                assert!(decode_atom(&d).is_err(), "atom byte {i} set to {v:#x} went unnoticed");
            }
        }
    }
    for len in 0..bytes.len() {
        assert!(decode_atom(&bytes[..len]).is_err(), "atom truncated to {len} bytes went unnoticed");
    }
}
