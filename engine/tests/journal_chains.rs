//! Journal hot copies continue one chain per archive, the newest backup set's: a new full keeps the journal from its
//! start even when an older set's journal hot copies went further (the defect the load test found: the new set's
//! first journal hot copy found its journal recycled), and a journal hot copy into an older set is refused, also
//! after a restart of the manager.

mod common;
#[path = "hotcopy_support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use backset_engine::hotcopy::{HotCopyError, HotCopyManager, HotCopyRequest, HotCopyType};
use backset_engine::store::{Config, Database};
use common::{config, tempdir};
use support::{check_set, load, range_of, wait_completed};

fn cfg() -> Config {
    let mut c = config("chains");
    c.journal_hot_copy = true;
    c
}

fn run(m: &HotCopyManager, kind: HotCopyType, set: &Path) {
    wait_completed(m, m.start(HotCopyRequest::new(kind).backup_dir(0, set)).unwrap());
}

#[test]
fn regression_a_new_sets_first_journal_hot_copy_found_its_journal_recycled_by_an_older_sets() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    load(&db, 1, 300);
    let m = HotCopyManager::new(Arc::clone(&db), dir.path().join("manager")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&m, HotCopyType::Full, &a);
    load(&db, 2, 300);
    run(&m, HotCopyType::Journal, &a);
    let (_, a_journal_end) = range_of(&a, "1.jnl");
    // No checkpoint since the database opened: the next full starts its journal below what set a's journal copied.
    run(&m, HotCopyType::Full, &b);
    let (b_start, _) = range_of(&b, "full");
    assert!(b_start <= a_journal_end, "the case needs b's full to start at or below {a_journal_end}, not {b_start}");
    load(&db, 3, 300);
    // A checkpoint recycles what retention lets go: before the fix, everything up to set a's journal end.
    db.checkpoint_now().unwrap();
    run(&m, HotCopyType::Journal, &b);
    let (j_first, _) = range_of(&b, "1.jnl");
    assert_eq!(j_first, b_start, "b's journal chain starts where its full did");
    check_set(&b);
}

#[test]
fn a_journal_hot_copy_into_an_older_set_is_refused_also_after_a_restart() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), cfg()).unwrap());
    load(&db, 4, 200);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    {
        let m = HotCopyManager::new(Arc::clone(&db), dir.path().join("manager")).unwrap();
        run(&m, HotCopyType::Full, &a);
        load(&db, 5, 100);
        run(&m, HotCopyType::Journal, &a);
        run(&m, HotCopyType::Full, &b);
    }
    let m = HotCopyManager::new(Arc::clone(&db), dir.path().join("manager")).unwrap();
    load(&db, 6, 100);
    let e = m.start(HotCopyRequest::new(HotCopyType::Journal).backup_dir(0, &a)).unwrap_err();
    assert!(matches!(e, HotCopyError::JournalChainMoved { archive_id: 0, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&a.display().to_string()) && msg.contains(&b.display().to_string()), "{msg}");
    // The newest set goes on, and an incremental into the older set is still allowed (it needs no retained journal).
    run(&m, HotCopyType::Journal, &b);
    run(&m, HotCopyType::Incremental, &a);
    check_set(&a);
    check_set(&b);
}
