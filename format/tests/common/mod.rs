//! Fixed sample values (for golden files) and proptest strategies (for round trips) of every structure.
#![allow(dead_code)]

use backset_format::*;
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

pub const DB_ID: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
pub const SET_ID: Uuid = Uuid::from_u128(0x5e7_0000_0000_0000_0000_0000_0000_0001);
pub const FULL_ID: Uuid = Uuid::from_u128(0xe1e_0000_0000_0000_0000_0000_0000_0001);
pub const INC_ID: Uuid = Uuid::from_u128(0xe1e_0000_0000_0000_0000_0000_0000_0002);
pub const JNL_ID: Uuid = Uuid::from_u128(0xe1e_0000_0000_0000_0000_0000_0000_0003);
pub const JOB_ID: Uuid = Uuid::from_u128(0x10b_0000_0000_0000_0000_0000_0000_0004);

/// 2021-02-19T17:00:30Z in microseconds.
pub const T0: u64 = 1_613_754_030_000_000;

pub fn hash_of(tag: &str) -> Hash {
    *blake3::hash(tag.as_bytes()).as_bytes()
}

pub fn sample_state() -> State {
    State {
        set_id: SET_ID,
        database_name: "demo".into(),
        database_id: DB_ID,
        archive_id: 0,
        storage_groups: vec![StorageGroup { id: 1, name: "SG1".into() }, StorageGroup { id: 2, name: "SG2".into() }],
        elements: vec![
            ElementEntry {
                kind: ElementKind::Full,
                sequence: 0,
                element_id: FULL_ID,
                status: ElementStatus::Completed,
                txn_range: TxnRange { first: 1, last: 4484 },
                begin_micros: T0,
                end_micros: T0 + 35_000_000,
            },
            ElementEntry {
                kind: ElementKind::Journal,
                sequence: 1,
                element_id: JNL_ID,
                status: ElementStatus::Completed,
                txn_range: TxnRange { first: 4485, last: 5000 },
                begin_micros: T0 + 36_000_000,
                end_micros: T0 + 36_500_000,
            },
            ElementEntry {
                kind: ElementKind::Incremental,
                sequence: 1,
                element_id: INC_ID,
                status: ElementStatus::InProgress,
                txn_range: TxnRange { first: 4900, last: 4900 },
                begin_micros: T0 + 40_000_000,
                end_micros: 0,
            },
        ],
    }
}

pub fn sample_manifest() -> Manifest {
    Manifest {
        element_id: FULL_ID,
        files: vec![
            FileEntry { kind: FileKind::Atom, id: 1, offset: 0, size: 0, hash: hash_of(""), chunk_hashes: vec![] },
            FileEntry {
                kind: FileKind::Atom,
                id: 42,
                offset: 0,
                size: 1 << 20 | 1,
                hash: hash_of("atom 42"),
                chunk_hashes: vec![hash_of("atom 42 chunk 0"), hash_of("atom 42 chunk 1")],
            },
            FileEntry {
                kind: FileKind::Journal,
                id: 3,
                offset: 4096,
                size: 1000,
                hash: hash_of("segment 3"),
                chunk_hashes: vec![hash_of("segment 3 chunk 0")],
            },
        ],
    }
}

pub fn sample_catalog() -> Catalog {
    Catalog {
        element_id: INC_ID,
        atoms: vec![
            CatalogEntry { atom_id: 1, lsn: 17, state: AtomState::Present { hash: hash_of("atom 1") } },
            CatalogEntry { atom_id: 2, lsn: 4484, state: AtomState::Dropped },
            CatalogEntry { atom_id: u64::MAX, lsn: u64::MAX, state: AtomState::Present { hash: hash_of("last") } },
        ],
    }
}

pub fn sample_element_info() -> ElementInfo {
    ElementInfo {
        element_id: INC_ID,
        kind: ElementKind::Incremental,
        sequence: 1,
        hot_copy_id: JOB_ID,
        coordinator_start_id: 2,
        participants: vec![Participant { start_id: 2, archive_id: 0 }, Participant { start_id: 3, archive_id: 1 }],
        txn_range: TxnRange { first: 4300, last: 4900 },
        begin_micros: T0 + 40_000_000,
        end_micros: T0 + 41_000_000,
        parent: Some(FULL_ID),
    }
}

pub fn sample_verification() -> Verification {
    Verification {
        set_id: SET_ID,
        elements: vec![
            Verified {
                element_id: FULL_ID,
                verified_micros: T0 + 50_000_000,
                data_bytes: 1 << 30,
                result: VerifyResult::Passed,
            },
            Verified {
                element_id: INC_ID,
                verified_micros: T0 + 60_000_000,
                data_bytes: 4096,
                result: VerifyResult::Failed { defects: 2 },
            },
        ],
    }
}

pub fn sample_segment_header() -> SegmentHeader {
    SegmentHeader { database_id: DB_ID, archive_id: 0, segment: 3, first_txn: 4480 }
}

/// A segment of 5 records: txn 4480..=4484, payloads of 0, 1, 10, 100 and 1000 bytes.
pub fn sample_segment() -> Vec<u8> {
    let mut w = SegmentWriter::create(Vec::new(), sample_segment_header()).unwrap();
    for (i, len) in [0usize, 1, 10, 100, 1000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        w.append(4480 + i as u64, T0 + i as u64 * 1000, &payload).unwrap();
    }
    w.into_inner()
}

pub fn sample_atom() -> Vec<u8> {
    encode_atom(42, 4484, b"the body of atom 42, opaque to Backset").unwrap()
}

// ---- proptest strategies -------------------------------------------------------------------------------------------

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_. -]{1,40}"
}

pub fn txn_range() -> impl Strategy<Value = TxnRange> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| TxnRange { first: a.min(b), last: a.max(b) })
}

fn times() -> impl Strategy<Value = (u64, u64)> {
    (0u64..u64::MAX / 2, 0u64..u64::MAX / 2).prop_map(|(b, d)| (b, b + d))
}

pub fn state() -> impl Strategy<Value = State> {
    let sgs = proptest::collection::btree_map(any::<u32>(), name(), 0..8)
        .prop_map(|m| m.into_iter().map(|(id, name)| StorageGroup { id, name }).collect::<Vec<_>>());
    let elems = (any::<bool>(), vec((any::<bool>(), uuid(), any::<bool>(), txn_range(), times()), 0..20)).prop_map(
        |(with_full, items)| {
            let mut seq = [0u32; 2];
            let mut out = Vec::new();
            if with_full {
                out.push(ElementEntry {
                    kind: ElementKind::Full,
                    sequence: 0,
                    element_id: Uuid::from_u128(u128::MAX),
                    status: ElementStatus::Completed,
                    txn_range: TxnRange { first: 1, last: 2 },
                    begin_micros: 1,
                    end_micros: 2,
                });
            }
            for (i, (inc, _, done, txn_range, (b, e))) in items.into_iter().enumerate() {
                let s = &mut seq[usize::from(inc)];
                *s += 1;
                out.push(ElementEntry {
                    kind: if inc { ElementKind::Incremental } else { ElementKind::Journal },
                    sequence: *s,
                    element_id: Uuid::from_u128(i as u128 + 1),
                    status: if done { ElementStatus::Completed } else { ElementStatus::InProgress },
                    txn_range,
                    begin_micros: b,
                    end_micros: if done { e } else { 0 },
                });
            }
            out
        },
    );
    (uuid(), name(), uuid(), any::<u64>(), sgs, elems).prop_map(
        |(set_id, database_name, database_id, archive_id, storage_groups, elements)| State {
            set_id,
            database_name,
            database_id,
            archive_id,
            storage_groups,
            elements,
        },
    )
}

pub fn file_entry() -> impl Strategy<Value = FileEntry> {
    (any::<bool>(), any::<u64>(), 0u64..(1 << 31), 0u64..(5 << 20), any::<[u8; 32]>()).prop_map(
        |(atom, id, offset, size, hash)| FileEntry {
            kind: if atom { FileKind::Atom } else { FileKind::Journal },
            id,
            offset: if atom { 0 } else { offset },
            size,
            hash,
            chunk_hashes: (0..manifest::chunk_count(size)).map(|i| hash_of(&format!("{id} {i}"))).collect(),
        },
    )
}

pub fn manifest() -> impl Strategy<Value = Manifest> {
    (uuid(), vec(file_entry(), 0..30)).prop_map(|(element_id, mut files)| {
        files.sort_by_key(|f| (f.kind, f.id));
        files.dedup_by_key(|f| (f.kind, f.id));
        Manifest { element_id, files }
    })
}

pub fn catalog() -> impl Strategy<Value = Catalog> {
    let entry = (any::<u64>(), any::<u64>(), proptest::option::of(any::<[u8; 32]>())).prop_map(|(atom_id, lsn, h)| {
        CatalogEntry { atom_id, lsn, state: h.map_or(AtomState::Dropped, |hash| AtomState::Present { hash }) }
    });
    (uuid(), vec(entry, 0..50)).prop_map(|(element_id, mut atoms)| {
        atoms.sort_by_key(|e| e.atom_id);
        atoms.dedup_by_key(|e| e.atom_id);
        Catalog { element_id, atoms }
    })
}

pub fn element_info() -> impl Strategy<Value = ElementInfo> {
    let parts = proptest::collection::btree_map(any::<u64>(), any::<u64>(), 1..10)
        .prop_map(|m| m.into_iter().map(|(archive_id, start_id)| Participant { start_id, archive_id }).collect());
    (uuid(), 0u8..3, 1u32..1000, uuid(), parts, any::<prop::sample::Index>(), txn_range(), times(), uuid())
        .prop_map(|(element_id, k, seq, hot_copy_id, participants, coord, txn_range, (b, e), parent)| {
            let participants: Vec<Participant> = participants;
            let kind = [ElementKind::Full, ElementKind::Incremental, ElementKind::Journal][k as usize];
            let full = kind == ElementKind::Full;
            ElementInfo {
                element_id,
                kind,
                sequence: if full { 0 } else { seq },
                hot_copy_id,
                coordinator_start_id: coord.get(&participants).start_id,
                participants,
                txn_range,
                begin_micros: b,
                end_micros: e,
                parent: if full { None } else { Some(parent) },
            }
        })
        .prop_filter("an element is not its own parent", |i| i.parent != Some(i.element_id))
}
