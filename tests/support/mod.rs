//! Shared helpers of the end-to-end tests (reliability tests, crash, walkthrough): the real `backset serve` on a free
//! loopback port with its output collected, requests that return whatever the server answered, and the offline CLI.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `backset archive dump DIR EXTRA...` as a map of key to value (every value these tests write is UTF-8).
pub fn dump(dir: &Path, extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_backset")).args(["archive", "dump"]).arg(dir).args(extra).output().unwrap();
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

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs the `backset` binary with `args` and returns its output.
pub fn backset(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backset")).args(args).output().unwrap()
}

/// Runs the `backset` binary with `args` and returns its output once it exits; kills it and fails the test when it
/// is still running after `timeout` (a command that should refuse at once but runs on, such as a second `serve`).
pub fn backset_within(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backset"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "`backset {}` still ran after {timeout:?}; killed: {}", args.join(" "), text(&out));
    out
}

/// A process's exit status and both outputs, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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

impl Server {
    /// Starts `backset serve --data-dir data --listen 127.0.0.1:<free port> extra...` and waits until it accepts.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_token(data, extra, None)
    }

    /// As [`start`](Self::start), sending `token` with every request.
    pub fn start_with_token(data: &Path, extra: &[&str], token: Option<&str>) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        Self::start_at(&addr, &addr, data, extra, token)
    }

    /// As [`start`](Self::start), with these environment variables set for the server (test-only knobs such as
    /// `BACKSET_FAULT_PAUSE`).
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        Self::start_env(&addr, &addr, data, extra, None, env)
    }

    /// Starts `backset serve --listen listen ...` and talks to it at `connect` (e.g. listen on `0.0.0.0:P`, connect
    /// to `127.0.0.1:P`).
    pub fn start_at(listen: &str, connect: &str, data: &Path, extra: &[&str], token: Option<&str>) -> Self {
        Self::start_env(listen, connect, data, extra, token, &[])
    }

    /// As [`start_at`](Self::start_at), with these environment variables set (a test-only fault, `RUST_LOG`).
    pub fn start_env(
        listen: &str,
        connect: &str,
        data: &Path,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_limited(listen, connect, data, extra, token, env, None)
    }

    /// As [`start_env`](Self::start_env), with the descriptor limit (`RLIMIT_NOFILE`, soft and hard) set to `nofile`
    /// for the server (through `sh -c 'ulimit -n N; exec ...'`, so the process is still the server's own pid).
    pub fn start_limited(
        listen: &str,
        connect: &str,
        data: &Path,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Self {
        let addr = connect.to_string();
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_backset")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_backset")]);
                c
            }
        };
        let mut child = cmd
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(extra)
            .env_remove("RUST_LOG")
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                s.join_readers();
                panic!("serve exited with {st}: {}", s.output());
            }
            assert!(Instant::now() < deadline, "serve did not listen on {addr} within 30 s: {}", s.output());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
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
        let mut req = ureq::request(method, &format!("{}{path}", self.api)).timeout(Duration::from_secs(120));
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
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let code = resp.status();
        let www_authenticate = resp.header("WWW-Authenticate").map(str::to_string);
        let text = resp.into_string().unwrap_or_else(|e| panic!("{method} {path}: body not read: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { code, text, json, www_authenticate }
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backset"));
        cmd.args(["--api-server", &self.addr])
            .args(args)
            .env_remove("BACKSET_AUTH_TOKEN")
            .env_remove("NUOCMD_API_SERVER");
        if let Some(t) = &self.token {
            cmd.env("BACKSET_AUTH_TOKEN", t);
        }
        cmd.output().unwrap()
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
        let mut req = ureq::request(method, &format!("{}{path}", self.api)).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(_) => return None,
        };
        let code = resp.status();
        let www_authenticate = resp.header("WWW-Authenticate").map(str::to_string);
        let text = resp.into_string().ok()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some(Answer { code, text, json, www_authenticate })
    }

    /// Sockets the server process has open now (the entries of /proc/PID/fd that link to `socket:[...]`): its
    /// listener and its connections.
    pub fn open_sockets(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else { return 0 };
        dir.filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
            .count()
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit; returns (exit code, everything it printed). Kills it
    /// and fails the test when it is still running then.
    pub fn terminate_within(mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(st.success());
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
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        self.join_readers();
        (status.code(), self.output())
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

/// VmRSS of a process, kB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The peak resident set size of a process so far, kB (VmHWM of /proc/PID/status).
pub fn hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
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
