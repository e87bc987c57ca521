//! Reading and atomically writing metadata files.
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
        let _ = fs::remove_file(&tmp);
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

/// Reads and decodes the metadata file at `path`. Refuses a symlink or a non-regular file, and a file longer than
/// a header plus `MAX_METADATA_BODY_BYTES`, before reading it.
pub fn read_metadata<T: Metadata>(path: &Path) -> Result<T, ReadError> {
    let io = |op| move |source| ReadError::Io { op, path: path.to_path_buf(), source };
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
        |source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                ReadError::NotRegular { path: path.to_path_buf() }
            } else {
                ReadError::Io { op: "open", path: path.to_path_buf(), source }
            }
        },
    )?;
    let md = f.metadata().map_err(io("stat"))?;
    if !md.is_file() {
        return Err(ReadError::NotRegular { path: path.to_path_buf() });
    }
    let max = METADATA_HEADER_BYTES as u64 + MAX_METADATA_BODY_BYTES;
    let mut bytes = Vec::with_capacity(md.len().min(max) as usize);
    // Read one byte past the limit so that a file that grew after the stat is still caught.
    (&mut f).take(max + 1).read_to_end(&mut bytes).map_err(io("read"))?;
    let to_err = |source| ReadError::Metadata { path: path.to_path_buf(), source };
    if bytes.len() as u64 > max {
        return Err(to_err(crate::error::MetadataError::BodyTooLarge {
            declared: bytes.len() as u64 - METADATA_HEADER_BYTES as u64,
            max: MAX_METADATA_BODY_BYTES,
        }));
    }
    meta::decode(&bytes).map_err(to_err)
}
