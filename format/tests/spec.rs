//! docs/FORMAT.md states the same layouts and limits as the code: prose drifts, so a test holds it.

use backset_format::{atom, journal, limits, meta};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `offset N bytes: field` lines of the fenced block after `<!-- layout: NAME -->`.
fn layout(spec: &str, name: &str) -> Vec<(usize, usize, String)> {
    let marker = format!("<!-- layout: {name} -->");
    let start = spec.find(&marker).unwrap_or_else(|| panic!("FORMAT.md has no {marker}"));
    let block = spec[start..].split("```").nth(1).expect("a fenced block follows the marker");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (head, field) = l.split_once(" bytes: ").unwrap_or_else(|| panic!("bad layout line {l:?}"));
            let mut nums = head.split_whitespace().map(|n| n.parse::<usize>().unwrap());
            (nums.next().unwrap(), nums.next().unwrap(), field.trim().to_string())
        })
        .collect()
}

/// Checks that the fields are contiguous from 0, total `size`, and that each named field sits at its constant.
fn check(name: &str, size: usize, fields: &[(&str, usize)]) {
    let spec = spec();
    let lines = layout(&spec, name);
    let mut offset = 0;
    for (at, len, field) in &lines {
        assert_eq!(*at, offset, "{name}: field {field:?} at {at}, but the fields before end at {offset}");
        offset += len;
    }
    assert_eq!(offset, size, "{name}: FORMAT.md adds up to {offset} bytes, the code's header is {size}");
    for (field, code_offset) in fields {
        let line = lines.iter().find(|l| l.2 == *field).unwrap_or_else(|| panic!("{name}: no field {field:?}"));
        assert_eq!(line.0, *code_offset, "{name}: field {field:?}");
    }
}

#[test]
fn metadata_header_matches() {
    check(
        "metadata_header",
        meta::METADATA_HEADER_BYTES,
        &[
            ("magic", meta::META_MAGIC_OFFSET),
            ("format version", meta::META_VERSION_OFFSET),
            ("kind", meta::META_KIND_OFFSET),
            ("reserved", meta::META_RESERVED_OFFSET),
            ("body length", meta::META_BODY_LEN_OFFSET),
            ("body hash", meta::META_BODY_HASH_OFFSET),
        ],
    );
}

#[test]
fn segment_header_matches() {
    check(
        "segment_header",
        journal::SEGMENT_HEADER_BYTES,
        &[
            ("magic", journal::SEG_MAGIC_OFFSET),
            ("format version", journal::SEG_VERSION_OFFSET),
            ("reserved", journal::SEG_RESERVED_OFFSET),
            ("database id", journal::SEG_DATABASE_ID_OFFSET),
            ("archive id", journal::SEG_ARCHIVE_ID_OFFSET),
            ("segment number", journal::SEG_NUMBER_OFFSET),
            ("first txn id", journal::SEG_FIRST_TXN_OFFSET),
            ("header check", journal::SEG_CHECK_OFFSET),
        ],
    );
}

#[test]
fn record_header_matches() {
    check(
        "record_header",
        journal::RECORD_HEADER_BYTES,
        &[
            ("txn id", journal::REC_TXN_OFFSET),
            ("commit timestamp", journal::REC_TIMESTAMP_OFFSET),
            ("payload length", journal::REC_LEN_OFFSET),
            ("reserved", journal::REC_RESERVED_OFFSET),
            ("record check", journal::REC_CHECK_OFFSET),
        ],
    );
}

#[test]
fn atom_header_matches() {
    check(
        "atom_header",
        atom::ATOM_HEADER_BYTES,
        &[
            ("magic", atom::ATOM_MAGIC_OFFSET),
            ("format version", atom::ATOM_VERSION_OFFSET),
            ("reserved", atom::ATOM_RESERVED_OFFSET),
            ("atom id", atom::ATOM_ID_OFFSET),
            ("LSN", atom::ATOM_LSN_OFFSET),
            ("body length", atom::ATOM_BODY_LEN_OFFSET),
            ("body hash", atom::ATOM_BODY_HASH_OFFSET),
            ("header check", atom::ATOM_CHECK_OFFSET),
        ],
    );
}

#[test]
fn magics_match() {
    let spec = spec();
    for (family, magic) in [("BKM", meta::METADATA_MAGIC), ("BKJ", journal::SEGMENT_MAGIC), ("BKA", atom::ATOM_MAGIC)] {
        let f = family.as_bytes();
        assert_eq!(magic, [0x89, f[0], f[1], f[2], b'\r', b'\n', 0x1a, b'\n']);
        assert!(spec.contains(&format!("`\\x89{family}\\r\\n\\x1a\\n`")), "FORMAT.md gives the {family} magic");
    }
}

#[test]
fn limits_table_matches() {
    let spec = spec();
    let table = spec.split("<!-- limits -->").nth(1).expect("FORMAT.md has a limits table");
    let rows: Vec<(String, u64)> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.parse().ok()?))
        })
        .collect();
    let code: [(&str, u64); 15] = [
        ("CHUNK_BYTES", limits::CHUNK_BYTES),
        ("MAX_DATA_FILE_BYTES", limits::MAX_DATA_FILE_BYTES),
        ("MAX_CHUNKS_PER_FILE", limits::MAX_CHUNKS_PER_FILE),
        ("MAX_METADATA_BODY_BYTES", limits::MAX_METADATA_BODY_BYTES),
        ("MAX_NAME_BYTES", limits::MAX_NAME_BYTES as u64),
        ("MAX_STORAGE_GROUPS", limits::MAX_STORAGE_GROUPS as u64),
        ("MAX_ELEMENTS", limits::MAX_ELEMENTS as u64),
        ("MAX_MANIFEST_FILES", limits::MAX_MANIFEST_FILES as u64),
        ("MAX_CATALOG_ENTRIES", limits::MAX_CATALOG_ENTRIES as u64),
        ("MAX_PARTICIPANTS", limits::MAX_PARTICIPANTS as u64),
        ("MAX_RECORD_PAYLOAD_BYTES", limits::MAX_RECORD_PAYLOAD_BYTES as u64),
        ("MAX_SEGMENT_BYTES", limits::MAX_SEGMENT_BYTES),
        ("MAX_TORN_SEGMENT_BYTES", limits::MAX_TORN_SEGMENT_BYTES),
        ("MAX_ATOM_BODY_BYTES", limits::MAX_ATOM_BODY_BYTES),
        ("MAX_ELEMENT_SEQUENCE", limits::MAX_ELEMENT_SEQUENCE as u64),
    ];
    assert_eq!(rows.len(), code.len(), "FORMAT.md lists {} limits, limits.rs {}", rows.len(), code.len());
    for (name, value) in code {
        let row = rows.iter().find(|r| r.0 == name).unwrap_or_else(|| panic!("FORMAT.md does not list {name}"));
        assert_eq!(row.1, value, "{name}: FORMAT.md says {}, limits.rs {value}", row.1);
    }
}
