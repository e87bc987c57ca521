//! One storage manager of the reference store: its archive, journal queue, atoms, checkpoints and the [`Archive`]
//! implementation.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use backset_format::dirfd::remove_path;
use backset_format::encode_atom;
use backset_format::layout::atom_file_name;
use uuid::Uuid;

use backset_engine::archive::{Archive, ArchiveError, ArchiveIdentity, AtomFile, JournalPin, JournalSlice};

use crate::codec::Op;
use crate::data::Data;
use crate::error::StoreError;
use crate::journal::JournalState;
use crate::limits::{CHECKPOINT_SYNC_THREADS, DURABLE_POLL_INTERVAL};
use crate::sync::{lock, sync_dir, sync_files};

/// A checkpoint's work on one atom: its id, and its new version (LSN, encoded file) or `None` to remove its file.
type AtomJob = (u64, Option<(u64, Vec<u8>)>);

/// A record waiting for the journal writer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub txn: u64,
    pub timestamp_micros: u64,
    pub payload: Arc<Vec<u8>>,
    pub ops: Arc<Vec<Op>>,
}

/// What the journal writer should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep writing.
    Run,
    /// Write what is queued, then exit.
    Drain,
    /// Exit now, leaving queued records unwritten (a simulated crash).
    Abort,
}

/// The journal queue of one SM.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Records not taken by the writer yet, in txn order.
    pub pending: VecDeque<Pending>,
    /// First txn of the batch being written.
    pub in_flight: Option<u64>,
    /// Last txn whose record is durable and applied.
    pub done_upto: u64,
    /// Why the writer failed, if it did: the SM takes no more records.
    pub failed: Option<String>,
    /// Stop request.
    pub stop: Stop,
}

#[derive(Debug, Default)]
struct Retention {
    pins: BTreeMap<u64, u64>,
    next_pin: u64,
    copied_upto: u64,
}

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Atom files written.
    pub atoms_written: usize,
    /// Atom files removed because the atom became empty.
    pub atoms_dropped: usize,
    /// Journal segments recycled (deleted).
    pub segments_recycled: usize,
    /// Recovery start R after the checkpoint.
    pub recovery_start: u64,
}

impl std::ops::AddAssign for CheckpointStats {
    fn add_assign(&mut self, o: Self) {
        self.atoms_written += o.atoms_written;
        self.atoms_dropped += o.atoms_dropped;
        self.segments_recycled += o.segments_recycled;
        self.recovery_start =
            if self.recovery_start == 0 { o.recovery_start } else { self.recovery_start.min(o.recovery_start) };
    }
}

/// A journal segment on disk, as [`SmArchive::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number.
    pub number: u64,
    /// Its file.
    pub path: PathBuf,
    /// Bytes up to the end of its last durable record.
    pub len: u64,
    /// First txn id in its header.
    pub header_first_txn: u64,
    /// Txn ids of its first and last durable records, if any.
    pub records: Option<(u64, u64)>,
    /// Number of durable records.
    pub record_count: usize,
    /// Whether it is the segment being appended to.
    pub current: bool,
}

/// One SM of the reference store, serving one archive. Implements [`Archive`].
pub struct SmArchive {
    identity: ArchiveIdentity,
    dir: PathBuf,
    atoms_dir: PathBuf,
    journal_dir: PathBuf,
    /// Storage group ids served (`[0]` without storage groups).
    pub(crate) groups: Vec<u32>,
    assigned: Arc<AtomicU64>,
    pub(crate) queue: Mutex<Queue>,
    /// Wakes the journal writer.
    pub(crate) work: Condvar,
    /// Wakes committers and durability waiters.
    pub(crate) done: Condvar,
    pub(crate) data: Mutex<Data>,
    pub(crate) journal: Mutex<JournalState>,
    retention: Arc<Mutex<Retention>>,
    journal_hot_copy: bool,
    pub(crate) segment_bytes: u64,
    checkpoint_lock: Mutex<()>,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for SmArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmArchive").field("identity", &self.identity).field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What recovery did when the SM opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Atom files found.
    pub atom_files: usize,
    /// Journal segments found.
    pub segments: usize,
    /// Journal records replayed (records that changed at least one atom: their txn id was above its LSN).
    pub records_replayed: u64,
    /// Torn tails truncated: `(segment, offset, bytes)`; offset 0 for a last segment cut short while it was being
    /// created, which was removed.
    pub torn_tails: Vec<(u64, u64, u64)>,
    /// Highest transaction id found (last record or highest atom LSN).
    pub last_txn: u64,
}

pub(crate) struct SmParts {
    pub recovery: RecoveryReport,
    pub identity: ArchiveIdentity,
    pub dir: PathBuf,
    pub groups: Vec<u32>,
    pub assigned: Arc<AtomicU64>,
    pub data: Data,
    pub journal: JournalState,
    pub journal_hot_copy: bool,
    pub segment_bytes: u64,
}

impl SmArchive {
    pub(crate) fn new(p: SmParts) -> Self {
        let done_upto = p.data.applied_upto;
        Self {
            atoms_dir: p.dir.join(backset_format::layout::ATOMS_DIR),
            journal_dir: p.dir.join(backset_format::layout::JOURNAL_DIR),
            identity: p.identity,
            dir: p.dir,
            groups: p.groups,
            assigned: p.assigned,
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                in_flight: None,
                done_upto,
                failed: None,
                stop: Stop::Run,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            data: Mutex::new(p.data),
            journal: Mutex::new(p.journal),
            retention: Arc::new(Mutex::new(Retention::default())),
            journal_hot_copy: p.journal_hot_copy,
            segment_bytes: p.segment_bytes,
            checkpoint_lock: Mutex::new(()),
            recovery: p.recovery,
        }
    }

    /// Ids of the storage groups this SM serves (`[0]` when the database has no storage groups).
    pub fn group_ids(&self) -> &[u32] {
        &self.groups
    }

    /// What recovery did when the SM opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Archive id.
    pub fn archive_id(&self) -> u64 {
        self.identity.archive_id
    }

    pub(crate) fn database_id(&self) -> Uuid {
        self.identity.database_id
    }

    pub(crate) fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    /// `(atom id, LSN)` of every atom file on disk, as the store last wrote or found it (as [`Archive::atoms`] lists
    /// them).
    pub fn atoms_lsns(&self) -> Vec<(u64, u64)> {
        self.atoms().map(|v| v.into_iter().map(|a| (a.atom_id, a.lsn)).collect()).unwrap_or_default()
    }

    /// Why this SM's journal writer stopped, when it did (a write or fsync failed, or a retried step kept failing):
    /// the SM takes no more commits until the database is closed and opened again.
    pub fn writer_failure(&self) -> Option<String> {
        lock(&self.queue).failed.clone()
    }

    /// The current recovery start R: the oldest transaction whose changes are not all in atom files.
    pub fn recovery_start(&self) -> u64 {
        lock(&self.data).recovery_start()
    }

    /// The journal segments on disk, in order.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let j = lock(&self.journal);
        j.segments
            .values()
            .map(|s| SegmentInfo {
                number: s.number,
                path: s.path.clone(),
                len: s.len,
                header_first_txn: s.header_first_txn,
                records: s.records.first().map(|f| (f.0, s.records.last().expect("non-empty").0)),
                record_count: s.records.len(),
                current: s.number == j.current,
            })
            .collect()
    }

    /// Bytes of journal on disk (durable records and headers).
    pub fn journal_bytes(&self) -> u64 {
        lock(&self.journal).segments.values().map(|s| s.len).sum()
    }

    /// Bytes of journal kept only for journal hot copies: segments that R and the pins would let the checkpointer
    /// recycle but that no journal hot copy has copied yet. Always 0 when journal hot copy is disabled.
    pub fn retained_journal_bytes(&self) -> u64 {
        if !self.journal_hot_copy {
            return 0;
        }
        let ret = lock(&self.retention);
        let bound = self.recycle_bound_without_retention(&ret);
        let j = lock(&self.journal);
        let mut bytes = 0;
        for s in j.segments.values() {
            if s.number == j.current || s.last_txn().is_some_and(|t| t >= bound) {
                break;
            }
            if s.last_txn().is_some_and(|t| t > ret.copied_upto) {
                bytes += s.len;
            }
        }
        bytes
    }

    fn recycle_bound_without_retention(&self, ret: &Retention) -> u64 {
        let r = lock(&self.data).recovery_start();
        ret.pins.values().copied().min().map_or(r, |p| p.min(r))
    }

    /// The value of `key`, which lives in atom `atom_id`.
    pub(crate) fn get(&self, atom_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        lock(&self.data).get(atom_id, key)
    }

    /// Calls `f` on every pair of the atoms with ids in `atoms`, atom by atom (one atom's pairs in memory at a time).
    pub(crate) fn scan(&self, atoms: Range<u64>, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        let ids: Vec<u64> = lock(&self.data).atoms.range(atoms).map(|(&id, _)| id).collect();
        for id in ids {
            let pairs = lock(&self.data).pairs(id)?;
            for (k, v) in &pairs {
                f(k, v);
            }
        }
        Ok(())
    }

    /// Writes every dirty atom (write new, fsync, rename, fsync the directory), removes the files of atoms that
    /// became empty, advances R, and recycles the journal segments that R, the pins and retention allow.
    pub fn checkpoint(&self) -> Result<CheckpointStats, StoreError> {
        let _one_at_a_time = lock(&self.checkpoint_lock);
        // Snapshot the dirty atoms. Only durable transactions are ever applied in memory (the journal writer applies
        // a batch after its fdatasync), so every version written here has LSN <= the durable watermark.
        let mut encode_error = None;
        let jobs: Vec<AtomJob> = {
            let mut d = lock(&self.data);
            let dirty = std::mem::take(&mut d.dirty);
            let mut jobs = Vec::with_capacity(dirty.len());
            for (atom_id, since) in dirty {
                let slot = d.atoms.get(&atom_id).expect("dirty atom is in memory");
                let job = if slot.is_empty() {
                    None
                } else {
                    match encode_atom(atom_id, slot.lsn, &slot.encode_body()) {
                        Ok(bytes) => Some((slot.lsn, bytes)),
                        Err(e) => {
                            encode_error.get_or_insert((atom_id, e));
                            d.dirty.insert(atom_id, since);
                            continue;
                        }
                    }
                };
                d.checkpointing.insert(atom_id, since);
                jobs.push((atom_id, job));
            }
            jobs
        };
        let (done, written) = self.write_atoms(&jobs);
        {
            let mut d = lock(&self.data);
            let covered = std::mem::take(&mut d.checkpointing);
            // The files replaced or removed so far, in the same critical section that lets R advance past them: a
            // listing taken after a pin whose R is above a job's first transaction sees the job's file.
            for (atom_id, job) in &jobs[..done] {
                if let Some(slot) = d.atoms.get_mut(atom_id) {
                    slot.file = job.as_ref().map(|(lsn, bytes)| (*lsn, bytes.len() as u64));
                }
            }
            if written.is_ok() {
                for (atom_id, job) in &jobs {
                    let drop_slot = job.is_none()
                        && !d.dirty.contains_key(atom_id)
                        && d.atoms.get(atom_id).is_some_and(|s| s.is_empty());
                    if drop_slot {
                        d.atoms.remove(atom_id);
                    }
                }
            } else {
                for (atom_id, since) in covered {
                    let e = d.dirty.entry(atom_id).or_insert(since);
                    *e = (*e).min(since);
                }
            }
        }
        written?;
        if let Some((atom_id, source)) = encode_error {
            let path = self.atoms_dir.join(atom_file_name(atom_id));
            return Err(StoreError::Atom { path, source });
        }
        let segments_recycled = self.recycle()?;
        Ok(CheckpointStats {
            atoms_written: jobs.iter().filter(|j| j.1.is_some()).count(),
            atoms_dropped: jobs.iter().filter(|j| j.1.is_none()).count(),
            segments_recycled,
            recovery_start: self.recovery_start(),
        })
    }

    /// Writes (or removes) the atom files of `jobs`, then fsyncs the directory. Returns how many jobs were carried
    /// out (their file replaced or removed, in order) and the first error.
    ///
    /// Every new version is written to its `.tmp-` file first, then all of them are fsynced by
    /// [`CHECKPOINT_SYNC_THREADS`] threads at once (the file system commits concurrent fsyncs together, and the
    /// page cache writes back while later files are written), then renamed over the old names in order. With small
    /// atoms a checkpoint writes thousands of files, and one fsync after another made it take tens of seconds.
    fn write_atoms(&self, jobs: &[AtomJob]) -> (usize, Result<(), StoreError>) {
        if jobs.is_empty() {
            return (0, Ok(()));
        }
        let tmp_of = |atom_id: u64| {
            self.atoms_dir.join(format!("{}{}", backset_format::fsio::TMP_FILE_PREFIX, atom_file_name(atom_id)))
        };
        let mut written: Vec<PathBuf> = Vec::new();
        for (atom_id, job) in jobs {
            if let Some((_, bytes)) = job {
                let tmp = tmp_of(*atom_id);
                if let Err(e) = fs::write(&tmp, bytes).map_err(StoreError::io("write", &tmp)) {
                    return (0, Err(e));
                }
                written.push(tmp);
            }
        }
        if let Err(e) = sync_files(&written, CHECKPOINT_SYNC_THREADS) {
            return (0, Err(e));
        }
        for (done, (atom_id, job)) in jobs.iter().enumerate() {
            let target = self.atoms_dir.join(atom_file_name(*atom_id));
            let result = match job {
                Some(_) => fs::rename(tmp_of(*atom_id), &target).map_err(StoreError::io("rename", &target)),
                None => remove_path(&target).map_err(|e| StoreError::Io { op: "remove", path: target, source: e }),
            };
            if let Err(e) = result {
                return (done, Err(e));
            }
        }
        (jobs.len(), sync_dir(&self.atoms_dir))
    }

    /// Deletes the oldest segments whose records are all below min(R, pins, retention); never the current one.
    fn recycle(&self) -> Result<usize, StoreError> {
        let ret = lock(&self.retention);
        let mut bound = self.recycle_bound_without_retention(&ret);
        if self.journal_hot_copy {
            bound = bound.min(ret.copied_upto.saturating_add(1));
        }
        let victims: Vec<PathBuf> = {
            let mut j = lock(&self.journal);
            let mut victims = Vec::new();
            let numbers: Vec<u64> = j.segments.keys().copied().collect();
            for n in numbers {
                let s = &j.segments[&n];
                if n == j.current || s.last_txn().is_some_and(|t| t >= bound) {
                    break;
                }
                let s = j.segments.remove(&n).expect("listed");
                if let Some(t) = s.last_txn() {
                    j.recycled_below = j.recycled_below.max(t + 1);
                }
                victims.push(s.path);
            }
            victims
        };
        for path in &victims {
            remove_path(path).map_err(|e| StoreError::Io { op: "remove", path: path.clone(), source: e })?;
        }
        if !victims.is_empty() {
            sync_dir(&self.journal_dir)?;
        }
        Ok(victims.len())
    }

    /// Waits until the writer has made `txn` durable and applied it.
    pub(crate) fn wait_done(&self, txn: u64, name: &str) -> Result<(), StoreError> {
        let mut q = lock(&self.queue);
        loop {
            if q.done_upto >= txn {
                return Ok(());
            }
            // On a stop, a record still queued is never written; one in the batch being written is finished by
            // the writer (done or failed), so its committer keeps waiting: an acknowledgement then means durable,
            // and an error means not written.
            if q.stop == Stop::Abort && q.pending.iter().any(|p| p.txn == txn) {
                return Err(StoreError::Closed { name: name.to_string() });
            }
            if let Some(reason) = &q.failed {
                return Err(StoreError::WriterFailed { archive_id: self.archive_id(), reason: reason.clone() });
            }
            q = self.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn stop(&self, how: Stop) {
        let mut q = lock(&self.queue);
        if q.stop != Stop::Abort {
            q.stop = how;
        }
        self.work.notify_all();
        self.done.notify_all();
    }

    fn unavailable(&self, reason: String) -> ArchiveError {
        ArchiveError::Unavailable { archive_id: self.archive_id(), reason }
    }
}

impl Archive for SmArchive {
    fn identity(&self) -> ArchiveIdentity {
        self.identity.clone()
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn pin_journal(&self) -> Result<JournalPin, ArchiveError> {
        // The retention lock is held while R is read and the pin registered, and by the recycler while it computes
        // its bound and deletes: a pin is either seen by the recycler or taken after it, with an R at least as high.
        let mut ret = lock(&self.retention);
        if let Some(reason) = &lock(&self.queue).failed {
            return Err(self.unavailable(format!("journal writer failed: {reason}")));
        }
        let r = lock(&self.data).recovery_start();
        let id = ret.next_pin;
        ret.next_pin += 1;
        ret.pins.insert(id, r);
        let retention = Arc::clone(&self.retention);
        Ok(JournalPin::new(r, move || {
            lock(&retention).pins.remove(&id);
        }))
    }

    /// From the atom table in memory, not the directory: the file each atom has as the checkpointer last wrote it
    /// (or recovery found it), with its LSN. No system call per atom, one allocation (the path) per atom: linear in
    /// the atoms, under the data lock. The table is updated in the same critical section that lets R advance past a
    /// written file, so a listing taken after a pin never reports a file older than what G1 requires.
    fn atoms(&self) -> Result<Vec<AtomFile>, ArchiveError> {
        // Copied out under the lock (24 bytes an atom), the paths made after it: commits wait on this lock.
        let files: Vec<(u64, u64, u64)> = {
            let d = lock(&self.data);
            d.atoms.iter().filter_map(|(&id, slot)| slot.file.map(|(lsn, bytes)| (id, lsn, bytes))).collect()
        };
        Ok(files
            .into_iter()
            .map(|(atom_id, lsn, bytes)| AtomFile {
                atom_id,
                path: self.atoms_dir.join(atom_file_name(atom_id)),
                lsn,
                bytes: Some(bytes),
            })
            .collect())
    }

    fn durable_txn(&self) -> u64 {
        let q = lock(&self.queue);
        // Read under the queue lock: a transaction is pushed to every queue it involves before `assigned` covers it,
        // so any record of this archive with a txn id <= `assigned` is either pending here or done.
        let assigned = self.assigned.load(Ordering::Acquire);
        match (q.pending.front().map(|p| p.txn), q.in_flight) {
            (None, None) => assigned,
            (a, b) => a.into_iter().chain(b).min().expect("one is set") - 1,
        }
    }

    fn wait_durable(&self, txn: u64, timeout: Duration) -> Result<(), ArchiveError> {
        let deadline = Instant::now() + timeout;
        loop {
            let durable = self.durable_txn();
            if durable >= txn {
                return Ok(());
            }
            let q = lock(&self.queue);
            if let Some(reason) = &q.failed {
                return Err(self.unavailable(format!("journal writer failed: {reason}")));
            }
            if q.stop == Stop::Abort {
                return Err(self.unavailable("the SM was stopped".into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ArchiveError::NotDurable { archive_id: self.archive_id(), txn, durable, timeout });
            }
            // A transaction that does not involve this archive makes it durable without a notification here, so
            // re-check at least every DURABLE_POLL_INTERVAL.
            let wait = (deadline - now).min(DURABLE_POLL_INTERVAL);
            drop(self.done.wait_timeout(q, wait).unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn journal_slices(&self, first: u64, last: u64) -> Result<Vec<JournalSlice>, ArchiveError> {
        let archive_id = self.archive_id();
        if first > last {
            return Err(ArchiveError::EmptyRange { archive_id, first, last });
        }
        let durable = self.durable_txn();
        if last > durable {
            return Err(ArchiveError::BeyondDurable { archive_id, last, durable });
        }
        let j = lock(&self.journal);
        if first < j.recycled_below {
            return Err(ArchiveError::Recycled { archive_id, first, recycled_below: j.recycled_below });
        }
        let mut out = Vec::new();
        for s in j.segments.values() {
            let i = s.records.partition_point(|r| r.0 < first);
            let k = s.records.partition_point(|r| r.0 <= last);
            if i >= k {
                continue;
            }
            let offset = if i == 0 { 0 } else { s.records[i].1 };
            let end = s.records.get(k).map_or(s.len, |r| r.1);
            out.push(JournalSlice {
                segment: s.number,
                path: s.path.clone(),
                offset,
                len: end - offset,
                first_txn: s.records[i].0,
                last_txn: s.records[k - 1].0,
            });
        }
        Ok(out)
    }

    fn journal_hot_copy_enabled(&self) -> bool {
        self.journal_hot_copy
    }

    fn journal_copied_up_to(&self, txn: u64) {
        let mut ret = lock(&self.retention);
        ret.copied_upto = ret.copied_upto.max(txn);
    }

    fn journal_retain_from(&self, txn: u64) {
        let mut ret = lock(&self.retention);
        ret.copied_upto = ret.copied_upto.min(txn.saturating_sub(1));
    }
}
