//! End to end: the README's first command, `backset demo`, run as the real binary on a real directory.

mod support;

#[test]
fn demo_runs_the_whole_cycle_and_proves_the_restore() {
    // As the README runs it: no --dir, so the default, relative `backset-demo` in the working directory.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let work = dir.path().join("backset-demo");
    let out = support::command().args(["demo", "--pause", "0.3"]).current_dir(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    for step in [
        "hot copy  full",
        "hot copy  journal",
        "hot copy  incremental",
        "restore   to transaction",
        "verified",
        "no defect",
    ] {
        assert!(stdout.contains(step), "no {step:?} in {stdout}");
    }
    // What it left is what it says: a backup set whose state lists the four elements completed, and a restored
    // archive that the store reads.
    let state: backset::format::State = backset::format::fsio::read_metadata(&work.join("backup-set/state")).unwrap();
    assert_eq!(state.database_name, "demo");
    let names: Vec<_> = state.elements.iter().map(|e| (e.kind, e.status)).collect();
    use backset::format::{ElementKind::*, ElementStatus::Completed};
    assert_eq!(names, [(Full, Completed), (Journal, Completed), (Incremental, Completed), (Journal, Completed)]);
    let restored = backset::refstore::read_archive(&work.join("restored")).unwrap();
    assert!(!restored.entries.is_empty());
}

#[test]
fn demo_refuses_a_non_empty_directory_and_leaves_it_alone() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(dir.path().join("keep"), b"mine").unwrap();
    let out = support::command().arg("demo").arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read(dir.path().join("keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    let out = support::command().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_prints_transaction_ranges_as_check_does() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = support::command().args(["demo", "--pause", "0.2", "--dir"]).arg(dir.path().join("d")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("..="), "{stdout}");
    let range = |l: &str| {
        let i = l.find('[').unwrap_or_else(|| panic!("no range in {l}"));
        let (a, b) = l[i + 1..l[i..].find(']').unwrap() + i].split_once(", ").unwrap();
        (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap())
    };
    for line in stdout.lines().filter(|l| l.starts_with("hot copy ") || l.starts_with("check ")) {
        let (a, b) = range(line);
        assert!(a <= b, "{line}");
    }
    let check = stdout.lines().find(|l| l.starts_with("check ")).unwrap();
    assert!(check.contains("restorable transactions: ["), "{check}");
    let set = dir.path().join("d/backup-set");
    let checked = support::command().arg("check").arg(&set).output().unwrap();
    let checked = String::from_utf8_lossy(&checked.stdout);
    let tail = |l: &str| l[l.find("restorable transactions: ").unwrap()..].trim_end().to_string();
    assert_eq!(tail(check), tail(&checked), "the demo and check print the set's ranges alike");
}
