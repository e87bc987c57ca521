//! The unfinished-restore marker: a restore is all or nothing, also when it is killed.
//!
//! A restore creates `<dest>/restore.incomplete` ([`RESTORE_MARKER_FILE`]) and makes it durable (the file, then the
//! destination directory) before it writes anything else, and removes it (then fsyncs the destination) only once
//! every file and directory it wrote is durable. A restore that fails or is cancelled removes what it wrote, the
//! marker last. So whatever stops a restore (SIGKILL, a crash, a power cut), the destination holds either a complete
//! archive without the marker, or the marker: the reference store, `archive check|info|dump` and a restore into the
//! directory refuse a directory with the marker ([`refuse_unfinished`]).
//!
//! A marker rather than a temporary sibling directory renamed at the end: the destination may be an existing empty
//! directory (a mount point, or one an operator prepared with its owner and mode), which a rename cannot replace,
//! and the parent rule ([`crate::paths`]) creates nothing beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

use backset_format::dirfd::DirFd;
pub use backset_format::layout::RESTORE_MARKER_FILE;

use super::RestoreError;

/// A directory holds the marker of a restore that did not finish.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: this archive is an unfinished restore: remove it and restore again (it holds {RESTORE_MARKER_FILE}: the \
     restore that wrote it was interrupted, or is still running)",
    .dir.display()
)]
pub struct UnfinishedRestore {
    /// The directory.
    pub dir: PathBuf,
}

/// Refuses `dir` when it holds the marker of an unfinished restore (whatever the marker's file type: it is never
/// followed or read).
pub fn refuse_unfinished(dir: &Path) -> Result<(), UnfinishedRestore> {
    match std::fs::symlink_metadata(dir.join(RESTORE_MARKER_FILE)) {
        Ok(_) => Err(UnfinishedRestore { dir: dir.to_path_buf() }),
        // Absent, or `dir` cannot be examined: the reader that follows reports that.
        Err(_) => Ok(()),
    }
}

/// Creates the marker in the (empty) destination `dir`, durably: the file, then `dir`. `what` says which restore
/// wrote it (the file's first line; nothing reads it back). `made` is set once the file exists (so that a failure
/// after it removes it).
pub(super) fn create(dir: &DirFd, what: &str, made: &mut bool) -> Result<(), RestoreError> {
    let path = dir.join(RESTORE_MARKER_FILE);
    let io = |op| {
        let path = path.clone();
        move |source| RestoreError::Destination { op, path, source }
    };
    // O_CREAT | O_EXCL | O_NOFOLLOW, relative to the destination's descriptor.
    let mut f = dir.create_file(RESTORE_MARKER_FILE).map_err(io("create"))?;
    *made = true;
    f.write_all(format!("{what}\nThis archive is an unfinished restore: remove it and restore again.\n").as_bytes())
        .map_err(io("write"))?;
    f.sync_all().map_err(io("fsync"))?;
    dir.sync().map_err(|source| RestoreError::Destination {
        op: "fsync directory",
        path: dir.path().to_path_buf(),
        source,
    })
}

/// Removes the marker from `dir`, durably: once it returns, `dir` is a finished archive.
pub(super) fn remove(dir: &DirFd) -> Result<(), RestoreError> {
    let path = dir.join(RESTORE_MARKER_FILE);
    dir.remove_tree(RESTORE_MARKER_FILE).map_err(|source| RestoreError::Destination { op: "remove", path, source })?;
    dir.sync().map_err(|source| RestoreError::Destination {
        op: "fsync directory",
        path: dir.path().to_path_buf(),
        source,
    })
}
