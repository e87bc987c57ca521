//! `GET /metrics`: the hot copy manager's metrics (`HotCopyManager::record_metrics`), each SM's retained journal and
//! whether it takes commits, in the Prometheus text format (0.0.4), behind the same token check as the API.
//! docs/OPERATIONS.md lists them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use backset_engine::archive::Archive;
use backset_engine::hotcopy::HotCopyManager;
use backset_refstore::Database;
use metrics::{describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::App;

/// The Prometheus text format's content type.
const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves [`render`] of the server's manager and database.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], render(&app.manager, &app.db)).into_response()
}

/// Renders the metrics as they are now. A recorder of its own per scrape: every value is read from the manager
/// then (counters as absolute values), so a job that ended leaves no series of its own behind. `backset bench
/// metrics` calls it beside hot copies to measure what scraping costs them.
pub(crate) fn render(manager: &HotCopyManager, db: &Database) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        manager.record_metrics();
        describe_gauge!(
            "backset_journal_retained_bytes",
            Unit::Bytes,
            "Journal bytes the SM keeps only for journal hot copies (not copied by one yet)."
        );
        describe_gauge!(
            "backset_sm_running",
            "1 while the SM takes commits (state RUNNING), 0 once its journal writer failed (state FAILED)."
        );
        for sm in db.archives() {
            let id = sm.identity();
            let labels = [("database", id.database_name), ("archive", id.archive_id.to_string())];
            gauge!("backset_journal_retained_bytes", &labels).set(sm.retained_journal_bytes() as f64);
            gauge!("backset_sm_running", &labels).set(if sm.writer_failure().is_none() { 1.0 } else { 0.0 });
        }
    });
    recorder.handle().render()
}
