//! Check of a backup set made under load, healthy and with one defect at a time (each reported with its element and
//! file, and refused by restore, which then leaves its destination empty); metadata-only check; check of an
//! archive directory.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backset_copier::JobControl;
use backset_engine::check::{check_archive, check_set, CheckError, CheckOptions, CheckReport, Defect, DefectKind};
use backset_engine::restore::{restore, RestoreError, RestoreOptions, RestorePoint};
use backset_engine::set::SetError;
use backset_format::journal::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use backset_format::TxnRange;
use backset_refstore::{Database, Txn};
use support::setmaker::template;
use support::{config, file_names, flip_byte, journal_records, segment_files, tempdir};

fn full_check(set: &Path) -> CheckReport {
    check_set(set, &CheckOptions::default()).unwrap()
}

/// The first file (by name) in `dir`.
fn first_file(dir: &Path) -> PathBuf {
    dir.join(file_names(dir).into_iter().next().unwrap_or_else(|| panic!("{} is empty", dir.display())))
}

/// `defects` hold one of `kind` naming `element` and `file`.
fn assert_defect(defects: &[Defect], kind: DefectKind, element: Option<&str>, file: &Path) {
    let found = defects.iter().any(|d| {
        d.kind == kind && d.element.map(|e| e.to_string()).as_deref() == element && d.file.as_deref() == Some(file)
    });
    assert!(found, "no {kind:?} defect for {element:?} {}; defects: {defects:#?}", file.display());
}

/// Restore to `target` is refused, and the destination is left empty; returns the error.
fn assert_restore_refused(set: &Path, target: RestorePoint) -> RestoreError {
    let dest = tempdir();
    let err = restore(set, dest.path(), target, &RestoreOptions::default()).unwrap_err();
    assert!(file_names(dest.path()).is_empty(), "{err}: the destination holds {:?}", file_names(dest.path()));
    err
}

/// A restore to the element `name` of `set` is refused for the data file `file` of that element.
fn assert_restore_refused_for_data_file(set: &Path, name: &str, file: &Path) {
    match assert_restore_refused(set, element_target(name)) {
        RestoreError::DataFile { element, path, .. } => {
            assert_eq!(element.to_string(), name);
            assert_eq!(path, file);
        }
        other => panic!("{other}"),
    }
}

fn element_target(name: &str) -> RestorePoint {
    RestorePoint::Element(template().element(name).element_id)
}

fn expected_range() -> Vec<TxnRange> {
    let t = template();
    vec![TxnRange { first: t.element("full").txn_range.last, last: t.latest() }]
}

#[test]
fn a_healthy_set_is_ok_and_metadata_only_gives_the_same_restorable_range() {
    let t = template();
    let r = full_check(&t.set());
    assert!(r.is_ok(), "{:#?}", r.defects);
    assert_eq!(r.restorable, expected_range());
    assert_eq!(r.elements, t.elements.len());
    let data_files: usize = t
        .elements
        .iter()
        .map(|e| {
            let d = t.set().join(e.name().to_string()).join("data");
            let count = |sub: &str| if d.join(sub).exists() { file_names(&d.join(sub)).len() } else { 0 };
            count("atoms") + count("journal")
        })
        .sum();
    assert_eq!(r.files_read as usize, data_files);

    let m = check_set(t.set(), &CheckOptions { metadata_only: true, ..CheckOptions::default() }).unwrap();
    assert!(m.is_ok(), "{:#?}", m.defects);
    assert_eq!(m.restorable, r.restorable);
    assert_eq!((m.files_read, m.bytes_read), (0, 0));
    assert!(m.elapsed < Duration::from_secs(1), "metadata-only check took {:?}", m.elapsed);

    // Metadata-only never reads data/: it gives the same answer with every data/ moved away.
    let (_keep, set) = t.copy();
    let away = tempdir();
    for e in &t.elements {
        let name = e.name().to_string();
        fs::rename(set.join(&name).join("data"), away.path().join(&name)).unwrap();
    }
    let m2 = check_set(&set, &CheckOptions { metadata_only: true, ..CheckOptions::default() }).unwrap();
    assert!(m2.is_ok(), "{:#?}", m2.defects);
    assert_eq!(m2.restorable, r.restorable);
    let f = full_check(&set);
    assert_defect(&f.defects, DefectKind::DataMissing, Some("full"), &set.join("full/data"));
    assert!(f.restorable.is_empty(), "nothing is restorable without data: {:?}", f.restorable);
}

#[test]
fn check_progress_counts_every_data_byte_and_a_cancelled_check_stops() {
    let t = template();
    let data_bytes: u64 = t
        .elements
        .iter()
        .flat_map(|e| ["atoms", "journal"].map(|sub| t.set().join(e.name().to_string()).join("data").join(sub)))
        .filter(|d| d.exists())
        .flat_map(|d| fs::read_dir(d).unwrap().map(|f| f.unwrap().metadata().unwrap().len()))
        .sum();
    let control = Arc::new(JobControl::new());
    let r =
        check_set(t.set(), &CheckOptions { control: Some(Arc::clone(&control)), ..CheckOptions::default() }).unwrap();
    assert!(r.is_ok(), "{:#?}", r.defects);
    assert_eq!(r.bytes_read, data_bytes);
    // Atom files go through the copier, journal slices are read beside it: the progress counts both.
    let p = control.progress();
    assert_eq!((p.bytes_done, p.bytes_total), (data_bytes, data_bytes));

    let cancelled = Arc::new(JobControl::new());
    cancelled.cancel();
    match check_set(t.set(), &CheckOptions { control: Some(cancelled), ..CheckOptions::default() }) {
        Err(CheckError::Cancelled { .. }) => {}
        other => panic!("a cancelled check must stop: {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_an_atom_file() {
    let (_keep, set) = template().copy();
    let atom = first_file(&set.join("full/data/atoms"));
    flip_byte(&atom, 100, 0x40);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Hash, Some("full"), &atom);
    assert_eq!(r.defects.len(), 1, "{:#?}", r.defects);
    // The full's window is no longer restorable; later bases do not need that file only if they re-copied it.
    assert!(r.restorable.first().is_none_or(|x| x.first > template().element("full").txn_range.last));
    assert_restore_refused_for_data_file(&set, "full", &atom);
}

#[test]
fn a_flipped_byte_in_a_journal_slice() {
    let (_keep, set) = template().copy();
    let slice = first_file(&set.join("1.jnl/data/journal"));
    flip_byte(&slice, fs::metadata(&slice).unwrap().len() / 2, 0x40);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Hash, Some("1.jnl"), &slice);
    // A restore that needs the slice refuses: to 1.jnl's end point, the base is the full and the records after the
    // full's E come from 1.jnl, unless 1.inc's journal reaches back to them (then 1.inc reaches further).
    let t = template();
    let (e_full, r_inc) = (t.element("full").txn_range.last, t.element("1.inc").txn_range.first);
    if r_inc > e_full + 1 {
        match assert_restore_refused(&set, element_target("1.jnl")) {
            RestoreError::DataFile { element, path, reason, .. } => {
                assert_eq!(element.to_string(), "1.jnl");
                assert_eq!(path, slice);
                assert!(reason.contains("chunk 0"), "{reason}");
            }
            other => panic!("{other}"),
        }
        assert!(!r.restorable.iter().any(|x| x.contains(t.element("1.jnl").txn_range.last)), "{:?}", r.restorable);
    } else {
        eprintln!("1.inc's journal starts at {r_inc}, right after the full's E {e_full}: 1.jnl is not needed");
    }
    // A restore to the full needs only the full (its atoms and its own journal slices).
    let dest = tempdir();
    restore(&set, dest.path(), element_target("full"), &RestoreOptions::default()).unwrap();
    assert!(r.restorable.iter().any(|x| x.contains(e_full)));
}

#[test]
fn a_flipped_byte_in_each_control_file() {
    for file in ["element", "manifest", "catalog"] {
        let (_keep, set) = template().copy();
        let path = set.join("1.inc/control").join(file);
        flip_byte(&path, 60, 0x40);
        let r = full_check(&set);
        assert_defect(&r.defects, DefectKind::Metadata, Some("1.inc"), &path);
        assert!(r.restorable.is_empty(), "a set with damaged metadata is not restorable: {:?}", r.restorable);
        let m = check_set(&set, &CheckOptions { metadata_only: true, ..CheckOptions::default() }).unwrap();
        assert_defect(&m.defects, DefectKind::Metadata, Some("1.inc"), &path);
        match assert_restore_refused(&set, RestorePoint::Latest) {
            RestoreError::Set(e @ SetError::Metadata { .. }) => {
                assert_eq!(e.element().unwrap().to_string(), "1.inc");
                assert_eq!(e.path().as_deref(), Some(path.as_path()));
            }
            other => panic!("{file}: {other}"),
        }
    }
}

#[test]
fn a_flipped_byte_in_the_state() {
    let (_keep, set) = template().copy();
    let state = set.join("state");
    flip_byte(&state, 70, 0x40);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Metadata, None, &state);
    assert!(r.restorable.is_empty());
    let err = assert_restore_refused(&set, RestorePoint::Latest);
    assert!(matches!(&err, RestoreError::Set(SetError::Metadata { element: None, .. })), "{err}");
    assert!(err.to_string().contains(&state.display().to_string()), "{err}");
}

#[test]
fn a_truncated_data_file() {
    let (_keep, set) = template().copy();
    let atom = first_file(&set.join("1.inc/data/atoms"));
    let len = fs::metadata(&atom).unwrap().len();
    OpenOptions::new().write(true).open(&atom).unwrap().set_len(len - 7).unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Size, Some("1.inc"), &atom);
    match assert_restore_refused(&set, element_target("1.inc")) {
        RestoreError::DataFile { element, path, reason, .. } => {
            assert_eq!(element.to_string(), "1.inc");
            assert_eq!(path, atom);
            assert!(reason.contains(&format!("{} bytes", len - 7)), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_missing_data_file() {
    let (_keep, set) = template().copy();
    let atom = first_file(&set.join("full/data/atoms"));
    fs::remove_file(&atom).unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::MissingFile, Some("full"), &atom);
    assert_restore_refused_for_data_file(&set, "full", &atom);
}

#[test]
fn extra_files() {
    let (_keep, set) = template().copy();
    let extra_atom = set.join("full/data/atoms/00000000deadbeef");
    let junk = set.join("1.jnl/data/junk");
    let top = set.join("notes.txt");
    fs::write(&extra_atom, b"not an atom").unwrap();
    fs::write(&junk, b"junk").unwrap();
    fs::write(&top, b"hello").unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::ExtraFile, Some("full"), &extra_atom);
    assert_defect(&r.defects, DefectKind::ExtraFile, Some("1.jnl"), &junk);
    assert_defect(&r.defects, DefectKind::ExtraFile, None, &top);
    assert_eq!(r.defects.len(), 3, "{:#?}", r.defects);
    // Every listed file is intact: the restorable range is unchanged, and a restore (which reads only what the
    // manifests list) succeeds without the extra files.
    assert_eq!(r.restorable, expected_range());
    let dest = tempdir();
    restore(&set, dest.path(), element_target("full"), &RestoreOptions::default()).unwrap();
    assert!(!file_names(&dest.path().join("atoms")).contains(&"00000000deadbeef".to_string()));
}

#[test]
fn a_broken_chain() {
    let (_keep, set) = template().copy();
    let away = tempdir();
    fs::rename(set.join("1.inc"), away.path().join("1.inc")).unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::MissingElement, Some("1.inc"), &set.join("1.inc"));
    assert!(r.restorable.is_empty());
    match assert_restore_refused(&set, element_target("full")) {
        RestoreError::Set(e @ SetError::ElementMissing { .. }) => {
            assert_eq!(e.element().unwrap().to_string(), "1.inc")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn several_defects_are_all_reported() {
    let (_keep, set) = template().copy();
    let a = first_file(&set.join("full/data/atoms"));
    let b = first_file(&set.join("2.inc/data/journal"));
    let c = first_file(&set.join("3.jnl/data/journal"));
    flip_byte(&a, 90, 0x40);
    fs::remove_file(&b).unwrap();
    let len = fs::metadata(&c).unwrap().len();
    OpenOptions::new().write(true).open(&c).unwrap().set_len(len + 3).unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Hash, Some("full"), &a);
    assert_defect(&r.defects, DefectKind::MissingFile, Some("2.inc"), &b);
    assert_defect(&r.defects, DefectKind::Size, Some("3.jnl"), &c);
    assert_eq!(r.defects.len(), 3, "{:#?}", r.defects);
}

/// An archive of the reference store with atoms and several journal segments, closed (dropped after a
/// checkpoint, so the journal since R stays on disk).
fn archive_with_atoms_and_journal() -> (tempfile::TempDir, PathBuf, u64) {
    let root = tempdir();
    let db = Database::open(root.path(), config("archive")).unwrap();
    for i in 0..200u64 {
        db.commit(&Txn::new().put(format!("k{}", i % 50), vec![b'v'; 60 + (i as usize % 5) * 20])).unwrap();
    }
    db.checkpoint_now().unwrap();
    let mut last = 0;
    for i in 0..150u64 {
        last = db.commit(&Txn::new().put(format!("k{}", i % 70), vec![b'w'; 80])).unwrap().txn_id;
    }
    drop(db);
    let dir = root.path().join("0");
    (root, dir, last)
}

#[test]
fn check_archive_finds_a_flipped_atom_byte_and_a_corrupt_record() {
    let (_root, dir, last) = archive_with_atoms_and_journal();
    let r = check_archive(&dir).unwrap();
    assert!(r.is_ok(), "{:#?}", r.defects);
    assert!(r.atoms > 0 && r.segments > 1, "{r:?}");
    assert_eq!(r.last_txn, last);
    assert_eq!(r.torn_tail, None);

    // A flipped byte in an atom body.
    let copy = tempdir();
    support::copy_tree(&dir, copy.path());
    let atom = first_file(&copy.path().join("atoms"));
    flip_byte(&atom, fs::metadata(&atom).unwrap().len() - 1, 0x40);
    let r = check_archive(copy.path()).unwrap();
    assert_defect(&r.defects, DefectKind::Hash, None, &atom);

    // A corrupt record with valid records after it: corruption, named with its segment and offset.
    let copy = tempdir();
    support::copy_tree(&dir, copy.path());
    let records = journal_records(copy.path());
    let seg = records.iter().map(|r| r.0).find(|s| records.iter().filter(|r| r.0 == *s).count() >= 3).unwrap();
    let path = segment_files(copy.path()).into_iter().find(|p| p.ends_with(format!("{seg:016x}"))).unwrap();
    flip_byte(&path, (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 2) as u64, 0x40);
    let r = check_archive(copy.path()).unwrap();
    assert_defect(&r.defects, DefectKind::Journal, None, &path);
    let d = r.defects.iter().find(|d| d.file.as_deref() == Some(path.as_path())).unwrap();
    assert!(
        d.what.contains("corrupt") && d.what.contains(&format!("byte offset {SEGMENT_HEADER_BYTES}")),
        "{}",
        d.what
    );

    // A torn tail at the end of the last segment is reported as such, and is not a defect.
    let copy = tempdir();
    support::copy_tree(&dir, copy.path());
    let last_seg = segment_files(copy.path()).pop().unwrap();
    let len = fs::metadata(&last_seg).unwrap().len();
    OpenOptions::new().append(true).open(&last_seg).unwrap().write_all(&[7u8; 10]).unwrap();
    let r = check_archive(copy.path()).unwrap();
    assert!(r.is_ok(), "{:#?}", r.defects);
    let torn = r.torn_tail.expect("a torn tail");
    assert_eq!((torn.offset, torn.len), (len, 10));
}

/// Rewrites a metadata file through the format's writer (a valid envelope: only the meaning is wrong).
fn rewrite<T: backset_format::Metadata>(path: &Path, change: impl FnOnce(&mut T)) {
    let mut value: T = backset_format::fsio::read_metadata(path).unwrap();
    change(&mut value);
    let name = path.file_name().unwrap().to_str().unwrap();
    backset_format::fsio::write_metadata(path.parent().unwrap(), name, &value).unwrap();
}

#[test]
fn control_files_that_decode_but_disagree() {
    use backset_format::{AtomState, Catalog, ElementInfo, State};

    // A catalog whose hash for a copied atom differs from the manifest's.
    let (_keep, set) = template().copy();
    let path = set.join("1.inc/control/catalog");
    rewrite::<Catalog>(&path, |c| {
        let e = c.atoms.iter_mut().find(|e| matches!(e.state, AtomState::Present { .. })).unwrap();
        e.state = AtomState::Present { hash: [7; 32] };
    });
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Catalog, Some("1.inc"), &path);
    assert!(r.restorable.first().is_some_and(|x| !x.contains(template().element("1.inc").txn_range.last)));
    match assert_restore_refused(&set, element_target("1.inc")) {
        RestoreError::Set(e @ SetError::Inconsistent { .. }) => assert_eq!(e.path().as_deref(), Some(path.as_path())),
        other => panic!("{other}"),
    }

    // An incremental whose parent is not the previous base.
    let (_keep, set) = template().copy();
    let path = set.join("2.inc/control/element");
    let full_id = template().element("full").element_id;
    rewrite::<ElementInfo>(&path, |i| i.parent = Some(full_id));
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Chain, Some("2.inc"), &set.join("2.inc"));
    assert!(r.restorable.is_empty());
    assert!(matches!(assert_restore_refused(&set, RestorePoint::Latest), RestoreError::Set(SetError::Chain { .. })));

    // A gap in the journal chain: 2.jnl starts 3 transactions late (state and element info agree).
    let (_keep, set) = template().copy();
    let id = template().element("2.jnl").element_id;
    rewrite::<State>(&set.join("state"), |s| {
        s.elements.iter_mut().find(|e| e.element_id == id).unwrap().txn_range.first += 3;
    });
    rewrite::<ElementInfo>(&set.join("2.jnl/control/element"), |i| i.txn_range.first += 3);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Chain, Some("2.jnl"), &set.join("2.jnl"));
    let d = r.defects.iter().find(|d| d.kind == DefectKind::Chain).unwrap();
    assert!(d.what.contains("not contiguous"), "{}", d.what);
    // Its records below the new start are now outside its range.
    assert_defect(&r.defects, DefectKind::Journal, Some("2.jnl"), &first_file(&set.join("2.jnl/data/journal")));

    // An element of another archive's set (its participants do not include this set's archive).
    let (_keep, set) = template().copy();
    let path = set.join("1.jnl/control/element");
    rewrite::<ElementInfo>(&path, |i| i.participants[0].archive_id = 5);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Inconsistent, Some("1.jnl"), &path);

    // Element info and state disagree on the range.
    let (_keep, set) = template().copy();
    let path = set.join("3.jnl/control/element");
    rewrite::<ElementInfo>(&path, |i| i.txn_range.last -= 1);
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Inconsistent, Some("3.jnl"), &path);
    assert!(r.restorable.is_empty());
}

#[test]
fn data_that_matches_its_hashes_but_not_its_metadata() {
    use backset_format::{Catalog, ElementInfo, State};

    // The last journal element claims one transaction less than its slices hold.
    let (_keep, set) = template().copy();
    let j3 = template().element("3.jnl");
    rewrite::<State>(&set.join("state"), |s| {
        s.elements.iter_mut().find(|e| e.element_id == j3.element_id).unwrap().txn_range.last -= 1;
    });
    rewrite::<ElementInfo>(&set.join("3.jnl/control/element"), |i| i.txn_range.last -= 1);
    let r = full_check(&set);
    let last_slice = set.join("3.jnl/data/journal").join(file_names(&set.join("3.jnl/data/journal")).pop().unwrap());
    assert_defect(&r.defects, DefectKind::Journal, Some("3.jnl"), &last_slice);
    // 3.jnl is needed beyond 2.inc's end point only: the range stops before what 3.jnl supplies.
    assert_eq!(r.restorable_max(), Some(template().element("2.inc").txn_range.last));

    // A catalog LSN that differs from the copied atom's header.
    let (_keep, set) = template().copy();
    let atom = first_file(&set.join("full/data/atoms"));
    let atom_id = u64::from_str_radix(atom.file_name().unwrap().to_str().unwrap(), 16).unwrap();
    rewrite::<Catalog>(&set.join("full/control/catalog"), |c| {
        let e = c.atoms.iter_mut().find(|e| e.atom_id == atom_id).unwrap();
        e.lsn = e.lsn.saturating_sub(1);
    });
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::Atom, Some("full"), &atom);
    match assert_restore_refused(&set, element_target("full")) {
        RestoreError::DataFile { element, reason, .. } => {
            assert_eq!(element.to_string(), "full");
            assert!(reason.contains("the catalog says"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_symbolic_link_in_data_is_refused_even_to_identical_bytes() {
    let (_keep, set) = template().copy();
    let atom = first_file(&set.join("full/data/atoms"));
    let elsewhere = tempdir();
    let target = elsewhere.path().join("atom");
    fs::rename(&atom, &target).unwrap();
    std::os::unix::fs::symlink(&target, &atom).unwrap();
    let r = full_check(&set);
    assert_defect(&r.defects, DefectKind::NotRegular, Some("full"), &atom);
    match assert_restore_refused(&set, element_target("full")) {
        RestoreError::DataFile { element, path, reason, .. } => {
            assert_eq!((element.to_string(), path), ("full".to_string(), atom));
            assert!(reason.contains("not a regular file"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn leftovers_of_an_interrupted_hot_copy_are_notes_not_defects() {
    use backset_format::{ElementEntry, ElementKind, ElementStatus, State};
    let t = template();
    let (_keep, set) = t.copy();
    // A crash during a journal hot copy: its in-progress entry in the state and its directory under tmp/.
    let id = uuid::Uuid::new_v4();
    let first = t.latest() + 1;
    rewrite::<State>(&set.join("state"), |s| {
        s.elements.push(ElementEntry {
            kind: ElementKind::Journal,
            sequence: 4,
            element_id: id,
            status: ElementStatus::InProgress,
            txn_range: TxnRange { first, last: first },
            begin_micros: 1,
            end_micros: 0,
        })
    });
    fs::create_dir_all(set.join("tmp").join(id.simple().to_string()).join("data/journal")).unwrap();
    let r = full_check(&set);
    assert!(r.is_ok(), "{:#?}", r.defects);
    assert!(r.notes.iter().any(|n| n.contains("under construction")), "{:?}", r.notes);
    assert_eq!(r.restorable, expected_range());
    let dest = tempdir();
    let report = restore(&set, dest.path(), RestorePoint::Latest, &RestoreOptions::default()).unwrap();
    assert_eq!(report.target_txn, t.latest());
}

#[test]
fn a_record_that_differs_between_elements_is_reported() {
    use backset_format::{encode_record, Manifest, RecordReader};
    let (_keep, set) = template().copy();
    // Rewrite the full's first journal slice with the first record's commit time changed, and its manifest entry to
    // match: every hash holds, but the full and 1.jnl now disagree on that transaction.
    let manifest_path = set.join("full/control/manifest");
    let manifest: Manifest = backset_format::fsio::read_metadata(&manifest_path).unwrap();
    let entry = manifest.files.iter().find(|f| f.kind == backset_format::FileKind::Journal).unwrap().clone();
    let path = set.join("full/data/journal").join(format!("{:016x}", entry.id));
    let bytes = fs::read(&path).unwrap();
    let (head, body) = if entry.offset == 0 { bytes.split_at(SEGMENT_HEADER_BYTES) } else { bytes.split_at(0) };
    let base = entry.offset + head.len() as u64;
    let mut out = head.to_vec();
    for (n, rec) in RecordReader::new(entry.id, base, body, 0).enumerate() {
        let rec = rec.unwrap();
        encode_record(&mut out, rec.txn_id, rec.timestamp_micros + u64::from(n == 0), rec.payload).unwrap();
    }
    assert_eq!(out.len(), bytes.len());
    fs::write(&path, &out).unwrap();
    rewrite::<Manifest>(&manifest_path, |m| {
        let f = m.files.iter_mut().find(|f| f.kind == entry.kind && f.id == entry.id).unwrap();
        f.hash = *blake3::hash(&out).as_bytes();
        f.chunk_hashes = out.chunks(1 << 20).map(|c| *blake3::hash(c).as_bytes()).collect();
    });
    let r = full_check(&set);
    let d = r.defects.iter().find(|d| d.kind == DefectKind::Journal).unwrap_or_else(|| panic!("{:#?}", r.defects));
    assert!(d.what.contains("differs from the one in element"), "{}", d.what);
    assert!(r.defects.iter().all(|d| d.kind == DefectKind::Journal), "{:#?}", r.defects);
}
