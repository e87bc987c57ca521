//! Which backup set continues each archive's journal chain.
//!
//! An archive that retains its journal for journal hot copies keeps one mark: everything above the last record a
//! journal hot copy copied. Journal hot copies therefore continue one chain per archive: that of the newest backup
//! set. As NuoDB has it, once a full hot copy has commenced, journal hot copies go only into its new set, also while
//! the full still runs:
//! - When a full hot copy has initialised its set (its journal pin holds the archive's journal from its start R on),
//!   that set becomes the chain's *pending* owner: journal hot copies into it are accepted (their chain starts at R),
//!   journal hot copies into any other set are refused. While a full is pending no journal hot copy moves the mark:
//!   the pin keeps what the new set needs, and the mark keeps what the previous owner needs should the full fail.
//! - When the full commits, its set becomes the owner (durably) and the mark is lowered to R
//!   ([`Archive::journal_retain_from`](crate::Archive::journal_retain_from)); the next journal hot copy into it moves
//!   the mark on. When it fails or is cancelled, the pending owner is dropped and the previous owner continues the
//!   chain, from where its last journal element ended (the full also removes the journal elements its set took).
//!
//! A journal hot copy into an older set is refused: its records may be gone, and copying them would raise the mark
//! past what the newest set still needs. The owner of each chain is kept in `<data dir>/journal-chains.json`, so a
//! restart does not forget it (a pending owner dies with its full, and with the process).

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

/// The chain owner of each archive, persisted in the data directory, and the pending owner of each archive whose
/// new full hot copy runs (in memory).
#[derive(Debug)]
pub(crate) struct JournalChains {
    dir: PathBuf,
    owners: Mutex<BTreeMap<u64, ChainOwner>>,
    pending: Mutex<BTreeMap<u64, ChainOwner>>,
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
        Ok(Self { dir: data_dir.to_path_buf(), owners: Mutex::new(owners), pending: Mutex::new(BTreeMap::new()) })
    }

    /// The set of a running full hot copy of `archive_id` that will continue the chain, if any.
    fn pending(&self, archive_id: u64) -> Option<ChainOwner> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).get(&archive_id).cloned()
    }

    /// A full hot copy of `archive_id` has initialised its set `owner`: journal hot copies now go there.
    pub fn begin_full(&self, archive_id: u64, owner: ChainOwner) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(archive_id, owner);
    }

    /// The full hot copy of `archive_id` into the set `set_id` failed or was cancelled: the previous owner goes on.
    pub fn abandon_full(&self, archive_id: u64, set_id: Uuid) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(&archive_id).is_some_and(|p| p.set_id == set_id) {
            pending.remove(&archive_id);
        }
    }

    /// The set that continues `archive_id`'s journal chain, if any full hot copy completed since the file began.
    pub fn owner(&self, archive_id: u64) -> Option<ChainOwner> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).get(&archive_id).cloned()
    }

    /// Whether a journal hot copy of `archive_id` into the set `set_id` that just completed moves the archive's mark:
    /// when the set continues the chain (no owner yet counts) and no new full is pending.
    pub fn continues(&self, archive_id: u64, set_id: Uuid) -> bool {
        self.pending(archive_id).is_none() && self.owner(archive_id).is_none_or(|o| o.set_id == set_id)
    }

    /// Makes `owner` (a full hot copy's set, as it commits) the set that continues `archive_id`'s chain, durably; it
    /// is no longer pending.
    pub fn set_owner(&self, archive_id: u64, owner: ChainOwner) -> Result<(), HotCopyError> {
        self.abandon_full(archive_id, owner.set_id);
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

    /// Refuses a journal hot copy of `archive_id` into the set `set_id` at `dir` when another set continues the
    /// chain: a running full's set (pending) or else the owner.
    pub fn check_journal(&self, archive_id: u64, set_id: Uuid, dir: &Path) -> Result<(), HotCopyError> {
        let moved =
            |newest: PathBuf| Err(HotCopyError::JournalChainMoved { dir: dir.to_path_buf(), archive_id, newest });
        match (self.pending(archive_id), self.owner(archive_id)) {
            (Some(p), _) if p.set_id != set_id => moved(p.dir),
            (Some(_), _) => Ok(()),
            (None, Some(o)) if o.set_id != set_id => moved(o.dir),
            (None, _) => Ok(()),
        }
    }
}
