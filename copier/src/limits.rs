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
/// per-file state of many small files copied side by side. A small file spends most of its time waiting on the
/// kernel (open, create, statx, write and fsync each go to an io_uring worker thread), so it takes many in flight
/// to keep the disk and both cores busy: 50,000 x 16 KiB copied in 4.2-5.5 s with 256, 6.2-7.5 s with 64, 8.3-9.3 s
/// with 16 (2026-11-26). Fewer when the descriptor limit is low: see [`open_files_allowed`].
pub const MAX_OPEN_FILES: usize = 256;

/// Share of the process's descriptors (the soft `RLIMIT_NOFILE`, after raising it to the hard limit) a job may hold:
/// one eighth, two per open file, so that a 1024 limit still leaves three quarters to the database, the server and
/// other jobs.
pub const NOFILE_SHARE_DIVISOR: u64 = 8;

/// Files a job keeps open at once under a descriptor limit of `nofile`: [`MAX_OPEN_FILES`], or fewer so that its
/// descriptors (two per file) stay within `nofile / NOFILE_SHARE_DIVISOR`; at least one.
pub fn open_files_allowed(nofile: u64) -> usize {
    let files = nofile / NOFILE_SHARE_DIVISOR / 2;
    usize::try_from(files).unwrap_or(usize::MAX).clamp(1, MAX_OPEN_FILES)
}

/// Most io_uring worker threads the kernel may start for one ring's blocking operations (opens, creates, `statx`,
/// extending writes, fsyncs), set with `IORING_REGISTER_IOWQ_MAX_WORKERS` (Linux 5.15+; older kernels keep their
/// default of four per CPU). The default of 8 on a 2-core machine queued each small file's steps behind each other.
pub const IO_WORKERS: u32 = 32;

/// Largest target fsynced only as part of a batch: a job makes every target of at most this size (one buffer) durable
/// at its end with one `syncfs(2)` of each file system it wrote to, which also makes the directories durable, instead
/// of an fsync per file. Each fsync of a new file costs a device cache flush and, on ext4, a write of its inode's
/// block and of its directory's: 50,000 x 16 KiB targets took 105,000 device writes and 7,000 flushes with an fsync
/// each, 50,100 writes and one flush with the batch (2026-11-26). Larger targets keep their own fsync (its cost is
/// small beside their data, and a job of a few large files does not sync the rest of the file system).
pub const BATCH_SYNC_MAX_BYTES: u64 = BUFFER_BYTES as u64;

/// A throttled job makes the device write back what it wrote after every this many bytes written to its targets (an
/// `fdatasync` of the target being written; at most one in flight per job), so that no more than about this much of
/// its data waits in a volatile write cache. Unflushed, that cache (a VM host's page cache on the reference machine)
/// wrote back in bursts that held every read on the device, the database's too, for up to 0.8 s: three jobs sharing
/// 200 MB/s read 4-9% short with 1 s windows down to 3 MB/s; flushed every 32 MiB they read within 0.7% and every
/// window within 1.4% (docs/PERFORMANCE.md, Rate limit). An unthrottled job does not flush early: it asked for
/// speed, and the flushes made a copy of 8 x 256 MiB take 1.6x the time there. 8 and 16 MiB let a few windows stray
/// further (up to +2.8% and +7.0%); 64 MiB let dips through.
pub const FLUSH_AFTER_BYTES: u64 = 32 << 20;

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

/// Bytes at the start of each file (or range) a job hands back in its report ([`crate::FileReport::head`]), taken
/// from the buffer the first chunk was read into: no extra I/O. A caller that checks a header (a restore and a check
/// parse each atom's 80-byte header) reads it there instead of opening the file again. Costs this much per file of a
/// job's report, beside its chunk hashes.
pub const HEAD_BYTES: usize = 128;

/// Threads of the portable backend.
pub const PORTABLE_THREADS: usize = 4;

const _: () = assert!(BUFFER_BYTES.is_multiple_of(DIRECT_ALIGN));
const _: () = assert!(POOL_BYTES_DEFAULT.is_multiple_of(BUFFER_BYTES));
const _: () = assert!(HEAD_BYTES <= BUFFER_BYTES);
const _: () = assert!(POOL_BYTES_DEFAULT / BUFFER_BYTES <= u16::MAX as usize);
const _: () = assert!(POOL_BYTES_MAX / BUFFER_BYTES <= u16::MAX as usize);
const _: () = assert!(2 * (POOL_BYTES_MAX / BUFFER_BYTES) + 2 * MAX_OPEN_FILES <= MAX_RING_ENTRIES as usize);

/// Raises the process's soft descriptor limit (`RLIMIT_NOFILE`) to its hard limit and returns the soft limit then in
/// force (0 when it cannot be read). A long-running process (`backset serve`) calls it at start, so that connections,
/// journal segments and hot copies share the whole limit from the first moment; the copier calls it again before a
/// job (a no-op by then).
pub fn raise_nofile_limit() -> u64 {
    raise_soft_limit(libc::RLIMIT_NOFILE)
}

/// Raises the soft limit of `resource` to its hard limit and returns the soft limit then in force (failures leave it
/// as it was).
pub(crate) fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct that we own; a failure leaves the limit as it was.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(resource, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_keep_to_an_eighth_of_the_descriptor_limit_within_one_and_the_maximum() {
        assert_eq!(open_files_allowed(0), 1);
        assert_eq!(open_files_allowed(15), 1);
        assert_eq!(open_files_allowed(64), 4);
        assert_eq!(open_files_allowed(1024), 64);
        assert_eq!(open_files_allowed(4095), 255);
        assert_eq!(open_files_allowed(4096), MAX_OPEN_FILES);
        assert_eq!(open_files_allowed(u64::MAX), MAX_OPEN_FILES);
    }
}
