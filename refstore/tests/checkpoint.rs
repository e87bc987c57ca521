//! The checkpointer: whole atom versions for open readers, dropped atoms, segment rollover and recycling before R,
//! journal pins and journal-hot-copy retention.

mod support;

use std::io::Read;

use backset_engine::archive::Archive;
use backset_format::decode_atom;
use backset_refstore::{Config, Database, Txn};
use support::{config, file_names, tempdir};

fn fill(db: &Database, from: u64, n: u64) {
    for i in from..from + n {
        db.commit(&Txn::new().put(format!("key-{i}"), vec![b'x'; 200])).unwrap();
    }
}

#[test]
fn a_reader_that_opened_an_atom_file_keeps_a_whole_version_across_a_checkpoint() {
    let dir = tempdir();
    let mut cfg = config("rename");
    cfg.atom_buckets = Some(1);
    let db = Database::open(dir.path(), cfg).unwrap();
    fill(&db, 0, 20);
    db.checkpoint_now().unwrap();
    let atom = &db.archives()[0].atoms().unwrap()[0];
    assert_eq!(atom.lsn, 20);
    let mut old = std::fs::File::open(&atom.path).unwrap();
    // Read the first bytes now, the rest after the file was replaced twice.
    let mut bytes = vec![0u8; 100];
    old.read_exact(&mut bytes).unwrap();
    fill(&db, 20, 30);
    db.checkpoint_now().unwrap();
    db.commit(&Txn::new().delete("key-0")).unwrap();
    db.checkpoint_now().unwrap();
    old.read_to_end(&mut bytes).unwrap();
    let (header, _) = decode_atom(&bytes).expect("the old descriptor reads one whole, valid version");
    assert_eq!(header.lsn, 20);
    let new = std::fs::read(&atom.path).unwrap();
    assert_eq!(decode_atom(&new).unwrap().0.lsn, 51);
    assert!(file_names(&dir.path().join("0/atoms")).iter().all(|n| !n.starts_with(".tmp-")), "no temporary left");
}

#[test]
fn an_atom_that_becomes_empty_is_dropped_and_reappears_with_a_new_key() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("drop")).unwrap();
    let sm = &db.archives()[0];
    let a = db.atom_of(b"lonely");
    db.commit(&Txn::new().put("lonely", "1")).unwrap();
    db.checkpoint_now().unwrap();
    assert_eq!(sm.atoms_lsns(), vec![(a, 1)]);
    db.commit(&Txn::new().delete("lonely")).unwrap();
    let stats = db.checkpoint_now().unwrap();
    assert_eq!((stats.atoms_written, stats.atoms_dropped), (0, 1));
    assert!(sm.atoms().unwrap().is_empty(), "the empty atom has no file");
    assert_eq!(db.get(b"lonely").unwrap(), None);
    db.commit(&Txn::new().put("lonely", "2")).unwrap();
    db.checkpoint_now().unwrap();
    assert_eq!(sm.atoms_lsns(), vec![(a, 3)], "it reappears with the LSN of the txn that refilled it");
    db.close().unwrap();
    drop(db);
    let db = Database::open(dir.path(), config("drop")).unwrap();
    assert_eq!(db.get(b"lonely").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn segments_roll_over_and_are_recycled_once_below_r() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("recycle")).unwrap();
    let sm = &db.archives()[0];
    fill(&db, 0, 100); // 100 records of ~250 bytes: about 6 segments of 4 KiB
    let segs = sm.segments();
    assert!(segs.len() >= 5, "rollover at 4 KiB made {} segments", segs.len());
    for s in &segs[..segs.len() - 1] {
        assert!(s.len >= 4096 && s.len < 4096 + 300, "segment {} closed at {} bytes", s.number, s.len);
    }
    for w in segs.windows(2) {
        assert_eq!(w[1].number, w[0].number + 1);
        assert_eq!(w[1].header_first_txn, w[0].records.unwrap().1 + 1, "a new segment starts at the next record");
    }
    assert_eq!(sm.recovery_start(), 1, "nothing checkpointed yet");
    let stats = db.checkpoint_now().unwrap();
    assert_eq!(stats.recovery_start, 101);
    assert_eq!(stats.segments_recycled, segs.len() - 1, "every segment but the current one is below R");
    let left = sm.segments();
    assert_eq!(left.len(), 1);
    assert!(left[0].current);
    assert_eq!(file_names(&dir.path().join("0/journal")).len(), 1, "recycled segments are deleted");
    // Only changes of durable txns were written, and R moves forward with the next dirty atom.
    db.commit(&Txn::new().put("late", "1")).unwrap();
    assert_eq!(sm.recovery_start(), 101);
}

#[test]
fn a_journal_pin_holds_segments_until_it_is_dropped() {
    let dir = tempdir();
    let db = Database::open(dir.path(), config("pin")).unwrap();
    let sm = &db.archives()[0];
    fill(&db, 0, 10);
    let pin = sm.pin_journal().unwrap();
    assert_eq!(pin.recovery_start(), 1);
    fill(&db, 10, 90);
    db.checkpoint_now().unwrap();
    assert_eq!(sm.recovery_start(), 101);
    let first = sm.segments()[0].clone();
    assert_eq!(first.records.unwrap().0, 1, "the segment holding R = 1 is kept");
    let slices = sm.journal_slices(pin.recovery_start(), 100).unwrap();
    assert_eq!(slices.first().unwrap().first_txn, 1);
    assert_eq!(slices.last().unwrap().last_txn, 100);
    drop(pin);
    let stats = db.checkpoint_now().unwrap();
    assert!(stats.segments_recycled >= 5, "released: {stats:?}");
    assert_eq!(sm.segments().len(), 1);
    let err = sm.journal_slices(1, 100).unwrap_err();
    assert!(err.to_string().contains("recycled"), "{err}");
}

#[test]
fn journal_hot_copy_retention_keeps_segments_until_they_are_copied() {
    let dir = tempdir();
    let mut cfg: Config = config("retain");
    cfg.journal_hot_copy = true;
    let db = Database::open(dir.path(), cfg).unwrap();
    let sm = &db.archives()[0];
    assert!(sm.journal_hot_copy_enabled());
    fill(&db, 0, 100);
    assert_eq!(db.retained_journal_bytes(), 0, "nothing is below R yet");
    let before = sm.segments();
    let stats = db.checkpoint_now().unwrap();
    assert_eq!(stats.segments_recycled, 0, "retention keeps every segment");
    assert_eq!(sm.segments(), before);
    let closed: u64 = before[..before.len() - 1].iter().map(|s| s.len).sum();
    assert_eq!(db.retained_journal_bytes(), closed, "everything below R is retained");

    let cut = before[1].records.unwrap().1; // the last txn of the second segment
    sm.journal_copied_up_to(cut);
    sm.journal_copied_up_to(3); // going back is ignored
    let stats = db.checkpoint_now().unwrap();
    assert_eq!(stats.segments_recycled, 2, "segments whose records are all copied go");
    assert_eq!(sm.segments()[0].number, before[2].number);
    assert!(db.retained_journal_bytes() < closed);
    sm.journal_copied_up_to(db.durable_watermark());
    db.checkpoint_now().unwrap();
    assert_eq!(sm.segments().len(), 1);
    assert_eq!(db.retained_journal_bytes(), 0);
}

#[test]
fn the_atom_listing_from_memory_matches_the_files_on_disk() {
    use backset_format::atom::{AtomHeader, ATOM_HEADER_BYTES};
    let dir = tempdir();
    let mut c = config("listing");
    c.atom_buckets = Some(64);
    let db = Database::open(dir.path(), c).unwrap();
    let on_disk = |db: &Database| {
        let atoms = db.root().join("0").join("atoms");
        let mut v: Vec<(u64, u64, u64)> = std::fs::read_dir(&atoms)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().len() == 16)
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let h = AtomHeader::parse(&bytes[..ATOM_HEADER_BYTES]).unwrap();
                (h.atom_id, h.lsn, bytes.len() as u64)
            })
            .collect();
        v.sort();
        v
    };
    let listed = |db: &Database| {
        let v: Vec<(u64, u64, u64)> =
            db.archives()[0].atoms().unwrap().into_iter().map(|a| (a.atom_id, a.lsn, a.bytes.unwrap())).collect();
        v
    };
    for round in 0..4u32 {
        let mut txn = Txn::new();
        for i in 0..200u32 {
            if (i + round) % 3 == 0 {
                txn = txn.delete(format!("k{i}"));
            } else {
                txn = txn.put(format!("k{i}"), vec![round as u8; (i as usize % 7) * 10 + 1]);
            }
        }
        db.commit(&txn).unwrap();
        // Not checkpointed yet: the listing still names the files as they are.
        assert_eq!(listed(&db), on_disk(&db), "round {round} before its checkpoint");
        db.checkpoint_now().unwrap();
        assert_eq!(listed(&db), on_disk(&db), "round {round} after its checkpoint");
    }
    // Every key deleted: every atom file removed, none listed.
    let mut txn = Txn::new();
    txn.deletes = (0..200u32).map(|i| format!("k{i}").into_bytes()).collect();
    db.commit(&txn).unwrap();
    db.checkpoint_now().unwrap();
    assert_eq!(listed(&db), Vec::new());
    assert_eq!(on_disk(&db), Vec::new());
}
