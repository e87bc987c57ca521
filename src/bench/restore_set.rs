//! `backset bench restore-set`: makes and keeps a backup set to measure restores on (docs/PERFORMANCE.md, "Restore"):
//! a bulk-loaded archive, a full, then rounds of changes to a share of the atoms, a journal hot copy and an
//! incremental, and last more changes and a journal hot copy, so the latest restore needs the last incremental and
//! journal records past it. The database is removed at the end; the set stays.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use backset_engine::hotcopy::HotCopyType;
use backset_refstore::limits::MAX_ATOM_BUCKETS;

use super::files::{bulk_loaded, walk};
use super::incremental::{bulk_spec, change_atoms, hot_copy, percent};

/// Keys a transaction of the changes rewrites: one, so each change is a journal record of its own, as an
/// application's small transactions make them (a restore past the last incremental replays them one by one).
const KEYS_PER_TXN: usize = 1;

/// Options of `backset bench restore-set`.
#[derive(clap::Args, Debug)]
pub struct RestoreSetArgs {
    /// The backup set to make (absent or an empty directory); it is kept. The database is made beside it, in a
    /// temporary directory of SET's parent, and removed at the end.
    set: PathBuf,
    /// Size of the archive in MiB (keys and values).
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=1_048_576))]
    size_mib: u64,
    /// Atoms of the database (`--atom-buckets` of its one storage group), 1 to 1048576; every atom gets keys.
    #[arg(long, default_value_t = 65_536, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u32>::new().range(1..=i64::from(MAX_ATOM_BUCKETS)))]
    atoms: u32,
    /// Rounds of changes, journal hot copy and incremental after the full, 1 to 100.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Share of the atoms changed in each round, in percent (one key rewritten in each; each round other atoms).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = percent)]
    changed_percent: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn restore_set(args: &RestoreSetArgs) -> Result<()> {
    if args.set.exists() {
        let mut entries = std::fs::read_dir(&args.set).with_context(|| format!("read {}", args.set.display()))?;
        ensure!(entries.next().is_none(), "{} is not empty; give a new or empty directory", args.set.display());
    }
    let name = args.set.file_name().with_context(|| format!("{} names no directory", args.set.display()))?;
    let parent = match args.set.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let started = Instant::now();
    let (config, spec) = bulk_spec("restore-set", args.size_mib, args.atoms, true);
    let bench = bulk_loaded(&parent, "restore-set", config, &spec)?;
    // `bulk_loaded` made the parent and resolved it: hot copy destinations must be absolute.
    let set = std::fs::canonicalize(&parent).with_context(|| format!("resolve {}", parent.display()))?.join(name);
    let (db, manager, loaded) = (&bench.db, &bench.manager, &bench.report);
    if !args.json {
        println!(
            "archive {} MiB: {} keys of {} B in {} atom files ({} atom buckets), loaded in {:.1} s",
            args.size_mib,
            loaded.keys,
            spec.value_bytes,
            loaded.atom_files,
            args.atoms,
            loaded.elapsed.as_secs_f64()
        );
    }
    let mut elements = Vec::new();
    let mut copy = |kind: HotCopyType, changed: Option<usize>| -> Result<()> {
        let (status, copied) = hot_copy(manager, kind, &set)?;
        let element = status.participants.first().and_then(|p| p.element.clone()).unwrap_or_default();
        if !args.json {
            let changes = changed.map_or(String::new(), |n| format!(" (after changes to {n} atoms)"));
            println!(
                "{:<11} -> {element:<8} {:>12.1} MB {:>9} files {:>9.2} s{changes}",
                kind.name(),
                copied.bytes as f64 / 1e6,
                copied.files,
                copied.secs
            );
        }
        let mut json = copied.json();
        json["kind"] = kind.name().into();
        json["element"] = element.into();
        json["changed_atoms"] = changed.into();
        elements.push(json);
        Ok(())
    };
    copy(HotCopyType::Full, None)?;
    for round in 0..=u64::from(args.rounds) {
        let changed = change_atoms(db, loaded, &spec, args.changed_percent, round, KEYS_PER_TXN)?;
        copy(HotCopyType::Journal, Some(changed))?;
        if round < u64::from(args.rounds) {
            // The changed atoms on disk, so the incremental copies them.
            db.checkpoint_now().context("checkpoint the changes")?;
            copy(HotCopyType::Incremental, None)?;
        }
    }
    db.close().context("close the database")?;
    let files = walk(&set)?;
    let mut bytes = 0;
    for f in &files {
        let path = set.join(f);
        bytes += std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?.len();
    }
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let json = serde_json::json!({
            "set": set,
            "size_mib": args.size_mib,
            "atom_buckets": args.atoms,
            "atom_files": loaded.atom_files,
            "keys": loaded.keys,
            "value_bytes": spec.value_bytes,
            "load_seconds": loaded.elapsed.as_secs_f64(),
            "elements": elements,
            "set_bytes": bytes,
            "set_files": files.len(),
            "seconds": secs,
        });
        println!("{json}");
    } else {
        println!("set {}: {:.1} MB in {} files, made in {secs:.1} s", set.display(), bytes as f64 / 1e6, files.len());
        println!("measure a restore of it: backset bench versus-cp {} DIR --restore --runs 5", set.display());
    }
    Ok(())
}
