//! A file's life in the ring: what each completion does to it, and the operations that take it to its next stage.

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use super::files::{OpenFile, Reading, Stage};
use super::ops::{Completion, Op, Side};
use super::{bug, errno, target_path, Blocked, Run};
use crate::error::CopyError;
use crate::file::{
    allocation_len, allocation_unsupported, create_error, fsynced_alone, presize, source_from_stat, target_from_stat,
    truncate_target, TargetFile,
};
use crate::job::FileReport;
use crate::limits::{BUFFER_BYTES, DIRECT_ALIGN};

impl<'a> Run<'a> {
    /// Starts new files while fewer than `max_open` are open: queues the source's open and the target's
    /// creation (its missing directories are made first, synchronously).
    pub(super) fn open_files(&mut self) -> Result<(), CopyError> {
        while self.open < self.share.files && self.next_request < self.reqs.len() {
            let i = self.next_request;
            let req = &self.reqs[i];
            self.next_request += 1;
            let src_path = c_path(&req.source)?;
            let mut known = None;
            let dst_path = match &req.target {
                Some(t) => {
                    if let Some(parent) = t.parent() {
                        self.created().create_dirs(parent)?;
                        known = self.target_dirs.get(parent).copied();
                    }
                    Some(c_path(t)?)
                }
                None => None,
            };
            let mut file = OpenFile::new(i);
            file.dst_known = known;
            let slot = self.files.insert(file);
            self.open += 1;
            self.push_setup(Op::Open { file: slot, side: Side::Source, path: src_path, direct: false })?;
            if let Some(path) = dst_path {
                let direct = known == Some(true);
                self.push_setup(Op::Open { file: slot, side: Side::Target, path, direct })?;
            }
        }
        Ok(())
    }

    /// Queues an operation of a file's setup or closing stage.
    fn push_setup(&mut self, op: Op<'a>) -> Result<(), CopyError> {
        self.files.get_mut(op.file())?.setup += 1;
        self.push(op)
    }

    /// A setup or closing operation of `file` completed: when it was the stage's last, moves to the next stage.
    fn setup_done(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files.get_mut(file)?;
        f.setup -= 1;
        if f.setup > 0 {
            return Ok(());
        }
        match f.stage {
            Stage::Opening => {
                f.stage = Stage::Stating;
                // A target whose directory's verdict was known at its creation needs no `statx`.
                let want_dst_stat = f.dst_file.is_some() && self.opts.direct && f.dst_known.is_none();
                self.push_setup(Op::statx(file, Side::Source))?;
                self.statx += 1;
                if want_dst_stat {
                    self.push_setup(Op::statx(file, Side::Target))?;
                    self.statx += 1;
                }
                Ok(())
            }
            Stage::Stating => self.set_up(file),
            Stage::Allocating => {
                f.stage = Stage::Copying;
                Ok(())
            }
            Stage::Closing => {
                let f = self.files.remove(file)?;
                self.open -= 1;
                self.ctl.files_done.fetch_add(1, Relaxed);
                let report = f.report.ok_or_else(|| bug(format!("request {} closed without a report", f.request)))?;
                self.reports[f.request] = Some(report);
                Ok(())
            }
            stage @ (Stage::Copying | Stage::Written | Stage::Syncing) => {
                Err(bug(format!("a setup operation of request {} completed in stage {stage:?}", f.request)))
            }
        }
    }

    /// Both sides are open and stated: check the source against its request, set flags, allocate the target.
    fn set_up(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files.get_mut(file)?;
        let req = &self.reqs[f.request];
        let (Some(src_file), Some(stat)) = (f.src_file.take(), f.src_stat.take()) else {
            return Err(bug(format!("request {} set up before its source was opened and stated", f.request)));
        };
        let src = source_from_stat(req, src_file, &stat, self.opts.direct)?;
        if req.len.is_none() {
            self.ctl.bytes_total.fetch_add(src.len, Relaxed);
        }
        if let Some(dst_file) = f.dst_file.take() {
            let dst = match f.dst_known {
                Some(direct) => TargetFile { file: dst_file, direct },
                None => {
                    let dst = target_from_stat(dst_file, f.dst_stat.as_ref(), self.opts.direct);
                    if self.opts.direct {
                        if let Some(parent) = target_path(req)?.parent() {
                            self.target_dirs.insert(parent.to_path_buf(), dst.direct);
                        }
                    }
                    dst
                }
            };
            f.dst = Some(dst);
        }
        let len = src.len;
        f.src = Some(src);
        if let Some(dst) = &f.dst {
            presize(dst, len, target_path(req)?)?;
        }
        if f.dst.as_ref().is_some_and(|d| allocation_len(len, d.direct) > 0) {
            f.stage = Stage::Allocating;
            return self.push_setup(Op::Fallocate { file });
        }
        f.stage = Stage::Copying;
        // An empty file has nothing to read: finish it straight away.
        self.maybe_finish(file)
    }

    /// Queues reads into free buffers within the job's share, file by file in request order. Returns why it stopped
    /// early: the throttle refused (and how long it asks to wait), or the pool had no free buffer. A throttled job reads in pieces of at most `Throttle::grain` bytes, queued as the throttle
    /// admits them, without waiting for earlier pieces to complete.
    pub(super) fn submit_reads(&mut self) -> Result<Option<Blocked>, CopyError> {
        let throttle = self.throttle;
        let grain = throttle.map_or(BUFFER_BYTES, |t| t.grain().min(BUFFER_BYTES as u64) as usize);
        let mut order = self.files.slots_in(Stage::Copying);
        order.sort_by_key(|&s| self.files.get(s).map(|f| f.request).ok());
        for slot in order {
            loop {
                if self.reads >= self.share.buffers {
                    return Ok(None);
                }
                let f = self.files.get_mut(slot)?;
                let Some(rel) = f.admitting else {
                    let len = f.src()?.len;
                    if f.next_read >= len {
                        break;
                    }
                    // Take the buffer before asking the throttle, so no admitted byte goes unread.
                    if self.held >= self.share.buffers {
                        return Ok(None);
                    }
                    let Some(buf) = self.take_buf() else {
                        return Ok(Some(Blocked::NoBuffer));
                    };
                    let f = self.files.get_mut(slot)?;
                    let want = (len - f.next_read).min(BUFFER_BYTES as u64) as usize;
                    let rel = f.next_read;
                    f.next_read += want as u64;
                    f.reading.insert(rel, Reading { buf, want, admitted: 0, done: 0 });
                    f.admitting = Some(rel);
                    continue;
                };
                let chunk = f.reading.get_mut(&rel).ok_or_else(|| bug("admitting a chunk that is not being read"))?;
                let (start, end) = (chunk.admitted, chunk.want.min(chunk.admitted + grain));
                if let Some(Err(wait)) = throttle.map(|t| t.try_acquire((end - start) as u64)) {
                    return Ok(Some(Blocked::Throttle(wait)));
                }
                chunk.admitted = end;
                if end == chunk.want {
                    f.admitting = None;
                }
                self.reads += 1;
                self.push(Op::Read { file: slot, rel, start, filled: start, end })?;
            }
        }
        Ok(None)
    }

    /// What a completion does to its file.
    pub(super) fn handle(&mut self, done: Completion<'a>) -> Result<(), CopyError> {
        let (op, res) = match done {
            Completion::Opened { file, side, result, path } => {
                let f = self.files.get_mut(file)?;
                let request = &self.reqs[f.request];
                let opened = match (side, result) {
                    (_, Ok(opened)) => opened,
                    (Side::Source, Err(e)) => return Err(CopyError::io("open", &request.source, e)),
                    (Side::Target, Err(e)) => {
                        if f.dst_known == Some(true) && e.raw_os_error() == Some(libc::EINVAL) {
                            // A file system that refuses O_DIRECT does so after creating the file (which O_EXCL
                            // made new, if it exists): it is the job's, removed with the rest when the job fails.
                            self.created().record_file(created_path(&path));
                        }
                        return Err(create_error(target_path(request)?, e));
                    }
                };
                match side {
                    Side::Source => f.src_file = Some(opened),
                    Side::Target => f.dst_file = Some(opened),
                }
                return self.setup_done(file);
            }
            Completion::Done(op, res) => (op, res),
        };
        match op {
            Op::Open { .. } => Err(bug("an open's completion not taken as one")),
            Op::Statx { file, side, buf } => {
                let f = self.files.get_mut(file)?;
                let request = &self.reqs[f.request];
                if res < 0 {
                    let path = if side == Side::Source { &request.source } else { target_path(request)? };
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
                    let request = &self.reqs[self.files.get(file)?.request];
                    return Err(CopyError::io("allocate", target_path(request)?, errno(res)));
                }
                self.setup_done(file)
            }
            Op::Close { file, side, .. } => {
                if res < 0 {
                    let request = &self.reqs[self.files.get(file)?.request];
                    let path = if side == Side::Source { &request.source } else { target_path(request)? };
                    return Err(CopyError::io("close", path, errno(res)));
                }
                self.setup_done(file)
            }
            Op::Read { file, rel, start, filled, end } => {
                // A failed read's buffer stays with its chunk in `reading` (other pieces may still read into it);
                // `drain` gives it back once nothing is in flight.
                self.reads -= 1;
                let f = self.files.get_mut(file)?;
                let src = f.src()?;
                if res < 0 {
                    return Err(CopyError::io("read", &self.reqs[f.request].source, errno(res)));
                }
                let new_filled = (filled + res as usize).min(end);
                self.ctl.bytes_read.fetch_add((new_filled - filled) as u64, Relaxed);
                let filled = new_filled;
                if filled < end {
                    let short = res == 0 || (src.direct && filled % DIRECT_ALIGN != 0);
                    if short {
                        return Err(CopyError::SourceShort {
                            path: self.reqs[f.request].source.clone(),
                            expected: src.offset + src.len,
                            found: src.offset + rel + filled as u64,
                        });
                    }
                    self.reads += 1;
                    return self.push(Op::Read { file, rel, start, filled, end });
                }
                let chunk = f.reading.get_mut(&rel).ok_or_else(|| bug("a piece of a chunk that is not being read"))?;
                chunk.done += end - start;
                if chunk.done < chunk.want {
                    return Ok(());
                }
                if let Some(Reading { buf, want, .. }) = f.reading.remove(&rel) {
                    f.ready.insert(rel, (buf, want));
                }
                self.hash_and_write(file)
            }
            Op::Write { file, buf, rel, len, data, filled } => {
                let f = self.files.get_mut(file)?;
                let path = target_path(&self.reqs[f.request])?;
                if res <= 0 {
                    self.release(buf);
                    let e = match res {
                        0 => std::io::Error::new(std::io::ErrorKind::WriteZero, "the device accepted no bytes"),
                        _ => errno(res),
                    };
                    return Err(CopyError::io("write", path, e));
                }
                let filled = filled + res as usize;
                if filled < len {
                    return self.push(Op::Write { file, buf, rel, len, data, filled });
                }
                f.writes_in_flight -= 1;
                self.release(buf);
                self.wrote(file, data, len)?;
                self.maybe_finish(file)
            }
            Op::Flush { file } => {
                self.flushing = false;
                let f = self.files.get_mut(file)?;
                f.writes_in_flight -= 1;
                if res < 0 {
                    return Err(CopyError::io("fdatasync", target_path(&self.reqs[f.request])?, errno(res)));
                }
                self.maybe_finish(file)
            }
            Op::Fsync { file } => {
                let f = self.files.get_mut(file)?;
                if res < 0 {
                    return Err(CopyError::io("fsync", target_path(&self.reqs[f.request])?, errno(res)));
                }
                f.synced = true;
                self.try_close(file)
            }
        }
    }

    /// Closes the file once its target is durable (or it has none) and its hashes are in.
    pub(super) fn try_close(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files.get(file)?;
        if f.synced && f.hashes.is_some() {
            return self.close(file);
        }
        Ok(())
    }

    /// The file is done (its target durable): makes its report and closes both descriptors through the ring.
    fn close(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files.get_mut(file)?;
        let (Some((hash, chunk_hashes)), Some(src)) = (f.hashes.take(), f.src.take()) else {
            return Err(bug(format!("request {} closed before its source was set up and hashed", f.request)));
        };
        let dst = f.dst.take();
        f.report = Some(FileReport {
            request: f.request,
            bytes: src.len,
            hash,
            chunk_hashes,
            direct_source: src.direct,
            direct_target: dst.as_ref().is_some_and(|d| d.direct),
            head: std::mem::take(&mut f.head),
        });
        f.stage = Stage::Closing;
        self.push_setup(Op::Close { file, side: Side::Source, fd: src.file.into_raw_fd() })?;
        if let Some(dst) = dst {
            self.push_setup(Op::Close { file, side: Side::Target, fd: dst.file.into_raw_fd() })?;
        }
        Ok(())
    }

    /// Once every byte of a file is written: truncate a padded direct target, then fsync it through the ring (or,
    /// at most `BATCH_SYNC_MAX_BYTES`, leave it to the job's batch sync).
    pub(super) fn maybe_finish(&mut self, file: usize) -> Result<(), CopyError> {
        let f = self.files.get_mut(file)?;
        let len = f.src()?.len;
        if f.stage != Stage::Copying || f.hashed < len || !f.reading.is_empty() {
            return Ok(());
        }
        if !f.finish_sent {
            // Every chunk is with the hashing thread: ask for the file's hashes (they come after the chunks').
            f.finish_sent = true;
            let request = f.request;
            self.send_hash(crate::hash::Msg::Finish { request })?;
        }
        let f = self.files.get_mut(file)?;
        if f.writes_in_flight > 0 {
            return Ok(());
        }
        if let Some(dst) = &f.dst {
            truncate_target(dst, len, target_path(&self.reqs[f.request])?)?;
            if fsynced_alone(len) {
                f.stage = Stage::Written;
                return Ok(());
            }
            self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).defer_sync();
        }
        // Nothing to fsync: no target, or a small one that the job's batch sync makes durable.
        f.stage = Stage::Syncing;
        f.synced = true;
        self.try_close(file)
    }
}

/// A path as the C string `openat` takes.
fn c_path(path: &Path) -> Result<CString, CopyError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CopyError::BadRequest { path: path.to_path_buf(), reason: "the path contains a NUL byte".into() })
}

/// The path a target was created at, from the C string its create was given.
pub(super) fn created_path(path: &CString) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()))
}
