//! Restore a backup set into a new archive directory: to the latest point, to an element, or to a transaction;
//! and the reports `restore --report-backups` and `--report-timestamps` print.
//!
//! # What a restore does
//! 1. Reads the set ([`BackupSet::open`]): the state, then every completed element's control files; any damaged
//!    or inconsistent control file, or a broken chain, refuses the restore (run `backset check` for the list).
//! 2. Chooses the target transaction T (the latest restorable one, the element's end point, or the one given) and
//!    refuses a T outside the [restorable ranges](BackupSet::restorable).
//! 3. Base = the newest full or incremental with E <= T. Atoms = the base catalog's present atoms, each from the
//!    newest element at or before the base whose manifest lists it with the catalog's hash
//!    ([`BackupSet::resolve_atoms`]). Journal = every record with R_base <= txn id <= T, each taken once: from the
//!    base's own slices as far as they go (a restore to a full or incremental's end point needs that element
//!    alone), then from the elements [`BackupSet::plan_journal`] picks.
//! 4. Checks that every element it needs has its `data/` (it may have been moved away) and that every data file it
//!    needs is a regular file of the manifest's size, before writing anything. The destination must lie outside
//!    the set and outside every directory a running process holds ([`crate::lock`]), symbolic links resolved; it is
//!    created as its last component only (its parent must exist: [`crate::paths`]).
//! 5. Writes the journal records as new segments `journal/0000000000000001`, ... (headers with the set's database
//!    and archive ids, each segment's first txn its first record's), from chunks verified against the manifest
//!    before use; meanwhile (on a second thread) copies the atom files to `atoms/<id>` through the copier (parallel
//!    I/O, progress and cancel through the caller's [`JobControl`]), and compares what the copier hashed (whole
//!    BLAKE3 and every 1 MiB chunk) with the manifest, and each copied atom's header with the catalog. The first of
//!    the two to fail cancels the other through the [`JobControl`].
//! 6. Checks that the destination's names still lead to the directories it created, and makes everything durable.
//!    On any error or cancel, removes everything it created: the destination is left as it was (empty, or absent).
//!
//! The destination and its `journal/` and `atoms/` are created, written and removed relative to directory
//! descriptors opened without following links, and only directories whose device and inode the restore recorded
//! are removed (`restore/dest.rs`): a path component swapped for a symbolic link while the restore runs makes it fail, and
//! redirects neither a write nor a removal.
//!
//! The result is an archive directory in FORMAT.md's layout that the reference store opens (give it the set's
//! database id) and whose content is the database state at T.

mod dest;
mod marker;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backset_copier::{Backend, Copier, CopyError, CopyRequest, JobControl};
use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::layout::{atom_file_name, segment_file_name};
use backset_format::{ElementKind, ElementName, ElementStatus, SegmentHeader, SegmentWriter, State, TxnRange};
use uuid::Uuid;

use crate::hotcopy::fault;
use crate::limits::{COPY_BATCH_FILES, RESTORE_SEGMENT_BYTES, RESTORE_STREAMS_IN_FLIGHT, RESTORE_WRITE_BUFFER_BYTES};
use crate::lock::{check_not_held, DirKind, Holder, LockError};
use crate::paths::{resolve_existing, CreateDirError};
use dest::Destination;
pub use marker::{refuse_unfinished, UnfinishedRestore, RESTORE_MARKER_FILE};

use crate::set::data::{for_each_record, keep_head, mismatch, parse_atom_head, size_mismatch};
use crate::set::storage::Stat;
use crate::set::{describe_ranges, read_state, AtomSource, BackupSet, JournalPart, SetError, SliceError};
use backset_format::dirfd::EntryKind;

/// The point in the database's history a restore brings the archive to: a transaction, given directly or as an
/// element's end point, or the latest the set can restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    /// The latest restorable transaction (`restore` without `--restore-snapshot` or `--backup-element-id`).
    Latest,
    /// The end point E of this completed element (`--backup-element-id`).
    Element(Uuid),
    /// This transaction id (`--restore-snapshot`).
    Transaction(u64),
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Progress and cancel: the atom copy's progress is readable through it while the restore runs, and cancelling
    /// it stops the restore (which then removes what it wrote). `None`: a private control.
    pub control: Option<Arc<JobControl>>,
    /// The copier's options (backend, pool size, direct I/O). Hashing is always on: a restore verifies every byte.
    pub copier: backset_copier::Options,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup set.
    pub set_dir: PathBuf,
    /// The archive directory written.
    pub dest_dir: PathBuf,
    /// The transaction restored to: the archive holds the database state at this transaction.
    pub target_txn: u64,
    /// The base element (the newest full or incremental with E <= target).
    pub base: ElementName,
    /// Id of the base element.
    pub base_id: Uuid,
    /// Elements atom files were taken from, in state order.
    pub atom_elements: Vec<ElementName>,
    /// Elements journal records were taken from, in replay order.
    pub journal_elements: Vec<ElementName>,
    /// Atom files written.
    pub atoms: u64,
    /// Bytes of atom files written.
    pub atom_bytes: u64,
    /// Journal records written.
    pub records: u64,
    /// Journal segments written.
    pub segments: u64,
    /// Bytes of journal segments written.
    pub journal_bytes: u64,
    /// First and last transaction ids of the records written (`None` when no record was needed).
    pub journal_txns: Option<TxnRange>,
    /// The copier backend that copied the atoms.
    pub backend: Backend,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why a restore failed. Whatever it had written is removed before it returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The set cannot be read or its metadata is damaged.
    #[error(transparent)]
    Set(#[from] SetError),
    /// The destination is an unfinished restore (it holds [`RESTORE_MARKER_FILE`]).
    #[error(transparent)]
    Unfinished(#[from] UnfinishedRestore),
    /// The destination exists and is not an empty directory.
    #[error(
        "restore destination {path} is not empty; a restore creates a new archive: give an empty or new directory"
    )]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The destination is the backup set or inside it (symbolic links resolved).
    #[error(
        "restore destination {}{} is {} backup set {}: a restore never writes into a backup set (it would damage          it); give a directory outside the set",
        .dest.display(),
        if .resolved == .dest { String::new() } else { format!(" (resolved: {})", .resolved.display()) },
        if .resolved == .set { "the" } else { "inside the" },
        .set.display()
    )]
    DestinationInSet {
        /// The destination, as given.
        dest: PathBuf,
        /// The destination with its existing part's symbolic links resolved.
        resolved: PathBuf,
        /// The set, resolved.
        set: PathBuf,
    },
    /// The destination is, or is inside, a directory a running process holds (an SM's archive or database
    /// directory, see [`crate::lock`]).
    #[error(
        "restore destination {} is {} {kind} {}, which is in use by {holder}: a restore never writes into a          directory a running SM holds; give a directory outside it",
        .dest.display(),
        if .resolved == .dir { "the" } else { "inside the" },
        .dir.display()
    )]
    DestinationInUse {
        /// The destination, as given.
        dest: PathBuf,
        /// The destination with its existing part's symbolic links resolved.
        resolved: PathBuf,
        /// What the held directory is.
        kind: DirKind,
        /// The held directory.
        dir: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// The destination could not be created: its parent is missing (the parent rule, [`crate::paths`]).
    #[error(transparent)]
    CreateDir(#[from] CreateDirError),
    /// The destination is a file (or anything else that is not a directory).
    #[error(
        "restore destination {path} is a file, not a directory; a restore creates a new archive: give an empty or new \
         directory"
    )]
    DestinationNotADirectory {
        /// The destination.
        path: PathBuf,
    },
    /// A directory the restore created was replaced (by a symbolic link, another directory) while it ran: someone
    /// else writes to the destination's parent. Nothing outside what the restore created was written or removed.
    #[error(
        "restore destination {path} was replaced while the restore ran (it is now {now}); the restore wrote only \
         into the directories it created and removed only those: make sure no one else can write to the \
         destination's parent directory, and restore again"
    )]
    DestinationReplaced {
        /// The directory whose name no longer leads to what the restore created.
        path: PathBuf,
        /// What it is now.
        now: &'static str,
    },
    /// The destination could not be created or written.
    #[error("{op} {path}: {source}; check the restore destination (space, permissions)")]
    Destination {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The set has nothing restorable (no completed full yet).
    #[error(
        "backup set {set} has no completed full element, so nothing can be restored from it yet; wait for its full \
         hot copy to complete"
    )]
    NothingRestorable {
        /// The set.
        set: PathBuf,
    },
    /// The transaction asked for is not restorable.
    #[error(
        "transaction {txn} is outside the restorable {} of backup set {}; choose a transaction in it (see \
         --report-timestamps)",
        describe_ranges(.ranges),
        .set.display()
    )]
    OutOfRange {
        /// The transaction asked for.
        txn: u64,
        /// The set.
        set: PathBuf,
        /// The restorable ranges.
        ranges: Vec<TxnRange>,
    },
    /// No completed element has the id asked for.
    #[error(
        "backup set {set} has no completed element {id}; list its elements with --report-backups (an element still \
         in progress cannot be restored)"
    )]
    UnknownElement {
        /// The set.
        set: PathBuf,
        /// The id asked for.
        id: Uuid,
    },
    /// An element the restore needs has no `data/` (moved away to tape or offsite).
    #[error(
        "backup set {set}: element {element} has no data directory {path} (it was moved away); put its data/ back \
         and run the restore again"
    )]
    DataMissing {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// The missing directory.
        path: PathBuf,
    },
    /// A data file the restore needs is missing, damaged, or does not match its manifest or catalog.
    #[error(
        "backup set {set}: element {element}: {reason}; the backup set is damaged, nothing was restored: run \
         `backset check` on it and restore the file from a copy of the set"
    )]
    DataFile {
        /// The set.
        set: PathBuf,
        /// The element.
        element: ElementName,
        /// The file.
        path: PathBuf,
        /// What is wrong (names the file).
        reason: String,
    },
    /// The copier failed.
    #[error("restore of backup set {set} failed while copying atoms{}: {source}",
        .element.map(|e| format!(" of element {e}")).unwrap_or_default())]
    Copy {
        /// The set.
        set: PathBuf,
        /// The element of the file that failed, when known.
        element: Option<ElementName>,
        /// The copier's error (names the file).
        source: CopyError,
    },
    /// The restore was cancelled; nothing is left in the destination.
    #[error("restore of backup set {set} was cancelled; nothing was left in {dest}")]
    Cancelled {
        /// The set.
        set: PathBuf,
        /// The destination.
        dest: PathBuf,
    },
}

/// Internal: an error of the journal phase before it is tied to an element.
enum Phase {
    Slice(SliceError),
    Restore(RestoreError),
}

impl From<SliceError> for Phase {
    fn from(e: SliceError) -> Self {
        Self::Slice(e)
    }
}

/// Restores the backup set `set_dir` into the new archive directory `dest_dir` (absent, or an empty directory).
/// See the [module docs](self).
pub fn restore(
    set_dir: impl AsRef<Path>,
    dest_dir: impl AsRef<Path>,
    target: RestorePoint,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let set_dir = set_dir.as_ref();
    let dest = dest_dir.as_ref().to_path_buf();
    let set = BackupSet::open(set_dir)?;
    let setp = set.dir().to_path_buf();
    check_destination(&setp, &dest)?;
    let ranges = set.restorable();
    let Some(latest) = ranges.last().map(|r| r.last) else {
        return Err(RestoreError::NothingRestorable { set: setp });
    };
    let txn = match target {
        RestorePoint::Latest => latest,
        RestorePoint::Transaction(t) => t,
        RestorePoint::Element(id) => match set.element_by_id(id) {
            Some(i) => set.elements()[i].txn_range().last,
            None => return Err(RestoreError::UnknownElement { set: setp, id }),
        },
    };
    if !ranges.iter().any(|r| r.contains(txn)) {
        return Err(RestoreError::OutOfRange { txn, set: setp, ranges });
    }
    let base = set.base_for(txn).expect("a restorable transaction has a base");
    let base_el = &set.elements()[base];
    let atoms = set.resolve_atoms(base)?;
    let plan = set.plan_journal(base_el.txn_range().first, txn, Some(base)).map_err(|_| RestoreError::OutOfRange {
        txn,
        set: setp.clone(),
        ranges: ranges.clone(),
    })?;

    // Everything needed must be there before anything is written.
    let mut needed: Vec<usize> = atoms.iter().map(|a| a.element).chain(plan.iter().map(|p| p.element)).collect();
    needed.sort_unstable();
    needed.dedup();
    let storage = set.storage();
    for &i in &needed {
        let e = &set.elements()[i];
        match storage.kind(&e.data_rel()) {
            Ok(Some(EntryKind::Dir(_))) => {}
            _ => return Err(RestoreError::DataMissing { set: setp, element: e.name(), path: e.data_dir() }),
        }
    }
    // lstat only (the copier and the journal reader open each file later): a regular file of the manifest's size.
    let files = atoms
        .iter()
        .map(|a| (a.element, &a.file))
        .chain(plan.iter().flat_map(|p| set.elements()[p.element].journal_files().map(move |f| (p.element, f))));
    // Each element's `data/atoms` and `data/journal` is examined once, not once per file in it.
    let mut dirs_checked: HashSet<PathBuf> = HashSet::new();
    for (i, f) in files {
        let e = &set.elements()[i];
        let (path, rel) = (e.data_file(f), e.data_file_rel(f));
        // `data/atoms` or `data/journal` must be a directory, not a link that leads out of the set.
        let dir = rel.parent().expect("a data file is in a directory");
        if !dirs_checked.contains(dir) {
            if !matches!(storage.kind(dir), Ok(Some(EntryKind::Dir(_)))) {
                let dir = storage.show(dir);
                let reason = format!("{} is not a directory (a backup set never contains links)", dir.display());
                return Err(RestoreError::DataFile { set: setp, element: e.name(), path: dir, reason });
            }
            dirs_checked.insert(dir.to_path_buf());
        }
        let reason = match storage.stat(&rel) {
            Ok(Some(Stat { kind: EntryKind::File, len })) if len == f.size => continue,
            Ok(Some(Stat { kind: EntryKind::File, len })) => {
                format!("{} {}", path.display(), size_mismatch(len, f.size))
            }
            Ok(Some(_)) => format!("{} is not a regular file (a backup set never contains links)", path.display()),
            Ok(None) => format!("{} is missing", path.display()),
            Err(err) => format!("stat {}: {err}", path.display()),
        };
        return Err(RestoreError::DataFile { set: setp, element: e.name(), path, reason });
    }

    // The marker first and last (see `marker`): until it is removed, every reader refuses the destination.
    let mut out =
        Destination::prepare(&dest, &format!("restore of backup set {} to transaction {txn}", setp.display()))?;
    let own_control;
    let ctl: &JobControl = match &opts.control {
        Some(c) => c,
        None => {
            own_control = JobControl::new();
            &own_control
        }
    };
    let mut report = RestoreReport {
        set_dir: setp.clone(),
        dest_dir: dest.clone(),
        target_txn: txn,
        base: base_el.name(),
        base_id: base_el.id(),
        atom_elements: Vec::new(),
        journal_elements: plan.iter().map(|p| set.elements()[p.element].name()).collect(),
        atoms: 0,
        atom_bytes: 0,
        records: 0,
        segments: 0,
        journal_bytes: 0,
        journal_txns: None,
        backend: Backend::Portable,
        elapsed: Duration::ZERO,
    };
    report.journal_elements.dedup();
    let mut used: Vec<usize> = atoms.iter().map(|a| a.element).collect();
    used.sort_unstable();
    used.dedup();
    report.atom_elements = used.iter().map(|&i| set.elements()[i].name()).collect();

    // The journal (read, verified and written by this thread's helper) and the atoms (through the copier's ring)
    // at the same time: neither waits for the other's I/O. The first to fail cancels the other.
    let (journal, copied) = std::thread::scope(|scope| {
        let journal = scope.spawn(|| {
            let written = write_journal(&set, &plan, &out, ctl);
            if written.is_err() {
                ctl.cancel();
            }
            written
        });
        let copied = copy_atoms(&set, base, &atoms, &out, ctl, opts, &mut report);
        if copied.is_err() {
            ctl.cancel();
        }
        (journal.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), copied)
    });
    let result = match (journal, copied) {
        (Ok(j), Ok(())) => {
            report.records = j.records;
            report.segments = j.segments;
            report.journal_bytes = j.bytes;
            report.journal_txns = j.txns;
            Ok(())
        }
        // The cause, not the cancel it made the other half see.
        (Err(e), Err(c)) | (Err(c), Err(e)) if cancelled(&c) && !cancelled(&e) => Err(e),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let result = result.and_then(|()| out.verify()).and_then(|()| out.sync()).and_then(|()| out.finish());
    match result {
        Ok(()) => {
            report.elapsed = started.elapsed();
            tracing::info!(set = %setp.display(), dest = %dest.display(), txn, base = %report.base,
                atoms = report.atoms, records = report.records, "restore completed");
            Ok(report)
        }
        Err(e) => {
            out.remove();
            Err(if cancelled(&e) { RestoreError::Cancelled { set: setp, dest: dest.clone() } } else { e })
        }
    }
}

/// Whether `e` is the copier's (or the journal reader's) answer to a cancel.
fn cancelled(e: &RestoreError) -> bool {
    matches!(e, RestoreError::Copy { source: CopyError::Cancelled, .. })
}

/// Refuses a destination that is the set or inside it, or that is or is inside a directory a running process
/// holds ([`crate::lock`]): symbolic links are resolved in the part of `dest` that exists.
fn check_destination(set: &Path, dest: &Path) -> Result<(), RestoreError> {
    let resolved = resolve_existing(dest);
    let set = resolve_existing(set);
    if resolved.starts_with(&set) {
        return Err(RestoreError::DestinationInSet { dest: dest.to_path_buf(), resolved, set });
    }
    match check_not_held(&resolved) {
        Ok(()) => Ok(()),
        Err(LockError::InUse { kind, dir, holder }) => {
            Err(RestoreError::DestinationInUse { dest: dest.to_path_buf(), resolved, kind, dir, holder })
        }
        Err(LockError::Io { op, path, source, .. }) => Err(RestoreError::Destination { op, path, source }),
        Err(e @ LockError::File { .. }) => {
            Err(RestoreError::Destination { op: "lock", path: dest.to_path_buf(), source: std::io::Error::other(e) })
        }
    }
}

/// A journal being written into the destination: the current segment and what was written.
struct JournalOut<'a> {
    dest: &'a Destination,
    database_id: Uuid,
    archive_id: u64,
    current: Option<(SegmentWriter<BufWriter<File>>, PathBuf)>,
    segments: u64,
    bytes: u64,
}

impl JournalOut<'_> {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
        move |source| RestoreError::Destination { op, path: path.to_path_buf(), source }
    }

    fn append(&mut self, txn_id: u64, timestamp_micros: u64, payload: &[u8]) -> Result<(), RestoreError> {
        if self.current.as_ref().is_some_and(|(w, _)| w.len() >= RESTORE_SEGMENT_BYTES) {
            self.finish()?;
        }
        if self.current.is_none() {
            let number = self.segments + 1;
            let (file, path) = self.dest.create_segment(&segment_file_name(number))?;
            let header = SegmentHeader {
                database_id: self.database_id,
                archive_id: self.archive_id,
                segment: number,
                first_txn: txn_id,
            };
            let w = SegmentWriter::create(BufWriter::with_capacity(RESTORE_WRITE_BUFFER_BYTES, file), header)
                .map_err(Self::io("write", &path))?;
            self.segments = number;
            self.current = Some((w, path));
        }
        let (w, path) = self.current.as_mut().expect("a segment is open");
        w.append(txn_id, timestamp_micros, payload).map_err(Self::io("write", path))?;
        Ok(())
    }

    /// Makes the records of the current segment so far durable.
    fn sync(&mut self) -> Result<(), RestoreError> {
        if let Some((w, path)) = self.current.as_mut() {
            w.get_mut().flush().map_err(Self::io("write", path))?;
            w.get_mut().get_ref().sync_all().map_err(Self::io("fsync", path))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), RestoreError> {
        if let Some((w, path)) = self.current.take() {
            self.bytes += w.len();
            let file = w.into_inner().into_inner().map_err(|e| Self::io("write", &path)(e.into_error()))?;
            file.sync_all().map_err(Self::io("fsync", &path))?;
        }
        Ok(())
    }
}

/// What [`write_journal`] wrote.
struct JournalWritten {
    records: u64,
    segments: u64,
    bytes: u64,
    txns: Option<TxnRange>,
}

/// Writes the records of the plan into `dest/journal`, verified chunk by chunk before use.
fn write_journal(
    set: &BackupSet,
    plan: &[JournalPart],
    dest: &Destination,
    ctl: &JobControl,
) -> Result<JournalWritten, RestoreError> {
    let state = set.state();
    let mut out = JournalOut {
        dest,
        database_id: state.database_id,
        archive_id: state.archive_id,
        current: None,
        segments: 0,
        bytes: 0,
    };
    let mut written: Option<TxnRange> = None;
    let mut records = 0;
    for part in plan {
        let e = &set.elements()[part.element];
        let range = e.txn_range();
        let mut after = range.first.saturating_sub(1);
        for f in e.journal_files() {
            let path = e.data_file(f);
            let result = for_each_record(set.storage(), &e.data_file_rel(f), f, after, Some(ctl.cancel_flag()), |r| {
                if !range.contains(r.txn_id) {
                    return Err(Phase::Restore(data_error(
                        set,
                        e.name(),
                        &path,
                        format!(
                            "{} holds transaction {} at byte {} of segment {}, outside the element's range [{}, {}]",
                            path.display(),
                            r.txn_id,
                            r.offset,
                            f.id,
                            range.first,
                            range.last
                        ),
                    )));
                }
                if r.txn_id < part.first {
                    return Ok(true);
                }
                if r.txn_id > part.last {
                    return Ok(false);
                }
                out.append(r.txn_id, r.timestamp_micros, r.payload).map_err(Phase::Restore)?;
                records += 1;
                if fault::restore_pause_after() == Some(records) {
                    // What a kill here leaves is on disk: the records so far, durable.
                    out.sync().map_err(Phase::Restore)?;
                    fault::restore_pause_records(dest.path(), records, &|| ctl.is_cancelled());
                    return Err(Phase::Slice(SliceError::Cancelled));
                }
                let w = written.get_or_insert(TxnRange { first: r.txn_id, last: r.txn_id });
                w.last = r.txn_id;
                Ok(true)
            });
            let summary = match result {
                Ok(s) => s,
                Err(Phase::Restore(e)) => return Err(e),
                Err(Phase::Slice(SliceError::Cancelled)) => {
                    return Err(RestoreError::Copy {
                        set: set.dir().to_path_buf(),
                        element: Some(e.name()),
                        source: CopyError::Cancelled,
                    })
                }
                Err(Phase::Slice(err)) => return Err(data_error(set, e.name(), &path, err.to_string())),
            };
            if let Some(h) = summary.header {
                if h.database_id != state.database_id || h.archive_id != state.archive_id {
                    return Err(data_error(
                        set,
                        e.name(),
                        &path,
                        format!(
                            "{}: the segment header names database {} archive {}, the set's state database {} archive {}",
                            path.display(),
                            h.database_id,
                            h.archive_id,
                            state.database_id,
                            state.archive_id
                        ),
                    ));
                }
            }
            if summary.stopped {
                break;
            }
            after = summary.last_txn.unwrap_or(after);
        }
    }
    out.finish()?;
    Ok(JournalWritten { records, segments: out.segments, bytes: out.bytes, txns: written })
}

fn data_error(set: &BackupSet, element: ElementName, path: &Path, reason: String) -> RestoreError {
    RestoreError::DataFile { set: set.dir().to_path_buf(), element, path: path.to_path_buf(), reason }
}

/// Copies the atoms through the copier, in batches, and checks what it hashed against the manifests and each
/// copied header against the catalog.
fn copy_atoms(
    set: &BackupSet,
    base: usize,
    atoms: &[AtomSource],
    dest: &Destination,
    ctl: &JobControl,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    if !set.storage().is_local() {
        return copy_atoms_streamed(set, base, atoms, dest, ctl, report);
    }
    let setp = set.dir().to_path_buf();
    let mut copier_opts = opts.copier.clone();
    copier_opts.hash = true;
    let mut copier =
        Copier::new(copier_opts).map_err(|source| RestoreError::Copy { set: setp.clone(), element: None, source })?;
    report.backend = copier.backend();
    let end = set.elements()[base].txn_range().last;
    for batch in atoms.chunks(COPY_BATCH_FILES) {
        if ctl.is_cancelled() {
            return Err(RestoreError::Copy { set: setp, element: None, source: CopyError::Cancelled });
        }
        let requests: Vec<CopyRequest> = batch
            .iter()
            .map(|a| {
                let src = set.elements()[a.element].data_file(&a.file);
                CopyRequest::file(src, dest.atom_target(&atom_file_name(a.atom_id)))
            })
            .collect();
        let job = copier.copy(&requests, ctl, None).map_err(|source| {
            let source = dest.shown_copy_error(source);
            let by_path: HashMap<&Path, ElementName> = requests
                .iter()
                .zip(batch)
                .map(|(r, a)| (r.source.as_path(), set.elements()[a.element].name()))
                .collect();
            let element = match &source {
                CopyError::Io { path, .. } | CopyError::SourceShort { path, .. } => {
                    by_path.get(path.as_path()).copied()
                }
                _ => None,
            };
            RestoreError::Copy { set: setp.clone(), element, source }
        })?;
        for (r, a) in job.files.iter().zip(batch) {
            let e = &set.elements()[a.element];
            let src = &requests[r.request].source;
            if let Some(reason) = mismatch(&a.file, r.bytes, &r.hash, &r.chunk_hashes) {
                return Err(data_error(set, e.name(), src, format!("{}: {reason}", src.display())));
            }
            check_restored_atom(set, e.name(), src, &r.head, a, end)?;
            report.atoms += 1;
            report.atom_bytes += r.bytes;
        }
    }
    Ok(())
}

/// Checks the header of the atom file restored from `src`, whose first bytes (as the copy read and hashed them) are
/// `head`, against the catalog's `a` and the base's end point.
fn check_restored_atom(
    set: &BackupSet,
    element: ElementName,
    src: &Path,
    head: &[u8],
    a: &AtomSource,
    end: u64,
) -> Result<(), RestoreError> {
    let header = parse_atom_head(head)
        .map_err(|reason| data_error(set, element, src, format!("{}: {reason}", src.display())))?;
    let problem = if header.atom_id != a.atom_id {
        Some(format!("the file holds atom {:#x}, not {:#x}", header.atom_id, a.atom_id))
    } else if header.lsn != a.lsn {
        Some(format!("its header's LSN is {}, the catalog says {}", header.lsn, a.lsn))
    } else if header.lsn > end {
        Some(format!("its LSN {} is beyond the base's end point {end}", header.lsn))
    } else if header.body_len + ATOM_HEADER_BYTES as u64 != a.file.size {
        Some(format!("its header declares {} body bytes, the file is {} bytes", header.body_len, a.file.size))
    } else {
        None
    };
    match problem {
        Some(p) => Err(data_error(set, element, src, format!("atom file {}: {p}", src.display()))),
        None => Ok(()),
    }
}

/// [`copy_atoms`] for a set the copier cannot read directly (object storage): [`RESTORE_STREAMS_IN_FLIGHT`] atoms
/// at a time, each streamed from the store into its file, hashed chunk by chunk as it goes and checked against the
/// manifest, then its header checked; the files are made durable together at the end (one `syncfs`, as the copier
/// does for small targets). The first failure stops the others after the atom each is on. Memory: one chunk per
/// stream.
fn copy_atoms_streamed(
    set: &BackupSet,
    base: usize,
    atoms: &[AtomSource],
    dest: &Destination,
    ctl: &JobControl,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let end = set.elements()[base].txn_range().last;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<RestoreError>> = Mutex::new(None);
    let copied: Mutex<(u64, u64)> = Mutex::new((0, 0));
    std::thread::scope(|scope| {
        for _ in 0..RESTORE_STREAMS_IN_FLIGHT.min(atoms.len()) {
            scope.spawn(|| {
                let (mut files, mut bytes) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let Some(a) = atoms.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                    match stream_atom(set, end, a, dest, ctl) {
                        Ok(n) => (files, bytes) = (files + 1, bytes + n),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            // The cause, not the cancel another stream's failure may have made this one see.
                            let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
                            if first.as_ref().is_none_or(cancelled) {
                                *first = Some(e);
                            }
                            break;
                        }
                    }
                }
                let mut c = copied.lock().unwrap_or_else(|p| p.into_inner());
                (c.0, c.1) = (c.0 + files, c.1 + bytes);
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    dest.sync_atoms().map_err(|source| RestoreError::Copy {
        set: set.dir().to_path_buf(),
        element: None,
        source: CopyError::Io { op: "syncfs", path: dest.path().to_path_buf(), source },
    })?;
    let (files, bytes) = copied.into_inner().unwrap_or_else(|p| p.into_inner());
    report.atoms += files;
    report.atom_bytes += bytes;
    Ok(())
}

/// Streams the atom `a` from the store into its file, hashed and checked as [`copy_atoms_streamed`] says; gives its
/// bytes.
fn stream_atom(
    set: &BackupSet,
    end: u64,
    a: &AtomSource,
    dest: &Destination,
    ctl: &JobControl,
) -> Result<u64, RestoreError> {
    let setp = set.dir().to_path_buf();
    if ctl.is_cancelled() {
        return Err(RestoreError::Copy { set: setp, element: None, source: CopyError::Cancelled });
    }
    let e = &set.elements()[a.element];
    let src = e.data_file(&a.file);
    let rel = e.data_file_rel(&a.file);
    let (reader, _) = set.storage().open(&rel).map_err(|err| data_error(set, e.name(), &src, err.to_string()))?;
    let (mut out, target) = dest.create_atom(&atom_file_name(a.atom_id))?;
    // A write error is the destination's, a read error the set's.
    let mut written: std::io::Result<()> = Ok(());
    let mut head = Vec::new();
    let summary = crate::set::data::hash_stream(
        reader,
        Some(&mut |chunk: &[u8]| {
            keep_head(&mut head, chunk);
            written = out.write_all(chunk);
            written.as_ref().map(drop).map_err(|e| std::io::Error::new(e.kind(), "write"))
        }),
    );
    if let Err(source) = written {
        return Err(RestoreError::Copy {
            set: setp,
            element: None,
            source: CopyError::Io { op: "write", path: target, source },
        });
    }
    let (bytes, hash, chunks) = match summary {
        Ok(s) => s,
        Err(err) => return Err(data_error(set, e.name(), &src, format!("{}: {err}", src.display()))),
    };
    if let Some(reason) = mismatch(&a.file, bytes, &hash, &chunks) {
        return Err(data_error(set, e.name(), &src, format!("{}: {reason}", src.display())));
    }
    check_restored_atom(set, e.name(), &src, &head, a, end)?;
    Ok(bytes)
}

/// One element as `restore --report-backups` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// Element id (what `--backup-element-id` takes).
    pub element_id: Uuid,
    /// Directory name.
    pub name: ElementName,
    /// Type.
    pub kind: ElementKind,
    /// Completed, or still in progress.
    pub status: ElementStatus,
    /// When the hot copy began.
    pub begin: SystemTime,
    /// When it completed (`None` while in progress).
    pub end: Option<SystemTime>,
    /// Transaction range [R, E].
    pub txn_range: TxnRange,
}

/// The elements of the set `set_dir`, newest first (`restore --report-backups`). Reads the state only.
pub fn report_backups(set_dir: impl AsRef<Path>) -> Result<Vec<BackupInfo>, RestoreError> {
    Ok(backups(&read_state(set_dir.as_ref())?))
}

/// The elements a state lists, newest first.
pub fn backups(state: &State) -> Vec<BackupInfo> {
    state
        .elements
        .iter()
        .rev()
        .map(|e| BackupInfo {
            element_id: e.element_id,
            name: e.name(),
            kind: e.kind,
            status: e.status,
            begin: micros_to_time(e.begin_micros),
            end: (e.status == ElementStatus::Completed).then(|| micros_to_time(e.end_micros)),
            txn_range: e.txn_range,
        })
        .collect()
}

/// A time from microseconds since the Unix epoch.
pub fn micros_to_time(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

/// One line of `restore --report-timestamps`: a record's commit time and transaction id. Displays as
/// `2021-02-19T17:00:30 4484` (UTC, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimestampLine {
    /// Commit timestamp, microseconds since the Unix epoch.
    pub timestamp_micros: u64,
    /// Transaction id.
    pub txn_id: u64,
}

impl std::fmt::Display for TimestampLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = UNIX_EPOCH + Duration::from_secs(self.timestamp_micros / 1_000_000);
        let text = humantime::format_rfc3339_seconds(t).to_string();
        write!(f, "{} {}", text.trim_end_matches('Z'), self.txn_id)
    }
}

/// Which records `--report-timestamps` lists: by default the restore points (the records whose transaction a
/// restore accepts, range by range, see [`BackupSet::restorable`]); with `journal`, every record of the set's
/// journal. Of those, the ones whose commit time, in whole seconds, lies within `[start, end]` (each bound optional,
/// inclusive), as the lines show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampFilter {
    /// `--start-time`.
    pub start: Option<SystemTime>,
    /// `--end-time`.
    pub end: Option<SystemTime>,
    /// `--all-journal`: every record of the set's journal, also those below a base's end point (or past a gap) that
    /// no restore accepts.
    pub journal: bool,
}

impl TimestampFilter {
    fn admits(&self, micros: u64) -> bool {
        let secs = micros / 1_000_000;
        let s = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.start.is_none_or(|t| secs >= s(t)) && self.end.is_none_or(|t| secs <= s(t))
    }
}

/// What [`for_each_timestamp`] reports, in transaction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampItem {
    /// A record listed.
    Line(TimestampLine),
    /// The transactions between two listed ranges that are not listed: not restorable (restore points), or in no
    /// element's journal (`journal`). Reported between two listed lines only.
    Gap(TxnRange),
}

/// Calls `f` with the commit time and transaction id of each record the filter selects (each transaction once, in
/// increasing order), and with a [`TimestampItem::Gap`] where the listed ranges break (`restore
/// --report-timestamps`). The restore points come from [`BackupSet::restorable`], the ranges a restore accepts.
/// Reads the data of the elements it needs, verified against their manifests as it streams; memory does not grow
/// with the number of records. Returns the number of lines.
pub fn for_each_timestamp(
    set_dir: impl AsRef<Path>,
    filter: &TimestampFilter,
    mut f: impl FnMut(TimestampItem),
) -> Result<u64, RestoreError> {
    let set = BackupSet::open(set_dir)?;
    let setp = set.dir().to_path_buf();
    let ranges: Vec<TxnRange> = if filter.journal {
        // The transactions any element covers, merged into runs.
        let mut ranges: Vec<TxnRange> = set.elements().iter().map(|e| e.txn_range()).collect();
        ranges.sort_by_key(|r| (r.first, r.last));
        let mut runs: Vec<TxnRange> = Vec::new();
        for r in ranges {
            match runs.last_mut() {
                Some(run) if run.last.checked_add(1).is_none_or(|n| n >= r.first) => run.last = run.last.max(r.last),
                _ => runs.push(r),
            }
        }
        runs
    } else {
        set.restorable()
    };
    let mut lines = 0u64;
    // The range of the last line listed.
    let mut listed_in: Option<usize> = None;
    for (k, run) in ranges.iter().enumerate() {
        let plan = set.plan_journal(run.first, run.last, None).expect("every element's journal covers its range");
        for part in plan {
            let e = &set.elements()[part.element];
            if !matches!(set.storage().kind(&e.data_rel()), Ok(Some(EntryKind::Dir(_)))) {
                return Err(RestoreError::DataMissing { set: setp, element: e.name(), path: e.data_dir() });
            }
            let mut after = e.txn_range().first.saturating_sub(1);
            for file in e.journal_files() {
                let path = e.data_file(file);
                let summary = for_each_record(set.storage(), &e.data_file_rel(file), file, after, None, |r| {
                    if r.txn_id > part.last {
                        return Ok::<bool, SliceError>(false);
                    }
                    if r.txn_id >= part.first && filter.admits(r.timestamp_micros) {
                        if let Some(j) = listed_in.filter(|&j| j < k) {
                            for g in j..k {
                                let gap = TxnRange { first: ranges[g].last + 1, last: ranges[g + 1].first - 1 };
                                if gap.first <= gap.last {
                                    f(TimestampItem::Gap(gap));
                                }
                            }
                        }
                        listed_in = Some(k);
                        f(TimestampItem::Line(TimestampLine {
                            timestamp_micros: r.timestamp_micros,
                            txn_id: r.txn_id,
                        }));
                        lines += 1;
                    }
                    Ok(true)
                })
                .map_err(|err| data_error(&set, e.name(), &path, err.to_string()))?;
                if summary.stopped {
                    break;
                }
                after = summary.last_txn.unwrap_or(after);
            }
        }
    }
    Ok(lines)
}

/// The lines of [`for_each_timestamp`], collected (gaps left out). Holds one line (16 bytes) per record listed.
pub fn report_timestamps(
    set_dir: impl AsRef<Path>,
    filter: &TimestampFilter,
) -> Result<Vec<TimestampLine>, RestoreError> {
    let mut out = Vec::new();
    for_each_timestamp(set_dir, filter, |item| {
        if let TimestampItem::Line(l) = item {
            out.push(l)
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_lines_print_as_nuoarchive_does() {
        // 2021-02-19T17:00:30Z = 1613754030 s.
        let line = TimestampLine { timestamp_micros: 1_613_754_030_999_999, txn_id: 4484 };
        assert_eq!(line.to_string(), "2021-02-19T17:00:30 4484");
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        let window = |start, end| TimestampFilter { start, end, journal: false };
        assert!(window(at(1_613_754_030), at(1_613_754_030)).admits(line.timestamp_micros));
        assert!(!window(at(1_613_754_031), None).admits(line.timestamp_micros));
        assert!(!window(None, at(1_613_754_029)).admits(line.timestamp_micros));
    }

    #[test]
    fn ranges_read_as_an_operator_expects() {
        assert_eq!(describe_ranges(&[TxnRange { first: 100, last: 5000 }]), "range [100, 5000]");
        assert_eq!(
            describe_ranges(&[TxnRange { first: 1, last: 5 }, TxnRange { first: 9, last: 12 }]),
            "ranges [1, 5], [9, 12]"
        );
    }
}
