//! A server no client can starve (docs/RELIABILITY.md, "Clients that hold the server"): long-polling status requests
//! hold no thread and are bounded in number, connections are capped below the descriptor limit and closed when idle,
//! and a shutdown never waits behind what clients hold. Each test runs the real server on loopback with a bounded
//! number of connections.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{s, tmp, wait_until, Answer, Server};

/// Long-polls held open in the first test: more than tokio's blocking pool has threads (512), which the waits
/// filled before they became asynchronous.
const WAITERS: usize = 600;

/// Opens a connection and sends `GET /api/1<path>` on it, without reading the answer.
fn send_get(addr: &str, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET /api/1{path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    c
}

/// Whether the server closed `c` (EOF or reset) within `timeout`; bytes it sends first (an answer) are read past.
fn closed_within(c: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

/// The status line and body of the one answer on `c`, read until the server closes it or `timeout` passes.
fn answer_on(c: &mut TcpStream, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the server sent something on `c` (an answer) that was not read yet.
fn has_answer(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let got = c.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
    c.set_nonblocking(false).unwrap();
    got
}

/// A request that must be answered within `deadline` (asked again while it is not answered at all).
fn answered(srv: &Server, method: &str, path: &str, body: Option<serde_json::Value>, deadline: Duration) -> Answer {
    let body = body.map(|b| b.to_string());
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{method} {path}: no answer within {deadline:?}: {}", srv.output());
        if let Some(a) = srv.try_request(method, path, body.as_deref().map(str::as_bytes), left) {
            return a;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id in the pause mark once it names a hot copy other than `not`.
fn paused_id(mark: &Path, not: Option<&str>) -> String {
    let mut id = String::new();
    let reached = wait_until(Duration::from_secs(60), || {
        id = std::fs::read_to_string(mark).unwrap_or_default().split_whitespace().next().unwrap_or("").to_string();
        !id.is_empty() && Some(id.as_str()) != not
    });
    assert!(reached, "no hot copy reached its pause");
    id
}

#[test]
fn long_polling_status_requests_do_not_exhaust_the_server() {
    let dir = tmp();
    let mark = dir.path().join("mark");
    let srv = Server::start_with_env(
        &dir.path().join("data"),
        &["--sms", "2"],
        &[("BACKSET_FAULT_PAUSE", "full:begun"), ("BACKSET_FAULT_PAUSE_MARK", &s(&mark))],
    );
    let a = srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    assert_eq!(a.code, 200, "{}", a.text);
    // Two full hot copies held at their pause: one the waits wait on, one to cancel.
    let full = |archive: u64| {
        let a = srv.post_json(
            "/databases/demo/hotCopy",
            &json!({"type": "full", "backupSetDirs": {archive.to_string(): dir.path().join(format!("set{archive}"))}}),
        );
        assert_eq!(a.code, 200, "{}", a.text);
        (a.json["coordinatorStartId"].as_u64().unwrap(), a.json["hotCopyId"].as_str().unwrap().to_string())
    };
    let (waited_sm, waited) = full(0);
    paused_id(&mark, None);
    let (cancelled_sm, cancelled) = full(1);
    paused_id(&mark, Some(&waited));

    let path = format!("/databases/hotCopyStatus?coordinatorStartId={waited_sm}&hotCopyId={waited}&timeoutSec=3600");
    let mut waiters: Vec<TcpStream> = (0..WAITERS).map(|_| send_get(&srv.addr, &path)).collect();
    // Every wait accepted: a connection each.
    assert!(
        wait_until(Duration::from_secs(60), || srv.open_connections() >= WAITERS),
        "the server did not accept the {WAITERS} waits: {} connections open",
        srv.open_connections()
    );

    // With every wait open, each kind of request is answered.
    let a = answered(
        &srv,
        "POST",
        "/databases/demo/transactions",
        Some(json!({"put": {"k": "during"}})),
        Duration::from_secs(30),
    );
    assert_eq!(a.code, 200, "commit: {}", a.text);
    let a = answered(&srv, "GET", "/databases/demo/keys/k", None, Duration::from_secs(30));
    assert_eq!((a.code, a.json["value"].as_str()), (200, Some("during")), "key read: {}", a.text);
    let a = answered(
        &srv,
        "POST",
        &format!("/databases/cancelHotCopy?coordinatorStartId={cancelled_sm}&hotCopyId={cancelled}&timeoutSec=30"),
        None,
        Duration::from_secs(60),
    );
    assert_eq!((a.code, a.json["status"].as_str()), (200, Some("cancelled")), "cancel: {}", a.text);
    let a = answered(
        &srv,
        "POST",
        "/databases/demo/hotCopySimple",
        Some(json!({"backupLocations": {"1": {"copyArchiveDir": dir.path().join("simple")}}, "timeoutSec": 60})),
        Duration::from_secs(90),
    );
    assert_eq!((a.code, a.json["status"].as_str()), (200, Some("completed")), "new hot copy: {}", a.text);
    let a = answered(&srv, "GET", "/processes", None, Duration::from_secs(30));
    assert_eq!(a.code, 200, "{}", a.text);

    // A wait whose client leaves ends: its connection closes on the server's side too.
    waiters.truncate(WAITERS / 2);
    // The other waits and the few connections this test's client keeps: far fewer than all waits.
    let most = WAITERS / 2 + 20;
    assert!(
        wait_until(Duration::from_secs(30), || srv.open_connections() <= most),
        "{} waits' clients left, but the server still has {} connections open (expected at most {most})",
        WAITERS / 2,
        srv.open_connections()
    );

    // SIGTERM with the other waits open: the server cancels the hot copy, answers the waits and exits 0.
    let (code, out) = srv.terminate_within(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    for c in &mut waiters {
        let answer = answer_on(c, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 200"), "a wait open at SIGTERM got: {answer:?}");
        assert!(answer.contains(r#""status":"cancelled""#), "{answer}");
    }
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_the_idle_timeout() {
    let dir = tmp();
    let mark = dir.path().join("mark");
    let srv = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("BACKSET_TEST_IDLE_TIMEOUT_MS", "1000"),
            ("BACKSET_FAULT_PAUSE", "full:begun"),
            ("BACKSET_FAULT_PAUSE_MARK", &s(&mark)),
        ],
    );
    // Never a byte; half a request head (slowloris); a whole request answered, then nothing (keep-alive).
    let mut silent = TcpStream::connect(&srv.addr).unwrap();
    let mut half = TcpStream::connect(&srv.addr).unwrap();
    write!(half, "GET /api/1/processes HTTP/1.1\r\nHost: {}\r\n", srv.addr).unwrap();
    let mut kept = send_get(&srv.addr, "/processes");
    assert!(answer_on(&mut kept, Duration::from_secs(10)).starts_with("HTTP/1.1 200"));
    // A request being answered is not idle: a 3 s wait on a paused hot copy outlasts the 1 s timeout.
    let a = srv
        .post_json("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": dir.path().join("set")}}));
    assert_eq!(a.code, 200, "{}", a.text);
    let id = paused_id(&mark, None);
    let a = srv.get(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}&timeoutSec=3"));
    assert_eq!((a.code, a.json["status"].as_str()), (408, Some("running")), "{}", a.text);
    for (name, c) in [("silent", &mut silent), ("half-sent", &mut half), ("idle after an answer", &mut kept)] {
        assert!(closed_within(c, Duration::from_secs(30)), "the {name} connection is still open after 30 s");
    }
}

/// The descriptor limit of the servers started with one: connections are capped at half of it (128), waits at half
/// of that (64).
const LOW_NOFILE: u64 = 256;

/// The connections a server with [`LOW_NOFILE`] takes at once.
const LOW_NOFILE_CONNECTIONS: usize = 128;

/// A server whose descriptor limit, soft and hard, is [`LOW_NOFILE`] (so it cannot raise it).
fn low_limit_server(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let srv = Server::start_limited(&addr, &addr, data, extra, None, env, Some(LOW_NOFILE));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let n: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(n, [LOW_NOFILE.to_string(), LOW_NOFILE.to_string()], "the server's limit: {line}");
    srv
}

#[test]
fn many_idle_connections_under_a_low_descriptor_limit_do_not_stop_commits() {
    let dir = tmp();
    let srv = low_limit_server(
        &dir.path().join("data"),
        &["--journal-segment-bytes", "4096"],
        &[("BACKSET_TEST_IDLE_TIMEOUT_MS", "3000")],
    );
    // More idle connections than the server has descriptors.
    let mut idle: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(&srv.addr).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(30), || srv.open_connections() >= LOW_NOFILE_CONNECTIONS),
        "the server never held {LOW_NOFILE_CONNECTIONS} connections: {} open",
        srv.open_connections()
    );
    // Commits that roll the journal over to a new segment every few transactions: answered once idle connections
    // time out (the commit's connection waits in the listen queue meanwhile), never refused for want of a
    // descriptor.
    let value = "v".repeat(1000);
    for i in 0..30 {
        let a = answered(
            &srv,
            "POST",
            "/databases/demo/transactions",
            Some(json!({"put": {format!("k{i}"): value}})),
            Duration::from_secs(120),
        );
        assert_eq!(a.code, 200, "commit {i}: {}", a.text);
        // Never more connections than the cap, whatever the clients hold.
        let open = srv.open_connections();
        assert!(open <= LOW_NOFILE_CONNECTIONS, "{open} connections open, above the cap of {LOW_NOFILE_CONNECTIONS}");
    }
    let a = answered(&srv, "GET", "/databases/demo/keys/k29", None, Duration::from_secs(60));
    assert_eq!((a.code, a.json["value"].as_str()), (200, Some(value.as_str())), "{}", a.text);
    for c in &mut idle {
        assert!(closed_within(c, Duration::from_secs(60)), "an idle connection is still open");
    }
    let segments = std::fs::read_dir(dir.path().join("data/database/0/journal")).unwrap().count();
    assert!(segments >= 5, "the commits rolled the journal over only to {segments} segments");
    assert!(!srv.output().contains("journal writer failed"), "{}", srv.output());
    assert!(srv.output().contains("descriptor limit 256: at most 128 connections, 64 of them"), "{}", srv.output());
}

#[test]
fn waits_past_their_share_of_the_connections_answer_503() {
    let dir = tmp();
    let mark = dir.path().join("mark");
    let srv = low_limit_server(
        &dir.path().join("data"),
        &[],
        &[("BACKSET_FAULT_PAUSE", "full:begun"), ("BACKSET_FAULT_PAUSE_MARK", &s(&mark))],
    );
    let a = srv
        .post_json("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": dir.path().join("set")}}));
    assert_eq!(a.code, 200, "{}", a.text);
    let id = paused_id(&mark, None);
    let wait = |secs: &str| format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}&timeoutSec={secs}");
    // 64 waits: every slot (half of the 128 connections).
    let mut waiters: Vec<TcpStream> = (0..64).map(|_| send_get(&srv.addr, &wait("3600"))).collect();
    // The next wait is refused with a JSON 503 once the 64 hold their slots. Until then a probe may take a slot
    // (it answers 408 after its second and frees it) and a waiter sent meanwhile may get the 503 (it is sent again).
    let mut refused = None;
    let got = wait_until(Duration::from_secs(60), || {
        for w in waiters.iter_mut() {
            if has_answer(w) {
                *w = send_get(&srv.addr, &wait("3600"));
            }
        }
        let a = answered(&srv, "GET", &wait("1"), None, Duration::from_secs(30));
        let done = a.code == 503 && !waiters.iter().any(has_answer);
        refused = Some(a);
        done
    });
    let refused = refused.unwrap();
    assert!(got, "the 65th wait was not refused: {}", refused.text);
    assert_eq!(refused.json["code"], 503, "{}", refused.text);
    assert!(refused.json["message"].as_str().unwrap().contains("64 requests are waiting"), "{}", refused.text);
    // What does not wait is answered: the status as it is, a commit.
    let a = answered(&srv, "GET", &wait("0"), None, Duration::from_secs(30));
    assert_eq!((a.code, a.json["status"].as_str()), (200, Some("running")), "{}", a.text);
    let a = answered(
        &srv,
        "POST",
        "/databases/demo/transactions",
        Some(json!({"put": {"k": "v"}})),
        Duration::from_secs(30),
    );
    assert_eq!(a.code, 200, "{}", a.text);
    // A waiting client that leaves gives its slot back.
    waiters.pop();
    let got = wait_until(Duration::from_secs(30), || {
        answered(&srv, "GET", &wait("0.2"), None, Duration::from_secs(30)).code == 408
    });
    assert!(got, "a wait was still refused after a waiting client left");
}

/// Commits `n` transactions of 1000-byte values (a rollover every few with 4 KiB segments); the answers.
fn commits(srv: &Server, n: usize) -> Vec<Answer> {
    let value = "v".repeat(1000);
    (0..n)
        .map(|i| {
            answered(
                srv,
                "POST",
                "/databases/demo/transactions",
                Some(json!({"put": {format!("k{i}"): value}})),
                Duration::from_secs(60),
            )
        })
        .collect()
}

#[test]
fn a_transient_journal_writer_failure_is_retried() {
    let dir = tmp();
    let srv = Server::start_with_env(
        &dir.path().join("data"),
        &["--journal-segment-bytes", "4096"],
        &[("BACKSET_FAULT_JOURNAL_CREATE", "3")],
    );
    for (i, a) in commits(&srv, 20).iter().enumerate() {
        assert_eq!(a.code, 200, "commit {i}: {}", a.text);
    }
    let out = srv.output();
    assert_eq!(out.matches("journal writer: cannot create the next journal segment (attempt").count(), 3, "{out}");
    assert!(!out.contains("journal writer failed"), "{out}");
    let a = srv.get("/processes");
    assert_eq!(a.json["data"][0]["state"], "RUNNING", "{}", a.text);
    let h = srv.get_beside_api("/health", None);
    assert_eq!((h.code, &h.json["status"]), (200, &json!("OK")), "{}", h.text);
    assert!(srv.metrics(None).text.contains("backset_sm_running{database=\"demo\",archive=\"0\"} 1\n"));
}

#[test]
fn a_persistent_journal_writer_failure_stops_the_sm_visibly() {
    let dir = tmp();
    let mut srv = Server::start_with_env(
        &dir.path().join("data"),
        &["--journal-segment-bytes", "4096"],
        &[("BACKSET_FAULT_JOURNAL_CREATE", "1000000")],
    );
    let answers = commits(&srv, 10);
    let first_failed = answers.iter().position(|a| a.code != 200).expect("every commit succeeded");
    assert!(first_failed > 0, "the first commit failed: {}", answers[0].text);
    for a in &answers[first_failed..] {
        assert_eq!(a.code, 500, "{}", a.text);
        assert!(a.json["message"].as_str().unwrap().contains("journal writer failed"), "{}", a.text);
    }
    let out = srv.output();
    assert_eq!(out.matches("journal writer: cannot create the next journal segment (attempt").count(), 7, "{out}");
    assert!(out.lines().any(|l| l.contains("ERROR") && l.contains("journal writer failed")), "{out}");
    // The process list (the health request) says the SM failed, and why.
    srv.assert_alive();
    let a = srv.get("/processes");
    let p = &a.json["data"][0];
    assert_eq!(p["state"], "FAILED", "{}", a.text);
    assert!(p["message"].as_str().unwrap().contains("BACKSET_FAULT_JOURNAL_CREATE"), "{}", a.text);
    let out = srv.cli(&["get", "processes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("engine_state=FAILED"), "{}", support::text(&out));
    // So do the health endpoint (503, naming the SM and the cause) and the metric an alert watches.
    let h = srv.get_beside_api("/health", None);
    assert_eq!((h.code, &h.json["status"]), (503, &json!("FAILED")), "{}", h.text);
    let m = h.json["message"].as_str().unwrap();
    assert!(m.contains("archive 0 of database demo is FAILED") && m.contains("BACKSET_FAULT_JOURNAL_CREATE"), "{m}");
    assert_eq!(h.json["processes"][0]["state"], "FAILED", "{}", h.text);
    let metrics = srv.metrics(None).text;
    assert!(metrics.contains("backset_sm_running{database=\"demo\",archive=\"0\"} 0\n"), "{metrics}");
    let (code, _) = srv.terminate_within(Duration::from_secs(60));
    assert!(code.is_some(), "the server did not exit on SIGTERM");
}
