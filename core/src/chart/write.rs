//! Every write of the chart API. Each one checks the person's role, the input and the chart's
//! rules before it touches the document, then commits exactly one change.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Author, Automerge, ObjId, ObjType, ReadDoc, ROOT};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::signing;
use super::types::*;
use super::view::{AttachmentRef, CodeRef, RoiFee, RoiRequestView};
use super::Chart;
use crate::codes::{self, CodeSystem};

/// A patient as registered on admission. The MRN can never change afterwards. In JSON (a
/// records import) the optional fields may be left out.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub address: Option<String>,
    pub phone: Option<String>,
}

/// The encounter a new chart records.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEncounter {
    pub ward: String,
    pub bed: Option<String>,
    pub class: EncounterClass,
    pub admit_source: Option<String>,
    pub attending: Option<String>,
}

/// A change-of-information form's new values; `None` leaves a field as it is.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientUpdate {
    pub family_name: Option<String>,
    pub given_names: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub address: Option<String>,
    pub phone: Option<String>,
}

/// A code to put on an entry or a coding assignment; validated before it is written.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInput {
    pub system: CodeSystem,
    pub code: String,
}

impl CodeInput {
    pub fn new(system: CodeSystem, code: impl Into<String>) -> Self {
        CodeInput {
            system,
            code: code.into(),
        }
    }

    /// Valid on `on`: the date whose code-set year applies (`Chart::code_date`).
    fn validate_on(&self, on: Timestamp) -> Result<CodeRef, ChartError> {
        let valid = codes::validate_on(self.system, &self.code, on.date())?;
        Ok(CodeRef {
            system: self.system.token().to_string(),
            code: valid.code,
            display: valid.display.map(str::to_string),
        })
    }
}

/// A scanned document to file: the file is already stored by its hash (the server's records
/// API stores it in the same transaction). `body` is an optional description.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScannedDocument {
    pub attachment: AttachmentRef,
    pub body: String,
}

/// A new observation, result, note... The author, role, device and time come from the
/// [`Staff`] and time of the call.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub shift: Option<Shift>,
    pub effective_at: Option<Timestamp>,
    pub codes: Vec<CodeInput>,
    pub value: Option<String>,
    pub unit: Option<String>,
    pub body: String,
}

impl NewEntry {
    /// An entry of `kind` with a text body and nothing else.
    pub fn note(kind: EntryKind, body: impl Into<String>) -> Self {
        NewEntry {
            kind,
            shift: None,
            effective_at: None,
            codes: Vec::new(),
            value: None,
            unit: None,
            body: body.into(),
        }
    }
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAmendment {
    pub target_entry_id: String,
    pub kind: AmendmentKind,
    pub reason: String,
    pub body: String,
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoding {
    pub code: CodeInput,
    pub sequence: CodingSequence,
    pub poa: Option<PresentOnAdmission>,
    pub supporting_entries: Vec<String>,
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuery {
    pub question: String,
    /// The physician asked.
    pub to: String,
    /// The coding assignment or entry the question is about.
    pub about: Option<String>,
}

/// A form's fields by name, kept in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct FormFields(pub BTreeMap<String, String>);

// The bindings carry a form's fields as a plain string map.
#[cfg(feature = "uniffi")]
uniffi::custom_type!(FormFields, std::collections::HashMap<String, String>, {
    lower: |f| f.0.into_iter().collect(),
    try_lift: |map| Ok(FormFields(map.into_iter().collect())),
});

impl std::ops::Deref for FormFields {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for FormFields {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, String>> for FormFields {
    fn from(map: BTreeMap<String, String>) -> Self {
        FormFields(map)
    }
}

impl<const N: usize> From<[(String, String); N]> for FormFields {
    fn from(pairs: [(String, String); N]) -> Self {
        FormFields(pairs.into())
    }
}

impl FromIterator<(String, String)> for FormFields {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        FormFields(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a FormFields {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewForm {
    pub form_type: FormType,
    pub fields: FormFields,
    /// Roles that must sign before the form is complete ("patient", "witness", "physician"...).
    pub required_signers: Vec<String>,
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoiRequest {
    pub requester: String,
    pub recipient: String,
    pub recipient_address: String,
    pub purpose: DisclosurePurpose,
    pub scope: String,
    pub due_at: Timestamp,
}

/// Days one extension of a release-of-information request adds (45 CFR 164.524(b)(2)(ii)).
pub const ROI_EXTENSION_DAYS: i64 = 30;

/// The field of a `roi_authorization` form that names the sensitive information the patient
/// authorizes releasing: category tokens, separated by commas or spaces.
pub const SENSITIVE_CONSENT_FIELD: &str = "sensitive_consent";

/// A fee as 45 CFR 164.524(c)(4) and HHS's guidance allow it.
fn check_fee(fee: &RoiFee, delivery: RoiDelivery) -> Result<(), ChartError> {
    let parts = [
        fee.labor_cents,
        fee.supplies_cents,
        fee.postage_cents,
        fee.summary_cents,
    ];
    let invalid = |reason: String| {
        Err(ChartError::InvalidValue {
            field: "fee",
            reason,
        })
    };
    match fee.basis {
        FeeBasis::NoFee if fee.total_cents != 0 || parts.iter().any(|&p| p != 0) => {
            invalid("no fee is a total of 0".into())
        }
        FeeBasis::FlatElectronic if !delivery.is_electronic() => invalid(format!(
            "a flat fee is for an electronic copy, not one sent by {delivery}"
        )),
        FeeBasis::FlatElectronic if parts.iter().any(|&p| p != 0) => {
            invalid("a flat fee has no parts: it includes labor, supplies and postage".into())
        }
        FeeBasis::FlatElectronic if fee.total_cents > FLAT_ELECTRONIC_FEE_MAX_CENTS => {
            invalid(format!(
                "a flat fee for an electronic copy is at most {FLAT_ELECTRONIC_FEE_MAX_CENTS} cents"
            ))
        }
        FeeBasis::ActualCost | FeeBasis::AverageCost => {
            let sum = parts.iter().try_fold(0u64, |a, &p| a.checked_add(p));
            if sum == Some(fee.total_cents) {
                Ok(())
            } else {
                invalid("a cost-based fee's total is the sum of its labor, supplies, postage and summary".into())
            }
        }
        _ => Ok(()),
    }
}

#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisclosure {
    pub request_id: Option<String>,
    pub recipient: String,
    pub recipient_address: String,
    pub description: String,
    pub purpose: DisclosurePurpose,
}

/// Who may write what. Records staff do not author clinical content; clinicians do not code.
const REGISTRATION: &[Role] = &[
    Role::Technician,
    Role::Nurse,
    Role::Physician,
    Role::RecordsSupervisor,
    Role::Admin,
];
const CLINICAL: &[Role] = &[Role::Nurse, Role::Physician];
const CODING: &[Role] = &[Role::Coder, Role::Technician];
const RECORDS: &[Role] = &[Role::Technician, Role::RecordsSupervisor, Role::Admin];
const QUERYING: &[Role] = &[Role::Coder, Role::Technician, Role::RecordsSupervisor];
const ANYONE: &[Role] = Role::ALL;
/// Who files a scanned document, and signs, edits and amends it: records staff, who receive
/// the paper, and clinicians, who may be handed it on the ward.
const SCANNING: &[Role] = &[
    Role::Technician,
    Role::RecordsSupervisor,
    Role::Nurse,
    Role::Physician,
];

/// Whether `role` files scanned documents (and so may file one's file again). Records staff
/// among them write, in entries, signatures and amendments, about scanned documents only.
pub fn files_scanned_documents(role: Role) -> bool {
    SCANNING.contains(&role)
}

/// Who may sign, edit or amend an entry of `kind`.
fn entry_writers(kind: EntryKind) -> &'static [Role] {
    if kind == EntryKind::ScannedDocument {
        SCANNING
    } else {
        CLINICAL
    }
}

fn require(by: &Staff, roles: &[Role], action: &str) -> Result<(), ChartError> {
    if roles.contains(&by.role) {
        Ok(())
    } else {
        Err(ChartError::NotPermitted(format!(
            "a {} may not {action}",
            by.role
        )))
    }
}

/// The roles that write a section; also who may resolve a conflict in it.
pub(crate) fn section_writers(section: &str) -> &'static [Role] {
    match section {
        keys::PATIENT | keys::ENCOUNTER | keys::EVENTS => REGISTRATION,
        keys::ENTRIES | keys::SIGNATURES | keys::AMENDMENTS | keys::HANDOVERS => CLINICAL,
        keys::CODING => CODING,
        keys::QUERIES => QUERYING,
        keys::ROI_REQUESTS | keys::DISCLOSURES => RECORDS,
        _ => ANYONE,
    }
}

fn nonempty(field: &'static str, s: &str) -> Result<(), ChartError> {
    if s.trim().is_empty() {
        Err(ChartError::Missing { field })
    } else {
        Ok(())
    }
}

fn put_str(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: &str,
) -> Result<(), ChartError> {
    tx.put(obj, key, value)?;
    Ok(())
}

fn put_opt(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: Option<&str>,
) -> Result<(), ChartError> {
    if let Some(v) = value {
        tx.put(obj, key, v)?;
    }
    Ok(())
}

fn put_list(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    items: &[String],
) -> Result<(), ChartError> {
    let list = tx.put_object(obj, key, ObjType::List)?;
    for (i, item) in items.iter().enumerate() {
        tx.insert(&list, i, item.as_str())?;
    }
    Ok(())
}

fn put_codes(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    codes: &[CodeRef],
) -> Result<(), ChartError> {
    let list = tx.put_object(obj, key, ObjType::List)?;
    for (i, c) in codes.iter().enumerate() {
        let m = tx.insert_object(&list, i, ObjType::Map)?;
        put_str(tx, &m, "system", &c.system)?;
        put_str(tx, &m, "code", &c.code)?;
        put_opt(tx, &m, "display", c.display.as_deref())?;
    }
    Ok(())
}

/// Appends a map to an append-only list.
fn append(tx: &mut Transaction<'_>, list: &ObjId) -> Result<ObjId, ChartError> {
    let len = tx.length(list);
    Ok(tx.insert_object(list, len, ObjType::Map)?)
}

fn section(tx: &Transaction<'_>, key: &str) -> Result<ObjId, ChartError> {
    Reader::new(tx).section(key)
}

fn validate_codes(codes: &[CodeInput], on: Timestamp) -> Result<Vec<CodeRef>, ChartError> {
    codes.iter().map(|c| c.validate_on(on)).collect()
}

impl Chart {
    /// The date whose code-set year the chart's codes are checked for: the discharge date,
    /// or `at` (the time of writing) while the patient is in.
    pub fn code_date(&self, at: Timestamp) -> Result<Timestamp, ChartError> {
        Ok(self.encounter()?.discharged_at.unwrap_or(at))
    }

    /// Opens a new chart: registers the patient, starts the encounter and records the
    /// admission, all in the chart's first change.
    pub fn create(
        patient: NewPatient,
        encounter: NewEncounter,
        by: &Staff,
        at: Timestamp,
    ) -> Result<Chart, ChartError> {
        require(by, REGISTRATION, "admit a patient")?;
        check_identifier("mrn", &patient.mrn)?;
        nonempty("family_name", &patient.family_name)?;
        nonempty("ward", &encounter.ward)?;
        if let Some(d) = &patient.birth_date {
            check_date(d)?;
        }
        let mut doc = Automerge::new();
        crate::seeded::set_actor(&mut doc);
        let mut chart = Chart::of(doc);
        chart.commit(by, at, "admit", |tx| {
            tx.put(ROOT, keys::SCHEMA, keys::SCHEMA_V1)?;
            for (key, ty) in keys::SECTIONS {
                tx.put_object(ROOT, key, ty)?;
            }
            let p = section(tx, keys::PATIENT)?;
            put_str(tx, &p, "mrn", &patient.mrn)?;
            put_str(tx, &p, "family_name", &patient.family_name)?;
            put_str(tx, &p, "given_names", &patient.given_names)?;
            put_opt(tx, &p, "birth_date", patient.birth_date.as_deref())?;
            put_opt(tx, &p, "sex", patient.sex.map(Sex::token))?;
            put_opt(tx, &p, "address", patient.address.as_deref())?;
            put_opt(tx, &p, "phone", patient.phone.as_deref())?;
            let e = section(tx, keys::ENCOUNTER)?;
            put_str(tx, &e, "ward", &encounter.ward)?;
            put_opt(tx, &e, "bed", encounter.bed.as_deref())?;
            put_str(tx, &e, "class", encounter.class.token())?;
            put_str(tx, &e, "admitted_at", &at.to_rfc3339())?;
            put_opt(tx, &e, "admit_source", encounter.admit_source.as_deref())?;
            put_opt(tx, &e, "attending", encounter.attending.as_deref())?;
            put_str(tx, &e, "status", EncounterStatus::Active.token())?;
            let ev = event(tx, EventKind::Admit, by, at)?;
            put_str(tx, &ev, "ward", &encounter.ward)?;
            put_opt(tx, &ev, "bed", encounter.bed.as_deref())?;
            Ok(())
        })?;
        Ok(chart)
    }

    /// Commits one change authored by `by` at `at`; on error nothing is written.
    fn commit<T>(
        &mut self,
        by: &Staff,
        at: Timestamp,
        what: &str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, ChartError>,
    ) -> Result<T, ChartError> {
        by.check()?;
        // The author travels in the change itself; serializing Staff cannot fail.
        let author = serde_json::to_vec(by).unwrap_or_default();
        let author = Author::from(author);
        if self.doc.get_author() != Some(&author) {
            // A new author gets a new actor id (automerge's rule); a seeded one in a simulation.
            self.doc.set_author(Some(author));
            crate::seeded::set_actor(&mut self.doc);
        }
        let message = what.to_string();
        self.doc
            .transact_with(
                |_| {
                    CommitOptions::default()
                        .with_message(message)
                        .with_time(at.unix())
                },
                f,
            )
            .map(|ok| ok.result)
            .map_err(|failed| failed.error)
    }

    fn reader(&self) -> Reader<'_> {
        Reader::new(&self.doc)
    }

    fn status(&self) -> Result<EncounterStatus, ChartError> {
        Ok(self.reader().encounter()?.status)
    }

    // ----- events -----

    /// Moves the patient to another ward or bed. Access on the server follows the ward.
    pub fn transfer(
        &mut self,
        by: &Staff,
        at: Timestamp,
        to_ward: &str,
        to_bed: Option<&str>,
    ) -> Result<(), ChartError> {
        require(by, REGISTRATION, "transfer a patient")?;
        nonempty("ward", to_ward)?;
        let current = self.reader().encounter()?;
        if current.status == EncounterStatus::Discharged {
            return Err(ChartError::InvalidTransition(
                "a discharged patient cannot be transferred".into(),
            ));
        }
        self.commit(by, at, "transfer", |tx| {
            let ev = event(tx, EventKind::Transfer, by, at)?;
            put_str(tx, &ev, "ward", to_ward)?;
            put_opt(tx, &ev, "bed", to_bed)?;
            put_str(tx, &ev, "from_ward", &current.ward)?;
            put_opt(tx, &ev, "from_bed", current.bed.as_deref())?;
            let e = section(tx, keys::ENCOUNTER)?;
            put_str(tx, &e, "ward", to_ward)?;
            match to_bed {
                Some(b) => put_str(tx, &e, "bed", b)?,
                None => tx.delete(&e, "bed")?,
            }
            Ok(())
        })
    }

    /// Discharges the patient with a disposition (home, transfer to another facility, ...).
    pub fn discharge(
        &mut self,
        by: &Staff,
        at: Timestamp,
        disposition: &str,
    ) -> Result<(), ChartError> {
        require(by, REGISTRATION, "discharge a patient")?;
        nonempty("discharge_disposition", disposition)?;
        if self.status()? == EncounterStatus::Discharged {
            return Err(ChartError::InvalidTransition(
                "the patient is already discharged".into(),
            ));
        }
        self.commit(by, at, "discharge", |tx| {
            let ev = event(tx, EventKind::Discharge, by, at)?;
            put_str(tx, &ev, "disposition", disposition)?;
            let e = section(tx, keys::ENCOUNTER)?;
            put_str(tx, &e, "status", EncounterStatus::Discharged.token())?;
            put_str(tx, &e, "discharged_at", &at.to_rfc3339())?;
            put_str(tx, &e, "discharge_disposition", disposition)?;
            Ok(())
        })
    }

    /// Applies a change-of-information form: the demographics change and an event records
    /// which fields changed (their names, not their values).
    pub fn change_information(
        &mut self,
        by: &Staff,
        at: Timestamp,
        update: PatientUpdate,
    ) -> Result<(), ChartError> {
        require(by, REGISTRATION, "change a patient's information")?;
        if let Some(d) = &update.birth_date {
            check_date(d)?;
        }
        if let Some(n) = &update.family_name {
            nonempty("family_name", n)?;
        }
        let fields: Vec<(&str, Option<&str>)> = vec![
            ("family_name", update.family_name.as_deref()),
            ("given_names", update.given_names.as_deref()),
            ("birth_date", update.birth_date.as_deref()),
            ("sex", update.sex.map(Sex::token)),
            ("address", update.address.as_deref()),
            ("phone", update.phone.as_deref()),
        ];
        let changed: Vec<String> = fields
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.to_string())
            .collect();
        if changed.is_empty() {
            return Err(ChartError::Missing {
                field: "a field to change",
            });
        }
        self.commit(by, at, "change of information", |tx| {
            let p = section(tx, keys::PATIENT)?;
            for (k, v) in &fields {
                put_opt(tx, &p, k, *v)?;
            }
            let ev = event(tx, EventKind::ChangeOfInformation, by, at)?;
            put_list(tx, &ev, "changed_fields", &changed)?;
            Ok(())
        })
    }

    // ----- entries -----

    /// Records an observation, result or note as a draft by `by`.
    pub fn add_entry(
        &mut self,
        by: &Staff,
        at: Timestamp,
        entry: NewEntry,
    ) -> Result<String, ChartError> {
        require(by, CLINICAL, "write clinical entries")?;
        if entry.kind == EntryKind::ScannedDocument {
            return Err(ChartError::InvalidValue {
                field: "entry kind",
                reason: "a scanned document is filed with its file (add_scanned_document)".into(),
            });
        }
        let codes = validate_codes(&entry.codes, self.code_date(at)?)?;
        let id = new_id();
        self.commit(by, at, "add entry", |tx| {
            let entries = section(tx, keys::ENTRIES)?;
            let e = tx.put_object(&entries, id.as_str(), ObjType::Map)?;
            put_str(tx, &e, "kind", entry.kind.token())?;
            put_str(tx, &e, "author", &by.user)?;
            put_str(tx, &e, "role", by.role.token())?;
            put_str(tx, &e, "device", &by.device)?;
            put_opt(tx, &e, "shift", entry.shift.map(Shift::token))?;
            put_str(tx, &e, "recorded_at", &at.to_rfc3339())?;
            put_opt(
                tx,
                &e,
                "effective_at",
                entry.effective_at.map(|t| t.to_rfc3339()).as_deref(),
            )?;
            put_codes(tx, &e, "codes", &codes)?;
            put_opt(tx, &e, "value", entry.value.as_deref())?;
            put_opt(tx, &e, "unit", entry.unit.as_deref())?;
            let body = tx.put_object(&e, "body", ObjType::Text)?;
            tx.splice_text(&body, 0, 0, &entry.body)?;
            put_str(tx, &e, "status", EntryStatus::Draft.token())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Files a scanned document (a consent, an outside record, an advance directive...) as a
    /// draft entry by `by`: its file's hash, type, size and pages, its title and type, and the
    /// date it bears. The file itself is not in the chart.
    pub fn add_scanned_document(
        &mut self,
        by: &Staff,
        at: Timestamp,
        doc: NewScannedDocument,
    ) -> Result<String, ChartError> {
        require(by, SCANNING, "file scanned documents")?;
        let a = &doc.attachment;
        if !super::read::is_sha256_hex(&a.hash) {
            return Err(ChartError::InvalidValue {
                field: "attachment hash",
                reason: "must be the file's SHA-256 as 64 lowercase hex digits".into(),
            });
        }
        nonempty("title", &a.title)?;
        if a.size == 0 || a.pages == 0 {
            return Err(ChartError::InvalidValue {
                field: "attachment",
                reason: "a file has at least one byte and one page".into(),
            });
        }
        if let Some(d) = &a.document_date {
            check_date(d)?;
        }
        let id = new_id();
        self.commit(by, at, "add scanned document", |tx| {
            let entries = section(tx, keys::ENTRIES)?;
            let e = tx.put_object(&entries, id.as_str(), ObjType::Map)?;
            put_str(tx, &e, "kind", EntryKind::ScannedDocument.token())?;
            put_str(tx, &e, "author", &by.user)?;
            put_str(tx, &e, "role", by.role.token())?;
            put_str(tx, &e, "device", &by.device)?;
            put_str(tx, &e, "recorded_at", &at.to_rfc3339())?;
            put_codes(tx, &e, "codes", &[])?;
            let body = tx.put_object(&e, "body", ObjType::Text)?;
            tx.splice_text(&body, 0, 0, &doc.body)?;
            put_str(tx, &e, "status", EntryStatus::Draft.token())?;
            let m = tx.put_object(&e, "attachment", ObjType::Map)?;
            put_str(tx, &m, "hash", &a.hash)?;
            put_str(tx, &m, "media_type", a.media_type.token())?;
            put_str(tx, &m, "size", &a.size.to_string())?;
            put_str(tx, &m, "pages", &a.pages.to_string())?;
            put_str(tx, &m, "title", &a.title)?;
            put_str(tx, &m, "document_type", a.document_type.token())?;
            put_opt(tx, &m, "document_date", a.document_date.as_deref())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The entry's object, if it may still be edited.
    fn editable_entry(&self, by: &Staff, entry_id: &str) -> Result<ObjId, ChartError> {
        let kind = self.entry(entry_id)?.content.kind;
        require(by, entry_writers(kind), "edit clinical entries")?;
        let obj = self.record(keys::ENTRIES, "entry", entry_id)?;
        if self.is_signed(entry_id)? {
            return Err(ChartError::EntrySigned {
                entry_id: entry_id.to_string(),
            });
        }
        Ok(obj)
    }

    fn is_signed(&self, entry_id: &str) -> Result<bool, ChartError> {
        Ok(self
            .reader()
            .log(keys::SIGNATURES, |r, o, p| r.signature(o, p))?
            .iter()
            .any(|s| s.entry_id == entry_id))
    }

    /// Replaces an unsigned entry's body. Only the characters that differ are written, so
    /// concurrent edits elsewhere in the text merge.
    pub fn edit_entry_body(
        &mut self,
        by: &Staff,
        at: Timestamp,
        entry_id: &str,
        body: &str,
    ) -> Result<(), ChartError> {
        let obj = self.editable_entry(by, entry_id)?;
        self.commit(by, at, "edit entry", |tx| {
            let text = Reader::new(&*tx).text_obj(&obj, "body")?;
            tx.update_text(&text, body)?;
            Ok(())
        })
    }

    /// Sets an unsigned entry's value and unit.
    pub fn set_entry_value(
        &mut self,
        by: &Staff,
        at: Timestamp,
        entry_id: &str,
        value: Option<&str>,
        unit: Option<&str>,
    ) -> Result<(), ChartError> {
        let obj = self.editable_entry(by, entry_id)?;
        self.commit(by, at, "edit entry", |tx| {
            tx.put(
                &obj,
                "value",
                value.map_or(automerge::ScalarValue::Null, Into::into),
            )?;
            tx.put(
                &obj,
                "unit",
                unit.map_or(automerge::ScalarValue::Null, Into::into),
            )?;
            Ok(())
        })
    }

    /// Replaces an unsigned entry's codes.
    pub fn set_entry_codes(
        &mut self,
        by: &Staff,
        at: Timestamp,
        entry_id: &str,
        codes: &[CodeInput],
    ) -> Result<(), ChartError> {
        let obj = self.editable_entry(by, entry_id)?;
        let codes = validate_codes(codes, self.code_date(at)?)?;
        self.commit(by, at, "edit entry", |tx| {
            put_codes(tx, &obj, "codes", &codes)
        })
    }

    /// Signs an entry. The author signs with meaning `author`; a physician may cosign and a
    /// clinician verify. The signature records the heads and the hash of what was signed.
    pub fn sign_entry(
        &mut self,
        by: &Staff,
        at: Timestamp,
        entry_id: &str,
        meaning: SignatureMeaning,
    ) -> Result<(), ChartError> {
        let entry = self.entry(entry_id)?;
        require(
            by,
            entry_writers(entry.content.kind),
            "sign clinical entries",
        )?;
        match meaning {
            SignatureMeaning::Author if entry.content.author != by.user => {
                return Err(ChartError::NotPermitted(
                    "only the author signs an entry as its author".into(),
                ))
            }
            SignatureMeaning::Cosign if by.role != Role::Physician => {
                return Err(ChartError::NotPermitted("only a physician cosigns".into()))
            }
            _ => {}
        }
        let signatures = self
            .reader()
            .log(keys::SIGNATURES, |r, o, p| r.signature(o, p))?;
        if signatures
            .iter()
            .any(|s| s.entry_id == entry_id && s.signer == by.user && s.meaning == meaning)
        {
            return Err(ChartError::InvalidTransition(format!(
                "entry {entry_id} already carries this signature"
            )));
        }
        if entry.edited_after_signing {
            return Err(ChartError::InvalidTransition(format!(
                "entry {entry_id} was edited after signing; resolve it with an addendum first"
            )));
        }
        let heads: Vec<String> = self.heads().iter().map(|h| h.to_string()).collect();
        let hash = signing::content_hash(&entry.content);
        let obj = self.record(keys::ENTRIES, "entry", entry_id)?;
        let first = !entry.signed;
        self.commit(by, at, "sign entry", |tx| {
            let list = section(tx, keys::SIGNATURES)?;
            let s = append(tx, &list)?;
            put_str(tx, &s, "entry_id", entry_id)?;
            put_str(tx, &s, "signer", &by.user)?;
            put_str(tx, &s, "role", by.role.token())?;
            put_str(tx, &s, "meaning", meaning.token())?;
            put_str(tx, &s, "signed_at", &at.to_rfc3339())?;
            put_list(tx, &s, "heads", &heads)?;
            put_str(tx, &s, "content_hash", &hash)?;
            if first {
                put_str(tx, &obj, "status", EntryStatus::Final.token())?;
            }
            Ok(())
        })
    }

    /// Amends an entry: the original stays as it was; the amendment references it and the
    /// hash of its content now.
    pub fn amend(
        &mut self,
        by: &Staff,
        at: Timestamp,
        a: NewAmendment,
    ) -> Result<String, ChartError> {
        let target = self.entry(&a.target_entry_id)?;
        if a.kind == AmendmentKind::PatientRequested {
            require(
                by,
                &[Role::Nurse, Role::Physician, Role::RecordsSupervisor],
                "record a patient-requested amendment",
            )?;
        } else {
            require(
                by,
                entry_writers(target.content.kind),
                "amend clinical entries",
            )?;
        }
        nonempty("reason", &a.reason)?;
        if a.kind != AmendmentKind::EnteredInError {
            nonempty("body", &a.body)?;
        }
        let target_hash = signing::content_hash(&target.content);
        let id = new_id();
        self.commit(by, at, "amend entry", |tx| {
            let list = section(tx, keys::AMENDMENTS)?;
            let m = append(tx, &list)?;
            put_str(tx, &m, "id", &id)?;
            put_str(tx, &m, "target_entry_id", &a.target_entry_id)?;
            put_str(tx, &m, "target_hash", &target_hash)?;
            put_str(tx, &m, "kind", a.kind.token())?;
            put_str(tx, &m, "reason", &a.reason)?;
            put_str(tx, &m, "body", &a.body)?;
            put_str(tx, &m, "author", &by.user)?;
            put_str(tx, &m, "role", by.role.token())?;
            put_str(tx, &m, "at", &at.to_rfc3339())?;
            Ok(())
        })?;
        Ok(id)
    }

    // ----- coding -----

    /// Proposes a code for the encounter. Only ICD-10-CM diagnoses carry a present-on-admission
    /// indicator, and a chart has one principal diagnosis.
    pub fn assign_code(
        &mut self,
        by: &Staff,
        at: Timestamp,
        c: NewCoding,
    ) -> Result<String, ChartError> {
        require(by, CODING, "assign codes")?;
        let code = c.code.validate_on(self.code_date(at)?)?;
        if c.poa.is_some() && c.code.system != CodeSystem::Icd10Cm {
            return Err(ChartError::InvalidValue {
                field: "poa",
                reason: "only ICD-10-CM diagnoses carry a present-on-admission indicator".into(),
            });
        }
        // Only the records this needs are read: a full view of a large chart is costly.
        for e in &c.supporting_entries {
            self.record(keys::ENTRIES, "supporting entry", e)?;
        }
        let coding = self
            .reader()
            .records(keys::CODING, |r, id, o| r.coding(id, o))?;
        if c.sequence == CodingSequence::Principal
            && coding
                .iter()
                .any(|k| k.sequence == CodingSequence::Principal && k.system == code.system)
        {
            return Err(ChartError::InvalidTransition(format!(
                "the chart already has a principal {} code; change its sequence first",
                c.code.system.name()
            )));
        }
        let id = new_id();
        self.commit(by, at, "assign code", |tx| {
            let coding = section(tx, keys::CODING)?;
            let k = tx.put_object(&coding, id.as_str(), ObjType::Map)?;
            put_str(tx, &k, "system", &code.system)?;
            put_str(tx, &k, "code", &code.code)?;
            put_opt(tx, &k, "display", code.display.as_deref())?;
            put_str(tx, &k, "sequence", c.sequence.token())?;
            put_opt(tx, &k, "poa", c.poa.map(PresentOnAdmission::token))?;
            put_str(tx, &k, "status", CodingStatus::Proposed.token())?;
            put_list(tx, &k, "supporting_entries", &c.supporting_entries)?;
            put_str(tx, &k, "coded_by", &by.user)?;
            put_str(tx, &k, "coded_at", &at.to_rfc3339())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Moves a code assignment through the workflow; only a coder makes it final.
    pub fn set_coding_status(
        &mut self,
        by: &Staff,
        at: Timestamp,
        coding_id: &str,
        status: CodingStatus,
    ) -> Result<(), ChartError> {
        require(by, CODING, "change coding")?;
        if status == CodingStatus::Final && by.role != Role::Coder {
            return Err(ChartError::NotPermitted(
                "only a coder finalizes coding".into(),
            ));
        }
        let obj = self.record(keys::CODING, "coding assignment", coding_id)?;
        self.commit(by, at, "coding status", |tx| {
            put_str(tx, &obj, "status", status.token())?;
            put_str(tx, &obj, "coded_by", &by.user)?;
            put_str(tx, &obj, "coded_at", &at.to_rfc3339())?;
            Ok(())
        })
    }

    /// Sets an ICD-10-CM diagnosis's present-on-admission indicator, as the coder reads the
    /// record at final coding.
    pub fn set_coding_poa(
        &mut self,
        by: &Staff,
        at: Timestamp,
        coding_id: &str,
        poa: PresentOnAdmission,
    ) -> Result<(), ChartError> {
        require(by, CODING, "change coding")?;
        let obj = self.record(keys::CODING, "coding assignment", coding_id)?;
        let current = self.reader().coding(coding_id, &obj)?;
        if current.system != CodeSystem::Icd10Cm.token() {
            return Err(ChartError::InvalidValue {
                field: "poa",
                reason: "only ICD-10-CM diagnoses carry a present-on-admission indicator".into(),
            });
        }
        self.commit(by, at, "coding poa", |tx| {
            put_str(tx, &obj, "poa", poa.token())?;
            put_str(tx, &obj, "coded_by", &by.user)?;
            put_str(tx, &obj, "coded_at", &at.to_rfc3339())?;
            Ok(())
        })
    }

    // ----- physician queries -----

    /// Asks a physician to clarify documentation.
    pub fn ask_query(
        &mut self,
        by: &Staff,
        at: Timestamp,
        q: NewQuery,
    ) -> Result<String, ChartError> {
        require(by, QUERYING, "query a physician")?;
        self.ask(by, at, q, QueryKind::Query)
    }

    fn ask(
        &mut self,
        by: &Staff,
        at: Timestamp,
        q: NewQuery,
        kind: QueryKind,
    ) -> Result<String, ChartError> {
        nonempty("question", &q.question)?;
        check_identifier("user", &q.to)?;
        let id = new_id();
        let message = match kind {
            QueryKind::Query => "ask query",
            QueryKind::Deficiency => "add deficiency",
        };
        self.commit(by, at, message, |tx| {
            let queries = section(tx, keys::QUERIES)?;
            let m = tx.put_object(&queries, id.as_str(), ObjType::Map)?;
            if kind == QueryKind::Deficiency {
                put_str(tx, &m, "kind", kind.token())?;
            }
            put_str(tx, &m, "question", &q.question)?;
            put_str(tx, &m, "to", &q.to)?;
            put_str(tx, &m, "asked_by", &by.user)?;
            put_str(tx, &m, "asked_at", &at.to_rfc3339())?;
            put_opt(tx, &m, "about", q.about.as_deref())?;
            put_str(tx, &m, "status", QueryStatus::Open.token())?;
            tx.put_object(&m, "responses", ObjType::List)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Adds a deficiency by hand: what a records technician found missing or wrong that the
    /// rules cannot see (a paper consent unsigned, a dictation never transcribed), for the
    /// physician `to` to put right. It is a record of `queries` with kind `deficiency`: on the
    /// physician's tablet as a query, on the worklist as `added_by_hand` until the physician
    /// answers it or the office withdraws it.
    pub fn add_deficiency(
        &mut self,
        by: &Staff,
        at: Timestamp,
        d: NewQuery,
    ) -> Result<String, ChartError> {
        require(by, QUERYING, "add deficiencies")?;
        self.ask(by, at, d, QueryKind::Deficiency)
    }

    /// The physician's answer; responses are appended, never edited.
    pub fn respond_to_query(
        &mut self,
        by: &Staff,
        at: Timestamp,
        query_id: &str,
        text: &str,
    ) -> Result<(), ChartError> {
        nonempty("text", text)?;
        let obj = self.record(keys::QUERIES, "query", query_id)?;
        let query = self.reader().query(query_id, &obj)?;
        if by.user != query.to && by.role != Role::Physician {
            return Err(ChartError::NotPermitted(
                "only the physician queried, or another physician, answers a query".into(),
            ));
        }
        if query.status == QueryStatus::Withdrawn {
            return Err(ChartError::InvalidTransition(format!(
                "query {query_id} was withdrawn"
            )));
        }
        self.commit(by, at, "answer query", |tx| {
            let list = Reader::new(&*tx).list(&obj, "responses", keys::QUERIES)?;
            let r = append(tx, &list)?;
            put_str(tx, &r, "by", &by.user)?;
            put_str(tx, &r, "at", &at.to_rfc3339())?;
            put_str(tx, &r, "text", text)?;
            put_str(tx, &obj, "status", QueryStatus::Answered.token())?;
            Ok(())
        })
    }

    /// Withdraws an open query.
    pub fn withdraw_query(
        &mut self,
        by: &Staff,
        at: Timestamp,
        query_id: &str,
    ) -> Result<(), ChartError> {
        require(by, QUERYING, "withdraw a query")?;
        let obj = self.record(keys::QUERIES, "query", query_id)?;
        if self.reader().query(query_id, &obj)?.status != QueryStatus::Open {
            return Err(ChartError::InvalidTransition(format!(
                "query {query_id} is not open"
            )));
        }
        self.commit(by, at, "withdraw query", |tx| {
            put_str(tx, &obj, "status", QueryStatus::Withdrawn.token())
        })
    }

    // ----- forms -----

    /// Starts a form (admission, discharge, consent, ...).
    pub fn add_form(
        &mut self,
        by: &Staff,
        at: Timestamp,
        f: NewForm,
    ) -> Result<String, ChartError> {
        require(by, ANYONE, "add forms")?;
        for r in &f.required_signers {
            nonempty("required signer", r)?;
        }
        let id = new_id();
        self.commit(by, at, "add form", |tx| {
            let forms = section(tx, keys::FORMS)?;
            let m = tx.put_object(&forms, id.as_str(), ObjType::Map)?;
            put_str(tx, &m, "type", f.form_type.token())?;
            let fields = tx.put_object(&m, "fields", ObjType::Map)?;
            for (k, v) in &f.fields {
                put_str(tx, &fields, k, v)?;
            }
            put_list(tx, &m, "required_signers", &f.required_signers)?;
            tx.put_object(&m, "signatures", ObjType::List)?;
            put_str(tx, &m, "created_by", &by.user)?;
            put_str(tx, &m, "created_at", &at.to_rfc3339())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Sets a field of a form nobody has signed yet.
    pub fn set_form_field(
        &mut self,
        by: &Staff,
        at: Timestamp,
        form_id: &str,
        field: &str,
        value: &str,
    ) -> Result<(), ChartError> {
        nonempty("field name", field)?;
        let obj = self.record(keys::FORMS, "form", form_id)?;
        if !self.reader().form(form_id, &obj)?.signatures.is_empty() {
            return Err(ChartError::FormSigned {
                form_id: form_id.to_string(),
            });
        }
        self.commit(by, at, "form field", |tx| {
            let fields = Reader::new(&*tx).map(&obj, "fields", keys::FORMS)?;
            put_str(tx, &fields, field, value)
        })
    }

    /// Records a signature on a form in one of its required roles; the form completes when
    /// every required role has signed.
    pub fn sign_form(
        &mut self,
        by: &Staff,
        at: Timestamp,
        form_id: &str,
        signer: &str,
        signer_role: &str,
    ) -> Result<(), ChartError> {
        nonempty("signer", signer)?;
        let obj = self.record(keys::FORMS, "form", form_id)?;
        let form = self.reader().form(form_id, &obj)?;
        if !form.missing_signers.iter().any(|r| r == signer_role) {
            return Err(ChartError::InvalidTransition(format!(
                "form {form_id} needs no (further) signature as {signer_role}"
            )));
        }
        let completes = form.missing_signers.len() == 1;
        self.commit(by, at, "sign form", |tx| {
            let list = Reader::new(&*tx).list(&obj, "signatures", keys::FORMS)?;
            let s = append(tx, &list)?;
            put_str(tx, &s, "signer", signer)?;
            put_str(tx, &s, "role", signer_role)?;
            put_str(tx, &s, "at", &at.to_rfc3339())?;
            if completes {
                put_str(tx, &obj, "completed_at", &at.to_rfc3339())?;
            }
            Ok(())
        })
    }

    // ----- release of information -----

    /// Logs a request for records.
    pub fn receive_roi_request(
        &mut self,
        by: &Staff,
        at: Timestamp,
        r: NewRoiRequest,
    ) -> Result<String, ChartError> {
        require(by, RECORDS, "log release-of-information requests")?;
        for (field, v) in [
            ("requester", &r.requester),
            ("recipient", &r.recipient),
            ("recipient_address", &r.recipient_address),
            ("scope", &r.scope),
        ] {
            nonempty(field, v)?;
        }
        let id = new_id();
        self.commit(by, at, "roi request", |tx| {
            let map = section(tx, keys::ROI_REQUESTS)?;
            let m = tx.put_object(&map, id.as_str(), ObjType::Map)?;
            put_str(tx, &m, "requester", &r.requester)?;
            put_str(tx, &m, "recipient", &r.recipient)?;
            put_str(tx, &m, "recipient_address", &r.recipient_address)?;
            put_str(tx, &m, "purpose", r.purpose.token())?;
            put_str(tx, &m, "scope", &r.scope)?;
            put_str(tx, &m, "received_at", &at.to_rfc3339())?;
            put_str(tx, &m, "due_at", &r.due_at.to_rfc3339())?;
            put_str(tx, &m, "status", RoiStatus::Received.token())?;
            put_str(tx, &m, "status_by", &by.user)?;
            put_str(tx, &m, "status_at", &at.to_rfc3339())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Takes a request's one extension (45 CFR 164.524(b)(2)(ii)): within the first 30 days,
    /// with the reason for the delay that the requester's written notice gives; the request is
    /// then due [`ROI_EXTENSION_DAYS`] later. Returns the new due date.
    pub fn extend_roi_request(
        &mut self,
        by: &Staff,
        at: Timestamp,
        request_id: &str,
        reason: &str,
    ) -> Result<Timestamp, ChartError> {
        require(by, RECORDS, "extend release-of-information requests")?;
        nonempty("reason", reason)?;
        let (obj, current) = self.open_roi_request(request_id, "it cannot be extended")?;
        if current.extension.is_some() {
            return Err(ChartError::InvalidTransition(
                "this request has had its one extension".into(),
            ));
        }
        if at > current.due_at {
            return Err(ChartError::InvalidTransition(
                "an extension is noticed within the first 30 days: this request is already past due"
                    .into(),
            ));
        }
        let due = current.due_at.plus_seconds(ROI_EXTENSION_DAYS * 86_400);
        self.commit(by, at, "roi extension", |tx| {
            put_str(tx, &obj, "original_due_at", &current.due_at.to_rfc3339())?;
            put_str(tx, &obj, "due_at", &due.to_rfc3339())?;
            put_str(tx, &obj, "extended_by", &by.user)?;
            put_str(tx, &obj, "extended_at", &at.to_rfc3339())?;
            put_str(tx, &obj, "extension_reason", reason)?;
            Ok(())
        })?;
        Ok(due)
    }

    /// Prepares an open request's release: how it goes out, the review for sensitive
    /// information (empty when none was found) and the fee. Done again, it replaces the last.
    /// A flat fee is for an electronic delivery and at most
    /// [`FLAT_ELECTRONIC_FEE_MAX_CENTS`]; a cost-based fee is the sum of its parts.
    pub fn prepare_roi_release(
        &mut self,
        by: &Staff,
        at: Timestamp,
        request_id: &str,
        delivery: RoiDelivery,
        sensitive: &[SensitiveCategory],
        fee: RoiFee,
    ) -> Result<(), ChartError> {
        require(by, RECORDS, "prepare releases of information")?;
        let (obj, _) = self.open_roi_request(request_id, "nothing is left to prepare")?;
        check_fee(&fee, delivery)?;
        let mut sensitive = sensitive.to_vec();
        sensitive.sort();
        sensitive.dedup();
        let tokens: Vec<String> = sensitive.iter().map(|c| c.token().to_string()).collect();
        self.commit(by, at, "roi preparation", |tx| {
            put_str(tx, &obj, "delivery", delivery.token())?;
            put_list(tx, &obj, "sensitive", &tokens)?;
            put_str(tx, &obj, "reviewed_by", &by.user)?;
            put_str(tx, &obj, "reviewed_at", &at.to_rfc3339())?;
            put_str(tx, &obj, "fee_basis", fee.basis.token())?;
            for (key, cents) in [
                ("fee_labor", fee.labor_cents),
                ("fee_supplies", fee.supplies_cents),
                ("fee_postage", fee.postage_cents),
                ("fee_summary", fee.summary_cents),
                ("fee_total", fee.total_cents),
            ] {
                put_str(tx, &obj, key, &cents.to_string())?;
            }
            Ok(())
        })
    }

    /// Moves a request along its lifecycle. Verifying the authorization names a completed
    /// roi_authorization form; a denial needs a reason. A release needs the request prepared
    /// ([`Chart::prepare_roi_release`]); one that carries sensitive information is made by a
    /// records supervisor or an administrator, under an authorization whose
    /// `sensitive_consent` field names every category found.
    pub fn set_roi_status(
        &mut self,
        by: &Staff,
        at: Timestamp,
        request_id: &str,
        status: RoiStatus,
        authorization_form: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), ChartError> {
        require(by, RECORDS, "process release-of-information requests")?;
        let obj = self.record(
            keys::ROI_REQUESTS,
            "release-of-information request",
            request_id,
        )?;
        let current = self.reader().roi_request(request_id, &obj)?;
        if !current.status.may_become(status) {
            return Err(ChartError::InvalidTransition(format!(
                "a {} request cannot become {}",
                current.status, status
            )));
        }
        if status == RoiStatus::AuthorizationVerified {
            let form_id = authorization_form.ok_or(ChartError::Missing {
                field: "authorization form",
            })?;
            let fobj = self.record(keys::FORMS, "form", form_id)?;
            let form = self.reader().form(form_id, &fobj)?;
            if form.form_type != FormType::RoiAuthorization || form.completed_at.is_none() {
                return Err(ChartError::InvalidTransition(format!(
                    "form {form_id} is not a completed release-of-information authorization"
                )));
            }
        }
        if status != RoiStatus::AuthorizationVerified && authorization_form.is_some() {
            return Err(ChartError::InvalidValue {
                field: "authorization form",
                reason: format!(
                    "an authorization form is named only when verifying it, not for {status}"
                ),
            });
        }
        if status == RoiStatus::Denied {
            nonempty("reason", reason.unwrap_or(""))?;
        }
        if status == RoiStatus::Fulfilled {
            self.check_release(by, &current)?;
        }
        self.commit(by, at, "roi status", |tx| {
            put_str(tx, &obj, "status", status.token())?;
            put_str(tx, &obj, "status_by", &by.user)?;
            put_str(tx, &obj, "status_at", &at.to_rfc3339())?;
            put_opt(tx, &obj, "authorization", authorization_form)?;
            put_opt(tx, &obj, "status_reason", reason)?;
            Ok(())
        })
    }

    /// A request still to be answered, with its object; a closed one is refused, saying
    /// `closed`.
    fn open_roi_request(
        &self,
        request_id: &str,
        closed: &str,
    ) -> Result<(ObjId, RoiRequestView), ChartError> {
        let obj = self.record(
            keys::ROI_REQUESTS,
            "release-of-information request",
            request_id,
        )?;
        let current = self.reader().roi_request(request_id, &obj)?;
        if !current.status.is_open() {
            return Err(ChartError::InvalidTransition(format!(
                "a {} request is closed: {closed}",
                current.status
            )));
        }
        Ok((obj, current))
    }

    /// The gate before records leave: the request prepared, and sensitive information released
    /// only by a supervisor under an authorization that names it.
    fn check_release(&self, by: &Staff, request: &RoiRequestView) -> Result<(), ChartError> {
        let (Some(_), Some(review), Some(_)) =
            (request.delivery, &request.sensitive_review, request.fee)
        else {
            return Err(ChartError::InvalidTransition(
                "prepare the release first: its delivery, the review for sensitive information and the fee"
                    .into(),
            ));
        };
        if review.categories.is_empty() {
            return Ok(());
        }
        if !matches!(by.role, Role::RecordsSupervisor | Role::Admin) {
            return Err(ChartError::NotPermitted(
                "a release with sensitive information is made by a records supervisor".into(),
            ));
        }
        let form_id = request
            .authorization
            .as_deref()
            .ok_or(ChartError::Missing {
                field: "authorization form",
            })?;
        let fobj = self.record(keys::FORMS, "form", form_id)?;
        let form = self.reader().form(form_id, &fobj)?;
        let named = form.fields.0.get(SENSITIVE_CONSENT_FIELD).map_or("", |v| v);
        let named: Vec<&str> = named
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        let missing: Vec<&str> = review
            .categories
            .iter()
            .map(|c| c.token())
            .filter(|t| !named.contains(t))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ChartError::InvalidTransition(format!(
                "the authorization does not name {}: the patient signs one that does",
                missing.join(", ")
            )))
        }
    }

    /// Appends a disclosure to the accounting (45 CFR 164.528): never edited afterwards.
    pub fn record_disclosure(
        &mut self,
        by: &Staff,
        at: Timestamp,
        d: NewDisclosure,
    ) -> Result<String, ChartError> {
        require(by, RECORDS, "record disclosures")?;
        for (field, v) in [
            ("recipient", &d.recipient),
            ("recipient_address", &d.recipient_address),
            ("description", &d.description),
        ] {
            nonempty(field, v)?;
        }
        // A release under the patient's verified authorization carries the authorization's
        // form id, as it stood at the time: that is what leaves it out of an accounting.
        let authorization = match &d.request_id {
            Some(r) => {
                let obj = self.record(keys::ROI_REQUESTS, "release-of-information request", r)?;
                let request = self.reader().roi_request(r, &obj)?;
                match request.status {
                    RoiStatus::AuthorizationVerified | RoiStatus::Fulfilled => {
                        request.authorization
                    }
                    RoiStatus::Received | RoiStatus::Denied => None,
                }
            }
            None => None,
        };
        let id = new_id();
        self.commit(by, at, "disclosure", |tx| {
            let list = section(tx, keys::DISCLOSURES)?;
            let m = append(tx, &list)?;
            put_str(tx, &m, "id", &id)?;
            put_opt(tx, &m, "request_id", d.request_id.as_deref())?;
            put_opt(tx, &m, "authorization", authorization.as_deref())?;
            put_str(tx, &m, "at", &at.to_rfc3339())?;
            put_str(tx, &m, "recipient", &d.recipient)?;
            put_str(tx, &m, "recipient_address", &d.recipient_address)?;
            put_str(tx, &m, "description", &d.description)?;
            put_str(tx, &m, "purpose", d.purpose.token())?;
            put_str(tx, &m, "by", &by.user)?;
            Ok(())
        })?;
        Ok(id)
    }

    // ----- case log and handovers -----

    /// Appends a line to the case log.
    pub fn log_case(&mut self, by: &Staff, at: Timestamp, text: &str) -> Result<(), ChartError> {
        nonempty("text", text)?;
        self.commit(by, at, "case log", |tx| {
            let list = section(tx, keys::CASE_LOG)?;
            let m = append(tx, &list)?;
            put_str(tx, &m, "at", &at.to_rfc3339())?;
            put_str(tx, &m, "by", &by.user)?;
            put_str(tx, &m, "text", text)?;
            Ok(())
        })
    }

    /// Hands the patient over to the next shift.
    pub fn hand_over(
        &mut self,
        by: &Staff,
        at: Timestamp,
        to: &str,
        shift: Shift,
        summary: &str,
    ) -> Result<(), ChartError> {
        require(by, CLINICAL, "hand over patients")?;
        check_identifier("user", to)?;
        nonempty("summary", summary)?;
        self.commit(by, at, "handover", |tx| {
            let list = section(tx, keys::HANDOVERS)?;
            let m = append(tx, &list)?;
            put_str(tx, &m, "from", &by.user)?;
            put_str(tx, &m, "to", to)?;
            put_str(tx, &m, "shift", shift.token())?;
            put_str(tx, &m, "at", &at.to_rfc3339())?;
            put_str(tx, &m, "summary", summary)?;
            Ok(())
        })
    }

    pub(crate) fn commit_resolution(
        &mut self,
        by: &Staff,
        at: Timestamp,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), ChartError>,
    ) -> Result<(), ChartError> {
        self.commit(by, at, "resolve conflict", f)
    }
}

/// Appends an event to the events list and fills its common fields.
fn event(
    tx: &mut Transaction<'_>,
    kind: EventKind,
    by: &Staff,
    at: Timestamp,
) -> Result<ObjId, ChartError> {
    let list = section(tx, keys::EVENTS)?;
    let ev = append(tx, &list)?;
    put_str(tx, &ev, "id", &new_id())?;
    put_str(tx, &ev, "kind", kind.token())?;
    put_str(tx, &ev, "at", &at.to_rfc3339())?;
    put_str(tx, &ev, "by", &by.user)?;
    Ok(ev)
}
