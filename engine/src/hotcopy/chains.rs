//! Which backup set continues each archive's journal chain.
//!
//! An archive that retains its journal for journal hot copies keeps one mark: everything above the last record a
//! journal hot copy copied. Journal hot copies therefore continue one chain per archive: that of the newest backup
//! set, the one whose full hot copy completed last. A full hot copy, when it commits (while its journal pin still
//! holds the journal from its start), lowers the archive's mark to its start
//! ([`Archive::journal_retain_from`](crate::Archive::journal_retain_from)) and makes its set the chain's. A journal
//! hot copy into an older set is refused: its records may be gone, and copying them would raise the mark past what
//! the newest set still needs. The owner of each chain is kept in `<data dir>/journal-chains.json`, so a restart
//! does not forget it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use backset_format::fsio::write_file_atomic;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::HotCopyError;

/// File name of the chain owners in the manager's data directory.
pub const CHAINS_FILE: &str = "journal-chains.json";

/// The set that continues an archive's journal chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainOwner {
    /// The set's id (its `state`'s `set_id`).
    pub set_id: Uuid,
    /// Where the set was when its full completed (for messages).
    pub dir: PathBuf,
}

/// The chain owner of each archive, persisted in the data directory.
#[derive(Debug)]
pub(crate) struct JournalChains {
    dir: PathBuf,
    owners: Mutex<BTreeMap<u64, ChainOwner>>,
}

impl JournalChains {
    /// Reads `<data_dir>/journal-chains.json`; a missing file means no chain has an owner yet.
    pub fn load(data_dir: &Path) -> Result<Self, HotCopyError> {
        let path = data_dir.join(CHAINS_FILE);
        let owners = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HotCopyError::Persist {
                path: path.clone(),
                reason: format!("cannot read the journal chain owners ({e}); move the file away to start afresh"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(HotCopyError::Io { op: "read", path, source }),
        };
        Ok(Self { dir: data_dir.to_path_buf(), owners: Mutex::new(owners) })
    }

    /// The set that continues `archive_id`'s journal chain, if any full hot copy completed since the file began.
    pub fn owner(&self, archive_id: u64) -> Option<ChainOwner> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).get(&archive_id).cloned()
    }

    /// Whether a journal hot copy of `archive_id` into the set `set_id` continues the chain (no owner yet counts).
    pub fn continues(&self, archive_id: u64, set_id: Uuid) -> bool {
        self.owner(archive_id).is_none_or(|o| o.set_id == set_id)
    }

    /// Makes `owner` the set that continues `archive_id`'s chain, durably.
    pub fn set_owner(&self, archive_id: u64, owner: ChainOwner) -> Result<(), HotCopyError> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let before = owners.insert(archive_id, owner);
        let path = self.dir.join(CHAINS_FILE);
        let written = serde_json::to_vec_pretty(&*owners)
            .map_err(|e| HotCopyError::Persist { path: path.clone(), reason: format!("encode: {e}") })
            .and_then(|bytes| {
                write_file_atomic(&self.dir, CHAINS_FILE, &bytes)
                    .map_err(|e| HotCopyError::Persist { path: path.clone(), reason: e.to_string() })
            });
        if written.is_err() {
            match before {
                Some(b) => owners.insert(archive_id, b),
                None => owners.remove(&archive_id),
            };
        }
        written
    }

    /// Refuses a journal hot copy of `archive_id` into the set `set_id` at `dir` when another set owns the chain.
    pub fn check_journal(&self, archive_id: u64, set_id: Uuid, dir: &Path) -> Result<(), HotCopyError> {
        match self.owner(archive_id) {
            Some(o) if o.set_id != set_id => {
                Err(HotCopyError::JournalChainMoved { dir: dir.to_path_buf(), archive_id, newest: o.dir })
            }
            _ => Ok(()),
        }
    }
}
