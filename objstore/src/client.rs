//! [`ObjectClient`]: the operations on one `s3://bucket/prefix` that a backup set needs, blocking, over
//! object_store's S3 client.
//!
//! The engine's threads (the copier, restore, check) are not async: each call here blocks its caller while the
//! client's own runtime ([`RUNTIME_WORKER_THREADS`] threads) runs the requests, so a client must not be called, nor
//! dropped, from inside an async task (tokio forbids blocking there; the server calls the engine from blocking
//! threads). Names given to the operations (`rel`) are
//! `/`-separated and relative to the location's prefix; messages show the whole `s3://bucket/key`.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use tokio::task::JoinHandle;

use crate::config::S3Config;
use crate::error::{classify, ObjStoreError};
use crate::limits::{
    CONNECT_TIMEOUT, LIST_PAGE_KEYS, MAX_PARTS, MAX_PART_BYTES, MIN_PART_BYTES, MULTIPART_PARTS_IN_FLIGHT,
    REQUEST_TIMEOUT, RETRY_BACKOFF_BASE, RUNTIME_WORKER_THREADS,
};
use crate::location::S3Url;

/// The default region when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// An object as a listing or a `head` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name relative to the location's prefix.
    pub rel: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, as the store gives it.
    pub e_tag: Option<String>,
    /// When it was last written, as the store gives it.
    pub modified: std::time::SystemTime,
}

/// An object's `last_modified` as a [`SystemTime`](std::time::SystemTime).
fn modified(meta: &object_store::ObjectMeta) -> std::time::SystemTime {
    let millis = meta.last_modified.timestamp_millis();
    if millis >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

/// What stands at a name: an object, or a prefix with objects below it (what a directory is on object storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An object of this size.
    Object {
        /// Its size in bytes.
        size: u64,
    },
    /// No object, but objects below `name/`.
    Prefix,
}

/// One level of names below a prefix, as [`ObjectClient::list_dir`] gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// The names (last component only) that have objects below them, in key order.
    pub prefixes: Vec<String>,
    /// The objects at this level, with their last component as `rel`, in key order.
    pub objects: Vec<ObjectInfo>,
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object's ETag, as the store gives it.
    pub e_tag: Option<String>,
}

/// A client for one `s3://bucket/prefix`. `Debug` shows the location and the endpoint, never a credential.
pub struct ObjectClient {
    store: Arc<AmazonS3>,
    runtime: Arc<tokio::runtime::Runtime>,
    url: S3Url,
    endpoint: String,
    max_retries: usize,
}

impl fmt::Debug for ObjectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectClient").field("url", &self.url.to_string()).field("endpoint", &self.endpoint).finish()
    }
}

impl ObjectClient {
    /// A client for `url` with `config`: the endpoint checked (plain HTTP only to loopback unless allowed),
    /// credentials required, retries as configured. No request is made yet.
    pub fn new(url: S3Url, config: &S3Config) -> Result<Self, ObjStoreError> {
        let endpoint = config.checked_endpoint()?;
        let region = config.region.clone().unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let shown_endpoint = endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: config.retry.backoff_initial,
                max_backoff: config.retry.backoff_max,
                base: RETRY_BACKOFF_BASE,
            },
            max_retries: config.retry.max_retries,
            retry_timeout: config.retry.timeout,
        };
        let plain_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        let options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_allow_http(plain_http);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(url.bucket())
            .with_region(region)
            .with_retry(retry)
            .with_client_options(options)
            .with_allow_http(plain_http)
            .with_unsigned_payload(!config.signs_payloads());
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match &config.credentials {
            Some(creds) => {
                builder = builder
                    .with_access_key_id(&creds.access_key_id)
                    .with_secret_access_key(creds.secret_access_key.expose());
                if let Some(token) = &creds.session_token {
                    builder = builder.with_token(token.expose());
                }
            }
            None => {
                let provides = |name: &str| config.ambient.iter().any(|(k, _)| k == name);
                if !(provides("AWS_WEB_IDENTITY_TOKEN_FILE")
                    || provides("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                    || provides("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
                {
                    return Err(ObjStoreError::MissingCredentials { url: url.to_string() });
                }
                for (name, value) in &config.ambient {
                    if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value);
                    }
                }
            }
        }
        let store = builder
            .build()
            .map_err(|e| ObjStoreError::InvalidEndpoint { endpoint: shown_endpoint.clone(), why: e.to_string() })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKER_THREADS)
            .thread_name("backset-s3")
            .enable_all()
            .build()
            .map_err(ObjStoreError::Runtime)?;
        Ok(Self {
            store: Arc::new(store),
            runtime: Arc::new(runtime),
            url,
            endpoint: shown_endpoint,
            max_retries: config.retry.max_retries,
        })
    }

    /// The location.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn path(&self, rel: &str) -> Result<Path, ObjStoreError> {
        Path::parse(self.url.key(rel)).map_err(|e| ObjStoreError::Store {
            op: "name",
            object: self.url.show(rel),
            message: format!("not a valid object key: {e}"),
        })
    }

    fn err(&self, op: &'static str, rel: &str) -> impl FnOnce(object_store::Error) -> ObjStoreError + '_ {
        let object = self.url.show(rel);
        move |e| classify(op, object, self.url.bucket(), &self.endpoint, self.max_retries, e)
    }

    /// Stores `data` as `rel` in one request, replacing what was there.
    pub fn put(&self, rel: &str, data: Bytes) -> Result<Stored, ObjStoreError> {
        self.put_mode(rel, data, PutMode::Overwrite, "put")
    }

    /// Stores `data` as `rel` only if nothing is there (`If-None-Match: *`): of two racing writers exactly one
    /// succeeds; the other gets [`ObjStoreError::AlreadyExists`] and nothing is overwritten. The commit point of an
    /// element on object storage.
    pub fn put_create(&self, rel: &str, data: Bytes) -> Result<Stored, ObjStoreError> {
        self.put_mode(rel, data, PutMode::Create, "create")
    }

    fn put_mode(&self, rel: &str, data: Bytes, mode: PutMode, op: &'static str) -> Result<Stored, ObjStoreError> {
        let path = self.path(rel)?;
        let options = PutOptions { mode, ..Default::default() };
        let result = self
            .runtime
            .block_on(self.store.put_opts(&path, PutPayload::from(data), options))
            .map_err(self.err(op, rel))?;
        Ok(Stored { e_tag: result.e_tag })
    }

    /// Starts storing `pieces`, one after the other, as `rel` in one request (replacing what was there) on the
    /// client's runtime, and returns at once: the pieces are sent as they are (no copy into one buffer), and each
    /// is dropped once the request is done. [`PendingPut::wait`] gives the outcome.
    pub fn put_pieces(&self, rel: &str, pieces: Vec<Bytes>) -> Result<PendingPut, ObjStoreError> {
        let path = self.path(rel)?;
        let store = Arc::clone(&self.store);
        let payload: PutPayload = pieces.into_iter().collect();
        let handle = self.runtime.spawn(async move { store.put(&path, payload).await });
        Ok(PendingPut { rel: rel.to_owned(), op: "put", handle })
    }

    /// Starts a multipart upload of `rel`: parts go from the caller's buffers, at most
    /// [`MULTIPART_PARTS_IN_FLIGHT`] at once; the object appears only at [`Upload::finish`]. An upload dropped
    /// unfinished is aborted.
    pub fn upload(&self, rel: &str) -> Result<Upload<'_>, ObjStoreError> {
        let path = self.path(rel)?;
        let inner = self.runtime.block_on(self.store.put_multipart(&path)).map_err(self.err("upload", rel))?;
        Ok(Upload {
            client: self,
            rel: rel.to_owned(),
            inner: Some(inner),
            in_flight: VecDeque::new(),
            parts: 0,
            last_len: 0,
        })
    }

    /// The whole object `rel`, refused ([`ObjStoreError::TooLarge`]) before its body is read when longer than
    /// `max` bytes.
    pub fn get(&self, rel: &str, max: u64) -> Result<Bytes, ObjStoreError> {
        let path = self.path(rel)?;
        self.runtime.block_on(async {
            let result = self.store.get_opts(&path, GetOptions::default()).await.map_err(self.err("get", rel))?;
            if result.meta.size > max {
                return Err(ObjStoreError::TooLarge { object: self.url.show(rel), size: result.meta.size, max });
            }
            result.bytes().await.map_err(self.err("get", rel))
        })
    }

    /// The bytes `range` of `rel` (fewer at its end).
    pub fn get_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes, ObjStoreError> {
        let path = self.path(rel)?;
        self.runtime.block_on(self.store.get_range(&path, range)).map_err(self.err("get", rel))
    }

    /// What `rel` is, or `None` when there is no such object.
    pub fn head(&self, rel: &str) -> Result<Option<ObjectInfo>, ObjStoreError> {
        let path = self.path(rel)?;
        match self.runtime.block_on(self.store.head(&path)).map_err(self.err("head", rel)) {
            Ok(meta) => Ok(Some(ObjectInfo {
                rel: rel.to_owned(),
                size: meta.size,
                modified: modified(&meta),
                e_tag: meta.e_tag,
            })),
            Err(ObjStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object below `rel` (`rel` empty: below the location's prefix), at any depth, in key order.
    pub fn list(&self, rel: &str) -> Result<Vec<ObjectInfo>, ObjStoreError> {
        let key = self.url.key(rel);
        let prefix = if key.is_empty() { None } else { Some(self.path(rel)?) };
        let base = if self.url.prefix().is_empty() { String::new() } else { format!("{}/", self.url.prefix()) };
        // Below the prefix as a directory, as `ObjectStore::list` asks: `a/b/`, not `a/b` (which `a/bc` extends).
        let below = prefix.map(|p| format!("{p}{}", object_store::path::DELIMITER));
        let mut objects = self.runtime.block_on(async {
            let mut objects = Vec::new();
            let mut page_token = None;
            loop {
                let opts = PaginatedListOptions { max_keys: Some(LIST_PAGE_KEYS), page_token, ..Default::default() };
                let page = self.store.list_paginated(below.as_deref(), opts).await.map_err(self.err("list", rel))?;
                for meta in page.result.objects {
                    let full = meta.location.to_string();
                    let rel = full.strip_prefix(&base).unwrap_or(&full).to_owned();
                    objects.push(ObjectInfo { rel, size: meta.size, modified: modified(&meta), e_tag: meta.e_tag });
                }
                page_token = page.page_token;
                if page_token.is_none() {
                    break;
                }
            }
            Ok::<_, ObjStoreError>(objects)
        })?;
        objects.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(objects)
    }

    /// What stands at `rel`: an object, a prefix with objects below it, or nothing (`rel` empty: the location's
    /// prefix itself, never an object).
    pub fn stat(&self, rel: &str) -> Result<Option<Entry>, ObjStoreError> {
        if !rel.is_empty() {
            if let Some(info) = self.head(rel)? {
                return Ok(Some(Entry::Object { size: info.size }));
            }
        }
        self.stat_prefix(rel)
    }

    /// [`stat`](Self::stat) of a key the caller's layout makes a prefix, never an object: one listing, no HEAD
    /// (some S3-compatible servers that keep objects as files, `s3s-fs` among them, answer a HEAD of such a key with
    /// 500 rather than 404). `Some(Entry::Prefix)` when an object lies below `rel`, else `None`.
    pub fn stat_prefix(&self, rel: &str) -> Result<Option<Entry>, ObjStoreError> {
        let key = self.url.key(rel);
        let prefix = if key.is_empty() { None } else { Some(self.path(rel)?) };
        let first = self.runtime.block_on(async { self.store.list(prefix.as_ref()).next().await });
        match first {
            None => Ok(None),
            Some(Ok(_)) => Ok(Some(Entry::Prefix)),
            Some(Err(e)) => Err(self.err("list", rel)(e)),
        }
    }

    /// The names one level below `rel` (`rel` empty: below the location's prefix): the prefixes that have objects
    /// below them, and the objects.
    pub fn list_dir(&self, rel: &str) -> Result<DirListing, ObjStoreError> {
        let key = self.url.key(rel);
        let prefix = if key.is_empty() { None } else { Some(self.path(rel)?) };
        let listed =
            self.runtime.block_on(self.store.list_with_delimiter(prefix.as_ref())).map_err(self.err("list", rel))?;
        let last = |p: &Path| p.filename().unwrap_or_default().to_owned();
        let mut listing = DirListing {
            prefixes: listed.common_prefixes.iter().map(last).collect(),
            objects: listed
                .objects
                .into_iter()
                .map(|m| ObjectInfo { rel: last(&m.location), size: m.size, modified: modified(&m), e_tag: m.e_tag })
                .collect(),
        };
        listing.prefixes.sort();
        listing.objects.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(listing)
    }

    /// The object `rel` to stream from, and its size: a [`Read`](std::io::Read) that holds one chunk of the
    /// response at a time (never the whole object). A failure mid-stream, or a body shorter than the size, is a
    /// read error naming the object, never a short read.
    pub fn open(&self, rel: &str) -> Result<(ObjectReader, u64), ObjStoreError> {
        let path = self.path(rel)?;
        let result =
            self.runtime.block_on(self.store.get_opts(&path, GetOptions::default())).map_err(self.err("get", rel))?;
        let size = result.meta.size;
        let object = self.url.show(rel);
        let classify_err: ErrFn = {
            let (bucket, endpoint, retries) = (self.url.bucket().to_owned(), self.endpoint.clone(), self.max_retries);
            let object = object.clone();
            Box::new(move |e| classify("get", object.clone(), &bucket, &endpoint, retries, e))
        };
        let reader = ObjectReader {
            runtime: self.runtime.clone(),
            stream: result.into_stream(),
            chunk: Bytes::new(),
            remaining: size,
            object,
            classify: classify_err,
        };
        Ok((reader, size))
    }

    /// Deletes `rel` and every object below `rel/` (`rel` empty: everything below the location's prefix), in bulk
    /// requests of up to 1000 keys (S3's `DeleteObjects`); an object of a sibling prefix that shares the first
    /// letters (`full2` beside `full`) is not touched. Gives how many objects were deleted.
    pub fn delete_tree(&self, rel: &str) -> Result<usize, ObjStoreError> {
        let mut paths = Vec::new();
        if !rel.is_empty() && self.head(rel)?.is_some() {
            paths.push(self.path(rel)?);
        }
        self.delete_listed(rel, paths)
    }

    /// [`delete_tree`](Self::delete_tree) of a key the caller's layout makes a prefix, never an object: the objects
    /// below `rel/` only, without a HEAD of `rel` (see [`stat_prefix`](Self::stat_prefix)).
    pub fn delete_prefix(&self, rel: &str) -> Result<usize, ObjStoreError> {
        self.delete_listed(rel, Vec::new())
    }

    /// Deletes `paths` and every object below `rel/`.
    fn delete_listed(&self, rel: &str, mut paths: Vec<Path>) -> Result<usize, ObjStoreError> {
        for object in self.list(rel)? {
            paths.push(self.path(&object.rel)?);
        }
        let count = paths.len();
        self.runtime.block_on(async {
            let locations = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
            let mut deleted = self.store.delete_stream(locations);
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.err("delete", rel)(e)),
                }
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Deletes `rel`; deleting an object that is not there succeeds (as S3 does).
    pub fn delete(&self, rel: &str) -> Result<(), ObjStoreError> {
        let path = self.path(rel)?;
        match self.runtime.block_on(self.store.delete(&path)).map_err(self.err("delete", rel)) {
            Ok(()) | Err(ObjStoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

type ErrFn = Box<dyn Fn(object_store::Error) -> ObjStoreError + Send + Sync>;

/// A streamed object (see [`ObjectClient::open`]).
pub struct ObjectReader {
    runtime: Arc<tokio::runtime::Runtime>,
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    remaining: u64,
    object: String,
    classify: ErrFn,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader").field("object", &self.object).field("remaining", &self.remaining).finish()
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other((self.classify)(e))),
                None if self.remaining > 0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("get {}: the store ended the object {} bytes early", self.object, self.remaining),
                    ))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

/// A put started by [`ObjectClient::put_pieces`], or a multipart upload being completed
/// ([`Upload::finish_in_background`]).
#[derive(Debug)]
pub struct PendingPut {
    rel: String,
    /// The operation an error names: `put` or `complete upload`.
    op: &'static str,
    handle: JoinHandle<object_store::Result<object_store::PutResult>>,
}

impl PendingPut {
    /// Waits for the put (on `client`, which started it) to be stored or to fail.
    pub fn wait(self, client: &ObjectClient) -> Result<Stored, ObjStoreError> {
        let result = match client.runtime.block_on(self.handle) {
            Ok(result) => result,
            Err(join) => Err(object_store::Error::JoinError { source: join }),
        };
        result.map(|r| Stored { e_tag: r.e_tag }).map_err(client.err(self.op, &self.rel))
    }
}

/// A multipart upload in progress (see [`ObjectClient::upload`]).
pub struct Upload<'a> {
    client: &'a ObjectClient,
    rel: String,
    inner: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
    parts: usize,
    last_len: usize,
}

impl fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload").field("object", &self.client.url.show(&self.rel)).field("parts", &self.parts).finish()
    }
}

impl Upload<'_> {
    /// Sends `data` as the next part. Every part but the last must have at least [`MIN_PART_BYTES`] (checked when
    /// the next part comes); at most [`MAX_PART_BYTES`] and [`MAX_PARTS`] parts. Waits for the oldest part to be
    /// stored when [`MULTIPART_PARTS_IN_FLIGHT`] are in flight. On an error the upload is aborted.
    pub fn put_part(&mut self, data: Bytes) -> Result<(), ObjStoreError> {
        self.put_part_pieces(vec![data])
    }

    /// Sends `pieces`, one after the other, as the next part (no copy into one buffer; each piece is dropped once
    /// its part is stored): as [`put_part`](Self::put_part).
    pub fn put_part_pieces(&mut self, pieces: Vec<Bytes>) -> Result<(), ObjStoreError> {
        let data: PutPayload = pieces.into_iter().collect();
        let object = || self.client.url.show(&self.rel);
        let part = self.parts + 1;
        let refused = if self.parts > 0 && self.last_len < MIN_PART_BYTES {
            Some(ObjStoreError::PartTooSmall { object: object(), part: self.parts, len: self.last_len })
        } else if part > MAX_PARTS || data.content_length() > MAX_PART_BYTES {
            Some(ObjStoreError::PartLimit { object: object(), part, len: data.content_length() })
        } else {
            None
        };
        if let Some(e) = refused {
            self.abort_now();
            return Err(e);
        }
        while self.in_flight.len() >= MULTIPART_PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        self.last_len = data.content_length();
        self.parts = part;
        let Some(inner) = self.inner.as_mut() else { unreachable!("an upload is used after it ended") };
        let future = inner.put_part(data);
        self.in_flight.push_back(self.client.runtime.spawn(future));
        Ok(())
    }

    /// Parts sent so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Parts sent and not yet stored (at most [`MULTIPART_PARTS_IN_FLIGHT`]).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn wait_oldest(&mut self) -> Result<(), ObjStoreError> {
        let Some(handle) = self.in_flight.pop_front() else { return Ok(()) };
        let result = match self.client.runtime.block_on(handle) {
            Ok(result) => result,
            Err(join) => Err(object_store::Error::JoinError { source: join }),
        };
        result.map_err(|e| {
            self.abort_now();
            self.client.err("upload", &self.rel)(e)
        })
    }

    /// Waits for every part, then completes the upload: the object appears whole, or not at all. An upload with
    /// no part stores an empty object.
    pub fn finish(self) -> Result<Stored, ObjStoreError> {
        let client = self.client;
        self.finish_in_background()?.wait(client)
    }

    /// As [`finish`](Self::finish), but returns at once: the parts still in flight and the completion run on the
    /// client's runtime while the caller goes on (with the next object's upload, say), and [`PendingPut::wait`]
    /// gives the outcome. If a part or the completion fails, the upload is aborted (its stored parts deleted) and
    /// the wait returns that error. The parts' buffers are held until their part is stored, as before.
    pub fn finish_in_background(mut self) -> Result<PendingPut, ObjStoreError> {
        if self.parts == 0 {
            self.put_part(Bytes::new())?;
        }
        let mut parts = std::mem::take(&mut self.in_flight);
        let Some(mut inner) = self.inner.take() else { unreachable!("an upload is finished twice") };
        let handle = self.client.runtime.spawn(async move {
            let mut failed = None;
            while let Some(part) = parts.pop_front() {
                let result = match part.await {
                    Ok(result) => result,
                    Err(join) => Err(object_store::Error::JoinError { source: join }),
                };
                if let Err(e) = result {
                    failed = Some(e);
                    break;
                }
            }
            let result = match failed {
                None => inner.complete().await,
                Some(e) => Err(e),
            };
            if result.is_err() {
                parts.iter().for_each(JoinHandle::abort);
                let _ = inner.abort().await;
            }
            result
        });
        Ok(PendingPut { rel: self.rel.clone(), op: "complete upload", handle })
    }

    /// Abandons the upload: the parts already stored are deleted and no object appears.
    pub fn abort(mut self) -> Result<(), ObjStoreError> {
        for handle in self.in_flight.drain(..) {
            let _ = self.client.runtime.block_on(handle);
        }
        match self.inner.take() {
            Some(mut inner) => {
                self.client.runtime.block_on(inner.abort()).map_err(self.client.err("abort upload", &self.rel))
            }
            None => Ok(()),
        }
    }

    /// Best-effort abort after an error (the error the caller gets is the first one).
    fn abort_now(&mut self) {
        for handle in self.in_flight.drain(..) {
            handle.abort();
        }
        if let Some(mut inner) = self.inner.take() {
            if let Err(e) = self.client.runtime.block_on(inner.abort()) {
                tracing::warn!(object = %self.client.url.show(&self.rel), error = %e, "abort multipart upload");
            }
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.abort_now();
        }
    }
}
