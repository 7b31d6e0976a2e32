//! FHIR Bulk Data export (HL7 Bulk Data Access IG v2), authorised with SMART Backend Services
//! (docs/fhir.md, "Bulk Data export").
//!
//! - An administrator registers each system that may export, with its public keys (a JWK
//!   Set) and whether its exports are disclosures (an exchange partner) or the hospital's own
//!   use (its analytics): `POST /api/bulk-clients`.
//! - The system asks `POST /fhir/auth/token` for an access token with a client assertion: a
//!   JWT it signed (RS384 or ES384) naming itself (`iss`, `sub`), this endpoint (`aud`), a
//!   unique `jti` and an `exp` at most five minutes ahead. A bad signature, an unknown key, a
//!   reused `jti` or a revoked client is refused (`invalid_client`).
//! - With the token it kicks off `GET /fhir/Patient/$export` or `/fhir/Group/{ward}/$export`
//!   (`Prefer: respond-async`; `_outputFormat`, `_since`, `_type`), polls
//!   `/fhir/bulkstatus/{job}` (202 with `X-Progress` while it runs, then the manifest), and
//!   downloads the NDJSON files the manifest lists. `DELETE` on the status URL cancels or
//!   clears a job.
//! - Each chart exported is audited (`read`, "bulk export …"); for a client whose exports are
//!   disclosures, each is also in the patient's accounting of disclosures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use chartsync_core::chart::{DisclosurePurpose, Timestamp};
use chartsync_core::store::{
    Actor, AuditAction, BulkClient, BulkJob, ChartStore, NewBulkClient, StoreError,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{actor, error};
use crate::auth::{now_secs, Access};
use crate::AppState;

/// How long an access token lasts (SMART recommends at most five minutes).
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// How far ahead a client assertion's `exp` may be.
const ASSERTION_MAX_LIFE: u64 = 300;
/// Charts between two progress reports.
const PROGRESS_EVERY: usize = 100;
/// The most one NDJSON file holds before the next file of its type starts (`Observation.ndjson`,
/// `Observation.2.ndjson`, …). Each is written to the store as it fills, so an export of any
/// size holds one file a resource type in memory, and no file nears a database row's limit
/// (scanned documents' files travel inline in DocumentReferences).
const BULK_FILE_BYTES: usize = 64 << 20;
/// The resource types an export writes, in the order the manifest lists them.
pub const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "DocumentReference",
    "Composition",
    "Provenance",
    "AuditEvent",
    "Consent",
    "QuestionnaireResponse",
    "Task",
    "Communication",
    "Practitioner",
];

/// Runs store work off the async threads; a store failure is the server's own (500).
async fn off<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match crate::api::blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::api::internal(e)),
        Err(r) => Err(r),
    }
}

/// A FHIR OperationOutcome with one issue, as Bulk Data's errors are.
fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        Json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        })),
    )
        .into_response()
}

/// An OAuth 2.0 error (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The URL this server is reached at: `--public-url`, or else as the request says (`Host`,
/// and `X-Forwarded-Proto` behind a proxy that terminates TLS).
fn base_url(app: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &app.public_url {
        return url.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

// ----- registration (administrators) -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientBody {
    client_id: String,
    name: String,
    /// The client's public keys: `{"keys": [...]}`.
    jwks: Value,
    /// Set for an exchange partner: why it receives charts (a disclosure purpose), with
    /// `recipient` and `recipient_address`. Absent: the hospital's own use.
    disclosure: Option<DisclosurePurpose>,
    recipient: Option<String>,
    recipient_address: Option<String>,
}

fn admins_only(access: &Access) -> Option<Response> {
    (access.role != chartsync_core::chart::Role::Admin)
        .then(|| error(StatusCode::FORBIDDEN, "bulk export clients are for admins"))
}

/// `POST /api/bulk-clients`: registers (or replaces) a system that may export.
pub async fn register(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(body): Json<ClientBody>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    // Public keys only, each usable for RS384 or ES384, each named.
    let set: JwkSet = match serde_json::from_value(body.jwks.clone()) {
        Ok(s) => s,
        Err(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "jwks: not a JWK Set ({\"keys\": [...]})",
            )
        }
    };
    if set.keys.is_empty()
        || set.keys.iter().any(|k| {
            k.common.key_id.is_none()
                || DecodingKey::from_jwk(k).is_err()
                || matches!(
                    &k.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                )
        })
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "jwks: each key must be an RSA or EC public key with a kid",
        );
    }
    if body.jwks.to_string().contains("\"d\"") {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "jwks: a private key was sent; register the public half only",
        );
    }
    let who = actor(&access, &headers);
    let new = NewBulkClient {
        client_id: body.client_id,
        name: body.name,
        jwks: body.jwks.to_string(),
        disclosure: body.disclosure,
        recipient: body.recipient,
        recipient_address: body.recipient_address,
    };
    let store = app.store.clone();
    match crate::api::blocking(move || store.register_bulk_client(&who, &new)).await {
        Ok(Ok(c)) => (StatusCode::CREATED, Json(client_json(&c))).into_response(),
        Ok(Err(StoreError::Invalid(m))) => error(StatusCode::UNPROCESSABLE_ENTITY, &m),
        Ok(Err(e)) => crate::api::internal(e),
        Err(r) => r,
    }
}

fn client_json(c: &BulkClient) -> Value {
    json!({
        "client_id": c.client_id,
        "name": c.name,
        "jwks": serde_json::from_str::<Value>(&c.jwks).unwrap_or(Value::Null),
        "disclosure": c.disclosure.map(|p| p.token()),
        "recipient": c.recipient,
        "recipient_address": c.recipient_address,
        "registered_by": c.registered_by,
        "registered_at": c.registered_at,
        "revoked_at": c.revoked_at,
    })
}

/// `GET /api/bulk-clients`
pub async fn clients(State(app): State<AppState>, access: Access) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let store = app.store.clone();
    match off(move || store.bulk_clients()).await {
        Ok(c) => Json(c.iter().map(client_json).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/bulk-clients/{id}/revoke`
pub async fn revoke(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let who = actor(&access, &headers);
    let store = app.store.clone();
    match crate::api::blocking(move || store.revoke_bulk_client(&who, &id)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(StoreError::Invalid(m))) => error(StatusCode::NOT_FOUND, &m),
        Ok(Err(e)) => crate::api::internal(e),
        Err(r) => r,
    }
}

// ----- SMART Backend Services -----

/// `GET /fhir/.well-known/smart-configuration`
pub async fn smart_configuration(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&app, &headers);
    Json(json!({
        "token_endpoint": format!("{base}/fhir/auth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.read", "system/*.rs"],
        "capabilities": ["client-confidential-asymmetric"],
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

#[derive(Deserialize)]
struct Assertion {
    iss: String,
    sub: String,
    jti: String,
    exp: u64,
}

/// `POST /fhir/auth/token` (form): an access token for a client that proves itself with a
/// signed assertion.
pub async fn token(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(req): Form<TokenRequest>,
) -> Response {
    if req.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if req.client_assertion_type.as_deref()
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        );
    }
    let Some(assertion) = req.client_assertion else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no client_assertion",
        );
    };
    let scope = req.scope.unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    // An export is of every type this server writes (`_type` narrows one export, not the
    // token): a narrower scope would be promised and not kept, so it is refused.
    if scopes.is_empty()
        || !scopes
            .iter()
            .all(|s| matches!(*s, "system/*.read" | "system/*.rs"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "this server grants system/*.read (or system/*.rs) only",
        );
    }
    let audience = format!("{}/fhir/auth/token", base_url(&app, &headers));
    let store = app.store.clone();
    let checked =
        tokio::task::spawn_blocking(move || check_assertion(&store, &assertion, &audience)).await;
    let client = match checked {
        Ok(Ok(client)) => client,
        Ok(Err(why)) => {
            tracing::warn!(reason = why, "a bulk export token request was refused");
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
        }
        Err(e) => return crate::api::internal(e),
    };
    let token = app.keys.issue_bulk(&client, TOKEN_TTL);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_TTL.as_secs(),
            "scope": "system/*.read",
        })),
    )
        .into_response()
}

/// Checks a client assertion: the client registered and not revoked, the key it names among
/// the client's, the signature (RS384 or ES384), the audience, the time, and the `jti` never
/// used. The client's id, or why not (no secrets, no patient data).
fn check_assertion(
    store: &ChartStore,
    assertion: &str,
    audience: &str,
) -> Result<String, &'static str> {
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| "the assertion is not a JWT")?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err("the assertion must be signed RS384 or ES384");
    }
    let kid = header.kid.ok_or("the assertion names no key (kid)")?;
    let unverified: Assertion = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| "the assertion's claims are incomplete (iss, sub, jti, exp)")?;
    let client = store
        .bulk_client(&unverified.iss)
        .map_err(|_| "the store did not answer")?
        .ok_or("no such client")?;
    if client.revoked_at.is_some() {
        return Err("the client was revoked");
    }
    let set: JwkSet =
        serde_json::from_str(&client.jwks).map_err(|_| "the client's keys do not read")?;
    let jwk = set
        .find(&kid)
        .ok_or("the assertion's key is not one of the client's")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "the client's key does not read")?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 30;
    let claims: Assertion = jsonwebtoken::decode(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "the assertion's signature does not verify"
            }
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the assertion has expired",
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                "the assertion is not for this token endpoint (aud)"
            }
            _ => "the assertion does not verify",
        })?
        .claims;
    if claims.sub != claims.iss {
        return Err("the assertion's sub is not its iss");
    }
    if claims.exp > now_secs() + ASSERTION_MAX_LIFE {
        return Err("the assertion lives more than five minutes");
    }
    if claims.jti.trim().is_empty() {
        return Err("the assertion has no jti");
    }
    match store.use_bulk_assertion(&client.client_id, &claims.jti, claims.exp as i64) {
        Ok(true) => Ok(client.client_id),
        Ok(false) => Err("the assertion was used before (jti)"),
        Err(_) => Err("the store did not answer"),
    }
}

/// The client a Bulk Data request's bearer token was issued to, if it is still registered.
async fn bulk_client(app: &AppState, headers: &HeaderMap) -> Result<BulkClient, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            outcome(
                StatusCode::UNAUTHORIZED,
                "login",
                "a bearer token from /fhir/auth/token is needed",
            )
        })?;
    let id = app.keys.verify_bulk(token).map_err(|_| {
        outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            "the token is not valid, or has expired",
        )
    })?;
    let store = app.store.clone();
    let found = off(move || store.bulk_client(&id)).await?;
    match found {
        Some(c) if c.revoked_at.is_none() => Ok(c),
        _ => Err(outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client is not registered, or was revoked",
        )),
    }
}

// ----- kick-off, status, files -----

/// `GET /fhir/Patient/$export`
pub async fn export_patients(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    kick_off(app, headers, query, None).await
}

/// `GET /fhir/Group/{ward}/$export`: the charts of a ward.
pub async fn export_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(ward): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    kick_off(app, headers, query, Some(ward)).await
}

async fn kick_off(
    app: AppState,
    headers: HeaderMap,
    query: HashMap<String, String>,
    ward: Option<String>,
) -> Response {
    let client = match bulk_client(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let prefer = headers
        .get("prefer")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !prefer.split(',').any(|p| p.trim() == "respond-async") {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "an export runs asynchronously: send Prefer: respond-async",
        );
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()) {
        if !accept.contains("application/fhir+json") && !accept.contains("*/*") {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "Accept must be application/fhir+json",
            );
        }
    }
    if let Some(f) = query.get("_outputFormat") {
        if !matches!(
            f.as_str(),
            "application/fhir+ndjson" | "application/ndjson" | "ndjson"
        ) {
            return outcome(
                StatusCode::BAD_REQUEST,
                "not-supported",
                "_outputFormat: only application/fhir+ndjson",
            );
        }
    }
    let since = match query.get("_since").map(|s| Timestamp::parse(s)) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "_since: not a FHIR instant in UTC (2026-12-01T00:00:00Z)",
            )
        }
    };
    let mut types = Vec::new();
    if let Some(t) = query.get("_type") {
        for ty in t.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !RESOURCE_TYPES.contains(&ty) {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    &format!(
                        "_type: {ty} is not exported (one of {})",
                        RESOURCE_TYPES.join(", ")
                    ),
                );
            }
            types.push(ty.to_string());
        }
    }
    for key in query.keys() {
        if !matches!(key.as_str(), "_outputFormat" | "_since" | "_type") {
            return outcome(
                StatusCode::BAD_REQUEST,
                "not-supported",
                &format!("{key}: not supported (_outputFormat, _since and _type are)"),
            );
        }
    }
    let base = base_url(&app, &headers);
    let request = format!(
        "{base}/fhir/{}$export",
        ward.as_deref()
            .map(|w| format!("Group/{w}/"))
            .unwrap_or_else(|| "Patient/".into())
    );
    // One export at a time per client: each holds a file a resource type in memory.
    let store = app.store.clone();
    let client_id = client.client_id.clone();
    match off(move || store.running_bulk_jobs(&client_id)).await {
        Ok(0) => {}
        Ok(_) => {
            return outcome(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "an export of this client's is running: wait for it, or DELETE it",
            )
        }
        Err(r) => return r,
    }
    let store = app.store.clone();
    let w = ward.clone();
    let charts = match off(move || {
        if let Some(w) = &w {
            if !store.wards()?.contains(w) {
                return Ok(None);
            }
        }
        store.charts_for_export(w.as_deref(), since).map(Some)
    })
    .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such group: a group is a ward with charts",
            )
        }
        Err(r) => return r,
    };
    let job = BulkJob {
        id: uuid::Uuid::new_v4().simple().to_string(),
        client_id: client.client_id.clone(),
        request,
        ward,
        since,
        types,
        status: "running".into(),
        done: 0,
        total: charts.len() as u64,
        transaction_time: Timestamp::now(),
        error: None,
        files: Vec::new(),
        finished_at: None,
    };
    let store = app.store.clone();
    let started = job.clone();
    if let Err(r) = off(move || store.start_bulk_job(&started)).await {
        return r;
    }
    tracing::info!(job = %job.id, client = %client.client_id, charts = charts.len(), "bulk export started");
    let store = app.store.clone();
    let id = job.id.clone();
    std::thread::Builder::new()
        .name("chartsync-bulk".into())
        .spawn(move || {
            if let Err(e) = run_export(&store, &client, &job, &charts) {
                tracing::error!(job = %job.id, error = %e, "bulk export failed");
                let _ = store.fail_bulk_job(&job.id, "the export failed on the server; try again");
            }
        })
        .ok();
    (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_LOCATION,
            format!("{base}/fhir/bulkstatus/{id}"),
        )],
    )
        .into_response()
}

/// Writes the export's NDJSON, a resource type a file, auditing each chart (and, for a client
/// whose exports are disclosures, recording each in its patient's accounting).
fn run_export(
    store: &ChartStore,
    client: &BulkClient,
    job: &BulkJob,
    charts: &[chartsync_core::chart::ChartId],
) -> Result<(), StoreError> {
    let wanted: HashSet<&str> = job.types.iter().map(String::as_str).collect();
    let mut files = Ndjson::new(BULK_FILE_BYTES);
    let actor = Actor {
        user: client.client_id.clone(),
        role: crate::auth::BULK_ROLE.into(),
        device: "bulk-export".into(),
    };
    let detail = format!("bulk export {} for {}", job.id, client.name);
    let mut exported = Vec::with_capacity(charts.len());
    for (n, &id) in charts.iter().enumerate() {
        if n % PROGRESS_EVERY == 0 && n > 0 && !store.bulk_progress(&job.id, n as u64)? {
            tracing::info!(job = %job.id, "bulk export cancelled");
            return Ok(());
        }
        // Scanned documents' files, in their DocumentReferences.
        let scans = if wanted.is_empty() || wanted.contains("DocumentReference") {
            match store.attachment_files(id) {
                Ok(scans) => scans,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        } else {
            Default::default()
        };
        let bundle = match store.read(id, |c| {
            chartsync_core::fhir::bundle_with_files(id, c, job.transaction_time, scans)
        }) {
            Ok(Ok(b)) => b,
            // Destroyed or gone since the kick-off: not exported.
            Err(StoreError::NotFound(_)) => continue,
            Ok(Err(e)) => return Err(StoreError::Chart { id, error: e }),
            Err(e) => return Err(e),
        };
        for (ty, resource) in chartsync_core::fhir::bulk_resources(bundle) {
            if !wanted.is_empty() && !wanted.contains(ty.as_str()) {
                continue;
            }
            if let Some((name, ty, count, data)) = files.push(ty, &resource)? {
                if !store.add_bulk_file(&job.id, &name, &ty, count, &data)? {
                    tracing::info!(job = %job.id, "bulk export cancelled");
                    return Ok(());
                }
            }
        }
        store.record_audit(&actor, AuditAction::Read, Some(id), Some(&detail))?;
        exported.push(id);
    }
    store.record_bulk_disclosures(
        client,
        &job.id,
        &exported,
        job.transaction_time,
        &format!("FHIR Bulk Data export {}", job.id),
    )?;
    if store.finish_bulk_job(&job.id, &files.finish())? {
        tracing::info!(job = %job.id, charts = exported.len(), "bulk export done");
    }
    Ok(())
}

/// Deletes, every few minutes, exports finished more than `ttl` ago and their files.
pub fn expire(store: std::sync::Arc<ChartStore>, ttl: Duration) {
    crate::while_holding_lease(
        store,
        Duration::from_secs(300).min(ttl / 4),
        move |store| store.expire_bulk_jobs(ttl),
        |outcome| match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                exports = n,
                "bulk exports past their time deleted with their files"
            ),
            Err(e) => tracing::error!(error = %e, "could not delete expired bulk exports"),
        },
    );
}

/// A file written: (name, resource type, resources, NDJSON).
type NdjsonFile = (String, String, u64, Vec<u8>);

/// An export's NDJSON, a file a resource type at a time: a file that reaches the bound is
/// handed back to be written, and the next of its type begins.
struct Ndjson {
    bound: usize,
    /// Per type: the file being filled, its resources, and its number (1 for the first).
    open: BTreeMap<String, (Vec<u8>, u64, u32)>,
}

impl Ndjson {
    fn new(bound: usize) -> Ndjson {
        Ndjson {
            bound,
            open: BTreeMap::new(),
        }
    }

    /// The file's name: `Observation.ndjson`, then `Observation.2.ndjson`, …
    fn name(ty: &str, n: u32) -> String {
        match n {
            1 => format!("{ty}.ndjson"),
            n => format!("{ty}.{n}.ndjson"),
        }
    }

    /// Adds a resource of type `ty`; the file it filled, if it did.
    fn push(&mut self, ty: String, resource: &Value) -> Result<Option<NdjsonFile>, StoreError> {
        let (data, count, n) = self.open.entry(ty.clone()).or_insert((Vec::new(), 0, 1));
        serde_json::to_writer(&mut *data, resource)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        data.push(b'\n');
        *count += 1;
        if data.len() < self.bound {
            return Ok(None);
        }
        let full = (Self::name(&ty, *n), ty, *count, std::mem::take(data));
        *count = 0;
        *n += 1;
        Ok(Some(full))
    }

    /// The files still being filled, those with anything in them.
    fn finish(self) -> Vec<NdjsonFile> {
        self.open
            .into_iter()
            .filter(|(_, (_, count, _))| *count > 0)
            .map(|(ty, (data, count, n))| (Self::name(&ty, n), ty, count, data))
            .collect()
    }
}

/// The client a request's token names, and the job it asks about if it is its own.
async fn asked_job(app: &AppState, headers: &HeaderMap, id: String) -> Result<BulkJob, Response> {
    let client = bulk_client(app, headers).await?;
    own_job(app, &client, id).await
}

/// The job a client asks about, if it is its own.
async fn own_job(app: &AppState, client: &BulkClient, id: String) -> Result<BulkJob, Response> {
    let store = app.store.clone();
    let job = off(move || store.bulk_job(&id)).await?;
    match job {
        Some(j) if j.client_id == client.client_id => Ok(j),
        _ => Err(outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such export job",
        )),
    }
}

/// `GET /fhir/bulkstatus/{job}`: 202 with `X-Progress` while it runs; the manifest once done.
pub async fn status(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let job = match asked_job(&app, &headers, id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let base = base_url(&app, &headers);
    match job.status.as_str() {
        "running" => {
            let percent = (job.done * 100).checked_div(job.total).unwrap_or(0);
            (
                StatusCode::ACCEPTED,
                [
                    (
                        "x-progress",
                        format!("{percent}% ({} of {} charts)", job.done, job.total),
                    ),
                    ("retry-after", "1".to_string()),
                ],
            )
                .into_response()
        }
        "done" => (
            // When the files go (`--bulk-files-ttl` after the export finished).
            [(
                header::EXPIRES,
                httpdate::fmt_http_date(
                    job.finished_at
                        .and_then(|t| u64::try_from(t.unix_millis()).ok())
                        .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms))
                        .unwrap_or_else(std::time::SystemTime::now)
                        + app.bulk_files_ttl,
                ),
            )],
            Json(json!({
                "transactionTime": job.transaction_time,
                "request": job.request,
                "requiresAccessToken": true,
                "output": job.files.iter().map(|(name, ty, count)| json!({
                    "type": ty,
                    "url": format!("{base}/fhir/bulkfiles/{}/{name}", job.id),
                    "count": count,
                })).collect::<Vec<_>>(),
                "error": [],
            })),
        )
            .into_response(),
        _ => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            job.error.as_deref().unwrap_or("the export did not finish"),
        ),
    }
}

/// `DELETE /fhir/bulkstatus/{job}`: cancels a running export, or clears a finished one.
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let job = match asked_job(&app, &headers, id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let store = app.store.clone();
    match off(move || store.delete_bulk_job(&job.id)).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(r) => r,
    }
}

/// `GET /fhir/bulkfiles/{job}/{file}`: one NDJSON file of a finished export.
pub async fn file(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let job = match asked_job(&app, &headers, id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    if job.status != "done" {
        // A running export's files are not whole yet.
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such file");
    }
    let store = app.store.clone();
    match off(move || store.bulk_file(&job.id, &name)).await {
        Ok(Some(data)) => {
            ([(header::CONTENT_TYPE, "application/fhir+ndjson")], data).into_response()
        }
        Ok(None) => outcome(StatusCode::NOT_FOUND, "not-found", "no such file"),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ndjson_file_that_fills_is_handed_back_and_the_next_of_its_type_begins() {
        let mut files = Ndjson::new(100);
        let obs = json!({"resourceType": "Observation", "note": "x".repeat(40)});
        let patient = json!({"resourceType": "Patient"});
        assert!(files.push("Observation".into(), &obs).unwrap().is_none());
        assert!(files.push("Patient".into(), &patient).unwrap().is_none());
        // The second observation takes the first file past the bound: it is written.
        let (name, ty, count, data) = files.push("Observation".into(), &obs).unwrap().unwrap();
        assert_eq!(
            (name.as_str(), ty.as_str(), count),
            ("Observation.ndjson", "Observation", 2)
        );
        assert_eq!(data.iter().filter(|b| **b == b'\n').count(), 2);
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            assert_eq!(serde_json::from_slice::<Value>(line).unwrap(), obs);
        }
        assert!(files.push("Observation".into(), &obs).unwrap().is_none());
        // What is left: the second observation file and the patients, each whole.
        let rest = files.finish();
        let names: Vec<(&str, u64)> = rest.iter().map(|(n, _, c, _)| (n.as_str(), *c)).collect();
        assert_eq!(names, [("Observation.2.ndjson", 1), ("Patient.ndjson", 1)]);
    }
}
