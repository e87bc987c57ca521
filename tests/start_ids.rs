//! Start ids are unique per start, as NuoDB's are: every start of `serve` gives each SM a new start id after the last
//! one handed out (recorded durably in the admin directory), hot copies keep the start ids they ran with, and the
//! process list, the process filter and `show hotcopy-info` use the current ones.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{s, text, tmp, wait_until, Server};

fn ok(srv: &Server, args: &[&str]) -> String {
    let out = srv.cli(args);
    assert_eq!(out.status.code(), Some(0), "backset {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `name=` in a `HotCopyResponse(...)` or `Process(...)` line (not the message).
fn field(line: &str, name: &str) -> String {
    let key = format!("{name}=");
    let at = line.find(&format!("({key}")).map(|i| i + 1).or_else(|| line.find(&format!(", {key}")).map(|i| i + 2));
    let rest = &line[at.unwrap_or_else(|| panic!("no {name} in {line}")) + key.len()..];
    rest[..rest.find([',', ')']).unwrap()].to_string()
}

fn start_ids(srv: &Server) -> Vec<u64> {
    let a = srv.get("/processes");
    assert_eq!(a.code, 200, "{}", a.text);
    a.json["data"].as_array().unwrap().iter().map(|p| p["startId"].as_str().unwrap().parse().unwrap()).collect()
}

fn hot_copy(srv: &Server, kind: &str, set: &str) -> (String, String) {
    let out = ok(
        srv,
        &["hotcopy", "database", "--db-name", "demo", "--type", kind, "--backup-dirs", "0", set, "--timeout", "60"],
    );
    (field(out.trim(), "coordinator_start_id"), field(out.trim(), "id"))
}

#[test]
fn every_start_gives_new_start_ids_and_old_hot_copies_keep_theirs() {
    let dir = tmp();
    let data = dir.path().join("data");
    let set = s(&dir.path().join("set"));
    let commit = |srv: &Server| {
        assert_eq!(srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}})).code, 200);
    };

    // First start: 1 and 2, in archive id order.
    let srv = Server::start(&data, &["--sms", "2"]);
    assert_eq!(start_ids(&srv), [1, 2]);
    commit(&srv);
    let (coord, old) = hot_copy(&srv, "full", &set);
    assert_eq!(coord, "1");
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");

    // Second start: 3 and 4, announced, listed, filtered and shown as such.
    let srv = Server::start(&data, &["--sms", "2"]);
    // Written before the port listens, but read from the pipe by a thread of the test: wait for it.
    let announced = wait_until(Duration::from_secs(10), || srv.output().contains("SM start id 3 serves archive 0"));
    assert!(announced, "{}", srv.output());
    assert_eq!(start_ids(&srv), [3, 4]);
    assert_eq!(std::fs::read_to_string(data.join("admin/last-start-id")).unwrap(), "4\n");
    let one = ok(&srv, &["get", "processes", "--process-filter", "start_id(3)"]);
    assert_eq!((one.lines().count(), field(one.trim(), "archive_id")), (1, "0".to_string()), "{one}");
    assert_eq!(ok(&srv, &["get", "processes", "--process-filter", "start_id(1,2)"]), "");
    commit(&srv);
    let (coord, new) = hot_copy(&srv, "journal", &set);
    assert_eq!(coord, "3");
    // The old hot copy under its old start id, the new one under the new; never crossed.
    let status =
        |sm: &str, id: &str| srv.cli(&["get", "hotcopy-status", "--coordinator-start-id", sm, "--hotcopy-id", id]);
    let out = status("1", &old);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!((field(&line, "coordinator_start_id"), field(&line, "status")), ("1".into(), "completed".into()));
    assert_eq!(status("3", &new).status.code(), Some(0));
    for (sm, id) in [("3", &old), ("1", &new)] {
        let out = status(sm, id);
        assert_eq!(out.status.code(), Some(1), "start id {sm}, hot copy {id}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no hot copy"), "{}", text(&out));
    }
    // Per SM start id over REST: an earlier start's SM answers its hot copies (or none), an id never handed out 404.
    let a = srv.get("/databases/hotCopyStatus?coordinatorStartId=1");
    assert_eq!(a.code, 200, "{}", a.text);
    assert_eq!(a.json["hotCopyStatuses"]["1"][0]["hotCopyId"], old.as_str(), "{}", a.text);
    let a = srv.get("/databases/hotCopyStatus?coordinatorStartId=2");
    assert_eq!((a.code, &a.json["hotCopyStatuses"]["2"]), (200, &json!([])), "{}", a.text);
    for sm in ["0", "5"] {
        let a = srv.get(&format!("/databases/hotCopyStatus?coordinatorStartId={sm}"));
        assert_eq!(a.code, 404, "{sm}: {}", a.text);
    }
    // show hotcopy-info: the current SMs with their current start ids.
    let show = ok(&srv, &["show", "hotcopy-info", "--db-name", "demo"]);
    assert!(show.contains("[start_id = 3]") && show.contains("[start_id = 4]"), "{show}");
    assert!(show.contains(&new), "{show}");
    // A start that ends in SIGKILL still used its ids: the next start follows them.
    drop(srv);
    let srv = Server::start(&data, &["--sms", "2"]);
    assert_eq!(start_ids(&srv), [5, 6]);
}

#[test]
fn a_damaged_start_id_counter_stops_the_start_and_says_what_to_do() {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    drop(srv);
    std::fs::write(data.join("admin/last-start-id"), "seven\n").unwrap();
    let out = support::backset(&[
        "serve",
        "--data-dir",
        &s(&data),
        "--listen",
        &format!("127.0.0.1:{}", support::free_port()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("last-start-id") && err.contains("remove the file"), "{err}");
}
