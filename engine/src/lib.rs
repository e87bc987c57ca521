//! `backset-engine`: the [`Archive`] trait an SM implements, hot copy jobs, restore and check.
//!
//! - [`archive`]: the [`Archive`] trait an SM implements to be hot-copied, with the guarantees a hot copy relies on
//!   (see DESIGN.md, "Hot copy: the consistency rule"). `examples/embed.rs` is a minimal SM implementing it, hot-copied
//!   into a backup set and restored, linking only this crate. The reference store (`backset-refstore`) is another.
//! - [`hotcopy`]: hot copy jobs and the [`HotCopyManager`](hotcopy::HotCopyManager) that runs them over the archives
//!   it is given.
//! - [`restore`], [`check`]: restoring a backup set, and checking a set or an archive offline.
//! - [`clock`]: the wall clock in microseconds, as statuses and records carry it.
//! - [`found`]: what a path given to an offline tool holds (a backup set, an archive, an empty directory, a file).
//! - [`limits`]: every bound the engine puts on sizes, counts and durations.
//! - [`lock`]: one process per database or archive directory (an advisory lock a running SM holds).
//! - [`paths`]: destination directories: links resolved as far as a path exists; only the last component created.
//! - [`set`]: backup sets: the one module that reads and writes their metadata and layout.

pub mod archive;
pub mod check;
pub mod clock;
pub mod found;
pub mod hotcopy;
pub mod limits;
pub mod lock;
pub mod paths;
pub mod restore;
pub mod set;

pub use archive::{Archive, ArchiveError, ArchiveIdentity, AtomFile, JournalPin, JournalSlice};
