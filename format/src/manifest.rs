//! An element's `control/manifest`: every data file of the element with its size and hashes.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::atom::ATOM_HEADER_BYTES;
use crate::limits::{
    CHUNK_BYTES, MAX_ATOM_BODY_BYTES, MAX_CHUNKS_PER_FILE, MAX_DATA_FILE_BYTES, MAX_MANIFEST_FILES, MAX_SEGMENT_BYTES,
};
use crate::meta::{bounded_vec, check_len, Metadata, MetadataKind};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// What a data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileKind {
    /// A whole atom file (header and body), named by atom id.
    Atom,
    /// A byte range of a journal segment, named by segment number.
    Journal,
}

/// One data file of an element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// What it holds.
    pub kind: FileKind,
    /// Atom id or journal segment number: the file's name is derived from (kind, id), never stored.
    pub id: u64,
    /// Byte offset in the source file where this copy starts: 0 for atoms; for a journal slice, the offset in the
    /// source segment of its first byte (a record boundary, or 0 when the slice starts with the segment header).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub hash: Hash,
    /// BLAKE3 of each `CHUNK_BYTES` slice, in order; the last may be shorter. Empty for an empty file.
    #[serde(deserialize_with = "chunk_hashes")]
    pub chunk_hashes: Vec<Hash>,
}

/// Computes a file's [`FileEntry::hash`] and [`FileEntry::chunk_hashes`] from its chunks, given in order (each
/// `CHUNK_BYTES`, the last one possibly shorter). The first chunk is hashed once, not twice: its BLAKE3 is the
/// whole-file hasher's output after it (same bytes at the same offset), so a file of one chunk (most atoms) costs one
/// hash instead of two.
#[derive(Debug, Clone, Default)]
pub struct ContentHasher {
    whole: blake3::Hasher,
    chunks: u64,
}

impl ContentHasher {
    /// A hasher at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next chunk and returns its BLAKE3 (its entry in `chunk_hashes`).
    pub fn chunk(&mut self, bytes: &[u8]) -> Hash {
        debug_assert!(bytes.len() as u64 <= CHUNK_BYTES, "a chunk is at most CHUNK_BYTES");
        self.whole.update(bytes);
        self.chunks += 1;
        if self.chunks == 1 {
            *self.whole.finalize().as_bytes()
        } else {
            *blake3::hash(bytes).as_bytes()
        }
    }

    /// The BLAKE3 of every byte given so far (the file's `hash`).
    pub fn finalize(&self) -> Hash {
        *self.whole.finalize().as_bytes()
    }
}

/// The manifest of one element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The element this manifest describes.
    pub element_id: Uuid,
    /// Data files, sorted by (kind, id), each (kind, id) once.
    #[serde(deserialize_with = "files")]
    pub files: Vec<FileEntry>,
}

fn chunk_hashes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
    bounded_vec(d, MAX_CHUNKS_PER_FILE as usize, "chunk hashes")
}
fn files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileEntry>, D::Error> {
    bounded_vec(d, MAX_MANIFEST_FILES, "manifest files")
}

/// Largest atom file a manifest may list: its header and the largest body.
pub const MAX_ATOM_FILE_BYTES: u64 = ATOM_HEADER_BYTES as u64 + MAX_ATOM_BODY_BYTES;

/// Number of chunk hashes a file of `size` bytes has: `ceil(size / CHUNK_BYTES)`.
pub const fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES)
}

impl FileEntry {
    fn check(&self) -> Result<(), String> {
        let what = format!("{:?} file {}", self.kind, self.id);
        if self.size > MAX_DATA_FILE_BYTES {
            return Err(format!("{what} is {} bytes, more than the limit of {MAX_DATA_FILE_BYTES}", self.size));
        }
        let expected = chunk_count(self.size);
        if self.chunk_hashes.len() as u64 != expected {
            return Err(format!(
                "{what} of {} bytes lists {} chunk hashes, expected {expected}",
                self.size,
                self.chunk_hashes.len()
            ));
        }
        match self.kind {
            FileKind::Atom if self.offset != 0 => Err(format!("{what} has offset {}, atoms are whole", self.offset)),
            // An atom file is a header and a body of at most MAX_ATOM_BODY_BYTES: a larger entry can only be
            // hostile, and a restore would copy all of it before its hashes and header could refuse it.
            FileKind::Atom if self.size > MAX_ATOM_FILE_BYTES => Err(format!(
                "{what} is {} bytes, more than an atom file can be ({ATOM_HEADER_BYTES}-byte header and at most \
                 {MAX_ATOM_BODY_BYTES} bytes of body)",
                self.size
            )),
            FileKind::Journal if self.offset.checked_add(self.size).is_none_or(|end| end > MAX_SEGMENT_BYTES) => {
                Err(format!(
                    "{what} covers bytes {}+{} beyond the segment limit of {MAX_SEGMENT_BYTES}",
                    self.offset, self.size
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Metadata for Manifest {
    const KIND: MetadataKind = MetadataKind::Manifest;

    fn validate(&self) -> Result<(), String> {
        check_len(self.files.len(), MAX_MANIFEST_FILES, "manifest files")?;
        for (i, f) in self.files.iter().enumerate() {
            f.check()?;
            if let Some(prev) = i.checked_sub(1).map(|p| &self.files[p]) {
                if (prev.kind, prev.id) >= (f.kind, f.id) {
                    return Err(format!(
                        "files must be sorted by (kind, id) without repeats: {:?} {} follows {:?} {}",
                        f.kind, f.id, prev.kind, prev.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a chunk hashed at the wrong place would show.
    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
    }

    #[test]
    fn content_hasher_gives_blake3_of_the_file_and_of_each_chunk() {
        let chunk = CHUNK_BYTES as usize;
        for len in [1, 4096, chunk - 1, chunk, chunk + 1, 3 * chunk + 17] {
            let data = bytes(len);
            let mut h = ContentHasher::new();
            let chunks: Vec<Hash> = data.chunks(chunk).map(|c| h.chunk(c)).collect();
            let expected: Vec<Hash> = data.chunks(chunk).map(|c| *blake3::hash(c).as_bytes()).collect();
            assert_eq!(chunks, expected, "chunk hashes of {len} bytes");
            assert_eq!(h.finalize(), *blake3::hash(&data).as_bytes(), "file hash of {len} bytes");
        }
        assert_eq!(ContentHasher::new().finalize(), *blake3::hash(b"").as_bytes());
    }
}
