//! What a copy job is asked, what it reports, and how it is watched and cancelled while it runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One unit of copying: a whole file, or a byte range of one; or, without a target, of reading and hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    /// File to read.
    pub source: PathBuf,
    /// File to create (must not exist; missing parent directories are created). `None`: read and hash only (what
    /// a check of a backup set does).
    pub target: Option<PathBuf>,
    /// First byte of the source to copy.
    pub offset: u64,
    /// Bytes to copy; `None` copies to the source's end as it is when opened.
    pub len: Option<u64>,
}

impl CopyRequest {
    /// Copy a whole file.
    pub fn file(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self { source: source.into(), target: Some(target.into()), offset: 0, len: None }
    }

    /// Read and hash a whole file without writing anything.
    pub fn read(source: impl Into<PathBuf>) -> Self {
        Self { source: source.into(), target: None, offset: 0, len: None }
    }

    /// Copy `len` bytes from `offset` (journal segments are copied up to a durable offset).
    pub fn range(source: impl Into<PathBuf>, target: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        Self { source: source.into(), target: Some(target.into()), offset, len: Some(len) }
    }
}

/// What was copied for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Index of the request in the job.
    pub request: usize,
    /// Bytes copied (the target's size) or read.
    pub bytes: u64,
    /// BLAKE3 of the target's bytes (zero when hashing is off).
    pub hash: [u8; 32],
    /// BLAKE3 of each 1 MiB chunk (empty when hashing is off).
    pub chunk_hashes: Vec<[u8; 32]>,
    /// The source was read with O_DIRECT.
    pub direct_source: bool,
    /// The target was written with O_DIRECT (false without a target).
    pub direct_target: bool,
    /// The first bytes read (of the file, or of the range for a ranged request): `min(`[`HEAD_BYTES`](crate::limits::HEAD_BYTES)`,
    /// bytes)` of them, copied from the read buffer (no extra I/O), for a caller that checks a header.
    pub head: Vec<u8>,
}

/// Which I/O backend ran a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring on one thread.
    Uring,
    /// pread/pwrite on a small thread pool.
    Portable,
}

impl Backend {
    /// `uring` or `portable`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Portable => "portable",
        }
    }
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// One report per request, in request order.
    pub files: Vec<FileReport>,
    /// Bytes copied in all.
    pub bytes: u64,
    /// Wall time of the job.
    pub elapsed: Duration,
    /// Time spent waiting on the rate limiter.
    pub waited: Duration,
    /// The backend that ran it.
    pub backend: Backend,
    /// Why the backend is not io_uring, when it is not by request.
    pub backend_note: Option<String>,
    /// Pool buffers registered with the ring (the rest use unregistered I/O).
    pub registered_buffers: usize,
    /// Files read with O_DIRECT.
    pub direct_sources: u64,
    /// Files written with O_DIRECT.
    pub direct_targets: u64,
    /// Files for which the file system refused O_DIRECT, so buffered I/O was used.
    pub direct_fallbacks: u64,
    /// Targets of at most [`crate::limits::BATCH_SYNC_MAX_BYTES`], made durable by the job's `syncfs` at its end
    /// instead of an fsync each (larger targets are fsynced one by one).
    pub batch_synced: u64,
    /// File systems synced at the end of the job (one per file system holding a batch-synced target; none when
    /// every target was fsynced, and then the directories were).
    pub synced_file_systems: usize,
    /// Write-back flushes of a throttled job: an `fdatasync` after every [`crate::limits::FLUSH_AFTER_BYTES`]
    /// written (none when the job was not limited).
    pub flushes: u64,
}

/// A snapshot of a running job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes copied so far (written and, for read-only requests, hashed).
    pub bytes_done: u64,
    /// Bytes read from the sources so far: what the rate limit counts. Ahead of `bytes_done` by what is in the
    /// buffers.
    pub bytes_read: u64,
    /// Bytes to copy in all (grows as files are opened when requests have no length).
    pub bytes_total: u64,
    /// Files finished (written, and fsynced unless left to the job's batch sync).
    pub files_done: u64,
    /// Files in the job.
    pub files_total: u64,
    /// Time waited on the rate limiter so far.
    pub waited: Duration,
    /// Time since the job started.
    pub elapsed: Duration,
    /// Rate over roughly the last second, bytes per second.
    pub rate_bytes_per_sec: f64,
}

/// Shared between a running job and whoever watches it: progress counters and the cancel flag.
#[derive(Debug, Default)]
pub struct JobControl {
    cancel: AtomicBool,
    pub(crate) bytes_done: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_total: AtomicU64,
    pub(crate) files_done: AtomicU64,
    pub(crate) files_total: AtomicU64,
    pub(crate) waited_ns: AtomicU64,
    started: OnceLock<Instant>,
    last_sample: Mutex<Option<(Instant, u64, f64)>>,
}

/// Shortest interval between two samples of the current rate.
const RATE_SAMPLE_MIN: Duration = Duration::from_millis(250);

impl JobControl {
    /// A control for a job not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop. It stops within `CANCEL_POLL_MS` plus the time the operations in flight take, removes
    /// its targets and returns `CopyError::Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Relaxed);
    }

    /// Whether cancellation was asked.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }

    /// The cancel flag, for a rate limiter's blocking wait.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Counts work its caller does outside the copier (files it reads itself) in this control's progress: `total`
    /// bytes more to do, of which `done` are done. The job's clock starts at the first call if no copy started it.
    pub fn add_outside(&self, total: u64, done: u64) {
        self.start();
        self.bytes_total.fetch_add(total, Relaxed);
        self.bytes_done.fetch_add(done, Relaxed);
    }

    pub(crate) fn start(&self) -> Instant {
        *self.started.get_or_init(Instant::now)
    }

    pub(crate) fn add_waited(&self, d: Duration) {
        self.waited_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// A snapshot, readable at any moment from any thread.
    pub fn progress(&self) -> Progress {
        let now = Instant::now();
        let elapsed = self.started.get().map_or(Duration::ZERO, |s| now - *s);
        let bytes_done = self.bytes_done.load(Relaxed);
        let mut last = self.last_sample.lock().unwrap();
        let rate = match *last {
            Some((t, _, r)) if now - t < RATE_SAMPLE_MIN => r,
            Some((t, b, _)) => {
                let r = (bytes_done - b) as f64 / (now - t).as_secs_f64();
                *last = Some((now, bytes_done, r));
                r
            }
            None => {
                let r = if elapsed.is_zero() { 0.0 } else { bytes_done as f64 / elapsed.as_secs_f64() };
                *last = Some((now, bytes_done, r));
                r
            }
        };
        Progress {
            bytes_done,
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_total: self.bytes_total.load(Relaxed),
            files_done: self.files_done.load(Relaxed),
            files_total: self.files_total.load(Relaxed),
            waited: Duration::from_nanos(self.waited_ns.load(Relaxed)),
            elapsed,
            rate_bytes_per_sec: rate,
        }
    }
}

/// A rate limit the copy loop asks before each read. `try_acquire` admits `bytes` now, or says how long to wait
/// before asking again. `backset_copier::limit::JobLimiter` implements it.
pub trait Throttle: Send + Sync {
    /// Admit `bytes` of reading now, or return the time to wait before asking again.
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration>;

    /// Largest read to ask for at once: the copier reads a chunk in pieces of at most this many bytes (a multiple of
    /// [`crate::limits::DIRECT_ALIGN`], or more than a buffer for no preference), so that what a slow throttle lets
    /// through in any window follows its rate closely. Default: no preference.
    fn grain(&self) -> u64 {
        u64::MAX
    }

    /// Whether the throttle limits the job now. A limited job flushes its writes as it goes (see
    /// [`crate::limits::FLUSH_AFTER_BYTES`]); an unlimited one leaves them to its end. Default: limited.
    fn is_limited(&self) -> bool {
        true
    }
}
