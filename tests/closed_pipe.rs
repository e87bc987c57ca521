//! A closed pipe is not an error: every command that prints, run with its standard output on a pipe whose reader is
//! gone (`backset check SET | head -2` once `head` has left), ends quietly with status 0. Each command printed with
//! std's `println!` and panicked on the first line (exit 101, "failed printing to stdout: Broken pipe").

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::{backset, hotcopy_args, s, text, tmp, Server};

/// Runs `backset args` with its stdout on a pipe whose reader has exited before it starts, so that its first write
/// fails with EPIPE whatever it prints and however fast it runs: the read end belonged to a `true` that was waited
/// for (this process closed its own copy when it spawned it).
fn with_closed_stdout(args: &[&str]) -> Output {
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let write_end = reader.stdin.take().unwrap();
    assert!(reader.wait().unwrap().success());
    support::command().args(args).stdout(Stdio::from(write_end)).stderr(Stdio::piped()).output().unwrap()
}

fn assert_quiet_success(args: &[&str]) {
    let out = with_closed_stdout(args);
    assert_eq!(out.status.code(), Some(0), "backset {args:?} with a closed stdout: {}", text(&out));
    assert!(out.stderr.is_empty(), "backset {args:?} with a closed stdout wrote to stderr: {}", text(&out));
}

/// Runs `backset args` normally and asserts it printed something (so the closed-pipe run had a line to write).
fn prints(args: &[&str]) {
    let out = backset(args);
    assert!(out.status.success() && !out.stdout.is_empty(), "backset {args:?}: {}", text(&out));
}

#[test]
fn regression_a_closed_pipe_made_every_printing_command_panic() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let put: serde_json::Map<String, serde_json::Value> =
        (0..200).map(|i| (format!("key-{i:04}"), json!("value"))).collect();
    let a = srv.post_json("/databases/demo/transactions", &json!({ "put": put }));
    assert_eq!(a.code, 200, "{}", a.text);
    let set = dir.path().join("set");
    let api = ["--api-server", &srv.addr];
    let set_arg = s(&set);
    let hotcopy = hotcopy_args("full", &set_arg, &["--timeout", "60"]);
    let out = backset(&[&hotcopy[..], &api].concat());
    assert!(out.status.success(), "{}", text(&out));
    let restored = dir.path().join("restored");
    prints(&["restore", "--restore-dir", &s(&restored), &s(&set)]);
    let archive: &Path = &restored;

    let online: [&[&str]; 3] = [
        &["show", "hotcopy-info", "--db-name", "demo"],
        &["get", "hotcopy-info", "--db-name", "demo"],
        &["get", "processes"],
    ];
    for args in online {
        let args = [args, &api].concat();
        prints(&args);
        assert_quiet_success(&args);
    }
    let offline: [&[&str]; 7] = [
        &["check", &s(&set)],
        &["restore", "--report-timestamps", &s(&set)],
        &["restore", "--report-backups", &s(&set)],
        &["archive", "check", &s(archive)],
        &["archive", "dump", &s(archive)],
        &["archive", "info", &s(archive)],
        &["restore", "--restore-dir", &s(&dir.path().join("second")), &s(&set)],
    ];
    for args in offline {
        if args[1] != "--restore-dir" {
            prints(args);
        }
        assert_quiet_success(args);
    }
    // The restore whose report could not be printed still restored.
    prints(&["archive", "check", &s(&dir.path().join("second"))]);
}
