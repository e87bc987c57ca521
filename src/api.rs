//! The JSON of the admin REST API, shared by the server (`serve`) and the nuocmd-style client verbs: nuoadmin's
//! names (camelCase) for what nuoadmin has, and Backset's additions beside them. See docs/CLI.md.

use std::collections::BTreeMap;
use std::time::Duration;

use backset_engine::hotcopy::{HotCopyStatus, ParticipantStatus};
use serde::{Deserialize, Serialize};

/// The path prefix of every endpoint.
pub const API_PREFIX: &str = "/api/1";

/// Longest a single request waits for a hot copy to end (ten minutes), whatever its `timeoutSec`, so that a
/// connection lost without a word (no FIN, no RST) is noticed at the latest then. A wait that ends with the hot copy still running answers
/// HTTP 408 (nuoadmin's answer to a `timeoutSec` that ran out); the client asks again. `timeoutSec` itself has no
/// upper bound (NuoDB's Helm backup job sends 525600).
pub const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(600);

/// Environment variable that shortens [`MAX_WAIT_PER_REQUEST`] to this many milliseconds, so tests can reach its
/// edge in seconds. Never set it outside tests.
pub const WAIT_PER_REQUEST_ENV: &str = "BACKSET_TEST_WAIT_PER_REQUEST_MS";

/// A wait in seconds as given (`--timeout`, `timeoutSec`): any finite number of zero or more. A wait too long for a
/// `Duration` (past 584 billion years) is `Duration::MAX`, which every caller treats as "no deadline". `None` for a
/// negative or non-finite number (NaN, infinity).
pub fn wait_seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// An error answer: `{"code": <HTTP status>, "message": ".."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// What went wrong and what to do.
    pub message: String,
}

/// NuoDB's `HotCopyResponse`: one hot copy's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HotCopyResponse {
    /// Hot copy id.
    pub hot_copy_id: String,
    /// Start id of the coordinating SM.
    pub coordinator_start_id: u64,
    /// Begin, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub begin_timestamp: String,
    /// End, `YYYY-MM-DD HH:MM:SS` (UTC), once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_timestamp: Option<String>,
    /// `running`, `completed`, `failed`, `cancelled`.
    pub status: String,
    /// The stage message while running; the outcome once ended.
    pub message: String,
    /// Stage number (1, 2, 3).
    pub stage: u32,
    /// The coordinator's destination (the backup set, or the simple copy's directory).
    pub destination_directory: String,
    /// Link to this hot copy's status.
    pub uri: String,
    /// Backset: `simple`, `full`, `incremental`, `journal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Backset: bytes copied so far over all participants.
    #[serde(default)]
    pub bytes_done: u64,
    /// Backset: bytes to copy in all: known before the copy starts (the atoms listed and the journal up to the
    /// durable end), exact once the end point is chosen; equal to `bytesDone` once the copying is over.
    #[serde(default)]
    pub bytes_total: u64,
    /// Backset: files copied so far over all participants.
    #[serde(default)]
    pub files_done: u64,
    /// Backset: files to copy in all, planned as `bytesTotal` is.
    #[serde(default)]
    pub files_total: u64,
    /// Backset: current copy rate, bytes per second.
    #[serde(default)]
    pub rate_bytes_per_sec: f64,
    /// Backset: seconds left while running, at the current rate capped by `maxRate` and the SM's rate; absent once
    /// ended, and while nothing is copying and nothing limits the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_sec: Option<f64>,
    /// Backset: the hot copy's `maxRate` (bytes per second per SM) as now set; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<u64>,
    /// Backset: each archive's part.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// Backset: one archive's part in a hot copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Start id of the archive's SM.
    pub start_id: u64,
    /// Archive id.
    pub archive_id: u64,
    /// Its destination.
    pub destination_directory: String,
    /// Stage number.
    pub stage: u32,
    /// Stage message or outcome.
    pub message: String,
    /// Bytes copied.
    pub bytes_done: u64,
    /// Bytes to copy in all (see `HotCopyResponse::bytes_total`).
    #[serde(default)]
    pub bytes_total: u64,
    /// Files copied.
    #[serde(default)]
    pub files_done: u64,
    /// Files to copy in all.
    #[serde(default)]
    pub files_total: u64,
    /// Current copy rate, bytes per second.
    #[serde(default)]
    pub rate_bytes_per_sec: f64,
    /// Seconds left while running (see `HotCopyResponse::eta_sec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_sec: Option<f64>,
    /// Element made (`full`, `1.inc`, `2.jnl`), once begun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// First and last transaction of the element, once its end point is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_range: Option<(u64, u64)>,
}

impl HotCopyResponse {
    /// The response for `status`, whose status link is under `base_uri` (`http://host:port`).
    pub fn from_status(status: &HotCopyStatus, base_uri: &str) -> Self {
        let dest = status.participants.first().map(|p| p.destination.display().to_string()).unwrap_or_default();
        Self {
            hot_copy_id: status.id.to_string(),
            coordinator_start_id: status.coordinator_start_id,
            begin_timestamp: status.begin_timestamp(),
            end_timestamp: status.end_timestamp(),
            status: status.status.name().to_string(),
            message: status.message.clone(),
            stage: status.stage,
            destination_directory: dest,
            uri: format!(
                "{base_uri}{API_PREFIX}/databases/hotCopyStatus?coordinatorStartId={}&hotCopyId={}",
                status.coordinator_start_id, status.id
            ),
            kind: status.kind.name().to_string(),
            bytes_done: status.bytes_done,
            bytes_total: status.bytes_total,
            files_done: status.files_done,
            files_total: status.files_total,
            rate_bytes_per_sec: status.rate_bytes_per_sec,
            eta_sec: status.eta_secs,
            max_rate: status.max_rate,
            participants: status.participants.iter().map(Participant::from_status).collect(),
        }
    }
}

impl Participant {
    fn from_status(p: &ParticipantStatus) -> Self {
        Self {
            start_id: p.start_id,
            archive_id: p.archive_id,
            destination_directory: p.destination.display().to_string(),
            stage: p.stage,
            message: p.message.clone(),
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            files_done: p.files_done,
            files_total: p.files_total,
            rate_bytes_per_sec: p.rate_bytes_per_sec,
            eta_sec: p.eta_secs,
            element: p.element.clone(),
            txn_range: p.txn_range,
        }
    }
}

/// The hot copies of a database or an SM: `{"hotCopyStatuses": {startId: [..]}, "errors": {startId: msg}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HotCopyInfo {
    /// Per SM start id, its hot copies, oldest first.
    pub hot_copy_statuses: BTreeMap<u64, Vec<HotCopyResponse>>,
    /// Per SM start id, why its statuses could not be read.
    #[serde(default)]
    pub errors: BTreeMap<u64, String>,
    /// Backset: per SM start id, how many older hot copies the answer leaves out (it lists the newest
    /// [`MAX_STATUSES_PER_ANSWER`] of each SM); absent when none is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted: BTreeMap<u64, usize>,
}

/// Most hot copies a `HotCopyInfo` answer lists per SM: the newest 1000 (about 1 KiB each with one participant), so
/// an answer stays under a few MiB whatever the number of statuses kept (`HOTCOPY_MAX_KEPT_STATUSES`, 10,000). A
/// single hot copy's status is always at `hotCopyStatus?coordinatorStartId=N&hotCopyId=ID`.
pub const MAX_STATUSES_PER_ANSWER: usize = 1000;

/// The most items one page of a list endpoint holds (`maxLimit` in its answer; a larger `limit` gets this many).
/// nuocmd asks for 20, then doubles its page up to what the server answers here.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// One process (an SM of the embedded database), as `GET /api/1/processes` lists it, with nuoadmin's field names
/// and types (nuocmd reads them: `startId` is a string there).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Start id (new at every start of the server; see `HotCopyManager::start_id`), a string in JSON as nuoadmin
    /// sends it (a number is read too).
    #[serde(serialize_with = "as_string", deserialize_with = "string_or_number")]
    pub start_id: u64,
    /// Archive id.
    pub archive_id: u64,
    /// Database name.
    pub db_name: String,
    /// Always `SM`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `RUNNING` while the SM takes commits; `FAILED` once its journal writer stopped (see `message`).
    pub state: String,
    /// Host name.
    pub hostname: String,
    /// The address the admin server listens on, without the port (nuoadmin's `address`).
    pub address: String,
    /// The admin server's port (the SMs run inside it).
    #[serde(default)]
    pub port: u16,
    /// nuoadmin's server id (`host`): the host name here, one admin server per host.
    #[serde(default)]
    pub host: String,
    /// The process id of the admin server (the SMs run inside it).
    #[serde(default)]
    pub pid: u32,
    /// nuoadmin's durable state: `MONITORED` while the server runs.
    #[serde(default)]
    pub durable_state: String,
    /// Milliseconds since the admin server last heard from the SM: 0, it runs inside it.
    #[serde(default)]
    pub last_heard_from: u64,
    /// Labels (`archive-id`, and the storage groups it serves as `storage-groups`).
    pub labels: BTreeMap<String, String>,
    /// Options (`archive-dir`, `journal-hot-copy`).
    pub options: BTreeMap<String, String>,
    /// Backset: why the SM is not `RUNNING` (its journal writer's failure and what to do), when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl crate::process_filter::Selectable for Process {
    fn start_id(&self) -> u64 {
        self.start_id
    }
    fn hostname(&self) -> &str {
        &self.hostname
    }
    fn address(&self) -> &str {
        &self.address
    }
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
    fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}

/// `GET /api/1/processes`: one page, `{"data": [..], "hasNext": false, "maxLimit": 1000}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Processes {
    /// The processes the filter admits, by start id (or `orderBy`), from `offset`, at most `limit`.
    pub data: Vec<Process>,
    /// Whether more follow this page.
    #[serde(default)]
    pub has_next: bool,
    /// [`MAX_PAGE_LIMIT`].
    #[serde(default)]
    pub max_limit: usize,
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| D::Error::custom(format!("{n} is not a start id"))),
        serde_json::Value::String(t) => t.parse().map_err(|_| D::Error::custom(format!("{t:?} is not a start id"))),
        other => Err(D::Error::custom(format!("{other} is not a start id"))),
    }
}

/// The answer to a data API transaction: `{"txnId": N, "timestamp": "YYYY-MM-DDTHH:MM:SS.ffffffZ"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxnResponse {
    /// The transaction id.
    pub txn_id: u64,
    /// Its commit time (UTC, microseconds).
    pub timestamp: String,
}
