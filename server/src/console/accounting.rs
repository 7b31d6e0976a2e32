//! Accounting requests in the console (45 CFR 164.528): the open ones with their days left, a
//! request logged from a form (the MRN posted, never in a URL), extended once with a notice to
//! print, answered with the accounting kept as it was given, and the letter the patient reads.
//! Records supervisors and admins of every ward, as over REST.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::Timestamp;
use chartsync_core::store::{AccountingRequest, AccountingRequestStatus, NewAccountingRequest};
use serde::Deserialize;

use super::roi::{cents_of, days_left, dollars};
use super::{pages, refused_page, render, Signed};
use crate::accounting::{AccountingWork, Answered};
use crate::AppState;

/// A request as a row of a list.
pub struct RequestRow {
    pub id: String,
    pub mrn: String,
    pub requester: String,
    pub received: String,
    pub due: String,
    pub left: String,
    pub late: bool,
    pub extended: bool,
    pub fee: String,
    pub status: String,
}

fn row(r: &AccountingRequest, now: Timestamp) -> RequestRow {
    let open = r.status == AccountingRequestStatus::Open;
    let (left, late) = if open {
        days_left(r.due_at, now)
    } else {
        (String::new(), false)
    };
    RequestRow {
        id: r.id.clone(),
        mrn: r.mrn.clone(),
        requester: r.requester.clone(),
        received: pages::day(r.received_at),
        due: pages::day(r.due_at),
        left,
        late,
        extended: r.extension.is_some(),
        fee: fee_said(r),
        status: match (r.status, r.provided_at) {
            (AccountingRequestStatus::Provided, Some(at)) => {
                format!("Given {}", pages::day(at))
            }
            _ => "Open".into(),
        },
    }
}

fn fee_said(r: &AccountingRequest) -> String {
    if r.fee_cents > 0 {
        dollars(r.fee_cents)
    } else if r.first_in_twelve_months {
        "Free (first in 12 months)".into()
    } else {
        "No fee".into()
    }
}

/// `GET /console/accounting`: the open requests, soonest due first, and the forms to log one
/// and to find a patient's.
pub(super) async fn list(State(app): State<AppState>, signed: Signed) -> Response {
    let heading = |n: usize| {
        format!(
            "{n} open {}, soonest due first",
            if n == 1 { "request" } else { "requests" }
        )
    };
    list_page(&app, &signed, None, heading).await
}

/// The open requests (no `mrn`) or a patient's, under `heading` (of their number).
async fn list_page(
    app: &AppState,
    signed: &Signed,
    mrn: Option<String>,
    heading: impl Fn(usize) -> String,
) -> Response {
    let now = Timestamp::now();
    let shown = mrn.clone().unwrap_or_default();
    match crate::accounting::requests(app.store.clone(), &signed.access(), signed.actor(), mrn)
        .await
    {
        Ok(found) => {
            let rows: Vec<RequestRow> = found.iter().map(|r| row(r, now)).collect();
            render(pages::AccountingList {
                frame: signed.frame(app),
                flash: signed.session.flash.as_deref(),
                as_of: &pages::minute(now),
                heading: &heading(rows.len()),
                rows: &rows,
                mrn: &shown,
            })
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

#[derive(Deserialize)]
pub(super) struct LogForm {
    csrf: String,
    mrn: String,
    requester: String,
    address: String,
    /// A date (YYYY-MM-DD), or empty for the whole six years.
    #[serde(default)]
    since: String,
    /// Dollars, or empty.
    #[serde(default)]
    fee: String,
}

/// `POST /console/accounting`: logs a request received today, then shows it.
pub(super) async fn log(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<LogForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let since = match form.since.trim() {
        "" => None,
        day => match Timestamp::parse(&format!("{day}T00:00:00Z")) {
            Ok(t) => Some(t),
            Err(_) => {
                return refused_page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The period's start is a date, like 2024-01-31.",
                )
            }
        },
    };
    let fee_cents = match cents_of(&form.fee, "The fee") {
        Ok(c) => c,
        Err(why) => return refused_page(StatusCode::UNPROCESSABLE_ENTITY, &why),
    };
    let new = NewAccountingRequest {
        mrn: form.mrn.trim().to_string(),
        requester: form.requester,
        address: form.address,
        since,
        fee_cents,
    };
    let w = AccountingWork::Log(new);
    let said = "Request logged, due in 60 days.";
    work_then_show(&app, &signed, w, said).await
}

#[derive(Deserialize)]
pub(super) struct PatientForm {
    csrf: String,
    mrn: String,
}

/// `POST /console/accounting/patient`: every request of one patient, with the accountings
/// given (the MRN posted, so it stays out of the URL).
pub(super) async fn patient(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<PatientForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let mrn = form.mrn.trim().to_string();
    let heading = format!("Every request of {mrn}, newest first");
    list_page(&app, &signed, Some(mrn), |_| heading.clone()).await
}

#[derive(Deserialize)]
pub(super) struct RequestQuery {
    id: String,
}

/// One accounting of disclosures line, as the letter and the request page show it.
pub struct LineRow {
    pub at: String,
    pub recipient: String,
    pub address: String,
    pub description: String,
    pub purpose: String,
}

/// The purpose of a disclosure as a patient reads it (164.528(b)(2)(iv): a brief statement).
fn purpose_said(token: &str) -> &'static str {
    match token {
        "required_by_law" => "Required by law",
        "public_health" => "Public health activities, such as reporting disease",
        "abuse_or_neglect" => "A report of abuse, neglect or domestic violence",
        "health_oversight" => "Health oversight, such as an audit or inspection",
        "judicial_proceeding" => "A court order or subpoena",
        "law_enforcement" => "Law enforcement",
        "decedent" => "To a coroner, medical examiner or funeral director",
        "organ_donation" => "Organ, eye or tissue donation",
        "research" => "Research",
        "serious_threat" => "To prevent a serious threat to health or safety",
        "specialized_government" => "Specialized government functions",
        "workers_compensation" => "Workers' compensation",
        _ => "Other",
    }
}

fn lines(done: &Answered) -> Vec<LineRow> {
    done.accounting
        .iter()
        .flat_map(|a| &a.disclosures)
        .map(|d| LineRow {
            at: pages::day(d.disclosure.at),
            recipient: d.disclosure.recipient.clone(),
            address: d.disclosure.recipient_address.clone(),
            description: d.disclosure.description.clone(),
            purpose: purpose_said(d.disclosure.purpose.token()).into(),
        })
        .collect()
}

async fn answered(app: &AppState, signed: &Signed, id: String) -> Result<Answered, Response> {
    crate::accounting::one(app.store.clone(), &signed.access(), signed.actor(), id)
        .await
        .map_err(|r| refused_page(r.0, &r.1))
}

/// `GET /console/accounting/request?id=…`: a request, the forms to extend and answer it, and
/// once answered, what was given.
pub(super) async fn request(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<RequestQuery>,
) -> Response {
    let done = match answered(&app, &signed, q.id).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let r = &done.request;
    let now = Timestamp::now();
    let open = r.status == AccountingRequestStatus::Open;
    render(pages::AccountingRequestPage {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        row: &row(r, now),
        patient: &done.patient,
        address: &r.address,
        period: &period(&done),
        received_by: &r.received_by,
        extension: &r
            .extension
            .as_ref()
            .map(|e| pages::extension_said(e.at, &e.by, e.original_due_at, &e.reason))
            .unwrap_or_default(),
        may_extend: open && r.extension.is_none() && now <= r.due_at,
        open,
        given: &r
            .provided_at
            .map(|at| {
                format!(
                    "{} by {}",
                    pages::minute(at),
                    r.provided_by.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default(),
        lines: &lines(&done),
    })
}

/// The period an accounting covers (or, before it is given, will cover).
fn period(done: &Answered) -> String {
    match (&done.accounting, done.request.since) {
        (Some(a), _) => format!("{} to {}", pages::day(a.from), pages::day(a.to)),
        (None, Some(since)) => format!("From {}, as the patient asked", pages::day(since)),
        (None, None) => "The six years before it is given".into(),
    }
}

#[derive(Deserialize)]
pub(super) struct StepForm {
    csrf: String,
    id: String,
    /// `extend` or `provide`.
    step: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/accounting/request`: extends a request, or answers it.
pub(super) async fn step(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<StepForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let (w, said) = match form.step.as_str() {
        "extend" => (
            AccountingWork::Extend {
                id: form.id,
                reason: form.reason,
            },
            "Extended by 30 days. Print the notice for the requester.",
        ),
        "provide" => (
            AccountingWork::Provide { id: form.id },
            "The accounting is given and kept as it was given. Print the letter.",
        ),
        _ => return refused_page(StatusCode::BAD_REQUEST, "That is not a step of a request."),
    };
    work_then_show(&app, &signed, w, said).await
}

/// Does `w` and shows the request saying `said`; or why it was refused, nothing changed.
async fn work_then_show(
    app: &AppState,
    signed: &Signed,
    w: AccountingWork,
    said: &str,
) -> Response {
    match crate::accounting::work(app.store.clone(), &signed.access(), signed.actor(), w).await {
        Ok(done) => {
            app.console.flash(&signed.id, said.to_string());
            Redirect::to(&format!(
                "/console/accounting/request?id={}",
                done.request.id
            ))
            .into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

/// `GET /console/accounting/letter?id=…`: the accounting as given, in a letter the patient
/// can read (45 CFR 164.528(b)): each disclosure's date, recipient, what and why.
pub(super) async fn letter(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<RequestQuery>,
) -> Response {
    let done = match answered(&app, &signed, q.id).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let Some(given) = done.request.provided_at else {
        return refused_page(
            StatusCode::CONFLICT,
            "This request has not been answered yet: give the accounting first.",
        );
    };
    render(pages::AccountingLetter {
        frame: signed.frame(&app),
        id: &done.request.id,
        dated: &pages::day(given),
        requester: &done.request.requester,
        address: &done.request.address,
        patient: &done.patient,
        mrn: &done.request.mrn,
        received: &pages::day(done.request.received_at),
        period: &period(&done),
        fee: &match done.request.fee_cents {
            0 => String::new(),
            c => dollars(c),
        },
        lines: &lines(&done),
        by: done.request.provided_by.as_deref().unwrap_or(""),
    })
}

/// `GET /console/accounting/notice?id=…`: the written notice of a request's extension.
pub(super) async fn notice(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<RequestQuery>,
) -> Response {
    let done = match answered(&app, &signed, q.id).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let r = &done.request;
    let Some(e) = &r.extension else {
        return refused_page(StatusCode::NOT_FOUND, "This request has not been extended.");
    };
    render(pages::ExtensionNotice {
        frame: signed.frame(&app),
        back: &format!("/console/accounting/request?id={}", r.id),
        back_label: "Back to the accounting request",
        dated: &pages::day(e.at),
        requester: &r.requester,
        asked: &format!(
            "On {} we received your request for an accounting of the disclosures of the health information of {} (medical record number {}).",
            pages::day(r.received_at),
            done.patient,
            r.mrn
        ),
        days: 60,
        rule: "45 CFR 164.528(c)(1)(ii)",
        reason: &e.reason,
        due: &pages::day(r.due_at),
        by: &e.by,
    })
}
