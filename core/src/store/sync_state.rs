//! What each sync peer was last known to have of each chart, and this store's own storage id.

use super::sql::{params, Begin, Dialect, OptionalExtension};

use super::{now_millis, ChartStore, Durability, StoreError};
use crate::chart::ChartId;

impl ChartStore {
    /// This store's storage id: a UUID made on first use and kept in the store, which sync
    /// peers key what they know of this store by.
    pub fn storage_id(&self) -> Result<String, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'storage_id'",
                params![],
                |r| r.get(0),
            )
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = crate::seeded::uuid_v4().to_string();
                tx.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('storage_id', ?1)",
                    [&id],
                )?;
                id
            }
        };
        tx.commit()?;
        Ok(id)
    }

    /// What `peer` was last known to have of a chart, for the automerge sync protocol.
    pub fn sync_state(
        &self,
        peer: &str,
        id: ChartId,
    ) -> Result<Option<automerge::sync::State>, StoreError> {
        let bytes: Option<Vec<u8>> = self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT state FROM sync_states WHERE peer = ?1 AND chart_id = ?2",
                    params![peer, id.to_string()],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        bytes
            .map(|b| automerge::sync::State::decode(&b).map_err(|_| StoreError::BadSyncState(id)))
            .transpose()
    }

    pub fn save_sync_state(
        &self,
        peer: &str,
        id: ChartId,
        state: &automerge::sync::State,
    ) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        // A sync state only shortens the next exchange: one lost in a crash means the peer
        // syncs from an older one (more bytes, never less data). So it is not waited onto the
        // disk; the store's next durable commit takes it there. A server saves one each time
        // a device has caught up on a chart, and waiting for the disk each time was most of
        // a busy ward's server time (BENCHMARKS.md, "Side by side").
        let upsert =
            "INSERT INTO sync_states (peer, chart_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                      ON CONFLICT (peer, chart_id) DO UPDATE SET state = ?3, updated_at = ?4";
        let args = params![peer, id.to_string(), state.encode(), now_millis()];
        if conn.dialect() == Dialect::Postgres {
            let tx = conn.transaction(Begin::Immediate)?;
            tx.execute_batch("SET LOCAL synchronous_commit = off")?;
            tx.execute(upsert, args)?;
            return tx.commit();
        }
        let durable = matches!(self.inner.options.durability, Durability::Full);
        if durable {
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        let saved = conn
            .prepare_cached(upsert)
            .and_then(|mut s| s.execute(args));
        if durable {
            conn.execute_batch("PRAGMA synchronous = FULL")?;
        }
        saved?;
        Ok(())
    }

    /// Forgets sync states not saved for `age`: they are keyed by ids peers choose, so they
    /// would otherwise pile up for good. A peer that comes back syncs from the start (sync
    /// state only saves messages). How many were forgotten.
    pub fn forget_sync_states(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let before = now_millis() - age.as_millis() as i64;
        let conn = self.inner.writer()?;
        let forgotten = conn
            .prepare_cached("DELETE FROM sync_states WHERE updated_at < ?1")?
            .execute([before])?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::*;

    fn synchronous(store: &ChartStore) -> i64 {
        store
            .inner
            .sqlite_writer()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// Sync states are written without waiting for the disk; the charts' commits after one
    /// still wait (synchronous = FULL, 2), whether the save succeeded or failed.
    #[test]
    fn saving_a_sync_state_leaves_commits_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChartStore::open(dir.path().join("s.db"), StoreOptions::default()).unwrap();
        assert_eq!(synchronous(&store), 2);
        let id = ChartId::random();
        let state = automerge::sync::State::new();
        store.save_sync_state("peer", id, &state).unwrap();
        assert_eq!(synchronous(&store), 2);
        store
            .inner
            .sqlite_writer()
            .execute_batch("DROP TABLE sync_states")
            .unwrap();
        assert!(store.save_sync_state("peer", id, &state).is_err());
        assert_eq!(synchronous(&store), 2);
    }
}
