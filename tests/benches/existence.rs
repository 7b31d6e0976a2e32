//! Same answer, same time (issue 14, RELIABILITY.md): a nurse's token probes a chart on another
//! ward and an id that does not exist, in pairs, each pair on a fresh connection and in a
//! random order, with each kind of first message a device can send about a document it has
//! not got. Prints the median round trip of each and the share of pairs in which the chart
//! on another ward was answered more slowly: about 50% means the two cannot be told apart by
//! timing; the issue measured 93–97% before.
//!
//! Run: `cargo bench -p chartsync-tests --bench existence` (about a minute).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use automerge::sync::SyncDoc;
use automerge::Automerge;
use chartsync_core::chart::{Role, Staff};
use chartsync_core::protocol::{DocumentId, Message};

const PAIRS: usize = 300;

/// A small deterministic generator for the order within each pair.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 63 == 1
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    chartsync_tests::bench_main(|| async {
        let data = tempfile::tempdir().unwrap();
        let devices = tempfile::tempdir().unwrap();
        // The probes are the point here, not the bound on them.
        let server =
            common::Server::start_with(data.path(), "127.0.0.1:0", &["--max-denials", "100000"]);
        let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
        let pc_store = chartsync_tests::tablet_store(&devices, "pc");
        let icu = pc_store
            .create(chartsync_tests::admit_at(
                "MRN-0900",
                "icu",
                chartsync_tests::at(0),
                &clerk,
            ))
            .unwrap();
        let token = server.token("him.jones", "technician", &["icu"]);
        let mut config = chartsync_core::client::ClientConfig::new(
            format!("ws://{}/sync", server.addr),
            &token,
            "records-pc-1",
        );
        config.wards = vec!["icu".into()];
        let pc = chartsync_core::client::SyncClient::start(pc_store.clone(), config);
        assert!(pc.wait_until_up_to_date(common::WAIT).await);
        pc.stop().await;

        let nurse = server.token("rn.park", "nurse", &["4west"]);
        let rn = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
        let made_up = chartsync_tests::admit_at("MRN-0901", "4west", chartsync_tests::at(0), &rn);
        let empty = Automerge::new();
        let probes: [(&str, bool, &Automerge); 3] = [
            ("request", true, &empty),
            ("sync that has nothing", false, &empty),
            ("sync naming heads", false, made_up.doc()),
        ];
        let mut coin = Coin(14);
        println!("\n## Same answer, same time: {PAIRS} pairs per probe, each pair on a fresh connection\n");
        println!("| probe | chart on another ward (median) | id that does not exist (median) | pairs where the chart on another ward was slower |");
        println!("|---|---|---|---|");
        for (what, request, doc) in probes {
            let data = doc
                .generate_sync_message(&mut automerge::sync::State::new())
                .unwrap()
                .encode();
            let (mut forbidden, mut missing, mut slower) = (Vec::new(), Vec::new(), 0);
            for pair in 0..PAIRS {
                let mut tablet = common::connect(
                    &server.addr,
                    Some(&nurse),
                    &format!("probe-{pair}"),
                    "probe",
                )
                .await
                .unwrap();
                let remote = tablet.conn.remote().unwrap().peer_id.clone();
                let peer = format!("probe-{pair}");
                let probe = |id| Message::about_document(request, id, &peer, &remote, data.clone());
                let icu_first = coin.flip();
                let order = if icu_first {
                    [icu, DocumentId::random()]
                } else {
                    [DocumentId::random(), icu]
                };
                let mut took = [Duration::ZERO; 2];
                for (k, id) in order.into_iter().enumerate() {
                    let started = Instant::now();
                    assert!(tablet.ask(&probe(id)).await.is_some(), "{what}: no answer");
                    took[k] = started.elapsed();
                }
                let (f, m) = if icu_first {
                    (took[0], took[1])
                } else {
                    (took[1], took[0])
                };
                forbidden.push(f);
                missing.push(m);
                slower += usize::from(f > m);
            }
            println!(
                "| {what} | {:.0} µs | {:.0} µs | {:.0}% |",
                median(forbidden).as_secs_f64() * 1e6,
                median(missing).as_secs_f64() * 1e6,
                slower as f64 * 100.0 / PAIRS as f64
            );
        }
    });
}
