//! Hot copies whose archive misbehaves at a chosen step: cancel while a full or incremental is still in `Stage1:
//! Begin` (held in its journal pin), and a
//! failure in each stage that calls the archive (listing atoms, waiting for the end point, giving the journal). Each
//! time the backup set stays exactly as valid as before and the next hot copy works.
//!
//! The archive is the real reference store's, wrapped so that one call can be held or made to fail: the store, the
//! copier and the backup set are real; only the timing or the outcome of that one call is forced.

mod support;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backset_engine::archive::{Archive, ArchiveError, ArchiveIdentity, AtomFile, JournalPin, JournalSlice};
use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType, JobState, MSG_CANCELLED};
use backset_refstore::{Database, SmArchive};
use support::hotcopy::{check_set, load, wait_completed, wait_end, JOB_TIMEOUT};
use support::{assert_as_before, config, state_of, tempdir, wait_until};

/// What the wrapped archive does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// `pin_journal` waits until the fault is cleared.
    HoldPin,
    FailAtoms,
    FailWaitDurable,
    FailSlices,
    /// `atoms` lists the first atom with the file of the second (an SM whose listing is wrong).
    MislabelAtom,
}

const INJECTED: &str = "injected by the test";

struct Faulty {
    inner: Arc<SmArchive>,
    fault: Mutex<Fault>,
    changed: Condvar,
    /// Set when `pin_journal` is being held.
    holding: Mutex<bool>,
}

impl Faulty {
    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
        self.changed.notify_all();
    }

    fn fail_if(&self, f: Fault) -> Result<(), ArchiveError> {
        if *self.fault.lock().unwrap() == f {
            return Err(ArchiveError::Unavailable { archive_id: 0, reason: format!("{f:?} {INJECTED}") });
        }
        Ok(())
    }
}

impl Archive for Faulty {
    fn identity(&self) -> ArchiveIdentity {
        self.inner.identity()
    }

    fn dir(&self) -> &Path {
        self.inner.dir()
    }

    fn pin_journal(&self) -> Result<JournalPin, ArchiveError> {
        let mut f = self.fault.lock().unwrap();
        while *f == Fault::HoldPin {
            *self.holding.lock().unwrap() = true;
            f = self.changed.wait(f).unwrap();
        }
        drop(f);
        self.inner.pin_journal()
    }

    fn atoms(&self) -> Result<Vec<AtomFile>, ArchiveError> {
        self.fail_if(Fault::FailAtoms)?;
        let mut atoms = self.inner.atoms()?;
        if *self.fault.lock().unwrap() == Fault::MislabelAtom && atoms.len() >= 2 {
            atoms[0].path = atoms[1].path.clone();
            atoms[0].bytes = atoms[1].bytes;
        }
        Ok(atoms)
    }

    fn durable_txn(&self) -> u64 {
        self.inner.durable_txn()
    }

    fn wait_durable(&self, txn: u64, timeout: Duration) -> Result<(), ArchiveError> {
        self.fail_if(Fault::FailWaitDurable)?;
        self.inner.wait_durable(txn, timeout)
    }

    fn journal_slices(&self, first: u64, last: u64) -> Result<Vec<JournalSlice>, ArchiveError> {
        self.fail_if(Fault::FailSlices)?;
        self.inner.journal_slices(first, last)
    }

    fn journal_hot_copy_enabled(&self) -> bool {
        self.inner.journal_hot_copy_enabled()
    }

    fn journal_copied_up_to(&self, txn: u64) {
        self.inner.journal_copied_up_to(txn)
    }

    fn journal_retain_from(&self, txn: u64) {
        self.inner.journal_retain_from(txn)
    }
}

fn setup(dir: &Path) -> (Arc<Database>, Arc<Faulty>, HotCopyManager) {
    let mut c = config("faults");
    c.journal_hot_copy = true;
    let db = Arc::new(Database::open(dir.join("db"), c).unwrap());
    load(&db, 21, 300);
    let faulty = Arc::new(Faulty {
        inner: Arc::clone(&db.archives()[0]),
        fault: Mutex::new(Fault::None),
        changed: Condvar::new(),
        holding: Mutex::new(false),
    });
    let m = HotCopyManager::new(vec![Arc::clone(&faulty) as Arc<dyn Archive>], dir.join("manager")).unwrap();
    (db, faulty, m)
}

#[test]
fn a_cancel_in_stage1_begin_leaves_the_set_as_before() {
    let dir = tempdir();
    let (db, faulty, m) = setup(dir.path());
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    let before = state_of(&set);
    load(&db, 22, 100);

    // An incremental held in its pin (Stage1: Begin) and cancelled there. (A journal hot copy takes no pin: its
    // Begin only reads the set's state.)
    let kind = HotCopyType::Incremental;
    *faulty.holding.lock().unwrap() = false;
    faulty.set(Fault::HoldPin);
    let job = m.start(req(kind)).unwrap();
    wait_until("the job held in its pin", JOB_TIMEOUT, || {
        let s = m.status(job.0, job.1, None).unwrap();
        assert!(!s.is_terminal(), "{kind} ended before its pin: {s:?}");
        *faulty.holding.lock().unwrap()
    });
    let s = m.status(job.0, job.1, None).unwrap();
    assert_eq!((s.stage, s.message.as_str()), (1, "Stage1: Begin"), "{kind}: {s:?}");
    m.cancel(job.0, job.1, None).unwrap();
    faulty.set(Fault::None);
    let s = wait_end(&m, job);
    assert_eq!((s.status, s.message.as_str()), (JobState::Cancelled, MSG_CANCELLED), "{kind}: {s:?}");
    assert_as_before(&set, &before);
    // A full held in Begin and cancelled leaves no directory behind.
    let set2 = dir.path().join("set2");
    faulty.set(Fault::HoldPin);
    *faulty.holding.lock().unwrap() = false;
    let job = m.start(HotCopyRequest::new(HotCopyType::Full).backup_dir(0, &set2)).unwrap();
    wait_until("the full held in its pin", JOB_TIMEOUT, || *faulty.holding.lock().unwrap());
    m.cancel(job.0, job.1, None).unwrap();
    faulty.set(Fault::None);
    assert_eq!(wait_end(&m, job).status, JobState::Cancelled);
    assert!(!set2.exists() || std::fs::read_dir(&set2).unwrap().next().is_none(), "the cancelled full left files");

    // The next hot copies work.
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    wait_completed(&m, m.start(req(HotCopyType::Journal)).unwrap());
    check_set(&set);
}

#[test]
fn a_failure_in_each_stage_names_its_cause_and_leaves_the_set_as_before() {
    let dir = tempdir();
    let (db, faulty, m) = setup(dir.path());
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    let mut seed = 30;
    for fault in [Fault::FailAtoms, Fault::FailWaitDurable, Fault::FailSlices] {
        for kind in [HotCopyType::Incremental, HotCopyType::Journal] {
            if fault == Fault::FailAtoms && kind == HotCopyType::Journal {
                continue; // a journal hot copy lists no atoms
            }
            seed += 1;
            load(&db, seed, 50);
            let before = state_of(&set);
            faulty.set(fault);
            let s = wait_end(&m, m.start(req(kind)).unwrap());
            faulty.set(Fault::None);
            assert_eq!(s.status, JobState::Failed, "{kind} with {fault:?}: {s:?}");
            assert!(
                s.message.starts_with("Hot copy failed: ") && s.message.contains(&format!("{fault:?} {INJECTED}")),
                "{kind} with {fault:?}: {}",
                s.message
            );
            assert_as_before(&set, &before);
            // The next hot copy of that type works.
            wait_completed(&m, m.start(req(kind)).unwrap());
        }
    }
    check_set(&set);
}

#[test]
fn an_atom_file_whose_header_names_another_atom_fails_the_hot_copy_and_leaves_the_set_as_before() {
    let dir = tempdir();
    let (db, faulty, m) = setup(dir.path());
    let set = dir.path().join("set");
    let req = |kind| HotCopyRequest::new(kind).backup_dir(0, &set);
    wait_completed(&m, m.start(req(HotCopyType::Full)).unwrap());
    let before = state_of(&set);
    // Atoms new since the full, so the incremental copies the first one (from the second's file).
    load(&db, 40, 400);
    db.checkpoint_now().unwrap();
    let listed = faulty.inner.atoms().unwrap();
    assert!(listed.len() >= 2, "the case needs two atoms: {listed:?}");
    let (first, second) = (&listed[0], &listed[1]);
    faulty.set(Fault::MislabelAtom);
    let s = wait_end(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    faulty.set(Fault::None);
    assert_eq!(s.status, JobState::Failed, "{s:?}");
    let expected = format!("the header names atom {}", second.atom_id);
    assert!(
        s.message.contains(&expected) && s.message.contains(&second.path.display().to_string()),
        "atom {} listed with {}: {}",
        first.atom_id,
        second.path.display(),
        s.message
    );
    assert_as_before(&set, &before);
    wait_completed(&m, m.start(req(HotCopyType::Incremental)).unwrap());
    check_set(&set);
}

/// `<dir>.incomplete`, the name a simple hot copy writes under.
fn incomplete(dir: &Path) -> std::path::PathBuf {
    let mut name = dir.file_name().unwrap().to_os_string();
    name.push(".incomplete");
    dir.with_file_name(name)
}

#[test]
fn a_failed_simple_hot_copy_with_a_separate_journal_dir_keeps_both_incomplete() {
    let dir = tempdir();
    let (_db, faulty, m) = setup(dir.path());
    let (copy, journal) = (dir.path().join("copy"), dir.path().join("copy-journal"));
    let req = || HotCopyRequest::new(HotCopyType::Simple).backup_dir(0, &copy).journal_dir(0, &journal);
    for fault in [Fault::FailAtoms, Fault::FailWaitDurable, Fault::FailSlices] {
        faulty.set(fault);
        let s = wait_end(&m, m.start(req()).unwrap());
        faulty.set(Fault::None);
        assert_eq!(s.status, JobState::Failed, "{fault:?}: {s:?}");
        assert!(s.message.contains(&format!("{fault:?} {INJECTED}")), "{fault:?}: {}", s.message);
        // Both keep their `.incomplete` name (as NuoDB's simple hot copy does); neither final name exists.
        assert!(!copy.exists() && !journal.exists(), "{fault:?}: a final directory exists after the failure");
        assert!(incomplete(&copy).join("atoms").is_dir(), "{fault:?}: copy.incomplete/atoms");
        assert!(incomplete(&journal).is_dir(), "{fault:?}: copy-journal.incomplete");
        assert!(!incomplete(&copy).join("journal").exists(), "{fault:?}: the journal went into the archive copy");
    }
    // The next simple hot copy removes both leftovers and completes: two directories, no `.incomplete`.
    wait_completed(&m, m.start(req()).unwrap());
    assert!(copy.join("atoms").is_dir() && !copy.join("journal").exists());
    let segments = std::fs::read_dir(&journal).unwrap().count();
    assert!(segments > 0, "no journal segment in {}", journal.display());
    assert!(!incomplete(&copy).exists() && !incomplete(&journal).exists(), "a .incomplete directory is left");
    // A leftover `<journal>.incomplete` holding something a hot copy does not write is refused, not removed.
    let (copy2, journal2) = (dir.path().join("copy2"), dir.path().join("journal2"));
    std::fs::create_dir_all(incomplete(&journal2)).unwrap();
    std::fs::write(incomplete(&journal2).join("notes.txt"), "mine").unwrap();
    let e = m.start(HotCopyRequest::new(HotCopyType::Simple).backup_dir(0, &copy2).journal_dir(0, &journal2));
    let e = e.expect_err("a foreign .incomplete journal directory is refused").to_string();
    assert!(e.contains("journal2.incomplete") && e.contains("not empty"), "{e}");
    assert!(incomplete(&journal2).join("notes.txt").is_file());
}
