//! A bulk loader: creates a reference-store database whose archives already hold gigabytes of atoms, in seconds,
//! for benchmarks (hot copy, restore, check of large archives).
//!
//! It writes atom files directly instead of committing: keys `bulk-<n>` with values of `value_bytes` pseudo-random
//! bytes (the BLAKE3 extendable output of the seed and the key, so content does not compress or deduplicate), routed
//! to atoms exactly as [`Database`](crate::Database) routes them. Every atom gets LSN 1, as if one
//! transaction 1 had written everything and a checkpoint had followed; journals are left empty, so the database's
//! next transaction is 2 and its recovery start is 2. Atoms are built one at a time (memory: one atom body).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use backset_format::layout::{atom_file_name, ATOMS_DIR, JOURNAL_DIR};
use backset_format::limits::MAX_ATOM_BODY_BYTES;
use backset_format::{encode_atom, AtomHeader};

use backset_engine::lock::{DirKind, DirLock};

use crate::codec::{encode_body, entry_len};
use crate::config::{archive_dir, Config, DbMeta};
use crate::db::routing_of;
use crate::error::StoreError;
use crate::limits::CHECKPOINT_SYNC_THREADS;
use crate::sync::{sync_dir, sync_files};

/// What to load.
#[derive(Debug, Clone)]
pub struct BulkSpec {
    /// Bytes of key/value data each archive should hold at least.
    pub bytes_per_archive: u64,
    /// Length of every value.
    pub value_bytes: usize,
    /// Seed of the value bytes.
    pub seed: u64,
}

/// What the loader wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkReport {
    /// Keys in the database.
    pub keys: u64,
    /// Atom files written, over all archives.
    pub atom_files: u64,
    /// Bytes of atom files written, over all archives.
    pub bytes_written: u64,
    /// The transaction id the atoms are stamped with (their LSN); the database continues at the next one.
    pub txn_id: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// The key of bulk entry `n`.
pub fn bulk_key(n: u64) -> Vec<u8> {
    format!("bulk-{n:012}").into_bytes()
}

/// The value of `key` for `seed`.
pub fn bulk_value(seed: u64, key: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(key);
    h.finalize_xof().fill(&mut v);
    v
}

/// Creates the database `config` describes in `root` (which must not hold a database yet), filled per `spec`. Open it
/// afterwards with [`Database::open`](crate::Database::open) and the same `config`.
pub fn bulk_load(root: &Path, config: &Config, spec: &BulkSpec) -> Result<BulkReport, StoreError> {
    let started = Instant::now();
    config.validate()?;
    if spec.value_bytes == 0 || spec.value_bytes as u64 > MAX_ATOM_BODY_BYTES / 2 {
        return Err(StoreError::Config {
            reason: format!("bulk value_bytes = {}, must be 1..={}", spec.value_bytes, MAX_ATOM_BODY_BYTES / 2),
        });
    }
    fs::create_dir_all(root).map_err(StoreError::io("create directory", root))?;
    // Refuses a directory a running store holds (backset_engine::lock), and keeps one from opening it while this writes.
    let _lock = DirLock::exclusive(root, DirKind::Database)?;
    if DbMeta::read(root)?.is_some() {
        return Err(StoreError::Config {
            reason: format!("{} already holds a database; bulk load into an empty directory", root.display()),
        });
    }
    let meta = DbMeta::from_config(config)?;
    let routing = routing_of(&meta);
    let sms = config.sms;

    // Choose the keys: enough that every archive holds at least bytes_per_archive.
    let mut per_atom: BTreeMap<(usize, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut held = vec![0u64; sms];
    let mut keys = 0u64;
    while held.iter().any(|&h| h < spec.bytes_per_archive) {
        let k = bulk_key(keys);
        keys += 1;
        let (g, atom_id) = routing.route(&k);
        let len = entry_len(&k, &[]) + spec.value_bytes as u64 + 4;
        for &a in &routing.groups[g].1 {
            held[a] += len;
        }
        per_atom.entry((g, atom_id)).or_default().push(k);
    }

    let txn_id = 1;
    let mut written = Vec::new();
    let mut atom_files = 0;
    let mut bytes_written = 0;
    for a in 0..sms {
        let dir = archive_dir(root, a as u64);
        fs::create_dir_all(dir.join(ATOMS_DIR)).map_err(StoreError::io("create directory", &dir))?;
        fs::create_dir_all(dir.join(JOURNAL_DIR)).map_err(StoreError::io("create directory", &dir))?;
    }
    for ((g, atom_id), mut atom_keys) in per_atom {
        atom_keys.sort();
        let values: Vec<Vec<u8>> = atom_keys.iter().map(|k| bulk_value(spec.seed, k, spec.value_bytes)).collect();
        let mut body = Vec::new();
        encode_body(atom_keys.len(), atom_keys.iter().map(|k| &k[..]).zip(values.iter().map(|v| &v[..])), &mut body);
        drop(values);
        if body.len() as u64 > MAX_ATOM_BODY_BYTES {
            return Err(StoreError::Config {
                reason: format!(
                    "atom {atom_id:#x} would hold {} bytes, more than the limit of {MAX_ATOM_BODY_BYTES}; create the \
                     database with more atom_buckets",
                    body.len()
                ),
            });
        }
        let header = AtomHeader::for_body(atom_id, txn_id, &body).encode();
        debug_assert_eq!(&encode_atom(atom_id, txn_id, &body).expect("checked size")[..header.len()], &header[..]);
        for &a in &routing.groups[g].1 {
            let path = archive_dir(root, a as u64).join(ATOMS_DIR).join(atom_file_name(atom_id));
            let mut f = File::create(&path).map_err(StoreError::io("create", &path))?;
            f.write_all(&header).map_err(StoreError::io("write", &path))?;
            f.write_all(&body).map_err(StoreError::io("write", &path))?;
            written.push(path);
            atom_files += 1;
            bytes_written += (header.len() + body.len()) as u64;
        }
    }
    // Fsync once everything is written rather than file by file: the page cache writes back in the background
    // meanwhile, and each fsync makes the device flush its cache, so one wave of fsyncs at the end costs far less
    // than a flush after every file (12 s per GB here, against about 3 s); and from several threads, as a checkpoint
    // does, since an archive of small atoms has hundreds of thousands of files.
    sync_files(&written, CHECKPOINT_SYNC_THREADS)?;
    for a in 0..sms {
        let dir = archive_dir(root, a as u64);
        sync_dir(&dir.join(ATOMS_DIR))?;
        sync_dir(&dir.join(JOURNAL_DIR))?;
        sync_dir(&dir)?;
    }
    meta.write(root)?;
    Ok(BulkReport { keys, atom_files, bytes_written, txn_id, elapsed: started.elapsed() })
}
