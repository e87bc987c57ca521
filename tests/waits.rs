//! Waits without an upper bound, answered in bounded steps. `--timeout` and `timeoutSec` take any number of seconds,
//! zero or more (NuoDB's Helm backup job sends `--timeout 525600`); a single request waits at most the server's step
//! (`MAX_WAIT_PER_REQUEST`, shortened here through its test-only variable), and a REST wait that runs out answers HTTP
//! 408 with the HotCopyResponse (`status: running`), as nuoadmin does; the hot copy keeps running. The CLI long-polls
//! in steps of its own and reads 408 answers as "still running".

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{s, text, tmp, wait_until, Server};

/// The server's step in these tests, milliseconds.
const STEP_MS: u64 = 400;

/// A server whose `kind` hot copies block at `point` (writing `mark` when they get there), with a short step.
fn paused(data: &Path, pause: &str, mark: &Path) -> Server {
    Server::start_with_env(
        data,
        &[],
        &[
            ("BACKSET_FAULT_PAUSE", pause),
            ("BACKSET_FAULT_PAUSE_MARK", &s(mark)),
            ("BACKSET_TEST_WAIT_PER_REQUEST_MS", &STEP_MS.to_string()),
        ],
    )
}

fn commit(srv: &Server) {
    let a = srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    assert_eq!(a.code, 200, "{}", a.text);
}

#[test]
fn cli_timeout_has_no_upper_bound_and_refuses_what_is_not_a_wait() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    commit(&srv);
    let set = dir.path().join("set");
    // NuoDB's Helm backup job: --timeout 525600 (a year in minutes, read as seconds).
    let out = srv.cli(
        &["hotcopy", "database", "--db-name", "demo", "--type", "full", "--backup-dirs", "0"]
            .iter()
            .copied()
            .chain([s(&set).as_str(), "--timeout", "525600"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status=completed"), "{}", text(&out));
    // Longer than a Duration holds: no deadline, no panic.
    commit(&srv);
    let out = srv.cli(
        &["hotcopy", "database", "--db-name", "demo", "--type", "journal", "--backup-dirs", "0"]
            .iter()
            .copied()
            .chain([s(&set).as_str(), "--timeout", "1e20"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // What is not a wait is a usage error that names the option, before anything is sent.
    for bad in ["inf", "NaN", "-inf"] {
        let out = srv.cli(
            &["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id"]
                .iter()
                .copied()
                .chain([uuid::Uuid::new_v4().to_string().as_str(), &format!("--timeout={bad}")])
                .collect::<Vec<_>>(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--timeout {bad}: {}", text(&out));
        assert!(err.contains("--timeout") && err.contains("seconds"), "--timeout {bad}: {err}");
    }
}

#[test]
fn a_rest_wait_that_runs_out_answers_408_and_the_hot_copy_keeps_running() {
    let dir = tmp();
    let mark = dir.path().join("mark");
    let srv = paused(&dir.path().join("data"), "full:begun", &mark);
    commit(&srv);
    let set = dir.path().join("set");
    // hotCopy with a year's timeoutSec: accepted, answered when the server's step ends, 408 with the response.
    let started = Instant::now();
    let a = srv.post_json(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": set}, "timeoutSec": 31_536_000}),
    );
    let took = started.elapsed();
    assert_eq!(a.code, 408, "{}", a.text);
    assert_eq!(a.json["status"], "running", "{}", a.text);
    assert!(a.json.get("code").is_none(), "a 408 carries the HotCopyResponse, not an error: {}", a.text);
    assert!(took >= Duration::from_millis(STEP_MS) && took < Duration::from_secs(20), "answered after {took:?}");
    let id = a.json["hotCopyId"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(30), || mark.exists()), "the hot copy never reached its pause");
    let status = |q: &str| srv.get(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}{q}"));
    // hotCopyStatus: 1e20 seconds is accepted (past what a Duration holds) and runs out at the step: 408.
    for t in ["31536000", "1e20", "0.2"] {
        let a = status(&format!("&timeoutSec={t}"));
        assert_eq!((a.code, a.json["status"].as_str()), (408, Some("running")), "timeoutSec={t}: {}", a.text);
        assert_eq!(a.json["hotCopyId"], id.as_str());
    }
    // No wait asked (none, or zero): 200 with the status as it is.
    for q in ["", "&timeoutSec=0"] {
        let a = status(q);
        assert_eq!((a.code, a.json["status"].as_str()), (200, Some("running")), "{q:?}: {}", a.text);
    }
    // Not a wait: 400 naming timeoutSec.
    for t in ["inf", "NaN", "-1", "-inf"] {
        let a = status(&format!("&timeoutSec={t}"));
        assert_eq!(a.code, 400, "timeoutSec={t}: {}", a.text);
        assert!(a.json["message"].as_str().unwrap().contains("timeoutSec"), "{}", a.text);
    }
    // The CLI long-polls through the 408 answers and ends at its own timeout: the response, the suffix, exit 1.
    let out =
        srv.cli(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "1.5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(line.contains(": timeout while waiting for hot copy operation to finish, status=running,"), "{line}");
    // It still runs, and a cancel with a long timeoutSec ends it (cancelled within the step): 200.
    assert_eq!(status("").json["status"], "running");
    let a = srv.post_json(
        &format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={id}&timeoutSec=525600"),
        &json!(null),
    );
    assert_eq!((a.code, a.json["status"].as_str()), (200, Some("cancelled")), "{}", a.text);
}

#[test]
fn a_cancel_whose_wait_runs_out_answers_408_and_the_cli_says_timeout() {
    let dir = tmp();
    let mark = dir.path().join("mark");
    // Past its commit point (mid-move) a hot copy completes anyway; here it blocks there, so a cancel cannot end it.
    let srv = paused(&dir.path().join("data"), "full:mid-move", &mark);
    commit(&srv);
    let a = srv
        .post_json("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": dir.path().join("set")}}));
    assert_eq!(a.code, 200, "{}", a.text);
    let id = a.json["hotCopyId"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(60), || mark.exists()), "the hot copy never reached its pause");
    let a = srv.post_json(
        &format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={id}&timeoutSec=30"),
        &json!(null),
    );
    assert_eq!((a.code, a.json["status"].as_str()), (408, Some("running")), "{}", a.text);
    let out = srv.cli(&["cancel", "hotcopy", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": timeout while waiting for hot copy operation to finish, status=running,"),
        "{}",
        text(&out)
    );
}
