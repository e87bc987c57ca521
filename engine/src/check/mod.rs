//! Validate a backup set offline ([`check_set`]), or an archive directory ([`check_archive`]).
//!
//! A check never stops at the first defect: it reports every one it finds, each with its element and file, and
//! the transactions that can still be restored. What [`check_set`] verifies:
//! - the `state` and every completed element's `control/element`, `control/manifest` and `control/catalog` decode
//!   (envelope, hash, limits, format rules) and agree: ids, types, sequence numbers, transaction ranges;
//! - the chain: one full first; each incremental's parent is the previous full or incremental and its end point is
//!   not before it; each journal element's parent is the previous journal element (or the full) and the journal
//!   chain is contiguous from the full's recovery start; every element the state lists as completed is there;
//! - catalogs: each copied atom's catalog entry is present with the manifest's hash; each present atom is held by
//!   the element or an earlier full or incremental with that hash; catalogs are cumulative (every atom present in
//!   the previous catalog is listed, present or dropped) and drop only atoms that were present; no LSN beyond the
//!   element's end point; journal elements hold journal slices only and an empty catalog;
//! - the top of the set and each element directory hold only what the format defines (`tmp/` contents and
//!   elements still in progress are notes, not defects);
//! - unless `metadata_only`: every element's `data/` is there, holds exactly the manifest's files (missing, extra,
//!   links and special files are defects), each of the manifest's size, BLAKE3 and 1 MiB chunk hashes (atom files
//!   read through the copier's read-only requests; journal slices read once each, buffered, on
//!   [`CHECK_JOURNAL_THREADS`](crate::limits::CHECK_JOURNAL_THREADS) threads beside them, each chunk verified
//!   before its records are framed); every atom file's header parses, names its atom, has the catalog's LSN (at
//!   most the element's end point) and the file's length; every journal slice's framing: a segment header naming
//!   its segment, the set's database and archive when the slice starts the segment, records that parse, with
//!   increasing transaction ids within the element's range, and no torn tail.
//!
//! `check --new` ([`Select::New`]) and `check --since` ([`Select::OlderThan`]) read the data of only the elements
//! the set's verification record ([`crate::set::verified`]) does not show as verified without defect (recently
//! enough), and everything else above for the whole set: the elements skipped count as they were last verified.
//! Records shared between elements are compared among the elements read. With [`CheckOptions::record`], each
//! element read is recorded with its result.
//!
//! The metadata-only mode reads the state and `control/` only (never `data/`): it answers which transactions can
//! be restored, in a time bounded by the size of the control files.
//!
//! One module per pass, in the order [`check_set`] runs them: `layout` (names), `catalog` (catalogs against
//! manifests), `data` (each `data/` against its manifest), `atoms` and `journal` (the files read and verified);
//! `report` holds what they report, `archive` checks an archive directory instead of a set.

mod archive;
mod atoms;
mod catalog;
mod data;
mod journal;
mod layout;
mod report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backset_copier::JobControl;
use backset_format::{ElementStatus, Verification, Verified, VerifyResult};

pub use archive::{check_archive, check_archive_with_journal, ArchiveCheckReport, TornTail};

use crate::limits::CHECK_POOL_BYTES;
pub use crate::set::verified::RecordError;
use crate::set::verified::{read_verified, record_verified};
use crate::set::{BackupSet, SetError};
use catalog::{atoms_ok, check_catalogs};
use data::check_data;
use layout::scan_layout;
use report::{set_error_defect, UNREADABLE};
pub use report::{CheckError, CheckReport, Defect, DefectKind};

/// Which elements' data a check reads (the metadata and chain of the whole set are always checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select {
    /// Every element (a full check).
    #[default]
    All,
    /// Only the elements the set's verification record does not show as verified without defect (`check --new`).
    New,
    /// The elements not verified without defect within this long before the check (`check --since`); `0s` is every
    /// element.
    OlderThan(Duration),
}

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Read the state and `control/` only, never `data/`.
    pub metadata_only: bool,
    /// Which elements' data to read ([`Select::All`] unless `metadata_only`). Any other choice reads the set's
    /// verification record ([`crate::set::verified`]); when it cannot be used, every element is read and a note says
    /// why.
    pub select: Select,
    /// Record what was verified in the set's verification record (written through the storage seam; a set that
    /// cannot be written is still checked, and a note says the record was not written).
    pub record: bool,
    /// Progress and cancel of the data reads (the copier's read-only jobs). `None`: a private control.
    pub control: Option<Arc<JobControl>>,
    /// The copier's options (backend, pool size, direct I/O) for the atom files; by default a pool of
    /// [`CHECK_POOL_BYTES`]. Hashing is always on.
    pub copier: backset_copier::Options,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            metadata_only: false,
            select: Select::All,
            record: false,
            control: None,
            copier: backset_copier::Options { pool_bytes: CHECK_POOL_BYTES, ..backset_copier::Options::default() },
        }
    }
}

/// Checks the backup set in `dir`. See the [module docs](self) for what is verified. Returns `Err` only when the
/// check cannot run (no such directory, the copier cannot start, cancelled); every defect of the set is in the
/// report.
pub fn check_set(dir: impl AsRef<Path>, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let dir = dir.as_ref().to_path_buf();
    let on_store = crate::set::object::s3_location(&dir).is_some();
    if !on_store {
        let what = crate::found::found(&dir);
        if what != crate::found::Found::BackupSet {
            return Err(CheckError::NotASet { reason: what.not_a_set(&dir), path: dir });
        }
    }
    let mut r = CheckReport {
        set_dir: dir.clone(),
        defects: Vec::new(),
        summarized_beyond: 0,
        notes: Vec::new(),
        restorable: Vec::new(),
        metadata_only: opts.metadata_only,
        elements: 0,
        verified_before: 0,
        files_read: 0,
        bytes_read: 0,
        elapsed: Duration::ZERO,
    };
    let mut set = match BackupSet::load(&dir) {
        Ok(set) => set,
        // On object storage, a prefix without a set or a store that cannot be read is no defect of a set.
        Err(SetError::NotASet { path, reason }) if on_store => return Err(CheckError::NotASet { path, reason }),
        Err(source @ SetError::ObjectStore { .. }) if on_store => {
            return Err(CheckError::Store { path: dir, source: Box::new(source) })
        }
        Err(e) => {
            r.defects.push(set_error_defect(&e));
            r.elapsed = started.elapsed();
            return Ok(r);
        }
    };
    r.elements = set.state().elements.iter().filter(|e| e.status == ElementStatus::Completed).count();
    let problems = set.take_problems();
    let structural_ok = problems.is_empty();
    r.defects.extend(problems.iter().map(set_error_defect));
    if r.elements == 0 {
        r.notes.push("the set has no completed element yet: nothing can be restored".into());
    } else if set.full().is_none() && structural_ok {
        r.defect(
            None,
            None,
            DefectKind::Chain,
            "the set has no completed full element: nothing can be restored".into(),
        );
    }
    scan_layout(&set, &mut r);
    let bases = check_catalogs(&set, &mut r);
    if opts.metadata_only {
        let none = vec![false; set.elements().len()];
        if structural_ok {
            r.restorable = set.restorable_with(&atoms_ok(&bases, &none), &|_| true);
        }
        r.elapsed = started.elapsed();
        return Ok(r);
    }
    let now = SystemTime::now();
    let record = if opts.select != Select::All || opts.record {
        match read_verified(set.storage(), set.state()) {
            Ok(record) => record,
            Err(e) => {
                r.notes.push(e.to_string());
                None
            }
        }
    } else {
        None
    };
    let read: Vec<bool> =
        set.elements().iter().map(|e| !verified_before(record.as_ref(), e.id(), opts.select, now)).collect();
    r.verified_before = read.iter().filter(|read| !**read).count();
    let damaged = check_data(&set, &bases, opts, &read, &mut r)?;
    if structural_ok {
        r.restorable = set.restorable_with(&atoms_ok(&bases, &damaged), &|i| !damaged[i]);
    }
    if opts.record {
        write_record(&set, &read, &damaged, now, &mut r);
    }
    r.elapsed = started.elapsed();
    Ok(r)
}

/// Whether the record shows the element `id` verified without defect recently enough for `select` to skip it.
fn verified_before(record: Option<&Verification>, id: uuid::Uuid, select: Select, now: SystemTime) -> bool {
    let Some(v) = record.and_then(|r| r.get(id)) else { return false };
    if v.result != VerifyResult::Passed {
        return false;
    }
    match select {
        Select::All => false,
        Select::New => true,
        Select::OlderThan(age) => {
            let at = UNIX_EPOCH + Duration::from_micros(v.verified_micros);
            now.duration_since(at).is_ok_and(|since| since < age)
        }
    }
}

/// Records each element read in the set's verification record, with the defects found in it.
fn write_record(set: &BackupSet, read: &[bool], damaged: &[bool], now: SystemTime, r: &mut CheckReport) {
    let micros = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let entries: Vec<Verified> = set
        .elements()
        .iter()
        .enumerate()
        .filter(|(i, _)| read[*i])
        .map(|(i, e)| {
            let defects = r.defects.iter().filter(|d| d.element == Some(e.name())).count() as u64;
            let defects = if damaged[i] { defects.max(1) } else { defects };
            let result = if defects == 0 { VerifyResult::Passed } else { VerifyResult::Failed { defects } };
            let data_bytes = e.manifest.files.iter().map(|f| f.size).sum();
            Verified { element_id: e.id(), verified_micros: micros, data_bytes, result }
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    if let Err(e) = record_verified(set.storage(), set.state(), &entries) {
        r.notes.push(format!(
            "the verification record was not written ({e}): the set was checked all the same, but a later `check \
             --new` verifies these elements again"
        ));
    }
}
