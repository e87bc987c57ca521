//! The data API of the reference store (not nuoadmin's): commit a transaction of puts and deletes, read a key.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use backset_refstore::limits::MAX_OPS_PER_TXN;
use backset_refstore::{StoreError, Txn};
use serde::Deserialize;

use super::http::{blocking, check_db, path, BodyLimit, HttpError, JsonBody, Reply};
use super::{App, MAX_TXN_BODY_BYTES};
use crate::api::TxnResponse;

/// The body of a data API transaction. Each list keeps at most [`MAX_OPS_PER_TXN`] operations while it is parsed and
/// counts the rest, so a body of millions of keys costs no more memory than its bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TxnBody {
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

/// A JSON array (or, of pairs, an object) of which at most [`MAX_OPS_PER_TXN`] items are kept; `count` counts them
/// all.
#[derive(Debug)]
pub(super) struct Bounded<T> {
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
pub(super) async fn transaction(
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
pub(super) async fn key(
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
