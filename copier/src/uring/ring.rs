//! The ring and its setup: a [`Uring`] owns the ring and holds the buffer pool whose buffers are registered with it,
//! so the buffers are unregistered before the pool can be unmapped whatever the order of its fields.

use std::sync::Arc;

use io_uring::IoUring;

use crate::limits::{open_files_allowed, IO_WORKERS, MAX_OPEN_FILES, MAX_RING_ENTRIES};
use crate::pool::BufferPool;

/// A ring with (some of) the pool's buffers registered, and the pool. It lives on the SM's ring thread.
pub(crate) struct Uring {
    ring: IoUring,
    pool: Arc<BufferPool>,
    registered: usize,
    /// Files the jobs keep open at once, in all (`limits::open_files_allowed` of the descriptor limit).
    max_open: usize,
    /// Set up with `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (see [`build`]).
    deferred: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("registered", &self.registered)
            .field("max_open", &self.max_open)
            .field("deferred", &self.deferred)
            .finish()
    }
}

impl Uring {
    /// Sets up a ring over `pool` and registers as many of its buffers as RLIMIT_MEMLOCK allows (after raising the
    /// soft limit to the hard one); the rest are used unregistered. Called on the thread that submits to the ring
    /// (the io_uring worker limit applies to the submitting thread, and with `want_deferred` only the thread that set
    /// the ring up may enter it: see [`build`]). On failure the pool comes back with the error.
    pub(crate) fn new(pool: Arc<BufferPool>, want_deferred: bool) -> Result<Self, (Arc<BufferPool>, std::io::Error)> {
        let (ring, deferred) = match build(ring_entries(pool.count()), want_deferred) {
            Ok(built) => built,
            Err(e) => return Err((pool, e)),
        };
        // Best effort: kernels before 5.15 refuse it and keep their default (four workers per CPU).
        let _ = ring.submitter().register_iowq_max_workers(&mut [IO_WORKERS, 0]);
        let max_open = open_files_allowed(crate::limits::raise_soft_limit(libc::RLIMIT_NOFILE));
        crate::limits::raise_soft_limit(libc::RLIMIT_MEMLOCK);
        let iovecs = pool.iovecs(pool.count());
        let mut n = iovecs.len();
        let registered = loop {
            if n == 0 {
                break 0;
            }
            // SAFETY: the iovecs describe pool buffers, which stay mapped for as long as the pool lives. The
            // `Uring` built below holds the pool (an `Arc`: the mapping does not move) and its `Drop` unregisters
            // the buffers before its reference to the pool goes; buffers are only used by operations through their
            // unique tokens (`pool::Buf`).
            match unsafe { ring.submitter().register_buffers(&iovecs[..n]) } {
                Ok(()) => break n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) => n /= 2,
                Err(e) => return Err((pool, e)),
            }
        };
        Ok(Self { ring, pool, registered, max_open, deferred })
    }

    /// Buffers registered with the ring.
    pub(crate) fn registered(&self) -> usize {
        self.registered
    }

    /// Whether the ring runs with `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
    pub(crate) fn deferred(&self) -> bool {
        self.deferred
    }

    /// The ring, the pool, the registered buffers and the open-file limit, for the driver.
    pub(super) fn parts(&mut self) -> (&mut IoUring, &Arc<BufferPool>, usize, usize) {
        (&mut self.ring, &self.pool, self.registered, self.max_open)
    }
}

impl Drop for Uring {
    /// Unregisters the buffers; the fields (the ring, then the pool, whose `Drop` unmaps it) are dropped after this,
    /// in whatever order. Nothing is in flight: the driver borrows the `Uring` and waits out every job's operations
    /// before it ends, on every path. Should unregistering fail, the kernel keeps the registered pages pinned until the ring's
    /// descriptor closes, so unmapping the pool cannot hand memory the kernel still references to anyone else.
    fn drop(&mut self) {
        if self.registered == 0 {
            return;
        }
        while let Err(e) = self.ring.submitter().unregister_buffers() {
            if e.raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// Sets up a ring of `entries`, with `want_deferred` asking for `IORING_SETUP_SINGLE_ISSUER |
/// IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+) and falling back to a plain ring where the kernel refuses them (EINVAL).
/// Returns the ring and whether it has them.
///
/// With them, the kernel runs the completion work of the ring's operations (the task work of each operation its
/// worker threads finished: every open, create and `statx` of a small file) only when the ring thread enters the
/// ring to wait for completions, in one batch, instead of interrupting the ring thread for each one wherever it is;
/// and it skips the locking a ring shared between submitting threads needs. The copier meets their one condition
/// by construction: the ring thread sets the ring up, registers with it, submits, waits and drops it; nothing else
/// touches it (another thread's `io_uring_enter` or `io_uring_register` would fail with EEXIST). Every wait of the
/// driver enters the ring with `IORING_ENTER_GETEVENTS` (`submit_with_args` and `submit_and_wait` with a minimum
/// of one), which is what runs the deferred work.
fn build(entries: u32, want_deferred: bool) -> std::io::Result<(IoUring, bool)> {
    if want_deferred {
        match IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(entries) {
            Ok(ring) => return Ok((ring, true)),
            // Kernels before 6.1 (6.0 for SINGLE_ISSUER) refuse the flags they do not know with EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((IoUring::new(entries)?, false))
}

/// Ring size for a pool of `buffers`: at most one read per buffer is in flight (a throttled chunk's pieces share
/// its buffer, and `submit_reads` keeps reads within the buffer count), every buffer can be in one write, and every
/// open file in at most two other operations (open, statx or close of source and target; fallocate; fsync; a
/// write-back flush, only while it is written, when it has no other), so
/// operations in flight never exceed the ring, whatever order completions come in.
fn ring_entries(buffers: usize) -> u32 {
    ((2 * buffers + 2 * MAX_OPEN_FILES).next_power_of_two() as u32).min(MAX_RING_ENTRIES)
}
