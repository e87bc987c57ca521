//! The catalog pass: catalogs against manifests, along the chain of fulls and incrementals.

use std::collections::{HashMap, HashSet};

use backset_format::layout::CATALOG_FILE;
use backset_format::{AtomState, ElementName, ElementStatus};

use super::report::{set_error_defect, Capped, CheckReport, DefectKind};
use crate::set::{hex, BackupSet};

/// Per base element: what the catalog pass learnt.
#[derive(Debug, Default)]
pub(super) struct BaseInfo {
    /// The catalog read and its atoms all resolved.
    pub(super) catalog_ok: bool,
    /// Elements the base's atoms come from.
    pub(super) providers: HashSet<usize>,
    /// Catalog LSN of each atom file this element's manifest lists.
    pub(super) lsns: HashMap<u64, u64>,
}

/// Whether a restore from base `b` finds its atoms intact: its catalog resolved and no element holding them damaged.
pub(super) fn atoms_ok<'a>(bases: &'a HashMap<usize, BaseInfo>, damaged: &'a [bool]) -> impl Fn(usize) -> bool + 'a {
    move |b| {
        bases.get(&b).is_some_and(|info| info.catalog_ok && !damaged[b] && info.providers.iter().all(|&p| !damaged[p]))
    }
}

/// Catalogs against manifests, along the chain of fulls and incrementals.
pub(super) fn check_catalogs(set: &BackupSet, r: &mut CheckReport) -> HashMap<usize, BaseInfo> {
    let mut out = HashMap::new();
    // Every atom file of every full or incremental so far: atom id -> (hash, element) versions.
    let mut versions: HashMap<u64, Vec<([u8; 32], usize)>> = HashMap::new();
    // The previous base's catalog (element id, name, atom -> present), as long as it is the one the state lists
    // right before: after an element that could not be read, the drop and cumulative rules are not checked.
    let mut prev: Option<(uuid::Uuid, ElementName, HashMap<u64, bool>)> = None;
    let state_bases: Vec<uuid::Uuid> = set
        .state()
        .elements
        .iter()
        .filter(|e| e.status == ElementStatus::Completed && e.kind != backset_format::ElementKind::Journal)
        .map(|e| e.element_id)
        .collect();
    for (i, e) in set.elements().iter().enumerate() {
        if !e.is_base() {
            continue;
        }
        let name = e.name();
        let position = state_bases.iter().position(|&id| id == e.id());
        let expected_prev = position.and_then(|p| p.checked_sub(1)).map(|p| state_bases[p]);
        let prev_known = match (&prev, expected_prev) {
            (_, None) => true,
            (Some((id, _, _)), Some(want)) => *id == want,
            (None, Some(_)) => false,
        };
        let cat_path = e.control_dir().join(CATALOG_FILE);
        for f in e.atom_files() {
            versions.entry(f.id).or_default().push((f.hash, i));
        }
        let catalog = match set.catalog(i) {
            Ok(c) => c,
            Err(err) => {
                r.defects.push(set_error_defect(&err));
                out.insert(i, BaseInfo::default());
                prev = None;
                continue;
            }
        };
        let mut info = BaseInfo { catalog_ok: true, ..BaseInfo::default() };
        let mut capped = Capped::default();
        let mut bad = |r: &mut CheckReport, what: String| {
            capped.defect(r, Some(name), Some(cat_path.clone()), DefectKind::Catalog, || what);
        };
        for f in e.atom_files() {
            match catalog.get(f.id) {
                Some(c) if c.state == (AtomState::Present { hash: f.hash }) => {
                    info.lsns.insert(f.id, c.lsn);
                }
                Some(c) => {
                    info.catalog_ok = false;
                    let state = match c.state {
                        AtomState::Present { hash } => format!("present with BLAKE3 {}", hex(&hash)),
                        AtomState::Dropped => "dropped".into(),
                    };
                    bad(
                        r,
                        format!(
                            "atom {:#x} was copied with BLAKE3 {} (manifest), but the catalog lists it {state}",
                            f.id,
                            hex(&f.hash)
                        ),
                    );
                }
                None => {
                    info.catalog_ok = false;
                    bad(r, format!("atom {:#x} was copied (manifest) but the catalog does not list it", f.id));
                }
            }
        }
        let mut listed = HashMap::with_capacity(catalog.atoms.len());
        for c in &catalog.atoms {
            match c.state {
                AtomState::Present { hash } => {
                    let provider = versions.get(&c.atom_id).and_then(|v| v.iter().rev().find(|(h, _)| *h == hash));
                    match provider {
                        Some(&(_, p)) => {
                            info.providers.insert(p);
                        }
                        None => {
                            info.catalog_ok = false;
                            bad(
                                r,
                                format!(
                                    "atom {:#x} is listed as present with BLAKE3 {}, but no full or incremental up to \
                                 {name} holds a file with that hash",
                                    c.atom_id,
                                    hex(&hash)
                                ),
                            );
                        }
                    }
                    listed.insert(c.atom_id, true);
                }
                AtomState::Dropped => {
                    let was_present = match (&prev, expected_prev) {
                        (_, None) => Some(false),
                        _ if !prev_known => None,
                        (Some((_, _, p)), Some(_)) => Some(p.get(&c.atom_id) == Some(&true)),
                        (None, Some(_)) => None,
                    };
                    if was_present == Some(false) {
                        let before = prev.as_ref().filter(|_| expected_prev.is_some()).map_or_else(
                            || "a full's catalog lists no drops".to_string(),
                            |(_, n, _)| format!("it was not present in {n}'s catalog"),
                        );
                        bad(r, format!("atom {:#x} is listed as dropped, but {before}", c.atom_id));
                    }
                    listed.insert(c.atom_id, false);
                }
            }
        }
        if let Some((_, pname, p)) = prev.as_ref().filter(|_| prev_known && expected_prev.is_some()) {
            let mut lost: Vec<u64> =
                p.iter().filter(|(id, present)| **present && !listed.contains_key(id)).map(|(id, _)| *id).collect();
            lost.sort_unstable();
            if let Some(first) = lost.first() {
                info.catalog_ok = false;
                bad(
                    r,
                    format!(
                    "{} atoms present in {pname}'s catalog are not listed (present or dropped), first {first:#x}; a \
                     catalog is cumulative",
                    lost.len()
                ),
                );
            }
        }
        capped.finish(r, Some(name), cat_path.clone(), DefectKind::Catalog, "catalog defects");
        prev = Some((e.id(), name, listed));
        out.insert(i, info);
    }
    out
}
