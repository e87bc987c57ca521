//! Backup sets on S3-compatible object storage, through the real binary against `s3s-fs` served in-process on a
//! loopback port (`backset_s3test::S3sServer`): hot copies into `s3://` URLs, restore and check from them, two
//! publishers racing for one element, objects deleted or altered behind Backset's back, the errors an operator
//! meets first (a typo in the URL, a missing bucket, wrong credentials), kill -9 of `serve` at aimed points, the
//! store stopped mid-upload, throttling (a proxy answering 503 `SlowDown`), the keys of `serve --config`. The
//! `moto_*` tests run the set-level protocol (multipart, create-only commit records, the race) against moto's
//! server: skipped with a printed reason when it is not installed, failed instead when `BACKSET_REQUIRE_MOTO` is set
//! (as `.ci/run` sets it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use backset_s3test::{Endpoint, S3sServer};
use serde_json::Value;
use support::*;

/// Waits for the hot copy's end (and fails the command unless it completed).
const WAIT: &[&str] = &["--timeout", "600"];

/// A test's object store (kept running while it is held), its endpoint, and a scratch directory.
fn s3_case() -> (S3sServer, Endpoint, tempfile::TempDir) {
    let store = S3sServer::start();
    let e = store.endpoint().clone();
    (store, e, tmp())
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `serve` on `data` with the store's environment and the test-only pause at `point`, writing `mark` when reached.
fn paused_server(data: &Path, e: &Endpoint, point: &str, mark: &Path) -> Server {
    let mut env = e.env();
    env.push(("BACKSET_FAULT_PAUSE", point.to_owned()));
    env.push(("BACKSET_FAULT_PAUSE_MARK", s(mark)));
    Server::start_with_env(data, &[], &as_refs(&env))
}

/// Starts an incremental into `url` on `srv` (started by [`paused_server`]), waits for it to reach its pause
/// (`mark` written), then kills the server with SIGKILL; returns the job's (coordinator start id, hot copy id).
fn incremental_killed_at_its_pause(srv: Server, url: &str, mark: &Path) -> (u64, String) {
    let body = serde_json::json!({"type": "incremental", "backupSetDirs": {"0": url}});
    let (code, v) = srv.post_json_checked("/databases/demo/hotCopy", &body);
    assert_eq!(code, 200, "{v}");
    let job = (v["coordinatorStartId"].as_u64().unwrap(), v["hotCopyId"].as_str().unwrap().to_owned());
    let paused = wait_until(std::time::Duration::from_secs(120), || mark.exists());
    assert!(paused, "the incremental never reached its pause: {}", srv.output());
    srv.kill9();
    job
}

/// `backset ARGS` offline with the store's environment.
fn offline(e: &Endpoint, args: &[&str]) -> Output {
    command().args(args).envs(e.env()).output().unwrap()
}

fn offline_ok(e: &Endpoint, args: &[&str]) -> String {
    let out = offline(e, args);
    assert_eq!(out.status.code(), Some(0), "backset {args:?}: {}", text(&out));
    stdout(&out)
}

/// The serve process, talking to the store.
fn serve(data: &Path, e: &Endpoint) -> Server {
    Server::start_with_env(data, &[], &as_refs(&e.env()))
}

/// The serve process after `n` keys of `bytes` were committed and made atom files by a clean stop (a store writes
/// its atoms at a checkpoint), restarted with the store's environment.
fn serve_with_atoms(data: &Path, e: &Endpoint, n: usize, bytes: usize) -> Server {
    let srv = serve(data, e);
    srv.load(n, bytes);
    restart(srv, data, e)
}

/// Stops `srv` cleanly (its atoms written) and starts it again.
fn restart(srv: Server, data: &Path, e: &Endpoint) -> Server {
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    serve(data, e)
}

/// `restore --report-backups --json` of `set`: (name, id) of each element.
fn elements(e: &Endpoint, set: &str) -> Vec<(String, String)> {
    let out = offline_ok(e, &["restore", "--report-backups", "--json", set]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["elements"]
        .as_array()
        .unwrap_or_else(|| panic!("no elements in {v}"))
        .iter()
        .map(|x| (x["name"].as_str().unwrap().to_owned(), x["id"].as_str().unwrap().to_owned()))
        .collect()
}

fn id_of(list: &[(String, String)], name: &str) -> String {
    list.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no element {name} in {list:?}")).1.clone()
}

/// Restores `set` (to `extra`) into a new directory under `root` and returns its data.
fn restored(
    e: &Endpoint,
    root: &Path,
    name: &str,
    set: &str,
    extra: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let dir = root.join(name);
    let mut args = vec!["restore", "--restore-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(set);
    offline_ok(e, &args);
    dump(&dir, &[])
}

/// Every object file the store keeps below `prefix` of the test bucket.
fn objects(store: &S3sServer, prefix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    let root = store.object_file(prefix);
    if root.is_dir() {
        walk(&root, &mut out);
    }
    out.sort();
    out
}

#[test]
fn full_incremental_and_journal_to_s3_restore_as_the_same_sequence_on_a_local_set() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let srv = serve_with_atoms(&data, &e, 300, 2000);
    let local = work.path().join("local");
    let later = work.path().join("later");
    let url = "s3://backset-test/demo/set1";
    // Each pair without a write between: the same content, one set local, one on the store.
    srv.cli_ok(&hotcopy_args("full", &s(&local), WAIT));
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    srv.load(120, 3000);
    let srv = restart(srv, &data, &e);
    srv.cli_ok(&hotcopy_args("incremental", &s(&local), WAIT));
    srv.cli_ok(&hotcopy_args("incremental", url, WAIT));
    srv.load(80, 100);
    // The s3 set continues the journal chain (its full is the newest): a journal element there, then a local full
    // of the same content.
    srv.cli_ok(&hotcopy_args("journal", url, WAIT));
    srv.cli_ok(&hotcopy_args("full", &s(&later), WAIT));

    let list = elements(&e, url);
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{list:?}");
    for n in ["full", "1.inc", "1.jnl"] {
        assert!(names.contains(&n), "{n} missing from {list:?}");
    }
    let local_list = elements(&e, &s(&local));
    let out = work.path();
    let full_s3 = restored(&e, out, "full-s3", url, &["--backup-element-id", &id_of(&list, "full")]);
    let full_local = restored(&e, out, "full-local", &s(&local), &["--backup-element-id", &id_of(&local_list, "full")]);
    assert_eq!(full_s3.len(), 300);
    assert_eq!(full_s3, full_local, "the full on s3 restores what the local full restores");
    let inc_s3 = restored(&e, out, "inc-s3", url, &["--backup-element-id", &id_of(&list, "1.inc")]);
    let inc_local = restored(&e, out, "inc-local", &s(&local), &[]);
    assert_eq!(inc_s3, inc_local, "the incremental on s3 restores what the local one restores");
    assert_ne!(inc_s3, full_s3);
    let latest_s3 = restored(&e, out, "latest-s3", url, &[]);
    let latest_local = restored(&e, out, "latest-local", &s(&later), &[]);
    assert_eq!(latest_s3.len(), 300);
    assert_eq!(latest_s3, latest_local, "the journal element on s3 restores to what a full taken then holds");

    // Check reads every byte from the store and writes nothing locally.
    let checked = offline_ok(&e, &["check", url]);
    assert!(checked.contains("3"), "{checked}");
    let ts = offline_ok(&e, &["restore", "--report-timestamps", url]);
    assert!(!ts.trim().is_empty(), "--report-timestamps prints the transactions of the s3 set");
    // The layout: a commit record per element, the element's objects under its own id, no `state` object.
    assert!(store.object_file("demo/set1/full/commit").is_file());
    assert!(!store.object_file("demo/set1/state").exists(), "the state is derived, never stored");
    let full_id = id_of(&list, "full");
    assert!(store.object_file(&format!("demo/set1/full/{full_id}/control/manifest")).is_file());
    let atoms = objects(&store, &format!("demo/set1/full/{full_id}/data/atoms"));
    assert!(atoms.len() > 1, "the full holds atom files: {atoms:?}");
    let inc_atoms = objects(&store, &format!("demo/set1/1.inc/{}/data/atoms", id_of(&list, "1.inc")));
    assert!(!inc_atoms.is_empty(), "the incremental holds the atoms that changed");
}

/// Two servers on `e` each start a throttled full into `url` at once: one completes, the other reads `failed`
/// saying another hot copy published first; `check` passes and the set restores the winner's 400 keys.
fn two_fulls_race(e: &Endpoint, work: &Path, url: &str) {
    let a = serve(&work.join("a"), e);
    let b = serve(&work.join("b"), e);
    // Enough to copy that, throttled, both jobs are staged before either publishes.
    a.load(400, 4000);
    b.load(400, 4000);
    // About 4 s each at 400 kB/s.
    let ja = a.start_throttled_full(Path::new(url), 400_000);
    let jb = b.start_throttled_full(Path::new(url), 400_000);
    let (va, vb) = (final_status(&a, &ja), final_status(&b, &jb));
    let statuses = [va["status"].as_str().unwrap(), vb["status"].as_str().unwrap()];
    assert!(statuses.contains(&"completed") && statuses.contains(&"failed"), "{va}\n{vb}");
    let loser = if va["status"] == "completed" { &vb } else { &va };
    let message = loser["message"].as_str().unwrap();
    assert!(message.contains("another hot copy published element full first"), "{message}");
    assert!(message.contains("run this hot copy again"), "{message}");
    // The set is the winner's, whole: check passes and it restores the winner's data.
    offline_ok(e, &["check", url]);
    let data = restored(e, work, "r", url, &[]);
    assert_eq!(data.len(), 400);
}

#[test]
fn two_fulls_racing_for_one_prefix_publish_one_and_the_loser_fails_clearly() {
    let (store, e, work) = s3_case();
    two_fulls_race(&e, work.path(), "s3://backset-test/race");
    // Nothing of the loser's job is left: one element id under full/.
    let ids: std::collections::BTreeSet<String> = objects(&store, "race/full")
        .iter()
        .filter_map(|p| {
            p.strip_prefix(store.object_file("race/full")).ok()?.iter().next().map(|c| c.to_string_lossy().into_owned())
        })
        .filter(|c| c != "commit")
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[test]
fn check_names_the_element_and_object_deleted_or_altered_behind_backsets_back() {
    let (store, e, work) = s3_case();
    let srv = serve_with_atoms(&work.path().join("data"), &e, 200, 2000);
    let url = "s3://backset-test/damaged";
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    offline_ok(&e, &["check", url]);
    let atoms: Vec<PathBuf> =
        objects(&store, "damaged/full").into_iter().filter(|p| p.to_string_lossy().contains("/data/atoms/")).collect();
    assert!(atoms.len() >= 2, "{atoms:?}");
    std::fs::remove_file(&atoms[0]).unwrap();
    flip_byte(&atoms[1], 40);
    let out = offline(&e, &["check", url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(t.contains("full"), "{t}");
    assert!(t.contains(&format!("s3://backset-test/damaged/full/data/atoms/{}", name(&atoms[0]))), "{t}");
    assert!(t.contains(&format!("s3://backset-test/damaged/full/data/atoms/{}", name(&atoms[1]))), "{t}");
    // A restore refuses it too, naming the object.
    let out = offline(&e, &["restore", "--restore-dir", work.path().join("r").to_str().unwrap(), url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("s3://backset-test/damaged/full/data/atoms/"), "{}", text(&out));
}

#[test]
fn a_typo_a_missing_bucket_and_wrong_credentials_each_say_what_to_do() {
    let (store, e, work) = s3_case();
    let srv = serve(&work.path().join("data"), &e);
    srv.load(10, 10);
    // A typo in the URL: refused before anything is sent, exit 2.
    let out = srv.cli_fails(&hotcopy_args("full", "s3:/backset-test/x", &[]), 2);
    assert!(text(&out).contains("write s3://backset-test/x"), "{}", text(&out));
    let out = offline(&e, &["restore", "--report-backups", "s3//backset-test/x"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    // A bucket that does not exist.
    let out = srv.cli(&hotcopy_args("full", "s3://no-such-bucket/x", &[]));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("the bucket \"no-such-bucket\" does not exist") && t.contains("create it"), "{t}");
    let out = offline(&e, &["check", "s3://no-such-bucket/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    // A prefix without a set.
    let out = offline(
        &e,
        &["restore", "--restore-dir", work.path().join("r").to_str().unwrap(), "s3://backset-test/nothing"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no element is published under this prefix"), "{}", text(&out));
    // Wrong credentials: the store's refusal, and what to check.
    let mut env = e.env();
    env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_owned()));
    let out = command().args(["check", "s3://backset-test/x"]).envs(env).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("access denied") && t.contains("AWS_SECRET_ACCESS_KEY"), "{t}");
    assert!(!t.contains("not-the-secret"), "a secret is never shown: {t}");
    // A simple hot copy stays local-only.
    let out = srv.cli(&hotcopy_args("simple", "s3://backset-test/simple", &[]));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("local-only"), "{}", text(&out));
    // Nothing was written for any of them.
    assert!(objects(&store, "").is_empty(), "{:?}", objects(&store, ""));
}

#[test]
fn a_shared_default_backup_dir_on_s3_and_the_rest_api_take_urls() {
    let (_store, e, work) = s3_case();
    let srv = serve(&work.path().join("data"), &e);
    srv.load(20, 100);
    // --shared with a URL: each archive writes into <url>/<archive id>.
    srv.cli_ok(&[
        "hotcopy",
        "database",
        "--db-name",
        "demo",
        "--type",
        "full",
        "--default-backup-dir",
        "s3://backset-test/shared",
        "--shared",
        "--timeout",
        "600",
    ]);
    let list = elements(&e, "s3://backset-test/shared/0");
    assert_eq!(list.len(), 1, "{list:?}");
    // The REST API's backupSetDirs takes the same URLs.
    srv.load(30, 100);
    let v = srv.completed("incremental", Path::new("s3://backset-test/shared/0"));
    assert_eq!(v["destinationDirectory"], "s3://backset-test/shared/0", "{v}");
    let list = elements(&e, "s3://backset-test/shared/0");
    assert_eq!(list.len(), 2, "{list:?}");
    let data = restored(&e, work.path(), "r", "s3://backset-test/shared/0", &[]);
    assert_eq!(data.len(), 30, "the incremental's keys are restored from the store");
}

/// A set at `url` with a full, and an incremental into it held just before its commit record is written (every
/// object uploaded) when `serve` is killed with SIGKILL. Returns the data directory, the killed job, the objects it
/// left, and what the set restored before.
fn killed_before_publish(
    store: &S3sServer,
    work: &Path,
    url: &str,
) -> (PathBuf, (u64, String), Vec<PathBuf>, std::collections::BTreeMap<String, String>) {
    let e = store.endpoint().clone();
    let data = work.join("data");
    let srv = serve_with_atoms(&data, &e, 200, 2000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let before = restored(&e, work, "before", url, &[]);
    srv.load(60, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let mark = work.join("mark");
    let srv = paused_server(&data, &e, "incremental:before-move", &mark);
    let job = incremental_killed_at_its_pause(srv, url, &mark);
    let prefix = url.strip_prefix("s3://backset-test/").unwrap();
    let left = objects(store, &format!("{prefix}/1.inc"));
    assert!(!left.is_empty(), "the killed job had uploaded its objects");
    assert!(!store.object_file(&format!("{prefix}/1.inc/commit")).exists(), "and published nothing");
    (data, job, left, before)
}

#[test]
fn a_serve_killed_before_it_publishes_leaves_the_set_as_it_was_and_set_gc_removes_its_objects() {
    let (store, e, work) = s3_case();
    let url = "s3://backset-test/killed";
    let (data, job, left, before) = killed_before_publish(&store, work.path(), url);

    // After a restart: the job reads failed, the set is as before.
    let srv = serve(&data, &e);
    let status = srv.hot_copy_status(&job);
    assert_eq!(status["status"], "failed", "{status}");
    let list = elements(&e, url);
    assert_eq!(list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["full"], "{list:?}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "after", url, &[]), before);

    // set gc: a job written less than --min-age ago may be running, and is kept; with --min-age 0s it is removed,
    // and the published full is never touched.
    let out = offline_ok(&e, &["set", "gc", url]);
    assert!(out.contains("0 unpublished job(s) removed, 1 kept"), "{out}");
    assert_eq!(objects(&store, "killed/1.inc"), left);
    let out = offline_ok(&e, &["set", "gc", "--min-age", "0s", url]);
    assert!(out.contains("1 published element(s) kept, 1 unpublished job(s) removed"), "{out}");
    assert!(objects(&store, "killed/1.inc").is_empty(), "{:?}", objects(&store, "killed/1.inc"));
    offline_ok(&e, &["check", url]);
    // The next incremental completes and restores what the database holds.
    srv.cli_ok(&hotcopy_args("incremental", url, WAIT));
    let after = restored(&e, work.path(), "next", url, &[]);
    assert_eq!(after.len(), 200);
    assert_ne!(after, before);
    // A directory is not for set gc.
    let out = offline(&e, &["set", "gc", work.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_next_hot_copy_removes_the_objects_a_killed_one_left_once_they_are_stale() {
    let (store, e, work) = s3_case();
    let url = "s3://backset-test/stale";
    let (data, _, left, _) = killed_before_publish(&store, work.path(), url);
    let killed_id = left[0]
        .strip_prefix(store.object_file("stale/1.inc"))
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The age past which another process's unpublished job is taken for dead (1 h) lowered for the test.
    let mut env = e.env();
    env.push(("BACKSET_TEST_CLEAN_MIN_AGE_MS", "0".to_owned()));
    let srv = Server::start_with_env(&data, &[], &as_refs(&env));
    srv.cli_ok(&hotcopy_args("incremental", url, WAIT));
    // (s3s-fs may keep the empty directories a deleted key leaves: the objects are what counts.)
    let killed_left = objects(&store, &format!("stale/1.inc/{killed_id}"));
    assert!(killed_left.is_empty(), "the killed job's objects are gone: {killed_left:?}");
    let list = elements(&e, url);
    assert_eq!(list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["1.inc", "full"], "newest first: {list:?}");
    assert_ne!(id_of(&list, "1.inc"), killed_id);
    offline_ok(&e, &["check", url]);
    assert!(srv.output().contains("removed the leftovers of an interrupted hot copy"), "{}", srv.output());
    let out = offline_ok(&e, &["set", "gc", "--min-age", "0s", url]);
    assert!(out.contains("0 unpublished job(s) removed, 0 kept"), "{out}");
}

#[test]
fn set_copy_ships_a_local_set_to_s3_and_back_verified_and_resumes_with_what_is_missing() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let srv = serve_with_atoms(&data, &e, 200, 2000);
    let local = work.path().join("local");
    srv.cli_ok(&hotcopy_args("full", &s(&local), WAIT));
    srv.load(40, 3000);
    let srv = restart(srv, &data, &e);
    srv.cli_ok(&hotcopy_args("incremental", &s(&local), WAIT));
    srv.load(10, 100);
    srv.cli_ok(&hotcopy_args("journal", &s(&local), WAIT));
    let original = restored(&e, work.path(), "original", &s(&local), &[]);

    // Local -> s3: every element published, check passes on the store, it restores the same.
    let url = "s3://backset-test/shipped";
    let out = offline_ok(&e, &["set", "copy", &s(&local), url]);
    assert!(out.contains("copied 3 element(s)"), "{out}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "from-s3", url, &[]), original);
    assert_eq!(elements(&e, url), elements(&e, &s(&local)), "the same elements, ids and order");

    // Interrupted before the journal element's commit record: the next run sends only that element.
    let jnl = id_of(&elements(&e, url), "1.jnl");
    std::fs::remove_file(store.object_file("shipped/1.jnl/commit")).unwrap();
    std::fs::remove_dir_all(store.object_file(&format!("shipped/1.jnl/{jnl}"))).unwrap();
    let out = offline_ok(&e, &["set", "copy", &s(&local), url]);
    assert!(out.contains("full: already in") && out.contains("1.inc: already in"), "{out}");
    assert!(out.contains("1.jnl: copied and published") && out.contains("copied 1 element(s)"), "{out}");
    offline_ok(&e, &["check", url]);

    // s3 -> local: the round trip checks and restores what the original restores.
    let back = work.path().join("back");
    offline_ok(&e, &["set", "copy", url, &s(&back)]);
    offline_ok(&e, &["check", &s(&back)]);
    assert_eq!(restored(&e, work.path(), "from-back", &s(&back), &[]), original);
    // Again: nothing to send.
    let out = offline_ok(&e, &["set", "copy", url, &s(&back)]);
    assert!(out.contains("copied 0 element(s)") && out.contains("3 already there"), "{out}");

    // A damaged source is refused naming the element and object, and publishes nothing.
    let atom =
        objects(&store, "shipped/full").into_iter().find(|p| p.to_string_lossy().contains("/data/atoms/")).unwrap();
    flip_byte(&atom, 50);
    let again = work.path().join("again");
    let out = offline(&e, &["set", "copy", url, &s(&again)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("element full") && text(&out).contains("s3://backset-test/shipped/full/data/atoms/"),
        "{}",
        text(&out)
    );
    assert!(!again.join("full").exists(), "nothing of the element was published");
}

#[test]
fn a_serve_killed_just_after_the_commit_record_leaves_the_element_published_and_the_job_completed() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let url = "s3://backset-test/published";
    let srv = serve_with_atoms(&data, &e, 100, 2000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    srv.load(150, 2500);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    // Held right after the commit record was created (the test-only `mid-move` point), then kill -9.
    let mark = work.path().join("mark");
    let srv = paused_server(&data, &e, "incremental:mid-move", &mark);
    let expected: std::collections::BTreeMap<String, String> =
        (0..150).map(|i| (format!("key-{i:06}"), "v".repeat(2500))).collect();
    let job = incremental_killed_at_its_pause(srv, url, &mark);
    assert!(store.object_file("published/1.inc/commit").is_file(), "the commit record was written");

    // The element is published: the restarted server reports the job completed (recognised from the set), check
    // passes, and the set restores the data as of the incremental.
    let srv = serve(&data, &e);
    let status = srv.hot_copy_status(&job);
    assert_eq!(status["status"], "completed", "{status}");
    let list = elements(&e, url);
    assert!(list.iter().any(|(n, _)| n == "1.inc"), "{list:?}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "r", url, &[]), expected);
    // Nothing is left for gc.
    let out = offline_ok(&e, &["set", "gc", "--min-age", "0s", url]);
    assert!(out.contains("2 published element(s) kept, 0 unpublished job(s) removed"), "{out}");
}

/// The environment of a process that talks to `e` and has no writable temporary directory: `BACKSET_SPOOL_DIR`
/// (where object-storage staging once went) and `TMPDIR` both name the regular file `not_a_dir`, so any attempt to
/// stage locally fails (even as root, which a directory's mode would not stop).
fn no_local_staging_env(e: &Endpoint, not_a_dir: &Path) -> Vec<(&'static str, String)> {
    std::fs::write(not_a_dir, b"not a directory").unwrap();
    let mut env = e.env();
    env.push(("BACKSET_SPOOL_DIR", s(not_a_dir)));
    env.push(("TMPDIR", s(not_a_dir)));
    env
}

#[test]
fn hot_copies_and_set_copies_to_and_between_stores_stage_nothing_on_local_disk() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let not_a_dir = work.path().join("no-staging-here");
    let env = no_local_staging_env(&e, &not_a_dir);
    // One atom holding every key: over 8 MiB (UPLOAD_PART_BYTES), so each copy of it goes up in parts.
    let srv = Server::start_with_env(&data, &["--atom-buckets", "1"], &as_refs(&env));
    srv.load(1100, 10_000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let srv = Server::start_with_env(&data, &[], &as_refs(&env));
    let hot = "s3://backset-test/hot";
    srv.cli_ok(&hotcopy_args("full", hot, WAIT));
    srv.load(20, 100);
    srv.cli_ok(&hotcopy_args("journal", hot, WAIT));
    let local = work.path().join("local");
    srv.cli_ok(&hotcopy_args("full", &s(&local), WAIT));
    srv.load(20, 100);
    srv.cli_ok(&hotcopy_args("journal", &s(&local), WAIT));
    let original = restored(&e, work.path(), "original", &s(&local), &[]);

    let run = |args: &[&str]| {
        let out = command().args(args).envs(env.clone()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        stdout(&out)
    };
    // Local -> s3, then s3 -> s3: each element sent without a local copy, multipart for the large atom.
    let shipped = "s3://backset-test/shipped";
    let out = run(&["set", "copy", &s(&local), shipped]);
    assert!(out.contains("copied 2 element(s)"), "{out}");
    let full = id_of(&elements(&e, shipped), "full");
    let largest = objects(&store, &format!("shipped/full/{full}/data/atoms"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap_or(0);
    assert!(largest > 8 << 20, "an atom object larger than one part: {largest} bytes");
    let again = "s3://backset-test/again";
    let out = run(&["set", "copy", shipped, again]);
    assert!(out.contains("copied 2 element(s)"), "{out}");
    assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"not a directory", "the stand-in file is untouched");
    for url in [hot, shipped, again] {
        offline_ok(&e, &["check", url]);
    }
    assert_eq!(restored(&e, work.path(), "from-again", again, &[]), original);
    assert_eq!(elements(&e, again), elements(&e, &s(&local)), "the same elements, ids and order");
}

#[test]
fn set_copy_to_s3_of_a_source_altered_behind_backsets_back_fails_naming_the_file_and_publishes_nothing() {
    let (store, e, work) = s3_case();
    let srv = serve_with_atoms(&work.path().join("data"), &e, 200, 2000);
    let local = work.path().join("local");
    srv.cli_ok(&hotcopy_args("full", &s(&local), WAIT));
    offline_ok(&e, &["check", &s(&local)]);
    let atoms = local.join("full/data/atoms");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&atoms).unwrap().map(|d| d.unwrap().path()).collect();
    files.sort();
    let altered = files.last().unwrap();
    flip_byte(altered, 40);

    let url = "s3://backset-test/altered";
    let out = offline(&e, &["set", "copy", &s(&local), url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("element full") && t.contains(&s(altered)), "names the element and the file: {t}");
    assert!(t.contains("match the manifest"), "{t}");
    // Nothing published, and the aborted copy removed what it had stored.
    assert_eq!(objects(&store, "altered"), Vec::<PathBuf>::new());
    let out = offline(&e, &["restore", "--report-backups", "--json", url]);
    assert_eq!(out.status.code(), Some(1), "no set there: {}", text(&out));
}

/// A `serve --config` file with an `[s3]` table for `e` (its keys, endpoint and region) and `extra` lines in it.
fn s3_config_file(dir: &Path, e: &Endpoint, extra: &str) -> PathBuf {
    let path = dir.join("serve.toml");
    let text = format!(
        "[s3]\nendpoint-url = \"{}\"\nregion = \"us-east-1\"\naccess-key-id = \"{}\"\nsecret-access-key = \"{}\"\n{extra}",
        e.url, e.access_key_id, e.secret_access_key
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_config_s3_keys_win_over_the_environment_and_the_secret_is_never_logged_nor_answered() {
    let (_store, e, work) = s3_case();
    let config = s3_config_file(work.path(), &e, "");
    // The environment names another endpoint and another secret: the file's keys win, so the hot copies reach the
    // store with the file's credentials. The log at debug level, to see everything the server would ever log.
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", free_port())),
        ("AWS_ACCESS_KEY_ID", "env-key-id".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "env-secret-not-used".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    let srv = Server::start_with_env(&work.path().join("data"), &["--config", &s(&config)], &as_refs(&env));
    srv.load(50, 100);
    let url = "s3://backset-test/configured";
    let mut answers = Vec::new();
    let full = srv.completed("full", Path::new(url));
    answers.push(full.to_string());
    srv.load(10, 100);
    answers.push(srv.completed("incremental", Path::new(url)).to_string());
    // A job that fails (a bucket that does not exist) with the same keys: its message says so, without them.
    let (path, body) = hot_copy_request("full", Path::new("s3://no-such-bucket/configured"), 600);
    let failed = srv.post_json(path, &body);
    assert_eq!(failed.code, 500, "{}", failed.text);
    assert!(failed.json["message"].as_str().unwrap().contains("does not exist"), "{}", failed.text);
    answers.push(failed.text);
    let one = format!(
        "/databases/hotCopyStatus?coordinatorStartId={}&hotCopyId={}",
        full["coordinatorStartId"],
        full["hotCopyId"].as_str().unwrap()
    );
    for path in [one.as_str(), "/databases/demo/hotCopyStatus", "/processes"] {
        let a = srv.get(path);
        assert_eq!(a.code, 200, "{path}: {}", a.text);
        answers.push(a.text);
    }
    let list = elements(&e, url);
    assert_eq!(list.len(), 2, "{list:?}");
    let (code, log) = srv.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("DEBUG"), "the log was at debug level: {log}");
    for secret in [e.secret_access_key.as_str(), "env-secret-not-used"] {
        assert!(!log.contains(secret), "the log shows a secret ({secret}): {log}");
        for a in &answers {
            assert!(!a.contains(secret), "an answer shows a secret ({secret}): {a}");
        }
    }
}

#[test]
fn serve_config_refuses_plain_http_off_loopback_unless_allowed_and_names_the_key() {
    let work = tmp();
    let remote = Endpoint {
        url: "http://10.255.255.1:9000".to_owned(),
        bucket: "b".to_owned(),
        access_key_id: "k".to_owned(),
        secret_access_key: "config-secret-3d1e".to_owned(),
    };
    let config = s3_config_file(work.path(), &remote, "");
    let data = work.path().join("data");
    let out = command()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", &s(&data)])
        .args(["--config", &s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("s3.endpoint-url") && t.contains("plain http:// is refused"), "{t}");
    assert!(!t.contains("config-secret-3d1e"), "{t}");
    assert!(!data.exists(), "nothing is created when the file is refused");
    // Half the keys: refused, naming the file's keys.
    let half = work.path().join("half.toml");
    std::fs::write(&half, "[s3]\naccess-key-id = \"k\"\n").unwrap();
    let out = command()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", &s(&data)])
        .args(["--config", &s(&half)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("access-key-id is set but secret-access-key is not"), "{}", text(&out));
    // Retry settings past their limits.
    let many = s3_config_file(work.path(), &remote, "allow-http = true\nmax-retries = 101\n");
    let out = command()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", &s(&data)])
        .args(["--config", &s(&many)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("key `s3.max-retries`: 101: give 0 to 100"), "{}", text(&out));
    // Allowed explicitly (a trusted network): the server starts.
    let allowed =
        s3_config_file(work.path(), &remote, "allow-http = true\nmax-retries = 100\nretry-timeout = \"10m\"\n");
    let srv = Server::start(&data, &["--config", &s(&allowed)]);
    let (code, log) = srv.terminate();
    assert_eq!(code, Some(0), "{log}");
}

/// `serve` on `data` with the store's keys, reaching it at `endpoint_url` (the store, or a proxy in front of it),
/// with the request retries bounded by its config file (`[s3] max-retries`, `retry-timeout`: a failing store fails
/// the job in about a second, not after object_store's minutes), and the test-only pause at `pause` (point, mark).
fn serve_bounded_retries(data: &Path, e: &Endpoint, endpoint_url: &str, pause: Option<(&str, &Path)>) -> Server {
    let config = data.with_extension("retries.toml");
    std::fs::write(&config, "[s3]\nmax-retries = 3\nretry-timeout = \"10s\"\n").unwrap();
    let mut env = e.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", endpoint_url.to_owned()));
    if let Some((point, mark)) = pause {
        env.push(("BACKSET_FAULT_PAUSE", point.to_owned()));
        env.push(("BACKSET_FAULT_PAUSE_MARK", s(mark)));
    }
    Server::start_with_env(data, &["--config", &s(&config)], &as_refs(&env))
}

/// Starts an incremental into `url` on `srv` and waits until it blocks at its test-only pause (`mark` written).
fn incremental_at_its_pause(srv: &Server, url: &str, mark: &Path) -> (u64, String) {
    let body = serde_json::json!({"type": "incremental", "backupSetDirs": {"0": url}});
    let (code, v) = srv.post_json_checked("/databases/demo/hotCopy", &body);
    assert_eq!(code, 200, "{v}");
    let job = (v["coordinatorStartId"].as_u64().unwrap(), v["hotCopyId"].as_str().unwrap().to_owned());
    let paused = wait_until(std::time::Duration::from_secs(120), || mark.exists());
    assert!(paused, "the incremental never reached its pause: {}", srv.output());
    job
}

/// The status of `job` once it is no longer running (at most 120 s).
fn final_status(srv: &Server, job: &(u64, String)) -> Value {
    let mut v = Value::Null;
    let ended = wait_until(std::time::Duration::from_secs(120), || {
        v = srv.hot_copy_status(job);
        v["status"] != "running"
    });
    assert!(ended, "the hot copy did not end: {v}");
    v
}

/// The objects of the unpublished job under `<prefix>/<element>/`: (data objects, control objects).
fn job_objects(store: &S3sServer, element: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let all = objects(store, element);
    let data = all.iter().filter(|p| p.to_string_lossy().contains("/data/")).cloned().collect();
    let control = all.iter().filter(|p| p.to_string_lossy().contains("/control/")).cloned().collect();
    (data, control)
}

/// kill -9 of a `serve` (on `data`) whose incremental into `url` is held between its data and its control objects
/// (the test-only `before-control` point); `element` is where that incremental writes (`<prefix>/N.inc`).
fn killed_between_data_and_control(store: &S3sServer, data: &Path, url: &str, element: &str) -> (u64, String) {
    let e = store.endpoint();
    let mark = data.with_extension("mark");
    let _ = std::fs::remove_file(&mark);
    let srv = paused_server(data, e, "incremental:before-control", &mark);
    let job = incremental_at_its_pause(&srv, url, &mark);
    srv.kill9();
    let (data_objects, control) = job_objects(store, element);
    assert!(!data_objects.is_empty(), "the data objects were uploaded");
    assert!(control.is_empty(), "no control object was: {control:?}");
    assert!(!store.object_file(&format!("{element}/commit")).exists(), "nothing was published");
    job
}

#[test]
fn a_serve_killed_between_the_data_and_the_control_objects_leaves_the_set_as_it_was_and_both_clean_ups_work() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let url = "s3://backset-test/between";
    let srv = serve_with_atoms(&data, &e, 200, 2000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let before = restored(&e, work.path(), "before", url, &[]);
    srv.load(60, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let first = killed_between_data_and_control(&store, &data, url, "between/1.inc");

    // Restarted: the job reads failed, the set is as before; the next hot copy (which takes the killed job's
    // objects for dead at once, the age lowered for the test) removes them and publishes its own.
    let mut env = e.env();
    env.push(("BACKSET_TEST_CLEAN_MIN_AGE_MS", "0".to_owned()));
    let srv = Server::start_with_env(&data, &[], &as_refs(&env));
    assert_eq!(srv.hot_copy_status(&first)["status"], "failed");
    let list = elements(&e, url);
    assert_eq!(list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["full"], "{list:?}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "after-kill", url, &[]), before);
    srv.cli_ok(&hotcopy_args("incremental", url, WAIT));
    let list = elements(&e, url);
    let inc = id_of(&list, "1.inc");
    let left: Vec<PathBuf> = objects(&store, "between/1.inc")
        .into_iter()
        .filter(|p| !p.starts_with(store.object_file(&format!("between/1.inc/{inc}"))) && !p.ends_with("commit"))
        .collect();
    assert!(left.is_empty(), "the killed job's objects are gone: {left:?}");
    let after_inc = restored(&e, work.path(), "inc", url, &[]);
    assert_eq!(after_inc.len(), 200);
    srv.load(40, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");

    // Again, and this time set gc removes what the killed job left; the earlier elements restore exactly.
    let second = killed_between_data_and_control(&store, &data, url, "between/2.inc");
    let srv = serve(&data, &e);
    assert_eq!(srv.hot_copy_status(&second)["status"], "failed");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "latest", url, &[]), after_inc);
    assert_eq!(restored(&e, work.path(), "full", url, &["--backup-element-id", &id_of(&list, "full")]), before);
    let out = offline_ok(&e, &["set", "gc", url]);
    assert!(out.contains("0 unpublished job(s) removed, 1 kept"), "{out}");
    let out = offline_ok(&e, &["set", "gc", "--min-age", "0s", url]);
    assert!(out.contains("2 published element(s) kept, 1 unpublished job(s) removed"), "{out}");
    assert_eq!(objects(&store, "between/2.inc"), Vec::<PathBuf>::new());
    offline_ok(&e, &["check", url]);
}

#[test]
fn the_store_stopped_mid_upload_fails_the_job_naming_the_store_and_leaves_the_set_as_it_was() {
    let mut store = S3sServer::start();
    let e = store.endpoint().clone();
    let work = tmp();
    let data = work.path().join("data");
    let url = "s3://backset-test/stopped";
    let mark = work.path().join("mark");
    let srv = serve_with_atoms(&data, &e, 200, 2000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let before = restored(&e, work.path(), "before", url, &[]);
    srv.load(60, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let srv = serve_bounded_retries(&data, &e, &e.url, Some(("incremental:before-control", &mark)));
    let job = incremental_at_its_pause(&srv, url, &mark);
    // The store goes away with the element's data uploaded and its control objects still to send.
    store.stop();
    std::fs::remove_file(&mark).unwrap();
    let status = final_status(&srv, &job);
    assert_eq!(status["status"], "failed", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains(&format!("cannot reach the store at {}", e.url)), "{message}");
    assert!(message.contains("check that it is running"), "{message}");
    assert!(message.contains("s3://backset-test/stopped/1.inc/"), "names the object: {message}");

    // The store back: the set is as it was, and what the job left is an unpublished job's objects.
    store.restart();
    let list = elements(&e, url);
    assert_eq!(list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["full"], "{list:?}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "after", url, &[]), before);
    let out = offline_ok(&e, &["set", "gc", "--min-age", "0s", url]);
    assert!(out.contains("1 published element(s) kept, 1 unpublished job(s) removed"), "{out}");
    offline_ok(&e, &["check", url]);
}

#[test]
fn a_restore_and_a_check_from_s3_stream_several_atoms_at_once_and_restore_them_exactly() {
    let (_store, e, work) = s3_case();
    let data = work.path().join("data");
    let url = "s3://backset-test/streams";
    let srv = serve_with_atoms(&data, &e, 300, 2000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let direct = restored(&e, work.path(), "direct", url, &[]);
    assert_eq!(direct.len(), 300);
    // The same restore through a proxy that counts the requests in flight: one stream of atoms and the journal's
    // thread would make at most 2 at once.
    let proxy = backset_s3test::SlowDownProxy::start(&e.url);
    let through = proxy.endpoint_for(&e);
    assert_eq!(restored(&through, work.path(), "proxied", url, &[]), direct);
    let most = proxy.most_in_flight();
    let cap = backset_engine::limits::RESTORE_STREAMS_IN_FLIGHT + 1;
    assert!((3..=cap).contains(&most), "requests in flight at once: {most} (atoms streamed at once, and the journal)");
    // A check streams several atom files at once too (one at a time, beside the journal's 2 threads, makes 3 at most).
    let proxy = backset_s3test::SlowDownProxy::start(&e.url);
    let through = proxy.endpoint_for(&e);
    offline_ok(&through, &["check", url]);
    let most = proxy.most_in_flight();
    let cap = backset_engine::limits::CHECK_STREAMS_IN_FLIGHT + backset_engine::limits::CHECK_JOURNAL_THREADS;
    assert!((4..=cap).contains(&most), "requests of a check in flight at once: {most}");
}

#[test]
fn throttling_by_the_store_is_retried_then_fails_the_job_with_the_stores_message_and_leaves_the_set_as_it_was() {
    let store = S3sServer::start();
    let e = store.endpoint().clone();
    let proxy = backset_s3test::SlowDownProxy::start(&e.url);
    let work = tmp();
    let data = work.path().join("data");
    let url = "s3://backset-test/throttled";
    let mark = work.path().join("mark");
    let srv = serve_bounded_retries(&data, &e, proxy.url(), None);
    srv.load(200, 2000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    // A few SlowDowns (fewer than the 3 retries of one request): retried, and the full completes.
    let srv = serve_bounded_retries(&data, &e, proxy.url(), Some(("incremental:before-control", &mark)));
    proxy.fail_next(3);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    assert_eq!(proxy.slow_downs(), 3, "the store answered SlowDown 3 times");
    let before = restored(&e, work.path(), "before", url, &[]);
    assert_eq!(before.len(), 200);
    srv.load(60, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");

    // Throttled for good, mid-job: the job fails with the store's words after its retries.
    let srv = serve_bounded_retries(&data, &e, proxy.url(), Some(("incremental:before-control", &mark)));
    let job = incremental_at_its_pause(&srv, url, &mark);
    let answered = proxy.slow_downs();
    proxy.fail_next(usize::MAX);
    std::fs::remove_file(&mark).unwrap();
    let status = final_status(&srv, &job);
    assert_eq!(status["status"], "failed", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains("the store is throttling requests"), "{message}");
    assert!(message.contains(backset_s3test::SLOW_DOWN_MESSAGE), "the store's own words: {message}");
    assert!(message.contains("retry later"), "what to do: {message}");
    assert!(message.contains("s3://backset-test/throttled/1.inc/"), "names the object: {message}");
    assert!(proxy.slow_downs() >= answered + 4, "a first attempt and 3 retries: {}", proxy.slow_downs());
    proxy.fail_next(0);
    let list = elements(&e, url);
    assert_eq!(list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["full"], "{list:?}");
    offline_ok(&e, &["check", url]);
    assert_eq!(restored(&e, work.path(), "after", url, &[]), before);
}

/// The objects below `prefix` of the test bucket on moto's server, as (key, size, ETag), through an unsigned
/// ListObjectsV2 (moto does not check signatures; its own listing, not Backset's).
fn moto_objects(e: &Endpoint, prefix: &str) -> Vec<(String, u64, String)> {
    use std::io::{Read, Write};
    let addr = e.url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /{}?list-type=2&max-keys=1000&prefix={prefix} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        e.bucket
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let field = |block: &str, name: &str| {
        let start = block.find(&format!("<{name}>")).map(|i| i + name.len() + 2)?;
        let end = block[start..].find(&format!("</{name}>"))? + start;
        Some(block[start..end].to_owned())
    };
    answer
        .split("<Contents>")
        .skip(1)
        .map(|block| {
            (
                field(block, "Key").unwrap(),
                field(block, "Size").unwrap().parse().unwrap(),
                field(block, "ETag").unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn moto_full_incremental_and_journal_restore_what_was_committed_with_multipart_and_create_only_puts() {
    let Some(moto) = backset_s3test::MotoServer::start("moto_full_incremental_and_journal") else { return };
    let e = moto.endpoint().clone();
    let work = tmp();
    let data = work.path().join("data");
    let start = |data: &Path| Server::start_with_env(data, &["--atom-buckets", "64"], &as_refs(&e.env()));
    let url = "s3://backset-test/moto";
    // A full before any checkpoint: the whole 12 MB of journal is one data file, uploaded in parts.
    let srv = start(&data);
    srv.load(300, 40_000);
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let srv = start(&data);
    srv.load(100, 3000);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    let srv = start(&data);
    srv.cli_ok(&hotcopy_args("incremental", url, WAIT));
    srv.load(50, 100);
    srv.cli_ok(&hotcopy_args("journal", url, WAIT));

    // What was committed (the test's own writes): key i of the last write to it.
    let value = |i: usize| {
        "v".repeat(if i < 50 {
            100
        } else if i < 100 {
            3000
        } else {
            40_000
        })
    };
    let committed = |upto: &dyn Fn(usize) -> String| -> std::collections::BTreeMap<String, String> {
        (0..300).map(|i| (format!("key-{i:06}"), upto(i))).collect()
    };
    let list = elements(&e, url);
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{list:?}");
    offline_ok(&e, &["check", url]);
    let full = restored(&e, work.path(), "full", url, &["--backup-element-id", &id_of(&list, "full")]);
    assert_eq!(full, committed(&|_| "v".repeat(40_000)));
    let inc = restored(&e, work.path(), "inc", url, &["--backup-element-id", &id_of(&list, "1.inc")]);
    assert_eq!(inc, committed(&|i| "v".repeat(if i < 100 { 3000 } else { 40_000 })));
    assert_eq!(restored(&e, work.path(), "latest", url, &[]), committed(&value));

    // On moto's own listing: the full's journal went as a multipart upload (its ETag `<md5>-<parts>`), and each
    // element has its commit record (created with If-None-Match: *; the race below is what that guards).
    let full_objects = moto_objects(&e, &format!("moto/full/{}/data/", id_of(&list, "full")));
    let large: Vec<_> = full_objects.iter().filter(|(_, size, _)| *size > 8 << 20).collect();
    assert!(!large.is_empty(), "a data file over one part: {full_objects:?}");
    assert!(large.iter().all(|(_, _, etag)| etag.contains('-')), "uploaded in parts: {large:?}");
    for name in ["full", "1.inc", "1.jnl"] {
        assert_eq!(moto_objects(&e, &format!("moto/{name}/commit")).len(), 1, "{name}");
    }
}

#[test]
fn moto_two_fulls_racing_for_one_prefix_publish_one_and_the_loser_fails_clearly() {
    let Some(moto) = backset_s3test::MotoServer::start("moto_two_fulls_racing") else { return };
    let e = moto.endpoint().clone();
    let work = tmp();
    two_fulls_race(&e, work.path(), "s3://backset-test/race");
    // One element id under full/ on moto's listing: the loser removed its objects.
    let ids: std::collections::BTreeSet<String> = moto_objects(&e, "race/full/")
        .into_iter()
        .filter_map(|(key, _, _)| {
            key.strip_prefix("race/full/").and_then(|k| k.split_once('/')).map(|(id, _)| id.to_owned())
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// Bytes of the data objects (`<element>/<id>/data/...`) the store holds below `prefix` now.
fn data_bytes(store: &S3sServer, prefix: &str) -> u64 {
    let data = objects(store, prefix).into_iter().filter(|p| p.components().any(|c| c.as_os_str() == "data"));
    data.map(|p| std::fs::metadata(&p).map_or(0, |m| m.len())).sum()
}

#[test]
fn a_hot_copy_to_s3_under_max_rate_stores_what_it_reads_as_it_reads_it_within_the_budget() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let srv = serve_with_atoms(&data, &e, 400, 2000);
    let url = "s3://backset-test/throttled";
    let max_rate: u64 = 250_000;
    let asked = std::time::Instant::now();
    let body = serde_json::json!({"type": "full", "backupSetDirs": {"0": url}, "maxRate": max_rate});
    let (code, v) = srv.post_json_checked("/databases/demo/hotCopy", &body);
    assert_eq!(code, 200, "{v}");
    let job = (v["coordinatorStartId"].as_u64().unwrap(), v["hotCopyId"].as_str().unwrap().to_owned());
    // (seconds since the request, data bytes stored, bytes read and planned) while it runs.
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let end = loop {
        let v = srv.hot_copy_status(&job);
        let t = asked.elapsed().as_secs_f64();
        samples.push((t, data_bytes(&store, "throttled"), v["bytesTotal"].as_u64().unwrap_or(0)));
        if v["status"] != "running" {
            break v;
        }
        assert!(t < 120.0, "the hot copy still runs after 120 s: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = asked.elapsed().as_secs_f64();
    assert_eq!(end["status"], "completed", "{end}");
    let total = end["bytesTotal"].as_u64().unwrap();
    let stored = data_bytes(&store, "throttled");
    assert!(total > 3 * max_rate, "a job of several seconds at the rate: {total} bytes");
    // Every byte read is stored, and nothing else counts: the data objects are the bytes the copier read.
    assert_eq!(stored, total, "{end}");
    // The copier reads at most the rate from the job's start (no burst: limit.rs), and the store gets only what was
    // read: at every moment, the data stored is within the budget since the request, and the whole took at least
    // the bytes at the rate.
    for &(t, bytes, _) in &samples {
        assert!(
            bytes as f64 <= max_rate as f64 * t,
            "{bytes} bytes stored {t:.2} s after the request at {max_rate} B/s"
        );
    }
    assert!(took >= total as f64 / max_rate as f64, "{total} bytes in {took:.2} s at {max_rate} B/s");
    // Stored as it is read, not after: half way through the job's time, a good part of the data is on the store.
    let half = samples.iter().find(|s| s.0 >= took / 2.0).expect("a sample half way");
    assert!(half.1 >= total / 4, "only {} of {total} bytes stored {:.2} s into a {took:.2} s job", half.1, half.0);
}

/// Threads of process `pid` named `name` (`/proc/PID/task/*/comm`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
fn a_server_that_wrote_to_many_urls_keeps_the_clients_of_none_it_no_longer_uses() {
    let (_store, e, work) = s3_case();
    let data = work.path().join("data");
    let srv = serve_with_atoms(&data, &e, 20, 1000);
    // A set a week, as an operator's nightly script names them: each a client of its own while it is written.
    for week in 0..6 {
        srv.cli_ok(&hotcopy_args("full", &format!("s3://backset-test/2026-w{week}"), WAIT));
    }
    srv.cli_ok(&hotcopy_args("full", "s3://backset-test/2026-w6", WAIT));
    // The last client may stay until the next is opened (its runtime's 2 workers, and a blocking thread or two it
    // may still keep); those of the six before it are gone with their threads, where each kept 2 before.
    let threads = threads_named(srv.pid(), "backset-s3");
    assert!(threads <= 4, "{threads} object-storage client threads after 7 sets written one after the other");
}

#[test]
fn a_hot_copy_to_s3_completes_a_large_file_while_the_next_goes_up() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    let proxy = backset_s3test::SlowDownProxy::start(&e.url);
    let through = proxy.endpoint_for(&e);
    // Two atoms of about 12 MB and a journal of 24 MB: three files over 8 MiB (UPLOAD_PART_BYTES), each a
    // multipart upload.
    let srv = Server::start_with_env(&data, &["--atom-buckets", "2"], &as_refs(&through.env()));
    srv.load(2400, 10_000);
    let srv = restart(srv, &data, &through);
    let url = "s3://backset-test/overlap";
    proxy.hold_completions();
    let (most_held, out) = std::thread::scope(|scope| {
        let copy = scope.spawn(|| srv.cli(&hotcopy_args("full", url, WAIT)));
        // One completion at a time would hold the job at the first: wait for a second (or give up and release).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut most = 0;
        while most < 2 && std::time::Instant::now() < deadline {
            most = most.max(proxy.held_completions());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        proxy.release_completions();
        (most, copy.join().unwrap())
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(most_held >= 2, "completions of multipart uploads waiting at once: {most_held}, where 2 files could be");
    let full = id_of(&elements(&e, url), "full");
    let large = objects(&store, &format!("overlap/full/{full}/data"))
        .iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 8 << 20)
        .count();
    assert!(large >= 2, "{large} objects larger than one part");
    offline_ok(&e, &["check", url]);
    let expected: std::collections::BTreeMap<String, String> =
        (0..2400).map(|i| (format!("key-{i:06}"), "v".repeat(10_000))).collect();
    assert_eq!(restored(&e, work.path(), "r", url, &[]), expected);
}

#[test]
fn an_atom_larger_than_a_part_is_stored_as_a_multipart_upload_that_checks_and_restores() {
    let (store, e, work) = s3_case();
    let data = work.path().join("data");
    // One atom holding every key: over 8 MiB (UPLOAD_PART_BYTES), so its object goes up in parts.
    let srv = Server::start_with_env(&data, &["--atom-buckets", "1"], &as_refs(&e.env()));
    srv.load(1100, 10_000);
    let srv = restart(srv, &data, &e);
    let url = "s3://backset-test/large";
    srv.cli_ok(&hotcopy_args("full", url, WAIT));
    let full = id_of(&elements(&e, url), "full");
    let atoms = objects(&store, &format!("large/full/{full}/data/atoms"));
    let largest = atoms.iter().map(|p| std::fs::metadata(p).unwrap().len()).max().unwrap_or(0);
    assert!(largest > 8 << 20, "an atom object larger than one part: {largest} bytes in {atoms:?}");
    offline_ok(&e, &["check", url]);
    let expected: std::collections::BTreeMap<String, String> =
        (0..1100).map(|i| (format!("key-{i:06}"), "v".repeat(10_000))).collect();
    assert_eq!(restored(&e, work.path(), "r", url, &[]), expected);
}
