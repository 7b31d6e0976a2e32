//! The server's holding area, as the store keeps it: held changes are kept once, bounded per
//! person, accepted under their writer's name or rejected with a reason — and a decision is
//! made once, and never lets through what the writer's role may not write.

mod common;

use chartsync_core::chart::*;
use chartsync_core::protocol::HoldReason;
use chartsync_core::store::*;
use common::*;

fn open(place: &Place) -> ChartStore {
    place.open(StoreOptions::default()).unwrap()
}

/// Who was signed in on the tablet the changes came from.
fn signed_in() -> Actor {
    Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    }
}

fn reviewer() -> Actor {
    Actor {
        user: "him.sup".into(),
        role: "records_supervisor".into(),
        device: "records-pc-3".into(),
    }
}

/// The changes a tablet made on its copy of the store's chart.
fn made_on_a_copy(
    store: &ChartStore,
    id: ChartId,
    write: impl FnOnce(&mut Chart),
) -> Vec<(automerge::ChangeHash, Vec<u8>)> {
    let before = store.read(id, |c| c.heads()).unwrap();
    let mut copy = store.chart(id).unwrap();
    write(&mut copy);
    copy.doc()
        .get_changes(&before)
        .iter()
        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
        .collect()
}

fn hold(
    store: &ChartStore,
    id: ChartId,
    reason: HoldReason,
    changes: &[(automerge::ChangeHash, Vec<u8>)],
    quota: &HoldQuota,
) -> Held {
    store
        .hold(
            NewHold {
                chart: id,
                actor: &signed_in(),
                storage: Some("tablet-store"),
                reason,
                summary: "test",
                changes,
                proofs: None,
                signer: None,
            },
            quota,
        )
        .unwrap()
}

#[test]
fn a_colleagues_observation_held_on_a_shared_tablet_is_accepted_under_her_name_once() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let changes = made_on_a_copy(&store, id, |c| {
        c.add_entry(&day_nurse(), t(30), heart_rate(90)).unwrap();
    });
    let quota = HoldQuota::default();
    let Held::New(n) = hold(&store, id, HoldReason::AnotherAuthor, &changes, &quota) else {
        panic!("not held");
    };
    // Sent again on the next connection: nothing held twice.
    assert_eq!(
        hold(&store, id, HoldReason::AnotherAuthor, &changes, &quota),
        Held::Already(n)
    );
    assert_eq!(store.held_batches(Some(id), None).unwrap().len(), 1);
    assert!(store
        .read(id, |c| c.view().unwrap().entries.is_empty())
        .unwrap());

    let accepted = store.accept_hold(n, &reviewer()).unwrap();
    assert_eq!(accepted.status, HoldStatus::Accepted);
    assert_eq!(accepted.decided_by.as_deref(), Some("him.sup"));
    let entries = store.read(id, |c| c.view().unwrap().entries).unwrap();
    assert_eq!(entries[0].content.author, "rn.silva");
    let trail = store.audit_trail(id).unwrap();
    let write = trail
        .iter()
        .rfind(|r| r.action == AuditAction::Write)
        .unwrap();
    assert_eq!(write.actor.user, "rn.silva", "attributed to the writer");
    assert!(trail
        .iter()
        .any(|r| r.action == AuditAction::Review && r.actor.user == "him.sup"));

    // Decided once: a second decision changes nothing.
    assert!(matches!(
        store.reject_hold(n, &reviewer(), "late"),
        Err(StoreError::AlreadyDecided { .. })
    ));
    assert!(matches!(
        store.accept_hold(n, &reviewer()),
        Err(StoreError::AlreadyDecided { .. })
    ));
}

/// A change that edits a signed note from outside the chart API, held because another
/// nurse was signed in: accepting it would break the record's own rule, so a supervisor can
/// only reject it, with a reason the tablet is shown.
#[test]
fn a_held_edit_to_a_signed_note_is_never_accepted_and_is_rejected_with_a_reason() {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;

    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let entry = store
        .update(id, |c| {
            let e = c.add_entry(&day_nurse(), t(30), heart_rate(90))?;
            c.sign_entry(&day_nurse(), t(31), &e, SignatureMeaning::Author)?;
            Ok(e)
        })
        .unwrap();
    let before = store.read(id, |c| c.heads()).unwrap();
    let mut doc = store.read(id, |c| c.doc().clone()).unwrap();
    doc.set_actor(automerge::ActorId::random());
    let mut tx = doc.transaction();
    let entries = tx.get(automerge::ROOT, "entries").unwrap().unwrap().1;
    let e = tx.get(&entries, entry.as_str()).unwrap().unwrap().1;
    tx.put(&e, "value", "120").unwrap();
    tx.commit();
    let changes: Vec<_> = doc
        .get_changes(&before)
        .iter()
        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
        .collect();
    let Held::New(n) = hold(
        &store,
        id,
        HoldReason::AnotherAuthor,
        &changes,
        &HoldQuota::default(),
    ) else {
        panic!("not held");
    };
    assert!(matches!(
        store.accept_hold(n, &reviewer()),
        Err(StoreError::NotAcceptable { .. })
    ));
    let value = |s: &ChartStore| {
        s.read(id, |c| c.view().unwrap().entries[0].content.value.clone())
            .unwrap()
    };
    assert_eq!(value(&store).as_deref(), Some("90"), "nothing of it merged");
    assert!(matches!(
        store.reject_hold(n, &reviewer(), "  "),
        Err(StoreError::ReasonRequired)
    ));
    let rejected = store
        .reject_hold(n, &reviewer(), "a signed value is corrected by amendment")
        .unwrap();
    assert_eq!(rejected.status, HoldStatus::Rejected);
    assert_eq!(
        rejected.decision_reason.as_deref(),
        Some("a signed value is corrected by amendment")
    );
    // Still there to read, with the decision.
    assert_eq!(
        store.held_batch(n).unwrap().unwrap().0.status,
        HoldStatus::Rejected
    );
}

#[test]
fn one_persons_holds_are_bounded_and_nothing_already_held_is_dropped() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let quota = HoldQuota {
        per_user_holds: 2,
        ..HoldQuota::default()
    };
    let mut held = Vec::new();
    for bpm in [70, 71, 72] {
        let changes = made_on_a_copy(&store, id, |c| {
            c.add_entry(&day_nurse(), t(30), heart_rate(bpm)).unwrap();
        });
        held.push(hold(
            &store,
            id,
            HoldReason::AnotherAuthor,
            &changes,
            &quota,
        ));
    }
    assert!(matches!(held[0], Held::New(_)));
    assert!(matches!(held[1], Held::New(_)));
    assert_eq!(held[2], Held::QuotaExceeded);
    assert_eq!(
        store
            .held_batches(None, Some(HoldStatus::Pending))
            .unwrap()
            .len(),
        2
    );
}
