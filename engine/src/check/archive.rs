//! `archive check`: an archive directory's atom files (header, name, body hash) and journal segments (header,
//! numbering, record framing, increasing transaction ids, torn tail).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::fsio::{read_regular, TMP_FILE_PREFIX};
use backset_format::journal::SEGMENT_MAGIC;
use backset_format::layout::{parse_id_name, ATOMS_DIR, JOURNAL_DIR};
use backset_format::limits::{CHUNK_BYTES, MAX_SEGMENT_BYTES};
use backset_format::manifest::ContentHasher;
use backset_format::{
    read_archive_segment, read_segment, ArchiveSegment, AtomHeader, FileEntry, ReadError, RecordReader, Tail,
};
use uuid::Uuid;

use super::{CheckError, Defect, DefectKind, UNREADABLE};
use crate::lock::{DirKind, DirLock};
use crate::set::data::{chunk_mismatch, open_data_file, size_mismatch, SliceError, FILE_MISMATCH};

/// A torn tail at the end of the last segment: normal after a crash (the SM truncates it when it opens). At offset 0
/// it is the whole last segment, cut short while it was being created (`backset_format::read_archive_segment`; the SM
/// removes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Segment number.
    pub segment: u64,
    /// Offset of the first torn byte.
    pub offset: u64,
    /// Torn bytes.
    pub len: u64,
}

/// What [`check_archive`] found.
#[derive(Debug, Clone)]
pub struct ArchiveCheckReport {
    /// The archive directory.
    pub dir: PathBuf,
    /// Every defect found.
    pub defects: Vec<Defect>,
    /// Atom files checked.
    pub atoms: u64,
    /// Journal segments checked.
    pub segments: u64,
    /// Journal records read.
    pub records: u64,
    /// Highest transaction id: of the last record, or of the highest atom LSN.
    pub last_txn: u64,
    /// Database id of the segments (the first segment's).
    pub database_id: Option<Uuid>,
    /// A torn tail at the end of the last segment (not a defect: a crash leaves one, and opening the archive
    /// truncates it). A torn tail in any other segment is a defect.
    pub torn_tail: Option<TornTail>,
}

impl ArchiveCheckReport {
    /// No defect found.
    pub fn is_ok(&self) -> bool {
        self.defects.is_empty()
    }

    fn defect(&mut self, file: PathBuf, kind: DefectKind, what: String) {
        self.defects.push(Defect { element: None, file: Some(file), kind, what });
    }
}

/// Checks the archive directory `dir` (`atoms/` and `journal/`, FORMAT.md's archive layout): every atom file's
/// header, that it is named for its atom, its length and its body's BLAKE3; every journal segment's header (its
/// number matches its name, one database throughout), every record's framing and check, transaction ids increasing
/// within and across segments; a torn tail is reported as such. What is damage is decided as the reference store's
/// recovery (and so `archive dump|info`) decides it: every file a regular file (never a link, a FIFO or a device),
/// bounded by the format's limits, and the last segment by `backset_format::read_archive_segment`. Holds one segment in memory at a time (at most the
/// format's `MAX_SEGMENT_BYTES`) and one 1 MiB buffer for atoms. An archive a running SM holds is refused
/// ([`CheckError::Locked`], see [`crate::lock`]).
pub fn check_archive(dir: impl AsRef<Path>) -> Result<ArchiveCheckReport, CheckError> {
    let dir = dir.as_ref();
    check_archive_with_journal(dir, dir.join(JOURNAL_DIR))
}

/// [`check_archive`] of an archive whose journal is in `journal_dir` (a simple hot copy with a separate
/// `copyJournalDir`).
pub fn check_archive_with_journal(
    dir: impl AsRef<Path>,
    journal_dir: impl AsRef<Path>,
) -> Result<ArchiveCheckReport, CheckError> {
    let dir = dir.as_ref().to_path_buf();
    let atoms_dir = dir.join(ATOMS_DIR);
    let journal_dir = journal_dir.as_ref().to_path_buf();
    crate::restore::refuse_unfinished(&dir)?;
    if let Some(reason) = crate::found::missing_archive_part(&dir, &journal_dir) {
        return Err(CheckError::NotAnArchive { path: dir, reason });
    }
    // Refuses an archive a running SM holds; an SM cannot take it while this reads.
    let _lock = DirLock::shared(&dir, DirKind::Archive)?;
    let mut r = ArchiveCheckReport {
        dir,
        defects: Vec::new(),
        atoms: 0,
        segments: 0,
        records: 0,
        last_txn: 0,
        database_id: None,
        torn_tail: None,
    };
    for (id, path) in list_ids(&atoms_dir, |file, kind, what| r.defect(file, kind, what)) {
        r.atoms += 1;
        match check_atom(&path, id, None) {
            Ok((lsn, _)) => r.last_txn = r.last_txn.max(lsn),
            Err((kind, what)) => r.defect(path, kind, what),
        }
    }
    let segments = list_ids(&journal_dir, |file, kind, what| r.defect(file, kind, what));
    let count = segments.len();
    let mut prev_txn = 0u64;
    for (i, (number, path)) in segments.into_iter().enumerate() {
        r.segments += 1;
        let bytes = match read_regular(&path, MAX_SEGMENT_BYTES) {
            Ok(b) => b,
            Err(e) => {
                let (kind, what) = read_error(&e);
                r.defect(path, kind, what);
                continue;
            }
        };
        let (header, mut reader) = match read_archive_segment(&bytes, i + 1 == count) {
            Ok(ArchiveSegment::Segment(header, reader)) => (header, reader),
            Ok(ArchiveSegment::TornCreation) => {
                r.torn_tail = Some(TornTail { segment: number, offset: 0, len: bytes.len() as u64 });
                continue;
            }
            Err(e) => {
                r.defect(path, DefectKind::Journal, format!("{e}"));
                continue;
            }
        };
        if header.segment != number {
            r.defect(
                path.clone(),
                DefectKind::Journal,
                format!(
                    "the file is named for segment {number} but its header says {}; it was renamed",
                    header.segment
                ),
            );
        }
        match r.database_id {
            Some(db) if db != header.database_id => r.defect(
                path.clone(),
                DefectKind::Journal,
                format!("the segment belongs to database {}, earlier segments to {db}", header.database_id),
            ),
            Some(_) => {}
            None => r.database_id = Some(header.database_id),
        }
        let mut first_in_segment = true;
        for rec in &mut reader {
            match rec {
                Ok(rec) => {
                    if first_in_segment && rec.txn_id <= prev_txn {
                        r.defect(
                            path.clone(),
                            DefectKind::Journal,
                            format!(
                                "the record at byte {} has transaction id {}, but an earlier segment ends at {prev_txn}; \
                                 transaction ids must increase across segments",
                                rec.offset, rec.txn_id
                            ),
                        );
                    }
                    first_in_segment = false;
                    r.records += 1;
                    prev_txn = prev_txn.max(rec.txn_id);
                }
                Err(e) => {
                    r.defect(path.clone(), DefectKind::Journal, format!("{e}"));
                    break;
                }
            }
        }
        if let Some(Tail::Torn { offset, len }) = reader.tail() {
            if i + 1 == count {
                r.torn_tail = Some(TornTail { segment: number, offset, len });
            } else {
                r.defect(
                    path.clone(),
                    DefectKind::Journal,
                    format!(
                        "{len} bytes at offset {offset} are an incomplete record (a torn tail), but this is not the \
                         last segment: only the last one can be cut short by a crash, the journal is damaged"
                    ),
                );
            }
        }
    }
    r.last_txn = r.last_txn.max(prev_txn);
    Ok(r)
}

/// The `<16 hex>` files of `dir`, sorted by id; any other entry (except `.tmp-` leftovers) is a defect, and so is a
/// directory that cannot be listed (a missing one holds nothing).
pub(super) fn list_ids(dir: &Path, mut defect: impl FnMut(PathBuf, DefectKind, String)) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            defect(dir.to_path_buf(), io_defect_kind(&e), format!("cannot list the directory: {}", io_what(&e)));
            return out;
        }
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_FILE_PREFIX) {
            continue;
        }
        match parse_id_name(&name) {
            Some(id) => out.push((id, entry.path())),
            None => defect(
                entry.path(),
                DefectKind::ExtraFile,
                format!("unexpected file in {} (names are 16 lower-case hex digits)", dir.display()),
            ),
        }
    }
    out.sort();
    out
}

fn slice_defect(e: SliceError) -> (DefectKind, String) {
    let kind = match &e {
        SliceError::NotRegular { .. } => DefectKind::NotRegular,
        SliceError::Missing { .. } => DefectKind::MissingFile,
        SliceError::Io { op, source, .. } => return (io_defect_kind(source), format!("{op}: {}", io_what(source))),
        _ => DefectKind::Io,
    };
    (kind, e.to_string())
}

/// Checks one atom file by what it carries itself (header, named for its atom, length, body BLAKE3) and, given its
/// manifest entry, against the manifest too (size, chunk and file hashes), reading it once in 1 MiB chunks. Returns
/// its LSN and length.
pub(super) fn check_atom(path: &Path, id: u64, entry: Option<&FileEntry>) -> Result<(u64, u64), (DefectKind, String)> {
    let (mut f, len) = open_data_file(path).map_err(slice_defect)?;
    if let Some(e) = entry.filter(|e| e.size != len) {
        return Err((DefectKind::Size, format!("{}: restore it from a copy of the set", size_mismatch(len, e.size))));
    }
    let read_err = |e: std::io::Error| (io_defect_kind(&e), format!("reading it: {}", io_what(&e)));
    let mut buf = vec![0u8; CHUNK_BYTES.min(len.max(ATOM_HEADER_BYTES as u64)) as usize];
    let first = len.min(buf.len() as u64) as usize;
    f.read_exact(&mut buf[..first]).map_err(read_err)?;
    let h = AtomHeader::parse(&buf[..first]).map_err(|e| (DefectKind::Atom, e.to_string()))?;
    if h.atom_id != id {
        return Err((DefectKind::Atom, format!("the file holds atom {:#x} but is named for atom {id:#x}", h.atom_id)));
    }
    if h.body_len + ATOM_HEADER_BYTES as u64 != len {
        return Err((
            DefectKind::Size,
            format!("the header declares a {}-byte body, the file is {len} bytes (truncated or extended)", h.body_len),
        ));
    }
    let mut body = blake3::Hasher::new();
    let mut content = ContentHasher::new();
    let (mut start, mut n) = (0u64, first);
    for index in 0.. {
        let chunk = &buf[..n];
        body.update(if index == 0 { &chunk[ATOM_HEADER_BYTES..] } else { chunk });
        let hash = content.chunk(chunk);
        if entry.is_some_and(|e| e.chunk_hashes.get(index) != Some(&hash)) {
            let what = chunk_mismatch(index, start, start + n as u64);
            return Err((DefectKind::Hash, format!("{what}: restore it from a copy of the set")));
        }
        start += n as u64;
        if start == len {
            break;
        }
        n = (len - start).min(CHUNK_BYTES) as usize;
        f.read_exact(&mut buf[..n]).map_err(read_err)?;
    }
    if body.finalize().as_bytes() != &h.body_hash {
        return Err((
            DefectKind::Hash,
            format!("atom {id:#x}: the body does not match the BLAKE3 in its header (damaged)"),
        ));
    }
    if entry.is_some_and(|e| content.finalize() != e.hash) {
        return Err((DefectKind::Hash, format!("{FILE_MISMATCH}: restore it from a copy of the set")));
    }
    Ok((h.lsn, len))
}

/// Checks one journal slice of a backup set whose manifest cannot be read, by what it carries itself: a segment
/// header naming segment `id` when it starts with one (a slice from the start of a segment), else records from its
/// first byte; every record's framing and check, transaction ids above `after_txn` and increasing, no record cut
/// short (a slice ends after a record), at least one record. Reads the slice whole (at most `MAX_SEGMENT_BYTES`).
/// Returns the transaction id of its last record, and its length.
pub(super) fn check_slice_alone(path: &Path, id: u64, after_txn: u64) -> Result<(u64, u64), (DefectKind, String)> {
    let bytes = read_regular(path, MAX_SEGMENT_BYTES).map_err(|e| read_error(&e))?;
    let journal = |what: String| (DefectKind::Journal, format!("{what}: the slice is damaged"));
    let mut reader = if bytes.starts_with(&SEGMENT_MAGIC) {
        let (h, reader) = read_segment(&bytes).map_err(|e| journal(e.to_string()))?;
        if h.segment != id {
            return Err(journal(format!("its header names segment {}, the file is named for segment {id}", h.segment)));
        }
        reader
    } else {
        RecordReader::new(id, 0, &bytes, 0)
    };
    let mut last = None;
    for rec in &mut reader {
        let rec = rec.map_err(|e| journal(e.to_string()))?;
        if last.is_none() && rec.txn_id <= after_txn {
            return Err(journal(format!(
                "its first record (byte {}) has transaction id {}, not above {after_txn} where the slice before it ends",
                rec.offset, rec.txn_id
            )));
        }
        last = Some(rec.txn_id);
    }
    if let Some(Tail::Torn { offset, len }) = reader.tail() {
        return Err(journal(format!("the slice ends {len} bytes into an incomplete record at byte {offset}")));
    }
    let last = last.ok_or_else(|| journal("it holds no record".into()))?;
    Ok((last, bytes.len() as u64))
}

/// The kind of defect an OS error reading a file or directory is: a permission error is not damage.
pub(super) fn io_defect_kind(e: &std::io::Error) -> DefectKind {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        DefectKind::Permission
    } else {
        DefectKind::Io
    }
}

/// An OS error as a defect says it, with what to do about a permission error.
pub(super) fn io_what(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("{e}; {UNREADABLE}")
    } else {
        e.to_string()
    }
}

/// The defect a file that cannot be read is: its kind, and what to say.
fn read_error(e: &ReadError) -> (DefectKind, String) {
    let kind = match e {
        ReadError::NotRegular { .. } => DefectKind::NotRegular,
        ReadError::TooLarge { .. } => DefectKind::Size,
        ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => DefectKind::MissingFile,
        ReadError::Io { source, .. } => io_defect_kind(source),
        _ => DefectKind::Io,
    };
    let advice = if e.is_permission() { format!("; {UNREADABLE}") } else { String::new() };
    (kind, format!("{e}{advice}"))
}
