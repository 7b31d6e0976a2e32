//! A tablet holding 200 charts reconnects after a shift offline with 10 edits on each: how
//! long until it and the server agree, and how many bytes went each way (from the server's
//! own metrics). Against a real server binary on loopback, twice in one run, side by side:
//! - one nurse's token (a tablet of one person);
//! - an enrolled shared tablet on which three nurses made the edits, each change signed by its
//!   author and checked by the server (docs/adr/0008-shared-tablets.md).
//!
//! With `CHARTSYNC_TEST_POSTGRES` naming a PostgreSQL server (a URL whose role may create
//! databases), the first again with the server on PostgreSQL, side by side.
//!
//! Run: `cargo bench -p chartsync-tests --bench reconnect`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chartsync_core::chart::*;
use chartsync_core::client::{ClientConfig, SyncClient};
use chartsync_core::codes::CodeSystem;
use chartsync_core::store::{ChartStore, StoreOptions};

const CHARTS: usize = 200;
const EDITS: usize = 10;

fn at(minutes: i64) -> Timestamp {
    Timestamp::now().plus_seconds(minutes * 60 - 24 * 3600)
}

fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = common::http_get(addr, "/metrics", None);
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn patient(n: usize) -> (NewPatient, NewEncounter) {
    (
        chartsync_tests::bench_patient(format!("MRN-{n:05}"), n),
        NewEncounter {
            ward: "4west".into(),
            bed: Some(format!("{n:03}")),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: None,
        },
    )
}

fn heart_rate(k: usize) -> NewEntry {
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
        value: Some(format!("{}", 60 + k)),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}

struct Measured {
    took: Duration,
    up: f64,
    down: f64,
    msgs_up: f64,
    msgs_down: f64,
}

/// Reconnects `store` with `token` and measures until the tablet and the server agree.
async fn reconnect(
    server: &common::Server,
    store: &Arc<ChartStore>,
    token: &str,
    peer: &str,
) -> Measured {
    let addr = server.addr.clone();
    let url = format!("ws://{addr}/sync");
    let before = [
        metric(&addr, "chartsync_bytes_received_total"),
        metric(&addr, "chartsync_bytes_sent_total"),
        metric(&addr, "chartsync_messages_received_total"),
        metric(&addr, "chartsync_messages_sent_total"),
    ];
    let started = Instant::now();
    let mut config = ClientConfig::new(&url, token, peer);
    config.wards = vec!["4west".into()];
    let client = SyncClient::start(store.clone(), config);
    assert!(client.wait_until_up_to_date(Duration::from_secs(600)).await);
    let took = started.elapsed();
    let status = client.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged, status.held.len()),
        (0, 0),
        "{status:?}"
    );
    client.stop().await;
    Measured {
        took,
        up: metric(&addr, "chartsync_bytes_received_total") - before[0],
        down: metric(&addr, "chartsync_bytes_sent_total") - before[1],
        msgs_up: metric(&addr, "chartsync_messages_received_total") - before[2],
        msgs_down: metric(&addr, "chartsync_messages_sent_total") - before[3],
    }
}

/// One nurse's token: the tablet of one person; the server on its SQLite file, or (`database`)
/// on PostgreSQL.
async fn one_person(database: bool) -> Measured {
    let data = tempfile::tempdir().unwrap();
    if !database {
        std::fs::write(data.path().join(common::ON_FILE), "").unwrap();
    }
    let devices = tempfile::tempdir().unwrap();
    let server = common::Server::start(data.path());
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let store = Arc::new(
        ChartStore::open(devices.path().join("tablet.db"), StoreOptions::default()).unwrap(),
    );
    let tech = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let ids: Vec<ChartId> = (0..CHARTS)
        .map(|n| {
            let (p, e) = patient(n);
            store
                .create(Chart::create(p, e, &tech, at(0)).unwrap())
                .unwrap()
        })
        .collect();
    reconnect(&server, &store, &clerk, "records-pc-1").await;
    let who = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for id in &ids {
        for k in 0..EDITS {
            store
                .update(*id, |c| c.add_entry(&who, at(60 + k as i64), heart_rate(k)))
                .unwrap();
        }
    }
    reconnect(&server, &store, &nurse, "tablet-4west-01").await
}

/// An enrolled shared tablet: three nurses, each change signed by its author.
async fn three_people() -> Measured {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(common::ON_FILE), "").unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = common::Server::start(data.path());
    common::add_staff(&server, "him.jones", "technician", &["4west"]);
    let nurses = ["rn.park", "rn.lee", "rn.okafor"];
    for n in nurses {
        common::add_staff(&server, n, "nurse", &["4west"]);
    }
    let store = Arc::new(
        ChartStore::open(devices.path().join("tablet.db"), StoreOptions::default()).unwrap(),
    );
    let code = common::enrolment_code(&server, "T-07", "4west");
    let tablet = common::enrolled(&server, store.clone(), &[7u8; 32], &code);
    let clerk = common::signed_in(&tablet, &server, "him.jones", "111111");
    let ids: Vec<ChartId> = (0..CHARTS)
        .map(|n| {
            let (p, e) = patient(n);
            let chart = Chart::create(p, e, clerk.staff(), at(0)).unwrap();
            clerk
                .with_key(|k| store.create_signed(k, chart))
                .unwrap()
                .unwrap()
        })
        .collect();
    let token = common::device_token(&tablet, &server);
    reconnect(&server, &store, &token, "tablet-t07").await;
    let sessions: Vec<_> = nurses
        .iter()
        .enumerate()
        .map(|(i, n)| common::signed_in(&tablet, &server, n, &format!("13579{i}")))
        .collect();
    for id in &ids {
        for k in 0..EDITS {
            let s = &sessions[k % sessions.len()];
            s.with_key(|key| {
                store.update_signed(key, *id, |c| {
                    c.add_entry(s.staff(), at(60 + k as i64), heart_rate(k))
                })
            })
            .unwrap()
            .unwrap();
        }
    }
    reconnect(&server, &store, &token, "tablet-t07").await
}

fn main() {
    chartsync_tests::bench_main(|| async {
        let one = one_person(false).await;
        let three = three_people().await;
        // With CHARTSYNC_TEST_POSTGRES set, the first scenario again on PostgreSQL.
        let database = match std::env::var(common::POSTGRES) {
            Ok(_) => Some(one_person(true).await),
            Err(_) => None,
        };
        if let Some(pg) = &database {
            println!(
                "\n## Reconnect, the server on SQLite and on PostgreSQL (one nurse's token)\n"
            );
            println!("| measure | SQLite | PostgreSQL |\n|---|---|---|");
            println!(
                "| time until tablet and server agree | {:.2} s | {:.2} s |",
                one.took.as_secs_f64(),
                pg.took.as_secs_f64()
            );
            println!("| bytes tablet → server | {:.0} | {:.0} |", one.up, pg.up);
            println!(
                "| bytes server → tablet | {:.0} | {:.0} |",
                one.down, pg.down
            );
            println!(
                "| messages tablet → server / server → tablet | {:.0} / {:.0} | {:.0} / {:.0} |",
                one.msgs_up, one.msgs_down, pg.msgs_up, pg.msgs_down
            );
        }
        println!("\n## Reconnect after a shift offline: {CHARTS} charts, {EDITS} offline edits on each\n");
        println!(
            "| measure | one nurse's token | shared tablet, 3 nurses, signed |\n|---|---|---|"
        );
        println!(
            "| time until tablet and server agree | {:.2} s | {:.2} s |",
            one.took.as_secs_f64(),
            three.took.as_secs_f64()
        );
        let edits = (CHARTS * EDITS) as f64;
        println!(
            "| bytes tablet → server | {:.0} ({:.0} per edit) | {:.0} ({:.0} per edit) |",
            one.up,
            one.up / edits,
            three.up,
            three.up / edits
        );
        println!(
            "| bytes server → tablet | {:.0} | {:.0} |",
            one.down, three.down
        );
        println!(
            "| messages tablet → server / server → tablet | {:.0} / {:.0} | {:.0} / {:.0} |",
            one.msgs_up, one.msgs_down, three.msgs_up, three.msgs_down
        );
    });
}
