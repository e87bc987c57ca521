//! The atom pass: atom files hashed through the copier's read-only requests, their headers against the catalogs.

use std::collections::HashMap;
use std::path::Path;

use backset_copier::{Copier, CopyError, CopyRequest, JobControl};
use backset_format::atom::ATOM_HEADER_BYTES;
use backset_format::FileEntry;

use super::archive::{io_defect_kind, io_what};
use super::catalog::BaseInfo;
use super::data::ToRead;
use super::report::{CheckError, CheckReport, DefectKind};
use super::CheckOptions;
use crate::limits::{CHECK_STREAMS_IN_FLIGHT, COPY_BATCH_FILES};
use crate::set::data::{keep_head, mismatch, parse_atom_head};
use crate::set::BackupSet;

/// Hashes the atom files `atoms` through the copier's read-only requests and checks their headers against the
/// catalogs, marking damaged elements.
pub(super) fn check_atoms(
    set: &BackupSet,
    bases: &HashMap<usize, BaseInfo>,
    opts: &CheckOptions,
    atoms: &[ToRead<'_>],
    ctl: &JobControl,
    r: &mut CheckReport,
    damaged: &mut [bool],
) -> Result<(), CheckError> {
    if atoms.is_empty() {
        return Ok(());
    }
    let mut copier_opts = opts.copier.clone();
    copier_opts.hash = true;
    let local = set.storage().is_local();
    let mut copier = if local {
        Some(Copier::new(copier_opts).map_err(|source| CheckError::Copier { path: set.dir().to_path_buf(), source })?)
    } else {
        None
    };
    for batch in atoms.chunks(COPY_BATCH_FILES) {
        let requests: Vec<CopyRequest> =
            batch.iter().map(|t| CopyRequest::read(set.storage().copier_path(&t.rel))).collect();
        let results: Vec<Result<backset_copier::FileReport, CopyError>> = match copier.as_mut() {
            // Object storage: each file streamed and hashed chunk by chunk, nothing written locally, several at once.
            None => {
                if ctl.is_cancelled() {
                    return Err(CheckError::Cancelled { path: set.dir().to_path_buf() });
                }
                streamed_reports(set, batch, &requests)
            }
            Some(copier) => match copier.copy(&requests, ctl, None) {
                Ok(job) => {
                    let mut by_request: Vec<Option<backset_copier::FileReport>> = vec![None; requests.len()];
                    for f in job.files {
                        let k = f.request;
                        by_request[k] = Some(f);
                    }
                    by_request.into_iter().map(|f| f.ok_or(CopyError::Cancelled)).collect()
                }
                Err(CopyError::Cancelled) => return Err(CheckError::Cancelled { path: set.dir().to_path_buf() }),
                // One file failed: read them one by one to name every failure.
                Err(_) => {
                    let mut v = Vec::with_capacity(requests.len());
                    for req in &requests {
                        match copier.copy(std::slice::from_ref(req), ctl, None) {
                            Ok(mut job) => v.push(job.files.pop().ok_or(CopyError::Cancelled)),
                            Err(CopyError::Cancelled) if ctl.is_cancelled() => {
                                return Err(CheckError::Cancelled { path: set.dir().to_path_buf() })
                            }
                            Err(e) => v.push(Err(e)),
                        }
                    }
                    v
                }
            },
        };
        for (t, res) in batch.iter().zip(results) {
            let e = &set.elements()[t.element];
            let name = Some(e.name());
            let report = match res {
                Ok(rep) => rep,
                Err(err) => {
                    damaged[t.element] = true;
                    let (kind, what) = match &err {
                        CopyError::Io { source, .. } => {
                            (io_defect_kind(source), format!("cannot be read: {}", io_what(source)))
                        }
                        _ => (DefectKind::Io, format!("cannot be read: {err}")),
                    };
                    r.defect(name, Some(t.path.clone()), kind, what);
                    continue;
                }
            };
            r.files_read += 1;
            r.bytes_read += report.bytes;
            if let Some(why) = mismatch(t.entry, report.bytes, &report.hash, &report.chunk_hashes) {
                damaged[t.element] = true;
                r.defect(
                    name,
                    Some(t.path.clone()),
                    DefectKind::Hash,
                    format!("{why}: restore it from a copy of the set"),
                );
                continue;
            }
            let lsn = bases.get(&t.element).and_then(|b| b.lsns.get(&t.entry.id)).copied();
            if let Some(why) = atom_header_problem(&report.head, t.entry, lsn, e.txn_range().last) {
                damaged[t.element] = true;
                r.defect(name, Some(t.path.clone()), DefectKind::Atom, why);
            }
        }
    }
    Ok(())
}

/// What is wrong with an atom file's header, if anything, from `head`: its first bytes as the copier read and
/// hashed them (no second read of the file).
pub(super) fn atom_header_problem(
    head: &[u8],
    entry: &FileEntry,
    catalog_lsn: Option<u64>,
    end: u64,
) -> Option<String> {
    let h = match parse_atom_head(head) {
        Ok(h) => h,
        Err(why) => return Some(format!("{why}: the atom file is damaged")),
    };
    if h.atom_id != entry.id {
        return Some(format!("its header names atom {:#x}, the file is atom {:#x}", h.atom_id, entry.id));
    }
    if h.body_len + ATOM_HEADER_BYTES as u64 != entry.size {
        return Some(format!("its header declares a {}-byte body, the file is {} bytes", h.body_len, entry.size));
    }
    if h.lsn > end {
        return Some(format!("its LSN {} is beyond the element's end point {end}", h.lsn));
    }
    match catalog_lsn {
        Some(lsn) if lsn != h.lsn => Some(format!("its LSN is {}, the catalog says {lsn}", h.lsn)),
        _ => None,
    }
}

/// [`streamed_report`] of each of `batch` (whose copier requests are `requests`), [`CHECK_STREAMS_IN_FLIGHT`] at
/// once, in the batch's order.
fn streamed_reports(
    set: &BackupSet,
    batch: &[ToRead<'_>],
    requests: &[CopyRequest],
) -> Vec<Result<backset_copier::FileReport, CopyError>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<_> = std::thread::scope(|scope| {
        let streams: Vec<_> = (0..CHECK_STREAMS_IN_FLIGHT.min(batch.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(t) = batch.get(k) else { break done };
                        done.push((k, streamed_report(set, t, k, &requests[k].source)));
                    }
                })
            })
            .collect();
        streams.into_iter().flat_map(|s| s.join().expect("a check stream panicked")).collect()
    });
    results.sort_unstable_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

/// What the copier would report for the atom file `t`, read by streaming it from the set's storage.
fn streamed_report(
    set: &BackupSet,
    t: &ToRead<'_>,
    request: usize,
    shown: &Path,
) -> Result<backset_copier::FileReport, CopyError> {
    let io = |source: std::io::Error| CopyError::Io { op: "read", path: shown.to_path_buf(), source };
    let (reader, _) = set.storage().open(&t.rel).map_err(|e| match e {
        backset_format::ReadError::Io { source, .. } => io(source),
        other => io(std::io::Error::other(other.to_string())),
    })?;
    let mut head = Vec::new();
    let (bytes, hash, chunk_hashes) = crate::set::data::hash_stream(
        reader,
        Some(&mut |chunk: &[u8]| {
            keep_head(&mut head, chunk);
            Ok(())
        }),
    )
    .map_err(io)?;
    Ok(backset_copier::FileReport {
        request,
        bytes,
        hash,
        chunk_hashes,
        direct_source: false,
        direct_target: false,
        head,
    })
}
