//! What the server does with the automerge sync message a `sync` carries, short of its store:
//! decode it within the bounds (what it carries is measured before anything inflates it),
//! admit it in dependency order, load its changes onto a fork of a chart, validate them and
//! check the writer, and apply it. Never a panic, never more memory than the bounds allow.
#![no_main]

use std::sync::OnceLock;

use chartsync_core::chart::validate::{check_writer, validate_changes};
use chartsync_core::chart::*;
use chartsync_core::protocol::sync::changes_of;
use chartsync_core::protocol::{ContentBounds, DocSync, DocumentId};
use libfuzzer_sys::fuzz_target;

fn chart() -> &'static Chart {
    static CHART: OnceLock<Chart> = OnceLock::new();
    CHART.get_or_init(chartsync_fuzz_support::admitted)
}

#[path = "../support.rs"]
mod chartsync_fuzz_support;

fuzz_target!(init: chartsync_fuzz_support::keep_caught_panics(), |data: &[u8]| {
    let chart = chart();
    let bounds = ContentBounds {
        changes_per_message: 1_000,
        inflated_bytes_per_change: 1 << 20,
        inflated_bytes_per_message: 4 << 20,
    };
    let id = DocumentId::random();
    let mut sync = DocSync::new(id, None).with_bounds(bounds);
    let Ok(message) = sync.decode(data) else {
        return;
    };
    let message = sync.admit(chart.doc(), message);
    let changes = changes_of(&message);
    let mut fork = chart.fork();
    if fork.load_incremental(&changes).is_ok() {
        let valid = validate_changes(chart.doc(), fork.doc()).is_ok();
        let _ = check_writer(&chart.doc().get_heads(), &fork, "rn.park", Role::Nurse);
        if valid {
            // What passes validation reads as a chart.
            fork.view().expect("a validated chart reads");
        }
    }
    let mut doc = chart.doc().clone();
    let _ = sync.receive(&mut doc, message);
});
