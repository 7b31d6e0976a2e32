//! The embedded store as a tablet and the server use it: charts survive restarts, listings
//! come from the index, bad files are refused untouched, and every commit is durable and
//! reported.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

fn options() -> StoreOptions {
    StoreOptions {
        compaction: Compaction::Manual,
        ..StoreOptions::default()
    }
}

fn open(place: &Place) -> ChartStore {
    place.open(options()).unwrap()
}

fn note(store: &ChartStore, id: ChartId, body: &str) -> String {
    store
        .update(id, |c| {
            c.add_entry(
                &physician(),
                t(30),
                NewEntry::note(EntryKind::ProgressNote, body),
            )
        })
        .unwrap()
}

#[test]
fn a_chart_written_on_the_tablet_is_there_after_the_app_restarts() {
    let dir = place();
    let (id, view) = {
        let store = open(&dir);
        let id = store.create(admitted()).unwrap();
        for bpm in [72, 75, 80] {
            store
                .update(id, |c| c.add_entry(&night_nurse(), t(60), heart_rate(bpm)))
                .unwrap();
        }
        let entry = note(&store, id, "Comfortable overnight.");
        store
            .update(id, |c| {
                c.sign_entry(&physician(), t(31), &entry, SignatureMeaning::Author)
            })
            .unwrap();
        (id, store.read(id, |c| c.view().unwrap()).unwrap())
    };
    let store = open(&dir);
    assert_eq!(store.read(id, |c| c.view().unwrap()).unwrap(), view);
    assert_eq!(view.entries.len(), 4);
    assert_eq!(store.stats().unwrap().documents_loaded, 1);
}

#[test]
fn the_census_lists_a_ward_by_bed_without_loading_any_chart() {
    let dir = place();
    {
        let store = open(&dir);
        let charts = (0..2000).map(|n| {
            let ward = ["4west", "5east", "icu", "maternity"][n % 4];
            (ChartId::random(), admitted_to(ward, n))
        });
        let ids = store.import(charts, Some(2000), |_| {}).unwrap();
        assert_eq!(ids.len(), 2000);
    }
    let store = open(&dir);
    let census = store.census("icu").unwrap();
    assert_eq!(census.len(), 500);
    assert!(census
        .iter()
        .all(|c| c.ward == "icu" && c.status == EncounterStatus::Active));
    let beds: Vec<_> = census.iter().map(|c| c.bed.clone().unwrap()).collect();
    let mut sorted = beds.clone();
    sorted.sort();
    assert_eq!(beds, sorted, "the census is in bed order");
    assert_eq!(census[0].family_name, "Patient2");
    assert_eq!(census[0].mrn, "MRN-icu-00002");
    let stats = store.stats().unwrap();
    assert_eq!(stats.charts, 2000);
    assert_eq!(stats.documents_loaded, 0, "listing must not load documents");
}

#[test]
fn a_transfer_moves_the_chart_to_the_other_wards_census_and_discharge_takes_it_off() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    assert_eq!(store.census("4west").unwrap().len(), 1);
    store
        .update(id, |c| c.transfer(&technician(), t(120), "icu", Some("3")))
        .unwrap();
    assert!(store.census("4west").unwrap().is_empty());
    let icu = store.census("icu").unwrap();
    assert_eq!((icu[0].id, icu[0].bed.as_deref()), (id, Some("3")));

    store
        .update(id, |c| c.discharge(&technician(), t(600), "home"))
        .unwrap();
    assert!(store.census("icu").unwrap().is_empty());
    let mine = store.charts_of_patient("MRN-0042").unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].status, EncounterStatus::Discharged);
    assert_eq!(mine[0].discharged_at, Some(t(600)));
    let discharged = store
        .list(&ChartFilter {
            status: Some(EncounterStatus::Discharged),
            ..ChartFilter::default()
        })
        .unwrap();
    assert_eq!(discharged.len(), 1);
}

#[test]
fn deficiency_counts_follow_signatures_queries_and_forms() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let count = || store.census("4west").unwrap()[0].open_deficiencies;
    let d = store.deficiencies(id).unwrap();
    assert_eq!(count(), 1, "no history and physical yet");
    assert_eq!(d[0].kind, DeficiencyKind::HistoryPhysicalMissing);
    assert_eq!(d[0].due_at, Some(t(0).plus_seconds(24 * 3600)));

    let entry = note(&store, id, "Admitted with community-acquired pneumonia.");
    assert_eq!(count(), 2, "and an unsigned note");
    let d = store.deficiencies(id).unwrap();
    assert_eq!(d[0].kind, DeficiencyKind::UnsignedEntry);
    assert_eq!(
        (d[0].record_id.as_str(), d[0].responsible.as_deref()),
        (entry.as_str(), Some("dr.okafor"))
    );
    assert_eq!(d[0].due_at, None, "due 30 days after discharge");

    store
        .update(id, |c| {
            c.sign_entry(&physician(), t(40), &entry, SignatureMeaning::Author)
        })
        .unwrap();
    assert_eq!(count(), 1);

    let query = store
        .update(id, |c| {
            c.ask_query(
                &coder(),
                t(50),
                NewQuery {
                    question: "Please clarify the organism.".into(),
                    to: "dr.okafor".into(),
                    about: None,
                },
            )
        })
        .unwrap();
    let form = store
        .update(id, |c| {
            c.add_form(
                &technician(),
                t(55),
                NewForm {
                    form_type: FormType::Consent,
                    fields: Default::default(),
                    required_signers: vec!["patient".into(), "witness".into()],
                },
            )
        })
        .unwrap();
    assert_eq!(count(), 4, "an open query and two missing form signatures");
    store
        .update(id, |c| {
            c.respond_to_query(&physician(), t(60), &query, "Streptococcus pneumoniae.")
        })
        .unwrap();
    store
        .update(id, |c| {
            c.sign_form(&technician(), t(61), &form, "Ana Rivera", "patient")
        })
        .unwrap();
    let left = store.deficiencies(id).unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(
        (left[0].kind, left[0].detail.as_deref()),
        (DeficiencyKind::FormMissingSignature, Some("witness"))
    );
    assert_eq!(left[1].kind, DeficiencyKind::HistoryPhysicalMissing);
    // The index agrees with a full audit of the chart.
    let full = store.read(id, |c| c.deficiencies().unwrap()).unwrap();
    assert_eq!(full, left);
}

#[test]
fn a_conflict_merged_in_from_another_tablet_is_counted_until_resolved() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let mut day = store.chart(id).unwrap();
    let mut night = store.chart(id).unwrap();
    let update = |phone: &str| PatientUpdate {
        phone: Some(phone.into()),
        ..PatientUpdate::default()
    };
    day.change_information(&technician(), t(10), update("555-0101"))
        .unwrap();
    night
        .change_information(&supervisor(), t(11), update("555-0199"))
        .unwrap();
    store.merge(id, &day).unwrap();
    store.merge(id, &night).unwrap();
    let conflicts = || {
        let mut d = store.deficiencies(id).unwrap();
        d.retain(|d| d.kind != DeficiencyKind::HistoryPhysicalMissing);
        d
    };
    let d = conflicts();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, DeficiencyKind::UnresolvedConflict);
    assert_eq!(
        (d[0].section.as_str(), d[0].detail.as_deref()),
        ("patient", Some("phone"))
    );
    store
        .update(id, |c| {
            c.resolve_conflict(
                &supervisor(),
                t(20),
                &["patient".to_string(), "phone".to_string()],
                Resolution::Keep(0),
            )
        })
        .unwrap();
    assert!(conflicts().is_empty());
}

#[test]
fn subscribers_hear_each_commit_with_the_sections_it_touched() {
    let dir = place();
    let store = Arc::new(open(&dir));
    let feed = store.subscribe();

    let id = store.create(admitted()).unwrap();
    let entry = note(&store, id, "Seen on the ward round.");
    store
        .update(id, |c| {
            c.sign_entry(&physician(), t(31), &entry, SignatureMeaning::Author)
        })
        .unwrap();
    // A write refused by the chart's rules commits nothing and tells no one.
    let refused = store.update(id, |c| c.edit_entry_body(&physician(), t(32), &entry, "x"));
    assert!(matches!(
        refused,
        Err(StoreError::Chart {
            error: ChartError::EntrySigned { .. },
            ..
        })
    ));

    let events: Vec<ChartChanged> = feed.try_iter().collect();
    assert_eq!(events.len(), 3);
    assert!(events[0].created && events[0].id == id);
    let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(events[1].sections, set(&["entries"]));
    // Signing records the signature and marks the entry signed.
    assert_eq!(events[2].sections, set(&["entries", "signatures"]));
    assert_eq!(events[2].heads, store.read(id, |c| c.heads()).unwrap());

    // A listener may read the chart it hears about, on its own thread, while commits go on.
    let feed_thread = {
        let store = store.clone();
        std::thread::spawn(move || {
            let event = feed.recv().unwrap();
            store
                .read(event.id, |c| c.view().unwrap().entries.len())
                .unwrap()
        })
    };
    note(&store, id, "After the ward round.");
    assert_eq!(feed_thread.join().unwrap(), 2);
    // Its receiver is gone: the store forgets it and commits carry on.
    note(&store, id, "After unsubscribing.");
}

#[test]
fn a_failed_write_leaves_the_chart_as_it_was_in_memory_and_on_disk() {
    let dir = place();
    let id;
    let before;
    {
        let store = open(&dir);
        id = store.create(admitted()).unwrap();
        before = store.read(id, |c| c.heads()).unwrap();
        // Two writes, the second refused: the first must not be kept either.
        let result = store.update(id, |c| {
            c.add_entry(&night_nurse(), t(5), heart_rate(88))?;
            c.add_entry(&technician(), t(6), heart_rate(90))
        });
        assert!(matches!(
            result,
            Err(StoreError::Chart {
                error: ChartError::NotPermitted(_),
                ..
            })
        ));
        assert_eq!(store.read(id, |c| c.heads()).unwrap(), before);
        assert!(store
            .read(id, |c| c.view().unwrap().entries.is_empty())
            .unwrap());
    }
    let store = open(&dir);
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), before);
}

#[test]
fn changes_from_another_replica_are_received_and_kept() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let mut tablet = store.chart(id).unwrap();
    let base = tablet.heads();
    tablet
        .add_entry(&day_nurse(), t(15), heart_rate(70))
        .unwrap();
    store.receive(id, &tablet.save_after(&base)).unwrap();
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), tablet.heads());
    // Garbage is refused and changes nothing.
    let garbage = store.receive(id, b"not automerge");
    assert!(matches!(
        garbage,
        Err(StoreError::Chart {
            error: ChartError::Corrupt(_),
            ..
        })
    ));
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), tablet.heads());
    // So is a valid change with garbage after it: nothing of it is applied.
    let base = tablet.heads();
    tablet
        .add_entry(&day_nurse(), t(16), heart_rate(71))
        .unwrap();
    let mut tail = tablet.save_after(&base);
    tail.extend_from_slice(b"\x85\x6f\x4a\x83 and then nonsense");
    assert!(store.receive(id, &tail).is_err());
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        1
    );
    assert!(matches!(
        store.receive(ChartId::random(), b""),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn changes_that_depend_on_changes_the_store_lacks_are_refused() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let mut tablet = store.chart(id).unwrap();
    let base = tablet.heads();
    tablet
        .add_entry(&day_nurse(), t(1), heart_rate(70))
        .unwrap();
    let middle = tablet.heads();
    tablet
        .add_entry(&day_nurse(), t(2), heart_rate(71))
        .unwrap();
    let second_only = tablet.save_after(&middle);
    let err = store.receive(id, &second_only).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Chart {
                error: ChartError::Corrupt(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), base);
    // With what it depends on, it is taken.
    store.receive(id, &tablet.save_after(&base)).unwrap();
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), tablet.heads());
}

#[test]
fn a_write_that_panics_leaves_nothing_behind() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let before = store.read(id, |c| c.heads()).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.update(id, |c| -> Result<(), ChartError> {
            c.add_entry(&night_nurse(), t(1), heart_rate(88))?;
            panic!("the app's code failed half-way");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(store.read(id, |c| c.heads()).unwrap(), before);
    // And the chart takes writes again.
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(2), heart_rate(90)))
        .unwrap();
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        1
    );
}

#[test]
fn compaction_folds_the_changes_into_a_snapshot_and_loses_nothing() {
    let dir = place();
    let id;
    let view;
    {
        let store = open(&dir);
        id = store.create(admitted()).unwrap();
        for bpm in 0..150 {
            store
                .update(id, |c| {
                    c.add_entry(&night_nurse(), t(bpm), heart_rate(60 + bpm as u32))
                })
                .unwrap();
        }
        let (snapshot, changes) = store.chart_bytes(id).unwrap();
        assert!(changes > snapshot, "150 commits outgrow the first snapshot");
        let report = store.compact(id).unwrap();
        assert_eq!(report.changes_folded, 150);
        let (snapshot_after, changes_after) = store.chart_bytes(id).unwrap();
        assert_eq!(changes_after, 0);
        assert!(snapshot_after < snapshot + changes);
        let saved = store.read(id, |c| c.clone().save().len() as u64).unwrap();
        assert_eq!(
            snapshot_after, saved,
            "the snapshot is automerge's own save()"
        );
        view = store.read(id, |c| c.view().unwrap()).unwrap();
        store.verify().unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.read(id, |c| c.view().unwrap()).unwrap(), view);
    assert_eq!(view.entries.len(), 150);
    drop(store);

    // A chart not in memory is compacted from what is on disk.
    let store = open(&dir);
    for n in 0..10 {
        store
            .update(id, |c| {
                c.add_entry(&night_nurse(), t(200 + n), heart_rate(70))
            })
            .unwrap();
    }
    drop(store);
    let store = open(&dir);
    assert_eq!(store.compact(id).unwrap().changes_folded, 10);
    assert_eq!(store.stats().unwrap().documents_loaded, 0);
    assert_eq!(store.chart_bytes(id).unwrap().1, 0);
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        160
    );
}

#[test]
fn background_compaction_runs_once_changes_outgrow_the_snapshot() {
    let dir = place();
    let store = dir
        .open(StoreOptions {
            compaction: Compaction::Background,
            compact_min_bytes: 0,
            ..StoreOptions::default()
        })
        .unwrap();
    let id = store.create(admitted()).unwrap();
    let (first_snapshot, _) = store.chart_bytes(id).unwrap();
    for n in 0..60 {
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(n), heart_rate(70)))
            .unwrap();
    }
    // The compactor works on its own thread: wait for it, within reason.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (snapshot, changes) = store.chart_bytes(id).unwrap();
        if snapshot > first_snapshot && changes <= snapshot {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        60
    );
}

#[test]
fn a_bulk_import_is_all_or_nothing_and_reports_progress() {
    let dir = place();
    let store = open(&dir);
    let existing = store.create(admitted()).unwrap();
    let mut seen = Vec::new();
    let batch = (0..5)
        .map(|n| (ChartId::random(), admitted_to("5east", n)))
        .chain(std::iter::once((existing, admitted_to("5east", 9))));
    let err = store
        .import(batch, Some(6), |p| seen.push(p.done))
        .unwrap_err();
    assert!(matches!(err, StoreError::Import { index: 5, .. }), "{err}");
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert!(
        store.census("5east").unwrap().is_empty(),
        "nothing half imported"
    );

    let mut last = None;
    store
        .import(
            (0..5).map(|n| (ChartId::random(), admitted_to("5east", n))),
            Some(5),
            |p| last = Some(p),
        )
        .unwrap();
    let last = last.unwrap();
    assert_eq!((last.done, last.total), (5, Some(5)));
    assert!(last.bytes > 0);
    assert_eq!(store.census("5east").unwrap().len(), 5);
}

#[test]
fn a_reader_lists_and_reads_while_a_writer_commits() {
    let dir = place();
    let store = Arc::new(open(&dir));
    let id = store.create(admitted()).unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 0..100 {
                store
                    .update(id, |c| {
                        c.add_entry(
                            &physician(),
                            t(n),
                            NewEntry::note(EntryKind::ProgressNote, "Reviewed."),
                        )
                    })
                    .unwrap();
            }
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        assert_eq!(store.census("4west").unwrap().len(), 1);
        let n = store.read(id, |c| c.view().unwrap().entries.len()).unwrap();
        assert!(n >= last, "a reader never sees commits disappear");
        last = n;
        let _ = store.sync_state("server", id).unwrap();
    }
    writer.join().unwrap();
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        100
    );
    // A hundred unsigned notes, and no history and physical.
    assert_eq!(store.census("4west").unwrap()[0].open_deficiencies, 101);
}

#[test]
fn open_charts_are_bounded_by_the_cache_size() {
    let dir = place();
    let store = dir
        .open(StoreOptions {
            cache_bytes: 10_000,
            ..options()
        })
        .unwrap();
    let ids = store
        .import(
            (0..50).map(|n| (ChartId::random(), admitted_to("4west", n))),
            None,
            |_| {},
        )
        .unwrap();
    for id in &ids {
        store.read(*id, |c| c.heads()).unwrap();
    }
    let stats = store.stats().unwrap();
    assert!(stats.cache_bytes <= 10_000, "{stats:?}");
    assert!(stats.charts_cached < 50, "{stats:?}");
    assert!(stats.charts_cached > 0);
    // An evicted chart loads again, intact.
    assert_eq!(
        store.read(ids[0], |c| c.patient().unwrap().mrn).unwrap(),
        "MRN-4west-00000"
    );
}

/// Syncs a stored chart with a server document until neither side has more to say, starting
/// from the sync state stored for `peer`, and stores the state reached. Returns the bytes of
/// the messages the tablet sent and of the changes in them.
fn sync_with_server(
    tablet: &ChartStore,
    id: ChartId,
    peer: &str,
    server: &mut automerge::Automerge,
) -> (usize, usize) {
    use automerge::sync::{State, SyncDoc};
    let mut state = tablet.sync_state(peer, id).unwrap().unwrap_or_default();
    let mut server_state = State::new(); // a new connection on the server's side
    let (mut message_bytes, mut change_bytes) = (0, 0);
    for _ in 0..10 {
        let msg = tablet
            .read(id, |c| c.doc().generate_sync_message(&mut state))
            .unwrap();
        if let Some(m) = &msg {
            change_bytes += m.changes.iter().map(<[u8]>::len).sum::<usize>();
            message_bytes += m.clone().encode().len();
            server
                .receive_sync_message(&mut server_state, m.clone())
                .unwrap();
        }
        let reply = server.generate_sync_message(&mut server_state);
        if let Some(r) = &reply {
            // The server has nothing the tablet lacks: replies only update the sync state.
            let mut scratch = tablet.chart(id).unwrap().doc().clone();
            scratch.receive_sync_message(&mut state, r.clone()).unwrap();
        }
        if msg.is_none() && reply.is_none() {
            break;
        }
    }
    tablet.save_sync_state(peer, id, &state).unwrap();
    (message_bytes, change_bytes)
}

#[test]
fn sync_state_persists_so_a_reconnect_sends_only_what_changed() {
    let dir = place();
    let tablet = open(&dir);
    let id = tablet.create(admitted()).unwrap();
    for n in 0..200 {
        tablet
            .update(id, |c| c.add_entry(&night_nurse(), t(n), heart_rate(70)))
            .unwrap();
    }
    let mut server = automerge::Automerge::new();
    let (_, first) = sync_with_server(&tablet, id, "server-1", &mut server);
    assert_eq!(server.get_heads(), tablet.read(id, |c| c.heads()).unwrap());

    // The night shift goes offline, records one observation, and the app restarts.
    let before = tablet.read(id, |c| c.heads()).unwrap();
    tablet
        .update(id, |c| c.add_entry(&night_nurse(), t(500), heart_rate(99)))
        .unwrap();
    let one_change = tablet.read(id, |c| c.save_after(&before).len()).unwrap();
    drop(tablet);
    let tablet = open(&dir);
    let (with_state, changes) = sync_with_server(&tablet, id, "server-1", &mut server);
    assert_eq!(server.get_heads(), tablet.read(id, |c| c.heads()).unwrap());
    assert!(first > 10 * one_change, "the first sync sent every change");
    assert!(
        changes <= one_change + 16,
        "reconnect sent {changes} bytes of changes for one change of {one_change}"
    );

    // Without a stored state the same reconnect says more about what it has.
    let mut other_server = server.clone();
    let before = tablet.read(id, |c| c.heads()).unwrap();
    tablet
        .update(id, |c| c.add_entry(&night_nurse(), t(501), heart_rate(98)))
        .unwrap();
    let _ = before;
    let (stateless, _) = sync_with_server(&tablet, id, "server-2", &mut other_server);
    assert!(
        with_state < stateless,
        "with state {with_state} bytes, without {stateless}"
    );
}

#[test]
fn the_audit_trail_names_who_did_what_to_which_chart_with_the_change_hashes() {
    let dir = place();
    let store = open(&dir);
    let clerk = Actor {
        user: "him.jones".into(),
        role: "technician".into(),
        device: "records-pc-1".into(),
    };
    let nurse = Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    };
    let id = ChartId::random();
    store.insert_as(&clerk, id, admitted()).unwrap();
    let before = store.read(id, |c| c.heads()).unwrap();
    store
        .update_as(&nurse, id, |c| {
            c.add_entry(&night_nurse(), t(5), heart_rate(70))
        })
        .unwrap();
    let after = store.read(id, |c| c.heads()).unwrap();
    // A refused write leaves no row; a read and a denial are recorded as such.
    let refused = store.update_as(&nurse, id, |c| {
        c.add_entry(&technician(), t(6), heart_rate(71))
    });
    assert!(refused.is_err());
    store
        .record_audit(&nurse, AuditAction::Read, Some(id), None)
        .unwrap();
    store
        .record_audit(
            &clerk,
            AuditAction::Deny,
            Some(id),
            Some("chart outside the token's wards"),
        )
        .unwrap();

    let trail = store.audit_trail(id).unwrap();
    let actions: Vec<_> = trail
        .iter()
        .map(|r| (r.action, r.actor.user.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (AuditAction::Create, "him.jones"),
            (AuditAction::Write, "rn.park"),
            (AuditAction::Read, "rn.park"),
            (AuditAction::Deny, "him.jones"),
        ]
    );
    assert_eq!(
        trail[0].changes,
        before.iter().map(|h| h.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        trail[1].changes,
        after.iter().map(|h| h.to_string()).collect::<Vec<_>>()
    );
    assert!(trail
        .windows(2)
        .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at));
    assert!(store.audit_trail(ChartId::random()).unwrap().is_empty());
}

/// A saved chart carries the id it was made with: brought in again under another id (a
/// hand-carried copy imported twice, a mistyped id), it is refused and names the id it has,
/// rather than becoming a second chart of the same stay.
#[test]
fn a_chart_imported_again_under_another_id_is_refused_and_names_its_own() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let copy = store.chart(id).unwrap();
    let other = ChartId::random();
    let refused = store.import(vec![(other, copy.fork())], Some(1), |_| {});
    match refused {
        Err(StoreError::Import { index: 0, error }) => match *error {
            StoreError::SameChart {
                id: asked,
                existing,
            } => {
                assert_eq!((asked, existing), (other, id));
            }
            e => panic!("{e}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.insert(other, copy),
        Err(StoreError::SameChart { .. })
    ));
    assert_eq!(store.stats().unwrap().charts, 1);
}

/// Sync states are keyed by ids peers choose: those not saved for a while are forgotten, and
/// the rest kept.
#[test]
fn stale_sync_states_are_forgotten_and_fresh_ones_kept() {
    let dir = place();
    let store = dir.open(StoreOptions::default()).unwrap();
    let id = store.create(admitted()).unwrap();
    let state = automerge::sync::State::new();
    for peer in ["stale-a", "stale-b", "fresh"] {
        store.save_sync_state(peer, id, &state).unwrap();
    }
    drop(store);
    dir.execute(
        // 40 days, in milliseconds.
        "UPDATE sync_states SET updated_at = updated_at - 3456000000 WHERE peer LIKE 'stale-%'",
    );
    let store = dir.open(StoreOptions::default()).unwrap();
    let month = std::time::Duration::from_secs(30 * 86_400);
    assert_eq!(store.forget_sync_states(month).unwrap(), 2);
    assert!(store.sync_state("stale-a", id).unwrap().is_none());
    assert!(store.sync_state("fresh", id).unwrap().is_some());
    assert_eq!(store.forget_sync_states(month).unwrap(), 0);
}

/// Reads of a chart audited from many threads at once (a server opening charts for a
/// reconnect storm) are committed in shared transactions: every caller returns only once its
/// row is on disk, no row is lost or written twice, and the chain still verifies.
#[test]
fn audit_rows_from_many_threads_at_once_are_each_written_once_and_chained() {
    let dir = place();
    let store = Arc::new(open(&dir));
    let id = store.create(admitted()).unwrap();
    let before = store.audit_trail(id).unwrap().len();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for k in 0..40 {
                    let actor = Actor {
                        user: format!("rn.t{t}"),
                        role: "nurse".into(),
                        device: format!("tablet-{t}"),
                    };
                    let detail = format!("read {k}");
                    store
                        .record_audit(&actor, AuditAction::Read, Some(id), Some(&detail))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let trail = store.audit_trail(id).unwrap();
    let reads: BTreeSet<(String, String)> = trail[before..]
        .iter()
        .map(|r| (r.actor.user.clone(), r.detail.clone().unwrap()))
        .collect();
    assert_eq!(trail.len() - before, 8 * 40, "each row once");
    assert_eq!(reads.len(), 8 * 40, "every row, none twice");
    // Each thread's rows in the order it wrote them.
    for t in 0..8 {
        let mine: Vec<String> = trail
            .iter()
            .filter(|r| r.actor.user == format!("rn.t{t}"))
            .map(|r| r.detail.clone().unwrap())
            .collect();
        let expected: Vec<String> = (0..40).map(|k| format!("read {k}")).collect();
        assert_eq!(mine, expected);
    }
    let chain = store.verify_audit().unwrap();
    assert_eq!(chain.rows as usize, store.audit_trail(id).unwrap().len());
    drop(store);
    // And on disk, after the store is closed and opened again.
    let store = open(&dir);
    assert_eq!(store.audit_trail(id).unwrap().len() - before, 8 * 40);
}

/// A chart's ward and stay, as the server asks of every commit: the same as the index says,
/// whether the chart is in memory or not, after a transfer and after a discharge.
#[test]
fn a_charts_placement_follows_its_transfers_and_discharge() {
    let dir = place();
    let store = open(&dir);
    let id = store.create(admitted()).unwrap();
    let placed = |store: &ChartStore| {
        let p = store.placement(id).unwrap().unwrap();
        let s = store.summary(id).unwrap().unwrap();
        assert_eq!(
            (&p.ward, p.status),
            (&s.ward, s.status),
            "as the index has it"
        );
        (p.ward, p.status)
    };
    assert_eq!(placed(&store), ("4west".into(), EncounterStatus::Active));
    // Read again with the chart in memory (the first answer is kept), then moved.
    store.read(id, |_| ()).unwrap();
    assert_eq!(placed(&store), ("4west".into(), EncounterStatus::Active));
    store
        .update(id, |c| c.transfer(&technician(), t(120), "icu", Some("3")))
        .unwrap();
    assert_eq!(placed(&store), ("icu".into(), EncounterStatus::Active));
    // A write that fails leaves it where it was.
    let failed = store.update(id, |c| {
        c.transfer(&technician(), t(130), "5east", None)?;
        Err::<(), _>(ChartError::InvalidTransition("changed their mind".into()))
    });
    assert!(failed.is_err());
    assert_eq!(placed(&store), ("icu".into(), EncounterStatus::Active));
    store
        .update(id, |c| c.discharge(&technician(), t(600), "home"))
        .unwrap();
    assert_eq!(placed(&store), ("icu".into(), EncounterStatus::Discharged));
    drop(store);
    let store = open(&dir);
    assert_eq!(placed(&store), ("icu".into(), EncounterStatus::Discharged));
    assert!(store.placement(ChartId::random()).unwrap().is_none());
}
