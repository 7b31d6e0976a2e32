//! Every edit a nurse makes reaches the record, or is held where a person sees it: a tablet
//! with the device sync client against a real server, through the ward's ordinary events — a
//! change the server will not merge on one chart among twenty that sync, a sign-in that
//! expires, and work done with no network at all.

mod common;

use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::client::{ChartEvent, SyncState};
use chartsync_core::protocol::{HoldReason, LeftReason};
use common::*;

/// A shared ward tablet: rn.park is signed in; rn.silva charted on it earlier. The server holds
/// rn.silva's observation (the connection speaks for rn.park alone), tells the tablet which
/// chart and why, and the other twenty charts sync on the same connection: one connection in
/// all, no reconnect loop, and the tablet says exactly what waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_change_on_one_chart_leaves_twenty_others_syncing_on_one_connection() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);

    // Twenty-one patients admitted at the registration PC.
    let mrns: Vec<String> = (0..21).map(|n| format!("MRN-{n:04}")).collect();
    let Pc {
        store: pc_store,
        clerk,
        token: clerk_token,
        client: pc,
        charts,
    } = registration_pc(&server, &devices, &["4west"], &mrns).await;
    pc.stop().await;
    let opened_before = server.metric("connections_opened_total");

    // The night nurse's tablet follows the ward's census and takes every chart.
    let tablet = tablet_store(&devices, "tablet");
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let c = client(url, &nurse_token, "tablet-4west-01", &tablet);
    eventually("the ward's charts did not arrive", || {
        charts.iter().all(|id| tablet.contains(*id).unwrap())
    })
    .await;
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );

    // rn.silva's observation on the last chart, from before rn.park signed in; rn.park's own
    // observations on the other twenty.
    let silva = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let shared = charts[20];
    tablet
        .update(shared, |ch| ch.add_entry(&silva, at(120), heart_rate(101)))
        .unwrap();
    for (n, id) in charts[..20].iter().enumerate() {
        tablet
            .update(*id, |ch| {
                ch.add_entry(&park, at(130 + n as i64), heart_rate(70))
            })
            .unwrap();
    }

    let status = until(&c, "the shared chart held, the rest up to date", |s| {
        s.state == SyncState::WaitingForReview && s.unacknowledged == 1
    })
    .await;
    assert_eq!(status.held.len(), 1, "{status:?}");
    assert_eq!(status.held[0].chart, shared);
    assert_eq!(status.held[0].reason, HoldReason::AnotherAuthor);
    assert!(status.held[0].hold.is_some());
    assert_eq!(
        status.unacknowledged_commits, 1,
        "rn.silva's one observation"
    );
    for id in &charts[..20] {
        let view = on_server(&server, &nurse_token, *id);
        assert_eq!(view["entries"].as_array().unwrap().len(), 1, "chart {id}");
    }
    let view = on_server(&server, &nurse_token, shared);
    assert!(
        view["entries"].as_array().unwrap().is_empty(),
        "held, not merged"
    );

    // No reconnect loop: in a quiet spell the tablet stays on its one connection. (3 s here;
    // CHARTSYNC_QUIET_SECS=60 for the issue's measurement over a minute.)
    let quiet = std::env::var("CHARTSYNC_QUIET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    tokio::time::sleep(Duration::from_secs(quiet)).await;
    assert_eq!(
        server.metric("connections_opened_total") - opened_before,
        1.0,
        "connections the tablet opened"
    );
    assert_eq!(c.status().borrow().state, SyncState::WaitingForReview);

    // While it waits, the tablet still gets everyone else's changes to that chart: the
    // patient moves to bed 5 at the registration PC, and the tablet shows it.
    pc_store
        .update(shared, |ch| {
            ch.transfer(&clerk, at(140), "4west", Some("5"))
        })
        .unwrap();
    let pc = client(
        format!("ws://{}/sync", server.addr),
        &clerk_token,
        "records-pc-1",
        &pc_store,
    );
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;
    eventually(
        "a held chart stopped getting other people's changes",
        || {
            tablet
                .read(shared, |ch| ch.encounter().unwrap().bed)
                .unwrap()
                == Some("5".into())
        },
    )
    .await;
    assert_eq!(c.status().borrow().held.len(), 1, "and stays held");

    // The held change is in the audit trail, with its hash, for the records supervisor.
    let supervisor = server.token("sup.adams", "records_supervisor", &["4west"]);
    let (code, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={shared}"),
        Some(&supervisor),
    );
    assert_eq!(code, 200, "{body}");
    let trail: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let held: Vec<_> = trail.iter().filter(|r| r["action"] == "hold").collect();
    assert_eq!(held.len(), 1, "{body}");
    assert_eq!(held[0]["user"], "rn.park");
    assert_eq!(held[0]["changes"].as_array().unwrap().len(), 1);

    // Restarted (a new connection), the tablet still shows the chart held, and the server,
    // sent the change again, holds nothing twice.
    c.stop().await;
    let url = format!("ws://{}/sync", server.addr);
    let again = client(url, &nurse_token, "tablet-4west-01", &tablet);
    assert_eq!(
        again.status().borrow().held.len(),
        1,
        "held, before connecting"
    );
    until(&again, "back to waiting for review", |s| {
        s.state == SyncState::WaitingForReview
    })
    .await;
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={shared}"),
        Some(&supervisor),
    );
    let trail: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(trail.iter().filter(|r| r["action"] == "hold").count(), 1);

    // rn.silva signs in on the tablet: her observation is hers to send, so it goes in, the
    // hold is settled with no supervisor needed, and the tablet is up to date.
    again.set_token(server.token("rn.silva", "nurse", &["4west"]));
    let status = until(&again, "rn.silva's observation in the record", |s| {
        s.state == SyncState::UpToDate && s.held.is_empty()
    })
    .await;
    assert_eq!(status.unacknowledged, 0);
    let view = on_server(&server, &nurse_token, shared);
    assert_eq!(view["entries"][0]["author"], "rn.silva");
    let (_, body) = http_get(
        &server.addr,
        "/api/holds?status=accepted",
        Some(&supervisor),
    );
    let holds: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(holds.len(), 1, "{body}");
    assert_eq!(holds[0]["decided_by"], "rn.silva");
    again.stop().await;
}

/// With no network from the start, the tablet counts what it has not sent: the charts and the
/// commits, before any connection and as the nurse writes; once a server answers, both reach
/// zero and the record has every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_counts_are_right_with_no_network_and_reach_zero_once_synced() {
    let devices = tempfile::tempdir().unwrap();
    let tablet = tablet_store(&devices, "tablet");
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let first = tablet
        .create(admit_at("MRN-0001", "4west", at(0), &nurse))
        .unwrap();
    let second = tablet
        .create(admit_at("MRN-0002", "4west", at(1), &nurse))
        .unwrap();
    let commits = |id| tablet.read(id, |c| c.doc().get_changes(&[]).len()).unwrap();
    let made = commits(first) + commits(second);

    // A server address with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    // The token comes from the server's key, made in its data directory before it runs.
    let token = {
        let server = Server::start(data.path());
        let t = server.token("rn.park", "nurse", &["4west"]);
        server.stop();
        t
    };
    let c = client(
        format!("ws://{listen}/sync"),
        &token,
        "tablet-4west-01",
        &tablet,
    );
    let status = c.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged, status.unacknowledged_commits),
        (2, made),
        "before the first connection: {status:?}"
    );
    until(&c, "offline", |s| {
        matches!(s.state, SyncState::Offline { .. })
    })
    .await;

    // An observation while offline counts at once.
    tablet
        .update(first, |ch| ch.add_entry(&nurse, at(5), heart_rate(80)))
        .unwrap();
    until(&c, "one more commit counted offline", |s| {
        s.unacknowledged == 2 && s.unacknowledged_commits == made + 1
    })
    .await;

    // The server comes up where the tablet expects it.
    let server = Server::start_on(data.path(), &listen);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    let status = c.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged, status.unacknowledged_commits),
        (0, 0)
    );
    let view = on_server(&server, &token, first);
    assert_eq!(view["entries"].as_array().unwrap().len(), 1);
    c.stop().await;
}

/// A sign-in that expires mid-shift: the tablet says "sign in again" and stops trying (no
/// retry loop against the server), keeps the nurse's work, and with a new token carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sign_in_asks_for_a_new_one_and_stops_retrying_until_given() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tablet = tablet_store(&devices, "tablet");
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let id = tablet
        .create(admit_at("MRN-0001", "4west", at(0), &nurse))
        .unwrap();

    let short = server.token_for("rn.park", "nurse", &["4west"], "3s");
    let c = client(
        format!("ws://{}/sync", server.addr),
        &short,
        "tablet-4west-01",
        &tablet,
    );
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );

    let status = until(&c, "sign-in required", |s| {
        matches!(s.state, SyncState::SignInRequired { .. })
    })
    .await;
    assert_eq!(status.unacknowledged, 0);
    let refused = server.metric("sync_sign_ins_refused_total");
    let opened = server.metric("connections_opened_total");
    // Work goes on while signed out, and is counted.
    tablet
        .update(id, |ch| ch.add_entry(&nurse, at(5), heart_rate(80)))
        .unwrap();
    until(&c, "the new entry counted", |s| s.unacknowledged == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.metric("sync_sign_ins_refused_total"),
        refused,
        "the tablet kept trying a token the server refuses"
    );
    assert_eq!(server.metric("connections_opened_total"), opened);
    assert!(matches!(
        c.status().borrow().state,
        SyncState::SignInRequired { .. }
    ));

    // Signed in again: the entry reaches the record.
    let fresh = server.token("rn.park", "nurse", &["4west"]);
    c.set_token(fresh.clone());
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    let view = on_server(&server, &fresh, id);
    assert_eq!(view["entries"].as_array().unwrap().len(), 1);
    c.stop().await;
}

/// A ward tablet signed in as rn.park, where rn.silva charted a heart rate on MRN-0001's and
/// MRN-0002's charts (4west): the server holds both. The tablet's store, its client, the two
/// charts and rn.park's token.
async fn two_held_charts(
    server: &Server,
    devices: &tempfile::TempDir,
) -> (
    std::sync::Arc<chartsync_core::store::ChartStore>,
    chartsync_core::client::SyncClient,
    ChartId,
    ChartId,
    String,
) {
    let tablet = tablet_store(devices, "tablet");
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let silva = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let (kept, refused) = (
        tablet
            .create(admit_at("MRN-0001", "4west", at(0), &park))
            .unwrap(),
        tablet
            .create(admit_at("MRN-0002", "4west", at(1), &park))
            .unwrap(),
    );
    let url = format!("ws://{}/sync", server.addr);
    let c = client(url, &nurse_token, "tablet-4west-01", &tablet);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    for id in [kept, refused] {
        tablet
            .update(id, |ch| ch.add_entry(&silva, at(30), heart_rate(88)))
            .unwrap();
    }
    until(&c, "both charts held", |s| s.held.len() == 2).await;
    (tablet, c, kept, refused, nurse_token)
}

/// Two of rn.silva's observations wait on a shared tablet where rn.park is signed in. The
/// records supervisor reads what each would do, accepts one (it reaches the record under
/// rn.silva's name) and rejects the other with a reason; the tablet hears both decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_accepts_one_held_change_and_rejects_another_and_the_tablet_hears_both() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (tablet, c, kept, refused, nurse_token) = two_held_charts(&server, &devices).await;

    let supervisor = server.token("sup.adams", "records_supervisor", &["4west"]);
    let (code, body) = http_get(&server.addr, "/api/holds", Some(&supervisor));
    assert_eq!(code, 200, "{body}");
    let holds: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(holds.len(), 2, "{body}");
    let hold_of = |chart: ChartId| {
        holds
            .iter()
            .find(|h| h["chart"] == chart.to_string())
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (accept, reject) = (hold_of(kept), hold_of(refused));
    // A nurse may not read the holding area.
    assert_eq!(
        http_get(&server.addr, "/api/holds", Some(&nurse_token)).0,
        403
    );

    // What the change would do, in words and as a patch of the chart.
    let (code, body) = http_get(
        &server.addr,
        &format!("/api/holds/{accept}"),
        Some(&supervisor),
    );
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["reason"], "another_author");
    assert_eq!(detail["acceptable"], true);
    assert_eq!(detail["user"], "rn.park", "who was signed in");
    let words: Vec<&str> = detail["effect"]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        words.iter().any(|w| w.starts_with("adds entries/")),
        "{words:?}"
    );
    assert_eq!(detail["effect"]["patch"][0]["op"], "add");
    assert_eq!(detail["effect"]["patch"][0]["value"]["value"], "88");

    // Accepted: merged under rn.silva's name.
    let post = |path: String, json: &str| http_post(&server.addr, &path, Some(&supervisor), json);
    let (code, body) = post(format!("/api/holds/{accept}/accept"), "{}");
    assert_eq!(code, 200, "{body}");
    // Rejected: a reason is required, and a decided hold stays decided.
    let (code, _) = post(format!("/api/holds/{reject}/reject"), "{}");
    assert_eq!(code, 400);
    let (code, body) = post(
        format!("/api/holds/{reject}/reject"),
        r#"{"reason": "charted on the wrong patient"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(post(format!("/api/holds/{reject}/accept"), "{}").0, 409);
    assert_eq!(
        post(format!("/api/holds/{accept}/reject"), r#"{"reason":"x"}"#).0,
        409
    );

    // The tablet: the accepted chart is in the record and no longer held. The rejected one
    // can never merge with the record again: the tablet's copy is set aside whole (with the
    // supervisor's reason) and the record's copy fetched afresh; nothing waits any more.
    let status = until(&c, "the decisions reach the tablet", |s| {
        s.held.is_empty() && s.unacknowledged == 0 && s.state == SyncState::UpToDate
    })
    .await;
    assert!(status.held.is_empty());
    assert_eq!(
        tablet
            .set_aside_charts()
            .unwrap()
            .iter()
            .map(|(id, r, _)| (*id, r.as_str()))
            .collect::<Vec<_>>(),
        vec![(refused, "charted on the wrong patient")]
    );
    eventually("the record's copy never came back", || {
        tablet.contains(refused).unwrap()
    })
    .await;
    assert_eq!(
        tablet
            .read(refused, |ch| ch.view().unwrap().entries.len())
            .unwrap(),
        0,
        "the tablet now has the record's copy"
    );
    let view = on_server(&server, &nurse_token, kept);
    assert_eq!(view["entries"][0]["author"], "rn.silva");
    let view = on_server(&server, &nurse_token, refused);
    assert!(view["entries"].as_array().unwrap().is_empty());

    // The trail: rn.silva's write, and the supervisor's review.
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={kept}"),
        Some(&supervisor),
    );
    let trail: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(trail
        .iter()
        .any(|r| r["action"] == "write" && r["user"] == "rn.silva"));
    assert!(trail
        .iter()
        .any(|r| r["action"] == "review" && r["user"] == "sup.adams"));
    c.stop().await;
}

/// The same decisions from the records console: a supervisor opens the review queues, reads
/// what each held change would do, accepts one and rejects the other with a reason, and the
/// tablet hears both; a break-glass access from another ward's nurse is reviewed with a note.
/// A technician is kept out, and a form without its CSRF token changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_works_the_review_queues_in_the_console_and_the_tablet_hears_each_decision() {
    use common::console::{csrf, get, post, sign_in};
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    add_staff(&server, "sup.adams", "records_supervisor", &["4west"]);
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let (tablet, c, kept, refused, nurse_token) = two_held_charts(&server, &devices).await;
    // A float nurse from 5east opens MRN-0002's chart in an emergency.
    let float = server.token("rn.float", "nurse", &["5east"]);
    let (status, body) = http_post(
        &server.addr,
        "/api/break-glass",
        Some(&float),
        &serde_json::json!({"chart": refused.to_string(), "reason": "ETREAT", "text": "code blue on 4west"})
            .to_string(),
    );
    assert_eq!(status, 201, "{body}");

    let addr = server.addr.clone();
    let origin = format!("http://{addr}");
    let tech = sign_in(&addr, "him.jones");
    assert_eq!(get(&addr, "/console/review", Some(&tech)).status, 403);
    let cookie = sign_in(&addr, "sup.adams");
    let queues = get(&addr, "/console/review", Some(&cookie));
    assert_eq!(queues.status, 200, "{}", queues.body);
    for said in [
        "2 held changes waiting",
        "MRN-0001",
        "MRN-0002",
        "written by someone other than the person signed in",
        "1 break-glass access to review",
        "rn.float (nurse): MRN-0002 on 4west",
        "code blue on 4west",
    ] {
        assert!(queues.body.contains(said), "{said}: {}", queues.body);
    }
    let token = csrf(&queues.body);
    let hold_of = |chart: ChartId| {
        let at = queues
            .body
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap();
        let row = &queues.body[..at];
        let id = &row[row.rfind("data-hold=\"").unwrap() + 11..];
        id[..id.find('"').unwrap()].parse::<i64>().unwrap()
    };
    let (accept, reject) = (hold_of(kept), hold_of(refused));
    let page = get(
        &addr,
        &format!("/console/review/hold?id={accept}"),
        Some(&cookie),
    );
    assert!(page.body.contains("<code>adds entries/"), "{}", page.body);
    assert!(page.body.contains("class=\"accept\""), "it may be accepted");
    let decide = |fields: &[(&str, &str)], with_token: bool| {
        let mut all = vec![("csrf", if with_token { token.as_str() } else { "" })];
        all.extend_from_slice(fields);
        post(
            &addr,
            "/console/review/hold",
            Some(&cookie),
            Some(&origin),
            &all,
        )
    };
    let (accept_id, reject_id) = (accept.to_string(), reject.to_string());
    let forged = decide(&[("id", &accept_id), ("decision", "accept")], false);
    assert_eq!(forged.status, 403, "no CSRF token, nothing decided");
    let accepted = decide(&[("id", &accept_id), ("decision", "accept")], true);
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    let no_reason = decide(
        &[("id", &reject_id), ("decision", "reject"), ("reason", " ")],
        true,
    );
    assert_eq!(
        no_reason.status, 400,
        "a rejection gives the tablet its reason"
    );
    let rejected = decide(
        &[
            ("id", &reject_id),
            ("decision", "reject"),
            ("reason", "charted on the wrong patient"),
        ],
        true,
    );
    assert_eq!(rejected.status, 303, "{}", rejected.body);
    let page = get(
        &addr,
        &format!("/console/review/hold?id={reject}"),
        Some(&cookie),
    );
    assert!(page.body.contains("Rejected by sup.adams"), "{}", page.body);
    assert!(page.body.contains("charted on the wrong patient"));
    let again = decide(
        &[("id", &accept_id), ("decision", "reject"), ("reason", "x")],
        true,
    );
    assert_eq!(again.status, 409, "a decided hold stays decided");

    // The break-glass access, reviewed with a note.
    let grant = {
        let at = queues.body.find("data-grant=\"").unwrap() + 12;
        queues.body[at..at + queues.body[at..].find('"').unwrap()].to_string()
    };
    let reviewed = post(
        &addr,
        "/console/review/break-glass",
        Some(&cookie),
        Some(&origin),
        &[
            ("csrf", &token),
            ("id", &grant),
            ("note", "confirmed with the rapid response log"),
        ],
    );
    assert_eq!(reviewed.status, 303, "{}", reviewed.body);
    let queues = get(&addr, "/console/review", Some(&cookie));
    assert!(
        queues.body.contains("0 held changes waiting"),
        "{}",
        queues.body
    );
    assert!(queues.body.contains("0 break-glass accesses to review"));
    let (_, body) = http_get(
        &server.addr,
        "/api/break-glass?status=reviewed",
        Some(&server.token("sup.adams", "records_supervisor", &["4west"])),
    );
    let grants: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&grants[0]["reviewed_by"], &grants[0]["review_note"]),
        (
            &serde_json::json!("sup.adams"),
            &serde_json::json!("confirmed with the rapid response log")
        )
    );

    // The tablet hears both decisions: one chart in the record, the other set aside whole.
    until(&c, "the decisions reach the tablet", |s| {
        s.held.is_empty() && s.unacknowledged == 0 && s.state == SyncState::UpToDate
    })
    .await;
    assert_eq!(
        tablet
            .set_aside_charts()
            .unwrap()
            .iter()
            .map(|(id, r, _)| (*id, r.as_str()))
            .collect::<Vec<_>>(),
        vec![(refused, "charted on the wrong patient")]
    );
    let view = on_server(&server, &nurse_token, kept);
    assert_eq!(view["entries"][0]["author"], "rn.silva");
    c.stop().await;
}

/// The night nurse's tablet loses the network and she records five sets of vital signs while,
/// unknown to her, the patient is transferred from 4west to 5east. On reconnect all five
/// reach the record (written before she could have known), then the tablet is told the chart
/// left: it stays on the tablet read-only, leaves the ward's list, and the app hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_charted_offline_during_a_transfer_reach_the_record_then_the_chart_leaves() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);

    let Pc {
        store: pc_store,
        clerk,
        token: clerk_token,
        client: pc,
        charts,
    } = registration_pc(&server, &devices, &["4west", "5east"], &["MRN-0042".into()]).await;
    let id = charts[0];

    let tablet = tablet_store(&devices, "tablet");
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let c = client(url.clone(), &nurse_token, "tablet-4west-01", &tablet);
    eventually("the chart never arrived", || tablet.contains(id).unwrap()).await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;

    // Offline: five sets of vitals. Meanwhile the patient moves to 5east.
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for n in 0..5 {
        tablet
            .update(id, |ch| {
                ch.add_entry(&park, at(60 + n), heart_rate(80 + n as u32))
            })
            .unwrap();
    }
    pc_store
        .update(id, |ch| {
            ch.transfer(&clerk, Timestamp::now(), "5east", Some("3"))
        })
        .unwrap();
    assert!(pc.wait_until_up_to_date(WAIT).await);

    // Back online.
    let c = client(url, &nurse_token, "tablet-4west-01", &tablet);
    let mut events = c.chart_events();
    let left = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the tablet was never told the chart left")
        .unwrap();
    assert_eq!(
        left,
        ChartEvent::Left {
            chart: id,
            reason: LeftReason::Transferred
        }
    );
    let view = on_server(&server, &clerk_token, id);
    assert_eq!(
        view["entries"].as_array().unwrap().len(),
        5,
        "all five vitals in the record"
    );
    assert_eq!(view["encounter"]["ward"], "5east");
    let status = until(&c, "up to date", |s| s.state == SyncState::UpToDate).await;
    assert_eq!(
        (status.unacknowledged, status.unacknowledged_commits),
        (0, 0)
    );
    assert!(status.held.is_empty());

    // On the tablet: off the ward's list, still there to read, no longer to write.
    assert!(tablet.census("4west").unwrap().is_empty());
    assert_eq!(tablet.departed(id).unwrap(), Some(LeftReason::Transferred));
    assert_eq!(
        tablet
            .read(id, |ch| ch.view().unwrap().entries.len())
            .unwrap(),
        5
    );
    let write = tablet.update(id, |ch| ch.add_entry(&park, at(90), heart_rate(99)));
    assert!(
        matches!(
            write,
            Err(chartsync_core::store::StoreError::Chart {
                error: ChartError::NotPermitted(_),
                ..
            })
        ),
        "{write:?}"
    );
    // Nothing of 5east reached the tablet: not the transfer, not the new ward.
    assert_eq!(
        tablet.read(id, |ch| ch.encounter().unwrap().ward).unwrap(),
        "4west"
    );
    c.stop().await;
    pc.stop().await;
}

/// The server's disk is lost and it is restored from last night's backup. The tablets still
/// hold everything since — their own observations, a colleague's they received through the
/// server, a chart admitted after the backup — and send it back. The restored server takes
/// it all back (it had accepted it: its receipts say so), holds nothing, and every tablet
/// converges with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_from_backup_the_tablets_bring_back_everything_and_converge() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let addr = server.addr.clone();
    let url = format!("ws://{addr}/sync");
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let pc_store = tablet_store(&devices, "pc");
    let a = pc_store
        .create(admit_at("MRN-0001", "4west", at(0), &clerk))
        .unwrap();
    let b = pc_store
        .create(admit_at("MRN-0002", "4west", at(1), &clerk))
        .unwrap();
    let pc = client(url.clone(), &clerk_token, "records-pc-1", &pc_store);
    assert!(pc.wait_until_up_to_date(WAIT).await);

    let staff = [
        ("rn.park", "tablet-4west-01"),
        ("rn.lee", "tablet-4west-02"),
    ];
    let mut tablets = Vec::new();
    for (user, device) in staff {
        let store = tablet_store(&devices, device);
        let token = server.token(user, "nurse", &["4west"]);
        let c = client(url.clone(), &token, device, &store);
        tablets.push((store, token, c, Staff::new(user, Role::Nurse, device)));
    }
    let all_there = |ids: &[ChartId]| {
        tablets
            .iter()
            .all(|(s, ..)| ids.iter().all(|id| s.contains(*id).unwrap()))
    };
    eventually("the charts never arrived", || all_there(&[a, b])).await;
    for (n, (store, _, c, who)) in tablets.iter().enumerate() {
        store
            .update(a, |ch| ch.add_entry(who, at(10 + n as i64), heart_rate(70)))
            .unwrap();
        assert!(c.wait_until_up_to_date(WAIT).await);
    }

    // Last night's backup, taken while the server runs.
    let backup = backups.path().join("charts-backup.db");
    back_up(data.path(), &backup);
    let again = records_on_file(data.path(), &["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success(), "a backup never overwrites a file");

    // The morning's work after it: both nurses chart on both patients, a new admission.
    for (n, (store, _, c, who)) in tablets.iter().enumerate() {
        for id in [a, b] {
            store
                .update(id, |ch| {
                    ch.add_entry(who, at(20 + n as i64), heart_rate(80))
                })
                .unwrap();
        }
        assert!(c.wait_until_up_to_date(WAIT).await);
    }
    let c_chart = pc_store
        .create(admit_at("MRN-0003", "4west", at(30), &clerk))
        .unwrap();
    assert!(pc.wait_until_up_to_date(WAIT).await);
    eventually("the new admission never arrived", || all_there(&[c_chart])).await;
    for (_, _, c, _) in &tablets {
        assert!(c.wait_until_up_to_date(WAIT).await);
    }
    let acknowledged: Vec<(ChartId, Vec<automerge::ChangeHash>)> = [a, b, c_chart]
        .iter()
        .map(|id| (*id, pc_store.read(*id, |ch| ch.heads()).unwrap()))
        .collect();

    // The server goes down; the store is restored from the backup.
    let (said, server) = restored(server, data.path(), &backup).await;
    assert!(said.contains("restored 2 charts"), "{said}");

    // Every tablet and the PC converge with the server, which has every change it had
    // acknowledged, and holds nothing.
    let entries = |id: ChartId| {
        let (status, body) = http_get(
            &server.addr,
            &format!("/api/charts/{id}"),
            Some(&clerk_token),
        );
        (status == 200)
            .then(|| {
                serde_json::from_str::<serde_json::Value>(&body).unwrap()["entries"]
                    .as_array()
                    .map(|e| e.len())
            })
            .flatten()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = (entries(a), entries(b), entries(c_chart));
        if found == (Some(4), Some(2), Some(0)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not get back what it had acknowledged: {found:?}; tablets: {:?}",
            tablets
                .iter()
                .map(|(_, _, c, _)| c.status().borrow().clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, _, c, _) in &tablets {
        assert!(
            c.wait_until_up_to_date(WAIT).await,
            "{:?}",
            c.status().borrow()
        );
    }
    assert!(
        pc.wait_until_up_to_date(WAIT).await,
        "{:?}",
        pc.status().borrow()
    );
    for (id, heads) in &acknowledged {
        for (store, ..) in &tablets {
            assert_eq!(
                store.read(*id, |ch| ch.heads()).unwrap(),
                *heads,
                "chart {id}"
            );
        }
    }
    // The records office sees every hold, ward censuses' included.
    let office = server.token("sup.adams", "records_supervisor", &["*"]);
    let (_, body) = http_get(&server.addr, "/api/holds?status=all", Some(&office));
    assert_eq!(body, "[]", "nothing held after the restore");
    for (_, _, c, _) in &tablets {
        let status = until(c, "up to date", |s| s.state == SyncState::UpToDate).await;
        assert!(status.held.is_empty());
    }
    for (_, _, c, _) in tablets {
        c.stop().await;
    }
    pc.stop().await;
}

/// A patient is discharged while the night nurse's tablet is connected: the nurse's tablet is
/// told the chart left (ward staff no longer chart on it) and keeps it read-only; the
/// physician's tablet, who still owes the discharge summary, keeps syncing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_takes_the_chart_off_the_nurses_tablet_but_not_the_physicians() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    let Pc {
        store: pc_store,
        clerk,
        token: clerk_token,
        client: pc,
        charts,
    } = registration_pc(&server, &devices, &["4west"], &["MRN-0042".into()]).await;
    let id = charts[0];

    let mut tablets = Vec::new();
    for (user, role, device) in [
        ("rn.park", "nurse", "tablet-4west-01"),
        ("dr.okafor", "physician", "tablet-4west-09"),
    ] {
        let store = tablet_store(&devices, device);
        let c = client(
            url.clone(),
            &server.token(user, role, &["4west"]),
            device,
            &store,
        );
        eventually("the chart never arrived", || store.contains(id).unwrap()).await;
        assert!(c.wait_until_up_to_date(WAIT).await);
        tablets.push((store, c));
    }
    let mut nurse_events = tablets[0].1.chart_events();

    pc_store
        .update(id, |ch| ch.discharge(&clerk, Timestamp::now(), "home"))
        .unwrap();
    assert!(pc.wait_until_up_to_date(WAIT).await);

    let event = tokio::time::timeout(WAIT, nurse_events.recv())
        .await
        .expect("the nurse's tablet was never told")
        .unwrap();
    assert_eq!(
        event,
        ChartEvent::Left {
            chart: id,
            reason: LeftReason::Discharged
        }
    );
    let (nurse_store, nurse) = &tablets[0];
    assert_eq!(
        nurse_store.departed(id).unwrap(),
        Some(LeftReason::Discharged)
    );
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    assert!(nurse_store
        .update(id, |ch| ch.add_entry(&park, at(90), heart_rate(70)))
        .is_err());
    assert_eq!(nurse.status().borrow().unacknowledged, 0);

    // The physician writes the discharge summary on the discharged chart; it reaches the record.
    let (doctor_store, doctor) = &tablets[1];
    eventually("the discharge never reached the physician", || {
        doctor_store
            .read(id, |ch| ch.encounter().unwrap().status)
            .unwrap()
            == EncounterStatus::Discharged
    })
    .await;
    let okafor = Staff::new("dr.okafor", Role::Physician, "tablet-4west-09");
    doctor_store
        .update(id, |ch| {
            ch.add_entry(
                &okafor,
                Timestamp::now(),
                NewEntry::note(EntryKind::DischargeSummary, "Discharged home, stable."),
            )
        })
        .unwrap();
    assert!(
        doctor.wait_until_up_to_date(WAIT).await,
        "{:?}",
        doctor.status().borrow()
    );
    assert_eq!(doctor_store.departed(id).unwrap(), None);
    let view = on_server(&server, &clerk_token, id);
    assert_eq!(view["entries"].as_array().unwrap().len(), 1);
    for (_, c) in tablets {
        c.stop().await;
    }
    pc.stop().await;
}

/// A nurse admits a patient on her tablet to a ward her sign-in does not cover (the bed
/// manager sent him to 5east while she was offline): the new chart is held whole, the records
/// supervisor sees what it would add, accepts it, and it is in the record and on the tablet's
/// list of what the server has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chart_made_for_another_ward_is_held_whole_and_accepted_into_the_record() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tablet = tablet_store(&devices, "tablet");
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let id = tablet
        .create(admit_at("MRN-0099", "5east", at(0), &park))
        .unwrap();
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let c = client(
        format!("ws://{}/sync", server.addr),
        &nurse_token,
        "tablet-4west-01",
        &tablet,
    );
    let status = until(&c, "the new chart held", |s| s.held.len() == 1).await;
    assert_eq!(status.held[0].reason, HoldReason::OutsideWards);

    let office = server.token("sup.adams", "records_supervisor", &["*"]);
    let (_, body) = http_get(&server.addr, "/api/holds", Some(&office));
    let holds: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let hold = holds[0]["id"].as_i64().unwrap();
    let (code, body) = http_get(&server.addr, &format!("/api/holds/{hold}"), Some(&office));
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["effect"]["words"][0], "changes the whole chart");
    assert_eq!(
        detail["effect"]["patch"][0]["value"]["patient"]["mrn"],
        "MRN-0099"
    );

    let (code, body) = http_post(
        &server.addr,
        &format!("/api/holds/{hold}/accept"),
        Some(&office),
        "{}",
    );
    assert_eq!(code, 200, "{body}");
    let view = on_server(&server, &office, id);
    assert_eq!(view["encounter"]["ward"], "5east");
    assert_eq!(view["patient"]["mrn"], "MRN-0099");
    // Accepted once: the review is in the trail, under the supervisor.
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={id}"),
        Some(&office),
    );
    let trail: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(trail
        .iter()
        .any(|r| r["action"] == "create" && r["user"] == "rn.park"));
    assert_eq!(
        trail
            .iter()
            .filter(|r| r["action"] == "review" && r["user"] == "sup.adams")
            .count(),
        1
    );
    c.stop().await;
}
