//! The coding screens: the coding queue of discharged charts (with the stay each describes,
//! due when the billing hold ends), and one chart's coding: its codes with their descriptions
//! and, for procedures, when and by whom; codes found by words; a code proposed, its POA
//! indicator set, made final. The URL names a chart by its id only; search words and codes
//! travel in form bodies.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{
    CodingSequence, CodingStatus, EntryKind, EntryStatus, PresentOnAdmission, Timestamp,
};
use chartsync_core::codes::CodeSystem;
use chartsync_core::store::{AuditAction, CodingQueueItem, StoreError};
use serde::{Deserialize, Serialize};

use super::{aging::Aging, pages, refused_page, render, Signed};
use crate::coding::{codes_charts, CodeWork, DEFAULT_MATCHES};
use crate::records::reads_records_statistics;
use crate::AppState;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct QueueFilters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    ward: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

impl QueueFilters {
    fn url(&self) -> String {
        match serde_urlencoded::to_string(self) {
            Ok(q) if !q.is_empty() => format!("/console/coding?{q}"),
            _ => "/console/coding".to_string(),
        }
    }
}

fn refused(r: crate::records::Refusal) -> Response {
    refused_page(r.0, &r.1)
}

/// Whole days between two times, rounded down (a length of stay: 0 for a same-day stay).
fn days_between(from: Timestamp, to: Timestamp) -> i64 {
    (to.unix() - from.unix()).div_euclid(86_400)
}

pub struct QueueRow {
    pub chart: String,
    pub mrn: String,
    pub patient: String,
    pub ward: String,
    pub attending: String,
    pub class: String,
    pub admitted: String,
    pub discharged: String,
    pub stay_days: String,
    pub disposition: String,
    pub principal: String,
    /// "2 codes not final, 1 POA missing, 1 open query".
    pub work: String,
    pub due: String,
    pub overdue: String,
}

impl QueueRow {
    fn of(item: &CodingQueueItem, now: Timestamp) -> QueueRow {
        let mut work = Vec::new();
        let mut count = |n: u32, one: &str, many: &str| {
            if n > 0 {
                work.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        };
        count(item.not_final, "code not final", "codes not final");
        count(item.poa_missing, "POA missing", "POA missing");
        count(item.open_queries, "open query", "open queries");
        if item.principal_diagnosis.is_none() {
            work.insert(0, "no principal diagnosis".into());
        } else if !item.principal_final {
            work.insert(0, "principal not final".into());
        }
        let (_, late) = Aging::of(item.due_at, now);
        QueueRow {
            chart: item.chart.to_string(),
            mrn: item.mrn.clone(),
            patient: format!("{}, {}", item.family_name, item.given_names),
            ward: item.ward.clone(),
            attending: item.attending.clone().unwrap_or_default(),
            class: item
                .class
                .map(|c| pages::words(c.token()))
                .unwrap_or_default(),
            admitted: pages::day(item.admitted_at),
            discharged: item.discharged_at.map(pages::day).unwrap_or_default(),
            stay_days: item
                .discharged_at
                .map(|d| days_between(item.admitted_at, d).to_string())
                .unwrap_or_default(),
            disposition: item
                .disposition
                .as_deref()
                .map(pages::words)
                .unwrap_or_default(),
            principal: item.principal_diagnosis.clone().unwrap_or_default(),
            work: work.join(", "),
            due: item.due_at.map(pages::day).unwrap_or_default(),
            overdue: late
                .map(|d| format!("{d} day{}", if d == 1 { "" } else { "s" }))
                .unwrap_or_default(),
        }
    }
}

/// `GET /console/coding[?ward=W&page=N]`: the coding queue, earliest discharge first.
pub(super) async fn queue(
    State(app): State<AppState>,
    signed: Signed,
    Query(filters): Query<QueueFilters>,
) -> Response {
    if !reads_records_statistics(signed.session.role) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "The coding queue is for coders and records staff.",
        );
    }
    let access = signed.access();
    let ward_query = [("ward".to_string(), filters.ward.clone())]
        .into_iter()
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let wards = match crate::records::listing_wards(&access, &ward_query) {
        Ok(w) => w,
        Err(r) => return refused(r),
    };
    let store = app.store.clone();
    let actor = signed.actor();
    let now = Timestamp::now();
    let bill_hold = app.bill_hold_days;
    let detail = crate::records::audit_detail("console coding queue", &wards);
    let listed = tokio::task::spawn_blocking(move || {
        let items = store.coding_queue(wards.as_deref(), now, bill_hold)?;
        store.record_audit(&actor, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(items)
    })
    .await;
    let items = match listed {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    let overdue = items.iter().filter(|i| i.overdue).count();
    let on_page = |p: usize| {
        QueueFilters {
            page: if p <= 1 { String::new() } else { p.to_string() },
            ..filters.clone()
        }
        .url()
    };
    let (_, shown, pager) = pages::Pager::of(items.len(), &filters.page, on_page);
    let rows: Vec<QueueRow> = items[shown].iter().map(|i| QueueRow::of(i, now)).collect();
    let ward_choices = super::ward_choices(&access, &filters.ward);
    render(pages::CodingQueue {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &filters.ward,
        ward_choices: &ward_choices,
        bill_hold_days: bill_hold,
        overdue,
        rows: &rows,
        pager: &pager,
    })
}

#[derive(Deserialize)]
pub(super) struct ChartQuery {
    id: String,
}

pub struct CodeRow {
    pub id: String,
    pub system: String,
    pub code: String,
    pub description: String,
    pub sequence: String,
    /// The POA token, empty when none; `None` for a code that carries none.
    pub poa: Option<String>,
    pub status: String,
    pub is_final: bool,
    pub coded: String,
    /// For a procedure: "2026-11-03 10:20 UTC by dr.okafor, dr.lee", or empty.
    pub performed: String,
}

/// A document a code may rest on, as the form's choice shows it.
pub struct Document {
    pub id: String,
    pub label: String,
    pub body: String,
    pub signed: bool,
}

pub struct Found {
    pub code: &'static str,
    pub description: &'static str,
}

/// The POA indicators, token and words, in the order a coder reads them.
pub const POA_CHOICES: [(&str, &str); 5] = [
    ("Y", "Y: present on admission"),
    ("N", "N: not present on admission"),
    ("U", "U: documentation insufficient"),
    ("W", "W: clinically undetermined"),
    ("exempt", "Exempt from POA reporting"),
];

/// Renders one chart's coding page, with the results of a search if there was one.
async fn chart_page(
    app: &AppState,
    signed: &Signed,
    id: &str,
    search: Option<(&str, Vec<crate::coding::CodeMatch>)>,
) -> Response {
    let Ok(chart) = id.parse() else {
        return refused_page(StatusCode::BAD_REQUEST, "That is not a chart id.");
    };
    let coding = match crate::coding::chart_coding(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        chart,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let codes: Vec<CodeRow> = coding
        .codes
        .iter()
        .map(|l| {
            let c = &l.coding;
            let diagnosis = c.system == CodeSystem::Icd10Cm.token();
            CodeRow {
                id: c.id.clone(),
                system: CodeSystem::from_token(&c.system)
                    .map(|s| s.name().to_string())
                    .unwrap_or_else(|_| c.system.clone()),
                code: c.code.clone(),
                description: l.description.clone().unwrap_or_default(),
                sequence: pages::words(c.sequence.token()),
                poa: diagnosis.then(|| c.poa.map(|p| p.token().to_string()).unwrap_or_default()),
                status: pages::words(c.status.token()),
                is_final: c.status == CodingStatus::Final,
                coded: format!("{} by {}", pages::minute(c.coded_at), c.coded_by),
                performed: match &l.performed_at {
                    Some(at) => format!("{} by {}", pages::minute(*at), l.performed_by.join(", ")),
                    None => String::new(),
                },
            }
        })
        .collect();
    let documents: Vec<Document> = coding
        .entries
        .iter()
        .filter(|e| {
            e.status != EntryStatus::EnteredInError
                && !matches!(
                    e.content.kind,
                    EntryKind::Observation | EntryKind::Medication | EntryKind::NursingNote
                )
        })
        .map(|e| {
            let c = &e.content;
            Document {
                id: e.id.clone(),
                label: format!(
                    "{}, {}, {}",
                    pages::entry_label(c.kind),
                    pages::minute(c.effective_at.unwrap_or(c.recorded_at)),
                    c.author
                ),
                body: c.body.clone(),
                signed: e.signed,
            }
        })
        .collect();
    let e = &coding.encounter;
    let (words, found) = match search {
        Some((w, f)) => (
            w.to_string(),
            Some(
                f.into_iter()
                    .map(|m| Found {
                        code: m.code,
                        description: m.description,
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        None => (String::new(), None),
    };
    let role = signed.session.role;
    render(pages::ChartCoding {
        frame: signed.frame(app),
        flash: signed.session.flash.as_deref(),
        chart: &coding.chart.to_string(),
        mrn: &coding.mrn,
        patient: &coding.patient,
        ward: &e.ward,
        attending: e.attending.as_deref().unwrap_or(""),
        class: &pages::words(e.class.token()),
        admitted: &pages::minute(e.admitted_at),
        discharged: &e.discharged_at.map(pages::minute).unwrap_or_default(),
        stay_days: &e
            .discharged_at
            .map(|d| days_between(e.admitted_at, d).to_string())
            .unwrap_or_default(),
        disposition: &e
            .discharge_disposition
            .as_deref()
            .map(pages::words)
            .unwrap_or_default(),
        open_queries: coding.open_queries,
        codes: &codes,
        documents: &documents,
        may_code: codes_charts(role),
        may_finalize: role == chartsync_core::chart::Role::Coder,
        words: &words,
        found: found.as_deref(),
        poa_choices: &POA_CHOICES,
    })
}

/// `GET /console/coding/chart?id=…`: one chart's coding.
pub(super) async fn chart(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    chart_page(&app, &signed, &q.id, None).await
}

#[derive(Deserialize)]
pub(super) struct SearchForm {
    csrf: String,
    chart: String,
    #[serde(default)]
    q: String,
}

/// `POST /console/coding/search`: the chart's page with the codes the words find (a POST,
/// so that words about a patient's condition stay out of the URL and the history).
pub(super) async fn search(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<SearchForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let access = signed.access();
    let words = form.q.clone();
    let found = tokio::task::spawn_blocking(move || {
        crate::coding::search(&access, &words, DEFAULT_MATCHES)
    })
    .await;
    match found {
        Ok(Ok(found)) => chart_page(&app, &signed, &form.chart, Some((&form.q, found))).await,
        Ok(Err(r)) => refused(r),
        Err(e) => crate::api::internal(e),
    }
}

fn back_to_chart(chart: &str) -> String {
    match chart.parse::<chartsync_core::chart::ChartId>() {
        Ok(id) => format!("/console/coding/chart?id={id}"),
        Err(_) => "/console/coding".to_string(),
    }
}

#[derive(Deserialize)]
pub(super) struct AssignForm {
    csrf: String,
    chart: String,
    /// A code picked from the search's results (ICD-10-CM)...
    #[serde(default)]
    pick: String,
    /// ... or typed, with its system.
    #[serde(default)]
    system: String,
    #[serde(default)]
    code: String,
    sequence: String,
    #[serde(default)]
    poa: String,
    #[serde(default)]
    supporting: String,
}

/// `POST /console/coding/assign`: proposes a code on the chart.
pub(super) async fn assign(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<AssignForm>,
) -> Response {
    let chart = match checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let (system, code) = if form.pick.is_empty() {
        (form.system.as_str(), form.code.trim())
    } else {
        (CodeSystem::Icd10Cm.token(), form.pick.as_str())
    };
    if code.is_empty() {
        let said = "Choose a code from the search's results, or type one.";
        return back_saying(&app, &signed, &form.chart, said.into());
    }
    let supporting: Vec<String> = Some(form.supporting.clone())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    let new = match crate::coding::new_coding(
        system,
        code,
        &form.sequence,
        Some(form.poa.as_str()),
        supporting,
    ) {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    let said = match new.sequence {
        CodingSequence::Principal => {
            format!("{} proposed as the principal diagnosis.", new.code.code)
        }
        s => format!("{} proposed as the {} code.", new.code.code, s.token()),
    };
    work_then_back(
        &app,
        &signed,
        &form.chart,
        chart,
        CodeWork::Assign(new),
        said,
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
    csrf: String,
    chart: String,
    coding: String,
    /// Empty: leave the indicator as it is.
    #[serde(default)]
    poa: String,
    /// `final` to make the code final; empty to change only the POA.
    #[serde(default)]
    status: String,
}

/// `POST /console/coding/change`: a code's POA indicator and, with `status=final`, the code
/// made final, in one commit.
pub(super) async fn change(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> Response {
    let chart = match checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let poa = match form.poa.as_str() {
        "" => None,
        p => match PresentOnAdmission::from_token(p) {
            Ok(p) => Some(p),
            Err(_) => {
                return refused_page(
                    StatusCode::BAD_REQUEST,
                    "That POA indicator is not one the console knows.",
                )
            }
        },
    };
    let status = match form.status.as_str() {
        "" => None,
        s => match CodingStatus::from_token(s) {
            Ok(s) => Some(s),
            Err(_) => {
                return refused_page(
                    StatusCode::BAD_REQUEST,
                    "That coding status is not one the console knows.",
                )
            }
        },
    };
    if poa.is_none() && status.is_none() {
        let said = "Nothing to change: choose a POA indicator.";
        return back_saying(&app, &signed, &form.chart, said.into());
    }
    let said = match (poa, status) {
        (_, Some(CodingStatus::Final)) => "The code is final.".to_string(),
        (Some(p), _) => format!("POA indicator set to {}.", p.token()),
        _ => "Saved.".to_string(),
    };
    let work = CodeWork::Change {
        coding: form.coding.clone(),
        poa,
        status,
    };
    work_then_back(&app, &signed, &form.chart, chart, work, said).await
}

/// A form from the console's own page (its CSRF token, its Origin), naming a chart by id.
pub(super) fn checked(
    signed: &Signed,
    headers: &HeaderMap,
    csrf: &str,
    chart: &str,
) -> Result<chartsync_core::chart::ChartId, Response> {
    signed.check(headers, csrf)?;
    chart_of(chart)
}

/// The chart a page or form names, or the page saying it is not a chart id.
pub(super) fn chart_of(text: &str) -> Result<chartsync_core::chart::ChartId, Response> {
    text.parse()
        .map_err(|_| refused_page(StatusCode::BAD_REQUEST, "That is not a chart id."))
}

/// Back to the chart's coding page, which says `said` once.
fn back_saying(app: &AppState, signed: &Signed, chart: &str, said: String) -> Response {
    app.console.flash(&signed.id, said);
    Redirect::to(&back_to_chart(chart)).into_response()
}

/// Does the coder's `work` on the chart as the signed-in person and goes back to its page
/// saying `said`; or shows why it was refused, nothing changed.
async fn work_then_back(
    app: &AppState,
    signed: &Signed,
    chart_text: &str,
    chart: chartsync_core::chart::ChartId,
    work: CodeWork,
    said: String,
) -> Response {
    let done = crate::coding::work(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        "console",
        chart,
        work,
    )
    .await;
    match done {
        Ok(_) => back_saying(app, signed, chart_text, said),
        Err(r) => refused(r),
    }
}
