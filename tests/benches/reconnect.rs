//! A tablet holding 200 charts reconnects after a shift offline with 10 edits on each: how
//! long until it and the server agree, and how many bytes went each way (from the server's
//! own metrics). Against a real server binary on loopback.
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
    Timestamp::parse("2026-11-27T20:00:00Z")
        .unwrap()
        .plus_seconds(minutes * 60)
}

fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = common::http_get(addr, "/metrics", None);
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let devices = tempfile::tempdir().unwrap();
        let server = common::Server::start(data.path());
        let url = format!("ws://{}/sync", server.addr);
        let clerk = server.token("him.jones", "technician", &["4west"]);
        let nurse = server.token("rn.park", "nurse", &["4west"]);
        let store = Arc::new(ChartStore::open(devices.path().join("tablet.db"), StoreOptions::default()).unwrap());
        let tech = Staff::new("him.jones", Role::Technician, "records-pc-1");
        let mut ids = Vec::new();
        for n in 0..CHARTS {
            let chart = Chart::create(
                NewPatient {
                    mrn: format!("MRN-{n:05}"),
                    family_name: format!("Family{n}"),
                    given_names: "Sam".into(),
                    birth_date: None,
                    sex: None,
                    address: None,
                    phone: None,
                },
                NewEncounter {
                    ward: "4west".into(),
                    bed: Some(format!("{n:03}")),
                    class: EncounterClass::Inpatient,
                    admit_source: None,
                    attending: None,
                },
                &tech,
                at(0),
            )
            .unwrap();
            ids.push(store.create(chart).unwrap());
        }
        let client = SyncClient::start(store.clone(), ClientConfig::new(&url, &clerk, "records-pc-1"));
        assert!(client.wait_until_up_to_date(Duration::from_secs(300)).await);
        client.stop().await;

        // The night shift, offline: ten observations on every chart.
        let who = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
        for id in &ids {
            for k in 0..EDITS {
                store
                    .update(*id, |c| {
                        c.add_entry(
                            &who,
                            at(60 + k as i64),
                            NewEntry {
                                kind: EntryKind::Observation,
                                shift: Some(Shift::Night),
                                effective_at: None,
                                codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
                                value: Some(format!("{}", 60 + k)),
                                unit: Some("/min".into()),
                                body: "Heart rate".into(),
                            },
                        )
                    })
                    .unwrap();
            }
        }
        let addr = server.addr.clone();
        let (rx0, tx0) = (
            metric(&addr, "chartsync_bytes_received_total"),
            metric(&addr, "chartsync_bytes_sent_total"),
        );
        let (mrx0, mtx0) = (
            metric(&addr, "chartsync_messages_received_total"),
            metric(&addr, "chartsync_messages_sent_total"),
        );
        let started = Instant::now();
        let client = SyncClient::start(store.clone(), ClientConfig::new(&url, &nurse, "tablet-4west-01"));
        assert!(client.wait_until_up_to_date(Duration::from_secs(600)).await);
        let took = started.elapsed();
        client.stop().await;
        let up = metric(&addr, "chartsync_bytes_received_total") - rx0;
        let down = metric(&addr, "chartsync_bytes_sent_total") - tx0;
        let msgs_up = metric(&addr, "chartsync_messages_received_total") - mrx0;
        let msgs_down = metric(&addr, "chartsync_messages_sent_total") - mtx0;
        println!("\n## Reconnect after a shift offline: {CHARTS} charts, {EDITS} offline edits on each\n");
        println!("| measure | result |\n|---|---|");
        println!("| time until tablet and server agree | {:.2} s |", took.as_secs_f64());
        println!("| bytes tablet → server | {up:.0} ({:.0} per chart, {:.0} per edit) |", up / CHARTS as f64, up / (CHARTS * EDITS) as f64);
        println!("| bytes server → tablet | {down:.0} ({:.0} per chart) |", down / CHARTS as f64);
        println!("| messages tablet → server / server → tablet | {msgs_up:.0} / {msgs_down:.0} |");
        drop(server);
    });
}
