//! `Archive::journal_slices` returns byte ranges whose records are exactly the requested txns, across segment
//! boundaries and from mid-segment starts; and a hot copy done by the Archive contract alone restores the state at
//! its end point while the store runs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backset_engine::archive::{Archive, ArchiveError};
use backset_refstore::workload::{replay_upto, Workload, WorkloadConfig};
use backset_refstore::{read_archive, Database, Txn};
use support::{assert_entries_eq, config, slice_txns, tempdir, wait_until, write_slices};

#[test]
fn slices_hold_exactly_the_requested_records() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("slices")).unwrap();
    for i in 0..120u64 {
        db.commit(&Txn::new().put(format!("k{i}"), vec![b'v'; 100 + (i as usize % 7) * 30])).unwrap();
    }
    let sm = &db.archives()[0];
    let segs = sm.segments();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let mut ranges = vec![(1, 120), (1, 1), (120, 120), (37, 38), (5, 119)];
    for s in &segs {
        let (a, b) = s.records.unwrap();
        ranges.extend([(a, b), (a, a), (b, b), (a + 1, b), (a, b + 1), (a.saturating_sub(1).max(1), a), (b, 120)]);
    }
    for (first, last) in ranges {
        let last = last.min(120);
        let slices = sm.journal_slices(first, last).unwrap();
        let mut got = Vec::new();
        for (i, s) in slices.iter().enumerate() {
            let seg = segs.iter().find(|g| g.number == s.segment).unwrap();
            assert_eq!(s.offset == 0, s.first_txn == seg.records.unwrap().0, "offset 0 iff the segment's first record");
            if i > 0 {
                assert_eq!(s.offset, 0, "a later slice starts at its segment's beginning");
                assert!(s.segment > slices[i - 1].segment);
            }
            got.extend(slice_txns(s));
        }
        assert_eq!(got, (first..=last).collect::<Vec<_>>(), "slices for [{first}, {last}]");
    }
    assert!(matches!(sm.journal_slices(5, 4), Err(ArchiveError::EmptyRange { .. })));
    let err = sm.journal_slices(1, 121).unwrap_err();
    assert!(matches!(err, ArchiveError::BeyondDurable { durable: 120, .. }), "{err}");
    sm.wait_durable(120, Duration::from_secs(5)).unwrap();
    let err = sm.wait_durable(121, Duration::from_millis(20)).unwrap_err();
    assert!(matches!(err, ArchiveError::NotDurable { txn: 121, durable: 120, .. }), "{err}");
}

#[test]
fn a_hot_copy_by_the_archive_contract_restores_the_state_at_its_end_point() {
    let dir = tempdir();
    let mut cfg = config("contract");
    cfg.checkpoint_interval = Some(Duration::from_millis(3)); // atoms change and journal recycles under the copy
    let db = Arc::new(Database::open(dir.path(), cfg).unwrap());
    let wl = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 11, threads: 3, key_space: 300, delete_fraction: 0.3, ..WorkloadConfig::default() },
    );
    wait_until("some load", Duration::from_secs(30), || wl.acked_count() >= 200);
    let archive: Arc<dyn Archive> = db.archive(0).unwrap();
    let target = tempdir();

    // 1. pin at R; 2. copy atoms while they change.
    let pin = archive.pin_journal().unwrap();
    let r = pin.recovery_start();
    std::fs::create_dir_all(target.path().join("atoms")).unwrap();
    for (i, atom) in archive.atoms().unwrap().into_iter().enumerate() {
        if i == 3 {
            let seen = wl.acked_count();
            wait_until("commits during the copy", Duration::from_secs(30), || wl.acked_count() >= seen + 100);
        }
        match std::fs::copy(&atom.path, target.path().join("atoms").join(atom.path.file_name().unwrap())) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // dropped since the listing
            Err(e) => panic!("copy {}: {e}", atom.path.display()),
        }
    }
    // 3. E = the durable watermark, then the journal [R, E].
    let e = archive.durable_txn();
    archive.wait_durable(e, Duration::from_secs(5)).unwrap();
    let slices = archive.journal_slices(r, e).unwrap();
    let id = archive.identity();
    write_slices(&slices, id.database_id, id.archive_id, target.path());
    drop(pin);
    // The restore must leave out what was committed after E: the load commits past E before it stops (a commit
    // durable here is acknowledged, and in the report, before its thread stops). Under load its threads may not
    // have run at all while the journal was copied.
    wait_until("a commit after E", Duration::from_secs(30), || archive.durable_txn() > e);
    let report = wl.stop();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.acked.last().unwrap().txn_id > e, "the load went on after E");

    // 4. restore = atoms + replay of records above each atom's LSN up to E.
    let restored = read_archive(target.path()).unwrap();
    assert_entries_eq(&restored.entries, &replay_upto(&report.acked, e), &format!("restore at E = {e} (R = {r})"));
    assert!(restored.last_txn <= e);

    // The restored directory opens as a database of its own: segments may start above 1 and mid-segment (a header
    // in front of the slice), and the transaction sequence continues after E.
    let first_segment = slices.first().map(|s| (s.segment, s.offset));
    eprintln!("restored journal starts at segment and offset {first_segment:?}");
    let root = tempdir();
    std::fs::rename(target.path(), root.path().join("0")).unwrap();
    let mut cfg = config("contract");
    cfg.database_id = Some(id.database_id);
    let reopened = Database::open(root.path(), cfg).unwrap();
    assert_entries_eq(&reopened.entries().unwrap(), &replay_upto(&report.acked, e), "restored database");
    assert_eq!(restored.last_txn, e);
    assert_eq!(reopened.commit(&Txn::new().put("after", "restore")).unwrap().txn_id, e + 1);
    reopened.close().unwrap();
}
