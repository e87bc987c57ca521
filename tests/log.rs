//! The log on stderr: `serve` logs one line per hot copy start and end (id, type, archives, destination, bytes,
//! seconds, status, message) and the engine's warnings and errors, as text or as JSON lines (`--log-format json`);
//! an offline command shows the engine's warnings too.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{s, tmp, wait_until, Server};

/// The line of the server's output holding `needle`, once there (the log is written as events happen).
fn line_with(srv: &Server, needle: &str) -> String {
    let found = wait_until(Duration::from_secs(30), || srv.output().lines().any(|l| l.contains(needle)));
    assert!(found, "no line with {needle:?} in the server's output:\n{}", srv.output());
    srv.output().lines().find(|l| l.contains(needle)).unwrap().to_string()
}

#[test]
fn serve_logs_hot_copy_starts_and_ends_an_injected_failure_and_engine_warnings_as_text() {
    let dir = tmp();
    let data = dir.path().join("data");
    // An engine warning at start: an unreadable persisted status is skipped with a warning.
    let statuses = data.join("admin").join("hotcopy");
    std::fs::create_dir_all(&statuses).unwrap();
    std::fs::write(statuses.join("garbage.json"), "not json").unwrap();
    let srv = Server::start_with_env(&data, &[], &[("BACKSET_FAULT_FAIL", "full:before-move")]);
    let warning = line_with(&srv, "skipping an unreadable hot copy status file");
    assert!(warning.contains(" WARN ") && warning.contains("garbage.json"), "{warning}");

    srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    let set = dir.path().join("set");
    let failed = srv.hot_copy("full", &set);
    assert_eq!(failed["status"], "failed", "{failed}");
    let id = failed["hotCopyId"].as_str().unwrap();
    let start = line_with(&srv, &format!("Hot copy started id={id}"));
    assert!(start.contains(" INFO ") && start.ends_with("status=running"), "{start}");
    for field in ["type=full", "archives=0", &format!("destination={}", s(&set))] {
        assert!(start.contains(field), "{field} is not in {start}");
    }
    let end = line_with(&srv, " ERROR Hot copy failed: ");
    assert!(end.contains("failure injected at before-move"), "{end}");
    for field in [
        &format!("id={id} type=full"),
        "archives=0",
        &format!("destination={}", s(&set)),
        "status=failed",
        "bytes=",
        "seconds=",
    ] {
        assert!(end.contains(field), "{field} is not in {end}");
    }

    let copy = dir.path().join("copy");
    let done = srv.hot_copy("simple", &copy);
    assert_eq!(done["status"], "completed", "{done}");
    let end = line_with(&srv, &format!("Hot copy successfully completed id={}", done["hotCopyId"].as_str().unwrap()));
    assert!(end.contains(" INFO ") && end.contains("type=simple"), "{end}");
    assert!(end.contains("status=completed"), "{end}");
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    // Every line is a log line: `<UTC time>  <LEVEL> <message>`.
    for l in out.lines() {
        let (time, rest) = l.split_once(' ').unwrap_or_else(|| panic!("not a log line: {l}"));
        assert!(time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "no UTC time: {l}");
        let level = rest.trim_start().split(' ').next().unwrap();
        assert!(["INFO", "WARN", "ERROR"].contains(&level), "no level: {l}");
    }
}

#[test]
fn serve_log_format_json_writes_json_lines_with_the_fields() {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start_with_env(&data, &["--log-format", "json"], &[("BACKSET_FAULT_FAIL", "full:begun")]);
    srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    let set = dir.path().join("set");
    let failed = srv.hot_copy("full", &set);
    assert_eq!(failed["status"], "failed", "{failed}");
    let id = failed["hotCopyId"].as_str().unwrap().to_string();
    line_with(&srv, "failure injected at begun");
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{out}")))
        .collect();
    for l in &lines {
        for key in ["timestamp", "level", "message"] {
            assert!(l[key].is_string(), "no {key} in {l}");
        }
    }
    let of_job: Vec<&Value> = lines.iter().filter(|l| l["id"] == id.as_str()).collect();
    assert_eq!(of_job.len(), 2, "a start and an end line: {out}");
    let (start, end) = (of_job[0], of_job[1]);
    assert_eq!(
        (&start["level"], &start["message"], &start["status"]),
        (&json!("INFO"), &json!("Hot copy started"), &json!("running"))
    );
    assert_eq!(end["level"], "ERROR", "{end}");
    assert_eq!(end["message"], failed["message"], "the end line's message is the hot copy's");
    for l in [start, end] {
        assert_eq!(
            (&l["type"], &l["archives"], &l["destination"]),
            (&json!("full"), &json!("0"), &json!(s(&set))),
            "{l}"
        );
    }
    assert_eq!(end["status"], "failed");
    assert!(end["bytes"].is_u64() && end["seconds"].is_f64(), "bytes and seconds are numbers: {end}");
    assert!(lines.iter().any(|l| l["message"].as_str().unwrap().starts_with("database demo")), "{out}");
}

#[test]
fn rust_log_sets_the_level() {
    let dir = tmp();
    let srv = Server::start_with_env(&dir.path().join("data"), &[], &[("RUST_LOG", "warn")]);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(" INFO "), "RUST_LOG=warn shows no info line: {out}");
}

/// The status of hot copy `id` (of coordinator start id 1, the first start's SM) as the server reports it.
fn status_of(srv: &Server, id: &str) -> Value {
    let a = srv.get(&format!("/databases/hotCopyStatus?coordinatorStartId=1&hotCopyId={id}"));
    assert_eq!(a.code, 200, "{}", a.text);
    a.json
}

/// A server on a new directory's `data/` that fails to write final statuses while the returned file exists (the
/// test-only `BACKSET_FAULT_STATUS_FAIL`), with one transaction committed.
fn failing_final_statuses() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, Server) {
    failing_final_statuses_with(&[])
}

/// [`failing_final_statuses`] with more environment variables for the server.
fn failing_final_statuses_with(
    env: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, Server) {
    let dir = tmp();
    let data = dir.path().join("data");
    let fault = dir.path().join("fail-final-statuses");
    std::fs::write(&fault, "").unwrap();
    let fault_env = s(&fault);
    let env: Vec<(&str, &str)> =
        [("BACKSET_FAULT_STATUS_FAIL", fault_env.as_str())].into_iter().chain(env.iter().copied()).collect();
    let srv = Server::start_with_env(&data, &[], &env);
    let a = srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    assert_eq!(a.code, 200, "{}", a.text);
    (dir, data, fault, srv)
}

#[test]
fn regression_a_final_status_that_could_not_be_saved_was_lost_silently() {
    let (dir, data, fault, srv) = failing_final_statuses();
    let set = dir.path().join("set");
    let done = srv.hot_copy("full", &set);
    let id = done["hotCopyId"].as_str().unwrap().to_string();
    // The live status says it is not saved, and why.
    assert_eq!(done["status"], "completed", "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(
        message.starts_with("Hot copy successfully completed (its final status is not saved: ")
            && message.contains("failure injected")
            && message.ends_with("; retrying)"),
        "{done}"
    );
    assert_eq!(status_of(&srv, &id)["message"], done["message"]);
    // It is logged, at level error, with the hot copy's id and the cause.
    let line = line_with(&srv, "could not persist the final status of the hot copy; retrying");
    assert!(line.contains(" ERROR ") && line.contains(&id) && line.contains("failure injected"), "{line}");
    // On disk it is still the status written at the start.
    let file = data.join("admin/hotcopy").join(format!("{id}.json"));
    let on_disk = || serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk()["status"], "running");
    // The fault cleared, a retry saves it, and the live status is the saved one.
    std::fs::remove_file(&fault).unwrap();
    let saved = wait_until(Duration::from_secs(30), || on_disk()["status"] == "completed");
    assert!(saved, "not saved 30 s after the fault cleared: {}\n{}", on_disk(), srv.output());
    assert_eq!(on_disk()["message"], "Hot copy successfully completed");
    // The file is written first and the live status follows it: wait for that too.
    let live =
        wait_until(Duration::from_secs(10), || status_of(&srv, &id)["message"] == "Hot copy successfully completed");
    assert!(live, "the live status is not the saved one: {}", status_of(&srv, &id));
    let line = line_with(&srv, "the final status of the hot copy is saved after all");
    assert!(line.contains(" WARN ") && line.contains(&id), "{line}");
}

/// The limit of the retries (`HOTCOPY_STATUS_RETRIES`, here 3 through the test-only
/// `BACKSET_FAULT_STATUS_RETRIES`): exactly that many after the first attempt, then the live status says for good that
/// it is not saved; a shutdown tries once more.
#[test]
fn a_final_status_is_retried_its_limit_then_given_up_and_tried_once_more_at_shutdown() {
    let (dir, data, fault, srv) = failing_final_statuses_with(&[("BACKSET_FAULT_STATUS_RETRIES", "3")]);
    let done = srv.hot_copy("full", &dir.path().join("set"));
    let id = done["hotCopyId"].as_str().unwrap().to_string();
    let line = line_with(&srv, "could not persist the final status of the hot copy; gave up");
    assert!(line.contains(" ERROR ") && line.contains(&id), "{line}");
    let attempts =
        |out: &str| out.lines().filter(|l| l.contains("final status write ") && l.contains(" failed")).count();
    assert_eq!(attempts(&srv.output()), 1 + 3, "{}", srv.output());
    let message = status_of(&srv, &id)["message"].as_str().unwrap().to_string();
    assert!(message.contains("gave up after 3 more attempts"), "{message}");
    // The cause cleared, the shutdown's attempt saves it.
    std::fs::remove_file(&fault).unwrap();
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(attempts(&out), 1 + 3, "{out}");
    let file = data.join("admin/hotcopy").join(format!("{id}.json"));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (&on_disk["status"], &on_disk["message"]),
        (&json!("completed"), &json!("Hot copy successfully completed"))
    );
}

#[test]
fn regression_a_completed_hot_copy_whose_final_status_was_not_saved_read_failed_after_a_restart() {
    let (dir, data, _fault, srv) = failing_final_statuses();
    let set = dir.path().join("set");
    let mut done = Vec::new();
    for (kind, dir) in [("full", &set), ("journal", &set), ("simple", &dir.path().join("copy"))] {
        srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "w"}}));
        let status = srv.hot_copy(kind, dir);
        assert_eq!(status["status"], "completed", "{status}");
        assert!(status["message"].as_str().unwrap().contains("its final status is not saved"), "{status}");
        done.push(status);
    }
    // Killed (SIGKILL) with the three final statuses unsaved, then started again without the fault.
    drop(srv);
    let srv = Server::start_with_env(&data, &[], &[]);
    for (before, element) in done.iter().zip([Some("full"), Some("1.jnl"), None]) {
        let id = before["hotCopyId"].as_str().unwrap();
        let after = status_of(&srv, id);
        assert_eq!(after["status"], "completed", "{after}");
        assert_eq!(
            after["message"],
            "Hot copy successfully completed (recognised at restart from its destinations: the process stopped \
             before its final status was saved)",
            "{after}"
        );
        assert!(!after.to_string().contains("the process stopped while"), "{after}");
        if let Some(element) = element {
            assert_eq!(after["participants"][0]["element"], element, "{after}");
        }
    }
    // A restart keeps it so: it was saved at the first.
    drop(srv);
    let srv = Server::start_with_env(&data, &[], &[]);
    for before in &done {
        let after = status_of(&srv, before["hotCopyId"].as_str().unwrap());
        assert_eq!(after["status"], "completed", "{after}");
    }
}
