//! The smallest storage manager that Backset can hot-copy: the SM author's starting point.
//!
//! It links only the engine (and the format crate the engine is built on, whose writers lay out its files): it keeps
//! one atom file and one journal segment, implements [`Archive`] over them, gives them to a [`HotCopyManager`], takes
//! a full hot copy into a backup set, and restores the set into a new archive directory. A real SM keeps the same
//! shape and adds what this one leaves out: a group-commit journal writer that advances the durable watermark, a
//! checkpointer that rewrites atoms (write new, fsync, rename, fsync the directory) and advances R, and segment
//! recycling that respects the pins. The reference store (`backset-refstore`) is such an SM.
//!
//! Run: `cargo run -p backset-engine --example embed [DIR]` (default `target/embed-example`; DIR is replaced). The
//! engine's test `embed.rs` runs it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backset_engine::archive::{Archive, ArchiveError, ArchiveIdentity, AtomFile, JournalPin, JournalSlice};
use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType, JobState};
use backset_engine::restore::{restore, RestoreOptions, RestorePoint, RestoreReport};
use backset_format::layout::{atom_file_name, parse_id_name, segment_file_name, ATOMS_DIR, JOURNAL_DIR};
use backset_format::{encode_atom, read_segment, AtomHeader, SegmentHeader, SegmentWriter};
use uuid::Uuid;

/// A toy SM: its whole state is on disk in FORMAT.md's archive layout.
struct TinySm {
    dir: PathBuf,
    identity: ArchiveIdentity,
    /// Highest txn id whose record is fsynced (G6). A real SM advances it after each group-commit fdatasync.
    durable: AtomicU64,
    /// Recovery start R: every atom file holds every change below it (G1). A real checkpointer advances it.
    recovery_start: u64,
    /// Live pins: id -> R. A real recycler never deletes a segment holding a record >= the lowest (G5).
    pins: Arc<Mutex<BTreeMap<u64, u64>>>,
    next_pin: AtomicU64,
    /// Journal-hot-copy retention: records up to here were copied by a journal hot copy.
    copied_up_to: AtomicU64,
}

impl TinySm {
    /// Creates the archive: atom 1 holding the changes of txns 1 and 2 (LSN 2), and journal segment 1 holding
    /// records 1, 2 and 3. Txn 3 is only in the journal: recovery (and a restore) replays it over the atom.
    fn create(dir: &Path) -> std::io::Result<Self> {
        let database_id = Uuid::new_v4();
        fs::create_dir_all(dir.join(ATOMS_DIR))?;
        fs::create_dir_all(dir.join(JOURNAL_DIR))?;

        // Journal first (the WAL rule, G2): the atom written below has LSN 2 <= the durable watermark 3.
        let path = dir.join(JOURNAL_DIR).join(segment_file_name(1));
        let header = SegmentHeader { database_id, archive_id: 0, segment: 1, first_txn: 1 };
        let mut seg = SegmentWriter::create(File::create(&path)?, header)?;
        for (txn, payload) in [(1, "put a=1"), (2, "put b=2"), (3, "put a=3")] {
            seg.append(txn, 1_700_000_000_000_000 + txn, payload.as_bytes())?;
        }
        seg.get_mut().sync_all()?;
        File::open(dir.join(JOURNAL_DIR))?.sync_all()?;

        // An atom is replaced by write-new + fsync + rename + fsync the directory (G3), never written in place.
        let atoms = dir.join(ATOMS_DIR);
        let tmp = atoms.join(".tmp-atom");
        let mut f = File::create(&tmp)?;
        f.write_all(&encode_atom(1, 2, b"a=1 b=2").expect("small body"))?;
        f.sync_all()?;
        fs::rename(&tmp, atoms.join(atom_file_name(1)))?;
        File::open(&atoms)?.sync_all()?;

        Ok(Self {
            dir: dir.to_path_buf(),
            identity: ArchiveIdentity {
                database_name: "tiny".into(),
                database_id,
                archive_id: 0,
                storage_groups: Vec::new(),
            },
            durable: AtomicU64::new(3),
            recovery_start: 3,
            pins: Arc::new(Mutex::new(BTreeMap::new())),
            next_pin: AtomicU64::new(0),
            copied_up_to: AtomicU64::new(0),
        })
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { op, path, source }
}

impl Archive for TinySm {
    fn identity(&self) -> ArchiveIdentity {
        self.identity.clone()
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn pin_journal(&self) -> Result<JournalPin, ArchiveError> {
        let id = self.next_pin.fetch_add(1, Ordering::Relaxed);
        self.pins.lock().expect("pins").insert(id, self.recovery_start);
        let pins = Arc::clone(&self.pins);
        Ok(JournalPin::new(self.recovery_start, move || {
            pins.lock().expect("pins").remove(&id);
        }))
    }

    fn atoms(&self) -> Result<Vec<AtomFile>, ArchiveError> {
        let dir = self.dir.join(ATOMS_DIR);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("read directory", &dir))? {
            let entry = entry.map_err(io("read directory", &dir))?;
            // Only `<16 hex>` names are atoms; `.tmp-` files of a checkpoint in progress are not.
            let Some(atom_id) = entry.file_name().to_str().and_then(parse_id_name) else { continue };
            let path = entry.path();
            let bytes = fs::read(&path).map_err(io("read", &path))?;
            let header = AtomHeader::parse(&bytes)
                .map_err(|e| ArchiveError::Damaged { path: path.clone(), reason: e.to_string() })?;
            out.push(AtomFile { atom_id, path, lsn: header.lsn, bytes: Some(bytes.len() as u64) });
        }
        out.sort_by_key(|a| a.atom_id);
        Ok(out)
    }

    fn durable_txn(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn wait_durable(&self, txn: u64, timeout: Duration) -> Result<(), ArchiveError> {
        // A real SM waits on its journal writer's condition variable until the deadline; this one has nothing in
        // flight, so a txn not durable now never will be.
        let durable = self.durable_txn();
        if durable >= txn {
            return Ok(());
        }
        Err(ArchiveError::NotDurable { archive_id: 0, txn, durable, timeout })
    }

    fn journal_slices(&self, first: u64, last: u64) -> Result<Vec<JournalSlice>, ArchiveError> {
        if first > last {
            return Err(ArchiveError::EmptyRange { archive_id: 0, first, last });
        }
        let durable = self.durable_txn();
        if last > durable {
            return Err(ArchiveError::BeyondDurable { archive_id: 0, last, durable });
        }
        // A real SM keeps a record index in memory; this one reads its only segment.
        let path = self.dir.join(JOURNAL_DIR).join(segment_file_name(1));
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        let damaged =
            |e: backset_format::JournalError| ArchiveError::Damaged { path: path.clone(), reason: e.to_string() };
        let (_, reader) = read_segment(&bytes).map_err(damaged)?;
        let mut records = Vec::new();
        for r in reader {
            let r = r.map_err(damaged)?;
            records.push((r.txn_id, r.offset, r.offset + r.encoded_len()));
        }
        let wanted: Vec<_> = records.iter().enumerate().filter(|(_, r)| (first..=last).contains(&r.0)).collect();
        let (Some((i, head)), Some((_, tail))) = (wanted.first(), wanted.last()) else { return Ok(Vec::new()) };
        let offset = if *i == 0 { 0 } else { head.1 };
        Ok(vec![JournalSlice { segment: 1, path, offset, len: tail.2 - offset, first_txn: head.0, last_txn: tail.0 }])
    }

    fn journal_hot_copy_enabled(&self) -> bool {
        false
    }

    fn journal_copied_up_to(&self, txn: u64) {
        self.copied_up_to.fetch_max(txn, Ordering::AcqRel);
    }

    fn journal_retain_from(&self, txn: u64) {
        self.copied_up_to.fetch_min(txn.saturating_sub(1), Ordering::AcqRel);
    }
}

/// How long the example waits for its hot copy (a few milliseconds of work) before it gives up.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`run`] made, for the caller to look at.
#[allow(dead_code)] // The engine's test reads every field; `main` prints some.
pub struct Outcome {
    /// The SM's archive directory.
    pub archive: PathBuf,
    /// The backup set the full hot copy wrote.
    pub set: PathBuf,
    /// The archive the set was restored into.
    pub restored: PathBuf,
    /// What the restore did.
    pub report: RestoreReport,
}

/// Creates the SM's archive in `dir/archive`, walks through the [`Archive`] calls a hot copy makes, takes a full
/// hot copy into the backup set `dir/set` (statuses in `dir/admin`) and restores it into `dir/restored`. `dir` is
/// replaced.
pub fn run(dir: &Path) -> Result<Outcome, Box<dyn std::error::Error>> {
    if dir.exists() {
        backset_format::dirfd::remove_path(dir)?;
    }
    let archive_dir = dir.join("archive");
    let sm = Arc::new(TinySm::create(&archive_dir)?);
    let archive: &dyn Archive = sm.as_ref();

    let id = archive.identity();
    println!(
        "archive {} of database {:?} ({}) in {}",
        id.archive_id,
        id.database_name,
        id.database_id,
        archive.dir().display()
    );
    // What a hot copy does, in order (see the Archive module docs):
    let pin = archive.pin_journal()?;
    println!("pinned the journal at recovery start R = {}", pin.recovery_start());
    for atom in archive.atoms()? {
        println!("atom {:#x}: LSN {} at {}", atom.atom_id, atom.lsn, atom.path.display());
    }
    let end = archive.durable_txn();
    archive.wait_durable(end, Duration::from_secs(1))?;
    println!("end point E = durable watermark = {end}");
    for s in archive.journal_slices(pin.recovery_start(), end)? {
        println!(
            "journal slice: segment {} bytes {}..{} holding txns {}..={}",
            s.segment,
            s.offset,
            s.offset + s.len,
            s.first_txn,
            s.last_txn
        );
    }
    drop(pin);

    // The same, done by the engine: the manager takes the SM's archives (every archive of its database).
    let manager = HotCopyManager::new(vec![Arc::clone(&sm) as Arc<dyn Archive>], dir.join("admin"))?;
    let set = dir.join("set");
    let mut request = HotCopyRequest::new(HotCopyType::Full);
    request.default_backup_dir = Some(set.clone());
    let (coordinator, hot_copy) = manager.start(request)?;
    let status = manager.status(coordinator, hot_copy, Some(HOT_COPY_TIMEOUT))?;
    manager.shutdown(HOT_COPY_TIMEOUT);
    if status.status != JobState::Completed {
        return Err(format!("full hot copy {hot_copy} did not complete: {}", status.message).into());
    }
    println!("full hot copy {hot_copy} into {}: {}", set.display(), status.message);

    let restored = dir.join("restored");
    let report = restore(&set, &restored, RestorePoint::Latest, &RestoreOptions::default())?;
    println!(
        "restored {} to transaction {}: {} atom file(s), {} journal record(s), in {}",
        set.display(),
        report.target_txn,
        report.atoms,
        report.records,
        restored.display()
    );
    Ok(Outcome { archive: archive_dir, set, restored, report })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/embed-example".into()));
    run(&dir)?;
    Ok(())
}
