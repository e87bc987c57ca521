//! [`ObjectStore`]: a backup set on S3-compatible object storage (`s3://bucket/prefix`), the second implementation
//! of [`SetStorage`] (DESIGN.md, "Storage backends"; the layout and the publish protocol are in FORMAT.md, "Backup
//! sets on object storage").
//!
//! ```text
//! <prefix>/<element>/commit                      the commit record: written last, create-only (If-None-Match: *)
//! <prefix>/<element>/<element id>/control/...    element, manifest, catalog
//! <prefix>/<element>/<element id>/data/...       atoms/<id>, journal/<segment>
//! <prefix>/verified                              check's verification record (check's own; overwritten)
//! ```
//!
//! - **Readers see the set as a directory.** A path `full/control/manifest` given to the trait is the object
//!   `full/<element id>/control/manifest`, where the element id is the one the element's commit record names: an
//!   element without a commit record does not exist for a reader, and of two jobs that raced for one element
//!   number only the winner's objects are ever read. Commit records are never rewritten, so once read they are
//!   cached.
//! - **`state` is derived**, never stored: the set's header and the completed entries come from the commit records
//!   (each is a `state` holding the set's header and exactly its own element, completed), the in-progress entries
//!   from what this process's writer last wrote (kept in memory, as only its own jobs can be in progress for it).
//! - **Data files go up from the copier's buffers** ([`stream_data`](SetStorage::stream_data)): a hot copy's
//!   copier reads the archive as for a local set (io_uring, O_DIRECT, BLAKE3 from the read buffer, the per-SM
//!   rate limit counting the bytes read) but writes nothing: it lends each buffer, once hashed, to this store
//!   (`backset_copier::SmCopier::stream`), which sends it on as it comes: a file of at most [`UPLOAD_PART_BYTES`]
//!   in one put, a larger one as a multipart upload of [`UPLOAD_PART_BYTES`] parts made of the buffers
//!   themselves (at most [`MULTIPART_PARTS_IN_FLIGHT`](backset_objstore::limits::MULTIPART_PARTS_IN_FLIGHT) in
//!   flight), completed while the next files go up (at most [`STREAM_PUTS_IN_FLIGHT`] puts and completing
//!   uploads at once). A buffer goes back to the copier's pool once its put or part is stored. **Memory**: the data in flight is the SM copier's
//!   pool (`HOTCOPY_COPIER_POOL_BYTES`, 64 MiB), nothing more: a buffer being read, hashed, waiting for its part
//!   or being sent is a pool buffer, and when the store is slower than the archive every buffer ends up waiting
//!   to be sent and the reads wait for one to come back. Beyond the pool: the keys and sizes of the job's files,
//!   and the HTTP client's own buffers (headers, TLS records). **Rate**: what is stored is exactly what was read,
//!   as it is read, so `--max-rate` holds for the upload too. The copier's hash of each file is recorded and
//!   compared with the manifest at [`seal`](SetStorage::seal), with the size of every stored object in one
//!   listing. A streaming job holds the buffers of one part being filled per file it is reading (one file at a
//!   time on io_uring, up to `backset_copier::limits::PORTABLE_THREADS` on the portable backend); when no chunk
//!   came for [`STREAM_STALL`] (several hot copies to object storage on one SM holding the pool in unfilled parts,
//!   or a pool smaller than a part), those parts are copied out of the pool: the bound is then the pool plus one
//!   part per file being read.
//! - **`backset set copy` to object storage** ([`store_data`](SetStorage::store_data)) sends each data file from
//!   its source the same way, through the same uploader: the copy reads the source (a local file or another
//!   store's object), hashes every byte as the manifest does and hands it on in pieces, which are stored as they
//!   come (one put, or a multipart upload of [`UPLOAD_PART_BYTES`] parts). Nothing is written to local disk: there
//!   is no spool. **Memory**: the pieces held (being sent, in a part being filled, waiting to be taken) are
//!   allocated against the copy's budget (`set::copy::SET_COPY_BUFFER_BYTES`, 64 MiB) and returned to it once
//!   stored, so the data held is at most that budget, plus the copy's one read buffer
//!   (`backset_format::limits::CHUNK_BYTES`, 1 MiB) and the source reader's and HTTP client's own buffers. Each
//!   file's last piece is handed on only once the whole file matched the manifest, so a source that does not
//!   match never completes an object.
//! - **Staging** is in memory only: a staged element (`tmp/<element id>` as the writer names it) is its name and
//!   id, and what was stored of it; its objects are under `<element>/<element id>/` from the start.
//!   [`seal`](SetStorage::seal) compares each stored data file's size and BLAKE3 (the copier's, or the set
//!   copy's) with the manifest, stores the control objects and checks every object's size in one listing;
//!   [`publish`](SetStorage::publish) is the create-only put of the commit record.
//! - **One process writes a set at a time** (as for a local set). An aborted job removes its own objects; the
//!   objects of a job killed outright are removed by the next hot copy's clean-up (listed under `tmp/`) or by
//!   `backset set gc`, once nothing was written for them for [`GC_MIN_AGE`]: never those of a job that may still run.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Mutex, MutexGuard};

use backset_copier::{Chunk, ChunkSink, CopyError, JobControl, JobReport};
use backset_format::dirfd::{DirId, EntryKind};
use backset_format::layout::{
    ATOMS_DIR, CONTROL_DIR, DATA_DIR, ELEMENT_INFO_FILE, JOURNAL_DIR, MANIFEST_FILE, STATE_FILE, TMP_DIR,
};
use backset_format::meta;
use backset_format::{
    ElementEntry, ElementInfo, ElementKind, ElementName, ElementStatus, Manifest, ReadError, State, WriteError,
};
use backset_objstore::{Entry, ObjStoreError, ObjectClient, S3Url};
use bytes::Bytes;
use uuid::Uuid;

use super::storage::{PieceSink, SetStorage, Stat};
use super::SetError;

/// The name of an element's commit record, below the element's name.
pub const COMMIT_OBJECT: &str = "commit";

/// The largest commit record read (a `state` with one element is a few hundred bytes).
pub const MAX_COMMIT_BYTES: u64 = 1 << 20;

/// The part size of a multipart upload of a data file, and the largest file uploaded in one put: 8 MiB.
pub const UPLOAD_PART_BYTES: usize = 8 << 20;

/// Data files being stored at once by one job, besides the multipart upload being filled: 16. That is single puts
/// (files of at most [`UPLOAD_PART_BYTES`]) and multipart uploads whose last parts are in flight or which are being
/// completed. Each holds its file's chunks (pool buffers) until they are stored, so the copier's pool bounds their
/// memory; a small file costs a round trip, and a large one the server's completion (which may copy the whole
/// object), which this many side by side hide.
pub const STREAM_PUTS_IN_FLIGHT: usize = 16;

/// When a streaming job's store has waited this long for the next chunk, the parts still being filled are copied
/// out of the copier's buffers (at most one part, [`UPLOAD_PART_BYTES`], per file being read), which go back to the
/// pool: 100 ms. Each part holds its buffers until it is full, so hot copies to object storage running side by side
/// on one SM (or a small pool, or the portable backend reading several files at once) could otherwise hold every
/// buffer in unfilled parts, and the reads that would fill them wait for a buffer forever. A job whose chunks come
/// faster than this (any rate from 10 MB/s on) never copies; a slower one copies each chunk at most once more.
pub const STREAM_STALL: std::time::Duration = std::time::Duration::from_millis(100);

/// An element staged by this process: its name, and what was stored of it.
#[derive(Debug, Clone)]
struct Staged {
    name: ElementName,
    info: Option<ElementInfo>,
    /// Data files stored ([`SetStorage::stream_data`], [`SetStorage::store_data`]): key -> (bytes, the BLAKE3
    /// computed from the very bytes that were stored), checked against the manifest when the element is sealed.
    streamed: HashMap<String, (u64, [u8; 32])>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Commit records read: element name -> (element id, the record).
    published: HashMap<ElementName, (Uuid, State)>,
    /// The state this process's writer last wrote (its in-progress entries).
    pending: Option<State>,
    /// Elements staged by this process, by element id.
    staged: HashMap<Uuid, Staged>,
    /// Keys seen as prefixes (directories) under published elements: a restore asks for `data/atoms` once per
    /// file, and a prefix costs two requests.
    dirs: std::collections::HashSet<String>,
    /// Unpublished jobs of other (dead) processes that the last listing of `tmp/` found, by element id.
    stale: HashMap<Uuid, ElementName>,
}

/// A backup set under an `s3://bucket/prefix`. See the [module docs](self).
#[derive(Debug)]
pub struct ObjectStore {
    client: ObjectClient,
    inner: Mutex<Inner>,
}

fn io_other(e: ObjStoreError) -> std::io::Error {
    match e {
        ObjStoreError::NotFound { .. } => std::io::Error::new(ErrorKind::NotFound, e.to_string()),
        e => std::io::Error::other(e.to_string()),
    }
}

impl ObjectStore {
    /// The set at `client`'s location. No request is made yet.
    pub fn new(client: ObjectClient) -> Self {
        Self { client, inner: Mutex::new(Inner::default()) }
    }

    /// The location.
    pub fn url(&self) -> &S3Url {
        self.client.url()
    }

    /// The client.
    pub fn client(&self) -> &ObjectClient {
        &self.client
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_err(&self, e: ObjStoreError) -> SetError {
        SetError::ObjectStore { source: e }
    }

    /// The commit record of `name`, if the element is published (cached once read).
    fn commit_of(&self, name: ElementName) -> Result<Option<(Uuid, State)>, ReadError> {
        if let Some(c) = self.inner().published.get(&name) {
            return Ok(Some(c.clone()));
        }
        let rel = format!("{name}/{COMMIT_OBJECT}");
        let path = PathBuf::from(self.client.url().show(&rel));
        let bytes = match self.client.get(&rel, MAX_COMMIT_BYTES) {
            Ok(b) => b,
            Err(ObjStoreError::NotFound { .. }) => return Ok(None),
            Err(ObjStoreError::TooLarge { size, max, .. }) => return Err(ReadError::TooLarge { path, len: size, max }),
            Err(e) => return Err(ReadError::Io { op: "get", path, source: io_other(e) }),
        };
        let record: State =
            meta::decode(&bytes).map_err(|source| ReadError::Metadata { path: path.clone(), source })?;
        let bad = |why: String| ReadError::Io {
            op: "read",
            path: path.clone(),
            source: std::io::Error::new(ErrorKind::InvalidData, why),
        };
        let [entry] = record.elements.as_slice() else {
            return Err(bad(format!(
                "a commit record holds exactly one element, this one {}: the object is not Backset's or was altered",
                record.elements.len()
            )));
        };
        if entry.name() != name || entry.status != ElementStatus::Completed {
            return Err(bad(format!(
                "the commit record of element {name} names element {} ({:?}): the object is not Backset's or was \
                 altered; remove the set's prefix and make a new full hot copy, or restore it from a copy",
                entry.name(),
                entry.status
            )));
        }
        let id = entry.element_id;
        self.inner().published.insert(name, (id, record.clone()));
        Ok(Some((id, record)))
    }

    /// The names at the top of the prefix: element names (published or not) and other names.
    fn top(&self) -> Result<(Vec<String>, Vec<String>), ObjStoreError> {
        let listing = self.client.list_dir("")?;
        Ok((listing.prefixes, listing.objects.into_iter().map(|o| o.rel).collect()))
    }

    /// The published elements, by name.
    fn published(&self) -> Result<Vec<(ElementName, Uuid, State)>, ReadError> {
        let (prefixes, _) = self.top().map_err(|e| ReadError::Io {
            op: "list",
            path: PathBuf::from(self.client.url().to_string()),
            source: io_other(e),
        })?;
        let mut out = Vec::new();
        for p in prefixes {
            let Ok(name) = p.parse::<ElementName>() else { continue };
            if let Some((id, record)) = self.commit_of(name)? {
                out.push((name, id, record));
            }
        }
        Ok(out)
    }

    /// The unpublished jobs under the prefix (`<element>/<element id>/` that no commit record names): element,
    /// id, object count and newest object's time. One listing of the top, one per element, one per such job.
    fn unpublished(&self) -> Result<Vec<(ElementName, Uuid, usize, std::time::SystemTime)>, SetError> {
        let err = |source| SetError::ObjectStore { source };
        let (prefixes, _) = self.top().map_err(err)?;
        let mut out = Vec::new();
        for p in prefixes {
            let Ok(name) = p.parse::<ElementName>() else { continue };
            let published = self
                .commit_of(name)
                .map_err(|source| SetError::Metadata { set: self.show(Path::new("")), element: Some(name), source })?
                .map(|(id, _)| id);
            for job in self.client.list_dir(&p).map_err(err)?.prefixes {
                let Ok(id) = job.parse::<Uuid>() else { continue };
                if Some(id) == published {
                    continue;
                }
                let objects = self.client.list(&format!("{name}/{id}")).map_err(err)?;
                let newest = objects.iter().map(|o| o.modified).max().unwrap_or(std::time::UNIX_EPOCH);
                out.push((name, id, objects.len(), newest));
            }
        }
        Ok(out)
    }

    /// The state derived from the commit records and this process's in-progress entries; `None` when there is no
    /// set here yet.
    pub fn derived_state(&self) -> Result<Option<State>, ReadError> {
        let published = self.published()?;
        let pending = self.inner().pending.clone();
        let state_path = PathBuf::from(self.client.url().show(STATE_FILE));
        let mut header: Option<State> = None;
        let mut entries: Vec<ElementEntry> = Vec::new();
        for (name, _, record) in &published {
            match &header {
                None => header = Some(State { elements: Vec::new(), ..record.clone() }),
                Some(h) => {
                    if h.set_id != record.set_id
                        || h.database_id != record.database_id
                        || h.archive_id != record.archive_id
                    {
                        return Err(ReadError::Io {
                            op: "read",
                            path: state_path,
                            source: std::io::Error::new(
                                ErrorKind::InvalidData,
                                format!(
                                    "the commit record of element {name} belongs to set {} and another element's to \
                                     set {}: the prefix holds elements of two sets; give each set its own prefix",
                                    record.set_id, h.set_id
                                ),
                            ),
                        });
                    }
                }
            }
            entries.extend(record.elements.iter().cloned());
        }
        if let Some(p) = &pending {
            if header.as_ref().is_none_or(|h| h.set_id == p.set_id) {
                if header.is_none() {
                    header = Some(State { elements: Vec::new(), ..p.clone() });
                }
                for e in &p.elements {
                    if e.status == ElementStatus::InProgress && !entries.iter().any(|x| x.element_id == e.element_id) {
                        entries.push(e.clone());
                    }
                }
            }
        }
        let Some(mut state) = header else { return Ok(None) };
        state.elements = order(entries);
        Ok(Some(state))
    }

    /// The object key of `rel`, a path of the set as the reader and writer give it: `None` when it names nothing
    /// that can exist (an unpublished element, the derived `state`, `tmp/`).
    fn key(&self, rel: &Path) -> Result<Option<String>, ReadError> {
        let parts: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let Some(first) = parts.first() else { return Ok(Some(String::new())) };
        if let Ok(name) = first.parse::<ElementName>() {
            let Some((id, _)) = self.commit_of(name)? else { return Ok(None) };
            let mut key = format!("{name}/{id}");
            for p in &parts[1..] {
                key.push('/');
                key.push_str(p);
            }
            return Ok(Some(key));
        }
        Ok(Some(parts.join("/")))
    }

    /// Whether `rel` is below `tmp/`, where staged elements are named: nothing there is stored under that name (a
    /// staged element's objects are under `<element>/<element id>/`).
    fn in_tmp(rel: &Path) -> bool {
        rel.starts_with(TMP_DIR)
    }

    fn read_err(&self, op: &'static str, rel: &Path) -> impl FnOnce(ObjStoreError) -> ReadError + '_ {
        let path = self.show(rel);
        move |e| match e {
            ObjStoreError::TooLarge { size, max, .. } => ReadError::TooLarge { path, len: size, max },
            e => ReadError::Io { op, path, source: io_other(e) },
        }
    }

    fn not_found(&self, rel: &Path) -> ReadError {
        ReadError::Io {
            op: "get",
            path: self.show(rel),
            source: std::io::Error::new(ErrorKind::NotFound, "no such object"),
        }
    }

    /// Forgets the staged element `id`.
    fn forget(&self, id: Uuid) -> Option<Staged> {
        self.inner().staged.remove(&id)
    }

    /// Records the data files `keys[i]` of the staged element `id` as stored, `sums[i]` (bytes, BLAKE3) as read,
    /// given what [`store_chunks`](Self::store_chunks) stored of each (`stored`): an empty file (which gives no
    /// piece) is put here; a file of which fewer bytes were stored than read is refused.
    fn record_stored(
        &self,
        id: Uuid,
        keys: &[String],
        sums: impl IntoIterator<Item = (u64, [u8; 32])>,
        stored: &HashMap<usize, u64>,
        again: &str,
    ) -> Result<(), SetError> {
        let mut streamed = Vec::with_capacity(keys.len());
        for (i, (bytes, hash)) in sums.into_iter().enumerate() {
            let got = stored.get(&i).copied().unwrap_or(0);
            if bytes == 0 {
                // An empty file gives no piece.
                self.client.put(&keys[i], Bytes::new()).map_err(|e| self.set_err(e))?;
            } else if got != bytes {
                return Err(SetError::Conflict {
                    path: PathBuf::from(self.client.url().show(&keys[i])),
                    reason: format!("{got} of its {bytes} bytes were stored; nothing was published: run {again} again"),
                });
            }
            streamed.push((keys[i].clone(), (bytes, hash)));
        }
        if let Some(s) = self.inner().staged.get_mut(&id) {
            s.streamed.extend(streamed);
        }
        Ok(())
    }

    /// The staged element `staged`'s id and the keys of its files `files` (relative to it).
    fn staged_keys(&self, staged: &Path, files: &[PathBuf]) -> (Uuid, Vec<String>) {
        let id = staged_id(staged);
        let name = self.inner().staged.get(&id).map(|s| s.name).expect("staged by this store");
        (id, files.iter().map(|f| format!("{name}/{id}/{}", f.to_string_lossy())).collect())
    }

    /// Runs `produce` with a sender of the pieces of the files `keys[i]`, while
    /// [`store_chunks`](Self::store_chunks) stores them on a thread of its own; `produce`'s result and what was
    /// stored.
    fn storing<R>(
        &self,
        keys: &[String],
        ctl: &JobControl,
        produce: impl FnOnce(mpsc::Sender<Piece>) -> R,
    ) -> (R, Result<HashMap<usize, u64>, SetError>) {
        let (tx, rx) = mpsc::channel::<Piece>();
        std::thread::scope(|s| {
            let storing = s.spawn(|| self.store_chunks(keys, rx, ctl));
            let produced = produce(tx);
            (produced, storing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })
    }
}

/// A hash as messages show it.
fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The element id of a staged element (`tmp/<element id>`).
fn staged_id(staged: &Path) -> Uuid {
    staged
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a staged element is tmp/<element id>")
}

/// Bytes of one data file to store: a copier's chunk ([`Chunk`], lent from its pool) or a piece a set copy read
/// ([`PieceSink`]).
struct Piece {
    request: usize,
    bytes: Bytes,
    last: bool,
    /// Whether the bytes are a copier's pool buffer (see [`STREAM_STALL`]).
    lent: bool,
}

/// Hands a streaming copier job's chunks to [`ObjectStore::store_chunks`].
struct Lend(mpsc::Sender<Piece>);

impl ChunkSink for Lend {
    fn chunk(&self, chunk: Chunk) {
        let (request, last) = (chunk.request(), chunk.is_last());
        // Once the store is gone, the chunk is dropped (its buffer back in the pool).
        let _ = self.0.send(Piece { request, last, lent: true, bytes: Bytes::from_owner(chunk) });
    }
}

/// Hands a set copy's pieces to [`ObjectStore::store_chunks`].
struct Pieces(mpsc::Sender<Piece>);

impl PieceSink for Pieces {
    fn piece(&self, request: usize, bytes: Bytes, last: bool) -> bool {
        self.0.send(Piece { request, bytes, last, lent: false }).is_ok()
    }
}

/// A data file being stored from its pieces: the pieces of its part not sent yet, and its multipart upload once it
/// has more than one part.
struct Storing<'c> {
    pieces: Vec<Bytes>,
    /// Of `pieces`, how many are the copier's buffers (the others are copies, see [`STREAM_STALL`], or a set
    /// copy's own pieces).
    lent: usize,
    piece_bytes: usize,
    got: u64,
    upload: Option<backset_objstore::Upload<'c>>,
}

impl ObjectStore {
    /// Stores the data files `keys[i]` from the pieces of request `i` coming through `chunks`, until the channel
    /// closes (the copier's job, or the set copy's reads, ended): a file of at most [`UPLOAD_PART_BYTES`] in one
    /// put, a larger one as a multipart upload of [`UPLOAD_PART_BYTES`] parts (at most
    /// [`MULTIPART_PARTS_IN_FLIGHT`](backset_objstore::limits::MULTIPART_PARTS_IN_FLIGHT) in flight), each part the
    /// chunks themselves (no copy), completed in the background; at most [`STREAM_PUTS_IN_FLIGHT`] puts and
    /// completing uploads at once. Every chunk goes back to the copier's pool once its request is done.
    /// Returns the bytes stored of each file stored whole; on a store error, cancels the copier's job (`ctl`) and
    /// returns the error (an upload left unfinished is aborted as it drops).
    fn store_chunks(
        &self,
        keys: &[String],
        chunks: mpsc::Receiver<Piece>,
        ctl: &JobControl,
    ) -> Result<HashMap<usize, u64>, SetError> {
        let mut files: HashMap<usize, Storing<'_>> = HashMap::new();
        let mut puts: std::collections::VecDeque<backset_objstore::PendingPut> = std::collections::VecDeque::new();
        let mut stored = HashMap::new();
        let result = (|| {
            loop {
                let chunk = match chunks.recv_timeout(STREAM_STALL) {
                    Ok(chunk) => chunk,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // No chunk for a while: the parts being filled may hold the pool's last buffers. Copied
                        // out, their buffers go back and the reads go on (see `STREAM_STALL`).
                        for f in files.values_mut().filter(|f| f.lent > 0) {
                            // The lent pieces are the last ones (those before were copied at an earlier stall).
                            let lent = f.pieces.split_off(f.pieces.len() - f.lent);
                            let mut copy = Vec::with_capacity(lent.iter().map(Bytes::len).sum());
                            lent.iter().for_each(|p| copy.extend_from_slice(p));
                            f.pieces.push(Bytes::from(copy));
                            f.lent = 0;
                        }
                        continue;
                    }
                };
                let i = chunk.request;
                let key = &keys[i];
                let last = chunk.last;
                let f = files.entry(i).or_insert_with(|| Storing {
                    pieces: Vec::new(),
                    lent: 0,
                    piece_bytes: 0,
                    got: 0,
                    upload: None,
                });
                f.got += chunk.bytes.len() as u64;
                f.piece_bytes += chunk.bytes.len();
                f.pieces.push(chunk.bytes);
                if chunk.lent {
                    f.lent += 1;
                } else {
                    // Copies at a stall take the last `lent` pieces: a set copy's pieces are never copied.
                    f.lent = 0;
                }
                if f.piece_bytes >= UPLOAD_PART_BYTES && !last {
                    if f.upload.is_none() {
                        f.upload = Some(self.client.upload(key)?);
                    }
                    f.piece_bytes = 0;
                    f.lent = 0;
                    f.upload.as_mut().expect("started").put_part_pieces(std::mem::take(&mut f.pieces))?;
                }
                if !last {
                    continue;
                }
                let f = files.remove(&i).expect("just there");
                puts.push_back(match f.upload {
                    None => self.client.put_pieces(key, f.pieces)?,
                    Some(mut upload) => {
                        if !f.pieces.is_empty() {
                            upload.put_part_pieces(f.pieces)?;
                        }
                        // Its last parts and its completion overlap the next file's parts.
                        upload.finish_in_background()?
                    }
                });
                while puts.len() > STREAM_PUTS_IN_FLIGHT {
                    puts.pop_front().expect("more than one").wait(&self.client)?;
                }
                tracing::debug!(object = %self.client.url().show(key), bytes = f.got, "sent from the copier's buffers");
                stored.insert(i, f.got);
            }
            while let Some(put) = puts.pop_front() {
                put.wait(&self.client)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(stored),
            Err(e) => {
                ctl.cancel();
                for put in puts {
                    let _ = put.wait(&self.client);
                }
                Err(self.set_err(e))
            }
        }
    }
}

/// The entries of a derived state in an order the format accepts: the full first, each kind's sequence numbers
/// increasing, otherwise in the order they began.
fn order(mut entries: Vec<ElementEntry>) -> Vec<ElementEntry> {
    entries.sort_by_key(|e| (e.kind != ElementKind::Full, e.begin_micros, e.kind as u8, e.sequence));
    for kind in [ElementKind::Full, ElementKind::Incremental, ElementKind::Journal] {
        let slots: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].kind == kind).collect();
        let mut of_kind: Vec<ElementEntry> = slots.iter().map(|&i| entries[i].clone()).collect();
        of_kind.sort_by_key(|e| e.sequence);
        for (slot, e) in slots.into_iter().zip(of_kind) {
            entries[slot] = e;
        }
    }
    entries
}

/// A stable pseudo directory id for a key (object storage has no inodes).
fn dir_id(key: &str) -> DirId {
    let h = blake3::hash(key.as_bytes());
    let b = h.as_bytes();
    DirId { dev: u64::MAX, ino: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) }
}

impl SetStorage for ObjectStore {
    fn show(&self, rel: &Path) -> PathBuf {
        let rel = rel.to_str().unwrap_or_default();
        PathBuf::from(self.client.url().show(rel).trim_end_matches('/'))
    }

    fn is_local(&self) -> bool {
        false
    }

    fn stat(&self, rel: &Path) -> std::io::Result<Option<Stat>> {
        if rel == Path::new(TMP_DIR) {
            // Always there: what it lists is this process's staged elements and other processes' stale jobs.
            return Ok(Some(Stat { kind: EntryKind::Dir(dir_id(TMP_DIR)), len: 0 }));
        }
        if Self::in_tmp(rel) {
            // A staged element is there while this process stages it; nothing below it is stored under that name.
            let staged = rel.parent() == Some(Path::new(TMP_DIR))
                && rel
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Uuid>().ok())
                    .is_some_and(|id| self.inner().staged.contains_key(&id));
            return Ok(staged.then(|| Stat { kind: EntryKind::Dir(dir_id(&rel.to_string_lossy())), len: 0 }));
        }
        if rel.as_os_str().is_empty() {
            return Ok(Some(Stat { kind: EntryKind::Dir(dir_id(self.client.url().prefix())), len: 0 }));
        }
        if rel == Path::new(STATE_FILE) {
            let state = self.derived_state().map_err(std::io::Error::other)?;
            return Ok(state
                .map(|s| Stat { kind: EntryKind::File, len: meta::encode(&s).map(|b| b.len() as u64).unwrap_or(0) }));
        }
        let Some(key) = self.key(rel).map_err(std::io::Error::other)? else { return Ok(None) };
        if self.inner().dirs.contains(&key) {
            return Ok(Some(Stat { kind: EntryKind::Dir(dir_id(&key)), len: 0 }));
        }
        let entry = if layout_dir(rel) { self.client.stat_prefix(&key) } else { self.client.stat(&key) };
        match entry.map_err(io_other)? {
            None => Ok(None),
            Some(Entry::Object { size }) => Ok(Some(Stat { kind: EntryKind::File, len: size })),
            Some(Entry::Prefix) => {
                self.inner().dirs.insert(key.clone());
                Ok(Some(Stat { kind: EntryKind::Dir(dir_id(&key)), len: 0 }))
            }
        }
    }

    fn list(&self, rel: &Path) -> std::io::Result<Vec<OsString>> {
        if rel == Path::new(TMP_DIR) {
            // This process's staged elements, and the unpublished jobs of processes that no longer run (nothing
            // written for `clean_min_age()`): what a hot copy's clean-up removes when no job of its own owns them.
            let stale: HashMap<Uuid, ElementName> = self
                .unpublished()
                .map_err(std::io::Error::other)?
                .into_iter()
                .filter(|(_, _, _, newest)| {
                    std::time::SystemTime::now().duration_since(*newest).unwrap_or_default() >= clean_min_age()
                })
                .map(|(name, id, _, _)| (id, name))
                .collect();
            let mut inner = self.inner();
            let mut ids: Vec<Uuid> = inner.staged.keys().copied().collect();
            ids.extend(stale.keys().filter(|id| !inner.staged.contains_key(id)));
            inner.stale = stale;
            return Ok(ids.into_iter().map(|id| OsString::from(id.to_string())).collect());
        }
        if Self::in_tmp(rel) {
            return Ok(Vec::new());
        }
        if rel.as_os_str().is_empty() {
            let (prefixes, objects) = self.top().map_err(io_other)?;
            let mut names = Vec::new();
            if self.derived_state().map_err(std::io::Error::other)?.is_some() {
                names.push(OsString::from(STATE_FILE));
            }
            for p in prefixes {
                match p.parse::<ElementName>() {
                    Ok(name) => {
                        if self.commit_of(name).map_err(std::io::Error::other)?.is_some() {
                            names.push(p.into());
                        }
                    }
                    Err(_) => names.push(p.into()),
                }
            }
            names.extend(objects.into_iter().map(OsString::from));
            return Ok(names);
        }
        let Some(key) = self.key(rel).map_err(std::io::Error::other)? else {
            return Err(std::io::Error::new(
                ErrorKind::NotFound,
                format!("{}: no such element", self.show(rel).display()),
            ));
        };
        let listing = self.client.list_dir(&key).map_err(io_other)?;
        Ok(listing
            .prefixes
            .into_iter()
            .map(OsString::from)
            .chain(listing.objects.into_iter().map(|o| o.rel.into()))
            .collect())
    }

    fn read(&self, rel: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
        if Self::in_tmp(rel) {
            return Err(self.not_found(rel));
        }
        if rel == Path::new(STATE_FILE) {
            let Some(state) = self.derived_state()? else { return Err(self.not_found(rel)) };
            return meta::encode(&state).map_err(|source| ReadError::Metadata { path: self.show(rel), source });
        }
        let Some(key) = self.key(rel)? else { return Err(self.not_found(rel)) };
        self.client.get(&key, max).map(|b| b.to_vec()).map_err(self.read_err("get", rel))
    }

    fn open(&self, rel: &Path) -> Result<(Box<dyn Read + Send>, u64), ReadError> {
        if Self::in_tmp(rel) {
            return Err(self.not_found(rel));
        }
        let Some(key) = self.key(rel)? else { return Err(self.not_found(rel)) };
        let (reader, len) = self.client.open(&key).map_err(self.read_err("get", rel))?;
        Ok((Box::new(reader), len))
    }

    fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let Some(key) = self.key(rel)? else { return Err(self.not_found(rel)) };
        if len == 0 {
            return Ok(Vec::new());
        }
        self.client.get_range(&key, offset..offset + len as u64).map(|b| b.to_vec()).map_err(self.read_err("get", rel))
    }

    fn copier_path(&self, rel: &Path) -> PathBuf {
        self.show(rel)
    }

    fn write_metadata(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let rel = dir.join(name);
        let werr = |source: std::io::Error| WriteError::Io { op: "put", path: self.show(&rel), source };
        if dir.as_os_str().is_empty() && name == STATE_FILE {
            // The state is derived: keep this process's in-progress entries, store nothing.
            let state: State = meta::decode(bytes).map_err(|e| werr(std::io::Error::other(e.to_string())))?;
            self.inner().pending = Some(state);
            return Ok(());
        }
        if Self::in_tmp(dir) {
            return Err(werr(std::io::Error::new(
                ErrorKind::Unsupported,
                "a staged element's control files are stored when it is sealed, not written one by one",
            )));
        }
        let key = match self.key(&rel) {
            Ok(Some(k)) => k,
            Ok(None) => return Err(werr(std::io::Error::new(ErrorKind::NotFound, "no such element"))),
            Err(e) => return Err(werr(std::io::Error::other(e.to_string()))),
        };
        self.client.put(&key, Bytes::copy_from_slice(bytes)).map(drop).map_err(|e| werr(io_other(e)))
    }

    fn refuse_links(&self) -> Result<(), SetError> {
        Ok(())
    }

    fn stage(&self, id: Uuid, name: ElementName) -> Result<PathBuf, SetError> {
        self.inner().staged.insert(id, Staged { name, info: None, streamed: HashMap::new() });
        Ok(Path::new(TMP_DIR).join(id.to_string()))
    }

    fn streams_data(&self) -> bool {
        true
    }

    fn stream_data(
        &self,
        staged: &Path,
        files: &[PathBuf],
        ctl: &JobControl,
        copy: &mut dyn FnMut(&dyn ChunkSink) -> Result<JobReport, CopyError>,
    ) -> Result<Result<JobReport, CopyError>, SetError> {
        let (id, keys) = self.staged_keys(staged, files);
        let (copied, stored) = self.storing(&keys, ctl, |tx| copy(&Lend(tx)));
        let stored = stored?;
        let report = match copied {
            Ok(report) => report,
            Err(e) => return Ok(Err(e)),
        };
        self.record_stored(id, &keys, report.files.iter().map(|f| (f.bytes, f.hash)), &stored, "the hot copy")?;
        Ok(Ok(report))
    }

    fn store_data(
        &self,
        staged: &Path,
        files: &[PathBuf],
        ctl: &JobControl,
        produce: &mut super::storage::Produce<'_>,
    ) -> Result<(), SetError> {
        let (id, keys) = self.staged_keys(staged, files);
        let (produced, stored) = self.storing(&keys, ctl, |tx| {
            let produced = produce(&Pieces(tx));
            if produced.is_err() {
                // Stops the store too: a file cut short is never completed (its upload is aborted).
                ctl.cancel();
            }
            produced
        });
        let stored = stored?;
        let sums = produced?;
        self.record_stored(id, &keys, sums, &stored, "the set copy")
    }

    fn seal(&self, staged: &Path, control: &[(&str, Vec<u8>)]) -> Result<(), SetError> {
        let id: Uuid = staged
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("a staged element is tmp/<element id>");
        let Staged { name, streamed, .. } = self.inner().staged.get(&id).cloned().expect("staged by this store");
        let find = |file: &str| control.iter().find(|(n, _)| *n == file).map(|(_, b)| b.as_slice());
        let decode_err = |file: &str, e: backset_format::MetadataError| SetError::Write {
            source: WriteError::Metadata { path: self.show(&staged.join(CONTROL_DIR).join(file)), source: e },
        };
        let manifest: Manifest =
            meta::decode(find(MANIFEST_FILE).expect("a manifest")).map_err(|e| decode_err(MANIFEST_FILE, e))?;
        let info: ElementInfo = meta::decode(find(ELEMENT_INFO_FILE).expect("an element file"))
            .map_err(|e| decode_err(ELEMENT_INFO_FILE, e))?;
        let base = format!("{name}/{id}");
        let mut expected: Vec<(String, u64)> = Vec::new();
        for f in &manifest.files {
            let file = backset_format::layout::data_file_path(f.kind, f.id);
            let key = format!("{base}/{DATA_DIR}/{file}");
            match streamed.get(&key) {
                // Stored from the very buffers the copier hashed: its hash and size must be the manifest's.
                Some(&(bytes, hash)) => {
                    if bytes != f.size || hash != f.hash {
                        return Err(SetError::Conflict {
                            path: PathBuf::from(self.client.url().show(&key)),
                            reason: format!(
                                "stored {bytes} bytes whose BLAKE3 the copier computed as {}, where the manifest \
                                 says {} bytes of {}; nothing was published: run the hot copy again",
                                hex(&hash),
                                f.size,
                                hex(&f.hash)
                            ),
                        });
                    }
                }
                None => {
                    return Err(SetError::Conflict {
                        path: PathBuf::from(self.client.url().show(&key)),
                        reason: "was not stored although the manifest lists it; nothing was published: run the \
                                 copy again"
                            .into(),
                    })
                }
            }
            expected.push((key, f.size));
        }
        crate::hotcopy::fault::pause_before_control(info.kind, id);
        for (file, bytes) in control {
            let key = format!("{base}/{CONTROL_DIR}/{file}");
            self.client.put(&key, Bytes::copy_from_slice(bytes)).map_err(|e| self.set_err(e))?;
            expected.push((key, bytes.len() as u64));
        }
        // Every object there with its size, in one listing.
        let stored: HashMap<String, u64> =
            self.client.list(&base).map_err(|e| self.set_err(e))?.into_iter().map(|o| (o.rel, o.size)).collect();
        for (key, size) in expected {
            match stored.get(&key) {
                Some(s) if *s == size => {}
                found => {
                    return Err(SetError::Conflict {
                        path: PathBuf::from(self.client.url().show(&key)),
                        reason: format!(
                            "stored as {} where {size} bytes were sent; nothing was published: run the hot copy again",
                            found.map_or("missing".to_owned(), |s| format!("{s} bytes"))
                        ),
                    })
                }
            }
        }
        if let Some(s) = self.inner().staged.get_mut(&id) {
            s.info = Some(info);
        }
        Ok(())
    }

    fn publish(&self, staged: &Path, name: ElementName, published: &mut dyn FnMut()) -> Result<(), SetError> {
        let id: Uuid = staged.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("tmp/<id>");
        let (staged_el, pending) = {
            let inner = self.inner();
            (inner.staged.get(&id).cloned().expect("staged by this store"), inner.pending.clone())
        };
        let info = staged_el.info.expect("sealed before it is published");
        let header = pending.expect("the writer wrote the state before it publishes");
        let entry = ElementEntry {
            kind: info.kind,
            sequence: info.sequence,
            element_id: id,
            status: ElementStatus::Completed,
            txn_range: info.txn_range,
            begin_micros: info.begin_micros,
            end_micros: info.end_micros.max(info.begin_micros),
        };
        let record = State { elements: vec![entry], ..header };
        let rel = format!("{name}/{COMMIT_OBJECT}");
        let bytes = meta::encode(&record)
            .map_err(|source| WriteError::Metadata { path: PathBuf::from(self.client.url().show(&rel)), source })?;
        match self.client.put_create(&rel, Bytes::from(bytes)) {
            Ok(_) => {}
            Err(ObjStoreError::AlreadyExists { object }) => {
                return Err(SetError::Conflict {
                    path: PathBuf::from(object),
                    reason: format!(
                        "another hot copy published element {name} first (two hot copies raced for the same element \
                         number; the set holds the other one's element, this one's objects are removed and nothing \
                         of it is trusted): run this hot copy again"
                    ),
                })
            }
            Err(e) => return Err(self.set_err(e)),
        }
        self.inner().published.insert(name, (id, record));
        published();
        self.forget(id);
        Ok(())
    }

    fn unpublish(&self, _staged: &Path, _name: ElementName) {
        // The state is derived from the commit records: recording a publication cannot fail after it.
    }

    fn remove(&self, rel: &Path) -> Result<(), SetError> {
        if rel == Path::new(STATE_FILE) {
            self.inner().pending = None;
            return Ok(());
        }
        if rel == Path::new(TMP_DIR) {
            let staged: Vec<Uuid> = self.inner().staged.keys().copied().collect();
            for id in staged {
                self.remove(&Path::new(TMP_DIR).join(id.to_string()))?;
            }
            return Ok(());
        }
        if let Ok(rest) = rel.strip_prefix(TMP_DIR) {
            let id: Option<Uuid> = rest.to_str().and_then(|s| s.parse().ok());
            let staged = id.and_then(|id| self.forget(id).map(|s| (id, s)));
            if let Some((id, s)) = staged {
                // The job's own objects (never another job's: they are under its own element id).
                self.client.delete_prefix(&format!("{}/{id}", s.name)).map_err(|e| self.set_err(e))?;
            } else if let Some((id, name)) = id.and_then(|id| self.inner().stale.remove(&id).map(|n| (id, n))) {
                // A stale job of a process that no longer runs.
                self.client.delete_prefix(&format!("{name}/{id}")).map_err(|e| self.set_err(e))?;
            }
            return Ok(());
        }
        let first = rel.to_str().unwrap_or_default();
        if let Ok(name) = first.parse::<ElementName>() {
            // A published element taken back (a journal element of a full that failed): the commit record first,
            // so that no reader trusts what follows.
            if let Some((id, _)) = self.commit_of(name).map_err(|source| SetError::Metadata {
                set: self.show(Path::new("")),
                element: Some(name),
                source,
            })? {
                self.client.delete(&format!("{name}/{COMMIT_OBJECT}")).map_err(|e| self.set_err(e))?;
                self.inner().published.remove(&name);
                self.client.delete_prefix(&format!("{name}/{id}")).map_err(|e| self.set_err(e))?;
            }
            return Ok(());
        }
        self.client.delete_tree(first).map(drop).map_err(|e| self.set_err(e))
    }

    fn sync(&self, _rel: &Path) -> Result<(), SetError> {
        // Every put is durable once the store answers it.
        Ok(())
    }

    fn remove_if_empty(&self) -> Result<bool, SetError> {
        // A prefix exists only through its objects.
        Ok(true)
    }
}

/// What stands under the prefix, for the "absent or empty" rule of a full hot copy: `None` when nothing that
/// counts does (no object, or only the unpublished objects of jobs that did not complete), else a description.
pub fn prefix_content(store: &ObjectStore) -> Result<Option<String>, SetError> {
    let (prefixes, objects) = store.top().map_err(|e| store.set_err(e))?;
    let mut foreign: Vec<String> = objects;
    let mut published = 0usize;
    for p in prefixes {
        match p.parse::<ElementName>() {
            Ok(name) => {
                let commit = store.commit_of(name).map_err(|source| SetError::Metadata {
                    set: store.show(Path::new("")),
                    element: Some(name),
                    source,
                })?;
                if commit.is_some() {
                    published += 1;
                }
            }
            Err(_) => foreign.push(format!("{p}/")),
        }
    }
    if published > 0 {
        return Ok(Some(format!("a backup set with {published} published element(s)")));
    }
    if foreign.is_empty() {
        return Ok(None);
    }
    foreign.sort();
    let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
    Ok(Some(format!(
        "{} objects or prefixes that are not a backup set's: {}{}",
        foreign.len(),
        shown.join(", "),
        if foreign.len() > 5 { ", ..." } else { "" }
    )))
}

/// The `s3://bucket/prefix` a set's "directory" names, when it names one: `None` for a local path. The engine takes
/// a set's location as a path everywhere; an object-storage location is that path's text.
pub fn s3_location(dir: &Path) -> Option<Result<S3Url, SetError>> {
    let text = dir.to_str()?;
    match backset_objstore::Location::parse(text) {
        Ok(backset_objstore::Location::S3(url)) => Some(Ok(url)),
        Ok(backset_objstore::Location::Local(_)) => None,
        Err(e) => Some(Err(SetError::ObjectStore { source: e.into() })),
    }
}

/// Whether `rel` is a directory of an element by the set's layout (`<element>`, its `control`, `data`,
/// `data/atoms`, `data/journal`): a prefix on the store, never an object, so [`SetStorage::stat`] lists it without a
/// HEAD first (one request instead of two; and `s3s-fs` answers a HEAD of a prefix with 500).
fn layout_dir(rel: &Path) -> bool {
    let parts: Vec<&OsStr> = rel.iter().collect();
    let element = parts.first().and_then(|p| p.to_str()).is_some_and(|p| p.parse::<ElementName>().is_ok());
    element
        && match parts[1..] {
            [] => true,
            [d] => d == OsStr::new(CONTROL_DIR) || d == OsStr::new(DATA_DIR),
            [d, sub] => d == OsStr::new(DATA_DIR) && (sub == OsStr::new(ATOMS_DIR) || sub == OsStr::new(JOURNAL_DIR)),
            _ => false,
        }
}

fn stores() -> &'static Mutex<HashMap<String, std::sync::Arc<ObjectStore>>> {
    static STORES: std::sync::OnceLock<Mutex<HashMap<String, std::sync::Arc<ObjectStore>>>> =
        std::sync::OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// The settings given to this process explicitly (`serve --config`'s `[s3]` table), set once at its start.
static GIVEN: std::sync::OnceLock<backset_objstore::S3Overrides> = std::sync::OnceLock::new();

/// Gives this process's object-storage settings (`serve --config`'s `[s3]` table): each wins over the environment
/// variables of the same meaning for every store opened afterwards ([`backset_objstore::S3Config::from_env_with`]).
/// Once per process, before the first store is opened; a second call is refused (`false`).
pub fn configure(given: backset_objstore::S3Overrides) -> bool {
    GIVEN.set(given).is_ok()
}

/// The process's one [`ObjectStore`] for `url` on the endpoint configured (the standard `AWS_*` variables,
/// `AWS_ENDPOINT_URL`, under what [`configure`] gave): one per set and endpoint while anything holds it, so that
/// the writer's in-progress entries are seen by every job of this process, as a local set's `state` is. The stores
/// nothing holds any more (no job, no open set) are dropped here, with their client's runtime threads and
/// connections: a `serve` that writes to a new URL every night keeps only the stores its running jobs use.
pub fn object_store(url: &S3Url) -> Result<std::sync::Arc<ObjectStore>, SetError> {
    let config = match GIVEN.get() {
        Some(given) => backset_objstore::S3Config::from_env_with(given),
        None => backset_objstore::S3Config::from_env(),
    }
    .map_err(|source| SetError::ObjectStore { source })?;
    let endpoint = config.checked_endpoint().map_err(|source| SetError::ObjectStore { source })?;
    let key = format!("{} {url}", endpoint.unwrap_or_default());
    let mut stores = stores().lock().unwrap_or_else(|p| p.into_inner());
    stores.retain(|k, s| *k == key || std::sync::Arc::strong_count(s) > 1);
    if let Some(s) = stores.get(&key) {
        return Ok(std::sync::Arc::clone(s));
    }
    let client = ObjectClient::new(url.clone(), &config).map_err(|source| SetError::ObjectStore { source })?;
    let store = std::sync::Arc::new(ObjectStore::new(client));
    stores.insert(key, std::sync::Arc::clone(&store));
    Ok(store)
}

/// The storage of the set at `dir`: a local directory, or the object store its `s3://` text names.
pub fn storage_for(dir: &Path) -> Result<std::sync::Arc<dyn SetStorage>, SetError> {
    match s3_location(dir) {
        None => Ok(std::sync::Arc::new(super::storage::LocalDir::new(dir))),
        Some(url) => Ok(object_store(&url?)?),
    }
}

/// Checks that the bucket is there and the credentials are accepted, before a job writes anything: one listing of
/// the prefix.
pub fn probe(store: &ObjectStore) -> Result<(), SetError> {
    store.client.list_dir("").map(drop).map_err(|source| SetError::ObjectStore { source })
}

/// How old the newest object of an unpublished job must be before [`gc`] removes the job's objects, unless told
/// otherwise: 1 hour. A running job uploads continuously while it seals its element and publishes right after, so
/// its objects are never that old; a job killed outright stops writing.
pub const GC_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Test-only: `BACKSET_TEST_CLEAN_MIN_AGE_MS` replaces [`GC_MIN_AGE`] as the age past which a hot copy's clean-up
/// takes another process's unpublished job for dead (so a test need not wait an hour). Never set it outside tests.
pub const CLEAN_MIN_AGE_ENV: &str = "BACKSET_TEST_CLEAN_MIN_AGE_MS";

/// How old another process's unpublished job must be before a hot copy's clean-up removes it: [`GC_MIN_AGE`].
fn clean_min_age() -> std::time::Duration {
    std::env::var(CLEAN_MIN_AGE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GC_MIN_AGE, std::time::Duration::from_millis)
}

/// What [`gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The unpublished jobs removed (`<element>/<element id>`), and how many objects each had.
    pub removed: Vec<(String, usize)>,
    /// The unpublished jobs kept because an object of theirs is younger than the minimum age (they may be running).
    pub kept: Vec<String>,
    /// Published elements (never touched).
    pub published: usize,
}

/// `backset set gc`: removes the objects of the set at `url` that no commit record names (jobs that failed, were
/// killed, or lost a race) once the newest of each job's objects is at least `min_age` old; never a published
/// element's, never those of a job that may still be writing.
pub fn gc(url: &S3Url, min_age: std::time::Duration) -> Result<GcReport, SetError> {
    let store = object_store(url)?;
    probe(&store)?;
    let err = |source| SetError::ObjectStore { source };
    let mut report = GcReport::default();
    let (prefixes, _) = store.top().map_err(err)?;
    for p in prefixes {
        if let Ok(name) = p.parse::<ElementName>() {
            if store
                .commit_of(name)
                .map_err(|source| SetError::Metadata { set: store.show(Path::new("")), element: Some(name), source })?
                .is_some()
            {
                report.published += 1;
            }
        }
    }
    let now = std::time::SystemTime::now();
    for (name, id, count, newest) in store.unpublished()? {
        let job = format!("{name}/{id}");
        if now.duration_since(newest).unwrap_or_default() < min_age {
            report.kept.push(job);
            continue;
        }
        store.client.delete_prefix(&job).map_err(err)?;
        tracing::info!(set = %url, job = %job, objects = count, "removed the objects of an unpublished hot copy");
        report.removed.push((job, count));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::layout_dir;
    use std::path::Path;

    #[test]
    fn the_directories_of_an_element_are_layout_dirs_and_its_files_and_other_paths_are_not() {
        for dir in ["full", "3.inc", "12.jnl", "full/control", "full/data", "2.inc/data/atoms", "4.jnl/data/journal"] {
            assert!(layout_dir(Path::new(dir)), "{dir}");
        }
        for other in [
            "",
            "tmp",
            "state",
            "verified",
            "full/commit",
            "full/control/manifest",
            "full/data/atoms/0000000100000001",
            "full/data/journal/000000000000001",
            "full/atoms",
            "notanelement",
            "notanelement/data",
        ] {
            assert!(!layout_dir(Path::new(other)), "{other}");
        }
    }
}
