//! `backset demo`: the whole cycle on the embedded default.
//!
//! Until the engine lands, the demo exercises the format and the copier end to end: it writes an archive (journal
//! segment with commit records, atom files), copies it with the copier into a full element of a backup set built in
//! the order docs/FORMAT.md prescribes (data, control, move into place, state), reads everything back, and verifies
//! every checksum.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use backset_copier::{Copier, CopyRequest, JobControl, Options};
use backset_format::{self as format, fsio, layout};
use format::{
    AtomState, Catalog, CatalogEntry, ElementEntry, ElementInfo, ElementKind, ElementStatus, FileEntry, FileKind,
    Manifest, Participant, SegmentHeader, SegmentWriter, State, TxnRange,
};
use uuid::Uuid;

/// Options of `backset demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to work in (created; must be empty or absent). Default: a temporary directory, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of commits to write to the journal.
    #[arg(long, default_value_t = 10_000)]
    commits: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let tmp;
    let root = match &args.dir {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            ensure!(fs::read_dir(d)?.next().is_none(), "{} is not empty; give an empty or new directory", d.display());
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let database_id = Uuid::new_v4();

    // An archive: one journal segment of `commits` records and one atom file per 100 commits.
    let archive = root.join("archive");
    fs::create_dir_all(archive.join(layout::JOURNAL_DIR))?;
    fs::create_dir_all(archive.join(layout::ATOMS_DIR))?;
    let seg_path = archive.join(layout::data_file_path(FileKind::Journal, 1));
    let header = SegmentHeader { database_id, archive_id: 0, segment: 1, first_txn: 1 };
    let mut w = SegmentWriter::create(std::io::BufWriter::new(fs::File::create(&seg_path)?), header)?;
    for txn in 1..=args.commits {
        w.append(txn, now + txn, format!("put key{:05} = value {txn}", txn % 1000).as_bytes())?;
    }
    w.into_inner().into_inner()?.sync_all()?;
    let mut catalog = Vec::new();
    for atom_id in 1..=args.commits.div_ceil(100) {
        let lsn = (atom_id * 100).min(args.commits);
        let bytes = format::encode_atom(atom_id, lsn, format!("atom {atom_id} as of {lsn}").repeat(50).as_bytes())?;
        fs::write(archive.join(layout::data_file_path(FileKind::Atom, atom_id)), &bytes)?;
        catalog.push(CatalogEntry {
            atom_id,
            lsn,
            state: AtomState::Present { hash: *blake3::hash(&bytes).as_bytes() },
        });
    }
    println!("archive   {}: {} commits in journal segment 1, {} atoms", archive.display(), args.commits, catalog.len());

    // Re-read the archive: every record and every atom checks.
    let seg = fs::read(&seg_path)?;
    let (_, mut records) = format::read_segment(&seg)?;
    let count = records.by_ref().try_fold(0u64, |n, r| r.map(|_| n + 1))?;
    ensure!(count == args.commits && records.tail() == Some(format::Tail::Clean), "journal re-read mismatch");
    for e in &catalog {
        format::decode_atom(&fs::read(archive.join(layout::data_file_path(FileKind::Atom, e.atom_id)))?)?;
    }

    // A full element built as the format's ordering invariants say: data copied into tmp/<element id>/ by the
    // copier (which fsyncs and hashes every byte), then control/, then the move into place, then the state.
    let set = root.join("backup-set");
    let element_id = Uuid::new_v4();
    let building = set.join(layout::TMP_DIR).join(element_id.to_string());
    let control = building.join(layout::CONTROL_DIR);
    fs::create_dir_all(&control)?;
    let txn_range = TxnRange { first: 1, last: args.commits };
    let mut sources: Vec<(FileKind, u64)> = catalog.iter().map(|e| (FileKind::Atom, e.atom_id)).collect();
    sources.push((FileKind::Journal, 1));
    let requests: Vec<_> = sources
        .iter()
        .map(|&(kind, id)| {
            let rel = layout::data_file_path(kind, id);
            CopyRequest::file(archive.join(&rel), building.join(layout::DATA_DIR).join(&rel))
        })
        .collect();
    let mut copier = Copier::new(Options::default())?;
    let report = copier.copy(&requests, &JobControl::new(), None)?;
    let files = sources
        .iter()
        .zip(&report.files)
        .map(|(&(kind, id), f)| FileEntry {
            kind,
            id,
            offset: 0,
            size: f.bytes,
            hash: f.hash,
            chunk_hashes: f.chunk_hashes.clone(),
        })
        .collect();
    println!(
        "copier    {} files, {} bytes in {:.3} s ({} backend, {} direct-I/O targets)",
        report.files.len(),
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.backend.name(),
        report.direct_targets
    );
    fsio::write_metadata(&control, layout::MANIFEST_FILE, &Manifest { element_id, files })?;
    fsio::write_metadata(&control, layout::CATALOG_FILE, &Catalog { element_id, atoms: catalog })?;
    let info = ElementInfo {
        element_id,
        kind: ElementKind::Full,
        sequence: 0,
        hot_copy_id: Uuid::new_v4(),
        coordinator_start_id: 1,
        participants: vec![Participant { start_id: 1, archive_id: 0 }],
        txn_range,
        begin_micros: now,
        end_micros: now,
        parent: None,
    };
    fsio::write_metadata(&control, layout::ELEMENT_INFO_FILE, &info)?;
    fsio::sync_dir(&building)?;
    let full = set.join(layout::ELEMENT_NAME_FULL);
    fs::rename(&building, &full)?;
    fsio::sync_dir(&set)?;
    let control = full.join(layout::CONTROL_DIR);
    let state = State {
        set_id: Uuid::new_v4(),
        database_name: "demo".into(),
        database_id,
        archive_id: 0,
        storage_groups: vec![],
        elements: vec![ElementEntry {
            kind: ElementKind::Full,
            sequence: 0,
            element_id,
            status: ElementStatus::Completed,
            txn_range,
            begin_micros: now,
            end_micros: now,
        }],
    };
    fsio::write_metadata(&set, layout::STATE_FILE, &state)?;
    let back: State = fsio::read_metadata(&set.join(layout::STATE_FILE))?;
    ensure!(back == state, "state re-read mismatch");
    let manifest: Manifest = fsio::read_metadata(&control.join(layout::MANIFEST_FILE))?;
    // Every data file re-read and checked against the manifest, as a restore would.
    for f in &manifest.files {
        let path = full.join(layout::DATA_DIR).join(layout::data_file_path(f.kind, f.id));
        let bytes = fs::read(&path)?;
        ensure!(blake3::hash(&bytes).as_bytes() == &f.hash, "{} does not match its manifest hash", path.display());
    }
    let _: Catalog = fsio::read_metadata(&control.join(layout::CATALOG_FILE))?;
    let _: ElementInfo = fsio::read_metadata(&control.join(layout::ELEMENT_INFO_FILE))?;
    println!(
        "backup set {}: full element (manifest of {} files, catalog, element info) and state, all checksums verified",
        set.display(),
        manifest.files.len()
    );
    println!("Hot copies of a live database, restore and check arrive with the engine; see README.md, \"Status\".");
    Ok(())
}
