//! Limits hold at the edge: a count at the limit decodes, one past it is refused before allocation.

mod common;

use backset_format::limits::*;
use backset_format::*;

/// A postcard body of a catalog with `count` entries, each (atom 0, LSN 0, dropped): 3 bytes apiece.
fn catalog_body_claiming(count: u64) -> Vec<u8> {
    let mut body = vec![16];
    body.extend_from_slice(common::INC_ID.as_bytes());
    let mut n = count;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(b);
            break;
        }
        body.push(b | 0x80);
    }
    body.extend(std::iter::repeat_n([0u8, 0, 1], count as usize).flatten());
    body
}

#[test]
fn a_count_past_the_limit_is_refused() {
    let err = meta::decode_body::<Catalog>(&catalog_body_claiming(MAX_CATALOG_ENTRIES as u64 + 1)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("catalog entries") && msg.contains(&MAX_CATALOG_ENTRIES.to_string()), "{msg}");
    // At the limit the entries decode, and only the order rule (all atom ids are 0 here) refuses them.
    let err = meta::decode_body::<Catalog>(&catalog_body_claiming(MAX_CATALOG_ENTRIES as u64)).unwrap_err();
    assert!(matches!(&err, MetadataError::Invalid { reason, .. } if reason.contains("strictly increasing")), "{err}");
}

#[test]
fn names_at_and_past_the_limit() {
    let mut s = common::sample_state();
    s.database_name = "x".repeat(MAX_NAME_BYTES);
    let bytes = meta::encode(&s).unwrap();
    assert_eq!(meta::decode::<State>(&bytes).unwrap(), s);
    s.database_name.push('x');
    assert!(matches!(meta::encode(&s), Err(MetadataError::Invalid { .. })));
    // A body that carries the long name anyway is refused by the decoder, naming the limit.
    let mut body = postcard::to_allocvec(&s).unwrap();
    let err = meta::decode_body::<State>(&body).unwrap_err().to_string();
    assert!(err.contains("database name") && err.contains("255"), "{err}");
    body.truncate(0);
}

#[test]
fn element_sequence_at_and_past_the_limit() {
    assert_eq!(format!("{MAX_ELEMENT_SEQUENCE}.inc").parse(), Ok(ElementName::Incremental(MAX_ELEMENT_SEQUENCE)));
    assert!(format!("{}.inc", MAX_ELEMENT_SEQUENCE + 1).parse::<ElementName>().is_err());
    let mut s = common::sample_state();
    s.elements[1].sequence = MAX_ELEMENT_SEQUENCE;
    meta::encode(&s).unwrap();
    s.elements[1].sequence = MAX_ELEMENT_SEQUENCE + 1;
    assert!(meta::encode(&s).is_err());
}

#[test]
fn record_payload_at_and_past_the_limit() {
    let mut out = Vec::new();
    encode_record(&mut out, 1, 0, &vec![7u8; MAX_RECORD_PAYLOAD_BYTES as usize]).unwrap();
    let mut reader = RecordReader::new(0, 0, &out, 0);
    assert_eq!(reader.next().unwrap().unwrap().payload.len(), MAX_RECORD_PAYLOAD_BYTES as usize);
    assert!(encode_record(&mut Vec::new(), 1, 0, &vec![7u8; MAX_RECORD_PAYLOAD_BYTES as usize + 1]).is_err());
    // A length field past the limit is never trusted, even with the bytes present.
    out[16..20].copy_from_slice(&(MAX_RECORD_PAYLOAD_BYTES + 1).to_le_bytes());
    let mut reader = RecordReader::new(0, 0, &out, 0);
    assert!(reader.next().is_none());
    assert!(matches!(reader.tail(), Some(Tail::Torn { .. })));
}

#[test]
fn metadata_body_length_past_the_limit_is_refused_from_the_header() {
    let mut bytes = meta::encode(&common::sample_catalog()).unwrap();
    bytes[16..24].copy_from_slice(&(MAX_METADATA_BODY_BYTES + 1).to_le_bytes());
    assert!(matches!(meta::decode::<Catalog>(&bytes), Err(MetadataError::BodyTooLarge { .. })));
}

#[test]
fn decoded_sizes_match_the_memory_figures_in_limits() {
    // limits.rs states the memory a full list costs from these sizes.
    assert!(std::mem::size_of::<ElementEntry>() <= 96, "{}", std::mem::size_of::<ElementEntry>());
    assert!(std::mem::size_of::<FileEntry>() <= 88, "{}", std::mem::size_of::<FileEntry>());
    assert!(std::mem::size_of::<CatalogEntry>() <= 56, "{}", std::mem::size_of::<CatalogEntry>());
}
