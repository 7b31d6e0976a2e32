//! The review queues other work adds, for records supervisors and admins: the changes the
//! server held rather than merge on its own (ADR 0007), shown with what they would do and
//! accepted or rejected; and break-glass access to charts outside a person's wards (ADR 0008),
//! marked reviewed with a note. The REST endpoints and these pages share their functions, role
//! rules and audit rows.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{ChartId, Timestamp};
use chartsync_core::store::{HoldStatus, ReviewFilter};
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::AppState;

/// A held batch as a row.
pub struct HoldRow {
    pub id: i64,
    pub chart: String,
    /// The chart's MRN and ward from the index, or what the server knows of a chart it has
    /// not got.
    pub mrn: String,
    pub ward: String,
    pub who: String,
    pub device: String,
    pub reason: String,
    pub held: String,
}

/// A break-glass grant as a row.
pub struct GrantRow {
    pub id: i64,
    pub chart: String,
    pub mrn: String,
    pub ward: String,
    pub who: String,
    pub reason: String,
    pub text: String,
    pub when: String,
    pub device: String,
}

/// MRN and ward of each chart, from the index; a chart the store has not got shows as such.
async fn placed(app: &AppState, charts: Vec<ChartId>) -> HashMap<ChartId, (String, String)> {
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || {
        charts
            .into_iter()
            .map(|c| {
                let at = match store.summary(c) {
                    Ok(Some(s)) => (s.mrn, s.ward),
                    _ => ("a new chart, not yet in the record".into(), String::new()),
                };
                (c, at)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// `GET /console/review`: the pending held changes and the unreviewed break-glass grants.
pub(super) async fn queues(State(app): State<AppState>, signed: Signed) -> Response {
    let access = signed.access();
    let held = match crate::holds::held(
        app.store.clone(),
        &access,
        signed.actor(),
        Some(HoldStatus::Pending),
        None,
    )
    .await
    {
        Ok(h) => h,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let grants = match crate::break_glass::review_queue(
        app.store.clone(),
        &access,
        signed.actor(),
        ReviewFilter::Unreviewed,
    )
    .await
    {
        Ok(g) => g,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let mut charts: Vec<ChartId> = held.iter().map(|h| h.chart).collect();
    charts.extend(grants.iter().map(|g| g.chart));
    charts.sort();
    charts.dedup();
    let at = placed(&app, charts).await;
    let place = |c: &ChartId| at.get(c).cloned().unwrap_or_default();
    let holds: Vec<HoldRow> = held
        .iter()
        .map(|h| {
            let (mrn, ward) = place(&h.chart);
            HoldRow {
                id: h.id,
                chart: h.chart.to_string(),
                mrn,
                ward,
                who: format!("{} ({})", h.user, h.role),
                device: h.device.clone(),
                reason: h.reason.describe().to_string(),
                held: pages::minute(h.held_at),
            }
        })
        .collect();
    let grants: Vec<GrantRow> = grants
        .iter()
        .map(|g| {
            let (mrn, ward) = place(&g.chart);
            let ended = g.ended_at.unwrap_or(g.ends_at);
            GrantRow {
                id: g.id,
                chart: g.chart.to_string(),
                mrn,
                ward,
                who: format!("{} ({})", g.user, g.role),
                reason: g.reason.display().to_string(),
                text: g.text.clone(),
                when: format!("{} to {}", pages::minute(g.starts_at), pages::minute(ended)),
                device: g
                    .device
                    .clone()
                    .unwrap_or_else(|| "a browser or REST".into()),
            }
        })
        .collect();
    render(pages::ReviewQueues {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        as_of: &pages::minute(Timestamp::now()),
        holds: &holds,
        grants: &grants,
    })
}

#[derive(Deserialize)]
pub(super) struct HoldQuery {
    id: i64,
}

/// `GET /console/review/hold?id=N`: held changes, what they would do, and the decision forms.
pub(super) async fn hold(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<HoldQuery>,
) -> Response {
    let d = match crate::holds::detail(app.store.clone(), &signed.access(), signed.actor(), q.id)
        .await
    {
        Ok(d) => d,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let (mrn, ward) = placed(&app, vec![d.batch.chart])
        .await
        .remove(&d.batch.chart)
        .unwrap_or_default();
    let b = &d.batch;
    render(pages::ReviewHold {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        id: b.id,
        chart: &b.chart.to_string(),
        mrn: &mrn,
        ward: &ward,
        who: &format!("{} ({}), on {}", b.user, b.role, b.device),
        signed_by: b.signer.as_deref().unwrap_or(""),
        held: &pages::minute(b.held_at),
        reason: d.reason_text,
        summary: &b.summary,
        effect: &d.effect.words,
        waits: d.effect.waits_on_other_changes,
        acceptable: d.acceptable,
        pending: b.status == HoldStatus::Pending,
        decision: &match (&b.decided_by, b.decided_at) {
            (Some(by), Some(at)) => format!(
                "{} by {by}, {}{}",
                pages::words(b.status.token()),
                pages::minute(at),
                b.decision_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        },
    })
}

#[derive(Deserialize)]
pub(super) struct DecisionForm {
    csrf: String,
    id: i64,
    /// `accept` or `reject`.
    decision: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/review/hold`: accepts or rejects held changes; the device that sent them is
/// told.
pub(super) async fn decide(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let reject = match form.decision.as_str() {
        "accept" => None,
        "reject" => Some(form.reason.trim().to_string()),
        _ => return refused_page(StatusCode::BAD_REQUEST, "Accept or reject."),
    };
    match crate::holds::decided(&app, &signed.access(), signed.actor(), form.id, reject).await {
        Ok(batch) => {
            app.console.flash(
                &signed.id,
                format!(
                    "Held changes {} {}; the tablet is told.",
                    batch.id,
                    batch.status.token()
                ),
            );
            Redirect::to(&format!("/console/review/hold?id={}", batch.id)).into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

#[derive(Deserialize)]
pub(super) struct GrantForm {
    csrf: String,
    id: i64,
    note: String,
}

/// `POST /console/review/break-glass`: a grant reviewed, with the reviewer's note.
pub(super) async fn review_grant(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    match crate::break_glass::reviewed(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        form.id,
        form.note,
    )
    .await
    {
        Ok(grant) => {
            app.console.flash(
                &signed.id,
                format!("Break-glass access {} reviewed.", grant.id),
            );
            Redirect::to("/console/review").into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}
