//! NuoDB's own client, `nuocmd` (PyPI `pynuoadmin`, the version `.ci/run` pins), run unchanged against `backset serve`
//! through every verb and option of NuoDB's hot copy documentation: each command's output and exit code are compared
//! with what `backset`'s own client prints for the same request, with only hot copy ids and timestamps normalised
//! (two hot copies started one after the other differ there and nowhere else).
//!
//! `nuocmd` is found through `BACKSET_NUOCMD` (the path of the script) or on `PATH`; it runs with its own directory
//! first on `PATH` (a virtual environment's `python3`). Where it is missing each test says so and passes, unless
//! `BACKSET_REQUIRE_NUOCMD=1` (set by `.ci/run`), which makes it fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use support::{s, text, tmp, wait_until, Server};

/// The `nuocmd` to run, or `None` (with the reason printed) when it is missing and not required.
fn nuocmd() -> Option<PathBuf> {
    let required = std::env::var("BACKSET_REQUIRE_NUOCMD").is_ok_and(|v| v == "1");
    let found = match std::env::var_os("BACKSET_NUOCMD").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "BACKSET_NUOCMD={} is not a file", p.display());
            Some(p)
        }
        None => std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("nuocmd")).find(|p| p.is_file())),
    };
    if found.is_none() {
        let why = "nuocmd not found (set BACKSET_NUOCMD to its path, or put it on PATH: `python3 -m venv v && \
                   v/bin/pip install pynuoadmin==2.7.0`)";
        assert!(!required, "BACKSET_REQUIRE_NUOCMD=1 but {why}");
        eprintln!("skipped: {why}");
    }
    found
}

/// A command's exit code and stdout.
#[derive(Debug, PartialEq)]
struct Ran {
    code: Option<i32>,
    stdout: String,
}

fn ran(out: &Output) -> Ran {
    Ran { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into_owned() }
}

/// Runs `nuocmd --api-server <srv> args...`.
fn run_nuocmd(nuocmd: &Path, srv: &Server, args: &[&str]) -> Output {
    let dir = nuocmd.parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    Command::new(nuocmd)
        .args(["--api-server", &srv.addr])
        .args(args)
        .env("PATH", path)
        .env_remove("NUOCMD_API_SERVER")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap()
}

/// Replaces hot copy ids and timestamps (`2026-11-26 02:46:32`, and the shortened end `..02:46:33`) with placeholders.
fn normalise(out: &str) -> String {
    let b = out.as_bytes();
    let shape = |at: usize, pattern: &str| {
        b.len() >= at + pattern.len()
            && pattern.bytes().zip(&b[at..]).all(|(p, &c)| match p {
                b'h' => c.is_ascii_hexdigit(),
                b'9' => c.is_ascii_digit(),
                _ => p == c,
            })
    };
    const UUID: &str = "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";
    const STAMP: &str = "9999-99-99 99:99:99";
    const TIME: &str = "..99:99:99";
    let mut res = String::new();
    let mut i = 0;
    while i < b.len() {
        if shape(i, UUID) {
            res.push_str("<id>");
            i += UUID.len();
        } else if shape(i, STAMP) {
            res.push_str("<time>");
            i += STAMP.len();
        } else if shape(i, TIME) {
            res.push_str("..<time>");
            i += TIME.len();
        } else {
            let c = out[i..].chars().next().unwrap();
            res.push(c);
            i += c.len_utf8();
        }
    }
    res
}

/// Runs the same command with nuocmd and with `backset`, asserts equal exit codes and equal stdout after
/// [`normalise`]; returns nuocmd's and backset's stdout.
fn same(nuocmd: &Path, srv: &Server, args: &[&str]) -> (String, String) {
    same_with(nuocmd, srv, args, args)
}

/// As [`same`], with each client's own arguments (destinations that must differ).
fn same_with(nuocmd: &Path, srv: &Server, theirs: &[&str], ours: &[&str]) -> (String, String) {
    compare(theirs, &run_nuocmd(nuocmd, srv, theirs), ours, &srv.cli(ours))
}

/// Asserts equal exit codes and equal stdout after [`normalise`] of nuocmd's output `n` and backset's `b`.
fn compare(theirs: &[&str], n: &Output, ours: &[&str], b: &Output) -> (String, String) {
    let (rn, rb) = (ran(n), ran(b));
    assert_eq!(
        (rn.code, normalise(&rn.stdout)),
        (rb.code, normalise(&rb.stdout)),
        "nuocmd {theirs:?}:\n{}\nbackset {ours:?}:\n{}",
        text(n),
        text(b)
    );
    (rn.stdout, rb.stdout)
}

/// The `id=` of a `HotCopyResponse(...)` line.
fn id_of(line: &str) -> String {
    let at = line.find(", id=").unwrap_or_else(|| panic!("no id in {line}")) + ", id=".len();
    line[at..at + 36].to_string()
}

/// `hotcopy database --db-name demo extra...`.
fn hc<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["hotcopy", "database", "--db-name", "demo"];
    v.extend_from_slice(extra);
    v
}

fn commit(srv: &Server, n: usize) {
    for i in 0..n {
        let a = srv.post_json("/databases/demo/transactions", &json!({"put": {format!("k{i:04}"): "v".repeat(100)}}));
        assert_eq!(a.code, 200, "{}", a.text);
    }
}

#[test]
fn every_hot_copy_verb_and_option_of_the_documentation() {
    let Some(nuocmd) = nuocmd() else { return };
    let dir = tmp();
    let p = |name: &str| s(&dir.path().join(name));
    let srv = Server::start(&dir.path().join("data"), &["--sms", "2", "--storage-groups", "2"]);
    commit(&srv, 50);

    // hotcopy database: every type; --backup-dirs (several archives: a coordinated hot copy); --timeout.
    // A journal hot copy goes into the set of the latest full: each client runs its own chain, then they compare.
    let chain = |sets: [&str; 2], run: &dyn Fn(&[&str]) -> Output| -> Vec<(Vec<String>, Output)> {
        ["full", "incremental", "journal"]
            .into_iter()
            .map(|kind| {
                commit(&srv, 10);
                let args = hc(&["--type", kind, "--backup-dirs", "0", sets[0], "1", sets[1], "--timeout", "60"]);
                (args.iter().map(|a| a.to_string()).collect(), run(&args))
            })
            .collect()
    };
    let (n0, n1, b0, b1) = (p("n0"), p("n1"), p("b0"), p("b1"));
    let theirs = chain([&n0, &n1], &|a| run_nuocmd(&nuocmd, &srv, a));
    let ours = chain([&b0, &b1], &|a| srv.cli(a));
    for ((ta, tn), (oa, ob)) in theirs.iter().zip(&ours) {
        let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        let (t, _) = compare(&[&strs(ta)], tn, &[&strs(oa)], ob);
        assert!(t.contains("status=completed"), "{t}");
    }
    // Without --timeout: at once, `HotCopyResponse(coordinator_start_id=1, id=..)`; then get hotcopy-status.
    // One simple hot copy of an archive at a time: nuocmd's ends before backset's starts.
    let (ns, ns1, bs, bs1) = (p("ns"), p("ns1"), p("bs"), p("bs1"));
    let (na, ba) = (
        hc(&["--type", "simple", "--backup-dirs", "0", &ns, "1", &ns1]),
        hc(&["--type", "simple", "--backup-dirs", "0", &bs, "1", &bs1]),
    );
    let n = run_nuocmd(&nuocmd, &srv, &na);
    let first = id_of(&String::from_utf8_lossy(&n.stdout));
    let a = srv.get(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={first}&timeoutSec=60"));
    assert_eq!(a.json["status"], "completed", "{}", a.text);
    let (theirs, ours) = compare(&na, &n, &ba, &srv.cli(&ba));
    assert!(normalise(&theirs).starts_with("HotCopyResponse(coordinator_start_id=1, id=<id>)"), "{theirs}");
    for id in [id_of(&theirs), id_of(&ours)] {
        let status = ["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id];
        let (theirs, _) = same(&nuocmd, &srv, &[&status[..], &["--timeout", "60"]].concat());
        assert!(theirs.contains("status=completed"), "{theirs}");
        same(&nuocmd, &srv, &status);
        // nuocmd's global options stand before the command; backset takes them there too.
        same(&nuocmd, &srv, &[&["--show-json"], &status[..]].concat());
    }
    // --max-rate (nuocmd sends it as a string of bytes per second); --default-backup-dir alone: every archive.
    same_with(
        &nuocmd,
        &srv,
        &hc(&["--type", "full", "--default-backup-dir", &p("nd"), "--max-rate", "50", "--timeout", "60"]),
        &hc(&["--type", "full", "--default-backup-dir", &p("bd"), "--max-rate", "50", "--timeout", "60"]),
    );
    // --shared: the default directory exists and each archive writes into its subdirectory.
    for d in ["nsh", "bsh"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    same_with(
        &nuocmd,
        &srv,
        &hc(&["--type", "full", "--default-backup-dir", &p("nsh"), "--shared", "--timeout", "60"]),
        &hc(&["--type", "full", "--default-backup-dir", &p("bsh"), "--shared", "--timeout", "60"]),
    );
    for d in ["nsh/0", "nsh/1", "bsh/0", "bsh/1"] {
        assert!(dir.path().join(d).join("full").is_dir(), "no set in {d}");
    }
    // One archive of two storage groups: refused by both, accepted with --partial-storage-groups.
    let (n, b) = (
        run_nuocmd(&nuocmd, &srv, &hc(&["--type", "full", "--backup-dirs", "1", &p("np")])),
        srv.cli(&hc(&["--type", "full", "--backup-dirs", "1", &p("bp")])),
    );
    for out in [&n, &b] {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Not all storage groups are included"), "{}", text(out));
    }
    same_with(
        &nuocmd,
        &srv,
        &hc(&["--type", "full", "--backup-dirs", "1", &p("np"), "--partial-storage-groups", "--timeout", "60"]),
        &hc(&["--type", "full", "--backup-dirs", "1", &p("bp"), "--partial-storage-groups", "--timeout", "60"]),
    );
    // --process-filter with --default-backup-dir: the SMs the filter selects (nuocmd pages GET /processes for them).
    same_with(
        &nuocmd,
        &srv,
        &hc(&[
            "--type",
            "full",
            "--default-backup-dir",
            &p("nf"),
            "--process-filter",
            "label(archive-id 0)",
            "--partial-storage-groups",
            "--timeout",
            "60",
        ]),
        &hc(&[
            "--type",
            "full",
            "--default-backup-dir",
            &p("bf"),
            "--process-filter",
            "label(archive-id 0)",
            "--partial-storage-groups",
            "--timeout",
            "60",
        ]),
    );
    assert!(dir.path().join("nf/full").is_dir() && dir.path().join("bf/full").is_dir());

    // Reading: the same state, so the same output byte for byte.
    let exact = |args: &[&str]| {
        let (theirs, ours) = same(&nuocmd, &srv, args);
        assert_eq!(theirs, ours, "{args:?}");
        theirs
    };
    let info = exact(&["get", "hotcopy-info", "--db-name", "demo"]);
    assert!(info.starts_with("HotCopyDatabaseStatuses(errors={}, hotcopy_statuses={1: [HotCopyResponse("), "{info}");
    exact(&["get", "hotcopy-info", "--coordinator-start-id", "2"]);
    exact(&["get", "hotcopy-info", "--db-name", "demo", "--running-for", "2h"]);
    exact(&["get", "hotcopy-info", "--db-name", "demo", "--timeout", "10"]);
    let show = exact(&["show", "hotcopy-info", "--db-name", "demo"]);
    assert!(show.starts_with("[SM] ") && show.contains("MONITORED:RUNNING"), "{show}");
    exact(&["show", "hotcopy-info", "--db-name", "demo", "--running-for", "30m"]);
    exact(&[
        "show",
        "hotcopy-info",
        "--db-name",
        "demo",
        "--process-format",
        "{engine_type} {start_id:>4} {archive_id} {node_id::-}",
        "--hotcopy-format",
        "{id}: {status} ({stage}) {coordinator_start_id}",
    ]);
    exact(&["get", "processes"]);
    exact(&["get", "processes", "--db-name", "demo"]);
}

#[test]
fn timeouts_and_cancel_of_a_running_hot_copy() {
    let Some(nuocmd) = nuocmd() else { return };
    let dir = tmp();
    let mark = dir.path().join("mark");
    // Every full hot copy blocks once begun, until it is cancelled.
    let srv = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("BACKSET_FAULT_PAUSE", "full:begun"), ("BACKSET_FAULT_PAUSE_MARK", &s(&mark))],
    );
    commit(&srv, 5);
    for (who, set) in [("nuocmd", "nset"), ("backset", "bset")] {
        let _ = std::fs::remove_file(&mark);
        let set = s(&dir.path().join(set));
        let args = hc(&["--type", "full", "--backup-dirs", "0", &set, "--timeout", "2"]);
        let out = if who == "nuocmd" { run_nuocmd(&nuocmd, &srv, &args) } else { srv.cli(&args) };
        assert_eq!(out.status.code(), Some(1), "{who}: {}", text(&out));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            line.contains(": timeout while waiting for hot copy operation to finish, status=running"),
            "{who}: {line}"
        );
        assert!(wait_until(Duration::from_secs(30), || mark.exists()), "{who}: the hot copy never paused");
        let id = id_of(&line);
        // get hotcopy-status: at once, and with a --timeout that runs out (exit 1, the suffix).
        let status = ["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id];
        let (running, _) = same(&nuocmd, &srv, &status);
        assert!(running.contains("status=running"), "{running}");
        let (theirs, _) = same(&nuocmd, &srv, &[&status[..], &["--timeout", "1"]].concat());
        assert!(theirs.contains("timeout while waiting"), "{theirs}");
        // show hotcopy-info of a running hot copy: `begin...`.
        let (show, ours) = same(&nuocmd, &srv, &["show", "hotcopy-info", "--db-name", "demo"]);
        assert_eq!(show, ours);
        assert!(show.contains("... : "), "{show}");
        // cancel hotcopy --timeout: cancelled (each client cancels its own hot copy).
        let cancel = ["cancel", "hotcopy", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "30"];
        let out = if who == "nuocmd" { run_nuocmd(&nuocmd, &srv, &cancel) } else { srv.cli(&cancel) };
        assert_eq!(out.status.code(), Some(0), "{who}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("status=cancelled"), "{who}: {}", text(&out));
    }
    // Cancelling an ended hot copy leaves it as it is, without a timeout too.
    let info = srv.get("/databases/demo/hotCopyStatus");
    let ids: Vec<String> = info.json["hotCopyStatuses"]["1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hotCopyId"].as_str().unwrap().to_string())
        .collect();
    let (theirs, ours) =
        same(&nuocmd, &srv, &["cancel", "hotcopy", "--coordinator-start-id", "1", "--hotcopy-id", &ids[0]]);
    assert_eq!(theirs, ours);
}

#[test]
fn get_processes_pages_through_many_sms() {
    let Some(nuocmd) = nuocmd() else { return };
    let dir = tmp();
    // More SMs than nuocmd's first page (20): it asks for the next page while hasNext says so.
    let srv = Server::start(&dir.path().join("data"), &["--sms", "25"]);
    let (theirs, ours) = same(&nuocmd, &srv, &["get", "processes"]);
    assert_eq!(theirs, ours);
    assert_eq!(theirs.lines().count(), 25, "{theirs}");
    let (theirs, ours) = same(&nuocmd, &srv, &["show", "hotcopy-info", "--db-name", "demo"]);
    assert_eq!((theirs.lines().count(), theirs), (25, ours));
}
