//! The console's pages (askama templates under `server/templates/console/`, escaped by
//! default) and the rows they show.

use askama::Template;
use chartsync_core::chart::{DeficiencyKind, Timestamp};
use chartsync_core::store::{DeficiencyRef, WorklistItem};

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
    /// This page's URL with its filters: where a form on it comes back to.
    pub back: &'a str,
    /// What the last form did.
    pub flash: Option<&'a str>,
    /// The person may assign and acknowledge (a coder reads the worklist only).
    pub may_work: bool,
    /// Who a deficiency may be assigned to: user id, and as shown.
    pub people: &'a [(String, String)],
    pub buckets: &'a [(&'static str, usize)],
    pub rows: &'a [WorklistRow],
    pub pager: &'a Pager,
}

/// Where a page of a long list is, and the links to its neighbours.
pub struct Pager {
    /// 1-based positions of the first and last row shown.
    pub first: usize,
    pub last: usize,
    pub total: usize,
    pub previous: Option<String>,
    pub next: Option<String>,
}

/// A worklist item's aging bucket and days overdue (none when acknowledged).
pub fn aging_of(item: &WorklistItem, now: Timestamp) -> (Aging, Option<i64>) {
    match item.acknowledged {
        Some(_) => (Aging::Acknowledged, None),
        None => Aging::of(item.deficiency.due_at, now),
    }
}

#[derive(Template)]
#[template(path = "console/delinquency.html")]
pub struct Delinquency<'a> {
    pub person: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub idle_seconds: u64,
    pub as_of: &'a str,
    pub ward: &'a str,
    pub ward_choices: &'a [(String, bool)],
    pub delinquent: u32,
    /// The average monthly discharges, to one decimal; none without a whole month.
    pub average: Option<String>,
    pub months_counted: usize,
    pub percent: Option<String>,
    pub threshold: u32,
    pub over: bool,
    /// What delinquent records lack, with how many.
    pub kinds: &'a [(String, u32)],
    pub coding_backlog: u32,
    pub coding_backlog_overdue: u32,
    pub months: &'a [(String, u32)],
    pub trend: &'a [chartsync_core::store::DayCount],
    pub chart: super::delinquency::TrendChart,
}

#[derive(Template)]
#[template(path = "console/acknowledge.html")]
pub struct Acknowledge<'a> {
    pub person: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub idle_seconds: u64,
    pub mrn: &'a str,
    pub patient: &'a str,
    pub ward: &'a str,
    pub kind_words: &'a str,
    pub chart: &'a str,
    pub kind: &'a str,
    pub section: &'a str,
    pub record_id: &'a str,
    pub detail: &'a str,
    pub back: &'a str,
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

/// A deficiency's kind as the records office says it.
pub fn kind_label(kind: DeficiencyKind) -> &'static str {
    match kind {
        DeficiencyKind::UnsignedEntry => "Unsigned entry",
        DeficiencyKind::FormMissingSignature => "Form missing a signature",
        DeficiencyKind::OpenQuery => "Open physician query",
        DeficiencyKind::UnresolvedConflict => "Conflicting values",
        DeficiencyKind::EditedAfterSigning => "Edited after signing",
        DeficiencyKind::HistoryPhysicalMissing => "H&P missing",
        DeficiencyKind::HistoryPhysicalLate => "H&P late",
        DeficiencyKind::DischargeSummaryMissing => "Discharge summary missing",
        DeficiencyKind::CodingNotFinal => "Coding not final",
        DeficiencyKind::PoaMissing => "POA indicator missing",
        DeficiencyKind::ReleaseDue => "Release of information due",
    }
}

/// A time to the minute, as the pages show it: `2026-12-03 23:28 UTC`.
pub fn minute(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// The date of a timestamp, as the worklist shows it.
fn day(t: Timestamp) -> String {
    t.date().to_string()
}

pub struct WorklistRow {
    /// Its place on the page, for the ids its controls need.
    pub n: usize,
    pub chart: String,
    pub mrn: String,
    /// "Rivera, Ana".
    pub patient: String,
    pub ward: String,
    pub status: String,
    pub discharged: String,
    pub kind: String,
    pub detail: String,
    pub responsible: String,
    pub due: String,
    /// "12 days", or empty when not overdue.
    pub overdue: String,
    pub aging_label: &'static str,
    /// The person it is assigned to, if any.
    pub assigned: bool,
    /// "Acknowledged by him.jones on 2026-12-03", or empty.
    pub acknowledged: String,
    /// The deficiency as the assign form sends it back (JSON).
    pub reference: String,
    /// The acknowledge form's query, for a late H&P not yet acknowledged; else empty.
    pub acknowledge_query: String,
}

impl WorklistRow {
    pub fn of(n: usize, item: &WorklistItem, now: Timestamp, back: &str) -> WorklistRow {
        let d = &item.deficiency;
        let (aging, days) = aging_of(item, now);
        let reference = DeficiencyRef {
            chart: item.chart,
            kind: d.kind,
            section: d.section.clone(),
            record_id: d.record_id.clone(),
            detail: d.detail.clone(),
        };
        let acknowledge_query =
            if d.kind == DeficiencyKind::HistoryPhysicalLate && item.acknowledged.is_none() {
                serde_urlencoded::to_string([
                    ("chart", item.chart.to_string().as_str()),
                    ("kind", d.kind.token()),
                    ("section", &d.section),
                    ("record_id", &d.record_id),
                    ("detail", d.detail.as_deref().unwrap_or("")),
                    ("back", back),
                ])
                .unwrap_or_default()
            } else {
                String::new()
            };
        WorklistRow {
            n,
            chart: item.chart.to_string(),
            mrn: item.mrn.clone(),
            patient: format!("{}, {}", item.family_name, item.given_names),
            ward: item.ward.clone(),
            status: words(item.status.token()),
            discharged: item.discharged_at.map(day).unwrap_or_default(),
            kind: kind_label(d.kind).to_string(),
            detail: d.detail.clone().unwrap_or_default(),
            responsible: item
                .assignee
                .clone()
                .or_else(|| d.responsible.clone())
                .unwrap_or_default(),
            due: d.due_at.map(day).unwrap_or_default(),
            overdue: match days {
                Some(1) => "1 day".into(),
                Some(n) => format!("{n} days"),
                None => String::new(),
            },
            aging_label: aging.label(),
            assigned: item.assignee.is_some(),
            acknowledged: item
                .acknowledged
                .as_ref()
                .map(|a| format!("Acknowledged by {} on {}", a.by, day(a.at)))
                .unwrap_or_default(),
            reference: serde_json::to_string(&reference).unwrap_or_default(),
            acknowledge_query,
        }
    }
}
