//! `backset-copier`: the copy engine with BLAKE3 on the fly and a per-SM rate limit.
//!
//! An [`SmCopier`], one per storage manager (SM), owns a pool of page-aligned buffers (one anonymous mapping,
//! [`limits::POOL_BYTES_DEFAULT`]) and an io_uring ring with those buffers registered, on a thread of its own; every
//! job of the SM (hot copy atoms, journal copies, whatever else runs there) submits to it, and the jobs running at the
//! same time share the ring and the pool fairly. It copies a job's files (whole, or byte ranges) with O_DIRECT where
//! the file system allows, hashes every byte from the buffer it was read into, makes targets and their directories
//! durable before it returns (an fsync each, or one `syncfs` for small targets: [`limits::BATCH_SYNC_MAX_BYTES`]),
//! and reports each file's size, BLAKE3 and 1 MiB chunk hashes: exactly what `backset-format`'s
//! manifests store. When the ring cannot be set up (ENOSYS, EPERM from a seccomp filter, ENOMEM) or when
//! `BACKSET_IO=portable`, a portable pread/pwrite backend gives the same output.
//!
//! [`SmCopier::stream`] runs a job that writes nothing: it lends each buffer it read and hashed, in file order, to a
//! consumer ([`ChunkSink`], an upload to object storage) as a [`Chunk`], which returns to the pool when dropped; the
//! pool then bounds the copy and its consumer together, and a slow consumer holds the reads back.
//!
//! [`SmCopier::copy`] blocks its caller until the job is done; call it from as many threads as there are jobs. The
//! ring and the pool are set up once, when the handle is made, not per job. Each job keeps its own control, progress,
//! error and cleanup: one job's failure, cancel or panic never touches another's. Watch and cancel a job through its
//! [`JobControl`]; rate-limit it with a [`Throttle`] (see [`limit`]: one [`limit::SmLimiter`] per SM, one
//! [`limit::JobLimiter`] per job). A [`Copier`] is the same for a caller that runs one job at a time.
//!
//! See DESIGN.md, "The copier" and "Rate limit".

mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod file;
mod hash;
mod job;
pub mod limit;
pub mod limits;
mod pool;
mod portable;
mod stream;
mod uring;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use error::CopyError;
pub use job::{Backend, CopyRequest, FileReport, JobControl, JobReport, Progress, Throttle};
pub use stream::{Chunk, ChunkSink};

use file::Created;
use pool::BufferPool;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring, or portable when the ring cannot be set up or `BACKSET_IO=portable` is set.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// pread/pwrite.
    Portable,
}

/// How an [`SmCopier`] (or a [`Copier`]) works, for all its jobs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backend.
    pub backend: BackendChoice,
    /// Size of the buffer pool, a multiple of [`limits::BUFFER_BYTES`] within
    /// [`limits::POOL_BYTES_MIN`]..=[`limits::POOL_BYTES_MAX`].
    pub pool_bytes: usize,
    /// Hash every byte (BLAKE3, whole file and chunks). Off only for benchmarks.
    pub hash: bool,
    /// Use O_DIRECT where the file system allows.
    pub direct: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { backend: BackendChoice::Auto, pool_bytes: limits::POOL_BYTES_DEFAULT, hash: true, direct: true }
    }
}

/// What an [`SmCopier`] set up and has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopierStats {
    /// The backend its jobs run on.
    pub backend: Backend,
    /// io_uring rings this handle set up: 1 on io_uring, 0 on the portable backend, however many jobs ran.
    pub rings_set_up: u64,
    /// Buffers of the pool (one mapping, made once).
    pub pool_buffers: usize,
    /// Buffers registered with the ring (the rest are used unregistered): as many as RLIMIT_MEMLOCK allowed.
    pub registered_buffers: usize,
    /// Buffers free now.
    pub free_buffers: usize,
    /// Time the setup took (the pool's mapping, the ring, the registration): what each job would pay without a
    /// shared handle.
    pub setup: Duration,
    /// Jobs started on this handle.
    pub jobs_started: u64,
    /// Jobs running now.
    pub jobs_running: u64,
    /// The most jobs that were on the ring at once (0 on the portable backend).
    pub jobs_on_ring_max: u64,
    /// The ring runs with `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+): the kernel runs
    /// the completion work of its operations in one batch when the ring thread waits, instead of interrupting it for
    /// each. False on older kernels (a plain ring, same results) and on the portable backend.
    pub deferred_task_work: bool,
    /// `statx` operations the ring ran for the jobs that ended (0 on the portable backend): one per source and one
    /// per directory that targets went to, or a few more when many targets of a directory were created at once
    /// (at most [`limits::MAX_OPEN_FILES`] of them before the first one's `statx` completed).
    pub statx_ops: u64,
}

/// The copier of one SM: one buffer pool and, on io_uring, one ring on a thread of its own, set up once and shared by
/// every job of the SM. Cheap to clone: clones are handles to the same copier, which stops when the last is dropped.
///
/// Jobs call [`copy`](Self::copy) from their own threads at the same time; the ring thread runs them side by side,
/// in turn, each within an equal share of the pool's buffers and of the open files (so a small journal copy is not
/// held up by a large atom copy), and each with its own control, throttle, error and cleanup.
#[derive(Debug, Clone)]
pub struct SmCopier {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    opts: Options,
    note: Option<String>,
    pool: Arc<BufferPool>,
    /// The ring thread (io_uring), `None` on the portable backend.
    ring: Option<RingThread>,
    registered: usize,
    /// The ring has `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
    deferred: bool,
    setup: Duration,
    /// The next job's owner key in the pool (from 1).
    next_owner: AtomicU64,
    jobs_started: AtomicU64,
    jobs_running: AtomicU64,
    counters: Arc<uring::RingCounters>,
    /// Test only: the next job's armed panic, and what the last job that panicked left.
    #[cfg(feature = "fault-injection")]
    fault: Mutex<(Option<u64>, Option<fault::Unwound>)>,
}

/// The ring thread and the way jobs reach it.
#[derive(Debug)]
struct RingThread {
    jobs: Option<mpsc::Sender<uring::JobMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for uring::JobMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMsg").field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl Drop for RingThread {
    /// Closes the channel (the thread ends once it has no job left) and waits for the thread, which drops the ring
    /// (unregistering the buffers) before it ends.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RingThread {
    /// Starts the ring thread, which sets up the ring over `pool` and registers its buffers; returns once that is
    /// done, with the number of registered buffers and whether the ring defers its task work (asked for with
    /// `want_deferred`), or the setup's error.
    fn start(
        pool: &Arc<BufferPool>,
        opts: &Options,
        counters: &Arc<uring::RingCounters>,
        want_deferred: bool,
    ) -> std::io::Result<(Self, usize, bool)> {
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (pool, opts, counters) = (Arc::clone(pool), opts.clone(), Arc::clone(counters));
        let thread =
            std::thread::Builder::new().name("backset-ring".into()).spawn(move || {
                match uring::Uring::new(pool, want_deferred) {
                    Ok(u) => {
                        let _ = ready_tx.send(Ok((u.registered(), u.deferred())));
                        uring::serve(u, &opts, jobs_rx, &counters);
                    }
                    Err((_, e)) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let mut ring = Self { jobs: Some(jobs_tx), thread: Some(thread) };
        match ready_rx.recv() {
            Ok(Ok((registered, deferred))) => Ok((ring, registered, deferred)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                ring.jobs = None;
                Err(std::io::Error::other("the io_uring thread stopped while setting up its ring"))
            }
        }
    }
}

impl SmCopier {
    /// Sets up the pool and the backend (on io_uring, the ring and its thread), once for all the SM's jobs.
    pub fn new(opts: Options) -> Result<Self, CopyError> {
        Self::with_ring(opts, true)
    }

    /// Test only (feature `fault-injection`): [`SmCopier::new`] with a plain ring, as on a kernel without
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (before 6.1): the fallback path, on any kernel.
    #[cfg(feature = "fault-injection")]
    pub fn new_without_deferred_task_work(opts: Options) -> Result<Self, CopyError> {
        Self::with_ring(opts, false)
    }

    /// [`SmCopier::new`], asking for a ring that defers its task work or not.
    fn with_ring(opts: Options, want_deferred: bool) -> Result<Self, CopyError> {
        let ok_size = (limits::POOL_BYTES_MIN..=limits::POOL_BYTES_MAX).contains(&opts.pool_bytes)
            && opts.pool_bytes.is_multiple_of(limits::BUFFER_BYTES);
        if !ok_size {
            return Err(CopyError::Setup {
                backend: "copier",
                reason: format!(
                    "pool size {} must be a multiple of {} between {} and {}",
                    opts.pool_bytes,
                    limits::BUFFER_BYTES,
                    limits::POOL_BYTES_MIN,
                    limits::POOL_BYTES_MAX
                ),
            });
        }
        let started = Instant::now();
        let pool =
            Arc::new(BufferPool::new(opts.pool_bytes / limits::BUFFER_BYTES).map_err(|e| CopyError::Setup {
                backend: "copier",
                reason: format!("mmap of the buffer pool: {e}"),
            })?);
        let counters = Arc::new(uring::RingCounters::default());
        let env_portable = std::env::var("BACKSET_IO").is_ok_and(|v| v == "portable");
        let (ring, note) = match opts.backend {
            BackendChoice::Portable => (None, None),
            BackendChoice::Auto if env_portable => (None, Some("BACKSET_IO=portable".to_string())),
            BackendChoice::Auto => match RingThread::start(&pool, &opts, &counters, want_deferred) {
                Ok(ring) => (Some(ring), None),
                Err(e) => (None, Some(format!("io_uring unavailable ({e}), using the portable backend"))),
            },
            BackendChoice::Uring => match RingThread::start(&pool, &opts, &counters, want_deferred) {
                Ok(ring) => (Some(ring), None),
                Err(e) => {
                    return Err(CopyError::Setup {
                        backend: "uring",
                        reason: format!("{e} (io_uring needs Linux 5.11+ and no seccomp filter blocking it)"),
                    })
                }
            },
        };
        let (ring, registered, deferred) = match ring {
            Some((ring, registered, deferred)) => (Some(ring), registered, deferred),
            None => (None, 0, false),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                opts,
                note,
                pool,
                ring,
                registered,
                deferred,
                setup: started.elapsed(),
                next_owner: AtomicU64::new(1),
                jobs_started: AtomicU64::new(0),
                jobs_running: AtomicU64::new(0),
                counters,
                #[cfg(feature = "fault-injection")]
                fault: Mutex::new((None, None)),
            }),
        })
    }

    /// The backend jobs run on.
    pub fn backend(&self) -> Backend {
        match self.shared.ring {
            Some(_) => Backend::Uring,
            None => Backend::Portable,
        }
    }

    /// Why the backend is portable, when it was not asked for.
    pub fn backend_note(&self) -> Option<&str> {
        self.shared.note.as_deref()
    }

    /// What the copier set up and has run.
    pub fn stats(&self) -> CopierStats {
        let s = &self.shared;
        CopierStats {
            backend: self.backend(),
            rings_set_up: u64::from(s.ring.is_some()),
            pool_buffers: s.pool.count(),
            registered_buffers: s.registered,
            free_buffers: s.pool.free_count(),
            setup: s.setup,
            jobs_started: s.jobs_started.load(Relaxed),
            jobs_running: s.jobs_running.load(Relaxed),
            jobs_on_ring_max: s.counters.on_ring_max.load(Relaxed),
            deferred_task_work: s.deferred,
            statx_ops: s.counters.statx.load(Relaxed),
        }
    }

    /// Copies `requests` as one job, beside the SM's other jobs. Blocks until done, failed or cancelled (through
    /// `ctl`). On failure or cancellation every target the job created is removed. On success every target and its
    /// directory is durable. A panic inside the job (a bug) is returned as [`CopyError::Internal`] once every
    /// operation it had in flight completed; the other jobs run on, and the copier runs the next jobs as usual.
    pub fn copy(
        &self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
    ) -> Result<JobReport, CopyError> {
        self.run(requests, ctl, throttle, None)
    }

    /// Reads and hashes `requests` (each without a target) as one job, as [`copy`](Self::copy) does, and hands
    /// every buffer read, once hashed, to `sink` as a [`Chunk`] (each file's in order) instead of writing it: see
    /// the `stream` module. The buffers stay out of the pool until the consumer drops their chunks, so the pool
    /// bounds the memory of the copy and of its consumer together, and the job's reads wait while the consumer
    /// holds every free buffer. Each report is as [`copy`](Self::copy)'s (its hashes are those of the bytes lent).
    /// Files of no bytes give no chunk. On failure or cancellation the chunks already handed on stay the
    /// consumer's: the copier neither knows nor undoes what it did with them.
    pub fn stream(
        &self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
        sink: &dyn ChunkSink,
    ) -> Result<JobReport, CopyError> {
        if let Some(r) = requests.iter().find(|r| r.target.is_some()) {
            return Err(CopyError::BadRequest {
                path: r.source.clone(),
                reason: "a streaming job hands its chunks to its consumer: its requests have no target".into(),
            });
        }
        self.run(requests, ctl, throttle, Some(sink))
    }

    fn run(
        &self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
        sink: Option<&dyn ChunkSink>,
    ) -> Result<JobReport, CopyError> {
        let s = &*self.shared;
        let started = ctl.start();
        ctl.files_total.fetch_add(requests.len() as u64, Relaxed);
        let known: u64 = requests.iter().filter_map(|r| r.len).sum();
        ctl.bytes_total.fetch_add(known, Relaxed);
        s.jobs_started.fetch_add(1, Relaxed);
        s.jobs_running.fetch_add(1, Relaxed);
        let _running = Running(&s.jobs_running);
        let owner = s.next_owner.fetch_add(1, Relaxed);
        let created = Mutex::new(Created::default());
        let result = match &s.ring {
            Some(ring) => self.run_on_ring(ring, owner, requests, ctl, throttle, sink, &created),
            None => {
                // Sound to unwind from: the job's threads are joined by then, and what a panicked job leaves is thrown
                // away (`created` and the progress counters belong to this job) or made whole (its pool buffers).
                let job = catch_unwind(AssertUnwindSafe(|| {
                    portable::run(&s.pool, owner, requests, ctl, throttle, sink, &s.opts, &created)
                }));
                // Buffers whose token a failed job dropped come back here; a job that succeeded gave every one back.
                let lost = s.pool.release_owner(owner);
                let result = job.unwrap_or_else(|panic| Err(panicked("portable", &*panic)));
                debug_assert!(result.is_err() || lost == 0, "a successful job lost {lost} buffers");
                result
            }
        };
        let mut created = created.into_inner().unwrap_or_else(PoisonError::into_inner);
        let (files, synced_file_systems) = match result.and_then(|files| Ok((files, created.make_durable()?))) {
            Ok(done) => done,
            Err(e) => {
                created.remove_all();
                return Err(e);
            }
        };
        let count = |f: fn(&FileReport) -> bool| files.iter().filter(|r| f(r)).count() as u64;
        Ok(JobReport {
            bytes: files.iter().map(|f| f.bytes).sum(),
            elapsed: Instant::now() - started,
            waited: ctl.progress().waited,
            backend: self.backend(),
            backend_note: s.note.clone(),
            registered_buffers: s.registered,
            direct_sources: count(|f| f.direct_source),
            direct_targets: count(|f| f.direct_target),
            direct_fallbacks: if s.opts.direct { count(|f| !f.direct_target) } else { 0 },
            batch_synced: created.batched(),
            synced_file_systems,
            flushes: created.flushes(),
            files,
        })
    }

    /// Hands the job to the ring thread and waits for its end.
    #[allow(clippy::too_many_arguments)]
    fn run_on_ring(
        &self,
        ring: &RingThread,
        owner: u64,
        reqs: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
        sink: Option<&dyn ChunkSink>,
        created: &Mutex<Created>,
    ) -> Result<Vec<FileReport>, CopyError> {
        let end = Arc::new(uring::JobEnd::default());
        let refs = uring::JobRefs { reqs, ctl, throttle, sink, created };
        // SAFETY: only the lifetime changes (same type, same layout). The ring thread uses these references only while
        // the job is in its table, and drops them (with the job's state) before it sets `end`: `Driver::end`, on
        // every path, its guard's included. This function neither returns nor unwinds before `end` is set: it waits
        // for it below, and `_waiting`'s `Drop` waits for it should anything in between unwind. A job that never
        // reaches the ring thread (the send fails, or the thread is gone with the message unread) sets `end` when
        // its message is dropped, having used nothing. So no use of the references outlives the borrows they came
        // from.
        let refs = unsafe { std::mem::transmute::<uring::JobRefs<'_>, uring::JobRefs<'static>>(refs) };
        let _waiting = AwaitEnd(&end);
        let msg = uring::JobMsg {
            refs,
            owner,
            end: uring::EndOnDrop(Arc::clone(&end)),
            #[cfg(feature = "fault-injection")]
            panic_at: self.fault().0.take(),
        };
        if let Some(jobs) = &ring.jobs {
            // A failed send gives the message back, and dropping it ends the job.
            let _ = jobs.send(msg);
        }
        let outcome = end.take();
        #[cfg(feature = "fault-injection")]
        if outcome.unwound.is_some() {
            self.fault().1 = outcome.unwound;
        }
        outcome.result
    }

    #[cfg(feature = "fault-injection")]
    fn fault(&self) -> std::sync::MutexGuard<'_, (Option<u64>, Option<fault::Unwound>)> {
        self.shared.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Test only (feature `fault-injection`, see [`fault`]): the io_uring backend's completion handler panics while
    /// handling the `completion`-th completion (1 for the first) of the next job. Does nothing on the portable backend.
    #[cfg(feature = "fault-injection")]
    pub fn panic_at_completion(&self, completion: u64) {
        self.fault().0 = Some(completion);
    }

    /// Test only (feature `fault-injection`): what the io_uring backend did when the last job that panicked ended, if
    /// one did since the last call.
    #[cfg(feature = "fault-injection")]
    pub fn take_unwound(&self) -> Option<fault::Unwound> {
        self.fault().1.take()
    }

    /// Test only (feature `fault-injection`): buffers of the pool free now, and the pool's size.
    #[cfg(feature = "fault-injection")]
    pub fn free_buffers(&self) -> (usize, usize) {
        (self.shared.pool.free_count(), self.shared.pool.count())
    }
}

/// Counts a job out of the running ones when its `copy` returns (or unwinds).
struct Running<'a>(&'a AtomicU64);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Waits for a job's end when dropped: `SmCopier::run_on_ring` cannot unwind past the job's borrowed references.
struct AwaitEnd<'a>(&'a uring::JobEnd);

impl Drop for AwaitEnd<'_> {
    fn drop(&mut self) {
        self.0.wait();
    }
}

/// A job's panic, as an error.
fn panicked(backend: &'static str, panic: &(dyn std::any::Any + Send)) -> CopyError {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    CopyError::Internal { backend, reason: format!("the job panicked: {what}") }
}

/// A copier for a caller that runs one job at a time (a restore, a check, a benchmark): an [`SmCopier`] of its own.
#[derive(Debug)]
pub struct Copier {
    sm: SmCopier,
}

impl Copier {
    /// Sets up the pool and the backend.
    pub fn new(opts: Options) -> Result<Self, CopyError> {
        Ok(Self { sm: SmCopier::new(opts)? })
    }

    /// The backend jobs run on.
    pub fn backend(&self) -> Backend {
        self.sm.backend()
    }

    /// Why the backend is portable, when it was not asked for.
    pub fn backend_note(&self) -> Option<&str> {
        self.sm.backend_note()
    }

    /// What the copier set up and has run.
    pub fn stats(&self) -> CopierStats {
        self.sm.stats()
    }

    /// Copies `requests`: [`SmCopier::copy`].
    pub fn copy(
        &mut self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
    ) -> Result<JobReport, CopyError> {
        self.sm.copy(requests, ctl, throttle)
    }

    /// Streams `requests` to `sink`: [`SmCopier::stream`].
    pub fn stream(
        &mut self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
        sink: &dyn ChunkSink,
    ) -> Result<JobReport, CopyError> {
        self.sm.stream(requests, ctl, throttle, sink)
    }

    /// Test only (feature `fault-injection`): [`SmCopier::panic_at_completion`].
    #[cfg(feature = "fault-injection")]
    pub fn panic_at_completion(&mut self, completion: u64) {
        self.sm.panic_at_completion(completion);
    }

    /// Test only (feature `fault-injection`): [`SmCopier::take_unwound`].
    #[cfg(feature = "fault-injection")]
    pub fn take_unwound(&mut self) -> Option<fault::Unwound> {
        self.sm.take_unwound()
    }

    /// Test only (feature `fault-injection`): [`SmCopier::free_buffers`].
    #[cfg(feature = "fault-injection")]
    pub fn free_buffers(&self) -> (usize, usize) {
        self.sm.free_buffers()
    }
}
