//! Damaged bytes where the store keeps a chart (a snapshot with changes after it), and a
//! damaged store file: loaded, the answer is a chart or a typed error, never a panic. The
//! first byte picks which.
#![no_main]

use chartsync_core::chart::Chart;
use chartsync_core::store::{ChartStore, Compaction, StoreOptions};
use libfuzzer_sys::fuzz_target;

#[path = "../support.rs"]
mod chartsync_fuzz_support;

fuzz_target!(init: chartsync_fuzz_support::keep_caught_panics(), |data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    if pick % 8 != 0 {
        if let Ok(chart) = Chart::load(bytes) {
            let _ = chart.view();
        }
        return;
    }
    // A store file: SQLite's header and pages, damaged.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("charts.db");
    std::fs::write(&path, bytes).expect("written");
    let options = StoreOptions {
        compaction: Compaction::Manual,
        ..StoreOptions::default()
    };
    if let Ok(store) = ChartStore::open(&path, options) {
        let _ = store.verify();
        let _ = store.verify_audit();
    }
});
