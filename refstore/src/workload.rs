//! A seeded workload generator for the reference store, with a record of every acknowledged transaction.
//!
//! [`Workload::start`] runs `threads` committer threads against a [`Database`]. Thread `i` draws its transactions from
//! a Xoshiro256++ generator seeded with `seed + i` (a documented, portable algorithm), so each thread's sequence of
//! transactions is reproducible; the interleaving between threads is not. Every acknowledged commit is recorded with
//! its id, timestamp and operations: [`replay`] applies them in id order, independently of the store, which makes
//! an oracle for the store's content (after concurrent load, after a reopen, after a restore to any txn).

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::db::{Database, Txn};
use crate::sync::lock;

/// What the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Seed; thread `i` uses `seed + i`.
    pub seed: u64,
    /// Committer threads, at least 1.
    pub threads: usize,
    /// Target rate over all threads, transactions per second; `None`: as fast as commits return.
    pub rate_txns_per_second: Option<f64>,
    /// Keys are `key-<n>` with n in `0..key_space`.
    pub key_space: u64,
    /// Length of each value written.
    pub value_bytes: RangeInclusive<usize>,
    /// Operations per transaction.
    pub ops_per_txn: RangeInclusive<usize>,
    /// Probability that an operation is a delete rather than a put.
    pub delete_fraction: f64,
    /// Probability that a transaction touches at least two storage groups (when the database has two or more;
    /// otherwise every transaction stays in one group).
    pub cross_group_fraction: f64,
    /// Stop after this many acknowledged transactions over all threads; `None`: until stopped.
    pub max_txns: Option<u64>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            threads: 2,
            rate_txns_per_second: None,
            key_space: 1000,
            value_bytes: 8..=64,
            ops_per_txn: 1..=4,
            delete_fraction: 0.2,
            cross_group_fraction: 0.3,
            max_txns: None,
        }
    }
}

/// One acknowledged transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedTxn {
    /// Its id.
    pub txn_id: u64,
    /// Its commit timestamp (microseconds since the Unix epoch).
    pub timestamp_micros: u64,
    /// Its operations.
    pub txn: Txn,
}

/// What a finished workload did.
#[derive(Debug, Clone)]
pub struct WorkloadReport {
    /// Every acknowledged transaction, in id order.
    pub acked: Vec<AckedTxn>,
    /// Commit errors that stopped a thread (for example the database closing under it).
    pub errors: Vec<String>,
    /// Wall time from start to stop.
    pub elapsed: Duration,
}

/// A cloneable handle that stops a running workload.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks every thread to stop after its current commit.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A running workload.
#[derive(Debug)]
pub struct Workload {
    stop: StopHandle,
    acked: Arc<Mutex<Vec<AckedTxn>>>,
    count: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Option<String>>>,
    started: Instant,
}

impl Workload {
    /// Starts the threads.
    pub fn start(db: Arc<Database>, config: WorkloadConfig) -> Self {
        assert!(config.threads > 0, "a workload needs at least one thread");
        assert!(config.key_space > 0, "a workload needs a key space of at least one key");
        let stop = StopHandle(Arc::new(AtomicBool::new(false)));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let threads = (0..config.threads)
            .map(|i| {
                let (db, config, stop, acked, count) =
                    (Arc::clone(&db), config.clone(), stop.clone(), Arc::clone(&acked), Arc::clone(&count));
                std::thread::Builder::new()
                    .name(format!("workload-{i}"))
                    .spawn(move || run_thread(&db, &config, i, &stop, &acked, &count))
                    .expect("spawn a workload thread")
            })
            .collect();
        Self { stop, acked, count, threads, started: Instant::now() }
    }

    /// A handle that stops the workload from anywhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Transactions acknowledged so far.
    pub fn acked_count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Stops the threads and returns the report.
    pub fn stop(self) -> WorkloadReport {
        self.stop.stop();
        self.join()
    }

    /// Waits for the threads to finish on their own (`max_txns`, an error, or a [`StopHandle`]).
    pub fn join(self) -> WorkloadReport {
        let errors = self.threads.into_iter().filter_map(|h| h.join().expect("workload thread panicked")).collect();
        let mut acked = std::mem::take(&mut *lock(&self.acked));
        acked.sort_by_key(|a| a.txn_id);
        WorkloadReport { acked, errors, elapsed: self.started.elapsed() }
    }
}

/// The key/value content that applying `acked` in id order yields: the oracle.
pub fn replay(acked: &[AckedTxn]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    replay_upto(acked, u64::MAX)
}

/// [`replay`] of the transactions with id `<= last` only (point-in-time).
pub fn replay_upto(acked: &[AckedTxn], last: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut sorted: Vec<&AckedTxn> = acked.iter().filter(|a| a.txn_id <= last).collect();
    sorted.sort_by_key(|a| a.txn_id);
    let mut out = BTreeMap::new();
    for a in sorted {
        for (k, v) in &a.txn.puts {
            out.insert(k.clone(), v.clone());
        }
        for k in &a.txn.deletes {
            out.remove(k);
        }
    }
    out
}

/// The workload's key number `n`.
pub fn key(n: u64) -> Vec<u8> {
    format!("key-{n:010}").into_bytes()
}

fn run_thread(
    db: &Database,
    config: &WorkloadConfig,
    index: usize,
    stop: &StopHandle,
    acked: &Mutex<Vec<AckedTxn>>,
    count: &AtomicU64,
) -> Option<String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed.wrapping_add(index as u64));
    let groups: Vec<u32> = db.meta().storage_groups.iter().flatten().map(|g| g.id).collect();
    let interval = config.rate_txns_per_second.map(|r| Duration::from_secs_f64(config.threads as f64 / r));
    let mut next_at = Instant::now();
    loop {
        if stop.0.load(Ordering::Acquire) {
            return None;
        }
        if let Some(max) = config.max_txns {
            if count.load(Ordering::Acquire) >= max {
                return None;
            }
        }
        if let Some(interval) = interval {
            // Pacing toward the target rate, not a wait for a condition.
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            }
            next_at += interval;
        }
        let txn = generate(&mut rng, config, db, &groups);
        match db.commit(&txn) {
            Ok(c) => {
                lock(acked).push(AckedTxn { txn_id: c.txn_id, timestamp_micros: c.timestamp_micros, txn });
                count.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => return Some(format!("workload thread {index}: {e}")),
        }
    }
}

fn generate(rng: &mut Xoshiro256PlusPlus, config: &WorkloadConfig, db: &Database, groups: &[u32]) -> Txn {
    let n_ops = rng.random_range(config.ops_per_txn.clone()).max(1);
    // Groups the transaction's keys must fall into, one per operation (round robin over the chosen groups).
    let chosen: Vec<u32> = if groups.len() < 2 {
        Vec::new()
    } else if n_ops >= 2 && rng.random_bool(config.cross_group_fraction) {
        let a = rng.random_range(0..groups.len());
        let b = (a + rng.random_range(1..groups.len())) % groups.len();
        vec![groups[a], groups[b]]
    } else {
        vec![groups[rng.random_range(0..groups.len())]]
    };
    let mut seen = HashSet::new();
    let mut txn = Txn::new();
    for i in 0..n_ops {
        let want = chosen.get(i % chosen.len().max(1)).copied();
        // Rejection sampling for a key of the wanted group; the key space may hold few keys of a group, so give up
        // after a bounded number of draws and take the last key drawn.
        let mut k = key(rng.random_range(0..config.key_space));
        for _ in 0..256 {
            if !seen.contains(&k) && want.is_none_or(|g| db.group_of(&k) == Some(g)) {
                break;
            }
            k = key(rng.random_range(0..config.key_space));
        }
        if !seen.insert(k.clone()) {
            continue;
        }
        if rng.random_bool(config.delete_fraction) {
            txn.deletes.push(k);
        } else {
            let mut v = vec![0u8; rng.random_range(config.value_bytes.clone())];
            rng.fill(&mut v[..]);
            txn.puts.push((k, v));
        }
    }
    txn
}
