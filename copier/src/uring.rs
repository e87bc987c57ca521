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

use std::cell::UnsafeCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use crate::error::CopyError;
use crate::file::{
    allocation_len, allocation_unsupported, create_error, fsynced_alone, io_len, presize, source_from_stat,
    target_from_stat, truncate_target, Created, Source, Target, SOURCE_OPEN_FLAGS, STATX_MASK, TARGET_MODE,
    TARGET_OPEN_FLAGS,
};
use crate::hash::{self, BufPtr, Done, Msg};
use crate::job::{CopyRequest, FileReport, JobControl, Throttle};
use crate::limits::{open_files_allowed, BUFFER_BYTES, CANCEL_POLL_MS, IO_WORKERS, MAX_OPEN_FILES, MAX_RING_ENTRIES};
use crate::pool::{Buf, BufferPool};
use crate::Options;

/// A ring with (some of) the pool's buffers registered.
pub(crate) struct Uring {
    ring: IoUring,
    registered: usize,
    /// Files a job keeps open at once (`limits::open_files_allowed` of the descriptor limit).
    max_open: usize,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("registered", &self.registered).field("max_open", &self.max_open).finish()
    }
}

impl Uring {
    /// Sets up a ring and registers as many pool buffers as RLIMIT_MEMLOCK allows (after raising the soft limit to
    /// the hard one); the rest are used unregistered.
    pub(crate) fn new(pool: &BufferPool) -> std::io::Result<Self> {
        let ring = IoUring::new(ring_entries(pool.count()))?;
        // Best effort: kernels before 5.15 refuse it and keep their default (four workers per CPU).
        let _ = ring.submitter().register_iowq_max_workers(&mut [IO_WORKERS, 0]);
        let max_open = open_files_allowed(raise_soft_limit(libc::RLIMIT_NOFILE));
        raise_soft_limit(libc::RLIMIT_MEMLOCK);
        let iovecs = pool.iovecs(pool.count());
        let mut n = iovecs.len();
        let registered = loop {
            if n == 0 {
                break 0;
            }
            // SAFETY: the iovecs describe pool buffers, which stay mapped for as long as the pool lives; the pool
            // outlives this ring (the `Copier` drops the ring first, and unregistering happens when the ring's fd
            // closes), and buffers are only used by operations through their unique tokens.
            match unsafe { ring.submitter().register_buffers(&iovecs[..n]) } {
                Ok(()) => break n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) => n /= 2,
                Err(e) => return Err(e),
            }
        };
        Ok(Self { ring, registered, max_open })
    }

    /// Buffers registered with the ring.
    pub(crate) fn registered(&self) -> usize {
        self.registered
    }
}

/// Ring size for a pool of `buffers`: at most one read per buffer is in flight (a throttled chunk's pieces share
/// its buffer, and `submit_reads` keeps reads within the buffer count), every buffer can be in one write, and every
/// open file in at most two other operations (open, statx or close of source and target; fallocate; fsync; a
/// write-back flush, only while it is written, when it has no other), so
/// operations in flight never exceed the ring, whatever order completions come in.
pub(crate) fn ring_entries(buffers: usize) -> u32 {
    ((2 * buffers + 2 * MAX_OPEN_FILES).next_power_of_two() as u32).min(MAX_RING_ENTRIES)
}

/// Raises the soft limit of `resource` to its hard limit and returns the soft limit then in force (failures leave it
/// as it was).
fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct that we own; a failure leaves the limit as it was.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(resource, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Where a file is in its life; `setup` counts the operations of the stage still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Source being opened, target being created.
    Opening,
    /// `statx` of both.
    Stating,
    /// `fallocate` of the target.
    Allocating,
    /// Reads and writes.
    Copying,
    /// Every byte written; the fsync waits to be batched with other files' (see `sync_written`).
    Written,
    /// Fsync of the target.
    Syncing,
    /// Closing both; the report is ready.
    Closing,
}

/// Which side of a file an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

struct OpenFile {
    request: usize,
    stage: Stage,
    /// Operations of the current setup or closing stage in flight.
    setup: usize,
    /// Opened descriptors, until `statx` made them a `Source` / `Target`.
    src_file: Option<File>,
    dst_file: Option<File>,
    src_stat: Option<libc::statx>,
    dst_stat: Option<libc::statx>,
    src: Option<Source>,
    /// `None` when the request only reads and hashes.
    dst: Option<Target>,
    /// Whether the hashing thread was asked for the file's hashes.
    finish_sent: bool,
    /// The file's BLAKE3 and chunk hashes, once the hashing thread answered.
    hashes: Option<([u8; 32], Vec<[u8; 32]>)>,
    /// The target is durable (or there is none): the file closes as soon as its hashes are in.
    synced: bool,
    /// Next byte (relative to the copy's start) to read.
    next_read: u64,
    /// Bytes hashed and handed to writes, in order.
    hashed: u64,
    /// Reads complete but not yet hashed, by relative offset: (buffer, data length).
    ready: BTreeMap<u64, (Buf, usize)>,
    /// Chunks being read, by relative offset: their buffer and how far their pieces got.
    reading: BTreeMap<u64, Reading>,
    /// The chunk whose pieces the throttle is still admitting (at most one per file, the last in `reading`).
    admitting: Option<u64>,
    /// Writes of the target in flight, and its write-back flush (which must complete before the target is closed).
    writes_in_flight: usize,
    /// Set once the target is durable (or, reading only, the last byte hashed), while the descriptors close.
    report: Option<FileReport>,
}

/// A chunk being read. Unthrottled, one read fills it; a throttled job reads it in pieces of at most
/// `Throttle::grain` bytes, each issued as soon as the throttle admits it, so a piece stalled in the device does not
/// hold up the next ones (the job keeps to its rate through a flush).
struct Reading {
    buf: Buf,
    /// Bytes of the chunk (the last one of a file may be shorter than a buffer).
    want: usize,
    /// Bytes admitted by the throttle and queued as pieces.
    admitted: usize,
    /// Bytes of pieces that completed.
    done: usize,
}

impl OpenFile {
    fn src(&self) -> &Source {
        self.src.as_ref().expect("source set up before copying")
    }
}

enum Op {
    /// Open the source or create the target; the path must live until the operation completes.
    Open {
        file: usize,
        side: Side,
        path: CString,
    },
    /// `statx` into a buffer that lives until the operation completes.
    Statx {
        file: usize,
        side: Side,
        buf: Box<UnsafeCell<libc::statx>>,
    },
    Fallocate {
        file: usize,
    },
    /// Read the piece `start..end` of the chunk at `rel` into the chunk's buffer (`file.reading[rel]`), of which
    /// `start..filled` is in; a piece is the whole chunk unless a throttled job reads it in pieces.
    Read {
        file: usize,
        rel: u64,
        start: usize,
        filled: usize,
        end: usize,
    },
    Write {
        file: usize,
        buf: Buf,
        rel: u64,
        len: usize,
        data: usize,
        filled: usize,
    },
    Fsync {
        file: usize,
    },
    /// `fdatasync` of a target still being written: a throttled job's write-back (`limits::FLUSH_AFTER_BYTES`).
    Flush {
        file: usize,
    },
    /// Close a descriptor taken out of its `File`.
    Close {
        file: usize,
        side: Side,
        fd: i32,
    },
}

struct Run<'a> {
    ring: &'a mut IoUring,
    registered: usize,
    max_open: usize,
    pool: &'a BufferPool,
    reqs: &'a [CopyRequest],
    ctl: &'a JobControl,
    opts: &'a Options,
    created: &'a mut Created,
    throttle: Option<&'a dyn Throttle>,
    /// A write-back flush is in flight (a job has at most one).
    flushing: bool,
    files: Vec<Option<OpenFile>>,
    ops: Vec<Option<Op>>,
    free_ops: Vec<usize>,
    in_flight: usize,
    /// Reads in flight (kept within the pool's buffer count: see `ring_entries`).
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
    parked: HashMap<u16, Buf>,
    /// Buffers the hashing thread is done with while their write is still in flight.
    hashed_bufs: HashSet<u16>,
    /// Set when the job stops early: the hashing thread then answers without hashing.
    abandon: &'a AtomicBool,
}

pub(crate) fn run(
    uring: &mut Uring,
    pool: &BufferPool,
    reqs: &[CopyRequest],
    ctl: &JobControl,
    throttle: Option<&dyn Throttle>,
    opts: &Options,
    created: &mut Created,
) -> Result<Vec<FileReport>, CopyError> {
    let (msg_tx, msg_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let hash = opts.hash;
    let abandon = AtomicBool::new(false);
    std::thread::scope(|s| {
        let abandon = &abandon;
        s.spawn(move || hash::worker(msg_rx, done_tx, hash, abandon));
        let mut run = Run {
            registered: uring.registered,
            max_open: uring.max_open,
            ring: &mut uring.ring,
            pool,
            reqs,
            ctl,
            opts,
            created,
            throttle,
            flushing: false,
            files: Vec::new(),
            ops: Vec::new(),
            free_ops: Vec::new(),
            in_flight: 0,
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
        };
        let result = run.main_loop();
        // Whatever happened, no operation and no hash may still use a buffer or a descriptor when we return.
        run.drain();
        result?;
        Ok(run.reports.into_iter().map(|r| r.expect("every request copied")).collect())
    })
}

impl Run<'_> {
    fn main_loop(&mut self) -> Result<(), CopyError> {
        loop {
            if self.ctl.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            self.open_files()?;
            self.sync_written();
            let throttle_wait = self.submit_reads();
            if self.in_flight == 0 {
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
                return Err(CopyError::Setup {
                    backend: "uring",
                    reason: "copy loop stalled with files open and nothing in flight (a Backset bug)".into(),
                });
            }
            let mut timeout = throttle_wait.unwrap_or(Duration::from_millis(CANCEL_POLL_MS));
            if self.hash_outstanding > 0 {
                // Hash answers do not wake the ring: look again soon.
                timeout = timeout.min(Duration::from_millis(1));
            }
            let started = Instant::now();
            self.submit_and_wait(timeout.min(Duration::from_millis(CANCEL_POLL_MS)))?;
            if throttle_wait.is_some() {
                self.ctl.add_waited(started.elapsed());
            }
            self.complete()?;
            self.poll_hashes(None)?;
        }
    }

    /// Starts new files while fewer than `max_open` are open: queues the source's open and the target's
    /// creation (its missing directories are made first, synchronously).
    fn open_files(&mut self) -> Result<(), CopyError> {
        while self.open < self.max_open && self.next_request < self.reqs.len() {
            let i = self.next_request;
            let req = &self.reqs[i];
            self.next_request += 1;
            let src_path = c_path(&req.source)?;
            let dst_path = match &req.target {
                Some(t) => {
                    if let Some(parent) = t.parent() {
                        self.created.create_dirs(parent)?;
                    }
                    Some(c_path(t)?)
                }
                None => None,
            };
            let slot = self.files.iter().position(Option::is_none).unwrap_or_else(|| {
                self.files.push(None);
                self.files.len() - 1
            });
            self.files[slot] = Some(OpenFile {
                request: i,
                stage: Stage::Opening,
                setup: 0,
                src_file: None,
                dst_file: None,
                src_stat: None,
                dst_stat: None,
                src: None,
                dst: None,
                finish_sent: false,
                hashes: None,
                synced: false,
                next_read: 0,
                hashed: 0,
                ready: BTreeMap::new(),
                reading: BTreeMap::new(),
                admitting: None,
                writes_in_flight: 0,
                report: None,
            });
            self.open += 1;
            self.push_setup(Op::Open { file: slot, side: Side::Source, path: src_path });
            if let Some(path) = dst_path {
                self.push_setup(Op::Open { file: slot, side: Side::Target, path });
            }
        }
        Ok(())
    }

    /// Queues an operation of a file's setup or closing stage.
    fn push_setup(&mut self, op: Op) {
        let (Op::Open { file, .. } | Op::Statx { file, .. } | Op::Fallocate { file } | Op::Close { file, .. }) = op
        else {
            unreachable!("only setup and closing operations")
        };
        self.files[file].as_mut().expect("open").setup += 1;
        self.push(op);
    }

    /// A setup or closing operation of `file` completed: when it was the stage's last, moves to the next stage.
    fn setup_done(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files[file].as_mut().expect("open");
        f.setup -= 1;
        if f.setup > 0 {
            return Ok(());
        }
        match f.stage {
            Stage::Opening => {
                f.stage = Stage::Stating;
                let want_dst_stat = f.dst_file.is_some() && self.opts.direct;
                self.push_setup(Op::Statx { file, side: Side::Source, buf: Box::new(UnsafeCell::new(zeroed_statx())) });
                if want_dst_stat {
                    self.push_setup(Op::Statx {
                        file,
                        side: Side::Target,
                        buf: Box::new(UnsafeCell::new(zeroed_statx())),
                    });
                }
                Ok(())
            }
            Stage::Stating => self.set_up(file),
            Stage::Allocating => {
                f.stage = Stage::Copying;
                Ok(())
            }
            Stage::Closing => {
                let f = self.files[file].take().expect("open");
                self.open -= 1;
                self.ctl.files_done.fetch_add(1, Relaxed);
                self.reports[f.request] = Some(f.report.expect("report made before closing"));
                Ok(())
            }
            Stage::Copying | Stage::Written | Stage::Syncing => {
                unreachable!("no setup operations while copying or syncing")
            }
        }
    }

    /// Both sides are open and stated: check the source against its request, set flags, allocate the target.
    fn set_up(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files[file].as_mut().expect("open");
        let req = &self.reqs[f.request];
        let src_file = f.src_file.take().expect("source opened");
        let stat = f.src_stat.take().expect("source stated");
        let src = source_from_stat(req, src_file, &stat, self.opts.direct)?;
        if req.len.is_none() {
            self.ctl.bytes_total.fetch_add(src.len, Relaxed);
        }
        if let Some(dst_file) = f.dst_file.take() {
            f.dst = Some(target_from_stat(dst_file, f.dst_stat.as_ref(), self.opts.direct));
        }
        let len = src.len;
        f.src = Some(src);
        if let Some(dst) = &f.dst {
            presize(dst, len, target_path(req))?;
        }
        if f.dst.as_ref().is_some_and(|d| allocation_len(len, d.direct) > 0) {
            f.stage = Stage::Allocating;
            self.push_setup(Op::Fallocate { file });
            return Ok(());
        }
        f.stage = Stage::Copying;
        // An empty file has nothing to read: finish it straight away.
        self.maybe_finish(file)
    }

    /// Queues reads into free buffers, file by file in request order. Returns how long the throttle asks to wait,
    /// if it refused. A throttled job reads in pieces of at most `Throttle::grain` bytes, queued as the throttle
    /// admits them, without waiting for earlier pieces to complete.
    fn submit_reads(&mut self) -> Option<Duration> {
        let throttle = self.throttle;
        let grain = throttle.map_or(BUFFER_BYTES, |t| t.grain().min(BUFFER_BYTES as u64) as usize);
        let mut order: Vec<usize> = (0..self.files.len())
            .filter(|&s| self.files[s].as_ref().is_some_and(|f| f.stage == Stage::Copying))
            .collect();
        order.sort_by_key(|&s| self.files[s].as_ref().map(|f| f.request));
        for slot in order {
            loop {
                if self.reads >= self.pool.count() {
                    return None;
                }
                let f = self.files[slot].as_mut().expect("open");
                let Some(rel) = f.admitting else {
                    if f.next_read >= f.src().len {
                        break;
                    }
                    // Take the buffer before asking the throttle, so no admitted byte goes unread.
                    let buf = self.pool.take()?;
                    let f = self.files[slot].as_mut().expect("open");
                    let want = (f.src().len - f.next_read).min(BUFFER_BYTES as u64) as usize;
                    let rel = f.next_read;
                    f.next_read += want as u64;
                    f.reading.insert(rel, Reading { buf, want, admitted: 0, done: 0 });
                    f.admitting = Some(rel);
                    continue;
                };
                let chunk = f.reading.get_mut(&rel).expect("admitting a chunk being read");
                let (start, end) = (chunk.admitted, chunk.want.min(chunk.admitted + grain));
                if let Some(Err(wait)) = throttle.map(|t| t.try_acquire((end - start) as u64)) {
                    return Some(wait);
                }
                chunk.admitted = end;
                if end == chunk.want {
                    f.admitting = None;
                }
                self.reads += 1;
                self.push(Op::Read { file: slot, rel, start, filled: start, end });
            }
        }
        None
    }

    /// Builds the SQE for `op` and queues it.
    fn push(&mut self, op: Op) {
        let id = self.free_ops.pop().unwrap_or_else(|| {
            self.ops.push(None);
            self.ops.len() - 1
        });
        let entry = self.entry(&op).user_data(id as u64);
        self.ops[id] = Some(op);
        self.in_flight += 1;
        // SAFETY: the entry points into a pool buffer, a path or a statx buffer. A write owns its buffer's token; a
        // read's buffer token sits with its chunk in the file's `reading` until every piece of the chunk completed,
        // and pieces of one chunk read disjoint ranges; user code touches neither until then, and `drain` gives
        // those buffers back only after every operation completed. The path and statx buffer are heap allocations
        // owned by the operation, which sits in `self.ops[id]` until the completion for `id` is handled (or `drain`
        // waits it out), and do not move when the operation does. The descriptors belong to an `OpenFile` that is
        // only dropped after all its operations completed (a `Close` owns its raw descriptor). The queue has room:
        // the ring has two entries for every buffer (reads are kept within the buffer count, each write holds a
        // buffer) and two for every open file (`ring_entries`), and no operation exists without one of those.
        unsafe { self.ring.submission().push(&entry).expect("submission queue has room") };
    }

    fn entry(&self, op: &Op) -> squeue::Entry {
        match op {
            Op::Open { side: Side::Source, path, .. } => {
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).flags(SOURCE_OPEN_FLAGS).build()
            }
            Op::Open { side: Side::Target, path, .. } => opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(TARGET_OPEN_FLAGS)
                .mode(TARGET_MODE)
                .build(),
            Op::Statx { file, side, buf } => {
                let f = self.files[*file].as_ref().expect("open");
                let fd = match side {
                    Side::Source => f.src_file.as_ref(),
                    Side::Target => f.dst_file.as_ref(),
                }
                .expect("stated after opening")
                .as_raw_fd();
                let ptr = buf.get().cast::<types::statx>();
                opcode::Statx::new(types::Fd(fd), c"".as_ptr(), ptr).flags(libc::AT_EMPTY_PATH).mask(STATX_MASK).build()
            }
            Op::Fallocate { file } => {
                let f = self.files[*file].as_ref().expect("open");
                let dst = f.dst.as_ref().expect("allocating a target");
                opcode::Fallocate::new(types::Fd(dst.file.as_raw_fd()), allocation_len(f.src().len, dst.direct)).build()
            }
            Op::Read { file, rel, filled, end, .. } => {
                let f = self.files[*file].as_ref().expect("open");
                let src = f.src();
                let chunk = &f.reading[rel];
                let buf = &chunk.buf;
                let ptr = self.pool.ptr(buf.index()).wrapping_add(*filled);
                // Only a chunk's last piece is padded (pieces before it are multiples of the alignment).
                let want = chunk.want;
                let len = if *end == want { io_len(want, src.direct) - filled } else { end - filled } as u32;
                let offset = src.offset + rel + *filled as u64;
                let fd = types::Fd(src.file.as_raw_fd());
                if (buf.index() as usize) < self.registered {
                    opcode::ReadFixed::new(fd, ptr, len, buf.index()).offset(offset).build()
                } else {
                    opcode::Read::new(fd, ptr, len).offset(offset).build()
                }
            }
            Op::Write { file, buf, rel, len, filled, .. } => {
                let f = self.files[*file].as_ref().expect("open");
                let ptr = self.pool.ptr(buf.index()).wrapping_add(*filled).cast_const();
                let n = (len - filled) as u32;
                let offset = rel + *filled as u64;
                let fd = types::Fd(f.dst.as_ref().expect("writes only with a target").file.as_raw_fd());
                if (buf.index() as usize) < self.registered {
                    opcode::WriteFixed::new(fd, ptr, n, buf.index()).offset(offset).build()
                } else {
                    opcode::Write::new(fd, ptr, n).offset(offset).build()
                }
            }
            Op::Fsync { file } | Op::Flush { file } => {
                let f = self.files[*file].as_ref().expect("open");
                let sync =
                    opcode::Fsync::new(types::Fd(f.dst.as_ref().expect("syncs only with a target").file.as_raw_fd()));
                match op {
                    Op::Flush { .. } => sync.flags(types::FsyncFlags::DATASYNC),
                    _ => sync,
                }
                .build()
            }
            Op::Close { fd, .. } => opcode::Close::new(types::Fd(*fd)).build(),
        }
    }

    fn submit_and_wait(&mut self, timeout: Duration) -> Result<(), CopyError> {
        let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(CopyError::Setup { backend: "uring", reason: format!("io_uring_enter: {e}") }),
        }
    }

    /// Handles every completion available.
    fn complete(&mut self) -> Result<(), CopyError> {
        let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        let mut first_err = None;
        for (id, res) in done {
            let op = self.ops[id as usize].take().expect("completion for a queued operation");
            self.free_ops.push(id as usize);
            self.in_flight -= 1;
            if let Err(e) = self.handle(op, res) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn handle(&mut self, op: Op, res: i32) -> Result<(), CopyError> {
        match op {
            Op::Open { file, side, .. } => {
                let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                let opened = self.opened(side, request, res)?;
                let f = self.files[file].as_mut().expect("open");
                match side {
                    Side::Source => f.src_file = Some(opened),
                    Side::Target => f.dst_file = Some(opened),
                }
                self.setup_done(file)
            }
            Op::Statx { file, side, buf } => {
                let f = self.files[file].as_mut().expect("open");
                let request = &self.reqs[f.request];
                if res < 0 {
                    let path = if side == Side::Source { &request.source } else { target_path(request) };
                    return Err(CopyError::io("stat", path, errno(res)));
                }
                let stat = buf.into_inner();
                match side {
                    Side::Source => f.src_stat = Some(stat),
                    Side::Target => f.dst_stat = Some(stat),
                }
                self.setup_done(file)
            }
            Op::Fallocate { file } => {
                if res < 0 && !allocation_unsupported(-res) {
                    let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                    return Err(CopyError::io("allocate", target_path(request), errno(res)));
                }
                self.setup_done(file)
            }
            Op::Close { file, side, .. } => {
                if res < 0 {
                    let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                    let path = if side == Side::Source { &request.source } else { target_path(request) };
                    return Err(CopyError::io("close", path, errno(res)));
                }
                self.setup_done(file)
            }
            Op::Read { file, rel, start, filled, end } => {
                // A failed read's buffer stays with its chunk in `reading` (other pieces may still read into it);
                // `drain` gives it back once nothing is in flight.
                self.reads -= 1;
                let f = self.files[file].as_mut().expect("open");
                let src = f.src.as_ref().expect("reading a set-up source");
                if res < 0 {
                    return Err(CopyError::io("read", &self.reqs[f.request].source, errno(res)));
                }
                let new_filled = (filled + res as usize).min(end);
                self.ctl.bytes_read.fetch_add((new_filled - filled) as u64, Relaxed);
                let filled = new_filled;
                if filled < end {
                    let short = res == 0 || (src.direct && filled % crate::limits::DIRECT_ALIGN != 0);
                    if short {
                        return Err(CopyError::SourceShort {
                            path: self.reqs[f.request].source.clone(),
                            expected: src.offset + src.len,
                            found: src.offset + rel + filled as u64,
                        });
                    }
                    self.reads += 1;
                    self.push(Op::Read { file, rel, start, filled, end });
                    return Ok(());
                }
                let chunk = f.reading.get_mut(&rel).expect("a piece of a chunk being read");
                chunk.done += end - start;
                if chunk.done < chunk.want {
                    return Ok(());
                }
                let Reading { buf, want, .. } = f.reading.remove(&rel).expect("just found");
                f.ready.insert(rel, (buf, want));
                self.hash_and_write(file)
            }
            Op::Write { file, buf, rel, len, data, filled } => {
                let f = self.files[file].as_mut().expect("open");
                if res < 0 {
                    let path = target_path(&self.reqs[f.request]).to_path_buf();
                    self.release(buf);
                    return Err(CopyError::io("write", &path, errno(res)));
                }
                let filled = filled + res as usize;
                if res == 0 {
                    let path = target_path(&self.reqs[f.request]).to_path_buf();
                    self.release(buf);
                    let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "the device accepted no bytes");
                    return Err(CopyError::io("write", &path, e));
                }
                if filled < len {
                    self.push(Op::Write { file, buf, rel, len, data, filled });
                    return Ok(());
                }
                f.writes_in_flight -= 1;
                self.release(buf);
                self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
                self.created.wrote(len as u64, self.throttle.is_some_and(|t| t.is_limited()));
                if !self.flushing && self.created.start_flush() {
                    self.flushing = true;
                    self.files[file].as_mut().expect("open").writes_in_flight += 1;
                    self.push(Op::Flush { file });
                }
                self.maybe_finish(file)
            }
            Op::Flush { file } => {
                self.flushing = false;
                let f = self.files[file].as_mut().expect("open");
                f.writes_in_flight -= 1;
                if res < 0 {
                    return Err(CopyError::io("fdatasync", target_path(&self.reqs[f.request]), errno(res)));
                }
                self.maybe_finish(file)
            }
            Op::Fsync { file } => {
                if res < 0 {
                    let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                    return Err(CopyError::io("fsync", target_path(request), errno(res)));
                }
                self.files[file].as_mut().expect("open").synced = true;
                self.try_close(file);
                Ok(())
            }
        }
    }

    /// Turns an open's result into a `File`; a created target is remembered for removal if the job fails.
    fn opened(&mut self, side: Side, request: &CopyRequest, res: i32) -> Result<File, CopyError> {
        if res < 0 {
            return Err(match side {
                Side::Source => CopyError::io("open", &request.source, errno(res)),
                Side::Target => create_error(target_path(request), errno(res)),
            });
        }
        if side == Side::Target {
            self.created.record_file(target_path(request));
        }
        // SAFETY: a successful open returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(res) })
    }

    /// Closes the file once its target is durable (or it has none) and its hashes are in.
    fn try_close(&mut self, file: usize) {
        let f = self.files[file].as_ref().expect("open");
        if f.synced && f.hashes.is_some() {
            self.close(file);
        }
    }

    /// The file is done (its target durable): makes its report and closes both descriptors through the ring.
    fn close(&mut self, file: usize) {
        let f = self.files[file].as_mut().expect("open");
        let (hash, chunk_hashes) = f.hashes.take().expect("hashes in before closing");
        let src = f.src.take().expect("copied from a source");
        let dst = f.dst.take();
        f.report = Some(FileReport {
            request: f.request,
            bytes: src.len,
            hash,
            chunk_hashes,
            direct_source: src.direct,
            direct_target: dst.as_ref().is_some_and(|d| d.direct),
        });
        f.stage = Stage::Closing;
        self.push_setup(Op::Close { file, side: Side::Source, fd: src.file.into_raw_fd() });
        if let Some(dst) = dst {
            self.push_setup(Op::Close { file, side: Side::Target, fd: dst.file.into_raw_fd() });
        }
    }

    /// Hands the reads that are next in file order to the hashing thread and queues their writes from the same
    /// buffers (reading only, the buffer waits for the hash).
    fn hash_and_write(&mut self, file: usize) -> Result<(), CopyError> {
        loop {
            let f = self.files[file].as_mut().expect("open");
            let Some((mut buf, data)) = f.ready.remove(&f.hashed) else {
                break;
            };
            let rel = f.hashed;
            f.hashed += data as u64;
            let (request, dst_direct) = (f.request, f.dst.as_ref().map(|d| d.direct));
            // Pad a direct write's tail before anyone else reads the buffer.
            let len = dst_direct.map_or(data, |direct| io_len(data, direct));
            if len > data {
                self.pool.slice_mut(&mut buf)[data..len].fill(0);
            }
            let idx = buf.index();
            self.send_hash(Msg::Chunk {
                request,
                ptr: BufPtr::new(self.pool.ptr(idx).cast_const()),
                len: data,
                buf: idx,
            });
            if dst_direct.is_none() {
                self.parked.insert(idx, buf);
                self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
                continue;
            }
            self.files[file].as_mut().expect("open").writes_in_flight += 1;
            self.push(Op::Write { file, buf, rel, len, data, filled: 0 });
        }
        self.maybe_finish(file)
    }

    fn send_hash(&mut self, msg: Msg) {
        self.hash_outstanding += 1;
        self.hash_tx
            .as_ref()
            .expect("the job is running")
            .send(msg)
            .expect("the hashing thread runs until the job ends");
    }

    /// A buffer's write is done: back to the pool if the hashing thread is done with it too, else parked.
    fn release(&mut self, buf: Buf) {
        if self.hashed_bufs.remove(&buf.index()) {
            self.pool.give_back(buf);
        } else {
            self.parked.insert(buf.index(), buf);
        }
    }

    /// The hashing thread is done with buffer `idx`: back to the pool if its write is done too.
    fn hashed_buf(&mut self, idx: u16) {
        match self.parked.remove(&idx) {
            Some(buf) => self.pool.give_back(buf),
            None => {
                self.hashed_bufs.insert(idx);
            }
        }
    }

    /// Handles the hashing thread's answers: all that are there, after waiting up to `wait` for one.
    fn poll_hashes(&mut self, wait: Option<Duration>) -> Result<(), CopyError> {
        if let Some(w) = wait {
            match self.hash_rx.recv_timeout(w) {
                Ok(done) => self.hash_done(done)?,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(hashing_stopped()),
            }
        }
        loop {
            match self.hash_rx.try_recv() {
                Ok(done) => self.hash_done(done)?,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => return Err(hashing_stopped()),
            }
        }
    }

    fn hash_done(&mut self, done: Done) -> Result<(), CopyError> {
        self.hash_outstanding -= 1;
        let slot_of = |files: &[Option<OpenFile>], request: usize| {
            files.iter().position(|f| f.as_ref().is_some_and(|f| f.request == request))
        };
        match done {
            Done::Chunk { buf } => self.hashed_buf(buf),
            Done::Finished { request, hash, chunks } => {
                if let Some(slot) = slot_of(&self.files, request) {
                    self.files[slot].as_mut().expect("open").hashes = Some((hash, chunks));
                    self.try_close(slot);
                }
            }
        }
        Ok(())
    }

    /// Fsyncs the written targets in one batch once no other file is still being copied, or when their slots are
    /// needed for files not started yet. Each fsync makes the device flush its cache, which stalls reads too; one
    /// batch at the end of a job of large files costs one flush instead of one per file, and the first fsync of a
    /// batch commits the file system journal for all of them.
    fn sync_written(&mut self) {
        let open = || self.files.iter().flatten();
        let written = open().filter(|f| f.stage == Stage::Written).count();
        if written == 0 {
            return;
        }
        let copying = open().filter(|f| f.stage < Stage::Written).count();
        let slots_needed = self.open >= self.max_open && self.next_request < self.reqs.len();
        if copying > 0 && !slots_needed {
            return;
        }
        for file in 0..self.files.len() {
            if let Some(f) = self.files[file].as_mut().filter(|f| f.stage == Stage::Written) {
                f.stage = Stage::Syncing;
                self.push(Op::Fsync { file });
            }
        }
    }

    /// Once every byte of a file is written: truncate a padded direct target, then fsync it through the ring (or,
    /// at most `BATCH_SYNC_MAX_BYTES`, leave it to the job's batch sync).
    fn maybe_finish(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files[file].as_mut().expect("open");
        let len = f.src().len;
        if f.stage != Stage::Copying || f.hashed < len || !f.reading.is_empty() {
            return Ok(());
        }
        if !f.finish_sent {
            // Every chunk is with the hashing thread: ask for the file's hashes (they come after the chunks').
            f.finish_sent = true;
            let request = f.request;
            self.send_hash(Msg::Finish { request });
        }
        let f = self.files[file].as_mut().expect("open");
        if f.writes_in_flight > 0 {
            return Ok(());
        }
        if let Some(dst) = &f.dst {
            truncate_target(dst, len, target_path(&self.reqs[f.request]))?;
            if fsynced_alone(len) {
                f.stage = Stage::Written;
                return Ok(());
            }
            self.created.defer_sync();
        }
        // Nothing to fsync: no target, or a small one that the job's batch sync makes durable.
        let f = self.files[file].as_mut().expect("open");
        f.stage = Stage::Syncing;
        f.synced = true;
        self.try_close(file);
        Ok(())
    }

    /// Waits for every operation in flight, discarding results and returning their buffers.
    fn drain(&mut self) {
        while self.in_flight > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)) {
                    // The ring is unusable while the kernel still owns the buffers of what is in flight: unwinding
                    // would unmap memory the kernel may still write to, so stop the process instead.
                    eprintln!(
                        "backset-copier: io_uring_enter failed with {} operations in flight: {e}",
                        self.in_flight
                    );
                    std::process::abort();
                }
            }
            let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (id, res) in done {
                match self.ops[id as usize].take() {
                    Some(Op::Read { .. }) => self.reads -= 1,
                    Some(Op::Write { buf, .. }) => self.release(buf),
                    // A descriptor opened after the job failed: remember a new target (so it is removed), close.
                    Some(Op::Open { file, side, .. }) if res >= 0 => {
                        let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                        drop(self.opened(side, request, res));
                    }
                    Some(
                        Op::Open { .. }
                        | Op::Statx { .. }
                        | Op::Fallocate { .. }
                        | Op::Fsync { .. }
                        | Op::Flush { .. }
                        | Op::Close { .. },
                    )
                    | None => {}
                }
                self.free_ops.push(id as usize);
                self.in_flight -= 1;
            }
        }
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
        for f in self.files.iter_mut().filter_map(Option::take) {
            for (_, (buf, _)) in f.ready {
                self.pool.give_back(buf);
            }
            for (_, chunk) in f.reading {
                self.pool.give_back(chunk.buf);
            }
        }
    }
}

fn zeroed_statx() -> libc::statx {
    // SAFETY: `statx` is a plain C struct of integers, for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// A path as the C string `openat` takes.
fn c_path(path: &std::path::Path) -> Result<CString, CopyError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CopyError::BadRequest { path: path.to_path_buf(), reason: "the path contains a NUL byte".into() })
}

fn hashing_stopped() -> CopyError {
    CopyError::Setup { backend: "uring", reason: "the hashing thread stopped (a Backset bug)".into() }
}

fn target_path(req: &CopyRequest) -> &std::path::Path {
    req.target.as_deref().expect("only requests with a target write")
}

fn errno(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}
