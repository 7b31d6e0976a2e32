//! Importing charts into the store, from the records office's CLI or the console: a JSON array
//! or NDJSON file of admissions (`{"patient", "encounter", "admitted_at"[, "id"]}`) or saved
//! charts (`{"id", "automerge": base64}`), every item checked before any is written, then
//! all of them in one transaction, with progress for each phase. Errors name the line and
//! the field, never a patient's data.

use base64::Engine;
use chartsync_core::chart::{Chart, ChartId, NewEncounter, NewPatient, Role, Staff, Timestamp};
use chartsync_core::store::{Actor, ChartFilter, ChartStore, IndexWarning, StoreError};
use serde::Deserialize;

/// Why nothing was imported.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The file holds no chart.
    Empty,
    /// An item is wrong: its line, and why.
    Line {
        line: usize,
        reason: String,
    },
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// What an import wrote.
pub(crate) struct Imported {
    pub charts: Vec<ChartId>,
    /// What the patient index says about them, to look into (ids only).
    pub warnings: Vec<IndexWarning>,
}

/// The phase a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Every item read and checked; nothing written yet.
    Checking,
    /// The charts written, in one transaction.
    Importing,
}

/// Imports the charts in `text` as `actor`: all of them, or (on any error) none; a chart on a
/// ward `covers` refuses is an error. `progress` hears each phase's items done of its total.
pub(crate) fn import(
    store: &ChartStore,
    actor: &Actor,
    text: &str,
    covers: impl Fn(&str) -> bool,
    mut progress: impl FnMut(Phase, usize, usize),
) -> Result<Imported, Failure> {
    // A file saved by a Windows editor starts with a byte-order mark; it is not part of the
    // JSON.
    let items = items(text.strip_prefix('\u{feff}').unwrap_or(text))?;
    if items.is_empty() {
        return Err(Failure::Empty);
    }
    let total = items.len();
    let by = Staff::new(actor.user.clone(), Role::Technician, actor.device.clone());
    let mut charts = Vec::with_capacity(total);
    let mut seen = std::collections::HashMap::new();
    let mut admissions = std::collections::HashMap::new();
    progress(Phase::Checking, 0, total);
    for (n, (line, item)) in items.iter().enumerate() {
        let (id, chart, admission) = chart_of(item, &by).map_err(|reason| Failure::Line {
            line: *line,
            reason,
        })?;
        let ward = chart
            .encounter()
            .map_err(|e| Failure::Line {
                line: *line,
                reason: e.to_string(),
            })?
            .ward;
        if !covers(&ward) {
            return Err(Failure::Line {
                line: *line,
                reason: format!("the chart is on ward {ward}, which is not one of yours"),
            });
        }
        if let Some(first) = seen.insert(id, *line) {
            return Err(Failure::Line {
                line: *line,
                reason: format!("chart {id} is also on line {first}"),
            });
        }
        // The same admission twice (this file again, say) is refused, not admitted twice.
        if let Some((mrn, at)) = admission {
            let filter = ChartFilter {
                mrn: Some(mrn.clone()),
                ..ChartFilter::default()
            };
            if let Some(existing) = store.list(&filter)?.iter().find(|c| c.admitted_at == at) {
                return Err(Failure::Line {
                    line: *line,
                    reason: format!(
                        "this admission is already in this store, as chart {}",
                        existing.id
                    ),
                });
            }
            if let Some(first) = admissions.insert((mrn, at), *line) {
                return Err(Failure::Line {
                    line: *line,
                    reason: format!("the same admission is also on line {first}"),
                });
            }
        }
        charts.push((id, chart));
        progress(Phase::Checking, n + 1, total);
    }
    let lines: Vec<usize> = items.iter().map(|(l, _)| *l).collect();
    progress(Phase::Importing, 0, total);
    let imported = store
        .import_as(actor, charts, Some(total), |p| {
            progress(Phase::Importing, p.done, total)
        })
        .map_err(|e| match e {
            StoreError::Import { index, error } => Failure::Line {
                line: lines.get(index).copied().unwrap_or(0),
                reason: error.to_string(),
            },
            other => other.into(),
        })?;
    let warnings = store.patient_index_warnings(None, Timestamp::now(), Some(&imported))?;
    Ok(Imported {
        charts: imported,
        warnings,
    })
}

/// One item of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Admission {
    id: Option<String>,
    patient: NewPatient,
    encounter: NewEncounter,
    admitted_at: Timestamp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedChart {
    id: String,
    automerge: String,
}

/// The items of a JSON array or NDJSON file, each with the line it starts on.
fn items(text: &str) -> Result<Vec<(usize, &str)>, Failure> {
    let line_of = |offset: usize| text[..offset].bytes().filter(|b| *b == b'\n').count() + 1;
    if text.trim_start().starts_with('[') {
        let raw: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(|e| Failure::Line {
                line: e.line(),
                reason: format!("not a JSON array of charts ({})", serde_reason(&e)),
            })?;
        Ok(raw
            .into_iter()
            .map(|r| {
                let offset = r.get().as_ptr() as usize - text.as_ptr() as usize;
                (line_of(offset), r.get())
            })
            .collect())
    } else {
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| (n + 1, l))
            .collect())
    }
}

/// serde_json's message, without its position (the caller gives the file's line) and without
/// any value from the input. serde's own words name fields and types, and what was expected;
/// where they would quote the value found ("invalid type: string \"...\"", "unknown variant
/// `...`"), only what was expected is kept. Custom messages (a timestamp's) are chartsync's
/// own and quote nothing.
fn serde_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    let expected = || {
        text.rsplit_once(", expected ")
            .map(|(_, exp)| format!(", expected {exp}"))
            .unwrap_or_default()
    };
    if text.starts_with("invalid type") {
        format!("wrong type{}", expected())
    } else if text.starts_with("invalid value") || text.starts_with("invalid length") {
        format!("invalid value{}", expected())
    } else if text.starts_with("unknown variant") {
        format!("unknown value{}", expected())
    } else {
        text.to_string()
    }
}

/// An item as `T`; an error names the field it is about (`patient.sex: unknown value, ...`).
fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = serde_reason(e.inner());
        if path == "." {
            reason
        } else {
            format!("{path}: {reason}")
        }
    })
}

/// An item's chart and id, and for an admission its patient's MRN and admission time (the
/// same pair twice is the same admission).
type Item = (ChartId, Chart, Option<(String, Timestamp)>);

fn chart_of(item: &str, by: &Staff) -> Result<Item, String> {
    let value: serde_json::Value =
        serde_json::from_str(item).map_err(|e| format!("not JSON ({})", serde_reason(&e)))?;
    if value.get("automerge").is_some() {
        let saved: SavedChart = from_value(value)?;
        let id = saved
            .id
            .parse()
            .map_err(|_| "id is not a chart id".to_string())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(saved.automerge.trim())
            .map_err(|_| "automerge is not base64".to_string())?;
        let chart = Chart::load(&bytes).map_err(|e| e.to_string())?;
        // Every rule the server applies to a chart a device sends it.
        chartsync_core::chart::validate::validate_changes(
            &automerge::Automerge::new(),
            chart.doc(),
        )
        .map_err(|rejection| {
            // Each problem once, whole: the field or record, and the code and why it is
            // refused. This is the operator's own file, shown on their terminal, not a log.
            let mut problems: Vec<String> = Vec::new();
            for v in &rejection.violations {
                let said = v.to_string();
                if !problems.contains(&said) {
                    problems.push(said);
                }
            }
            format!(
                "the chart breaks its rules ({} problem{}): {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("; ")
            )
        })?;
        Ok((id, chart, None))
    } else {
        let a: Admission = from_value(value)?;
        // A random id, as a tablet makes them: an id derived from the MRN and the admission
        // time could be guessed by anyone who knows both.
        let id = match &a.id {
            Some(id) => id.parse().map_err(|_| "id is not a chart id".to_string())?,
            None => ChartId::random(),
        };
        let admission = (a.patient.mrn.clone(), a.admitted_at);
        let chart =
            Chart::create(a.patient, a.encounter, by, a.admitted_at).map_err(|e| e.to_string())?;
        Ok((id, chart, Some(admission)))
    }
}
