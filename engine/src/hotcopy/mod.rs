//! Hot copy jobs: simple, full, incremental and journal hot copies of running archives into backup sets, coordinated
//! across archives, with NuoDB's rules, statuses and messages (`docs/HOTCOPY.md` is the operator's view).
//!
//! - [`HotCopyManager`] ([`manager`]): starts jobs from a [`HotCopyRequest`], reports their [`HotCopyStatus`],
//!   cancels them, keeps the final statuses across restarts; one rate budget per archive shared by all its jobs.
//! - Backup sets are read and written through [`crate::set`] (the strict reader; the writer that initialises a set,
//!   begins, finishes and aborts an element and cleans the leftovers of a crash).
//! - `job`: what one archive does in a hot copy (pin, atoms, end point, journal, control files, commit).
//! - `coordinator`: the stage barriers of a (coordinated) hot copy, the choice of one end point E for all
//!   participants, cancel and failure propagation, and the storage group coverage rule.
//!
//! # The consistency rule (DESIGN.md)
//! Each participant pins its journal at R, copies its atoms, and reports R and the highest LSN it copied. Once all
//! have, one end point is chosen: `E = max(D, every participant's highest copied LSN, every participant's R')`, where
//! D is the archive's durable watermark (one archive) or the database's (several), and `R' = min(R, durable at the
//! pin)`. Every participant then waits until E is durable on its archive, copies its journal `[R, E]`, writes its
//! control files, and only when every participant has everything durable in `tmp/` do they all move their element
//! into place. So every copied atom has LSN `<= E`, every record `<= E` of each archive is in its set, and the sets
//! of a coordinated hot copy share E.

mod chains;
mod coordinator;
pub(crate) mod fault;
mod job;
pub mod manager;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::archive::ArchiveError;
use crate::set::SetError;
pub use manager::HotCopyManager;

/// Message of a job that completed.
pub const MSG_COMPLETED: &str = "Hot copy successfully completed";
/// Message of a job that was cancelled.
pub const MSG_CANCELLED: &str = "Hot copy cancelled";
/// Prefix of the message of a job that failed; the cause follows.
pub const MSG_FAILED_PREFIX: &str = "Hot copy failed: ";
/// What a job's message says after its own while its final status is not saved in the status directory.
pub const MSG_NOT_SAVED: &str = "its final status is not saved";
/// What the message of a job found running in the persisted statuses says after [`MSG_COMPLETED`] when its
/// destinations show it completed: its final status was never saved.
pub const MSG_RECOGNISED: &str =
    "recognised at restart from its destinations: the process stopped before its final status was saved";
/// Message of a job found running in the persisted statuses when a manager starts: its process died.
pub const MSG_PROCESS_STOPPED: &str = "Hot copy failed: the process stopped while the hot copy was running";

/// The four types of hot copy (NuoDB's `--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotCopyType {
    /// A plain archive directory (`atoms/`, `journal/`), usable by an SM as is; `<dir>.incomplete` while it runs.
    Simple,
    /// A new backup set: every atom and the journal written during the copy; element `full`.
    Full,
    /// Atoms changed since the newest full or incremental of the set, and the journal during the copy; `N.inc`.
    Incremental,
    /// Journal records since the previous journal element (or since the full's R); `N.jnl`.
    Journal,
}

impl HotCopyType {
    /// NuoDB's name: `simple`, `full`, `incremental`, `journal`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Full => "full",
            Self::Incremental => "incremental",
            Self::Journal => "journal",
        }
    }
}

impl fmt::Display for HotCopyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HotCopyType {
    type Err = HotCopyError;

    fn from_str(s: &str) -> Result<Self, HotCopyError> {
        match s {
            "simple" => Ok(Self::Simple),
            "full" => Ok(Self::Full),
            "incremental" => Ok(Self::Incremental),
            "journal" => Ok(Self::Journal),
            _ => Err(HotCopyError::Request {
                reason: format!("unknown hot copy type {s:?}; use simple, full, incremental or journal"),
            }),
        }
    }
}

/// What to hot-copy and where: the options of `nuocmd hotcopy database` and of the REST `hotCopy` body.
///
/// The participating archives are: with `archives` (the archives a `--process-filter` selected), those, each in
/// `backup_dirs[id]` or else the default directory; otherwise every archive named in `backup_dirs`, plus, when a
/// default directory is given, every other archive of the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotCopyRequest {
    /// Type of hot copy.
    #[serde(rename = "type")]
    pub kind: HotCopyType,
    /// Destination per archive id (`--backup-dirs`): the backup set (or, for a simple hot copy, the archive copy).
    pub backup_dirs: BTreeMap<u64, PathBuf>,
    /// Destination of every archive without a `backup_dirs` entry (`--default-backup-dir`).
    pub default_backup_dir: Option<PathBuf>,
    /// The archives selected by a process filter (`--process-filter`), when one was given.
    pub archives: Option<Vec<u64>>,
    /// `--shared`: the default directory is shared storage; it must exist, and each archive writes into its
    /// subdirectory named by its archive id. Not with a simple hot copy.
    pub shared: bool,
    /// `--max-rate` in bytes per second (per SM, per job; the CLI's MB/s times 10^6). `None`: only the SM budget.
    pub max_rate: Option<u64>,
    /// `--partial-storage-groups`: accept archives that together do not serve every storage group.
    pub partial_storage_groups: bool,
    /// Simple hot copy only: the journal directory per archive id when it is not `<archive copy>/journal` (REST
    /// `copyJournalDir`). It must be absent or empty, outside the archive copy; `<dir>.incomplete` while it runs.
    #[serde(default)]
    pub journal_dirs: BTreeMap<u64, PathBuf>,
    /// Simple hot copy only: the journal directory of every archive without a `journal_dirs` entry.
    #[serde(default)]
    pub default_journal_dir: Option<PathBuf>,
}

impl HotCopyRequest {
    /// A request of `kind` with no destination yet.
    pub fn new(kind: HotCopyType) -> Self {
        Self {
            kind,
            backup_dirs: BTreeMap::new(),
            default_backup_dir: None,
            archives: None,
            shared: false,
            max_rate: None,
            partial_storage_groups: false,
            journal_dirs: BTreeMap::new(),
            default_journal_dir: None,
        }
    }

    /// Simple hot copy: writes the journal of `archive_id` into `dir` instead of `<archive copy>/journal`.
    pub fn journal_dir(mut self, archive_id: u64, dir: impl Into<PathBuf>) -> Self {
        self.journal_dirs.insert(archive_id, dir.into());
        self
    }

    /// Simple hot copy: the journal directory of every archive without a [`journal_dir`](Self::journal_dir).
    pub fn default_journal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.default_journal_dir = Some(dir.into());
        self
    }

    /// Adds `--backup-dirs <archive_id> <dir>`.
    pub fn backup_dir(mut self, archive_id: u64, dir: impl Into<PathBuf>) -> Self {
        self.backup_dirs.insert(archive_id, dir.into());
        self
    }

    /// Sets `--default-backup-dir`.
    pub fn default_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.default_backup_dir = Some(dir.into());
        self
    }

    /// Sets `--shared`.
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Sets `--max-rate` in bytes per second.
    pub fn max_rate(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.max_rate = bytes_per_sec;
        self
    }

    /// Sets `--partial-storage-groups`.
    pub fn partial_storage_groups(mut self, allowed: bool) -> Self {
        self.partial_storage_groups = allowed;
        self
    }

    /// Restricts the archives to those a process filter selected.
    pub fn archives(mut self, archive_ids: Vec<u64>) -> Self {
        self.archives = Some(archive_ids);
        self
    }
}

/// Where a job is in its life (NuoDB's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Still working.
    Running,
    /// Every element is in place.
    Completed,
    /// Stopped by an error; every set is as valid as before.
    Failed,
    /// Stopped by a cancel; every set is as valid as before.
    Cancelled,
}

impl JobState {
    /// `running`, `completed`, `failed`, `cancelled`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stages of a hot copy, in order. A participant passes through those of its type (a journal hot copy has no
/// atom stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Checks, journal pin, set initialisation, element begun in `tmp/`.
    Begin,
    /// Atom files being copied.
    CopyAtoms,
    /// Waiting for the other participants, for the end point E to be chosen and to be durable.
    WaitEndPoint,
    /// Journal slices `[R, E]` being copied.
    CopyJournal,
    /// Control files being written and made durable; waiting for every participant before moving into place.
    WriteMetadata,
}

impl Stage {
    /// NuoDB's stage number: 1, 2 or 3.
    pub const fn number(self) -> u32 {
        match self {
            Self::Begin | Self::CopyAtoms => 1,
            Self::WaitEndPoint | Self::CopyJournal => 2,
            Self::WriteMetadata => 3,
        }
    }

    /// The status message of the stage: `Stage1: Begin`, `Stage1: Copy atoms`, `Stage2: Wait for end point`,
    /// `Stage2: Copy journal`, `Stage3: Write metadata`.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Begin => "Stage1: Begin",
            Self::CopyAtoms => "Stage1: Copy atoms",
            Self::WaitEndPoint => "Stage2: Wait for end point",
            Self::CopyJournal => "Stage2: Copy journal",
            Self::WriteMetadata => "Stage3: Write metadata",
        }
    }
}

/// The status of one archive's part in a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantStatus {
    /// Start id of the archive's SM.
    pub start_id: u64,
    /// Archive id.
    pub archive_id: u64,
    /// The backup set (or simple copy) directory.
    pub destination: PathBuf,
    /// Stage number (1, 2, 3).
    pub stage: u32,
    /// The stage message while running; the outcome once ended.
    pub message: String,
    /// Bytes copied so far (atoms and journal).
    pub bytes_done: u64,
    /// Bytes to copy in all: those done, plus the listed atoms' sizes and the journal range's bytes not copied yet
    /// (estimated up to the durable end until the end point is chosen, then exact). Equal to `bytes_done` once the
    /// copying is over.
    pub bytes_total: u64,
    /// Files copied so far (atoms and journal segments).
    #[serde(default)]
    pub files_done: u64,
    /// Files to copy in all, planned as `bytes_total` is.
    #[serde(default)]
    pub files_total: u64,
    /// Copy rate over about the last second, bytes per second (0 when not copying).
    pub rate_bytes_per_sec: f64,
    /// Seconds left: the bytes left at the current rate, never faster than the job's `--max-rate` and its SM's
    /// rate (at that rate while nothing is copying; `None` when then nothing limits it). `None` once ended.
    #[serde(default)]
    pub eta_secs: Option<f64>,
    /// Name of the element made (`full`, `2.inc`, `1.jnl`), once begun; `None` for a simple hot copy, and for a
    /// journal hot copy that found nothing to copy.
    pub element: Option<String>,
    /// `[R, E]` of the element once E is chosen (for a journal element, the first and last txn it covers).
    pub txn_range: Option<(u64, u64)>,
}

/// The status of a hot copy job (NuoDB's `HotCopyResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotCopyStatus {
    /// Hot copy id.
    pub id: Uuid,
    /// Start id of the coordinating SM (the participant with the lowest archive id).
    pub coordinator_start_id: u64,
    /// Database name.
    pub database_name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: HotCopyType,
    /// `running`, `completed`, `failed`, `cancelled`.
    pub status: JobState,
    /// Stage number of the least advanced participant while running; the last stage reached once ended.
    pub stage: u32,
    /// While running, the least advanced participant's stage message; then [`MSG_COMPLETED`], [`MSG_CANCELLED`] or
    /// `Hot copy failed: <cause>` (cause: `archive <id>: ` and the error chain).
    pub message: String,
    /// Begin, microseconds since the Unix epoch.
    pub begin_micros: u64,
    /// End, microseconds since the Unix epoch, once ended.
    pub end_micros: Option<u64>,
    /// Bytes copied so far over all participants.
    pub bytes_done: u64,
    /// Bytes to copy in all over all participants (see [`ParticipantStatus::bytes_total`]).
    pub bytes_total: u64,
    /// Files copied so far over all participants.
    #[serde(default)]
    pub files_done: u64,
    /// Files to copy in all over all participants.
    #[serde(default)]
    pub files_total: u64,
    /// Current copy rate over all participants, bytes per second.
    pub rate_bytes_per_sec: f64,
    /// Seconds left: the longest of the participants' ([`ParticipantStatus::eta_secs`]; `None` when one's is
    /// unknown). `None` once ended.
    #[serde(default)]
    pub eta_secs: Option<f64>,
    /// The job's `--max-rate` (bytes per second per SM), as now set.
    pub max_rate: Option<u64>,
    /// Every participant, by archive id.
    pub participants: Vec<ParticipantStatus>,
}

impl HotCopyStatus {
    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// `begin_timestamp` as NuoDB prints it: `YYYY-MM-DD HH:MM:SS` (UTC).
    pub fn begin_timestamp(&self) -> String {
        format_timestamp(self.begin_micros)
    }

    /// `end_timestamp` as NuoDB prints it, once ended.
    pub fn end_timestamp(&self) -> Option<String> {
        self.end_micros.map(format_timestamp)
    }
}

/// Microseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC), the form of NuoDB's hot copy timestamps.
pub fn format_timestamp(micros: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(micros / 1_000_000);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Why a hot copy request was refused or a job failed. Every message says what, where, and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HotCopyError {
    /// The request is malformed (unknown archive, missing destination, conflicting options).
    #[error("invalid hot copy request: {reason}")]
    Request {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The archives of the request do not serve every storage group (NuoDB's exact message).
    #[error("Not all storage groups are included in hot-copy for dbName={database}, missingSgs=[{}]", .missing.join(", "))]
    MissingStorageGroups {
        /// Database name.
        database: String,
        /// Names of the storage groups no participant serves, sorted.
        missing: Vec<String>,
    },
    /// A hot copy of this type already runs on one of the archives (NuoDB's exact message).
    #[error("Only one {kind} hot copy at a time allowed")]
    AlreadyRunning {
        /// The type.
        kind: HotCopyType,
        /// The archive it runs on.
        archive_id: u64,
    },
    /// An incremental hot copy needs a completed full in the set.
    #[error(
        "Full hot copy must be completed before incremental hot copy: backup set {dir} {reason}; run a full hot copy \
         into it first"
    )]
    NeedsFull {
        /// The backup set.
        dir: PathBuf,
        /// What it lacks.
        reason: String,
    },
    /// An incremental hot copy into a set whose full hot copy still runs.
    #[error(
        "Full hot copy must be completed before incremental hot copy: full hot copy {id} into backup set {dir} is \
         still running; wait for it to end (`backset get hotcopy-status --coordinator-start-id \
         {coordinator_start_id} --hotcopy-id {id} --timeout SECONDS`), then start the incremental"
    )]
    FullRunning {
        /// The backup set.
        dir: PathBuf,
        /// The full's coordinator start id.
        coordinator_start_id: u64,
        /// The full's hot copy id.
        id: Uuid,
    },
    /// A journal hot copy needs a set whose full has at least begun.
    #[error("Full or incremental hot copy must be completed before journal hot copy: backup set {dir} {reason}")]
    NeedsFullForJournal {
        /// The backup set.
        dir: PathBuf,
        /// What it lacks, and what to do.
        reason: String,
    },
    /// A journal hot copy into a set that no longer continues the archive's journal chain (see `chains`).
    #[error(
        "backup set {dir} no longer takes journal hot copies of archive {archive_id}: a later full hot copy (completed, \
         or running and past its first stage) made {newest} the set that continues its journal, and the archive keeps \
         its journal only for that set; take journal hot copies into {newest}, or start a new set with a full hot copy"
    )]
    JournalChainMoved {
        /// The set asked for.
        dir: PathBuf,
        /// The archive.
        archive_id: u64,
        /// The set that continues the chain.
        newest: PathBuf,
    },
    /// The archive does not retain its journal for journal hot copies.
    #[error(
        "journal hot copy is disabled on archive {archive_id}: its SM recycles journal that no journal hot copy has \
         copied; start the SM with `journal-hot-copy enable`"
    )]
    JournalDisabled {
        /// Archive id.
        archive_id: u64,
    },
    /// The destination of a full or simple hot copy is not empty.
    #[error(
        "{dir} is not empty: a {kind} hot copy needs an absent or empty directory ({what}); choose another \
         directory or empty it"
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// The type.
        kind: HotCopyType,
        /// What is in it.
        what: String,
    },
    /// The destination of a full or simple hot copy is a file (or anything else that is not a directory).
    #[error(
        "{dir} is a file, not a directory: a {kind} hot copy needs an absent or empty directory; give another path"
    )]
    NotADirectory {
        /// The path.
        dir: PathBuf,
        /// The type.
        kind: HotCopyType,
    },
    /// The backup set could not be read or written.
    #[error(transparent)]
    Set(#[from] SetError),
    /// A destination directory could not be created (its parent is missing: the parent rule, [`crate::paths`]).
    #[error(transparent)]
    CreateDir(#[from] crate::paths::CreateDirError),
    /// The archive refused an operation.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The copier failed.
    #[error(transparent)]
    Copy(#[from] backset_copier::CopyError),
    /// A file of the hot copy could not be created, renamed or removed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An atom file copied from the archive is damaged or breaks the archive's guarantees.
    #[error("{path}: {reason}; the archive is damaged or its SM breaks the Archive guarantees, run `backset archive check` on it")]
    BadAtom {
        /// The archive's atom file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No job with this id is coordinated by this start id.
    #[error("no hot copy {id} with coordinator start id {coordinator_start_id}; list them with `get hotcopy-info`")]
    NotFound {
        /// The coordinator start id asked for.
        coordinator_start_id: u64,
        /// The hot copy id asked for.
        id: Uuid,
    },
    /// A persisted status, or the start id counter, could not be written or read.
    #[error("hot copy manager file {path}: {reason}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The job was cancelled, or stopped because another participant failed.
    #[error("hot copy stopped: {reason}")]
    Stopped {
        /// Cancelled, or which participant failed.
        reason: String,
    },
}

/// The message of an error with its causes, each cause added unless the message already shows it.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    msg
}

/// `error_chain(err)` prefixed by `archive <id>: `, unless the archive's own message already starts so.
pub(crate) fn on_archive(archive_id: u64, err: &(dyn std::error::Error + 'static)) -> String {
    let prefix = format!("archive {archive_id}: ");
    let msg = error_chain(err);
    if msg.starts_with(&prefix) {
        msg
    } else {
        prefix + &msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_its_archive_once() {
        let recycled = HotCopyError::from(ArchiveError::Recycled { archive_id: 3, first: 1, recycled_below: 2 });
        let msg = on_archive(3, &recycled);
        assert!(msg.starts_with("archive 3: journal records from transaction 1"), "{msg}");
        assert_eq!(msg.matches("archive 3").count(), 1, "{msg}");
        let other = HotCopyError::Stopped { reason: "x".into() };
        assert!(on_archive(3, &other).starts_with("archive 3: "));
    }
}
