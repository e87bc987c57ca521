//! `backset serve`: the admin server (axum on tokio) with the embedded reference store. nuoadmin's hot copy
//! endpoints, paths and JSON names, plus a data API for the reference store. See docs/CLI.md for every endpoint.
//!
//! Every answer is JSON; errors are `{"code": <status>, "message": ".."}`. Blocking engine calls (commits, hot copy
//! starts) run on tokio's blocking pool, so a slow request never stalls the others; a request waiting for a hot copy
//! to end (`timeoutSec`) holds no thread (it awaits the job's [`HotCopyManager::end_signal`]), and at most
//! [`WAIT_SHARE_DIVISOR`]'s share of the connections wait at once (503 past it). Connections are capped below the
//! descriptor limit ([`connection_cap`]) and closed when idle ([`CONNECTION_IDLE_TIMEOUT`]). SIGINT or SIGTERM cancels
//! the running hot copies (each leaves its set as it was), ends the waits, lets the open requests finish (at most
//! [`SHUTDOWN_DRAIN_TIMEOUT`]), closes the store durably (checkpoint) and exits 0; nothing of it runs on the blocking
//! pool, which clients can fill.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backset_engine::hotcopy::{HotCopyError, HotCopyManager, HotCopyRequest, HotCopyStatus, HotCopyType, JobState};
use backset_engine::paths::CreateDirError;
use backset_format::limits::{MAX_RECORD_PAYLOAD_BYTES, MAX_STORAGE_GROUPS};
use backset_refstore::limits::{
    DEFAULT_RETAINED_JOURNAL_WARN_BYTES, DEFAULT_SEGMENT_BYTES, MAX_CONFIG_SEGMENT_BYTES, MAX_OPS_PER_TXN, MAX_SMS,
    MIN_SEGMENT_BYTES,
};
use backset_refstore::workload::{Workload, WorkloadConfig};
use backset_refstore::{CommitError, Config, Database, StorageGroup, StoreError, Txn};
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use crate::api::{
    wait_seconds, ApiError, HotCopyInfo, HotCopyResponse, Process, TxnResponse, API_PREFIX, MAX_STATUSES_PER_ANSWER,
    MAX_WAIT_PER_REQUEST, WAIT_PER_REQUEST_ENV,
};
use crate::cli::UsageError;
use crate::config::FileConfig;
use crate::error_bodies::{JsonErrors, MAX_REQUEST_HEADERS, MAX_REQUEST_HEAD_BYTES};
use crate::lbquery::Filter;
use crate::logging::LogFormat;

/// Largest body of `POST .../transactions`: 32 MiB, twice what its operations may hold. A commit's keys and values
/// go into one journal record of at most `MAX_RECORD_PAYLOAD_BYTES` (16 MiB) per SM, and JSON escaping can double
/// them. (A transaction spread over several SMs' storage groups could hold more; it is split by its client.)
pub const MAX_TXN_BODY_BYTES: usize = 2 * MAX_RECORD_PAYLOAD_BYTES as usize;
/// Longest path a hot copy request names, bytes: Linux's `PATH_MAX`.
pub const PATH_MAX_BYTES: usize = 4096;
/// What a hot copy request's body may take for one archive it names: its entry in `backupSetDirs` or
/// `backupLocations` (an archive and a journal directory, each up to [`PATH_MAX_BYTES`], which JSON escaping can
/// double) and its id in `archiveIds`.
pub const HOTCOPY_BODY_PER_ARCHIVE_BYTES: usize = 2 * 2 * PATH_MAX_BYTES + 64;
/// What a hot copy request's body may take besides its archives: the default directory or location (two paths) and
/// the other fields.
pub const HOTCOPY_BODY_BASE_BYTES: usize = 2 * 2 * PATH_MAX_BYTES + 1024;
/// Largest body the server reads for any endpoint (a hot copy request naming [`MAX_SMS`] archives is the largest).
pub const MAX_BODY_BYTES: usize = max(MAX_TXN_BODY_BYTES, hot_copy_body_limit(MAX_SMS));

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The largest body of a hot copy request to a server of `sms` SMs: 33 KiB for one SM.
pub const fn hot_copy_body_limit(sms: usize) -> usize {
    HOTCOPY_BODY_BASE_BYTES + sms * HOTCOPY_BODY_PER_ARCHIVE_BYTES
}

// A transaction of MAX_OPS_PER_TXN operations of the shortest JSON (`"k":"",`, 7 bytes) fits the body limit.
const _: () = assert!(MAX_OPS_PER_TXN * 7 <= MAX_TXN_BODY_BYTES);
/// Shortest bearer token `--auth-token-file` may hold: 16 characters (a shorter one is refused at start, as a usage
/// error).
pub const MIN_TOKEN_BYTES: usize = 16;
/// How long a shutdown waits for the cancelled hot copies to end.
pub const SHUTDOWN_JOBS_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the retained journal is measured for the warning.
pub const RETAINED_JOURNAL_POLL: Duration = Duration::from_secs(2);
/// Most connections the server holds open at once, whatever the descriptor limit ([`connection_cap`]). Past the cap
/// the server stops accepting: new connections wait in the kernel's listen queue ([`LISTEN_BACKLOG`]) until one
/// closes.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections take at most this share of the descriptor limit (the soft `RLIMIT_NOFILE`, raised to the hard limit
/// at start): one half, leaving the other half to journal segments, atom files, status files, hot copies (each job
/// takes up to an eighth: `backset_copier::limits::NOFILE_SHARE_DIVISOR`) and the runtime.
pub const CONNECTION_SHARE_DIVISOR: u64 = 2;
/// A connection that has not sent a whole request head within this long, counted from when it connected or from its
/// last answer, is closed: an idle keep-alive connection and a half-sent head (slowloris) alike. A request being
/// answered (a long-poll included) is not idle.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable that shortens [`CONNECTION_IDLE_TIMEOUT`] to this many milliseconds, so tests reach it in
/// seconds. Never set it outside tests.
pub const IDLE_TIMEOUT_ENV: &str = "BACKSET_TEST_IDLE_TIMEOUT_MS";
/// Requests waiting for a hot copy to end (a non-zero `timeoutSec`) take at most this share of the connection cap:
/// one half. Past it a request that asks to wait answers 503 and does nothing, so waits never take every connection.
pub const WAIT_SHARE_DIVISOR: usize = 2;
/// How long a shutdown lets the open connections finish their requests (after cancelling the hot copies and ending
/// the waits) before it closes them.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept loop pauses after an accept that failed for want of a resource (EMFILE, ENFILE, ENOMEM),
/// before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The descriptor limit assumed when it cannot be read.
const ASSUMED_NOFILE: u64 = 1024;

/// Connections the server holds at once under a descriptor limit of `nofile`: `nofile /`
/// [`CONNECTION_SHARE_DIVISOR`], at least 1 and at most [`MAX_CONNECTIONS`].
pub fn connection_cap(nofile: u64) -> usize {
    let share = if nofile == 0 { ASSUMED_NOFILE } else { nofile } / CONNECTION_SHARE_DIVISOR;
    usize::try_from(share).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS)
}

/// `enable` or `disable`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// On.
    Enable,
    /// Off.
    Disable,
}

/// Options of `backset serve`. Each can also be set in the `--config` file (a key of the same name); the command line
/// wins.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML file with any of these options (same names, without `--`), labels per SM (`[[sm]]`) and a built-in
    /// workload (`[workload]`); see docs/CLI.md. Options given here win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8888). A non-loopback address needs `--auth-token-file`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Name of the embedded database (default demo).
    #[arg(long)]
    pub db_name: Option<String>,
    /// Directory of the embedded database (`database/`) and of the hot copy statuses (`admin/`) (default
    /// backset-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of SMs (archives 0..N-1; default 1). Fixed when the database is created. Each start gives the SMs new
    /// start ids, following the last ones.
    #[arg(long, allow_negative_numbers = true, value_parser = crate::cli::count::<usize>)]
    pub sms: Option<usize>,
    /// Storage groups SG1..SGN, group i served by archive (i-1) mod sms (needs N >= sms). Fixed when the database
    /// is created. Without it every SM holds all data.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::cli::count::<usize>)]
    pub storage_groups: Option<usize>,
    /// Whether the SMs keep their journal until a journal hot copy copied it (default enable; NuoDB's default is
    /// disable).
    #[arg(long, value_enum)]
    pub journal_hot_copy: Option<Toggle>,
    /// Size at which an SM's journal segment rolls over to a new one, bytes (4 KiB to 1 GiB; default 64 MiB).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = crate::cli::count::<u64>)]
    pub journal_segment_bytes: Option<u64>,
    /// Warn when the journal kept for journal hot copies grows past this many bytes (over all SMs; default 1 GiB).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = crate::cli::count::<u64>)]
    pub retained_journal_warn_bytes: Option<u64>,
    /// File holding a bearer token every request must carry (`Authorization: Bearer <token>`). Required to listen
    /// on a non-loopback address. The token is never logged.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Format of the log on stderr: text (default; each line with its UTC time) or json (one JSON object a line).
    /// The level is RUST_LOG's (default info).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The options in force: the command line over the config file over the defaults.
#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    db_name: String,
    data_dir: PathBuf,
    sms: usize,
    storage_groups: Option<usize>,
    journal_hot_copy: Toggle,
    /// Per SM (archive id order) when the config file gives it per SM and the command line does not override it.
    journal_hot_copy_per_sm: Option<Vec<Toggle>>,
    journal_segment_bytes: u64,
    retained_journal_warn_bytes: u64,
    auth_token_file: Option<PathBuf>,
    log_format: LogFormat,
    /// Extra labels per archive id.
    labels: Vec<BTreeMap<String, String>>,
    workload: Option<WorkloadConfig>,
}

/// Labels the server sets itself; the config file may not override them.
const RESERVED_LABELS: [&str; 2] = ["archive-id", "storage-groups"];

impl Settings {
    fn resolve(args: &Args) -> Result<Self> {
        let file = match &args.config {
            Some(p) => crate::config::load(p)?,
            None => FileConfig::default(),
        };
        let cfg = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let usage = |msg: String| anyhow::Error::new(UsageError(format!("config file {cfg}: {msg}")));
        let sms = args.sms.or(file.sms).unwrap_or(1);
        let journal_hot_copy = args.journal_hot_copy.or(file.journal_hot_copy);
        if !file.sm.is_empty() && file.sm.len() != sms {
            return Err(usage(format!("{} [[sm]] tables for {sms} SMs: give one per SM, or none", file.sm.len())));
        }
        // The command line's --journal-hot-copy applies to every SM; else each [[sm]]'s own, else the file's.
        let journal_hot_copy_per_sm = (args.journal_hot_copy.is_none()
            && file.sm.iter().any(|s| s.journal_hot_copy.is_some()))
        .then(|| file.sm.iter().map(|s| s.journal_hot_copy.or(journal_hot_copy).unwrap_or(Toggle::Enable)).collect());
        let mut labels = Vec::with_capacity(file.sm.len());
        for (i, sm) in file.sm.iter().enumerate() {
            if let Some(k) = sm.labels.keys().find(|k| RESERVED_LABELS.contains(&k.as_str())) {
                return Err(usage(format!("[[sm]] {i}: the label {k:?} is set by the server; choose another name")));
            }
            labels.push(sm.labels.clone());
        }
        let workload = match file.workload {
            None => None,
            Some(w) => {
                let c = WorkloadConfig {
                    seed: w.seed.unwrap_or(1),
                    threads: w.threads.unwrap_or(1),
                    rate_txns_per_second: w.rate,
                    key_space: w.key_space.unwrap_or(1000),
                    value_bytes: {
                        let n = w.value_bytes.unwrap_or(64);
                        n..=n
                    },
                    delete_fraction: w.delete_fraction.unwrap_or(0.2),
                    ..WorkloadConfig::default()
                };
                if !(1..=64).contains(&c.threads) {
                    return Err(usage(format!("workload.threads {}: give 1 to 64", c.threads)));
                }
                if c.key_space == 0 {
                    return Err(usage("workload.key-space 0: give at least 1".into()));
                }
                if !(1..=1 << 20).contains(w.value_bytes.as_ref().unwrap_or(&64)) {
                    return Err(usage("workload.value-bytes: give 1 to 1048576".into()));
                }
                if !(0.0..=1.0).contains(&c.delete_fraction) {
                    return Err(usage(format!("workload.delete-fraction {}: give 0 to 1", c.delete_fraction)));
                }
                if c.rate_txns_per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                    return Err(usage("workload.rate: give a positive number of transactions per second".into()));
                }
                Some(c)
            }
        };
        let settings = Self {
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8888))),
            db_name: args.db_name.clone().or(file.db_name).unwrap_or_else(|| "demo".into()),
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("backset-data")),
            sms,
            storage_groups: args.storage_groups.or(file.storage_groups),
            journal_hot_copy: journal_hot_copy.unwrap_or(Toggle::Enable),
            journal_hot_copy_per_sm,
            journal_segment_bytes: args
                .journal_segment_bytes
                .or(file.journal_segment_bytes)
                .unwrap_or(DEFAULT_SEGMENT_BYTES),
            retained_journal_warn_bytes: args
                .retained_journal_warn_bytes
                .or(file.retained_journal_warn_bytes)
                .unwrap_or(DEFAULT_RETAINED_JOURNAL_WARN_BYTES),
            auth_token_file: args.auth_token_file.clone().or(file.auth_token_file),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            labels,
            workload,
        };
        settings.check_ranges()?;
        Ok(settings)
    }

    /// Refuses, as usage errors naming the option, the values the store would refuse when it opens.
    fn check_ranges(&self) -> Result<()> {
        let usage = |msg: String| Err(anyhow::Error::new(UsageError(msg)));
        if !(1..=MAX_SMS).contains(&self.sms) {
            return usage(format!("--sms {}: give 1 to {MAX_SMS} SMs", self.sms));
        }
        if let Some(n) = self.storage_groups {
            if !(self.sms..=MAX_STORAGE_GROUPS).contains(&n) {
                return usage(format!(
                    "--storage-groups {n}: give at least one group per SM (--sms {}) and at most {MAX_STORAGE_GROUPS}",
                    self.sms
                ));
            }
        }
        if !(MIN_SEGMENT_BYTES..=MAX_CONFIG_SEGMENT_BYTES).contains(&self.journal_segment_bytes) {
            return usage(format!(
                "--journal-segment-bytes {}: give {MIN_SEGMENT_BYTES} to {MAX_CONFIG_SEGMENT_BYTES} bytes",
                self.journal_segment_bytes
            ));
        }
        Ok(())
    }
}

/// The server's shared state.
struct App {
    db: Arc<Database>,
    manager: HotCopyManager,
    base_uri: String,
    /// The listen address (the processes' `address` and `port`).
    listen: SocketAddr,
    hostname: String,
    token: Option<String>,
    /// Extra labels per archive id (the config file's `[[sm]]` tables).
    labels: Vec<BTreeMap<String, String>>,
    /// Longest a single request waits for a hot copy ([`MAX_WAIT_PER_REQUEST`]).
    wait_per_request: Duration,
    /// Requests waiting for a hot copy now, and the most that may ([`WAIT_SHARE_DIVISOR`]).
    waits: AtomicUsize,
    max_waits: usize,
    /// `true` once the server stops: every wait ends and answers the status as it is.
    stopping: watch::Sender<bool>,
}

/// Runs `backset serve` until SIGINT or SIGTERM.
pub fn run(args: &Args) -> Result<()> {
    let args = &Settings::resolve(args)?;
    crate::logging::init(args.log_format, tracing_subscriber::filter::LevelFilter::INFO, true);
    if !args.listen.ip().is_loopback() && args.auth_token_file.is_none() {
        bail!(
            "listening on {} (not a loopback address) needs --auth-token-file: anyone who reaches it could start \
             and cancel hot copies and write data",
            args.listen
        );
    }
    let token = match &args.auth_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let token = text.trim().to_string();
            ensure!(!token.is_empty(), "the auth token file {} is empty", path.display());
            ensure!(
                token.chars().all(|c| c.is_ascii_graphic()),
                "the auth token in {} must be printable ASCII without spaces",
                path.display()
            );
            if token.len() < MIN_TOKEN_BYTES {
                return Err(UsageError(format!(
                    "the auth token in {} has {} characters, fewer than {MIN_TOKEN_BYTES}: a short token can be \
                     guessed; write a longer one (e.g. `head -c 24 /dev/urandom | base64 > {}`)",
                    path.display(),
                    token.len(),
                    path.display()
                ))
                .into());
            }
            Some(token)
        }
        None => None,
    };
    let mut config = Config::new(args.db_name.clone());
    config.sms = args.sms;
    config.journal_hot_copy = args.journal_hot_copy == Toggle::Enable;
    config.journal_hot_copy_per_sm =
        args.journal_hot_copy_per_sm.as_ref().map(|v| v.iter().map(|&t| t == Toggle::Enable).collect());
    config.segment_bytes = args.journal_segment_bytes;
    if let Some(n) = args.storage_groups {
        config.storage_groups = Some(
            (1..=n)
                .map(|i| StorageGroup {
                    id: i as u32,
                    name: format!("SG{i}"),
                    archives: vec![((i - 1) % args.sms) as u64],
                })
                .collect(),
        );
    }
    // At start, not at the first hot copy: connections and journal segments share the limit from the first moment.
    let nofile = backset_copier::limits::raise_nofile_limit();
    let max_connections = connection_cap(nofile);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("backset-serve")
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // Registered before anything else: a SIGINT or SIGTERM during the start (a client that found the port open may
    // send one at once) is held and stops the server cleanly once it runs.
    let signals = {
        let _runtime = rt.enter();
        Signals::register()
    };
    // Bound before the database is opened, so a serve that cannot have its address leaves nothing in the data
    // directory; it listens (and so accepts connections) only once the database is open, as before.
    let socket = bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    backset_engine::lock::set_program_name("backset serve");
    let db_root = args.data_dir.join("database");
    let db = Arc::new(
        Database::open(&db_root, config).with_context(|| format!("open the database in {}", db_root.display()))?,
    );
    let manager = HotCopyManager::new(db.hot_copy_archives(), args.data_dir.join("admin"))
        .context("start the hot copy manager")?;
    let app = Arc::new(App {
        db: Arc::clone(&db),
        manager: manager.clone(),
        base_uri: format!("http://{}", args.listen),
        listen: args.listen,
        hostname: hostname(),
        token,
        labels: args.labels.clone(),
        wait_per_request: wait_per_request(),
        waits: AtomicUsize::new(0),
        max_waits: (max_connections / WAIT_SHARE_DIVISOR).max(1),
        stopping: watch::Sender::new(false),
    });
    let mut workload: Option<Workload> = None;
    let served = rt.block_on(async {
        tracing::info!(
            "database {} ({} SM{}, journal-hot-copy {}) in {}; admin API on http://{}{}",
            db.name(),
            args.sms,
            if args.sms == 1 { "" } else { "s" },
            match (&args.journal_hot_copy_per_sm, args.journal_hot_copy) {
                (Some(_), _) => "set per SM",
                (None, Toggle::Enable) => "enabled",
                (None, Toggle::Disable) => "disabled",
            },
            db_root.display(),
            args.listen,
            if app.token.is_some() { " (bearer token required)" } else { "" }
        );
        tracing::info!(
            "descriptor limit {nofile}: at most {max_connections} connections, {} of them waiting for hot copies; \
             idle connections close after {:?}",
            app.max_waits,
            idle_timeout()
        );
        for archive in db.archives() {
            let id = archive.archive_id();
            let groups: Vec<u32> = archive.group_ids().to_vec();
            tracing::info!(
                "SM start id {} serves archive {id} in {}{}{}",
                manager.start_id(id).unwrap_or_default(),
                backset_engine::archive::Archive::dir(archive.as_ref()).display(),
                if groups.is_empty() { String::new() } else { format!(" (storage groups {groups:?})") },
                if args.journal_hot_copy_per_sm.is_some() {
                    let on = db.config().journal_hot_copy_of(id as usize);
                    format!(", journal-hot-copy {}", if on { "enabled" } else { "disabled" })
                } else {
                    String::new()
                }
            );
        }
        if let Some(w) = &args.workload {
            tracing::info!(
                "workload: {} thread{}, {}, {} keys, {}-byte values, delete fraction {}",
                w.threads,
                if w.threads == 1 { "" } else { "s" },
                w.rate_txns_per_second.map_or("unthrottled".to_string(), |r| format!("{r} transactions/s")),
                w.key_space,
                w.value_bytes.start(),
                w.delete_fraction
            );
            workload = Some(Workload::start(Arc::clone(&db), w.clone()));
        }
        tokio::spawn(watch_retained_journal(Arc::clone(&db), args.retained_journal_warn_bytes));
        // Last: once the port accepts connections, the lines above are out.
        let listener = socket.listen(LISTEN_BACKLOG).with_context(|| format!("listen on {}", args.listen))?;
        serve(listener, router(Arc::clone(&app)), max_connections, shutdown_signal(Arc::clone(&app), signals)).await;
        Ok::<(), anyhow::Error>(())
    });
    let left = manager.shutdown(SHUTDOWN_JOBS_TIMEOUT);
    // The workload stops before the store closes: its last commits are acknowledged and durable.
    if let Some(w) = workload {
        let report = w.stop();
        tracing::info!(
            "workload stopped: {} committed{}",
            crate::text::counted(report.acked.len() as u64, "transaction"),
            report.errors.first().map_or(String::new(), |e| format!("; error: {e}"))
        );
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    db.close().context("close the database")?;
    served?;
    tracing::info!(
        "server stopped; database closed{}",
        if left == 0 {
            String::new()
        } else {
            format!(" ({} did not end in time)", crate::text::plural(left as u64, "hot copy", "hot copies"))
        }
    );
    Ok(())
}

/// [`MAX_WAIT_PER_REQUEST`], or what [`WAIT_PER_REQUEST_ENV`] sets (tests).
fn wait_per_request() -> Duration {
    std::env::var(WAIT_PER_REQUEST_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(MAX_WAIT_PER_REQUEST, Duration::from_millis)
}

/// The host name for the process list.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// [`CONNECTION_IDLE_TIMEOUT`], or what [`IDLE_TIMEOUT_ENV`] sets (tests).
fn idle_timeout() -> Duration {
    std::env::var(IDLE_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(CONNECTION_IDLE_TIMEOUT, Duration::from_millis)
}

/// Waits for SIGINT or SIGTERM, then cancels every running hot copy (so requests waiting on them see them end) and
/// ends the waits that remain, before the server stops taking requests. The cancel runs on a thread of its own, not
/// on the blocking pool: clients can fill that pool (commits waiting on a stalled journal), and a shutdown must not
/// queue behind them.
async fn shutdown_signal(app: Arc<App>, signals: Signals) {
    let name = signals.wait().await;
    tracing::info!("{name}: cancelling running hot copies and closing the database");
    let (done, cancelled) = tokio::sync::oneshot::channel();
    let manager = app.manager.clone();
    let spawned = std::thread::Builder::new().name("backset-shutdown".into()).spawn(move || {
        manager.shutdown(SHUTDOWN_JOBS_TIMEOUT);
        let _ = done.send(());
    });
    match spawned {
        // The manager is shut down again once the server stopped; here it only lets the waits see the jobs end.
        Err(e) => tracing::warn!(
            "cannot start the shutdown thread ({e}); the hot copies are cancelled after the server stopped"
        ),
        Ok(_) => drop(cancelled.await),
    }
    app.stopping.send_replace(true);
}

/// Serves `router` on `listener` until `shutdown` completes: at most `max_connections` connections at once (past it
/// new ones wait in the listen queue), each closed when idle for [`idle_timeout`]. Then it stops accepting, lets the
/// open connections finish their requests (idle ones close at once) for at most [`SHUTDOWN_DRAIN_TIMEOUT`], and
/// returns.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let idle = idle_timeout();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle)
                .max_header_size(MAX_REQUEST_HEAD_BYTES)
                .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                .max_headers(MAX_REQUEST_HEADERS);
            // hyper's own answers to a head it cannot parse get the server's JSON error body.
            let io = hyper_util::rt::TokioIo::new(JsonErrors::new(stream));
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    closing.send_replace(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(
            "{} still open after {SHUTDOWN_DRAIN_TIMEOUT:?}; closing them",
            crate::text::counted((max_connections - slots.available_permits()) as u64, "connection")
        );
    }
}

/// After a failed accept: nothing for an error of that one connection (the client left); a pause for a shortage of
/// descriptors or memory, so the loop does not spin, with a warning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused) {
        return;
    }
    tracing::warn!(
        "cannot accept a connection: {e}; trying again in {ACCEPT_ERROR_PAUSE:?} (raise the descriptor limit, \
         `ulimit -n`, if this repeats)"
    );
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Connections waiting to be accepted, at most (tokio's `TcpListener::bind` uses the same).
const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr` but not listening yet. Binding fails (`Address already in use`) when another socket
/// listens there; `SO_REUSEADDR` lets a restart bind while connections of the previous process linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// SIGINT and SIGTERM, caught from the moment they are registered (one that arrives before [`Signals::wait`] is
/// held for it).
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Registers both; must run inside the runtime.
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self(signal(SignalKind::interrupt()).ok().zip(signal(SignalKind::terminate()).ok()))
    }

    /// Waits for either; returns its name.
    async fn wait(self) -> &'static str {
        match self.0 {
            Some((mut int, mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            None => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

/// Warns on stderr when the journal kept for journal hot copies grows past `limit`, and again after it fell back.
async fn watch_retained_journal(db: Arc<Database>, limit: u64) {
    let mut warned = false;
    let mut tick = tokio::time::interval(RETAINED_JOURNAL_POLL);
    loop {
        tick.tick().await;
        let bytes = db.retained_journal_bytes();
        if bytes > limit && !warned {
            tracing::warn!(
                "{bytes} bytes of journal are kept for journal hot copies (limit {limit}); run \
                 a journal hot copy of each SM's backup set, or restart with --journal-hot-copy disable"
            );
            warned = true;
        } else if bytes <= limit {
            warned = false;
        }
    }
}

/// The routes.
fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/databases/{db}/hotCopy", post(hot_copy))
        .route("/databases/{db}/hotCopySimple", post(hot_copy_simple))
        .route("/databases/{db}/hotCopyStatus", get(database_status))
        .route("/databases/hotCopyStatus", get(status))
        .route("/databases/cancelHotCopy", post(cancel))
        .route("/processes", get(processes))
        .route("/databases/{db}/transactions", post(transaction))
        .route("/databases/{db}/keys/{key}", get(key));
    Router::new()
        .nest(API_PREFIX, api)
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "no such endpoint; see docs/CLI.md for the API") })
        .method_not_allowed_fallback(|| async {
            HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "this endpoint does not take that method")
        })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), authorize))
        // Every body is read by `JsonBody`, within its endpoint's limit; this bounds any other reader.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// An error answer.
#[derive(Debug)]
struct HttpError(StatusCode, String);

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!(status = self.0.as_u16(), "request failed: {}", self.1);
        }
        (self.0, Json(ApiError { code: self.0.as_u16(), message: self.1 })).into_response()
    }
}

impl From<HotCopyError> for HttpError {
    fn from(e: HotCopyError) -> Self {
        let status = match &e {
            HotCopyError::Request { .. } | HotCopyError::MissingStorageGroups { .. } => StatusCode::BAD_REQUEST,
            HotCopyError::NotFound { .. } => StatusCode::NOT_FOUND,
            HotCopyError::AlreadyRunning { .. }
            | HotCopyError::NeedsFull { .. }
            | HotCopyError::FullRunning { .. }
            | HotCopyError::NeedsFullForJournal { .. }
            | HotCopyError::JournalChainMoved { .. }
            | HotCopyError::JournalDisabled { .. }
            | HotCopyError::NotEmpty { .. }
            | HotCopyError::NotADirectory { .. }
            | HotCopyError::CreateDir(CreateDirError::MissingParent { .. })
            | HotCopyError::Stopped { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, backset_engine::hotcopy::error_chain(&e))
    }
}

impl From<CommitError> for HttpError {
    fn from(e: CommitError) -> Self {
        let status = match &e {
            CommitError::Store(StoreError::Closed { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            CommitError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self(status, backset_engine::hotcopy::error_chain(&e))
    }
}

type Reply<T> = Result<Json<T>, HttpError>;

/// Runs a blocking engine call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("request failed: {e}"))))
}

/// Checks the bearer token when the server has one, in time independent of the given token (its length and where it
/// differs).
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 9110, 11.1); the token is not.
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim_start());
        // The hashes of both are compared (in constant time, by `blake3::Hash`'s `==`): the time taken does not
        // depend on the given token's length nor on where it differs.
        let same = blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes());
        if !same {
            let mut r = HttpError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <token>` (the CLI reads it from \
                 --api-token-file or BACKSET_AUTH_TOKEN)",
            )
            .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// `http://<Host header>` when the request names a plausible host, else the listen address: the base of the `uri`
/// links (right behind a proxy, and when listening on 0.0.0.0).
fn base_uri(app: &App, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h)
            if !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)) =>
        {
            format!("http://{h}")
        }
        _ => app.base_uri.clone(),
    }
}

fn check_db(app: &App, db: &str) -> Result<(), HttpError> {
    if db == app.db.name() {
        Ok(())
    } else {
        Err(HttpError::new(StatusCode::NOT_FOUND, format!("no database {db:?}; this server runs {:?}", app.db.name())))
    }
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, HttpError> {
    p.map(|Path(v)| v).map_err(|e| HttpError::bad(format!("bad path: {}", e.body_text())))
}

/// What a request body may hold: the most bytes an endpoint reads ([`JsonBody`]).
trait BodyLimit {
    /// What the body is, for the answer to one over the limit (`a transaction`).
    const WHAT: &'static str;
    /// The most bytes a body of this server may take.
    fn max_bytes(app: &App) -> usize;
}

/// A JSON request body of type `T`: the one extractor of every endpoint that takes a body. It reads at most
/// `T::max_bytes`: a larger `Content-Length` is answered 413 before anything of the body is read, a body without one
/// (chunked) as soon as it passes the limit; the JSON is parsed only then.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned + BodyLimit> axum::extract::FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, HttpError> {
        use axum::body::HttpBody;
        let limit = T::max_bytes(app);
        let too_large = |size: Option<u64>| {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body{} is over the limit of {limit} bytes for {}; see docs/CLI.md for each \
                     endpoint's limit",
                    size.map_or(String::new(), |s| format!(" ({s} bytes)")),
                    T::WHAT
                ),
            )
        };
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(len) = declared.filter(|&len| len > limit as u64) {
            return Err(too_large(Some(len)));
        }
        let mut stream = req.into_body();
        let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
        while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_frame(cx)).await {
            let frame =
                frame.map_err(|e| HttpError::bad(format!("cannot read the request body: {e}; send it again")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(too_large(None));
                }
                bytes.extend_from_slice(&data);
            }
        }
        body(&bytes).map(JsonBody)
    }
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, HttpError> {
    // Through serde_path_to_error, so that a wrong type names its field (serde_json alone says only where).
    let mut de = serde_json::Deserializer::from_slice(b);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let field = if at == "." { String::new() } else { format!("field {at}: ") };
        HttpError::bad(format!("bad JSON body: {field}{}", e.inner()))
    })?;
    // Nothing but white space may follow the value (as serde_json::from_slice requires).
    de.end().map_err(|e| HttpError::bad(format!("bad JSON body: {e}")))?;
    Ok(value)
}

/// A whole number given as a JSON number or as a string of one (nuocmd sends `"maxRate": "1000000"`); `null` is
/// none.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let expected = "a whole number, zero or more (a JSON number or a string of digits)";
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            n.as_u64().map(Some).ok_or_else(|| D::Error::custom(format!("{n} is not {expected}")))
        }
        serde_json::Value::String(t) => {
            t.trim().parse().map(Some).map_err(|_| D::Error::custom(format!("{t:?} is not {expected}")))
        }
        other => Err(D::Error::custom(format!("{other} is not {expected}"))),
    }
}

/// A number given as a JSON number or as a string of one; `null` is none.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    let expected = "a number (a JSON number or a string of one)";
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            n.as_f64().map(Some).ok_or_else(|| D::Error::custom(format!("{n} is not {expected}")))
        }
        serde_json::Value::String(t) => {
            t.trim().parse().map(Some).map_err(|_| D::Error::custom(format!("{t:?} is not {expected}")))
        }
        other => Err(D::Error::custom(format!("{other} is not {expected}"))),
    }
}

/// A JSON object's entries in order, keeping keys given twice (a map would keep the last silently).
fn entries<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Entries<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object keyed by archive id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Entries(std::marker::PhantomData))
}

/// Archive ids of `field`'s entries, refusing an archive named twice (`"0"` twice, or `"0"` and `"00"`).
fn archive_entries<V>(field: &str, list: Vec<(String, V)>) -> Result<Vec<(u64, V)>, HttpError> {
    let mut out: Vec<(u64, V)> = Vec::with_capacity(list.len());
    let mut keys: Vec<String> = Vec::with_capacity(list.len());
    for (key, v) in list {
        let a = archive_id(&key)?;
        if let Some(i) = out.iter().position(|(b, _)| *b == a) {
            return Err(HttpError::bad(format!(
                "archive {a} is named twice in {field} (as {:?} and {key:?}); give each archive once",
                keys[i]
            )));
        }
        out.push((a, v));
        keys.push(key);
    }
    Ok(out)
}

/// Query parameters that name a list, so they may be given more than once (nuoadmin's paging, [`crate::paging`]:
/// each occurrence adds its comma-separated names).
const LIST_PARAMS: [&str; 3] = ["filterBy", "orderBy", "descendingFields"];

/// A request's query parameters, in order: the one extractor of every endpoint that takes a query. A parameter
/// given twice (but those of [`LIST_PARAMS`]) is refused with 400 naming it: which of the two should count would be
/// a guess (`?hotCopyId=a&hotCopyId=b` used to take the last one silently).
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, HttpError> {
        let Query(list) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e: QueryRejection| HttpError::bad(format!("bad query string: {}", e.body_text())))?;
        for (i, (name, _)) in list.iter().enumerate() {
            if !LIST_PARAMS.contains(&name.as_str()) && list[..i].iter().any(|(k, _)| k == name) {
                return Err(HttpError::bad(format!(
                    "the query parameter {name} is given more than once; give it once"
                )));
            }
        }
        Ok(Self(list))
    }
}

impl Params {
    /// The value of `name`, if given.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` parsed as `what`, if given.
    fn param<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, HttpError> {
        self.get(name)
            .map(|v| v.parse::<T>().map_err(|_| HttpError::bad(format!("{name}={v:?} is not {what}"))))
            .transpose()
    }

    /// As [`param`](Self::param), for a parameter the endpoint needs.
    fn required<T: FromStr>(&self, name: &str, what: &str) -> Result<T, HttpError> {
        self.param(name, what)?.ok_or_else(|| HttpError::bad(format!("give the query parameter {name} ({what})")))
    }
}

/// A request's `timeoutSec`: any number of seconds, zero or more, without an upper bound.
fn timeout(secs: Option<f64>) -> Result<Option<Duration>, HttpError> {
    secs.map(|s| {
        wait_seconds(s).ok_or_else(|| {
            HttpError::bad(format!("timeoutSec {s} is not a number of seconds; give a finite number, zero or more"))
        })
    })
    .transpose()
}

/// What one request waits of its `timeoutSec`: at most the server's step ([`MAX_WAIT_PER_REQUEST`]); zero and no
/// `timeoutSec` do not wait.
fn this_wait(app: &App, wait: Option<Duration>) -> Option<Duration> {
    wait.filter(|w| !w.is_zero()).map(|w| w.min(app.wait_per_request))
}

/// The answer to a hot copy started without a wait: nuoadmin's `coordinatorStartId`, `hotCopyId` and `uri` only (nuocmd
/// prints every field it gets: `HotCopyResponse(coordinator_start_id=1, id=..)`); the status is at the `uri`.
fn started_answer(status: &HotCopyStatus, base: &str) -> Response {
    let r = HotCopyResponse::from_status(status, base);
    Json(serde_json::json!({
        "coordinatorStartId": r.coordinator_start_id,
        "hotCopyId": r.hot_copy_id,
        "uri": r.uri,
    }))
    .into_response()
}

/// A hot copy's answer after a request's wait: HTTP 408 with the HotCopyResponse when the request waited and the hot
/// copy still runs (nuoadmin's answer to a `timeoutSec` that ran out; the hot copy keeps running), else 200.
fn hot_copy_answer(status: &HotCopyStatus, base: &str, waited: Option<Duration>) -> Response {
    let code = if waited.is_some() && status.status == JobState::Running {
        StatusCode::REQUEST_TIMEOUT
    } else {
        StatusCode::OK
    };
    (code, Json(HotCopyResponse::from_status(status, base))).into_response()
}

/// A request's `maxRate` (bytes per second): 0 would hold the job forever (the engine's paused budget), so it is
/// refused here.
fn max_rate(rate: Option<u64>) -> Result<Option<u64>, HttpError> {
    if rate == Some(0) {
        return Err(HttpError::bad(
            "maxRate 0 would never copy a byte; give a positive rate in bytes per second, or leave maxRate out to \
             use the SM's budget alone",
        ));
    }
    Ok(rate)
}

fn archive_id(key: &str) -> Result<u64, HttpError> {
    key.parse().map_err(|_| HttpError::bad(format!("archive id {key:?} is not a number")))
}

/// The body of `POST /databases/{db}/hotCopy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HotCopyBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    shared: bool,
    default_backup_set_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "entries")]
    backup_set_dirs: Vec<(String, PathBuf)>,
    #[serde(default, deserialize_with = "whole_number")]
    max_rate: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    timeout_sec: Option<f64>,
    check_contains_all_sgs: Option<bool>,
    /// Backset: the archives a process filter selected (the CLI's `--process-filter`).
    archive_ids: Option<Vec<u64>>,
}

/// A simple hot copy's location: the archive copy, and its journal directory when not `<copyArchiveDir>/journal`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Location {
    copy_archive_dir: PathBuf,
    copy_journal_dir: Option<PathBuf>,
}

/// The body of `POST /databases/{db}/hotCopySimple`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimpleBody {
    default_backup_location: Option<Location>,
    #[serde(default, deserialize_with = "entries")]
    backup_locations: Vec<(String, Location)>,
    #[serde(default, deserialize_with = "whole_number")]
    max_rate: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    timeout_sec: Option<f64>,
    check_contains_all_sgs: Option<bool>,
    archive_ids: Option<Vec<u64>>,
}

/// Starts a request and answers its status, after waiting up to `wait` (at most the server's step) for it to end.
async fn start(
    app: Arc<App>,
    base: String,
    req: HotCopyRequest,
    wait: Option<Duration>,
) -> Result<Response, HttpError> {
    let wait = this_wait(&app, wait);
    // Taken before the start: a request refused for want of a wait slot starts nothing.
    let slot = wait.map(|_| WaitSlot::take(&app)).transpose()?;
    let manager = app.manager.clone();
    let (start_id, id) = blocking(move || Ok(manager.start(req)?)).await?;
    if let (Some(w), Some(_slot)) = (wait, slot) {
        wait_for_end(&app, start_id, id, w).await?;
    }
    let status = app.manager.status(start_id, id, None)?;
    Ok(match wait {
        None => started_answer(&status, &base),
        Some(_) => hot_copy_answer(&status, &base, wait),
    })
}

/// A request's place among those waiting for a hot copy to end ([`App::max_waits`]); given back when dropped.
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    /// A slot, or 503 when every one is taken.
    fn take(app: &'a App) -> Result<Self, HttpError> {
        if app.waits.fetch_add(1, Ordering::SeqCst) >= app.max_waits {
            app.waits.fetch_sub(1, Ordering::SeqCst);
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} requests are waiting for hot copies to end, the most this server holds at once; nothing was \
                     done: ask again later, or without timeoutSec (the status as it is)",
                    app.max_waits
                ),
            ));
        }
        Ok(Self(&app.waits))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits, without holding a thread, until the hot copy ends, `wait` passes or the server stops. A client that
/// disconnects ends it too (its connection drops the request).
async fn wait_for_end(app: &App, start_id: u64, id: Uuid, wait: Duration) -> Result<(), HttpError> {
    let mut ended = app.manager.end_signal(start_id, id)?;
    let mut stopping = app.stopping.subscribe();
    tokio::select! {
        _ = ended.wait_for(|e| *e) => {}
        _ = stopping.wait_for(|s| *s) => {}
        () = tokio::time::sleep(wait) => {}
    }
    Ok(())
}

async fn hot_copy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    db: Result<Path<String>, PathRejection>,
    JsonBody(b): JsonBody<HotCopyBody>,
) -> Result<Response, HttpError> {
    check_db(&app, &path(db)?)?;
    let kind = HotCopyType::from_str(&b.kind).map_err(|e| HttpError::bad(e.to_string()))?;
    if kind == HotCopyType::Simple {
        return Err(HttpError::bad("a simple hot copy is started with POST .../hotCopySimple"));
    }
    let mut req = HotCopyRequest::new(kind)
        .shared(b.shared)
        .max_rate(max_rate(b.max_rate)?)
        .partial_storage_groups(!b.check_contains_all_sgs.unwrap_or(true));
    for (a, dir) in archive_entries("backupSetDirs", b.backup_set_dirs)? {
        req = req.backup_dir(a, dir);
    }
    if let Some(d) = b.default_backup_set_dir {
        req = req.default_dir(d);
    }
    if let Some(ids) = b.archive_ids {
        req = req.archives(ids);
    }
    let base = base_uri(&app, &headers);
    start(app, base, req, timeout(b.timeout_sec)?).await
}

async fn hot_copy_simple(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    db: Result<Path<String>, PathRejection>,
    JsonBody(b): JsonBody<SimpleBody>,
) -> Result<Response, HttpError> {
    check_db(&app, &path(db)?)?;
    let mut req = HotCopyRequest::new(HotCopyType::Simple)
        .max_rate(max_rate(b.max_rate)?)
        .partial_storage_groups(!b.check_contains_all_sgs.unwrap_or(true));
    // A copyJournalDir apart from <copyArchiveDir>/journal is checked by the engine (400 when it is the archive
    // directory or inside it).
    for (a, loc) in archive_entries("backupLocations", b.backup_locations)? {
        req = req.backup_dir(a, loc.copy_archive_dir);
        if let Some(j) = loc.copy_journal_dir {
            req = req.journal_dir(a, j);
        }
    }
    if let Some(loc) = b.default_backup_location {
        req = req.default_dir(loc.copy_archive_dir);
        if let Some(j) = loc.copy_journal_dir {
            req = req.default_journal_dir(j);
        }
    }
    if let Some(ids) = b.archive_ids {
        req = req.archives(ids);
    }
    let base = base_uri(&app, &headers);
    start(app, base, req, timeout(b.timeout_sec)?).await
}

/// The `HotCopyInfo` of `statuses` (each SM's oldest first): the newest [`MAX_STATUSES_PER_ANSWER`] of each SM, with
/// how many older ones it leaves out.
fn info(base: &str, statuses: BTreeMap<u64, Vec<backset_engine::hotcopy::HotCopyStatus>>) -> HotCopyInfo {
    let mut info = HotCopyInfo::default();
    for (sm, list) in statuses {
        let left_out = list.len().saturating_sub(MAX_STATUSES_PER_ANSWER);
        if left_out > 0 {
            info.omitted.insert(sm, left_out);
        }
        info.hot_copy_statuses
            .insert(sm, list[left_out..].iter().map(|s| HotCopyResponse::from_status(s, base)).collect());
    }
    info
}

/// `GET /databases/hotCopyStatus?coordinatorStartId=N[&hotCopyId=ID][&timeoutSec=s]`: one hot copy (a
/// `HotCopyResponse`), or without `hotCopyId` every hot copy of that SM (a `HotCopyInfo`).
async fn status(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Result<Response, HttpError> {
    let start_id: u64 = q.required("coordinatorStartId", "a start id")?;
    let wait = this_wait(&app, timeout(q.param("timeoutSec", "a number of seconds")?)?);
    let base = base_uri(&app, &headers);
    match q.param::<Uuid>("hotCopyId", "a hot copy id")? {
        Some(id) => {
            if let Some(w) = wait {
                let _slot = WaitSlot::take(&app)?;
                wait_for_end(&app, start_id, id, w).await?;
            }
            let s = app.manager.status(start_id, id, None)?;
            Ok(hot_copy_answer(&s, &base, wait))
        }
        None => {
            // Every start id handed out names an SM, of this start or an earlier one (whose jobs keep its id).
            if start_id == 0 || start_id > app.manager.last_start_id() {
                return Err(HttpError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no SM with start id {start_id}: the SMs have had start ids 1 to {}; see `get processes`",
                        app.manager.last_start_id()
                    ),
                ));
            }
            let list = app.manager.statuses_by_start_id(None).remove(&start_id).unwrap_or_default();
            Ok(Json(info(&base, BTreeMap::from([(start_id, list)]))).into_response())
        }
    }
}

/// `GET /databases/{db}/hotCopyStatus[?minSecondsRunning=s]`.
async fn database_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    db: Result<Path<String>, PathRejection>,
    q: Params,
) -> Reply<HotCopyInfo> {
    check_db(&app, &path(db)?)?;
    let running_for = match q.param::<f64>("minSecondsRunning", "a number of seconds")? {
        Some(s) if (0.0..1e12).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => return Err(HttpError::bad(format!("minSecondsRunning {s} must be a non-negative number"))),
        None => None,
    };
    Ok(Json(info(&base_uri(&app, &headers), app.manager.statuses_by_start_id(running_for))))
}

/// `POST /databases/cancelHotCopy?coordinatorStartId=N&hotCopyId=ID[&timeoutSec=s]`.
async fn cancel(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Result<Response, HttpError> {
    let start_id: u64 = q.required("coordinatorStartId", "a start id")?;
    let id: Uuid = q.required("hotCopyId", "a hot copy id")?;
    let wait = this_wait(&app, timeout(q.param("timeoutSec", "a number of seconds")?)?);
    let base = base_uri(&app, &headers);
    let _slot = wait.map(|_| WaitSlot::take(&app)).transpose()?;
    // Not blocking: a cancel only marks the job (its threads see it and end).
    app.manager.cancel(start_id, id, None)?;
    if let Some(w) = wait {
        wait_for_end(&app, start_id, id, w).await?;
    }
    let s = app.manager.status(start_id, id, None)?;
    Ok(hot_copy_answer(&s, &base, wait))
}

/// Every SM of the embedded database.
fn all_processes(app: &App) -> Vec<Process> {
    let groups = app.db.meta().storage_groups.clone().unwrap_or_default();
    app.manager
        .archive_ids()
        .into_iter()
        .map(|a| {
            let mut labels = app.labels.get(a as usize).cloned().unwrap_or_default();
            labels.insert("archive-id".to_string(), a.to_string());
            let served: Vec<&str> =
                groups.iter().filter(|g| g.archives.contains(&a)).map(|g| g.name.as_str()).collect();
            if !served.is_empty() {
                labels.insert("storage-groups".into(), served.join(","));
            }
            let options = BTreeMap::from([
                ("archive-dir".to_string(), backset_refstore::archive_dir(app.db.root(), a).display().to_string()),
                (
                    "journal-hot-copy".to_string(),
                    if app.db.config().journal_hot_copy_of(a as usize) { "enable" } else { "disable" }.to_string(),
                ),
            ]);
            let failure = app.db.archives().iter().find(|s| s.archive_id() == a).and_then(|s| s.writer_failure());
            Process {
                start_id: app.manager.start_id(a).unwrap_or_default(),
                archive_id: a,
                db_name: app.db.name().to_string(),
                kind: "SM".into(),
                state: if failure.is_some() { "FAILED" } else { "RUNNING" }.into(),
                hostname: app.hostname.clone(),
                address: app.listen.ip().to_string(),
                port: app.listen.port(),
                host: app.hostname.clone(),
                pid: std::process::id(),
                durable_state: "MONITORED".into(),
                last_heard_from: 0,
                labels,
                options,
                message: failure.map(|f| {
                    format!(
                        "journal writer failed: {f}; this SM takes no more commits: fix the cause and restart the \
                         server"
                    )
                }),
            }
        })
        .collect()
}

/// The fields of a process that `filterBy`, `orderBy` and `descendingFields` may name.
const PROCESS_FIELDS: [&str; 11] =
    ["startId", "archiveId", "dbName", "type", "state", "hostname", "address", "port", "host", "pid", "durableState"];

/// `GET /processes[?filterQuery=<expr>]`, paged as nuoadmin's list endpoints are ([`crate::paging`]: `offset`,
/// `limit`, `filterBy`, `orderBy`, `descendingFields`).
async fn processes(State(app): State<Arc<App>>, q: Params) -> Result<Response, HttpError> {
    let all = all_processes(&app);
    let admitted: Vec<Process> = match q.get("filterQuery") {
        None => all,
        Some(f) => {
            let filter = Filter::parse(f).map_err(|e| HttpError::bad(e.to_string()))?;
            let keep = filter.admits(&all);
            all.into_iter().zip(keep).filter_map(|(p, k)| k.then_some(p)).collect()
        }
    };
    let values = admitted
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encode a process: {e}")))?;
    let page = crate::paging::page(values, &PROCESS_FIELDS, &q.0).map_err(HttpError::bad)?;
    Ok(Json(serde_json::json!({
        "data": page.data,
        "hasNext": page.has_next,
        "maxLimit": crate::api::MAX_PAGE_LIMIT,
    }))
    .into_response())
}

/// The body of a data API transaction. Each list keeps at most [`MAX_OPS_PER_TXN`] operations while it is parsed and
/// counts the rest, so a body of millions of keys costs no more memory than its bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    put: Bounded<(String, String)>,
    #[serde(default)]
    delete: Bounded<String>,
}

impl BodyLimit for TxnBody {
    const WHAT: &'static str = "a transaction";
    fn max_bytes(_: &App) -> usize {
        MAX_TXN_BODY_BYTES
    }
}

impl BodyLimit for HotCopyBody {
    const WHAT: &'static str = "a hot copy request to this server";
    fn max_bytes(app: &App) -> usize {
        hot_copy_body_limit(app.manager.archive_ids().len())
    }
}

impl BodyLimit for SimpleBody {
    const WHAT: &'static str = "a hot copy request to this server";
    fn max_bytes(app: &App) -> usize {
        hot_copy_body_limit(app.manager.archive_ids().len())
    }
}

/// A JSON array (or, of pairs, an object) of which at most [`MAX_OPS_PER_TXN`] items are kept; `count` counts them
/// all.
#[derive(Debug)]
struct Bounded<T> {
    items: Vec<T>,
    count: usize,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Self { items: Vec::new(), count: 0 }
    }
}

impl<'de> Deserialize<'de> for Bounded<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bounded<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of keys (strings)")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Bounded::default();
                while out.count < MAX_OPS_PER_TXN {
                    match seq.next_element::<String>()? {
                        Some(k) => out.items.push(k),
                        None => return Ok(out),
                    }
                    out.count += 1;
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    out.count += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for Bounded<(String, String)> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bounded<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of keys and values (strings)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Bounded::default();
                while out.count < MAX_OPS_PER_TXN {
                    match map.next_entry::<String, String>()? {
                        Some(kv) => out.items.push(kv),
                        None => return Ok(out),
                    }
                    out.count += 1;
                }
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {
                    out.count += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `POST /databases/{db}/transactions` with `{"put": {"k": "v"}, "delete": ["k"]}`.
async fn transaction(
    State(app): State<Arc<App>>,
    db: Result<Path<String>, PathRejection>,
    JsonBody(b): JsonBody<TxnBody>,
) -> Reply<TxnResponse> {
    check_db(&app, &path(db)?)?;
    let count = b.put.count + b.delete.count;
    if count > MAX_OPS_PER_TXN {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the transaction holds {count} operations ({} puts, {} deletes), more than the limit of \
                 {MAX_OPS_PER_TXN} (MAX_OPS_PER_TXN); split it into several transactions",
                b.put.count, b.delete.count
            ),
        ));
    }
    let mut txn = Txn::new();
    for (k, v) in b.put.items {
        txn = txn.put(k.into_bytes(), v.into_bytes());
    }
    for k in b.delete.items {
        txn = txn.delete(k.into_bytes());
    }
    blocking(move || {
        let c = app.db.commit(&txn)?;
        let t = UNIX_EPOCH + Duration::from_micros(c.timestamp_micros);
        Ok(Json(TxnResponse { txn_id: c.txn_id, timestamp: humantime::format_rfc3339_micros(t).to_string() }))
    })
    .await
}

/// `GET /databases/{db}/keys/{key}`: `{"key": .., "value": ..}` (`valueHex` for a value that is not UTF-8).
async fn key(
    State(app): State<Arc<App>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Reply<serde_json::Value> {
    let (db, key) = path(p)?;
    check_db(&app, &db)?;
    blocking(move || {
        let v = app.db.get(key.as_bytes()).map_err(|e| {
            let status = match e {
                StoreError::Closed { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            HttpError::new(status, backset_engine::hotcopy::error_chain(&e))
        })?;
        match v {
            None => Err(HttpError::new(StatusCode::NOT_FOUND, format!("no key {key:?}"))),
            Some(v) => Ok(Json(match String::from_utf8(v) {
                Ok(s) => serde_json::json!({ "key": key, "value": s }),
                Err(e) => serde_json::json!({ "key": key, "valueHex": e.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>() }),
            })),
        }
    })
    .await
}
