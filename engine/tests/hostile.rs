//! Hostile backup sets (fault 4 of the reliability issue): names that try to escape, symbolic links pointing out of
//! the set, length fields claiming huge sizes in every length-prefixed structure, deep nesting, and very many tiny
//! entries. Every case asserts: a clean error naming the element and file (no panic), nothing written outside the
//! restore destination (the whole arena around it, set included, is scanned before and after), and, in a child
//! process, a peak memory (VmHWM) within `limits::restore_memory_bound` of the set's metadata bytes.
//!
//! Short variant: 100,000 tiny atoms. `BACKSET_LONG_TESTS=1`: 1,000,000.
//! Run: `cargo test -p backset-engine --test hostile -- --nocapture`.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use backset_engine::check::{check_set, CheckOptions, CheckReport};
use backset_engine::limits::restore_memory_bound;
use backset_engine::restore::{restore, RestoreError, RestoreOptions, RestorePoint};
use backset_format::atom::{ATOM_BODY_LEN_OFFSET, ATOM_CHECK_OFFSET, ATOM_HEADER_BYTES, ATOM_ID_OFFSET};
use backset_format::fsio::{read_metadata, write_metadata};
use backset_format::journal::{RECORD_HEADER_BYTES, REC_LEN_OFFSET, SEGMENT_HEADER_BYTES};
use backset_format::limits::{CHUNK_BYTES, MAX_ATOM_BODY_BYTES, MAX_METADATA_BODY_BYTES};
use backset_format::meta::{METADATA_HEADER_BYTES, METADATA_MAGIC};
use backset_format::{
    encode_atom, encode_record, AtomState, Catalog, CatalogEntry, ElementEntry, ElementInfo, ElementKind,
    ElementStatus, FileEntry, FileKind, Manifest, Participant, SegmentHeader, State, StorageGroup, TxnRange,
};
use backset_refstore::read_archive;
use backset_refstore::workload::replay_upto;
use serde::Serialize;
use support::copy_tree;
use support::setmaker::template;
use support::{assert_entries_eq, long, scan, tempdir};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------------------------
// The arena: a sentinel parent directory holding the set, files outside it, and the restore destination.

/// `arena/set` (a copy of the template), `arena/outside` (sentinel files), `arena/dest` (where restores go).
struct Arena {
    dir: tempfile::TempDir,
}

impl Arena {
    fn new() -> Self {
        let a = Self { dir: tempdir() };
        copy_tree(&template().set(), &a.set());
        fs::create_dir_all(a.outside().join("sub")).unwrap();
        fs::write(a.outside().join("sentinel"), b"must stay as it is").unwrap();
        fs::write(a.outside().join("sub/sentinel"), b"this too").unwrap();
        a
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn set(&self) -> PathBuf {
        self.root().join("set")
    }
    fn outside(&self) -> PathBuf {
        self.root().join("outside")
    }
    fn dest(&self) -> PathBuf {
        self.root().join("dest")
    }
}

/// Runs `f` and asserts that nothing under `arena` except `arena/dest` changed.
fn nothing_written_outside<R>(arena: &Arena, f: impl FnOnce() -> R) -> R {
    let before = scan(arena.root(), &arena.dest());
    let r = f();
    let after = scan(arena.root(), &arena.dest());
    if before != after {
        let changed: Vec<_> = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k).collect();
        let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        panic!("something outside the restore destination changed: changed/new {changed:?}, removed {gone:?}");
    }
    r
}

/// A restore of the arena's set (through `set`, which may be another path to it) to latest is refused with an error
/// naming `named` (and `element`), leaves no destination, and writes nothing elsewhere.
fn assert_refused(arena: &Arena, set: &Path, named: &Path, element: Option<&str>, case: &str) -> RestoreError {
    let err =
        nothing_written_outside(arena, || restore(set, arena.dest(), RestorePoint::Latest, &RestoreOptions::default()))
            .err()
            .unwrap_or_else(|| panic!("{case}: the restore accepted a hostile set"));
    assert!(!arena.dest().exists(), "{case}: {err}: the refused restore left its destination");
    let msg = err.to_string();
    assert!(msg.contains(&named.display().to_string()), "{case}: the error does not name {}: {msg}", named.display());
    if let Some(e) = element {
        assert!(msg.contains(&format!("element {e}")), "{case}: the error does not name element {e}: {msg}");
    }
    err
}

/// A restore of the arena's set to latest succeeds with exactly the oracle's data, and writes nothing elsewhere.
fn assert_restores_exactly(arena: &Arena, set: &Path, case: &str) {
    let t = template();
    let report =
        nothing_written_outside(arena, || restore(set, arena.dest(), RestorePoint::Latest, &RestoreOptions::default()))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(report.target_txn, t.latest(), "{case}");
    let restored = read_archive(&arena.dest()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(&t.acked, t.latest()), case);
    fs::remove_dir_all(arena.dest()).unwrap();
}

/// A full check reports a defect naming `element` and `path` (or a file inside it); returns the report.
fn assert_check_names(set: &Path, element: Option<&str>, path: &Path, case: &str) -> CheckReport {
    let r = check_set(set, &CheckOptions::default()).unwrap();
    let found = r.defects.iter().any(|d| {
        d.element.map(|e| e.to_string()).as_deref() == element && d.file.as_deref().is_some_and(|f| f.starts_with(path))
    });
    assert!(found, "{case}: no defect names element {element:?} and {}: {:#?}", path.display(), r.defects);
    r
}

// ---------------------------------------------------------------------------------------------------------------
// Raw metadata: bodies encoded without the writer's validation, in the format's envelope.

fn envelope(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(METADATA_HEADER_BYTES + body.len());
    out.extend_from_slice(&METADATA_MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out.extend_from_slice(body);
    out
}

fn body<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// `body` with the varint at `offset` replaced by `value`.
fn splice_varint(body: &[u8], offset: usize, value: u64) -> Vec<u8> {
    let len = body[offset..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let mut out = body[..offset].to_vec();
    out.extend(varint(value));
    out.extend_from_slice(&body[offset + len..]);
    out
}

fn kind_code(file: &str) -> u16 {
    match file {
        "state" => 1,
        "manifest" => 2,
        "catalog" => 3,
        _ => 4,
    }
}

/// Rewrites the manifest and catalog entries of a data file after its bytes were changed, so that only the
/// change itself (not a hash) is what a reader must catch.
fn rehash(set: &Path, element: &str, kind: FileKind, id: u64) {
    let control = set.join(element).join("control");
    let mut manifest: Manifest = read_metadata(&control.join("manifest")).unwrap();
    let f = manifest.files.iter_mut().find(|f| f.kind == kind && f.id == id).unwrap();
    let sub = if kind == FileKind::Atom { "atoms" } else { "journal" };
    let bytes = fs::read(set.join(element).join("data").join(sub).join(format!("{id:016x}"))).unwrap();
    f.size = bytes.len() as u64;
    f.hash = *blake3::hash(&bytes).as_bytes();
    f.chunk_hashes = bytes.chunks(CHUNK_BYTES as usize).map(|c| *blake3::hash(c).as_bytes()).collect();
    let hash = f.hash;
    write_metadata(&control, "manifest", &manifest).unwrap();
    if kind == FileKind::Atom {
        let mut catalog: Catalog = read_metadata(&control.join("catalog")).unwrap();
        let c = catalog.atoms.iter_mut().find(|c| c.atom_id == id).unwrap();
        c.state = AtomState::Present { hash };
        write_metadata(&control, "catalog", &catalog).unwrap();
    }
}

fn first_file(dir: &Path) -> (PathBuf, u64) {
    let name = support::file_names(dir).into_iter().next().unwrap();
    (dir.join(&name), u64::from_str_radix(&name, 16).unwrap())
}

// ---------------------------------------------------------------------------------------------------------------
// Names.

#[test]
fn names_that_try_to_escape_are_refused_or_never_used_as_paths() {
    let names: Vec<String> = vec![
        "..".into(),
        "../../outside/pwned".into(),
        "/tmp/backset-absolute".into(),
        "a\0b".into(),
        "x".repeat(300),
        "".into(),
        ".".into(),
        "outside".into(),
    ];
    let mut cases = 0;
    for name in &names {
        for field in ["database name", "storage group name"] {
            let arena = Arena::new();
            let set = arena.set();
            let mut state: State = read_metadata(&set.join("state")).unwrap();
            match field {
                "database name" => state.database_name = name.clone(),
                _ => {
                    let id = state.storage_groups.last().map_or(1, |g| g.id + 1);
                    state.storage_groups.push(StorageGroup { id, name: name.clone() });
                }
            }
            fs::write(set.join("state"), envelope(1, &body(&state))).unwrap();
            let case = format!("{field} {name:?}");
            // The format allows 1..=255 bytes without NUL or '/': such a name is data, never a path.
            let valid = !name.is_empty() && name.len() <= 255 && !name.contains(['\0', '/']);
            if valid {
                let r = check_set(&set, &CheckOptions::default()).unwrap();
                assert!(r.is_ok(), "{case}: {:#?}", r.defects);
                assert_restores_exactly(&arena, &set, &case);
            } else {
                assert_check_names(&set, None, &set.join("state"), &case);
                assert_refused(&arena, &set, &set.join("state"), None, &case);
            }
            cases += 1;
        }
    }
    println!("hostile names: {cases} cases");
}

#[test]
fn entries_with_names_the_format_does_not_define_are_extra_files_and_never_followed() {
    // Names on disk that look like escapes or near-misses of the format's names.
    let arena = Arena::new();
    let set = arena.set();
    let odd = ["..full", "full.", "01.inc", "1.inc.", "1.jnl\n", "-1.jnl", "99999999999.inc", "...", " full"];
    for n in odd {
        fs::create_dir(set.join(n)).unwrap();
        fs::write(set.join(n).join("state"), b"x").unwrap();
    }
    let atoms = set.join("2.inc/data/atoms");
    for n in ["..0000000000000001", "000000000000000G", "0000000000000001/", "0000000000000001.tmp"] {
        let p = atoms.join(n.trim_end_matches('/'));
        if !p.exists() {
            fs::write(&p, b"x").unwrap();
        }
    }
    let r = check_set(&set, &CheckOptions::default()).unwrap();
    for n in odd {
        assert!(r.defects.iter().any(|d| d.file.as_deref() == Some(&set.join(n))), "{n:?}: {:#?}", r.defects);
    }
    assert_restores_exactly(&arena, &set, "odd names");
}

// ---------------------------------------------------------------------------------------------------------------
// Symbolic links.

#[test]
fn symbolic_links_pointing_out_of_the_set_are_refused_never_followed() {
    let mut cases = 0;
    // The latest restore's base is 2.inc (atoms and journal) and it needs 3.jnl's journal.
    for (rel, element) in [
        ("state", None),
        ("2.inc", Some("2.inc")),
        ("2.inc/control", Some("2.inc")),
        ("1.jnl/control", Some("1.jnl")),
        ("2.inc/control/manifest", Some("2.inc")),
        ("2.inc/data", Some("2.inc")),
        ("2.inc/data/atoms", Some("2.inc")),
        ("2.inc/data/journal", Some("2.inc")),
        ("3.jnl/data/journal", Some("3.jnl")),
    ] {
        let arena = Arena::new();
        let set = arena.set();
        let path = set.join(rel);
        // The link points to an identical copy outside the set: only the link itself is wrong.
        let target = arena.outside().join("copy");
        if path.is_dir() {
            copy_tree(&path, &target);
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::copy(&path, &target).unwrap();
            fs::remove_file(&path).unwrap();
        }
        symlink(&target, &path).unwrap();
        let case = format!("{rel} -> {}", target.display());
        nothing_written_outside(&arena, || assert_check_names(&set, element, &path, &case));
        assert_refused(&arena, &set, &path, element, &case);
        cases += 1;
    }
    // A link to a directory outside, at the place of an atom file.
    let arena = Arena::new();
    let set = arena.set();
    let (atom, _) = first_file(&set.join("2.inc/data/atoms"));
    fs::remove_file(&atom).unwrap();
    symlink(arena.outside(), &atom).unwrap();
    assert_check_names(&set, Some("2.inc"), &atom, "atom -> directory");
    assert_refused(&arena, &set, &atom, Some("2.inc"), "atom -> directory");
    cases += 1;
    println!("symbolic links: {cases} cases, all refused");
}

#[test]
fn a_set_reached_through_a_symbolic_link_is_read_in_place() {
    // The operator's own path to the set may go through a link (a mount point, /backups -> /mnt/x); only links
    // inside the set are refused.
    let arena = Arena::new();
    let link = arena.root().join("link-to-set");
    symlink(arena.set(), &link).unwrap();
    let r = check_set(&link, &CheckOptions::default()).unwrap();
    assert!(r.is_ok(), "{:#?}", r.defects);
    assert_restores_exactly(&arena, &link, "set through a link");
}

// ---------------------------------------------------------------------------------------------------------------
// Huge length fields.

/// One hostile edit of a copy of the template: what it changes, the element and file a reader must name.
struct LengthCase {
    name: String,
    element: Option<&'static str>,
    rel: String,
    edit: Box<dyn Fn(&Path)>,
}

fn length_cases() -> Vec<LengthCase> {
    let mut v: Vec<LengthCase> = Vec::new();
    let huge = [u64::from(u32::MAX), u64::MAX, MAX_METADATA_BODY_BYTES + 1];
    // The envelope's body length, in every kind of metadata file.
    for (element, rel) in [
        (None, "state".to_string()),
        (Some("2.inc"), "2.inc/control/manifest".into()),
        (Some("2.inc"), "2.inc/control/catalog".into()),
        (Some("2.inc"), "2.inc/control/element".into()),
    ] {
        for value in huge {
            let r = rel.clone();
            v.push(LengthCase {
                name: format!("{rel}: body length {value}"),
                element,
                rel: rel.clone(),
                edit: Box::new(move |set| {
                    let p = set.join(&r);
                    let mut bytes = fs::read(&p).unwrap();
                    bytes[16..24].copy_from_slice(&value.to_le_bytes());
                    fs::write(&p, bytes).unwrap();
                }),
            });
        }
    }
    // Every list and string count of the metadata bodies, at the offset computed from the fields before it.
    type Offset = fn(&Path) -> usize;
    let counts: Vec<(&str, Option<&'static str>, &str, Offset)> = vec![
        ("state: database name length", None, "state", |_| 17),
        ("state: storage groups", None, "state", |set| {
            let s: State = read_metadata(&set.join("state")).unwrap();
            body(&(s.set_id, &s.database_name, s.database_id, s.archive_id)).len()
        }),
        ("state: elements", None, "state", |set| {
            let s: State = read_metadata(&set.join("state")).unwrap();
            body(&(s.set_id, &s.database_name, s.database_id, s.archive_id, &s.storage_groups)).len()
        }),
        ("manifest: files", Some("2.inc"), "2.inc/control/manifest", |_| 17),
        ("manifest: chunk hashes of the first file", Some("2.inc"), "2.inc/control/manifest", |set| {
            let m: Manifest = read_metadata(&set.join("2.inc/control/manifest")).unwrap();
            let f = &m.files[0];
            17 + varint(m.files.len() as u64).len() + body(&(f.kind, f.id, f.offset, f.size, f.hash)).len()
        }),
        ("catalog: atoms", Some("2.inc"), "2.inc/control/catalog", |_| 17),
        ("element info: participants", Some("2.inc"), "2.inc/control/element", |set| {
            let i: ElementInfo = read_metadata(&set.join("2.inc/control/element")).unwrap();
            body(&(i.element_id, i.kind, i.sequence, i.hot_copy_id, i.coordinator_start_id)).len()
        }),
    ];
    for (what, element, rel, offset) in counts {
        for value in [u64::from(u32::MAX), u64::MAX, (1 << 31) - 1] {
            let r = rel.to_string();
            v.push(LengthCase {
                name: format!("{what}: {value}"),
                element,
                rel: rel.to_string(),
                edit: Box::new(move |set| {
                    let p = set.join(&r);
                    let bytes = fs::read(&p).unwrap();
                    let body = splice_varint(&bytes[METADATA_HEADER_BYTES..], offset(set), value);
                    let file = p.file_name().unwrap().to_str().unwrap();
                    fs::write(&p, envelope(kind_code(file), &body)).unwrap();
                }),
            });
        }
    }
    // A journal record's payload length, with the manifest's hashes made to match.
    for value in [u32::MAX, u32::MAX / 2] {
        v.push(LengthCase {
            name: format!("journal record payload length {value}"),
            element: Some("3.jnl"),
            rel: "3.jnl/data/journal".into(),
            edit: Box::new(move |set| {
                let m: Manifest = read_metadata(&set.join("3.jnl/control/manifest")).unwrap();
                let f = m.files.iter().find(|f| f.kind == FileKind::Journal).unwrap();
                let p = set.join("3.jnl/data/journal").join(format!("{:016x}", f.id));
                let mut bytes = fs::read(&p).unwrap();
                let at = if f.offset == 0 { SEGMENT_HEADER_BYTES } else { 0 } + REC_LEN_OFFSET;
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
                fs::write(&p, bytes).unwrap();
                rehash(set, "3.jnl", FileKind::Journal, f.id);
            }),
        });
    }
    // An atom header's body length, with its header check, the manifest and the catalog made to match.
    for value in [u64::MAX, u64::from(u32::MAX), MAX_ATOM_BODY_BYTES + 1] {
        v.push(LengthCase {
            name: format!("atom body length {value}"),
            element: Some("2.inc"),
            rel: "2.inc/data/atoms".into(),
            edit: Box::new(move |set| {
                let (p, id) = first_file(&set.join("2.inc/data/atoms"));
                let mut bytes = fs::read(&p).unwrap();
                bytes[ATOM_BODY_LEN_OFFSET..ATOM_BODY_LEN_OFFSET + 8].copy_from_slice(&value.to_le_bytes());
                let check = blake3::hash(&bytes[..ATOM_CHECK_OFFSET]);
                bytes[ATOM_CHECK_OFFSET..ATOM_HEADER_BYTES].copy_from_slice(&check.as_bytes()[..8]);
                fs::write(&p, bytes).unwrap();
                rehash(set, "2.inc", FileKind::Atom, id);
            }),
        });
    }
    let _ = RECORD_HEADER_BYTES;
    v
}

/// An atom file shorter than its header, or with a damaged header, whose manifest and catalog were made to match its
/// bytes: the check and the restore parse the header from the first bytes the copier read, and name the file and
/// what is wrong with it.
#[test]
fn atom_files_with_short_or_damaged_headers_are_named_by_check_and_restore() {
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, Edit, &str); 4] = [
        ("empty", |b| b.clear(), "80-byte header"),
        ("10 bytes", |b| b.truncate(10), "80-byte header"),
        ("one byte short of a header", |b| b.truncate(ATOM_HEADER_BYTES - 1), "80-byte header"),
        ("a flipped byte of the header's atom id", |b| b[ATOM_ID_OFFSET] ^= 1, "the atom file is damaged"),
    ];
    for (case, edit, says) in cases {
        let arena = Arena::new();
        let set = arena.set();
        let (p, id) = first_file(&set.join("2.inc/data/atoms"));
        let mut bytes = fs::read(&p).unwrap();
        edit(&mut bytes);
        fs::write(&p, bytes).unwrap();
        rehash(&set, "2.inc", FileKind::Atom, id);
        let r = assert_check_names(&set, Some("2.inc"), &p, case);
        let d = r.defects.iter().find(|d| d.file.as_deref() == Some(p.as_path())).unwrap();
        assert!(d.what.contains(says), "{case}: the check says {:?}", d.what);
        let msg = assert_refused(&arena, &set, &p, Some("2.inc"), case).to_string();
        assert!(msg.contains(if says == "80-byte header" { says } else { "header" }), "{case}: {msg}");
    }
}

#[test]
fn huge_length_fields_in_every_length_prefixed_structure() {
    let cases = length_cases();
    for c in &cases {
        let arena = Arena::new();
        let set = arena.set();
        (c.edit)(&set);
        let path = set.join(&c.rel);
        assert_check_names(&set, c.element, &path, &c.name);
        assert_refused(&arena, &set, &path, c.element, &c.name);
    }
    println!("huge length fields: {} cases, all refused", cases.len());
}

// ---------------------------------------------------------------------------------------------------------------
// Deep nesting.

#[test]
fn deeply_nested_directories_are_extra_entries_and_never_descended() {
    let arena = Arena::new();
    let set = arena.set();
    let depth = 1000;
    let mut tops = Vec::new();
    for (element, at) in
        [(None, set.clone()), (Some("2.inc"), set.join("2.inc/data/atoms")), (Some("2.inc"), set.join("2.inc/control"))]
    {
        let top = at.join("deep");
        let mut p = top.clone();
        for _ in 0..depth {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("0000000000000001"), b"x").unwrap();
        tops.push((element, top));
    }
    let r = check_set(&set, &CheckOptions::default()).unwrap();
    for (element, top) in &tops {
        assert!(
            r.defects
                .iter()
                .any(|d| d.element.map(|e| e.to_string()).as_deref() == *element && d.file.as_deref() == Some(top)),
            "{}: {:#?}",
            top.display(),
            r.defects
        );
    }
    assert_eq!(r.defects.len(), tops.len(), "{:#?}", r.defects);
    assert_restores_exactly(&arena, &set, "deep nesting");
}

// ---------------------------------------------------------------------------------------------------------------
// Very many tiny entries, and peak memory in a child process.

/// Writes a valid set of one full element holding `atoms` tiny atom files (and a one-record journal slice);
/// returns the atom files' bytes by id.
fn many_atoms_set(set: &Path, atoms: u64, with_files: bool) -> Vec<Vec<u8>> {
    many_atoms_set_with_drops(set, atoms, with_files, 0)
}

/// [`many_atoms_set`], whose catalog also lists `dropped` atoms (ids after the present ones) as dropped.
fn many_atoms_set_with_drops(set: &Path, atoms: u64, with_files: bool, dropped: u64) -> Vec<Vec<u8>> {
    let database_id = Uuid::from_u128(0xdb);
    let element_id = Uuid::from_u128(0xe1);
    let data = set.join("full/data");
    fs::create_dir_all(data.join("atoms")).unwrap();
    fs::create_dir_all(data.join("journal")).unwrap();
    fs::create_dir_all(set.join("full/control")).unwrap();
    let mut files = Vec::new();
    let mut catalog = Vec::new();
    let mut contents = Vec::new();
    for id in 1..=atoms {
        let bytes = encode_atom(id, 1, &id.to_le_bytes()).unwrap();
        if with_files {
            fs::write(data.join("atoms").join(format!("{id:016x}")), &bytes).unwrap();
        }
        let hash = *blake3::hash(&bytes).as_bytes();
        files.push(FileEntry {
            kind: FileKind::Atom,
            id,
            offset: 0,
            size: bytes.len() as u64,
            hash,
            chunk_hashes: vec![hash],
        });
        catalog.push(CatalogEntry { atom_id: id, lsn: 1, state: AtomState::Present { hash } });
        contents.push(bytes);
    }
    for id in atoms + 1..=atoms + dropped {
        catalog.push(CatalogEntry { atom_id: id, lsn: 1, state: AtomState::Dropped });
    }
    let mut seg = SegmentHeader { database_id, archive_id: 0, segment: 1, first_txn: 1 }.encode().to_vec();
    encode_record(&mut seg, 1, 1_600_000_000_000_000, b"one record").unwrap();
    fs::write(data.join("journal/0000000000000001"), &seg).unwrap();
    let hash = *blake3::hash(&seg).as_bytes();
    files.push(FileEntry {
        kind: FileKind::Journal,
        id: 1,
        offset: 0,
        size: seg.len() as u64,
        hash,
        chunk_hashes: vec![hash],
    });
    let range = TxnRange { first: 1, last: 1 };
    let control = set.join("full/control");
    write_metadata(&control, "manifest", &Manifest { element_id, files }).unwrap();
    write_metadata(&control, "catalog", &Catalog { element_id, atoms: catalog }).unwrap();
    let info = ElementInfo {
        element_id,
        kind: ElementKind::Full,
        sequence: 0,
        hot_copy_id: Uuid::from_u128(0x4c),
        coordinator_start_id: 1,
        participants: vec![Participant { start_id: 1, archive_id: 0 }],
        txn_range: range,
        begin_micros: 1,
        end_micros: 2,
        parent: None,
    };
    write_metadata(&control, "element", &info).unwrap();
    let state = State {
        set_id: Uuid::from_u128(0x5e7),
        database_name: "many".into(),
        database_id,
        archive_id: 0,
        storage_groups: Vec::new(),
        elements: vec![ElementEntry {
            kind: ElementKind::Full,
            sequence: 0,
            element_id,
            status: ElementStatus::Completed,
            txn_range: range,
            begin_micros: 1,
            end_micros: 2,
        }],
    };
    write_metadata(set, "state", &state).unwrap();
    contents
}

/// Bytes of the set's metadata files: the state and every element's control files.
fn metadata_bytes(set: &Path) -> u64 {
    let mut n = fs::metadata(set.join("state")).unwrap().len();
    for e in fs::read_dir(set).unwrap() {
        let control = e.unwrap().path().join("control");
        if control.is_dir() {
            for f in fs::read_dir(&control).unwrap() {
                n += f.unwrap().metadata().unwrap().len();
            }
        }
    }
    n
}

const PROBE_ENV: &str = "BACKSET_HOSTILE_PROBE";

/// Runs `op` (`check` or `restore`) on `set` in a child process (this test binary, test `memory_probe`); returns
/// the child's peak resident memory (VmHWM) in bytes and its one-line outcome.
fn probe(op: &str, set: &Path, dest: &Path) -> (u64, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "memory_probe", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, format!("{op}\n{}\n{}", set.display(), dest.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "probe {op} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.find(key).map(|i| &l[i + key.len()..]))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_string()
    };
    (line("PROBE_VMHWM_KIB ").trim().parse::<u64>().unwrap() * 1024, line("PROBE_OUTCOME "))
}

/// The child side of [`probe`]: does nothing unless the test binary was started by it.
#[test]
fn memory_probe() {
    let Ok(spec) = std::env::var(PROBE_ENV) else { return };
    let mut parts = spec.lines();
    let (op, set, dest) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let outcome = match op {
        "check" => match check_set(set, &CheckOptions::default()) {
            Ok(r) => {
                format!("check: {} defects, first: {:?}", r.defects.len(), r.defects.first().map(|d| d.to_string()))
            }
            Err(e) => format!("check error: {e}"),
        },
        "restore" => match restore(set, dest, RestorePoint::Latest, &RestoreOptions::default()) {
            Ok(r) => format!("restored {} atoms", r.atoms),
            Err(e) => format!("restore error: {e}"),
        },
        // Every huge-length case, one after the other, in one process: the peak covers them all.
        "lengths" => {
            let mut refused = 0;
            for c in length_cases() {
                let keep = tempdir();
                let s = keep.path().join("set");
                copy_tree(Path::new(set), &s);
                (c.edit)(&s);
                let r = check_set(&s, &CheckOptions::default()).unwrap();
                assert!(!r.is_ok(), "{}", c.name);
                let e = restore(&s, keep.path().join("dest"), RestorePoint::Latest, &RestoreOptions::default());
                assert!(e.is_err(), "{}", c.name);
                refused += 1;
            }
            format!("{refused} hostile length cases refused")
        }
        other => panic!("unknown probe {other}"),
    };
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    println!("PROBE_VMHWM_KIB {}", hwm.trim().trim_end_matches("kB").trim());
    println!("PROBE_OUTCOME {outcome}");
}

#[test]
fn very_many_tiny_entries_restore_within_the_memory_bound() {
    // Short: 4,000 atom files restored (the copier's per-file cost dominates); long: 1,000,000.
    let atoms: u64 = if long() { 1_000_000 } else { 4_000 };
    let keep = tempdir();
    let set = keep.path().join("set");
    let contents = many_atoms_set(&set, atoms, true);
    let meta = metadata_bytes(&set);
    let bound = restore_memory_bound(meta);
    let dest = keep.path().join("dest");

    let (peak, outcome) = probe("restore", &set, &dest);
    println!(
        "{atoms} atoms, {meta} bytes of metadata: restore peak {} MiB (bound {} MiB): {outcome}",
        peak >> 20,
        bound >> 20
    );
    assert_eq!(outcome, format!("restored {atoms} atoms"));
    assert!(peak <= bound, "restore of {atoms} tiny atoms peaked at {peak} bytes, over the bound {bound}");
    for (i, bytes) in contents.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(&fs::read(dest.join("atoms").join(format!("{id:016x}"))).unwrap(), bytes, "atom {id}");
    }
    assert_eq!(support::file_names(&dest.join("atoms")).len() as u64, atoms);

    let (peak, outcome) = probe("check", &set, &dest);
    println!("{atoms} atoms: check peak {} MiB (bound {} MiB): {outcome}", peak >> 20, bound >> 20);
    assert!(outcome.starts_with("check: 0 defects"), "{outcome}");
    assert!(peak <= bound, "check of {atoms} tiny atoms peaked at {peak} bytes, over the bound {bound}");
}

#[test]
fn very_many_catalog_and_manifest_entries_without_their_files_are_refused_within_the_memory_bound() {
    // Metadata listing many atoms whose files are not there: every entry is decoded, resolved and looked for.
    // Short: 100,000 entries; long: 1,000,000.
    let atoms: u64 = if long() { 1_000_000 } else { 100_000 };
    let keep = tempdir();
    let set = keep.path().join("set");
    many_atoms_set(&set, atoms, false);
    let meta = metadata_bytes(&set);
    let bound = restore_memory_bound(meta);
    let dest = keep.path().join("dest");
    let (peak, outcome) = probe("restore", &set, &dest);
    println!(
        "{atoms} entries, {meta} bytes of metadata: restore peak {} MiB (bound {} MiB): {outcome}",
        peak >> 20,
        bound >> 20
    );
    let first = set.join("full/data/atoms/0000000000000001");
    assert!(outcome.starts_with("restore error: ") && outcome.contains("element full"), "{outcome}");
    assert!(outcome.contains(&format!("{} is missing", first.display())), "{outcome}");
    assert!(!dest.exists(), "the refused restore left {}", dest.display());
    assert!(peak <= bound, "restore peaked at {peak} bytes, over the bound {bound}");

    let (peak, outcome) = probe("check", &set, &dest);
    println!("{atoms} entries: check peak {} MiB (bound {} MiB): {outcome}", peak >> 20, bound >> 20);
    assert!(outcome.starts_with(&format!("check: {atoms} defects")), "{outcome}");
    assert!(outcome.contains(&first.display().to_string()), "{outcome}");
    assert!(peak <= bound, "check peaked at {peak} bytes, over the bound {bound}");
}

/// Defect: a check listed one defect per bad catalog entry, and a dropped entry takes 3 to 5 bytes in a catalog
/// (the smallest entry; a full's catalog lists no drops): a catalog of a million drops (5 MB) made the check hold a
/// million defects, past the memory bound. A check now lists at most `CHECK_MAX_DEFECTS_PER_FILE` per file and
/// counts the rest. Short: 1,000,000 drops; long: 4,000,000 (the catalog limit is 4 Mi entries).
#[test]
fn regression_a_catalog_of_very_many_drops_made_check_memory_grow_past_the_bound() {
    let dropped: u64 = if long() { 4_000_000 } else { 1_000_000 };
    let keep = tempdir();
    let set = keep.path().join("set");
    many_atoms_set_with_drops(&set, 1, true, dropped);
    let meta = metadata_bytes(&set);
    let bound = restore_memory_bound(meta);
    let dest = keep.path().join("dest");
    let (peak, outcome) = probe("check", &set, &dest);
    println!(
        "{dropped} drops, {meta} bytes of metadata: check peak {} MiB (bound {} MiB): {outcome}",
        peak >> 20,
        bound >> 20
    );
    let catalog = set.join("full/control/catalog");
    let listed = backset_engine::limits::CHECK_MAX_DEFECTS_PER_FILE;
    assert!(outcome.starts_with(&format!("check: {} defects", listed + 1)), "{outcome}");
    assert!(outcome.contains(&catalog.display().to_string()) && outcome.contains("dropped"), "{outcome}");
    assert!(peak <= bound, "check peaked at {peak} bytes, over the bound {bound}");
    let (peak, outcome) = probe("restore", &set, &dest);
    println!("{dropped} drops: restore peak {} MiB (bound {} MiB): {outcome}", peak >> 20, bound >> 20);
    assert!(peak <= bound, "restore peaked at {peak} bytes, over the bound {bound}");
    // The summary names the catalog and the count of the defects not listed.
    let r = check_set(&set, &CheckOptions { metadata_only: true, ..CheckOptions::default() }).unwrap();
    assert_eq!(r.defects.len(), listed + 1);
    assert_eq!(r.defects_total(), dropped, "the total counts every defect, listed or summarised");
    let last = r.defects.last().unwrap();
    assert_eq!(last.file.as_deref(), Some(catalog.as_path()));
    assert!(last.what.starts_with(&format!("{} more catalog defects", dropped - listed as u64)), "{last}");
}

/// The same cap for a directory of many files the manifest does not list (20,000 empty files in `data/atoms`).
#[test]
fn very_many_extra_files_are_counted_beyond_the_listed_ones() {
    let arena = Arena::new();
    let set = arena.set();
    let atoms = set.join("2.inc/data/atoms");
    let extra = 20_000u64;
    for i in 0..extra {
        fs::write(atoms.join(format!("{:016x}", 0xdead_0000_0000u64 + i)), b"").unwrap();
    }
    let r = check_set(&set, &CheckOptions::default()).unwrap();
    let listed = backset_engine::limits::CHECK_MAX_DEFECTS_PER_FILE;
    assert_eq!(r.defects.len(), listed + 1, "{:#?}", &r.defects[..3]);
    let last = r.defects.last().unwrap();
    assert_eq!(last.file.as_deref(), Some(atoms.as_path()));
    assert!(last.what.starts_with(&format!("{} more files not listed", extra - listed as u64)), "{last}");
    assert_restores_exactly(&arena, &set, "many extra files");
}

#[test]
fn hostile_lengths_stay_within_the_memory_bound() {
    let keep = tempdir();
    let (peak, outcome) = probe("lengths", &template().set(), &keep.path().join("unused"));
    let bound = restore_memory_bound(metadata_bytes(&template().set()));
    println!("hostile lengths: peak {} MiB (bound {} MiB): {outcome}", peak >> 20, bound >> 20);
    assert!(peak <= bound, "peak {peak} over the bound {bound}");
}

// ---------------------------------------------------------------------------------------------------------------
// Regressions, named after the defects these tests found.

/// Defect: `control/` replaced by a link to a directory outside the set was followed: check reported nothing and
/// restore read the element's metadata from outside the set.
#[test]
fn regression_a_linked_control_directory_was_followed_out_of_the_set() {
    let arena = Arena::new();
    let set = arena.set();
    let control = set.join("1.inc/control");
    copy_tree(&control, &arena.outside().join("control"));
    fs::remove_dir_all(&control).unwrap();
    symlink(arena.outside().join("control"), &control).unwrap();
    let r = check_set(&set, &CheckOptions::default()).unwrap();
    assert!(
        r.defects.iter().any(|d| d.kind == backset_engine::check::DefectKind::NotRegular
            && d.file.as_deref() == Some(&control)
            && d.element.map(|e| e.to_string()).as_deref() == Some("1.inc")),
        "{:#?}",
        r.defects
    );
    assert!(r.restorable.is_empty(), "{:?}", r.restorable);
    assert_refused(&arena, &set, &control, Some("1.inc"), "1.inc/control -> outside");
}

/// Defect: `data/atoms` or `data/journal` replaced by a link to a directory outside the set was followed by
/// restore (only each file's last component was examined), which then restored from files outside the set.
#[test]
fn regression_a_linked_data_subdirectory_was_followed_by_restore() {
    for rel in ["2.inc/data/atoms", "2.inc/data/journal", "3.jnl/data/journal"] {
        let arena = Arena::new();
        let set = arena.set();
        let dir = set.join(rel);
        let outside = arena.outside().join("copy");
        copy_tree(&dir, &outside);
        fs::remove_dir_all(&dir).unwrap();
        symlink(&outside, &dir).unwrap();
        let element = rel.split('/').next().unwrap();
        let err = assert_refused(&arena, &set, &dir, Some(element), rel);
        assert!(matches!(err, RestoreError::DataFile { .. }), "{rel}: {err}");
    }
}

/// Defect: a manifest could list an atom file of up to the 1 TiB data-file limit, far more than an atom file can be
/// (an 80-byte header and a 256 MiB body); a restore copied such a file whole (a sparse file on the set's side, a
/// full one in the destination) before its hashes or header refused it. The manifest is now refused when read.
#[test]
fn regression_an_atom_entry_larger_than_an_atom_file_was_copied_before_being_refused() {
    let arena = Arena::new();
    let set = arena.set();
    let control = set.join("2.inc/control");
    let (atom, id) = first_file(&set.join("2.inc/data/atoms"));
    let size = ATOM_HEADER_BYTES as u64 + MAX_ATOM_BODY_BYTES + 1;
    // Sparse: the file costs the attacker nothing on disk.
    fs::OpenOptions::new().write(true).open(&atom).unwrap().set_len(size).unwrap();
    let mut manifest: Manifest = read_metadata(&control.join("manifest")).unwrap();
    let f = manifest.files.iter_mut().find(|f| f.kind == FileKind::Atom && f.id == id).unwrap();
    f.size = size;
    f.chunk_hashes = vec![f.hash; size.div_ceil(CHUNK_BYTES) as usize];
    // The writer refuses it too: write the body raw.
    fs::write(control.join("manifest"), envelope(2, &body(&manifest))).unwrap();
    let manifest_path = control.join("manifest");
    let r = assert_check_names(&set, Some("2.inc"), &manifest_path, "huge atom entry");
    assert!(
        r.defects.iter().any(|d| d.kind == backset_engine::check::DefectKind::Metadata),
        "the manifest itself must be refused: {:#?}",
        r.defects
    );
    // The other elements' data is checked; the element with the refused manifest is not read.
    assert!(r.bytes_read < MAX_ATOM_BODY_BYTES, "check read the huge file: {} bytes", r.bytes_read);
    let err = assert_refused(&arena, &set, &manifest_path, Some("2.inc"), "huge atom entry");
    assert!(matches!(err, RestoreError::Set(_)), "refused only after reading data: {err}");
    assert!(err.to_string().contains("more than an atom file can be"), "{err}");
}

/// Defect: a restore into a destination whose parent directories did not exist created them all
/// (`create_dir_all`), and a restore refused after it started writing (an atom failing its hash) removed the
/// destination only, leaving the parents it had created outside the destination. A restore now creates its
/// destination's last component only (the parent rule): missing parents refuse it before anything is written, and
/// a destination it created is removed when it is refused later.
#[test]
fn regression_a_refused_restore_left_the_parent_directories_it_had_created() {
    let arena = Arena::new();
    let set = arena.set();
    // Damage an atom file the latest restore copies, keeping its size: only the copy's hashes can refuse it.
    let (atom, _) = first_file(&set.join("2.inc/data/atoms"));
    let mut bytes = fs::read(&atom).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&atom, bytes).unwrap();
    let dest = arena.dest().join("new/parents/archive");
    let err =
        nothing_written_outside(&arena, || restore(&set, &dest, RestorePoint::Latest, &RestoreOptions::default()))
            .expect_err("missing parents refuse the restore");
    assert!(
        err.to_string().starts_with(&format!(
            "Failed to create restore directory {}: No such file or directory (its parent directory {} does not exist",
            dest.display(),
            dest.parent().unwrap().display()
        )),
        "{err}"
    );
    assert!(!arena.dest().exists(), "{err}: the refused restore left {:?}", scan(&arena.dest(), Path::new("")));
    let dest = arena.dest();
    let err =
        nothing_written_outside(&arena, || restore(&set, &dest, RestorePoint::Latest, &RestoreOptions::default()))
            .expect_err("a damaged atom refuses the restore");
    assert!(matches!(err, RestoreError::DataFile { .. }), "{err}");
    assert!(err.to_string().contains(&atom.display().to_string()), "{err}");
    assert!(!arena.dest().exists(), "{err}: the refused restore left {:?}", scan(&arena.dest(), Path::new("")));
}
