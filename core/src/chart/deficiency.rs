//! The deficiencies a chart audit finds, record by record, so that the store can keep a count
//! per chart and refresh only the records a change touched.
//!
//! The record-level rules so far: a note or summary not signed by its author, an entry edited
//! concurrently with its signature, a form missing a required signer, an open physician query,
//! and a register with unresolved concurrent values.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ObjId, ReadDoc, ROOT};
use serde::{Deserialize, Serialize};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::signing;
use super::touched::{RecordRef, Touched};
use super::types::{DeficiencyKind, EntryStatus, QueryStatus, SignatureMeaning};
use super::view::{AmendmentView, SignatureView};
use super::Chart;

/// One thing a chart is missing or has wrong. Ids, roles and paths only.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Deficiency {
    pub kind: DeficiencyKind,
    /// The record it is about: `entries`, `forms`, `queries`, ... (or `patient`, `encounter`).
    pub section: String,
    /// The record's id; empty for the patient and encounter sections.
    pub record_id: String,
    /// Who must act: a user id or a role token.
    pub responsible: Option<String>,
    /// What exactly: the missing signer role, or the conflicted path below the record.
    pub detail: Option<String>,
}

impl Chart {
    /// Every deficiency in the chart.
    pub fn deficiencies(&self) -> Result<Vec<Deficiency>, ChartError> {
        let r = Reader::new(&self.doc);
        let mut scopes: BTreeSet<RecordRef> = BTreeSet::new();
        scopes.insert((keys::PATIENT.into(), String::new()));
        scopes.insert((keys::ENCOUNTER.into(), String::new()));
        for section in [
            keys::ENTRIES,
            keys::FORMS,
            keys::QUERIES,
            keys::CODING,
            keys::ROI_REQUESTS,
        ] {
            let map = r.section(section)?;
            for (id, _) in r.map_entries(&map, section)? {
                scopes.insert((section.to_string(), id));
            }
        }
        self.deficiencies_in(&scopes)
    }

    /// The deficiencies of the given records only. Records that do not exist have none.
    pub fn deficiencies_in(
        &self,
        records: &BTreeSet<RecordRef>,
    ) -> Result<Vec<Deficiency>, ChartError> {
        let entry_ids: BTreeSet<&str> = records
            .iter()
            .filter(|(s, _)| s == keys::ENTRIES)
            .map(|(_, id)| id.as_str())
            .collect();
        let signing = if entry_ids.is_empty() {
            Signing::default()
        } else {
            self.signing_records_of(&entry_ids)?
        };
        self.deficiencies_with(records, &signing)
    }

    /// The deficiencies of the records some changes touched (see [`Chart::touched_since`]).
    /// The same answer as [`Chart::deficiencies_in`] of `touched.records`, faster when the
    /// changes only add entries: the signatures of an entry are causally after it, so an
    /// entry the changes created can only be named by signatures the changes added, and the
    /// long signatures list need not be read.
    pub fn deficiencies_after(&self, touched: &Touched) -> Result<Vec<Deficiency>, ChartError> {
        let older_entries: BTreeSet<&str> = touched
            .records
            .iter()
            .filter(|r| r.0 == keys::ENTRIES && !touched.created.contains(*r))
            .map(|(_, id)| id.as_str())
            .collect();
        if !older_entries.is_empty() {
            return self.deficiencies_in(&touched.records);
        }
        let r = Reader::new(&self.doc);
        let mut signing = Signing::default();
        for (section, n) in &touched.new_items {
            let list = r.section(section)?;
            let Some((automerge::Value::Object(_), item)) = self.doc.get(&list, *n)? else {
                continue;
            };
            let path = format!("{section}/{n}");
            if section == keys::SIGNATURES {
                let s = r.signature(&item, &path)?;
                signing
                    .signatures
                    .entry(s.entry_id.clone())
                    .or_default()
                    .push(s);
            } else {
                let a = r.amendment(&item, &path)?;
                signing
                    .amendments
                    .entry(a.target_entry_id.clone())
                    .or_default()
                    .push(a);
            }
        }
        self.deficiencies_with(&touched.records, &signing)
    }

    fn deficiencies_with(
        &self,
        records: &BTreeSet<RecordRef>,
        signing: &Signing,
    ) -> Result<Vec<Deficiency>, ChartError> {
        let r = Reader::new(&self.doc);
        let (signatures, amendments) = (&signing.signatures, &signing.amendments);
        let mut out = Vec::new();
        for (section, id) in records {
            let obj = if id.is_empty() {
                match self.doc.get(ROOT, section.as_str())? {
                    Some((automerge::Value::Object(_), obj)) => obj,
                    _ => continue,
                }
            } else {
                match self.record(section, "record", id) {
                    Ok(obj) => obj,
                    Err(ChartError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            };
            let deficiency =
                |kind, responsible: Option<String>, detail: Option<String>| Deficiency {
                    kind,
                    section: section.clone(),
                    record_id: id.clone(),
                    responsible,
                    detail,
                };
            match section.as_str() {
                keys::ENTRIES => {
                    let mut entry = r.entry(id, &obj)?;
                    let sigs = signatures
                        .get(id.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let amends = amendments
                        .get(id.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    signing::derive_entry_state(&mut entry, sigs, amends)?;
                    if entry.status != EntryStatus::EnteredInError {
                        let author = Some(entry.content.author.clone());
                        let author_signed = sigs.iter().any(|s| {
                            s.meaning == SignatureMeaning::Author
                                && s.signer == entry.content.author
                        });
                        if !author_signed && entry.content.kind.requires_signature() {
                            out.push(deficiency(
                                DeficiencyKind::UnsignedEntry,
                                author.clone(),
                                None,
                            ));
                        }
                        if entry.edited_after_signing {
                            out.push(deficiency(DeficiencyKind::EditedAfterSigning, author, None));
                        }
                    }
                }
                keys::FORMS => {
                    for role in r.form(id, &obj)?.missing_signers {
                        out.push(deficiency(
                            DeficiencyKind::FormMissingSignature,
                            Some(role.clone()),
                            Some(role),
                        ));
                    }
                }
                keys::QUERIES => {
                    let query = r.query(id, &obj)?;
                    if query.status == QueryStatus::Open {
                        out.push(deficiency(DeficiencyKind::OpenQuery, Some(query.to), None));
                    }
                }
                _ => {}
            }
            let mut base = vec![section.clone()];
            if !id.is_empty() {
                base.push(id.clone());
            }
            for c in self.conflicts_under(obj, base.clone()) {
                out.push(deficiency(
                    DeficiencyKind::UnresolvedConflict,
                    None,
                    Some(c.path[base.len()..].join("/")),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The signatures and amendments that name the given entries, read without reading the
    /// rest of those lists' items.
    fn signing_records_of(&self, entry_ids: &BTreeSet<&str>) -> Result<Signing, ChartError> {
        let r = Reader::new(&self.doc);
        let matching = |section: &str, field: &str| -> Result<Vec<(ObjId, String)>, ChartError> {
            let list = r.section(section)?;
            let mut found = Vec::new();
            for (n, item) in r.map_items(&list, section)?.into_iter().enumerate() {
                let path = format!("{section}/{n}");
                if let Some(target) = r.opt_str(&item, field, &path)? {
                    if entry_ids.contains(target.as_str()) {
                        found.push((item, path));
                    }
                }
            }
            Ok(found)
        };
        let mut signatures: BTreeMap<String, Vec<SignatureView>> = BTreeMap::new();
        for (item, path) in matching(keys::SIGNATURES, "entry_id")? {
            let s = r.signature(&item, &path)?;
            signatures.entry(s.entry_id.clone()).or_default().push(s);
        }
        let mut amendments: BTreeMap<String, Vec<AmendmentView>> = BTreeMap::new();
        for (item, path) in matching(keys::AMENDMENTS, "target_entry_id")? {
            let a = r.amendment(&item, &path)?;
            amendments
                .entry(a.target_entry_id.clone())
                .or_default()
                .push(a);
        }
        Ok(Signing {
            signatures,
            amendments,
        })
    }
}

/// Signatures and amendments by the entry they name.
#[derive(Default)]
struct Signing {
    signatures: BTreeMap<String, Vec<SignatureView>>,
    amendments: BTreeMap<String, Vec<AmendmentView>>,
}
