//! Backset: hot copies of a running database into backup sets, restore to any transaction, offline validation.
//!
//! This facade re-exports the workspace's library crates:
//! - [`format`](mod@format): the on-disk format (journal segments, atom files, backup-set metadata).
//! - [`copier`]: the io_uring copy engine and the per-SM rate limiter.
//! - [`engine`]: the `Archive` trait, hot copies, restore and check.
//! - [`refstore`]: the reference store, the SM that `serve` and `demo` embed.
//!
//! It also holds [`process_filter`], NuoDB's process filter expressions (`--process-filter`, `filterQuery`), which
//! depends on nothing but `std` so that the fuzz crate compiles it alone.

pub use backset_copier as copier;
pub use backset_engine as engine;
pub use backset_format as format;
pub use backset_refstore as refstore;

pub mod process_filter;
