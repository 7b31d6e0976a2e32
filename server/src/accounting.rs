//! Requests for an accounting of disclosures (45 CFR 164.528) over REST and for the console:
//! logged with their 60-day deadline, extended once, answered with the accounting kept as it
//! was given. Like the accounting itself, for records supervisors and admins with every ward:
//! an accounting that left out a ward's charts would be wrong. Every read and write is
//! audited on the patient's charts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{check_identifier, Timestamp};
use chartsync_core::store::{
    Accounting, AccountingRequest, Actor, AuditAction, ChartStore, NewAccountingRequest, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::api::actor;
use crate::auth::Access;
use crate::records::{run_allowed, supervisors_of_every_ward, Refusal};
use crate::AppState;

/// Who answers requests for an accounting: records supervisors and admins of every ward (an
/// accounting that left out a ward's charts would be wrong).
pub(crate) fn gives_accountings(access: &Access) -> Result<(), Refusal> {
    supervisors_of_every_ward(access, "accountings of disclosures")
}

/// A store refusal as the caller is told it; anything else is the server's own failure.
fn refusal(e: StoreError) -> Result<Refusal, StoreError> {
    let status = match &e {
        StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::NoSuchPatient(_) | StoreError::NoSuchAccountingRequest(_) => {
            StatusCode::NOT_FOUND
        }
        StoreError::OutOfTurn(_) => StatusCode::CONFLICT,
        _ => return Err(e),
    };
    Ok(Refusal(status, e.to_string()))
}

/// Runs `f` off the async threads for a person who may work accountings (a refusal is
/// audited), sorting its store errors into refusals and failures.
async fn run<T: Send + 'static>(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    f: impl FnOnce(&ChartStore, &Actor) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let allowed = gives_accountings(access);
    run_allowed(store, allowed, who, "accounting requests", refusal, f).await
}

/// What is done to a request.
pub(crate) enum AccountingWork {
    Log(NewAccountingRequest),
    Extend { id: String, reason: String },
    Provide { id: String },
}

/// A request and, once answered, the accounting given.
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct Answered {
    pub request: AccountingRequest,
    pub accounting: Option<Accounting>,
    /// "Given Family", from the patient's newest chart; for the console's letters only.
    #[serde(skip)]
    pub patient: String,
}

/// Does `work` as the signed-in person, audited on the patient's charts.
pub(crate) async fn work(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    work: AccountingWork,
) -> Result<Answered, Refusal> {
    let now = Timestamp::now();
    run(store, access, who, move |store, who| match work {
        AccountingWork::Log(new) => {
            check_identifier("mrn", &new.mrn).map_err(|e| StoreError::Invalid(e.to_string()))?;
            Ok(Answered {
                request: store.log_accounting_request(who, &new, now)?,
                accounting: None,
                patient: String::new(),
            })
        }
        AccountingWork::Extend { id, reason } => Ok(Answered {
            request: store.extend_accounting_request(who, &id, &reason, now)?,
            accounting: None,
            patient: String::new(),
        }),
        AccountingWork::Provide { id } => {
            let (request, accounting) = store.provide_accounting(who, &id, now)?;
            Ok(Answered {
                request,
                accounting: Some(accounting),
                patient: String::new(),
            })
        }
    })
    .await
}

/// The open requests, soonest due first; or every request of the patient `mrn`, newest first.
/// Audited as a listing, or on the patient's charts.
pub(crate) async fn requests(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    mrn: Option<String>,
) -> Result<Vec<AccountingRequest>, Refusal> {
    run(store, access, who, move |store, who| {
        let Some(mrn) = mrn else {
            let open = store.accounting_requests(None)?;
            let detail = format!("accounting requests: {} open", open.len());
            store.record_audit(who, AuditAction::List, None, Some(&detail))?;
            return Ok(open);
        };
        check_identifier("mrn", &mrn).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let charts = store.charts_of_patient(&mrn)?;
        if charts.is_empty() {
            return Err(StoreError::NoSuchPatient(mrn));
        }
        for chart in &charts {
            store.record_audit(
                who,
                AuditAction::Read,
                Some(chart.id),
                Some("the patient's accounting requests"),
            )?;
        }
        store.accounting_requests(Some(&mrn))
    })
    .await
}

/// One request, with the accounting given for it; its reading audited on the patient's
/// charts.
pub(crate) async fn one(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: String,
) -> Result<Answered, Refusal> {
    run(store, access, who, move |store, who| {
        let (request, accounting) = store
            .accounting_request(&id)?
            .ok_or(StoreError::NoSuchAccountingRequest(id.clone()))?;
        let detail = format!("accounting request {id}");
        let charts = store.charts_of_patient(&request.mrn)?;
        for chart in &charts {
            store.record_audit(who, AuditAction::Read, Some(chart.id), Some(&detail))?;
        }
        // Newest admission first.
        let patient = charts
            .first()
            .map(|c| format!("{} {}", c.given_names, c.family_name))
            .unwrap_or_default();
        Ok(Answered {
            request,
            accounting,
            patient,
        })
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
struct Listed {
    as_of: Timestamp,
    requests: Vec<AccountingRequest>,
}

/// `GET /api/accounting-requests[?mrn=M]`: the open requests for an accounting of
/// disclosures, soonest due first; with `mrn`, every request of that patient, newest first.
#[utoipa::path(
    get,
    operation_id = "accounting_list",
    path = "/api/accounting-requests",
    tag = "release of information",
    summary = "Requests for an accounting: the open ones, soonest due, or a patient's",
    params(("mrn" = Option<String>, Query, description = "one patient's requests, newest first"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of requests", body = Listed), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
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
    let who = actor(&access, &headers);
    let mrn = query.get("mrn").cloned();
    match requests(app.store.clone(), &access, who, mrn).await {
        Ok(requests) => paging.respond(&uri, requests, |requests| {
            Json(Listed {
                as_of: Timestamp::now(),
                requests,
            })
            .into_response()
        }),
        Err(r) => r.into_response(),
    }
}

/// `POST /api/accounting-requests` `{mrn, requester, address, since?, fee_cents?}`: logs a
/// request received now, due in 60 days; 201 with the request. A fee is refused on the
/// first accounting in twelve months (45 CFR 164.528(c)(2)).
#[utoipa::path(
    post,
    operation_id = "accounting_log",
    path = "/api/accounting-requests",
    tag = "release of information",
    summary = "Logs a request for an accounting, due in 60 days",
    request_body = chartsync_core::store::NewAccountingRequest,
    responses((status = 201, description = "the request", body = chartsync_core::store::AccountingRequest), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn log(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(body): Json<NewAccountingRequest>,
) -> Response {
    let who = actor(&access, &headers);
    match work(app.store.clone(), &access, who, AccountingWork::Log(body)).await {
        Ok(done) => (StatusCode::CREATED, Json(done.request)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/accounting-requests/{id}`: the request, and the accounting given for it.
#[utoipa::path(
    get,
    operation_id = "accounting_show",
    path = "/api/accounting-requests/{id}",
    tag = "release of information",
    summary = "A request and the accounting given for it",
    params(("id" = String, Path, description = "the request's id")),
    responses((status = 200, description = "the request", body = Answered), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn show(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = actor(&access, &headers);
    match one(app.store.clone(), &access, who, id).await {
        Ok(done) => Json(done).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    reason: String,
}

/// `POST /api/accounting-requests/{id}/extension` `{reason}`: the one 30-day extension,
/// within the 60 days (45 CFR 164.528(c)(1)(ii)); the request as it now stands.
#[utoipa::path(
    post,
    operation_id = "accounting_extend",
    path = "/api/accounting-requests/{id}/extension",
    tag = "release of information",
    summary = "The one 30-day extension, within the 60 days",
    params(("id" = String, Path, description = "the request's id")),
    request_body = Extend,
    responses((status = 200, description = "the request", body = chartsync_core::store::AccountingRequest), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn extend(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Extend>,
) -> Response {
    let who = actor(&access, &headers);
    let w = AccountingWork::Extend {
        id,
        reason: body.reason,
    };
    match work(app.store.clone(), &access, who, w).await {
        Ok(done) => Json(done.request).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `POST /api/accounting-requests/{id}/provide`: answers the request with the patient's
/// accounting as of now, kept with it; `{request, accounting}`.
#[utoipa::path(
    post,
    operation_id = "accounting_provide",
    path = "/api/accounting-requests/{id}/provide",
    tag = "release of information",
    summary = "Answers the request with the accounting as of now, kept as given",
    params(("id" = String, Path, description = "the request's id")),
    responses((status = 200, description = "the request and the accounting", body = Answered), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn provide(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = actor(&access, &headers);
    match work(
        app.store.clone(),
        &access,
        who,
        AccountingWork::Provide { id },
    )
    .await
    {
        Ok(done) => Json(done).into_response(),
        Err(r) => r.into_response(),
    }
}
