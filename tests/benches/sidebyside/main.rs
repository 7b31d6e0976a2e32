//! chartsync-server beside samod and automerge-repo's JavaScript server, in one run on one
//! machine (issue 15): upload, a new tablet's first sync, a shift reconnect, fan-out between
//! tablets, and idle connections. Our Rust tablet client drives all three; each server's CPU
//! seconds and peak resident memory come from `/proc`. Prints BENCHMARKS.md's table.
//!
//! Run: `cargo bench -p chartsync-tests --bench sidebyside` (the sizes; a few
//! minutes). The README's test command runs the same scenarios small
//! (`tests/tests/sidebyside.rs`).

#[path = "../../tests/common/mod.rs"]
mod common;
mod scenarios;

use scenarios::{quantile, Kind, Results, Sizes};

fn main() {
    chartsync_tests::bench_main(|| async {
        let sizes = Sizes::FULL;
        let bins = scenarios::Bins {
            samod: env!("CARGO_BIN_EXE_samod-server"),
        };
        let template = tempfile::tempdir().unwrap();
        eprintln!(
            "building the upload tablet: {} charts × {} entries",
            sizes.charts, sizes.entries
        );
        let ids = scenarios::upload_template(&template, sizes.charts, sizes.entries);
        let mut all: Vec<(Kind, Results)> = Vec::new();
        // `SIDEBYSIDE_SERVERS=chartsync,samod` runs only those (for profiling one server).
        let only = std::env::var("SIDEBYSIDE_SERVERS").ok();
        for kind in Kind::ALL {
            if let Some(only) = &only {
                if !only.split(',').any(|o| kind.name().starts_with(o.trim())) {
                    continue;
                }
            }
            eprintln!("{}: running", kind.name());
            let results = scenarios::run(kind, &bins, &template, &ids, sizes).await;
            eprintln!("{}: {results:?}", kind.name());
            all.push((kind, results));
        }
        print_table(&all, sizes);
    });
}

fn print_table(all: &[(Kind, Results)], sizes: Sizes) {
    let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    let s = |d: std::time::Duration| format!("{:.2} s", d.as_secs_f64());
    let cpu = |c: f64| format!("{c:.2} s");
    let head: Vec<&str> = all.iter().map(|(k, _)| k.name()).collect();
    println!("\n| scenario | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(all.len()));
    let row = |name: String, f: &dyn Fn(&Results) -> String| {
        let cells: Vec<String> = all.iter().map(|(_, r)| f(r)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let (c, e) = (sizes.charts, sizes.entries);
    row(
        format!("upload {c} charts × {e} entries: wall / server CPU"),
        &|r| format!("{} / {}", s(r.upload.wall), cpu(r.upload.cpu_seconds)),
    );
    row("upload: peak resident memory".into(), &|r| {
        mb(r.upload.peak_rss)
    });
    row(
        format!("first sync of a new tablet ({c} charts): wall / server CPU"),
        &|r| {
            format!(
                "{} / {}",
                s(r.first_sync.wall),
                cpu(r.first_sync.cpu_seconds)
            )
        },
    );
    row("first sync: peak resident memory".into(), &|r| {
        mb(r.first_sync.peak_rss)
    });
    row(
        format!(
            "shift reconnect ({} edits per chart each side): wall / server CPU",
            sizes.edits
        ),
        &|r| format!("{} / {}", s(r.reconnect.wall), cpu(r.reconnect.cpu_seconds)),
    );
    row("reconnect: peak resident memory".into(), &|r| {
        mb(r.reconnect.peak_rss)
    });
    row(
        format!(
            "fan-out, {} tablets on {} charts at {} edits/s: p50 / p99 / max",
            sizes.tablets, sizes.shared_charts, sizes.rate
        ),
        &|r| {
            let l = &r.fanout_latency_ms;
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                quantile(l, 0.5),
                quantile(l, 0.99),
                quantile(l, 1.0)
            )
        },
    );
    row("fan-out: server CPU / peak resident memory".into(), &|r| {
        format!("{} / {}", cpu(r.fanout.cpu_seconds), mb(r.fanout.peak_rss))
    });
    row(
        format!("{} idle connections: memory per connection", sizes.idle),
        &|r| format!("{:.0} KB", r.idle_bytes_per_connection / 1e3),
    );
}
