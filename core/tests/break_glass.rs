//! Break-glass grants as the store keeps them: a start and an end in the audit trail, however
//! the grant ends (by the person, by its time running out, or before it was even filed), a
//! review with a note, once.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

fn nurse() -> Actor {
    Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    }
}

fn ms_from_now(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis() + ms).unwrap()
}

fn break_glass_rows(store: &ChartStore, chart: ChartId) -> Vec<String> {
    store
        .audit_trail(chart)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == AuditAction::BreakGlass)
        .map(|r| r.detail.unwrap_or_default())
        .collect()
}

#[test]
fn a_grant_is_audited_at_its_start_and_at_its_end_however_it_ends() {
    let dir = place();
    let store = dir.open(StoreOptions::default()).unwrap();
    let chart = store.create(admitted()).unwrap();
    let by = nurse();
    let ask = |starts_at, ends_at| NewBreakGlass {
        by: &by,
        chart,
        reason: BreakGlassReason::EmergencyTreatment,
        text: "rapid response",
        starts_at,
        ends_at,
        granted: "offline",
        device: Some("tablet-4west-02"),
        signed: None,
        filed: true,
    };

    // Its time runs out: the sweep audits the end, once.
    let (g, new) = store
        .grant_break_glass(&ask(ms_from_now(-1000), ms_from_now(150)))
        .unwrap();
    assert!(new && g.covers(Timestamp::now()));
    assert_eq!(store.sweep_break_glass().unwrap(), 0, "not yet over");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(store
        .active_break_glass(Some("rn.park"), None, chart, Timestamp::now())
        .unwrap()
        .is_none());
    assert_eq!(store.sweep_break_glass().unwrap(), 1);
    assert_eq!(store.sweep_break_glass().unwrap(), 0);
    let rows = break_glass_rows(&store, chart);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[1].contains("time ran out"), "{rows:?}");

    // Filed after it was over (a tablet offline throughout): start and end together.
    store
        .grant_break_glass(&ask(ms_from_now(-7_200_000), ms_from_now(-3_600_000)))
        .unwrap();
    assert_eq!(break_glass_rows(&store, chart).len(), 4);
    assert_eq!(store.sweep_break_glass().unwrap(), 0);

    // Ended by the person.
    let (g, _) = store
        .grant_break_glass(&ask(Timestamp::now(), ms_from_now(3_600_000)))
        .unwrap();
    assert!(store
        .active_break_glass(None, Some("tablet-4west-02"), chart, Timestamp::now())
        .unwrap()
        .is_some());
    let ended = store.end_break_glass(g.id, &by).unwrap();
    assert!(ended.ended_at.is_some());
    assert!(store
        .active_break_glass(Some("rn.park"), None, chart, Timestamp::now())
        .unwrap()
        .is_none());
    assert_eq!(break_glass_rows(&store, chart).len(), 6);

    // A reason is required; the end comes after the start.
    assert!(matches!(
        store.grant_break_glass(&NewBreakGlass {
            text: " ",
            ..ask(Timestamp::now(), ms_from_now(1000))
        }),
        Err(StoreError::ReasonRequired)
    ));
    assert!(store
        .grant_break_glass(&ask(Timestamp::now(), ms_from_now(-1)))
        .is_err());

    // Reviewed once, with a note.
    let sup = Actor {
        user: "him.sup".into(),
        role: "records_supervisor".into(),
        device: "pc".into(),
    };
    assert_eq!(
        store
            .break_glass_queue(ReviewFilter::Unreviewed)
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        store.review_break_glass(g.id, &sup, ""),
        Err(StoreError::ReasonRequired)
    ));
    let reviewed = store.review_break_glass(g.id, &sup, "appropriate").unwrap();
    assert_eq!(reviewed.reviewed_by.as_deref(), Some("him.sup"));
    assert!(matches!(
        store.review_break_glass(g.id, &sup, "again"),
        Err(StoreError::AlreadyDecided { .. })
    ));
    assert_eq!(
        store
            .break_glass_queue(ReviewFilter::Unreviewed)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .break_glass_queue(ReviewFilter::Reviewed)
            .unwrap()
            .len(),
        1
    );
}
