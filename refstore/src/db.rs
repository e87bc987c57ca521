//! The [`Database`]: N storage managers under one transaction sequence, their commits and their checkpointer.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use backset_engine::archive::{Archive, ArchiveIdentity};
use backset_engine::clock::now_micros;
use backset_engine::lock::{DirKind, DirLock};
use backset_format::limits::MAX_RECORD_PAYLOAD_BYTES;
use uuid::Uuid;

use crate::codec::{self, Op};
use crate::config::{archive_dir, Config, DbMeta, DB_META_FILE};
use crate::error::{show_key, CommitError, StoreError};
use crate::journal::{JournalState, SegmentFile};
use crate::limits::{MAX_KEY_BYTES, MAX_OPS_PER_TXN, MAX_STORE_ATOM_BODY_BYTES, MAX_VALUE_BYTES};
use crate::sm::{CheckpointStats, Pending, RecoveryReport, SmArchive, SmParts, Stop};
use crate::sync::{lock, sync_dir};
use crate::{recovery, writer};

/// A transaction: puts and deletes, each key at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Keys to set, with their new values.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys to remove (removing an absent key is not an error).
    pub deletes: Vec<Vec<u8>>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.puts.push((key.into(), value.into()));
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.deletes.push(key.into());
        self
    }
}

/// An acknowledged commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The transaction id.
    pub txn_id: u64,
    /// Its commit timestamp, microseconds since the Unix epoch; never below an earlier transaction's.
    pub timestamp_micros: u64,
}

/// Where keys go: storage group and atom.
#[derive(Debug)]
pub(crate) struct Routing {
    buckets: u32,
    /// `(group id, archive ids serving it)`, by id; `[(0, all)]` without storage groups.
    pub(crate) groups: Vec<(u32, Vec<usize>)>,
    has_groups: bool,
}

impl Routing {
    /// `(index into groups, atom id)` of `key`.
    pub(crate) fn route(&self, key: &[u8]) -> (usize, u64) {
        let h = blake3::hash(key);
        let b = h.as_bytes();
        let bucket = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) % u64::from(self.buckets);
        let g = (u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")) % self.groups.len() as u64) as usize;
        (g, u64::from(self.groups[g].0) << 32 | bucket)
    }

    fn group_atoms(&self, g: usize) -> Range<u64> {
        let base = u64::from(self.groups[g].0) << 32;
        base..base + u64::from(self.buckets)
    }
}

#[derive(Debug)]
struct Seq {
    next: u64,
    last_timestamp_micros: u64,
}

struct Inner {
    root: PathBuf,
    meta: DbMeta,
    config: Config,
    routing: Routing,
    sms: Vec<Arc<SmArchive>>,
    seq: Mutex<Seq>,
    assigned: Arc<AtomicU64>,
    closed: AtomicBool,
    stop_checkpointer: Mutex<bool>,
    stop_cv: Condvar,
    /// The directory locks (database, then archives), released once the store is closed or crashed.
    locks: Mutex<Vec<DirLock>>,
}

/// A running reference store. See the [crate documentation](crate).
///
/// All methods take `&self` and may be called from any thread. Dropping it stops its threads after the queued
/// commits are written, without a final checkpoint (the journal holds everything); [`Database::close`] also
/// checkpoints.
pub struct Database {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("root", &self.inner.root)
            .field("meta", &self.inner.meta)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database in `root`, creating it (directory, metadata, archives) when `root` holds none, and
    /// recovers every archive. Archive directories that exist without metadata (a restore) are recovered too: give
    /// their database id in `config.database_id`.
    ///
    /// Takes the exclusive lock ([`backset_engine::lock`]) of `root` and of each archive directory before reading them, and
    /// holds them until [`close`](Self::close), [`crash`](Self::crash) or drop: a second open of the directory, in
    /// this process or another, fails with [`StoreError::Locked`] naming the holder.
    pub fn open(root: impl AsRef<Path>, config: Config) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        config.validate()?;
        std::fs::create_dir_all(&root).map_err(StoreError::io("create directory", &root))?;
        // One process per directory (backset_engine::lock), before anything is read: the database directory, then each
        // archive directory (so the offline tools refuse an archive this process serves).
        let mut locks = vec![DirLock::exclusive(&root, DirKind::Database)?];
        let existing = DbMeta::read(&root)?;
        let meta = match &existing {
            Some(m) => {
                m.check(&root.join(DB_META_FILE), &config)?;
                m.clone()
            }
            None => DbMeta::from_config(&config)?,
        };
        let routing = routing_of(&meta);
        let mut recovered = Vec::with_capacity(config.sms);
        for a in 0..config.sms {
            let dir = archive_dir(&root, a as u64);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(StoreError::io("create directory", &dir))?;
                sync_dir(&root)?;
            }
            locks.push(DirLock::exclusive(&dir, DirKind::Archive)?);
            let journal_dir = dir.join(backset_format::layout::JOURNAL_DIR);
            recovered.push(recovery::recover(&dir, &journal_dir, Some(meta.database_id), true)?);
        }
        if existing.is_none() {
            meta.write(&root)?;
        }
        let last_txn = recovered.iter().map(|r| r.last_txn).max().unwrap_or(0);
        let last_ts = recovered.iter().map(|r| r.last_timestamp_micros).max().unwrap_or(0);
        let next = last_txn + 1;
        let assigned = Arc::new(AtomicU64::new(last_txn));
        let mut sms = Vec::with_capacity(config.sms);
        let mut segment_files = Vec::with_capacity(config.sms);
        for (a, rec) in recovered.into_iter().enumerate() {
            let dir = archive_dir(&root, a as u64);
            let mut segments = rec.segments;
            let number = segments.keys().next_back().map_or(1, |n| n + 1);
            let journal_dir = dir.join(backset_format::layout::JOURNAL_DIR);
            let mut seg = SegmentFile::create(&journal_dir, meta.database_id, a as u64, number, next)?;
            seg.sync(true)?;
            sync_dir(&journal_dir)?;
            let r = rec.data.recovery_start();
            let recovery = RecoveryReport {
                atom_files: rec.atom_files,
                segments: segments.len(),
                records_replayed: rec.records_replayed,
                torn_tails: rec.torn.clone(),
                last_txn: rec.last_txn,
            };
            let oldest = segments.values().next().map_or(u64::MAX, |s| s.header_first_txn);
            segments.insert(number, seg.segment());
            let groups: Vec<u32> = routing.groups.iter().filter(|(_, s)| s.contains(&a)).map(|(id, _)| *id).collect();
            let storage_groups = match &meta.storage_groups {
                None => Vec::new(),
                Some(gs) => gs.iter().filter(|g| groups.contains(&g.id)).map(|g| (g.id, g.name.clone())).collect(),
            };
            let sm = SmArchive::new(SmParts {
                recovery,
                identity: ArchiveIdentity {
                    database_name: meta.name.clone(),
                    database_id: meta.database_id,
                    archive_id: a as u64,
                    storage_groups,
                },
                dir,
                groups,
                assigned: Arc::clone(&assigned),
                data: rec.data,
                journal: JournalState { segments, current: number, recycled_below: r.min(oldest) },
                journal_hot_copy: config.journal_hot_copy_of(a),
                segment_bytes: config.segment_bytes,
            });
            sms.push(Arc::new(sm));
            segment_files.push(seg);
        }
        let inner = Arc::new(Inner {
            root,
            meta,
            config,
            routing,
            sms,
            seq: Mutex::new(Seq { next, last_timestamp_micros: last_ts }),
            assigned,
            closed: AtomicBool::new(false),
            stop_checkpointer: Mutex::new(false),
            stop_cv: Condvar::new(),
            locks: Mutex::new(locks),
        });
        let mut threads = Vec::new();
        for (sm, seg) in inner.sms.iter().zip(segment_files) {
            let sm = Arc::clone(sm);
            let name = format!("journal-{}", sm.archive_id());
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || writer::writer_loop(sm, seg))
                .map_err(StoreError::io("spawn journal writer thread", &inner.root))?;
            threads.push(h);
        }
        if let Some(interval) = inner.config.checkpoint_interval {
            let inner2 = Arc::clone(&inner);
            let h = std::thread::Builder::new()
                .name("checkpointer".into())
                .spawn(move || checkpointer_loop(&inner2, interval))
                .map_err(StoreError::io("spawn checkpointer thread", &inner.root))?;
            threads.push(h);
        }
        Ok(Self { inner, threads: Mutex::new(threads) })
    }

    /// Commits `txn` and returns once it is durable in every involved journal (and visible to [`get`](Self::get)).
    pub fn commit(&self, txn: &Txn) -> Result<Committed, CommitError> {
        let inner = &*self.inner;
        let count = txn.puts.len() + txn.deletes.len();
        if count == 0 {
            return Err(CommitError::Empty);
        }
        if count > MAX_OPS_PER_TXN {
            return Err(CommitError::TooManyOps { count, max: MAX_OPS_PER_TXN });
        }
        let mut seen = HashSet::with_capacity(count);
        let keys = txn.puts.iter().map(|(k, _)| k).chain(&txn.deletes);
        for k in keys {
            if k.is_empty() || k.len() > MAX_KEY_BYTES {
                return Err(CommitError::BadKey { key: show_key(k), len: k.len(), max: MAX_KEY_BYTES });
            }
            if !seen.insert(&k[..]) {
                return Err(CommitError::DuplicateKey { key: show_key(k) });
            }
        }
        if let Some((k, v)) = txn.puts.iter().find(|(_, v)| v.len() > MAX_VALUE_BYTES) {
            return Err(CommitError::ValueTooLarge { key: show_key(k), len: v.len(), max: MAX_VALUE_BYTES });
        }
        let records = self.plan(txn)?;
        for (a, ops, _) in &records {
            check_atom_sizes(&inner.sms[*a], ops)?;
        }
        // Assign the id and queue the records under one lock, so every journal receives its records in id order.
        let committed = {
            let mut seq = lock(&inner.seq);
            if inner.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed { name: inner.meta.name.clone() }.into());
            }
            for (a, _, _) in &records {
                let q = lock(&inner.sms[*a].queue);
                if let Some(reason) = &q.failed {
                    return Err(StoreError::WriterFailed { archive_id: *a as u64, reason: reason.clone() }.into());
                }
                if q.stop != Stop::Run {
                    return Err(StoreError::Closed { name: inner.meta.name.clone() }.into());
                }
            }
            let txn_id = seq.next;
            let timestamp_micros = now_micros().max(seq.last_timestamp_micros);
            seq.next += 1;
            seq.last_timestamp_micros = timestamp_micros;
            for (a, ops, payload) in &records {
                let sm = &inner.sms[*a];
                lock(&sm.queue).pending.push_back(Pending {
                    txn: txn_id,
                    timestamp_micros,
                    payload: Arc::clone(payload),
                    ops: Arc::clone(ops),
                });
                sm.work.notify_one();
            }
            inner.assigned.store(txn_id, Ordering::Release);
            Committed { txn_id, timestamp_micros }
        };
        for (a, _, _) in &records {
            inner.sms[*a].wait_done(committed.txn_id, &inner.meta.name)?;
        }
        Ok(committed)
    }

    /// The bytes of the largest journal record payload `txn` would need (over the SMs it involves); a commit is
    /// refused when this exceeds `backset_format::limits::MAX_RECORD_PAYLOAD_BYTES`.
    pub fn record_payload_len(&self, txn: &Txn) -> u64 {
        self.route(txn).iter().map(|(_, ops)| codec::payload_len(ops)).max().unwrap_or(0)
    }

    /// Routes every operation of `txn`; returns the operations of each involved SM, in transaction order.
    fn route(&self, txn: &Txn) -> Vec<(usize, Arc<Vec<Op>>)> {
        let inner = &*self.inner;
        let routed: Vec<(usize, Op)> = txn
            .puts
            .iter()
            .map(|(k, v)| (k, Some(v)))
            .chain(txn.deletes.iter().map(|k| (k, None)))
            .map(|(k, v)| {
                let (g, atom_id) = inner.routing.route(k);
                (g, Op { atom_id, key: k.clone(), value: v.cloned() })
            })
            .collect();
        if inner.routing.has_groups {
            let mut involved = vec![Vec::new(); inner.sms.len()];
            for (g, op) in &routed {
                for &a in &inner.routing.groups[*g].1 {
                    involved[a].push(op.clone());
                }
            }
            involved.into_iter().enumerate().filter(|(_, ops)| !ops.is_empty()).map(|(a, o)| (a, Arc::new(o))).collect()
        } else {
            let ops = Arc::new(routed.into_iter().map(|(_, op)| op).collect::<Vec<_>>());
            (0..inner.sms.len()).map(|a| (a, Arc::clone(&ops))).collect()
        }
    }

    /// The record (archive, operations, payload) of each involved SM; refuses a payload over the format's limit.
    #[allow(clippy::type_complexity)]
    fn plan(&self, txn: &Txn) -> Result<Vec<(usize, Arc<Vec<Op>>, Arc<Vec<u8>>)>, CommitError> {
        let per_sm = self.route(txn);
        let mut records = Vec::with_capacity(per_sm.len());
        let mut last_payload: Option<(Arc<Vec<Op>>, Arc<Vec<u8>>)> = None;
        for (a, ops) in per_sm {
            let len = codec::payload_len(&ops);
            if len > u64::from(MAX_RECORD_PAYLOAD_BYTES) {
                return Err(CommitError::PayloadTooLarge { archive_id: a as u64, len, max: MAX_RECORD_PAYLOAD_BYTES });
            }
            let payload = match &last_payload {
                Some((prev, payload)) if Arc::ptr_eq(prev, &ops) => Arc::clone(payload),
                _ => Arc::new(codec::encode_payload(&ops)),
            };
            last_payload = Some((Arc::clone(&ops), Arc::clone(&payload)));
            records.push((a, ops, payload));
        }
        Ok(records)
    }

    /// The value of `key`, or `None`. Reads from the first SM that serves the key's storage group; loads the key's
    /// atom from its file on first use.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (g, atom_id) = self.inner.routing.route(key);
        let a = self.inner.routing.groups[g].1[0];
        self.inner.sms[a].get(atom_id, key)
    }

    /// Calls `f` on every key/value pair of the database, storage group by group and atom by atom (each group read
    /// from the first SM that serves it). Holds one atom's pairs in memory at a time. Not a snapshot while commits
    /// run: each atom is read as of the moment it is visited.
    pub fn scan(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        let r = &self.inner.routing;
        for (g, (_, sms)) in r.groups.iter().enumerate() {
            self.inner.sms[sms[0]].scan(r.group_atoms(g), &mut f)?;
        }
        Ok(())
    }

    /// Every key/value pair, sorted by key (holds the whole database in memory; see [`scan`](Self::scan)).
    pub fn entries(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out = BTreeMap::new();
        self.scan(|k, v| {
            out.insert(k.to_vec(), v.to_vec());
        })?;
        Ok(out)
    }

    /// The durable watermark D: every transaction `<= D` is durable on every SM it involves.
    pub fn durable_watermark(&self) -> u64 {
        self.inner.sms.iter().map(|sm| sm.durable_txn()).min().unwrap_or(0)
    }

    /// The last transaction id assigned (acknowledged or about to be).
    pub fn last_txn(&self) -> u64 {
        self.inner.assigned.load(Ordering::Acquire)
    }

    /// Runs a checkpoint on every SM now (see [`SmArchive::checkpoint`]); waits for a background one in progress.
    pub fn checkpoint_now(&self) -> Result<CheckpointStats, StoreError> {
        let mut total = CheckpointStats::default();
        for sm in &self.inner.sms {
            total += sm.checkpoint()?;
        }
        Ok(total)
    }

    /// The SMs' archives, by archive id.
    pub fn archives(&self) -> &[Arc<SmArchive>] {
        &self.inner.sms
    }

    /// The archive with id `archive_id`, as a trait object for hot copy jobs.
    pub fn archive(&self, archive_id: u64) -> Option<Arc<dyn Archive>> {
        self.inner.sms.get(archive_id as usize).map(|sm| Arc::clone(sm) as Arc<dyn Archive>)
    }

    /// Every archive of the database, in archive id order, as trait objects: what a
    /// [`HotCopyManager`](backset_engine::hotcopy::HotCopyManager) of this database is made with. The manager holds
    /// the archives only: keep the database open while its jobs run, and shut it down first.
    pub fn hot_copy_archives(&self) -> Vec<Arc<dyn Archive>> {
        self.inner.sms.iter().map(|sm| Arc::clone(sm) as Arc<dyn Archive>).collect()
    }

    /// Database name.
    pub fn name(&self) -> &str {
        &self.inner.meta.name
    }

    /// Database id.
    pub fn database_id(&self) -> Uuid {
        self.inner.meta.database_id
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The permanent configuration, as stored in `<root>/backset-db`.
    pub fn meta(&self) -> &DbMeta {
        &self.inner.meta
    }

    /// The configuration the database was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The storage group id of `key`, or `None` when the database has no storage groups.
    pub fn group_of(&self, key: &[u8]) -> Option<u32> {
        let r = &self.inner.routing;
        r.has_groups.then(|| r.groups[r.route(key).0].0)
    }

    /// The atom id of `key` (`group id << 32 | bucket`).
    pub fn atom_of(&self, key: &[u8]) -> u64 {
        self.inner.routing.route(key).1
    }

    /// Journal bytes kept only for journal hot copies, summed over the SMs (see
    /// [`SmArchive::retained_journal_bytes`]); the server warns past `limits::DEFAULT_RETAINED_JOURNAL_WARN_BYTES`.
    pub fn retained_journal_bytes(&self) -> u64 {
        self.inner.sms.iter().map(|sm| sm.retained_journal_bytes()).sum()
    }

    /// Clean shutdown: refuses new commits, writes the queued ones, stops the threads, and checkpoints every SM (so
    /// the next open replays nothing). Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        let result = if self.stop(Stop::Drain) { self.checkpoint_now().map(drop) } else { Ok(()) };
        // Released after the final checkpoint: another process may open the directories now.
        lock(&self.inner.locks).clear();
        result
    }

    /// Stops at once, as a crash would as far as the files go: no checkpoint and no more journal writes. Commits
    /// already acknowledged are durable in the journal; queued ones fail with [`StoreError::Closed`] (their records
    /// may or may not be on disk). For crash tests and demos.
    pub fn crash(&self) {
        self.stop(Stop::Abort);
        // As the kernel does for a process that dies.
        lock(&self.inner.locks).clear();
    }

    /// Stops the threads; returns whether this call did it (false when already stopped).
    fn stop(&self, how: Stop) -> bool {
        {
            let _seq = lock(&self.inner.seq);
            if self.inner.closed.swap(true, Ordering::AcqRel) {
                return false;
            }
        }
        *lock(&self.inner.stop_checkpointer) = true;
        self.inner.stop_cv.notify_all();
        for sm in &self.inner.sms {
            sm.stop(how);
        }
        for h in std::mem::take(&mut *lock(&self.threads)) {
            if h.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
        true
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.stop(Stop::Drain);
    }
}

fn checkpointer_loop(inner: &Inner, interval: std::time::Duration) {
    loop {
        let stop = lock(&inner.stop_checkpointer);
        let (stop, _) = inner.stop_cv.wait_timeout_while(stop, interval, |s| !*s).unwrap_or_else(|p| p.into_inner());
        if *stop {
            return;
        }
        drop(stop);
        for sm in &inner.sms {
            if let Err(e) = sm.checkpoint() {
                tracing::warn!(archive_id = sm.archive_id(), error = %e, "checkpoint failed; will retry");
            }
        }
    }
}

pub(crate) fn routing_of(meta: &DbMeta) -> Routing {
    match &meta.storage_groups {
        None => Routing {
            buckets: meta.atom_buckets,
            groups: vec![(0, (0..meta.sms as usize).collect())],
            has_groups: false,
        },
        Some(gs) => Routing {
            buckets: meta.atom_buckets,
            groups: gs.iter().map(|g| (g.id, g.archives.iter().map(|&a| a as usize).collect())).collect(),
            has_groups: true,
        },
    }
}

/// Refuses a transaction that would grow an atom of `sm` past the atom body limit. Counts each put as an addition
/// (ignoring the space a replaced value frees) against the atom's size as applied; transactions still in flight to
/// the same atom are not counted, so concurrent commits may overshoot by their own size, in which case the
/// checkpointer refuses to write the atom (and reports it) rather than write a file the format forbids.
fn check_atom_sizes(sm: &SmArchive, ops: &[Op]) -> Result<(), CommitError> {
    let mut growth: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops {
        if let Some(v) = &op.value {
            *growth.entry(op.atom_id).or_default() += codec::entry_len(&op.key, v) + 1;
        }
    }
    let d = lock(&sm.data);
    for (atom_id, add) in growth {
        let bytes = d.atoms.get(&atom_id).map_or(1, |s| s.body_len()) + add;
        if bytes > MAX_STORE_ATOM_BODY_BYTES {
            return Err(CommitError::AtomFull {
                archive_id: sm.archive_id(),
                atom_id,
                bytes,
                max: MAX_STORE_ATOM_BODY_BYTES,
            });
        }
    }
    Ok(())
}
