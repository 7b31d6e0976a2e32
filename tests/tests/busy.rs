//! A busy night on a busy machine: four tablets go offline and back again and again, each
//! time with vital signs charted on several charts, while other work keeps every core busy.
//! Every reconnect must converge: each tablet and the server end with every observation, and
//! nothing is held. (A reconnect that never finished was seen once in fifteen such runs.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::client::{ClientConfig, SyncClient};
use common::*;

const WAIT: Duration = Duration::from_secs(60);
const TABLETS: usize = 4;
const CHARTS: usize = 6;
const ROUNDS: usize = 10;

/// Keeps the machine's cores busy until dropped.
struct Load(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Load {
    fn start(threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Load(stop, handles)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for h in self.1.drain(..) {
            let _ = h.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablets_reconnecting_with_offline_vitals_on_a_busy_machine_all_converge() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let pc_store = tablet_store(&devices, "pc");
    let charts: Vec<ChartId> = (0..CHARTS)
        .map(|n| {
            pc_store
                .create(admit_at(
                    &format!("MRN-{n:04}"),
                    "4west",
                    at(n as i64),
                    &clerk,
                ))
                .unwrap()
        })
        .collect();
    let config = |token: &str, peer: &str| {
        let mut c = ClientConfig::new(url.clone(), token, peer);
        c.wards = vec!["4west".into()];
        c.backoff_min = Duration::from_millis(50);
        c.backoff_max = Duration::from_millis(400);
        c
    };
    let clerk_token = server.token("him.jones", "technician", &["4west"]);
    let pc = SyncClient::start(pc_store.clone(), config(&clerk_token, "records-pc-1"));
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;

    let tablets: Vec<_> = (0..TABLETS)
        .map(|n| {
            let user = format!("rn.n{n}");
            let device = format!("tablet-4west-{n:02}");
            let token = server.token(&user, "nurse", &["4west"]);
            let store = tablet_store(&devices, &device);
            (
                store,
                token,
                device.clone(),
                Staff::new(&user, Role::Nurse, &device),
            )
        })
        .collect();
    // Everyone takes the ward's charts first.
    for (store, token, device, _) in &tablets {
        let c = SyncClient::start(store.clone(), config(token, device));
        let deadline = tokio::time::Instant::now() + WAIT;
        while !charts.iter().all(|id| store.contains(*id).unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ward's charts never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(c.wait_until_up_to_date(WAIT).await);
        c.stop().await;
    }

    let _load = Load::start(2);
    let mut seed = 0x5eed_u64;
    let mut pick = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut written = 0usize;
    for round in 0..ROUNDS {
        // Offline: two observations on each of three charts, per tablet.
        for (store, _, _, nurse) in &tablets {
            for _ in 0..3 {
                let id = charts[pick(CHARTS)];
                for k in 0..2 {
                    let minute = (round * 100 + k) as i64;
                    store
                        .update(id, |ch| {
                            ch.add_entry(nurse, at(minute), heart_rate(60 + k as u32))
                        })
                        .unwrap();
                    written += 1;
                }
            }
        }
        // Back online together, each until up to date, then offline again.
        let clients: Vec<SyncClient> = tablets
            .iter()
            .map(|(store, token, device, _)| {
                SyncClient::start(store.clone(), config(token, device))
            })
            .collect();
        for c in &clients {
            assert!(
                c.wait_until_up_to_date(WAIT).await,
                "round {round}: a reconnect never finished: {:?}",
                c.status().borrow()
            );
        }
        for c in clients {
            c.stop().await;
        }
    }
    drop(_load);

    // One last exchange each, so every tablet has the others' last round, then compare.
    for (store, token, device, _) in &tablets {
        let c = SyncClient::start(store.clone(), config(token, device));
        assert!(c.wait_until_up_to_date(WAIT).await);
        c.stop().await;
        let _ = store;
    }
    let mut on_server = 0;
    for id in &charts {
        let (status, body) = http_get(
            &server.addr,
            &format!("/api/charts/{id}"),
            Some(&clerk_token),
        );
        assert_eq!(status, 200);
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        on_server += view["entries"].as_array().unwrap().len();
        let heads: Vec<_> = tablets
            .iter()
            .map(|(s, ..)| {
                let mut h = s.read(*id, |c| c.heads()).unwrap();
                h.sort();
                h
            })
            .collect();
        assert!(
            heads.windows(2).all(|w| w[0] == w[1]),
            "tablets differ on {id}"
        );
    }
    assert_eq!(on_server, written, "the server has every observation");
    let office = server.token("sup.adams", "records_supervisor", &["*"]);
    let (_, holds) = http_get(&server.addr, "/api/holds?status=all", Some(&office));
    assert_eq!(holds, "[]");
}
