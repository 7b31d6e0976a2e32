//! Concurrent writes to one register are kept by automerge; this module lists them with who
//! wrote each value, and resolves them with one write that supersedes them all.

use automerge::{hydrate, Automerge, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::types::{Role, Staff, Timestamp};
use super::write::section_writers;
use super::Chart;

/// A register with more than one current value.
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
    /// Whether any two of the chart's changes were made concurrently: only then can a
    /// value have conflicting writes. A history that is one chain (one first change, one
    /// head, no change with two dependencies) has none.
    pub(crate) fn has_concurrent_changes(&self) -> bool {
        if self.doc.get_heads().len() > 1 {
            return true;
        }
        let mut first = 0;
        for change in self.doc.get_changes_meta(&[]) {
            match change.deps.len() {
                0 => first += 1,
                1 => {}
                _ => return true,
            }
        }
        first > 1
    }

    /// Every register with concurrent values, whichever section it is in.
    pub fn conflicts(&self) -> Vec<Conflict> {
        if !self.has_concurrent_changes() {
            return Vec::new();
        }
        self.conflicts_under(ROOT, Vec::new())
    }

    /// The conflicts inside one object, whose keys from the root are `path`.
    pub(crate) fn conflicts_under(&self, start: ObjId, path: Vec<String>) -> Vec<Conflict> {
        let mut out = Vec::new();
        let mut stack: Vec<(ObjId, Vec<String>)> = vec![(start, path)];
        while let Some((obj, path)) = stack.pop() {
            let ty = match &obj {
                ObjId::Root => ObjType::Map,
                _ => match self.doc.object_type(&obj) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
            };
            let props: Vec<(Prop, bool, Value<'_>, ObjId)> = match ty {
                ObjType::Map | ObjType::Table => self
                    .doc
                    .map_range(&obj, ..)
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
                    .list_range(&obj, ..)
                    .map(|i| {
                        let id = i.id();
                        (Prop::Seq(i.index), i.conflict, i.value.into_value(), id)
                    })
                    .collect(),
                ObjType::Text => Vec::new(),
            };
            for (prop, conflict, value, id) in props {
                let is_object = matches!(value, Value::Object(_));
                if !conflict && !is_object {
                    continue;
                }
                let mut child = path.clone();
                child.push(prop.to_string());
                if conflict {
                    let values = self
                        .doc
                        .get_all(&obj, prop.clone())
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
                if is_object {
                    stack.push((id, child));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
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
