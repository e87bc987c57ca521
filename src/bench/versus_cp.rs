//! `backset bench versus-cp`: the copier (or, with `--restore`, a restore of the backup set) against `cp -a` (or, with
//! `--baseline xcp`, `xcp -r`), then `sync`, of the same tree, alternating which goes first, every run from a cold page
//! cache, reported as each side's best and median.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use backset_copier::{Copier, CopyRequest, JobControl, Options};
use backset_engine::restore::{RestoreOptions, RestorePoint};

use super::copy::backend;
use super::files::{walk, Scratch};

/// Options of `backset bench versus-cp`.
#[derive(clap::Args, Debug)]
pub struct VersusArgs {
    /// Directory to copy (regular files, recursively; symlinks are skipped); with --restore, a backup set.
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
    /// Measure a restore of the backup set SOURCE (to its latest restorable transaction, every byte verified, made
    /// durable) instead of a copy with the copier; `cp -a` still copies the whole set.
    #[arg(long)]
    restore: bool,
    /// The copy to compare with: `cp` (`cp -a SOURCE DIR`) or `xcp` (`xcp -r SOURCE DIR`, which must be on the
    /// PATH: `cargo install xcp`); either followed by `sync`.
    #[arg(long, default_value = "cp", value_parser = ["cp", "xcp"])]
    baseline: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The baseline's command line, without its source and target, as the report names it.
fn baseline_command(name: &str) -> (&'static str, &'static str) {
    match name {
        "xcp" => ("xcp", "-r"),
        _ => ("cp", "-a"),
    }
}

/// Writes back dirty pages and, as root, drops the page cache, dentries and inodes, so the next run reads the disk.
/// Returns whether the cache could be dropped.
pub(super) fn cold_cache() -> Result<bool> {
    sync()?;
    Ok(std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok())
}

/// Runs `sync`: every dirty page of every file system written back.
pub(super) fn sync() -> Result<()> {
    let status = std::process::Command::new("sync").status().context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

pub(super) fn versus_cp(args: &VersusArgs) -> Result<()> {
    std::fs::create_dir_all(&args.scratch).with_context(|| format!("create {}", args.scratch.display()))?;
    let scratch = Scratch(args.scratch.join(format!(".backset-versus-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;
    let opts = Options { backend: backend(args.io.as_deref()), ..Options::default() };
    let mut copier = Copier::new(opts.clone())?;
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
        if args.restore {
            let restore = RestoreOptions { copier: opts.clone(), ..RestoreOptions::default() };
            let report = backset_engine::restore::restore(&args.source, &target, RestorePoint::Latest, &restore)?;
            bytes = report.atom_bytes + report.journal_bytes;
        } else {
            let files = walk(&args.source)?;
            let requests: Vec<_> =
                files.iter().map(|f| CopyRequest::file(args.source.join(f), target.join(f))).collect();
            bytes = copier.copy(&requests, &JobControl::new(), None)?.bytes;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let (program, flag) = baseline_command(&args.baseline);
    let them = format!("{program} {flag} + sync");
    let run_cp = |run: u16, cold: &mut bool| -> Result<f64> {
        let target = scratch.0.join(format!("{program}-{run}"));
        *cold &= cold_cache()?;
        let started = Instant::now();
        let status = std::process::Command::new(program).arg(flag).arg(&args.source).arg(&target).status();
        let status = status.with_context(|| match program {
            "xcp" => "run xcp (is it installed? `cargo install xcp`)".to_string(),
            _ => format!("run {program} {flag}"),
        })?;
        if !status.success() {
            bail!("{program} {flag} {} {} failed: {status}", args.source.display(), target.display());
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
                "run {:>3}: backset {:8.3} s   {them} {:8.3} s",
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
            "restore": args.restore,
            "backend": backend,
            "cold_cache": cold,
            "baseline": args.baseline,
            "backset_seconds": ours,
            "baseline_seconds": theirs,
            "backset_best": summary.best.0,
            "baseline_best": summary.best.1,
            "backset_median": summary.median.0,
            "baseline_median": summary.median.1,
            "speedup_best": summary.best.1 / summary.best.0,
            "speedup_median": summary.median.1 / summary.median.0,
            "backset_wins": summary.wins,
        });
        println!("{json}");
    } else {
        if !cold {
            println!("warning: could not drop the page cache (needs root): {program} may have read from it");
        }
        let what = if args.restore { "restored (atoms and journal written)" } else { "copied" };
        println!("bytes {what} {bytes}, backend {backend}, {} runs each, alternating who goes first", args.runs);
        println!(
            "best     backset {:.3} s, {them} {:.3} s: backset {:.2}x as fast",
            summary.best.0,
            summary.best.1,
            summary.best.1 / summary.best.0
        );
        println!(
            "median   backset {:.3} s, {them} {:.3} s: backset {:.2}x as fast",
            summary.median.0,
            summary.median.1,
            summary.median.1 / summary.median.0
        );
        println!("backset faster in {} of {} runs", summary.wins, args.runs);
    }
    Ok(())
}

/// Best and median (ours, theirs), and how many runs we won (run i against run i).
pub(super) struct Versus {
    pub(super) best: (f64, f64),
    pub(super) median: (f64, f64),
    pub(super) wins: usize,
}

impl Versus {
    pub(super) fn new(ours: &[f64], theirs: &[f64]) -> Self {
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

#[cfg(test)]
mod tests {
    use super::Versus;

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
