//! The REST side with the same tokens: a ward's charts, one chart as JSON, the audit trail of
//! every read, write, denial and refusal, and metrics.

mod common;

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::protocol::{DocSync, DocumentId};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_staff_see_the_ward_the_chart_and_an_audit_of_everything_done_to_it() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let icu = server.token("tech.icu", "technician", &["icu"]);
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let icu_supervisor = server.token("icu.sup", "records_supervisor", &["icu"]);

    // Admitted, an observation recorded, a tampered coding held, an ICU request denied.
    let mut pc = connect(&server.addr, Some(&clerk), "records-pc-1", "pc")
        .await
        .unwrap();
    let mut doc = admit().doc().clone();
    assert_eq!(
        pc.sync(id, &mut doc, &mut DocSync::new(id, None)).await,
        Outcome::Synced
    );
    let mut tablet = connect(&server.addr, Some(&nurse), "tablet-4west-02", "tab")
        .await
        .unwrap();
    let mut doc = Automerge::new();
    let mut state = DocSync::new(id, None);
    assert_eq!(tablet.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    let mut chart = Chart::from_automerge(doc).unwrap();
    let nurse_staff = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    chart
        .add_entry(
            &nurse_staff,
            at(5),
            NewEntry::note(EntryKind::Observation, "Resp 16"),
        )
        .unwrap();
    let mut doc = chart.doc().clone();
    assert_eq!(tablet.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    let written = doc.get_heads();
    chart
        .assign_code(
            &Staff::new("rn.park", Role::Coder, "tablet-4west-02"),
            at(6),
            pneumonia(),
        )
        .unwrap();
    let mut doc = chart.doc().clone();
    assert!(matches!(
        tablet.sync(id, &mut doc, &mut state).await,
        Outcome::Notice(chartsync_core::protocol::ChartNotice::Held { .. })
    ));
    let mut stranger = connect(&server.addr, Some(&icu), "records-pc-9", "icu")
        .await
        .unwrap();
    let mut nothing = Automerge::new();
    assert_eq!(
        stranger
            .sync(id, &mut nothing, &mut DocSync::new(id, None))
            .await,
        Outcome::Unavailable
    );

    let addr = server.addr.clone();
    let get = move |path: String, token: Option<String>| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || http_get(&addr, &path, token.as_deref()))
                .await
                .unwrap()
        }
    };

    // The ward's charts, for a token that covers the ward and for one that does not.
    let (status, body) = get("/api/charts?ward=4west".into(), Some(nurse.clone())).await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["mrn"], "MRN-0042");
    assert_eq!(list[0]["id"], id.to_string());
    assert_eq!(
        get("/api/charts?ward=4west".into(), Some(icu.clone()))
            .await
            .0,
        403
    );
    assert_eq!(get("/api/charts?ward=4west".into(), None).await.0, 401);
    // Tokens in URLs end up in logs: REST takes them from the header only.
    assert_eq!(
        get(format!("/api/charts?ward=4west&token={nurse}"), None)
            .await
            .0,
        401
    );

    // One chart: found for the ward, "not found" outside it (as a chart that does not exist).
    let (status, body) = get(format!("/api/charts/{id}"), Some(nurse.clone())).await;
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["entries"][0]["body"], "Resp 16");
    assert!(
        view["coding"].as_array().unwrap().is_empty(),
        "the refused coding is not there"
    );
    assert_eq!(
        get(format!("/api/charts/{id}"), Some(icu.clone())).await.0,
        404
    );
    assert_eq!(
        get(
            format!("/api/charts/{}", DocumentId::random()),
            Some(nurse.clone())
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get("/api/charts/not-an-id".into(), Some(nurse.clone()))
            .await
            .0,
        400
    );

    // The audit trail: for supervisors only, and every event is in it.
    assert_eq!(
        get(format!("/api/audit?chart={id}"), Some(nurse.clone()))
            .await
            .0,
        403
    );
    // A supervisor of another ward: as if the chart did not exist.
    assert_eq!(
        get(
            format!("/api/audit?chart={id}"),
            Some(icu_supervisor.clone())
        )
        .await
        .0,
        404
    );
    // Denials are audited a moment after they are answered (off the reply path): wait for
    // the sync connection's to be written.
    let (mut trail, mut body): (Vec<serde_json::Value>, String);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status;
        (status, body) = get(format!("/api/audit?chart={id}"), Some(supervisor.clone())).await;
        assert_eq!(status, 200, "{body}");
        trail = serde_json::from_str(&body).unwrap();
        let denied = |user: &str| {
            trail
                .iter()
                .any(|r| r["action"] == "deny" && r["user"] == user)
        };
        if denied("tech.icu") && denied("icu.sup") || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events: Vec<(String, String)> = trail
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("create", "him.jones"),
        ("read", "rn.park"),
        ("write", "rn.park"),
        ("hold", "rn.park"),
        ("deny", "tech.icu"),
        ("deny", "icu.sup"),
    ] {
        assert!(
            events.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} missing from {events:?}"
        );
    }
    let write = trail.iter().find(|r| r["action"] == "write").unwrap();
    let hashes: Vec<String> = written.iter().map(|h| h.to_string()).collect();
    assert_eq!(write["changes"], serde_json::json!(hashes));
    assert!(
        !body.contains("Rivera") && !body.contains("J18.9"),
        "no chart data in the trail"
    );

    // Metrics: counts only.
    let (status, metrics) = get("/metrics".into(), None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("chartsync_connections "), "{metrics}");
    assert!(
        metrics.contains("chartsync_held_changes_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("chartsync_sync_message_seconds_bucket"));
    assert!(!metrics.contains("4west") && !metrics.contains(&id.to_string()));
}

/// A token read no data from the second it expires: REST answers 401 at once, with no grace.
#[test]
fn rest_refuses_a_token_from_the_second_it_expires() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let token = server.token_for("him.sup", "records_supervisor", &["*"], "2s");
    let (status, _) = http_get(&server.addr, "/api/charts?ward=4west", Some(&token));
    assert_eq!(status, 200, "valid while it lasts");
    // Expiry is whole seconds: past `exp` by a few milliseconds at most.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (status, body) = http_get(&server.addr, "/api/charts?ward=4west", Some(&token));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}
