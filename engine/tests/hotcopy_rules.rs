//! The rules of hot copy jobs: refusals with NuoDB's messages, a journal hot copy beside a running full, cancel in
//! each stage (held there deterministically by a paused rate budget) and a failure, each leaving the sets as valid
//! as before with the next hot copy working, and statuses that survive a restart of the manager.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backset_engine::hotcopy::{
    HotCopyError, HotCopyManager, HotCopyRequest, HotCopyStatus, HotCopyType, JobState, MSG_CANCELLED,
    MSG_PROCESS_STOPPED,
};
use backset_engine::set::BackupSet;
use backset_format::fsio::{read_metadata, write_metadata};
use backset_format::layout::{ElementName, TMP_DIR};
use backset_format::{AtomState, ElementEntry, ElementInfo, ElementKind, ElementStatus, FileKind, State, TxnRange};
use backset_refstore::workload::{key, replay_upto};
use backset_refstore::{read_archive, Config, Database, Txn};
use support::hotcopy::{check_set, load, range_of, restore_by_hand, wait_completed, wait_end, JOB_TIMEOUT};
use support::{assert_as_before, assert_entries_eq, config, scan, state_of, tempdir, wait_until};
use uuid::Uuid;

fn cfg(name: &str, sms: usize, journal_hot_copy: bool) -> Config {
    let mut c = config(name);
    c.sms = sms;
    c.journal_hot_copy = journal_hot_copy;
    c
}

fn status(m: &HotCopyManager, started: (u64, Uuid)) -> HotCopyStatus {
    m.status(started.0, started.1, None).unwrap()
}

/// Waits until participant `i` of a job shows `message`.
fn wait_stage(m: &HotCopyManager, started: (u64, Uuid), i: usize, message: &str) {
    wait_until(&format!("participant {i} at {message:?}"), JOB_TIMEOUT, || {
        let s = status(m, started);
        assert!(!s.is_terminal(), "the job ended before {message:?}: {}", s.message);
        s.participants[i].message == message
    });
}

/// Cancels a job, checks it ends cancelled promptly, and returns its status.
fn cancel(m: &HotCopyManager, started: (u64, Uuid)) -> HotCopyStatus {
    let t = Instant::now();
    let s = m.cancel(started.0, started.1, Some(JOB_TIMEOUT)).unwrap();
    assert_eq!((s.status, s.message.as_str()), (JobState::Cancelled, MSG_CANCELLED), "{s:?}");
    // The copier stops within 100 ms; the rest is removing the element and rewriting the state (fsyncs).
    assert!(t.elapsed() < Duration::from_secs(5), "cancel took {:?}", t.elapsed());
    s
}

#[test]
fn refusals_say_which_rule() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("rules", 1, true)).unwrap());
    load(&db, 1, 200);
    db.checkpoint_now().unwrap();
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind, d: &Path| HotCopyRequest::new(kind).backup_dir(0, d);

    let e = m.start(req(HotCopyType::Journal, &set)).unwrap_err();
    assert!(matches!(e, HotCopyError::NeedsFullForJournal { .. }), "{e}");
    assert!(e.to_string().starts_with("Full or incremental hot copy must be completed before journal hot copy"), "{e}");
    let e = m.start(req(HotCopyType::Incremental, &set)).unwrap_err();
    assert!(e.to_string().starts_with("Full hot copy must be completed before incremental hot copy"), "{e}");
    assert!(e.to_string().contains(&set.display().to_string()), "names the set: {e}");
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let e = m.start(req(HotCopyType::Full, &busy)).unwrap_err();
    assert!(matches!(e, HotCopyError::NotEmpty { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt") && e.to_string().contains("not empty"), "{e}");
    let e = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(7, &set)).unwrap_err();
    assert!(e.to_string().contains("archive 7 is not an archive of database rules"), "{e}");
    let e = m.start(HotCopyRequest::new(HotCopyType::Simple).default_dir(dir.path()).shared(true)).unwrap_err();
    assert!(e.to_string().contains("cannot use --shared"), "{e}");

    // One full per archive at a time: the first is held by a zero --max-rate while the second is refused.
    let first = m.start(req(HotCopyType::Full, &set).max_rate(Some(0))).unwrap();
    wait_stage(&m, first, 0, "Stage1: Copy atoms");
    let e = m.start(req(HotCopyType::Full, &dir.path().join("other"))).unwrap_err();
    assert_eq!(e.to_string(), "Only one full hot copy at a time allowed");
    // The full has begun: the set is initialised, so an incremental now fails for want of a *completed* full, naming
    // the full that runs.
    let e = m.start(req(HotCopyType::Incremental, &set)).unwrap_err();
    assert!(matches!(e, HotCopyError::FullRunning { id, .. } if id == first.1), "{e:?}");
    assert!(e.to_string().contains(&format!("full hot copy {} into backup set", first.1)), "{e}");
    m.set_max_rate(first.0, first.1, None).unwrap();
    wait_completed(&m, first);
    load(&db, 13, 20); // journal for the incremental to copy (its atoms are unchanged)
    let inc = m.start(req(HotCopyType::Incremental, &set).max_rate(Some(0))).unwrap();
    wait_stage(&m, inc, 0, "Stage2: Copy journal");
    let e = m.start(req(HotCopyType::Incremental, &set)).unwrap_err();
    assert_eq!(e.to_string(), "Only one incremental hot copy at a time allowed");
    cancel(&m, inc);

    // Journal hot copy needs the SM's journal retention.
    let db2 = Arc::new(Database::open(dir.path().join("db2"), cfg("noretention", 1, false)).unwrap());
    load(&db2, 2, 50);
    let m2 = HotCopyManager::new(db2.hot_copy_archives(), dir.path().join("manager2")).unwrap();
    let set2 = dir.path().join("set2");
    wait_completed(&m2, m2.start(req(HotCopyType::Full, &set2)).unwrap());
    let e = m2.start(req(HotCopyType::Journal, &set2)).unwrap_err();
    assert!(matches!(e, HotCopyError::JournalDisabled { archive_id: 0 }), "{e}");
    assert!(e.to_string().contains("journal-hot-copy enable"), "{e}");
}

#[test]
fn a_journal_hot_copy_runs_beside_a_running_full() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("beside", 1, true)).unwrap());
    let mut acked = load(&db, 3, 200);
    db.checkpoint_now().unwrap();
    acked.extend(load(&db, 4, 100));
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);

    let full = m.start(req(HotCopyType::Full).max_rate(Some(0))).unwrap();
    wait_stage(&m, full, 0, "Stage1: Copy atoms");
    let r_full = state_of(&set).elements[0].txn_range.first;
    acked.extend(load(&db, 5, 100));
    let j1 = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    assert_eq!(j1.participants[0].txn_range.unwrap().0, r_full, "the first journal element starts at the full's R");
    assert_eq!(status(&m, full).status, JobState::Running, "the full is still running");
    acked.extend(load(&db, 6, 100));
    m.set_max_rate(full.0, full.1, None).unwrap();
    wait_completed(&m, full);
    acked.extend(load(&db, 7, 100));
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());

    // Nothing committed since: the next journal hot copy completes without adding an element.
    let idle = wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    assert_eq!((idle.participants[0].element.as_deref(), idle.participants[0].txn_range), (None, None));

    let summary = check_set(&set);
    let names: Vec<&str> = summary.elements.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["full", "1.jnl", "2.jnl"]);
    let e = range_of(&set, "2.jnl").1;
    assert_eq!(e, acked.iter().map(|a| a.txn_id).max().unwrap(), "the journal reaches the last commit");
    let out = dir.path().join("restored");
    assert_eq!(restore_by_hand(&set, e, &out), "full");
    assert_entries_eq(&read_archive(&out).unwrap().entries, &replay_upto(&acked, e), "full + journal chain");
}

#[test]
fn atoms_dropped_before_or_during_an_incremental_are_recorded_dropped() {
    let dir = tempdir();
    let mut c = cfg("dropped", 1, true);
    c.atom_buckets = Some(backset_copier::limits::MAX_OPEN_FILES as u32 + 40);
    let db = Arc::new(Database::open(dir.path().join("db"), c).unwrap());
    let mut model = BTreeMap::new();
    let mut commit = |db: &Database, txn: Txn| {
        for (k, v) in &txn.puts {
            model.insert(k.clone(), v.clone());
        }
        for k in &txn.deletes {
            model.remove(k);
        }
        db.commit(&txn).unwrap().txn_id
    };
    let keys: Vec<Vec<u8>> = (0..1500).map(key).collect();
    for chunk in keys.chunks(100) {
        commit(&db, chunk.iter().fold(Txn::new(), |t, k| t.put(k.clone(), b"v1".to_vec())));
    }
    db.checkpoint_now().unwrap();
    let atoms: Vec<u64> = db.archives()[0].atoms_lsns().iter().map(|a| a.0).collect();
    assert!(atoms.len() > backset_copier::limits::MAX_OPEN_FILES + 16, "{} atoms", atoms.len());
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    let full_catalog = {
        let b = BackupSet::open(&set).unwrap();
        b.catalog(b.position(ElementName::Full).unwrap()).unwrap()
    };
    let keys_of = |atom: u64| keys.iter().filter(|k| db.atom_of(k) == atom).cloned().collect::<Vec<_>>();

    // Atom `first` is emptied (its file removed) before the incremental lists the atoms; every other atom changes.
    let (first, last) = (atoms[0], *atoms.last().unwrap());
    commit(&db, keys_of(first).into_iter().fold(Txn::new(), |t, k| t.delete(k)));
    for chunk in keys.chunks(100) {
        let t =
            chunk.iter().filter(|k| db.atom_of(k) != first).fold(Txn::new(), |t, k| t.put(k.clone(), b"v2".to_vec()));
        commit(&db, t);
    }
    db.checkpoint_now().unwrap();
    // Atom `last` is emptied while the copier, paused, holds the first atoms open: its file is gone when opened.
    m.set_sm_rate(0, Some(0)).unwrap();
    let inc = m.start(req(HotCopyType::Incremental)).unwrap();
    wait_stage(&m, inc, 0, "Stage1: Copy atoms");
    let tmp = set.join(TMP_DIR);
    wait_until("the copier's first targets", JOB_TIMEOUT, || {
        std::fs::read_dir(&tmp).unwrap().any(|e| std::fs::read_dir(e.unwrap().path().join("data/atoms")).is_ok())
    });
    let e = commit(&db, keys_of(last).into_iter().fold(Txn::new(), |t, k| t.delete(k)));
    db.checkpoint_now().unwrap();
    assert!(!db.archives()[0].atoms_lsns().iter().any(|a| a.0 == last), "atom {last} has no file any more");
    m.set_sm_rate(0, None).unwrap();
    let s = wait_completed(&m, inc);
    assert_eq!(s.participants[0].txn_range.unwrap().1, e);

    let b = BackupSet::open(&set).unwrap();
    let inc = b.position(ElementName::Incremental(1)).unwrap();
    let (catalog, manifest) = (b.catalog(inc).unwrap(), &b.elements()[inc].manifest);
    for atom in [first, last] {
        let entry = catalog.get(atom).unwrap();
        assert_eq!(entry.state, AtomState::Dropped, "atom {atom}");
        assert_eq!(entry.lsn, full_catalog.get(atom).unwrap().lsn, "a dropped atom keeps its last known LSN");
        assert!(!manifest.files.iter().any(|f| f.kind == FileKind::Atom && f.id == atom));
    }
    assert_eq!(manifest.files.iter().filter(|f| f.kind == FileKind::Atom).count(), atoms.len() - 2);
    check_set(&set);
    let out = dir.path().join("restored");
    assert_eq!(restore_by_hand(&set, e, &out), "1.inc");
    assert_entries_eq(&read_archive(&out).unwrap().entries, &model, "restore of the incremental");
}

/// A one-SM database (`dir/db`, journal hot copies on) loaded with 200 transactions of workload seed `seed`, its
/// manager, and a full hot copy of it in `dir/set` with that set's state.
fn one_sm_with_a_full(dir: &Path, name: &str, seed: u64) -> (Arc<Database>, HotCopyManager, PathBuf, State) {
    let db = Arc::new(Database::open(dir.join("db"), cfg(name, 1, true)).unwrap());
    load(&db, seed, 200);
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.join("manager")).unwrap();
    let set = dir.join("set");
    wait_completed(&m, m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set)).unwrap());
    let before = state_of(&set);
    (db, m, set, before)
}

#[test]
fn cancel_in_each_stage_leaves_the_sets_as_before_and_the_next_hot_copy_works() {
    let dir = tempdir();
    // One SM whose atoms are all in its journal (never checkpointed): an incremental passes its atoms at once and
    // is held in Stage2 by a paused SM budget; after a checkpoint it is held in Stage1.
    let (db, m, set, before) = one_sm_with_a_full(dir.path(), "cancel", 8);
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);

    m.set_sm_rate(0, Some(0)).unwrap();
    let inc = m.start(req(HotCopyType::Incremental)).unwrap();
    wait_stage(&m, inc, 0, "Stage2: Copy journal");
    assert_eq!(status(&m, inc).message, "Stage2: Copy journal");
    cancel(&m, inc);
    assert_as_before(&set, &before);

    db.checkpoint_now().unwrap();
    let inc = m.start(req(HotCopyType::Incremental)).unwrap();
    wait_stage(&m, inc, 0, "Stage1: Copy atoms");
    assert_eq!(status(&m, inc).stage, 1);
    cancel(&m, inc);
    assert_as_before(&set, &before);

    // A cancelled full leaves its directory as it found it (absent here), so the same directory takes a new one.
    let set2 = dir.path().join("set2");
    let full = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set2)).unwrap();
    wait_stage(&m, full, 0, "Stage1: Copy atoms");
    cancel(&m, full);
    assert!(!set2.exists(), "the cancelled full removed the set it created");
    m.set_sm_rate(0, None).unwrap();
    wait_completed(&m, m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set2)).unwrap());
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    check_set(&set);
    check_set(&set2);

    // Two SMs: archive 1 held by its paused budget, archive 0 waits for it at the end point barrier, or (when
    // archive 1 has no atom file) at the commit barrier in Stage3.
    let db2 = Arc::new(Database::open(dir.path().join("db2"), cfg("cancel2", 2, true)).unwrap());
    load(&db2, 9, 200);
    db2.archives()[0].checkpoint().unwrap();
    let m2 = HotCopyManager::new(db2.hot_copy_archives(), dir.path().join("manager2")).unwrap();
    let sets = dir.path().join("sets");
    std::fs::create_dir(&sets).unwrap();
    let req2 = |kind| HotCopyRequest::new(kind).default_dir(&sets).shared(true);
    wait_completed(&m2, m2.start(req2(HotCopyType::Full)).unwrap());
    let (before0, before1) = (state_of(&sets.join("0")), state_of(&sets.join("1")));
    load(&db2, 10, 50);

    m2.set_sm_rate(1, Some(0)).unwrap();
    let inc = m2.start(req2(HotCopyType::Incremental)).unwrap();
    wait_stage(&m2, inc, 1, "Stage2: Copy journal");
    wait_stage(&m2, inc, 0, "Stage3: Write metadata");
    cancel(&m2, inc);
    assert_as_before(&sets.join("0"), &before0);
    assert_as_before(&sets.join("1"), &before1);

    db2.archives()[1].checkpoint().unwrap();
    let inc = m2.start(req2(HotCopyType::Incremental)).unwrap();
    wait_stage(&m2, inc, 1, "Stage1: Copy atoms");
    wait_stage(&m2, inc, 0, "Stage2: Wait for end point");
    let s = cancel(&m2, inc);
    assert!(s.participants.iter().all(|p| p.message == MSG_CANCELLED), "{s:?}");
    assert_as_before(&sets.join("0"), &before0);
    assert_as_before(&sets.join("1"), &before1);

    m2.set_sm_rate(1, None).unwrap();
    let inc = wait_completed(&m2, m2.start(req2(HotCopyType::Incremental)).unwrap());
    assert_eq!(inc.participants[0].txn_range.unwrap().1, inc.participants[1].txn_range.unwrap().1);
    check_set(&sets.join("0"));
    check_set(&sets.join("1"));
}

#[test]
fn a_failure_names_its_cause_and_leaves_the_set_as_before() {
    let dir = tempdir();
    let (_db, m, set, before) = one_sm_with_a_full(dir.path(), "failure", 11);
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);

    // Held while copying its journal, the element under construction is moved away: the hot copy cannot finish.
    m.set_sm_rate(0, Some(0)).unwrap();
    let inc = m.start(req(HotCopyType::Incremental)).unwrap();
    wait_stage(&m, inc, 0, "Stage2: Copy journal");
    let tmp = set.join(TMP_DIR);
    let entries: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one element under construction");
    let element_tmp = &entries[0];
    let journal = element_tmp.join("data").join("journal");
    wait_until("the copier's target file", JOB_TIMEOUT, || std::fs::read_dir(&journal).is_ok_and(|d| d.count() > 0));
    // Moved away in one step (the copier may be creating files in it), as an operator moving the set would.
    std::fs::rename(element_tmp, dir.path().join("moved-away")).unwrap();
    m.set_sm_rate(0, None).unwrap();
    let s = wait_end(&m, inc);
    eprintln!("status message of the failed hot copy: {}", s.message);
    assert_eq!(s.status, JobState::Failed, "{s:?}");
    assert!(s.message.starts_with("Hot copy failed: archive 0: "), "{}", s.message);
    let id = element_tmp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(s.message.contains(&id), "the message names the file: {}", s.message);
    assert_as_before(&set, &before);
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    check_set(&set);
}

/// An incremental or journal hot copy reads the set it builds on with the strict reader restore uses: an element
/// directory or its `control/` replaced by a symbolic link (here to the very directory it replaced, so following it
/// would have worked) refuses both, naming the link and what to do, before anything in the set (or behind the link)
/// is written or removed; so do control files that disagree with the state. Once repaired, both work again.
#[test]
fn a_linked_element_or_control_directory_or_disagreeing_control_files_refuse_incremental_and_journal_hot_copies() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("linked", 1, true)).unwrap());
    load(&db, 12, 200);
    db.checkpoint_now().unwrap();
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    load(&db, 13, 50);
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    load(&db, 14, 50);

    for rel in ["full/control", "full", "1.jnl/control", "1.jnl"] {
        let link = set.join(rel);
        let aside = dir.path().join("aside");
        std::fs::rename(&link, &aside).unwrap();
        std::os::unix::fs::symlink(&aside, &link).unwrap();
        let (set_before, aside_before) = (scan(&set, Path::new("")), scan(&aside, Path::new("")));
        for kind in [HotCopyType::Incremental, HotCopyType::Journal] {
            let e = m.start(req(kind)).unwrap_err();
            let message = e.to_string();
            let want = format!("{} is a symbolic link where a directory of the backup set belongs", link.display());
            assert!(message.contains(&want), "{kind} with {rel} linked: expected {want:?} in: {message}");
            assert!(message.contains(&format!("remove {}", link.display())), "{kind}, {rel}: what to do: {message}");
            assert_eq!(scan(&set, Path::new("")), set_before, "{kind} with {rel} linked changed the set");
            assert_eq!(scan(&aside, Path::new("")), aside_before, "{kind} with {rel} linked changed what it leads to");
        }
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(&aside, &link).unwrap();
    }
    // The same reader's cross-checks: a journal element whose `control/element` does not list the set's archive
    // among its participants (restore and check refuse the set) refuses both too.
    let info_path = set.join("1.jnl/control/element");
    let info: ElementInfo = read_metadata(&info_path).unwrap();
    let mut foreign = info.clone();
    foreign.participants.iter_mut().for_each(|p| p.archive_id += 7);
    write_metadata(&set.join("1.jnl/control"), "element", &foreign).unwrap();
    let set_before = scan(&set, Path::new(""));
    for kind in [HotCopyType::Incremental, HotCopyType::Journal] {
        let message = m.start(req(kind)).unwrap_err().to_string();
        assert!(message.contains(&info_path.display().to_string()), "{kind}: names the file: {message}");
        assert!(message.contains("participants"), "{kind}: says what disagrees: {message}");
        assert_eq!(scan(&set, Path::new("")), set_before, "{kind} with disagreeing control files changed the set");
    }
    write_metadata(&set.join("1.jnl/control"), "element", &info).unwrap();
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    let summary = check_set(&set);
    let names: Vec<&str> = summary.elements.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["full", "1.jnl", "1.inc", "2.jnl"]);
}

#[test]
fn the_leftovers_of_a_crashed_hot_copy_are_removed_by_the_next_one() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("crashed", 1, true)).unwrap());
    let mut acked = load(&db, 14, 150);
    db.checkpoint_now().unwrap();
    let m = HotCopyManager::new(db.hot_copy_archives(), dir.path().join("manager")).unwrap();
    let set = dir.path().join("set");
    let req = |kind, d: &Path| HotCopyRequest::new(kind).backup_dir(0, d);
    wait_completed(&m, m.start(req(HotCopyType::Full, &set)).unwrap());
    acked.extend(load(&db, 15, 100));

    // What a process killed during an incremental leaves: an in-progress entry, its tmp/ directory, the element
    // already renamed into place (killed before the state rewrite), a stray temporary of an atomic write.
    let mut state = state_of(&set);
    let stale = ElementEntry {
        kind: ElementKind::Incremental,
        sequence: 1,
        element_id: Uuid::new_v4(),
        status: ElementStatus::InProgress,
        txn_range: TxnRange { first: 1, last: 1 },
        begin_micros: 1,
        end_micros: 0,
    };
    state.elements.push(stale.clone());
    write_metadata(&set, "state", &state).unwrap();
    let stale_tmp = set.join(TMP_DIR).join(stale.element_id.to_string()).join("data/atoms");
    std::fs::create_dir_all(&stale_tmp).unwrap();
    std::fs::write(stale_tmp.join("0000000000000001"), b"partial").unwrap();
    std::fs::create_dir_all(set.join("1.inc/control")).unwrap();
    std::fs::write(set.join("1.inc/control/manifest"), b"partial").unwrap();
    std::fs::write(set.join(".tmp-state-0123"), b"partial").unwrap();
    let inc = wait_completed(&m, m.start(req(HotCopyType::Incremental, &set)).unwrap());
    assert_eq!(inc.participants[0].element.as_deref(), Some("1.inc"));
    assert!(!set.join(".tmp-state-0123").exists());
    let summary = check_set(&set);
    assert_eq!(summary.elements.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["full", "1.inc"]);
    let e = range_of(&set, "1.inc").1;
    let out = dir.path().join("restored");
    restore_by_hand(&set, e, &out);
    assert_entries_eq(&read_archive(&out).unwrap().entries, &replay_upto(&acked, e), "restore after the clean-up");

    // A directory a killed full left (its state lists only the full, in progress) takes a new full.
    let set2 = dir.path().join("set2");
    std::fs::create_dir_all(set2.join(TMP_DIR).join("x")).unwrap();
    let mut crashed = state_of(&set);
    crashed.elements.truncate(1);
    crashed.elements[0].status = ElementStatus::InProgress;
    crashed.elements[0].end_micros = 0;
    write_metadata(&set2, "state", &crashed).unwrap();
    wait_completed(&m, m.start(req(HotCopyType::Full, &set2)).unwrap());
    check_set(&set2);
    assert_ne!(state_of(&set2).set_id, crashed.set_id, "a new set");
}

#[test]
fn statuses_survive_a_restart_and_a_job_of_a_dead_process_shows_failed() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("restart", 1, true)).unwrap());
    load(&db, 12, 100);
    let data_dir = dir.path().join("manager");
    let m = HotCopyManager::new(db.hot_copy_archives(), &data_dir).unwrap();
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    let done = wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    let held = m.start(req(HotCopyType::Incremental).max_rate(Some(0))).unwrap();
    wait_stage(&m, held, 0, "Stage2: Copy journal");
    assert_eq!(m.statuses(Some(Duration::ZERO)).iter().map(|s| s.id).collect::<Vec<_>>(), [held.1]);
    assert!(m.statuses(Some(Duration::from_secs(3600))).is_empty());
    let cancelled = cancel(&m, held);
    assert!(m.statuses(Some(Duration::ZERO)).is_empty(), "no job running any more");
    drop(m);

    let m = HotCopyManager::new(db.hot_copy_archives(), &data_dir).unwrap();
    assert_eq!(m.status(done.coordinator_start_id, done.id, None).unwrap(), done);
    assert_eq!(m.status(held.0, held.1, None).unwrap(), cancelled);
    let by_sm = m.statuses_by_start_id(None);
    assert_eq!(by_sm[&1].iter().map(|s| s.id).collect::<Vec<_>>(), [done.id, cancelled.id]);
    let e = m.status(2, done.id, None).unwrap_err();
    assert!(matches!(e, HotCopyError::NotFound { .. }), "{e}");
    drop(m);

    // A job persisted as running whose process died.
    let mut dead = done.clone();
    dead.id = Uuid::new_v4();
    dead.status = JobState::Running;
    dead.message = "Stage1: Copy atoms".into();
    dead.end_micros = None;
    let path = data_dir.join("hotcopy").join(format!("{}.json", dead.id));
    std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
    let m = HotCopyManager::new(db.hot_copy_archives(), &data_dir).unwrap();
    let s = m.status(dead.coordinator_start_id, dead.id, None).unwrap();
    assert_eq!((s.status, s.message.as_str()), (JobState::Failed, MSG_PROCESS_STOPPED));
    assert!(s.end_micros.is_some());
    let on_disk: HotCopyStatus = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, s, "the failed status was written back");
    // The set is untouched by all this, and takes the next hot copy.
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    check_set(&set);
}

#[test]
fn regression_retained_statuses_were_capped_only_when_loaded() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg("kept", 1, true)).unwrap());
    load(&db, 4, 100);
    let data_dir = dir.path().join("manager");
    let m = HotCopyManager::new(db.hot_copy_archives(), &data_dir).unwrap();
    m.set_max_kept_statuses(3);
    let files = || std::fs::read_dir(data_dir.join("hotcopy")).unwrap().count();
    // A running job is never removed: a held one stays kept while the others come and go.
    let set = dir.path().join("set");
    let held = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set).max_rate(Some(0))).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let req = HotCopyRequest::new(HotCopyType::Simple).backup_dir(0, dir.path().join(format!("simple-{i}")));
        ids.push(wait_completed(&m, m.start(req).unwrap()).id);
        let kept = m.statuses(None);
        assert!(kept.len() <= 3 && files() <= 3, "after {} hot copies: {} kept, {} files", i + 2, kept.len(), files());
        assert!(kept.iter().any(|s| s.id == held.1), "the running job was removed");
    }
    cancel(&m, held);
    // The newest kept (the held one and the last two), oldest first; the others' files removed.
    let kept: Vec<Uuid> = m.statuses(None).iter().map(|s| s.id).collect();
    assert_eq!(kept, [held.1, ids[3], ids[4]]);
    let mut on_disk: Vec<String> = std::fs::read_dir(data_dir.join("hotcopy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut want: Vec<String> = kept.iter().map(|id| format!("{id}.json")).collect();
    want.sort();
    assert_eq!(on_disk, want);
}
