//! The tablet's side of shared-device sign-in (docs/adr/0008-shared-tablets.md): its
//! enrolment, the certificates and PIN-sealed keys of the people who signed in on it, the
//! count of wrong PINs, and the proofs of authorship of the changes made on it, kept in the
//! same transaction as the changes.

use super::sql::{params, Begin, OptionalExtension, Row, Sql};
use automerge::ChangeHash;

use super::{now_millis, ChartStore, StoreError};
use crate::chart::{ChartId, Timestamp};
use crate::trust::{ChangeProof, DeviceId, Policy, SealedKey, Serial, UnlockedKey};

/// What the tablet keeps of its enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub device: DeviceId,
    /// The server's base URL.
    pub server: String,
    pub label: String,
    pub wards: Vec<String>,
    /// The server's certificate issuer keys, pinned at enrolment.
    pub issuer_keys: Vec<[u8; 32]>,
    pub policy: Policy,
    pub enrolled_at: Timestamp,
}

/// A person who signed in on this tablet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCredential {
    pub user: String,
    /// Their current certificate's serial.
    pub serial: Serial,
    /// Their key, sealed under their PIN; `None` once erased.
    pub sealed: Option<SealedKey>,
    pub failed_attempts: u32,
    pub last_unlock: Option<Timestamp>,
    /// Why the key was erased: `pin_attempts`, `revoked`, `signed_out`.
    pub erased_why: Option<String>,
}

/// The outcome of counting a PIN attempt before it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockAttempt {
    /// Go ahead: this is attempt `n` of `limit`.
    Allowed { n: u32, limit: u32 },
    /// No key to open: never signed in here, or erased.
    NoKey,
}

pub(crate) fn prove(
    signer: &UnlockedKey,
    chart: ChartId,
    hashes: &[ChangeHash],
) -> Vec<ChangeProof> {
    hashes.iter().map(|h| signer.prove(chart, *h)).collect()
}

/// Keeps proofs: made here (`received_at` `None`), or received from a tablet.
pub(crate) fn insert_proofs(
    tx: &Sql<'_>,
    chart: ChartId,
    proofs: &[ChangeProof],
    received_at: Option<i64>,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO change_proofs
             (hash, serial, chart_id, signed_at, signature, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT DO NOTHING",
    )?;
    let chart = chart.to_string();
    for p in proofs {
        stmt.execute(params![
            &p.hash.0[..],
            &p.serial.0[..],
            chart,
            p.signed_at,
            &p.signature[..],
            received_at
        ])?;
    }
    Ok(())
}

impl ChartStore {
    /// Keeps the tablet's enrolment (replacing an earlier one: a tablet enrolled again).
    pub fn save_enrolment(&self, e: &Enrolment) -> Result<(), StoreError> {
        let keys: Vec<u8> = e.issuer_keys.iter().flatten().copied().collect();
        let conn = self.inner.writer()?;
        conn.prepare_cached(
            "INSERT INTO device_identity
                 (singleton, device, server, label, wards, issuer_keys, policy, enrolled_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (singleton) DO UPDATE SET device = ?1, server = ?2, label = ?3,
                 wards = ?4, issuer_keys = ?5, policy = ?6, enrolled_at = ?7",
        )?
        .execute(params![
            &e.device.0[..],
            e.server,
            e.label,
            serde_json::to_string(&e.wards).unwrap_or_default(),
            keys,
            serde_json::to_string(&e.policy).unwrap_or_default(),
            e.enrolled_at.unix_millis()
        ])?;
        Ok(())
    }

    /// The tablet's enrolment, if it has one.
    pub fn enrolment(&self) -> Result<Option<Enrolment>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT device, server, label, wards, issuer_keys, policy, enrolled_at
                     FROM device_identity WHERE singleton = 1",
                )?
                .query_row(params![], |r| {
                    let device: Vec<u8> = r.get(0)?;
                    let keys: Vec<u8> = r.get(4)?;
                    Ok(Enrolment {
                        device: DeviceId(device.try_into().unwrap_or([0; 16])),
                        server: r.get(1)?,
                        label: r.get(2)?,
                        wards: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                        issuer_keys: keys
                            .chunks_exact(32)
                            .filter_map(|k| k.try_into().ok())
                            .collect(),
                        policy: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                        enrolled_at: Timestamp::from_unix_millis(r.get(6)?)
                            .unwrap_or_else(|_| Timestamp::now()),
                    })
                })
                .optional()?)
        })
    }

    /// After an online sign-in: the person's new certificate and their key sealed under the
    /// PIN they chose, in one transaction; their wrong-PIN count starts again.
    pub fn save_credential(
        &self,
        cert: &crate::trust::SignedCertificate,
        sealed: &SealedKey,
    ) -> Result<(), StoreError> {
        let c = cert.certificate();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        super::directory::insert_certificate(&tx, cert)?;
        tx.prepare_cached(
            "INSERT INTO local_credentials (user, serial, sealed, failed_attempts, last_unlock)
             VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT (user) DO UPDATE SET serial = ?2, sealed = ?3, failed_attempts = 0,
                 last_unlock = ?4, erased_at = NULL, erased_why = NULL",
        )?
        .execute(params![
            c.user,
            &c.serial.0[..],
            sealed.to_bytes(),
            now_millis()
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// The people who signed in on this tablet, by user id.
    pub fn credentials(&self) -> Result<Vec<LocalCredential>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CREDENTIAL_COLUMNS} FROM local_credentials ORDER BY user"
            ))?;
            let rows = stmt.query_map(params![], credential_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|r| r.parse())
                .collect()
        })
    }

    pub fn credential(&self, user: &str) -> Result<Option<LocalCredential>, StoreError> {
        let raw = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM local_credentials WHERE user = ?1"
                ))?
                .query_row([user], credential_row)
                .optional()?)
        })?;
        raw.map(|r| r.parse()).transpose()
    }

    /// Counts a PIN attempt before it is made, durably: a tablet switched off mid-attempt
    /// has still spent it. At the limit the sealed key is erased first and no attempt is
    /// allowed.
    pub fn count_unlock_attempt(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<UnlockAttempt, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let row: Option<(u32, bool)> = tx
            .prepare_cached(
                "SELECT failed_attempts, sealed IS NOT NULL FROM local_credentials WHERE user = ?1",
            )?
            .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let outcome = match row {
            None | Some((_, false)) => UnlockAttempt::NoKey,
            Some((n, true)) if n >= limit => {
                erase(&tx, user, "pin_attempts")?;
                UnlockAttempt::NoKey
            }
            Some((n, true)) => {
                tx.prepare_cached(
                    "UPDATE local_credentials SET failed_attempts = ?2 WHERE user = ?1",
                )?
                .execute(params![user, n + 1])?;
                UnlockAttempt::Allowed { n: n + 1, limit }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// The PIN was right: the count starts again.
    pub fn unlock_succeeded(&self, user: &str) -> Result<(), StoreError> {
        self.inner.writer()?
            .prepare_cached(
                "UPDATE local_credentials SET failed_attempts = 0, last_unlock = ?2 WHERE user = ?1",
            )?
            .execute(params![user, now_millis()])?;
        Ok(())
    }

    /// Erases a person's sealed key (`why`: `pin_attempts`, `revoked`, `signed_out`); they
    /// need an online sign-in to write on this tablet again. Their certificate and the
    /// proofs they made stay.
    pub fn erase_credential(&self, user: &str, why: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        erase(&tx, user, why)?;
        tx.commit()?;
        Ok(())
    }

    /// Changes to `chart` that the server has not acknowledged and that no usable proof stands
    /// for, with the author each names: no proof at all (written unsigned, or before the tablet
    /// was enrolled), or only proofs under certificates the server no longer takes (ended more
    /// than [`crate::trust::PROOF_GRACE_SECS`] ago: a tablet offline for long). The tablet holds
    /// back those its own people wrote until they sign in again.
    pub fn unproven_changes(
        &self,
        chart: ChartId,
    ) -> Result<Vec<(ChangeHash, Option<crate::chart::Staff>)>, StoreError> {
        let acknowledged = self.acknowledged(chart)?;
        let pending: Vec<(ChangeHash, Option<crate::chart::Staff>)> = self.read(chart, |c| {
            c.doc()
                .get_changes(&acknowledged)
                .iter()
                .map(|ch| (ch.hash(), c.author_of(ch)))
                .collect()
        })?;
        if pending.is_empty() {
            return Ok(pending);
        }
        let hashes: Vec<ChangeHash> = pending.iter().map(|(h, _)| *h).collect();
        let now = crate::chart::Timestamp::now().unix();
        let mut usable: std::collections::HashMap<Serial, bool> = Default::default();
        let mut proven: std::collections::HashSet<ChangeHash> = Default::default();
        for p in self.proofs_for(chart, &hashes)? {
            let ok = match usable.get(&p.serial) {
                Some(ok) => *ok,
                None => {
                    let ended: Option<i64> = self.inner.with_reader(|conn| {
                        Ok(conn
                            .prepare_cached("SELECT not_after FROM certificates WHERE serial = ?1")?
                            .query_row([&p.serial.0[..]], |r| r.get(0))
                            .optional()?)
                    })?;
                    let ok = ended.is_some_and(|e| now <= e + crate::trust::PROOF_GRACE_SECS);
                    usable.insert(p.serial, ok);
                    ok
                }
            };
            if ok {
                proven.insert(p.hash);
            }
        }
        Ok(pending
            .into_iter()
            .filter(|(h, _)| !proven.contains(h))
            .collect())
    }

    /// Signs, as `signer`, the unproven changes on every chart that name them as author (their
    /// own work from before the tablet was enrolled, or before they signed in), so that it can
    /// be sent: what was held back waiting for them goes. The charts whose changes are now all
    /// proven are announced on the change feed, so a running sync client sends them.
    pub fn sign_pending(&self, signer: &UnlockedKey) -> Result<Vec<ChartId>, StoreError> {
        let Some(enrolment) = self.enrolment()? else {
            return Ok(Vec::new());
        };
        let here = enrolment.device.to_string();
        let mut done = Vec::new();
        for id in self.unacknowledged_charts()? {
            let pending = self.unproven_changes(id)?;
            let mine: Vec<ChangeHash> = pending
                .iter()
                .filter(|(_, a)| {
                    a.as_ref()
                        .is_some_and(|a| a.user == signer.user() && a.device == here)
                })
                .map(|(h, _)| *h)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let proofs = prove(signer, id, &mine);
            {
                let mut conn = self.inner.writer()?;
                let tx = conn.transaction(Begin::Immediate)?;
                insert_proofs(&tx, id, &proofs, None)?;
                tx.commit()?;
            }
            if mine.len() == pending.len() {
                let heads = self.read(id, |c| c.heads())?;
                self.inner.feed.publish(&super::ChartChanged {
                    id,
                    heads,
                    sections: Default::default(),
                    created: false,
                });
                done.push(id);
            }
        }
        Ok(done)
    }

    /// The proofs this store holds for `hashes` in `chart`.
    pub fn proofs_for(
        &self,
        chart: ChartId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<ChangeProof>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT serial, signed_at, signature FROM change_proofs
                 WHERE hash = ?1 AND chart_id = ?2",
            )?;
            let chart = chart.to_string();
            let mut out = Vec::new();
            for h in hashes {
                let rows = stmt.query_map(params![&h.0[..], chart], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?;
                for row in rows {
                    let (serial, signed_at, signature) = row?;
                    if let (Ok(serial), Ok(signature)) = (serial.try_into(), signature.try_into()) {
                        out.push(ChangeProof {
                            hash: *h,
                            serial: Serial(serial),
                            signed_at,
                            signature,
                        });
                    }
                }
            }
            Ok(out)
        })
    }
}

fn erase(tx: &Sql<'_>, user: &str, why: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE local_credentials SET sealed = NULL, erased_at = ?2, erased_why = ?3
         WHERE user = ?1 AND sealed IS NOT NULL",
    )?
    .execute(params![user, now_millis(), why])?;
    Ok(())
}

const CREDENTIAL_COLUMNS: &str = "user, serial, sealed, failed_attempts, last_unlock, erased_why";

struct RawCredential {
    user: String,
    serial: Vec<u8>,
    sealed: Option<Vec<u8>>,
    failed_attempts: u32,
    last_unlock: Option<i64>,
    erased_why: Option<String>,
}

fn credential_row(r: &Row<'_>) -> Result<RawCredential, StoreError> {
    Ok(RawCredential {
        user: r.get(0)?,
        serial: r.get(1)?,
        sealed: r.get(2)?,
        failed_attempts: r.get(3)?,
        last_unlock: r.get(4)?,
        erased_why: r.get(5)?,
    })
}

impl RawCredential {
    fn parse(self) -> Result<LocalCredential, StoreError> {
        let damaged =
            |what: &str| StoreError::Corrupt(format!("the credential of {}: {what}", self.user));
        Ok(LocalCredential {
            serial: Serial(
                self.serial
                    .clone()
                    .try_into()
                    .map_err(|_| damaged("serial"))?,
            ),
            sealed: self
                .sealed
                .as_deref()
                .map(SealedKey::from_bytes)
                .transpose()
                .map_err(|_| damaged("sealed key"))?,
            failed_attempts: self.failed_attempts,
            last_unlock: self
                .last_unlock
                .and_then(|ms| Timestamp::from_unix_millis(ms).ok()),
            erased_why: self.erased_why.clone(),
            user: self.user,
        })
    }
}
