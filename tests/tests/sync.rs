//! Devices sync charts with a real server: tokens are checked before the upgrade, a chart
//! reaches every tablet on its ward and no one else, a change outside the writer's role is
//! held for review while the connection carries on, and a restarted server keeps what it
//! acknowledged.

mod common;

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::protocol::{DocSync, DocumentId};
use common::*;

fn night_nurse() -> Staff {
    Staff::new("rn.park", Role::Nurse, "tablet-4west-02")
}

/// How many entries a chart has.
fn entries(doc: Automerge) -> usize {
    Chart::from_automerge(doc)
        .unwrap()
        .view()
        .unwrap()
        .entries
        .len()
}

/// Ana Rivera admitted at the registration PC, on the server as chart `id`: the PC's
/// connection, its copy and its sync state, for tests that go on from there.
async fn admitted_at_the_pc(
    server: &Server,
    id: DocumentId,
    clerk: &str,
) -> (Tablet, Automerge, DocSync) {
    let mut pc = connect(&server.addr, Some(clerk), "records-pc-1", "pc-store")
        .await
        .unwrap();
    let mut doc = admit().doc().clone();
    let mut state = DocSync::new(id, None);
    assert_eq!(pc.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    (pc, doc, state)
}

/// A tablet's copy of a chart, fetched from the server.
async fn fetch(tablet: &mut Tablet, id: DocumentId) -> (Outcome, Automerge, DocSync) {
    let mut doc = Automerge::new();
    let mut state = DocSync::new(id, None);
    let outcome = tablet.sync(id, &mut doc, &mut state).await;
    (outcome, doc, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_a_valid_token_is_refused_before_the_upgrade() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    assert_eq!(
        connect(&server.addr, None, "t1", "s1").await.err(),
        Some(401)
    );
    assert_eq!(
        connect(&server.addr, Some("not-a-token"), "t1", "s1")
            .await
            .err(),
        Some(401)
    );
    // A token from another server's key.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Server::start(elsewhere.path());
    let foreign = other.token("rn.park", "nurse", &["4west"]);
    assert_eq!(
        connect(&server.addr, Some(&foreign), "t1", "s1")
            .await
            .err(),
        Some(401)
    );
    let good = server.token("rn.park", "nurse", &["4west"]);
    assert!(connect(&server.addr, Some(&good), "t1", "s1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_reaches_every_tablet_on_its_ward_and_no_one_else() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();

    // Admitted on the registration PC while offline, then synced up.
    let mut registration = admit();
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let mut pc = connect(&server.addr, Some(&clerk_token), "records-pc-1", "pc-store")
        .await
        .unwrap();
    let mut pc_doc = registration.doc().clone();
    let mut pc_state = DocSync::new(id, None);
    assert_eq!(
        pc.sync(id, &mut pc_doc, &mut pc_state).await,
        Outcome::Synced
    );

    // The night nurse's tablet asks for it, records an observation, and syncs it back.
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(
        &server.addr,
        Some(&nurse_token),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let (outcome, doc, mut state) = fetch(&mut tablet, id).await;
    assert_eq!(outcome, Outcome::Synced);
    let mut chart = Chart::from_automerge(doc).unwrap();
    assert_eq!(chart.patient().unwrap().mrn, "MRN-0042");
    chart
        .add_entry(&night_nurse(), at(30), heart_rate(88))
        .unwrap();
    let mut doc = chart.doc().clone();
    assert_eq!(tablet.sync(id, &mut doc, &mut state).await, Outcome::Synced);

    // The registration PC, still connected, has it pushed.
    assert_eq!(
        pc.sync(id, &mut pc_doc, &mut pc_state).await,
        Outcome::Synced
    );
    registration = Chart::from_automerge(pc_doc).unwrap();
    let entries = registration.view().unwrap().entries;
    assert_eq!(
        (entries.len(), entries[0].content.value.as_deref()),
        (1, Some("88"))
    );

    // An ICU technician gets nothing of it: the same answer as a chart that does not exist.
    let icu_token = server.token("tech.icu", "technician", &["icu"]);
    let mut icu = connect(&server.addr, Some(&icu_token), "records-pc-9", "icu-store")
        .await
        .unwrap();
    let (outcome, doc, _) = fetch(&mut icu, id).await;
    assert_eq!(outcome, Outcome::Unavailable);
    assert!(doc.get_heads().is_empty());
    let (missing, _, _) = fetch(&mut icu, DocumentId::random()).await;
    assert_eq!(missing, Outcome::Unavailable);
}

/// A tampered tablet sends a coding assignment written as a coder under a nurse's token: the
/// server holds it for review, says which chart and why (no chart data), and the same
/// connection goes on syncing another chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_outside_the_writers_role_is_held_and_the_connection_carries_on() {
    use chartsync_core::protocol::{ChartNotice, HoldReason};

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (id, other) = (DocumentId::random(), DocumentId::random());
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let mut pc = connect(&server.addr, Some(&clerk_token), "records-pc-1", "pc-store")
        .await
        .unwrap();
    for chart in [id, other] {
        let mut doc = admit().doc().clone();
        let mut state = DocSync::new(chart, None);
        assert_eq!(pc.sync(chart, &mut doc, &mut state).await, Outcome::Synced);
    }

    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(
        &server.addr,
        Some(&nurse_token),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let (_, doc, mut state) = fetch(&mut tablet, id).await;
    let mut chart = Chart::from_automerge(doc).unwrap();
    let coder = Staff::new("cdr.wu", Role::Coder, "tablet-4west-02");
    chart.assign_code(&coder, at(40), pneumonia()).unwrap();
    let mut doc = chart.doc().clone();
    match tablet.sync(id, &mut doc, &mut state).await {
        Outcome::Notice(ChartNotice::Held {
            hold,
            reason,
            summary,
        }) => {
            assert!(hold > 0);
            assert_eq!(reason, HoldReason::AnotherAuthor);
            assert!(
                !summary.contains("J18.9") && !summary.contains("Rivera"),
                "no chart data in notices: {summary}"
            );
        }
        other => panic!("expected the chart held, got {other:?}"),
    }

    // The connection is still open: the other chart syncs on it, with the nurse's own entry.
    let (outcome, doc, mut state) = fetch(&mut tablet, other).await;
    assert_eq!(outcome, Outcome::Synced);
    let mut chart = Chart::from_automerge(doc).unwrap();
    chart
        .add_entry(&night_nurse(), at(45), heart_rate(72))
        .unwrap();
    let mut doc = chart.doc().clone();
    assert_eq!(
        tablet.sync(other, &mut doc, &mut state).await,
        Outcome::Synced
    );

    // Nothing of the held change reached the record; the nurse's entry did.
    let mut again = connect(
        &server.addr,
        Some(&clerk_token),
        "records-pc-2",
        "pc2-store",
    )
    .await
    .unwrap();
    let (_, doc, _) = fetch(&mut again, id).await;
    assert!(Chart::from_automerge(doc)
        .unwrap()
        .view()
        .unwrap()
        .coding
        .is_empty());
    let (_, doc, _) = fetch(&mut again, other).await;
    assert_eq!(entries(doc), 1);
}

/// The server applies a device's changes to the chart itself and checks them against a copy
/// as it stood: a refused change must leave nothing behind in the chart the server keeps in
/// memory. A second nurse's accepted entry on the same chart, right after, is committed
/// without it, and after a restart the record holds her entry and not the refused code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_leaves_nothing_behind_when_the_next_change_to_that_chart_is_taken() {
    use chartsync_core::protocol::ChartNotice;

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let (_pc, _, _) = admitted_at_the_pc(&server, id, &clerk_token).await;

    // A nurse's tablet sends a coder's change: held.
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(&server.addr, Some(&nurse_token), "tablet-a", "store-a")
        .await
        .unwrap();
    let (_, doc, mut state) = fetch(&mut tablet, id).await;
    let mut chart = Chart::from_automerge(doc).unwrap();
    let coder = Staff::new("cdr.wu", Role::Coder, "tablet-a");
    chart.assign_code(&coder, at(40), pneumonia()).unwrap();
    let mut doc = chart.doc().clone();
    let outcome = tablet.sync(id, &mut doc, &mut state).await;
    assert!(
        matches!(outcome, Outcome::Notice(ChartNotice::Held { .. })),
        "{outcome:?}"
    );

    // Another nurse, on another tablet, charts on the same chart: taken.
    let lee_token = server.token("rn.lee", "nurse", &["4west"]);
    let mut other = connect(&server.addr, Some(&lee_token), "tablet-b", "store-b")
        .await
        .unwrap();
    let (_, doc, mut state) = fetch(&mut other, id).await;
    let mut chart = Chart::from_automerge(doc).unwrap();
    let lee = Staff::new("rn.lee", Role::Nurse, "tablet-b");
    chart.add_entry(&lee, at(45), heart_rate(88)).unwrap();
    let mut doc = chart.doc().clone();
    assert_eq!(other.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    drop((tablet, other));

    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success());
    let server = Server::start(data.path());
    let mut reader = connect(&server.addr, Some(&clerk_token), "records-pc-2", "pc2")
        .await
        .unwrap();
    let (outcome, doc, _) = fetch(&mut reader, id).await;
    assert_eq!(outcome, Outcome::Synced);
    let view = Chart::from_automerge(doc).unwrap().view().unwrap();
    assert_eq!(
        view.entries.len(),
        1,
        "the second nurse's entry is in the record"
    );
    assert!(view.coding.is_empty(), "the refused code is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_every_change_it_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let id = DocumentId::random();
    let server = Server::start(data.path());
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    {
        let mut pc = connect(&server.addr, Some(&clerk_token), "records-pc-1", "pc-store")
            .await
            .unwrap();
        let mut doc = admit().doc().clone();
        let mut state = DocSync::new(id, None);
        assert_eq!(pc.sync(id, &mut doc, &mut state).await, Outcome::Synced);
        let mut tablet = connect(
            &server.addr,
            Some(&nurse_token),
            "tablet-4west-02",
            "tablet-store",
        )
        .await
        .unwrap();
        let (_, doc, mut state) = fetch(&mut tablet, id).await;
        let mut chart = Chart::from_automerge(doc).unwrap();
        for n in 0..5 {
            chart
                .add_entry(&night_nurse(), at(60 + n), heart_rate(70 + n as u32))
                .unwrap();
        }
        let mut doc = chart.doc().clone();
        assert_eq!(tablet.sync(id, &mut doc, &mut state).await, Outcome::Synced);
    }
    // A tablet still connected does not hold the server up.
    let _idle = connect(
        &server.addr,
        Some(&nurse_token),
        "tablet-4west-03",
        "idle-store",
    )
    .await
    .unwrap();
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), stopped)
        .await
        .expect("the server did not stop within 20 s")
        .unwrap();
    assert!(status.success(), "SIGTERM stops the server cleanly");
    // And leaves the store whole in its one file, the write-ahead log folded in.
    let wal = std::fs::metadata(data.path().join("charts.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the write-ahead log was left with {wal} bytes");

    let server = Server::start(data.path());
    // The old tokens still work: the key is the data directory's.
    let mut tablet = connect(
        &server.addr,
        Some(&nurse_token),
        "tablet-4west-07",
        "other-store",
    )
    .await
    .unwrap();
    let (outcome, doc, _) = fetch(&mut tablet, id).await;
    assert_eq!(outcome, Outcome::Synced);
    assert_eq!(entries(doc), 5);
}

/// A tablet asks for a very large chart and then a small one on the same connection: the
/// small one's answer does not wait behind the large one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_chart_does_not_hold_up_the_others_on_the_same_connection() {
    use chartsync_core::protocol::{Incoming, Message};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let data = tempfile::tempdir().unwrap();
    let (huge, small) = {
        let store = open_server_store(data.path());
        let huge = store.create(admit()).unwrap();
        let small = store.create(admit()).unwrap();
        // A long stay: 5,000 observations on the huge chart. The server takes about twenty
        // times as long to load and send it as the small one, a margin that holds when the
        // other tests' servers share the two cores (with 2,000 it failed about once in 12).
        let nurse = night_nurse();
        store
            .update(huge, |c| {
                for n in 0..5000 {
                    c.add_entry(&nurse, at(n), heart_rate(60 + (n % 40) as u32))?;
                }
                Ok(())
            })
            .unwrap();
        (huge, small)
    };
    let server = Server::start(data.path());
    let token = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(
        &server.addr,
        Some(&token),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let remote = tablet.conn.remote().unwrap().peer_id.clone();
    for id in [huge, small] {
        let ask = DocSync::new(id, None)
            .generate(&Automerge::new(), &tablet.peer_id, &remote)
            .unwrap();
        tablet
            .ws
            .send(WsMessage::Binary(ask.encode().into()))
            .await
            .unwrap();
    }
    let first = loop {
        let Some(Ok(WsMessage::Binary(frame))) = tablet.ws.next().await else {
            panic!("the server closed the connection");
        };
        if let Ok(Incoming::Document(Message::Sync { document_id, .. })) =
            tablet.conn.receive(&frame)
        {
            break document_id;
        }
    };
    assert_eq!(first, small, "the small chart waited for the huge one");
}

/// Two observations a nurse records offline both reach the record, even when the server's
/// summary of what it has (automerge's bloom filter, wrong about 1 time in 100) mistakes the
/// first for one it holds, so the tablet sends only the second. The server must then ask for
/// the first by name: dropping the second, as it once did, left the chart one change short for
/// as long as the connection lasted, since a device never sends a change twice on one
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_vitals_reach_the_record_when_the_servers_summary_mistakes_one_for_its_own() {
    use automerge::sync::BloomFilter;

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let _pc = admitted_at_the_pc(&server, id, &clerk).await;

    // The night nurse's tablet takes the chart, then loses the network.
    let park = server.token("rn.park", "nurse", &["4west"]);
    let (doc_b, saved_b) = {
        let mut b = connect(&server.addr, Some(&park), "tablet-4west-02", "tablet-b")
            .await
            .unwrap();
        let (outcome, doc, state) = fetch(&mut b, id).await;
        assert_eq!(outcome, Outcome::Synced);
        (doc, state.state().encode())
    };

    // Meanwhile a colleague's tablet records five observations on the server.
    let lee = server.token("rn.lee", "nurse", &["4west"]);
    let mut a = connect(&server.addr, Some(&lee), "tablet-4west-05", "tablet-a")
        .await
        .unwrap();
    let (_, doc_a, mut state_a) = fetch(&mut a, id).await;
    let before = doc_a.get_heads();
    let mut chart_a = Chart::from_automerge(doc_a).unwrap();
    let colleague = Staff::new("rn.lee", Role::Nurse, "tablet-4west-05");
    for n in 0..5 {
        chart_a
            .add_entry(&colleague, at(100 + n), heart_rate(80 + n as u32))
            .unwrap();
    }
    let mut doc_a = chart_a.doc().clone();
    assert_eq!(a.sync(id, &mut doc_a, &mut state_a).await, Outcome::Synced);
    // What the server's bloom filter will hold when the night nurse's tablet comes back: the
    // changes since the heads they last shared.
    let servers_news: Vec<_> = doc_a
        .get_changes(&before)
        .iter()
        .map(|c| c.hash())
        .collect();
    let bloom = BloomFilter::from_hashes(servers_news.iter());

    // Offline, the night nurse records two observations. The first is one the server's bloom
    // filter mistakes for its own (found by trying values, as a real ward meets it by chance).
    let nurse = night_nurse();
    let mut offline = None;
    'search: for minute in 0..2000 {
        for bpm in [61, 62, 63, 64, 65] {
            let mut chart = Chart::from_automerge(doc_b.clone()).unwrap();
            chart
                .add_entry(&nurse, at(200 + minute), heart_rate(bpm))
                .unwrap();
            let first = chart.heads()[0];
            if !bloom.contains_hash(&first) {
                continue;
            }
            chart
                .add_entry(&nurse, at(201 + minute), heart_rate(bpm + 10))
                .unwrap();
            if bloom.contains_hash(&chart.heads()[0]) {
                continue;
            }
            offline = Some(chart);
            break 'search;
        }
    }
    let chart_b = offline.expect("no change among 10,000 that the bloom filter mistakes");

    // The tablet comes back on a new connection, resuming from its stored sync state.
    let mut b = connect(&server.addr, Some(&park), "tablet-4west-02", "tablet-b")
        .await
        .unwrap();
    let mut doc_b = chart_b.doc().clone();
    let stored = automerge::sync::State::decode(&saved_b).unwrap();
    let mut state_b = DocSync::new(id, Some(stored));
    let synced = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        b.sync(id, &mut doc_b, &mut state_b),
    )
    .await;
    assert_eq!(
        synced.ok(),
        Some(Outcome::Synced),
        "the sync never went quiet"
    );

    // The record has all seven observations.
    let mut records = connect(&server.addr, Some(&clerk), "records-pc-2", "pc2-store")
        .await
        .unwrap();
    let (_, doc, _) = fetch(&mut records, id).await;
    assert_eq!(
        entries(doc),
        7,
        "the server is missing an offline observation"
    );
}

/// A coder's tablet knows a newer ICD-10-CM year than the server (the tables change every
/// 1 October): the code it records is one the server's table does not have. The server does
/// not refuse it: it holds it, and a records supervisor accepts it into the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_from_a_newer_table_year_is_held_for_review_and_accepted_not_refused() {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    use chartsync_core::protocol::{ChartNotice, HoldReason};

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let _pc = admitted_at_the_pc(&server, id, &clerk).await;

    let coder_token = server.token("cdr.wu", "coder", &["4west"]);
    let mut tablet = connect(
        &server.addr,
        Some(&coder_token),
        "coding-pc-2",
        "coder-store",
    )
    .await
    .unwrap();
    let (_, doc, mut state) = fetch(&mut tablet, id).await;
    let mut chart = Chart::from_automerge(doc).unwrap();
    let coder = Staff::new("cdr.wu", Role::Coder, "coding-pc-2");
    let record = chart.assign_code(&coder, at(40), pneumonia()).unwrap();
    // Its table has "J18.98", which the server's does not.
    let mut doc = chart.doc().clone();
    let mut tx = doc.transaction();
    let coding = tx.get(automerge::ROOT, "coding").unwrap().unwrap().1;
    let obj = tx.get(&coding, record.as_str()).unwrap().unwrap().1;
    tx.put(&obj, "code", "J18.98").unwrap();
    tx.commit();
    let hold = match tablet.sync(id, &mut doc, &mut state).await {
        Outcome::Notice(ChartNotice::Held { hold, reason, .. }) => {
            assert_eq!(reason, HoldReason::InvalidCode);
            hold
        }
        other => panic!("expected the code held, got {other:?}"),
    };
    let supervisor = server.token("sup.adams", "records_supervisor", &["4west"]);
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/holds/{hold}/accept"),
        Some(&supervisor),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) = http_get(&server.addr, &format!("/api/charts/{id}"), Some(&clerk));
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["coding"][0]["code"], "J18.98");
}

/// A client that ignores being told a chart left (an app that does not know our notices) and
/// keeps charting on it: what it writes after the notice builds on what it had then, so the
/// server holds it at once, rather than taking it as "written before the transfer" for the
/// 72 hours that grace allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_ignores_being_told_the_chart_left_gets_its_later_writes_held() {
    use chartsync_core::protocol::{ChartNotice, HoldReason, LeftReason};

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk = server.token("him.jones", "technician", &["4west", "5east"]);
    let (mut pc, pc_doc, mut pc_state) = admitted_at_the_pc(&server, id, &clerk).await;

    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(
        &server.addr,
        Some(&nurse),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let (_, doc, state) = fetch(&mut tablet, id).await;
    let saved = state.state().encode();

    // The patient moves to 5east.
    let mut chart = Chart::from_automerge(pc_doc).unwrap();
    let clerk_staff = Staff::new("him.jones", Role::Technician, "records-pc-1");
    chart
        .transfer(&clerk_staff, at(50), "5east", Some("1"))
        .unwrap();
    let mut pc_doc = chart.doc().clone();
    assert_eq!(
        pc.sync(id, &mut pc_doc, &mut pc_state).await,
        Outcome::Synced
    );

    // The tablet comes back with nothing new: it is told the chart left.
    let mut tablet = connect(
        &server.addr,
        Some(&nurse),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let mut doc = doc;
    let mut state = DocSync::new(id, Some(automerge::sync::State::decode(&saved).unwrap()));
    match tablet.sync(id, &mut doc, &mut state).await {
        Outcome::Notice(ChartNotice::Left { reason, .. }) => {
            assert_eq!(reason, LeftReason::Transferred)
        }
        other => panic!("expected to be told the chart left, got {other:?}"),
    }

    // It charts on regardless, on a new connection: held at once.
    let mut chart = Chart::from_automerge(doc).unwrap();
    chart
        .add_entry(&night_nurse(), at(55), heart_rate(77))
        .unwrap();
    let mut doc = chart.doc().clone();
    let mut tablet = connect(
        &server.addr,
        Some(&nurse),
        "tablet-4west-02",
        "tablet-store",
    )
    .await
    .unwrap();
    let mut state = DocSync::new(id, Some(automerge::sync::State::decode(&saved).unwrap()));
    match tablet.sync(id, &mut doc, &mut state).await {
        Outcome::Notice(ChartNotice::Held {
            reason, summary, ..
        }) => {
            assert_eq!(reason, HoldReason::OutsideWards);
            assert!(summary.contains("told"), "{summary}");
        }
        other => panic!("expected the write held, got {other:?}"),
    }
    let (_, view) = http_get(&server.addr, &format!("/api/charts/{id}"), Some(&clerk));
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert!(view["entries"].as_array().unwrap().is_empty());
}

/// A chart whose history is larger than one outgoing message (here 16 KiB; by default 4 MiB,
/// well inside the 16 MiB frame limit) reaches a new tablet whole, in several messages, none
/// past the limit by more than one change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_larger_than_a_message_reaches_a_new_tablet_whole() {
    let data = tempfile::tempdir().unwrap();
    let (id, largest_change) = {
        let store = open_server_store(data.path());
        let id = store.create(admit()).unwrap();
        let nurse = night_nurse();
        for n in 0..6 {
            store
                .update(id, |c| {
                    c.add_entry(&nurse, at(n), long_note(20_000, n as u64 + 1))
                })
                .unwrap();
        }
        let largest = store
            .read(id, |c| {
                c.doc()
                    .get_changes(&[])
                    .iter()
                    .map(|ch| ch.raw_bytes().len())
                    .max()
                    .unwrap()
            })
            .unwrap();
        (id, largest)
    };
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--max-outgoing-message-kib", "16"],
    );
    let token = server.token("rn.park", "nurse", &["4west"]);
    let mut tablet = connect(&server.addr, Some(&token), "tablet-4west-02", "tab")
        .await
        .unwrap();
    let (outcome, doc, _) = fetch(&mut tablet, id).await;
    assert_eq!(outcome, Outcome::Synced);
    let chart = Chart::from_automerge(doc).unwrap();
    assert_eq!(chart.view().unwrap().entries.len(), 6);
    let frames = &tablet.received;
    assert!(frames.len() >= 4, "{frames:?}");
    assert!(
        frames
            .iter()
            .all(|&f| f <= (16 << 10) + largest_change + 1024),
        "{frames:?} (largest change {largest_change})"
    );
}
