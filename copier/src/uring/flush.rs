//! Hashing hand-off and flushes: buffers go to the hashing thread in file order while their writes run, come back to
//! the pool when both are done; written targets are fsynced in batches, and a throttled job's writes are flushed as
//! it goes (`limits::FLUSH_AFTER_BYTES`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

use super::files::Stage;
use super::ops::Op;
use super::{bug, Run};
use crate::error::CopyError;
use crate::file::io_len;
use crate::hash::{BufPtr, Done, Msg};
use crate::limits::HEAD_BYTES;
use crate::pool::Buf;
use crate::stream::Chunk;

impl<'a> Run<'a> {
    /// Hands the reads that are next in file order to the hashing thread and queues their writes from the same
    /// buffers (reading only, the buffer waits for the hash).
    pub(super) fn hash_and_write(&mut self, file: usize) -> Result<(), CopyError> {
        loop {
            let f = self.files.get_mut(file)?;
            let Some((mut buf, data)) = f.ready.remove(&f.hashed) else {
                break;
            };
            let rel = f.hashed;
            f.hashed += data as u64;
            let (request, dst_direct, file_len) = (f.request, f.dst.as_ref().map(|d| d.direct), f.src()?.len);
            // Pad a direct write's tail before anyone else reads the buffer.
            let len = dst_direct.map_or(data, |direct| io_len(data, direct));
            if len > data {
                self.pool.slice_mut(&mut buf)[data..len].fill(0);
            }
            if rel == 0 {
                // The file's (or range's) first bytes, for its report, before the hashing thread reads the buffer.
                let head = self.pool.slice_mut(&mut buf)[..data.min(HEAD_BYTES)].to_vec();
                self.files.get_mut(file)?.head = head;
            }
            let idx = buf.index();
            let ptr = BufPtr::new(self.pool.ptr(idx).cast_const());
            self.send_hash(Msg::Chunk { request, ptr, len: data, buf: idx })?;
            if dst_direct.is_none() {
                if self.sink.is_some() {
                    self.to_lend.insert(idx, (request, rel, data, file_len));
                }
                self.parked.insert(idx, buf);
                self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
                continue;
            }
            self.files.get_mut(file)?.writes_in_flight += 1;
            self.push(Op::Write { file, buf, rel, len, data, filled: 0 })?;
        }
        self.maybe_finish(file)
    }

    pub(super) fn send_hash(&mut self, msg: Msg) -> Result<(), CopyError> {
        let sent = self.hash_tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            return Err(hashing_stopped());
        }
        self.hash_outstanding += 1;
        Ok(())
    }

    /// A buffer's write is done: back to the pool if the hashing thread is done with it too, else parked.
    pub(super) fn release(&mut self, buf: Buf<'a>) {
        if self.hashed_bufs.remove(&buf.index()) {
            self.give_buf(buf);
        } else {
            self.parked.insert(buf.index(), buf);
        }
    }

    /// The hashing thread is done with buffer `idx`: back to the pool if its write is done too; a streaming job's
    /// buffer (it has no write) goes to the consumer instead, unless the job stopped early.
    pub(super) fn hashed_buf(&mut self, idx: u16) {
        let lend = self.to_lend.remove(&idx);
        match self.parked.remove(&idx) {
            Some(buf) => match (self.sink, lend) {
                (Some(sink), Some((request, offset, len, file_len))) if !self.abandon.load(Relaxed) => {
                    // Nothing uses the buffer any more: its read completed and the hashing thread answered for it
                    // (this call), and a streaming job queues no write. Lent, it is no longer the job's.
                    self.held -= 1;
                    sink.chunk(Chunk::lend(self.pool, buf, request, offset, len, file_len));
                }
                _ => self.give_buf(buf),
            },
            None => {
                self.hashed_bufs.insert(idx);
            }
        }
    }

    /// Handles the hashing thread's answers that are there.
    pub(super) fn poll_hashes(&mut self) -> Result<(), CopyError> {
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
        match done {
            Done::Chunk { buf } => self.hashed_buf(buf),
            Done::Finished { request, hash, chunks } => {
                if let Some(slot) = self.files.slot_of(request) {
                    self.files.get_mut(slot)?.hashes = Some((hash, chunks));
                    self.try_close(slot)?;
                }
            }
        }
        Ok(())
    }

    /// Fsyncs the written targets in one batch once no other file is still being copied, or when their slots are
    /// needed for files not started yet. Each fsync makes the device flush its cache, which stalls reads too; one
    /// batch at the end of a job of large files costs one flush instead of one per file, and the first fsync of a
    /// batch commits the file system journal for all of them.
    pub(super) fn sync_written(&mut self) -> Result<(), CopyError> {
        let written = self.files.slots_in(Stage::Written);
        if written.is_empty() {
            return Ok(());
        }
        let copying = self.files.iter().filter(|f| f.stage < Stage::Written).count();
        let slots_needed = self.open >= self.share.files && self.next_request < self.reqs.len();
        if copying > 0 && !slots_needed {
            return Ok(());
        }
        for file in written {
            self.files.get_mut(file)?.stage = Stage::Syncing;
            self.push(Op::Fsync { file })?;
        }
        Ok(())
    }

    /// A write of `len` bytes (`data` of them the file's) of `file` completed: counts it and, when a throttled job
    /// has written `FLUSH_AFTER_BYTES` since its last flush and none is in flight, flushes `file`.
    pub(super) fn wrote(&mut self, file: usize, data: usize, len: usize) -> Result<(), CopyError> {
        self.ctl.bytes_done.fetch_add(data as u64, Relaxed);
        let limited = self.throttle.is_some_and(|t| t.is_limited());
        let flush = {
            let mut created = self.created();
            created.wrote(len as u64, limited);
            !self.flushing && created.start_flush()
        };
        if flush {
            self.flushing = true;
            self.files.get_mut(file)?.writes_in_flight += 1;
            self.push(Op::Flush { file })?;
        }
        Ok(())
    }
}

pub(super) fn hashing_stopped() -> CopyError {
    bug("the hashing thread stopped")
}
