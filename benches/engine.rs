//! Engine benchmarks on the real disk, on a database and backup set made in the setup, each beside its baseline in
//! the same criterion group.
//!
//! - `restore/small`: `restore` (to the latest point) of a set of a bulk-loaded archive with a full, an incremental
//!   and a journal element, each after changes to 1% of the keys; beside `cp -a` of the same set followed by `sync`
//!   (the tool an operator would otherwise use). Throughput: the set's bytes.
//! - `hotcopy/incremental`: an incremental hot copy after 1% of the keys changed (and a checkpoint wrote them to
//!   their atoms), into a set that has a full; beside a full hot copy of the same archive into a new set.
//!
//! Every sample starts cold, as in `benches/copy.rs`: everything synced and the page cache dropped (as root;
//! otherwise a warning says so). Only the restore, the copy, or the hot copy is timed; the change before each
//! incremental and the removal of each sample's output are not.
//!
//! The archive is [`ARCHIVE_MIB`] MiB (bulk-loaded under `target/bench-data/`, removed at the end). Under
//! `cargo bench -- --test` (one iteration of each, to check that they run) it is [`TEST_ARCHIVE_MIB`] MiB.
//! Run: `cargo bench --bench engine` (or one group: `cargo bench --bench engine -- restore/small`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backset::engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType, JobState};
use backset::engine::restore::{restore, RestoreOptions, RestorePoint};
use backset::refstore::bulk::{bulk_key, bulk_load, bulk_value, BulkSpec};
use backset::refstore::{Config, Database, Txn};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Size of the bench archive in MiB.
const ARCHIVE_MIB: u64 = 256;
/// Size of the archive under `--test`.
const TEST_ARCHIVE_MIB: u64 = 8;
/// Length of every bulk-loaded value.
const VALUE_BYTES: usize = 4096;
/// Seed of the bulk-loaded values.
const SEED: u64 = 7;
/// One key in this many is changed before an incremental.
const CHANGE_ONE_IN: u64 = 100;
/// Puts per transaction of a change.
const PUTS_PER_TXN: usize = 256;
/// Longest a hot copy may take before the bench fails.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(600);

fn archive_bytes() -> u64 {
    // criterion's own `--test` flag: one iteration of each bench, to check that it runs.
    let mib = if std::env::args().any(|a| a == "--test") { TEST_ARCHIVE_MIB } else { ARCHIVE_MIB };
    mib << 20
}

/// A database bulk-loaded in a scratch directory under `target/bench-data/` (removed on drop), open, with its hot
/// copy manager.
struct Bench {
    scratch: tempfile::TempDir,
    db: Arc<Database>,
    manager: HotCopyManager,
    keys: u64,
    /// How many changes were made (each rewrites a different 1% of the keys).
    changes: u64,
}

impl Bench {
    fn new(name: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
        std::fs::create_dir_all(&root).unwrap();
        let scratch = tempfile::Builder::new().prefix(name).tempdir_in(root).unwrap();
        let db_dir = scratch.path().join("database");
        // A journal hot copy needs the journal kept for it (`journal-hot-copy enable`).
        let config = Config { journal_hot_copy: true, ..Config::new(name) };
        let spec = BulkSpec { bytes_per_archive: archive_bytes(), value_bytes: VALUE_BYTES, seed: SEED };
        let loaded = bulk_load(&db_dir, &config, &spec).unwrap();
        let db = Arc::new(Database::open(&db_dir, config).unwrap());
        let manager = HotCopyManager::new(db.hot_copy_archives(), scratch.path().join("admin")).unwrap();
        Self { scratch, db, manager, keys: loaded.keys, changes: 0 }
    }

    /// An absolute path in the scratch directory (hot copy destinations must be absolute).
    fn path(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.scratch.path()).unwrap().join(name)
    }

    /// Rewrites 1% of the keys (a different 1% each time) and checkpoints, so their atoms change.
    fn change(&mut self) {
        let offset = self.changes % CHANGE_ONE_IN;
        self.changes += 1;
        let keys: Vec<u64> = (offset..self.keys).step_by(CHANGE_ONE_IN as usize).collect();
        for chunk in keys.chunks(PUTS_PER_TXN) {
            let puts = chunk
                .iter()
                .map(|&n| {
                    let key = bulk_key(n);
                    let value = bulk_value(SEED + self.changes, &key, VALUE_BYTES);
                    (key, value)
                })
                .collect();
            self.db.commit(&Txn { puts, deletes: Vec::new() }).unwrap();
        }
        self.db.checkpoint_now().unwrap();
    }

    /// Runs a hot copy of `kind` into `set` to its end; panics unless it completed.
    fn hot_copy(&self, kind: HotCopyType, set: &Path) {
        let (start_id, id) = self.manager.start(HotCopyRequest::new(kind).backup_dir(0, set)).unwrap();
        let status = self.manager.status(start_id, id, Some(HOT_COPY_TIMEOUT)).unwrap();
        assert_eq!(status.status, JobState::Completed, "{kind} hot copy into {}: {}", set.display(), status.message);
    }

    fn close(self) {
        self.manager.shutdown(Duration::from_secs(10));
        self.db.close().unwrap();
    }
}

/// Syncs everything and drops the page cache (see the module docs).
fn cold() {
    assert!(Command::new("sync").status().unwrap().success());
    if std::fs::write("/proc/sys/vm/drop_caches", "1").is_err() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| eprintln!("warning: cannot drop the page cache (not root): samples may read from it"));
    }
}

/// Bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            total += tree_bytes(&entry.path());
        } else if ty.is_file() {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

fn remove(path: &Path) {
    backset::format::dirfd::remove_path(path).unwrap();
}

fn restore_group(c: &mut Criterion) {
    let mut bench = Bench::new("restore");
    let set = bench.path("set");
    bench.hot_copy(HotCopyType::Full, &set);
    bench.change();
    bench.hot_copy(HotCopyType::Incremental, &set);
    bench.change();
    bench.hot_copy(HotCopyType::Journal, &set);
    let mut g = c.benchmark_group("restore/small");
    g.sample_size(10).throughput(Throughput::Bytes(tree_bytes(&set)));
    g.warm_up_time(Duration::from_millis(1));
    let restored = bench.path("restored");
    g.bench_function("backset restore", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                cold();
                let started = Instant::now();
                restore(&set, &restored, RestorePoint::Latest, &RestoreOptions::default()).unwrap();
                total += started.elapsed();
                remove(&restored);
            }
            total
        })
    });
    g.bench_function("cp -a + sync", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                cold();
                let started = Instant::now();
                assert!(Command::new("cp").arg("-a").arg(&set).arg(&restored).status().unwrap().success());
                assert!(Command::new("sync").status().unwrap().success());
                total += started.elapsed();
                remove(&restored);
            }
            total
        })
    });
    g.finish();
    bench.close();
}

fn hotcopy_group(c: &mut Criterion) {
    let mut bench = Bench::new("hotcopy");
    let set = bench.path("set");
    bench.hot_copy(HotCopyType::Full, &set);
    let mut g = c.benchmark_group("hotcopy/incremental");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.bench_function("incremental after 1% changed", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                bench.change();
                cold();
                let started = Instant::now();
                bench.hot_copy(HotCopyType::Incremental, &set);
                total += started.elapsed();
            }
            total
        })
    });
    let full = bench.path("full");
    g.bench_function("full", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                cold();
                let started = Instant::now();
                bench.hot_copy(HotCopyType::Full, &full);
                total += started.elapsed();
                remove(&full);
            }
            total
        })
    });
    g.finish();
    bench.close();
}

criterion_group!(benches, restore_group, hotcopy_group);
criterion_main!(benches);
