//! The backup set's verification record (`<backup-set>/verified`): which elements `check` verified, when, and with
//! which result, so that a later check can verify only what is new. Nothing but check reads it: a hot copy, a
//! restore and a check without `--new` or `--since` never depend on it.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::limits::MAX_ELEMENTS;
use crate::meta::{bounded_vec, check_len, Metadata, MetadataKind};

/// What a check found in one element's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerifyResult {
    /// Every data file matched its manifest and its own checks: no defect in the element.
    Passed,
    /// The check found this many defects in the element (at least 1).
    Failed {
        /// Defects found in the element.
        defects: u64,
    },
}

/// The newest verification of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The element (as the state lists it).
    pub element_id: Uuid,
    /// When the check that verified it started, microseconds since the Unix epoch (UTC).
    pub verified_micros: u64,
    /// Bytes of the element's data that check read.
    pub data_bytes: u64,
    /// What it found.
    pub result: VerifyResult,
}

/// The verification record: the newest verification of each element a check verified, at most one entry per
/// element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The set it belongs to (the state's `set_id`); a record of another set is refused.
    pub set_id: Uuid,
    /// One entry per element, element ids unique.
    #[serde(deserialize_with = "entries")]
    pub elements: Vec<Verified>,
}

fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Verified>, D::Error> {
    bounded_vec(d, MAX_ELEMENTS, "verified elements")
}

impl Verification {
    /// The entry of `element_id`, if any.
    pub fn get(&self, element_id: Uuid) -> Option<&Verified> {
        self.elements.iter().find(|v| v.element_id == element_id)
    }

    /// Adds `entry`, replacing an older entry of the same element (an entry that is not older is kept).
    pub fn record(&mut self, entry: Verified) {
        match self.elements.iter_mut().find(|v| v.element_id == entry.element_id) {
            Some(old) if old.verified_micros <= entry.verified_micros => *old = entry,
            Some(_) => {}
            None => self.elements.push(entry),
        }
    }
}

impl Metadata for Verification {
    const KIND: MetadataKind = MetadataKind::Verification;

    fn validate(&self) -> Result<(), String> {
        check_len(self.elements.len(), MAX_ELEMENTS, "verified elements")?;
        let mut ids = std::collections::HashSet::with_capacity(self.elements.len());
        for (i, v) in self.elements.iter().enumerate() {
            if !ids.insert(v.element_id) {
                return Err(format!("entry {i}: element id {} appears twice", v.element_id));
            }
            if v.result == (VerifyResult::Failed { defects: 0 }) {
                return Err(format!("entry {i}: element {} failed with 0 defects", v.element_id));
            }
        }
        Ok(())
    }
}
