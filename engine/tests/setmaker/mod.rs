//! A small backup-set maker for the restore and check tests: full, incremental and journal hot copies of one
//! archive of the reference store, by the Archive contract and the backup-set semantics, copied with the real
//! copier and written with backset-format's writers in FORMAT.md's order (state first, the element in `tmp/`,
//! data then control files, rename into place, then the state with the element completed).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backset_copier::{Copier, CopyError, CopyRequest, FileReport, JobControl, Options};
use backset_engine::archive::{Archive, AtomFile, JournalSlice};
use backset_engine::store::now_micros;
use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::fsio::{sync_dir, write_metadata};
use backset_format::layout::{atom_file_name, segment_file_name, CATALOG_FILE, ELEMENT_INFO_FILE, MANIFEST_FILE};
use backset_format::{
    AtomHeader, AtomState, Catalog, CatalogEntry, ElementEntry, ElementInfo, ElementKind, ElementStatus, FileEntry,
    FileKind, Manifest, Participant, State, StorageGroup, TxnRange,
};
use uuid::Uuid;

/// Makes one backup set of one archive.
pub struct SetMaker {
    /// The set's directory.
    pub dir: PathBuf,
    archive: Arc<dyn Archive>,
    state: State,
    copier: Copier,
    /// The newest full/incremental catalog, by atom id.
    catalog: BTreeMap<u64, CatalogEntry>,
}

fn report_entry(kind: FileKind, id: u64, offset: u64, r: &FileReport) -> FileEntry {
    FileEntry { kind, id, offset, size: r.bytes, hash: r.hash, chunk_hashes: r.chunk_hashes.clone() }
}

impl SetMaker {
    /// Initialises the set in `dir` and makes its full element.
    pub fn full(dir: &Path, archive: Arc<dyn Archive>) -> Self {
        let id = archive.identity();
        let state = State {
            set_id: Uuid::new_v4(),
            database_name: id.database_name.clone(),
            database_id: id.database_id,
            archive_id: id.archive_id,
            storage_groups: id.storage_groups.iter().map(|(i, n)| StorageGroup { id: *i, name: n.clone() }).collect(),
            elements: Vec::new(),
        };
        fs::create_dir_all(dir).unwrap();
        let copier = Copier::new(Options { pool_bytes: 8 << 20, ..Options::default() }).unwrap();
        let mut maker = Self { dir: dir.to_path_buf(), archive, state, copier, catalog: BTreeMap::new() };
        maker.base(ElementKind::Full);
        maker
    }

    /// The state as last written.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The completed elements, in order.
    pub fn elements(&self) -> Vec<ElementEntry> {
        self.state.elements.iter().filter(|e| e.status == ElementStatus::Completed).cloned().collect()
    }

    /// Makes the next incremental element.
    pub fn incremental(&mut self) -> ElementEntry {
        self.base(ElementKind::Incremental)
    }

    fn next_sequence(&self, kind: ElementKind) -> u32 {
        self.state.elements.iter().filter(|e| e.kind == kind).map(|e| e.sequence).max().unwrap_or(0) + 1
    }

    /// Begins an element: the state lists it in progress with `[first, first]`. Returns its index and tmp dir.
    fn begin(&mut self, kind: ElementKind, sequence: u32, first: u64) -> (usize, Uuid, u64, PathBuf) {
        let element_id = Uuid::new_v4();
        let begin = now_micros();
        self.state.elements.push(ElementEntry {
            kind,
            sequence,
            element_id,
            status: ElementStatus::InProgress,
            txn_range: TxnRange { first, last: first },
            begin_micros: begin,
            end_micros: 0,
        });
        write_metadata(&self.dir, "state", &self.state).unwrap();
        let tmp = self.dir.join("tmp").join(element_id.simple().to_string());
        fs::create_dir_all(tmp.join("data/atoms")).unwrap();
        fs::create_dir_all(tmp.join("data/journal")).unwrap();
        fs::create_dir_all(tmp.join("control")).unwrap();
        (self.state.elements.len() - 1, element_id, begin, tmp)
    }

    /// Copies atom files into `tmp/data/atoms`, leaving out those dropped since the listing. Returns, per atom
    /// copied, its manifest entry and the LSN of the copied file's header.
    fn copy_atoms(&mut self, tmp: &Path, mut atoms: Vec<AtomFile>) -> Vec<(FileEntry, u64)> {
        loop {
            let reqs: Vec<CopyRequest> = atoms
                .iter()
                .map(|a| CopyRequest::file(&a.path, tmp.join("data/atoms").join(atom_file_name(a.atom_id))))
                .collect();
            match self.copier.copy(&reqs, &JobControl::new(), None) {
                Ok(job) => {
                    return job
                        .files
                        .iter()
                        .map(|r| {
                            let a = &atoms[r.request];
                            let bytes = fs::read(reqs[r.request].target.as_ref().unwrap()).unwrap();
                            let h = AtomHeader::parse(&bytes[..ATOM_HEADER_BYTES]).unwrap();
                            assert_eq!(h.atom_id, a.atom_id);
                            (report_entry(FileKind::Atom, a.atom_id, 0, r), h.lsn)
                        })
                        .collect()
                }
                Err(CopyError::Io { path, source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    atoms.retain(|a| a.path != path);
                }
                Err(e) => panic!("atom copy failed: {e}"),
            }
        }
    }

    fn copy_slices(&mut self, tmp: &Path, slices: &[JournalSlice]) -> Vec<FileEntry> {
        let reqs: Vec<CopyRequest> = slices
            .iter()
            .map(|s| {
                CopyRequest::range(
                    &s.path,
                    tmp.join("data/journal").join(segment_file_name(s.segment)),
                    s.offset,
                    s.len,
                )
            })
            .collect();
        let job = self.copier.copy(&reqs, &JobControl::new(), None).unwrap();
        job.files
            .iter()
            .map(|r| report_entry(FileKind::Journal, slices[r.request].segment, slices[r.request].offset, r))
            .collect()
    }

    /// Writes the control files, moves the element into place and completes it in the state.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        index: usize,
        element_id: Uuid,
        begin: u64,
        tmp: &Path,
        mut files: Vec<FileEntry>,
        catalog: Vec<CatalogEntry>,
        range: TxnRange,
        parent: Option<Uuid>,
    ) -> ElementEntry {
        files.sort_by_key(|f| (f.kind, f.id));
        let control = tmp.join("control");
        let (kind, sequence) = (self.state.elements[index].kind, self.state.elements[index].sequence);
        let end = now_micros();
        write_metadata(&control, MANIFEST_FILE, &Manifest { element_id, files }).unwrap();
        write_metadata(&control, CATALOG_FILE, &Catalog { element_id, atoms: catalog }).unwrap();
        let info = ElementInfo {
            element_id,
            kind,
            sequence,
            hot_copy_id: Uuid::new_v4(),
            coordinator_start_id: 1,
            participants: vec![Participant { start_id: 1, archive_id: self.state.archive_id }],
            txn_range: range,
            begin_micros: begin,
            end_micros: end,
            parent,
        };
        write_metadata(&control, ELEMENT_INFO_FILE, &info).unwrap();
        for d in ["data/atoms", "data/journal", "data", "control", ""] {
            sync_dir(&tmp.join(d)).unwrap();
        }
        let name = self.state.elements[index].name().to_string();
        fs::rename(tmp, self.dir.join(&name)).unwrap();
        sync_dir(&self.dir).unwrap();
        let e = &mut self.state.elements[index];
        e.status = ElementStatus::Completed;
        e.txn_range = range;
        e.end_micros = end;
        let entry = e.clone();
        write_metadata(&self.dir, "state", &self.state).unwrap();
        entry
    }

    /// A full or incremental element.
    fn base(&mut self, kind: ElementKind) -> ElementEntry {
        let archive = Arc::clone(&self.archive);
        let pin = archive.pin_journal().unwrap();
        let r = pin.recovery_start().min(archive.durable_txn()).max(1);
        let (sequence, parent) = match kind {
            ElementKind::Full => (0, None),
            _ => (
                self.next_sequence(kind),
                self.state
                    .elements
                    .iter()
                    .rev()
                    .find(|e| e.kind != ElementKind::Journal && e.status == ElementStatus::Completed)
                    .map(|e| e.element_id),
            ),
        };
        let (index, element_id, begin, tmp) = self.begin(kind, sequence, r);
        let listing = archive.atoms().unwrap();
        let to_copy: Vec<AtomFile> = listing
            .iter()
            .filter(|a| match self.catalog.get(&a.atom_id) {
                Some(CatalogEntry { lsn, state: AtomState::Present { .. }, .. }) => *lsn != a.lsn,
                _ => true,
            })
            .cloned()
            .collect();
        let copied = self.copy_atoms(&tmp, to_copy.clone());
        let e = archive.durable_txn().max(r);
        archive.wait_durable(e, Duration::from_secs(10)).unwrap();
        let slices = archive.journal_slices(r, e).unwrap();
        let mut files: Vec<FileEntry> = copied.iter().map(|(f, _)| f.clone()).collect();
        files.extend(self.copy_slices(&tmp, &slices));
        drop(pin);

        // The cumulative catalog: copied atoms, unchanged atoms carried over, and drops.
        let mut catalog: BTreeMap<u64, CatalogEntry> = BTreeMap::new();
        for (f, lsn) in &copied {
            catalog.insert(f.id, CatalogEntry { atom_id: f.id, lsn: *lsn, state: AtomState::Present { hash: f.hash } });
        }
        let copied_ids: Vec<u64> = copied.iter().map(|(f, _)| f.id).collect();
        let gone: Vec<u64> = to_copy.iter().map(|a| a.atom_id).filter(|id| !copied_ids.contains(id)).collect();
        for a in &listing {
            if catalog.contains_key(&a.atom_id) || gone.contains(&a.atom_id) {
                continue;
            }
            if let Some(prev) = self.catalog.get(&a.atom_id) {
                catalog.insert(a.atom_id, *prev);
            }
        }
        if kind != ElementKind::Full {
            for (id, prev) in &self.catalog {
                if matches!(prev.state, AtomState::Present { .. }) && !catalog.contains_key(id) {
                    catalog.insert(*id, CatalogEntry { atom_id: *id, lsn: prev.lsn, state: AtomState::Dropped });
                }
            }
        }
        let entries: Vec<CatalogEntry> = catalog.values().copied().collect();
        let entry = self.finish(index, element_id, begin, &tmp, files, entries, TxnRange { first: r, last: e }, parent);
        self.catalog = catalog;
        entry
    }

    /// Makes the next journal element: the records since the previous one (or since the full's R).
    pub fn journal(&mut self) -> ElementEntry {
        let archive = Arc::clone(&self.archive);
        let prev = self.state.elements.iter().rev().find(|e| e.kind == ElementKind::Journal).cloned();
        let full = self.state.elements[0].clone();
        let (first, parent) = match &prev {
            Some(p) => (p.txn_range.last + 1, p.element_id),
            None => (full.txn_range.first, full.element_id),
        };
        archive.wait_durable(first, Duration::from_secs(30)).unwrap();
        let sequence = self.next_sequence(ElementKind::Journal);
        let (index, element_id, begin, tmp) = self.begin(ElementKind::Journal, sequence, first);
        let e = archive.durable_txn();
        let slices = archive.journal_slices(first, e).unwrap();
        let files = self.copy_slices(&tmp, &slices);
        let entry =
            self.finish(index, element_id, begin, &tmp, files, Vec::new(), TxnRange { first, last: e }, Some(parent));
        archive.journal_copied_up_to(e);
        entry
    }
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A backup set made under load, shared by the tests of one test binary: full, 1.jnl, 1.inc, 2.jnl, 2.inc, 3.jnl,
/// each made while the workload commits at full speed; with the workload's record of every acknowledged
/// transaction (the oracle).
pub struct Template {
    /// Holds the set (`set/`); kept for the whole test run.
    pub dir: tempfile::TempDir,
    /// Every acknowledged transaction, in id order.
    pub acked: Vec<backset_engine::workload::AckedTxn>,
    /// The completed elements, in order.
    pub elements: Vec<ElementEntry>,
    /// The database id.
    pub database_id: Uuid,
}

impl Template {
    /// The set's directory.
    pub fn set(&self) -> PathBuf {
        self.dir.path().join("set")
    }

    /// A private copy of the set: `(its temp dir, the set's path)`.
    pub fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let d = super::common::tempdir();
        let set = d.path().join("set");
        copy_tree(&self.set(), &set);
        (d, set)
    }

    /// The element named `name` (`full`, `1.inc`, ...).
    pub fn element(&self, name: &str) -> &ElementEntry {
        self.elements.iter().find(|e| e.name().to_string() == name).unwrap_or_else(|| panic!("no element {name}"))
    }

    /// The end of the restorable range: the highest end point of any element.
    pub fn latest(&self) -> u64 {
        self.elements.iter().map(|e| e.txn_range.last).max().unwrap()
    }
}

/// The shared template (made on first use).
pub fn template() -> &'static Template {
    static T: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    T.get_or_init(make_template)
}

fn make_template() -> Template {
    use backset_engine::store::Database;
    use backset_engine::workload::{Workload, WorkloadConfig};
    let db_dir = super::common::tempdir();
    let mut cfg = super::common::config("restore");
    cfg.checkpoint_interval = Some(Duration::from_millis(3));
    cfg.journal_hot_copy = true;
    let db = Arc::new(Database::open(db_dir.path(), cfg).unwrap());
    let database_id = db.database_id();
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 7, threads: 3, key_space: 300, delete_fraction: 0.3, ..WorkloadConfig::default() },
    );
    let more = |n: u64| {
        let seen = wl.acked_count();
        super::common::wait_until("commits", Duration::from_secs(60), || wl.acked_count() >= seen + n);
    };
    more(300);
    let dir = super::common::tempdir();
    let mut maker = SetMaker::full(&dir.path().join("set"), db.archive(0).unwrap());
    more(200);
    maker.journal();
    more(200);
    maker.incremental();
    more(200);
    maker.journal();
    more(200);
    maker.incremental();
    more(200);
    maker.journal();
    more(50); // transactions after the last element, which no restore may show
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let elements = maker.elements();
    assert!(report.acked.last().unwrap().txn_id > elements.iter().map(|e| e.txn_range.last).max().unwrap());
    db.close().unwrap();
    Template { dir, acked: report.acked, elements, database_id }
}
