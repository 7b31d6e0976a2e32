//! The records office's own work on the chart audit's deficiencies: routing one to a person,
//! and acknowledging one that cannot be put right. The charts do not carry this (a physician's
//! tablet has no business with the office's routing); the store keeps it beside the index,
//! keyed by what identifies a deficiency, and the worklist shows it.

use super::sql::{params, Begin, OptionalExtension, Sql};
use serde::{Deserialize, Serialize};

use super::{insert_audit, Actor, AuditAction, ChartStore, StoreError};
use crate::chart::{ChartId, DeficiencyKind, Timestamp};

/// A deficiency as the worklist names it: the chart, and what the audit found where.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeficiencyRef {
    pub chart: ChartId,
    pub kind: DeficiencyKind,
    pub section: String,
    #[serde(default)]
    pub record_id: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// What an assignment changed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// Deficiencies now routed to the assignee (or back to the rules' responsible).
    pub deficiencies: usize,
    /// The charts they are on.
    pub charts: usize,
}

impl ChartStore {
    /// Routes open deficiencies to a person in the staff directory (`None`: back to whoever
    /// the audit's rules name), with one audit row per chart, in one transaction. If any of
    /// them is not open (put right since the worklist was read), nothing changes.
    pub fn assign_deficiencies(
        &self,
        by: &Actor,
        refs: &[DeficiencyRef],
        assignee: Option<&str>,
        now: Timestamp,
    ) -> Result<Assigned, StoreError> {
        if refs.is_empty() {
            return Err(StoreError::Invalid("no deficiency was chosen".into()));
        }
        if let Some(person) = assignee {
            if self.staff_member(person)?.is_none() {
                return Err(StoreError::NoSuchStaff(person.to_string()));
            }
        }
        let mut refs = refs.to_vec();
        refs.sort();
        refs.dedup();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let at = now.to_rfc3339();
        for r in &refs {
            let key = open_deficiency(&tx, r)?;
            tx.prepare_cached(
                "INSERT INTO deficiency_work (chart, kind, section, record_id, detail, assignee,
                     assigned_by, assigned_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (chart, kind, section, record_id, detail) DO UPDATE SET
                     assignee = excluded.assignee, assigned_by = excluded.assigned_by,
                     assigned_at = excluded.assigned_at",
            )?
            .execute(params![
                key,
                r.kind.token(),
                r.section,
                r.record_id,
                r.detail.as_deref().unwrap_or(""),
                assignee,
                by.user,
                at
            ])?;
        }
        // One row per chart: which deficiencies, to whom. Ids and tokens only.
        let mut charts = 0;
        for chunk in refs.chunk_by(|a, b| a.chart == b.chart) {
            let what: Vec<String> = chunk.iter().map(describe).collect();
            let detail = format!(
                "assigned to {}: {}",
                assignee.unwrap_or("the rules' responsible"),
                what.join(", ")
            );
            insert_audit(
                &tx,
                by,
                AuditAction::Assign,
                Some(chunk[0].chart),
                &[],
                Some(&detail),
            )?;
            charts += 1;
        }
        tx.commit()?;
        Ok(Assigned {
            deficiencies: refs.len(),
            charts,
        })
    }

    /// Acknowledges an open deficiency that cannot be put right in the chart: an H&P that was
    /// documented late stays late, and the office records that it has seen it and why. It
    /// stays on the worklist, marked, and is no longer overdue. Audited in the same
    /// transaction; the reason is kept in the store, not in the audit row.
    pub fn acknowledge_deficiency(
        &self,
        by: &Actor,
        r: &DeficiencyRef,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if r.kind != DeficiencyKind::HistoryPhysicalLate {
            return Err(StoreError::NotAcknowledgeable(r.kind.token()));
        }
        if reason.trim().is_empty() {
            return Err(StoreError::Invalid(
                "an acknowledgement needs a reason".into(),
            ));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let key = open_deficiency(&tx, r)?;
        tx.prepare_cached(
            "INSERT INTO deficiency_work (chart, kind, section, record_id, detail,
                 acknowledged_by, acknowledged_at, acknowledgement)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (chart, kind, section, record_id, detail) DO UPDATE SET
                 acknowledged_by = excluded.acknowledged_by,
                 acknowledged_at = excluded.acknowledged_at,
                 acknowledgement = excluded.acknowledgement",
        )?
        .execute(params![
            key,
            r.kind.token(),
            r.section,
            r.record_id,
            r.detail.as_deref().unwrap_or(""),
            by.user,
            now.to_rfc3339(),
            reason.trim()
        ])?;
        let detail = format!("acknowledged: {}", describe(r));
        insert_audit(
            &tx,
            by,
            AuditAction::Acknowledge,
            Some(r.chart),
            &[],
            Some(&detail),
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// The chart's key, if the deficiency is open in the index.
fn open_deficiency(tx: &Sql<'_>, r: &DeficiencyRef) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "SELECT d.chart FROM deficiencies d JOIN charts c ON c.key = d.chart
         WHERE c.id = ?1 AND d.kind = ?2 AND d.section = ?3 AND d.record_id = ?4
             AND COALESCE(d.detail, '') = ?5
         LIMIT 1",
    )?
    .query_row(
        params![
            r.chart.to_string(),
            r.kind.token(),
            r.section,
            r.record_id,
            r.detail.as_deref().unwrap_or("")
        ],
        |row| row.get(0),
    )
    .optional()?
    .ok_or(StoreError::NoSuchDeficiency(r.chart))
}

/// `history_physical_missing on encounter`, `unsigned_entry on entries/e-12`.
fn describe(r: &DeficiencyRef) -> String {
    if r.record_id.is_empty() {
        format!("{} on {}", r.kind.token(), r.section)
    } else {
        format!("{} on {}/{}", r.kind.token(), r.section, r.record_id)
    }
}
