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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use backset_format::dirfd::EntryKind;
use backset_format::layout::{
    ElementName, CATALOG_FILE, CONTROL_DIR, ELEMENT_INFO_FILE, MANIFEST_FILE, STATE_FILE, TMP_DIR,
};
use backset_format::meta::{self, Metadata};
use backset_format::{Catalog, ElementEntry, ElementInfo, ElementKind, ElementStatus, Manifest, State, WriteError};
use uuid::Uuid;

use super::layout::{top_entry, TopEntry};
use super::read::read_state_in;
use super::storage::{LocalDir, SetStorage};
use super::{read_state, BackupSet, SetError};

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetError {
    let path = path.to_path_buf();
    move |source| SetError::Io { op, path, source }
}

/// Reads the state of the set in the local directory `dir`.
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

/// The key of the set at `dir` in the registry: its canonical path, or its `s3://` URL as written.
fn registry_key(dir: &Path) -> Result<PathBuf, SetError> {
    match super::object::s3_location(dir) {
        Some(url) => Ok(PathBuf::from(url?.to_string())),
        None => fs::canonicalize(dir).map_err(io_err("resolve", dir)),
    }
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
    if let Some(url) = super::object::s3_location(dir) {
        // A prefix exists only through its objects: "empty" is no object that counts (unpublished objects of jobs
        // that did not complete do not), and no element in progress here.
        let store = super::object::object_store(&url?)?;
        super::object::probe(&store)?;
        if let Some(what) = super::object::prefix_content(&store)? {
            return Ok(DirContent::Other(what));
        }
        let state = store.derived_state().map_err(|source| SetError::Metadata {
            set: dir.to_path_buf(),
            element: None,
            source,
        })?;
        let live = lock(registry()).get(&registry_key(dir)?).map(|slot| lock(&slot.live).clone()).unwrap_or_default();
        let running = state.map_or(0, |s| s.elements.iter().filter(|e| live.contains(&e.element_id)).count());
        if running > 0 {
            return Ok(DirContent::Other(format!("a backup set with {running} element(s) in progress")));
        }
        return Ok(DirContent::Empty);
    }
    let storage = LocalDir::new(dir);
    match storage.kind(Path::new("")) {
        Ok(None) => return Ok(DirContent::Absent),
        Err(e) => return Err(SetError::Io { op: "stat", path: dir.to_path_buf(), source: e }),
        Ok(Some(EntryKind::Dir(_))) => {}
        Ok(Some(_)) => return Ok(DirContent::NotADirectory),
    }
    let listed = storage.list(Path::new("")).map_err(io_err("read directory", dir))?;
    let mut names: Vec<String> = listed.iter().map(|n| n.to_string_lossy().into_owned()).collect();
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

/// A backup set being written by this process's jobs, through its storage.
#[derive(Debug, Clone)]
pub(crate) struct SetWriter {
    dir: PathBuf,
    storage: Arc<dyn SetStorage>,
    slot: Arc<SetSlot>,
}

/// An element begun (staged: `tmp/<element id>/` in a local directory).
#[derive(Debug, Clone)]
pub(crate) struct Begun {
    /// The state entry (in progress).
    pub entry: ElementEntry,
    /// Where it is staged, relative to the set.
    staged: PathBuf,
    /// Where the copier writes its files (`<staged>/data/...`): the staged element as a local directory.
    pub tmp: PathBuf,
}

/// A metadata value encoded for writing (checked against the format's rules first): `(name, bytes)`.
fn encoded<T: Metadata>(dir: &Path, name: &'static str, value: &T) -> Result<(&'static str, Vec<u8>), SetError> {
    let bytes = meta::encode(value).map_err(|source| WriteError::Metadata { path: dir.join(name), source })?;
    Ok((name, bytes))
}

impl SetWriter {
    /// The handle of the set in `dir`, which must exist.
    pub fn new(dir: &Path) -> Result<Self, SetError> {
        let key = registry_key(dir)?;
        let slot = Arc::clone(lock(registry()).entry(key.clone()).or_default());
        let storage: Arc<dyn SetStorage> = match super::object::s3_location(dir) {
            Some(url) => super::object::object_store(&url?)?,
            None => Arc::new(LocalDir::new(&key)),
        };
        Ok(Self { storage, dir: key, slot })
    }

    /// Reads the state.
    pub fn read_state(&self) -> Result<State, SetError> {
        read_state_in(&*self.storage)
    }

    /// Writes the state (atomically, durably).
    fn write_state(&self, state: &State) -> Result<(), SetError> {
        let (name, bytes) = encoded(&self.dir, STATE_FILE, state)?;
        Ok(self.storage.write_metadata(Path::new(""), name, &bytes)?)
    }

    /// Initialises the set of a full hot copy: writes `state` (with the full's in-progress entry) durably and
    /// stages the full. The directory must exist and be empty or an element-less set.
    pub fn init(&self, state: &State) -> Result<Begun, SetError> {
        let _g = lock(&self.slot.lock);
        let entry = state.elements.first().cloned().ok_or_else(|| SetError::Conflict {
            path: self.dir.join(STATE_FILE),
            reason: "a new set's state must list its full".into(),
        })?;
        lock(&self.slot.live).insert(entry.element_id);
        let result = (|| {
            self.storage.refuse_links()?;
            // A set a failed or crashed full left behind: clear its tmp/ first (nothing in it is live: the type rule
            // allows one full per archive, and a journal hot copy needs a full entry, which the set had not).
            self.storage.remove(Path::new(TMP_DIR))?;
            // And the element directories it moved into place without the state saying completed (the caller
            // checked that the state lists no completed element). On object storage an element is there only once
            // published, by whoever published it: never removed here.
            let listed = if self.storage.is_local() {
                self.storage.list(Path::new("")).map_err(io_err("read directory", &self.dir))?
            } else {
                Vec::new()
            };
            for name in listed {
                if name.to_str().is_some_and(|n| matches!(top_entry(n), TopEntry::Element(_))) {
                    self.storage.remove(Path::new(&name))?;
                }
            }
            self.write_state(state)?;
            self.stage(&entry)
        })();
        if result.is_err() {
            lock(&self.slot.live).remove(&entry.element_id);
        }
        result
    }

    /// Stages a new element (`tmp/<element id>/data` in a local directory, `tmp/` created when absent).
    fn stage(&self, entry: &ElementEntry) -> Result<Begun, SetError> {
        let staged = self.storage.stage(entry.element_id, entry.name())?;
        Ok(Begun { entry: entry.clone(), tmp: self.storage.copier_path(&staged), staged })
    }

    /// Begins an element in an existing set: under the set's lock, `make` sees the set (after the leftovers of a
    /// crash are gone) and returns the entry to add (in progress), or refuses; the entry is added to the state
    /// durably and the element is staged. `read` is the set as the caller read it (strictly, before anything was
    /// written): it is read again when its state changed since (another job of this process completed an element,
    /// or the clean-up removed an entry).
    pub fn begin<E: From<SetError>>(
        &self,
        read: BackupSet,
        make: impl FnOnce(&BackupSet) -> Result<ElementEntry, E>,
    ) -> Result<Begun, E> {
        let _g = lock(&self.slot.lock);
        self.clean_locked()?;
        let set =
            if self.read_state()? == *read.state() { read } else { BackupSet::open_in(Arc::clone(&self.storage))? };
        let entry = make(&set)?;
        let mut state = set.state().clone();
        state.elements.push(entry.clone());
        lock(&self.slot.live).insert(entry.element_id);
        let result = (|| {
            self.write_state(&state)?;
            self.stage(&entry)
        })();
        if result.is_err() {
            lock(&self.slot.live).remove(&entry.element_id);
        }
        result.map_err(E::from)
    }

    /// Removes what a crashed job left: staged elements and in-progress state entries that no running job of this
    /// process owns, element directories the state does not list as completed, stray atomic-write temporaries.
    /// Refuses the set first when a link stands where one of its directories belongs
    /// ([`SetStorage::refuse_links`]). Called with the set's lock held.
    fn clean_locked(&self) -> Result<(), SetError> {
        let storage = &*self.storage;
        storage.refuse_links()?;
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
            self.write_state(&state)?;
        }
        let completed: HashSet<ElementName> =
            state.elements.iter().filter(|e| e.status == ElementStatus::Completed).map(|e| e.name()).collect();
        for name in storage.list(Path::new("")).map_err(io_err("read directory", &self.dir))? {
            let name = name.to_string_lossy().into_owned();
            let leftover = match top_entry(&name) {
                TopEntry::WriteLeftover => true,
                TopEntry::Element(element) => !completed.contains(&element),
                TopEntry::State | TopEntry::Verification | TopEntry::Tmp | TopEntry::Foreign => false,
            };
            if leftover {
                storage.remove(Path::new(&name))?;
                removed.push(name);
            }
        }
        let tmp_root = Path::new(TMP_DIR);
        if storage.kind(tmp_root).map_err(io_err("stat", &self.dir.join(TMP_DIR)))?.is_some() {
            for name in storage.list(tmp_root).map_err(io_err("read directory", &self.dir.join(TMP_DIR)))? {
                let name = name.to_string_lossy().into_owned();
                let is_live = name.parse::<Uuid>().is_ok_and(|id| live.contains(&id));
                if !is_live {
                    storage.remove(&tmp_root.join(&name))?;
                    removed.push(format!("{TMP_DIR}/{name}"));
                }
            }
            storage.sync(tmp_root)?;
        }
        if !removed.is_empty() {
            storage.sync(Path::new(""))?;
            tracing::warn!(set = %self.dir.display(), ?removed, "removed the leftovers of an interrupted hot copy");
        }
        Ok(())
    }

    /// Whether the copier streams data files to the set's storage ([`stream_data`](Self::stream_data)) instead of
    /// writing them under [`Begun::tmp`].
    pub fn streams_data(&self) -> bool {
        self.storage.streams_data()
    }

    /// Runs the streaming copier job `copy` for `files` of `begun` (relative to `begun.tmp`): see
    /// [`SetStorage::stream_data`].
    pub fn stream_data(
        &self,
        begun: &Begun,
        files: &[PathBuf],
        ctl: &backset_copier::JobControl,
        copy: &mut dyn FnMut(
            &dyn backset_copier::ChunkSink,
        ) -> Result<backset_copier::JobReport, backset_copier::CopyError>,
    ) -> Result<Result<backset_copier::JobReport, backset_copier::CopyError>, SetError> {
        self.storage.stream_data(&begun.staged, files, ctl, copy)
    }

    /// Stores `files` of `begun` (relative to `begun.tmp`) from what `produce` reads: see
    /// [`SetStorage::store_data`].
    pub fn store_data(
        &self,
        begun: &Begun,
        files: &[PathBuf],
        ctl: &backset_copier::JobControl,
        produce: &mut super::storage::Produce<'_>,
    ) -> Result<(), SetError> {
        self.storage.store_data(&begun.staged, files, ctl, produce)
    }

    /// Writes the control files of a begun element and makes the whole staged element durable (FORMAT.md step 2).
    pub fn write_control(
        &self,
        begun: &Begun,
        manifest: &Manifest,
        catalog: &Catalog,
        info: &ElementInfo,
    ) -> Result<(), SetError> {
        let control = begun.tmp.join(CONTROL_DIR);
        let files = [
            encoded(&control, MANIFEST_FILE, manifest)?,
            encoded(&control, CATALOG_FILE, catalog)?,
            encoded(&control, ELEMENT_INFO_FILE, info)?,
        ];
        self.storage.seal(&begun.staged, &files)
    }

    /// Publishes a prepared element and records it completed with range `[first, last]` (FORMAT.md step 3): the
    /// storage publishes it (a local directory renames `tmp/<id>` to its name, calls `after_rename`, the test-only
    /// `mid-move` pause, and fsyncs `tmp/` and the set's directory), then the state is rewritten.
    pub fn commit(
        &self,
        begun: &Begun,
        txn_range: backset_format::TxnRange,
        end_micros: u64,
        after_rename: impl FnOnce(),
    ) -> Result<(), SetError> {
        // Under the set's lock from the publication to the state rewrite, so that another job's clean-up never sees
        // the element in place but not completed.
        let _g = lock(&self.slot.lock);
        let id = begun.entry.element_id;
        let name = begun.entry.name();
        let mut after = Some(after_rename);
        self.storage.publish(&begun.staged, name, &mut || {
            if let Some(f) = after.take() {
                f()
            }
        })?;
        let result = (|| {
            let mut state = self.read_state()?;
            let e = state.elements.iter_mut().find(|e| e.element_id == id).ok_or_else(|| SetError::Conflict {
                path: self.dir.join(STATE_FILE),
                reason: format!("the in-progress entry of element {id} vanished while it was being built"),
            })?;
            e.status = ElementStatus::Completed;
            e.txn_range = txn_range;
            e.end_micros = end_micros.max(e.begin_micros);
            self.write_state(&state)
        })();
        if result.is_err() {
            // Not completed in the state: the directory is not an element. Stage it again so the abort removes it.
            self.storage.unpublish(&begun.staged, name);
        } else {
            lock(&self.slot.live).remove(&id);
        }
        result
    }

    /// Aborts a begun element: removes the staged element and its in-progress entry, so the set is as valid as
    /// before. A full also takes with it the journal elements completed into its set while it ran (they continue
    /// from it, and nothing restores without it): the state first, then their directories. For a full whose set
    /// then lists no element, also removes `state` and `tmp/` (and the directory when `remove_dir` and it is
    /// empty), so the directory is as it was before the hot copy.
    pub fn abort(&self, begun: &Begun, remove_dir: bool) -> Result<(), SetError> {
        let _g = lock(&self.slot.lock);
        let storage = &*self.storage;
        let id = begun.entry.element_id;
        lock(&self.slot.live).remove(&id);
        let tmp_root = Path::new(TMP_DIR);
        if storage.kind(tmp_root).map_err(io_err("stat", &self.dir.join(TMP_DIR)))?.is_some() {
            storage.remove(&begun.staged)?;
            storage.sync(tmp_root)?;
        }
        let mut state = self.read_state()?;
        let before = state.elements.len();
        state.elements.retain(|e| e.element_id != id || e.status == ElementStatus::Completed);
        let mut dropped = Vec::new();
        if begun.entry.kind == ElementKind::Full {
            state.elements.retain(|e| {
                let built_on_it = e.kind == ElementKind::Journal && e.status == ElementStatus::Completed;
                if built_on_it {
                    dropped.push(e.name().to_string());
                }
                !built_on_it
            });
        }
        if !dropped.is_empty() {
            let removed: Vec<PathBuf> = dropped.iter().map(|d| self.dir.join(d)).collect();
            tracing::warn!(
                set = %self.dir.display(), ?removed,
                "the full hot copy did not complete: removing the journal elements taken into its set while it ran \
                 (journal hot copies continue in the set that had them before)"
            );
        }
        let remove_dropped = || -> Result<(), SetError> {
            for d in &dropped {
                storage.remove(Path::new(d))?;
            }
            Ok(())
        };
        let unused = state.elements.is_empty() && lock(&self.slot.live).is_empty();
        if begun.entry.kind == ElementKind::Full && unused {
            storage.remove(Path::new(STATE_FILE))?;
            remove_dropped()?;
            storage.remove(tmp_root)?;
            storage.sync(Path::new(""))?;
            if remove_dir {
                storage.remove_if_empty()?;
            }
        } else if state.elements.len() != before {
            self.write_state(&state)?;
            if !dropped.is_empty() {
                remove_dropped()?;
                storage.sync(Path::new(""))?;
            }
        }
        Ok(())
    }
}
