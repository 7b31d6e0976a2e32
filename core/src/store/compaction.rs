//! Compaction: a chart's changes folded into a new snapshot, checked before the old rows go.

use super::sql::{params, Begin};
use automerge::ChangeHash;

use super::documents::read_document;
use super::{lock, ChartStore, Inner, StoreError};
use crate::chart::ChartId;

/// What compacting one chart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    /// Snapshot plus changes before.
    pub bytes_before: u64,
    /// The new snapshot (plus changes that arrived meanwhile).
    pub bytes_after: u64,
    pub changes_folded: u64,
}

impl ChartStore {
    /// Folds a chart's changes into a new snapshot now.
    pub fn compact(&self, id: ChartId) -> Result<CompactionReport, StoreError> {
        self.inner.compact(id)
    }
}

impl Inner {
    /// Replaces a chart's snapshot and the changes folded into it, in one transaction; the
    /// new snapshot is loaded back and checked before anything is deleted.
    pub(super) fn compact(&self, id: ChartId) -> Result<CompactionReport, StoreError> {
        let _one_at_a_time = lock(&self.compacting);
        let plan = match self.snapshot_from_memory(id)? {
            Some(plan) => plan,
            None => self.snapshot_from_disk(id)?,
        };
        // Off every lock but ours: the check costs a load.
        let reloaded =
            crate::chart::load_document(&plan.snapshot).map_err(|e| StoreError::Unloadable {
                id,
                reason: format!("the new snapshot does not load: {e}"),
            })?;
        let mut heads = reloaded.get_heads();
        heads.sort();
        if heads != plan.heads {
            return Err(StoreError::Unloadable {
                id,
                reason: "the new snapshot lost changes; kept the old one".into(),
            });
        }
        let mut conn = self.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        if self.shared() {
            // Readers of a chart under its lock (a writer on any node) must not see the new
            // snapshot with the old changes, or the old with the new.
            super::commit::lock_chart(&tx, id)?;
            // And the snapshot must be of the chart as the database has it: a copy in this
            // node's memory lacks what another node committed since, whose rows the fold
            // would delete. Left for the next commit to ask again.
            let stored: Vec<u8> = tx.query_row(
                "SELECT heads FROM charts WHERE key = ?1",
                params![plan.key],
                |r| r.get(0),
            )?;
            if stored != super::heads_blob(&plan.heads) {
                return Err(StoreError::ChangedElsewhere(id));
            }
        }
        tx.execute(
            "UPDATE chart_snapshots SET data = ?2 WHERE chart = ?1",
            params![plan.key, plan.snapshot],
        )?;
        // Commits made since the snapshot have later sequence numbers and stay.
        let folded = tx.execute(
            "DELETE FROM chart_changes WHERE chart = ?1 AND seq <= ?2",
            params![plan.key, plan.last_seq],
        )?;
        let after: i64 = tx.query_row(
            "UPDATE charts SET snapshot_bytes = ?2, incremental_bytes =
                 (SELECT coalesce(sum(length(data)), 0) FROM chart_changes WHERE chart = ?1)
             WHERE key = ?1 RETURNING snapshot_bytes + incremental_bytes",
            params![plan.key, plan.snapshot.len() as i64],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(CompactionReport {
            bytes_before: plan.bytes_before,
            bytes_after: after as u64,
            changes_folded: folded as u64,
        })
    }

    /// A new snapshot of a chart that is in memory: saved from the copy there (a load
    /// cheaper), under the chart's lock so that no commit lands between reading the last
    /// sequence number and saving. `None` when the chart is not loaded or mid-write.
    fn snapshot_from_memory(&self, id: ChartId) -> Result<Option<NewSnapshot>, StoreError> {
        let Some(slot) = lock(&self.cache).existing(&id) else {
            return Ok(None);
        };
        let mut cached = lock(&slot);
        let key = cached.key;
        if cached.dirty {
            return Ok(None);
        }
        let Some(chart) = cached.chart.as_mut() else {
            return Ok(None);
        };
        let (last_seq, bytes_before): (i64, i64) = self.with_reader(|conn| {
            Ok(conn.query_row(
                "SELECT (SELECT coalesce(max(seq), 0) FROM chart_changes WHERE chart = ?1),
                        snapshot_bytes + incremental_bytes
                 FROM charts WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })?;
        let mut heads = chart.heads();
        heads.sort();
        Ok(Some(NewSnapshot {
            key,
            snapshot: chart.save(),
            heads,
            last_seq,
            bytes_before: bytes_before as u64,
        }))
    }

    /// A new snapshot of a chart read from disk (checked against its index row as any load).
    fn snapshot_from_disk(&self, id: ChartId) -> Result<NewSnapshot, StoreError> {
        let stored = self.with_reader(|conn| read_document(conn, id))?;
        let snapshot = stored.load(id)?.save();
        Ok(NewSnapshot {
            key: stored.key,
            snapshot,
            heads: stored.heads,
            last_seq: stored.last_seq,
            bytes_before: stored.bytes.len() as u64,
        })
    }
}

/// A compaction's new snapshot and what it covers.
struct NewSnapshot {
    key: i64,
    snapshot: Vec<u8>,
    /// Sorted.
    heads: Vec<ChangeHash>,
    /// The last change the snapshot includes.
    last_seq: i64,
    bytes_before: u64,
}
