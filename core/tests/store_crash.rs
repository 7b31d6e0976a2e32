//! A tablet's battery dies mid-commit (or a server node is killed mid-commit): a child process
//! commits observations (and compacts, and admits new patients) in a loop and is killed with
//! SIGKILL at random moments. After every kill the store must open, pass its integrity check,
//! and hold every commit the child was told had returned. On SQLite and on PostgreSQL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

const DIR_VAR: &str = "CHARTSYNC_CRASH_STORE";

fn options() -> StoreOptions {
    StoreOptions {
        // Compact at every chance, so that kills land in compactions too.
        compaction: Compaction::Background,
        compact_min_bytes: 0,
        ..StoreOptions::default()
    }
}

/// The child: runs only when the parent starts it.
#[test]
#[ignore = "run by a_battery_pull_mid_commit_loses_nothing_that_was_acknowledged"]
fn crash_child() {
    let place = place_at(&std::env::var(DIR_VAR).expect("started by the crash test"));
    let store = place.open(options()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut ids: Vec<ChartId> = store
        .census("4west")
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    for n in 0u64.. {
        if ids.is_empty() || n % 40 == 0 {
            let id = store.create(admitted_to("4west", ids.len())).unwrap();
            writeln!(out, "ACK chart {id}").unwrap();
            ids.push(id);
        }
        let id = ids[(n as usize) % ids.len()];
        let entry = store
            .update(id, |c| {
                c.add_entry(
                    &night_nurse(),
                    t(n as i64),
                    heart_rate(60 + (n % 50) as u32),
                )
            })
            .unwrap();
        // Printed only after update() returned: the commit is acknowledged.
        writeln!(out, "ACK entry {id} {entry}").unwrap();
        out.flush().unwrap();
        if n % 25 == 0 {
            store.compact(id).unwrap();
        }
    }
}

/// A small deterministic generator, seeded per run and printed, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn a_battery_pull_mid_commit_loses_nothing_that_was_acknowledged() {
    let place = place();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut acknowledged: Vec<String> = Vec::new();
    let rounds = 30;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, place.location())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let stdout = child.stdout.take().unwrap();
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(ack) = line.strip_prefix("ACK ") {
                        lines.lock().unwrap().push(ack.to_string());
                    }
                }
            })
        };
        // Kill it once it has committed something, at a random moment after.
        let wait = Duration::from_millis(20 + rng.next(400));
        let start = std::time::Instant::now();
        while lines.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let new = lines.lock().unwrap().clone();
        assert!(
            !new.is_empty(),
            "round {round}: the child committed nothing"
        );
        acknowledged.extend(new);

        let store = place
            .open(StoreOptions {
                compaction: Compaction::Manual,
                ..options()
            })
            .unwrap_or_else(|e| {
                panic!("round {round} (seed {seed}): the store does not open: {e}")
            });
        store
            .verify()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        for ack in &acknowledged {
            let parts: Vec<&str> = ack.split(' ').collect();
            let id: ChartId = parts[1].parse().unwrap();
            match parts[0] {
                "chart" => assert!(
                    store.contains(id).unwrap(),
                    "round {round} (seed {seed}): lost chart {id}"
                ),
                _ => {
                    let found = store.read(id, |c| c.entry(parts[2]).is_ok()).unwrap();
                    assert!(
                        found,
                        "round {round} (seed {seed}): lost entry {}",
                        parts[2]
                    );
                }
            }
        }
    }
    println!(
        "{rounds} kills, {} acknowledged commits, all present",
        acknowledged.len()
    );
}
