//! A running hot copy's progress in its status, through the real server and client: bytes and files done and in
//! all (planned before the copy starts), the current rate and the time left (ETA), which accounts for `maxRate`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{tmp, Server};

/// A hot copy: `(coordinator start id, hot copy id)`.
type Id = (u64, String);

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Polls the status every 20 ms until it ends (at most 120 s), calling `each` with every running status and when
/// it was read; returns the final status and when it was first seen ended.
fn follow(srv: &Server, id: &Id, mut each: impl FnMut(&Value, Instant)) -> (Value, Instant) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = srv.hot_copy_status(id);
        let now = Instant::now();
        if v["status"] != "running" {
            return (v, now);
        }
        each(&v, now);
        assert!(now < deadline, "the hot copy still runs after 120 s: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files and bytes under `dir`, recursively.
fn files_and_bytes(dir: &Path) -> (u64, u64) {
    let mut out = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (f, b) = files_and_bytes(&e.path());
            out = (out.0 + f, out.1 + b);
        } else {
            out = (out.0 + 1, out.1 + m.len());
        }
    }
    out
}

#[test]
fn the_total_is_planned_before_the_copy_and_bytes_done_reach_it_exactly_at_the_end() {
    let dir = tmp();
    let srv = Server::start_with_atoms(&dir.path().join("data"));
    let set = dir.path().join("set");
    // About 1 MB at 400 kB/s: a few seconds, many polls. Nothing is committed while it runs, so the journal range
    // planned at the start (up to the durable end then) is the one copied.
    let hc = srv.start_throttled_full(&set, 400_000);
    let id = hc.1.clone();
    let mut first_planned: Option<Value> = None;
    let mut last_done = 0;
    let mut shown = None;
    let (end, _) = follow(&srv, &hc, |v, _| {
        let (done, total) = (u(v, "bytesDone"), u(v, "bytesTotal"));
        assert!(done >= last_done, "bytesDone went back from {last_done}: {v}");
        assert!(done <= total, "{v}");
        assert!(u(v, "filesDone") <= u(v, "filesTotal"), "{v}");
        last_done = done;
        if first_planned.is_none() && v["message"] == "Stage1: Copy atoms" && total > 0 {
            first_planned = Some(v.clone());
        }
        // The client's show hotcopy-info shows the progress through its format fields.
        if shown.is_none() && done > 0 && done < total {
            let out = srv.cli_ok(&[
                "show",
                "hotcopy-info",
                "--db-name",
                "demo",
                "--hotcopy-format",
                "{id} {bytes_done}/{bytes_total} {files_done}/{files_total} ETA {eta_text::-}",
            ]);
            let line = out.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{out}")).to_string();
            shown = Some(line);
        }
    });
    assert_eq!(end["status"], "completed", "{end}");
    // Bytes and files done reach the total exactly, and that total is what the element holds.
    let (files, bytes) = files_and_bytes(&set.join("full").join("data"));
    assert_eq!((u(&end, "bytesDone"), u(&end, "bytesTotal")), (bytes, bytes), "{end}");
    assert_eq!((u(&end, "filesDone"), u(&end, "filesTotal")), (files, files), "{end}");
    assert!(end.get("etaSec").is_none(), "an ended hot copy has no ETA: {end}");
    let p = &end["participants"][0];
    assert_eq!((u(p, "bytesDone"), u(p, "bytesTotal"), u(p, "filesTotal")), (bytes, bytes, files), "{end}");
    // The total was known while the atoms were being copied, before most of them were.
    let planned = first_planned.unwrap_or_else(|| panic!("no status in Stage1: Copy atoms with a total; end: {end}"));
    assert_eq!((u(&planned, "bytesTotal"), u(&planned, "filesTotal")), (bytes, files), "{planned}");
    assert!(u(&planned, "bytesDone") < bytes / 2, "{planned}");
    assert_eq!(planned["maxRate"], 400_000, "{planned}");
    // What show hotcopy-info printed while it ran: `<id> done/total files_done/files_total ETA <time left>`.
    let shown = shown.expect("a status with some bytes done was seen");
    let words: Vec<&str> = shown.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{shown}");
    let (done, total) = words[1].split_once('/').unwrap();
    assert!(done.parse::<u64>().unwrap() < bytes && total.parse::<u64>().unwrap() == bytes, "{shown}");
    assert_eq!(words[2].split_once('/').unwrap().1, files.to_string(), "{shown}");
    assert!(words[4].ends_with('s') || words[4].ends_with('m'), "{shown}");
    // Once ended, {eta} has no value: the default after the second colon.
    let out = srv.cli_ok(&["show", "hotcopy-info", "--db-name", "demo", "--hotcopy-format", "{id} {eta::-}"]);
    assert!(out.contains(&format!("{id} -")), "{out}");
}

#[test]
fn the_eta_of_a_throttled_hot_copy_is_within_reason() {
    let dir = tmp();
    let srv = Server::start_with_atoms(&dir.path().join("data"));
    let set = dir.path().join("set");
    let max_rate = 250_000;
    let hc = srv.start_throttled_full(&set, max_rate);
    // The ETA read once a fifth of the bytes is done, and when.
    let mut read: Option<(f64, Instant, Value)> = None;
    let (end, ended) = follow(&srv, &hc, |v, now| {
        let (done, total) = (u(v, "bytesDone"), u(v, "bytesTotal"));
        let Some(eta) = v["etaSec"].as_f64() else { return };
        // Never faster than maxRate: the bytes left take at least that long at it.
        let at_max_rate = (total - done) as f64 / max_rate as f64;
        assert!(eta >= at_max_rate * 0.999, "ETA {eta} s is below {at_max_rate} s at maxRate: {v}");
        if read.is_none() && total > 0 && done >= total / 5 && done < total {
            read = Some((eta, now, v.clone()));
        }
    });
    assert_eq!(end["status"], "completed", "{end}");
    let (eta, at, v) = read.unwrap_or_else(|| panic!("no status with a fifth done and an ETA; end: {end}"));
    let took = (ended - at).as_secs_f64();
    // Within reason: the actual time left, within half of it either way, plus a second for the end (metadata,
    // renames, syncs) and the polling.
    assert!(eta >= took * 0.5 - 1.0 && eta <= took * 1.5 + 1.0, "ETA {eta} s, took {took:.2} s: {v}");
}
