//! The journal pass: journal slices read once each on `CHECK_JOURNAL_THREADS` threads, framing and transaction
//! ranges checked, and records shared between elements compared.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use backset_copier::JobControl;
use backset_format::TxnRange;

use super::archive::{io_defect_kind, io_what};
use super::data::ToRead;
use super::report::{CheckError, DefectKind};
use crate::limits::CHECK_JOURNAL_THREADS;
use crate::set::data::{chunk_mismatch, for_each_record, size_mismatch, SliceError, FILE_MISMATCH};
use crate::set::BackupSet;

/// What the journal pass found: defects as (element, file, kind, description), and what it read.
#[derive(Default)]
pub(super) struct JournalOutcome {
    pub(super) defects: Vec<(usize, PathBuf, DefectKind, String)>,
    pub(super) files_read: u64,
    pub(super) bytes_read: u64,
}

/// What one element's journal slices held, for the comparison across elements.
#[derive(Default)]
pub(super) struct ElementJournal {
    pub(super) outcome: JournalOutcome,
    /// Paths of its slices that were read, and whether each was whole and well framed.
    pub(super) slices: Vec<(PathBuf, bool)>,
    /// (transaction, record check, index in `slices`) of each record in a range other elements cover too.
    pub(super) shared: Vec<(u64, u64, usize)>,
}

/// Reads each journal slice in `journals` once, verifying its chunk and file hashes against the manifest and its
/// framing together, on [`CHECK_JOURNAL_THREADS`] threads that take whole elements (records increase across an
/// element's slices). Then a transaction that several elements cover must have the same record in each: the record
/// checks of those records are kept (24 bytes per record in the shared ranges, mostly the journal of the fulls and
/// incrementals) and compared element by element.
pub(super) fn check_journals(
    set: &BackupSet,
    journals: &[ToRead<'_>],
    ctl: &JobControl,
) -> Result<JournalOutcome, CheckError> {
    ctl.add_outside(journals.iter().map(|t| t.entry.size).sum(), 0);
    let shared = shared_ranges(set);
    // `journals` comes element by element, each in its manifest's order: one group per element.
    let groups: Vec<&[ToRead<'_>]> = journals.chunk_by(|a, b| a.element == b.element).collect();
    // Largest journals first, so that no thread is left with a large one at the end.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].iter().map(|t| t.entry.size).sum::<u64>()));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ElementJournal, CheckError>>>> =
        Mutex::new(groups.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..CHECK_JOURNAL_THREADS.min(groups.len()) {
            s.spawn(|| {
                while let Some(&g) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = element_journal(set, groups[g], &shared, ctl);
                    results.lock().unwrap_or_else(PoisonError::into_inner)[g] = Some(result);
                }
            });
        }
    });
    let mut out = JournalOutcome::default();
    let mut seen: HashMap<u64, (u64, usize)> = HashMap::new();
    for (group, result) in groups.iter().zip(results.into_inner().unwrap_or_else(PoisonError::into_inner)) {
        let i = group[0].element;
        let element = result.expect("every element's journal read")?;
        out.files_read += element.outcome.files_read;
        out.bytes_read += element.outcome.bytes_read;
        out.defects.extend(element.outcome.defects);
        let mut reported = vec![false; element.slices.len()];
        for (txn, check, slice) in element.shared {
            match seen.entry(txn) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let (path, whole) = &element.slices[slice];
                    if o.get().0 != check && *whole && !reported[slice] {
                        reported[slice] = true;
                        out.defects.push((
                            i,
                            path.clone(),
                            DefectKind::Journal,
                            format!(
                                "its record of transaction {txn} differs from the one in element {} (commit time or \
                                 payload): one of them does not come from this archive's journal",
                                set.elements()[o.get().1].name()
                            ),
                        ));
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((check, i));
                }
            }
        }
    }
    Ok(out)
}

/// Reads one element's journal slices `slices` (those there with their manifest's size), in order (see
/// [`check_journals`]).
pub(super) fn element_journal(
    set: &BackupSet,
    slices: &[ToRead<'_>],
    shared: &[TxnRange],
    ctl: &JobControl,
) -> Result<ElementJournal, CheckError> {
    let mut out = ElementJournal::default();
    let state = set.state();
    let i = slices[0].element;
    let range = set.elements()[i].txn_range();
    let mut after = range.first.saturating_sub(1);
    for t in slices {
        let (f, path) = (t.entry, t.path.clone());
        let slice = out.slices.len();
        let mut outside: Option<(u64, u64)> = None;
        let res = for_each_record(set.storage(), &t.rel, f, after, Some(ctl.cancel_flag()), |rec| {
            if !range.contains(rec.txn_id) && outside.is_none() {
                outside = Some((rec.txn_id, rec.offset));
            }
            let k = shared.partition_point(|s| s.last < rec.txn_id);
            if shared.get(k).is_some_and(|s| s.contains(rec.txn_id)) {
                // The record's verified check covers its timestamp and payload: no second hash.
                out.shared.push((rec.txn_id, rec.check, slice));
            }
            Ok::<bool, SliceError>(true)
        });
        ctl.add_outside(0, f.size);
        let mut defects = Vec::new();
        let mut fail = |kind: DefectKind, what: String| defects.push((i, path.clone(), kind, what));
        let (read_through, whole) = match res {
            Err(SliceError::Cancelled) => return Err(CheckError::Cancelled { path: set.dir().to_path_buf() }),
            Err(err) => {
                let (kind, what, read_through) = slice_error_defect(err);
                fail(kind, what);
                (read_through, false)
            }
            Ok(summary) => {
                if let Some((txn, offset)) = outside {
                    fail(
                        DefectKind::Journal,
                        format!(
                            "holds transaction {txn} (at byte {offset} of segment {}), outside the element's range \
                             [{}, {}]",
                            f.id, range.first, range.last
                        ),
                    );
                }
                if summary.records == 0 {
                    fail(DefectKind::Journal, "holds no record (a hot copy copies only slices with records)".into());
                }
                if let Some(h) = summary.header {
                    if h.database_id != state.database_id || h.archive_id != state.archive_id {
                        fail(
                            DefectKind::Journal,
                            format!(
                                "its segment header names database {} archive {}, the state database {} archive {}",
                                h.database_id, h.archive_id, state.database_id, state.archive_id
                            ),
                        );
                    }
                }
                after = summary.last_txn.unwrap_or(after);
                (true, true)
            }
        };
        out.outcome.defects.extend(defects);
        out.slices.push((path, whole));
        if read_through {
            out.outcome.files_read += 1;
            out.outcome.bytes_read += f.size;
        }
    }
    Ok(out)
}

/// The defect a journal slice that failed its verification is: its kind, what to say, and whether the slice was read
/// through (a size, hash or framing defect) rather than not read at all.
pub(super) fn slice_error_defect(err: SliceError) -> (DefectKind, String, bool) {
    let restore_it = "restore it from a copy of the set";
    match err {
        SliceError::Io { source, .. } => {
            (io_defect_kind(&source), format!("cannot be read: {}", io_what(&source)), false)
        }
        err @ (SliceError::Missing { .. } | SliceError::NotRegular { .. }) => {
            (DefectKind::Io, format!("cannot be read: {err}"), false)
        }
        SliceError::Size { expected, found, .. } => {
            (DefectKind::Size, format!("{}: {restore_it}", size_mismatch(found, expected)), true)
        }
        SliceError::Chunk { index, start, end, .. } => {
            (DefectKind::Hash, format!("{}: {restore_it}", chunk_mismatch(index, start, end)), true)
        }
        SliceError::Hash { .. } => (DefectKind::Hash, format!("{FILE_MISMATCH}: {restore_it}"), true),
        err => (DefectKind::Journal, format!("{err}: the slice is damaged"), true),
    }
}

/// The transactions that at least two elements' ranges cover, as sorted disjoint ranges.
pub(super) fn shared_ranges(set: &BackupSet) -> Vec<TxnRange> {
    let mut events: Vec<(u128, i64)> = Vec::with_capacity(set.elements().len() * 2);
    for e in set.elements() {
        let r = e.txn_range();
        events.push((u128::from(r.first), 1));
        events.push((u128::from(r.last) + 1, -1));
    }
    events.sort_unstable();
    let mut out: Vec<TxnRange> = Vec::new();
    let mut depth = 0i64;
    let mut start = None;
    for (at, delta) in events {
        let before = depth;
        depth += delta;
        if before < 2 && depth >= 2 {
            start = Some(at);
        } else if before >= 2 && depth < 2 {
            if let Some(first) = start.take() {
                if at > first {
                    out.push(TxnRange { first: first as u64, last: (at - 1) as u64 });
                }
            }
        }
    }
    out
}
