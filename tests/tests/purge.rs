//! Charts leave tablets (docs/records-office.md, "Charts leave tablets"), end to end with the
//! server and tablets: a chart that left a tablet's wards is kept read-only for the server's
//! `--purge-after`, then removed from the tablet once the server has everything written on
//! it there; the tablet reports the removal, which is audited; and the chart never comes back
//! to that tablet unless a ward it follows lists it again. Against resurrection: a removal
//! racing a late edit, a tablet offline through the whole window, a reinstall, a revoked
//! tablet with unsent work. On SQLite a chart leaves only once a backup holds what the tablet
//! wrote on it (the first test); the others run with `--purge-without-backup`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chartsync_core::chart::*;
use chartsync_core::client::{ChartEvent, ClientConfig, SyncClient, SyncState};
use chartsync_core::protocol::{HoldReason, LeftReason};
use chartsync_core::store::ChartStore;
use common::*;
use serde_json::{json, Value};

/// A ward tablet's client, looking for charts due to leave every 100 ms (a day's removal
/// delay is the server's `--purge-after`, shortened here).
fn tablet_client(url: &str, token: &str, peer: &str, store: &Arc<ChartStore>) -> SyncClient {
    let mut config = ClientConfig::new(url, token, peer);
    config.wards = vec!["4west".into()];
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    config.purge_check = Duration::from_millis(100);
    SyncClient::start(store.clone(), config)
}

/// The next event of `events` that `want` picks, within the test's wait.
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<ChartEvent>,
    what: &str,
    want: impl Fn(&ChartEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => {
                if let Some(t) = want(&e) {
                    return t;
                }
            }
            _ => panic!("{what}: never happened"),
        }
    }
}

/// A ward at work: the server (with `options`; on SQLite in every pass if `on_file`), the
/// registration PC with a patient on 4west for each of `mrns` (its clerk may move them to
/// 5east), and rn.park's 4west tablet holding them all, connected and up to date.
struct Ward {
    data: tempfile::TempDir,
    devices: tempfile::TempDir,
    server: Server,
    url: String,
    pc: Pc,
    tablet: Arc<ChartStore>,
    nurse: String,
    client: SyncClient,
}

async fn ward(options: &[&str], on_file: bool, mrns: &[&str]) -> Ward {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    if on_file {
        std::fs::write(data.path().join(ON_FILE), "").unwrap();
    }
    let server = Server::start_with(data.path(), "127.0.0.1:0", options);
    let url = format!("ws://{}/sync", server.addr);
    let mrns: Vec<String> = mrns.iter().map(|m| m.to_string()).collect();
    let pc = registration_pc(&server, &devices, &["4west", "5east"], &mrns).await;
    let tablet = tablet_store(&devices, "tablet");
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let client = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    eventually("the charts never arrived", || {
        pc.charts.iter().all(|id| tablet.contains(*id).unwrap())
    })
    .await;
    assert!(client.wait_until_up_to_date(WAIT).await);
    Ward {
        data,
        devices,
        server,
        url,
        pc,
        tablet,
        nurse,
        client,
    }
}

/// The chart's audit trail rows of `action`, as the records office reads them.
fn audited(server: &Server, id: ChartId, action: &str) -> Vec<Value> {
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(&server.addr, &format!("/api/audit?chart={id}"), Some(&sup));
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    rows.into_iter().filter(|r| r["action"] == action).collect()
}

/// The one pending hold of a chart, as the records office lists it.
fn pending_hold(server: &Server, sup: &str, id: ChartId) -> Value {
    let (status, body) = http_get(&server.addr, &format!("/api/holds?chart={id}"), Some(sup));
    assert_eq!(status, 200, "{body}");
    let holds: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    holds[0].clone()
}

/// A records supervisor accepts a hold into the record.
fn accept(server: &Server, sup: &str, hold: &Value) {
    let id = hold["id"].as_i64().unwrap();
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/holds/{id}/accept"),
        Some(sup),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
}

fn entries(server: &Server, token: &str, id: ChartId) -> usize {
    on_server(server, token, id)["entries"]
        .as_array()
        .unwrap()
        .len()
}

/// The timeline as a tablet sees it: the patient is discharged at the registration PC; the
/// tablet is told at once and keeps the chart read-only. Past the server's delay it still
/// keeps it, as no backup holds what it wrote yet (a restore would lose it). After the
/// night's backup, its next connection brings the time to remove it: the chart goes, the app
/// is told, and the removal is reported and audited. Connected again, it does not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharged_chart_is_read_only_on_the_tablet_then_removed_once_backed_up_and_audited() {
    let backups = tempfile::tempdir().unwrap();
    // Backups are of the file: on SQLite in every pass.
    let Ward {
        devices: _devices,
        data,
        server,
        url,
        pc:
            Pc {
                store: pc_store,
                clerk,
                token: clerk_token,
                client: pc,
                charts,
            },
        tablet,
        nurse,
        client: c,
        ..
    } = ward(&["--purge-after", "3s"], true, &["MRN-0042"]).await;
    let id = charts[0];
    let mut events = c.chart_events();
    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    tablet
        .update(id, |ch| {
            ch.add_entry(&park, Timestamp::now(), heart_rate(84))
        })
        .unwrap();
    assert!(c.wait_until_up_to_date(WAIT).await);

    // Discharged at the PC.
    let discharged = Instant::now();
    pc_store
        .update(id, |ch| ch.discharge(&clerk, Timestamp::now(), "home"))
        .unwrap();
    assert!(pc.wait_until_up_to_date(WAIT).await);
    let reason = next_event(&mut events, "told the chart left", |e| match e {
        ChartEvent::Left { chart, reason } if *chart == id => Some(*reason),
        _ => None,
    })
    .await;
    let told = discharged.elapsed();
    assert_eq!(reason, LeftReason::Discharged);
    // Read-only, still there to look back at.
    assert!(tablet.read_only(id).unwrap().is_some());
    assert_eq!(
        tablet
            .read(id, |ch| ch.view().unwrap().entries.len())
            .unwrap(),
        1
    );

    // Past the delay, with no backup since she wrote: still there, on a new connection too.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    c.stop().await;
    let c = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    assert!(c.wait_until_up_to_date(WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tablet.contains(id).unwrap(),
        "removed before a backup held it"
    );
    c.stop().await;

    // The night's backup; the tablet's next connection.
    let to = backups.path().join("charts.db");
    let out = records_on_file(data.path(), &["backup", to.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backed_up = discharged.elapsed();
    let c = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    let mut events = c.chart_events();
    let reason = next_event(&mut events, "the chart removed", |e| match e {
        ChartEvent::Removed { chart, reason } if *chart == id => Some(*reason),
        _ => None,
    })
    .await;
    let removed = discharged.elapsed();
    assert_eq!(reason, LeftReason::Discharged);
    assert!(!tablet.contains(id).unwrap());
    eventually("the server never recorded the removal", || {
        tablet.purged(id).unwrap().is_some_and(|p| p.reported)
    })
    .await;
    let recorded = discharged.elapsed();
    let rows = audited(&server, id, "purge");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["user"], "rn.park");
    assert_eq!(rows[0]["detail"], "removed from the device (discharged)");
    eprintln!(
        "timeline after the discharge (purge-after 3 s): told it left {told:?}; backed up {backed_up:?}; removed {removed:?}; recorded {recorded:?}"
    );

    // The record is whole, and a new connection brings nothing back.
    assert_eq!(entries(&server, &clerk_token, id), 1);
    c.stop().await;
    let c = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    assert!(c.wait_until_up_to_date(WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!tablet.contains(id).unwrap());
    let status = c.status().borrow().clone();
    assert_eq!(
        (status.state, status.unacknowledged),
        (SyncState::UpToDate, 0)
    );
    assert_eq!(audited(&server, id, "purge").len(), 1, "reported once");
    c.stop().await;
    pc.stop().await;
}

/// The night nurse's tablet is offline through the whole window: she charts four sets of
/// vitals while, unknown to her, the patient is transferred and the delay passes. Back
/// online, all four reach the record first; only then is the chart removed, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_charted_offline_through_the_whole_window_reach_the_record_before_the_chart_goes() {
    let Ward {
        devices: _devices,
        data: _data,
        server,
        url,
        pc:
            Pc {
                store: pc_store,
                clerk,
                token: clerk_token,
                client: pc,
                charts,
            },
        tablet,
        nurse,
        client: c,
        ..
    } = ward(
        &["--purge-after", "1s", "--purge-without-backup"],
        false,
        &["MRN-0042"],
    )
    .await;
    let id = charts[0];
    c.stop().await;

    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for n in 0..4 {
        tablet
            .update(id, |ch| {
                ch.add_entry(&park, Timestamp::now(), heart_rate(80 + n))
            })
            .unwrap();
    }
    pc_store
        .update(id, |ch| {
            ch.transfer(&clerk, Timestamp::now(), "5east", Some("3"))
        })
        .unwrap();
    assert!(pc.wait_until_up_to_date(WAIT).await);
    // The delay passes while the tablet is away.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let c = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    let mut events = c.chart_events();
    next_event(&mut events, "the chart removed", |e| match e {
        ChartEvent::Removed {
            chart,
            reason: LeftReason::Transferred,
        } if *chart == id => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        entries(&server, &clerk_token, id),
        4,
        "all four in the record"
    );
    assert!(!tablet.contains(id).unwrap());
    let status = until(&c, "up to date", |s| s.state == SyncState::UpToDate).await;
    assert_eq!(
        (status.unacknowledged, status.unacknowledged_commits),
        (0, 0)
    );
    eventually("the removal never recorded", || {
        tablet.purged(id).unwrap().is_some_and(|p| p.reported)
    })
    .await;
    assert_eq!(audited(&server, id, "purge").len(), 1);
    c.stop().await;
    pc.stop().await;
}

/// Late edits race the removal: on five charts, a nurse records vitals on the tablet at the
/// moment the registration PC discharges the patient, with no delay before removal. Whichever
/// comes first, no chart leaves the tablet with her entry unsent: each entry is in the record
/// or held for review (the chart then stays, shown held, until a supervisor accepts it), and
/// in the end every chart is removed with its entry in the record, each removal audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_recorded_as_the_patient_is_discharged_reach_the_record_before_the_chart_goes() {
    let mrns = ["MRN-0101", "MRN-0102", "MRN-0103", "MRN-0104", "MRN-0105"];
    let Ward {
        devices: _devices,
        data: _data,
        server,
        pc:
            Pc {
                store: pc_store,
                clerk,
                token: clerk_token,
                client: pc,
                charts,
            },
        tablet,
        client: c,
        ..
    } = ward(
        &["--purge-after", "0s", "--purge-without-backup"],
        false,
        &mrns,
    )
    .await;

    let park = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for (n, id) in charts.iter().enumerate() {
        let (tablet, pc_store, clerk, park) = (
            tablet.clone(),
            pc_store.clone(),
            clerk.clone(),
            park.clone(),
        );
        let id = *id;
        let edit = std::thread::spawn(move || {
            tablet
                .update(id, |ch| {
                    ch.add_entry(&park, Timestamp::now(), heart_rate(90))
                })
                .unwrap()
        });
        let discharge = std::thread::spawn(move || {
            if n % 2 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            pc_store
                .update(id, |ch| ch.discharge(&clerk, Timestamp::now(), "home"))
                .unwrap()
        });
        edit.join().unwrap();
        discharge.join().unwrap();
    }
    // Each chart is removed with her entry in the record, or stays on the tablet, shown held,
    // with her entry in the holding area: the server cannot tell an entry made as the notice
    // was on its way from one made after the tablet heard it, and holds it for a person.
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let held_here = |id: &ChartId| c.status().borrow().held.iter().any(|h| h.chart == *id);
    eventually("a chart neither removed nor shown held", || {
        charts
            .iter()
            .all(|id| !tablet.contains(*id).unwrap() || held_here(id))
    })
    .await;
    let held = charts
        .iter()
        .filter(|id| tablet.contains(**id).unwrap())
        .count();
    eprintln!("entries held for review as their chart left: {held} of 5");
    for id in &charts {
        if !tablet.contains(*id).unwrap() {
            assert_eq!(entries(&server, &clerk_token, *id), 1, "the entry on {id}");
            continue;
        }
        // The records supervisor accepts it; then the chart goes too.
        accept(&server, &sup, &pending_hold(&server, &sup, *id));
    }
    eventually("a chart stayed on the tablet", || {
        charts.iter().all(|id| !tablet.contains(*id).unwrap())
    })
    .await;
    for id in &charts {
        assert_eq!(entries(&server, &clerk_token, *id), 1, "the entry on {id}");
    }
    eventually("a removal never recorded", || {
        tablet
            .purged_charts()
            .unwrap()
            .iter()
            .filter(|p| p.reported)
            .count()
            == charts.len()
    })
    .await;
    for id in &charts {
        assert_eq!(audited(&server, *id, "purge").len(), 1);
    }
    let status = until(&c, "up to date", |s| s.state == SyncState::UpToDate).await;
    assert_eq!(
        (status.unacknowledged, status.unacknowledged_commits),
        (0, 0)
    );
    c.stop().await;
    pc.stop().await;
}

/// Told the chart left, the tablet goes offline (the server is down): it removes the chart
/// on its own clock, with no network, and reports the removal when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_offline_after_it_was_told_removes_the_chart_and_reports_it_when_back() {
    let Ward {
        devices: _devices,
        data,
        server,
        pc:
            Pc {
                store: pc_store,
                clerk,
                client: pc,
                charts,
                ..
            },
        tablet,
        client: c,
        ..
    } = ward(
        &["--purge-after", "2s", "--purge-without-backup"],
        false,
        &["MRN-0042"],
    )
    .await;
    let addr = server.addr.clone();
    let id = charts[0];
    let mut events = c.chart_events();
    pc_store
        .update(id, |ch| ch.discharge(&clerk, Timestamp::now(), "home"))
        .unwrap();
    next_event(&mut events, "told the chart left", |e| {
        matches!(e, ChartEvent::Left { chart, .. } if *chart == id).then_some(())
    })
    .await;
    pc.stop().await;

    // The network goes: the server is away.
    server.kill();
    until(&c, "offline", |s| {
        matches!(s.state, SyncState::Offline { .. })
    })
    .await;
    next_event(&mut events, "the chart removed while offline", |e| {
        matches!(e, ChartEvent::Removed { chart, .. } if *chart == id).then_some(())
    })
    .await;
    assert!(!tablet.contains(id).unwrap());
    assert!(!tablet.purged(id).unwrap().unwrap().reported);

    // Back: reported, and audited once.
    let server = Server::start_on(data.path(), &addr);
    eventually("the removal never recorded", || {
        tablet.purged(id).unwrap().is_some_and(|p| p.reported)
    })
    .await;
    assert_eq!(audited(&server, id, "purge").len(), 1);
    assert!(!tablet.contains(id).unwrap());
    c.stop().await;
}

/// Reinstalled (a new, empty store on the same tablet, the same sign-in): the chart it
/// removed is not on its ward any more and does not come back, even asked for by id. When
/// the patient is transferred back to the ward, the tablet has the chart again, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_chart_returns_to_a_tablet_only_when_its_ward_lists_it_again() {
    let Ward {
        server: _server,
        data: _data,
        devices,
        url,
        pc:
            Pc {
                store: pc_store,
                clerk,
                client: pc,
                charts,
                ..
            },
        tablet,
        nurse,
        client: c,
        ..
    } = ward(
        &["--purge-after", "0s", "--purge-without-backup"],
        false,
        &["MRN-0042"],
    )
    .await;
    let id = charts[0];
    let mut events = c.chart_events();
    pc_store
        .update(id, |ch| {
            ch.transfer(&clerk, Timestamp::now(), "5east", None)
        })
        .unwrap();
    next_event(&mut events, "the chart removed", |e| {
        matches!(e, ChartEvent::Removed { chart, .. } if *chart == id).then_some(())
    })
    .await;
    c.stop().await;

    // Reinstalled: a new store, the same tablet, asking for the chart by id as well.
    let reinstalled = tablet_store(&devices, "tablet-reinstalled");
    let c = tablet_client(&url, &nurse, "tablet-4west-01", &reinstalled);
    c.fetch(id);
    assert!(c.wait_until_up_to_date(WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reinstalled.contains(id).unwrap(),
        "came back after a reinstall"
    );
    c.stop().await;
    let c = tablet_client(&url, &nurse, "tablet-4west-01", &tablet);
    assert!(c.wait_until_up_to_date(WAIT).await);
    assert!(!tablet.contains(id).unwrap(), "came back on a reconnect");

    // Back on 4west: the ward lists it, and it is the tablet's again.
    pc_store
        .update(id, |ch| {
            ch.transfer(&clerk, Timestamp::now(), "4west", Some("7"))
        })
        .unwrap();
    eventually("the chart never came back with the patient", || {
        tablet.contains(id).unwrap()
    })
    .await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    assert_eq!(tablet.departed(id).unwrap(), None);
    assert_eq!(
        tablet.read(id, |ch| ch.encounter().unwrap().ward).unwrap(),
        "4west"
    );
    c.stop().await;
    pc.stop().await;
}

/// A tablet is retired and wiped by an administrator while it holds a nurse's unsent vitals.
/// When it next connects it hands them over (held for review, since the tablet is revoked),
/// signs everyone out, and removes every chart the server has; the one with her vitals stays,
/// shown held, until a records supervisor accepts them, then goes too. The administrator
/// sees each removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_tablet_hands_over_its_unsent_work_then_removes_every_chart() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    add_staff(&server, "rn.lee", "nurse", &["4west"]);
    let mrns: Vec<String> = (1..=3).map(|n| format!("MRN-000{n}")).collect();
    let Pc {
        client: pc,
        charts,
        token: clerk_token,
        ..
    } = registration_pc(&server, &devices, &["4west"], &mrns).await;
    pc.stop().await;

    let store = tablet_store(&devices, "T-07");
    let code = enrolment_code(&server, "T-07", "4west");
    let tablet = enrolled(&server, store.clone(), &[7; 32], &code);
    let park = signed_in(&tablet, &server, "rn.park", "135790");
    let lee = signed_in(&tablet, &server, "rn.lee", "246802");
    let token = device_token(&tablet, &server);
    let c = client(url.clone(), &token, "T-07", &store);
    eventually("the charts did not arrive", || {
        charts.iter().all(|id| store.contains(*id).unwrap())
    })
    .await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;

    // Offline, rn.park charts vitals on the first chart, and rn.lee, picking the tablet up
    // at the change of shift, on the same patient.
    signed_heart_rate(&store, &park, charts[0], 77);
    signed_heart_rate(&store, &lee, charts[0], 81);
    // In an earlier second than the wipe: the wipe's revocation (from now) does not cover
    // them, and still they are held, as everything a wiped tablet hands over is.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The tablet is retired: wiped.
    let admin = server.token("admin.kim", "admin", &["*"]);
    let device = tablet.device().to_string();
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/devices/{device}/wipe"),
        Some(&admin),
        &json!({"reason": " "}).to_string(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("a wipe needs a reason"), "{body}");
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/devices/{device}/wipe"),
        Some(&admin),
        &json!({"reason": "retired"}).to_string(),
    );
    assert_eq!(status, 201, "{body}");

    let quarantined = device_token(&tablet, &server);
    let c = tablet_client(&url, &quarantined, "T-07", &store);
    // The two charts the server has go; the one with her vitals stays, shown held, while
    // the vitals wait for a records supervisor (the tablet keeps what only a hold covers).
    eventually("the charts the server has stayed", || {
        store
            .list(&chartsync_core::store::ChartFilter::default())
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
            == vec![charts[0]]
    })
    .await;
    until(&c, "the vitals shown held", |s| {
        s.held.iter().any(|h| h.chart == charts[0])
    })
    .await;
    for user in ["rn.park", "rn.lee"] {
        assert!(store.credential(user).unwrap().unwrap().sealed.is_none());
    }

    // Their vitals are held for review, not lost; the record is as it was.
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let hold = pending_hold(&server, &sup, charts[0]);
    assert_eq!(hold["reason"], HoldReason::Revoked.token());
    assert_eq!(entries(&server, &clerk_token, charts[0]), 0);
    // The supervisor accepts them (they charted them before the tablet was retired), each
    // nurse's as hers: in the record, and the last chart leaves the tablet.
    accept(&server, &sup, &hold);
    assert_eq!(entries(&server, &clerk_token, charts[0]), 2);
    eventually("the tablet kept a chart", || {
        store
            .list(&chartsync_core::store::ChartFilter::default())
            .unwrap()
            .is_empty()
    })
    .await;
    eventually("the removals never recorded", || {
        store.purged_charts().unwrap().iter().all(|p| p.reported)
            && store.purged_charts().unwrap().len() == 3
    })
    .await;
    assert!(store
        .purged_charts()
        .unwrap()
        .iter()
        .all(|p| p.reason == LeftReason::Revoked));

    // The administrator sees every removal.
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/devices/{device}/purges"),
        Some(&admin),
    );
    assert_eq!(status, 200, "{body}");
    let purges: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(purges.len(), 3, "{purges:?}");
    assert!(purges.iter().all(|p| p["reason"] == "revoked"));
    let nurse = server.token("rn.lee", "nurse", &["4west"]);
    let (status, _) = http_get(
        &server.addr,
        &format!("/api/devices/{device}/purges"),
        Some(&nurse),
    );
    assert_eq!(status, 403);
    c.stop().await;
}
