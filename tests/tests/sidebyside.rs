//! The side-by-side benchmark's scenarios, small (`Sizes::QUICK`), as a smoke test: every
//! server converges in every scenario under our tablet client, and each one's CPU and
//! memory can be read. The full run: `cargo bench -p chartsync-tests --bench sidebyside`.

mod common;
#[path = "../benches/sidebyside/scenarios.rs"]
mod scenarios;

use scenarios::{Kind, Sizes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_converges_in_every_scenario_and_is_measured() {
    let sizes = Sizes::QUICK;
    let bins = scenarios::Bins {
        samod: env!("CARGO_BIN_EXE_samod-server"),
    };
    let template = tempfile::tempdir().unwrap();
    let ids = scenarios::upload_template(&template, sizes.charts, sizes.entries);
    let js_template = scenarios::js_template(sizes.charts, sizes.entries);
    for kind in Kind::ALL {
        let r = scenarios::run(
            kind,
            &bins,
            &template,
            &ids,
            Some(js_template.path()),
            sizes,
        )
        .await;
        eprintln!("{}: {}", kind.name(), r.summary());
        // Every edit reached every other tablet, once.
        assert_eq!(
            r.fanout_latency_ms.len(),
            sizes.fanout.deliveries(),
            "{}",
            kind.name()
        );
        // Every tablet of the storm converged (each waits for its own; none is left out).
        assert_eq!(
            r.storm_converge_ms.len(),
            sizes.storm.tablets,
            "{}",
            kind.name()
        );
        // The reconnect's changes crossed the wire, and were counted there.
        assert!(
            r.reconnect_change_bytes > 0 && r.reconnect_wire_bytes > r.reconnect_change_bytes / 2,
            "{}: {} bytes relayed for {} bytes of changes",
            kind.name(),
            r.reconnect_wire_bytes,
            r.reconnect_change_bytes
        );
        // The JavaScript tablet went through every step (each step waits until the server
        // has every change of the tablet's, and the tablet every change it was to receive).
        let js = [r.js.upload, r.js.first_sync, r.js.reconnect];
        for used in js {
            assert!(
                !used.wall.is_zero() && used.tablet_cpu_seconds > 0.0,
                "{}: JS tablet {used:?}",
                kind.name()
            );
        }
        let scenarios = [r.upload, r.first_sync, r.reconnect, r.fanout, r.storm];
        for used in scenarios {
            assert!(used.peak_rss > 1_000_000, "{}: {used:?}", kind.name());
        }
        // The server's CPU is read from /proc: over every scenario it did some work.
        let cpu: f64 = scenarios.iter().chain(&js).map(|u| u.cpu_seconds).sum();
        assert!(
            cpu > 0.0,
            "{}: no CPU time read: {scenarios:?}",
            kind.name()
        );
        assert!(r.idle_bytes_per_connection.is_finite());
    }
}
