//! nuoadmin's endpoints, with its paths, JSON names and statuses: start a hot copy (`hotCopy`, `hotCopySimple`),
//! its status (`hotCopyStatus`, waiting up to `timeoutSec` without holding a thread), `cancelHotCopy`, and the
//! process list (`processes`, with `filterQuery` and nuoadmin's paging).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use backset_engine::hotcopy::{HotCopyRequest, HotCopyStatus, HotCopyType, JobState};
use serde::Deserialize;
use uuid::Uuid;

use super::http::{
    base_uri, blocking, check_db, entries, number, path, whole_number, BodyLimit, HttpError, JsonBody, Params, Reply,
};
use super::{hot_copy_body_limit, App};
use crate::api::{wait_seconds, HotCopyInfo, HotCopyResponse, Process, MAX_STATUSES_PER_ANSWER};
use crate::process_filter::ProcessFilter;

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
pub(super) struct HotCopyBody {
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
pub(super) struct Location {
    copy_archive_dir: PathBuf,
    copy_journal_dir: Option<PathBuf>,
}

/// The body of `POST /databases/{db}/hotCopySimple`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SimpleBody {
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

pub(super) async fn hot_copy(
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

pub(super) async fn hot_copy_simple(
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
pub(super) async fn status(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Result<Response, HttpError> {
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
pub(super) async fn database_status(
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
pub(super) async fn cancel(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Result<Response, HttpError> {
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
pub(super) fn all_processes(app: &App) -> Vec<Process> {
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
pub(super) async fn processes(State(app): State<Arc<App>>, q: Params) -> Result<Response, HttpError> {
    let all = all_processes(&app);
    let admitted: Vec<Process> = match q.get("filterQuery") {
        None => all,
        Some(f) => {
            let filter = ProcessFilter::parse(f).map_err(|e| HttpError::bad(e.to_string()))?;
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
