//! Hashing off the ring thread: the io_uring backend hands each buffer, in file order, to one hashing thread and
//! queues its write at the same time (the write and the hash only read the buffer), so BLAKE3 runs on another core
//! while the ring thread keeps the disk busy. The buffer goes back to the pool once both are done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use crate::file::FileHasher;

/// A buffer's address, sent to the hashing thread.
pub(crate) struct BufPtr(*const u8);

// SAFETY: the pointer is only dereferenced by the hashing thread, for `len` bytes of a pool buffer whose token the
// ring thread keeps (in a write operation, or parked) and never writes through, nor gives back to the pool, until
// the hashing thread has answered for it (see `uring/flush.rs`, `hash_and_write` and `hash_done`). A token dropped
// on a failed job's way out does not return its buffer to the pool until `BufferPool::release_owner`, once the job
// ended, and a job ends only when its hashing thread has answered for every buffer it was given (or is gone).
unsafe impl Send for BufPtr {}

impl BufPtr {
    pub(crate) fn new(ptr: *const u8) -> Self {
        Self(ptr)
    }
}

/// Work for the hashing thread.
pub(crate) enum Msg {
    /// Hash the next `len` bytes of request `request` (one chunk, in file order).
    Chunk { request: usize, ptr: BufPtr, len: usize, buf: u16 },
    /// Request `request` has no more bytes: answer with its hashes.
    Finish { request: usize },
}

/// Answers of the hashing thread, in the order of the messages.
pub(crate) enum Done {
    /// The chunk in buffer `buf` is hashed: the hashing thread no longer reads the buffer.
    Chunk { buf: u16 },
    /// The whole-file BLAKE3 and the chunk hashes of `request`.
    Finished { request: usize, hash: [u8; 32], chunks: Vec<[u8; 32]> },
}

/// The hashing thread's loop: runs until the sender is dropped. Once `abandon` is set (the job failed or was
/// cancelled) it answers for the chunks still queued without hashing them, so the job stops promptly.
pub(crate) fn worker(rx: Receiver<Msg>, tx: Sender<Done>, enabled: bool, abandon: Arc<AtomicBool>) {
    let mut hashers: HashMap<usize, FileHasher> = HashMap::new();
    for msg in rx {
        let done = match msg {
            Msg::Chunk { buf, .. } if abandon.load(Relaxed) => Done::Chunk { buf },
            Msg::Chunk { request, ptr, len, buf } => {
                // SAFETY: `ptr` is the start of a pool buffer of `BUFFER_BYTES >= len` bytes that stays mapped (the
                // ring thread holds the pool until every job ended, and a job ends only once this thread answered for
                // every buffer it was given) and that nobody writes until this thread answers for it (see `BufPtr`).
                let bytes = unsafe { std::slice::from_raw_parts(ptr.0, len) };
                hashers.entry(request).or_insert_with(|| FileHasher::new(enabled)).chunk(bytes);
                Done::Chunk { buf }
            }
            Msg::Finish { request } => {
                let (hash, chunks) = hashers.remove(&request).unwrap_or_else(|| FileHasher::new(enabled)).finish();
                Done::Finished { request, hash, chunks }
            }
        };
        if tx.send(done).is_err() {
            return;
        }
    }
}
