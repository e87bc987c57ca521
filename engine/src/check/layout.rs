//! The layout pass: the top of the set and each element directory hold only what the format defines
//! ([`crate::set::layout`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backset_format::dirfd::EntryKind;
use backset_format::layout::CONTROL_DIR;
use backset_format::{ElementName, ElementStatus};

use super::report::{Capped, CheckReport, DefectKind};
use crate::set::layout::{is_write_leftover, top_entry, TopEntry, CONTROL_FILES, ELEMENT_ENTRIES};
use crate::set::BackupSet;

/// The top of the set and each element directory hold only what the format defines.
pub(super) fn scan_layout(set: &BackupSet, r: &mut CheckReport) {
    let dir = set.dir();
    let storage = set.storage();
    let listed: BTreeMap<ElementName, ElementStatus> =
        set.state().elements.iter().map(|e| (e.name(), e.status)).collect();
    let entries = match storage.list(Path::new("")) {
        Ok(names) => names,
        Err(e) => {
            r.defect(None, Some(dir.to_path_buf()), DefectKind::Io, format!("cannot list the set's directory: {e}"));
            return;
        }
    };
    let mut top = Capped::default();
    for entry in entries {
        let name = entry.to_string_lossy().into_owned();
        let path = storage.show(Path::new(&entry));
        let kind = top_entry(&name);
        if matches!(kind, TopEntry::State | TopEntry::Verification | TopEntry::WriteLeftover) {
            if kind == TopEntry::WriteLeftover {
                r.notes.push(format!("{} is a leftover of an interrupted metadata write", path.display()));
            }
            continue;
        }
        if kind == TopEntry::Tmp {
            let what = storage.kind(Path::new(&entry)).ok().flatten();
            if !matches!(what, Some(EntryKind::Dir(_))) {
                // Never followed: hot copies refuse the set (a link here once led them to empty its target).
                r.defect(
                    None,
                    Some(path.clone()),
                    DefectKind::NotRegular,
                    format!(
                        "{} is {} where the set's directory of elements under construction belongs (a backup set \
                         never contains links); hot copies refuse this set until it is gone: remove it (`rm {}` \
                         removes a link, not what it leads to)",
                        path.display(),
                        if what == Some(EntryKind::Symlink) { "a symbolic link" } else { "not a directory" },
                        path.display()
                    ),
                );
                continue;
            }
            let n = storage.list(Path::new(&entry)).map_or(0, |names| names.len());
            if n > 0 {
                r.notes.push(format!(
                    "{} holds {n} element(s) under construction (a hot copy is running, or one was interrupted and \
                     the next hot copy removes it)",
                    path.display()
                ));
            }
            continue;
        }
        match kind {
            TopEntry::Element(e) => match listed.get(&e) {
                Some(ElementStatus::Completed) => {}
                Some(ElementStatus::InProgress) => r.notes.push(format!(
                    "element {e} is listed as in progress: it is ignored (an interrupted hot copy left it; the next \
                     hot copy removes it)"
                )),
                None => top.defect(r, Some(e), Some(path), DefectKind::ExtraFile, || {
                    "this element directory is not listed in the state, so no restore uses it; it may be a \
                     leftover of an interrupted hot copy or come from another set: move it out of the set"
                        .into()
                }),
            },
            _ => top.defect(r, None, Some(path), DefectKind::ExtraFile, || {
                "unexpected entry at the top of the backup set (only state, verified, tmp/ and element directories \
                 belong there): move it out of the set"
                    .into()
            }),
        }
    }
    top.finish(r, None, dir.to_path_buf(), DefectKind::ExtraFile, "unexpected entries at the top of the set");
    let element_names = set.elements().iter().map(|e| e.name());
    for element in element_names.chain(set.unread().iter().map(|u| u.entry.name())) {
        let dir = PathBuf::from(element.to_string());
        for (sub, allowed) in [(None, &ELEMENT_ENTRIES[..]), (Some(CONTROL_DIR), &CONTROL_FILES[..])] {
            let rel = sub.map_or_else(|| dir.clone(), |s| dir.join(s));
            let d = storage.show(&rel);
            let Ok(names) = storage.list(&rel) else { continue };
            let mut extra = Capped::default();
            for entry in names {
                let name = entry.to_string_lossy().into_owned();
                let path = storage.show(&rel.join(&entry));
                if is_write_leftover(&name) {
                    r.notes.push(format!("{} is a leftover of an interrupted metadata write", path.display()));
                } else if !allowed.contains(&name.as_str()) {
                    extra.defect(r, Some(element), Some(path), DefectKind::ExtraFile, || {
                        format!(
                            "unexpected entry in {} (the format defines only {}): move it out of the set",
                            d.display(),
                            allowed.join(", ")
                        )
                    });
                }
            }
            extra.finish(r, Some(element), d.clone(), DefectKind::ExtraFile, "unexpected entries in this directory");
        }
    }
}
