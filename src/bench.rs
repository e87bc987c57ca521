//! `backset bench`: measure the copier on this machine's disks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use backset_copier::limit::{JobLimiter, SmLimiter};
use backset_copier::{BackendChoice, Copier, CopyRequest, JobControl, JobReport, Options, Throttle};

/// `backset bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Copy a directory tree with the copier and report bytes, seconds, MB/s, backend, direct-I/O files, time
    /// waited on the limiter and the BLAKE3 of the manifest.
    ///
    /// Example: `backset bench copy /data/archive /backup/copy --max-rate 200`
    Copy(CopyArgs),
}

/// Options of `backset bench copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Directory to copy (regular files, recursively; symlinks are skipped).
    source: PathBuf,
    /// Directory to create (must not exist).
    target: PathBuf,
    /// Rate limit in MB/s (MB = 10^6 bytes), counted on the bytes read.
    #[arg(long, value_parser = parse_rate)]
    max_rate: Option<u64>,
    /// I/O backend: uring or portable (default: uring where available).
    #[arg(long, value_parser = ["uring", "portable"])]
    io: Option<String>,
    /// Do not hash (to measure what hashing costs).
    #[arg(long)]
    no_hash: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a positive whole number of MB/s")),
        Ok(mb) => mb.checked_mul(1_000_000).ok_or_else(|| format!("{s} MB/s is too large")),
    }
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Copy(args) => copy(args),
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

fn copy(args: &CopyArgs) -> Result<()> {
    if args.target.exists() {
        bail!("{} exists; bench copy creates its target, give a new path", args.target.display());
    }
    let files = walk(&args.source)?;
    let requests: Vec<_> = files.iter().map(|f| CopyRequest::file(args.source.join(f), args.target.join(f))).collect();
    let backend = match args.io.as_deref() {
        Some("uring") => BackendChoice::Uring,
        Some("portable") => BackendChoice::Portable,
        _ => BackendChoice::Auto,
    };
    let mut copier = Copier::new(Options { backend, hash: !args.no_hash, ..Options::default() })?;
    // The SM budget is the bench's whole budget; the job has no cap of its own.
    let limiter = args.max_rate.map(|rate| JobLimiter::new(&SmLimiter::new(Some(rate)), None));
    let ctl = JobControl::new();
    let started = Instant::now();
    let report = copier.copy(&requests, &ctl, limiter.as_ref().map(|l| l as &dyn Throttle))?;
    let seconds = started.elapsed().as_secs_f64();
    print_report(args, &files, &report, seconds);
    Ok(())
}

/// BLAKE3 over the sorted (path, size, hash) list: equal trees give equal manifests.
fn manifest_hash(files: &[PathBuf], report: &JobReport) -> String {
    let mut h = blake3::Hasher::new();
    for (path, f) in files.iter().zip(&report.files) {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(&f.bytes.to_le_bytes());
        h.update(&f.hash);
    }
    h.finalize().to_hex().to_string()
}

fn print_report(args: &CopyArgs, files: &[PathBuf], report: &JobReport, seconds: f64) {
    let mb_per_sec = report.bytes as f64 / 1e6 / seconds;
    let manifest = if args.no_hash { "-".to_string() } else { manifest_hash(files, report) };
    if args.json {
        println!(
            "{{\"files\": {}, \"bytes\": {}, \"seconds\": {seconds:.6}, \"mb_per_sec\": {mb_per_sec:.3}, \"backend\": \"{}\", \"registered_buffers\": {}, \"direct_sources\": {}, \"direct_targets\": {}, \"direct_fallbacks\": {}, \"waited_seconds\": {:.6}, \"max_rate_mb\": {}, \"manifest_blake3\": \"{manifest}\"}}",
            files.len(),
            report.bytes,
            report.backend.name(),
            report.registered_buffers,
            report.direct_sources,
            report.direct_targets,
            report.direct_fallbacks,
            report.waited.as_secs_f64(),
            args.max_rate.map_or("null".to_string(), |r| (r / 1_000_000).to_string()),
        );
    } else {
        println!("files            {}", files.len());
        println!("bytes            {}", report.bytes);
        println!("seconds          {seconds:.3}");
        println!("MB/s             {mb_per_sec:.1}");
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
        println!("limiter wait     {:.3} s", report.waited.as_secs_f64());
        println!("manifest BLAKE3  {manifest}");
    }
}
