//! Physicians' incomplete records in the console: each physician's open, overdue and
//! delinquent records, the suspension list, and the notice a physician is sent (to print).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chartsync_core::chart::Timestamp;
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::physicians::Incomplete;
use crate::AppState;

pub struct PhysicianRow {
    pub physician: String,
    pub open: usize,
    pub overdue: usize,
    pub delinquent: usize,
    pub oldest: String,
    pub suspend: bool,
}

async fn listed(
    app: &AppState,
    signed: &Signed,
    query: &HashMap<String, String>,
    now: Timestamp,
) -> Result<Vec<Incomplete>, Response> {
    crate::physicians::incomplete(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        query,
        app.suspension_grace_days,
        now,
    )
    .await
    .map_err(|r| refused_page(r.0, &r.1))
}

/// The ward filter of a page's query, alone.
fn ward_only(query: HashMap<String, String>) -> (String, HashMap<String, String>) {
    let ward = query.get("ward").cloned().unwrap_or_default();
    let q = query
        .into_iter()
        .filter(|(k, v)| k == "ward" && !v.is_empty())
        .collect();
    (ward, q)
}

/// `GET /console/physicians[?ward=W]`: every physician with incomplete records, most overdue
/// first, and the suspension list.
pub(super) async fn list(
    State(app): State<AppState>,
    signed: Signed,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (ward, query) = ward_only(query);
    let now = Timestamp::now();
    let all = match listed(&app, &signed, &query, now).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let rows: Vec<PhysicianRow> = all
        .iter()
        .map(|p| PhysicianRow {
            physician: p.physician.clone(),
            open: p.open,
            overdue: p.overdue,
            delinquent: p.delinquent_charts,
            oldest: p
                .oldest_overdue_days
                .map(|d| format!("{d} days"))
                .unwrap_or_default(),
            suspend: p.suspend,
        })
        .collect();
    let ward_choices = super::ward_choices(&signed.access(), &ward);
    render(pages::Physicians {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &ward,
        ward_choices: &ward_choices,
        grace_days: app.suspension_grace_days,
        suspended: rows.iter().filter(|r| r.suspend).count(),
        rows: &rows,
    })
}

#[derive(Deserialize)]
pub(super) struct NoticeQuery {
    user: String,
    #[serde(default)]
    ward: String,
}

/// `GET /console/physicians/notice?user=U[&ward=W]`: the notice of a physician's incomplete
/// records, to print and send.
pub(super) async fn notice(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let mut query = HashMap::new();
    if !q.ward.is_empty() {
        query.insert("ward".to_string(), q.ward.clone());
    }
    let now = Timestamp::now();
    let all = match listed(&app, &signed, &query, now).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let Some(p) = all.into_iter().find(|p| p.physician == q.user) else {
        return refused_page(
            StatusCode::NOT_FOUND,
            "That physician has no incomplete record here.",
        );
    };
    let back = format!("/console/physicians/notice?user={}", p.physician);
    let rows: Vec<pages::WorklistRow> = p
        .items
        .iter()
        .enumerate()
        .map(|(n, item)| pages::WorklistRow::of(n, item, now, &back))
        .collect();
    let by = now.plus_seconds(i64::from(app.suspension_grace_days) * 86_400);
    render(pages::PhysicianNotice {
        frame: signed.frame(&app),
        dated: &pages::day(now),
        physician: &p.physician,
        rows: &rows,
        delinquent: p.delinquent_charts,
        complete_by: &pages::day(by),
        from: &signed.session.user,
    })
}
