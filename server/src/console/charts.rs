//! Finding a chart (by MRN, name, date of birth or a day the patient was in: a POST, so none
//! of it is in a URL) and reading one: the read-only chart viewer with its stay, its signed
//! entries and what amended them, conflicting values with who wrote each, and its forms.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chartsync_core::chart::{
    ChartView, DocumentType, EntryStatus, EventKind, MediaType, Timestamp,
};
use chartsync_core::store::{ChartSearch, StoreError};
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::records::reads_records_statistics;
use crate::AppState;

/// One chart found, as the results list it.
pub struct HitRow {
    pub chart: String,
    pub mrn: String,
    pub patient: String,
    pub birth_date: String,
    pub sex: String,
    pub ward: String,
    pub status: String,
    pub admitted: String,
    pub discharged: String,
}

impl HitRow {
    fn of(h: &chartsync_core::store::ChartHit, when: fn(Timestamp) -> String) -> HitRow {
        HitRow {
            chart: h.chart.to_string(),
            mrn: h.mrn.clone(),
            patient: format!("{}, {}", h.family_name, h.given_names),
            birth_date: h.birth_date.clone().unwrap_or_default(),
            sex: h.sex.map(|s| pages::words(s.token())).unwrap_or_default(),
            ward: h.ward.clone(),
            status: pages::words(h.status.token()),
            admitted: when(h.admitted_at),
            discharged: h.discharged_at.map(when).unwrap_or_default(),
        }
    }
}

/// What the search form holds, and shows again with its results.
#[derive(Default, Deserialize)]
pub(super) struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pub mrn: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub visit_date: String,
}

fn page(
    app: &AppState,
    signed: &Signed,
    form: &SearchForm,
    found: Option<(&[HitRow], u32)>,
    error: Option<&str>,
) -> Response {
    render(pages::FindChart {
        frame: signed.frame(app),
        mrn: &form.mrn,
        name: &form.name,
        birth_date: &form.birth_date,
        visit_date: &form.visit_date,
        error,
        hits: found.map(|(h, _)| h),
        total: found.map_or(0, |(_, t)| t),
        limit: crate::records::SEARCH_LIMIT,
    })
}

/// `GET /console/charts`: the search form.
pub(super) async fn search_page(State(app): State<AppState>, signed: Signed) -> Response {
    if !reads_records_statistics(signed.session.role) {
        return refused_page(StatusCode::FORBIDDEN, "Chart search is for records staff.");
    }
    page(&app, &signed, &SearchForm::default(), None, None)
}

/// `POST /console/charts`: the charts the form's fields find.
pub(super) async fn search(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<SearchForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let field = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let search = ChartSearch {
        mrn: field(&form.mrn),
        name: field(&form.name),
        birth_date: field(&form.birth_date),
        visit_date: field(&form.visit_date),
    };
    let found =
        crate::records::find_charts(app.store.clone(), &signed.access(), signed.actor(), search)
            .await;
    match found {
        Ok(found) => {
            let rows: Vec<HitRow> = found
                .hits
                .iter()
                .map(|h| HitRow::of(h, pages::day))
                .collect();
            page(&app, &signed, &form, Some((&rows, found.total)), None)
        }
        // What was wrong with the form is said on the form, which keeps what was typed.
        Err(r) if r.0 == StatusCode::BAD_REQUEST => {
            let why =
                r.1.replace("birth_date", "date of birth")
                    .replace("visit_date", "visit date");
            (
                StatusCode::BAD_REQUEST,
                page(&app, &signed, &form, None, Some(&why)),
            )
                .into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

use axum::response::IntoResponse;

#[derive(Deserialize)]
pub(super) struct ChartQuery {
    id: String,
}

pub struct EntryRow {
    pub kind: String,
    pub when: String,
    pub author: String,
    pub status: String,
    /// "dr.okafor (author, 2026-11-02 09:00 UTC)", each signature.
    pub signatures: Vec<String>,
    /// The body, or the value with its unit.
    pub text: String,
    pub edited_after_signing: bool,
    pub amendments: Vec<AmendmentRow>,
    pub struck: bool,
    /// A scanned document's file: (hash, "PDF, 3 pages, 47 KB").
    pub file: Option<(String, String)>,
    /// The server lacks that file (lost in a restore): to be filed again.
    pub file_missing: bool,
}

pub struct AmendmentRow {
    pub kind: String,
    pub by: String,
    pub at: String,
    pub reason: String,
    pub body: String,
}

pub struct ConflictRow {
    pub path: String,
    /// Each value (as JSON text) and who wrote it.
    pub values: Vec<(String, String)>,
}

pub struct FormRow {
    pub kind: String,
    pub created: String,
    pub signatures: String,
    pub missing: String,
}

pub struct ChartPage {
    pub mrn: String,
    pub patient: String,
    pub birth_date: String,
    pub sex: String,
    pub ward: String,
    pub bed: String,
    pub class: String,
    pub attending: String,
    pub admitted: String,
    pub discharged: String,
    pub disposition: String,
    pub events: Vec<(String, String, String, String)>,
    pub entries: Vec<EntryRow>,
    pub conflicts: Vec<ConflictRow>,
    pub forms: Vec<FormRow>,
    pub codes: usize,
}

impl ChartPage {
    fn of(v: &ChartView) -> ChartPage {
        let p = &v.patient;
        let e = &v.encounter;
        let place = |ward: &Option<String>, bed: &Option<String>| match (ward, bed) {
            (Some(w), Some(b)) => format!("{w} {b}"),
            (Some(w), None) => w.clone(),
            _ => String::new(),
        };
        let events = v
            .events
            .iter()
            .map(|ev| {
                let what = match ev.kind {
                    EventKind::Transfer => format!(
                        "from {} to {}",
                        place(&ev.from_ward, &ev.from_bed),
                        place(&ev.ward, &ev.bed)
                    ),
                    EventKind::Discharge => ev
                        .disposition
                        .as_deref()
                        .map(pages::words)
                        .unwrap_or_default(),
                    EventKind::ChangeOfInformation => ev.changed_fields.join(", "),
                    EventKind::Admit => place(&ev.ward, &ev.bed),
                };
                (
                    pages::words(ev.kind.token()),
                    pages::minute(ev.at),
                    ev.by.clone(),
                    what,
                )
            })
            .collect();
        let entries = v
            .entries
            .iter()
            .map(|en| {
                let c = &en.content;
                let text = match (&c.value, c.body.is_empty()) {
                    (Some(value), _) => format!(
                        "{value}{}{}",
                        c.unit.as_deref().map_or("", |_| " "),
                        c.unit.as_deref().unwrap_or("")
                    ),
                    (None, _) => c.body.clone(),
                };
                // A scanned document reads as its title, then its description.
                let text = match &c.attachment {
                    Some(a) if text.is_empty() => a.title.clone(),
                    Some(a) => format!("{}: {text}", a.title),
                    None => text,
                };
                EntryRow {
                    kind: pages::entry_label(c.kind),
                    when: pages::minute(c.effective_at.unwrap_or(c.recorded_at)),
                    author: format!("{} ({})", c.author, c.role.token()),
                    status: pages::words(en.status.token()),
                    signatures: v
                        .signatures
                        .iter()
                        .filter(|s| s.entry_id == en.id)
                        .map(|s| {
                            format!(
                                "{} ({}, {})",
                                s.signer,
                                pages::words(s.meaning.token()).to_lowercase(),
                                pages::minute(s.signed_at)
                            )
                        })
                        .collect(),
                    text,
                    edited_after_signing: en.edited_after_signing,
                    amendments: v
                        .amendments
                        .iter()
                        .filter(|a| a.target_entry_id == en.id)
                        .map(|a| AmendmentRow {
                            kind: pages::words(a.kind.token()),
                            by: format!("{} ({})", a.author, a.role.token()),
                            at: pages::minute(a.at),
                            reason: a.reason.clone(),
                            body: a.body.clone(),
                        })
                        .collect(),
                    struck: en.status == EntryStatus::EnteredInError,
                    file: c.attachment.as_ref().map(|a| {
                        let kind = match a.media_type {
                            MediaType::Pdf => "PDF",
                            MediaType::Jpeg => "JPEG image",
                            MediaType::Png => "PNG image",
                        };
                        let pages = if a.pages == 1 { "page" } else { "pages" };
                        let size = a.size.div_ceil(1024);
                        (
                            a.hash.clone(),
                            format!("{kind}, {} {pages}, {size} KB", a.pages),
                        )
                    }),
                    file_missing: false,
                }
            })
            .collect();
        let conflicts = v
            .conflicts
            .iter()
            .map(|c| ConflictRow {
                path: c.path.join(" › "),
                values: c
                    .values
                    .iter()
                    .map(|value| {
                        let who = match (&value.user, value.role, &value.device) {
                            (Some(u), Some(r), Some(d)) => format!("{u} ({}) on {d}", r.token()),
                            (Some(u), _, _) => u.clone(),
                            _ => "a writer the change does not name".into(),
                        };
                        (value.value.0.to_string(), who)
                    })
                    .collect(),
            })
            .collect();
        let forms = v
            .forms
            .iter()
            .map(|f| FormRow {
                kind: pages::words(f.form_type.token()),
                created: format!("{} by {}", pages::minute(f.created_at), f.created_by),
                signatures: f
                    .signatures
                    .iter()
                    .map(|s| format!("{} ({}, {})", s.signer, s.role, pages::minute(s.at)))
                    .collect::<Vec<_>>()
                    .join("; "),
                missing: f.missing_signers.join(", "),
            })
            .collect();
        ChartPage {
            mrn: p.mrn.clone(),
            patient: format!("{}, {}", p.family_name, p.given_names),
            birth_date: p.birth_date.clone().unwrap_or_default(),
            sex: p.sex.map(|s| pages::words(s.token())).unwrap_or_default(),
            ward: e.ward.clone(),
            bed: e.bed.clone().unwrap_or_default(),
            class: pages::words(e.class.token()),
            attending: e.attending.clone().unwrap_or_default(),
            admitted: pages::minute(e.admitted_at),
            discharged: e.discharged_at.map(pages::minute).unwrap_or_default(),
            disposition: e
                .discharge_disposition
                .as_deref()
                .map(pages::words)
                .unwrap_or_default(),
            events,
            entries,
            conflicts,
            forms,
            codes: v.coding.len(),
        }
    }
}

/// The chart the viewer's page names, for records staff.
fn viewed(signed: &Signed, id: &str) -> Result<chartsync_core::chart::ChartId, Response> {
    if !reads_records_statistics(signed.session.role) {
        return Err(refused_page(
            StatusCode::FORBIDDEN,
            "The chart viewer is for records staff.",
        ));
    }
    id.parse()
        .map_err(|_| refused_page(StatusCode::BAD_REQUEST, "That is not a chart id."))
}

/// `GET /console/chart?id=…`: one chart, read-only; audited as a read of it.
pub(super) async fn view(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    let id = match viewed(&signed, &q.id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let read = crate::coding::read_view(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
        "chart viewer",
    )
    .await;
    let view = match read {
        Ok(v) => v,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let mut chart = ChartPage::of(&view);
    let store = app.store.clone();
    let missing = tokio::task::spawn_blocking(move || store.missing_attachments(id))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    for e in &mut chart.entries {
        e.file_missing = e
            .file
            .as_ref()
            .is_some_and(|(hash, _)| missing.iter().any(|m| &m.hash == hash));
    }
    render(pages::Chart {
        frame: signed.frame(&app),
        id: &q.id,
        as_of: &pages::minute(Timestamp::now()),
        chart: &chart,
        document_types: document_types(),
        max_mib: app.max_attachment_bytes >> 20,
    })
}

/// One warning of the patient index, with the charts it is about as the office reads them.
pub struct WarningRow {
    pub words: String,
    pub mrn: String,
    pub charts: Vec<HitRow>,
}

/// `GET /console/patient-index[?ward=W]`: the patient-index warnings on the person's wards,
/// each with its charts' names, dates of birth and sexes side by side.
pub(super) async fn patient_index(
    State(app): State<AppState>,
    signed: Signed,
    Query(filters): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let access = signed.access();
    let ward: String = filters.get("ward").cloned().unwrap_or_default();
    let query: std::collections::HashMap<String, String> = filters
        .into_iter()
        .filter(|(k, v)| k == "ward" && !v.is_empty())
        .collect();
    let now = Timestamp::now();
    let warnings = match crate::records::index_warnings(
        app.store.clone(),
        &access,
        signed.actor(),
        &query,
        now,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let store = app.store.clone();
    let ids: Vec<Vec<chartsync_core::chart::ChartId>> =
        warnings.iter().map(|w| w.charts.clone()).collect();
    let hits = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|ids| store.chart_hits(ids))
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await;
    let hits = match hits {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    let rows: Vec<WarningRow> = warnings
        .iter()
        .zip(hits)
        .map(|(w, hits)| WarningRow {
            words: pages::words(w.kind.words()),
            mrn: w.mrn.clone(),
            charts: hits.iter().map(|h| HitRow::of(h, pages::minute)).collect(),
        })
        .collect();
    let ward_choices = super::ward_choices(&access, &ward);
    render(pages::PatientIndex {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &ward,
        ward_choices: &ward_choices,
        rows: &rows,
    })
}

/// One row of an audit trail as the console shows it.
pub struct AuditRow {
    /// The chart it names, if any (shown on a person's or a patient's trail).
    pub chart: String,
    pub at: String,
    pub who: String,
    pub action: String,
    pub changes: usize,
    pub detail: String,
}

/// `GET /console/chart/audit?id=…`: who did what to the chart, oldest first (records
/// supervisors and admins); reading it is audited too.
pub(super) async fn audit_trail(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    let Ok(id) = q.id.parse() else {
        return refused_page(StatusCode::BAD_REQUEST, "That is not a chart id.");
    };
    let trail = match crate::api::chart_audit_trail(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
    )
    .await
    {
        Ok(t) => t,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let rows = audit_rows(&trail);
    render(pages::AuditTrail {
        frame: signed.frame(&app),
        id: &q.id,
        as_of: &pages::minute(Timestamp::now()),
        rows: &rows,
    })
}

fn audit_rows(trail: &[chartsync_core::store::AuditRecord]) -> Vec<AuditRow> {
    trail
        .iter()
        .map(|a| AuditRow {
            chart: a.chart.map(|c| c.to_string()).unwrap_or_default(),
            at: pages::minute(a.at),
            who: format!("{} ({}) on {}", a.actor.user, a.actor.role, a.actor.device),
            action: pages::words(
                serde_json::to_value(a.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
                    .as_str(),
            ),
            changes: a.changes.len(),
            detail: a.detail.clone().unwrap_or_default(),
        })
        .collect()
}

#[derive(Default, Deserialize)]
pub(super) struct TrailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    mrn: String,
}

/// `GET /console/audit[?user=U]`: the form for a person's or a patient's trail, and a
/// person's trail when one is named (a staff id is not patient data).
pub(super) async fn trails(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<TrailForm>,
) -> Response {
    let user = q.user.trim().to_string();
    if user.is_empty() {
        return render(pages::Trails {
            frame: signed.frame(&app),
            user: "",
            mrn: "",
            heading: None,
            rows: &[],
        });
    }
    trail_page(
        &app,
        &signed,
        crate::api::Whose::User(user.clone()),
        &user,
        "",
    )
    .await
}

/// `POST /console/audit`: a patient's trail, by MRN (in the body, not the URL).
pub(super) async fn patient_trail(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<TrailForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let mrn = form.mrn.trim().to_string();
    trail_page(
        &app,
        &signed,
        crate::api::Whose::Patient(mrn.clone()),
        "",
        &mrn,
    )
    .await
}

async fn trail_page(
    app: &AppState,
    signed: &Signed,
    whose: crate::api::Whose,
    user: &str,
    mrn: &str,
) -> Response {
    let heading = match &whose {
        crate::api::Whose::User(u) => format!("What {u} did, newest first"),
        crate::api::Whose::Patient(m) => format!("Every chart of {m}, oldest first"),
    };
    match crate::api::audit_trail_of(app.store.clone(), &signed.access(), signed.actor(), whose)
        .await
    {
        Ok(trail) => render(pages::Trails {
            frame: signed.frame(app),
            user,
            mrn,
            heading: Some(&heading),
            rows: &audit_rows(&trail),
        }),
        Err(r) => refused_page(r.0, &r.1),
    }
}

/// The document types a form offers, as (token, words).
pub fn document_types() -> Vec<(&'static str, String)> {
    DocumentType::ALL
        .iter()
        .map(|t| (t.token(), pages::words(t.token())))
        .collect()
}

#[derive(Deserialize)]
pub(super) struct FileQuery {
    id: String,
    hash: String,
}

/// `GET /console/chart/file?id=…&hash=…`: a scanned document's file, shown by the browser;
/// audited as an opening of it.
pub(super) async fn file(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<FileQuery>,
) -> Response {
    let id = match viewed(&signed, &q.id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let read = crate::attachments::read(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
        q.hash.clone(),
    )
    .await;
    match read {
        Ok((media_type, bytes)) => {
            crate::attachments::download_response(&q.hash, media_type, bytes)
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

/// `POST /console/chart/attach?id=…` (multipart: `csrf`, `file`, `title`, `document_type`,
/// `document_date`, `description`): files a scanned document, then back to the chart.
pub(super) async fn attach(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Query(q): Query<ChartQuery>,
    form: axum::extract::Multipart,
) -> Response {
    let id = match viewed(&signed, &q.id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let up = match crate::attachments::Upload::read(form, app.max_attachment_bytes).await {
        Ok(up) => up,
        Err(r) => return refused_page(r.0, &r.1),
    };
    if let Err(refused) = signed.check(&headers, &up.csrf) {
        return refused;
    }
    let filed = crate::attachments::file(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        "records-console",
        id,
        up,
    )
    .await;
    match filed {
        Ok(_) => {
            axum::response::Redirect::to(&format!("/console/chart?id={}", q.id)).into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}
