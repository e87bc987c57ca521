//! `backset bench`: measure the copier on this machine's disks, one module per bench: [`copy`] (a tree, one or more
//! jobs under one rate limit), [`disk`] (write, read and copy rates, and a `--max-rate` to start from),
//! [`versus_cp`] (the copier against `cp -a`, alternating, from a cold cache), [`foreground`] (what a throttled hot
//! copy costs the commits of a running database), [`incremental`] (an incremental against a full), [`metrics`]
//! (what scraping `/metrics` costs a hot copy), [`restore_set`] (a kept backup set of full, incrementals and
//! journal elements to measure restores on) and [`s3`] (backup sets on object storage against `rclone`). [`files`]
//! holds what they share: the source tree walk, the scratch directory and a bulk-loaded database; [`plot`] draws the
//! per-second samples of `copy` and `foreground` (`--plot FILE.svg`).

mod copy;
mod disk;
mod files;
mod foreground;
mod incremental;
mod metrics;
mod plot;
mod restore_set;
mod s3;
mod versus_cp;

use anyhow::Result;

use copy::CopyArgs;
use disk::DiskArgs;
use foreground::ForegroundArgs;
use incremental::IncrementalArgs;
use metrics::MetricsArgs;
use restore_set::RestoreSetArgs;
use s3::S3Args;
use versus_cp::VersusArgs;

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
    /// Copy a directory tree with the copier and with `cp -a` (or `--baseline xcp`: `xcp -r`), then `sync`,
    /// alternating which goes first, every run from a cold page cache (as root), and report each side's best and
    /// median time and their ratios: DESIGN.md's way to compare on a noisy disk.
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
    /// What an incremental hot copy costs against a full: bulk-loads an archive of --size-mib in --atoms atoms, takes
    /// a full, rewrites one key in --changed-percent of the atoms, takes an incremental, then one with nothing
    /// changed (the listing and catalog cost), and reports the bytes, files and seconds of each and the ratios
    /// (docs/PERFORMANCE.md's bar: at most 3% of a full after changes to 1% of the atoms); and `check` after the
    /// full against `check --new` after the incremental (bar: at most 3% of the full check's bytes and time).
    ///
    /// Example: `backset bench incremental target/inc --size-mib 1024 --atoms 1000000`
    Incremental(IncrementalArgs),
    /// Make and keep a backup set to measure restores on: bulk-loads an archive of --size-mib in --atoms atoms, takes
    /// a full, then --rounds times rewrites one key in --changed-percent of the atoms (other atoms each round), takes
    /// a journal hot copy and an incremental; last, changes once more and takes a journal hot copy, so the latest
    /// restore needs the last incremental and journal records past it. The database is removed; the set stays.
    /// Measure with `bench versus-cp SET DIR --restore`.
    ///
    /// Example: `backset bench restore-set target/rs/set --size-mib 1024 --rounds 3`
    RestoreSet(RestoreSetArgs),
    /// What scraping the metrics costs a hot copy: full hot copies of a bulk-loaded archive, alternately with and
    /// without a scraper rendering `/metrics` every --scrape-ms, each from a cold page cache (as root); reports each
    /// side's best and median time, their ratio and the spread of the runs without (the noise).
    ///
    /// Example: `backset bench metrics target/metrics --size-mib 1024 --runs 5`
    Metrics(MetricsArgs),
    /// Backup sets on S3-compatible object storage against `rclone` on the same server: a full hot copy of a
    /// bulk-loaded archive of --size-mib (and of one of --small-files 16 KiB atom files) to the server against
    /// `rclone copy` of its files, a restore from the server against `rclone copy` down (then `sync -f`), alternating
    /// which goes first, each side's best and median and the ratios; the throttle (--rates) over --throttle-seconds
    /// and in every 1-second window; the peak memory of both sides' uploads and restores. --measures picks the
    /// parts (and --size-mib 0 or --small-files 0 leaves an archive out); each run's figures go to stderr as it ends.
    /// Starts `s3s-fs` on a loopback port unless --endpoint names a server; needs `rclone`.
    ///
    /// Example: `backset bench s3 target/s3bench --measures upload --size-mib 1024 --small-files 0 --runs 5`
    S3(S3Args),
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Copy(args) => copy::copy(args),
        Command::Disk(args) => disk::disk(args),
        Command::VersusCp(args) => versus_cp::versus_cp(args),
        Command::Foreground(args) => foreground::foreground(args),
        Command::Incremental(args) => incremental::incremental(args),
        Command::Metrics(args) => metrics::metrics(args),
        Command::RestoreSet(args) => restore_set::restore_set(args),
        Command::S3(args) => s3::s3(args),
    }
}
