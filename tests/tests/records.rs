//! The records office against a real server: the ward's deficiency worklist and what is
//! overdue, the coding queue of discharged charts, and a patient's accounting of disclosures,
//! each for the people allowed to read it and audited.

mod common;

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::protocol::{DocSync, DocumentId};
use common::*;

const DAY: i64 = 86_400;

fn staff(user: &str, role: Role) -> Staff {
    Staff::new(user, role, format!("{user}-pc"))
}

/// Someone signs in, takes the chart as the server has it (or hands over a new one), writes,
/// and syncs; the server must accept it all.
async fn work(
    server: &Server,
    token: &str,
    who: &Staff,
    id: DocumentId,
    new: Option<Chart>,
    write: impl FnOnce(&mut Chart),
) {
    let mut device = connect(&server.addr, Some(token), &who.device, &who.device)
        .await
        .unwrap();
    let mut state = DocSync::new(id, None);
    let mut doc = match new {
        Some(chart) => chart.doc().clone(),
        None => Automerge::new(),
    };
    assert_eq!(device.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    let mut chart = Chart::from_automerge(doc).unwrap();
    write(&mut chart);
    let mut doc = chart.doc().clone();
    assert_eq!(device.sync(id, &mut doc, &mut state).await, Outcome::Synced);
}

async fn get(server: &Server, path: &str, token: &str) -> (u16, serde_json::Value, String) {
    let (addr, path, token) = (server.addr.clone(), path.to_string(), token.to_string());
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&addr, &path, Some(&token)))
        .await
        .unwrap();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, json, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_office_finds_what_is_overdue_codes_the_discharged_and_accounts_for_disclosures(
) {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let physician_token = server.token("dr.okafor", "physician", &["4west"]);
    let coder_token = server.token("cdr.wu", "coder", &["4west"]);
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let icu_clerk_token = server.token("him.icu", "technician", &["icu"]);
    let supervisor_token = server.token("him.sup", "records_supervisor", &["*"]);
    let icu_supervisor_token = server.token("icu.sup", "records_supervisor", &["icu"]);
    let clerk = staff("him.jones", Role::Technician);
    let physician = staff("dr.okafor", Role::Physician);
    let coder = staff("cdr.wu", Role::Coder);
    let icu_clerk = staff("him.icu", Role::Technician);
    let now = Timestamp::now();
    let day = |n: i64| now.plus_seconds(n * DAY);

    // Ana Rivera's stay: admitted 35 days ago, discharged 31 days ago. The H&P and the
    // discharge summary are signed; a progress note never was; the principal diagnosis is
    // still proposed; the county health department was sent her immunization record, and her
    // insurer a claim.
    let stay = DocumentId::random();
    let chart = admit_at("MRN-0042", "4west", day(-35), &clerk);
    work(&server, &clerk_token, &clerk, stay, Some(chart), |_| {}).await;
    let mut note = String::new();
    work(&server, &physician_token, &physician, stay, None, |c| {
        for (kind, at, sign) in [
            (EntryKind::HistoryPhysical, day(-35), true),
            (EntryKind::ProgressNote, day(-34), false),
            (EntryKind::DischargeSummary, day(-31), true),
        ] {
            let entry = c
                .add_entry(&physician, at, NewEntry::note(kind, "Documented."))
                .unwrap();
            if sign {
                c.sign_entry(&physician, at, &entry, SignatureMeaning::Author)
                    .unwrap();
            } else {
                note = entry;
            }
        }
    })
    .await;
    work(&server, &coder_token, &coder, stay, None, |c| {
        c.assign_code(&coder, day(-31), pneumonia()).unwrap();
    })
    .await;
    work(&server, &clerk_token, &clerk, stay, None, |c| {
        c.discharge(&clerk, day(-31), "home").unwrap();
        for (purpose, at) in [
            (DisclosurePurpose::PublicHealth, day(-20)),
            (DisclosurePurpose::Payment, day(-19)),
        ] {
            c.record_disclosure(
                &clerk,
                at,
                NewDisclosure {
                    request_id: None,
                    recipient: "County Health Dept".into(),
                    recipient_address: "1 Main St".into(),
                    description: "Immunization record".into(),
                    purpose,
                },
            )
            .unwrap();
        }
    })
    .await;
    // Admitted an hour ago: the H&P is due, not overdue.
    let new_admission = DocumentId::random();
    let chart = admit_at("MRN-0077", "4west", now.plus_seconds(-3600), &clerk);
    work(
        &server,
        &clerk_token,
        &clerk,
        new_admission,
        Some(chart),
        |_| {},
    )
    .await;
    // An ICU stay long since discharged: overdue, but not 4west's.
    let icu_stay = DocumentId::random();
    let chart = admit_at("MRN-0099", "icu", day(-40), &icu_clerk);
    work(
        &server,
        &icu_clerk_token,
        &icu_clerk,
        icu_stay,
        Some(chart),
        |c| {
            c.discharge(&icu_clerk, day(-35), "home").unwrap();
        },
    )
    .await;

    // The ward's overdue worklist: the unsigned note and the coding, on day 31 after discharge.
    let (status, list, body) = get(
        &server,
        "/api/deficiencies?ward=4west&overdue=true",
        &nurse_token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let items = list["deficiencies"].as_array().unwrap();
    let found: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|d| {
            (
                d["chart"].as_str().unwrap(),
                d["deficiency"]["kind"].as_str().unwrap(),
                d["deficiency"]["record_id"].as_str().unwrap(),
            )
        })
        .collect();
    let stay_id = stay.to_string();
    assert!(
        found.contains(&(stay_id.as_str(), "unsigned_entry", note.as_str())),
        "{found:?}"
    );
    assert!(found.contains(&(stay_id.as_str(), "coding_not_final", "")));
    assert!(items
        .iter()
        .all(|d| d["overdue"] == true && d["ward"] == "4west"));
    assert!(
        !body.contains(&new_admission.to_string()),
        "the new admission is not overdue"
    );
    assert!(!body.contains("Rivera"), "ids, not names");
    assert!(list["as_of"].is_string());

    // Without the overdue filter the new admission's missing H&P is there, due tomorrow.
    let (_, list, body) = get(&server, "/api/deficiencies", &nurse_token).await;
    let fresh: Vec<&serde_json::Value> = list["deficiencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["chart"] == new_admission.to_string())
        .collect();
    assert_eq!(fresh.len(), 1, "{body}");
    assert_eq!(fresh[0]["deficiency"]["kind"], "history_physical_missing");
    assert_eq!(fresh[0]["overdue"], false);
    assert!(
        !body.contains(&icu_stay.to_string()),
        "a 4west token's worklist keeps to 4west"
    );
    for (path, status) in [
        ("/api/deficiencies?ward=icu", 403),
        ("/api/deficiencies?overdue=maybe", 400),
        ("/api/deficiencies?kind=lost_chart", 400),
    ] {
        assert_eq!(get(&server, path, &nurse_token).await.0, status, "{path}");
    }
    let (_, list, _) = get(
        &server,
        "/api/deficiencies?overdue=true&kind=unsigned_entry&responsible=dr.okafor",
        &physician_token,
    )
    .await;
    assert_eq!(
        list["deficiencies"].as_array().unwrap().len(),
        1,
        "Dr Okafor's own overdue signatures"
    );

    // The coding queue: coders and records staff; the stay waits, overdue.
    assert_eq!(get(&server, "/api/coding-queue", &nurse_token).await.0, 403);
    let (status, queue, body) = get(&server, "/api/coding-queue", &coder_token).await;
    assert_eq!(status, 200, "{body}");
    let charts = queue["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1, "{body}");
    assert_eq!(charts[0]["chart"], stay_id);
    assert_eq!(charts[0]["principal_diagnosis"], "J18.9");
    assert_eq!(charts[0]["principal_final"], false);
    assert_eq!(charts[0]["not_final"], 1);
    assert_eq!(charts[0]["overdue"], true);
    // Every ward's queue, earliest discharge first: the ICU stay has no diagnosis at all.
    let (_, all, body) = get(&server, "/api/coding-queue", &supervisor_token).await;
    let all = all["charts"].as_array().unwrap();
    let order: Vec<&str> = all.iter().map(|c| c["chart"].as_str().unwrap()).collect();
    assert_eq!(order, vec![icu_stay.to_string(), stay_id.clone()], "{body}");
    assert_eq!(all[0]["principal_diagnosis"], serde_json::Value::Null);

    // The accounting of disclosures: supervisors for every ward only, as JSON and as CSV.
    for token in [&clerk_token, &icu_supervisor_token] {
        assert_eq!(
            get(&server, "/api/disclosures?mrn=MRN-0042", token).await.0,
            403
        );
    }
    let (status, accounting, body) =
        get(&server, "/api/disclosures?mrn=MRN-0042", &supervisor_token).await;
    assert_eq!(status, 200, "{body}");
    let lines = accounting["disclosures"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "the insurance claim is exempt: {body}");
    assert_eq!(lines[0]["purpose"], "public_health");
    assert_eq!(lines[0]["recipient"], "County Health Dept");
    assert_eq!(lines[0]["chart"], stay_id);
    let (status, _, csv) = get(
        &server,
        "/api/disclosures?mrn=MRN-0042&format=csv",
        &supervisor_token,
    )
    .await;
    assert_eq!(status, 200);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("date,recipient,recipient_address,description,purpose"));
    assert!(rows[1].contains("County Health Dept,1 Main St,Immunization record,public_health"));
    for (path, status) in [
        ("/api/disclosures", 400),
        ("/api/disclosures?mrn=not%20an%20mrn", 400),
        ("/api/disclosures?mrn=MRN-0042&format=pdf", 400),
    ] {
        assert_eq!(
            get(&server, path, &supervisor_token).await.0,
            status,
            "{path}"
        );
    }

    // The stay as FHIR, for the records office of its ward only; kept for the validators.
    let export = format!("/api/charts/{stay}/fhir");
    assert_eq!(get(&server, &export, &nurse_token).await.0, 403);
    assert_eq!(get(&server, &export, &icu_clerk_token).await.0, 404);
    let (status, bundle, body) = get(&server, &export, &clerk_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["identifier"]["value"], stay_id);
    let types: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    for t in [
        "Patient",
        "Encounter",
        "Condition",
        "DocumentReference",
        "Provenance",
        "AuditEvent",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-bundles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server-export.json"), &body).unwrap();

    // Each accounting read is in the stay's audit trail, and so are the refusals.
    let (_, trail, _) = get(
        &server,
        &format!("/api/audit?chart={stay}"),
        &supervisor_token,
    )
    .await;
    let events: Vec<(&str, &str, &str)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["user"].as_str().unwrap(),
                r["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let accounting_reads = events
        .iter()
        .filter(|e| e.0 == "read" && e.1 == "him.sup" && e.2.contains("accounting"))
        .count();
    assert_eq!(accounting_reads, 2, "JSON and CSV: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.0 == "read" && e.1 == "him.jones" && e.2 == "FHIR export"),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| e.0 == "deny" && e.1 == "him.icu" && e.2.contains("FHIR")));
    for refused in ["him.jones", "icu.sup"] {
        assert!(
            events
                .iter()
                .any(|e| e.0 == "deny" && e.1 == refused && e.2.contains("accounting")),
            "{refused}: {events:?}"
        );
    }
}
