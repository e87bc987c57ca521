//! Data that must never be lost or touched, end to end through the binary: one process per data directory (the
//! lock, also through the library across processes), a `serve` that fails to start leaves nothing behind, a restore
//! never writes into a backup set or into a directory a running SM holds, and destinations are created as their
//! last component only (docs/CLI.md, "Directories").

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use backset::engine::lock::{DirKind, Holder, LockError, LOCK_FILE};
use backset::refstore::{Config, Database, StoreError, Txn};
use serde_json::{json, Value};
use support::{backset_within, free_port, s, stderr, text, tmp, wait_until, Server};

/// Longest a command that must refuse at once may run before the test calls it hanging.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `backset args`, which must exit 1; returns its output.
fn fails(args: &[&str]) -> Output {
    let out = backset_within(args, REFUSAL_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "`backset {}` should fail: {}", args.join(" "), text(&out));
    out
}

/// Runs `backset args`, which must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = backset_within(args, Duration::from_secs(300));
    assert!(out.status.success(), "`backset {}`: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits one put through the data API; returns the transaction id.
fn commit(srv: &Server, key: &str, value: &str) -> u64 {
    let a = srv.post_json("/databases/demo/transactions", &json!({"put": {key: value}}));
    assert_eq!(a.code, 200, "commit: {}", a.text);
    a.json["txnId"].as_u64().unwrap()
}

/// A server on a new directory's `data/`, with transaction 1 (`a` = `1`) committed.
fn serving() -> (tempfile::TempDir, PathBuf, Server) {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    assert_eq!(commit(&srv, "a", "1"), 1);
    (dir, data, srv)
}

/// Every path under `root` (relative), with its content (`None` for a directory, `-> target` for a symbolic link,
/// never followed); `root` itself included as "".
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            out.insert(rel, Some(format!("-> {}", fs::read_link(&p).unwrap().display()).into_bytes()));
        } else if md.is_dir() {
            out.insert(rel, None);
            todo.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.insert(rel, Some(fs::read(&p).unwrap()));
        }
    }
    out
}

/// Whether any file under `root` is named `name`.
fn holds_file_named(root: &Path, name: &str) -> bool {
    tree(root).keys().any(|p| p.file_name().is_some_and(|n| n == name))
}

/// The message a refused second writer prints.
fn in_use(kind: &str, dir: &Path, pid: u32, program: &str) -> String {
    format!("{kind} directory {} is in use by process {pid} ({program}); stop it first", dir.display())
}

#[test]
fn a_second_serve_on_one_data_directory_is_refused_and_the_first_keeps_serving() {
    let (dir, data, first) = serving();

    // Another port, the same data directory: refused before it reads or writes anything.
    let journal = data.join("database/0/journal");
    let before = tree(&journal);
    let listen = format!("127.0.0.1:{}", free_port());
    let out = fails(&["serve", "--listen", &listen, "--data-dir", s(&data).as_str()]);
    let want = in_use("database", &data.join("database"), first.pid(), "backset serve");
    assert!(stderr(&out).contains(&want), "expected {want:?}: {}", text(&out));
    assert_eq!(tree(&journal), before, "the refused serve touched the journal");

    // The first keeps serving, and hot copies of its archive never copy the lock file.
    assert_eq!(commit(&first, "b", "2"), 2);
    let (set, copy) = (dir.path().join("set"), dir.path().join("copy"));
    first.completed("full", &set);
    first.completed("simple", &copy);
    assert!(data.join("database/0").join(LOCK_FILE).is_file(), "the served archive holds its lock file");
    assert!(!holds_file_named(&set, LOCK_FILE), "the full hot copy copied the lock file: {:?}", tree(&set).keys());
    assert!(!holds_file_named(&copy, LOCK_FILE), "the simple hot copy copied the lock file");
    let (code, output) = first.terminate();
    assert_eq!(code, Some(0), "{output}");

    // After both stopped, the journal opens and the transaction sequence continues.
    let again = Server::start(&data, &[]);
    assert_eq!(commit(&again, "c", "3"), 3, "{}", again.output());
    let (code, output) = again.terminate();
    assert_eq!(code, Some(0), "{output}");
    ok(&["archive", "check", &s(&data.join("database/0"))]);
    ok(&["check", &s(&set)]);
}

#[test]
fn a_serve_killed_with_sigkill_leaves_no_stale_lock() {
    let (_dir, data, srv) = serving();
    drop(srv); // SIGKILL
    assert!(data.join("database").join(LOCK_FILE).is_file(), "the lock file stays after a kill");
    // The file is there but no process holds its lock: a new serve starts and continues the sequence.
    let srv = Server::start(&data, &[]);
    assert_eq!(commit(&srv, "b", "2"), 2);
    assert_eq!(srv.terminate().0, Some(0));
}

#[test]
fn the_archive_tools_refuse_an_archive_a_running_serve_holds() {
    let (_dir, data, srv) = serving();
    let archive = data.join("database/0");
    let want = in_use("archive", &archive, srv.pid(), "backset serve");
    for tool in ["info", "dump", "check"] {
        let out = fails(&["archive", tool, &s(&archive)]);
        assert!(stderr(&out).contains(&want), "archive {tool}: expected {want:?}: {}", text(&out));
    }
    assert_eq!(srv.terminate().0, Some(0));
    // Once it stopped, they read it.
    let info: Value = serde_json::from_str(&ok(&["archive", "info", &s(&archive)])).unwrap();
    assert_eq!(info["lastTxnId"], 1);
    ok(&["archive", "check", &s(&archive)]);
}

/// The lock through the library: a store opened in this test process holds its directories against `serve`, and
/// the library's open is refused while `serve` holds them; a simple copy that an embedded SM serves as its archive
/// is refused to the archive tools.
#[test]
fn the_library_lock_holds_across_processes() {
    let dir = tmp();
    let data = dir.path().join("data");
    let program = std::env::current_exe().unwrap().file_name().unwrap().to_string_lossy().into_owned();

    // This process holds the database directory: serve is refused, naming this process.
    let db = Database::open(data.join("database"), Config::new("demo")).unwrap();
    db.commit(&Txn::new().put("a", "1")).unwrap();
    let database_id = db.database_id();
    let listen = format!("127.0.0.1:{}", free_port());
    let out = fails(&["serve", "--listen", &listen, "--data-dir", &s(&data)]);
    let want = in_use("database", &data.join("database"), std::process::id(), &program);
    assert!(stderr(&out).contains(&want), "expected {want:?}: {}", text(&out));
    db.close().unwrap();
    drop(db);

    // serve holds it: the library's open is refused, naming serve.
    let srv = Server::start(&data, &[]);
    match Database::open(data.join("database"), Config::new("demo")) {
        Err(StoreError::Locked(LockError::InUse { kind, dir: d, holder })) => {
            assert_eq!((kind, d), (DirKind::Database, data.join("database")));
            assert_eq!(holder, Holder::Process { pid: srv.pid(), program: "backset serve".into() });
        }
        Err(e) => panic!("the open was refused for another reason: {e}"),
        Ok(_) => panic!("a second open of a directory serve holds succeeded"),
    }

    // A simple copy used as the archive of an SM embedded in this process.
    let embedded = dir.path().join("embedded");
    fs::create_dir(&embedded).unwrap();
    let copy = embedded.join("0");
    srv.completed("simple", &copy);
    let sm = Database::open(&embedded, Config { database_id: Some(database_id), ..Config::new("demo") }).unwrap();
    assert_eq!(sm.get(b"a").unwrap(), Some(b"1".to_vec()));
    let want = in_use("archive", &copy, std::process::id(), &program);
    for tool in ["info", "dump", "check"] {
        let out = fails(&["archive", tool, &s(&copy)]);
        assert!(stderr(&out).contains(&want), "archive {tool}: expected {want:?}: {}", text(&out));
    }
    sm.close().unwrap();
    ok(&["archive", "check", &s(&copy)]);
    assert_eq!(srv.terminate().0, Some(0));
}

#[test]
fn a_serve_that_cannot_listen_leaves_nothing_behind() {
    let dir = tmp();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    // A data directory that does not exist stays absent.
    let data = dir.path().join("data");
    let out = fails(&["serve", "--listen", &addr, "--data-dir", &s(&data)]);
    assert!(stderr(&out).contains(&format!("listen on {addr}")), "the message names the address: {}", text(&out));
    assert!(stderr(&out).contains("Address already in use"), "{}", text(&out));
    assert!(!data.exists(), "the failed serve created {}: {:?}", data.display(), tree(&data).keys());

    // One that holds a database is left exactly as it was.
    let srv = Server::start(&data, &[]);
    commit(&srv, "a", "1");
    assert_eq!(srv.terminate().0, Some(0));
    let before = tree(&data);
    let out = fails(&["serve", "--listen", &addr, "--data-dir", &s(&data)]);
    assert!(stderr(&out).contains(&format!("listen on {addr}")), "{}", text(&out));
    assert_eq!(tree(&data), before, "the failed serve changed {}", data.display());
}

#[test]
fn a_restore_never_writes_into_a_backup_set_or_a_held_archive() {
    let (dir, data, srv) = serving();
    let set = dir.path().join("set");
    srv.completed("full", &set);
    commit(&srv, "b", "2");
    srv.completed("journal", &set);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(set.join("full"), &link).unwrap();
    // The set without its verification record, which each `check` below rewrites (it is check's own, see
    // FORMAT.md "Verification record"; a restore never writes it).
    let set_files = || {
        let mut t = tree(&set);
        t.remove(Path::new("verified"));
        t
    };
    let set_tree = set_files();

    let refused = |dest: &Path, wants: &[String]| {
        let out = fails(&["restore", "--restore-dir", &s(dest), &s(&set)]);
        for want in wants {
            assert!(stderr(&out).contains(want), "restore into {}: expected {want:?}: {}", dest.display(), text(&out));
        }
        assert_eq!(set_files(), set_tree, "the refused restore into {} changed the set", dest.display());
        ok(&["check", &s(&set)]);
    };
    let real = |p: &Path| fs::canonicalize(p).unwrap().display().to_string();
    let given = |dest: &Path| format!("restore destination {}", dest.display());
    for dest in [set.join("restored"), set.join("full/data/x")] {
        refused(&dest, &[given(&dest), format!("is inside the backup set {}", real(&set))]);
    }
    refused(&set, &[given(&set), format!("is the backup set {}", real(&set))]);
    // Through a symbolic link into the set: the message shows where it leads.
    let dest = link.join("x");
    refused(
        &dest,
        &[given(&dest), format!("(resolved: {}/x)", real(&set.join("full"))), "is inside the backup set".into()],
    );

    // The archive serve holds, a directory inside it, and one inside its database directory.
    let archive = data.join("database/0");
    let holder = format!("which is in use by process {} (backset serve)", srv.pid());
    refused(&archive, &[given(&archive), format!("is the archive directory {}, {holder}", real(&archive))]);
    let dest = archive.join("atoms/x");
    refused(&dest, &[given(&dest), format!("is inside the archive directory {}, {holder}", real(&archive))]);
    let dest = data.join("database/restored");
    refused(
        &dest,
        &[given(&dest), format!("is inside the database directory {}, {holder}", real(&data.join("database")))],
    );
    assert!(!data.join("database/restored").exists() && !archive.join("atoms/x").exists());

    // Outside, it restores.
    let restored = dir.path().join("restored");
    ok(&["restore", "--restore-dir", &s(&restored), &s(&set)]);
    assert_eq!(support::dump(&restored, &[]).len(), 2);
    assert_eq!(srv.terminate().0, Some(0));
}

#[test]
fn destinations_are_created_as_their_last_component_only() {
    let (dir, _data, srv) = serving();
    let missing = dir.path().join("unmounted");
    let api = ["--api-server", srv.addr.as_str()];
    let nuodb = |dir: &Path, what: &str| {
        format!(
            "Failed to create {what} {}: No such file or directory (its parent directory {} does not exist",
            dir.display(),
            missing.display()
        )
    };

    // nuocmd's options: a full into --backup-dirs and --default-backup-dir.
    let set = missing.join("set1");
    for opt in [vec!["--backup-dirs", "0"], vec!["--default-backup-dir"]] {
        let mut args = vec!["hotcopy", "database", "--db-name", "demo", "--type", "full", "--timeout", "60"];
        args.extend(opt.iter().copied());
        let set_s = s(&set);
        args.push(&set_s);
        args.extend(api);
        let out = fails(&args);
        assert!(stderr(&out).contains(&nuodb(&set, "backup set")), "{opt:?}: {}", text(&out));
    }
    // REST: backupSetDirs, and a simple copy's copyArchiveDir and copyJournalDir: refused at once with 409.
    let a = srv.post_json("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": s(&set)}}));
    assert_eq!(a.code, 409, "{}", a.text);
    assert!(a.json["message"].as_str().unwrap().contains(&nuodb(&set, "backup set")), "{}", a.text);
    let copy = missing.join("copy");
    let a = srv
        .post_json("/databases/demo/hotCopySimple", &json!({"backupLocations": {"0": {"copyArchiveDir": s(&copy)}}}));
    assert_eq!(a.code, 409, "{}", a.text);
    assert!(a.json["message"].as_str().unwrap().contains(&nuodb(&copy, "archive copy")), "{}", a.text);
    let (copy, journal) = (dir.path().join("copy"), missing.join("journal"));
    let body = json!({"backupLocations": {"0": {"copyArchiveDir": s(&copy), "copyJournalDir": s(&journal)}}});
    let a = srv.post_json("/databases/demo/hotCopySimple", &body);
    assert_eq!(a.code, 409, "{}", a.text);
    assert!(a.json["message"].as_str().unwrap().contains(&nuodb(&journal, "journal copy")), "{}", a.text);
    assert!(!copy.exists());
    // The CLI's simple hot copy too.
    let copy_s = s(&missing.join("copy"));
    let mut args = vec!["hotcopy", "database", "--db-name", "demo", "--type", "simple", "--backup-dirs", "0", &copy_s];
    args.extend(api);
    let out = fails(&args);
    assert!(stderr(&out).contains(&nuodb(&missing.join("copy"), "archive copy")), "{}", text(&out));

    // With the parent there, the last component is created.
    let good = dir.path().join("set");
    srv.completed("full", &good);
    assert_eq!(srv.terminate().0, Some(0));

    // A restore's destination.
    let dest = missing.join("restored");
    let out = fails(&["restore", "--restore-dir", &s(&dest), &s(&good)]);
    assert!(stderr(&out).contains(&nuodb(&dest, "restore directory")), "{}", text(&out));
    assert!(!missing.exists(), "a missing parent was created: {}", missing.display());
}

/// A directory another user owns, holding an archive's `atoms/` and `journal/` and a file: what a swapped path
/// component leads a restore to. Returns it and its tree.
fn victim(root: &Path) -> (PathBuf, BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let v = root.join("victim");
    fs::create_dir_all(v.join("atoms")).unwrap();
    fs::create_dir_all(v.join("journal")).unwrap();
    fs::write(v.join("atoms/0000000000000001.atom"), b"someone else's atom").unwrap();
    fs::write(v.join("journal/0000000000000001"), b"someone else's journal").unwrap();
    fs::write(v.join("notes"), b"keep").unwrap();
    let t = tree(&v);
    (v, t)
}

/// A backup set with a full and a journal element, made through the server.
fn small_set(root: &Path) -> PathBuf {
    let data = root.join("data");
    let srv = Server::start(&data, &[]);
    commit(&srv, "a", "1");
    let set = root.join("set");
    srv.completed("full", &set);
    commit(&srv, "b", "2");
    srv.completed("journal", &set);
    set
}

/// Runs `backset restore --restore-dir dest set` with the test-only pause once its directories are created
/// (`BACKSET_FAULT_RESTORE_PAUSE=created`); when it blocks, runs `swap`, then lets it go on. Returns its output.
fn restore_with_swap(set: &Path, dest: &Path, mark: &Path, swap: impl FnOnce()) -> Output {
    let mut child = support::command()
        .args(["restore", "--restore-dir", &s(dest), &s(set)])
        .env("BACKSET_FAULT_RESTORE_PAUSE", "created")
        .env("BACKSET_FAULT_PAUSE_MARK", mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let paused = wait_until(Duration::from_secs(60), || mark.exists() || child.try_wait().unwrap().is_some());
    if !(paused && mark.exists()) {
        let _ = child.kill();
        panic!("the restore never reached its pause point: {}", text(&child.wait_with_output().unwrap()));
    }
    swap();
    fs::remove_file(mark).unwrap();
    let exited = wait_until(Duration::from_secs(120), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "the restore still ran 120 s after its pause: {}", text(&out));
    out
}

#[test]
fn a_failed_restore_never_removes_through_a_destination_swapped_for_a_link() {
    let dir = tmp();
    let set = small_set(dir.path());
    let (victim, before) = victim(dir.path());
    // A shared scratch directory: the restore creates `dest`; someone moves it aside and puts a link in its place.
    let dest = dir.path().join("scratch/dest");
    fs::create_dir(dir.path().join("scratch")).unwrap();
    let aside = dir.path().join("scratch/aside");
    let out = restore_with_swap(&set, &dest, &dir.path().join("mark"), || {
        fs::rename(&dest, &aside).unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
    });
    assert_eq!(tree(&victim), before, "the restore changed the directory the link leads to: {}", text(&out));
    assert_eq!(out.status.code(), Some(1), "the restore must fail: {}", text(&out));
    let want = format!(
        "restore destination {} was replaced while the restore ran (it is now a symbolic link to another directory)",
        dest.display()
    );
    assert!(stderr(&out).contains(&want), "expected {want:?}: {}", text(&out));
    assert_eq!(fs::read_link(&dest).unwrap(), victim, "the link is not the restore's to remove");
    // What the restore wrote (through its descriptors, into the directory moved aside) is gone.
    assert_eq!(tree(&aside).into_keys().collect::<Vec<_>>(), [PathBuf::new()], "{:?}", tree(&aside));
}

#[test]
fn a_failed_restore_never_removes_through_an_atoms_directory_swapped_for_a_link() {
    let dir = tmp();
    let set = small_set(dir.path());
    let (victim, before) = victim(dir.path());
    // An empty destination someone else can write to: its `atoms/` is moved aside and replaced by a link.
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let atoms = dest.join("atoms");
    let out = restore_with_swap(&set, &dest, &dir.path().join("mark"), || {
        fs::rename(&atoms, dest.join("atoms-aside")).unwrap();
        std::os::unix::fs::symlink(victim.join("atoms"), &atoms).unwrap();
    });
    assert_eq!(tree(&victim), before, "the restore changed the directory the link leads to: {}", text(&out));
    assert_eq!(out.status.code(), Some(1), "the restore must fail: {}", text(&out));
    let want = format!(
        "restore destination {} was replaced while the restore ran (it is now a symbolic link)",
        atoms.display()
    );
    assert!(stderr(&out).contains(&want), "expected {want:?}: {}", text(&out));
    // The restore's journal/ is gone, the emptied atoms directory stays under the name it was moved to.
    let left: Vec<PathBuf> = tree(&dest).into_keys().collect();
    assert_eq!(left, [PathBuf::new(), "atoms".into(), "atoms-aside".into()], "{:?}", tree(&dest));
}

#[test]
fn a_linked_tmp_in_a_backup_set_is_refused_by_every_hot_copy_and_is_a_defect_for_check() {
    let (dir, _data, srv) = serving();
    let set = dir.path().join("set");
    srv.completed("full", &set);
    commit(&srv, "b", "2");
    let (victim, before) = victim(dir.path());
    let link = set.join("tmp");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_dir(&link).unwrap();
    }
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let set_before = tree(&set);

    for kind in ["incremental", "journal"] {
        let a = srv.post_json(
            "/databases/demo/hotCopy",
            &json!({"type": kind, "backupSetDirs": {"0": s(&set)}, "timeoutSec": 60}),
        );
        assert_eq!(tree(&victim), before, "the {kind} hot copy changed what {} leads to: {}", link.display(), a.text);
        assert_eq!(tree(&set), set_before, "the refused {kind} hot copy changed the set: {}", a.text);
        assert_eq!((a.code, a.json["status"].as_str()), (200, Some("failed")), "{kind}: {}", a.text);
        let want = format!("{} is a symbolic link where a directory of the backup set belongs", link.display());
        let message = a.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(&want) && message.contains("remove"), "{kind}: expected {want:?}: {}", a.text);
    }

    let out = backset_within(&["check", &s(&set)], REFUSAL_TIMEOUT);
    assert_ne!(out.status.code(), Some(0), "check must report the linked tmp: {}", text(&out));
    let report = text(&out);
    let want =
        format!("{} is a symbolic link where the set's directory of elements under construction", link.display());
    assert!(report.contains(&want) && report.contains("hot copies refuse this set"), "expected {want:?}: {report}");
    assert_eq!(tree(&victim), before, "check changed what {} leads to", link.display());

    // Once the link is gone, the next hot copy works again.
    fs::remove_file(&link).unwrap();
    srv.completed("incremental", &set);
    ok(&["check", &s(&set)]);
}

#[test]
fn a_linked_data_directory_of_an_element_is_refused_by_a_hot_copy_into_its_set() {
    let (dir, _data, srv) = serving();
    let set = dir.path().join("set");
    srv.completed("full", &set);
    let (victim, before) = victim(dir.path());
    // The full's data/journal moved away and replaced by a link to someone else's journal directory.
    let journal = set.join("full/data/journal");
    fs::rename(&journal, dir.path().join("journal-aside")).unwrap();
    std::os::unix::fs::symlink(victim.join("journal"), &journal).unwrap();
    let a = srv.post_json(
        "/databases/demo/hotCopy",
        &json!({"type": "incremental", "backupSetDirs": {"0": s(&set)}, "timeoutSec": 60}),
    );
    assert_eq!(tree(&victim), before, "the hot copy changed what {} leads to: {}", journal.display(), a.text);
    assert_eq!((a.code, a.json["status"].as_str()), (200, Some("failed")), "{}", a.text);
    let want = format!("{} is a symbolic link where a directory of the backup set belongs", journal.display());
    assert!(a.json["message"].as_str().is_some_and(|m| m.contains(&want)), "expected {want:?}: {}", a.text);
}

#[test]
fn a_linked_hot_copy_status_directory_is_refused_at_start_and_its_target_untouched() {
    let (dir, data, srv) = serving();
    assert_eq!(srv.terminate().0, Some(0));
    // The status directory replaced by a link to a directory holding a `.tmp-` file (what a start removes from its
    // own status directory) and others.
    let statuses = data.join("admin/hotcopy");
    fs::remove_dir_all(&statuses).unwrap();
    let (victim, _) = victim(dir.path());
    fs::write(victim.join(".tmp-keep"), b"not Backset's").unwrap();
    let before = tree(&victim);
    std::os::unix::fs::symlink(&victim, &statuses).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = fails(&["serve", "--listen", &addr, "--data-dir", &s(&data)]);
    assert_eq!(tree(&victim), before, "the start changed what {} leads to: {}", statuses.display(), text(&out));
    let want = format!("open the hot copy status directory {}: it is a symbolic link", statuses.display());
    assert!(stderr(&out).contains(&want), "expected {want:?}: {}", text(&out));
}
