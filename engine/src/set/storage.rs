//! The storage seam under a backup set: every byte the set module reads or writes goes through [`SetStorage`], so
//! that where a set lives (a local directory, [`LocalDir`], or object storage, [`super::object::ObjectStore`]) is one
//! implementation of one trait and the
//! reader, the writer, restore and check stay as they are.
//!
//! Paths given to the trait are relative to the set (`state`, `full/control/manifest`, `tmp/<id>/data`), built from
//! ids by `backset_format::layout` and [`super::layout`], never read from a file.
//!
//! # Publishing an element
//! The trait speaks of an element's life, not of renames: [`stage`](SetStorage::stage) gives a new element a place
//! of its own, the copier writes its data there, [`seal`](SetStorage::seal) stores its control files and makes
//! everything durable, [`publish`](SetStorage::publish) makes it an element of the set under its name. On a local
//! directory ([`LocalDir`]) the place is `tmp/<id>/` and publishing is a rename, fsyncs of `tmp/` and the set's
//! directory; the writer then rewrites `state`. On object storage (DESIGN.md, "Storage backends") there is no
//! rename: the element's objects are written under its own name and id, publishing is one create-only put of its
//! commit record, written last, and `state` is derived from the published commit records. Readers trust only what
//! is published either way.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use backset_copier::{ChunkSink, CopyError, JobControl, JobReport};
use backset_format::dirfd::{is_link, remove_empty_dir, DirFd, EntryKind};
use backset_format::fsio::{open_regular, read_regular, sync_dir, write_file_atomic};
use backset_format::layout::{CONTROL_DIR, DATA_DIR, TMP_DIR};
use backset_format::{ElementName, ReadError, WriteError};
use uuid::Uuid;

use super::layout::{top_entry, TopEntry, DATA_DIRS, ELEMENT_ENTRIES};
use super::SetError;

/// Where a backup set's bytes are: list, read (whole, streamed, a range), write metadata atomically, stage, seal,
/// publish and remove elements. See the [module docs](self).
pub trait SetStorage: fmt::Debug + Send + Sync {
    /// The set's location as messages show it, with `rel` below it.
    fn show(&self, rel: &Path) -> PathBuf;

    /// What stands at `rel` and its length, looked at without following a link; `None` when nothing does. `rel`
    /// empty: the set itself.
    fn stat(&self, rel: &Path) -> std::io::Result<Option<Stat>>;

    /// What stands at `rel` ([`stat`](Self::stat) without the length).
    fn kind(&self, rel: &Path) -> std::io::Result<Option<EntryKind>> {
        Ok(self.stat(rel)?.map(|s| s.kind))
    }

    /// The names in the directory `rel` (a key prefix on object storage), unsorted.
    fn list(&self, rel: &Path) -> std::io::Result<Vec<OsString>>;

    /// The whole file `rel`, refused before it is read when longer than `max` bytes ([`ReadError::TooLarge`]).
    fn read(&self, rel: &Path, max: u64) -> Result<Vec<u8>, ReadError>;

    /// The file `rel` to stream from, and its length.
    fn open(&self, rel: &Path) -> Result<(Box<dyn Read + Send>, u64), ReadError>;

    /// Up to `len` bytes of the file `rel` from `offset` (fewer at its end).
    fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Vec<u8>, ReadError>;

    /// The local file or directory the copier reads `rel` from or writes it to, and that check's verification of an
    /// element without a readable manifest reads (both work on files; a backend without local files gives the path
    /// as messages show it, [`show`](Self::show), and takes its data files streamed instead).
    fn copier_path(&self, rel: &Path) -> PathBuf;

    /// Writes the metadata file `name` in the directory `dir` atomically and durably, replacing what was there: a
    /// crash leaves the old bytes or the new ones.
    fn write_metadata(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError>;

    /// Refuses the set ([`SetError::Link`]) when a link, or anything but a directory, stands where a directory of
    /// the set belongs (`tmp/`, an element, its `control/`, `data/`, `data/atoms/`, `data/journal/`): before a hot
    /// copy writes or removes anything.
    fn refuse_links(&self) -> Result<(), SetError>;

    /// Whether the set is in a local directory, whose files the copier reads directly ([`copier_path`](
    /// Self::copier_path) of a published element is a real file); elsewhere readers stream through
    /// [`open`](Self::open).
    fn is_local(&self) -> bool {
        true
    }

    /// Gives the new element `id`, to be published as `name`, a place of its own, with an empty `data/`; returns
    /// it (relative to the set). The name is known from the start so that a backend without rename can store the
    /// element's objects under it (and the id: two jobs racing for one name never write the same object).
    fn stage(&self, id: Uuid, name: ElementName) -> Result<PathBuf, SetError>;

    /// Whether the copier hands the staged element's data files to [`stream_data`](Self::stream_data) instead of
    /// writing them under [`copier_path`](Self::copier_path): a backend without local files.
    fn streams_data(&self) -> bool {
        false
    }

    /// Runs `copy`, a streaming copier job whose request `i` reads the data file `files[i]` (relative to the staged
    /// element `staged`: `data/atoms/<id>`, ...), and stores each file from the chunks the job hands to the sink it
    /// is given; returns the job's result once every file it read whole is stored, or `Err` when storing failed
    /// (the job was cancelled through `ctl` then). Only where [`streams_data`](Self::streams_data).
    fn stream_data(
        &self,
        staged: &Path,
        files: &[PathBuf],
        ctl: &JobControl,
        copy: &mut dyn FnMut(&dyn ChunkSink) -> Result<JobReport, CopyError>,
    ) -> Result<Result<JobReport, CopyError>, SetError> {
        let _ = (files, ctl, copy);
        Err(SetError::Conflict {
            path: self.show(staged),
            reason: "this storage takes its data files from the copier's targets, not streamed".into(),
        })
    }

    /// Runs `produce`, which reads the data files `files[i]` of the staged element `staged` (relative to it:
    /// `data/atoms/<id>`, ...) from wherever they come from (`backset set copy`: another set), hands each file's
    /// bytes to the sink it is given and returns each file's size and BLAKE3 as it read and verified them; stores
    /// each file from its pieces as they come, nothing written locally. Returns `produce`'s error, or the storing's
    /// (which stops the sink taking pieces) first. Only where [`streams_data`](Self::streams_data).
    fn store_data(
        &self,
        staged: &Path,
        files: &[PathBuf],
        ctl: &JobControl,
        produce: &mut Produce<'_>,
    ) -> Result<(), SetError> {
        let _ = (files, ctl, produce);
        Err(SetError::Conflict {
            path: self.show(staged),
            reason: "this storage takes its data files written under its staged element, not streamed".into(),
        })
    }

    /// Stores the control files of the staged element `staged` (`control/<name>`) and makes it durable whole.
    fn seal(&self, staged: &Path, control: &[(&str, Vec<u8>)]) -> Result<(), SetError>;

    /// Publishes the sealed element `staged` as `name`; `published` runs right after the step that publishes it,
    /// before that step is made durable. Refused ([`SetError::Conflict`]) when `name` exists.
    fn publish(&self, staged: &Path, name: ElementName, published: &mut dyn FnMut()) -> Result<(), SetError>;

    /// Takes back a publication whose recording in the state failed, so that the element is staged again (and an
    /// abort removes it). Best effort.
    fn unpublish(&self, staged: &Path, name: ElementName);

    /// Removes `rel` (a file or a whole tree) if it is there, never through a link and nothing outside the set.
    fn remove(&self, rel: &Path) -> Result<(), SetError>;

    /// Makes the removals and creations in the directory `rel` durable.
    fn sync(&self, rel: &Path) -> Result<(), SetError>;

    /// Removes the set's own directory when it is empty (a failed full leaves nothing behind); whether it did.
    fn remove_if_empty(&self) -> Result<bool, SetError>;
}

/// Where a [`SetStorage::store_data`] producer hands the bytes of the data files it reads: each file's pieces in
/// order, its last one marked (an empty file gives none). A piece is held until it is stored, so what the producer
/// allocates for its pieces bounds the memory of the upload.
pub trait PieceSink: Sync {
    /// Takes the next piece of file `request`; `false` once the storage takes no more (storing failed: stop).
    fn piece(&self, request: usize, bytes: bytes::Bytes, last: bool) -> bool;
}

/// A [`SetStorage::store_data`] producer: reads the data files, hands their pieces to the sink, and returns each
/// file's size and BLAKE3 as it read and verified them.
pub type Produce<'a> = dyn FnMut(&dyn PieceSink) -> Result<Vec<(u64, [u8; 32])>, SetError> + 'a;

/// What stands at a path of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What it is.
    pub kind: EntryKind,
    /// Its length in bytes (a file's size).
    pub len: u64,
}

fn io_err(op: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> SetError {
    move |source| SetError::Io { op, path, source }
}

/// A backup set in a local directory, exactly as FORMAT.md lays it out: elements staged in `tmp/<id>/`, published
/// by rename; every directory opened without following a link and every removal relative to the set's descriptor
/// (`backset_format::dirfd`).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The set in `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The set's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Opens the set's directory (a link there is followed: it is the operator's own path).
    fn open_root(&self) -> Result<DirFd, SetError> {
        DirFd::open_followed(&self.root).map_err(io_err("open directory", self.root.clone()))
    }

    /// Opens the directory `rel` below the set, each component below the set's directory without following a link.
    fn open_rel(&self, rel: &Path) -> Result<DirFd, SetError> {
        let mut dir = self.open_root()?;
        for name in rel.iter() {
            dir = open_set_dir(&dir, name, None)?;
        }
        Ok(dir)
    }
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

impl SetStorage for LocalDir {
    fn show(&self, rel: &Path) -> PathBuf {
        self.path(rel)
    }

    fn stat(&self, rel: &Path) -> std::io::Result<Option<Stat>> {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(self.path(rel)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok(md) => {
                let t = md.file_type();
                let kind = if t.is_symlink() {
                    EntryKind::Symlink
                } else if t.is_dir() {
                    EntryKind::Dir(backset_format::dirfd::DirId { dev: md.dev(), ino: md.ino() })
                } else if t.is_file() {
                    EntryKind::File
                } else {
                    EntryKind::Other
                };
                Ok(Some(Stat { kind, len: md.len() }))
            }
        }
    }

    fn list(&self, rel: &Path) -> std::io::Result<Vec<OsString>> {
        let mut dir = DirFd::open_followed(&self.root)?;
        for name in rel.iter() {
            dir = dir.open_dir(name)?;
        }
        dir.names()
    }

    fn read(&self, rel: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
        read_regular(&self.path(rel), max)
    }

    fn open(&self, rel: &Path) -> Result<(Box<dyn Read + Send>, u64), ReadError> {
        let (f, len) = open_regular(&self.path(rel))?;
        Ok((Box::new(f), len))
    }

    fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let path = self.path(rel);
        let io = |op| {
            let path = path.clone();
            move |source| ReadError::Io { op, path, source }
        };
        let (mut f, _): (File, u64) = open_regular(&path)?;
        f.seek(SeekFrom::Start(offset)).map_err(io("seek"))?;
        let mut buf = vec![0u8; len];
        let mut n = 0;
        while n < len {
            match f.read(&mut buf[n..]).map_err(io("read"))? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    fn copier_path(&self, rel: &Path) -> PathBuf {
        self.path(rel)
    }

    fn write_metadata(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        write_file_atomic(&self.path(dir), name, bytes)
    }

    fn refuse_links(&self) -> Result<(), SetError> {
        let set = self.open_root()?;
        for name in set.names().map_err(io_err("read directory", self.root.clone()))? {
            let Some(name) = name.to_str() else { continue };
            match top_entry(name) {
                TopEntry::Tmp => {
                    open_set_dir(&set, TMP_DIR, None)?;
                }
                TopEntry::Element(element_name) => {
                    let element_name = Some(element_name);
                    if set.entry(name).map_err(io_err("stat", set.join(name)))? == Some(EntryKind::Symlink) {
                        return Err(SetError::Link {
                            path: set.join(name),
                            element: element_name,
                            what: "a symbolic link",
                        });
                    }
                    let Ok(element) = set.open_dir(name) else { continue };
                    for sub in ELEMENT_ENTRIES {
                        if element.entry(sub).map_err(io_err("stat", element.join(sub)))?.is_none() {
                            continue;
                        }
                        let dir = open_set_dir(&element, sub, element_name)?;
                        if sub == DATA_DIR {
                            for d in DATA_DIRS {
                                if dir.entry(d).map_err(io_err("stat", dir.join(d)))?.is_some() {
                                    open_set_dir(&dir, d, element_name)?;
                                }
                            }
                        }
                    }
                }
                TopEntry::State | TopEntry::Verification | TopEntry::WriteLeftover | TopEntry::Foreign => {}
            }
        }
        Ok(())
    }

    fn stage(&self, id: Uuid, _name: ElementName) -> Result<PathBuf, SetError> {
        let set = self.open_root()?;
        let tmp_root = self.root.join(TMP_DIR);
        let tmp_dir = if set.entry(TMP_DIR).map_err(io_err("stat", tmp_root.clone()))?.is_none() {
            let d = set.create_dir(TMP_DIR).map_err(io_err("create directory", tmp_root.clone()))?;
            set.sync().map_err(io_err("fsync directory", self.root.clone()))?;
            d
        } else {
            open_set_dir(&set, TMP_DIR, None)?
        };
        let name = id.to_string();
        let tmp = tmp_root.join(&name);
        let element = tmp_dir.create_dir(&name).map_err(io_err("create directory", tmp.clone()))?;
        element.create_dir(DATA_DIR).map_err(io_err("create directory", tmp.join(DATA_DIR)))?;
        element.sync().map_err(io_err("fsync directory", tmp.clone()))?;
        tmp_dir.sync().map_err(io_err("fsync directory", tmp_root))?;
        Ok(Path::new(TMP_DIR).join(name))
    }

    fn seal(&self, staged: &Path, control: &[(&str, Vec<u8>)]) -> Result<(), SetError> {
        let tmp = self.path(staged);
        let control_dir = tmp.join(CONTROL_DIR);
        fs::create_dir(&control_dir).map_err(io_err("create directory", control_dir.clone()))?;
        for (name, bytes) in control {
            write_file_atomic(&control_dir, name, bytes)?;
        }
        let data = tmp.join(DATA_DIR);
        for sub in DATA_DIRS {
            let d = data.join(sub);
            if d.is_dir() {
                sync_dir(&d)?;
            }
        }
        sync_dir(&data)?;
        sync_dir(&tmp)?;
        sync_dir(&self.root.join(TMP_DIR))?;
        Ok(())
    }

    fn publish(&self, staged: &Path, name: ElementName, published: &mut dyn FnMut()) -> Result<(), SetError> {
        let from = self.path(staged);
        let target = self.root.join(name.to_string());
        if fs::symlink_metadata(&target).is_ok() {
            return Err(SetError::Conflict {
                path: target,
                reason: "already exists although the state does not list it as completed".into(),
            });
        }
        fs::rename(&from, &target).map_err(io_err("rename", from.clone()))?;
        published();
        let synced = sync_dir(&self.root.join(TMP_DIR)).and_then(|()| sync_dir(&self.root));
        if let Err(e) = synced {
            self.unpublish(staged, name);
            return Err(e.into());
        }
        Ok(())
    }

    fn unpublish(&self, staged: &Path, name: ElementName) {
        let _ = fs::rename(self.root.join(name.to_string()), self.path(staged));
    }

    fn remove(&self, rel: &Path) -> Result<(), SetError> {
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            _ => panic!("remove takes a path below the set, got {}", rel.display()),
        };
        let dir = self.open_rel(parent)?;
        dir.remove_tree(name).map_err(io_err("remove", dir.join(name)))
    }

    fn sync(&self, rel: &Path) -> Result<(), SetError> {
        self.open_rel(rel)?.sync().map_err(io_err("fsync directory", self.path(rel)))
    }

    fn remove_if_empty(&self) -> Result<bool, SetError> {
        if remove_empty_dir(&self.root).is_err() {
            return Ok(false);
        }
        if let Some(parent) = self.root.parent() {
            sync_dir(parent)?;
        }
        Ok(true)
    }
}
