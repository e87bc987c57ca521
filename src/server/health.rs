//! `GET /health`: 200 while every SM takes commits, 503 naming each SM whose journal writer failed, for a load
//! balancer's or an orchestrator's probe. Behind the same token check as the API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::nuoadmin::all_processes;
use super::App;

/// The answer: `status` (`OK` or `FAILED`), each SM's archive id, database and state, and while one failed a
/// `message` naming it and saying what to do (the failure itself was logged once, when it happened).
pub(super) async fn health(State(app): State<Arc<App>>) -> Response {
    let processes = all_processes(&app);
    let failed: Vec<String> = processes
        .iter()
        .filter_map(|p| {
            let why = p.message.as_deref()?;
            Some(format!("the SM of archive {} of database {} is FAILED ({why})", p.archive_id, p.db_name))
        })
        .collect();
    let sms: Vec<_> =
        processes.iter().map(|p| json!({"archiveId": p.archive_id, "dbName": p.db_name, "state": p.state})).collect();
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({"status": "OK", "processes": sms}))).into_response()
    } else {
        let code = StatusCode::SERVICE_UNAVAILABLE;
        let body = json!({"code": code.as_u16(), "status": "FAILED", "message": failed.join("; "), "processes": sms});
        (code, Json(body)).into_response()
    }
}
