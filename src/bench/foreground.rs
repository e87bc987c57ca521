//! `backset bench foreground`: commit latency of the embedded database before, during and after a full hot copy at
//! `--max-rate`, and the p99 ratio (DESIGN.md's bar: within 1.2x at 50 MB/s).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::files::bulk_loaded;
use super::plot::{foreground_svg, PlotFile, Windows};

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
    /// Also draw the hot copy's rate per second against --max-rate and the commit latency's p50 and p99 per second
    /// as an SVG into this file (replaced if it exists; its directory must exist and be writable, which is checked
    /// before the bench starts).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Phases of `bench foreground`, in order.
const PHASES: [&str; 3] = ["before", "hot copy", "after"];

/// Length of the windows in which `bench foreground` samples the hot copy's rate and the commit latency.
const WINDOW: Duration = Duration::from_secs(1);

pub(super) fn foreground(args: &ForegroundArgs) -> Result<()> {
    use backset_engine::hotcopy::{HotCopyRequest, HotCopyType};
    use backset_refstore::bulk::BulkSpec;
    use backset_refstore::{Config, Txn};
    use std::sync::atomic::AtomicU8;
    use std::sync::Mutex;

    let plot = args.plot.as_deref().map(PlotFile::create).transpose()?;
    let spec = BulkSpec { bytes_per_archive: args.size_mib << 20, value_bytes: 4096, seed: 7 };
    let loaded = bulk_loaded(&args.dir, "foreground", Config::new("foreground"), &spec)?;
    let (db, manager, set) = (&loaded.db, &loaded.manager, &loaded.set);

    // Committers: each commits one 256-byte put at its share of the rate, on a fixed schedule, and records the
    // latency under the current phase, with when the commit began. Slots missed behind a slow commit are skipped,
    // not made up in a burst.
    let phase = AtomicU8::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let samples: Mutex<Vec<Commit>> = Mutex::new(Vec::new());
    let threads = 2u64;
    let interval = Duration::from_secs_f64(threads as f64 / args.commit_rate as f64);
    let phase_len = Duration::from_secs(args.seconds);
    let mut copy_secs = None;
    // The hot copy's bytes done at each one-second boundary from its start, and its start and end.
    let mut copied: Vec<u64> = Vec::new();
    let (mut copy_began, mut copy_ended) = (Duration::ZERO, Duration::ZERO);
    let origin = Instant::now();
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
                    mine.push(Commit { phase: p, at: started - origin, latency: started.elapsed() });
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
        let req = HotCopyRequest::new(HotCopyType::Full).backup_dir(0, set).max_rate(Some(args.max_rate * 1_000_000));
        copy_began = started - origin;
        let (start_id, id) = manager.start(req).map_err(|e| finish(e.into()))?;
        // Wait for the copy to end or the phase to, looking at its bytes done at each window boundary.
        let (end, mut boundary) = (started + phase_len, started + WINDOW);
        copied.push(0);
        loop {
            let until = boundary.min(end);
            let status = manager
                .status(start_id, id, Some(until.saturating_duration_since(Instant::now())))
                .map_err(|e| finish(e.into()))?;
            if status.is_terminal() {
                copy_secs = Some(started.elapsed().as_secs_f64());
                break;
            }
            let now = Instant::now();
            if now >= boundary {
                copied.push(status.bytes_done);
                boundary += WINDOW;
            }
            if now >= end {
                manager.cancel(start_id, id, Some(Duration::from_secs(60))).map_err(|e| finish(e.into()))?;
                break;
            }
        }
        copy_ended = origin.elapsed();
        phase.store(2, Relaxed);
        std::thread::sleep(phase_len);
        stop.store(true, Relaxed);
        Ok(())
    })?;
    db.close().context("close the database")?;

    let samples = samples.into_inner().expect("samples");
    let stats: Vec<Latency> = (0..PHASES.len() as u8)
        .map(|p| Latency::of(samples.iter().filter(|c| c.phase == p).map(|c| c.latency).collect()))
        .collect();
    let baseline = Latency::of(samples.iter().filter(|c| c.phase != 1).map(|c| c.latency).collect());
    let ratio = stats[1].p99 / baseline.p99;
    // MB/s of the hot copy in each window that ended while it ran (bytes done: atoms and journal written).
    let copy_windows: Vec<f64> = copied.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6 / WINDOW.as_secs_f64()).collect();
    // The commits begun in each window from the committers' start.
    let windows = samples.iter().map(|c| c.at.as_secs() as usize + 1).max().unwrap_or(0);
    let mut per_window: Vec<Vec<Duration>> = vec![Vec::new(); windows];
    for c in &samples {
        per_window[c.at.as_secs() as usize].push(c.latency);
    }
    let commit_windows: Vec<Latency> = per_window.into_iter().map(Latency::of).collect();
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
            "copy_began_seconds": copy_began.as_secs_f64(),
            "copy_ended_seconds": copy_ended.as_secs_f64(),
            "copy_window_mb_per_sec": copy_windows,
            "commit_windows": commit_windows.iter().map(phase_json).collect::<Vec<_>>(),
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
        if let Some(plot) = &args.plot {
            println!("plot: {}", plot.display());
        }
    }
    if let Some(plot) = plot {
        let caption = format!(
            "backset bench foreground: full hot copy of {} MiB at --max-rate {} MB/s, {} commits/s",
            args.size_mib, args.max_rate, args.commit_rate
        );
        let began = copy_began.as_secs_f64();
        let p50: Vec<f64> = commit_windows.iter().map(|l| l.p50).collect();
        let p99: Vec<f64> = commit_windows.iter().map(|l| l.p99).collect();
        let svg = foreground_svg(
            &caption,
            &Windows { start: began, values: &copy_windows },
            args.max_rate as f64,
            &Windows { start: 0.0, values: &p50 },
            &Windows { start: 0.0, values: &p99 },
            (began, copy_ended.as_secs_f64()),
        )?;
        plot.write(&svg)?;
    }
    Ok(())
}

/// One commit of a committer: the phase it began in, when (from the committers' start), and its latency.
struct Commit {
    phase: u8,
    at: Duration,
    latency: Duration,
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

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let l = super::Latency::of(v);
        assert_eq!((l.n, l.p50, l.p99, l.max), (200, 100.0, 198.0, 200.0));
        assert!(super::Latency::of(Vec::new()).p99.is_nan());
    }
}
