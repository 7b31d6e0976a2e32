//! Charts leave tablets: the device removes a chart that no longer belongs on it, and the
//! server records the removal (docs/records-office.md, "Charts leave tablets").
//!
//! A chart is removed from a device's store only while nothing written on it there is
//! unacknowledged: its heads are the heads the server acknowledged. A chart with changes the
//! server holds for review stays (shown held) until a records supervisor decides: the tablet
//! cannot tell exactly which of its changes a hold covers (one committed as the hold's notice
//! was on its way is in neither), and what it cannot tell it keeps. The check
//! and the removal are one transaction under the chart's lock, so a commit racing the removal
//! either lands first (and the chart stays, to send it) or finds the chart gone.
//!
//! The device keeps, for each chart it removed, the id, the reason and the heads it held
//! (`purged_charts`): nothing of the chart. It reports each removal until the server has
//! recorded it; the server keeps every report (`device_purges`) beside its audit row, and
//! forgets the device's sync state and departure for the chart.

use automerge::ChangeHash;
use serde::Serialize;

use super::sql::{params, Begin, Dialect, OptionalExtension, Sql};
use super::{heads_blob, insert_audit, lock, now_millis, parse_heads_blob, Actor, AuditAction};
use super::{ChartStore, StoreError};
use crate::chart::{ChartId, Timestamp};
use crate::protocol::LeftReason;

/// A chart removed from this device's store (device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedChart {
    pub chart: ChartId,
    pub reason: LeftReason,
    /// What the device held when it removed the chart.
    pub heads: Vec<ChangeHash>,
    pub at: Timestamp,
    /// The server recorded the removal.
    pub reported: bool,
}

/// What became of a device's report of a removal (server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeRecord {
    /// Recorded and audited.
    New,
    /// Recorded before (the device did not hear the answer).
    Again,
    /// Not recorded: the device was never told the chart left, and is no enrolled tablet.
    NeverTold,
}

/// A removal a device reported (server).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePurge {
    /// The device's storage id (or its peer id, if it has none).
    pub storage: String,
    /// The enrolled tablet's id (hex), if the device is one.
    pub device: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub chart: ChartId,
    pub reason: LeftReason,
    /// The device's clock when it removed the chart.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub purged_at: Timestamp,
    /// The server's clock when it recorded the report.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub recorded_at: Timestamp,
}

/// `store_meta`'s key for a tablet told it was revoked: every chart leaves it.
const WIPING: &str = "wiping";

/// The tables a removal deletes a chart's rows from, by its document id, besides the chart's
/// own rows (by its key): what the device kept of the chart's sync and of its outcomes.
const BY_ID: &[&str] = &[
    "sync_states",
    "device_holds",
    "acknowledged_heads",
    "device_departures",
    "set_aside_charts",
    "change_proofs",
    "break_glass",
];

/// The tables that refer to a chart by its key, children first.
pub(super) const BY_KEY: &[(&str, &str)] = &[
    ("deficiency_work", "chart"),
    ("deficiencies", "chart"),
    ("chart_changes", "chart"),
    ("chart_snapshots", "chart"),
    ("charts", "key"),
];

impl ChartStore {
    /// Records that this tablet was revoked (device): from now on every chart leaves it as
    /// soon as the server has what was written on it here. Kept across restarts.
    pub fn set_wiping(&self) -> Result<(), StoreError> {
        self.inner
            .writer()?
            .prepare_cached(
                "INSERT INTO store_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![WIPING, now_millis().to_string()])?;
        Ok(())
    }

    /// Whether this tablet was told it was revoked (device), and since when.
    pub fn wiping(&self) -> Result<Option<Timestamp>, StoreError> {
        let value: Option<String> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM store_meta WHERE key = ?1")?
                .query_row([WIPING], |r| r.get(0))
                .optional()?)
        })?;
        value
            .map(|v| {
                v.parse()
                    .ok()
                    .and_then(|ms| Timestamp::from_unix_millis(ms).ok())
                    .ok_or_else(|| StoreError::Corrupt("the wipe's time is not a time".into()))
            })
            .transpose()
    }

    /// Removes every chart due to leave this device at `now` (device): those that left its
    /// wards with a removal time at or before `now`, and every chart of a revoked tablet. A
    /// chart with something written here that the server has not acknowledged
    /// stays, for its changes to be sent first; it is removed when asked again after that.
    pub fn purge_due(&self, now: Timestamp) -> Result<Vec<PurgedChart>, StoreError> {
        let wiping = self.wiping()?.is_some();
        let due: Vec<(String, String)> = self.inner.with_reader(|conn| {
            let sql = if wiping {
                "SELECT c.id, coalesce(d.reason, 'revoked') FROM charts c
                 LEFT JOIN device_departures d ON d.chart_id = c.id ORDER BY c.id"
            } else {
                "SELECT chart_id, reason FROM device_departures
                 WHERE purge_at IS NOT NULL AND purge_at <= ?1 ORDER BY chart_id"
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = if wiping {
                stmt.query_map(params![], |r| r.columns())?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                stmt.query_map(params![now.unix_millis()], |r| r.columns())?
                    .collect::<Result<Vec<_>, _>>()?
            };
            Ok(rows)
        })?;
        let mut purged = Vec::new();
        for (id, reason) in due {
            let chart: ChartId = id
                .parse()
                .map_err(|_| StoreError::Corrupt("a departure names no chart".into()))?;
            let reason = if wiping {
                LeftReason::Revoked
            } else {
                LeftReason::from_token(&reason).ok_or_else(|| {
                    StoreError::Corrupt("a departure with an invalid reason".into())
                })?
            };
            if let Some(p) = self.purge(chart, reason)? {
                purged.push(p);
            }
        }
        Ok(purged)
    }

    /// Removes one chart from this device's store (device), if nothing written on it here
    /// is unacknowledged: `None`, and nothing changed, otherwise. The removal is kept as a
    /// tombstone (ids and heads only) until the server has recorded it, and after.
    pub fn purge(
        &self,
        chart: ChartId,
        reason: LeftReason,
    ) -> Result<Option<PurgedChart>, StoreError> {
        let id = chart.to_string();
        // The chart's lock: no commit to it runs while it is checked and removed.
        let slot = lock(&self.inner.cache).slot(chart);
        let cached = lock(&slot);
        let at = Timestamp::now();
        let removed = self.securely(|conn| {
            let tx = conn.transaction(Begin::Immediate)?;
            type Found = (i64, Vec<u8>, bool, bool);
            let found: Option<Found> = tx
                .query_row(
                    "SELECT c.key, c.heads,
                         coalesce(c.heads = (SELECT heads FROM acknowledged_heads
                                             WHERE chart_id = c.id), false),
                         EXISTS (SELECT 1 FROM break_glass b WHERE b.chart_id = c.id
                                 AND b.filed_at IS NULL AND b.signature IS NOT NULL)
                     FROM charts c WHERE c.id = ?1",
                    [&id],
                    |r| r.columns(),
                )
                .optional()?;
            let removed = match found {
                // Not in the store: only its departure, if any, to forget.
                None => {
                    tx.execute("DELETE FROM device_departures WHERE chart_id = ?1", [&id])?;
                    None
                }
                Some((key, heads, acknowledged, unfiled)) => {
                    if !acknowledged || unfiled {
                        None
                    } else {
                        for (table, column) in BY_KEY {
                            tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [key])?;
                        }
                        for table in BY_ID {
                            tx.execute(&format!("DELETE FROM {table} WHERE chart_id = ?1"), [&id])?;
                        }
                        super::attachments::release_chart(&tx, &id)?;
                        tx.execute(
                            "INSERT INTO purged_charts (chart_id, reason, heads, purged_at)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (chart_id) DO UPDATE SET reason = ?2, heads = ?3,
                                 purged_at = ?4, reported_at = NULL",
                            params![id, reason.token(), heads, at.unix_millis()],
                        )?;
                        Some(heads)
                    }
                }
            };
            tx.commit()?;
            Ok(removed)
        })?;
        let Some(heads) = removed else {
            drop(cached);
            lock(&self.inner.cache).forget_unloaded(&chart, &slot);
            return Ok(None);
        };
        self.forget_removed(chart, &slot, cached);
        // The log holds the deleted pages until a checkpoint: fold it in now.
        self.checkpoint_after_purge();
        Ok(Some(PurgedChart {
            chart,
            reason,
            heads: parse_heads_blob(&heads)
                .ok_or_else(|| StoreError::Corrupt("a chart's heads of the wrong length".into()))?,
            at,
            reported: false,
        }))
    }

    /// Runs `f` on the writer with SQLite's secure delete on, so that freed pages are
    /// overwritten and a removed chart's bytes do not linger in the file; then as it was, so
    /// that other deletes (compaction's) do not pay for it.
    pub(super) fn securely<T>(
        &self,
        f: impl FnOnce(&mut Sql<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.writer()?;
        if conn.dialect() != Dialect::Sqlite {
            return f(&mut conn);
        }
        let before: i64 = conn.query_row("PRAGMA secure_delete", params![], |r| r.get(0))?;
        conn.execute_batch("PRAGMA secure_delete = ON")?;
        let out = f(&mut conn);
        conn.execute_batch(&format!("PRAGMA secure_delete = {before}"))?;
        out
    }

    /// Forgets, in memory, a chart whose rows were just deleted under its slot's lock.
    pub(super) fn forget_removed(
        &self,
        chart: ChartId,
        slot: &super::cache::Slot,
        mut cached: std::sync::MutexGuard<'_, super::cache::Cached>,
    ) {
        *cached = super::cache::Cached::default();
        drop(cached);
        let mut cache = lock(&self.inner.cache);
        cache.reweigh(&chart, None);
        cache.forget_unloaded(&chart, slot);
    }

    fn checkpoint_after_purge(&self) {
        if let Ok(conn) = self.inner.writer() {
            if conn.dialect() != Dialect::Sqlite {
                return;
            }
            // Busy readers can stop it; the next checkpoint folds the log in then.
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
        }
    }

    /// When the latest backup of this store was taken (`chartsync-records backup`), if it
    /// is a SQLite file that was ever backed up: every commit finished before then is in it.
    pub fn last_backup(&self) -> Option<Timestamp> {
        super::backup::last_backup_beside(self.path()?)
    }

    /// The charts removed from this store (device), newest first.
    pub fn purged_charts(&self) -> Result<Vec<PurgedChart>, StoreError> {
        self.purged_where("1 = 1", None)
    }

    /// Removals the server has not recorded yet (device), oldest first: reported on each
    /// connection until it has.
    pub fn unreported_purges(&self) -> Result<Vec<PurgedChart>, StoreError> {
        let mut p = self.purged_where("reported_at IS NULL", None)?;
        p.reverse();
        Ok(p)
    }

    /// Whether (and how) a chart was removed from this store (device).
    pub fn purged(&self, chart: ChartId) -> Result<Option<PurgedChart>, StoreError> {
        Ok(self
            .purged_where("chart_id = ?1", Some(chart))?
            .into_iter()
            .next())
    }

    fn purged_where(
        &self,
        filter: &str,
        chart: Option<ChartId>,
    ) -> Result<Vec<PurgedChart>, StoreError> {
        type Row = (String, String, Vec<u8>, i64, Option<i64>);
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT chart_id, reason, heads, purged_at, reported_at FROM purged_charts
                 WHERE {filter} ORDER BY purged_at DESC, chart_id"
            ))?;
            let row = |r: &super::sql::Row<'_>| r.columns();
            let rows = match chart {
                Some(c) => stmt.query_map(params![c.to_string()], row)?,
                None => stmt.query_map(params![], row)?,
            };
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let bad =
            |what: &str| StoreError::Corrupt(format!("a removed chart with an invalid {what}"));
        rows.into_iter()
            .map(|(chart, reason, heads, at, reported)| {
                Ok(PurgedChart {
                    chart: chart.parse().map_err(|_| bad("id"))?,
                    reason: LeftReason::from_token(&reason).ok_or_else(|| bad("reason"))?,
                    heads: parse_heads_blob(&heads).ok_or_else(|| bad("heads"))?,
                    at: Timestamp::from_unix_millis(at).map_err(|_| bad("time"))?,
                    reported: reported.is_some(),
                })
            })
            .collect()
    }

    /// The server recorded this device's removal of a chart at `at` (device). An answer about
    /// an earlier removal of the same chart changes nothing.
    pub fn purge_reported(&self, chart: ChartId, at: Timestamp) -> Result<(), StoreError> {
        self.inner
            .writer()?
            .prepare_cached(
                "UPDATE purged_charts SET reported_at = ?3
                 WHERE chart_id = ?1 AND purged_at = ?2 AND reported_at IS NULL",
            )?
            .execute(params![chart.to_string(), at.unix_millis(), now_millis()])?;
        Ok(())
    }

    /// Records a device's report that it removed a chart (server), audited as `by`'s, and
    /// forgets the device's sync state and departure for the chart. A report sent again
    /// (the device did not hear the answer) changes nothing. Unless `device` is an enrolled
    /// tablet's, the device must have been told the chart left: a report of any other chart
    /// is not recorded (and the caller answers it all the same, so it is not sent again).
    pub fn record_device_purge(
        &self,
        by: &Actor,
        storage: &str,
        device: Option<&str>,
        purged: &PurgedChart,
    ) -> Result<PurgeRecord, StoreError> {
        let id = purged.chart.to_string();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let known = tx
            .prepare_cached(
                "SELECT 1 FROM device_purges WHERE storage = ?1 AND chart_id = ?2 AND purged_at = ?3",
            )?
            .exists(params![storage, id, purged.at.unix_millis()])?;
        if known {
            return Ok(PurgeRecord::Again);
        }
        let told = tx
            .prepare_cached("SELECT 1 FROM departures_told WHERE storage = ?1 AND chart_id = ?2")?
            .exists(params![storage, id])?;
        if device.is_none() && !told {
            return Ok(PurgeRecord::NeverTold);
        }
        let new =
            tx.prepare_cached(
                "INSERT INTO device_purges
                     (storage, device, chart_id, reason, heads, purged_at, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (storage, chart_id, purged_at) DO NOTHING",
            )?
            .execute(params![
                storage,
                device,
                id,
                purged.reason.token(),
                heads_blob(&purged.heads),
                purged.at.unix_millis(),
                now_millis()
            ])? == 1;
        if new {
            insert_audit(
                &tx,
                by,
                AuditAction::Purge,
                Some(purged.chart),
                &purged.heads,
                Some(&format!(
                    "removed from the device ({})",
                    purged.reason.token()
                )),
            )?;
            tx.execute(
                "DELETE FROM sync_states WHERE peer = ?1 AND chart_id = ?2",
                params![storage, id],
            )?;
            tx.execute(
                "DELETE FROM departures_told WHERE storage = ?1 AND chart_id = ?2",
                params![storage, id],
            )?;
        }
        tx.commit()?;
        Ok(if new {
            PurgeRecord::New
        } else {
            PurgeRecord::Again
        })
    }

    /// The removals devices reported (server), newest first: one tablet's (its id, hex), or
    /// every device's.
    pub fn device_purges(&self, device: Option<&str>) -> Result<Vec<DevicePurge>, StoreError> {
        type Row = (String, Option<String>, String, String, i64, i64);
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let columns = "SELECT storage, device, chart_id, reason, purged_at, recorded_at
                 FROM device_purges";
            let order = "ORDER BY recorded_at DESC, chart_id";
            let mut stmt = match device {
                Some(_) => conn.prepare_cached(&format!("{columns} WHERE device = ?1 {order}"))?,
                None => conn.prepare_cached(&format!("{columns} {order}"))?,
            };
            let row = |r: &super::sql::Row<'_>| r.columns();
            let rows = match device {
                Some(d) => stmt.query_map(params![d], row)?,
                None => stmt.query_map(params![], row)?,
            };
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let bad =
            |what: &str| StoreError::Corrupt(format!("a device's removal with an invalid {what}"));
        rows.into_iter()
            .map(|(storage, device, chart, reason, purged_at, recorded_at)| {
                Ok(DevicePurge {
                    storage,
                    device,
                    chart: chart.parse().map_err(|_| bad("chart id"))?,
                    reason: LeftReason::from_token(&reason).ok_or_else(|| bad("reason"))?,
                    purged_at: Timestamp::from_unix_millis(purged_at).map_err(|_| bad("time"))?,
                    recorded_at: Timestamp::from_unix_millis(recorded_at)
                        .map_err(|_| bad("time"))?,
                })
            })
            .collect()
    }
}
