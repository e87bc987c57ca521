//! Copy errors: each names the file and the operation, and what to do.

use std::path::PathBuf;

/// A copy job failed. No target of the failed job is left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The operating system refused an operation on a file.
    #[error("{op} {path}: {source}")]
    Io {
        /// `open`, `read`, `write`, `fsync`, `truncate`, `create`, ...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source ended before the bytes to copy: it was truncated while being copied, or the range is wrong.
    #[error("read {path}: the file ends at byte {found}, before the {expected} bytes to copy; it was truncated during the copy or the range is wrong")]
    SourceShort {
        /// The source.
        path: PathBuf,
        /// Bytes expected.
        expected: u64,
        /// Where it ended.
        found: u64,
    },
    /// The target already exists: the copier never overwrites.
    #[error("create {path}: the target already exists; remove it or choose an empty directory")]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
    /// The job was cancelled.
    #[error("copy cancelled")]
    Cancelled,
    /// The I/O backend could not be set up.
    #[error("cannot set up the {backend} backend: {reason}")]
    Setup {
        /// Which backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// A bug in the copier: an invariant of its loop did not hold, or the job panicked. The job was stopped only
    /// after every operation it had in flight completed, its targets were removed, and the copier can run the next
    /// job.
    #[error("internal error in the {backend} copier: {reason}; the job was stopped and its targets removed (a Backset bug: please report this message)")]
    Internal {
        /// Which backend.
        backend: &'static str,
        /// What did not hold.
        reason: String,
    },
    /// A request is malformed (named source, reason).
    #[error("bad copy request for {path}: {reason}")]
    BadRequest {
        /// The source.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CopyError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }
}
