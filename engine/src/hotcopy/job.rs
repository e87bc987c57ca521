//! What one archive does in a hot copy: its stages from the journal pin to the element in place.
//!
//! 1. `Stage1: Begin`: checks; pin the journal at R (full, incremental, simple); initialise the set (full) or begin
//!    the element in the state (incremental, journal), in `tmp/<element id>/`.
//! 2. `Stage1: Copy atoms`: list the atoms; copy all (full, simple) or those new or whose LSN differs from the newest
//!    full/incremental catalog (incremental); an atom dropped between the listing and the copy is left out (and
//!    recorded dropped when the previous catalog had it).
//! 3. `Stage2: Wait for end point`: the coordinator's barrier picks E; wait until E is durable here.
//! 4. `Stage2: Copy journal`: the slices of `[R, E]` (journal hot copy: `[chain start, E]`).
//! 5. `Stage3: Write metadata`: manifest, catalog, element info; everything durable; commit barrier; into place.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backset_copier::limit::JobLimiter;
use backset_copier::{ChunkSink, CopyError, CopyRequest, FileReport, JobControl, JobReport, SmCopier, Throttle};
use backset_format::atom::{AtomHeader, ATOM_HEADER_BYTES};
use backset_format::dirfd::{remove_empty_dir, remove_path};
use backset_format::fsio::sync_dir;
use backset_format::layout::{
    atom_file_name, data_file_path, parse_id_name, segment_file_name, ATOMS_DIR, DATA_DIR, JOURNAL_DIR,
};
use backset_format::limits::MAX_ELEMENT_SEQUENCE;
use backset_format::{
    AtomState, Catalog, CatalogEntry, ElementEntry, ElementInfo, ElementKind, ElementStatus, FileEntry, FileKind, Hash,
    Manifest, Participant, ReadError, State, StorageGroup, TxnRange,
};
use uuid::Uuid;

use crate::archive::{Archive, ArchiveError, AtomFile, JournalPin, JournalSlice};
use crate::clock::now_micros;
use crate::hotcopy::chains::{ChainOwner, JournalChains};
use crate::hotcopy::coordinator::{Arrival, Coordinator};
use crate::hotcopy::fault;
use crate::hotcopy::{error_chain, on_archive, HotCopyError, HotCopyType, Stage};
use crate::limits::{HOTCOPY_ATOM_BATCH_FILES, HOTCOPY_ATOM_MIN_BATCH_FILES, HOTCOPY_READY_POLL};
use crate::paths::{check_parent, create_dir};
use crate::set::object::s3_location;
use crate::set::{dir_content, BackupSet, Begun, DirContent, SetError, SetWriter};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HotCopyError {
    let path = path.to_path_buf();
    move |source| HotCopyError::Io { op, path, source }
}

/// The advice of a journal hot copy refused for want of a full.
pub(crate) const START_A_FULL: &str = "start a full hot copy into it first";

/// One archive of a job, as the manager resolved the request.
pub(crate) struct ParticipantSpec {
    /// Position among the job's participants (by archive id).
    pub index: usize,
    /// The archive.
    pub archive: Arc<dyn Archive>,
    /// Its SM's start id.
    pub start_id: u64,
    /// The backup set (or simple copy) directory.
    pub dest: PathBuf,
    /// A simple hot copy's journal directory when it is not `<dest>/journal`.
    pub journal_dir: Option<PathBuf>,
}

/// What a running participant shows: stage, element, range, bytes and files.
#[derive(Debug)]
pub(crate) struct ParticipantLive {
    pub info: Mutex<LiveInfo>,
    /// Signalled when `info.initialised` becomes true.
    initialised: Condvar,
    /// Updated once per copier call (never per byte): the batch in flight is read from its own job control.
    counts: Mutex<Counts>,
}

/// What a participant has copied and still plans to copy, outside the copier call in flight.
#[derive(Debug, Default)]
struct Counts {
    /// Bytes and files of the copier calls that finished.
    done: Amount,
    /// Atoms listed (and to copy) not yet handed to the copier: their sizes at the listing.
    atoms_ahead: Amount,
    /// The journal not yet handed to the copier: estimated from the range `[R, durable now]` until the end point is
    /// chosen, then the exact slices of `[R, E]`.
    journal_ahead: Amount,
    /// The copier call in flight, and the bytes and files planned for it.
    current: Option<(Arc<JobControl>, Amount)>,
}

/// An amount of copying: bytes and files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Amount {
    pub bytes: u64,
    pub files: u64,
}

impl Amount {
    fn take(&mut self, w: Amount) {
        self.bytes = self.bytes.saturating_sub(w.bytes);
        self.files = self.files.saturating_sub(w.files);
    }
}

/// A participant's progress: what [`ParticipantLive::progress`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LiveProgress {
    pub bytes_done: u64,
    /// Bytes done plus those planned: the listed atoms' sizes and the journal range's bytes (estimated until the end
    /// point is chosen). Equal to `bytes_done` once everything is copied.
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Rate of the copier call in flight over about the last second (0 between calls).
    pub rate_bytes_per_sec: f64,
}

/// The changing part of a participant's status.
#[derive(Debug, Clone)]
pub(crate) struct LiveInfo {
    pub stage: Stage,
    pub element: Option<String>,
    pub txn_range: Option<(u64, u64)>,
    /// Stage 1's checks passed and the destination is set up: a full's set initialised (journal hot copies into
    /// it are accepted from now on), an element begun, a simple copy's `.incomplete` directories made.
    pub initialised: bool,
}

impl ParticipantLive {
    pub fn new() -> Self {
        Self {
            info: Mutex::new(LiveInfo { stage: Stage::Begin, element: None, txn_range: None, initialised: false }),
            initialised: Condvar::new(),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Bytes and files done and in all (as planned so far), and the current rate.
    pub fn progress(&self) -> LiveProgress {
        let counts = lock(&self.counts);
        let ahead = [counts.atoms_ahead, counts.journal_ahead];
        let mut p = LiveProgress {
            bytes_done: counts.done.bytes,
            bytes_total: counts.done.bytes + ahead.iter().map(|w| w.bytes).sum::<u64>(),
            files_done: counts.done.files,
            files_total: counts.done.files + ahead.iter().map(|w| w.files).sum::<u64>(),
            rate_bytes_per_sec: 0.0,
        };
        if let Some((ctl, planned)) = &counts.current {
            let c = ctl.progress();
            p.bytes_done += c.bytes_done;
            p.files_done += c.files_done;
            // The copier's total grows as it opens files: until then the call counts as planned.
            p.bytes_total += c.bytes_total.max(planned.bytes).max(c.bytes_done);
            p.files_total += c.files_total.max(planned.files).max(c.files_done);
            p.rate_bytes_per_sec = c.rate_bytes_per_sec;
        }
        p
    }

    /// Plans the atoms listed to copy and the journal (replacing any earlier plan of them), at once: a status read
    /// meanwhile shows either no plan or all of it, never the atoms without the journal (a total that would then
    /// grow by the journal's files and bytes).
    fn plan(&self, atoms: Amount, journal: Amount) {
        let mut counts = lock(&self.counts);
        counts.atoms_ahead = atoms;
        counts.journal_ahead = journal;
    }

    /// Plans the journal to copy (an estimate, or the exact slices once the end point is chosen).
    fn plan_journal(&self, w: Amount) {
        lock(&self.counts).journal_ahead = w;
    }

    fn set_stage(&self, stage: Stage) {
        lock(&self.info).stage = stage;
    }

    fn set_initialised(&self) {
        lock(&self.info).initialised = true;
        self.initialised.notify_all();
    }

    /// Waits up to `timeout` for the participant to be initialised (`false`: not yet), or for `ended` to hold
    /// (checked at least every `HOTCOPY_READY_POLL`).
    pub fn wait_initialised(&self, timeout: Duration, ended: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut info = lock(&self.info);
        while !info.initialised && !ended() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            info =
                self.initialised.wait_timeout(info, left.min(HOTCOPY_READY_POLL)).unwrap_or_else(|p| p.into_inner()).0;
        }
        info.initialised
    }
}

/// The job-wide facts a participant needs.
pub(crate) struct JobContext<'a> {
    pub id: Uuid,
    pub kind: HotCopyType,
    pub coordinator_start_id: u64,
    pub participants: &'a [Participant],
    pub coord: &'a Coordinator,
    /// Which set continues each archive's journal chain.
    pub chains: &'a JournalChains,
}

/// Runs one participant to the end, copying through its SM's copier (`None`: the manager serves no such archive). On
/// an error it tells the coordinator (which stops the others) and leaves its set as valid as before.
pub(crate) fn run_participant(
    ctx: &JobContext<'_>,
    spec: &ParticipantSpec,
    live: &ParticipantLive,
    limiter: &JobLimiter,
    copier: Option<Result<SmCopier, CopyError>>,
) -> Result<(), HotCopyError> {
    let archive_id = spec.archive.identity().archive_id;
    let copier = copier.unwrap_or_else(|| {
        Err(CopyError::Setup { backend: "copier", reason: format!("no copier for archive {archive_id}") })
    });
    let mut work = match copier {
        Ok(copier) => Work {
            ctx,
            spec,
            live,
            runner: Runner { copier, limiter, coord: ctx.coord, live },
            output: None,
            pin: None,
            committed: false,
            journal_moved: false,
        },
        Err(e) => {
            let e = HotCopyError::from(e);
            ctx.coord.fail(on_archive(archive_id, &e));
            return Err(e);
        }
    };
    let result = work.run();
    if let Err(e) = &result {
        if !matches!(e, HotCopyError::Stopped { .. }) {
            ctx.coord.fail(on_archive(archive_id, e));
        }
        if let Err(cleanup) = work.abort() {
            tracing::error!(
                hot_copy = %ctx.id, archive_id, error = %error_chain(&cleanup),
                "could not remove the unfinished element; the next hot copy of the set removes it"
            );
        }
    }
    result
}

/// Copies through the SM's copier (shared with the SM's other jobs), one copier call per batch, each with its own job
/// control registered with the coordinator (so a cancel reaches it) and shown in the progress.
struct Runner<'a> {
    copier: SmCopier,
    limiter: &'a JobLimiter,
    coord: &'a Coordinator,
    live: &'a ParticipantLive,
}

/// Which part of the plan a copier call takes its work from.
#[derive(Debug, Clone, Copy)]
enum Part {
    Atoms,
    Journal,
}

impl Counts {
    fn ahead(&mut self, part: Part) -> &mut Amount {
        match part {
            Part::Atoms => &mut self.atoms_ahead,
            Part::Journal => &mut self.journal_ahead,
        }
    }
}

impl Runner<'_> {
    /// Runs one copier call for `planned` of the `part` planned: in the progress, that work moves from the plan to
    /// the call in flight, then to what is done (the bytes and files copied; back to the plan when the call fails).
    ///
    /// With `stream` (an element of a set whose storage takes its data files streamed, see
    /// `SetStorage::stream_data`), the copier reads the requests' sources and hands its buffers to the storage
    /// instead of writing the targets, which name the files within the staged element.
    fn copy(
        &mut self,
        requests: &[CopyRequest],
        part: Part,
        planned: Amount,
        stream: Option<(&SetWriter, &Begun)>,
    ) -> Result<JobReport, HotCopyError> {
        self.coord.check()?;
        let ctl = Arc::new(JobControl::new());
        {
            let mut counts = lock(&self.live.counts);
            counts.ahead(part).take(planned);
            counts.current = Some((Arc::clone(&ctl), planned));
        }
        self.coord.register(&ctl);
        let throttle = Some(self.limiter as &dyn Throttle);
        let mut stored = Ok(());
        let result = match stream {
            None => self.copier.copy(requests, &ctl, throttle),
            Some((handle, begun)) => {
                let files: Vec<PathBuf> = requests
                    .iter()
                    .map(|r| r.target.as_deref().and_then(|t| t.strip_prefix(&begun.tmp).ok()).map(Path::to_path_buf))
                    .collect::<Option<_>>()
                    .expect("the targets of an element's copy are in its staged directory");
                let reads: Vec<CopyRequest> =
                    requests.iter().map(|r| CopyRequest { target: None, ..r.clone() }).collect();
                let copier = &self.copier;
                let mut copy = |sink: &dyn ChunkSink| copier.stream(&reads, &ctl, throttle, sink);
                match handle.stream_data(begun, &files, &ctl, &mut copy) {
                    Ok(result) => result,
                    Err(e) => {
                        stored = Err(e);
                        Err(CopyError::Cancelled)
                    }
                }
            }
        };
        self.coord.unregister(&ctl);
        {
            let mut counts = lock(&self.live.counts);
            counts.current = None;
            match &result {
                Ok(report) => {
                    counts.done.bytes += report.bytes;
                    counts.done.files += report.files.len() as u64;
                }
                Err(_) => {
                    let ahead = counts.ahead(part);
                    ahead.bytes += planned.bytes;
                    ahead.files += planned.files;
                }
            }
        }
        stored?;
        match result {
            Ok(report) => Ok(report),
            Err(e) => {
                self.coord.check()?;
                Err(e.into())
            }
        }
    }
}

/// The set and element a copy streams its data files to, when the set's storage takes them so.
fn streaming(output: &Option<Output>) -> Option<(&SetWriter, &Begun)> {
    match output {
        Some(Output::Element { handle, begun, .. }) if handle.streams_data() => Some((handle, begun)),
        _ => None,
    }
}

/// What a participant writes.
enum Output {
    /// A simple hot copy's archive copy.
    ArchiveCopy {
        /// `<dest>.incomplete`.
        incomplete: PathBuf,
        /// `<journal dir>.incomplete` of a separate journal directory.
        journal: Option<PathBuf>,
    },
    /// An element of a backup set, built in its `tmp/<id>/`.
    Element {
        handle: SetWriter,
        /// The set's id (its `state`'s `set_id`): which journal chain it is.
        set_id: Uuid,
        begun: Begun,
        created_dir: bool,
        /// The newest full/incremental's catalog (incremental only).
        prev_catalog: Option<Catalog>,
        parent: Option<Uuid>,
    },
}

/// What `Stage1: Copy atoms` did: the listing, the atoms copied, those gone before they could be copied.
#[derive(Default)]
struct CopiedAtoms {
    listing: Vec<AtomFile>,
    copied: BTreeMap<u64, CopiedAtom>,
    vanished: HashSet<u64>,
}

/// An atom copied: its LSN from the copied file's header, and the copier's report.
struct CopiedAtom {
    lsn: u64,
    report: FileReport,
}

struct Work<'a> {
    ctx: &'a JobContext<'a>,
    spec: &'a ParticipantSpec,
    live: &'a ParticipantLive,
    runner: Runner<'a>,
    output: Option<Output>,
    pin: Option<JournalPin>,
    committed: bool,
    /// A simple hot copy's separate journal directory has its final name (its archive directory not yet).
    journal_moved: bool,
}

/// The `<dir>.incomplete` a simple hot copy writes into.
pub(crate) fn incomplete_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".incomplete");
    dir.with_file_name(name)
}

/// Checks the destination of a full hot copy: absent, empty, or a set a failed full left without element.
pub(crate) fn preflight_full(dest: &Path) -> Result<DirContent, HotCopyError> {
    match dir_content(dest)? {
        DirContent::Other(what) => {
            Err(HotCopyError::NotEmpty { dir: dest.to_path_buf(), kind: HotCopyType::Full, what })
        }
        DirContent::NotADirectory => {
            Err(HotCopyError::NotADirectory { dir: dest.to_path_buf(), kind: HotCopyType::Full })
        }
        DirContent::Absent => {
            check_parent(dest, BACKUP_SET)?;
            Ok(DirContent::Absent)
        }
        other => Ok(other),
    }
}

/// What a full hot copy's destination is, in the parent rule's message (NuoDB's words).
const BACKUP_SET: &str = "backup set";
/// What a simple hot copy's destination is, in the parent rule's message.
const ARCHIVE_COPY: &str = "archive copy";
/// What a simple hot copy's separate journal directory is, in the parent rule's message.
const JOURNAL_COPY: &str = "journal copy";

/// Checks the destination of a simple hot copy: `<dir>` (and a separate `journal` directory) absent or empty; a
/// `<dir>.incomplete` left by a failed one is removed when it holds nothing but `atoms/` and `journal/` (what a
/// simple hot copy writes), a `<journal>.incomplete` when it holds nothing but journal segment files; else refused.
pub(crate) fn preflight_simple(dest: &Path, journal: Option<&Path>, remove_leftover: bool) -> Result<(), HotCopyError> {
    let is_ours_archive = |e: &fs::DirEntry| {
        let n = e.file_name();
        (n == ATOMS_DIR || n == JOURNAL_DIR) && e.file_type().is_ok_and(|t| t.is_dir())
    };
    let is_ours_journal = |e: &fs::DirEntry| {
        e.file_name().to_str().and_then(parse_id_name).is_some() && e.file_type().is_ok_and(|t| t.is_file())
    };
    // Removed once every check passed.
    let mut leftovers = Vec::new();
    // A copy killed between renaming its separate journal directory and its archive directory left `<dest>` absent,
    // `<dest>.incomplete`, and `<journal>` under its final name holding only segments: the copy is not complete
    // (the archive directory's name is its commit point), so that journal directory is a leftover of it.
    let mut journal_leftover = false;
    if let Some(j) = journal {
        let interrupted = matches!(dir_content(dest)?, DirContent::Absent | DirContent::Empty)
            && fs::symlink_metadata(incomplete_dir(dest)).is_ok_and(|m| m.is_dir())
            && fs::symlink_metadata(incomplete_dir(j)).is_err();
        if interrupted && matches!(dir_content(j)?, DirContent::Other(_) | DirContent::NotADirectory) {
            journal_leftover =
                fs::read_dir(j).map_err(io_err("read directory", j))?.all(|e| e.is_ok_and(|e| is_ours_journal(&e)));
            if journal_leftover {
                leftovers.push(j.to_path_buf());
            }
        }
    }
    // A journal directory that is such a leftover has no `.incomplete` either: nothing more to check of it.
    let journal = journal.filter(|_| !journal_leftover);
    // The parent rule (crate::paths): `<dir>.incomplete` is created beside `<dir>`, never its parents.
    check_parent(dest, ARCHIVE_COPY)?;
    if let Some(j) = journal {
        check_parent(j, JOURNAL_COPY)?;
    }
    type Ours<'a> = &'a dyn Fn(&fs::DirEntry) -> bool;
    let dirs: [(Option<&Path>, Ours); 2] = [(Some(dest), &is_ours_archive), (journal, &is_ours_journal)];
    for (dir, ours) in dirs {
        let Some(dir) = dir else { continue };
        match dir_content(dir)? {
            DirContent::Other(what) => {
                return Err(HotCopyError::NotEmpty { dir: dir.to_path_buf(), kind: HotCopyType::Simple, what })
            }
            DirContent::NotADirectory => {
                return Err(HotCopyError::NotADirectory { dir: dir.to_path_buf(), kind: HotCopyType::Simple })
            }
            DirContent::Absent | DirContent::Empty => {}
        }
        let incomplete = incomplete_dir(dir);
        let content = dir_content(&incomplete)?;
        if content == DirContent::NotADirectory {
            return Err(HotCopyError::NotADirectory { dir: incomplete, kind: HotCopyType::Simple });
        }
        if let DirContent::Other(what) = content {
            let all_ours = fs::read_dir(&incomplete)
                .map_err(io_err("read directory", &incomplete))?
                .all(|e| e.is_ok_and(|e| ours(&e)));
            if !all_ours {
                return Err(HotCopyError::NotEmpty { dir: incomplete, kind: HotCopyType::Simple, what });
            }
            leftovers.push(incomplete);
        }
    }
    if remove_leftover {
        for leftover in leftovers {
            remove_path(&leftover).map_err(io_err("remove", &leftover))?;
        }
    }
    Ok(())
}

/// Opens the set of an incremental or journal hot copy and checks it is this archive's.
pub(crate) fn open_set(
    archive: &dyn Archive,
    dest: &Path,
    missing: impl Fn(String) -> HotCopyError,
) -> Result<(SetWriter, BackupSet), HotCopyError> {
    if s3_location(dest).is_none() && !dest.exists() {
        return Err(missing("does not exist".into()));
    }
    // Strict: an element or `control/` that is a link, control files that disagree, a broken chain refuse the hot
    // copy here, before the journal is pinned or anything in the set is written or removed.
    let set = match BackupSet::open(dest) {
        Ok(set) => set,
        Err(SetError::NotASet { .. }) => return Err(missing("is not initialised (it has no state file)".into())),
        Err(SetError::Metadata { element: None, source: ReadError::Io { source, .. }, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(missing("is not initialised (it has no state file)".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let id = archive.identity();
    let s = set.state();
    if s.database_id != id.database_id || s.archive_id != id.archive_id {
        let whose = |archive: u64, name: &str, db: Uuid| format!("archive {archive} of database {name} ({db})");
        return Err(SetError::Foreign {
            dir: dest.to_path_buf(),
            set: whose(s.archive_id, &s.database_name, s.database_id),
            archive: whose(id.archive_id, &id.database_name, id.database_id),
        }
        .into());
    }
    Ok((SetWriter::new(dest)?, set))
}

/// The reason an incremental cannot run on `set`, if any.
pub(crate) fn incremental_blocker(set: &BackupSet) -> Option<String> {
    set.newest_base().is_none().then(|| match set.full_entry() {
        Some(_) => "has a full element that is not completed yet".to_string(),
        None => "has no full element".to_string(),
    })
}

fn next_sequence(state: &State, kind: ElementKind, dir: &Path) -> Result<u32, HotCopyError> {
    let n = state.elements.iter().filter(|e| e.kind == kind).map(|e| e.sequence).max().unwrap_or(0) + 1;
    if n > MAX_ELEMENT_SEQUENCE {
        return Err(HotCopyError::Request {
            reason: format!(
                "backup set {} already holds {} {} elements, the most a set can hold; start a new backup set",
                dir.display(),
                MAX_ELEMENT_SEQUENCE,
                kind.name()
            ),
        });
    }
    Ok(n)
}

impl Work<'_> {
    fn archive(&self) -> &dyn Archive {
        &*self.spec.archive
    }

    fn archive_id(&self) -> u64 {
        self.spec.archive.identity().archive_id
    }

    fn set_stage(&self, stage: Stage) -> Result<(), HotCopyError> {
        self.live.set_stage(stage);
        self.ctx.coord.check()
    }

    /// Pins the journal; returns `(R, R')`.
    fn pin(&mut self) -> Result<(u64, u64), HotCopyError> {
        let pin = self.archive().pin_journal()?;
        let r = pin.recovery_start();
        let durable = self.archive().durable_txn();
        self.pin = Some(pin);
        Ok((r, r.min(durable)))
    }

    fn new_entry(kind: ElementKind, sequence: u32, first: u64) -> ElementEntry {
        ElementEntry {
            kind,
            sequence,
            element_id: Uuid::new_v4(),
            status: ElementStatus::InProgress,
            txn_range: TxnRange { first, last: first },
            begin_micros: now_micros(),
            end_micros: 0,
        }
    }

    /// Runs the participant's hot copy, by type.
    fn run(&mut self) -> Result<(), HotCopyError> {
        self.set_stage(Stage::Begin)?;
        match self.ctx.kind {
            HotCopyType::Simple => self.run_simple()?,
            HotCopyType::Full => self.run_full()?,
            HotCopyType::Incremental => self.run_incremental()?,
            HotCopyType::Journal => self.run_journal()?,
        }
        self.pin = None;
        Ok(())
    }

    /// A simple hot copy: the archive's atoms and its journal `[R, E]` into `<dest>.incomplete` (and a separate
    /// `<journal dir>.incomplete`), renamed into place once durable.
    fn run_simple(&mut self) -> Result<(), HotCopyError> {
        let (r, r_prime) = self.begin_archive_copy()?;
        self.begun()?;
        let atoms = self.copy_atoms_stage(r)?;
        let e = self.end_point(Some(r_prime), &atoms)?;
        self.copy_journal_stage(r, Some(TxnRange { first: r_prime, last: e }), e)?;
        self.publish_archive_copy()
    }

    /// A full hot copy: a new set whose first element holds every atom and the journal `[R', E]`; the set then
    /// continues the archive's journal chain.
    fn run_full(&mut self) -> Result<(), HotCopyError> {
        let (r, r_prime) = self.pin()?;
        self.begin_set(r_prime)?;
        self.begun()?;
        let atoms = self.copy_atoms_stage(r)?;
        let e = self.end_point(Some(r_prime), &atoms)?;
        let range = TxnRange { first: r_prime, last: e };
        let journal = self.copy_journal_stage(r, Some(range), e)?;
        let info = self.write_element(&atoms, &journal, range)?;
        let set_id = self.publish_element(&info)?;
        // The pin still holds the journal from R' on: retention takes over from here, and this set continues the
        // chain.
        let archive_id = self.archive_id();
        self.archive().journal_retain_from(r_prime);
        let dest = &self.spec.dest;
        let owner = ChainOwner { set_id, dir: dest.clone() };
        if let Err(e) = self.ctx.chains.set_owner(archive_id, owner) {
            tracing::warn!(archive = archive_id, set = %dest.display(), "the full hot copy completed, but its set could not be recorded as the one that continues the journal chain: {e}");
        }
        Ok(())
    }

    /// An incremental hot copy: the atoms new or changed since the newest full or incremental, a cumulative
    /// catalog, and the journal `[R, E]`.
    fn run_incremental(&mut self) -> Result<(), HotCopyError> {
        let (r, r_prime) = self.begin_incremental()?;
        self.begun()?;
        let atoms = self.copy_atoms_stage(r)?;
        let e = self.end_point(Some(r_prime), &atoms)?;
        // An incremental claims only the journal it holds: [R, E] (or [E, E] when R > E: it restores to E from its
        // atoms alone). R' = R - 1 (an archive fully checkpointed at the pin) has no record in it, and claiming it
        // would let a restore from an earlier base take transaction R' from this element and silently skip it
        // (engine/tests/oracle.rs, a_restore_between_bases_keeps_the_first_transaction_of_a_fully_checkpointed_
        // incremental). The full keeps R', where the journal chain starts.
        let range = TxnRange { first: r.min(e), last: e };
        let journal = self.copy_journal_stage(r, Some(range), e)?;
        let info = self.write_element(&atoms, &journal, range)?;
        self.publish_element(&info)?;
        Ok(())
    }

    /// A journal hot copy: the journal from the end of the set's chain (the previous journal element's E + 1, or
    /// the full's R') to E, without atoms; no element when nothing was committed since.
    fn run_journal(&mut self) -> Result<(), HotCopyError> {
        let (first, chain_start) = self.begin_journal()?;
        self.begun()?;
        let copy_from = self.journal_copy_from(first, chain_start);
        self.live.plan_journal(self.journal_estimate(copy_from));
        let e = self.end_point(None, &CopiedAtoms::default())?;
        // Transaction ids start at 1: a journal element of a database that has committed nothing has nothing to copy.
        if e < copy_from {
            self.copy_journal_stage(copy_from, None, e)?;
            return self.drop_empty_element();
        }
        let range = TxnRange { first, last: e };
        let journal = self.copy_journal_stage(copy_from, Some(range), e)?;
        let info = self.write_element(&CopiedAtoms::default(), &journal, range)?;
        self.check_journal_parent()?;
        let set_id = self.publish_element(&info)?;
        // Only the set that continues the chain moves the archive's mark (see `chains`).
        if self.ctx.chains.continues(self.archive_id(), set_id) {
            self.archive().journal_copied_up_to(e);
        }
        Ok(())
    }

    /// Stage 1 of a simple hot copy: the `.incomplete` directories (only their last components, the parent rule of
    /// `crate::paths`; `preflight_simple` removed leftovers), then the pin. Returns `(R, R')`.
    fn begin_archive_copy(&mut self) -> Result<(u64, u64), HotCopyError> {
        let dest = self.spec.dest.clone();
        preflight_simple(&dest, self.spec.journal_dir.as_deref(), true)?;
        let incomplete = incomplete_dir(&dest);
        let journal = self.spec.journal_dir.as_deref().map(incomplete_dir);
        if !incomplete.is_dir() {
            create_dir(&incomplete, &dest, ARCHIVE_COPY)?;
        }
        if let (Some(j), Some(shown)) = (&journal, self.spec.journal_dir.as_deref()) {
            if !j.is_dir() {
                create_dir(j, shown, JOURNAL_COPY)?;
            }
        }
        let journal_target = journal.clone().unwrap_or_else(|| incomplete.join(JOURNAL_DIR));
        for d in [incomplete.join(ATOMS_DIR), journal_target] {
            if !d.is_dir() {
                fs::create_dir(&d).map_err(io_err("create directory", &d))?;
            }
        }
        self.output = Some(Output::ArchiveCopy { incomplete, journal });
        self.pin()
    }

    /// Stage 1 of a full hot copy, once pinned: the set directory (when absent) and its `state` with the full in
    /// progress, starting at `r_prime`. From here on journal hot copies of this archive go into this set.
    fn begin_set(&mut self, r_prime: u64) -> Result<(), HotCopyError> {
        let dest = self.spec.dest.clone();
        let created_dir = preflight_full(&dest)? == DirContent::Absent;
        if created_dir {
            create_dir(&dest, &dest, BACKUP_SET)?;
        }
        let id = self.archive().identity();
        let entry = Self::new_entry(ElementKind::Full, 0, r_prime);
        let state = State {
            set_id: Uuid::new_v4(),
            database_name: id.database_name.clone(),
            database_id: id.database_id,
            archive_id: id.archive_id,
            storage_groups: id
                .storage_groups
                .iter()
                .map(|(id, name)| StorageGroup { id: *id, name: name.clone() })
                .collect(),
            elements: vec![entry],
        };
        let set_id = state.set_id;
        let begun = SetWriter::new(&dest).and_then(|handle| handle.init(&state).map(|b| (handle, b)));
        let (handle, begun) = match begun {
            Ok(hb) => hb,
            Err(e) => {
                if created_dir {
                    let _ = remove_empty_dir(&dest);
                }
                return Err(e.into());
            }
        };
        self.output = Some(Output::Element { handle, set_id, begun, created_dir, prev_catalog: None, parent: None });
        self.ctx.chains.begin_full(id.archive_id, ChainOwner { set_id, dir: dest });
        Ok(())
    }

    /// Stage 1 of an incremental: the set read strictly, the pin, and the element begun on the newest full or
    /// incremental (whose catalog it compares atoms with). Returns `(R, R')`.
    fn begin_incremental(&mut self) -> Result<(u64, u64), HotCopyError> {
        let dest = self.spec.dest.clone();
        let missing = |reason| HotCopyError::NeedsFull { dir: dest.clone(), reason };
        let (handle, set) = open_set(self.archive(), &dest, missing)?;
        let set_id = set.state().set_id;
        let (r, r_prime) = self.pin()?;
        let mut base = None;
        let begun = handle.begin(set, |set| {
            if let Some(reason) = incremental_blocker(set) {
                return Err(HotCopyError::NeedsFull { dir: dest.clone(), reason });
            }
            let newest = set.newest_base().expect("checked");
            let catalog = set.catalog(newest)?;
            let seq = next_sequence(set.state(), ElementKind::Incremental, &dest)?;
            base = Some((set.elements()[newest].id(), catalog));
            Ok(Self::new_entry(ElementKind::Incremental, seq, r_prime))
        })?;
        let (parent, catalog) = base.expect("set by begin");
        self.output = Some(Output::Element {
            handle,
            set_id,
            begun,
            created_dir: false,
            prev_catalog: Some(catalog),
            parent: Some(parent),
        });
        Ok((r, r_prime))
    }

    /// Stage 1 of a journal hot copy: the set read strictly and the element begun where the chain ends (no pin:
    /// retention holds the journal from there). Returns that first transaction, and whether the element is the first
    /// of its chain (it starts at the full's R').
    fn begin_journal(&mut self) -> Result<(u64, bool), HotCopyError> {
        if !self.archive().journal_hot_copy_enabled() {
            return Err(HotCopyError::JournalDisabled { archive_id: self.archive_id() });
        }
        let dest = self.spec.dest.clone();
        let missing = |reason| HotCopyError::NeedsFullForJournal {
            dir: dest.clone(),
            reason: format!("{reason}; {START_A_FULL}"),
        };
        let (handle, set) = open_set(self.archive(), &dest, missing)?;
        let set_id = set.state().set_id;
        let (mut parent, mut chain_start) = (None, false);
        let archive_id = self.archive_id();
        let begun = handle.begin(set, |set| {
            let Some(full) = set.full_entry() else {
                return Err(HotCopyError::NeedsFullForJournal {
                    dir: dest.clone(),
                    reason: format!("has no full element; {START_A_FULL}"),
                });
            };
            self.ctx.chains.check_journal(archive_id, set_id, &dest)?;
            let first = set.next_journal_start().expect("the set has a full");
            chain_start = set.newest_journal().is_none();
            parent = Some(set.newest_journal().map_or(full.element_id, |j| set.elements()[j].id()));
            let seq = next_sequence(set.state(), ElementKind::Journal, &dest)?;
            Ok(Self::new_entry(ElementKind::Journal, seq, first))
        })?;
        let first = begun.entry.txn_range.first;
        self.output = Some(Output::Element { handle, set_id, begun, created_dir: false, prev_catalog: None, parent });
        Ok((first, chain_start))
    }

    /// The first transaction whose records a journal element starting at `first` copies. Ids start at 1, and a chain
    /// may start at 0 (the full of a database that had committed nothing). The first element of a chain starts at its
    /// full's R' = min(R, D): when that full pinned a fully checkpointed archive (R = D + 1), the pin did not hold the
    /// record of R' and the archive may no longer have it (a bulk-loaded database never journalled it). Every change
    /// of R' is then in the full's atoms, and no restore from the set needs the record (each base ends at or after the
    /// full's E >= R'), so the copy starts at R' + 1 when the archive's journal starts there. Any other gap fails the
    /// copy, as recycled records must.
    fn journal_copy_from(&self, first: u64, chain_start: bool) -> u64 {
        let from = first.max(1);
        if !chain_start || from > self.archive().durable_txn() {
            return from;
        }
        match self.archive().journal_slices(from, from) {
            Err(ArchiveError::Recycled { recycled_below, .. }) if recycled_below == from + 1 => recycled_below,
            _ => from,
        }
    }

    /// The end of stage 1: the element's name in the status, the participant initialised (a journal hot copy may
    /// start), the test-only `begun` fault point.
    fn begun(&mut self) -> Result<(), HotCopyError> {
        if let Some(Output::Element { begun, .. }) = &self.output {
            lock(&self.live.info).element = Some(begun.entry.name().to_string());
        }
        self.live.set_initialised();
        self.fault_pause("begun")
    }

    /// `Stage1: Copy atoms`: lists the atoms and copies all of them, or those new or changed since the previous
    /// catalog (an incremental). Before the first byte is copied, the progress plans them (their sizes now) and the
    /// journal from `journal_from` (R) to the durable end now.
    fn copy_atoms_stage(&mut self, journal_from: u64) -> Result<CopiedAtoms, HotCopyError> {
        self.set_stage(Stage::CopyAtoms)?;
        let mut listing = self.archive().atoms()?;
        if !listing.is_sorted_by_key(|a| a.atom_id) {
            listing.sort_by_key(|a| a.atom_id);
        }
        let prev = match &self.output {
            Some(Output::Element { prev_catalog: Some(c), .. }) => Some(c),
            _ => None,
        };
        let wanted = changed_atoms(&listing, prev);
        // An atom gone since the listing counts 0 bytes here; the copy leaves it out. A stat only for an atom whose
        // SM did not give its size.
        let sizes: Vec<u64> = wanted
            .iter()
            .map(|a| a.bytes.unwrap_or_else(|| fs::symlink_metadata(&a.path).map_or(0, |m| m.len())))
            .collect();
        let journal = self.journal_estimate(journal_from);
        self.live.plan(Amount { bytes: sizes.iter().sum(), files: wanted.len() as u64 }, journal);
        let dir = self.data_dir().join(ATOMS_DIR);
        let mut atoms = CopiedAtoms { listing, ..CopiedAtoms::default() };
        self.copy_atoms(&wanted, &sizes, &dir, &mut atoms.copied, &mut atoms.vanished)?;
        Ok(atoms)
    }

    /// `Stage2: Wait for end point`: arrives at the coordinator's barrier (with R', none for a journal hot copy, and
    /// the highest LSN copied), which picks E; waits until E is durable here. A copied atom above E fails the job.
    fn end_point(&mut self, r_prime: Option<u64>, atoms: &CopiedAtoms) -> Result<u64, HotCopyError> {
        self.set_stage(Stage::WaitEndPoint)?;
        let max_lsn = atoms.copied.values().map(|c| c.lsn).max().unwrap_or(0);
        let e = self.ctx.coord.arrive_end_point(self.spec.index, Arrival { r_prime, max_lsn })?;
        self.ctx.coord.wait_durable(self.archive(), e)?;
        if let Some((id, c)) = atoms.copied.iter().find(|(_, c)| c.lsn > e) {
            return Err(HotCopyError::BadAtom {
                path: self.archive().dir().join(ATOMS_DIR).join(atom_file_name(*id)),
                reason: format!("copied with LSN {} above the end point {e} (guarantee G2 broken)", c.lsn),
            });
        }
        Ok(e)
    }

    /// `Stage2: Copy journal`: the status shows `range` (none: no element will be made), then the journal slices
    /// of `[copy_from, e]` are copied (none when `copy_from > e`).
    fn copy_journal_stage(
        &mut self,
        copy_from: u64,
        range: Option<TxnRange>,
        e: u64,
    ) -> Result<Vec<(JournalSlice, FileReport)>, HotCopyError> {
        lock(&self.live.info).txn_range = range.map(|r| (r.first, r.last));
        self.set_stage(Stage::CopyJournal)?;
        if copy_from > e {
            self.live.plan_journal(Amount::default());
            return Ok(Vec::new());
        }
        let slices = self.archive().journal_slices(copy_from, e)?;
        self.live.plan_journal(self.journal_amount(&slices));
        self.copy_journal(&slices)
    }

    /// `Stage3: Write metadata` of a journal hot copy with no transaction since the previous journal element: the
    /// element begun is removed (no element to add) and the participant passes the commit barrier.
    fn drop_empty_element(&mut self) -> Result<(), HotCopyError> {
        self.set_stage(Stage::WriteMetadata)?;
        if let Some(Output::Element { handle, begun, .. }) = self.output.take() {
            handle.abort(&begun, false)?;
        }
        lock(&self.live.info).element = None;
        self.ctx.coord.arrive_commit()?;
        self.committed = true;
        Ok(())
    }

    /// `Stage3: Write metadata` of an element: its manifest, catalog and element info written and durable in
    /// `tmp/<id>/`, the commit barrier passed, then the test-only `before-move` fault point. Returns the info.
    fn write_element(
        &mut self,
        atoms: &CopiedAtoms,
        journal: &[(JournalSlice, FileReport)],
        range: TxnRange,
    ) -> Result<ElementInfo, HotCopyError> {
        self.set_stage(Stage::WriteMetadata)?;
        let end_micros = now_micros();
        let Some(Output::Element { handle, begun, prev_catalog, parent, .. }) = &self.output else {
            unreachable!("a hot copy into a set writes an element")
        };
        let mut files: Vec<FileEntry> = atoms
            .copied
            .iter()
            .map(|(id, c)| file_entry(FileKind::Atom, *id, 0, &c.report))
            .chain(journal.iter().map(|(s, r)| file_entry(FileKind::Journal, s.segment, s.offset, r)))
            .collect();
        files.sort_by_key(|f| (f.kind, f.id));
        let element_id = begun.entry.element_id;
        let manifest = Manifest { element_id, files };
        let atoms = match begun.entry.kind {
            ElementKind::Journal => Vec::new(),
            _ => catalog_entries(&atoms.listing, &atoms.copied, &atoms.vanished, prev_catalog.as_ref()),
        };
        let catalog = Catalog { element_id, atoms };
        let info = ElementInfo {
            element_id,
            kind: begun.entry.kind,
            sequence: begun.entry.sequence,
            hot_copy_id: self.ctx.id,
            coordinator_start_id: self.ctx.coordinator_start_id,
            participants: self.ctx.participants.to_vec(),
            txn_range: range,
            begin_micros: begun.entry.begin_micros,
            end_micros: end_micros.max(begun.entry.begin_micros),
            parent: *parent,
        };
        if !handle.streams_data() {
            // Streamed files were checked as they were stored, and are checked again when the element is sealed.
            check_data_files(&begun.tmp.join(DATA_DIR), &manifest.files)?;
        }
        handle.write_control(begun, &manifest, &catalog, &info)?;
        self.ctx.coord.arrive_commit()?;
        self.fault_pause("before-move")?;
        Ok(info)
    }

    /// A journal element builds on its parent: the full it started from must still be in the set.
    fn check_journal_parent(&self) -> Result<(), HotCopyError> {
        let Some(Output::Element { handle, parent, .. }) = &self.output else {
            unreachable!("a journal hot copy writes an element")
        };
        let state = handle.read_state()?;
        if parent.is_some_and(|p| state.elements.iter().any(|e| e.element_id == p)) {
            return Ok(());
        }
        Err(HotCopyError::NeedsFullForJournal {
            dir: self.spec.dest.clone(),
            reason: format!(
                "lost the full hot copy this journal element started from (it failed or was cancelled); \
                 {START_A_FULL}"
            ),
        })
    }

    /// Moves the element written by [`write_element`](Self::write_element) into place and marks it completed in
    /// the state. Returns the set's id.
    fn publish_element(&mut self, info: &ElementInfo) -> Result<Uuid, HotCopyError> {
        let Some(Output::Element { handle, set_id, begun, .. }) = &self.output else {
            unreachable!("a hot copy into a set writes an element")
        };
        let (kind, id, dest) = (self.ctx.kind, self.ctx.id, &self.spec.dest);
        handle.commit(begun, info.txn_range, info.end_micros, || {
            let _ = fault::pause("mid-move", kind, dest, id, None);
        })?;
        let set_id = *set_id;
        self.committed = true;
        Ok(set_id)
    }

    /// `Stage3: Write metadata` of a simple hot copy: everything made durable, the commit barrier passed, then the
    /// journal directory renamed into place, then the archive directory, whose name without `.incomplete` says the
    /// copy is complete.
    fn publish_archive_copy(&mut self) -> Result<(), HotCopyError> {
        self.set_stage(Stage::WriteMetadata)?;
        let Some(Output::ArchiveCopy { incomplete, journal }) = &self.output else {
            unreachable!("a simple hot copy writes an archive copy")
        };
        let (incomplete, journal) = (incomplete.clone(), journal.clone());
        let journal_target = journal.clone().unwrap_or_else(|| incomplete.join(JOURNAL_DIR));
        for d in [&incomplete.join(ATOMS_DIR), &journal_target, &incomplete] {
            sync_dir(d).map_err(SetError::from)?;
        }
        self.ctx.coord.arrive_commit()?;
        self.fault_pause("before-move")?;
        if let (Some(from), Some(to)) = (&journal, &self.spec.journal_dir) {
            fs::rename(from, to).map_err(io_err("rename", from))?;
            self.journal_moved = true;
            sync_parent(to)?;
            let _ = fault::pause("mid-move", self.ctx.kind, &self.spec.dest, self.ctx.id, None);
        }
        let dest = &self.spec.dest;
        fs::rename(&incomplete, dest).map_err(io_err("rename", &incomplete))?;
        sync_parent(dest)?;
        self.committed = true;
        Ok(())
    }

    /// Where data files go: `tmp/<id>/data` of the element, or the simple copy's `.incomplete` directory.
    fn data_dir(&self) -> PathBuf {
        match self.output.as_ref().expect("begun") {
            Output::ArchiveCopy { incomplete, .. } => incomplete.clone(),
            Output::Element { begun, .. } => begun.tmp.join(DATA_DIR),
        }
    }

    /// Where journal files go: `<data dir>/journal`, or a simple copy's separate `<journal dir>.incomplete`.
    fn journal_dir(&self) -> PathBuf {
        match self.output.as_ref().expect("begun") {
            Output::ArchiveCopy { journal: Some(j), .. } => j.clone(),
            _ => self.data_dir().join(JOURNAL_DIR),
        }
    }

    /// The test-only pause at `point` (see `fault`; a cancel still ends it), then the test-only failure there.
    fn fault_pause(&self, point: &str) -> Result<(), HotCopyError> {
        let coord = self.ctx.coord;
        fault::pause(point, self.ctx.kind, &self.spec.dest, self.ctx.id, Some(&|| coord.check()))?;
        fault::fail(point, self.ctx.kind, &self.spec.dest)
    }

    /// The journal from `first` to the durable end now (what the progress plans until the end point is chosen);
    /// nothing when that range is empty or its slices cannot be read now (the copy reports that itself).
    fn journal_estimate(&self, first: u64) -> Amount {
        let durable = self.archive().durable_txn();
        let slices = if first <= durable { self.archive().journal_slices(first, durable).ok() } else { None };
        slices.map_or(Amount::default(), |s| self.journal_amount(&s))
    }

    /// The bytes and files [`copy_journal`](Self::copy_journal) copies for `slices`.
    fn journal_amount(&self, slices: &[JournalSlice]) -> Amount {
        let simple = matches!(self.output, Some(Output::ArchiveCopy { .. }));
        let bytes = slices.iter().map(|s| if simple { s.offset + s.len } else { s.len }).sum();
        Amount { bytes, files: slices.len() as u64 }
    }

    /// Copies `atoms` (of `sizes` at the listing) in batches; an atom whose file is gone when the copier opens it is
    /// left out (`vanished`).
    ///
    /// A file gone makes the copier's call fail and undo the batch, so each such failure costs the batch again. With
    /// small atoms, many of them hold a key or two and are dropped as soon as those are deleted, so a busy archive can
    /// drop several during one batch: after a failure every atom of the batch that is gone is left out at once (one
    /// `stat` each, only then), and the batches halve down to [`HOTCOPY_ATOM_MIN_BATCH_FILES`] (doubling again after
    /// each success), which bounds what one dropped atom costs to re-copy.
    fn copy_atoms(
        &mut self,
        atoms: &[AtomFile],
        sizes: &[u64],
        dir: &Path,
        copied: &mut BTreeMap<u64, CopiedAtom>,
        vanished: &mut HashSet<u64>,
    ) -> Result<(), HotCopyError> {
        let mut rest: std::collections::VecDeque<(&AtomFile, u64)> = atoms.iter().zip(sizes.iter().copied()).collect();
        let mut batch_files = HOTCOPY_ATOM_BATCH_FILES;
        // Each failure leaves out at least the atom it names, or finds it back: at most one retry per atom.
        let mut retries = 0;
        while !rest.is_empty() {
            let pending: Vec<(&AtomFile, u64)> = rest.drain(..batch_files.min(rest.len())).collect();
            let requests: Vec<CopyRequest> =
                pending.iter().map(|(a, _)| CopyRequest::file(&a.path, dir.join(atom_file_name(a.atom_id)))).collect();
            let planned = Amount { bytes: pending.iter().map(|(_, size)| size).sum(), files: pending.len() as u64 };
            match self.runner.copy(&requests, Part::Atoms, planned, streaming(&self.output)) {
                Ok(report) => {
                    for ((a, _), file) in pending.iter().zip(report.files) {
                        let lsn = copied_lsn(a, &file)?;
                        copied.insert(a.atom_id, CopiedAtom { lsn, report: file });
                    }
                    batch_files = (batch_files * 2).min(HOTCOPY_ATOM_BATCH_FILES);
                }
                Err(HotCopyError::Copy(CopyError::Io { op: "open", path, source }))
                    if source.kind() == std::io::ErrorKind::NotFound
                        && retries < atoms.len()
                        && pending.iter().any(|(a, _)| a.path == path) =>
                {
                    retries += 1;
                    batch_files = (batch_files / 2).max(HOTCOPY_ATOM_MIN_BATCH_FILES);
                    // Dropped by the checkpointer since the listing: no longer planned, the total drops by what the
                    // listing counted for each.
                    let mut kept = Vec::with_capacity(pending.len());
                    for (atom, size) in pending {
                        if fs::symlink_metadata(&atom.path).is_err() {
                            vanished.insert(atom.atom_id);
                            lock(&self.live.counts).atoms_ahead.take(Amount { bytes: size, files: 1 });
                        } else {
                            kept.push((atom, size));
                        }
                    }
                    for item in kept.into_iter().rev() {
                        rest.push_front(item);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Copies journal slices: into the element's `data/journal/<segment>` as they are, or for a simple hot copy
    /// from the segment's start (so every segment file starts with its header) to the slice's end.
    fn copy_journal(&mut self, slices: &[JournalSlice]) -> Result<Vec<(JournalSlice, FileReport)>, HotCopyError> {
        if slices.is_empty() {
            return Ok(Vec::new());
        }
        let simple = matches!(self.output, Some(Output::ArchiveCopy { .. }));
        let dir = self.journal_dir();
        let requests: Vec<CopyRequest> = slices
            .iter()
            .map(|s| {
                let target = dir.join(segment_file_name(s.segment));
                if simple {
                    CopyRequest::range(&s.path, target, 0, s.offset + s.len)
                } else {
                    CopyRequest::range(&s.path, target, s.offset, s.len)
                }
            })
            .collect();
        let planned = self.journal_amount(slices);
        let report = self.runner.copy(&requests, Part::Journal, planned, streaming(&self.output))?;
        Ok(slices.iter().cloned().zip(report.files).collect())
    }

    /// Leaves the destination as valid as before: removes the element being built and its state entry (a simple
    /// hot copy keeps its `.incomplete` directory, as NuoDB does).
    fn abort(&mut self) -> Result<(), HotCopyError> {
        self.pin = None;
        if self.committed {
            return Ok(());
        }
        match self.output.take() {
            Some(Output::Element { handle, set_id, begun, created_dir, .. }) => {
                if begun.entry.kind == ElementKind::Full {
                    self.ctx.chains.abandon_full(self.archive_id(), set_id);
                }
                handle.abort(&begun, created_dir)?
            }
            Some(Output::ArchiveCopy { journal: Some(from), .. }) if self.journal_moved => {
                // The archive directory could not be moved: the journal directory gets its `.incomplete` back.
                let to = self.spec.journal_dir.clone().expect("a separate journal directory");
                fs::rename(&to, &from).map_err(io_err("rename", &to))?;
                sync_parent(&from)?;
            }
            Some(Output::ArchiveCopy { .. }) | None => {}
        }
        Ok(())
    }
}

/// The LSN in the header of the copied file of `atom` (its first bytes, as the copier read them: no second read),
/// checked against its id and size.
fn copied_lsn(atom: &AtomFile, file: &FileReport) -> Result<u64, HotCopyError> {
    let bad = |reason: String| HotCopyError::BadAtom { path: atom.path.clone(), reason };
    let h = AtomHeader::parse(&file.head).map_err(|e| bad(e.to_string()))?;
    if h.atom_id != atom.atom_id {
        return Err(bad(format!("the header names atom {}", h.atom_id)));
    }
    if ATOM_HEADER_BYTES as u64 + h.body_len != file.bytes {
        return Err(bad(format!("copied {} bytes, the header declares a {}-byte body", file.bytes, h.body_len)));
    }
    Ok(h.lsn)
}

/// Makes the entry of `path` in its parent directory durable.
fn sync_parent(path: &Path) -> Result<(), HotCopyError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent).map_err(|e| SetError::from(e).into()),
        None => sync_dir(Path::new(".")).map_err(|e| SetError::from(e).into()),
    }
}

/// Checks that every data file the copier reported is in place with its size: the element's directory was not moved
/// or changed under the copy.
fn check_data_files(data: &Path, files: &[FileEntry]) -> Result<(), HotCopyError> {
    for f in files {
        let path = data.join(data_file_path(f.kind, f.id));
        let size = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?.len();
        if size != f.size {
            return Err(HotCopyError::Io {
                op: "check",
                path,
                source: std::io::Error::other(format!(
                    "the copied file has {size} bytes instead of {}; the backup set was changed during the hot copy",
                    f.size
                )),
            });
        }
    }
    Ok(())
}

fn file_entry(kind: FileKind, id: u64, offset: u64, r: &FileReport) -> FileEntry {
    FileEntry { kind, id, offset, size: r.bytes, hash: r.hash, chunk_hashes: r.chunk_hashes.clone() }
}

/// The atoms of `listing` (sorted by atom id) to copy: all of them without a previous catalog (a full), else those
/// the previous catalog does not have present with the same LSN. One merge of the two sorted lists: linear in the
/// atoms of both, no lookup per atom.
fn changed_atoms(listing: &[AtomFile], prev: Option<&Catalog>) -> Vec<AtomFile> {
    let Some(prev) = prev else { return listing.to_vec() };
    let mut old = prev.atoms.iter().peekable();
    let mut wanted = Vec::new();
    for a in listing {
        while old.next_if(|e| e.atom_id < a.atom_id).is_some() {}
        let unchanged = old
            .next_if(|e| e.atom_id == a.atom_id)
            .is_some_and(|e| matches!(e.state, AtomState::Present { .. }) && e.lsn == a.lsn);
        if !unchanged {
            wanted.push(a.clone());
        }
    }
    wanted
}

/// The cumulative catalog of a full or incremental: every atom of the listing (copied: LSN and hash of the copy;
/// unchanged: the previous catalog's entry), and `Dropped` (with its last known LSN) for each atom the previous
/// catalog had present that is gone now. One merge of the listing, the copied atoms and the previous catalog, all
/// sorted by atom id: linear in their lengths.
fn catalog_entries(
    listing: &[AtomFile],
    copied: &BTreeMap<u64, CopiedAtom>,
    vanished: &HashSet<u64>,
    prev: Option<&Catalog>,
) -> Vec<CatalogEntry> {
    let prev_atoms = prev.map(|p| p.atoms.as_slice()).unwrap_or_default();
    let mut out: Vec<CatalogEntry> = Vec::with_capacity(listing.len().max(prev_atoms.len()));
    let mut copied = copied.iter().peekable();
    let mut old = prev_atoms.iter().peekable();
    // What the previous catalog's entry becomes when the atom is not in the listing (or vanished before its copy).
    let dropped = |e: &CatalogEntry| {
        matches!(e.state, AtomState::Present { .. }).then_some(CatalogEntry {
            atom_id: e.atom_id,
            lsn: e.lsn,
            state: AtomState::Dropped,
        })
    };
    for a in listing {
        while let Some(e) = old.next_if(|e| e.atom_id < a.atom_id) {
            out.extend(dropped(e));
        }
        let before = old.next_if(|e| e.atom_id == a.atom_id);
        while copied.next_if(|(&id, _)| id < a.atom_id).is_some() {}
        if let Some((_, c)) = copied.next_if(|(&id, _)| id == a.atom_id) {
            let hash: Hash = c.report.hash;
            out.push(CatalogEntry { atom_id: a.atom_id, lsn: c.lsn, state: AtomState::Present { hash } });
        } else if vanished.contains(&a.atom_id) {
            out.extend(before.and_then(dropped));
        } else if let Some(e) = before {
            out.push(*e);
        }
    }
    out.extend(old.filter_map(dropped));
    out
}
