//! End to end: the nuocmd-style verbs (`hotcopy database`, `get hotcopy-status`, `get hotcopy-info`,
//! `show hotcopy-info`, `cancel hotcopy`, `get processes`) run as the real binary against a real `backset serve`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{backset, command, field, field_names, free_port, hotcopy_args, stderr, stdout, text, tmp, Server};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn hotcopy_database_and_status_print_as_nuocmd() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(100, 300);
    let set = dir.path().join("set");
    let out = srv.cli_ok(&hotcopy_args("full", s(&set), &[]));
    let line = out.trim();
    assert!(line.starts_with("HotCopyResponse(coordinator_start_id=1, id=") && line.ends_with(')'), "{out}");
    assert_eq!(out.lines().count(), 1);
    let id = field(line, "id");
    let status =
        srv.cli_ok(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "60"]);
    let line = status.trim();
    assert_eq!(field(line, "status"), "completed", "{status}");
    assert_eq!(field(line, "message"), "Hot copy successfully completed");
    assert_eq!(
        field_names(line),
        ["begin_timestamp", "coordinator_start_id", "end_timestamp", "id", "message", "status"]
    );
    assert_eq!(field(line, "begin_timestamp").len(), "2019-06-18 10:18:37".len());
    // Without --timeout: the status as it is.
    let again = srv.cli_ok(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id]);
    assert_eq!(again, status);
    // --show-json: the server's JSON.
    let json_out =
        srv.cli_ok(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--show-json"]);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["hotCopyId"], id.as_str());
    assert_eq!(v["status"], "completed");

    // Incremental and journal with --timeout wait and print the whole response.
    srv.load(20, 300);
    for kind in ["incremental", "journal"] {
        let args = ["hotcopy", "database", "--db-name", "demo", "--type", kind, "--backup-dirs", "0", s(&set)];
        let out = srv.cli_ok(&[&args[..], &["--timeout", "60", "--max-rate", "500"]].concat());
        assert_eq!(field(out.trim(), "status"), "completed", "{out}");
    }
    // The set checks clean offline.
    let out = backset(&["check", s(&set)]);
    assert!(out.status.success(), "{}", text(&out));

    // A simple hot copy.
    let copy = dir.path().join("simple");
    let out = srv.cli_ok(&hotcopy_args("simple", s(&copy), &["--timeout", "60"]));
    assert_eq!(field(out.trim(), "status"), "completed", "{out}");
    assert!(copy.join("atoms").is_dir());
    let out = backset(&["archive", "check", s(&copy)]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn timeout_expiry_leaves_the_hot_copy_running_then_cancel() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(400, 2000);
    let set = dir.path().join("set");
    let started = Instant::now();
    // 0.01 MB/s: about 800 kB takes over a minute; wait one second.
    let out = srv.cli_fails(&hotcopy_args("full", s(&set), &["--max-rate", "0.01", "--timeout", "1"]), 1);
    assert!(started.elapsed() < Duration::from_secs(15));
    let line = stdout(&out);
    let message = field(line.trim(), "message");
    assert!(message.starts_with("Stage"), "{line}");
    assert!(message.ends_with(": timeout while waiting for hot copy operation to finish"), "{line}");
    assert_eq!(field(line.trim(), "status"), "running");
    let id = field(line.trim(), "id");
    // It keeps running.
    let status = srv.cli_ok(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id]);
    assert_eq!(field(status.trim(), "status"), "running", "{status}");
    let info = srv.cli_ok(&["get", "hotcopy-info", "--db-name", "demo", "--running-for", "0"]);
    assert!(info.contains(&id), "{info}");
    let info = srv.cli_ok(&["get", "hotcopy-info", "--db-name", "demo", "--running-for", "1h"]);
    assert_eq!(info, "HotCopyDatabaseStatuses(errors={}, hotcopy_statuses={1: []})\n");
    let show = srv.cli_ok(&["show", "hotcopy-info", "--db-name", "demo"]);
    assert!(show.contains(&format!("{id} [running] ")) && show.contains("... : Stage"), "{show}");
    // get hotcopy-status --timeout expiring also exits non-zero.
    let out = srv.cli_fails(
        &["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "0.3"],
        1,
    );
    assert!(stdout(&out).contains("timeout while waiting for hot copy operation to finish"), "{}", text(&out));
    // Cancel, waiting for it.
    let out = srv.cli_ok(&["cancel", "hotcopy", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "30"]);
    assert_eq!(field(out.trim(), "status"), "cancelled", "{out}");
    assert_eq!(field(out.trim(), "message"), "Hot copy cancelled");
    // Waiting on a hot copy that ended other than completed exits non-zero.
    let out = srv
        .cli_fails(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", &id, "--timeout", "5"], 1);
    assert_eq!(field(stdout(&out).trim(), "status"), "cancelled");
}

#[test]
fn refusals_and_lookups_fail_with_the_servers_message() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let nothing = dir.path().join("nothing");
    let out = srv.cli_fails(&hotcopy_args("incremental", s(&nothing), &[]), 1);
    assert!(stderr(&out).contains("Full hot copy must be completed before incremental hot copy"), "{}", text(&out));
    let out = srv.cli_fails(
        &["hotcopy", "database", "--db-name", "other", "--type", "full", "--backup-dirs", "0", s(&nothing)],
        1,
    );
    assert!(stderr(&out).contains("no database \"other\""), "{}", text(&out));
    let unknown = "00000000-0000-0000-0000-000000000000";
    let out = srv.cli_fails(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", unknown], 1);
    assert!(stderr(&out).contains("no hot copy"), "{}", text(&out));
    srv.cli_fails(&["cancel", "hotcopy", "--coordinator-start-id", "1", "--hotcopy-id", unknown], 1);
    // Nothing listens there.
    let out = backset(&["get", "processes", "--api-server", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the admin server"), "{}", text(&out));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let base = ["hotcopy", "database", "--db-name", "demo", "--type", "full"];
    for extra in [
        &["--backup-dirs", "0"][..],
        &["--backup-dirs", "0", "/a", "1"],
        &["--backup-dirs", "x", "/a"],
        &["--backup-dirs", "0", "/a", "0", "/b"],
        &[],
        &["--process-filter", "any"],
        &["--backup-dirs", "0", "/a", "--process-filter", "any", "--default-backup-dir", "/d"],
        &["--backup-dirs", "0", "/a", "--max-rate", "0"],
        &["--backup-dirs", "0", "/a", "--timeout", "-1"],
        &["--shared", "--backup-dirs", "0", "/a"],
    ] {
        srv.cli_fails(&[&base[..], extra].concat(), 2);
    }
    srv.cli_fails(
        &["hotcopy", "database", "--db-name", "demo", "--type", "simple", "--default-backup-dir", "/d", "--shared"],
        2,
    );
    srv.cli_fails(&["hotcopy", "database", "--db-name", "demo", "--type", "bogus", "--backup-dirs", "0", "/a"], 2);
    srv.cli_fails(&["get", "hotcopy-info"], 2);
    srv.cli_fails(&["get", "hotcopy-info", "--coordinator-start-id", "1", "--running-for", "5"], 2);
    srv.cli_fails(&["get", "hotcopy-info", "--db-name", "demo", "--running-for", "2w"], 2);
    srv.cli_fails(&["get", "hotcopy-status", "--coordinator-start-id", "1", "--hotcopy-id", "not-a-uuid"], 2);
}

#[test]
fn info_show_and_processes() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &["--sms", "2", "--storage-groups", "2"]);
    srv.load(50, 100);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = srv.cli_ok(&hotcopy_args("full", s(&a), &["1", s(&b), "--timeout", "60"]));
    let id = field(out.trim(), "id");
    // Missing storage groups are refused unless allowed.
    let c = dir.path().join("c");
    let out =
        srv.cli_fails(&["hotcopy", "database", "--db-name", "demo", "--type", "full", "--backup-dirs", "1", s(&c)], 1);
    assert!(stderr(&out).contains("missingSgs=[SG1]"), "{}", text(&out));
    // A process filter picks archive 1 into the default directory.
    let filtered = |filter, extra: &[&'static str]| {
        let args = ["hotcopy", "database", "--db-name", "demo", "--type", "full", "--process-filter", filter];
        [&args[..], &["--default-backup-dir", s(&c)], extra].concat()
    };
    let out = srv.cli_ok(&filtered("label(archive-id 1)", &["--partial-storage-groups", "--timeout", "60"]));
    assert_eq!(field(out.trim(), "coordinator_start_id"), "2", "{out}");
    assert!(c.join("state").is_file());
    let out = srv.cli_fails(&filtered("label(archive-id 9)", &[]), 1);
    assert!(stderr(&out).contains("selects no SM"), "{}", text(&out));

    // get hotcopy-info: per SM start id, on one line as nuocmd prints it; the coordinated hot copy under both SMs.
    let info = srv.cli_ok(&["get", "hotcopy-info", "--db-name", "demo"]);
    assert_eq!(info.lines().count(), 1, "{info}");
    assert_eq!(info.matches(&id).count(), 2, "{info}");
    assert!(info.starts_with("HotCopyDatabaseStatuses(errors={}, hotcopy_statuses={1: [HotCopyResponse("), "{info}");
    assert!(info.contains("], 2: [HotCopyResponse("), "{info}");
    let sm2 = srv.cli_ok(&["get", "hotcopy-info", "--coordinator-start-id", "2"]);
    assert!(sm2.starts_with("HotCopyDatabaseStatuses(errors={}, hotcopy_statuses={2: [HotCopyResponse("), "{sm2}");
    assert_eq!(sm2.matches("HotCopyResponse(").count(), 2, "{sm2}");
    let v: Value =
        serde_json::from_str(&srv.cli_ok(&["get", "hotcopy-info", "--db-name", "demo", "--show-json"])).unwrap();
    assert_eq!(v["hotCopyStatuses"]["2"].as_array().unwrap().len(), 2);

    // show hotcopy-info: each SM, then its hot copies indented.
    let show = srv.cli_ok(&["show", "hotcopy-info", "--db-name", "demo"]);
    let lines: Vec<&str> = show.lines().collect();
    assert!(lines[0].starts_with("[SM] ") && lines[0].contains("[start_id = 1]"), "{show}");
    assert!(
        lines[1].starts_with(&format!("  {id} [completed] "))
            && lines[1].ends_with(": Hot copy successfully completed (3)"),
        "{show}"
    );
    let custom = srv.cli_ok(&[
        "show",
        "hotcopy-info",
        "--db-name",
        "demo",
        "--hotcopy-format",
        "{type}/{status}",
        "--process-format",
        "SM {start_id}",
    ]);
    assert_eq!(custom, "SM 1\n  full/completed\nSM 2\n  full/completed\n  full/completed\n");

    // get processes.
    let ps = srv.cli_ok(&["get", "processes"]);
    assert_eq!(ps.lines().count(), 2);
    assert!(ps.lines().next().unwrap().starts_with("Process(address="), "{ps}");
    assert!(ps.contains("labels={archive-id: 1, storage-groups: SG2}"), "{ps}");
    let one = srv.cli_ok(&["get", "processes", "--process-filter", "start_id(2)"]);
    assert_eq!(one.lines().count(), 1);
    assert!(one.contains("start_id=2"));
    assert_eq!(srv.cli_ok(&["get", "processes", "--db-name", "other"]), "");
    let v: Value = serde_json::from_str(&srv.cli_ok(&["get", "processes", "--show-json"])).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // A malformed filter is a usage error (exit 2), found before any request.
    let out = srv.cli_fails(&["get", "processes", "--process-filter", "and(any"], 2);
    assert!(stderr(&out).contains("at position 7"), "{}", text(&out));
}

#[test]
fn bearer_token_from_a_file_or_the_environment() {
    let dir = tmp();
    let token: PathBuf = dir.path().join("token");
    std::fs::write(&token, "tok-123-0123456789\n").unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--auth-token-file", s(&token)]);
    let out = srv.cli_fails(&["get", "processes"], 1);
    assert!(stderr(&out).contains("bearer token"), "{}", text(&out));
    srv.cli_ok(&["get", "processes", "--api-token-file", s(&token)]);
    let out = srv.cli_env(&["get", "processes"], &[("BACKSET_AUTH_TOKEN", "tok-123-0123456789")]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn shared_default_directory_takes_a_subdirectory_per_archive() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &["--sms", "2"]);
    srv.load(30, 100);
    let shared = dir.path().join("shared");
    let args =
        ["hotcopy", "database", "--db-name", "demo", "--type", "full", "--default-backup-dir", s(&shared), "--shared"];
    // It must exist.
    let out = srv.cli_fails(&args, 1);
    assert!(!stderr(&out).is_empty());
    std::fs::create_dir(&shared).unwrap();
    let out = srv.cli_ok(&[&args[..], &["--timeout", "60"]].concat());
    assert_eq!(field(out.trim(), "status"), "completed", "{out}");
    assert!(shared.join("0/state").is_file() && shared.join("1/state").is_file());
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["hotcopy", "database"],
        &["get", "hotcopy-status"],
        &["get", "hotcopy-info"],
        &["show", "hotcopy-info"],
        &["cancel", "hotcopy"],
        &["get", "processes"],
        &["restore"],
        &["check"],
        &["archive", "dump"],
        &["archive", "info"],
        &["archive", "check"],
        &["demo"],
        &["bench", "copy"],
        &["bench", "disk"],
    ];
    for c in commands {
        let out = command().args(*c).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{c:?} --help failed");
        assert!(text.contains("Example: `backset "), "{c:?} --help has no example:\n{text}");
    }
}

/// Runs `backset <args>` with no server to talk to (a port nothing listens on).
fn no_server(args: &[&str]) -> Output {
    // Through the environment: the offline commands and serve take no --api-server.
    command().args(args).env("NUOCMD_API_SERVER", format!("127.0.0.1:{}", free_port())).output().unwrap()
}

#[test]
fn a_malformed_process_filter_is_a_usage_error_before_any_request() {
    let hotcopy = ["hotcopy", "database", "--db-name", "demo", "--type", "full", "--default-backup-dir", "/b"];
    for args in [&["get", "processes"][..], &hotcopy[..]] {
        let args = [args, &["--process-filter", "label(role"][..]].concat();
        let out = no_server(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains("invalid process filter at position"), "{}", text(&out));
        assert!(!stderr(&out).contains("cannot reach"), "no request is sent: {}", text(&out));
    }
}

#[test]
fn negative_numbers_are_read_as_numbers_and_refused_with_their_range() {
    let id = "00000000-0000-0000-0000-000000000000";
    let hotcopy = ["hotcopy", "database", "--db-name", "demo", "--type", "full", "--backup-dirs", "0", "/b"];
    let cases: &[(&[&str], &str)] = &[
        (&[&hotcopy[..], &["--max-rate", "-5"]].concat(), "--max-rate -5: give 0.000001"),
        (&["get", "hotcopy-status", "--coordinator-start-id", "-1", "--hotcopy-id", id], "-1 is below 0"),
        (&["get", "hotcopy-info", "--coordinator-start-id", "-2"], "-2 is below 0"),
        (&["restore", "--restore-dir", "/r", "--restore-snapshot", "-1", "/set"], "-1 is below 0"),
        (&["serve", "--sms", "-1"], "-1 is below 0"),
        (&["serve", "--journal-segment-bytes", "-4096"], "-4096 is below 0"),
        (&["bench", "disk", "/tmp", "--size-mib", "-5"], "-5 is not in 1..=1048576"),
        (&["demo", "--pause", "-1"], "is not a number of seconds between 0 and 600"),
    ];
    for (args, want) in cases {
        let out = no_server(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(want), "{args:?}: no {want:?} in {}", text(&out));
        assert!(!stderr(&out).contains("unexpected argument"), "{args:?}: {}", text(&out));
    }
}

#[test]
fn serve_option_ranges_are_usage_errors_and_create_nothing() {
    let dir = tmp();
    let data = dir.path().join("data");
    for (args, want) in [
        (&["--sms", "3", "--storage-groups", "2"][..], "--storage-groups 2: give at least one group per SM (--sms 3)"),
        (&["--sms", "0"], "--sms 0: give 1 to"),
        (&["--journal-segment-bytes", "5"], "--journal-segment-bytes 5: give 4096 to"),
    ] {
        let out =
            command().args(["serve", "--listen", "127.0.0.1:0", "--data-dir", s(&data)]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(want), "{args:?}: no {want:?} in {}", text(&out));
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
}

#[test]
fn show_hotcopy_info_with_a_bad_format_fails_before_printing_anything() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(5, 10);
    let set = dir.path().join("set");
    srv.cli_ok(&hotcopy_args("full", s(&set), &["--timeout", "60"]));
    let show = ["show", "hotcopy-info", "--db-name", "demo"];
    assert_eq!(srv.cli_ok(&show).lines().count(), 2, "an SM line and a hot copy line");
    for bad in [["--hotcopy-format", "{id} {nope}"], ["--hotcopy-format", "{id"], ["--process-format", "{bogus}"]] {
        let out = srv.cli_fails(&[&show[..], &bad[..]].concat(), 2);
        assert_eq!(stdout(&out), "", "{bad:?} printed before failing: {}", text(&out));
        assert!(stderr(&out).contains(bad[0]), "{}", text(&out));
    }
    // Checked before any request: the same without a server.
    let out = no_server(&[&show[..], &["--hotcopy-format", "{nope}"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_destination_that_is_a_file_is_named_a_file_not_a_non_empty_directory() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    for kind in ["full", "simple"] {
        let out = srv.cli_fails(&hotcopy_args(kind, s(&file), &[]), 1);
        let err = stderr(&out);
        assert!(err.contains(&format!("{} is a file, not a directory", s(&file))), "{kind}: {}", text(&out));
        assert!(!err.contains("not empty"), "{kind}: {}", text(&out));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn progress_bars_show_megabytes_per_second_and_appear_once_their_total_is_known() {
    // The bar is drawn only on a terminal: `script` (util-linux) gives the command one.
    if Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs `script` (util-linux) for this test");
        eprintln!("skipped: no `script` command to run the CLI on a terminal");
        return;
    }
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(40, 100_000);
    let set = dir.path().join("set");
    // 4 MB at 1 MB/s: several seconds of bar.
    let cmd = format!(
        "{} hotcopy database --db-name demo --type full --backup-dirs 0 {} --max-rate 1 --timeout 120 --api-server {}",
        env!("CARGO_BIN_EXE_backset"),
        s(&set),
        srv.addr
    );
    let out = Command::new("script").args(["-q", "-e", "-c", &cmd, "/dev/null"]).output().unwrap();
    let screen = stdout(&out);
    assert!(out.status.success(), "{}", text(&out));
    let bars: Vec<&str> = screen.split(['\r', '\n']).filter(|l| l.contains("full [")).collect();
    assert!(!bars.is_empty(), "no bar drawn: {screen}");
    for bar in &bars {
        // `<done> <unit>/<total> <unit> <rate> MB/s <message>`: `0 B/4.00 MB 0.00 MB/s`, `1.05 MB/4.00 MB 0.69 MB/s`.
        let words: Vec<&str> = bar.split(']').nth(1).unwrap().split_whitespace().collect();
        // The total's unit follows its size (what the full copies depends on how much a checkpoint wrote to atoms):
        // a decimal one; the rate is always in MB/s.
        assert!(["B", "kB", "MB", "GB"].contains(&words[2]), "the total in a decimal unit: {bar}");
        assert_eq!(words[4], "MB/s", "the rate in MB/s: {bar}");
        assert!(!bar.contains("iB"), "a binary unit: {bar}");
        assert!(!bar.contains("/1 B "), "a bar before its total was known: {bar}");
    }
}

#[test]
fn journal_hot_copies_go_into_a_new_set_right_after_its_full_starts() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.load(20, 1000);
    let (old, new, none) = (dir.path().join("week1"), dir.path().join("week2"), dir.path().join("none"));
    let hotcopy = |kind: &str, set: &Path| -> Vec<String> {
        ["hotcopy", "database", "--db-name", "demo", "--type", kind, "--backup-dirs", "0", s(set)]
            .map(str::to_string)
            .to_vec()
    };
    let run = |args: Vec<String>| srv.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let wait = |kind: &str, set: &Path| [hotcopy(kind, set), vec!["--timeout".into(), "60".into()]].concat();
    for kind in ["full", "journal"] {
        let out = run(wait(kind, &old));
        assert!(out.status.success(), "{kind}: {}", text(&out));
    }
    srv.load(20, 1000);
    // The new set's full, asynchronous and held at one byte per second.
    let out = run([hotcopy("full", &new), vec!["--max-rate".into(), "0.000001".into()]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let (sm, id) = (field(stdout(&out).trim(), "coordinator_start_id"), field(stdout(&out).trim(), "id"));
    // Right after it: a journal hot copy into the new set completes.
    let out = run(wait("journal", &new));
    assert!(out.status.success(), "journal into the new set: {}", text(&out));
    assert_eq!(field(stdout(&out).trim(), "status"), "completed");
    // The old set takes no more journal hot copies, and the message names the new set.
    let out = run(wait("journal", &old));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = format!("backup set {} no longer takes journal hot copies of archive 0", s(&old));
    assert!(
        stderr(&out).contains(&want) && stderr(&out).contains(&format!("made {} the set", s(&new))),
        "{}",
        text(&out)
    );
    // An incremental into the new set says its full runs, with the full's id.
    let out = run(wait("incremental", &new));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("full hot copy {id} into backup set {} is still running", s(&new))),
        "{}",
        text(&out)
    );
    // A set no full has initialised: NuoDB's message, verbatim (NuoDB's Helm scripts match on it).
    let out = run(wait("journal", &none));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("Full or incremental hot copy must be completed before journal hot copy"),
        "{}",
        text(&out)
    );
    srv.cli_ok(&["cancel", "hotcopy", "--coordinator-start-id", &sm, "--hotcopy-id", &id, "--timeout", "60"]);
}
