//! S3-compatible servers on loopback for Backset's tests (a dev-dependency only).
//!
//! - [`S3sServer`]: `s3s-fs` served in-process on `127.0.0.1`, over a fresh directory, with one bucket and SigV4
//!   credentials. The ordinary suite uses it: `cargo test` needs nothing installed.
//! - [`MotoServer`]: moto's server (`moto_server`, PyPI `moto[server]`, pinned in `.ci/run`) for protocol-fidelity
//!   tests. When it is not installed, [`MotoServer::start`] prints why and gives `None` (the test returns), unless
//!   `BACKSET_REQUIRE_MOTO` is set (as `.ci/run` sets it): then it panics, so CI cannot skip those tests.
//! - [`FaultServer`]: a loopback HTTP server that answers every request with one fixed status and S3 error (503
//!   `SlowDown`), counting the requests: what a throttling store does, to test retries and their final error.
//! - [`SlowDownProxy`]: a TCP proxy in front of a real server that answers the next N requests with 503 `SlowDown`
//!   and forwards the others: throttling injected on the network in front of a store that never throttles.
//!
//! One deliberate difference from S3: `s3s-fs` checks `If-None-Match: *` before it writes, not atomically with the
//! write, so two racing create-only puts could both succeed. [`S3sServer`] serializes the conditional writes (a put
//! or a multipart completion with `If-None-Match`) behind one lock, which is what S3 guarantees; moto's server runs
//! the same race test unchanged. And two fixes where a directory shows through: `s3s-fs` creates a missing bucket's
//! directory on a put, and answers 500 to a get or head of a key that is a directory on its disk (`a` when `a/b`
//! exists); the wrapper answers `NoSuchBucket` and `NoSuchKey` there, as S3 does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};

/// The bucket every test server is started with.
pub const TEST_BUCKET: &str = "backset-test";

/// The access key id the test servers accept.
pub const TEST_ACCESS_KEY_ID: &str = "backset-test-key";

/// The secret access key the test servers accept. Tests that check a secret is never shown look for this string.
pub const TEST_SECRET_ACCESS_KEY: &str = "backset-test-secret-7f3a9c";

/// How long a test waits for a server it started to accept connections: 60 s (moto's first start imports a lot of
/// Python on a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a test server listens and the credentials it accepts.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bucket that exists on it ([`TEST_BUCKET`]).
    pub bucket: String,
    /// The access key id it accepts.
    pub access_key_id: String,
    /// The secret access key it accepts.
    pub secret_access_key: String,
}

impl Endpoint {
    /// The standard `AWS_*` variables a client of this server is configured with (what `backset` reads).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}

/// `s3s-fs` served in-process on a loopback port, over a fresh temporary directory holding [`TEST_BUCKET`]. Dropping
/// it (or [`stop`](Self::stop)) stops the server: the listener and every open connection close.
pub struct S3sServer {
    endpoint: Endpoint,
    runtime: Option<tokio::runtime::Runtime>,
    root: tempfile::TempDir,
}

impl std::fmt::Debug for S3sServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3sServer").field("url", &self.endpoint.url).field("root", &self.root.path()).finish()
    }
}

impl S3sServer {
    /// Starts a server with a fresh root directory (under `BACKSET_TEST_DIR` when set, else the system's temporary
    /// directory) and the bucket [`TEST_BUCKET`].
    pub fn start() -> Self {
        let root = match std::env::var_os("BACKSET_TEST_DIR") {
            Some(dir) => tempfile::Builder::new().prefix("s3s-").tempdir_in(dir),
            None => tempfile::Builder::new().prefix("s3s-").tempdir(),
        }
        .expect("create the S3 server's root directory");
        std::fs::create_dir(root.path().join(TEST_BUCKET)).expect("create the test bucket's directory");
        let mut server = Self {
            endpoint: Endpoint {
                url: String::new(),
                bucket: TEST_BUCKET.to_owned(),
                access_key_id: TEST_ACCESS_KEY_ID.to_owned(),
                secret_access_key: TEST_SECRET_ACCESS_KEY.to_owned(),
            },
            runtime: None,
            root,
        };
        server.serve_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        server
    }

    /// Serves the root directory on `addr` (port 0: one the OS picks), and sets the endpoint's URL.
    fn serve_on(&mut self, addr: SocketAddr) {
        let root = &self.root;
        let fs = s3s_fs::FileSystem::new(root.path()).expect("open the S3 server's root directory");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(SerializedCreates {
                fs,
                root: root.path().to_owned(),
                lock: tokio::sync::Mutex::new(()),
            });
            b.set_auth(s3s::auth::SimpleAuth::from_single(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY));
            b.build()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s-fs")
            .enable_all()
            .build()
            .expect("start the S3 server's runtime");
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind(addr)).expect("bind the S3 server to a loopback port");
        let addr = listener.local_addr().expect("the S3 server's address");
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                // A response's head and body go out in separate writes: with Nagle's algorithm the body waits for
                // the client's delayed ACK of the head (40 ms a request on Linux).
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        self.endpoint.url = format!("http://{addr}");
        self.runtime = Some(runtime);
    }

    /// The server the tests of this process that call the engine in-process share, started by the first caller:
    /// the engine reads its store's endpoint and keys from the process's environment (the standard `AWS_*`
    /// variables), which this sets to the server's ([`Endpoint::env`]). The server stops when the last holder drops
    /// its handle; the next call starts a fresh one and sets the environment again (no test of this process is
    /// using the old one then). Tests on one server keep apart by their prefixes.
    pub fn shared() -> Arc<Self> {
        static SHARED: std::sync::Mutex<std::sync::Weak<S3sServer>> = std::sync::Mutex::new(std::sync::Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        for (name, value) in server.endpoint.env() {
            std::env::set_var(name, value);
        }
        *shared = Arc::downgrade(&server);
        server
    }

    /// Where it listens and what it accepts.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The directory the server keeps its buckets in (`<root>/<bucket>/<key>`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file that holds `key` of [`TEST_BUCKET`].
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.path().join(TEST_BUCKET).join(key)
    }

    /// Stops the server: its listener and every connection close (a client then gets "connection refused").
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl S3sServer {
    /// Starts the server again after [`stop`](Self::stop), on the same port and over the same directory: what was
    /// stored is there again, at the same endpoint.
    pub fn restart(&mut self) {
        assert!(self.runtime.is_none(), "restart a stopped server");
        let addr: SocketAddr =
            self.endpoint.url.strip_prefix("http://").and_then(|a| a.parse().ok()).expect("the server's address");
        self.serve_on(addr);
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s3s-fs` with its conditional writes serialized (see the crate docs); every other call passes straight through.
struct SerializedCreates {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl SerializedCreates {
    /// S3's answer to a write into a bucket that does not exist.
    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3s::s3_error!(NoSuchBucket, "The specified bucket does not exist"))
        }
    }

    /// S3's answer to a get or head of a key that is only a prefix of other keys.
    fn not_a_directory(&self, bucket: &str, key: &str) -> S3Result<()> {
        if self.root.join(bucket).join(key).is_dir() {
            Err(s3s::s3_error!(NoSuchKey, "The specified key does not exist."))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl S3 for SerializedCreates {
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        if req.input.if_none_match.is_some() || req.input.if_match.is_some() {
            let _serial = self.lock.lock().await;
            self.fs.put_object(req).await
        } else {
            self.fs.put_object(req).await
        }
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if req.input.if_none_match.is_some() || req.input.if_match.is_some() {
            let _serial = self.lock.lock().await;
            self.fs.complete_multipart_upload(req).await
        } else {
            self.fs.complete_multipart_upload(req).await
        }
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.not_a_directory(&req.input.bucket, &req.input.key)?;
        self.fs.get_object(req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.not_a_directory(&req.input.bucket, &req.input.key)?;
        self.fs.head_object(req).await
    }
    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }
}

/// moto's S3 server (`moto_server`), started on a free loopback port with the bucket [`TEST_BUCKET`]; killed when
/// dropped. moto accepts any credentials (it does not check signatures unless told to).
#[derive(Debug)]
pub struct MotoServer {
    endpoint: Endpoint,
    child: Child,
}

/// The variable that names the `moto_server` executable (`.ci/run` sets it to the one in its virtual environment).
pub const MOTO_SERVER_VAR: &str = "BACKSET_MOTO_SERVER";

/// The variable that makes a missing moto a failure instead of a skip (`.ci/run` sets it to 1).
pub const REQUIRE_MOTO_VAR: &str = "BACKSET_REQUIRE_MOTO";

impl MotoServer {
    /// Starts moto's server, or prints why not and gives `None` when it is not installed (`BACKSET_MOTO_SERVER`
    /// unset and no `moto_server` on `PATH`). Panics instead of skipping when `BACKSET_REQUIRE_MOTO` is set.
    pub fn start(test: &str) -> Option<Self> {
        let program = match std::env::var_os(MOTO_SERVER_VAR) {
            Some(p) => PathBuf::from(p),
            None => match find_on_path("moto_server") {
                Some(p) => p,
                None => {
                    let why = format!(
                        "{test}: moto's server is not installed (no {MOTO_SERVER_VAR}, no moto_server on PATH); \
                         .ci/run installs it (pip install 'moto[server]' in target/moto-venv)"
                    );
                    if std::env::var_os(REQUIRE_MOTO_VAR).is_some() {
                        panic!("{why}, and {REQUIRE_MOTO_VAR} says it must be there");
                    }
                    eprintln!("skipped: {why}");
                    return None;
                }
            },
        };
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut server = Self {
            endpoint: Endpoint {
                url: format!("http://127.0.0.1:{port}"),
                bucket: TEST_BUCKET.to_owned(),
                access_key_id: TEST_ACCESS_KEY_ID.to_owned(),
                secret_access_key: TEST_SECRET_ACCESS_KEY.to_owned(),
            },
            child,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        // moto answers PUT /<bucket> (CreateBucket) without a signature: that is both the readiness probe and the
        // bucket's creation.
        loop {
            if let Ok(status) = http_request(addr, "PUT", &format!("/{TEST_BUCKET}")) {
                assert_eq!(status, 200, "moto: create bucket {TEST_BUCKET}: HTTP {status}");
                break;
            }
            if let Ok(Some(exit)) = server.child.try_wait() {
                panic!("{} exited at start ({exit}); run it by hand to see why", program.display());
            }
            assert!(Instant::now() < deadline, "moto's server did not answer on {addr} within {START_TIMEOUT:?}");
            thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// Where it listens and what it accepts.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback HTTP server that answers every request with one status and an S3 error body, and counts the requests
/// it answered. Stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddr,
}

impl FaultServer {
    /// Answers every request with `503 Service Unavailable` and S3's `SlowDown` error, as a throttling store does.
    pub fn slow_down() -> Self {
        Self::start(503, "Service Unavailable", "SlowDown", "Please reduce your request rate.")
    }

    /// Answers every request with `status` and the S3 error `code`/`message`.
    pub fn start(status: u16, reason: &'static str, code: &'static str, message: &'static str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the fault server");
        let addr = listener.local_addr().expect("the fault server's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let count = count.clone();
                thread::spawn(move || answer_all(stream, status, reason, code, message, &count));
            }
        });
        Self { url: format!("http://{addr}"), requests, stop, addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop to see `stop`
    }
}

/// Answers each request on one connection (keep-alive) until the client closes it.
fn answer_all(stream: TcpStream, status: u16, reason: &str, code: &str, message: &str, count: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let response = error_response(status, reason, code, message);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A loopback TCP proxy in front of a real S3 server that answers the next N requests itself with `503 Service
/// Unavailable` and S3's `SlowDown` error (a throttling store, on the network), and forwards every other request
/// unchanged (its signature stays valid: the client signed the proxy's host, which the request carries); it counts the
/// requests it forwards at once ([`most_in_flight`](Self::most_in_flight)), and can hold the completions of multipart
/// uploads ([`hold_completions`](Self::hold_completions)). Stops when dropped.
///
/// Each connection is read request by request (head, then a `Content-Length` body): a request to fail is answered on
/// the same connection (keep-alive, as S3 does); a request to forward goes to the server on a connection of its own
/// with `Connection: close`, whose whole answer is relayed before the client's connection is closed too (the
/// client opens a new one for its next request, which the proxy judges again).
#[derive(Debug)]
pub struct SlowDownProxy {
    url: String,
    fail_left: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    flight: Arc<Flight>,
    hold: Arc<Hold>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddr,
}

/// Whether a [`SlowDownProxy`] holds the completions of multipart uploads, and how many it holds now.
#[derive(Debug, Default)]
struct Hold {
    holding: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    held: AtomicUsize,
}

impl Hold {
    /// Waits while completions are held, counted in `held`.
    fn pass(&self) {
        let mut holding = self.holding.lock().unwrap();
        if *holding {
            self.held.fetch_add(1, Ordering::SeqCst);
            while *holding {
                holding = self.released.wait(holding).unwrap();
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn set(&self, hold: bool) {
        *self.holding.lock().unwrap() = hold;
        self.released.notify_all();
    }
}

/// Requests a [`SlowDownProxy`] is forwarding now, and the most it forwarded at once.
#[derive(Debug, Default)]
struct Flight {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

/// The message of the proxy's `SlowDown` errors (S3's own words).
pub const SLOW_DOWN_MESSAGE: &str = "Please reduce your request rate.";

impl SlowDownProxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`) that forwards everything until told to fail.
    pub fn start(upstream: &str) -> Self {
        let upstream: SocketAddr =
            upstream.strip_prefix("http://").and_then(|a| a.parse().ok()).expect("an upstream http://IP:PORT");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let fail_left = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let flight = Arc::new(Flight::default());
        let hold = Arc::new(Hold::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (fail, count, flying, holding, stopped) =
            (fail_left.clone(), answered.clone(), flight.clone(), hold.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (fail, count, flying, holding) = (fail.clone(), count.clone(), flying.clone(), holding.clone());
                thread::spawn(move || proxy_connection(stream, upstream, &fail, &count, &flying, &holding));
            }
        });
        Self { url: format!("http://{addr}"), fail_left, answered, flight, hold, stop, addr }
    }

    /// From now on, holds each completion of a multipart upload (`POST ...?uploadId=...`) before forwarding it,
    /// until [`release_completions`](Self::release_completions) (or the proxy is dropped).
    pub fn hold_completions(&self) {
        self.hold.set(true);
    }

    /// Forwards the completions held, and every later one.
    pub fn release_completions(&self) {
        self.hold.set(false);
    }

    /// Completions held now.
    pub fn held_completions(&self) -> usize {
        self.hold.held.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give the client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `upstream`'s endpoint (bucket and keys) reached through this proxy.
    pub fn endpoint_for(&self, upstream: &Endpoint) -> Endpoint {
        Endpoint { url: self.url.clone(), ..upstream.clone() }
    }

    /// Answers the next `n` requests with `SlowDown` (`usize::MAX`: every request from now on; 0: forward all).
    pub fn fail_next(&self, n: usize) {
        self.fail_left.store(n, Ordering::SeqCst);
    }

    /// `SlowDown` answers given so far.
    pub fn slow_downs(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the server so far.
    pub fn forwarded(&self) -> usize {
        self.flight.total.load(Ordering::SeqCst)
    }

    /// The most requests forwarded to the server at once so far (each from its head read to its answer relayed).
    pub fn most_in_flight(&self) -> usize {
        self.flight.most.load(Ordering::SeqCst)
    }
}

impl Drop for SlowDownProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.hold.set(false);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop to see `stop`
    }
}

/// One request read off a connection: its head's lines (without the line ends) and its body.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let length = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((lines, body))
}

/// An S3 error response: `status reason` with `<Error><Code>code</Code><Message>message</Message></Error>`.
fn error_response(status: u16, reason: &str, code: &str, message: &str) -> String {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}", xml.len())
}

/// Serves one client connection of a [`SlowDownProxy`].
fn proxy_connection(
    stream: TcpStream,
    upstream: SocketAddr,
    fail_left: &AtomicUsize,
    answered: &AtomicUsize,
    flight: &Flight,
    hold: &Hold,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some((lines, body)) = read_request(&mut reader) {
        if fail_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            answered.fetch_add(1, Ordering::SeqCst);
            let answer = error_response(503, "Service Unavailable", "SlowDown", SLOW_DOWN_MESSAGE);
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if lines.first().is_some_and(|l| l.starts_with("POST ") && l.contains("uploadId=")) {
            hold.pass();
        }
        flight.total.fetch_add(1, Ordering::SeqCst);
        let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        flight.most.fetch_max(now, Ordering::SeqCst);
        forward(&mut writer, upstream, &lines, &body);
        flight.now.fetch_sub(1, Ordering::SeqCst);
        return;
    }
}

/// Sends one request (its head's `lines` and its `body`) to `upstream` on a connection of its own and relays the
/// whole answer to `client`.
fn forward(client: &mut TcpStream, upstream: SocketAddr, lines: &[String], body: &[u8]) {
    let Ok(mut server) = TcpStream::connect(upstream) else { return };
    let mut head = String::new();
    for line in lines.iter().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")) {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    if server.write_all(head.as_bytes()).and_then(|()| server.write_all(body)).is_err() {
        return;
    }
    let _ = std::io::copy(&mut server, client);
}

/// A loopback port free right now (the OS picks it; the listener is closed again for the server to bind).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("pick a free loopback port").port()
}

/// One bodiless HTTP/1.1 request; its status code.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {status_line:?}")))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}
