//! Backup sets on disk: a reader ([`BackupSet`], public, for hot copies, restore and check) and the writer the hot
//! copy jobs use (initialise a set, begin, finish and abort an element, clean the leftovers of a crash).
//!
//! # Reading
//! Readers go as FORMAT.md says: `state` first ([`BackupSet::open`]), then each completed element's
//! `control/element`, `control/manifest` and `control/catalog` ([`BackupSet::read_control`]), which must agree with
//! the state (ids, kind, sequence, transaction range). Data files are never read here: an incremental or journal hot
//! copy needs `control/` only. Every failure names the file.
//!
//! # Writing (FORMAT.md, "Ordering invariants")
//! 1. A full hot copy writes `state` listing the full as in progress, and creates `tmp/`, before anything is copied.
//! 2. An element is built in `tmp/<element id>/` (`data/` by the copier, each file and directory fsynced), then its
//!    `control/manifest`, `control/catalog`, `control/element` by atomic write, then its directories are fsynced.
//! 3. It is renamed to its name, the set's directory fsynced, and only then the state rewritten with it completed.
//! 4. An abort removes `tmp/<element id>` and the in-progress entry. A crash may leave either (or an element
//!    directory renamed but not completed in the state): the next hot copy of the set removes them
//!    (when it begins its element), sparing the elements of jobs running in this process.
//!
//! Jobs of one process that write the same set (a journal hot copy beside a full or incremental) serialise their
//! state rewrites on a per-set lock; one process owns a set at a time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use backset_format::dirfd::{is_link, remove_empty_dir, DirFd, EntryKind};
use backset_format::fsio::{read_metadata, sync_dir, write_metadata, TMP_FILE_PREFIX};
use backset_format::layout::{
    ElementName, CATALOG_FILE, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, MANIFEST_FILE, STATE_FILE, TMP_DIR,
};
use backset_format::{
    Catalog, ElementEntry, ElementInfo, ElementKind, ElementStatus, Manifest, ReadError, State, WriteError,
};
use uuid::Uuid;

/// Why a backup set could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The directory holds no `state` file.
    #[error("{dir} is not a backup set: it has no `state` file; give the directory of a backup set")]
    NotASet {
        /// The directory.
        dir: PathBuf,
    },
    /// A metadata file is damaged, missing or not a regular file (the error names it).
    #[error("{source}; run `backset check` on the backup set")]
    Read {
        /// The reader's error, naming the file.
        #[from]
        source: ReadError,
    },
    /// A metadata file could not be written.
    #[error("{source}")]
    Write {
        /// The writer's error, naming the file.
        #[from]
        source: WriteError,
    },
    /// A file or directory of the set could not be created, renamed, removed or listed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A directory of the set is a symbolic link, or not a directory: never followed, never removed, and every hot
    /// copy into the set is refused until it is gone.
    #[error(
        "{path} is {what} where a directory of the backup set belongs (a backup set never contains links); hot \
         copies into this set are refused and nothing under it was touched: run `backset check` on the set, remove \
         {path} (`rm` removes a link, not what it leads to), and run the hot copy again"
    )]
    Link {
        /// The link (or other non-directory).
        path: PathBuf,
        /// `a symbolic link` or `not a directory`.
        what: &'static str,
    },
    /// The control files of an element disagree with the state or with each other.
    #[error("{path}: {reason}; the backup set is damaged or was edited by hand, run `backset check` on it")]
    Inconsistent {
        /// The file that disagrees.
        path: PathBuf,
        /// How.
        reason: String,
    },
    /// The set belongs to another database or archive.
    #[error("backup set {dir} holds {set}, not {archive}; give each archive its own backup set")]
    Foreign {
        /// The set.
        dir: PathBuf,
        /// Whose the set is: `archive <id> of database <name> (<id>)`.
        set: String,
        /// The archive being copied, likewise.
        archive: String,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetError {
    let path = path.to_path_buf();
    move |source| SetError::Io { op, path, source }
}

/// Opens the directory `name` of the set below `parent` without following a link: a link (or anything but a
/// directory) there is [`SetError::Link`].
fn open_set_dir(parent: &DirFd, name: impl AsRef<Path>) -> Result<DirFd, SetError> {
    let name = name.as_ref();
    parent.open_dir(name).map_err(|source| {
        let path = parent.join(name);
        if is_link(&source) {
            SetError::Link { path, what: "a symbolic link" }
        } else if source.kind() == ErrorKind::NotADirectory {
            SetError::Link { path, what: "not a directory" }
        } else {
            SetError::Io { op: "open directory", path, source }
        }
    })
}

/// The control files of one element, checked against the state and each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementControl {
    /// The state's entry.
    pub entry: ElementEntry,
    /// `control/element`.
    pub info: ElementInfo,
    /// `control/manifest`.
    pub manifest: Manifest,
    /// `control/catalog`.
    pub catalog: Catalog,
}

/// A backup set as read from disk: its directory and its `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    dir: PathBuf,
    state: State,
}

impl BackupSet {
    /// Reads `dir/state`. [`SetError::NotASet`] when there is none.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SetError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(STATE_FILE);
        match read_metadata::<State>(&path) {
            Ok(state) => Ok(Self { dir, state }),
            Err(ReadError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Err(SetError::NotASet { dir }),
            Err(e) => Err(e.into()),
        }
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state as read.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The completed elements, in the order they were started.
    pub fn completed(&self) -> impl Iterator<Item = &ElementEntry> {
        self.state.elements.iter().filter(|e| e.status == ElementStatus::Completed)
    }

    /// The full's entry (in progress or completed), if the set has one.
    pub fn full(&self) -> Option<&ElementEntry> {
        self.state.elements.iter().find(|e| e.kind == ElementKind::Full)
    }

    /// The completed element called `name`.
    pub fn element(&self, name: ElementName) -> Option<&ElementEntry> {
        self.completed().find(|e| e.name() == name)
    }

    /// The newest completed full or incremental: what an incremental builds on and what a restore to its E or later
    /// starts from.
    pub fn newest_base(&self) -> Option<&ElementEntry> {
        self.completed()
            .filter(|e| e.kind != ElementKind::Journal)
            .max_by_key(|e| (e.kind == ElementKind::Incremental, e.sequence))
    }

    /// The newest completed journal element.
    pub fn newest_journal(&self) -> Option<&ElementEntry> {
        self.completed().filter(|e| e.kind == ElementKind::Journal).max_by_key(|e| e.sequence)
    }

    /// The directory of an element: `<set>/<name>`.
    pub fn element_dir(&self, entry: &ElementEntry) -> PathBuf {
        self.dir.join(entry.name().to_string())
    }

    /// The first transaction the next journal element starts at: the newest completed journal element's E + 1, or
    /// the full's R when there is none (the full may still be in progress). `None` without a full.
    pub fn next_journal_start(&self) -> Option<u64> {
        match self.newest_journal() {
            Some(j) => Some(j.txn_range.last + 1),
            None => self.full().map(|f| f.txn_range.first),
        }
    }

    /// The highest transaction a restore of this set can reach: the larger of the newest completed full or
    /// incremental's E and the last transaction of the journal chain that runs contiguously from the full's R.
    /// `None` without a completed full or incremental.
    pub fn restorable_max(&self) -> Option<u64> {
        let base = self.newest_base()?.txn_range.last;
        let full = self.full()?;
        let mut journals: Vec<&ElementEntry> = self.completed().filter(|e| e.kind == ElementKind::Journal).collect();
        journals.sort_by_key(|e| e.sequence);
        let mut reach = full.txn_range.first.checked_sub(1);
        for j in journals {
            let next = reach.map_or(0, |r| r + 1);
            if j.txn_range.first > next {
                break;
            }
            reach = Some(reach.map_or(j.txn_range.last, |r| r.max(j.txn_range.last)));
        }
        Some(reach.map_or(base, |r| r.max(base)))
    }

    /// Reads and cross-checks the control files of `entry` (which must be completed): element info, manifest and
    /// catalog must name the entry's element id, and the info its kind, sequence and transaction range.
    pub fn read_control(&self, entry: &ElementEntry) -> Result<ElementControl, SetError> {
        let control = self.element_dir(entry).join(CONTROL_DIR);
        let info_path = control.join(ELEMENT_INFO_FILE);
        let info: ElementInfo = read_metadata(&info_path)?;
        let mismatch = |path: &Path, reason: String| SetError::Inconsistent { path: path.to_path_buf(), reason };
        if info.element_id != entry.element_id {
            return Err(mismatch(
                &info_path,
                format!("names element {}, the state lists {} as {}", info.element_id, entry.element_id, entry.name()),
            ));
        }
        if (info.kind, info.sequence, info.txn_range) != (entry.kind, entry.sequence, entry.txn_range) {
            return Err(mismatch(
                &info_path,
                format!(
                    "says {} #{} [{}, {}], the state says {} #{} [{}, {}]",
                    info.kind.name(),
                    info.sequence,
                    info.txn_range.first,
                    info.txn_range.last,
                    entry.kind.name(),
                    entry.sequence,
                    entry.txn_range.first,
                    entry.txn_range.last
                ),
            ));
        }
        let manifest_path = control.join(MANIFEST_FILE);
        let manifest: Manifest = read_metadata(&manifest_path)?;
        if manifest.element_id != entry.element_id {
            return Err(mismatch(
                &manifest_path,
                format!("names element {}, expected {}", manifest.element_id, entry.element_id),
            ));
        }
        let catalog_path = control.join(CATALOG_FILE);
        let catalog: Catalog = read_metadata(&catalog_path)?;
        if catalog.element_id != entry.element_id {
            return Err(mismatch(
                &catalog_path,
                format!("names element {}, expected {}", catalog.element_id, entry.element_id),
            ));
        }
        Ok(ElementControl { entry: entry.clone(), info, manifest, catalog })
    }
}

/// What this process knows of one set: the lock its state rewrites take and the elements its running jobs build.
#[derive(Debug, Default)]
struct SetSlot {
    lock: Mutex<()>,
    live: Mutex<HashSet<Uuid>>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<SetSlot>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<SetSlot>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a directory holds, for the "absent or empty" rule of a full hot copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirContent {
    /// Absent.
    Absent,
    /// An empty directory, or a set without any element that a failed or crashed full left (its state lists no
    /// element, or only in-progress ones that no job of this process builds; `tmp/`).
    Empty,
    /// A file (or anything else that is not a directory).
    NotADirectory,
    /// Any other directory: a short description of what it holds.
    Other(String),
}

/// Looks at `dir` for a full hot copy: absent, empty (or an element-less set), or something else.
pub(crate) fn dir_content(dir: &Path) -> Result<DirContent, SetError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DirContent::Absent),
        Err(e) => return Err(SetError::Io { op: "stat", path: dir.to_path_buf(), source: e }),
        Ok(md) if !md.is_dir() => return Ok(DirContent::NotADirectory),
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if names.is_empty() {
        return Ok(DirContent::Empty);
    }
    // An element directory the state does not list as completed is a leftover too: a full killed between moving
    // its element into place and rewriting the state (tests/crash.rs, a killed full at mid-move).
    let leftover_only = names
        .iter()
        .all(|n| n == STATE_FILE || n == TMP_DIR || n.starts_with(TMP_FILE_PREFIX) || n.parse::<ElementName>().is_ok());
    if leftover_only && names.iter().any(|n| n == STATE_FILE) {
        if let Ok(set) = BackupSet::open(dir) {
            // Elements in progress that no job of this process builds were left by a crash: not elements.
            let live = fs::canonicalize(dir)
                .ok()
                .and_then(|d| lock(registry()).get(&d).map(|slot| lock(&slot.live).clone()))
                .unwrap_or_default();
            let real = set
                .state
                .elements
                .iter()
                .filter(|e| e.status == ElementStatus::Completed || live.contains(&e.element_id))
                .count();
            if real == 0 {
                return Ok(DirContent::Empty);
            }
            return Ok(DirContent::Other(format!("a backup set with {real} element(s)")));
        }
    }
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    Ok(DirContent::Other(format!(
        "{} entries: {}{}",
        names.len(),
        shown.join(", "),
        if names.len() > 5 { ", ..." } else { "" }
    )))
}

/// A backup set being written by this process's jobs.
#[derive(Debug, Clone)]
pub(crate) struct SetHandle {
    dir: PathBuf,
    slot: Arc<SetSlot>,
}

/// An element begun in `tmp/`.
#[derive(Debug, Clone)]
pub(crate) struct Begun {
    /// The state entry (in progress).
    pub entry: ElementEntry,
    /// `tmp/<element id>`.
    pub tmp: PathBuf,
}

impl SetHandle {
    /// The handle of the set in `dir`, which must exist.
    pub fn new(dir: &Path) -> Result<Self, SetError> {
        let canonical = fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
        let slot = Arc::clone(lock(registry()).entry(canonical.clone()).or_default());
        Ok(Self { dir: canonical, slot })
    }

    fn tmp_root(&self) -> PathBuf {
        self.dir.join(TMP_DIR)
    }

    /// Opens the set's directory and checks, without following any link, every directory a hot copy works in:
    /// `tmp/` and each element directory with its `control/`, `data/`, `data/atoms/` and `data/journal/`. A link
    /// (or a non-directory) in place of one refuses the hot copy ([`SetError::Link`]) before anything is written or
    /// removed.
    fn open_checked(&self) -> Result<DirFd, SetError> {
        let set = DirFd::open(&self.dir).map_err(io_err("open directory", &self.dir))?;
        for name in set.names().map_err(io_err("read directory", &self.dir))? {
            let Some(name) = name.to_str() else { continue };
            if name == TMP_DIR {
                open_set_dir(&set, TMP_DIR)?;
            } else if name.parse::<ElementName>().is_ok() {
                if set.entry(name).map_err(io_err("stat", &set.join(name)))? == Some(EntryKind::Symlink) {
                    return Err(SetError::Link { path: set.join(name), what: "a symbolic link" });
                }
                let Ok(element) = set.open_dir(name) else { continue };
                for sub in [CONTROL_DIR, DATA_DIR] {
                    if element.entry(sub).map_err(io_err("stat", &element.join(sub)))?.is_none() {
                        continue;
                    }
                    let dir = open_set_dir(&element, sub)?;
                    if sub == DATA_DIR {
                        for d in [backset_format::layout::ATOMS_DIR, backset_format::layout::JOURNAL_DIR] {
                            if dir.entry(d).map_err(io_err("stat", &dir.join(d)))?.is_some() {
                                open_set_dir(&dir, d)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(set)
    }

    /// Reads the state.
    pub fn read(&self) -> Result<BackupSet, SetError> {
        BackupSet::open(&self.dir)
    }

    /// Initialises the set of a full hot copy: writes `state` (with the full's in-progress entry) durably and
    /// creates `tmp/` and `tmp/<element id>/data`. The directory must exist and be empty or an element-less set.
    pub fn init(&self, state: &State) -> Result<Begun, SetError> {
        let _g = lock(&self.slot.lock);
        let entry = state.elements.first().cloned().ok_or_else(|| SetError::Inconsistent {
            path: self.dir.join(STATE_FILE),
            reason: "a new set's state must list its full".into(),
        })?;
        lock(&self.slot.live).insert(entry.element_id);
        let result = (|| {
            let set = self.open_checked()?;
            // A set a failed or crashed full left behind: clear its tmp/ first (nothing in it is live: the type rule
            // allows one full per archive, and a journal hot copy needs a full entry, which the set had not).
            remove_in(&set, TMP_DIR)?;
            // And the element directories it moved into place without the state saying completed (the caller
            // checked that the state lists no completed element).
            for name in set.names().map_err(io_err("read directory", &self.dir))? {
                if name.to_str().is_some_and(|n| n.parse::<ElementName>().is_ok()) {
                    remove_in(&set, &name)?;
                }
            }
            write_metadata(&self.dir, STATE_FILE, state)?;
            self.make_tmp(&set, &entry)
        })();
        if result.is_err() {
            lock(&self.slot.live).remove(&entry.element_id);
        }
        result
    }

    /// Creates `tmp/` (when absent) and `tmp/<element id>/data` below the set's open directory, never through a
    /// link.
    fn make_tmp(&self, set: &DirFd, entry: &ElementEntry) -> Result<Begun, SetError> {
        let tmp_root = self.tmp_root();
        let tmp_dir = if set.entry(TMP_DIR).map_err(io_err("stat", &tmp_root))?.is_none() {
            let d = set.create_dir(TMP_DIR).map_err(io_err("create directory", &tmp_root))?;
            set.sync().map_err(io_err("fsync directory", &self.dir))?;
            d
        } else {
            open_set_dir(set, TMP_DIR)?
        };
        let name = entry.element_id.to_string();
        let tmp = tmp_root.join(&name);
        let element = tmp_dir.create_dir(&name).map_err(io_err("create directory", &tmp))?;
        element.create_dir(DATA_DIR).map_err(io_err("create directory", &tmp.join(DATA_DIR)))?;
        element.sync().map_err(io_err("fsync directory", &tmp))?;
        tmp_dir.sync().map_err(io_err("fsync directory", &tmp_root))?;
        Ok(Begun { entry: entry.clone(), tmp })
    }

    /// Begins an element in an existing set: under the set's lock, `make` sees the state (after the leftovers of a
    /// crash are gone) and returns the entry to add (in progress), or refuses; the entry is added to the state
    /// durably and `tmp/<element id>/data` is created.
    pub fn begin<E: From<SetError>>(
        &self,
        make: impl FnOnce(&BackupSet) -> Result<ElementEntry, E>,
    ) -> Result<Begun, E> {
        let _g = lock(&self.slot.lock);
        let dir = self.clean_locked()?;
        let set = self.read()?;
        let entry = make(&set)?;
        let mut state = set.state;
        state.elements.push(entry.clone());
        lock(&self.slot.live).insert(entry.element_id);
        let result = (|| {
            write_metadata(&self.dir, STATE_FILE, &state)?;
            self.make_tmp(&dir, &entry)
        })();
        if result.is_err() {
            lock(&self.slot.live).remove(&entry.element_id);
        }
        result.map_err(E::from)
    }

    /// Removes what a crashed job left: `tmp/` entries and in-progress state entries that no running job of this
    /// process owns, element directories the state does not list as completed, stray atomic-write temporaries.
    /// Returns the set's directory, opened and checked ([`open_checked`](Self::open_checked)). Called with the
    /// set's lock held.
    fn clean_locked(&self) -> Result<DirFd, SetError> {
        let set = self.open_checked()?;
        let live = lock(&self.slot.live).clone();
        let mut removed = Vec::new();
        let mut state = self.read()?.state;
        let before = state.elements.len();
        state.elements.retain(|e| {
            let keep = e.status == ElementStatus::Completed || live.contains(&e.element_id);
            if !keep {
                removed.push(format!("state entry {} ({})", e.name(), e.element_id));
            }
            keep
        });
        if state.elements.len() != before {
            write_metadata(&self.dir, STATE_FILE, &state)?;
        }
        let completed: HashSet<ElementName> =
            state.elements.iter().filter(|e| e.status == ElementStatus::Completed).map(|e| e.name()).collect();
        for name in set.names().map_err(io_err("read directory", &self.dir))? {
            let name = name.to_string_lossy().into_owned();
            let leftover = name.starts_with(TMP_FILE_PREFIX)
                || name.parse::<ElementName>().is_ok_and(|element| !completed.contains(&element));
            if leftover {
                remove_in(&set, &name)?;
                removed.push(name);
            }
        }
        if set.entry(TMP_DIR).map_err(io_err("stat", &self.tmp_root()))?.is_some() {
            let tmp = open_set_dir(&set, TMP_DIR)?;
            for name in tmp.names().map_err(io_err("read directory", &self.tmp_root()))? {
                let name = name.to_string_lossy().into_owned();
                let is_live = name.parse::<Uuid>().is_ok_and(|id| live.contains(&id));
                if !is_live {
                    remove_in(&tmp, &name)?;
                    removed.push(format!("{TMP_DIR}/{name}"));
                }
            }
            tmp.sync().map_err(io_err("fsync directory", &self.tmp_root()))?;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
            tracing::warn!(set = %self.dir.display(), ?removed, "removed the leftovers of an interrupted hot copy");
        }
        Ok(set)
    }

    /// Writes the control files of a begun element and makes the whole `tmp/<id>` durable (FORMAT.md step 2).
    pub fn write_control(
        &self,
        begun: &Begun,
        manifest: &Manifest,
        catalog: &Catalog,
        info: &ElementInfo,
    ) -> Result<(), SetError> {
        let control = begun.tmp.join(CONTROL_DIR);
        fs::create_dir(&control).map_err(io_err("create directory", &control))?;
        write_metadata(&control, MANIFEST_FILE, manifest)?;
        write_metadata(&control, CATALOG_FILE, catalog)?;
        write_metadata(&control, ELEMENT_INFO_FILE, info)?;
        let data = begun.tmp.join(DATA_DIR);
        for sub in [backset_format::layout::ATOMS_DIR, backset_format::layout::JOURNAL_DIR] {
            let d = data.join(sub);
            if d.is_dir() {
                sync_dir(&d)?;
            }
        }
        sync_dir(&data)?;
        sync_dir(&begun.tmp)?;
        sync_dir(&self.tmp_root())?;
        Ok(())
    }

    /// Moves a prepared element into place and records it completed with range `[first, last]` (FORMAT.md step 3):
    /// rename `tmp/<id>` to its name, call `after_rename` (the test-only `mid-move` pause), fsync `tmp/` and the
    /// set's directory, then rewrite the state.
    pub fn commit(
        &self,
        begun: &Begun,
        txn_range: backset_format::TxnRange,
        end_micros: u64,
        after_rename: impl FnOnce(),
    ) -> Result<(), SetError> {
        // Under the set's lock from the rename to the state rewrite, so that another job's clean-up never sees the
        // element in place but not completed.
        let _g = lock(&self.slot.lock);
        let id = begun.entry.element_id;
        let target = self.dir.join(begun.entry.name().to_string());
        if fs::symlink_metadata(&target).is_ok() {
            return Err(SetError::Inconsistent {
                path: target,
                reason: "already exists although the state does not list it as completed".into(),
            });
        }
        fs::rename(&begun.tmp, &target).map_err(io_err("rename", &begun.tmp))?;
        after_rename();
        let result = (|| {
            sync_dir(&self.tmp_root())?;
            sync_dir(&self.dir)?;
            let mut state = self.read()?.state;
            let e = state.elements.iter_mut().find(|e| e.element_id == id).ok_or_else(|| SetError::Inconsistent {
                path: self.dir.join(STATE_FILE),
                reason: format!("the in-progress entry of element {id} vanished while it was being built"),
            })?;
            e.status = ElementStatus::Completed;
            e.txn_range = txn_range;
            e.end_micros = end_micros.max(e.begin_micros);
            write_metadata(&self.dir, STATE_FILE, &state)?;
            Ok(())
        })();
        if result.is_err() {
            // Not completed in the state: the directory is not an element. Move it back so the abort removes it.
            let _ = fs::rename(&target, &begun.tmp);
        } else {
            lock(&self.slot.live).remove(&id);
        }
        result
    }

    /// Aborts a begun element: removes `tmp/<id>` and its in-progress entry, so the set is as valid as before. A
    /// full also takes with it the journal elements completed into its set while it ran (they continue from it, and
    /// nothing restores without it): the state first, then their directories. For a full whose set then lists no
    /// element, also removes `state` and `tmp/` (and the directory when `remove_dir` and it is empty), so the
    /// directory is as it was before the hot copy.
    pub fn abort(&self, begun: &Begun, remove_dir: bool) -> Result<(), SetError> {
        let _g = lock(&self.slot.lock);
        let id = begun.entry.element_id;
        lock(&self.slot.live).remove(&id);
        let set = DirFd::open(&self.dir).map_err(io_err("open directory", &self.dir))?;
        if set.entry(TMP_DIR).map_err(io_err("stat", &self.tmp_root()))?.is_some() {
            let tmp = open_set_dir(&set, TMP_DIR)?;
            remove_in(&tmp, id.to_string())?;
            tmp.sync().map_err(io_err("fsync directory", &self.tmp_root()))?;
        }
        let mut state = self.read()?.state;
        let before = state.elements.len();
        state.elements.retain(|e| e.element_id != id || e.status == ElementStatus::Completed);
        let mut dropped = Vec::new();
        if begun.entry.kind == ElementKind::Full {
            state.elements.retain(|e| {
                let built_on_it = e.kind == ElementKind::Journal && e.status == ElementStatus::Completed;
                if built_on_it {
                    dropped.push(self.dir.join(e.name().to_string()));
                }
                !built_on_it
            });
        }
        if !dropped.is_empty() {
            tracing::warn!(
                set = %self.dir.display(), removed = ?dropped,
                "the full hot copy did not complete: removing the journal elements taken into its set while it ran \
                 (journal hot copies continue in the set that had them before)"
            );
        }
        let remove_dropped = || -> Result<(), SetError> {
            for d in &dropped {
                remove_in(&set, d.file_name().expect("an element directory has a name"))?;
            }
            Ok(())
        };
        let unused = state.elements.is_empty() && lock(&self.slot.live).is_empty();
        if begun.entry.kind == ElementKind::Full && unused {
            remove_in(&set, STATE_FILE)?;
            remove_dropped()?;
            remove_in(&set, TMP_DIR)?;
            sync_dir(&self.dir)?;
            if remove_dir && remove_empty_dir(&self.dir).is_ok() {
                if let Some(parent) = self.dir.parent() {
                    sync_dir(parent)?;
                }
            }
        } else if state.elements.len() != before {
            write_metadata(&self.dir, STATE_FILE, &state)?;
            if !dropped.is_empty() {
                remove_dropped()?;
                sync_dir(&self.dir)?;
            }
        }
        Ok(())
    }
}

/// Removes the file or directory tree `name` of the set directory `dir` ([`DirFd::remove_tree`]: never following a
/// link, nothing outside `dir`).
fn remove_in(dir: &DirFd, name: impl AsRef<Path>) -> Result<(), SetError> {
    let name = name.as_ref();
    dir.remove_tree(name).map_err(io_err("remove", &dir.join(name)))
}

/// Reads the header of a copied atom file (its first bytes), for its LSN.
pub(crate) fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}
