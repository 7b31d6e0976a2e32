//! Retention, legal holds and destruction over REST with a real server: records supervisors
//! only; a rule under the federal floor refused; a patient under a legal hold kept; a batch
//! proposed and approved leaves a certificate of destruction and the chart's audit trail; a
//! destroyed chart never comes back, even when a device that still holds it syncs again.

mod common;

use chartsync_core::chart::*;
use common::*;
use serde_json::{json, Value};

fn day(s: &str) -> Timestamp {
    Timestamp::parse(&format!("{s}T09:00:00Z")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_retention_is_destroyed_on_approval_keeping_held_patients_and_the_audit_trail()
{
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    // The records office's PC: stays of years ago, discharged, and one of a child.
    let pc = tablet_store(&devices, "pc");
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let stay = |mrn: &str, born: &str, admitted: &str, discharged: &str| {
        let patient = NewPatient {
            mrn: mrn.into(),
            family_name: "Lindqvist".into(),
            given_names: "Eva".into(),
            birth_date: Some(born.into()),
            sex: Some(Sex::Female),
            address: None,
            phone: None,
        };
        let encounter = NewEncounter {
            ward: "4west".into(),
            bed: None,
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: Some("dr.okafor".into()),
        };
        let mut chart = Chart::create(patient, encounter, &clerk, day(admitted)).unwrap();
        chart.discharge(&clerk, day(discharged), "home").unwrap();
        pc.create(chart).unwrap()
    };
    let old = stay("MRN-0001", "1950-02-01", "2012-01-02", "2012-01-09");
    let held = stay("MRN-0002", "1950-02-01", "2012-01-02", "2012-01-09");
    let child = stay("MRN-0003", "2010-02-01", "2012-01-02", "2012-01-09");
    let recent = stay("MRN-0004", "1950-02-01", "2024-01-02", "2024-01-09");
    let token = server.token("him.jones", "technician", &["4west"]);
    let c = client(url.clone(), &token, "records-pc-1", &pc);
    assert!(c.wait_until_up_to_date(WAIT).await);

    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let (status, _) = http_get(&server.addr, "/api/retention", Some(&nurse));
    assert_eq!(status, 403);
    let (status, body) = http_put(
        &server.addr,
        "/api/retention/rules/inpatient",
        Some(&sup),
        &json!({"years_after_discharge": 3, "citation": "too short"}).to_string(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("42 CFR 482.24(b)"), "{body}");

    // Due today: the two adults of 2012 (the child is kept until 21, in 2031).
    let (status, body) = http_get(&server.addr, "/api/retention?due=true", Some(&sup));
    assert_eq!(status, 200, "{body}");
    let due: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ids = |v: &[Value], key: &str| -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .map(|i| i[key].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut expected = vec![old.to_string(), held.to_string()];
    expected.sort();
    assert_eq!(ids(&due, "chart"), expected);

    // A legal hold on MRN-0002.
    let (status, body) = http_post(
        &server.addr,
        "/api/legal-holds",
        Some(&sup),
        &json!({"mrn": "MRN-0002", "reason": " "}).to_string(),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = http_post(
        &server.addr,
        "/api/legal-holds",
        Some(&sup),
        &json!({"mrn": "MRN-0002", "reason": "subpoena, Doe v. General, 2026-11-30"}).to_string(),
    );
    assert_eq!(status, 201, "{body}");

    // Proposed, then approved: only the adult under no hold goes.
    let (status, body) = http_post(&server.addr, "/api/destruction", Some(&sup), "{}");
    assert_eq!(status, 201, "{body}");
    let batch: Value = serde_json::from_str(&body).unwrap();
    let items = batch["items"].as_array().unwrap();
    assert_eq!(ids(items, "chart"), vec![old.to_string()]);
    let id = batch["id"].as_i64().unwrap();
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/destruction/{id}/approve"),
        Some(&sup),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    let certificate: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(certificate["status"], "destroyed");
    assert_eq!(certificate["decided_by"], "him.sup");
    let line = &certificate["items"][0];
    assert_eq!(line["outcome"], "destroyed");
    assert_eq!(line["mrn"], "MRN-0001");
    assert!(line["rule"]
        .as_str()
        .unwrap()
        .contains("10 years after discharge"));
    assert!(!line["heads"].as_array().unwrap().is_empty());
    let (status, _) = http_post(
        &server.addr,
        &format!("/api/destruction/{id}/approve"),
        Some(&sup),
        "{}",
    );
    assert_eq!(status, 409, "approved once");

    // The record is gone; its audit trail is not.
    let (status, _) = http_get(&server.addr, &format!("/api/charts/{old}"), Some(&sup));
    assert_eq!(status, 404);
    for kept in [held, child, recent] {
        let (status, _) = http_get(&server.addr, &format!("/api/charts/{kept}"), Some(&sup));
        assert_eq!(status, 200);
    }
    let (status, body) = http_get(&server.addr, &format!("/api/audit?chart={old}"), Some(&sup));
    assert_eq!(status, 200, "{body}");
    let trail: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(trail.iter().any(|a| a["action"] == "create"));
    assert!(trail.iter().any(|a| a["action"] == "destroy"));

    // The PC still holds its copy and syncs again: the server never takes it back.
    c.stop().await;
    let c = client(url, &token, "records-pc-1", &pc);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = c
        .wait_until_up_to_date(std::time::Duration::from_secs(5))
        .await;
    let (status, _) = http_get(&server.addr, &format!("/api/charts/{old}"), Some(&sup));
    assert_eq!(status, 404, "a destroyed chart came back");
    c.stop().await;
}
