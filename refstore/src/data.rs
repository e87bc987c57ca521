//! One SM's atoms in memory: loaded lazily from atom files, changed by applying journaled operations, written back
//! by the checkpointer.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::fsio::{open_regular, read_regular};
use backset_format::layout::atom_file_name;
use backset_format::limits::MAX_ATOM_BODY_BYTES;
use backset_format::{decode_atom, AtomHeader, ReadError};

use crate::codec::{self, varint_len, Op};
use crate::error::StoreError;

/// An atom's key/value pairs, sorted by key.
pub(crate) type Pairs = BTreeMap<Vec<u8>, Vec<u8>>;

/// One atom in memory.
#[derive(Debug)]
pub(crate) struct AtomSlot {
    /// Last transaction applied (as in memory; the file's may be older while the atom is dirty).
    pub lsn: u64,
    /// The key/value pairs, or `None` while not loaded (the atom file holds them).
    pub map: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Bytes of the encoded pairs (without the count), valid while loaded.
    entries_len: u64,
    /// Body length from the file header, valid while not loaded.
    file_body_len: u64,
    /// The atom file on disk as this store last wrote or found it: `(LSN, bytes)`, `None` when it has no file. What
    /// the hot copy's listing reports without touching the file (`Archive::atoms`).
    pub file: Option<(u64, u64)>,
}

impl AtomSlot {
    /// An atom known from its file header only.
    pub fn unloaded(lsn: u64, file_body_len: u64) -> Self {
        let file = Some((lsn, ATOM_HEADER_BYTES as u64 + file_body_len));
        Self { lsn, map: None, entries_len: 0, file_body_len, file }
    }

    fn empty() -> Self {
        Self { lsn: 0, map: Some(BTreeMap::new()), entries_len: 0, file_body_len: 0, file: None }
    }

    /// Exact length of the atom's encoded body.
    pub fn body_len(&self) -> u64 {
        match &self.map {
            Some(m) => varint_len(m.len() as u64) + self.entries_len,
            None => self.file_body_len,
        }
    }

    /// Whether the atom holds no key (only meaningful while loaded; an unloaded atom has a file, so a key).
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.is_empty())
    }

    /// The encoded body (the atom must be loaded).
    pub fn encode_body(&self) -> Vec<u8> {
        let map = self.map.as_ref().expect("encode_body on an unloaded atom");
        let mut out = Vec::with_capacity(self.body_len() as usize);
        codec::encode_body(map.len(), map.iter().map(|(k, v)| (&k[..], &v[..])), &mut out);
        out
    }
}

/// The atoms of one SM, and what the checkpointer needs to know about them.
#[derive(Debug)]
pub(crate) struct Data {
    /// `<archive>/atoms`.
    pub atoms_dir: PathBuf,
    /// Every atom that has a file or holds a key in memory.
    pub atoms: BTreeMap<u64, AtomSlot>,
    /// Atoms changed since their file was last written: atom id -> first transaction applied since.
    pub dirty: BTreeMap<u64, u64>,
    /// Atoms a running checkpoint is writing: atom id -> first transaction it covers that no file held before.
    pub checkpointing: BTreeMap<u64, u64>,
    /// Highest transaction applied to this SM (or the highest atom LSN after recovery).
    pub applied_upto: u64,
}

impl Data {
    /// No atoms yet.
    pub fn new(atoms_dir: PathBuf) -> Self {
        Self {
            atoms_dir,
            atoms: BTreeMap::new(),
            dirty: BTreeMap::new(),
            checkpointing: BTreeMap::new(),
            applied_upto: 0,
        }
    }

    /// R: the oldest transaction whose changes are not all in atom files.
    pub fn recovery_start(&self) -> u64 {
        self.dirty.values().chain(self.checkpointing.values()).copied().min().unwrap_or(self.applied_upto + 1)
    }

    /// Loads atom `atom_id` from its file if it is not in memory yet.
    fn load(&mut self, atom_id: u64) -> Result<&mut AtomSlot, StoreError> {
        let path = self.atoms_dir.join(atom_file_name(atom_id));
        let slot = self.atoms.get_mut(&atom_id).expect("load of an unknown atom");
        if slot.map.is_none() {
            let (header, map) = read_atom_file(&path, atom_id)?;
            if header.lsn != slot.lsn {
                return Err(StoreError::Damaged {
                    path,
                    reason: format!(
                        "atom file's LSN changed from {} to {} while the store was running; another process writes \
                         this archive, stop it",
                        slot.lsn, header.lsn
                    ),
                });
            }
            slot.entries_len = header.body_len - varint_len(map.len() as u64);
            slot.map = Some(map);
        }
        Ok(slot)
    }

    /// The value of `key` in atom `atom_id`.
    pub fn get(&mut self, atom_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.atoms.contains_key(&atom_id) {
            return Ok(None);
        }
        let slot = self.load(atom_id)?;
        Ok(slot.map.as_ref().and_then(|m| m.get(key).cloned()))
    }

    /// The pairs of atom `atom_id`, read from its file without caching them when it is not loaded (so a scan of a
    /// large archive holds one atom at a time).
    pub fn pairs(&self, atom_id: u64) -> Result<Pairs, StoreError> {
        match self.atoms.get(&atom_id) {
            None => Ok(Pairs::new()),
            Some(AtomSlot { map: Some(m), .. }) => Ok(m.clone()),
            Some(_) => {
                let (_, map) = read_atom_file(&self.atoms_dir.join(atom_file_name(atom_id)), atom_id)?;
                Ok(map)
            }
        }
    }

    /// Applies the operations of transaction `txn` to every atom whose LSN is below `txn` (so replaying a record
    /// twice changes nothing). Returns how many operations were applied.
    pub fn apply(&mut self, txn: u64, ops: &[Op]) -> Result<usize, StoreError> {
        // Decide per atom before changing any: a transaction may hold several operations on one atom, and the first
        // one applied raises the atom's LSN to `txn`.
        let mut stale: Vec<u64> = Vec::new();
        for op in ops {
            let slot = self.atoms.entry(op.atom_id).or_insert_with(AtomSlot::empty);
            if txn <= slot.lsn {
                stale.push(op.atom_id);
            }
        }
        let mut applied = 0;
        for op in ops {
            if stale.contains(&op.atom_id) {
                continue;
            }
            let slot = self.load(op.atom_id)?;
            let map = slot.map.as_mut().expect("loaded");
            let old = match &op.value {
                Some(v) => {
                    slot.entries_len += codec::entry_len(&op.key, v);
                    map.insert(op.key.clone(), v.clone())
                }
                None => map.remove(&op.key),
            };
            if let Some(old) = old {
                slot.entries_len -= codec::entry_len(&op.key, &old);
            }
            slot.lsn = txn;
            self.dirty.entry(op.atom_id).or_insert(txn);
            applied += 1;
        }
        self.applied_upto = self.applied_upto.max(txn);
        Ok(applied)
    }
}

/// Reads the header of the atom file at `path`; `None` when the file does not exist (any more). The file must be a
/// regular file (see [`open_regular`]).
pub(crate) fn read_atom_header(path: &Path) -> Result<Option<AtomHeader>, StoreError> {
    let mut f = match open_regular(path) {
        Ok((f, _)) => f,
        Err(ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut b = [0u8; ATOM_HEADER_BYTES];
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..]).map_err(StoreError::io("read", path))? {
            0 => break,
            k => n += k,
        }
    }
    AtomHeader::parse(&b[..n]).map(Some).map_err(|source| StoreError::Atom { path: path.to_path_buf(), source })
}

/// Reads, verifies and decodes a whole atom file; checks that it is atom `atom_id`. A file longer than the largest
/// atom file is refused before it is read.
pub(crate) fn read_atom_file(path: &Path, atom_id: u64) -> Result<(AtomHeader, Pairs), StoreError> {
    let bytes = read_regular(path, ATOM_HEADER_BYTES as u64 + MAX_ATOM_BODY_BYTES)?;
    let (header, body) = decode_atom(&bytes).map_err(|source| StoreError::Atom { path: path.to_path_buf(), source })?;
    if header.atom_id != atom_id {
        return Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason: format!(
                "the file holds atom {:#x} but is named for atom {atom_id:#x}; it was renamed, restore it from a copy",
                header.atom_id
            ),
        });
    }
    let map = codec::decode_body(body).map_err(|reason| StoreError::Damaged {
        path: path.to_path_buf(),
        reason: format!("atom body does not decode as a key/value list: {reason}; the atom file was not written by the reference store"),
    })?;
    Ok((header, map))
}
