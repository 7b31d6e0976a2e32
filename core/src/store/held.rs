//! The holding area (server) and the device's record of what the server holds.
//!
//! The server keeps every batch of changes it will not merge on its own here, with the chart,
//! the device, the person signed in, the reason and the time: not merged, not sent to other
//! devices, never deleted. A records supervisor accepts (merged, attributed to its author) or
//! rejects (kept, with the decision) each one. Quotas per device and in total keep the area
//! bounded; past a quota nothing new is held and nothing held is dropped, and the device keeps
//! the changes and tries again later.
//!
//! The device keeps, per chart, the server's last word on it (`device_holds`) and the heads the
//! server has acknowledged (`acknowledged_heads`), so that what is held and what is still to
//! send are known while offline and across restarts.

use super::sql::{params, Begin, OptionalExtension, Row, Sql};
use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use super::{heads_blob, insert_audit, lock, now_millis, parse_heads_blob, Actor, AuditAction};
use super::{ChartStore, StoreError};
use crate::chart::{ChartError, ChartId, Timestamp};
use crate::protocol::{HoldReason, LeftReason};

/// How much one person's sign-in, and everyone together, may have waiting for review. Per
/// person, not per device: a device names itself, and an automerge-repo app picks a new peer
/// id each time it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldQuota {
    pub per_user_holds: u32,
    pub per_user_bytes: u64,
    pub total_bytes: u64,
}

impl Default for HoldQuota {
    /// A shift's refused batches are a handful; 200 or 64 MiB for one person is a device
    /// misbehaving, and 2 GiB in total a server under attack.
    fn default() -> Self {
        HoldQuota {
            per_user_holds: 200,
            per_user_bytes: 64 << 20,
            total_bytes: 2 << 30,
        }
    }
}

/// A batch of changes to hold.
#[derive(Debug)]
pub struct NewHold<'a> {
    pub chart: ChartId,
    /// Who was signed in on the connection, and the device's peer id.
    pub actor: &'a Actor,
    /// The device's storage id, when it has one.
    pub storage: Option<&'a str>,
    pub reason: HoldReason,
    /// Why, in ids and paths only.
    pub summary: &'a str,
    /// The changes, each as automerge change bytes.
    pub changes: &'a [(ChangeHash, Vec<u8>)],
    /// The proofs of authorship they came with (a `ProofBundle`'s bytes), from a tablet.
    pub proofs: Option<&'a [u8]>,
    /// Whose key signed them, when that verified.
    pub signer: Option<&'a str>,
}

/// What became of a batch sent to [`ChartStore::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held now, as this hold.
    New(i64),
    /// Every change was already held (a device sending them again): this hold has them.
    Already(i64),
    /// The device's, or the server's, quota is spent: nothing was held.
    QuotaExceeded,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Pending,
    Accepted,
    Rejected,
}

impl HoldStatus {
    pub fn token(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Accepted => "accepted",
            HoldStatus::Rejected => "rejected",
        }
    }

    fn from_token(s: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Pending,
            HoldStatus::Accepted,
            HoldStatus::Rejected,
        ]
        .into_iter()
        .find(|h| h.token() == s)
    }
}

/// One held batch, as a records supervisor lists it (without the change bytes).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBatch {
    pub id: i64,
    pub chart: ChartId,
    pub device: String,
    pub user: String,
    pub role: String,
    pub reason: HoldReason,
    pub summary: String,
    /// Hex change hashes.
    pub changes: Vec<String>,
    pub bytes: u64,
    pub held_at: Timestamp,
    pub status: HoldStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub decision_reason: Option<String>,
    /// From an enrolled tablet: whose key signed the changes, when that verified (`user` is
    /// then the same person); `None` for a person's token, or a tablet's unproven changes.
    pub signer: Option<String>,
}

/// The server's last word on a chart, as the device keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct DeviceHold {
    pub chart: ChartId,
    /// The server's hold id, when it gave one.
    pub hold: Option<i64>,
    pub reason: HoldReason,
    pub summary: String,
    pub since: Timestamp,
    /// A records supervisor rejected the changes, for this reason: they will never reach the
    /// record, and the chart on this device differs from the record until it is replaced.
    pub rejected: Option<String>,
}

const BATCH_COLUMNS: &str = "id, chart_id, device, user, role, reason, summary, hashes, bytes,
     held_at, status, decided_by, decided_at, decision_reason, signer";

fn batch_row(r: &Row<'_>) -> Result<RawBatch, StoreError> {
    Ok(RawBatch {
        id: r.get(0)?,
        chart: r.get(1)?,
        device: r.get(2)?,
        user: r.get(3)?,
        role: r.get(4)?,
        reason: r.get(5)?,
        summary: r.get(6)?,
        hashes: r.get(7)?,
        bytes: r.get(8)?,
        held_at: r.get(9)?,
        status: r.get(10)?,
        decided_by: r.get(11)?,
        decided_at: r.get(12)?,
        decision_reason: r.get(13)?,
        signer: r.get(14)?,
    })
}

struct RawBatch {
    id: i64,
    chart: String,
    device: String,
    user: String,
    role: String,
    reason: String,
    summary: String,
    hashes: String,
    bytes: i64,
    held_at: i64,
    status: String,
    decided_by: Option<String>,
    decided_at: Option<i64>,
    decision_reason: Option<String>,
    signer: Option<String>,
}

impl RawBatch {
    fn parse(self) -> Result<HeldBatch, StoreError> {
        let bad = |what: &str| {
            StoreError::Corrupt(format!("held change {} has an invalid {what}", self.id))
        };
        let time = |ms: i64| Timestamp::from_unix_millis(ms).map_err(|_| bad("time"));
        Ok(HeldBatch {
            id: self.id,
            chart: self.chart.parse().map_err(|_| bad("chart id"))?,
            device: self.device.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            reason: HoldReason::from_token(&self.reason).ok_or_else(|| bad("reason"))?,
            summary: self.summary.clone(),
            changes: self.hashes.split_whitespace().map(String::from).collect(),
            bytes: self.bytes.max(0) as u64,
            held_at: time(self.held_at)?,
            status: HoldStatus::from_token(&self.status).ok_or_else(|| bad("status"))?,
            decided_by: self.decided_by.clone(),
            decided_at: self.decided_at.map(time).transpose()?,
            decision_reason: self.decision_reason.clone(),
            signer: self.signer.clone(),
        })
    }
}

fn decide(
    tx: &Sql<'_>,
    id: i64,
    status: HoldStatus,
    reviewer: &Actor,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    // Only a pending hold: two supervisors deciding at once cannot both win, and the loser's
    // transaction (with any merge in it) rolls back.
    let updated = tx.execute(
        "UPDATE held_changes SET status = ?2, decided_by = ?3, decided_at = ?4,
             decision_reason = ?5 WHERE id = ?1 AND status = 'pending'",
        params![id, status.token(), reviewer.user, now_millis(), reason],
    )?;
    if updated != 1 {
        return Err(StoreError::AlreadyDecided {
            id,
            status: "decided",
        });
    }
    Ok(())
}

impl ChartStore {
    /// Keeps a batch of changes the server will not merge on its own, durably, with an audit
    /// row in the same transaction. Changes already held are not held twice.
    pub fn hold(&self, new: NewHold<'_>, quota: &HoldQuota) -> Result<Held, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        // Which of these changes are held already, and where.
        let mut known: Vec<i64> = Vec::new();
        let mut fresh: Vec<&(ChangeHash, Vec<u8>)> = Vec::new();
        {
            let mut find =
                tx.prepare_cached("SELECT held FROM held_change_hashes WHERE hash = ?1")?;
            for change in new.changes {
                match find
                    .query_row([&change.0 .0[..]], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    Some(id) => known.push(id),
                    None => fresh.push(change),
                }
            }
        }
        if fresh.is_empty() {
            // Nothing new. A hold still pending answers for them, else the latest decided.
            known.sort_unstable();
            known.dedup();
            let mut pending = None;
            for id in known.iter().rev() {
                let status: String =
                    tx.query_row("SELECT status FROM held_changes WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                if status == HoldStatus::Pending.token() {
                    pending = Some(*id);
                    break;
                }
            }
            let id = pending.or(known.last().copied()).unwrap_or(0);
            return Ok(Held::Already(id));
        }
        let bytes: i64 = fresh.iter().map(|(_, b)| b.len() as i64).sum();
        let (user_holds, user_bytes): (i64, i64) = tx.query_row(
            "SELECT count(*), CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM held_changes
             WHERE user = ?1 AND status = 'pending'",
            [&new.actor.user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let total_bytes: i64 = tx.query_row(
            "SELECT CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM held_changes WHERE status = 'pending'",
            params![],
            |r| r.get(0),
        )?;
        if user_holds >= i64::from(quota.per_user_holds)
            || (user_bytes + bytes) as u64 > quota.per_user_bytes
            || (total_bytes + bytes) as u64 > quota.total_bytes
        {
            return Ok(Held::QuotaExceeded);
        }
        let hashes: Vec<ChangeHash> = fresh.iter().map(|(h, _)| *h).collect();
        let hex = hashes
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let blob: Vec<u8> = fresh.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO held_changes (chart_id, device, storage, user, role, reason, summary,
                 changes, hashes, bytes, held_at, proofs, signer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             RETURNING id",
            )?
            .query_row(
                params![
                    new.chart.to_string(),
                    new.actor.device,
                    new.storage,
                    new.actor.user,
                    new.actor.role,
                    new.reason.token(),
                    new.summary,
                    blob,
                    hex,
                    bytes,
                    now_millis(),
                    new.proofs,
                    new.signer
                ],
                |r| r.get(0),
            )?;
        {
            let mut add =
                tx.prepare_cached("INSERT INTO held_change_hashes (hash, held) VALUES (?1, ?2)")?;
            for h in &hashes {
                add.execute(params![&h.0[..], id])?;
            }
        }
        let detail = format!("held for review as hold {id}: {}", new.reason.token());
        insert_audit(
            &tx,
            new.actor,
            AuditAction::Hold,
            Some(new.chart),
            &hashes,
            Some(&detail),
        )?;
        tx.commit()?;
        Ok(Held::New(id))
    }

    /// The pending hold that has this change, if any: a change that builds on a held change
    /// is held too.
    pub fn held_change(&self, hash: &ChangeHash) -> Result<Option<(i64, HoldStatus)>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT h.id, h.status FROM held_change_hashes x
                     JOIN held_changes h ON h.id = x.held WHERE x.hash = ?1",
                )?
                .query_row([&hash.0[..]], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
                .and_then(|(id, s)| HoldStatus::from_token(&s).map(|s| (id, s))))
        })
    }

    /// Held batches, newest first: one chart's, or every chart's; of one status, or all.
    pub fn held_batches(
        &self,
        chart: Option<ChartId>,
        status: Option<HoldStatus>,
    ) -> Result<Vec<HeldBatch>, StoreError> {
        let raw: Vec<RawBatch> = self.inner.with_reader(|conn| {
            let sql = format!(
                "SELECT {BATCH_COLUMNS} FROM held_changes
                 WHERE (chart_id = ?1 OR ?1 IS NULL) AND (status = ?2 OR ?2 IS NULL)
                 ORDER BY id DESC"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![chart.map(|c| c.to_string()), status.map(HoldStatus::token)],
                batch_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        raw.into_iter().map(RawBatch::parse).collect()
    }

    /// One held batch and its change bytes.
    pub fn held_batch(&self, id: i64) -> Result<Option<(HeldBatch, Vec<u8>)>, StoreError> {
        let found = self.inner.with_reader(|conn| {
            let sql = format!("SELECT {BATCH_COLUMNS}, changes FROM held_changes WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], |r| Ok((batch_row(r)?, r.get::<_, Vec<u8>>(15)?)))
                .optional()?)
        })?;
        found
            .map(|(raw, bytes)| Ok((raw.parse()?, bytes)))
            .transpose()
    }

    /// Merges held changes into the record, attributed to the person who wrote them, with
    /// the reviewer's acceptance audited in the same transaction. The changes must still keep
    /// the chart's structure (only the code tables may disagree), and may build only on what
    /// the record has.
    pub fn accept_hold(&self, id: i64, reviewer: &Actor) -> Result<HeldBatch, StoreError> {
        let (batch, bytes) = self.held_batch(id)?.ok_or(StoreError::NoSuchHold(id))?;
        if batch.status != HoldStatus::Pending {
            return Err(StoreError::AlreadyDecided {
                id,
                status: batch.status.token(),
            });
        }
        if !batch.reason.acceptable() {
            return Err(StoreError::NotAcceptable {
                id,
                reason: batch.reason.token(),
            });
        }
        let chart = batch.chart;
        let changes = crate::chart::chunks(&bytes)
            .map_err(|_| StoreError::Corrupt(format!("held changes {id} do not parse")))?
            .into_iter()
            .map(|c| crate::chart::parse_change(c.bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StoreError::Corrupt(format!("held changes {id} do not parse")))?;
        let author = Actor {
            user: batch.user.clone(),
            role: batch.role.clone(),
            device: batch.device.clone(),
        };
        if !self.contains(chart)? {
            // A new chart a device made, held whole.
            let doc = crate::chart::load_document(&bytes)
                .map_err(|_| StoreError::Corrupt(format!("held changes {id} do not load")))?;
            let structure =
                crate::chart::validate::validate_changes(&automerge::Automerge::new(), &doc);
            if let Err(r) = structure {
                if !r
                    .violations
                    .iter()
                    .all(|v| matches!(v, crate::chart::validate::Violation::InvalidCode { .. }))
                {
                    return Err(StoreError::NotAcceptable {
                        id,
                        reason: HoldReason::BreaksChartRules.token(),
                    });
                }
            }
            let new = crate::chart::Chart::from_automerge(doc)
                .map_err(|error| StoreError::Chart { id: chart, error })?;
            self.insert_as(&author, chart, new)?;
        }
        // Attributed to the person who wrote them, when they all name one; otherwise to the
        // person signed in when they were sent.
        let writers: Vec<Option<crate::chart::Staff>> = self.read(chart, |c| {
            let mut scratch = c.fork();
            let _ = scratch.load_incremental(&bytes);
            changes.iter().map(|ch| scratch.author_of(ch)).collect()
        })?;
        // The runs of one author each, in the order held; a change naming no author is the
        // batch's.
        let batch_writer = || {
            crate::chart::Role::from_token(&author.role)
                .map(|role| {
                    crate::chart::Staff::new(author.user.clone(), role, batch.device.clone())
                })
                .map_err(|error| StoreError::Chart { id: chart, error })
        };
        let mut runs: Vec<(crate::chart::Staff, Vec<u8>)> = Vec::new();
        for (change, writer) in changes.iter().zip(&writers) {
            let who = match writer {
                Some(w) => w.clone(),
                None => batch_writer()?,
            };
            match runs.last_mut() {
                Some((w, run)) if w.user == who.user && w.role == who.role => {
                    run.extend_from_slice(change.raw_bytes())
                }
                _ => runs.push((who, change.raw_bytes().to_vec())),
            }
        }
        let author = match writers.first() {
            Some(Some(first)) if writers.iter().all(|w| w.as_ref() == Some(first)) => Actor {
                user: first.user.clone(),
                role: first.role.token().to_string(),
                device: batch.device.clone(),
            },
            _ => author,
        };
        let ours: std::collections::HashSet<ChangeHash> =
            changes.iter().map(|c| c.hash()).collect();
        let missing: Vec<ChangeHash> = self.read(chart, |c| {
            changes
                .iter()
                .flat_map(|ch| ch.deps().iter().copied())
                .filter(|d| !ours.contains(d) && c.doc().get_change_meta_by_hash(d).is_none())
                .collect()
        })?;
        if let Some(first) = missing.first() {
            let holder = self.held_change(first)?.map(|(h, _)| h);
            return Err(StoreError::DecideFirst { id, first: holder });
        }
        // The proofs a tablet sent with the changes go into the record with them.
        let proofs: Vec<crate::trust::ChangeProof> = self
            .inner
            .with_reader(|conn| {
                Ok(conn
                    .query_row("SELECT proofs FROM held_changes WHERE id = ?1", [id], |r| {
                        r.get::<_, Option<Vec<u8>>>(0)
                    })
                    .optional()?
                    .flatten())
            })?
            .and_then(|b| crate::trust::ProofBundle::decode(&mut minicbor::Decoder::new(&b)).ok())
            .map(|b| b.proofs)
            .unwrap_or_default();
        let mark = |tx: &Sql<'_>| -> Result<(), StoreError> {
            super::credentials::insert_proofs(tx, chart, &proofs, Some(now_millis()))?;
            decide(tx, id, HoldStatus::Accepted, reviewer, None)?;
            insert_audit(
                tx,
                reviewer,
                AuditAction::Review,
                Some(chart),
                &[],
                Some(&format!("accepted held changes {id}")),
            )
        };
        let merged = self.update_inner(
            chart,
            Some(&author),
            |c| {
                let mut candidate = c.fork();
                candidate.load_incremental(&bytes)?;
                if let Err(r) = crate::chart::validate::validate_changes(c.doc(), candidate.doc()) {
                    let only_codes = r.violations.iter().all(|v| {
                        matches!(v, crate::chart::validate::Violation::InvalidCode { .. })
                    });
                    if !only_codes {
                        return Err(ChartError::Rejected(Box::new(r)));
                    }
                }
                // What each writer's own role may write still holds: a hold for one reason
                // (another author, say) must not carry through what the role may not write.
                // Several people's changes (a shared tablet's, held together) are checked as
                // runs, each as its author's, on the chart as the runs before it left it.
                let mut step = c.fork();
                for (who, run) in &runs {
                    let before = step.heads();
                    step.load_incremental(run)?;
                    crate::chart::validate::check_writer(&before, &step, &who.user, who.role)
                        .map_err(|r| ChartError::Rejected(Box::new(r)))?;
                }
                c.load_incremental(&bytes)?;
                Ok(c.heads())
            },
            Some(&mark),
            false,
        );
        match merged {
            Ok(_) => {}
            Err(StoreError::Chart {
                error: ChartError::Rejected(r),
                ..
            }) => {
                return Err(StoreError::NotAcceptable {
                    id,
                    reason: r.hold_reason().token(),
                })
            }
            Err(e) => return Err(e),
        }
        // Already in the record (an acceptance cut short after its commit): the commit did
        // not run `mark`, so mark it now.
        let status: String = self.inner.with_reader(|conn| {
            Ok(
                conn.query_row("SELECT status FROM held_changes WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?,
            )
        })?;
        if status == HoldStatus::Pending.token() {
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            mark(&tx)?;
            tx.commit()?;
        }
        self.held_batch(id)?
            .map(|(b, _)| b)
            .ok_or(StoreError::NoSuchHold(id))
    }

    /// Marks pending holds accepted whose changes were sent again under a sign-in that may
    /// write them, and merged (the author signed in on the tablet, the chart came back to the
    /// device's wards, the server's code table learnt the code): no supervisor needed.
    pub fn settle_holds(&self, ids: &[i64], by: &Actor) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        for &id in ids {
            let chart: Option<String> = tx
                .query_row(
                    "SELECT chart_id FROM held_changes WHERE id = ?1 AND status = 'pending'",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(chart) = chart.and_then(|c| c.parse::<ChartId>().ok()) else {
                continue;
            };
            decide(
                &tx,
                id,
                HoldStatus::Accepted,
                by,
                Some("sent again under a sign-in that may write it"),
            )?;
            insert_audit(
                &tx,
                by,
                AuditAction::Review,
                Some(chart),
                &[],
                Some(&format!("held changes {id} sent again and accepted")),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Rejects held changes: they stay in the holding area with the decision and never reach
    /// the record. `reason` is the supervisor's, shown to the device.
    pub fn reject_hold(
        &self,
        id: i64,
        reviewer: &Actor,
        reason: &str,
    ) -> Result<HeldBatch, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::ReasonRequired);
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let found: Option<(String, String)> = tx
            .query_row(
                "SELECT chart_id, status FROM held_changes WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (chart, status) = found.ok_or(StoreError::NoSuchHold(id))?;
        if status != HoldStatus::Pending.token() {
            let status = HoldStatus::from_token(&status).map_or("decided", HoldStatus::token);
            return Err(StoreError::AlreadyDecided { id, status });
        }
        let chart: ChartId = chart
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("held changes {id} name no chart")))?;
        decide(&tx, id, HoldStatus::Rejected, reviewer, Some(reason))?;
        insert_audit(
            &tx,
            reviewer,
            AuditAction::Review,
            Some(chart),
            &[],
            Some(&format!("rejected held changes {id}")),
        )?;
        tx.commit()?;
        drop(conn);
        self.held_batch(id)?
            .map(|(b, _)| b)
            .ok_or(StoreError::NoSuchHold(id))
    }

    /// Records that a device was told a chart left its wards, with the heads it had then
    /// (server).
    pub fn record_departure_told(
        &self,
        storage: &str,
        chart: ChartId,
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached(
            "INSERT INTO departures_told (storage, chart_id, heads, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (storage, chart_id) DO UPDATE SET heads = ?3, at = ?4
                 WHERE departures_told.heads != ?3",
        )?
        .execute(params![
            storage,
            chart.to_string(),
            heads_blob(heads),
            now_millis()
        ])?;
        Ok(())
    }

    /// When a device was first told a chart left its wards with the heads it has now
    /// (server): the server had those heads from then on.
    pub fn departure_told_at(
        &self,
        storage: &str,
        chart: ChartId,
    ) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT at FROM departures_told WHERE storage = ?1 AND chart_id = ?2",
                )?
                .query_row(params![storage, chart.to_string()], |r| r.get(0))
                .optional()?)
        })?;
        at.map(|ms| {
            Timestamp::from_unix_millis(ms)
                .map_err(|_| StoreError::Corrupt("a departure's time is out of range".into()))
        })
        .transpose()
    }

    /// The heads a device had when it was told a chart left its wards, if it was (server).
    pub fn departure_told(
        &self,
        storage: &str,
        chart: ChartId,
    ) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        let blob: Option<Vec<u8>> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT heads FROM departures_told WHERE storage = ?1 AND chart_id = ?2",
                )?
                .query_row(params![storage, chart.to_string()], |r| r.get(0))
                .optional()?)
        })?;
        blob.map(|b| {
            parse_heads_blob(&b)
                .ok_or_else(|| StoreError::Corrupt("departure heads of the wrong length".into()))
        })
        .transpose()
    }

    // The device's side.

    /// Records what the server said it holds of a chart (device).
    pub fn set_device_hold(
        &self,
        hold: &DeviceHold,
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached(
            "INSERT INTO device_holds (chart_id, hold, reason, summary, since, heads, rejected)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (chart_id) DO UPDATE SET hold = ?2, reason = ?3, summary = ?4,
                 since = ?5, heads = ?6, rejected = ?7",
        )?
        .execute(params![
            hold.chart.to_string(),
            hold.hold,
            hold.reason.token(),
            hold.summary,
            hold.since.unix_millis(),
            heads_blob(heads),
            hold.rejected
        ])?;
        if hold.rejected.is_some() {
            self.inner
                .read_only_somewhere
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// The server no longer holds the chart's changes (device).
    pub fn clear_device_hold(&self, chart: ChartId) -> Result<(), StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached("DELETE FROM device_holds WHERE chart_id = ?1")?
            .execute([chart.to_string()])?;
        Ok(())
    }

    /// Every chart the server holds changes of, as it last said (device), oldest first.
    pub fn device_holds(&self) -> Result<Vec<DeviceHold>, StoreError> {
        type Row = (String, Option<i64>, String, String, i64, Option<String>);
        let raw: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT chart_id, hold, reason, summary, since, rejected FROM device_holds
                     ORDER BY since, chart_id",
            )?;
            let rows = stmt.query_map(params![], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let bad = |what: &str| StoreError::Corrupt(format!("a device hold with an invalid {what}"));
        raw.into_iter()
            .map(|(chart, hold, reason, summary, since, rejected)| {
                Ok(DeviceHold {
                    chart: chart.parse().map_err(|_| bad("chart id"))?,
                    hold,
                    reason: HoldReason::from_token(&reason).ok_or_else(|| bad("reason"))?,
                    summary,
                    since: Timestamp::from_unix_millis(since).map_err(|_| bad("time"))?,
                    rejected,
                })
            })
            .collect()
    }

    /// Records that a chart left this device's wards (device): read-only here from now on,
    /// and removed from the store from `purge_at` on (`ChartStore::purge_due`). Only while
    /// the server has acknowledged everything the chart holds: false (and nothing recorded)
    /// if a commit came in meanwhile, which must be sent first.
    pub fn set_departed(
        &self,
        chart: ChartId,
        reason: LeftReason,
        purge_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let conn = self.inner.writer()?;
        let recorded = conn
            .prepare_cached(
                "INSERT INTO device_departures (chart_id, reason, at, purge_at)
                 SELECT ?1, ?2, ?3, ?4 WHERE (SELECT heads FROM charts WHERE id = ?1)
                     = (SELECT heads FROM acknowledged_heads WHERE chart_id = ?1)
                 ON CONFLICT (chart_id) DO UPDATE SET reason = ?2, at = ?3, purge_at = ?4",
            )?
            .execute(params![
                chart.to_string(),
                reason.token(),
                now_millis(),
                purge_at.map(Timestamp::unix_millis)
            ])?;
        if recorded == 1 {
            self.inner
                .read_only_somewhere
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(recorded == 1)
    }

    /// The chart is back on this device's wards (device): writable again.
    pub fn clear_departed(&self, chart: ChartId) -> Result<(), StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached("DELETE FROM device_departures WHERE chart_id = ?1")?
            .execute([chart.to_string()])?;
        Ok(())
    }

    /// Why this device may not write a chart, if it may not (device): it left the device's
    /// wards, or a records supervisor rejected changes made to it here, so this copy differs
    /// from the record for good.
    pub fn read_only(&self, chart: ChartId) -> Result<Option<&'static str>, StoreError> {
        if self.departed(chart)?.is_some() {
            return Ok(Some(
                "the chart left this device's wards; it is read-only here",
            ));
        }
        let rejected: bool = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM device_holds
                     WHERE chart_id = ?1 AND rejected IS NOT NULL)",
                )?
                .query_row([chart.to_string()], |r| r.get(0))?)
        })?;
        Ok(rejected.then_some(
            "the records office rejected changes made to this chart here; it is read-only until replaced from the server",
        ))
    }

    /// Why a chart left this device's wards, if it did (device).
    pub fn departed(&self, chart: ChartId) -> Result<Option<LeftReason>, StoreError> {
        let reason: Option<String> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT reason FROM device_departures WHERE chart_id = ?1")?
                .query_row([chart.to_string()], |r| r.get(0))
                .optional()?)
        })?;
        reason
            .map(|r| {
                LeftReason::from_token(&r)
                    .ok_or_else(|| StoreError::Corrupt("a departure with an invalid reason".into()))
            })
            .transpose()
    }

    /// Sets this device's copy of a chart aside (device): kept whole in `set_aside_charts`,
    /// with `reason`, and taken out of the store, so the record's copy can be fetched afresh.
    /// For a chart whose changes made here a records supervisor rejected: this copy can never
    /// merge with the record again.
    pub fn set_aside(&self, chart: ChartId, reason: &str) -> Result<(), StoreError> {
        let slot = lock(&self.inner.cache).slot(chart);
        let mut cached = self.inner.ready(chart, &slot)?;
        let Some(copy) = cached.chart.as_ref() else {
            return Err(StoreError::NotFound(chart));
        };
        let data = copy.doc().save();
        let key = cached.key;
        let id = chart.to_string();
        {
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            tx.execute(
                "INSERT INTO set_aside_charts (chart_id, reason, at, data) VALUES (?1, ?2, ?3, ?4)",
                params![id, reason, now_millis(), data],
            )?;
            tx.execute("DELETE FROM deficiencies WHERE chart = ?1", [key])?;
            tx.execute("DELETE FROM chart_changes WHERE chart = ?1", [key])?;
            tx.execute("DELETE FROM chart_snapshots WHERE chart = ?1", [key])?;
            tx.execute("DELETE FROM charts WHERE key = ?1", [key])?;
            for table in [
                "sync_states",
                "device_holds",
                "acknowledged_heads",
                "device_departures",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE chart_id = ?1"), [&id])?;
            }
            tx.commit()?;
        }
        *cached = super::cache::Cached::default();
        drop(cached);
        lock(&self.inner.cache).forget_unloaded(&chart, &slot);
        Ok(())
    }

    /// The copies of charts this device set aside (device), newest first: (chart, reason,
    /// when).
    pub fn set_aside_charts(&self) -> Result<Vec<(ChartId, String, Timestamp)>, StoreError> {
        let rows: Vec<(String, String, i64)> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT chart_id, reason, at FROM set_aside_charts ORDER BY seq DESC",
            )?;
            let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let bad =
            |what: &str| StoreError::Corrupt(format!("a set-aside chart with an invalid {what}"));
        rows.into_iter()
            .map(|(id, reason, at)| {
                Ok((
                    id.parse().map_err(|_| bad("id"))?,
                    reason,
                    Timestamp::from_unix_millis(at).map_err(|_| bad("time"))?,
                ))
            })
            .collect()
    }

    /// Records the heads the server has acknowledged for a chart (device): heads this device
    /// holds, so everything before them is on the server.
    pub fn acknowledge(&self, chart: ChartId, heads: &[ChangeHash]) -> Result<(), StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached(
            "INSERT INTO acknowledged_heads (chart_id, heads) VALUES (?1, ?2)
             ON CONFLICT (chart_id) DO UPDATE SET heads = ?2",
        )?
        .execute(params![chart.to_string(), heads_blob(heads)])?;
        Ok(())
    }

    /// The heads of a chart the server last acknowledged (device); empty if none.
    pub fn acknowledged(&self, chart: ChartId) -> Result<Vec<ChangeHash>, StoreError> {
        let blob: Option<Vec<u8>> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT heads FROM acknowledged_heads WHERE chart_id = ?1")?
                .query_row([chart.to_string()], |r| r.get(0))
                .optional()?)
        })?;
        match blob {
            None => Ok(Vec::new()),
            Some(b) => parse_heads_blob(&b).ok_or_else(|| {
                StoreError::Corrupt("acknowledged heads of the wrong length".into())
            }),
        }
    }

    /// The charts whose heads differ from what the server acknowledged (device): the charts
    /// with something still to send, from the index alone.
    pub fn unacknowledged_charts(&self) -> Result<Vec<ChartId>, StoreError> {
        let ids: Vec<String> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id FROM charts c LEFT JOIN acknowledged_heads a ON a.chart_id = c.id
                 WHERE a.heads IS NULL OR a.heads != c.heads ORDER BY c.id",
            )?;
            let rows = stmt.query_map(params![], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        ids.into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError::Corrupt("a chart row with an invalid id".into()))
            })
            .collect()
    }
}
