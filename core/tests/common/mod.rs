//! People, devices and a standard admission shared by the chart tests.
#![allow(dead_code)]

use chartsync_core::chart::*;

mod text;
#[allow(unused_imports)]
pub use text::incompressible_text;

pub fn physician() -> Staff {
    Staff::new("dr.okafor", Role::Physician, "tablet-4west-01")
}
pub fn day_nurse() -> Staff {
    Staff::new("rn.silva", Role::Nurse, "tablet-4west-01")
}
pub fn night_nurse() -> Staff {
    Staff::new("rn.park", Role::Nurse, "tablet-4west-02")
}
pub fn technician() -> Staff {
    Staff::new("him.jones", Role::Technician, "records-pc-1")
}
pub fn coder() -> Staff {
    Staff::new("cdr.wu", Role::Coder, "records-pc-2")
}
pub fn supervisor() -> Staff {
    Staff::new("him.sup", Role::RecordsSupervisor, "records-pc-3")
}

// Where a test's store lives (SQLite, or PostgreSQL when the suite runs there). It needs the
// test crate's own dependencies (rusqlite, postgres); the fuzz targets, which include this
// file for its fixtures, have neither.
#[cfg(not(fuzzing))]
mod place;
#[cfg(not(fuzzing))]
#[allow(unused_imports)]
pub use place::*;

/// 2026-11-02T08:00:00Z plus `minutes`.
pub fn t(minutes: i64) -> Timestamp {
    Timestamp::parse("2026-11-02T08:00:00Z")
        .unwrap()
        .plus_seconds(minutes * 60)
}

pub fn admission() -> (NewPatient, NewEncounter) {
    (
        NewPatient {
            mrn: "MRN-0042".into(),
            family_name: "Rivera".into(),
            given_names: "Ana Maria".into(),
            birth_date: Some("1957-03-14".into()),
            sex: Some(Sex::Female),
            address: Some("12 Elm St".into()),
            phone: Some("555-0100".into()),
        },
        NewEncounter {
            ward: "4west".into(),
            bed: Some("12A".into()),
            class: EncounterClass::Inpatient,
            admit_source: Some("emergency department".into()),
            attending: Some("dr.okafor".into()),
        },
    )
}

pub fn admitted() -> Chart {
    let (p, e) = admission();
    Chart::create(p, e, &technician(), t(0)).unwrap()
}

/// A replica on another device: the same document, as if synced before going offline.
pub fn replica(chart: &mut Chart) -> Chart {
    Chart::load(&chart.save()).unwrap()
}

/// The `n`th patient of a ward's census, each with their own MRN and bed.
pub fn admission_to(ward: &str, n: usize) -> (NewPatient, NewEncounter) {
    let (mut p, mut e) = admission();
    p.mrn = format!("MRN-{ward}-{n:05}");
    p.family_name = format!("Patient{n}");
    e.ward = ward.to_string();
    e.bed = Some(format!(
        "{:02}{}",
        n / 2 + 1,
        if n.is_multiple_of(2) { 'A' } else { 'B' }
    ));
    (p, e)
}

pub fn admitted_to(ward: &str, n: usize) -> Chart {
    let (p, e) = admission_to(ward, n);
    Chart::create(p, e, &technician(), t(0)).unwrap()
}

/// A nurse's heart-rate observation.
pub fn heart_rate(bpm: u32) -> NewEntry {
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(
            chartsync_core::codes::CodeSystem::Loinc,
            "8867-4",
        )],
        value: Some(bpm.to_string()),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}
