//! Tablets with their own stores and the device sync client against a real server: offline
//! work on three tablets converges when they reconnect, and a server killed mid-sync and
//! restarted loses nothing it acknowledged.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::client::{ClientConfig, SyncClient};
use chartsync_core::store::ChartStore;
use common::*;

fn client(server: &Server, token: &str, peer: &str, store: &Arc<ChartStore>) -> SyncClient {
    let mut config = ClientConfig::new(format!("ws://{}/sync", server.addr), token, peer);
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(800);
    SyncClient::start(store.clone(), config)
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tablets_work_offline_through_a_shift_and_converge_on_reconnect() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());

    // Admitted at the registration PC.
    let pc_store = tablet_store(&devices, "pc");
    let id = pc_store.create(admit()).unwrap();
    let pc = client(
        &server,
        &server.token("him.jones", "technician", &["4west"]),
        "records-pc-1",
        &pc_store,
    );
    assert!(
        pc.wait_until_up_to_date(WAIT).await,
        "{:?}",
        pc.status().borrow()
    );

    // Three tablets on the ward fetch it.
    let staff = [
        ("rn.park", "nurse", Role::Nurse),
        ("rn.silva", "nurse", Role::Nurse),
        ("dr.okafor", "physician", Role::Physician),
    ];
    let mut tablets = Vec::new();
    for (n, (user, role, _)) in staff.iter().enumerate() {
        let store = tablet_store(&devices, &format!("tablet-{n}"));
        let token = server.token(user, role, &["4west"]);
        let c = client(&server, &token, &format!("tablet-4west-0{n}"), &store);
        c.fetch(id);
        tablets.push((store, token, c));
    }
    for (store, _, c) in &tablets {
        assert!(
            c.wait_until_up_to_date(WAIT).await,
            "{:?}",
            c.status().borrow()
        );
        assert!(store.contains(id).unwrap());
    }

    // The Wi-Fi goes: each tablet records on its own.
    let mut offline = Vec::new();
    for (store, token, c) in tablets {
        c.stop().await;
        offline.push((store, token));
    }
    for (n, (store, _)) in offline.iter().enumerate() {
        let (user, _, role) = staff[n];
        let who = Staff::new(user, role, format!("tablet-4west-0{n}"));
        for k in 0..2 {
            store
                .update(id, |c| {
                    c.add_entry(&who, at(60 + 10 * n as i64 + k), heart_rate(70 + k as u32))
                })
                .unwrap();
        }
    }

    // It comes back.
    let mut clients = Vec::new();
    for (n, (store, token)) in offline.iter().enumerate() {
        clients.push(client(&server, token, &format!("tablet-4west-0{n}"), store));
    }
    for c in &clients {
        assert!(
            c.wait_until_up_to_date(WAIT).await,
            "{:?}",
            c.status().borrow()
        );
    }
    // Pushes from the others arrive after each tablet's own exchange: settle, then compare.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let heads: Vec<_> = offline
            .iter()
            .map(|(s, _)| s.read(id, |c| c.heads()).unwrap())
            .chain(std::iter::once(pc_store.read(id, |c| c.heads()).unwrap()))
            .collect();
        if heads.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tablets did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (store, _) in &offline {
        assert_eq!(
            store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
            6
        );
    }
    for c in clients {
        c.stop().await;
    }
    pc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_sync_loses_nothing_it_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    // A fixed port, so that the restarted server is where the tablet looks for it.
    let addr = fixed_addr();
    let server = Server::start_on(data.path(), &addr);
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);

    let store = tablet_store(&devices, "tablet");
    let id = store.create(admit()).unwrap();
    let nurse_staff = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    // The chart arrives under the clerk who admitted the patient.
    let pc = client(&server, &clerk, "records-pc-1", &store);
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;
    // A night's observations, made offline.
    for n in 0..40 {
        store
            .update(id, |c| {
                c.add_entry(&nurse_staff, at(n), heart_rate(60 + n as u32))
            })
            .unwrap();
    }
    let c = client(&server, &nurse, "tablet-4west-01", &store);
    // Kill the server as the sync starts.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = Server::start_on(data.path(), &addr);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    c.stop().await;

    // Another tablet fetching from the server gets all forty.
    let other = tablet_store(&devices, "other");
    let c2 = client(&server, &nurse, "tablet-4west-09", &other);
    c2.fetch(id);
    assert!(c2.wait_until_up_to_date(WAIT).await);
    assert_eq!(
        other.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        40
    );
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_finds_its_wards_charts_through_the_census_and_follows_admissions_and_transfers() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk_token = server.token("him.jones", "technician", &["4west", "icu"]);
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");

    // Admissions at the registration PC: three to 4west, one to the ICU.
    let pc_store = tablet_store(&devices, "pc");
    let mut west = Vec::new();
    for n in 0..3 {
        let mut chart = admit();
        chart
            .transfer(&clerk, at(1), "4west", Some(&format!("{n}")))
            .unwrap();
        west.push(pc_store.create(chart).unwrap());
    }
    let mut icu_chart = admit();
    icu_chart.transfer(&clerk, at(1), "icu", Some("7")).unwrap();
    let icu = pc_store.create(icu_chart).unwrap();
    let pc = client(&server, &clerk_token, "records-pc-1", &pc_store);
    assert!(pc.wait_until_up_to_date(WAIT).await);

    // A 4west tablet that knows no chart ids: it follows its ward's census.
    let tablet = tablet_store(&devices, "tablet");
    let mut config = ClientConfig::new(
        format!("ws://{}/sync", server.addr),
        server.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-01",
    );
    config.wards = vec!["4west".into()];
    config.backoff_min = Duration::from_millis(100);
    let c = SyncClient::start(tablet.clone(), config);
    let has =
        |ids: &[chartsync_core::chart::ChartId]| ids.iter().all(|id| tablet.contains(*id).unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !has(&west) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ward's charts did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!tablet.contains(icu).unwrap(), "nothing of another ward");

    // A new admission to 4west arrives by itself; a transfer out leaves the ward's census.
    let newcomer = pc_store.create(admit()).unwrap();
    pc_store
        .update(west[0], |ch| ch.transfer(&clerk, at(90), "icu", Some("8")))
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed: Vec<_> = tablet
            .census_doc("4west")
            .unwrap()
            .map(|c| c.entries().into_iter().map(|e| e.id).collect())
            .unwrap_or_default();
        if tablet.contains(newcomer).unwrap()
            && !listed.contains(&west[0])
            && listed.contains(&newcomer)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the census did not follow: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything the census ever said, as it reached the tablet, history and all, names no
    // patient: chart ids only. (Version 1 listed MRN, name and bed, and so kept everyone the
    // ward ever had on every tablet, the patient since moved to the ICU included.)
    let census = tablet.census_doc("4west").unwrap().unwrap();
    let history: String = census
        .doc()
        .get_changes(&[])
        .iter()
        .map(|change| format!("{:?}", change.decode()))
        .collect();
    assert!(history.contains(&west[0].to_string()), "ids are listed");
    for detail in ["Rivera", "MRN-0042"] {
        assert!(
            !history.contains(detail),
            "the census's history holds {detail:?}"
        );
    }
    c.stop().await;
    pc.stop().await;
}

/// "Up to date" counts a commit made the moment before asking: a nurse who records a value
/// and then sees "up to date" can sign out knowing the server has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_to_date_includes_a_commit_made_just_before_asking() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let store = tablet_store(&devices, "tablet");
    let id = store.create(admit()).unwrap();
    let pc = client(&server, &clerk, "records-pc-1", &store);
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;

    let c = client(&server, &nurse, "tablet-4west-01", &store);
    assert!(c.wait_until_up_to_date(WAIT).await);
    let nurse_staff = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for n in 0..40 {
        store
            .update(id, |ch| {
                ch.add_entry(&nurse_staff, at(n), heart_rate(70 + n as u32))
            })
            .unwrap();
        // Asked at once, while the status still says "up to date" from before the commit.
        assert!(c.wait_until_up_to_date(WAIT).await);
        let status = c.status().borrow().clone();
        assert_eq!(
            status.unacknowledged, 0,
            "up to date, so nothing waits: {status:?}"
        );
        let (status, body) = http_get(&server.addr, &format!("/api/charts/{id}"), Some(&nurse));
        assert_eq!(status, 200);
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            view["entries"].as_array().unwrap().len(),
            n as usize + 1,
            "the server has every entry the tablet committed before asking"
        );
    }
    c.stop().await;
    // A stopped client is not up to date.
    let stopped = client(&server, &nurse, "tablet-4west-01", &store);
    stopped.request_stop();
    assert!(!stopped.wait_until_up_to_date(WAIT).await);
}

/// A chart a new tablet takes whole is kept as the server sent it (not saved again): the
/// tablet restarts, opens it from those bytes, and the nurse's next observation reaches the
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_taken_whole_is_there_after_the_tablet_restarts_and_takes_new_work() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let pc_store = tablet_store(&devices, "pc");
    let id = pc_store.create(admit()).unwrap();
    let pc = client(
        &server,
        &server.token("him.jones", "technician", &["4west"]),
        "records-pc-1",
        &pc_store,
    );
    assert!(pc.wait_until_up_to_date(WAIT).await);
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let tablet_client = |store: &Arc<ChartStore>| {
        let mut config = ClientConfig::new(
            format!("ws://{}/sync", server.addr),
            nurse_token.clone(),
            "tablet-4west-01",
        );
        config.wards = vec!["4west".into()];
        config.backoff_min = Duration::from_millis(100);
        SyncClient::start(store.clone(), config)
    };

    // The new tablet takes the ward's chart, then its app is closed.
    let tablet = tablet_store(&devices, "tablet");
    let c = tablet_client(&tablet);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tablet.contains(id).unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chart did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;
    drop(tablet);

    // Opened again, it reads the chart from disk as the server has it, and writes on it.
    let tablet = tablet_store(&devices, "tablet");
    let heads = pc_store.read(id, |ch| ch.heads()).unwrap();
    assert_eq!(tablet.read(id, |ch| ch.heads()).unwrap(), heads);
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let written = tablet
        .update(id, |ch| {
            ch.add_entry(&nurse, at(30), heart_rate(88))?;
            Ok(ch.heads())
        })
        .unwrap();
    let c = tablet_client(&tablet);
    assert!(c.wait_until_up_to_date(WAIT).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pc_store
        .read(id, |ch| {
            written
                .iter()
                .all(|h| ch.doc().get_change_meta_by_hash(h).is_some())
        })
        .unwrap()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the observation did not reach the record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    pc.stop().await;
}
