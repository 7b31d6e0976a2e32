//! A chart as a FHIR R4 (4.0.1) Bundle, for records requests, transfers and archives.
//!
//! One `collection` Bundle per chart: the Patient and the Encounter; a Condition per
//! ICD-10-CM assignment and a Procedure per procedure code (ICD-10-PCS, CPT, HCPCS); each
//! entry as the resource its kind calls for (Observation, DiagnosticReport,
//! MedicationAdministration, Procedure, DocumentReference), amendments as DocumentReferences
//! that relate to what they amend; a Provenance per signature; a Consent per consent or
//! release authorization form; a Task per release-of-information request; an AuditEvent per
//! disclosure. docs/fhir.md maps every field.
//!
//! Every resource's id is a UUID derived from the chart id and the record, so exporting the
//! same chart twice gives the same ids, and every reference inside the bundle is the
//! `urn:uuid:` full URL of another entry. People are named by their user ids, as in the chart.
//! Fields the chart leaves empty are left out, never written as `null`.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::chart::{
    AmendmentKind, AmendmentView, Chart, ChartError, ChartId, ChartView, CodeRef, CodingSequence,
    CodingStatus, CodingView, DisclosurePurpose, DisclosureView, DocumentType, EncounterClass,
    EncounterStatus, EntryKind, EntryStatus, EntryView, EventKind, FormType, FormView,
    RoiRequestView, RoiStatus, SignatureMeaning, SignatureView, Timestamp,
};
use crate::codes::CodeSystem;

/// The FHIR version the bundles are written in.
pub const FHIR_VERSION: &str = "4.0.1";

/// chartsync's extension on Condition for the present-on-admission indicator (UB-04 values Y,
/// N, U, W, 1), which FHIR R4 carries natively only on Claim.
pub const POA_EXTENSION: &str = "urn:chartsync:fhir:StructureDefinition:present-on-admission";

/// The identifier system of the content hash a signature attests (hex SHA-256).
pub const CONTENT_HASH_SYSTEM: &str = "urn:chartsync:content-sha256";

/// The page count of an attachment: FHIR R5's `Attachment.pages`, as R4 carries it.
pub const PAGES_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Attachment.pages";

/// The identifier system of a scanned document's file: hex SHA-256 of its bytes.
pub const FILE_HASH_SYSTEM: &str = "urn:chartsync:file-sha256";

/// The identifier system of medical record numbers.
pub const MRN_SYSTEM: &str = "urn:chartsync:mrn";

/// The chart as a FHIR R4 Bundle, made at `generated_at`. Its scanned documents' files are
/// not in it: see [`bundle_with_files`].
pub fn bundle(id: ChartId, chart: &Chart, generated_at: Timestamp) -> Result<Value, ChartError> {
    bundle_with_files(id, chart, generated_at, HashMap::new())
}

/// [`bundle`], with the files of the chart's scanned documents (bytes by their SHA-256) in
/// their DocumentReferences' attachments; a file not given is named but not there.
pub fn bundle_with_files(
    id: ChartId,
    chart: &Chart,
    generated_at: Timestamp,
    files: HashMap<String, Vec<u8>>,
) -> Result<Value, ChartError> {
    let view = chart.view()?;
    let heads: Vec<String> = {
        let mut h: Vec<String> = chart.heads().iter().map(|h| h.to_string()).collect();
        h.sort();
        h
    };
    let mut b = Builder {
        chart: id,
        entries: Vec::new(),
        ids: HashSet::new(),
        files,
    };
    b.build(&view)?;
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), "Bundle".into());
    bundle.insert("id".into(), uuid_for(id, "bundle", &heads.join(",")).into());
    bundle.insert(
        "identifier".into(),
        json!({ "system": "urn:chartsync:chart", "value": id.to_string() }),
    );
    bundle.insert("type".into(), "collection".into());
    bundle.insert("timestamp".into(), generated_at.to_rfc3339().into());
    bundle.insert("entry".into(), Value::Array(b.entries));
    Ok(Value::Object(bundle))
}

/// A chart's bundle as Bulk Data's NDJSON wants it: each resource on its own, with its type,
/// and the references between them (`urn:uuid:` full URLs inside a bundle) written
/// `Type/id`, as a resource outside a bundle names another.
pub fn bulk_resources(bundle: Value) -> Vec<(String, Value)> {
    let Value::Object(mut b) = bundle else {
        return Vec::new();
    };
    let Some(Value::Array(entries)) = b.remove("entry") else {
        return Vec::new();
    };
    let resources: Vec<Value> = entries
        .into_iter()
        .filter_map(|mut e| e.get_mut("resource").map(Value::take))
        .collect();
    let types: std::collections::HashMap<String, String> = resources
        .iter()
        .filter_map(|r| {
            Some((
                r["id"].as_str()?.to_string(),
                r["resourceType"].as_str()?.to_string(),
            ))
        })
        .collect();
    fn rewrite(v: &mut Value, types: &std::collections::HashMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if k == "reference" {
                        if let Some(uuid) = v.as_str().and_then(|s| s.strip_prefix("urn:uuid:")) {
                            if let Some(t) = types.get(uuid) {
                                *v = Value::String(format!("{t}/{uuid}"));
                            }
                        }
                    } else {
                        rewrite(v, types);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| rewrite(v, types)),
            _ => {}
        }
    }
    resources
        .into_iter()
        .map(|mut r| {
            rewrite(&mut r, &types);
            let t = r["resourceType"].as_str().unwrap_or_default().to_string();
            (t, r)
        })
        .collect()
}

struct Builder {
    chart: ChartId,
    entries: Vec<Value>,
    /// The ids of the resources added so far.
    ids: HashSet<String>,
    /// Scanned documents' files by hash.
    files: HashMap<String, Vec<u8>>,
}

/// A stable UUID for a record of a chart: SHA-256 of the chart id, the kind and the key, as a
/// version 8 (custom) UUID.
fn uuid_for(chart: ChartId, kind: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(chart.as_bytes())
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn reference(uuid: &str) -> Value {
    json!({ "reference": format!("urn:uuid:{uuid}") })
}

/// A person or organisation the chart names only by id or name.
fn named(display: &str) -> Value {
    json!({ "display": display })
}

fn text(t: &str) -> Value {
    json!({ "text": t })
}

fn coded(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut c = json!({ "system": system, "code": code });
    if let Some(d) = display {
        c["display"] = d.into();
    }
    json!({ "coding": [c] })
}

/// The entry's codes as a CodeableConcept, with its body (or `fallback`) as text.
fn concept(codes: &[CodeRef], fallback: &str) -> Value {
    let coding: Vec<Value> = codes
        .iter()
        .filter_map(|c| {
            let system = CodeSystem::from_token(&c.system).ok()?;
            let mut v = json!({ "system": system.fhir_uri(), "code": c.code });
            if let Some(d) = &c.display {
                v["display"] = d.as_str().into();
            }
            Some(v)
        })
        .collect();
    let mut out = Map::new();
    if !coding.is_empty() {
        out.insert("coding".into(), Value::Array(coding));
    }
    if !fallback.is_empty() {
        out.insert("text".into(), fallback.into());
    } else if out.is_empty() {
        out.insert("text".into(), "unspecified".into());
    }
    Value::Object(out)
}

/// Puts `value` under `key` when it is there.
fn put(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj[key] = v;
    }
}

/// The LOINC document type of a note.
fn document_type(kind: EntryKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        EntryKind::HistoryPhysical => ("34117-2", "History and physical note"),
        EntryKind::ProgressNote => ("11506-3", "Progress note"),
        EntryKind::NursingNote => ("34746-8", "Nurse Note"),
        EntryKind::ConsultNote => ("11488-4", "Consult note"),
        EntryKind::OperativeNote => ("11504-8", "Surgical operation note"),
        EntryKind::ProcedureNote => ("28570-0", "Procedure note"),
        EntryKind::DischargeSummary => ("18842-5", "Discharge summary"),
        _ => return None,
    })
}

/// A document's status: a corrected one is superseded by its correction; one entered in
/// error says so.
fn document_status(v: &ChartView, e: &EntryView) -> &'static str {
    let corrected = v
        .amendments
        .iter()
        .any(|a| a.target_entry_id == e.id && a.kind == AmendmentKind::Correction);
    match e.status {
        EntryStatus::EnteredInError => "entered-in-error",
        _ if corrected => "superseded",
        _ => "current",
    }
}

/// The LOINC document type of a scanned document, where one fits; the others are said in
/// words.
fn scanned_type(t: DocumentType) -> Option<(&'static str, &'static str)> {
    Some(match t {
        DocumentType::Consent => ("59284-0", "Patient Consent"),
        DocumentType::AdvanceDirective => ("42348-3", "Advance directives"),
        _ => return None,
    })
}

fn observation_status(s: EntryStatus) -> &'static str {
    match s {
        EntryStatus::Draft => "preliminary",
        EntryStatus::Final => "final",
        EntryStatus::Amended => "amended",
        EntryStatus::EnteredInError => "entered-in-error",
    }
}

/// An administration's or intervention's status. A draft is still going on while the patient
/// is in; once the stay is finished nothing is, and what was recorded happened.
fn event_status(s: EntryStatus, stay_finished: bool) -> &'static str {
    match s {
        EntryStatus::Draft if !stay_finished => "in-progress",
        EntryStatus::EnteredInError => "entered-in-error",
        EntryStatus::Draft | EntryStatus::Final | EntryStatus::Amended => "completed",
    }
}

/// The UCUM code of a unit as charts write it: UCUM's own codes, and the spellings nurses
/// type for the common ones (`bpm`, `mmHg`, `°C`). `None` for a unit not known here, which the
/// export keeps as text only (a Quantity's `unit` without a `system`).
fn ucum(unit: &str) -> Option<&'static str> {
    const UCUM: &[&str] = &[
        "/min", "mm[Hg]", "Cel", "[degF]", "%", "kg", "g", "mg", "ug", "cm", "m", "mm", "L", "mL",
        "dL", "mg/dL", "g/dL", "g/L", "mmol/L", "umol/L", "mEq/L", "10*3/uL", "10*6/uL", "10*9/L",
        "10*12/L", "U/L", "[iU]/L", "kg/m2", "[in_i]", "[lb_av]", "h", "min", "s", "d", "L/min",
        "mL/h", "fL", "pg", "ng/mL", "[pH]", "1",
    ];
    const SPELLED: &[(&str, &str)] = &[
        ("bpm", "/min"),
        ("beats/min", "/min"),
        ("breaths/min", "/min"),
        ("/min", "/min"),
        ("mmhg", "mm[Hg]"),
        ("°c", "Cel"),
        ("degc", "Cel"),
        ("°f", "[degF]"),
        ("degf", "[degF]"),
        ("kg/m²", "kg/m2"),
        ("in", "[in_i]"),
        ("lb", "[lb_av]"),
        ("lbs", "[lb_av]"),
        ("l/min", "L/min"),
        ("ml/h", "mL/h"),
        ("ml/hr", "mL/h"),
    ];
    let unit = unit.trim();
    UCUM.iter().find(|u| **u == unit).copied().or_else(|| {
        let lower = unit.to_lowercase();
        SPELLED
            .iter()
            .find(|(spelled, _)| *spelled == lower)
            .map(|(_, code)| *code)
    })
}

/// LOINC codes of the vital signs (FHIR R4's vital signs profile, and US Core's): an
/// Observation with one of them is in the `vital-signs` category.
const VITAL_SIGNS: &[&str] = &[
    "85353-1", // vital signs panel
    "9279-1",  // respiratory rate
    "8867-4",  // heart rate
    "2708-6",  // oxygen saturation in arterial blood
    "59408-5", // oxygen saturation by pulse oximetry
    "8310-5",  // body temperature
    "8302-2",  // body height
    "9843-4",  // head circumference
    "29463-7", // body weight
    "39156-5", // body mass index
    "85354-9", // blood pressure panel
    "8480-6",  // systolic blood pressure
    "8462-4",  // diastolic blood pressure
    "8478-0",  // mean blood pressure
];

/// The value as a Quantity when it is a number, else as a string.
fn observation_value(obs: &mut Value, value: Option<&str>, unit: Option<&str>) {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return;
    };
    match v
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        Some(n) => {
            let mut q = json!({ "value": n });
            if let Some(u) = unit.filter(|u| !u.trim().is_empty()) {
                q["unit"] = u.into();
                if let Some(code) = ucum(u) {
                    q["system"] = "http://unitsofmeasure.org".into();
                    q["code"] = code.into();
                }
            }
            obs["valueQuantity"] = q;
        }
        None => obs["valueString"] = v.into(),
    }
}

impl Builder {
    fn uuid(&self, kind: &str, key: &str) -> String {
        uuid_for(self.chart, kind, key)
    }

    fn added(&self, uuid: &str) -> bool {
        self.ids.contains(uuid)
    }

    fn add(&mut self, uuid: &str, mut resource: Value) {
        self.ids.insert(uuid.to_string());
        resource["id"] = uuid.into();
        self.entries.push(json!({
            "fullUrl": format!("urn:uuid:{uuid}"),
            "resource": resource,
        }));
    }

    fn patient_ref(&self) -> Value {
        reference(&self.uuid("Patient", ""))
    }

    fn encounter_ref(&self) -> Value {
        reference(&self.uuid("Encounter", ""))
    }

    /// The resource an entry becomes, by the entry's kind.
    fn entry_uuid(&self, e: &EntryView) -> String {
        self.uuid(entry_resource(e.content.kind), &e.id)
    }

    fn build(&mut self, v: &ChartView) -> Result<(), ChartError> {
        self.patient(v);
        self.encounter(v);
        for c in &v.coding {
            self.coding(v, c);
        }
        for e in &v.entries {
            self.entry(v, e);
        }
        for a in &v.amendments {
            self.amendment(v, a);
        }
        for s in &v.signatures {
            self.signature(v, s);
        }
        for f in &v.forms {
            self.form(f);
        }
        for r in &v.roi_requests {
            self.request(v, r);
        }
        for (n, d) in v.disclosures.iter().enumerate() {
            self.disclosure(n, d);
        }
        Ok(())
    }

    fn patient(&mut self, v: &ChartView) {
        let p = &v.patient;
        let mut name = json!({ "use": "official" });
        if !p.family_name.is_empty() {
            name["family"] = p.family_name.as_str().into();
        }
        let given: Vec<&str> = p.given_names.split_whitespace().collect();
        if !given.is_empty() {
            name["given"] = json!(given);
        }
        let mut r = json!({
            "resourceType": "Patient",
            "identifier": [{
                "use": "usual",
                "type": coded("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", Some("Medical record number")),
                "system": MRN_SYSTEM,
                "value": p.mrn,
            }],
            "name": [name],
        });
        put(&mut r, "gender", p.sex.map(|s| s.token().into()));
        put(&mut r, "birthDate", p.birth_date.clone().map(Value::from));
        put(
            &mut r,
            "telecom",
            p.phone
                .clone()
                .map(|ph| json!([{ "system": "phone", "value": ph }])),
        );
        put(
            &mut r,
            "address",
            p.address.clone().map(|a| json!([{ "text": a }])),
        );
        let uuid = self.uuid("Patient", "");
        self.add(&uuid, r);
    }

    fn encounter(&mut self, v: &ChartView) {
        let e = &v.encounter;
        let (class, class_name) = match e.class {
            EncounterClass::Inpatient => ("IMP", "inpatient encounter"),
            EncounterClass::Observation => ("OBSENC", "observation encounter"),
            EncounterClass::Emergency => ("EMER", "emergency"),
            EncounterClass::DayCase => ("SS", "short stay"),
        };
        let discharged = e.status == EncounterStatus::Discharged;
        let mut period = json!({ "start": e.admitted_at.to_rfc3339() });
        put(
            &mut period,
            "end",
            e.discharged_at.map(|t| t.to_rfc3339().into()),
        );
        let locations = self.locations(v);
        let mut r = json!({
            "resourceType": "Encounter",
            "status": if discharged { "finished" } else { "in-progress" },
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": class,
                "display": class_name,
            },
            "subject": self.patient_ref(),
            "period": period,
            "location": locations,
        });
        put(
            &mut r,
            "participant",
            e.attending.as_ref().map(|a| {
                json!([{
                    "type": [coded("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND", Some("attender"))],
                    "individual": named(a),
                }])
            }),
        );
        let mut hospitalization = Map::new();
        if let Some(s) = &e.admit_source {
            hospitalization.insert("admitSource".into(), text(s));
        }
        if let Some(d) = &e.discharge_disposition {
            hospitalization.insert("dischargeDisposition".into(), text(d));
        }
        if !hospitalization.is_empty() {
            r["hospitalization"] = Value::Object(hospitalization);
        }
        let diagnoses: Vec<Value> = v
            .coding
            .iter()
            .filter(|c| c.system == CodeSystem::Icd10Cm.token())
            .map(|c| {
                let (role, name) = match c.sequence {
                    CodingSequence::Admitting => ("AD", "Admission diagnosis"),
                    CodingSequence::Principal | CodingSequence::Secondary => ("billing", "Billing"),
                };
                let mut d = json!({
                    "condition": reference(&self.uuid("Condition", &c.id)),
                    "use": coded("http://terminology.hl7.org/CodeSystem/diagnosis-role", role, Some(name)),
                });
                if c.sequence == CodingSequence::Principal {
                    d["rank"] = 1.into();
                }
                d
            })
            .collect();
        if !diagnoses.is_empty() {
            r["diagnosis"] = Value::Array(diagnoses);
        }
        let uuid = self.uuid("Encounter", "");
        self.add(&uuid, r);
    }

    /// Where the patient was during the stay, oldest first: the admitting ward and each
    /// transfer's, each with its period; the last is `active` while the patient is in.
    fn locations(&self, v: &ChartView) -> Value {
        let e = &v.encounter;
        let place = |ward: &str, bed: Option<&str>| match bed {
            Some(bed) => format!("{ward} bed {bed}"),
            None => ward.to_string(),
        };
        let mut transfers: Vec<_> = v
            .events
            .iter()
            .filter(|ev| ev.kind == EventKind::Transfer && ev.ward.is_some())
            .collect();
        transfers.sort_by_key(|ev| ev.at);
        // The first place: the admission's, else where the first transfer came from, else
        // where the patient is now.
        let admit = v.events.iter().find(|ev| ev.kind == EventKind::Admit);
        let first = match (admit, transfers.first()) {
            (Some(a), _) if a.ward.is_some() => {
                place(a.ward.as_deref().unwrap_or(""), a.bed.as_deref())
            }
            (_, Some(t)) if t.from_ward.is_some() => {
                place(t.from_ward.as_deref().unwrap_or(""), t.from_bed.as_deref())
            }
            _ if transfers.is_empty() => place(&e.ward, e.bed.as_deref()),
            _ => place(&e.ward, None),
        };
        let mut stays: Vec<(String, Timestamp)> = vec![(first, e.admitted_at)];
        for t in &transfers {
            stays.push((
                place(t.ward.as_deref().unwrap_or(""), t.bed.as_deref()),
                t.at,
            ));
        }
        let finished = e.status == EncounterStatus::Discharged;
        let n = stays.len();
        stays
            .iter()
            .enumerate()
            .map(|(i, (name, start))| {
                let end = match stays.get(i + 1) {
                    Some((_, next)) => Some(*next),
                    None => e.discharged_at.filter(|_| finished),
                };
                let mut period = json!({ "start": start.to_rfc3339() });
                put(&mut period, "end", end.map(|t| t.to_rfc3339().into()));
                json!({
                    "location": named(name),
                    "status": if i + 1 < n || finished { "completed" } else { "active" },
                    "period": period,
                })
            })
            .collect()
    }

    fn coding(&mut self, v: &ChartView, c: &CodingView) {
        let Ok(system) = CodeSystem::from_token(&c.system) else {
            return;
        };
        // The coder's display, else the code's description from the ICD-10-CM table.
        let display = c.display.clone().or_else(|| match system {
            CodeSystem::Icd10Cm => {
                crate::codes::icd10cm_lookup(&c.code).map(|e| e.description.to_string())
            }
            _ => None,
        });
        let code = coded(system.fhir_uri(), &c.code, display.as_deref());
        // The entries the code rests on, as the resources they became.
        let supporting: Vec<&EntryView> = c
            .supporting_entries
            .iter()
            .filter_map(|id| v.entries.iter().find(|e| &e.id == id))
            .collect();
        let evidence: Vec<Value> = supporting
            .iter()
            .map(|e| reference(&self.entry_uuid(e)))
            .collect();
        match system {
            CodeSystem::Icd10Cm => {
                let (status, name) = match c.status {
                    CodingStatus::Proposed => ("provisional", "Provisional"),
                    CodingStatus::Queried => ("unconfirmed", "Unconfirmed"),
                    CodingStatus::Final => ("confirmed", "Confirmed"),
                };
                let mut r = json!({
                    "resourceType": "Condition",
                    "verificationStatus": coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", status, Some(name)),
                    "category": [coded("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", Some("Encounter Diagnosis"))],
                    "code": code,
                    "subject": self.patient_ref(),
                    "encounter": self.encounter_ref(),
                    "recordedDate": c.coded_at.to_rfc3339(),
                    "recorder": named(&c.coded_by),
                });
                put(
                    &mut r,
                    "extension",
                    c.poa.map(|poa| {
                        let value = match poa {
                            crate::chart::PresentOnAdmission::Exempt => "1",
                            other => other.token(),
                        };
                        json!([{ "url": POA_EXTENSION, "valueCode": value }])
                    }),
                );
                if !evidence.is_empty() {
                    r["evidence"] = json!([{ "detail": evidence }]);
                }
                let uuid = self.uuid("Condition", &c.id);
                self.add(&uuid, r);
            }
            CodeSystem::Icd10Pcs | CodeSystem::Cpt | CodeSystem::Hcpcs => {
                let mut r = json!({
                    "resourceType": "Procedure",
                    "status": "completed",
                    "code": code,
                    "subject": self.patient_ref(),
                    "encounter": self.encounter_ref(),
                    "recorder": named(&c.coded_by),
                });
                // When and by whom: the entries the code rests on; their authors performed it.
                if let Some((at, performers)) = v.performed(c) {
                    r["performedDateTime"] = at.to_rfc3339().into();
                    r["performer"] = performers
                        .iter()
                        .map(|a| json!({ "actor": named(a) }))
                        .collect();
                }
                if !evidence.is_empty() {
                    r["report"] = Value::Array(evidence);
                }
                let uuid = self.uuid("Procedure", &c.id);
                self.add(&uuid, r);
            }
            CodeSystem::Loinc | CodeSystem::Snomed => {}
        }
    }

    fn entry(&mut self, v: &ChartView, e: &EntryView) {
        let c = &e.content;
        let finished = v.encounter.status == EncounterStatus::Discharged;
        let when = c.effective_at.unwrap_or(c.recorded_at).to_rfc3339();
        let code = concept(&c.codes, &c.body);
        let uuid = self.entry_uuid(e);
        let resource = match c.kind {
            EntryKind::Observation | EntryKind::LabResult => {
                let mut r = json!({
                    "resourceType": "Observation",
                    "status": observation_status(e.status),
                    "code": code,
                    "subject": self.patient_ref(),
                    "encounter": self.encounter_ref(),
                    "effectiveDateTime": when,
                    "issued": c.recorded_at.to_rfc3339(),
                    "performer": [named(&c.author)],
                });
                let vital = c.codes.iter().any(|code| {
                    code.system == CodeSystem::Loinc.token()
                        && VITAL_SIGNS.contains(&code.code.as_str())
                });
                if c.kind == EntryKind::LabResult {
                    r["category"] = json!([coded(
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        "laboratory",
                        Some("Laboratory")
                    )]);
                } else if vital {
                    r["category"] = json!([coded(
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        "vital-signs",
                        Some("Vital Signs")
                    )]);
                }
                observation_value(&mut r, c.value.as_deref(), c.unit.as_deref());
                if c.kind == EntryKind::LabResult {
                    let mut report = self.report(e, ("LAB", "Laboratory"), &when);
                    report["result"] = json!([reference(&uuid)]);
                    let report_uuid = self.uuid("DiagnosticReport", &e.id);
                    self.add(&report_uuid, report);
                }
                r
            }
            EntryKind::ImagingResult => {
                let mut r = self.report(e, ("RAD", "Radiology"), &when);
                if !c.body.is_empty() {
                    r["conclusion"] = c.body.as_str().into();
                }
                r
            }
            EntryKind::Medication => json!({
                "resourceType": "MedicationAdministration",
                "status": event_status(e.status, finished),
                "medicationCodeableConcept": code,
                "subject": self.patient_ref(),
                "context": self.encounter_ref(),
                "effectiveDateTime": when,
                "performer": [{ "actor": named(&c.author) }],
            }),
            EntryKind::Intervention | EntryKind::Treatment => json!({
                "resourceType": "Procedure",
                "status": event_status(e.status, finished),
                "code": code,
                "subject": self.patient_ref(),
                "encounter": self.encounter_ref(),
                "performedDateTime": when,
                "performer": [{ "actor": named(&c.author) }],
            }),
            EntryKind::ScannedDocument => self.scanned_document(v, e),
            kind => {
                let (loinc, name) = document_type(kind).unwrap_or(("11506-3", "Progress note"));
                let status = document_status(v, e);
                let mut r = json!({
                    "resourceType": "DocumentReference",
                    "status": status,
                    "type": coded("http://loinc.org", loinc, Some(name)),
                    "subject": self.patient_ref(),
                    "date": c.recorded_at.to_rfc3339(),
                    "author": [named(&c.author)],
                    "content": [{ "attachment": attachment(&c.body, c.recorded_at) }],
                    "context": { "encounter": [self.encounter_ref()] },
                });
                if e.status != EntryStatus::EnteredInError {
                    r["docStatus"] = observation_status(e.status).into();
                }
                r
            }
        };
        self.add(&uuid, resource);
    }

    /// A scanned document: a DocumentReference whose attachment is the file (base64), named
    /// by its SHA-256 as an identifier.
    fn scanned_document(&self, v: &ChartView, e: &EntryView) -> Value {
        let c = &e.content;
        let status = document_status(v, e);
        let Some(a) = &c.attachment else {
            // The reader refuses a scanned document without its file.
            return json!({ "resourceType": "DocumentReference", "status": status, "content": [] });
        };
        let kind = match scanned_type(a.document_type) {
            Some((loinc, name)) => coded("http://loinc.org", loinc, Some(name)),
            None => text(&a.document_type.token().replace('_', " ")),
        };
        let mut r = json!({
            "resourceType": "DocumentReference",
            "status": status,
            "type": kind,
            "category": [text("scanned document")],
            "subject": self.patient_ref(),
            "date": c.recorded_at.to_rfc3339(),
            "author": [named(&c.author)],
            "identifier": [{ "system": FILE_HASH_SYSTEM, "value": a.hash }],
            "description": a.title,
            "content": [{ "attachment": {
                "contentType": a.media_type.token(),
                "size": a.size,
                "title": a.title,
                "creation": a.document_date.clone().unwrap_or_else(|| c.recorded_at.to_rfc3339()),
                "extension": [{ "url": PAGES_EXTENSION, "valuePositiveInt": a.pages }],
            }}],
            "context": { "encounter": [self.encounter_ref()] },
        });
        // One entered in error (filed on the wrong patient's chart, say) is not this
        // patient's: it is listed, without the file.
        let bytes = self.files.get(&a.hash);
        if let Some(bytes) = bytes.filter(|_| e.status != EntryStatus::EnteredInError) {
            r["content"][0]["attachment"]["data"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
        if e.status != EntryStatus::EnteredInError {
            r["docStatus"] = observation_status(e.status).into();
        }
        r
    }

    /// A DiagnosticReport of an entry, in a v2-0074 service section.
    fn report(&self, e: &EntryView, section: (&str, &str), when: &str) -> Value {
        let c = &e.content;
        json!({
            "resourceType": "DiagnosticReport",
            "status": observation_status(e.status),
            "category": [coded("http://terminology.hl7.org/CodeSystem/v2-0074", section.0, Some(section.1))],
            "code": concept(&c.codes, &c.body),
            "subject": self.patient_ref(),
            "encounter": self.encounter_ref(),
            "effectiveDateTime": when,
            "issued": c.recorded_at.to_rfc3339(),
            "performer": [named(&c.author)],
        })
    }

    fn amendment(&mut self, v: &ChartView, a: &AmendmentView) {
        // Entering a record in error adds no document: the record itself says so.
        if a.kind == AmendmentKind::EnteredInError {
            return;
        }
        let target = v.entries.iter().find(|e| e.id == a.target_entry_id);
        let (loinc, name) = target
            .and_then(|t| document_type(t.content.kind))
            .unwrap_or(("11506-3", "Progress note"));
        let relation = match a.kind {
            AmendmentKind::Addendum
            | AmendmentKind::LateEntry
            | AmendmentKind::PatientRequested => "appends",
            AmendmentKind::Correction | AmendmentKind::EnteredInError => "replaces",
        };
        let mut r = json!({
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "final",
            "type": coded("http://loinc.org", loinc, Some(name)),
            "subject": self.patient_ref(),
            "date": a.at.to_rfc3339(),
            "author": [named(&a.author)],
            "description": format!("{}: {}", a.kind, a.reason),
            "content": [{ "attachment": attachment(&a.body, a.at) }],
            "context": { "encounter": [self.encounter_ref()] },
        });
        // Only documents relate to documents; an amended observation is marked by its status.
        if let Some(t) = target.filter(|t| document_type(t.content.kind).is_some()) {
            r["relatesTo"] =
                json!([{ "code": relation, "target": reference(&self.entry_uuid(t)) }]);
        }
        let uuid = self.uuid("DocumentReference", &a.id);
        self.add(&uuid, r);
    }

    fn signature(&mut self, v: &ChartView, s: &SignatureView) {
        let Some(target) = v.entries.iter().find(|e| e.id == s.entry_id) else {
            return;
        };
        let (code, display, participant) = match s.meaning {
            SignatureMeaning::Author => ("1.2.840.10065.1.12.1.1", "Author's Signature", "author"),
            SignatureMeaning::Cosign => {
                ("1.2.840.10065.1.12.1.2", "Coauthor's Signature", "attester")
            }
            SignatureMeaning::Verify => (
                "1.2.840.10065.1.12.1.5",
                "Verification Signature",
                "verifier",
            ),
        };
        let r = json!({
            "resourceType": "Provenance",
            "target": [reference(&self.entry_uuid(target))],
            "recorded": s.signed_at.to_rfc3339(),
            "agent": [{
                "type": coded("http://terminology.hl7.org/CodeSystem/provenance-participant-type", participant, None),
                "who": named(&s.signer),
            }],
            "entity": [{
                "role": "source",
                "what": { "identifier": { "system": CONTENT_HASH_SYSTEM, "value": s.content_hash } },
            }],
            "signature": [{
                "type": [{ "system": "urn:iso-astm:E1762-95:2013", "code": code, "display": display }],
                "when": s.signed_at.to_rfc3339(),
                "who": named(&s.signer),
            }],
        });
        // The same person may sign one entry as author and again to verify it; a signature
        // recorded twice (two tablets, offline) is one signature.
        let key = format!(
            "{}/{}/{}/{}/{}",
            s.entry_id, s.signer, s.meaning, s.signed_at, s.content_hash
        );
        let uuid = self.uuid("Provenance", &key);
        if self.added(&uuid) {
            return;
        }
        self.add(&uuid, r);
    }

    fn form(&mut self, f: &FormView) {
        let (scope, category, category_name) = match f.form_type {
            FormType::Consent => ("treatment", "59284-0", "Consent Document"),
            FormType::RoiAuthorization => (
                "patient-privacy",
                "64292-6",
                "Release of information consent",
            ),
            _ => return,
        };
        let r = json!({
            "resourceType": "Consent",
            "status": if f.completed_at.is_some() { "active" } else { "proposed" },
            "scope": coded("http://terminology.hl7.org/CodeSystem/consentscope", scope, None),
            "category": [coded("http://loinc.org", category, Some(category_name))],
            "patient": self.patient_ref(),
            "dateTime": f.completed_at.unwrap_or(f.created_at).to_rfc3339(),
            "policyRule": coded("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", Some("opt-in")),
        });
        let uuid = self.uuid("Consent", &f.id);
        self.add(&uuid, r);
    }

    fn request(&mut self, v: &ChartView, q: &RoiRequestView) {
        let status = match q.status {
            RoiStatus::Received => "received",
            RoiStatus::AuthorizationVerified => "in-progress",
            RoiStatus::Fulfilled => "completed",
            RoiStatus::Denied => "rejected",
        };
        let mut r = json!({
            "resourceType": "Task",
            "status": status,
            "intent": "order",
            "code": text("release of information"),
            "description": q.scope,
            "for": self.patient_ref(),
            "encounter": self.encounter_ref(),
            "authoredOn": q.received_at.to_rfc3339(),
            "lastModified": q.status_at.to_rfc3339(),
            "requester": named(&q.requester),
            "reasonCode": text(q.purpose.token()),
            "restriction": {
                "period": { "end": q.due_at.to_rfc3339() },
                "recipient": [named(&q.recipient)],
            },
        });
        put(&mut r, "statusReason", q.status_reason.as_deref().map(text));
        let authorization = q.authorization.as_ref().filter(|form| {
            v.forms
                .iter()
                .any(|f| &f.id == *form && f.form_type == FormType::RoiAuthorization)
        });
        put(
            &mut r,
            "focus",
            authorization.map(|form| reference(&self.uuid("Consent", form))),
        );
        let uuid = self.uuid("Task", &q.id);
        self.add(&uuid, r);
    }

    fn disclosure(&mut self, n: usize, d: &DisclosureView) {
        let mut purpose = Map::new();
        if let Some((code, name)) = purpose_of_use(d.purpose) {
            purpose.insert(
                "coding".into(),
                json!([{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": code, "display": name }]),
            );
        }
        purpose.insert("text".into(), d.purpose.token().into());
        let mut patient = json!({
            "what": self.patient_ref(),
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
            "description": d.description,
        });
        if let Some(request) = &d.request_id {
            patient["detail"] = json!([{ "type": "request", "valueString": request }]);
        }
        let r = json!({
            "resourceType": "AuditEvent",
            "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export" },
            "action": "R",
            "recorded": d.at.to_rfc3339(),
            "outcome": "0",
            "purposeOfEvent": [Value::Object(purpose)],
            "agent": [
                { "who": named(&d.by), "requestor": false },
                { "who": named(&d.recipient), "name": d.recipient, "requestor": true },
            ],
            "source": { "observer": named("chartsync") },
            "entity": [patient],
        });
        let uuid = self.uuid("AuditEvent", &format!("{n}/{}", d.id));
        self.add(&uuid, r);
    }
}

/// Adds each break-glass grant to a chart's bundle as an AuditEvent (an emergency access:
/// DICOM 110113 "Security Alert") with its purpose of use (HL7 v3 ActReason ETREAT or BTG),
/// the person, the reason they gave, the period, and the review if there was one.
pub fn add_break_glass(bundle: &mut Value, chart: ChartId, grants: &[crate::store::BreakGlass]) {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return;
    };
    for g in grants {
        let uuid = uuid_for(chart, "AuditEvent", &format!("break-glass/{}", g.id));
        let end = g.ended_at.unwrap_or(g.ends_at);
        let mut agent = json!({
            "who": named(&g.user),
            "requestor": true,
            "role": [text(&g.role)],
            "purposeOfUse": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": g.reason.code(),
                "display": g.reason.display(),
            }], "text": g.text }],
        });
        if let Some(device) = &g.device {
            agent["network"] = json!({ "address": device, "type": "5" });
        }
        let mut r = json!({
            "resourceType": "AuditEvent",
            "id": uuid,
            "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113", "display": "Security Alert" },
            "subtype": [{ "system": "urn:chartsync:audit", "code": "break-glass", "display": "Break-glass access" }],
            "action": "E",
            "period": { "start": g.starts_at.to_rfc3339(), "end": end.to_rfc3339() },
            "recorded": g.starts_at.to_rfc3339(),
            "outcome": "0",
            "purposeOfEvent": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": g.reason.code(),
                "display": g.reason.display(),
            }], "text": g.text }],
            "agent": [agent],
            "source": { "observer": named("chartsync") },
            "entity": [{
                "what": reference(&uuid_for(chart, "Patient", "")),
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
                "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
            }],
        });
        if let (Some(by), Some(at)) = (&g.reviewed_by, g.reviewed_at) {
            r["entity"]
                .as_array_mut()
                .into_iter()
                .for_each(|e| e.push(json!({
                    "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "4", "display": "Other" },
                    "description": format!("reviewed by {by} at {}", at.to_rfc3339()),
                    "detail": [{ "type": "review-note", "valueString": g.review_note.clone().unwrap_or_default() }],
                })));
        }
        entries.push(json!({ "fullUrl": format!("urn:uuid:{uuid}"), "resource": r }));
    }
}

/// The resource type an entry of this kind becomes.
fn entry_resource(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Observation | EntryKind::LabResult => "Observation",
        EntryKind::ImagingResult => "DiagnosticReport",
        EntryKind::Medication => "MedicationAdministration",
        EntryKind::Intervention | EntryKind::Treatment => "Procedure",
        _ => "DocumentReference",
    }
}

/// Text as a plain-text attachment.
fn attachment(body: &str, created: Timestamp) -> Value {
    let mut a = json!({
        "contentType": "text/plain; charset=utf-8",
        "creation": created.to_rfc3339(),
    });
    if !body.is_empty() {
        a["data"] = base64::engine::general_purpose::STANDARD
            .encode(body.as_bytes())
            .into();
    }
    a
}

/// HL7 v3 PurposeOfUse codes (in the ActReason code system) for the purposes that have one.
fn purpose_of_use(p: DisclosurePurpose) -> Option<(&'static str, &'static str)> {
    use DisclosurePurpose::*;
    Some(match p {
        Treatment => ("TREAT", "treatment"),
        Payment => ("HPAYMT", "healthcare payment"),
        HealthCareOperations => ("HOPERAT", "healthcare operations"),
        ToPatient => ("PATRQT", "patient requested"),
        DirectoryOrInvolvedPersons => ("HDIRECT", "directory"),
        PublicHealth => ("PUBHLTH", "public health"),
        JudicialProceeding | LawEnforcement | RequiredByLaw => ("HLEGAL", "legal"),
        Research => ("HRESCH", "healthcare research"),
        _ => return None,
    })
}
