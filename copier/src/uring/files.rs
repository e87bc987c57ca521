//! The files a job has open: each one's stage and what it holds (descriptors, buffers, hashes), by slot. What a
//! completion does to a file is `file_state.rs`; the SQE built from a file's descriptors and buffers is `ops.rs`.

use std::collections::BTreeMap;
use std::fs::File;

use super::bug;
use crate::error::CopyError;
use crate::file::{Source, TargetFile};
use crate::job::FileReport;
use crate::pool::Buf;

/// Where a file is in its life; `setup` counts the operations of the stage still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
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

/// A file being copied (or read), from the open of its source to the close of both descriptors.
pub(super) struct OpenFile<'a> {
    pub(super) request: usize,
    pub(super) stage: Stage,
    /// Operations of the current setup or closing stage in flight.
    pub(super) setup: usize,
    /// Opened descriptors, until `statx` made them a `Source` / `TargetFile`.
    pub(super) src_file: Option<File>,
    pub(super) dst_file: Option<File>,
    pub(super) src_stat: Option<libc::statx>,
    pub(super) dst_stat: Option<libc::statx>,
    /// Whether the target is written with direct I/O, when its directory's verdict was known at its creation (it
    /// was then created with O_DIRECT or without, and is not stated): see `Run::target_dirs`.
    pub(super) dst_known: Option<bool>,
    pub(super) src: Option<Source>,
    /// `None` when the request only reads and hashes.
    pub(super) dst: Option<TargetFile>,
    /// Whether the hashing thread was asked for the file's hashes.
    pub(super) finish_sent: bool,
    /// The file's BLAKE3 and chunk hashes, once the hashing thread answered.
    pub(super) hashes: Option<([u8; 32], Vec<[u8; 32]>)>,
    /// The target is durable (or there is none): the file closes as soon as its hashes are in.
    pub(super) synced: bool,
    /// Next byte (relative to the copy's start) to read.
    pub(super) next_read: u64,
    /// Bytes hashed and handed to writes, in order.
    pub(super) hashed: u64,
    /// Reads complete but not yet hashed, by relative offset: (buffer, data length).
    pub(super) ready: BTreeMap<u64, (Buf<'a>, usize)>,
    /// Chunks being read, by relative offset: their buffer and how far their pieces got.
    pub(super) reading: BTreeMap<u64, Reading<'a>>,
    /// The chunk whose pieces the throttle is still admitting (at most one per file, the last in `reading`).
    pub(super) admitting: Option<u64>,
    /// Writes of the target in flight, and its write-back flush (which must complete before the target is closed).
    pub(super) writes_in_flight: usize,
    /// The first bytes read (`limits::HEAD_BYTES` at most), copied from the first chunk's buffer, for the report.
    pub(super) head: Vec<u8>,
    /// Set once the target is durable (or, reading only, the last byte hashed), while the descriptors close.
    pub(super) report: Option<FileReport>,
}

/// A chunk being read. Unthrottled, one read fills it; a throttled job reads it in pieces of at most
/// `Throttle::grain` bytes, each issued as soon as the throttle admits it, so a piece stalled in the device does not
/// hold up the next ones (the job keeps to its rate through a flush).
pub(super) struct Reading<'a> {
    pub(super) buf: Buf<'a>,
    /// Bytes of the chunk (the last one of a file may be shorter than a buffer).
    pub(super) want: usize,
    /// Bytes admitted by the throttle and queued as pieces.
    pub(super) admitted: usize,
    /// Bytes of pieces that completed.
    pub(super) done: usize,
}

impl OpenFile<'_> {
    pub(super) fn new(request: usize) -> Self {
        Self {
            request,
            stage: Stage::Opening,
            setup: 0,
            src_file: None,
            dst_file: None,
            src_stat: None,
            dst_stat: None,
            dst_known: None,
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
            head: Vec::new(),
            report: None,
        }
    }

    /// The source, once set up.
    pub(super) fn src(&self) -> Result<&Source, CopyError> {
        self.src.as_ref().ok_or_else(|| bug(format!("request {} used its source before setting it up", self.request)))
    }

    /// The target, once set up.
    pub(super) fn dst(&self) -> Result<&TargetFile, CopyError> {
        self.dst.as_ref().ok_or_else(|| bug(format!("request {} used a target it has not set up", self.request)))
    }
}

/// The files a job has open, by slot (a slot is reused once its file closed).
#[derive(Default)]
pub(super) struct Files<'a>(Vec<Option<OpenFile<'a>>>);

impl<'a> Files<'a> {
    pub(super) fn get(&self, slot: usize) -> Result<&OpenFile<'a>, CopyError> {
        self.0.get(slot).and_then(Option::as_ref).ok_or_else(|| no_file(slot))
    }

    pub(super) fn get_mut(&mut self, slot: usize) -> Result<&mut OpenFile<'a>, CopyError> {
        self.0.get_mut(slot).and_then(Option::as_mut).ok_or_else(|| no_file(slot))
    }

    /// Puts `file` in a free slot and returns the slot.
    pub(super) fn insert(&mut self, file: OpenFile<'a>) -> usize {
        match self.0.iter().position(Option::is_none) {
            Some(slot) => {
                self.0[slot] = Some(file);
                slot
            }
            None => {
                self.0.push(Some(file));
                self.0.len() - 1
            }
        }
    }

    pub(super) fn remove(&mut self, slot: usize) -> Result<OpenFile<'a>, CopyError> {
        self.0.get_mut(slot).and_then(Option::take).ok_or_else(|| no_file(slot))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &OpenFile<'a>> {
        self.0.iter().flatten()
    }

    /// Slots of the files in `stage`.
    pub(super) fn slots_in(&self, stage: Stage) -> Vec<usize> {
        (0..self.0.len()).filter(|&s| self.0[s].as_ref().is_some_and(|f| f.stage == stage)).collect()
    }

    /// The slot of the file copying request `request`.
    pub(super) fn slot_of(&self, request: usize) -> Option<usize> {
        self.0.iter().position(|f| f.as_ref().is_some_and(|f| f.request == request))
    }

    /// Takes every file out (the job is over and nothing is in flight).
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = OpenFile<'a>> + '_ {
        self.0.iter_mut().filter_map(Option::take)
    }
}

fn no_file(slot: usize) -> CopyError {
    bug(format!("no open file in slot {slot}"))
}
