//! Three server nodes on one PostgreSQL database under a hospital's load (issue 17): 10,000
//! charts on 50 wards, 2,000 devices connected across the nodes, each following 5 charts of
//! its ward (asked for, received, and answered as a tablet does). Then one edit at a time,
//! made on a tablet connected to node A, timed until a device that follows the chart hears
//! of it: a device on node A (the committing node's own feed) against one on node C (the
//! outbox between nodes). And each node's resident memory, with the devices connected.
//!
//! Run: `CHARTSYNC_TEST_POSTGRES=postgres://user@host/db cargo bench -p chartsync-tests --bench nodes`
//! (a URL whose role may create databases; `bash scripts/postgres.sh start DIR` makes a
//! private cluster and prints one). A few minutes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::client::{ClientConfig, SyncClient};
use chartsync_core::protocol::{DocSync, DocumentId, Message};
use chartsync_core::store::StoreOptions;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WARDS: usize = 50;
const CHARTS_PER_WARD: usize = 200;
const DEVICES: usize = 2_000;
const FOLLOWED: usize = 5;
const EDITS: usize = 60;

fn ward(w: usize) -> String {
    format!("w{w:02}")
}

fn admission(w: usize, n: usize) -> Chart {
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    Chart::create(
        chartsync_tests::bench_patient(format!("MRN-{w:02}{n:04}"), n),
        NewEncounter {
            ward: ward(w),
            bed: Some(format!("{n:03}")),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: None,
        },
        &clerk,
        Timestamp::now().plus_seconds(-3600),
    )
    .unwrap()
}

fn heart_rate(bpm: u32) -> NewEntry {
    chartsync_tests::heart_rate(bpm)
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One device: follows its charts, answers what the server sends, and reports when a sync
/// message about a chart arrives.
async fn device(
    addr: String,
    token: String,
    n: usize,
    charts: Vec<ChartId>,
    heard: mpsc::UnboundedSender<(usize, ChartId, Instant)>,
    synced: mpsc::UnboundedSender<usize>,
) {
    let peer = format!("bench-device-{n}");
    let mut tablet = common::connect(&addr, Some(&token), &peer, &format!("storage-{n}"))
        .await
        .unwrap();
    let remote = tablet.conn.remote().unwrap().peer_id.clone();
    let mut docs: HashMap<DocumentId, (Automerge, DocSync)> = HashMap::new();
    for id in &charts {
        let mut sync = DocSync::new(*id, None);
        let doc = Automerge::new();
        let m = sync.generate(&doc, &peer, &remote).unwrap();
        tablet
            .ws
            .send(WsMessage::Binary(m.encode().into()))
            .await
            .unwrap();
        docs.insert(*id, (doc, sync));
    }
    let mut complete = false;
    while let Some(Ok(frame)) = tablet.ws.next().await {
        let WsMessage::Binary(bytes) = frame else {
            continue;
        };
        let Ok(message) = Message::decode(&bytes) else {
            continue;
        };
        let (id, data) = match message {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => (document_id, data),
            _ => continue,
        };
        let Some((doc, sync)) = docs.get_mut(&id) else {
            continue;
        };
        let _ = heard.send((n, id, Instant::now()));
        if let Ok(m) = sync.decode(&data) {
            let _ = sync.receive(doc, m);
        }
        if let Some(reply) = sync.generate(doc, &peer, &remote) {
            if tablet
                .ws
                .send(WsMessage::Binary(reply.encode().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        if !complete && docs.values().all(|(d, _)| !d.get_heads().is_empty()) {
            complete = true;
            let _ = synced.send(n);
        }
    }
}

/// Edits each chart once on the writer's tablet, and times each until its follower hears.
async fn measure(
    list: Vec<(ChartId, usize)>,
    writer: &chartsync_core::store::ChartStore,
    nurse: &Staff,
    heard: &mut mpsc::UnboundedReceiver<(usize, ChartId, Instant)>,
) -> Vec<Duration> {
    let mut took = Vec::new();
    for (chart, follower) in list {
        while heard.try_recv().is_ok() {}
        let at = Instant::now();
        writer
            .update(chart, |c| {
                c.add_entry(nurse, Timestamp::now(), heart_rate(88))
            })
            .unwrap();
        loop {
            let (k, c, when) = tokio::time::timeout(Duration::from_secs(30), heard.recv())
                .await
                .expect("the follower hears within 30 s")
                .unwrap();
            if k == follower && c == chart {
                took.push(when - at);
                break;
            }
        }
    }
    took.sort();
    took
}

fn main() {
    chartsync_tests::bench_main(|| async {
        assert!(
            std::env::var(common::POSTGRES).is_ok(),
            "set {} to a PostgreSQL URL whose role may create databases",
            common::POSTGRES
        );
        // The charts, put in the database before the nodes start.
        let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let url = common::test_database(data[0].path()).unwrap();
        let started = Instant::now();
        let mut ids: Vec<Vec<ChartId>> = Vec::new();
        {
            let store = common::open_server_store(data[0].path());
            for w in 0..WARDS {
                let batch: Vec<(ChartId, Chart)> = (0..CHARTS_PER_WARD)
                    .map(|n| (ChartId::random(), admission(w, n)))
                    .collect();
                ids.push(batch.iter().map(|(id, _)| *id).collect());
                store.import(batch, None, |_| {}).unwrap();
            }
        }
        eprintln!(
            "{} charts imported in {:.1} s",
            WARDS * CHARTS_PER_WARD,
            started.elapsed().as_secs_f64()
        );

        // Three nodes sharing keys and the database.
        let first = common::Server::start(data[0].path());
        let mut nodes = vec![first];
        for dir in &data[1..] {
            for key in ["token.key", "cert.key"] {
                std::fs::copy(data[0].path().join(key), dir.path().join(key)).unwrap();
            }
            std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
            nodes.push(common::Server::start(dir.path()));
        }
        let idle: Vec<f64> = nodes.iter().map(|s| rss_mib(s.child.id())).collect();

        // The devices: device k on ward k mod 50, node k mod 3, five charts of its ward.
        let (heard_tx, mut heard) = mpsc::unbounded_channel();
        let (synced_tx, mut synced) = mpsc::unbounded_channel();
        // Four nurses a ward, ten tablets each (under the server's connections per sign-in).
        const NURSES: usize = 4;
        let tokens: Vec<String> = (0..WARDS * NURSES)
            .map(|i| {
                let w = i % WARDS;
                nodes[0].token(&format!("rn.w{w:02}.{}", i / WARDS), "nurse", &[&ward(w)])
            })
            .collect();
        let mut followers: HashMap<ChartId, Vec<(usize, usize)>> = HashMap::new();
        let started = Instant::now();
        for k in 0..DEVICES {
            let (w, node) = (k % WARDS, k % 3);
            let slot = (k / WARDS) * FOLLOWED;
            let charts: Vec<ChartId> = (0..FOLLOWED)
                .map(|j| ids[w][(slot + j) % CHARTS_PER_WARD])
                .collect();
            for c in &charts {
                followers.entry(*c).or_default().push((k, node));
            }
            tokio::spawn(device(
                nodes[node].addr.clone(),
                tokens[(k / WARDS % NURSES) * WARDS + w].clone(),
                k,
                charts,
                heard_tx.clone(),
                synced_tx.clone(),
            ));
            if k % 100 == 99 {
                // Not all at the same instant: a ward's tablets come on over minutes.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut ready = 0;
        while ready < DEVICES {
            tokio::time::timeout(Duration::from_secs(600), synced.recv())
                .await
                .expect("every device synced within ten minutes")
                .unwrap();
            ready += 1;
        }
        let connected = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded: Vec<f64> = nodes.iter().map(|s| rss_mib(s.child.id())).collect();
        while heard.try_recv().is_ok() {}

        // The writer: a tablet on node A (index 0). Charts followed by a device on node A, and
        // charts followed by a device on node C (index 2) only.
        let pick = |node: usize| -> Vec<(ChartId, usize)> {
            followers
                .iter()
                .filter(|(_, f)| f.len() == 1 && f[0].1 == node)
                .map(|(c, f)| (*c, f[0].0))
                .take(EDITS)
                .collect()
        };
        let same = pick(0);
        let other = pick(2);
        let writer_store = Arc::new(
            chartsync_core::store::ChartStore::open(
                data[0].path().join("writer.db"),
                StoreOptions::default(),
            )
            .unwrap(),
        );
        let every_ward: Vec<String> = (0..WARDS).map(ward).collect();
        let every_ward: Vec<&str> = every_ward.iter().map(String::as_str).collect();
        let mut config = ClientConfig::new(
            format!("ws://{}/sync", nodes[0].addr),
            nodes[0].token("rn.writer", "nurse", &every_ward),
            "tablet-writer",
        );
        config.backoff_min = Duration::from_millis(100);
        let writer = SyncClient::start(writer_store.clone(), config);
        for (c, _) in same.iter().chain(other.iter()) {
            writer.fetch(*c);
        }
        assert!(writer.wait_until_up_to_date(Duration::from_secs(120)).await);
        let nurse = Staff::new("rn.writer", Role::Nurse, "tablet-writer");
        let same = measure(same, &writer_store, &nurse, &mut heard).await;
        let other = measure(other, &writer_store, &nurse, &mut heard).await;
        writer.stop().await;

        println!(
            "\n## Three nodes on one PostgreSQL database: {} charts, {DEVICES} devices\n",
            WARDS * CHARTS_PER_WARD
        );
        println!(
            "{DEVICES} devices connected and synced their {} charts in {:.1} s.\n",
            DEVICES * FOLLOWED,
            connected.as_secs_f64()
        );
        println!(
            "| node | devices | resident memory, idle | with the devices |\n|---|---|---|---|"
        );
        for (i, name) in ["A", "B", "C"].iter().enumerate() {
            println!(
                "| {name} | {} | {:.0} MiB | {:.0} MiB |",
                (0..DEVICES).filter(|k| k % 3 == i).count(),
                idle[i],
                loaded[i]
            );
        }
        println!(
            "\n| one edit on a tablet on node A, until a device hears of it | p50 | p99 |\n|---|---|---|"
        );
        println!(
            "| device on node A ({} edits) | {:.1} ms | {:.1} ms |",
            same.len(),
            percentile(&same, 0.5),
            percentile(&same, 0.99)
        );
        println!(
            "| device on node C ({} edits) | {:.1} ms | {:.1} ms |",
            other.len(),
            percentile(&other, 0.5),
            percentile(&other, 0.99)
        );
        drop(nodes);
    });
}
