//! Devices sync charts with a real server: tokens are checked before the upgrade, a chart
//! reaches every tablet on its ward and no one else, a change outside the writer's role is
//! refused with the device disconnected, and a restarted server keeps what it acknowledged.

mod common;

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::protocol::{DocSync, DocumentId};
use common::*;

fn night_nurse() -> Staff {
    Staff::new("rn.park", Role::Nurse, "tablet-4west-02")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_outside_the_writers_role_is_refused_and_the_device_disconnected() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let id = DocumentId::random();
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let mut pc = connect(&server.addr, Some(&clerk_token), "records-pc-1", "pc-store")
        .await
        .unwrap();
    let mut doc = admit().doc().clone();
    let mut state = DocSync::new(id, None);
    assert_eq!(pc.sync(id, &mut doc, &mut state).await, Outcome::Synced);

    // A tampered tablet signed in as a nurse sends a coding assignment written as a coder.
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
        Outcome::Refused(text) => {
            assert!(text.contains("refused"), "{text}");
            assert!(
                !text.contains("J18.9") && !text.contains("Rivera"),
                "no chart data in errors: {text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Nothing of it reached the server.
    let mut again = connect(
        &server.addr,
        Some(&clerk_token),
        "records-pc-2",
        "pc2-store",
    )
    .await
    .unwrap();
    let (outcome, doc, _) = fetch(&mut again, id).await;
    assert_eq!(outcome, Outcome::Synced);
    assert!(Chart::from_automerge(doc)
        .unwrap()
        .view()
        .unwrap()
        .coding
        .is_empty());
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
    assert_eq!(
        Chart::from_automerge(doc)
            .unwrap()
            .view()
            .unwrap()
            .entries
            .len(),
        5
    );
}

/// A tablet asks for a very large chart and then a small one on the same connection: the
/// small one's answer does not wait behind the large one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_chart_does_not_hold_up_the_others_on_the_same_connection() {
    use chartsync_core::protocol::{Incoming, Message};
    use chartsync_core::store::{ChartStore, StoreOptions};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let data = tempfile::tempdir().unwrap();
    let (huge, small) = {
        let store =
            ChartStore::open(data.path().join("charts.db"), StoreOptions::default()).unwrap();
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
