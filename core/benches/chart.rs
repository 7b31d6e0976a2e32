//! A busy chart: 2,000 entries (observations and notes over a long stay) and 200 signatures.
//! Reports its saved size, then times save, load and view (also of the chart after two
//! tablets wrote apart, when conflicts are looked for).
//!
//! Run: `cargo bench -p chartsync-core --bench chart`

use chartsync_core::chart::*;
use common::busy_chart;
use criterion::{criterion_group, criterion_main, Criterion};

mod common;

fn bench(c: &mut Criterion) {
    let mut chart = busy_chart();
    let bytes = chart.save();
    let view = chart.view().unwrap();
    let json = serde_json::to_vec(&view).unwrap();
    println!(
        "busy chart: {} entries, {} signatures, {} changes; automerge save() {} bytes ({:.1} bytes/entry); view as JSON {} bytes",
        view.entries.len(),
        view.signatures.len(),
        chart.doc().get_changes(&[]).len(),
        bytes.len(),
        bytes.len() as f64 / view.entries.len() as f64,
        json.len()
    );
    let mut g = c.benchmark_group("chart_2000_entries_200_signatures");
    g.sample_size(20);
    g.bench_function("save", |b| b.iter(|| chart.save()));
    g.bench_function("load", |b| b.iter(|| Chart::load(&bytes).unwrap()));
    let loaded = Chart::load(&bytes).unwrap();
    g.bench_function("view", |b| b.iter(|| loaded.view().unwrap()));
    g.bench_function("conflicts", |b| b.iter(|| loaded.conflicts()));
    // The same chart after two tablets each wrote a note while apart: its history is no
    // longer one chain, so the view walks every record for conflicting values.
    let mut merged = Chart::load(&bytes).unwrap();
    let mut other = merged.fork();
    let at = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
    for (chart, nurse) in [(&mut merged, "rn.silva"), (&mut other, "rn.okafor")] {
        let by = Staff::new(nurse, Role::Nurse, "tablet-4west-01");
        chart
            .add_entry(&by, at, NewEntry::note(EntryKind::NursingNote, "Seen"))
            .unwrap();
    }
    merged.merge(&other).unwrap();
    g.bench_function("view_after_concurrent_edits", |b| {
        b.iter(|| merged.view().unwrap())
    });
    g.bench_function("conflicts_after_concurrent_edits", |b| {
        b.iter(|| merged.conflicts())
    });
    g.bench_function("add_observation", |b| {
        let nurse = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
        let mut c = Chart::load(&bytes).unwrap();
        let at = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
        b.iter(|| {
            c.add_entry(
                &nurse,
                at,
                NewEntry::note(EntryKind::Observation, "Resp 16"),
            )
            .unwrap()
        })
    });
    g.finish();

    // What a new tablet does with each chart of its first sync (BENCHMARKS.md, the
    // side-by-side tablets' chart): load it as it came, and find its deficiencies for the
    // store's index.
    let mut small = common::observed_chart(50);
    let small_bytes = small.save();
    let mut g = c.benchmark_group("chart_50_observations");
    g.bench_function("load", |b| b.iter(|| Chart::load(&small_bytes).unwrap()));
    let loaded = Chart::load(&small_bytes).unwrap();
    g.bench_function("deficiencies", |b| {
        b.iter(|| loaded.deficiencies().unwrap())
    });
    g.bench_function("view", |b| b.iter(|| loaded.view().unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
