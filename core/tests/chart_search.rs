//! Finding a chart as the records office does: by MRN, name, date of birth, a day the patient
//! was in; within the person's wards; bad input refused without echoing it.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

const DAY: i64 = 24 * 60;

/// A patient admitted at `t(admitted)` to `ward`, discharged at `t(discharged)` if given.
fn admit(
    store: &ChartStore,
    mrn: &str,
    name: (&str, &str),
    born: Option<&str>,
    ward: &str,
    admitted: i64,
    discharged: Option<i64>,
) -> ChartId {
    let (mut p, mut e) = admission();
    p.mrn = mrn.into();
    p.family_name = name.0.into();
    p.given_names = name.1.into();
    p.birth_date = born.map(str::to_string);
    e.ward = ward.into();
    let mut chart = Chart::create(p, e, &technician(), t(admitted)).unwrap();
    if let Some(out) = discharged {
        chart.discharge(&technician(), t(out), "home").unwrap();
    }
    store.create(chart).unwrap()
}

fn found(store: &ChartStore, search: ChartSearch) -> Vec<String> {
    store
        .search_charts(&search, None, 100)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.mrn)
        .collect()
}

#[test]
fn a_chart_is_found_by_mrn_name_birth_date_or_a_day_the_patient_was_in() {
    let dir = place();
    let store = open_store(&dir);
    // t(0) is 2026-11-02 08:00 UTC.
    admit(
        &store,
        "MRN-0042",
        ("Rivera", "Ana Maria"),
        Some("1957-03-14"),
        "4west",
        0,
        Some(3 * DAY),
    );
    admit(
        &store,
        "MRN-0043",
        ("Rivers", "Tom"),
        Some("1957-03-14"),
        "4west",
        10 * DAY,
        None,
    );
    admit(
        &store,
        "MRN-0044",
        ("Rivera", "Luis"),
        None,
        "icu",
        -40 * DAY,
        Some(-35 * DAY),
    );
    admit(
        &store,
        "MRN-0045",
        ("O'Neil", "Kay_1%"),
        Some("2001-12-01"),
        "4west",
        0,
        None,
    );

    let by = |f: fn(&mut ChartSearch, String), v: &str| {
        let mut s = ChartSearch::default();
        f(&mut s, v.to_string());
        found(&store, s)
    };
    assert_eq!(
        by(|s, v| s.mrn = Some(v), "mrn-0042"),
        ["MRN-0042"],
        "the MRN, case aside"
    );
    assert!(
        by(|s, v| s.mrn = Some(v), "MRN-004").is_empty(),
        "the whole MRN"
    );
    // Names: the family name's beginning, case aside; by name, newest admission first.
    assert_eq!(
        by(|s, v| s.name = Some(v), "riv"),
        ["MRN-0042", "MRN-0044", "MRN-0043"]
    );
    assert_eq!(by(|s, v| s.name = Some(v), "Rivera, l"), ["MRN-0044"]);
    assert_eq!(by(|s, v| s.name = Some(v), " rivera ,ana "), ["MRN-0042"]);
    assert_eq!(by(|s, v| s.name = Some(v), "o'neil"), ["MRN-0045"]);
    // A name's own % and _ are letters, not wildcards.
    assert!(by(|s, v| s.name = Some(v), "%").is_empty());
    assert!(by(|s, v| s.name = Some(v), "R_vera").is_empty());
    assert_eq!(by(|s, v| s.name = Some(v), "O'Neil, Kay_1%"), ["MRN-0045"]);
    assert_eq!(
        by(|s, v| s.birth_date = Some(v), "1957-03-14"),
        ["MRN-0042", "MRN-0043"]
    );
    // A day in: from the admission's day to the discharge's, whole days; still in, to today.
    assert_eq!(
        by(|s, v| s.visit_date = Some(v), "2026-11-05"),
        ["MRN-0045", "MRN-0042"]
    );
    assert_eq!(
        by(|s, v| s.visit_date = Some(v), "2026-11-06"),
        ["MRN-0045"]
    );
    assert_eq!(
        by(|s, v| s.visit_date = Some(v), "2026-11-12"),
        ["MRN-0045", "MRN-0043"]
    );
    assert!(by(|s, v| s.visit_date = Some(v), "2026-11-01").is_empty());
    // Fields together narrow.
    let both = ChartSearch {
        name: Some("riv".into()),
        birth_date: Some("1957-03-14".into()),
        visit_date: Some("2026-11-02".into()),
        ..ChartSearch::default()
    };
    assert_eq!(found(&store, both.clone()), ["MRN-0042"]);
    assert_eq!(both.fields(), ["name", "birth_date", "visit_date"]);

    // Within the person's wards; a limit, with the total.
    let icu = store
        .search_charts(
            &ChartSearch {
                name: Some("Riv".into()),
                ..ChartSearch::default()
            },
            Some(&["icu".to_string()]),
            100,
        )
        .unwrap();
    assert_eq!(icu.hits.len(), 1);
    assert_eq!(icu.hits[0].mrn, "MRN-0044");
    let first = store
        .search_charts(
            &ChartSearch {
                name: Some("r".into()),
                ..ChartSearch::default()
            },
            None,
            2,
        )
        .unwrap();
    assert_eq!((first.hits.len(), first.total), (2, 3));
    let hit = &first.hits[0];
    assert_eq!(
        (
            hit.birth_date.as_deref(),
            hit.ward.as_str(),
            hit.status,
            hit.admitted_at,
            hit.discharged_at
        ),
        (
            Some("1957-03-14"),
            "4west",
            EncounterStatus::Discharged,
            t(0),
            Some(t(3 * DAY))
        )
    );
}

#[test]
fn an_empty_search_or_a_malformed_date_is_refused_without_its_value() {
    let dir = place();
    let store = open_store(&dir);
    for empty in [
        ChartSearch::default(),
        ChartSearch {
            name: Some("  ".into()),
            mrn: Some(String::new()),
            ..ChartSearch::default()
        },
    ] {
        let e = store.search_charts(&empty, None, 10).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }
    for (search, field) in [
        (
            ChartSearch {
                birth_date: Some("14/03/1957".into()),
                ..ChartSearch::default()
            },
            "birth_date",
        ),
        (
            ChartSearch {
                visit_date: Some("2026-13-01".into()),
                ..ChartSearch::default()
            },
            "visit_date",
        ),
    ] {
        let e = store
            .search_charts(&search, None, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field) && e.contains("YYYY-MM-DD"), "{e}");
        assert!(
            !e.contains("1957") && !e.contains("2026-13"),
            "the value is not repeated: {e}"
        );
    }
}
