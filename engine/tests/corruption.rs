//! Corruption matrix (fault 3 of the reliability issue): every kind of file and directory a backup set holds x each
//! damage (a flipped byte at a seeded offset, a truncation to a seeded length including 0, a deletion, an extra file
//! beside it), plus elements copied from another set of the same database and of another database.
//!
//! For every case: `check` reports a defect naming the element and the damaged file (or one inside a damaged
//! directory, or the extra file), and a restore to latest and to the damaged element's end point either refuses with
//! an error naming the file and leaves its destination absent, or (when the damage lies outside what that restore
//! needs) succeeds and yields exactly the workload oracle's state at the target. Metadata damage must always refuse,
//! an extra file must never make a restore fail.
//!
//! Short variant: one seed, one element of each type. `BACKSET_LONG_TESTS=1`: five seeds (other offsets, lengths and
//! files), every element.
//! Run: `cargo test -p backset-engine --test corruption -- --nocapture`.

mod support;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backset_engine::check::{check_set, CheckOptions, Defect};
use backset_engine::restore::{restore, RestoreError, RestoreOptions, RestorePoint};
use backset_format::{ElementEntry, ElementKind};
use backset_refstore::workload::{replay_upto, AckedTxn, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Database};
use rand::RngExt;
use support::copy_tree;
use support::setmaker::{template, SetMaker};
use support::{assert_entries_eq, config, file_names, flip_byte, link_tree, live, long, more_load, rng, tempdir, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    Flip,
    Truncate,
    Delete,
    Extra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// The state, or a control file: restore must always refuse.
    Metadata,
    /// A data file or directory: restore refuses when it needs it.
    Data,
    /// An element directory or its `control/`: restore must refuse.
    ControlDir,
}

/// One thing in a set to damage: its path relative to the set, the element it belongs to, whether it is a file.
#[derive(Debug, Clone)]
struct Item {
    rel: PathBuf,
    element: Option<ElementEntry>,
    is_file: bool,
    what: What,
}

/// Every kind of file and directory of the template set; for data, one file per element picked by `rng`.
fn items(set: &Path, elements: &[ElementEntry], rng: &mut Rng) -> Vec<Item> {
    let mut v = vec![Item { rel: "state".into(), element: None, is_file: true, what: What::Metadata }];
    for e in elements {
        let name = e.name().to_string();
        let el = Some(e.clone());
        let item = |rel: String, is_file, what| Item { rel: rel.into(), element: el.clone(), is_file, what };
        v.push(item(name.clone(), false, What::ControlDir));
        v.push(item(format!("{name}/control"), false, What::ControlDir));
        for f in ["element", "manifest", "catalog"] {
            v.push(item(format!("{name}/control/{f}"), true, What::Metadata));
        }
        v.push(item(format!("{name}/data"), false, What::Data));
        for sub in ["atoms", "journal"] {
            let d = set.join(&name).join("data").join(sub);
            if !d.exists() {
                continue;
            }
            v.push(item(format!("{name}/data/{sub}"), false, What::Data));
            let files = file_names(&d);
            if !files.is_empty() {
                let pick = &files[rng.random_range(0..files.len())];
                v.push(item(format!("{name}/data/{sub}/{pick}"), true, What::Data));
            }
        }
    }
    v
}

/// Applies `damage` to `path`; returns the path a defect must name (the extra file for `Extra`).
fn apply(path: &Path, is_file: bool, damage: Damage, rng: &mut Rng, zero: bool) -> PathBuf {
    match damage {
        Damage::Flip => {
            let len = fs::metadata(path).unwrap().len();
            let offset = rng.random_range(0..len);
            flip_byte(path, offset, 1 << (offset % 8));
        }
        Damage::Truncate => {
            let len = fs::metadata(path).unwrap().len();
            let to = if zero { 0 } else { rng.random_range(0..len) };
            OpenOptions::new().write(true).open(path).unwrap().set_len(to).unwrap();
        }
        Damage::Delete if is_file => fs::remove_file(path).unwrap(),
        Damage::Delete => fs::remove_dir_all(path).unwrap(),
        Damage::Extra => {
            // Beside it, under a name the format would use there when there is one (an id not in the manifest).
            let parent = path.parent().unwrap();
            let name = match parent.file_name().and_then(|n| n.to_str()) {
                Some("atoms" | "journal") => "00000000deadbeef".to_string(),
                _ => "extra".to_string(),
            };
            let extra = parent.join(name);
            fs::write(&extra, b"not part of the set").unwrap();
            return extra;
        }
    }
    path.to_path_buf()
}

/// What a case ended with, for the summary.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    refused: usize,
    restored: usize,
}

/// A restore of `set` to `target` (expected txn `txn`) either refuses naming `named` (and `element`), leaving the
/// destination absent, or restores exactly the oracle's state at `txn`. `must_refuse`/`must_succeed` pin it.
#[allow(clippy::too_many_arguments)]
fn restore_case(
    set: &Path,
    target: RestorePoint,
    txn: u64,
    acked: &[AckedTxn],
    named: &Path,
    element: Option<&str>,
    expect: Option<bool>,
    case: &str,
    tally: &mut Tally,
) {
    let keep = tempdir();
    let dest = keep.path().join("dest");
    match restore(set, &dest, target, &RestoreOptions::default()) {
        Ok(report) => {
            assert_ne!(expect, Some(false), "{case}: restore to {target:?} succeeded, it must refuse");
            assert_eq!(report.target_txn, txn, "{case}");
            let restored = read_archive(&dest).unwrap_or_else(|e| panic!("{case}: restored archive: {e}"));
            assert_entries_eq(&restored.entries, &replay_upto(acked, txn), &format!("{case}: restore to {target:?}"));
            assert_eq!(restored.last_txn, txn, "{case}");
            tally.restored += 1;
        }
        Err(err) => {
            assert_ne!(expect, Some(true), "{case}: restore to {target:?} must succeed: {err}");
            assert!(!dest.exists(), "{case}: {err}: the refused restore left {}", dest.display());
            let msg = err.to_string();
            assert!(
                msg.contains(&named.display().to_string()),
                "{case}: the error does not name {}: {msg}",
                named.display()
            );
            if let Some(e) = element {
                assert!(msg.contains(&format!("element {e}")), "{case}: the error does not name element {e}: {msg}");
            }
            assert!(
                !matches!(err, RestoreError::OutOfRange { .. } | RestoreError::NothingRestorable { .. }),
                "{case}: {err}"
            );
            tally.refused += 1;
        }
    }
}

/// `defects` hold one naming `element` and `path` (or a file inside the directory `path`).
fn assert_named(defects: &[Defect], element: Option<&str>, path: &Path, case: &str) {
    let found = defects.iter().any(|d| {
        d.element.map(|e| e.to_string()).as_deref() == element && d.file.as_deref().is_some_and(|f| f.starts_with(path))
    });
    assert!(found, "{case}: no defect names element {element:?} and {}; defects: {defects:#?}", path.display());
}

#[test]
fn every_kind_of_file_times_every_damage() {
    let t = template();
    let seeds: Vec<u64> = if long() { (1..=5).collect() } else { vec![1] };
    let mut tally = Tally::default();
    let latest = t.latest();
    for seed in seeds {
        let mut rng = rng(seed);
        // Short: one element of each type (the full, the first incremental, the last journal element, which every
        // restore to latest needs). Long: every element.
        let elements: Vec<ElementEntry> = if long() {
            t.elements.clone()
        } else {
            ["full", "1.inc", "3.jnl"].iter().map(|n| t.element(n).clone()).collect()
        };
        for item in items(&t.set(), &elements, &mut rng) {
            for damage in [Damage::Flip, Damage::Truncate, Damage::Delete, Damage::Extra] {
                if !item.is_file && matches!(damage, Damage::Flip | Damage::Truncate) {
                    continue;
                }
                let keep = tempdir();
                let set = keep.path().join("set");
                link_tree(&t.set(), &set);
                let target = set.join(&item.rel);
                if item.is_file && matches!(damage, Damage::Flip | Damage::Truncate) {
                    // Damage a private copy, never the template's file.
                    let bytes = fs::read(&target).unwrap();
                    fs::remove_file(&target).unwrap();
                    fs::write(&target, bytes).unwrap();
                }
                // Seed 1 truncates to 0 bytes; later seeds to a random length.
                let named = apply(&target, item.is_file, damage, &mut rng, seed == 1);
                let case = format!("seed {seed}: {damage:?} {}", item.rel.display());
                let element = match (&item.element, damage) {
                    // An extra file at the top of the set belongs to no element.
                    (None, _) => None,
                    (Some(e), Damage::Extra) if item.rel.components().count() == 1 => {
                        let _ = e;
                        None
                    }
                    (Some(e), _) => Some(e.name().to_string()),
                };
                let report = check_set(&set, &CheckOptions::default()).unwrap();
                assert!(!report.is_ok(), "{case}: check found nothing");
                assert_named(&report.defects, element.as_deref(), &named, &case);

                let expect = match (damage, item.what) {
                    (Damage::Extra, _) => Some(true),
                    (_, What::Metadata | What::ControlDir) => Some(false),
                    (_, What::Data) => None,
                };
                restore_case(
                    &set,
                    RestorePoint::Latest,
                    latest,
                    &t.acked,
                    &named,
                    element.as_deref(),
                    expect,
                    &case,
                    &mut tally,
                );
                let e = item.element.as_ref().unwrap_or_else(|| t.elements.last().unwrap());
                restore_case(
                    &set,
                    RestorePoint::Element(e.element_id),
                    e.txn_range.last,
                    &t.acked,
                    &named,
                    element.as_deref(),
                    expect,
                    &case,
                    &mut tally,
                );
                tally.cases += 1;
            }
        }
    }
    println!(
        "corruption matrix: {} cases, {} restores refused, {} restores succeeded with the oracle's data",
        tally.cases, tally.refused, tally.restored
    );
    assert!(tally.cases >= 80, "{tally:?}");
    assert!(tally.refused > 0 && tally.restored > 0, "{tally:?}");
}

/// Three sets: `x` and `y` of one database, `z` of another; each full, 1.jnl, 1.inc, 2.jnl, made under load.
struct Sets {
    _dir: tempfile::TempDir,
    x: PathBuf,
    y: PathBuf,
    z: PathBuf,
    x_elements: Vec<ElementEntry>,
}

fn make_sets() -> Sets {
    let dir = tempdir();
    let make = |name: &str, seed: u64, sets: &[&str]| {
        let db_dir = tempdir();
        let cfg = live(config(name), Duration::from_millis(3));
        let db = Arc::new(Database::open(db_dir.path(), cfg).unwrap());
        let wl =
            Workload::start(Arc::clone(&db), WorkloadConfig { seed, threads: 2, key_space: 200, ..Default::default() });
        let more = |n: u64| more_load(&wl, n, Duration::from_secs(60));
        more(100);
        // One set after the other: a database keeps the journal for the journal hot copies of its latest set.
        let mut elements = Vec::new();
        for s in sets {
            let mut m = SetMaker::full(&dir.path().join(s), &db, 0);
            for step in 0..3 {
                more(60);
                if step == 1 {
                    m.incremental();
                } else {
                    m.journal();
                }
            }
            if elements.is_empty() {
                elements = m.elements();
            }
        }
        let report = wl.stop();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        db.close().unwrap();
        elements
    };
    let x_elements = make("swap-a", 11, &["x", "y"]);
    make("swap-b", 12, &["z"]);
    let (x, y, z) = (dir.path().join("x"), dir.path().join("y"), dir.path().join("z"));
    Sets { _dir: dir, x, y, z, x_elements }
}

#[test]
fn elements_copied_from_another_set_of_the_same_or_another_database() {
    let sets = make_sets();
    let mut cases = 0;
    for from in [&sets.y, &sets.z] {
        for e in &sets.x_elements {
            let name = e.name().to_string();
            let keep = tempdir();
            let set = keep.path().join("set");
            copy_tree(&sets.x, &set);
            fs::remove_dir_all(set.join(&name)).unwrap();
            copy_tree(&from.join(&name), &set.join(&name));
            let case = format!("{name} copied from {}", from.display());
            let report = check_set(&set, &CheckOptions::default()).unwrap();
            assert_named(&report.defects, Some(&name), &set.join(&name), &case);
            assert!(report.restorable.is_empty(), "{case}: {:?}", report.restorable);
            for target in [RestorePoint::Latest, RestorePoint::Element(e.element_id)] {
                let dest = keep.path().join("dest");
                let err = restore(&set, &dest, target, &RestoreOptions::default())
                    .err()
                    .unwrap_or_else(|| panic!("{case}: restore to {target:?} accepted a spliced set"));
                assert!(!dest.exists(), "{case}: {err}");
                let msg = err.to_string();
                assert!(msg.contains(&format!("element {name}")), "{case}: {msg}");
                assert!(msg.contains(&set.join(&name).display().to_string()), "{case}: {msg}");
            }
            cases += 1;
        }
    }
    println!("spliced elements: {cases} cases (same database and another database), every one refused");
    assert_eq!(cases, 2 * sets.x_elements.len());
    assert!(sets.x_elements.iter().any(|e| e.kind == ElementKind::Journal));
}
