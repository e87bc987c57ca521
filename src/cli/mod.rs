//! The nuocmd-style client verbs: `hotcopy database`, `get hotcopy-status`, `get hotcopy-info`, `show hotcopy-info`,
//! `cancel hotcopy`, `get processes`. They talk to `backset serve` (`--api-server`) over its REST API and print what
//! nuocmd prints (`HotCopyResponse(...)` with fields sorted by name), or the raw JSON with `--show-json`.
//! This module holds their options and the client; [`print`] holds the text they print.

mod print;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::{
    wait_seconds, ApiError, HotCopyInfo, HotCopyResponse, Processes, API_PREFIX, MAX_STATUSES_PER_ANSWER,
    MAX_WAIT_PER_REQUEST,
};
use crate::progress;
use crate::usage::usage;
use print::{
    check_format, full, hotcopy_fields, info_line, process_fields, process_line, progress_note, render, short,
};
use print::{HOTCOPY_FIELDS, PROCESS_FIELDS, PROCESS_FORMAT};

/// Suffix of the message printed when `--timeout` expires before the hot copy ended (nuocmd's).
pub const TIMEOUT_SUFFIX: &str = ": timeout while waiting for hot copy operation to finish";
/// First wait of one status poll while waiting for a hot copy (each next one twice as long, up to [`POLL_MAX`]).
const POLL_FIRST: Duration = Duration::from_millis(100);
/// Longest wait of one status poll (a long poll: the server answers as soon as the hot copy ends, else HTTP 408 when
/// this wait ran out). However long `--timeout` is, no request waits longer.
pub const POLL_MAX: Duration = Duration::from_secs(2);
/// How long one request may take beyond the wait it asks the server for.
const REQUEST_SLACK: Duration = Duration::from_secs(30);

/// The admin server when neither `--api-server` nor [`API_SERVER_ENV`] names one (nuocmd's default).
pub const DEFAULT_API_SERVER: &str = "localhost:8888";
/// The environment variable naming the admin server when `--api-server` is not given (nuocmd's; NuoDB's charts set
/// it).
pub const API_SERVER_ENV: &str = "NUOCMD_API_SERVER";

/// Options of the client verbs (`hotcopy`, `get`, `show`, `cancel`), listed in their help only.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// The admin server, `host:port` or a URL [default: the NUOCMD_API_SERVER environment variable, else
    /// localhost:8888].
    #[arg(long, value_name = "HOST:PORT")]
    pub api_server: Option<String>,
    /// Print the server's JSON instead of nuocmd's format.
    #[arg(long)]
    pub show_json: bool,
    /// File with the server's bearer token (else the BACKSET_AUTH_TOKEN environment variable, if set).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// The same options given before the command, as nuocmd takes them (`backset --api-server H:P get processes`);
/// hidden from the top-level help, which lists no client option.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LeadingClientArgs {
    /// The admin server (as the client verbs' `--api-server`).
    #[arg(long, value_name = "HOST:PORT", hide = true)]
    pub api_server: Option<String>,
    /// Print the server's JSON (as the client verbs' `--show-json`).
    #[arg(long, hide = true)]
    pub show_json: bool,
    /// File with the server's bearer token (as the client verbs' `--api-token-file`).
    #[arg(long, value_name = "FILE", hide = true)]
    pub api_token_file: Option<PathBuf>,
}

impl LeadingClientArgs {
    /// Whether any of them was given.
    pub fn given(&self) -> bool {
        self.api_server.is_some() || self.show_json || self.api_token_file.is_some()
    }

    /// Refuses them before a command that does not talk to the admin server.
    pub fn refuse_for(&self, command: &str) -> Result<()> {
        if self.given() {
            return Err(usage(format!(
                "--api-server, --show-json and --api-token-file go with the client verbs (hotcopy, get, show, cancel); \
                 `backset {command}` does not talk to the admin server"
            )));
        }
        Ok(())
    }
}

impl ClientArgs {
    /// These options, completed by those given before the command (the command's own win).
    pub fn with_leading(&self, lead: &LeadingClientArgs) -> Self {
        Self {
            api_server: self.api_server.clone().or_else(|| lead.api_server.clone()),
            show_json: self.show_json || lead.show_json,
            api_token_file: self.api_token_file.clone().or_else(|| lead.api_token_file.clone()),
        }
    }

    /// The admin server: `--api-server`, else [`API_SERVER_ENV`] (when set and not empty), else
    /// [`DEFAULT_API_SERVER`].
    pub fn server(&self) -> String {
        self.api_server
            .clone()
            .or_else(|| std::env::var(API_SERVER_ENV).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_API_SERVER.to_string())
    }
}

/// `hotcopy ...`.
#[derive(clap::Subcommand, Debug)]
pub enum HotcopyCommand {
    /// Start a hot copy of a database's archives.
    ///
    /// Example: `backset hotcopy database --db-name demo --type full --backup-dirs 0 /backups/set1 --timeout 600`
    Database(HotcopyDatabaseArgs),
}

/// The hot copy types.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain archive copy.
    Simple,
    /// A new backup set.
    Full,
    /// Changed atoms into an existing set.
    Incremental,
    /// Journal since the previous journal hot copy.
    Journal,
}

/// Options of `hotcopy database`.
#[derive(clap::Args, Debug)]
pub struct HotcopyDatabaseArgs {
    /// Database name.
    #[arg(long)]
    pub db_name: String,
    /// Type of hot copy.
    #[arg(long = "type", value_enum)]
    pub kind: Kind,
    /// `<archive id> <path>` pairs: where each archive goes.
    #[arg(long, num_args = 2.., value_names = ["ARCHIVE_ID", "PATH"], conflicts_with = "process_filter")]
    pub backup_dirs: Vec<String>,
    /// Hot copy the SMs this filter selects (LBQuery, e.g. `label(role hotcopy)`) into --default-backup-dir.
    #[arg(long, value_name = "FILTER", requires = "default_backup_dir", value_parser = parse_filter)]
    pub process_filter: Option<String>,
    /// Destination of every archive without a --backup-dirs entry (alone: every archive).
    #[arg(long, value_name = "PATH")]
    pub default_backup_dir: Option<PathBuf>,
    /// The default directory is shared storage: it must exist, each archive writes into its subdirectory.
    #[arg(long)]
    pub shared: bool,
    /// Most MB/s (10^6 bytes) each SM reads for this hot copy.
    #[arg(long, value_name = "MB/s", allow_negative_numbers = true)]
    pub max_rate: Option<f64>,
    /// Accept archives that together do not hold every storage group.
    #[arg(long)]
    pub partial_storage_groups: bool,
    /// Wait up to this many seconds for the hot copy to end (without it: return at once).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `get ...`.
#[derive(clap::Subcommand, Debug)]
pub enum GetCommand {
    /// One hot copy's status.
    ///
    /// Example: `backset get hotcopy-status --coordinator-start-id 1 --hotcopy-id f52ae347-e83f-44c3-ad1c-a8a30d7e47b4`
    HotcopyStatus(StatusArgs),
    /// The hot copies of a database or of one SM.
    ///
    /// Example: `backset get hotcopy-info --db-name demo --running-for 2h`
    HotcopyInfo(InfoArgs),
    /// The processes (SMs) of the embedded database.
    ///
    /// Example: `backset get processes --process-filter 'label(role hotcopy)'`
    Processes(ProcessesArgs),
}

/// `show ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ShowCommand {
    /// The hot copies of a database, per SM, human readable.
    ///
    /// Example: `backset show hotcopy-info --db-name demo`
    HotcopyInfo(ShowInfoArgs),
}

/// `cancel ...`.
#[derive(clap::Subcommand, Debug)]
pub enum CancelCommand {
    /// Cancel a running hot copy.
    ///
    /// Example: `backset cancel hotcopy --coordinator-start-id 1 --hotcopy-id f52ae347-e83f-44c3-ad1c-a8a30d7e47b4`
    Hotcopy(StatusArgs),
}

/// `--coordinator-start-id N --hotcopy-id ID [--timeout s]`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Start id of the coordinating SM.
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    pub coordinator_start_id: u64,
    /// Hot copy id.
    #[arg(long)]
    pub hotcopy_id: uuid::Uuid,
    /// Wait up to this many seconds for the hot copy to end.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `get hotcopy-info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Database name.
    #[arg(long, required_unless_present = "coordinator_start_id")]
    pub db_name: Option<String>,
    /// Start id of an SM.
    #[arg(long, conflicts_with = "db_name", allow_negative_numbers = true, value_parser = count::<u64>)]
    pub coordinator_start_id: Option<u64>,
    /// Only hot copies running at least this long (seconds, or with a d, h, m or s suffix: `2h`). With --db-name.
    #[arg(long, value_name = "DURATION", requires = "db_name", allow_negative_numbers = true, value_parser = parse_duration)]
    pub running_for: Option<Duration>,
    /// Seconds to wait for the server's answer.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `show hotcopy-info`.
#[derive(clap::Args, Debug)]
pub struct ShowInfoArgs {
    /// Database name.
    #[arg(long)]
    pub db_name: String,
    /// Only hot copies running at least this long (seconds, or with a d, h, m or s suffix).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    pub running_for: Option<Duration>,
    /// Format of an SM's line (nuocmd's); fields: {engine_type} {address} {start_id} {server_id} {pid} {node_id}
    /// {last_ack} {durable_state} {engine_state} {archive_id} {db_name} {hostname} {type} {state}; `{f:spec}` takes a
    /// Python format spec (`5.2f`, `>10`), `{f:spec:default}` a text for a field without a value.
    #[arg(long, default_value = PROCESS_FORMAT)]
    pub process_format: String,
    /// Format of a hot copy's line; fields: {id} {status} {timestamp_range} {message} {stage} {type}
    /// {coordinator_start_id} {begin_timestamp} {end_timestamp} {destination_directory}, and Backset's progress:
    /// {bytes_done} {bytes_total} {files_done} {files_total} {rate} (MB/s) {eta} (seconds left, no value once ended
    /// or unknown) {eta_text} (`1m05s`). Example: `--hotcopy-format '{id} [{status}] {bytes_done}/{bytes_total}
    /// bytes, ETA {eta_text::-}'`.
    #[arg(long, default_value = "{id} [{status}] {timestamp_range} : {message} ({stage})")]
    pub hotcopy_format: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `get processes`.
#[derive(clap::Args, Debug)]
pub struct ProcessesArgs {
    /// Only the processes of this database.
    #[arg(long)]
    pub db_name: Option<String>,
    /// Only the processes this LBQuery filter selects.
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    pub process_filter: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A whole number of 0 or more: the value parser of counts, ids and byte sizes. With `allow_negative_numbers` on
/// its argument, `-5` reaches it as a value and is refused with the range, rather than taken for an option.
pub fn count<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(v) => Ok(v),
        Err(_) if s.trim().parse::<f64>().is_ok_and(|v| v < 0.0) => {
            Err(format!("{s} is below 0: give a whole number, 0 or more"))
        }
        Err(_) => Err(format!("{s:?} is not a whole number of 0 or more (or it is too large)")),
    }
}

/// A process filter (LBQuery) as given, once it parses: a malformed one is a usage error here, before any request.
fn parse_filter(s: &str) -> Result<String, String> {
    crate::process_filter::ProcessFilter::parse(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// `2h`, `30m`, `1d`, `45s`, `90` (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, c @ ('d' | 'h' | 'm' | 's'))) => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (seconds, or 2h, 30m, 1d)"))?;
    let secs = n * match unit {
        'd' => 86_400.0,
        'h' => 3_600.0,
        'm' => 60.0,
        _ => 1.0,
    };
    if !(0.0..1e12).contains(&secs) {
        return Err(format!("{s:?} is not a duration of zero or more"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--timeout`: any number of seconds, zero or more, without an upper bound (NuoDB's Helm backup job sends 525600).
/// `0` waits not at all, as no `--timeout` (nuocmd's rule).
fn check_timeout(t: Option<f64>) -> Result<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) => match wait_seconds(s) {
            Some(d) if d.is_zero() => Ok(None),
            Some(d) => Ok(Some(d)),
            None => Err(usage(format!("--timeout {s}: give a number of seconds, zero or more"))),
        },
    }
}

/// The admin server's client.
struct Client {
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &ClientArgs) -> Result<Self> {
        let server = args.server();
        let server = server.trim_end_matches('/');
        let base = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
        let token = match &args.api_token_file {
            Some(f) => {
                Some(std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?.trim().to_string())
            }
            None => std::env::var("BACKSET_AUTH_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        };
        Ok(Self { base, token })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>, wait: Duration) -> Result<Value> {
        let url = format!("{}{API_PREFIX}{path}", self.base);
        // The server waits at most MAX_WAIT_PER_REQUEST whatever it is asked.
        let mut req = ureq::request(method, &url).timeout(wait.min(MAX_WAIT_PER_REQUEST) + REQUEST_SLACK);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json().with_context(|| format!("{method} {url}: the answer is not JSON")),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                // 408: the wait ran out and the hot copy still runs; the body is its HotCopyResponse (nuoadmin's).
                if code == 408 {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if v.get("hotCopyId").is_some() {
                            return Ok(v);
                        }
                    }
                }
                match serde_json::from_str::<ApiError>(&text) {
                    Ok(e) => Err(anyhow!("{}", e.message)),
                    Err(_) => Err(anyhow!("{method} {url}: HTTP {code}: {text}")),
                }
            }
            Err(e) => Err(anyhow!(
                "cannot reach the admin server at {}: {e}; start it with `backset serve`, or name it with \
                 --api-server or NUOCMD_API_SERVER",
                self.base
            )),
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str, wait: Duration) -> Result<(T, Value)> {
        let v = self.call("GET", path, None, wait)?;
        Ok((serde_json::from_value(v.clone()).context("unexpected answer from the admin server")?, v))
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &Value, wait: Duration) -> Result<(T, Value)> {
        let v = self.call("POST", path, Some(body), wait)?;
        Ok((serde_json::from_value(v.clone()).context("unexpected answer from the admin server")?, v))
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Waits until the hot copy ends or `timeout` passes, long-polling its status in steps of at most [`POLL_MAX`]
/// (growing from [`POLL_FIRST`]) with a progress bar. Returns its last status, the server's JSON of it (`Null` when
/// no poll was made), and whether it still runs (the message then carries [`TIMEOUT_SUFFIX`]).
fn wait_for_end(client: &Client, first: HotCopyResponse, timeout: Duration) -> Result<(HotCopyResponse, Value, bool)> {
    // A deadline past what an Instant can hold is no deadline.
    let deadline = Instant::now().checked_add(timeout);
    let bar = progress::bar(&first.kind);
    let (mut r, mut raw) = (first, Value::Null);
    let mut step = POLL_FIRST;
    while r.status == "running" {
        progress::update(&bar, r.bytes_done, r.bytes_total);
        bar.set_message(progress_note(&r));
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            break;
        }
        let wait = step.min(left);
        let path = format!(
            "/databases/hotCopyStatus?coordinatorStartId={}&hotCopyId={}&timeoutSec={:.3}",
            r.coordinator_start_id,
            r.hot_copy_id,
            wait.as_secs_f64()
        );
        (r, raw) = client.get(&path, wait)?;
        step = (step * 2).min(POLL_MAX);
    }
    bar.finish_and_clear();
    let timed_out = r.status == "running";
    if timed_out {
        r.message = format!("{}{TIMEOUT_SUFFIX}", r.message);
        if let Some(m) = raw.get_mut("message") {
            *m = Value::String(r.message.clone());
        }
    }
    Ok((r, raw, timed_out))
}

/// Prints a hot copy's whole response (or its JSON); fails when it is still running after a wait.
fn print_waited(cli: &ClientArgs, r: &HotCopyResponse, raw: Value, timed_out: bool) -> Result<()> {
    if cli.show_json {
        print_json(&if raw.is_null() { serde_json::to_value(r)? } else { raw })?;
    } else {
        println!("{}", full(r));
    }
    if timed_out {
        return Err(anyhow!("hot copy {} is still running{TIMEOUT_SUFFIX}", r.hot_copy_id));
    }
    Ok(())
}

/// Waits for the hot copy (see [`wait_for_end`]) and prints it. Fails on a timeout (the hot copy keeps running) and
/// on an end other than completed.
fn wait_and_print(client: &Client, cli: &ClientArgs, first: HotCopyResponse, timeout: Duration) -> Result<()> {
    let (r, raw, timed_out) = wait_for_end(client, first, timeout)?;
    print_waited(cli, &r, raw, timed_out)?;
    if r.status != "completed" {
        return Err(anyhow!("hot copy {} {}: {}", r.hot_copy_id, r.status, r.message));
    }
    Ok(())
}

/// Refuses a relative path: the admin server resolves paths on its own host, against a working directory the client
/// cannot know.
fn absolute(option: &str, p: &Path) -> Result<()> {
    // An object-storage location (`s3://bucket/prefix`) is checked here as far as its text goes.
    if let Some(url) = backset_engine::set::object::s3_location(p) {
        return url.map(drop).map_err(|e| usage(format!("{option}: {e}")));
    }
    if p.is_absolute() {
        Ok(())
    } else {
        Err(usage(format!(
            "{option} {:?}: give an absolute path (the admin server resolves paths on its own host)",
            p.display().to_string()
        )))
    }
}

/// Runs `hotcopy database`.
pub fn hotcopy_database(cli: &ClientArgs, args: &HotcopyDatabaseArgs) -> Result<()> {
    if !args.backup_dirs.len().is_multiple_of(2) {
        return Err(usage("--backup-dirs takes pairs of <archive id> <path>"));
    }
    let mut dirs = BTreeMap::new();
    for pair in args.backup_dirs.chunks(2) {
        let id: u64 =
            pair[0].parse().map_err(|_| usage(format!("--backup-dirs: archive id {:?} is not a number", pair[0])))?;
        absolute("--backup-dirs", Path::new(&pair[1]))?;
        if dirs.insert(id.to_string(), pair[1].clone()).is_some() {
            return Err(usage(format!("--backup-dirs names archive {id} twice")));
        }
    }
    if let Some(d) = &args.default_backup_dir {
        absolute("--default-backup-dir", d)?;
    }
    if dirs.is_empty() && args.default_backup_dir.is_none() {
        return Err(usage("give --backup-dirs <archive id> <path> ..., or --default-backup-dir"));
    }
    if args.shared && args.kind == Kind::Simple {
        return Err(usage("--shared is never used with a simple hot copy"));
    }
    if args.shared && args.default_backup_dir.is_none() {
        return Err(usage("--shared needs --default-backup-dir"));
    }
    let max_rate = match args.max_rate {
        None => None,
        // At least one byte per second: a rate that rounds to 0 would never copy a byte.
        Some(mb) if (1e-6..1e9).contains(&mb) => Some((mb * 1e6).round() as u64),
        Some(mb) => return Err(usage(format!("--max-rate {mb}: give 0.000001 (one byte per second) to 1e9 MB/s"))),
    };
    let timeout = check_timeout(args.timeout)?;
    let client = Client::new(cli)?;
    let archive_ids = match &args.process_filter {
        None => None,
        Some(f) => {
            let (ps, _): (Processes, _) =
                client.get(&format!("/processes?filterQuery={}", encode(f)), Duration::ZERO)?;
            let ids: Vec<u64> = ps.data.iter().filter(|p| p.db_name == args.db_name).map(|p| p.archive_id).collect();
            if ids.is_empty() {
                return Err(anyhow!("the process filter {f:?} selects no SM of database {}", args.db_name));
            }
            Some(ids)
        }
    };
    let check_sgs = !args.partial_storage_groups;
    let db = encode(&args.db_name);
    let (started, raw): (Started, Value) = if args.kind == Kind::Simple {
        let loc = |p: &str| json!({ "copyArchiveDir": p });
        let mut body = json!({
            "backupLocations": dirs.iter().map(|(k, v)| (k.clone(), loc(v))).collect::<serde_json::Map<_, _>>(),
            "maxRate": max_rate,
            "checkContainsAllSgs": check_sgs,
        });
        if let Some(d) = &args.default_backup_dir {
            body["defaultBackupLocation"] = loc(&d.display().to_string());
        }
        if let Some(ids) = &archive_ids {
            body["archiveIds"] = json!(ids);
        }
        client.post(&format!("/databases/{db}/hotCopySimple"), &body, Duration::ZERO)?
    } else {
        let kind = match args.kind {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
            _ => "journal",
        };
        let mut body = json!({
            "type": kind,
            "shared": args.shared,
            "backupSetDirs": dirs,
            "maxRate": max_rate,
            "checkContainsAllSgs": check_sgs,
        });
        if let Some(d) = &args.default_backup_dir {
            body["defaultBackupSetDir"] = json!(d);
        }
        if let Some(ids) = &archive_ids {
            body["archiveIds"] = json!(ids);
        }
        client.post(&format!("/databases/{db}/hotCopy"), &body, Duration::ZERO)?
    };
    match timeout {
        Some(t) => {
            let path = format!(
                "/databases/hotCopyStatus?coordinatorStartId={}&hotCopyId={}",
                started.coordinator_start_id, started.hot_copy_id
            );
            let (first, _): (HotCopyResponse, Value) = client.get(&path, Duration::ZERO)?;
            wait_and_print(&client, cli, first, t)
        }
        None if cli.show_json => print_json(&raw),
        None => {
            println!("{}", short(started.coordinator_start_id, &started.hot_copy_id));
            Ok(())
        }
    }
}

/// The answer to a hot copy started without a wait (nuoadmin's: the ids and the status link).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Started {
    #[serde(deserialize_with = "string_or_number")]
    coordinator_start_id: u64,
    hot_copy_id: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match <Value as serde::Deserialize>::deserialize(d)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| D::Error::custom(format!("{n} is not a start id"))),
        Value::String(t) => t.parse().map_err(|_| D::Error::custom(format!("{t:?} is not a start id"))),
        other => Err(D::Error::custom(format!("{other} is not a start id"))),
    }
}

/// Runs `get hotcopy-status`.
pub fn get_hotcopy_status(cli: &ClientArgs, args: &StatusArgs) -> Result<()> {
    let timeout = check_timeout(args.timeout)?;
    let client = Client::new(cli)?;
    let path = format!(
        "/databases/hotCopyStatus?coordinatorStartId={}&hotCopyId={}",
        args.coordinator_start_id, args.hotcopy_id
    );
    let (r, raw): (HotCopyResponse, Value) = client.get(&path, Duration::ZERO)?;
    match timeout {
        Some(t) => wait_and_print(&client, cli, r, t),
        None if cli.show_json => print_json(&raw),
        None => {
            println!("{}", full(&r));
            Ok(())
        }
    }
}

/// Runs `cancel hotcopy`.
pub fn cancel_hotcopy(cli: &ClientArgs, args: &StatusArgs) -> Result<()> {
    let timeout = check_timeout(args.timeout)?;
    let client = Client::new(cli)?;
    let path = format!(
        "/databases/cancelHotCopy?coordinatorStartId={}&hotCopyId={}",
        args.coordinator_start_id, args.hotcopy_id
    );
    // The cancel itself does not wait; with --timeout the status is long-polled in steps, as for a hot copy.
    let (r, raw): (HotCopyResponse, Value) = client.post(&path, &Value::Null, Duration::ZERO)?;
    match timeout {
        Some(t) => {
            let (r, polled, timed_out) = wait_for_end(&client, r, t)?;
            print_waited(cli, &r, if polled.is_null() { raw } else { polled }, timed_out)
        }
        None => print_waited(cli, &r, raw, false),
    }
}

fn fetch_info(
    client: &Client,
    db: &str,
    running_for: Option<Duration>,
    wait: Duration,
) -> Result<(HotCopyInfo, Value)> {
    let mut path = format!("/databases/{}/hotCopyStatus", encode(db));
    if let Some(d) = running_for {
        path.push_str(&format!("?minSecondsRunning={}", d.as_secs_f64()));
    }
    client.get(&path, wait)
}

/// Runs `get hotcopy-info`.
pub fn get_hotcopy_info(cli: &ClientArgs, args: &InfoArgs) -> Result<()> {
    let wait = check_timeout(args.timeout)?.unwrap_or(Duration::ZERO);
    if args.running_for.is_some() && args.db_name.is_none() {
        return Err(usage("--running-for goes with --db-name"));
    }
    let client = Client::new(cli)?;
    let (info, raw) = match (&args.db_name, args.coordinator_start_id) {
        (Some(db), _) => fetch_info(&client, db, args.running_for, wait)?,
        (None, Some(sm)) => client.get(&format!("/databases/hotCopyStatus?coordinatorStartId={sm}"), wait)?,
        (None, None) => return Err(usage("give --db-name or --coordinator-start-id")),
    };
    if cli.show_json {
        return print_json(&raw);
    }
    println!("{}", info_line(&info));
    for (sm, n) in &info.omitted {
        eprintln!(
            "backset: SM start_id={sm}: {} not listed (an answer lists the newest {MAX_STATUSES_PER_ANSWER} of each \
             SM); see one with get hotcopy-status --hotcopy-id ID",
            crate::text::plural(*n as u64, "older hot copy", "older hot copies")
        );
    }
    report_errors(&info)
}

fn report_errors(info: &HotCopyInfo) -> Result<()> {
    for (sm, e) in &info.errors {
        eprintln!("backset: SM start_id={sm}: {e}");
    }
    if info.errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{} did not report their hot copies", crate::text::counted(info.errors.len() as u64, "SM")))
    }
}

/// Runs `show hotcopy-info`.
pub fn show_hotcopy_info(cli: &ClientArgs, args: &ShowInfoArgs) -> Result<()> {
    check_format(&args.process_format, &PROCESS_FIELDS, "--process-format")?;
    check_format(&args.hotcopy_format, &HOTCOPY_FIELDS, "--hotcopy-format")?;
    let client = Client::new(cli)?;
    let (processes, _): (Processes, _) = client.get("/processes", Duration::ZERO)?;
    let (info, raw) = fetch_info(&client, &args.db_name, args.running_for, Duration::ZERO)?;
    if cli.show_json {
        return print_json(&raw);
    }
    for (sm, list) in &info.hot_copy_statuses {
        let line = match processes.data.iter().find(|p| p.start_id == *sm) {
            Some(p) => render(&args.process_format, &process_fields(p), "--process-format")?,
            None => format!("[SM] [start_id = {sm}]"),
        };
        println!("{line}");
        for r in list {
            println!("  {}", render(&args.hotcopy_format, &hotcopy_fields(r), "--hotcopy-format")?);
        }
    }
    report_errors(&info)
}

/// Runs `get processes`.
pub fn get_processes(cli: &ClientArgs, args: &ProcessesArgs) -> Result<()> {
    let client = Client::new(cli)?;
    let path = match &args.process_filter {
        Some(f) => format!("/processes?filterQuery={}", encode(f)),
        None => "/processes".to_string(),
    };
    let (mut ps, _): (Processes, Value) = client.get(&path, Duration::ZERO)?;
    if let Some(db) = &args.db_name {
        ps.data.retain(|p| &p.db_name == db);
    }
    if cli.show_json {
        return print_json(&serde_json::to_value(&ps)?);
    }
    for p in &ps.data {
        println!("{}", process_line(p));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_nuocmd_suffixes() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("-1").is_err() && parse_duration("h").is_err() && parse_duration("2w").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("label(role hotcopy)"), "label%28role%20hotcopy%29");
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }
}
