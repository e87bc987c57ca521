//! `backset-copier`: the copy engine with BLAKE3 on the fly and a per-SM rate limit.
//!
//! A [`Copier`] owns a pool of page-aligned buffers (one anonymous mapping, [`limits::POOL_BYTES_DEFAULT`]) and an
//! io_uring ring with those buffers registered; it copies a job's files (whole, or byte ranges) with O_DIRECT where
//! the file system allows, hashes every byte from the buffer it was read into, makes targets and their directories
//! durable before it returns (an fsync each, or one `syncfs` for small targets: [`limits::BATCH_SYNC_MAX_BYTES`]),
//! and reports each file's size, BLAKE3 and 1 MiB chunk hashes: exactly what `backset-format`'s
//! manifests store. When the ring cannot be set up (ENOSYS, EPERM from a seccomp filter, ENOMEM) or when
//! `BACKSET_IO=portable`, a portable pread/pwrite backend gives the same output.
//!
//! A job runs on the calling thread (io_uring) or a few scoped threads (portable); one job at a time per `Copier`.
//! Watch and cancel it through its [`JobControl`]; rate-limit it with a [`Throttle`] (see [`limit`]).
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
mod uring;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

pub use error::CopyError;
pub use job::{Backend, CopyRequest, FileReport, JobControl, JobReport, Progress, Throttle};

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

/// How a [`Copier`] works.
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

/// The copy engine: a buffer pool and, for io_uring, a ring with the pool registered.
#[derive(Debug)]
pub struct Copier {
    io: Io,
    opts: Options,
    note: Option<String>,
}

/// The backend and its buffer pool. The ring owns the pool whose buffers it registered, and unregisters them before
/// the pool is unmapped (`uring::Uring`'s `Drop`).
#[derive(Debug)]
enum Io {
    Uring(Box<uring::Uring>),
    Portable(BufferPool),
}

impl Copier {
    /// Sets up the pool and the backend.
    pub fn new(opts: Options) -> Result<Self, CopyError> {
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
        let pool = BufferPool::new(opts.pool_bytes / limits::BUFFER_BYTES)
            .map_err(|e| CopyError::Setup { backend: "copier", reason: format!("mmap of the buffer pool: {e}") })?;
        let env_portable = std::env::var("BACKSET_IO").is_ok_and(|v| v == "portable");
        let (io, note) = match opts.backend {
            BackendChoice::Portable => (Io::Portable(pool), None),
            BackendChoice::Auto if env_portable => (Io::Portable(pool), Some("BACKSET_IO=portable".to_string())),
            BackendChoice::Auto => match uring::Uring::new(pool) {
                Ok(u) => (Io::Uring(Box::new(u)), None),
                Err((pool, e)) => {
                    (Io::Portable(pool), Some(format!("io_uring unavailable ({e}), using the portable backend")))
                }
            },
            BackendChoice::Uring => match uring::Uring::new(pool) {
                Ok(u) => (Io::Uring(Box::new(u)), None),
                Err((_, e)) => {
                    return Err(CopyError::Setup {
                        backend: "uring",
                        reason: format!("{e} (io_uring needs Linux 5.11+ and no seccomp filter blocking it)"),
                    })
                }
            },
        };
        Ok(Self { io, opts, note })
    }

    /// The backend jobs run on.
    pub fn backend(&self) -> Backend {
        match self.io {
            Io::Uring(_) => Backend::Uring,
            Io::Portable(_) => Backend::Portable,
        }
    }

    /// Why the backend is portable, when it was not asked for.
    pub fn backend_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Copies `requests`. Blocks until done, failed or cancelled (through `ctl`). On failure or cancellation every
    /// target the job created is removed. On success every target and its directory is durable. A panic inside the
    /// job (a bug) is returned as [`CopyError::Internal`] once every operation it had in flight completed; the
    /// copier then runs the next job as usual.
    pub fn copy(
        &mut self,
        requests: &[CopyRequest],
        ctl: &JobControl,
        throttle: Option<&dyn Throttle>,
    ) -> Result<JobReport, CopyError> {
        let started = ctl.start();
        ctl.files_total.fetch_add(requests.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let known: u64 = requests.iter().filter_map(|r| r.len).sum();
        ctl.bytes_total.fetch_add(known, std::sync::atomic::Ordering::Relaxed);
        let created = Mutex::new(Created::default());
        let lock = || created.lock().unwrap_or_else(PoisonError::into_inner);
        // Sound to unwind from: a job waits out its operations on every path (see `uring`), and what a panicked job
        // leaves is thrown away (`created` and the progress counters belong to this job) or made whole (the pool).
        let job = catch_unwind(AssertUnwindSafe(|| match &mut self.io {
            Io::Uring(u) => uring::run(u, requests, ctl, throttle, &self.opts, &mut lock()),
            Io::Portable(pool) => portable::run(pool, requests, ctl, throttle, &self.opts, &created),
        }));
        let result = job.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            Err(CopyError::Internal { backend: self.backend().name(), reason: format!("the job panicked: {what}") })
        });
        // Buffers whose token a failed job dropped come back here; a job that succeeded gave every one back.
        let lost = self.pool_mut().reclaim();
        debug_assert!(result.is_err() || lost == 0, "a successful job lost {lost} buffers");
        #[cfg(feature = "fault-injection")]
        if let Io::Uring(u) = &mut self.io {
            u.fault().panic_at = None;
        }
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
            backend_note: self.note.clone(),
            registered_buffers: match &self.io {
                Io::Uring(u) => u.registered(),
                Io::Portable(_) => 0,
            },
            direct_sources: count(|f| f.direct_source),
            direct_targets: count(|f| f.direct_target),
            direct_fallbacks: if self.opts.direct { count(|f| !f.direct_target) } else { 0 },
            batch_synced: created.batched(),
            synced_file_systems,
            flushes: created.flushes(),
            files,
        })
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        match &mut self.io {
            Io::Uring(u) => u.pool_mut(),
            Io::Portable(pool) => pool,
        }
    }

    /// Test only (feature `fault-injection`, see [`fault`]): the io_uring backend's completion handler panics while
    /// handling the `completion`-th completion (1 for the first) of the next job. Does nothing on the portable backend.
    #[cfg(feature = "fault-injection")]
    pub fn panic_at_completion(&mut self, completion: u64) {
        if let Io::Uring(u) = &mut self.io {
            u.fault().panic_at = Some(completion);
        }
    }

    /// Test only (feature `fault-injection`): what the io_uring backend's guard did when the last job that panicked
    /// unwound, if one did since the last call.
    #[cfg(feature = "fault-injection")]
    pub fn take_unwound(&mut self) -> Option<fault::Unwound> {
        match &mut self.io {
            Io::Uring(u) => u.fault().unwound.take(),
            Io::Portable(_) => None,
        }
    }

    /// Test only (feature `fault-injection`): buffers of the pool free now, and the pool's size.
    #[cfg(feature = "fault-injection")]
    pub fn free_buffers(&self) -> (usize, usize) {
        let pool = match &self.io {
            Io::Uring(u) => u.pool(),
            Io::Portable(pool) => pool,
        };
        (pool.free_count(), pool.count())
    }
}
