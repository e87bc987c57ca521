//! Every bound of the copier, in one place, with what it costs.

/// Size of one I/O buffer: one read or write moves at most this much. Equal to the format's chunk size, so each
/// full buffer is exactly one chunk of the manifest's chunk hashes.
pub const BUFFER_BYTES: usize = backset_format::limits::CHUNK_BYTES as usize;

/// Default size of the buffer pool (one anonymous mapping): 64 buffers of 1 MiB. This is the copier's whole data
/// memory; nothing else holds file contents.
pub const POOL_BYTES_DEFAULT: usize = 64 << 20;

/// Smallest pool: one buffer.
pub const POOL_BYTES_MIN: usize = BUFFER_BYTES;

/// Largest pool: 1 GiB.
pub const POOL_BYTES_MAX: usize = 1 << 30;

/// Most entries of a ring. A ring gets two entries per pool buffer plus two per open file (reads in flight are kept
/// within the buffer count, each write holds a buffer, each open file is in at most two other operations: open,
/// statx, fallocate, fsync or close), rounded up to a power of two: 256 for the default pool.
pub const MAX_RING_ENTRIES: u32 = 4096;

/// Most files a job keeps open at once (source and target each count once): bounds descriptors and the
/// per-file state of many small files copied side by side.
pub const MAX_OPEN_FILES: usize = 64;

/// Alignment used for direct I/O: buffer addresses, file offsets and write lengths are multiples of it. A file
/// system asking for more (from `statx` `STATX_DIOALIGN`) gets buffered I/O for that file.
pub const DIRECT_ALIGN: usize = 4096;

/// Longest the copy loop waits without looking at the cancel flag: cancellation takes effect within this plus the
/// time the operations in flight take to finish.
pub const CANCEL_POLL_MS: u64 = 10;

/// A throttled job reads in pieces of about this much of its rate (rounded down to [`DIRECT_ALIGN`], at least
/// that, at most a buffer), so that any window of a second passes its rate within about 1%: at 5 MB/s a piece is
/// 48 KiB instead of a 1 MiB chunk (21% of a second's budget); from 100 MiB/s on pieces are whole chunks.
pub const THROTTLE_GRAIN: std::time::Duration = std::time::Duration::from_millis(10);

/// Threads of the portable backend.
pub const PORTABLE_THREADS: usize = 4;

const _: () = assert!(BUFFER_BYTES % DIRECT_ALIGN == 0);
const _: () = assert!(POOL_BYTES_DEFAULT % BUFFER_BYTES == 0);
const _: () = assert!(POOL_BYTES_DEFAULT / BUFFER_BYTES <= u16::MAX as usize);
const _: () = assert!(POOL_BYTES_MAX / BUFFER_BYTES <= u16::MAX as usize);
const _: () = assert!(2 * (POOL_BYTES_MAX / BUFFER_BYTES) + 2 * MAX_OPEN_FILES <= MAX_RING_ENTRIES as usize);
