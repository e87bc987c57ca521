//! Names of files and directories in an archive and in a backup set.
//!
//! Names inside a backup set are derived from ids by the functions here; no name is ever read from a file and used
//! as a path, so a hostile backup set cannot point a reader or a restore outside its directory.

use std::fmt;
use std::str::FromStr;

use crate::error::NameError;
use crate::limits::MAX_ELEMENT_SEQUENCE;
use crate::manifest::FileKind;

/// The backup set's state file, at its top.
pub const STATE_FILE: &str = "state";
/// The backup set's verification record, at its top: what `check` verified, when (only check reads it).
pub const VERIFICATION_FILE: &str = "verified";
/// Directory name of the full element.
pub const ELEMENT_NAME_FULL: &str = "full";
/// Directory of elements under construction, at the top of a backup set.
pub const TMP_DIR: &str = "tmp";
/// An element's metadata directory: everything later hot copies need.
pub const CONTROL_DIR: &str = "control";
/// An element's data directory: may be moved away between hot copies, must be back for a restore.
pub const DATA_DIR: &str = "data";
/// `control/manifest`.
pub const MANIFEST_FILE: &str = "manifest";
/// `control/catalog`.
pub const CATALOG_FILE: &str = "catalog";
/// `control/element`.
pub const ELEMENT_INFO_FILE: &str = "element";
/// Atom files, in an archive and in an element's `data/`.
pub const ATOMS_DIR: &str = "atoms";
/// Journal segments, in an archive and in an element's `data/`.
pub const JOURNAL_DIR: &str = "journal";
/// In an archive directory: the marker of a restore that has not finished. A restore creates it (durably) before it
/// writes anything else and removes it last, once everything else is durable; every reader refuses a directory that
/// holds it.
pub const RESTORE_MARKER_FILE: &str = "restore.incomplete";

/// An element directory name: `full`, `N.inc` or `N.jnl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementName {
    /// `full`.
    Full,
    /// `N.inc`.
    Incremental(u32),
    /// `N.jnl`.
    Journal(u32),
}

impl fmt::Display for ElementName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str(ELEMENT_NAME_FULL),
            Self::Incremental(n) => write!(f, "{n}.inc"),
            Self::Journal(n) => write!(f, "{n}.jnl"),
        }
    }
}

impl FromStr for ElementName {
    type Err = NameError;

    /// Strict: `N` is decimal, 1..=`MAX_ELEMENT_SEQUENCE`, without sign or leading zero, so each element has
    /// exactly one name.
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = || NameError { name: s.to_string(), max: MAX_ELEMENT_SEQUENCE };
        if s == ELEMENT_NAME_FULL {
            return Ok(Self::Full);
        }
        let (num, kind) = s.split_once('.').ok_or_else(err)?;
        let digits_ok = !num.is_empty() && num.len() <= 8 && num.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || num.starts_with('0') {
            return Err(err());
        }
        let n: u32 = num.parse().map_err(|_| err())?;
        if n > MAX_ELEMENT_SEQUENCE {
            return Err(err());
        }
        match kind {
            "inc" => Ok(Self::Incremental(n)),
            "jnl" => Ok(Self::Journal(n)),
            _ => Err(err()),
        }
    }
}

/// File name of an atom: its id as 16 lower-case hex digits.
pub fn atom_file_name(atom_id: u64) -> String {
    format!("{atom_id:016x}")
}

/// File name of a journal segment: its number as 16 lower-case hex digits.
pub fn segment_file_name(segment: u64) -> String {
    format!("{segment:016x}")
}

/// Path of a data file relative to an element's `data/` (or to an archive): `atoms/<id>` or `journal/<segment>`.
pub fn data_file_path(kind: FileKind, id: u64) -> String {
    match kind {
        FileKind::Atom => format!("{ATOMS_DIR}/{}", atom_file_name(id)),
        FileKind::Journal => format!("{JOURNAL_DIR}/{}", segment_file_name(id)),
    }
}

/// Parses a 16-hex-digit file name back to its id (strict: exactly 16 lower-case hex digits).
pub fn parse_id_name(name: &str) -> Option<u64> {
    if name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(name, 16).ok()
    } else {
        None
    }
}
