//! `GET /metrics` through the real server: scraped during a throttled hot copy and after it, its values move as the
//! job does and match the job's status; `promtool check metrics` accepts the text; the token rule of the API holds.
//!
//! promtool (Debian's `prometheus` package) is run when found on PATH (or at `BACKSET_PROMTOOL`); without it that
//! check is skipped with a printed reason, unless `BACKSET_REQUIRE_PROMTOOL=1` (what `.ci/run` sets) makes it fail.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{s, tmp, wait_until, Server};

/// Every sample of a scrape: `name{labels}` as written (labels sorted by name) to its value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().unwrap_or_else(|e| panic!("{line}: {e}")));
    }
    out
}

/// The value of `name` with `labels` (`k="v"`, any order), if the scrape has it.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    samples.get(&format!("{name}{{{}}}", labels.join(","))).copied()
}

fn scrape(srv: &Server) -> (String, BTreeMap<String, f64>) {
    let a = srv.metrics(None);
    assert_eq!(a.code, 200, "{}", a.text);
    let parsed = samples(&a.text);
    (a.text, parsed)
}

/// promtool, if it can be run: `BACKSET_PROMTOOL`, else `promtool` on PATH.
fn promtool() -> Option<PathBuf> {
    let tool = std::env::var_os("BACKSET_PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    let found = Command::new(&tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some(tool);
    }
    assert!(
        std::env::var_os("BACKSET_REQUIRE_PROMTOOL").is_none(),
        "BACKSET_REQUIRE_PROMTOOL is set but {} cannot be run: install Debian's `prometheus` package",
        tool.display()
    );
    eprintln!(
        "skipped: promtool: {} cannot be run (install Debian's `prometheus` package, or set \
         BACKSET_PROMTOOL)",
        tool.display()
    );
    None
}

/// `promtool check metrics` accepts `text` (no lint problem either).
fn promtool_accepts(tool: &PathBuf, text: &str) {
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_follow_a_throttled_hot_copy_and_match_its_status() {
    let tool = promtool();
    let dir = tmp();
    let srv = Server::start_with_atoms(&dir.path().join("data"));
    let set = dir.path().join("set");
    let full = ["archive=\"0\"", "database=\"demo\"", "type=\"full\""];
    // Before any hot copy: counters at 0, nothing running, no last success.
    let (text, before) = scrape(&srv);
    if let Some(t) = &tool {
        promtool_accepts(t, &text);
    }
    assert_eq!(value(&before, "backset_hot_copy_running", &full), Some(0.0), "{text}");
    assert_eq!(value(&before, "backset_hot_copy_failures_total", &full), Some(0.0), "{text}");
    assert_eq!(value(&before, "backset_hot_copy_last_success_timestamp_seconds", &full), None, "{text}");
    assert!(text.contains("backset_journal_retained_bytes{"), "{text}");

    // About 900 kB at 250 kB/s: seconds of running.
    let hc = srv.start_throttled_full(&set, 250_000);
    let job = |name: &str| format!("{name}{{archive=\"0\",database=\"demo\",hot_copy_id=\"{}\",type=\"full\"}}", hc.1);
    // A scrape between two statuses of the running job with some bytes done: its values lie between theirs.
    let mut during = Vec::new();
    let mut running_text = String::new();
    let seen = wait_until(Duration::from_secs(60), || {
        let a = srv.hot_copy_status(&hc);
        let (text, m) = scrape(&srv);
        let b = srv.hot_copy_status(&hc);
        if b["status"] != "running" || a["bytesDone"].as_u64() == Some(0) {
            return false;
        }
        let done = m[&job("backset_hot_copy_job_done_bytes")];
        assert!(
            a["bytesDone"].as_f64().unwrap() <= done && done <= b["bytesDone"].as_f64().unwrap(),
            "done {done} outside {a} .. {b}"
        );
        assert_eq!(m[&job("backset_hot_copy_job_total_bytes")], b["bytesTotal"].as_f64().unwrap(), "{text}");
        assert_eq!(value(&m, "backset_hot_copy_running", &full), Some(1.0), "{text}");
        during.push(done);
        running_text = text;
        // Two scrapes some way apart, both of a running job.
        during.len() >= 2 && during[during.len() - 1] > during[0]
    });
    assert!(seen, "no two scrapes of the running hot copy with bytes moving: {during:?}; {}", srv.output());
    if let Some(t) = &tool {
        promtool_accepts(t, &running_text);
    }

    // After it: nothing running, no series of the job, and the last success is the job's.
    assert!(wait_until(Duration::from_secs(120), || srv.hot_copy_status(&hc)["status"] != "running"));
    let end = srv.hot_copy_status(&hc);
    assert_eq!(end["status"], "completed", "{end}");
    let (text, after) = scrape(&srv);
    if let Some(t) = &tool {
        promtool_accepts(t, &text);
    }
    assert_eq!(value(&after, "backset_hot_copy_running", &full), Some(0.0), "{text}");
    assert!(!text.contains(&hc.1), "an ended job keeps series: {text}");
    let bytes = end["bytesDone"].as_f64().unwrap();
    assert_eq!(value(&after, "backset_hot_copy_copied_bytes_total", &full), Some(bytes), "{text}");
    assert_eq!(value(&after, "backset_hot_copy_last_success_bytes", &full), Some(bytes), "{text}");
    // endTimestamp is whole seconds (UTC); the metric is that second or within it.
    let ts = value(&after, "backset_hot_copy_last_success_timestamp_seconds", &full).unwrap();
    let shown = humantime::parse_rfc3339(&format!("{}Z", end["endTimestamp"].as_str().unwrap().replace(' ', "T")))
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(ts >= shown && ts < shown + 1.0, "{ts} vs {end}");
    let duration = value(&after, "backset_hot_copy_last_success_duration_seconds", &full).unwrap();
    assert!(duration >= 1.0, "a throttled copy of 900 kB at 250 kB/s took {duration} s: {text}");
    // It waited on the limiter; the set's newest restorable transaction is the element's end point.
    assert!(value(&after, "backset_hot_copy_limiter_waited_seconds", &full).unwrap() > 0.0, "{text}");
    let set_labels = ["archive=\"0\"", "database=\"demo\""];
    let set_label = format!("set=\"{}\"", s(&set));
    let e = end["participants"][0]["txnRange"][1].as_f64().unwrap();
    assert_eq!(
        value(&after, "backset_backup_set_restorable_txn", &[set_labels[0], set_labels[1], &set_label]),
        Some(e)
    );

    // A cancelled one counts as a cancellation, not a failure.
    let hc2 = srv.start_throttled_full(&dir.path().join("set2"), 1000);
    let a = srv.request(
        "POST",
        &format!("/databases/cancelHotCopy?coordinatorStartId={}&hotCopyId={}", hc2.0, hc2.1),
        None,
    );
    assert_eq!(a.code, 200, "{}", a.text);
    assert!(wait_until(Duration::from_secs(60), || srv.hot_copy_status(&hc2)["status"] == "cancelled"));
    let (text, m) = scrape(&srv);
    assert_eq!(value(&m, "backset_hot_copy_cancellations_total", &full), Some(1.0), "{text}");
    assert_eq!(value(&m, "backset_hot_copy_failures_total", &full), Some(0.0), "{text}");
}

#[test]
fn metrics_and_health_take_the_api_token() {
    let dir = tmp();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123\n").unwrap();
    let tf = s(&token_file);
    let srv =
        Server::start_with_token(&dir.path().join("data"), &["--auth-token-file", &tf], Some("s3cret-token-0123"));
    assert_eq!(srv.metrics(None).code, 401);
    assert_eq!(srv.metrics(Some("s3cret-token-0124")).code, 401);
    let a = srv.metrics(Some("s3cret-token-0123"));
    assert_eq!(a.code, 200, "{}", a.text);
    assert!(a.text.contains("backset_hot_copy_running{"), "{}", a.text);
    assert_eq!(srv.get_beside_api("/health", None).code, 401);
    let h = srv.get_beside_api("/health", Some("s3cret-token-0123"));
    assert_eq!((h.code, &h.json["status"]), (200, &serde_json::json!("OK")), "{}", h.text);
}

/// The example alert rules of docs/OPERATIONS.md are valid rules (`promtool check rules`), and every metric they
/// name is one the metrics table of that page lists.
#[test]
fn the_documented_alert_rules_pass_promtool() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md")).unwrap();
    let rules = doc
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with("groups:"))
        .expect("docs/OPERATIONS.md has no ```yaml block of alert rules");
    for name in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("backset_")) {
        assert!(doc.contains(&format!("| `{name}` |")), "the alert rules name {name}, which the metrics table lacks");
    }
    let Some(tool) = promtool() else { return };
    let dir = tmp();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(&tool).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
