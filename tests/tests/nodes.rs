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
/// converges, so does work done on both offline (each coming back through the other's node),
/// and the record read through any node is the same chart.
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

    // Both go offline and chart on the same chart; each comes back through the other's node
    // (the load balancer decides): one chart again, everything on it.
    tablet_a.stop().await;
    tablet_c.stop().await;
    for k in 0..3 {
        on_a.update(id, |ch| ch.add_entry(&day, at(50 + k), heart_rate(71)))
            .unwrap();
        on_c.update(id, |ch| ch.add_entry(&night, at(60 + k), heart_rate(81)))
            .unwrap();
    }
    let back_a = through(
        c,
        &c.token("rn.silva", "nurse", &["4west"]),
        "tablet-4west-01",
        &on_a,
    );
    let back_c = through(
        a,
        &a.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-02",
        &on_c,
    );
    until_entries(&on_a, id, 18, "the day nurse's tablet, back through C").await;
    until_entries(&on_c, id, 18, "the night nurse's tablet, back through A").await;
    for t in [&back_a, &back_c] {
        assert!(
            t.wait_until_up_to_date(WAIT).await,
            "{:?}",
            t.status().borrow()
        );
        let status = t.status().borrow().clone();
        assert_eq!(
            (status.unacknowledged_commits, status.held.len()),
            (0, 0),
            "{status:?}"
        );
    }
    assert_eq!(
        heads(&on_a),
        heads(&on_c),
        "one chart after the offline spell"
    );

    // What the record holds, read through any node, is the same chart.
    let entries = |node: &Server| {
        let token = node.token("him.sup", "records_supervisor", &["*"]);
        let (status, body) = http_get(&node.addr, &format!("/api/charts/{id}"), Some(&token));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["entries"].as_array().unwrap().len()
    };
    assert_eq!((entries(a), entries(b), entries(c)), (18, 18, 18));

    // Each node's metrics: one of the three holds the lease, and each has read the others'
    // commits within moments.
    let held: Vec<f64> = [a, b, c].iter().map(|n| n.metric("lease_held")).collect();
    assert_eq!(held, [1.0, 0.0, 0.0], "the first node holds the lease");
    for node in [a, b, c] {
        let lag = node.metric("outbox_lag_seconds");
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

/// Moving a hospital from its one SQLite server to PostgreSQL: the server stops, a tablet
/// charts on offline, `chartsync-records copy` moves the store and checks it, and the server
/// starts on the database with the same data directory. The tablet reconnects to it as to
/// the server it knew (its sync states are kept under the one storage id, none made anew),
/// its offline work reaches the record, and the census goes on as one history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
async fn a_hospital_moved_to_the_database_carries_on_without_starting_over() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(ON_FILE), "").unwrap();
    let on_file = Server::start(data.path());
    let devices = tempfile::tempdir().unwrap();
    let (pc_store, id, pc) = admitted_through(&on_file, &devices).await;
    let tablet = tablet_store(&devices, "tablet");
    let token = on_file.token("rn.park", "nurse", &["4west"]);
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
    let first = through(&on_file, &token, "tablet-4west-02", &tablet);
    until_census(&tablet, "the census on the file's server", |l| l == [id]).await;
    for k in 0..5 {
        tablet
            .update(id, |ch| ch.add_entry(&nurse, at(k), heart_rate(70)))
            .unwrap();
    }
    assert!(first.wait_until_up_to_date(WAIT).await);
    first.stop().await;
    pc.stop().await;
    assert!(on_file.stop().success());

    // Offline through the move, the nurse charts on.
    for k in 5..15 {
        tablet
            .update(id, |ch| ch.add_entry(&nurse, at(k), heart_rate(70)))
            .unwrap();
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let url = test_database(elsewhere.path()).unwrap_or_else(|| {
        panic!("set {POSTGRES} to a PostgreSQL server (scripts/test.sh does) to run this test")
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-records"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--user", "him.jones", "copy"])
        .env("CHARTSYNC_COPY_TO", &url)
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .env_remove("CHARTSYNC_DATABASE_URL")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("copied 1 charts"), "{said}");
    let storage = std::fs::read_to_string(data.path().join("storage-id")).unwrap();
    assert!(said.contains(storage.trim()), "{said}");
    assert!(!said.contains("Rivera"), "no patient data in what it says");

    // The server starts on the database, from the same data directory (its keys).
    std::fs::remove_file(data.path().join(ON_FILE)).unwrap();
    std::fs::write(data.path().join("test-database-url"), &url).unwrap();
    let on_database = Server::start(data.path());
    assert_eq!(health(&on_database)["store"]["engine"], "postgresql");
    let back = through(&on_database, &token, "tablet-4west-02", &tablet);
    assert!(
        back.wait_until_up_to_date(WAIT).await,
        "{:?}",
        back.status().borrow()
    );
    let status = back.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged_commits, status.held.len()),
        (0, 0),
        "{status:?}"
    );
    let supervisor = on_database.token("him.sup", "records_supervisor", &["*"]);
    let (code, body) = http_get(
        &on_database.addr,
        &format!("/api/charts/{id}"),
        Some(&supervisor),
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["entries"].as_array().unwrap().len(),
        15,
        "the offline work too"
    );
    until_census(&tablet, "the census after the move", |l| l == [id]).await;
    back.stop().await;
    // One server to the tablet: its sync states are under the old storage id only.
    drop(pc_store);
    let peers: Vec<String> = {
        let db = rusqlite::Connection::open(devices.path().join("tablet.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT DISTINCT peer FROM sync_states ORDER BY peer")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(peers, [storage.trim().to_string()]);
}

/// PostgreSQL restarted (fast: every session ended, as in a failover) while two nurses chart
/// through two nodes: requests in flight fail and the tablets send again; the nodes' pools,
/// followers and lease come back by themselves; every entry reaches the record, each once,
/// and each tablet ends with nothing unacknowledged. Run alone: it restarts the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES_DIR: scripts/test.sh runs it, alone, on its PostgreSQL cluster"]
async fn the_database_restarted_under_load_loses_nothing() {
    let cluster_dir = std::env::var("CHARTSYNC_TEST_POSTGRES_DIR").unwrap_or_else(|_| {
        panic!("set CHARTSYNC_TEST_POSTGRES_DIR to the cluster scripts/postgres.sh made")
    });
    let (mut nodes, _data) = cluster(2);
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let (pc_store, id, pc) = admitted_through(&a, &devices).await;
    let mut tablets = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let user = format!("rn.nurse{n}");
        let device = format!("tablet-4west-0{n}");
        let store = tablet_store(&devices, &device);
        let client = through(
            node,
            &node.token(&user, "nurse", &["4west"]),
            &device,
            &store,
        );
        client.fetch(id);
        assert!(client.wait_until_up_to_date(WAIT).await);
        tablets.push((Staff::new(&user, Role::Nurse, &device), store, client));
    }
    async fn chart(
        tablets: &[(Staff, Arc<ChartStore>, SyncClient)],
        id: ChartId,
        round: std::ops::Range<i64>,
    ) {
        for k in round {
            for (n, (nurse, store, _)) in tablets.iter().enumerate() {
                store
                    .update(id, |ch| {
                        ch.add_entry(nurse, at(1000 * n as i64 + k), heart_rate(70))
                    })
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    chart(&tablets, id, 0..20).await;
    let restart = std::thread::spawn(move || {
        let status = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/postgres.sh"
            ))
            .args(["restart", &cluster_dir])
            .status()
            .unwrap();
        assert!(status.success(), "the cluster restarts");
    });
    // Charting on while the database goes down and comes back, and a little after.
    let mut k = 20;
    while !restart.is_finished() {
        chart(&tablets, id, k..k + 1).await;
        k += 1;
    }
    restart.join().unwrap();
    chart(&tablets, id, k..k + 10).await;
    let entries = 2 * (k + 10) as usize;

    let patience = Duration::from_secs(90);
    for (_, store, client) in &tablets {
        assert!(
            client.wait_until_up_to_date(patience).await,
            "{:?}",
            client.status().borrow()
        );
        let status = client.status().borrow().clone();
        assert_eq!(
            (status.unacknowledged_commits, status.held.len()),
            (0, 0),
            "{status:?}"
        );
        until_entries(store, id, entries, "every entry on each tablet").await;
    }
    until_entries(&pc_store, id, entries, "every entry on the PC").await;
    for node in [&a, &b] {
        let supervisor = node.token("him.sup", "records_supervisor", &["*"]);
        let (code, body) = http_get(&node.addr, &format!("/api/charts/{id}"), Some(&supervisor));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["entries"].as_array().unwrap().len(),
            entries,
            "each entry once"
        );
    }
    wait_for("one node to hold the lease again", || {
        [&a, &b].iter().filter(|n| holds_lease(n)).count() == 1
    });
    pc.stop().await;
    for (_, _, client) in tablets {
        client.stop().await;
    }
}
