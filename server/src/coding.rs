//! Coding a discharged chart on the server: codes found by words, a chart's codes as the coder
//! reads them, and the coder's work on them (propose a code, set its POA indicator, make it
//! final). The REST endpoints and the console's pages share these functions, so the role and
//! ward rules are written once; every read and write is audited, and a write is a change to
//! the chart, committed and sent to the tablets that hold it like any other.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{
    ChartError, ChartId, ChartView, CodeInput, CodingSequence, CodingStatus, CodingView,
    EncounterView, EntryView, NewCoding, PresentOnAdmission, Role, Staff, Timestamp,
};
use chartsync_core::codes::{icd10cm_lookup, icd10cm_search, CodeSystem, ICD10CM_CODE_SET};
use chartsync_core::store::{Actor, AuditAction, ChartStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::api::{actor, error, internal};
use crate::auth::Access;
use crate::records::{internal_refusal, reads_records_statistics, settled, Refusal};
use crate::AppState;

/// Codes one search returns unless asked for fewer; at most [`MAX_MATCHES`].
pub(crate) const DEFAULT_MATCHES: usize = 25;
const MAX_MATCHES: usize = 200;

/// Who codes: coders and records technicians (the chart's own rule); only a coder makes a
/// code final.
pub(crate) fn codes_charts(role: Role) -> bool {
    matches!(role, Role::Coder | Role::Technician)
}

#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct CodeMatch {
    pub code: &'static str,
    pub description: &'static str,
}

#[derive(utoipa::ToSchema, Serialize)]
struct CodeSearch {
    code_set: &'static str,
    codes: Vec<CodeMatch>,
}

/// Billable ICD-10-CM codes found by the words of their description (or a code's
/// beginning), for coders and records staff. The words are not about a patient and are not
/// audited.
pub(crate) fn search(
    access: &Access,
    words: &str,
    limit: usize,
) -> Result<Vec<CodeMatch>, Refusal> {
    if !reads_records_statistics(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "code lookup is for coders and records staff".into(),
        ));
    }
    if words.trim().is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "give words to look for (q=type 2 diabetes) or a code's beginning (q=E11)".into(),
        ));
    }
    let found = icd10cm_search(words, limit.clamp(1, MAX_MATCHES)).map_err(internal_refusal)?;
    Ok(found
        .into_iter()
        .map(|e| CodeMatch {
            code: e.code,
            description: e.description,
        })
        .collect())
}

/// `GET /api/codes?q=WORDS[&limit=N]`: billable ICD-10-CM codes whose description has every
/// word (as a word's beginning), the most general first; or, for `q=E11`, the codes under it.
#[utoipa::path(
    get,
    operation_id = "coding_search_codes",
    path = "/api/codes",
    tag = "coding",
    summary = "Billable ICD-10-CM codes found by the words of their description, or a code's beginning",
    params(("q" = String, Query, description = "words, or a code's beginning"), ("limit" = Option<usize>, Query, description = "at most this many")),
    responses((status = 200, description = "the codes, the most general first", body = CodeSearch), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn search_codes(
    access: Access,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_MATCHES,
        Some(Ok(n)) if (1..=MAX_MATCHES).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("limit is a number from 1 to {MAX_MATCHES}"),
            )
        }
    };
    let words = query.get("q").cloned().unwrap_or_default();
    match tokio::task::spawn_blocking(move || search(&access, &words, limit)).await {
        Ok(Ok(codes)) => Json(CodeSearch {
            code_set: ICD10CM_CODE_SET,
            codes,
        })
        .into_response(),
        Ok(Err(r)) => r.into_response(),
        Err(e) => internal(e),
    }
}

/// A chart's codes as a coder works them, with the stay they describe.
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct ChartCoding {
    pub chart: ChartId,
    pub mrn: String,
    /// The patient's name, for the console; not in the REST JSON.
    #[serde(skip)]
    pub patient: String,
    pub encounter: EncounterView,
    pub codes: Vec<CodeLine>,
    /// The chart's entries, which a code rests on (its supporting entries); not in the REST
    /// JSON, whose callers read the chart itself.
    #[serde(skip)]
    pub entries: Vec<EntryView>,
    /// Physician queries still waiting for an answer.
    pub open_queries: usize,
}

/// One code on the chart, with its description and, for a procedure, when it was done and
/// by whom (from the entries it rests on).
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct CodeLine {
    #[serde(flatten)]
    pub coding: CodingView,
    /// The coder's display, else the ICD-10-CM table's description.
    pub description: Option<String>,
    pub performed_at: Option<Timestamp>,
    pub performed_by: Vec<String>,
}

/// The chart's ward, if it is on the person's wards: else the refusal, audited.
pub(crate) fn on_wards(
    store: &ChartStore,
    access: &Access,
    who: &Actor,
    id: ChartId,
    what: &str,
) -> Result<Result<(), Refusal>, StoreError> {
    match store.summary(id)? {
        Some(s) if access.may_see_ward(&s.ward) => Ok(Ok(())),
        Some(_) => {
            store.record_audit(
                who,
                AuditAction::Deny,
                Some(id),
                Some(&format!("{what}: not on the person's wards")),
            )?;
            Ok(Err(Refusal(
                StatusCode::FORBIDDEN,
                format!("chart {id} is not on your wards"),
            )))
        }
        None => Ok(Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no chart {id}"),
        ))),
    }
}

/// Reads a chart's coding (audited as a read of the chart).
pub(crate) async fn chart_coding(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: ChartId,
) -> Result<ChartCoding, Refusal> {
    if !reads_records_statistics(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "coding is for coders and records staff".into(),
        ));
    }
    let view = read_view(store, access, who, id, "coding").await?;
    let codes = view
        .coding
        .iter()
        .map(|c| {
            let (performed_at, performed_by) = match CodeSystem::from_token(&c.system) {
                Ok(CodeSystem::Icd10Pcs | CodeSystem::Cpt | CodeSystem::Hcpcs) => view
                    .performed(c)
                    .map_or((None, Vec::new()), |(at, by)| (Some(at), by)),
                _ => (None, Vec::new()),
            };
            let description = c.display.clone().or_else(|| {
                (c.system == CodeSystem::Icd10Cm.token())
                    .then(|| icd10cm_lookup(&c.code).map(|e| e.description.to_string()))
                    .flatten()
            });
            CodeLine {
                coding: c.clone(),
                description,
                performed_at,
                performed_by,
            }
        })
        .collect();
    Ok(ChartCoding {
        chart: id,
        mrn: view.patient.mrn.clone(),
        patient: format!("{}, {}", view.patient.family_name, view.patient.given_names),
        open_queries: view
            .queries
            .iter()
            .filter(|q| q.status == chartsync_core::chart::QueryStatus::Open)
            .count(),
        encounter: view.encounter,
        codes,
        entries: view.entries,
    })
}

/// Reads a chart on the person's wards, audited as a read of it with `what` (the screen);
/// a chart off their wards is refused, and the refusal audited.
pub(crate) async fn read_view(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: ChartId,
    what: &'static str,
) -> Result<ChartView, Refusal> {
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = on_wards(&store, &access, &who, id, what)? {
            return Ok(Err(r));
        }
        let view = store
            .read(id, |c| c.view())?
            .map_err(|error| StoreError::Chart { id, error })?;
        store.record_audit(&who, AuditAction::Read, Some(id), Some(what))?;
        Ok::<_, StoreError>(Ok(view))
    })
    .await;
    settled(result)
}

/// A coder's work on one chart.
pub(crate) enum CodeWork {
    /// Propose a code; its id comes back.
    Assign(NewCoding),
    /// Set a diagnosis's POA indicator, then the code's status, in one commit.
    Change {
        coding: String,
        poa: Option<PresentOnAdmission>,
        status: Option<CodingStatus>,
    },
}

/// Does `work` on chart `id` as the signed-in person, writing from `device` (`console`,
/// `api`): a change to the chart, committed with its audit row. Returns the code's id.
pub(crate) async fn work(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    device: &'static str,
    id: ChartId,
    work: CodeWork,
) -> Result<String, Refusal> {
    if !codes_charts(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "codes are assigned by coders and records technicians".into(),
        ));
    }
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = on_wards(&store, &access, &who, id, "coding")? {
            return Ok(Err(r));
        }
        let by = Staff::new(access.user.clone(), access.role, device);
        let now = Timestamp::now();
        let done = store.update_as(&who, id, |chart| match work {
            CodeWork::Assign(c) => chart.assign_code(&by, now, c),
            CodeWork::Change {
                coding,
                poa,
                status,
            } => {
                if let Some(poa) = poa {
                    chart.set_coding_poa(&by, now, &coding, poa)?;
                }
                if let Some(status) = status {
                    chart.set_coding_status(&by, now, &coding, status)?;
                }
                Ok(coding)
            }
        });
        Ok::<_, StoreError>(match done {
            Ok(coding) => Ok(coding),
            Err(StoreError::Chart { error, .. }) => Err(refused(error)),
            Err(e) => return Err(e),
        })
    })
    .await;
    settled(result)
}

/// What the chart's rules said, as the answer's status and words.
pub(crate) fn refused(e: ChartError) -> Refusal {
    let status = match &e {
        ChartError::NotPermitted(_) => StatusCode::FORBIDDEN,
        ChartError::NotFound { .. } => StatusCode::NOT_FOUND,
        ChartError::InvalidTransition(_) => StatusCode::CONFLICT,
        ChartError::InvalidValue { .. }
        | ChartError::Missing { .. }
        | ChartError::InvalidCode(_)
        | ChartError::InvalidCodeAt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => return internal_refusal(e),
    };
    Refusal(status, e.to_string())
}

/// What a form or a JSON body says about a code to propose, checked before the chart is.
pub(crate) fn new_coding(
    system: &str,
    code: &str,
    sequence: &str,
    poa: Option<&str>,
    supporting_entries: Vec<String>,
) -> Result<NewCoding, Refusal> {
    let bad = |e: &dyn std::fmt::Display| Refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    Ok(NewCoding {
        code: CodeInput::new(
            CodeSystem::from_token(system).map_err(|e| bad(&e))?,
            code.trim(),
        ),
        sequence: CodingSequence::from_token(sequence).map_err(|e| bad(&e))?,
        poa: poa
            .filter(|p| !p.is_empty())
            .map(PresentOnAdmission::from_token)
            .transpose()
            .map_err(|e| bad(&e))?,
        supporting_entries,
    })
}

pub(crate) fn chart_id(id: &str) -> Result<ChartId, Refusal> {
    id.parse()
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "not a chart id".into()))
}

/// `GET /api/charts/{id}/coding`: the chart's codes with their descriptions and, for
/// procedures, when and by whom; coders and records staff on the chart's ward.
#[utoipa::path(
    get,
    operation_id = "coding_show",
    path = "/api/charts/{id}/coding",
    tag = "coding",
    summary = "A chart's codes with their descriptions, and a procedure's date and performers",
    params(("id" = String, Path, description = "the chart's id")),
    responses((status = 200, description = "the chart's coding", body = ChartCoding), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn show(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    match chart_coding(app.store.clone(), &access, who, id).await {
        Ok(coding) => Json(coding).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propose {
    system: String,
    code: String,
    sequence: String,
    #[serde(default)]
    poa: Option<String>,
    #[serde(default)]
    supporting_entries: Vec<String>,
}

#[derive(utoipa::ToSchema, Serialize)]
struct Proposed {
    id: String,
}

/// `POST /api/charts/{id}/coding` `{system, code, sequence, poa?, supporting_entries?}`:
/// proposes a code (checked against the code set in force on the chart's date); 201 with
/// its id.
#[utoipa::path(
    post,
    operation_id = "coding_propose",
    path = "/api/charts/{id}/coding",
    tag = "coding",
    summary = "Proposes a code, checked against the code set in force on the chart's date",
    params(("id" = String, Path, description = "the chart's id")),
    request_body = Propose,
    responses((status = 201, description = "the code's id", body = Proposed), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn propose(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Propose>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let coding = match new_coding(
        &body.system,
        &body.code,
        &body.sequence,
        body.poa.as_deref(),
        body.supporting_entries,
    ) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    match work(
        app.store.clone(),
        &access,
        who,
        "api",
        id,
        CodeWork::Assign(coding),
    )
    .await
    {
        Ok(id) => (StatusCode::CREATED, Json(Proposed { id })).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    poa: Option<String>,
}

/// `POST /api/charts/{id}/coding/{coding}` `{poa?, status?}`: sets a diagnosis's POA
/// indicator and moves the code's status (`final` by a coder only), in one commit: both or
/// neither.
#[utoipa::path(
    post,
    operation_id = "coding_change",
    path = "/api/charts/{id}/coding/{coding}",
    tag = "coding",
    summary = "Sets a diagnosis's POA indicator and moves the code's status, in one commit",
    params(("id" = String, Path, description = "the chart's id"), ("coding" = String, Path, description = "the code's id")),
    request_body = Change,
    responses((status = 204, description = "changed"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn change(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, coding)): Path<(String, String)>,
    Json(body): Json<Change>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let unprocessable = |e: ChartError| error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    let poa = match body
        .poa
        .as_deref()
        .map(PresentOnAdmission::from_token)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return unprocessable(e),
    };
    let status = match body
        .status
        .as_deref()
        .map(CodingStatus::from_token)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return unprocessable(e),
    };
    if poa.is_none() && status.is_none() {
        return error(StatusCode::BAD_REQUEST, "give a poa, a status or both");
    }
    let who = actor(&access, &headers);
    let w = CodeWork::Change {
        coding,
        poa,
        status,
    };
    match work(app.store.clone(), &access, who, "api", id, w).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}
