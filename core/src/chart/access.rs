//! Who may write a chart, judged at the chart the writer saw (docs/adr/0007-outcomes.md).
//!
//! A tablet that was offline while its patient was transferred holds vital signs written on
//! the old ward before anyone on it could have known. Judging those by where the chart is now
//! would refuse honest work; judging everything by where it was would let a ward keep writing
//! on a patient who left. So a change is judged at its dependencies — the chart as its writer
//! had it when writing — and:
//!
//! - on a ward the writer covers now: granted;
//! - written on a ward the writer covered, before the transfer that took it away (the writer
//!   had not seen it), and received within the window after the transfer: granted;
//! - written after the writer had the transfer, or received past the window: held for review;
//! - after a discharge, ward nurses: what was written before they could have seen the
//!   discharge is granted within the window; new entries written after it are held. Signing
//!   and amending their earlier entries, and everyone else's record completion (discharge
//!   summary, coding, release of information), go on as before.
//!
//! The server calls [`write_access`] before its other checks; nothing else decides this.

use std::time::Duration;

use automerge::ChangeHash;

use super::read::Reader;
use super::{keys, Chart, ChartError, EncounterStatus, EventKind, Role, Timestamp};
use crate::protocol::HoldReason;

/// How long after a transfer or discharge changes made before it are still taken: a shift
/// offline and a weekend's delay, not a device found in a drawer a month later.
pub const MOVE_WINDOW: Duration = Duration::from_secs(72 * 3600);

/// What the writer may do with these changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAccess {
    /// The chart is on a ward the writer covers, and open to them.
    Granted,
    /// Written before the writer could have seen the chart leave (at `moved_at`), and
    /// received within the window.
    GrantedAsWritten { moved_at: Timestamp },
    /// To be held for a records supervisor.
    Held {
        reason: HoldReason,
        summary: &'static str,
    },
    /// The changes do not build on this chart at all: the writer never had it, and it is to
    /// them as if it did not exist.
    NeverHad,
}

/// Decides the write access of the changes `after` has beyond `before` (the chart as the
/// server has it), for a writer in `role` whose wards are `covers`, received at `now`.
pub fn write_access(
    before: &Chart,
    after: &Chart,
    role: Role,
    covers: impl Fn(&str) -> bool,
    now: Timestamp,
    window: Duration,
) -> Result<WriteAccess, ChartError> {
    let seen = seen_heads(before, after);
    let current = before.encounter()?;
    if seen.is_empty() {
        // A chart the writer made, or changes that build on nothing here.
        return Ok(if covers(&current.ward) {
            WriteAccess::Granted
        } else {
            WriteAccess::NeverHad
        });
    }
    let reader = Reader::at(before.doc(), &seen);
    let as_seen = reader.encounter()?;
    let late = |moved_at: Timestamp| {
        now.unix_millis() - moved_at.unix_millis() > window.as_millis() as i64
    };

    if !covers(&current.ward) {
        if !covers(&as_seen.ward) {
            return Ok(WriteAccess::Held {
                reason: HoldReason::OutsideWards,
                summary: "written while the chart was on a ward the writer does not cover",
            });
        }
        let moved_at = first_event_since(before, &reader, EventKind::Transfer)?.unwrap_or(now);
        return Ok(if late(moved_at) {
            WriteAccess::Held {
                reason: HoldReason::OutsideWards,
                summary: "written before the transfer, but received past the window after it",
            }
        } else {
            WriteAccess::GrantedAsWritten { moved_at }
        });
    }

    if current.status == EncounterStatus::Discharged && role == Role::Nurse {
        if as_seen.status == EncounterStatus::Active {
            let moved_at = current.discharged_at.unwrap_or(now);
            return Ok(if late(moved_at) {
                WriteAccess::Held {
                    reason: HoldReason::AfterDischarge,
                    summary: "written before the discharge, but received past the window after it",
                }
            } else {
                WriteAccess::GrantedAsWritten { moved_at }
            });
        }
        let had: std::collections::HashSet<String> = reader
            .records(keys::ENTRIES, |_, id, _| Ok(id.to_string()))?
            .into_iter()
            .collect();
        let now_has =
            Reader::new(after.doc()).records(keys::ENTRIES, |_, id, _| Ok(id.to_string()))?;
        if now_has.iter().any(|id| !had.contains(id)) {
            return Ok(WriteAccess::Held {
                reason: HoldReason::AfterDischarge,
                summary: "new entries written after the discharge",
            });
        }
    }
    Ok(WriteAccess::Granted)
}

/// The heads of the chart as the writer had it: the dependencies of the new changes that the
/// server's chart holds.
fn seen_heads(before: &Chart, after: &Chart) -> Vec<ChangeHash> {
    let mut seen: Vec<ChangeHash> = after
        .doc()
        .get_changes_meta(&before.heads())
        .into_iter()
        .filter(|c| before.doc().get_change_meta_by_hash(&c.hash).is_none())
        .flat_map(|c| c.deps)
        .filter(|d| before.doc().get_change_meta_by_hash(d).is_some())
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// When the first event of `kind` that the writer had not seen happened.
fn first_event_since(
    before: &Chart,
    as_seen: &Reader<'_, automerge::Automerge>,
    kind: EventKind,
) -> Result<Option<Timestamp>, ChartError> {
    let known: std::collections::HashSet<String> = as_seen
        .log(keys::EVENTS, |r, o, p| r.event(o, p))?
        .into_iter()
        .map(|e| e.id)
        .collect();
    Ok(Reader::new(before.doc())
        .log(keys::EVENTS, |r, o, p| r.event(o, p))?
        .into_iter()
        .filter(|e| e.kind == kind && !known.contains(&e.id))
        .map(|e| e.at)
        .min())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::{NewEntry, Shift, Staff};
    use crate::codes::CodeSystem;

    fn at(hours: i64) -> Timestamp {
        Timestamp::parse("2026-11-27T20:00:00Z")
            .unwrap()
            .plus_seconds(hours * 3600)
    }

    fn clerk() -> Staff {
        Staff::new("him.jones", Role::Technician, "records-pc-1")
    }

    fn nurse() -> Staff {
        Staff::new("rn.park", Role::Nurse, "tablet-4west-02")
    }

    fn admitted() -> Chart {
        crate::chart::testing::admitted(&clerk(), at(0))
    }

    fn vitals(chart: &mut Chart, hour: i64) {
        chart
            .add_entry(
                &nurse(),
                at(hour),
                NewEntry {
                    kind: crate::chart::EntryKind::Observation,
                    shift: Some(Shift::Night),
                    effective_at: None,
                    codes: vec![crate::chart::CodeInput::new(CodeSystem::Loinc, "8867-4")],
                    value: Some("88".into()),
                    unit: Some("/min".into()),
                    body: "Heart rate".into(),
                },
            )
            .unwrap();
    }

    fn on_4west(ward: &str) -> bool {
        ward == "4west"
    }

    /// The server's chart, transferred to 5east at hour 2; the tablet's copy from before.
    fn transferred() -> (Chart, Chart) {
        let mut server = admitted();
        let tablet = server.fork();
        server
            .transfer(&clerk(), at(2), "5east", Some("3"))
            .unwrap();
        (server, tablet)
    }

    fn judged(server: &Chart, tablet: &Chart, role: Role, hours_later: i64) -> WriteAccess {
        let mut after = server.fork();
        after.merge(tablet).unwrap();
        write_access(server, &after, role, on_4west, at(hours_later), MOVE_WINDOW).unwrap()
    }

    #[test]
    fn vitals_written_before_a_transfer_the_tablet_had_not_seen_are_taken_within_the_window() {
        let (server, mut tablet) = transferred();
        vitals(&mut tablet, 3);
        assert_eq!(
            judged(&server, &tablet, Role::Nurse, 10),
            WriteAccess::GrantedAsWritten { moved_at: at(2) }
        );
        // Four days later the same vitals wait for a person.
        assert!(matches!(
            judged(&server, &tablet, Role::Nurse, 2 + 73),
            WriteAccess::Held {
                reason: HoldReason::OutsideWards,
                ..
            }
        ));
    }

    #[test]
    fn vitals_written_after_the_tablet_saw_the_transfer_are_held() {
        let (server, _) = transferred();
        let mut tablet = server.fork();
        vitals(&mut tablet, 3);
        assert!(matches!(
            judged(&server, &tablet, Role::Nurse, 4),
            WriteAccess::Held {
                reason: HoldReason::OutsideWards,
                ..
            }
        ));
    }

    #[test]
    fn a_chart_on_the_writers_ward_is_granted_and_one_never_had_is_unknown() {
        let server = admitted();
        let mut tablet = server.fork();
        vitals(&mut tablet, 1);
        assert_eq!(
            judged(&server, &tablet, Role::Nurse, 1),
            WriteAccess::Granted
        );
        let stranger = admitted();
        let mut after = server.fork();
        after.merge(&stranger).unwrap();
        let icu = |w: &str| w == "icu";
        assert_eq!(
            write_access(&server, &after, Role::Nurse, icu, at(1), MOVE_WINDOW).unwrap(),
            WriteAccess::NeverHad
        );
    }

    #[test]
    fn after_a_discharge_nurses_new_entries_are_held_but_earlier_ones_and_physicians_go_on() {
        let mut server = admitted();
        let before_discharge = server.fork();
        server.discharge(&clerk(), at(5), "home").unwrap();

        let mut unaware = before_discharge.fork();
        vitals(&mut unaware, 4);
        assert_eq!(
            judged(&server, &unaware, Role::Nurse, 6),
            WriteAccess::GrantedAsWritten { moved_at: at(5) }
        );

        let mut aware = server.fork();
        vitals(&mut aware, 6);
        assert!(matches!(
            judged(&server, &aware, Role::Nurse, 6),
            WriteAccess::Held {
                reason: HoldReason::AfterDischarge,
                ..
            }
        ));
        assert_eq!(
            judged(&server, &aware, Role::Physician, 6),
            WriteAccess::Granted
        );
    }
}
