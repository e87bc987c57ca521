//! Fault 2, full disk: backup targets on a small file system (a 24 MiB ext4 image loop-mounted under `target/`; else
//! a size-limited tmpfs; else a clear skip). A full hot copy of a database bigger than the file system fails with
//! `No space left on device` and the path, gives the space back, and leaves no set; the database keeps serving and
//! loses no acknowledged write. A set made on the small file system while the database was small checks clean and
//! restores the same after incremental and journal hot copies into it failed on the full disk.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::{backset, s, tmp, Server};

/// A mounted small file system, unmounted (and its image removed) when dropped.
struct SmallFs {
    mnt: PathBuf,
    image: Option<PathBuf>,
    kind: &'static str,
}

impl SmallFs {
    /// A loop-mounted ext4 image of `mib` MiB under `dir`, else a tmpfs of that size; `None` (with the reason) when
    /// this machine cannot mount either (not root, no loop devices, no mkfs.ext4).
    fn make(dir: &Path, mib: u64) -> Result<Self, String> {
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let image = dir.join("small.img");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        let run = |cmd: &mut Command| match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(e.to_string()),
        };
        let ext4 = run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image))
            .and_then(|()| run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mnt)));
        match ext4 {
            Ok(()) => Ok(Self { mnt, image: Some(image), kind: "ext4 on a loop device" }),
            Err(e1) => {
                let _ = std::fs::remove_file(&image);
                match run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={mib}m",)])
                    .arg("tmpfs")
                    .arg(&mnt))
                {
                    Ok(()) => Ok(Self { mnt, image: None, kind: "tmpfs" }),
                    Err(e2) => Err(format!("loop-mounted ext4: {e1}; tmpfs: {e2}")),
                }
            }
        }
    }

    /// Bytes free for an unprivileged writer.
    fn avail(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.mnt).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.mnt).status();
        if !st.is_ok_and(|s| s.success()) {
            // Still busy (a test failed with a server writing there): detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(i) = &self.image {
            let _ = std::fs::remove_file(i);
        }
    }
}

/// A small file system, or `None` after printing why the test is skipped.
fn small_fs(dir: &Path, mib: u64) -> Option<SmallFs> {
    match SmallFs::make(dir, mib) {
        Ok(fs) => {
            eprintln!("small file system: {mib} MiB {} at {}", fs.kind, fs.mnt.display());
            Some(fs)
        }
        Err(why) => {
            eprintln!("SKIPPED: this machine cannot mount a small file system ({why}); run as root with loop devices");
            None
        }
    }
}

/// Commits `n` keys of `bytes`-byte values, a few per transaction; returns the acknowledged state.
fn grow(srv: &Server, prefix: &str, n: usize, bytes: usize, state: &mut BTreeMap<String, String>) -> u64 {
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let put: BTreeMap<String, String> =
            chunk.iter().map(|i| (format!("{prefix}-{i:05}"), format!("{prefix}{i}-{}", "v".repeat(bytes)))).collect();
        let a = srv.post_json("/databases/demo/transactions", &json!({ "put": put }));
        assert_eq!(a.code, 200, "{}", a.text);
        last = a.json["txnId"].as_u64().unwrap();
        state.extend(put);
    }
    last
}

/// Every acknowledged key reads its value from the live server.
fn assert_all_readable(srv: &Server, state: &BTreeMap<String, String>) {
    for (k, v) in state {
        let a = srv.get(&format!("/databases/demo/keys/{k}"));
        assert_eq!(
            (a.code, a.json["value"].as_str()),
            (200, Some(v.as_str())),
            "{k}: {}",
            &a.text[..a.text.len().min(200)]
        );
    }
}

/// The job failed with ENOSPC and names a path on the small file system.
fn assert_enospc(v: &Value, mnt: &Path) {
    assert_eq!(v["status"], "failed", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(msg.contains(&s(mnt)), "the message does not name the path on the full file system: {msg}");
}

fn check_ok(set: &Path) -> String {
    let out = backset(&["check", &s(set)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check {}: {text}", set.display());
    text
}

/// A `kind` hot copy of a 40 MB database onto the 24 MiB file system: it fails with ENOSPC and the path, leaves
/// nothing, gives the space back, and the database keeps serving every acknowledged write.
fn copy_onto_a_full_fs(kind: &str) {
    let dir = tmp();
    let Some(fs) = small_fs(dir.path(), 24) else { return };
    let srv = Server::start(&dir.path().join("data"), &[]);
    let mut state = BTreeMap::new();
    // About 40 MB of data: more than the 24 MiB file system holds.
    grow(&srv, "big", 160, 250_000, &mut state);
    let free_before = fs.avail();
    {
        let target = fs.mnt.join(kind);
        let v = srv.hot_copy(kind, &target);
        assert_enospc(&v, &fs.mnt);
        if kind == "simple" {
            // As NuoDB's does, a failed simple hot copy keeps `<target>.incomplete` (holding only atoms/ and
            // journal/) for the operator to look at; the next simple hot copy to that target replaces it.
            let incomplete = fs.mnt.join("simple.incomplete");
            let names: Vec<_> = std::fs::read_dir(&incomplete)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(names.iter().all(|n| n == "atoms" || n == "journal"), "{names:?}");
            std::fs::remove_dir_all(&incomplete).unwrap();
        }
        // No set and no archive is left, and the space is given back.
        assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(), "{kind}: {target:?} left");
        let left: Vec<_> = std::fs::read_dir(&fs.mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(
            left.iter().all(|n| n == "lost+found" || n == kind),
            "{kind}: the failed copy left {left:?} on the small file system"
        );
        let free_after = fs.avail();
        assert!(
            free_after + (1 << 20) >= free_before,
            "{kind}: space not given back: {free_before} -> {free_after} bytes"
        );
        // The database keeps serving: it commits and reads, and has every acknowledged write.
        grow(&srv, &format!("after-{kind}"), 4, 100, &mut state);
        assert_all_readable(&srv, &state);
    }
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn full_hot_copy_onto_a_full_file_system_fails_with_enospc_and_the_path_and_loses_nothing() {
    copy_onto_a_full_fs("full");
}

/// A simple hot copy that fails on a full disk fails the same way; it keeps `<target>.incomplete`, as NuoDB's does, and
/// once that is removed the space is back.
#[test]
fn simple_hot_copy_onto_a_full_file_system_fails_with_enospc_and_keeps_only_its_incomplete_directory() {
    copy_onto_a_full_fs("simple");
}

#[test]
fn a_set_on_a_full_file_system_stays_valid_after_failed_incremental_and_journal_copies() {
    let dir = tmp();
    let Some(fs) = small_fs(dir.path(), 24) else { return };
    let srv = Server::start(&dir.path().join("data"), &[]);
    let mut state = BTreeMap::new();
    let small_txn = grow(&srv, "small", 40, 1000, &mut state);
    let set = fs.mnt.join("set");
    let v = srv.hot_copy("full", &set);
    assert_eq!(v["status"], "completed", "{v}");
    let before = check_ok(&set);
    let full_end = v["participants"][0]["txnRange"][1].as_u64().unwrap();
    assert!(full_end >= small_txn, "{v}");
    let state_at_full = state.clone();
    // The database grows past what the file system holds.
    grow(&srv, "big", 160, 250_000, &mut state);
    for kind in ["incremental", "journal"] {
        let v = srv.hot_copy(kind, &set);
        assert_enospc(&v, &fs.mnt);
        // The set is exactly as valid as before: same elements, same restorable range, no defect.
        let after = check_ok(&set);
        let summary = |t: &str| t.lines().last().unwrap_or("").to_string();
        assert_eq!(summary(&after), summary(&before), "{kind}: the set changed:\n{before}\n---\n{after}");
        grow(&srv, &format!("after-{kind}"), 4, 100, &mut state);
        assert_all_readable(&srv, &state);
    }
    // It restores to what it held: the state acknowledged at the full's end.
    let restored = dir.path().join("restored");
    let out = backset(&["restore", "--restore-dir", &s(&restored), &s(&set)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = backset(&["archive", "dump", &s(&restored)]);
    assert!(out.status.success());
    let got: BTreeMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["value"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        got == state_at_full,
        "the restore of the set differs from the state at its full ({} vs {} keys)",
        got.len(),
        state_at_full.len()
    );
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
}
