//! The audit trail: who did what to which chart, when (45 CFR 164.312(b)). Rows are inserted
//! and never changed; a write's row is inserted in the same transaction as the write, with the
//! hashes of the changes it committed, so the trail and the charts cannot disagree.

use std::sync::Arc;

use super::sql::{params, Arg, Begin, Dialect, Sql};
use automerge::ChangeHash;

use super::{lock, now_millis, ChartStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::chart::{ChartId, Timestamp};

/// Who is acting, as the server knows them (from the bearer token and the connection).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    /// The role token.
    pub role: String,
    /// The device's peer id, or the client of a request.
    pub device: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A chart was read (synced down, or viewed).
    Read,
    /// A listing of charts was read (a census).
    List,
    /// Changes to a chart were accepted.
    Write,
    /// A chart new to the store was accepted.
    Create,
    /// Access was refused.
    Deny,
    /// Changes were refused by the chart's rules.
    Reject,
    /// Changes were kept in the holding area for review.
    Hold,
    /// A records supervisor accepted or rejected held changes.
    Review,
    /// The staff directory or the enrolled devices changed, or a credential was revoked.
    Admin,
    /// A certificate was issued to a person on a device (an online sign-in).
    SignIn,
    /// Break-glass access to a chart outside the person's wards began or ended.
    BreakGlass,
    /// The records office routed deficiencies to a person.
    Assign,
    /// The records office acknowledged a deficiency that cannot be put right (a late H&P).
    Acknowledge,
    /// A device removed a chart from its store (it left the device's wards, or the device
    /// was revoked), as it reported.
    Purge,
    /// Retention: a rule set, a legal hold placed or lifted, a destruction proposed, approved
    /// or cancelled.
    Retention,
    /// A chart was destroyed, past retention and under no hold, in an approved batch.
    Destroy,
}

impl AuditAction {
    pub fn token(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::List => "list",
            AuditAction::Write => "write",
            AuditAction::Create => "create",
            AuditAction::Deny => "deny",
            AuditAction::Reject => "reject",
            AuditAction::Hold => "hold",
            AuditAction::Review => "review",
            AuditAction::Admin => "admin",
            AuditAction::SignIn => "sign_in",
            AuditAction::BreakGlass => "break_glass",
            AuditAction::Assign => "assign",
            AuditAction::Acknowledge => "acknowledge",
            AuditAction::Purge => "purge",
            AuditAction::Retention => "retention",
            AuditAction::Destroy => "destroy",
        }
    }

    pub(crate) fn from_token(s: &str) -> Option<AuditAction> {
        [
            AuditAction::Read,
            AuditAction::List,
            AuditAction::Write,
            AuditAction::Create,
            AuditAction::Deny,
            AuditAction::Reject,
            AuditAction::Hold,
            AuditAction::Review,
            AuditAction::Admin,
            AuditAction::SignIn,
            AuditAction::BreakGlass,
            AuditAction::Assign,
            AuditAction::Acknowledge,
            AuditAction::Purge,
            AuditAction::Retention,
            AuditAction::Destroy,
        ]
        .into_iter()
        .find(|a| a.token() == s)
    }
}

/// One row of the trail.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub actor: Actor,
    pub action: AuditAction,
    pub chart: Option<ChartId>,
    /// Hex change hashes, for writes and creations.
    pub changes: Vec<String>,
    /// Ids and reasons only.
    pub detail: Option<String>,
}

/// What the chain of the audit trail says: how many rows it links, and the last link, which
/// an operator may note elsewhere (a deleted tail leaves a shorter, still whole chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    pub rows: u64,
    pub tip: Option<[u8; 32]>,
}

/// A row's fields as the chain hashes them.
pub(crate) struct Linked<'a> {
    pub at: i64,
    pub user: &'a str,
    pub role: &'a str,
    pub device: &'a str,
    pub action: &'a str,
    pub chart: Option<&'a str>,
    pub changes: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// SHA-256 over the link before (32 zero bytes for the first row) and the row's fields, each
/// length-prefixed so that no two rows encode alike.
pub(crate) fn chain_hash(previous: &[u8; 32], row: &Linked<'_>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"chartsync/audit@1\0");
    h.update(previous);
    h.update(row.at.to_be_bytes());
    for field in [
        Some(row.user),
        Some(row.role),
        Some(row.device),
        Some(row.action),
        row.chart,
        row.changes,
        row.detail,
    ] {
        match field {
            Some(f) => {
                h.update((f.len() as u32).to_be_bytes());
                h.update(f.as_bytes());
            }
            None => h.update(u32::MAX.to_be_bytes()),
        }
    }
    h.finalize().into()
}

/// The last row's link (zeros for an empty trail).
pub(crate) fn last_link(conn: &Sql<'_>) -> Result<[u8; 32], StoreError> {
    use super::sql::OptionalExtension;
    let last: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT chain FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row(params![], |r| r.get(0))
        .optional()?;
    match last {
        None => Ok([0; 32]),
        Some(Some(b)) => b
            .try_into()
            .map_err(|_| StoreError::Corrupt("an audit link is not 32 bytes".into())),
        Some(None) => Err(StoreError::Corrupt(
            "the audit trail's last row has no link".into(),
        )),
    }
}

const CHAIN_COLUMNS: &str = "seq, at, user, role, device, action, chart_id, changes, detail, chain";

/// Walks the trail in order with `f(seq, link it should have, link it has)`.
fn walk(
    conn: &Sql<'_>,
    condition: &str,
    mut f: impl FnMut(i64, [u8; 32], Option<Vec<u8>>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {CHAIN_COLUMNS} FROM audit_events {condition} ORDER BY seq"
    ))?;
    let mut rows = stmt.query(params![])?;
    let mut previous = [0u8; 32];
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let (user, role, device, action): (String, String, String, String) =
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
        let (chart, changes, detail): (Option<String>, Option<String>, Option<String>) =
            (r.get(6)?, r.get(7)?, r.get(8)?);
        let expected = chain_hash(
            &previous,
            &Linked {
                at: r.get(1)?,
                user: &user,
                role: &role,
                device: &device,
                action: &action,
                chart: chart.as_deref(),
                changes: changes.as_deref(),
                detail: detail.as_deref(),
            },
        );
        let has: Option<Vec<u8>> = r.get(9)?;
        if !f(seq, expected, has)? {
            return Ok(());
        }
        previous = expected;
    }
    Ok(())
}

/// Gives links to rows written before the chain existed (a store from before version 6), in
/// order, once.
pub(crate) fn link_unchained(conn: &mut Sql<'_>) -> Result<(), StoreError> {
    let unlinked: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE chain IS NULL)",
        params![],
        |r| r.get(0),
    )?;
    if !unlinked {
        return Ok(());
    }
    let tx = conn.transaction(Begin::Immediate)?;
    let mut links = Vec::new();
    walk(&tx, "", |seq, expected, has| {
        if has.is_none() {
            links.push((seq, expected));
        }
        Ok(true)
    })?;
    {
        let mut set = tx.prepare("UPDATE audit_events SET chain = ?2 WHERE seq = ?1")?;
        for (seq, link) in links {
            set.execute(params![seq, &link[..]])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Checks every link, from the first row.
pub(crate) fn verify_chain(conn: &Sql<'_>) -> Result<AuditChain, StoreError> {
    let mut rows = 0u64;
    let mut tip = None;
    let mut broken = None;
    walk(conn, "", |seq, expected, has| {
        if has.as_deref() != Some(&expected[..]) {
            broken = Some(seq);
            return Ok(false);
        }
        rows += 1;
        tip = Some(expected);
        Ok(true)
    })?;
    match broken {
        Some(seq) => Err(StoreError::AuditTampered { seq }),
        None => Ok(AuditChain { rows, tip }),
    }
}

/// An audit row waiting to be committed with the others queued beside it, and where its
/// outcome is told.
pub(super) struct QueuedAudit {
    actor: Actor,
    action: AuditAction,
    chart: Option<ChartId>,
    detail: Option<String>,
    outcome: Arc<std::sync::OnceLock<Result<(), String>>>,
}

impl ChartStore {
    /// Appends a row to the audit trail: a read, a listing, a denial or a refusal. (Writes and
    /// creations are recorded by [`ChartStore::update_as`] and [`ChartStore::insert_as`].)
    /// `detail`: ids and reasons only, never chart content.
    pub fn record_audit(
        &self,
        actor: &Actor,
        action: AuditAction,
        chart: Option<ChartId>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        // Group commit: the row is queued, and whoever next holds the writer commits every
        // queued row in one durable transaction. Each caller still returns only once its own
        // row is on disk, but a server opening thousands of charts at once (a reconnect storm
        // audits each read) waits for the disk once per batch, not once per row.
        let outcome = Arc::new(std::sync::OnceLock::new());
        lock(&self.inner.audit_queue).push(QueuedAudit {
            actor: actor.clone(),
            action,
            chart,
            detail: detail.map(str::to_string),
            outcome: outcome.clone(),
        });
        // One batch at a time: on SQLite the writer is one already, on PostgreSQL each writer
        // is a connection of its own, and a caller must not find its row taken by a batch
        // still committing.
        let _turn = lock(&self.inner.audit_batch);
        let mut conn = self.inner.writer()?;
        if outcome.get().is_none() {
            // Ours is still queued: no one committed it while we waited for the writer.
            let rows = std::mem::take(&mut *lock(&self.inner.audit_queue));
            let committed = (|| {
                let tx = conn.transaction(Begin::Immediate)?;
                for r in &rows {
                    insert_audit(&tx, &r.actor, r.action, r.chart, &[], r.detail.as_deref())?;
                }
                tx.commit()?;
                Ok::<(), StoreError>(())
            })();
            let told = committed.as_ref().map(|_| ()).map_err(|e| e.to_string());
            for r in &rows {
                let _ = r.outcome.set(told.clone());
            }
            committed?;
        }
        drop(conn);
        match outcome.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(StoreError::AuditNotWritten(e.clone())),
            // Taken by a writer that panicked before it committed.
            None => Err(StoreError::AuditNotWritten(
                "the commit that carried it did not finish".into(),
            )),
        }
    }

    /// A chart's audit trail, oldest first.
    pub fn audit_trail(&self, chart: ChartId) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_where("chart_id = ?1 ORDER BY seq", &[&chart.to_string()])
    }

    /// What one person did, newest first, at most `limit` rows: every read, list, write and
    /// refusal under their user id, on any chart or none.
    pub fn audit_of_user(&self, user: &str, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_where(
            &format!("user = ?1 ORDER BY seq DESC LIMIT {limit}"),
            &[&user],
        )
    }

    /// The audit trails of every chart of a patient (by MRN) in this store, in one list,
    /// oldest first.
    pub fn audit_of_patient(&self, mrn: &str) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_where(
            "chart_id IN (SELECT id FROM charts WHERE mrn = ?1) ORDER BY seq",
            &[&mrn],
        )
    }

    fn audit_where(&self, clause: &str, args: &[&dyn Arg]) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT seq, at, user, role, device, action, chart_id, changes, detail
             FROM audit_events WHERE {clause}"
        );
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    Actor {
                        user: r.get(2)?,
                        role: r.get(3)?,
                        device: r.get(4)?,
                    },
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?;
            let bad = |what: &str| StoreError::Corrupt(format!("audit row with an invalid {what}"));
            let mut out = Vec::new();
            for row in rows {
                let (seq, at, actor, action, chart, changes, detail) = row?;
                out.push(AuditRecord {
                    seq,
                    at: Timestamp::from_unix_millis(at).map_err(|_| bad("time"))?,
                    actor,
                    action: AuditAction::from_token(&action).ok_or_else(|| bad("action"))?,
                    chart: chart
                        .map(|c| c.parse())
                        .transpose()
                        .map_err(|_| bad("chart id"))?,
                    changes: changes
                        .map(|c| c.split_whitespace().map(String::from).collect())
                        .unwrap_or_default(),
                    detail,
                });
            }
            Ok(out)
        })
    }
}

/// PostgreSQL's advisory lock on the end of the audit chain.
const AUDIT_CHAIN_LOCK: i64 = 0x4348_5359_0002;

pub(super) fn insert_audit(
    tx: &Sql<'_>,
    actor: &Actor,
    action: AuditAction,
    chart: Option<ChartId>,
    changes: &[ChangeHash],
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let changes = (!changes.is_empty()).then(|| {
        changes
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    });
    if tx.dialect() == Dialect::Postgres {
        // One chain, whichever node writes: the next link is made by one transaction at a
        // time, which holds the lock until it commits (or rolls back).
        tx.execute(
            "SELECT pg_advisory_xact_lock(?1)",
            params![AUDIT_CHAIN_LOCK],
        )?;
    }
    let at = now_millis();
    let chart = chart.map(|c| c.to_string());
    let chain = chain_hash(
        &last_link(tx)?,
        &Linked {
            at,
            user: &actor.user,
            role: &actor.role,
            device: &actor.device,
            action: action.token(),
            chart: chart.as_deref(),
            changes: changes.as_deref(),
            detail,
        },
    );
    tx.prepare_cached(
        "INSERT INTO audit_events (at, user, role, device, action, chart_id, changes, detail, chain)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        at,
        actor.user,
        actor.role,
        actor.device,
        action.token(),
        chart,
        changes,
        detail,
        &chain[..]
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::*;

    /// A batch of audit rows that cannot be committed fails every caller whose row was in it
    /// (the one committing it with the database's error, the others told so), and none of
    /// them is told its row is on disk.
    #[test]
    fn a_failed_audit_batch_fails_every_row_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChartStore::open(dir.path().join("s.db"), StoreOptions::default()).unwrap();
        let nurse = Actor {
            user: "rn.park".into(),
            role: "nurse".into(),
            device: "tablet-4west-01".into(),
        };
        store
            .inner
            .sqlite_writer()
            .execute_batch("DROP TABLE audit_events")
            .unwrap();
        // Another caller's row, queued while this one waits for the writer.
        let other = Arc::new(std::sync::OnceLock::new());
        lock(&store.inner.audit_queue).push(QueuedAudit {
            actor: nurse.clone(),
            action: AuditAction::Read,
            chart: None,
            detail: None,
            outcome: other.clone(),
        });
        let mine = store.record_audit(&nurse, AuditAction::Read, None, None);
        assert!(mine.is_err(), "{mine:?}");
        assert!(matches!(other.get(), Some(Err(_))), "{other:?}");
        assert!(lock(&store.inner.audit_queue).is_empty());
    }
}
