//! Errors of the reference store: one enum for opening, checkpointing and reading ([`StoreError`]), one for commits
//! ([`CommitError`]).

use std::path::PathBuf;

use backset_format::{AtomError, JournalError, ReadError};
use uuid::Uuid;

/// Opening, recovering, checkpointing or reading the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory is held by another process (or another open in this one): see [`backset_engine::lock`].
    #[error(transparent)]
    Locked(#[from] backset_engine::lock::LockError),
    /// The archive directory is an unfinished restore.
    #[error(transparent)]
    UnfinishedRestore(#[from] backset_engine::restore::UnfinishedRestore),
    /// A directory read as an archive (not by a running SM) is not one, or lacks `atoms/` or its journal.
    #[error("{path} is not an archive directory: {reason}")]
    NotAnArchive {
        /// The directory.
        path: PathBuf,
        /// What it is, or what it lacks, and what to do.
        reason: String,
    },
    /// The operating system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`open`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the archive cannot be read: not a regular file, larger than the format allows, or the operating
    /// system refused.
    #[error(transparent)]
    File(#[from] ReadError),
    /// A journal segment does not parse.
    #[error("journal segment {path}: {source}")]
    Journal {
        /// The segment file.
        path: PathBuf,
        /// What the format reader found.
        source: JournalError,
    },
    /// An atom file does not parse.
    #[error("atom file {path}: {source}")]
    Atom {
        /// The atom file.
        path: PathBuf,
        /// What the format reader found.
        source: AtomError,
    },
    /// A file parses at the format level but its content is wrong for the store.
    #[error("{path}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid store configuration: {reason}")]
    Config {
        /// Which setting and why.
        reason: String,
    },
    /// The configuration differs from what the database was created with.
    #[error(
        "{path}: the database was created with {field} = {on_disk}, the configuration asks for {requested}; open it \
         with the same {field} (it is fixed at creation)"
    )]
    Mismatch {
        /// The database metadata file.
        path: PathBuf,
        /// The setting.
        field: &'static str,
        /// The value on disk.
        on_disk: String,
        /// The value asked for.
        requested: String,
    },
    /// A journal segment belongs to another database.
    #[error(
        "{path} belongs to database {found}, not {expected}; this archive directory is another database's (or set \
         Config::database_id to {found} when opening a restored archive)"
    )]
    WrongDatabase {
        /// The segment file.
        path: PathBuf,
        /// This database's id.
        expected: Uuid,
        /// The id in the file.
        found: Uuid,
    },
    /// The database is closed or stopping.
    #[error("database {name} is closed")]
    Closed {
        /// Database name.
        name: String,
    },
    /// An SM's journal writer failed; the SM serves nothing more until the database is reopened (recovery then
    /// truncates whatever the failed write left).
    #[error("archive {archive_id}: journal writer failed: {reason}; close the database and reopen it to recover")]
    WriterFailed {
        /// Archive id.
        archive_id: u64,
        /// The failure.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// A commit was refused or failed. Refusals (every variant but [`CommitError::Store`]) happen before a transaction
/// id is assigned: nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// No put and no delete.
    #[error("transaction has no put and no delete; give it at least one operation")]
    Empty,
    /// More operations than `limits::MAX_OPS_PER_TXN`.
    #[error("transaction has {count} operations, more than the limit of {max}; split it")]
    TooManyOps {
        /// Puts plus deletes.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A key is empty or longer than `limits::MAX_KEY_BYTES`.
    #[error("key {key:?} is {len} bytes; keys must be 1..={max} bytes")]
    BadKey {
        /// The key (lossy UTF-8, first 64 bytes).
        key: String,
        /// Its length.
        len: usize,
        /// `limits::MAX_KEY_BYTES`.
        max: usize,
    },
    /// A value is longer than `limits::MAX_VALUE_BYTES`.
    #[error("value of key {key:?} is {len} bytes, more than the limit of {max}; store large values in pieces")]
    ValueTooLarge {
        /// The key (lossy UTF-8, first 64 bytes).
        key: String,
        /// The value's length.
        len: usize,
        /// `limits::MAX_VALUE_BYTES`.
        max: usize,
    },
    /// A key appears twice in the transaction (two puts, two deletes, or a put and a delete).
    #[error("key {key:?} appears more than once in the transaction; give each key at most one put or delete")]
    DuplicateKey {
        /// The key (lossy UTF-8, first 64 bytes).
        key: String,
    },
    /// The journal record the transaction needs is larger than the format allows.
    #[error(
        "transaction needs a journal record payload of {len} bytes in archive {archive_id}, more than the limit of \
         {max} (backset_format::limits::MAX_RECORD_PAYLOAD_BYTES); split it into smaller transactions"
    )]
    PayloadTooLarge {
        /// Archive whose record would be too large.
        archive_id: u64,
        /// Payload bytes needed.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// An atom would grow past the atom body limit.
    #[error(
        "atom {atom_id:#x} of archive {archive_id} would hold {bytes} bytes, more than the limit of {max}; create the \
         database with more atom buckets, or store less under keys that hash together"
    )]
    AtomFull {
        /// Archive id.
        archive_id: u64,
        /// Atom id.
        atom_id: u64,
        /// Bytes it would hold.
        bytes: u64,
        /// `limits::MAX_STORE_ATOM_BODY_BYTES`.
        max: u64,
    },
    /// The store is closed or an SM failed. If a transaction id had been assigned, the outcome is unknown: the
    /// record may be durable in some journals and will then be replayed at the next open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key for an error message: lossy UTF-8 of its first 64 bytes.
pub(crate) fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned()
}
