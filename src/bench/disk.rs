//! `backset bench disk`: sequential write, read (the copier's engine, O_DIRECT, hashed) and copy rates of the disk
//! under a directory, and a `--max-rate` suggested from them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use backset_copier::{Copier, CopyRequest, JobControl, Options};

use super::files::Scratch;

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

pub(super) fn disk(args: &DiskArgs) -> Result<()> {
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
