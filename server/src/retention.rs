//! Retention, legal holds and destruction over REST (docs/records-office.md, "Retention,
//! legal holds and destruction"): for records supervisors and admins with every ward. The
//! store does the work and the auditing (`core/src/store/retention.rs`); this is who may, and
//! what a refusal says.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::Timestamp;
use chartsync_core::store::{
    Actor, ChartStore, DestructionBatch, HoldScope, LegalHold, NewRetentionRule, RetentionItem,
    RetentionRule, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::api::actor;
use crate::auth::Access;
use crate::records::{run_allowed, supervisors_of_every_ward, Refusal};
use crate::AppState;

/// Who keeps and destroys records: records supervisors and admins, over every ward.
fn keeps_records(access: &Access) -> Result<(), Refusal> {
    supervisors_of_every_ward(access, "retention, legal holds and destruction")
}

/// A store refusal as the caller is told it; anything else is the server's own failure.
fn refusal(e: StoreError) -> Result<Refusal, StoreError> {
    let status = match &e {
        StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::OutOfTurn(_) => StatusCode::CONFLICT,
        _ => return Err(e),
    };
    Ok(Refusal(status, e.to_string()))
}

/// Runs `f` off the async threads for a person who may (a refusal is audited).
async fn run<T: Send + 'static>(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    f: impl FnOnce(&ChartStore, &Actor) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    run_allowed(store, keeps_records(access), who, "retention", refusal, f).await
}

fn answer<T: Serialize>(status: StatusCode, r: Result<T, Refusal>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/retention/rules`
#[utoipa::path(
    get,
    operation_id = "retention_rules",
    path = "/api/retention/rules",
    tag = "retention",
    summary = "The retention rule of each record class, and the default",
    responses((status = 200, description = "the rules", body = Vec<RetentionRule>), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn rules(State(app): State<AppState>, access: Access, headers: HeaderMap) -> Response {
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, |s, _| s.retention_rules()).await,
    )
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    years_after_discharge: u32,
    until_age: Option<u32>,
    /// The rule's source: a state's statute, the hospital's policy.
    citation: String,
}

/// `PUT /api/retention/rules/{class}` `{years_after_discharge, until_age?, citation}`
#[utoipa::path(
    put,
    operation_id = "retention_set_rule",
    path = "/api/retention/rules/{class}",
    tag = "retention",
    summary = "Sets a record class's retention rule (never under 5 years: 42 CFR 482.24(b))",
    params(("class" = String, Path, description = "an encounter class (inpatient, observation, emergency, day_case) or default")),
    request_body = RuleBody,
    responses((status = 200, description = "the rule", body = RetentionRule), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 422, description = "under the floor, no such class, or no citation", body = crate::openapi::ApiError))
)]
pub async fn set_rule(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(class): Path<String>,
    Json(body): Json<RuleBody>,
) -> Response {
    let who = actor(&access, &headers);
    let rule = NewRetentionRule {
        class,
        years_after_discharge: body.years_after_discharge,
        until_age: body.until_age,
        citation: body.citation,
    };
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, move |s, by| {
            s.set_retention_rule(by, &rule)
        })
        .await,
    )
}

/// `GET /api/retention[?due=true]`: discharged charts, when each may go and what holds it.
#[utoipa::path(
    get,
    operation_id = "retention_list",
    path = "/api/retention",
    tag = "retention",
    summary = "Discharged charts with the day each may be destroyed, and the holds that keep it",
    params(("due" = Option<bool>, Query, description = "only those past retention today and under no hold"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of charts", body = Vec<RetentionItem>), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn list(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let paging = match crate::paging::Paging::of(&query) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let due = query.get("due").is_some_and(|v| v == "true");
    let who = actor(&access, &headers);
    let items = run(app.store.clone(), &access, who, move |s, _| {
        let today = Timestamp::now().date();
        Ok(s.retention()?
            .into_iter()
            .filter(|i| !due || i.destroyable(today))
            .collect::<Vec<_>>())
    })
    .await;
    match items {
        Ok(items) => paging.respond(&uri, items, |items| Json(items).into_response()),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/legal-holds[?all=true]`: the active legal holds (or all), newest first.
#[utoipa::path(
    get,
    operation_id = "legal_holds_list",
    path = "/api/legal-holds",
    tag = "retention",
    summary = "Legal holds: the active ones, or all",
    params(("all" = Option<bool>, Query, description = "lifted ones too")),
    responses((status = 200, description = "the holds", body = Vec<LegalHold>), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn holds(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all = query.get("all").is_some_and(|v| v == "true");
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, move |s, _| {
            s.legal_holds(!all)
        })
        .await,
    )
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// Every chart of this patient (MRN), or
    mrn: Option<String>,
    /// this one chart.
    chart: Option<String>,
    reason: String,
}

/// `POST /api/legal-holds` `{mrn | chart, reason}`
#[utoipa::path(
    post,
    operation_id = "legal_holds_place",
    path = "/api/legal-holds",
    tag = "retention",
    summary = "Places a legal hold on a patient's charts or one chart, with a reason",
    request_body = NewHold,
    responses((status = 201, description = "the hold", body = LegalHold), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such chart", body = crate::openapi::ApiError), (status = 422, description = "no reason, or not one of mrn and chart", body = crate::openapi::ApiError))
)]
pub async fn place(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(body): Json<NewHold>,
) -> Response {
    let scope = match (body.mrn, body.chart) {
        (Some(m), None) => HoldScope::Patient(m),
        (None, Some(c)) => match c.parse() {
            Ok(c) => HoldScope::Chart(c),
            Err(_) => {
                return Refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "chart: not a chart id".into(),
                )
                .into_response()
            }
        },
        _ => {
            return Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "a legal hold names one of mrn and chart".into(),
            )
            .into_response()
        }
    };
    let who = actor(&access, &headers);
    answer(
        StatusCode::CREATED,
        run(app.store.clone(), &access, who, move |s, by| {
            s.place_legal_hold(by, &scope, &body.reason)
        })
        .await,
    )
}

#[derive(utoipa::ToSchema, Deserialize, Default)]
pub struct Reason {
    #[serde(default)]
    reason: String,
}

/// `POST /api/legal-holds/{id}/lift` `{reason}`
#[utoipa::path(
    post,
    operation_id = "legal_holds_lift",
    path = "/api/legal-holds/{id}/lift",
    tag = "retention",
    summary = "Lifts a legal hold, with a reason",
    params(("id" = i64, Path, description = "the hold's id")),
    request_body = Reason,
    responses((status = 200, description = "the hold", body = LegalHold), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 409, description = "lifted already", body = crate::openapi::ApiError), (status = 422, description = "no reason, or no such hold", body = crate::openapi::ApiError))
)]
pub async fn lift(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<Reason>>,
) -> Response {
    let reason = body.map(|Json(r)| r.reason).unwrap_or_default();
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, move |s, by| {
            s.lift_legal_hold(by, id, &reason)
        })
        .await,
    )
}

/// `GET /api/destruction`: the batches, newest first.
#[utoipa::path(
    get,
    operation_id = "destruction_list",
    path = "/api/destruction",
    tag = "retention",
    summary = "Destruction batches, newest first (without their charts)",
    responses((status = 200, description = "the batches", body = Vec<DestructionBatch>), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn batches(State(app): State<AppState>, access: Access, headers: HeaderMap) -> Response {
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, |s, _| {
            s.destruction_batches()
        })
        .await,
    )
}

#[derive(utoipa::ToSchema, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Judge retention as of this time (default now; never later).
    #[schema(value_type = Option<String>)]
    as_of: Option<Timestamp>,
}

/// `POST /api/destruction` `{as_of?}`: proposes a batch.
#[utoipa::path(
    post,
    operation_id = "destruction_propose",
    path = "/api/destruction",
    tag = "retention",
    summary = "Proposes destroying the charts past retention and under no hold",
    request_body = Proposal,
    responses((status = 201, description = "the batch, with its charts", body = DestructionBatch), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 422, description = "a later day than today", body = crate::openapi::ApiError))
)]
pub async fn propose(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Option<Json<Proposal>>,
) -> Response {
    let as_of = body
        .and_then(|Json(p)| p.as_of)
        .unwrap_or_else(Timestamp::now);
    let who = actor(&access, &headers);
    answer(
        StatusCode::CREATED,
        run(app.store.clone(), &access, who, move |s, by| {
            s.propose_destruction(by, as_of)
        })
        .await,
    )
}

/// `GET /api/destruction/{id}`: a batch and its charts; once destroyed, the certificate.
#[utoipa::path(
    get,
    operation_id = "destruction_show",
    path = "/api/destruction/{id}",
    tag = "retention",
    summary = "A destruction batch with its charts: once destroyed, the certificate of destruction",
    params(("id" = i64, Path, description = "the batch's id")),
    responses((status = 200, description = "the batch", body = DestructionBatch), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such batch", body = crate::openapi::ApiError))
)]
pub async fn show(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let who = actor(&access, &headers);
    let found = run(app.store.clone(), &access, who, move |s, _| {
        s.destruction_batch(id)
    })
    .await;
    match found {
        Ok(Some(b)) => Json(b).into_response(),
        Ok(None) => {
            Refusal(StatusCode::NOT_FOUND, format!("no destruction batch {id}")).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// `POST /api/destruction/{id}/approve`: destroys the batch's charts still due.
#[utoipa::path(
    post,
    operation_id = "destruction_approve",
    path = "/api/destruction/{id}/approve",
    tag = "retention",
    summary = "Approves a batch: each chart still past retention and under no hold is destroyed",
    params(("id" = i64, Path, description = "the batch's id")),
    responses((status = 200, description = "the certificate of destruction", body = DestructionBatch), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 409, description = "decided already", body = crate::openapi::ApiError), (status = 422, description = "no such batch", body = crate::openapi::ApiError))
)]
pub async fn approve(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, move |s, by| {
            s.approve_destruction(by, id, Timestamp::now())
        })
        .await,
    )
}

/// `POST /api/destruction/{id}/cancel`: nothing is destroyed.
#[utoipa::path(
    post,
    operation_id = "destruction_cancel",
    path = "/api/destruction/{id}/cancel",
    tag = "retention",
    summary = "Cancels a proposed batch: nothing is destroyed",
    params(("id" = i64, Path, description = "the batch's id")),
    responses((status = 200, description = "the batch", body = DestructionBatch), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 409, description = "decided already", body = crate::openapi::ApiError), (status = 422, description = "no such batch", body = crate::openapi::ApiError))
)]
pub async fn cancel(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let who = actor(&access, &headers);
    answer(
        StatusCode::OK,
        run(app.store.clone(), &access, who, move |s, by| {
            s.cancel_destruction(by, id)
        })
        .await,
    )
}
