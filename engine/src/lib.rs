//! `backset-engine`: the [`Archive`] trait, the reference store, and (to come) hot copy jobs, restore and check.
//!
//! - [`archive`]: the [`Archive`] trait an SM implements to be hot-copied, with the guarantees a hot copy relies on
//!   (see DESIGN.md, "Hot copy: the consistency rule"). `examples/embed.rs` is a minimal SM implementing it.
//! - [`store`]: the reference store, a small real key/value SM (group commit, checkpointer, recovery, storage
//!   groups, journal-hot-copy retention), the embedded default of the server, the tests and the benchmarks.
//! - [`workload`]: a seeded workload generator that records every acknowledged transaction (a replay oracle).
//! - [`bulk`]: a bulk loader that writes gigabytes of atoms directly, for benchmarks.
//! - [`found`]: what a path given to an offline tool holds (a backup set, an archive, an empty directory, a file).
//! - [`limits`]: every bound the engine puts on sizes, counts and durations.
//! - [`lock`]: one process per database or archive directory (an advisory lock a running SM holds).
//! - [`paths`]: destination directories: links resolved as far as a path exists; only the last component created.
//! - [`set`]: backup sets: the one module that reads and writes their metadata and layout.

pub mod archive;
pub mod bulk;
pub mod check;
pub mod found;
pub mod hotcopy;
pub mod limits;
pub mod lock;
pub mod paths;
pub mod restore;
pub mod set;
pub mod store;
pub mod workload;

pub use archive::{Archive, ArchiveError, ArchiveIdentity, AtomFile, JournalPin, JournalSlice};
pub use store::{Committed, Config, Database, StorageGroup, Txn};
