//! The records console at `/console` (docs/adr/0010-records-console.md): pages rendered on
//! the server, no script beyond the idle-logoff warning, a strict Content-Security-Policy,
//! sign-in with the staff directory's passwords, a session cookie and a CSRF token on every
//! form. Records staff only (technicians, coders, records supervisors, administrators); every
//! read is audited as the REST API's are.

mod accounting;
mod aging;
mod charts;
mod coding;
mod completion;
mod delinquency;
pub mod import;
mod pages;
mod physicians;
mod review;
mod roi;
pub mod session;
mod worklist;

use askama::Template;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chartsync_core::chart::Role;
use chartsync_core::store::{Actor, AuditAction, CredentialStatus, StoreError};
use serde::Deserialize;

use crate::auth::Access;
use crate::AppState;
use session::{Found, Session};

/// The session cookie's name.
const COOKIE: &str = "chartsync_console";

/// The policy every console response carries: nothing but the server's own stylesheet, its
/// own one script (which may ask the server, and only it, how an import is going), and forms
/// posted back to it; no frames, no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

const STYLESHEET: &str = include_str!("../../assets/console.css");
const SCRIPT: &str = include_str!("../../assets/console.js");

/// The console's pages. `max_attachment_bytes` (`serve --max-attachment-mib`) bounds the
/// scanned-document form's body, as it does the REST API's: a larger one is refused as it
/// arrives, not read whole first.
pub fn routes(max_attachment_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/worklist", get(worklist::show))
        .route("/console/delinquency", get(delinquency::show))
        .route(
            "/console/charts",
            get(charts::search_page).post(charts::search),
        )
        .route("/console/chart", get(charts::view))
        .route("/console/chart/audit", get(charts::audit_trail))
        .route("/console/chart/file", get(charts::file))
        .route(
            "/console/chart/attach",
            post(charts::attach).layer(axum::extract::DefaultBodyLimit::max(
                crate::attachments::form_limit(max_attachment_bytes),
            )),
        )
        .route(
            "/console/audit",
            get(charts::trails).post(charts::patient_trail),
        )
        .route("/console/patient-index", get(charts::patient_index))
        .route(
            "/console/accounting",
            get(accounting::list).post(accounting::log),
        )
        .route("/console/accounting/patient", post(accounting::patient))
        .route(
            "/console/accounting/request",
            get(accounting::request).post(accounting::step),
        )
        .route("/console/accounting/letter", get(accounting::letter))
        .route("/console/accounting/notice", get(accounting::notice))
        .route("/console/review", get(review::queues))
        .route(
            "/console/review/hold",
            get(review::hold).post(review::decide),
        )
        .route("/console/review/break-glass", post(review::review_grant))
        .route("/console/completion", get(completion::show))
        .route("/console/completion/add", post(completion::add))
        .route("/console/completion/withdraw", post(completion::withdraw))
        .route("/console/physicians", get(physicians::list))
        .route("/console/physicians/notice", get(physicians::notice))
        .route(
            "/console/import",
            get(import::page)
                .post(import::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    import::MAX_UPLOAD_BYTES + 64 * 1024,
                )),
        )
        .route("/console/import/job", get(import::job))
        .route("/console/import/status", get(import::status))
        .route("/console/roi", get(roi::log))
        .route("/console/roi/chart", get(roi::chart).post(roi::work))
        .route("/console/roi/prepare", post(roi::prepare))
        .route("/console/roi/notice", get(roi::notice))
        .route("/console/coding", get(coding::queue))
        .route("/console/coding/chart", get(coding::chart))
        .route("/console/coding/search", post(coding::search))
        .route("/console/coding/assign", post(coding::assign))
        .route("/console/coding/change", post(coding::change))
        .route("/console/worklist/assign", post(worklist::assign))
        .route(
            "/console/worklist/acknowledge",
            get(worklist::acknowledge_page).post(worklist::acknowledge),
        )
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`: nothing of a console URL reaches another site, and the browser still
    // sends the console's own Origin with its forms (under `no-referrer` it sends "null",
    // which the Origin check must refuse).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages hold patient data: not kept by the browser or anything between.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// Whether `role` works in the records office (and so may use the console).
pub fn records_staff(role: Role) -> bool {
    matches!(
        role,
        Role::Technician | Role::Coder | Role::RecordsSupervisor | Role::Admin
    )
}

pub(super) fn cookie_value<'a>(headers: &'a HeaderMap) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The cookie for a new session: not readable by script, sent only to the console and only
/// from its own pages; `Secure` when the request came over TLS (at a proxy in front).
fn session_cookie(id: &str, headers: &HeaderMap) -> String {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{}",
        if tls { "; Secure" } else { "" }
    )
}

fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A form posted from another site is refused, whatever it carries: browsers send `Origin`
/// with every POST, and it must name this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => {
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host.is_some() && origin_host == host
        }
        Some(Err(_)) => false,
    }
}

/// Compares without stopping at the first difference.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in member of the records staff, whose directory entry still stands.
pub struct Signed {
    pub id: String,
    pub session: Session,
}

impl Signed {
    fn actor(&self) -> Actor {
        Actor {
            user: self.session.user.clone(),
            role: self.session.role.token().to_string(),
            device: "console".into(),
        }
    }

    fn access(&self) -> Access {
        Access {
            user: self.session.user.clone(),
            role: self.session.role,
            wards: self.session.wards.clone(),
            expires_at: 0,
            device: None,
            quarantined: false,
        }
    }

    /// The frame of a page shown to this person.
    fn frame(&self, app: &AppState) -> pages::Frame<'_> {
        pages::Frame {
            person: &self.session.user,
            role: self.session.role.token(),
            csrf: &self.session.csrf,
            idle_seconds: app.console.idle().as_secs(),
        }
    }

    /// The form came from the console's own page: this session's CSRF token, and no other
    /// site's Origin.
    fn check(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Response> {
        if same_origin(headers) && same_token(csrf, &self.session.csrf) {
            Ok(())
        } else {
            Err(refused_page(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from the console. Go back, reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Signed, Response> {
        let Some(id) = cookie_value(&parts.headers).map(str::to_string) else {
            return Err(Redirect::to("/console/sign-in").into_response());
        };
        let session = match app.console.touch(&id) {
            Found::Active(s) => s,
            Found::Idle => {
                return Err((
                    [(header::SET_COOKIE, cleared_cookie())],
                    Redirect::to("/console/sign-in?ended=idle"),
                )
                    .into_response())
            }
            Found::None => return Err(Redirect::to("/console/sign-in").into_response()),
        };
        // A person revoked, or given another role, since signing in is signed out now.
        let store = app.store.clone();
        let user = session.user.clone();
        let member = tokio::task::spawn_blocking(move || store.staff_member(&user))
            .await
            .map_err(crate::api::internal)?
            .map_err(crate::api::internal)?;
        let stands = member.is_some_and(|(m, _)| {
            m.status == CredentialStatus::Active
                && m.role == session.role
                && m.wards == session.wards
        });
        if !stands {
            app.console.close(&id);
            return Err((
                [(header::SET_COOKIE, cleared_cookie())],
                Redirect::to("/console/sign-in?ended=revoked"),
            )
                .into_response());
        }
        Ok(Signed { id, session })
    }
}

/// The wards a page's ward filter offers, each with whether it is the one shown; none for a
/// person of every ward (the filter is then a text field).
fn ward_choices(access: &Access, shown: &str) -> Vec<(String, bool)> {
    if access.wards.iter().any(|w| w == crate::auth::ALL_WARDS) {
        Vec::new()
    } else {
        access
            .wards
            .iter()
            .map(|w| (w.clone(), w == shown))
            .collect()
    }
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => crate::api::internal(e),
    }
}

fn refused_page(status: StatusCode, message: &str) -> Response {
    (status, render(pages::Refused { message })).into_response()
}

async fn home(signed: Result<Signed, Response>) -> Response {
    match signed {
        Ok(_) => Redirect::to("/console/worklist").into_response(),
        Err(to_sign_in) => to_sign_in,
    }
}

/// "15 minutes", "1 minute", "90 seconds": the idle limit as the sign-in page says it.
fn spoken_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 60 && secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[derive(Deserialize)]
struct SignInQuery {
    ended: Option<String>,
}

async fn sign_in_page(Query(q): Query<SignInQuery>, State(app): State<AppState>) -> Response {
    let notice = match q.ended.as_deref() {
        Some("idle") => Some(format!(
            "You were signed out after {} without activity.",
            spoken_duration(app.console.idle())
        )),
        Some("out") => Some("You are signed out.".to_string()),
        Some("revoked") => {
            Some("You were signed out: your access to the records office changed.".to_string())
        }
        _ => None,
    };
    render(pages::SignIn {
        notice: notice.as_deref(),
        error: None,
        user: "",
    })
}

#[derive(Deserialize)]
struct SignInForm {
    user: String,
    password: String,
}

async fn sign_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !same_origin(&headers) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "This sign-in did not come from the console.",
        );
    }
    let user = form.user.trim().to_string();
    let store = app.store.clone();
    let checked_user = user.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let found = store.staff_member(&checked_user)?;
        let (member, phc) = match found {
            Some((m, phc)) => (Some(m), phc),
            None => (None, None),
        };
        // Checked whoever asks: someone unknown costs the same as a wrong password.
        let matches = crate::directory::password_matches(&form.password, phc.as_deref());
        Ok::<_, StoreError>(member.filter(|m| matches && m.status == CredentialStatus::Active))
    })
    .await;
    let member = match checked {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    let Some(member) = member else {
        tracing::info!("a console sign-in was refused");
        let page = render(pages::SignIn {
            notice: None,
            error: Some("The user name or password is not right, or your access was revoked."),
            user: &printable(&user),
        });
        return (StatusCode::UNAUTHORIZED, page).into_response();
    };
    if !records_staff(member.role) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "The records console is for records staff. Ward staff work on the ward tablets.",
        );
    }
    let Some((id, _)) = app
        .console
        .open(&member.user, member.role, member.wards.clone())
    else {
        return refused_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The console has as many people signed in as it takes. Try again in a few minutes.",
        );
    };
    let actor = Actor {
        user: member.user.clone(),
        role: member.role.token().to_string(),
        device: "console".into(),
    };
    let store = app.store.clone();
    let audited = tokio::task::spawn_blocking(move || {
        store.record_audit(&actor, AuditAction::SignIn, None, Some("console"))
    })
    .await;
    if !matches!(audited, Ok(Ok(()))) {
        app.console.close(&id);
        return crate::api::internal("the sign-in could not be audited");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session_cookie(&id, &headers)),
            (header::LOCATION, "/console/worklist".to_string()),
        ],
    )
        .into_response()
}

/// A user name as typed, fit to show back: identifiers are short and plain.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[derive(Deserialize)]
struct SignOutForm {
    csrf: String,
    /// `idle`: the page's idle timer signed the person out, not the person.
    #[serde(default)]
    reason: String,
}

async fn sign_out(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    app.console.close(&signed.id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cleared_cookie()),
            (
                header::LOCATION,
                if form.reason == "idle" {
                    "/console/sign-in?ended=idle"
                } else {
                    "/console/sign-in?ended=out"
                }
                .to_string(),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_from_another_site_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("records.example:8080"),
        );
        assert!(same_origin(&h), "no Origin: a same-origin navigation");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://records.example:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h), "a sandboxed or file page");
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_tokens_compare_whole() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; chartsync_console=abc; b=2"),
        );
        assert_eq!(cookie_value(&h), Some("abc"));
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abcd", "abc"));
    }
}
