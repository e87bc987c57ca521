//! Validate a backup set offline ([`check_set`]), or an archive directory ([`check_archive`]).
//!
//! A check never stops at the first defect: it reports every one it finds, each with its element and file, and
//! the transactions that can still be restored. What [`check_set`] verifies:
//! - the `state` and every completed element's `control/element`, `control/manifest` and `control/catalog` decode
//!   (envelope, hash, limits, format rules) and agree: ids, types, sequence numbers, transaction ranges;
//! - the chain: one full first; each incremental's parent is the previous full or incremental and its end point is
//!   not before it; each journal element's parent is the previous journal element (or the full) and the journal
//!   chain is contiguous from the full's recovery start; every element the state lists as completed is there;
//! - catalogs: each copied atom's catalog entry is present with the manifest's hash; each present atom is held by
//!   the element or an earlier full or incremental with that hash; catalogs are cumulative (every atom present in
//!   the previous catalog is listed, present or dropped) and drop only atoms that were present; no LSN beyond the
//!   element's end point; journal elements hold journal slices only and an empty catalog;
//! - the top of the set and each element directory hold only what the format defines (`tmp/` contents and
//!   elements still in progress are notes, not defects);
//! - unless `metadata_only`: every element's `data/` is there, holds exactly the manifest's files (missing, extra,
//!   links and special files are defects), each of the manifest's size, BLAKE3 and 1 MiB chunk hashes (atom files
//!   read through the copier's read-only requests; journal slices read once each, buffered, on
//!   [`CHECK_JOURNAL_THREADS`] threads beside them, each chunk verified before its records are framed); every atom
//!   file's header parses, names its atom, has the catalog's LSN (at
//!   most the element's end point) and the file's length; every journal slice's framing: a segment header naming
//!   its segment, the set's database and archive when the slice starts the segment, records that parse, with
//!   increasing transaction ids within the element's range, and no torn tail.
//!
//! The metadata-only mode reads the state and `control/` only (never `data/`): it answers which transactions can
//! be restored, in a time bounded by the size of the control files.

mod archive;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backset_copier::{Copier, CopyError, CopyRequest, JobControl};
use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::layout::{parse_id_name, ATOMS_DIR, CATALOG_FILE, CONTROL_DIR, DATA_DIR, JOURNAL_DIR};
use backset_format::{AtomState, ElementName, ElementStatus, FileEntry, FileKind, TxnRange};

pub use archive::{check_archive, check_archive_with_journal, ArchiveCheckReport, TornTail};

use archive::{check_atom, check_slice_alone, io_defect_kind, io_what};

use crate::limits::{CHECK_JOURNAL_THREADS, CHECK_MAX_DEFECTS_PER_FILE, CHECK_POOL_BYTES, COPY_BATCH_FILES};
use crate::set::data::{
    chunk_mismatch, for_each_record, mismatch, read_set_atom_header, size_mismatch, SliceError, FILE_MISMATCH,
};
use crate::set::layout::{is_write_leftover, top_entry, TopEntry, CONTROL_FILES, ELEMENT_ENTRIES};
use crate::set::storage::{SetStorage, Stat};
use crate::set::{hex, BackupSet, SetError};
use backset_format::dirfd::EntryKind;

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Read the state and `control/` only, never `data/`.
    pub metadata_only: bool,
    /// Progress and cancel of the data reads (the copier's read-only jobs). `None`: a private control.
    pub control: Option<Arc<JobControl>>,
    /// The copier's options (backend, pool size, direct I/O) for the atom files; by default a pool of
    /// [`CHECK_POOL_BYTES`]. Hashing is always on.
    pub copier: backset_copier::Options,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            metadata_only: false,
            control: None,
            copier: backset_copier::Options { pool_bytes: CHECK_POOL_BYTES, ..backset_copier::Options::default() },
        }
    }
}

/// What kind of defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DefectKind {
    /// A metadata file (state or control file) is missing, unreadable or does not decode.
    Metadata,
    /// The state lists a completed element whose directory is missing or not a directory.
    MissingElement,
    /// Control files disagree with the state or with each other.
    Inconsistent,
    /// The element chain is broken (parents, end points, journal contiguity).
    Chain,
    /// A catalog disagrees with the manifests.
    Catalog,
    /// An element's `data/` is missing (moved away) while its manifest lists files.
    DataMissing,
    /// A data file the manifest lists is missing.
    MissingFile,
    /// A file or directory the format does not define.
    ExtraFile,
    /// A symbolic link, a device or a directory where a regular file belongs (or the reverse).
    NotRegular,
    /// A data file's size differs from the manifest's.
    Size,
    /// A data file's bytes differ from the manifest's hashes.
    Hash,
    /// An atom file's header is wrong (does not parse, another atom, LSN, length).
    Atom,
    /// A journal slice's framing is wrong (header, records, order, range, torn tail).
    Journal,
    /// A file could not be read.
    Io,
    /// The operating system would not let this user read a file or list a directory (`EACCES`, `EPERM`): nothing is
    /// known to be damaged; run the check as a user who can read the whole set.
    Permission,
}

/// What a defect of kind [`DefectKind::Permission`] says to do.
pub(crate) const UNREADABLE: &str =
    "this user may not read it (it may be intact): run as a user who can read it all (its owner, or root)";

/// One defect: what is wrong, in which element and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// The element, when the defect is inside one.
    pub element: Option<ElementName>,
    /// The file or directory at fault, when there is one.
    pub file: Option<PathBuf>,
    /// What kind of defect.
    pub kind: DefectKind,
    /// What is wrong, for an operator.
    pub what: String,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.element, &self.file) {
            (Some(e), Some(p)) => write!(f, "element {e}: {}: {}", p.display(), self.what),
            (Some(e), None) => write!(f, "element {e}: {}", self.what),
            (None, Some(p)) => write!(f, "{}: {}", p.display(), self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The backup set.
    pub set_dir: PathBuf,
    /// Every defect found, in the order found (beyond [`CHECK_MAX_DEFECTS_PER_FILE`] of one kind in one file, the
    /// rest are one summary defect: see [`defects_total`](Self::defects_total)).
    pub defects: Vec<Defect>,
    /// How many more defects the summary defects stand for than the one entry each has in `defects`.
    pub summarized_beyond: u64,
    /// Observations that are not defects (elements in progress, leftovers of an interrupted hot copy).
    pub notes: Vec<String>,
    /// The transactions a restore can reach given what was checked: sorted, disjoint ranges. Empty when the set's
    /// metadata is damaged (restore refuses it) or nothing is restorable.
    pub restorable: Vec<TxnRange>,
    /// Whether only metadata was checked.
    pub metadata_only: bool,
    /// Completed elements listed in the state.
    pub elements: usize,
    /// Data files read and hashed.
    pub files_read: u64,
    /// Bytes of data read and hashed.
    pub bytes_read: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl CheckReport {
    /// Every defect found, listed or not (a summary defect counts as the defects it stands for).
    pub fn defects_total(&self) -> u64 {
        self.defects.len() as u64 + self.summarized_beyond
    }

    /// No defect found.
    pub fn is_ok(&self) -> bool {
        self.defects.is_empty()
    }

    /// The last restorable transaction, if any.
    pub fn restorable_max(&self) -> Option<u64> {
        self.restorable.last().map(|r| r.last)
    }

    fn defect(&mut self, element: Option<ElementName>, file: Option<PathBuf>, kind: DefectKind, what: String) {
        self.defects.push(Defect { element, file, kind, what });
    }
}

/// Defects of one kind found in one file or directory: the first [`CHECK_MAX_DEFECTS_PER_FILE`] are listed, the
/// others counted and reported as one, so that a small hostile file (a catalog of 3-byte entries, a directory of
/// empty files) cannot make the report, and the check's memory, grow past the bound of `docs/RESTORE.md`.
#[derive(Default)]
struct Capped {
    listed: usize,
    more: u64,
}

impl Capped {
    fn defect(
        &mut self,
        r: &mut CheckReport,
        element: Option<ElementName>,
        file: Option<PathBuf>,
        kind: DefectKind,
        what: impl FnOnce() -> String,
    ) {
        if self.listed < CHECK_MAX_DEFECTS_PER_FILE {
            self.listed += 1;
            r.defect(element, file, kind, what());
        } else {
            self.more += 1;
        }
    }

    /// Reports the defects counted but not listed, if any, on `file` (the file or directory they are in).
    fn finish(self, r: &mut CheckReport, element: Option<ElementName>, file: PathBuf, kind: DefectKind, what: &str) {
        if self.more > 0 {
            r.summarized_beyond += self.more - 1;
            r.defect(
                element,
                Some(file),
                kind,
                format!(
                    "{} more {what} (not listed: a check lists at most {CHECK_MAX_DEFECTS_PER_FILE} per file or \
                     directory); fix the ones listed and check again",
                    self.more
                ),
            );
        }
    }
}

/// A check could not run at all (as opposed to the defects it reports).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The path is not a directory that could be read.
    #[error("{path} is not a backup set or archive directory: {reason}; check the path")]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The path is not a backup set (`check`): what it is instead, and what to do.
    #[error("{path} is not a backup set: {reason}")]
    NotASet {
        /// The path.
        path: PathBuf,
        /// What it is, and what to do.
        reason: String,
    },
    /// The archive directory is an unfinished restore (`archive check`).
    #[error(transparent)]
    UnfinishedRestore(#[from] crate::restore::UnfinishedRestore),
    /// The path is not an archive (`archive check`): what it is instead, and what to do.
    #[error("{path} is not an archive directory: {reason}")]
    NotAnArchive {
        /// The path.
        path: PathBuf,
        /// What it is, and what to do.
        reason: String,
    },
    /// The copier could not be set up.
    #[error("cannot check {path}: {source}")]
    Copier {
        /// The set.
        path: PathBuf,
        /// The copier's error.
        source: CopyError,
    },
    /// The check was cancelled through its control.
    #[error("the check of {path} was cancelled")]
    Cancelled {
        /// The set.
        path: PathBuf,
    },
    /// The archive is held by a running SM (see [`crate::lock`]).
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
}

fn set_error_defect(e: &SetError) -> Defect {
    let kind = match e {
        SetError::Metadata { source, .. } if source.is_permission() => DefectKind::Permission,
        SetError::Metadata { .. } => DefectKind::Metadata,
        SetError::Link { path, .. } if path.file_name().is_some_and(|n| n == CONTROL_DIR) => DefectKind::NotRegular,
        SetError::ElementMissing { .. } | SetError::Link { .. } => DefectKind::MissingElement,
        SetError::Inconsistent { .. } => DefectKind::Inconsistent,
        SetError::Chain { .. } => DefectKind::Chain,
        _ => DefectKind::Io,
    };
    Defect { element: e.element(), file: e.path(), kind, what: e.to_string() }
}

/// Per base element: what the catalog pass learnt.
#[derive(Debug, Default)]
struct BaseInfo {
    /// The catalog read and its atoms all resolved.
    catalog_ok: bool,
    /// Elements the base's atoms come from.
    providers: HashSet<usize>,
    /// Catalog LSN of each atom file this element's manifest lists.
    lsns: HashMap<u64, u64>,
}

/// Checks the backup set in `dir`. See the [module docs](self) for what is verified. Returns `Err` only when the
/// check cannot run (no such directory, the copier cannot start, cancelled); every defect of the set is in the
/// report.
pub fn check_set(dir: impl AsRef<Path>, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let dir = dir.as_ref().to_path_buf();
    let what = crate::found::found(&dir);
    if what != crate::found::Found::BackupSet {
        return Err(CheckError::NotASet { reason: what.not_a_set(&dir), path: dir });
    }
    let mut r = CheckReport {
        set_dir: dir.clone(),
        defects: Vec::new(),
        summarized_beyond: 0,
        notes: Vec::new(),
        restorable: Vec::new(),
        metadata_only: opts.metadata_only,
        elements: 0,
        files_read: 0,
        bytes_read: 0,
        elapsed: Duration::ZERO,
    };
    let mut set = match BackupSet::load(&dir) {
        Ok(set) => set,
        Err(e) => {
            r.defects.push(set_error_defect(&e));
            r.elapsed = started.elapsed();
            return Ok(r);
        }
    };
    r.elements = set.state().elements.iter().filter(|e| e.status == ElementStatus::Completed).count();
    let problems = set.take_problems();
    let structural_ok = problems.is_empty();
    r.defects.extend(problems.iter().map(set_error_defect));
    if r.elements == 0 {
        r.notes.push("the set has no completed element yet: nothing can be restored".into());
    } else if set.full().is_none() && structural_ok {
        r.defect(
            None,
            None,
            DefectKind::Chain,
            "the set has no completed full element: nothing can be restored".into(),
        );
    }
    scan_layout(&set, &mut r);
    let bases = check_catalogs(&set, &mut r);
    if opts.metadata_only {
        let none = vec![false; set.elements().len()];
        if structural_ok {
            r.restorable = set.restorable_with(&atoms_ok(&bases, &none), &|_| true);
        }
        r.elapsed = started.elapsed();
        return Ok(r);
    }
    let damaged = check_data(&set, &bases, opts, &mut r)?;
    if structural_ok {
        r.restorable = set.restorable_with(&atoms_ok(&bases, &damaged), &|i| !damaged[i]);
    }
    r.elapsed = started.elapsed();
    Ok(r)
}

/// Whether a restore from base `b` finds its atoms intact: its catalog resolved and no element holding them damaged.
fn atoms_ok<'a>(bases: &'a HashMap<usize, BaseInfo>, damaged: &'a [bool]) -> impl Fn(usize) -> bool + 'a {
    move |b| {
        bases.get(&b).is_some_and(|info| info.catalog_ok && !damaged[b] && info.providers.iter().all(|&p| !damaged[p]))
    }
}

/// The top of the set and each element directory hold only what the format defines.
fn scan_layout(set: &BackupSet, r: &mut CheckReport) {
    let dir = set.dir();
    let storage = set.storage();
    let listed: BTreeMap<ElementName, ElementStatus> =
        set.state().elements.iter().map(|e| (e.name(), e.status)).collect();
    let entries = match storage.list(Path::new("")) {
        Ok(names) => names,
        Err(e) => {
            r.defect(None, Some(dir.to_path_buf()), DefectKind::Io, format!("cannot list the set's directory: {e}"));
            return;
        }
    };
    let mut top = Capped::default();
    for entry in entries {
        let name = entry.to_string_lossy().into_owned();
        let path = storage.show(Path::new(&entry));
        let kind = top_entry(&name);
        if matches!(kind, TopEntry::State | TopEntry::WriteLeftover) {
            if kind == TopEntry::WriteLeftover {
                r.notes.push(format!("{} is a leftover of an interrupted metadata write", path.display()));
            }
            continue;
        }
        if kind == TopEntry::Tmp {
            let what = storage.kind(Path::new(&entry)).ok().flatten();
            if !matches!(what, Some(EntryKind::Dir(_))) {
                // Never followed: hot copies refuse the set (a link here once led them to empty its target).
                r.defect(
                    None,
                    Some(path.clone()),
                    DefectKind::NotRegular,
                    format!(
                        "{} is {} where the set's directory of elements under construction belongs (a backup set \
                         never contains links); hot copies refuse this set until it is gone: remove it (`rm {}` \
                         removes a link, not what it leads to)",
                        path.display(),
                        if what == Some(EntryKind::Symlink) { "a symbolic link" } else { "not a directory" },
                        path.display()
                    ),
                );
                continue;
            }
            let n = storage.list(Path::new(&entry)).map_or(0, |names| names.len());
            if n > 0 {
                r.notes.push(format!(
                    "{} holds {n} element(s) under construction (a hot copy is running, or one was interrupted and \
                     the next hot copy removes it)",
                    path.display()
                ));
            }
            continue;
        }
        match kind {
            TopEntry::Element(e) => match listed.get(&e) {
                Some(ElementStatus::Completed) => {}
                Some(ElementStatus::InProgress) => r.notes.push(format!(
                    "element {e} is listed as in progress: it is ignored (an interrupted hot copy left it; the next \
                     hot copy removes it)"
                )),
                None => top.defect(r, Some(e), Some(path), DefectKind::ExtraFile, || {
                    "this element directory is not listed in the state, so no restore uses it; it may be a \
                     leftover of an interrupted hot copy or come from another set: move it out of the set"
                        .into()
                }),
            },
            _ => top.defect(r, None, Some(path), DefectKind::ExtraFile, || {
                "unexpected entry at the top of the backup set (only state, tmp/ and element directories belong \
                 there): move it out of the set"
                    .into()
            }),
        }
    }
    top.finish(r, None, dir.to_path_buf(), DefectKind::ExtraFile, "unexpected entries at the top of the set");
    let element_names = set.elements().iter().map(|e| e.name());
    for element in element_names.chain(set.unread().iter().map(|u| u.entry.name())) {
        let dir = PathBuf::from(element.to_string());
        for (sub, allowed) in [(None, &ELEMENT_ENTRIES[..]), (Some(CONTROL_DIR), &CONTROL_FILES[..])] {
            let rel = sub.map_or_else(|| dir.clone(), |s| dir.join(s));
            let d = storage.show(&rel);
            let Ok(names) = storage.list(&rel) else { continue };
            let mut extra = Capped::default();
            for entry in names {
                let name = entry.to_string_lossy().into_owned();
                let path = storage.show(&rel.join(&entry));
                if is_write_leftover(&name) {
                    r.notes.push(format!("{} is a leftover of an interrupted metadata write", path.display()));
                } else if !allowed.contains(&name.as_str()) {
                    extra.defect(r, Some(element), Some(path), DefectKind::ExtraFile, || {
                        format!(
                            "unexpected entry in {} (the format defines only {}): move it out of the set",
                            d.display(),
                            allowed.join(", ")
                        )
                    });
                }
            }
            extra.finish(r, Some(element), d.clone(), DefectKind::ExtraFile, "unexpected entries in this directory");
        }
    }
}

/// Catalogs against manifests, along the chain of fulls and incrementals.
fn check_catalogs(set: &BackupSet, r: &mut CheckReport) -> HashMap<usize, BaseInfo> {
    let mut out = HashMap::new();
    // Every atom file of every full or incremental so far: atom id -> (hash, element) versions.
    let mut versions: HashMap<u64, Vec<([u8; 32], usize)>> = HashMap::new();
    // The previous base's catalog (element id, name, atom -> present), as long as it is the one the state lists
    // right before: after an element that could not be read, the drop and cumulative rules are not checked.
    let mut prev: Option<(uuid::Uuid, ElementName, HashMap<u64, bool>)> = None;
    let state_bases: Vec<uuid::Uuid> = set
        .state()
        .elements
        .iter()
        .filter(|e| e.status == ElementStatus::Completed && e.kind != backset_format::ElementKind::Journal)
        .map(|e| e.element_id)
        .collect();
    for (i, e) in set.elements().iter().enumerate() {
        if !e.is_base() {
            continue;
        }
        let name = e.name();
        let position = state_bases.iter().position(|&id| id == e.id());
        let expected_prev = position.and_then(|p| p.checked_sub(1)).map(|p| state_bases[p]);
        let prev_known = match (&prev, expected_prev) {
            (_, None) => true,
            (Some((id, _, _)), Some(want)) => *id == want,
            (None, Some(_)) => false,
        };
        let cat_path = e.control_dir().join(CATALOG_FILE);
        for f in e.atom_files() {
            versions.entry(f.id).or_default().push((f.hash, i));
        }
        let catalog = match set.catalog(i) {
            Ok(c) => c,
            Err(err) => {
                r.defects.push(set_error_defect(&err));
                out.insert(i, BaseInfo::default());
                prev = None;
                continue;
            }
        };
        let mut info = BaseInfo { catalog_ok: true, ..BaseInfo::default() };
        let mut capped = Capped::default();
        let mut bad = |r: &mut CheckReport, what: String| {
            capped.defect(r, Some(name), Some(cat_path.clone()), DefectKind::Catalog, || what);
        };
        for f in e.atom_files() {
            match catalog.get(f.id) {
                Some(c) if c.state == (AtomState::Present { hash: f.hash }) => {
                    info.lsns.insert(f.id, c.lsn);
                }
                Some(c) => {
                    info.catalog_ok = false;
                    let state = match c.state {
                        AtomState::Present { hash } => format!("present with BLAKE3 {}", hex(&hash)),
                        AtomState::Dropped => "dropped".into(),
                    };
                    bad(
                        r,
                        format!(
                            "atom {:#x} was copied with BLAKE3 {} (manifest), but the catalog lists it {state}",
                            f.id,
                            hex(&f.hash)
                        ),
                    );
                }
                None => {
                    info.catalog_ok = false;
                    bad(r, format!("atom {:#x} was copied (manifest) but the catalog does not list it", f.id));
                }
            }
        }
        let mut listed = HashMap::with_capacity(catalog.atoms.len());
        for c in &catalog.atoms {
            match c.state {
                AtomState::Present { hash } => {
                    let provider = versions.get(&c.atom_id).and_then(|v| v.iter().rev().find(|(h, _)| *h == hash));
                    match provider {
                        Some(&(_, p)) => {
                            info.providers.insert(p);
                        }
                        None => {
                            info.catalog_ok = false;
                            bad(
                                r,
                                format!(
                                    "atom {:#x} is listed as present with BLAKE3 {}, but no full or incremental up to \
                                 {name} holds a file with that hash",
                                    c.atom_id,
                                    hex(&hash)
                                ),
                            );
                        }
                    }
                    listed.insert(c.atom_id, true);
                }
                AtomState::Dropped => {
                    let was_present = match (&prev, expected_prev) {
                        (_, None) => Some(false),
                        _ if !prev_known => None,
                        (Some((_, _, p)), Some(_)) => Some(p.get(&c.atom_id) == Some(&true)),
                        (None, Some(_)) => None,
                    };
                    if was_present == Some(false) {
                        let before = prev.as_ref().filter(|_| expected_prev.is_some()).map_or_else(
                            || "a full's catalog lists no drops".to_string(),
                            |(_, n, _)| format!("it was not present in {n}'s catalog"),
                        );
                        bad(r, format!("atom {:#x} is listed as dropped, but {before}", c.atom_id));
                    }
                    listed.insert(c.atom_id, false);
                }
            }
        }
        if let Some((_, pname, p)) = prev.as_ref().filter(|_| prev_known && expected_prev.is_some()) {
            let mut lost: Vec<u64> =
                p.iter().filter(|(id, present)| **present && !listed.contains_key(id)).map(|(id, _)| *id).collect();
            lost.sort_unstable();
            if let Some(first) = lost.first() {
                info.catalog_ok = false;
                bad(
                    r,
                    format!(
                    "{} atoms present in {pname}'s catalog are not listed (present or dropped), first {first:#x}; a \
                     catalog is cumulative",
                    lost.len()
                ),
                );
            }
        }
        capped.finish(r, Some(name), cat_path.clone(), DefectKind::Catalog, "catalog defects");
        prev = Some((e.id(), name, listed));
        out.insert(i, info);
    }
    out
}

/// One data file to read and hash.
struct ToRead<'a> {
    element: usize,
    entry: &'a FileEntry,
    /// The file, relative to the set.
    rel: PathBuf,
    /// The file as messages show it.
    path: PathBuf,
}

/// What [`scan_data`] found in an element's `data/`.
struct DataScan {
    /// (kind, id) -> (path, size) of the regular files named as data files (and listed in the manifest, when there
    /// is one); size `u64::MAX` for one that is there but cannot be used (reported already).
    found: HashMap<(FileKind, u64), (PathBuf, u64)>,
    /// A defect that makes the element's data damaged was reported.
    damaged: bool,
}

/// Lists an element's `data/` (`data`, relative to the set): `atoms/` and `journal/` and in them the files named as
/// data files (those of the manifest `files`, when it is known); every other entry, link or special file is a
/// defect. `Err(damaged)` when `data/` itself cannot be used (a missing `data/` is a defect only when the manifest
/// lists files).
fn scan_data(
    storage: &dyn SetStorage,
    name: Option<ElementName>,
    data: &Path,
    files: Option<&[FileEntry]>,
    r: &mut CheckReport,
) -> Result<DataScan, bool> {
    let shown = storage.show(data);
    match storage.kind(data) {
        Ok(None) => {
            let listed = files.map_or(0, <[FileEntry]>::len);
            if listed > 0 {
                r.defect(
                    name,
                    Some(shown),
                    DefectKind::DataMissing,
                    format!("data/ is missing ({listed} files listed in the manifest); it was moved away: put it back"),
                );
            }
            return Err(listed > 0);
        }
        Err(err) => {
            r.defect(name, Some(shown), io_defect_kind(&err), format!("cannot stat: {}", io_what(&err)));
            return Err(true);
        }
        Ok(Some(EntryKind::Dir(_))) => {}
        Ok(Some(_)) => {
            r.defect(name, Some(shown), DefectKind::NotRegular, "is not a directory (or is a link)".into());
            return Err(true);
        }
    }
    let mut scan = DataScan { found: HashMap::new(), damaged: false };
    let names = match storage.list(data) {
        Ok(names) => names,
        Err(err) => {
            r.defect(name, Some(shown), io_defect_kind(&err), format!("cannot list the directory: {}", io_what(&err)));
            scan.damaged = true;
            return Ok(scan);
        }
    };
    for sub in names {
        let sub_rel = data.join(&sub);
        let kind = match sub.to_str() {
            Some(ATOMS_DIR) => FileKind::Atom,
            Some(JOURNAL_DIR) => FileKind::Journal,
            _ => {
                r.defect(
                    name,
                    Some(storage.show(&sub_rel)),
                    DefectKind::ExtraFile,
                    "unexpected entry in data/ (only atoms/ and journal/ belong there): move it out of the set".into(),
                );
                continue;
            }
        };
        let subdir = storage.show(&sub_rel);
        if !matches!(storage.kind(&sub_rel), Ok(Some(EntryKind::Dir(_)))) {
            r.defect(name, Some(subdir), DefectKind::NotRegular, "is not a directory (or is a link)".into());
            continue;
        }
        let listing = match storage.list(&sub_rel) {
            Ok(listing) => listing,
            Err(err) => {
                r.defect(
                    name,
                    Some(subdir),
                    io_defect_kind(&err),
                    format!("cannot list the directory: {}", io_what(&err)),
                );
                scan.damaged = true;
                continue;
            }
        };
        let mut extra = Capped::default();
        for f in listing {
            let rel = sub_rel.join(&f);
            let fname = f.to_string_lossy().into_owned();
            let listed =
                |id: &u64| files.is_none_or(|m| m.binary_search_by_key(&(kind, *id), |m| (m.kind, m.id)).is_ok());
            let Some(id) = parse_id_name(&fname).filter(listed) else {
                let what = if files.is_some() {
                    "this file is not listed in the element's manifest: move it out of the set"
                } else {
                    "unexpected file (data file names are 16 lower-case hex digits): move it out of the set"
                };
                extra.defect(r, name, Some(storage.show(&rel)), DefectKind::ExtraFile, || what.into());
                continue;
            };
            match storage.stat(&rel) {
                Ok(Some(Stat { kind: EntryKind::File, len })) => {
                    scan.found.insert((kind, id), (rel, len));
                }
                Ok(Some(_)) => {
                    scan.damaged = true;
                    r.defect(name, Some(storage.show(&rel)), DefectKind::NotRegular, "is not a regular file (a backup set never contains links or special files): replace it by the file from a copy of the set".into());
                    scan.found.insert((kind, id), (PathBuf::new(), u64::MAX));
                }
                Ok(None) => {
                    let err = std::io::Error::from(std::io::ErrorKind::NotFound);
                    scan.damaged = true;
                    r.defect(
                        name,
                        Some(storage.show(&rel)),
                        io_defect_kind(&err),
                        format!("cannot stat: {}", io_what(&err)),
                    );
                    scan.found.insert((kind, id), (PathBuf::new(), u64::MAX));
                }
                Err(err) => {
                    scan.damaged = true;
                    r.defect(
                        name,
                        Some(storage.show(&rel)),
                        io_defect_kind(&err),
                        format!("cannot stat: {}", io_what(&err)),
                    );
                    scan.found.insert((kind, id), (PathBuf::new(), u64::MAX));
                }
            }
        }
        let what = if files.is_some() { "files not listed in the manifest" } else { "unexpected files" };
        extra.finish(r, name, subdir, DefectKind::ExtraFile, what);
    }
    Ok(scan)
}

/// The data of every element against its manifest. Returns, per element, whether its data is damaged.
fn check_data(
    set: &BackupSet,
    bases: &HashMap<usize, BaseInfo>,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Result<Vec<bool>, CheckError> {
    let mut damaged = vec![false; set.elements().len()];
    let mut to_read: Vec<ToRead<'_>> = Vec::new();
    for (i, e) in set.elements().iter().enumerate() {
        let name = Some(e.name());
        let found = match scan_data(set.storage(), name, &e.data_rel(), Some(&e.manifest.files), r) {
            Ok(scan) => {
                damaged[i] |= scan.damaged;
                scan.found
            }
            Err(bad) => {
                damaged[i] |= bad;
                continue;
            }
        };
        for f in &e.manifest.files {
            match found.get(&(f.kind, f.id)) {
                None => {
                    damaged[i] = true;
                    r.defect(
                        name,
                        Some(e.data_file(f)),
                        DefectKind::MissingFile,
                        format!(
                            "missing: the manifest lists this {} of {} bytes; restore it from a copy of the set",
                            kind_name(f.kind),
                            f.size
                        ),
                    );
                }
                Some((_, u64::MAX)) => {}
                Some((rel, size)) if *size != f.size => {
                    damaged[i] = true;
                    r.defect(
                        name,
                        Some(set.storage().show(rel)),
                        DefectKind::Size,
                        format!("{}: restore it from a copy of the set", size_mismatch(*size, f.size)),
                    );
                }
                Some((rel, _)) => {
                    let path = set.storage().show(rel);
                    to_read.push(ToRead { element: i, entry: f, rel: rel.clone(), path })
                }
            }
        }
    }

    // Journal slices are read once, buffered, by the journal threads (`check_journals`), which hash and frame them
    // together, while the copier hashes the atom files here (read-only requests, O_DIRECT) and their headers are read.
    let (atoms, journals): (Vec<ToRead<'_>>, Vec<ToRead<'_>>) =
        to_read.into_iter().partition(|t| t.entry.kind == FileKind::Atom);
    let own_control;
    let ctl: &JobControl = match &opts.control {
        Some(c) => c,
        None => {
            own_control = JobControl::new();
            &own_control
        }
    };
    let (atoms_result, journal_result) = std::thread::scope(|s| {
        let journal = s.spawn(|| check_journals(set, &journals, ctl));
        let atoms_result = check_atoms(set, bases, opts, &atoms, ctl, r, &mut damaged);
        if atoms_result.is_err() {
            // Stop the journal pass too (this cancels the caller's control: the check fails either way).
            ctl.cancel();
        }
        (atoms_result, journal.join().expect("journal pass"))
    });
    atoms_result?;
    let journal = journal_result?;
    r.files_read += journal.files_read;
    r.bytes_read += journal.bytes_read;
    for (i, path, kind, what) in journal.defects {
        damaged[i] = true;
        r.defect(Some(set.elements()[i].name()), Some(path), kind, what);
    }
    check_unread(set, ctl, r)?;
    Ok(damaged)
}

/// The data of each element [`BackupSet::load`] left out ([`BackupSet::unread`]: its control files cannot all be
/// read, or disagree with the state). No restore uses it, but its files are verified as far as they can be, so that
/// damaged control files do not leave damaged data unreported: each by what it carries itself, as `archive check`
/// checks an archive (an atom file's header, name, length and body BLAKE3; a journal slice's segment header, record
/// framing and checks, transaction ids increasing across the element's slices, no record cut short), and against
/// the element's manifest when that one reads (missing and extra files, sizes, chunk and file hashes). One chunk
/// in memory at a time, but for a journal slice without its manifest, read whole (at most `MAX_SEGMENT_BYTES`).
fn check_unread(set: &BackupSet, ctl: &JobControl, r: &mut CheckReport) -> Result<(), CheckError> {
    for u in set.unread() {
        let name = Some(u.entry.name());
        let files = u.manifest.as_ref().map(|m| &m.files[..]);
        let storage = set.storage();
        let data = Path::new(&u.entry.name().to_string()).join(DATA_DIR);
        let Ok(scan) = scan_data(storage, name, &data, files, r) else { continue };
        let mut found: Vec<((FileKind, u64), (PathBuf, u64))> =
            scan.found.into_iter().filter(|(_, (_, size))| *size != u64::MAX).collect();
        found.sort();
        for f in files.unwrap_or_default() {
            if !found.iter().any(|(key, _)| *key == (f.kind, f.id)) {
                let rel = data.join(backset_format::layout::data_file_path(f.kind, f.id));
                let path = storage.show(&rel);
                if !matches!(storage.kind(&rel), Ok(Some(_))) {
                    r.defect(
                        name,
                        Some(path),
                        DefectKind::MissingFile,
                        format!(
                            "missing: the manifest lists this {} of {} bytes; restore it from a copy of the set",
                            kind_name(f.kind),
                            f.size
                        ),
                    );
                }
            }
        }
        let mut verified = 0usize;
        let mut after = u.entry.txn_range.first.saturating_sub(1);
        for ((kind, id), (rel, _)) in found {
            if ctl.is_cancelled() {
                return Err(CheckError::Cancelled { path: set.dir().to_path_buf() });
            }
            let path = storage.show(&rel);
            // The archive checks read a file as `archive check` does: the local file the storage gives for it.
            let local = storage.copier_path(&rel);
            let entry = files.and_then(|f| f.binary_search_by_key(&(kind, id), |m| (m.kind, m.id)).ok().map(|k| &f[k]));
            let result = match (kind, entry) {
                (FileKind::Atom, _) => check_atom(&local, id, entry).map(|(_, len)| len),
                (FileKind::Journal, None) => check_slice_alone(&local, id, after).map(|(last, len)| {
                    after = last;
                    len
                }),
                (FileKind::Journal, Some(e)) => {
                    let cancel = Some(ctl.cancel_flag());
                    match for_each_record(storage, &rel, e, after, cancel, |_| Ok::<bool, SliceError>(true)) {
                        Ok(summary) => {
                            after = summary.last_txn.unwrap_or(after);
                            Ok(e.size)
                        }
                        Err(SliceError::Cancelled) => {
                            return Err(CheckError::Cancelled { path: set.dir().to_path_buf() })
                        }
                        Err(err) => {
                            let (kind, what, _) = slice_error_defect(err);
                            Err((kind, what))
                        }
                    }
                }
            };
            match result {
                Ok(len) => {
                    verified += 1;
                    r.files_read += 1;
                    r.bytes_read += len;
                }
                Err((kind, what)) => r.defect(name, Some(path), kind, what),
            }
        }
        r.notes.push(format!(
            "element {}: its control files cannot all be read or disagree with the state, so no restore uses it; {verified} \
             of its data files verified {}",
            u.entry.name(),
            if files.is_some() {
                "against its manifest and by their own checksums"
            } else {
                "by their own checksums only (its manifest cannot be read)"
            }
        ));
    }
    Ok(())
}

/// Hashes the atom files `atoms` through the copier's read-only requests and checks their headers against the
/// catalogs, marking damaged elements.
fn check_atoms(
    set: &BackupSet,
    bases: &HashMap<usize, BaseInfo>,
    opts: &CheckOptions,
    atoms: &[ToRead<'_>],
    ctl: &JobControl,
    r: &mut CheckReport,
    damaged: &mut [bool],
) -> Result<(), CheckError> {
    if atoms.is_empty() {
        return Ok(());
    }
    let mut copier_opts = opts.copier.clone();
    copier_opts.hash = true;
    let mut copier =
        Copier::new(copier_opts).map_err(|source| CheckError::Copier { path: set.dir().to_path_buf(), source })?;
    for batch in atoms.chunks(COPY_BATCH_FILES) {
        let requests: Vec<CopyRequest> =
            batch.iter().map(|t| CopyRequest::read(set.storage().copier_path(&t.rel))).collect();
        let results: Vec<Result<backset_copier::FileReport, CopyError>> = match copier.copy(&requests, ctl, None) {
            Ok(job) => {
                let mut by_request: Vec<Option<backset_copier::FileReport>> = vec![None; requests.len()];
                for f in job.files {
                    let k = f.request;
                    by_request[k] = Some(f);
                }
                by_request.into_iter().map(|f| f.ok_or(CopyError::Cancelled)).collect()
            }
            Err(CopyError::Cancelled) => return Err(CheckError::Cancelled { path: set.dir().to_path_buf() }),
            // One file failed: read them one by one to name every failure.
            Err(_) => {
                let mut v = Vec::with_capacity(requests.len());
                for req in &requests {
                    match copier.copy(std::slice::from_ref(req), ctl, None) {
                        Ok(mut job) => v.push(job.files.pop().ok_or(CopyError::Cancelled)),
                        Err(CopyError::Cancelled) if ctl.is_cancelled() => {
                            return Err(CheckError::Cancelled { path: set.dir().to_path_buf() })
                        }
                        Err(e) => v.push(Err(e)),
                    }
                }
                v
            }
        };
        for (t, res) in batch.iter().zip(results) {
            let e = &set.elements()[t.element];
            let name = Some(e.name());
            let report = match res {
                Ok(rep) => rep,
                Err(err) => {
                    damaged[t.element] = true;
                    let (kind, what) = match &err {
                        CopyError::Io { source, .. } => {
                            (io_defect_kind(source), format!("cannot be read: {}", io_what(source)))
                        }
                        _ => (DefectKind::Io, format!("cannot be read: {err}")),
                    };
                    r.defect(name, Some(t.path.clone()), kind, what);
                    continue;
                }
            };
            r.files_read += 1;
            r.bytes_read += report.bytes;
            if let Some(why) = mismatch(t.entry, report.bytes, &report.hash, &report.chunk_hashes) {
                damaged[t.element] = true;
                r.defect(
                    name,
                    Some(t.path.clone()),
                    DefectKind::Hash,
                    format!("{why}: restore it from a copy of the set"),
                );
                continue;
            }
            let lsn = bases.get(&t.element).and_then(|b| b.lsns.get(&t.entry.id)).copied();
            if let Some(why) = atom_header_problem(set.storage(), &t.rel, t.entry, lsn, e.txn_range().last) {
                damaged[t.element] = true;
                r.defect(name, Some(t.path.clone()), DefectKind::Atom, why);
            }
        }
    }
    Ok(())
}

/// What the journal pass found: defects as (element, file, kind, description), and what it read.
#[derive(Default)]
struct JournalOutcome {
    defects: Vec<(usize, PathBuf, DefectKind, String)>,
    files_read: u64,
    bytes_read: u64,
}

/// What one element's journal slices held, for the comparison across elements.
#[derive(Default)]
struct ElementJournal {
    outcome: JournalOutcome,
    /// Paths of its slices that were read, and whether each was whole and well framed.
    slices: Vec<(PathBuf, bool)>,
    /// (transaction, record check, index in `slices`) of each record in a range other elements cover too.
    shared: Vec<(u64, u64, usize)>,
}

/// Reads each journal slice in `journals` once, verifying its chunk and file hashes against the manifest and its
/// framing together, on [`CHECK_JOURNAL_THREADS`] threads that take whole elements (records increase across an
/// element's slices). Then a transaction that several elements cover must have the same record in each: the record
/// checks of those records are kept (24 bytes per record in the shared ranges, mostly the journal of the fulls and
/// incrementals) and compared element by element.
fn check_journals(set: &BackupSet, journals: &[ToRead<'_>], ctl: &JobControl) -> Result<JournalOutcome, CheckError> {
    ctl.add_outside(journals.iter().map(|t| t.entry.size).sum(), 0);
    let shared = shared_ranges(set);
    // `journals` comes element by element, each in its manifest's order: one group per element.
    let groups: Vec<&[ToRead<'_>]> = journals.chunk_by(|a, b| a.element == b.element).collect();
    // Largest journals first, so that no thread is left with a large one at the end.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].iter().map(|t| t.entry.size).sum::<u64>()));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ElementJournal, CheckError>>>> =
        Mutex::new(groups.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..CHECK_JOURNAL_THREADS.min(groups.len()) {
            s.spawn(|| {
                while let Some(&g) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = element_journal(set, groups[g], &shared, ctl);
                    results.lock().unwrap_or_else(PoisonError::into_inner)[g] = Some(result);
                }
            });
        }
    });
    let mut out = JournalOutcome::default();
    let mut seen: HashMap<u64, (u64, usize)> = HashMap::new();
    for (group, result) in groups.iter().zip(results.into_inner().unwrap_or_else(PoisonError::into_inner)) {
        let i = group[0].element;
        let element = result.expect("every element's journal read")?;
        out.files_read += element.outcome.files_read;
        out.bytes_read += element.outcome.bytes_read;
        out.defects.extend(element.outcome.defects);
        let mut reported = vec![false; element.slices.len()];
        for (txn, check, slice) in element.shared {
            match seen.entry(txn) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let (path, whole) = &element.slices[slice];
                    if o.get().0 != check && *whole && !reported[slice] {
                        reported[slice] = true;
                        out.defects.push((
                            i,
                            path.clone(),
                            DefectKind::Journal,
                            format!(
                                "its record of transaction {txn} differs from the one in element {} (commit time or \
                                 payload): one of them does not come from this archive's journal",
                                set.elements()[o.get().1].name()
                            ),
                        ));
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((check, i));
                }
            }
        }
    }
    Ok(out)
}

/// Reads one element's journal slices `slices` (those there with their manifest's size), in order (see
/// [`check_journals`]).
fn element_journal(
    set: &BackupSet,
    slices: &[ToRead<'_>],
    shared: &[TxnRange],
    ctl: &JobControl,
) -> Result<ElementJournal, CheckError> {
    let mut out = ElementJournal::default();
    let state = set.state();
    let i = slices[0].element;
    let range = set.elements()[i].txn_range();
    let mut after = range.first.saturating_sub(1);
    for t in slices {
        let (f, path) = (t.entry, t.path.clone());
        let slice = out.slices.len();
        let mut outside: Option<(u64, u64)> = None;
        let res = for_each_record(set.storage(), &t.rel, f, after, Some(ctl.cancel_flag()), |rec| {
            if !range.contains(rec.txn_id) && outside.is_none() {
                outside = Some((rec.txn_id, rec.offset));
            }
            let k = shared.partition_point(|s| s.last < rec.txn_id);
            if shared.get(k).is_some_and(|s| s.contains(rec.txn_id)) {
                // The record's verified check covers its timestamp and payload: no second hash.
                out.shared.push((rec.txn_id, rec.check, slice));
            }
            Ok::<bool, SliceError>(true)
        });
        ctl.add_outside(0, f.size);
        let mut defects = Vec::new();
        let mut fail = |kind: DefectKind, what: String| defects.push((i, path.clone(), kind, what));
        let (read_through, whole) = match res {
            Err(SliceError::Cancelled) => return Err(CheckError::Cancelled { path: set.dir().to_path_buf() }),
            Err(err) => {
                let (kind, what, read_through) = slice_error_defect(err);
                fail(kind, what);
                (read_through, false)
            }
            Ok(summary) => {
                if let Some((txn, offset)) = outside {
                    fail(
                        DefectKind::Journal,
                        format!(
                            "holds transaction {txn} (at byte {offset} of segment {}), outside the element's range \
                             [{}, {}]",
                            f.id, range.first, range.last
                        ),
                    );
                }
                if summary.records == 0 {
                    fail(DefectKind::Journal, "holds no record (a hot copy copies only slices with records)".into());
                }
                if let Some(h) = summary.header {
                    if h.database_id != state.database_id || h.archive_id != state.archive_id {
                        fail(
                            DefectKind::Journal,
                            format!(
                                "its segment header names database {} archive {}, the state database {} archive {}",
                                h.database_id, h.archive_id, state.database_id, state.archive_id
                            ),
                        );
                    }
                }
                after = summary.last_txn.unwrap_or(after);
                (true, true)
            }
        };
        out.outcome.defects.extend(defects);
        out.slices.push((path, whole));
        if read_through {
            out.outcome.files_read += 1;
            out.outcome.bytes_read += f.size;
        }
    }
    Ok(out)
}

/// The defect a journal slice that failed its verification is: its kind, what to say, and whether the slice was read
/// through (a size, hash or framing defect) rather than not read at all.
fn slice_error_defect(err: SliceError) -> (DefectKind, String, bool) {
    let restore_it = "restore it from a copy of the set";
    match err {
        SliceError::Io { source, .. } => {
            (io_defect_kind(&source), format!("cannot be read: {}", io_what(&source)), false)
        }
        err @ (SliceError::Missing { .. } | SliceError::NotRegular { .. }) => {
            (DefectKind::Io, format!("cannot be read: {err}"), false)
        }
        SliceError::Size { expected, found, .. } => {
            (DefectKind::Size, format!("{}: {restore_it}", size_mismatch(found, expected)), true)
        }
        SliceError::Chunk { index, start, end, .. } => {
            (DefectKind::Hash, format!("{}: {restore_it}", chunk_mismatch(index, start, end)), true)
        }
        SliceError::Hash { .. } => (DefectKind::Hash, format!("{FILE_MISMATCH}: {restore_it}"), true),
        err => (DefectKind::Journal, format!("{err}: the slice is damaged"), true),
    }
}

/// The transactions that at least two elements' ranges cover, as sorted disjoint ranges.
fn shared_ranges(set: &BackupSet) -> Vec<TxnRange> {
    let mut events: Vec<(u128, i64)> = Vec::with_capacity(set.elements().len() * 2);
    for e in set.elements() {
        let r = e.txn_range();
        events.push((u128::from(r.first), 1));
        events.push((u128::from(r.last) + 1, -1));
    }
    events.sort_unstable();
    let mut out: Vec<TxnRange> = Vec::new();
    let mut depth = 0i64;
    let mut start = None;
    for (at, delta) in events {
        let before = depth;
        depth += delta;
        if before < 2 && depth >= 2 {
            start = Some(at);
        } else if before >= 2 && depth < 2 {
            if let Some(first) = start.take() {
                if at > first {
                    out.push(TxnRange { first: first as u64, last: (at - 1) as u64 });
                }
            }
        }
    }
    out
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Atom => "atom file",
        FileKind::Journal => "journal slice",
    }
}

/// What is wrong with a copied atom file's header, if anything.
fn atom_header_problem(
    storage: &dyn SetStorage,
    rel: &Path,
    entry: &FileEntry,
    catalog_lsn: Option<u64>,
    end: u64,
) -> Option<String> {
    let h = match read_set_atom_header(storage, rel) {
        Ok(h) => h,
        Err(why) => return Some(format!("{why}: the atom file is damaged")),
    };
    if h.atom_id != entry.id {
        return Some(format!("its header names atom {:#x}, the file is atom {:#x}", h.atom_id, entry.id));
    }
    if h.body_len + ATOM_HEADER_BYTES as u64 != entry.size {
        return Some(format!("its header declares a {}-byte body, the file is {} bytes", h.body_len, entry.size));
    }
    if h.lsn > end {
        return Some(format!("its LSN {} is beyond the element's end point {end}", h.lsn));
    }
    match catalog_lsn {
        Some(lsn) if lsn != h.lsn => Some(format!("its LSN is {}, the catalog says {lsn}", h.lsn)),
        _ => None,
    }
}
