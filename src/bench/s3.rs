//! `backset bench s3`: backup sets on S3-compatible object storage against `rclone` on the same server, in one run:
//! a full hot copy of a bulk-loaded archive (and of an archive of many small atom files) to the server against
//! `rclone copy` of the archive's files, a restore from the server against `rclone copy` of the set down (then
//! `sync -f`), alternating which goes first, each side's best and median; the throttle (`--max-rate`) of hot copies to
//! the server over a fixed span and in every 1-second window; and the peak memory of both sides' uploads and
//! restores. `--measures` picks the parts, and each run's figures go to stderr as it ends, so that the measures fit in
//! separate invocations and a run cut short still leaves its figures. docs/PERFORMANCE.md, "The bench commands" and
//! "Upload to object storage".

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use backset_engine::hotcopy::{HotCopyRequest, HotCopyType, JobState};
use backset_engine::restore::{RestoreOptions, RestorePoint};
use backset_refstore::bulk::BulkSpec;
use backset_refstore::limits::MAX_ATOM_BUCKETS;
use backset_refstore::Config;

use super::files::{bulk_loaded, walk, Loaded, Scratch};
use super::versus_cp::{cold_cache, Versus};

/// Options of `backset bench s3`.
#[derive(clap::Args, Debug)]
pub struct S3Args {
    /// Directory on the disk to measure; a temporary directory is made in it (the databases, the restores, and the
    /// data of the `s3s-fs` server the bench starts) and removed afterwards.
    dir: PathBuf,
    /// Size of the large archive in MiB (keys and values, in 4 KiB values); 0 leaves the large archive's upload and
    /// restore out (the throttle loads an archive of its own when this one is too small for it).
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(0..=1_048_576))]
    size_mib: u64,
    /// Atom files of the small-file archive, about 16 KiB each (one atom bucket per file); 0 leaves the small-file
    /// measures out.
    #[arg(long, default_value_t = 50_000, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u32>::new().range(0..=i64::from(MAX_ATOM_BUCKETS)))]
    small_files: u32,
    /// What to measure (comma-separated): `upload` (full hot copies against `rclone copy` up), `restore` (restores
    /// against `rclone copy` down; without `upload`, one untimed hot copy makes the set first), `throttle` (one
    /// throttled hot copy per --rates). The peak memory of both sides is measured in every upload and restore run.
    #[arg(long, value_delimiter = ',', default_values_t = [Measure::Upload, Measure::Restore, Measure::Throttle], value_name = "MEASURE,...")]
    measures: Vec<Measure>,
    /// Runs of each side (upload and restore, each archive).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: u16,
    /// The rates (MB/s, comma-separated) of the throttled hot copies of the large archive to the server, one each.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 50, 100, 200], value_parser = parse_rate, value_name = "MB/s,...")]
    rates: Vec<u64>,
    /// Span of each throttled hot copy, in seconds, after which it is cancelled. The throttle uses the large archive
    /// when it lasts the span at the highest rate (with a margin) and otherwise loads an archive of that size.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    throttle_seconds: u64,
    /// An S3-compatible server that is already running (`http://HOST:PORT`; its keys from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY), instead of starting `s3s-fs`. The bench writes under one prefix of --bucket and
    /// removes it at the end.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The bucket on --endpoint (it must exist).
    #[arg(long, requires = "endpoint")]
    bucket: Option<String>,
    /// The `s3s-fs` executable to start on a loopback port (default: `s3s-fs` on PATH).
    #[arg(long, value_name = "PATH", conflicts_with = "endpoint")]
    s3s_fs: Option<PathBuf>,
    /// The `rclone` executable (default: `rclone` on PATH).
    #[arg(long, value_name = "PATH")]
    rclone: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One measure of `bench s3` (`--measures`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// Full hot copies to the server against `rclone copy` of the archive's files.
    Upload,
    /// Restores from the server against `rclone copy` of the set down, then `sync -f`.
    Restore,
    /// One throttled full hot copy to the server per `--rates`.
    Throttle,
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        f.write_str(self.to_possible_value().expect("no variant is skipped").get_name())
    }
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(mb) if (1..=MAX_RATE_MB).contains(&mb) => Ok(mb),
        _ => Err(format!("{s:?} is not a whole number of MB/s from 1 to {MAX_RATE_MB}")),
    }
}

/// Highest rate `--rates` takes, MB/s.
const MAX_RATE_MB: u64 = 100_000;

/// The `s3s-fs` version the bench is documented with (the one `backset-s3test` serves in-process).
const S3S_FS_VERSION: &str = "0.14.1";

/// Size of a small-file archive's atom files the bench aims at.
const SMALL_FILE_BYTES: u64 = 16 << 10;

/// Keys per atom of the bulk loads (see `bench incremental`).
const KEYS_PER_ATOM: u64 = 4;

/// Longest the bench waits for one hot copy.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Longest the bench waits for the `s3s-fs` it started to accept connections.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Length of the windows in which the throttle is measured.
const WINDOW: Duration = Duration::from_secs(1);

/// How often the bench looks for a throttled hot copy's first byte.
const FIRST_BYTE_POLL: Duration = Duration::from_millis(5);

/// How much more than the highest `--rates` times (`--throttle-seconds` + [`THROTTLE_EXTRA_SECONDS`]) the throttle's
/// archive holds, in percent: the job must still be reading when the span ends (the span starts at the first byte
/// read, the first window reads a few percent over the rate, and the last files are read as a whole).
const THROTTLE_MARGIN_PERCENT: u64 = 10;

/// Seconds at the highest rate the throttle's archive holds beyond `--throttle-seconds` (see
/// [`THROTTLE_MARGIN_PERCENT`]).
const THROTTLE_EXTRA_SECONDS: u64 = 1;

/// Size of the large archive's atom files (and the throttle's): `--size-mib` in files of this size (the last one
/// smaller), so that the large measure is one of large objects (multipart uploads), as the small-file one is of
/// many small ones. Half of the largest atom body (`MAX_ATOM_BODY_BYTES`), as atoms vary in size around it.
const LARGE_FILE_BYTES: u64 = 128 << 20;

/// How often the bench reads `rclone`'s peak resident set while it runs (growth in its last interval is not seen).
const RCLONE_MEMORY_POLL: Duration = Duration::from_millis(10);

/// The bucket of the server the bench starts.
const BENCH_BUCKET: &str = "backset-bench";

/// Where the bench writes and how `rclone` reaches it.
struct Store {
    url: String,
    bucket: String,
    /// The prefix of this run in the bucket.
    prefix: String,
    access_key_id: String,
    secret_access_key: String,
    /// The server the bench started, killed when dropped.
    server: Option<Server>,
}

impl Store {
    /// `s3://bucket/prefix/what`.
    fn set_url(&self, what: &str) -> String {
        format!("s3://{}/{}/{what}", self.bucket, self.prefix)
    }

    /// rclone's on-the-fly remote for `what` under the prefix.
    fn remote(&self, what: &str) -> String {
        format!(":s3:{}/{}/{what}", self.bucket, self.prefix)
    }
}

/// A started `s3s-fs`, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The executable `given`, or `name` on PATH; an error saying how to install it when there is none.
fn tool(given: Option<&Path>, name: &str, install: &str) -> Result<PathBuf> {
    match given {
        Some(p) if p.is_file() => Ok(p.to_owned()),
        Some(p) => bail!("{name} not found at {}: install it ({install}) or give its path", p.display()),
        None => on_path(name).ok_or_else(|| {
            anyhow::anyhow!("{name} is not installed (not on PATH): install it ({install}), or give its path")
        }),
    }
}

/// Starts `s3s-fs` on a free loopback port over `root` (with the bucket [`BENCH_BUCKET`]) and waits until it
/// accepts connections.
fn start_s3s_fs(program: &Path, root: &Path) -> Result<Store> {
    std::fs::create_dir_all(root.join(BENCH_BUCKET)).with_context(|| format!("create {}", root.display()))?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("pick a free loopback port for s3s-fs")?
        .port();
    let (access, secret) = ("backset-bench".to_owned(), uuid::Uuid::new_v4().simple().to_string());
    let child = Command::new(program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", &access, "--secret-key", &secret])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let mut server = Server(child);
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if let Some(exit) = server.0.try_wait()? {
            bail!("{} exited at start ({exit}); run it by hand to see why", program.display());
        }
        if Instant::now() > deadline {
            bail!("{} did not accept connections on {addr} within {SERVER_START_TIMEOUT:?}", program.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Store {
        url: format!("http://{addr}"),
        bucket: BENCH_BUCKET.to_owned(),
        prefix: "bench".to_owned(),
        access_key_id: access,
        secret_access_key: secret,
        server: Some(server),
    })
}

/// `rclone` with the store's on-the-fly S3 remote (keys in its environment, not on its command line).
fn rclone(program: &Path, store: &Store, config: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("RCLONE_CONFIG", config)
        .env("RCLONE_S3_PROVIDER", "Other")
        .env("RCLONE_S3_ENDPOINT", &store.url)
        .env("RCLONE_S3_REGION", "us-east-1")
        .env("RCLONE_S3_ACCESS_KEY_ID", &store.access_key_id)
        .env("RCLONE_S3_SECRET_ACCESS_KEY", &store.secret_access_key)
        .env("RCLONE_S3_NO_CHECK_BUCKET", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if store.url.starts_with("http://") {
        // No TLS to set up: rclone's AWS SDK fails on AWS_CA_BUNDLE with its own transport ("unable to load custom
        // CA bundle, HTTPClient's transport unsupported type") even for a plain-HTTP endpoint.
        cmd.env_remove("AWS_CA_BUNDLE");
    }
    cmd
}

/// Runs `rclone ARGS`, failing with its output when it fails; returns the seconds it took and its peak resident set
/// in bytes (see [`child_peak`]; `None` when it could not be read).
fn run_rclone(program: &Path, store: &Store, config: &Path, args: &[&std::ffi::OsStr]) -> Result<(f64, Option<u64>)> {
    let started = Instant::now();
    let mut child =
        rclone(program, store, config).args(args).spawn().with_context(|| format!("run {}", program.display()))?;
    // Opened before the child can be waited for, so the file stays bound to this process.
    let status_file = std::fs::File::open(format!("/proc/{}/status", child.id())).ok();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let poller = std::thread::spawn(move || status_file.and_then(|f| child_peak(f, &stopped)));
    let mut stderr = child.stderr.take().expect("rclone's stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut out);
        out
    });
    let status = child.wait().with_context(|| format!("wait for {}", program.display()))?;
    let secs = started.elapsed().as_secs_f64();
    drop(stop);
    let peak = poller.join().expect("the memory poller does not panic");
    let err = reader.join().expect("the stderr reader does not panic");
    if !status.success() {
        bail!("rclone {args:?} failed ({status}): {}", err.trim());
    }
    Ok((secs, peak))
}

/// A child's peak resident set in bytes: the highest `VmHWM` read from its `/proc/PID/status` (`status`), read every
/// [`RCLONE_MEMORY_POLL`] until `stop` is dropped (once the child has ended, its status has no `VmHWM`).
fn child_peak(mut status: std::fs::File, stop: &std::sync::mpsc::Receiver<()>) -> Option<u64> {
    use std::io::{Read, Seek};
    let mut peak = None;
    let mut text = String::new();
    loop {
        text.clear();
        if status.rewind().is_ok() && status.read_to_string(&mut text).is_ok() {
            if let Some(kib) = status_kib(&text, "VmHWM:") {
                peak = peak.max(Some(kib * 1024));
            }
        }
        if !matches!(stop.recv_timeout(RCLONE_MEMORY_POLL), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
            return peak;
        }
    }
}

/// The value in KiB of the field `name` (`VmRSS:`, `VmHWM:`) of a `/proc/PID/status` text.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `sync -f PATH`: the file system holding `path` made durable (what a restore does at its end, `syncfs`), not
/// every file system of the machine.
fn syncfs(path: &Path) -> Result<()> {
    let status = Command::new("sync").arg("-f").arg(path).status().context("run sync -f")?;
    if !status.success() {
        bail!("sync -f {} failed: {status}", path.display());
    }
    Ok(())
}

/// The process's resident set: (now, peak since the last [`reset_peak`]), in bytes, from /proc/self/status.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((status_kib(&status, "VmRSS:")? * 1024, status_kib(&status, "VmHWM:")? * 1024))
}

/// Resets the process's peak resident set (VmHWM) to what it holds now (Linux's `clear_refs` 5); whether it could.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak memory of one operation: the resident set before it and the peak during it.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    before: u64,
    peak: u64,
}

impl Memory {
    /// Runs `f`, noting the resident set before and the peak during (when the peak could be reset; else none).
    fn of<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Option<Memory>)> {
        let before = if reset_peak() { rss().map(|r| r.0) } else { None };
        let out = f()?;
        let memory = before.and_then(|before| rss().map(|(_, peak)| Memory { before, peak }));
        Ok((out, memory))
    }

    /// Of two measures, the one with the higher peak.
    fn max(a: Option<Memory>, b: Option<Memory>) -> Option<Memory> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.peak > a.peak { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn json(m: Option<Memory>) -> serde_json::Value {
        match m {
            Some(m) => serde_json::json!({ "rss_before_bytes": m.before, "peak_rss_bytes": m.peak,
                "peak_above_before_bytes": m.peak.saturating_sub(m.before) }),
            None => serde_json::Value::Null,
        }
    }
}

/// One bulk-loaded archive, its database open under a hot copy manager.
struct Archive {
    name: &'static str,
    /// The archive's directory (what `rclone copy` uploads).
    dir: PathBuf,
    files: u64,
    bytes: u64,
    loaded: Loaded,
}

impl Archive {
    /// Closes the database; everything is removed as it drops.
    fn close(self) -> Result<()> {
        self.loaded.db.close().with_context(|| format!("close the {} database", self.name))
    }
}

/// Bulk-loads the archive `name` of `bytes` (keys and values) in `atoms` atom buckets (one file each), saying on stderr when it
/// starts and how long it took.
fn load(name: &'static str, scratch: &Path, bytes: u64, atoms: u32, value_bytes: usize) -> Result<Archive> {
    progress(format_args!("loading the {name} archive ({:.1} MiB in {atoms} atom buckets) ...", mib(bytes)));
    let started = Instant::now();
    let config = Config { atom_buckets: Some(atoms), checkpoint_interval: None, ..Config::new(name) };
    let spec = BulkSpec { bytes_per_archive: bytes, value_bytes, seed: 13 };
    let loaded = bulk_loaded(scratch, name, config, &spec).with_context(|| format!("the {name} archive"))?;
    let dir = backset_refstore::archive_dir(&loaded.database, 0);
    let mut files = 0;
    let mut total = 0;
    for f in walk(&dir)? {
        files += 1;
        total += std::fs::metadata(dir.join(&f))?.len();
    }
    progress(format_args!(
        "loaded the {name} archive: {files} files, {:.1} MiB, in {:.1} s",
        mib(total),
        started.elapsed().as_secs_f64()
    ));
    Ok(Archive { name, dir, files, bytes: total, loaded })
}

/// A progress line on stderr (stdout is for the final report): a run cut short still leaves its figures.
fn progress(line: std::fmt::Arguments<'_>) {
    eprintln!("bench s3: {line}");
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// ", peak N MiB" when the peak was measured.
fn peak_text(peak: Option<u64>) -> String {
    peak.map_or_else(String::new, |p| format!(", peak {:.1} MiB", mib(p)))
}

/// One side against the other, run by run.
#[derive(Default)]
struct Sides {
    ours: Vec<f64>,
    theirs: Vec<f64>,
}

impl Sides {
    fn json(&self) -> serde_json::Value {
        let v = Versus::new(&self.ours, &self.theirs);
        serde_json::json!({
            "backset_seconds": self.ours, "rclone_seconds": self.theirs,
            "backset_best": v.best.0, "rclone_best": v.best.1,
            "backset_median": v.median.0, "rclone_median": v.median.1,
            "speedup_best": v.best.1 / v.best.0, "speedup_median": v.median.1 / v.median.0,
            "backset_wins": v.wins,
        })
    }

    fn print(&self, what: &str) {
        let v = Versus::new(&self.ours, &self.theirs);
        println!(
            "{what:<22} median backset {:8.3} s, rclone {:8.3} s: {:5.2}x   best {:8.3} s, {:8.3} s: {:5.2}x   \
             backset faster in {} of {}",
            v.median.0,
            v.median.1,
            v.median.1 / v.median.0,
            v.best.0,
            v.best.1,
            v.best.1 / v.best.0,
            v.wins,
            self.ours.len()
        );
    }
}

/// What one archive measured (`None`: not in `--measures`, or the peak could not be read).
struct Measured {
    name: &'static str,
    files: u64,
    bytes: u64,
    upload: Option<Sides>,
    restore: Option<Sides>,
    hot_copy_memory: Option<Memory>,
    restore_memory: Option<Memory>,
    /// `rclone`'s peak resident set over its `copy` runs up, bytes.
    rclone_upload_peak: Option<u64>,
    /// `rclone`'s peak resident set over its `copy` runs down, bytes.
    rclone_download_peak: Option<u64>,
    hot_copy_bytes: u64,
}

/// Per `--measures`: uploads `a` with full hot copies and with `rclone copy`; restores the first uploaded set and
/// copies the same set down with `rclone copy` (then `sync -f`), alternating which goes first, every run from a
/// cold cache (as root). Each run's figures go to stderr as it ends.
fn versus(
    a: &Archive,
    args: &S3Args,
    store: &Store,
    rclone_bin: &Path,
    scratch: &Path,
    cold: &mut bool,
) -> Result<Measured> {
    let rclone_config = scratch.join("rclone.conf");
    let runs = args.runs;
    let mut m = Measured {
        name: a.name,
        files: a.files,
        bytes: a.bytes,
        upload: None,
        restore: None,
        hot_copy_memory: None,
        restore_memory: None,
        rclone_upload_peak: None,
        rclone_download_peak: None,
        hot_copy_bytes: 0,
    };
    let set = |run: u16| store.set_url(&format!("{}/backset-{run}", a.name));
    let hot_copy = |run: u16, cold: &mut bool| -> Result<(f64, u64, Option<Memory>)> {
        *cold &= cold_cache()?;
        let req = HotCopyRequest::new(HotCopyType::Full).backup_dir(0, set(run));
        let ((secs, done), mem) = Memory::of(|| {
            let started = Instant::now();
            let (start_id, id) = a.loaded.manager.start(req)?;
            let s = a.loaded.manager.status(start_id, id, Some(HOT_COPY_TIMEOUT))?;
            if s.status != JobState::Completed {
                bail!("the full hot copy of the {} archive to {} did not complete: {}", a.name, set(run), s.message);
            }
            Ok((started.elapsed().as_secs_f64(), s.bytes_done))
        })?;
        Ok((secs, done, mem))
    };
    let rclone_up = |run: u16, cold: &mut bool| -> Result<(f64, Option<u64>)> {
        *cold &= cold_cache()?;
        let to = store.remote(&format!("{}/rclone-{run}", a.name));
        run_rclone(rclone_bin, store, &rclone_config, &["copy".as_ref(), a.dir.as_os_str(), to.as_ref()])
    };
    if args.measures.contains(&Measure::Upload) {
        let mut upload = Sides::default();
        for run in 0..runs {
            let ((ours, done, mem), (theirs, peak)) = if run % 2 == 0 {
                let ours = hot_copy(run, cold)?;
                (ours, rclone_up(run, cold)?)
            } else {
                let theirs = rclone_up(run, cold)?;
                (hot_copy(run, cold)?, theirs)
            };
            progress(format_args!(
                "{} archive: upload run {}/{runs}: backset {ours:.2} s{}, rclone {theirs:.2} s{}",
                a.name,
                run + 1,
                peak_text(mem.map(|m| m.peak)),
                peak_text(peak)
            ));
            upload.ours.push(ours);
            upload.theirs.push(theirs);
            m.hot_copy_bytes = done;
            m.hot_copy_memory = Memory::max(m.hot_copy_memory, mem);
            m.rclone_upload_peak = m.rclone_upload_peak.max(peak);
        }
        m.upload = Some(upload);
    } else if args.measures.contains(&Measure::Restore) {
        progress(format_args!("{} archive: a full hot copy to the server for the restores ...", a.name));
        let (secs, done, _) = hot_copy(0, cold)?;
        m.hot_copy_bytes = done;
        progress(format_args!("{} archive: made the set to restore in {secs:.1} s (not measured)", a.name));
    }
    if !args.measures.contains(&Measure::Restore) {
        return Ok(m);
    }
    // Both sides read the same objects (the first set) from the same server, and both end durable (a restore with
    // `syncfs`, rclone's copy with `sync -f`). Every run's copy is kept until the end of the series: creating many
    // files right after removing many is slow on ext4 (docs/PERFORMANCE.md), which would measure the clean-up.
    let source = set(0);
    let mut targets = Vec::new();
    let restore = |run: u16, cold: &mut bool, targets: &mut Vec<PathBuf>| -> Result<(f64, Option<Memory>)> {
        *cold &= cold_cache()?;
        let target = scratch.join(format!("{}-restore-{run}", a.name));
        targets.push(target.clone());
        Memory::of(|| {
            let started = Instant::now();
            backset_engine::restore::restore(&source, &target, RestorePoint::Latest, &RestoreOptions::default())
                .with_context(|| format!("restore {source}"))?;
            Ok(started.elapsed().as_secs_f64())
        })
    };
    let rclone_down = |run: u16, cold: &mut bool, targets: &mut Vec<PathBuf>| -> Result<(f64, Option<u64>)> {
        *cold &= cold_cache()?;
        let target = scratch.join(format!("{}-rclone-down-{run}", a.name));
        targets.push(target.clone());
        let from = store.remote(&format!("{}/backset-0", a.name));
        let started = Instant::now();
        let mut args: Vec<&std::ffi::OsStr> = vec!["copy".as_ref(), from.as_ref(), target.as_os_str()];
        if store.server.is_some() {
            // rclone first HEADs the source path in case it is one object; s3s-fs answers a HEAD of a prefix with 500
            // (S3 answers 404), which rclone retries with backoff for about 90 s before it goes on to list.
            args.extend([std::ffi::OsStr::new("--low-level-retries"), std::ffi::OsStr::new("1")]);
        }
        let (_, peak) = run_rclone(rclone_bin, store, &rclone_config, &args)?;
        syncfs(&target)?;
        Ok((started.elapsed().as_secs_f64(), peak))
    };
    let mut restored = Sides::default();
    for run in 0..runs {
        let ((ours, mem), (theirs, peak)) = if run % 2 == 0 {
            let ours = restore(run, cold, &mut targets)?;
            (ours, rclone_down(run, cold, &mut targets)?)
        } else {
            let theirs = rclone_down(run, cold, &mut targets)?;
            (restore(run, cold, &mut targets)?, theirs)
        };
        progress(format_args!(
            "{} archive: restore run {}/{runs}: backset {ours:.2} s{}, rclone {theirs:.2} s{}",
            a.name,
            run + 1,
            peak_text(mem.map(|m| m.peak)),
            peak_text(peak)
        ));
        restored.ours.push(ours);
        restored.theirs.push(theirs);
        m.restore_memory = Memory::max(m.restore_memory, mem);
        m.rclone_download_peak = m.rclone_download_peak.max(peak);
    }
    for target in targets {
        backset_format::dirfd::remove_path(&target).with_context(|| format!("remove {}", target.display()))?;
    }
    m.restore = Some(restored);
    Ok(m)
}

/// One throttled hot copy to the store.
struct Throttled {
    max_rate_mb: u64,
    /// Seconds measured (whole windows before the job ended or was cancelled).
    seconds: f64,
    /// Bytes read over those seconds.
    bytes: u64,
    /// Rate of each whole window, MB/s.
    windows: Vec<f64>,
    /// Whether the job read all it had to before the span ended (the archive was too small for the span at this
    /// rate); then only the whole windows before are measured.
    ended_early: bool,
}

impl Throttled {
    fn achieved_mb(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            f64::NAN
        }
    }

    fn error_percent(&self) -> f64 {
        100.0 * (self.achieved_mb() - self.max_rate_mb as f64) / self.max_rate_mb as f64
    }

    /// The throttle's figures in one line of text.
    fn line(&self) -> String {
        let windows: Vec<String> = self.windows.iter().map(|w| format!("{w:.1}")).collect();
        format!(
            "throttle {:>5} MB/s: {:7.2} MB/s over {:.1} s ({:+.2}%), worst 1 s window {}{}; windows [{}]",
            self.max_rate_mb,
            self.achieved_mb(),
            self.seconds,
            self.error_percent(),
            self.worst_window_error_percent().map_or("none".to_owned(), |w| format!("{w:+.2}%")),
            if self.ended_early { " (the job ended before the span)" } else { "" },
            windows.join(", ")
        )
    }

    fn worst_window_error_percent(&self) -> Option<f64> {
        let rate = self.max_rate_mb as f64;
        self.windows.iter().map(|w| 100.0 * (w - rate) / rate).max_by(|a, b| a.abs().total_cmp(&b.abs()))
    }
}

/// A full hot copy of `a` to the store at `rate` MB/s, its bytes done looked at on every window boundary; cancelled
/// after `span` unless it ended.
fn throttle(a: &Archive, store: &Store, rate: u64, span: Duration) -> Result<Throttled> {
    let set = store.set_url(&format!("throttle-{rate}"));
    let req = HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set).max_rate(Some(rate * 1_000_000));
    let (start_id, id) = a.loaded.manager.start(req)?;
    // The span starts at the first byte read, not at the job's start (its listing and set-up read nothing).
    let deadline = Instant::now() + HOT_COPY_TIMEOUT;
    loop {
        let status = a.loaded.manager.status(start_id, id, None)?;
        if status.bytes_done > 0 || status.is_terminal() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the throttled hot copy to {set} read nothing within {HOT_COPY_TIMEOUT:?}");
        }
        std::thread::sleep(FIRST_BYTE_POLL);
    }
    let started = Instant::now();
    let first = a.loaded.manager.status(start_id, id, None)?.bytes_done;
    let mut samples: Vec<(f64, u64)> = vec![(0.0, 0)];
    let mut boundary = started + WINDOW;
    let mut ended_early = false;
    loop {
        let status = a.loaded.manager.status(start_id, id, Some(boundary.saturating_duration_since(Instant::now())))?;
        if status.is_terminal() {
            if status.status != JobState::Completed {
                bail!("the throttled hot copy to {set} did not complete: {}", status.message);
            }
            ended_early = true;
            break;
        }
        if status.bytes_total > 0 && status.bytes_done >= status.bytes_total {
            // Everything is read (what is left is the upload of the last files, which the rate does not count).
            ended_early = true;
            a.loaded.manager.cancel(start_id, id, Some(Duration::from_secs(60)))?;
            break;
        }
        let now = Instant::now();
        if now >= boundary {
            samples.push(((now - started).as_secs_f64(), status.bytes_done - first));
            boundary += WINDOW;
            if now >= started + span {
                a.loaded.manager.cancel(start_id, id, Some(Duration::from_secs(60)))?;
                break;
            }
        }
    }
    let windows = samples.windows(2).map(|w| (w[1].1 - w[0].1) as f64 / 1e6 / (w[1].0 - w[0].0)).collect();
    let (seconds, bytes) = *samples.last().expect("the first sample");
    Ok(Throttled { max_rate_mb: rate, seconds, bytes, windows, ended_early })
}

/// Bytes the throttle's archive needs: the highest rate over the span, and [`THROTTLE_MARGIN_PERCENT`] more.
fn throttle_archive_bytes(rates: &[u64], seconds: u64) -> u64 {
    let highest = rates.iter().copied().max().unwrap_or(0);
    highest * 1_000_000 * (seconds + THROTTLE_EXTRA_SECONDS) * (100 + THROTTLE_MARGIN_PERCENT) / 100
}

/// Atom buckets of a large archive of `bytes`: files of about [`LARGE_FILE_BYTES`].
fn large_atoms(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(LARGE_FILE_BYTES)).unwrap_or(MAX_ATOM_BUCKETS).clamp(1, MAX_ATOM_BUCKETS)
}

pub(super) fn s3(args: &S3Args) -> Result<()> {
    let versus_wanted = args.measures.iter().any(|m| matches!(m, Measure::Upload | Measure::Restore));
    if versus_wanted && args.size_mib == 0 && args.small_files == 0 {
        return Err(crate::usage::usage(
            "--size-mib 0 and --small-files 0 leave no archive to upload or restore: give either a size, or \
             --measures throttle alone",
        ));
    }
    let rclone_bin = tool(args.rclone.as_deref(), "rclone", "apt-get install rclone")?;
    let s3s_fs = match &args.endpoint {
        Some(_) => None,
        None => Some(tool(
            args.s3s_fs.as_deref(),
            "s3s-fs",
            &format!("cargo install s3s-fs --features binary --version {S3S_FS_VERSION}"),
        )?),
    };
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir).with_context(|| format!("resolve {}", args.dir.display()))?;
    let scratch = Scratch(dir.join(format!(".backset-s3-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;

    let store = match (&args.endpoint, s3s_fs) {
        (Some(url), _) => {
            let var = |name: &str| {
                std::env::var(name)
                    .map_err(|_| anyhow::anyhow!("--endpoint {url}: {name} is not set (the server's keys)"))
            };
            Store {
                url: url.clone(),
                bucket: args.bucket.clone().unwrap_or_else(|| BENCH_BUCKET.to_owned()),
                prefix: format!("backset-bench-{}", uuid::Uuid::new_v4().simple()),
                access_key_id: var("AWS_ACCESS_KEY_ID")?,
                secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
                server: None,
            }
        }
        (None, Some(program)) => start_s3s_fs(&program, &scratch.0.join("s3"))?,
        (None, None) => unreachable!("s3s-fs is found unless --endpoint is given"),
    };
    // The engine reads its store from the standard variables.
    for (name, value) in [
        ("AWS_ENDPOINT_URL", &store.url),
        ("AWS_ACCESS_KEY_ID", &store.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &store.secret_access_key),
    ] {
        std::env::set_var(name, value);
    }
    if std::env::var_os("AWS_REGION").is_none() {
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let result = measure(args, &store, &rclone_bin, &scratch.0);
    if store.server.is_none() {
        // A server of the operator's: remove what the bench wrote there.
        let _ = run_rclone(
            &rclone_bin,
            &store,
            &scratch.0.join("rclone.conf"),
            &["purge".as_ref(), format!(":s3:{}/{}", store.bucket, store.prefix).as_ref()],
        );
    }
    result
}

fn measure(args: &S3Args, store: &Store, rclone_bin: &Path, scratch: &Path) -> Result<()> {
    let mut cold = true;
    let wants = |m: Measure| args.measures.contains(&m);
    let versus_wanted = wants(Measure::Upload) || wants(Measure::Restore);
    let throttle_bytes = throttle_archive_bytes(&args.rates, args.throttle_seconds);
    let mut measured = Vec::new();
    let mut large = None;
    if versus_wanted && args.size_mib > 0 {
        let a = load("large", scratch, args.size_mib << 20, large_atoms(args.size_mib << 20), 4096)?;
        measured.push(versus(&a, args, store, rclone_bin, scratch, &mut cold)?);
        if wants(Measure::Throttle) && a.bytes >= throttle_bytes {
            large = Some(a);
        } else {
            a.close()?;
        }
    }
    if versus_wanted && args.small_files > 0 {
        let n = u64::from(args.small_files);
        let value_bytes = (SMALL_FILE_BYTES / KEYS_PER_ATOM - 32) as usize;
        let a = load("small", scratch, n * SMALL_FILE_BYTES, args.small_files, value_bytes)?;
        measured.push(versus(&a, args, store, rclone_bin, scratch, &mut cold)?);
        a.close()?;
    }
    let mut throttled = Vec::new();
    let mut throttle_archive = None;
    if wants(Measure::Throttle) {
        let a = match large {
            Some(a) => a,
            None => load("throttle", scratch, throttle_bytes, large_atoms(throttle_bytes), 4096)?,
        };
        throttle_archive = Some((a.name, a.bytes));
        let span = Duration::from_secs(args.throttle_seconds);
        for &rate in &args.rates {
            let t = throttle(&a, store, rate, span)?;
            progress(format_args!("{}", t.line()));
            throttled.push(t);
        }
        a.close()?;
    }
    let find = |name: &str| measured.iter().find(|m| m.name == name);

    let server = if store.server.is_some() { "s3s-fs (started by the bench)" } else { "given (--endpoint)" };
    if args.json {
        let archive = |m: &Measured| {
            serde_json::json!({
                "files": m.files, "bytes": m.bytes, "hot_copy_bytes": m.hot_copy_bytes,
                "upload": m.upload.as_ref().map(Sides::json), "restore": m.restore.as_ref().map(Sides::json),
                "hot_copy_memory": Memory::json(m.hot_copy_memory),
                "restore_memory": Memory::json(m.restore_memory),
                "rclone_upload_peak_rss_bytes": m.rclone_upload_peak,
                "rclone_download_peak_rss_bytes": m.rclone_download_peak,
            })
        };
        let throttle: Vec<_> = throttled
            .iter()
            .map(|t| {
                serde_json::json!({
                    "max_rate_mb": t.max_rate_mb, "seconds": t.seconds, "bytes": t.bytes,
                    "achieved_mb": t.achieved_mb(), "error_percent": t.error_percent(),
                    "windows_mb": t.windows, "worst_window_error_percent": t.worst_window_error_percent(),
                    "ended_early": t.ended_early,
                })
            })
            .collect();
        let json = serde_json::json!({
            "endpoint": store.url, "server": server, "runs": args.runs, "cold_cache": cold,
            "measures": args.measures.iter().map(Measure::to_string).collect::<Vec<_>>(),
            "large": find("large").map(archive),
            "small": find("small").map(archive),
            "throttle_seconds": args.throttle_seconds,
            "throttle_archive": throttle_archive.map(|(name, bytes)| serde_json::json!({ "name": name, "bytes": bytes })),
            "throttle": wants(Measure::Throttle).then_some(throttle),
        });
        println!("{json}");
        return Ok(());
    }
    println!("server {} ({server}), {} runs of each side, alternating who goes first", store.url, args.runs);
    if !cold {
        println!("warning: could not drop the page cache (needs root): the archive may have been read from it");
    }
    let mem = |what: &str, m: Option<Memory>| match m {
        Some(m) => println!(
            "  peak memory of the {what}: {:.1} MiB resident ({:.1} MiB above the {:.1} MiB before it)",
            mib(m.peak),
            mib(m.peak.saturating_sub(m.before)),
            mib(m.before)
        ),
        None => println!("  peak memory of the {what}: not measured (/proc/self/clear_refs not writable)"),
    };
    let rclone_mem = |what: &str, peak: Option<u64>| match peak {
        Some(p) => println!("  peak memory of rclone's copy {what}: {:.1} MiB resident", mib(p)),
        None => println!("  peak memory of rclone's copy {what}: not measured (its /proc/PID/status was not readable)"),
    };
    for m in &measured {
        println!("{} archive: {} files, {:.1} MiB", m.name, m.files, mib(m.bytes));
        if let Some(upload) = &m.upload {
            upload.print("  upload");
            mem("hot copy", m.hot_copy_memory);
            rclone_mem("up", m.rclone_upload_peak);
        }
        if let Some(restore) = &m.restore {
            restore.print("  restore");
            mem("restore", m.restore_memory);
            rclone_mem("down", m.rclone_download_peak);
        }
    }
    if let Some((name, bytes)) = throttle_archive {
        println!("throttle: the {name} archive, {:.1} MiB, {} s a rate", mib(bytes), args.throttle_seconds);
    }
    for t in &throttled {
        println!("{}", t.line());
    }
    Ok(())
}
