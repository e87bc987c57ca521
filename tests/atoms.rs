//! The atom granularity of the embedded database (`backset serve --atom-buckets`), end to end through the real
//! binary: chosen at creation and kept, refused past its limits, and what it buys: an incremental after changes to
//! 1% of the atoms copies those atoms (and the journal of the changes), a few percent of a full.
//!
//! The test routes keys to atoms itself, from the store's documented rule (docs/HOTCOPY.md, "What an incremental
//! copies": bucket = BLAKE3(key) bytes 0..8 as a little-endian u64, modulo the atom buckets; atom file name = the
//! atom id in 16 lower-case hex digits), so what it expects is not computed by the code under test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use support::{backset, stderr, text, tmp, wait_until, Server};

/// The atom (group 0) that holds `key` in a database of `buckets` atoms per storage group.
fn atom_of(key: &str, buckets: u64) -> u64 {
    let h = blake3::hash(key.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) % buckets
}

/// The ids of the atom files in `dir` (names of 16 hex digits; a checkpoint's `.tmp-` files are not atoms).
fn atom_files(dir: &Path) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 16)
        .map(|n| u64::from_str_radix(&n, 16).unwrap())
        .collect()
}

fn number(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn an_incremental_after_changes_to_one_percent_of_the_atoms_copies_at_most_three_percent_of_a_full() {
    const BUCKETS: u64 = 4096;
    const KEYS: usize = 16_384;
    const VALUE_BYTES: usize = 512;
    let dir = tmp();
    let data = dir.path().join("data");
    let set = dir.path().join("set");
    let srv = Server::start(&data, &["--atom-buckets", &BUCKETS.to_string()]);
    srv.load(KEYS, VALUE_BYTES);
    let key = |i: usize| format!("key-{i:06}");
    // The first key of each atom that holds one.
    let mut holders: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..KEYS {
        holders.entry(atom_of(&key(i), BUCKETS)).or_insert_with(|| key(i));
    }
    let atoms_dir = data.join("database").join("0").join("atoms");
    let present: BTreeSet<u64> = holders.keys().copied().collect();
    assert!(present.len() > 4000, "{} atoms hold keys", present.len());
    assert!(
        wait_until(Duration::from_secs(120), || atom_files(&atoms_dir) == present),
        "the checkpointer did not write the {} atoms that hold keys: {} files in {}",
        present.len(),
        atom_files(&atoms_dir).len(),
        atoms_dir.display()
    );
    let full = srv.completed("full", &set);

    // Change one key in each of 1% of the atoms (every 100th atom that holds a key), in one transaction.
    let changed: BTreeMap<u64, String> = holders.iter().step_by(100).map(|(a, k)| (*a, k.clone())).collect();
    assert_eq!(changed.len(), present.len().div_ceil(100));
    let put: Map<String, Value> =
        changed.values().map(|k| (k.clone(), Value::String("w".repeat(VALUE_BYTES)))).collect();
    let a = srv.post_json("/databases/demo/transactions", &json!({ "put": put }));
    assert_eq!(a.code, 200, "{}", a.text);
    // Wait for the checkpointer to rewrite them: the files of the changed atoms hold the new value.
    let new_value = "w".repeat(VALUE_BYTES);
    let rewritten = || {
        changed.keys().all(|a| {
            std::fs::read(atoms_dir.join(format!("{a:016x}")))
                .is_ok_and(|b| b.windows(new_value.len()).any(|w| w == new_value.as_bytes()))
        })
    };
    assert!(wait_until(Duration::from_secs(60), rewritten), "the changed atoms were not checkpointed");
    let changed_bytes: u64 =
        changed.keys().map(|a| std::fs::metadata(atoms_dir.join(format!("{a:016x}"))).unwrap().len()).sum();

    let inc = srv.completed("incremental", &set);
    let element = set.join("1.inc").join("data");
    let copied_atoms = atom_files(&element.join("atoms"));
    let expected: BTreeSet<u64> = changed.keys().copied().collect();
    assert_eq!(copied_atoms, expected, "the incremental copied other atoms than the {} changed", expected.len());
    let journal_files = std::fs::read_dir(element.join("journal")).map_or(0, |d| d.count() as u64);
    assert_eq!(number(&inc, "filesDone"), expected.len() as u64 + journal_files, "{inc}");
    let (full_bytes, inc_bytes) = (number(&full, "bytesDone"), number(&inc, "bytesDone"));
    assert!(
        inc_bytes >= changed_bytes,
        "the incremental copied {inc_bytes} bytes, the changed atoms hold {changed_bytes}"
    );
    assert!(
        inc_bytes * 100 <= full_bytes * 3,
        "the incremental copied {inc_bytes} bytes, more than 3% of the full's {full_bytes}"
    );

    // Nothing changed since: the next incremental copies no atom at all.
    let again = srv.completed("incremental", &set);
    assert!(atom_files(&set.join("2.inc").join("data").join("atoms")).is_empty(), "{again}");
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn the_atom_buckets_chosen_at_creation_stay_with_the_database() {
    let dir = tmp();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--atom-buckets", "1000"]);
    srv.load(2000, 16);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1000 atoms per storage group"), "{out}");
    // Every atom file the clean stop wrote is one of the 1000, and the keys are where the rule puts them.
    let files = atom_files(&data.join("database").join("0").join("atoms"));
    let expected: BTreeSet<u64> = (0..2000).map(|i| atom_of(&format!("key-{i:06}"), 1000)).collect();
    assert_eq!(files, expected);

    // Reopened without the option: the stored count, not the default.
    let srv = Server::start(&data, &[]);
    assert_eq!(srv.get_checked("/databases/demo/keys/key-001999").1["value"], "v".repeat(16));
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1000 atoms per storage group"), "{out}");

    // Another count for the existing database is refused, naming both.
    let out =
        backset(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &support::s(&data), "--atom-buckets", "2000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("atom_buckets = 1000") && err.contains("2000") && err.contains("fixed at creation"), "{err}");
}

#[test]
fn atom_buckets_past_the_limits_are_refused() {
    let dir = tmp();
    let data = |name: &str| support::s(&dir.path().join(name));
    // MAX_ATOM_BUCKETS (1048576) per storage group.
    for bad in ["0", "1048577"] {
        let out = backset(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &data(bad), "--atom-buckets", bad]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains(&format!("--atom-buckets {bad}: give 1 to 1048576")), "{}", text(&out));
        assert!(!dir.path().join(bad).join("database").exists(), "a refused option created a database");
    }
    // MAX_ARCHIVE_ATOMS (2097152) per archive: two groups of 1048576 on one SM fit, three do not.
    let out = backset(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data("three"),
        "--storage-groups",
        "3",
        "--atom-buckets",
        "1048576",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("more than the limit of 2097152 atoms per archive: give at most 699050 atom buckets"),
        "{}",
        text(&out)
    );
    let srv = Server::start(&dir.path().join("two"), &["--storage-groups", "2", "--atom-buckets", "1048576"]);
    srv.load(10, 8);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1048576 atoms per storage group"), "{out}");
}
