//! `backset set copy SRC DST`: a completed backup set copied between any two storages (a directory and an
//! `s3://` URL, either way, or two of a kind), element by element in the order the set holds them, each written
//! through the destination's own writer (`SetWriter`): its data files streamed from the source, every byte
//! hashed and compared with the source's manifest before the element is sealed, then published exactly as a hot
//! copy publishes it (a rename and the state rewritten locally, the create-only commit record on object storage).
//!
//! Resumable: the destination must be absent, empty, or the same set (same set id) as far as it goes; the elements
//! it already holds (the same element id) are not sent again. An interrupted copy leaves the destination a valid
//! set of the elements copied so far (and a staged element that the next run, or `set gc`, removes). Incremental
//! and journal elements keep their ids, sequence numbers and parents: the copy is the same set.

use std::fs;
use std::io::Write;
use std::path::Path;

use backset_format::layout::{data_file_path, DATA_DIR};
use backset_format::{ElementStatus, State};

use super::data::{hash_stream, mismatch};
use super::write::{dir_content, DirContent, SetWriter};
use super::{BackupSet, SetError};

/// What [`copy_set`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Elements copied by this run, by name.
    pub copied: Vec<String>,
    /// Elements the destination already held (not sent again).
    pub skipped: Vec<String>,
    /// Data bytes sent.
    pub bytes: u64,
    /// Data files sent.
    pub files: u64,
}

/// Copies the completed elements of the set at `src` into `dst` (see the [module docs](self)).
pub fn copy_set(src: &Path, dst: &Path) -> Result<CopyReport, SetError> {
    let source = BackupSet::open(src)?;
    let content = dir_content(dst)?;
    let existing = match content {
        DirContent::Absent => {
            crate::paths::create_dir(dst, dst, "backup set")
                .map_err(|e| SetError::Conflict { path: dst.to_path_buf(), reason: e.to_string() })?;
            None
        }
        DirContent::Empty => None,
        DirContent::NotADirectory => {
            return Err(SetError::NotASet { path: dst.to_path_buf(), reason: "it is not a directory".into() })
        }
        DirContent::Other(what) => {
            let set = BackupSet::open(dst).map_err(|e| SetError::Conflict {
                path: dst.to_path_buf(),
                reason: format!("holds {what}, which is not a copy of {} that can be continued ({e})", src.display()),
            })?;
            if set.state().set_id != source.state().set_id {
                return Err(SetError::Conflict {
                    path: dst.to_path_buf(),
                    reason: format!(
                        "holds another backup set ({}, not {}): copy into an empty directory or prefix",
                        set.state().set_id,
                        source.state().set_id
                    ),
                });
            }
            Some(set)
        }
    };
    let writer = SetWriter::new(dst)?;
    let mut report = CopyReport::default();
    let mut dest = existing;
    for (i, e) in source.elements().iter().enumerate() {
        let name = e.name().to_string();
        if dest.as_ref().is_some_and(|d| d.element_by_id(e.id()).is_some()) {
            report.skipped.push(name);
            continue;
        }
        let entry = backset_format::ElementEntry { status: ElementStatus::InProgress, ..e.entry.clone() };
        let begun = match dest.take() {
            None => {
                let state = State { elements: vec![entry], ..source.state().clone() };
                writer.init(&state)?
            }
            Some(set) => writer.begin(set, |_| Ok::<_, SetError>(entry))?,
        };
        let result = (|| {
            let data = begun.tmp.join(DATA_DIR);
            for f in &e.manifest.files {
                let file = data_file_path(f.kind, f.id);
                let target = data.join(&file);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|source| SetError::Io {
                        op: "create directory",
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                let shown = e.data_file(f);
                let (reader, _) = source.storage().open(&e.data_file_rel(f)).map_err(|err| SetError::Conflict {
                    path: shown.clone(),
                    reason: format!(
                        "element {}: cannot be read ({err}); nothing of this element was published",
                        e.name()
                    ),
                })?;
                let mut out = fs::File::create_new(&target).map_err(|source| SetError::Io {
                    op: "create",
                    path: target.clone(),
                    source,
                })?;
                let mut written: std::io::Result<()> = Ok(());
                let summary = hash_stream(
                    reader,
                    Some(&mut |chunk: &[u8]| {
                        written = out.write_all(chunk);
                        written.as_ref().map(drop).map_err(|e| std::io::Error::new(e.kind(), "write"))
                    }),
                );
                if let Err(source) = written {
                    return Err(SetError::Io { op: "write", path: target.clone(), source });
                }
                let (bytes, hash, chunks) = summary.map_err(|err| SetError::Conflict {
                    path: shown.clone(),
                    reason: format!("element {}: read failed ({err}); nothing of this element was published", e.name()),
                })?;
                if let Some(why) = mismatch(f, bytes, &hash, &chunks) {
                    return Err(SetError::Conflict {
                        path: shown,
                        reason: format!(
                            "element {}: {why}; the source set is damaged (run `backset check` on it), nothing of \
                             this element was published",
                            e.name()
                        ),
                    });
                }
                out.sync_all().map_err(|source| SetError::Io { op: "fsync", path: target.clone(), source })?;
                report.bytes += bytes;
                report.files += 1;
            }
            let catalog = source.catalog(i)?;
            writer.write_control(&begun, &e.manifest, &catalog, &e.info)?;
            writer.commit(&begun, e.entry.txn_range, e.entry.end_micros, || {})
        })();
        if let Err(err) = result {
            let _ = writer.abort(&begun, false);
            return Err(err);
        }
        report.copied.push(name);
        dest = Some(BackupSet::open(dst)?);
    }
    Ok(report)
}
