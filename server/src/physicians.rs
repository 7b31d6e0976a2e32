//! Physicians' incomplete records, as a medical staff office follows them: for each physician
//! in the staff directory, the deficiencies routed to them (assigned, or theirs by the rules),
//! how many are overdue, their delinquent records (discharged and overdue), and the notice a
//! physician is sent. The suspension list is the physicians with a delinquent record more
//! than `--suspension-grace-days` past due: the bylaws decide what follows; the console lists
//! them, it suspends no one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{ChartId, EncounterStatus, Role, Timestamp};
use chartsync_core::store::{
    Actor, AuditAction, ChartStore, CredentialStatus, DeficiencyFilter, StoreError, WorklistItem,
};
use serde::Serialize;

use crate::api::actor;
use crate::auth::Access;
use crate::records::{audit_detail, listing_wards, settled, works_deficiencies, Refusal};
use crate::AppState;

/// Days a delinquent record may stay incomplete after the notice before its physician is on
/// the suspension list, unless the hospital's bylaws say otherwise.
pub const DEFAULT_SUSPENSION_GRACE_DAYS: u32 = 7;

/// One physician's incomplete records.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub(crate) struct Incomplete {
    pub physician: String,
    /// Open deficiencies routed to them.
    pub open: usize,
    pub overdue: usize,
    /// Discharged charts with one of their deficiencies overdue (not acknowledged).
    pub delinquent_charts: usize,
    /// Days past due of their most overdue deficiency on a delinquent chart.
    pub oldest_overdue_days: Option<i64>,
    /// A delinquent record more than the grace days past due.
    pub suspend: bool,
    /// The deficiencies, soonest due first (for the notice).
    #[serde(skip)]
    pub items: Vec<WorklistItem>,
}

fn days_overdue(item: &WorklistItem, now: Timestamp) -> Option<i64> {
    match (item.overdue, item.deficiency.due_at) {
        (true, Some(due)) => Some((now.unix() - due.unix()) / 86_400),
        _ => None,
    }
}

/// Each active physician with open deficiencies on `wards` (`None`: every ward), most overdue
/// first; audited as a listing.
pub(crate) async fn incomplete(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    query: &HashMap<String, String>,
    grace_days: u32,
    now: Timestamp,
) -> Result<Vec<Incomplete>, Refusal> {
    if !works_deficiencies(access.role) {
        return Err(Refusal(
            axum::http::StatusCode::FORBIDDEN,
            "physicians' incomplete records are for records technicians and supervisors".into(),
        ));
    }
    let wards = listing_wards(access, query)?;
    let result = tokio::task::spawn_blocking(move || {
        let physicians: BTreeSet<String> = store
            .staff()?
            .into_iter()
            .filter(|m| m.role == Role::Physician && m.status == CredentialStatus::Active)
            .map(|m| m.user)
            .collect();
        let filter = DeficiencyFilter {
            wards: wards.clone(),
            ..DeficiencyFilter::default()
        };
        let mut by_physician: BTreeMap<String, Vec<WorklistItem>> = BTreeMap::new();
        for item in store.worklist(&filter, now)? {
            let who = item
                .assignee
                .clone()
                .or_else(|| item.deficiency.responsible.clone());
            if let Some(p) = who.filter(|p| physicians.contains(p)) {
                by_physician.entry(p).or_default().push(item);
            }
        }
        let grace = i64::from(grace_days);
        let mut out: Vec<Incomplete> = by_physician
            .into_iter()
            .map(|(physician, items)| {
                let delinquent: Vec<&WorklistItem> = items
                    .iter()
                    .filter(|i| i.overdue && i.status == EncounterStatus::Discharged)
                    .collect();
                let charts: BTreeSet<ChartId> = delinquent.iter().map(|i| i.chart).collect();
                let oldest = delinquent.iter().filter_map(|i| days_overdue(i, now)).max();
                Incomplete {
                    open: items.len(),
                    overdue: items.iter().filter(|i| i.overdue).count(),
                    delinquent_charts: charts.len(),
                    oldest_overdue_days: oldest,
                    suspend: oldest.is_some_and(|d| d > grace),
                    physician,
                    items,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (b.oldest_overdue_days, b.overdue, &a.physician).cmp(&(
                a.oldest_overdue_days,
                a.overdue,
                &b.physician,
            ))
        });
        let detail = format!(
            "{}: {} physicians",
            audit_detail("physicians' incomplete records", &wards),
            out.len()
        );
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(Ok(out))
    })
    .await;
    settled(result)
}

/// One physician's deficiencies, soonest due first.
#[derive(Serialize, utoipa::ToSchema)]
struct OneBody {
    physician: String,
    suspend: bool,
    deficiencies: Vec<WorklistItem>,
}

#[derive(utoipa::ToSchema, Serialize)]
struct Listed<'a> {
    as_of: Timestamp,
    suspension_grace_days: u32,
    physicians: &'a [Incomplete],
}

/// `GET /api/physicians/incomplete[?ward=W]`: each physician's open, overdue and delinquent
/// records, most overdue first, and whether they are on the suspension list.
#[utoipa::path(
    get,
    operation_id = "physicians_list",
    path = "/api/physicians/incomplete",
    tag = "worklist",
    summary = "Each physician's open, overdue and delinquent records, and the suspension list",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of physicians, most overdue first", body = Listed), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn list(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let paging = match crate::paging::Paging::of(&query) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    let now = Timestamp::now();
    let grace = app.suspension_grace_days;
    match incomplete(app.store.clone(), &access, who, &query, grace, now).await {
        Ok(physicians) => paging.respond(&uri, physicians, |physicians| {
            Json(Listed {
                as_of: now,
                suspension_grace_days: grace,
                physicians: &physicians,
            })
            .into_response()
        }),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/physicians/{user}/incomplete[?ward=W]`: one physician's deficiencies, soonest
/// due first (ids and MRNs), as their notice lists them.
#[utoipa::path(
    get,
    operation_id = "physicians_one",
    path = "/api/physicians/{user}/incomplete",
    tag = "worklist",
    summary = "One physician's deficiencies, as their notice lists them",
    params(("user" = String, Path, description = "the physician's user id"), ("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)")),
    responses((status = 200, description = "the physician's deficiencies", body = OneBody), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn one(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let who = actor(&access, &headers);
    let now = Timestamp::now();
    let grace = app.suspension_grace_days;
    match incomplete(app.store.clone(), &access, who, &query, grace, now).await {
        Ok(all) => match all.into_iter().find(|p| p.physician == user) {
            Some(p) => Json(OneBody {
                physician: p.physician,
                suspend: p.suspend,
                deficiencies: p.items,
            })
            .into_response(),
            None => {
                let store = app.store.clone();
                let asked = user.clone();
                let known = tokio::task::spawn_blocking(move || store.staff_member(&asked))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
                    .is_some_and(|(m, _)| m.role == Role::Physician);
                if known {
                    Json(OneBody {
                        physician: user,
                        suspend: false,
                        deficiencies: Vec::new(),
                    })
                    .into_response()
                } else {
                    Refusal(
                        axum::http::StatusCode::NOT_FOUND,
                        format!("no physician {user} in the staff directory"),
                    )
                    .into_response()
                }
            }
        },
        Err(r) => r.into_response(),
    }
}
