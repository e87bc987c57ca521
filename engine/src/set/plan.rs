//! What a restore can reach, and where its atoms and journal records come from: computed once, over a
//! [`BackupSet`] as read, for restore (which follows the plan) and check (which asks what stays reachable when some
//! data is damaged).

use std::collections::HashMap;

use backset_format::layout::CATALOG_FILE;
use backset_format::{AtomState, FileEntry, TxnRange};

use super::{hex, BackupSet, SetError};

/// Where one atom of a restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomSource {
    /// Atom id.
    pub atom_id: u64,
    /// Its LSN as the base's catalog records it.
    pub lsn: u64,
    /// Index (in [`BackupSet::elements`]) of the element whose data holds the file.
    pub element: usize,
    /// The file's manifest entry in that element.
    pub file: FileEntry,
}

/// One step of a journal replay plan: the records with `first <= txn id <= last` come from `element`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPart {
    /// Index (in [`BackupSet::elements`]) of the element whose slices hold the records.
    pub element: usize,
    /// First transaction id taken from it.
    pub first: u64,
    /// Last transaction id taken from it.
    pub last: u64,
}

impl BackupSet {
    /// The transactions a restore can reach, as sorted, disjoint, non-adjacent ranges; empty when the set has no
    /// completed full or [`load`](Self::load) found problems. Normally one range, `[E of the full, max(E of the
    /// newest full or incremental, end of the journal chain)]`; several when, without journal elements, the
    /// incrementals' journals leave gaps.
    pub fn restorable(&self) -> Vec<TxnRange> {
        if !self.problems.is_empty() {
            return Vec::new();
        }
        self.restorable_with(&|_| true, &|_| true)
    }

    /// [`restorable`](Self::restorable) when some data is known to be damaged: `atoms_ok(b)` says whether base
    /// element `b`'s atoms (in whichever elements hold them) are intact, `journal_ok(i)` whether element `i`'s
    /// journal slices are. A restore to T starts from the newest full or incremental with E <= T and takes the
    /// records from the elements [`plan_journal`](Self::plan_journal) picks, damaged or not, so a damaged base
    /// makes its whole window unreachable and a damaged journal source cuts the window where its part begins.
    pub fn restorable_with(
        &self,
        atoms_ok: &dyn Fn(usize) -> bool,
        journal_ok: &dyn Fn(usize) -> bool,
    ) -> Vec<TxnRange> {
        let bases: Vec<usize> = (0..self.elements.len()).filter(|&i| self.elements[i].is_base()).collect();
        let mut out: Vec<TxnRange> = Vec::new();
        for (j, &b) in bases.iter().enumerate() {
            let range = self.elements[b].txn_range();
            let window_end = match bases.get(j + 1) {
                Some(&next) => match self.elements[next].txn_range().last.checked_sub(1) {
                    Some(end) => end,
                    None => continue,
                },
                None => u64::MAX,
            };
            if window_end < range.last || !atoms_ok(b) {
                continue;
            }
            // How far the replay from R reaches before a gap or a damaged source.
            let parts = match self.plan_journal(range.first, window_end, Some(b)) {
                Ok(parts) => parts,
                Err(gap) => match gap.checked_sub(1).map(|end| self.plan_journal(range.first, end, Some(b))) {
                    Some(Ok(parts)) => parts,
                    _ => continue,
                },
            };
            let mut reach = range.first.checked_sub(1);
            for p in &parts {
                if !journal_ok(p.element) {
                    break;
                }
                reach = Some(p.last);
            }
            let Some(last) = reach.filter(|&r| r >= range.last) else { continue };
            let piece = TxnRange { first: range.last, last };
            match out.last_mut() {
                Some(prev) if prev.last.checked_add(1).is_some_and(|n| n >= piece.first) => {
                    prev.last = prev.last.max(piece.last)
                }
                _ => out.push(piece),
            }
        }
        out
    }

    /// Index of the base a restore to `txn` starts from: the newest full or incremental with E <= `txn`.
    pub fn base_for(&self, txn: u64) -> Option<usize> {
        (0..self.elements.len()).rev().find(|&i| self.elements[i].is_base() && self.elements[i].txn_range().last <= txn)
    }

    /// Which elements' journals supply the records with `first <= txn id <= last`: element `prefer` (a restore's
    /// base: for a target at or before its end point the base is then self-contained) for as long as it covers
    /// them, then greedily the element that covers the next transaction and reaches furthest (the earliest such
    /// element on a tie). Fails with the first transaction id no element covers.
    pub fn plan_journal(&self, first: u64, last: u64, prefer: Option<usize>) -> Result<Vec<JournalPart>, u64> {
        let mut parts = Vec::new();
        let mut cur = first;
        while cur <= last {
            let preferred = prefer.filter(|&p| parts.is_empty() && self.elements[p].txn_range().contains(cur));
            let best = match preferred {
                Some(p) => p,
                None => (0..self.elements.len())
                    .filter(|&i| self.elements[i].txn_range().contains(cur))
                    .max_by_key(|&i| (self.elements[i].txn_range().last, std::cmp::Reverse(i)))
                    .ok_or(cur)?,
            };
            let reach = self.elements[best].txn_range().last;
            parts.push(JournalPart { element: best, first: cur, last: reach.min(last) });
            match reach.checked_add(1) {
                Some(next) if reach < last => cur = next,
                _ => break,
            }
        }
        Ok(parts)
    }

    /// The atoms a restore from base element `base` lays down: every atom its catalog lists as present, each taken
    /// from the newest full or incremental at or before `base` whose manifest lists the atom with the catalog's
    /// hash. Fails, naming the atom, when no element holds that file.
    pub fn resolve_atoms(&self, base: usize) -> Result<Vec<AtomSource>, SetError> {
        let catalog = self.catalog(base)?;
        let mut wanted: HashMap<u64, (u64, [u8; 32])> = HashMap::with_capacity(catalog.atoms.len());
        for c in &catalog.atoms {
            if let AtomState::Present { hash } = c.state {
                wanted.insert(c.atom_id, (c.lsn, hash));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for i in (0..=base).rev().filter(|&i| self.elements[i].is_base()) {
            if wanted.is_empty() {
                break;
            }
            for f in self.elements[i].atom_files() {
                if let Some(&(lsn, hash)) = wanted.get(&f.id) {
                    if hash == f.hash {
                        wanted.remove(&f.id);
                        out.push(AtomSource { atom_id: f.id, lsn, element: i, file: f.clone() });
                    }
                }
            }
        }
        if let Some((&atom_id, &(_, hash))) = wanted.iter().min_by_key(|(id, _)| **id) {
            let e = &self.elements[base];
            return Err(SetError::Inconsistent {
                set: self.dir.clone(),
                element: e.name(),
                file: e.control_dir().join(CATALOG_FILE),
                reason: format!(
                    "atom {atom_id:#x} is listed as present with BLAKE3 {}, but no full or incremental element up to \
                     {} holds a file with that hash ({} atoms are missing)",
                    hex(&hash),
                    e.name(),
                    wanted.len()
                ),
            });
        }
        out.sort_by_key(|a| a.atom_id);
        Ok(out)
    }
}

/// Formats ranges as an operator reads them: `range [100, 5000]` or `ranges [1, 5], [9, 12]`.
pub fn describe_ranges(ranges: &[TxnRange]) -> String {
    let list: Vec<String> = ranges.iter().map(|r| format!("[{}, {}]", r.first, r.last)).collect();
    match list.len() {
        0 => "range (none)".to_string(),
        1 => format!("range {}", list[0]),
        _ => format!("ranges {}", list.join(", ")),
    }
}
