//! Streaming jobs: instead of writing each file to a target, the copier lends every buffer it read and hashed to a
//! consumer ([`ChunkSink`]), in file order for each file, as a [`Chunk`]. The buffer stays out of the pool until the
//! consumer drops the chunk, so the pool bounds what the consumer holds too: when every buffer is held by the
//! consumer (an upload slower than the archive's disk), the job's reads wait for one to come back. A job's rate
//! limit counts the bytes read from the archive, so what the consumer gets, and sends on, follows it.
//!
//! A chunk is lent only once its read completed and the job's hashing thread answered for it: from then on no kernel
//! operation and no thread of the copier reads or writes the buffer, and it is under no job in the pool
//! (`BufferPool::lend`), so neither a job's end (`release_owner`) nor a cancel, an error or a panic gives it to
//! anyone else. Only the chunk's `Drop` returns it. Each chunk holds the pool (an `Arc`), so the mapping outlives
//! every chunk, even one kept after its job and its copier are gone.

use std::fmt;
use std::sync::{mpsc, Arc};

use crate::pool::{Buf, BufferPool};

/// Bytes of one file (or range) read by a streaming job: a pool buffer lent to the consumer until it is dropped.
pub struct Chunk {
    pool: Arc<BufferPool>,
    index: u16,
    request: usize,
    offset: u64,
    len: usize,
    file_len: u64,
}

impl Chunk {
    /// Lends `buf` (read and hashed: nothing else uses it any more) holding `len` bytes at `offset` of request
    /// `request`, whose file (or range) has `file_len` bytes.
    pub(crate) fn lend(
        pool: &Arc<BufferPool>,
        buf: Buf<'_>,
        request: usize,
        offset: u64,
        len: usize,
        file_len: u64,
    ) -> Self {
        assert!(len <= crate::limits::BUFFER_BYTES && len > 0, "a chunk of {len} bytes");
        let index = pool.lend(buf);
        Self { pool: Arc::clone(pool), index, request, offset, len, file_len }
    }

    /// Index of the request in the job.
    pub fn request(&self) -> usize {
        self.request
    }

    /// Where the chunk starts, relative to the request's first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes in the chunk (at least 1, at most [`crate::limits::BUFFER_BYTES`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: a chunk has at least one byte (an empty file gives none).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the whole file (or range) as the copier reads it.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Whether this is the file's last chunk.
    pub fn is_last(&self) -> bool {
        self.offset + self.len as u64 == self.file_len
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the buffer is `len <= BUFFER_BYTES` bytes at `ptr(index)`, inside the mapping, which `self.pool`
        // keeps alive. It is lent (`BufferPool::lend`): no token of it exists (`lend` consumed the only one, and
        // `take` makes one only for a free buffer), so no job reads into it or writes from it; its read completed
        // and the hashing thread answered for it before it was lent; and it is free again only through this chunk's
        // `Drop`. So nothing writes these bytes while this shared borrow lives.
        unsafe { std::slice::from_raw_parts(self.pool.ptr(self.index), self.len) }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for Chunk {
    /// Returns the buffer to the pool, where the copier's reads take it again.
    fn drop(&mut self) {
        self.pool.give_back_lent(self.index);
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("request", &self.request)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("file_len", &self.file_len)
            .finish()
    }
}

/// Where a streaming job ([`crate::SmCopier::stream`]) hands its chunks. Called on the copier's own threads (the
/// SM's ring thread): it must not block. A chunk it drops goes straight back to the pool.
pub trait ChunkSink: Sync {
    /// Takes the next chunk of its file (each file's chunks come in order; files may interleave).
    fn chunk(&self, chunk: Chunk);
}

impl ChunkSink for mpsc::Sender<Chunk> {
    /// Sends the chunk on; once the receiver is gone, the chunk is dropped (its buffer back in the pool).
    fn chunk(&self, chunk: Chunk) {
        let _ = self.send(chunk);
    }
}
