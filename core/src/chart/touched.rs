//! What a set of changes touched: the sections, and the records inside them. The store uses it
//! to refresh only the index rows those records feed, and its change feed reports the
//! sections to the UI.

use std::collections::{BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ChangeHash, ReadDoc};

use super::keys;
use super::read::Reader;
use super::validate::{locate, Located};
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

impl Chart {
    /// What the changes after `heads` touched (everything, when `heads` is empty).
    pub fn touched_since(&self, heads: &[ChangeHash]) -> Touched {
        let mut out = Touched::default();
        let mut located: HashMap<String, Option<Located>> = HashMap::new();
        let mut candidates: BTreeSet<RecordRef> = BTreeSet::new();
        for change in self.doc.get_changes(heads) {
            for op in change.decode().operations {
                let path: Vec<String> = match &op.obj {
                    ObjectId::Root => Vec::new(),
                    ObjectId::Id(id) => {
                        let key = format!("{}@{}", id.counter(), id.actor());
                        match located
                            .entry(key)
                            .or_insert_with_key(|k| locate(&self.doc, k))
                        {
                            Some(l) => l.path.iter().map(|(_, k)| k.clone()).collect(),
                            // Inside something no longer reachable: nothing to index.
                            None => continue,
                        }
                    }
                };
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
