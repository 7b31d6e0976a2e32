//! What one connection may cost the server (RELIABILITY.md, issue 14): each bound is a
//! `serve` option with a safe default, counted in the metrics, and exceeding it closes the
//! connection without costing anything more.

mod common;

use automerge::sync::SyncDoc;
use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::client::SyncState;
use chartsync_core::protocol::{DocSync, DocumentId, HoldReason, Message};
use common::*;

/// A chart on icu, made by a records technician's PC and synced to the server.
async fn a_chart_on_icu(server: &Server, devices: &tempfile::TempDir) -> DocumentId {
    let url = format!("ws://{}/sync", server.addr);
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let pc_store = tablet_store(devices, "pc");
    let icu = pc_store
        .create(admit_at("MRN-0900", "icu", at(0), &clerk))
        .unwrap();
    let token = server.token("him.jones", "technician", &["icu"]);
    let mut config = chartsync_core::client::ClientConfig::new(url, &token, "records-pc-1");
    config.wards = vec!["icu".into()];
    let pc = chartsync_core::client::SyncClient::start(pc_store.clone(), config);
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;
    icu
}

/// What a peer can see of an answer: its kind and its bytes, not the document it names.
fn seen(answer: Option<Message>) -> Option<(&'static str, Vec<u8>)> {
    Some(match answer? {
        Message::Request { data, .. } => ("request", data),
        Message::Sync { data, .. } => ("sync", data),
        Message::DocUnavailable { .. } => ("doc-unavailable", Vec::new()),
        Message::Error { message, .. } => ("error", message.into_bytes()),
        Message::Ephemeral { data, .. } => ("ephemeral", data),
        other => panic!("unexpected answer {other:?}"),
    })
}

/// rn.park's token for 4west, and a connection of hers.
async fn nurse_on_4west(server: &Server) -> (String, Tablet) {
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let tablet = connect(&server.addr, Some(&nurse), "tablet-4west-02", "tab")
        .await
        .unwrap();
    (nurse, tablet)
}

/// Requests up to 60 documents named by `next`, one at a time: the first 50 are answered as
/// missing, the 51st closes the connection (the default bound on denials).
async fn flood_is_closed_after_50(tablet: &mut Tablet, next: impl Fn() -> DocumentId) {
    let mut answers = Vec::new();
    for _ in 0..60 {
        let id = next();
        let outcome = tablet
            .sync(id, &mut Automerge::new(), &mut DocSync::new(id, None))
            .await;
        let refused = matches!(outcome, Outcome::Refused(_));
        answers.push(outcome);
        if refused {
            break;
        }
    }
    assert_eq!(answers.len(), 51, "closed after the 50th in the window");
    assert!(answers[..50].iter().all(|a| *a == Outcome::Unavailable));
    assert!(
        matches!(&answers[50], Outcome::Refused(m) if m.contains("too many requests")),
        "{:?}",
        answers[50]
    );
}

/// A nurse's token probes a chart on another ward, and an id that does not exist, with each
/// kind of first message a device can send about a document it has not got: the answers are
/// the same, byte for byte. A made-up chart sent under the other ward's id is refused and
/// changes nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_on_another_ward_is_answered_as_an_id_that_does_not_exist() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let icu = a_chart_on_icu(&server, &devices).await;
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let rn = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    // A chart the server has never seen: its heads are made up as far as the server knows.
    let made_up = admit_at("MRN-0901", "4west", at(0), &rn);
    let empty = Automerge::new();
    let probes = [
        ("a request", true, &empty),
        ("a sync that has nothing", false, &empty),
        ("a sync naming heads", false, made_up.doc()),
    ];
    for (i, (what, request, doc)) in probes.into_iter().enumerate() {
        let mut answers = Vec::new();
        for (k, id) in [icu, DocumentId::random()].into_iter().enumerate() {
            let mut tablet = connect(
                &server.addr,
                Some(&nurse),
                &format!("tablet-{i}-{k}"),
                &format!("tab-{i}-{k}"),
            )
            .await
            .unwrap();
            let server_peer = tablet.conn.remote().unwrap().peer_id.clone();
            let data = doc
                .generate_sync_message(&mut automerge::sync::State::new())
                .unwrap()
                .encode();
            let probe = Message::about_document(request, id, &tablet.peer_id, &server_peer, data);
            answers.push(seen(tablet.ask(&probe).await));
        }
        assert!(answers[0].is_some(), "{what}: no answer");
        assert_eq!(answers[0], answers[1], "{what}");
    }

    // Past the first answer, only a whole chart tells them apart: a new chart under an id in
    // use is refused, and the chart under that id is untouched. One on a third ward is refused
    // too, not held under that id, where a supervisor would find it beside a chart it has
    // nothing to do with.
    let elsewhere = admit_at("MRN-0903", "5east", at(0), &rn);
    for (k, chart) in [&made_up, &elsewhere].into_iter().enumerate() {
        let mut tablet = connect(&server.addr, Some(&nurse), &format!("t-{k}"), "tab")
            .await
            .unwrap();
        let outcome = tablet
            .sync(icu, &mut chart.doc().clone(), &mut DocSync::new(icu, None))
            .await;
        assert!(
            matches!(&outcome, Outcome::Refused(m) if m.contains("cannot be stored under this id")),
            "{outcome:?}"
        );
    }
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let (_, holds) = http_get(
        &server.addr,
        &format!("/api/holds?status=all&chart={icu}"),
        Some(&supervisor),
    );
    assert!(!holds.contains("MRN-0903"), "{holds}");
    let icu_token = server.token("him.jones", "technician", &["icu"]);
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/charts/{icu}"),
        Some(&icu_token),
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("MRN-0900") && !body.contains("MRN-0901"),
        "{body}"
    );
}

/// A flood of requests for ids that do not exist meets the same bound as a flood for a chart
/// on another ward: when the connection closes says nothing about which ids exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_for_ids_that_do_not_exist_is_closed_at_the_same_bound() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (_, mut tablet) = nurse_on_4west(&server).await;
    flood_is_closed_after_50(&mut tablet, DocumentId::random).await;
}

/// A nurse's token asks again and again for a chart on another ward: every answer is the one
/// a missing chart gets, the audit trail gets one row for the chart and one for the burst (not
/// one per request), and past the bound the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_for_a_chart_on_another_ward_is_audited_once_and_closed() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let icu = a_chart_on_icu(&server, &devices).await;

    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(&server.addr, Some(&nurse), "tablet-4west-02", "tab")
        .await
        .unwrap();
    let before = server.metric("connections_closed_at_bounds_total");
    flood_is_closed_after_50(&mut tablet, || icu).await;
    assert_eq!(
        server.metric("connections_closed_at_bounds_total") - before,
        1.0
    );
    assert!(server.metric("denials_total") >= 51.0);

    // One row with the chart, one for the rest of the burst.
    server.stop();
    let mut denied: Vec<_> = open_server_store(data.path())
        .audit_of_user("rn.park", 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == chartsync_core::store::AuditAction::Deny)
        .collect();
    denied.sort_by_key(|r| r.seq);
    let rows: Vec<(Option<String>, String)> = denied
        .into_iter()
        .map(|r| (r.chart.map(|c| c.to_string()), r.detail.unwrap_or_default()))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some(icu.to_string().as_str()));
    assert!(rows[1].1.starts_with("50 more requests"), "{rows:?}");
}

/// One connection names more documents than the bound: closed, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_naming_more_documents_than_the_bound_is_closed() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--max-documents-per-connection", "5"],
    );
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(&server.addr, Some(&nurse), "tablet-4west-02", "tab")
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let id = DocumentId::random();
        outcomes.push(
            tablet
                .sync(id, &mut Automerge::new(), &mut DocSync::new(id, None))
                .await,
        );
    }
    assert!(
        outcomes[..5].iter().all(|o| *o == Outcome::Unavailable),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[5], Outcome::Refused(m) if m.contains("too many documents")),
        "{:?}",
        outcomes[5]
    );
    assert_eq!(server.metric("connections_closed_at_bounds_total"), 1.0);
}

/// A sign-in holds a bounded number of connections at once: the next is refused with 429
/// until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sign_in_holds_a_bounded_number_of_connections() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--max-connections-per-user", "2"],
    );
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let first = connect(&server.addr, Some(&nurse), "tablet-a", "a")
        .await
        .unwrap();
    let _second = connect(&server.addr, Some(&nurse), "tablet-b", "b")
        .await
        .unwrap();
    assert_eq!(
        connect(&server.addr, Some(&nurse), "tablet-c", "c")
            .await
            .err(),
        Some(429)
    );
    // Another person is not affected.
    let other = server.token("rn.lee", "nurse", &["4west"]);
    assert!(connect(&server.addr, Some(&other), "tablet-d", "d")
        .await
        .is_ok());
    // One closes: there is room again.
    drop(first);
    eventually("the closed connection's slot came back", || {
        server.metric("connections") < 3.0
    })
    .await;
    assert!(connect(&server.addr, Some(&nurse), "tablet-e", "e")
        .await
        .is_ok());
}

/// A live tablet with nothing to say stays connected (it answers the server's pings); a peer
/// that stops answering is closed after the idle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_but_live_tablet_stays_and_a_silent_peer_is_closed() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--idle-timeout", "2s"]);
    let url = format!("ws://{}/sync", server.addr);
    let token = server.token("rn.park", "nurse", &["4west"]);
    let store = tablet_store(&devices, "t");
    let c = client(url, &token, "tablet-4west-01", &store);
    assert!(c.wait_until_up_to_date(WAIT).await);
    let opened = server.metric("connections_opened_total");

    // A peer that joins and then reads nothing, so answers no ping.
    let silent = connect(&server.addr, Some(&token), "tablet-silent", "s")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(
        server.metric("connections_closed_at_bounds_total"),
        1.0,
        "the silent peer was closed"
    );
    assert_eq!(
        server.metric("connections_opened_total"),
        opened + 1.0,
        "the live tablet did not reconnect"
    );
    drop(silent);
    c.stop().await;
}

/// Charts a connection starts sending but never finishes hold memory (changes waiting for
/// those they build on): past the bound the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_leaving_too_many_new_charts_unfinished_is_closed() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--max-pending-charts", "2"]);
    let nurse = server.token("him.jones", "technician", &["4west"]);
    let mut tablet = connect(&server.addr, Some(&nurse), "records-pc-1", "pc")
        .await
        .unwrap();
    let server_id = tablet.conn.remote().unwrap().peer_id.clone();
    // Three new charts, each sent without its first change: the rest waits for it.
    for _ in 0..3 {
        let chart = admit();
        let mut later = chart.doc().clone();
        later
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                automerge::transaction::Transactable::put(
                    tx,
                    automerge::ROOT,
                    "note",
                    "written later",
                )?;
                Ok(())
            })
            .unwrap();
        let last = later.get_last_local_change().unwrap().raw_bytes().to_vec();
        let message = automerge::sync::Message {
            heads: later.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![last].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        let id = DocumentId::random();
        let frame = chartsync_core::protocol::Message::Sync {
            document_id: id,
            sender_id: "records-pc-1".into(),
            target_id: server_id.clone(),
            data: message.encode(),
            proofs: None,
        };
        tablet
            .ws
            .send(WsMessage::Binary(frame.encode().into()))
            .await
            .unwrap();
    }
    eventually("the connection was not closed", || {
        server.metric("connections_closed_at_bounds_total") == 1.0
    })
    .await;
}

/// A tablet that made more new charts offline than that bound sends them all at once (each
/// announced, then sent when the server asks): they all reach the record, and the
/// connection is not closed. Closing it would loop: the tablet reconnects and sends the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_with_more_new_charts_than_the_bound_sends_them_all() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--max-pending-charts", "2"]);
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let store = std::sync::Arc::new(
        chartsync_core::store::ChartStore::open(devices.path().join("pc.db"), Default::default())
            .unwrap(),
    );
    let clerk_at_pc = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let ids: Vec<_> = (0..40)
        .map(|n| {
            let chart = admit_at(&format!("MRN-{n:04}"), "4west", at(n), &clerk_at_pc);
            store.create(chart).unwrap()
        })
        .collect();
    let c = synced(&server, &clerk, "records-pc-1", &store).await;
    assert_eq!(server.metric("connections_closed_at_bounds_total"), 0.0);
    assert_eq!(server.metric("connections_opened_total"), 1.0);
    for id in ids {
        on_server(&server, &clerk, id);
    }
    c.stop().await;
}

/// A peer id is any text the peer chose: the audit trail shows it printable and short, so a
/// newline or markup in it cannot forge a line of a log or a report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_id_reaches_the_audit_trail_printable_and_short() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let sneaky = format!(
        "pc\n2026-12-01 admin.kim read everything<script>{}",
        "x".repeat(200)
    );
    let mut pc = connect(&server.addr, Some(&clerk), &sneaky, "pc")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = admit().doc().clone();
    assert_eq!(
        pc.sync(id, &mut doc, &mut DocSync::new(id, None)).await,
        Outcome::Synced
    );
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (_, body) = http_get(&server.addr, &format!("/api/audit?chart={id}"), Some(&sup));
    let trail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let device = trail[0]["device"].as_str().unwrap();
    assert_eq!(device.len(), 64, "{device}");
    assert!(
        device.starts_with("pc_2026-12-01_admin.kim_read_everything_script_"),
        "{device}"
    );
}

/// A compressed change chunk (automerge's storage format, type 2) of `inflated` zero bytes:
/// a few hundred kilobytes of deflate.
fn deflate_bomb(inflated: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; inflated]).unwrap();
    let body = e.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    leb128::write::unsigned(&mut chunk, body.len() as u64).unwrap();
    chunk.extend_from_slice(&body);
    chunk
}

/// A device sends a change whose few hundred kilobytes would inflate to 200 MiB: it is
/// refused before anything inflates it, and the device told so about that chart (which
/// bound, and how much it takes); the refusal is counted, the connection stays up, and the
/// server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_inflate_past_the_bound_is_refused_before_it_is_inflated() {
    use chartsync_core::protocol::{ChartNotice, SizeBound};
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (nurse, mut tablet) = nurse_on_4west(&server).await;
    let server_peer = tablet.conn.remote().unwrap().peer_id.clone();
    let rn = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let chart = admit_at("MRN-0902", "4west", at(0), &rn);
    let mut message = chart
        .doc()
        .generate_sync_message(&mut automerge::sync::State::new())
        .unwrap();
    let bomb = deflate_bomb(200 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes on the wire", bomb.len());
    message.changes = vec![bomb].into();
    let id = DocumentId::random();
    let probe = Message::about_document(false, id, &tablet.peer_id, &server_peer, message.encode());
    let answer = tablet.ask(&probe).await;
    let notice = match &answer {
        Some(Message::Ephemeral {
            document_id, data, ..
        }) if *document_id == id => ChartNotice::decode(data),
        _ => None,
    };
    assert_eq!(
        notice,
        Some(ChartNotice::TooLarge {
            bound: SizeBound::Change,
            limit: 16 << 20
        }),
        "{answer:?}"
    );
    assert_eq!(server.metric("messages_refused_too_large_total"), 1.0);
    assert_eq!(server.metric("connections_closed_at_bounds_total"), 0.0);
    // The same connection still syncs, and the server is there for everyone else.
    let outcome = tablet
        .sync(id, &mut chart.doc().clone(), &mut DocSync::new(id, None))
        .await;
    assert_eq!(outcome, Outcome::Synced);
    let mut next = connect(&server.addr, Some(&nurse), "tablet-4west-03", "tab3")
        .await
        .unwrap();
    let other = DocumentId::random();
    let chart = admit_at("MRN-0903", "4west", at(0), &rn);
    let outcome = next
        .sync(
            other,
            &mut chart.doc().clone(),
            &mut DocSync::new(other, None),
        )
        .await;
    assert_eq!(outcome, Outcome::Synced);
}

/// A tablet back on the network sends eight new charts with long notes at once, about 500 KB,
/// faster than the server checks and stores them. What the server holds received and not yet
/// handled stays within `--max-queued-kib`: past it, the server reads nothing more until it
/// catches up (the device's sends wait on TCP). Every chart is stored, and nothing stays
/// queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_bound_waits_on_the_server_and_every_chart_is_stored() {
    use automerge::sync::SyncDoc;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    const NOTE: usize = 100_000;
    const BOUND: f64 = (64 << 10) as f64;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--max-queued-kib", "64"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let rn = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let mut tablet = connect(&server.addr, Some(&nurse), "tablet-4west-02", "tab")
        .await
        .unwrap();
    let server_peer = tablet.conn.remote().unwrap().peer_id.clone();
    let mut sent = 0;
    for k in 0..8u64 {
        let mut chart = admit_at(&format!("MRN-1{k:03}"), "4west", at(0), &rn);
        chart.add_entry(&rn, at(5), long_note(NOTE, k + 1)).unwrap();
        // The whole chart in one message, as automerge sends a document to a peer that has
        // nothing of it.
        let mut message = chart
            .doc()
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap();
        message.changes = vec![chart.save()].into();
        let frame = Message::about_document(
            false,
            DocumentId::random(),
            &tablet.peer_id,
            &server_peer,
            message.encode(),
        )
        .encode();
        sent += frame.len();
        tablet
            .ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .unwrap();
    }
    assert!(sent as f64 > 4.0 * BOUND, "{sent} bytes sent");

    let (status, body) = (0..600)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            http_get(&server.addr, "/api/charts?ward=4west", Some(&nurse))
        })
        .find(|(_, body)| body.matches("MRN-1").count() == 8)
        .expect("every chart stored");
    assert_eq!(status, 200, "{body}");
    let peak = server.metric("queued_bytes_peak");
    assert!(peak <= BOUND, "{peak} bytes waited");
    assert!(peak >= BOUND / 2.0, "the burst waited at the bound: {peak}");
    let deadline = std::time::Instant::now() + WAIT;
    while server.metric("queued_bytes") > 0.0 {
        assert!(std::time::Instant::now() < deadline, "bytes left waiting");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A sync client for `store` under `token`, once it is up to date with the server.
async fn synced(
    server: &Server,
    token: &str,
    peer: &str,
    store: &std::sync::Arc<chartsync_core::store::ChartStore>,
) -> chartsync_core::client::SyncClient {
    let c = client(format!("ws://{}/sync", server.addr), token, peer, store);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    c
}

/// How many entries the record has of chart `id`.
fn entries_on_server(server: &Server, token: &str, id: ChartId) -> usize {
    on_server(server, token, id)["entries"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Charts a tablet has already synced once, with `nurse` signed in for what comes next.
async fn synced_charts(
    server: &Server,
    store: &std::sync::Arc<chartsync_core::store::ChartStore>,
    n: usize,
) -> Vec<ChartId> {
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let at_pc = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let ids: Vec<_> = (0..n)
        .map(|k| {
            let chart = admit_at(&format!("MRN-{k:04}"), "4west", at(k as i64), &at_pc);
            store.create(chart).unwrap()
        })
        .collect();
    let c = synced(&server, &clerk, "tablet-1", &store).await;
    c.stop().await;
    ids
}

/// A change larger than the server takes (here one note past its bound on inflated bytes)
/// is refused whole, and the tablet told so about that chart: the connection stays up, the
/// tablet's other charts sync, and the chart is held on the tablet, named, not sent in a
/// loop. Once the bound is raised, its next connection delivers it and the hold clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_larger_than_the_server_takes_is_held_on_the_tablet_not_sent_in_a_loop() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let tight = ["--max-inflated-kib-per-change", "16"];
    let server = Server::start_with(data.path(), "127.0.0.1:0", &tight);
    let store = tablet_store(&devices, "tablet-1");
    let ids = synced_charts(&server, &store, 2).await;
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-1");
    store
        .update(ids[0], |c| {
            c.add_entry(&nurse, at(60), compressible_note(20_000))
        })
        .unwrap();
    store
        .update(ids[1], |c| c.add_entry(&nurse, at(61), heart_rate(88)))
        .unwrap();
    let token = server.token("rn.park", "nurse", &["4west"]);
    let c = client(
        format!("ws://{}/sync", server.addr),
        &token,
        "tablet-1",
        &store,
    );
    let status = until(&c, "the large chart held on the tablet", |s| {
        s.held.iter().any(|h| h.chart == ids[0])
    })
    .await;
    let held = status.held.iter().find(|h| h.chart == ids[0]).unwrap();
    assert_eq!(held.reason, HoldReason::TooLarge);
    assert_eq!(held.hold, None, "nothing is in the server's holding area");
    assert!(
        held.summary.contains("larger than the server accepts"),
        "{}",
        held.summary
    );
    // The other chart's change reached the record on the same connection.
    eventually("the other chart's heart rate reached the record", || {
        entries_on_server(&server, &token, ids[1]) == 1
    })
    .await;
    // Refused once as sent, once more within the bound the server named; then no more.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(server.metric("messages_refused_too_large_total"), 2.0);
    assert_eq!(server.metric("connections_closed_at_bounds_total"), 0.0);
    assert_eq!(
        server.metric("connections_opened_total"),
        2.0,
        "the tablet reconnected"
    );
    assert_eq!(entries_on_server(&server, &token, ids[0]), 0);
    assert_eq!(c.status().borrow().state, SyncState::WaitingForReview);

    // IT raises the bound: on the tablet's next connection the note goes through.
    let addr = server.addr.clone();
    server.stop();
    let server = Server::start_with(
        data.path(),
        &addr,
        &["--max-inflated-kib-per-change", "2048"],
    );
    let status = until(&c, "the hold cleared", |s| {
        s.held.is_empty() && s.state == SyncState::UpToDate
    })
    .await;
    assert_eq!(status.unacknowledged, 0);
    assert_eq!(entries_on_server(&server, &token, ids[0]), 1);
    c.stop().await;
}

/// A message carrying more than the server takes in one (here the whole chart, sent as one
/// document after a shift's long notes, past a bound of 64 KiB inflated) is refused whole,
/// and the tablet sends it again in smaller messages on the same connection: everything
/// arrives, nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_server_takes_is_sent_again_in_smaller_ones() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--max-inflated-kib-per-message", "64"],
    );
    let store = tablet_store(&devices, "tablet-1");
    let ids = synced_charts(&server, &store, 1).await;
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-1");
    for k in 0..3 {
        store
            .update(ids[0], |c| {
                c.add_entry(&nurse, at(60 + k), compressible_note(40_000))
            })
            .unwrap();
    }
    let token = server.token("rn.park", "nurse", &["4west"]);
    let c = synced(&server, &token, "tablet-1", &store).await;
    let status = c.status().borrow().clone();
    assert!(status.held.is_empty(), "{status:?}");
    assert_eq!(status.unacknowledged, 0);
    assert_eq!(entries_on_server(&server, &token, ids[0]), 3);
    assert_eq!(server.metric("messages_refused_too_large_total"), 1.0);
    assert_eq!(server.metric("connections_opened_total"), 2.0);
    c.stop().await;
}

/// A tablet that takes less in one message than the server sends (its `content_bounds`,
/// here 16 KiB a change) is sent a chart with a long note another tablet wrote: that chart
/// is held on it as behind the record, named in its status, and the connection stays up,
/// so the tablet's other chart still gets its new heart rate. Ending the connection would
/// loop: the server sends the same on every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_past_what_a_tablet_takes_is_held_there_as_behind_not_looped() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let writer = tablet_store(&devices, "tablet-1");
    let ids = synced_charts(&server, &writer, 2).await;
    let token = server.token("rn.park", "nurse", &["4west"]);
    let small = tablet_store(&devices, "tablet-2");
    let start_small = || {
        let mut config = chartsync_core::client::ClientConfig::new(
            format!("ws://{}/sync", server.addr),
            &token,
            "tablet-2",
        );
        config.wards = vec!["4west".into()];
        config.backoff_min = std::time::Duration::from_millis(100);
        config.content_bounds.inflated_bytes_per_change = 16 * 1024;
        chartsync_core::client::SyncClient::start(small.clone(), config)
    };
    let c = start_small();
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    c.stop().await;
    assert!(ids.iter().all(|id| small.contains(*id).unwrap()));

    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-1");
    writer
        .update(ids[0], |c| {
            c.add_entry(&nurse, at(60), compressible_note(20_000))
        })
        .unwrap();
    writer
        .update(ids[1], |c| c.add_entry(&nurse, at(61), heart_rate(92)))
        .unwrap();
    synced(&server, &token, "tablet-1", &writer)
        .await
        .stop()
        .await;

    let opened = server.metric("connections_opened_total");
    let c = start_small();
    let status = until(&c, "the long note's chart held as behind", |s| {
        s.held.iter().any(|h| h.chart == ids[0])
    })
    .await;
    let held = status.held.iter().find(|h| h.chart == ids[0]).unwrap();
    assert_eq!(held.reason, HoldReason::TooLarge);
    assert!(
        held.summary.contains("behind the record"),
        "{}",
        held.summary
    );
    eventually(
        "the other chart's heart rate reached the small tablet",
        || {
            small
                .read(ids[1], |c| c.view().unwrap().entries.len())
                .unwrap()
                == 1
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(server.metric("connections_opened_total"), opened + 1.0);
    assert_eq!(
        small
            .read(ids[0], |c| c.view().unwrap().entries.len())
            .unwrap(),
        0
    );
    assert_eq!(c.status().borrow().state, SyncState::WaitingForReview);
    c.stop().await;
}
