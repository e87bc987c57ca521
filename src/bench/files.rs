//! What the benches share: the regular files of a source tree, a scratch directory removed however a bench ends, and
//! a bulk-loaded database with a hot copy manager in one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use backset_engine::hotcopy::HotCopyManager;
use backset_refstore::bulk::{bulk_load, BulkReport, BulkSpec};
use backset_refstore::{Config, Database};

/// Regular files under `root`, sorted, as paths relative to it.
pub(super) fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read directory {}", dir.display()))? {
            let entry = entry.with_context(|| format!("read directory {}", dir.display()))?;
            let ty = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the bench's scratch directory however the bench ends.
pub(super) struct Scratch(pub(super) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = backset_format::dirfd::remove_path(&self.0);
    }
}

/// A database bulk-loaded per `spec` and opened, with its hot copy manager, in a scratch directory made under a
/// bench's `DIR`; everything is removed when it drops (the fields drop in order: the scratch directory last).
pub(super) struct Loaded {
    pub(super) db: Arc<Database>,
    pub(super) manager: HotCopyManager,
    pub(super) report: BulkReport,
    /// `<scratch>/set`, where the hot copies go (absolute, as hot copy destinations must be).
    pub(super) set: PathBuf,
    /// `<scratch>/database`, the database's directory (its archives below it).
    pub(super) database: PathBuf,
    _scratch: Scratch,
}

/// Makes `<dir>/.backset-<bench>-<uuid>` (creating `dir` if needed), bulk-loads `config`'s database in it per `spec`
/// and opens it.
pub(super) fn bulk_loaded(dir: &Path, bench: &str, config: Config, spec: &BulkSpec) -> Result<Loaded> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))?;
    let scratch = Scratch(dir.join(format!(".backset-{bench}-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;
    let db_dir = scratch.0.join("database");
    let report = bulk_load(&db_dir, &config, spec).context("load the database")?;
    let db = Arc::new(Database::open(&db_dir, config).context("open the database")?);
    let manager = HotCopyManager::new(db.hot_copy_archives(), scratch.0.join("admin"))?;
    Ok(Loaded { db, manager, report, set: scratch.0.join("set"), database: db_dir, _scratch: scratch })
}
