//! A restore's destination: created, written and, on failure, removed relative to directory descriptors
//! ([`backset_format::dirfd`]), so that no path component swapped for a symbolic link while the restore runs
//! redirects a write or a removal.
//!
//! [`Destination::prepare`] opens the destination's parent (the operator's path, followed), then the destination
//! without following a link (a link the operator gave as the destination is followed once, when the restore starts),
//! creating it when absent, and creates `journal/` and `atoms/` in it, recording device and inode of each directory
//! it created. Everything the restore writes goes into those descriptors (the copier gets `/proc/self/fd/<atoms>`
//! paths). [`Destination::verify`] refuses to report success when a name no longer leads to the directory created;
//! [`Destination::remove`] empties what the restore created through the descriptors and removes a directory only
//! while its name still leads to the same device and inode.
//!
//! The unfinished-restore marker ([`super::marker`]) is created in the destination, durably, before `journal/` and
//! `atoms/`; [`Destination::finish`] removes it once everything is durable, [`Destination::remove`] after `journal/`
//! and `atoms/` are gone.

use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use backset_copier::CopyError;
use backset_format::dirfd::{is_link, split, DirFd, DirId, EntryKind};
use backset_format::layout::{ATOMS_DIR, JOURNAL_DIR};

use super::marker::{self, UnfinishedRestore, RESTORE_MARKER_FILE};
use super::RestoreError;
use crate::lock::LOCK_FILE;
use crate::paths::CreateDirError;

/// What a restore's destination is, in the parent rule's message.
const RESTORE_DIR: &str = "restore directory";

/// A subdirectory the restore created, open.
#[derive(Debug)]
struct Made {
    dir: DirFd,
    id: DirId,
}

/// The parent of a destination the restore created, its name in it, and its device and inode.
type Created = (DirFd, OsString, DirId);

/// The destination of a running restore (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Destination {
    /// As the operator gave it.
    path: PathBuf,
    /// Its parent and its name in it, when the restore created it.
    created: Option<Created>,
    dir: DirFd,
    journal: Option<Made>,
    atoms: Option<Made>,
    /// The restore created the marker (and has not removed it).
    marker: bool,
}

fn io(op: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Destination { op, path, source }
}

impl Destination {
    /// Makes sure `dest` is an empty directory (a lock file of an SM that no longer runs does not count: see
    /// [`crate::lock`]), creating it, its last component only (the parent rule, [`crate::paths`]), when absent; then
    /// creates the unfinished-restore marker (its first line `what`), then `journal/` and `atoms/` in it. A
    /// destination that holds a marker is refused as an unfinished restore.
    pub fn prepare(dest: &Path, what: &str) -> Result<Self, RestoreError> {
        let (dir, created) = Self::open_or_create(dest)?;
        let mut d = Self { path: dest.to_path_buf(), created, dir, journal: None, atoms: None, marker: false };
        let names = d.dir.names().map_err(io("read directory", dest.to_path_buf()))?;
        if !names.iter().all(|n| n == LOCK_FILE) {
            // Not what the restore created (someone put it there between the mkdir and the open): leave it alone.
            d.created = None;
            if names.iter().any(|n| n == RESTORE_MARKER_FILE) {
                return Err(UnfinishedRestore { dir: dest.to_path_buf() }.into());
            }
            return Err(RestoreError::DestinationNotEmpty { path: dest.to_path_buf() });
        }
        if let Err(e) = marker::create(&d.dir, what, &mut d.marker) {
            d.remove();
            return Err(e);
        }
        for name in [JOURNAL_DIR, ATOMS_DIR] {
            let made = d.dir.create_dir(name).and_then(|dir| Ok(Made { id: dir.id()?, dir }));
            let made = match made {
                Ok(m) => m,
                Err(e) => {
                    let e = io("create directory", dest.join(name))(e);
                    d.remove();
                    return Err(e);
                }
            };
            if name == JOURNAL_DIR {
                d.journal = Some(made);
            } else {
                d.atoms = Some(made);
            }
        }
        crate::hotcopy::fault::restore_pause("created");
        Ok(d)
    }

    fn open_or_create(dest: &Path) -> Result<(DirFd, Option<Created>), RestoreError> {
        let not_a_dir = || RestoreError::DestinationNotADirectory { path: dest.to_path_buf() };
        let Ok((parent_path, name)) = split(dest) else {
            // `/`, `..`: no name to create; it exists or nothing does.
            return match DirFd::open_followed(dest) {
                Ok(d) => Ok((d, None)),
                Err(e) if e.kind() == ErrorKind::NotADirectory => Err(not_a_dir()),
                Err(e) => Err(io("open directory", dest.to_path_buf())(e)),
            };
        };
        let parent = DirFd::open_followed(parent_path).map_err(|source| match source.kind() {
            ErrorKind::NotFound => CreateDirError::MissingParent {
                what: RESTORE_DIR,
                dir: dest.to_path_buf(),
                parent: parent_path.to_path_buf(),
            }
            .into(),
            ErrorKind::NotADirectory => {
                CreateDirError::Io { what: RESTORE_DIR, dir: dest.to_path_buf(), source }.into()
            }
            _ => io("open directory", parent_path.to_path_buf())(source),
        })?;
        match parent.open_dir(name) {
            Ok(d) => Ok((d, None)),
            // A link the operator gave as the destination: followed, once, now.
            Err(e) if is_link(&e) => match DirFd::open_followed(dest) {
                Ok(d) => Ok((d, None)),
                Err(e) if e.kind() == ErrorKind::NotADirectory => Err(not_a_dir()),
                Err(e) => Err(io("open directory", dest.to_path_buf())(e)),
            },
            Err(e) if e.kind() == ErrorKind::NotADirectory => Err(not_a_dir()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let dir = parent.create_dir(name).map_err(|source| match source.kind() {
                    ErrorKind::NotFound => CreateDirError::MissingParent {
                        what: RESTORE_DIR,
                        dir: dest.to_path_buf(),
                        parent: parent_path.to_path_buf(),
                    },
                    _ => CreateDirError::Io { what: RESTORE_DIR, dir: dest.to_path_buf(), source },
                })?;
                let id = dir.id().map_err(io("stat", dest.to_path_buf()))?;
                Ok((dir, Some((parent, name.to_os_string(), id))))
            }
            Err(e) => Err(io("open directory", dest.to_path_buf())(e)),
        }
    }

    /// The destination, as the operator gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the marker, durably: the destination is a finished archive from then on. Call it last, once
    /// [`sync`](Self::sync) made everything else durable.
    pub fn finish(&mut self) -> Result<(), RestoreError> {
        marker::remove(&self.dir)?;
        self.marker = false;
        Ok(())
    }

    fn journal(&self) -> &DirFd {
        &self.journal.as_ref().expect("prepared").dir
    }

    fn atoms(&self) -> &DirFd {
        &self.atoms.as_ref().expect("prepared").dir
    }

    /// Creates the journal segment `name` (never an existing file, never through a link); returns it and its path
    /// for messages.
    pub fn create_segment(&self, name: &str) -> Result<(File, PathBuf), RestoreError> {
        let shown = self.journal().join(name);
        let f = self.journal().create_file(name).map_err(io("create", shown.clone()))?;
        Ok((f, shown))
    }

    /// Creates the atom file `name` (never an existing file, never through a link), for a restore that streams it
    /// from object storage; returns it and its path for messages.
    pub fn create_atom(&self, name: &str) -> Result<(File, PathBuf), RestoreError> {
        let shown = self.atoms().join(name);
        let f = self.atoms().create_file(name).map_err(io("create", shown.clone()))?;
        Ok((f, shown))
    }

    /// Makes the atom files written by [`create_atom`](Self::create_atom) durable, all at once: one `syncfs` of the
    /// file system `atoms/` is on.
    pub fn sync_atoms(&self) -> std::io::Result<()> {
        self.atoms().sync_file_system()
    }

    /// The path the copier writes the atom file `name` to: through the open `atoms/` descriptor.
    pub fn atom_target(&self, name: &str) -> PathBuf {
        self.atoms().fd_path().join(name)
    }

    /// A copier error with the descriptor paths of [`atom_target`](Self::atom_target) shown as the destination's.
    pub fn shown_copy_error(&self, e: CopyError) -> CopyError {
        let fd_path = self.atoms().fd_path();
        let show = |p: PathBuf| match p.strip_prefix(&fd_path) {
            Ok(rest) => self.atoms().join(rest),
            Err(_) => p,
        };
        match e {
            CopyError::Io { op, path, source } => CopyError::Io { op, path: show(path), source },
            CopyError::TargetExists { path } => CopyError::TargetExists { path: show(path) },
            other => other,
        }
    }

    /// Checks that the destination's names still lead to the directories the restore wrote: the destination (as
    /// given) and its `journal/` and `atoms/`.
    pub fn verify(&self) -> Result<(), RestoreError> {
        let id = self.dir.id().map_err(io("stat", self.path.clone()))?;
        let now = match std::fs::metadata(&self.path) {
            Ok(md) if md.dev() == id.dev && md.ino() == id.ino => None,
            Ok(_) if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_symlink()) => {
                Some("a symbolic link to another directory")
            }
            Ok(md) if md.is_dir() => Some("another directory"),
            Ok(_) => Some("not a directory"),
            Err(_) => Some("gone"),
        };
        if let Some(now) = now {
            return Err(RestoreError::DestinationReplaced { path: self.path.clone(), now });
        }
        for (name, made) in [(JOURNAL_DIR, &self.journal), (ATOMS_DIR, &self.atoms)] {
            let made = made.as_ref().expect("prepared");
            let path = self.dir.join(name);
            let now = match self.dir.entry(name).map_err(io("stat", path.clone()))? {
                Some(EntryKind::Dir(id)) if id == made.id => continue,
                Some(EntryKind::Dir(_)) => "another directory",
                Some(EntryKind::Symlink) => "a symbolic link",
                Some(_) => "not a directory",
                None => "gone",
            };
            return Err(RestoreError::DestinationReplaced { path, now });
        }
        Ok(())
    }

    /// Makes the names written durable: `journal/`, `atoms/`, the destination, and its parent when the restore
    /// created it.
    pub fn sync(&self) -> Result<(), RestoreError> {
        let mut dirs = vec![self.journal(), self.atoms(), &self.dir];
        if let Some((parent, _, _)) = &self.created {
            dirs.push(parent);
        }
        for d in dirs {
            d.sync().map_err(io("fsync directory", d.path().to_path_buf()))?;
        }
        Ok(())
    }

    /// Removes what a failed restore created (see the [module docs](self)): the files in `journal/` and `atoms/`
    /// through their descriptors, those directories and the destination if the restore created it, each only while
    /// its name still leads to it. What cannot be removed is logged.
    pub fn remove(self) {
        let warn = |path: &Path, e: &dyn std::fmt::Display| {
            tracing::warn!(path = %path.display(), error = %e, "could not remove what a failed restore created");
        };
        for (name, made) in [(JOURNAL_DIR, &self.journal), (ATOMS_DIR, &self.atoms)] {
            let Some(made) = made else { continue };
            if let Err(e) = made.dir.clear() {
                warn(made.dir.path(), &e);
                continue;
            }
            match self.dir.remove_dir_if(name, made.id) {
                Ok(true) => {}
                Ok(false) => warn(made.dir.path(), &"it was replaced while the restore ran: left in place"),
                Err(e) => warn(made.dir.path(), &e),
            }
        }
        if self.marker {
            // Last of what is inside: a restore killed while it cleans up leaves a directory every reader refuses.
            let removed = self.dir.sync().and_then(|()| self.dir.remove_tree(RESTORE_MARKER_FILE));
            if let Err(e) = removed {
                warn(&self.dir.join(RESTORE_MARKER_FILE), &e);
            }
        }
        let synced = match &self.created {
            Some((parent, name, id)) => {
                match parent.remove_dir_if(name, *id) {
                    Ok(true) => {}
                    Ok(false) => warn(&self.path, &"it was replaced while the restore ran: left in place"),
                    Err(e) => warn(&self.path, &e),
                }
                parent
            }
            None => &self.dir,
        };
        let _ = synced.sync();
    }
}
