//! Reading a backup set: the `state`, then every completed element's `control/element`, `control/manifest` and
//! `control/catalog`, in FORMAT.md's reading order, and the element chain. One set of rules, two modes: strict
//! ([`BackupSet::open`], restore and hot copies) and collecting ([`BackupSet::load`], check). What a restore can
//! reach and where its atoms and records come from is in [`super::plan`].
//!
//! Names inside the set are derived from ids (`backset_format::layout`), never read from a file; element
//! directories are examined with `lstat` and files opened without following a link
//! (`backset_format::fsio::open_regular`), so a symbolic link is refused rather than followed.
//!
//! Memory: a [`BackupSet`] holds the state, and the element info and manifest of every completed element (at most
//! the decoded size of those control files). Catalogs are validated when the set is read, then dropped, and read
//! again one at a time when needed ([`BackupSet::catalog`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backset_format::dirfd::EntryKind;
use backset_format::layout::{
    data_file_path, CATALOG_FILE, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, MANIFEST_FILE, STATE_FILE,
};
use backset_format::limits::MAX_METADATA_BODY_BYTES;
use backset_format::meta::{self, Metadata, METADATA_HEADER_BYTES};
use backset_format::{
    Catalog, ElementEntry, ElementInfo, ElementKind, ElementName, ElementStatus, FileEntry, FileKind, Manifest, State,
    TxnRange,
};
use backset_format::{MetadataError, ReadError};
use std::sync::Arc;
use uuid::Uuid;

use super::storage::{LocalDir, SetStorage};
use super::SetError;

/// Reads the `state` of the set in `dir` (and nothing else): what `restore --report-backups` lists and what a hot
/// copy checks before it reads further. [`SetError::NotASet`] when `dir` is no backup set.
pub fn read_state(dir: &Path) -> Result<State, SetError> {
    read_state_in(&*located(dir)?)
}

/// The storage of the set at `dir` (a local directory, or an `s3://bucket/prefix`), refused with
/// [`SetError::NotASet`] when nothing there is a backup set.
fn located(dir: &Path) -> Result<Arc<dyn SetStorage>, SetError> {
    let Some(url) = super::object::s3_location(dir) else {
        is_a_set(dir)?;
        return Ok(Arc::new(LocalDir::new(dir)));
    };
    let store = super::object::object_store(&url?)?;
    // The bucket, the credentials and the store itself first, so that their errors say what they are.
    super::object::probe(&store)?;
    let state =
        store.derived_state().map_err(|source| SetError::Metadata { set: dir.to_path_buf(), element: None, source })?;
    if state.is_none() {
        return Err(SetError::NotASet {
            path: dir.to_path_buf(),
            reason: "no element is published under this prefix (it is empty, or holds only what hot copies that did                      not complete left); check the URL"
                .into(),
        });
    }
    Ok(store)
}

/// [`SetError::NotASet`] when the local directory `dir` is no backup set (saying what it is instead).
fn is_a_set(dir: &Path) -> Result<(), SetError> {
    let what = crate::found::found(dir);
    if what != crate::found::Found::BackupSet {
        return Err(SetError::NotASet { reason: what.not_a_set(dir), path: dir.to_path_buf() });
    }
    Ok(())
}

/// Reads the `state` of the set in `storage`.
pub(crate) fn read_state_in(storage: &dyn SetStorage) -> Result<State, SetError> {
    read_meta(storage, Path::new(STATE_FILE)).map_err(|source| SetError::Metadata {
        set: storage.show(Path::new("")),
        element: None,
        source,
    })
}

/// Reads and decodes the metadata file `rel` of the set: at most a header plus `MAX_METADATA_BODY_BYTES`, refused
/// before it is read when longer (as `backset_format::fsio::read_metadata` reads a local file).
pub(super) fn read_meta<T: Metadata>(storage: &dyn SetStorage, rel: &Path) -> Result<T, ReadError> {
    let max = METADATA_HEADER_BYTES as u64 + MAX_METADATA_BODY_BYTES;
    let bytes = storage.read(rel, max).map_err(|e| match e {
        ReadError::TooLarge { path, len, .. } => ReadError::Metadata {
            path,
            source: MetadataError::BodyTooLarge {
                declared: len - METADATA_HEADER_BYTES as u64,
                max: MAX_METADATA_BODY_BYTES,
            },
        },
        other => other,
    })?;
    meta::decode(&bytes).map_err(|source| ReadError::Metadata { path: storage.show(rel), source })
}

/// Whether what stands at an element directory or its `control/`, of the `kind` examined without following a link,
/// is a directory: `Some(what)` names what stands there instead (`a symbolic link`, `not a directory`); `None` for a directory or
/// nothing.
fn not_a_dir(kind: Option<EntryKind>) -> Option<&'static str> {
    match kind {
        None | Some(EntryKind::Dir(_)) => None,
        Some(EntryKind::Symlink) => Some("a symbolic link"),
        Some(EntryKind::File | EntryKind::Other) => Some("not a directory"),
    }
}

/// One completed element, with its control files (the catalog is read on demand: [`BackupSet::catalog`]).
#[derive(Debug, Clone)]
pub struct Element {
    /// Its entry in the state.
    pub entry: ElementEntry,
    /// Its `control/element`.
    pub info: ElementInfo,
    /// Its `control/manifest`.
    pub manifest: Manifest,
    /// Its directory.
    pub dir: PathBuf,
}

impl Element {
    /// Directory name (`full`, `2.inc`, `1.jnl`).
    pub fn name(&self) -> ElementName {
        self.entry.name()
    }

    /// Type.
    pub fn kind(&self) -> ElementKind {
        self.entry.kind
    }

    /// Element id.
    pub fn id(&self) -> Uuid {
        self.entry.element_id
    }

    /// Transaction range [R, E] (for a journal element, the first and last transaction it covers).
    pub fn txn_range(&self) -> TxnRange {
        self.entry.txn_range
    }

    /// Whether a restore can start from it: a full or an incremental.
    pub fn is_base(&self) -> bool {
        self.entry.kind != ElementKind::Journal
    }

    /// Its `data/` directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    /// Its `control/` directory.
    pub fn control_dir(&self) -> PathBuf {
        self.dir.join(CONTROL_DIR)
    }

    /// Path of a data file the manifest lists (derived from kind and id, never read from a file).
    pub fn data_file(&self, f: &FileEntry) -> PathBuf {
        self.data_dir().join(data_file_path(f.kind, f.id))
    }

    /// Its `data/`, relative to the set (for [`BackupSet::storage`]).
    pub fn data_rel(&self) -> PathBuf {
        Path::new(&self.name().to_string()).join(DATA_DIR)
    }

    /// A data file the manifest lists, relative to the set (for [`BackupSet::storage`]).
    pub fn data_file_rel(&self, f: &FileEntry) -> PathBuf {
        self.data_rel().join(data_file_path(f.kind, f.id))
    }

    /// The manifest's journal slices, in segment order.
    pub fn journal_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.manifest.files.iter().filter(|f| f.kind == FileKind::Journal)
    }

    /// The manifest's atom files, by atom id.
    pub fn atom_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.manifest.files.iter().filter(|f| f.kind == FileKind::Atom)
    }
}

/// A completed element that [`BackupSet::load`] left out of [`BackupSet::elements`] because its control files could
/// not all be read or disagree with the state, though its directory is there: check verifies its data by what the
/// files carry themselves (and against its manifest when that one reads).
#[derive(Debug, Clone)]
pub struct UnreadElement {
    /// Its entry in the state.
    pub entry: ElementEntry,
    /// Its directory.
    pub dir: PathBuf,
    /// Its `control/manifest`, when that one could be read.
    pub manifest: Option<Manifest>,
}

/// A backup set as read from disk: its state and its completed elements. See the [module docs](self).
#[derive(Debug)]
pub struct BackupSet {
    storage: Arc<dyn SetStorage>,
    pub(super) dir: PathBuf,
    pub(super) state: State,
    pub(super) elements: Vec<Element>,
    unread: Vec<UnreadElement>,
    pub(super) problems: Vec<SetError>,
}

impl BackupSet {
    /// Reads the set and refuses it at the first problem: a damaged or missing control file, a control file that
    /// disagrees with the state, a broken chain. What restore uses.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SetError> {
        Self::open_in(located(dir.as_ref())?)
    }

    /// [`open`](Self::open) for the set in `storage`.
    pub fn open_in(storage: Arc<dyn SetStorage>) -> Result<Self, SetError> {
        let mut set = Self::load_in(storage)?;
        if set.problems.is_empty() {
            Ok(set)
        } else {
            Err(set.problems.remove(0))
        }
    }

    /// Reads the set, collecting every problem instead of stopping at the first ([`problems`](Self::problems));
    /// elements whose control files cannot be read are left out of [`elements`](Self::elements). Fails only when
    /// the state itself cannot be read. What check uses.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, SetError> {
        Self::load_in(located(dir.as_ref())?)
    }

    /// [`load`](Self::load) for the set in `storage`.
    pub fn load_in(storage: Arc<dyn SetStorage>) -> Result<Self, SetError> {
        let state = read_state_in(&*storage)?;
        let dir = storage.show(Path::new(""));
        let mut set = Self { storage, dir, state, elements: Vec::new(), unread: Vec::new(), problems: Vec::new() };
        let entries: Vec<ElementEntry> =
            set.state.elements.iter().filter(|e| e.status == ElementStatus::Completed).cloned().collect();
        for entry in entries {
            match set.load_element(&entry) {
                Ok(element) => set.elements.push(element),
                Err(e) => set.problems.extend(e),
            }
        }
        set.check_chain();
        Ok(set)
    }

    /// Reads one completed element's control files. Every control file that cannot be read is a problem of its own
    /// (a damaged manifest does not hide a damaged catalog); an element left out with its directory there is kept
    /// in [`unread`](Self::unread), with its manifest when that one reads.
    fn load_element(&mut self, entry: &ElementEntry) -> Result<Element, Vec<SetError>> {
        let name = entry.name();
        let rel = PathBuf::from(name.to_string());
        let dir = self.storage.copier_path(&rel);
        // One examination of the element's directory (on object storage each is a request): missing, or not one.
        let kind = match self.storage.kind(&rel) {
            Ok(None) => return Err(vec![SetError::ElementMissing { set: self.dir.clone(), element: name, path: dir }]),
            Err(source) => return Err(vec![SetError::Io { op: "stat", path: dir, source }]),
            Ok(kind) => kind,
        };
        if let Some(what) = not_a_dir(kind) {
            return Err(vec![SetError::Link { path: dir, element: Some(name), what }]);
        }
        let unread = |manifest| UnreadElement { entry: entry.clone(), dir: dir.clone(), manifest };
        let control = dir.join(CONTROL_DIR);
        let control_rel = rel.join(CONTROL_DIR);
        // A metadata read refuses a link as the file itself; a link in place of control/ must be refused too, or it
        // would be followed out of the set.
        match self.storage.kind(&control_rel).map(not_a_dir) {
            Err(source) => {
                self.unread.push(unread(None));
                return Err(vec![SetError::Io { op: "stat", path: control, source }]);
            }
            Ok(Some(what)) => {
                self.unread.push(unread(None));
                return Err(vec![SetError::Link { path: control, element: Some(name), what }]);
            }
            Ok(None) => {}
        }
        let set = self.dir.clone();
        let meta_err = |source| SetError::Metadata { set: set.clone(), element: Some(name), source };
        let storage = &*self.storage;
        let info = read_meta::<ElementInfo>(storage, &control_rel.join(ELEMENT_INFO_FILE)).map_err(meta_err);
        let manifest = read_meta::<Manifest>(storage, &control_rel.join(MANIFEST_FILE)).map_err(meta_err);
        let catalog = read_meta::<Catalog>(storage, &control_rel.join(CATALOG_FILE)).map_err(meta_err);
        let (info, manifest, catalog) = match (info, manifest, catalog) {
            (Ok(info), Ok(manifest), Ok(catalog)) => (info, manifest, catalog),
            (info, manifest, catalog) => {
                let mut problems: Vec<SetError> = info.err().into_iter().collect();
                let manifest = manifest.map_err(|e| problems.push(e)).ok();
                problems.extend(catalog.err());
                self.unread.push(unread(manifest));
                return Err(problems);
            }
        };
        match self.check_element(entry, &control, &info, &manifest, &catalog) {
            Ok(()) => Ok(Element { entry: entry.clone(), info, manifest, dir }),
            Err(e) => {
                self.unread.push(unread(Some(manifest)));
                Err(vec![e])
            }
        }
    }

    /// Whether an element's control files agree with the state and with each other.
    fn check_element(
        &self,
        entry: &ElementEntry,
        control: &Path,
        info: &ElementInfo,
        manifest: &Manifest,
        catalog: &Catalog,
    ) -> Result<(), SetError> {
        let name = entry.name();
        let inconsistent = |file: &str, reason: String| SetError::Inconsistent {
            set: self.dir.clone(),
            element: name,
            file: control.join(file),
            reason,
        };
        let mut disagree = Vec::new();
        if info.element_id != entry.element_id {
            disagree.push(format!("element id {} (the state says {})", info.element_id, entry.element_id));
        }
        if info.kind != entry.kind {
            disagree.push(format!("type {} (the state says {})", info.kind.name(), entry.kind.name()));
        }
        if info.sequence != entry.sequence {
            disagree.push(format!("sequence {} (the state says {})", info.sequence, entry.sequence));
        }
        if info.txn_range != entry.txn_range {
            disagree.push(format!(
                "transaction range [{}, {}] (the state says [{}, {}])",
                info.txn_range.first, info.txn_range.last, entry.txn_range.first, entry.txn_range.last
            ));
        }
        if !info.participants.iter().any(|p| p.archive_id == self.state.archive_id) {
            disagree.push(format!(
                "participants {:?} do not include archive {}, whose set this is",
                info.participants.iter().map(|p| p.archive_id).collect::<Vec<_>>(),
                self.state.archive_id
            ));
        }
        if !disagree.is_empty() {
            return Err(inconsistent(ELEMENT_INFO_FILE, disagree.join(", ")));
        }
        if manifest.element_id != entry.element_id {
            return Err(inconsistent(
                MANIFEST_FILE,
                format!("describes element {}, not {}", manifest.element_id, entry.element_id),
            ));
        }
        if catalog.element_id != entry.element_id {
            return Err(inconsistent(
                CATALOG_FILE,
                format!("belongs to element {}, not {}", catalog.element_id, entry.element_id),
            ));
        }
        if entry.kind == ElementKind::Journal {
            if let Some(f) = manifest.files.iter().find(|f| f.kind == FileKind::Atom) {
                return Err(inconsistent(
                    MANIFEST_FILE,
                    format!("lists atom file {:#x}, but a journal element holds journal slices only", f.id),
                ));
            }
            if !catalog.atoms.is_empty() {
                return Err(inconsistent(
                    CATALOG_FILE,
                    format!("lists {} atoms, but a journal element's catalog is empty", catalog.atoms.len()),
                ));
            }
        } else if let Some(c) = catalog.atoms.iter().find(|c| c.lsn > entry.txn_range.last) {
            return Err(inconsistent(
                CATALOG_FILE,
                format!(
                    "atom {:#x} has LSN {}, beyond the element's end point {}",
                    c.atom_id, c.lsn, entry.txn_range.last
                ),
            ));
        }
        Ok(())
    }

    /// The chain rules of the semantics: one full first, each incremental's parent the previous full or
    /// incremental and its end point not before it, each journal element's parent the previous journal element
    /// (or the full), the journal chain contiguous from the full's recovery start.
    fn check_chain(&mut self) {
        let set = self.dir.clone();
        let chain = |element: ElementName, reason: String| SetError::Chain { set: set.clone(), element, reason };
        let mut problems = Vec::new();
        // The full as the state lists it (its id and R are known while it is still in progress).
        let full = self.state.elements.first().filter(|e| e.kind == ElementKind::Full);
        let completed: Vec<&ElementEntry> =
            self.state.elements.iter().filter(|e| e.status == ElementStatus::Completed).collect();
        let parents: HashMap<Uuid, Option<Uuid>> = self.elements.iter().map(|e| (e.id(), e.info.parent)).collect();
        let mut prev_base: Option<&ElementEntry> = None;
        let mut prev_journal: Option<&ElementEntry> = None;
        for e in completed {
            let name = e.name();
            let parent = parents.get(&e.element_id).copied();
            match e.kind {
                ElementKind::Full => prev_base = Some(e),
                ElementKind::Incremental => {
                    match prev_base {
                        None => problems.push(chain(name, "an incremental needs a completed full before it".into())),
                        Some(p) => {
                            if let Some(parent) = parent.filter(|&got| got != Some(p.element_id)) {
                                problems.push(chain(
                                    name,
                                    format!("its parent is {}, expected {} ({})", show(parent), p.element_id, p.name()),
                                ));
                            }
                            if e.txn_range.last < p.txn_range.last {
                                problems.push(chain(
                                    name,
                                    format!(
                                        "its end point {} is before the end point {} of {}",
                                        e.txn_range.last,
                                        p.txn_range.last,
                                        p.name()
                                    ),
                                ));
                            }
                        }
                    }
                    prev_base = Some(e);
                }
                ElementKind::Journal => {
                    let (expected_parent, expected_first) = match (prev_journal, full) {
                        (Some(p), _) => (Some(p.element_id), p.txn_range.last.checked_add(1)),
                        (None, Some(f)) => (Some(f.element_id), Some(f.txn_range.first)),
                        (None, None) => (None, None),
                    };
                    match expected_parent {
                        None => problems.push(chain(name, "a journal element needs a full in the set".into())),
                        Some(want) => {
                            if let Some(parent) = parent.filter(|&got| got != Some(want)) {
                                problems.push(chain(name, format!("its parent is {}, expected {want}", show(parent))));
                            }
                        }
                    }
                    if let Some(first) = expected_first.filter(|&f| f != e.txn_range.first) {
                        let after = prev_journal.map_or_else(
                            || "the full's recovery start".to_string(),
                            |p| format!("the end of {} plus one", p.name()),
                        );
                        problems.push(chain(
                            name,
                            format!(
                                "the journal chain is not contiguous: it starts at transaction {}, expected {first} \
                                 ({after})",
                                e.txn_range.first
                            ),
                        ));
                    }
                    prev_journal = Some(e);
                }
            }
        }
        self.problems.extend(problems);
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the set's bytes are: every read of its data files goes through it.
    pub fn storage(&self) -> &dyn SetStorage {
        &*self.storage
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The completed elements whose control files were read, in state order.
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// Completed elements left out of [`elements`](Self::elements) though their directory is there (see
    /// [`UnreadElement`]); always empty after [`open`](Self::open), which refuses the set then.
    pub fn unread(&self) -> &[UnreadElement] {
        &self.unread
    }

    /// Problems [`load`](Self::load) found (always empty after [`open`](Self::open)).
    pub fn problems(&self) -> &[SetError] {
        &self.problems
    }

    /// Takes the problems out, leaving none.
    pub fn take_problems(&mut self) -> Vec<SetError> {
        std::mem::take(&mut self.problems)
    }

    /// Index of the completed element with id `id`.
    pub fn element_by_id(&self, id: Uuid) -> Option<usize> {
        self.elements.iter().position(|e| e.id() == id)
    }

    /// Index of the completed full element.
    pub fn full(&self) -> Option<usize> {
        self.elements.iter().position(|e| e.kind() == ElementKind::Full)
    }

    /// Index of the completed element called `name`.
    pub fn position(&self, name: ElementName) -> Option<usize> {
        self.elements.iter().position(|e| e.name() == name)
    }

    /// The state's full entry, completed or still in progress (its id and R are known from the start): what a
    /// journal hot copy continues from.
    pub fn full_entry(&self) -> Option<&ElementEntry> {
        self.state.elements.iter().find(|e| e.kind == ElementKind::Full)
    }

    /// Index of the newest completed full or incremental: what an incremental builds on.
    pub fn newest_base(&self) -> Option<usize> {
        (0..self.elements.len())
            .filter(|&i| self.elements[i].is_base())
            .max_by_key(|&i| (self.elements[i].kind() == ElementKind::Incremental, self.elements[i].entry.sequence))
    }

    /// Index of the newest completed journal element.
    pub fn newest_journal(&self) -> Option<usize> {
        (0..self.elements.len())
            .filter(|&i| self.elements[i].kind() == ElementKind::Journal)
            .max_by_key(|&i| self.elements[i].entry.sequence)
    }

    /// The first transaction the next journal element starts at: the newest completed journal element's E + 1, or
    /// the full's R when there is none (the full may still be in progress). `None` without a full.
    pub fn next_journal_start(&self) -> Option<u64> {
        match self.newest_journal() {
            Some(j) => Some(self.elements[j].txn_range().last + 1),
            None => self.full_entry().map(|f| f.txn_range.first),
        }
    }

    /// Reads element `index`'s catalog again from `control/catalog` (it is not kept in memory).
    pub fn catalog(&self, index: usize) -> Result<Catalog, SetError> {
        let e = &self.elements[index];
        let path = e.control_dir().join(CATALOG_FILE);
        let rel = Path::new(&e.name().to_string()).join(CONTROL_DIR).join(CATALOG_FILE);
        let catalog: Catalog = read_meta(&*self.storage, &rel).map_err(|source| SetError::Metadata {
            set: self.dir.clone(),
            element: Some(e.name()),
            source,
        })?;
        if catalog.element_id != e.id() {
            return Err(SetError::Inconsistent {
                set: self.dir.clone(),
                element: e.name(),
                file: path,
                reason: format!("belongs to element {}, not {}", catalog.element_id, e.id()),
            });
        }
        Ok(catalog)
    }
}

fn show(id: Option<Uuid>) -> String {
    id.map_or_else(|| "none".to_string(), |u| u.to_string())
}
