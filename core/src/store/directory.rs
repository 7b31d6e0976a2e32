//! The server's directory (docs/adr/0008-shared-tablets.md): staff with their roles and wards,
//! enrolled tablets, the certificates issued to people on them, and revocations. Every change
//! here is audited (`admin`, `sign_in`) in the same transaction. Passwords arrive already
//! hashed (Argon2id PHC strings); the store never sees one in the clear.

use super::sql::{params, Begin, OptionalExtension, Row, Sql};
use serde::{Deserialize, Serialize};

use super::{insert_audit, now_millis, Actor, AuditAction, ChartStore, StoreError};
use crate::chart::{check_identifier, Role, Timestamp};
use crate::trust::{DeviceId, Serial, SignedCertificate};

/// Whether a person or a device may still act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    Active,
    Revoked,
}

impl CredentialStatus {
    pub fn token(self) -> &'static str {
        match self {
            CredentialStatus::Active => "active",
            CredentialStatus::Revoked => "revoked",
        }
    }

    fn from_token(s: &str) -> CredentialStatus {
        if s == "active" {
            CredentialStatus::Active
        } else {
            CredentialStatus::Revoked
        }
    }
}

/// A person in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    pub status: CredentialStatus,
    /// `local` (entered here) or `import` (from the hospital's directory).
    pub source: String,
    pub has_password: bool,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// A person to add or change.
#[derive(Debug, Clone)]
pub struct NewStaff<'a> {
    pub user: &'a str,
    pub role: Role,
    pub wards: &'a [String],
    /// An Argon2id PHC string; `None` keeps the password the person has (or none).
    pub password: Option<&'a str>,
    pub source: &'a str,
}

/// An enrolled tablet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    #[serde(with = "device_id_text")]
    pub id: DeviceId,
    #[serde(with = "key_hex")]
    pub public_key: [u8; 32],
    pub label: String,
    pub wards: Vec<String>,
    pub status: CredentialStatus,
    pub enrolled_at: Timestamp,
    pub enrolled_by: String,
}

mod device_id_text {
    use super::DeviceId;
    pub fn serialize<S: serde::Serializer>(id: &DeviceId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

mod key_hex {
    pub fn serialize<S: serde::Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&hex::encode(key))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        hex::decode(&s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("not a 32-byte hex key"))
    }
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "subject", rename_all = "snake_case")]
pub enum Revoked {
    /// A person: every certificate they hold, on every device.
    Person(String),
    /// One certificate (its serial, hex).
    Certificate(String),
    /// A device (its id, hex): every certificate issued on it, and its own key.
    Device(String),
}

impl Revoked {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Revoked::Person(s) => ("person", s),
            Revoked::Certificate(s) => ("certificate", s),
            Revoked::Device(s) => ("device", s),
        }
    }
}

/// How far a revocation reaches back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Left, moved, superseded: changes proven as made before the effective time are taken.
    Administrative,
    /// Stolen, lost, a PIN disclosed: everything proven with it that arrives after the
    /// revocation is held, whatever time it claims.
    Compromised,
}

impl Severity {
    pub fn token(self) -> &'static str {
        match self {
            Severity::Administrative => "administrative",
            Severity::Compromised => "compromised",
        }
    }

    fn from_token(s: &str) -> Severity {
        if s == "administrative" {
            Severity::Administrative
        } else {
            Severity::Compromised
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub id: i64,
    #[serde(flatten)]
    pub what: Revoked,
    pub severity: Severity,
    pub effective_at: Timestamp,
    pub reason: String,
    pub revoked_by: String,
    pub entered_at: Timestamp,
}

/// A certificate as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub user: String,
    pub role: Role,
    pub device: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub issued_at: Timestamp,
}

fn wards_json(wards: &[String]) -> Result<String, StoreError> {
    if wards.is_empty() {
        return Err(StoreError::Invalid("at least one ward is needed".into()));
    }
    for w in wards {
        if w != "*" {
            check_identifier("ward", w).map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
    }
    Ok(serde_json::to_string(wards).unwrap_or_default())
}

fn parse_wards(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn at_millis(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap_or_else(|_| Timestamp::now())
}

fn at_secs(s: i64) -> Timestamp {
    Timestamp::from_unix(s).unwrap_or_else(|_| Timestamp::now())
}

fn staff_row(r: &Row<'_>) -> Result<(StaffMember, Option<String>), StoreError> {
    let role: String = r.get(1)?;
    let password: Option<String> = r.get(3)?;
    Ok((
        StaffMember {
            user: r.get(0)?,
            role: Role::from_token(&role).unwrap_or(Role::Technician),
            wards: parse_wards(&r.get::<_, String>(2)?),
            status: CredentialStatus::from_token(&r.get::<_, String>(4)?),
            source: r.get(5)?,
            has_password: password.is_some(),
            updated_at: at_millis(r.get(6)?),
            updated_by: r.get(7)?,
        },
        password,
    ))
}

const STAFF_COLUMNS: &str = "user, role, wards, password, status, source, updated_at, updated_by";

fn device_row(r: &Row<'_>) -> Result<Device, StoreError> {
    let id: Vec<u8> = r.get(0)?;
    let key: Vec<u8> = r.get(1)?;
    Ok(Device {
        id: DeviceId(id.try_into().unwrap_or([0; 16])),
        public_key: key.try_into().unwrap_or([0; 32]),
        label: r.get(2)?,
        wards: parse_wards(&r.get::<_, String>(3)?),
        status: CredentialStatus::from_token(&r.get::<_, String>(4)?),
        enrolled_at: at_millis(r.get(5)?),
        enrolled_by: r.get(6)?,
    })
}

const DEVICE_COLUMNS: &str = "id, public_key, label, wards, status, enrolled_at, enrolled_by";

fn revocation_row(r: &Row<'_>) -> Result<Revocation, StoreError> {
    let kind: String = r.get(1)?;
    let subject: String = r.get(2)?;
    Ok(Revocation {
        id: r.get(0)?,
        what: match kind.as_str() {
            "person" => Revoked::Person(subject),
            "certificate" => Revoked::Certificate(subject),
            _ => Revoked::Device(subject),
        },
        severity: Severity::from_token(&r.get::<_, String>(3)?),
        effective_at: at_millis(r.get(4)?),
        reason: r.get(5)?,
        revoked_by: r.get(6)?,
        entered_at: at_millis(r.get(7)?),
    })
}

const REVOCATION_COLUMNS: &str =
    "id, kind, subject, severity, effective_at, reason, revoked_by, entered_at";

impl ChartStore {
    /// Adds a person to the directory, or changes one. A change of role or wards revokes the
    /// person's certificates (administratively, from now): they carry the old role and wards,
    /// and the person gets new ones at their next online sign-in.
    pub fn put_staff(&self, by: &Actor, member: &NewStaff<'_>) -> Result<(), StoreError> {
        self.put_staff_all(by, std::slice::from_ref(member))
            .map(|_| ())
    }

    /// [`ChartStore::put_staff`] for many people in one transaction: all or none. Returns
    /// how many were new.
    pub fn put_staff_all(&self, by: &Actor, members: &[NewStaff<'_>]) -> Result<usize, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let now = now_millis();
        let mut added = 0;
        for m in members {
            check_identifier("user", m.user).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let wards = wards_json(m.wards)?;
            let before: Option<(String, String)> = tx
                .prepare_cached("SELECT role, wards FROM staff WHERE user = ?1")?
                .query_row([m.user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            tx.prepare_cached(
                "INSERT INTO staff (user, role, wards, password, source, updated_at, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (user) DO UPDATE SET role = ?2, wards = ?3,
                     password = coalesce(?4, staff.password), source = ?5, updated_at = ?6,
                     updated_by = ?7",
            )?
            .execute(params![
                m.user,
                m.role.token(),
                wards,
                m.password,
                m.source,
                now,
                by.user
            ])?;
            let detail = match &before {
                None => {
                    added += 1;
                    format!("staff {} added as {}", m.user, m.role.token())
                }
                Some((role, w)) if role != m.role.token() || parse_wards(w) != m.wards => {
                    let live: Vec<Vec<u8>> = tx
                        .prepare_cached(
                            "SELECT serial FROM certificates WHERE user = ?1 AND not_after * 1000 > ?2",
                        )?
                        .query_map(params![m.user, now], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for serial in live {
                        insert_revocation(
                            &tx,
                            &Revoked::Certificate(hex::encode(serial)),
                            Severity::Administrative,
                            now,
                            "the directory changed the person's role or wards",
                            &by.user,
                        )?;
                    }
                    format!("staff {} changed to {}", m.user, m.role.token())
                }
                Some(_) => format!("staff {} updated", m.user),
            };
            insert_audit(&tx, by, AuditAction::Admin, None, &[], Some(&detail))?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// One person, with their password's PHC string if they have one.
    pub fn staff_member(
        &self,
        user: &str,
    ) -> Result<Option<(StaffMember, Option<String>)>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {STAFF_COLUMNS} FROM staff WHERE user = ?1"
                ))?
                .query_row([user], staff_row)
                .optional()?)
        })
    }

    /// Everyone in the directory, by user id.
    pub fn staff(&self) -> Result<Vec<StaffMember>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {STAFF_COLUMNS} FROM staff ORDER BY user"))?;
            let rows = stmt.query_map(params![], |r| staff_row(r).map(|(m, _)| m))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Keeps a one-time enrolment code (by its hash) for a tablet on `wards`.
    pub fn new_enrolment(
        &self,
        by: &Actor,
        code_hash: &[u8; 32],
        label: &str,
        wards: &[String],
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        check_identifier("label", label).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let wards = wards_json(wards)?;
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO enrolment_codes (code_hash, label, wards, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![&code_hash[..], label, wards, by.user, now_millis(), expires_at.unix_millis()])?;
        let detail = format!("enrolment code made for device {label}");
        insert_audit(&tx, by, AuditAction::Admin, None, &[], Some(&detail))?;
        tx.commit()?;
        Ok(())
    }

    /// Redeems an enrolment code for the tablet with `public_key`: once, before it expires.
    pub fn redeem_enrolment(
        &self,
        code_hash: &[u8; 32],
        public_key: &[u8; 32],
    ) -> Result<Device, StoreError> {
        let id = DeviceId::of(public_key);
        let now = now_millis();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let code: Option<(String, String, String)> = tx
            .prepare_cached(
                "SELECT label, wards, created_by FROM enrolment_codes
                 WHERE code_hash = ?1 AND redeemed_at IS NULL AND expires_at > ?2",
            )?
            .query_row(params![&code_hash[..], now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((label, wards, created_by)) = code else {
            return Err(StoreError::BadEnrolmentCode);
        };
        let exists: bool = tx
            .prepare_cached("SELECT 1 FROM devices WHERE id = ?1")?
            .exists([&id.0[..]])?;
        if exists {
            return Err(StoreError::AlreadyEnrolled(id.to_string()));
        }
        tx.prepare_cached(
            "UPDATE enrolment_codes SET redeemed_at = ?2, device = ?3 WHERE code_hash = ?1",
        )?
        .execute(params![&code_hash[..], now, &id.0[..]])?;
        tx.prepare_cached(
            "INSERT INTO devices (id, public_key, label, wards, enrolled_at, enrolled_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &id.0[..],
            &public_key[..],
            label,
            wards,
            now,
            created_by
        ])?;
        let actor = Actor {
            user: created_by.clone(),
            role: Role::Admin.token().into(),
            device: id.to_string(),
        };
        let detail = format!("device {id} enrolled as {label}");
        insert_audit(&tx, &actor, AuditAction::Admin, None, &[], Some(&detail))?;
        tx.commit()?;
        Ok(Device {
            id,
            public_key: *public_key,
            label,
            wards: parse_wards(&wards),
            status: CredentialStatus::Active,
            enrolled_at: at_millis(now),
            enrolled_by: created_by,
        })
    }

    pub fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
                ))?
                .query_row([&id.0[..]], device_row)
                .optional()?)
        })
    }

    /// Every enrolled device, by label.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY label, id"
            ))?;
            let rows = stmt.query_map(params![], device_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Keeps a certificate issued (server) or received (tablet); `by` is audited as a sign-in.
    pub fn save_certificate(
        &self,
        by: Option<&Actor>,
        cert: &SignedCertificate,
    ) -> Result<(), StoreError> {
        let c = cert.certificate();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        insert_certificate(&tx, cert)?;
        if let Some(by) = by {
            let detail = format!("certificate {} issued on device {}", c.serial, c.device);
            insert_audit(&tx, by, AuditAction::SignIn, None, &[], Some(&detail))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A certificate's wire form, by serial.
    pub fn certificate(&self, serial: Serial) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT data FROM certificates WHERE serial = ?1")?
                .query_row([&serial.0[..]], |r| r.get(0))
                .optional()?)
        })
    }

    /// Certificates issued, newest first, for one person or one device or all.
    pub fn certificates(
        &self,
        user: Option<&str>,
        device: Option<DeviceId>,
    ) -> Result<Vec<IssuedCertificate>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT serial, user, role, device, not_before, not_after, issued_at
                 FROM certificates
                 WHERE (user = ?1 OR ?1 IS NULL) AND (device = ?2 OR ?2 IS NULL)
                 ORDER BY issued_at DESC, serial",
            )?;
            let rows = stmt.query_map(params![user, device.map(|d| d.0.to_vec())], |r| {
                let role: String = r.get(2)?;
                Ok(IssuedCertificate {
                    serial: hex::encode(r.get::<_, Vec<u8>>(0)?),
                    user: r.get(1)?,
                    role: Role::from_token(&role).unwrap_or(Role::Technician),
                    device: hex::encode(r.get::<_, Vec<u8>>(3)?),
                    not_before: at_secs(r.get(4)?),
                    not_after: at_secs(r.get(5)?),
                    issued_at: at_secs(r.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Revokes a person, a certificate or a device from `effective_at` (now, or earlier:
    /// "missing since 02:00"). A person or device revoked is marked so in the directory.
    pub fn revoke(
        &self,
        by: &Actor,
        what: &Revoked,
        severity: Severity,
        effective_at: Timestamp,
        reason: &str,
    ) -> Result<Revocation, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::ReasonRequired);
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let known = match what {
            Revoked::Person(user) => {
                tx.prepare_cached("UPDATE staff SET status = 'revoked' WHERE user = ?1")?
                    .execute([user])?
                    > 0
            }
            Revoked::Device(id) => {
                let id = DeviceId::parse(id).map_err(|e| StoreError::Invalid(e.to_string()))?;
                tx.prepare_cached("UPDATE devices SET status = 'revoked' WHERE id = ?1")?
                    .execute([&id.0[..]])?
                    > 0
            }
            Revoked::Certificate(serial) => {
                let serial =
                    Serial::parse(serial).map_err(|e| StoreError::Invalid(e.to_string()))?;
                tx.prepare_cached("SELECT 1 FROM certificates WHERE serial = ?1")?
                    .exists([&serial.0[..]])?
            }
        };
        if !known {
            let (kind, subject) = what.parts();
            return Err(match kind {
                "person" => StoreError::NoSuchStaff(subject.to_string()),
                "device" => StoreError::NoSuchDevice(subject.to_string()),
                _ => StoreError::Invalid(format!("no certificate {subject}")),
            });
        }
        let id = insert_revocation(
            &tx,
            what,
            severity,
            effective_at.unix_millis(),
            reason,
            &by.user,
        )?;
        let (kind, subject) = what.parts();
        let detail = format!(
            "{kind} {subject} revoked ({}) from {}",
            severity.token(),
            effective_at
        );
        insert_audit(&tx, by, AuditAction::Admin, None, &[], Some(&detail))?;
        let revocation = tx
            .prepare_cached(&format!(
                "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE id = ?1"
            ))?
            .query_row([id], revocation_row)?;
        tx.commit()?;
        Ok(revocation)
    }

    /// Every revocation, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REVOCATION_COLUMNS} FROM revocations ORDER BY id"
            ))?;
            let rows = stmt.query_map(params![], revocation_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The revocations that reach a certificate: of it, of its person, or of its device.
    pub fn revocations_of(
        &self,
        serial: Serial,
        user: &str,
        device: DeviceId,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REVOCATION_COLUMNS} FROM revocations
                 WHERE (kind = 'certificate' AND subject = ?1)
                    OR (kind = 'person' AND subject = ?2)
                    OR (kind = 'device' AND subject = ?3)
                 ORDER BY effective_at"
            ))?;
            let rows = stmt.query_map(
                params![serial.to_string(), user, device.to_string()],
                revocation_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

fn insert_revocation(
    tx: &Sql<'_>,
    what: &Revoked,
    severity: Severity,
    effective_at: i64,
    reason: &str,
    by: &str,
) -> Result<i64, StoreError> {
    let (kind, subject) = what.parts();
    tx.prepare_cached(
        "INSERT INTO revocations (kind, subject, severity, effective_at, reason, revoked_by, entered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         RETURNING id",
    )?
    .query_row(
        params![kind, subject, severity.token(), effective_at, reason, by, now_millis()],
        |r| r.get(0),
    )
}

/// Keeps a certificate (once).
pub(crate) fn insert_certificate(tx: &Sql<'_>, cert: &SignedCertificate) -> Result<(), StoreError> {
    let c = cert.certificate();
    tx.prepare_cached(
        "INSERT INTO certificates
             (serial, user, role, device, not_before, not_after, issued_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        &c.serial.0[..],
        c.user,
        c.role.token(),
        &c.device.0[..],
        c.not_before,
        c.not_after,
        c.issued_at,
        cert.to_bytes()
    ])?;
    Ok(())
}
