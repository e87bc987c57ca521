//! End to end: the offline tools (`restore`, `check`, `archive dump|info|check`) run as the real binary on a backup
//! set that `backset demo` made (a full, a journal, an incremental and a journal element under load).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::json;
use support::{backset, fails, flip_byte, ok, stderr, stdout, text};

/// What `backset demo --pause 0.3` left, made once for every test of this file (the tests only read it; a test
/// that damages a set works on its own copy).
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let root = dir.path().join("demo");
        let out = backset(&["demo", "--pause", "0.3", "--dir", root.to_str().unwrap()]);
        assert!(out.status.success(), "demo failed: {}", text(&out));
        Fixture { _dir: dir, root }
    })
}

fn set() -> PathBuf {
    fixture().root.join("backup-set")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn info(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["archive", "info", p(dir)])).unwrap()
}

/// A copy of the fixture's backup set, to damage.
fn copy_of_set(tmp: &Path) -> PathBuf {
    let copy = tmp.join("set");
    let st = Command::new("cp").arg("-a").arg(set()).arg(&copy).status().unwrap();
    assert!(st.success());
    copy
}

/// `(id, name, type, firstTxn, lastTxn)` of each `<BackupElement>` line of `--report-backups`.
fn elements() -> Vec<(String, String, String, u64, u64)> {
    let out = ok(&["restore", "--report-backups", p(&set())]);
    let attr = |line: &str, name: &str| {
        let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        line[start..].split('"').next().unwrap().to_string()
    };
    out.lines()
        .filter(|l| l.contains("<BackupElement "))
        .map(|l| {
            (
                attr(l, "id"),
                attr(l, "name"),
                attr(l, "type"),
                attr(l, "firstTxn").parse().unwrap(),
                attr(l, "lastTxn").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn report_backups_lists_the_elements_newest_first() {
    let out = ok(&["restore", "--report-backups", p(&set())]);
    assert!(out.starts_with("<BackupSet id=\""), "{out}");
    assert!(out.contains("database=\"demo\"") && out.contains("archiveId=\"0\""), "{out}");
    let names: Vec<String> = elements().into_iter().map(|e| e.1).collect();
    assert_eq!(names, ["2.jnl", "1.inc", "1.jnl", "full"]);
    assert!(out.trim_end().ends_with("</BackupSet>"));
}

#[test]
fn restore_to_the_demo_transaction_equals_the_demo_restore() {
    // The demo restored to a transaction in the middle of its last journal element and proved it against the
    // acknowledged state; the command line's restore to that transaction must give the same data.
    let demo_restored = fixture().root.join("restored");
    let target = info(&demo_restored)["lastTxnId"].as_u64().unwrap();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dest = tmp.path().join("r");
    let out = ok(&["restore", "--restore-dir", p(&dest), "--restore-snapshot", &target.to_string(), p(&set())]);
    assert!(out.contains(&format!("to transaction {target}")), "{out}");
    let dump = ok(&["archive", "dump", p(&dest)]);
    assert_eq!(dump, ok(&["archive", "dump", p(&demo_restored)]));
    // JSON lines sorted by key.
    let keys: Vec<String> = dump
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("key").or(v.get("keyHex")).unwrap().as_str().unwrap().to_string()
        })
        .collect();
    assert!(!keys.is_empty());
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "dump is not sorted by key");
    let i = info(&dest);
    assert_eq!(i["lastTxnId"], target);
    assert_eq!(i["archiveId"], 0);
    assert_eq!(i["keys"].as_u64().unwrap() as usize, keys.len());
    assert_eq!(i["databaseId"], info(&demo_restored)["databaseId"]);
    let check = ok(&["archive", "check", p(&dest)]);
    assert!(check.contains(", 0 defects"), "{check}");
}

#[test]
fn restore_latest_and_to_an_element() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let els = elements();
    let latest = els.iter().map(|e| e.4).max().unwrap();
    let dest = tmp.path().join("latest");
    ok(&["restore", "--restore-dir", p(&dest), p(&set())]);
    assert_eq!(info(&dest)["lastTxnId"], latest);
    let (full_id, _, kind, _, full_end) = els.iter().find(|e| e.1 == "full").unwrap().clone();
    assert_eq!(kind, "full");
    let dest = tmp.path().join("full");
    ok(&["restore", "--restore-dir", p(&dest), "--backup-element-id", &full_id, p(&set())]);
    assert_eq!(info(&dest)["lastTxnId"], full_end);
}

#[test]
fn report_timestamps_lists_every_transaction_in_order() {
    let out = ok(&["restore", "--report-timestamps", p(&set())]);
    let lines: Vec<(String, u64)> = out
        .lines()
        .map(|l| {
            let (t, id) = l.split_once(' ').unwrap();
            assert_eq!(t.len(), "2021-02-19T17:00:30".len(), "{l}");
            assert_eq!(&t[10..11], "T");
            (t.to_string(), id.parse().unwrap())
        })
        .collect();
    assert!(lines.len() > 10);
    assert!(lines.windows(2).all(|w| w[0].1 < w[1].1));
    // The time window of the whole list gives the whole list; one after it gives nothing.
    let (first, last) = (&lines[0].0, &lines[lines.len() - 1].0);
    let window = ok(&["restore", "--report-timestamps", "--start-time", first, "--end-time", last, p(&set())]);
    assert_eq!(window, out);
    let none = ok(&["restore", "--report-timestamps", "--start-time", "2999-01-01T00:00:00", p(&set())]);
    assert_eq!(none, "");
    let bad = fails(&["restore", "--report-timestamps", "--start-time", "yesterday", p(&set())], 2);
    assert!(stderr(&bad).contains("not a UTC time"), "{}", text(&bad));
}

#[test]
fn restore_refuses_a_non_empty_directory_and_leaves_it_alone() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(tmp.path().join("keep"), b"mine").unwrap();
    let out = fails(&["restore", "--restore-dir", p(tmp.path()), p(&set())], 1);
    assert!(stderr(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"mine");
}

#[test]
fn restore_into_a_file_says_it_is_a_file_not_that_it_is_not_empty() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"mine").unwrap();
    let out = fails(&["restore", "--restore-dir", p(&file), p(&set())], 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("restore destination {} is a file, not a directory", p(&file))), "{}", text(&out));
    assert!(!err.contains("not empty"), "{}", text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn restore_out_of_range_names_the_range() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let els = elements();
    let full_end = els.iter().find(|e| e.1 == "full").unwrap().4;
    let latest = els.iter().map(|e| e.4).max().unwrap();
    let dest = tmp.path().join("r");
    for txn in [full_end - 1, latest + 1] {
        let out = fails(&["restore", "--restore-dir", p(&dest), "--restore-snapshot", &txn.to_string(), p(&set())], 1);
        let want = format!("transaction {txn} is outside the restorable range [{full_end}, {latest}]");
        assert!(stderr(&out).contains(&want), "{}", text(&out));
        assert!(!dest.exists(), "a refused restore left its destination");
    }
}

#[test]
fn restore_usage_and_lookup_errors() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dest = tmp.path().join("r");
    // No destination: a usage error.
    fails(&["restore", p(&set())], 2);
    // Both a snapshot and an element: a usage error.
    let id = "00000000-0000-0000-0000-000000000000";
    fails(&["restore", "--restore-dir", p(&dest), "--restore-snapshot", "5", "--backup-element-id", id, p(&set())], 2);
    // An unknown element.
    let out = fails(&["restore", "--restore-dir", p(&dest), "--backup-element-id", id, p(&set())], 1);
    assert!(stderr(&out).contains("has no completed element"), "{}", text(&out));
    // Not a set.
    let out = fails(&["restore", "--restore-dir", p(&dest), p(tmp.path())], 1);
    assert!(stderr(&out).starts_with("backset: error: "), "{}", text(&out));
    assert!(!dest.exists());
}

#[test]
fn check_passes_a_healthy_set_and_its_metadata() {
    let out = ok(&["check", p(&set())]);
    assert!(out.contains("4 completed elements") && out.contains(", 0 defects"), "{out}");
    let latest = elements().iter().map(|e| e.4).max().unwrap();
    assert!(out.contains(&format!(", {latest}]")), "{out}");
    let meta = ok(&["check", "--metadata-only", p(&set())]);
    assert!(meta.contains("metadata checked") && meta.contains(", 0 defects"), "{meta}");
}

#[test]
fn check_names_the_element_and_file_of_a_damaged_set() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    let atoms = copy.join("1.inc/data/atoms");
    let victim = std::fs::read_dir(&atoms).unwrap().next().unwrap().unwrap().path();
    let size = std::fs::metadata(&victim).unwrap().len();
    flip_byte(&victim, size - 1);
    let out = fails(&["check", p(&copy)], 1);
    let printed = stdout(&out);
    let defects: Vec<&str> = printed.lines().filter(|l| l.starts_with("defect: ")).map(|l| l.trim()).collect();
    assert!(!defects.is_empty(), "{}", text(&out));
    assert!(
        defects.iter().any(|d| d.contains("element 1.inc") && d.contains(p(&victim))),
        "no defect names 1.inc and {}: {}",
        victim.display(),
        text(&out)
    );
    assert!(stderr(&out).contains(" (listed above)"), "{}", text(&out));
    // The metadata alone is intact.
    ok(&["check", "--metadata-only", p(&copy)]);
    // A restore that needs the damaged file refuses and leaves nothing.
    let dest = tmp.path().join("r");
    let out = fails(&["restore", "--restore-dir", p(&dest), p(&copy)], 1);
    assert!(stderr(&out).contains("1.inc"), "{}", text(&out));
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().count() == 0);
}

#[test]
fn check_of_damaged_metadata_fails() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    flip_byte(&copy.join("full/control/manifest"), 70);
    let out = fails(&["check", "--metadata-only", p(&copy)], 1);
    assert!(stdout(&out).lines().any(|l| l.starts_with("defect: ") && l.contains("manifest")), "{}", text(&out));
    assert!(stdout(&out).contains("restorable transactions: none"), "{}", text(&out));
}

#[test]
fn archive_check_names_a_damaged_atom_file() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = tmp.path().join("archive");
    let st = Command::new("cp").arg("-a").arg(fixture().root.join("restored")).arg(&copy).status().unwrap();
    assert!(st.success());
    let victim = std::fs::read_dir(copy.join("atoms")).unwrap().next().unwrap().unwrap().path();
    let size = std::fs::metadata(&victim).unwrap().len();
    flip_byte(&victim, size - 1);
    let out = fails(&["archive", "check", p(&copy)], 1);
    assert!(stdout(&out).lines().any(|l| l.starts_with("defect: ") && l.contains(p(&victim))), "{}", text(&out));
}

#[test]
fn archive_commands_refuse_what_is_not_an_archive() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for verb in ["dump", "info", "check"] {
        let out = fails(&["archive", verb, p(tmp.path())], 1);
        assert!(stderr(&out).contains("atoms/"), "{verb}: {}", text(&out));
    }
    let out = fails(&["check", p(&tmp.path().join("absent"))], 1);
    assert!(stderr(&out).starts_with("backset: error: "), "{}", text(&out));
}

#[test]
fn the_live_database_archive_reads_too() {
    // The demo's database directory (closed cleanly) is an archive as well: archive 0 of the store's root.
    let archive = fixture().root.join("database/0");
    let i = info(&archive);
    assert_eq!(i["archiveId"], 0);
    assert!(i["lastTxnId"].as_u64().unwrap() >= elements().iter().map(|e| e.4).max().unwrap());
    ok(&["archive", "check", p(&archive)]);
}

#[test]
fn archive_tools_read_a_journal_in_another_directory_with_journal_dir() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dest = tmp.path().join("restored");
    ok(&["restore", "--restore-dir", p(&dest), p(&set())]);
    let want_dump = ok(&["archive", "dump", p(&dest)]);
    let want_info = info(&dest);
    // Move the journal out, as a simple hot copy with copyJournalDir leaves it.
    let journal = tmp.path().join("elsewhere-journal");
    std::fs::rename(dest.join("journal"), &journal).unwrap();
    assert_eq!(ok(&["archive", "dump", p(&dest), "--journal-dir", p(&journal)]), want_dump);
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["archive", "info", p(&dest), "--journal-dir", p(&journal)])).unwrap();
    assert_eq!(got["lastTxnId"], want_info["lastTxnId"]);
    assert_eq!(got["journalDirectory"], p(&journal));
    assert_eq!(got["directory"], p(&dest));
    ok(&["archive", "check", p(&dest), "--journal-dir", p(&journal)]);
    // A missing journal directory is named.
    let nope = tmp.path().join("no-such-journal");
    let out = fails(&["archive", "dump", p(&dest), "--journal-dir", p(&nope)], 1);
    assert!(stderr(&out).contains(p(&nope)) && stderr(&out).contains("--journal-dir"), "{}", text(&out));
    // A defect in the journal is reported on the real journal file, not on a temporary view.
    let seg = std::fs::read_dir(&journal).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    flip_byte(&seg, len / 2);
    let out = backset(&["archive", "check", p(&dest), "--journal-dir", p(&journal)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains(p(&journal)) && !stdout(&out).contains("backset-archive-view"), "{}", text(&out));
}

#[test]
fn check_and_restore_say_what_they_found_instead_of_a_backup_set() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let archive = fixture().root.join("restored");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "x").unwrap();
    let cases = [
        (
            archive.as_path(),
            format!(
                "is not a backup set: it is an archive directory (atoms/, journal/); use `backset archive check {}`",
                p(&archive)
            ),
        ),
        (empty.as_path(), "is not a backup set: it is an empty directory".to_string()),
        (file.as_path(), "is not a backup set: it is a file, not a directory".to_string()),
        (other.as_path(), "is not a backup set: it has no `state` file (it holds notes.txt)".to_string()),
    ];
    let dest = tmp.path().join("r");
    for (path, want) in &cases {
        for args in [
            vec!["check", p(path)],
            vec!["restore", "--restore-dir", p(&dest), p(path)],
            vec!["restore", "--report-timestamps", p(path)],
            vec!["restore", "--report-backups", p(path)],
        ] {
            let out = fails(&args, 1);
            let err = stderr(&out);
            assert!(err.contains(&format!("{} {want}", p(path))), "{args:?}: no {want:?} in {}", text(&out));
            assert!(!err.contains("metadata is damaged"), "{args:?}: {}", text(&out));
            assert_eq!(stdout(&out), "", "{args:?}");
        }
        assert!(!dest.exists());
    }
}

#[test]
fn archive_commands_given_a_backup_set_point_to_check() {
    for verb in ["check", "info", "dump"] {
        let out = fails(&["archive", verb, p(&set())], 1);
        let want = format!("this is a backup set: use `backset check {}`", p(&set()));
        assert!(stderr(&out).contains(&want), "{verb}: {}", text(&out));
    }
}

#[test]
fn an_inverted_time_window_is_a_usage_error() {
    let out = fails(
        &[
            "restore",
            "--report-timestamps",
            "--start-time",
            "2030-01-02T00:00:00",
            "--end-time",
            "2030-01-01T00:00:00",
            p(&set()),
        ],
        2,
    );
    assert!(
        stderr(&out).contains("--start-time 2030-01-02T00:00:00Z is after --end-time 2030-01-01T00:00:00Z"),
        "{}",
        text(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn archive_tools_refuse_a_simple_copy_with_its_journal_elsewhere_and_name_journal_dir() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let srv = support::Server::start(&tmp.path().join("data"), &[]);
    for i in 0..20 {
        let a = srv.post_json("/databases/demo/transactions", &json!({"put": {format!("k{i}"): "v"}}));
        assert_eq!(a.code, 200, "{}", a.text);
    }
    let (copy, journal) = (tmp.path().join("copy"), tmp.path().join("copy-journal"));
    let a = srv.post_json(
        "/databases/demo/hotCopySimple",
        &json!({"backupLocations": {"0": {"copyArchiveDir": p(&copy), "copyJournalDir": p(&journal)}}, "timeoutSec": 60}),
    );
    assert_eq!(a.json["status"], "completed", "{}", a.text);
    let whole = ok(&["archive", "dump", p(&copy), "--journal-dir", p(&journal)]);
    assert_eq!(whole.lines().count(), 20, "{whole}");
    for verb in ["info", "dump", "check"] {
        // Read alone, its atoms would show an older state than the copy's end point: refused, naming --journal-dir.
        let out = fails(&["archive", verb, p(&copy)], 1);
        let want = format!("{} is not an archive directory: it has atoms/ but no journal/", p(&copy));
        assert!(stderr(&out).contains(&want) && stderr(&out).contains("--journal-dir"), "{verb}: {}", text(&out));
        assert_eq!(stdout(&out), "", "{verb}");
        // With --journal-dir: no warning.
        let out = backset(&["archive", verb, p(&copy), "--journal-dir", p(&journal)]);
        assert!(out.status.success() && !stderr(&out).contains("WARN"), "{verb}: {}", text(&out));
    }
}

#[test]
fn counts_take_their_noun_in_the_singular_and_ranges_print_one_way() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    // One damaged atom file of the newest incremental: one defect.
    let victim = std::fs::read_dir(copy.join("1.inc/data/atoms")).unwrap().next().unwrap().unwrap().path();
    let size = std::fs::metadata(&victim).unwrap().len();
    flip_byte(&victim, size - 1);
    let out = fails(&["check", p(&copy)], 1);
    assert!(stdout(&out).contains(", 1 defect; restorable transactions: ["), "{}", text(&out));
    assert!(stderr(&out).contains(&format!("backup set {} has 1 defect (listed above)", p(&copy))), "{}", text(&out));
    let out = ok(&["check", p(&set())]);
    assert!(out.contains(", 0 defects; ") && out.contains("4 completed elements"), "{out}");
    // A restored archive of one journal segment.
    let dest = tmp.path().join("r");
    ok(&["restore", "--restore-dir", p(&dest), p(&set())]);
    let out = ok(&["archive", "check", p(&dest)]);
    assert!(out.contains(", 1 journal segment, ") && out.ends_with(", 0 defects\n"), "{out}");
}

/// A copy of the fixture's database directory (256 atom files, one journal segment of several MB), to damage.
fn copy_of_archive(tmp: &Path) -> PathBuf {
    let copy = tmp.join("archive");
    let st = Command::new("cp").arg("-a").arg(fixture().root.join("database/0")).arg(&copy).status().unwrap();
    assert!(st.success());
    copy
}

/// `backset archive VERB DIR` with at most 1 GiB of address space, waited for at most 60 s: a FIFO made the archive
/// tools wait forever for a writer, and a device (`/dev/zero`) made them read up to 4 GiB into memory.
fn archive_tool(verb: &str, dir: &Path) -> Output {
    use std::io::Read;
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_backset"), "archive", verb, p(dir)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            pipe.read_to_end(&mut v).unwrap();
            v
        })
    };
    let (out, err) = (read(Box::new(child.stdout.take().unwrap())), read(Box::new(child.stderr.take().unwrap())));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("backset archive {verb} {} did not end within 60 s", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Replaces `path` by a FIFO, a symbolic link to `/dev/zero` or a character device node like `/dev/zero` (`None`
/// when this user cannot make one: making device nodes needs root).
fn replace_by(path: &Path, odd: &str) -> Option<()> {
    std::fs::remove_file(path).unwrap();
    match odd {
        "fifo" => assert!(Command::new("mkfifo").arg(path).status().unwrap().success()),
        "link to /dev/zero" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "device" => {
            let out = Command::new("mknod").arg(path).args(["c", "1", "5"]).output().unwrap();
            if !out.status.success() {
                eprintln!("skipping the device node case: mknod failed (it needs root): {}", text(&out));
                return None;
            }
        }
        other => panic!("unknown odd file {other}"),
    }
    Some(())
}

#[test]
fn regression_a_fifo_or_a_device_in_an_archive_hung_the_archive_tools_or_exhausted_memory() {
    for (what, file) in [("atom file", "atoms/0000000000000000"), ("journal segment", "journal/0000000000000001")] {
        for odd in ["fifo", "link to /dev/zero", "device"] {
            let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let archive = copy_of_archive(tmp.path());
            let victim = archive.join(file);
            assert!(victim.is_file(), "the fixture's archive has no {file}");
            if replace_by(&victim, odd).is_none() {
                continue;
            }
            for verb in ["info", "dump", "check"] {
                let out = archive_tool(verb, &archive);
                assert_eq!(out.status.code(), Some(1), "archive {verb} with a {odd} as {what}: {}", text(&out));
                let said = format!("{}{}", stdout(&out), stderr(&out));
                assert!(
                    said.contains(&format!("{} is not a regular file", p(&victim))),
                    "archive {verb} with a {odd} as {what} does not name it: {}",
                    text(&out)
                );
            }
        }
    }
}

#[test]
fn regression_a_zero_filled_last_segment_made_dump_drop_keys_while_info_failed() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let archive = copy_of_archive(tmp.path());
    let want_dump = ok(&["archive", "dump", p(&archive)]);
    let segment = archive.join("journal/0000000000000001");
    let len = std::fs::metadata(&segment).unwrap().len();
    assert!(len > 4096, "the fixture's segment is only {len} bytes");
    // Zeros where a segment of records was (lost blocks): damage, said alike by the three tools.
    std::fs::write(&segment, vec![0u8; len as usize]).unwrap();
    for verb in ["info", "dump", "check"] {
        let out = archive_tool(verb, &archive);
        assert_eq!(out.status.code(), Some(1), "archive {verb} of a zero-filled segment: {}", text(&out));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains(p(&segment)) && said.contains("more than a crash while creating it can leave"),
            "archive {verb} does not name the damaged segment: {}",
            text(&out)
        );
    }
    // A last segment that a crash cut short while creating it (no header, one block at most) held nothing
    // acknowledged: the three tools agree that it is not damage, and say it.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let archive = copy_of_archive(tmp.path());
    std::fs::write(archive.join("journal/0000000000000002"), vec![0u8; 3000]).unwrap();
    let out = archive_tool("dump", &archive);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), want_dump, "the segment cut short holds no key");
    let out = archive_tool("info", &archive);
    assert!(out.status.success(), "{}", text(&out));
    let i: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(i["tornTail"], true, "{i}");
    let out = archive_tool("check", &archive);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("note: segment 2 holds no header (3000 bytes)"), "{}", text(&out));
}

#[test]
fn report_timestamps_lists_restore_points_and_all_journal_the_whole_journal() {
    let els = elements();
    let full = els.iter().find(|e| e.1 == "full").unwrap().clone();
    let latest = els.iter().map(|e| e.4).max().unwrap();
    let txns = |out: &str| -> Vec<u64> {
        out.lines().filter(|l| !l.starts_with('#')).map(|l| l.split_once(' ').unwrap().1.parse().unwrap()).collect()
    };
    let points = txns(&ok(&["restore", "--report-timestamps", p(&set())]));
    assert!(!points.is_empty());
    assert!(points.iter().all(|t| (full.4..=latest).contains(t)), "only [{}, {latest}]: {points:?}", full.4);
    let all = txns(&ok(&["restore", "--report-timestamps", "--all-journal", p(&set())]));
    assert_eq!(all.first(), Some(&full.3), "the whole journal starts at the full's R");
    assert_eq!(all.iter().filter(|&&t| t >= full.4).copied().collect::<Vec<_>>(), points);
    // The first restore point restores; the transaction below it is refused (it was listed before).
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = points[0];
    let out = ok(&[
        "restore",
        "--restore-dir",
        p(&tmp.path().join("a")),
        "--restore-snapshot",
        &first.to_string(),
        p(&set()),
    ]);
    assert!(out.contains(&format!("to transaction {first} ")), "{out}");
    let below = first - 1;
    let dest = tmp.path().join("b");
    let out = fails(&["restore", "--restore-dir", p(&dest), "--restore-snapshot", &below.to_string(), p(&set())], 1);
    assert!(stderr(&out).contains("outside the restorable range"), "{}", text(&out));
}

/// `(defects, notes, summary)` lines of a `backset check` output.
fn check_lines(out: &Output) -> (Vec<String>, Vec<String>, String) {
    let printed = stdout(out);
    let pick = |prefix: &str| printed.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect::<Vec<_>>();
    let summary = printed.lines().find(|l| l.starts_with("backup set ")).unwrap_or_default().to_string();
    (pick("defect: "), pick("note: "), summary)
}

#[test]
fn regression_a_damaged_manifest_hid_a_damaged_catalog_and_left_the_elements_data_unverified() {
    let victim_element = "1.inc";
    for (damaged, verified_how) in [
        (&["manifest", "catalog"][..], "by their own checksums only (its manifest cannot be read)"),
        (&["catalog"][..], "against its manifest and by their own checksums"),
    ] {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let copy = copy_of_set(tmp.path());
        let element = copy.join(victim_element);
        for file in damaged {
            flip_byte(&element.join("control").join(file), 70);
        }
        let mut atoms: Vec<PathBuf> =
            std::fs::read_dir(element.join("data/atoms")).unwrap().map(|e| e.unwrap().path()).collect();
        atoms.sort();
        assert!(atoms.len() >= 2, "the fixture's {victim_element} has {} atom files", atoms.len());
        let data_files = atoms.len() + std::fs::read_dir(element.join("data/journal")).unwrap().count();
        let bad_atom = &atoms[0];
        flip_byte(bad_atom, std::fs::metadata(bad_atom).unwrap().len() - 1);
        let out = fails(&["check", p(&copy)], 1);
        let (defects, notes, _) = check_lines(&out);
        for file in damaged {
            let path = element.join("control").join(file);
            assert!(
                defects.iter().any(|d| d.contains(&format!("element {victim_element}: {}:", p(&path)))),
                "{damaged:?}: the damaged {file} is not reported: {}",
                text(&out)
            );
        }
        assert!(
            defects.iter().any(|d| d.contains(p(bad_atom))),
            "{damaged:?}: the damaged atom file of {victim_element} went unverified: {}",
            text(&out)
        );
        let want = format!("{} of its data files verified {verified_how}", data_files - 1);
        assert!(
            notes.iter().any(|n| n.contains(&format!("element {victim_element}:")) && n.contains(&want)),
            "{damaged:?}: no note saying {want:?}: {}",
            text(&out)
        );
        assert_eq!(defects.len(), damaged.len() + 1, "{damaged:?}: {}", text(&out));
    }
}

/// Runs `backset args` as a user who is not root: as `nobody` (through `setpriv`) when this test runs as root, else
/// as this user. A permission error needs a user the kernel checks permissions for; root reads everything.
fn as_normal_user(args: &[&str]) -> Output {
    let is_root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap().trim() == "0";
    if !is_root {
        return backset(args);
    }
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        assert!(out.status.success(), "running as root, this test needs a `nobody` user to switch to: {}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let out = Command::new("setpriv")
        .args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_backset"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        !stderr(&out).contains("setpriv:"),
        "running as root, this test switches to `nobody` with setpriv, which failed: {}",
        text(&out)
    );
    out
}

#[test]
fn regression_a_permission_error_was_called_damaged_metadata() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // `nobody` must reach the set: the temporary directory is private by default.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = copy_of_set(tmp.path());
    let ok_out = as_normal_user(&["check", p(&copy)]);
    assert!(ok_out.status.success(), "the readable copy does not check clean as a normal user: {}", text(&ok_out));
    let unreadable = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    let catalog = copy.join("full/control/catalog");
    let atoms = copy.join("1.inc/data/atoms");
    let slice = std::fs::read_dir(copy.join("1.jnl/data/journal")).unwrap().next().unwrap().unwrap().path();
    unreadable(&catalog, 0o000);
    unreadable(&atoms, 0o000);
    unreadable(&slice, 0o000);
    let out = as_normal_user(&["check", p(&copy)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (defects, _, _) = check_lines(&out);
    for path in [&catalog, &atoms, &slice] {
        let d = defects.iter().find(|d| d.contains(p(path))).unwrap_or_else(|| {
            panic!("no defect names {}: {}", path.display(), text(&out));
        });
        assert!(d.contains("Permission denied") && d.contains("run as a user who can read"), "{d}");
        assert!(!d.contains("damaged"), "a permission error is called damage: {d}");
    }
    // A restore says the same about the control file.
    let dest = tmp.path().join("r");
    let out = as_normal_user(&["restore", "--restore-dir", p(&dest), p(&copy)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(p(&catalog)) && stderr(&out).contains("run as a user who can read"),
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains("metadata is damaged"), "{}", text(&out));
}

/// The three archive tools on `dir`: each fails (exit 1) with a message holding `want`, printing nothing on stdout.
fn archive_tools_refuse(dir: &Path, want: &str) {
    for verb in ["check", "info", "dump"] {
        let out = fails(&["archive", verb, p(dir)], 1);
        assert!(stderr(&out).contains(want), "archive {verb} {}: {}", dir.display(), text(&out));
        assert_eq!(stdout(&out), "", "archive {verb} printed a result: {}", text(&out));
    }
}

/// `backset restore --restore-dir DEST SET` (the fixture's set) that blocks after `records` journal records (the
/// test-only `BACKSET_FAULT_RESTORE_PAUSE`, durable by then); returns once it is there.
fn restore_paused(dest: &Path, records: u64, mark: &Path) -> std::process::Child {
    let mut child = support::command()
        .args(["restore", "--restore-dir", p(dest), p(&set())])
        .env("BACKSET_FAULT_RESTORE_PAUSE", format!("records:{records}"))
        .env("BACKSET_FAULT_PAUSE_MARK", mark)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let there = support::wait_until(std::time::Duration::from_secs(60), || {
        mark.exists() || child.try_wait().unwrap().is_some()
    });
    if !there || !mark.exists() {
        let _ = child.kill();
        panic!("the restore did not block after {records} records: {}", text(&child.wait_with_output().unwrap()));
    }
    child
}

/// Waits (at most 60 s) for a process that was sent a signal, and returns its output.
fn ended(mut child: std::process::Child) -> Output {
    if !support::wait_until(std::time::Duration::from_secs(60), || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        panic!("still running 60 s after the signal: {}", text(&child.wait_with_output().unwrap()));
    }
    child.wait_with_output().unwrap()
}

fn signal(child: &std::process::Child, name: &str) {
    let st = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(st.success(), "kill -{name}");
}

#[test]
fn regression_a_killed_restore_left_a_partial_archive_that_looked_valid() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (dest, mark) = (tmp.path().join("restored"), tmp.path().join("mark"));
    let whole = ok(&["restore", "--restore-dir", p(&tmp.path().join("whole")), p(&set())]);
    let records: u64 = whole.split(" journal record").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(records > 3, "the set's restore writes {records} records, too few to stop part-way: {whole}");

    let child = restore_paused(&dest, 3, &mark);
    signal(&child, "KILL");
    let out = ended(child);
    assert_eq!(out.status.code(), None, "killed: {}", text(&out));
    // What it left: the first 3 records, durable (before the fix: an archive that `check` passed and `info` showed
    // ending at the 3rd transaction).
    assert!(dest.join("journal/0000000000000001").is_file(), "the partial journal is there");
    assert!(dest.join("restore.incomplete").is_file(), "the marker is there");
    let want = format!("{}: this archive is an unfinished restore: remove it and restore again", p(&dest));
    archive_tools_refuse(&dest, &want);
    // A restore into it says the same, and leaves it alone.
    let out = fails(&["restore", "--restore-dir", p(&dest), p(&set())], 1);
    assert!(stderr(&out).contains(&want), "{}", text(&out));
    assert!(dest.join("restore.incomplete").is_file());
    // The reference store refuses it: `serve` with it as its archive 0.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("database")).unwrap();
    let archive = data.join("database/0");
    std::fs::rename(&dest, &archive).unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let out = support::backset_within(
        &["serve", "--listen", &addr, "--data-dir", p(&data)],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = format!("{}: this archive is an unfinished restore: remove it and restore again", p(&archive));
    assert!(stderr(&out).contains(&want), "{}", text(&out));
    assert!(archive.join("restore.incomplete").is_file() && !archive.join("atoms/.tmp").exists());
    // Removed and restored again: a whole archive.
    std::fs::remove_dir_all(&archive).unwrap();
    ok(&["restore", "--restore-dir", p(&dest), p(&set())]);
    assert!(!dest.join("restore.incomplete").exists());
    assert!(ok(&["archive", "check", p(&dest)]).ends_with(", 0 defects\n"));
    assert_eq!(info(&dest)["lastTxnId"], info(&tmp.path().join("whole"))["lastTxnId"]);
}

#[test]
fn regression_sigterm_or_sigint_during_a_restore_left_a_partial_archive() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // SIGTERM, the destination created by the restore: nothing is left. SIGINT (Ctrl-C), into an empty directory
    // that was there: it is left empty.
    for (name, existing) in [("TERM", false), ("INT", true)] {
        let (dest, mark) = (tmp.path().join(format!("r-{name}")), tmp.path().join(format!("mark-{name}")));
        if existing {
            std::fs::create_dir(&dest).unwrap();
        }
        let child = restore_paused(&dest, 3, &mark);
        assert!(dest.join("journal/0000000000000001").is_file(), "SIG{name}: the restore is part-way");
        signal(&child, name);
        let out = ended(child);
        assert_eq!(out.status.code(), Some(1), "SIG{name}: {}", text(&out));
        let want = format!(
            "SIG{name} received: restore of backup set {} was cancelled; nothing was left in {}",
            p(&set()),
            p(&dest)
        );
        assert!(stderr(&out).contains(&want), "SIG{name}: {}", text(&out));
        assert_eq!(stdout(&out), "", "SIG{name}");
        if existing {
            let left: Vec<_> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "SIG{name}: {} holds {left:?}", dest.display());
        } else {
            assert!(!dest.exists(), "SIG{name}: {} is still there", dest.display());
        }
    }
}

#[test]
fn regression_the_archive_tools_read_a_directory_without_atoms_or_journal_as_an_empty_database() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let restored = tmp.path().join("restored");
    ok(&["restore", "--restore-dir", p(&restored), p(&set())]);
    // Without journal/: before the fix, the atoms' state alone (older than the archive's), exit 0.
    let no_journal = tmp.path().join("no-journal");
    std::fs::create_dir(&no_journal).unwrap();
    std::fs::rename(restored.join("atoms"), no_journal.join("atoms")).unwrap();
    archive_tools_refuse(
        &no_journal,
        &format!("{} is not an archive directory: it has atoms/ but no journal/", p(&no_journal)),
    );
    // Without atoms/: before the fix, the journal replayed over no atoms, exit 0.
    archive_tools_refuse(
        &restored,
        &format!("{} is not an archive directory: it has journal/ but no atoms/", p(&restored)),
    );
    // With neither (another directory): before the fix, `info` and `dump` of an empty database.
    let neither = tmp.path().join("neither");
    std::fs::create_dir_all(neither.join("something")).unwrap();
    archive_tools_refuse(
        &neither,
        &format!("{} is not an archive directory: it has neither atoms/ nor journal/", p(&neither)),
    );
}

/// The figures of a `backset check` summary line: (elements verified before and not read, data bytes read).
fn check_figures(out: &Output) -> (u64, u64) {
    let (_, _, summary) = check_lines(out);
    let before = summary
        .split_once(" verified before, data not read)")
        .map_or(0, |(head, _)| head.rsplit('(').next().unwrap().parse().unwrap());
    let bytes = summary.split_once(" bytes) ").unwrap_or_else(|| panic!("no byte count in {summary:?}")).0;
    (before, bytes.rsplit('(').next().unwrap().parse().unwrap())
}

/// Total size of the regular files under `dir`, walked here (not by the code under test).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        total += if meta.is_dir() { bytes_under(&entry.path()) } else { meta.len() };
    }
    total
}

/// Bytes of the data files of every element of `set`.
fn data_bytes_of_set(set: &Path) -> u64 {
    std::fs::read_dir(set)
        .unwrap()
        .map(|e| e.unwrap().path().join("data"))
        .filter(|d| d.is_dir())
        .map(|d| bytes_under(&d))
        .sum()
}

#[test]
fn check_new_after_an_incremental_reads_only_that_elements_data() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let srv = support::Server::start(&tmp.path().join("data"), &[]);
    let set = tmp.path().join("set");
    srv.load(400, 200);
    srv.completed("full", &set);
    let full = ok(&["check", p(&set)]);
    assert!(full.contains(", 0 defects"), "{full}");
    assert!(set.join("verified").is_file(), "check wrote no verification record");
    srv.load(20, 200);
    srv.completed("incremental", &set);
    let out = backset(&["check", "--new", p(&set)]);
    assert!(out.status.success(), "{}", text(&out));
    let (before, bytes) = check_figures(&out);
    let inc_data = bytes_under(&set.join("1.inc/data"));
    assert!(inc_data > 0, "the incremental copied nothing");
    assert_eq!((before, bytes), (1, inc_data), "check --new must read the incremental's data only: {}", text(&out));
    // Everything is verified now: a second --new reads no data; a full check reads it all.
    assert_eq!(check_figures(&ok_output(&["check", "--new", p(&set)])), (2, 0));
    assert_eq!(check_figures(&ok_output(&["check", p(&set)])), (0, data_bytes_of_set(&set)));
    // A hot copy never depends on the record: with the record damaged, the next incremental completes.
    flip_byte(&set.join("verified"), 60);
    srv.load(20, 200);
    srv.completed("incremental", &set);
    ok(&["check", p(&set)]);
}

/// Runs `backset args`, which must succeed; returns the whole output.
fn ok_output(args: &[&str]) -> Output {
    let out = backset(args);
    assert!(out.status.success(), "backset {args:?}: {}", text(&out));
    out
}

#[test]
fn a_flipped_byte_in_a_verified_element_is_found_by_check_and_since_0s_not_by_new() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    let _ = std::fs::remove_file(copy.join("verified"));
    ok(&["check", p(&copy)]);
    let atoms = copy.join("1.inc/data/atoms");
    let victim = std::fs::read_dir(&atoms).unwrap().next().unwrap().unwrap().path();
    flip_byte(&victim, std::fs::metadata(&victim).unwrap().len() - 1);
    // Verified before, without defect: --new and a --since longer than its age do not read it again.
    assert_eq!(check_figures(&ok_output(&["check", "--new", p(&copy)])), (4, 0));
    assert_eq!(check_figures(&ok_output(&["check", "--since", "1h", p(&copy)])), (4, 0));
    let named = |out: &Output| {
        let (defects, _, _) = check_lines(out);
        defects.iter().any(|d| d.contains("element 1.inc") && d.contains(p(&victim)))
    };
    let out = fails(&["check", "--since", "0s", p(&copy)], 1);
    assert!(named(&out), "check --since 0s missed the damaged {}: {}", victim.display(), text(&out));
    let out = fails(&["check", p(&copy)], 1);
    assert!(named(&out), "check missed the damaged {}: {}", victim.display(), text(&out));
    // An element last verified with a defect is never skipped.
    let out = fails(&["check", "--new", p(&copy)], 1);
    assert!(named(&out), "check --new skipped an element that failed its last check: {}", text(&out));
    assert_eq!(check_figures(&out).0, 3, "{}", text(&out));
}

#[test]
fn a_damaged_or_hostile_verification_record_is_refused_without_harm() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    let record = copy.join("verified");
    let _ = std::fs::remove_file(&record);
    let everything = check_figures(&ok_output(&["check", p(&copy)])).1;
    assert_eq!(everything, data_bytes_of_set(&copy));
    let state_before = std::fs::read(copy.join("state")).unwrap();
    let damages: [(&str, &dyn Fn()); 4] = [
        ("a record of another set", &|| {
            let bytes = std::fs::read(&record).unwrap();
            let mut other: backset_format::Verification = backset_format::meta::decode(&bytes).unwrap();
            other.set_id = uuid::Uuid::new_v4();
            std::fs::write(&record, backset_format::meta::encode(&other).unwrap()).unwrap();
        }),
        ("a flipped byte", &|| flip_byte(&record, 60)),
        ("a link to the state", &|| {
            std::fs::remove_file(&record).unwrap();
            std::os::unix::fs::symlink(copy.join("state"), &record).unwrap();
        }),
        ("a truncated file", &|| {
            let bytes = std::fs::read(&record).unwrap();
            std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();
        }),
    ];
    for (what, damage) in damages {
        ok(&["check", p(&copy)]);
        damage();
        let out = ok_output(&["check", "--new", p(&copy)]);
        let (_, notes, _) = check_lines(&out);
        let refused = format!("the verification record {} is refused", p(&record));
        assert!(notes.iter().any(|n| n.contains(&refused)), "{what}: no note refusing the record: {}", text(&out));
        assert_eq!(check_figures(&out), (0, everything), "{what}: not every element was verified: {}", text(&out));
        // The set is as it was, and the record is a good one again.
        assert_eq!(std::fs::read(copy.join("state")).unwrap(), state_before, "{what}");
        assert!(std::fs::symlink_metadata(&record).unwrap().is_file(), "{what}: the record was not replaced");
        assert_eq!(check_figures(&ok_output(&["check", "--new", p(&copy)])), (4, 0), "{what}");
    }
}

#[test]
fn two_checks_at_once_leave_a_whole_verification_record() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    let _ = std::fs::remove_file(copy.join("verified"));
    for round in 0..3 {
        let children: Vec<std::process::Child> = (0..2)
            .map(|_| {
                support::command()
                    .args(["check", p(&copy)])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out));
        }
        let out = ok_output(&["check", "--new", p(&copy)]);
        let (_, notes, _) = check_lines(&out);
        assert!(notes.iter().all(|n| !n.contains("verification record")), "round {round}: {}", text(&out));
        assert_eq!(check_figures(&out), (4, 0), "round {round}: {}", text(&out));
        std::fs::remove_file(copy.join("verified")).unwrap();
    }
}

/// `backset args`, which must exit with `code`, parsed as one JSON document (stdout only).
fn json_of(args: &[&str], code: i32) -> serde_json::Value {
    let out = backset(args);
    assert_eq!(out.status.code(), Some(code), "backset {args:?}: {}", text(&out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("backset {args:?}: not one JSON document ({e}): {}", text(&out)))
}

/// `value` is an object with exactly the fields `fields` (the documented schema, docs/CLI.md "JSON output").
fn assert_fields(value: &serde_json::Value, fields: &[&str], what: &str) {
    let mut found: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    found.sort_unstable();
    let mut want = fields.to_vec();
    want.sort_unstable();
    assert_eq!(found, want, "{what}: {value}");
}

#[test]
fn every_offline_command_prints_json_with_the_documented_fields() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let listed = elements();

    // restore --report-backups --json: the elements the XML lists, in its order.
    let backups = json_of(&["restore", "--report-backups", "--json", p(&set())], 0);
    assert_fields(&backups, &["id", "database", "databaseId", "archiveId", "elements"], "report-backups");
    assert_eq!(backups["database"], "demo");
    let items = backups["elements"].as_array().unwrap();
    assert_eq!(items.len(), listed.len());
    for (item, (id, name, kind, first, last)) in items.iter().zip(&listed) {
        assert_fields(
            item,
            &["id", "name", "type", "status", "startDate", "endDate", "firstTxn", "lastTxn"],
            "report-backups element",
        );
        assert_eq!(
            (&item["id"], &item["name"], &item["type"], &item["firstTxn"], &item["lastTxn"]),
            (&json!(id), &json!(name), &json!(kind), &json!(first), &json!(last))
        );
        assert_eq!(item["status"], "completed");
    }

    // restore --report-timestamps --json: one object a line, the transactions the text lists.
    let text_ids: Vec<u64> = ok(&["restore", "--report-timestamps", p(&set())])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
        .collect();
    let lines = ok(&["restore", "--report-timestamps", "--all-journal", "--json", p(&set())]);
    let mut all = 0;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("gap").is_some() {
            assert_fields(&v, &["gap", "firstTxn", "lastTxn"], "report-timestamps gap");
        } else {
            assert_fields(&v, &["time", "txnId"], "report-timestamps line");
            assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
            all += 1;
        }
    }
    assert!(all >= text_ids.len(), "--all-journal lists {all} transactions, the restore points are {}", text_ids.len());
    let ids: Vec<u64> = ok(&["restore", "--report-timestamps", "--json", p(&set())])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["txnId"].as_u64())
        .collect();
    assert_eq!(ids, text_ids);

    // restore --json.
    let dest = tmp.path().join("restored");
    let restored = json_of(&["restore", "--restore-dir", p(&dest), "--json", p(&set())], 0);
    assert_fields(
        &restored,
        &[
            "set",
            "restoreDir",
            "targetTxn",
            "base",
            "baseId",
            "atoms",
            "atomBytes",
            "atomElements",
            "records",
            "journalBytes",
            "journalElements",
            "elapsedSeconds",
        ],
        "restore",
    );
    let latest = listed.iter().map(|e| e.4).max().unwrap();
    assert_eq!((&restored["targetTxn"], &restored["restoreDir"]), (&json!(latest), &json!(p(&dest))));
    assert_eq!(restored["atoms"].as_u64().unwrap(), std::fs::read_dir(dest.join("atoms")).unwrap().count() as u64);

    // check --json of a healthy set.
    let checked = json_of(&["check", "--json", p(&set())], 0);
    let check_fields = [
        "set",
        "ok",
        "metadataOnly",
        "select",
        "sinceSeconds",
        "elements",
        "verifiedBefore",
        "filesRead",
        "bytesRead",
        "defectsTotal",
        "defects",
        "notes",
        "restorable",
        "elapsedSeconds",
    ];
    assert_fields(&checked, &check_fields, "check");
    assert_eq!((&checked["ok"], &checked["elements"], &checked["defects"]), (&json!(true), &json!(4), &json!([])));
    assert_eq!(checked["bytesRead"].as_u64().unwrap(), data_bytes_of_set(&set()));
    assert_eq!(checked["restorable"].as_array().unwrap().last().unwrap()["lastTxn"], json!(latest));
    let since = json_of(&["check", "--since", "1h", "--json", p(&set())], 0);
    assert_eq!((&since["select"], &since["sinceSeconds"]), (&json!("since"), &json!(3600.0)));

    // archive info --json and archive check --json of the restored archive.
    let info_json = json_of(&["archive", "info", "--json", p(&dest)], 0);
    assert_eq!(info_json, info(&dest), "archive info prints the same JSON with or without --json");
    assert_fields(
        &info_json,
        &[
            "directory",
            "journalDirectory",
            "lastTxnId",
            "databaseId",
            "archiveId",
            "keys",
            "atoms",
            "recordsReplayed",
            "tornTail",
        ],
        "archive info",
    );
    let archive = json_of(&["archive", "check", "--json", p(&dest)], 0);
    assert_fields(
        &archive,
        &[
            "directory",
            "journalDirectory",
            "ok",
            "atoms",
            "segments",
            "records",
            "lastTxnId",
            "databaseId",
            "tornTail",
            "defects",
        ],
        "archive check",
    );
    assert_eq!(
        (&archive["ok"], &archive["lastTxnId"], &archive["atoms"]),
        (&json!(true), &json!(latest), &restored["atoms"])
    );

    // archive check --json of a damaged archive names the file.
    let victim = std::fs::read_dir(dest.join("atoms")).unwrap().next().unwrap().unwrap().path();
    flip_byte(&victim, std::fs::metadata(&victim).unwrap().len() - 1);
    let damaged = json_of(&["archive", "check", "--json", p(&dest)], 1);
    let defects = damaged["defects"].as_array().unwrap();
    assert_eq!(defects.len(), 1, "{damaged}");
    assert_fields(&defects[0], &["file", "kind", "message"], "archive check defect");
    assert_eq!((&defects[0]["file"], &defects[0]["kind"]), (&json!(p(&victim)), &json!("hash")));
}

#[test]
fn check_json_lists_every_defect_of_a_defect_ridden_set() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = copy_of_set(tmp.path());
    let first = |dir: &Path| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.remove(0)
    };
    // A damaged atom file, a missing journal slice, a file that does not belong, a damaged control file.
    let atom = first(&copy.join("1.inc/data/atoms"));
    flip_byte(&atom, std::fs::metadata(&atom).unwrap().len() - 1);
    let slice = first(&copy.join("2.jnl/data/journal"));
    std::fs::remove_file(&slice).unwrap();
    let extra = copy.join("full/data/journal/not-a-slice");
    std::fs::write(&extra, b"x").unwrap();
    let catalog = copy.join("1.jnl/control/catalog");
    flip_byte(&catalog, 60);
    let expected = [
        ("1.inc", &atom, "hash"),
        ("2.jnl", &slice, "missing_file"),
        ("full", &extra, "extra_file"),
        ("1.jnl", &catalog, "metadata"),
    ];

    let text_out = fails(&["check", p(&copy)], 1);
    let (text_defects, _, _) = check_lines(&text_out);
    let report = json_of(&["check", "--json", p(&copy)], 1);
    assert_eq!(report["ok"], false);
    let defects = report["defects"].as_array().unwrap();
    for d in defects {
        assert_fields(d, &["element", "file", "kind", "message"], "check defect");
    }
    for (element, file, kind) in expected {
        assert!(
            defects.iter().any(|d| d["element"] == element && d["file"] == p(file) && d["kind"] == kind),
            "no {kind} defect of element {element} naming {}: {report:#}",
            file.display()
        );
    }
    // Every defect the text lists is in the JSON, and nothing else.
    assert_eq!(report["defectsTotal"], json!(text_defects.len()), "{report:#}");
    let as_text: Vec<String> = defects
        .iter()
        .map(|d| {
            let mut line = "defect: ".to_string();
            if let Some(e) = d["element"].as_str() {
                line += &format!("element {e}: ");
            }
            if let Some(f) = d["file"].as_str() {
                line += &format!("{f}: ");
            }
            line + d["message"].as_str().unwrap()
        })
        .collect();
    assert_eq!(as_text, text_defects, "check --json and check list different defects");
}
