//! The records office's REST reads: the deficiency worklist, the coding queue, a patient's
//! accounting of disclosures and a chart as FHIR. Every read is audited; who may read what is
//! set out on each.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{check_identifier, ChartId, DeficiencyKind, Role, Timestamp};
use chartsync_core::store::{
    Accounting, Actor, Assigned, AuditAction, ChartSearch, ChartSearchResult, ChartStore,
    CodingQueueItem, DeficiencyFilter, DeficiencyRef, Delinquency, IndexWarning, StoreError,
    WorklistItem,
};
use serde::{Deserialize, Serialize};

use crate::api::{actor, blocking, error, internal};
use crate::auth::{Access, ALL_WARDS};
use crate::AppState;

/// The wards a listing covers: the one asked for with `?ward=` (which the token must cover),
/// else every ward the token covers; `None` is every ward.
pub(crate) fn listing_wards(
    access: &Access,
    query: &HashMap<String, String>,
) -> Result<Option<Vec<String>>, Refusal> {
    match query.get("ward") {
        Some(w) if access.may_see_ward(w) => Ok(Some(vec![w.clone()])),
        Some(_) => Err(Refusal(
            StatusCode::FORBIDDEN,
            "the token does not cover that ward".into(),
        )),
        None if access.may_see_ward(ALL_WARDS) => Ok(None),
        None => Ok(Some(access.wards.clone())),
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, Refusal> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("{name} is true or false"),
        )),
    }
}

/// A request refused before it reaches the store: the status and why.
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// What a ward no chart is on is told, with the wards there are (ward names are not patient
/// data).
pub(crate) fn no_such_ward(ward: &str, wards: &[String]) -> String {
    format!(
        "no chart in this store is on ward {ward:?} (the wards are: {}); check the ward's name",
        if wards.is_empty() {
            "none yet".to_string()
        } else {
            wards.join(", ")
        }
    )
}

/// What an MRN with no chart is told: an empty accounting of a mistyped MRN would read as
/// "no disclosures".
pub(crate) fn no_such_patient(mrn: &str) -> String {
    format!("no chart in this store has MRN {mrn}; check the MRN")
}

pub(crate) fn audit_detail(what: &str, wards: &Option<Vec<String>>) -> String {
    match wards {
        None => format!("{what}: every ward"),
        Some(w) => format!("{what}: ward {}", w.join(" ")),
    }
}

/// A worklist as the REST API and `chartsync-records deficiencies --json` give it.
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct Worklist {
    /// The time "overdue" was judged at.
    pub(crate) as_of: Timestamp,
    pub(crate) deficiencies: Vec<WorklistItem>,
}

/// `GET /api/deficiencies[?ward=W][&overdue=true][&kind=K][&responsible=U]`: what is missing
/// from the charts of the token's wards, soonest due first. Anyone signed in may read their
/// wards' worklist: the physicians whose signatures are missing read it too.
#[utoipa::path(
    get,
    operation_id = "records_deficiencies",
    path = "/api/deficiencies",
    tag = "worklist",
    summary = "What is missing from the charts of the token's wards, soonest due first",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)"), ("overdue" = Option<bool>, Query, description = "only the overdue"), ("kind" = Option<String>, Query, description = "a deficiency kind token"), ("responsible" = Option<String>, Query, description = "a user id or role: the assignee, else who the rules name"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of the worklist", body = Worklist), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn deficiencies(
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
    let wards = match listing_wards(&access, &query) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let overdue_only = match flag(&query, "overdue") {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let kind = match query.get("kind").map(|k| DeficiencyKind::from_token(k)) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let responsible = query.get("responsible").cloned();
    let asked = query.get("ward").cloned();
    let seen = access.clone();
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let now = Timestamp::now();
    let result = blocking(move || {
        let detail = audit_detail("deficiencies", &wards);
        let filter = DeficiencyFilter {
            wards,
            kind,
            responsible,
            overdue_only,
            ..DeficiencyFilter::default()
        };
        let items = store.worklist(&filter, now)?;
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        // An empty list for a ward asked by name: is it a ward at all?
        let unknown = match (&asked, items.is_empty()) {
            (Some(w), true) => {
                let mut wards = store.wards()?;
                let unknown = !wards.contains(w);
                // Named to the caller: only the wards their token covers.
                wards.retain(|known| seen.may_see_ward(known));
                unknown.then(|| no_such_ward(w, &wards))
            }
            _ => None,
        };
        Ok::<_, StoreError>((items, unknown))
    })
    .await;
    match result {
        Ok(Ok((_, Some(unknown)))) => error(StatusCode::NOT_FOUND, &unknown),
        Ok(Ok((deficiencies, None))) => paging.respond(&uri, deficiencies, |deficiencies| {
            Json(Worklist {
                as_of: now,
                deficiencies,
            })
            .into_response()
        }),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// Who works the worklist: records technicians, supervisors and administrators. (Coders
/// work the coding queue; physicians put deficiencies right in the chart.)
pub(crate) fn works_deficiencies(role: Role) -> bool {
    matches!(
        role,
        Role::Technician | Role::RecordsSupervisor | Role::Admin
    )
}

/// What the records office does to deficiencies on the worklist, from REST or the console.
pub(crate) enum DeficiencyWork {
    /// Route them to a person (`None`: back to whoever the rules name).
    Assign(Option<String>),
    /// Acknowledge one late H&P, with the reason.
    Acknowledge(String),
}

/// Checks the role and that every chart is on the person's wards, then does the work in one
/// transaction with its audit rows. A refusal is audited and changes nothing.
pub(crate) async fn work_deficiencies(
    store: std::sync::Arc<ChartStore>,
    access: &Access,
    who: Actor,
    refs: Vec<DeficiencyRef>,
    work: DeficiencyWork,
) -> Result<Assigned, Refusal> {
    if !works_deficiencies(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "deficiencies are assigned and acknowledged by records technicians and supervisors"
                .into(),
        ));
    }
    if refs.is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "choose at least one deficiency".into(),
        ));
    }
    if matches!(work, DeficiencyWork::Acknowledge(_)) && refs.len() != 1 {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "a late H&P is acknowledged one at a time, each with its reason".into(),
        ));
    }
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut charts: Vec<ChartId> = refs.iter().map(|r| r.chart).collect();
        charts.sort();
        charts.dedup();
        for &id in &charts {
            let ward = store.summary(id)?.map(|s| s.ward);
            match ward {
                Some(w) if access.may_see_ward(&w) => {}
                found => {
                    store.record_audit(
                        &who,
                        AuditAction::Deny,
                        Some(id),
                        Some("deficiency work: not on the person's wards"),
                    )?;
                    return Ok(Err(match found {
                        None => Refusal(StatusCode::NOT_FOUND, format!("no chart {id}")),
                        Some(_) => Refusal(
                            StatusCode::FORBIDDEN,
                            format!("chart {id} is not on your wards"),
                        ),
                    }));
                }
            }
        }
        let now = Timestamp::now();
        let done = match &work {
            DeficiencyWork::Assign(person) => {
                store.assign_deficiencies(&who, &refs, person.as_deref(), now)
            }
            DeficiencyWork::Acknowledge(reason) => store
                .acknowledge_deficiency(&who, &refs[0], reason, now)
                .map(|()| Assigned {
                    deficiencies: 1,
                    charts: 1,
                }),
        };
        Ok::<_, StoreError>(match done {
            Ok(done) => Ok(done),
            Err(e @ (StoreError::NoSuchDeficiency(_) | StoreError::NoSuchStaff(_))) => {
                Err(Refusal(StatusCode::CONFLICT, e.to_string()))
            }
            Err(e @ (StoreError::NotAcknowledgeable(_) | StoreError::Invalid(_))) => {
                Err(Refusal(StatusCode::BAD_REQUEST, e.to_string()))
            }
            Err(e) => return Err(e),
        })
    })
    .await;
    match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "deficiency work");
            Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not write its store".into(),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "deficiency work");
            Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not write its store".into(),
            ))
        }
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// A user id from the staff directory; `null` routes them back to the rules' responsible.
    assignee: Option<String>,
    deficiencies: Vec<DeficiencyRef>,
}

/// `POST /api/deficiencies/assign` with `{"assignee": "dr.adeyemi", "deficiencies": [{"chart",
/// "kind", "section", "record_id", "detail"}, ...]}` (each as the worklist lists it): routes
/// them to a person, all or none. 409 when one was put right since the list was read, or the
/// person is not in the directory.
#[utoipa::path(
    post,
    operation_id = "records_assign",
    path = "/api/deficiencies/assign",
    tag = "worklist",
    summary = "Routes deficiencies to a person, all or none",
    request_body = AssignBody,
    responses((status = 200, description = "what was routed", body = chartsync_core::store::Assigned), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn assign(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Result<Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let who = actor(&access, &headers);
    match work_deficiencies(
        app.store.clone(),
        &access,
        who,
        body.deficiencies,
        DeficiencyWork::Assign(body.assignee),
    )
    .await
    {
        Ok(done) => Json(done).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeBody {
    reason: String,
    deficiency: DeficiencyRef,
}

/// `POST /api/deficiencies/acknowledge` with `{"reason": "...", "deficiency": {...}}`: the
/// records office accepts a late H&P as it stands (it cannot be put right); it stays on the
/// worklist, marked, and is no longer overdue.
#[utoipa::path(
    post,
    operation_id = "records_acknowledge",
    path = "/api/deficiencies/acknowledge",
    tag = "worklist",
    summary = "Accepts a late H&P as it stands, with a reason",
    request_body = AcknowledgeBody,
    responses((status = 204, description = "acknowledged"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn acknowledge(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Result<Json<AcknowledgeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let who = actor(&access, &headers);
    match work_deficiencies(
        app.store.clone(),
        &access,
        who,
        vec![body.deficiency],
        DeficiencyWork::Acknowledge(body.reason),
    )
    .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

/// Days of the delinquency trend the dashboard and `GET /api/delinquency` show.
pub(crate) const TREND_DAYS: u32 = 90;

/// The delinquency report with the hospital's threshold, as REST and the console give it.
#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct DelinquencyReport {
    /// `--delinquency-threshold`: percent of the average monthly discharges.
    pub(crate) threshold_percent: u32,
    /// Whether delinquent records are above it (false while there is no whole month of
    /// discharges to compare with).
    pub(crate) over_threshold: bool,
    #[serde(flatten)]
    pub(crate) delinquency: Delinquency,
}

impl DelinquencyReport {
    pub(crate) fn of(delinquency: Delinquency, threshold_percent: u32) -> DelinquencyReport {
        DelinquencyReport {
            threshold_percent,
            over_threshold: delinquency
                .percent_of_discharges
                .is_some_and(|p| p > f64::from(threshold_percent)),
            delinquency,
        }
    }
}

/// Who reads the records office's statistics and queues: coders and records staff.
pub(crate) fn reads_records_statistics(role: Role) -> bool {
    matches!(
        role,
        Role::Coder | Role::Technician | Role::RecordsSupervisor | Role::Admin
    )
}

/// `GET /api/delinquency[?ward=W]`: delinquent records against the average monthly
/// discharges and the hospital's threshold, the coding backlog apart, and the daily trend of
/// the last 90 days. Coders and records staff, for their token's wards; audited as a listing.
#[utoipa::path(
    get,
    operation_id = "records_delinquency",
    path = "/api/delinquency",
    tag = "worklist",
    summary = "Delinquent records against the average monthly discharges",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)")),
    responses((status = 200, description = "the delinquency report", body = DelinquencyReport), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn delinquency(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !reads_records_statistics(access.role) {
        return error(
            StatusCode::FORBIDDEN,
            "delinquency statistics are for coders and records staff",
        );
    }
    let wards = match listing_wards(&access, &query) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let now = Timestamp::now();
    let result = blocking(move || {
        let found = store.delinquency(wards.as_deref(), now, TREND_DAYS)?;
        store.record_audit(
            &who,
            AuditAction::List,
            None,
            Some(&audit_detail("delinquency", &wards)),
        )?;
        Ok::<_, StoreError>(found)
    })
    .await;
    match result {
        Ok(Ok(d)) => Json(DelinquencyReport::of(d, app.delinquency_threshold)).into_response(),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

#[derive(utoipa::ToSchema, Serialize)]
struct CodingQueue {
    as_of: Timestamp,
    charts: Vec<CodingQueueItem>,
}

/// `GET /api/coding-queue[?ward=W]`: discharged charts waiting for final coding, earliest
/// discharge first. Coders and records staff only.
#[utoipa::path(
    get,
    operation_id = "records_coding_queue",
    path = "/api/coding-queue",
    tag = "coding",
    summary = "Discharged charts waiting for final coding, due when the billing hold ends",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "a page of the queue", body = CodingQueue), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn coding_queue(
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
    if !reads_records_statistics(access.role) {
        return error(
            StatusCode::FORBIDDEN,
            "the coding queue is for coders and records staff",
        );
    }
    let wards = match listing_wards(&access, &query) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let now = Timestamp::now();
    let bill_hold = app.bill_hold_days;
    let result = blocking(move || {
        let charts = store.coding_queue(wards.as_deref(), now, bill_hold)?;
        let detail = audit_detail("coding queue", &wards);
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(charts)
    })
    .await;
    match result {
        Ok(Ok(charts)) => paging.respond(&uri, charts, |charts| {
            Json(CodingQueue { as_of: now, charts }).into_response()
        }),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// `GET /api/disclosures?mrn=M[&format=csv]` (or `Accept: text/csv`): the patient's
/// accounting of disclosures across all their charts, six years back (45 CFR 164.528).
/// Records supervisors and admins only, with a token for every ward: an accounting that left
/// out a ward's charts would be wrong. Each chart read is audited; a refusal is audited too.
#[utoipa::path(
    get,
    operation_id = "records_disclosures",
    path = "/api/disclosures",
    tag = "release of information",
    summary = "A patient's accounting of disclosures, six years back (45 CFR 164.528)",
    params(("mrn" = String, Query, description = "the patient's MRN"), ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, description = "the accounting", body = chartsync_core::store::Accounting), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
)]
pub async fn disclosures(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let refusal = if !matches!(access.role, Role::RecordsSupervisor | Role::Admin) {
        Some("accountings of disclosures are for records supervisors and admins")
    } else if !access.may_see_ward(ALL_WARDS) {
        Some("an accounting covers every ward's charts: it needs a token for every ward (*)")
    } else {
        None
    };
    if let Some(reason) = refusal {
        // Against the patient's charts, so their trails show who asked.
        let mrn = query
            .get("mrn")
            .filter(|m| check_identifier("mrn", m).is_ok())
            .cloned();
        let denied = blocking(move || {
            let detail = Some("accounting of disclosures");
            let charts = match &mrn {
                Some(m) => store.charts_of_patient(m)?,
                None => Vec::new(),
            };
            if charts.is_empty() {
                store.record_audit(&who, AuditAction::Deny, None, detail)?;
            }
            for chart in charts {
                store.record_audit(&who, AuditAction::Deny, Some(chart.id), detail)?;
            }
            Ok::<_, StoreError>(())
        })
        .await;
        return match denied {
            Ok(Ok(())) => error(StatusCode::FORBIDDEN, reason),
            Ok(Err(e)) => internal(e),
            Err(r) => r,
        };
    }
    let Some(mrn) = query.get("mrn").cloned() else {
        return error(StatusCode::BAD_REQUEST, "name the patient: ?mrn=");
    };
    if let Err(e) = check_identifier("mrn", &mrn) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let csv = match query.get("format").map(String::as_str) {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return error(StatusCode::BAD_REQUEST, "format is json or csv"),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    let now = Timestamp::now();
    let result = blocking(move || audited_accounting(&store, &who, &mrn, now)).await;
    match result {
        Ok(Ok(accounting)) if accounting.charts.is_empty() => {
            error(StatusCode::NOT_FOUND, &no_such_patient(&accounting.mrn))
        }
        Ok(Ok(accounting)) if csv => match accounting_csv(&accounting) {
            Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
            Err(e) => internal(e),
        },
        Ok(Ok(accounting)) => Json(accounting).into_response(),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// A patient's accounting of disclosures, its reading audited on each of their charts (or,
/// with none, once): what the REST API and `chartsync-records accounting` both answer.
pub(crate) fn audited_accounting(
    store: &ChartStore,
    who: &Actor,
    mrn: &str,
    now: Timestamp,
) -> Result<Accounting, StoreError> {
    let accounting = store.accounting_of_disclosures(mrn, now)?;
    let detail = format!("accounting of disclosures, MRN {mrn}");
    if accounting.charts.is_empty() {
        store.record_audit(who, AuditAction::Read, None, Some(&detail))?;
    }
    for &chart in &accounting.charts {
        store.record_audit(who, AuditAction::Read, Some(chart), Some(&detail))?;
    }
    Ok(accounting)
}

/// One chart as a FHIR Bundle, the export audited as a read.
pub(crate) fn audited_fhir_bundle(
    store: &ChartStore,
    who: &Actor,
    id: ChartId,
) -> Result<serde_json::Value, StoreError> {
    let bundle = store.fhir_bundle(id, Timestamp::now())?;
    store.record_audit(who, AuditAction::Read, Some(id), Some("FHIR export"))?;
    Ok(bundle)
}

/// The accounting as CSV: one line per disclosure, with what 164.528(b)(2) asks for (date,
/// recipient and address, what was disclosed, why) and where it came from.
pub fn accounting_csv(accounting: &Accounting) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "date",
        "recipient",
        "recipient_address",
        "description",
        "purpose",
        "chart",
        "disclosure_id",
        "request_id",
        "disclosed_by",
    ])?;
    for line in &accounting.disclosures {
        let d = &line.disclosure;
        out.write_record([
            d.at.to_rfc3339().as_str(),
            &spreadsheet_safe(&d.recipient),
            &spreadsheet_safe(&d.recipient_address),
            &spreadsheet_safe(&d.description),
            d.purpose.token(),
            &line.chart.to_string(),
            &d.id,
            d.request_id.as_deref().unwrap_or(""),
            &d.by,
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

/// `GET /api/charts/{id}/fhir`: the chart as a FHIR R4 Bundle (`application/fhir+json`), for
/// releases of information and transfers. Records technicians, supervisors and admins, for
/// charts of their wards; outside them the chart is "not found", as one that does not exist.
pub async fn fhir_export(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !matches!(
        access.role,
        Role::Technician | Role::RecordsSupervisor | Role::Admin
    ) {
        return error(
            StatusCode::FORBIDDEN,
            "FHIR exports are for records technicians, supervisors and admins",
        );
    }
    let Ok(id) = id.parse::<ChartId>() else {
        return error(StatusCode::BAD_REQUEST, "not a chart id");
    };
    let store = app.store.clone();
    let who = actor(&access, &headers);
    let result = blocking(move || -> Result<Option<_>, StoreError> {
        match store.summary(id)? {
            Some(s) if access.may_see_ward(&s.ward) => {
                audited_fhir_bundle(&store, &who, id).map(Some)
            }
            Some(_) => {
                let detail = Some("FHIR export of a chart outside the token's wards");
                store.record_audit(&who, AuditAction::Deny, Some(id), detail)?;
                Ok(None)
            }
            None => Ok(None),
        }
    })
    .await;
    match result {
        Ok(Ok(Some(bundle))) => (
            [(header::CONTENT_TYPE, "application/fhir+json")],
            Json(bundle),
        )
            .into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such chart"),
        Ok(Err(e)) => internal(e),
        Err(r) => r,
    }
}

/// Free text as a spreadsheet will not run it: a cell starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return is a formula to Excel and LibreOffice, so it gets a leading `'` (OWASP's
/// advice on CSV injection).
fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chartsync_core::chart::{ChartId, DisclosurePurpose, DisclosureView};
    use chartsync_core::store::AccountedDisclosure;

    #[test]
    fn a_recipient_written_as_a_formula_is_not_a_formula_in_the_spreadsheet() {
        let at = Timestamp::parse("2026-11-05T09:00:00Z").unwrap();
        let accounting = Accounting {
            mrn: "MRN-0042".into(),
            from: at.years_before(6),
            to: at,
            charts: vec![],
            disclosures: vec![AccountedDisclosure {
                chart: ChartId::random(),
                disclosure: DisclosureView {
                    id: "8fe96bda-1f46-4bf7-91c1-5bad160ade2f".into(),
                    request_id: None,
                    authorization: None,
                    at,
                    recipient: "=HYPERLINK(\"http://x\")".into(),
                    recipient_address: "-1 Main St".into(),
                    description: "Case report".into(),
                    purpose: DisclosurePurpose::PublicHealth,
                    by: "him.jones".into(),
                },
            }],
        };
        let csv = String::from_utf8(accounting_csv(&accounting).unwrap()).unwrap();
        let line = csv.lines().nth(1).unwrap();
        assert!(
            line.contains("\"'=HYPERLINK(\"\"http://x\"\")\",'-1 Main St,Case report"),
            "{line}"
        );
    }
}

/// Charts one search returns at most; the total says how many matched.
pub(crate) const SEARCH_LIMIT: u32 = 100;

/// Finds charts on the person's wards (records staff only), audited as a listing that names
/// the fields searched, never their values.
pub(crate) async fn find_charts(
    store: std::sync::Arc<ChartStore>,
    access: &Access,
    who: Actor,
    search: ChartSearch,
) -> Result<ChartSearchResult, Refusal> {
    if !reads_records_statistics(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "chart search is for records staff".into(),
        ));
    }
    let wards = listing_wards(access, &HashMap::new())?;
    let result = tokio::task::spawn_blocking(move || {
        let found = match store.search_charts(&search, wards.as_deref(), SEARCH_LIMIT) {
            Ok(found) => found,
            Err(StoreError::Invalid(why)) => return Ok(Err(Refusal(StatusCode::BAD_REQUEST, why))),
            Err(e) => return Err(e),
        };
        let detail = format!(
            "{} by {}: {} found",
            audit_detail("chart search", &wards),
            search.fields().join(", "),
            found.total
        );
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        Ok(Ok(found))
    })
    .await;
    settled(result)
}

/// A store error, logged, as the refusal a caller sees: no detail of the store's.
pub(crate) fn internal_refusal(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "store error");
    Refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server could not read its store".into(),
    )
}

/// What store work run off the async threads came to: its answer, its refusal, or (a store
/// error, a panic) an internal error.
/// Work for records supervisors and admins whose token covers every ward (`*`): `what` names
/// the work in the refusal.
pub(crate) fn supervisors_of_every_ward(access: &Access, what: &str) -> Result<(), Refusal> {
    if !matches!(access.role, Role::RecordsSupervisor | Role::Admin) {
        Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("{what} are for records supervisors and admins"),
        ))
    } else if !access.may_see_ward(crate::auth::ALL_WARDS) {
        Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("{what} cover every ward's charts: they need a token for every ward (*)"),
        ))
    } else {
        Ok(())
    }
}

/// Runs `f` off the async threads as `who` if `allowed` (a refusal is audited as a denial of
/// `what`), sorting its store errors with `refusal` into what the caller is told and the
/// server's own failures.
pub(crate) async fn run_allowed<T: Send + 'static>(
    store: std::sync::Arc<ChartStore>,
    allowed: Result<(), Refusal>,
    who: Actor,
    what: &'static str,
    refusal: fn(StoreError) -> Result<Refusal, StoreError>,
    f: impl FnOnce(&ChartStore, &Actor) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = allowed {
            store.record_audit(&who, AuditAction::Deny, None, Some(what))?;
            return Ok(Err(r));
        }
        match f(&store, &who) {
            Ok(v) => Ok(Ok(v)),
            Err(e) => refusal(e).map(Err),
        }
    })
    .await;
    settled(result)
}

pub(crate) fn settled<T>(
    outcome: Result<Result<Result<T, Refusal>, StoreError>, tokio::task::JoinError>,
) -> Result<T, Refusal> {
    match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(internal_refusal(e)),
        Err(e) => Err(internal_refusal(e)),
    }
}

/// `POST /api/charts/search` `{mrn?, name?, birth_date?, visit_date?}`: charts on the
/// person's wards, by name then newest admission first, at most 100, with the total. A POST
/// so that names and dates of birth stay out of URLs and the logs that keep them.
#[utoipa::path(
    post,
    operation_id = "records_search_charts",
    path = "/api/charts/search",
    tag = "charts",
    summary = "Charts on the person's wards by MRN, name, date of birth or a day in",
    request_body = chartsync_core::store::ChartSearch,
    responses((status = 200, description = "at most 100 charts and the total", body = chartsync_core::store::ChartSearchResult), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn search_charts(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(search): Json<ChartSearch>,
) -> Response {
    let who = actor(&access, &headers);
    match find_charts(app.store.clone(), &access, who, search).await {
        Ok(found) => Json(found).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Serialize)]
struct PatientIndex {
    as_of: Timestamp,
    warnings: Vec<IndexWarning>,
}

/// The patient-index warnings on the person's wards (records staff only), audited as a listing.
pub(crate) async fn index_warnings(
    store: std::sync::Arc<ChartStore>,
    access: &Access,
    who: Actor,
    query: &HashMap<String, String>,
    now: Timestamp,
) -> Result<Vec<IndexWarning>, Refusal> {
    if !reads_records_statistics(access.role) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "the patient-index checks are for records staff".into(),
        ));
    }
    let wards = listing_wards(access, query)?;
    let result = tokio::task::spawn_blocking(move || {
        let found = store.patient_index_warnings(wards.as_deref(), now, None)?;
        let detail = format!(
            "{}: {} found",
            audit_detail("patient index", &wards),
            found.len()
        );
        store.record_audit(&who, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(Ok(found))
    })
    .await;
    settled(result)
}

/// `GET /api/patient-index[?ward=W]`: one MRN on charts that disagree about the patient, and
/// dates no stay can have; `{as_of, warnings: [{kind, mrn, charts}]}` (ids only).
#[utoipa::path(
    get,
    operation_id = "records_patient_index",
    path = "/api/patient-index",
    tag = "charts",
    summary = "Patient-index warnings: one MRN on charts that disagree, implausible dates",
    params(("ward" = Option<String>, Query, description = "one ward of the token's (default: all of them)"), ("limit" = Option<usize>, Query, description = "rows a page (1 to 10,000; default 1,000)"), ("offset" = Option<usize>, Query, description = "rows to skip")),
    responses((status = 200, description = "the warnings (ids only)", body = PatientIndex), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError))
)]
pub async fn patient_index(
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
    match index_warnings(app.store.clone(), &access, who, &query, now).await {
        Ok(warnings) => paging.respond(&uri, warnings, |warnings| {
            Json(PatientIndex {
                as_of: now,
                warnings,
            })
            .into_response()
        }),
        Err(r) => r.into_response(),
    }
}
