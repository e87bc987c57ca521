//! An element's `control/element`: how the element was made and where it sits in the chain.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::limits::MAX_PARTICIPANTS;
use crate::meta::{bounded_vec, check_len, Metadata, MetadataKind};
use crate::state::{check_sequence, ElementKind, TxnRange};

/// One archive that took part in the (possibly coordinated) hot copy that made the element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Start id of the SM process.
    pub start_id: u64,
    /// Archive id of its archive.
    pub archive_id: u64,
}

/// Element info, stored in `control/element` of every element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementInfo {
    /// The element's id (the one the state lists).
    pub element_id: Uuid,
    /// Type.
    pub kind: ElementKind,
    /// Sequence number (0 for the full).
    pub sequence: u32,
    /// Id of the hot copy job that made it.
    pub hot_copy_id: Uuid,
    /// Start id of the coordinating SM.
    pub coordinator_start_id: u64,
    /// Every archive of the hot copy, sorted by archive id (the coordinator among them).
    #[serde(deserialize_with = "participants")]
    pub participants: Vec<Participant>,
    /// Transaction range [R, E].
    pub txn_range: TxnRange,
    /// Begin, microseconds since the Unix epoch.
    pub begin_micros: u64,
    /// End, microseconds since the Unix epoch.
    pub end_micros: u64,
    /// The element this one builds on: for an incremental the previous full or incremental, for a journal the
    /// previous journal element (or the full); `None` for the full.
    pub parent: Option<Uuid>,
}

fn participants<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Participant>, D::Error> {
    bounded_vec(d, MAX_PARTICIPANTS, "participants")
}

impl Metadata for ElementInfo {
    const KIND: MetadataKind = MetadataKind::ElementInfo;

    fn validate(&self) -> Result<(), String> {
        let what = format!("element {}", self.element_id);
        check_sequence(self.kind, self.sequence, &what)?;
        self.txn_range.check(&what)?;
        check_len(self.participants.len(), MAX_PARTICIPANTS, "participants")?;
        if self.participants.is_empty() {
            return Err(format!("{what} lists no participant"));
        }
        for pair in self.participants.windows(2) {
            if pair[0].archive_id >= pair[1].archive_id {
                return Err(format!(
                    "{what}: participants must be sorted by strictly increasing archive id, {} follows {}",
                    pair[1].archive_id, pair[0].archive_id
                ));
            }
        }
        if !self.participants.iter().any(|p| p.start_id == self.coordinator_start_id) {
            return Err(format!(
                "{what}: coordinator start id {} is not among the participants",
                self.coordinator_start_id
            ));
        }
        if self.end_micros < self.begin_micros {
            return Err(format!("{what} ends ({}) before it begins ({})", self.end_micros, self.begin_micros));
        }
        match (self.kind, self.parent) {
            (ElementKind::Full, Some(p)) => Err(format!("{what}: a full element has no parent, found {p}")),
            (ElementKind::Incremental | ElementKind::Journal, None) => {
                Err(format!("{what}: a {} element needs a parent", self.kind.name()))
            }
            (_, Some(p)) if p == self.element_id => Err(format!("{what} names itself as parent")),
            _ => Ok(()),
        }
    }
}
