//! chartsync-server beside samod and automerge-repo's JavaScript server, in one run on one
//! machine (issue 15): upload, a new tablet's first sync, a shift reconnect (and its bytes on
//! the wire), fan-out between tablets at a ward's pace and a busy hospital's, idle
//! connections, and a reconnect storm. Our Rust tablet client drives all three; each server's
//! CPU seconds and peak resident memory come from `/proc`. Prints BENCHMARKS.md's table and
//! draws the latency distributions to PNG (`target/sidebyside/`, or `SIDEBYSIDE_PLOTS`).
//!
//! Run: `cargo bench -p chartsync-tests --bench sidebyside` (the sizes; about ten
//! minutes). The README's test command runs the same scenarios small
//! (`tests/tests/sidebyside.rs`).

#[path = "../../tests/common/mod.rs"]
mod common;
mod plots;
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
        let js_template = scenarios::runs("js").then(|| {
            eprintln!("building the JavaScript tablet's charts");
            scenarios::js_template(sizes.charts, sizes.entries)
        });
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
            let results = scenarios::run(
                kind,
                &bins,
                &template,
                &ids,
                js_template.as_ref().map(|t| t.path()),
                sizes,
            )
            .await;
            eprintln!("{}: {}", kind.name(), results.summary());
            all.push((kind, results));
        }
        print_table(&all, sizes);
        draw(&all, sizes);
    });
}

/// The latency distributions, one PNG per scenario, one line per server.
fn draw(all: &[(Kind, Results)], sizes: Sizes) {
    if !plots::font() {
        return;
    }
    let dir = plots::dir();
    std::fs::create_dir_all(&dir).unwrap();
    let f = sizes.fanout;
    let mut figures: Vec<(&str, String, &str, Vec<(String, &[f64])>)> = vec![(
        "fanout.png",
        format!(
            "Fan-out: {} tablets, {} edits/s, each edit to every other tablet",
            f.tablets, f.rate
        ),
        "deliveries",
        all.iter()
            .map(|(k, r)| (k.name().to_string(), r.fanout_latency_ms.as_slice()))
            .collect(),
    )];
    if let Some(b) = sizes.busy_fanout {
        figures.push((
            "fanout-busy.png",
            format!(
                "Fan-out: {} tablets, {} edits/s, each edit to every other tablet",
                b.tablets, b.rate
            ),
            "deliveries",
            all.iter()
                .filter_map(|(k, r)| {
                    Some((k.name().to_string(), r.busy_fanout.as_ref()?.1.as_slice()))
                })
                .collect(),
        ));
    }
    let st = sizes.storm;
    figures.push((
        "storm.png",
        format!(
            "Reconnect storm: {} tablets at once, time until each has converged",
            st.tablets
        ),
        "tablets",
        all.iter()
            .map(|(k, r)| {
                let n = r.storm_converge_ms.len();
                let name = if n == st.tablets {
                    k.name().to_string()
                } else {
                    format!("{} ({n} of {} converged)", k.name(), st.tablets)
                };
                (name, r.storm_converge_ms.as_slice())
            })
            .collect(),
    ));
    for (file, title, what, series) in figures {
        // A scenario this run did not measure (`SIDEBYSIDE_SCENARIOS`) leaves the plot of an
        // earlier run as it was.
        if series.iter().all(|(_, v)| v.is_empty()) {
            continue;
        }
        let series: Vec<(&str, &[f64])> = series.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let path = dir.join(file);
        match plots::cdf(&path, &title, what, &series) {
            Ok(()) => eprintln!("drew {}", path.display()),
            Err(e) => eprintln!("could not draw {}: {e}", path.display()),
        }
    }
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
    // Wall, the server's CPU, and our tablet client's (the bench process's).
    let used = |u: &scenarios::Used| {
        if u.wall.is_zero() {
            return "-".to_string();
        }
        format!(
            "{} / {} / {}",
            s(u.wall),
            cpu(u.cpu_seconds),
            cpu(u.tablet_cpu_seconds)
        )
    };
    let peak = |u: &scenarios::Used| match u.wall.is_zero() {
        true => "-".to_string(),
        false => mb(u.peak_rss),
    };
    row(
        format!("upload {c} charts × {e} entries: wall / server CPU / tablet CPU"),
        &|r| used(&r.upload),
    );
    row("upload: peak resident memory".into(), &|r| peak(&r.upload));
    row(
        format!("first sync of a new tablet ({c} charts): wall / server CPU / tablet CPU"),
        &|r| used(&r.first_sync),
    );
    row("first sync: peak resident memory".into(), &|r| {
        peak(&r.first_sync)
    });
    row(
        format!(
            "shift reconnect ({} edits per chart each side): wall / server CPU / tablet CPU",
            sizes.edits
        ),
        &|r| used(&r.reconnect),
    );
    row("reconnect: peak resident memory".into(), &|r| {
        peak(&r.reconnect)
    });
    row(
        "reconnect: bytes on the wire / raw bytes of the changes".into(),
        &|r| {
            if r.reconnect.wall.is_zero() {
                return "-".into();
            }
            format!(
                "{:.2} MB / {:.2} MB ({:.2}x)",
                r.reconnect_wire_bytes as f64 / 1e6,
                r.reconnect_change_bytes as f64 / 1e6,
                r.reconnect_wire_bytes as f64 / r.reconnect_change_bytes.max(1) as f64
            )
        },
    );
    // The second view: the same three with automerge-repo's JavaScript client as the tablet.
    let js = |r: &Results, step: usize| [r.js.upload, r.js.first_sync, r.js.reconnect][step];
    for (step, name) in ["upload", "first sync", "shift reconnect"]
        .iter()
        .enumerate()
    {
        row(
            format!("JS tablet, {name}: wall / server CPU / tablet CPU"),
            &|r| used(&js(r, step)),
        );
        row(format!("JS tablet, {name}: peak resident memory"), &|r| {
            peak(&js(r, step))
        });
    }
    let spread = |l: &[f64]| {
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            quantile(l, 0.5),
            quantile(l, 0.99),
            quantile(l, 1.0)
        )
    };
    // A scenario this run did not measure (`SIDEBYSIDE_SCENARIOS`, or one that did not
    // complete) shows as "-".
    let load = |u: &scenarios::Used| match u.wall.is_zero() {
        true => "-".to_string(),
        false => format!("{} / {}", cpu(u.cpu_seconds), mb(u.peak_rss)),
    };
    let f = sizes.fanout;
    row(
        format!(
            "fan-out, {} tablets on {} charts at {} edits/s: p50 / p99 / max",
            f.tablets, f.charts, f.rate
        ),
        &|r| match r.fanout.wall.is_zero() {
            true => "-".into(),
            false => spread(&r.fanout_latency_ms),
        },
    );
    row("fan-out: server CPU / peak resident memory".into(), &|r| {
        load(&r.fanout)
    });
    if let Some(b) = sizes.busy_fanout {
        row(
            format!(
                "busy fan-out, {} tablets on {} charts at {} edits/s for {} s: p50 / p99 / max",
                b.tablets, b.charts, b.rate, b.seconds
            ),
            &|r| {
                r.busy_fanout
                    .as_ref()
                    .map_or("-".into(), |(_, l)| spread(l))
            },
        );
        row(
            "busy fan-out: server CPU / peak resident memory".into(),
            &|r| r.busy_fanout.as_ref().map_or("-".into(), |(u, _)| load(u)),
        );
    }
    row(
        format!("{} idle connections: memory per connection", sizes.idle),
        &|r| match r.idle_bytes_per_connection {
            0.0 => "-".into(),
            b => format!("{:.0} KB", b / 1e3),
        },
    );
    let st = sizes.storm;
    row(
        format!(
            "reconnect storm, {} tablets × {} charts × {} offline edits: time to converge p50 / p99 / max",
            st.tablets, st.charts, st.edits
        ),
        &|r| {
            let n = r.storm_converge_ms.len();
            if r.storm.wall.is_zero() {
                "-".into()
            } else if n == st.tablets {
                spread(&r.storm_converge_ms)
            } else {
                format!(
                    "{} ({n} of {} converged within {} s)",
                    spread(&r.storm_converge_ms),
                    st.tablets,
                    scenarios::STORM_LIMIT.as_secs()
                )
            }
        },
    );
    row(
        "storm: server CPU / peak resident memory (the simulated tablets' CPU)".into(),
        &|r| match r.storm.wall.is_zero() {
            true => "-".into(),
            false => format!("{} ({})", load(&r.storm), cpu(r.storm_tablets_cpu)),
        },
    );
}
