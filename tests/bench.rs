//! End to end: `backset bench copy`, `disk`, `versus-cp`, `foreground`, `incremental`, `restore-set` and `metrics` as the real
//! binary on the real disk, and the plots of `bench copy|foreground --plot`.

mod support;

use std::path::{Path, PathBuf};
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

/// `backset bench versus-cp SET SCRATCH --restore --runs RUNS --json`: success, stdout, stderr.
fn versus_cp_restore(set: &Path, scratch: &Path, runs: u32) -> (bool, String, String) {
    let runs = runs.to_string();
    backset(&[
        "bench".as_ref(),
        "versus-cp".as_ref(),
        set.as_os_str(),
        scratch.as_os_str(),
        "--restore".as_ref(),
        "--runs".as_ref(),
        runs.as_ref(),
        "--json".as_ref(),
    ])
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
    let (ours, theirs) = (times("backset_seconds"), times("baseline_seconds"));
    assert_eq!(field(&out, "baseline"), "\"cp\"");
    assert_eq!((ours.len(), theirs.len()), (3, 3), "{out}");
    let best: f64 = field(&out, "backset_best").parse().unwrap();
    assert_eq!(best, ours.iter().copied().fold(f64::INFINITY, f64::min));
    let wins: usize = field(&out, "backset_wins").parse().unwrap();
    assert_eq!(wins, ours.iter().zip(&theirs).filter(|(a, b)| a < b).count());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "both copies and the run directory are removed");
    assert_eq!(std::fs::read(src.join("d/small")).unwrap(), b"small", "the source is untouched");
}

#[test]
fn bench_versus_cp_with_xcp_absent_says_how_to_install_it() {
    let (dir, src) = source_tree([("f".to_string(), b"x".to_vec())]);
    // A PATH with `sync` (which every run calls) and no `xcp`.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sync = ["/usr/bin/sync", "/bin/sync"].into_iter().find(|p| Path::new(p).exists()).expect("sync is installed");
    std::os::unix::fs::symlink(sync, bin.join("sync")).unwrap();
    let out = command()
        .args(["bench", "versus-cp", "--baseline", "xcp", "--runs", "1"])
        .arg(&src)
        .arg(dir.path().join("scratch"))
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cargo install xcp"), "{}", stderr(&out));
}

#[test]
fn bench_versus_cp_restore_restores_the_set_each_run_and_leaves_its_scratch_empty() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let set = dir.path().join("set");
    {
        let srv = support::Server::start(&dir.path().join("data"), &[]);
        srv.load(200, 2000);
        srv.hot_copy("full", &set);
        srv.load(100, 2000);
        srv.hot_copy("journal", &set);
    }
    // What a restore writes, measured on a restore of its own: the sizes of the files in atoms/ and journal/.
    let restored = dir.path().join("restored");
    let out = support::backset(&["restore", "--restore-dir", &support::s(&restored), &support::s(&set)]);
    assert!(out.status.success(), "{}", support::text(&out));
    let written: u64 = ["atoms", "journal"]
        .iter()
        .flat_map(|d| std::fs::read_dir(restored.join(d)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let scratch = dir.path().join("scratch");
    let (ok, out, err) = versus_cp_restore(&set, &scratch, 2);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["restore"], true, "{out}");
    assert_eq!(field(&out, "bytes"), written.to_string(), "{out}");
    assert_eq!(json(&out)["backset_seconds"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "the restores and the copies are removed");
    // Not a backup set: the restore's own error, exit 1.
    let (ok, _, err) = backset(&[
        "bench".as_ref(),
        "versus-cp".as_ref(),
        restored.as_os_str(),
        scratch.as_os_str(),
        "--restore".as_ref(),
    ]);
    assert!(!ok && err.contains("backup set"), "{err}");
}

#[test]
fn bench_foreground_measures_commits_in_each_phase_and_cleans_up() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let plot_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let plot = plot_dir.path().join("fg.svg");
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
        "--plot".as_ref(),
        plot.as_os_str(),
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

    // The plot: above, the hot copy's MB/s per second against --max-rate, from its start; below, the commits'
    // p50 and p99 per second from the committers' start. 16 MiB at 5 MB/s outlasts the one-second phase: at least
    // one whole window of the copy.
    let svg = Plot::read(&plot);
    let (rate, latency) = (svg.panel(0.0, 400.0), svg.panel(400.0, 800.0));
    rate.assert_limit("--max-rate 5 MB/s", 5.0);
    let copy_windows = numbers(&out, "copy_window_mb_per_sec");
    assert!(!copy_windows.is_empty(), "{out}");
    let began: f64 = field(&out, "copy_began_seconds").parse().unwrap();
    rate.assert_points("MB/s of each whole 1 s window", began + 1.0, &copy_windows);
    let commit_windows = json(&out)["commit_windows"].as_array().unwrap().clone();
    let commits: u64 = commit_windows.iter().map(|w| w["commits"].as_u64().unwrap()).sum();
    let phases: u64 = ["before", "hot_copy", "after"].iter().map(|p| json(&out)[p]["commits"].as_u64().unwrap()).sum();
    assert_eq!(commits, phases, "every commit is in one window: {out}");
    for (label, q) in [("p50", "p50_ms"), ("p99", "p99_ms")] {
        // A second without a commit (a stall of the machine) has no value (`null`) and no point.
        let values: Vec<f64> = commit_windows.iter().map(|w| w[q].as_f64().unwrap_or(f64::NAN)).collect();
        latency.assert_points(&format!("{label} of the commits begun in each second"), 1.0, &values);
    }
}

/// A plot `--plot` wrote, read as a person reads it: parsed as XML (it must be well-formed, with `<svg>` at its
/// root), its axes read from their tick labels, its series found by their legend entries.
struct Plot {
    /// Every `<text>`: text-anchor, x, y, content.
    texts: Vec<(String, f64, f64, String)>,
    /// Every `<polyline>`: stroke and points.
    lines: Vec<(String, Vec<(f64, f64)>)>,
    /// Every `<circle>`: stroke, cx, cy.
    circles: Vec<(String, f64, f64)>,
}

impl Plot {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read the plot {}: {e}", path.display()));
        let doc =
            roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not well-formed: {e}", path.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{}", path.display());
        assert_eq!(doc.root_element().tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
        let num = |n: roxmltree::Node, a: &str| -> f64 {
            n.attribute(a).unwrap_or_else(|| panic!("no {a} in {n:?}")).parse().unwrap()
        };
        let (mut texts, mut lines, mut circles) = (Vec::new(), Vec::new(), Vec::new());
        for n in doc.descendants().filter(roxmltree::Node::is_element) {
            match n.tag_name().name() {
                "text" => texts.push((
                    n.attribute("text-anchor").unwrap_or("").to_string(),
                    num(n, "x"),
                    num(n, "y"),
                    n.text().unwrap_or("").trim().to_string(),
                )),
                "polyline" => {
                    let points = n.attribute("points").unwrap().split_whitespace().map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    });
                    lines.push((n.attribute("stroke").unwrap_or("").to_string(), points.collect()));
                }
                "circle" => circles.push((n.attribute("stroke").unwrap_or("").to_string(), num(n, "cx"), num(n, "cy"))),
                _ => {}
            }
        }
        Self { texts, lines, circles }
    }

    /// The part of the plot between `top` and `bottom` pixels (one panel of a stacked plot).
    fn panel(&self, top: f64, bottom: f64) -> Self {
        let inside = |y: f64| (top..bottom).contains(&y);
        Self {
            texts: self.texts.iter().filter(|t| inside(t.2)).cloned().collect(),
            lines: self.lines.iter().filter(|l| l.1.iter().all(|p| inside(p.1))).cloned().collect(),
            circles: self.circles.iter().filter(|c| inside(c.2)).cloned().collect(),
        }
    }

    /// The axis whose tick labels have this text-anchor (`end`: the y axis, at their y; `middle`: the x axis, at
    /// their x): the value at a pixel, and how much value two pixels are (plotters draws on whole pixels).
    fn axis(&self, anchor: &str) -> (impl Fn(f64) -> f64, f64) {
        let ticks: Vec<(f64, f64)> = self
            .texts
            .iter()
            .filter(|t| t.0 == anchor)
            .filter_map(|t| t.3.parse::<f64>().ok().map(|v| (if anchor == "end" { t.2 } else { t.1 }, v)))
            .collect();
        assert!(ticks.len() >= 2, "fewer than two {anchor} tick labels: {:?}", self.texts);
        let ((p0, v0), (p1, v1)) = (ticks[0], ticks[ticks.len() - 1]);
        let per_pixel = (v1 - v0) / (p1 - p0);
        (move |p: f64| v0 + (p - p0) * per_pixel, 2.0 * per_pixel.abs())
    }

    /// The stroke of the series whose legend entry reads `label`: the short line drawn left of that text.
    fn stroke(&self, label: &str) -> String {
        let text = self.texts.iter().find(|t| t.3 == label).unwrap_or_else(|| panic!("no legend {label:?}"));
        let swatch = self
            .lines
            .iter()
            .filter(|l| l.1.len() == 2 && l.1[0].1 == l.1[1].1 && l.1[1].0 <= text.1 && text.1 - l.1[1].0 <= 20.0)
            .min_by(|a, b| (a.1[0].1 - text.2).abs().total_cmp(&(b.1[0].1 - text.2).abs()))
            .unwrap_or_else(|| panic!("no legend line beside {label:?}"));
        swatch.0.clone()
    }

    /// The series drawn with `stroke` (its legend line left out).
    fn series(&self, stroke: &str) -> Vec<&Vec<(f64, f64)>> {
        self.lines
            .iter()
            .filter(|l| l.0 == stroke && (l.1.len() > 2 || l.1[1].0 - l.1[0].0 > 20.0))
            .map(|l| &l.1)
            .collect()
    }

    /// The points (circles) drawn with `stroke`, left to right.
    fn points(&self, stroke: &str) -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = self.circles.iter().filter(|c| c.0 == stroke).map(|c| (c.1, c.2)).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    }

    /// Asserts that the line labelled `label` is drawn level at `value` on the y axis, across the whole x axis.
    fn assert_limit(&self, label: &str, value: f64) {
        let (y_at, y_tol) = self.axis("end");
        let (x_at, _) = self.axis("middle");
        let limit = self.series(&self.stroke(label));
        assert_eq!(limit.len(), 1, "one line labelled {label:?}: {limit:?}");
        let line = limit[0];
        assert_eq!(line.len(), 2, "a straight line: {line:?}");
        assert_eq!(line[0].1, line[1].1, "level: {line:?}");
        assert!((y_at(line[0].1) - value).abs() <= y_tol, "{label:?} drawn at {}, not {value}", y_at(line[0].1));
        assert!(x_at(line[0].0).abs() <= 0.05, "{label:?} starts at 0 s: {line:?}");
    }

    /// Asserts that the points of the series labelled `label` are `values`, one a second, the first at `first` s
    /// (a window without a value, NaN, has no point).
    fn assert_points(&self, label: &str, first: f64, values: &[f64]) {
        let (y_at, y_tol) = self.axis("end");
        let (x_at, x_tol) = self.axis("middle");
        let points = self.points(&self.stroke(label));
        let values: Vec<(usize, f64)> = values.iter().copied().enumerate().filter(|(_, v)| !v.is_nan()).collect();
        assert_eq!(points.len(), values.len(), "{label:?}: one point per window: {points:?} for {values:?}");
        for ((x, y), (i, v)) in points.iter().zip(&values) {
            let second = first + *i as f64;
            assert!((x_at(*x) - second).abs() <= x_tol, "{label:?} point {i} at {} s, not {second} s", x_at(*x));
            assert!((y_at(*y) - v).abs() <= y_tol, "{label:?} point {i} at {}, not {v}", y_at(*y));
        }
    }
}

/// `field` of a JSON object: an array of numbers.
fn numbers(out: &str, name: &str) -> Vec<f64> {
    let v = json(out);
    v[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} array in {out}"))
        .iter()
        .map(|n| n.as_f64().unwrap())
        .collect()
}

#[test]
fn bench_copy_plot_draws_every_window_against_the_max_rate() {
    // 2.5 MB at 1 MB/s: two whole one-second windows.
    let (dir, src) = source_tree([("f".to_string(), vec![5u8; 2_500_000])]);
    let plot = dir.path().join("rate.svg");
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "copy".as_ref(),
        src.as_os_str(),
        dir.path().join("copy").as_os_str(),
        "--max-rate".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let windows = numbers(&out, "window_mb_per_sec");
    assert!(windows.len() >= 2, "2.5 MB at 1 MB/s: {out}");
    let svg = Plot::read(&plot);
    svg.assert_limit("--max-rate 1 MB/s", 1.0);
    // The points are the windows the JSON lists, each at the end of its second.
    svg.assert_points("MB/s of each whole 1 s window", 1.0, &windows);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "src, copy and the plot, no temporary file: {left:?}");

    // Text output names the plot; an existing plot is replaced.
    let (ok, text, err) = backset(&[
        "bench".as_ref(),
        "copy".as_ref(),
        src.as_os_str(),
        dir.path().join("copy2").as_os_str(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(text.contains(&format!("plot             {}", plot.display())), "{text}");
    let svg = Plot::read(&plot);
    assert!(svg.texts.iter().all(|t| !t.3.contains("--max-rate")), "no --max-rate, no limit line: {:?}", svg.texts);
}

#[test]
fn bench_plot_to_a_path_that_cannot_be_written_fails_before_the_bench_runs() {
    let (dir, src) = source_tree([("f".to_string(), vec![1u8; 1000])]);
    let target = dir.path().join("copy");
    let refused = |plot: &Path, why: &str| {
        let out = command().args(["bench", "copy"]).arg(&src).arg(&target).arg("--plot").arg(plot).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("--plot {}", plot.display())) && err.contains(why), "{why}: {err}");
        assert!(!target.exists(), "the copy did not run: {err}");
    };
    refused(&dir.path().join("no/such/dir/rate.svg"), "does not exist");
    refused(dir.path(), "is a directory");
    refused(&src.join("f/rate.svg"), "is not a directory");
    // A directory without write permission: root writes there all the same, so this part needs another user.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    if std::fs::write(locked.join("probe"), b"").is_ok() {
        println!("not checked: a directory of mode 0500 is writable by this user (root); the other paths are");
    } else {
        refused(&locked.join("rate.svg"), "cannot create a file in");
    }
    // A bench that fails after the check leaves no file behind.
    let out = command()
        .args(["bench", "copy"])
        .arg(dir.path().join("no-source"))
        .arg(&target)
        .arg("--plot")
        .arg(dir.path().join("rate.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "src and locked only: {left:?}");
}

#[test]
fn plot_on_a_bench_that_cannot_plot_is_a_usage_error() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let plot = dir.path().join("x.svg");
    for bench in [&["disk", "d"][..], &["versus-cp", "a", "b"]] {
        let out = command().arg("bench").args(bench).arg("--plot").arg(&plot).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "bench {bench:?} --plot: {}", stderr(&out));
        assert!(stderr(&out).contains("--plot"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written or measured");
}

#[test]
fn bench_incremental_copies_and_checks_the_changed_atoms_only_and_cleans_up() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "incremental".as_ref(),
        dir.path().as_os_str(),
        "--size-mib".as_ref(),
        "2".as_ref(),
        "--atoms".as_ref(),
        "1000".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    let n = |path: &[&str]| path.iter().fold(&v, |v, k| &v[*k]).as_u64().unwrap_or_else(|| panic!("{path:?}: {out}"));
    // The atoms of the bulk-loaded keys (`bulk-<n, 12 digits>`) by the store's documented routing, and those the
    // bench changes at 1%: every 100th atom id.
    let atoms: std::collections::BTreeSet<u64> = (0..n(&["keys"]))
        .map(|k| {
            let h = blake3::hash(format!("bulk-{k:012}").as_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) % 1000
        })
        .collect();
    let changed = atoms.iter().filter(|a| *a % 100 == 0).count() as u64;
    assert!(changed > 0, "{out}");
    assert_eq!(n(&["full", "files"]), atoms.len() as u64, "the full copies every atom: {out}");
    assert_eq!(n(&["incremental", "files"]), changed, "the incremental copies the changed atoms: {out}");
    assert_eq!(n(&["unchanged_incremental", "files"]), 0, "{out}");
    assert_eq!(n(&["unchanged_incremental", "bytes"]), 0, "{out}");
    assert!(n(&["incremental", "bytes"]) * 100 <= n(&["full", "bytes"]) * 3, "{out}");
    // The check after the full reads everything the full copied; `check --new` after the incremental reads only what
    // the incremental copied.
    for (check, copy) in [("check", "full"), ("check_new", "incremental")] {
        for what in ["files", "bytes"] {
            assert_eq!(n(&[check, what]), n(&[copy, what]), "{check} {what}: {out}");
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the database and the set are removed");
}

#[test]
fn bench_restore_set_keeps_a_full_incrementals_and_journal_elements_that_versus_cp_restores() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let set = dir.path().join("set");
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "restore-set".as_ref(),
        set.as_os_str(),
        "--size-mib".as_ref(),
        "2".as_ref(),
        "--atoms".as_ref(),
        "200".as_ref(),
        "--rounds".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    let elements = v["elements"].as_array().unwrap_or_else(|| panic!("no elements: {out}"));
    let kinds: Vec<_> =
        elements.iter().map(|e| (e["kind"].as_str().unwrap(), e["element"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("full", "full"),
            ("journal", "1.jnl"),
            ("incremental", "1.inc"),
            ("journal", "2.jnl"),
            ("incremental", "2.inc"),
            ("journal", "3.jnl")
        ],
        "{out}"
    );
    // The set holds those elements (and the set's own files); the database beside it is removed.
    let mut dirs: Vec<_> = std::fs::read_dir(&set)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir() && e.file_name() != "tmp")
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["1.inc", "1.jnl", "2.inc", "2.jnl", "3.jnl", "full"], "{out}");
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["set"], "only the set stays");
    // Each round changes atoms, one key (one transaction) each; the incrementals copy just those.
    for e in elements {
        match e["kind"].as_str().unwrap() {
            "journal" => assert!(e["changed_atoms"].as_u64().unwrap() > 0, "{out}"),
            "incremental" => assert!(e["files"].as_u64().unwrap() > 0, "{out}"),
            _ => assert_eq!(e["files"], v["atom_files"], "the full copies every atom: {out}"),
        }
    }
    // The latest restore needs the last incremental and the records of the last journal element past it: one per
    // key the last round changed.
    let restored = dir.path().join("restored");
    let out_r = support::backset(&["restore", "--restore-dir", &support::s(&restored), &support::s(&set)]);
    assert!(out_r.status.success(), "{}", support::text(&out_r));
    let last = elements.last().unwrap()["changed_atoms"].as_u64().unwrap();
    let said = support::text(&out_r);
    assert!(said.contains("from full + 1.inc + 2.inc,"), "{said}");
    assert!(said.contains(&format!("{last} journal records from 2.inc + 3.jnl")), "{said}");
    std::fs::remove_dir_all(&restored).unwrap();
    let scratch = dir.path().join("scratch");
    let (ok, out, err) = versus_cp_restore(&set, &scratch, 1);
    assert!(ok, "{err}");
    for side in ["backset_seconds", "baseline_seconds"] {
        let secs = json(&out)[side].as_array().unwrap_or_else(|| panic!("no {side}: {out}")).clone();
        assert!(secs.len() == 1 && secs[0].as_f64().unwrap() > 0.0, "{side}: {out}");
    }
    // A set that is there already is refused, and left as it was.
    let (ok, _, err) =
        backset(&["bench".as_ref(), "restore-set".as_ref(), set.as_os_str(), "--size-mib".as_ref(), "1".as_ref()]);
    assert!(!ok && err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the set and the scratch directory only");
}

#[test]
fn bench_metrics_scrapes_during_every_scraped_hot_copy_and_cleans_up() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ok, out, err) = backset(&[
        "bench".as_ref(),
        "metrics".as_ref(),
        dir.path().as_os_str(),
        "--size-mib".as_ref(),
        "2".as_ref(),
        "--runs".as_ref(),
        "2".as_ref(),
        "--scrape-ms".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    for side in ["with_scrapes_seconds", "without_seconds"] {
        let runs = v[side].as_array().unwrap_or_else(|| panic!("{side}: {out}"));
        assert_eq!(runs.len(), 2, "{side}: {out}");
        assert!(runs.iter().all(|s| s.as_f64().is_some_and(|s| s > 0.0)), "{side}: {out}");
    }
    let scrapes = v["scrapes"].as_array().unwrap();
    assert!(scrapes.len() == 2 && scrapes.iter().all(|n| n.as_u64().is_some_and(|n| n > 0)), "{out}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the database and the sets are removed");

    let out = command().args(["bench", "metrics", "--runs", "0"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--runs 0 is a usage error: {}", stderr(&out));
}

#[test]
fn bench_s3_refuses_bad_arguments_and_says_how_to_install_a_missing_tool() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = dir.path().join("d");
    let run = |args: &[&str]| command().args(["bench", "s3"]).arg(&d).args(args).output().unwrap();
    for (args, names) in [
        (&["--runs", "0"][..], "--runs"),
        (&["--rates", "0"], "--rates"),
        (&["--rates", "20,x"], "--rates"),
        (&["--rates", "100001"], "--rates"),
        (&["--small-files", "-1"], "--small-files"),
        (&["--size-mib", "-1"], "--size-mib"),
        (&["--measures", "upload,speed"], "--measures"),
        // Nothing to upload or restore is refused before any tool is looked for.
        (&["--size-mib", "0", "--small-files", "0", "--measures", "upload,throttle"], "leave no archive to upload"),
        (&["--throttle-seconds", "0"], "--throttle-seconds"),
        (&["--bucket", "b"], "--endpoint"),
        (&["--endpoint", "http://127.0.0.1:1", "--s3s-fs", "/x"], "--s3s-fs"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "bench s3 {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "bench s3 {args:?}: {}", stderr(&out));
    }
    // The highest rate is taken (the run then fails for want of rclone, not as a usage error).
    let out = run(&["--rates", "100000", "--rclone", "/nonexistent/rclone"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rclone not found at /nonexistent/rclone"), "{}", stderr(&out));
    assert!(stderr(&out).contains("apt-get install rclone"), "{}", stderr(&out));
    // rclone is only looked for at this point: any file will do.
    let out = run(&["--rclone", env!("CARGO_BIN_EXE_backset"), "--s3s-fs", "/nonexistent/s3s-fs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cargo install s3s-fs --features binary --version 0.14.1"), "{}", stderr(&out));
    let out = command().args(["bench", "s3"]).arg(&d).env("PATH", "/nonexistent").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rclone is not installed (not on PATH)"), "{}", stderr(&out));
    assert!(!d.exists(), "nothing was created or measured");
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Whether `rclone` and `s3s-fs` are on PATH; says why not (the test is then skipped).
fn s3_bench_tools() -> bool {
    let missing: Vec<&str> = ["rclone", "s3s-fs"].into_iter().filter(|t| on_path(t).is_none()).collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not on PATH (apt-get install rclone; cargo install s3s-fs --features binary --version \
             0.14.1)",
            missing.join(" and ")
        );
    }
    missing.is_empty()
}

/// `backset bench s3 DIR ARGS --json`: (success, stdout, stderr).
fn bench_s3(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["bench".as_ref(), "s3".as_ref(), dir.as_os_str(), "--json".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    backset(&all)
}

#[test]
fn bench_s3_times_both_sides_against_s3s_fs_and_cleans_up() {
    if !s3_bench_tools() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The throttle at 2 MB/s over 2 s needs more than the 2 MiB archive: the bench loads one of its own.
    let (ok, out, err) = bench_s3(
        dir.path(),
        &["--size-mib", "2", "--small-files", "20", "--runs", "2", "--rates", "2", "--throttle-seconds", "2"],
    );
    assert!(ok, "{err}");
    let v = json(&out);
    for archive in ["large", "small"] {
        let a = &v[archive];
        assert!(a["files"].as_u64().unwrap() > 0 && a["bytes"].as_u64().unwrap() > 0, "{archive}: {out}");
        assert!(a["hot_copy_bytes"].as_u64().unwrap() > 0, "{archive}: {out}");
        for side in ["upload", "restore"] {
            for key in ["backset_seconds", "rclone_seconds"] {
                let secs = a[side][key].as_array().unwrap_or_else(|| panic!("{archive} {side} {key}: {out}"));
                assert_eq!(secs.len(), 2, "{archive} {side} {key}: two runs: {out}");
                assert!(secs.iter().all(|s| s.as_f64().unwrap() > 0.0), "{archive} {side} {key}: {out}");
            }
            assert!(a[side]["speedup_median"].as_f64().unwrap() > 0.0, "{archive} {side}: {out}");
            for run in 1..=2 {
                // Each run's figures are on stderr as soon as it ends.
                let line = format!("bench s3: {archive} archive: {side} run {run}/2: backset ");
                assert!(err.contains(&line), "no {line:?} in {err}");
            }
        }
        for what in ["hot_copy_memory", "restore_memory"] {
            let peak = a[what]["peak_rss_bytes"].as_u64().unwrap_or_else(|| panic!("{archive} {what}: {out}"));
            assert!(peak >= a[what]["rss_before_bytes"].as_u64().unwrap(), "{archive} {what}: {out}");
        }
        // rclone's own peak resident set: a running Go program holds well over 1 MiB.
        for what in ["rclone_upload_peak_rss_bytes", "rclone_download_peak_rss_bytes"] {
            let peak = a[what].as_u64().unwrap_or_else(|| panic!("{archive} {what}: {out}"));
            assert!(peak > 1 << 20, "{archive} {what}: {out}");
        }
    }
    // The large archive is a few large files (128 MiB atoms: one for 2 MiB, with the archive's other files).
    assert!(v["large"]["files"].as_u64().unwrap() <= 5, "{out}");
    // 20 atom buckets of about 16 KiB: at most one file each (and the archive's other files).
    assert!(v["small"]["files"].as_u64().unwrap() >= 10, "{out}");
    assert_eq!(v["throttle_archive"]["name"], "throttle", "{out}");
    // At least 2 MB/s over the 2 s and one more second (and about 10% more).
    assert!(v["throttle_archive"]["bytes"].as_u64().unwrap() >= 6_000_000, "{out}");
    let throttle = v["throttle"].as_array().unwrap();
    assert_eq!(throttle.len(), 1, "{out}");
    assert_eq!(throttle[0]["max_rate_mb"], 2, "{out}");
    assert_eq!(throttle[0]["ended_early"], false, "the throttle's archive lasts the span: {out}");
    assert_eq!(throttle[0]["windows_mb"].as_array().unwrap().len(), 2, "{out}");
    assert!(err.contains("bench s3: throttle     2 MB/s: "), "{err}");
    assert!(err.contains("bench s3: loaded the small archive: "), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the databases, restores and server data are removed"
    );
}

#[test]
fn bench_s3_runs_each_measure_and_archive_on_its_own() {
    if !s3_bench_tools() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Restores of the large archive only: one untimed hot copy makes the set they read.
    let (ok, out, err) =
        bench_s3(dir.path(), &["--measures", "restore", "--size-mib", "1", "--small-files", "0", "--runs", "1"]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["measures"], serde_json::json!(["restore"]), "{out}");
    assert!(v["large"]["upload"].is_null() && v["large"]["hot_copy_memory"].is_null(), "{out}");
    assert_eq!(v["large"]["restore"]["backset_seconds"].as_array().unwrap().len(), 1, "{out}");
    assert!(v["large"]["rclone_download_peak_rss_bytes"].as_u64().is_some(), "{out}");
    assert!(v["small"].is_null() && v["throttle"].is_null() && v["throttle_archive"].is_null(), "{out}");
    assert!(err.contains("bench s3: large archive: made the set to restore in "), "{err}");

    // Uploads of the small-file archive only.
    let (ok, out, err) =
        bench_s3(dir.path(), &["--measures", "upload", "--size-mib", "0", "--small-files", "10", "--runs", "1"]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert!(v["large"].is_null() && v["small"]["restore"].is_null(), "{out}");
    assert_eq!(v["small"]["upload"]["rclone_seconds"].as_array().unwrap().len(), 1, "{out}");
    assert!(!err.contains("large archive"), "{err}");

    // The throttle alone, in an archive it sizes itself.
    let (ok, out, err) = bench_s3(
        dir.path(),
        &[
            "--measures",
            "throttle",
            "--size-mib",
            "0",
            "--small-files",
            "0",
            "--rates",
            "1,3",
            "--throttle-seconds",
            "1",
        ],
    );
    assert!(ok, "{err}");
    let v = json(&out);
    assert!(v["large"].is_null() && v["small"].is_null(), "{out}");
    let throttle = v["throttle"].as_array().unwrap();
    assert_eq!(throttle.len(), 2, "{out}");
    assert!(throttle.iter().all(|t| t["ended_early"] == false), "the archive lasts the span at 3 MB/s: {out}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "everything is removed");
}
