//! Break-glass access over REST (docs/adr/0008-shared-tablets.md): a person opens a chart
//! outside their wards in an emergency, for the time the server allows (4 hours by default);
//! the grant is audited as a start and an end, and waits in the privacy review queue.
//!
//! - `POST /api/break-glass`: under a person's bearer token;
//! - `POST /api/devices/{id}/break-glass`: from a tablet, signed by the signed-in person's key;
//! - `POST /api/break-glass/{id}/end`: the emergency is over;
//! - `GET /api/break-glass[?status=unreviewed|reviewed|all]` and
//!   `POST /api/break-glass/{id}/review`: the review queue (records supervisors and admins).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chartsync_core::chart::{ChartId, Role, Timestamp};
use chartsync_core::store::{
    Actor, AuditAction, BreakGlass, BreakGlassReason, ChartStore, CredentialStatus, NewBreakGlass,
    ReviewFilter, StoreError,
};
use chartsync_core::tablet::BreakGlassRequest;
use chartsync_core::trust::{self, DeviceId, Serial, SignedCertificate};
use serde::Deserialize;

use crate::api::{actor, error, internal};
use crate::auth::Access;
use crate::records::{settled, Refusal};
use crate::AppState;

/// How far ahead of the server's clock a tablet's signing time may be, and how old a request
/// may be when it arrives (a request is for access now, not a record of the past).
const SKEW_SECS: i64 = 300;

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NoSuchGrant(_) | StoreError::NotFound(_) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        StoreError::ReasonRequired | StoreError::Invalid(_) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
        }
        StoreError::AlreadyDecided { .. } => error(StatusCode::CONFLICT, &e.to_string()),
        e => internal(e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(internal(e)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    chart: String,
    reason: String,
    text: String,
}

/// Files a grant for `by` on `chart` if the chart exists and is not already theirs to see.
fn grant(
    store: &ChartStore,
    by: &Actor,
    chart: ChartId,
    reason: &str,
    text: &str,
    covers: impl Fn(&str) -> bool,
    device: Option<&str>,
    signed: Option<(&[u8], &[u8])>,
    lasts: std::time::Duration,
) -> Result<Response, Response> {
    let reason = BreakGlassReason::from_code(reason).ok_or_else(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the reason is ETREAT (emergency treatment) or BTG (break the glass)",
        )
    })?;
    let summary = store
        .summary(chart)
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such chart"))?;
    if covers(&summary.ward) {
        return Err(error(
            StatusCode::CONFLICT,
            "the chart is on a ward you have access to: no break-glass needed",
        ));
    }
    let now = Timestamp::now();
    let ends_at = Timestamp::from_unix_millis(now.unix_millis() + lasts.as_millis() as i64)
        .map_err(internal)?;
    let (granted, new) = store
        .grant_break_glass(&NewBreakGlass {
            by,
            chart,
            reason,
            text,
            starts_at: now,
            ends_at,
            granted: "online",
            device,
            signed,
            filed: true,
        })
        .map_err(store_error)?;
    if !new {
        // The same signed request again (a retry): the grant it made.
        return Ok(Json(granted).into_response());
    }
    tracing::warn!(user = %by.user, chart = %chart, grant = granted.id, reason = %reason.code(), "break-glass access granted");
    Ok((StatusCode::CREATED, Json(granted)).into_response())
}

/// `POST /api/break-glass`: under a person's token.
#[utoipa::path(
    post,
    operation_id = "break_glass_ask",
    path = "/api/break-glass",
    tag = "review",
    summary = "Opens a chart outside the person's wards in an emergency (ETREAT or BTG), for the time the server allows",
    request_body = Ask,
    responses(
        (status = 201, description = "the grant", body = chartsync_core::store::BreakGlass),
        (status = 200, description = "the same signed request again: the grant it made", body = chartsync_core::store::BreakGlass),
        (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError),
        (status = 404, description = "no such chart", body = crate::openapi::ApiError),
        (status = 409, description = "the chart is on the person's wards", body = crate::openapi::ApiError),
        (status = 422, description = "the reason is not ETREAT or BTG", body = crate::openapi::ApiError)
    )
)]
pub async fn ask(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(req): Json<Ask>,
) -> Response {
    if access.device.is_some() {
        return error(
            StatusCode::FORBIDDEN,
            "a tablet asks for a person, signed: /api/devices/{id}/break-glass",
        );
    }
    let Ok(chart) = req.chart.parse::<ChartId>() else {
        return error(StatusCode::BAD_REQUEST, "not a chart id");
    };
    let by = actor(&access, &headers);
    let store = app.store.clone();
    let lasts = std::time::Duration::from_secs(app.trust.policy.break_glass_secs);
    blocking(move || {
        grant(
            &store,
            &by,
            chart,
            &req.reason,
            &req.text,
            |w| access.may_see_ward(w),
            None,
            None,
            lasts,
        )
    })
    .await
    .unwrap_or_else(|r| r)
}

/// `POST /api/devices/{id}/break-glass`: a signed-in person on a tablet, signed with their
/// key; the tablet's connection may then read the chart, and that person write it.
pub async fn ask_from_tablet(
    State(app): State<AppState>,
    Path(device): Path<String>,
    Json(req): Json<BreakGlassRequest>,
) -> Response {
    let Ok(device) = DeviceId::parse(&device) else {
        return error(StatusCode::NOT_FOUND, "no such device");
    };
    let (Ok(chart), Ok(serial), Ok(signature)) = (
        req.chart.parse::<ChartId>(),
        Serial::parse(&req.serial),
        B64.decode(&req.signature),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "chart, serial and signature must be well formed",
        );
    };
    let store = app.store.clone();
    let issuers = app.trust.issuer_keys();
    let lasts = std::time::Duration::from_secs(app.trust.policy.break_glass_secs);
    blocking(move || {
        let refused = || {
            error(
                StatusCode::FORBIDDEN,
                "the request's certificate or signature is not valid for this tablet",
            )
        };
        let bytes = store
            .certificate(serial)
            .map_err(store_error)?
            .ok_or_else(refused)?;
        let cert = SignedCertificate::from_bytes(&bytes, &issuers).map_err(|_| refused())?;
        let c = cert.certificate();
        let now = Timestamp::now().unix();
        let fresh = req.signed_at <= now + SKEW_SECS && req.signed_at >= now - SKEW_SECS;
        let active = store
            .device(device)
            .map_err(store_error)?
            .is_some_and(|d| d.status == CredentialStatus::Active);
        let revoked = !store
            .revocations_of(serial, &c.user, device)
            .map_err(store_error)?
            .is_empty();
        if c.device != device || !c.valid_at(req.signed_at) || !fresh || !active || revoked {
            return Err(refused());
        }
        trust::verify_break_glass(c, &chart, &req.reason, &req.text, req.signed_at, &signature)
            .map_err(|_| refused())?;
        let by = Actor {
            user: c.user.clone(),
            role: c.role.token().to_string(),
            device: device.to_string(),
        };
        let wards = c.wards.clone();
        grant(
            &store,
            &by,
            chart,
            &req.reason,
            &req.text,
            |w| wards.iter().any(|x| x == w || x == crate::auth::ALL_WARDS),
            Some(&device.to_string()),
            Some((&serial.0[..], &signature[..])),
            lasts,
        )
    })
    .await
    .unwrap_or_else(|r| r)
}

/// `POST /api/break-glass/{id}/end`: by the person who holds it, or an admin.
pub async fn end(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let by = actor(&access, &headers);
    let store = app.store.clone();
    blocking(move || {
        let grant = store
            .break_glass(id)
            .map_err(store_error)?
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such grant"))?;
        if grant.user != access.user && access.role != Role::Admin {
            return Err(error(StatusCode::FORBIDDEN, "not your grant"));
        }
        let ended = store.end_break_glass(id, &by).map_err(store_error)?;
        Ok(Json(ended).into_response())
    })
    .await
    .unwrap_or_else(|r| r)
}

fn reviewers_only(access: &Access) -> Result<(), Refusal> {
    if matches!(access.role, Role::RecordsSupervisor | Role::Admin) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::FORBIDDEN,
            "the break-glass review queue is for records supervisors and admins".into(),
        ))
    }
}

/// A store refusal as the reviewer is told it; anything else is the server's own failure.
fn refusal(e: StoreError) -> Result<Refusal, StoreError> {
    let status = match &e {
        StoreError::NoSuchGrant(_) | StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::ReasonRequired | StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::AlreadyDecided { .. } => StatusCode::CONFLICT,
        _ => return Err(e),
    };
    Ok(Refusal(status, e.to_string()))
}

/// The grants `filter` picks, oldest first, for a reviewer; audited as a listing.
pub(crate) async fn review_queue(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    filter: ReviewFilter,
) -> Result<Vec<BreakGlass>, Refusal> {
    reviewers_only(access)?;
    let result = tokio::task::spawn_blocking(move || {
        let grants = store.break_glass_queue(filter)?;
        store.record_audit(
            &who,
            AuditAction::List,
            None,
            Some("break-glass review queue"),
        )?;
        Ok(Ok(grants))
    })
    .await;
    settled(result)
}

/// Marks grant `id` reviewed by `who`, with a note.
pub(crate) async fn reviewed(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: i64,
    note: String,
) -> Result<BreakGlass, Refusal> {
    reviewers_only(access)?;
    let result =
        tokio::task::spawn_blocking(move || match store.review_break_glass(id, &who, &note) {
            Ok(grant) => Ok(Ok(grant)),
            Err(e) => refusal(e).map(Err),
        })
        .await;
    settled(result)
}

#[derive(Deserialize)]
pub struct QueueQuery {
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /api/break-glass[?status=unreviewed|reviewed|all]`, oldest first.
#[utoipa::path(
    get,
    operation_id = "break_glass_queue",
    path = "/api/break-glass",
    tag = "review",
    summary = "Break-glass grants to review, oldest first",
    params(("status" = Option<String>, Query, description = "unreviewed (default), reviewed or all"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of grants", body = Vec<chartsync_core::store::BreakGlass>), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn queue(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<QueueQuery>,
) -> Response {
    let query: std::collections::HashMap<String, String> =
        [("limit", &q.limit), ("offset", &q.offset)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect();
    let paging = match crate::paging::Paging::of(&query) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let filter = match q.status.as_deref().unwrap_or("unreviewed") {
        "unreviewed" => ReviewFilter::Unreviewed,
        "reviewed" => ReviewFilter::Reviewed,
        "all" => ReviewFilter::All,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "status is unreviewed, reviewed or all",
            )
        }
    };
    let who = actor(&access, &headers);
    match review_queue(app.store.clone(), &access, who, filter).await {
        Ok(grants) => paging.respond(&uri, grants, |grants| Json(grants).into_response()),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    note: String,
}

/// `POST /api/break-glass/{id}/review`: reviewed, with a note.
#[utoipa::path(
    post,
    operation_id = "break_glass_review",
    path = "/api/break-glass/{id}/review",
    tag = "review",
    summary = "A grant reviewed, with a note",
    params(("id" = i64, Path, description = "the grant's id")),
    request_body = Review,
    responses((status = 200, description = "the grant", body = chartsync_core::store::BreakGlass), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn review(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(req): Json<Review>,
) -> Response {
    let by = actor(&access, &headers);
    match reviewed(app.store.clone(), &access, by, id, req.note).await {
        Ok(grant) => Json(grant).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Audits the end of grants whose time ran out, every 30 seconds (on a database shared by
/// several nodes, the lease's holder: another node's sweep at the same moment would audit no
/// end twice, but would do the work twice).
pub fn sweep(store: std::sync::Arc<ChartStore>) {
    crate::while_holding_lease(
        store,
        std::time::Duration::from_secs(30),
        |store| store.sweep_break_glass(),
        |outcome| match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(grants = n, "break-glass grants ended"),
            Err(e) => tracing::error!(error = %e, "could not end break-glass grants"),
        },
    );
}
