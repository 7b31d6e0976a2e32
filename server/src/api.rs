//! The REST side, with the same bearer tokens as `/sync`: chart summaries for a ward, one
//! chart as JSON, a chart's audit trail (records supervisors and admins), and metrics. Every
//! read of chart data is audited; a chart outside the token's wards is "not found", as one
//! that does not exist.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{ChartId, EncounterStatus, Role, Timestamp};
use chartsync_core::store::{Actor, AuditAction, ChartFilter};

use crate::auth::{Access, AuthError};
use crate::AppState;

/// The token from `Authorization: Bearer`, or from `?token=` where `query` is given: only the
/// WebSocket, which browsers cannot give headers, takes it from the URL (URLs end up in proxy
/// and server logs).
pub fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<&HashMap<String, String>>,
) -> Result<Access, AuthError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer.or(query.and_then(|q| q.get("token")).map(String::as_str)) {
        Some(token) => app.keys.verify(token),
        None => Err(AuthError::Missing),
    }
}

/// REST handlers take the signed-in user as an argument; a missing or bad token is a 401
/// before the handler runs.
impl axum::extract::FromRequestParts<AppState> for Access {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Access, Response> {
        authenticate(app, &parts.headers, None).map_err(unauthorized)
    }
}

pub fn unauthorized(e: AuthError) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

pub(crate) fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

pub(crate) fn actor(access: &Access, headers: &HeaderMap) -> Actor {
    let client = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http")
        .chars()
        .take(80)
        .collect();
    Actor {
        user: access.user.clone(),
        role: access.role.token().to_string(),
        device: client,
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store error");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server could not read its store",
    )
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

/// `GET /api/charts?ward=W[&status=active|discharged]`
pub async fn charts(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(ward) = query.get("ward").cloned() else {
        return error(StatusCode::BAD_REQUEST, "name a ward: ?ward=");
    };
    if !access.may_see_ward(&ward) {
        return error(StatusCode::FORBIDDEN, "the token does not cover that ward");
    }
    let status = match query.get("status").map(|s| EncounterStatus::from_token(s)) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "status is active or discharged"),
    };
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let result = blocking(move || {
        let list = store.list(&ChartFilter {
            ward: Some(ward.clone()),
            status,
            ..ChartFilter::default()
        })?;
        store.record_audit(&who, AuditAction::List, None, Some(&format!("ward {ward}")))?;
        Ok::<_, chartsync_core::store::StoreError>(list)
    })
    .await;
    match result {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// `GET /api/charts/{id}`: the chart as JSON (its view).
pub async fn chart(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<ChartId>() else {
        return error(StatusCode::BAD_REQUEST, "not a chart id");
    };
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let result = blocking(
        move || -> Result<Option<_>, chartsync_core::store::StoreError> {
            // A break-glass grant of the person's opens a chart outside their wards.
            let granted = || {
                !access.quarantined
                    && access.device.is_none()
                    && store
                        .active_break_glass(Some(&access.user), None, id, Timestamp::now())
                        .is_ok_and(|g| g.is_some())
            };
            match store.summary(id)? {
                Some(s) if access.may_see_ward(&s.ward) || granted() => {
                    let view = store.read(id, |c| c.view())?;
                    store.record_audit(&who, AuditAction::Read, Some(id), None)?;
                    Ok(Some(view))
                }
                Some(_) => {
                    store.record_audit(
                        &who,
                        AuditAction::Deny,
                        Some(id),
                        Some("chart outside the token's wards"),
                    )?;
                    Ok(None)
                }
                None => Ok(None),
            }
        },
    )
    .await;
    match result {
        Ok(Ok(Some(Ok(view)))) => Json(view).into_response(),
        Ok(Ok(Some(Err(e)))) => internal(e),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such chart"),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// `GET /api/audit?chart=ID | ?user=U | ?mrn=M`: a chart's, a person's or a patient's audit
/// trail; records supervisors and admins only (of every ward for a person or a patient);
/// reading it is audited too.
#[utoipa::path(
    get,
    operation_id = "api_audit",
    path = "/api/audit",
    tag = "audit",
    summary = "The audit trail of a chart, a person or a patient",
    params(("chart" = Option<String>, Query, description = "a chart's id"), ("user" = Option<String>, Query, description = "a person's user id: newest first"), ("mrn" = Option<String>, Query, description = "a patient's MRN: every chart of theirs"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of the trail", body = Vec<chartsync_core::store::AuditRecord>), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn audit(
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
    let whose = match (query.get("chart"), query.get("user"), query.get("mrn")) {
        (Some(c), None, None) => match c.parse::<ChartId>() {
            Ok(id) => {
                return match chart_audit_trail(app.store.clone(), &access, who, id).await {
                    Ok(trail) => paging.respond(&uri, trail, |t| Json(t).into_response()),
                    Err(r) => r.into_response(),
                }
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "not a chart id"),
        },
        (None, Some(u), None) => Whose::User(u.clone()),
        (None, None, Some(m)) => Whose::Patient(m.clone()),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "name one chart (?chart=), person (?user=) or patient (?mrn=)",
            )
        }
    };
    match audit_trail_of(app.store.clone(), &access, who, whose).await {
        Ok(trail) => paging.respond(&uri, trail, |t| Json(t).into_response()),
        Err(r) => r.into_response(),
    }
}

/// Whose audit trail, beyond one chart's.
pub(crate) enum Whose {
    /// What one person did, newest first (the last 1,000 rows).
    User(String),
    /// Every chart of an MRN, oldest first.
    Patient(String),
}

/// Rows of a person's trail one answer holds.
const USER_TRAIL_ROWS: u32 = 1_000;

/// A person's or a patient's audit trail, for records supervisors and admins of every ward
/// (either spans wards). Reading a patient's trail is audited on each of their charts; a
/// person's, as a listing naming them.
pub(crate) async fn audit_trail_of(
    store: std::sync::Arc<chartsync_core::store::ChartStore>,
    access: &Access,
    who: chartsync_core::store::Actor,
    whose: Whose,
) -> Result<Vec<chartsync_core::store::AuditRecord>, crate::records::Refusal> {
    use crate::records::Refusal;
    if !matches!(access.role, Role::RecordsSupervisor | Role::Admin)
        || !access.may_see_ward(crate::auth::ALL_WARDS)
    {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "a person's or a patient's audit trail is for records supervisors and admins of every ward"
                .into(),
        ));
    }
    let result = tokio::task::spawn_blocking(move || match whose {
        Whose::User(user) => {
            let trail = store.audit_of_user(&user, USER_TRAIL_ROWS)?;
            let detail = format!("audit trail of user {user}");
            store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
            Ok(Ok(trail))
        }
        Whose::Patient(mrn) => {
            let charts = store.charts_of_patient(&mrn)?;
            if charts.is_empty() {
                return Ok(Err(Refusal(
                    StatusCode::NOT_FOUND,
                    crate::records::no_such_patient(&mrn),
                )));
            }
            let trail = store.audit_of_patient(&mrn)?;
            for c in &charts {
                store.record_audit(
                    &who,
                    AuditAction::Read,
                    Some(c.id),
                    Some("patient's audit trail"),
                )?;
            }
            Ok::<_, chartsync_core::store::StoreError>(Ok(trail))
        }
    })
    .await;
    crate::records::settled(result)
}

/// A chart's audit trail, oldest first, for records supervisors and admins whose wards cover
/// the chart; the read (or the refusal) is audited too.
pub(crate) async fn chart_audit_trail(
    store: std::sync::Arc<chartsync_core::store::ChartStore>,
    access: &Access,
    who: chartsync_core::store::Actor,
    id: ChartId,
) -> Result<Vec<chartsync_core::store::AuditRecord>, crate::records::Refusal> {
    use crate::records::Refusal;
    if !matches!(access.role, Role::RecordsSupervisor | Role::Admin) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "the audit trail is for records supervisors and admins".into(),
        ));
    }
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        // A supervisor's wards bound the trails they read, as they bound the charts. A trail
        // with no chart in the store (a refused new chart, a denied guess) is the records
        // office's (`*`) to read.
        let visible = match store.summary(id)? {
            Some(s) => access.may_see_ward(&s.ward),
            None => access.may_see_ward(crate::auth::ALL_WARDS),
        };
        if !visible {
            let detail = Some("audit trail of a chart outside the token's wards");
            store.record_audit(&who, AuditAction::Deny, Some(id), detail)?;
            return Ok(Err(Refusal(StatusCode::NOT_FOUND, "no such chart".into())));
        }
        let trail = store.audit_trail(id)?;
        store.record_audit(&who, AuditAction::Read, Some(id), Some("audit trail"))?;
        Ok::<_, chartsync_core::store::StoreError>(Ok(trail))
    })
    .await;
    crate::records::settled(result)
}

/// `GET /metrics`
pub async fn metrics(State(app): State<AppState>) -> Response {
    // No token is needed here: the store's counts are read off the async workers.
    let store = app.store.clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await {
        app.hub
            .metrics
            .charts_loaded
            .set(stats.charts_cached as i64);
        app.hub.metrics.charts_stored.set(stats.charts as i64);
    }
    let m = &app.hub.metrics;
    m.lease_held.set(i64::from(app.store.holds_lease()));
    if let Some(lag) = app.store.outbox_lag() {
        m.outbox_lag.set(lag.behind_ms as f64 / 1000.0);
        m.outbox_delay.set(lag.last_delay_ms as f64 / 1000.0);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.hub.metrics.render(),
    )
        .into_response()
}
