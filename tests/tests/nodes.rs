//! Several server nodes on one PostgreSQL database (docs/adr/0011): a commit made through one
//! node reaches the tablets connected to another, whichever way, and work done on both at once
//! converges. Ignored unless asked for: scripts/test.sh runs it with `--ignored` on its
//! PostgreSQL cluster.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::client::SyncClient;
use chartsync_core::store::ChartStore;
use common::*;

/// A device syncing through `server`.
fn through(server: &Server, token: &str, peer: &str, store: &Arc<ChartStore>) -> SyncClient {
    client(format!("ws://{}/sync", server.addr), token, peer, store)
}

/// Two nodes on one database, sharing their keys as docs/deploy.md has them (a token or a
/// certificate from one is good on the other): node B's data directory names node A's
/// database, and holds a copy of A's keys.
fn two_nodes() -> (Server, Server, [tempfile::TempDir; 2]) {
    let a_data = tempfile::tempdir().unwrap();
    let b_data = tempfile::tempdir().unwrap();
    let url = test_database(a_data.path()).unwrap_or_else(|| {
        panic!("set {POSTGRES} to a PostgreSQL server (scripts/test.sh does) to run this test")
    });
    let a = Server::start(a_data.path());
    for key in ["token.key", "cert.key"] {
        std::fs::copy(a_data.path().join(key), b_data.path().join(key)).unwrap();
    }
    std::fs::write(b_data.path().join("test-database-url"), &url).unwrap();
    let b = Server::start(b_data.path());
    (a, b, [a_data, b_data])
}

/// A patient admitted at the registration PC, through `server`: the PC's store, the chart
/// and the PC's connection.
async fn admitted_through(
    server: &Server,
    devices: &tempfile::TempDir,
) -> (Arc<ChartStore>, ChartId, SyncClient) {
    let pc_store = tablet_store(devices, "pc");
    let id = pc_store.create(admit()).unwrap();
    let pc = through(
        server,
        &server.token("him.jones", "technician", &["4west"]),
        "records-pc-1",
        &pc_store,
    );
    assert!(
        pc.wait_until_up_to_date(WAIT).await,
        "{:?}",
        pc.status().borrow()
    );
    (pc_store, id, pc)
}

/// Waits until `store` holds `n` entries on chart `id`.
async fn until_entries(store: &ChartStore, id: ChartId, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let have = store
            .read(id, |c| c.view().unwrap().entries.len())
            .unwrap_or(0);
        if have == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {have} entries, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn a_commit_through_one_node_reaches_a_tablet_connected_to_another() {
    let (a, b, _data) = two_nodes();
    let devices = tempfile::tempdir().unwrap();
    let (pc_store, id, pc) = admitted_through(&a, &devices).await;

    // Two nurses' tablets: one connected to node A, the other to node B.
    let day = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let night = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let on_a = tablet_store(&devices, "tablet-a");
    let tablet_a = through(
        &a,
        &a.token("rn.silva", "nurse", &["4west"]),
        "tablet-4west-01",
        &on_a,
    );
    let on_b = tablet_store(&devices, "tablet-b");
    let tablet_b = through(
        &b,
        &b.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-02",
        &on_b,
    );
    for t in [&tablet_a, &tablet_b] {
        t.fetch(id);
        assert!(
            t.wait_until_up_to_date(WAIT).await,
            "{:?}",
            t.status().borrow()
        );
    }
    assert!(on_a.contains(id).unwrap() && on_b.contains(id).unwrap());

    // The day nurse charts through node A; the tablet on B hears of it without asking.
    on_a.update(id, |c| c.add_entry(&day, at(10), heart_rate(72)))
        .unwrap();
    until_entries(&on_b, id, 1, "the tablet on node B").await;

    // And the other way: the night nurse charts through B, the tablet on A hears.
    on_b.update(id, |c| c.add_entry(&night, at(20), heart_rate(80)))
        .unwrap();
    until_entries(&on_a, id, 2, "the tablet on node A").await;

    // Both chart at once, through their own nodes: one chart, everything on it, everywhere.
    for k in 0..5 {
        on_a.update(id, |c| {
            c.add_entry(&day, at(30 + k), heart_rate(60 + k as u32))
        })
        .unwrap();
        on_b.update(id, |c| {
            c.add_entry(&night, at(40 + k), heart_rate(90 + k as u32))
        })
        .unwrap();
    }
    until_entries(&on_a, id, 12, "the tablet on node A, after both charted").await;
    until_entries(&on_b, id, 12, "the tablet on node B, after both charted").await;
    until_entries(&pc_store, id, 12, "the PC on node A").await;
    for t in [&tablet_a, &tablet_b, &pc] {
        assert!(
            t.wait_until_up_to_date(WAIT).await,
            "{:?}",
            t.status().borrow()
        );
    }
    let heads = |s: &ChartStore| {
        let mut h = s.read(id, |c| c.heads()).unwrap();
        h.sort();
        h
    };
    assert_eq!(heads(&on_a), heads(&on_b), "the two copies are one chart");

    // What the record holds, read through either node, is the same chart.
    let token_a = a.token("him.sup", "records_supervisor", &["*"]);
    let token_b = b.token("him.sup", "records_supervisor", &["*"]);
    let (sa, on_a) = http_get(&a.addr, &format!("/api/charts/{id}"), Some(&token_a));
    let (sb, on_b) = http_get(&b.addr, &format!("/api/charts/{id}"), Some(&token_b));
    assert_eq!((sa, sb), (200, 200));
    let entries = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["entries"].as_array().unwrap().len()
    };
    assert_eq!((entries(&on_a), entries(&on_b)), (12, 12));
}

/// Node B dies (SIGKILL) while a tablet is sending through it; the tablet reconnects through
/// node A (as a load balancer would send it), which knows it as the same server: everything
/// the tablet charted is in the record, and its unsent work counted down to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn a_node_killed_mid_sync_leaves_its_tablets_to_another_losing_nothing() {
    let (a, b, _data) = two_nodes();
    let devices = tempfile::tempdir().unwrap();
    let (pc_store, id, _pc) = admitted_through(&a, &devices).await;

    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let token = a.token("rn.park", "nurse", &["4west"]);
    let store = tablet_store(&devices, "tablet");
    let through_b = through(&b, &token, "tablet-4west-02", &store);
    through_b.fetch(id);
    assert!(through_b.wait_until_up_to_date(WAIT).await);
    // Charting as fast as she can; node B dies part-way.
    for k in 0..=20 {
        store
            .update(id, |c| {
                c.add_entry(&nurse, at(k), heart_rate(60 + k as u32))
            })
            .unwrap();
    }
    b.kill();
    for k in 21..40 {
        store
            .update(id, |c| {
                c.add_entry(&nurse, at(k), heart_rate(60 + k as u32))
            })
            .unwrap();
    }
    through_b.stop().await;

    // The load balancer sends her to node A.
    let through_a = through(&a, &token, "tablet-4west-02", &store);
    assert!(
        through_a.wait_until_up_to_date(WAIT).await,
        "{:?}",
        through_a.status().borrow()
    );
    let status = through_a.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged_commits, status.held.len()),
        (0, 0),
        "{status:?}"
    );
    until_entries(&pc_store, id, 40, "the PC on node A").await;
    let supervisor = a.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(&a.addr, &format!("/api/charts/{id}"), Some(&supervisor));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["entries"].as_array().unwrap().len(),
        40,
        "every entry in the record"
    );
}
