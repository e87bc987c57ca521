//! One process per directory: advisory locks on database and archive directories.
//!
//! A process that writes a directory (the reference store's database directory and each archive directory an SM
//! serves) holds an exclusive lock on its lock file, [`LOCK_FILE`], from before it reads anything until it closes. A
//! second writer is refused with [`LockError::InUse`], which names the holder: `database directory D is in use by
//! process 1234 (backset serve); stop it first`. The offline readers (`read_archive`, `check_archive`) hold a shared
//! lock while they read, so an archive a running SM holds is refused to them the same way, and an SM cannot start on
//! an archive they are reading. A restore probes its destination and every directory above it
//! ([`check_not_held`]): it never writes into a directory a running process holds.
//!
//! The lock is `flock(2)` (std's [`File::try_lock`]): the kernel releases it when the process dies, so a `kill -9`
//! leaves no stale lock; the file itself stays and means nothing on its own (the lock, not the file's presence, is
//! what counts). Its content only names the holder for the refusal: `pid <pid>` and `program <name>` lines, written
//! by an exclusive holder once it holds the lock. Locks conflict between two opens of the file in one process too,
//! so a second `Database::open` (the reference store's) of one directory in the same process is refused as well.
//!
//! Nothing lists the lock file as part of an archive or a set: recovery and `archive check` read `atoms/` and
//! `journal/` only, hot copies copy what the [`Archive`](crate::Archive) lists (atom files and journal slices), and a
//! restore counts a destination that holds only a lock file as empty.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use backset_format::fsio::open_regular;
use backset_format::ReadError;

use crate::limits::MAX_LOCK_RECORD_BYTES;

/// The lock file's name in a locked directory.
pub const LOCK_FILE: &str = "backset.lock";

/// What a locked directory is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// The reference store's database directory (`<data-dir>/database`).
    Database,
    /// An archive directory an SM serves.
    Archive,
}

impl std::fmt::Display for DirKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Database => "database directory",
            Self::Archive => "archive directory",
        })
    }
}

/// Who holds a lock, as far as the refused process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// An exclusive holder that named itself in the lock file.
    Process {
        /// Its process id.
        pid: u32,
        /// Its program (`backset serve`).
        program: String,
    },
    /// One or more processes reading the directory under a shared lock (an offline tool).
    Readers,
    /// An exclusive holder whose lock file does not name it (yet: it writes its name right after locking).
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Process { pid, program } => write!(f, "process {pid} ({program})"),
            Self::Readers => f.write_str("a process reading it (an offline tool such as `backset archive check`)"),
            Self::Unknown => f.write_str("another process (its lock file does not name it)"),
        }
    }
}

/// Taking or probing a directory's lock failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process (or another open in this process) holds the directory.
    #[error("{kind} {} is in use by {holder}; stop it first", .dir.display())]
    InUse {
        /// What the directory is.
        kind: DirKind,
        /// The directory.
        dir: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// The lock file is not a regular file (a link, a FIFO, a device: never opened through, nor waited on), or a
    /// reader could not open it.
    #[error("lock {kind} {}: {source}", .dir.display())]
    File {
        /// What the directory is.
        kind: DirKind,
        /// The directory.
        dir: PathBuf,
        /// Why the file could not be used.
        source: ReadError,
    },
    /// The lock file could not be opened, locked or written.
    #[error("lock {kind} {}: {op} {}: {source}", .dir.display(), .path.display())]
    Io {
        /// What the directory is.
        kind: DirKind,
        /// The directory.
        dir: PathBuf,
        /// The operation.
        op: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

static PROGRAM: Mutex<Option<String>> = Mutex::new(None);

/// Names this process in the lock files it takes from now on (`backset serve`); by default the file name of the
/// program it runs. An SM that links the engine may call it once at start.
pub fn set_program_name(name: impl Into<String>) {
    *PROGRAM.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.into());
}

fn program_name() -> String {
    if let Some(name) = PROGRAM.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return name.clone();
    }
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown program".into())
}

/// A held lock on a directory; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    // Never read: holding the open file is holding the lock.
    _file: File,
    dir: PathBuf,
    kind: DirKind,
}

impl DirLock {
    /// Takes the exclusive lock of `dir` (which must exist), creating its lock file when absent, and writes this
    /// process's id and program name into it. Refuses with [`LockError::InUse`] when any process (this one
    /// included) holds it.
    pub fn exclusive(dir: &Path, kind: DirKind) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |op: &'static str| {
            let (dir, path) = (dir.to_path_buf(), path.clone());
            move |source| LockError::Io { kind, dir, op, path, source }
        };
        // Never through a link or onto a FIFO or device that took the lock file's name.
        match std::fs::symlink_metadata(&path) {
            Ok(md) if !md.is_file() => {
                let source = ReadError::NotRegular { path: path.clone() };
                return Err(LockError::File { kind, dir: dir.to_path_buf(), source });
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("stat")(e)),
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse { kind, dir: dir.to_path_buf(), holder: holder(&path) });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        let kind_word = match kind {
            DirKind::Database => "database",
            DirKind::Archive => "archive",
        };
        let record =
            format!("pid {}\nprogram {}\nkind {kind_word}\n", std::process::id(), program_name().replace('\n', " "));
        file.write_all_at(record.as_bytes(), 0).map_err(io("write"))?;
        file.set_len(record.len() as u64).map_err(io("truncate"))?;
        Ok(Self { _file: file, dir: dir.to_path_buf(), kind })
    }

    /// Takes a shared lock of `dir` for reading it: `None` when `dir` has no lock file (no process ever locked it:
    /// nothing is created, a reader writes nothing); refuses with [`LockError::InUse`] when a process holds the
    /// exclusive lock.
    pub fn shared(dir: &Path, kind: DirKind) -> Result<Option<Self>, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |op: &'static str| {
            let (dir, path) = (dir.to_path_buf(), path.clone());
            move |source| LockError::Io { kind, dir, op, path, source }
        };
        let file = match open_lock_file(&path) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(source) => return Err(LockError::File { kind, dir: dir.to_path_buf(), source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(Self { _file: file, dir: dir.to_path_buf(), kind })),
            Err(TryLockError::WouldBlock) => {
                Err(LockError::InUse { kind, dir: dir.to_path_buf(), holder: holder(&path) })
            }
            Err(TryLockError::Error(e)) => Err(io("lock")(e)),
        }
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the locked directory is.
    pub fn kind(&self) -> DirKind {
        self.kind
    }
}

/// Refuses when `path` or a directory above it is held exclusively by a process (a running SM's archive or
/// database directory). `path` need not exist; give it with symbolic links resolved (the directories above are
/// taken lexically).
pub fn check_not_held(path: &Path) -> Result<(), LockError> {
    for dir in path.ancestors() {
        let lock = dir.join(LOCK_FILE);
        // Absent, or not a file a process could lock as a directory's (a link, a FIFO) or unreadable: not held.
        let Ok(Some(file)) = open_lock_file(&lock) else { continue };
        let kind = read_record(&lock).kind;
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse { kind, dir: dir.to_path_buf(), holder: holder(&lock) });
            }
            Err(TryLockError::Error(source)) => {
                return Err(LockError::Io { kind, dir: dir.to_path_buf(), op: "lock", path: lock, source });
            }
        }
    }
    Ok(())
}

/// Opens the lock file `path` for reading (a shared lock or its record) as every reader of an archive opens its
/// files (`backset_format::fsio::open_regular`: never through a link, never waiting on a FIFO); `None` when absent.
fn open_lock_file(path: &Path) -> Result<Option<File>, ReadError> {
    match open_regular(path) {
        Ok((f, _)) => Ok(Some(f)),
        Err(ReadError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Who holds the lock on `path`, which this process just failed to take: shared readers when a shared lock can be
/// taken (so no exclusive holder exists), else the process the file names.
fn holder(path: &Path) -> Holder {
    let Ok(Some(file)) = open_lock_file(path) else { return Holder::Unknown };
    if file.try_lock_shared().is_ok() {
        return Holder::Readers;
    }
    read_record(path).holder
}

/// What a lock file says.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    /// The holder it names, [`Holder::Unknown`] when it names none.
    holder: Holder,
    /// The kind of directory (an archive when it does not say).
    kind: DirKind,
}

fn read_record(path: &Path) -> Record {
    let mut text = String::new();
    if let Ok(Some(f)) = open_lock_file(path) {
        // A record cut short by the limit or by bad UTF-8 parses as far as it goes (a partial one names nobody).
        let _ = f.take(MAX_LOCK_RECORD_BYTES).read_to_string(&mut text);
    }
    parse_record(&text)
}

/// Parses `pid <pid>\nprogram <name>\nkind database|archive\n`.
fn parse_record(text: &str) -> Record {
    let (mut pid, mut program, mut kind) = (None, None, DirKind::Archive);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("pid", p)) => pid = p.trim().parse().ok(),
            Some(("program", p)) => program = Some(p.trim().to_string()).filter(|p| !p.is_empty()),
            Some(("kind", "database")) => kind = DirKind::Database,
            _ => {}
        }
    }
    let holder = match (pid, program) {
        (Some(pid), Some(program)) => Holder::Process { pid, program },
        _ => Holder::Unknown,
    };
    Record { holder, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_parses_and_a_partial_one_names_nobody() {
        let serve = Holder::Process { pid: 42, program: "backset serve".into() };
        let r = parse_record("pid 42\nprogram backset serve\nkind database\n");
        assert_eq!(r, Record { holder: serve.clone(), kind: DirKind::Database });
        assert_eq!(parse_record("pid 42\nprogram backset serve\n"), Record { holder: serve, kind: DirKind::Archive });
        for partial in ["", "pid 42\n", "pid 4", "pid x\nprogram p\n", "pid 42\nprogram \n"] {
            assert_eq!(parse_record(partial).holder, Holder::Unknown, "{partial:?}");
        }
    }
}
