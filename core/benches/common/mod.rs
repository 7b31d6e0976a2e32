//! Charts the benchmarks share.
#![allow(dead_code)]

use chartsync_core::chart::*;
use chartsync_core::codes::CodeSystem;

/// A busy chart: 2,000 entries (observations and notes over a long stay), 200 of them signed
/// notes.
pub fn busy_chart() -> Chart {
    let t0 = Timestamp::parse("2026-10-01T00:00:00Z").unwrap();
    let tech = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let nurse = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let dr = Staff::new("dr.okafor", Role::Physician, "tablet-4west-02");
    let mut chart = admitted(&tech, t0);
    for i in 0..2000i64 {
        let at = t0.plus_seconds(i * 900);
        if i % 10 == 0 {
            let id = chart
                .add_entry(
                    &dr,
                    at,
                    NewEntry::note(
                        EntryKind::ProgressNote,
                        format!(
                            "Day {}: afebrile, chest clear, tolerating diet. Continue current plan; \
                             review bloods in the morning. Mobilising with physiotherapy.",
                            i / 96
                        ),
                    ),
                )
                .unwrap();
            chart
                .sign_entry(&dr, at.plus_seconds(60), &id, SignatureMeaning::Author)
                .unwrap();
        } else {
            chart
                .add_entry(
                    &nurse,
                    at,
                    NewEntry {
                        shift: Some(Shift::Day),
                        effective_at: Some(at),
                        ..heart_rate(60 + i % 40)
                    },
                )
                .unwrap();
        }
    }
    chart
}

/// Ana Rivera, admitted to 4west bed 12A by `by` at `at`.
pub fn admitted(by: &Staff, at: Timestamp) -> Chart {
    Chart::create(
        NewPatient {
            mrn: "MRN-0042".into(),
            family_name: "Rivera".into(),
            given_names: "Ana".into(),
            birth_date: Some("1957-03-14".into()),
            sex: Some(Sex::Female),
            address: None,
            phone: None,
        },
        NewEncounter {
            ward: "4west".into(),
            bed: Some("12A".into()),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: Some("dr.okafor".into()),
        },
        by,
        at,
    )
    .unwrap()
}

/// A nurse's heart rate of `bpm`, on the night shift.
pub fn heart_rate(bpm: i64) -> NewEntry {
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
        value: Some(bpm.to_string()),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}

/// The side-by-side bench's chart (BENCHMARKS.md): admitted by a nurse, who then wrote
/// `entries` heart rates.
pub fn observed_chart(entries: i64) -> Chart {
    let at = Timestamp::parse("2026-11-27T20:00:00Z").unwrap();
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    let mut chart = admitted(&nurse, at);
    for k in 0..entries {
        chart
            .add_entry(
                &nurse,
                at.plus_seconds(60 * (k + 1)),
                heart_rate(60 + k % 60),
            )
            .unwrap();
    }
    chart
}
