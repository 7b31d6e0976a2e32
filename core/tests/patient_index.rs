//! The patient-index checks: one MRN on charts that disagree about who the patient is, and
//! dates no stay can have, found from the index, within the wards asked about.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

const DAY: i64 = 24 * 60;

struct Admit<'a> {
    mrn: &'a str,
    name: (&'a str, &'a str),
    born: Option<&'a str>,
    sex: Option<Sex>,
    ward: &'a str,
    at: Timestamp,
}

fn admit(store: &ChartStore, a: Admit<'_>) -> ChartId {
    let (mut p, mut e) = admission();
    p.mrn = a.mrn.into();
    p.family_name = a.name.0.into();
    p.given_names = a.name.1.into();
    p.birth_date = a.born.map(str::to_string);
    p.sex = a.sex;
    e.ward = a.ward.into();
    store
        .create(Chart::create(p, e, &technician(), a.at).unwrap())
        .unwrap()
}

fn kinds(warnings: &[IndexWarning]) -> Vec<(String, IndexWarningKind)> {
    warnings.iter().map(|w| (w.mrn.clone(), w.kind)).collect()
}

#[test]
fn one_mrn_on_charts_that_disagree_and_impossible_dates_are_listed_by_mrn() {
    use IndexWarningKind::*;
    let dir = place();
    let store = open_store(&dir);
    let now = t(30 * DAY);
    let ana = |mrn, name, born, sex, ward, at| Admit {
        mrn,
        name,
        born,
        sex,
        ward,
        at,
    };
    // The same patient twice, consistently (case aside): no warning.
    admit(
        &store,
        ana(
            "MRN-0001",
            ("Rivera", "Ana"),
            Some("1957-03-14"),
            Some(Sex::Female),
            "4west",
            t(0),
        ),
    );
    admit(
        &store,
        ana(
            "MRN-0001",
            ("RIVERA", "ana"),
            Some("1957-03-14"),
            Some(Sex::Female),
            "4west",
            t(10 * DAY),
        ),
    );
    // MRN-0002 on two charts: another name, another date of birth, another sex.
    let first = admit(
        &store,
        ana(
            "MRN-0002",
            ("Okoye", "Ben"),
            Some("1961-07-02"),
            Some(Sex::Male),
            "4west",
            t(0),
        ),
    );
    let second = admit(
        &store,
        ana(
            "MRN-0002",
            ("Okafor", "Bea"),
            Some("1961-02-07"),
            Some(Sex::Female),
            "icu",
            t(DAY),
        ),
    );
    // A date of birth missing on one chart is not a disagreement.
    admit(
        &store,
        ana("MRN-0003", ("Lee", "Jo"), None, None, "4west", t(0)),
    );
    admit(
        &store,
        ana(
            "MRN-0003",
            ("Lee", "Jo"),
            Some("1990-01-01"),
            Some(Sex::Male),
            "4west",
            t(DAY),
        ),
    );
    // Impossible dates.
    let future = admit(
        &store,
        ana(
            "MRN-0004",
            ("Kim", "Su"),
            Some("1980-01-01"),
            None,
            "4west",
            Timestamp::parse("2031-06-01T08:00:00Z").unwrap(),
        ),
    );
    admit(
        &store,
        ana(
            "MRN-0005",
            ("Park", "Min"),
            Some("2027-01-01"),
            None,
            "4west",
            t(0),
        ),
    );
    admit(
        &store,
        ana(
            "MRN-0006",
            ("Old", "Ada"),
            Some("1890-05-05"),
            None,
            "4west",
            t(0),
        ),
    );
    // A clock a few hours fast is not the future.
    admit(
        &store,
        ana(
            "MRN-0007",
            ("Fast", "Al"),
            None,
            None,
            "4west",
            now.plus_seconds(3 * 3_600),
        ),
    );

    let all = store.patient_index_warnings(None, now, None).unwrap();
    assert_eq!(
        kinds(&all),
        [
            ("MRN-0002".to_string(), NameDiffers),
            ("MRN-0002".to_string(), BirthDateDiffers),
            ("MRN-0002".to_string(), SexDiffers),
            ("MRN-0004".to_string(), AdmittedInFuture),
            ("MRN-0005".to_string(), BornAfterAdmission),
            ("MRN-0006".to_string(), ImplausibleAge),
        ]
    );
    assert_eq!(
        all[0].charts,
        [first, second],
        "both charts, oldest admission first"
    );
    assert_eq!(all[3].charts, [future]);
    assert_eq!(
        all[0].to_string(),
        format!("MRN-0002: the same MRN with another name (charts {first}, {second})"),
        "ids only"
    );

    // Within 4west, MRN-0002 has one chart: nothing to compare it with there.
    let ward = store
        .patient_index_warnings(Some(&["4west".to_string()]), now, None)
        .unwrap();
    assert!(ward.iter().all(|w| w.mrn != "MRN-0002"), "{ward:?}");
    // What an import just wrote: only the warnings about those charts.
    let just = store
        .patient_index_warnings(None, now, Some(&[second]))
        .unwrap();
    assert_eq!(kinds(&just).len(), 3);
    assert!(just.iter().all(|w| w.mrn == "MRN-0002"));
}

#[test]
fn a_discharge_before_the_admission_or_ahead_of_now_is_listed() {
    let dir = place();
    let store = open_store(&dir);
    let (p, e) = admission();
    let mut chart = Chart::create(p, e, &technician(), t(0)).unwrap();
    chart.discharge(&technician(), t(2 * DAY), "home").unwrap();
    let id = store.create(chart).unwrap();
    assert!(store
        .patient_index_warnings(None, t(3 * DAY), None)
        .unwrap()
        .is_empty());
    let early = store
        .patient_index_warnings(None, t(DAY / 2), None)
        .unwrap();
    assert_eq!(
        kinds(&early),
        [("MRN-0042".to_string(), IndexWarningKind::DischargedInFuture)]
    );
    assert_eq!(early[0].charts, [id]);
}

/// A discharge dated before the admission cannot be written through the chart API, but
/// another client's change can carry one: the index lists it.
#[test]
fn a_discharge_dated_before_the_admission_by_another_client_is_listed() {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let dir = place();
    let store = open_store(&dir);
    let (p, e) = admission();
    let mut chart = Chart::create(p, e, &technician(), t(DAY)).unwrap();
    chart.discharge(&technician(), t(3 * DAY), "home").unwrap();
    let mut doc = chart.doc().clone();
    doc.set_actor(automerge::ActorId::random());
    let mut tx = doc.transaction();
    let encounter = tx.get(automerge::ROOT, "encounter").unwrap().unwrap().1;
    tx.put(&encounter, "discharged_at", t(0).to_rfc3339())
        .unwrap();
    tx.commit();
    let id = store.create(Chart::from_automerge(doc).unwrap()).unwrap();
    let found = store
        .patient_index_warnings(None, t(5 * DAY), None)
        .unwrap();
    assert_eq!(
        kinds(&found),
        [(
            "MRN-0042".to_string(),
            IndexWarningKind::DischargedBeforeAdmission
        )]
    );
    assert_eq!(found[0].charts, [id]);
}
