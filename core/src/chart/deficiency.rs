//! The chart audit: what a records technician finds missing or wrong in a chart, each with who
//! must act and by when. The store keeps what these rules find per record, so that counts and
//! worklists need no document and a commit refreshes only the records it touched.
//!
//! The rules, and where they come from (docs/chart-audit.md has the same list for users):
//! - an H&P, progress, nursing, consult, operative or procedure note, or a discharge summary,
//!   not signed by its author: 42 CFR 482.24(c)(1), every entry authenticated by its author;
//! - a history and physical missing, or documented more than 24 hours after admission:
//!   42 CFR 482.22(c)(5)(i) and 482.24(c)(4)(i);
//! - a discharge summary missing once the patient is discharged: 42 CFR 482.24(c)(4)(vii);
//! - a form without a signature it requires, e.g. informed consent: 42 CFR 482.24(c)(4)(v);
//! - coding not final at discharge: no final principal diagnosis, an assignment still proposed
//!   or queried, or an inpatient diagnosis without its present-on-admission indicator (CMS POA
//!   reporting, 42 U.S.C. 1395ww(d)(4)(D)); the final diagnosis is part of the completed record,
//!   482.24(c)(4)(vii);
//! - a physician query still open;
//! - a register with unresolved concurrent values (the chart says two things at once);
//! - an entry edited concurrently with its signature (the author turns the edit into an
//!   addendum, 482.24(c)(1));
//! - a release-of-information request not yet fulfilled or denied: the records office's work,
//!   due by the request's own due date (45 CFR 164.524(b)(2) gives a patient's request 30 days).
//!
//! Due dates: the record must be complete within 30 days of discharge (42 CFR
//! 482.24(c)(4)(viii)), so every deficiency of a discharged chart is due then, with two
//! exceptions: the H&P (missing or late) is due 24 hours after admission, whether or not the
//! patient is still in, and a request for records by its own due date. While the patient is in, the other deficiencies have no due date. A deficiency
//! is overdue once its due date passes.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ObjId, ReadDoc, ROOT};
use serde::{Deserialize, Serialize};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::signing;
use super::touched::{RecordRef, Touched};
use super::types::{
    AmendmentKind, CodingSequence, CodingStatus, DeficiencyKind, EncounterClass, EncounterStatus,
    EntryKind, EntryStatus, QueryKind, QueryStatus, RoiStatus, SignatureMeaning, Timestamp,
};
use super::view::{AmendmentView, CodingView, EncounterView, SignatureView};
use super::Chart;

/// One thing a chart is missing or has wrong. Ids, roles and paths only.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// What exactly: the missing signer role, the conflicted path below the record, the late
    /// H&P's entry id, the coding status, `principal_diagnosis`.
    pub detail: Option<String>,
    /// When it must be put right; none while the patient is in, except for the H&P.
    pub due_at: Option<Timestamp>,
}

impl Deficiency {
    /// Whether the due date has passed at `now`.
    pub fn overdue_at(&self, now: Timestamp) -> bool {
        self.due_at.is_some_and(|due| due < now)
    }
}

/// Days after discharge by which the record must be complete (42 CFR 482.24(c)(4)(viii)).
pub const COMPLETE_WITHIN_DAYS: i64 = 30;

/// Hours after admission by which the history and physical must be in the chart
/// (42 CFR 482.22(c)(5)(i)).
pub const HISTORY_PHYSICAL_WITHIN_HOURS: i64 = 24;

/// The version of these rules. A store whose index an older version built rebuilds it when it
/// opens; bump it whenever a rule changes what it finds.
pub const RULES_VERSION: i64 = 4;

/// What a commit's refresh of the index covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshScope {
    /// Every record of the chart (a discharge moves every due date).
    Chart,
    /// These records only.
    Records(BTreeSet<RecordRef>),
}

/// The deficiencies of a scope: the store replaces what it holds for the scope with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub scope: RefreshScope,
    pub deficiencies: Vec<Deficiency>,
}

/// The due dates a chart's encounter sets.
struct Due {
    encounter: EncounterView,
    /// 30 days after discharge; none while the patient is in.
    record: Option<Timestamp>,
    history_physical: Timestamp,
}

impl Due {
    fn of(encounter: EncounterView) -> Due {
        let discharged = encounter.status == EncounterStatus::Discharged;
        Due {
            record: encounter
                .discharged_at
                .filter(|_| discharged)
                .map(|at| at.plus_seconds(COMPLETE_WITHIN_DAYS * 86_400)),
            history_physical: encounter
                .admitted_at
                .plus_seconds(HISTORY_PHYSICAL_WITHIN_HOURS * 3_600),
            encounter,
        }
    }

    fn discharged(&self) -> bool {
        self.encounter.status == EncounterStatus::Discharged
    }

    /// The attending physician, or the role when none is named.
    fn physician(&self) -> String {
        self.encounter
            .attending
            .clone()
            .unwrap_or_else(|| "physician".into())
    }
}

/// What the rules look at in an entry. Its content is read whole only when a signature or an
/// amendment names it: a signature's hash is compared with the content's, and an unsigned
/// entry's status is the one stored.
struct EntryFacts {
    kind: EntryKind,
    author: String,
    recorded_at: Timestamp,
    /// As readers show it (amendments applied).
    status: EntryStatus,
    edited_after_signing: bool,
}

impl EntryFacts {
    fn read(
        r: &Reader<'_, automerge::Automerge>,
        id: &str,
        obj: &ObjId,
        signatures: &[SignatureView],
        amendments: &[AmendmentView],
    ) -> Result<EntryFacts, ChartError> {
        if signatures.is_empty() && amendments.is_empty() {
            let path = format!("{}/{id}", keys::ENTRIES);
            return r.on(obj, |r| {
                Ok(EntryFacts {
                    kind: r.token(obj, "kind", &path, EntryKind::from_token)?,
                    author: r.nonempty(obj, "author", &path)?,
                    recorded_at: r.time(obj, "recorded_at", &path)?,
                    status: r.token(obj, "status", &path, EntryStatus::from_token)?,
                    edited_after_signing: false,
                })
            });
        }
        let mut entry = r.entry(id, obj)?;
        signing::derive_entry_state(&mut entry, signatures, amendments)?;
        Ok(EntryFacts {
            kind: entry.content.kind,
            author: entry.content.author,
            recorded_at: entry.content.recorded_at,
            status: entry.status,
            edited_after_signing: entry.edited_after_signing,
        })
    }
}

impl Chart {
    /// Every deficiency in the chart.
    pub fn deficiencies(&self) -> Result<Vec<Deficiency>, ChartError> {
        let r = Reader::new(&self.doc);
        let mut scopes: BTreeSet<RecordRef> = BTreeSet::new();
        scopes.insert((keys::PATIENT.into(), String::new()));
        scopes.insert((keys::ENCOUNTER.into(), String::new()));
        scopes.insert((keys::CODING.into(), String::new()));
        // Each record's object as its section lists it, not looked up again by id.
        let mut found: BTreeMap<RecordRef, ObjId> = BTreeMap::new();
        for section in [
            keys::ENTRIES,
            keys::FORMS,
            keys::QUERIES,
            keys::CODING,
            keys::ROI_REQUESTS,
        ] {
            let map = r.section(section)?;
            for (id, obj) in r.map_entries(&map, section)? {
                scopes.insert((section.to_string(), id.clone()));
                found.insert((section.to_string(), id), obj);
            }
        }
        self.deficiencies_found(&scopes, &found)
    }

    /// The deficiencies of the given records only. Records that do not exist have none.
    pub fn deficiencies_in(
        &self,
        records: &BTreeSet<RecordRef>,
    ) -> Result<Vec<Deficiency>, ChartError> {
        self.deficiencies_found(records, &BTreeMap::new())
    }

    /// [`Chart::deficiencies_in`], with the objects of records already `found`.
    fn deficiencies_found(
        &self,
        records: &BTreeSet<RecordRef>,
        found: &BTreeMap<RecordRef, ObjId>,
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
        self.deficiencies_with(records, &signing, found)
    }

    /// What the index must refresh after some changes (see [`Chart::touched_since`]): the
    /// records they touched, the chart-wide rules when the changes could move them, or the
    /// whole chart when the encounter changed (its dates set every due date). The same answer
    /// as [`Chart::deficiencies_in`] of the scope, faster when the changes only add entries:
    /// the signatures of an entry are causally after it, so an entry the changes created can
    /// only be named by signatures the changes added, and the long signatures list need not be
    /// read.
    pub fn deficiencies_after(&self, touched: &Touched) -> Result<Refresh, ChartError> {
        let encounter: RecordRef = (keys::ENCOUNTER.into(), String::new());
        if touched.records.contains(&encounter) {
            return Ok(Refresh {
                scope: RefreshScope::Chart,
                deficiencies: self.deficiencies()?,
            });
        }
        let mut scope = touched.records.clone();
        if touched.sections.contains(keys::CODING) {
            scope.insert((keys::CODING.into(), String::new()));
        }
        if self.moves_chart_rules(touched)? {
            scope.insert(encounter);
        }
        let older_entries: BTreeSet<&str> = scope
            .iter()
            .filter(|r| r.0 == keys::ENTRIES && !touched.created.contains(*r))
            .map(|(_, id)| id.as_str())
            .collect();
        let deficiencies = if !older_entries.is_empty() {
            self.deficiencies_in(&scope)?
        } else {
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
            self.deficiencies_with(&scope, &signing, &BTreeMap::new())?
        };
        Ok(Refresh {
            scope: RefreshScope::Records(scope),
            deficiencies,
        })
    }

    /// Whether the changes could change what the H&P and discharge-summary rules find: they
    /// touched an H&P or a discharge summary (an amendment entering one in error touches it
    /// too; an entry's kind never changes). An observation's commit reads one field here.
    fn moves_chart_rules(&self, touched: &Touched) -> Result<bool, ChartError> {
        let r = Reader::new(&self.doc);
        for (section, id) in &touched.records {
            if section != keys::ENTRIES {
                continue;
            }
            let Ok(obj) = self.record(keys::ENTRIES, "entry", id) else {
                continue;
            };
            let path = format!("{}/{id}", keys::ENTRIES);
            let kind = r.token(&obj, "kind", &path, EntryKind::from_token)?;
            if matches!(
                kind,
                EntryKind::HistoryPhysical | EntryKind::DischargeSummary
            ) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Up to how many records [`Chart::deficiencies_with`] looks for conflicts by walking
    /// each record (a commit's few); past it, [`Chart::conflicts`] finds them in what
    /// concurrent changes wrote, once for the chart.
    const WALK_RECORDS_UP_TO: usize = 16;

    fn deficiencies_with(
        &self,
        records: &BTreeSet<RecordRef>,
        signing: &Signing,
        found: &BTreeMap<RecordRef, ObjId>,
    ) -> Result<Vec<Deficiency>, ChartError> {
        let r = Reader::new(&self.doc);
        let (signatures, amendments) = (&signing.signatures, &signing.amendments);
        let due = Due::of(r.encounter()?);
        let mut out = Vec::new();
        let chart_wide = std::cell::OnceCell::new();
        // A record's object: as found, else looked up (`None`: it does not exist).
        let object = |record: &RecordRef| -> Result<Option<ObjId>, ChartError> {
            let (section, id) = record;
            if let Some(obj) = found.get(record) {
                return Ok(Some(obj.clone()));
            }
            if id.is_empty() {
                return Ok(match self.doc.get(ROOT, section.as_str())? {
                    Some((automerge::Value::Object(_), obj)) => Some(obj),
                    _ => None,
                });
            }
            match self.record(section, "record", id) {
                Ok(obj) => Ok(Some(obj)),
                Err(ChartError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        // The entries in scope, read once: the chart rules (the encounter's record, sorted
        // before them) look at every entry's kind, and take it from these.
        let mut entries: BTreeMap<&str, (ObjId, EntryFacts)> = BTreeMap::new();
        for record in records.iter().filter(|(s, _)| s == keys::ENTRIES) {
            if let Some(obj) = object(record)? {
                let id = record.1.as_str();
                let sigs = signatures.get(id).map(Vec::as_slice).unwrap_or(&[]);
                let amends = amendments.get(id).map(Vec::as_slice).unwrap_or(&[]);
                let facts = EntryFacts::read(&r, id, &obj, sigs, amends)?;
                entries.insert(id, (obj, facts));
            }
        }
        for record in records {
            let (section, id) = record;
            let obj = if section == keys::ENTRIES {
                match entries.get(id.as_str()) {
                    Some((obj, _)) => obj.clone(),
                    None => continue,
                }
            } else {
                match object(record)? {
                    Some(obj) => obj,
                    None => continue,
                }
            };
            let deficiency =
                |kind, responsible: Option<String>, detail: Option<String>| Deficiency {
                    kind,
                    section: section.clone(),
                    record_id: id.clone(),
                    responsible,
                    detail,
                    due_at: due.record,
                };
            match section.as_str() {
                keys::ENTRIES => {
                    let Some((_, entry)) = entries.get(id.as_str()) else {
                        continue;
                    };
                    let sigs = signatures
                        .get(id.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    if entry.status != EntryStatus::EnteredInError {
                        let author = Some(entry.author.clone());
                        let author_signed = sigs.iter().any(|s| {
                            s.meaning == SignatureMeaning::Author && s.signer == entry.author
                        });
                        if !author_signed && entry.kind.requires_signature() {
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
                        let kind = match query.kind {
                            QueryKind::Query => DeficiencyKind::OpenQuery,
                            QueryKind::Deficiency => DeficiencyKind::AddedByHand,
                        };
                        out.push(deficiency(kind, Some(query.to), None));
                    }
                }
                keys::ROI_REQUESTS => {
                    // A request for records is the records office's to answer by its own due
                    // date (45 CFR 164.524(b)(2): 30 days for a patient's own records).
                    let request = r.roi_request(id, &obj)?;
                    if matches!(
                        request.status,
                        RoiStatus::Received | RoiStatus::AuthorizationVerified
                    ) {
                        out.push(Deficiency {
                            due_at: Some(request.due_at),
                            ..deficiency(
                                DeficiencyKind::ReleaseDue,
                                Some("technician".into()),
                                Some(request.status.token().into()),
                            )
                        });
                    }
                }
                keys::CODING if id.is_empty() => {
                    // The coding as a whole: its records' conflicts are their own.
                    self.principal_rule(&due, &mut out)?;
                    continue;
                }
                keys::CODING if due.discharged() => {
                    let coding = r.coding(id, &obj)?;
                    if coding.status != CodingStatus::Final {
                        out.push(deficiency(
                            DeficiencyKind::CodingNotFinal,
                            Some("coder".into()),
                            Some(coding.status.token().into()),
                        ));
                    }
                    if needs_poa(&due.encounter, &coding) {
                        out.push(deficiency(
                            DeficiencyKind::PoaMissing,
                            Some("coder".into()),
                            None,
                        ));
                    }
                }
                keys::ENCOUNTER => self.chart_rules(&due, &entries, &mut out)?,
                _ => {}
            }
            let mut base = vec![section.clone()];
            if !id.is_empty() {
                base.push(id.clone());
            }
            // A few records are walked; for many, the chart's conflicts are found once.
            let conflicts = match records.len() > Self::WALK_RECORDS_UP_TO {
                true => chart_wide
                    .get_or_init(|| self.conflicts())
                    .iter()
                    .filter(|c| c.path.starts_with(&base))
                    .cloned()
                    .collect(),
                false => self.conflicts_under(obj, base.clone()),
            };
            for c in conflicts {
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

    /// The principal ICD-10-CM diagnosis: the final one, else the one coded last.
    pub fn principal_diagnosis(&self) -> Result<Option<CodingView>, ChartError> {
        let r = Reader::new(&self.doc);
        let coding = r.section(keys::CODING)?;
        let mut best: Option<CodingView> = None;
        for (id, obj) in r.map_entries(&coding, keys::CODING)? {
            let c = r.coding(&id, &obj)?;
            if c.system != "icd10cm" || c.sequence != CodingSequence::Principal {
                continue;
            }
            let rank = |c: &CodingView| (c.status == CodingStatus::Final, c.coded_at);
            if best.as_ref().is_none_or(|b| rank(&c) > rank(b)) {
                best = Some(c);
            }
        }
        Ok(best)
    }

    /// The rules about the chart as a whole, kept on the encounter record: the H&P, the
    /// discharge summary and the principal diagnosis.
    /// `read`: entries already read whole (the rest are read by the few fields needed).
    fn chart_rules(
        &self,
        due: &Due,
        read: &BTreeMap<&str, (ObjId, EntryFacts)>,
        out: &mut Vec<Deficiency>,
    ) -> Result<(), ChartError> {
        let r = Reader::new(&self.doc);
        let class = due.encounter.class;
        let chart_level = |kind, responsible: String, detail: Option<String>, due_at| Deficiency {
            kind,
            section: keys::ENCOUNTER.into(),
            record_id: String::new(),
            responsible: Some(responsible),
            detail,
            due_at,
        };

        // The H&Ps and discharge summaries that stand (not entered in error), read by kind.
        let entries = r.section(keys::ENTRIES)?;
        let mut documents: Vec<(String, EntryKind, Timestamp, String)> = Vec::new();
        let is_document = |kind| {
            matches!(
                kind,
                EntryKind::HistoryPhysical | EntryKind::DischargeSummary
            )
        };
        for (id, obj) in r.map_entries(&entries, keys::ENTRIES)? {
            if let Some((_, e)) = read.get(id.as_str()) {
                if is_document(e.kind) && e.status != EntryStatus::EnteredInError {
                    documents.push((id, e.kind, e.recorded_at, e.author.clone()));
                }
                continue;
            }
            let path = format!("{}/{id}", keys::ENTRIES);
            let kind = r.token(&obj, "kind", &path, EntryKind::from_token)?;
            if !is_document(kind) {
                continue;
            }
            if r.token(&obj, "status", &path, EntryStatus::from_token)?
                == EntryStatus::EnteredInError
            {
                continue;
            }
            let at = r.time(&obj, "recorded_at", &path)?;
            let author = r.nonempty(&obj, "author", &path)?;
            documents.push((id, kind, at, author));
        }
        if !documents.is_empty() {
            let ids: BTreeSet<&str> = documents.iter().map(|d| d.0.as_str()).collect();
            let in_error: BTreeSet<String> = self
                .signing_records_of(&ids)?
                .amendments
                .into_values()
                .flatten()
                .filter(|a| a.kind == AmendmentKind::EnteredInError)
                .map(|a| a.target_entry_id)
                .collect();
            documents.retain(|d| !in_error.contains(&d.0));
        }

        if class != EncounterClass::Emergency {
            let first = documents
                .iter()
                .filter(|d| d.1 == EntryKind::HistoryPhysical)
                .min_by_key(|d| d.2);
            match first {
                None => out.push(chart_level(
                    DeficiencyKind::HistoryPhysicalMissing,
                    due.physician(),
                    None,
                    Some(due.history_physical),
                )),
                Some((id, _, at, author)) if *at > due.history_physical => out.push(chart_level(
                    DeficiencyKind::HistoryPhysicalLate,
                    author.clone(),
                    Some(id.clone()),
                    Some(due.history_physical),
                )),
                Some(_) => {}
            }
        }
        if !due.discharged() {
            return Ok(());
        }
        let needs_summary = matches!(
            class,
            EncounterClass::Inpatient | EncounterClass::Observation
        );
        if needs_summary && !documents.iter().any(|d| d.1 == EntryKind::DischargeSummary) {
            out.push(chart_level(
                DeficiencyKind::DischargeSummaryMissing,
                due.physician(),
                None,
                due.record,
            ));
        }
        Ok(())
    }

    /// The rule about the coding as a whole, kept on the `coding` section with an empty id:
    /// a discharged chart needs a final principal diagnosis. Apart from the H&P rules, so that
    /// a coder's commit does not read every entry.
    fn principal_rule(&self, due: &Due, out: &mut Vec<Deficiency>) -> Result<(), ChartError> {
        if !due.discharged() {
            return Ok(());
        }
        let principal_final = self
            .principal_diagnosis()?
            .is_some_and(|c| c.status == CodingStatus::Final);
        if !principal_final {
            out.push(Deficiency {
                kind: DeficiencyKind::CodingNotFinal,
                section: keys::CODING.into(),
                record_id: String::new(),
                responsible: Some("coder".into()),
                detail: Some("principal_diagnosis".into()),
                due_at: due.record,
            });
        }
        Ok(())
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

/// Whether a code assignment must carry a present-on-admission indicator: every inpatient
/// diagnosis but the admitting one (CMS POA reporting applies to inpatient claims).
fn needs_poa(encounter: &EncounterView, coding: &CodingView) -> bool {
    encounter.class == EncounterClass::Inpatient
        && coding.system == "icd10cm"
        && coding.sequence != CodingSequence::Admitting
        && coding.poa.is_none()
}

/// Signatures and amendments by the entry they name.
#[derive(Default)]
struct Signing {
    signatures: BTreeMap<String, Vec<SignatureView>>,
    amendments: BTreeMap<String, Vec<AmendmentView>>,
}
