//! Restore of a backup set made under load (full, incrementals and journal elements), compared key for key with the
//! workload's replay oracle; the restore's refusals; the reports of `--report-backups` and `--report-timestamps`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use backset_copier::JobControl;
use backset_engine::check::check_archive;
use backset_engine::restore::{
    report_backups, report_timestamps, restore, RestoreError, RestoreOptions, RestorePoint, TimestampFilter,
};
use backset_format::{ElementKind, ElementStatus, TxnRange};
use backset_refstore::workload::replay_upto;
use backset_refstore::{read_archive, Database, Txn};
use rand::RngExt;
use support::setmaker::template;
use support::{assert_entries_eq, config, file_names, rng, tempdir};
use uuid::Uuid;

/// The base a restore to `txn` must start from, by the semantics: the newest full or incremental with E <= txn.
fn expected_base(txn: u64) -> String {
    let t = template();
    t.elements
        .iter()
        .rev()
        .find(|e| e.kind != ElementKind::Journal && e.txn_range.last <= txn)
        .unwrap()
        .name()
        .to_string()
}

/// Restores to `target` into a fresh directory and compares the archive with the oracle at the expected txn.
fn restore_and_compare(target: RestorePoint, expected_txn: u64) {
    let t = template();
    let dest = tempdir();
    let ctl = Arc::new(JobControl::new());
    let opts = RestoreOptions { control: Some(Arc::clone(&ctl)), ..RestoreOptions::default() };
    let report = restore(t.set(), dest.path(), target, &opts).unwrap_or_else(|e| panic!("restore to {target:?}: {e}"));
    assert_eq!(report.target_txn, expected_txn, "{target:?}");
    assert_eq!(report.base.to_string(), expected_base(expected_txn), "{target:?}");
    let restored = read_archive(dest.path()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(&t.acked, expected_txn), &format!("restore to {target:?}"));
    // Every transaction has a record in the only archive, so the restored journal ends exactly at the target.
    assert_eq!(restored.last_txn, expected_txn);
    assert_eq!(restored.database_id, Some(t.database_id));
    assert_eq!(report.journal_txns.map(|r| r.last), Some(expected_txn));
    // Progress of the atom copy was readable through the caller's control, and matches what was written.
    let p = ctl.progress();
    assert_eq!((p.files_done, p.bytes_done), (report.atoms, report.atom_bytes));
    let atoms = file_names(&dest.path().join("atoms"));
    assert_eq!(atoms.len() as u64, report.atoms);
    assert!(check_archive(dest.path()).unwrap().is_ok());
}

#[test]
fn restores_to_latest_to_every_element_and_to_random_transactions() {
    let t = template();
    let full_end = t.element("full").txn_range.last;
    let latest = t.latest();
    restore_and_compare(RestorePoint::Latest, latest);
    for e in &t.elements {
        restore_and_compare(RestorePoint::Element(e.element_id), e.txn_range.last);
    }
    let mut rng = rng(99);
    let mut targets: Vec<u64> = (0..8).map(|_| rng.random_range(full_end..=latest)).collect();
    targets.extend([full_end, full_end + 1, latest - 1]);
    for txn in targets {
        restore_and_compare(RestorePoint::Transaction(txn), txn);
    }
}

#[test]
fn a_restored_archive_opens_as_a_database_and_continues_after_the_target() {
    let t = template();
    let inc = t.element("1.inc").txn_range.last;
    let txn = inc + (t.element("2.jnl").txn_range.last - inc) / 2;
    let root = tempdir();
    restore(t.set(), root.path().join("0"), RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap();
    let mut cfg = config("restore");
    cfg.database_id = Some(t.database_id);
    let db = Database::open(root.path(), cfg).unwrap();
    assert_entries_eq(&db.entries().unwrap(), &replay_upto(&t.acked, txn), "restored database");
    assert_eq!(db.commit(&Txn::new().put("after", "restore")).unwrap().txn_id, txn + 1);
    db.close().unwrap();
}

fn assert_absent_or_empty(dest: &Path) {
    if dest.exists() {
        assert!(file_names(dest).is_empty(), "{} holds {:?}", dest.display(), file_names(dest));
    }
}

#[test]
fn refuses_a_non_empty_destination_a_transaction_outside_the_range_and_an_unknown_element() {
    let t = template();
    let full_end = t.element("full").txn_range.last;
    let latest = t.latest();
    let dest = tempdir();
    std::fs::write(dest.path().join("keep"), b"mine").unwrap();
    let err = restore(t.set(), dest.path(), RestorePoint::Latest, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, RestoreError::DestinationNotEmpty { .. }), "{err}");
    assert_eq!(file_names(dest.path()), ["keep"]);

    let dest = tempdir();
    let target = dest.path().join("new");
    for txn in [full_end - 1, latest + 1, 0] {
        let err = restore(t.set(), &target, RestorePoint::Transaction(txn), &RestoreOptions::default()).unwrap_err();
        let expected = format!(
            "transaction {txn} is outside the restorable range [{full_end}, {latest}] of backup set {}",
            t.set().display()
        );
        assert!(err.to_string().starts_with(&expected), "{err}\nexpected: {expected}");
        assert!(
            matches!(&err, RestoreError::OutOfRange { ranges, .. } if ranges == &[TxnRange { first: full_end, last: latest }])
        );
        assert!(!target.exists(), "a refused restore creates nothing");
    }

    let unknown = Uuid::new_v4();
    let err = restore(t.set(), &target, RestorePoint::Element(unknown), &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, RestoreError::UnknownElement { id, .. } if id == unknown), "{err}");
    assert!(err.to_string().contains(&unknown.to_string()));
    assert!(!target.exists());
}

#[test]
fn refuses_while_data_is_moved_away_and_succeeds_once_it_is_back() {
    let t = template();
    let (_keep, set) = t.copy();
    let full = t.element("full");
    let away = tempdir();
    std::fs::rename(set.join("full/data"), away.path().join("data")).unwrap();
    let dest = tempdir();
    let err =
        restore(&set, dest.path(), RestorePoint::Element(full.element_id), &RestoreOptions::default()).unwrap_err();
    match &err {
        RestoreError::DataMissing { element, path, .. } => {
            assert_eq!(element.to_string(), "full");
            assert_eq!(path, &set.join("full/data"));
        }
        other => panic!("expected DataMissing, got {other}"),
    }
    assert!(err.to_string().contains("put its data/ back"), "{err}");
    assert_absent_or_empty(dest.path());

    std::fs::rename(away.path().join("data"), set.join("full/data")).unwrap();

    // Only what the restore needs must be there: 3.jnl's data is needed after 2.inc's end point only.
    std::fs::rename(set.join("3.jnl/data"), away.path().join("3.jnl-data")).unwrap();
    let inc = t.element("1.inc");
    restore(&set, dest.path(), RestorePoint::Element(inc.element_id), &RestoreOptions::default()).unwrap();
    let restored = read_archive(dest.path()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(&t.acked, inc.txn_range.last), "1.inc without 3.jnl's data");
    let dest = tempdir();
    let err = restore(&set, dest.path(), RestorePoint::Latest, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(&err, RestoreError::DataMissing { element, .. } if element.to_string() == "3.jnl"), "{err}");
    assert_absent_or_empty(dest.path());
    std::fs::rename(away.path().join("3.jnl-data"), set.join("3.jnl/data")).unwrap();
    let dest = tempdir();
    restore(&set, dest.path(), RestorePoint::Element(full.element_id), &RestoreOptions::default()).unwrap();
    let restored = read_archive(dest.path()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(&t.acked, full.txn_range.last), "after data/ came back");
}

#[test]
fn a_cancelled_restore_leaves_nothing() {
    let t = template();
    let ctl = Arc::new(JobControl::new());
    ctl.cancel();
    let root = tempdir();
    let dest = root.path().join("dest");
    let opts = RestoreOptions { control: Some(ctl), ..RestoreOptions::default() };
    let err = restore(t.set(), &dest, RestorePoint::Latest, &opts).unwrap_err();
    assert!(matches!(err, RestoreError::Cancelled { .. }), "{err}");
    assert!(!dest.exists(), "the destination the restore created is removed");
    // Into an existing empty directory: it stays, empty.
    let dest = tempdir();
    let opts = RestoreOptions { control: Some(Arc::new(JobControl::new())), ..RestoreOptions::default() };
    opts.control.as_ref().unwrap().cancel();
    assert!(matches!(restore(t.set(), dest.path(), RestorePoint::Latest, &opts), Err(RestoreError::Cancelled { .. })));
    assert_absent_or_empty(dest.path());
}

#[test]
fn report_backups_lists_the_elements_newest_first() {
    let t = template();
    let list = report_backups(t.set()).unwrap();
    let expected: Vec<_> = t.elements.iter().rev().collect();
    assert_eq!(list.len(), expected.len());
    for (got, want) in list.iter().zip(expected) {
        assert_eq!(got.element_id, want.element_id);
        assert_eq!(got.kind, want.kind);
        assert_eq!(got.status, ElementStatus::Completed);
        assert_eq!(got.txn_range, want.txn_range);
        assert_eq!(got.begin, UNIX_EPOCH + Duration::from_micros(want.begin_micros));
        assert_eq!(got.end, Some(UNIX_EPOCH + Duration::from_micros(want.end_micros)));
    }
    assert_eq!(list.last().unwrap().name.to_string(), "full");
}

#[test]
fn report_timestamps_lists_the_restore_points_or_every_transaction_of_the_sets_journal_once() {
    let t = template();
    let (first, full_end) = (t.element("full").txn_range.first, t.element("full").txn_range.last);
    let latest = t.latest();
    // By default the restore points: from the full's end point on.
    let points = report_timestamps(t.set(), &TimestampFilter::default()).unwrap();
    let want: Vec<u64> = t.acked.iter().map(|a| a.txn_id).filter(|id| (full_end..=latest).contains(id)).collect();
    assert_eq!(points.iter().map(|l| l.txn_id).collect::<Vec<_>>(), want);
    // The whole journal, from the full's R.
    let lines = report_timestamps(t.set(), &TimestampFilter { journal: true, ..TimestampFilter::default() }).unwrap();
    let expected: Vec<(u64, u64)> = t
        .acked
        .iter()
        .filter(|a| (first..=latest).contains(&a.txn_id))
        .map(|a| (a.timestamp_micros, a.txn_id))
        .collect();
    let got: Vec<(u64, u64)> = lines.iter().map(|l| (l.timestamp_micros, l.txn_id)).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "timestamps and txn ids differ from the workload's record");

    // A window of whole seconds, as the printed lines show them.
    let mid = expected[expected.len() / 2].0 / 1_000_000;
    let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
    let filter = TimestampFilter { start: at(mid), end: at(mid), journal: true };
    let window = report_timestamps(t.set(), &filter).unwrap();
    let want: Vec<u64> = expected.iter().filter(|(ts, _)| ts / 1_000_000 == mid).map(|(_, id)| *id).collect();
    assert!(!want.is_empty());
    assert_eq!(window.iter().map(|l| l.txn_id).collect::<Vec<_>>(), want);
    let text = window[0].to_string();
    assert!(text.ends_with(&format!(" {}", want[0])) && text.len() == 19 + 1 + want[0].to_string().len(), "{text}");
}
