//! The store's configuration, and the database metadata file that fixes its permanent part.
//!
//! `<root>/backset-db` holds what is fixed when a database is created: its name and id, the number of SMs, the atom
//! buckets per storage group and the storage group map. Layout: the 8-byte magic `\x89BKD\r\n\x1a\n`, the postcard
//! body ([`DbMeta`]), then the 32-byte BLAKE3 of the body. It is written atomically
//! (`backset_format::fsio::write_file_atomic`). The archives themselves (`<root>/<archive id>/atoms`, `/journal`)
//! are exactly FORMAT.md's archive layout and do not depend on this file for their content.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backset_format::limits::{MAX_NAME_BYTES, MAX_STORAGE_GROUPS};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::limits::{
    default_atom_buckets, DEFAULT_ATOM_BUCKETS, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_SEGMENT_BYTES, MAX_ARCHIVE_ATOMS,
    MAX_ATOM_BUCKETS, MAX_CONFIG_SEGMENT_BYTES, MAX_DB_META_BYTES, MAX_SMS, MIN_SEGMENT_BYTES,
};

/// File name of the database metadata file in the store's root.
pub const DB_META_FILE: &str = "backset-db";
const DB_META_MAGIC: [u8; 8] = *b"\x89BKD\r\n\x1a\n";
const DB_META_VERSION: u32 = 1;

/// One storage group: an id, a name and the archives (SMs) that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageGroup {
    /// Group id (any u32, unique in the database).
    pub id: u32,
    /// Group name (1..=255 bytes, no NUL or `/`).
    pub name: String,
    /// Archive ids of the SMs that serve it (each holds a full copy of the group's data); at least one.
    pub archives: Vec<u64>,
}

/// How to open (or create) a database. Fields marked *fixed* are stored at creation and must match on every later
/// open; the others may change from one open to the next.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database name (*fixed*).
    pub name: String,
    /// Database id (*fixed*): `None` takes the stored id, or a new random one at creation.
    pub database_id: Option<Uuid>,
    /// Number of SMs, archive ids `0..sms` (*fixed*).
    pub sms: usize,
    /// Atoms (hash buckets) per storage group, 1..=`MAX_ATOM_BUCKETS` (*fixed*): `None` takes the stored count, or
    /// at creation `limits::default_atom_buckets` (`DEFAULT_ATOM_BUCKETS` unless one archive serves many storage
    /// groups). At creation the archive serving the most groups may have at most `MAX_ARCHIVE_ATOMS` atoms.
    pub atom_buckets: Option<u32>,
    /// Storage groups (*fixed*); `None`: every SM holds all data and journals every commit.
    pub storage_groups: Option<Vec<StorageGroup>>,
    /// Journal segment rollover size, `MIN_SEGMENT_BYTES..=MAX_CONFIG_SEGMENT_BYTES`.
    pub segment_bytes: u64,
    /// Interval of the background checkpointer; `None`: checkpoints only on `checkpoint_now` and `close`.
    pub checkpoint_interval: Option<Duration>,
    /// `journal-hot-copy enable`: retain journal segments until a journal hot copy has copied them.
    pub journal_hot_copy: bool,
    /// The same per SM, in archive id order, overriding `journal_hot_copy` (one entry per SM); `None`: every SM
    /// uses `journal_hot_copy`.
    pub journal_hot_copy_per_sm: Option<Vec<bool>>,
}

impl Config {
    /// Defaults for database `name`: one SM, no storage groups, the stored atom buckets (`DEFAULT_ATOM_BUCKETS` for
    /// a new database), `DEFAULT_SEGMENT_BYTES`,
    /// checkpoints every `DEFAULT_CHECKPOINT_INTERVAL`, journal hot copy disabled (NuoDB's default).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            database_id: None,
            sms: 1,
            atom_buckets: None,
            storage_groups: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            checkpoint_interval: Some(DEFAULT_CHECKPOINT_INTERVAL),
            journal_hot_copy: false,
            journal_hot_copy_per_sm: None,
        }
    }

    /// Whether SM `archive_id` retains its journal for journal hot copies.
    pub fn journal_hot_copy_of(&self, archive_id: usize) -> bool {
        self.journal_hot_copy_per_sm.as_ref().and_then(|v| v.get(archive_id).copied()).unwrap_or(self.journal_hot_copy)
    }

    /// Storage groups served by the archive that serves the most (1 without storage groups).
    pub fn groups_per_archive(&self) -> u64 {
        match &self.storage_groups {
            None => 1,
            Some(groups) => {
                let mut served = vec![0u64; self.sms];
                for &a in groups.iter().flat_map(|g| &g.archives) {
                    if let Some(n) = served.get_mut(a as usize) {
                        *n += 1;
                    }
                }
                served.into_iter().max().unwrap_or(1).max(1)
            }
        }
    }

    /// The atom buckets a database created with this configuration gets.
    pub fn atom_buckets_at_creation(&self) -> u32 {
        self.atom_buckets.unwrap_or_else(|| default_atom_buckets(self.groups_per_archive()))
    }

    /// Checks every setting against its limit.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: String| Err(StoreError::Config { reason });
        check_name("database name", &self.name)?;
        if let Some(v) = self.journal_hot_copy_per_sm.as_ref().filter(|v| v.len() != self.sms) {
            return bad(format!(
                "journal_hot_copy_per_sm has {} entries for {} SMs: give one per SM",
                v.len(),
                self.sms
            ));
        }
        if self.sms == 0 || self.sms > MAX_SMS {
            return bad(format!("sms = {}, must be 1..={MAX_SMS}", self.sms));
        }
        if let Some(n) = self.atom_buckets.filter(|n| !(1..=MAX_ATOM_BUCKETS).contains(n)) {
            return bad(format!(
                "atom_buckets = {n}, must be 1..={MAX_ATOM_BUCKETS} (atoms per storage group; the default is \
                 {DEFAULT_ATOM_BUCKETS})"
            ));
        }
        if !(MIN_SEGMENT_BYTES..=MAX_CONFIG_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes = {}, must be {MIN_SEGMENT_BYTES}..={MAX_CONFIG_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.checkpoint_interval == Some(Duration::ZERO) {
            return bad("checkpoint_interval is zero; use None to disable the background checkpointer".into());
        }
        if let Some(groups) = &self.storage_groups {
            if groups.is_empty() || groups.len() > MAX_STORAGE_GROUPS {
                return bad(format!("{} storage groups, must be 1..={MAX_STORAGE_GROUPS}", groups.len()));
            }
            let mut served = vec![false; self.sms];
            for (i, g) in groups.iter().enumerate() {
                check_name("storage group name", &g.name)?;
                if i > 0 && groups[i - 1].id >= g.id {
                    return bad(format!(
                        "storage group ids must strictly increase: {} then {}",
                        groups[i - 1].id,
                        g.id
                    ));
                }
                if g.archives.is_empty() {
                    return bad(format!("storage group {} ({}) is served by no archive", g.id, g.name));
                }
                for (j, &a) in g.archives.iter().enumerate() {
                    if a >= self.sms as u64 {
                        return bad(format!("storage group {} names archive {a}, but sms = {}", g.id, self.sms));
                    }
                    if g.archives[..j].contains(&a) {
                        return bad(format!("storage group {} names archive {a} twice", g.id));
                    }
                    served[a as usize] = true;
                }
            }
            if let Some(idle) = served.iter().position(|s| !s) {
                return bad(format!("archive {idle} serves no storage group; give it one or lower sms"));
            }
        }
        Ok(())
    }
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains(['\0', '/']) {
        return Err(StoreError::Config {
            reason: format!("{what} {name:?} must be 1..={MAX_NAME_BYTES} bytes without NUL or '/'"),
        });
    }
    Ok(())
}

/// The permanent part of a database's configuration, as stored in `<root>/backset-db`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbMeta {
    /// Version of this file's body (1).
    pub version: u32,
    /// Database name.
    pub name: String,
    /// Database id.
    pub database_id: Uuid,
    /// Number of SMs.
    pub sms: u64,
    /// Atoms (hash buckets) per storage group, as chosen at creation.
    pub atom_buckets: u32,
    /// Storage groups, if any.
    pub storage_groups: Option<Vec<StorageGroup>>,
}

impl DbMeta {
    /// The metadata of a new database made with `config` (a new random id unless the config gives one). Refuses
    /// atom buckets that would give an archive more than `MAX_ARCHIVE_ATOMS` atoms (a limit of new databases only:
    /// one created before it opens as it is).
    pub fn from_config(config: &Config) -> Result<Self, StoreError> {
        let atom_buckets = config.atom_buckets_at_creation();
        let groups = config.groups_per_archive();
        let atoms = u64::from(atom_buckets) * groups;
        if atoms > MAX_ARCHIVE_ATOMS {
            return Err(StoreError::Config {
                reason: format!(
                    "atom_buckets = {atom_buckets} per storage group, times {groups} storage groups on one archive, \
                     gives {atoms} atoms, more than the limit of {MAX_ARCHIVE_ATOMS} atoms per archive; give at most \
                     {} atom buckets",
                    MAX_ARCHIVE_ATOMS / groups
                ),
            });
        }
        Ok(Self {
            version: DB_META_VERSION,
            name: config.name.clone(),
            database_id: config.database_id.unwrap_or_else(Uuid::new_v4),
            sms: config.sms as u64,
            atom_buckets,
            storage_groups: config.storage_groups.clone(),
        })
    }

    /// Checks that `config` asks for this database.
    pub fn check(&self, path: &Path, config: &Config) -> Result<(), StoreError> {
        let mismatch = |field, on_disk: String, requested: String| {
            Err(StoreError::Mismatch { path: path.to_path_buf(), field, on_disk, requested })
        };
        if self.name != config.name {
            return mismatch("name", self.name.clone(), config.name.clone());
        }
        if let Some(id) = config.database_id.filter(|&id| id != self.database_id) {
            return mismatch("database_id", self.database_id.to_string(), id.to_string());
        }
        if self.sms != config.sms as u64 {
            return mismatch("sms", self.sms.to_string(), config.sms.to_string());
        }
        if let Some(n) = config.atom_buckets.filter(|&n| n != self.atom_buckets) {
            return mismatch("atom_buckets", self.atom_buckets.to_string(), n.to_string());
        }
        if self.storage_groups != config.storage_groups {
            return mismatch(
                "storage_groups",
                format!("{:?}", self.storage_groups),
                format!("{:?}", config.storage_groups),
            );
        }
        Ok(())
    }

    /// Writes `<root>/backset-db` atomically and durably.
    pub fn write(&self, root: &Path) -> Result<(), StoreError> {
        let body = postcard::to_allocvec(self).map_err(|e| StoreError::Config { reason: e.to_string() })?;
        let mut bytes = Vec::with_capacity(8 + body.len() + 32);
        bytes.extend_from_slice(&DB_META_MAGIC);
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(blake3::hash(&body).as_bytes());
        backset_format::fsio::write_file_atomic(root, DB_META_FILE, &bytes).map_err(|e| match e {
            backset_format::WriteError::Io { op, path, source } => StoreError::Io { op, path, source },
            other => StoreError::Damaged { path: root.join(DB_META_FILE), reason: other.to_string() },
        })
    }

    /// Reads `<root>/backset-db`; `Ok(None)` when it does not exist.
    pub fn read(root: &Path) -> Result<Option<Self>, StoreError> {
        let path = root.join(DB_META_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { op: "open", path, source: e }),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DB_META_BYTES + 1).read_to_end(&mut bytes).map_err(StoreError::io("read", &path))?;
        let damaged = |reason: String| StoreError::Damaged {
            path: path.clone(),
            reason: format!("{reason}; the database metadata file is damaged, restore it from a copy"),
        };
        if bytes.len() as u64 > MAX_DB_META_BYTES {
            return Err(damaged(format!("larger than the limit of {MAX_DB_META_BYTES} bytes")));
        }
        if bytes.len() < 8 + 32 || bytes[..8] != DB_META_MAGIC {
            return Err(damaged("not a Backset database metadata file (bad magic or too short)".into()));
        }
        let (body, hash) = bytes[8..].split_at(bytes.len() - 8 - 32);
        if blake3::hash(body).as_bytes() != hash {
            return Err(damaged("checksum mismatch".into()));
        }
        let meta: Self = postcard::from_bytes(body).map_err(|e| damaged(format!("body does not decode: {e}")))?;
        if meta.version != DB_META_VERSION {
            return Err(StoreError::Damaged {
                path,
                reason: format!(
                    "database metadata version {} is not supported (this build reads {DB_META_VERSION}); use a newer \
                     backset",
                    meta.version
                ),
            });
        }
        Ok(Some(meta))
    }
}

/// `<root>/<archive id>`: the archive directory of one SM.
pub fn archive_dir(root: &Path, archive_id: u64) -> PathBuf {
    root.join(archive_id.to_string())
}
