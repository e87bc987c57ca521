//! The reference store's guarantees G1 and G2 (engine/src/archive.rs) checked directly on its atom files, under a
//! concurrent workload: at every pin, every atom file holds every transaction below the pin's R that touched it (G1),
//! an atom without a file holds no key as of R - 1, and no atom file carries an LSN above what was durable (G2).
//! The expectations come from the workload's acknowledged transactions, not from the store.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backset_refstore::workload::{replay_upto, Workload, WorkloadConfig};
use backset_refstore::Database;
use support::{config, tempdir};

/// One observation: R of a pin and the LSN of every atom file listed under it.
struct Seen {
    r: u64,
    lsns: BTreeMap<u64, u64>,
}

#[test]
fn atom_files_hold_every_transaction_below_r_and_none_above_the_durable_watermark() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path().join("db"), config("invariants")).unwrap());
    let archive = db.archive(0).unwrap();
    let workload = Workload::start(
        Arc::clone(&db),
        WorkloadConfig { seed: 77, threads: 2, key_space: 400, ..WorkloadConfig::default() },
    );
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until || seen.len() < 10 {
        db.checkpoint_now().unwrap();
        let pin = archive.pin_journal().unwrap();
        let mut lsns = BTreeMap::new();
        for atom in archive.atoms().unwrap() {
            let bytes = std::fs::read(&atom.path).unwrap();
            let (header, _) = backset_format::decode_atom(&bytes).unwrap();
            // G2, as far as it can be seen from outside: the durable watermark never decreases, so an LSN that was
            // durable when the file was written is durable now.
            let durable = archive.durable_txn();
            assert!(
                header.lsn <= durable,
                "atom {:#x} has LSN {} above the durable {durable}",
                atom.atom_id,
                header.lsn
            );
            lsns.insert(atom.atom_id, header.lsn);
        }
        seen.push(Seen { r: pin.recovery_start(), lsns });
    }
    let acked = workload.stop().acked;
    assert!(acked.len() > 100, "the workload ran ({} transactions)", acked.len());

    let mut checked = 0;
    for s in &seen {
        // The last transaction below R that touched each atom.
        let mut last_below_r: BTreeMap<u64, u64> = BTreeMap::new();
        for a in acked.iter().filter(|a| a.txn_id < s.r) {
            let keys = a.txn.puts.iter().map(|(k, _)| k).chain(&a.txn.deletes);
            for k in keys {
                last_below_r.insert(db.atom_of(k), a.txn_id);
            }
        }
        for (&atom, &t) in &last_below_r {
            match s.lsns.get(&atom) {
                Some(&lsn) => {
                    assert!(
                        lsn >= t,
                        "G1: atom {atom:#x} has LSN {lsn} at a pin with R = {}, but txn {t} < R touched it",
                        s.r
                    );
                    checked += 1;
                }
                None => {
                    // No file: the atom must hold no key as of R - 1.
                    let live = replay_upto(&acked, s.r - 1).keys().filter(|k| db.atom_of(k) == atom).count();
                    assert_eq!(live, 0, "G1: atom {atom:#x} has no file at R = {} but holds {live} keys then", s.r);
                }
            }
        }
    }
    assert!(checked > 0, "some atom was checked against a transaction below R");
    db.close().unwrap();
}
