//! The engine's integration test support: every helper that more than one test file needs, once.
//!
//! - The reference store's test helpers (`tempdir`, `config`, `wait_until`, `file_names`, `segment_files`,
//!   `journal_records`, `assert_entries_eq`, ...), from the one file that holds them (`refstore/tests/support`): the
//!   engine's tests hot-copy, restore and check the store's archives.
//! - [`hotcopy`]: a structural read-back of a backup set and a restore done by the test itself; job waits.
//! - [`setmaker`]: backup sets made by hot copy jobs under load, and the template set the restore and check tests
//!   share.
//! - Here: damage ([`flip_byte`]), the seeded generator ([`rng`]), tree copies and scans, load and state helpers.
#![allow(dead_code, unused_imports)]

#[path = "../../../refstore/tests/support/mod.rs"]
mod store;

pub mod hotcopy;
pub mod setmaker;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backset_engine::set::read_state;
use backset_format::layout::TMP_DIR;
use backset_format::State;
use backset_refstore::workload::Workload;
use backset_refstore::{Config, StorageGroup};
use rand::SeedableRng;

pub use store::*;

/// The tests' seeded generator (Xoshiro256++, portable and documented): a failure replays from its seed.
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// The generator for `seed`.
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Whether the long variants of the tests run (`BACKSET_LONG_TESTS=1`).
pub fn long() -> bool {
    std::env::var("BACKSET_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// Damages `path` in place: the byte at `offset` is XORed with `mask`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let mut f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ mask]).unwrap();
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    each_file(from, to, &|from, to| {
        fs::copy(from, to).unwrap();
    });
}

/// A copy of the tree `from` at `to` whose files are hard links (a case breaks the link of the file it damages).
pub fn link_tree(from: &Path, to: &Path) {
    each_file(from, to, &|from, to| fs::hard_link(from, to).unwrap());
}

/// Recreates the directories of `from` under `to` and calls `file` for each regular file with its new path.
fn each_file(from: &Path, to: &Path, file: &dyn Fn(&Path, &Path)) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            each_file(&entry.path(), &target, file);
        } else {
            file(&entry.path(), &target);
        }
    }
}

/// Everything under `root` except `skip`: path -> (type, length, BLAKE3 of the content, link target). Never follows
/// a link.
pub fn scan(root: &Path, skip: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p == skip {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {} {}", md.len(), blake3::hash(&fs::read(&p).unwrap()).to_hex())
            };
            out.insert(p, what);
        }
    }
    out
}

/// `c` for a database under hot copies: journal hot copies enabled, and a background checkpoint every `checkpoint`
/// (atoms change and the journal is recycled while they are copied; incrementals find changed atoms).
pub fn live(mut c: Config, checkpoint: Duration) -> Config {
    c.journal_hot_copy = true;
    c.checkpoint_interval = Some(checkpoint);
    c
}

/// `c` with two SMs and two storage groups: `east` (id 1) on archive 0, `west` (id 2) on archive 1.
pub fn east_west(mut c: Config) -> Config {
    c.sms = 2;
    c.storage_groups = Some(vec![
        StorageGroup { id: 1, name: "east".into(), archives: vec![0] },
        StorageGroup { id: 2, name: "west".into(), archives: vec![1] },
    ]);
    c
}

/// Waits until the workload has acknowledged `n` more transactions, failing the test after `timeout`.
pub fn more_load(wl: &Workload, n: u64, timeout: Duration) {
    let seen = wl.acked_count();
    wait_until("the workload to acknowledge more transactions", timeout, || wl.acked_count() >= seen + n);
}

/// The state of the backup set `set`.
pub fn state_of(set: &Path) -> State {
    read_state(set).unwrap()
}

/// The set's state is `before` and its `tmp/` is empty: a failed or cancelled hot copy left the set as it was.
pub fn assert_as_before(set: &Path, before: &State) {
    assert_eq!(&state_of(set), before, "state of {} unchanged", set.display());
    let tmp = set.join(TMP_DIR);
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{} holds {left:?}", tmp.display());
}
