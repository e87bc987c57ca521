//! Every bound the engine puts on a size, a count or a duration, in one place.
//!
//! Format bounds (record payload, atom body, segment size) live in [`backset_format::limits`]; the figures here are
//! the engine's own, and compile-time assertions keep them inside the format's.

use std::time::Duration;

use backset_format::limits::{MAX_ATOM_BODY_BYTES, MAX_PARTICIPANTS, MAX_RECORD_PAYLOAD_BYTES, MAX_SEGMENT_BYTES};

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

/// Default number of atoms (hash buckets) per storage group, fixed at database creation.
pub const DEFAULT_ATOM_BUCKETS: u32 = 256;

/// Most atoms per storage group. An atom id is `group id << 32 | bucket`, so buckets must fit 32 bits; this bound
/// keeps the in-memory atom table (about 100 bytes per atom) under 100 MiB per group.
pub const MAX_ATOM_BUCKETS: u32 = 1 << 20;

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

/// Default interval between two background checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Retained journal (kept only for journal hot copies) past which an operator should be warned: 1 GiB. The store
/// only reports the figure ([`crate::store::Database::retained_journal_bytes`]); the server warns.
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

// ---- restore and check (engine/src/restore/, engine/src/check/) ----

/// Size at which a restore closes a journal segment of the archive it writes and starts the next one: 64 MiB, as the
/// store's default rollover. A segment may pass it by one record (at most the format's record limit).
pub const RESTORE_SEGMENT_BYTES: u64 = DEFAULT_SEGMENT_BYTES;

/// Most files one copier job of a restore or a check takes: 4096. A job's report holds every file's chunk hashes,
/// so this bounds the report of one job (4096 files of up to `MAX_ATOM_BODY_BYTES` each: at most 32 MiB of hashes)
/// and lets a cancel or an error name its batch quickly.
pub const COPY_BATCH_FILES: usize = 4096;

/// Threads that read a check's journal slices (each takes whole elements; the copier hashes the atom files beside
/// them): 2. Each holds one journal chunk and one record being verified (see [`RESTORE_FIXED_MEMORY_BYTES`]).
pub const CHECK_JOURNAL_THREADS: usize = 2;

/// Buffer pool of a check's copier (which only reads and hashes the atom files): 16 MiB, 16 reads in flight.
/// Registering the copier's default 64 MiB (pinning its pages) took longer than the reads it let overlap: a check of
/// the demo's set ran 0.23-0.30 s with 16 MiB against 0.26-0.34 s with 64 MiB (10 interleaved runs, 2026-11-26).
pub const CHECK_POOL_BYTES: usize = 16 << 20;

/// Defects of one kind a check lists for one file or directory (catalog entries of one catalog, unexpected entries of
/// one directory): 1000. The others are counted and reported as one defect, so a small hostile file or a directory
/// of empty files cannot make a check's report, and its memory, grow without bound.
pub const CHECK_MAX_DEFECTS_PER_FILE: usize = 1000;

const _: () = assert!(RESTORE_SEGMENT_BYTES + MAX_RECORD_PAYLOAD_BYTES as u64 + 64 <= MAX_SEGMENT_BYTES);
const _: () = assert!(COPY_BATCH_FILES > 0);
const _: () = assert!(CHECK_JOURNAL_THREADS >= 1);
const _: () = assert!(
    CHECK_POOL_BYTES.is_multiple_of(backset_copier::limits::BUFFER_BYTES)
        && CHECK_POOL_BYTES >= backset_copier::limits::POOL_BYTES_MIN
        && CHECK_POOL_BYTES <= backset_copier::limits::POOL_BYTES_MAX
);

// ---- Hot copy jobs (`hotcopy/`) ----

/// Atom files a hot copy hands to the copier in one call. An atom that the checkpointer drops between the listing and
/// the open makes the call fail (the copier removes what the call created): the job retries the batch without it,
/// so this bounds the bytes copied twice for one dropped atom.
pub const HOTCOPY_ATOM_BATCH_FILES: usize = 1024;

/// Longest a hot copy waits for its end point E to become durable on its archive (`Archive::wait_durable`) before
/// it fails: the SM's journal writer is stalled.
pub const HOTCOPY_DURABLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a hot copy waits on anything (durability, a stage barrier) without checking for a cancel or a failure of
/// another participant; cancellation takes effect within this plus the copier's own bound (`CANCEL_POLL_MS`).
pub const HOTCOPY_CANCEL_POLL: Duration = Duration::from_millis(10);

/// Size of one persisted hot copy status file (`<data dir>/hotcopy/<id>.json`) at most: 4 MiB (a coordinated hot
/// copy of `MAX_PARTICIPANTS` archives takes about 400 KiB). A larger file is skipped with a warning.
pub const HOTCOPY_MAX_STATUS_FILE_BYTES: u64 = 4 << 20;

/// Attempts to write a hot copy's final status after the first one failed (a full disk, an I/O error in the status
/// directory): one every [`HOTCOPY_STATUS_RETRY_INTERVAL`], so for 10 minutes. Meanwhile the live status says it is
/// not saved; once they are spent, it says so for good, and a restart recognises a completed hot copy from its
/// destinations (`docs/HOTCOPY.md`, "Stages and messages").
pub const HOTCOPY_STATUS_RETRIES: u32 = 600;

/// Time between two attempts to write a final status that could not be written.
pub const HOTCOPY_STATUS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Hot copy statuses a manager keeps (in memory and in its data directory); beyond it the oldest ended ones are
/// removed when a manager starts and whenever a hot copy starts. Bounds the memory and the start-up time of the
/// status store (about 1 KiB a status of one participant: 10 MiB).
pub const HOTCOPY_MAX_KEPT_STATUSES: usize = 10_000;

/// Longest [`HotCopyManager::start`](crate::hotcopy::HotCopyManager::start) of a full hot copy waits for its
/// participants to initialise their sets (pin the journal, write the state), so that a journal hot copy started
/// right after it is accepted. Beyond it (an archive slow to pin) `start` returns anyway; a journal hot copy then
/// gets `Full or incremental hot copy must be completed before journal hot copy` until the set is initialised.
pub const HOTCOPY_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a wait for a participant's initialisation also checks whether its job ended.
pub const HOTCOPY_READY_POLL: Duration = Duration::from_millis(50);

/// Buffer pool of the copier each hot copy participant makes (one per archive per job): the copier's default.
pub const HOTCOPY_COPIER_POOL_BYTES: usize = backset_copier::limits::POOL_BYTES_DEFAULT;

const _: () = assert!(HOTCOPY_ATOM_BATCH_FILES >= 1);
const _: () = assert!(HOTCOPY_CANCEL_POLL.as_millis() <= 50);

// ---- Memory of a restore or a check (`docs/RESTORE.md`, "Limits and memory") ----

/// Memory a restore or a check of a backup set may take whatever the set holds: the copier's buffer pool
/// ([`backset_copier::limits::POOL_BYTES_DEFAULT`], 64 MiB), one journal chunk (1 MiB) and one record (at most the
/// format's `MAX_RECORD_PAYLOAD_BYTES`, 16 MiB) being verified (a check: one of each per [`CHECK_JOURNAL_THREADS`]),
/// the reports of one copier job of [`COPY_BATCH_FILES`] files, and the program itself: 160 MiB.
pub const RESTORE_FIXED_MEMORY_BYTES: u64 = 160 << 20;

/// Memory a restore or a check may take per byte of the set's metadata (the `state` and the control files of its
/// completed elements): the decoded manifests and element infos it keeps, one decoded catalog at a time with the
/// raw bytes of the file being decoded, and the per-atom tables built from them. The smallest encodings decode to
/// the largest values: a dropped catalog entry takes 3 bytes on disk and 56 decoded, an empty file entry 37 bytes
/// on disk and 88 decoded.
pub const RESTORE_MEMORY_PER_METADATA_BYTE: u64 = 24;

/// The most memory a restore or a check of a set with `metadata_bytes` bytes of metadata takes: a hostile set
/// cannot make it take more than a fixed amount plus a multiple of what it stores (length fields are checked
/// before anything is allocated for them).
pub const fn restore_memory_bound(metadata_bytes: u64) -> u64 {
    RESTORE_FIXED_MEMORY_BYTES + RESTORE_MEMORY_PER_METADATA_BYTE * metadata_bytes
}

// ---- Directory locks (`lock.rs`) ----

/// Bytes of a lock file read to name its holder at most: 4 KiB (a record is three short lines; a program name
/// longer than this is cut, and the holder then reads as unnamed).
pub const MAX_LOCK_RECORD_BYTES: u64 = 4 << 10;
