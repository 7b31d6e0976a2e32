//! The chart audit as the records office sees it: what is missing from a chart, who must put
//! it right, by when, and what is overdue; and the coding queue of discharged charts.

mod common;

use chartsync_core::chart::*;
use chartsync_core::codes::CodeSystem;
use chartsync_core::store::*;
use common::*;

const DAY: i64 = 24 * 60;

fn write(store: &ChartStore, id: ChartId, f: impl FnOnce(&mut Chart) -> Result<(), ChartError>) {
    store.update(id, f).unwrap();
}

fn add(store: &ChartStore, id: ChartId, at: Timestamp, kind: EntryKind) -> String {
    store
        .update(id, |c| {
            c.add_entry(&physician(), at, NewEntry::note(kind, "Documented."))
        })
        .unwrap()
}

/// Written and signed by the attending.
fn signed(store: &ChartStore, id: ChartId, at: Timestamp, kind: EntryKind) -> String {
    let entry = add(store, id, at, kind);
    write(store, id, |c| {
        c.sign_entry(&physician(), at, &entry, SignatureMeaning::Author)
    });
    entry
}

fn kinds(store: &ChartStore, id: ChartId) -> Vec<DeficiencyKind> {
    store
        .deficiencies(id)
        .unwrap()
        .into_iter()
        .map(|d| d.kind)
        .collect()
}

fn overdue_on_4west(store: &ChartStore, now: Timestamp) -> Vec<WorklistItem> {
    store
        .worklist(
            &DeficiencyFilter {
                wards: Some(vec!["4west".into()]),
                overdue_only: true,
                ..DeficiencyFilter::default()
            },
            now,
        )
        .unwrap()
}

fn code(store: &ChartStore, id: ChartId, code: &str, sequence: CodingSequence) -> String {
    store
        .update(id, |c| {
            c.assign_code(
                &coder(),
                t(3 * DAY),
                NewCoding {
                    code: CodeInput::new(CodeSystem::Icd10Cm, code),
                    sequence,
                    poa: None,
                    supporting_entries: vec![],
                },
            )
        })
        .unwrap()
}

#[test]
fn a_discharged_chart_with_an_unsigned_progress_note_shows_as_overdue_on_day_31() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    signed(&store, id, t(60), EntryKind::HistoryPhysical);
    let note = add(&store, id, t(DAY + 60), EntryKind::ProgressNote);
    signed(&store, id, t(2 * DAY), EntryKind::DischargeSummary);

    // While the patient is in, the unsigned note has no due date and is not overdue.
    let unsigned = store.deficiencies(id).unwrap();
    assert_eq!(unsigned.len(), 1);
    assert_eq!(unsigned[0].kind, DeficiencyKind::UnsignedEntry);
    assert_eq!(unsigned[0].record_id, note);
    assert_eq!(unsigned[0].responsible.as_deref(), Some("dr.okafor"));
    assert_eq!(unsigned[0].due_at, None);
    assert!(overdue_on_4west(&store, t(60 * DAY)).is_empty());

    let discharged = t(2 * DAY + 120);
    write(&store, id, |c| {
        c.discharge(&technician(), discharged, "home")
    });
    let due = discharged.plus_seconds(30 * DAY * 60);
    let note_deficiency = store
        .deficiencies(id)
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeficiencyKind::UnsignedEntry)
        .unwrap();
    assert_eq!(note_deficiency.due_at, Some(due), "30 days after discharge");

    let day = |n: i64| discharged.plus_seconds(n * DAY * 60);
    assert!(
        overdue_on_4west(&store, day(29)).is_empty(),
        "on day 29 it is due, not overdue"
    );
    let on_day_31 = overdue_on_4west(&store, day(31));
    assert!(on_day_31
        .iter()
        .any(|w| w.chart == id && w.deficiency.record_id == note && w.overdue));
    assert!(on_day_31.iter().all(|w| w.mrn == "MRN-0042"
        && w.ward == "4west"
        && w.status == EncounterStatus::Discharged));

    // The physician signs on day 31: nothing about the note is left.
    write(&store, id, |c| {
        c.sign_entry(&physician(), day(31), &note, SignatureMeaning::Author)
    });
    assert!(!overdue_on_4west(&store, day(31))
        .iter()
        .any(|w| w.deficiency.kind == DeficiencyKind::UnsignedEntry));
}

#[test]
fn a_history_and_physical_is_due_within_24_hours_of_admission() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    let missing = store.deficiencies(id).unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].kind, DeficiencyKind::HistoryPhysicalMissing);
    assert_eq!(
        missing[0].responsible.as_deref(),
        Some("dr.okafor"),
        "the attending"
    );
    assert_eq!(missing[0].due_at, Some(t(DAY)));
    assert!(overdue_on_4west(&store, t(DAY - 1)).is_empty());
    assert_eq!(overdue_on_4west(&store, t(DAY + 1)).len(), 1);

    // Written 30 hours in: no longer missing, but late, and that stays on the record.
    let hp = signed(&store, id, t(30 * 60), EntryKind::HistoryPhysical);
    let late = store.deficiencies(id).unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].kind, DeficiencyKind::HistoryPhysicalLate);
    assert_eq!(late[0].detail.as_deref(), Some(hp.as_str()));

    // Entered in error (wrong patient), it no longer counts: the H&P is missing again.
    write(&store, id, |c| {
        c.amend(
            &physician(),
            t(31 * 60),
            NewAmendment {
                target_entry_id: hp.clone(),
                kind: AmendmentKind::EnteredInError,
                reason: "wrong patient".into(),
                body: String::new(),
            },
        )
        .map(drop)
    });
    assert_eq!(
        kinds(&store, id),
        vec![DeficiencyKind::HistoryPhysicalMissing]
    );
}

#[test]
fn an_emergency_visit_needs_no_history_and_physical() {
    let dir = place();
    let store = open_store(&dir);
    let (p, mut e) = admission();
    e.class = EncounterClass::Emergency;
    let id = store
        .create(Chart::create(p, e, &technician(), t(0)).unwrap())
        .unwrap();
    assert!(store.deficiencies(id).unwrap().is_empty());
}

#[test]
fn a_discharged_inpatient_needs_a_discharge_summary_and_final_coding() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    signed(&store, id, t(60), EntryKind::HistoryPhysical);
    assert!(store.deficiencies(id).unwrap().is_empty());
    write(&store, id, |c| {
        c.discharge(&technician(), t(2 * DAY), "home")
    });
    let found = store.deficiencies(id).unwrap();
    let due = Some(t(32 * DAY));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|d| d.due_at == due));
    assert_eq!(found[0].kind, DeficiencyKind::DischargeSummaryMissing);
    assert_eq!(found[0].responsible.as_deref(), Some("dr.okafor"));
    assert_eq!(found[1].kind, DeficiencyKind::CodingNotFinal);
    assert_eq!(found[1].detail.as_deref(), Some("principal_diagnosis"));
    assert_eq!(found[1].responsible.as_deref(), Some("coder"));
    // The whole chart's count follows.
    assert_eq!(store.summary(id).unwrap().unwrap().open_deficiencies, 2);
}

#[test]
fn the_coding_queue_holds_discharged_charts_until_coding_is_final() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    let still_in = store.create(admitted_to("4west", 7)).unwrap();
    signed(&store, id, t(60), EntryKind::HistoryPhysical);
    signed(&store, id, t(2 * DAY), EntryKind::DischargeSummary);
    let principal = code(&store, id, "J18.9", CodingSequence::Principal);
    let secondary = code(&store, id, "E11.9", CodingSequence::Secondary);
    code(&store, still_in, "J18.9", CodingSequence::Principal);
    let now = t(5 * DAY);
    assert!(
        store.coding_queue(None, now, 3).unwrap().is_empty(),
        "nothing is queued before discharge"
    );

    write(&store, id, |c| {
        c.discharge(&technician(), t(2 * DAY), "home")
    });
    let query = store
        .update(id, |c| {
            c.ask_query(
                &coder(),
                t(3 * DAY),
                NewQuery {
                    question: "Was the pneumonia present on admission?".into(),
                    to: "dr.okafor".into(),
                    about: Some(principal.clone()),
                },
            )
        })
        .unwrap();
    let queue = store
        .coding_queue(Some(&["4west".to_string()]), now, 3)
        .unwrap();
    assert_eq!(queue.len(), 1);
    let item = &queue[0];
    assert_eq!(item.chart, id);
    assert_eq!(item.principal_diagnosis.as_deref(), Some("J18.9"));
    assert!(!item.principal_final);
    assert_eq!(
        (item.not_final, item.poa_missing, item.open_queries),
        (2, 2, 1)
    );
    // Due when the 3-day billing hold after discharge ends: now, and not yet past.
    assert_eq!(item.due_at, Some(t(5 * DAY)));
    assert!(!item.overdue);
    assert!(store
        .coding_queue(None, t(5 * DAY + 1), 3)
        .unwrap()
        .iter()
        .all(|i| i.overdue));
    assert_eq!(
        store.coding_queue(None, now, 10).unwrap()[0].due_at,
        Some(t(12 * DAY)),
        "a hospital's own hold"
    );
    // What the coder reads of the stay, from the index.
    assert_eq!(
        (item.attending.as_deref(), item.class, item.admitted_at),
        (Some("dr.okafor"), Some(EncounterClass::Inpatient), t(0))
    );
    assert_eq!(item.disposition.as_deref(), Some("home"));
    assert!(store
        .coding_queue(Some(&["icu".to_string()]), now, 3)
        .unwrap()
        .is_empty());

    write(&store, id, |c| {
        c.respond_to_query(&physician(), t(3 * DAY + 60), &query, "Yes, on admission.")
    });
    for (coding, poa) in [
        (&principal, PresentOnAdmission::Yes),
        (&secondary, PresentOnAdmission::Yes),
    ] {
        write(&store, id, |c| c.set_coding_poa(&coder(), now, coding, poa));
        write(&store, id, |c| {
            c.set_coding_status(&coder(), now, coding, CodingStatus::Final)
        });
    }
    assert!(store.coding_queue(None, now, 3).unwrap().is_empty());
    assert!(store.deficiencies(id).unwrap().is_empty(), "complete");
}

#[test]
fn a_nurse_cannot_set_present_on_admission_and_a_procedure_code_has_none() {
    let mut chart = admitted();
    let pcs = chart
        .assign_code(
            &coder(),
            t(10),
            NewCoding {
                code: CodeInput::new(CodeSystem::Icd10Pcs, "0BH17EZ"),
                sequence: CodingSequence::Secondary,
                poa: None,
                supporting_entries: vec![],
            },
        )
        .unwrap();
    let before = chart.heads();
    let err = chart
        .set_coding_poa(&night_nurse(), t(11), &pcs, PresentOnAdmission::Yes)
        .unwrap_err();
    assert!(matches!(err, ChartError::NotPermitted(_)), "{err}");
    let err = chart
        .set_coding_poa(&coder(), t(11), &pcs, PresentOnAdmission::Yes)
        .unwrap_err();
    assert!(
        matches!(err, ChartError::InvalidValue { field: "poa", .. }),
        "{err}"
    );
    assert_eq!(chart.heads(), before, "nothing was written");
}

#[test]
fn the_worklist_keeps_to_its_ward_and_lists_the_soonest_due_first() {
    let dir = place();
    let store = open_store(&dir);
    let early = store.create(admitted_to("4west", 1)).unwrap();
    let later = store
        .create({
            let (p, e) = admission_to("4west", 2);
            Chart::create(p, e, &technician(), t(DAY)).unwrap()
        })
        .unwrap();
    let icu = store.create(admitted_to("icu", 3)).unwrap();
    let all = store
        .worklist(&DeficiencyFilter::default(), t(0))
        .unwrap()
        .into_iter()
        .map(|w| w.chart)
        .collect::<Vec<_>>();
    assert_eq!(all.len(), 3);
    let west = store
        .worklist(
            &DeficiencyFilter {
                wards: Some(vec!["4west".into()]),
                ..DeficiencyFilter::default()
            },
            t(0),
        )
        .unwrap();
    assert_eq!(
        west.iter().map(|w| w.chart).collect::<Vec<_>>(),
        vec![early, later],
        "soonest due first"
    );
    assert!(all.contains(&icu));
    // A token's several wards in one listing, still soonest due first; no wards, nothing.
    let two = |wards: Vec<&str>| {
        store
            .worklist(
                &DeficiencyFilter {
                    wards: Some(wards.into_iter().map(String::from).collect()),
                    ..DeficiencyFilter::default()
                },
                t(0),
            )
            .unwrap()
            .into_iter()
            .map(|w| w.chart)
            .collect::<Vec<_>>()
    };
    let mut both = two(vec!["icu", "4west"]);
    assert_eq!(
        both.pop(),
        Some(later),
        "admitted a day later, due a day later"
    );
    both.sort();
    let mut expected = vec![early, icu];
    expected.sort();
    assert_eq!(both, expected);
    assert!(two(vec![]).is_empty());
    let by_kind = store
        .worklist(
            &DeficiencyFilter {
                kind: Some(DeficiencyKind::UnsignedEntry),
                ..DeficiencyFilter::default()
            },
            t(0),
        )
        .unwrap();
    assert!(by_kind.is_empty());
}

#[test]
fn a_request_for_records_is_on_the_worklist_until_answered_and_overdue_past_its_due_date() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    signed(&store, id, t(60), EntryKind::HistoryPhysical);
    // The patient asks for a copy of her record: 30 days to answer (45 CFR 164.524(b)(2)).
    let request = store
        .update(id, |c| {
            c.receive_roi_request(
                &technician(),
                t(DAY),
                NewRoiRequest {
                    requester: "A. Rivera".into(),
                    recipient: "A. Rivera".into(),
                    recipient_address: "12 Elm St".into(),
                    purpose: DisclosurePurpose::ToPatient,
                    scope: "the whole stay".into(),
                    due_at: t(31 * DAY),
                },
            )
        })
        .unwrap();
    let releases = |now: Timestamp| -> Vec<WorklistItem> {
        store
            .worklist(
                &DeficiencyFilter {
                    kind: Some(DeficiencyKind::ReleaseDue),
                    ..DeficiencyFilter::default()
                },
                now,
            )
            .unwrap()
    };
    let due = releases(t(2 * DAY));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].deficiency.record_id, request);
    assert_eq!(due[0].deficiency.due_at, Some(t(31 * DAY)));
    assert_eq!(due[0].deficiency.responsible.as_deref(), Some("technician"));
    assert!(!due[0].overdue);
    assert!(releases(t(32 * DAY))[0].overdue, "overdue on day 32");

    // Denied (no signed authorization was needed here, but the requester withdrew it).
    write(&store, id, |c| {
        c.set_roi_status(
            &technician(),
            t(32 * DAY),
            &request,
            RoiStatus::Denied,
            None,
            Some("withdrawn by the requester"),
        )
    });
    assert!(releases(t(32 * DAY)).is_empty(), "answered");
}

fn records_office() -> Actor {
    Actor {
        user: "him.jones".into(),
        role: "technician".into(),
        device: "console".into(),
    }
}

fn reference(item: &WorklistItem) -> DeficiencyRef {
    DeficiencyRef {
        chart: item.chart,
        kind: item.deficiency.kind,
        section: item.deficiency.section.clone(),
        record_id: item.deficiency.record_id.clone(),
        detail: item.deficiency.detail.clone(),
    }
}

#[test]
fn the_records_office_routes_deficiencies_to_a_person_and_acknowledges_a_late_history_and_physical()
{
    let dir = place();
    let store = open_store(&dir);
    let wards = ["4west".to_string()];
    for user in ["dr.okafor", "dr.adeyemi"] {
        store
            .put_staff(
                &records_office(),
                &NewStaff {
                    user,
                    role: Role::Physician,
                    wards: &wards,
                    password: None,
                    source: "test",
                },
            )
            .unwrap();
    }
    let late = store.create(admitted_to("4west", 1)).unwrap();
    let missing = store.create(admitted_to("4west", 2)).unwrap();
    signed(&store, late, t(30 * 60), EntryKind::HistoryPhysical);
    let now = t(3 * DAY);
    let worklist = |responsible: Option<&str>| {
        store
            .worklist(
                &DeficiencyFilter {
                    responsible: responsible.map(str::to_string),
                    ..DeficiencyFilter::default()
                },
                now,
            )
            .unwrap()
    };
    let items = worklist(None);
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|i| i.assignee.is_none() && i.acknowledged.is_none()));
    assert!(
        items.iter().any(|i| i.family_name == "Patient2"),
        "the worklist names the patient"
    );

    // Routed to a person: the filter by responsible finds them under that person, not under
    // the attending the rules named.
    let assigned = store
        .assign_deficiencies(
            &records_office(),
            &items.iter().map(reference).collect::<Vec<_>>(),
            Some("dr.adeyemi"),
            now,
        )
        .unwrap();
    assert_eq!((assigned.deficiencies, assigned.charts), (2, 2));
    assert_eq!(worklist(Some("dr.adeyemi")).len(), 2);
    assert!(worklist(Some("dr.okafor")).is_empty());
    assert!(worklist(None)
        .iter()
        .all(|i| i.assignee.as_deref() == Some("dr.adeyemi")));

    // A person not in the directory, or a deficiency put right since the list was read:
    // refused, and nothing changes.
    let refs: Vec<_> = items.iter().map(reference).collect();
    assert!(matches!(
        store.assign_deficiencies(&records_office(), &refs, Some("dr.nobody"), now),
        Err(StoreError::NoSuchStaff(_))
    ));
    signed(&store, missing, t(3 * DAY), EntryKind::HistoryPhysical);
    assert!(matches!(
        store.assign_deficiencies(&records_office(), &refs, Some("dr.okafor"), now),
        Err(StoreError::NoSuchDeficiency(id)) if id == missing
    ));
    assert!(
        worklist(Some("dr.okafor")).iter().all(|i| i.chart != late),
        "nothing was reassigned"
    );
    // Signed late, the second chart's H&P is no longer missing but late: a new deficiency,
    // routed to no one yet.
    let now_late = worklist(None)
        .into_iter()
        .find(|i| i.chart == missing)
        .unwrap();
    assert_eq!(
        now_late.deficiency.kind,
        DeficiencyKind::HistoryPhysicalLate
    );
    assert_eq!(now_late.assignee, None);

    // The late H&P: overdue until acknowledged with a reason, then shown as acknowledged and
    // no longer overdue. Only a late H&P is acknowledged; the rest are put right in the chart.
    let late_hp = worklist(None)
        .into_iter()
        .find(|i| i.chart == late && i.deficiency.kind == DeficiencyKind::HistoryPhysicalLate)
        .unwrap();
    assert!(late_hp.overdue);
    assert!(matches!(
        store.acknowledge_deficiency(&records_office(), &reference(&late_hp), "  ", now),
        Err(StoreError::Invalid(_))
    ));
    let mut not_late = reference(&late_hp);
    not_late.kind = DeficiencyKind::UnsignedEntry;
    assert!(matches!(
        store.acknowledge_deficiency(&records_office(), &not_late, "seen", now),
        Err(StoreError::NotAcknowledgeable("unsigned_entry"))
    ));
    store
        .acknowledge_deficiency(
            &records_office(),
            &reference(&late_hp),
            "admitted overnight; reviewed with the chief of staff",
            now,
        )
        .unwrap();
    let after = worklist(None)
        .into_iter()
        .find(|i| i.chart == late)
        .unwrap();
    let ack = after.acknowledged.expect("acknowledged");
    assert_eq!((ack.by.as_str(), ack.at), ("him.jones", now));
    assert!(!after.overdue);
    assert_eq!(
        after.assignee.as_deref(),
        Some("dr.adeyemi"),
        "the routing stays"
    );
    let overdue: Vec<_> = overdue_on_4west(&store, now)
        .into_iter()
        .map(|i| i.chart)
        .collect();
    assert!(
        !overdue.contains(&late),
        "an acknowledged deficiency is not overdue"
    );

    // Audited per chart, ids and tokens only: the reason stays in the store.
    let trail = store.audit_trail(late).unwrap();
    let actions: Vec<_> = trail.iter().map(|r| r.action).collect();
    assert!(actions.contains(&AuditAction::Assign) && actions.contains(&AuditAction::Acknowledge));
    let ack_row = trail
        .iter()
        .find(|r| r.action == AuditAction::Acknowledge)
        .unwrap();
    assert_eq!(ack_row.actor.user, "him.jones");
    assert!(!ack_row
        .detail
        .as_deref()
        .unwrap()
        .contains("chief of staff"));
}

#[test]
fn delinquent_records_are_counted_against_monthly_discharges_with_the_coding_backlog_apart() {
    let dir = place();
    let store = open_store(&dir);
    let discharge = |id: ChartId, at: Timestamp| {
        write(&store, id, |c| c.discharge(&technician(), at, "home"));
    };
    // A: discharged on 3 November without a discharge summary: delinquent since 3 December.
    let a = store.create(admitted_to("4west", 1)).unwrap();
    signed(&store, a, t(60), EntryKind::HistoryPhysical);
    discharge(a, t(DAY));
    // B: its H&P came 30 hours in; otherwise complete; discharged on 5 December.
    let b = store.create(admitted_to("4west", 2)).unwrap();
    signed(&store, b, t(30 * 60), EntryKind::HistoryPhysical);
    signed(&store, b, t(33 * DAY), EntryKind::DischargeSummary);
    discharge(b, t(33 * DAY));
    // C: on icu, complete, discharged on 11 January: only its coding is open.
    let c = store.create(admitted_to("icu", 3)).unwrap();
    signed(&store, c, t(60), EntryKind::HistoryPhysical);
    signed(&store, c, t(70 * DAY), EntryKind::DischargeSummary);
    discharge(c, t(70 * DAY));
    let now = t(74 * DAY); // 15 January 2027

    let all = store.delinquency(None, now, 30).unwrap();
    assert_eq!(all.delinquent_records, 2);
    let kinds: Vec<(DeficiencyKind, u32)> =
        all.by_kind.iter().map(|k| (k.kind, k.records)).collect();
    assert_eq!(
        kinds,
        [
            (DeficiencyKind::DischargeSummaryMissing, 1),
            (DeficiencyKind::HistoryPhysicalLate, 1)
        ]
    );
    // Every discharged chart's coding is open: the backlog, not delinquency.
    assert_eq!((all.coding_backlog, all.coding_backlog_overdue), (3, 2));
    // Whole months since the first discharge, the current one left out.
    let months: Vec<(&str, u32)> = all
        .monthly_discharges
        .iter()
        .map(|m| (m.month.as_str(), m.discharges))
        .collect();
    assert_eq!(months, [("2026-11", 1), ("2026-12", 1)]);
    assert_eq!(all.average_monthly_discharges, Some(1.0));
    assert_eq!(all.percent_of_discharges, Some(200.0));

    // The late H&P acknowledged: B is no longer delinquent.
    let late = store
        .worklist(
            &DeficiencyFilter {
                kind: Some(DeficiencyKind::HistoryPhysicalLate),
                ..DeficiencyFilter::default()
            },
            now,
        )
        .unwrap();
    store
        .acknowledge_deficiency(&records_office(), &reference(&late[0]), "reviewed", now)
        .unwrap();
    let all = store.delinquency(None, now, 30).unwrap();
    assert_eq!(all.delinquent_records, 1);
    assert_eq!(all.percent_of_discharges, Some(100.0));

    // By ward: icu has no delinquency, and no whole month of discharges yet.
    let icu = store
        .delinquency(Some(&["icu".to_string()]), now, 30)
        .unwrap();
    assert_eq!(
        (
            icu.delinquent_records,
            icu.coding_backlog,
            icu.coding_backlog_overdue
        ),
        (0, 1, 0)
    );
    assert!(icu.monthly_discharges.is_empty());
    assert_eq!(
        (icu.average_monthly_discharges, icu.percent_of_discharges),
        (None, None)
    );

    // The trend: one count a day, the day's last count kept, per ward.
    assert!(all.trend.is_empty(), "nothing counted yet");
    store
        .count_delinquency_day(now.plus_seconds(-DAY * 60))
        .unwrap();
    store.count_delinquency_day(now).unwrap();
    store.count_delinquency_day(now).unwrap();
    let trend = store.delinquency(None, now, 30).unwrap().trend;
    let days: Vec<(&str, u32, u32)> = trend
        .iter()
        .map(|d| (d.day.as_str(), d.delinquent_records, d.coding_backlog))
        .collect();
    assert_eq!(days, [("2027-01-14", 1, 3), ("2027-01-15", 1, 3)]);
    let icu_trend = store
        .delinquency(Some(&["icu".to_string()]), now, 30)
        .unwrap()
        .trend;
    assert_eq!(
        icu_trend
            .last()
            .map(|d| (d.delinquent_records, d.coding_backlog)),
        Some((0, 1))
    );
    assert_eq!(
        store.delinquency(None, now, 0).unwrap().trend.len(),
        1,
        "the window"
    );
}

#[test]
fn a_deficiency_added_by_hand_waits_on_the_physician_until_answered_or_withdrawn() {
    let dir = place();
    let store = open_store(&dir);
    let id = store.create(admitted()).unwrap();
    signed(&store, id, t(60), EntryKind::HistoryPhysical);
    let paper = |c: &mut Chart, by: &Staff| {
        c.add_deficiency(
            by,
            t(2 * DAY),
            NewQuery {
                question: "The transfusion consent on paper is not signed".into(),
                to: "dr.okafor".into(),
                about: None,
            },
        )
    };
    // Nurses and physicians do not add deficiencies; a technician does.
    for by in [day_nurse(), physician()] {
        assert!(matches!(
            store.update(id, |c| paper(c, &by)),
            Err(StoreError::Chart {
                error: ChartError::NotPermitted(_),
                ..
            })
        ));
    }
    let first = store.update(id, |c| paper(c, &technician())).unwrap();
    let second = store.update(id, |c| paper(c, &technician())).unwrap();
    let by_hand = |now| -> Vec<WorklistItem> {
        store
            .worklist(
                &DeficiencyFilter {
                    kind: Some(DeficiencyKind::AddedByHand),
                    ..DeficiencyFilter::default()
                },
                now,
            )
            .unwrap()
    };
    let open = by_hand(t(3 * DAY));
    assert_eq!(open.len(), 2);
    assert_eq!(
        open[0].deficiency.responsible.as_deref(),
        Some("dr.okafor"),
        "routed to the physician named"
    );
    // The physician's tablet reads it as a query, and the view says what it is.
    let view = store.read(id, |c| c.view().unwrap()).unwrap();
    assert!(view
        .queries
        .iter()
        .all(|q| q.kind == QueryKind::Deficiency && q.status == QueryStatus::Open));
    assert!(!kinds(&store, id).contains(&DeficiencyKind::OpenQuery));
    // Discharged, the chart is due 30 days on; past that the deficiency is overdue.
    write(&store, id, |c| {
        c.discharge(&technician(), t(4 * DAY), "home")
    });
    assert!(by_hand(t(35 * DAY)).iter().all(|d| d.overdue));
    // The physician answers one; the office withdraws the other once it sees it put right.
    write(&store, id, |c| {
        c.respond_to_query(&physician(), t(5 * DAY), &first, "Signed today")
    });
    write(&store, id, |c| {
        c.withdraw_query(&technician(), t(5 * DAY), &second)
    });
    assert!(by_hand(t(35 * DAY)).is_empty());
    // A coder's query stays a query.
    let asked = store
        .update(id, |c| {
            c.ask_query(
                &coder(),
                t(6 * DAY),
                NewQuery {
                    question: "Which organism?".into(),
                    to: "dr.okafor".into(),
                    about: None,
                },
            )
        })
        .unwrap();
    assert!(kinds(&store, id).contains(&DeficiencyKind::OpenQuery));
    let view = store.read(id, |c| c.view().unwrap()).unwrap();
    let q = view.queries.iter().find(|q| q.id == asked).unwrap();
    assert_eq!(q.kind, QueryKind::Query);
}
