//! Release of information on the server: the log of open requests across charts, a request
//! logged without writing automerge, moved along (authorization verified, denied, fulfilled
//! with its disclosure recorded). The REST endpoints and the console share these functions;
//! every write is a change to the chart by the signed-in person, committed with its audit row
//! and sent to the devices that hold the chart.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{
    ChartError, ChartId, DeficiencyKind, DisclosurePurpose, FeeBasis, NewDisclosure, NewRoiRequest,
    RoiDelivery, RoiFee, RoiRequestView, RoiStatus, Role, SensitiveCategory, Staff, Timestamp,
};
use chartsync_core::store::{Actor, AuditAction, ChartStore, DeficiencyFilter, StoreError};
use serde::{Deserialize, Serialize};

use crate::api::actor;
use crate::auth::Access;
use crate::coding::{chart_id, on_wards};
use crate::records::{audit_detail, listing_wards, settled, Refusal};
use crate::AppState;

/// Days a covered entity has to act on a request for access (45 CFR 164.524(b)(2)).
pub(crate) const DUE_WITHIN_DAYS: i64 = 30;

/// Who works release of information: records technicians and supervisors, administrators
/// (the chart's own rule).
pub(crate) fn works_roi(role: Role) -> bool {
    matches!(
        role,
        Role::Technician | Role::RecordsSupervisor | Role::Admin
    )
}

fn refused_role() -> Refusal {
    Refusal(
        StatusCode::FORBIDDEN,
        "release of information is worked by records technicians and supervisors".into(),
    )
}

/// One open request on the log, with its chart. `patient` is for the console only.
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct RoiLine {
    pub chart: ChartId,
    pub mrn: String,
    #[serde(skip)]
    pub patient: String,
    pub ward: String,
    #[serde(flatten)]
    pub request: RoiRequestView,
}

#[derive(utoipa::ToSchema, Serialize)]
struct RoiLog {
    as_of: Timestamp,
    requests: Vec<RoiLine>,
}

/// The open requests (received, or authorization verified) on the person's wards, soonest
/// due first; audited as a listing.
pub(crate) async fn open_requests(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    query: &HashMap<String, String>,
    now: Timestamp,
) -> Result<Vec<RoiLine>, Refusal> {
    if !works_roi(access.role) {
        return Err(refused_role());
    }
    let wards = listing_wards(access, query)?;
    let result = tokio::task::spawn_blocking(move || {
        // Every open request is a `release_due` row of the index: the charts to read.
        let filter = DeficiencyFilter {
            wards: wards.clone(),
            kind: Some(DeficiencyKind::ReleaseDue),
            ..DeficiencyFilter::default()
        };
        let items = store.worklist(&filter, now)?;
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            let request = store
                .read(item.chart, |c| {
                    c.view().map(|v| {
                        v.roi_requests
                            .into_iter()
                            .find(|r| r.id == item.deficiency.record_id)
                    })
                })?
                .map_err(|error| StoreError::Chart {
                    id: item.chart,
                    error,
                })?;
            if let Some(request) = request {
                lines.push(RoiLine {
                    chart: item.chart,
                    mrn: item.mrn,
                    patient: format!("{}, {}", item.family_name, item.given_names),
                    ward: item.ward,
                    request,
                });
            }
        }
        lines.sort_by_key(|a| (a.request.due_at, a.chart));
        let detail = format!(
            "{}: {} open",
            audit_detail("release log", &wards),
            lines.len()
        );
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(Ok(lines))
    })
    .await;
    settled(result)
}

/// The work on a chart's release of information.
pub(crate) enum RoiWork {
    /// Log a request: due [`DUE_WITHIN_DAYS`] after it was received.
    Receive {
        requester: String,
        recipient: String,
        recipient_address: String,
        purpose: DisclosurePurpose,
        scope: String,
    },
    /// Verify the patient's authorization, naming their completed `roi_authorization` form.
    Verify {
        request: String,
        form: String,
    },
    Deny {
        request: String,
        reason: String,
    },
    /// Release the records: the disclosure is recorded and the request fulfilled, in one
    /// commit.
    Fulfil {
        request: String,
        description: String,
    },
    /// Take the request's one 30-day extension, with the reason its notice gives.
    Extend {
        request: String,
        reason: String,
    },
    /// Prepare the release: delivery, the review for sensitive information, the fee.
    Prepare {
        request: String,
        delivery: RoiDelivery,
        sensitive: Vec<SensitiveCategory>,
        fee: RoiFee,
    },
}

/// Does `work` on chart `id` as the signed-in person from `device`; the request's id.
pub(crate) async fn work(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    device: &'static str,
    id: ChartId,
    work: RoiWork,
) -> Result<String, Refusal> {
    if !works_roi(access.role) {
        return Err(refused_role());
    }
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = on_wards(&store, &access, &who, id, "release of information")? {
            return Ok(Err(r));
        }
        let by = Staff::new(access.user.clone(), access.role, device);
        let now = Timestamp::now();
        let done = store.update_as(&who, id, |chart| match work {
            RoiWork::Receive {
                requester,
                recipient,
                recipient_address,
                purpose,
                scope,
            } => chart.receive_roi_request(
                &by,
                now,
                NewRoiRequest {
                    requester,
                    recipient,
                    recipient_address,
                    purpose,
                    scope,
                    due_at: now.plus_seconds(DUE_WITHIN_DAYS * 86_400),
                },
            ),
            RoiWork::Verify { request, form } => chart
                .set_roi_status(
                    &by,
                    now,
                    &request,
                    RoiStatus::AuthorizationVerified,
                    Some(&form),
                    None,
                )
                .map(|()| request),
            RoiWork::Deny { request, reason } => chart
                .set_roi_status(&by, now, &request, RoiStatus::Denied, None, Some(&reason))
                .map(|()| request),
            RoiWork::Fulfil {
                request,
                description,
            } => {
                let view = chart.view()?;
                let r = view
                    .roi_requests
                    .iter()
                    .find(|r| r.id == request)
                    .ok_or_else(|| ChartError::NotFound {
                        what: "release-of-information request",
                        id: request.clone(),
                    })?;
                if r.status != RoiStatus::AuthorizationVerified {
                    return Err(ChartError::InvalidTransition(format!(
                        "a {} request is not released: verify the authorization first",
                        r.status
                    )));
                }
                chart.record_disclosure(
                    &by,
                    now,
                    NewDisclosure {
                        request_id: Some(request.clone()),
                        recipient: r.recipient.clone(),
                        recipient_address: r.recipient_address.clone(),
                        description,
                        purpose: r.purpose,
                    },
                )?;
                chart
                    .set_roi_status(&by, now, &request, RoiStatus::Fulfilled, None, None)
                    .map(|()| request)
            }
            RoiWork::Extend { request, reason } => chart
                .extend_roi_request(&by, now, &request, &reason)
                .map(|_| request),
            RoiWork::Prepare {
                request,
                delivery,
                sensitive,
                fee,
            } => chart
                .prepare_roi_release(&by, now, &request, delivery, &sensitive, fee)
                .map(|()| request),
        });
        Ok::<_, StoreError>(match done {
            Ok(request) => Ok(request),
            Err(StoreError::Chart { error, .. }) => Err(crate::coding::refused(error)),
            Err(e) => return Err(e),
        })
    })
    .await;
    settled(result)
}

/// `GET /api/roi-requests[?ward=W]`: the open release-of-information requests, soonest due
/// first; `{as_of, requests: [{chart, mrn, ward, id, requester, recipient, ..., due_at,
/// status}]}`.
#[utoipa::path(
    get,
    operation_id = "roi_log",
    path = "/api/roi-requests",
    tag = "release of information",
    summary = "The open release-of-information requests, soonest due first",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of the log", body = RoiLog), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn log(
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
    let now = Timestamp::now();
    match open_requests(app.store.clone(), &access, who, &query, now).await {
        Ok(requests) => paging.respond(&uri, requests, |requests| {
            Json(RoiLog {
                as_of: now,
                requests,
            })
            .into_response()
        }),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receive {
    requester: String,
    recipient: String,
    recipient_address: String,
    purpose: String,
    scope: String,
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    /// `authorization_verified`, `denied` or `fulfilled`.
    status: String,
    #[serde(default)]
    authorization_form: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// For `fulfilled`: what was released.
    #[serde(default)]
    description: Option<String>,
}

pub(crate) fn purpose(token: &str) -> Result<DisclosurePurpose, Refusal> {
    DisclosurePurpose::from_token(token)
        .map_err(|e| Refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// What a status move asks for, as [`RoiWork`]; a missing field is refused by name.
pub(crate) fn moved(
    request: String,
    status: &str,
    form: Option<String>,
    reason: Option<String>,
    description: Option<String>,
) -> Result<RoiWork, Refusal> {
    let given = |v: Option<String>, field: &str| {
        v.map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{field} is required"),
                )
            })
    };
    match RoiStatus::from_token(status) {
        Ok(RoiStatus::AuthorizationVerified) => Ok(RoiWork::Verify {
            request,
            form: given(form, "authorization_form")?,
        }),
        Ok(RoiStatus::Denied) => Ok(RoiWork::Deny {
            request,
            reason: given(reason, "reason")?,
        }),
        Ok(RoiStatus::Fulfilled) => Ok(RoiWork::Fulfil {
            request,
            description: given(description, "description")?,
        }),
        Ok(RoiStatus::Received) | Err(_) => Err(Refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "status is authorization_verified, denied or fulfilled".into(),
        )),
    }
}

/// `POST /api/charts/{id}/roi-requests` `{requester, recipient, recipient_address, purpose,
/// scope}`: logs a request received now, due in 30 days; 201 `{id}`.
#[utoipa::path(
    post,
    operation_id = "roi_receive",
    path = "/api/charts/{id}/roi-requests",
    tag = "release of information",
    summary = "Logs a request received now, due in 30 days",
    params(("id" = String, Path, description = "the chart's id")),
    request_body = Receive,
    responses((status = 201, description = "the request's id", body = crate::openapi::Created), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn receive(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Receive>,
) -> Response {
    let (id, purpose) = match (chart_id(&id), purpose(&body.purpose)) {
        (Ok(id), Ok(p)) => (id, p),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let w = RoiWork::Receive {
        requester: body.requester,
        recipient: body.recipient,
        recipient_address: body.recipient_address,
        purpose,
        scope: body.scope,
    };
    let who = actor(&access, &headers);
    match work(app.store.clone(), &access, who, "api", id, w).await {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `POST /api/charts/{id}/roi-requests/{request}` `{status, authorization_form?, reason?,
/// description?}`: verifies the authorization (naming the patient's completed
/// `roi_authorization` form), denies with a reason, or releases the records (`fulfilled`,
/// with what was released: the disclosure is recorded in the same commit).
#[utoipa::path(
    post,
    operation_id = "roi_move_request",
    path = "/api/charts/{id}/roi-requests/{request}",
    tag = "release of information",
    summary = "Verifies the authorization, denies, or releases with the disclosure recorded",
    params(("id" = String, Path, description = "the chart's id"), ("request" = String, Path, description = "the request's id")),
    request_body = Move,
    responses((status = 204, description = "moved"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn move_request(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, request)): Path<(String, String)>,
    Json(body): Json<Move>,
) -> Response {
    let w = moved(
        request,
        &body.status,
        body.authorization_form,
        body.reason,
        body.description,
    );
    work_over_rest(&app, &access, &headers, &id, w).await
}

/// Does `w` on chart `id` for a REST caller: 204, or why not.
async fn work_over_rest(
    app: &AppState,
    access: &Access,
    headers: &HeaderMap,
    id: &str,
    w: Result<RoiWork, Refusal>,
) -> Response {
    let (id, w) = match (chart_id(id), w) {
        (Ok(id), Ok(w)) => (id, w),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let who = actor(access, headers);
    match work(app.store.clone(), access, who, "api", id, w).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    /// Why the request needs more time: the notice to the requester gives it.
    reason: String,
}

/// `POST /api/charts/{id}/roi-requests/{request}/extension` `{reason}`: the request's one
/// 30-day extension, taken within its first 30 days (45 CFR 164.524(b)(2)(ii)); 204.
#[utoipa::path(
    post,
    operation_id = "roi_extend",
    path = "/api/charts/{id}/roi-requests/{request}/extension",
    tag = "release of information",
    summary = "The request's one 30-day extension, within its first 30 days",
    params(("id" = String, Path, description = "the chart's id"), ("request" = String, Path, description = "the request's id")),
    request_body = Extend,
    responses((status = 204, description = "extended"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn extend(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, request)): Path<(String, String)>,
    Json(body): Json<Extend>,
) -> Response {
    let w = RoiWork::Extend {
        request,
        reason: body.reason.trim().to_string(),
    };
    work_over_rest(&app, &access, &headers, &id, Ok(w)).await
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    basis: String,
    #[serde(default)]
    labor_cents: u64,
    #[serde(default)]
    supplies_cents: u64,
    #[serde(default)]
    postage_cents: u64,
    #[serde(default)]
    summary_cents: u64,
    total_cents: u64,
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    delivery: String,
    /// Sensitive information found in what would be released; empty when none.
    sensitive: Vec<String>,
    fee: Fee,
}

fn unprocessable(e: ChartError) -> Refusal {
    Refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

/// A release's preparation from its tokens, each refused by name.
pub(crate) fn preparation(
    request: String,
    delivery: &str,
    sensitive: &[String],
    basis: &str,
    parts: [u64; 4],
    total_cents: u64,
) -> Result<RoiWork, Refusal> {
    let [labor_cents, supplies_cents, postage_cents, summary_cents] = parts;
    Ok(RoiWork::Prepare {
        request,
        delivery: RoiDelivery::from_token(delivery).map_err(unprocessable)?,
        sensitive: sensitive
            .iter()
            .map(|t| SensitiveCategory::from_token(t).map_err(unprocessable))
            .collect::<Result<_, _>>()?,
        fee: RoiFee {
            basis: FeeBasis::from_token(basis).map_err(unprocessable)?,
            labor_cents,
            supplies_cents,
            postage_cents,
            summary_cents,
            total_cents,
        },
    })
}

/// `POST /api/charts/{id}/roi-requests/{request}/preparation` `{delivery, sensitive: [..],
/// fee: {basis, labor_cents?, supplies_cents?, postage_cents?, summary_cents?, total_cents}}`:
/// how the records go out, what sensitive information the release carries (checked against
/// the authorization when it is released), and the fee (a cost-based one is the sum of its
/// parts; a flat one is for an electronic copy, at most $6.50); 204.
#[utoipa::path(
    post,
    operation_id = "roi_prepare",
    path = "/api/charts/{id}/roi-requests/{request}/preparation",
    tag = "release of information",
    summary = "The release's delivery, sensitive-information review and fee",
    params(("id" = String, Path, description = "the chart's id"), ("request" = String, Path, description = "the request's id")),
    request_body = Prepare,
    responses((status = 204, description = "prepared"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn prepare(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, request)): Path<(String, String)>,
    Json(body): Json<Prepare>,
) -> Response {
    let f = &body.fee;
    let w = preparation(
        request,
        &body.delivery,
        &body.sensitive,
        &f.basis,
        [
            f.labor_cents,
            f.supplies_cents,
            f.postage_cents,
            f.summary_cents,
        ],
        f.total_cents,
    );
    work_over_rest(&app, &access, &headers, &id, w).await
}
