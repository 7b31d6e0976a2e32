//! The release-of-information screens: the log of open requests with their days left, and one
//! chart's requests, where a request is logged from a form and moved along (authorization
//! verified, denied, released with its disclosure recorded).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{ChartId, DisclosurePurpose, FormType, RoiStatus, Timestamp};
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::roi::{works_roi, RoiWork};
use crate::AppState;

pub struct LogRow {
    pub chart: String,
    pub mrn: String,
    pub patient: String,
    pub ward: String,
    pub requester: String,
    pub recipient: String,
    pub purpose: String,
    pub received: String,
    pub due: String,
    /// "12 days left", "3 days overdue".
    pub left: String,
    pub late: bool,
    pub status: String,
}

/// Days left to the due date, or days past it.
fn days_left(due: Timestamp, now: Timestamp) -> (String, bool) {
    // Any part of a day counts as a day, either side of the due time.
    let secs = due.unix() - now.unix();
    let plural = |n: i64| if n == 1 { "" } else { "s" };
    if secs < 0 {
        let late = (-secs + 86_399) / 86_400;
        (format!("{late} day{} overdue", plural(late)), true)
    } else {
        let days = (secs + 86_399) / 86_400;
        (format!("{days} day{} left", plural(days)), false)
    }
}

/// `GET /console/roi[?ward=W]`: the open requests, soonest due first.
pub(super) async fn log(
    State(app): State<AppState>,
    signed: Signed,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let access = signed.access();
    let ward = query.get("ward").cloned().unwrap_or_default();
    let query = query
        .into_iter()
        .filter(|(k, v)| k == "ward" && !v.is_empty())
        .collect();
    let now = Timestamp::now();
    let lines =
        match crate::roi::open_requests(app.store.clone(), &access, signed.actor(), &query, now)
            .await
        {
            Ok(l) => l,
            Err(r) => return refused_page(r.0, &r.1),
        };
    let rows: Vec<LogRow> = lines
        .iter()
        .map(|l| {
            let r = &l.request;
            let (left, late) = days_left(r.due_at, now);
            LogRow {
                chart: l.chart.to_string(),
                mrn: l.mrn.clone(),
                patient: l.patient.clone(),
                ward: l.ward.clone(),
                requester: r.requester.clone(),
                recipient: r.recipient.clone(),
                purpose: pages::words(r.purpose.token()),
                received: pages::day(r.received_at),
                due: pages::day(r.due_at),
                left,
                late,
                status: pages::words(r.status.token()),
            }
        })
        .collect();
    let ward_choices = super::ward_choices(&access, &ward);
    render(pages::RoiLog {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &ward,
        ward_choices: &ward_choices,
        rows: &rows,
    })
}

#[derive(Deserialize)]
pub(super) struct ChartQuery {
    id: String,
}

pub struct RequestRow {
    pub id: String,
    pub requester: String,
    pub recipient: String,
    pub address: String,
    pub purpose: String,
    pub scope: String,
    pub received: String,
    pub due: String,
    pub left: String,
    pub status: String,
    pub status_note: String,
    pub open: bool,
    pub verified: bool,
}

/// `GET /console/roi/chart?id=…`: a chart's requests and disclosures, the forms to log and
/// move requests. Audited as a read of the chart.
pub(super) async fn chart(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    if !works_roi(signed.session.role) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "Release of information is worked by records technicians and supervisors.",
        );
    }
    let Ok(id) = q.id.parse::<ChartId>() else {
        return refused_page(StatusCode::BAD_REQUEST, "That is not a chart id.");
    };
    let view = match crate::coding::read_view(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
        "release of information",
    )
    .await
    {
        Ok(v) => v,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let now = Timestamp::now();
    let requests: Vec<RequestRow> = view
        .roi_requests
        .iter()
        .map(|r| {
            let open = matches!(
                r.status,
                RoiStatus::Received | RoiStatus::AuthorizationVerified
            );
            RequestRow {
                id: r.id.clone(),
                requester: r.requester.clone(),
                recipient: r.recipient.clone(),
                address: r.recipient_address.clone(),
                purpose: pages::words(r.purpose.token()),
                scope: r.scope.clone(),
                received: pages::minute(r.received_at),
                due: pages::day(r.due_at),
                left: if open {
                    days_left(r.due_at, now).0
                } else {
                    String::new()
                },
                status: pages::words(r.status.token()),
                status_note: format!(
                    "{} by {}{}",
                    pages::minute(r.status_at),
                    r.status_by,
                    r.status_reason
                        .as_deref()
                        .map(|why| format!(": {why}"))
                        .unwrap_or_default()
                ),
                open,
                verified: r.status == RoiStatus::AuthorizationVerified,
            }
        })
        .collect();
    let authorizations: Vec<(String, String)> = view
        .forms
        .iter()
        .filter(|f| f.form_type == FormType::RoiAuthorization && f.completed_at.is_some())
        .map(|f| {
            (
                f.id.clone(),
                format!("Authorization signed {}", pages::minute(f.created_at)),
            )
        })
        .collect();
    let disclosures: Vec<(String, String, String, String)> = view
        .disclosures
        .iter()
        .map(|d| {
            (
                pages::minute(d.at),
                d.recipient.clone(),
                d.description.clone(),
                pages::words(d.purpose.token()),
            )
        })
        .collect();
    let purposes: Vec<(&'static str, String)> = DisclosurePurpose::ALL
        .iter()
        .map(|p| (p.token(), pages::words(p.token())))
        .collect();
    render(pages::RoiChart {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        chart: &q.id,
        mrn: &view.patient.mrn,
        patient: &format!("{}, {}", view.patient.family_name, view.patient.given_names),
        requests: &requests,
        authorizations: &authorizations,
        disclosures: &disclosures,
        purposes: &purposes,
    })
}

#[derive(Deserialize)]
pub(super) struct RoiForm {
    csrf: String,
    chart: String,
    /// Empty: a new request.
    #[serde(default)]
    request: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    requester: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    recipient_address: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    authorization_form: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    description: String,
}

/// `POST /console/roi/chart`: logs a request (no `request`), or moves one (`status`).
pub(super) async fn work(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<RoiForm>,
) -> Response {
    let chart = match super::coding::checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let some = |v: &str| Some(v.to_string());
    let (work, said) = if form.request.is_empty() {
        let purpose = match crate::roi::purpose(&form.purpose) {
            Ok(p) => p,
            Err(r) => return refused_page(r.0, &r.1),
        };
        let w = RoiWork::Receive {
            requester: form.requester.trim().to_string(),
            recipient: form.recipient.trim().to_string(),
            recipient_address: form.recipient_address.trim().to_string(),
            purpose,
            scope: form.scope.trim().to_string(),
        };
        (w, "Request logged, due in 30 days.".to_string())
    } else {
        match crate::roi::moved(
            form.request.clone(),
            &form.status,
            some(&form.authorization_form),
            some(&form.reason),
            some(&form.description),
        ) {
            Ok(w) => {
                let said = match &w {
                    RoiWork::Verify { .. } => "Authorization verified.",
                    RoiWork::Deny { .. } => "Request denied.",
                    RoiWork::Fulfil { .. } => "Released; the disclosure is recorded.",
                    RoiWork::Receive { .. } => "Saved.",
                };
                (w, said.to_string())
            }
            Err(r) => return refused_page(r.0, &r.1),
        }
    };
    match crate::roi::work(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        "console",
        chart,
        work,
    )
    .await
    {
        Ok(_) => {
            app.console.flash(&signed.id, said);
            Redirect::to(&format!("/console/roi/chart?id={chart}")).into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}
