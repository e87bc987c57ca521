//! One SM's journal on disk: its segments and their record index, and the segment file being appended to. The
//! group-commit writer thread that appends to it is in [`writer`](crate::writer).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use backset_format::journal::SEGMENT_HEADER_BYTES;
use backset_format::layout::segment_file_name;
use backset_format::{SegmentHeader, SegmentWriter};
use uuid::Uuid;

use crate::error::StoreError;

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
