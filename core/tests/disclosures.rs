//! Release of information as the records office works it: a patient's accounting of
//! disclosures across all their stays, six years back, without what 45 CFR 164.528(a)(1)
//! leaves out.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

const YEAR: i64 = 365 * 24 * 60;

fn disclose(
    store: &ChartStore,
    id: ChartId,
    at: Timestamp,
    purpose: DisclosurePurpose,
    request_id: Option<String>,
) -> String {
    store
        .update(id, |c| {
            c.record_disclosure(
                &technician(),
                at,
                NewDisclosure {
                    request_id,
                    recipient: "County Health Dept".into(),
                    recipient_address: "1 Main St".into(),
                    description: "Immunization record".into(),
                    purpose,
                },
            )
        })
        .unwrap()
}

/// A stay of the same patient (MRN-0042) admitted at `at`.
fn stay(store: &ChartStore, at: Timestamp) -> ChartId {
    let (p, e) = admission();
    store
        .create(Chart::create(p, e, &technician(), at).unwrap())
        .unwrap()
}

/// An insurer's request for the discharge summary, for research, logged at `at` with the
/// patient's authorization form still to sign: (request id, form id).
fn insurer_request(store: &ChartStore, id: ChartId, at: Timestamp) -> (String, String) {
    store
        .update(id, |c| {
            let request = c.receive_roi_request(
                &technician(),
                at,
                NewRoiRequest {
                    requester: "Acme Life".into(),
                    recipient: "Acme Life".into(),
                    recipient_address: "PO Box 9".into(),
                    purpose: DisclosurePurpose::Research,
                    scope: "discharge summary".into(),
                    due_at: at.plus_seconds(30 * 24 * 3600),
                },
            )?;
            let form = c.add_form(
                &technician(),
                at,
                NewForm {
                    form_type: FormType::RoiAuthorization,
                    fields: Default::default(),
                    required_signers: vec!["patient".into()],
                },
            )?;
            Ok::<_, ChartError>((request, form))
        })
        .unwrap()
}

/// The patient signs the authorization and the technician verifies it, at `at`.
fn verify_authorization(store: &ChartStore, id: ChartId, at: Timestamp, request: &str, form: &str) {
    store
        .update(id, |c| {
            c.sign_form(&technician(), at, form, "A. Rivera", "patient")?;
            c.set_roi_status(
                &technician(),
                at,
                request,
                RoiStatus::AuthorizationVerified,
                Some(form),
                None,
            )
        })
        .unwrap();
}

#[test]
fn the_accounting_covers_every_stay_of_the_patient_for_six_years_and_leaves_out_the_exempt() {
    let dir = place();
    let store = dir.open(StoreOptions::default()).unwrap();
    let old_stay = stay(&store, t(-7 * YEAR));
    let last_year = stay(&store, t(-YEAR));
    let now_stay = stay(&store, t(0));
    let other_patient = store.create(admitted_to("4west", 9)).unwrap();
    let now = t(60);

    // Seven years ago: outside the window.
    disclose(
        &store,
        old_stay,
        t(-7 * YEAR + 10),
        DisclosurePurpose::PublicHealth,
        None,
    );
    // Last year: a court order (accounted) and a claim to the insurer (payment: exempt).
    let court = disclose(
        &store,
        last_year,
        t(-YEAR + 10),
        DisclosurePurpose::JudicialProceeding,
        None,
    );
    disclose(
        &store,
        last_year,
        t(-YEAR + 20),
        DisclosurePurpose::Payment,
        None,
    );
    // This stay: a report to public health (accounted), a copy to the patient (exempt), and
    // a release under the patient's signed authorization (exempt, whatever its purpose).
    let public_health = disclose(
        &store,
        now_stay,
        t(10),
        DisclosurePurpose::PublicHealth,
        None,
    );
    disclose(&store, now_stay, t(11), DisclosurePurpose::ToPatient, None);
    let (authorized_request, form) = insurer_request(&store, now_stay, t(12));
    verify_authorization(&store, now_stay, t(14), &authorized_request, &form);
    disclose(
        &store,
        now_stay,
        t(16),
        DisclosurePurpose::Research,
        Some(authorized_request),
    );
    // Research without an authorization (under a waiver) is accounted for.
    let waiver = disclose(&store, now_stay, t(17), DisclosurePurpose::Research, None);
    // Another patient's disclosure never appears.
    disclose(
        &store,
        other_patient,
        t(18),
        DisclosurePurpose::LawEnforcement,
        None,
    );

    let accounting = store.accounting_of_disclosures("MRN-0042", now).unwrap();
    assert_eq!(accounting.mrn, "MRN-0042");
    assert_eq!(accounting.to, now);
    assert_eq!(
        accounting.from,
        Timestamp::parse("2020-11-02T09:00:00Z").unwrap()
    );
    let mut charts = accounting.charts.clone();
    charts.sort();
    let mut expected = vec![old_stay, last_year, now_stay];
    expected.sort();
    assert_eq!(charts, expected, "every stay of the patient is searched");
    let listed: Vec<(ChartId, &str, DisclosurePurpose)> = accounting
        .disclosures
        .iter()
        .map(|d| (d.chart, d.disclosure.id.as_str(), d.disclosure.purpose))
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                last_year,
                court.as_str(),
                DisclosurePurpose::JudicialProceeding
            ),
            (
                now_stay,
                public_health.as_str(),
                DisclosurePurpose::PublicHealth
            ),
            (now_stay, waiver.as_str(), DisclosurePurpose::Research),
        ],
        "oldest first, exempt ones left out"
    );
    let line = &accounting.disclosures[0].disclosure;
    assert_eq!(
        (
            line.recipient.as_str(),
            line.recipient_address.as_str(),
            line.by.as_str()
        ),
        ("County Health Dept", "1 Main St", "him.jones"),
        "what 164.528(b)(2) asks of each line"
    );

    let nobody = store.accounting_of_disclosures("MRN-9999", now).unwrap();
    assert!(nobody.charts.is_empty() && nobody.disclosures.is_empty());
}

#[test]
fn every_purpose_is_either_exempt_under_a_paragraph_of_164_528_or_accounted_for() {
    let exempt: Vec<_> = DisclosurePurpose::ALL
        .iter()
        .filter_map(|p| p.exempt_under().map(|law| (p.token(), law)))
        .collect();
    assert!(exempt.contains(&("treatment", "164.528(a)(1)(i)")));
    assert!(exempt.contains(&("to_patient", "164.528(a)(1)(ii)")));
    assert!(exempt.contains(&("limited_data_set", "164.528(a)(1)(viii)")));
    for accounted in [
        "public_health",
        "judicial_proceeding",
        "law_enforcement",
        "research",
    ] {
        let p = DisclosurePurpose::from_token(accounted).unwrap();
        assert_eq!(p.exempt_under(), None, "{accounted}");
    }
}

#[test]
fn six_years_before_a_leap_day_is_the_28th() {
    let leap = Timestamp::parse("2028-02-29T10:00:00Z").unwrap();
    assert_eq!(
        leap.years_before(6),
        Timestamp::parse("2022-02-28T10:00:00Z").unwrap()
    );
}

#[test]
fn a_release_counts_as_authorized_only_if_the_authorization_was_verified_before_it() {
    let dir = place();
    let store = dir.open(StoreOptions::default()).unwrap();
    let id = stay(&store, t(0));
    let (request, form) = insurer_request(&store, id, t(1));
    // Released before anyone verified an authorization: accounted for, and it stays so.
    let early = disclose(
        &store,
        id,
        t(3),
        DisclosurePurpose::Research,
        Some(request.clone()),
    );
    verify_authorization(&store, id, t(4), &request, &form);
    let under_authorization =
        disclose(&store, id, t(6), DisclosurePurpose::Research, Some(request));
    // A tablet whose clock runs fast stamps a report to public health after "now".
    let now = t(60);
    let fast_clock = disclose(&store, id, t(65), DisclosurePurpose::PublicHealth, None);

    let view = store.read(id, |c| c.view().unwrap()).unwrap();
    let carried: Vec<Option<&str>> = view
        .disclosures
        .iter()
        .map(|d| d.authorization.as_deref())
        .collect();
    assert_eq!(carried, vec![None, Some(form.as_str()), None]);
    let listed: Vec<String> = store
        .accounting_of_disclosures("MRN-0042", now)
        .unwrap()
        .disclosures
        .into_iter()
        .map(|d| d.disclosure.id)
        .collect();
    assert_eq!(listed, vec![early, fast_clock]);
    assert!(!listed.contains(&under_authorization));
}

fn records_supervisor() -> Actor {
    Actor {
        user: "him.sup".into(),
        role: "records_supervisor".into(),
        device: "console".into(),
    }
}

fn asked(mrn: &str, since: Option<Timestamp>, fee_cents: u64) -> NewAccountingRequest {
    NewAccountingRequest {
        mrn: mrn.into(),
        requester: "A. Rivera".into(),
        address: "12 Elm St".into(),
        since,
        fee_cents,
    }
}

#[test]
fn an_accounting_request_is_due_in_sixty_days_extended_once_and_kept_as_it_was_given() {
    let dir = place();
    let store = open_store(&dir);
    let sup = records_supervisor();
    let day = 24 * 60;
    let first = stay(&store, t(0));
    let second = stay(&store, t(YEAR));
    disclose(&store, first, t(10), DisclosurePurpose::PublicHealth, None);
    disclose(
        &store,
        second,
        t(YEAR + 10),
        DisclosurePurpose::LawEnforcement,
        None,
    );
    disclose(
        &store,
        second,
        t(YEAR + 20),
        DisclosurePurpose::Treatment,
        None,
    );
    let now = t(2 * YEAR);

    // Bad requests are refused by what is wrong, and nothing is logged.
    for (bad, why) in [
        (
            NewAccountingRequest {
                requester: " ".into(),
                ..asked("MRN-0042", None, 0)
            },
            "requester is required",
        ),
        (
            asked("MRN-0042", None, 500),
            "first accounting in twelve months is free",
        ),
        (
            asked("MRN-0042", Some(now.plus_seconds(60)), 0),
            "must start before today",
        ),
    ] {
        match store.log_accounting_request(&sup, &bad, now) {
            Err(StoreError::Invalid(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    assert!(matches!(
        store.log_accounting_request(&sup, &asked("MRN-9999", None, 0), now),
        Err(StoreError::NoSuchPatient(m)) if m == "MRN-9999"
    ));
    assert!(store.accounting_requests(None).unwrap().is_empty());

    let r = store
        .log_accounting_request(&sup, &asked("MRN-0042", None, 0), now)
        .unwrap();
    assert_eq!(r.due_at, now.plus_seconds(ACCOUNTING_DUE_DAYS * 86_400));
    assert!(r.first_in_twelve_months);
    assert_eq!(r.status, AccountingRequestStatus::Open);
    assert_eq!(store.accounting_requests(None).unwrap(), vec![r.clone()]);

    // One extension, with its reason, within the 60 days.
    assert!(matches!(
        store.extend_accounting_request(&sup, &r.id, " ", t(2 * YEAR + day)),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.extend_accounting_request(&sup, &r.id, "waiting on a business associate", t(2 * YEAR + 61 * day)),
        Err(StoreError::OutOfTurn(m)) if m.contains("past due")
    ));
    let extended = store
        .extend_accounting_request(
            &sup,
            &r.id,
            "waiting on a business associate",
            t(2 * YEAR + 10 * day),
        )
        .unwrap();
    assert_eq!(extended.due_at, now.plus_seconds(90 * 86_400));
    let ext = extended.extension.clone().unwrap();
    assert_eq!(
        (ext.original_due_at, ext.by.as_str()),
        (r.due_at, "him.sup")
    );
    assert!(matches!(
        store.extend_accounting_request(&sup, &r.id, "again", t(2 * YEAR + 11 * day)),
        Err(StoreError::OutOfTurn(m)) if m.contains("one extension")
    ));

    // Answered: both stays' accountable disclosures, not the treatment one; kept as given.
    let given_at = t(2 * YEAR + 20 * day);
    let (provided, accounting) = store.provide_accounting(&sup, &r.id, given_at).unwrap();
    assert_eq!(provided.status, AccountingRequestStatus::Provided);
    assert_eq!(
        (provided.provided_at, provided.provided_by.as_deref()),
        (Some(given_at), Some("him.sup"))
    );
    let purposes: Vec<DisclosurePurpose> = accounting
        .disclosures
        .iter()
        .map(|d| d.disclosure.purpose)
        .collect();
    assert_eq!(
        purposes,
        [
            DisclosurePurpose::PublicHealth,
            DisclosurePurpose::LawEnforcement
        ]
    );
    assert!(matches!(
        store.provide_accounting(&sup, &r.id, given_at),
        Err(StoreError::OutOfTurn(m)) if m.contains("already answered")
    ));
    disclose(
        &store,
        second,
        t(2 * YEAR + 21 * day),
        DisclosurePurpose::Research,
        None,
    );
    let (again, kept) = store.accounting_request(&r.id).unwrap().unwrap();
    assert_eq!(again, provided);
    assert_eq!(
        kept,
        Some(accounting),
        "the accounting as it was given, not as it would be now"
    );
    assert!(
        store.accounting_requests(None).unwrap().is_empty(),
        "nothing open"
    );
    // Each step is on both of the patient's charts' trails.
    for chart in [first, second] {
        let trail: Vec<String> = store
            .audit_trail(chart)
            .unwrap()
            .into_iter()
            .filter_map(|a| a.detail)
            .filter(|d| d.contains(&r.id))
            .collect();
        assert_eq!(
            trail,
            [
                format!("accounting request {} logged", r.id),
                format!("accounting request {} extended", r.id),
                format!(
                    "accounting of disclosures given, request {}: 2 listed",
                    r.id
                ),
            ]
        );
    }

    // A second accounting within twelve months may carry the fee the patient was told of,
    // and cover the shorter period they asked for.
    let later = t(2 * YEAR + 100 * day);
    let paid = store
        .log_accounting_request(&sup, &asked("MRN-0042", Some(t(YEAR)), 1500), later)
        .unwrap();
    assert!(!paid.first_in_twelve_months);
    assert_eq!(paid.fee_cents, 1500);
    let (_, shorter) = store.provide_accounting(&sup, &paid.id, later).unwrap();
    assert_eq!(shorter.from, t(YEAR));
    let purposes: Vec<DisclosurePurpose> = shorter
        .disclosures
        .iter()
        .map(|d| d.disclosure.purpose)
        .collect();
    assert_eq!(
        purposes,
        [
            DisclosurePurpose::LawEnforcement,
            DisclosurePurpose::Research
        ]
    );
    // A year after the last one given, the next is free again.
    assert!(store
        .log_accounting_request(
            &sup,
            &asked("MRN-0042", None, 1500),
            t(3 * YEAR + 101 * day)
        )
        .is_err());
    let all = store.accounting_requests(Some("MRN-0042")).unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [paid.id.as_str(), r.id.as_str()],
        "the patient's requests, newest first"
    );
}
