//! The set's verification record (`verified`, FORMAT.md "Verification record"): which elements check verified,
//! when, and with which result. Only check reads and writes it, through the storage seam, so it works on any
//! [`SetStorage`]; a hot copy, a restore and every other reader ignore it.
//!
//! Two checks of one set may run at once. The record is never edited in place: a check reads it, adds its own
//! entries to what it reads (keeping the newer entry of each element) and replaces the whole file atomically
//! ([`SetStorage::write_metadata`]: a crash or a second writer leaves one whole record, never a mix). When two checks
//! finish together, the entries of the one that writes first may be lost; that only makes a later `check --new`
//! verify those elements again, never skip one.

use std::path::Path;

use backset_format::layout::VERIFICATION_FILE;
use backset_format::meta;
use backset_format::{ReadError, State, Verification, Verified};

use super::read::read_meta;
use super::storage::SetStorage;
use super::SetError;

/// Why the verification record cannot be used: it names the file and says what check does instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record cannot be read or does not decode (damaged, hostile, unreadable).
    #[error(
        "the verification record {} is refused: {source}; nothing else in the set depends on it, the check verifies \
         every element instead and then writes a new record",
        .source.path().display()
    )]
    Unreadable {
        /// What is wrong, with the file's path.
        source: ReadError,
    },
    /// The record belongs to another set.
    #[error(
        "the verification record {path} is refused: it belongs to backup set {found}, this set is {expected} (copied \
         from another set?); the check verifies every element instead and then writes a new record",
        path = .path.display()
    )]
    OtherSet {
        /// The record.
        path: std::path::PathBuf,
        /// The set id it names.
        found: uuid::Uuid,
        /// The state's set id.
        expected: uuid::Uuid,
    },
}

/// Reads the set's verification record: `Ok(None)` when there is none, an error naming the file when it cannot be
/// used (damaged, not a regular file, too large, of another set).
pub fn read_verified(storage: &dyn SetStorage, state: &State) -> Result<Option<Verification>, RecordError> {
    let rel = Path::new(VERIFICATION_FILE);
    match storage.kind(rel) {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => {}
        Err(source) => {
            let source = ReadError::Io { op: "stat", path: storage.show(rel), source };
            return Err(RecordError::Unreadable { source });
        }
    }
    let record: Verification = read_meta(storage, rel).map_err(|source| RecordError::Unreadable { source })?;
    if record.set_id != state.set_id {
        return Err(RecordError::OtherSet { path: storage.show(rel), found: record.set_id, expected: state.set_id });
    }
    Ok(Some(record))
}

/// Adds `entries` to the set's record (read again just before, so that a check that finished meanwhile keeps its
/// entries), keeps only the elements the state lists, and writes it atomically. A record that cannot be used is
/// replaced.
pub fn record_verified(storage: &dyn SetStorage, state: &State, entries: &[Verified]) -> Result<(), SetError> {
    let mut record = read_verified(storage, state)
        .ok()
        .flatten()
        .unwrap_or_else(|| Verification { set_id: state.set_id, elements: Vec::new() });
    for e in entries {
        record.record(*e);
    }
    record.elements.retain(|v| state.elements.iter().any(|e| e.element_id == v.element_id));
    let path = storage.show(Path::new(VERIFICATION_FILE));
    let bytes = meta::encode(&record).map_err(|source| backset_format::WriteError::Metadata { path, source })?;
    storage.write_metadata(Path::new(""), VERIFICATION_FILE, &bytes)?;
    Ok(())
}
