//! Typed errors, one enum per kind of operation. Every message says what is wrong, where, and what to do.

use std::path::PathBuf;

/// A metadata file (state, manifest, catalog, element info) could not be decoded or encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// Fewer bytes than a header.
    #[error(
        "metadata file is truncated: {len} bytes, a header needs {needed}; the file was cut short, restore it from a copy"
    )]
    Truncated {
        /// Bytes present.
        len: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The first 8 bytes are not the metadata magic.
    #[error("not a Backset metadata file: magic is {found:02x?}; the file is damaged or not part of a backup set")]
    BadMagic {
        /// The 8 bytes found.
        found: [u8; 8],
    },
    /// A format version this build does not read.
    #[error(
        "metadata format version {found} is not supported (this build reads version {supported}); use a newer backset"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The file holds another kind of metadata than the caller asked for.
    #[error("metadata kind is {found}, expected {expected}; the file was renamed or swapped with another")]
    WrongKind {
        /// Kind the caller asked for.
        expected: &'static str,
        /// Kind code found (a name where known).
        found: String,
    },
    /// The reserved header field is not zero.
    #[error("metadata header reserved field is {found:#x}, must be 0; the header is damaged")]
    ReservedNotZero {
        /// The value found.
        found: u32,
    },
    /// The declared body length exceeds the limit.
    #[error("metadata body length {declared} exceeds the limit of {max} bytes; the header is damaged or the file is hostile")]
    BodyTooLarge {
        /// Declared length.
        declared: u64,
        /// `limits::MAX_METADATA_BODY_BYTES`.
        max: u64,
    },
    /// The body is not as long as the header says.
    #[error(
        "metadata body is {actual} bytes but the header declares {declared}; the file is truncated or has extra bytes"
    )]
    LengthMismatch {
        /// Length from the header.
        declared: u64,
        /// Length present.
        actual: u64,
    },
    /// The body does not match its BLAKE3 hash.
    #[error("metadata body checksum mismatch (BLAKE3 {found} but header says {expected}); the file is damaged")]
    ChecksumMismatch {
        /// Hash in the header, hex.
        expected: String,
        /// Hash of the body, hex.
        found: String,
    },
    /// The body does not decode as the expected structure.
    #[error("metadata body of kind {kind} does not decode: {reason}; the file is damaged or was written by an incompatible writer")]
    Decode {
        /// Metadata kind.
        kind: &'static str,
        /// Decoder's reason.
        reason: String,
    },
    /// The body decodes but bytes follow it.
    #[error("metadata body of kind {kind} has {extra} trailing bytes after its end; the file is damaged")]
    TrailingBytes {
        /// Metadata kind.
        kind: &'static str,
        /// Bytes left over.
        extra: u64,
    },
    /// The body decodes but breaks a rule of the format (a limit, an order, a uniqueness).
    #[error("metadata of kind {kind} is invalid: {reason}")]
    Invalid {
        /// Metadata kind.
        kind: &'static str,
        /// Which rule and which element break it.
        reason: String,
    },
}

/// A journal segment's header or one of its records is damaged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalError {
    /// The segment header is damaged or of another format.
    #[error("journal segment header is invalid: {reason}; the segment is damaged or not a Backset journal")]
    BadHeader {
        /// What is wrong.
        reason: String,
    },
    /// The segment is larger than `limits::MAX_SEGMENT_BYTES`.
    #[error("journal segment is {len} bytes, more than the limit of {max}; the file is not a journal segment")]
    TooLarge {
        /// File length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A damaged record with intact data after it: real corruption, not a torn tail.
    #[error("journal segment {segment} is corrupt at byte offset {offset}: {reason}; valid records follow, so this is damage, not a torn write")]
    Corrupt {
        /// Segment number.
        segment: u64,
        /// Byte offset of the damaged record in the segment.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record the caller wants to write breaks a rule.
    #[error("journal record cannot be written: {reason}")]
    BadRecord {
        /// What is wrong.
        reason: String,
    },
}

/// An atom file is damaged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtomError {
    /// Header damaged, wrong magic or version, or truncated.
    #[error("atom file header is invalid: {reason}; the atom file is damaged")]
    BadHeader {
        /// What is wrong.
        reason: String,
    },
    /// The body length differs from the header's.
    #[error("atom {atom_id} body is {actual} bytes but its header declares {declared}; the atom file is truncated or has extra bytes")]
    LengthMismatch {
        /// Atom id.
        atom_id: u64,
        /// Declared.
        declared: u64,
        /// Present.
        actual: u64,
    },
    /// The body does not match its hash.
    #[error("atom {atom_id} body checksum mismatch; the atom file is damaged")]
    ChecksumMismatch {
        /// Atom id.
        atom_id: u64,
    },
}

/// A name inside a backup set (an element directory) is not one the format defines.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{name:?} is not a backup-set element name (expected `full`, `N.inc` or `N.jnl` with N in 1..={max})")]
pub struct NameError {
    /// The rejected name (lossy UTF-8).
    pub name: String,
    /// `limits::MAX_ELEMENT_SEQUENCE`.
    pub max: u32,
}

/// Reading a file of a backup set or an archive from disk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The operating system refused the read.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`open`, `read`, `stat`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a regular file (a symlink, a directory, a FIFO, a device): backup sets and archives hold
    /// regular files only, and Backset never follows a link to one.
    #[error(
        "{path} is not a regular file (a symbolic link, a directory, a FIFO or a device); backup sets and archives \
         hold regular files only: put the real file in its place or remove it"
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file is longer than anything of its kind may be, so it was not read.
    #[error("{path} is {len} bytes, more than the format allows for it ({max}); the file is damaged or not Backset's")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The format's limit for it.
        max: u64,
    },
    /// The bytes are not valid metadata.
    #[error("{path}: {source}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: MetadataError,
    },
}

impl ReadError {
    /// The file that could not be read.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegular { path }
            | Self::TooLarge { path, .. }
            | Self::Metadata { path, .. } => path,
        }
    }

    /// Whether the operating system refused access to the file (`EACCES`, `EPERM`): the file may be intact.
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

/// Writing a file atomically failed. Nothing is left under the target name unless the write completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The operating system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// `create`, `write`, `fsync`, `rename`, ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The value breaks a format rule and was not written.
    #[error("{path}: {source}")]
    Metadata {
        /// The file that would have been written.
        path: PathBuf,
        /// The rule broken.
        source: MetadataError,
    },
}
