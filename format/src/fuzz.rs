//! The fuzz targets' bodies, shared by `fuzz/` (libFuzzer) and by the test that replays the committed corpus, so
//! that CI runs every corpus and crash file through exactly what the fuzzer ran.
//!
//! Each function feeds arbitrary bytes to a parser and asserts what must hold for any input: no panic, and a value
//! that parses re-encodes to one that parses back equal.

use crate::atom::{decode_atom, encode_atom, AtomHeader, ATOM_HEADER_BYTES};
use crate::journal::{read_archive_segment, read_segment, ArchiveSegment, RecordReader, Tail};
use crate::limits::MAX_TORN_SEGMENT_BYTES;
use crate::meta::{self, Metadata};
use crate::{Catalog, ElementInfo, Manifest, State, Verification};

/// Names of the fuzz targets, as in `fuzz/Cargo.toml` and `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 7] =
    ["journal_segment", "atom_header", "state", "manifest", "catalog", "element_info", "verification"];

/// Runs the target called `name` on `data`. Panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "journal_segment" => journal_segment(data),
        "atom_header" => atom_header(data),
        "state" => metadata::<State>(data),
        "manifest" => metadata::<Manifest>(data),
        "catalog" => metadata::<Catalog>(data),
        "element_info" => metadata::<ElementInfo>(data),
        "verification" => metadata::<Verification>(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// A metadata file both whole (header checks, hash) and as a bare body (the decoder itself, without forging hashes).
pub fn metadata<T: Metadata + PartialEq + std::fmt::Debug>(data: &[u8]) {
    for value in [meta::decode::<T>(data), meta::decode_body::<T>(data)].into_iter().flatten() {
        let again = meta::encode(&value).expect("a decoded value re-encodes");
        assert_eq!(meta::decode::<T>(&again).expect("a re-encoded value decodes"), value);
    }
}

/// A journal segment read whole, and the same bytes read as a headerless slice of records.
pub fn journal_segment(data: &[u8]) {
    if let Ok((header, reader)) = read_segment(data) {
        check_records(reader, data.len() as u64);
        assert_eq!(crate::SegmentHeader::parse(&header.encode()), Ok(header));
    }
    check_records(RecordReader::new(7, 0, data, 0), data.len() as u64);
    if let Ok(ArchiveSegment::TornCreation) = read_archive_segment(data, true) {
        assert!(data.len() as u64 <= MAX_TORN_SEGMENT_BYTES && read_segment(data).is_err(), "a torn creation is short");
    }
}

fn check_records(mut reader: RecordReader<'_>, end: u64) {
    let mut next_offset = None;
    let mut last_txn = reader.last_txn();
    for item in reader.by_ref() {
        let Ok(record) = item else { return };
        assert!(next_offset.is_none_or(|o| o == record.offset), "records are contiguous");
        assert!(record.txn_id > last_txn, "transaction ids increase");
        last_txn = record.txn_id;
        next_offset = Some(record.offset + record.encoded_len());
    }
    match reader.tail().expect("a reader that stopped without error has a tail") {
        Tail::Clean => assert_eq!(reader.valid_end(), end),
        Tail::Torn { offset, len } => assert_eq!((offset, offset + len), (reader.valid_end(), end)),
    }
}

/// An atom header, and a whole atom file.
pub fn atom_header(data: &[u8]) {
    if let Ok(header) = AtomHeader::parse(data) {
        assert_eq!(&header.encode()[..], &data[..ATOM_HEADER_BYTES]);
    }
    if let Ok((header, body)) = decode_atom(data) {
        assert_eq!(encode_atom(header.atom_id, header.lsn, body).expect("a decoded atom re-encodes"), data);
    }
}
