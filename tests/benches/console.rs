//! The records console on a 10,000-chart store: how long the deficiency worklist, the
//! delinquency dashboard, the coding queue and a code search take to answer (render and audit
//! included), p50 and p99 over 100 requests each, against a real server binary on loopback,
//! signed in as a browser is.
//!
//! The store: 10,000 charts on 20 wards, admitted over the last 120 days; a third of them
//! discharged three days in, half of those without a discharge summary; none with an H&P, so
//! every chart is on the worklist. Each page writes its audit row (a durable commit), as in
//! use.
//!
//! Run: `cargo bench -p chartsync-tests --bench console`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chartsync_core::chart::*;
use chartsync_core::store::ChartStore;
use common::console::{agent, sign_in};

const CHARTS: usize = 10_000;
const WARDS: usize = 20;
const ROUNDS: usize = 100;

fn ward(n: usize) -> String {
    format!("ward{:02}", n % WARDS)
}

fn build(dir: &std::path::Path) {
    let store = ChartStore::open(dir.join("charts.db"), common::server_store_options()).unwrap();
    let registrar = Staff::new("him.jones", Role::Technician, "bench");
    let physician = Staff::new("dr.okafor", Role::Physician, "bench");
    let now = Timestamp::now();
    let started = Instant::now();
    let charts = (0..CHARTS).map(|n| {
        let admitted = now.plus_seconds(-((n % 120) as i64 + 1) * 86_400 - (n as i64 % 86_400));
        let patient = chartsync_tests::bench_patient(format!("MRN-{n:06}"), n);
        let encounter = NewEncounter {
            ward: ward(n),
            bed: Some(format!("{:03}", n / WARDS)),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: Some("dr.okafor".into()),
        };
        let mut chart = Chart::create(patient, encounter, &registrar, admitted).unwrap();
        let out = admitted.plus_seconds(3 * 86_400);
        if n % 3 == 0 && out < now {
            if n % 2 == 0 {
                let id = chart
                    .add_entry(
                        &physician,
                        out,
                        NewEntry::note(EntryKind::DischargeSummary, "Home."),
                    )
                    .unwrap();
                chart
                    .sign_entry(&physician, out, &id, SignatureMeaning::Author)
                    .unwrap();
            }
            chart.discharge(&registrar, out, "home").unwrap();
        }
        (ChartId::random(), chart)
    });
    store.import(charts, Some(CHARTS), |_| {}).unwrap();
    store.count_delinquency_day(now).unwrap();
    eprintln!(
        "built {CHARTS} charts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// (p50, p99, bytes of the last page) of `ROUNDS` requests.
fn timed(addr: &str, header: (&str, &str), path: &str) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut response = agent()
            .get(format!("http://{addr}{path}"))
            .header(header.0, header.1)
            .call()
            .unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        times.push(started.elapsed());
        assert_eq!(response.status().as_u16(), 200, "{path}");
        bytes = body.len();
    }
    times.sort();
    (times[ROUNDS / 2], times[ROUNDS * 99 / 100], bytes)
}

fn main() {
    let data = tempfile::tempdir().unwrap();
    build(data.path());
    let server = common::Server::start(data.path());
    common::add_staff(&server, "him.all", "records_supervisor", &["*"]);
    common::add_staff(&server, "him.jones", "technician", &["ward07"]);
    // Every chart's attending: the physicians page's one physician, with all their records.
    common::add_staff(&server, "dr.okafor", "physician", &["*"]);
    let all = sign_in(&server.addr, "him.all");
    let one = sign_in(&server.addr, "him.jones");
    let bearer = format!("Bearer {}", server.token("cod.kim", "coder", &["*"]));
    let office = format!(
        "Bearer {}",
        server.token("him.all", "records_supervisor", &["*"])
    );
    // One chart of ward07, for its completion page.
    let (_, found) = common::http_get(
        &server.addr,
        "/api/deficiencies?ward=ward07&limit=1",
        Some(office.strip_prefix("Bearer ").unwrap()),
    );
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let completion = format!(
        "/console/completion?id={}",
        found["deficiencies"][0]["chart"].as_str().unwrap()
    );
    println!("records console, {CHARTS} charts on {WARDS} wards, {ROUNDS} requests each");
    println!(
        "{:<58} {:>9} {:>9} {:>10}",
        "page", "p50 ms", "p99 ms", "page KB"
    );
    for (what, cookie, path) in [
        (
            "worklist, one ward (first 100 of ~500)",
            &one,
            "/console/worklist",
        ),
        (
            "worklist, one ward, overdue only",
            &one,
            "/console/worklist?overdue=true",
        ),
        (
            "worklist, every ward (first 100 of ~10,000)",
            &all,
            "/console/worklist",
        ),
        (
            "worklist, every ward, page 50",
            &all,
            "/console/worklist?page=50",
        ),
        (
            "delinquency dashboard, one ward",
            &one,
            "/console/delinquency",
        ),
        (
            "delinquency dashboard, every ward",
            &all,
            "/console/delinquency",
        ),
        ("coding queue, one ward", &one, "/console/coding"),
        (
            "coding queue, every ward (first 100)",
            &all,
            "/console/coding",
        ),
        (
            "code search by words (REST, 25 codes)",
            &bearer,
            "/api/codes?q=fracture%20femur%20initial",
        ),
        ("one chart's completion", &one, completion.as_str()),
        (
            "physicians' incomplete records, one ward",
            &one,
            "/console/physicians",
        ),
        (
            "physicians' incomplete records, every ward",
            &all,
            "/console/physicians",
        ),
        (
            "worklist over REST, every ward (first 1,000)",
            &office,
            "/api/deficiencies",
        ),
    ] {
        let header = match cookie.strip_prefix("Bearer ") {
            Some(_) => ("Authorization", cookie.as_str()),
            None => ("Cookie", cookie.as_str()),
        };
        let (p50, p99, bytes) = timed(&server.addr, header, path);
        println!(
            "{what:<58} {:>9.1} {:>9.1} {:>10.1}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            bytes as f64 / 1024.0
        );
    }
}
