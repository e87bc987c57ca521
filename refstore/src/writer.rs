//! One SM's group-commit journal writer thread.
//!
//! The writer thread takes every queued record (up to `MAX_BATCH_RECORDS` / `MAX_BATCH_BYTES`), appends them with
//! one buffered write, makes them durable with one fdatasync, publishes them in the index, applies them to the
//! in-memory atoms, and only then wakes the committers. A segment rolls over when it has reached the configured size:
//! the old one is fdatasynced first; the new one's header goes out with the batch's records and the whole file is
//! fsynced, then the journal directory, before any of its records is acknowledged (FORMAT.md, ordering invariants 1
//! and 2).
//!
//! Creating the next segment and opening the journal directory are retried ([`JOURNAL_RETRY_ATTEMPTS`], with a
//! growing pause): they leave nothing half-done when they fail, and what fails them (EMFILE, ENOMEM) often passes.
//! A write or fsync that fails, or a step that still fails after its retries, stops the SM: it takes no more
//! records, its committers get [`StoreError::WriterFailed`], an error is logged, and
//! [`SmArchive::writer_failure`] says why (the server's process list shows it).

use std::fs::File;
use std::sync::Arc;

use backset_format::journal::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

use crate::error::StoreError;
use crate::journal::SegmentFile;
use crate::limits::{
    JOURNAL_RETRY_ATTEMPTS, JOURNAL_RETRY_FIRST_DELAY, JOURNAL_RETRY_MAX_DELAY, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::sm::{Pending, SmArchive, Stop};
use crate::sync::lock;

/// The journal writer thread of `sm`; returns when the SM stops or fails.
pub(crate) fn writer_loop(sm: Arc<SmArchive>, mut seg: SegmentFile) {
    loop {
        let batch: Vec<Pending> = {
            let mut q = lock(&sm.queue);
            loop {
                if q.stop == Stop::Abort {
                    return;
                }
                if !q.pending.is_empty() {
                    break;
                }
                if q.stop == Stop::Drain {
                    return;
                }
                q = sm.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            let mut bytes = 0u64;
            let mut n = 0;
            for p in &q.pending {
                if n > 0 && (n == MAX_BATCH_RECORDS || bytes + p.payload.len() as u64 > MAX_BATCH_BYTES) {
                    break;
                }
                bytes += (RECORD_HEADER_BYTES + p.payload.len()) as u64;
                n += 1;
            }
            let batch: Vec<Pending> = q.pending.drain(..n).collect();
            q.in_flight = Some(batch[0].txn);
            batch
        };
        let last = batch.last().expect("non-empty batch").txn;
        let result = write_batch(&sm, &mut seg, &batch).and_then(|()| {
            let mut d = lock(&sm.data);
            batch.iter().try_for_each(|p| d.apply(p.txn, &p.ops).map(drop))
        });
        let mut q = lock(&sm.queue);
        match result {
            Ok(()) => {
                q.done_upto = last;
                q.in_flight = None;
                sm.done.notify_all();
            }
            Err(e) => {
                tracing::error!(
                    archive_id = sm.archive_id(),
                    error = %e,
                    "journal writer failed; the SM stops and takes no more commits: fix the cause and restart"
                );
                q.failed = Some(e.to_string());
                sm.done.notify_all();
                return;
            }
        }
    }
}

/// Appends `batch`, rolling over as needed, makes it durable and publishes it in the journal index.
fn write_batch(sm: &SmArchive, seg: &mut SegmentFile, batch: &[Pending]) -> Result<(), StoreError> {
    let mut created = Vec::new();
    let mut entries = Vec::with_capacity(batch.len());
    for p in batch {
        if seg.writer.len() >= sm.segment_bytes && seg.writer.len() > SEGMENT_HEADER_BYTES as u64 {
            seg.sync(false)?;
            let next = retrying(sm, "create the next journal segment", || {
                crate::fault::journal_create().map_err(StoreError::io("create", sm.journal_dir()))?;
                SegmentFile::create(sm.journal_dir(), sm.database_id(), sm.archive_id(), seg.number + 1, p.txn)
            })?;
            *seg = next;
            created.push(seg.segment());
        }
        let offset =
            seg.writer.append(p.txn, p.timestamp_micros, &p.payload).map_err(StoreError::io("append", &seg.path))?;
        entries.push((seg.number, p.txn, offset, offset + (RECORD_HEADER_BYTES + p.payload.len()) as u64));
    }
    if created.is_empty() {
        seg.sync(false)?;
    } else {
        seg.sync(true)?;
        let dir = sm.journal_dir();
        let handle =
            retrying(sm, "open the journal directory", || File::open(dir).map_err(StoreError::io("open", dir)))?;
        handle.sync_all().map_err(StoreError::io("fsync directory", dir))?;
    }
    let mut j = lock(&sm.journal);
    for s in created {
        j.segments.insert(s.number, s);
    }
    j.current = seg.number;
    for (number, txn, offset, end) in entries {
        let s = j.segments.get_mut(&number).expect("segment registered");
        s.records.push((txn, offset));
        s.len = end;
    }
    Ok(())
}

/// Runs `step` (one that leaves nothing half-done when it fails) up to [`JOURNAL_RETRY_ATTEMPTS`] times, pausing
/// [`JOURNAL_RETRY_FIRST_DELAY`] and then twice as long each time (at most [`JOURNAL_RETRY_MAX_DELAY`]); logs a
/// warning for each failure it retries and returns the last error.
fn retrying<T>(sm: &SmArchive, what: &str, mut step: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut delay = JOURNAL_RETRY_FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match step() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < JOURNAL_RETRY_ATTEMPTS => {
                tracing::warn!(
                    archive_id = sm.archive_id(),
                    error = %e,
                    "journal writer: cannot {what} (attempt {attempt} of {JOURNAL_RETRY_ATTEMPTS}); trying again in \
                     {delay:?}"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(JOURNAL_RETRY_MAX_DELAY);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
