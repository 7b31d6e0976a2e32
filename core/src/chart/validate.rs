//! The check the server runs on every incoming change before applying it, and a tablet may run
//! on what it receives: given the chart before and after the changes, reject any change that
//! edits a signed entry or form causally after its signature, rewrites an immutable field,
//! changes an append-only list other than by appending, replaces a section or record, breaks
//! the schema, or carries an invalid code.
//!
//! The check works per operation: each operation of each new change is located in the
//! document by its object's path, so the rules apply whichever client wrote the change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, ChangeHash, ObjId, Prop, ReadDoc, ROOT};

use super::error::ChartError;
use super::keys;
use super::read::{check_code, Reader};
use super::signing;
use super::touched::RecordRef;
use crate::store::lock;

/// Why a set of changes was refused. Paths and ids only: never a value from the chart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("change {change} edits entry {entry_id} after it was signed")]
    EditAfterSignature { change: String, entry_id: String },
    #[error("change {change} edits form {form_id} after it was signed")]
    FormEditAfterSignature { change: String, form_id: String },
    #[error("change {change} changes {field}, which never changes after the chart is created")]
    ImmutableField { change: String, field: String },
    #[error("change {change} files scanned document {entry_id}: scanned documents are filed through the records office's API, with their file")]
    ScannedDocumentFromDevice { change: String, entry_id: String },
    #[error("change {change} alters {list}, which may only be appended to")]
    AppendOnly { change: String, list: String },
    #[error("change {change} replaces or deletes {path}")]
    Replaced { change: String, path: String },
    #[error("change {change} writes {path}, which is not part of the chart schema")]
    UnknownSection { change: String, path: String },
    #[error("schema violation: {0}")]
    Schema(ChartError),
    #[error("invalid code at {path}: {error}")]
    InvalidCode {
        path: String,
        error: crate::codes::CodeError,
    },
    #[error("signature on entry {entry_id} does not match the entry at its heads")]
    SignatureMismatch { entry_id: String },
    #[error("not a chart: {0}")]
    NotAChart(ChartError),
    #[error("a {role} may not write {section}")]
    RoleMayNotWrite {
        role: super::types::Role,
        section: String,
    },
    #[error("change {change} names someone other than the signed-in user as its author")]
    NotTheAuthor { change: String },
    #[error("change {change} writes {field} at {path} as someone other than the signed-in user")]
    ForgedWriter {
        change: String,
        field: String,
        path: String,
    },
}

impl Violation {
    /// The violation without any value from the chart (a code's text included): for logs.
    pub fn summary(&self) -> String {
        match self {
            Violation::InvalidCode { path, .. } => format!("invalid code at {path}"),
            Violation::Schema(_) => "a record does not follow the schema".to_string(),
            Violation::NotAChart(_) => "not a chart".to_string(),
            other => other.to_string(),
        }
    }
}

impl Rejection {
    /// The one reason a device and a records supervisor are given for holding the changes:
    /// the violation that says most about who must act. Someone else's changes first (the
    /// person must sign in), then what the role may write, signed records, codes, and the
    /// chart's structure last.
    pub fn hold_reason(&self) -> crate::protocol::HoldReason {
        use crate::protocol::HoldReason as R;
        let rank = |v: &Violation| match v {
            Violation::NotTheAuthor { .. } => (0, R::AnotherAuthor),
            Violation::RoleMayNotWrite { .. } | Violation::ForgedWriter { .. } => {
                (1, R::RoleMayNotWrite)
            }
            Violation::EditAfterSignature { .. }
            | Violation::FormEditAfterSignature { .. }
            | Violation::SignatureMismatch { .. } => (2, R::EditsSignedRecord),
            Violation::InvalidCode { .. } => (3, R::InvalidCode),
            Violation::ImmutableField { .. }
            | Violation::ScannedDocumentFromDevice { .. }
            | Violation::AppendOnly { .. }
            | Violation::Replaced { .. }
            | Violation::UnknownSection { .. }
            | Violation::Schema(_)
            | Violation::NotAChart(_) => (4, R::BreaksChartRules),
        };
        self.violations
            .iter()
            .map(rank)
            .min_by_key(|(n, _)| *n)
            .map(|(_, r)| r)
            .unwrap_or(R::BreaksChartRules)
    }

    /// [`Violation::summary`] of each violation, for logs and the audit trail.
    pub fn summary(&self) -> String {
        let first = self
            .violations
            .first()
            .map(Violation::summary)
            .unwrap_or_default();
        format!("{} violation(s), first: {first}", self.violations.len())
    }
}

/// Every violation found in a set of changes; any one rejects them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} violation(s), first: {}", .violations.len(), .violations[0])]
pub struct Rejection {
    pub violations: Vec<Violation>,
}

fn schema_violation(e: ChartError) -> Violation {
    match e {
        ChartError::InvalidCodeAt { path, error } => Violation::InvalidCode { path, error },
        other => Violation::Schema(other),
    }
}

#[derive(Default)]
pub(crate) struct Located {
    /// Keys from the root to the object, and the ids of the objects along the way.
    pub(crate) path: Vec<(ObjId, String)>,
}

impl Located {
    /// The keys from the root to the object.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.path.iter().map(|(_, k)| k.as_str())
    }
}

/// The changes a document has beyond some heads, rebuilt once (automerge 0.12 rebuilds
/// changes from its op set on every `get_changes`), decoded once when first read, with the
/// objects their operations write located once: what [`validate_changes`],
/// [`check_writer`] and `touched_since` read, and what the store appends. The server checks
/// a message's changes and the store commits them from one of these (`Chart::new_changes`).
pub struct NewChanges<'d> {
    doc: &'d Automerge,
    changes: Arc<ChangesSince>,
}

/// What [`NewChanges`] holds, kept by a chart between the checks of a write and its commit.
pub(crate) struct ChangesSince {
    pub(crate) since: Vec<ChangeHash>,
    pub(crate) until: Vec<ChangeHash>,
    changes: Vec<automerge::Change>,
    /// The operations of each change: `None` when automerge failed inside decoding them.
    decoded: OnceLock<Option<Vec<automerge::legacy::Change>>>,
    /// Where each object sits, found on first need; `None`: no longer reachable.
    located: Mutex<HashMap<ObjId, Option<Arc<Located>>>>,
}

impl<'d> NewChanges<'d> {
    /// The changes `doc` has beyond `heads`; refused as unreadable if automerge fails
    /// inside while rebuilding them.
    pub fn of(doc: &'d Automerge, heads: &[ChangeHash]) -> Result<NewChanges<'d>, Rejection> {
        let changes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.get_changes(heads)))
                .map_err(|_| unreadable())?;
        let changes = Arc::new(ChangesSince {
            since: heads.to_vec(),
            until: doc.get_heads(),
            changes,
            decoded: OnceLock::new(),
            located: Default::default(),
        });
        Ok(NewChanges { doc, changes })
    }

    /// The same changes of the same document, kept by a chart.
    pub(crate) fn kept(doc: &'d Automerge, changes: Arc<ChangesSince>) -> NewChanges<'d> {
        NewChanges { doc, changes }
    }

    pub(crate) fn shared(&self) -> Arc<ChangesSince> {
        self.changes.clone()
    }

    /// Each change's hash and bytes, in order.
    pub fn raw(&self) -> Vec<(ChangeHash, Vec<u8>)> {
        self.changes
            .changes
            .iter()
            .map(|c| (c.hash(), c.raw_bytes().to_vec()))
            .collect()
    }

    /// The changes one after another, as `save_after` writes them and `load_incremental`
    /// reads them.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.changes
                .changes
                .iter()
                .map(|c| c.raw_bytes().len())
                .sum(),
        );
        for c in &self.changes.changes {
            out.extend_from_slice(c.raw_bytes());
        }
        out
    }

    /// The changes, each with its decoded operations; refused as unreadable if automerge
    /// fails inside decoding them.
    pub(crate) fn decoded(
        &self,
    ) -> Result<impl Iterator<Item = (&automerge::Change, &automerge::legacy::Change)>, Rejection>
    {
        let decoded = self.changes.decoded.get_or_init(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.changes.changes.iter().map(|c| c.decode()).collect()
            }))
            .ok()
        });
        match decoded {
            Some(d) => Ok(self.changes.changes.iter().zip(d)),
            None => Err(unreadable()),
        }
    }

    /// Where the object an operation writes sits in the document (`None`: no longer
    /// reachable). Each object's parent is asked of automerge once: the path of an object
    /// is its parent's with one more key.
    pub(crate) fn locate(&self, obj: &ObjectId) -> Option<Arc<Located>> {
        let obj = match obj {
            ObjectId::Root => ROOT,
            ObjectId::Id(id) => ObjId::Id(id.counter(), id.actor().clone(), usize::MAX),
        };
        // Up from the object to the first ancestor already located (or the root), then
        // down again, locating each object on the way.
        let mut below: Vec<(ObjId, Prop)> = Vec::new();
        let mut at = obj;
        let base = loop {
            if let Some(found) = lock(&self.changes.located).get(&at) {
                break found.clone();
            }
            if at == ROOT {
                break Some(Arc::new(Located::default()));
            }
            let parent = self.doc.parents(&at).ok().and_then(|mut p| p.next());
            match parent {
                Some(p) if p.visible => {
                    below.push((at, p.prop));
                    at = p.obj;
                }
                // Inside something deleted (or conflicted away), or not an object at all.
                _ => break None,
            }
        };
        let mut located = lock(&self.changes.located);
        located.entry(at).or_insert_with(|| base.clone());
        let mut current = base;
        for (obj, prop) in below.into_iter().rev() {
            current = current.map(|up| {
                let key = match prop {
                    Prop::Map(k) => k,
                    Prop::Seq(i) => i.to_string(),
                };
                let mut path = up.path.clone();
                path.push((obj.clone(), key));
                Arc::new(Located { path })
            });
            located.insert(obj, current.clone());
        }
        current
    }
}

/// Checks the changes that `after` has and `before` does not. `before` may be an empty
/// document, when a device sends a chart it created.
///
/// automerge can fail inside while reading what a hostile device wrote (found by fuzzing: a
/// counter incremented past `i64::MAX` is summed with overflow as it is read, a panic where
/// overflow is checked): such changes are refused as unreadable, never a panic.
pub fn validate_changes(before: &Automerge, after: &Automerge) -> Result<(), Rejection> {
    validate_new_changes(before, &NewChanges::of(after, &before.get_heads())?)
}

/// [`validate_changes`] on changes already decoded (`new`: what `after` has beyond `before`).
pub fn validate_new_changes(before: &Automerge, new: &NewChanges<'_>) -> Result<(), Rejection> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checked(before, new)))
        .unwrap_or_else(|_| Err(unreadable()))
}

fn unreadable() -> Rejection {
    Rejection {
        violations: vec![Violation::Schema(ChartError::Corrupt(
            "automerge could not read the changes (it failed inside)".into(),
        ))],
    }
}

fn checked(before: &Automerge, new: &NewChanges<'_>) -> Result<(), Rejection> {
    let after = new.doc;
    let reject = |v: Vec<Violation>| Err(Rejection { violations: v });
    let schema = Reader::new(after).schema();
    match schema {
        Ok(s) if s == keys::SCHEMA_V1 => {}
        Ok(s) => {
            return reject(vec![Violation::NotAChart(ChartError::UnsupportedSchema {
                found: s,
            })])
        }
        Err(e) => return reject(vec![Violation::NotAChart(e)]),
    }
    let is_new_chart = before.get_heads().is_empty();
    let decoded: Vec<_> = new.decoded()?.collect();
    let new_hashes: HashSet<ChangeHash> = decoded.iter().map(|(c, _)| c.hash()).collect();
    let mut violations = Vec::new();
    let mut touched: BTreeSet<RecordRef> = BTreeSet::new();
    let mut touched_lists: BTreeSet<String> = BTreeSet::new();
    // (change, section, record id) for records of signable sections.
    let mut signable_edits: Vec<(ChangeHash, &'static str, String)> = Vec::new();

    for (change, expanded) in decoded {
        let hash = change.hash();
        let short = hash.to_string();
        for op in &expanded.operations {
            // An object no longer reachable (inside something deleted) is judged by the
            // operation that deleted it.
            let Some(loc) = new.locate(&op.obj) else {
                continue;
            };
            let mut keys_path: Vec<String> = loc.keys().map(str::to_string).collect();
            if let Key::Map(k) = &op.key {
                keys_path.push(k.to_string());
            }
            let Some(section) = keys_path.first().cloned() else {
                continue;
            };

            // Root: the schema key and the sections are written once, by the chart's creation.
            if loc.path.is_empty() {
                if section != keys::SCHEMA && keys::section_type(&section).is_none() {
                    violations.push(Violation::UnknownSection {
                        change: short.clone(),
                        path: section.clone(),
                    });
                } else if !is_new_chart
                    || before.get(ROOT, section.as_str()).ok().flatten().is_some()
                {
                    if section == keys::SCHEMA {
                        violations.push(Violation::ImmutableField {
                            change: short.clone(),
                            field: section.clone(),
                        });
                    } else {
                        violations.push(Violation::Replaced {
                            change: short.clone(),
                            path: section.clone(),
                        });
                    }
                }
                continue;
            }

            // The MRN is set once.
            let had_mrn = || {
                Reader::new(before)
                    .section(keys::PATIENT)
                    .ok()
                    .and_then(|p| before.get(&p, "mrn").ok().flatten())
                    .is_some()
            };
            if keys_path == [keys::PATIENT, "mrn"] && had_mrn() {
                violations.push(Violation::ImmutableField {
                    change: short.clone(),
                    field: "patient/mrn".into(),
                });
            }

            // An entry's kind is set once: what it is decides which rules apply to it (the
            // chart audit finds a chart's H&P by it). So is a scanned document's file, with
            // everything said of it: the record names those bytes, signed or not.
            // A scanned document is filed by the server, with its file, never by a change
            // from elsewhere: a device cannot name a file it did not give the server.
            if keys_path.len() == 3
                && keys_path[0] == keys::ENTRIES
                && keys_path[2] == "kind"
                && matches!(&op.action, OpType::Put(automerge::ScalarValue::Str(k)) if k.as_str() == super::types::EntryKind::ScannedDocument.token())
            {
                violations.push(Violation::ScannedDocumentFromDevice {
                    change: short.clone(),
                    entry_id: keys_path[1].clone(),
                });
            }
            let kind_or_file = keys_path.len() == 3 && keys_path[2] == "kind"
                || keys_path.len() >= 3 && keys_path[2] == "attachment";
            if kind_or_file && keys_path[0] == keys::ENTRIES {
                let existed = Reader::new(before)
                    .section(keys::ENTRIES)
                    .ok()
                    .and_then(|m| before.get(&m, keys_path[1].as_str()).ok().flatten())
                    .is_some();
                if existed {
                    violations.push(Violation::ImmutableField {
                        change: short.clone(),
                        field: format!("entries/{}/{}", keys_path[1], keys_path[2]),
                    });
                }
            }

            // Append-only lists, at the top level and nested in records.
            if let Some(list_depth) = append_only_depth(&keys_path) {
                let list_path = keys_path[..=list_depth].join("/");
                // Nested lists are read with their record, which is marked touched below.
                if list_depth == 0 {
                    touched_lists.insert(keys_path[0].clone());
                }
                if loc.path.len() == list_depth + 1 {
                    // An operation on the list itself: only inserts.
                    if !op.insert || matches!(op.action, OpType::Delete) {
                        violations.push(Violation::AppendOnly {
                            change: short.clone(),
                            list: list_path,
                        });
                    }
                } else if loc.path.len() > list_depth + 1 {
                    // Inside an element: only while the element is being created.
                    let element = &loc.path[list_depth + 1].0;
                    let created_now = after
                        .hash_for_opid(element)
                        .map(|h| new_hashes.contains(&h))
                        .unwrap_or(false);
                    if !created_now {
                        violations.push(Violation::AppendOnly {
                            change: short.clone(),
                            list: list_path,
                        });
                    }
                }
            }

            // Sections keyed by id: a record is created once and never replaced or deleted.
            if is_keyed(&section) {
                let Some(record) = keys_path.get(1).cloned() else {
                    continue;
                };
                if loc.path.len() == 1 {
                    let existed = Reader::new(before)
                        .section(&section)
                        .ok()
                        .and_then(|m| before.get(&m, record.as_str()).ok().flatten())
                        .is_some();
                    if existed || matches!(op.action, OpType::Delete) {
                        violations.push(Violation::Replaced {
                            change: short.clone(),
                            path: format!("{section}/{record}"),
                        });
                    }
                }
                if section == keys::ENTRIES {
                    signable_edits.push((hash, keys::ENTRIES, record.clone()));
                }
                // A signed form's content is frozen; its signatures list grows and the last
                // signature stamps completed_at.
                let form_content = matches!(
                    keys_path.get(2).map(String::as_str),
                    Some("fields" | "type" | "required_signers")
                );
                if section == keys::FORMS && form_content {
                    signable_edits.push((hash, keys::FORMS, record.clone()));
                }
                touched.insert((section, record));
            } else if section == keys::PATIENT || section == keys::ENCOUNTER {
                touched.insert((section, String::new()));
            }
        }
    }

    check_signatures(after, &new_hashes, &signable_edits, &mut violations);

    // Schema: every record and list the changes touched must read cleanly (for a new chart,
    // every record and list there is, below: each is read once).
    let r = Reader::new(after);
    if is_new_chart {
        touched.clear();
        touched_lists.clear();
    }
    for (section, record) in &touched {
        let path = if record.is_empty() {
            vec![section.clone()]
        } else {
            vec![section.clone(), record.clone()]
        };
        if let Err(e) = check_path(&r, &path) {
            violations.push(schema_violation(e));
        }
    }
    for list in &touched_lists {
        if let Err(e) = check_path(&r, std::slice::from_ref(list)) {
            violations.push(schema_violation(e));
        }
    }
    if is_new_chart {
        let mut all: Vec<Vec<String>> = keys::SECTIONS
            .iter()
            .map(|(k, _)| vec![k.to_string()])
            .collect();
        for (section, _) in keys::SECTIONS
            .iter()
            .filter(|(_, t)| *t == automerge::ObjType::Map)
        {
            if let Ok(map) = r.section(section) {
                for (id, _) in r.map_entries(&map, section).unwrap_or_default() {
                    all.push(vec![section.to_string(), id]);
                }
            }
        }
        for path in all.iter().filter(|p| p.len() == 2 || !is_keyed(&p[0])) {
            if let Err(e) = check_path(&r, path) {
                violations.push(schema_violation(e));
            }
        }
    }

    if violations.is_empty() {
        Ok(())
    } else {
        reject(violations)
    }
}

/// Sections whose records are maps keyed by id.
fn is_keyed(section: &str) -> bool {
    matches!(
        section,
        keys::ENTRIES | keys::CODING | keys::QUERIES | keys::FORMS | keys::ROI_REQUESTS
    )
}

/// If `path` is inside an append-only list, the index in `path` of the list's key.
fn append_only_depth(path: &[String]) -> Option<usize> {
    if keys::is_append_only(&path[0]) {
        return Some(0);
    }
    keys::NESTED_APPEND_ONLY
        .iter()
        .find(|(section, list)| {
            path[0] == *section && path.get(2).map(String::as_str) == Some(*list)
        })
        .map(|_| 2)
}

/// Edits of a signed entry or form are refused when the signature is in their causal past;
/// edits concurrent with the signature are kept (the reader reports them). New signatures
/// must match the entry at the heads they name.
fn check_signatures(
    after: &Automerge,
    new_hashes: &HashSet<ChangeHash>,
    edits: &[(ChangeHash, &'static str, String)],
    violations: &mut Vec<Violation>,
) {
    let r = Reader::new(after);
    // (section, record) -> the changes that signed it.
    let mut signed_by: HashMap<(&'static str, String), Vec<ChangeHash>> = HashMap::new();
    if let Ok(list) = r.section(keys::SIGNATURES) {
        if let Ok(items) = r.map_items(&list, keys::SIGNATURES) {
            for (n, item) in items.iter().enumerate() {
                let Ok(sig) = r.signature(item, &format!("{}/{n}", keys::SIGNATURES)) else {
                    continue; // reported by the schema check
                };
                if let Some(h) = after.hash_for_opid(item) {
                    if new_hashes.contains(&h) {
                        match signing::content_at(after, &sig.entry_id, &sig.heads) {
                            Ok(content) if signing::content_hash(&content) == sig.content_hash => {}
                            _ => violations.push(Violation::SignatureMismatch {
                                entry_id: sig.entry_id.clone(),
                            }),
                        }
                    }
                    signed_by
                        .entry((keys::ENTRIES, sig.entry_id))
                        .or_default()
                        .push(h);
                }
            }
        }
    }
    if let Ok(forms) = r.section(keys::FORMS) {
        if let Ok(records) = r.map_entries(&forms, keys::FORMS) {
            for (id, obj) in records {
                let Ok(list) = r.list(&obj, "signatures", keys::FORMS) else {
                    continue;
                };
                let Ok(items) = r.map_items(&list, keys::FORMS) else {
                    continue;
                };
                for item in items {
                    if let Some(h) = after.hash_for_opid(&item) {
                        signed_by
                            .entry((keys::FORMS, id.clone()))
                            .or_default()
                            .push(h);
                    }
                }
            }
        }
    }
    let mut reported = HashSet::new();
    for (change, section, record) in edits {
        let Some(signers) = signed_by.get(&(*section, record.clone())) else {
            continue;
        };
        let after_signing = signers
            .iter()
            .any(|s| s != change && signing::is_ancestor(after, s, change));
        if after_signing && reported.insert((*change, record.clone())) {
            let change = change.to_string();
            violations.push(if *section == keys::ENTRIES {
                Violation::EditAfterSignature {
                    change,
                    entry_id: record.clone(),
                }
            } else {
                Violation::FormEditAfterSignature {
                    change,
                    form_id: record.clone(),
                }
            });
        }
    }
}

/// Reads the record or section a path points into, as the schema requires.
pub(crate) fn check_path<D: ReadDoc>(r: &Reader<'_, D>, path: &[String]) -> Result<(), ChartError> {
    let section = path.first().map(String::as_str).unwrap_or_default();
    let record = path.get(1).map(String::as_str);
    let find = |key: &str| -> Result<ObjId, ChartError> {
        let map = r.section(key)?;
        let id = record.unwrap_or_default();
        r.map_entries(&map, key)?
            .into_iter()
            .find(|(k, _)| k == id)
            .map(|(_, o)| o)
            .ok_or(ChartError::NotFound {
                what: "record",
                id: id.to_string(),
            })
    };
    // Codes are checked for the code-set year of the discharge, or today's while the patient
    // is in (a tablet with another year's table: the change is held, not refused).
    let code_date = || {
        r.encounter()
            .ok()
            .and_then(|e| e.discharged_at)
            .unwrap_or_else(super::Timestamp::now)
    };
    match section {
        keys::ENTRIES => {
            let entry = r.entry(record.unwrap_or_default(), &find(section)?)?;
            let path = format!("{section}/{}", entry.id);
            for c in &entry.content.codes {
                check_code(&c.system, &c.code, &path, code_date())?;
            }
            Ok(())
        }
        keys::CODING => {
            let coding = r.coding(record.unwrap_or_default(), &find(section)?)?;
            check_code(
                &coding.system,
                &coding.code,
                &format!("{section}/{}", coding.id),
                code_date(),
            )
        }
        keys::SCHEMA => r.schema().map(|_| ()),
        keys::PATIENT => r.patient().map(|_| ()),
        keys::ENCOUNTER => r.encounter().map(|_| ()),
        keys::QUERIES => r
            .query(record.unwrap_or_default(), &find(section)?)
            .map(|_| ()),
        keys::FORMS => r
            .form(record.unwrap_or_default(), &find(section)?)
            .map(|_| ()),
        keys::ROI_REQUESTS => r
            .roi_request(record.unwrap_or_default(), &find(section)?)
            .map(|_| ()),
        keys::EVENTS => r.log(section, |r, o, p| r.event(o, p)).map(|_| ()),
        keys::SIGNATURES => r.log(section, |r, o, p| r.signature(o, p)).map(|_| ()),
        keys::AMENDMENTS => r.log(section, |r, o, p| r.amendment(o, p)).map(|_| ()),
        keys::DISCLOSURES => r.log(section, |r, o, p| r.disclosure(o, p)).map(|_| ()),
        keys::CASE_LOG => r.log(section, |r, o, p| r.case_log(o, p)).map(|_| ()),
        keys::HANDOVERS => r.log(section, |r, o, p| r.handover(o, p)).map(|_| ()),
        other => Err(ChartError::Schema {
            path: other.to_string(),
            reason: "not part of the chart schema".into(),
        }),
    }
}

/// Whether what the changes write in `section` (entries, signatures or amendments) is
/// about scanned documents only: the part of those sections records staff write.
fn only_scanned_documents(new: &NewChanges<'_>, section: &str, entries: &BTreeSet<String>) -> bool {
    use super::types::EntryKind;
    let after = Reader::at(new.doc, &new.changes.until);
    let before = Reader::at(new.doc, &new.changes.since);
    let Ok(kinds) = after.records(keys::ENTRIES, |r, id, obj| {
        Ok((id.to_string(), r.entry_content(obj, id)?.kind))
    }) else {
        return false;
    };
    let kinds: HashMap<String, EntryKind> = kinds.into_iter().collect();
    let scanned = |id: &str| kinds.get(id) == Some(&EntryKind::ScannedDocument);
    match section {
        keys::ENTRIES => entries.iter().all(|id| scanned(id)),
        keys::SIGNATURES => {
            let read = |r: &Reader<'_>| r.log(keys::SIGNATURES, |r, o, p| r.signature(o, p));
            let (Ok(now), Ok(had)) = (read(&after), read(&before)) else {
                return false;
            };
            now.iter()
                .filter(|s| !had.contains(s))
                .all(|s| scanned(&s.entry_id))
        }
        keys::AMENDMENTS => {
            let read = |r: &Reader<'_>| r.log(keys::AMENDMENTS, |r, o, p| r.amendment(o, p));
            let (Ok(now), Ok(had)) = (read(&after), read(&before)) else {
                return false;
            };
            now.iter()
                .filter(|a| !had.contains(a))
                .all(|a| scanned(&a.target_entry_id))
        }
        _ => false,
    }
}

/// The server's check of who wrote the changes `after` has beyond `before`, against the
/// signed-in user (from the bearer token): each section they touch must be one the user's role
/// writes, and a change that names an author must name this user in this role. (Changes with
/// no author, from clients that set none, are the signed-in user's.)
pub fn check_writer(
    before: &[ChangeHash],
    after: &super::Chart,
    user: &str,
    role: super::types::Role,
) -> Result<(), Rejection> {
    check_new_writer(&NewChanges::of(after.doc(), before)?, user, role)
}

/// [`check_writer`] on changes already decoded (`new`: what `after` has beyond `before`).
pub fn check_new_writer(
    new: &NewChanges<'_>,
    user: &str,
    role: super::types::Role,
) -> Result<(), Rejection> {
    let mut violations = Vec::new();
    // One pass over the changes: the author each names, every field naming a writer, and
    // the sections written inside.
    let decoded: Vec<_> = new.decoded()?.collect();
    for (change, _) in &decoded {
        if let Some(staff) = super::author_in(new.doc, change) {
            if staff.user != user || staff.role != role {
                violations.push(Violation::NotTheAuthor {
                    change: change.hash().to_string(),
                });
            }
        }
    }
    // Creating the sections is part of creating a chart (validate_changes allows it only
    // then); what counts is what is written inside them.
    // The people a record names as its writer: the signed-in user, in their role. (A form's
    // signatures name the patient or a witness, whom the user records.)
    const WRITER_FIELDS: [&str; 7] = [
        "author",
        "signer",
        "by",
        "coded_by",
        "asked_by",
        "created_by",
        "from",
    ];
    const ROLE_SECTIONS: [&str; 3] = [keys::ENTRIES, keys::SIGNATURES, keys::AMENDMENTS];
    // Sections written inside (as `touched_since(before).written` finds them).
    let mut written: BTreeSet<String> = BTreeSet::new();
    // The entries written inside or created.
    let mut entries_written: BTreeSet<String> = BTreeSet::new();
    for (change, decoded) in decoded {
        for op in &decoded.operations {
            if op.obj == ObjectId::Root {
                continue;
            }
            let Some(loc) = new.locate(&op.obj) else {
                continue;
            };
            let path: Vec<&str> = loc.keys().collect();
            let Some(section) = path.first().copied() else {
                continue;
            };
            if keys::section_type(section).is_some() && !written.contains(section) {
                written.insert(section.to_string());
            }
            if section == keys::ENTRIES {
                match (path.get(1), &op.key) {
                    (Some(id), _) => entries_written.insert(id.to_string()),
                    (None, Key::Map(id)) => entries_written.insert(id.to_string()),
                    (None, _) => false,
                };
            }
            let (OpType::Put(automerge::ScalarValue::Str(value)), Key::Map(key)) =
                (&op.action, &op.key)
            else {
                continue;
            };
            let in_form_signature = section == keys::FORMS && path.get(2) == Some(&"signatures");
            let forged = if WRITER_FIELDS.contains(&key.as_str()) && !in_form_signature {
                value.as_str() != user
            } else if key.as_str() == "role" && ROLE_SECTIONS.contains(&section) {
                value.as_str() != role.token()
            } else {
                false
            };
            if forged {
                violations.push(Violation::ForgedWriter {
                    change: change.hash().to_string(),
                    field: key.to_string(),
                    path: path.join("/"),
                });
            }
        }
    }
    for section in written {
        let mut writers = super::write::section_writers(&section).to_vec();
        if section == keys::QUERIES {
            // Physicians answer queries: their responses are appended to the query.
            writers.push(super::types::Role::Physician);
        }
        let scanned = || {
            super::write::files_scanned_documents(role)
                && only_scanned_documents(new, &section, &entries_written)
        };
        if !writers.contains(&role) && !scanned() {
            violations.push(Violation::RoleMayNotWrite { role, section });
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Rejection { violations })
    }
}
