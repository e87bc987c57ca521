//! What the benches share: the regular files of a source tree, and a scratch directory removed however a bench ends.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
