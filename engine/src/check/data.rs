//! The data pass: every element's `data/` listed against its manifest, the files to read handed to the atom and
//! journal passes, and the elements [`BackupSet::load`] left out verified as far as their files allow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backset_copier::JobControl;
use backset_format::dirfd::EntryKind;
use backset_format::layout::{parse_id_name, ATOMS_DIR, DATA_DIR, JOURNAL_DIR};
use backset_format::{ElementName, FileEntry, FileKind};

use super::archive::{check_atom, check_slice_alone, io_defect_kind, io_what};
use super::atoms::check_atoms;
use super::catalog::BaseInfo;
use super::journal::{check_journals, slice_error_defect};
use super::report::{Capped, CheckError, CheckReport, DefectKind};
use super::CheckOptions;
use crate::set::data::{for_each_record, size_mismatch, SliceError};
use crate::set::storage::{SetStorage, Stat};
use crate::set::BackupSet;

/// One data file to read and hash.
pub(super) struct ToRead<'a> {
    pub(super) element: usize,
    pub(super) entry: &'a FileEntry,
    /// The file, relative to the set.
    pub(super) rel: PathBuf,
    /// The file as messages show it.
    pub(super) path: PathBuf,
}

/// What [`scan_data`] found in an element's `data/`.
pub(super) struct DataScan {
    /// (kind, id) -> (path, size) of the regular files named as data files (and listed in the manifest, when there
    /// is one); size `u64::MAX` for one that is there but cannot be used (reported already).
    pub(super) found: HashMap<(FileKind, u64), (PathBuf, u64)>,
    /// A defect that makes the element's data damaged was reported.
    pub(super) damaged: bool,
}

/// Lists an element's `data/` (`data`, relative to the set): `atoms/` and `journal/` and in them the files named as
/// data files (those of the manifest `files`, when it is known); every other entry, link or special file is a
/// defect. `Err(damaged)` when `data/` itself cannot be used (a missing `data/` is a defect only when the manifest
/// lists files).
pub(super) fn scan_data(
    storage: &dyn SetStorage,
    name: Option<ElementName>,
    data: &Path,
    files: Option<&[FileEntry]>,
    r: &mut CheckReport,
) -> Result<DataScan, bool> {
    let shown = storage.show(data);
    match storage.kind(data) {
        Ok(None) => {
            let listed = files.map_or(0, <[FileEntry]>::len);
            if listed > 0 {
                r.defect(
                    name,
                    Some(shown),
                    DefectKind::DataMissing,
                    format!("data/ is missing ({listed} files listed in the manifest); it was moved away: put it back"),
                );
            }
            return Err(listed > 0);
        }
        Err(err) => {
            r.defect(name, Some(shown), io_defect_kind(&err), format!("cannot stat: {}", io_what(&err)));
            return Err(true);
        }
        Ok(Some(EntryKind::Dir(_))) => {}
        Ok(Some(_)) => {
            r.defect(name, Some(shown), DefectKind::NotRegular, "is not a directory (or is a link)".into());
            return Err(true);
        }
    }
    let mut scan = DataScan { found: HashMap::new(), damaged: false };
    let names = match storage.list(data) {
        Ok(names) => names,
        Err(err) => {
            r.defect(name, Some(shown), io_defect_kind(&err), format!("cannot list the directory: {}", io_what(&err)));
            scan.damaged = true;
            return Ok(scan);
        }
    };
    for sub in names {
        let sub_rel = data.join(&sub);
        let kind = match sub.to_str() {
            Some(ATOMS_DIR) => FileKind::Atom,
            Some(JOURNAL_DIR) => FileKind::Journal,
            _ => {
                r.defect(
                    name,
                    Some(storage.show(&sub_rel)),
                    DefectKind::ExtraFile,
                    "unexpected entry in data/ (only atoms/ and journal/ belong there): move it out of the set".into(),
                );
                continue;
            }
        };
        let subdir = storage.show(&sub_rel);
        if !matches!(storage.kind(&sub_rel), Ok(Some(EntryKind::Dir(_)))) {
            r.defect(name, Some(subdir), DefectKind::NotRegular, "is not a directory (or is a link)".into());
            continue;
        }
        let listing = match storage.list(&sub_rel) {
            Ok(listing) => listing,
            Err(err) => {
                r.defect(
                    name,
                    Some(subdir),
                    io_defect_kind(&err),
                    format!("cannot list the directory: {}", io_what(&err)),
                );
                scan.damaged = true;
                continue;
            }
        };
        let mut extra = Capped::default();
        for f in listing {
            let rel = sub_rel.join(&f);
            let fname = f.to_string_lossy().into_owned();
            let listed =
                |id: &u64| files.is_none_or(|m| m.binary_search_by_key(&(kind, *id), |m| (m.kind, m.id)).is_ok());
            let Some(id) = parse_id_name(&fname).filter(listed) else {
                let what = if files.is_some() {
                    "this file is not listed in the element's manifest: move it out of the set"
                } else {
                    "unexpected file (data file names are 16 lower-case hex digits): move it out of the set"
                };
                extra.defect(r, name, Some(storage.show(&rel)), DefectKind::ExtraFile, || what.into());
                continue;
            };
            match storage.stat(&rel) {
                Ok(Some(Stat { kind: EntryKind::File, len })) => {
                    scan.found.insert((kind, id), (rel, len));
                }
                Ok(Some(_)) => {
                    scan.damaged = true;
                    r.defect(name, Some(storage.show(&rel)), DefectKind::NotRegular, "is not a regular file (a backup set never contains links or special files): replace it by the file from a copy of the set".into());
                    scan.found.insert((kind, id), (PathBuf::new(), u64::MAX));
                }
                // Listed a moment ago and gone now: what a failed stat says.
                found @ (Ok(None) | Err(_)) => {
                    let err = found.err().unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
                    scan.damaged = true;
                    r.defect(
                        name,
                        Some(storage.show(&rel)),
                        io_defect_kind(&err),
                        format!("cannot stat: {}", io_what(&err)),
                    );
                    scan.found.insert((kind, id), (PathBuf::new(), u64::MAX));
                }
            }
        }
        let what = if files.is_some() { "files not listed in the manifest" } else { "unexpected files" };
        extra.finish(r, name, subdir, DefectKind::ExtraFile, what);
    }
    Ok(scan)
}

/// The data of every element to `read` against its manifest. Returns, per element, whether its data is damaged
/// (`false` for an element not read).
pub(super) fn check_data(
    set: &BackupSet,
    bases: &HashMap<usize, BaseInfo>,
    opts: &CheckOptions,
    read: &[bool],
    r: &mut CheckReport,
) -> Result<Vec<bool>, CheckError> {
    let mut damaged = vec![false; set.elements().len()];
    let mut to_read: Vec<ToRead<'_>> = Vec::new();
    for (i, e) in set.elements().iter().enumerate().filter(|(i, _)| read[*i]) {
        let name = Some(e.name());
        let found = match scan_data(set.storage(), name, &e.data_rel(), Some(&e.manifest.files), r) {
            Ok(scan) => {
                damaged[i] |= scan.damaged;
                scan.found
            }
            Err(bad) => {
                damaged[i] |= bad;
                continue;
            }
        };
        for f in &e.manifest.files {
            match found.get(&(f.kind, f.id)) {
                None => {
                    damaged[i] = true;
                    r.defect(
                        name,
                        Some(e.data_file(f)),
                        DefectKind::MissingFile,
                        format!(
                            "missing: the manifest lists this {} of {} bytes; restore it from a copy of the set",
                            kind_name(f.kind),
                            f.size
                        ),
                    );
                }
                Some((_, u64::MAX)) => {}
                Some((rel, size)) if *size != f.size => {
                    damaged[i] = true;
                    r.defect(
                        name,
                        Some(set.storage().show(rel)),
                        DefectKind::Size,
                        format!("{}: restore it from a copy of the set", size_mismatch(*size, f.size)),
                    );
                }
                Some((rel, _)) => {
                    let path = set.storage().show(rel);
                    to_read.push(ToRead { element: i, entry: f, rel: rel.clone(), path })
                }
            }
        }
    }

    // Journal slices are read once, buffered, by the journal threads (`check_journals`), which hash and frame them
    // together, while the copier hashes the atom files here (read-only requests, O_DIRECT) and their headers are read.
    let (atoms, journals): (Vec<ToRead<'_>>, Vec<ToRead<'_>>) =
        to_read.into_iter().partition(|t| t.entry.kind == FileKind::Atom);
    let own_control;
    let ctl: &JobControl = match &opts.control {
        Some(c) => c,
        None => {
            own_control = JobControl::new();
            &own_control
        }
    };
    let (atoms_result, journal_result) = std::thread::scope(|s| {
        let journal = s.spawn(|| check_journals(set, &journals, ctl));
        let atoms_result = check_atoms(set, bases, opts, &atoms, ctl, r, &mut damaged);
        if atoms_result.is_err() {
            // Stop the journal pass too (this cancels the caller's control: the check fails either way).
            ctl.cancel();
        }
        (atoms_result, journal.join().expect("journal pass"))
    });
    atoms_result?;
    let journal = journal_result?;
    r.files_read += journal.files_read;
    r.bytes_read += journal.bytes_read;
    for (i, path, kind, what) in journal.defects {
        damaged[i] = true;
        r.defect(Some(set.elements()[i].name()), Some(path), kind, what);
    }
    check_unread(set, ctl, r)?;
    Ok(damaged)
}

/// The data of each element [`BackupSet::load`] left out ([`BackupSet::unread`]: its control files cannot all be
/// read, or disagree with the state). No restore uses it, but its files are verified as far as they can be, so that
/// damaged control files do not leave damaged data unreported: each by what it carries itself, as `archive check`
/// checks an archive (an atom file's header, name, length and body BLAKE3; a journal slice's segment header, record
/// framing and checks, transaction ids increasing across the element's slices, no record cut short), and against
/// the element's manifest when that one reads (missing and extra files, sizes, chunk and file hashes). One chunk
/// in memory at a time, but for a journal slice without its manifest, read whole (at most `MAX_SEGMENT_BYTES`).
pub(super) fn check_unread(set: &BackupSet, ctl: &JobControl, r: &mut CheckReport) -> Result<(), CheckError> {
    for u in set.unread() {
        let name = Some(u.entry.name());
        let files = u.manifest.as_ref().map(|m| &m.files[..]);
        let storage = set.storage();
        let data = Path::new(&u.entry.name().to_string()).join(DATA_DIR);
        let Ok(scan) = scan_data(storage, name, &data, files, r) else { continue };
        let mut found: Vec<((FileKind, u64), (PathBuf, u64))> =
            scan.found.into_iter().filter(|(_, (_, size))| *size != u64::MAX).collect();
        found.sort();
        for f in files.unwrap_or_default() {
            // `found` is sorted: a binary search, not a scan per file (a manifest may list millions of atoms).
            if found.binary_search_by(|(key, _)| key.cmp(&(f.kind, f.id))).is_err() {
                let rel = data.join(backset_format::layout::data_file_path(f.kind, f.id));
                let path = storage.show(&rel);
                if !matches!(storage.kind(&rel), Ok(Some(_))) {
                    r.defect(
                        name,
                        Some(path),
                        DefectKind::MissingFile,
                        format!(
                            "missing: the manifest lists this {} of {} bytes; restore it from a copy of the set",
                            kind_name(f.kind),
                            f.size
                        ),
                    );
                }
            }
        }
        let mut verified = 0usize;
        let mut after = u.entry.txn_range.first.saturating_sub(1);
        for ((kind, id), (rel, _)) in found {
            if ctl.is_cancelled() {
                return Err(CheckError::Cancelled { path: set.dir().to_path_buf() });
            }
            let path = storage.show(&rel);
            // The archive checks read a file as `archive check` does: the local file the storage gives for it.
            let local = storage.copier_path(&rel);
            let entry = files.and_then(|f| f.binary_search_by_key(&(kind, id), |m| (m.kind, m.id)).ok().map(|k| &f[k]));
            let result = match (kind, entry) {
                // Object storage: without a local file, such a file is verified against its manifest entry only.
                (FileKind::Atom, Some(e)) if !storage.is_local() => {
                    match storage.open(&rel).map_err(|err| err.to_string()).and_then(|(reader, _)| {
                        crate::set::data::hash_stream(reader, None).map_err(|err| err.to_string())
                    }) {
                        Ok((bytes, hash, chunks)) => match crate::set::data::mismatch(e, bytes, &hash, &chunks) {
                            None => Ok(bytes),
                            Some(why) => Err((DefectKind::Hash, why)),
                        },
                        Err(why) => Err((DefectKind::Io, format!("cannot be read: {why}"))),
                    }
                }
                (_, None) if !storage.is_local() => {
                    r.notes.push(format!(
                        "{}: not verified (no readable manifest entry, and a file on object storage is verified \
                         against its manifest only)",
                        path.display()
                    ));
                    continue;
                }
                (FileKind::Atom, _) => check_atom(&local, id, entry).map(|(_, len)| len),
                (FileKind::Journal, None) => check_slice_alone(&local, id, after).map(|(last, len)| {
                    after = last;
                    len
                }),
                (FileKind::Journal, Some(e)) => {
                    let cancel = Some(ctl.cancel_flag());
                    match for_each_record(storage, &rel, e, after, cancel, |_| Ok::<bool, SliceError>(true)) {
                        Ok(summary) => {
                            after = summary.last_txn.unwrap_or(after);
                            Ok(e.size)
                        }
                        Err(SliceError::Cancelled) => {
                            return Err(CheckError::Cancelled { path: set.dir().to_path_buf() })
                        }
                        Err(err) => {
                            let (kind, what, _) = slice_error_defect(err);
                            Err((kind, what))
                        }
                    }
                }
            };
            match result {
                Ok(len) => {
                    verified += 1;
                    r.files_read += 1;
                    r.bytes_read += len;
                }
                Err((kind, what)) => r.defect(name, Some(path), kind, what),
            }
        }
        r.notes.push(format!(
            "element {}: its control files cannot all be read or disagree with the state, so no restore uses it; {verified} \
             of its data files verified {}",
            u.entry.name(),
            if files.is_some() {
                "against its manifest and by their own checksums"
            } else {
                "by their own checksums only (its manifest cannot be read)"
            }
        ));
    }
    Ok(())
}

pub(super) fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Atom => "atom file",
        FileKind::Journal => "journal slice",
    }
}
