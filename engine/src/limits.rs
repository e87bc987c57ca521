//! Every bound the engine puts on a size, a count or a duration, in one place.
//!
//! Format bounds (record payload, atom body, segment size) live in [`backset_format::limits`]; the figures here are
//! the engine's own, and compile-time assertions keep them inside the format's. The reference store's bounds (its
//! segment rollover, batches, keys and values) are its own crate's (`backset_refstore::limits`).

use std::time::Duration;

use backset_format::limits::{MAX_RECORD_PAYLOAD_BYTES, MAX_SEGMENT_BYTES};

// ---- restore and check (engine/src/restore/, engine/src/check/) ----

/// Size at which a restore closes a journal segment of the archive it writes and starts the next one: 64 MiB. A
/// segment may pass it by one record (at most the format's record limit). It is the restore's own figure: an SM
/// reading the restored archive takes segments of any size up to the format's `MAX_SEGMENT_BYTES`, whatever its own
/// rollover size (the reference store's default rollover is also 64 MiB).
pub const RESTORE_SEGMENT_BYTES: u64 = 64 << 20;

/// Buffer in front of each journal segment a restore writes: 1 MiB, so that a segment is written in 1 MiB
/// `write`s rather than the 8 KiB of a default buffer (a restore of the demo set made 5,070 of them).
pub const RESTORE_WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Most files one copier job of a restore or a check takes: 4096. A job's report holds every file's chunk hashes
/// and its first [`HEAD_BYTES`](backset_copier::limits::HEAD_BYTES) (where the atom headers are checked, instead of
/// reading each file again), so this bounds the report of one job (4096 files of up to `MAX_ATOM_BODY_BYTES` each:
/// at most 32 MiB of hashes and 512 KiB of heads) and lets a cancel or an error name its batch quickly.
pub const COPY_BATCH_FILES: usize = 4096;

/// Atoms a restore from object storage streams at once (a thread each, one GET in flight each): 16, as many as a
/// hot copy's upload has puts in flight. Each holds one chunk of `CHUNK_BYTES` (1 MiB): 16 MiB in all. One stream
/// at a time left the store's round trips unoverlapped (a restore of 1,962 small atoms from `s3s-fs` on loopback
/// took 60 ms an atom, four times `rclone copy` with its 4 transfers).
pub const RESTORE_STREAMS_IN_FLIGHT: usize = 16;

/// Atom files a check of a set on object storage streams and hashes at once (a thread each, one GET in flight
/// each): 16, as for a restore ([`RESTORE_STREAMS_IN_FLIGHT`]). Each holds one chunk of `CHUNK_BYTES` (1 MiB) and
/// the file's report (its chunk hashes and head): 16 MiB of chunks in all, and nothing written to local disk.
pub const CHECK_STREAMS_IN_FLIGHT: usize = 16;

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
const _: () = assert!(RESTORE_STREAMS_IN_FLIGHT > 0);
const _: () = assert!(CHECK_STREAMS_IN_FLIGHT > 0);
// The atom headers a restore and a check parse come from the copier's reports.
const _: () = assert!(backset_copier::limits::HEAD_BYTES >= backset_format::atom::ATOM_HEADER_BYTES);
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

/// Smallest batch of atom files a hot copy hands to the copier after dropped atoms made calls fail: 32. Each failure
/// halves the batches down to it (each success doubles them again, up to [`HOTCOPY_ATOM_BATCH_FILES`]), so on an
/// archive whose small atoms keep being dropped a dropped atom costs at most this many files copied again.
pub const HOTCOPY_ATOM_MIN_BATCH_FILES: usize = 32;

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

/// Buffer pool of each archive's copier (one per SM, shared by all its hot copy jobs, kept while the manager lives):
/// the copier's default.
pub const HOTCOPY_COPIER_POOL_BYTES: usize = backset_copier::limits::POOL_BYTES_DEFAULT;

const _: () = assert!(HOTCOPY_ATOM_MIN_BATCH_FILES >= 1 && HOTCOPY_ATOM_MIN_BATCH_FILES <= HOTCOPY_ATOM_BATCH_FILES);
const _: () = assert!(HOTCOPY_CANCEL_POLL.as_millis() <= 50);

// ---- Memory of a restore or a check (`docs/RESTORE.md`, "Limits and memory") ----

/// Memory a restore or a check of a backup set may take whatever the set holds: the copier's buffer pool
/// ([`backset_copier::limits::POOL_BYTES_DEFAULT`], 64 MiB), one journal chunk (1 MiB) and one record (at most the
/// format's `MAX_RECORD_PAYLOAD_BYTES`, 16 MiB) being verified (a check: one of each per [`CHECK_JOURNAL_THREADS`];
/// a restore: beside them the segment's write buffer, [`RESTORE_WRITE_BUFFER_BYTES`]), the reports of one copier job of [`COPY_BATCH_FILES`] files, and the program itself: 160 MiB.
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
