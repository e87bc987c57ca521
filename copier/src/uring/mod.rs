//! The io_uring backend: one thread, one ring, the pool's buffers registered with it.
//!
//! Every step of a file goes through the ring, for up to `MAX_OPEN_FILES` files at once (fewer under a low descriptor
//! limit: `limits::open_files_allowed`): open the source and create
//! the target, `statx` both, allocate the target (`fallocate`), read, write, fsync, close both. Only flag changes
//! (`fcntl`), directory creation, the size a small direct target gets before its write (`file::presize`) and the
//! truncation after a padded direct write are plain system calls.
//!
//! For each file the loop keeps reads in flight into free buffers; a read that completes waits in its buffer until
//! the reads before it in the file have been handed on (BLAKE3 needs the bytes in order), then goes to the hashing
//! thread (`hash.rs`) and, at the same time, into a write from the same buffer: both only read it, and it returns
//! to the pool when both are done. When a file's last write completes it is truncated (after a padded direct write)
//! and, if larger than `BATCH_SYNC_MAX_BYTES`, fsynced through the ring in a batch with the other written files
//! (`sync_written`; smaller targets are made durable by the job's one `syncfs` at its end); it closes once it is
//! durable and its hashes are in. Short reads and writes are resubmitted for their remainder; nothing relies on
//! linked operations.
//!
//! One module per seam: [`ring`] sets the ring up and owns it with the pool; [`ops`] is every operation the kernel
//! is given, its SQE, and the queue that keeps it until its completion is reaped (the backend's `unsafe` is there
//! and in `ring.rs`); [`files`] is the table of open files, each one's stage and what it holds; [`file_state`] is
//! what each completion does to a file; [`flush`] hands buffers to the hashing thread and batches fsyncs and
//! write-back flushes. Imports go one way: `files` <- `ops` <- `file_state`.
//!
//! Sound on every path: what an operation points into (a path, a `statx` buffer, a pool buffer, a descriptor) lives
//! until its completion is reaped. A job's [`Run`] owns all of it, and its `Drop` is the guard: it waits out every
//! operation still in flight before anything of the run is dropped, whether the job returns or unwinds from a panic,
//! and aborts the process if it cannot (the ring failing, or a panic while it waits). Ring errors and broken
//! invariants of the loop are returned as [`CopyError::Internal`], not panics; `Copier::copy` turns a panic that
//! unwinds out of a job into the same error, after the guard ran.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod file_state;
mod files;
mod flush;
mod ops;
mod ring;

pub(crate) use ring::Uring;

use crate::error::CopyError;
use crate::hash::{self, Done, Msg};
use crate::job::{CopyRequest, FileReport, JobControl, Throttle};
use crate::limits::CANCEL_POLL_MS;
use crate::pool::{Buf, BufferPool};
use crate::Options;
use file_state::created_path;
use files::Files;
use ops::{Completion, Op, Queue, Side};

/// One job on the ring: its files, the operations in flight, the hashing thread's channels. Its `Drop` is the guard
/// that waits out whatever is still in flight (see the module's docs).
struct Run<'a> {
    queue: Queue<'a>,
    max_open: usize,
    pool: &'a BufferPool,
    reqs: &'a [CopyRequest],
    ctl: &'a JobControl,
    opts: &'a Options,
    created: &'a mut crate::file::Created,
    throttle: Option<&'a dyn Throttle>,
    /// A write-back flush is in flight (a job has at most one).
    flushing: bool,
    files: Files<'a>,
    /// Reads in flight (kept within the pool's buffer count: see `ring::ring_entries`).
    reads: usize,
    next_request: usize,
    open: usize,
    reports: Vec<Option<FileReport>>,
    /// To the hashing thread (`None` once the job is over, which ends the thread).
    hash_tx: Option<mpsc::Sender<Msg>>,
    hash_rx: mpsc::Receiver<Done>,
    /// Messages to the hashing thread not answered yet.
    hash_outstanding: usize,
    /// Buffers whose write completed (or that are read only) while the hashing thread still reads them.
    parked: HashMap<u16, Buf<'a>>,
    /// Buffers the hashing thread is done with while their write is still in flight.
    hashed_bufs: HashSet<u16>,
    /// Set when the job stops early: the hashing thread then answers without hashing.
    abandon: &'a AtomicBool,
    #[cfg(feature = "fault-injection")]
    fault: &'a mut crate::fault::FaultState,
}

pub(crate) fn run(
    uring: &mut Uring,
    reqs: &[CopyRequest],
    ctl: &JobControl,
    throttle: Option<&dyn Throttle>,
    opts: &Options,
    created: &mut crate::file::Created,
) -> Result<Vec<FileReport>, CopyError> {
    let (msg_tx, msg_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let hash = opts.hash;
    let abandon = AtomicBool::new(false);
    let parts = uring.parts();
    std::thread::scope(|s| {
        let abandon = &abandon;
        s.spawn(move || hash::worker(msg_rx, done_tx, hash, abandon));
        #[cfg(feature = "fault-injection")]
        {
            parts.fault.handled = 0;
        }
        let mut run = Run {
            queue: Queue::new(parts.ring, parts.registered),
            max_open: parts.max_open,
            pool: parts.pool,
            reqs,
            ctl,
            opts,
            created,
            throttle,
            flushing: false,
            files: Files::default(),
            reads: 0,
            next_request: 0,
            open: 0,
            reports: vec![None; reqs.len()],
            hash_tx: Some(msg_tx),
            hash_rx: done_rx,
            hash_outstanding: 0,
            parked: HashMap::new(),
            hashed_bufs: HashSet::new(),
            abandon,
            #[cfg(feature = "fault-injection")]
            fault: parts.fault,
        };
        let result = run.main_loop();
        // Whatever happened, no operation and no hash may still use a buffer or a descriptor when we return (on a
        // panic, `Run`'s `Drop` does this).
        run.drain();
        result?;
        std::mem::take(&mut run.reports)
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.ok_or_else(|| bug(format!("request {i} ended without a report"))))
            .collect()
    })
}

impl<'a> Run<'a> {
    fn main_loop(&mut self) -> Result<(), CopyError> {
        loop {
            if self.ctl.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            self.open_files()?;
            self.sync_written()?;
            let throttle_wait = self.submit_reads()?;
            if self.queue.in_flight() == 0 {
                if self.next_request == self.reqs.len() && self.open == 0 {
                    return Ok(());
                }
                if self.hash_outstanding > 0 {
                    self.poll_hashes(Some(Duration::from_millis(CANCEL_POLL_MS)))?;
                    continue;
                }
                if let Some(wait) = throttle_wait {
                    let wait = wait.min(Duration::from_millis(CANCEL_POLL_MS));
                    std::thread::sleep(wait);
                    self.ctl.add_waited(wait);
                    continue;
                }
                // Every buffer is in an operation and every open file has one queued, so nothing in flight with work
                // left means a bug in this loop: fail rather than spin.
                return Err(bug("the copy loop stalled with files open and nothing in flight"));
            }
            let mut timeout = throttle_wait.unwrap_or(Duration::from_millis(CANCEL_POLL_MS));
            if self.hash_outstanding > 0 {
                // Hash answers do not wake the ring: look again soon.
                timeout = timeout.min(Duration::from_millis(1));
            }
            let started = Instant::now();
            self.queue.submit_and_wait(timeout.min(Duration::from_millis(CANCEL_POLL_MS)))?;
            if throttle_wait.is_some() {
                self.ctl.add_waited(started.elapsed());
            }
            self.complete()?;
            self.poll_hashes(None)?;
        }
    }

    /// Takes every completion there out of the queue, and first records each target it created (so that the target
    /// is removed if the job fails, even by a panic before its completion is handled).
    fn reap(&mut self) -> (Vec<Completion<'a>>, Option<CopyError>) {
        let (done, unexpected) = self.queue.reap();
        for completion in &done {
            if let Completion::Opened { side: Side::Target, path, result: Ok(_), .. } = completion {
                self.created.record_file(created_path(path));
            }
        }
        (done, unexpected)
    }

    /// Handles every completion there.
    fn complete(&mut self) -> Result<(), CopyError> {
        let (done, mut first_err) = self.reap();
        for completion in done {
            #[cfg(feature = "fault-injection")]
            self.fault.completion();
            if let Err(e) = self.handle(completion) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Waits for every operation in flight, discarding results and returning their buffers; then ends the hashing
    /// thread and gives back every buffer. Runs at the end of every job, also from the guard while unwinding, so it
    /// looks nothing up that a panic may have left missing and does not panic (the guard aborts if it does).
    fn drain(&mut self) {
        while self.queue.in_flight() > 0 {
            self.queue.wait_or_abort();
            // A descriptor opened after the job stopped closes as its `File` drops here (a created target is
            // recorded by `reap`, so it is removed).
            for completion in self.reap().0 {
                if let Completion::Done(Op::Write { buf, .. }, _) = completion {
                    self.release(buf);
                }
            }
        }
        self.reads = 0;
        // Then the hashing thread: every buffer it was given comes back once it answers; dropping the sender ends it.
        // A job that stops early needs no more hashes.
        if self.reports.iter().any(Option::is_none) {
            self.abandon.store(true, Relaxed);
        }
        while self.hash_outstanding > 0 {
            match self.hash_rx.recv() {
                Ok(Done::Chunk { buf }) => self.hashed_buf(buf),
                Ok(Done::Finished { .. }) => {}
                Err(_) => break,
            }
            self.hash_outstanding -= 1;
        }
        self.hash_tx = None;
        for (_, buf) in self.parked.drain() {
            self.pool.give_back(buf);
        }
        for f in self.files.take_all() {
            for (_, (buf, _)) in f.ready {
                self.pool.give_back(buf);
            }
            for (_, chunk) in f.reading {
                self.pool.give_back(chunk.buf);
            }
        }
    }
}

impl Drop for Run<'_> {
    /// The guard: a job that unwinds (a panic in its loop) still waits out every operation in flight before its
    /// paths, `statx` buffers, descriptors and buffer tokens are dropped. After a normal end `run` drained already
    /// and this finds nothing to do.
    fn drop(&mut self) {
        #[cfg(feature = "fault-injection")]
        let in_flight = self.queue.in_flight();
        let abort = AbortOnUnwind;
        self.drain();
        std::mem::forget(abort);
        #[cfg(feature = "fault-injection")]
        if std::thread::panicking() {
            self.fault.unwound = Some(crate::fault::Unwound {
                in_flight,
                in_flight_after: self.queue.in_flight(),
                hashes_outstanding_after: self.hash_outstanding,
            });
        }
    }
}

/// Aborts the process when dropped: held across the guard's drain, which a panic must not leave half done (unwinding
/// from there would free memory the kernel may still write to).
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("backset-copier: a panic while waiting out the io_uring operations in flight; aborting the process");
        std::process::abort();
    }
}

/// A broken invariant of the loop (a Backset bug), as an error.
fn bug(reason: impl Into<String>) -> CopyError {
    CopyError::Internal { backend: "uring", reason: reason.into() }
}

/// The target of a request that writes.
fn target_path(req: &CopyRequest) -> Result<&std::path::Path, CopyError> {
    req.target.as_deref().ok_or_else(|| bug(format!("{}: a read-only request used a target", req.source.display())))
}

fn errno(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}
