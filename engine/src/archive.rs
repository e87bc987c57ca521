//! The [`Archive`] trait: what a storage manager (SM) implements so that Backset can hot-copy its archive.
//!
//! # The archive an SM keeps
//! An archive is a directory with `atoms/` (one file per atom, named by its id, each starting with an atom header
//! that carries the atom id and its **LSN**, the last transaction id applied to it) and `journal/` (segment files of
//! framed commit records), exactly as `docs/FORMAT.md` specifies and `backset-format` writes and parses. The
//! database has one transaction id sequence (u64, strictly increasing from 1) and every commit carries a wall-clock
//! timestamp.
//!
//! # The consistency rule, and what it needs from you
//! A hot copy of archive A is correct when restoring it yields exactly the database state at its end point E. The
//! job does:
//! 1. [`Archive::pin_journal`]: pin the journal at the recovery start R (returned in the [`JournalPin`]).
//! 2. [`Archive::atoms`], then copy each atom file. Atoms keep changing while they are copied: that is fine.
//! 3. Choose E (for one archive, [`Archive::durable_txn`]; for several, the coordinator picks one E for all),
//!    [`Archive::wait_durable`] for E, then copy [`Archive::journal_slices`]`(R, E)`, and drop the pin.
//! 4. A restore lays down the atom files, then replays the copied records with `LSN < txn id <= E`.
//!
//! This is correct only if the SM guarantees all of the following; the trait's methods state their own part.
//!
//! - **G1, recovery start.** Every atom file on disk (now and at any later time) contains every change of every
//!   transaction `< R`, where R is the value a pin returned. So a copied atom plus the journal from R onward can
//!   rebuild the atom up to E, whatever version of the atom was copied.
//! - **G2, the WAL rule.** An atom file's LSN is at most the durable watermark at the moment the file is written:
//!   the checkpointer only writes atom versions whose applied transactions are durable in the journal. An atom's
//!   content is exactly the changes of transactions `<= LSN` (none above it).
//! - **G3, whole versions.** An atom file is replaced by write-new, fsync, rename over the old name, fsync the
//!   directory; never modified in place. A reader that opened the file sees one whole version (header and body agree
//!   and its checksum holds), even if the file is replaced while it reads.
//! - **G4, append-only journal.** Segments are append-only; records within a segment are in strictly increasing
//!   transaction id order, and across segments too (segment N+1 holds only ids above segment N's). So a byte range
//!   of durable records never changes while the journal is pinned.
//! - **G5, pins.** While a [`JournalPin`] lives, no segment holding a record with txn id `>= R` (its
//!   [`JournalPin::recovery_start`]) is recycled, truncated or rewritten.
//! - **G6, durability.** [`Archive::durable_txn`] never decreases, and every record of this archive with a txn id
//!   `<=` it has been written and fsynced (the segment file, and the journal directory for a new segment).
//!
//! Storage groups: an archive may hold only some of the database's data, so its journal holds records for only some
//! transaction ids. Every guarantee above is about the records *of this archive*; a transaction that did not touch
//! the archive has no record in it and counts as durable.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

/// Who an archive belongs to: stored in every backup set's `state` so a restore can refuse a foreign set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveIdentity {
    /// Name of the database (1..=255 bytes, no NUL or `/`).
    pub database_name: String,
    /// Id of the database; the same in every archive of the database and in every journal segment header.
    pub database_id: Uuid,
    /// Archive id, 0..N-1 in the order the SMs started; also in every journal segment header.
    pub archive_id: u64,
    /// Storage groups this archive serves, `(id, name)`, ids strictly increasing; empty when the database has no
    /// storage groups (every SM holds all data).
    pub storage_groups: Vec<(u32, String)>,
}

/// One atom file on disk, as listed by [`Archive::atoms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomFile {
    /// Atom id (also the file name, 16 lower-case hex digits).
    pub atom_id: u64,
    /// Path of the atom file.
    pub path: PathBuf,
    /// The atom's LSN as of the listing. The file may be replaced (by a newer version) before it is copied: the
    /// header of the copied file is authoritative, never this figure.
    pub lsn: u64,
    /// The file's size as of the listing, when the SM knows it without a system call (`None`: the hot copy takes it
    /// from the file). Only the progress plan uses it; the copy reports what it copied.
    pub bytes: Option<u64>,
}

/// A byte range of one journal segment that holds whole records, as returned by [`Archive::journal_slices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSlice {
    /// Segment number (also the file name, 16 lower-case hex digits).
    pub segment: u64,
    /// Path of the segment file.
    pub path: PathBuf,
    /// Offset of the first byte: 0 when the slice starts with the segment's first record (the 64-byte segment
    /// header is then included), else the offset of the first wanted record.
    pub offset: u64,
    /// Number of bytes: the slice ends right after its last record.
    pub len: u64,
    /// Transaction id of the first record in the slice.
    pub first_txn: u64,
    /// Transaction id of the last record in the slice.
    pub last_txn: u64,
}

/// Why an [`Archive`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The operating system refused an operation on a file of the archive.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`read directory`, `open`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the archive does not parse.
    #[error("{path}: {reason}; the archive is damaged, run `backset archive check` on it")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A transaction did not become durable in time.
    #[error(
        "archive {archive_id}: transaction {txn} is not durable after {timeout:?} (durable up to {durable}); the SM's \
         journal writer is stalled or the transaction id was never assigned"
    )]
    NotDurable {
        /// Archive id.
        archive_id: u64,
        /// The transaction waited for.
        txn: u64,
        /// Durable watermark of the archive when the wait gave up.
        durable: u64,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// Journal records that were asked for are no longer on disk.
    #[error(
        "archive {archive_id}: journal records from transaction {first} on were asked for, but the journal was \
         recycled up to transaction {recycled_below} (exclusive); pin the journal (pin_journal) before copying atoms \
         and ask only for transactions >= the pin's recovery start"
    )]
    Recycled {
        /// Archive id.
        archive_id: u64,
        /// First transaction asked for.
        first: u64,
        /// Every record below this transaction id may be gone.
        recycled_below: u64,
    },
    /// Journal records that are not durable yet were asked for.
    #[error(
        "archive {archive_id}: journal slices up to transaction {last} were asked for, but the archive is durable \
         only up to {durable}; call wait_durable first"
    )]
    BeyondDurable {
        /// Archive id.
        archive_id: u64,
        /// Last transaction asked for.
        last: u64,
        /// Durable watermark.
        durable: u64,
    },
    /// A range with first > last.
    #[error("archive {archive_id}: transaction range [{first}, {last}] is empty (first > last); this is a caller bug")]
    EmptyRange {
        /// Archive id.
        archive_id: u64,
        /// First transaction.
        first: u64,
        /// Last transaction.
        last: u64,
    },
    /// The SM stopped or failed and no longer serves its archive.
    #[error("archive {archive_id} is not available: {reason}")]
    Unavailable {
        /// Archive id.
        archive_id: u64,
        /// Why (closed, journal writer failed, ...).
        reason: String,
    },
}

/// A pin on an archive's journal: while it lives, no journal record with a transaction id `>=`
/// [`recovery_start`](Self::recovery_start) is recycled (guarantee G5). Dropping it releases the pin.
///
/// An SM makes one with [`JournalPin::new`], handing over what to do on release.
pub struct JournalPin {
    recovery_start: u64,
    release: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl JournalPin {
    /// A pin at recovery start `recovery_start`; `release` runs exactly once, when the pin is dropped.
    pub fn new(recovery_start: u64, release: impl FnOnce() + Send + 'static) -> Self {
        Self { recovery_start, release: Mutex::new(Some(Box::new(release))) }
    }

    /// R at the moment of pinning: every atom file contains every change of every transaction below it (G1), and
    /// every record from it on stays on disk while the pin lives (G5).
    pub fn recovery_start(&self) -> u64 {
        self.recovery_start
    }
}

impl Drop for JournalPin {
    fn drop(&mut self) {
        let release = match self.release.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(release) = release {
            release();
        }
    }
}

impl fmt::Debug for JournalPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalPin").field("recovery_start", &self.recovery_start).finish_non_exhaustive()
    }
}

/// What an SM implements to be hot-copied. See the module documentation for the guarantees G1 to G6 that every
/// implementation must keep; each method says which it relies on.
///
/// Every method may be called from any thread, concurrently with the SM's commits and checkpoints.
pub trait Archive: Send + Sync {
    /// Who the archive belongs to.
    fn identity(&self) -> ArchiveIdentity;

    /// The archive directory: it holds `atoms/` and `journal/` (see `backset_format::layout`).
    fn dir(&self) -> &Path;

    /// Pins the journal at the current recovery start R and returns the pin (G1, G5). Call it before listing or
    /// copying atoms: R is taken at the moment of the call, and the atoms copied after it contain every change of
    /// transactions below R.
    fn pin_journal(&self) -> Result<JournalPin, ArchiveError>;

    /// The atom files on disk now, in increasing atom id order, with their LSNs as of the listing. An atom that
    /// holds no data has no file (a "dropped" atom); it may reappear later with a new file.
    ///
    /// An incremental copies an atom only when its listed LSN differs from the previous catalog's, so a listed LSN
    /// must be that of a version holding every change below the recovery start of any pin taken before the listing
    /// (G1): the file on disk at the listing, or the one it replaced while R could not pass the replacement. Every
    /// hot copy calls this once per archive and the cost is per atom: an SM should answer from what it holds in
    /// memory, without a system call per atom, as the reference store does (reading each file's header costs an
    /// open, a read and a close per atom, which dominates a hot copy with nothing changed).
    fn atoms(&self) -> Result<Vec<AtomFile>, ArchiveError>;

    /// The archive's durable watermark: the highest t such that every record of this archive with txn id `<= t` is
    /// durable (G6). Never decreases.
    fn durable_txn(&self) -> u64;

    /// Waits until [`durable_txn`](Self::durable_txn) `>= txn`, at most `timeout`.
    fn wait_durable(&self, txn: u64, timeout: Duration) -> Result<(), ArchiveError>;

    /// Byte ranges of journal segments that together hold exactly the archive's records with `first <= txn id <=
    /// last`, in segment order, at most one slice per segment, each made of whole records (G4):
    /// - a slice starts at offset 0 (including the 64-byte segment header) when its first record is the segment's
    ///   first record, else at that record's offset;
    /// - it ends right after its last record with txn id `<= last`;
    /// - every byte of it is durable, and stays unchanged while a pin with recovery start `<= first` lives.
    ///
    /// Fails with [`ArchiveError::BeyondDurable`] when `last > durable_txn()`, and with [`ArchiveError::Recycled`]
    /// when records from `first` on may have been recycled. Segments without a record in the range are left out, so
    /// the result is empty when the archive has no record in it.
    fn journal_slices(&self, first: u64, last: u64) -> Result<Vec<JournalSlice>, ArchiveError>;

    /// Whether journal hot copies are enabled: then the SM retains journal segments until
    /// [`journal_copied_up_to`](Self::journal_copied_up_to) passes them, even once they are older than R.
    fn journal_hot_copy_enabled(&self) -> bool;

    /// A journal hot copy has durably copied every record up to `txn`: journal-hot-copy retention may release
    /// segments whose records are all `<= txn` (pins and R still apply). Values below an earlier call are ignored.
    fn journal_copied_up_to(&self, txn: u64);

    /// A new journal chain starts at `txn` (a full hot copy's start, while its pin still holds every record from
    /// `txn` on): journal-hot-copy retention must keep every record `>= txn` until
    /// [`journal_copied_up_to`](Self::journal_copied_up_to) passes it. Lowers the copied mark to `txn - 1` when it
    /// is above; never raises it.
    fn journal_retain_from(&self, txn: u64);
}
