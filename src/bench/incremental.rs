//! `backset bench incremental`: what an incremental hot copy costs against a full, on a bulk-loaded archive of a
//! given size and atom count: a full, changes to a share of the atoms (one key each), an incremental, and an
//! incremental with nothing changed (the listing and catalog cost alone); and what verifying the incremental costs
//! against a full `check`: a `check` after the full, then `check --new` after the incremental (each recording what
//! it verified). docs/PERFORMANCE.md, "Incremental cost".

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use backset_engine::check::{check_set, CheckOptions, Select};
use backset_engine::hotcopy::{HotCopyManager, HotCopyRequest, HotCopyStatus, HotCopyType, JobState};
use backset_refstore::bulk::{bulk_key, bulk_value, BulkReport, BulkSpec};
use backset_refstore::limits::{MAX_ATOM_BUCKETS, MAX_OPS_PER_TXN, MAX_VALUE_BYTES};
use backset_refstore::{Config, Database, Txn};

use super::files::bulk_loaded;

/// Options of `backset bench incremental`.
#[derive(clap::Args, Debug)]
pub struct IncrementalArgs {
    /// Directory on the disk to measure; a temporary directory is made in it (database and backup set) and removed
    /// afterwards.
    dir: PathBuf,
    /// Size of the archive in MiB (keys and values).
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=1_048_576))]
    size_mib: u64,
    /// Atoms of the database (`--atom-buckets` of its one storage group), 1 to 1048576; every atom gets keys.
    #[arg(long, default_value_t = 65_536, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u32>::new().range(1..=i64::from(MAX_ATOM_BUCKETS)))]
    atoms: u32,
    /// Share of the atoms changed between the full and the incremental, in percent (one key rewritten in each).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = percent)]
    changed_percent: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
        _ => Err(format!("{s:?} is not a percentage above 0 and at most 100")),
    }
}

/// Keys per atom the bulk load aims at: enough that nearly every atom holds one (an atom without a key has no
/// file), few enough that an atom stays small.
const KEYS_PER_ATOM: u64 = 4;

/// Smallest value the bench writes, bytes.
const MIN_VALUE_BYTES: u64 = 16;

/// Longest the bench waits for one hot copy.
const HOT_COPY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Bytes of values one transaction of the change phase carries at most (a journal record stays well under the
/// format's limit).
const CHANGE_TXN_BYTES: u64 = 8 << 20;

/// One hot copy's figures.
pub(super) struct Copied {
    pub(super) bytes: u64,
    pub(super) files: u64,
    pub(super) secs: f64,
}

impl Copied {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({ "bytes": self.bytes, "files": self.files, "seconds": self.secs })
    }
}

/// The database and bulk load of an archive of `size_mib` MiB in `atoms` atoms (`KEYS_PER_ATOM` keys each), and the
/// bytes of each value.
pub(super) fn bulk_spec(name: &str, size_mib: u64, atoms: u32, journal_hot_copy: bool) -> (Config, BulkSpec) {
    let bytes = size_mib << 20;
    let per_key = (bytes / (u64::from(atoms) * KEYS_PER_ATOM)).max(MIN_VALUE_BYTES);
    let value_bytes = per_key.saturating_sub(32).clamp(MIN_VALUE_BYTES, MAX_VALUE_BYTES as u64) as usize;
    let config = Config { atom_buckets: Some(atoms), checkpoint_interval: None, journal_hot_copy, ..Config::new(name) };
    (config, BulkSpec { bytes_per_archive: bytes, value_bytes, seed: BULK_SEED })
}

/// The seed of the bulk-loaded values; round `r` of changes writes values of seed `BULK_SEED + 1 + r`.
const BULK_SEED: u64 = 11;

/// Runs one hot copy of `kind` into `set` to its end.
pub(super) fn hot_copy(manager: &HotCopyManager, kind: HotCopyType, set: &Path) -> Result<(HotCopyStatus, Copied)> {
    let (start_id, id) = manager.start(HotCopyRequest::new(kind).backup_dir(0, set))?;
    let s: HotCopyStatus = manager.status(start_id, id, Some(HOT_COPY_TIMEOUT))?;
    if s.status != JobState::Completed {
        bail!("the {} hot copy into {} did not complete: {}", kind.name(), set.display(), s.message);
    }
    let secs = s.end_micros.unwrap_or(s.begin_micros).saturating_sub(s.begin_micros) as f64 / 1e6;
    let copied = Copied { bytes: s.bytes_done, files: s.files_done, secs };
    Ok((s, copied))
}

/// Round `round` of changes to a bulk-loaded database: one key rewritten (committed, not checkpointed) in each atom
/// whose id is `round` modulo the stride `100 / changed_percent`, so the changes are spread over the archive and
/// successive rounds change other atoms; at most `keys_per_txn` keys (and `CHANGE_TXN_BYTES`) a transaction.
/// Returns how many atoms were changed.
pub(super) fn change_atoms(
    db: &Database,
    loaded: &BulkReport,
    spec: &BulkSpec,
    changed_percent: f64,
    round: u64,
    keys_per_txn: usize,
) -> Result<usize> {
    let stride = (100.0 / changed_percent).round().max(1.0) as u64;
    let mut chosen: std::collections::BTreeMap<u64, Vec<u8>> = std::collections::BTreeMap::new();
    for n in 0..loaded.keys {
        let key = bulk_key(n);
        let atom = db.atom_of(&key);
        if atom % stride == round % stride {
            chosen.entry(atom).or_insert(key);
        }
    }
    ensure!(!chosen.is_empty(), "no atom was chosen to change; give a larger --changed-percent");
    let mut txn = Txn::new();
    let mut txn_bytes = 0;
    for key in chosen.values() {
        let value = bulk_value(spec.seed + 1 + round, key, spec.value_bytes);
        txn_bytes += value.len() as u64;
        txn.puts.push((key.clone(), value));
        if txn.puts.len() >= keys_per_txn.clamp(1, MAX_OPS_PER_TXN) || txn_bytes >= CHANGE_TXN_BYTES {
            db.commit(&txn).context("commit the changes")?;
            (txn, txn_bytes) = (Txn::new(), 0);
        }
    }
    if !txn.puts.is_empty() {
        db.commit(&txn).context("commit the changes")?;
    }
    Ok(chosen.len())
}

pub(super) fn incremental(args: &IncrementalArgs) -> Result<()> {
    let (config, spec) = bulk_spec("incremental", args.size_mib, args.atoms, false);
    let value_bytes = spec.value_bytes;
    let bench = bulk_loaded(&args.dir, "incremental", config, &spec)?;
    let (db, manager, set, loaded) = (&bench.db, &bench.manager, &bench.set, &bench.report);
    let run = |kind: HotCopyType| -> Result<Copied> { Ok(hot_copy(manager, kind, set)?.1) };

    // Each check records what it verified, so `check --new` after the incremental reads only what is new.
    let check = |select: Select| -> Result<Copied> {
        let opts = CheckOptions { select, record: true, ..CheckOptions::default() };
        let report = check_set(set, &opts)?;
        ensure!(report.is_ok(), "the check of {} found defects: {:?}", set.display(), report.defects);
        Ok(Copied { bytes: report.bytes_read, files: report.files_read, secs: report.elapsed.as_secs_f64() })
    };

    let full = run(HotCopyType::Full)?;
    let full_check = check(Select::All)?;

    let changes_began = Instant::now();
    let changed = change_atoms(db, loaded, &spec, args.changed_percent, 0, MAX_OPS_PER_TXN)?;
    let checkpoint = db.checkpoint_now().context("checkpoint the changes")?;
    let changes_secs = changes_began.elapsed().as_secs_f64();

    let inc = run(HotCopyType::Incremental)?;
    let new_check = check(Select::New)?;
    let unchanged = run(HotCopyType::Incremental)?;
    db.close().context("close the database")?;

    let atom_files = loaded.atom_files;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let bytes_ratio = ratio(inc.bytes as f64, full.bytes as f64);
    let time_ratio = ratio(inc.secs, full.secs);
    let time_ratio_less_listing = ratio((inc.secs - unchanged.secs).max(0.0), full.secs);
    let check_bytes_ratio = ratio(new_check.bytes as f64, full_check.bytes as f64);
    let check_time_ratio = ratio(new_check.secs, full_check.secs);
    if args.json {
        let json = serde_json::json!({
            "size_mib": args.size_mib,
            "atom_buckets": args.atoms,
            "atom_files": atom_files,
            "keys": loaded.keys,
            "value_bytes": value_bytes,
            "changed_atoms": changed,
            "changed_percent_of_atoms": 100.0 * changed as f64 / atom_files.max(1) as f64,
            "changes_seconds": changes_secs,
            "checkpointed_atoms": checkpoint.atoms_written,
            "full": full.json(),
            "incremental": inc.json(),
            "unchanged_incremental": unchanged.json(),
            "bytes_ratio": bytes_ratio,
            "time_ratio": time_ratio,
            "time_ratio_less_listing": time_ratio_less_listing,
            "check": full_check.json(),
            "check_new": new_check.json(),
            "check_new_bytes_ratio": check_bytes_ratio,
            "check_new_time_ratio": check_time_ratio,
        });
        println!("{json}");
    } else {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "archive {} MiB: {} keys of {value_bytes} B in {atom_files} atom files ({} atom buckets), loaded in {:.1} s",
            args.size_mib,
            loaded.keys,
            args.atoms,
            loaded.elapsed.as_secs_f64()
        );
        println!("full                   {:>12.1} MB {:>9} files {:>9.2} s", mb(full.bytes), full.files, full.secs);
        println!(
            "changes                {:>12} atoms ({:.2}% of the atom files), committed and checkpointed in {changes_secs:.2} s",
            changed,
            100.0 * changed as f64 / atom_files.max(1) as f64
        );
        println!("incremental            {:>12.1} MB {:>9} files {:>9.2} s", mb(inc.bytes), inc.files, inc.secs);
        println!(
            "incremental, unchanged {:>12.1} MB {:>9} files {:>9.2} s (listing and catalog)",
            mb(unchanged.bytes),
            unchanged.files,
            unchanged.secs
        );
        println!(
            "incremental / full: {:.2}% of the bytes, {:.2}% of the time ({:.2}% without the unchanged one's)",
            100.0 * bytes_ratio,
            100.0 * time_ratio,
            100.0 * time_ratio_less_listing
        );
        let line = |what: &str, c: &Copied| {
            println!("{what:<22} {:>12.1} MB {:>9} files {:>9.2} s", mb(c.bytes), c.files, c.secs);
        };
        line("check after the full", &full_check);
        line("check --new after inc", &new_check);
        println!(
            "check --new / check: {:.2}% of the bytes, {:.2}% of the time",
            100.0 * check_bytes_ratio,
            100.0 * check_time_ratio
        );
    }
    Ok(())
}
