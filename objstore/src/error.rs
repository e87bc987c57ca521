//! What can go wrong on object storage, each with what to do. Messages are one line, name the object (or the
//! bucket, or the endpoint) and never carry a secret.

use crate::limits::{MAX_PARTS, MAX_PART_BYTES, MIN_PART_BYTES};
use crate::location::LocationError;

/// An error of a location, a client's configuration or an operation on object storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjStoreError {
    /// The location is not a valid path or `s3://` URL.
    #[error(transparent)]
    Location(#[from] LocationError),

    /// `AWS_ENDPOINT_URL` (or the configured endpoint) is not a usable URL.
    #[error("object storage endpoint {endpoint:?}: {why}: give a URL such as https://s3.example.com or http://127.0.0.1:9000")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        why: String,
    },

    /// A plain `http://` endpoint that is not a loopback address, without `allow_http`.
    #[error(
        "object storage endpoint {endpoint}: plain http:// is refused for a host that is not a loopback address \
         (credentials and data would cross the network unencrypted): use https://, or set AWS_ALLOW_HTTP=true \
         (allow-http = true in serve --config's [s3]) if this network is trusted"
    )]
    InsecureEndpoint {
        /// The endpoint as given.
        endpoint: String,
    },

    /// No credentials were given.
    #[error(
        "no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for \
         temporary keys), AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or the keys in serve --config \
         (instance-profile credentials are not read)"
    )]
    MissingCredentials {
        /// The location they were needed for.
        url: String,
    },

    /// One of the access key id and the secret access key was given without the other.
    #[error("credentials for {url}: {given} is set but {missing} is not: set both, or neither")]
    HalfCredentials {
        /// The location they were given for.
        url: String,
        /// The one that is set.
        given: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },

    /// The bucket does not exist on the store.
    #[error("{op} {object}: the bucket {bucket:?} does not exist on {endpoint}: create it, or correct the URL")]
    NoSuchBucket {
        /// What was being done.
        op: &'static str,
        /// The object (or prefix) it was done to.
        object: String,
        /// The bucket.
        bucket: String,
        /// The store's endpoint.
        endpoint: String,
    },

    /// The store refused the credentials or the operation (401, 403).
    #[error(
        "{op} {object}: access denied by the store ({message}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (or the keys in serve --config) and that they may {op} in this bucket"
    )]
    Denied {
        /// What was being done.
        op: &'static str,
        /// The object (or prefix) it was done to.
        object: String,
        /// The store's own words.
        message: String,
    },

    /// The object does not exist.
    #[error("{op} {object}: no such object")]
    NotFound {
        /// What was being done.
        op: &'static str,
        /// The object.
        object: String,
    },

    /// A create-only put found the object already there: another writer created it first.
    #[error("create {object}: it already exists (another writer created it first); nothing was overwritten")]
    AlreadyExists {
        /// The object.
        object: String,
    },

    /// The store kept answering "slow down" (503, 429) after every retry.
    #[error(
        "{op} {object}: the store is throttling requests and still was after {retries} retries ({message}): \
         lower --max-rate or the number of concurrent jobs, or retry later"
    )]
    Throttled {
        /// What was being done.
        op: &'static str,
        /// The object.
        object: String,
        /// Retries made ([`crate::limits::RETRY_MAX`] unless configured).
        retries: usize,
        /// The store's own words.
        message: String,
    },

    /// The store could not be reached (connection refused or reset, timed out) after every retry.
    #[error(
        "{op} {object}: cannot reach the store at {endpoint} ({message}): check that it is running and that \
         AWS_ENDPOINT_URL is right"
    )]
    Unreachable {
        /// What was being done.
        op: &'static str,
        /// The object.
        object: String,
        /// The store's endpoint.
        endpoint: String,
        /// What the connection said.
        message: String,
    },

    /// An object longer than the caller's bound.
    #[error(
        "get {object}: {size} bytes, over the {max} bytes such an object may have: it is not Backset's, or damaged"
    )]
    TooLarge {
        /// The object.
        object: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },

    /// A part of a multipart upload that is neither the last nor of S3's minimum size.
    #[error(
        "upload {object}: part {part} has {len} bytes: every part but the last needs at least {MIN_PART_BYTES} \
         (S3's minimum); make the parts larger"
    )]
    PartTooSmall {
        /// The object.
        object: String,
        /// The part's number (from 1).
        part: usize,
        /// Its length.
        len: usize,
    },

    /// A part over S3's largest, or more parts than S3 takes.
    #[error(
        "upload {object}: part {part} of {len} bytes: S3 takes at most {MAX_PARTS} parts of at most \
         {MAX_PART_BYTES} bytes; make the parts larger (or smaller)"
    )]
    PartLimit {
        /// The object.
        object: String,
        /// The part's number (from 1).
        part: usize,
        /// Its length.
        len: usize,
    },

    /// The client's runtime could not be started.
    #[error("start the object-storage client's threads: {0}")]
    Runtime(#[source] std::io::Error),

    /// Any other failure of the store, in its own words.
    #[error("{op} {object}: {message}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object.
        object: String,
        /// The store's (or the client's) own words, on one line.
        message: String,
    },
}

/// Classifies an object_store error of `op` on `object` (see [`ObjStoreError`]).
pub(crate) fn classify(
    op: &'static str,
    object: String,
    bucket: &str,
    endpoint: &str,
    retries: usize,
    err: object_store::Error,
) -> ObjStoreError {
    let message = one_line(&err);
    if message.contains("NoSuchBucket") {
        return ObjStoreError::NoSuchBucket { op, object, bucket: bucket.to_owned(), endpoint: endpoint.to_owned() };
    }
    match err {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } if op == "create" => {
            return ObjStoreError::AlreadyExists { object };
        }
        object_store::Error::NotFound { .. } => return ObjStoreError::NotFound { op, object },
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            return ObjStoreError::Denied { op, object, message };
        }
        _ => {}
    }
    // A listing's refusal comes back as a generic error with the status and S3's code in its text.
    if message.contains("403 Forbidden")
        || message.contains("SignatureDoesNotMatch")
        || message.contains("InvalidAccessKeyId")
        || message.contains("<Code>AccessDenied</Code>")
    {
        return ObjStoreError::Denied { op, object, message };
    }
    if let Some(kind) = http_error_kind(&err) {
        use object_store::client::HttpErrorKind as K;
        if matches!(kind, K::Connect | K::Timeout | K::Interrupted | K::Request) {
            return ObjStoreError::Unreachable { op, object, endpoint: endpoint.to_owned(), message };
        }
    }
    if message.contains("SlowDown")
        || message.contains("503 Service Unavailable")
        || message.contains("429 Too Many Requests")
    {
        return ObjStoreError::Throttled { op, object, retries, message };
    }
    ObjStoreError::Store { op, object, message }
}

/// The kind of the HTTP error under `err`, if a request failed before it had a response.
fn http_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<object_store::client::HttpErrorKind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        next = e.source();
    }
    None
}

/// `err` and its sources on one line (S3's XML bodies hold newlines).
fn one_line(err: &object_store::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
