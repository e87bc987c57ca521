//! The routes: every endpoint of the admin API under [`API_PREFIX`], `GET /metrics` and `GET /health`, the token
//! check in front of them, and the JSON answers to an unknown path or method.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use super::data::{key, transaction};
use super::health::health;
use super::http::{authorize, HttpError};
use super::metrics::metrics;
use super::nuoadmin::{cancel, database_status, hot_copy, hot_copy_simple, processes, status};
use super::{App, MAX_BODY_BYTES};
use crate::api::API_PREFIX;

/// The routes.
pub(super) fn router(app: Arc<App>) -> Router {
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
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "no such endpoint; see docs/CLI.md for the API") })
        .method_not_allowed_fallback(|| async {
            HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "this endpoint does not take that method")
        })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), authorize))
        // Every body is read by `JsonBody`, within its endpoint's limit; this bounds any other reader.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}
