//! Opening sources and targets (with O_DIRECT where it works), hashing, and finishing targets durably.

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use backset_format::manifest::ContentHasher;

use crate::error::CopyError;
use crate::job::CopyRequest;
use crate::limits::{BATCH_SYNC_MAX_BYTES, BUFFER_BYTES, DIRECT_ALIGN, FLUSH_AFTER_BYTES};

/// An open source file and the bytes to copy from it.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) file: File,
    pub(crate) direct: bool,
    /// First byte to copy.
    pub(crate) offset: u64,
    /// Bytes to copy.
    pub(crate) len: u64,
}

/// A newly created target file, open for writing, and whether it is written with direct I/O.
#[derive(Debug)]
pub(crate) struct TargetFile {
    pub(crate) file: File,
    pub(crate) direct: bool,
}

/// Flags every source is opened with. O_NONBLOCK keeps the open of a FIFO or device from hanging; it is cleared
/// again once `statx` shows a regular file ([`set_flags`]).
pub(crate) const SOURCE_OPEN_FLAGS: i32 = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
/// Flags every target is created with: never an existing file, never through a symlink.
pub(crate) const TARGET_OPEN_FLAGS: i32 =
    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
/// Mode of a new target (before the umask).
pub(crate) const TARGET_MODE: u32 = 0o644;
/// What `statx` is asked about a source or target.
pub(crate) const STATX_MASK: u32 = libc::STATX_TYPE | libc::STATX_SIZE | libc::STATX_DIOALIGN;

/// `statx` of an open file (the portable backend; the ring does the same through `IORING_OP_STATX`).
pub(crate) fn statx_fd(file: &File) -> std::io::Result<libc::statx> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx on an open descriptor with AT_EMPTY_PATH and an empty C string writes at most one `statx`
    // into the buffer, which is sized for it; the result is checked before the buffer is read.
    let rc = unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, STATX_MASK, stx.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statx returned 0, so it filled the structure (which was zeroed before anyway).
    Ok(unsafe { stx.assume_init() })
}

/// Whether direct I/O at [`DIRECT_ALIGN`] may work, from `statx` `STATX_DIOALIGN` (Linux 6.1+): false when the file
/// system says it does not support direct I/O or asks for more alignment; true when it agrees or does not say (the
/// `fcntl` in [`set_flags`] then decides).
fn direct_possible(stx: &libc::statx) -> bool {
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return true;
    }
    stx.stx_dio_offset_align != 0 && stx.stx_dio_offset_align.max(stx.stx_dio_mem_align) as usize <= DIRECT_ALIGN
}

/// Clears O_NONBLOCK and, when `direct`, sets O_DIRECT on a file opened with `opened_with`. Returns whether O_DIRECT
/// is on: a file system that refuses it gets buffered I/O for this file. At most one `fcntl` when it succeeds, none
/// when nothing changes (a buffered target).
pub(crate) fn set_flags(file: &File, opened_with: i32, direct: bool) -> bool {
    let fd = file.as_raw_fd();
    // F_SETFL changes only the status flags (O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME, O_NONBLOCK) and ignores the
    // access mode and creation flags among `opened_with`.
    let flags = opened_with & !libc::O_NONBLOCK;
    // SAFETY: F_SETFL on a descriptor we own changes only its status flags; the result is checked.
    if direct && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } == 0 {
        return true;
    }
    if flags != opened_with {
        // SAFETY: as above; a failure leaves O_NONBLOCK on, which the first read then reports.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    }
    false
}

/// Checks an opened source against its request and sets it up for reading.
pub(crate) fn source_from_stat(
    req: &CopyRequest,
    file: File,
    stx: &libc::statx,
    want_direct: bool,
) -> Result<Source, CopyError> {
    if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFREG {
        return Err(CopyError::BadRequest { path: req.source.clone(), reason: "not a regular file".into() });
    }
    let size = stx.stx_size;
    let len = match req.len {
        None if req.offset <= size => size - req.offset,
        Some(len) if req.offset.checked_add(len).is_some_and(|end| end <= size) => len,
        _ => {
            return Err(CopyError::SourceShort {
                path: req.source.clone(),
                expected: req.offset.saturating_add(req.len.unwrap_or(0)),
                found: size,
            })
        }
    };
    // Unaligned ranges (journal slices start at record boundaries) are read through the page cache.
    let want_direct = want_direct && req.offset.is_multiple_of(DIRECT_ALIGN as u64) && direct_possible(stx);
    let direct = set_flags(&file, SOURCE_OPEN_FLAGS, want_direct);
    Ok(Source { file, direct, offset: req.offset, len })
}

/// Sets up a newly created target for writing; `stx` is its `statx`, needed only when direct I/O is wanted.
pub(crate) fn target_from_stat(file: File, stx: Option<&libc::statx>, want_direct: bool) -> TargetFile {
    let direct = set_flags(&file, TARGET_OPEN_FLAGS, want_direct && stx.is_some_and(direct_possible));
    TargetFile { file, direct }
}

pub(crate) fn open_source(req: &CopyRequest, want_direct: bool) -> Result<Source, CopyError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(SOURCE_OPEN_FLAGS & !libc::O_RDONLY)
        .open(&req.source)
        .map_err(|e| CopyError::io("open", &req.source, e))?;
    let stx = statx_fd(&file).map_err(|e| CopyError::io("stat", &req.source, e))?;
    source_from_stat(req, file, &stx, want_direct)
}

/// The error for a failed target creation.
pub(crate) fn create_error(path: &Path, e: std::io::Error) -> CopyError {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => CopyError::TargetExists { path: path.to_path_buf() },
        _ => CopyError::io("create", path, e),
    }
}

/// Creates a new target for `len` bytes and allocates its blocks up front (the size rounded up to the direct-I/O
/// alignment when direct): see [`allocation_len`].
pub(crate) fn create_target(
    path: &Path,
    len: u64,
    want_direct: bool,
    created: &mut Created,
) -> Result<TargetFile, CopyError> {
    if let Some(parent) = path.parent() {
        created.create_dirs(parent)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(TARGET_MODE)
        .custom_flags(TARGET_OPEN_FLAGS & !(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL))
        .open(path)
        .map_err(|e| create_error(path, e))?;
    created.record_file(path);
    let stx = if want_direct { Some(statx_fd(&file).map_err(|e| CopyError::io("stat", path, e))?) } else { None };
    let target = target_from_stat(file, stx.as_ref(), want_direct);
    preallocate(&target.file, allocation_len(len, target.direct)).map_err(|e| CopyError::io("allocate", path, e))?;
    Ok(target)
}

/// Bytes to allocate up front for a target of `len` bytes: none for a file of one buffer or less (one write, nothing
/// to run in parallel, and an allocation would cost small files an extra operation). Larger files get their blocks
/// in one piece; writes then overwrite allocated blocks inside the file's size, which ext4 and xfs accept under a
/// shared inode lock (writes that extend a file may be serialised); and a full file system fails before any byte is
/// copied. Rounded up to the direct-I/O alignment when direct (the padded last write stays inside).
pub(crate) fn allocation_len(len: u64, direct: bool) -> u64 {
    if len <= BUFFER_BYTES as u64 {
        0
    } else if direct {
        len.next_multiple_of(DIRECT_ALIGN as u64)
    } else {
        len
    }
}

/// Size a new target of `len` bytes is given before its data is written when it gets no blocks ahead
/// ([`allocation_len`] is 0): with direct I/O, `len` rounded up to the alignment, so that its one (padded) write
/// lands inside the file; otherwise 0 (nothing to set). ext4 waits for a direct write that extends its file in the
/// thread that issued it, which for the ring is one of the kernel's io_uring worker threads, idle until the device
/// answers; a write inside the file's size is submitted and the thread moves on. Setting a size allocates nothing
/// (one `ftruncate`, no I/O), where a `fallocate` costs small files more than it saves (measured 2026-11-26).
pub(crate) fn presize_len(len: u64, direct: bool) -> u64 {
    if direct && allocation_len(len, direct) == 0 {
        len.next_multiple_of(DIRECT_ALIGN as u64)
    } else {
        0
    }
}

/// Gives a new target its [`presize_len`], if any.
pub(crate) fn presize(target: &TargetFile, len: u64, path: &Path) -> Result<(), CopyError> {
    match presize_len(len, target.direct) {
        0 => Ok(()),
        size => target.file.set_len(size).map_err(|e| CopyError::io("set the size of", path, e)),
    }
}

/// `fallocate(2)` of `len` bytes from offset 0, growing the file's size to `len`. File systems without it
/// (EOPNOTSUPP) simply get the writes unallocated.
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let len = i64::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate on a descriptor we own, with mode 0 (allocate and extend); it touches no user memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error().is_some_and(allocation_unsupported) {
        return Ok(());
    }
    Err(e)
}

/// Whether a failed `fallocate` only means the file system cannot allocate ahead (the copy goes on without).
pub(crate) fn allocation_unsupported(errno: i32) -> bool {
    errno == libc::EOPNOTSUPP
}

/// Length to ask of a read or write of `len` bytes: rounded up to the direct-I/O alignment when direct.
pub(crate) fn io_len(len: usize, direct: bool) -> usize {
    if direct {
        len.next_multiple_of(DIRECT_ALIGN)
    } else {
        len
    }
}

/// Whole-file and per-chunk BLAKE3 (the format's [`ContentHasher`]), fed one buffer (= one chunk) at a time, in order.
#[derive(Debug)]
pub(crate) struct FileHasher {
    enabled: bool,
    content: ContentHasher,
    chunks: Vec<[u8; 32]>,
}

impl FileHasher {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, content: ContentHasher::new(), chunks: Vec::new() }
    }

    /// Hashes the next chunk (a full `BUFFER_BYTES`, or the file's last, shorter one).
    pub(crate) fn chunk(&mut self, bytes: &[u8]) {
        if self.enabled {
            self.chunks.push(self.content.chunk(bytes));
        }
    }

    pub(crate) fn finish(self) -> ([u8; 32], Vec<[u8; 32]>) {
        if self.enabled {
            (self.content.finalize(), self.chunks)
        } else {
            ([0; 32], Vec::new())
        }
    }
}

/// Whether a finished target of `len` bytes gets its own fsync; smaller ones ([`BATCH_SYNC_MAX_BYTES`] or less) are
/// made durable by the job's batch sync ([`Created::make_durable`]).
pub(crate) fn fsynced_alone(len: u64) -> bool {
    len > BATCH_SYNC_MAX_BYTES
}

/// Cuts a direct-I/O target back to its size after a padded last write.
pub(crate) fn truncate_target(target: &TargetFile, len: u64, path: &Path) -> Result<(), CopyError> {
    if target.direct && !len.is_multiple_of(DIRECT_ALIGN as u64) {
        target.file.set_len(len).map_err(|e| CopyError::io("truncate", path, e))?;
    }
    Ok(())
}

/// The targets and directories a job created, removed again if the job does not complete.
#[derive(Debug, Default)]
pub(crate) struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// The directory the last target went to, known to exist.
    known_dir: Option<PathBuf>,
    /// Targets written but not fsynced, left to the batch sync at the end of the job (see [`fsynced_alone`]).
    batched: u64,
    /// Bytes written to targets while the job was throttled, since its last write-back flush.
    unflushed: u64,
    /// Write-back flushes started (see [`FLUSH_AFTER_BYTES`]).
    flushes: u64,
}

impl Created {
    /// Remembers a target the job created.
    pub(crate) fn record_file(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
    }

    /// Creates `dir` and its missing ancestors, remembering which ones were new.
    pub(crate) fn create_dirs(&mut self, dir: &Path) -> Result<(), CopyError> {
        // Targets come directory by directory: skip the checks for the one the last target went to.
        if self.known_dir.as_deref() == Some(dir) {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            match std::fs::create_dir(&p) {
                Ok(()) => self.dirs.push(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CopyError::io("create directory", &p, e)),
            }
        }
        self.known_dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// Removes every target and every directory the job made (the job failed or was cancelled): no half-written
    /// file stays behind.
    pub(crate) fn remove_all(&mut self) {
        self.known_dir = None;
        for f in self.files.drain(..) {
            let _ = backset_format::dirfd::remove_path(&f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = backset_format::dirfd::remove_empty_dir(&d);
        }
    }

    /// A target that is not [`fsynced_alone`] is written: [`Created::make_durable`] syncs it with the rest.
    pub(crate) fn defer_sync(&mut self) {
        self.batched += 1;
    }

    /// Counts `bytes` written to a target; only writes while the job is `throttled` count towards a flush.
    pub(crate) fn wrote(&mut self, bytes: u64, throttled: bool) {
        if throttled {
            self.unflushed += bytes;
        }
    }

    /// Whether a throttled job has written [`FLUSH_AFTER_BYTES`] since its last flush: then the caller flushes the
    /// target it just wrote (`fdatasync`, which makes the device write back its cache) and the count starts again.
    pub(crate) fn start_flush(&mut self) -> bool {
        if self.unflushed < FLUSH_AFTER_BYTES {
            return false;
        }
        self.unflushed = 0;
        self.flushes += 1;
        true
    }

    /// Write-back flushes started.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Targets left to the batch sync.
    pub(crate) fn batched(&self) -> u64 {
        self.batched
    }

    /// Makes the job's new files and names durable: fsyncs every directory that holds a target or a new directory,
    /// or, when targets were left to the batch sync, syncs the file system of each such directory once (`syncfs`),
    /// which covers those targets and the directories. Returns how many file systems were synced.
    pub(crate) fn make_durable(&self) -> Result<usize, CopyError> {
        let dirs: BTreeSet<&Path> = self
            .files
            .iter()
            .chain(&self.dirs)
            .filter_map(|f| f.parent())
            // A relative path's parent may be empty: that is the current directory.
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .collect();
        let mut synced = HashSet::new();
        for d in dirs {
            let dir = File::open(d).map_err(|e| CopyError::io("open directory", d, e))?;
            if self.batched == 0 {
                dir.sync_all().map_err(|e| CopyError::io("fsync directory", d, e))?;
                continue;
            }
            let dev = dir.metadata().map_err(|e| CopyError::io("stat directory", d, e))?.dev();
            if synced.insert(dev) {
                // SAFETY: syncfs takes a descriptor we own and touches no user memory; the result is checked.
                if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                    return Err(CopyError::io("sync the file system of", d, std::io::Error::last_os_error()));
                }
            }
        }
        Ok(synced.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_is_due_after_every_flush_after_bytes_written_while_throttled() {
        let mut c = Created::default();
        c.wrote(10 * FLUSH_AFTER_BYTES, false);
        assert!(!c.start_flush(), "unthrottled writes never count");
        c.wrote(FLUSH_AFTER_BYTES - 1, true);
        assert!(!c.start_flush(), "one byte short");
        c.wrote(1, false);
        assert!(!c.start_flush(), "still short: that byte was written unthrottled");
        c.wrote(1, true);
        assert!(c.start_flush(), "exactly FLUSH_AFTER_BYTES");
        assert!(!c.start_flush(), "the count starts again after a flush");
        // A flush that could not start (one in flight) comes at the next write, with everything written since.
        c.wrote(3 * FLUSH_AFTER_BYTES, true);
        assert!(c.start_flush());
        assert!(!c.start_flush(), "one flush however far past the mark");
        assert_eq!(c.flushes(), 2);
    }

    #[test]
    fn small_direct_targets_are_sized_ahead_and_larger_ones_allocated_ahead() {
        let buf = BUFFER_BYTES as u64;
        let align = DIRECT_ALIGN as u64;
        // Direct: up to one buffer the size is set (rounded up to the alignment), above it blocks are allocated.
        for (len, size, allocated) in [
            (0, 0, 0),
            (1, align, 0),
            (align, align, 0),
            (align + 1, 2 * align, 0),
            (buf, buf, 0),
            (buf + 1, 0, buf + align),
        ] {
            assert_eq!((presize_len(len, true), allocation_len(len, true)), (size, allocated), "direct, {len} bytes");
        }
        // Buffered: no size ahead (writes may extend the file), allocation of the exact size above one buffer.
        for (len, allocated) in [(0, 0), (1, 0), (buf, 0), (buf + 1, buf + 1)] {
            assert_eq!((presize_len(len, false), allocation_len(len, false)), (0, allocated), "buffered, {len} bytes");
        }
    }
}
