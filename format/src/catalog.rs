//! An element's `control/catalog`: the LSN of every atom as of the element's end.
//!
//! The catalog of a full or incremental element is cumulative: it lists every atom of the archive at that point
//! (present, with LSN and hash) and the atoms dropped since the previous full or incremental. An incremental hot copy
//! compares the archive against the newest catalog only, so it needs `control/` and never `data/`.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::limits::MAX_CATALOG_ENTRIES;
use crate::manifest::Hash;
use crate::meta::{bounded_vec, check_len, Metadata, MetadataKind};

/// What the catalog knows of one atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AtomState {
    /// The atom exists; its file (header and body) hashes to `hash`.
    Present {
        /// BLAKE3 of the atom file as copied.
        hash: Hash,
    },
    /// The atom was dropped at `lsn`; a restore removes it.
    Dropped,
}

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Atom id.
    pub atom_id: u64,
    /// The last transaction id applied to the atom as copied (or the drop's).
    pub lsn: u64,
    /// Present or dropped.
    pub state: AtomState,
}

/// The atom catalog of one element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The element this catalog belongs to.
    pub element_id: Uuid,
    /// Entries sorted by strictly increasing atom id.
    #[serde(deserialize_with = "entries")]
    pub atoms: Vec<CatalogEntry>,
}

fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CatalogEntry>, D::Error> {
    bounded_vec(d, MAX_CATALOG_ENTRIES, "catalog entries")
}

impl Catalog {
    /// The entry of `atom_id`, by binary search.
    pub fn get(&self, atom_id: u64) -> Option<&CatalogEntry> {
        self.atoms.binary_search_by_key(&atom_id, |e| e.atom_id).ok().map(|i| &self.atoms[i])
    }
}

impl Metadata for Catalog {
    const KIND: MetadataKind = MetadataKind::Catalog;

    fn validate(&self) -> Result<(), String> {
        check_len(self.atoms.len(), MAX_CATALOG_ENTRIES, "catalog entries")?;
        for pair in self.atoms.windows(2) {
            if pair[0].atom_id >= pair[1].atom_id {
                return Err(format!(
                    "atom ids must be strictly increasing: {} follows {}",
                    pair[1].atom_id, pair[0].atom_id
                ));
            }
        }
        Ok(())
    }
}
