//! Concurrent writes to one register are kept by automerge; this module lists them with who
//! wrote each value, and resolves them with one write that supersedes them all.

use automerge::{
    hydrate, Automerge, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT,
};
use serde::{Deserialize, Serialize};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::types::{Role, Staff, Timestamp};
use super::write::section_writers;
use super::Chart;

/// A register with more than one current value.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Keys from the document root, e.g. `["patient", "phone"]` or
    /// `["entries", "<entry id>", "value"]`.
    pub path: Vec<String>,
    /// Every concurrent value, in automerge's order (the first is the one reads show).
    pub values: Vec<ConflictingValue>,
}

/// One of the values of a conflicted register.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictingValue {
    /// The value as JSON (objects as their whole contents).
    pub value: JsonValue,
    /// Who wrote it, from the change's author; `None` for a client that records no author.
    pub user: Option<String>,
    pub role: Option<Role>,
    pub device: Option<String>,
}

/// A value as JSON. The bindings carry it as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = serde_json::Value))]
#[serde(transparent)]
pub struct JsonValue(pub serde_json::Value);

#[cfg(feature = "uniffi")]
uniffi::custom_type!(JsonValue, String, {
    lower: |v| v.0.to_string(),
    try_lift: |text| Ok(JsonValue(serde_json::from_str(&text)?)),
});

impl std::ops::Deref for JsonValue {
    type Target = serde_json::Value;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl PartialEq<&str> for JsonValue {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How to settle a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the value at this index of [`Conflict::values`].
    Keep(usize),
    /// Write a new string (only where the register holds strings).
    Value(String),
}

fn json_of(doc: &Automerge, value: &Value<'_>, id: &ObjId) -> serde_json::Value {
    match value {
        Value::Scalar(s) => scalar_json(s),
        Value::Object(_) => match ReadDoc::hydrate(doc, id, None) {
            Ok(h) => hydrate_json(&h),
            Err(_) => serde_json::Value::Null,
        },
    }
}

fn scalar_json(s: &ScalarValue) -> serde_json::Value {
    match s {
        ScalarValue::Str(s) => serde_json::Value::String(s.to_string()),
        ScalarValue::Int(i) => (*i).into(),
        ScalarValue::Uint(u) => (*u).into(),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        ScalarValue::Boolean(b) => (*b).into(),
        ScalarValue::Timestamp(t) => (*t).into(),
        ScalarValue::Counter(c) => i64::from(c).into(),
        _ => serde_json::Value::Null,
    }
}

fn hydrate_json(v: &hydrate::Value) -> serde_json::Value {
    match v {
        hydrate::Value::Scalar(s) => scalar_json(s),
        hydrate::Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), hydrate_json(&v.value)))
                .collect(),
        ),
        hydrate::Value::List(l) => {
            serde_json::Value::Array(l.iter().map(|v| hydrate_json(&v.value)).collect())
        }
        hydrate::Value::Text(t) => serde_json::Value::String(t.to_string()),
    }
}

fn writer_of(doc: &Automerge, id: &ObjId) -> (Option<String>, Option<Role>, Option<String>) {
    let staff = match id {
        ObjId::Id(_, actor, _) => doc
            .get_author_for_actor(actor)
            .and_then(|a| serde_json::from_slice::<Staff>(a.as_bytes()).ok()),
        ObjId::Root => None,
    };
    match staff {
        Some(s) => (Some(s.user), Some(s.role), Some(s.device)),
        None => (None, None, None),
    }
}

impl Chart {
    /// Every register with concurrent values, whichever section it is in.
    ///
    /// Only objects that changes made concurrently with another change wrote can hold one:
    /// those are read, not the whole document (the walk of a 2,000-entry chart's every
    /// object took longer than the rest of its view).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let Some(written) = self.written_concurrently() else {
            return self.conflicts_under(ROOT, Vec::new());
        };
        let mut out = Vec::new();
        for obj in written {
            let path = match &obj {
                ObjId::Root => Some(Vec::new()),
                _ => self.doc.parents(&obj).ok().and_then(|p| p.visible_path()),
            };
            // Inside something deleted, or a value that lost a conflict: not shown.
            let Some(path) = path else { continue };
            let path: Vec<String> = path.into_iter().map(|(_, prop)| prop.to_string()).collect();
            self.conflicts_at(&obj, &path, &mut out, None);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The objects written by changes that are concurrent with some other change: neither
    /// before nor after it in the history. `None` when the history cannot be read so (look
    /// everywhere).
    ///
    /// In the order automerge keeps changes (each after its dependencies), the change at
    /// position i is before or after every other exactly when no dependency jumps over i:
    /// from a change before i to one after it (counting a first change as depending on a
    /// start before them all, and the end after them all as depending on every head).
    fn written_concurrently(&self) -> Option<std::collections::HashSet<ObjId>> {
        let changes = self.doc.get_changes_meta(&[]);
        let n = changes.len() as isize;
        let position: std::collections::HashMap<ChangeHash, isize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash, i as isize))
            .collect();
        let heads = self.doc.get_heads();
        // Jumps over each position, as differences: +1 where a jump starts covering, -1
        // after it ends.
        let mut jumps = vec![0i64; changes.len() + 1];
        let mut jump = |from: isize, to: isize| {
            if from + 1 < to {
                jumps[(from + 1) as usize] += 1;
                jumps[to as usize] -= 1;
            }
        };
        for (i, change) in changes.iter().enumerate() {
            let i = i as isize;
            if change.deps.is_empty() {
                jump(-1, i);
            }
            for dep in &change.deps {
                let d = *position.get(dep)?;
                if d >= i {
                    return None;
                }
                jump(d, i);
            }
            if heads.contains(&change.hash) {
                jump(i, n);
            }
        }
        let mut written = std::collections::HashSet::new();
        let mut covered = 0;
        for (i, change) in changes.iter().enumerate() {
            covered += jumps[i];
            if covered == 0 {
                continue;
            }
            let full = self.doc.get_change_by_hash(&change.hash)?;
            // automerge can fail inside decoding a hostile change: look everywhere then.
            let ops = std::panic::catch_unwind(|| full.decode().operations).ok()?;
            for op in ops {
                written.insert(match op.obj {
                    automerge::legacy::ObjectId::Root => ROOT,
                    automerge::legacy::ObjectId::Id(id) => {
                        ObjId::Id(id.counter(), id.actor().clone(), usize::MAX)
                    }
                });
            }
        }
        Some(written)
    }

    /// The conflicts inside one object, whose keys from the root are `path`.
    pub(crate) fn conflicts_under(&self, start: ObjId, path: Vec<String>) -> Vec<Conflict> {
        let mut out = Vec::new();
        let mut stack: Vec<(ObjId, Vec<String>)> = vec![(start, path)];
        while let Some((obj, path)) = stack.pop() {
            self.conflicts_at(&obj, &path, &mut out, Some(&mut stack));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The conflicts in one object's own keys (its path from the root: `path`), and, with
    /// `inside`, the objects it holds, to look in next.
    fn conflicts_at(
        &self,
        obj: &ObjId,
        path: &[String],
        out: &mut Vec<Conflict>,
        mut inside: Option<&mut Vec<(ObjId, Vec<String>)>>,
    ) {
        let ty = match obj {
            ObjId::Root => ObjType::Map,
            _ => match self.doc.object_type(obj) {
                Ok(t) => t,
                Err(_) => return,
            },
        };
        let props: Vec<(Prop, bool, Value<'_>, ObjId)> = match ty {
            ObjType::Map | ObjType::Table => self
                .doc
                .map_range(obj, ..)
                .map(|i| {
                    let id = i.id();
                    (
                        Prop::Map(i.key.to_string()),
                        i.conflict,
                        i.value.into_value(),
                        id,
                    )
                })
                .collect(),
            ObjType::List => self
                .doc
                .list_range(obj, ..)
                .map(|i| {
                    let id = i.id();
                    (Prop::Seq(i.index), i.conflict, i.value.into_value(), id)
                })
                .collect(),
            ObjType::Text => Vec::new(),
        };
        for (prop, conflict, value, id) in props {
            let descend = matches!(value, Value::Object(_)) && inside.is_some();
            if !conflict && !descend {
                continue;
            }
            let mut child = path.to_vec();
            child.push(prop.to_string());
            if conflict {
                let values = self
                    .doc
                    .get_all(obj, prop.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(v, id)| {
                        let (user, role, device) = writer_of(&self.doc, &id);
                        ConflictingValue {
                            value: JsonValue(json_of(&self.doc, &v, &id)),
                            user,
                            role,
                            device,
                        }
                    })
                    .collect();
                out.push(Conflict {
                    path: child.clone(),
                    values,
                });
            }
            if let Some(stack) = inside.as_deref_mut().filter(|_| descend) {
                stack.push((id, child));
            }
        }
    }

    /// Settles the conflict at `path` with one value that supersedes every concurrent one.
    /// The same rules as any other write apply: a signed entry cannot be resolved (add an
    /// addendum), and the value must be valid where it goes.
    pub fn resolve_conflict(
        &mut self,
        by: &Staff,
        at: Timestamp,
        path: &[String],
        resolution: Resolution,
    ) -> Result<(), ChartError> {
        let joined = path.join("/");
        let section = path.first().map(String::as_str).unwrap_or_default();
        if !section_writers(section).contains(&by.role) {
            return Err(ChartError::NotPermitted(format!(
                "a {} may not resolve conflicts in {section}",
                by.role
            )));
        }
        if section == keys::ENTRIES {
            if let Some(entry_id) = path.get(1) {
                if self.entry(entry_id)?.signed {
                    return Err(ChartError::EntrySigned {
                        entry_id: entry_id.clone(),
                    });
                }
            }
        }
        let conflict = self
            .conflicts()
            .into_iter()
            .find(|c| c.path == path)
            .ok_or(ChartError::NoConflict {
                path: joined.clone(),
            })?;
        let (parent, prop) = self.locate(path)?;
        let chosen: ChosenValue = match resolution {
            Resolution::Keep(i) => {
                let all = self.doc.get_all(&parent, prop.clone())?;
                let (v, id) = all.get(i).ok_or_else(|| ChartError::InvalidValue {
                    field: "resolution",
                    reason: format!("the conflict has {} values", conflict.values.len()),
                })?;
                match v {
                    Value::Scalar(s) => ChosenValue::Scalar(s.as_ref().clone()),
                    Value::Object(_) => ChosenValue::Object(ReadDoc::hydrate(&self.doc, id, None)?),
                }
            }
            Resolution::Value(s) => {
                if conflict.values.iter().any(|v| !v.value.is_string()) {
                    return Err(ChartError::InvalidValue {
                        field: "resolution",
                        reason: format!("{joined} does not hold text; keep one of its values"),
                    });
                }
                ChosenValue::Scalar(ScalarValue::Str(s.into()))
            }
        };
        self.commit_resolution(by, at, |tx| {
            match chosen {
                ChosenValue::Scalar(s) => {
                    automerge::transaction::Transactable::put(tx, &parent, prop, s)?;
                }
                ChosenValue::Object(h) => {
                    let ty = match &h {
                        hydrate::Value::List(_) => ObjType::List,
                        hydrate::Value::Text(_) => ObjType::Text,
                        _ => ObjType::Map,
                    };
                    let obj =
                        automerge::transaction::Transactable::put_object(tx, &parent, prop, ty)?;
                    automerge::transaction::Transactable::update_object(tx, &obj, &h)
                        .map_err(|e| ChartError::Corrupt(e.to_string()))?;
                }
            }
            // The value must still read as the schema says, or nothing is written.
            super::validate::check_path(&Reader::new(&*tx), path)
        })
    }

    /// The object holding the register at `path` and the register's key in it.
    fn locate(&self, path: &[String]) -> Result<(ObjId, Prop), ChartError> {
        let not_found = || ChartError::NoConflict {
            path: path.join("/"),
        };
        let (last, parents) = path.split_last().ok_or_else(not_found)?;
        let mut obj = ROOT;
        for key in parents {
            let prop = self.prop_in(&obj, key)?;
            obj = match self.doc.get(&obj, prop)? {
                Some((Value::Object(_), id)) => id,
                _ => return Err(not_found()),
            };
        }
        let prop = self.prop_in(&obj, last)?;
        Ok((obj, prop))
    }

    fn prop_in(&self, obj: &ObjId, key: &str) -> Result<Prop, ChartError> {
        let is_list =
            matches!(obj, ObjId::Id(..)) && matches!(self.doc.object_type(obj), Ok(ObjType::List));
        if is_list {
            key.parse::<usize>()
                .map(Prop::Seq)
                .map_err(|_| ChartError::NoConflict {
                    path: key.to_string(),
                })
        } else {
            Ok(Prop::Map(key.to_string()))
        }
    }
}

enum ChosenValue {
    Scalar(ScalarValue),
    Object(hydrate::Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::{EntryKind, NewEntry, PatientUpdate, Staff};
    use proptest::prelude::*;

    fn at(minutes: i64) -> Timestamp {
        Timestamp::parse("2026-12-02T08:00:00Z")
            .unwrap()
            .plus_seconds(minutes * 60)
    }

    fn admitted() -> Chart {
        let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
        crate::chart::testing::admitted(&clerk, at(0))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Phone(usize, u8),
        Address(usize, u8),
        Note(usize),
        Value(usize, usize, u8),
        Merge(usize, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, any::<u8>()).prop_map(|(r, v)| Step::Phone(r, v)),
            (0..3usize, any::<u8>()).prop_map(|(r, v)| Step::Address(r, v)),
            (0..3usize).prop_map(Step::Note),
            (0..3usize, 0..4usize, any::<u8>()).prop_map(|(r, e, v)| Step::Value(r, e, v)),
            (0..3usize, 0..3usize).prop_map(|(a, b)| Step::Merge(a, b)),
        ]
    }

    #[test]
    fn a_conflict_inside_an_entry_written_only_while_apart_is_found() {
        let nurses: Vec<Staff> = (0..2)
            .map(|n| Staff::new(format!("rn.{n}"), Role::Nurse, format!("tablet-{n}")))
            .collect();
        let first = admitted();
        let (mut a, mut b) = (first.fork(), first.fork());
        b.add_entry(
            &nurses[1],
            at(1),
            NewEntry::note(EntryKind::NursingNote, "Seen"),
        )
        .unwrap();
        // A writes an entry while apart from B, and B gets it.
        let note = NewEntry::note(EntryKind::Observation, "Pulse");
        let entry = a.add_entry(&nurses[0], at(2), note).unwrap();
        b.merge(&a).unwrap();
        // Both set its value while apart again; then A hears B and writes on.
        a.set_entry_value(&nurses[0], at(3), &entry, Some("80"), Some("/min"))
            .unwrap();
        b.set_entry_value(&nurses[1], at(4), &entry, Some("84"), Some("bpm"))
            .unwrap();
        a.merge(&b).unwrap();
        a.add_entry(
            &nurses[0],
            at(5),
            NewEntry::note(EntryKind::NursingNote, "Settled"),
        )
        .unwrap();
        assert_eq!(a.heads().len(), 1);

        let found = a.conflicts();
        let paths: Vec<String> = found.iter().map(|c| c.path.join("/")).collect();
        assert_eq!(paths.len(), 2, "{paths:?}");
        assert!(paths.iter().all(|p| p.contains(&entry)), "{paths:?}");
        assert_eq!(found, a.conflicts_under(ROOT, Vec::new()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Three tablets write and merge in any order: the conflicts found in what
        /// concurrent changes wrote are exactly those a walk of every object finds.
        #[test]
        fn conflicts_found_from_concurrent_changes_are_those_of_the_whole_document(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let first = admitted();
            let mut tablets: Vec<Chart> = (0..3).map(|_| first.fork()).collect();
            let nurses: Vec<Staff> = (0..3)
                .map(|n| Staff::new(format!("rn.{n}"), Role::Nurse, format!("tablet-{n}")))
                .collect();
            // Entries every tablet knows (written on the first chart, before the forks).
            let mut shared = first;
            let entries: Vec<String> = (0..4)
                .map(|n| {
                    shared
                        .add_entry(&nurses[0], at(1), NewEntry::note(EntryKind::Observation, format!("#{n}")))
                        .unwrap()
                })
                .collect();
            for t in &mut tablets {
                t.merge(&shared).unwrap();
            }
            for (k, step) in steps.into_iter().enumerate() {
                let when = at(2 + k as i64);
                match step {
                    Step::Phone(r, v) => {
                        let update = PatientUpdate { phone: Some(format!("555-{v:04}")), ..Default::default() };
                        tablets[r].change_information(&nurses[r], when, update).unwrap();
                    }
                    Step::Address(r, v) => {
                        let update = PatientUpdate { address: Some(format!("{v} Elm St")), ..Default::default() };
                        tablets[r].change_information(&nurses[r], when, update).unwrap();
                    }
                    Step::Note(r) => {
                        tablets[r]
                            .add_entry(&nurses[r], when, NewEntry::note(EntryKind::NursingNote, "Seen"))
                            .unwrap();
                    }
                    Step::Value(r, e, v) => {
                        tablets[r]
                            .set_entry_value(&nurses[r], when, &entries[e], Some(&v.to_string()), Some("/min"))
                            .unwrap();
                    }
                    Step::Merge(a, b) if a != b => {
                        let other = tablets[b].clone();
                        tablets[a].merge(&other).unwrap();
                    }
                    Step::Merge(..) => {}
                }
            }
            for t in &tablets {
                prop_assert_eq!(t.conflicts(), t.conflicts_under(ROOT, Vec::new()));
            }
        }
    }
}
