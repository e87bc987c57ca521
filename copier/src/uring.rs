//! The io_uring backend: one thread, one ring, the pool's buffers registered with it.
//!
//! For each file the loop keeps reads in flight into free buffers; a read that completes waits in its buffer until
//! the reads before it in the file are hashed (BLAKE3 needs the bytes in order), is hashed straight from the
//! buffer, then written from the same buffer. When a file's last write completes it is truncated (after a padded
//! direct write) and fsynced through the ring. Short reads and writes are resubmitted for their remainder; nothing
//! relies on linked operations.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use crate::error::CopyError;
use crate::file::{create_target, io_len, open_source, truncate_target, Created, FileHasher, Source, Target};
use crate::job::{CopyRequest, FileReport, JobControl, Throttle};
use crate::limits::{BUFFER_BYTES, CANCEL_POLL_MS, MAX_OPEN_FILES, MAX_RING_ENTRIES};
use crate::pool::{Buf, BufferPool};
use crate::Options;

/// A ring with (some of) the pool's buffers registered.
pub(crate) struct Uring {
    ring: IoUring,
    registered: usize,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("registered", &self.registered).finish()
    }
}

impl Uring {
    /// Sets up a ring and registers as many pool buffers as RLIMIT_MEMLOCK allows (after raising the soft limit to
    /// the hard one); the rest are used unregistered.
    pub(crate) fn new(pool: &BufferPool) -> std::io::Result<Self> {
        let ring = IoUring::new(ring_entries(pool.count()))?;
        raise_memlock();
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
        Ok(Self { ring, registered })
    }

    /// Buffers registered with the ring.
    pub(crate) fn registered(&self) -> usize {
        self.registered
    }
}

/// Ring size for a pool of `buffers`: every buffer can be in one read or write and every open file in one fsync,
/// so operations in flight never exceed the ring, whatever order completions come in.
pub(crate) fn ring_entries(buffers: usize) -> u32 {
    ((buffers + MAX_OPEN_FILES).next_power_of_two() as u32).min(MAX_RING_ENTRIES)
}

fn raise_memlock() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct that we own; failures are harmless here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
        }
    }
}

struct OpenFile {
    request: usize,
    src: Source,
    /// `None` when the request only reads and hashes.
    dst: Option<Target>,
    hasher: FileHasher,
    /// Next byte (relative to the copy's start) to read.
    next_read: u64,
    /// Bytes hashed and handed to writes, in order.
    hashed: u64,
    /// Reads complete but not yet hashed, by relative offset: (buffer, data length).
    ready: BTreeMap<u64, (Buf, usize)>,
    reads_in_flight: usize,
    writes_in_flight: usize,
    fsync_submitted: bool,
}

enum Op {
    Read { file: usize, buf: Buf, rel: u64, want: usize, filled: usize },
    Write { file: usize, buf: Buf, rel: u64, len: usize, data: usize, filled: usize },
    Fsync { file: usize },
}

struct Run<'a> {
    ring: &'a mut IoUring,
    registered: usize,
    pool: &'a BufferPool,
    reqs: &'a [CopyRequest],
    ctl: &'a JobControl,
    opts: &'a Options,
    created: &'a mut Created,
    files: Vec<Option<OpenFile>>,
    ops: Vec<Option<Op>>,
    free_ops: Vec<usize>,
    in_flight: usize,
    next_request: usize,
    open: usize,
    reports: Vec<Option<FileReport>>,
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
    let mut run = Run {
        registered: uring.registered,
        ring: &mut uring.ring,
        pool,
        reqs,
        ctl,
        opts,
        created,
        files: Vec::new(),
        ops: Vec::new(),
        free_ops: Vec::new(),
        in_flight: 0,
        next_request: 0,
        open: 0,
        reports: vec![None; reqs.len()],
    };
    let result = run.main_loop(throttle);
    // Whatever happened, no operation may still use a buffer or a descriptor when we return.
    run.drain();
    result?;
    Ok(run.reports.into_iter().map(|r| r.expect("every request copied")).collect())
}

impl Run<'_> {
    fn main_loop(&mut self, throttle: Option<&dyn Throttle>) -> Result<(), CopyError> {
        loop {
            if self.ctl.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            self.open_files()?;
            let throttle_wait = self.submit_reads(throttle);
            if self.in_flight == 0 {
                if self.next_request == self.reqs.len() && self.open == 0 {
                    return Ok(());
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
            let timeout = throttle_wait.unwrap_or(Duration::from_millis(CANCEL_POLL_MS));
            let started = Instant::now();
            self.submit_and_wait(timeout.min(Duration::from_millis(CANCEL_POLL_MS)))?;
            if throttle_wait.is_some() {
                self.ctl.add_waited(started.elapsed());
            }
            self.complete()?;
        }
    }

    fn open_files(&mut self) -> Result<(), CopyError> {
        while self.open < MAX_OPEN_FILES && self.next_request < self.reqs.len() {
            let i = self.next_request;
            let req = &self.reqs[i];
            self.next_request += 1;
            let src = open_source(req, self.opts.direct)?;
            if req.len.is_none() {
                self.ctl.bytes_total.fetch_add(src.len, Relaxed);
            }
            let dst = match &req.target {
                Some(t) => Some(create_target(t, self.opts.direct, self.created)?),
                None => None,
            };
            let slot = self.files.iter().position(Option::is_none).unwrap_or_else(|| {
                self.files.push(None);
                self.files.len() - 1
            });
            self.files[slot] = Some(OpenFile {
                request: i,
                src,
                dst,
                hasher: FileHasher::new(self.opts.hash),
                next_read: 0,
                hashed: 0,
                ready: BTreeMap::new(),
                reads_in_flight: 0,
                writes_in_flight: 0,
                fsync_submitted: false,
            });
            self.open += 1;
            // An empty file has nothing to read: finish it straight away.
            self.maybe_finish(slot)?;
        }
        Ok(())
    }

    /// Queues reads into free buffers, file by file in request order. Returns how long the throttle asks to wait,
    /// if it refused.
    fn submit_reads(&mut self, throttle: Option<&dyn Throttle>) -> Option<Duration> {
        let mut order: Vec<usize> = (0..self.files.len()).filter(|&s| self.files[s].is_some()).collect();
        order.sort_by_key(|&s| self.files[s].as_ref().map(|f| f.request));
        for slot in order {
            loop {
                let f = self.files[slot].as_ref().expect("open");
                if f.next_read >= f.src.len {
                    break;
                }
                let want = (f.src.len - f.next_read).min(BUFFER_BYTES as u64) as usize;
                // Take the buffer before asking the throttle, so no admitted byte goes unread.
                let buf = self.pool.take()?;
                if let Some(Err(wait)) = throttle.map(|t| t.try_acquire(want as u64)) {
                    self.pool.give_back(buf);
                    return Some(wait);
                }
                let f = self.files[slot].as_mut().expect("open");
                let rel = f.next_read;
                f.next_read += want as u64;
                f.reads_in_flight += 1;
                self.push(Op::Read { file: slot, buf, rel, want, filled: 0 });
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
        // SAFETY: the entry points into a pool buffer whose token now sits in `self.ops[id]` until the completion
        // for `id` is handled (or `drain` waits it out), so the buffer stays valid and untouched by user code; the
        // descriptors belong to an `OpenFile` that is only dropped after all its operations completed. The queue has
        // room: the ring has an entry for every buffer and every open file's fsync (`ring_entries`), and no operation
        // exists without one of those.
        unsafe { self.ring.submission().push(&entry).expect("submission queue has room") };
    }

    fn entry(&self, op: &Op) -> squeue::Entry {
        match op {
            Op::Read { file, buf, rel, want, filled } => {
                let f = self.files[*file].as_ref().expect("open");
                let ptr = self.pool.ptr(buf.index()).wrapping_add(*filled);
                let len = (io_len(*want, f.src.direct) - filled) as u32;
                let offset = f.src.offset + rel + *filled as u64;
                let fd = types::Fd(f.src.file.as_raw_fd());
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
            Op::Fsync { file } => {
                let f = self.files[*file].as_ref().expect("open");
                opcode::Fsync::new(types::Fd(f.dst.as_ref().expect("fsync only with a target").file.as_raw_fd()))
                    .build()
            }
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
            Op::Read { file, buf, rel, want, filled } => {
                let f = self.files[file].as_mut().expect("open");
                if res < 0 {
                    self.pool.give_back(buf);
                    return Err(CopyError::io("read", &self.reqs[f.request].source, errno(res)));
                }
                let filled = (filled + res as usize).min(want);
                if filled < want {
                    let short = res == 0 || (f.src.direct && filled % crate::limits::DIRECT_ALIGN != 0);
                    if short {
                        self.pool.give_back(buf);
                        return Err(CopyError::SourceShort {
                            path: self.reqs[f.request].source.clone(),
                            expected: f.src.offset + f.src.len,
                            found: f.src.offset + rel + filled as u64,
                        });
                    }
                    self.push(Op::Read { file, buf, rel, want, filled });
                    return Ok(());
                }
                f.reads_in_flight -= 1;
                f.ready.insert(rel, (buf, want));
                self.hash_and_write(file)
            }
            Op::Write { file, buf, rel, len, data, filled } => {
                let f = self.files[file].as_mut().expect("open");
                if res < 0 {
                    self.pool.give_back(buf);
                    return Err(CopyError::io("write", target_path(&self.reqs[f.request]), errno(res)));
                }
                let filled = filled + res as usize;
                if res == 0 {
                    self.pool.give_back(buf);
                    let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "the device accepted no bytes");
                    return Err(CopyError::io("write", target_path(&self.reqs[f.request]), e));
                }
                if filled < len {
                    self.push(Op::Write { file, buf, rel, len, data, filled });
                    return Ok(());
                }
                f.writes_in_flight -= 1;
                self.pool.give_back(buf);
                self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
                self.maybe_finish(file)
            }
            Op::Fsync { file } => {
                if res < 0 {
                    let request = &self.reqs[self.files[file].as_ref().expect("open").request];
                    return Err(CopyError::io("fsync", target_path(request), errno(res)));
                }
                self.report(file);
                Ok(())
            }
        }
    }

    /// Closes a finished file and records its report.
    fn report(&mut self, file: usize) {
        let f = self.files[file].take().expect("open");
        self.open -= 1;
        self.ctl.files_done.fetch_add(1, Relaxed);
        let (hash, chunk_hashes) = f.hasher.finish();
        self.reports[f.request] = Some(FileReport {
            request: f.request,
            bytes: f.src.len,
            hash,
            chunk_hashes,
            direct_source: f.src.direct,
            direct_target: f.dst.as_ref().is_some_and(|d| d.direct),
        });
    }

    /// Hashes the reads that are next in file order and queues their writes (or, reading only, frees them).
    fn hash_and_write(&mut self, file: usize) -> Result<(), CopyError> {
        loop {
            let f = self.files[file].as_mut().expect("open");
            let Some((mut buf, data)) = f.ready.remove(&f.hashed) else {
                break;
            };
            let rel = f.hashed;
            let bytes = self.pool.slice_mut(&mut buf);
            f.hasher.chunk(&bytes[..data]);
            f.hashed += data as u64;
            let Some(dst) = &f.dst else {
                self.pool.give_back(buf);
                self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
                continue;
            };
            let len = io_len(data, dst.direct);
            bytes[data..len].fill(0);
            f.writes_in_flight += 1;
            self.push(Op::Write { file, buf, rel, len, data, filled: 0 });
        }
        self.maybe_finish(file)
    }

    /// Once every byte of a file is written: truncate a padded direct target, then fsync it through the ring.
    fn maybe_finish(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files[file].as_mut().expect("open");
        let complete = f.hashed == f.src.len && f.writes_in_flight == 0 && f.reads_in_flight == 0;
        if !complete || f.fsync_submitted {
            return Ok(());
        }
        let Some(dst) = &f.dst else {
            self.report(file);
            return Ok(());
        };
        truncate_target(dst, f.src.len, target_path(&self.reqs[f.request]))?;
        f.fsync_submitted = true;
        self.push(Op::Fsync { file });
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
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for id in done {
                match self.ops[id as usize].take() {
                    Some(Op::Read { buf, .. } | Op::Write { buf, .. }) => self.pool.give_back(buf),
                    Some(Op::Fsync { .. }) | None => {}
                }
                self.free_ops.push(id as usize);
                self.in_flight -= 1;
            }
        }
        for f in self.files.iter_mut().filter_map(Option::take) {
            for (_, (buf, _)) in f.ready {
                self.pool.give_back(buf);
            }
        }
    }
}

fn target_path(req: &CopyRequest) -> &std::path::Path {
    req.target.as_deref().expect("only requests with a target write")
}

fn errno(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}
