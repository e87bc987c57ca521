//! The buffer pool: one anonymous, page-aligned mapping cut into `BUFFER_BYTES` buffers, allocated once.
//!
//! A buffer is owned through a [`Buf`] token, which only [`BufferPool::take`] creates, one per buffer: holding the
//! token is holding the buffer. While an io_uring operation uses a buffer, its token sits in that operation's slot
//! (or, for a read, with the chunk being read), so no slice of the buffer exists in user space during the operation.
//!
//! A token borrows its pool, so a job cannot keep one past its end; a token dropped instead of given back (a job
//! that stopped on an error or a panic) only makes its buffer unavailable until [`BufferPool::reclaim`], which
//! `Copier::copy` calls after every job: `&mut` to the pool proves no token is left.

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
    free: Mutex<Vec<u16>>,
}

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
        Ok(Self { base, count, free: Mutex::new((0..count as u16).rev().collect()) })
    }

    /// Number of buffers.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// A free buffer, if any.
    pub(crate) fn take(&self) -> Option<Buf<'_>> {
        let index = self.free_list().pop()?;
        Some(Buf { index, pool_id: self.base.as_ptr() as usize, _pool: PhantomData })
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give_back(&self, buf: Buf<'_>) {
        assert_eq!(buf.pool_id, self.base.as_ptr() as usize, "buffer returned to another pool");
        self.free_list().push(buf.index);
    }

    /// Makes every buffer free again and returns how many had not been given back (their tokens were dropped: a job
    /// that stopped on an error or a panic). Sound because `&mut self` means no token borrows the pool any more.
    pub(crate) fn reclaim(&mut self) -> usize {
        let free = self.free.get_mut().unwrap_or_else(PoisonError::into_inner);
        let lost = self.count - free.len();
        if lost > 0 {
            *free = (0..self.count as u16).rev().collect();
        }
        lost
    }

    /// Buffers free now.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn free_count(&self) -> usize {
        self.free_list().len()
    }

    /// The free list. No code panics while holding it, so a poisoned lock (a panic elsewhere in that thread) holds a
    /// consistent list.
    fn free_list(&self) -> MutexGuard<'_, Vec<u16>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
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
        // SAFETY: the range is inside the mapping (see `ptr`); `buf` is the unique token of this buffer and is
        // borrowed mutably for the slice's lifetime, so this is the only reference to these bytes; no kernel
        // operation and no hashing thread uses the buffer while user code holds its token (a buffer handed to the
        // hashing thread or to a write moves its token into that operation or into `parked`, see uring/flush.rs).
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
        // `uring::Run`'s `Drop`); a ring with the buffers registered owns the pool (`uring::Uring`) and unregisters
        // them in its `Drop`, which runs before this one.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.count * BUFFER_BYTES);
        }
    }
}
