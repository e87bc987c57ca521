//! Backup sets for the restore and check tests, made by the engine's hot copy jobs ([`HotCopyManager`]) of the
//! reference store, and the template set made under load that the restore and check tests share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyType, JobState};
use backset_format::fsio::read_metadata;
use backset_format::{ElementEntry, ElementKind, ElementStatus, State};
use backset_refstore::Database;
use uuid::Uuid;

/// How long a test waits for one hot copy.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes the elements of one backup set of one archive with the engine's hot copy jobs.
pub struct SetMaker {
    /// The set's directory.
    pub dir: PathBuf,
    archive_id: u64,
    manager: HotCopyManager,
    _manager_dir: tempfile::TempDir,
}

impl SetMaker {
    /// Makes the full element of a new set in `dir` (archive `archive_id` of `db`).
    pub fn full(dir: &Path, db: &Arc<Database>, archive_id: u64) -> Self {
        let manager_dir = super::tempdir();
        let manager = HotCopyManager::new(db.hot_copy_archives(), manager_dir.path()).unwrap();
        let maker = Self { dir: dir.to_path_buf(), archive_id, manager, _manager_dir: manager_dir };
        maker.run(HotCopyType::Full);
        maker
    }

    /// Makes the next incremental element.
    pub fn incremental(&mut self) -> ElementEntry {
        self.run(HotCopyType::Incremental)
    }

    /// Makes the next journal element.
    pub fn journal(&mut self) -> ElementEntry {
        self.run(HotCopyType::Journal)
    }

    /// The state's completed elements, in order.
    pub fn elements(&self) -> Vec<ElementEntry> {
        let state: State = read_metadata(&self.dir.join("state")).unwrap();
        state.elements.into_iter().filter(|e| e.status == ElementStatus::Completed).collect()
    }

    /// Runs one hot copy to completion and returns the element it made.
    fn run(&self, kind: HotCopyType) -> ElementEntry {
        // A set of one archive of a database with storage groups covers only that archive's groups.
        let req = HotCopyRequest::new(kind).backup_dir(self.archive_id, &self.dir).partial_storage_groups(true);
        let (start_id, id) = self.manager.start(req).unwrap();
        let s = self.manager.status(start_id, id, Some(JOB_TIMEOUT)).unwrap();
        assert_eq!(s.status, JobState::Completed, "{kind:?} hot copy {id}: {}", s.message);
        let want = match kind {
            HotCopyType::Full => ElementKind::Full,
            HotCopyType::Incremental => ElementKind::Incremental,
            HotCopyType::Journal => ElementKind::Journal,
            HotCopyType::Simple => unreachable!("a simple hot copy makes no element"),
        };
        self.elements().into_iter().rev().find(|e| e.kind == want).unwrap()
    }
}

/// A backup set made under load, shared by the tests of one test binary: full, 1.jnl, 1.inc, 2.jnl, 2.inc, 3.jnl,
/// each made while the workload commits at full speed; with the workload's record of every acknowledged
/// transaction (the oracle).
pub struct Template {
    /// Holds the set (`set/`); kept for the whole test run.
    pub dir: tempfile::TempDir,
    /// Every acknowledged transaction, in id order.
    pub acked: Vec<backset_refstore::workload::AckedTxn>,
    /// The completed elements, in order.
    pub elements: Vec<ElementEntry>,
    /// The database id.
    pub database_id: Uuid,
}

impl Template {
    /// The set's directory.
    pub fn set(&self) -> PathBuf {
        self.dir.path().join("set")
    }

    /// A private copy of the set: `(its temp dir, the set's path)`.
    pub fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let d = super::tempdir();
        let set = d.path().join("set");
        super::copy_tree(&self.set(), &set);
        (d, set)
    }

    /// The element named `name` (`full`, `1.inc`, ...).
    pub fn element(&self, name: &str) -> &ElementEntry {
        self.elements.iter().find(|e| e.name().to_string() == name).unwrap_or_else(|| panic!("no element {name}"))
    }

    /// The end of the restorable range: the highest end point of any element.
    pub fn latest(&self) -> u64 {
        self.elements.iter().map(|e| e.txn_range.last).max().unwrap()
    }
}

/// The shared template (made on first use).
pub fn template() -> &'static Template {
    static T: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    T.get_or_init(make_template)
}

fn make_template() -> Template {
    use backset_refstore::workload::{Workload, WorkloadConfig};
    use backset_refstore::Database;
    let db_dir = super::tempdir();
    let cfg = super::live(super::config("restore"), Duration::from_millis(3));
    let db = Arc::new(Database::open(db_dir.path(), cfg).unwrap());
    let database_id = db.database_id();
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 7, threads: 3, key_space: 300, delete_fraction: 0.3, ..WorkloadConfig::default() },
    );
    let more = |n: u64| super::more_load(&wl, n, Duration::from_secs(60));
    more(300);
    let dir = super::tempdir();
    let mut maker = SetMaker::full(&dir.path().join("set"), &db, 0);
    more(200);
    maker.journal();
    more(200);
    maker.incremental();
    more(200);
    maker.journal();
    more(200);
    maker.incremental();
    more(200);
    maker.journal();
    more(50); // transactions after the last element, which no restore may show
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let elements = maker.elements();
    assert!(report.acked.last().unwrap().txn_id > elements.iter().map(|e| e.txn_range.last).max().unwrap());
    db.close().unwrap();
    Template { dir, acked: report.acked, elements, database_id }
}
