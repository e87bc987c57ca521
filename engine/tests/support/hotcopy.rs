//! Helpers of the hot copy tests: a structural read-back of a backup set that recomputes every hash from the data
//! files, and a restore done by the test itself (independent of the engine's restore) that lays a set out as an
//! archive the store can read; waits for a job's end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backset_engine::hotcopy::{HotCopyManager, HotCopyStatus, JobState};
use backset_engine::set::BackupSet;
use backset_format::layout::{data_file_path, DATA_DIR, TMP_DIR};
use backset_format::{
    AtomHeader, AtomState, Catalog, ElementEntry, ElementInfo, ElementKind, ElementStatus, FileKind, Manifest,
    RecordReader, SegmentHeader, SegmentWriter,
};
use uuid::Uuid;

/// How long a test waits for a job to end.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Commits `n` transactions with the workload generator (2 threads, 300 keys) and returns them.
pub fn load(
    db: &std::sync::Arc<backset_refstore::Database>,
    seed: u64,
    n: u64,
) -> Vec<backset_refstore::workload::AckedTxn> {
    use backset_refstore::workload::{Workload, WorkloadConfig};
    let wl = Workload::start(
        std::sync::Arc::clone(db),
        WorkloadConfig { seed, threads: 2, key_space: 300, max_txns: Some(n), ..WorkloadConfig::default() },
    );
    let report = wl.join();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.acked
}

/// Waits for a job to end and returns its status (failing the test after `JOB_TIMEOUT`).
pub fn wait_end(m: &HotCopyManager, started: (u64, Uuid)) -> HotCopyStatus {
    let s = m.status(started.0, started.1, Some(JOB_TIMEOUT)).unwrap();
    assert!(s.is_terminal(), "hot copy {} still running after {JOB_TIMEOUT:?}: {s:?}", started.1);
    s
}

/// Waits for a job to complete, failing the test with its message otherwise.
pub fn wait_completed(m: &HotCopyManager, started: (u64, Uuid)) -> HotCopyStatus {
    let s = wait_end(m, started);
    assert_eq!(s.status, JobState::Completed, "hot copy {}: {}", started.1, s.message);
    assert_eq!(s.message, "Hot copy successfully completed");
    s
}

/// The bytes of a file, verified against a manifest entry's size, hash and chunk hashes computed here.
pub fn verified(path: &Path, size: u64, hash: &[u8; 32], chunks: &[[u8; 32]]) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(bytes.len() as u64, size, "size of {}", path.display());
    assert_eq!(blake3::hash(&bytes).as_bytes(), hash, "BLAKE3 of {}", path.display());
    let computed: Vec<[u8; 32]> = bytes.chunks(1 << 20).map(|c| *blake3::hash(c).as_bytes()).collect();
    assert_eq!(computed, chunks, "chunk hashes of {}", path.display());
    bytes
}

/// Every regular file under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// `(txn id, timestamp, payload)` of every record of a journal data file (a slice at `offset`).
pub fn slice_records(bytes: &[u8], segment: u64, offset: u64) -> Vec<(u64, u64, Vec<u8>)> {
    let mut reader = if offset == 0 {
        let (h, r) = backset_format::read_segment(bytes).unwrap();
        assert_eq!(h.segment, segment);
        r
    } else {
        RecordReader::new(segment, offset, bytes, 0)
    };
    let out: Vec<_> =
        reader.by_ref().map(|r| r.unwrap()).map(|r| (r.txn_id, r.timestamp_micros, r.payload.to_vec())).collect();
    assert_eq!(reader.tail(), Some(backset_format::Tail::Clean), "slice of segment {segment} at {offset} ends cleanly");
    out
}

/// What [`check_set`] found.
#[derive(Debug)]
pub struct SetSummary {
    /// `(name, kind, [first, last])` of every element, in state order.
    pub elements: Vec<(String, ElementKind, u64, u64)>,
    /// Hot copy id of each element, in state order.
    pub hot_copy_ids: Vec<Uuid>,
}

/// Structural read-back of a backup set whose `data/` are all in place: every element completed and its control
/// files consistent; manifests' sizes and hashes equal to the data files' (computed here), and no other data file;
/// full/incremental catalogs cumulative, each copied atom's catalog LSN equal to its file header's and `<= E`;
/// journal records within each element's range; parents as the chain rules say; the journal chain contiguous from
/// the full's R; `tmp/` empty. Then the engine's own check (`backset_engine::check`) must find no defect.
pub fn check_set(dir: &Path) -> SetSummary {
    let set = BackupSet::open(dir).unwrap();
    let tmp = dir.join(TMP_DIR);
    assert!(files_under(&tmp).is_empty() && std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0, "tmp/ is empty");
    let mut prev_base: Option<(Uuid, Catalog)> = None;
    let mut prev_journal: Option<(Uuid, u64)> = None;
    let mut full: Option<(Uuid, u64)> = None;
    let mut summary = SetSummary { elements: Vec::new(), hot_copy_ids: Vec::new() };
    let controls = controls(&set);
    for entry in &set.state().elements {
        assert_eq!(entry.status, ElementStatus::Completed, "{} is completed", entry.name());
        let ctl = controls.iter().find(|c| c.entry == entry).unwrap();
        let (first, last) = (entry.txn_range.first, entry.txn_range.last);
        assert!(first <= last);
        let data = element_dir(&set, entry).join(DATA_DIR);
        let listed: BTreeSet<String> = ctl.manifest.files.iter().map(|f| data_file_path(f.kind, f.id)).collect();
        assert_eq!(files_under(&data), listed, "data files of {} are exactly its manifest's", entry.name());
        let mut atoms_in_manifest = BTreeMap::new();
        for f in &ctl.manifest.files {
            let bytes = verified(&data.join(data_file_path(f.kind, f.id)), f.size, &f.hash, &f.chunk_hashes);
            match f.kind {
                FileKind::Atom => {
                    let h = AtomHeader::parse(&bytes).unwrap();
                    assert_eq!(h.atom_id, f.id);
                    assert!(h.lsn <= last, "atom {} of {} has LSN {} above E {last}", f.id, entry.name(), h.lsn);
                    atoms_in_manifest.insert(f.id, (h.lsn, f.hash));
                }
                FileKind::Journal => {
                    for (txn, _, _) in slice_records(&bytes, f.id, f.offset) {
                        assert!(
                            (first..=last).contains(&txn),
                            "record {txn} of {} outside [{first}, {last}]",
                            entry.name()
                        );
                    }
                }
            }
        }
        assert!(!ctl.info.hot_copy_id.is_nil());
        summary.hot_copy_ids.push(ctl.info.hot_copy_id);
        summary.elements.push((entry.name().to_string(), entry.kind, first, last));
        match entry.kind {
            ElementKind::Full | ElementKind::Incremental => {
                if entry.kind == ElementKind::Full {
                    assert_eq!(ctl.info.parent, None);
                    full = Some((entry.element_id, first));
                } else {
                    assert_eq!(ctl.info.parent, prev_base.as_ref().map(|(id, _)| *id), "parent of {}", entry.name());
                }
                for (id, (lsn, hash)) in &atoms_in_manifest {
                    let e = ctl.catalog.get(*id).unwrap_or_else(|| panic!("atom {id} copied but not in the catalog"));
                    assert_eq!((e.lsn, e.state), (*lsn, AtomState::Present { hash: *hash }), "catalog of atom {id}");
                }
                let prev = prev_base.as_ref().map(|(_, c)| c);
                for e in &ctl.catalog.atoms {
                    if let AtomState::Present { hash } = e.state {
                        if !atoms_in_manifest.contains_key(&e.atom_id) {
                            let p = prev.and_then(|c| c.get(e.atom_id)).unwrap_or_else(|| {
                                panic!(
                                    "atom {} of {} neither copied nor in the previous catalog",
                                    e.atom_id,
                                    entry.name()
                                )
                            });
                            assert_eq!(
                                (p.lsn, p.state),
                                (e.lsn, AtomState::Present { hash }),
                                "carried atom {}",
                                e.atom_id
                            );
                        }
                    } else {
                        let p =
                            prev.and_then(|c| c.get(e.atom_id)).expect("a dropped atom was in the previous catalog");
                        assert!(matches!(p.state, AtomState::Present { .. }));
                    }
                }
                for p in prev.map(|c| c.atoms.as_slice()).unwrap_or_default() {
                    if matches!(p.state, AtomState::Present { .. }) {
                        assert!(ctl.catalog.get(p.atom_id).is_some(), "atom {} vanished from the catalog", p.atom_id);
                    }
                }
                prev_base = Some((entry.element_id, ctl.catalog.clone()));
            }
            ElementKind::Journal => {
                assert!(ctl.catalog.atoms.is_empty());
                assert!(ctl.manifest.files.iter().all(|f| f.kind == FileKind::Journal));
                let (full_id, r_full) = full.expect("a journal element follows the full");
                let (parent, expected_first) = match prev_journal {
                    Some((id, e)) => (id, e + 1),
                    None => (full_id, r_full),
                };
                assert_eq!(ctl.info.parent, Some(parent), "parent of {}", entry.name());
                assert_eq!(first, expected_first, "{} continues the journal chain", entry.name());
                prev_journal = Some((entry.element_id, last));
            }
        }
    }
    // The engine's check agrees.
    let report = backset_engine::check::check_set(dir, &backset_engine::check::CheckOptions::default()).unwrap();
    let defects: Vec<String> = report.defects.iter().map(ToString::to_string).collect();
    assert!(report.is_ok(), "backset check of {}: {defects:?}", dir.display());
    summary
}

/// Restores `set_dir` to transaction `t` the way the set's semantics say, by the test's own code, into the archive
/// directory `out` (`atoms/`, one journal segment): base = newest completed full/incremental with E <= t; atoms =
/// its catalog's present atoms, each from the newest element up to the base whose manifest lists it with that hash;
/// journal = the records in [R_base, t] of the base's slices and of every journal element (one per txn id).
/// Returns the base's name.
pub fn restore_by_hand(set_dir: &Path, t: u64, out: &Path) -> String {
    let set = BackupSet::open(set_dir).unwrap();
    let controls = controls(&set);
    let base_idx = controls
        .iter()
        .rposition(|c| c.entry.kind != ElementKind::Journal && c.entry.txn_range.last <= t)
        .unwrap_or_else(|| panic!("no full or incremental with E <= {t}"));
    let base = &controls[base_idx];
    let atoms_dir = out.join("atoms");
    std::fs::create_dir_all(&atoms_dir).unwrap();
    for e in &base.catalog.atoms {
        let AtomState::Present { hash } = e.state else { continue };
        let (dir, f) = controls[..=base_idx]
            .iter()
            .rev()
            .filter(|c| c.entry.kind != ElementKind::Journal)
            .find_map(|c| {
                c.manifest
                    .files
                    .iter()
                    .find(|f| f.kind == FileKind::Atom && f.id == e.atom_id && f.hash == hash)
                    .map(|f| (element_dir(&set, c.entry), f))
            })
            .unwrap_or_else(|| panic!("no element holds atom {} with the catalog's hash", e.atom_id));
        let bytes = verified(&dir.join(DATA_DIR).join(data_file_path(f.kind, f.id)), f.size, &f.hash, &f.chunk_hashes);
        std::fs::write(atoms_dir.join(format!("{:016x}", e.atom_id)), bytes).unwrap();
    }
    let r = base.entry.txn_range.first;
    let mut records: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
    let sources = std::iter::once(base).chain(controls.iter().filter(|c| c.entry.kind == ElementKind::Journal));
    for c in sources {
        let dir = element_dir(&set, c.entry).join(DATA_DIR);
        for f in c.manifest.files.iter().filter(|f| f.kind == FileKind::Journal) {
            let bytes = verified(&dir.join(data_file_path(f.kind, f.id)), f.size, &f.hash, &f.chunk_hashes);
            for (txn, ts, payload) in slice_records(&bytes, f.id, f.offset) {
                if (r..=t).contains(&txn) {
                    if let Some(prev) = records.insert(txn, (ts, payload.clone())) {
                        assert_eq!(prev, (ts, payload), "record {txn} differs between elements");
                    }
                }
            }
        }
    }
    let journal_dir = out.join("journal");
    std::fs::create_dir_all(&journal_dir).unwrap();
    if let Some((&first, _)) = records.iter().next() {
        let header = SegmentHeader {
            database_id: set.state().database_id,
            archive_id: set.state().archive_id,
            segment: 1,
            first_txn: first,
        };
        let mut w = SegmentWriter::create(Vec::new(), header).unwrap();
        for (txn, (ts, payload)) in &records {
            w.append(*txn, *ts, payload).unwrap();
        }
        std::fs::write(journal_dir.join(format!("{:016x}", 1)), w.into_inner()).unwrap();
    }
    base.entry.name().to_string()
}

/// One element's control files, as the set's reader reads them (the catalog is read again on demand).
struct Ctl<'a> {
    entry: &'a ElementEntry,
    info: &'a ElementInfo,
    manifest: &'a Manifest,
    catalog: Catalog,
}

/// The control files of every completed element, in state order.
fn controls(set: &BackupSet) -> Vec<Ctl<'_>> {
    let e = set.elements().iter().enumerate();
    e.map(|(i, e)| Ctl { entry: &e.entry, info: &e.info, manifest: &e.manifest, catalog: set.catalog(i).unwrap() })
        .collect()
}

/// `<set>/<element name>`.
fn element_dir(set: &BackupSet, entry: &ElementEntry) -> PathBuf {
    set.dir().join(entry.name().to_string())
}

/// Renames `data/` of every element of a set to `data.away` (as an operator moving data to tape).
pub fn move_data_away(set_dir: &Path) -> Vec<PathBuf> {
    let set = BackupSet::open(set_dir).unwrap();
    let mut moved = Vec::new();
    for e in set.elements() {
        let data = e.data_dir();
        if data.exists() {
            std::fs::rename(&data, data.with_file_name("data.away")).unwrap();
            moved.push(data);
        }
    }
    moved
}

/// Puts back what [`move_data_away`] moved.
pub fn move_data_back(moved: &[PathBuf]) {
    for data in moved {
        std::fs::rename(data.with_file_name("data.away"), data).unwrap();
    }
}

/// The `[first, last]` of an element of a set, by name.
pub fn range_of(set_dir: &Path, name: &str) -> (u64, u64) {
    let set = BackupSet::open(set_dir).unwrap();
    let e = set.state().elements.iter().find(|e| e.name().to_string() == name).unwrap_or_else(|| panic!("no {name}"));
    (e.txn_range.first, e.txn_range.last)
}
