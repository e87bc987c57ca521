//! The README's "Operating Backset" walk-through, run step for step with the real binary and a real `backset serve`
//! on a free loopback port: each step below names the README block it is, and runs the same command (the client verbs
//! get `--api-server` for the free port; the data API's bodies are the README's `curl -d` bodies, sent with ureq).
//! If a step has to change here, the README's block changes with it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{field, ok, Server};

/// A completed hot copy's response line: asserts it, returns its id.
fn completed(out: &str) -> String {
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(field(out, "status"), "completed", "{out}");
    assert_eq!(field(out, "message"), "Hot copy successfully completed", "{out}");
    assert_eq!(field(out, "coordinator_start_id"), "1", "{out}");
    field(out, "id")
}

fn post_txn(addr: &str, body: &str) -> Value {
    let resp = ureq::post(&format!("http://{addr}/api/1/databases/demo/transactions"))
        .timeout(Duration::from_secs(60))
        .send_string(body)
        .unwrap_or_else(|e| panic!("POST transactions {body}: {e}"));
    serde_json::from_str(&resp.into_string().unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_readme_operator_walkthrough() {
    let ops = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (data, set, restored) = (ops.path().join("data"), ops.path().join("set"), ops.path().join("restored"));

    // README block 1: `backset serve --data-dir /tmp/ops/data --listen 127.0.0.1:8888 &` (on a free port)
    let serve = Server::start(&data, &[]);
    let addr = serve.addr.clone();
    let api = ["--api-server", addr.as_str()];

    // README block 2: `curl -s -X POST .../transactions -d '{"put": {"apple": "red", "banana": "yellow"}}'`
    let v = post_txn(&addr, r#"{"put": {"apple": "red", "banana": "yellow"}}"#);
    assert_eq!(v["txnId"], 1, "{v}");
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");

    // README block 3: `backset hotcopy database --db-name demo --type full --backup-dirs 0 /tmp/ops/set --timeout 60`
    let hotcopy = |kind| {
        let args = ["hotcopy", "database", "--db-name", "demo", "--type", kind, "--backup-dirs", "0", s(&set)];
        ok(&[&args[..], &["--timeout", "60"], &api].concat())
    };
    let full = completed(&hotcopy("full"));

    // README block 4: the second `curl`, then
    // `backset hotcopy database --db-name demo --type journal --backup-dirs 0 /tmp/ops/set --timeout 60`
    let v = post_txn(&addr, r#"{"put": {"cherry": "dark red"}, "delete": ["banana"]}"#);
    assert_eq!(v["txnId"], 2, "{v}");
    let journal = completed(&hotcopy("journal"));
    assert_ne!(full, journal);

    // README block 5: `backset get hotcopy-status --coordinator-start-id 1 --hotcopy-id <the journal's id>`, then
    // `backset show hotcopy-info --db-name demo`
    let status =
        ok(&[&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &journal], &api[..]].concat());
    assert_eq!(completed(&status), journal);
    assert!(field(&status, "end_timestamp").len() == "2026-11-26 02:55:06".len(), "{status}");
    let show = ok(&[&["show", "hotcopy-info", "--db-name", "demo"], &api[..]].concat());
    let lines: Vec<&str> = show.lines().collect();
    assert_eq!(lines.len(), 3, "{show}");
    // nuocmd's process line: `[SM] <host>/<address> [start_id = 1] [server_id = <host>] [pid = <serve's>] ...`.
    let pid = serve.pid();
    assert!(lines[0].starts_with("[SM] ") && lines[0].contains(&format!("/{addr} [start_id = 1] [server_id = ")));
    assert!(lines[0].ends_with(&format!("[pid = {pid}] [node_id = ] [last_ack =  0.00] MONITORED:RUNNING")), "{show}");
    for (line, id) in lines[1..].iter().zip([&full, &journal]) {
        assert!(line.starts_with(&format!("  {id} [completed] ")), "{show}");
        assert!(line.ends_with(" : Hot copy successfully completed (3)"), "{show}");
    }

    // README block 6: `kill %1` (SIGTERM); the server closes the database and exits 0.
    let (exit, stderr) = serve.terminate();
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("admin API on http://{addr}")), "{stderr}");
    assert!(stderr.contains("  INFO SM start id 1 serves archive 0 in "), "{stderr}");
    for id in [&full, &journal] {
        assert!(stderr.contains(&format!("  INFO Hot copy started id={id} ")), "{stderr}");
        assert!(stderr.contains(&format!("  INFO Hot copy successfully completed id={id} ")), "{stderr}");
    }
    assert!(stderr.contains("  INFO SIGTERM: cancelling running hot copies and closing the database"), "{stderr}");
    assert!(stderr.trim_end().ends_with("  INFO server stopped; database closed"), "{stderr}");

    // README block 7: `backset restore --restore-dir /tmp/ops/restored /tmp/ops/set`,
    // `backset check /tmp/ops/set`, `backset archive dump /tmp/ops/restored`
    let out = ok(&["restore", "--restore-dir", s(&restored), s(&set)]);
    assert!(
        out.starts_with(&format!("restored backup set {} to transaction 2 in {}: ", s(&set), s(&restored))),
        "{out}"
    );
    let out = ok(&["check", s(&set)]);
    assert!(out.starts_with(&format!("backup set {}: 2 completed elements, ", s(&set))), "{out}");
    assert!(out.contains(" verified, 0 defects; restorable transactions: [1, 2]"), "{out}");
    assert!(!out.contains("defect:"), "{out}");
    let dump = ok(&["archive", "dump", s(&restored)]);
    assert_eq!(dump, "{\"key\":\"apple\",\"value\":\"red\"}\n{\"key\":\"cherry\",\"value\":\"dark red\"}\n");
}
