//! One SM's journal: the segments on disk and their record index, and the group-commit writer thread.
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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backset_format::journal::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use backset_format::layout::segment_file_name;
use backset_format::{SegmentHeader, SegmentWriter};
use uuid::Uuid;

use crate::limits::{
    JOURNAL_RETRY_ATTEMPTS, JOURNAL_RETRY_FIRST_DELAY, JOURNAL_RETRY_MAX_DELAY, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::store::error::StoreError;
use crate::store::lock;
use crate::store::sm::{Pending, SmArchive, Stop};

/// A segment on disk, with the index of its durable records.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Segment number.
    pub number: u64,
    /// Its file.
    pub path: PathBuf,
    /// First txn id in its header.
    pub header_first_txn: u64,
    /// `(txn id, offset)` of every durable record, in order. 16 bytes per record.
    pub records: Vec<(u64, u64)>,
    /// Bytes up to the end of the last durable record (the header's 64 when it has none).
    pub len: u64,
}

impl Segment {
    /// Transaction id of its last durable record.
    pub fn last_txn(&self) -> Option<u64> {
        self.records.last().map(|r| r.0)
    }
}

/// The segments of one SM.
#[derive(Debug)]
pub(crate) struct JournalState {
    /// Every segment on disk, by number.
    pub segments: BTreeMap<u64, Segment>,
    /// The segment being appended to; never recycled.
    pub current: u64,
    /// Records below this transaction id may have been recycled (or were never in this journal).
    pub recycled_below: u64,
}

/// The segment the writer appends to.
pub(crate) struct SegmentFile {
    pub number: u64,
    pub path: PathBuf,
    pub writer: SegmentWriter<BufWriter<File>>,
}

impl SegmentFile {
    /// Creates segment `number` in `journal_dir` (it must not exist) and writes its header into the buffer. Not
    /// durable until [`SegmentFile::sync`] with `all = true` and a fsync of the directory.
    pub fn create(
        journal_dir: &Path,
        database_id: Uuid,
        archive_id: u64,
        number: u64,
        first_txn: u64,
    ) -> Result<Self, StoreError> {
        let path = journal_dir.join(segment_file_name(number));
        let file =
            OpenOptions::new().write(true).create_new(true).open(&path).map_err(StoreError::io("create", &path))?;
        let header = SegmentHeader { database_id, archive_id, segment: number, first_txn };
        match SegmentWriter::create(BufWriter::with_capacity(1 << 20, file), header) {
            Ok(writer) => Ok(Self { number, path, writer }),
            Err(e) => {
                // Nothing of it is durable or indexed: removed, so that a retry can create it again.
                let _ = backset_format::dirfd::remove_path(&path);
                Err(StoreError::Io { op: "write", path, source: e })
            }
        }
    }

    /// Flushes the buffer and fdatasyncs the file (fsyncs it, metadata included, when `all`).
    pub fn sync(&mut self, all: bool) -> Result<(), StoreError> {
        self.writer.get_mut().flush().map_err(StoreError::io("write", &self.path))?;
        let file = self.writer.get_mut().get_ref();
        if all { file.sync_all() } else { file.sync_data() }.map_err(StoreError::io("fsync", &self.path))
    }

    /// The index entry of the new segment.
    pub fn segment(&self) -> Segment {
        Segment {
            number: self.number,
            path: self.path.clone(),
            header_first_txn: self.writer.header().first_txn,
            records: Vec::new(),
            len: SEGMENT_HEADER_BYTES as u64,
        }
    }
}

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
                crate::hotcopy::fault::journal_create().map_err(StoreError::io("create", sm.journal_dir()))?;
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
