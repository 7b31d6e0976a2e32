//! Retention, legal holds and destruction across a simulated clock (this thread's clock, set
//! by `chartsync_core::seeded`): a chart is destroyed only past the later of its years and the
//! patient's age, never under a legal hold, only in a batch a records supervisor approves, and
//! leaves a certificate of destruction and its audit trail behind; destroyed, it never comes
//! back.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

fn open(place: &Place) -> ChartStore {
    place.open(StoreOptions::default()).unwrap()
}

fn supervisor_actor() -> Actor {
    Actor {
        user: "him.sup".into(),
        role: "records_supervisor".into(),
        device: "records-pc-3".into(),
    }
}

/// A Bulk Data export of every patient, running, of `total` charts.
fn export_job(id: &str, total: u64) -> BulkJob {
    BulkJob {
        id: id.into(),
        client_id: "analytics".into(),
        request: "https://charts.example/fhir/Patient/$export".into(),
        ward: None,
        since: None,
        types: Vec::new(),
        status: "running".into(),
        done: 0,
        total,
        transaction_time: Timestamp::now(),
        error: None,
        files: Vec::new(),
        finished_at: None,
    }
}

fn day(s: &str) -> Timestamp {
    Timestamp::parse(&format!("{s}T12:00:00Z")).unwrap()
}

/// A stay of the patient `mrn` born on `born`, admitted and discharged on the days given.
fn stay(store: &ChartStore, mrn: &str, born: &str, admitted: &str, discharged: &str) -> ChartId {
    let (mut patient, encounter) = admission();
    patient.mrn = mrn.into();
    patient.birth_date = Some(born.into());
    let mut chart = Chart::create(patient, encounter, &technician(), day(admitted)).unwrap();
    chart
        .add_entry(&night_nurse(), day(admitted), heart_rate(80))
        .unwrap();
    chart
        .discharge(&technician(), day(discharged), "home")
        .unwrap();
    store.create(chart).unwrap()
}

#[test]
fn charts_are_destroyed_only_past_retention_under_no_hold_and_in_an_approved_batch() {
    let place = place();
    let store = open(&place);
    let sup = supervisor_actor();
    // The clock of this thread: 1 January 2030.
    let clock = chartsync_core::seeded::seed_this_thread(7, day("2030-01-01").unix_millis());

    let adult_old = stay(&store, "MRN-1", "1950-04-01", "2015-03-01", "2015-03-10");
    let adult_recent = stay(&store, "MRN-2", "1960-04-01", "2021-03-01", "2021-03-10");
    let child = stay(&store, "MRN-3", "2012-05-01", "2015-03-01", "2015-03-10");
    let held = stay(&store, "MRN-4", "1950-04-01", "2014-01-01", "2014-01-05");
    let held_later = stay(&store, "MRN-5", "1950-04-01", "2014-01-01", "2014-01-05");
    let active = store.create(admitted()).unwrap();

    let hold = store
        .place_legal_hold(
            &sup,
            &HoldScope::Patient("MRN-4".into()),
            "Doe v. General Hospital, counsel's letter of 2029-12-01",
        )
        .unwrap();

    // In 2030: only the adult discharged in 2015 under no hold (the 2014 ones are held or
    // will be; the child is kept until 21; the 2021 stay until 2031).
    let retention = store.retention().unwrap();
    let item = |id: ChartId| retention.iter().find(|i| i.chart == id).unwrap().clone();
    assert_eq!(item(adult_old).retain_until.as_deref(), Some("2025-03-10"));
    assert_eq!(item(child).retain_until.as_deref(), Some("2033-05-01"));
    assert_eq!(item(held).holds, vec![hold.id]);
    assert!(retention.iter().all(|i| i.chart != active));

    // A Bulk Data export made before, holding every chart.
    let export = BulkJob {
        client_id: "warehouse".into(),
        ..export_job("job-1", 6)
    };
    store.start_bulk_job(&export).unwrap();
    let file = (
        "Patient.ndjson".to_string(),
        "Patient".to_string(),
        6,
        b"{}\n".to_vec(),
    );
    // A file written as it fills, then the last one with the job's end: both listed.
    assert!(store
        .add_bulk_file("job-1", "Patient.ndjson", "Patient", 6, b"{}\n")
        .unwrap());
    let file = ("Patient.2.ndjson".to_string(), file.1, 1, file.3);
    assert!(store.finish_bulk_job("job-1", &[file]).unwrap());
    assert_eq!(store.bulk_job("job-1").unwrap().unwrap().files.len(), 2);
    // A job that fails, or is cancelled, keeps none of the files it wrote.
    for (job, cancel) in [("job-2", false), ("job-3", true)] {
        store
            .start_bulk_job(&chartsync_core::store::BulkJob {
                id: job.into(),
                ..export.clone()
            })
            .unwrap();
        assert!(store
            .add_bulk_file(job, "Patient.ndjson", "Patient", 1, b"{}\n")
            .unwrap());
        if cancel {
            assert!(store.delete_bulk_job(job).unwrap());
        } else {
            store.fail_bulk_job(job, "the export failed").unwrap();
            assert!(store.bulk_job(job).unwrap().unwrap().files.is_empty());
        }
        assert!(!store
            .add_bulk_file(job, "Patient.2.ndjson", "Patient", 1, b"{}\n")
            .unwrap());
        assert!(store.bulk_file(job, "Patient.ndjson").unwrap().is_none());
    }

    let batch = store.propose_destruction(&sup, Timestamp::now()).unwrap();
    let proposed: Vec<ChartId> = batch.items.iter().map(|i| i.chart).collect();
    assert_eq!(proposed.len(), 2, "{proposed:?}");
    assert!(proposed.contains(&adult_old) && proposed.contains(&held_later));
    // Proposing destroys nothing.
    assert!(store.contains(adult_old).unwrap());

    // Before the approval, a hold on the other 2014 stay: it is kept, and the certificate
    // says why.
    store
        .place_legal_hold(
            &sup,
            &HoldScope::Chart(held_later),
            "records requested by the state survey",
        )
        .unwrap();
    let certificate = store
        .approve_destruction(&sup, batch.id, Timestamp::now())
        .unwrap();
    assert_eq!(certificate.status, "destroyed");
    assert_eq!(certificate.decided_by.as_deref(), Some("him.sup"));
    let line = |id: ChartId| {
        certificate
            .items
            .iter()
            .find(|i| i.chart == id)
            .unwrap()
            .clone()
    };
    assert_eq!(line(adult_old).outcome, "destroyed");
    assert!(line(adult_old).rule.contains("10 years after discharge"));
    assert!(!line(adult_old).heads.is_empty());
    assert_eq!(line(adult_old).mrn, "MRN-1");
    assert_eq!(line(held_later).outcome, "kept");
    assert_eq!(
        line(held_later).note.as_deref(),
        Some("under a legal hold placed since")
    );

    // Destroyed: gone from the store, never stored again; its audit trail stays, chained.
    assert!(!store.contains(adult_old).unwrap());
    assert!(store.destroyed(adult_old).unwrap());
    for id in [adult_recent, child, held, held_later, active] {
        assert!(store.contains(id).unwrap());
    }
    let trail = store.audit_trail(adult_old).unwrap();
    assert!(trail.iter().any(|a| a.action == AuditAction::Destroy));
    // The export's files held it: gone, and the job says to export again.
    assert_eq!(store.bulk_file("job-1", "Patient.ndjson").unwrap(), None);
    let job = store.bulk_job("job-1").unwrap().unwrap();
    assert_eq!(job.status, "failed");
    assert!(job.error.unwrap().contains("destroyed"));
    store.verify_audit().unwrap();
    let again = Chart::create(admission().0, admission().1, &technician(), t(0)).unwrap();
    assert!(matches!(
        store.insert(adult_old, again),
        Err(StoreError::Destroyed(_))
    ));
    // An approved batch is decided: not approved twice.
    assert!(matches!(
        store.approve_destruction(&sup, batch.id, Timestamp::now()),
        Err(StoreError::OutOfTurn(_))
    ));

    // Years pass. 2034: the child is 21; the hold on MRN-4 is lifted; the 2021 stay is due.
    clock.set_clock(day("2034-06-01").unix_millis());
    store
        .lift_legal_hold(
            &sup,
            hold.id,
            "case settled, counsel's letter of 2034-05-20",
        )
        .unwrap();
    let batch = store.propose_destruction(&sup, Timestamp::now()).unwrap();
    let mut proposed: Vec<ChartId> = batch.items.iter().map(|i| i.chart).collect();
    proposed.sort();
    let mut expected = vec![adult_recent, child, held];
    expected.sort();
    assert_eq!(proposed, expected, "the chart still held stays out");
    let certificate = store
        .approve_destruction(&sup, batch.id, Timestamp::now())
        .unwrap();
    assert!(certificate.items.iter().all(|i| i.outcome == "destroyed"));
    assert!(store.contains(held_later).unwrap());
    assert!(store.contains(active).unwrap());
}

#[test]
fn a_rule_below_the_federal_floor_or_of_no_class_is_refused_and_a_states_rule_applies() {
    let place = place();
    let store = open(&place);
    let sup = supervisor_actor();
    let rule = |class: &str, years, age: Option<u32>, citation: &str| NewRetentionRule {
        class: class.into(),
        years_after_discharge: years,
        until_age: age,
        citation: citation.into(),
    };
    assert_eq!(
        store.retention_rules().unwrap(),
        vec![RetentionRule::builtin()]
    );
    for bad in [
        rule("inpatient", 4, None, "too short"),
        rule("outpatient_clinic", 7, None, "no such class"),
        rule("inpatient", 7, None, "  "),
    ] {
        assert!(matches!(
            store.set_retention_rule(&sup, &bad),
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(store.retention_rules().unwrap().len(), 1, "nothing set");

    // A state's rule for emergency visits: 7 years, and until 25 for minors.
    store
        .set_retention_rule(
            &sup,
            &rule("emergency", 7, Some(25), "State Admin. Code 12-3"),
        )
        .unwrap();
    let (mut patient, mut encounter) = admission();
    patient.birth_date = Some("1990-01-01".into());
    encounter.class = EncounterClass::Emergency;
    let mut chart = Chart::create(patient, encounter, &technician(), day("2010-01-01")).unwrap();
    chart
        .discharge(&technician(), day("2010-01-02"), "home")
        .unwrap();
    let id = store.create(chart).unwrap();
    let item = store
        .retention()
        .unwrap()
        .into_iter()
        .find(|i| i.chart == id)
        .unwrap();
    assert_eq!(item.retain_until.as_deref(), Some("2017-01-02"));
    assert!(item.rule.contains("State Admin. Code 12-3"));
    let audited = store.audit_of_user("him.sup", 10).unwrap();
    assert!(audited.iter().any(|a| a.action == AuditAction::Retention
        && a.detail
            .as_deref()
            .is_some_and(|d| d.contains("emergency: 7 years"))));
}

#[test]
fn a_hold_needs_a_reason_and_a_cancelled_batch_destroys_nothing() {
    let place = place();
    let store = open(&place);
    let sup = supervisor_actor();
    let id = stay(&store, "MRN-9", "1940-01-01", "2001-01-01", "2001-01-05");
    assert!(matches!(
        store.place_legal_hold(&sup, &HoldScope::Chart(id), " "),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.place_legal_hold(&sup, &HoldScope::Chart(ChartId::random()), "x"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.propose_destruction(&sup, Timestamp::now().plus_seconds(86_400)),
        Err(StoreError::Invalid(_))
    ));
    let batch = store.propose_destruction(&sup, Timestamp::now()).unwrap();
    assert_eq!(batch.items.len(), 1);
    store.cancel_destruction(&sup, batch.id).unwrap();
    assert!(matches!(
        store.approve_destruction(&sup, batch.id, Timestamp::now()),
        Err(StoreError::OutOfTurn(_))
    ));
    assert!(store.contains(id).unwrap());
}

/// The server stops just after a supervisor approved a destruction, before it carried it
/// out. On the next start the approval is finished as approved (each chart checked again),
/// the certificate is complete, and an export running when the charts went keeps none of
/// its files.
#[test]
fn a_destruction_interrupted_by_a_restart_is_finished_as_approved() {
    let place = place();
    let sup = supervisor_actor();
    let (first, second, batch) = {
        let store = open(&place);
        let first = stay(&store, "MRN-21", "1940-01-01", "2001-01-01", "2001-01-05");
        let second = stay(&store, "MRN-22", "1941-01-01", "2002-01-01", "2002-01-05");
        let batch = store.propose_destruction(&sup, Timestamp::now()).unwrap();
        assert_eq!(batch.items.len(), 2);
        (first, second, batch.id)
    };
    // As a server stopped after its claim would leave it: approving.
    place.execute(&format!(
        "UPDATE destruction_batches SET status = 'approving', decided_by = 'him.sup',
             decided_at = 1 WHERE id = {batch}"
    ));
    let store = open(&place);
    assert!(matches!(
        store.approve_destruction(&sup, batch, Timestamp::now()),
        Err(StoreError::OutOfTurn(_))
    ));
    store.start_bulk_job(&export_job("job-9", 2)).unwrap();
    assert!(store
        .add_bulk_file("job-9", "Patient.ndjson", "Patient", 2, b"{}\n{}\n")
        .unwrap());

    let interrupted = store
        .interrupted_destructions(std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(interrupted, vec![(batch, "him.sup".to_string())]);
    let done = store
        .resume_destruction(batch, "him.sup", "server-restart", Timestamp::now())
        .unwrap();
    assert_eq!(done.status, "destroyed");
    assert!(
        done.items.iter().all(|i| i.outcome == "destroyed"),
        "{done:?}"
    );
    assert!(!store.contains(first).unwrap() && !store.contains(second).unwrap());
    assert!(store
        .interrupted_destructions(std::time::Duration::ZERO)
        .unwrap()
        .is_empty());
    let job = store.bulk_job("job-9").unwrap().unwrap();
    assert_eq!(job.status, "failed");
    assert!(job.files.is_empty());
    // The approver is named on the resumption, in the audit trail.
    let audited = store.audit_of_user("him.sup", 10).unwrap();
    assert!(audited.iter().any(|a| a.actor.device == "server-restart"
        && a.detail.as_deref().is_some_and(|d| d.contains("resumed"))));
}

/// An export's files are kept for its client a while (`--bulk-files-ttl`), then go with the
/// export.
#[test]
fn an_exports_files_go_once_kept_their_time() {
    let place = place();
    {
        let store = open(&place);
        store.start_bulk_job(&export_job("job-5", 1)).unwrap();
        let one = (
            "Patient.ndjson".to_string(),
            "Patient".to_string(),
            1,
            b"{}\n".to_vec(),
        );
        assert!(store.finish_bulk_job("job-5", &[one]).unwrap());
        let job = store.bulk_job("job-5").unwrap().unwrap();
        assert!(job.finished_at.is_some());
        // Kept a day: not yet.
        assert_eq!(
            store
                .expire_bulk_jobs(std::time::Duration::from_secs(86_400))
                .unwrap(),
            0
        );
        assert!(store
            .bulk_file("job-5", "Patient.ndjson")
            .unwrap()
            .is_some());
    }
    // Two days on.
    place.execute(&format!(
        "UPDATE bulk_jobs SET finished_at = {} WHERE id = 'job-5'",
        Timestamp::now().unix_millis() - 2 * 86_400_000
    ));
    let store = open(&place);
    assert_eq!(
        store
            .expire_bulk_jobs(std::time::Duration::from_secs(86_400))
            .unwrap(),
        1
    );
    assert!(store.bulk_job("job-5").unwrap().is_none());
    assert!(store
        .bulk_file("job-5", "Patient.ndjson")
        .unwrap()
        .is_none());
}
