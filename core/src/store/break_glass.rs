//! Break-glass access (45 CFR 164.312(a)(2)(ii), docs/adr/0008-shared-tablets.md): a person
//! opens a chart outside their wards in an emergency, with a reason from a closed list and
//! free text, for a limited time. The start and the end are audited, each grant waits in a
//! privacy review queue until someone reviews it with a note, and the chart's FHIR export
//! carries each as an AuditEvent with its purpose of use.

use super::sql::{params, Begin, OptionalExtension, Row, Sql};
use serde::{Deserialize, Serialize};

use super::{insert_audit, now_millis, Actor, AuditAction, ChartStore, StoreError};
use crate::chart::{ChartId, Timestamp};

/// Why, from HL7's purpose-of-use codes (v3 ActReason).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum BreakGlassReason {
    /// Emergency treatment.
    #[serde(rename = "ETREAT")]
    EmergencyTreatment,
    /// Break the glass: access outside the usual rules, for another urgent reason.
    #[serde(rename = "BTG")]
    BreakTheGlass,
}

impl BreakGlassReason {
    pub fn code(self) -> &'static str {
        match self {
            BreakGlassReason::EmergencyTreatment => "ETREAT",
            BreakGlassReason::BreakTheGlass => "BTG",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            BreakGlassReason::EmergencyTreatment => "Emergency Treatment",
            BreakGlassReason::BreakTheGlass => "break the glass",
        }
    }

    pub fn from_code(s: &str) -> Option<BreakGlassReason> {
        [
            BreakGlassReason::EmergencyTreatment,
            BreakGlassReason::BreakTheGlass,
        ]
        .into_iter()
        .find(|r| r.code() == s)
    }
}

/// One grant.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub id: i64,
    pub user: String,
    pub role: String,
    pub chart: ChartId,
    pub reason: BreakGlassReason,
    pub text: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// `online` (the server granted it) or `offline` (a tablet recorded it).
    pub granted: String,
    /// The tablet it was used on, if any.
    pub device: Option<String>,
    /// When it ended early (by the person), if it did.
    pub ended_at: Option<Timestamp>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Timestamp>,
    pub review_note: Option<String>,
}

impl BreakGlass {
    /// Whether it covers `at`.
    pub fn covers(&self, at: Timestamp) -> bool {
        self.starts_at <= at && at < self.ends_at && self.ended_at.is_none_or(|e| at < e)
    }
}

/// A grant asked for.
#[derive(Debug, Clone)]
pub struct NewBreakGlass<'a> {
    pub by: &'a Actor,
    pub chart: ChartId,
    pub reason: BreakGlassReason,
    pub text: &'a str,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub granted: &'a str,
    pub device: Option<&'a str>,
    /// A tablet's signed request: the certificate's serial and the signature.
    pub signed: Option<(&'a [u8], &'a [u8])>,
    /// Filed with the server (always, on the server; on a tablet, once the server says so).
    pub filed: bool,
}

/// A grant recorded on this tablet while offline, as it is sent for filing.
#[derive(Debug, Clone)]
pub struct UnfiledGrant {
    pub id: i64,
    pub chart: ChartId,
    pub grant: crate::trust::SignedGrant,
}

/// Which grants to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewFilter {
    Unreviewed,
    Reviewed,
    All,
}

const COLUMNS: &str = "id, user, role, chart_id, reason_code, reason_text, starts_at, ends_at,
    granted, device, ended_at, reviewed_by, reviewed_at, review_note";

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap_or_else(|_| Timestamp::now())
}

fn row(r: &Row<'_>) -> Result<(BreakGlass, String, String), StoreError> {
    let chart: String = r.get(3)?;
    let reason: String = r.get(4)?;
    let device: Option<String> = r.get(9)?;
    Ok((
        BreakGlass {
            id: r.get(0)?,
            user: r.get(1)?,
            role: r.get(2)?,
            chart: ChartId::from_bytes([0; 16]),
            reason: BreakGlassReason::from_code(&reason).unwrap_or(BreakGlassReason::BreakTheGlass),
            text: r.get(5)?,
            starts_at: at(r.get(6)?),
            ends_at: at(r.get(7)?),
            granted: r.get(8)?,
            device,
            ended_at: r.get::<_, Option<i64>>(10)?.map(at),
            reviewed_by: r.get(11)?,
            reviewed_at: r.get::<_, Option<i64>>(12)?.map(at),
            review_note: r.get(13)?,
        },
        chart,
        reason,
    ))
}

fn parse((mut g, chart, _): (BreakGlass, String, String)) -> Result<BreakGlass, StoreError> {
    g.chart = chart
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("break-glass grant {}: chart id", g.id)))?;
    Ok(g)
}

impl ChartStore {
    /// Files a grant and audits its start, in one transaction. The reason's text is required
    /// (what the emergency is), and the grant lasts no longer than `ends_at`. A signed request
    /// filed before gives back its grant (`false`: not new).
    pub fn grant_break_glass(
        &self,
        new: &NewBreakGlass<'_>,
    ) -> Result<(BreakGlass, bool), StoreError> {
        if new.text.trim().is_empty() {
            return Err(StoreError::ReasonRequired);
        }
        if new.ends_at <= new.starts_at {
            return Err(StoreError::Invalid(
                "a break-glass grant ends after it starts".into(),
            ));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        if let Some((_, signature)) = new.signed {
            let filed: Option<i64> = tx
                .prepare_cached("SELECT id FROM break_glass WHERE signature = ?1")?
                .query_row([signature], |r| r.get(0))
                .optional()?;
            if let Some(id) = filed {
                let grant = tx
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = ?1"))?
                    .query_row([id], row)?;
                return Ok((parse(grant)?, false));
            }
        }
        let id: i64 = tx.prepare_cached(
            "INSERT INTO break_glass (user, role, chart_id, reason_code, reason_text, starts_at,
                 ends_at, granted, device, filed_at, serial, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             RETURNING id",
        )?
        .query_row(params![
            new.by.user,
            new.by.role,
            new.chart.to_string(),
            new.reason.code(),
            new.text,
            new.starts_at.unix_millis(),
            new.ends_at.unix_millis(),
            new.granted,
            new.device,
            new.filed.then(now_millis),
            new.signed.map(|(s, _)| s),
            new.signed.map(|(_, s)| s)
        ], |r| r.get(0))?;
        let detail = format!(
            "break-glass {id} start ({}, {}), until {}",
            new.reason.code(),
            new.granted,
            new.ends_at
        );
        insert_audit(
            &tx,
            new.by,
            AuditAction::BreakGlass,
            Some(new.chart),
            &[],
            Some(&detail),
        )?;
        if new.ends_at.unix_millis() <= now_millis() {
            // Filed after it was over (a tablet offline throughout): its end is known too.
            end(&tx, id, new.by, new.chart, "ended before it was filed")?;
        }
        let grant = tx
            .prepare_cached(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = ?1"))?
            .query_row([id], row)?;
        tx.commit()?;
        Ok((parse(grant)?, true))
    }

    /// A grant by id.
    pub fn break_glass(&self, id: i64) -> Result<Option<BreakGlass>, StoreError> {
        let found = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = ?1"))?
                .query_row([id], row)
                .optional()?)
        })?;
        found.map(parse).transpose()
    }

    /// The grant that lets `user` (or, with `device`, anyone on that tablet) at `chart` at
    /// `at`, if there is one.
    pub fn active_break_glass(
        &self,
        user: Option<&str>,
        device: Option<&str>,
        chart: ChartId,
        at: Timestamp,
    ) -> Result<Option<BreakGlass>, StoreError> {
        let ms = at.unix_millis();
        let found = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM break_glass
                     WHERE chart_id = ?1 AND starts_at <= ?2 AND ?2 < ends_at
                       AND (ended_at IS NULL OR ?2 < ended_at)
                       AND ((user = ?3 AND ?3 IS NOT NULL) OR (device = ?4 AND ?4 IS NOT NULL))
                     ORDER BY ends_at DESC LIMIT 1"
                ))?
                .query_row(params![chart.to_string(), ms, user, device], row)
                .optional()?)
        })?;
        found.map(parse).transpose()
    }

    /// Grants recorded on this tablet (signed, offline) that the server has not yet filed,
    /// for one chart.
    pub fn unfiled_break_glass(&self, chart: ChartId) -> Result<Vec<UnfiledGrant>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, serial, reason_code, reason_text, signature, starts_at FROM break_glass
                 WHERE chart_id = ?1 AND filed_at IS NULL AND signature IS NOT NULL
                 ORDER BY id",
            )?;
            let rows = stmt.query_map([chart.to_string()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, serial, reason, text, signature, starts_at) = row?;
                let (Ok(serial), Ok(signature)) = (serial.try_into(), signature.try_into()) else {
                    continue;
                };
                out.push(UnfiledGrant {
                    id,
                    chart,
                    grant: crate::trust::SignedGrant {
                        serial: crate::trust::Serial(serial),
                        reason,
                        text,
                        signed_at: starts_at.div_euclid(1000),
                        signature,
                    },
                });
            }
            Ok(out)
        })
    }

    /// The server filed the grant with this signature (a tablet).
    pub fn break_glass_filed(&self, signature: &[u8]) -> Result<(), StoreError> {
        self.inner
            .writer()?
            .prepare_cached(
                "UPDATE break_glass SET filed_at = ?2 WHERE signature = ?1 AND filed_at IS NULL",
            )?
            .execute(params![signature, now_millis()])?;
        Ok(())
    }

    /// Grants of one chart, oldest first (its FHIR export).
    pub fn break_glass_of_chart(&self, chart: ChartId) -> Result<Vec<BreakGlass>, StoreError> {
        let rows = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM break_glass WHERE chart_id = ?1 ORDER BY starts_at, id"
            ))?;
            let rows = stmt.query_map([chart.to_string()], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(parse).collect()
    }

    /// The privacy review queue, oldest first.
    pub fn break_glass_queue(&self, filter: ReviewFilter) -> Result<Vec<BreakGlass>, StoreError> {
        let condition = match filter {
            ReviewFilter::Unreviewed => "reviewed_at IS NULL",
            ReviewFilter::Reviewed => "reviewed_at IS NOT NULL",
            ReviewFilter::All => "1",
        };
        let rows = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM break_glass WHERE {condition} ORDER BY starts_at, id"
            ))?;
            let rows = stmt.query_map(params![], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(parse).collect()
    }

    /// Ends a grant early (the emergency is over); audited as its end.
    pub fn end_break_glass(&self, id: i64, by: &Actor) -> Result<BreakGlass, StoreError> {
        let grant = self.break_glass(id)?.ok_or(StoreError::NoSuchGrant(id))?;
        if grant.ended_at.is_some() || grant.ends_at.unix_millis() <= now_millis() {
            return Ok(grant);
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        end(&tx, id, by, grant.chart, "ended")?;
        tx.commit()?;
        drop(conn);
        self.break_glass(id)?.ok_or(StoreError::NoSuchGrant(id))
    }

    /// Audits the end of every grant whose time ran out since the last sweep; how many.
    pub fn sweep_break_glass(&self) -> Result<usize, StoreError> {
        let now = now_millis();
        // Most sweeps find nothing: look first without taking the writer.
        let any: bool = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM break_glass WHERE ended_at IS NULL AND ends_at <= ?1 LIMIT 1",
                )?
                .exists([now])?)
        })?;
        if !any {
            return Ok(0);
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let due: Vec<(i64, String, String, String)> = tx
            .prepare_cached(
                "SELECT id, user, role, chart_id FROM break_glass
                 WHERE ended_at IS NULL AND ends_at <= ?1",
            )?
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut ended = 0;
        for (id, user, role, chart) in &due {
            let by = Actor {
                user: user.clone(),
                role: role.clone(),
                device: "chartsync-server".into(),
            };
            let chart: ChartId = chart
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("break-glass grant {id}: chart id")))?;
            ended += usize::from(end(&tx, *id, &by, chart, "time ran out")?);
        }
        tx.commit()?;
        Ok(ended)
    }

    /// Marks a grant reviewed, with the reviewer's note (required).
    pub fn review_break_glass(
        &self,
        id: i64,
        reviewer: &Actor,
        note: &str,
    ) -> Result<BreakGlass, StoreError> {
        if note.trim().is_empty() {
            return Err(StoreError::ReasonRequired);
        }
        let grant = self.break_glass(id)?.ok_or(StoreError::NoSuchGrant(id))?;
        if grant.reviewed_at.is_some() {
            return Err(StoreError::AlreadyDecided {
                id,
                status: "reviewed",
            });
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "UPDATE break_glass SET reviewed_by = ?2, reviewed_at = ?3, review_note = ?4
             WHERE id = ?1",
        )?
        .execute(params![id, reviewer.user, now_millis(), note])?;
        let detail = format!("break-glass {id} reviewed");
        insert_audit(
            &tx,
            reviewer,
            AuditAction::Review,
            Some(grant.chart),
            &[],
            Some(&detail),
        )?;
        tx.commit()?;
        drop(conn);
        self.break_glass(id)?.ok_or(StoreError::NoSuchGrant(id))
    }
}

/// Ends grant `id` and audits its end, unless it has ended already: whoever ends it first (a
/// person, the sweep, or the sweep on another server node at the same moment) writes the one
/// audit row. (PostgreSQL re-reads the row after a concurrent update before applying this one.)
fn end(tx: &Sql<'_>, id: i64, by: &Actor, chart: ChartId, how: &str) -> Result<bool, StoreError> {
    let ended = tx
        .prepare_cached(
            "UPDATE break_glass
             SET ended_at = CASE WHEN ends_at < ?2 THEN ends_at ELSE ?2 END
             WHERE id = ?1 AND ended_at IS NULL",
        )?
        .execute(params![id, now_millis()])?;
    if ended == 0 {
        return Ok(false);
    }
    let detail = format!("break-glass {id} end ({how})");
    insert_audit(
        tx,
        by,
        AuditAction::BreakGlass,
        Some(chart),
        &[],
        Some(&detail),
    )?;
    Ok(true)
}
