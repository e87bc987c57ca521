//! `backset-refstore`: the reference store, a small real key/value database of N storage managers (SMs), each
//! keeping an archive in exactly FORMAT.md's layout, each implementing the engine's [`Archive`](backset_engine::Archive). It is the embedded
//! default that the server, the demo, the tests and the benchmarks use, and one SM among others: the engine does not
//! know it (an SM links only `backset-engine`; see the engine's `examples/embed.rs`).
//!
//! - [`Database`] (`db.rs`): commits, routing, the checkpointer; [`SmArchive`] (`sm.rs`): one SM and its
//!   [`Archive`](backset_engine::Archive) implementation; `journal.rs`: segments and their index; `writer.rs`: the group-commit writer;
//!   `recovery.rs`: opening an archive (also [`read_archive`] for offline readers); `data.rs`, `codec.rs`: atoms and
//!   records; [`config`](Config): the database's metadata.
//! - [`workload`]: a seeded workload generator that records every acknowledged transaction (a replay oracle).
//! - [`bulk`]: a bulk loader that writes gigabytes of atoms directly, for benchmarks.
//! - [`limits`]: every bound the store puts on sizes, counts and durations.
//! - [`fault`]: the store's test-only fault point.
//!
//! # Layout
//! ```text
//! <root>/
//!   backset-db            database metadata: name, id, SMs, atom buckets, storage groups (see `config`)
//!   0/atoms/<16 hex>      archive 0: atom files
//!   0/journal/<16 hex>    archive 0: journal segments
//!   1/...                 archive 1, ... (archive ids 0..N-1 in start order)
//! ```
//!
//! # Data model
//! Keys and values are byte strings. A key belongs to a storage group (`blake3(key)` bytes 8..16 as a u64, modulo
//! the number of groups, in id order; group 0 when the database has no storage groups) and to an atom bucket
//! (bytes 0..8 modulo `atom_buckets`); its atom id is `group id << 32 | bucket`. An atom's body is the postcard
//! encoding of its sorted key/value list ([`codec`](self) docs); an atom that holds no key has no file.
//!
//! # Commit
//! [`Database::commit`] validates the transaction, assigns the next transaction id and a timestamp (microseconds,
//! never below the previous commit's) under one lock, queues one record per involved SM in txn order, and returns
//! once every involved SM's journal writer has made its record durable (group commit: one write and one fdatasync
//! per batch) and applied it in memory. Without storage groups every SM is involved; with them, the SMs that serve
//! a group the transaction touches, each receiving only the operations of its groups.
//!
//! # Checkpoints and recovery
//! A checkpointer thread (every `Config::checkpoint_interval`, or [`Database::checkpoint_now`]) writes each dirty
//! atom to `atoms/.tmp-<id>`, fsyncs it, renames it over `atoms/<id>`, fsyncs the directory, removes the files of
//! atoms that became empty, advances R, and deletes journal segments whose records are all below R, unless a
//! [`JournalPin`](backset_engine::archive::JournalPin) or journal-hot-copy retention holds them. [`Database::open`] recovers
//! every archive (see `recovery`): atom headers, journal replay above each atom's LSN, torn tail truncated; it then
//! starts a new segment in every journal and continues the transaction sequence.
//!
//! # Known limits
//! - A crash while a transaction is being written to several journals can leave it durable in some of them and
//!   not in others. It was never acknowledged, but recovery does not reconcile the SMs: the archives that hold it
//!   replay it, the others do not (no two-phase commit). Single-SM databases and clean shutdowns are not affected.
//! - Recovery reads one whole segment into memory at a time (at most `limits::MAX_CONFIG_SEGMENT_BYTES` for
//!   segments this store wrote, the format's 4 GiB for restored ones); the record index costs 16 bytes per record
//!   of the segments on disk.
//! - The commit-time atom size check does not count transactions still in flight to the same atom (see
//!   `check_atom_sizes`); the checkpointer then refuses to write an oversize atom and reports it.

mod codec;
mod config;
mod data;
mod db;
mod error;
mod journal;
mod recovery;
mod sm;
mod sync;
mod writer;

pub mod bulk;
pub mod fault;
pub mod limits;
pub mod workload;

pub use codec::Op;
pub use config::{archive_dir, Config, DbMeta, StorageGroup, DB_META_FILE};
pub use db::{Committed, Database, Txn};
pub use error::{CommitError, StoreError};
pub use recovery::{read_archive, read_archive_with_journal, ArchiveData};
pub use sm::{CheckpointStats, RecoveryReport, SegmentInfo, SmArchive};
