//! Copier benchmarks on the real disk, each beside its baseline in the same criterion group.
//!
//! - `copy/large`: 8 files x 256 MiB; io_uring, portable and `cp -a` (run as a subprocess, followed by `sync`,
//!   since `cp` returns before its data is on disk while the copier fsyncs).
//! - `copy/small`: 50,000 files x 16 KiB; the same three.
//! - `copy/hash-overhead`: io_uring with and without BLAKE3 over the large set.
//! - `throttle/accuracy`: achieved rate at 10, 50 and 200 MB/s (printed as the error against the set rate).
//!
//! Every sample starts cold: the target of the previous sample is removed, everything is synced, and the page cache is
//! dropped (`/proc/sys/vm/drop_caches`, as root; otherwise a warning says that `cp -a` may read from the cache). The
//! copier reads with O_DIRECT, so without this `cp -a` would read the source from the cache it filled in its first
//! sample while the copier reads the disk every time.
//!
//! Data sets are made once under `target/bench-data/` (a real disk, never a tmpfs) and kept between runs. Under
//! `cargo bench -- --test` (one iteration of each, to check that they run) they are small ones of their own
//! (`large-test`: 8 x 1 MiB, `small-test`: 500 x 16 KiB; `throttle/accuracy` keeps its two seconds a sample).
//! Run: `cargo bench --bench copy` (or one group: `cargo bench --bench copy -- copy/large`). This machine's disk
//! is noisy (DESIGN.md, "Measures"): compare ratios within one run, best of several.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backset::copier::limit::{JobLimiter, SmLimiter};
use backset::copier::{BackendChoice, Copier, CopyRequest, JobControl, Options, Throttle};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MIB: usize = 1 << 20;

/// Whether criterion runs under `--test`: each bench once, to check that it runs.
fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn data_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

/// Makes `count` files of `size` bytes under `dir` once (a marker file records completion).
fn dataset(name: &str, count: usize, size: usize) -> PathBuf {
    let dir = data_root().join(name);
    let done = data_root().join(format!("{name}.done"));
    if !done.exists() {
        let _ = backset_format::dirfd::remove_path(&dir);
        let block: Vec<u8> = (0..size.min(4 * MIB)).map(|i| (i * 31 % 251) as u8).collect();
        for i in 0..count {
            let path = dir.join(format!("{:03}/{i:06}", i % 500));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut f = std::fs::File::create(&path).unwrap();
            let mut left = size;
            while left > 0 {
                let n = left.min(block.len());
                std::io::Write::write_all(&mut f, &block[..n]).unwrap();
                left -= n;
            }
        }
        Command::new("sync").status().unwrap();
        std::fs::write(&done, b"").unwrap();
    }
    dir
}

fn requests(source: &Path, target: &Path) -> Vec<CopyRequest> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(source).unwrap() {
        let sub = sub.unwrap().path();
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            let rel = f.strip_prefix(source).unwrap();
            out.push(CopyRequest::file(&f, target.join(rel)));
        }
    }
    out
}

/// A target path that does not exist, with the page cache dropped (see the module docs).
fn fresh_target(name: &str) -> PathBuf {
    let t = data_root().join(format!("{name}.target"));
    let _ = backset_format::dirfd::remove_path(&t);
    assert!(Command::new("sync").status().unwrap().success());
    if std::fs::write("/proc/sys/vm/drop_caches", "1").is_err() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| eprintln!("warning: cannot drop the page cache (not root): `cp -a` may read from it"));
    }
    t
}

/// Times one copy of `source`, at `max_rate` bytes per second when given: the SM budget is made just before the copy
/// starts (it starts empty), after the target is prepared, so that the sync and cache drop before it fill no burst.
fn time_copier(copier: &mut Copier, source: &Path, name: &str, max_rate: Option<u64>) -> Duration {
    let target = fresh_target(name);
    let reqs = requests(source, &target);
    let sm = SmLimiter::new(max_rate);
    let job = max_rate.map(|_| JobLimiter::new(&sm, None));
    let start = Instant::now();
    copier.copy(&reqs, &JobControl::new(), job.as_ref().map(|j| j as &dyn Throttle)).unwrap();
    let t = start.elapsed();
    backset_format::dirfd::remove_path(&target).unwrap();
    t
}

fn time_cp(source: &Path, name: &str) -> Duration {
    let target = fresh_target(name);
    let start = Instant::now();
    assert!(Command::new("cp").arg("-a").arg(source).arg(&target).status().unwrap().success());
    assert!(Command::new("sync").status().unwrap().success());
    let t = start.elapsed();
    backset_format::dirfd::remove_path(&target).unwrap();
    t
}

fn copier(backend: BackendChoice, hash: bool) -> Copier {
    Copier::new(Options { backend, hash, ..Options::default() }).unwrap()
}

fn three_way(c: &mut Criterion, group: &str, source: &Path, bytes: u64) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    g.warm_up_time(Duration::from_millis(1));
    for (name, backend) in [("uring", BackendChoice::Uring), ("portable", BackendChoice::Portable)] {
        let mut cp = copier(backend, true);
        g.bench_function(name, |b| b.iter_custom(|n| (0..n).map(|_| time_copier(&mut cp, source, group, None)).sum()));
    }
    g.bench_function("cp -a", |b| b.iter_custom(|n| (0..n).map(|_| time_cp(source, group)).sum()));
    g.finish();
}

/// The large set, 8 x 256 MiB (8 x 1 MiB under `--test`), and its bytes.
fn large_set() -> (PathBuf, u64) {
    let (name, size) = if test_mode() { ("large-test", MIB) } else { ("large", 256 * MIB) };
    (dataset(name, 8, size), 8 * size as u64)
}

fn large(c: &mut Criterion) {
    let (source, bytes) = large_set();
    three_way(c, "copy/large", &source, bytes);
}

fn small(c: &mut Criterion) {
    let (name, count) = if test_mode() { ("small-test", 500) } else { ("small", 50_000) };
    let source = dataset(name, count, 16 << 10);
    three_way(c, "copy/small", &source, count as u64 * (16 << 10));
}

fn hash_overhead(c: &mut Criterion) {
    let (source, bytes) = large_set();
    let mut g = c.benchmark_group("copy/hash-overhead");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    for (name, hash) in [("blake3", true), ("no-hash", false)] {
        let mut cp = copier(BackendChoice::Uring, hash);
        g.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| time_copier(&mut cp, &source, "hash", None)).sum())
        });
    }
    g.finish();
}

fn throttle(c: &mut Criterion) {
    let mut g = c.benchmark_group("throttle/accuracy");
    g.sample_size(10);
    for mb in [10u64, 50, 200] {
        // Two seconds of traffic per sample (under `--test` too: a shorter sample measures the limiter's start).
        let files = (2 * mb as usize).div_ceil(64).max(1);
        let source = dataset(&format!("throttle-{mb}"), files, (2 * mb as usize * 1_000_000) / files);
        let bytes: u64 =
            requests(&source, Path::new("/")).iter().map(|r| std::fs::metadata(&r.source).unwrap().len()).sum();
        g.throughput(Throughput::Bytes(bytes));
        let mut cp = copier(BackendChoice::Uring, true);
        g.bench_function(format!("{mb}MB/s"), |b| {
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let t = time_copier(&mut cp, &source, "throttle", Some(mb * 1_000_000));
                    let achieved = bytes as f64 / t.as_secs_f64() / 1e6;
                    eprintln!(
                        "throttle {mb} MB/s: achieved {achieved:.2} MB/s ({:+.2}%)",
                        (achieved / mb as f64 - 1.0) * 100.0
                    );
                    total += t;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, large, small, hash_overhead, throttle);
criterion_main!(benches);
