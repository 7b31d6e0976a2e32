//! A shared ward tablet's sign-in (docs/adr/0008-shared-tablets.md), without I/O: the bodies
//! of the enrolment and sign-in requests, what to do with the server's answers, offline
//! sign-in with a PIN (counted, limited, erased at the limit), and the signed-in person's
//! session, which locks itself after the idle time the server set.
//!
//! An app (or the bindings) moves the bodies over HTTP; everything that decides anything is
//! here and in [`crate::trust`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::chart::{Role, Staff, Timestamp};
use crate::store::{ChartStore, Enrolment, StoreError, UnlockAttempt};
use crate::trust::{
    DeviceId, DeviceKey, KdfParams, Policy, SignedCertificate, TrustError, UnlockedKey,
};

/// `POST /api/devices/enrol`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub code: String,
    /// The device's Ed25519 public key, base64.
    pub public_key: String,
    pub challenge: String,
    /// The device key's signature over the challenge, base64.
    pub signature: String,
}

/// The server's answer to an enrolment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub device: String,
    pub label: String,
    pub wards: Vec<String>,
    /// The server's certificate issuer keys, base64: the tablet pins them.
    pub issuer_keys: Vec<String>,
    pub policy: Policy,
}

/// `POST /api/devices/{id}/sign-in`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub user: String,
    pub password: String,
    /// The person's new Ed25519 public key, base64.
    pub public_key: String,
    pub challenge: String,
    /// The new key's signature over `challenge ‖ device id` (possession).
    pub possession: String,
    /// The device key's signature over `challenge ‖ the new public key`.
    pub device_signature: String,
}

/// The server's answer to a sign-in: a certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignInResponse {
    /// The signed certificate, base64 of its wire form.
    pub certificate: String,
    pub serial: String,
    pub role: Role,
    pub wards: Vec<String>,
    pub not_after: Timestamp,
}

/// `POST /api/devices/{id}/session`: the tablet proves it holds its key and gets a token
/// for its sync connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub challenge: String,
    /// The device key's signature over the challenge, base64.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResponse {
    pub token: String,
    pub expires_at: Timestamp,
}

/// `POST /api/devices/{id}/break-glass`: a signed-in person asks to open a chart outside
/// their wards in an emergency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    pub serial: String,
    pub chart: String,
    /// `ETREAT` or `BTG`.
    pub reason: String,
    pub text: String,
    pub signed_at: i64,
    /// The person's signature, base64.
    pub signature: String,
}

/// What went wrong signing in on a tablet. Never names anything but user ids.
#[derive(Debug, thiserror::Error)]
pub enum TabletError {
    #[error("this tablet is not enrolled")]
    NotEnrolled,
    #[error("the server's answer does not fit what was asked: {0}")]
    BadAnswer(&'static str),
    #[error("{0}")]
    Trust(#[from] TrustError),
    #[error("the PIN is not right; {remaining} attempt(s) left before {user} must sign in online")]
    WrongPin { user: String, remaining: u32 },
    #[error("{user} has no key on this tablet (never signed in here, or erased after too many wrong PINs): sign in online")]
    NoKey { user: String },
    #[error("{user}'s certificate expired: sign in online")]
    Expired { user: String },
    #[error("{user} is locked after being idle: enter the PIN again")]
    Locked { user: String },
    #[error(
        "chart {0} is not on this tablet: break-glass offline opens only a chart the tablet has"
    )]
    NotHere(crate::chart::ChartId),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// An enrolled tablet.
pub struct Tablet {
    store: Arc<ChartStore>,
    key: DeviceKey,
    enrolment: Enrolment,
    kdf: KdfParams,
}

/// A sign-in under way: the new key waits for its certificate.
pub struct PendingSignIn {
    key: UnlockedKey,
}

impl Tablet {
    /// The tablet's identity from its store and the device secret the app keeps in its key
    /// store; `None` if it was never enrolled.
    pub fn open(
        store: Arc<ChartStore>,
        device_secret: &[u8],
        kdf: KdfParams,
    ) -> Result<Option<Tablet>, TabletError> {
        let key = DeviceKey::from_secret(device_secret)?;
        let Some(enrolment) = store.enrolment()? else {
            return Ok(None);
        };
        if enrolment.device != key.id() {
            return Err(TabletError::BadAnswer(
                "the store was enrolled with another device secret",
            ));
        }
        Ok(Some(Tablet {
            store,
            key,
            enrolment,
            kdf,
        }))
    }

    /// The body that redeems an administrator's enrolment code.
    pub fn enrol_request(
        device_secret: &[u8],
        code: &str,
        challenge: &[u8],
    ) -> Result<EnrolRequest, TabletError> {
        let key = DeviceKey::from_secret(device_secret)?;
        Ok(EnrolRequest {
            code: code.to_string(),
            public_key: B64.encode(key.public_key()),
            challenge: B64.encode(challenge),
            signature: B64.encode(key.sign_challenge(challenge)),
        })
    }

    /// Keeps the server's answer to an enrolment.
    pub fn finish_enrolment(
        store: Arc<ChartStore>,
        device_secret: &[u8],
        server: &str,
        answer: &EnrolResponse,
        kdf: KdfParams,
    ) -> Result<Tablet, TabletError> {
        let key = DeviceKey::from_secret(device_secret)?;
        if answer.device != key.id().to_string() {
            return Err(TabletError::BadAnswer("the server enrolled another device"));
        }
        let issuer_keys = answer
            .issuer_keys
            .iter()
            .map(|k| {
                B64.decode(k)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(TabletError::BadAnswer("an issuer key is not 32 bytes"))
            })
            .collect::<Result<Vec<[u8; 32]>, _>>()?;
        if issuer_keys.is_empty() {
            return Err(TabletError::BadAnswer("no issuer keys"));
        }
        let enrolment = Enrolment {
            device: key.id(),
            server: server.to_string(),
            label: answer.label.clone(),
            wards: answer.wards.clone(),
            issuer_keys,
            policy: answer.policy,
            enrolled_at: Timestamp::now(),
        };
        store.save_enrolment(&enrolment)?;
        Ok(Tablet {
            store,
            key,
            enrolment,
            kdf,
        })
    }

    pub fn enrolment(&self) -> &Enrolment {
        &self.enrolment
    }

    pub fn device(&self) -> DeviceId {
        self.key.id()
    }

    pub fn store(&self) -> &Arc<ChartStore> {
        &self.store
    }

    /// The body that asks for a sync session token for this tablet.
    pub fn session_request(&self, challenge: &[u8]) -> SessionRequest {
        SessionRequest {
            challenge: B64.encode(challenge),
            signature: B64.encode(self.key.sign_challenge(challenge)),
        }
    }

    /// A person's first sign-in here (or a renewal): a new key pair and the request body.
    pub fn sign_in_request(
        &self,
        user: &str,
        password: &str,
        challenge: &[u8],
    ) -> (PendingSignIn, SignInRequest) {
        let key = UnlockedKey::generate(user);
        let mut with_key = challenge.to_vec();
        with_key.extend_from_slice(&key.public_key());
        let mut with_device = challenge.to_vec();
        with_device.extend_from_slice(&self.key.id().0);
        let request = SignInRequest {
            user: user.to_string(),
            password: password.to_string(),
            public_key: B64.encode(key.public_key()),
            challenge: B64.encode(challenge),
            possession: B64.encode(key.sign_possession(&with_device)),
            device_signature: B64.encode(self.key.sign_challenge(&with_key)),
        };
        (PendingSignIn { key }, request)
    }

    /// Checks the certificate the server returned against the pinned issuer keys and what
    /// was asked, seals the key under `pin`, and keeps both: the person is signed in.
    pub fn finish_sign_in(
        &self,
        pending: PendingSignIn,
        answer: &SignInResponse,
        pin: &str,
    ) -> Result<Session, TabletError> {
        crate::trust::check_pin(pin)?;
        let bytes = B64
            .decode(&answer.certificate)
            .map_err(|_| TabletError::BadAnswer("the certificate is not base64"))?;
        let cert = SignedCertificate::from_bytes(&bytes, &self.enrolment.issuer_keys)?;
        let c = cert.certificate();
        if c.key != pending.key.public_key()
            || c.device != self.key.id()
            || c.user != pending.key.user()
        {
            return Err(TabletError::BadAnswer(
                "the certificate is for another key, device or person",
            ));
        }
        let key = pending.key.certified(c.serial);
        let sealed = key.seal(&self.key, pin, self.kdf)?;
        self.store.save_credential(&cert, &sealed)?;
        // Their own work held back for want of a proof goes now.
        self.store.sign_pending(&key)?;
        Ok(self.session(key, cert))
    }

    /// Offline sign-in with a PIN. Each attempt is counted before it is made; at the limit
    /// the sealed key is erased and the person must sign in online.
    pub fn unlock(&self, user: &str, pin: &str) -> Result<Session, TabletError> {
        crate::trust::check_pin(pin)?;
        let no_key = || TabletError::NoKey {
            user: user.to_string(),
        };
        let credential = self.store.credential(user)?.ok_or_else(no_key)?;
        let cert = self
            .store
            .certificate(credential.serial)?
            .ok_or_else(no_key)
            .and_then(|b| {
                Ok(SignedCertificate::from_bytes(
                    &b,
                    &self.enrolment.issuer_keys,
                )?)
            })?;
        let limit = self.enrolment.policy.pin_attempts.max(1);
        let n = match self.store.count_unlock_attempt(user, limit)? {
            UnlockAttempt::NoKey => return Err(no_key()),
            UnlockAttempt::Allowed { n, .. } => n,
        };
        let sealed = credential.sealed.ok_or_else(no_key)?;
        match sealed.unseal(pin, &self.key) {
            Ok(key) => {
                self.store.unlock_succeeded(user)?;
                if Timestamp::now().unix() > cert.certificate().not_after {
                    return Err(TabletError::Expired {
                        user: user.to_string(),
                    });
                }
                self.store.sign_pending(&key)?;
                Ok(self.session(key, cert))
            }
            Err(TrustError::WrongPin) => {
                if n >= limit {
                    self.store.erase_credential(user, "pin_attempts")?;
                }
                Err(TabletError::WrongPin {
                    user: user.to_string(),
                    remaining: limit - n,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Break-glass with no network, on a chart already on the tablet: the grant is recorded
    /// here, signed with the person's key, lasts as long as the server's policy says, and is
    /// sent for filing (and review) with the chart's next sync. Changes the person makes under
    /// it are taken by the server as made with access.
    pub fn break_glass_offline(
        &self,
        session: &Session,
        chart: crate::chart::ChartId,
        reason: crate::store::BreakGlassReason,
        text: &str,
    ) -> Result<crate::store::BreakGlass, TabletError> {
        if !self.store.contains(chart)? {
            return Err(TabletError::NotHere(chart));
        }
        let request = session.break_glass_request(&chart, reason, text)?;
        let serial = crate::trust::Serial::parse(&request.serial)?;
        let signature = B64
            .decode(&request.signature)
            .map_err(|_| TabletError::BadAnswer("a signature did not encode"))?;
        let starts_at = Timestamp::from_unix(request.signed_at)
            .map_err(|_| TabletError::BadAnswer("the clock is out of range"))?;
        let ends_at =
            Timestamp::from_unix(request.signed_at + self.enrolment.policy.break_glass_secs as i64)
                .map_err(|_| TabletError::BadAnswer("the clock is out of range"))?;
        let staff = session.staff();
        let by = crate::store::Actor {
            user: staff.user.clone(),
            role: staff.role.token().to_string(),
            device: staff.device.clone(),
        };
        let (grant, _) = self.store.grant_break_glass(&crate::store::NewBreakGlass {
            by: &by,
            chart,
            reason,
            text,
            starts_at,
            ends_at,
            granted: "offline",
            device: Some(&staff.device),
            signed: Some((&serial.0, &signature)),
            filed: false,
        })?;
        Ok(grant)
    }

    fn session(&self, key: UnlockedKey, cert: SignedCertificate) -> Session {
        let c = cert.certificate();
        Session {
            staff: Staff::new(c.user.clone(), c.role, self.key.id().to_string()),
            wards: c.wards.clone(),
            not_after: c.not_after,
            idle: Duration::from_secs(self.enrolment.policy.idle_lock_secs),
            unlocked: Mutex::new(Some((key, Instant::now()))),
        }
    }
}

/// The person signed in on the tablet. Their key is held only while they use it: after the
/// idle time with no use it is wiped, and writing needs the PIN again.
pub struct Session {
    staff: Staff,
    wards: Vec<String>,
    not_after: i64,
    idle: Duration,
    unlocked: Mutex<Option<(UnlockedKey, Instant)>>,
}

impl Session {
    /// Who writes: the user and role of their certificate, on this device.
    pub fn staff(&self) -> &Staff {
        &self.staff
    }

    pub fn wards(&self) -> &[String] {
        &self.wards
    }

    /// When the certificate ends (seconds since the epoch).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Whether the idle time has passed (and so the key is gone).
    pub fn is_locked(&self) -> bool {
        let mut unlocked = self.unlocked.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut unlocked);
        unlocked.is_none()
    }

    /// Locks now (the person walked away, or signed out).
    pub fn lock(&self) {
        self.unlocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Runs `f` with the person's key, counting it as use; refused once locked, and once
    /// the certificate has ended (the person signs in online for a new one).
    pub fn with_key<T>(&self, f: impl FnOnce(&UnlockedKey) -> T) -> Result<T, TabletError> {
        let mut unlocked = self.unlocked.lock().unwrap_or_else(|e| e.into_inner());
        if Timestamp::now().unix() > self.not_after {
            *unlocked = None;
            return Err(TabletError::Expired {
                user: self.staff.user.clone(),
            });
        }
        self.expire(&mut unlocked);
        match unlocked.as_mut() {
            Some((key, used)) => {
                *used = Instant::now();
                Ok(f(key))
            }
            None => Err(TabletError::Locked {
                user: self.staff.user.clone(),
            }),
        }
    }

    fn expire(&self, unlocked: &mut Option<(UnlockedKey, Instant)>) {
        if unlocked
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() >= self.idle)
        {
            // Dropping the key wipes it.
            *unlocked = None;
        }
    }

    /// The signed request for break-glass access to `chart`, for `reason` (`ETREAT`, `BTG`).
    pub fn break_glass_request(
        &self,
        chart: &crate::chart::ChartId,
        reason: crate::store::BreakGlassReason,
        text: &str,
    ) -> Result<BreakGlassRequest, TabletError> {
        self.with_key(|key| {
            let (signed_at, signature) = key.sign_break_glass(chart, reason.code(), text);
            BreakGlassRequest {
                serial: key.serial().to_string(),
                chart: chart.to_string(),
                reason: reason.code().to_string(),
                text: text.to_string(),
                signed_at,
                signature: B64.encode(signature),
            }
        })
    }

    /// Counted as use without writing (the person is reading a chart).
    pub fn touch(&self) {
        let _ = self.with_key(|_| ());
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.staff.user)
    }
}
