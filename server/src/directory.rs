//! Shared tablets on the server (docs/adr/0008-shared-tablets.md): the staff directory, device
//! enrolment, certificates for people signing in on a tablet, and revocation.
//!
//! Administrators manage the directory over REST (an admin token) or the command line
//! (`chartsync-server staff|device|revoke`). Tablets talk to four endpoints without a token:
//! they fetch a one-time challenge, enrol with a code an administrator printed, and sign a
//! person in (their password, once, online), proving with signatures that they hold the
//! device key and the person's new key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chartsync_core::chart::{check_identifier, Role, Timestamp};
use chartsync_core::store::{
    Actor, ChartStore, CredentialStatus, NewStaff, Revoked, Severity, StoreError,
};
use chartsync_core::tablet::{
    EnrolRequest, EnrolResponse, SessionRequest, SessionResponse, SignInRequest, SignInResponse,
};
use chartsync_core::trust::{self, CertificateRequest, DeviceId, Issuer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{actor, error, internal};
use crate::auth::{now_secs, secret_file, Access, KeyError};
use crate::AppState;

/// How long a challenge may wait to be signed, and how many may wait at once.
const CHALLENGE_TTL: Duration = Duration::from_secs(120);
const MAX_CHALLENGES: usize = 10_000;
/// Certificates start a little before they are issued: a tablet whose clock is a few minutes
/// behind must not make changes its certificate does not cover yet.
const CLOCK_SLACK_SECS: i64 = 300;

pub use chartsync_core::trust::Policy;

/// The server's issuer key and its outstanding challenges.
pub struct Trust {
    issuer: Issuer,
    challenges: Mutex<HashMap<[u8; 32], Instant>>,
    pub policy: Policy,
}

impl Trust {
    /// The data directory's issuer key (`cert.key`), made if there is none.
    pub fn load_or_create(data_dir: &Path, policy: Policy) -> Result<Trust, KeyError> {
        let seed = zeroize::Zeroizing::new(secret_file(&data_dir.join("cert.key"))?);
        Ok(Trust {
            issuer: Issuer::from_seed(&seed),
            challenges: Mutex::new(HashMap::new()),
            policy,
        })
    }

    pub fn issuer_keys(&self) -> Vec<[u8; 32]> {
        vec![self.issuer.public_key()]
    }

    /// Issues a certificate under this server's key.
    pub fn issue(
        &self,
        request: CertificateRequest,
        now: i64,
    ) -> chartsync_core::trust::SignedCertificate {
        self.issuer.issue(request, now)
    }

    pub(crate) fn challenge(&self) -> Option<[u8; 32]> {
        let mut waiting = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        waiting.retain(|_, made| now.duration_since(*made) < CHALLENGE_TTL);
        if waiting.len() >= MAX_CHALLENGES {
            return None;
        }
        let c = trust::random();
        waiting.insert(c, now);
        Some(c)
    }

    /// A challenge counts once, within its time.
    fn take(&self, challenge: &[u8]) -> bool {
        let Ok(c) = <[u8; 32]>::try_from(challenge) else {
            return false;
        };
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c)
            .is_some_and(|made| made.elapsed() < CHALLENGE_TTL)
    }
}

/// Argon2id (the crate's defaults: 19 MiB, 2 passes, OWASP's recommendation for passwords).
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.chars().count() < 10 {
        return Err("a password has at least 10 characters".into());
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("could not hash the password: {e}"))
}

pub(crate) fn password_matches(password: &str, phc: Option<&str>) -> bool {
    // Someone unknown, or without a password, costs the same as a wrong password: a hash of
    // a random password nobody knows, made once.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY
        .get_or_init(|| hash_password(&hex::encode(trust::random::<16>())).unwrap_or_default());
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// An enrolment code: 12 characters of Crockford's base32 (60 bits), printed in threes of
/// four: `7KQ2-M9XD-4TRB`.
pub fn new_enrolment_code() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bytes: [u8; 12] = trust::random();
    let chars: Vec<u8> = bytes.iter().map(|b| ALPHABET[(b & 31) as usize]).collect();
    format!(
        "{}-{}-{}",
        std::str::from_utf8(&chars[..4]).unwrap_or_default(),
        std::str::from_utf8(&chars[4..8]).unwrap_or_default(),
        std::str::from_utf8(&chars[8..]).unwrap_or_default()
    )
}

/// The hash a code is kept by; read as people type it (any case, dashes or spaces, O for 0,
/// I or L for 1).
pub fn code_hash(code: &str) -> [u8; 32] {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    Sha256::digest(normal.as_bytes()).into()
}

fn admins_only(access: &Access) -> Option<Response> {
    (access.role != Role::Admin).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "the staff directory and devices are for admins",
        )
    })
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NoSuchStaff(_) | StoreError::NoSuchDevice(_) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        StoreError::BadEnrolmentCode => error(StatusCode::FORBIDDEN, &e.to_string()),
        StoreError::AlreadyEnrolled(_) => error(StatusCode::CONFLICT, &e.to_string()),
        StoreError::Invalid(_) | StoreError::ReasonRequired => {
            error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
        }
        e => internal(e),
    }
}

fn bytes32(field: &str, b64: &str) -> Result<[u8; 32], Response> {
    B64.decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("{field} is not 32 bytes of base64"),
            )
        })
}

fn signature(field: &str, b64: &str) -> Result<Vec<u8>, Response> {
    B64.decode(b64)
        .ok()
        .filter(|b| b.len() == 64)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("{field} is not a 64-byte signature in base64"),
            )
        })
}

// ----- tablets -----

/// `POST /api/devices/challenge`: a one-time challenge to sign, good for two minutes.
pub async fn challenge(State(app): State<AppState>) -> Response {
    match app.trust.challenge() {
        Some(c) => Json(serde_json::json!({ "challenge": B64.encode(c) })).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins waiting; try again in a minute",
        ),
    }
}

/// `POST /api/devices/enrol`: redeems a one-time code for the tablet whose key signed the
/// challenge.
pub async fn enrol(State(app): State<AppState>, Json(req): Json<EnrolRequest>) -> Response {
    let (trust, store) = (app.trust.clone(), app.store.clone());
    answered(move || redeem(&trust, &store, &req)).await
}

/// What `f` answers, as JSON, worked out off the async threads (it verifies signatures,
/// hashes passwords and writes the store).
async fn answered<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(refused)) => refused,
        Err(e) => internal(e),
    }
}

/// Redeems an enrolment code for the tablet whose key signed the challenge (REST's `enrol`,
/// and the in-process server's).
pub(crate) fn redeem(
    trust: &Trust,
    store: &ChartStore,
    req: &EnrolRequest,
) -> Result<EnrolResponse, Response> {
    let key = bytes32("public_key", &req.public_key)?;
    let challenge = B64
        .decode(&req.challenge)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "challenge is not base64"))?;
    let sig = signature("signature", &req.signature)?;
    if !trust.take(&challenge) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the challenge is unknown, used or expired",
        ));
    }
    if trust::verify_device(&key, &challenge, &sig).is_err() {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the signature does not verify with that key",
        ));
    }
    let device = store
        .redeem_enrolment(&code_hash(&req.code), &key)
        .map_err(store_error)?;
    tracing::info!(device = %device.id, "device enrolled");
    Ok(EnrolResponse {
        device: device.id.to_string(),
        label: device.label,
        wards: device.wards,
        issuer_keys: trust.issuer_keys().iter().map(|k| B64.encode(k)).collect(),
        policy: trust.policy,
    })
}

/// `POST /api/devices/{id}/sign-in`: a person's first sign-in on a tablet (or a renewal).
/// Their password is checked against the directory; the certificate binds them, their role,
/// the wards they and the tablet share, the tablet, and their new key.
pub async fn sign_in(
    State(app): State<AppState>,
    UrlPath(device): UrlPath<String>,
    Json(req): Json<SignInRequest>,
) -> Response {
    let Ok(device) = DeviceId::parse(&device) else {
        return error(StatusCode::NOT_FOUND, "no such device");
    };
    let (trust, store) = (app.trust.clone(), app.store.clone());
    answered(move || certify(&trust, &store, device, req)).await
}

/// A person's sign-in on tablet `device` (REST's `sign_in`, and the in-process server's).
pub(crate) fn certify(
    trust: &Trust,
    store: &ChartStore,
    device: DeviceId,
    req: SignInRequest,
) -> Result<SignInResponse, Response> {
    let key = bytes32("public_key", &req.public_key)?;
    let possession = signature("possession", &req.possession)?;
    let device_sig = signature("device_signature", &req.device_signature)?;
    let challenge = B64
        .decode(&req.challenge)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "challenge is not base64"))?;
    if !trust.take(&challenge) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the challenge is unknown, used or expired",
        ));
    }
    let found_device = store.device(device).map_err(store_error)?;
    let member = store.staff_member(&req.user).map_err(store_error)?;
    let Some(found_device) = found_device.filter(|d| d.status == CredentialStatus::Active) else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this device is not enrolled, or was revoked",
        ));
    };
    let mut with_device = challenge.clone();
    with_device.extend_from_slice(&key);
    let mut with_id = challenge.clone();
    with_id.extend_from_slice(&device.0);
    if trust::verify_device(&found_device.public_key, &with_device, &device_sig).is_err()
        || trust::verify_possession(&key, &with_id, &possession).is_err()
    {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the signatures do not verify",
        ));
    }
    let (member, phc) = match member {
        Some((m, phc)) => (Some(m), phc),
        None => (None, None),
    };
    // Checked whoever asks: someone unknown costs the same as a wrong password.
    let matches = password_matches(&req.password, phc.as_deref());
    let member = match member {
        Some(m) if matches && m.status == CredentialStatus::Active => m,
        _ => {
            tracing::info!(device = %device, "a sign-in was refused");
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "the user or password is not right, or the person's access was revoked",
            ));
        }
    };
    let wards: Vec<String> = if member.wards.iter().any(|w| w == crate::auth::ALL_WARDS) {
        found_device.wards.clone()
    } else if found_device
        .wards
        .iter()
        .any(|w| w == crate::auth::ALL_WARDS)
    {
        member.wards.clone()
    } else {
        member
            .wards
            .iter()
            .filter(|w| found_device.wards.contains(w))
            .cloned()
            .collect()
    };
    if wards.is_empty() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the person has no ward in common with this device",
        ));
    }
    let now = Timestamp::now().unix();
    let cert = trust.issue(
        CertificateRequest {
            user: member.user.clone(),
            role: member.role,
            wards: wards.clone(),
            device,
            key,
            not_before: now - CLOCK_SLACK_SECS,
            not_after: now + trust.policy.certificate_secs as i64,
        },
        now,
    );
    let by = Actor {
        user: member.user.clone(),
        role: member.role.token().into(),
        device: device.to_string(),
    };
    store
        .save_certificate(Some(&by), &cert)
        .map_err(store_error)?;
    let c = cert.certificate();
    tracing::info!(device = %device, serial = %c.serial, "certificate issued");
    Ok(SignInResponse {
        certificate: B64.encode(cert.to_bytes()),
        serial: c.serial.to_string(),
        role: c.role,
        wards,
        not_after: Timestamp::from_unix(c.not_after).unwrap_or_else(|_| Timestamp::now()),
    })
}

/// How long a tablet's sync session lasts before it signs its challenge again.
const DEVICE_SESSION: Duration = Duration::from_secs(12 * 3600);

/// `POST /api/devices/{id}/session`: a token for the tablet's sync connection. A revoked
/// tablet still gets one, in quarantine: it may hand over what it holds, all of which is held
/// for review, and it is sent nothing.
pub async fn session(
    State(app): State<AppState>,
    UrlPath(device): UrlPath<String>,
    Json(req): Json<SessionRequest>,
) -> Response {
    let Ok(device) = DeviceId::parse(&device) else {
        return error(StatusCode::NOT_FOUND, "no such device");
    };
    let (Ok(challenge), Ok(sig)) = (
        B64.decode(&req.challenge),
        signature("signature", &req.signature),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "challenge and signature must be base64",
        );
    };
    if !app.trust.take(&challenge) {
        return error(
            StatusCode::UNAUTHORIZED,
            "the challenge is unknown, used or expired",
        );
    }
    let found = match app.store.device(device) {
        Ok(d) => d,
        Err(e) => return store_error(e),
    };
    let Some(found) = found else {
        return error(StatusCode::FORBIDDEN, "this device is not enrolled");
    };
    if trust::verify_device(&found.public_key, &challenge, &sig).is_err() {
        return error(StatusCode::UNAUTHORIZED, "the signature does not verify");
    }
    let quarantined = found.status != CredentialStatus::Active;
    if quarantined {
        tracing::warn!(device = %device, "a revoked device connected: quarantined");
    }
    let token = app
        .keys
        .issue_device(device, &found.wards, DEVICE_SESSION, quarantined);
    let expires_at = Timestamp::from_unix((now_secs() + DEVICE_SESSION.as_secs()) as i64)
        .unwrap_or_else(|_| Timestamp::now());
    Json(SessionResponse { token, expires_at }).into_response()
}

// ----- administrators -----

/// `GET /api/staff`
pub async fn list_staff(State(app): State<AppState>, access: Access) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    match app.store.staff() {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutStaff {
    role: Role,
    wards: Vec<String>,
    password: Option<String>,
}

/// `PUT /api/staff/{user}`: adds or changes a person. A change of role or wards revokes the
/// certificates they hold.
pub async fn put_staff(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    UrlPath(user): UrlPath<String>,
    Json(req): Json<PutStaff>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    if let Err(e) = check_identifier("user", &user) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let by = actor(&access, &headers);
    let store = app.store.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<(), Response> {
        let phc = match req.password.as_deref().map(hash_password).transpose() {
            Ok(p) => p,
            Err(e) => return Err(error(StatusCode::UNPROCESSABLE_ENTITY, &e)),
        };
        store
            .put_staff(
                &by,
                &NewStaff {
                    user: &user,
                    role: req.role,
                    wards: &req.wards,
                    password: phc.as_deref(),
                    source: "local",
                },
            )
            .map_err(store_error)
    })
    .await;
    match done {
        Ok(Ok(())) => {
            // A change of role or wards may have revoked certificates.
            let _ = app.hub.revocations.send(());
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(r)) => r,
        Err(e) => internal(e),
    }
}

/// `GET /api/devices`
pub async fn list_devices(State(app): State<AppState>, access: Access) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    match app.store.devices() {
        Ok(d) => Json(d).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrolment {
    label: String,
    wards: Vec<String>,
    /// Hours the code stays good (default 24, at most 168).
    valid_hours: Option<u32>,
}

/// `POST /api/devices/enrolments`: a one-time code for a tablet, shown once.
pub async fn new_enrolment(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(req): Json<NewEnrolment>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let by = actor(&access, &headers);
    match enrolment(
        &app.store,
        &by,
        &req.label,
        &req.wards,
        req.valid_hours.unwrap_or(24),
    ) {
        Ok((code, expires_at)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "code": code, "expires_at": expires_at })),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

/// Makes and keeps an enrolment code (REST and the command line).
pub fn enrolment(
    store: &ChartStore,
    by: &Actor,
    label: &str,
    wards: &[String],
    valid_hours: u32,
) -> Result<(String, Timestamp), StoreError> {
    if !(1..=168).contains(&valid_hours) {
        return Err(StoreError::Invalid(
            "an enrolment code lasts between 1 hour and 7 days".into(),
        ));
    }
    let code = new_enrolment_code();
    let expires_at = Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + i64::from(valid_hours) * 3_600_000,
    )
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.new_enrolment(by, &code_hash(&code), label, wards, expires_at)?;
    Ok((code, expires_at))
}

#[derive(Deserialize)]
pub struct CertificateQuery {
    user: Option<String>,
    device: Option<String>,
}

/// `GET /api/certificates[?user=U][&device=D]`
pub async fn list_certificates(
    State(app): State<AppState>,
    access: Access,
    Query(q): Query<CertificateQuery>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let device = match q.device.as_deref().map(DeviceId::parse).transpose() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match app.store.certificates(q.user.as_deref(), device) {
        Ok(c) => Json(c).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    #[serde(flatten)]
    what: Revoked,
    severity: Severity,
    /// From when (default now); earlier for "missing since".
    effective_at: Option<Timestamp>,
    reason: String,
}

/// `GET /api/revocations`
pub async fn list_revocations(State(app): State<AppState>, access: Access) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    match app.store.revocations() {
        Ok(r) => Json(r).into_response(),
        Err(e) => store_error(e),
    }
}

/// `POST /api/revocations`: revokes a person, a certificate or a device.
pub async fn revoke(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Json(req): Json<NewRevocation>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let by = actor(&access, &headers);
    let effective = req.effective_at.unwrap_or_else(Timestamp::now);
    match app
        .store
        .revoke(&by, &req.what, req.severity, effective, &req.reason)
    {
        Ok(r) => {
            // Tablets connected now hear of it at once; others when they next connect.
            let _ = app.hub.revocations.send(());
            (StatusCode::CREATED, Json(r)).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wipe {
    reason: String,
}

/// `POST /api/devices/{id}/wipe`: takes every chart off a tablet (retired, sent for repair,
/// moved to another service). The tablet is revoked (administratively, from now): when it
/// next connects it hands over what it holds, which is held for review, erases its people's
/// keys, and removes each chart once the server has what was written on it there (a chart
/// whose changes are held for review stays until a records supervisor decides),
/// reporting each removal (`GET /api/devices/{id}/purges`).
pub async fn wipe(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    UrlPath(device): UrlPath<String>,
    Json(req): Json<Wipe>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let Ok(device) = DeviceId::parse(&device) else {
        return error(StatusCode::NOT_FOUND, "no such device");
    };
    let reason = req.reason.trim();
    if reason.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a wipe needs a reason (retired, sent for repair, ...)",
        );
    }
    let by = actor(&access, &headers);
    match app.store.revoke(
        &by,
        &Revoked::Device(device.to_string()),
        Severity::Administrative,
        Timestamp::now(),
        &format!("wipe: {reason}"),
    ) {
        Ok(r) => {
            let _ = app.hub.revocations.send(());
            (StatusCode::CREATED, Json(r)).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /api/devices/{id}/purges`: the charts a tablet reported removing, newest first.
pub async fn device_purges(
    State(app): State<AppState>,
    access: Access,
    UrlPath(device): UrlPath<String>,
) -> Response {
    if let Some(r) = admins_only(&access) {
        return r;
    }
    let Ok(device) = DeviceId::parse(&device) else {
        return error(StatusCode::NOT_FOUND, "no such device");
    };
    match app.store.device_purges(Some(&device.to_string())) {
        Ok(p) => Json(p).into_response(),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_codes_read_as_people_type_them() {
        let code = new_enrolment_code();
        assert_eq!(code.len(), 14);
        assert_eq!(
            code_hash(&code),
            code_hash(&code.to_lowercase().replace('-', " "))
        );
        assert_eq!(code_hash("7KQ2-M9XD-4TR0"), code_hash("7kq2m9xd4tro"));
        assert_eq!(code_hash("1KQ2-M9XD-4TRB"), code_hash("lkq2-m9xd-4trb"));
        assert_ne!(code_hash(&code), code_hash(&new_enrolment_code()));
    }

    #[test]
    fn passwords_are_checked_against_their_hash_only() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", Some(&phc)));
        assert!(!password_matches("correct horse batterY", Some(&phc)));
        assert!(!password_matches("correct horse battery", None));
        assert!(hash_password("short").is_err());
    }
}
