//! What a path given to an offline tool holds, so that a tool given the wrong kind of thing says what it found and
//! which command reads it (a backup set given to `archive check`, an archive given to `check` or `restore`, an empty
//! directory, a file) instead of reporting missing metadata.

use std::fs;
use std::path::Path;

use backset_format::layout::{ATOMS_DIR, JOURNAL_DIR};

/// How many entries of an unknown directory a message names.
const NAMED_ENTRIES: usize = 5;

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing (or it cannot be examined: the reason).
    Absent(String),
    /// Something that is not a directory (a file, a device, ...).
    NotADirectory,
    /// An empty directory.
    Empty,
    /// A backup set: a directory with a `state` file, or with element directories or `tmp/` (a set whose state is
    /// lost).
    BackupSet,
    /// An archive: a directory with `atoms/` or `journal/` and no `state` file.
    Archive,
    /// Another directory: its first few entries, sorted.
    Other(String),
}

/// Looks at `path` (following a symbolic link: the operator's own path may be one).
pub fn found(path: &Path) -> Found {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Absent("it does not exist".into()),
        Err(e) => return Found::Absent(format!("it cannot be examined: {e}")),
        Ok(md) if !md.is_dir() => return Found::NotADirectory,
        Ok(_) => {}
    }
    let mut names: Vec<String> = match fs::read_dir(path) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => return Found::Absent(format!("it cannot be listed: {e}")),
    };
    // A set whose `state` is lost still holds its elements (or `tmp/`): a damaged set, not another kind of thing.
    if names.iter().any(|n| crate::set::layout::marks_a_set(n)) {
        return Found::BackupSet;
    }
    if [ATOMS_DIR, JOURNAL_DIR].iter().any(|d| path.join(d).is_dir()) {
        return Found::Archive;
    }
    if names.is_empty() {
        return Found::Empty;
    }
    names.sort();
    let more = names.len().saturating_sub(NAMED_ENTRIES);
    names.truncate(NAMED_ENTRIES);
    Found::Other(format!("{}{}", names.join(", "), if more > 0 { format!(" and {more} more") } else { String::new() }))
}

/// Why `dir`, whose journal is in `journal_dir` (`dir/journal`, or a simple hot copy's separate `copyJournalDir`),
/// is not a whole archive, if it is not: an archive has both `atoms/` and its journal directory. A reader never takes
/// a directory that lacks one for an empty part (an empty database, or the state of the atom files alone).
pub fn missing_archive_part(dir: &Path, journal_dir: &Path) -> Option<String> {
    let atoms = dir.join(ATOMS_DIR).is_dir();
    let journal = journal_dir.is_dir();
    let own = journal_dir == dir.join(JOURNAL_DIR);
    match (atoms, journal) {
        (true, true) => None,
        (false, false) if own => Some(found(dir).not_an_archive(dir)),
        _ if !dir.is_dir() => Some(found(dir).not_an_archive(dir)),
        (true, false) if own => Some(
            "it has atoms/ but no journal/ (an archive has both; a simple hot copy made with a separate \
             copyJournalDir keeps its journal there: give that directory with --journal-dir DIR)"
                .into(),
        ),
        (true, false) => Some(format!(
            "its journal directory {} is missing or not a directory; give the copy's copyJournalDir",
            journal_dir.display()
        )),
        (false, _) => Some(format!(
            "it has {} but no atoms/ (an archive has both: its atom files are missing; restore it again, or copy the \
             whole archive)",
            if own { "journal/".to_string() } else { format!("the journal directory {}", journal_dir.display()) }
        )),
    }
}

impl Found {
    /// Why a path that holds this is not a backup set, and what to do (`path` as given, for the command to suggest).
    pub fn not_a_set(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            Self::Absent(why) => format!("{why}; give the directory of a backup set"),
            Self::NotADirectory => "it is a file, not a directory; give the directory of a backup set".into(),
            Self::Empty => {
                "it is an empty directory; give the directory of a backup set (a full hot copy makes one)".into()
            }
            Self::Archive => {
                format!("it is an archive directory (atoms/, journal/); use `backset archive check {p}` (or `archive info`, `archive dump`) to read it")
            }
            Self::Other(names) => {
                format!("it has no `state` file (it holds {names}); give the directory of a backup set")
            }
            Self::BackupSet => "it is a backup set".into(),
        }
    }

    /// Why a path that holds this is not an archive, and what to do.
    pub fn not_an_archive(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            Self::Absent(why) => format!("{why}; give an archive directory"),
            Self::NotADirectory => "it is a file, not a directory; give an archive directory".into(),
            Self::Empty => {
                "it is an empty directory (an archive has atoms/ and journal/); give an archive directory".into()
            }
            Self::BackupSet => format!("this is a backup set: use `backset check {p}` (or `backset restore`)"),
            Self::Other(names) => {
                format!("it has neither atoms/ nor journal/ (it holds {names}); give an archive directory")
            }
            Self::Archive => "it is an archive".into(),
        }
    }
}
