//! End to end: `backset bench copy` and `backset bench disk` as the real binary on the real disk.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{command, stderr, stdout};

/// `backset args...` (paths among them): whether it succeeded, its stdout and its stderr.
fn backset(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = command().args(args).output().unwrap();
    (out.status.success(), stdout(&out), stderr(&out))
}

/// The one JSON object a `--json` run printed.
fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

/// A top-level field of that object, as JSON text (`3`, `"portable"`, `null`).
fn field(out: &str, name: &str) -> String {
    json(out).get(name).unwrap_or_else(|| panic!("no {name} in {out}")).to_string()
}

/// A scratch directory on the real disk with a source tree `src/` of `files` (relative path, contents).
fn source_tree(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, bytes) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    (dir, src)
}

#[test]
fn bench_copy_copies_a_tree_and_equal_trees_give_equal_manifests() {
    let (dir, src) = source_tree([
        ("one".to_string(), vec![1u8; 3 << 20]),
        ("a/b/two".to_string(), b"two".to_vec()),
        ("a/empty".to_string(), Vec::new()),
    ]);
    let (ok, first, err) = backset(&[
        "bench".as_ref(),
        "copy".as_ref(),
        src.as_os_str(),
        dir.path().join("c1").as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&first, "files"), "3");
    assert_eq!(field(&first, "bytes"), ((3 << 20) + 3).to_string());
    assert_eq!(std::fs::read(dir.path().join("c1/a/b/two")).unwrap(), b"two");
    assert_eq!(std::fs::read(dir.path().join("c1/one")).unwrap(), vec![1u8; 3 << 20]);
    // Copying the copy gives the same manifest hash.
    let (ok, second, err) = backset(&[
        "bench".as_ref(),
        "copy".as_ref(),
        dir.path().join("c1").as_os_str(),
        dir.path().join("c2").as_os_str(),
        "--json".as_ref(),
        "--io".as_ref(),
        "portable".as_ref(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&second, "backend"), "\"portable\"");
    assert_eq!(field(&first, "manifest_blake3"), field(&second, "manifest_blake3"));
    // An existing target is refused, and a zero rate is a usage error.
    let (ok, _, err) =
        backset(&["bench".as_ref(), "copy".as_ref(), src.as_os_str(), dir.path().join("c1").as_os_str()]);
    assert!(!ok && err.contains("exists"), "{err}");
    let out = support::command().args(["bench", "copy", "x", "y", "--max-rate", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_copy_of_many_files_keeps_within_a_low_descriptor_limit() {
    // 64 descriptors: the copier may hold an eighth of them, so 4 files at a time; holding 64 or 256 files (two
    // descriptors each) fails with "Too many open files".
    let (dir, src) = source_tree((0..600u32).map(|i| (format!("{i:04}"), i.to_le_bytes().repeat(1 + i as usize))));
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 64 && ulimit -Hn 64 && exec "$0" bench copy "$1" "$2" --json"#)
        .arg(env!("CARGO_BIN_EXE_backset"))
        .arg(&src)
        .arg(dir.path().join("copy"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(field(&stdout, "files"), "600");
    for i in [0u32, 299, 599] {
        let name = format!("{i:04}");
        assert_eq!(
            std::fs::read(dir.path().join("copy").join(&name)).unwrap(),
            std::fs::read(src.join(&name)).unwrap()
        );
    }
}

#[test]
fn bench_copy_with_several_jobs_on_one_budget_copies_every_file_once() {
    let (dir, src) = source_tree((0..7u8).map(|i| (format!("f{i}"), vec![i; 300_000 + usize::from(i)])));
    let run = |target: &str, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["bench".as_ref(), "copy".as_ref(), src.as_os_str(), "--json".as_ref()];
        let target = dir.path().join(target);
        args.push(target.as_os_str());
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let (ok, out, err) = backset(&args);
        assert!(ok, "{err}");
        out
    };
    let one = run("one", &[]);
    // 2.1 MB at 1 MB/s: two whole one-second windows at least, read by three jobs sharing the budget.
    let three = run("three", &["--jobs", "3", "--max-rate", "1"]);
    assert_eq!(field(&three, "jobs"), "3");
    assert_eq!(field(&three, "files"), "7");
    assert_eq!(field(&one, "manifest_blake3"), field(&three, "manifest_blake3"), "same files, same hashes");
    for i in 0..7u8 {
        assert_eq!(std::fs::read(dir.path().join(format!("three/f{i}"))).unwrap(), vec![i; 300_000 + usize::from(i)]);
    }
    assert!(field(&three, "windows").parse::<u32>().unwrap() >= 2, "{three}");
    let per_window = json(&three)["window_mb_per_sec"].as_array().map(Vec::len);
    assert_eq!(per_window.map(|n| n.to_string()), Some(field(&three, "windows")), "one rate per window: {three}");
    assert_eq!(field(&three, "flushes"), "0", "2.1 MB written is less than FLUSH_AFTER_BYTES: {three}");
    assert!(field(&three, "seconds").parse::<f64>().unwrap() >= 2.0, "the budget is shared: {three}");
    // Together the jobs read at the budget's rate, never above it (the limiters start empty; 2% for the polling of
    // the last byte read); below it only by stalls of a busy test machine. The reading time ends with the last byte
    // read, before the targets are made durable.
    let reading: f64 = field(&three, "reading_mb_per_sec").parse().unwrap();
    assert!((0.75..=1.02).contains(&reading), "1 MB/s while reading: {three}");
    assert!(field(&three, "reading_seconds").parse::<f64>().unwrap() <= field(&three, "seconds").parse().unwrap());
    assert_eq!(field(&one, "window_worst_error_pct"), "null", "no rate, no error: {one}");
    let zero_jobs = support::command().args(["bench", "copy", "a", "b", "--jobs", "0"]).output();
    assert_eq!(zero_jobs.unwrap().status.code(), Some(2), "zero jobs is a usage error");
}

#[test]
fn bench_disk_measures_and_cleans_up() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "disk".as_ref(),
        dir.path().as_os_str(),
        "--size-mib".as_ref(),
        "8".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&out, "bytes"), (8u64 << 20).to_string());
    for f in ["write_mb_per_sec", "read_mb_per_sec", "copy_mb_per_sec"] {
        assert!(field(&out, f).parse::<f64>().unwrap() > 0.0, "{f} in {out}");
    }
    assert!(field(&out, "suggested_max_rate_mb").parse::<u64>().unwrap() >= 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the scratch directory is removed");
}

#[test]
fn bench_versus_cp_times_both_sides_alternately_and_leaves_its_scratch_empty() {
    let (dir, src) =
        source_tree([("big".to_string(), vec![7u8; (2 << 20) + 5]), ("d/small".to_string(), b"small".to_vec())]);
    let scratch = dir.path().join("scratch");
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "versus-cp".as_ref(),
        src.as_os_str(),
        scratch.as_os_str(),
        "--runs".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&out, "bytes"), ((2 << 20) + 5 + 5).to_string());
    let times =
        |name: &str| -> Vec<f64> { json(&out)[name].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect() };
    let (ours, theirs) = (times("backset_seconds"), times("cp_seconds"));
    assert_eq!((ours.len(), theirs.len()), (3, 3), "{out}");
    let best: f64 = field(&out, "backset_best").parse().unwrap();
    assert_eq!(best, ours.iter().copied().fold(f64::INFINITY, f64::min));
    let wins: usize = field(&out, "backset_wins").parse().unwrap();
    assert_eq!(wins, ours.iter().zip(&theirs).filter(|(a, b)| a < b).count());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "both copies and the run directory are removed");
    assert_eq!(std::fs::read(src.join("d/small")).unwrap(), b"small", "the source is untouched");
}

#[test]
fn bench_foreground_measures_commits_in_each_phase_and_cleans_up() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "foreground".as_ref(),
        dir.path().as_os_str(),
        "--size-mib".as_ref(),
        "16".as_ref(),
        "--seconds".as_ref(),
        "1".as_ref(),
        "--commit-rate".as_ref(),
        "100".as_ref(),
        "--max-rate".as_ref(),
        "5".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    for phase in ["before", "hot_copy", "after"] {
        let p = json(&out)[phase].clone();
        let commits = p["commits"].as_u64().unwrap_or_else(|| panic!("no {phase} commits in {out}"));
        // Every phase has commits, and no more than its schedule allows: 100 commits/s, missed slots skipped, for
        // the one second of `before` (the other phases also take the hot copy's start and cancel).
        assert!(commits > 0, "{phase}: no commits in {out}");
        if phase == "before" {
            assert!(commits <= 105, "{phase}: {commits} commits in one second at 100/s: {out}");
        }
        let (p99, max) = (p["p99_ms"].as_f64().unwrap(), p["max_ms"].as_f64().unwrap());
        assert!(p99 > 0.0 && p99 <= max, "{phase}: p99 {p99} max {max}");
    }
    // 16 MiB at 5 MB/s takes over 3 s: the copy was still running when its one-second phase ended.
    assert_eq!(field(&out, "copy_completed_seconds"), "null", "{out}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the database and the set are removed");
}
