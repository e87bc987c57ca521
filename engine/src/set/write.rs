//! The writer the hot copy jobs use ([`SetWriter`]): initialise a set, begin, finish and abort an element, clean
//! the leftovers of a crash. What it reads of the set it reads through [`BackupSet`] (strict: an incremental or
//! journal hot copy builds only on a set restore and check would accept, and needs `control/` only).
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
use backset_format::fsio::{sync_dir, write_metadata};
use backset_format::layout::{
    ElementName, CATALOG_FILE, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, MANIFEST_FILE, STATE_FILE, TMP_DIR,
};
use backset_format::{Catalog, ElementEntry, ElementInfo, ElementKind, ElementStatus, Manifest, State};
use uuid::Uuid;

use super::layout::{top_entry, TopEntry, DATA_DIRS, ELEMENT_ENTRIES};
use super::{read_state, BackupSet, SetError};

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetError {
    let path = path.to_path_buf();
    move |source| SetError::Io { op, path, source }
}

/// Opens the directory `name` of the set below `parent` without following a link: a link (or anything but a
/// directory) there is [`SetError::Link`] (part of `element`, if any).
fn open_set_dir(parent: &DirFd, name: impl AsRef<Path>, element: Option<ElementName>) -> Result<DirFd, SetError> {
    let name = name.as_ref();
    parent.open_dir(name).map_err(|source| {
        let path = parent.join(name);
        if is_link(&source) {
            SetError::Link { path, element, what: "a symbolic link" }
        } else if source.kind() == ErrorKind::NotADirectory {
            SetError::Link { path, element, what: "not a directory" }
        } else {
            SetError::Io { op: "open directory", path, source }
        }
    })
}

/// Reads the state of the set the writer works in.
fn state_of(dir: &Path) -> Result<State, SetError> {
    read_state(dir)
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
    let leftover_only = names.iter().all(|n| top_entry(n) != TopEntry::Foreign);
    if leftover_only && names.iter().any(|n| n == STATE_FILE) {
        if let Ok(state) = state_of(dir) {
            // Elements in progress that no job of this process builds were left by a crash: not elements.
            let live = fs::canonicalize(dir)
                .ok()
                .and_then(|d| lock(registry()).get(&d).map(|slot| lock(&slot.live).clone()))
                .unwrap_or_default();
            let real = state
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
pub(crate) struct SetWriter {
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

impl SetWriter {
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
            match top_entry(name) {
                TopEntry::Tmp => {
                    open_set_dir(&set, TMP_DIR, None)?;
                }
                TopEntry::Element(element_name) => {
                    let element_name = Some(element_name);
                    if set.entry(name).map_err(io_err("stat", &set.join(name)))? == Some(EntryKind::Symlink) {
                        return Err(SetError::Link {
                            path: set.join(name),
                            element: element_name,
                            what: "a symbolic link",
                        });
                    }
                    let Ok(element) = set.open_dir(name) else { continue };
                    for sub in ELEMENT_ENTRIES {
                        if element.entry(sub).map_err(io_err("stat", &element.join(sub)))?.is_none() {
                            continue;
                        }
                        let dir = open_set_dir(&element, sub, element_name)?;
                        if sub == DATA_DIR {
                            for d in DATA_DIRS {
                                if dir.entry(d).map_err(io_err("stat", &dir.join(d)))?.is_some() {
                                    open_set_dir(&dir, d, element_name)?;
                                }
                            }
                        }
                    }
                }
                TopEntry::State | TopEntry::WriteLeftover | TopEntry::Foreign => {}
            }
        }
        Ok(set)
    }

    /// Reads the state.
    pub fn read_state(&self) -> Result<State, SetError> {
        state_of(&self.dir)
    }

    /// Initialises the set of a full hot copy: writes `state` (with the full's in-progress entry) durably and
    /// creates `tmp/` and `tmp/<element id>/data`. The directory must exist and be empty or an element-less set.
    pub fn init(&self, state: &State) -> Result<Begun, SetError> {
        let _g = lock(&self.slot.lock);
        let entry = state.elements.first().cloned().ok_or_else(|| SetError::Conflict {
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
                if name.to_str().is_some_and(|n| matches!(top_entry(n), TopEntry::Element(_))) {
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
            open_set_dir(set, TMP_DIR, None)?
        };
        let name = entry.element_id.to_string();
        let tmp = tmp_root.join(&name);
        let element = tmp_dir.create_dir(&name).map_err(io_err("create directory", &tmp))?;
        element.create_dir(DATA_DIR).map_err(io_err("create directory", &tmp.join(DATA_DIR)))?;
        element.sync().map_err(io_err("fsync directory", &tmp))?;
        tmp_dir.sync().map_err(io_err("fsync directory", &tmp_root))?;
        Ok(Begun { entry: entry.clone(), tmp })
    }

    /// Begins an element in an existing set: under the set's lock, `make` sees the set (after the leftovers of a
    /// crash are gone) and returns the entry to add (in progress), or refuses; the entry is added to the state
    /// durably and `tmp/<element id>/data` is created. `read` is the set as the caller read it (strictly, before
    /// anything was written): it is read again when its state changed since (another job of this process
    /// completed an element, or the clean-up removed an entry).
    pub fn begin<E: From<SetError>>(
        &self,
        read: BackupSet,
        make: impl FnOnce(&BackupSet) -> Result<ElementEntry, E>,
    ) -> Result<Begun, E> {
        let _g = lock(&self.slot.lock);
        let dir = self.clean_locked()?;
        let set = if self.read_state()? == *read.state() { read } else { BackupSet::open(&self.dir)? };
        let entry = make(&set)?;
        let mut state = set.state().clone();
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
        let mut state = self.read_state()?;
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
            let leftover = match top_entry(&name) {
                TopEntry::WriteLeftover => true,
                TopEntry::Element(element) => !completed.contains(&element),
                TopEntry::State | TopEntry::Tmp | TopEntry::Foreign => false,
            };
            if leftover {
                remove_in(&set, &name)?;
                removed.push(name);
            }
        }
        if set.entry(TMP_DIR).map_err(io_err("stat", &self.tmp_root()))?.is_some() {
            let tmp = open_set_dir(&set, TMP_DIR, None)?;
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
        for sub in DATA_DIRS {
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
            return Err(SetError::Conflict {
                path: target,
                reason: "already exists although the state does not list it as completed".into(),
            });
        }
        fs::rename(&begun.tmp, &target).map_err(io_err("rename", &begun.tmp))?;
        after_rename();
        let result = (|| {
            sync_dir(&self.tmp_root())?;
            sync_dir(&self.dir)?;
            let mut state = self.read_state()?;
            let e = state.elements.iter_mut().find(|e| e.element_id == id).ok_or_else(|| SetError::Conflict {
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
            let tmp = open_set_dir(&set, TMP_DIR, None)?;
            remove_in(&tmp, id.to_string())?;
            tmp.sync().map_err(io_err("fsync directory", &self.tmp_root()))?;
        }
        let mut state = self.read_state()?;
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
