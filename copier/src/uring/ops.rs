//! Every operation the ring is given: what it owns until it completes, the SQE built from it, the job's [`Queue`]
//! that keeps it, with that memory, until its completion is reaped, and the [`Ring`] the jobs of an SM share. This is
//! where the backend's `unsafe` is (beside the buffer registration in `ring.rs`): pushing an SQE, and taking
//! ownership of the descriptor an open returned.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::files::Files;
use super::{bug, errno, Run};
use crate::error::CopyError;
use crate::file::{allocation_len, io_len, SOURCE_OPEN_FLAGS, STATX_MASK, TARGET_MODE, TARGET_OPEN_FLAGS};
use crate::pool::{Buf, BufferPool};

/// Which side of a file an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Source,
    Target,
}

/// An operation of file slot `file`. What an operation owns (a path, a `statx` buffer, a buffer's token, a raw
/// descriptor) stays in its [`Queue`] slot until its completion is reaped.
pub(super) enum Op<'a> {
    /// Open the source or create the target (`direct`: with O_DIRECT); the path must live until the operation
    /// completes.
    Open {
        file: usize,
        side: Side,
        path: CString,
        direct: bool,
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
    /// Write `len` bytes (the `data` bytes of the chunk at `rel`, padded for direct I/O) from `buf`, of which
    /// `filled` are written.
    Write {
        file: usize,
        buf: Buf<'a>,
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

impl Op<'_> {
    /// A `statx` of one side of `file`, into a new zeroed buffer.
    pub(super) fn statx(file: usize, side: Side) -> Self {
        // SAFETY: `statx` is a plain C struct of integers, for which all-zero bytes are a valid value.
        let zeroed: libc::statx = unsafe { std::mem::zeroed() };
        Op::Statx { file, side, buf: Box::new(UnsafeCell::new(zeroed)) }
    }

    /// The file slot the operation is for.
    pub(super) fn file(&self) -> usize {
        match self {
            Op::Open { file, .. }
            | Op::Statx { file, .. }
            | Op::Fallocate { file }
            | Op::Read { file, .. }
            | Op::Write { file, .. }
            | Op::Fsync { file }
            | Op::Flush { file }
            | Op::Close { file, .. } => *file,
        }
    }
}

/// A reaped completion.
pub(super) enum Completion<'a> {
    /// An open completed: the descriptor it returned, owned by the `File` from now on, or the error.
    Opened { file: usize, side: Side, path: CString, result: std::io::Result<File> },
    /// Any other operation, with its result (negative: an errno).
    Done(Op<'a>, i32),
}

/// A job's operations: every operation the job queues sits in a slot, with whatever it owns, from its `push` until
/// its completion is reaped. Its SQE waits in `pending` until the [`Ring`] moves it into the ring's submission queue,
/// in turn with the other jobs' (a job that stopped still has its pending SQEs submitted, and waits for them).
pub(super) struct Queue<'a> {
    /// The job's key on the ring (the upper half of its operations' user data).
    key: u32,
    slots: Vec<Option<Op<'a>>>,
    free: Vec<usize>,
    /// SQEs built and not yet given to the ring.
    pending: VecDeque<squeue::Entry>,
    /// Operations queued (pending or given to the kernel) whose completion is not reaped yet.
    in_flight: usize,
}

impl<'a> Queue<'a> {
    pub(super) fn new(key: u32) -> Self {
        Self { key, slots: Vec::new(), free: Vec::new(), pending: VecDeque::new(), in_flight: 0 }
    }

    /// Operations queued or given to the kernel whose completion is not reaped yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Keeps `op` in a slot until its completion is reaped and queues `entry`, built by [`entry`] from `op`. Private
    /// to this module: only [`Run::push`] calls it, with an entry built from the very `op`.
    fn push(&mut self, op: Op<'a>, entry: squeue::Entry) {
        let id = self.free.pop().unwrap_or(self.slots.len());
        if id == self.slots.len() {
            self.slots.push(None);
        }
        self.pending.push_back(entry.user_data(u64::from(self.key) << 32 | id as u64));
        self.slots[id] = Some(op);
        self.in_flight += 1;
    }

    /// Takes the operation of slot `id` out, with the result of its completion. A completion for no operation of
    /// this job in flight (a bug) is an error.
    pub(super) fn complete(&mut self, id: u32, res: i32) -> Result<Completion<'a>, CopyError> {
        let id = id as usize;
        let Some(op) = self.slots.get_mut(id).and_then(Option::take) else {
            return Err(bug(format!("a completion for operation {id}, which is not in flight")));
        };
        self.free.push(id);
        self.in_flight -= 1;
        Ok(match op {
            Op::Open { file, side, path, .. } => {
                let result = if res < 0 {
                    Err(errno(res))
                } else {
                    // SAFETY: `res` is the result of this open's completion (the kernel's answer to the SQE whose
                    // user data named this job and slot `id`, the slot `op` was in), so a non-negative value is a
                    // new descriptor that nothing else owns; it is taken once, here.
                    Ok(unsafe { File::from_raw_fd(res) })
                };
                Completion::Opened { file, side, path, result }
            }
            op => Completion::Done(op, res),
        })
    }
}

/// The ring as the jobs share it: the driver moves their SQEs into it, in turn, while the kernel has room for them,
/// and hands each completion back to the job its user data names.
pub(super) struct Ring<'r> {
    ring: &'r mut IoUring,
    /// SQEs given to the kernel whose completion is not reaped yet (all jobs).
    in_kernel: usize,
    /// Most operations in the kernel at once: the submission queue's size, so that the completion queue (twice as
    /// large) never overflows.
    capacity: usize,
}

impl<'r> Ring<'r> {
    pub(super) fn new(ring: &'r mut IoUring) -> Self {
        let capacity = ring.params().sq_entries() as usize;
        Self { ring, in_kernel: 0, capacity }
    }

    /// Operations in the kernel (all jobs).
    pub(super) fn in_kernel(&self) -> usize {
        self.in_kernel
    }

    /// Room for more operations in the kernel.
    pub(super) fn room(&self) -> usize {
        self.capacity - self.in_kernel
    }

    /// Moves the oldest pending SQE of `queue` into the submission queue; `false` when it has none or the ring has
    /// no room.
    pub(super) fn submit_one(&mut self, queue: &mut Queue<'_>) -> bool {
        if self.room() == 0 {
            return false;
        }
        let Some(entry) = queue.pending.front() else { return false };
        // SAFETY: `entry` was built by `entry` from the operation in `queue`'s slot named by its user data, and
        // points only at:
        // - memory that operation owns on the heap (an open's path, a `statx` buffer), which stays in that slot,
        //   without moving, until its completion is reaped (`Queue::complete`); a job's queue is dropped only once
        //   none of its operations is in the kernel: the driver ends a job only when its `in_flight` is 0, and
        //   the driver's `Drop` waits out every operation of every job before any job is dropped, also on unwinding
        //   (it aborts if it cannot);
        // - a pool buffer, mapped for as long as the ring thread holds the pool (until every job ended), and used by
        //   nothing else meanwhile: a write owns its buffer's token (in its slot), a read's token stays with its
        //   chunk in the file's `reading` until every piece completed (pieces of a chunk read disjoint ranges), and
        //   nothing touches it there; the registered index given with a fixed read or write is below `registered`;
        // - a descriptor owned by the file's `OpenFile`, which is dropped only once all its operations completed (its
        //   `Closing` stage is over, or the job ended with nothing in flight), or by a `Close` itself (a raw
        //   descriptor).
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            // The submission queue is full of SQEs not yet submitted: submit them first, try again next time.
            return false;
        }
        queue.pending.pop_front();
        self.in_kernel += 1;
        true
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub(super) fn submit_and_wait(&mut self, timeout: Duration) -> Result<(), CopyError> {
        let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(CopyError::Setup { backend: "uring", reason: format!("io_uring_enter: {e}") }),
        }
    }

    /// Submits what is queued and waits for one completion. The ring failing while operations are in flight leaves
    /// memory the kernel may still write to with nobody able to tell when it is done: the process aborts.
    pub(super) fn wait_or_abort(&mut self) {
        if let Err(e) = self.ring.submit_and_wait(1) {
            if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)) {
                eprintln!("backset-copier: io_uring_enter failed with {} operations in flight: {e}", self.in_kernel);
                std::process::abort();
            }
        }
    }

    /// Takes every completion there out of the ring: (job key, slot, result) each.
    pub(super) fn reap(&mut self) -> Vec<(u32, u32, i32)> {
        let done: Vec<(u32, u32, i32)> =
            self.ring.completion().map(|c| ((c.user_data() >> 32) as u32, c.user_data() as u32, c.result())).collect();
        self.in_kernel -= done.len().min(self.in_kernel);
        done
    }
}

impl<'a> Run<'a> {
    /// Builds the SQE for `op` and queues it; `op` then sits in the queue until its completion is reaped.
    pub(super) fn push(&mut self, op: Op<'a>) -> Result<(), CopyError> {
        let entry = entry(&op, &self.files, self.pool, self.registered)?;
        self.queue.push(op, entry);
        Ok(())
    }
}

/// The SQE for `op`, its pointers into `op`, the pool and the descriptors of its file.
fn entry(op: &Op<'_>, files: &Files<'_>, pool: &BufferPool, registered: usize) -> Result<squeue::Entry, CopyError> {
    Ok(match op {
        Op::Open { side: Side::Source, path, .. } => {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).flags(SOURCE_OPEN_FLAGS).build()
        }
        Op::Open { side: Side::Target, path, direct, .. } => {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(if *direct { TARGET_OPEN_FLAGS | libc::O_DIRECT } else { TARGET_OPEN_FLAGS })
                .mode(TARGET_MODE)
                .build()
        }
        Op::Statx { file, side, buf } => {
            let f = files.get(*file)?;
            let opened = match side {
                Side::Source => f.src_file.as_ref(),
                Side::Target => f.dst_file.as_ref(),
            };
            let fd = opened.ok_or_else(|| bug(format!("a statx of file slot {file} before its {side:?} opened")))?;
            let ptr = buf.get().cast::<types::statx>();
            opcode::Statx::new(types::Fd(fd.as_raw_fd()), c"".as_ptr(), ptr)
                .flags(libc::AT_EMPTY_PATH)
                .mask(STATX_MASK)
                .build()
        }
        Op::Fallocate { file } => {
            let f = files.get(*file)?;
            let dst = f.dst()?;
            opcode::Fallocate::new(types::Fd(dst.file.as_raw_fd()), allocation_len(f.src()?.len, dst.direct)).build()
        }
        Op::Read { file, rel, filled, end, .. } => {
            let f = files.get(*file)?;
            let src = f.src()?;
            let chunk = f
                .reading
                .get(rel)
                .ok_or_else(|| bug(format!("a read of file slot {file} at {rel}, not a chunk being read")))?;
            let buf = &chunk.buf;
            let ptr = pool.ptr(buf.index()).wrapping_add(*filled);
            // Only a chunk's last piece is padded (pieces before it are multiples of the alignment).
            let want = chunk.want;
            let len = if *end == want { io_len(want, src.direct) - filled } else { end - filled } as u32;
            let offset = src.offset + rel + *filled as u64;
            let fd = types::Fd(src.file.as_raw_fd());
            if (buf.index() as usize) < registered {
                opcode::ReadFixed::new(fd, ptr, len, buf.index()).offset(offset).build()
            } else {
                opcode::Read::new(fd, ptr, len).offset(offset).build()
            }
        }
        Op::Write { file, buf, rel, len, filled, .. } => {
            let f = files.get(*file)?;
            let ptr = pool.ptr(buf.index()).wrapping_add(*filled).cast_const();
            let n = (len - filled) as u32;
            let offset = rel + *filled as u64;
            let fd = types::Fd(f.dst()?.file.as_raw_fd());
            if (buf.index() as usize) < registered {
                opcode::WriteFixed::new(fd, ptr, n, buf.index()).offset(offset).build()
            } else {
                opcode::Write::new(fd, ptr, n).offset(offset).build()
            }
        }
        Op::Fsync { file } => opcode::Fsync::new(types::Fd(files.get(*file)?.dst()?.file.as_raw_fd())).build(),
        Op::Flush { file } => opcode::Fsync::new(types::Fd(files.get(*file)?.dst()?.file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Op::Close { fd, .. } => opcode::Close::new(types::Fd(*fd)).build(),
    })
}
