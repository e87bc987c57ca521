//! The io_uring backend: one thread per SM, one ring, the pool's buffers registered with it, shared by every job of
//! the SM that runs at the same time.
//!
//! Every step of a file goes through the ring, for up to `MAX_OPEN_FILES` files at once in all (fewer under a low
//! descriptor limit: `limits::open_files_allowed`): open the source and create the target, `statx` the source (and
//! the target when it is among the first of its directory: `Run::target_dirs`), allocate the target (`fallocate`), read, write, fsync, close both. Only flag changes
//! (`fcntl`), directory creation, the size a small direct target gets before its write (`file::presize`) and the
//! truncation after a padded direct write are plain system calls.
//!
//! For each file the loop keeps reads in flight into free buffers; a read that completes waits in its buffer until
//! the reads before it in the file have been handed on (BLAKE3 needs the bytes in order), then goes to the job's
//! hashing thread (`hash.rs`) and, at the same time, into a write from the same buffer: both only read it, and it
//! returns to the pool when both are done. When a file's last write completes it is truncated (after a padded direct
//! write) and, if larger than `BATCH_SYNC_MAX_BYTES`, fsynced through the ring in a batch with the job's other
//! written files (`sync_written`; smaller targets are made durable by the job's one `syncfs` at its end); it closes
//! once it is durable and its hashes are in. A streaming job (`stream.rs`) has no write: once hashed, each buffer is
//! lent to the job's consumer instead of going back to the pool (`flush.rs`, `hashed_buf`). Short reads and writes are resubmitted for their remainder; nothing
//! relies on linked operations.
//!
//! **Sharing.** The ring thread ([`serve`]) runs a [`Driver`]: a table of the jobs on the ring, each a [`Run`] with
//! its own files, operations, hashing thread, control, throttle and error. Each turn it steps every job in
//! round-robin order (the first one changes every turn), each within its share of the SM's resources (the pool's
//! buffers and the open files, divided by the jobs running: [`Share`]), then moves the jobs' queued SQEs into the
//! ring one job at a time, one SQE each in turn, while the kernel has room; every completion goes back to the job
//! its user data names. So a small job (a journal copy) beside a large one (the atoms) gets its share of buffers
//! and of the ring at once, and the SM's rate budget (`limit.rs`, FIFO turns) shares the bytes.
//!
//! One job's error, cancel or panic stops only that job: it queues nothing new, its operations already queued
//! complete (their results are dropped), its hashing thread answers for every buffer it holds, and only then is its
//! state dropped, its buffers back in the pool (`BufferPool::release_owner`) and its caller told; its caller removes
//! what it created. The other jobs run on.
//!
//! One module per seam: [`ring`] sets the ring up and holds it with the pool; [`ops`] is every operation the kernel
//! is given, its SQE, the job's queue that keeps it until its completion is reaped, and the shared [`ops::Ring`]
//! (the backend's `unsafe` is there and in `ring.rs`); [`files`] is the table of open files, each one's stage and
//! what it holds; [`file_state`] is what each completion does to a file; [`flush`] hands buffers to the hashing
//! thread and batches fsyncs and write-back flushes. Imports go one way: `files` <- `ops` <- `file_state`.
//!
//! Sound on every path: what an operation points into (a path, a `statx` buffer, a pool buffer, a descriptor) lives
//! until its completion is reaped. A job's [`Run`] owns all of it and is dropped only once none of its operations is
//! in flight; a job's panic is caught on the ring thread and ends that job the same way. The [`Driver`]'s `Drop` is
//! the guard for the rest (a panic of the driver itself): it waits out every operation of every job still in flight
//! before any job is dropped, and aborts the process if it cannot (the ring failing, or a panic while it waits).
//! Ring errors and broken invariants of the loop are returned as [`CopyError::Internal`], not panics.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

mod file_state;
mod files;
mod flush;
mod ops;
mod ring;

pub(crate) use ring::Uring;

use crate::error::CopyError;
use crate::file::Created;
use crate::hash::{self, Done, Msg};
use crate::job::{CopyRequest, FileReport, JobControl, Throttle};
use crate::limits::CANCEL_POLL_MS;
use crate::pool::{Buf, BufferPool};
use crate::stream::ChunkSink;
use crate::Options;
use file_state::created_path;
use files::Files;
use ops::{Completion, Op, Queue, Ring, Side};

/// Longest the ring thread waits before looking at its jobs again: cancellation, throttles and new jobs are
/// noticed within this.
const POLL: Duration = Duration::from_millis(CANCEL_POLL_MS);

/// Hash answers do not wake the ring: while a job waits for one, the ring thread looks again this soon.
const HASH_POLL: Duration = Duration::from_millis(1);

/// What a job lends the ring thread while it runs.
pub(crate) struct JobRefs<'j> {
    pub(crate) reqs: &'j [CopyRequest],
    pub(crate) ctl: &'j JobControl,
    pub(crate) throttle: Option<&'j dyn Throttle>,
    /// A streaming job's consumer: each buffer read and hashed is lent to it instead of going back to the pool.
    pub(crate) sink: Option<&'j dyn ChunkSink>,
    /// What the job created, for its caller to make durable or remove.
    pub(crate) created: &'j Mutex<Created>,
}

/// A job for the ring thread. Dropped unread (the ring thread is gone), it tells its caller through `end`.
pub(crate) struct JobMsg {
    pub(crate) refs: JobRefs<'static>,
    /// The job's owner key in the pool (unique among the SM's jobs).
    pub(crate) owner: u64,
    pub(crate) end: EndOnDrop,
    /// Test only: panic while handling this completion of the job (1 for the first).
    #[cfg(feature = "fault-injection")]
    pub(crate) panic_at: Option<u64>,
}

/// How a job on the ring ended.
pub(crate) struct Outcome {
    pub(crate) result: Result<Vec<FileReport>, CopyError>,
    /// Test only: what the job's end found when it panicked.
    #[cfg(feature = "fault-injection")]
    pub(crate) unwound: Option<crate::fault::Unwound>,
}

/// Where the ring thread puts a job's outcome, once nothing of the job is in use any more.
#[derive(Default)]
pub(crate) struct JobEnd {
    state: Mutex<(bool, Option<Outcome>)>,
    ended: Condvar,
}

impl JobEnd {
    fn lock(&self) -> MutexGuard<'_, (bool, Option<Outcome>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the outcome (the first one set wins) and wakes the caller.
    fn set(&self, outcome: Outcome) {
        let mut state = self.lock();
        if !state.0 {
            *state = (true, Some(outcome));
        }
        self.ended.notify_all();
    }

    /// Waits until the job ended.
    pub(crate) fn wait(&self) {
        let mut state = self.lock();
        while !state.0 {
            state = self.ended.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until the job ended and takes its outcome.
    pub(crate) fn take(&self) -> Outcome {
        self.wait();
        self.lock().1.take().unwrap_or_else(stopped)
    }
}

/// Sets its job's end when dropped, if nothing did before: a job dropped unread by a ring thread that stopped.
pub(crate) struct EndOnDrop(pub(crate) Arc<JobEnd>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.set(stopped());
    }
}

fn stopped() -> Outcome {
    Outcome {
        result: Err(bug("the SM's io_uring thread stopped before the job ended")),
        #[cfg(feature = "fault-injection")]
        unwound: None,
    }
}

/// What the ring thread shows its handle: how many jobs are on the ring, and the most there were at once.
#[derive(Debug, Default)]
pub(crate) struct RingCounters {
    pub(crate) on_ring: AtomicU64,
    pub(crate) on_ring_max: AtomicU64,
    /// `statx` operations the jobs that ended gave the ring.
    pub(crate) statx: AtomicU64,
}

/// What a running job may hold at once: the pool's buffers and the open files of the SM, divided by the jobs
/// running (at least one each).
#[derive(Debug, Clone, Copy)]
struct Share {
    buffers: usize,
    files: usize,
}

/// What a job's step asks of the ring thread.
enum Next {
    /// Every request is done.
    Finished,
    /// Look at the job again within this.
    Wait(Duration),
}

/// Why `submit_reads` queued no more reads.
#[derive(Debug, Clone, Copy)]
enum Blocked {
    /// The throttle refused: ask again after this.
    Throttle(Duration),
    /// The pool has no free buffer (other jobs hold them).
    NoBuffer,
}

/// The ring thread: runs the jobs sent through `jobs` on the ring until every handle is gone and no job is left.
pub(crate) fn serve(mut uring: Uring, opts: &Options, jobs: mpsc::Receiver<JobMsg>, counters: &RingCounters) {
    let (ring, pool, registered, max_open) = uring.parts();
    let mut d = Driver {
        ring: Ring::new(ring),
        pool,
        registered,
        max_open,
        opts,
        counters,
        jobs: Vec::new(),
        next_key: 0,
        turn: 0,
    };
    let mut incoming = None;
    let mut connected = true;
    loop {
        if d.jobs.is_empty() && incoming.is_none() {
            match jobs.recv() {
                Ok(msg) => incoming = Some(msg),
                Err(_) => break,
            }
        }
        if let Some(msg) = incoming.take() {
            d.admit(msg);
        }
        while let Ok(msg) = jobs.try_recv() {
            d.admit(msg);
        }
        let timeout = d.step();
        d.end_drained();
        if d.jobs.is_empty() {
            continue;
        }
        d.submit();
        if d.ring.in_kernel() > 0 {
            if let Err(e) = d.ring.submit_and_wait(timeout) {
                // The ring failed: every job stops; what the kernel has must still complete (or the process aborts).
                d.stop_all(&e);
                d.ring.wait_or_abort();
            }
            d.dispatch();
        } else if connected {
            match jobs.recv_timeout(timeout) {
                Ok(msg) => incoming = Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => connected = false,
            }
        } else {
            std::thread::sleep(timeout);
        }
    }
}

/// One job on the ring.
struct Job<'a> {
    key: u32,
    owner: u64,
    /// Declared before `end`: dropped first, so the job's borrowed references are gone before its caller is told.
    run: Run<'a>,
    /// Set once the job stopped: what it returns once nothing of it is in flight.
    ended: Option<Result<(), CopyError>>,
    /// Test only: operations in flight when the job panicked.
    #[cfg(feature = "fault-injection")]
    panicked_in_flight: Option<usize>,
    end: EndOnDrop,
}

impl Job<'_> {
    /// Stops the job (the first stop wins): it queues nothing new, and ends once what it queued completed.
    fn stop(&mut self, result: Result<(), CopyError>) {
        if self.ended.is_some() {
            return;
        }
        if result.is_err() && self.run.reports.iter().any(Option::is_none) {
            // A job that stops early needs no more hashes.
            self.run.abandon.store(true, Relaxed);
        }
        self.ended = Some(result);
    }

    /// Stops the job on a panic of its own code.
    fn panicked(&mut self, panic: Box<dyn std::any::Any + Send>) {
        #[cfg(feature = "fault-injection")]
        if self.ended.is_none() {
            self.panicked_in_flight = Some(self.run.queue.in_flight());
        }
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        self.stop(Err(bug(format!("the job panicked: {what}"))));
    }

    /// One turn of a running job within `share`, or of a stopped one's drain; returns how soon to look again.
    fn step(&mut self, share: Share) -> Duration {
        if self.ended.is_some() {
            self.run.drain_hashes(false);
            return if self.run.hash_outstanding > 0 { HASH_POLL } else { POLL };
        }
        self.run.share = share;
        match catch_unwind(AssertUnwindSafe(|| self.run.step())) {
            Ok(Ok(Next::Wait(wait))) => wait,
            Ok(Ok(Next::Finished)) => {
                self.stop(Ok(()));
                POLL
            }
            Ok(Err(e)) => {
                self.stop(Err(e));
                POLL
            }
            Err(panic) => {
                self.panicked(panic);
                POLL
            }
        }
    }

    /// The completion of the job's operation in slot `slot`.
    fn complete(&mut self, slot: u32, res: i32) {
        let completion = match self.run.queue.complete(slot, res) {
            Ok(c) => c,
            Err(e) => return self.stop(Err(e)),
        };
        // Record a created target first, so that it is removed if the job fails, even by a panic before its
        // completion is handled.
        if let Completion::Opened { side: Side::Target, path, result: Ok(_), .. } = &completion {
            self.run.created().record_file(created_path(path));
        }
        if self.ended.is_some() {
            // A descriptor opened after the job stopped closes as its `File` drops here.
            if let Completion::Done(Op::Write { buf, .. }, _) = completion {
                self.run.release(buf);
            }
            return;
        }
        let run = &mut self.run;
        let handled = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            run.fault.completion();
            run.handle(completion)
        }));
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.stop(Err(e)),
            Err(panic) => self.panicked(panic),
        }
    }

    /// Whether a stopped job has nothing in flight and nothing with its hashing thread: it can end.
    fn drained(&self) -> bool {
        self.ended.is_some() && self.run.queue.in_flight() == 0 && self.run.hash_outstanding == 0
    }
}

/// The jobs on the ring and the ring they share. Its `Drop` is the guard (see the module's docs).
struct Driver<'a> {
    ring: Ring<'a>,
    pool: &'a Arc<BufferPool>,
    registered: usize,
    /// Files open at once, in all.
    max_open: usize,
    opts: &'a Options,
    counters: &'a RingCounters,
    jobs: Vec<Job<'a>>,
    next_key: u32,
    /// Which job goes first this turn.
    turn: usize,
}

impl<'a> Driver<'a> {
    /// Puts a job on the ring.
    fn admit(&mut self, msg: JobMsg) {
        #[cfg(feature = "fault-injection")]
        let panic_at = msg.panic_at;
        let JobMsg { refs, owner, end, .. } = msg;
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        let run = match Run::new(key, owner, refs, self.pool, self.registered, self.opts) {
            Ok(run) => run,
            Err(e) => {
                end.0.set(Outcome {
                    result: Err(e),
                    #[cfg(feature = "fault-injection")]
                    unwound: None,
                });
                return;
            }
        };
        #[cfg(feature = "fault-injection")]
        let mut run = run;
        #[cfg(feature = "fault-injection")]
        {
            run.fault.panic_at = panic_at;
        }
        self.jobs.push(Job {
            key,
            owner,
            run,
            ended: None,
            #[cfg(feature = "fault-injection")]
            panicked_in_flight: None,
            end,
        });
        let on_ring = self.jobs.len() as u64;
        self.counters.on_ring.store(on_ring, Relaxed);
        self.counters.on_ring_max.fetch_max(on_ring, Relaxed);
    }

    /// Steps every job, in turn from this turn's first, and returns how soon to look at them again.
    fn step(&mut self) -> Duration {
        let n = self.jobs.len();
        if n == 0 {
            return POLL;
        }
        let running = self.jobs.iter().filter(|j| j.ended.is_none()).count().max(1);
        let share = Share { buffers: (self.pool.count() / running).max(1), files: (self.max_open / running).max(1) };
        self.turn = (self.turn + 1) % n;
        let mut timeout = POLL;
        for i in 0..n {
            let job = &mut self.jobs[(self.turn + i) % n];
            timeout = timeout.min(job.step(share));
        }
        timeout
    }

    /// Moves the jobs' queued SQEs into the ring, one per job in turn, while it has room.
    fn submit(&mut self) {
        let n = self.jobs.len();
        loop {
            let mut moved = false;
            for i in 0..n {
                if self.ring.room() == 0 {
                    return;
                }
                let job = &mut self.jobs[(self.turn + i) % n];
                moved |= self.ring.submit_one(&mut job.run.queue);
            }
            if !moved {
                return;
            }
        }
    }

    /// Hands every completion there to its job.
    fn dispatch(&mut self) {
        for (key, slot, res) in self.ring.reap() {
            match self.jobs.iter_mut().find(|j| j.key == key) {
                Some(job) => job.complete(slot, res),
                None => {
                    // A completion of no job on the ring: a bug of the driver, which no job can be trusted past.
                    let e = bug(format!("a completion for job {key}, which is not on the ring"));
                    self.stop_all(&e);
                }
            }
        }
    }

    /// Stops every job with (a copy of) `e`.
    fn stop_all(&mut self, e: &CopyError) {
        for job in &mut self.jobs {
            job.stop(Err(bug(e.to_string())));
        }
    }

    /// Ends the jobs that stopped and have nothing in flight.
    fn end_drained(&mut self) {
        let mut i = 0;
        while i < self.jobs.len() {
            if self.jobs[i].drained() {
                let job = self.jobs.swap_remove(i);
                self.end(job);
            } else {
                i += 1;
            }
        }
        self.counters.on_ring.store(self.jobs.len() as u64, Relaxed);
    }

    /// Ends a stopped job with nothing in flight: gives back its buffers, drops its state (and with it every
    /// reference it borrowed from its caller), returns the buffers whose tokens it dropped, and tells its caller.
    fn end(&mut self, job: Job<'a>) {
        #[cfg(feature = "fault-injection")]
        let unwound = job.panicked_in_flight.map(|in_flight| crate::fault::Unwound {
            in_flight,
            in_flight_after: job.run.queue.in_flight(),
            hashes_outstanding_after: job.run.hash_outstanding,
        });
        let Job { owner, mut run, ended, end, .. } = job;
        run.give_back_all();
        self.counters.statx.fetch_add(run.statx, Relaxed);
        let result = match ended {
            Some(Ok(())) => run.take_reports(),
            Some(Err(e)) => Err(e),
            None => Err(bug("a job ended without stopping")),
        };
        drop(run);
        let lost = self.pool.release_owner(owner);
        debug_assert!(result.is_err() || lost == 0, "a successful job lost {lost} buffers");
        end.0.set(Outcome {
            result,
            #[cfg(feature = "fault-injection")]
            unwound,
        });
    }
}

impl Drop for Driver<'_> {
    /// The guard: when the driver unwinds (a panic outside any job's code), every job still on the ring stops, and
    /// every operation still in flight completes before anything of any job is dropped. After a normal end there is
    /// no job left and this does nothing.
    fn drop(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let abort = AbortOnUnwind;
        self.stop_all(&bug("the SM's io_uring thread stopped"));
        loop {
            // What the jobs queued goes in too (it may point into their state as much as what is in the kernel), so
            // that every job's `in_flight` reaches 0.
            self.submit();
            if self.ring.in_kernel() == 0 {
                break;
            }
            self.ring.wait_or_abort();
            self.dispatch();
        }
        for job in &mut self.jobs {
            job.run.drain_hashes(true);
        }
        while let Some(job) = self.jobs.pop() {
            self.end(job);
        }
        std::mem::forget(abort);
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

/// One job on the ring: its files, its operations, its hashing thread's channels. It is dropped only once none of
/// its operations is in flight and its hashing thread holds none of its buffers (see the module's docs).
struct Run<'a> {
    queue: Queue<'a>,
    /// What the job may hold now (set by the driver before each step).
    share: Share,
    pool: &'a Arc<BufferPool>,
    /// The job's owner key in the pool.
    owner: u64,
    /// Buffers the job holds (taken and not given back).
    held: usize,
    /// Pool buffers below this index are registered with the ring.
    registered: usize,
    reqs: &'a [CopyRequest],
    ctl: &'a JobControl,
    opts: &'a Options,
    created: &'a Mutex<Created>,
    throttle: Option<&'a dyn Throttle>,
    /// A streaming job's consumer (see `stream.rs`).
    sink: Option<&'a dyn ChunkSink>,
    /// Buffers of a streaming job with the hashing thread, to be lent once hashed: (request, offset, bytes, the
    /// file's length).
    to_lend: HashMap<u16, (usize, u64, usize, u64)>,
    /// Since when the throttle refused the job, if it did at its last step.
    throttled_since: Option<Instant>,
    /// A write-back flush is in flight (a job has at most one).
    flushing: bool,
    files: Files<'a>,
    /// Whether the targets created in each directory are written with direct I/O, from the first target stated
    /// there (direct I/O wanted): later targets in the directory are created with O_DIRECT, or without, and not
    /// stated. A new file gets its direct-I/O support from its directory (the file system, and on ext4 the flags a
    /// new inode inherits: data journalling, encryption), so every new file of a directory gets the same verdict.
    target_dirs: HashMap<std::path::PathBuf, bool>,
    /// `statx` operations queued.
    statx: u64,
    /// Reads in flight (kept within the job's share of buffers).
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
    abandon: Arc<AtomicBool>,
    #[cfg(feature = "fault-injection")]
    fault: crate::fault::FaultState,
}

impl<'a> Run<'a> {
    /// A job on the ring, with its hashing thread started.
    fn new(
        key: u32,
        owner: u64,
        refs: JobRefs<'a>,
        pool: &'a Arc<BufferPool>,
        registered: usize,
        opts: &'a Options,
    ) -> Result<Self, CopyError> {
        let (msg_tx, msg_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let abandon = Arc::new(AtomicBool::new(false));
        let (hash, flag) = (opts.hash, Arc::clone(&abandon));
        std::thread::Builder::new()
            .name("backset-hash".into())
            .spawn(move || hash::worker(msg_rx, done_tx, hash, flag))
            .map_err(|e| bug(format!("cannot start the job's hashing thread: {e}")))?;
        Ok(Self {
            queue: Queue::new(key),
            share: Share { buffers: 1, files: 1 },
            pool,
            owner,
            held: 0,
            registered,
            reqs: refs.reqs,
            ctl: refs.ctl,
            opts,
            created: refs.created,
            throttle: refs.throttle,
            sink: refs.sink,
            to_lend: HashMap::new(),
            throttled_since: None,
            flushing: false,
            files: Files::default(),
            target_dirs: HashMap::new(),
            statx: 0,
            reads: 0,
            next_request: 0,
            open: 0,
            reports: vec![None; refs.reqs.len()],
            hash_tx: Some(msg_tx),
            hash_rx: done_rx,
            hash_outstanding: 0,
            parked: HashMap::new(),
            hashed_bufs: HashSet::new(),
            abandon,
            #[cfg(feature = "fault-injection")]
            fault: Default::default(),
        })
    }

    /// One turn of the job: take in the hashing thread's answers, start files, batch fsyncs, queue reads.
    fn step(&mut self) -> Result<Next, CopyError> {
        if self.ctl.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        self.poll_hashes()?;
        self.open_files()?;
        self.sync_written()?;
        let blocked = self.submit_reads()?;
        self.count_waited(matches!(blocked, Some(Blocked::Throttle(_))));
        if self.queue.in_flight() == 0 {
            if self.next_request == self.reqs.len() && self.open == 0 {
                return Ok(Next::Finished);
            }
            // With nothing in flight and nothing hashing, only a throttle or another job's buffers may hold the job
            // up: its own buffers would all be in operations. Anything else is a bug in this loop: fail, not spin.
            let waits = match blocked {
                Some(Blocked::Throttle(_)) => true,
                Some(Blocked::NoBuffer) => self.held == 0,
                None => false,
            };
            if self.hash_outstanding == 0 && !waits {
                return Err(bug("the copy loop stalled with files open and nothing in flight"));
            }
        }
        let mut wait = match blocked {
            Some(Blocked::Throttle(wait)) => wait.min(POLL),
            _ => POLL,
        };
        if self.hash_outstanding > 0 {
            wait = wait.min(HASH_POLL);
        }
        Ok(Next::Wait(wait))
    }

    /// Counts the time the throttle held the job up: from a step it refused to the next step.
    fn count_waited(&mut self, throttled: bool) {
        let now = Instant::now();
        if let Some(since) = self.throttled_since.take() {
            self.ctl.add_waited(now - since);
        }
        if throttled {
            self.throttled_since = Some(now);
        }
    }

    /// What the job created (a poisoned lock holds a consistent list: nothing panics while holding it).
    fn created(&self) -> MutexGuard<'a, Created> {
        self.created.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free buffer of the pool for this job (`None`: the pool has none free).
    fn take_buf(&mut self) -> Option<Buf<'a>> {
        let buf = self.pool.take(self.owner)?;
        self.held += 1;
        Some(buf)
    }

    /// Gives a buffer back to the pool.
    fn give_buf(&mut self, buf: Buf<'a>) {
        self.pool.give_back(buf);
        self.held -= 1;
    }

    /// Takes the hashing thread's answers for a stopped job: all there are (`block`: until every buffer it was
    /// given is answered for, or the thread is gone). Finished files are not closed any more: their descriptors
    /// close as the job's state drops.
    fn drain_hashes(&mut self, block: bool) {
        while self.hash_outstanding > 0 {
            let answer = if block {
                self.hash_rx.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
            } else {
                self.hash_rx.try_recv()
            };
            match answer {
                Ok(Done::Chunk { buf }) => self.hashed_buf(buf),
                Ok(Done::Finished { .. }) => {}
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The thread is gone: it reads no buffer any more.
                    self.hash_outstanding = 0;
                    return;
                }
            }
            self.hash_outstanding -= 1;
        }
    }

    /// Ends the hashing thread and gives back every buffer the job still holds. Only once nothing is in flight and
    /// the hashing thread answered for everything (the job `drained`).
    fn give_back_all(&mut self) {
        self.hash_tx = None;
        self.reads = 0;
        for (_, buf) in std::mem::take(&mut self.parked) {
            self.give_buf(buf);
        }
        let files: Vec<_> = self.files.take_all().collect();
        for f in files {
            for (_, (buf, _)) in f.ready {
                self.give_buf(buf);
            }
            for (_, chunk) in f.reading {
                self.give_buf(chunk.buf);
            }
        }
    }

    /// The reports of a job that finished, in request order.
    fn take_reports(&mut self) -> Result<Vec<FileReport>, CopyError> {
        std::mem::take(&mut self.reports)
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.ok_or_else(|| bug(format!("request {i} ended without a report"))))
            .collect()
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
