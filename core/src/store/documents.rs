//! Reading charts: a chart's snapshot and changes, loaded into the cache and checked
//! against the heads its index row records.

use std::sync::MutexGuard;

use super::sql::{params, Begin, OptionalExtension, Sql};
use automerge::{Automerge, ChangeHash, ReadDoc};

use super::cache::{Cached, Slot};
use super::{lock, ChartStore, Inner, StoreError};
use crate::chart::{Chart, ChartId};

impl ChartStore {
    /// Reads a chart without copying it. `read` must not call the store.
    pub fn read<T>(&self, id: ChartId, read: impl FnOnce(&Chart) -> T) -> Result<T, StoreError> {
        let slot = lock(&self.inner.cache).slot(id);
        let cached = self.inner.ready(id, &slot)?;
        match cached.chart.as_ref() {
            Some(chart) => Ok(read(chart)),
            None => Err(StoreError::NotFound(id)),
        }
    }

    /// A copy of a chart, to work on away from the store (a replica with its own actor id);
    /// bring its changes back with [`ChartStore::merge`].
    pub fn chart(&self, id: ChartId) -> Result<Chart, StoreError> {
        self.read(id, Chart::fork)
    }
}

impl Inner {
    /// Locks a chart's slot, loading the chart from disk if it is not in memory (or its last
    /// writer failed or panicked part-way, or another server node has committed to it since).
    pub(super) fn ready<'a>(
        &self,
        id: ChartId,
        slot: &'a Slot,
    ) -> Result<MutexGuard<'a, Cached>, StoreError> {
        self.ready_via(id, slot, None)
    }

    /// [`ready`](Self::ready), reading through `via` if given: the transaction that holds the
    /// chart's lock for a write.
    pub(super) fn ready_via<'a>(
        &self,
        id: ChartId,
        slot: &'a Slot,
        via: Option<&Sql<'_>>,
    ) -> Result<MutexGuard<'a, Cached>, StoreError> {
        let mut cached = lock(slot);
        if cached.chart.is_some()
            && !cached.dirty
            && (!self.shared() || self.still_current(cached.key, &cached.stored_heads, via)?)
        {
            return Ok(cached);
        }
        match self.load(id, via) {
            Ok(stored) => {
                *cached = Cached {
                    chart: Some(stored.chart),
                    key: stored.key,
                    stored_heads: stored.heads,
                    dirty: false,
                    placement: None,
                };
                lock(&self.cache).reweigh(&id, cached.chart.as_ref());
                Ok(cached)
            }
            Err(e) => {
                *cached = Cached::default();
                drop(cached);
                lock(&self.cache).forget_unloaded(&id, slot);
                Err(e)
            }
        }
    }

    /// Whether the chart's index row still records `heads`: in a database other server nodes
    /// write to, a copy in memory is used only once this says so.
    fn still_current(
        &self,
        key: i64,
        heads: &[ChangeHash],
        via: Option<&Sql<'_>>,
    ) -> Result<bool, StoreError> {
        let read = |conn: &Sql<'_>| {
            conn.query_row(
                "SELECT heads FROM charts WHERE key = ?1",
                params![key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
        };
        let stored = match via {
            Some(conn) => read(conn)?,
            None => self.with_reader(|conn| read(conn))?,
        };
        Ok(stored.as_deref() == Some(&heads_blob(heads)[..]))
    }

    /// Reads a chart's snapshot and changes in one read transaction and loads them; the
    /// result must have exactly the heads the index row records.
    fn load(&self, id: ChartId, via: Option<&Sql<'_>>) -> Result<LoadedChart, StoreError> {
        let stored = match via {
            Some(tx) => read_rows(tx, id)?,
            None => self.with_reader(|conn| read_document(conn, id))?,
        };
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doc = stored.load(id)?;
        let chart = Chart::from_automerge(doc).map_err(|error| StoreError::Chart { id, error })?;
        Ok(LoadedChart {
            key: stored.key,
            heads: stored.heads,
            chart,
        })
    }
}

pub(super) fn heads_blob(heads: &[ChangeHash]) -> Vec<u8> {
    let mut sorted = heads.to_vec();
    sorted.sort();
    sorted.iter().flat_map(|h| h.0).collect()
}

/// The sorted heads a `heads` column holds.
pub(super) fn parse_heads_blob(blob: &[u8]) -> Option<Vec<ChangeHash>> {
    if !blob.len().is_multiple_of(32) {
        return None;
    }
    blob.chunks(32)
        .map(|c| ChangeHash::try_from(c).ok())
        .collect()
}

/// A chart as loaded from the store.
struct LoadedChart {
    key: i64,
    heads: Vec<ChangeHash>,
    chart: Chart,
}

/// A chart's stored bytes: snapshot then changes, the heads its index row records, and the
/// last change's sequence number.
pub(super) struct StoredDocument {
    pub(super) key: i64,
    pub(super) heads: Vec<ChangeHash>,
    pub(super) bytes: Vec<u8>,
    pub(super) last_seq: i64,
}

impl StoredDocument {
    /// Loads the bytes, checking that they make exactly the chart the index row describes: a
    /// change row lost or damaged would otherwise load quietly without it (automerge queues
    /// changes whose dependencies are missing), and compaction would make the loss permanent.
    pub(super) fn load(&self, id: ChartId) -> Result<Automerge, StoreError> {
        let unloadable = |reason: String| StoreError::Unloadable { id, reason };
        let doc =
            crate::chart::load_document(&self.bytes).map_err(|e| unloadable(e.to_string()))?;
        if !doc.get_missing_deps(&[]).is_empty() {
            return Err(unloadable("changes are missing from the store".into()));
        }
        let mut heads = doc.get_heads();
        heads.sort();
        if heads != self.heads {
            return Err(unloadable(
                "the stored changes do not reach the heads the index records".into(),
            ));
        }
        Ok(doc)
    }
}

pub(super) fn read_document(conn: &mut Sql<'_>, id: ChartId) -> Result<StoredDocument, StoreError> {
    // One read transaction: the row, the snapshot and the changes are of the same moment.
    let tx = conn.transaction(Begin::Deferred)?;
    let stored = read_rows(&tx, id)?;
    tx.finish()?;
    Ok(stored)
}

/// [`read_document`] inside a transaction the caller holds (one that holds the chart's lock,
/// which every writer of the chart and its compaction take).
fn read_rows(tx: &Sql<'_>, id: ChartId) -> Result<StoredDocument, StoreError> {
    let row: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = tx
        .prepare_cached(
            "SELECT c.key, c.heads, s.data FROM charts c
             LEFT JOIN chart_snapshots s ON s.chart = c.key
             WHERE c.id = ?1",
        )?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((key, heads, snapshot)) = row else {
        return Err(StoreError::NotFound(id));
    };
    let mut bytes =
        snapshot.ok_or_else(|| StoreError::Corrupt(format!("chart {id} has no snapshot row")))?;
    let heads = parse_heads_blob(&heads).ok_or_else(|| {
        StoreError::Corrupt(format!("chart {id}: malformed heads in its index row"))
    })?;
    let mut last_seq = 0;
    {
        let mut stmt =
            tx.prepare_cached("SELECT seq, data FROM chart_changes WHERE chart = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([key])?;
        while let Some(row) = rows.next()? {
            last_seq = row.get(0)?;
            bytes.extend_from_slice(&row.get::<_, Vec<u8>>(1)?);
        }
    }
    Ok(StoredDocument {
        key,
        heads,
        bytes,
        last_seq,
    })
}
