//! The backup set's `state` file: who the set belongs to and which elements it holds.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::layout::ElementName;
use crate::limits::{MAX_ELEMENTS, MAX_ELEMENT_SEQUENCE, MAX_NAME_BYTES, MAX_STORAGE_GROUPS};
use crate::meta::{bounded_string, bounded_vec, check_len, check_name, Metadata, MetadataKind};

/// A closed range of transaction ids `[first, last]`. For a full or incremental element `first` is the recovery
/// start R pinned at its begin and `last` its end point E; for a journal element it is the first and last
/// transaction id its records cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRange {
    /// First transaction id (R).
    pub first: u64,
    /// Last transaction id (E).
    pub last: u64,
}

impl TxnRange {
    /// Fails unless `first <= last`.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.first > self.last {
            Err(format!("{what} has transaction range [{}, {}] with first > last", self.first, self.last))
        } else {
            Ok(())
        }
    }

    /// Whether `txn` lies in the range.
    pub fn contains(&self, txn: u64) -> bool {
        (self.first..=self.last).contains(&txn)
    }
}

/// The type of a backup-set element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ElementKind {
    /// Every atom, and the journal written during the copy. Directory `full`, sequence 0.
    Full,
    /// Atoms changed since the previous full or incremental, and the journal written during the copy. `N.inc`.
    Incremental,
    /// Journal records since the previous journal element. `N.jnl`.
    Journal,
}

impl ElementKind {
    /// The NuoDB name of the type (`full`, `incremental`, `journal`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
            Self::Journal => "journal",
        }
    }
}

/// Where an element is in its life. Failed or cancelled hot copies are removed from the state, never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ElementStatus {
    /// Being built under `tmp/`; readers ignore it. A state left with one by a crash is cleaned by the next hot copy.
    InProgress,
    /// In place under its directory name, durable, and listed in the chain.
    Completed,
}

/// One element of a backup set as the state lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementEntry {
    /// Type.
    pub kind: ElementKind,
    /// `N` in `N.inc` / `N.jnl`; 0 for the full.
    pub sequence: u32,
    /// Unique id of the element.
    pub element_id: Uuid,
    /// Life-cycle status.
    pub status: ElementStatus,
    /// Transaction range [R, E].
    pub txn_range: TxnRange,
    /// When the hot copy began, microseconds since the Unix epoch (UTC).
    pub begin_micros: u64,
    /// When it completed, microseconds since the Unix epoch; 0 while in progress.
    pub end_micros: u64,
}

impl ElementEntry {
    /// The element's directory name (`full`, `3.inc`, `2.jnl`).
    pub fn name(&self) -> ElementName {
        match self.kind {
            ElementKind::Full => ElementName::Full,
            ElementKind::Incremental => ElementName::Incremental(self.sequence),
            ElementKind::Journal => ElementName::Journal(self.sequence),
        }
    }
}

/// A storage group the set's archive serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageGroup {
    /// Storage group id.
    pub id: u32,
    /// Storage group name.
    #[serde(deserialize_with = "sg_name")]
    pub name: String,
}

/// The `state` file at the top of a backup set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Unique id of this backup set.
    pub set_id: Uuid,
    /// Name of the database the set belongs to.
    #[serde(deserialize_with = "db_name")]
    pub database_name: String,
    /// Unique id of that database (a restore into another database is refused).
    pub database_id: Uuid,
    /// Archive id of the archive hot-copied into this set.
    pub archive_id: u64,
    /// Storage groups that archive serves (empty without storage groups).
    #[serde(deserialize_with = "storage_groups")]
    pub storage_groups: Vec<StorageGroup>,
    /// Elements in the order they were started.
    #[serde(deserialize_with = "elements")]
    pub elements: Vec<ElementEntry>,
}

fn sg_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bounded_string(d, MAX_NAME_BYTES, "storage group name")
}
fn db_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bounded_string(d, MAX_NAME_BYTES, "database name")
}
fn storage_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StorageGroup>, D::Error> {
    bounded_vec(d, MAX_STORAGE_GROUPS, "storage groups")
}
fn elements<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ElementEntry>, D::Error> {
    bounded_vec(d, MAX_ELEMENTS, "elements")
}

/// Checks the sequence number rules shared by the state and element info: the full has 0, the others
/// 1..=`MAX_ELEMENT_SEQUENCE`.
pub(crate) fn check_sequence(kind: ElementKind, sequence: u32, what: &str) -> Result<(), String> {
    let ok = match kind {
        ElementKind::Full => sequence == 0,
        ElementKind::Incremental | ElementKind::Journal => (1..=MAX_ELEMENT_SEQUENCE).contains(&sequence),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: a {} element cannot have sequence number {sequence} (full: 0; others: 1..={MAX_ELEMENT_SEQUENCE})",
            kind.name()
        ))
    }
}

impl Metadata for State {
    const KIND: MetadataKind = MetadataKind::State;

    fn validate(&self) -> Result<(), String> {
        check_name(&self.database_name, "database name")?;
        check_len(self.storage_groups.len(), MAX_STORAGE_GROUPS, "storage groups")?;
        check_len(self.elements.len(), MAX_ELEMENTS, "elements")?;
        for (i, sg) in self.storage_groups.iter().enumerate() {
            check_name(&sg.name, "storage group name")?;
            if let Some(prev) = i.checked_sub(1).map(|p| &self.storage_groups[p]) {
                if prev.id >= sg.id {
                    return Err(format!(
                        "storage group ids must be strictly increasing, {} follows {}",
                        sg.id, prev.id
                    ));
                }
            }
        }
        let mut last_seq = [None::<u32>; 3];
        let mut ids = std::collections::HashSet::with_capacity(self.elements.len());
        for (i, e) in self.elements.iter().enumerate() {
            let what = format!("element {} ({})", i, e.name());
            check_sequence(e.kind, e.sequence, &what)?;
            e.txn_range.check(&what)?;
            if e.kind == ElementKind::Full && i != 0 {
                return Err(format!("{what}: the full element must be the first element"));
            }
            let slot = &mut last_seq[e.kind as usize];
            if let Some(prev) = *slot {
                if prev >= e.sequence {
                    return Err(format!("{what}: sequence numbers must increase, {} follows {prev}", e.sequence));
                }
            }
            *slot = Some(e.sequence);
            if e.status == ElementStatus::Completed && e.end_micros < e.begin_micros {
                return Err(format!("{what}: ends ({}) before it begins ({})", e.end_micros, e.begin_micros));
            }
            if !ids.insert(e.element_id) {
                return Err(format!("{what}: element id {} appears twice", e.element_id));
            }
        }
        Ok(())
    }
}
