//! The ring and its setup: a [`Uring`] owns the ring and the buffer pool whose buffers are registered with it, so
//! the buffers are unregistered before the pool is unmapped whatever the order of its fields.

use io_uring::IoUring;

use crate::limits::{open_files_allowed, IO_WORKERS, MAX_OPEN_FILES, MAX_RING_ENTRIES};
use crate::pool::BufferPool;

/// A ring with (some of) the pool's buffers registered, and the pool.
pub(crate) struct Uring {
    ring: IoUring,
    pool: BufferPool,
    registered: usize,
    /// Files a job keeps open at once (`limits::open_files_allowed` of the descriptor limit).
    max_open: usize,
    #[cfg(feature = "fault-injection")]
    fault: crate::fault::FaultState,
}

/// What a job borrows of a [`Uring`] while it runs.
pub(super) struct Parts<'a> {
    pub(super) ring: &'a mut IoUring,
    pub(super) pool: &'a BufferPool,
    pub(super) registered: usize,
    pub(super) max_open: usize,
    #[cfg(feature = "fault-injection")]
    pub(super) fault: &'a mut crate::fault::FaultState,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("registered", &self.registered).field("max_open", &self.max_open).finish()
    }
}

impl Uring {
    /// Sets up a ring over `pool` and registers as many of its buffers as RLIMIT_MEMLOCK allows (after raising the
    /// soft limit to the hard one); the rest are used unregistered. On failure the pool comes back with the error.
    pub(crate) fn new(pool: BufferPool) -> Result<Self, (BufferPool, std::io::Error)> {
        let ring = match IoUring::new(ring_entries(pool.count())) {
            Ok(ring) => ring,
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
            // SAFETY: the iovecs describe pool buffers, which stay mapped for as long as the pool lives. The pool
            // moves into the `Uring` built below (moving it does not move the mapping), whose `Drop` unregisters
            // the buffers before the pool is dropped and unmapped; buffers are only used by operations through
            // their unique tokens (`pool::Buf`).
            match unsafe { ring.submitter().register_buffers(&iovecs[..n]) } {
                Ok(()) => break n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) => n /= 2,
                Err(e) => return Err((pool, e)),
            }
        };
        Ok(Self {
            ring,
            pool,
            registered,
            max_open,
            #[cfg(feature = "fault-injection")]
            fault: Default::default(),
        })
    }

    /// Buffers registered with the ring.
    pub(crate) fn registered(&self) -> usize {
        self.registered
    }

    /// The buffer pool.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// The buffer pool, to reclaim it between jobs.
    pub(crate) fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    /// The test-only fault hook's state.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn fault(&mut self) -> &mut crate::fault::FaultState {
        &mut self.fault
    }

    /// Borrows the ring and the pool for one job.
    pub(super) fn parts(&mut self) -> Parts<'_> {
        Parts {
            ring: &mut self.ring,
            pool: &self.pool,
            registered: self.registered,
            max_open: self.max_open,
            #[cfg(feature = "fault-injection")]
            fault: &mut self.fault,
        }
    }
}

impl Drop for Uring {
    /// Unregisters the buffers; the fields (the ring, then the pool, whose `Drop` unmaps it) are dropped after this,
    /// in whatever order. Nothing is in flight: a job borrows the `Uring` and waits out its operations before it ends,
    /// on every path. Should unregistering fail, the kernel keeps the registered pages pinned until the ring's
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

/// Ring size for a pool of `buffers`: at most one read per buffer is in flight (a throttled chunk's pieces share
/// its buffer, and `submit_reads` keeps reads within the buffer count), every buffer can be in one write, and every
/// open file in at most two other operations (open, statx or close of source and target; fallocate; fsync; a
/// write-back flush, only while it is written, when it has no other), so
/// operations in flight never exceed the ring, whatever order completions come in.
fn ring_entries(buffers: usize) -> u32 {
    ((2 * buffers + 2 * MAX_OPEN_FILES).next_power_of_two() as u32).min(MAX_RING_ENTRIES)
}
