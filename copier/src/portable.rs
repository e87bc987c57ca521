//! The portable backend: pread/pwrite on a few threads, with the same output as the io_uring backend.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::CopyError;
use crate::file::{create_target, fsynced_alone, io_len, open_source, truncate_target, Created, FileHasher};
use crate::job::{CopyRequest, FileReport, JobControl, Throttle};
use crate::limits::{BUFFER_BYTES, CANCEL_POLL_MS, HEAD_BYTES, PORTABLE_THREADS};
use crate::pool::{Buf, BufferPool};
use crate::stream::{Chunk, ChunkSink};
use crate::Options;

/// Runs a job on the calling thread and up to [`PORTABLE_THREADS`] scoped threads, one pool buffer each (the pool is
/// shared with the SM's other jobs: the job waits for a first buffer, cancellably, and runs on as many as it got).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    pool: &Arc<BufferPool>,
    owner: u64,
    reqs: &[CopyRequest],
    ctl: &JobControl,
    throttle: Option<&dyn Throttle>,
    sink: Option<&dyn ChunkSink>,
    opts: &Options,
    created: &Mutex<Created>,
) -> Result<Vec<FileReport>, CopyError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let reports = Mutex::new(vec![None; reqs.len()]);
    let first_error = Mutex::new(None);
    let threads = PORTABLE_THREADS.min(reqs.len()).max(1);
    let mut bufs = Vec::with_capacity(threads);
    while bufs.len() < threads {
        match pool.take(owner) {
            Some(buf) => bufs.push(buf),
            None if !bufs.is_empty() => break,
            None => bufs.push(wait_for_buffer(pool, owner, ctl, &stop)?),
        }
    }
    std::thread::scope(|s| {
        for buf in bufs {
            let mut buf = Some(buf);
            let (next, stop, reports, first_error) = (&next, &stop, &reports, &first_error);
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(req) = reqs.get(i) else { break };
                    let job = Job { pool, owner, ctl, throttle, sink, opts, created, stop };
                    match copy_one(&job, &mut buf, i, req) {
                        Ok(r) => reports.lock().unwrap()[i] = Some(r),
                        Err(e) => {
                            stop.store(true, Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
                if let Some(buf) = buf {
                    pool.give_back(buf);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(reports.into_inner().unwrap().into_iter().map(|r| r.expect("every request copied")).collect())
}

/// A free buffer of the pool for the job `owner`, waited for (another job, or this streaming job's consumer, holds
/// them all), checking for cancellation and for the job's stop every millisecond.
fn wait_for_buffer<'p>(
    pool: &'p BufferPool,
    owner: u64,
    ctl: &JobControl,
    stop: &AtomicBool,
) -> Result<Buf<'p>, CopyError> {
    loop {
        if let Some(buf) = pool.take(owner) {
            return Ok(buf);
        }
        if ctl.is_cancelled() || stop.load(Relaxed) {
            return Err(CopyError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What every file of a job shares.
struct Job<'j> {
    pool: &'j Arc<BufferPool>,
    owner: u64,
    ctl: &'j JobControl,
    throttle: Option<&'j dyn Throttle>,
    sink: Option<&'j dyn ChunkSink>,
    opts: &'j Options,
    created: &'j Mutex<Created>,
    stop: &'j AtomicBool,
}

/// Blocks until the throttle admits `bytes`, checking for cancellation at least every `CANCEL_POLL_MS`.
pub(crate) fn acquire(throttle: Option<&dyn Throttle>, bytes: u64, ctl: &JobControl) -> Result<(), CopyError> {
    let Some(t) = throttle else { return Ok(()) };
    loop {
        if ctl.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        match t.try_acquire(bytes) {
            Ok(()) => return Ok(()),
            Err(wait) => {
                let wait = wait.min(Duration::from_millis(CANCEL_POLL_MS));
                std::thread::sleep(wait);
                ctl.add_waited(wait);
            }
        }
    }
}

/// Copies (or reads, or streams) one request with the thread's buffer `slot`. A streaming job lends each buffer to
/// its consumer once hashed (leaving `slot` empty) and waits for a new one before its next read: a consumer that
/// holds every other buffer holds the job back.
fn copy_one<'p>(
    job: &Job<'p>,
    slot: &mut Option<Buf<'p>>,
    index: usize,
    req: &CopyRequest,
) -> Result<FileReport, CopyError> {
    let Job { pool, ctl, throttle, opts, created, stop, .. } = *job;
    let src = open_source(req, opts.direct)?;
    ctl.bytes_total.fetch_add(if req.len.is_none() { src.len } else { 0 }, Relaxed);
    let dst = match &req.target {
        Some(t) => Some((create_target(t, src.len, opts.direct, &mut created.lock().unwrap())?, t)),
        None => None,
    };
    let mut hasher = FileHasher::new(opts.hash);
    let grain = throttle.map_or(BUFFER_BYTES, |t| t.grain().min(BUFFER_BYTES as u64) as usize);
    let mut done = 0u64;
    let mut head = Vec::new();
    while done < src.len {
        // Another thread's failure stops this file too (the job reports that first error, not this one).
        if ctl.is_cancelled() || stop.load(Relaxed) {
            return Err(CopyError::Cancelled);
        }
        let want = (src.len - done).min(BUFFER_BYTES as u64) as usize;
        if slot.is_none() {
            *slot = Some(wait_for_buffer(pool, job.owner, ctl, stop)?);
        }
        let buf = slot.as_mut().expect("a buffer, taken just above");
        let mut filled = 0;
        while filled < want {
            // A throttled job reads the chunk in pieces (see `Throttle::grain`); only the last one is padded.
            let end = filled + (want - filled).min(grain);
            acquire(throttle, (end - filled) as u64, ctl)?;
            let bytes = pool.slice_mut(buf);
            while filled < end {
                let ask = if end == want { io_len(want, src.direct) - filled } else { end - filled };
                let n = src
                    .file
                    .read_at(&mut bytes[filled..filled + ask], src.offset + done + filled as u64)
                    .map_err(|e| CopyError::io("read", &req.source, e))?;
                if n == 0 {
                    return Err(CopyError::SourceShort {
                        path: req.source.clone(),
                        expected: src.offset + src.len,
                        found: src.offset + done + filled as u64,
                    });
                }
                let new_filled = (filled + n).min(end);
                ctl.bytes_read.fetch_add((new_filled - filled) as u64, Relaxed);
                filled = new_filled;
            }
        }
        let bytes = pool.slice_mut(buf);
        if done == 0 {
            head = bytes[..want.min(HEAD_BYTES)].to_vec();
        }
        hasher.chunk(&bytes[..want]);
        if let Some((dst, path)) = &dst {
            let write_len = io_len(want, dst.direct);
            bytes[want..write_len].fill(0);
            dst.file.write_all_at(&bytes[..write_len], done).map_err(|e| CopyError::io("write", path, e))?;
            let flush = {
                let mut created = created.lock().unwrap();
                created.wrote(write_len as u64, throttle.is_some_and(|t| t.is_limited()));
                created.start_flush()
            };
            if flush {
                dst.file.sync_data().map_err(|e| CopyError::io("fdatasync", path, e))?;
            }
        }
        if let Some(sink) = job.sink {
            // Hashed: the buffer goes to the consumer; the next read waits for another.
            let read = slot.take().expect("the buffer just read");
            sink.chunk(Chunk::lend(pool, read, index, done, want, src.len));
        }
        done += want as u64;
        ctl.bytes_done.fetch_add(want as u64, Relaxed);
    }
    if let Some((dst, path)) = &dst {
        truncate_target(dst, src.len, path)?;
        if fsynced_alone(src.len) {
            dst.file.sync_all().map_err(|e| CopyError::io("fsync", path, e))?;
        } else {
            created.lock().unwrap().defer_sync();
        }
    }
    ctl.files_done.fetch_add(1, Relaxed);
    let (hash, chunk_hashes) = hasher.finish();
    Ok(FileReport {
        request: index,
        bytes: src.len,
        hash,
        chunk_hashes,
        direct_source: src.direct,
        direct_target: dst.is_some_and(|(d, _)| d.direct),
        head,
    })
}
