//! The chart's rules, scenario by scenario, in the ward's and the records office's words.

mod common;

use chartsync_core::chart::validate::{validate_changes, Violation};
use chartsync_core::chart::*;
use chartsync_core::codes::{CodeError, CodeSystem};
use common::*;

fn note(body: &str) -> NewEntry {
    NewEntry::note(EntryKind::ProgressNote, body)
}

fn entry_of(chart: &Chart, id: &str) -> EntryView {
    chart.entry(id).unwrap()
}

#[test]
fn technician_admits_a_patient_and_the_chart_shows_the_admission() {
    let chart = admitted();
    let v = chart.view().unwrap();
    assert_eq!(v.schema, "chartsync/chart@1");
    assert_eq!(v.patient.mrn, "MRN-0042");
    assert_eq!(v.encounter.ward, "4west");
    assert_eq!(v.encounter.status, EncounterStatus::Active);
    assert_eq!(v.encounter.admitted_at, t(0));
    assert_eq!(v.events.len(), 1);
    assert_eq!(v.events[0].kind, EventKind::Admit);
    assert_eq!(v.events[0].by, "him.jones");
    assert!(v.conflicts.is_empty());
    // The view is plain JSON for the REST API and the bindings.
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["encounter"]["admitted_at"], "2026-11-02T08:00:00Z");
    assert_eq!(json["patient"]["sex"], "female");
}

#[test]
fn a_chart_survives_saving_and_loading_on_another_tablet() {
    let mut chart = admitted();
    let id = chart
        .add_entry(&day_nurse(), t(5), note("Settled on ward."))
        .unwrap();
    let loaded = Chart::load(&chart.save()).unwrap();
    assert_eq!(loaded.view().unwrap(), chart.view().unwrap());
    assert_eq!(loaded.entry(&id).unwrap().content.body, "Settled on ward.");
}

#[test]
fn garbage_or_a_foreign_document_is_refused_not_opened() {
    assert!(matches!(
        Chart::load(b"not a chart"),
        Err(ChartError::Corrupt(_))
    ));
    let mut other = automerge::AutoCommit::new();
    use automerge::transaction::Transactable;
    other
        .put(automerge::ROOT, "title", "shopping list")
        .unwrap();
    assert!(matches!(
        Chart::load(&other.save()),
        Err(ChartError::NotAChart(_))
    ));
    let mut future = automerge::AutoCommit::new();
    future
        .put(automerge::ROOT, "schema", "chartsync/chart@2")
        .unwrap();
    assert!(matches!(
        Chart::load(&future.save()),
        Err(ChartError::UnsupportedSchema { .. })
    ));
}

#[test]
fn nurse_records_vital_signs_with_a_loinc_code() {
    let mut chart = admitted();
    let id = chart
        .add_entry(
            &day_nurse(),
            t(10),
            NewEntry {
                kind: EntryKind::Observation,
                shift: Some(Shift::Day),
                effective_at: Some(t(8)),
                codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
                value: Some("88".into()),
                unit: Some("/min".into()),
                body: "Heart rate, resting".into(),
            },
        )
        .unwrap();
    let e = entry_of(&chart, &id);
    assert_eq!(e.content.author, "rn.silva");
    assert_eq!(e.device, "tablet-4west-01");
    assert_eq!(e.content.codes[0].code, "8867-4");
    assert_eq!(e.status, EntryStatus::Draft);
}

#[test]
fn an_invalid_code_is_refused_and_nothing_is_written() {
    let mut chart = admitted();
    let heads = chart.heads();
    let err = chart
        .add_entry(
            &day_nurse(),
            t(10),
            NewEntry {
                codes: vec![CodeInput::new(CodeSystem::Icd10Cm, "E11")],
                ..note("x")
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ChartError::InvalidCode(CodeError::NotBillable { .. })
    ));
    assert!(err
        .to_string()
        .contains("E11 is a category, not a billable code"));
    assert_eq!(chart.heads(), heads);
}

#[test]
fn records_staff_do_not_write_clinical_notes() {
    let mut chart = admitted();
    let err = chart.add_entry(&technician(), t(1), note("x")).unwrap_err();
    assert!(matches!(err, ChartError::NotPermitted(_)));
    let err = chart.add_entry(&coder(), t(1), note("x")).unwrap_err();
    assert!(matches!(err, ChartError::NotPermitted(_)));
}

#[test]
fn physician_signs_her_note_and_it_can_no_longer_be_edited() {
    let mut chart = admitted();
    let dr = physician();
    let id = chart
        .add_entry(&dr, t(30), note("Chest clear. Plan: continue."))
        .unwrap();
    chart
        .sign_entry(&dr, t(31), &id, SignatureMeaning::Author)
        .unwrap();
    let e = entry_of(&chart, &id);
    assert!(e.signed);
    assert_eq!(e.status, EntryStatus::Final);
    let v = chart.view().unwrap();
    assert_eq!(v.signatures.len(), 1);
    assert_eq!(v.signatures[0].signer, "dr.okafor");
    assert_eq!(v.signatures[0].content_hash.len(), 64);

    let heads = chart.heads();
    let err = chart
        .edit_entry_body(&dr, t(40), &id, "changed")
        .unwrap_err();
    assert_eq!(
        err,
        ChartError::EntrySigned {
            entry_id: id.clone()
        }
    );
    let err = chart
        .set_entry_value(&dr, t(40), &id, Some("1"), None)
        .unwrap_err();
    assert!(matches!(err, ChartError::EntrySigned { .. }));
    assert_eq!(chart.heads(), heads, "a refused edit writes nothing");
}

#[test]
fn only_the_author_signs_as_author_and_only_a_physician_cosigns() {
    let mut chart = admitted();
    let id = chart
        .add_entry(&day_nurse(), t(1), note("Wound dressed."))
        .unwrap();
    let err = chart
        .sign_entry(&night_nurse(), t(2), &id, SignatureMeaning::Author)
        .unwrap_err();
    assert!(matches!(err, ChartError::NotPermitted(_)));
    let err = chart
        .sign_entry(&night_nurse(), t(2), &id, SignatureMeaning::Cosign)
        .unwrap_err();
    assert!(matches!(err, ChartError::NotPermitted(_)));
    chart
        .sign_entry(&day_nurse(), t(2), &id, SignatureMeaning::Author)
        .unwrap();
    chart
        .sign_entry(&physician(), t(3), &id, SignatureMeaning::Cosign)
        .unwrap();
    assert_eq!(chart.view().unwrap().signatures.len(), 2);
}

#[test]
fn night_nurse_edits_a_note_the_physician_signed_while_offline() {
    let dr = physician();
    let mut ward_tablet = admitted();
    let id = ward_tablet
        .add_entry(&dr, t(60), note("Pain controlled."))
        .unwrap();
    // The night nurse's tablet syncs, then loses the network.
    let mut night_tablet = replica(&mut ward_tablet);
    // Offline, both go on: the physician signs, the night nurse (who has not seen the
    // signature) edits the same note.
    let before_sign = ward_tablet.clone();
    ward_tablet
        .sign_entry(&dr, t(61), &id, SignatureMeaning::Author)
        .unwrap();
    night_tablet
        .edit_entry_body(
            &physician(),
            t(62),
            &id,
            "Pain controlled. Pt asleep 02:00.",
        )
        .unwrap();

    // The server accepts the nurse's edit: it was concurrent with the signature.
    let mut merged = ward_tablet.clone();
    merged.merge(&night_tablet).unwrap();
    validate_changes(ward_tablet.doc(), merged.doc()).unwrap();
    validate_changes(before_sign.doc(), merged.doc()).unwrap();

    // Nothing is lost, and the chart says what happened.
    let e = entry_of(&merged, &id);
    assert_eq!(e.content.body, "Pain controlled. Pt asleep 02:00.");
    assert!(e.signed);
    assert!(e.edited_after_signing);
    assert_eq!(merged.edited_after_signing().unwrap(), vec![id.clone()]);
    // What the physician signed is still what she saw.
    let signed = merged.signed_content(&id).unwrap().unwrap();
    assert_eq!(signed.body, "Pain controlled.");
    // She cannot sign again over content she did not see; she turns it into an addendum.
    assert!(matches!(
        merged.sign_entry(&dr, t(70), &id, SignatureMeaning::Author),
        Err(ChartError::InvalidTransition(_))
    ));
    merged
        .amend(
            &dr,
            t(71),
            NewAmendment {
                target_entry_id: id.clone(),
                kind: AmendmentKind::Addendum,
                reason: "night observation added after signing".into(),
                body: "Pt asleep 02:00.".into(),
            },
        )
        .unwrap();
    assert_eq!(entry_of(&merged, &id).status, EntryStatus::Amended);
}

/// Writes straight into the document, as a client that ignores our API might.
fn raw_edit(chart: &Chart, f: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Chart {
    let mut doc = chart.doc().clone();
    doc.set_actor(automerge::ActorId::random());
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit();
    Chart::from_automerge(doc).unwrap()
}

fn obj(doc: &automerge::transaction::Transaction<'_>, path: &[&str]) -> automerge::ObjId {
    use automerge::ReadDoc;
    let mut o = automerge::ROOT;
    for k in path {
        let prop: automerge::Prop = match k.parse::<usize>() {
            Ok(i) => i.into(),
            Err(_) => (*k).into(),
        };
        o = doc.get(&o, prop).unwrap().unwrap().1;
    }
    o
}

#[test]
fn an_edit_made_after_seeing_the_signature_is_rejected_by_the_server() {
    let dr = physician();
    let mut chart = admitted();
    let id = chart
        .add_entry(&dr, t(60), note("Pain controlled."))
        .unwrap();
    chart
        .sign_entry(&dr, t(61), &id, SignatureMeaning::Author)
        .unwrap();
    let tampered = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let body = obj(tx, &["entries", &id, "body"]);
        tx.splice_text(&body, 0, 0, "NOT ").unwrap();
    });
    let err = validate_changes(chart.doc(), tampered.doc()).unwrap_err();
    assert!(matches!(
        &err.violations[0],
        Violation::EditAfterSignature { entry_id, .. } if *entry_id == id
    ));
}

#[test]
fn an_unsigned_note_cannot_be_turned_into_a_history_and_physical_by_another_client() {
    let mut chart = admitted();
    let id = chart
        .add_entry(&physician(), t(60), note("Pain controlled."))
        .unwrap();
    let tampered = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let entry = obj(tx, &["entries", &id]);
        tx.put(&entry, "kind", "history_physical").unwrap();
    });
    let err = validate_changes(chart.doc(), tampered.doc()).unwrap_err();
    let field = format!("entries/{id}/kind");
    assert!(err
        .violations
        .iter()
        .any(|v| matches!(v, Violation::ImmutableField { field: f, .. } if *f == field)));
}

#[test]
fn the_mrn_never_changes_after_admission() {
    let chart = admitted();
    let tampered = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let p = obj(tx, &["patient"]);
        tx.put(&p, "mrn", "MRN-9999").unwrap();
    });
    let err = validate_changes(chart.doc(), tampered.doc()).unwrap_err();
    assert!(err
        .violations
        .iter()
        .any(|v| matches!(v, Violation::ImmutableField { field, .. } if field == "patient/mrn")));
    // The rule holds even when the chart's patient section was already malformed.
    let malformed = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let p = obj(tx, &["patient"]);
        tx.put_object(&p, "family_name", automerge::ObjType::Text)
            .unwrap();
    });
    let tampered = raw_edit(&malformed, |tx| {
        use automerge::transaction::Transactable;
        let p = obj(tx, &["patient"]);
        tx.put(&p, "mrn", "MRN-9999").unwrap();
    });
    let err = validate_changes(malformed.doc(), tampered.doc()).unwrap_err();
    assert!(err
        .violations
        .iter()
        .any(|v| matches!(v, Violation::ImmutableField { field, .. } if field == "patient/mrn")));
    // Nor is it in the change-of-information form.
    let fields = PatientUpdate::default();
    assert!(matches!(
        admitted().change_information(&technician(), t(1), fields),
        Err(ChartError::Missing { .. })
    ));
}

#[test]
fn a_disclosure_once_logged_cannot_be_edited_or_removed() {
    let mut chart = admitted();
    chart
        .record_disclosure(
            &technician(),
            t(5),
            NewDisclosure {
                request_id: None,
                recipient: "County Health Dept".into(),
                recipient_address: "1 Main St".into(),
                description: "Immunization record".into(),
                purpose: DisclosurePurpose::PublicHealth,
            },
        )
        .unwrap();
    let edited = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let d = obj(tx, &["disclosures", "0"]);
        tx.put(&d, "recipient", "Someone else").unwrap();
    });
    let err = validate_changes(chart.doc(), edited.doc()).unwrap_err();
    assert!(
        matches!(&err.violations[0], Violation::AppendOnly { list, .. } if list == "disclosures")
    );
    let removed = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let l = obj(tx, &["disclosures"]);
        tx.delete(&l, 0).unwrap();
    });
    let err = validate_changes(chart.doc(), removed.doc()).unwrap_err();
    assert!(matches!(&err.violations[0], Violation::AppendOnly { .. }));
    // Appending is what the list is for.
    let mut appended = chart.clone();
    appended
        .log_case(&technician(), t(6), "Called requester back")
        .unwrap();
    validate_changes(chart.doc(), appended.doc()).unwrap();
}

#[test]
fn a_signature_cannot_be_removed_or_altered() {
    let dr = physician();
    let mut chart = admitted();
    let id = chart.add_entry(&dr, t(1), note("x")).unwrap();
    chart
        .sign_entry(&dr, t(2), &id, SignatureMeaning::Author)
        .unwrap();
    let tampered = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let s = obj(tx, &["signatures", "0"]);
        tx.put(&s, "signer", "dr.someone").unwrap();
    });
    assert!(validate_changes(chart.doc(), tampered.doc()).is_err());
}

#[test]
fn a_record_or_section_cannot_be_wiped() {
    let mut chart = admitted();
    let id = chart.add_entry(&day_nurse(), t(1), note("x")).unwrap();
    let wiped = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let entries = obj(tx, &["entries"]);
        tx.delete(&entries, id.as_str()).unwrap();
    });
    let err = validate_changes(chart.doc(), wiped.doc()).unwrap_err();
    assert!(matches!(&err.violations[0], Violation::Replaced { .. }));
    let reset = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        tx.put_object(automerge::ROOT, "entries", automerge::ObjType::Map)
            .unwrap();
    });
    let err = validate_changes(chart.doc(), reset.doc()).unwrap_err();
    assert!(matches!(&err.violations[0], Violation::Replaced { path, .. } if path == "entries"));
}

#[test]
fn a_malformed_entry_or_a_bad_code_from_another_client_is_rejected() {
    let mut chart = admitted();
    let id = chart.add_entry(&day_nurse(), t(1), note("x")).unwrap();
    let bad_status = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let e = obj(tx, &["entries", &id]);
        tx.put(&e, "status", "whatever").unwrap();
    });
    let err = validate_changes(chart.doc(), bad_status.doc()).unwrap_err();
    assert!(matches!(
        &err.violations[0],
        Violation::Schema(ChartError::Schema { .. })
    ));

    let bad_code = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let codes = obj(tx, &["entries", &id, "codes"]);
        let c = tx
            .insert_object(&codes, 0, automerge::ObjType::Map)
            .unwrap();
        tx.put(&c, "system", "icd10cm").unwrap();
        tx.put(&c, "code", "E11").unwrap();
    });
    let err = validate_changes(chart.doc(), bad_code.doc()).unwrap_err();
    assert!(matches!(&err.violations[0], Violation::InvalidCode { .. }));

    let unknown = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        tx.put(automerge::ROOT, "billing", "x").unwrap();
    });
    let err = validate_changes(chart.doc(), unknown.doc()).unwrap_err();
    assert!(matches!(
        &err.violations[0],
        Violation::UnknownSection { .. }
    ));
}

#[test]
fn a_forged_signature_that_does_not_match_the_note_is_rejected() {
    let mut chart = admitted();
    let id = chart.add_entry(&day_nurse(), t(1), note("x")).unwrap();
    let heads: Vec<String> = chart.heads().iter().map(|h| h.to_string()).collect();
    let forged = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let l = obj(tx, &["signatures"]);
        let s = tx.insert_object(&l, 0, automerge::ObjType::Map).unwrap();
        for (k, v) in [
            ("entry_id", id.as_str()),
            ("signer", "rn.silva"),
            ("role", "nurse"),
            ("meaning", "author"),
            ("signed_at", "2026-11-02T08:02:00Z"),
            ("content_hash", &"0".repeat(64)),
        ] {
            tx.put(&s, k, v).unwrap();
        }
        let h = tx
            .put_object(&s, "heads", automerge::ObjType::List)
            .unwrap();
        for (i, head) in heads.iter().enumerate() {
            tx.insert(&h, i, head.as_str()).unwrap();
        }
    });
    let err = validate_changes(chart.doc(), forged.doc()).unwrap_err();
    assert!(matches!(
        &err.violations[0],
        Violation::SignatureMismatch { .. }
    ));
}

#[test]
fn a_new_chart_from_a_tablet_is_validated_whole() {
    let chart = admitted();
    validate_changes(&automerge::Automerge::new(), chart.doc()).unwrap();
}

#[test]
fn a_conflict_stays_listed_after_a_later_note_joins_the_two_histories() {
    // Conflicts are looked for only in a chart whose changes were ever concurrent: once a
    // later change builds on both tablets' edits the chart has one head again, and the
    // conflict is still there to resolve (and counted as a deficiency).
    let (mut desk, ward) = two_clerks_change_the_phone_number();
    desk.merge(&ward).unwrap();
    assert_eq!(desk.heads().len(), 2);
    desk.add_entry(&day_nurse(), t(7), note("Settled on ward."))
        .unwrap();
    assert_eq!(desk.heads().len(), 1, "the note builds on both edits");

    let conflicts = desk.conflicts();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].path,
        vec!["patient".to_string(), "phone".to_string()]
    );
    let open: Vec<_> = desk
        .deficiencies()
        .unwrap()
        .into_iter()
        .filter(|d| d.kind == DeficiencyKind::UnresolvedConflict)
        .collect();
    assert_eq!(open.len(), 1);

    // A chart written on one tablet only has no conflicts to look for.
    let mut alone = admitted();
    for (at, phone) in [(5, "555-0111"), (6, "555-0199")] {
        alone
            .change_information(&technician(), t(at), phone_update(phone))
            .unwrap();
    }
    assert!(alone.conflicts().is_empty());
}

fn phone_update(phone: &str) -> PatientUpdate {
    PatientUpdate {
        phone: Some(phone.into()),
        ..Default::default()
    }
}

/// A desk and a ward tablet, each holding the chart, set the patient's phone number apart.
fn two_clerks_change_the_phone_number() -> (Chart, Chart) {
    let mut desk = admitted();
    let mut ward = replica(&mut desk);
    desk.change_information(&technician(), t(5), phone_update("555-0111"))
        .unwrap();
    ward.change_information(&day_nurse(), t(6), phone_update("555-0199"))
        .unwrap();
    (desk, ward)
}

#[test]
fn two_clerks_change_the_phone_number_offline_and_the_conflict_is_shown_then_resolved() {
    let (mut desk, mut ward) = two_clerks_change_the_phone_number();
    desk.merge(&ward).unwrap();
    ward.merge(&desk).unwrap();

    let conflicts = desk.conflicts();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.path, vec!["patient".to_string(), "phone".to_string()]);
    let mut seen: Vec<(String, String)> = c
        .values
        .iter()
        .map(|v| {
            (
                v.value.as_str().unwrap().to_string(),
                v.user.clone().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("555-0111".to_string(), "him.jones".to_string()),
            ("555-0199".to_string(), "rn.silva".to_string())
        ]
    );
    // Both tablets list the same conflict.
    assert_eq!(ward.conflicts(), conflicts);
    // Both change-of-information events are kept.
    assert_eq!(desk.view().unwrap().events.len(), 3);

    let keep = c.values.iter().position(|v| v.value == "555-0199").unwrap();
    desk.resolve_conflict(&supervisor(), t(9), &c.path, Resolution::Keep(keep))
        .unwrap();
    assert!(desk.conflicts().is_empty());
    assert_eq!(
        desk.view().unwrap().patient.phone.as_deref(),
        Some("555-0199")
    );
    ward.merge(&desk).unwrap();
    assert!(ward.conflicts().is_empty());
    assert_eq!(
        ward.view().unwrap().patient.phone.as_deref(),
        Some("555-0199")
    );
}

#[test]
fn a_conflict_on_a_transfer_is_resolved_with_a_new_value_and_bad_values_are_refused() {
    let mut a = admitted();
    let mut b = replica(&mut a);
    a.transfer(&day_nurse(), t(5), "5east", Some("3")).unwrap();
    b.transfer(&night_nurse(), t(6), "icu", Some("1")).unwrap();
    a.merge(&b).unwrap();
    let ward = vec!["encounter".to_string(), "ward".to_string()];
    assert!(a.conflicts().iter().any(|c| c.path == ward));
    let heads = a.heads();
    // A coder may not settle where the patient is.
    assert!(matches!(
        a.resolve_conflict(&coder(), t(7), &ward, Resolution::Value("icu".into())),
        Err(ChartError::NotPermitted(_))
    ));
    // An empty ward is not a ward.
    assert!(a
        .resolve_conflict(&day_nurse(), t(7), &ward, Resolution::Value(" ".into()))
        .is_err());
    assert_eq!(a.heads(), heads);
    a.resolve_conflict(&day_nurse(), t(7), &ward, Resolution::Value("icu".into()))
        .unwrap();
    assert_eq!(a.view().unwrap().encounter.ward, "icu");
    assert!(!a.conflicts().iter().any(|c| c.path == ward));
    assert!(matches!(
        a.resolve_conflict(&day_nurse(), t(8), &ward, Resolution::Keep(0)),
        Err(ChartError::NoConflict { .. })
    ));
}

#[test]
fn a_signed_note_is_corrected_by_amendment_and_marked_entered_in_error() {
    let dr = physician();
    let mut chart = admitted();
    let id = chart
        .add_entry(&dr, t(1), note("Left knee swollen."))
        .unwrap();
    chart
        .sign_entry(&dr, t(2), &id, SignatureMeaning::Author)
        .unwrap();
    let aid = chart
        .amend(
            &dr,
            t(3),
            NewAmendment {
                target_entry_id: id.clone(),
                kind: AmendmentKind::Correction,
                reason: "wrong side".into(),
                body: "Right knee swollen.".into(),
            },
        )
        .unwrap();
    let v = chart.view().unwrap();
    assert_eq!(v.amendments[0].id, aid);
    assert_eq!(v.amendments[0].target_hash, v.signatures[0].content_hash);
    assert_eq!(entry_of(&chart, &id).status, EntryStatus::Amended);
    // The original stays as written.
    assert_eq!(entry_of(&chart, &id).content.body, "Left knee swollen.");
    chart
        .amend(
            &dr,
            t(4),
            NewAmendment {
                target_entry_id: id.clone(),
                kind: AmendmentKind::EnteredInError,
                reason: "wrong patient".into(),
                body: String::new(),
            },
        )
        .unwrap();
    assert_eq!(entry_of(&chart, &id).status, EntryStatus::EnteredInError);
    assert!(matches!(
        chart.amend(
            &dr,
            t(5),
            NewAmendment {
                target_entry_id: id,
                kind: AmendmentKind::Addendum,
                reason: " ".into(),
                body: "x".into()
            }
        ),
        Err(ChartError::Missing { field: "reason" })
    ));
}

#[test]
fn coder_codes_a_discharged_chart_and_only_a_coder_finalizes() {
    let mut chart = admitted();
    let hp = chart
        .add_entry(
            &physician(),
            t(1),
            NewEntry::note(EntryKind::HistoryPhysical, "T2DM."),
        )
        .unwrap();
    chart.discharge(&day_nurse(), t(60 * 48), "home").unwrap();
    assert_eq!(
        chart.view().unwrap().encounter.status,
        EncounterStatus::Discharged
    );
    assert!(matches!(
        chart.discharge(&day_nurse(), t(60 * 49), "home"),
        Err(ChartError::InvalidTransition(_))
    ));

    let dx = chart
        .assign_code(
            &technician(),
            t(60 * 50),
            NewCoding {
                code: CodeInput::new(CodeSystem::Icd10Cm, "E11.9"),
                sequence: CodingSequence::Principal,
                poa: Some(PresentOnAdmission::Yes),
                supporting_entries: vec![hp.clone()],
            },
        )
        .unwrap();
    let v = chart.view().unwrap();
    assert_eq!(
        v.coding[0].display.as_deref(),
        Some("Type 2 diabetes mellitus without complications")
    );
    assert_eq!(v.coding[0].status, CodingStatus::Proposed);
    // One principal diagnosis.
    let second = NewCoding {
        code: CodeInput::new(CodeSystem::Icd10Cm, "I10"),
        sequence: CodingSequence::Principal,
        poa: Some(PresentOnAdmission::Yes),
        supporting_entries: vec![],
    };
    assert!(matches!(
        chart.assign_code(&coder(), t(60 * 50), second.clone()),
        Err(ChartError::InvalidTransition(_))
    ));
    // POA belongs to diagnoses.
    let pcs = NewCoding {
        code: CodeInput::new(CodeSystem::Icd10Pcs, "0DTJ4ZZ"),
        sequence: CodingSequence::Principal,
        poa: Some(PresentOnAdmission::Yes),
        supporting_entries: vec![],
    };
    assert!(matches!(
        chart.assign_code(&coder(), t(60 * 50), pcs),
        Err(ChartError::InvalidValue { field: "poa", .. })
    ));
    // A supporting entry must exist.
    assert!(matches!(
        chart.assign_code(
            &coder(),
            t(60 * 50),
            NewCoding {
                sequence: CodingSequence::Secondary,
                supporting_entries: vec!["5d1f0000-0000-4000-8000-000000000000".into()],
                ..second
            }
        ),
        Err(ChartError::NotFound { .. })
    ));
    assert!(matches!(
        chart.set_coding_status(&technician(), t(60 * 51), &dx, CodingStatus::Final),
        Err(ChartError::NotPermitted(_))
    ));
    chart
        .set_coding_status(&coder(), t(60 * 51), &dx, CodingStatus::Final)
        .unwrap();
    assert_eq!(chart.view().unwrap().coding[0].status, CodingStatus::Final);
}

#[test]
fn coder_queries_the_physician_who_answers() {
    let mut chart = admitted();
    let q = chart
        .ask_query(
            &coder(),
            t(1),
            NewQuery {
                question: "Please clarify type of diabetes.".into(),
                to: "dr.okafor".into(),
                about: None,
            },
        )
        .unwrap();
    assert!(matches!(
        chart.respond_to_query(&day_nurse(), t(2), &q, "Type 2"),
        Err(ChartError::NotPermitted(_))
    ));
    chart
        .respond_to_query(&physician(), t(2), &q, "Type 2, controlled.")
        .unwrap();
    let v = chart.view().unwrap();
    assert_eq!(v.queries[0].status, QueryStatus::Answered);
    assert_eq!(v.queries[0].responses[0].by, "dr.okafor");
    assert!(matches!(
        chart.withdraw_query(&coder(), t(3), &q),
        Err(ChartError::InvalidTransition(_))
    ));
}

#[test]
fn a_consent_form_completes_when_everyone_required_has_signed_and_then_is_frozen() {
    let mut chart = admitted();
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("procedure".to_string(), "knee arthroscopy".to_string());
    let f = chart
        .add_form(
            &day_nurse(),
            t(1),
            NewForm {
                form_type: FormType::Consent,
                fields: fields.into(),
                required_signers: vec!["patient".into(), "physician".into()],
            },
        )
        .unwrap();
    chart
        .set_form_field(&day_nurse(), t(2), &f, "side", "right")
        .unwrap();
    chart
        .sign_form(&day_nurse(), t(3), &f, "patient", "patient")
        .unwrap();
    let form = chart.view().unwrap().forms[0].clone();
    assert_eq!(form.missing_signers, vec!["physician".to_string()]);
    assert!(form.completed_at.is_none());
    assert!(matches!(
        chart.set_form_field(&day_nurse(), t(4), &f, "side", "left"),
        Err(ChartError::FormSigned { .. })
    ));
    assert!(matches!(
        chart.sign_form(&day_nurse(), t(4), &f, "someone", "witness"),
        Err(ChartError::InvalidTransition(_))
    ));
    chart
        .sign_form(&physician(), t(5), &f, "dr.okafor", "physician")
        .unwrap();
    let form = chart.view().unwrap().forms[0].clone();
    assert_eq!(form.completed_at, Some(t(5)));
    assert_eq!(form.fields["side"], "right");
}

#[test]
fn a_records_request_is_verified_against_a_signed_authorization_then_fulfilled_and_disclosed() {
    let tech = technician();
    let mut chart = admitted();
    let r = chart
        .receive_roi_request(
            &tech,
            t(1),
            NewRoiRequest {
                requester: "Acme Insurance".into(),
                recipient: "Acme Insurance".into(),
                recipient_address: "PO Box 1".into(),
                purpose: DisclosurePurpose::Payment,
                scope: "discharge summary".into(),
                due_at: t(60 * 24 * 30),
            },
        )
        .unwrap();
    // Fulfilling before the authorization is verified is out of order.
    assert!(matches!(
        chart.set_roi_status(&tech, t(2), &r, RoiStatus::Fulfilled, None, None),
        Err(ChartError::InvalidTransition(_))
    ));
    let auth = chart
        .add_form(
            &tech,
            t(2),
            NewForm {
                form_type: FormType::RoiAuthorization,
                fields: Default::default(),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    // An unsigned authorization does not authorize.
    assert!(chart
        .set_roi_status(
            &tech,
            t(3),
            &r,
            RoiStatus::AuthorizationVerified,
            Some(&auth),
            None
        )
        .is_err());
    chart
        .sign_form(&tech, t(3), &auth, "patient", "patient")
        .unwrap();
    chart
        .set_roi_status(
            &tech,
            t(4),
            &r,
            RoiStatus::AuthorizationVerified,
            Some(&auth),
            None,
        )
        .unwrap();
    // Fulfilling names no form: the verified authorization stays the one on record.
    assert!(matches!(
        chart.set_roi_status(&tech, t(5), &r, RoiStatus::Fulfilled, Some(&r), None),
        Err(ChartError::InvalidValue {
            field: "authorization form",
            ..
        })
    ));
    // Nothing leaves before the release is prepared: delivery, the sensitive review, the fee.
    assert!(matches!(
        chart.set_roi_status(&tech, t(5), &r, RoiStatus::Fulfilled, None, None),
        Err(ChartError::InvalidTransition(_))
    ));
    chart
        .prepare_roi_release(&tech, t(5), &r, RoiDelivery::Mail, &[], no_fee())
        .unwrap();
    chart
        .set_roi_status(&tech, t(5), &r, RoiStatus::Fulfilled, None, None)
        .unwrap();
    chart
        .record_disclosure(
            &tech,
            t(5),
            NewDisclosure {
                request_id: Some(r.clone()),
                recipient: "Acme Insurance".into(),
                recipient_address: "PO Box 1".into(),
                description: "Discharge summary".into(),
                purpose: DisclosurePurpose::Payment,
            },
        )
        .unwrap();
    let v = chart.view().unwrap();
    assert_eq!(v.roi_requests[0].status, RoiStatus::Fulfilled);
    assert_eq!(
        v.roi_requests[0].authorization.as_deref(),
        Some(auth.as_str())
    );
    assert_eq!(v.disclosures[0].request_id.as_deref(), Some(r.as_str()));
    assert!(matches!(
        chart.set_roi_status(&tech, t(6), &r, RoiStatus::Denied, None, Some("late")),
        Err(ChartError::InvalidTransition(_))
    ));
    // Nurses do not release records.
    assert!(matches!(
        chart.receive_roi_request(
            &day_nurse(),
            t(7),
            NewRoiRequest {
                requester: "x".into(),
                recipient: "x".into(),
                recipient_address: "x".into(),
                purpose: DisclosurePurpose::Payment,
                scope: "x".into(),
                due_at: t(8)
            }
        ),
        Err(ChartError::NotPermitted(_))
    ));
}

fn no_fee() -> RoiFee {
    fee(FeeBasis::NoFee, [0, 0, 0, 0], 0)
}

fn fee(basis: FeeBasis, [labor, supplies, postage, summary]: [u64; 4], total: u64) -> RoiFee {
    RoiFee {
        basis,
        labor_cents: labor,
        supplies_cents: supplies,
        postage_cents: postage,
        summary_cents: summary,
        total_cents: total,
    }
}

/// A chart with a request logged at t(0), due 30 days later, and a signed authorization whose
/// `sensitive_consent` field is `consent` (none when empty), verified.
fn verified_request(consent: &str) -> (Chart, String) {
    let tech = technician();
    let mut chart = admitted();
    let r = chart
        .receive_roi_request(
            &tech,
            t(0),
            NewRoiRequest {
                requester: "the patient".into(),
                recipient: "the patient".into(),
                recipient_address: "1 Main St".into(),
                purpose: DisclosurePurpose::ToPatient,
                scope: "the whole stay".into(),
                due_at: t(60 * 24 * 30),
            },
        )
        .unwrap();
    let mut fields = std::collections::BTreeMap::new();
    if !consent.is_empty() {
        fields.insert(SENSITIVE_CONSENT_FIELD.to_string(), consent.to_string());
    }
    let auth = chart
        .add_form(
            &tech,
            t(1),
            NewForm {
                form_type: FormType::RoiAuthorization,
                fields: FormFields(fields),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    chart
        .sign_form(&tech, t(1), &auth, "patient", "patient")
        .unwrap();
    chart
        .set_roi_status(
            &tech,
            t(2),
            &r,
            RoiStatus::AuthorizationVerified,
            Some(&auth),
            None,
        )
        .unwrap();
    (chart, r)
}

#[test]
fn a_request_is_extended_once_within_its_first_thirty_days() {
    let tech = technician();
    let (mut chart, r) = verified_request("");
    let day = 60 * 24;
    // An extension gives its reason; the notice goes out within the 30 days.
    assert!(matches!(
        chart.extend_roi_request(&tech, t(day), &r, "  "),
        Err(ChartError::Missing { field: "reason" })
    ));
    let due = chart
        .extend_roi_request(&tech, t(10 * day), &r, "records are in off-site storage")
        .unwrap();
    assert_eq!(due, t(60 * day));
    let v = chart.view().unwrap().roi_requests[0].clone();
    assert_eq!(v.due_at, t(60 * day));
    let ext = v.extension.unwrap();
    assert_eq!(ext.original_due_at, t(30 * day));
    assert_eq!((ext.by.as_str(), ext.at), ("him.jones", t(10 * day)));
    // One extension only, and the due date stays where the first put it.
    assert!(matches!(
        chart.extend_roi_request(&tech, t(11 * day), &r, "still waiting"),
        Err(ChartError::InvalidTransition(_))
    ));
    assert_eq!(chart.view().unwrap().roi_requests[0].due_at, t(60 * day));
    // The deficiency that puts the request on the release log follows the new date.
    let due_row = chart
        .deficiencies()
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeficiencyKind::ReleaseDue)
        .unwrap();
    assert_eq!(due_row.due_at, Some(t(60 * day)));

    // A request past its 30 days can no longer be extended: the notice would be late.
    let (mut late, r) = verified_request("");
    assert!(matches!(
        late.extend_roi_request(&tech, t(31 * day), &r, "backlog"),
        Err(ChartError::InvalidTransition(_))
    ));
    // Nurses do not extend requests.
    assert!(matches!(
        late.extend_roi_request(&day_nurse(), t(day), &r, "backlog"),
        Err(ChartError::NotPermitted(_))
    ));
}

#[test]
fn a_fee_is_cost_based_or_a_flat_fee_for_an_electronic_copy() {
    let tech = technician();
    let (mut chart, r) = verified_request("");
    let mut prepare = |delivery, f| chart.prepare_roi_release(&tech, t(3), &r, delivery, &[], f);
    // A cost-based fee is its parts' sum: labor, supplies, postage, a summary.
    let cost = fee(FeeBasis::ActualCost, [1500, 120, 68, 0], 1688);
    prepare(RoiDelivery::Mail, cost).unwrap();
    for refused in [
        (
            RoiDelivery::Mail,
            fee(FeeBasis::ActualCost, [1500, 120, 68, 0], 2500),
        ),
        (
            RoiDelivery::Mail,
            fee(FeeBasis::FlatElectronic, [0, 0, 0, 0], 650),
        ),
        (
            RoiDelivery::Portal,
            fee(FeeBasis::FlatElectronic, [0, 0, 0, 0], 651),
        ),
        (
            RoiDelivery::Email,
            fee(FeeBasis::FlatElectronic, [100, 0, 0, 0], 100),
        ),
        (RoiDelivery::Pickup, fee(FeeBasis::NoFee, [0, 0, 0, 0], 1)),
    ] {
        assert!(
            matches!(
                prepare(refused.0, refused.1),
                Err(ChartError::InvalidValue { field: "fee", .. })
            ),
            "{refused:?}"
        );
    }
    // What was refused changed nothing.
    let v = chart.view().unwrap().roi_requests[0].clone();
    assert_eq!((v.delivery, v.fee), (Some(RoiDelivery::Mail), Some(cost)));
    // The flat fee, for an electronic copy, at most $6.50.
    let flat = fee(FeeBasis::FlatElectronic, [0, 0, 0, 0], 650);
    chart
        .prepare_roi_release(&tech, t(4), &r, RoiDelivery::Portal, &[], flat)
        .unwrap();
    let v = chart.view().unwrap().roi_requests[0].clone();
    assert_eq!((v.delivery, v.fee), (Some(RoiDelivery::Portal), Some(flat)));
    let review = v.sensitive_review.unwrap();
    assert_eq!((review.by.as_str(), review.at), ("him.jones", t(4)));
    assert!(review.categories.is_empty());
    // It survives saving and loading on another machine.
    let again = Chart::load(&chart.save()).unwrap();
    assert_eq!(again.view().unwrap().roi_requests[0].fee, Some(flat));
}

#[test]
fn sensitive_information_leaves_only_by_a_supervisor_under_an_authorization_naming_it() {
    let tech = technician();
    let sup = supervisor();
    let found = [
        SensitiveCategory::SubstanceUseDisorder,
        SensitiveCategory::HivAids,
    ];
    // The patient's authorization names substance use records only.
    let (mut chart, r) = verified_request("substance_use_disorder");
    chart
        .prepare_roi_release(&tech, t(3), &r, RoiDelivery::Mail, &found, no_fee())
        .unwrap();
    // A technician does not release sensitive information.
    assert!(matches!(
        chart.set_roi_status(&tech, t(4), &r, RoiStatus::Fulfilled, None, None),
        Err(ChartError::NotPermitted(_))
    ));
    // A supervisor is stopped by what the authorization does not name, and told which.
    match chart.set_roi_status(&sup, t(4), &r, RoiStatus::Fulfilled, None, None) {
        Err(ChartError::InvalidTransition(why)) => {
            assert!(why.contains("hiv_aids"), "{why}");
            assert!(!why.contains("substance_use_disorder"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        chart.view().unwrap().roi_requests[0].status,
        RoiStatus::AuthorizationVerified
    );
    // Under an authorization that names both, the supervisor releases.
    let (mut chart, r) = verified_request("substance_use_disorder, hiv_aids");
    chart
        .prepare_roi_release(&tech, t(3), &r, RoiDelivery::Mail, &found, no_fee())
        .unwrap();
    chart
        .set_roi_status(&sup, t(4), &r, RoiStatus::Fulfilled, None, None)
        .unwrap();
    let v = chart.view().unwrap().roi_requests[0].clone();
    assert_eq!(v.status, RoiStatus::Fulfilled);
    assert_eq!(v.sensitive_review.unwrap().categories, found.to_vec());
    // A closed request is neither prepared nor extended again.
    assert!(matches!(
        chart.prepare_roi_release(&tech, t(5), &r, RoiDelivery::Mail, &[], no_fee()),
        Err(ChartError::InvalidTransition(_))
    ));
    assert!(matches!(
        chart.extend_roi_request(&tech, t(5), &r, "late"),
        Err(ChartError::InvalidTransition(_))
    ));
}

#[test]
fn day_nurse_hands_over_to_night_nurse_on_another_tablet() {
    let mut day = admitted();
    let mut night = replica(&mut day);
    day.hand_over(
        &day_nurse(),
        t(60 * 11),
        "rn.park",
        Shift::Night,
        "Stable, NPO from midnight.",
    )
    .unwrap();
    night
        .log_case(&night_nurse(), t(60 * 11 + 1), "Family called.")
        .unwrap();
    night.merge(&day).unwrap();
    day.merge(&night).unwrap();
    let v = night.view().unwrap();
    assert_eq!(v.handovers[0].to, "rn.park");
    assert_eq!(v.handovers[0].shift, Shift::Night);
    assert_eq!(v.case_log.len(), 1);
    assert_eq!(day.view().unwrap(), v);
}

#[test]
fn error_messages_carry_no_patient_data() {
    let mut chart = admitted();
    let bad = NewPatient {
        mrn: "Rivera Ana 1957".into(),
        ..admission().0
    };
    let err = Chart::create(bad, admission().1, &technician(), t(0)).unwrap_err();
    assert!(!err.to_string().contains("Rivera"));
    let err = chart
        .change_information(
            &technician(),
            t(1),
            PatientUpdate {
                birth_date: Some("14/03/1957 Rivera".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ChartError::InvalidValue { field: "date", .. }
    ));
    assert!(!err.to_string().contains("Rivera"));
    assert!(!err.to_string().contains("1957"));
}

#[test]
fn every_write_the_tablet_app_makes_passes_the_servers_validation() {
    let (dr, nurse, tech) = (physician(), day_nurse(), technician());
    let mut chart = admitted();
    validate_changes(&automerge::Automerge::new(), chart.doc()).unwrap();
    let mut step = |name: &str, f: &mut dyn FnMut(&mut Chart)| {
        let before = chart.clone();
        f(&mut chart);
        assert_ne!(before.heads(), chart.heads(), "{name} wrote nothing");
        if let Err(e) = validate_changes(before.doc(), chart.doc()) {
            panic!("{name}: {e}");
        }
    };
    let mut note_id = String::new();
    step("add entry", &mut |c| {
        note_id = c.add_entry(&dr, t(1), note("Plan.")).unwrap()
    });
    let id = note_id.clone();
    step("edit body", &mut |c| {
        c.edit_entry_body(&dr, t(2), &id, "Plan: rest.").unwrap()
    });
    step("set value", &mut |c| {
        c.set_entry_value(&dr, t(2), &id, Some("1"), Some("x"))
            .unwrap()
    });
    step("set codes", &mut |c| {
        c.set_entry_codes(
            &dr,
            t(2),
            &id,
            &[CodeInput::new(CodeSystem::Snomed, "22298006")],
        )
        .unwrap()
    });
    step("sign", &mut |c| {
        c.sign_entry(&dr, t(3), &id, SignatureMeaning::Author)
            .unwrap()
    });
    step("cosign", &mut |c| {
        c.sign_entry(
            &Staff::new("dr.lee", Role::Physician, "t9"),
            t(3),
            &id,
            SignatureMeaning::Cosign,
        )
        .unwrap()
    });
    step("amend", &mut |c| {
        c.amend(
            &dr,
            t(4),
            NewAmendment {
                target_entry_id: id.clone(),
                kind: AmendmentKind::Addendum,
                reason: "more".into(),
                body: "Also: fluids.".into(),
            },
        )
        .unwrap();
    });
    step("transfer", &mut |c| {
        c.transfer(&nurse, t(5), "5east", None).unwrap()
    });
    step("change of information", &mut |c| {
        c.change_information(
            &tech,
            t(6),
            PatientUpdate {
                address: Some("3 Oak Rd".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    let mut q = String::new();
    step("ask query", &mut |c| {
        q = c
            .ask_query(
                &coder(),
                t(7),
                NewQuery {
                    question: "Type?".into(),
                    to: "dr.okafor".into(),
                    about: None,
                },
            )
            .unwrap()
    });
    step("answer query", &mut |c| {
        c.respond_to_query(&dr, t(8), &q, "Type 2").unwrap()
    });
    let mut f = String::new();
    step("add form", &mut |c| {
        f = c
            .add_form(
                &tech,
                t(9),
                NewForm {
                    form_type: FormType::RoiAuthorization,
                    fields: Default::default(),
                    required_signers: vec!["patient".into(), "witness".into()],
                },
            )
            .unwrap()
    });
    step("form field", &mut |c| {
        c.set_form_field(&tech, t(9), &f, "scope", "all").unwrap()
    });
    step("sign form", &mut |c| {
        c.sign_form(&tech, t(10), &f, "patient", "patient").unwrap()
    });
    step("complete form", &mut |c| {
        c.sign_form(&tech, t(10), &f, "him.jones", "witness")
            .unwrap()
    });
    let mut r = String::new();
    step("roi request", &mut |c| {
        r = c
            .receive_roi_request(
                &tech,
                t(11),
                NewRoiRequest {
                    requester: "Patient".into(),
                    recipient: "Patient".into(),
                    recipient_address: "3 Oak Rd".into(),
                    purpose: DisclosurePurpose::ToPatient,
                    scope: "all".into(),
                    due_at: t(60 * 24 * 30),
                },
            )
            .unwrap()
    });
    step("verify", &mut |c| {
        c.set_roi_status(
            &tech,
            t(12),
            &r,
            RoiStatus::AuthorizationVerified,
            Some(&f),
            None,
        )
        .unwrap()
    });
    step("disclose", &mut |c| {
        c.record_disclosure(
            &tech,
            t(13),
            NewDisclosure {
                request_id: Some(r.clone()),
                recipient: "Patient".into(),
                recipient_address: "3 Oak Rd".into(),
                description: "Full record".into(),
                purpose: DisclosurePurpose::ToPatient,
            },
        )
        .unwrap();
    });
    let mut k = String::new();
    step("assign code", &mut |c| {
        k = c
            .assign_code(
                &coder(),
                t(14),
                NewCoding {
                    code: CodeInput::new(CodeSystem::Icd10Cm, "S72.001A"),
                    sequence: CodingSequence::Principal,
                    poa: Some(PresentOnAdmission::Yes),
                    supporting_entries: vec![id.clone()],
                },
            )
            .unwrap()
    });
    step("finalize code", &mut |c| {
        c.set_coding_status(&coder(), t(15), &k, CodingStatus::Final)
            .unwrap()
    });
    step("case log", &mut |c| {
        c.log_case(&tech, t(16), "Chart reviewed").unwrap()
    });
    step("handover", &mut |c| {
        c.hand_over(&nurse, t(17), "rn.park", Shift::Night, "Stable")
            .unwrap()
    });
    step("discharge", &mut |c| {
        c.discharge(&nurse, t(18), "home").unwrap()
    });
    // And the finished chart reads back as the records office expects.
    let v = chart.view().unwrap();
    assert_eq!(v.forms[0].completed_at, Some(t(10)));
    assert_eq!(v.coding[0].poa, Some(PresentOnAdmission::Yes));
    assert_eq!(serde_json::to_value(&v.coding[0]).unwrap()["poa"], "Y");
}

#[test]
fn a_signed_consent_form_cannot_be_rewritten_by_another_client() {
    let mut chart = admitted();
    let f = chart
        .add_form(
            &day_nurse(),
            t(1),
            NewForm {
                form_type: FormType::Consent,
                fields: [("procedure".to_string(), "arthroscopy".to_string())].into(),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    chart
        .sign_form(&day_nurse(), t(2), &f, "patient", "patient")
        .unwrap();
    let tampered = raw_edit(&chart, |tx| {
        use automerge::transaction::Transactable;
        let fields = obj(tx, &["forms", &f, "fields"]);
        tx.put(&fields, "procedure", "amputation").unwrap();
    });
    let err = validate_changes(chart.doc(), tampered.doc()).unwrap_err();
    assert!(
        matches!(&err.violations[0], Violation::FormEditAfterSignature { form_id, .. } if *form_id == f)
    );
}

#[test]
fn the_server_accepts_changes_only_from_the_signed_in_user_within_their_role() {
    use chartsync_core::chart::validate::{check_writer, Violation};
    use chartsync_core::codes::CodeSystem;
    let chart = admitted();
    let base = chart.heads();

    // A technician's new chart, checked as the technician who made it.
    assert!(check_writer(&[], &chart, "him.jones", Role::Technician).is_ok());
    // The same chart from a nurse's connection names another author, and another writer.
    let err = check_writer(&[], &chart, "rn.silva", Role::Nurse).unwrap_err();
    assert!(err
        .violations
        .iter()
        .any(|v| matches!(v, Violation::NotTheAuthor { .. })));
    assert!(err.violations.iter().all(|v| matches!(
        v,
        Violation::NotTheAuthor { .. } | Violation::ForgedWriter { .. }
    )));

    // A physician answering a coder's query writes to the queries section: allowed.
    let mut c = replica(&mut chart.clone());
    let q = c
        .ask_query(
            &coder(),
            t(1),
            NewQuery {
                question: "Type 1 or type 2?".into(),
                to: "dr.okafor".into(),
                about: None,
            },
        )
        .unwrap();
    let asked = c.heads();
    c.respond_to_query(&physician(), t(2), &q, "Type 2.")
        .unwrap();
    assert!(check_writer(&asked, &c, "dr.okafor", Role::Physician).is_ok());

    // A coding assignment arriving on a nurse's connection, written as the nurse herself: the
    // role may not write coding.
    let mut tampered = Chart::load(&chart.clone().save()).unwrap();
    let nurse_as_coder = Staff::new("rn.silva", Role::Coder, "tablet-4west-01");
    tampered
        .assign_code(
            &nurse_as_coder,
            t(3),
            NewCoding {
                code: CodeInput::new(CodeSystem::Icd10Cm, "E11.9"),
                sequence: CodingSequence::Principal,
                poa: Some(PresentOnAdmission::Yes),
                supporting_entries: vec![],
            },
        )
        .unwrap();
    let err = check_writer(&base, &tampered, "rn.silva", Role::Nurse).unwrap_err();
    assert!(err
        .violations
        .iter()
        .any(|v| matches!(v, Violation::RoleMayNotWrite { role: Role::Nurse, section } if section == "coding")));
}

#[test]
fn a_cosignature_forged_by_a_client_that_sets_no_author_is_refused() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    use chartsync_core::chart::validate::{check_writer, Violation};
    let mut chart = admitted();
    let entry = chart
        .add_entry(
            &day_nurse(),
            t(1),
            NewEntry::note(EntryKind::NursingNote, "Settled."),
        )
        .unwrap();
    let before = chart.heads();
    // A tampered client, signed in as the nurse, appends a physician's cosignature and sets no
    // change author.
    let mut doc = chart.doc().fork();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        let (_, sigs) = tx.get(ROOT, "signatures")?.unwrap();
        let s = tx.insert_object(&sigs, 0, ObjType::Map)?;
        tx.put(&s, "entry_id", entry.as_str())?;
        tx.put(&s, "signer", "dr.okafor")?;
        tx.put(&s, "role", "physician")?;
        tx.put(&s, "meaning", "cosign")?;
        Ok(())
    })
    .unwrap();
    let tampered = Chart::from_automerge(doc).unwrap();
    let err = check_writer(&before, &tampered, "rn.silva", Role::Nurse).unwrap_err();
    let forged: Vec<_> = err
        .violations
        .iter()
        .filter_map(|v| match v {
            Violation::ForgedWriter { field, .. } => Some(field.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(forged, vec!["signer", "role"]);
}

/// ICD-10-CM changes every 1 October: a chart's codes are checked for the code-set year of
/// its discharge, or of the time of writing while the patient is in.
#[test]
fn codes_are_checked_for_the_year_of_the_discharge_or_of_writing_while_the_patient_is_in() {
    use chartsync_core::codes::{self, years, CodeError, CodeSystem};

    let mut chart = admitted();
    assert_eq!(chart.code_date(t(60)).unwrap(), t(60));
    chart.discharge(&technician(), t(120), "home").unwrap();
    assert_eq!(chart.code_date(t(90 * 24 * 60)).unwrap(), t(120));
    assert_eq!(
        years::fiscal_year(t(120).date()),
        2027,
        "November 2026 is FY2027"
    );
    // Until a FY2027 table is installed, FY2027 dates are checked against FY2026's, and an
    // error says which table it used.
    let installed = years::code_set_years();
    assert_eq!(installed.first().map(|(fy, _)| *fy), Some(2026));
    match codes::validate_on(CodeSystem::Icd10Cm, "Z99.98", t(120).date()) {
        Err(CodeError::UnknownCode { code_set, .. }) => assert!(code_set.contains("FY2026")),
        other => panic!("{other:?}"),
    }
    assert!(codes::validate_on(CodeSystem::Icd10Cm, "J18.9", t(120).date()).is_ok());
}

/// Found by fuzzing (`chart_edits`): a hostile device sets a counter anywhere in a chart and
/// increments it past `i64::MAX`. automerge adds the increments up as it reads the counter
/// (`n + inc`), which overflows: a panic wherever overflow is checked (debug builds, and the
/// fuzzing build), a wrapped number elsewhere. Checking the change, and reading the chart,
/// must answer either way.
#[test]
fn a_counter_driven_past_its_largest_value_is_checked_without_a_panic() {
    use automerge::transaction::Transactable;
    let chart = admitted();
    for (key, at) in [("x", automerge::ROOT), ("schema", automerge::ROOT)] {
        let mut doc = chart.doc().clone();
        let mut tx = doc.transaction();
        tx.put(&at, key, automerge::ScalarValue::counter(i64::MAX))
            .unwrap();
        tx.commit();
        let mut tx = doc.transaction();
        tx.increment(&at, key, 1).unwrap();
        tx.commit();
        let checked = std::panic::catch_unwind(|| validate_changes(chart.doc(), &doc));
        let checked = checked.unwrap_or_else(|_| panic!("a panic on a counter at {key}"));
        assert!(checked.is_err(), "a counter at {key} was taken");
    }
}
