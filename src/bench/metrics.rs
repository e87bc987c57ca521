//! `backset bench metrics`: what scraping `/metrics` costs a hot copy. Full hot copies of one bulk-loaded archive,
//! alternately with and without a scraper rendering the metrics (the function `GET /metrics` serves) every
//! `--scrape-ms`, each from a cold page cache where that can be had (root); reports each side's best and median time
//! and their ratio beside the spread of the runs without (the noise the ratio is read against). docs/PERFORMANCE.md,
//! "Metrics".

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use backset_engine::hotcopy::{HotCopyRequest, HotCopyType, JobState};
use backset_refstore::bulk::BulkSpec;
use backset_refstore::Config;

use super::files::{bulk_loaded, Loaded};
use super::versus_cp::{cold_cache, Versus};
use crate::server::metrics::render;

/// Options of `backset bench metrics`.
#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    /// Directory on the disk to measure; a temporary directory is made in it (database and backup sets) and removed
    /// afterwards.
    dir: PathBuf,
    /// Size of the archive in MiB.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=1_048_576))]
    size_mib: u64,
    /// Hot copies of each kind (with and without scraping), alternating which goes first.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<usize>::new().range(1..=100))]
    runs: usize,
    /// Milliseconds between two scrapes (Prometheus scrapes every 15 s by default; this is far more often).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=60_000))]
    scrape_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Longest the bench waits for one hot copy.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A metric every scrape during a hot copy must show: the running job's bytes (docs/OPERATIONS.md).
const RUNNING_JOB_METRIC: &str = "backset_hot_copy_job_done_bytes";

/// One full hot copy into a new set (removed afterwards), scraped every `scrape` when given; returns its seconds and
/// the scrapes that saw it running.
fn full_copy(bench: &Loaded, n: usize, scrape: Option<Duration>) -> Result<(f64, u64)> {
    let set = bench.set.with_extension(n.to_string());
    let cold = cold_cache()?;
    let done = AtomicBool::new(false);
    let (status, secs, scrapes) = std::thread::scope(|s| -> Result<_> {
        let done = &done;
        let scraper = scrape.map(|every| {
            s.spawn(move || {
                let mut seen = 0;
                while !done.load(Ordering::Acquire) {
                    if render(&bench.manager, &bench.db).contains(RUNNING_JOB_METRIC) {
                        seen += 1;
                    }
                    std::thread::sleep(every);
                }
                seen
            })
        });
        let started = Instant::now();
        let status = bench
            .manager
            .start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set))
            .and_then(|(start_id, id)| bench.manager.status(start_id, id, Some(HOT_COPY_TIMEOUT)));
        let secs = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Release);
        let scrapes = scraper.map_or(0, |t| t.join().expect("the scraper does not panic"));
        Ok((status?, secs, scrapes))
    })?;
    if status.status != JobState::Completed {
        bail!("hot copy {n} did not complete: {}", status.message);
    }
    if !cold && n == 0 {
        eprintln!("note: the page cache could not be dropped (not root): every run after the first reads a warm cache");
    }
    backset_format::dirfd::remove_path(&set)?;
    Ok((secs, scrapes))
}

pub(super) fn metrics(args: &MetricsArgs) -> Result<()> {
    let spec = BulkSpec { bytes_per_archive: args.size_mib << 20, value_bytes: 4096, seed: 13 };
    let bench = bulk_loaded(&args.dir, "metrics", Config::new("metrics"), &spec)?;
    let scrape = Duration::from_millis(args.scrape_ms);
    let (mut with, mut without, mut scrapes) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0;
    for run in 0..args.runs {
        // Alternate which goes first, so neither side always follows the other.
        for scraped in if run % 2 == 0 { [true, false] } else { [false, true] } {
            let (secs, seen) = full_copy(&bench, n, scraped.then_some(scrape))?;
            n += 1;
            if scraped {
                ensure!(seen > 0, "no scrape saw the hot copy running ({secs:.2} s, every {} ms)", args.scrape_ms);
                with.push(secs);
                scrapes.push(seen);
            } else {
                without.push(secs);
            }
        }
    }
    let v = Versus::new(&with, &without);
    let spread = |s: &[f64]| {
        let (lo, hi) = s.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        (hi - lo) / v.median.1
    };
    let ratio = v.median.0 / v.median.1;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "size_mib": args.size_mib,
                "runs": args.runs,
                "scrape_ms": args.scrape_ms,
                "with_scrapes_seconds": with,
                "without_seconds": without,
                "scrapes": scrapes,
                "best": { "with": v.best.0, "without": v.best.1 },
                "median": { "with": v.median.0, "without": v.median.1 },
                "median_ratio": ratio,
                "spread_without": spread(&without),
            })
        );
    } else {
        println!(
            "full hot copy of {} MiB, {} runs each, scraping every {} ms ({} scrapes a run at the median)",
            args.size_mib,
            args.runs,
            args.scrape_ms,
            {
                let mut s = scrapes.clone();
                s.sort_unstable();
                s[s.len() / 2]
            }
        );
        println!("with scrapes     best {:>8.2} s  median {:>8.2} s", v.best.0, v.median.0);
        println!("without          best {:>8.2} s  median {:>8.2} s", v.best.1, v.median.1);
        println!(
            "median with / without: {ratio:.3}x; the runs without spread over {:.1}% of their median",
            100.0 * spread(&without)
        );
    }
    Ok(())
}
