//! Directories opened without following symbolic links, and every removal Backset makes.
//!
//! A [`DirFd`] is a directory opened with `O_DIRECTORY | O_NOFOLLOW`; what is created, listed or removed below it is
//! named relative to that descriptor (`mkdirat`, `openat`, `unlinkat`), so a path component that another user swaps
//! for a symbolic link while Backset works (a shared scratch directory, a `tmp/` made a link) redirects nothing: the
//! descriptor keeps naming the directory that was opened, and a link met below it is removed as a link, never
//! followed.
//!
//! **Every removal of the workspace goes through [`DirFd::remove_tree`] or [`DirFd::remove_dir_if`]**
//! (docs/RELIABILITY.md lists each site). [`remove_path`] is the form for a directory the operator named: the
//! operator's path is followed up to its parent, and from there nothing is.
//!
//! Linux only (as the rest of Backset): [`DirFd::fd_path`] names the directory through `/proc/self/fd`, for code that
//! takes paths (the copier).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// How deep [`DirFd::remove_tree`] descends: a tree of more nested directories than this (the one removed counted) is
/// refused, since each level holds a descriptor. Nothing Backset makes is deeper than 4 (`tmp/<id>/data/journal`).
pub const MAX_REMOVE_DEPTH: usize = 64;

/// Flags every directory is opened with.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Device and inode of a directory: what [`DirFd::remove_dir_if`] compares before it removes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

/// What an entry of a directory is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (with its id).
    Dir(DirId),
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// A directory opened without following a symbolic link at its last component (see the [module docs](self)).
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

fn errno(e: rustix::io::Errno) -> Error {
    Error::from(e)
}

/// `openat(dir, name, O_DIRECTORY | O_NOFOLLOW)`; a symbolic link fails with `ELOOP` (the kernel answers `ENOTDIR`
/// for a link opened with `O_DIRECTORY | O_NOFOLLOW`; `fstatat` tells the two apart).
fn open_nofollow(dir: BorrowedFd<'_>, name: &Path) -> std::io::Result<OwnedFd> {
    match rustix::fs::openat(dir, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOTDIR) => {
            let link = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            Err(errno(if link { rustix::io::Errno::LOOP } else { rustix::io::Errno::NOTDIR }))
        }
        Err(e) => Err(errno(e)),
    }
}

/// Whether an error of [`DirFd::open`] or [`DirFd::open_dir`] means a symbolic link stood where a directory was
/// expected.
pub fn is_link(e: &Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

impl DirFd {
    /// Opens the directory `path`. Components before the last are followed (the operator named them); the last one
    /// is not: a symbolic link there fails with `ELOOP` ([`is_link`]), anything else than a directory with
    /// `ENOTDIR`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let probe = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let fd = open_nofollow(rustix::fs::CWD, probe)?;
        Ok(Self { fd, path: path.to_path_buf() })
    }

    /// Opens the directory `path`, following a symbolic link at its last component too: only for a directory the
    /// operator named (a restore destination given as a link).
    pub fn open_followed(path: &Path) -> std::io::Result<Self> {
        let probe = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(rustix::fs::CWD, probe, flags, Mode::empty()).map_err(errno)?;
        Ok(Self { fd, path: path.to_path_buf() })
    }

    /// The path it was opened as (for messages: the descriptor, not this path, is what is used).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` below it, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the subdirectory `name`, never through a symbolic link (`ELOOP`: [`is_link`]) or into a non-directory
    /// (`ENOTDIR`).
    pub fn open_dir(&self, name: impl AsRef<Path>) -> std::io::Result<Self> {
        let name = name.as_ref();
        let fd = open_nofollow(self.fd.as_fd(), name)?;
        Ok(Self { fd, path: self.path.join(name) })
    }

    /// Creates the directory `name` (mode 0777 less the umask) and opens it; fails if anything is there already.
    /// The result is the directory created only if nobody could write this directory in between: compare its
    /// [`id`](Self::id) where that matters, and check that it is empty.
    pub fn create_dir(&self, name: impl AsRef<Path>) -> std::io::Result<Self> {
        let name = name.as_ref();
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)).map_err(errno)?;
        self.open_dir(name)
    }

    /// Creates the regular file `name` for writing (mode 0644 less the umask): never an existing file, never
    /// through a symbolic link (`O_CREAT | O_EXCL`).
    pub fn create_file(&self, name: impl AsRef<Path>) -> std::io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name.as_ref(), flags, Mode::from_raw_mode(0o644)).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Device and inode of this directory.
    pub fn id(&self) -> std::io::Result<DirId> {
        let st = rustix::fs::fstat(&self.fd).map_err(errno)?;
        Ok(DirId { dev: st.st_dev, ino: st.st_ino })
    }

    /// What the entry `name` is, without following it; `None` when there is none.
    pub fn entry(&self, name: impl AsRef<Path>) -> std::io::Result<Option<EntryKind>> {
        match rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => EntryKind::Dir(DirId { dev: st.st_dev, ino: st.st_ino }),
                FileType::RegularFile => EntryKind::File,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// The names it holds (without `.` and `..`).
    pub fn names(&self) -> std::io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }

    /// Removes the entry `name` and, when it is a directory, everything below it, never following a symbolic link
    /// (a link is removed as a link). Nothing outside this directory's `name` can be removed, whatever is swapped
    /// while it runs: each level is opened relative to the one above with `O_NOFOLLOW`. Removing nothing (no entry
    /// `name`) is not an error. A tree deeper than [`MAX_REMOVE_DEPTH`] is refused.
    pub fn remove_tree(&self, name: impl AsRef<Path>) -> std::io::Result<()> {
        self.remove_below(name.as_ref(), 0)
    }

    fn remove_below(&self, name: &Path, depth: usize) -> std::io::Result<()> {
        // unlinkat without AT_REMOVEDIR removes anything but a directory (a link itself, never its target); a
        // directory answers EISDIR.
        let refused = match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e @ (rustix::io::Errno::ISDIR | rustix::io::Errno::PERM)) => e,
            Err(e) => return Err(errno(e)),
        };
        if depth >= MAX_REMOVE_DEPTH {
            return Err(Error::other(format!(
                "{} is deeper than {MAX_REMOVE_DEPTH} directories; Backset makes nothing that deep: remove it by hand",
                self.path.join(name).display()
            )));
        }
        let sub = match self.open_dir(name) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // EPERM for something that is not a directory: that is the error to report.
            Err(e) if e.kind() == ErrorKind::NotADirectory => return Err(errno(refused)),
            Err(e) => return Err(e),
        };
        for entry in sub.names()? {
            sub.remove_below(Path::new(&entry), depth + 1)?;
        }
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// Removes everything this directory holds ([`remove_tree`](Self::remove_tree) of each entry), not the
    /// directory itself.
    pub fn clear(&self) -> std::io::Result<()> {
        for name in self.names()? {
            self.remove_tree(Path::new(&name))?;
        }
        Ok(())
    }

    /// Removes the empty directory `name` if it is still the directory `id` (device and inode compared without
    /// following a link); returns whether it did. Anything else under that name (a link, another directory, a file)
    /// is left alone.
    pub fn remove_dir_if(&self, name: impl AsRef<Path>, id: DirId) -> std::io::Result<bool> {
        let name = name.as_ref();
        if self.entry(name)? != Some(EntryKind::Dir(id)) {
            return Ok(false);
        }
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(errno)?;
        Ok(true)
    }

    /// Fsyncs it, so that the names created, renamed or removed in it are durable.
    pub fn sync(&self) -> std::io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(errno)
    }

    /// Makes durable every file and name written on the file system this directory is on (`syncfs`): one call for
    /// many new files instead of an fsync each.
    pub fn sync_file_system(&self) -> std::io::Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(errno)
    }

    /// A path that names this very directory whatever happens to its name meanwhile (`/proc/self/fd/<fd>`), valid
    /// while it is open: for code that takes paths, such as the copier.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Removes the file or directory tree at `path`, a path the operator named (or one Backset derived from it, such as
/// `<dir>.incomplete`): its parent is followed as given, its last component and everything below it are not (a
/// link there is removed as a link). Removing nothing is not an error.
pub fn remove_path(path: &Path) -> std::io::Result<()> {
    let (parent, name) = split(path)?;
    match DirFd::open_followed(parent) {
        Ok(d) => d.remove_tree(name),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the directory at `path` if it is empty (`rmdir`, which never follows a link): for a directory Backset
/// created where the operator asked (a backup set, a simple copy's directory) and must take back on failure.
pub fn remove_empty_dir(path: &Path) -> std::io::Result<()> {
    let (parent, name) = split(path)?;
    let parent = DirFd::open_followed(parent)?;
    rustix::fs::unlinkat(&parent.fd, name, AtFlags::REMOVEDIR).map_err(errno)
}

/// `path`'s parent (`.` for a bare name) and last component; a path without one (`/`, `..`) is refused.
pub fn split(path: &Path) -> std::io::Result<(&Path, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("{} does not end in a name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn victim(root: &Path) -> PathBuf {
        let v = root.join("victim");
        fs::create_dir_all(v.join("sub")).unwrap();
        fs::write(v.join("a"), b"a").unwrap();
        fs::write(v.join("sub/b"), b"b").unwrap();
        v
    }

    #[test]
    fn remove_tree_removes_a_link_not_its_target() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let top = t.path().join("top");
        fs::create_dir_all(top.join("d/e")).unwrap();
        fs::write(top.join("d/e/f"), b"f").unwrap();
        symlink(&v, top.join("d/link")).unwrap();
        symlink(&v, top.join("d/e/link")).unwrap();
        let d = DirFd::open(&top).unwrap();
        d.remove_tree("d").unwrap();
        assert!(!top.join("d").exists());
        assert_eq!(fs::read(v.join("a")).unwrap(), b"a");
        assert_eq!(fs::read(v.join("sub/b")).unwrap(), b"b");
        // A link as the entry itself, and through remove_path.
        symlink(&v, top.join("l")).unwrap();
        remove_path(&top.join("l")).unwrap();
        assert!(fs::symlink_metadata(top.join("l")).is_err());
        assert!(v.join("sub/b").exists());
        // Nothing there: not an error.
        d.remove_tree("absent").unwrap();
        remove_path(&t.path().join("absent/x")).unwrap();
    }

    #[test]
    fn a_linked_directory_is_never_opened() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let link = t.path().join("link");
        symlink(&v, &link).unwrap();
        assert!(is_link(&DirFd::open(&link).unwrap_err()));
        let top = DirFd::open(t.path()).unwrap();
        assert!(is_link(&top.open_dir("link").unwrap_err()));
        fs::write(t.path().join("file"), b"").unwrap();
        let e = top.open_dir("file").unwrap_err();
        assert!(!is_link(&e) && e.kind() == ErrorKind::NotADirectory, "{e}");
        assert_eq!(top.entry("link").unwrap(), Some(EntryKind::Symlink));
        assert!(DirFd::open_followed(&link).is_ok());
    }

    #[test]
    fn remove_dir_if_removes_only_the_directory_it_was_given() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let top = DirFd::open(t.path()).unwrap();
        let made = top.create_dir("made").unwrap();
        let id = made.id().unwrap();
        // Swapped for a link, then for another (empty) directory: neither is removed.
        fs::rename(t.path().join("made"), t.path().join("aside")).unwrap();
        symlink(&v, t.path().join("made")).unwrap();
        assert!(!top.remove_dir_if("made", id).unwrap());
        fs::remove_file(t.path().join("made")).unwrap();
        fs::create_dir(t.path().join("made")).unwrap();
        assert!(!top.remove_dir_if("made", id).unwrap());
        assert!(t.path().join("made").is_dir());
        // The directory itself, under its new name.
        assert!(top.remove_dir_if("aside", id).unwrap());
        assert!(v.join("sub/b").exists());
    }

    #[test]
    fn a_tree_at_the_depth_limit_is_removed_and_one_deeper_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let make = |name: &str, levels: usize| {
            let mut p = t.path().join(name);
            for _ in 0..levels {
                p = p.join("d");
            }
            fs::create_dir_all(&p).unwrap();
        };
        let top = DirFd::open(t.path()).unwrap();
        // `ok/d/.../d`: MAX_REMOVE_DEPTH nested directories, `ok` counted.
        make("ok", MAX_REMOVE_DEPTH - 1);
        top.remove_tree("ok").unwrap();
        assert!(!t.path().join("ok").exists());
        make("deep", MAX_REMOVE_DEPTH);
        let e = top.remove_tree("deep").unwrap_err();
        assert!(e.to_string().contains(&format!("deeper than {MAX_REMOVE_DEPTH} directories")), "{e}");
    }
}
