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

/// What every signed-in page's frame shows: who is signed in, the CSRF token its forms carry,
/// and the idle limit its script counts down.
pub struct Frame<'a> {
    pub person: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub idle_seconds: u64,
}

#[derive(Template)]
#[template(path = "console/worklist.html")]
pub struct Worklist<'a> {
    pub frame: Frame<'a>,
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

/// Rows on one page of a long list.
pub const PAGE_SIZE: usize = 100;

impl Pager {
    /// The page `asked` (1-based; anything else is the first, past the end the last) of a
    /// list of `total` rows: the page's number, the rows it shows, and the links to its
    /// neighbours (`url` of a page number).
    pub fn of(
        total: usize,
        asked: &str,
        url: impl Fn(usize) -> String,
    ) -> (usize, std::ops::Range<usize>, Pager) {
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let page = asked.parse::<usize>().unwrap_or(1).clamp(1, pages);
        let first = (page - 1) * PAGE_SIZE;
        let shown = first..total.min(first + PAGE_SIZE);
        let pager = Pager {
            first: first + 1,
            last: shown.end,
            total,
            previous: (page > 1).then(|| url(page - 1)),
            next: (page < pages).then(|| url(page + 1)),
        };
        (page, shown, pager)
    }
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
    pub frame: Frame<'a>,
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
#[template(path = "console/coding_queue.html")]
pub struct CodingQueue<'a> {
    pub frame: Frame<'a>,
    pub as_of: &'a str,
    pub ward: &'a str,
    pub ward_choices: &'a [(String, bool)],
    pub bill_hold_days: u32,
    /// Charts past the billing hold, of all the queue (not the page).
    pub overdue: usize,
    pub rows: &'a [super::coding::QueueRow],
    pub pager: &'a Pager,
}

#[derive(Template)]
#[template(path = "console/coding_chart.html")]
pub struct ChartCoding<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub chart: &'a str,
    pub mrn: &'a str,
    pub patient: &'a str,
    pub ward: &'a str,
    pub attending: &'a str,
    pub class: &'a str,
    pub admitted: &'a str,
    pub discharged: &'a str,
    pub stay_days: &'a str,
    pub disposition: &'a str,
    pub open_queries: usize,
    pub codes: &'a [super::coding::CodeRow],
    pub documents: &'a [super::coding::Document],
    /// Coders and technicians propose codes and set POA; only a coder makes one final.
    pub may_code: bool,
    pub may_finalize: bool,
    /// The words searched for, and what they found (`None`: no search yet).
    pub words: &'a str,
    pub found: Option<&'a [super::coding::Found]>,
    pub poa_choices: &'a [(&'static str, &'static str)],
}

#[derive(Template)]
#[template(path = "console/find_chart.html")]
pub struct FindChart<'a> {
    pub frame: Frame<'a>,
    pub mrn: &'a str,
    pub name: &'a str,
    pub birth_date: &'a str,
    pub visit_date: &'a str,
    /// What was wrong with the form, said beside it.
    pub error: Option<&'a str>,
    /// `None` before a search.
    pub hits: Option<&'a [super::charts::HitRow]>,
    pub total: u32,
    pub limit: u32,
}

#[derive(Template)]
#[template(path = "console/chart.html")]
pub struct Chart<'a> {
    pub frame: Frame<'a>,
    pub id: &'a str,
    pub as_of: &'a str,
    pub chart: &'a super::charts::ChartPage,
    /// What the form to file a scanned document offers: (token, words).
    pub document_types: Vec<(&'static str, String)>,
    pub max_mib: usize,
}

#[derive(Template)]
#[template(path = "console/patient_index.html")]
pub struct PatientIndex<'a> {
    pub frame: Frame<'a>,
    pub as_of: &'a str,
    pub ward: &'a str,
    pub ward_choices: &'a [(String, bool)],
    pub rows: &'a [super::charts::WarningRow],
}

#[derive(Template)]
#[template(path = "console/roi_log.html")]
pub struct RoiLog<'a> {
    pub frame: Frame<'a>,
    pub as_of: &'a str,
    pub ward: &'a str,
    pub ward_choices: &'a [(String, bool)],
    pub rows: &'a [super::roi::LogRow],
}

/// The written notice of a release request's extension.
#[derive(Template)]
#[template(path = "console/extension_notice.html")]
pub struct ExtensionNotice<'a> {
    pub frame: Frame<'a>,
    /// The request's page, and its link's words.
    pub back: &'a str,
    pub back_label: &'a str,
    pub dated: &'a str,
    pub requester: &'a str,
    /// What was asked for and when, as a sentence.
    pub asked: &'a str,
    /// The days the rule gives before the extension (30 for records, 60 for an accounting).
    pub days: u32,
    /// The rule that allows the one extension.
    pub rule: &'a str,
    pub reason: &'a str,
    pub due: &'a str,
    pub by: &'a str,
}

#[derive(Template)]
#[template(path = "console/accounting_list.html")]
pub struct AccountingList<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub as_of: &'a str,
    pub heading: &'a str,
    pub rows: &'a [super::accounting::RequestRow],
    /// The patient whose requests are shown, or empty for the open ones.
    pub mrn: &'a str,
}

#[derive(Template)]
#[template(path = "console/accounting_request.html")]
pub struct AccountingRequestPage<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub row: &'a super::accounting::RequestRow,
    pub patient: &'a str,
    pub address: &'a str,
    pub period: &'a str,
    pub received_by: &'a str,
    pub extension: &'a str,
    pub may_extend: bool,
    pub open: bool,
    /// When and by whom it was given, once it was.
    pub given: &'a str,
    pub lines: &'a [super::accounting::LineRow],
}

#[derive(Template)]
#[template(path = "console/accounting_letter.html")]
pub struct AccountingLetter<'a> {
    pub frame: Frame<'a>,
    pub id: &'a str,
    pub dated: &'a str,
    pub requester: &'a str,
    pub address: &'a str,
    pub patient: &'a str,
    pub mrn: &'a str,
    pub received: &'a str,
    pub period: &'a str,
    /// The fee charged, or empty.
    pub fee: &'a str,
    pub lines: &'a [super::accounting::LineRow],
    pub by: &'a str,
}

#[derive(Template)]
#[template(path = "console/roi_chart.html")]
pub struct RoiChart<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub chart: &'a str,
    pub mrn: &'a str,
    pub patient: &'a str,
    pub requests: &'a [super::roi::RequestRow],
    /// The chart's completed roi_authorization forms: id, and as the choice shows it.
    pub authorizations: &'a [(String, String)],
    /// When, to whom, what, why.
    pub disclosures: &'a [(String, String, String, String)],
    pub purposes: &'a [(&'static str, String)],
    /// Delivery tokens, as shown.
    pub deliveries: &'a [(&'static str, String)],
    pub categories: &'a [(chartsync_core::chart::SensitiveCategory, &'static str)],
}

#[derive(Template)]
#[template(path = "console/audit_trail.html")]
pub struct AuditTrail<'a> {
    pub frame: Frame<'a>,
    pub id: &'a str,
    pub as_of: &'a str,
    pub rows: &'a [super::charts::AuditRow],
}

#[derive(Template)]
#[template(path = "console/trails.html")]
pub struct Trails<'a> {
    pub frame: Frame<'a>,
    pub user: &'a str,
    pub mrn: &'a str,
    /// Whose trail is shown; none before one is asked for.
    pub heading: Option<&'a str>,
    pub rows: &'a [super::charts::AuditRow],
}

#[derive(Template)]
#[template(path = "console/acknowledge.html")]
pub struct Acknowledge<'a> {
    pub frame: Frame<'a>,
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

/// An entry's kind as a record's reader says it: "Operative note", "History and physical".
pub fn entry_label(kind: chartsync_core::chart::EntryKind) -> String {
    match kind {
        chartsync_core::chart::EntryKind::HistoryPhysical => "History and physical".into(),
        k => words(k.token()),
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
        DeficiencyKind::AddedByHand => "Added by hand",
    }
}

/// A time to the minute, as the pages show it: `2026-12-03 23:28 UTC`.
pub fn minute(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// A request's one extension as its page shows it: when, by whom, from which due date, why.
pub fn extension_said(at: Timestamp, by: &str, original_due: Timestamp, reason: &str) -> String {
    format!(
        "{} by {by}, from {}: {reason}",
        minute(at),
        day(original_due)
    )
}

/// The date of a timestamp, as the worklist shows it.
pub fn day(t: Timestamp) -> String {
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

#[derive(Template)]
#[template(path = "console/review.html")]
pub struct ReviewQueues<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub as_of: &'a str,
    pub holds: &'a [super::review::HoldRow],
    pub grants: &'a [super::review::GrantRow],
}

#[derive(Template)]
#[template(path = "console/review_hold.html")]
pub struct ReviewHold<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub id: i64,
    pub chart: &'a str,
    pub mrn: &'a str,
    pub ward: &'a str,
    pub who: &'a str,
    /// Whose key signed the changes, when it verified.
    pub signed_by: &'a str,
    pub held: &'a str,
    pub reason: &'a str,
    pub summary: &'a str,
    /// What the changes would do to the chart, one line each.
    pub effect: &'a [String],
    pub waits: bool,
    pub acceptable: bool,
    pub pending: bool,
    /// The decision, once made.
    pub decision: &'a str,
}

#[derive(Template)]
#[template(path = "console/completion.html")]
pub struct Completion<'a> {
    pub frame: Frame<'a>,
    pub flash: Option<&'a str>,
    pub chart: &'a str,
    pub patient: &'a str,
    pub mrn: &'a str,
    /// "Discharged on 4west, admitted …, discharged …".
    pub stay: &'a str,
    pub as_of: &'a str,
    /// This page, where the worklist's forms come back to.
    pub back: &'a str,
    pub rows: &'a [WorklistRow],
    /// Who a deficiency may be assigned to: user id, and as shown.
    pub people: &'a [(String, String)],
    /// Who a deficiency may be added for.
    pub physicians: &'a [String],
    /// The open hand-added deficiencies: id, what, for whom, added when and by whom.
    pub by_hand: &'a [(String, String, String, String)],
    /// The chart's entries a deficiency may be about: id, as shown.
    pub entries: &'a [(String, String)],
}

#[derive(Template)]
#[template(path = "console/physicians.html")]
pub struct Physicians<'a> {
    pub frame: Frame<'a>,
    pub as_of: &'a str,
    pub ward: &'a str,
    pub ward_choices: &'a [(String, bool)],
    pub grace_days: u32,
    pub rows: &'a [super::physicians::PhysicianRow],
    /// How many are on the suspension list.
    pub suspended: usize,
}

#[derive(Template)]
#[template(path = "console/physician_notice.html")]
pub struct PhysicianNotice<'a> {
    pub frame: Frame<'a>,
    pub dated: &'a str,
    pub physician: &'a str,
    pub rows: &'a [WorklistRow],
    pub delinquent: usize,
    /// The notice's deadline: today and the grace days.
    pub complete_by: &'a str,
    /// Who sends it.
    pub from: &'a str,
}

/// An import as a row and a heading: its file, when, and where it stands.
pub struct ImportRow {
    pub id: String,
    pub file: String,
    pub started: String,
    /// "Checking 120 of 300", "Imported 300 charts", "Failed".
    pub state: String,
    pub finished: bool,
}

impl ImportRow {
    pub fn of(id: &str, p: &super::import::Progress) -> ImportRow {
        let state = match p.phase {
            "checking" => format!("Checking {} of {}", p.done, p.total),
            "importing" => format!("Writing {} of {}", p.done, p.total),
            "done" => format!(
                "Imported {} {}",
                p.charts,
                if p.charts == 1 { "chart" } else { "charts" }
            ),
            _ => "Failed: nothing was imported".into(),
        };
        ImportRow {
            id: id.to_string(),
            file: if p.file.is_empty() {
                "(no name)".into()
            } else {
                p.file.clone()
            },
            started: minute(p.started),
            state,
            finished: p.finished(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/import.html")]
pub struct ImportPage<'a> {
    pub frame: Frame<'a>,
    pub max_mib: usize,
    pub jobs: &'a [ImportRow],
}

#[derive(Template)]
#[template(path = "console/import_job.html")]
pub struct ImportJob<'a> {
    pub frame: Frame<'a>,
    pub id: &'a str,
    pub row: &'a ImportRow,
    pub progress: &'a super::import::Progress,
}
