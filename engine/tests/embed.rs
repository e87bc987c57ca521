//! The SM author's example (`examples/embed.rs`), linking only the engine: its SM is hot-copied into a backup set
//! and the set restores to exactly the SM's files.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

mod support;

use backset_format::layout::{atom_file_name, ATOMS_DIR, JOURNAL_DIR};
use backset_format::{decode_atom, read_segment};

#[test]
fn the_embedding_example_hot_copies_its_sm_and_the_set_restores_its_state() {
    let dir = support::tempdir();
    let out = embed::run(&dir.path().join("embed")).expect("the example runs");

    // The example's SM holds atom 1 at LSN 2 (txns 1 and 2) and txns 1 to 3 in its journal, with R = E = 3.
    assert_eq!(out.report.target_txn, 3, "the latest restorable transaction is the SM's durable one");
    assert_eq!((out.report.atoms, out.report.records), (1, 1), "one atom file, and the one record at or above R");
    let atom = std::fs::read(out.restored.join(ATOMS_DIR).join(atom_file_name(1))).unwrap();
    assert_eq!(atom, std::fs::read(out.archive.join(ATOMS_DIR).join(atom_file_name(1))).unwrap(), "the atom's bytes");
    let (header, body) = decode_atom(&atom).unwrap();
    assert_eq!((header.atom_id, header.lsn, body), (1, 2, &b"a=1 b=2"[..]));
    let segments: Vec<_> =
        std::fs::read_dir(out.restored.join(JOURNAL_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (_, reader) = read_segment(&bytes).unwrap();
    let records: Vec<(u64, Vec<u8>)> = reader.map(|r| r.unwrap()).map(|r| (r.txn_id, r.payload.to_vec())).collect();
    assert_eq!(records, vec![(3, b"put a=3".to_vec())], "the restored journal replays txn 3 over the atom");
    assert!(out.set.join("state").is_file(), "the backup set has its state");
}
