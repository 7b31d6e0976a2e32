//! What a set of changes touched: the sections, and the records inside them. The store uses it
//! to refresh only the index rows those records feed, and its change feed reports the
//! sections to the UI.

use std::collections::BTreeSet;

use automerge::legacy::{Key, OpType};
use automerge::{ChangeHash, ReadDoc};

use super::keys;
use super::read::Reader;
use super::validate::NewChanges;
use super::Chart;

/// A record: its section and id. Patient and encounter are records with an empty id.
pub type RecordRef = (String, String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Top-level sections written, e.g. `entries`, `signatures`.
    pub sections: BTreeSet<String>,
    /// Records whose derived state may have changed: records written in sections keyed by
    /// id, the entries that new signatures and amendments name, and the patient and encounter
    /// when written.
    pub records: BTreeSet<RecordRef>,
    /// Records these changes created (the record did not exist before them).
    pub created: BTreeSet<RecordRef>,
    /// New items of the signatures and amendments lists: (section, index).
    pub(crate) new_items: BTreeSet<(String, usize)>,
    /// Sections written inside (not just created at the root, as a new chart creates them).
    pub(crate) written: BTreeSet<String>,
}

fn keyed_section(section: &str) -> bool {
    section_is(section, automerge::ObjType::Map)
        && section != keys::PATIENT
        && section != keys::ENCOUNTER
}

fn section_is(section: &str, ty: automerge::ObjType) -> bool {
    keys::section_type(section) == Some(ty)
}

impl Touched {
    /// Every section written, and the encounter (which refreshes the whole chart's index).
    fn everything() -> Touched {
        let sections: BTreeSet<String> =
            keys::SECTIONS.iter().map(|(k, _)| k.to_string()).collect();
        Touched {
            records: [(keys::ENCOUNTER.to_string(), String::new())].into(),
            written: sections.clone(),
            sections,
            ..Touched::default()
        }
    }
}

impl Chart {
    /// What the changes after `heads` touched (everything, when `heads` is empty).
    pub fn touched_since(&self, heads: &[ChangeHash]) -> Touched {
        // The changes a write's checks already decoded and located, when they are these.
        let new = match self.kept_changes(heads) {
            Some(kept) => Ok(kept),
            None => NewChanges::of(&self.doc, heads),
        };
        // automerge failing inside reading them (the server refuses such changes): the whole
        // chart is refreshed.
        let Ok(new) = new else {
            return Touched::everything();
        };
        let Ok(decoded) = new.decoded() else {
            return Touched::everything();
        };
        let mut out = Touched::default();
        let mut candidates: BTreeSet<RecordRef> = BTreeSet::new();
        for (_, change) in decoded {
            for op in &change.operations {
                // Inside something no longer reachable: nothing to index.
                let Some(located) = new.locate(&op.obj) else {
                    continue;
                };
                let path: Vec<String> = located.keys().map(str::to_string).collect();
                let inside = !path.is_empty();
                let mut full = path;
                if let Key::Map(k) = &op.key {
                    full.push(k.to_string());
                }
                let Some(section) = full.first().cloned() else {
                    continue;
                };
                if keys::section_type(&section).is_none() {
                    continue;
                }
                match full.get(1) {
                    _ if section == keys::PATIENT || section == keys::ENCOUNTER => {
                        out.records.insert((section.clone(), String::new()));
                    }
                    Some(id) if keyed_section(&section) => {
                        let record = (section.clone(), id.clone());
                        // The operation that makes the record's map, replacing nothing.
                        let makes_record = full.len() == 2
                            && op.pred.is_empty()
                            && matches!(op.action, OpType::Make(automerge::ObjType::Map));
                        if makes_record {
                            candidates.insert(record.clone());
                        }
                        out.records.insert(record);
                    }
                    Some(index) if section == keys::SIGNATURES || section == keys::AMENDMENTS => {
                        if let Ok(n) = index.parse() {
                            out.new_items.insert((section.clone(), n));
                        }
                    }
                    _ => {}
                }
                if inside {
                    out.written.insert(section.clone());
                }
                out.sections.insert(section);
            }
        }
        let r = Reader::new(&self.doc);
        // Created: made by these changes and absent before them (a record deleted and made
        // again, which validation refuses, would otherwise pass for new).
        for (section, id) in candidates {
            let absent_before = heads.is_empty()
                || r.section(&section)
                    .is_ok_and(|map| matches!(self.doc.get_at(&map, id.as_str(), heads), Ok(None)));
            if absent_before {
                out.created.insert((section, id));
            }
        }
        // A signature or amendment changes the state of the entry it names.
        for (section, n) in &out.new_items {
            let field = if section == keys::SIGNATURES {
                "entry_id"
            } else {
                "target_entry_id"
            };
            let entry = r
                .section(section)
                .ok()
                .and_then(|list| match self.doc.get(&list, *n) {
                    Ok(Some((automerge::Value::Object(_), item))) => {
                        r.opt_str(&item, field, section).ok().flatten()
                    }
                    _ => None,
                });
            if let Some(entry_id) = entry {
                out.records.insert((keys::ENTRIES.to_string(), entry_id));
            }
        }
        out
    }
}
