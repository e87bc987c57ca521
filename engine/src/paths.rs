//! Destination directories: symbolic links resolved as far as a path exists, and the parent rule.
//!
//! **The parent rule**: a backup set directory, a simple hot copy's archive or journal directory and a restore's
//! destination are created as their last component only; their parent must exist. NuoDB does the same (`Failed to
//! create backup set <dir>: No such file or directory`): on a host whose backup volume is not mounted, creating the
//! missing parents would fill the root file system instead of failing.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A destination directory could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateDirError {
    /// Its parent does not exist (the parent rule).
    #[error(
        "Failed to create {what} {}: No such file or directory (its parent directory {} does not exist; Backset \
         creates only the last component: create the parent, or mount the volume it belongs on, first)",
        .dir.display(),
        .parent.display()
    )]
    MissingParent {
        /// What the directory is for (`backup set`, `restore directory`, ...).
        what: &'static str,
        /// The directory, as given.
        dir: PathBuf,
        /// Its missing parent.
        parent: PathBuf,
    },
    /// The operating system refused to create it.
    #[error("Failed to create {what} {}: {source}", .dir.display())]
    Io {
        /// What the directory is for.
        what: &'static str,
        /// The directory, as given.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks that `dir` exists or can be created as its last component: its parent exists (followed through symbolic
/// links) as a directory. `what` names it in the error (`backup set`).
pub fn check_parent(dir: &Path, what: &'static str) -> Result<(), CreateDirError> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    match std::fs::metadata(parent) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(CreateDirError::Io {
            what,
            dir: dir.to_path_buf(),
            source: std::io::Error::new(ErrorKind::NotADirectory, format!("{} is not a directory", parent.display())),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(CreateDirError::MissingParent { what, dir: dir.to_path_buf(), parent: parent.to_path_buf() })
        }
        Err(source) => Err(CreateDirError::Io { what, dir: dir.to_path_buf(), source }),
    }
}

/// Creates the directory `path`, its last component only (`mkdir`, never its parents). Errors name `shown` (the
/// directory the operator gave, when `path` is a working name for it such as `<dir>.incomplete`, in the same
/// parent) and `what` (`backup set`); a missing parent is [`CreateDirError::MissingParent`].
pub fn create_dir(path: &Path, shown: &Path, what: &'static str) -> Result<(), CreateDirError> {
    std::fs::create_dir(path).map_err(|source| match (source.kind(), path.parent()) {
        (ErrorKind::NotFound, Some(parent)) if !parent.as_os_str().is_empty() => {
            CreateDirError::MissingParent { what, dir: shown.to_path_buf(), parent: parent.to_path_buf() }
        }
        _ => CreateDirError::Io { what, dir: shown.to_path_buf(), source },
    })
}

/// `path` with its longest existing ancestor canonicalized (symbolic links and `..` resolved) and the rest, which
/// does not exist yet, appended as given.
pub fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        // A relative path's ancestors end with "": the working directory.
        let probe = if cur.as_os_str().is_empty() { Path::new(".") } else { cur };
        if let Ok(real) = std::fs::canonicalize(probe) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that does not exist (nothing is created under it: every call here fails before writing).
    const ABSENT: &str = "/nonexistent-backset-paths-test";

    #[test]
    fn a_missing_parent_is_named_and_never_created() {
        let dir = Path::new(ABSENT).join("set1");
        let msg = check_parent(&dir, "backup set").unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("Failed to create backup set {}: No such file or directory", dir.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("its parent directory {ABSENT} does not exist")), "{msg}");
        let e = create_dir(&dir, &dir, "backup set").unwrap_err();
        assert!(matches!(&e, CreateDirError::MissingParent { parent, .. } if parent == Path::new(ABSENT)), "{e}");
        // A working name is reported as the directory the operator gave.
        let shown = Path::new(ABSENT).join("copy");
        let e = create_dir(&Path::new(ABSENT).join("copy.incomplete"), &shown, "archive copy").unwrap_err();
        assert!(e.to_string().starts_with(&format!("Failed to create archive copy {}:", shown.display())), "{e}");
        assert!(!Path::new(ABSENT).exists());
        // An existing directory, and one whose parent exists, pass.
        check_parent(Path::new("/"), "backup set").unwrap();
        check_parent(Path::new(ABSENT), "backup set").unwrap();
    }
}
