//! [`HotCopyManager`]: starts hot copy jobs, reports and cancels them, and keeps their final statuses.
//!
//! - Every archive has one [`SmLimiter`] (its SM's budget, unlimited until [`HotCopyManager::set_sm_rate`]) shared by
//!   all its jobs; each job of each archive has its own [`JobLimiter`] capped at the request's `max_rate`.
//! - Every archive has one [`SmCopier`] (its SM's buffer pool and io_uring ring, set up by the first job that needs it
//!   and kept while the manager lives), to which all its jobs submit their copies: a full or incremental hot copy's
//!   atoms and journal and a journal hot copy running beside it share the ring and the pool, fairly, instead of each
//!   setting up its own ([`HotCopyManager::sm_copier`]).
//! - Start ids: unique per start, as NuoDB's are. Each manager (each start of the SMs it serves) gives every archive's
//!   SM a new start id, following the last one handed out in its data directory ([`LAST_START_ID_FILE`], written
//!   durably before any is used; the first start gives `1..=N` in archive id order). A job keeps the start ids it was
//!   started with, persisted with its status, so `(coordinator start id, hot copy id)` names one job across restarts
//!   ([`HotCopyManager::start_id`]). A job's coordinator is its participant with the lowest archive id.
//! - One job of a type per archive at a time (`Only one full hot copy at a time allowed`).
//! - Statuses persist as JSON in `<data dir>/hotcopy/<id>.json` (atomic writes): when a job starts and when it ends.
//!   A job's final status is written before the job reports its end. When that write fails, the live status says so
//!   ([`MSG_NOT_SAVED`]), it is logged at level error, and the job's thread retries it every
//!   [`HOTCOPY_STATUS_RETRY_INTERVAL`], [`HOTCOPY_STATUS_RETRIES`](crate::limits::HOTCOPY_STATUS_RETRIES) times
//!   (and [`HotCopyManager::shutdown`] once more).
//!   A manager that starts and finds a job persisted as running looks at its destinations: a job whose element every
//!   backup set lists as completed (its `control/element` names the hot copy), or a simple copy whose directory is in
//!   place, completed and is reported so ([`MSG_RECOGNISED`]); any other is marked failed ([`MSG_PROCESS_STOPPED`]):
//!   its process died, and the next hot copy of its sets removes what it left in `tmp/`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backset_copier::limit::{JobLimiter, SmLimiter};
use backset_copier::{CopyError, Options, SmCopier};
use backset_format::dirfd::{is_link, DirFd};
use backset_format::fsio::{write_file_atomic, TMP_FILE_PREFIX};
use backset_format::Participant;
use tokio::sync::watch;
use uuid::Uuid;

use crate::archive::{Archive, ArchiveIdentity};
use crate::clock::now_micros;
use crate::hotcopy::chains::JournalChains;
use crate::hotcopy::coordinator::{check_storage_groups, Coordinator, Outcome};
use crate::hotcopy::fault;
use crate::hotcopy::job::{
    incomplete_dir, incremental_blocker, open_set, preflight_full, preflight_simple, run_participant, JobContext,
    ParticipantLive, ParticipantSpec, START_A_FULL,
};
use crate::hotcopy::{
    error_chain, on_archive, HotCopyError, HotCopyRequest, HotCopyStatus, HotCopyType, JobState, ParticipantStatus,
    Stage, MSG_CANCELLED, MSG_COMPLETED, MSG_FAILED_PREFIX, MSG_NOT_SAVED, MSG_PROCESS_STOPPED, MSG_RECOGNISED,
};
use crate::limits::{
    HOTCOPY_COPIER_POOL_BYTES, HOTCOPY_MAX_KEPT_STATUSES, HOTCOPY_MAX_STATUS_FILE_BYTES, HOTCOPY_READY_TIMEOUT,
    HOTCOPY_STATUS_RETRY_INTERVAL,
};
use crate::paths::resolve_existing;

mod metrics;

/// Directory of the persisted statuses under the manager's data directory.
pub const STATUS_DIR: &str = "hotcopy";

/// File under the manager's data directory holding the last start id handed out (a decimal number and a newline).
pub const LAST_START_ID_FILE: &str = "last-start-id";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One participant of a running job, as the status shows it.
struct RunningParticipant {
    start_id: u64,
    archive_id: u64,
    dest: PathBuf,
    live: ParticipantLive,
    limiter: JobLimiter,
}

struct Running {
    coord: Coordinator,
    participants: Vec<RunningParticipant>,
    max_rate: Mutex<Option<u64>>,
}

struct Job {
    id: Uuid,
    kind: HotCopyType,
    coordinator_start_id: u64,
    begin_micros: u64,
    participant_ids: Vec<(u64, u64)>,
    running: Option<Running>,
    terminal: Mutex<Option<HotCopyStatus>>,
    ended: Condvar,
    /// `true` once `terminal` is set: what [`HotCopyManager::end_signal`] hands out, so that an async caller waits
    /// for the end without holding a thread.
    ended_tx: watch::Sender<bool>,
    /// The final status while it is not saved in the status directory (the live one says so).
    unsaved: Mutex<Option<HotCopyStatus>>,
}

impl Job {
    fn finished(status: HotCopyStatus) -> Self {
        Self {
            id: status.id,
            kind: status.kind,
            coordinator_start_id: status.coordinator_start_id,
            begin_micros: status.begin_micros,
            participant_ids: status.participants.iter().map(|p| (p.start_id, p.archive_id)).collect(),
            running: None,
            terminal: Mutex::new(Some(status)),
            ended: Condvar::new(),
            ended_tx: watch::Sender::new(true),
            unsaved: Mutex::new(None),
        }
    }

    fn snapshot(&self, database_name: &str) -> HotCopyStatus {
        if let Some(t) = lock(&self.terminal).as_ref() {
            return t.clone();
        }
        let run = self.running.as_ref().expect("a job without a terminal status is running");
        let participants: Vec<ParticipantStatus> = run
            .participants
            .iter()
            .map(|p| {
                let info = lock(&p.live.info).clone();
                let progress = p.live.progress();
                ParticipantStatus {
                    start_id: p.start_id,
                    archive_id: p.archive_id,
                    destination: p.dest.clone(),
                    stage: info.stage.number(),
                    message: info.stage.message().to_string(),
                    bytes_done: progress.bytes_done,
                    bytes_total: progress.bytes_total,
                    files_done: progress.files_done,
                    files_total: progress.files_total,
                    rate_bytes_per_sec: progress.rate_bytes_per_sec,
                    eta_secs: eta_secs(
                        progress.bytes_done,
                        progress.bytes_total,
                        progress.rate_bytes_per_sec,
                        p.limiter.limit(),
                    ),
                    element: info.element,
                    txn_range: info.txn_range,
                }
            })
            .collect();
        let least = run.participants.iter().map(|p| lock(&p.live.info).stage).min().unwrap_or(Stage::Begin);
        HotCopyStatus {
            id: self.id,
            coordinator_start_id: self.coordinator_start_id,
            database_name: database_name.to_string(),
            kind: self.kind,
            status: JobState::Running,
            stage: least.number(),
            message: least.message().to_string(),
            begin_micros: self.begin_micros,
            end_micros: None,
            bytes_done: participants.iter().map(|p| p.bytes_done).sum(),
            bytes_total: participants.iter().map(|p| p.bytes_total).sum(),
            files_done: participants.iter().map(|p| p.files_done).sum(),
            files_total: participants.iter().map(|p| p.files_total).sum(),
            rate_bytes_per_sec: participants.iter().map(|p| p.rate_bytes_per_sec).sum(),
            // The participants copy side by side: the job ends with the slowest.
            eta_secs: participants.iter().map(|p| p.eta_secs).try_fold(0.0, |a: f64, e| e.map(|e| a.max(e))),
            max_rate: *lock(&run.max_rate),
            participants,
        }
    }

    fn wait(&self, timeout: Duration) {
        let guard = lock(&self.terminal);
        drop(self.ended.wait_timeout_while(guard, timeout, |t| t.is_none()).unwrap_or_else(|p| p.into_inner()));
    }
}

/// Seconds to copy the `total - done` bytes left at `rate` (bytes per second, measured), never faster than `limit`
/// (the job's cap and its SM's budget), and at `limit` while nothing is measured. `None` while nothing is planned
/// yet (`total` 0) and when the rate is unknown: nothing is measured and nothing limits the job.
fn eta_secs(done: u64, total: u64, rate: f64, limit: Option<u64>) -> Option<f64> {
    let left = total.saturating_sub(done);
    if total == 0 {
        return None;
    }
    if left == 0 {
        return Some(0.0);
    }
    let rate = match limit {
        Some(l) if rate > 0.0 => rate.min(l as f64),
        Some(l) => l as f64,
        None if rate > 0.0 => rate,
        None => return None,
    };
    (rate > 0.0).then(|| left as f64 / rate)
}

struct Inner {
    database_name: String,
    archives: BTreeMap<u64, Arc<dyn Archive>>,
    identities: Vec<ArchiveIdentity>,
    limiters: BTreeMap<u64, SmLimiter>,
    /// Each archive's copier, made by the first job that needs it (`None` until then, or after its setup failed).
    copiers: BTreeMap<u64, Mutex<Option<SmCopier>>>,
    status_dir: PathBuf,
    jobs: Mutex<BTreeMap<Uuid, Arc<Job>>>,
    running_types: Mutex<HashSet<(u64, HotCopyType)>>,
    /// Which set continues each archive's journal chain.
    chains: JournalChains,
    /// The start id of each archive's SM in this start.
    start_ids: BTreeMap<u64, u64>,
    /// The highest start id handed out in this data directory so far (this start's included).
    last_start_id: u64,
    /// Most jobs kept (their statuses, in memory and in `status_dir`): [`HOTCOPY_MAX_KEPT_STATUSES`] unless
    /// [`HotCopyManager::set_max_kept_statuses`] said otherwise.
    max_kept: AtomicUsize,
    /// What the jobs that ended since this manager started did, per archive and type (the counters of
    /// [`HotCopyManager::record_metrics`]); updated once per job end.
    ended: Mutex<BTreeMap<(u64, HotCopyType), EndedJobs>>,
}

/// What the jobs of one archive and type that ended since the manager started did.
#[derive(Debug, Default, Clone, Copy)]
struct EndedJobs {
    pub failures: u64,
    pub cancellations: u64,
    /// Bytes copied by them (whatever their end).
    pub bytes: u64,
    /// Time their participant of this archive waited on the rate limiter.
    pub waited: Duration,
}

/// Starts, watches and cancels the hot copy jobs of one database's archives. See the [module docs](self).
///
/// Cheap to clone; clones share the jobs. Jobs run on their own threads and keep running when every handle is
/// dropped; [`HotCopyManager::shutdown`] cancels them and waits.
#[derive(Clone)]
pub struct HotCopyManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HotCopyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCopyManager")
            .field("database", &self.inner.database_name)
            .field("archives", &self.inner.archives.keys().collect::<Vec<_>>())
            .field("status_dir", &self.inner.status_dir)
            .finish_non_exhaustive()
    }
}

impl HotCopyManager {
    /// A manager of `archives`: every archive of one database (an SM linked with Backset passes its own), keeping
    /// statuses in `data_dir/hotcopy/`.
    ///
    /// The manager holds the archives, not the SM serving them: the SM must keep serving them while jobs run (a job
    /// whose SM stopped fails with the archive's error, `archive N is not available`). Shut the manager down
    /// ([`HotCopyManager::shutdown`]) before the SM.
    pub fn new(archives: Vec<Arc<dyn Archive>>, data_dir: impl AsRef<Path>) -> Result<Self, HotCopyError> {
        let data_dir = data_dir.as_ref();
        let identities: Vec<ArchiveIdentity> = archives.iter().map(|a| a.identity()).collect();
        let Some(first) = identities.first() else {
            return Err(HotCopyError::Request { reason: "a hot copy manager needs at least one archive".into() });
        };
        let mut map = BTreeMap::new();
        for (a, id) in archives.into_iter().zip(&identities) {
            if id.database_id != first.database_id {
                return Err(HotCopyError::Request {
                    reason: format!(
                        "archive {} belongs to database {} and archive {} to database {}; give one database's archives",
                        first.archive_id, first.database_id, id.archive_id, id.database_id
                    ),
                });
            }
            if map.insert(id.archive_id, a).is_some() {
                return Err(HotCopyError::Request { reason: format!("archive id {} is given twice", id.archive_id) });
            }
        }
        let status_dir = data_dir.join(STATUS_DIR);
        std::fs::create_dir_all(&status_dir).map_err(|source| HotCopyError::Io {
            op: "create directory",
            path: status_dir.clone(),
            source,
        })?;
        let jobs = load_statuses(&status_dir)?;
        let chains = JournalChains::load(data_dir)?;
        let archive_ids: Vec<u64> = map.keys().copied().collect();
        let (start_ids, last_start_id) = assign_start_ids(data_dir, &archive_ids, &jobs)?;
        Ok(Self {
            inner: Arc::new(Inner {
                database_name: first.database_name.clone(),
                limiters: map.keys().map(|&a| (a, SmLimiter::new(None))).collect(),
                copiers: map.keys().map(|&a| (a, Mutex::new(None))).collect(),
                archives: map,
                identities,
                status_dir,
                jobs: Mutex::new(jobs.into_iter().map(|s| (s.id, Arc::new(Job::finished(s)))).collect()),
                running_types: Mutex::new(HashSet::new()),
                chains,
                start_ids,
                last_start_id,
                max_kept: AtomicUsize::new(HOTCOPY_MAX_KEPT_STATUSES),
                ended: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The start id of archive `archive_id`'s SM in this start (`None` for an archive this manager does not serve).
    pub fn start_id(&self, archive_id: u64) -> Option<u64> {
        self.inner.start_ids.get(&archive_id).copied()
    }

    /// The highest start id handed out in this manager's data directory: those of this start, and every lower one
    /// belonged to an SM of an earlier start (its jobs keep it).
    pub fn last_start_id(&self) -> u64 {
        self.inner.last_start_id
    }

    /// The database name.
    pub fn database_name(&self) -> &str {
        &self.inner.database_name
    }

    /// The archive ids this manager serves, ascending (their SMs' start ids are [`start_id`](Self::start_id)).
    pub fn archive_ids(&self) -> Vec<u64> {
        self.inner.archives.keys().copied().collect()
    }

    /// The SM budget of an archive, shared by all its jobs (to read or change its rate).
    pub fn sm_limiter(&self, archive_id: u64) -> Option<&SmLimiter> {
        self.inner.limiters.get(&archive_id)
    }

    /// The copier of an archive's SM, shared by all its jobs: made (its pool mapped, its ring set up) by the first
    /// call, then the same handle for every job. `None` for an archive this manager does not serve; a setup that
    /// fails is tried again by the next call.
    pub fn sm_copier(&self, archive_id: u64) -> Option<Result<SmCopier, CopyError>> {
        self.inner.copiers.get(&archive_id).map(sm_copier)
    }

    /// Sets the SM budget of an archive, bytes per second (`None`: unlimited; `Some(0)`: paused), for all its jobs
    /// at once, running ones included.
    pub fn set_sm_rate(&self, archive_id: u64, rate: Option<u64>) -> Result<(), HotCopyError> {
        let l = self.inner.limiters.get(&archive_id).ok_or_else(|| self.unknown_archive(archive_id))?;
        l.set_rate(rate);
        Ok(())
    }

    fn unknown_archive(&self, archive_id: u64) -> HotCopyError {
        let known: Vec<String> = self.inner.archives.keys().map(u64::to_string).collect();
        HotCopyError::Request {
            reason: format!(
                "archive {archive_id} is not an archive of database {} (archives: {})",
                self.inner.database_name,
                known.join(", ")
            ),
        }
    }

    /// The participants of `req` and their destinations (and a simple hot copy's separate journal directory), by
    /// archive id.
    #[allow(clippy::type_complexity)]
    fn resolve(&self, req: &HotCopyRequest) -> Result<Vec<(u64, PathBuf, Option<PathBuf>)>, HotCopyError> {
        let bad = |reason: String| Err(HotCopyError::Request { reason });
        if req.kind != HotCopyType::Simple && (!req.journal_dirs.is_empty() || req.default_journal_dir.is_some()) {
            return bad(format!(
                "a {} hot copy has no separate journal directory (copyJournalDir is for a simple hot copy); leave it \
                 out",
                req.kind
            ));
        }
        for &a in req.journal_dirs.keys() {
            if !self.inner.archives.contains_key(&a) {
                return Err(self.unknown_archive(a));
            }
        }
        if req.shared && req.kind == HotCopyType::Simple {
            return bad("a simple hot copy cannot use --shared; give --backup-dirs or --default-backup-dir".into());
        }
        if req.shared {
            match &req.default_backup_dir {
                None => return bad("--shared needs --default-backup-dir (the shared directory)".into()),
                Some(d) if crate::set::object::s3_location(d).is_none() && !d.is_dir() => {
                    return bad(format!(
                        "--shared: the default backup directory {} does not exist; it must be shared storage that \
                         exists on every host",
                        d.display()
                    ))
                }
                Some(_) => {}
            }
        }
        for &a in req.backup_dirs.keys() {
            if !self.inner.archives.contains_key(&a) {
                return Err(self.unknown_archive(a));
            }
        }
        let ids: Vec<u64> = match &req.archives {
            Some(list) => {
                if !req.backup_dirs.is_empty() {
                    return bad("--backup-dirs and --process-filter are mutually exclusive".into());
                }
                for &a in list {
                    if !self.inner.archives.contains_key(&a) {
                        return Err(self.unknown_archive(a));
                    }
                }
                let mut l = list.clone();
                l.sort_unstable();
                l.dedup();
                l
            }
            None if req.default_backup_dir.is_some() => self.inner.archives.keys().copied().collect(),
            None => req.backup_dirs.keys().copied().collect(),
        };
        if ids.is_empty() {
            return bad("no archive to copy: give --backup-dirs or --default-backup-dir".into());
        }
        let mut out = Vec::with_capacity(ids.len());
        for a in ids {
            let dest = match (req.backup_dirs.get(&a), &req.default_backup_dir) {
                (Some(d), _) => d.clone(),
                (None, Some(d)) if req.shared => d.join(a.to_string()),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return bad(format!(
                        "archive {a} has no backup directory; give --backup-dirs {a} <dir> or --default-backup-dir"
                    ))
                }
            };
            if let Some((other, _, _)) = out.iter().find(|(_, d, j): &&(u64, PathBuf, Option<PathBuf>)| {
                *d == dest || j.as_ref().is_some_and(|j| overlap(j, &dest))
            }) {
                return bad(format!(
                    "archives {other} and {a} would both write to {}; give each archive its own directory \
                     (--backup-dirs, or --shared for subdirectories by archive id)",
                    dest.display()
                ));
            }
            if let Some(url) = crate::set::object::s3_location(&dest) {
                // A location that is neither a path nor a valid URL (empty, a typo) says so first.
                url.map_err(|e| HotCopyError::Request { reason: format!("archive {a}: {e}") })?;
                if req.kind == HotCopyType::Simple {
                    return bad(format!(
                        "a simple hot copy makes an archive an SM can open, so it stays local-only and cannot go to \
                         {}: give a directory, or run a full hot copy (--type full) to object storage",
                        dest.display()
                    ));
                }
            }
            self.outside_archives(a, &dest, "backup directory")?;
            let journal = req.journal_dirs.get(&a).or(req.default_journal_dir.as_ref());
            if let Some(j) = journal {
                self.outside_archives(a, j, "journal directory")?;
            }
            let journal = match journal {
                Some(j) => simple_journal_dir(a, &dest, j)?,
                None => None,
            };
            if let Some(j) = &journal {
                if let Some((other, _, _)) = out.iter().find(|(_, d, oj): &&(u64, PathBuf, Option<PathBuf>)| {
                    overlap(j, d) || oj.as_ref().is_some_and(|oj| overlap(j, oj))
                }) {
                    return bad(format!(
                        "the journal directory {} of archive {a} overlaps a directory of archive {other}; give each \
                         archive its own copyJournalDir",
                        j.display()
                    ));
                }
            }
            out.push((a, dest, journal));
        }
        Ok(out)
    }

    /// Refuses a destination `dir` (of archive `a`) that is relative, or equal to or inside any archive's directory:
    /// a relative path would be resolved against the server's working directory, which the client cannot know, and
    /// a copy into a live archive would pollute it. Symbolic links in what exists of `dir` are resolved first.
    fn outside_archives(&self, a: u64, dir: &Path, what: &str) -> Result<(), HotCopyError> {
        if crate::set::object::s3_location(dir).is_some() {
            return Ok(());
        }
        if !dir.is_absolute() {
            return Err(HotCopyError::Request {
                reason: format!(
                    "the {what} {:?} of archive {a} is not an absolute path; give an absolute path (a relative one \
                     would be resolved against the server's working directory)",
                    dir.display().to_string()
                ),
            });
        }
        if dir.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(HotCopyError::Request {
                reason: format!(
                    "the {what} {} of archive {a} contains '..'; give the directory without '..'",
                    dir.display()
                ),
            });
        }
        let dir = resolve_existing(dir);
        for (id, archive) in &self.inner.archives {
            let live = std::fs::canonicalize(archive.dir()).unwrap_or_else(|_| archive.dir().to_path_buf());
            if dir.starts_with(&live) {
                let relation = if dir == live { "" } else { "inside " };
                return Err(HotCopyError::Request {
                    reason: format!(
                        "the {what} {} of archive {a} is {relation}archive {id}'s directory {}: a hot copy must go \
                         outside every archive; give another directory",
                        dir.display(),
                        live.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks what can be checked before the job starts, so the request is refused at once.
    fn preflight(
        &self,
        kind: HotCopyType,
        archive: &dyn Archive,
        dest: &Path,
        journal: Option<&Path>,
    ) -> Result<(), HotCopyError> {
        match kind {
            HotCopyType::Simple => preflight_simple(dest, journal, false),
            HotCopyType::Full => preflight_full(dest).map(drop),
            HotCopyType::Incremental => {
                let missing = |reason| HotCopyError::NeedsFull { dir: dest.to_path_buf(), reason };
                let running = || self.running_full_into(dest);
                let (_, set) = match open_set(archive, dest, missing) {
                    Err(HotCopyError::NeedsFull { .. }) if running().is_some() => {
                        let (coordinator_start_id, id) = running().expect("checked");
                        return Err(HotCopyError::FullRunning { dir: dest.to_path_buf(), coordinator_start_id, id });
                    }
                    other => other?,
                };
                match incremental_blocker(&set) {
                    Some(_) if running().is_some() => {
                        let (coordinator_start_id, id) = running().expect("checked");
                        Err(HotCopyError::FullRunning { dir: dest.to_path_buf(), coordinator_start_id, id })
                    }
                    Some(reason) => Err(HotCopyError::NeedsFull { dir: dest.to_path_buf(), reason }),
                    None => Ok(()),
                }
            }
            HotCopyType::Journal => {
                if !archive.journal_hot_copy_enabled() {
                    return Err(HotCopyError::JournalDisabled { archive_id: archive.identity().archive_id });
                }
                let missing = |reason: String| HotCopyError::NeedsFullForJournal {
                    dir: dest.to_path_buf(),
                    reason: match self.running_full_into(dest) {
                        Some((_, id)) => format!(
                            "is not initialised yet: full hot copy {id} has not written its state; retry once it has \
                             (a full hot copy's start returns when its set is initialised)"
                        ),
                        None => format!("{reason}; {START_A_FULL}"),
                    },
                };
                let (_, set) = open_set(archive, dest, missing)?;
                match set.full_entry() {
                    None => Err(HotCopyError::NeedsFullForJournal {
                        dir: dest.to_path_buf(),
                        reason: format!("has no full element; {START_A_FULL}"),
                    }),
                    Some(_) => self.inner.chains.check_journal(archive.identity().archive_id, set.state().set_id, dest),
                }
            }
        }
    }

    /// Starts a hot copy; returns `(coordinator start id, hot copy id)` at once, the job running on its own thread.
    /// Refuses (with NuoDB's message where it has one) a malformed request, archives that miss a storage group
    /// (unless allowed), a second job of a type on an archive, and a destination that cannot take the type.
    pub fn start(&self, req: HotCopyRequest) -> Result<(u64, Uuid), HotCopyError> {
        let targets = self.resolve(&req)?;
        let inner = &self.inner;
        let identities: Vec<ArchiveIdentity> = targets.iter().map(|(a, ..)| inner.archives[a].identity()).collect();
        if !req.partial_storage_groups {
            check_storage_groups(&inner.database_name, &inner.identities, &identities)?;
        }
        {
            let mut running = lock(&inner.running_types);
            if let Some(&(a, ..)) = targets.iter().find(|(a, ..)| running.contains(&(*a, req.kind))) {
                return Err(HotCopyError::AlreadyRunning { kind: req.kind, archive_id: a });
            }
            running.extend(targets.iter().map(|(a, ..)| (*a, req.kind)));
        }
        let release = || {
            let mut running = lock(&inner.running_types);
            for (a, ..) in &targets {
                running.remove(&(*a, req.kind));
            }
        };
        for (a, dest, journal) in &targets {
            if let Err(e) = self.preflight(req.kind, &*inner.archives[a], dest, journal.as_deref()) {
                release();
                return Err(e);
            }
        }
        let id = Uuid::new_v4();
        let coordinator_start_id = inner.start_ids[&targets[0].0];
        let specs: Vec<ParticipantSpec> = targets
            .iter()
            .enumerate()
            .map(|(index, (a, dest, journal))| ParticipantSpec {
                index,
                archive: Arc::clone(&inner.archives[a]),
                start_id: inner.start_ids[a],
                dest: dest.clone(),
                journal_dir: journal.clone(),
            })
            .collect();
        let all: Vec<Arc<dyn Archive>> = inner.archives.values().cloned().collect();
        let single = (specs.len() == 1).then(|| Arc::clone(&specs[0].archive));
        let coord = Coordinator::new(specs.len(), move || match &single {
            Some(a) => a.durable_txn(),
            None => all.iter().map(|a| a.durable_txn()).min().unwrap_or(0),
        });
        let job = Arc::new(Job {
            id,
            kind: req.kind,
            coordinator_start_id,
            begin_micros: now_micros(),
            participant_ids: specs.iter().map(|s| (s.start_id, targets[s.index].0)).collect(),
            running: Some(Running {
                coord,
                participants: specs
                    .iter()
                    .map(|s| RunningParticipant {
                        start_id: s.start_id,
                        archive_id: targets[s.index].0,
                        dest: s.dest.clone(),
                        live: ParticipantLive::new(),
                        limiter: JobLimiter::new(&inner.limiters[&targets[s.index].0], req.max_rate),
                    })
                    .collect(),
                max_rate: Mutex::new(req.max_rate),
            }),
            terminal: Mutex::new(None),
            ended: Condvar::new(),
            ended_tx: watch::Sender::new(false),
            unsaved: Mutex::new(None),
        });
        if let Err(e) = persist(&inner.status_dir, &job.snapshot(&inner.database_name)) {
            release();
            return Err(e);
        }
        lock(&inner.jobs).insert(id, Arc::clone(&job));
        self.prune_statuses();
        let (inner2, job2) = (Arc::clone(inner), Arc::clone(&job));
        let spawned = std::thread::Builder::new()
            .name(format!("hotcopy-{}", &id.simple().to_string()[..8]))
            .spawn(move || run_job(&inner2, &job2, specs));
        if let Err(e) = spawned {
            release();
            let mut status = job.snapshot(&inner.database_name);
            status.status = JobState::Failed;
            status.message = format!("{MSG_FAILED_PREFIX}cannot start the job's thread: {e}");
            status.end_micros = Some(now_micros());
            let _ = persist(&inner.status_dir, &status);
            *lock(&job.terminal) = Some(status);
            job.ended.notify_all();
            job.ended_tx.send_replace(true);
        } else {
            let (archives, destination) = log_targets(targets.iter().map(|(a, d, _)| (*a, d.as_path())));
            tracing::info!(%id, r#type = %req.kind, %archives, %destination, status = %"running", "Hot copy started");
            if req.kind == HotCopyType::Full {
                // Returns once every set is initialised, so that a journal hot copy started next is accepted.
                let deadline = Instant::now() + HOTCOPY_READY_TIMEOUT;
                for p in job.running.iter().flat_map(|run| &run.participants) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    p.live.wait_initialised(left, || lock(&job.terminal).is_some());
                }
            }
        }
        Ok((coordinator_start_id, id))
    }

    /// Keeps at most `n` jobs' statuses (in memory and in the status directory) from the next hot copy started on,
    /// instead of [`HOTCOPY_MAX_KEPT_STATUSES`] (at least 1).
    pub fn set_max_kept_statuses(&self, n: usize) {
        self.inner.max_kept.store(n.max(1), Ordering::Relaxed);
    }

    /// While more jobs are kept than the cap, removes the oldest ended ones (their statuses and files); a running job
    /// is never removed. Called at every start, so the statuses kept stay within the cap while the manager runs, not
    /// only when it loads them.
    fn prune_statuses(&self) {
        let inner = &self.inner;
        let max = inner.max_kept.load(Ordering::Relaxed);
        let removed: Vec<Uuid> = {
            let mut jobs = lock(&inner.jobs);
            if jobs.len() <= max {
                return;
            }
            let mut ended: Vec<(u64, Uuid)> =
                // Not one whose final status is still being retried: its file would come back.
                jobs.values()
                    .filter(|j| {
                        // One lock at a time (`save_unsaved` takes `unsaved`, then `terminal`).
                        let ended = lock(&j.terminal).is_some();
                        ended && lock(&j.unsaved).is_none()
                    })
                    .map(|j| (j.begin_micros, j.id))
                    .collect();
            ended.sort_unstable();
            ended.truncate(jobs.len() - max);
            let ids: Vec<Uuid> = ended.into_iter().map(|(_, id)| id).collect();
            for id in &ids {
                jobs.remove(id);
            }
            ids
        };
        for id in removed {
            let path = inner.status_dir.join(format!("{id}.json"));
            // remove_path: the file itself, never a link's target (the status directory was opened without
            // following a link at start).
            if let Err(e) = backset_format::dirfd::remove_path(&path) {
                tracing::warn!(
                    file = %path.display(), error = %e,
                    "could not remove the status of a hot copy past the kept statuses; remove the file"
                );
            }
        }
    }

    /// The running full hot copy of this manager writing into `dest` (the same directory, links resolved), as
    /// `(coordinator start id, hot copy id)`.
    fn running_full_into(&self, dest: &Path) -> Option<(u64, Uuid)> {
        let dest = resolve_existing(dest);
        let jobs: Vec<Arc<Job>> = lock(&self.inner.jobs).values().cloned().collect();
        jobs.into_iter()
            .filter(|j| j.kind == HotCopyType::Full && lock(&j.terminal).is_none())
            .find(|j| {
                j.running.as_ref().is_some_and(|run| run.participants.iter().any(|p| resolve_existing(&p.dest) == dest))
            })
            .map(|j| (j.coordinator_start_id, j.id))
    }

    fn job(&self, coordinator_start_id: u64, id: Uuid) -> Result<Arc<Job>, HotCopyError> {
        lock(&self.inner.jobs)
            .get(&id)
            .filter(|j| j.coordinator_start_id == coordinator_start_id)
            .cloned()
            .ok_or(HotCopyError::NotFound { coordinator_start_id, id })
    }

    /// The status of a job; with `wait`, first waits up to that long for it to end (the status is `running` when
    /// the wait timed out).
    pub fn status(
        &self,
        coordinator_start_id: u64,
        id: Uuid,
        wait: Option<Duration>,
    ) -> Result<HotCopyStatus, HotCopyError> {
        let job = self.job(coordinator_start_id, id)?;
        if let Some(w) = wait {
            job.wait(w);
        }
        Ok(job.snapshot(&self.inner.database_name))
    }

    /// A receiver that holds `true` once the job has ended (at once for an ended job): an async caller (the
    /// server's long-polling status requests) awaits it instead of blocking a thread in [`status`](Self::status)'s
    /// wait.
    pub fn end_signal(&self, coordinator_start_id: u64, id: Uuid) -> Result<watch::Receiver<bool>, HotCopyError> {
        Ok(self.job(coordinator_start_id, id)?.ended_tx.subscribe())
    }

    /// Every job's status, oldest first. With `running_for`, only the jobs still running that began at least that
    /// long ago (NuoDB's `--running-for`).
    pub fn statuses(&self, running_for: Option<Duration>) -> Vec<HotCopyStatus> {
        let jobs: Vec<Arc<Job>> = lock(&self.inner.jobs).values().cloned().collect();
        let now = now_micros();
        let mut out: Vec<HotCopyStatus> = jobs
            .iter()
            .map(|j| j.snapshot(&self.inner.database_name))
            .filter(|s| match running_for {
                None => true,
                Some(d) => s.status == JobState::Running && now.saturating_sub(s.begin_micros) >= d.as_micros() as u64,
            })
            .collect();
        out.sort_by_key(|s| (s.begin_micros, s.id));
        out
    }

    /// [`statuses`](Self::statuses) by SM start id: each job is listed under every participant's start id, the one
    /// it ran with (NuoDB's `get hotcopy-info`); every SM of this start has an entry, empty when it has no job, and
    /// jobs of an earlier start appear under the start ids their SMs had then.
    pub fn statuses_by_start_id(&self, running_for: Option<Duration>) -> BTreeMap<u64, Vec<HotCopyStatus>> {
        let mut out: BTreeMap<u64, Vec<HotCopyStatus>> =
            self.inner.start_ids.values().map(|&sm| (sm, Vec::new())).collect();
        for s in self.statuses(running_for) {
            for p in &s.participants {
                out.entry(p.start_id).or_default().push(s.clone());
            }
        }
        out
    }

    /// Cancels a job (asynchronously; with `wait`, waits up to that long for it to end) and returns its status. A
    /// job past its commit point (every element durable, moving into place) completes anyway; an ended job is left
    /// as it is.
    pub fn cancel(
        &self,
        coordinator_start_id: u64,
        id: Uuid,
        wait: Option<Duration>,
    ) -> Result<HotCopyStatus, HotCopyError> {
        let job = self.job(coordinator_start_id, id)?;
        if let Some(run) = &job.running {
            if lock(&job.terminal).is_none() && !run.coord.cancel() {
                tracing::info!(hot_copy = %id, "cancel refused: the hot copy is past its commit point");
            }
        }
        if let Some(w) = wait {
            job.wait(w);
        }
        Ok(job.snapshot(&self.inner.database_name))
    }

    /// Changes a running job's `--max-rate` (bytes per second per SM; `None`: only the SM budget).
    pub fn set_max_rate(&self, coordinator_start_id: u64, id: Uuid, rate: Option<u64>) -> Result<(), HotCopyError> {
        let job = self.job(coordinator_start_id, id)?;
        if let Some(run) = &job.running {
            *lock(&run.max_rate) = rate;
            for p in &run.participants {
                p.limiter.set_rate(rate);
            }
        }
        Ok(())
    }

    /// Cancels every running job and waits up to `timeout` for them to end; returns how many are still running.
    pub fn shutdown(&self, timeout: Duration) -> usize {
        let jobs: Vec<Arc<Job>> = lock(&self.inner.jobs).values().cloned().collect();
        for j in &jobs {
            if let Some(run) = &j.running {
                run.coord.cancel();
            }
        }
        let deadline = Instant::now() + timeout;
        for j in &jobs {
            j.wait(deadline.saturating_duration_since(Instant::now()));
        }
        // A last attempt for the final statuses not saved yet (their retries end with the process).
        for j in &jobs {
            if let Some(Err(e)) = save_unsaved(&self.inner.status_dir, j) {
                tracing::error!(id = %j.id, error = %e, "could not persist the final status of the hot copy at \
                    shutdown; a restart recognises a completed hot copy from its destinations");
            }
        }
        jobs.iter().filter(|j| lock(&j.terminal).is_none()).count()
    }
}

/// The copier in `slot`, made on first use (see [`HotCopyManager::sm_copier`]).
fn sm_copier(slot: &Mutex<Option<SmCopier>>) -> Result<SmCopier, CopyError> {
    let mut slot = lock(slot);
    if let Some(copier) = &*slot {
        return Ok(copier.clone());
    }
    let copier = SmCopier::new(Options { pool_bytes: HOTCOPY_COPIER_POOL_BYTES, ..Options::default() })?;
    *slot = Some(copier.clone());
    Ok(copier)
}

/// Whether one of two directories is, or is inside, the other (lexically).
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Checks the `copyJournalDir` of a simple hot copy of `archive` into `dest`: `None` when it is `<dest>/journal`
/// (the default); refused when it is `dest`, inside `dest`, holds `dest`, or is `dest`'s `.incomplete` twin.
fn simple_journal_dir(archive: u64, dest: &Path, journal: &Path) -> Result<Option<PathBuf>, HotCopyError> {
    use std::path::Component;
    let normal = |p: &Path| -> PathBuf { p.components().filter(|c| *c != Component::CurDir).collect() };
    let (d, j) = (normal(dest), normal(journal));
    if j == d.join(backset_format::layout::JOURNAL_DIR) {
        return Ok(None);
    }
    let (jd, dd) = (journal.display(), dest.display());
    let reason = if j == d {
        Some(format!("copyJournalDir {jd} of archive {archive} is the copyArchiveDir itself"))
    } else if j.starts_with(&d) {
        Some(format!("copyJournalDir {jd} of archive {archive} is inside copyArchiveDir {dd} but is not {dd}/journal"))
    } else if d.starts_with(&j) {
        Some(format!("copyArchiveDir {dd} of archive {archive} is inside its copyJournalDir {jd}"))
    } else if j == incomplete_dir(&d) || d == incomplete_dir(&j) {
        Some(format!(
            "copyJournalDir {jd} and copyArchiveDir {dd} of archive {archive} collide with each other's \
             .incomplete directory"
        ))
    } else {
        None
    };
    match reason {
        Some(r) => Err(HotCopyError::Request {
            reason: format!(
                "{r}; give a journal directory outside {dd}, or leave copyJournalDir out (the journal then goes \
                 into {dd}/journal)"
            ),
        }),
        None => Ok(Some(journal.to_path_buf())),
    }
}

/// The job's thread: runs every participant (each on its own thread when there are several), then records the
/// outcome.
fn run_job(inner: &Inner, job: &Job, specs: Vec<ParticipantSpec>) {
    let run = job.running.as_ref().expect("running");
    let mut participants: Vec<Participant> =
        job.participant_ids.iter().map(|&(start_id, archive_id)| Participant { start_id, archive_id }).collect();
    participants.sort_by_key(|p| p.archive_id);
    let ctx = JobContext {
        id: job.id,
        kind: job.kind,
        coordinator_start_id: job.coordinator_start_id,
        participants: &participants,
        coord: &run.coord,
        chains: &inner.chains,
    };
    let one = |spec: &ParticipantSpec| {
        let p = &run.participants[spec.index];
        let copier = inner.copiers.get(&p.archive_id).map(sm_copier);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_participant(&ctx, spec, &p.live, &p.limiter, copier)
        }));
        r.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let archive_id = p.archive_id;
            run.coord.fail(format!("archive {archive_id}: internal error (a panic: {what}); please report it"));
            Err(HotCopyError::Stopped { reason: format!("participant of archive {archive_id} panicked") })
        })
    };
    let results: Vec<Result<(), HotCopyError>> = if specs.len() == 1 {
        vec![one(&specs[0])]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = specs.iter().map(|spec| s.spawn(|| one(spec))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(HotCopyError::Stopped { reason: "participant panicked".into() }))
                })
                .collect()
        })
    };
    let (state, message) = match run.coord.outcome() {
        Some(Outcome::Cancelled) => (JobState::Cancelled, MSG_CANCELLED.to_string()),
        Some(Outcome::Failed(cause)) => (JobState::Failed, format!("{MSG_FAILED_PREFIX}{cause}")),
        None => match results.iter().find_map(|r| r.as_ref().err()) {
            None => (JobState::Completed, MSG_COMPLETED.to_string()),
            Some(e) => (JobState::Failed, format!("{MSG_FAILED_PREFIX}{}", error_chain(e))),
        },
    };
    let mut status = job.snapshot(&inner.database_name);
    let last_stage = run.participants.iter().map(|p| lock(&p.live.info).stage).max().unwrap_or(Stage::Begin);
    status.status = state;
    status.stage = last_stage.number();
    status.message = message.clone();
    status.end_micros = Some(now_micros());
    status.rate_bytes_per_sec = 0.0;
    status.eta_secs = None;
    for (p, r) in status.participants.iter_mut().zip(&results) {
        p.rate_bytes_per_sec = 0.0;
        p.eta_secs = None;
        p.message = match r {
            Ok(()) => MSG_COMPLETED.to_string(),
            Err(HotCopyError::Stopped { .. }) => message.clone(),
            Err(e) => format!("{MSG_FAILED_PREFIX}{}", on_archive(p.archive_id, e)),
        };
        if r.is_err() {
            p.element = None;
        }
    }
    log_end(&status);
    {
        let mut ended = lock(&inner.ended);
        for (p, rp) in status.participants.iter().zip(&run.participants) {
            let e = ended.entry((p.archive_id, job.kind)).or_default();
            e.failures += u64::from(state == JobState::Failed);
            e.cancellations += u64::from(state == JobState::Cancelled);
            e.bytes += p.bytes_done;
            e.waited += rp.limiter.waited();
        }
    }
    // Saved before the job reports its end: a status read after the end is on disk, unless this failed.
    let saved = persist_final(&inner.status_dir, &status);
    {
        let mut running = lock(&inner.running_types);
        for &(_, archive_id) in &job.participant_ids {
            running.remove(&(archive_id, job.kind));
        }
    }
    match saved {
        Ok(()) => *lock(&job.terminal) = Some(status),
        Err(e) => {
            tracing::error!(id = %job.id, error = %e, "could not persist the final status of the hot copy; retrying \
                every {HOTCOPY_STATUS_RETRY_INTERVAL:?}, {} times", fault::status_retries());
            // The live status first, then what is to be saved: a save in between (at shutdown) finds nothing.
            *lock(&job.terminal) = Some(not_saved(&status, &format!("{e}; retrying")));
            *lock(&job.unsaved) = Some(status);
        }
    }
    job.ended.notify_all();
    job.ended_tx.send_replace(true);
    if lock(&job.unsaved).is_some() {
        retry_final(inner, job);
    }
}

/// `status` as the live status shows it while it is not saved: its message, then why.
fn not_saved(status: &HotCopyStatus, why: &str) -> HotCopyStatus {
    let mut shown = status.clone();
    shown.message = format!("{} ({MSG_NOT_SAVED}: {why})", status.message);
    shown
}

/// Writes the final status of `job` if it is not saved yet; on success the live status is the saved one. `None`
/// when there was nothing to save.
fn save_unsaved(dir: &Path, job: &Job) -> Option<Result<(), HotCopyError>> {
    let mut unsaved = lock(&job.unsaved);
    let status = unsaved.as_ref()?;
    let result = persist_final(dir, status);
    if result.is_ok() {
        *lock(&job.terminal) = unsaved.take();
    }
    Some(result)
}

/// Retries writing the final status of `job` (see the [module docs](self)), then says for good that it is not
/// saved.
fn retry_final(inner: &Inner, job: &Job) {
    let mut last = None;
    let retries = fault::status_retries();
    for attempt in 1..=retries {
        std::thread::sleep(HOTCOPY_STATUS_RETRY_INTERVAL);
        match save_unsaved(&inner.status_dir, job) {
            None => return,
            Some(Ok(())) => {
                tracing::warn!(id = %job.id, attempt, "the final status of the hot copy is saved after all");
                return;
            }
            Some(Err(e)) => last = Some(e),
        }
    }
    let unsaved = lock(&job.unsaved);
    if let (Some(status), Some(e)) = (unsaved.as_ref(), last) {
        let why = format!(
            "{e}; gave up after {retries} more attempts: after a restart, a completed hot copy is \
             recognised from its destinations"
        );
        tracing::error!(id = %job.id, error = %e, "could not persist the final status of the hot copy; gave up");
        *lock(&job.terminal) = Some(not_saved(status, &why));
    }
}

/// Writes a job's final status (the test-only `BACKSET_FAULT_STATUS_FAIL` may make it fail).
fn persist_final(dir: &Path, status: &HotCopyStatus) -> Result<(), HotCopyError> {
    fault::final_status_write(&dir.join(format!("{}.json", status.id)))?;
    persist(dir, status)
}

/// For a job persisted as running whose process stopped: the element each participant's destination holds when
/// every one shows the job completed (a backup set listing a completed element whose `control/element` names the
/// hot copy; a simple copy's directory in place, with no `.incomplete` one beside it), with the latest end time of
/// those elements; `None` when one does not.
fn completed_on_disk(s: &HotCopyStatus) -> Option<(Vec<Option<String>>, Option<u64>)> {
    use backset_format::layout::ATOMS_DIR;
    if s.participants.is_empty() {
        return None;
    }
    let mut elements = Vec::with_capacity(s.participants.len());
    let mut end = None;
    for p in &s.participants {
        let dest = &p.destination;
        if s.kind == HotCopyType::Simple {
            let in_place = std::fs::symlink_metadata(dest.join(ATOMS_DIR)).is_ok_and(|md| md.is_dir())
                && std::fs::symlink_metadata(incomplete_dir(dest)).is_err();
            if !in_place {
                return None;
            }
            elements.push(None);
            continue;
        }
        let set = crate::set::BackupSet::load(dest).ok()?;
        let found = set.elements().iter().rev().find(|e| e.info.hot_copy_id == s.id).map(|e| &e.entry)?;
        elements.push(Some(found.name().to_string()));
        end = end.max(Some(found.end_micros));
    }
    Some((elements, end))
}

/// `0,1` and `/b/0,/b/1`: a job's archives and their destinations, in archive order, for its log lines.
fn log_targets<'a>(participants: impl Iterator<Item = (u64, &'a Path)>) -> (String, String) {
    let (archives, dirs): (Vec<String>, Vec<String>) =
        participants.map(|(a, d)| (a.to_string(), d.display().to_string())).unzip();
    (archives.join(","), dirs.join(","))
}

/// The log line of a job that ended: its message (NuoDB's) with id, type, archives, destinations, status, bytes
/// copied and seconds; at level error when it failed.
fn log_end(status: &HotCopyStatus) {
    let (archives, destination) =
        log_targets(status.participants.iter().map(|p| (p.archive_id, p.destination.as_path())));
    let micros = status.end_micros.unwrap_or(status.begin_micros).saturating_sub(status.begin_micros);
    let seconds = (micros / 1000) as f64 / 1000.0;
    let (id, kind, state, bytes) = (status.id, status.kind, status.status, status.bytes_done);
    macro_rules! ended {
        ($level:ident) => {
            tracing::$level!(
                %id, r#type = %kind, %archives, %destination, status = %state, bytes, seconds, "{}", status.message
            )
        };
    }
    match state {
        JobState::Failed => ended!(error),
        _ => ended!(info),
    }
}

/// Gives each of `archives` (ascending) a new start id following the last one handed out in `data_dir` (and every
/// start id of the persisted `statuses`, should the counter be younger than them), and records the last one durably
/// before any is used. Returns the start id of each archive and the last one.
fn assign_start_ids(
    data_dir: &Path,
    archives: &[u64],
    statuses: &[HotCopyStatus],
) -> Result<(BTreeMap<u64, u64>, u64), HotCopyError> {
    let path = data_dir.join(LAST_START_ID_FILE);
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| HotCopyError::Persist {
            path: path.clone(),
            reason: format!(
                "holds {:?}, not a start id; remove the file (the next start ids then follow the highest one of the \
                 persisted hot copy statuses)",
                text.trim()
            ),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(HotCopyError::Io { op: "read", path, source }),
    };
    let seen = statuses
        .iter()
        .flat_map(|s| std::iter::once(s.coordinator_start_id).chain(s.participants.iter().map(|p| p.start_id)))
        .max()
        .unwrap_or(0);
    let base = recorded.max(seen);
    let last = base.checked_add(archives.len() as u64).ok_or_else(|| HotCopyError::Persist {
        path: path.clone(),
        reason: format!("the last start id {base} leaves no room for {} more", archives.len()),
    })?;
    write_file_atomic(data_dir, LAST_START_ID_FILE, format!("{last}\n").as_bytes())
        .map_err(|e| HotCopyError::Persist { path, reason: e.to_string() })?;
    Ok((archives.iter().enumerate().map(|(i, &a)| (a, base + 1 + i as u64)).collect(), last))
}

fn persist(dir: &Path, status: &HotCopyStatus) -> Result<(), HotCopyError> {
    let name = format!("{}.json", status.id);
    let bytes = serde_json::to_vec_pretty(status)
        .map_err(|e| HotCopyError::Persist { path: dir.join(&name), reason: format!("encode: {e}") })?;
    write_file_atomic(dir, &name, &bytes)
        .map_err(|e| HotCopyError::Persist { path: dir.join(&name), reason: e.to_string() })
}

/// Reads the persisted statuses: a job found running is marked failed (its process died) and rewritten; beyond
/// `HOTCOPY_MAX_KEPT_STATUSES` the oldest are removed. Unreadable files are skipped with a warning.
fn load_statuses(dir: &Path) -> Result<Vec<HotCopyStatus>, HotCopyError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| HotCopyError::Io { op, path, source }
    };
    // Opened without following a link: its leftovers and excess statuses are removed through it.
    let status_dir = DirFd::open(dir).map_err(|e| {
        let source = if is_link(&e) {
            std::io::Error::other(
                "it is a symbolic link, which Backset neither follows nor removes: replace it with a directory \
                 (`rm` removes a link, not what it leads to) and start again",
            )
        } else {
            e
        };
        HotCopyError::Io { op: "open the hot copy status directory", path: dir.to_path_buf(), source }
    })?;
    let mut out = Vec::new();
    for name in status_dir.names().map_err(io("read directory", dir))? {
        let name = name.to_string_lossy().into_owned();
        let path = dir.join(&name);
        if name.starts_with(TMP_FILE_PREFIX) {
            let _ = status_dir.remove_tree(&name);
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else { continue };
        let parsed = (|| {
            let md = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            if !md.is_file() {
                return Err("not a regular file".to_string());
            }
            if md.len() > HOTCOPY_MAX_STATUS_FILE_BYTES {
                return Err(format!("{} bytes, more than the limit of {HOTCOPY_MAX_STATUS_FILE_BYTES}", md.len()));
            }
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            let s: HotCopyStatus = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if stem != s.id.to_string() {
                return Err(format!("holds the status of hot copy {}, not {stem}", s.id));
            }
            Ok(s)
        })();
        match parsed {
            Ok(mut s) => {
                if s.status == JobState::Running {
                    if let Some((elements, end)) = completed_on_disk(&s) {
                        tracing::warn!(id = %s.id, "a hot copy persisted as running completed (its destinations show \
                            it): its final status had not been saved; reporting it completed");
                        s.status = JobState::Completed;
                        s.stage = Stage::WriteMetadata.number();
                        s.message = format!("{MSG_COMPLETED} ({MSG_RECOGNISED})");
                        s.end_micros = Some(end.unwrap_or_else(now_micros));
                        s.rate_bytes_per_sec = 0.0;
                        s.eta_secs = None;
                        for (p, element) in s.participants.iter_mut().zip(elements) {
                            p.message = MSG_COMPLETED.to_string();
                            p.stage = Stage::WriteMetadata.number();
                            p.rate_bytes_per_sec = 0.0;
                            p.eta_secs = None;
                            p.element = element;
                        }
                        persist(dir, &s)?;
                    }
                }
                if s.status == JobState::Running {
                    s.status = JobState::Failed;
                    s.message = MSG_PROCESS_STOPPED.to_string();
                    s.end_micros = Some(now_micros());
                    s.rate_bytes_per_sec = 0.0;
                    s.eta_secs = None;
                    for p in &mut s.participants {
                        p.message = MSG_PROCESS_STOPPED.to_string();
                        p.rate_bytes_per_sec = 0.0;
                        p.eta_secs = None;
                        p.element = None;
                    }
                    persist(dir, &s)?;
                }
                out.push(s);
            }
            Err(reason) => tracing::warn!(
                file = %path.display(), %reason,
                "skipping an unreadable hot copy status file; remove it if it is not needed"
            ),
        }
    }
    out.sort_by_key(|s| (s.begin_micros, s.id));
    if out.len() > HOTCOPY_MAX_KEPT_STATUSES {
        let excess = out.len() - HOTCOPY_MAX_KEPT_STATUSES;
        for s in out.drain(..excess) {
            let name = format!("{}.json", s.id);
            status_dir.remove_tree(&name).map_err(io("remove", &dir.join(&name)))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::eta_secs;

    #[test]
    fn the_eta_follows_the_rate_capped_by_the_limit() {
        // Nothing planned yet: unknown.
        assert_eq!(eta_secs(0, 0, 0.0, Some(100)), None);
        // Everything copied: nothing left.
        assert_eq!(eta_secs(500, 500, 0.0, None), Some(0.0));
        // At the measured rate, never faster than the limit; at the limit while nothing is measured.
        assert_eq!(eta_secs(0, 1000, 100.0, None), Some(10.0));
        assert_eq!(eta_secs(0, 1000, 400.0, Some(200)), Some(5.0));
        assert_eq!(eta_secs(0, 1000, 50.0, Some(200)), Some(20.0));
        assert_eq!(eta_secs(0, 1000, 0.0, Some(200)), Some(5.0));
        assert_eq!(eta_secs(0, 1000, 0.0, None), None);
    }
}
