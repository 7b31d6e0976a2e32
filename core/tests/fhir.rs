//! A chart as a FHIR R4 Bundle. These tests check what the FHIR validators do not (every
//! reference resolves inside the bundle, ids are stable, nothing is null) and write the
//! bundles to `target/tmp/fhir-bundles/`, where `scripts/test.sh` has two validators nobody
//! on the team wrote (npm `fhir`, PyPI `fhir.resources`) check them against R4.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chartsync_core::chart::*;
use chartsync_core::codes::CodeSystem;
use chartsync_core::fhir;
use common::*;
use serde_json::Value;

/// A whole stay, every kind of record in it: Ana Rivera's pneumonia admission, with notes
/// signed, cosigned, amended and one entered in error; vital signs, a lab and an X-ray; an
/// antibiotic and a procedure; the codes, a consent, and a records request under a signed
/// authorization, fulfilled and disclosed, besides a report to public health.
fn whole_stay() -> Chart {
    let mut c = admitted();
    let doc = physician();
    let nurse = day_nurse();
    let tech = technician();
    let hp = c
        .add_entry(
            &doc,
            t(60),
            NewEntry::note(EntryKind::HistoryPhysical, "Cough and fever for 3 days."),
        )
        .unwrap();
    c.sign_entry(&doc, t(61), &hp, SignatureMeaning::Author)
        .unwrap();
    // The same physician verifies it too: a second signature of the same entry by her.
    c.sign_entry(&doc, t(62), &hp, SignatureMeaning::Verify)
        .unwrap();
    let progress = c
        .add_entry(
            &doc,
            t(24 * 60),
            NewEntry::note(EntryKind::ProgressNote, "Improving on antibiotics."),
        )
        .unwrap();
    c.sign_entry(&doc, t(24 * 60 + 1), &progress, SignatureMeaning::Author)
        .unwrap();
    c.amend(
        &doc,
        t(24 * 60 + 30),
        NewAmendment {
            target_entry_id: progress.clone(),
            kind: AmendmentKind::Addendum,
            reason: "culture result".into(),
            body: "Sputum culture grew S. pneumoniae.".into(),
        },
    )
    .unwrap();
    let wrong = c
        .add_entry(
            &doc,
            t(25 * 60),
            NewEntry::note(EntryKind::ConsultNote, "Cardiology consult."),
        )
        .unwrap();
    c.amend(
        &doc,
        t(25 * 60 + 5),
        NewAmendment {
            target_entry_id: wrong,
            kind: AmendmentKind::EnteredInError,
            reason: "wrong patient".into(),
            body: String::new(),
        },
    )
    .unwrap();
    let nursing = c
        .add_entry(
            &nurse,
            t(26 * 60),
            NewEntry::note(EntryKind::NursingNote, "Slept well."),
        )
        .unwrap();
    c.sign_entry(&nurse, t(26 * 60 + 1), &nursing, SignatureMeaning::Author)
        .unwrap();
    c.amend(
        &nurse,
        t(26 * 60 + 30),
        NewAmendment {
            target_entry_id: nursing.clone(),
            kind: AmendmentKind::Correction,
            reason: "wrong time".into(),
            body: "Slept well from 23:00.".into(),
        },
    )
    .unwrap();
    let hr = c.add_entry(&nurse, t(90), heart_rate(88)).unwrap();
    c.add_entry(
        &nurse,
        t(95),
        NewEntry {
            kind: EntryKind::Observation,
            shift: Some(Shift::Day),
            effective_at: Some(t(94)),
            codes: vec![],
            value: Some("alert and oriented".into()),
            unit: None,
            body: "Mental status".into(),
        },
    )
    .unwrap();
    let wbc = c
        .add_entry(
            &doc,
            t(120),
            NewEntry {
                kind: EntryKind::LabResult,
                shift: None,
                effective_at: Some(t(100)),
                codes: vec![CodeInput::new(CodeSystem::Loinc, "6690-2")],
                value: Some("14.2".into()),
                unit: Some("10*3/uL".into()),
                body: "WBC".into(),
            },
        )
        .unwrap();
    let xray = c
        .add_entry(
            &doc,
            t(130),
            NewEntry {
                kind: EntryKind::ImagingResult,
                shift: None,
                effective_at: None,
                codes: vec![CodeInput::new(CodeSystem::Loinc, "36643-5")],
                value: None,
                unit: None,
                body: "Right lower lobe consolidation.".into(),
            },
        )
        .unwrap();
    c.add_entry(
        &nurse,
        t(140),
        NewEntry {
            kind: EntryKind::Medication,
            shift: Some(Shift::Day),
            effective_at: None,
            codes: vec![],
            value: Some("1".into()),
            unit: Some("g".into()),
            body: "Ceftriaxone 1 g IV".into(),
        },
    )
    .unwrap();
    c.add_entry(
        &nurse,
        t(150),
        NewEntry {
            kind: EntryKind::Intervention,
            shift: Some(Shift::Day),
            effective_at: None,
            codes: vec![],
            value: None,
            unit: None,
            body: "Incentive spirometry taught".into(),
        },
    )
    .unwrap();
    let summary = c
        .add_entry(
            &doc,
            t(3 * 24 * 60),
            NewEntry::note(
                EntryKind::DischargeSummary,
                "Discharged home on oral antibiotics.",
            ),
        )
        .unwrap();
    c.sign_entry(&doc, t(3 * 24 * 60 + 1), &summary, SignatureMeaning::Author)
        .unwrap();
    c.sign_entry(
        &Staff::new("dr.lee", Role::Physician, "tablet-4west-03"),
        t(3 * 24 * 60 + 2),
        &summary,
        SignatureMeaning::Cosign,
    )
    .unwrap();

    let coder = coder();
    for (system, code, sequence, poa, supporting) in [
        (
            CodeSystem::Icd10Cm,
            "J13",
            CodingSequence::Principal,
            Some(PresentOnAdmission::Yes),
            vec![xray.clone(), wbc.clone()],
        ),
        (
            CodeSystem::Icd10Cm,
            "E11.9",
            CodingSequence::Secondary,
            Some(PresentOnAdmission::Exempt),
            vec![],
        ),
        (
            CodeSystem::Icd10Cm,
            "R50.9",
            CodingSequence::Admitting,
            None,
            vec![hr.clone()],
        ),
        (
            CodeSystem::Icd10Pcs,
            "BW03ZZZ",
            CodingSequence::Secondary,
            None,
            vec![xray.clone()],
        ),
        (
            CodeSystem::Cpt,
            "71046",
            CodingSequence::Secondary,
            None,
            vec![],
        ),
        (
            CodeSystem::Hcpcs,
            "J0696",
            CodingSequence::Secondary,
            None,
            vec![],
        ),
    ] {
        let k = c
            .assign_code(
                &coder,
                t(4 * 24 * 60),
                NewCoding {
                    code: CodeInput::new(system, code),
                    sequence,
                    poa,
                    supporting_entries: supporting,
                },
            )
            .unwrap();
        if sequence == CodingSequence::Principal {
            c.set_coding_status(&coder, t(4 * 24 * 60 + 1), &k, CodingStatus::Final)
                .unwrap();
        }
    }
    let consent = c
        .add_form(
            &tech,
            t(5),
            NewForm {
                form_type: FormType::Consent,
                fields: Default::default(),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    c.sign_form(&tech, t(6), &consent, "A. Rivera", "patient")
        .unwrap();
    c.add_form(
        &tech,
        t(7),
        NewForm {
            form_type: FormType::Admission,
            fields: Default::default(),
            required_signers: vec![],
        },
    )
    .unwrap();
    // Moved to a step-down bed on day 2; discharged from there.
    c.transfer(&tech, t(2 * 24 * 60), "5east", Some("3B"))
        .unwrap();
    c.discharge(&tech, t(3 * 24 * 60 + 10), "home").unwrap();

    let request = c
        .receive_roi_request(
            &tech,
            t(10 * 24 * 60),
            NewRoiRequest {
                requester: "Acme Insurance".into(),
                recipient: "Acme Insurance".into(),
                recipient_address: "PO Box 1".into(),
                purpose: DisclosurePurpose::Payment,
                scope: "discharge summary".into(),
                due_at: t(40 * 24 * 60),
            },
        )
        .unwrap();
    let authorization = c
        .add_form(
            &tech,
            t(10 * 24 * 60 + 1),
            NewForm {
                form_type: FormType::RoiAuthorization,
                fields: Default::default(),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    c.sign_form(
        &tech,
        t(10 * 24 * 60 + 2),
        &authorization,
        "A. Rivera",
        "patient",
    )
    .unwrap();
    c.set_roi_status(
        &tech,
        t(10 * 24 * 60 + 3),
        &request,
        RoiStatus::AuthorizationVerified,
        Some(&authorization),
        None,
    )
    .unwrap();
    c.prepare_roi_release(
        &tech,
        t(11 * 24 * 60),
        &request,
        RoiDelivery::Mail,
        &[],
        RoiFee {
            basis: FeeBasis::NoFee,
            labor_cents: 0,
            supplies_cents: 0,
            postage_cents: 0,
            summary_cents: 0,
            total_cents: 0,
        },
    )
    .unwrap();
    c.set_roi_status(
        &tech,
        t(11 * 24 * 60),
        &request,
        RoiStatus::Fulfilled,
        None,
        None,
    )
    .unwrap();
    c.record_disclosure(
        &tech,
        t(11 * 24 * 60),
        NewDisclosure {
            request_id: Some(request),
            recipient: "Acme Insurance".into(),
            recipient_address: "PO Box 1".into(),
            description: "Discharge summary".into(),
            purpose: DisclosurePurpose::Payment,
        },
    )
    .unwrap();
    let denied = c
        .receive_roi_request(
            &tech,
            t(12 * 24 * 60),
            NewRoiRequest {
                requester: "J. Doe".into(),
                recipient: "J. Doe".into(),
                recipient_address: "5 Pine St".into(),
                purpose: DisclosurePurpose::JudicialProceeding,
                scope: "all records".into(),
                due_at: t(42 * 24 * 60),
            },
        )
        .unwrap();
    c.set_roi_status(
        &tech,
        t(12 * 24 * 60 + 1),
        &denied,
        RoiStatus::Denied,
        None,
        Some("no subpoena or authorization"),
    )
    .unwrap();
    c.record_disclosure(
        &tech,
        t(13 * 24 * 60),
        NewDisclosure {
            request_id: None,
            recipient: "County Health Dept".into(),
            recipient_address: "1 Main St".into(),
            description: "Pneumococcal case report".into(),
            purpose: DisclosurePurpose::PublicHealth,
        },
    )
    .unwrap();
    c
}

/// A patient just admitted to the emergency department: the least a chart holds.
fn just_admitted() -> Chart {
    let (mut p, mut e) = admission();
    p.birth_date = None;
    p.sex = None;
    p.address = None;
    p.phone = None;
    e.class = EncounterClass::Emergency;
    e.bed = None;
    e.attending = None;
    e.admit_source = None;
    Chart::create(p, e, &technician(), t(0)).unwrap()
}

/// Writes the bundle where the validators in `scripts/test.sh` look.
fn keep_for_validators(name: &str, bundle: &Value) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-bundles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(bundle).unwrap(),
    )
    .unwrap();
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect()
}

fn of_type<'a>(bundle: &'a Value, t: &str) -> Vec<&'a Value> {
    resources(bundle)
        .into_iter()
        .filter(|r| r["resourceType"] == t)
        .collect()
}

/// Every `reference` anywhere in the value.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "reference" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    references(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().any(has_null),
        Value::Array(a) => a.is_empty() || a.iter().any(has_null),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// What holds for any exported bundle: resolvable references, matching full URLs, unique ids,
/// no null or empty values (FHIR forbids both).
fn check_structure(bundle: &Value) {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    let mut urls = BTreeSet::new();
    for e in bundle["entry"].as_array().unwrap() {
        let url = e["fullUrl"].as_str().unwrap();
        assert_eq!(
            url,
            format!("urn:uuid:{}", e["resource"]["id"].as_str().unwrap())
        );
        assert!(urls.insert(url.to_string()), "{url} twice");
    }
    let mut refs = Vec::new();
    references(bundle, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(urls.contains(&r), "{r} resolves to nothing in the bundle");
    }
    assert!(!has_null(bundle), "a null or empty value");
}

#[test]
fn a_whole_stay_exports_as_one_bundle_with_every_record_in_its_resource() {
    let chart = whole_stay();
    let id = ChartId::random();
    let bundle = fhir::bundle(id, &chart, t(20 * 24 * 60)).unwrap();
    check_structure(&bundle);
    keep_for_validators("whole-stay", &bundle);

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in resources(&bundle) {
        *counts
            .entry(r["resourceType"].as_str().unwrap())
            .or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = [
        ("Patient", 1),
        ("Encounter", 1),
        ("Condition", 3),
        // Two codes (ICD-10-PCS, CPT; the HCPCS drug code too) and the intervention.
        ("Procedure", 4),
        // Heart rate, mental status, the WBC.
        ("Observation", 3),
        // The lab's report and the X-ray's.
        ("DiagnosticReport", 2),
        ("MedicationAdministration", 1),
        // H&P, progress, consult, nursing, discharge summary, the addendum and the correction
        // (entering the consult in error adds no document).
        ("DocumentReference", 7),
        // Four author signatures, a verification and a cosignature.
        ("Provenance", 6),
        // The treatment consent and the release authorization; the admission form is no consent.
        ("Consent", 2),
        ("Task", 2),
        ("AuditEvent", 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);

    let patient = &of_type(&bundle, "Patient")[0];
    assert_eq!(patient["identifier"][0]["value"], "MRN-0042");
    assert_eq!(
        patient["name"][0]["given"],
        serde_json::json!(["Ana", "Maria"])
    );
    assert_eq!(patient["birthDate"], "1957-03-14");
    let encounter = &of_type(&bundle, "Encounter")[0];
    assert_eq!(encounter["status"], "finished");
    assert_eq!(encounter["class"]["code"], "IMP");
    assert_eq!(encounter["diagnosis"].as_array().unwrap().len(), 3);

    let principal = of_type(&bundle, "Condition")
        .into_iter()
        .find(|c| c["code"]["coding"][0]["code"] == "J13")
        .unwrap();
    assert_eq!(
        principal["code"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/icd-10-cm"
    );
    assert_eq!(
        principal["verificationStatus"]["coding"][0]["code"],
        "confirmed"
    );
    assert_eq!(principal["extension"][0]["valueCode"], "Y");
    assert_eq!(
        principal["evidence"][0]["detail"].as_array().unwrap().len(),
        2
    );
    let exempt = of_type(&bundle, "Condition")
        .into_iter()
        .find(|c| c["code"]["coding"][0]["code"] == "E11.9")
        .unwrap();
    assert_eq!(
        exempt["extension"][0]["valueCode"], "1",
        "exempt is reported as 1"
    );

    let heart_rate = of_type(&bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "8867-4")
        .unwrap();
    assert_eq!(
        heart_rate["code"]["coding"][0]["system"],
        "http://loinc.org"
    );
    assert_eq!(heart_rate["valueQuantity"]["value"], 88.0);
    assert_eq!(heart_rate["valueQuantity"]["unit"], "/min");
    assert_eq!(
        heart_rate["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert_eq!(heart_rate["valueQuantity"]["code"], "/min");
    assert_eq!(
        heart_rate["category"][0]["coding"][0]["code"],
        "vital-signs"
    );
    let wbc = of_type(&bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "6690-2")
        .unwrap();
    assert_eq!(wbc["valueQuantity"]["code"], "10*3/uL");
    assert_eq!(wbc["category"][0]["coding"][0]["code"], "laboratory");
    let mental = of_type(&bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["text"] == "Mental status")
        .unwrap();
    assert!(mental.get("category").is_none(), "not a vital sign");

    // Diagnoses carry the table's words when the coder gave none.
    assert_eq!(
        exempt["code"]["coding"][0]["display"],
        "Type 2 diabetes mellitus without complications"
    );
    // A coded procedure: when and by whom, from the imaging result it rests on.
    let xray_procedure = of_type(&bundle, "Procedure")
        .into_iter()
        .find(|p| p["code"]["coding"][0]["code"] == "BW03ZZZ")
        .unwrap();
    assert_eq!(xray_procedure["performedDateTime"], t(130).to_rfc3339());
    assert_eq!(
        xray_procedure["performer"][0]["actor"]["display"],
        "dr.okafor"
    );
    assert_eq!(xray_procedure["report"].as_array().unwrap().len(), 1);
    // The stay is over: what was given was given.
    let given = &of_type(&bundle, "MedicationAdministration")[0];
    assert_eq!(given["status"], "completed");
    // Both places, each with its period.
    let locations = encounter["location"].as_array().unwrap();
    assert_eq!(locations.len(), 2, "{locations:?}");
    assert_eq!(locations[0]["location"]["display"], "4west bed 12A");
    assert_eq!(locations[0]["period"]["end"], t(2 * 24 * 60).to_rfc3339());
    assert_eq!(locations[1]["location"]["display"], "5east bed 3B");
    assert_eq!(locations[1]["period"]["start"], t(2 * 24 * 60).to_rfc3339());
    assert_eq!(
        locations[1]["period"]["end"],
        t(3 * 24 * 60 + 10).to_rfc3339()
    );
    assert!(locations.iter().all(|l| l["status"] == "completed"));

    // The addendum appends to the progress note; the consult entered in error says so.
    let docs = of_type(&bundle, "DocumentReference");
    let progress = docs
        .iter()
        .find(|d| d["type"]["coding"][0]["code"] == "11506-3" && d.get("relatesTo").is_none())
        .unwrap();
    let addendum = docs
        .iter()
        .find(|d| d["relatesTo"][0]["code"] == "appends")
        .unwrap();
    assert_eq!(
        addendum["relatesTo"][0]["target"]["reference"],
        format!("urn:uuid:{}", progress["id"].as_str().unwrap())
    );
    assert_eq!(progress["docStatus"], "amended");
    let consults: Vec<_> = docs
        .iter()
        .filter(|d| d["type"]["coding"][0]["code"] == "11488-4")
        .collect();
    assert_eq!(consults.len(), 1, "no replacement document for an error");
    assert_eq!(consults[0]["status"], "entered-in-error");
    // The corrected nursing note is superseded by its correction, which replaces it.
    let nursing = docs
        .iter()
        .find(|d| d["type"]["coding"][0]["code"] == "34746-8" && d.get("relatesTo").is_none())
        .unwrap();
    assert_eq!(nursing["status"], "superseded");
    let correction = docs
        .iter()
        .find(|d| d["relatesTo"][0]["code"] == "replaces")
        .unwrap();
    assert_eq!(
        correction["relatesTo"][0]["target"]["reference"],
        format!("urn:uuid:{}", nursing["id"].as_str().unwrap())
    );

    // A cosignature is a Provenance of its own, with the ASTM signature type.
    let cosign = of_type(&bundle, "Provenance")
        .into_iter()
        .find(|p| p["signature"][0]["type"][0]["code"] == "1.2.840.10065.1.12.1.2")
        .unwrap();
    assert_eq!(cosign["signature"][0]["who"]["display"], "dr.lee");

    let tasks = of_type(&bundle, "Task");
    let statuses: BTreeSet<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "rejected"].into_iter().collect());
    let fulfilled = tasks.iter().find(|t| t["status"] == "completed").unwrap();
    assert!(
        fulfilled["focus"]["reference"].is_string(),
        "the authorization"
    );
    let audits = of_type(&bundle, "AuditEvent");
    assert!(audits
        .iter()
        .any(|a| a["purposeOfEvent"][0]["coding"][0]["code"] == "PUBHLTH"));

    // The same chart exported again names every resource the same.
    let again = fhir::bundle(id, &chart, t(21 * 24 * 60)).unwrap();
    assert_eq!(again["entry"], bundle["entry"]);
    assert_ne!(again["timestamp"], bundle["timestamp"]);
}

#[test]
fn a_chart_just_opened_in_the_emergency_department_exports_with_nothing_empty() {
    let bundle = fhir::bundle(ChartId::random(), &just_admitted(), t(5)).unwrap();
    check_structure(&bundle);
    keep_for_validators("just-admitted", &bundle);
    assert_eq!(resources(&bundle).len(), 2, "the patient and the encounter");
    let encounter = &of_type(&bundle, "Encounter")[0];
    assert_eq!(encounter["status"], "in-progress");
    assert_eq!(encounter["class"]["code"], "EMER");
    assert_eq!(encounter["location"][0]["status"], "active");
    assert!(encounter["location"][0]["period"].get("end").is_none());
    assert!(encounter.get("period").unwrap().get("end").is_none());
}
