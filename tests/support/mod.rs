//! The one test support of the binary's end-to-end tests: the real `backset serve` on a free loopback port with its
//! output collected, requests that return whatever the server answered, the CLI (offline and against a server), and
//! the small tools several tests share (a byte flipper, a seeded generator, the nuocmd response parser).
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `backset archive dump DIR EXTRA...` as a map of key to value (every value these tests write is UTF-8).
pub fn dump(dir: &Path, extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    let out = command().args(["archive", "dump"]).arg(dir).args(extra).output().unwrap();
    assert!(out.status.success(), "archive dump {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["value"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Whether the long variants run (`BACKSET_LONG_TESTS=1`).
pub fn long_tests() -> bool {
    std::env::var("BACKSET_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// A fresh directory under `target/` (a real disk, not tmpfs).
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A path as a string.
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A port nothing listens on right now (another thread or process may take it before the caller binds it: a
/// [`Server`] started on one it picked itself moves to another when that happens, see [`PORT_RETRIES`]).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `backset` binary as a command, without the client settings this process's environment may hold
/// (`BACKSET_AUTH_TOKEN`, `NUOCMD_API_SERVER`): a test that wants them sets them on the command.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backset"));
    cmd.env_remove("BACKSET_AUTH_TOKEN").env_remove("NUOCMD_API_SERVER");
    cmd
}

/// Runs the `backset` binary with `args` and returns its output.
pub fn backset(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// Runs `backset args`, which must exit 0; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = backset(args);
    assert_eq!(out.status.code(), Some(0), "backset {args:?}: {}", text(&out));
    stdout(&out)
}

/// Runs `backset args`, which must exit with `code`; returns its output.
pub fn fails(args: &[&str], code: i32) -> Output {
    let out = backset(args);
    assert_eq!(out.status.code(), Some(code), "backset {args:?}: {}", text(&out));
    out
}

/// Runs the `backset` binary with `args` and returns its output once it exits; kills it and fails the test when it
/// is still running after `timeout` (a command that should refuse at once but runs on, such as a second `serve`).
pub fn backset_within(args: &[&str], timeout: Duration) -> Output {
    let mut child = command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "`backset {}` still ran after {timeout:?}; killed: {}", args.join(" "), text(&out));
    out
}

/// A process's stdout, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process's stderr, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A process's exit status and both outputs, for assertion messages.
pub fn text(out: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", out.status.code(), stdout(out), stderr(out))
}

/// XORs the byte at `offset` of `file` with 0x5a (four of its bits flipped): a damage no checksum may miss.
pub fn flip_byte(file: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

/// A small seeded generator (splitmix64: any seed, 0 included, gives a full-period stream), so that a failure can be
/// replayed from the seed the test prints.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (below 1 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Where field `name=` starts in the inside of a nuocmd response line (at its start or after ", ").
fn find_field(inner: &str, name: &str) -> Option<usize> {
    let key = format!("{name}=");
    inner.match_indices(&key).map(|(i, _)| i).find(|&i| i == 0 || inner[..i].ends_with(", "))
}

/// The inside of a `HotCopyResponse(...)` line.
fn response_inner(line: &str) -> &str {
    line.trim()
        .strip_prefix("HotCopyResponse(")
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a HotCopyResponse line: {line}"))
}

/// The value of `name=` in a `HotCopyResponse(...)` line, as nuocmd prints it (values other than the message hold no
/// ", ", and only the status follows the message).
pub fn field(line: &str, name: &str) -> String {
    let inner = response_inner(line);
    let start = find_field(inner, name).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 1;
    let rest = &inner[start..];
    let end = if name == "message" { rest.rfind(", status=").unwrap() } else { rest.find(", ").unwrap_or(rest.len()) };
    rest[..end].to_string()
}

/// The nuocmd fields present in a `HotCopyResponse(...)` line, in the order printed.
pub fn field_names(line: &str) -> Vec<String> {
    let inner = response_inner(line);
    let mut names: Vec<(usize, String)> =
        ["begin_timestamp", "coordinator_start_id", "end_timestamp", "id", "message", "status"]
            .iter()
            .filter_map(|n| find_field(inner, n).map(|i| (i, n.to_string())))
            .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

/// `hotcopy database --db-name demo --type KIND --backup-dirs 0 SET`, then `extra`: the client's hot copy of the
/// demo database's archive 0 into `set`.
pub fn hotcopy_args<'a>(kind: &'a str, set: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["hotcopy", "database", "--db-name", "demo", "--type", kind, "--backup-dirs", "0", set];
    args.extend_from_slice(extra);
    args
}

/// How long a hot copy started by [`Server::hot_copy`] is waited for (`timeoutSec`): the longest of them, in the
/// soak, copies minutes of load.
pub const HOT_COPY_WAIT_SEC: u64 = 600;

/// The endpoint and body of a hot copy of `kind` into `dir` (a simple copy's archive directory, or a backup set)
/// that waits up to `timeout_sec` for its end.
pub fn hot_copy_request(kind: &str, dir: &Path, timeout_sec: u64) -> (&'static str, Value) {
    if kind == "simple" {
        (
            "/databases/demo/hotCopySimple",
            json!({"backupLocations": {"0": {"copyArchiveDir": s(dir)}}, "timeoutSec": timeout_sec}),
        )
    } else {
        ("/databases/demo/hotCopy", json!({"type": kind, "backupSetDirs": {"0": s(dir)}, "timeoutSec": timeout_sec}))
    }
}

/// An answer: status, raw body, and the body as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub code: u16,
    /// Raw body.
    pub text: String,
    /// The body parsed, `Null` when it is not JSON.
    pub json: Value,
    /// The `WWW-Authenticate` header, if any.
    pub www_authenticate: Option<String>,
}

/// A running `backset serve`, killed when dropped. Its stdout and stderr are read by threads into [`Server::output`]
/// (so a chatty server never blocks on a full pipe).
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>/api/1`.
    pub api: String,
    /// The listen address.
    pub addr: String,
    /// The data directory.
    pub data: PathBuf,
    /// The bearer token sent with every request.
    pub token: Option<String>,
    out: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How many more ports a [`Server`] started on a port [`free_port`] picked tries when its `serve` exits because that
/// address is in use: the tests of one binary run in parallel threads, and another test's server (or a client's
/// source port) may take a picked port before this `serve` binds it.
pub const PORT_RETRIES: usize = 5;

/// How long a started `serve` has to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a `serve` did not come up (its output included).
enum StartError {
    /// It exited because its listen address was in use.
    AddressInUse(String),
    /// It exited for another reason, or did not listen in time.
    Other(String),
}

impl Server {
    /// Starts `backset serve --data-dir data --listen 127.0.0.1:<free port> extra...` and waits until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_token(data, extra, None)
    }

    /// As [`start`](Self::start), sending `token` with every request.
    pub fn start_with_token(data: &Path, extra: &[&str], token: Option<&str>) -> Self {
        Self::start_picking_port(free_port, data, extra, token, &[])
    }

    /// As [`start`](Self::start), with these environment variables set for the server (test-only knobs such as
    /// `BACKSET_FAULT_PAUSE`).
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_picking_port(free_port, data, extra, None, env)
    }

    /// Starts `serve` on `127.0.0.1:<pick()>`; when it exits because that address is in use, on the next port
    /// `pick` gives, [`PORT_RETRIES`] times at most ([`start`](Self::start) picks with [`free_port`]).
    pub fn start_picking_port(
        mut pick: impl FnMut() -> u16,
        data: &Path,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut taken = Vec::new();
        loop {
            let addr = format!("127.0.0.1:{}", pick());
            match Self::launch(&addr, &addr, data, extra, token, env, None) {
                Ok(s) => return s,
                Err(StartError::AddressInUse(_)) if taken.len() < PORT_RETRIES => taken.push(addr),
                Err(StartError::AddressInUse(out) | StartError::Other(out)) => {
                    panic!("{out}\n(addresses found in use before: {taken:?})")
                }
            }
        }
    }

    /// Starts `backset serve --listen listen ...` and talks to it at `connect` (e.g. listen on `0.0.0.0:P`, connect
    /// to `127.0.0.1:P`). Panics with the server's output when it does not listen there (an address in use, too: the
    /// caller chose it).
    pub fn start_at(listen: &str, connect: &str, data: &Path, extra: &[&str], token: Option<&str>) -> Self {
        Self::start_limited(listen, connect, data, extra, token, &[], None)
    }

    /// As [`start_at`](Self::start_at), with these environment variables set (a test-only fault, `RUST_LOG`) and,
    /// when `nofile` is given, the descriptor limit (`RLIMIT_NOFILE`, soft and hard) set to it for the server (through
    /// `sh -c 'ulimit -n N; exec ...'`, so the process is still the server's own pid).
    pub fn start_limited(
        listen: &str,
        connect: &str,
        data: &Path,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Self {
        Self::launch(listen, connect, data, extra, token, env, nofile)
            .unwrap_or_else(|(StartError::AddressInUse(out) | StartError::Other(out))| panic!("{out}"))
    }

    /// [`start_limited`](Self::start_limited), returning why the server did not come up instead of panicking.
    fn launch(
        listen: &str,
        connect: &str,
        data: &Path,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Result<Self, StartError> {
        let port = listen
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|e| panic!("--listen {listen} for a test server: not an IP address and port ({e})"))
            .port();
        let addr = connect.to_string();
        let mut cmd = match nofile {
            None => command(),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_backset")]);
                c
            }
        };
        // Only what the test asks for: no log filter, token or test-only fault from this process's environment.
        for var in [
            "RUST_LOG",
            "BACKSET_AUTH_TOKEN",
            "BACKSET_FAULT_PAUSE",
            "BACKSET_FAULT_PAUSE_MARK",
            "BACKSET_FAULT_PAUSE_DEST",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            // Its working directory is the test's own directory: a relative path it wrongly accepts lands there.
            .current_dir(data.parent().filter(|p| p.is_dir()).unwrap_or(Path::new(env!("CARGO_TARGET_TMPDIR"))))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for mut pipe in pipes {
            let out = Arc::clone(&out);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        let mut s = Self {
            child: Some(child),
            api: format!("http://{addr}/api/1"),
            addr: addr.clone(),
            data: data.to_path_buf(),
            token: token.map(str::to_string),
            out,
            readers,
        };
        // Ready once this very process listens on the port: a connection that succeeds proves nothing when another
        // test's server took the port (this one then exits with "Address already in use"), nor when the client's
        // source port happens to be the one connected to (a TCP self-connect).
        let deadline = Instant::now() + START_TIMEOUT;
        while !listens_on(s.pid(), port) {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                s.join_readers();
                let out = s.output();
                let msg = format!("serve --listen {listen} exited with {st}: {out}");
                return Err(
                    if out.contains(&format!("listen on {listen}")) && out.contains("Address already in use") {
                        StartError::AddressInUse(msg)
                    } else {
                        StartError::Other(msg)
                    },
                );
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "serve did not listen on {listen} within {START_TIMEOUT:?}: {}",
                    s.output()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panics with its output when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            self.join_readers();
            panic!("serve exited with {st}: {}", self.output());
        }
    }

    /// Sends a request with a raw body (or none) and `Authorization: Bearer <token>`; returns what the server
    /// answered.
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>, token: Option<&str>) -> Answer {
        self.with_authorization(method, path, body, token.map(|t| format!("Bearer {t}")).as_deref())
    }

    /// Sends a request with this `Authorization` header value (or none).
    pub fn with_authorization(&self, method: &str, path: &str, body: Option<&[u8]>, auth: Option<&str>) -> Answer {
        self.send(method, path, body, auth, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A server whose demo database has about 1 MB in some 200 atom files (written by the checkpoint of a clean
    /// stop) and 100 kB more in its journal: a hot copy's progress moves file by file (the copier counts a file's
    /// bytes as it writes them, so a single journal file's come at once).
    pub fn start_with_atoms(data: &Path) -> Self {
        let srv = Self::start(data, &["--atom-buckets", "256"]);
        srv.load(400, 2000);
        let (code, out) = srv.terminate();
        assert_eq!(code, Some(0), "{out}");
        let srv = Self::start(data, &[]);
        srv.load(50, 2000);
        srv
    }

    /// `GET /metrics` (beside the API, not under its prefix), with `token` as bearer token when given.
    pub fn metrics(&self, token: Option<&str>) -> Answer {
        self.get_beside_api("/metrics", token)
    }

    /// `GET <path>` beside the API (not under its prefix: `/metrics`, `/health`), with `token` as bearer token when
    /// given.
    pub fn get_beside_api(&self, path: &str, token: Option<&str>) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        self.send_url("GET", &format!("http://{}{path}", self.addr), None, auth.as_deref(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Starts a full hot copy of the demo database's archive 0 into `set`, limited to `max_rate` bytes per second,
    /// without waiting; returns `(coordinator start id, hot copy id)`.
    pub fn start_throttled_full(&self, set: &Path, max_rate: u64) -> (u64, String) {
        let body = json!({"type": "full", "backupSetDirs": {"0": s(set)}, "maxRate": max_rate});
        let (code, v) = self.post_json_checked("/databases/demo/hotCopy", &body);
        assert_eq!(code, 200, "{v}");
        (v["coordinatorStartId"].as_u64().unwrap(), v["hotCopyId"].as_str().unwrap().to_string())
    }

    /// The status of hot copy `(coordinator start id, hot copy id)` now.
    pub fn hot_copy_status(&self, (sm, id): &(u64, String)) -> Value {
        let (code, v) = self.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId={sm}&hotCopyId={id}"));
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Sends a request and reads the whole answer within `timeout`; an error when it could not be sent or no whole
    /// answer came in time.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        auth: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        self.send_url(method, &format!("{}{path}", self.api), body, auth, timeout)
    }

    /// [`send`](Self::send) to a whole URL.
    fn send_url(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        auth: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut req = ureq::request(method, url).timeout(timeout);
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let code = resp.status();
        let www_authenticate = resp.header("WWW-Authenticate").map(str::to_string);
        let text = resp.into_string().map_err(|e| format!("body not read: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { code, text, json, www_authenticate })
    }

    /// Sends `request` (a whole HTTP/1.1 request as bytes, head and as much of a body as the test wants, ending with
    /// `Connection: close`) on a new connection and returns the answer, read until the server closes (at most 60 s).
    pub fn http_bytes(&self, request: &[u8]) -> Answer {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(&self.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // A server that answers before the whole request is sent may close the connection under the write.
        let _ = conn.write_all(request);
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let code =
            answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no answer: {answer:?}"));
        let (head, text) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let www_authenticate = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate")))
            .map(|(_, v)| v.trim().to_string());
        let json = serde_json::from_str(text).unwrap_or(Value::Null);
        Answer { code, text: text.to_string(), json, www_authenticate }
    }

    /// A request with this server's token.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        self.raw(method, path, body, self.token.as_deref())
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None)
    }

    /// POST with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    /// Runs the `backset` client with `args` against this server (`--api-server` first, as nuocmd takes it; the
    /// server's token, if any, through `BACKSET_AUTH_TOKEN`).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// As [`cli`](Self::cli), with these environment variables set for the client.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = command();
        cmd.args(["--api-server", &self.addr]).args(args);
        if let Some(t) = &self.token {
            cmd.env("BACKSET_AUTH_TOKEN", t);
        }
        cmd.envs(env.iter().copied()).output().unwrap()
    }

    /// Runs the client with `args` against this server, which must exit 0; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(0), "backset {args:?}: {}", text(&out));
        stdout(&out)
    }

    /// Runs the client with `args` against this server, which must exit with `code`; returns its output.
    pub fn cli_fails(&self, args: &[&str], code: i32) -> Output {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(code), "backset {args:?}: {}", text(&out));
        out
    }

    /// Commits `n` keys (`key-000000`, ...) of `bytes`-byte values through the data API, in transactions of 50.
    pub fn load(&self, n: usize, bytes: usize) {
        let value = "v".repeat(bytes);
        for batch in (0..n).collect::<Vec<_>>().chunks(50) {
            let put: serde_json::Map<String, Value> =
                batch.iter().map(|i| (format!("key-{i:06}"), Value::String(value.clone()))).collect();
            let a = self.post_json("/databases/demo/transactions", &json!({ "put": put }));
            assert_eq!(a.code, 200, "load: {}", a.text);
        }
    }

    /// Runs a hot copy of `kind` into `dir` through the REST API (`simple`: a simple copy with `dir` as its archive
    /// directory), waiting for its end; returns its final status (200, and no longer running).
    pub fn hot_copy(&self, kind: &str, dir: &Path) -> Value {
        let (path, body) = hot_copy_request(kind, dir, HOT_COPY_WAIT_SEC);
        let a = self.post_json(path, &body);
        assert_eq!(a.code, 200, "{kind} into {}: {}", dir.display(), a.text);
        assert_ne!(a.json["status"], "running", "{kind} into {}: {}", dir.display(), a.text);
        a.json
    }

    /// As [`hot_copy`](Self::hot_copy), for a hot copy that must complete.
    pub fn completed(&self, kind: &str, dir: &Path) -> Value {
        let v = self.hot_copy(kind, dir);
        assert_eq!(v["status"], "completed", "{kind} into {}: {v}", dir.display());
        v
    }

    /// Sends a request with this server's token; its answer must be JSON, and an error's body must carry its status
    /// as `code` and a non-empty `message`. Returns (status, body).
    pub fn checked(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let a = self.request(method, path, body);
        let v: Value =
            serde_json::from_str(&a.text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", a.text));
        if a.code >= 400 {
            assert_eq!(v["code"], a.code, "error body of {method} {path}: {v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        (a.code, v)
    }

    /// A checked GET (see [`checked`](Self::checked)).
    pub fn get_checked(&self, path: &str) -> (u16, Value) {
        self.checked("GET", path, None)
    }

    /// A checked POST with a raw body (see [`checked`](Self::checked)).
    pub fn post_checked(&self, path: &str, body: &str) -> (u16, Value) {
        self.checked("POST", path, Some(body.as_bytes()))
    }

    /// A checked POST with a JSON body (see [`checked`](Self::checked)).
    pub fn post_json_checked(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_checked(path, &body.to_string())
    }

    /// The server answers a health request (`GET /processes`) with 200, and its process is alive.
    pub fn assert_healthy(&mut self) {
        self.assert_alive();
        let a = self.get("/processes");
        assert_eq!(a.code, 200, "health request failed: {}", a.text);
    }

    /// The resident set size of the server process, kB (VmRSS of /proc/PID/status).
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }

    /// Sends a request with this server's token and `timeout` for the whole exchange; `None` when it could not be
    /// sent or no answer came in time (the connection refused, reset or still waiting).
    pub fn try_request(&self, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> Option<Answer> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        self.send(method, path, body, auth.as_deref(), timeout).ok()
    }

    /// The server's TCP connections now: its sockets (entries of /proc/PID/fd linking to `socket:[inode]`) that are
    /// TCP sockets not listening (in /proc/PID/net/tcp and tcp6). Not its listener, nor the other sockets a process
    /// holds (tokio's signal socket pair). The TCP table is read first, so a socket opened while the descriptors are
    /// listed is not counted: what is counted was open together at some instant.
    pub fn open_connections(&self) -> usize {
        let pid = self.pid();
        let tcp: HashSet<String> =
            tcp_sockets(pid).into_iter().filter(|t| t.state != TCP_LISTEN).map(|t| t.inode).collect();
        process_sockets(pid).intersection(&tcp).count()
    }

    /// Sends the signal `name` (`TERM`, `INT`, `KILL`) to the server process; it may still be running when this returns
    /// (a test that shares the server with other threads signals it through a shared reference).
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let st = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
        assert!(st.success(), "kill -{name} {pid}");
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit; returns (exit code, everything it printed). Kills it
    /// and fails the test when it is still running then.
    pub fn terminate_within(mut self, timeout: Duration) -> (Option<i32>, String) {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        self.join_readers();
        assert!(exited, "serve still ran {timeout:?} after SIGTERM; killed: {}", self.output());
        (status.code(), self.output())
    }

    /// The peak resident set size of the server process so far, kB (VmHWM of /proc/PID/status).
    pub fn hwm_kb(&self) -> u64 {
        hwm_kb(self.pid())
    }

    /// Sends SIGTERM and waits for the exit; returns (exit code, everything it printed).
    pub fn terminate(self) -> (Option<i32>, String) {
        self.stop("TERM")
    }

    /// Sends the signal `name` and waits for the exit; returns (exit code, everything it printed).
    pub fn stop(self, name: &str) -> (Option<i32>, String) {
        self.signal(name);
        self.wait_exit()
    }

    /// Waits for the process to exit (after a signal sent through [`signal`](Self::signal)); returns (exit code,
    /// everything it printed).
    pub fn wait_exit(mut self) -> (Option<i32>, String) {
        let status = self.child.take().unwrap().wait().unwrap();
        self.join_readers();
        (status.code(), self.output())
    }

    /// SIGKILL (never a clean shutdown), unless a [`signal`](Self::signal) sent it already; reaps the process and
    /// fails the test when it died of anything else.
    pub fn kill9(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().unwrap();
        let _ = child.kill(); // std sends SIGKILL on Unix
        let st = child.wait().unwrap();
        self.join_readers();
        assert_eq!(st.signal(), Some(9), "serve did not die of SIGKILL: {st}: {}", self.output());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The state of a listening socket in /proc/net/tcp (`TCP_LISTEN`).
const TCP_LISTEN: &str = "0A";

/// A row of /proc/PID/net/tcp or tcp6.
struct TcpSocket {
    /// Its local port.
    port: u16,
    /// Its state, as the table writes it (hex: `0A` listening, `01` established, ...).
    state: String,
    /// Its inode, the number in the `socket:[inode]` link of a descriptor that holds it.
    inode: String,
}

/// The TCP sockets (IPv4 and IPv6) of the network namespace of process `pid`.
fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f.get(1).and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(port), true) = (port, f.len() > 9) {
                out.push(TcpSocket { port, state: f[3].to_string(), inode: f[9].to_string() });
            }
        }
    }
    out
}

/// The inodes of the sockets process `pid` holds: its entries of /proc/PID/fd that link to `socket:[inode]` (none
/// once it has exited).
fn process_sockets(pid: u32) -> HashSet<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect()
}

/// Whether process `pid` itself holds a socket listening on TCP `port` (any address, IPv4 or IPv6): not merely
/// whether something accepts connections there.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let listening: HashSet<String> =
        tcp_sockets(pid).into_iter().filter(|t| t.state == TCP_LISTEN && t.port == port).map(|t| t.inode).collect();
    !listening.is_empty() && !process_sockets(pid).is_disjoint(&listening)
}

/// VmRSS of a process, kB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// The peak resident set size of a process so far, kB (VmHWM of /proc/PID/status).
pub fn hwm_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM")
}

/// A `<name>: <n> kB` line of /proc/PID/status.
fn status_kb(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
