//! What a check reports: defects, their kinds, the report and why a check could not run.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use backset_copier::CopyError;
use backset_format::layout::CONTROL_DIR;
use backset_format::{ElementName, TxnRange};

use crate::limits::CHECK_MAX_DEFECTS_PER_FILE;
use crate::set::SetError;

/// What kind of defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DefectKind {
    /// A metadata file (state or control file) is missing, unreadable or does not decode.
    Metadata,
    /// The state lists a completed element whose directory is missing or not a directory.
    MissingElement,
    /// Control files disagree with the state or with each other.
    Inconsistent,
    /// The element chain is broken (parents, end points, journal contiguity).
    Chain,
    /// A catalog disagrees with the manifests.
    Catalog,
    /// An element's `data/` is missing (moved away) while its manifest lists files.
    DataMissing,
    /// A data file the manifest lists is missing.
    MissingFile,
    /// A file or directory the format does not define.
    ExtraFile,
    /// A symbolic link, a device or a directory where a regular file belongs (or the reverse).
    NotRegular,
    /// A data file's size differs from the manifest's.
    Size,
    /// A data file's bytes differ from the manifest's hashes.
    Hash,
    /// An atom file's header is wrong (does not parse, another atom, LSN, length).
    Atom,
    /// A journal slice's framing is wrong (header, records, order, range, torn tail).
    Journal,
    /// A file could not be read.
    Io,
    /// The operating system would not let this user read a file or list a directory (`EACCES`, `EPERM`): nothing is
    /// known to be damaged; run the check as a user who can read the whole set.
    Permission,
}

impl DefectKind {
    /// The kind's stable name, as `check --json` prints it (`docs/CLI.md`): snake case of the variant.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::MissingElement => "missing_element",
            Self::Inconsistent => "inconsistent",
            Self::Chain => "chain",
            Self::Catalog => "catalog",
            Self::DataMissing => "data_missing",
            Self::MissingFile => "missing_file",
            Self::ExtraFile => "extra_file",
            Self::NotRegular => "not_regular",
            Self::Size => "size",
            Self::Hash => "hash",
            Self::Atom => "atom",
            Self::Journal => "journal",
            Self::Io => "io",
            Self::Permission => "permission",
        }
    }
}

/// What a defect of kind [`DefectKind::Permission`] says to do.
pub(crate) const UNREADABLE: &str =
    "this user may not read it (it may be intact): run as a user who can read it all (its owner, or root)";

/// One defect: what is wrong, in which element and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// The element, when the defect is inside one.
    pub element: Option<ElementName>,
    /// The file or directory at fault, when there is one.
    pub file: Option<PathBuf>,
    /// What kind of defect.
    pub kind: DefectKind,
    /// What is wrong, for an operator.
    pub what: String,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.element, &self.file) {
            (Some(e), Some(p)) => write!(f, "element {e}: {}: {}", p.display(), self.what),
            (Some(e), None) => write!(f, "element {e}: {}", self.what),
            (None, Some(p)) => write!(f, "{}: {}", p.display(), self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The backup set.
    pub set_dir: PathBuf,
    /// Every defect found, in the order found (beyond [`CHECK_MAX_DEFECTS_PER_FILE`] of one kind in one file, the
    /// rest are one summary defect: see [`defects_total`](Self::defects_total)).
    pub defects: Vec<Defect>,
    /// How many more defects the summary defects stand for than the one entry each has in `defects`.
    pub summarized_beyond: u64,
    /// Observations that are not defects (elements in progress, leftovers of an interrupted hot copy).
    pub notes: Vec<String>,
    /// The transactions a restore can reach given what was checked: sorted, disjoint ranges. Empty when the set's
    /// metadata is damaged (restore refuses it) or nothing is restorable.
    pub restorable: Vec<TxnRange>,
    /// Whether only metadata was checked.
    pub metadata_only: bool,
    /// Completed elements listed in the state.
    pub elements: usize,
    /// Elements whose data was not read because the set's verification record shows them verified without defect
    /// (`check --new`, `--since`); 0 for a full check.
    pub verified_before: usize,
    /// Data files read and hashed.
    pub files_read: u64,
    /// Bytes of data read and hashed.
    pub bytes_read: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl CheckReport {
    /// Every defect found, listed or not (a summary defect counts as the defects it stands for).
    pub fn defects_total(&self) -> u64 {
        self.defects.len() as u64 + self.summarized_beyond
    }

    /// No defect found.
    pub fn is_ok(&self) -> bool {
        self.defects.is_empty()
    }

    /// The last restorable transaction, if any.
    pub fn restorable_max(&self) -> Option<u64> {
        self.restorable.last().map(|r| r.last)
    }

    pub(super) fn defect(
        &mut self,
        element: Option<ElementName>,
        file: Option<PathBuf>,
        kind: DefectKind,
        what: String,
    ) {
        self.defects.push(Defect { element, file, kind, what });
    }
}

/// Defects of one kind found in one file or directory: the first [`CHECK_MAX_DEFECTS_PER_FILE`] are listed, the
/// others counted and reported as one, so that a small hostile file (a catalog of 3-byte entries, a directory of
/// empty files) cannot make the report, and the check's memory, grow past the bound of `docs/RESTORE.md`.
#[derive(Default)]
pub(super) struct Capped {
    pub(super) listed: usize,
    pub(super) more: u64,
}

impl Capped {
    pub(super) fn defect(
        &mut self,
        r: &mut CheckReport,
        element: Option<ElementName>,
        file: Option<PathBuf>,
        kind: DefectKind,
        what: impl FnOnce() -> String,
    ) {
        if self.listed < CHECK_MAX_DEFECTS_PER_FILE {
            self.listed += 1;
            r.defect(element, file, kind, what());
        } else {
            self.more += 1;
        }
    }

    /// Reports the defects counted but not listed, if any, on `file` (the file or directory they are in).
    pub(super) fn finish(
        self,
        r: &mut CheckReport,
        element: Option<ElementName>,
        file: PathBuf,
        kind: DefectKind,
        what: &str,
    ) {
        if self.more > 0 {
            r.summarized_beyond += self.more - 1;
            r.defect(
                element,
                Some(file),
                kind,
                format!(
                    "{} more {what} (not listed: a check lists at most {CHECK_MAX_DEFECTS_PER_FILE} per file or \
                     directory); fix the ones listed and check again",
                    self.more
                ),
            );
        }
    }
}

/// A check could not run at all (as opposed to the defects it reports).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The path is not a directory that could be read.
    #[error("{path} is not a backup set or archive directory: {reason}; check the path")]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The path is not a backup set (`check`): what it is instead, and what to do.
    #[error("{path} is not a backup set: {reason}")]
    NotASet {
        /// The path.
        path: PathBuf,
        /// What it is, and what to do.
        reason: String,
    },
    /// The set on object storage cannot be reached (no such bucket, refused credentials, unreachable store).
    #[error("cannot check {path}: {source}")]
    Store {
        /// The set.
        path: PathBuf,
        /// Why.
        source: Box<crate::set::SetError>,
    },
    /// The archive directory is an unfinished restore (`archive check`).
    #[error(transparent)]
    UnfinishedRestore(#[from] crate::restore::UnfinishedRestore),
    /// The path is not an archive (`archive check`): what it is instead, and what to do.
    #[error("{path} is not an archive directory: {reason}")]
    NotAnArchive {
        /// The path.
        path: PathBuf,
        /// What it is, and what to do.
        reason: String,
    },
    /// The copier could not be set up.
    #[error("cannot check {path}: {source}")]
    Copier {
        /// The set.
        path: PathBuf,
        /// The copier's error.
        source: CopyError,
    },
    /// The check was cancelled through its control.
    #[error("the check of {path} was cancelled")]
    Cancelled {
        /// The set.
        path: PathBuf,
    },
    /// The archive is held by a running SM (see [`crate::lock`]).
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
}

pub(super) fn set_error_defect(e: &SetError) -> Defect {
    let kind = match e {
        SetError::Metadata { source, .. } if source.is_permission() => DefectKind::Permission,
        SetError::Metadata { .. } => DefectKind::Metadata,
        SetError::Link { path, .. } if path.file_name().is_some_and(|n| n == CONTROL_DIR) => DefectKind::NotRegular,
        SetError::ElementMissing { .. } | SetError::Link { .. } => DefectKind::MissingElement,
        SetError::Inconsistent { .. } => DefectKind::Inconsistent,
        SetError::Chain { .. } => DefectKind::Chain,
        _ => DefectKind::Io,
    };
    Defect { element: e.element(), file: e.path(), kind, what: e.to_string() }
}
