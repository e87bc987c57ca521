//! Reading a backup set's data files back, verified against their manifest entries: a journal slice as it streams
//! (each 1 MiB chunk is hashed and compared with the manifest's chunk hash before any record in it is used, and the
//! whole file's BLAKE3 is compared at the end), an atom file's header; and the words restore and check use for a
//! file that differs from its manifest.
//!
//! Memory: one chunk plus at most one record (the format's `MAX_RECORD_PAYLOAD_BYTES` plus its header).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use backset_format::atom::{AtomHeader, ATOM_HEADER_BYTES};
use backset_format::dirfd::EntryKind;
use backset_format::fsio::open_regular;
use backset_format::journal::{RECORD_HEADER_BYTES, REC_LEN_OFFSET, SEGMENT_HEADER_BYTES};
use backset_format::limits::{CHUNK_BYTES, MAX_RECORD_PAYLOAD_BYTES};
use backset_format::manifest::ContentHasher;
use backset_format::{FileEntry, JournalError, ReadError, Record, RecordReader, SegmentHeader};

use super::storage::SetStorage;

/// A journal slice of a backup set does not match its manifest entry or does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// The operating system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data file is missing.
    #[error("{path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The path is a link, a directory, a FIFO or a device.
    #[error(
        "{path} is not a regular file (a symbolic link, a directory, a FIFO or a device; backup sets and archives \
         hold regular files only)"
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file's size differs from the manifest's.
    #[error("{path} {}", size_mismatch(*.found, *.expected))]
    Size {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size found.
        found: u64,
    },
    /// A chunk does not match its hash.
    #[error("{path}: {}", chunk_mismatch(*.index, *.start, *.end))]
    Chunk {
        /// The file.
        path: PathBuf,
        /// Chunk index.
        index: usize,
        /// First byte of the chunk.
        start: u64,
        /// End of the chunk.
        end: u64,
    },
    /// The whole file does not match its hash.
    #[error("{path}: {}", FILE_MISMATCH)]
    Hash {
        /// The file.
        path: PathBuf,
    },
    /// The slice starts with a segment header that does not parse or names another segment.
    #[error("{path}: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record does not parse, is out of order, or the slice ends inside a record.
    #[error("{path}: at byte {offset} of source segment {segment}: {reason}")]
    Framing {
        /// The file.
        path: PathBuf,
        /// Segment number.
        segment: u64,
        /// Offset in the source segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Cancelled through the job's control.
    #[error("cancelled")]
    Cancelled,
}

impl SliceError {
    /// Whether the file's bytes differ from what the manifest records (as opposed to a framing problem of bytes
    /// that match it, or an I/O error).
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Size { .. } | Self::Chunk { .. } | Self::Hash { .. })
    }
}

/// What one slice held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SliceSummary {
    /// Its segment header, for a slice at offset 0.
    pub header: Option<SegmentHeader>,
    /// Records read (all of them, unless the callback stopped early).
    pub records: u64,
    /// Transaction id of the first record read.
    pub first_txn: Option<u64>,
    /// Transaction id of the last record read.
    pub last_txn: Option<u64>,
    /// The callback stopped the reading before the end (the rest of the file was not read or verified).
    pub stopped: bool,
}

/// Opens a data file of a backup set (or an archive) for reading, and returns it with its length: a regular file
/// only, never through a symbolic link, never blocking on a FIFO ([`open_regular`], the one opener of every reader).
pub(crate) fn open_data_file(path: &Path) -> Result<(File, u64), SliceError> {
    open_regular(path).map_err(|e| slice_open_error(e, path))
}

/// What a data file that could not be opened is, as a [`SliceError`].
fn slice_open_error(e: ReadError, path: &Path) -> SliceError {
    match e {
        ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            SliceError::Missing { path: path.to_path_buf() }
        }
        ReadError::Io { op, source, .. } => SliceError::Io { op, path: path.to_path_buf(), source },
        _ => SliceError::NotRegular { path: path.to_path_buf() },
    }
}

/// Reads the journal slice `entry` at `path` once, verifying each chunk against the manifest before using the
/// records in it (and the whole slice's hash at its end), and calls `f` for every record in order. Records must have
/// transaction ids above `after_txn` and increasing; the slice must end exactly after a record. `f` returns
/// `Ok(false)` to stop early. A slice at offset 0 starts with a segment header, which must name segment `entry.id`.
pub(crate) fn for_each_record<E: From<SliceError>>(
    storage: &dyn SetStorage,
    rel: &Path,
    entry: &FileEntry,
    after_txn: u64,
    cancel: Option<&AtomicBool>,
    mut f: impl FnMut(&Record<'_>) -> Result<bool, E>,
) -> Result<SliceSummary, E> {
    let path = &storage.show(rel);
    // The set's `journal/` directory must not be a link: the path would lead out of the set through it. (`data/`
    // and the element directory are examined by the callers.)
    if let Some(dir) = rel.parent() {
        if !matches!(storage.kind(dir), Ok(Some(EntryKind::Dir(_)))) {
            return Err(SliceError::NotRegular { path: storage.show(dir) }.into());
        }
    }
    let (mut file, len) = storage.open(rel).map_err(|e| slice_open_error(e, path))?;
    if len != entry.size {
        return Err(SliceError::Size { path: path.to_path_buf(), expected: entry.size, found: len }.into());
    }
    let mut summary = SliceSummary::default();
    let mut content = ContentHasher::new();
    let mut chunk = vec![0u8; entry.size.min(CHUNK_BYTES) as usize];
    // Verified bytes not used yet; `pending[0]` is at file offset `pending_start`.
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_start = 0u64;
    let mut consumed = 0usize;
    let mut last = after_txn;
    let need_header = entry.offset == 0;
    let framing = |offset: u64, reason: String| SliceError::Framing {
        path: path.to_path_buf(),
        segment: entry.id,
        offset,
        reason,
    };
    for (index, expected) in entry.chunk_hashes.iter().enumerate() {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(SliceError::Cancelled.into());
        }
        let start = index as u64 * CHUNK_BYTES;
        let n = (entry.size - start).min(CHUNK_BYTES) as usize;
        file.read_exact(&mut chunk[..n]).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                SliceError::Size { path: path.to_path_buf(), expected: entry.size, found: start }
            } else {
                SliceError::Io { op: "read", path: path.to_path_buf(), source }
            }
        })?;
        if &content.chunk(&chunk[..n]) != expected {
            return Err(SliceError::Chunk { path: path.to_path_buf(), index, start, end: start + n as u64 }.into());
        }
        pending.drain(..consumed);
        pending_start += consumed as u64;
        consumed = 0;
        pending.extend_from_slice(&chunk[..n]);
        if need_header && summary.header.is_none() {
            if pending.len() < SEGMENT_HEADER_BYTES {
                continue;
            }
            let h = SegmentHeader::parse(&pending)
                .map_err(|e: JournalError| SliceError::Header { path: path.to_path_buf(), reason: e.to_string() })?;
            if h.segment != entry.id {
                return Err(SliceError::Header {
                    path: path.to_path_buf(),
                    reason: format!("the header names segment {}, the manifest segment {}", h.segment, entry.id),
                }
                .into());
            }
            last = last.max(h.first_txn - 1);
            summary.header = Some(h);
            consumed = SEGMENT_HEADER_BYTES;
        }
        loop {
            let rest = &pending[consumed..];
            if rest.len() < RECORD_HEADER_BYTES {
                break;
            }
            let offset = entry.offset + pending_start + consumed as u64;
            let payload_len = u32::from_le_bytes(rest[REC_LEN_OFFSET..REC_LEN_OFFSET + 4].try_into().expect("4 bytes"));
            if payload_len > MAX_RECORD_PAYLOAD_BYTES {
                return Err(framing(
                    offset,
                    format!("payload length {payload_len} exceeds the limit of {MAX_RECORD_PAYLOAD_BYTES}"),
                )
                .into());
            }
            let total = RECORD_HEADER_BYTES + payload_len as usize;
            if rest.len() < total {
                break;
            }
            let mut reader = RecordReader::new(entry.id, offset, &rest[..total], last);
            let record = match reader.next() {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(framing(offset, e.to_string()).into()),
                None => {
                    return Err(framing(
                        offset,
                        "the record does not parse (bad check, reserved field or transaction id)".into(),
                    )
                    .into())
                }
            };
            summary.records += 1;
            summary.first_txn.get_or_insert(record.txn_id);
            summary.last_txn = Some(record.txn_id);
            last = record.txn_id;
            consumed += total;
            if !f(&record)? {
                summary.stopped = true;
                return Ok(summary);
            }
        }
    }
    if content.finalize() != entry.hash {
        return Err(SliceError::Hash { path: path.to_path_buf() }.into());
    }
    if need_header && summary.header.is_none() {
        return Err(SliceError::Header {
            path: path.to_path_buf(),
            reason: format!("{} bytes, shorter than a segment header ({SEGMENT_HEADER_BYTES})", entry.size),
        }
        .into());
    }
    if consumed < pending.len() {
        let offset = entry.offset + pending_start + consumed as u64;
        return Err(framing(
            offset,
            format!(
                "the slice ends {} bytes into an incomplete record (a torn tail); a manifest records whole records",
                pending.len() - consumed
            ),
        )
        .into());
    }
    Ok(summary)
}

/// What differs between a manifest entry and what was read, if anything.
pub(crate) fn mismatch(entry: &FileEntry, bytes: u64, hash: &[u8; 32], chunks: &[[u8; 32]]) -> Option<String> {
    if bytes != entry.size {
        return Some(format!("{bytes} bytes were read, the manifest says {} (truncated or extended)", entry.size));
    }
    if let Some(i) = entry.chunk_hashes.iter().zip(chunks).position(|(a, b)| a != b) {
        let start = i as u64 * backset_format::limits::CHUNK_BYTES;
        let end = (start + backset_format::limits::CHUNK_BYTES).min(entry.size);
        return Some(chunk_mismatch(i, start, end));
    }
    if chunks.len() != entry.chunk_hashes.len() || hash != &entry.hash {
        return Some(FILE_MISMATCH.into());
    }
    None
}

/// What a data file of `found` bytes whose manifest says `expected` is said to be.
pub(crate) fn size_mismatch(found: u64, expected: u64) -> String {
    format!("is {found} bytes, the manifest says {expected} (truncated or extended)")
}

/// What a data file's chunk `index` (bytes `start..end`) that does not match its manifest hash is said to be.
pub(crate) fn chunk_mismatch(index: usize, start: u64, end: u64) -> String {
    format!("bytes {start}..{end} (chunk {index}) do not match the manifest's chunk hash (damaged)")
}

/// What a data file whose whole-file hash does not match its manifest is said to be.
pub(crate) const FILE_MISMATCH: &str = "the file's BLAKE3 does not match the manifest (damaged)";

/// Parses an atom file's header from `head`, the first bytes the copier read of it ([`FileReport::head`], or
/// [`keep_head`] of a streamed file): no second read of the file.
///
/// [`FileReport::head`]: backset_copier::FileReport::head
pub(crate) fn parse_atom_head(head: &[u8]) -> Result<AtomHeader, String> {
    if head.len() < ATOM_HEADER_BYTES {
        return Err(format!("reading its {ATOM_HEADER_BYTES}-byte header: failed to fill whole buffer"));
    }
    AtomHeader::parse(head).map_err(|e| e.to_string())
}

/// Appends to `head` the bytes of `chunk` it still lacks to hold a file's first
/// [`HEAD_BYTES`](backset_copier::limits::HEAD_BYTES): what the copier's report gives, for a file streamed chunk by
/// chunk ([`hash_stream`]'s sink).
pub(crate) fn keep_head(head: &mut Vec<u8>, chunk: &[u8]) {
    let want = backset_copier::limits::HEAD_BYTES.saturating_sub(head.len()).min(chunk.len());
    head.extend_from_slice(&chunk[..want]);
}

/// Where [`hash_stream`] hands each chunk.
pub(crate) type ChunkSink<'a> = &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>;

/// Reads `reader` to its end in [`CHUNK_BYTES`] chunks, hashing each as the manifest does ([`ContentHasher`]) and
/// handing it to `sink` when there is one (a restore's or an upload's target). Gives the bytes read, the whole
/// file's BLAKE3 and the chunk hashes, for [`mismatch`] against a manifest entry. Memory: one chunk.
pub(crate) fn hash_stream(
    mut reader: impl Read,
    mut sink: Option<ChunkSink<'_>>,
) -> std::io::Result<(u64, [u8; 32], Vec<[u8; 32]>)> {
    let mut hasher = ContentHasher::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        chunks.push(hasher.chunk(&buf[..n]));
        if let Some(sink) = sink.as_mut() {
            sink(&buf[..n])?;
        }
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok((total, hasher.finalize(), chunks))
}
