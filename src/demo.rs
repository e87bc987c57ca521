//! `backset demo`: the whole cycle on the embedded default.
//!
//! Starts the reference store with a live workload, takes a full, a journal, an incremental and a journal hot copy
//! into one backup set (with progress bars), stops the workload, restores the set to a transaction in the middle,
//! checks the set, and proves the restored archive holds exactly the acknowledged state at that transaction (by an
//! independent replay of the acknowledged transactions). Everything stays in the demo directory for inspection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use backset_engine::check::{check_set, CheckOptions};
use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyStatus, HotCopyType, JobState};
use backset_engine::restore::{restore, RestoreOptions, RestorePoint};
use backset_refstore::limits::MAX_ATOM_BUCKETS;
use backset_refstore::workload::{replay_upto, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Config, Database};

use crate::progress;
use crate::text::{counted, txn_range};

/// Options of `backset demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to work in (created; must be empty or absent). It keeps the database, the backup set and the
    /// restored archive afterwards.
    #[arg(long, default_value = "backset-demo")]
    dir: PathBuf,
    /// Seconds the workload runs before the first hot copy and between hot copies.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true, value_parser = parse_seconds)]
    pause: f64,
    /// Atoms per storage group of the database the demo creates, 1 to 1048576. The default, 256, suits the demo's
    /// tens of megabytes (every atom changes between two hot copies); the store's own default (65536) is for
    /// databases of 1 GiB and more.
    #[arg(long, value_name = "N", default_value_t = DEMO_ATOM_BUCKETS, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ATOM_BUCKETS)))]
    atom_buckets: u32,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0 and 600")),
    }
}

/// Atoms of the demo's database (`--atom-buckets`).
const DEMO_ATOM_BUCKETS: u32 = 256;

/// Longest the demo waits for one hot copy.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(args: &Args) -> Result<()> {
    let root = &args.dir;
    if root.exists() {
        let mut entries = std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))?;
        ensure!(entries.next().is_none(), "{} is not empty; give an empty or new directory with --dir", root.display());
    }
    std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    // Hot copy destinations must be absolute (the default --dir is relative).
    let root = &std::fs::canonicalize(root).with_context(|| format!("resolve {}", root.display()))?;
    let started = Instant::now();
    let pause = Duration::from_secs_f64(args.pause);
    let (db_dir, set_dir, restored) = (root.join("database"), root.join("backup-set"), root.join("restored"));

    // The embedded database keeps its journal until journal hot copies have copied it (DESIGN.md: `serve`'s default).
    let config = Config { journal_hot_copy: true, atom_buckets: Some(args.atom_buckets), ..Config::new("demo") };
    backset_engine::lock::set_program_name("backset demo");
    let db = Arc::new(Database::open(&db_dir, config).context("open the embedded database")?);
    println!(
        "database  demo: 1 storage manager, {} atoms, journal-hot-copy enabled, archive in {}",
        db.meta().atom_buckets,
        db_dir.join("0").display()
    );
    let workload = Workload::start(
        Arc::clone(&db),
        WorkloadConfig {
            seed: 2026,
            threads: 2,
            rate_txns_per_second: Some(4000.0),
            key_space: 20_000,
            value_bytes: 256..=4096,
            ops_per_txn: 1..=4,
            delete_fraction: 0.1,
            ..WorkloadConfig::default()
        },
    );
    println!("workload  2 threads, up to 4000 transactions/s, 20,000 keys, values of 256 B to 4 KiB");
    std::thread::sleep(pause);

    let manager =
        HotCopyManager::new(db.hot_copy_archives(), root.join("admin")).context("start the hot copy manager")?;
    let mut elements = Vec::new();
    for kind in [HotCopyType::Full, HotCopyType::Journal, HotCopyType::Incremental, HotCopyType::Journal] {
        if matches!(kind, HotCopyType::Full | HotCopyType::Incremental) {
            // A checkpoint just before, whatever the pause: the full and the incremental then hold atoms (the
            // background checkpoint may not have ended within a short --pause).
            db.checkpoint_now().context("checkpoint the embedded database")?;
        }
        let status = hot_copy(&manager, kind, &set_dir)?;
        let p = &status.participants[0];
        let (first, last) = p.txn_range.unwrap_or_default();
        let secs = status.end_micros.unwrap_or(status.begin_micros).saturating_sub(status.begin_micros) as f64 / 1e6;
        println!(
            "hot copy  {:<11} -> {:<6} transactions {}, {}, {secs:.2} s",
            kind.name(),
            p.element.as_deref().unwrap_or("-"),
            txn_range(first, last),
            size(status.bytes_done),
        );
        elements.push(status);
        std::thread::sleep(pause);
    }
    let report = workload.stop();
    ensure!(report.errors.is_empty(), "the workload failed: {}", report.errors.join("; "));
    let acked = report.acked;
    println!(
        "workload  {} acknowledged in {:.1} s",
        counted(acked.len() as u64, "transaction"),
        report.elapsed.as_secs_f64()
    );

    // A transaction in the middle of the last journal element, past the incremental's end point: the restore
    // overlays the incremental on the full and replays journal records on top.
    let end = |s: &HotCopyStatus| s.participants[0].txn_range.map_or(0, |r| r.1);
    let (inc_end, last_end) = (end(&elements[2]), end(&elements[3]));
    let target = inc_end + (last_end - inc_end) / 2;
    let control = Arc::new(backset_copier::JobControl::new());
    let opts = RestoreOptions { control: Some(Arc::clone(&control)), ..RestoreOptions::default() };
    let restored_report = progress::follow("restore", &control, || {
        restore(&set_dir, &restored, RestorePoint::Transaction(target), &opts)
    })
    .context("restore")?;
    println!(
        "restore   to transaction {target} -> {}: {} ({}) from {}, {}, {:.2} s",
        restored.display(),
        counted(restored_report.atoms, "atom"),
        size(restored_report.atom_bytes),
        restored_report.atom_elements.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + "),
        counted(restored_report.records, "journal record"),
        restored_report.elapsed.as_secs_f64()
    );

    let data = read_archive(&restored).context("read the restored archive")?;
    let expected = replay_upto(&acked, target);
    if data.entries != expected {
        bail!(
            "the restored archive differs from the acknowledged state at transaction {target}: {} keys restored, {} \
             expected",
            data.entries.len(),
            expected.len()
        );
    }
    println!(
        "verified  the restored archive holds exactly the {} acknowledged up to transaction {target}",
        counted(expected.len() as u64, "key")
    );

    let control = Arc::new(backset_copier::JobControl::new());
    let opts = CheckOptions { control: Some(Arc::clone(&control)), ..CheckOptions::default() };
    let check = progress::follow("check", &control, || check_set(&set_dir, &opts)).context("check the backup set")?;
    ensure!(
        check.is_ok(),
        "check found defects: {}",
        check.defects.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    );
    let ranges: Vec<String> = check.restorable.iter().map(|r| txn_range(r.first, r.last)).collect();
    println!(
        "check     {}, {} ({}) verified, no defect; restorable transactions: {}",
        counted(check.elements as u64, "element"),
        counted(check.files_read, "file"),
        size(check.bytes_read),
        ranges.join(", ")
    );

    manager.shutdown(Duration::from_secs(10));
    db.close().context("close the database")?;
    println!(
        "done      in {:.1} s; backup set {} ({}), restored archive {}",
        started.elapsed().as_secs_f64(),
        set_dir.display(),
        size(dir_size(&set_dir)),
        restored.display()
    );
    Ok(())
}

/// Runs one hot copy of the demo's archive into the set, with a progress bar, and returns its final status.
fn hot_copy(manager: &HotCopyManager, kind: HotCopyType, set_dir: &Path) -> Result<HotCopyStatus> {
    let (start_id, id) = manager.start(HotCopyRequest::new(kind).backup_dir(0, set_dir))?;
    let bar = progress::bar(kind.name());
    let deadline = Instant::now() + HOT_COPY_TIMEOUT;
    let status = loop {
        let status = manager.status(start_id, id, Some(Duration::from_millis(100)))?;
        progress::update(&bar, status.bytes_done, status.bytes_total);
        bar.set_message(status.message.clone());
        if status.is_terminal() {
            break status;
        }
        if Instant::now() > deadline {
            bail!("{kind} hot copy {id} still running after {HOT_COPY_TIMEOUT:?}: {}", status.message);
        }
    };
    bar.finish_and_clear();
    ensure!(status.status == JobState::Completed, "{kind} hot copy {id}: {}", status.message);
    Ok(status)
}

fn size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Bytes of the regular files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}
