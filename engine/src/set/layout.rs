//! Which names may stand where in a backup set (FORMAT.md, "Backup set layout"), stated once for the reader, the
//! writer's clean-up, check's layout scan and [`crate::found`]:
//!
//! ```text
//! <set>/            state, verified, tmp/, element directories (full, <n>.inc, <n>.jnl), .tmp-* (an interrupted metadata write)
//!   <element>/      control/, data/
//!     control/      element, manifest, catalog, .tmp-*
//!     data/         atoms/, journal/ (files named by id, derived from the manifest, never read from a file)
//! ```

use backset_format::fsio::TMP_FILE_PREFIX;
use backset_format::layout::{
    ATOMS_DIR, CATALOG_FILE, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, JOURNAL_DIR, MANIFEST_FILE, STATE_FILE, TMP_DIR,
    VERIFICATION_FILE,
};
use backset_format::ElementName;

/// The entries an element directory holds.
pub const ELEMENT_ENTRIES: [&str; 2] = [CONTROL_DIR, DATA_DIR];
/// The files an element's `control/` holds.
pub const CONTROL_FILES: [&str; 3] = [ELEMENT_INFO_FILE, MANIFEST_FILE, CATALOG_FILE];
/// The directories an element's `data/` holds.
pub const DATA_DIRS: [&str; 2] = [ATOMS_DIR, JOURNAL_DIR];

/// What a name at the top of a set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopEntry {
    /// `state`.
    State,
    /// `verified`, the verification record (check's only).
    Verification,
    /// `tmp/`, elements under construction.
    Tmp,
    /// An element directory's name.
    Element(ElementName),
    /// The temporary of an interrupted atomic metadata write (`.tmp-*`).
    WriteLeftover,
    /// A name the format does not define.
    Foreign,
}

/// Classifies a name at the top of a set.
pub fn top_entry(name: &str) -> TopEntry {
    if name == STATE_FILE {
        TopEntry::State
    } else if name == VERIFICATION_FILE {
        TopEntry::Verification
    } else if name == TMP_DIR {
        TopEntry::Tmp
    } else if is_write_leftover(name) {
        TopEntry::WriteLeftover
    } else if let Ok(e) = name.parse::<ElementName>() {
        TopEntry::Element(e)
    } else {
        TopEntry::Foreign
    }
}

/// Whether a name marks a directory as a backup set (possibly one whose `state` is lost): `state`, `tmp/` or an
/// element directory.
pub fn marks_a_set(name: &str) -> bool {
    matches!(top_entry(name), TopEntry::State | TopEntry::Tmp | TopEntry::Element(_))
}

/// Whether a name is the temporary of an interrupted atomic metadata write, in any directory of the set.
pub fn is_write_leftover(name: &str) -> bool {
    name.starts_with(TMP_FILE_PREFIX)
}
