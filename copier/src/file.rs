//! Opening sources and targets (with O_DIRECT where it works), hashing, and finishing targets durably.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::CopyError;
use crate::job::CopyRequest;
use crate::limits::DIRECT_ALIGN;

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

/// An open, newly created target.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) file: File,
    pub(crate) direct: bool,
}

/// Direct-I/O alignment the file system asks for, from `statx` `STATX_DIOALIGN` (Linux 6.1+): `None` when the file
/// does not support direct I/O, `Some(0)` when the kernel does not say.
fn dio_align(file: &File) -> Option<u32> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx on an open descriptor with AT_EMPTY_PATH and an empty C string writes at most one `statx`
    // into the buffer, which is sized for it; the result is checked before the buffer is read.
    let rc = unsafe {
        libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, stx.as_mut_ptr())
    };
    if rc != 0 {
        return Some(0);
    }
    // SAFETY: statx returned 0, so it filled the structure (which was zeroed before anyway).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Some(0);
    }
    (stx.stx_dio_offset_align != 0).then(|| stx.stx_dio_offset_align.max(stx.stx_dio_mem_align))
}

/// Turns O_DIRECT on for an open file when the file system supports it at an alignment the copier meets.
fn try_direct(file: &File) -> bool {
    match dio_align(file) {
        None => return false,
        Some(a) if a as usize > DIRECT_ALIGN => return false,
        Some(_) => {}
    }
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own change only its status flags; results are checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) == 0
    }
}

pub(crate) fn open_source(req: &CopyRequest, want_direct: bool) -> Result<Source, CopyError> {
    let file = File::open(&req.source).map_err(|e| CopyError::io("open", &req.source, e))?;
    let md = file.metadata().map_err(|e| CopyError::io("stat", &req.source, e))?;
    if !md.is_file() {
        return Err(CopyError::BadRequest { path: req.source.clone(), reason: "not a regular file".into() });
    }
    let size = md.len();
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
    let direct = want_direct && req.offset % DIRECT_ALIGN as u64 == 0 && try_direct(&file);
    Ok(Source { file, direct, offset: req.offset, len })
}

pub(crate) fn create_target(path: &Path, want_direct: bool, created: &mut Created) -> Result<Target, CopyError> {
    if let Some(parent) = path.parent() {
        created.create_dirs(parent)?;
    }
    let file =
        OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(path).map_err(
            |e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => CopyError::TargetExists { path: path.to_path_buf() },
                _ => CopyError::io("create", path, e),
            },
        )?;
    created.files.push(path.to_path_buf());
    let direct = want_direct && try_direct(&file);
    Ok(Target { file, direct })
}

/// Length to ask of a read or write of `len` bytes: rounded up to the direct-I/O alignment when direct.
pub(crate) fn io_len(len: usize, direct: bool) -> usize {
    if direct {
        len.next_multiple_of(DIRECT_ALIGN)
    } else {
        len
    }
}

/// Whole-file and per-chunk BLAKE3, fed one buffer (= one chunk) at a time, in order.
#[derive(Debug)]
pub(crate) struct FileHasher {
    enabled: bool,
    whole: blake3::Hasher,
    chunks: Vec<[u8; 32]>,
}

impl FileHasher {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, whole: blake3::Hasher::new(), chunks: Vec::new() }
    }

    /// Hashes the next chunk (a full `BUFFER_BYTES`, or the file's last, shorter one).
    pub(crate) fn chunk(&mut self, bytes: &[u8]) {
        if self.enabled {
            self.whole.update(bytes);
            self.chunks.push(*blake3::hash(bytes).as_bytes());
        }
    }

    pub(crate) fn finish(self) -> ([u8; 32], Vec<[u8; 32]>) {
        if self.enabled {
            (*self.whole.finalize().as_bytes(), self.chunks)
        } else {
            ([0; 32], Vec::new())
        }
    }
}

/// Cuts a direct-I/O target back to its size after a padded last write.
pub(crate) fn truncate_target(target: &Target, len: u64, path: &Path) -> Result<(), CopyError> {
    if target.direct && len % DIRECT_ALIGN as u64 != 0 {
        target.file.set_len(len).map_err(|e| CopyError::io("truncate", path, e))?;
    }
    Ok(())
}

/// The targets and directories a job created, removed again if the job does not complete.
#[derive(Debug, Default)]
pub(crate) struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    /// Creates `dir` and its missing ancestors, remembering which ones were new.
    fn create_dirs(&mut self, dir: &Path) -> Result<(), CopyError> {
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
        Ok(())
    }

    /// Removes every target and every directory the job made (the job failed or was cancelled): no half-written
    /// file stays behind.
    pub(crate) fn remove_all(&mut self) {
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(&f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }

    /// Fsyncs every directory that holds a target or a new directory, so the new names are durable.
    pub(crate) fn sync_dirs(&self) -> Result<(), CopyError> {
        let dirs: BTreeSet<&Path> = self
            .files
            .iter()
            .chain(&self.dirs)
            .filter_map(|f| f.parent())
            // A relative path's parent may be empty: that is the current directory.
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .collect();
        for d in dirs {
            File::open(d).and_then(|f| f.sync_all()).map_err(|e| CopyError::io("fsync directory", d, e))?;
        }
        Ok(())
    }
}
