//! Every bound the reference store puts on a size, a count or a duration, in one place.
//!
//! Format bounds (record payload, atom body, segment size) live in [`backset_format::limits`]; the figures here are
//! the store's own, and compile-time assertions keep them inside the format's. The engine's bounds (hot copies,
//! restore, check) are in `backset_engine::limits`.

use std::time::Duration;

use backset_format::limits::{
    MAX_ATOM_BODY_BYTES, MAX_CATALOG_ENTRIES, MAX_MANIFEST_FILES, MAX_METADATA_BODY_BYTES, MAX_PARTICIPANTS,
    MAX_RECORD_PAYLOAD_BYTES, MAX_SEGMENT_BYTES,
};

/// Default size at which a journal segment rolls over to the next one: 64 MiB. A segment is closed once it reaches
/// this size, so it can pass it by at most one group-commit batch ([`MAX_BATCH_BYTES`]).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Smallest configurable rollover size: 4 KiB (tests use small segments to exercise rollover and recycling).
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// Largest configurable rollover size: 1 GiB. Recovery reads one segment at a time into memory, so this is also the
/// most memory recovery of a live archive needs for journal bytes (a restored segment can be up to the format's
/// `MAX_SEGMENT_BYTES`, 4 GiB).
pub const MAX_CONFIG_SEGMENT_BYTES: u64 = 1 << 30;

/// Most bytes of records one group-commit batch writes before its fdatasync: 32 MiB. A batch holds at least one
/// record whatever its size, so one batch is at most this plus one record. Bounds the writer's buffer.
pub const MAX_BATCH_BYTES: u64 = 32 << 20;

/// Most records one group-commit batch takes from the queue.
pub const MAX_BATCH_RECORDS: usize = 16 * 1024;

/// Times the journal writer tries a step that leaves nothing half-done when it fails (creating the next segment,
/// opening the journal directory to fsync it) before the SM stops: a shortage of descriptors (EMFILE) or memory
/// often passes. Writes and fsyncs are never retried: after a failed fsync the kernel may have dropped the data it
/// reported, and a retry could claim durable what is not.
pub const JOURNAL_RETRY_ATTEMPTS: u32 = 8;

/// Pause before the journal writer's first retry; each next one doubles, up to [`JOURNAL_RETRY_MAX_DELAY`]: the
/// eight attempts span about 3.5 s, during which the SM's commits wait.
pub const JOURNAL_RETRY_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// Longest pause between two of the journal writer's attempts.
pub const JOURNAL_RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Default number of atoms (hash buckets) per storage group of a new database: 65,536, fixed at creation
/// (`Config::atom_buckets`). Scattered writes dirty one atom each, and an incremental hot copy copies every dirtied
/// atom whole, so the atom size sets what an incremental costs; each atom is also one file for a full, a restore and
/// a check. At this count an archive of 1 GiB has atoms of about 16 KiB and one of 1 TiB atoms of about 16 MiB
/// (under the format's 256 MiB atom limit up to 16 TiB per group), and the store's atom table takes about 7 MiB per
/// group ([`ATOM_TABLE_BYTES_PER_ATOM`]). Databases created before this default keep the count they were created
/// with (256 then). Clamped for an archive serving many storage groups so that it stays within
/// [`MAX_ARCHIVE_ATOMS`] (see [`default_atom_buckets`]).
pub const DEFAULT_ATOM_BUCKETS: u32 = 1 << 16;

/// Most atoms (hash buckets) per storage group: 1,048,576. An atom id is `group id << 32 | bucket`, so buckets
/// must fit 32 bits; this bound keeps the in-memory atom table under
/// `MAX_ATOM_BUCKETS * ATOM_TABLE_BYTES_PER_ATOM` (about 100 MiB) per group.
pub const MAX_ATOM_BUCKETS: u32 = 1 << 20;

/// Most atoms one archive may have at creation: the atom buckets times the storage groups the archive serves, at
/// most 2,097,152. Every atom is one entry of a full's manifest (about 80 bytes with one chunk hash) and of its
/// catalog (about 40 bytes), so this keeps both well inside the format's `MAX_METADATA_BODY_BYTES` (256 MiB) and
/// its `MAX_MANIFEST_FILES` and `MAX_CATALOG_ENTRIES`; it also bounds what a hot copy's listing holds (one
/// `AtomFile`, about 100 bytes with its path, per atom: 200 MiB) and the store's atom table. A database whose
/// stored figures exceed it (created before it existed) still opens.
pub const MAX_ARCHIVE_ATOMS: u64 = 1 << 21;

/// Memory of the store's in-memory atom table per atom that holds data, not counting its keys and values when the
/// atom is loaded: about 100 bytes (the slot, its file's LSN and size, and the ordered map's share).
pub const ATOM_TABLE_BYTES_PER_ATOM: u64 = 100;

/// The atom buckets a new database gets when its configuration names none: [`DEFAULT_ATOM_BUCKETS`], or fewer when
/// one archive serves more than `MAX_ARCHIVE_ATOMS / DEFAULT_ATOM_BUCKETS` (32) storage groups, so that
/// `buckets * groups_per_archive <= MAX_ARCHIVE_ATOMS`.
pub const fn default_atom_buckets(groups_per_archive: u64) -> u32 {
    let groups = if groups_per_archive == 0 { 1 } else { groups_per_archive };
    let fit = MAX_ARCHIVE_ATOMS / groups;
    if fit >= DEFAULT_ATOM_BUCKETS as u64 {
        DEFAULT_ATOM_BUCKETS
    } else if fit == 0 {
        1
    } else {
        fit as u32
    }
}

/// Most storage managers (archives) in one database: as many as one coordinated hot copy can take.
pub const MAX_SMS: usize = MAX_PARTICIPANTS;

/// Longest key: 64 KiB.
pub const MAX_KEY_BYTES: usize = 64 << 10;

/// Longest value a commit may write: 8 MiB, so that one put always fits a journal record. Bulk-loaded values
/// (written straight into atom files) may be larger, up to the atom limit.
pub const MAX_VALUE_BYTES: usize = 8 << 20;

/// Most puts and deletes in one transaction.
pub const MAX_OPS_PER_TXN: usize = 64 * 1024;

/// Largest atom body the store writes: the format's limit. A commit that would grow an atom past it is refused.
pub const MAX_STORE_ATOM_BODY_BYTES: u64 = MAX_ATOM_BODY_BYTES;

/// Threads that fsync a checkpoint's new atom files at once: 8. A checkpoint writes every dirty atom to a new file
/// first, then fsyncs them all concurrently (the file system commits concurrent fsyncs together), then renames them
/// into place; with small atoms a checkpoint writes thousands of files, and one fsync after another cost a device
/// flush each.
pub const CHECKPOINT_SYNC_THREADS: usize = 8;

/// Default interval between two background checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Retained journal (kept only for journal hot copies) past which an operator should be warned: 1 GiB. The store
/// only reports the figure ([`crate::Database::retained_journal_bytes`]); the server warns.
pub const DEFAULT_RETAINED_JOURNAL_WARN_BYTES: u64 = 1 << 30;

/// Size of the database's own metadata file (`<root>/backset-db`) at most: 1 MiB. It holds names and the storage
/// group map only.
pub const MAX_DB_META_BYTES: u64 = 1 << 20;

/// How often a waiter re-checks a durability condition that no notification covers (a transaction that does not
/// involve the archive being waited on): at most this long between checks.
pub const DURABLE_POLL_INTERVAL: Duration = Duration::from_millis(2);

const _: () = assert!(MIN_SEGMENT_BYTES <= DEFAULT_SEGMENT_BYTES && DEFAULT_SEGMENT_BYTES <= MAX_CONFIG_SEGMENT_BYTES);
// A full segment plus one batch plus one record must stay under the format's segment limit.
const _: () =
    assert!(MAX_CONFIG_SEGMENT_BYTES + MAX_BATCH_BYTES + 2 * MAX_RECORD_PAYLOAD_BYTES as u64 + 64 <= MAX_SEGMENT_BYTES);
const _: () = assert!((MAX_VALUE_BYTES + MAX_KEY_BYTES + 64) < MAX_RECORD_PAYLOAD_BYTES as usize);
const _: () = assert!(DEFAULT_ATOM_BUCKETS <= MAX_ATOM_BUCKETS);
const _: () = assert!(CHECKPOINT_SYNC_THREADS >= 1);
const _: () = assert!(MAX_ATOM_BUCKETS as u64 <= MAX_ARCHIVE_ATOMS);
// Every atom of an archive fits one manifest and one catalog, with room for its journal slices.
const _: () =
    assert!(MAX_ARCHIVE_ATOMS <= (MAX_MANIFEST_FILES / 2) as u64 && MAX_ARCHIVE_ATOMS <= MAX_CATALOG_ENTRIES as u64);
// A full's manifest of MAX_ARCHIVE_ATOMS one-chunk atoms (at most 96 bytes each encoded: kind, three varints, two
// hashes and a length) fits a metadata body.
const _: () = assert!(MAX_ARCHIVE_ATOMS * 96 <= MAX_METADATA_BODY_BYTES);
