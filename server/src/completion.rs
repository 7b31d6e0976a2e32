//! Chart completion, one chart at a time: everything the record still lacks (the rules'
//! deficiencies with the office's routing and acknowledgements), and deficiencies added by
//! hand for what the rules cannot see (a paper consent unsigned, a dictation never
//! transcribed). A hand-added deficiency is written into the chart as the signed-in person's
//! change (a `queries` record of kind `deficiency`), so it reaches the physician's tablet; the
//! physician answers it, or the office withdraws it once it is put right.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{
    ChartError, ChartId, ChartView, NewQuery, QueryKind, QueryStatus, QueryView, Role, Staff,
    Timestamp,
};
use chartsync_core::store::{
    Actor, ChartStore, DeficiencyFilter, StaffMember, StoreError, WorklistItem,
};
use serde::{Deserialize, Serialize};

use crate::api::actor;
use crate::auth::Access;
use crate::coding::{chart_id, on_wards, read_view, refused};
use crate::records::{settled, works_deficiencies, Refusal};
use crate::AppState;

fn refused_role() -> Refusal {
    Refusal(
        StatusCode::FORBIDDEN,
        "chart completion is worked by records technicians and supervisors".into(),
    )
}

/// A chart's completion: the chart, its open deficiencies from the index (soonest due
/// first, with who they are routed to), and its deficiencies added by hand still open.
pub(crate) struct Completion {
    pub view: ChartView,
    pub deficiencies: Vec<WorklistItem>,
    pub staff: Vec<StaffMember>,
}

impl Completion {
    /// The deficiencies added by hand that are still open.
    pub fn by_hand(&self) -> impl Iterator<Item = &QueryView> {
        self.view
            .queries
            .iter()
            .filter(|q| q.kind == QueryKind::Deficiency && q.status == QueryStatus::Open)
    }
}

/// Reads chart `id`'s completion for a records technician or supervisor on its ward, audited
/// as a read of the chart.
pub(crate) async fn completion(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: ChartId,
) -> Result<Completion, Refusal> {
    if !works_deficiencies(access.role) {
        return Err(refused_role());
    }
    let view = read_view(store.clone(), access, who, id, "chart completion").await?;
    let result = tokio::task::spawn_blocking(move || {
        let filter = DeficiencyFilter {
            chart: Some(id),
            ..DeficiencyFilter::default()
        };
        let deficiencies = store.worklist(&filter, Timestamp::now())?;
        let staff = store.staff()?;
        Ok::<_, StoreError>(Ok((deficiencies, staff)))
    })
    .await;
    let (deficiencies, staff) = settled(result)?;
    Ok(Completion {
        view,
        deficiencies,
        staff,
    })
}

/// The records office's work on a chart's hand-added deficiencies.
pub(crate) enum ByHand {
    /// `what` is missing or wrong, for the physician `to` to put right, about an entry of the
    /// chart if `about` names one.
    Add {
        what: String,
        to: String,
        about: Option<String>,
    },
    /// Put right: the deficiency `query` leaves the worklist.
    Withdraw { query: String },
}

/// Does `work` on chart `id` as the signed-in person from `device`; the deficiency's id.
pub(crate) async fn by_hand(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    device: &'static str,
    id: ChartId,
    work: ByHand,
) -> Result<String, Refusal> {
    if !works_deficiencies(access.role) {
        return Err(refused_role());
    }
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = on_wards(&store, &access, &who, id, "chart completion")? {
            return Ok(Err(r));
        }
        if let ByHand::Add { to, .. } = &work {
            let physician = store
                .staff_member(to)?
                .is_some_and(|(m, _)| m.role == Role::Physician);
            if !physician {
                return Ok(Err(Refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{to} is not a physician in the staff directory"),
                )));
            }
        }
        let by = Staff::new(access.user.clone(), access.role, device);
        let now = Timestamp::now();
        let done = store.update_as(&who, id, |chart| match work {
            ByHand::Add { what, to, about } => {
                if let Some(entry) = &about {
                    if !chart.view()?.entries.iter().any(|e| &e.id == entry) {
                        return Err(ChartError::NotFound {
                            what: "entry",
                            id: entry.clone(),
                        });
                    }
                }
                chart.add_deficiency(
                    &by,
                    now,
                    NewQuery {
                        question: what.trim().to_string(),
                        to,
                        about,
                    },
                )
            }
            ByHand::Withdraw { query } => {
                let added_by_hand = chart
                    .view()?
                    .queries
                    .iter()
                    .any(|q| q.id == query && q.kind == QueryKind::Deficiency);
                if !added_by_hand {
                    return Err(ChartError::NotFound {
                        what: "deficiency added by hand",
                        id: query,
                    });
                }
                chart.withdraw_query(&by, now, &query).map(|()| query)
            }
        });
        Ok::<_, StoreError>(match done {
            Ok(id) => Ok(id),
            Err(StoreError::Chart { error, .. }) => Err(refused(error)),
            Err(e) => return Err(e),
        })
    })
    .await;
    settled(result)
}

/// A chart's completion over REST: its open deficiencies, and those added by hand with what
/// they say (the only free text here, as the office wrote it).
#[derive(utoipa::ToSchema, Serialize)]
struct CompletionBody<'a> {
    chart: ChartId,
    mrn: &'a str,
    deficiencies: &'a [WorklistItem],
    added_by_hand: Vec<&'a QueryView>,
}

/// `GET /api/charts/{id}/completion`: what chart `id` still lacks, soonest due first.
#[utoipa::path(
    get,
    operation_id = "completion_show",
    path = "/api/charts/{id}/completion",
    tag = "worklist",
    summary = "What one chart still lacks, and its deficiencies added by hand",
    params(("id" = String, Path, description = "the chart's id")),
    responses((status = 200, description = "the chart's completion", body = CompletionBody), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError))
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
    match completion(app.store.clone(), &access, who, id).await {
        Ok(c) => Json(CompletionBody {
            chart: id,
            mrn: &c.view.patient.mrn,
            deficiencies: &c.deficiencies,
            added_by_hand: c.by_hand().collect(),
        })
        .into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    what: String,
    /// The physician's user id.
    to: String,
    #[serde(default)]
    about: Option<String>,
}

/// `POST /api/charts/{id}/deficiencies` `{what, to, about?}`: a deficiency added by hand, for
/// the physician `to`; 201 `{id}`.
#[utoipa::path(
    post,
    operation_id = "completion_add",
    path = "/api/charts/{id}/deficiencies",
    tag = "worklist",
    summary = "A deficiency added by hand, for a physician",
    params(("id" = String, Path, description = "the chart's id")),
    request_body = Add,
    responses((status = 201, description = "its id", body = crate::openapi::Created), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 422, description = "a field is missing or wrong", body = crate::openapi::ApiError))
)]
pub async fn add(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Add>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    let work = ByHand::Add {
        what: body.what,
        to: body.to,
        about: body.about.filter(|a| !a.is_empty()),
    };
    match by_hand(app.store.clone(), &access, who, "api", id, work).await {
        Ok(d) => (StatusCode::CREATED, Json(serde_json::json!({ "id": d }))).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `POST /api/charts/{id}/deficiencies/{deficiency}/withdraw`: a hand-added deficiency put
/// right; 204.
#[utoipa::path(
    post,
    operation_id = "completion_withdraw",
    path = "/api/charts/{id}/deficiencies/{deficiency}/withdraw",
    tag = "worklist",
    summary = "A hand-added deficiency put right",
    params(("id" = String, Path, description = "the chart's id"), ("deficiency" = String, Path, description = "its id")),
    responses((status = 204, description = "withdrawn"), (status = 400, description = "a malformed request", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such record, or not on the person's wards", body = crate::openapi::ApiError), (status = 409, description = "not at this step (already answered, extended once, …)", body = crate::openapi::ApiError))
)]
pub async fn withdraw(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, query)): Path<(String, String)>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    match by_hand(
        app.store.clone(),
        &access,
        who,
        "api",
        id,
        ByHand::Withdraw { query },
    )
    .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}
