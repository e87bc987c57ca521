//! `backset set copy SRC DST`: a completed backup set copied between any two storages (a directory and an
//! `s3://` URL, either way, or two of a kind), element by element in the order the set holds them, each written
//! through the destination's own writer (`SetWriter`): its data files streamed from the source, every byte
//! hashed and compared with the source's manifest before the element is sealed, then published exactly as a hot
//! copy publishes it (a rename and the state rewritten locally, the create-only commit record on object storage).
//!
//! To object storage nothing is written locally (no spool, whatever the element's size): each data file is read
//! from the source (a local file or another store's object) one [`CHUNK_BYTES`] piece at a time, hashed as the
//! manifest hashes it, and handed to the store's uploader as it is read ([`SetStorage::store_data`]: one put for a
//! file of at most `UPLOAD_PART_BYTES`, a multipart upload of such parts for a larger one, a bounded number in
//! flight, the same uploader as a hot copy's). A file's last piece is handed on only once the whole file matched
//! its manifest entry, so a source altered behind Backset's back never completes an object: the copy fails naming
//! the source file, and the element is not published. **Memory** of a copy to object storage: every piece is
//! allocated against [`SET_COPY_BUFFER_BYTES`] (64 MiB) and given back once stored, so the data held is at most
//! that, plus the one [`CHUNK_BYTES`] read buffer and the source reader's and HTTP client's own buffers. From
//! object storage to a directory, each file is streamed into the destination's staged element (`tmp/<id>/`) as a
//! local set's writer does, one read buffer at a time.
//!
//! [`SetStorage::store_data`]: super::SetStorage::store_data
//!
//! Resumable: the destination must be absent, empty, or the same set (same set id) as far as it goes; the elements
//! it already holds (the same element id) are not sent again. An interrupted copy leaves the destination a valid
//! set of the elements copied so far (and a staged element that the next run, or `set gc`, removes). Incremental
//! and journal elements keep their ids, sequence numbers and parents: the copy is the same set.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use backset_copier::JobControl;
use backset_format::layout::{data_file_path, DATA_DIR};
use backset_format::limits::CHUNK_BYTES;
use backset_format::{ElementStatus, FileEntry, State};
use bytes::Bytes;

use super::data::{hash_stream, mismatch};
use super::object::UPLOAD_PART_BYTES;
use super::read::Element;
use super::write::{dir_content, Begun, DirContent, SetWriter};
use super::{BackupSet, PieceSink, SetError};

/// The data a copy to object storage holds at once (pieces read and not yet stored): 64 MiB, as a hot copy's pool.
/// At least a part being filled and the pieces on either side of it ([`UPLOAD_PART_BYTES`] + 2 x [`CHUNK_BYTES`]),
/// so that the upload always makes progress.
pub const SET_COPY_BUFFER_BYTES: usize = 64 << 20;

const _: () = assert!(SET_COPY_BUFFER_BYTES >= UPLOAD_PART_BYTES + 2 * CHUNK_BYTES as usize);

/// How long a read waiting for the budget sleeps before it looks whether the copy was stopped.
const BUDGET_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The bytes a copy to object storage may hold: a piece takes its length before it is read into and gives it back
/// when dropped (once stored).
#[derive(Debug)]
struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A piece's bytes, holding their share of the [`Budget`] until dropped.
struct Held {
    bytes: Vec<u8>,
    budget: Arc<Budget>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.budget.free.lock().unwrap_or_else(|p| p.into_inner()) += self.bytes.len();
        self.budget.freed.notify_all();
    }
}

impl Budget {
    fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new(bytes), freed: Condvar::new() })
    }

    /// A copy of `bytes` held against the budget, once it has room for it; `None` when `ctl` was cancelled while it
    /// waited (the store failed).
    fn piece(self: &Arc<Self>, bytes: &[u8], ctl: &JobControl) -> Option<Bytes> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < bytes.len() {
            if ctl.is_cancelled() {
                return None;
            }
            free = self.freed.wait_timeout(free, BUDGET_POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
        *free -= bytes.len();
        drop(free);
        Some(Bytes::from_owner(Held { bytes: bytes.to_vec(), budget: Arc::clone(self) }))
    }
}

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
            let (bytes, files) = if writer.streams_data() {
                send_data(&source, e, &writer, &begun)?
            } else {
                write_data(&source, e, &begun)?
            };
            report.bytes += bytes;
            report.files += files;
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

/// The error of a data file `f` of `e` that cannot be read from the source.
fn unreadable(e: &Element, f: &FileEntry, err: impl std::fmt::Display) -> SetError {
    SetError::Conflict {
        path: e.data_file(f),
        reason: format!("element {}: cannot be read ({err}); nothing of this element was published", e.name()),
    }
}

/// The error of a data file `f` of `e` that does not match its manifest entry (`why`).
fn damaged(e: &Element, f: &FileEntry, why: String) -> SetError {
    SetError::Conflict {
        path: e.data_file(f),
        reason: format!(
            "element {}: {why}; the source set is damaged or was altered (run `backset check` on it), nothing of \
             this element was published",
            e.name()
        ),
    }
}

/// Writes the data files of `e` into the staged element `begun` of a local destination, each streamed from the
/// source and verified against the manifest; the bytes and files written.
fn write_data(source: &BackupSet, e: &Element, begun: &Begun) -> Result<(u64, u64), SetError> {
    let data = begun.tmp.join(DATA_DIR);
    let mut total = 0;
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
        let (reader, _) = source.storage().open(&e.data_file_rel(f)).map_err(|err| unreadable(e, f, err))?;
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
            path: e.data_file(f),
            reason: format!("element {}: read failed ({err}); nothing of this element was published", e.name()),
        })?;
        if let Some(why) = mismatch(f, bytes, &hash, &chunks) {
            return Err(damaged(e, f, why));
        }
        out.sync_all().map_err(|source| SetError::Io { op: "fsync", path: target.clone(), source })?;
        total += bytes;
    }
    Ok((total, e.manifest.files.len() as u64))
}

/// Sends the data files of `e` to the staged element `begun` of a destination that takes them streamed (object
/// storage), each read from the source, hashed and handed to the store piece by piece, its last piece only once
/// the whole file matched the manifest (see the [module docs](self)); the bytes and files sent.
fn send_data(source: &BackupSet, e: &Element, writer: &SetWriter, begun: &Begun) -> Result<(u64, u64), SetError> {
    let files: Vec<PathBuf> =
        e.manifest.files.iter().map(|f| Path::new(DATA_DIR).join(data_file_path(f.kind, f.id))).collect();
    let ctl = JobControl::new();
    let budget = Budget::new(SET_COPY_BUFFER_BYTES);
    let mut total = 0;
    let stopped = || SetError::Conflict {
        path: begun.tmp.clone(),
        reason: "storing stopped; nothing of this element was published".into(),
    };
    writer.store_data(begun, &files, &ctl, &mut |sink: &dyn PieceSink| {
        let mut sums = Vec::with_capacity(e.manifest.files.len());
        for (i, f) in e.manifest.files.iter().enumerate() {
            let (reader, _) = source.storage().open(&e.data_file_rel(f)).map_err(|err| unreadable(e, f, err))?;
            // The piece read last, handed on once the next one is read, or once the whole file was verified.
            let mut held: Option<Bytes> = None;
            let mut taken = true;
            let summary = hash_stream(
                reader,
                Some(&mut |chunk: &[u8]| {
                    let piece = budget.piece(chunk, &ctl);
                    taken = piece.is_some() && held.take().is_none_or(|prev| sink.piece(i, prev, false));
                    held = piece;
                    if taken {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("storing stopped"))
                    }
                }),
            );
            if !taken {
                return Err(stopped());
            }
            let (bytes, hash, chunks) = summary.map_err(|err| unreadable(e, f, err))?;
            if let Some(why) = mismatch(f, bytes, &hash, &chunks) {
                return Err(damaged(e, f, why));
            }
            if let Some(last) = held.take() {
                if !sink.piece(i, last, true) {
                    return Err(stopped());
                }
            }
            total += bytes;
            sums.push((bytes, hash));
        }
        Ok(sums)
    })?;
    Ok((total, e.manifest.files.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_take_the_whole_budget_and_no_more_and_give_it_back_when_dropped() {
        let budget = Budget::new(SET_COPY_BUFFER_BYTES);
        let ctl = JobControl::new();
        let chunk = vec![7u8; CHUNK_BYTES as usize];
        let mut held: Vec<Bytes> = (0..SET_COPY_BUFFER_BYTES / CHUNK_BYTES as usize)
            .map(|i| budget.piece(&chunk, &ctl).unwrap_or_else(|| panic!("piece {i} fits the budget")))
            .collect();
        assert_eq!(held.len() * CHUNK_BYTES as usize, SET_COPY_BUFFER_BYTES);
        // Full: one more byte waits for room, and a cancelled copy stops waiting.
        ctl.cancel();
        assert!(budget.piece(&[1], &ctl).is_none(), "the budget is full");
        // A piece stored (dropped) gives its bytes back.
        drop(held.pop());
        let again = budget.piece(&chunk, &ctl).expect("room for one chunk again");
        assert_eq!(again.as_ref(), chunk.as_slice());
        assert!(budget.piece(&[1], &ctl).is_none(), "full again");
    }
}
