//! The buffer pool: one anonymous, page-aligned mapping cut into `BUFFER_BYTES` buffers, allocated once.
//!
//! A buffer is owned through a [`Buf`] token, which only [`BufferPool::take`] creates, one per buffer: holding the
//! token is holding the buffer. While an io_uring operation uses a buffer, its token sits in that operation's slot
//! (or, for a read, with the chunk being read), so no slice of the buffer exists in user space during the operation.
//!
//! The pool is shared by every job of its SM (`SmCopier`): each buffer taken is recorded with the job that took it
//! (its owner key). A token dropped instead of given back (a job that stopped on an error or a panic) only makes its
//! buffer unavailable until [`BufferPool::release_owner`], which runs once that job has ended: on the ring thread
//! after the job's state (where all its tokens live) is dropped, and for the portable backend after the job's threads
//! are joined. Other jobs' buffers are untouched by it.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::limits::BUFFER_BYTES;

/// Exclusive ownership of one pool buffer, for as long as the pool is borrowed.
#[derive(Debug)]
pub(crate) struct Buf<'p> {
    index: u16,
    pool_id: usize,
    _pool: PhantomData<&'p BufferPool>,
}

impl Buf<'_> {
    /// The buffer's index (its registered-buffer index when it is registered).
    pub(crate) fn index(&self) -> u16 {
        self.index
    }
}

/// A fixed pool of page-aligned I/O buffers.
#[derive(Debug)]
pub(crate) struct BufferPool {
    base: NonNull<u8>,
    count: usize,
    owners: Mutex<Owners>,
}

/// Which buffers are free, and which job holds each of the others.
#[derive(Debug)]
struct Owners {
    free: Vec<u16>,
    /// The owner key of the job holding each buffer (`FREE`: none).
    owner: Vec<u64>,
}

/// No job holds the buffer. Owner keys start at 1.
const FREE: u64 = 0;

/// The buffer is lent to a streaming job's consumer (a [`crate::Chunk`]): no job's, so [`BufferPool::release_owner`]
/// never frees it; only [`BufferPool::give_back_lent`], when the chunk is dropped, does. Job keys count up from 1
/// and never reach it.
const LENT: u64 = u64::MAX;

// SAFETY: the mapping is plain memory owned by the pool; access to each buffer goes through its unique `Buf` token
// (see `slice_mut`), and the free list is behind a mutex, so sharing the pool between threads is sound.
unsafe impl Send for BufferPool {}
// SAFETY: as above: `&BufferPool` hands out buffer slices only against distinct tokens.
unsafe impl Sync for BufferPool {}

impl BufferPool {
    /// Maps `count` buffers. Fails with the OS error when the mapping is refused.
    pub(crate) fn new(count: usize) -> std::io::Result<Self> {
        assert!(count > 0 && count <= u16::MAX as usize, "pool of {count} buffers");
        let len = count * BUFFER_BYTES;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap does not return null on success");
        let owners = Owners { free: (0..count as u16).rev().collect(), owner: vec![FREE; count] };
        Ok(Self { base, count, owners: Mutex::new(owners) })
    }

    /// Number of buffers.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// A free buffer for the job `owner` (a key above 0, unique to the job), if any.
    pub(crate) fn take(&self, owner: u64) -> Option<Buf<'_>> {
        assert!(owner != FREE && owner != LENT, "owner keys start at 1 and stay below u64::MAX");
        let mut owners = self.owners();
        let index = owners.free.pop()?;
        owners.owner[index as usize] = owner;
        Some(Buf { index, pool_id: self.base.as_ptr() as usize, _pool: PhantomData })
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give_back(&self, buf: Buf<'_>) {
        assert_eq!(buf.pool_id, self.base.as_ptr() as usize, "buffer returned to another pool");
        let mut owners = self.owners();
        owners.owner[buf.index as usize] = FREE;
        owners.free.push(buf.index);
    }

    /// Lends a buffer out of its job (to a streaming job's consumer): it stays taken, under no job, until
    /// [`give_back_lent`](Self::give_back_lent). The token is consumed, so no code of the job can reach the buffer
    /// any more. Returns its index.
    pub(crate) fn lend(&self, buf: Buf<'_>) -> u16 {
        assert_eq!(buf.pool_id, self.base.as_ptr() as usize, "buffer lent from another pool");
        self.owners().owner[buf.index as usize] = LENT;
        buf.index
    }

    /// Returns a lent buffer to the pool (the consumer dropped its chunk).
    pub(crate) fn give_back_lent(&self, index: u16) {
        let mut owners = self.owners();
        assert_eq!(owners.owner[index as usize], LENT, "buffer {index} given back as lent but not lent");
        owners.owner[index as usize] = FREE;
        owners.free.push(index);
    }

    /// Makes the buffers the job `owner` still holds free again and returns how many there were: those whose token
    /// the job dropped instead of giving it back (it stopped on an error or a panic). Call it only once the job has
    /// ended: its tokens are gone (they live in the job's state, dropped by then) and no kernel operation and no
    /// hashing thread uses its buffers (a job waits them out before it ends). Other jobs' buffers are untouched.
    pub(crate) fn release_owner(&self, owner: u64) -> usize {
        let mut owners = self.owners();
        let Owners { free, owner: owned } = &mut *owners;
        let mut lost = 0;
        for (index, o) in owned.iter_mut().enumerate() {
            if *o == owner {
                *o = FREE;
                free.push(index as u16);
                lost += 1;
            }
        }
        lost
    }

    /// Buffers free now.
    pub(crate) fn free_count(&self) -> usize {
        self.owners().free.len()
    }

    /// The ownership table. No code panics while holding it, so a poisoned lock (a panic elsewhere in that thread)
    /// holds a consistent table.
    fn owners(&self) -> MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start address of buffer `index`: page-aligned, `BUFFER_BYTES` long, valid while the pool lives.
    pub(crate) fn ptr(&self, index: u16) -> *mut u8 {
        assert!((index as usize) < self.count);
        // SAFETY: index < count, so the offset stays inside the mapping of count * BUFFER_BYTES bytes.
        unsafe { self.base.as_ptr().add(index as usize * BUFFER_BYTES) }
    }

    /// The buffer's bytes, writable.
    pub(crate) fn slice_mut<'a>(&'a self, buf: &'a mut Buf<'_>) -> &'a mut [u8] {
        assert_eq!(buf.pool_id, self.base.as_ptr() as usize);
        // SAFETY: the range is inside the mapping (see `ptr`); `buf` is the unique token of this buffer (only `take`
        // makes one, for a free buffer, and a buffer is free again only through `give_back`, which consumes its
        // token, `release_owner` once the job that held it ended, its tokens gone, or `give_back_lent` for a lent
        // buffer, which has no token: `lend` consumed it) and is borrowed mutably for
        // the slice's lifetime, so this is the only reference to these bytes; no kernel operation and no hashing
        // thread uses the buffer while user code holds its token (a buffer handed to the hashing thread or to a
        // write moves its token into that operation or into `parked`, see uring/flush.rs).
        unsafe { std::slice::from_raw_parts_mut(self.ptr(buf.index), BUFFER_BYTES) }
    }

    /// An iovec per buffer, for registration with a ring.
    pub(crate) fn iovecs(&self, count: usize) -> Vec<libc::iovec> {
        (0..count.min(self.count) as u16)
            .map(|i| libc::iovec { iov_base: self.ptr(i).cast(), iov_len: BUFFER_BYTES })
            .collect()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in `new`. Nothing uses the memory any more: a job borrows the
        // pool and waits out every operation in flight before it ends, on every path (the io_uring backend's guard,
        // `uring::Driver`'s `Drop`); a ring with the buffers registered holds the pool (`uring::Uring`, through an
        // `Arc`) and unregisters them in its `Drop`, before its reference to the pool goes.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.count * BUFFER_BYTES);
        }
    }
}
