//! Chart completion for one chart: what the record still lacks, the checked deficiencies
//! routed to a person, a late H&P acknowledged (through the worklist's own forms), and
//! deficiencies added and withdrawn by hand.

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{ChartId, DeficiencyKind, Role, Timestamp};
use chartsync_core::store::CredentialStatus;
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::completion::ByHand;
use crate::AppState;

#[derive(Deserialize)]
pub(super) struct ChartQuery {
    id: String,
}

/// The page of chart `id`, where its forms come back to.
pub(super) fn page_of(id: ChartId) -> String {
    format!("/console/completion?id={id}")
}

/// `GET /console/completion?id=…`: the chart's open deficiencies and the forms to work them.
pub(super) async fn show(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    let id = match super::coding::chart_of(&q.id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let c = match crate::completion::completion(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let now = Timestamp::now();
    let back = page_of(id);
    let rows: Vec<pages::WorklistRow> = c
        .deficiencies
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let mut row = pages::WorklistRow::of(n, item, now, &back);
            if item.deficiency.kind == DeficiencyKind::AddedByHand {
                // What the office wrote, from the chart.
                if let Some(q) = c.by_hand().find(|q| q.id == item.deficiency.record_id) {
                    row.detail = q.question.clone();
                }
            }
            row
        })
        .collect();
    let active = |m: &&chartsync_core::store::StaffMember| m.status == CredentialStatus::Active;
    let people: Vec<(String, String)> = c
        .staff
        .iter()
        .filter(active)
        .map(|m| {
            (
                m.user.clone(),
                format!("{} ({})", m.user, pages::words(m.role.token())),
            )
        })
        .collect();
    let physicians: Vec<String> = c
        .staff
        .iter()
        .filter(active)
        .filter(|m| m.role == Role::Physician)
        .map(|m| m.user.clone())
        .collect();
    let by_hand: Vec<(String, String, String, String)> = c
        .by_hand()
        .map(|q| {
            (
                q.id.clone(),
                q.question.clone(),
                q.to.clone(),
                format!("{} by {}", pages::minute(q.asked_at), q.asked_by),
            )
        })
        .collect();
    let entries: Vec<(String, String)> = c
        .view
        .entries
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                format!(
                    "{}, {}",
                    pages::entry_label(e.content.kind),
                    pages::minute(e.content.recorded_at)
                ),
            )
        })
        .collect();
    let v = &c.view;
    render(pages::Completion {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        chart: &q.id,
        patient: &format!("{}, {}", v.patient.family_name, v.patient.given_names),
        mrn: &v.patient.mrn,
        stay: &format!(
            "{} on {}, admitted {}{}",
            pages::words(v.encounter.status.token()),
            v.encounter.ward,
            pages::day(v.encounter.admitted_at),
            v.encounter
                .discharged_at
                .map(|d| format!(", discharged {}", pages::day(d)))
                .unwrap_or_default()
        ),
        as_of: &pages::minute(now),
        back: &back,
        rows: &rows,
        people: &people,
        physicians: &physicians,
        by_hand: &by_hand,
        entries: &entries,
    })
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    csrf: String,
    chart: String,
    what: String,
    to: String,
    #[serde(default)]
    about: String,
}

/// `POST /console/completion/add`: a deficiency added by hand.
pub(super) async fn add(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Response {
    let chart = match super::coding::checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let work = ByHand::Add {
        what: form.what,
        to: form.to.trim().to_string(),
        about: Some(form.about).filter(|a| !a.is_empty()),
    };
    let said = "Deficiency added: it is on the physician's worklist and tablet.";
    work_then_back(&app, &signed, chart, work, said).await
}

#[derive(Deserialize)]
pub(super) struct WithdrawForm {
    csrf: String,
    chart: String,
    deficiency: String,
}

/// `POST /console/completion/withdraw`: a hand-added deficiency put right.
pub(super) async fn withdraw(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<WithdrawForm>,
) -> Response {
    let chart = match super::coding::checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let work = ByHand::Withdraw {
        query: form.deficiency,
    };
    work_then_back(&app, &signed, chart, work, "Put right: withdrawn.").await
}

async fn work_then_back(
    app: &AppState,
    signed: &Signed,
    chart: ChartId,
    work: ByHand,
    said: &str,
) -> Response {
    match crate::completion::by_hand(
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
            app.console.flash(&signed.id, said.to_string());
            Redirect::to(&page_of(chart)).into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}
