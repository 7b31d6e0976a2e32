//! Charts the fuzz targets start from.
#![allow(dead_code)]

use chartsync_core::chart::*;

/// libfuzzer-sys makes every panic abort, even one the code under test catches (chartsync
/// turns automerge's panics on malformed input into errors: `chart::unpanicked`). This hook
/// only says where a panic happened; one that nobody catches still ends the run as a crash
/// (libfuzzer-sys aborts on it), and one that is caught goes on as the code under test goes on.
pub fn keep_caught_panics() {
    std::panic::set_hook(Box::new(|info| {
        if let Some(at) = info.location() {
            eprintln!("panic at {at}: {}", info.payload_as_str().unwrap_or(""));
        }
    }));
}

#[path = "../core/tests/common/mod.rs"]
mod common;

/// Ana Rivera, admitted to 4west (the chart tests' standard admission).
pub fn admitted() -> Chart {
    common::admitted()
}

/// The admission with a signed observation and a note.
pub fn with_entries() -> Chart {
    let mut chart = common::admitted();
    let nurse = common::night_nurse();
    let entry = chart
        .add_entry(&nurse, common::t(5), common::heart_rate(88))
        .expect("an observation");
    let _ = chart.sign_entry(&nurse, common::t(6), &entry, SignatureMeaning::Author);
    chart
        .add_entry(
            &nurse,
            common::t(7),
            NewEntry::note(EntryKind::NursingNote, "Settled."),
        )
        .expect("a note");
    chart
}
