//! Recovery of one archive directory: atom headers, then the journal replayed over them.
//!
//! 1. Every `atoms/<16 hex>` file's header is read (its LSN); bodies are loaded lazily, when an atom is first used.
//!    Leftover `atoms/.tmp-*` files of an interrupted checkpoint are removed.
//! 2. Every `journal/<16 hex>` segment is read in number order, one at a time. Each must start with a valid segment
//!    header of this database; numbering may start above 1 and have gaps (a restored or recycled journal), and the
//!    first record need not be the header's `first_txn` (a restore may put a header in front of a mid-segment
//!    slice). Transaction ids must increase across all segments.
//! 3. Each record's operations are applied to the atoms whose LSN is below the record's txn id (the atom file
//!    already holds the others), so replay is idempotent: recovering twice gives the same state.
//! 4. A torn tail (FORMAT.md: an incomplete last record with nothing valid after it) is allowed only in the last
//!    segment; recovery truncates it. A last segment cut short while it was being created (no header, no record, at
//!    most `MAX_TORN_SEGMENT_BYTES`: the rule of `backset_format::read_archive_segment`, which `archive check`
//!    shares) is removed: nothing in it was acknowledged. Anything else that does not parse is an error naming the
//!    file and offset.
//!
//! Every file is read as a regular file only, never through a link, and bounded by the format's limits
//! (`backset_format::fsio::read_regular`): a FIFO or a device in place of a segment or an atom file is refused.
//!
//! Read-only recovery ([`read_archive`]) does the same without changing any file.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use backset_format::fsio::read_regular;
use backset_format::layout::{parse_id_name, ATOMS_DIR, JOURNAL_DIR};
use backset_format::limits::MAX_SEGMENT_BYTES;
use backset_format::{read_archive_segment, ArchiveSegment, Tail};
use uuid::Uuid;

use backset_engine::lock::{DirKind, DirLock};

use crate::codec::decode_payload;
use crate::data::{read_atom_header, AtomSlot, Data};
use crate::error::StoreError;
use crate::journal::Segment;
use crate::sync::sync_dir;

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Atoms (headers read, replayed ones loaded and dirty).
    pub data: Data,
    /// Segments and their record index.
    pub segments: BTreeMap<u64, Segment>,
    /// Highest txn id seen: last record, or highest atom LSN.
    pub last_txn: u64,
    /// Highest commit timestamp seen in the journal.
    pub last_timestamp_micros: u64,
    /// Database id of the segments, if there are any.
    pub database_id: Option<Uuid>,
    /// Archive id in the first segment's header, if there is a segment.
    pub archive_id: Option<u64>,
    /// Records that changed at least one atom.
    pub records_replayed: u64,
    /// Atom files found.
    pub atom_files: usize,
    /// Torn tails found (and truncated when recovering live): `(segment, offset, len)`.
    pub torn: Vec<(u64, u64, u64)>,
}

fn list_ids(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("read directory", dir))? {
        let entry = entry.map_err(StoreError::io("read directory", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_id_name) {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Recovers the archive in `dir` whose journal is in `journal_dir` (`dir/journal` but for a simple hot copy with a
/// separate journal directory). `live`: create missing directories, remove leftovers, truncate a torn tail;
/// otherwise change nothing. `expect_db`: refuse segments of another database.
pub(crate) fn recover(
    dir: &Path,
    journal_dir: &Path,
    expect_db: Option<Uuid>,
    live: bool,
) -> Result<Recovered, StoreError> {
    // An unfinished restore is never opened, nor read: its journal ends where the restore stopped.
    backset_engine::restore::refuse_unfinished(dir)?;
    let atoms_dir = dir.join(ATOMS_DIR);
    let journal_dir = journal_dir.to_path_buf();
    if live {
        for d in [&atoms_dir, &journal_dir] {
            if !d.is_dir() {
                fs::create_dir_all(d).map_err(StoreError::io("create directory", d))?;
                sync_dir(dir)?;
            }
        }
        for entry in fs::read_dir(&atoms_dir).map_err(StoreError::io("read directory", &atoms_dir))? {
            let entry = entry.map_err(StoreError::io("read directory", &atoms_dir))?;
            if entry.file_name().to_string_lossy().starts_with(backset_format::fsio::TMP_FILE_PREFIX) {
                let p = entry.path();
                backset_format::dirfd::remove_path(&p).map_err(StoreError::io("remove", &p))?;
            }
        }
    } else if let Some(reason) = backset_engine::found::missing_archive_part(dir, &journal_dir) {
        return Err(StoreError::NotAnArchive { path: dir.to_path_buf(), reason });
    }

    let mut data = Data::new(atoms_dir.clone());
    let mut max_lsn = 0;
    if atoms_dir.is_dir() {
        for (atom_id, path) in list_ids(&atoms_dir)? {
            let Some(h) = read_atom_header(&path)? else { continue };
            if h.atom_id != atom_id {
                return Err(StoreError::Damaged {
                    path,
                    reason: format!(
                        "the file holds atom {:#x} but is named for atom {atom_id:#x}; it was renamed, restore it from a \
                         copy",
                        h.atom_id
                    ),
                });
            }
            max_lsn = max_lsn.max(h.lsn);
            data.atoms.insert(atom_id, AtomSlot::unloaded(h.lsn, h.body_len));
        }
    }

    let atom_files = data.atoms.len();
    let mut rec = Recovered {
        data,
        segments: BTreeMap::new(),
        last_txn: 0,
        last_timestamp_micros: 0,
        database_id: expect_db,
        archive_id: None,
        records_replayed: 0,
        atom_files,
        torn: Vec::new(),
    };
    let segment_files = if journal_dir.is_dir() { list_ids(&journal_dir)? } else { Vec::new() };
    let count = segment_files.len();
    let mut prev_txn = 0u64;
    for (i, (number, path)) in segment_files.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let bytes = read_regular(&path, MAX_SEGMENT_BYTES)?;
        let (header, mut reader) = match read_archive_segment(&bytes, is_last) {
            Ok(ArchiveSegment::Segment(header, reader)) => (header, reader),
            Ok(ArchiveSegment::TornCreation) => {
                tracing::warn!(
                    path = %path.display(),
                    len = bytes.len(),
                    "the last journal segment was cut short while it was being created (nothing in it was acknowledged)"
                );
                if live {
                    backset_format::dirfd::remove_path(&path).map_err(StoreError::io("remove", &path))?;
                    sync_dir(&journal_dir)?;
                }
                rec.torn.push((number, 0, bytes.len() as u64));
                continue;
            }
            Err(source) => return Err(StoreError::Journal { path, source }),
        };
        if header.segment != number {
            return Err(StoreError::Damaged {
                path,
                reason: format!(
                    "the file is named for segment {number} but its header says {}; it was renamed, restore it",
                    header.segment
                ),
            });
        }
        match rec.database_id {
            Some(id) if id != header.database_id => {
                return Err(StoreError::WrongDatabase { path, expected: id, found: header.database_id })
            }
            _ => rec.database_id = Some(header.database_id),
        }
        rec.archive_id = rec.archive_id.or(Some(header.archive_id));
        let mut records = Vec::new();
        for r in &mut reader {
            let r = r.map_err(|source| StoreError::Journal { path: path.clone(), source })?;
            if r.txn_id <= prev_txn {
                return Err(StoreError::Damaged {
                    path,
                    reason: format!(
                        "record at offset {} has transaction id {} but an earlier segment ends at {prev_txn}; \
                         transaction ids must increase across segments, the journal is damaged",
                        r.offset, r.txn_id
                    ),
                });
            }
            let ops = decode_payload(r.payload).map_err(|reason| StoreError::Damaged {
                path: path.clone(),
                reason: format!(
                    "record of transaction {} at offset {} does not decode: {reason}; it was not written by the \
                     reference store",
                    r.txn_id, r.offset
                ),
            })?;
            if rec.data.apply(r.txn_id, &ops)? > 0 {
                rec.records_replayed += 1;
            }
            records.push((r.txn_id, r.offset));
            prev_txn = r.txn_id;
            rec.last_timestamp_micros = rec.last_timestamp_micros.max(r.timestamp_micros);
        }
        let valid_end = reader.valid_end();
        if let Some(Tail::Torn { offset, len }) = reader.tail() {
            if !is_last {
                return Err(StoreError::Damaged {
                    path,
                    reason: format!(
                        "{len} bytes at offset {offset} are an incomplete record, but this is not the last segment \
                         (only the last one can be cut short by a crash); the journal is damaged"
                    ),
                });
            }
            tracing::warn!(path = %path.display(), offset, len, "truncating the torn tail of the journal");
            if live {
                let f = OpenOptions::new().write(true).open(&path).map_err(StoreError::io("open", &path))?;
                f.set_len(offset).map_err(StoreError::io("truncate", &path))?;
                f.sync_all().map_err(StoreError::io("fsync", &path))?;
            }
            rec.torn.push((number, offset, len));
        }
        rec.segments
            .insert(number, Segment { number, path, header_first_txn: header.first_txn, records, len: valid_end });
    }
    rec.last_txn = prev_txn.max(max_lsn);
    rec.data.applied_upto = rec.last_txn;
    Ok(rec)
}

/// The content of one archive directory, as [`read_archive`] rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveData {
    /// Every key/value pair, sorted by key.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Highest transaction id in the archive (last journal record or highest atom LSN).
    pub last_txn: u64,
    /// Atom files and atoms rebuilt from the journal that hold at least one key.
    pub atoms: usize,
    /// Journal records that changed at least one atom.
    pub records_replayed: u64,
    /// Database id from the journal segment headers, if there is a segment.
    pub database_id: Option<Uuid>,
    /// Archive id from the first journal segment's header, if there is a segment.
    pub archive_id: Option<u64>,
    /// Whether the last segment ends with a torn tail, or is one (cut short while it was being created): left in
    /// place, nothing is changed.
    pub torn_tail: bool,
}

/// Reads one archive directory (`atoms/` and `journal/`, such as a restore produces) on its own, without changing
/// any file: loads every atom and replays the journal over it, exactly as recovery does. For restore verification
/// and `archive dump`. Holds the whole archive's data in memory. Refuses with [`StoreError::Locked`] an archive a
/// running SM holds ([`backset_engine::lock`]).
pub fn read_archive(dir: &Path) -> Result<ArchiveData, StoreError> {
    read_archive_with_journal(dir, &dir.join(JOURNAL_DIR))
}

/// [`read_archive`] of an archive whose journal is in `journal_dir` (a simple hot copy with a separate
/// `copyJournalDir`).
pub fn read_archive_with_journal(dir: &Path, journal_dir: &Path) -> Result<ArchiveData, StoreError> {
    // Refuses an archive a running SM holds; an SM cannot take it while this reads.
    let _lock = DirLock::shared(dir, DirKind::Archive)?;
    let mut rec = recover(dir, journal_dir, None, false)?;
    let ids: Vec<u64> = rec.data.atoms.keys().copied().collect();
    let mut entries = BTreeMap::new();
    let mut atoms = 0;
    for id in ids {
        let pairs = rec.data.pairs(id)?;
        atoms += usize::from(!pairs.is_empty());
        entries.extend(pairs);
    }
    rec.data.atoms.clear();
    Ok(ArchiveData {
        entries,
        last_txn: rec.last_txn,
        atoms,
        records_replayed: rec.records_replayed,
        database_id: rec.database_id,
        archive_id: rec.archive_id,
        torn_tail: !rec.torn.is_empty(),
    })
}
