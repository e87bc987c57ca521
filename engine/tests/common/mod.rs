//! Helpers shared by the engine's integration tests: the reference store's test helpers (the engine's tests
//! hot-copy, restore and check the store's archives), used from the one file that holds them, and the engine's own.
#![allow(dead_code, unused_imports)]

#[path = "../../../refstore/tests/support/mod.rs"]
mod store;

use std::path::Path;

pub use store::*;

/// Everything under `root` except `skip`: path -> (type, length, BLAKE3 of the content, link target). Never follows
/// a link.
pub fn scan(root: &Path, skip: &Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p == skip {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {} {}", md.len(), blake3::hash(&std::fs::read(&p).unwrap()).to_hex())
            };
            out.insert(p, what);
        }
    }
    out
}
