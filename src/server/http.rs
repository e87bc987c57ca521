//! What every endpoint shares: the error answer (and the engine's errors as statuses), the blocking pool, the bearer
//! token check, the one body extractor ([`JsonBody`], within each endpoint's limit) and the one query extractor
//! ([`Params`]), and the lenient number and ordered-object readers of the request bodies.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use backset_engine::hotcopy::HotCopyError;
use backset_engine::paths::CreateDirError;
use backset_refstore::{CommitError, StoreError};
use serde::Deserialize;

use super::App;
use crate::api::ApiError;

/// An error answer.
#[derive(Debug)]
pub(super) struct HttpError(StatusCode, String);

impl HttpError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    pub(super) fn bad(message: impl Into<String>) -> Self {
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

pub(super) type Reply<T> = Result<Json<T>, HttpError>;

/// Runs a blocking engine call on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("request failed: {e}"))))
}

/// Checks the bearer token when the server has one, in time independent of the given token (its length and where it
/// differs).
pub(super) async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
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
pub(super) fn base_uri(app: &App, headers: &HeaderMap) -> String {
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

pub(super) fn check_db(app: &App, db: &str) -> Result<(), HttpError> {
    if db == app.db.name() {
        Ok(())
    } else {
        Err(HttpError::new(StatusCode::NOT_FOUND, format!("no database {db:?}; this server runs {:?}", app.db.name())))
    }
}

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, HttpError> {
    p.map(|Path(v)| v).map_err(|e| HttpError::bad(format!("bad path: {}", e.body_text())))
}

/// What a request body may hold: the most bytes an endpoint reads ([`JsonBody`]).
pub(super) trait BodyLimit {
    /// What the body is, for the answer to one over the limit (`a transaction`).
    const WHAT: &'static str;
    /// The most bytes a body of this server may take.
    fn max_bytes(app: &App) -> usize;
}

/// A JSON request body of type `T`: the one extractor of every endpoint that takes a body. It reads at most
/// `T::max_bytes`: a larger `Content-Length` is answered 413 before anything of the body is read, a body without one
/// (chunked) as soon as it passes the limit; the JSON is parsed only then.
pub(super) struct JsonBody<T>(pub(super) T);

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
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
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
pub(super) fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
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
pub(super) fn entries<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
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

/// Query parameters that name a list, so they may be given more than once (nuoadmin's paging, [`crate::paging`]:
/// each occurrence adds its comma-separated names).
const LIST_PARAMS: [&str; 3] = ["filterBy", "orderBy", "descendingFields"];

/// A request's query parameters, in order: the one extractor of every endpoint that takes a query. A parameter
/// given twice (but those of [`LIST_PARAMS`]) is refused with 400 naming it: which of the two should count would be
/// a guess (`?hotCopyId=a&hotCopyId=b` used to take the last one silently).
pub(super) struct Params(pub(super) Vec<(String, String)>);

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
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` parsed as `what`, if given.
    pub(super) fn param<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, HttpError> {
        self.get(name)
            .map(|v| v.parse::<T>().map_err(|_| HttpError::bad(format!("{name}={v:?} is not {what}"))))
            .transpose()
    }

    /// As [`param`](Self::param), for a parameter the endpoint needs.
    pub(super) fn required<T: FromStr>(&self, name: &str, what: &str) -> Result<T, HttpError> {
        self.param(name, what)?.ok_or_else(|| HttpError::bad(format!("give the query parameter {name} ({what})")))
    }
}
