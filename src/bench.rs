//! `backset bench`: measure the copier on this machine's disks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use backset_copier::limit::{JobLimiter, SmLimiter};
use backset_copier::{
    BackendChoice, Copier, CopyError, CopyRequest, FileReport, JobControl, JobReport, Options, Throttle,
};

/// `backset bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Copy a directory tree with the copier and report bytes, seconds, MB/s, backend, direct-I/O files, time
    /// waited on the limiter and the BLAKE3 of the manifest.
    ///
    /// Example: `backset bench copy /data/archive /backup/copy --max-rate 200`
    Copy(CopyArgs),
    /// Measure the disk under DIR with the copier's own engine: sequential write, sequential read (O_DIRECT,
    /// hashed), and a copy (concurrent read + write); then suggest a `--max-rate`.
    ///
    /// Example: `backset bench disk /backup --size-mib 2048`
    Disk(DiskArgs),
    /// Copy a directory tree with the copier and with `cp -a` (then `sync`), alternating which goes first, every run
    /// from a cold page cache (as root), and report each side's best and median time and their ratios: DESIGN.md's
    /// way to compare on a noisy disk.
    ///
    /// Example: `backset bench versus-cp target/bench-data/large target/versus --runs 5`
    VersusCp(VersusArgs),
    /// Measure what a throttled hot copy costs the running database: commit latency of the embedded database (a
    /// bulk-loaded archive, committers at a steady rate) without a hot copy, during a full hot copy at --max-rate,
    /// and without again; prints p50, p99 and the worst commit of each phase and the p99 ratio (DESIGN.md's bar:
    /// within 1.2x at 50 MB/s).
    ///
    /// Example: `backset bench foreground target/fg --size-mib 1024 --max-rate 50`
    Foreground(ForegroundArgs),
}

/// Options of `backset bench foreground`.
#[derive(clap::Args, Debug)]
pub struct ForegroundArgs {
    /// Directory on the disk to measure; a temporary directory is made in it (database and backup set) and removed
    /// afterwards.
    dir: PathBuf,
    /// Size of the archive in MiB; the full hot copy at --max-rate should outlast --seconds.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=1_048_576))]
    size_mib: u64,
    /// The hot copy's rate limit in MB/s (MB = 10^6 bytes).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=100_000))]
    max_rate: u64,
    /// Length of each phase in seconds.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=3600))]
    seconds: u64,
    /// Commits per second, over two committer threads.
    #[arg(long, default_value_t = 400, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(2..=100_000))]
    commit_rate: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `backset bench versus-cp`.
#[derive(clap::Args, Debug)]
pub struct VersusArgs {
    /// Directory to copy (regular files, recursively; symlinks are skipped).
    source: PathBuf,
    /// Directory (on the disk to measure) in which the copies are made (one per run and side, all removed at the
    /// end: it needs twice --runs times the source's size free); created if missing.
    scratch: PathBuf,
    /// Runs of each side.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: u16,
    /// I/O backend: uring or portable (default: uring where available).
    #[arg(long, value_parser = ["uring", "portable"])]
    io: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `backset bench disk`.
#[derive(clap::Args, Debug)]
pub struct DiskArgs {
    /// Directory on the disk to measure; a temporary directory is made in it and removed afterwards.
    dir: PathBuf,
    /// Size of the test file in MiB (larger than the disk cache gives steadier figures).
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=1_048_576))]
    size_mib: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `backset bench copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Directory to copy (regular files, recursively; symlinks are skipped).
    source: PathBuf,
    /// Directory to create (must not exist).
    target: PathBuf,
    /// Rate limit in MB/s (MB = 10^6 bytes), counted on the bytes read.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_rate)]
    max_rate: Option<u64>,
    /// I/O backend: uring or portable (default: uring where available).
    #[arg(long, value_parser = ["uring", "portable"])]
    io: Option<String>,
    /// Do not hash (to measure what hashing costs).
    #[arg(long)]
    no_hash: bool,
    /// Concurrent jobs (files dealt out in turn), each with its own copier, sharing one SM budget of --max-rate.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=MAX_BENCH_JOBS as i64))]
    jobs: u16,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Most concurrent jobs of `bench copy --jobs` (each has its own 64 MiB buffer pool).
const MAX_BENCH_JOBS: u16 = 16;

/// Length of the windows in which `bench copy` measures the rate.
const WINDOW: Duration = Duration::from_secs(1);

/// How often `bench copy` looks at the bytes read, to know when the last byte was read (its reading time is known to
/// within this).
const POLL: Duration = Duration::from_millis(10);

fn parse_rate(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a positive whole number of MB/s")),
        Ok(mb) => mb.checked_mul(1_000_000).ok_or_else(|| format!("{s} MB/s is too large")),
    }
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Copy(args) => copy(args),
        Command::Disk(args) => disk(args),
        Command::VersusCp(args) => versus_cp(args),
        Command::Foreground(args) => foreground(args),
    }
}

/// Regular files under `root`, sorted, as paths relative to it.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read directory {}", dir.display()))? {
            let entry = entry.with_context(|| format!("read directory {}", dir.display()))?;
            let ty = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What `bench copy` measured.
struct Measured {
    /// Per file, in `walk` order.
    reports: Vec<FileReport>,
    /// The first job's report (backend, buffers), with bytes, waits and direct-I/O counts summed over all jobs.
    job: JobReport,
    seconds: f64,
    /// Time from the start of the SM budget (the copiers set up) until the last byte was read: the rate limit's
    /// span (the targets' durability at the end reads nothing and is not throttled).
    reading_seconds: f64,
    /// Rate of each whole window that ended before the last byte was read (bytes read from the sources per second).
    windows: Vec<f64>,
}

fn copy(args: &CopyArgs) -> Result<()> {
    if args.target.exists() {
        bail!("{} exists; bench copy creates its target, give a new path", args.target.display());
    }
    let files = walk(&args.source)?;
    let requests: Vec<_> = files.iter().map(|f| CopyRequest::file(args.source.join(f), args.target.join(f))).collect();
    let opts = Options { backend: backend(args.io.as_deref()), hash: !args.no_hash, ..Options::default() };
    let jobs = usize::from(args.jobs);
    let measured = run_jobs(&requests, jobs, &opts, args.max_rate)?;
    print_report(args, &files, &measured);
    Ok(())
}

fn backend(io: Option<&str>) -> BackendChoice {
    match io {
        Some("uring") => BackendChoice::Uring,
        Some("portable") => BackendChoice::Portable,
        _ => BackendChoice::Auto,
    }
}

/// Runs `requests` as `jobs` concurrent jobs (request i in job i % jobs) sharing one SM budget of `max_rate`, and
/// samples the bytes read at every window boundary and when the last byte was read. The jobs' copiers are set up
/// (rings, registered pools) before the SM budget and the windows start, as an SM's copiers would be: the windows
/// measure the throttle, not the setup.
fn run_jobs(requests: &[CopyRequest], jobs: usize, opts: &Options, max_rate: Option<u64>) -> Result<Measured> {
    let sm = OnceLock::new();
    let (set_up, go) = (Barrier::new(jobs + 1), Barrier::new(jobs + 1));
    let ctls: Vec<JobControl> = (0..jobs).map(|_| JobControl::new()).collect();
    let running = AtomicUsize::new(jobs);
    // The job's seconds count the copiers' setup too; the windows start after it.
    let begun = Instant::now();
    let (results, (windows, reading)) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let (sm, ctls, running, set_up, go) = (&sm, &ctls, &running, &set_up, &go);
                s.spawn(move || {
                    let mine: Vec<CopyRequest> = requests.iter().skip(j).step_by(jobs).cloned().collect();
                    let copier = Copier::new(opts.clone());
                    set_up.wait();
                    go.wait();
                    let result = copier.and_then(|mut copier| {
                        // The SM budget is the bench's whole budget; jobs have no cap of their own.
                        let limiter = max_rate.map(|_| JobLimiter::new(sm.get().expect("set before go"), None));
                        copier.copy(&mine, &ctls[j], limiter.as_ref().map(|l| l as &dyn Throttle))
                    });
                    if result.is_err() {
                        // One failed job stops the others.
                        ctls.iter().for_each(JobControl::cancel);
                    }
                    running.fetch_sub(1, Relaxed);
                    result
                })
            })
            .collect();
        set_up.wait();
        // The SM budget starts empty now.
        sm.set(SmLimiter::new(max_rate)).expect("set once");
        let started = Instant::now();
        go.wait();
        // The rate limit counts bytes read from the sources, so the windows do too.
        let bytes_read = || ctls.iter().map(|c| c.progress().bytes_read).sum::<u64>();
        // (time, bytes read) at each window boundary, and when the bytes read last grew.
        let mut samples = vec![(started, 0u64)];
        let (mut seen, mut last_read) = (0u64, started);
        let mut boundary = started + WINDOW;
        while running.load(Relaxed) > 0 {
            std::thread::sleep(boundary.saturating_duration_since(Instant::now()).min(POLL));
            let (now, bytes) = (Instant::now(), bytes_read());
            if bytes > seen {
                (seen, last_read) = (bytes, now);
            }
            if now >= boundary {
                samples.push((now, bytes));
                boundary += WINDOW;
            }
        }
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("copy thread")).collect();
        let total = bytes_read();
        if total > seen {
            last_read = Instant::now();
        }
        // Whole windows at whose end the job was still reading: the window in which it read its last byte, and any
        // after (the targets being made durable), are not the throttle's.
        let windows = samples
            .windows(2)
            .filter(|w| w[1].1 < total)
            .map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0).as_secs_f64())
            .collect();
        (results, (windows, last_read - started))
    });
    let seconds = begun.elapsed().as_secs_f64();
    // Report the error that stopped the bench, not the cancellations it caused in the other jobs.
    if let Some(e) = results.iter().filter_map(|r| r.as_ref().err()).find(|e| !matches!(e, CopyError::Cancelled)) {
        bail!("{e}");
    }
    let mut job_reports = Vec::with_capacity(jobs);
    for r in results {
        job_reports.push(r?);
    }
    let mut per_job: Vec<_> = job_reports.iter().map(|r| r.files.iter()).collect();
    let reports =
        (0..requests.len()).map(|i| per_job[i % jobs].next().expect("a report per request").clone()).collect();
    let mut job = job_reports.swap_remove(0);
    for other in &job_reports {
        job.bytes += other.bytes;
        job.waited += other.waited;
        job.direct_sources += other.direct_sources;
        job.direct_targets += other.direct_targets;
        job.direct_fallbacks += other.direct_fallbacks;
        job.batch_synced += other.batch_synced;
        job.synced_file_systems += other.synced_file_systems;
        job.flushes += other.flushes;
    }
    job.files.clear();
    Ok(Measured { reports, job, seconds, reading_seconds: reading.as_secs_f64(), windows })
}

/// BLAKE3 over the sorted (path, size, hash) list: equal trees give equal manifests.
fn manifest_hash(files: &[PathBuf], reports: &[FileReport]) -> String {
    let mut h = blake3::Hasher::new();
    for (path, f) in files.iter().zip(reports) {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(&f.bytes.to_le_bytes());
        h.update(&f.hash);
    }
    h.finalize().to_hex().to_string()
}

/// The slowest and fastest window in MB/s, and the window furthest from `max_rate` in percent of it.
fn window_stats(windows: &[f64], max_rate: Option<u64>) -> Option<(f64, f64, Option<f64>)> {
    let min = windows.iter().copied().reduce(f64::min)?;
    let max = windows.iter().copied().reduce(f64::max)?;
    let worst = max_rate.map(|r| {
        let err = |w: f64| (w / r as f64 - 1.0) * 100.0;
        if err(min).abs() > err(max).abs() {
            err(min)
        } else {
            err(max)
        }
    });
    Some((min / 1e6, max / 1e6, worst))
}

fn print_report(args: &CopyArgs, files: &[PathBuf], m: &Measured) {
    let (report, seconds) = (&m.job, m.seconds);
    let mb_per_sec = report.bytes as f64 / 1e6 / seconds;
    let reading_mb_per_sec = if report.bytes == 0 { 0.0 } else { report.bytes as f64 / 1e6 / m.reading_seconds };
    let manifest = if args.no_hash { "-".to_string() } else { manifest_hash(files, &m.reports) };
    let windows = window_stats(&m.windows, args.max_rate);
    if args.json {
        let json = serde_json::json!({
            "files": files.len(),
            "bytes": report.bytes,
            "seconds": seconds,
            "mb_per_sec": mb_per_sec,
            "reading_seconds": m.reading_seconds,
            "reading_mb_per_sec": reading_mb_per_sec,
            "jobs": args.jobs,
            "backend": report.backend.name(),
            "registered_buffers": report.registered_buffers,
            "direct_sources": report.direct_sources,
            "direct_targets": report.direct_targets,
            "direct_fallbacks": report.direct_fallbacks,
            "batch_synced": report.batch_synced,
            "synced_file_systems": report.synced_file_systems,
            "flushes": report.flushes,
            "waited_seconds": report.waited.as_secs_f64(),
            "max_rate_mb": args.max_rate.map(|r| r / 1_000_000),
            "windows": m.windows.len(),
            "window_min_mb_per_sec": windows.map(|w| w.0),
            "window_max_mb_per_sec": windows.map(|w| w.1),
            "window_worst_error_pct": windows.and_then(|w| w.2),
            "window_mb_per_sec": m.windows.iter().map(|w| w / 1e6).collect::<Vec<_>>(),
            "manifest_blake3": manifest,
        });
        println!("{json}");
    } else {
        println!("files            {}", files.len());
        println!("bytes            {}", report.bytes);
        println!("seconds          {seconds:.3}");
        println!("MB/s             {mb_per_sec:.1}");
        println!(
            "reading          {:.3} s, {reading_mb_per_sec:.1} MB/s (until the last byte read)",
            m.reading_seconds
        );
        if let Some(rate) = args.max_rate {
            println!("vs --max-rate    {:+.2}% while reading", (reading_mb_per_sec * 1e6 / rate as f64 - 1.0) * 100.0);
        }
        if let Some((min, max, worst)) = windows {
            let worst = worst.map(|w| format!(", worst {w:+.2}% of --max-rate")).unwrap_or_default();
            println!("1 s windows      {}: {min:.1} to {max:.1} MB/s{worst}", m.windows.len());
        }
        println!("jobs             {}", args.jobs);
        println!(
            "backend          {}{}",
            report.backend.name(),
            report.backend_note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
        println!("registered bufs  {}", report.registered_buffers);
        println!(
            "direct I/O       {} sources, {} targets, {} fallbacks",
            report.direct_sources, report.direct_targets, report.direct_fallbacks
        );
        println!(
            "durability       {} files fsynced, {} by syncfs of {} file systems, {} write-back flushes",
            files.len() as u64 - report.batch_synced,
            report.batch_synced,
            report.synced_file_systems,
            report.flushes
        );
        println!("limiter wait     {:.3} s", report.waited.as_secs_f64());
        println!("manifest BLAKE3  {manifest}");
    }
}

/// Removes the bench's scratch directory however `disk` ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = backset_format::dirfd::remove_path(&self.0);
    }
}

fn disk(args: &DiskArgs) -> Result<()> {
    use std::io::Write;
    let scratch = Scratch(args.dir.join(format!(".backset-bench-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;
    let (a, b) = (scratch.0.join("a"), scratch.0.join("b"));
    let bytes = args.size_mib << 20;

    // Sequential write: 4 MiB buffered writes, then fsync (the page cache absorbs them; the fsync pays for them).
    let started = Instant::now();
    let mut f = std::fs::File::create(&a).with_context(|| format!("create {}", a.display()))?;
    let block: Vec<u8> = (0..4usize << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).with_context(|| format!("write {}", a.display()))?;
        left -= n as u64;
    }
    f.sync_all().with_context(|| format!("fsync {}", a.display()))?;
    let write = started.elapsed().as_secs_f64();
    drop(f);

    let mut copier = Copier::new(Options::default())?;
    let started = Instant::now();
    copier.copy(&[CopyRequest::read(&a)], &JobControl::new(), None)?;
    let read = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = copier.copy(&[CopyRequest::file(&a, &b)], &JobControl::new(), None)?;
    let copy = started.elapsed().as_secs_f64();

    let mb = |secs: f64| bytes as f64 / 1e6 / secs;
    // A hot copy reads from the live archive; leaving half the disk's read bandwidth to the database is a sane
    // default. The copy's rate bounds it too, since every byte read is also written.
    let suggest = (mb(read) / 2.0).min(mb(copy)).floor().max(1.0) as u64;
    if args.json {
        let json = serde_json::json!({
            "bytes": bytes,
            "write_mb_per_sec": mb(write),
            "read_mb_per_sec": mb(read),
            "copy_mb_per_sec": mb(copy),
            "backend": report.backend.name(),
            "direct": report.direct_targets == 1,
            "suggested_max_rate_mb": suggest,
        });
        println!("{json}");
    } else {
        println!("test file          {} MiB in {}", args.size_mib, args.dir.display());
        println!("sequential write   {:.1} MB/s (buffered, fsync included)", mb(write));
        println!("sequential read    {:.1} MB/s ({} backend, O_DIRECT, BLAKE3)", mb(read), report.backend.name());
        println!("copy (read+write)  {:.1} MB/s", mb(copy));
        println!("suggested --max-rate {suggest} (half the read rate, at most the copy rate; MB = 10^6 bytes)");
    }
    Ok(())
}

/// Writes back dirty pages and, as root, drops the page cache, dentries and inodes, so the next run reads the disk.
/// Returns whether the cache could be dropped.
fn cold_cache() -> Result<bool> {
    sync()?;
    Ok(std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok())
}

/// Runs `sync`: every dirty page of every file system written back.
fn sync() -> Result<()> {
    let status = std::process::Command::new("sync").status().context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

fn versus_cp(args: &VersusArgs) -> Result<()> {
    std::fs::create_dir_all(&args.scratch).with_context(|| format!("create {}", args.scratch.display()))?;
    let scratch = Scratch(args.scratch.join(format!(".backset-versus-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;
    let opts = Options { backend: backend(args.io.as_deref()), ..Options::default() };
    let mut copier = Copier::new(opts)?;
    let mut cold = true;
    let mut bytes = 0;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // Every run copies into a directory of its own, and all are removed only at the end: removing 50,000 files
    // just before a run makes the next ones slower to create (ext4 without a journal skips inodes freed in the
    // last few minutes, scanning past them under the directory's lock), which measures the clean-up, not the copy.
    let mut run_backset = |run: u16, cold: &mut bool| -> Result<f64> {
        let target = scratch.0.join(format!("backset-{run}"));
        *cold &= cold_cache()?;
        // The walk is timed too: `cp -a` finds its files as it goes.
        let started = Instant::now();
        let files = walk(&args.source)?;
        let requests: Vec<_> = files.iter().map(|f| CopyRequest::file(args.source.join(f), target.join(f))).collect();
        bytes = copier.copy(&requests, &JobControl::new(), None)?.bytes;
        Ok(started.elapsed().as_secs_f64())
    };
    let run_cp = |run: u16, cold: &mut bool| -> Result<f64> {
        let target = scratch.0.join(format!("cp-{run}"));
        *cold &= cold_cache()?;
        let started = Instant::now();
        let status = std::process::Command::new("cp").arg("-a").arg(&args.source).arg(&target).status();
        let status = status.context("run cp -a")?;
        if !status.success() {
            bail!("cp -a {} {} failed: {status}", args.source.display(), target.display());
        }
        sync()?;
        Ok(started.elapsed().as_secs_f64())
    };
    for run in 0..args.runs {
        // Alternate who goes first, so a disk that drifts within a run favours neither side.
        if run % 2 == 0 {
            ours.push(run_backset(run, &mut cold)?);
            theirs.push(run_cp(run, &mut cold)?);
        } else {
            theirs.push(run_cp(run, &mut cold)?);
            ours.push(run_backset(run, &mut cold)?);
        }
        if !args.json {
            println!(
                "run {:>3}: backset {:8.3} s   cp -a + sync {:8.3} s",
                run + 1,
                ours[run as usize],
                theirs[run as usize]
            );
        }
    }
    let summary = Versus::new(&ours, &theirs);
    let backend = copier.backend().name();
    if args.json {
        let json = serde_json::json!({
            "bytes": bytes,
            "backend": backend,
            "cold_cache": cold,
            "backset_seconds": ours,
            "cp_seconds": theirs,
            "backset_best": summary.best.0,
            "cp_best": summary.best.1,
            "backset_median": summary.median.0,
            "cp_median": summary.median.1,
            "speedup_best": summary.best.1 / summary.best.0,
            "speedup_median": summary.median.1 / summary.median.0,
            "backset_wins": summary.wins,
        });
        println!("{json}");
    } else {
        if !cold {
            println!("warning: could not drop the page cache (needs root): cp -a may have read from it");
        }
        println!("bytes {bytes}, backend {backend}, {} runs each, alternating who goes first", args.runs);
        println!(
            "best     backset {:.3} s, cp -a + sync {:.3} s: backset {:.2}x as fast",
            summary.best.0,
            summary.best.1,
            summary.best.1 / summary.best.0
        );
        println!(
            "median   backset {:.3} s, cp -a + sync {:.3} s: backset {:.2}x as fast",
            summary.median.0,
            summary.median.1,
            summary.median.1 / summary.median.0
        );
        println!("backset faster in {} of {} runs", summary.wins, args.runs);
    }
    Ok(())
}

/// Best and median (ours, theirs), and how many runs we won (run i against run i).
struct Versus {
    best: (f64, f64),
    median: (f64, f64),
    wins: usize,
}

impl Versus {
    fn new(ours: &[f64], theirs: &[f64]) -> Self {
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let wins = ours.iter().zip(theirs).filter(|(a, b)| a < b).count();
        Self { best: (best(ours), best(theirs)), median: (median(ours), median(theirs)), wins }
    }
}

/// Phases of `bench foreground`, in order.
const PHASES: [&str; 3] = ["before", "hot copy", "after"];

fn foreground(args: &ForegroundArgs) -> Result<()> {
    use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType};
    use backset_refstore::bulk::{bulk_load, BulkSpec};
    use backset_refstore::{Config, Database, Txn};
    use std::sync::atomic::AtomicU8;
    use std::sync::Mutex;

    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    // Hot copy destinations must be absolute.
    let dir = std::fs::canonicalize(&args.dir).with_context(|| format!("resolve {}", args.dir.display()))?;
    let scratch = Scratch(dir.join(format!(".backset-foreground-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;
    let (db_dir, set) = (scratch.0.join("database"), scratch.0.join("set"));
    let config = Config::new("foreground");
    let spec = BulkSpec { bytes_per_archive: args.size_mib << 20, value_bytes: 4096, seed: 7 };
    bulk_load(&db_dir, &config, &spec).context("load the database")?;
    let db = Arc::new(Database::open(&db_dir, config).context("open the database")?);
    let manager = HotCopyManager::new(db.hot_copy_archives(), scratch.0.join("admin"))?;

    // Committers: each commits one 256-byte put at its share of the rate, on a fixed schedule, and records the
    // latency under the current phase. Slots missed behind a slow commit are skipped, not made up in a burst.
    let phase = AtomicU8::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let samples: Mutex<Vec<(u8, Duration)>> = Mutex::new(Vec::new());
    let threads = 2u64;
    let interval = Duration::from_secs_f64(threads as f64 / args.commit_rate as f64);
    let phase_len = Duration::from_secs(args.seconds);
    let mut copy_secs = None;
    std::thread::scope(|sc| -> Result<()> {
        for t in 0..threads {
            let (db, phase, stop, samples) = (&db, &phase, &stop, &samples);
            sc.spawn(move || {
                let mut next = Instant::now();
                let mut mine = Vec::new();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    next = (next + interval).max(Instant::now());
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    let txn = Txn {
                        puts: vec![(format!("fg-{t}-{}", n % 10_000).into_bytes(), vec![n as u8; 256])],
                        deletes: Vec::new(),
                    };
                    n += 1;
                    let p = phase.load(Relaxed);
                    let started = Instant::now();
                    if db.commit(&txn).is_err() {
                        break;
                    }
                    mine.push((p, started.elapsed()));
                }
                samples.lock().expect("samples").extend(mine);
            });
        }
        let finish = |e: anyhow::Error| {
            stop.store(true, Relaxed);
            e
        };
        std::thread::sleep(phase_len);
        phase.store(1, Relaxed);
        let started = Instant::now();
        let req = HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set).max_rate(Some(args.max_rate * 1_000_000));
        let (start_id, id) = manager.start(req).map_err(|e| finish(e.into()))?;
        let status = manager.status(start_id, id, Some(phase_len)).map_err(|e| finish(e.into()))?;
        if status.is_terminal() {
            copy_secs = Some(started.elapsed().as_secs_f64());
        } else {
            manager.cancel(start_id, id, Some(Duration::from_secs(60))).map_err(|e| finish(e.into()))?;
        }
        phase.store(2, Relaxed);
        std::thread::sleep(phase_len);
        stop.store(true, Relaxed);
        Ok(())
    })?;
    db.close().context("close the database")?;

    let samples = samples.into_inner().expect("samples");
    let stats: Vec<Latency> = (0..PHASES.len() as u8)
        .map(|p| Latency::of(samples.iter().filter(|(q, _)| *q == p).map(|(_, d)| *d).collect()))
        .collect();
    let baseline = Latency::of(samples.iter().filter(|(q, _)| *q != 1).map(|(_, d)| *d).collect());
    let ratio = stats[1].p99 / baseline.p99;
    if args.json {
        let phase_json =
            |l: &Latency| serde_json::json!({ "commits": l.n, "p50_ms": l.p50, "p99_ms": l.p99, "max_ms": l.max });
        let json = serde_json::json!({
            "size_mib": args.size_mib,
            "max_rate_mb": args.max_rate,
            "seconds": args.seconds,
            "commit_rate": args.commit_rate,
            "before": phase_json(&stats[0]),
            "hot_copy": phase_json(&stats[1]),
            "after": phase_json(&stats[2]),
            "copy_completed_seconds": copy_secs,
            "p99_ratio": ratio,
        });
        println!("{json}");
    } else {
        println!(
            "archive {} MiB, full hot copy at {} MB/s, {} commits/s, phases of {} s",
            args.size_mib, args.max_rate, args.commit_rate, args.seconds
        );
        for (name, l) in PHASES.iter().zip(&stats) {
            println!("{name:<9} {:>6} commits  p50 {:7.3} ms  p99 {:7.3} ms  max {:8.3} ms", l.n, l.p50, l.p99, l.max);
        }
        if let Some(s) = copy_secs {
            println!("warning: the hot copy ended after {s:.1} s, before the phase did; give a larger --size-mib");
        }
        println!("p99 during the hot copy / p99 without: {ratio:.2}x (DESIGN.md's bar: at most 1.2x at 50 MB/s)");
    }
    Ok(())
}

/// Commit latencies of one phase, in milliseconds.
struct Latency {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        Self { n: v.len(), p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Versus;

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let l = super::Latency::of(v);
        assert_eq!((l.n, l.p50, l.p99, l.max), (200, 100.0, 198.0, 200.0));
        assert!(super::Latency::of(Vec::new()).p99.is_nan());
    }

    #[test]
    fn versus_takes_best_and_median_of_each_side_and_counts_wins_run_by_run() {
        let v = Versus::new(&[3.0, 1.0, 2.0, 10.0], &[2.0, 4.0, 5.0, 1.0]);
        assert_eq!(v.best, (1.0, 1.0));
        assert_eq!(v.median, (2.5, 3.0));
        assert_eq!(v.wins, 2);
        let v = Versus::new(&[5.0], &[6.0]);
        assert_eq!((v.best, v.median, v.wins), ((5.0, 6.0), (5.0, 6.0), 1));
    }
}
