//! The console's pages (askama templates under `server/templates/console/`, escaped by
//! default) and the rows they show.

use askama::Template;
use chartsync_core::chart::Timestamp;
use chartsync_core::store::WorklistItem;

use super::aging::Aging;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub struct SignIn<'a> {
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub user: &'a str,
}

#[derive(Template)]
#[template(path = "console/refused.html")]
pub struct Refused<'a> {
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "console/worklist.html")]
pub struct Worklist<'a> {
    pub person: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub idle_seconds: u64,
    pub as_of: &'a str,
    pub ward: &'a str,
    /// The person's wards, each with whether it is the one shown.
    pub ward_choices: &'a [(String, bool)],
    /// Each kind's token, its words, and whether it is the one shown.
    pub kinds: Vec<(&'static str, String, bool)>,
    pub responsible: &'a str,
    pub overdue_only: bool,
    pub buckets: &'a [(&'static str, usize)],
    pub rows: &'a [WorklistRow],
}

/// A token as words: `unsigned_entry` → "Unsigned entry".
pub fn words(token: &str) -> String {
    let spaced = token.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The date of a timestamp, as the worklist shows it.
fn day(t: Timestamp) -> String {
    t.date().to_string()
}

pub struct WorklistRow {
    pub chart: String,
    pub mrn: String,
    pub ward: String,
    pub status: String,
    pub discharged: String,
    pub kind: String,
    pub detail: String,
    pub responsible: String,
    pub due: String,
    /// "12 days", or empty when not overdue.
    pub overdue: String,
    pub aging: Aging,
    pub aging_label: &'static str,
}

impl WorklistRow {
    pub fn of(item: &WorklistItem, now: Timestamp) -> WorklistRow {
        let d = &item.deficiency;
        let (aging, days) = Aging::of(d.due_at, now);
        WorklistRow {
            chart: item.chart.to_string(),
            mrn: item.mrn.clone(),
            ward: item.ward.clone(),
            status: words(item.status.token()),
            discharged: item.discharged_at.map(day).unwrap_or_default(),
            kind: words(d.kind.token()),
            detail: d.detail.clone().unwrap_or_default(),
            responsible: d.responsible.clone().unwrap_or_default(),
            due: d.due_at.map(day).unwrap_or_default(),
            overdue: match days {
                Some(1) => "1 day".into(),
                Some(n) => format!("{n} days"),
                None => String::new(),
            },
            aging,
            aging_label: aging.label(),
        }
    }
}
