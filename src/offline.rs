//! The offline tools: `restore` (nuoarchive's options), `check` (a backup set) and `archive dump|info|check` (an
//! archive directory). They read files only; no server is involved. See docs/CLI.md and docs/RESTORE.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use backset_copier::JobControl;
use backset_engine::check::{check_archive_with_journal, check_set, CheckOptions, Select};
use backset_engine::found::{found, missing_archive_part, Found};
use backset_engine::restore::{
    backups, for_each_timestamp, refuse_unfinished, restore, RestoreError, RestoreOptions, RestorePoint,
    TimestampFilter, TimestampItem,
};
use backset_engine::set::read_state;
use backset_format::layout::JOURNAL_DIR;
use backset_format::ElementStatus;
use backset_refstore::read_archive_with_journal;
use serde_json::json;
use uuid::Uuid;

use crate::progress;
use crate::text::{counted, txn_range};
use crate::usage::UsageError;

/// Options of `backset restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup set to restore from.
    pub set: PathBuf,
    /// Destination: a new archive directory (absent or empty). Required unless a report is asked for.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["report_backups", "report_timestamps"])]
    pub restore_dir: Option<PathBuf>,
    /// Point-in-time restore to this transaction id (see `--report-timestamps` for the restorable ones).
    #[arg(
        long,
        value_name = "TXN",
        conflicts_with = "backup_element_id",
        allow_negative_numbers = true,
        value_parser = crate::cli::count::<u64>
    )]
    pub restore_snapshot: Option<u64>,
    /// Restore to the end point of this completed element (see `--report-backups` for the ids).
    #[arg(long, value_name = "ID")]
    pub backup_element_id: Option<Uuid>,
    /// List the set's elements, newest first, instead of restoring.
    #[arg(long, conflicts_with_all = ["report_timestamps", "restore_dir", "restore_snapshot", "backup_element_id"])]
    pub report_backups: bool,
    /// List the restore points, the transactions a restore accepts, as `<UTC time> <txn id>` range by range (a
    /// `# not restorable: ...` line where a gap lies), instead of restoring.
    #[arg(long, conflicts_with_all = ["restore_dir", "restore_snapshot", "backup_element_id"])]
    pub report_timestamps: bool,
    /// With `--report-timestamps`: every transaction of the set's journal, also those no restore accepts (below the
    /// full's end point, past a gap).
    #[arg(long, requires = "report_timestamps")]
    pub all_journal: bool,
    /// With `--report-timestamps`: only transactions at or after this UTC time (`2021-02-19T17:00:30`).
    #[arg(long, value_name = "T", requires = "report_timestamps", value_parser = parse_time)]
    pub start_time: Option<SystemTime>,
    /// With `--report-timestamps`: only transactions at or before this UTC time (`2021-02-19T17:00:30`).
    #[arg(long, value_name = "T", requires = "report_timestamps", value_parser = parse_time)]
    pub end_time: Option<SystemTime>,
    /// Print one JSON document instead of text; with `--report-timestamps`, one JSON object a line (docs/CLI.md,
    /// "JSON output").
    #[arg(long)]
    pub json: bool,
}

/// A UTC time as `2021-02-19T17:00:30` (or with a space, fractional seconds, a trailing `Z`).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| format!("{s:?} is not a UTC time like 2021-02-19T17:00:30: {e}"))
}

/// Options of `backset check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The backup set to validate.
    pub set: PathBuf,
    /// Read the state and the control files only, never `data/` (fast; answers which transactions are
    /// restorable).
    #[arg(long)]
    pub metadata_only: bool,
    /// Read the data of only the elements not verified without defect by an earlier check (the set's
    /// verification record), and the metadata and chain of the whole set.
    #[arg(long, conflicts_with_all = ["metadata_only", "since"])]
    pub new: bool,
    /// Read the data of only the elements not verified without defect within DURATION (`12h`, `7d`; `0s` is every
    /// element), and the metadata and chain of the whole set.
    #[arg(long, value_name = "DURATION", conflicts_with = "metadata_only", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Print one JSON document instead of text (docs/CLI.md, "JSON output").
    #[arg(long)]
    pub json: bool,
}

/// `backset set`: operations on a whole backup set.
#[derive(clap::Subcommand, Debug)]
pub enum SetCommand {
    /// Remove the objects of a set on object storage that no published element uses: those of hot copies that
    /// failed, were killed or lost a race, once the newest of a job's objects is older than --min-age (a job that
    /// may still be writing is left alone). Published elements are never touched.
    ///
    /// Example: `backset set gc s3://backups/demo/2026-w49`
    Gc {
        /// The set: `s3://bucket/prefix`.
        set: PathBuf,
        /// Remove a job's objects only once its newest object is at least this old (`1h`, `30m`; `0s`: now).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
        min_age: Duration,
    },
    /// Copy a completed backup set between a directory and object storage (either way): every data file read back
    /// and verified against its manifest, each element published only after its data, in the set's order. Resumable:
    /// an element the destination already holds is not sent again.
    ///
    /// Example: `backset set copy /backups/set1 s3://backups/demo/set1`
    Copy {
        /// The set to copy (a directory or `s3://bucket/prefix`).
        src: PathBuf,
        /// Where to copy it: absent, empty, or an earlier (interrupted) copy of the same set.
        dst: PathBuf,
    },
}

/// Runs `backset set ...`.
pub fn run_set(cmd: &SetCommand) -> Result<()> {
    match cmd {
        SetCommand::Copy { src, dst } => {
            for p in [src, dst] {
                if let Some(Err(e)) = backset_engine::set::object::s3_location(p) {
                    return Err(anyhow::Error::new(UsageError(e.to_string())));
                }
            }
            let r = backset_engine::set::copy::copy_set(src, dst)?;
            for name in &r.skipped {
                println!("{name}: already in {} (not sent again)", dst.display());
            }
            for name in &r.copied {
                println!("{name}: copied and published");
            }
            println!(
                "copied {} element(s) ({} data files, {} bytes) of {} to {}, {} already there",
                r.copied.len(),
                r.files,
                r.bytes,
                src.display(),
                dst.display(),
                r.skipped.len()
            );
            Ok(())
        }
        SetCommand::Gc { set, min_age } => {
            let Some(url) = backset_engine::set::object::s3_location(set) else {
                return Err(anyhow::Error::new(UsageError(format!(
                    "{}: set gc is for a set on object storage (s3://bucket/prefix); in a directory, the next hot \
                     copy into the set removes what an interrupted one left",
                    set.display()
                ))));
            };
            let url = url.map_err(|e| anyhow::Error::new(UsageError(e.to_string())))?;
            let report = backset_engine::set::object::gc(&url, *min_age)?;
            for (job, objects) in &report.removed {
                println!("removed {job}/ ({objects} objects of a hot copy that did not publish)");
            }
            for job in &report.kept {
                println!(
                    "kept {job}/ (written less than {} ago: it may still be running)",
                    humantime::format_duration(*min_age)
                );
            }
            println!(
                "{url}: {} published element(s) kept, {} unpublished job(s) removed, {} kept",
                report.published,
                report.removed.len(),
                report.kept.len()
            );
            Ok(())
        }
    }
}

/// A duration as `90s`, `12h`, `7d`, `1h 30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 12h or 7d: {e}"))
}

/// `backset archive`: an archive directory (`atoms/`, `journal/`) that no SM is using.
#[derive(clap::Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Print the archive's data as JSON lines `{"key": .., "value": ..}` sorted by key (strings when the key and
    /// value are UTF-8, else `keyHex` and `valueHex`).
    ///
    /// Example: `backset archive dump /tmp/restored`
    Dump {
        /// The archive directory.
        dir: PathBuf,
        /// The archive's journal directory, when it is not DIR/journal (a simple hot copy with copyJournalDir).
        #[arg(long, value_name = "DIR")]
        journal_dir: Option<PathBuf>,
    },
    /// Print the archive's metadata as JSON: last transaction id, database id, archive id, counts.
    ///
    /// Example: `backset archive info /tmp/restored`
    Info {
        /// The archive directory.
        dir: PathBuf,
        /// The archive's journal directory, when it is not DIR/journal (a simple hot copy with copyJournalDir).
        #[arg(long, value_name = "DIR")]
        journal_dir: Option<PathBuf>,
        /// Print one JSON document (the default: `info` always prints JSON) (docs/CLI.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Verify every atom file's checksum and every journal record's framing; exit 1 on any defect.
    ///
    /// Example: `backset archive check /tmp/restored`
    Check {
        /// The archive directory.
        dir: PathBuf,
        /// The archive's journal directory, when it is not DIR/journal (a simple hot copy with copyJournalDir).
        #[arg(long, value_name = "DIR")]
        journal_dir: Option<PathBuf>,
        /// Print one JSON document instead of text (docs/CLI.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
}

/// Runs `backset restore`.
pub fn run_restore(args: &RestoreArgs) -> Result<()> {
    let set = &args.set;
    if args.report_backups {
        return print_backups(set, args.json);
    }
    if args.report_timestamps {
        if let (Some(start), Some(end)) = (args.start_time, args.end_time) {
            if start > end {
                return Err(anyhow::Error::new(UsageError(format!(
                    "--start-time {} is after --end-time {}: give the earlier time as --start-time",
                    humantime::format_rfc3339_seconds(start),
                    humantime::format_rfc3339_seconds(end)
                ))));
            }
        }
        let filter = TimestampFilter { start: args.start_time, end: args.end_time, journal: args.all_journal };
        let gap = if args.all_journal { "in no element's journal" } else { "not restorable" };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut write_err = None;
        for_each_timestamp(set, &filter, |item| {
            if write_err.is_none() {
                let written = match (item, args.json) {
                    (TimestampItem::Line(line), false) => writeln!(out, "{line}"),
                    (TimestampItem::Gap(r), false) => {
                        writeln!(out, "# {gap}: transactions {} to {}", r.first, r.last)
                    }
                    (TimestampItem::Line(line), true) => {
                        let time = humantime::format_rfc3339_micros(
                            std::time::UNIX_EPOCH + Duration::from_micros(line.timestamp_micros),
                        );
                        writeln!(out, "{}", json!({ "time": time.to_string(), "txnId": line.txn_id }))
                    }
                    (TimestampItem::Gap(r), true) => {
                        writeln!(out, "{}", json!({ "gap": gap, "firstTxn": r.first, "lastTxn": r.last }))
                    }
                };
                if let Err(e) = written {
                    write_err = Some(e);
                }
            }
        })?;
        if let Some(e) = write_err {
            return Err(e).context("write to stdout");
        }
        return out.flush().context("write to stdout");
    }
    let Some(dest) = &args.restore_dir else { bail!("give --restore-dir DIR (a new archive directory)") };
    let target = match (args.restore_snapshot, args.backup_element_id) {
        (Some(txn), _) => RestorePoint::Transaction(txn),
        (None, Some(id)) => RestorePoint::Element(id),
        (None, None) => RestorePoint::Latest,
    };
    let control = Arc::new(JobControl::new());
    let signal = cancel_on_signals(&control)?;
    let opts = RestoreOptions { control: Some(Arc::clone(&control)), ..RestoreOptions::default() };
    let report = match progress::follow("restore", &control, || restore(set, dest, target, &opts)) {
        Ok(report) => report,
        Err(e @ RestoreError::Cancelled { .. }) => match signal.get() {
            Some(name) => bail!("{name} received: {e}"),
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let names = |v: &[backset_format::ElementName]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ");
    if args.json {
        let list = |v: &[backset_format::ElementName]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let out = json!({
            "set": set.display().to_string(),
            "restoreDir": dest.display().to_string(),
            "targetTxn": report.target_txn,
            "base": report.base.to_string(),
            "baseId": report.base_id.to_string(),
            "atoms": report.atoms,
            "atomBytes": report.atom_bytes,
            "atomElements": list(&report.atom_elements),
            "records": report.records,
            "journalBytes": report.journal_bytes,
            "journalElements": list(&report.journal_elements),
            "elapsedSeconds": report.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "restored backup set {} to transaction {} in {}: {} ({} bytes) from {}, {} from {}, base {} ({}), {:.2} s",
        set.display(),
        report.target_txn,
        dest.display(),
        counted(report.atoms, "atom"),
        report.atom_bytes,
        if report.atom_elements.is_empty() { "-".into() } else { names(&report.atom_elements) },
        counted(report.records, "journal record"),
        if report.journal_elements.is_empty() { "-".into() } else { names(&report.journal_elements) },
        report.base,
        report.base_id,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Makes SIGINT and SIGTERM cancel the restore that `control` follows, so that Ctrl-C (or a service manager's stop)
/// ends it as any failure does: nothing is left in the destination. Returns the name of the signal once one came.
/// The handlers stay for the rest of the process (a restore is its only work): a second signal changes nothing, the
/// restore is already removing what it wrote.
fn cancel_on_signals(control: &Arc<JobControl>) -> Result<Arc<OnceLock<&'static str>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the signal handler of the restore")?;
    // Registered here, before the restore writes anything: a signal from now on is caught.
    let (mut int, mut term) = {
        let _in_rt = rt.enter();
        let int = signal(SignalKind::interrupt()).context("catch SIGINT")?;
        let term = signal(SignalKind::terminate()).context("catch SIGTERM")?;
        (int, term)
    };
    let received = Arc::new(OnceLock::new());
    let (control, got) = (Arc::clone(control), Arc::clone(&received));
    std::thread::Builder::new()
        .name("restore-signals".into())
        .spawn(move || {
            let name = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            });
            let _ = got.set(name);
            tracing::warn!("{name} received: cancelling the restore (it removes what it wrote)");
            control.cancel();
        })
        .context("start the signal handler of the restore")?;
    Ok(received)
}

/// `--report-backups`: NuoDB's `<BackupSet>` listing, one element a line, newest first, with Backset's extra
/// attributes (directory name, status, transaction range).
fn print_backups(set: &Path, as_json: bool) -> Result<()> {
    let state = read_state(set)?;
    let elements = backups(&state);
    if as_json {
        let list: Vec<serde_json::Value> = elements
            .iter()
            .map(|e| {
                json!({
                    "id": e.element_id.to_string(),
                    "name": e.name.to_string(),
                    "type": e.kind.name(),
                    "status": if e.status == ElementStatus::Completed { "completed" } else { "in-progress" },
                    "startDate": date(e.begin),
                    "endDate": e.end.map(date),
                    "firstTxn": e.txn_range.first,
                    "lastTxn": e.txn_range.last,
                })
            })
            .collect();
        let out = json!({
            "id": state.set_id.to_string(),
            "database": state.database_name,
            "databaseId": state.database_id.to_string(),
            "archiveId": state.archive_id,
            "elements": list,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "<BackupSet id=\"{}\" database=\"{}\" databaseId=\"{}\" archiveId=\"{}\">",
        state.set_id,
        xml_escape(&state.database_name),
        state.database_id,
        state.archive_id
    );
    println!("  <BackupElements>");
    for e in elements {
        let end = e.end.map(date).unwrap_or_default();
        let status = if e.status == ElementStatus::Completed { "completed" } else { "in-progress" };
        println!(
            "    <BackupElement id=\"{}\" name=\"{}\" type=\"{}\" status=\"{status}\" startDate=\"{}\" \
             endDate=\"{end}\" firstTxn=\"{}\" lastTxn=\"{}\"/>",
            e.element_id,
            e.name,
            e.kind.name(),
            date(e.begin),
            e.txn_range.first,
            e.txn_range.last
        );
    }
    println!("  </BackupElements>");
    println!("</BackupSet>");
    Ok(())
}

/// `2021-02-19 17:01:05` (UTC), NuoDB's date form.
fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().trim_end_matches('Z').replacen('T', " ", 1)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `check`'s text: each defect and note on a line, then the summary.
fn print_check(args: &CheckArgs, report: &backset_engine::check::CheckReport) {
    for d in &report.defects {
        println!("defect: {d}");
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    let ranges: Vec<String> = report.restorable.iter().map(|r| txn_range(r.first, r.last)).collect();
    let what = if report.metadata_only { "metadata checked" } else { "verified" };
    let before = if report.verified_before > 0 {
        format!(" ({} verified before, data not read)", report.verified_before)
    } else {
        String::new()
    };
    println!(
        "backup set {}: {}{before}, {} ({} bytes) {what}, {}; restorable transactions: {}",
        args.set.display(),
        counted(report.elements as u64, "completed element"),
        counted(report.files_read, "data file"),
        report.bytes_read,
        counted(report.defects_total(), "defect"),
        if ranges.is_empty() { "none".to_string() } else { ranges.join(", ") }
    );
}

/// Runs `backset check`: prints every defect (element, file, what) and the restorable ranges; fails when there is
/// a defect.
pub fn run_check(args: &CheckArgs) -> Result<()> {
    let control = Arc::new(JobControl::new());
    let select = match (args.new, args.since) {
        (true, _) => Select::New,
        (false, Some(age)) => Select::OlderThan(age),
        (false, None) => Select::All,
    };
    let opts = CheckOptions {
        metadata_only: args.metadata_only,
        select,
        record: !args.metadata_only,
        control: Some(Arc::clone(&control)),
        ..Default::default()
    };
    let report = progress::follow("check", &control, || check_set(&args.set, &opts))?;
    if args.json {
        let defects: Vec<serde_json::Value> = report
            .defects
            .iter()
            .map(|d| {
                json!({
                    "element": d.element.map(|e| e.to_string()),
                    "file": d.file.as_ref().map(|f| f.display().to_string()),
                    "kind": d.kind.name(),
                    "message": d.what,
                })
            })
            .collect();
        let (select, since) = match select {
            Select::All => ("all", None),
            Select::New => ("new", None),
            Select::OlderThan(age) => ("since", Some(age.as_secs_f64())),
        };
        let out = json!({
            "set": args.set.display().to_string(),
            "ok": report.is_ok(),
            "metadataOnly": report.metadata_only,
            "select": select,
            "sinceSeconds": since,
            "elements": report.elements,
            "verifiedBefore": report.verified_before,
            "filesRead": report.files_read,
            "bytesRead": report.bytes_read,
            "defectsTotal": report.defects_total(),
            "defects": defects,
            "notes": report.notes,
            "restorable": report.restorable.iter().map(|r| json!({ "firstTxn": r.first, "lastTxn": r.last })).collect::<Vec<_>>(),
            "elapsedSeconds": report.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_check(args, &report);
    }
    if !report.is_ok() {
        let listed = if args.json { "listed in the JSON" } else { "listed above" };
        bail!("backup set {} has {} ({listed})", args.set.display(), counted(report.defects_total(), "defect"));
    }
    Ok(())
}

/// Runs `backset archive ...`.
pub fn run_archive(cmd: &ArchiveCommand) -> Result<()> {
    match cmd {
        ArchiveCommand::Dump { dir, journal_dir } => dump(&ArchiveDirs::new(dir, journal_dir.as_deref())?),
        ArchiveCommand::Info { dir, journal_dir, json: _ } => info(&ArchiveDirs::new(dir, journal_dir.as_deref())?),
        ArchiveCommand::Check { dir, journal_dir, json } => {
            check_dir(&ArchiveDirs::new(dir, journal_dir.as_deref())?, *json)
        }
    }
}

/// An archive directory and the directory holding its journal: `dir/journal`, or the separate `--journal-dir` of
/// a simple hot copy with a `copyJournalDir`.
struct ArchiveDirs {
    /// The archive directory as given.
    dir: PathBuf,
    /// Its journal directory.
    journal: PathBuf,
    /// The journal was given with `--journal-dir`.
    separate: bool,
}

impl ArchiveDirs {
    /// Refuses an unfinished restore, and a directory without `atoms/` or its journal (what a simple hot copy with a
    /// separate copyJournalDir leaves, read without `--journal-dir`, would show the state of its atom files alone,
    /// older than the copy's end point; a directory with neither is no database, not an empty one).
    fn new(dir: &Path, journal: Option<&Path>) -> Result<Self> {
        refuse_unfinished(dir)?;
        let own = dir.join(JOURNAL_DIR);
        let Some(journal) = journal.filter(|j| *j != own) else {
            if let Some(reason) = missing_archive_part(dir, &own) {
                bail!("{} is not an archive directory: {reason}", dir.display());
            }
            return Ok(Self { dir: dir.to_path_buf(), journal: own, separate: false });
        };
        if !dir.is_dir() {
            bail!("archive directory {} does not exist or is not a directory", dir.display());
        }
        if !journal.is_dir() {
            bail!(
                "journal directory {} (--journal-dir) does not exist or is not a directory; give the copy's \
                 copyJournalDir",
                journal.display()
            );
        }
        if own.exists() {
            bail!(
                "{} has a journal/ of its own and --journal-dir names {}; remove one of them or leave --journal-dir \
                 out",
                dir.display(),
                journal.display()
            );
        }
        if let Some(reason) = missing_archive_part(dir, journal) {
            bail!("{} is not an archive directory: {reason}", dir.display());
        }
        Ok(Self { dir: dir.to_path_buf(), journal: journal.to_path_buf(), separate: true })
    }

    /// Reads the archive.
    fn read(&self) -> Result<backset_refstore::ArchiveData> {
        if !self.separate {
            ensure_archive(&self.dir)?;
        }
        read_archive_with_journal(&self.dir, &self.journal).map_err(|e| {
            let what = if self.separate {
                format!("read archive {} with journal {}", self.dir.display(), self.journal.display())
            } else {
                format!("read archive {}", self.dir.display())
            };
            anyhow::anyhow!("{what}: {e:#}")
        })
    }
}

/// A JSON line for one key/value pair: strings when both are UTF-8, else hex.
fn pair_json(key: &[u8], value: &[u8]) -> serde_json::Value {
    match (std::str::from_utf8(key), std::str::from_utf8(value)) {
        (Ok(k), Ok(v)) => json!({ "key": k, "value": v }),
        _ => json!({ "keyHex": hex(key), "valueHex": hex(value) }),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ensure_archive(dir: &Path) -> Result<()> {
    match found(dir) {
        Found::Archive => Ok(()),
        other => bail!("{} is not an archive directory: {}", dir.display(), other.not_an_archive(dir)),
    }
}

fn dump(archive: &ArchiveDirs) -> Result<()> {
    let data = archive.read()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (k, v) in &data.entries {
        writeln!(out, "{}", pair_json(k, v)).context("write to stdout")?;
    }
    out.flush().context("write to stdout")
}

fn info(archive: &ArchiveDirs) -> Result<()> {
    let data = archive.read()?;
    let (dir, journal) = (&archive.dir, &archive.journal);
    let out = json!({
        "directory": dir.display().to_string(),
        "journalDirectory": journal.display().to_string(),
        "lastTxnId": data.last_txn,
        "databaseId": data.database_id.map(|u| u.to_string()),
        "archiveId": data.archive_id,
        "keys": data.entries.len(),
        "atoms": data.atoms,
        "recordsReplayed": data.records_replayed,
        "tornTail": data.torn_tail,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn check_dir(archive: &ArchiveDirs, as_json: bool) -> Result<()> {
    let dir = &archive.dir;
    let report = check_archive_with_journal(dir, &archive.journal)?;
    if as_json {
        let defects: Vec<serde_json::Value> = report
            .defects
            .iter()
            .map(|d| {
                json!({
                    "file": d.file.as_ref().map(|f| f.display().to_string()),
                    "kind": d.kind.name(),
                    "message": d.what,
                })
            })
            .collect();
        let out = json!({
            "directory": dir.display().to_string(),
            "journalDirectory": archive.journal.display().to_string(),
            "ok": report.is_ok(),
            "atoms": report.atoms,
            "segments": report.segments,
            "records": report.records,
            "lastTxnId": report.last_txn,
            "databaseId": report.database_id.map(|u| u.to_string()),
            "tornTail": report.torn_tail.map(|t| json!({ "segment": t.segment, "offset": t.offset, "len": t.len })),
            "defects": defects,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        if !report.is_ok() {
            bail!(
                "archive {} has {} (listed in the JSON)",
                dir.display(),
                counted(report.defects.len() as u64, "defect")
            );
        }
        return Ok(());
    }
    for d in &report.defects {
        println!("defect: {d}");
    }
    if let Some(t) = report.torn_tail.filter(|t| t.offset == 0) {
        println!(
            "note: segment {} holds no header ({} bytes): it was cut short while it was being created (a crash leaves \
             one; nothing in it was acknowledged, opening the archive removes it)",
            t.segment, t.len
        );
    } else if let Some(t) = report.torn_tail {
        println!(
            "note: segment {} ends with a torn tail of {} bytes at offset {} (a crash leaves one; opening the archive \
             truncates it)",
            t.segment, t.len, t.offset
        );
    }
    println!(
        "archive {}: {}, {}, {}, last transaction {}, {}",
        dir.display(),
        counted(report.atoms, "atom file"),
        counted(report.segments, "journal segment"),
        counted(report.records, "record"),
        report.last_txn,
        counted(report.defects.len() as u64, "defect")
    );
    if !report.is_ok() {
        bail!("archive {} has {} (listed above)", dir.display(), counted(report.defects.len() as u64, "defect"));
    }
    Ok(())
}
