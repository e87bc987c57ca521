//! `backset bench copy`: a directory tree copied by the copier, as one or more concurrent jobs under one SM budget,
//! with the rate measured in one-second windows and the manifest's BLAKE3.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use backset_copier::limit::{JobLimiter, SmLimiter};
use backset_copier::{
    BackendChoice, CopyError, CopyRequest, FileReport, JobControl, JobReport, Options, SmCopier, Throttle,
};

use super::files::walk;
use super::plot::{copy_svg, PlotFile, Windows};

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
    /// Also draw the rate of each whole 1-second window against --max-rate as an SVG into this file (replaced if it
    /// exists; its directory must exist and be writable, which is checked before the copy starts).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
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

pub(super) fn copy(args: &CopyArgs) -> Result<()> {
    let plot = args.plot.as_deref().map(PlotFile::create).transpose()?;
    if args.target.exists() {
        bail!("{} exists; bench copy creates its target, give a new path", args.target.display());
    }
    let files = walk(&args.source)?;
    let requests: Vec<_> = files.iter().map(|f| CopyRequest::file(args.source.join(f), args.target.join(f))).collect();
    let opts = Options { backend: backend(args.io.as_deref()), hash: !args.no_hash, ..Options::default() };
    let jobs = usize::from(args.jobs);
    let measured = run_jobs(&requests, jobs, &opts, args.max_rate)?;
    print_report(args, &files, &measured);
    if let Some(plot) = plot {
        let caption = format!(
            "backset bench copy: {} file{}, {:.1} MB, {} job{}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            measured.job.bytes as f64 / 1e6,
            args.jobs,
            if args.jobs == 1 { "" } else { "s" }
        );
        let rates: Vec<f64> = measured.windows.iter().map(|w| w / 1e6).collect();
        let svg = copy_svg(&caption, &Windows { start: 0.0, values: &rates }, args.max_rate.map(|r| r as f64 / 1e6))?;
        plot.write(&svg)?;
    }
    Ok(())
}

pub(super) fn backend(io: Option<&str>) -> BackendChoice {
    match io {
        Some("uring") => BackendChoice::Uring,
        Some("portable") => BackendChoice::Portable,
        _ => BackendChoice::Auto,
    }
}

/// Runs `requests` as `jobs` concurrent jobs (request i in job i % jobs) sharing one SM budget of `max_rate`, and
/// samples the bytes read at every window boundary and when the last byte was read. The jobs share one SM copier (one
/// ring, one registered pool), set up before the SM budget and the windows start, as an SM's is: the windows measure
/// the throttle, not the setup.
fn run_jobs(requests: &[CopyRequest], jobs: usize, opts: &Options, max_rate: Option<u64>) -> Result<Measured> {
    let sm = OnceLock::new();
    let (set_up, go) = (Barrier::new(jobs + 1), Barrier::new(jobs + 1));
    let ctls: Vec<JobControl> = (0..jobs).map(|_| JobControl::new()).collect();
    let running = AtomicUsize::new(jobs);
    // The job's seconds count the copier's setup too; the windows start after it.
    let begun = Instant::now();
    let copier = SmCopier::new(opts.clone())?;
    let (results, (windows, reading)) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let (sm, ctls, running, set_up, go, copier) = (&sm, &ctls, &running, &set_up, &go, &copier);
                s.spawn(move || {
                    let mine: Vec<CopyRequest> = requests.iter().skip(j).step_by(jobs).cloned().collect();
                    set_up.wait();
                    go.wait();
                    // The SM budget is the bench's whole budget; jobs have no cap of their own.
                    let limiter = max_rate.map(|_| JobLimiter::new(sm.get().expect("set before go"), None));
                    let result = copier.copy(&mine, &ctls[j], limiter.as_ref().map(|l| l as &dyn Throttle));
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
        if let Some(plot) = &args.plot {
            println!("plot             {}", plot.display());
        }
    }
}
