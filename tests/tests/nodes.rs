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

/// `n` nodes on one database, sharing their keys as docs/deploy.md has them (a token or a
/// certificate from one is good on the others): each data directory names the first node's
/// database and holds a copy of its keys. The first node is started alone and holds the
/// single-writer lease before the others start.
fn cluster(n: usize) -> (Vec<Server>, Vec<tempfile::TempDir>) {
    let data: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = test_database(data[0].path()).unwrap_or_else(|| {
        panic!("set {POSTGRES} to a PostgreSQL server (scripts/test.sh does) to run this test")
    });
    let first = Server::start(data[0].path());
    wait_for("the first node to take the lease", || holds_lease(&first));
    let mut nodes = vec![first];
    for dir in &data[1..] {
        for key in ["token.key", "cert.key"] {
            std::fs::copy(data[0].path().join(key), dir.path().join(key)).unwrap();
        }
        std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
        nodes.push(Server::start(dir.path()));
    }
    (nodes, data)
}

/// What `/healthz` says of the node and the lease.
fn health(server: &Server) -> serde_json::Value {
    let (status, body) = http_get(&server.addr, "/healthz", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn holds_lease(server: &Server) -> bool {
    health(server)["lease"]["held"] == serde_json::json!(true)
}

/// Polls `done` until it holds, for up to [`WAIT`].
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Three nodes: the patient admitted through B, one nurse's tablet on A and another's on C.
/// What either charts reaches the other and the PC without asking, work done on both at once
/// converges, and the record read through any node is the same chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn a_commit_through_one_node_reaches_tablets_connected_to_the_others() {
    let (nodes, _data) = cluster(3);
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let devices = tempfile::tempdir().unwrap();
    let (pc_store, id, pc) = admitted_through(b, &devices).await;

    // Two nurses' tablets: one connected to node A, the other to node C.
    let day = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let night = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let on_a = tablet_store(&devices, "tablet-a");
    let tablet_a = through(
        a,
        &a.token("rn.silva", "nurse", &["4west"]),
        "tablet-4west-01",
        &on_a,
    );
    let on_c = tablet_store(&devices, "tablet-c");
    let tablet_c = through(
        c,
        &c.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-02",
        &on_c,
    );
    for t in [&tablet_a, &tablet_c] {
        t.fetch(id);
        assert!(
            t.wait_until_up_to_date(WAIT).await,
            "{:?}",
            t.status().borrow()
        );
    }
    assert!(on_a.contains(id).unwrap() && on_c.contains(id).unwrap());

    // The day nurse charts through node A; the tablet on C hears of it without asking.
    on_a.update(id, |ch| ch.add_entry(&day, at(10), heart_rate(72)))
        .unwrap();
    until_entries(&on_c, id, 1, "the tablet on node C").await;

    // And the other way: the night nurse charts through C, the tablet on A hears.
    on_c.update(id, |ch| ch.add_entry(&night, at(20), heart_rate(80)))
        .unwrap();
    until_entries(&on_a, id, 2, "the tablet on node A").await;

    // Both chart at once, through their own nodes: one chart, everything on it, everywhere.
    for k in 0..5 {
        on_a.update(id, |ch| {
            ch.add_entry(&day, at(30 + k), heart_rate(60 + k as u32))
        })
        .unwrap();
        on_c.update(id, |ch| {
            ch.add_entry(&night, at(40 + k), heart_rate(90 + k as u32))
        })
        .unwrap();
    }
    until_entries(&on_a, id, 12, "the tablet on node A, after both charted").await;
    until_entries(&on_c, id, 12, "the tablet on node C, after both charted").await;
    until_entries(&pc_store, id, 12, "the PC on node B").await;
    for t in [&tablet_a, &tablet_c, &pc] {
        assert!(
            t.wait_until_up_to_date(WAIT).await,
            "{:?}",
            t.status().borrow()
        );
    }
    let heads = |s: &ChartStore| {
        let mut h = s.read(id, |ch| ch.heads()).unwrap();
        h.sort();
        h
    };
    assert_eq!(heads(&on_a), heads(&on_c), "the two copies are one chart");

    // What the record holds, read through any node, is the same chart.
    let entries = |node: &Server| {
        let token = node.token("him.sup", "records_supervisor", &["*"]);
        let (status, body) = http_get(&node.addr, &format!("/api/charts/{id}"), Some(&token));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["entries"].as_array().unwrap().len()
    };
    assert_eq!((entries(a), entries(b), entries(c)), (12, 12, 12));

    // Each node's metrics: one of the three holds the lease, and each has read the others'
    // commits within moments.
    let metric = |node: &Server, name: &str| -> f64 {
        let (status, body) = http_get(&node.addr, "/metrics", None);
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .parse()
            .unwrap()
    };
    let held: Vec<f64> = [a, b, c]
        .iter()
        .map(|n| metric(n, "chartsync_lease_held"))
        .collect();
    assert_eq!(held, [1.0, 0.0, 0.0], "the first node holds the lease");
    for node in [a, b, c] {
        let lag = metric(node, "chartsync_outbox_lag_seconds");
        assert!(lag < 5.0, "a node {lag} s behind the outbox");
    }
}

/// Node B dies (SIGKILL) while a tablet is sending through it; the tablet reconnects through
/// node A (as a load balancer would send it), which knows it as the same server: everything
/// the tablet charted is in the record, and its unsent work counted down to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn a_node_killed_mid_sync_leaves_its_tablets_to_another_losing_nothing() {
    let (mut nodes, _data) = cluster(2);
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
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

/// The ward census a tablet holds, as chart ids.
fn census_on(store: &ChartStore) -> Vec<ChartId> {
    store
        .census_doc("4west")
        .unwrap()
        .map(|c| c.entries().into_iter().map(|e| e.id).collect())
        .unwrap_or_default()
}

/// Waits until the tablet's census of 4west satisfies `ok`, and holds every chart it lists.
async fn until_census(store: &ChartStore, what: &str, ok: impl Fn(&[ChartId]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = census_on(store);
        if ok(&listed) && listed.iter().all(|id| store.contains(*id).unwrap()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the tablet's census lists {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Node A holds the lease: it writes the ward censuses and compacts. A tablet that knows no
/// chart ids follows 4west's census through node C; admissions are made through B. A is
/// killed (SIGKILL): another node takes the lease, and the census goes on following
/// admissions and transfers, one history, on the tablet; a chart grown past its snapshot is
/// compacted by the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn the_lease_holder_killed_the_censuses_and_compaction_move_to_another_node() {
    let (mut nodes, data) = cluster(3);
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    assert!(!holds_lease(&b) && !holds_lease(&c), "one holder");
    let devices = tempfile::tempdir().unwrap();
    let tablet = tablet_store(&devices, "tablet");
    let on_c = through(
        &c,
        &c.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-02",
        &tablet,
    );
    let (pc_store, first, pc) = admitted_through(&b, &devices).await;
    until_census(
        &tablet,
        "A's census of the admission through B, on C",
        |l| l == [first],
    )
    .await;

    a.kill();
    let (b, c) = (&b, &c);
    tokio::task::spawn_blocking({
        let (b, c) = (b.addr.clone(), c.addr.clone());
        move || {
            let held = |addr: &str| {
                let (_, body) = http_get(addr, "/healthz", None);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["lease"]["held"] == serde_json::json!(true)
            };
            wait_for("B or C to take the lease", || held(&b) || held(&c));
        }
    })
    .await
    .unwrap();
    let holder = [b, c].into_iter().find(|n| holds_lease(n)).unwrap();
    assert_eq!(
        health(holder)["lease"]["holder"],
        health(holder)["node"],
        "the database names the new holder"
    );

    // Admissions and a transfer after A's death: the new holder's census, on the tablet.
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let second = pc_store.create(admit()).unwrap();
    until_census(&tablet, "the new holder's census of a new admission", |l| {
        l.contains(&first) && l.contains(&second)
    })
    .await;
    pc_store
        .update(first, |ch| ch.transfer(&clerk, at(90), "icu", Some("8")))
        .unwrap();
    until_census(&tablet, "the new holder's census of a transfer out", |l| {
        l == [second]
    })
    .await;
    assert!(
        on_c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        on_c.status().borrow()
    );
    assert!(
        on_c.status().borrow().held.is_empty(),
        "the census went on as one history: {:?}",
        on_c.status().borrow()
    );

    // A chart whose changes outgrow its snapshot is compacted, by the new holder (A is dead,
    // and no other node compacts).
    let sizes = || {
        let rows = server_rows(
            data[0].path(),
            "SELECT snapshot_bytes, incremental_bytes FROM charts WHERE id = ?1",
            &[&second.to_string()],
        );
        let n = |i: usize| rows[0][i].parse::<i64>().unwrap();
        (n(0), n(1))
    };
    let (before, _) = sizes();
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    for k in 0..300 {
        tablet
            .update(second, |ch| {
                ch.add_entry(&nurse, at(100 + k), heart_rate(60 + (k % 40) as u32))
            })
            .unwrap();
    }
    assert!(on_c.wait_until_up_to_date(WAIT).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (snapshot, incremental) = sizes();
        if incremental == 0 && snapshot > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted: snapshot {snapshot} bytes, {incremental} bytes of changes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_entries(&pc_store, second, 300, "the PC on node B").await;
    pc.stop().await;
    on_c.stop().await;
}
