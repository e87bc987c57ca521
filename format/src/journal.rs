//! Journal segments: a fixed header, then framed commit records appended one after another.
//!
//! ```text
//! segment:  | header (64) | record | record | ... | record | (torn tail?) |
//! record:   | txn id (8) | timestamp (8) | payload length (4) | reserved (4) | check (8) | payload ... |
//! ```
//! A reader iterates records from any record boundary. When a record does not parse, the reader looks for a valid
//! record further on: if there is none, the bad bytes are a **torn tail** (a write cut short by a crash) and the
//! journal ends cleanly before them; if there is one, the bad record is **corruption**, reported with the segment
//! number and byte offset. See `docs/FORMAT.md`, "Journal segments".

use std::io::Write;

use uuid::Uuid;

use crate::error::JournalError;
use crate::fixed::{array, check64, put, u16_at, u32_at, u64_at};
use crate::limits::{MAX_RECORD_PAYLOAD_BYTES, MAX_SEGMENT_BYTES, MAX_TORN_SEGMENT_BYTES};
use crate::meta::FORMAT_VERSION;

/// Magic of a journal segment (see `METADATA_MAGIC` for the rationale; `BKJ` names the family).
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89BKJ\r\n\x1a\n";

/// Offset of the magic.
pub const SEG_MAGIC_OFFSET: usize = 0;
/// Offset of the format version (u16).
pub const SEG_VERSION_OFFSET: usize = SEG_MAGIC_OFFSET + 8;
/// Offset of the reserved bytes (6, zero).
pub const SEG_RESERVED_OFFSET: usize = SEG_VERSION_OFFSET + 2;
/// Offset of the database id (16 bytes, UUID).
pub const SEG_DATABASE_ID_OFFSET: usize = SEG_RESERVED_OFFSET + 6;
/// Offset of the archive id (u64).
pub const SEG_ARCHIVE_ID_OFFSET: usize = SEG_DATABASE_ID_OFFSET + 16;
/// Offset of the segment number (u64).
pub const SEG_NUMBER_OFFSET: usize = SEG_ARCHIVE_ID_OFFSET + 8;
/// Offset of the first transaction id (u64).
pub const SEG_FIRST_TXN_OFFSET: usize = SEG_NUMBER_OFFSET + 8;
/// Offset of the header check (u64: BLAKE3 of bytes 0..56, first 8 bytes).
pub const SEG_CHECK_OFFSET: usize = SEG_FIRST_TXN_OFFSET + 8;
/// Size of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = SEG_CHECK_OFFSET + 8;
const _: () = assert!(SEGMENT_HEADER_BYTES == 64);
// A torn segment is at least its header.
const _: () = assert!(MAX_TORN_SEGMENT_BYTES >= SEGMENT_HEADER_BYTES as u64);

/// Offset of a record's transaction id (u64).
pub const REC_TXN_OFFSET: usize = 0;
/// Offset of a record's commit timestamp (u64, microseconds since the Unix epoch).
pub const REC_TIMESTAMP_OFFSET: usize = REC_TXN_OFFSET + 8;
/// Offset of a record's payload length (u32).
pub const REC_LEN_OFFSET: usize = REC_TIMESTAMP_OFFSET + 8;
/// Offset of a record's reserved field (u32, zero).
pub const REC_RESERVED_OFFSET: usize = REC_LEN_OFFSET + 4;
/// Offset of a record's check (u64: BLAKE3 of the record header bytes 0..24 and the payload, first 8 bytes).
pub const REC_CHECK_OFFSET: usize = REC_RESERVED_OFFSET + 4;
/// Size of a record header; the payload follows.
pub const RECORD_HEADER_BYTES: usize = REC_CHECK_OFFSET + 8;
const _: () = assert!(RECORD_HEADER_BYTES == 32);

/// The header of a journal segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Id of the database the journal belongs to.
    pub database_id: Uuid,
    /// Archive id of the archive that wrote it.
    pub archive_id: u64,
    /// Segment number, increasing by one per segment of an archive.
    pub segment: u64,
    /// Transaction id of the first record (every record's id is at least this); at least 1.
    pub first_txn: u64,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        put(&mut b, SEG_MAGIC_OFFSET, &SEGMENT_MAGIC);
        put(&mut b, SEG_VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, SEG_DATABASE_ID_OFFSET, self.database_id.as_bytes());
        put(&mut b, SEG_ARCHIVE_ID_OFFSET, &self.archive_id.to_le_bytes());
        put(&mut b, SEG_NUMBER_OFFSET, &self.segment.to_le_bytes());
        put(&mut b, SEG_FIRST_TXN_OFFSET, &self.first_txn.to_le_bytes());
        let check = check64(&[&b[..SEG_CHECK_OFFSET]]);
        put(&mut b, SEG_CHECK_OFFSET, &check.to_le_bytes());
        b
    }

    /// Parses and checks the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, JournalError> {
        let bad = |reason: String| JournalError::BadHeader { reason };
        let Some(b) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return Err(bad(format!("{} bytes, a header needs {SEGMENT_HEADER_BYTES}", bytes.len())));
        };
        let magic: [u8; 8] = array(b, SEG_MAGIC_OFFSET);
        if magic != SEGMENT_MAGIC {
            return Err(bad(format!("magic is {magic:02x?}")));
        }
        let check = u64_at(b, SEG_CHECK_OFFSET);
        if check != check64(&[&b[..SEG_CHECK_OFFSET]]) {
            return Err(bad("header check mismatch".into()));
        }
        let version = u16_at(b, SEG_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(bad(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        if b[SEG_RESERVED_OFFSET..SEG_DATABASE_ID_OFFSET].iter().any(|&x| x != 0) {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let first_txn = u64_at(b, SEG_FIRST_TXN_OFFSET);
        if first_txn == 0 {
            return Err(bad("first transaction id is 0 (ids start at 1)".into()));
        }
        Ok(Self {
            database_id: Uuid::from_bytes(array(b, SEG_DATABASE_ID_OFFSET)),
            archive_id: u64_at(b, SEG_ARCHIVE_ID_OFFSET),
            segment: u64_at(b, SEG_NUMBER_OFFSET),
            first_txn,
        })
    }
}

/// One commit record, borrowed from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Transaction id.
    pub txn_id: u64,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub timestamp_micros: u64,
    /// The SM's opaque payload.
    pub payload: &'a [u8],
    /// Byte offset of the record in its segment.
    pub offset: u64,
    /// The record's check as stored and verified: the first 8 bytes of the BLAKE3 of its header (transaction id,
    /// timestamp, payload length, reserved) and payload. Two records with the same transaction id and check hold
    /// the same timestamp and payload, up to a 64-bit collision.
    pub check: u64,
}

impl Record<'_> {
    /// Bytes the record takes in the segment.
    pub fn encoded_len(&self) -> u64 {
        (RECORD_HEADER_BYTES + self.payload.len()) as u64
    }
}

/// Appends one framed record to `out`. The caller keeps transaction ids increasing (`SegmentWriter` does).
pub fn encode_record(
    out: &mut Vec<u8>,
    txn_id: u64,
    timestamp_micros: u64,
    payload: &[u8],
) -> Result<(), JournalError> {
    if txn_id == 0 {
        return Err(JournalError::BadRecord { reason: "transaction id 0 (ids start at 1)".into() });
    }
    let len = u32::try_from(payload.len()).ok().filter(|&l| l <= MAX_RECORD_PAYLOAD_BYTES).ok_or_else(|| {
        JournalError::BadRecord {
            reason: format!(
                "payload of {} bytes exceeds the limit of {MAX_RECORD_PAYLOAD_BYTES} (transaction {txn_id})",
                payload.len()
            ),
        }
    })?;
    let mut h = [0u8; RECORD_HEADER_BYTES];
    put(&mut h, REC_TXN_OFFSET, &txn_id.to_le_bytes());
    put(&mut h, REC_TIMESTAMP_OFFSET, &timestamp_micros.to_le_bytes());
    put(&mut h, REC_LEN_OFFSET, &len.to_le_bytes());
    let check = check64(&[&h[..REC_CHECK_OFFSET], payload]);
    put(&mut h, REC_CHECK_OFFSET, &check.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(())
}

/// How the records of a slice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The last record ends exactly at the end of the bytes.
    Clean,
    /// `len` bytes from `offset` on are an incomplete or damaged last record with nothing valid after them: a
    /// write cut short by a crash. An archive's live journal ends cleanly there; in a backup set, whose manifest
    /// records exact sizes, it is a defect the caller reports.
    Torn {
        /// Offset of the first torn byte in the segment.
        offset: u64,
        /// Number of torn bytes.
        len: u64,
    },
}

/// Iterates the records of a segment, or of a slice of one that starts at a record boundary.
///
/// Yields `Ok(record)` for each valid record, then stops; after it stops, [`RecordReader::tail`] tells whether the
/// end was clean or torn. A corrupt record yields one `Err(JournalError::Corrupt)`, after which the iterator stops.
#[derive(Debug, Clone)]
pub struct RecordReader<'a> {
    bytes: &'a [u8],
    base_offset: u64,
    pos: usize,
    segment: u64,
    last_txn: u64,
    tail: Option<Tail>,
    failed: bool,
}

/// Parses a whole segment: checks its header and returns it with a reader over its records.
pub fn read_segment(bytes: &[u8]) -> Result<(SegmentHeader, RecordReader<'_>), JournalError> {
    if bytes.len() as u64 > MAX_SEGMENT_BYTES {
        return Err(JournalError::TooLarge { len: bytes.len() as u64, max: MAX_SEGMENT_BYTES });
    }
    let header = SegmentHeader::parse(bytes)?;
    let reader = RecordReader::new(
        header.segment,
        SEGMENT_HEADER_BYTES as u64,
        &bytes[SEGMENT_HEADER_BYTES..],
        header.first_txn - 1,
    );
    Ok((header, reader))
}

/// One segment file of an archive's journal, as every reader of an archive takes it: see [`read_archive_segment`].
#[derive(Debug)]
pub enum ArchiveSegment<'a> {
    /// A segment: its header, and a reader over its records.
    Segment(SegmentHeader, RecordReader<'a>),
    /// The last segment, cut short by a crash while it was being created: no header, no record, at most
    /// [`MAX_TORN_SEGMENT_BYTES`]. Nothing in it was acknowledged (a segment's header is durable before any of its
    /// records is acknowledged: FORMAT.md, writing invariant 2). Recovery removes it.
    TornCreation,
}

/// Reads one segment file of an archive's journal (`is_last`: it is the highest-numbered one) by the rule every
/// reader of an archive shares, the reference store's recovery and `archive check|dump|info` alike. A segment whose
/// header does not parse is a [torn creation](ArchiveSegment::TornCreation) when it is the last one, no longer than
/// [`MAX_TORN_SEGMENT_BYTES`], and no valid record follows where its header would end; anything else that does not
/// parse is damage, the error.
pub fn read_archive_segment(bytes: &[u8], is_last: bool) -> Result<ArchiveSegment<'_>, JournalError> {
    let reason = match read_segment(bytes) {
        Ok((header, reader)) => return Ok(ArchiveSegment::Segment(header, reader)),
        Err(JournalError::BadHeader { reason }) if is_last => reason,
        Err(e) => return Err(e),
    };
    let bad = |why: String| Err(JournalError::BadHeader { reason: format!("{reason}; {why}") });
    if bytes.len() as u64 > MAX_TORN_SEGMENT_BYTES {
        return bad(format!(
            "the segment is {} bytes, more than a crash while creating it can leave ({MAX_TORN_SEGMENT_BYTES}), so \
             its header was durable once",
            bytes.len()
        ));
    }
    let rest = bytes.get(SEGMENT_HEADER_BYTES..).unwrap_or(&[]);
    if RecordReader::new(0, SEGMENT_HEADER_BYTES as u64, rest, 0).next().is_some() {
        return bad("records follow it, so it was written whole once".into());
    }
    Ok(ArchiveSegment::TornCreation)
}

impl<'a> RecordReader<'a> {
    /// A reader over `bytes`, which start at byte `base_offset` of segment `segment` on a record boundary. Every
    /// record must have a transaction id greater than `after_txn` and than the record before it.
    pub fn new(segment: u64, base_offset: u64, bytes: &'a [u8], after_txn: u64) -> Self {
        Self { bytes, base_offset, pos: 0, segment, last_txn: after_txn, tail: None, failed: false }
    }

    /// How the records ended: `None` until the iterator has returned `None` without an error.
    pub fn tail(&self) -> Option<Tail> {
        self.tail
    }

    /// Offset in the segment just past the last valid record read so far.
    pub fn valid_end(&self) -> u64 {
        self.base_offset + self.pos as u64
    }

    /// Transaction id of the last valid record read so far (or `after_txn`).
    pub fn last_txn(&self) -> u64 {
        self.last_txn
    }

    /// The record at `pos`, if it is complete and its check holds, with its length.
    fn record_at(&self, pos: usize) -> Result<(Record<'a>, usize), String> {
        let rest = &self.bytes[pos..];
        if rest.len() < RECORD_HEADER_BYTES {
            return Err(format!("{} bytes left, a record header needs {RECORD_HEADER_BYTES}", rest.len()));
        }
        let txn_id = u64_at(rest, REC_TXN_OFFSET);
        if txn_id == 0 {
            return Err("transaction id 0".into());
        }
        if u32_at(rest, REC_RESERVED_OFFSET) != 0 {
            return Err("reserved field is not zero".into());
        }
        let len = u32_at(rest, REC_LEN_OFFSET);
        if len > MAX_RECORD_PAYLOAD_BYTES {
            return Err(format!("payload length {len} exceeds the limit of {MAX_RECORD_PAYLOAD_BYTES}"));
        }
        let total = RECORD_HEADER_BYTES + len as usize;
        if rest.len() < total {
            return Err(format!("payload length {len} runs past the end ({} bytes left)", rest.len()));
        }
        let payload = &rest[RECORD_HEADER_BYTES..total];
        if u64_at(rest, REC_CHECK_OFFSET) != check64(&[&rest[..REC_CHECK_OFFSET], payload]) {
            return Err(format!("record check mismatch (transaction {txn_id})"));
        }
        let record = Record {
            txn_id,
            timestamp_micros: u64_at(rest, REC_TIMESTAMP_OFFSET),
            payload,
            offset: self.base_offset + pos as u64,
            check: u64_at(rest, REC_CHECK_OFFSET),
        };
        Ok((record, total))
    }

    /// Whether a valid record with a later transaction id starts anywhere after `pos`.
    fn valid_record_after(&self, pos: usize) -> bool {
        (pos + 1..self.bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1))
            .filter(|&p| u64_at(self.bytes, p + REC_TXN_OFFSET) > self.last_txn)
            .any(|p| self.record_at(p).is_ok())
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Result<Record<'a>, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.tail.is_some() {
            return None;
        }
        if self.pos == self.bytes.len() {
            self.tail = Some(Tail::Clean);
            return None;
        }
        let offset = self.base_offset + self.pos as u64;
        let corrupt = |reason| JournalError::Corrupt { segment: self.segment, offset, reason };
        match self.record_at(self.pos) {
            Ok((record, _)) if record.txn_id <= self.last_txn => {
                self.failed = true;
                Some(Err(corrupt(format!(
                    "transaction id {} does not follow {} (ids must increase)",
                    record.txn_id, self.last_txn
                ))))
            }
            Ok((record, len)) => {
                self.pos += len;
                self.last_txn = record.txn_id;
                Some(Ok(record))
            }
            Err(reason) if self.valid_record_after(self.pos) => {
                self.failed = true;
                Some(Err(corrupt(reason)))
            }
            Err(_) => {
                self.tail = Some(Tail::Torn { offset, len: (self.bytes.len() - self.pos) as u64 });
                None
            }
        }
    }
}

/// Appends records to a segment through any `Write`. Durability is the caller's: flush and fsync the inner
/// writer (`get_mut`) when the commit protocol needs it.
#[derive(Debug)]
pub struct SegmentWriter<W: Write> {
    inner: W,
    header: SegmentHeader,
    last_txn: u64,
    len: u64,
    buf: Vec<u8>,
}

impl<W: Write> SegmentWriter<W> {
    /// Writes `header` to a new, empty segment.
    pub fn create(mut inner: W, header: SegmentHeader) -> std::io::Result<Self> {
        if header.first_txn == 0 {
            return Err(invalid(JournalError::BadRecord { reason: "first transaction id 0".into() }));
        }
        inner.write_all(&header.encode())?;
        Ok(Self { inner, header, last_txn: header.first_txn - 1, len: SEGMENT_HEADER_BYTES as u64, buf: Vec::new() })
    }

    /// Appends one record and returns its offset. Refuses a transaction id not above the last one, an id below the
    /// header's first, a payload over `MAX_RECORD_PAYLOAD_BYTES`, or growth past `MAX_SEGMENT_BYTES`.
    pub fn append(&mut self, txn_id: u64, timestamp_micros: u64, payload: &[u8]) -> std::io::Result<u64> {
        if txn_id <= self.last_txn {
            return Err(invalid(JournalError::BadRecord {
                reason: format!("transaction id {txn_id} does not follow {}", self.last_txn),
            }));
        }
        self.buf.clear();
        encode_record(&mut self.buf, txn_id, timestamp_micros, payload).map_err(invalid)?;
        if self.len + self.buf.len() as u64 > MAX_SEGMENT_BYTES {
            return Err(invalid(JournalError::BadRecord {
                reason: format!("segment {} would pass {MAX_SEGMENT_BYTES} bytes", self.header.segment),
            }));
        }
        self.inner.write_all(&self.buf)?;
        let offset = self.len;
        self.len += self.buf.len() as u64;
        self.last_txn = txn_id;
        Ok(offset)
    }

    /// The segment's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a segment holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Transaction id of the last record appended (`first_txn - 1` when none).
    pub fn last_txn(&self) -> u64 {
        self.last_txn
    }

    /// The inner writer, to flush or fsync it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Gives the inner writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn invalid(e: JournalError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
}
