//! Reading the files of a backup set or an archive (regular files only, bounded), and atomically writing metadata
//! files.
//!
//! Atomic write: the bytes go to a temporary file in the target's directory, which is fsynced, renamed over the
//! target, and the directory is fsynced. A crash at any point leaves either the old file or the new one under the
//! target name, never a mix (POSIX rename is atomic within a directory). A stray temporary file may remain; its name
//! starts with `.tmp-` and readers ignore it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{ReadError, WriteError};
use crate::limits::MAX_METADATA_BODY_BYTES;
use crate::meta::{self, Metadata, METADATA_HEADER_BYTES};

/// Prefix of temporary files made by [`write_file_atomic`].
pub const TMP_FILE_PREFIX: &str = ".tmp-";

/// Writes `bytes` to `dir/name` atomically and durably (see the module docs). `name` must be a plain file name.
pub fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    assert!(!name.is_empty() && !name.contains('/'), "write_file_atomic takes a file name, got {name:?}");
    let target = dir.join(name);
    let tmp = dir.join(format!("{TMP_FILE_PREFIX}{name}-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { op, path, source }
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &target).map_err(io("rename", &target))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = crate::dirfd::remove_path(&tmp);
    }
    result
}

/// Fsyncs a directory, so that the names created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| WriteError::Io {
        op: "fsync directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Encodes `value` and writes it to `dir/name` atomically.
pub fn write_metadata<T: Metadata>(dir: &Path, name: &str, value: &T) -> Result<(), WriteError> {
    let bytes = meta::encode(value).map_err(|source| WriteError::Metadata { path: dir.join(name), source })?;
    write_file_atomic(dir, name, &bytes)
}

/// Opens `path` for reading if it is a regular file, and returns it with its length. Every reader of a backup set
/// or an archive opens its files here: never through a symbolic link (`O_NOFOLLOW`), never waiting for the writer
/// of a FIFO or reading a device (`O_NONBLOCK` keeps the open from blocking; `fstat` of the opened file must show a
/// regular file, else [`ReadError::NotRegular`]). `O_NONBLOCK` stays set: reads of a regular file ignore it.
pub fn open_regular(path: &Path) -> Result<(File, u64), ReadError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => ReadError::NotRegular { path: path.to_path_buf() },
            _ => ReadError::Io { op: "open", path: path.to_path_buf(), source },
        })?;
    let md = f.metadata().map_err(|source| ReadError::Io { op: "stat", path: path.to_path_buf(), source })?;
    if !md.is_file() {
        return Err(ReadError::NotRegular { path: path.to_path_buf() });
    }
    Ok((f, md.len()))
}

/// Reads the whole regular file at `path` ([`open_regular`]) if it is at most `max` bytes: a longer one is refused
/// before anything is read, and one that grows past `max` while it is read is refused after `max + 1` bytes.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let (f, len) = open_regular(path)?;
    let too_large = |len| ReadError::TooLarge { path: path.to_path_buf(), len, max };
    if len > max {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut bytes).map_err(|source| ReadError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads and decodes the metadata file at `path`: a regular file ([`open_regular`]) of at most a header plus
/// `MAX_METADATA_BODY_BYTES`, refused before it is read when longer.
pub fn read_metadata<T: Metadata>(path: &Path) -> Result<T, ReadError> {
    let max = METADATA_HEADER_BYTES as u64 + MAX_METADATA_BODY_BYTES;
    let bytes = read_regular(path, max).map_err(|e| match e {
        ReadError::TooLarge { path, len, .. } => ReadError::Metadata {
            path,
            source: crate::error::MetadataError::BodyTooLarge {
                declared: len - METADATA_HEADER_BYTES as u64,
                max: MAX_METADATA_BODY_BYTES,
            },
        },
        other => other,
    })?;
    meta::decode(&bytes).map_err(|source| ReadError::Metadata { path: path.to_path_buf(), source })
}
