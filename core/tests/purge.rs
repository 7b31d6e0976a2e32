//! Charts leave tablets, as the store does it: a chart that left the device's wards is
//! removed once its time comes and only while the server has everything written on it there
//! (or, on a revoked tablet, holds it); nothing of it stays but its id and heads; and the
//! server records each removal once, audited, forgetting the device's sync state for it.

mod common;

use chartsync_core::chart::*;
use chartsync_core::protocol::{HoldReason, LeftReason};
use chartsync_core::store::*;
use common::*;

fn open(place: &Place) -> ChartStore {
    place.open(StoreOptions::default()).unwrap()
}

fn hours(n: i64) -> Timestamp {
    Timestamp::now().plus_seconds(n * 3600)
}

/// A chart on the tablet whose every change the server acknowledged.
fn acknowledged_chart(store: &ChartStore) -> ChartId {
    let id = store.create(admitted()).unwrap();
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(10), heart_rate(80)))
        .unwrap();
    let heads = store.read(id, |c| c.heads()).unwrap();
    store.acknowledge(id, &heads).unwrap();
    id
}

#[test]
fn a_chart_that_left_is_kept_read_only_until_its_time_then_removed_whole() {
    let place = place();
    let store = open(&place);
    let id = acknowledged_chart(&store);
    let staying = acknowledged_chart(&store);
    store
        .save_sync_state("server-storage", id, &automerge::sync::State::new())
        .unwrap();
    let heads = store.read(id, |c| c.heads()).unwrap();
    assert!(store
        .set_departed(id, LeftReason::Discharged, Some(hours(24)))
        .unwrap());

    // Before its time: still there, read-only.
    assert!(store.purge_due(hours(23)).unwrap().is_empty());
    assert!(store.contains(id).unwrap());
    assert!(store.read_only(id).unwrap().is_some());

    // Its time: gone, with its sync state and departure; the other chart stays.
    let purged = store.purge_due(hours(25)).unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].chart, id);
    assert_eq!(purged[0].reason, LeftReason::Discharged);
    assert_eq!(purged[0].heads, heads);
    assert!(!store.contains(id).unwrap());
    assert!(store.read(id, |c| c.heads()).is_err());
    assert_eq!(store.sync_state("server-storage", id).unwrap(), None);
    assert_eq!(store.departed(id).unwrap(), None);
    assert_eq!(store.acknowledged(id).unwrap(), Vec::new());
    assert!(store.contains(staying).unwrap());
    assert_eq!(
        store
            .list(&ChartFilter::default())
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![staying]
    );

    // Kept: the id, the reason and the heads, reported until the server recorded it.
    assert_eq!(store.unreported_purges().unwrap().len(), 1);
    // An answer about another removal of it (an earlier one) changes nothing.
    store
        .purge_reported(id, purged[0].at.plus_seconds(-60))
        .unwrap();
    assert_eq!(store.unreported_purges().unwrap().len(), 1);
    store.purge_reported(id, purged[0].at).unwrap();
    assert!(store.unreported_purges().unwrap().is_empty());
    let kept = store.purged(id).unwrap().unwrap();
    assert!(kept.reported);
    assert_eq!(kept.heads, heads);

    // Asked again: nothing more to do.
    assert!(store.purge_due(hours(48)).unwrap().is_empty());
    // A chart that was never departed is not removed by the clock.
    assert!(store.contains(staying).unwrap());
}

#[test]
fn a_chart_with_a_change_the_server_has_not_acknowledged_is_never_removed() {
    let place = place();
    let store = open(&place);
    let id = acknowledged_chart(&store);
    let acknowledged = store.read(id, |c| c.heads()).unwrap();
    // Written after the server's last word (a late entry, under break-glass).
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(20), heart_rate(91)))
        .unwrap();
    assert!(
        !store
            .set_departed(id, LeftReason::Transferred, Some(hours(-1)))
            .unwrap(),
        "not departed with a change to send"
    );
    assert_eq!(store.purge(id, LeftReason::Transferred).unwrap(), None);
    assert!(store.contains(id).unwrap());
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        2
    );

    // The server acknowledged it: now it may go.
    let all = store.read(id, |c| c.heads()).unwrap();
    assert_ne!(all, acknowledged);
    store.acknowledge(id, &all).unwrap();
    assert!(store
        .set_departed(id, LeftReason::Transferred, Some(hours(-1)))
        .unwrap());
    assert_eq!(store.purge_due(Timestamp::now()).unwrap().len(), 1);
    assert!(!store.contains(id).unwrap());
}

#[test]
fn a_revoked_tablet_loses_every_chart_the_server_has_and_keeps_what_is_unsent_or_held() {
    let place = place();
    let store = open(&place);
    let acknowledged = acknowledged_chart(&store);
    let unsent = acknowledged_chart(&store);
    store
        .update(unsent, |c| {
            c.add_entry(&night_nurse(), t(30), heart_rate(99))
        })
        .unwrap();
    let held = acknowledged_chart(&store);
    store
        .update(held, |c| {
            c.add_entry(&night_nurse(), t(30), heart_rate(101))
        })
        .unwrap();
    // The server holds what the tablet sent of `held` (everything it has).
    std::thread::sleep(std::time::Duration::from_millis(5));
    let heads = store.read(held, |c| c.heads()).unwrap();
    store
        .set_device_hold(
            &DeviceHold {
                chart: held,
                hold: Some(7),
                reason: HoldReason::Revoked,
                summary: "the tablet was revoked".into(),
                since: Timestamp::now(),
                rejected: None,
            },
            &heads,
        )
        .unwrap();

    assert_eq!(store.wiping().unwrap(), None);
    // Not revoked: nothing goes.
    assert!(store.purge_due(Timestamp::now()).unwrap().is_empty());
    store.set_wiping().unwrap();
    assert!(store.wiping().unwrap().is_some());
    let mut gone: Vec<ChartId> = store
        .purge_due(Timestamp::now())
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.reason, LeftReason::Revoked);
            p.chart
        })
        .collect();
    gone.sort();
    assert_eq!(gone, vec![acknowledged]);
    assert!(store.contains(unsent).unwrap(), "kept until it is sent");
    assert!(
        store.contains(held).unwrap(),
        "kept until a records supervisor decides on what the server holds"
    );

    // Sent and acknowledged (and the held changes accepted into the record): they go too.
    for id in [unsent, held] {
        let all = store.read(id, |c| c.heads()).unwrap();
        store.acknowledge(id, &all).unwrap();
    }
    assert_eq!(store.purge_due(Timestamp::now()).unwrap().len(), 2);
    assert!(store.list(&ChartFilter::default()).unwrap().is_empty());
}

#[test]
fn a_hold_recorded_before_a_later_commit_does_not_let_the_chart_go() {
    let place = place();
    let store = open(&place);
    let id = acknowledged_chart(&store);
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(30), heart_rate(101)))
        .unwrap();
    let heads = store.read(id, |c| c.heads()).unwrap();
    let hold = DeviceHold {
        chart: id,
        hold: Some(3),
        reason: HoldReason::Revoked,
        summary: String::new(),
        since: Timestamp::now().plus_seconds(-60),
        rejected: None,
    };
    store.set_device_hold(&hold, &heads).unwrap();
    store.set_wiping().unwrap();
    assert_eq!(store.purge(id, LeftReason::Revoked).unwrap(), None);
    assert!(store.contains(id).unwrap());
}

/// What the tablet holds back itself (a change no one signed in can prove yet, or one the
/// server had no room to hold) is on no server: a revoked tablet keeps it.
#[test]
fn a_chart_held_back_on_the_tablet_or_refused_for_a_full_holding_area_is_never_removed() {
    let place = place();
    let store = open(&place);
    store.set_wiping().unwrap();
    for reason in [HoldReason::Unsigned, HoldReason::Revoked] {
        let id = acknowledged_chart(&store);
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(40), heart_rate(77)))
            .unwrap();
        let heads = store.read(id, |c| c.heads()).unwrap();
        let kept_here = DeviceHold {
            chart: id,
            hold: None,
            reason,
            summary: "kept here".into(),
            since: Timestamp::now().plus_seconds(60),
            rejected: None,
        };
        store.set_device_hold(&kept_here, &heads).unwrap();
        assert!(store.purge_due(Timestamp::now()).unwrap().is_empty());
        assert!(store.contains(id).unwrap());
    }
}

#[test]
fn the_server_records_each_removal_once_audited_and_forgets_the_devices_sync_state() {
    let place = place();
    let store = open(&place);
    let id = store.create(admitted()).unwrap();
    let heads = store.read(id, |c| c.heads()).unwrap();
    store
        .save_sync_state("tablet-storage", id, &automerge::sync::State::new())
        .unwrap();
    store
        .record_departure_told("tablet-storage", id, &heads)
        .unwrap();
    let tablet = Actor {
        user: "0a1b2c3d".into(),
        role: "nurse".into(),
        device: "tablet-4west-01".into(),
    };
    let report = PurgedChart {
        chart: id,
        reason: LeftReason::Discharged,
        heads: heads.clone(),
        at: Timestamp::now(),
        reported: false,
    };
    // A client that is no enrolled tablet, about a chart it was never told left: not recorded.
    assert_eq!(
        store
            .record_device_purge(&tablet, "another-storage", None, &report)
            .unwrap(),
        PurgeRecord::NeverTold
    );
    assert_eq!(
        store
            .record_device_purge(&tablet, "tablet-storage", Some("0a1b2c3d"), &report)
            .unwrap(),
        PurgeRecord::New
    );
    // Said again (the answer was lost): nothing new.
    assert_eq!(
        store
            .record_device_purge(&tablet, "tablet-storage", Some("0a1b2c3d"), &report)
            .unwrap(),
        PurgeRecord::Again
    );

    let audit: Vec<AuditRecord> = store
        .audit_trail(id)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == AuditAction::Purge)
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, tablet);
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("removed from the device (discharged)")
    );
    assert_eq!(
        audit[0].changes,
        heads.iter().map(|h| h.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(store.sync_state("tablet-storage", id).unwrap(), None);
    assert_eq!(store.departure_told("tablet-storage", id).unwrap(), None);
    let listed = store.device_purges(Some("0a1b2c3d")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].chart, listed[0].reason),
        (id, LeftReason::Discharged)
    );
    assert!(store.device_purges(Some("ffff")).unwrap().is_empty());
    assert_eq!(store.device_purges(None).unwrap().len(), 1);
    // The record itself is untouched: a device's removal is not the chart's.
    assert!(store.contains(id).unwrap());
    store.verify_audit().unwrap();
}

/// What a removal deletes does not linger in the file: the patient's name is nowhere in the
/// store's files afterwards (an unencrypted store, to read its bytes).
#[test]
fn a_removed_patients_name_is_not_left_in_the_stores_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tablet.db");
    let store = ChartStore::open(&path, StoreOptions::default()).unwrap();
    let (mut patient, encounter) = admission();
    patient.family_name = "Quillfeather".into();
    let id = store
        .create(Chart::create(patient, encounter, &technician(), t(0)).unwrap())
        .unwrap();
    for n in 0..20 {
        store
            .update(id, |c| {
                c.add_entry(&night_nurse(), t(n), heart_rate(70 + n as u32))
            })
            .unwrap();
    }
    let heads = store.read(id, |c| c.heads()).unwrap();
    store.acknowledge(id, &heads).unwrap();
    let found = |needle: &[u8]| {
        std::fs::read_dir(dir.path()).unwrap().any(|f| {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    };
    assert!(found(b"Quillfeather"), "the name is in the file before");
    assert!(store.purge(id, LeftReason::Transferred).unwrap().is_some());
    assert!(
        !found(b"Quillfeather"),
        "the name lingers after the removal"
    );
}
