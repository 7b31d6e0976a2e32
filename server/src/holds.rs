//! The holding area, for records supervisors: changes the server would not merge on its own
//! (`sync::Worker::hold`), listed, shown — what they would do, in words and as a JSON Patch
//! of the chart's view — and accepted (merged, attributed to their author) or rejected (kept
//! with the decision). Each decision reaches the device that sent the changes, if it is
//! connected, and otherwise when it next syncs the chart.
//!
//! Supervisors see the holds of charts on their wards; holds of charts the store has not got
//! (a refused new chart, a ward census) are the records office's (`*`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{Chart, ChartId, Role};
use chartsync_core::protocol::ChartNotice;
use chartsync_core::store::{Actor, AuditAction, ChartStore, HeldBatch, HoldStatus, StoreError};
use serde::{Deserialize, Serialize};

use crate::api::{actor, error};
use crate::auth::{Access, ALL_WARDS};
use crate::records::{settled, Refusal};
use crate::AppState;

/// Whether `access` may see the holds of `chart`.
fn may_review(store: &ChartStore, access: &Access, chart: ChartId) -> Result<bool, StoreError> {
    Ok(match store.summary(chart)? {
        Some(s) => access.may_see_ward(&s.ward),
        None => access.may_see_ward(ALL_WARDS),
    })
}

fn supervisors_only(access: &Access) -> Result<(), Refusal> {
    if matches!(access.role, Role::RecordsSupervisor | Role::Admin) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::FORBIDDEN,
            "the holding area is for records supervisors and admins".into(),
        ))
    }
}

/// The held batches with `status` (`None`: all), of `chart` or every chart, that `access` may
/// review, newest first; audited as a listing.
pub(crate) async fn held(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    status: Option<HoldStatus>,
    chart: Option<ChartId>,
) -> Result<Vec<HeldBatch>, Refusal> {
    supervisors_only(access)?;
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut visible = Vec::new();
        let mut seen: HashMap<ChartId, bool> = HashMap::new();
        for batch in store.held_batches(chart, status)? {
            let ok = match seen.get(&batch.chart) {
                Some(ok) => *ok,
                None => {
                    let ok = may_review(&store, &access, batch.chart)?;
                    seen.insert(batch.chart, ok);
                    ok
                }
            };
            if ok {
                visible.push(batch);
            }
        }
        store.record_audit(&who, AuditAction::List, chart, Some("holding area"))?;
        Ok::<_, StoreError>(Ok(visible))
    })
    .await;
    settled(result)
}

/// `GET /api/holds[?status=pending|accepted|rejected|all][&chart=ID]`, newest first.
#[utoipa::path(
    get,
    operation_id = "holds_list",
    path = "/api/holds",
    tag = "review",
    summary = "Held changes the person may review, newest first",
    params(("status" = Option<String>, Query, description = "pending (default), accepted, rejected or all"), ("chart" = Option<String>, Query, description = "one chart's"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of held batches", body = Vec<chartsync_core::store::HeldBatch>), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn list(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // A nurse is told the holding area is not hers before anything about her query.
    if let Err(r) = supervisors_only(&access) {
        return r.into_response();
    }
    let paging = match crate::paging::Paging::of(&query) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let status = match query.get("status").map(String::as_str) {
        None | Some("pending") => Some(HoldStatus::Pending),
        Some("accepted") => Some(HoldStatus::Accepted),
        Some("rejected") => Some(HoldStatus::Rejected),
        Some("all") => None,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "status is pending, accepted, rejected or all",
            )
        }
    };
    let chart = match query.get("chart").map(|c| c.parse::<ChartId>()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "not a chart id"),
    };
    let who = actor(&access, &headers);
    match held(app.store.clone(), &access, who, status, chart).await {
        Ok(list) => paging.respond(&uri, list, |list| Json(list).into_response()),
        Err(r) => r.into_response(),
    }
}

/// What held changes would do to the chart.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct Effect {
    /// One line per change to the chart's view: "adds entries/…", "changes patient/phone".
    pub words: Vec<String>,
    /// The same as an RFC 6902 JSON Patch from the chart's view now to the view with them.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub patch: json_patch::Patch,
    /// Set when the changes build on others the record has not got: nothing can be shown
    /// until those are decided.
    pub waits_on_other_changes: bool,
}

#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct HoldDetail {
    #[serde(flatten)]
    pub batch: HeldBatch,
    /// The reason in words.
    pub reason_text: &'static str,
    pub acceptable: bool,
    pub effect: Effect,
}

/// The effect of `bytes` on the chart `before` (empty for a chart the store has not got).
fn effect(before: Option<&Chart>, bytes: &[u8]) -> Result<Effect, String> {
    let view = |c: &Chart| c.view().map_err(|e| e.to_string());
    let old = match before {
        Some(c) => serde_json::to_value(view(c)?).map_err(|e| e.to_string())?,
        None => serde_json::Value::Null,
    };
    let mut after = match before {
        Some(c) => c.fork(),
        None => Chart::from_automerge(
            chartsync_core::chart::load_document(bytes).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?,
    };
    if before.is_some() {
        after.load_incremental(bytes).map_err(|e| e.to_string())?;
    }
    let waits = before.is_some_and(|b| b.heads() == after.heads());
    let new = serde_json::to_value(view(&after)?).map_err(|e| e.to_string())?;
    let patch = json_patch::diff(&old, &new);
    let words = patch
        .0
        .iter()
        .map(|op| {
            let (verb, path) = match op {
                json_patch::PatchOperation::Add(a) => ("adds", a.path.to_string()),
                json_patch::PatchOperation::Remove(r) => ("removes", r.path.to_string()),
                json_patch::PatchOperation::Replace(r) => ("changes", r.path.to_string()),
                json_patch::PatchOperation::Move(m) => ("moves", m.path.to_string()),
                json_patch::PatchOperation::Copy(c) => ("copies", c.path.to_string()),
                json_patch::PatchOperation::Test(t) => ("tests", t.path.to_string()),
            };
            let path = path.trim_start_matches('/');
            format!(
                "{verb} {}",
                if path.is_empty() {
                    "the whole chart"
                } else {
                    path
                }
            )
        })
        .collect();
    Ok(Effect {
        words,
        patch,
        waits_on_other_changes: waits,
    })
}

fn no_such() -> Refusal {
    Refusal(StatusCode::NOT_FOUND, "no such held changes".into())
}

/// Held changes `id` with their bytes, if `access` may review them; one outside its wards is
/// refused as if it did not exist, and the refusal audited.
fn reviewable(
    store: &ChartStore,
    access: &Access,
    who: &Actor,
    id: i64,
) -> Result<Option<(HeldBatch, Vec<u8>)>, StoreError> {
    let Some((batch, bytes)) = store.held_batch(id)? else {
        return Ok(None);
    };
    if !may_review(store, access, batch.chart)? {
        let detail = Some("held changes of a chart outside the token's wards");
        store.record_audit(who, AuditAction::Deny, Some(batch.chart), detail)?;
        return Ok(None);
    }
    Ok(Some((batch, bytes)))
}

/// One hold and what it would do, if `access` may review it; its reading audited.
pub(crate) async fn detail(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: i64,
) -> Result<HoldDetail, Refusal> {
    supervisors_only(access)?;
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        let Some((batch, bytes)) = reviewable(&store, &access, &who, id)? else {
            return Ok(Err(no_such()));
        };
        let chart = if store.contains(batch.chart)? {
            Some(store.chart(batch.chart)?)
        } else {
            None
        };
        let effect = effect(chart.as_ref(), &bytes).unwrap_or_else(|_| {
            // The error's text may quote the chart: the log gets the hold id only.
            tracing::warn!(hold = id, "held changes could not be shown");
            Effect {
                words: vec!["the changes could not be read as a chart".into()],
                patch: json_patch::Patch(Vec::new()),
                waits_on_other_changes: false,
            }
        });
        store.record_audit(
            &who,
            AuditAction::Read,
            Some(batch.chart),
            Some(&format!("held changes {id}")),
        )?;
        Ok::<_, StoreError>(Ok(HoldDetail {
            reason_text: batch.reason.describe(),
            acceptable: batch.reason.acceptable(),
            batch,
            effect,
        }))
    })
    .await;
    settled(result)
}

/// `GET /api/holds/{id}`: one hold, and what it would do.
#[utoipa::path(
    get,
    operation_id = "holds_show",
    path = "/api/holds/{id}",
    tag = "review",
    summary = "Held changes, and what accepting them would do",
    params(("id" = i64, Path, description = "the hold's id")),
    responses((status = 200, description = "the hold", body = HoldDetail), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn show(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let who = actor(&access, &headers);
    match detail(app.store.clone(), &access, who, id).await {
        Ok(detail) => Json(detail).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
pub struct Decision {
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/holds/{id}/accept`
#[utoipa::path(
    post,
    operation_id = "holds_accept",
    path = "/api/holds/{id}/accept",
    tag = "review",
    summary = "Merges held changes into the chart, as their author's; the tablet is told",
    params(("id" = i64, Path, description = "the hold's id")),
    responses((status = 200, description = "the decided batch", body = chartsync_core::store::HeldBatch), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn accept(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    decide(app, access, headers, id, None).await
}

/// `POST /api/holds/{id}/reject` with `{"reason": "…"}`
#[utoipa::path(
    post,
    operation_id = "holds_reject",
    path = "/api/holds/{id}/reject",
    tag = "review",
    summary = "Rejects held changes with a reason; the tablet is told",
    params(("id" = i64, Path, description = "the hold's id")),
    request_body = Decision,
    responses((status = 200, description = "the decided batch", body = chartsync_core::store::HeldBatch), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn reject(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<Decision>>,
) -> Response {
    let reason = body.map(|Json(d)| d.reason).unwrap_or_default();
    decide(app, access, headers, id, Some(reason)).await
}

/// Accepts (`reject: None`) or rejects held changes, and tells connected devices.
async fn decide(
    app: AppState,
    access: Access,
    headers: HeaderMap,
    id: i64,
    reject: Option<String>,
) -> Response {
    let who = actor(&access, &headers);
    match decided(&app, &access, who, id, reject).await {
        Ok(batch) => Json(batch).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Accepts (`reject: None`) or rejects held changes as `who`, and tells the device that sent
/// them if it is connected (otherwise it hears when it next syncs the chart).
pub(crate) async fn decided(
    app: &AppState,
    access: &Access,
    who: Actor,
    id: i64,
    reject: Option<String>,
) -> Result<HeldBatch, Refusal> {
    supervisors_only(access)?;
    let store = app.store.clone();
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if reviewable(&store, &access, &who, id)?.is_none() {
            return Ok(Err(no_such()));
        }
        let done = match &reject {
            None => store.accept_hold(id, &who),
            Some(reason) => store.reject_hold(id, &who, reason),
        };
        match done {
            Ok(batch) => Ok(Ok(batch)),
            Err(StoreError::NoSuchHold(_)) => Ok(Err(no_such())),
            Err(e @ StoreError::ReasonRequired) => {
                Ok(Err(Refusal(StatusCode::BAD_REQUEST, e.to_string())))
            }
            Err(
                e @ (StoreError::AlreadyDecided { .. }
                | StoreError::NotAcceptable { .. }
                | StoreError::DecideFirst { .. }),
            ) => Ok(Err(Refusal(StatusCode::CONFLICT, e.to_string()))),
            Err(e) => Err(e),
        }
    })
    .await;
    let batch = settled(result)?;
    tracing::info!(hold = id, chart = %batch.chart, status = batch.status.token(), reviewer = batch.decided_by.as_deref().unwrap_or(""), "held changes decided");
    let notice = notice_of(&batch);
    // No connection listening is fine: the device hears it when it next syncs the chart.
    let _ = app
        .hub
        .decisions
        .send((batch.chart, batch.device.clone(), notice));
    Ok(batch)
}

/// What the device that sent a decided batch is told.
pub(crate) fn notice_of(batch: &HeldBatch) -> ChartNotice {
    match batch.status {
        HoldStatus::Accepted => ChartNotice::Accepted { hold: batch.id },
        _ => ChartNotice::Rejected {
            hold: batch.id,
            reason: batch.decision_reason.clone().unwrap_or_default(),
        },
    }
}
