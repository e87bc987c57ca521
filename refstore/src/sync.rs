//! The store's two small shared helpers: locking a mutex across a panic, and making a directory's names durable.

use std::fs::File;
use std::path::Path;
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
