//! End to end: `backset serve` run as the real binary on a free loopback port, driven over HTTP: the data API, every
//! hot copy endpoint and its error statuses, malformed requests, the bearer token, and a clean SIGTERM.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{backset, command, free_port, s, stderr, text, tmp, Server, PORT_RETRIES};

#[test]
fn data_api_commits_and_reads() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let (code, a) = srv.post_json_checked("/databases/demo/transactions", &json!({"put": {"k1": "v1", "k2": "v2"}}));
    assert_eq!(code, 200, "{a}");
    let ts = a["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-26T02:42:51.397498Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".", "{ts}");
    let (code, b) =
        srv.post_json_checked("/databases/demo/transactions", &json!({"put": {"k1": "v3"}, "delete": ["k2"]}));
    assert_eq!(code, 200, "{b}");
    assert!(b["txnId"].as_u64().unwrap() > a["txnId"].as_u64().unwrap());
    assert_eq!(srv.get_checked("/databases/demo/keys/k1"), (200, json!({"key": "k1", "value": "v3"})));
    assert_eq!(srv.get_checked("/databases/demo/keys/k2").0, 404);
    // Keys with characters that need escaping in a path.
    let (code, _) = srv.post_json_checked("/databases/demo/transactions", &json!({"put": {"a b/c": "x"}}));
    assert_eq!(code, 200);
    assert_eq!(srv.get_checked("/databases/demo/keys/a%20b%2Fc").1["value"], "x");
}

#[test]
fn malformed_requests_get_json_errors_and_never_crash_the_server() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let t = "/databases/demo/transactions";
    for (body, code) in [
        ("", 400),
        ("{", 400),
        ("[1,2]", 400),
        ("{\"put\": {\"k\": 1}}", 400),
        ("{\"put\": {}, \"unknown\": 1}", 400),
        ("{}", 400),
        ("{\"put\": {\"\": \"empty key\"}}", 400),
        ("{\"put\": {\"k\": \"v\"}, \"delete\": [\"k\"]}", 400),
        ("\u{0}\u{1}garbage", 400),
    ] {
        let (got, v) = srv.post_checked(t, body);
        assert_eq!(got, code, "body {body:?}: {v}");
    }
    assert_eq!(srv.post_json_checked("/databases/other/transactions", &json!({"put": {"k": "v"}})).0, 404);
    assert_eq!(srv.get_checked("/databases/other/keys/k").0, 404);
    assert_eq!(srv.get_checked("/no/such/endpoint").0, 404);
    assert_eq!(srv.get_checked("/databases/demo/transactions").0, 405);
    for body in
        ["{", "{\"type\": \"full\"", "{\"type\": \"bogus\", \"backupSetDirs\": {\"0\": \"/x\"}}", "{\"type\": 5}"]
    {
        assert_eq!(srv.post_checked("/databases/demo/hotCopy", body).0, 400, "{body}");
    }
    for q in
        ["", "?coordinatorStartId=x", "?coordinatorStartId=1&hotCopyId=nope", "?coordinatorStartId=1&timeoutSec=-1"]
    {
        assert_eq!(srv.get_checked(&format!("/databases/hotCopyStatus{q}")).0, 400, "{q}");
    }
    assert_eq!(srv.post_checked("/databases/cancelHotCopy?coordinatorStartId=1", "").0, 400);
    assert_eq!(srv.get_checked("/databases/demo/hotCopyStatus?minSecondsRunning=abc").0, 400);
    // A large body within the limit is read; the server still answers after all of it.
    let big = json!({"put": {"big": "x".repeat(1 << 20)}});
    assert_eq!(srv.post_json_checked(t, &big).0, 200);
    assert_eq!(srv.get_checked("/databases/demo/keys/big").1["value"].as_str().unwrap().len(), 1 << 20);
    let (code, _) = srv.post_json_checked(t, &json!({"put": {"still": "alive"}}));
    assert_eq!(code, 200);
}

#[test]
fn hot_copy_endpoints_full_incremental_journal_simple() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(200, 500);
    let set = dir.path().join("set");
    let body = json!({"type": "full", "backupSetDirs": {"0": s(&set)}, "timeoutSec": 60});
    let (code, full) = srv.post_json_checked("/databases/demo/hotCopy", &body);
    assert_eq!(code, 200, "{full}");
    for field in ["hotCopyId", "coordinatorStartId", "beginTimestamp", "endTimestamp", "status", "message", "stage"] {
        assert!(!full[field].is_null(), "no {field} in {full}");
    }
    assert_eq!(full["status"], "completed");
    assert_eq!(full["message"], "Hot copy successfully completed");
    assert_eq!(full["coordinatorStartId"], 1);
    assert_eq!(full["destinationDirectory"], s(&set));
    assert_eq!(full["beginTimestamp"].as_str().unwrap().len(), "2019-06-18 10:18:37".len());
    let id = full["hotCopyId"].as_str().unwrap().to_string();
    let uri = full["uri"].as_str().unwrap();
    assert!(uri.ends_with(&format!("/api/1/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}")), "{uri}");
    // The uri answers the same status.
    let (code, again) = srv.get_checked(uri.split("/api/1").nth(1).unwrap());
    assert_eq!((code, &again["status"]), (200, &json!("completed")));
    // Behind a proxy the links follow the Host header; one that is not a host name is ignored.
    for (host, want) in [("backup.example:8443", "http://backup.example:8443/api/1/"), ("a/b\"c", "http://127.0.0.1:")]
    {
        let v: Value = ureq::get(uri).set("Host", host).call().unwrap().into_json().unwrap();
        assert!(v["uri"].as_str().unwrap().starts_with(want), "{host}: {v}");
    }

    // A second full into the same set is refused: 409 with the engine's message.
    let (code, e) = srv.post_json_checked("/databases/demo/hotCopy", &body);
    assert_eq!(code, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("is not empty"), "{e}");
    // An incremental into a directory without a set: 409.
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "incremental", "backupSetDirs": {"0": s(&dir.path().join("nothing"))}}),
    );
    assert_eq!(code, 409, "{e}");
    // Unknown archive: 400.
    let (code, _) =
        srv.post_json_checked("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"7": "/tmp/x"}}));
    assert_eq!(code, 400);
    let (code, _) =
        srv.post_json_checked("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"a": "/tmp/x"}}));
    assert_eq!(code, 400);
    // A simple hot copy goes through hotCopySimple.
    let (code, _) =
        srv.post_json_checked("/databases/demo/hotCopy", &json!({"type": "simple", "backupSetDirs": {"0": "/x"}}));
    assert_eq!(code, 400);

    srv.load(50, 500);
    for kind in ["incremental", "journal"] {
        let (code, v) = srv.post_json_checked(
            "/databases/demo/hotCopy",
            &json!({"type": kind, "backupSetDirs": {"0": s(&set)}, "timeoutSec": 60, "maxRate": 500_000_000}),
        );
        assert_eq!((code, &v["status"]), (200, &json!("completed")), "{v}");
    }
    // Without a timeout the answer comes at once; the status endpoint waits.
    srv.load(10, 100);
    let (code, v) =
        srv.post_json_checked("/databases/demo/hotCopy", &json!({"type": "journal", "backupSetDirs": {"0": s(&set)}}));
    assert_eq!(code, 200, "{v}");
    let jid = v["hotCopyId"].as_str().unwrap();
    let (code, v) =
        srv.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={jid}&timeoutSec=60"));
    assert_eq!((code, &v["status"]), (200, &json!("completed")), "{v}");

    // Status by SM and by database.
    let (code, sm) = srv.get_checked("/databases/hotCopyStatus?coordinatorStartId=1");
    assert_eq!(code, 200);
    assert_eq!(sm["hotCopyStatuses"]["1"].as_array().unwrap().len(), 4, "{sm}");
    let (code, db) = srv.get_checked("/databases/demo/hotCopyStatus");
    assert_eq!(code, 200);
    assert_eq!(db["hotCopyStatuses"]["1"].as_array().unwrap().len(), 4);
    assert!(db["errors"].as_object().unwrap().is_empty());
    let (_, long) = srv.get_checked("/databases/demo/hotCopyStatus?minSecondsRunning=1000");
    assert!(long["hotCopyStatuses"]["1"].as_array().unwrap().is_empty(), "{long}");
    assert_eq!(srv.get_checked("/databases/hotCopyStatus?coordinatorStartId=9").0, 404);
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(srv.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={unknown}")).0, 404);
    assert_eq!(srv.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId=2&hotCopyId={id}")).0, 404);
    // Cancelling an ended hot copy leaves it as it is; an unknown one is 404.
    let (code, v) = srv.post_checked(&format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={id}"), "");
    assert_eq!((code, &v["status"]), (200, &json!("completed")));
    assert_eq!(
        srv.post_checked(&format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={unknown}"), "").0,
        404
    );

    // Simple: an archive directory.
    let copy = dir.path().join("simple");
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopySimple",
        &json!({"backupLocations": {"0": {"copyArchiveDir": s(&copy)}}, "timeoutSec": 60}),
    );
    assert_eq!((code, &v["status"]), (200, &json!("completed")), "{v}");
    assert!(copy.join("atoms").is_dir() && copy.join("journal").is_dir());
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopySimple",
        &json!({"defaultBackupLocation": {"copyArchiveDir": "/tmp/a", "copyJournalDir": "/tmp/a"}}),
    );
    assert_eq!(code, 400, "{e}");

    // The set the server made passes the offline check.
    let out = backset(&["check", &s(&set)]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_running_hot_copy_is_cancelled_and_leaves_no_set() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(400, 2000);
    let set = dir.path().join("set");
    // 10 kB/s: the copy of about 800 kB takes over a minute.
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&set)}, "maxRate": 10_000}),
    );
    // Started without a wait: nuoadmin's answer, the ids and the status link only.
    assert_eq!((code, &v["status"]), (200, &Value::Null), "{v}");
    let id = v["hotCopyId"].as_str().unwrap();
    assert_eq!(
        srv.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}")).1["status"],
        "running"
    );
    // The server keeps answering while it runs; the running job is listed with minSecondsRunning=0.
    assert_eq!(srv.get_checked("/databases/demo/keys/key-000001").0, 200);
    let (_, running) = srv.get_checked("/databases/demo/hotCopyStatus?minSecondsRunning=0");
    assert_eq!(running["hotCopyStatuses"]["1"][0]["hotCopyId"], id);
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&dir.path().join("other"))}}),
    );
    assert_eq!(code, 409, "{e}");
    assert_eq!(e["message"], "Only one full hot copy at a time allowed");
    let (code, v) =
        srv.post_checked(&format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={id}&timeoutSec=30"), "");
    assert_eq!((code, &v["status"]), (200, &json!("cancelled")), "{v}");
    assert_eq!(v["message"], "Hot copy cancelled");
    assert!(!set.exists() || std::fs::read_dir(&set).unwrap().count() == 0, "a cancelled full left its set");
}

#[test]
fn sigterm_cancels_running_jobs_closes_the_store_and_exits_0() {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    srv.load(400, 2000);
    let set = dir.path().join("set");
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&set)}, "maxRate": 10_000}),
    );
    assert_eq!(code, 200, "{v}");
    let id = v["hotCopyId"].as_str().unwrap().to_string();
    // A request waiting on the hot copy is answered when the shutdown cancels it.
    let waiter = {
        let url = format!("{}/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}&timeoutSec=600", srv.api);
        std::thread::spawn(move || {
            ureq::get(&url).call().map(|r| r.into_json::<Value>().unwrap()).map_err(|e| e.to_string())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (exit, stderr) = srv.terminate();
    let answered = waiter.join().unwrap().expect("the waiting request was answered");
    assert_eq!(answered["status"], "cancelled", "{answered}");
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "shutdown took {:?}", started.elapsed());
    assert!(stderr.contains("SIGTERM") && stderr.contains("database closed"), "{stderr}");
    // The store was closed cleanly: its archive checks without a torn tail, and holds every key.
    let out = backset(&["archive", "info", &s(&data.join("database/0"))]);
    assert!(out.status.success(), "{}", text(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["keys"], 400);
    assert_eq!(info["tornTail"], false);
    // After a restart the job shows cancelled, and the data is there.
    let srv = Server::start(&data, &[]);
    let (code, v) = srv.get_checked(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}"));
    assert_eq!((code, &v["status"]), (200, &json!("cancelled")), "{v}");
    assert_eq!(srv.get_checked("/databases/demo/keys/key-000399").0, 200);
    let (exit, stderr) = srv.terminate();
    assert_eq!(exit, Some(0), "{stderr}");
}

#[test]
fn processes_and_filters() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &["--sms", "3", "--storage-groups", "3"]);
    let (code, v) = srv.get_checked("/processes");
    assert_eq!(code, 200);
    let ids: Vec<u64> =
        v["data"].as_array().unwrap().iter().map(|p| p["startId"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(v["data"][1]["labels"]["storage-groups"], "SG2");
    assert_eq!(v["data"][1]["type"], "SM");
    let (_, v) = srv.get_checked("/processes?filterQuery=or(label(archive-id%200)%20start_id(3))");
    let ids: Vec<u64> =
        v["data"].as_array().unwrap().iter().map(|p| p["startId"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, [1, 3]);
    let (code, e) = srv.get_checked("/processes?filterQuery=label(archive-id");
    assert_eq!(code, 400);
    assert!(e["message"].as_str().unwrap().contains("at position 16"), "{e}");
}

#[test]
fn storage_groups_and_a_coordinated_hot_copy() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &["--sms", "2", "--storage-groups", "2"]);
    srv.load(100, 300);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (code, e) =
        srv.post_json_checked("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": s(&a)}}));
    assert_eq!(code, 400, "{e}");
    assert_eq!(e["message"], "Not all storage groups are included in hot-copy for dbName=demo, missingSgs=[SG2]");
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&a), "1": s(&b)}, "timeoutSec": 60}),
    );
    assert_eq!((code, &v["status"]), (200, &json!("completed")), "{v}");
    assert_eq!(v["coordinatorStartId"], 1);
    assert_eq!(v["participants"].as_array().unwrap().len(), 2);
    // With the check off, one archive alone is fine.
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"1": s(&dir.path().join("c"))}, "checkContainsAllSgs": false, "timeoutSec": 60}),
    );
    assert_eq!((code, &v["status"], &v["coordinatorStartId"]), (200, &json!("completed"), &json!(2)), "{v}");
    // Both SMs list the coordinated one.
    let (_, info) = srv.get_checked("/databases/demo/hotCopyStatus");
    assert_eq!(info["hotCopyStatuses"]["1"].as_array().unwrap().len(), 1);
    assert_eq!(info["hotCopyStatuses"]["2"].as_array().unwrap().len(), 2);
}

#[test]
fn bearer_token() {
    let dir = tmp();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123\n").unwrap();
    // Without a token a non-loopback address is refused at start.
    let out = backset(&["serve", "--listen", "0.0.0.0:1", "--data-dir", &s(&dir.path().join("d0"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--auth-token-file"));
    let tf = s(&token_file);
    let srv =
        Server::start_with_token(&dir.path().join("data"), &["--auth-token-file", &tf], Some("s3cret-token-0123"));
    assert_eq!(srv.get_checked("/processes").0, 200);
    assert_eq!(srv.raw("GET", "/processes", None, Some("s3cret-token-0124")).code, 401);
    assert_eq!(srv.raw("GET", "/processes", None, None).code, 401);
    let txn = json!({"put": {"k": "v"}}).to_string();
    assert_eq!(srv.raw("POST", "/databases/demo/transactions", Some(txn.as_bytes()), None).code, 401);
    let (exit, stderr) = srv.terminate();
    assert_eq!(exit, Some(0));
    assert!(!stderr.contains("s3cret"), "the token was logged: {stderr}");
}

#[test]
fn sigint_stops_cleanly_too_and_the_retained_journal_warning_shows() {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--retained-journal-warn-bytes", "10000", "--journal-segment-bytes", "8192"]);
    srv.load(200, 500);
    // Checkpoints run every second and the warning is measured every 2 s.
    std::thread::sleep(Duration::from_millis(4500));
    let (exit, stderr) = srv.stop("INT");
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(stderr.contains("SIGINT") && stderr.contains("database closed"), "{stderr}");
    assert!(stderr.contains(" WARN ") && stderr.contains("kept for journal hot copies"), "{stderr}");
    // With journal hot copy disabled nothing is retained, and the option shows in the process list.
    let srv = Server::start(&dir.path().join("data2"), &["--journal-hot-copy", "disable"]);
    let (_, v) = srv.get_checked("/processes");
    assert_eq!(v["data"][0]["options"]["journal-hot-copy"], "disable");
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&dir.path().join("set"))}, "timeoutSec": 60}),
    );
    assert_eq!((code, &e["status"]), (200, &json!("completed")), "{e}");
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "journal", "backupSetDirs": {"0": s(&dir.path().join("set"))}}),
    );
    assert_eq!(code, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("journal hot copy is disabled"), "{e}");
}

/// Runs `backset serve --config FILE extra...` expecting it to exit at once; returns (exit code, stderr).
fn serve_fails(config: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = command()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn config_file_labels_workload_and_flags_win() {
    let dir = tmp();
    let cfg = dir.path().join("serve.toml");
    // db-name and data-dir are overridden by the command line (Server::start passes --data-dir; --db-name below).
    std::fs::write(
        &cfg,
        format!(
            "db-name = \"fromfile\"\ndata-dir = \"{}\"\nsms = 2\njournal-hot-copy = \"disable\"\n\n\
             [[sm]]\nlabels = {{ zone = \"a\" }}\njournal-hot-copy = \"enable\"\n\n\
             [[sm]]\nlabels = {{ role = \"hotcopy\", zone = \"b\" }}\njournal-hot-copy = \"enable\"\n\n\
             [workload]\nthreads = 1\nrate = 200.0\nkey-space = 50\nvalue-bytes = 16\ndelete-fraction = 0.1\n",
            s(&dir.path().join("not-this-one"))
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--config", &s(&cfg), "--db-name", "demo"]);
    // The flag won: the database is `demo`, in --data-dir.
    assert_eq!(srv.get_checked("/databases/fromfile/keys/x").0, 404);
    assert!(!dir.path().join("not-this-one").exists());
    let (code, v) = srv.get_checked("/processes?filterQuery=label(role%20hotcopy)");
    assert_eq!(code, 200, "{v}");
    let ps = v["data"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["archiveId"], 1);
    assert_eq!(ps[0]["labels"]["role"], "hotcopy");
    assert_eq!(ps[0]["labels"]["archive-id"], "1");
    // The [[sm]] tables agree on journal-hot-copy, so it wins over the top-level key.
    assert_eq!(ps[0]["options"]["journal-hot-copy"], "enable");
    let (_, v) = srv.get_checked("/processes?filterQuery=label(zone%20a)");
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    // A string, as nuoadmin sends it.
    assert_eq!(v["data"][0]["startId"], "1");
    // The workload commits: our own transaction gets an id past the workload's.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, t) = srv.post_json_checked("/databases/demo/transactions", &json!({"put": {"probe": "1"}}));
        assert_eq!(code, 200, "{t}");
        if t["txnId"].as_u64().unwrap() > 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the workload committed nothing in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, err) = srv.terminate();
    assert_eq!(code, Some(0), "{err}");
    let n: u64 = err
        .split("workload stopped: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no workload report: {err}"));
    assert!(n > 0, "{err}");
    // Archive-level evidence after the stop: the archive holds the workload's keys.
    let out = backset(&["archive", "dump", &s(&data.join("database").join("0"))]);
    assert!(out.status.success(), "{}", text(&out));
    // Workload values are random bytes: those lines are `{"keyHex": ..}`; "key-" is 6b65792d.
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("\"key\":\"key-") || dump.contains("\"keyHex\":\"6b65792d"), "no workload key: {dump}");
}

#[test]
fn config_file_errors_name_the_key_and_the_file() {
    let dir = tmp();
    let cfg = dir.path().join("bad.toml");
    let data = s(&dir.path().join("data"));
    std::fs::write(&cfg, "sms = 2\nbogus-key = 1\n").unwrap();
    let (code, err) = serve_fails(&cfg, &["--data-dir", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("key `bogus-key`") && err.contains("bad.toml"), "{err}");
    std::fs::write(&cfg, "sms = \"two\"\n").unwrap();
    let (code, err) = serve_fails(&cfg, &["--data-dir", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("key `sms`") && err.contains("bad.toml"), "{err}");
    std::fs::write(&cfg, "[workload]\nrate = \"fast\"\n").unwrap();
    let (code, err) = serve_fails(&cfg, &["--data-dir", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("key `workload.rate`"), "{err}");
    std::fs::write(&cfg, "sms = 2\n[[sm]]\njournal-hot-copy = \"enable\"\n").unwrap();
    let (code, err) = serve_fails(&cfg, &["--data-dir", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("1 [[sm]] tables for 2 SMs"), "{err}");
    let (code, err) = serve_fails(&dir.path().join("missing.toml"), &["--data-dir", &data]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    assert!(!dir.path().join("data").exists(), "a refused config created the data directory");
}

#[test]
fn journal_hot_copy_can_differ_per_sm() {
    let dir = tmp();
    let cfg = dir.path().join("serve.toml");
    std::fs::write(&cfg, "sms = 2\n[[sm]]\njournal-hot-copy = \"enable\"\n[[sm]]\njournal-hot-copy = \"disable\"\n")
        .unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--config", &s(&cfg)]);
    let (_, v) = srv.get_checked("/processes");
    let option = |i: usize| v["data"][i]["options"]["journal-hot-copy"].clone();
    assert_eq!((option(0), option(1)), (json!("enable"), json!("disable")), "{v}");
    let (code, t) = srv.post_json_checked("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    assert_eq!(code, 200, "{t}");
    let sets = dir.path().join("sets");
    std::fs::create_dir(&sets).unwrap();
    for a in 0..2 {
        let dirs = json!({ a.to_string(): s(&sets.join(a.to_string())) });
        let (code, e) = srv.post_json_checked(
            "/databases/demo/hotCopy",
            &json!({"type": "full", "backupSetDirs": dirs, "timeoutSec": 60, "checkContainsAllSgs": false}),
        );
        assert_eq!((code, &e["status"]), (200, &json!("completed")), "full of archive {a}: {e}");
    }
    // Archive 0 retains its journal for journal hot copies; archive 1 does not, and says so.
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "journal", "backupSetDirs": {"0": s(&sets.join("0"))}, "timeoutSec": 60}),
    );
    assert_eq!((code, &e["status"]), (200, &json!("completed")), "{e}");
    let (code, e) = srv.post_json_checked(
        "/databases/demo/hotCopy",
        &json!({"type": "journal", "backupSetDirs": {"1": s(&sets.join("1"))}, "timeoutSec": 60}),
    );
    assert_eq!(code, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("journal hot copy is disabled on archive 1"), "{e}");
    // The command line's --journal-hot-copy applies to every SM.
    drop(srv);
    let srv = Server::start(&dir.path().join("data2"), &["--config", &s(&cfg), "--journal-hot-copy", "disable"]);
    let (_, v) = srv.get_checked("/processes");
    let option = |i: usize| v["data"][i]["options"]["journal-hot-copy"].clone();
    assert_eq!((option(0), option(1)), (json!("disable"), json!("disable")), "{v}");
}

/// Commits one transaction through the data API; returns its txnId.
fn commit(srv: &Server, put: &[(String, String)], delete: &[String]) -> u64 {
    let put: serde_json::Map<String, Value> = put.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let (code, v) = srv.post_json_checked("/databases/demo/transactions", &json!({"put": put, "delete": delete}));
    assert_eq!(code, 200, "{v}");
    v["txnId"].as_u64().unwrap()
}

/// An acknowledged transaction: txn id, puts, deletes.
type Acked = (u64, Vec<(String, String)>, Vec<String>);

/// The state after every acknowledged transaction up to `txn`, applied in txn order.
fn state_at(acked: &[Acked], txn: u64) -> std::collections::BTreeMap<String, String> {
    let mut sorted: Vec<_> = acked.iter().filter(|(t, ..)| *t <= txn).collect();
    sorted.sort_by_key(|(t, ..)| *t);
    let mut m = std::collections::BTreeMap::new();
    for (_, put, delete) in sorted {
        for (k, v) in put {
            m.insert(k.clone(), v.clone());
        }
        for k in delete {
            m.remove(k);
        }
    }
    m
}

fn incomplete(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap().to_os_string();
    name.push(".incomplete");
    dir.with_file_name(name)
}

#[test]
fn simple_hot_copy_with_a_separate_journal_dir() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let mut acked = Vec::new();
    for b in 0..20 {
        let put: Vec<(String, String)> = (0..10).map(|i| (format!("k{:04}", b * 10 + i), "v".repeat(400))).collect();
        acked.push((commit(&srv, &put, &[]), put, Vec::new()));
    }
    let (copy, journal) = (dir.path().join("copy"), dir.path().join("elsewhere").join("copy-journal"));
    // Only the journal directory's last component is created (its parent must exist).
    std::fs::create_dir(journal.parent().unwrap()).unwrap();
    // A writer commits while the copy runs (slowed by maxRate), so the copy ends at a transaction of its own.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (v, during) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let put = vec![(format!("k{:04}", i % 250), format!("w{i}")), (format!("n{i:05}"), "x".into())];
                let delete = if i.is_multiple_of(3) { vec![format!("k{:04}", (i * 7) % 200)] } else { Vec::new() };
                let delete: Vec<String> = delete.into_iter().filter(|d| !put.iter().any(|(k, _)| k == d)).collect();
                mine.push((commit(&srv, &put, &delete), put, delete));
            }
            mine
        });
        let (code, v) = srv.post_json_checked(
            "/databases/demo/hotCopySimple",
            &json!({"backupLocations": {"0": {"copyArchiveDir": s(&copy), "copyJournalDir": s(&journal)}},
                    "maxRate": 200_000, "timeoutSec": 120}),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(code, 200, "{v}");
        (v, writer.join().unwrap())
    });
    assert_eq!(v["status"], "completed", "{v}");
    acked.extend(during);
    // Both directories exist under their final names: the archive copy without a journal/, the journal apart.
    assert!(copy.join("atoms").is_dir() && !copy.join("journal").exists(), "{}", copy.display());
    assert!(journal.is_dir() && std::fs::read_dir(&journal).unwrap().count() > 0, "{}", journal.display());
    assert!(!incomplete(&copy).exists() && !incomplete(&journal).exists(), "a .incomplete directory is left");
    // The copy holds exactly the acknowledged state at its end point E.
    let e = v["participants"][0]["txnRange"][1].as_u64().unwrap_or_else(|| panic!("no txnRange in {v}"));
    let want = state_at(&acked, e);
    assert!(acked.iter().any(|(t, ..)| *t > e), "no transaction after the copy's end point {e}: nothing to tell apart");
    assert_eq!(support::dump(&copy, &["--journal-dir", &s(&journal)]), want, "archive dump --journal-dir at E = {e}");
    for cmd in ["check", "info"] {
        let out = backset(&["archive", cmd, &s(&copy), "--journal-dir", &s(&journal)]);
        assert!(out.status.success(), "archive {cmd}: {}", text(&out));
        if cmd == "info" {
            let info: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(info["lastTxnId"], e, "{info}");
            assert_eq!(info["journalDirectory"], s(&journal), "{info}");
        }
    }
    // Refused with 400, naming the directories: the journal dir is the archive dir, inside it (not its journal/),
    // or holds it.
    let bad = [
        (dir.path().join("r1"), dir.path().join("r1"), "is the copyArchiveDir itself"),
        (dir.path().join("r2"), dir.path().join("r2").join("jnl"), "is inside copyArchiveDir"),
        (dir.path().join("r3").join("archive"), dir.path().join("r3"), "is inside its copyJournalDir"),
    ];
    for (a, j, why) in &bad {
        let (code, e) = srv.post_json_checked(
            "/databases/demo/hotCopySimple",
            &json!({"defaultBackupLocation": {"copyArchiveDir": s(a), "copyJournalDir": s(j)}, "timeoutSec": 60}),
        );
        assert_eq!(code, 400, "{} {}: {e}", a.display(), j.display());
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(why) && m.contains(&s(a)) && m.contains(&s(j)), "{m}");
        assert!(!a.exists() && !incomplete(a).exists(), "a refused request created {}", a.display());
    }
    // <copyArchiveDir>/journal is the default, accepted as before.
    let plain = dir.path().join("plain");
    let (code, v) = srv.post_json_checked(
        "/databases/demo/hotCopySimple",
        &json!({"defaultBackupLocation": {"copyArchiveDir": s(&plain), "copyJournalDir": s(&plain.join("journal"))},
                "timeoutSec": 60}),
    );
    assert_eq!((code, &v["status"]), (200, &json!("completed")), "{v}");
    assert!(plain.join("journal").is_dir());
}

/// Whether `listener` (non-blocking) has a connection waiting: someone connected to it.
fn was_connected_to(listener: &std::net::TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept on {:?}: {e}", listener.local_addr()),
    }
}

/// A server whose address another socket listens on is not taken as started: readiness is the server process's own
/// listening socket, not a connection that succeeds (which another test's server, holding the port, would accept).
#[test]
fn a_server_whose_address_is_held_by_another_listener_is_not_taken_as_started() {
    let dir = tmp();
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = foreign.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let started = std::panic::catch_unwind(|| Server::start_at(&addr, &addr, &data, &[], None).pid());
    let msg = match started {
        Ok(pid) => panic!("start_at({addr}) returned a server (pid {pid}) while another socket held {addr}"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(msg.contains(&format!("listen on {addr}")) && msg.contains("Address already in use"), "{msg}");
    assert!(!was_connected_to(&foreign), "the start of the server on {addr} connected to the other listener there");
}

/// A server on a port the scaffolding picked that another socket took in between is started again on another port
/// (what two tests that picked the same free port meet), and never talks to the other socket.
#[test]
fn a_server_on_a_picked_port_that_was_taken_moves_to_another_port() {
    let dir = tmp();
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = foreign.local_addr().unwrap().port();
    let mut picks = Vec::new();
    let mut pick = || {
        let port = if picks.is_empty() { taken } else { free_port() };
        picks.push(port);
        port
    };
    let srv = Server::start_picking_port(&mut pick, &dir.path().join("data"), &[], None, &[]);
    assert_eq!(picks.len(), 2, "ports tried: {picks:?}");
    assert_eq!(srv.addr, format!("127.0.0.1:{}", picks[1]));
    assert_eq!(srv.get_checked("/processes").0, 200);
    // A port that stays taken: PORT_RETRIES more tries, then a panic that shows the server's refusal.
    let mut tries = 0;
    let gave_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Server::start_picking_port(
            || {
                tries += 1;
                taken
            },
            &dir.path().join("data2"),
            &[],
            None,
            &[],
        )
        .pid()
    }));
    let msg = gave_up.map(|pid| format!("started as pid {pid}")).unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(tries, PORT_RETRIES + 1, "{msg}");
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(!was_connected_to(&foreign), "the start of a server on port {taken} connected to the other listener there");
}
