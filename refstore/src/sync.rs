//! The store's small shared helpers: locking a mutex across a panic, making a directory's names durable, and making
//! many files durable at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::StoreError;

/// Locks a mutex, taking the data of a poisoned one (a thread that panicked holding it): the store's invariants do
/// not depend on a critical section completing, and refusing every later call would only hide the first panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fsyncs a directory so that names created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))
}

/// Fsyncs the files at `paths` (already written and closed), from up to `threads` threads at once: the file system
/// commits concurrent fsyncs together, where one after another costs a device flush each. One open descriptor per
/// thread at a time. Returns the first error.
pub(crate) fn sync_files(paths: &[PathBuf], threads: usize) -> Result<(), StoreError> {
    if paths.is_empty() {
        return Ok(());
    }
    let threads = threads.clamp(1, paths.len());
    let per_thread = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .try_for_each(|p| File::open(p).and_then(|f| f.sync_all()).map_err(StoreError::io("fsync", p)))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}
