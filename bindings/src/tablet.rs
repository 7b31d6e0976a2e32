//! A shared ward tablet (docs/adr/0008-shared-tablets.md): enrolment with an administrator's
//! code, a person's first sign-in online (their key is then sealed on the tablet under their
//! PIN), later sign-ins offline with the PIN, the automatic lock, and the sync session token.
//!
//! The calls that reach the server (`enrol`, `sign_in_online`, `session_token`) block: call
//! them off the main thread. The device secret is 32 random bytes the app keeps in the
//! Android Keystore or the iOS Keychain and hands over each time it opens the tablet.

use std::sync::Arc;

use chartsync_core::chart::{Staff, Timestamp};
use chartsync_core::store::BreakGlassReason;
use chartsync_core::tablet::{self as core_tablet, TabletError};
use chartsync_core::trust::{DeviceKey, KdfParams};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ChartsyncError;
use crate::store::ChartStore;

/// An enrolled tablet.
#[derive(uniffi::Object)]
pub struct Tablet {
    inner: core_tablet::Tablet,
    store: Arc<ChartStore>,
}

/// Someone who signed in on this tablet before.
#[derive(uniffi::Record)]
pub struct TabletPerson {
    pub user: String,
    /// Whether their PIN can still sign them in here; if not, they sign in online.
    pub can_unlock: bool,
    /// Wrong PINs left before their key is erased.
    pub pin_attempts_left: u32,
    /// Why the key was erased, if it was: `pin_attempts`, `revoked`, `signed_out`.
    pub erased: Option<String>,
}

impl From<TabletError> for ChartsyncError {
    fn from(e: TabletError) -> Self {
        use ChartsyncError::*;
        match e {
            TabletError::WrongPin { .. } => WrongPin(e.to_string()),
            TabletError::NoKey { .. } | TabletError::Expired { .. } => {
                SignInRequired(e.to_string())
            }
            TabletError::Locked { .. } => Locked(e.to_string()),
            TabletError::NotEnrolled => NotPermitted(e.to_string()),
            TabletError::NotHere(_) => NotFound(e.to_string()),
            TabletError::Trust(chartsync_core::trust::TrustError::PinFormat) => {
                InvalidInput(e.to_string())
            }
            TabletError::Trust(_) | TabletError::BadAnswer(_) => Refused(e.to_string()),
            TabletError::Store(s) => s.into(),
        }
    }
}

fn secret(device_secret: &[u8]) -> Result<(), ChartsyncError> {
    DeviceKey::from_secret(device_secret)
        .map(|_| ())
        .map_err(|e| ChartsyncError::InvalidInput(e.to_string()))
}

/// The server's base URL as the app gave it, without a trailing slash.
fn base(server: &str) -> Result<String, ChartsyncError> {
    let s = server.trim().trim_end_matches('/');
    if !(s.starts_with("https://") || s.starts_with("http://")) {
        return Err(ChartsyncError::InvalidInput(
            "the server is an http:// or https:// address".into(),
        ));
    }
    Ok(s.to_string())
}

/// One request to the server: its JSON answer, or why not. Errors carry the server's reason
/// (it names no patient data) but never the request's body (a password).
fn post<B: Serialize, A: DeserializeOwned>(url: &str, body: &B) -> Result<A, ChartsyncError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let body = serde_json::to_vec(body)
        .map_err(|e| ChartsyncError::Internal(format!("a request did not encode: {e}")))?;
    let mut response = agent
        .post(url)
        .header("User-Agent", "chartsync-tablet")
        .header("Content-Type", "application/json")
        .send(&body[..])
        .map_err(|e| ChartsyncError::Network(format!("could not reach the server: {e}")))?;
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| ChartsyncError::Network(format!("the answer broke off: {e}")))?;
    if !(200..300).contains(&status) {
        let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("the server answered {status}"));
        return Err(match status {
            400 | 422 => ChartsyncError::InvalidInput(reason),
            401 | 403 | 404 | 409 => ChartsyncError::Refused(reason),
            _ => ChartsyncError::Network(reason),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| ChartsyncError::Network("the server's answer is not what was asked".into()))
}

fn challenge(base: &str) -> Result<Vec<u8>, ChartsyncError> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Challenge {
        challenge: String,
    }
    let c: Challenge = post(
        &format!("{base}/api/devices/challenge"),
        &serde_json::json!({}),
    )?;
    base64::engine::general_purpose::STANDARD
        .decode(c.challenge)
        .map_err(|_| ChartsyncError::Network("the server's challenge is not base64".into()))
}

/// What deriving a PIN's key (Argon2id) may cost the tablet, each time a person signs in.
#[derive(uniffi::Enum, Clone, Copy)]
pub enum PinCost {
    /// 64 MiB and 3 passes: a fraction of a second on a mid-range tablet.
    Standard,
    /// 19 MiB and 2 passes (OWASP's floor), for tablets short of memory.
    LowMemory,
}

fn kdf(cost: PinCost) -> KdfParams {
    match cost {
        PinCost::Standard => KdfParams::DEFAULT,
        PinCost::LowMemory => KdfParams::MINIMUM,
    }
}

/// The tablet as its store knows it; `None` if it was never enrolled (then `Tablet.enrol`).
#[uniffi::export]
pub fn open_tablet(
    store: Arc<ChartStore>,
    device_secret: Vec<u8>,
    pin_cost: PinCost,
) -> Result<Option<Arc<Tablet>>, ChartsyncError> {
    secret(&device_secret)?;
    Ok(
        core_tablet::Tablet::open(store.inner.clone(), &device_secret, kdf(pin_cost))?.map(
            |inner| {
                Arc::new(Tablet {
                    inner,
                    store: store.clone(),
                })
            },
        ),
    )
}

#[uniffi::export]
impl Tablet {
    /// Enrols the tablet with the one-time code an administrator printed
    /// (`chartsync-server device enroll`). `server`: the server's https:// address.
    #[uniffi::constructor]
    pub fn enrol(
        store: Arc<ChartStore>,
        device_secret: Vec<u8>,
        server: String,
        code: String,
        pin_cost: PinCost,
    ) -> Result<Arc<Tablet>, ChartsyncError> {
        secret(&device_secret)?;
        let base = base(&server)?;
        let request =
            core_tablet::Tablet::enrol_request(&device_secret, &code, &challenge(&base)?)?;
        let answer: core_tablet::EnrolResponse =
            post(&format!("{base}/api/devices/enrol"), &request)?;
        let inner = core_tablet::Tablet::finish_enrolment(
            store.inner.clone(),
            &device_secret,
            &base,
            &answer,
            kdf(pin_cost),
        )?;
        Ok(Arc::new(Tablet { inner, store }))
    }

    /// This tablet's id, as the server and the audit trail name it.
    pub fn device_id(&self) -> String {
        self.inner.device().to_string()
    }

    /// What is written on the tablet (`T-07`), as the administrator enrolled it.
    pub fn label(&self) -> String {
        self.inner.enrolment().label.clone()
    }

    pub fn wards(&self) -> Vec<String> {
        self.inner.enrolment().wards.clone()
    }

    /// The sync endpoint: give it to `SyncConfig.url`.
    pub fn sync_url(&self) -> String {
        let base = &self.inner.enrolment().server;
        let ws = base
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                base.strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            })
            .unwrap_or_else(|| base.clone());
        format!("{ws}/sync")
    }

    /// A person's first sign-in on this tablet, online (or a renewal once their certificate
    /// ended): their password is checked by the server, which certifies a new key for them
    /// here; the key is sealed under `pin` (6 to 12 digits). They are signed in.
    pub fn sign_in_online(
        &self,
        user: String,
        password: String,
        pin: String,
    ) -> Result<Arc<Session>, ChartsyncError> {
        chartsync_core::trust::check_pin(&pin)
            .map_err(|e| ChartsyncError::InvalidInput(e.to_string()))?;
        let base = self.inner.enrolment().server.clone();
        let (pending, request) = self
            .inner
            .sign_in_request(&user, &password, &challenge(&base)?);
        let url = format!("{base}/api/devices/{}/sign-in", self.inner.device());
        let answer: core_tablet::SignInResponse = post(&url, &request)?;
        let session = self.inner.finish_sign_in(pending, &answer, &pin)?;
        Ok(Arc::new(Session { inner: session }))
    }

    /// Signs in offline with the PIN. Wrong PINs are counted (`WrongPin`); at the limit the
    /// key is erased and the person must sign in online (`SignInRequired`).
    pub fn unlock(&self, user: String, pin: String) -> Result<Arc<Session>, ChartsyncError> {
        let session = self.inner.unlock(&user, &pin)?;
        Ok(Arc::new(Session { inner: session }))
    }

    /// Everyone who signed in on this tablet, and whether their PIN still works here.
    pub fn people(&self) -> Result<Vec<TabletPerson>, ChartsyncError> {
        let limit = self.inner.enrolment().policy.pin_attempts;
        Ok(self
            .store
            .inner
            .credentials()?
            .into_iter()
            .map(|c| TabletPerson {
                can_unlock: c.sealed.is_some(),
                pin_attempts_left: if c.sealed.is_some() {
                    limit.saturating_sub(c.failed_attempts)
                } else {
                    0
                },
                erased: c.erased_why,
                user: c.user,
            })
            .collect())
    }

    /// Signs a person out for good on this tablet: their sealed key is erased (what they
    /// wrote stays, and is sent). Their next sign-in here is online.
    pub fn forget(&self, user: String) -> Result<(), ChartsyncError> {
        Ok(self.store.inner.erase_credential(&user, "signed_out")?)
    }

    /// Break-glass: opens a chart outside the tablet's wards for the signed-in person, in an
    /// emergency, for the time the server allows (4 hours by default). `text` says what the
    /// emergency is. The grant is audited and reviewed by the privacy office. Then
    /// `SyncClient.fetch(chart_id)` brings the chart, and charts opened with the session
    /// write to it. Returns when the grant ends.
    pub fn break_glass(
        &self,
        session: Arc<Session>,
        chart_id: String,
        reason: BreakGlassReason,
        text: String,
    ) -> Result<Timestamp, ChartsyncError> {
        let chart = crate::error::chart_id(&chart_id)?;
        if text.trim().is_empty() {
            return Err(ChartsyncError::InvalidInput(
                "say what the emergency is".into(),
            ));
        }
        let request = session.inner.break_glass_request(&chart, reason, &text)?;
        let base = self.inner.enrolment().server.clone();
        let url = format!("{base}/api/devices/{}/break-glass", self.inner.device());
        #[derive(serde::Deserialize)]
        struct Granted {
            ends_at: Timestamp,
        }
        let granted: Granted = post(&url, &request)?;
        Ok(granted.ends_at)
    }

    /// Break-glass with no network, on a chart already on the tablet: recorded here, signed
    /// with the person's key, and filed for review with the chart's next sync; what the person
    /// charts under it is taken by the server. Returns when the grant ends.
    pub fn break_glass_offline(
        &self,
        session: Arc<Session>,
        chart_id: String,
        reason: BreakGlassReason,
        text: String,
    ) -> Result<Timestamp, ChartsyncError> {
        let chart = crate::error::chart_id(&chart_id)?;
        let grant = self
            .inner
            .break_glass_offline(&session.inner, chart, reason, &text)?;
        Ok(grant.ends_at)
    }

    /// A token for the tablet's sync connection (`SyncClient.start`, `set_token` after
    /// `SignInRequired`): the tablet proves it holds its key. Lasts 12 hours.
    pub fn session_token(&self) -> Result<String, ChartsyncError> {
        let base = self.inner.enrolment().server.clone();
        let request = self.inner.session_request(&challenge(&base)?);
        let url = format!("{base}/api/devices/{}/session", self.inner.device());
        let answer: core_tablet::SessionResponse = post(&url, &request)?;
        Ok(answer.token)
    }
}

/// The person signed in on the tablet. Charts opened with it write as them, each change
/// signed with their key. After the idle time the server set (5 minutes by default) with no
/// use, it locks itself: writes fail with `Locked` until the PIN is entered again
/// (`Tablet.unlock`).
#[derive(uniffi::Object)]
pub struct Session {
    pub(crate) inner: core_tablet::Session,
}

#[uniffi::export]
impl Session {
    /// Who writes: user, role (from their certificate) and this tablet.
    pub fn staff(&self) -> Staff {
        self.inner.staff().clone()
    }

    pub fn wards(&self) -> Vec<String> {
        self.inner.wards().to_vec()
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Locks now: the person walked away, or handed the tablet over.
    pub fn lock(&self) {
        self.inner.lock()
    }

    /// Counts as use (the person is reading), so the idle lock waits.
    pub fn touch(&self) {
        self.inner.touch()
    }
}
