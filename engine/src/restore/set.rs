//! Reading a backup set: the `state`, then every completed element's `control/element`, `control/manifest` and
//! `control/catalog`, in FORMAT.md's reading order; the element chain; the transactions a restore can reach; and,
//! for a restore, which element holds each atom and which elements hold the journal records.
//!
//! Names inside the set are derived from ids (`backset_format::layout`), never read from a file; element
//! directories are examined with `lstat` and files opened without following a link
//! (`backset_format::fsio::open_regular`), so a symbolic link is refused rather than followed.
//!
//! Memory: a [`BackupSet`] holds the state, and the element info and manifest of every completed element (at most
//! the decoded size of those control files). Catalogs are validated when the set is read, then dropped, and read
//! again one at a time when needed ([`BackupSet::catalog`]).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use backset_format::fsio::read_metadata;
use backset_format::layout::{
    data_file_path, CATALOG_FILE, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, MANIFEST_FILE, STATE_FILE,
};
use backset_format::{
    AtomState, Catalog, ElementEntry, ElementInfo, ElementKind, ElementName, ElementStatus, FileEntry, FileKind,
    Manifest, ReadError, State, TxnRange,
};
use uuid::Uuid;

/// Why a backup set (or part of it) cannot be read or trusted. Every variant names the set, and the element and
/// file where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The operating system refused an operation on the set.
    #[error("{op} {path}: {source}; check the backup set's path and permissions")]
    Io {
        /// The operation (`stat`, `read directory`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a backup set directory.
    #[error("{path} is not a backup set: {reason}")]
    NotASet {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A metadata file (the state or a control file) is missing, damaged, or this user may not read it.
    #[error(
        "backup set {set}{}: {source}; {}",
        .element.map(|e| format!(", element {e}")).unwrap_or_default(),
        metadata_advice(source)
    )]
    Metadata {
        /// The set.
        set: PathBuf,
        /// The element whose control file it is, or `None` for the state.
        element: Option<ElementName>,
        /// What is wrong, with the file's path.
        source: ReadError,
    },
    /// The state lists a completed element whose directory is missing.
    #[error(
        "backup set {set}: element {element} is listed as completed in the state, but its directory {path} is \
         missing; put the element back (elements of a set are never deleted one by one)"
    )]
    ElementMissing {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// Its expected directory.
        path: PathBuf,
    },
    /// An element's path is not a directory (a file, or a symbolic link: a set never contains links).
    #[error(
        "backup set {set}: element {element}: {path} is not a directory (a backup set never contains symbolic \
         links); replace it by the element's directory"
    )]
    NotADirectory {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// The path.
        path: PathBuf,
    },
    /// An element's control files disagree with the state or with each other.
    #[error(
        "backup set {set}: element {element}: {}: {reason}; the set's metadata is inconsistent (damaged, or \
         assembled from several sets): restore it from a copy of the set",
        .file.display()
    )]
    Inconsistent {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// The control file at fault.
        file: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The element chain is broken: a wrong parent, a gap in the journal chain, end points going backwards.
    #[error(
        "backup set {set}: element {element}: {reason}; the element chain is broken: restore the set from a copy \
         (run `backset check` for every defect)"
    )]
    Chain {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// What is wrong.
        reason: String,
    },
}

/// What to do about a metadata file that could not be read: restore a damaged one from a copy; for one the operating
/// system would not let this user read, nothing is known to be damaged.
fn metadata_advice(source: &ReadError) -> &'static str {
    if source.is_permission() {
        "this user may not read it (the file itself may be intact): run as a user who can read the whole backup set \
         (its owner, or root)"
    } else {
        "the backup set's metadata is damaged: restore the file from a copy of the set (run `backset check` for \
         every defect)"
    }
}

impl SetError {
    /// The element the error is about, if any.
    pub fn element(&self) -> Option<ElementName> {
        match self {
            Self::Io { .. } | Self::NotASet { .. } => None,
            Self::Metadata { element, .. } => *element,
            Self::ElementMissing { element, .. }
            | Self::NotADirectory { element, .. }
            | Self::Inconsistent { element, .. }
            | Self::Chain { element, .. } => Some(*element),
        }
    }

    /// The file or directory the error is about, if any.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Io { path, .. } | Self::NotASet { path, .. } => Some(path.clone()),
            Self::Metadata { source, .. } => Some(source.path().to_path_buf()),
            Self::ElementMissing { path, .. } | Self::NotADirectory { path, .. } => Some(path.clone()),
            Self::Inconsistent { file, .. } => Some(file.clone()),
            Self::Chain { set, element, .. } => Some(set.join(element.to_string())),
        }
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

/// Where one atom of a restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomSource {
    /// Atom id.
    pub atom_id: u64,
    /// Its LSN as the base's catalog records it.
    pub lsn: u64,
    /// Index (in [`BackupSet::elements`]) of the element whose data holds the file.
    pub element: usize,
    /// The file's manifest entry in that element.
    pub file: FileEntry,
}

/// One step of a journal replay plan: the records with `first <= txn id <= last` come from `element`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPart {
    /// Index (in [`BackupSet::elements`]) of the element whose slices hold the records.
    pub element: usize,
    /// First transaction id taken from it.
    pub first: u64,
    /// Last transaction id taken from it.
    pub last: u64,
}

/// A backup set as read from disk: its state and its completed elements. See the [module docs](self).
#[derive(Debug)]
pub struct BackupSet {
    dir: PathBuf,
    state: State,
    elements: Vec<Element>,
    unread: Vec<UnreadElement>,
    problems: Vec<SetError>,
}

impl BackupSet {
    /// Reads the set and refuses it at the first problem: a damaged or missing control file, a control file that
    /// disagrees with the state, a broken chain. What restore uses.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SetError> {
        let mut set = Self::load(dir)?;
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
        let dir = dir.as_ref().to_path_buf();
        let what = crate::found::found(&dir);
        if what != crate::found::Found::BackupSet {
            return Err(SetError::NotASet { reason: what.not_a_set(&dir), path: dir });
        }
        let state: State = read_metadata(&dir.join(STATE_FILE)).map_err(|source| SetError::Metadata {
            set: dir.clone(),
            element: None,
            source,
        })?;
        let mut set = Self { dir, state, elements: Vec::new(), unread: Vec::new(), problems: Vec::new() };
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
        let dir = self.dir.join(name.to_string());
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(vec![SetError::ElementMissing { set: self.dir.clone(), element: name, path: dir }])
            }
            Err(source) => return Err(vec![SetError::Io { op: "stat", path: dir, source }]),
            Ok(md) if !md.is_dir() => {
                return Err(vec![SetError::NotADirectory { set: self.dir.clone(), element: name, path: dir }])
            }
            Ok(_) => {}
        }
        let unread = |manifest| UnreadElement { entry: entry.clone(), dir: dir.clone(), manifest };
        let control = dir.join(CONTROL_DIR);
        // read_metadata refuses a link as the file itself; a link in place of control/ must be refused too, or it
        // would be followed out of the set.
        if fs::symlink_metadata(&control).is_ok_and(|md| !md.is_dir()) {
            self.unread.push(unread(None));
            return Err(vec![SetError::NotADirectory { set: self.dir.clone(), element: name, path: control }]);
        }
        let set = self.dir.clone();
        let meta_err = |source| SetError::Metadata { set: set.clone(), element: Some(name), source };
        let info = read_metadata::<ElementInfo>(&control.join(ELEMENT_INFO_FILE)).map_err(meta_err);
        let manifest = read_metadata::<Manifest>(&control.join(MANIFEST_FILE)).map_err(meta_err);
        let catalog = read_metadata::<Catalog>(&control.join(CATALOG_FILE)).map_err(meta_err);
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

    /// Reads element `index`'s catalog again from `control/catalog` (it is not kept in memory).
    pub fn catalog(&self, index: usize) -> Result<Catalog, SetError> {
        let e = &self.elements[index];
        let path = e.control_dir().join(CATALOG_FILE);
        let catalog: Catalog = read_metadata(&path).map_err(|source| SetError::Metadata {
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

    /// The transactions a restore can reach, as sorted, disjoint, non-adjacent ranges; empty when the set has no
    /// completed full or [`load`](Self::load) found problems. Normally one range, `[E of the full, max(E of the
    /// newest full or incremental, end of the journal chain)]`; several when, without journal elements, the
    /// incrementals' journals leave gaps.
    pub fn restorable(&self) -> Vec<TxnRange> {
        if !self.problems.is_empty() {
            return Vec::new();
        }
        self.restorable_with(&|_| true, &|_| true)
    }

    /// [`restorable`](Self::restorable) when some data is known to be damaged: `atoms_ok(b)` says whether base
    /// element `b`'s atoms (in whichever elements hold them) are intact, `journal_ok(i)` whether element `i`'s
    /// journal slices are. A restore to T starts from the newest full or incremental with E <= T and takes the
    /// records from the elements [`plan_journal`](Self::plan_journal) picks, damaged or not, so a damaged base
    /// makes its whole window unreachable and a damaged journal source cuts the window where its part begins.
    pub fn restorable_with(
        &self,
        atoms_ok: &dyn Fn(usize) -> bool,
        journal_ok: &dyn Fn(usize) -> bool,
    ) -> Vec<TxnRange> {
        let bases: Vec<usize> = (0..self.elements.len()).filter(|&i| self.elements[i].is_base()).collect();
        let mut out: Vec<TxnRange> = Vec::new();
        for (j, &b) in bases.iter().enumerate() {
            let range = self.elements[b].txn_range();
            let window_end = match bases.get(j + 1) {
                Some(&next) => match self.elements[next].txn_range().last.checked_sub(1) {
                    Some(end) => end,
                    None => continue,
                },
                None => u64::MAX,
            };
            if window_end < range.last || !atoms_ok(b) {
                continue;
            }
            // How far the replay from R reaches before a gap or a damaged source.
            let parts = match self.plan_journal(range.first, window_end, Some(b)) {
                Ok(parts) => parts,
                Err(gap) => match gap.checked_sub(1).map(|end| self.plan_journal(range.first, end, Some(b))) {
                    Some(Ok(parts)) => parts,
                    _ => continue,
                },
            };
            let mut reach = range.first.checked_sub(1);
            for p in &parts {
                if !journal_ok(p.element) {
                    break;
                }
                reach = Some(p.last);
            }
            let Some(last) = reach.filter(|&r| r >= range.last) else { continue };
            let piece = TxnRange { first: range.last, last };
            match out.last_mut() {
                Some(prev) if prev.last.checked_add(1).is_some_and(|n| n >= piece.first) => {
                    prev.last = prev.last.max(piece.last)
                }
                _ => out.push(piece),
            }
        }
        out
    }

    /// Index of the base a restore to `txn` starts from: the newest full or incremental with E <= `txn`.
    pub fn base_for(&self, txn: u64) -> Option<usize> {
        (0..self.elements.len()).rev().find(|&i| self.elements[i].is_base() && self.elements[i].txn_range().last <= txn)
    }

    /// Which elements' journals supply the records with `first <= txn id <= last`: element `prefer` (a restore's
    /// base: for a target at or before its end point the base is then self-contained) for as long as it covers
    /// them, then greedily the element that covers the next transaction and reaches furthest (the earliest such
    /// element on a tie). Fails with the first transaction id no element covers.
    pub fn plan_journal(&self, first: u64, last: u64, prefer: Option<usize>) -> Result<Vec<JournalPart>, u64> {
        let mut parts = Vec::new();
        let mut cur = first;
        while cur <= last {
            let preferred = prefer.filter(|&p| parts.is_empty() && self.elements[p].txn_range().contains(cur));
            let best = match preferred {
                Some(p) => p,
                None => (0..self.elements.len())
                    .filter(|&i| self.elements[i].txn_range().contains(cur))
                    .max_by_key(|&i| (self.elements[i].txn_range().last, std::cmp::Reverse(i)))
                    .ok_or(cur)?,
            };
            let reach = self.elements[best].txn_range().last;
            parts.push(JournalPart { element: best, first: cur, last: reach.min(last) });
            match reach.checked_add(1) {
                Some(next) if reach < last => cur = next,
                _ => break,
            }
        }
        Ok(parts)
    }

    /// The atoms a restore from base element `base` lays down: every atom its catalog lists as present, each taken
    /// from the newest full or incremental at or before `base` whose manifest lists the atom with the catalog's
    /// hash. Fails, naming the atom, when no element holds that file.
    pub fn resolve_atoms(&self, base: usize) -> Result<Vec<AtomSource>, SetError> {
        let catalog = self.catalog(base)?;
        let mut wanted: HashMap<u64, (u64, [u8; 32])> = HashMap::with_capacity(catalog.atoms.len());
        for c in &catalog.atoms {
            if let AtomState::Present { hash } = c.state {
                wanted.insert(c.atom_id, (c.lsn, hash));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for i in (0..=base).rev().filter(|&i| self.elements[i].is_base()) {
            if wanted.is_empty() {
                break;
            }
            for f in self.elements[i].atom_files() {
                if let Some(&(lsn, hash)) = wanted.get(&f.id) {
                    if hash == f.hash {
                        wanted.remove(&f.id);
                        out.push(AtomSource { atom_id: f.id, lsn, element: i, file: f.clone() });
                    }
                }
            }
        }
        if let Some((&atom_id, &(_, hash))) = wanted.iter().min_by_key(|(id, _)| **id) {
            let e = &self.elements[base];
            return Err(SetError::Inconsistent {
                set: self.dir.clone(),
                element: e.name(),
                file: e.control_dir().join(CATALOG_FILE),
                reason: format!(
                    "atom {atom_id:#x} is listed as present with BLAKE3 {}, but no full or incremental element up to \
                     {} holds a file with that hash ({} atoms are missing)",
                    hex(&hash),
                    e.name(),
                    wanted.len()
                ),
            });
        }
        out.sort_by_key(|a| a.atom_id);
        Ok(out)
    }
}

fn show(id: Option<Uuid>) -> String {
    id.map_or_else(|| "none".to_string(), |u| u.to_string())
}

/// Lower-case hex of a hash.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    blake3::Hash::from(*hash).to_hex().to_string()
}

/// Formats ranges as an operator reads them: `range [100, 5000]` or `ranges [1, 5], [9, 12]`.
pub fn describe_ranges(ranges: &[TxnRange]) -> String {
    let list: Vec<String> = ranges.iter().map(|r| format!("[{}, {}]", r.first, r.last)).collect();
    match list.len() {
        0 => "range (none)".to_string(),
        1 => format!("range {}", list[0]),
        _ => format!("ranges {}", list.join(", ")),
    }
}
