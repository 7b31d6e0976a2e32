//! Importing charts from the console: a records technician uploads the admissions system's
//! file (the same JSON or NDJSON `chartsync-records import` takes), and the import runs on the
//! server while its page shows how far it has got (checking every item, then writing them all
//! in one transaction). The page polls a small status document; without script, a Refresh
//! link does the same. Nothing is written unless every item is right.

use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chartsync_core::chart::Timestamp;
use serde::{Deserialize, Serialize};

use super::{pages, refused_page, render, Signed};
use crate::import::{Failure, Phase};
use crate::records::works_deficiencies;
use crate::AppState;

/// The largest file the console takes (a day's admissions are far smaller; the CLI takes any).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Jobs kept for their pages: the newest, finished or not.
const KEPT: usize = 50;

/// Where an import stands, as its page and its status document show it.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// `checking`, `importing`, `done` or `failed`.
    pub phase: &'static str,
    pub done: usize,
    pub total: usize,
    /// When done: the charts written, and the patient-index warnings about them.
    pub charts: usize,
    pub warnings: usize,
    /// When failed: why (a line and a reason; never patient data).
    pub error: Option<String>,
    #[serde(skip)]
    pub owner: String,
    #[serde(skip)]
    pub file: String,
    #[serde(skip)]
    pub started: Timestamp,
}

impl Progress {
    pub fn finished(&self) -> bool {
        matches!(self.phase, "done" | "failed")
    }
}

/// The console's import jobs since the server started, by id.
#[derive(Default)]
pub struct Imports {
    jobs: Mutex<Vec<(String, Arc<Mutex<Progress>>)>>,
}

impl Imports {
    fn start(&self, owner: &str, file: &str) -> (String, Arc<Mutex<Progress>>) {
        let id = uuid::Uuid::new_v4().to_string();
        let job = Arc::new(Mutex::new(Progress {
            phase: "checking",
            done: 0,
            total: 0,
            charts: 0,
            warnings: 0,
            error: None,
            owner: owner.to_string(),
            file: file.to_string(),
            started: Timestamp::now(),
        }));
        let mut jobs = self.jobs.lock().unwrap();
        jobs.push((id.clone(), job.clone()));
        if jobs.len() > KEPT {
            // The oldest finished one goes; a running one stays.
            if let Some(at) = jobs.iter().position(|(_, j)| j.lock().unwrap().finished()) {
                jobs.remove(at);
            }
        }
        (id, job)
    }

    /// Job `id` as it stands, if `owner` started it.
    fn of(&self, id: &str, owner: &str) -> Option<Progress> {
        let jobs = self.jobs.lock().unwrap();
        jobs.iter()
            .find(|(j, _)| j == id)
            .map(|(_, p)| p.lock().unwrap().clone())
            .filter(|p| p.owner == owner)
    }

    /// `owner`'s jobs, newest first.
    fn mine(&self, owner: &str) -> Vec<(String, Progress)> {
        let jobs = self.jobs.lock().unwrap();
        jobs.iter()
            .rev()
            .map(|(id, p)| (id.clone(), p.lock().unwrap().clone()))
            .filter(|(_, p)| p.owner == owner)
            .collect()
    }
}

fn refused_role() -> Response {
    refused_page(
        StatusCode::FORBIDDEN,
        "Charts are imported by records technicians and supervisors.",
    )
}

/// `GET /console/import`: the upload form, and the person's imports since the server started.
pub(super) async fn page(State(app): State<AppState>, signed: Signed) -> Response {
    if !works_deficiencies(signed.session.role) {
        return refused_role();
    }
    let jobs: Vec<pages::ImportRow> = app
        .imports
        .mine(&signed.session.user)
        .into_iter()
        .map(|(id, p)| pages::ImportRow::of(&id, &p))
        .collect();
    render(pages::ImportPage {
        frame: signed.frame(&app),
        max_mib: MAX_UPLOAD_BYTES / (1024 * 1024),
        jobs: &jobs,
    })
}

/// `POST /console/import` (multipart: `csrf`, `file`): starts an import and shows its page.
pub(super) async fn upload(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if !works_deficiencies(signed.session.role) {
        return refused_role();
    }
    let mut csrf = String::new();
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let file_name = field.file_name().unwrap_or("").to_string();
                let bytes = match field.bytes().await {
                    Ok(b) => b,
                    Err(_) => {
                        return refused_page(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!(
                                "The file could not be read whole: files up to {} MiB are taken here; a larger one goes through chartsync-records import.",
                                MAX_UPLOAD_BYTES / (1024 * 1024)
                            ),
                        )
                    }
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
                    "file" => file = Some((file_name, bytes.to_vec())),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return refused_page(
                    StatusCode::BAD_REQUEST,
                    "The upload did not arrive whole. Choose the file and try again.",
                )
            }
        }
    }
    if let Err(refused) = signed.check(&headers, &csrf) {
        return refused;
    }
    let Some((name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return refused_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a file of charts to import.",
        );
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return refused_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The file is not UTF-8 text: export it from the admissions system as JSON.",
        );
    };
    // The file's own name, shortened, to tell the person's imports apart (not logged).
    let name: String = name.chars().take(80).collect();
    let (id, job) = app.imports.start(&signed.session.user, &name);
    let store = app.store.clone();
    let access = signed.access();
    let actor = signed.actor();
    tokio::task::spawn_blocking(move || {
        let progress = |phase: Phase, done: usize, total: usize| {
            let mut p = job.lock().unwrap();
            p.phase = match phase {
                Phase::Checking => "checking",
                Phase::Importing => "importing",
            };
            p.done = done;
            p.total = total;
        };
        let outcome = crate::import::import(
            &store,
            &actor,
            &text,
            |ward| access.may_see_ward(ward),
            progress,
        );
        let mut p = job.lock().unwrap();
        match outcome {
            Ok(imported) => {
                p.phase = "done";
                p.charts = imported.charts.len();
                p.warnings = imported.warnings.len();
                tracing::info!(charts = p.charts, user = %p.owner, "charts imported from the console");
            }
            Err(Failure::Empty) => {
                p.phase = "failed";
                p.error = Some("The file holds no chart; nothing was imported.".into());
            }
            Err(Failure::Line { line, reason }) => {
                p.phase = "failed";
                p.error = Some(format!("Line {line}: {reason}; nothing was imported."));
            }
            Err(Failure::Store(e)) => {
                tracing::error!(error = %e, "a console import failed in the store");
                p.phase = "failed";
                p.error =
                    Some("The server could not write its store; nothing was imported.".into());
            }
        }
    });
    Redirect::to(&format!("/console/import/job?id={id}")).into_response()
}

#[derive(Deserialize)]
pub(super) struct JobQuery {
    id: String,
}

/// `GET /console/import/job?id=…`: an import's progress, or what it came to.
pub(super) async fn job(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<JobQuery>,
) -> Response {
    let Some(p) = app.imports.of(&q.id, &signed.session.user) else {
        return refused_page(StatusCode::NOT_FOUND, "No import of yours by that id.");
    };
    render(pages::ImportJob {
        frame: signed.frame(&app),
        id: &q.id,
        row: &pages::ImportRow::of(&q.id, &p),
        progress: &p,
    })
}

/// `GET /console/import/status?id=…`: the progress as JSON, for the page's script. It reads
/// the session without counting as use: a page left polling still signs out when idle.
pub(super) async fn status(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<JobQuery>,
) -> Response {
    let session = super::cookie_value(&headers).and_then(|id| app.console.peek(id));
    let Some(session) = session else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match app.imports.of(&q.id, &session.user) {
        Some(p) => Json(p).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
