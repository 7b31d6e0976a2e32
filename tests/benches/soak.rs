//! Memory that returns (issue 14, RELIABILITY.md): 50 rounds of connect, ask for 2,000
//! document ids the server has not got, disconnect; the server's resident memory after each
//! round, from /proc. What a connection takes must be given back when it closes: resident
//! memory after round 50 should be within 10% of round 5.
//!
//! Run: `cargo bench -p chartsync-tests --bench soak` (Linux; about a minute).

#[path = "../tests/common/mod.rs"]
mod common;

use chartsync_core::protocol::{DocSync, DocumentId};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// 50, or `SOAK_ROUNDS` (at least 50) to see further whether memory levels off.
fn rounds() -> usize {
    std::env::var("SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(50)
}
const IDS: usize = 2_000;

/// Fields of the server's /proc status, in KiB (or a count for `Threads`).
fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// After one round: resident memory, its anonymous and file-backed parts, and threads.
#[derive(Clone, Copy)]
struct Sample {
    rss: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss: status(pid, "VmRSS"),
        anon: status(pid, "RssAnon"),
        file: status(pid, "RssFile") + status(pid, "RssShmem"),
        threads: status(pid, "Threads"),
    }
}

fn main() {
    chartsync_tests::bench_main(|| async {
        let data = tempfile::tempdir().unwrap();
        // Requests for unknown ids count as denials (RELIABILITY.md); the soak measures
        // memory, not that bound, so it lifts it.
        let server =
            common::Server::start_with(data.path(), "127.0.0.1:0", &["--max-denials", "100000"]);
        let pid = server.child.id();
        let token = server.token("rn.park", "nurse", &["4west"]);
        let empty = automerge::Automerge::new();
        let mut rss = Vec::new();
        let rounds = rounds();
        for round in 1..=rounds {
            let mut tablet =
                common::connect(&server.addr, Some(&token), &format!("soak-{round}"), "soak")
                    .await
                    .unwrap();
            let remote = tablet.conn.remote().unwrap().peer_id.clone();
            for _ in 0..IDS {
                let id = DocumentId::random();
                let m = DocSync::new(id, None)
                    .generate(&empty, &tablet.peer_id, &remote)
                    .unwrap();
                tablet
                    .ws
                    .send(WsMessage::Binary(m.encode().into()))
                    .await
                    .unwrap();
            }
            // Every request answered (doc-unavailable), then goodbye.
            let mut answered = 0;
            while answered < IDS {
                match tablet.ws.next().await {
                    Some(Ok(WsMessage::Binary(_))) => answered += 1,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = tablet.ws.close(None).await;
            drop(tablet);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            rss.push(sample(pid));
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!("\n## Memory that returns: {rounds} rounds of {IDS} unknown ids, each on a fresh connection\n");
        println!(
            "| after round | resident | anonymous | file-backed | threads |\n|---|---|---|---|---|"
        );
        let shown = [1, 5, 10, 20, 30, 40, 50, 100, 150, 200, 300, 400, 500];
        for r in shown.into_iter().filter(|r| *r <= rounds) {
            let s = rss[r - 1];
            println!(
                "| {r} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |",
                mib(s.rss),
                mib(s.anon),
                mib(s.file),
                s.threads
            );
        }
        let growth = (rss[49].rss as f64 / rss[4].rss as f64 - 1.0) * 100.0;
        println!("\nround 50 against round 5: {growth:+.1}% (the goal: within 10%)");
    });
}
