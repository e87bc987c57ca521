//! Backup sets: the one module that reads and writes a set's metadata and layout. Hot copy, restore, check,
//! `restore --report-backups` and the offline tools go through it, never through the set's paths directly.
//!
//! - [`layout`]: which names may stand where in a set (the top, an element, its `control/` and `data/`), once.
//! - [`read`]: [`BackupSet`], the reader. [`BackupSet::open`] is strict (the first problem refuses the set: what
//!   restore and hot copies use); [`BackupSet::load`] applies the same rules and collects the problems instead
//!   (what check uses). Both refuse to follow a link in place of an element directory or its `control/`, and check
//!   ids, kinds, sequence numbers, transaction ranges, participants and the element chain.
//! - [`plan`]: what a restore can reach ([`BackupSet::restorable`]), which elements supply the journal records of a
//!   range ([`BackupSet::plan_journal`]) and which element holds each atom ([`BackupSet::resolve_atoms`]), shared by
//!   restore and check.
//! - [`data`]: a data file read back and verified against its manifest entry (journal slices streamed chunk by
//!   chunk, atom headers), shared by restore and check.
//! - [`storage`]: the seam under all of it: [`SetStorage`] (list, read whole or a range or streamed, write metadata
//!   atomically, stage, seal, publish and remove an element) and its implementation for a local directory,
//!   [`LocalDir`].
//! - [`object`]: [`ObjectStore`], the set on S3-compatible object storage (`s3://bucket/prefix`): elements
//!   published by a create-only commit record, `state` derived from the commit records.
//! - [`copy`]: `backset set copy`, a completed set copied between a directory and object storage (either way)
//!   through the destination's writer, every byte verified, each element published after its data, resumable.
//! - [`verified`]: the set's verification record, which only check reads and writes (`check --new`, `--since`).
//! - `write`: the writer hot copies use (`SetWriter`): initialise a set, begin, finish and abort an element,
//!   remove the leftovers of a crash, in FORMAT.md's write order.

pub mod copy;
pub mod data;
pub mod layout;
pub mod object;
pub mod plan;
pub mod read;
pub mod storage;
pub mod verified;
pub(crate) mod write;

use std::path::PathBuf;

use backset_format::{ElementName, ReadError, WriteError};

pub use data::{SliceError, SliceSummary};
pub use object::ObjectStore;
pub use plan::{describe_ranges, AtomSource, JournalPart};
pub use read::{read_state, BackupSet, Element, UnreadElement};
pub use storage::{LocalDir, PieceSink, SetStorage};
pub(crate) use write::{dir_content, Begun, DirContent, SetWriter};

/// Why a backup set (or part of it) cannot be read, trusted or written. Every variant names the file or directory,
/// and the set and element where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The operating system refused an operation on the set.
    #[error("{op} {path}: {source}; check the backup set's path and permissions")]
    Io {
        /// The operation (`stat`, `read directory`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a backup set directory.
    #[error("{path} is not a backup set: {reason}")]
    NotASet {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A metadata file (the state or a control file) is missing, damaged, or this user may not read it.
    #[error(
        "backup set {set}{}: {source}; {}",
        .element.map(|e| format!(", element {e}")).unwrap_or_default(),
        metadata_advice(source)
    )]
    Metadata {
        /// The set.
        set: PathBuf,
        /// The element whose control file it is, or `None` for the state.
        element: Option<ElementName>,
        /// What is wrong, with the file's path.
        source: ReadError,
    },
    /// A metadata file could not be written.
    #[error("{source}")]
    Write {
        /// The writer's error, naming the file.
        #[from]
        source: WriteError,
    },
    /// The state lists a completed element whose directory is missing.
    #[error(
        "backup set {set}: element {element} is listed as completed in the state, but its directory {path} is \
         missing; put the element back (elements of a set are never deleted one by one)"
    )]
    ElementMissing {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// Its expected directory.
        path: PathBuf,
    },
    /// A directory of the set (an element's, its `control/` or `data/`, `tmp/`) is a symbolic link or not a
    /// directory: never followed, never removed; readers refuse the set and hot copies into it are refused until it
    /// is gone.
    #[error(
        "{}{} is {what} where a directory of the backup set belongs (a backup set never contains links, and none \
         is followed); the set is refused and nothing in it was changed: run `backset check` on the set, remove \
         {} (`rm` removes a link, not what it leads to), put back from a copy of the set what belongs there, and \
         run the command again",
        .element.map(|e| format!("element {e}: ")).unwrap_or_default(),
        .path.display(),
        .path.display()
    )]
    Link {
        /// The link (or other non-directory).
        path: PathBuf,
        /// The element it is part of, if any (`None` for `tmp/`).
        element: Option<ElementName>,
        /// `a symbolic link` or `not a directory`.
        what: &'static str,
    },
    /// An element's control files disagree with the state or with each other.
    #[error(
        "backup set {set}: element {element}: {}: {reason}; the set's metadata is inconsistent (damaged, or \
         assembled from several sets): restore it from a copy of the set",
        .file.display()
    )]
    Inconsistent {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// The control file at fault.
        file: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The element chain is broken: a wrong parent, a gap in the journal chain, end points going backwards.
    #[error(
        "backup set {set}: element {element}: {reason}; the element chain is broken: restore the set from a copy \
         (run `backset check` for every defect)"
    )]
    Chain {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// What is wrong.
        reason: String,
    },
    /// The set changed under a hot copy in a way the writer does not expect (an element directory already in place,
    /// an in-progress entry gone).
    #[error("{path}: {reason}; the backup set is damaged or was edited by hand, run `backset check` on it")]
    Conflict {
        /// The file or directory.
        path: PathBuf,
        /// How.
        reason: String,
    },
    /// An operation on object storage failed (the store's error names the object and says what to do).
    #[error("{source}")]
    ObjectStore {
        /// The store's error.
        source: backset_objstore::ObjStoreError,
    },
    /// The set belongs to another database or archive.
    #[error("backup set {dir} holds {set}, not {archive}; give each archive its own backup set")]
    Foreign {
        /// The set.
        dir: PathBuf,
        /// Whose the set is: `archive <id> of database <name> (<id>)`.
        set: String,
        /// The archive being copied, likewise.
        archive: String,
    },
}

/// What to do about a metadata file that could not be read: restore a damaged one from a copy; for one the operating
/// system would not let this user read, nothing is known to be damaged.
fn metadata_advice(source: &ReadError) -> &'static str {
    if source.is_permission() {
        "this user may not read it (the file itself may be intact): run as a user who can read the whole backup set \
         (its owner, or root)"
    } else {
        "the backup set's metadata is damaged: restore the file from a copy of the set (run `backset check` for \
         every defect)"
    }
}

impl SetError {
    /// The element the error is about, if any.
    pub fn element(&self) -> Option<ElementName> {
        match self {
            Self::Io { .. }
            | Self::NotASet { .. }
            | Self::Write { .. }
            | Self::Conflict { .. }
            | Self::ObjectStore { .. }
            | Self::Foreign { .. } => None,
            Self::Metadata { element, .. } | Self::Link { element, .. } => *element,
            Self::ElementMissing { element, .. } | Self::Inconsistent { element, .. } | Self::Chain { element, .. } => {
                Some(*element)
            }
        }
    }

    /// The file or directory the error is about, if any.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Io { path, .. } | Self::NotASet { path, .. } | Self::Conflict { path, .. } => Some(path.clone()),
            Self::Metadata { source, .. } => Some(source.path().to_path_buf()),
            Self::Write { source: WriteError::Io { path, .. } | WriteError::Metadata { path, .. } } => {
                Some(path.clone())
            }
            Self::Write { .. } | Self::ObjectStore { .. } => None,
            Self::ElementMissing { path, .. } | Self::Link { path, .. } => Some(path.clone()),
            Self::Inconsistent { file, .. } => Some(file.clone()),
            Self::Chain { set, element, .. } => Some(set.join(element.to_string())),
            Self::Foreign { dir, .. } => Some(dir.clone()),
        }
    }
}

/// Lower-case hex of a hash.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    blake3::Hash::from(*hash).to_hex().to_string()
}
