//! Property: the store's deficiency index, refreshed record by record at each commit, always
//! says what a full audit of the chart says, whatever the tablets wrote offline and however
//! their changes merged in; and it says the same after the store is reopened.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Note {
        on: usize,
    },
    Observation {
        on: usize,
    },
    Sign {
        on: usize,
        pick: usize,
    },
    EditNote {
        on: usize,
        pick: usize,
    },
    Amend {
        on: usize,
        pick: usize,
    },
    Query {
        on: usize,
    },
    Answer {
        on: usize,
        pick: usize,
    },
    Form {
        on: usize,
    },
    SignForm {
        on: usize,
        pick: usize,
        witness: bool,
    },
    Phone {
        on: usize,
    },
    /// A history and physical, written in time or more than a day after admission.
    HistoryPhysical {
        on: usize,
        late: bool,
    },
    DischargeSummary {
        on: usize,
    },
    Discharge {
        on: usize,
    },
    Code {
        on: usize,
        principal: bool,
        poa: bool,
    },
    FinalizeCode {
        on: usize,
        pick: usize,
    },
    SetPoa {
        on: usize,
        pick: usize,
    },
    /// A request for records, and its denial.
    Request {
        on: usize,
    },
    Deny {
        on: usize,
        pick: usize,
    },
    Resolve,
    /// A tablet's changes arrive at the store.
    Push {
        from: usize,
    },
    /// A tablet syncs down what the store has.
    Pull {
        to: usize,
    },
}

/// Replica 0 is the store itself; 1 and 2 are tablets working offline.
fn op() -> impl Strategy<Value = Op> {
    let on = 0..3usize;
    prop_oneof![
        3 => on.clone().prop_map(|on| Op::Note { on }),
        2 => on.clone().prop_map(|on| Op::Observation { on }),
        3 => (on.clone(), 0..8usize).prop_map(|(on, pick)| Op::Sign { on, pick }),
        2 => (on.clone(), 0..8usize).prop_map(|(on, pick)| Op::EditNote { on, pick }),
        1 => (on.clone(), 0..8usize).prop_map(|(on, pick)| Op::Amend { on, pick }),
        1 => on.clone().prop_map(|on| Op::Query { on }),
        1 => (on.clone(), 0..4usize).prop_map(|(on, pick)| Op::Answer { on, pick }),
        1 => on.clone().prop_map(|on| Op::Form { on }),
        1 => (on.clone(), 0..4usize, any::<bool>()).prop_map(|(on, pick, witness)| Op::SignForm { on, pick, witness }),
        1 => on.clone().prop_map(|on| Op::Phone { on }),
        1 => (on.clone(), any::<bool>()).prop_map(|(on, late)| Op::HistoryPhysical { on, late }),
        1 => on.clone().prop_map(|on| Op::DischargeSummary { on }),
        1 => on.clone().prop_map(|on| Op::Discharge { on }),
        1 => (on.clone(), any::<bool>(), any::<bool>()).prop_map(|(on, principal, poa)| Op::Code { on, principal, poa }),
        1 => (on.clone(), 0..4usize).prop_map(|(on, pick)| Op::FinalizeCode { on, pick }),
        1 => (on.clone(), 0..4usize).prop_map(|(on, pick)| Op::SetPoa { on, pick }),
        1 => on.clone().prop_map(|on| Op::Request { on }),
        1 => (on.clone(), 0..4usize).prop_map(|(on, pick)| Op::Deny { on, pick }),
        1 => Just(Op::Resolve),
        3 => (1..3usize).prop_map(|from| Op::Push { from }),
        2 => (1..3usize).prop_map(|to| Op::Pull { to }),
    ]
}

/// Applies a chart write to replica `on` (the store, or a tablet's copy). Refused writes are
/// part of the game: they must change nothing.
fn write(
    store: &ChartStore,
    id: ChartId,
    tablets: &mut [Chart],
    on: usize,
    f: impl FnOnce(&mut Chart) -> Result<(), ChartError>,
) {
    if on == 0 {
        let _ = store.update(id, f);
    } else {
        let _ = f(&mut tablets[on - 1]);
    }
}

fn pick<T: Clone>(items: &[T], n: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[n % items.len()].clone())
}

fn check(store: &ChartStore, id: ChartId) -> Result<(), TestCaseError> {
    let audit = store.read(id, |c| c.deficiencies().unwrap()).unwrap();
    let indexed = store.deficiencies(id).unwrap();
    prop_assert_eq!(&indexed, &audit);
    let summary = store.summary(id).unwrap().unwrap();
    prop_assert_eq!(summary.open_deficiencies as usize, audit.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_deficiency_index_always_matches_a_full_audit(ops in proptest::collection::vec(op(), 1..40)) {
        let place = place();
        let options = StoreOptions {
            durability: Durability::Normal,
            compaction: Compaction::Manual,
            ..StoreOptions::default()
        };
        let store = place.open(options.clone()).unwrap();
        let id = store.create(admitted()).unwrap();
        let mut tablets = vec![store.chart(id).unwrap(), store.chart(id).unwrap()];
        for (n, op) in ops.into_iter().enumerate() {
            let n = n as i64;
            let view_of = |store: &ChartStore, tablets: &[Chart], on: usize| {
                if on == 0 { store.read(id, |c| c.view().unwrap()).unwrap() } else { tablets[on - 1].view().unwrap() }
            };
            match op {
                Op::Note { on } => write(&store, id, &mut tablets, on, |c| {
                    c.add_entry(&physician(), t(n), NewEntry::note(EntryKind::ProgressNote, "Plan unchanged.")).map(drop)
                }),
                Op::Observation { on } => write(&store, id, &mut tablets, on, |c| {
                    c.add_entry(&night_nurse(), t(n), heart_rate(70)).map(drop)
                }),
                Op::Sign { on, pick: p } => {
                    let entries = view_of(&store, &tablets, on).entries;
                    if let Some(e) = pick(&entries, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.sign_entry(&physician(), t(n), &e.id, SignatureMeaning::Author)
                        });
                    }
                }
                Op::EditNote { on, pick: p } => {
                    let entries = view_of(&store, &tablets, on).entries;
                    if let Some(e) = pick(&entries, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.edit_entry_body(&physician(), t(n), &e.id, &format!("Revised {n}."))
                        });
                    }
                }
                Op::Amend { on, pick: p } => {
                    let entries = view_of(&store, &tablets, on).entries;
                    if let Some(e) = pick(&entries, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.amend(&physician(), t(n), NewAmendment {
                                target_entry_id: e.id.clone(),
                                kind: AmendmentKind::EnteredInError,
                                reason: "wrong patient".into(),
                                body: String::new(),
                            }).map(drop)
                        });
                    }
                }
                Op::Query { on } => write(&store, id, &mut tablets, on, |c| {
                    c.ask_query(&coder(), t(n), NewQuery {
                        question: "Acute or chronic?".into(),
                        to: "dr.okafor".into(),
                        about: None,
                    }).map(drop)
                }),
                Op::Answer { on, pick: p } => {
                    let queries = view_of(&store, &tablets, on).queries;
                    if let Some(q) = pick(&queries, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.respond_to_query(&physician(), t(n), &q.id, "Acute.")
                        });
                    }
                }
                Op::Form { on } => write(&store, id, &mut tablets, on, |c| {
                    c.add_form(&technician(), t(n), NewForm {
                        form_type: FormType::Consent,
                        fields: Default::default(),
                        required_signers: vec!["patient".into(), "witness".into()],
                    }).map(drop)
                }),
                Op::SignForm { on, pick: p, witness } => {
                    let forms = view_of(&store, &tablets, on).forms;
                    if let Some(f) = pick(&forms, p) {
                        let role = if witness { "witness" } else { "patient" };
                        write(&store, id, &mut tablets, on, |c| {
                            c.sign_form(&technician(), t(n), &f.id, "A. Person", role)
                        });
                    }
                }
                Op::Phone { on } => write(&store, id, &mut tablets, on, |c| {
                    c.change_information(&technician(), t(n), PatientUpdate {
                        phone: Some(format!("555-{n:04}")),
                        ..PatientUpdate::default()
                    })
                }),
                Op::HistoryPhysical { on, late } => {
                    let at = if late { t(n + 26 * 60) } else { t(n) };
                    write(&store, id, &mut tablets, on, |c| {
                        c.add_entry(&physician(), at, NewEntry::note(EntryKind::HistoryPhysical, "H&P.")).map(drop)
                    })
                }
                Op::DischargeSummary { on } => write(&store, id, &mut tablets, on, |c| {
                    c.add_entry(&physician(), t(n), NewEntry::note(EntryKind::DischargeSummary, "Home.")).map(drop)
                }),
                Op::Discharge { on } => write(&store, id, &mut tablets, on, |c| {
                    c.discharge(&technician(), t(n), "home")
                }),
                Op::Code { on, principal, poa } => write(&store, id, &mut tablets, on, |c| {
                    c.assign_code(&coder(), t(n), NewCoding {
                        code: CodeInput::new(chartsync_core::codes::CodeSystem::Icd10Cm, if principal { "J18.9" } else { "E11.9" }),
                        sequence: if principal { CodingSequence::Principal } else { CodingSequence::Secondary },
                        poa: poa.then_some(PresentOnAdmission::Yes),
                        supporting_entries: vec![],
                    }).map(drop)
                }),
                Op::FinalizeCode { on, pick: p } => {
                    let coding = view_of(&store, &tablets, on).coding;
                    if let Some(k) = pick(&coding, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.set_coding_status(&coder(), t(n), &k.id, CodingStatus::Final)
                        });
                    }
                }
                Op::SetPoa { on, pick: p } => {
                    let coding = view_of(&store, &tablets, on).coding;
                    if let Some(k) = pick(&coding, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.set_coding_poa(&coder(), t(n), &k.id, PresentOnAdmission::No)
                        });
                    }
                }
                Op::Request { on } => write(&store, id, &mut tablets, on, |c| {
                    c.receive_roi_request(&technician(), t(n), NewRoiRequest {
                        requester: "A. Rivera".into(),
                        recipient: "A. Rivera".into(),
                        recipient_address: "12 Elm St".into(),
                        purpose: DisclosurePurpose::ToPatient,
                        scope: "the stay".into(),
                        due_at: t(n + 30 * 24 * 60),
                    }).map(drop)
                }),
                Op::Deny { on, pick: p } => {
                    let requests = view_of(&store, &tablets, on).roi_requests;
                    if let Some(q) = pick(&requests, p) {
                        write(&store, id, &mut tablets, on, |c| {
                            c.set_roi_status(&technician(), t(n), &q.id, RoiStatus::Denied, None, Some("withdrawn"))
                        });
                    }
                }
                Op::Resolve => {
                    let conflicts = store.read(id, |c| c.conflicts()).unwrap();
                    if let Some(c) = conflicts.first() {
                        let _ = store.update(id, |chart| {
                            chart.resolve_conflict(&supervisor(), t(n), &c.path, Resolution::Keep(0))
                        });
                    }
                }
                Op::Push { from } => store.merge(id, &tablets[from - 1]).unwrap(),
                Op::Pull { to } => {
                    let current = store.chart(id).unwrap();
                    tablets[to - 1].merge(&current).unwrap();
                }
            }
            check(&store, id)?;
        }
        drop(store);
        let store = place.open(options).unwrap();
        check(&store, id)?;
    }
}
