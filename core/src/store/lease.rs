//! The single-writer lease of a database shared by several server nodes (docs/adr/0011).
//!
//! Some work is one writer's: the ward census documents (two nodes would write diverging
//! histories of one document), background compaction (two nodes would fold the same chart),
//! and the periodic sweeps. On PostgreSQL one node at a time does it: the holder of an advisory
//! lock taken on a connection of its own. When the holder dies its connection goes, the
//! database lets the lock go, and another node takes it at its next try (every
//! [`RETRY`](holder::RETRY)). The `chartsync_lease` row names the holder and carries an
//! epoch raised at each change of hands; what the holder writes as holder checks that epoch in
//! its own transaction ([`Inner::fence`]), so a node that lost the lock without knowing yet (its
//! connection cut, its process paused) writes nothing over its successor.
//!
//! A SQLite store belongs to one process (the data directory's lock), which holds the lease
//! from the start.

use std::sync::atomic::{AtomicI64, Ordering};

use super::sql::{params, Dialect, OptionalExtension, Sql};
use super::{now_millis, ChartStore, Inner, Job, StoreError};
use crate::chart::ChartId;

/// The lease's name in `chartsync_lease` (one lease, for all the single-writer work).
pub(super) const NAME: &str = "single-writer";

/// The advisory lock whose holder holds the lease.
#[cfg(feature = "postgres")]
const LEASE_LOCK: i64 = 0x4348_5359_0004;

/// What a store knows of the lease: the epoch it holds it at, or [`NOT_HELD`].
#[derive(Debug)]
pub(super) struct Lease {
    epoch: AtomicI64,
}

const NOT_HELD: i64 = -1;

impl Lease {
    /// Held from the start, at epoch 0 (a SQLite store), or not held until taken.
    pub(super) fn new(held: bool) -> Lease {
        Lease {
            epoch: AtomicI64::new(if held { 0 } else { NOT_HELD }),
        }
    }

    fn get(&self) -> Option<i64> {
        Some(self.epoch.load(Ordering::Acquire)).filter(|e| *e != NOT_HELD)
    }

    #[cfg(feature = "postgres")]
    fn set(&self, epoch: Option<i64>) {
        self.epoch
            .store(epoch.unwrap_or(NOT_HELD), Ordering::Release);
    }
}

/// Who holds the lease of a database, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's node id ([`ChartStore::node`]).
    pub node: String,
    /// Raised each time the lease changes hands.
    pub epoch: i64,
    /// Since when, in milliseconds since the Unix epoch.
    pub since: i64,
}

impl ChartStore {
    /// Whether this store does the single-writer work (census documents, background
    /// compaction, the sweeps): a SQLite store always; on PostgreSQL, the one node holding the
    /// lease.
    pub fn holds_lease(&self) -> bool {
        self.inner.lease.get().is_some()
    }

    /// The epoch this store holds the lease at, `None` while it does not: a new value means
    /// the lease came to this store afresh (the server then rebuilds the ward censuses from the
    /// index, as they may have moved meanwhile).
    pub fn lease_epoch(&self) -> Option<i64> {
        self.inner.lease.get()
    }

    /// This store's node id: a new one each time the store opens, and the name under which
    /// it appears in the outbox and as the lease's holder.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Who holds the lease, as the database records it (on PostgreSQL; `None` on SQLite, and
    /// before any node has held it). The holder named may have died a moment ago: its
    /// successor's row replaces it when it takes the lease.
    pub fn lease_holder(&self) -> Result<Option<LeaseHolder>, StoreError> {
        if self.inner.dialect() != Dialect::Postgres {
            return Ok(None);
        }
        self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT node, epoch, since FROM chartsync_lease WHERE name = ?1",
                    [NAME],
                    |r| {
                        Ok(LeaseHolder {
                            node: r.get(0)?,
                            epoch: r.get(1)?,
                            since: r.get(2)?,
                        })
                    },
                )
                .optional()?)
        })
    }
}

impl Inner {
    /// In a transaction writing as the lease's holder: that this store still holds it. On
    /// PostgreSQL the lease's row is read under a share lock, so a successor's taking it (which
    /// raises the epoch) waits for this transaction, or this one sees the new epoch and is
    /// refused with [`StoreError::NotLeaseHolder`].
    pub(super) fn fence(&self, tx: &Sql<'_>) -> Result<(), StoreError> {
        if tx.dialect() != Dialect::Postgres {
            return Ok(());
        }
        let held = self.lease.get().ok_or(StoreError::NotLeaseHolder)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT epoch FROM chartsync_lease WHERE name = ?1 FOR SHARE",
                [NAME],
                |r| r.get(0),
            )
            .optional()?;
        match current == Some(held) {
            true => Ok(()),
            false => Err(StoreError::NotLeaseHolder),
        }
    }

    /// A chart's changes outgrew its snapshot: compact it here if this store holds the lease,
    /// or leave it to the holder.
    pub(super) fn compaction_due(&self, id: ChartId) {
        if self.lease.get().is_some() {
            self.schedule(Job::Compact(id));
            return;
        }
        // Should this fail, the chart's next commit asks again.
        let _ = self.writer().and_then(|conn| {
            conn.prepare_cached(
                "INSERT INTO compaction_due (chart_id, at) VALUES (?1, ?2)
                 ON CONFLICT (chart_id) DO NOTHING",
            )?
            .execute(params![id.to_string(), now_millis()])
        });
    }
}

#[cfg(feature = "postgres")]
pub(super) use holder::compete;

/// The thread that competes for the lease, holds it, and hands over the charts due a
/// compaction.
#[cfg(feature = "postgres")]
mod holder {
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use super::{Inner, LEASE_LOCK, NAME};
    use crate::chart::ChartId;
    use crate::store::sql::pg::Database;
    use crate::store::{now_millis, Job, StoreError};

    /// How often a node without the lease tries to take it: at most this long passes between a
    /// holder's death and its successor's taking over.
    pub(super) const RETRY: Duration = Duration::from_secs(2);
    /// How often the holder checks its connection (and so its lock) and takes the charts due
    /// a compaction.
    const CHECK: Duration = Duration::from_secs(1);

    /// Starts competing for the lease on a thread and a connection of its own. The thread
    /// holds the store weakly and ends, letting the lease go, when the store closes.
    pub(in crate::store) fn compete(
        inner: Weak<Inner>,
        database: Database,
        node: String,
    ) -> Result<(), StoreError> {
        std::thread::Builder::new()
            .name("chartsync-lease".into())
            .spawn(move || run(&inner, &database, &node))?;
        Ok(())
    }

    fn run(inner: &Weak<Inner>, database: &Database, node: &str) {
        let mut client: Option<postgres::Client> = None;
        let mut next_try = Instant::now();
        loop {
            let Some(store) = inner.upgrade() else {
                return;
            };
            let held = store.lease.get().is_some();
            if held {
                let kept = client
                    .as_mut()
                    .ok_or(())
                    .and_then(|c| still_held(c, store.lease.get()).map_err(|_| ()));
                match kept {
                    Ok(true) => {
                        if let Some(c) = client.as_mut() {
                            let _ = hand_over_compactions(c, &store);
                        }
                    }
                    _ => {
                        store.lease.set(None);
                        // Closing the connection lets go of the lock, should it still hold it.
                        client = None;
                        next_try = Instant::now() + RETRY;
                    }
                }
            } else if Instant::now() >= next_try {
                next_try = Instant::now() + RETRY;
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = database.connect().ok();
                }
                if let Some(c) = client.as_mut() {
                    match take(c, node) {
                        Ok(Some(epoch)) => {
                            store.lease.set(Some(epoch));
                            let _ = hand_over_compactions(c, &store);
                        }
                        Ok(None) => {}
                        Err(_) => client = None,
                    }
                }
            }
            drop(store);
            std::thread::sleep(CHECK);
        }
    }

    /// Takes the lock if it is free, and the lease's row with it: the new epoch.
    fn take(c: &mut postgres::Client, node: &str) -> Result<Option<i64>, postgres::Error> {
        let taken: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_LOCK])?
            .get(0);
        if !taken {
            return Ok(None);
        }
        let epoch = c.query_one(
            "INSERT INTO chartsync_lease (name, epoch, node, since) VALUES ($1, 1, $2, $3)
             ON CONFLICT (name) DO UPDATE
             SET epoch = chartsync_lease.epoch + 1, node = EXCLUDED.node, since = EXCLUDED.since
             RETURNING epoch",
            &[&NAME, &node, &now_millis()],
        );
        match epoch {
            Ok(row) => Ok(Some(row.get(0))),
            Err(e) => {
                let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&LEASE_LOCK]);
                Err(e)
            }
        }
    }

    /// Whether the holder's connection is alive and the row still names its epoch.
    fn still_held(c: &mut postgres::Client, epoch: Option<i64>) -> Result<bool, postgres::Error> {
        let row = c.query_opt(
            "SELECT epoch FROM chartsync_lease WHERE name = $1",
            &[&NAME],
        )?;
        Ok(row.map(|r| r.get::<_, i64>(0)) == epoch)
    }

    /// The charts other nodes found due a compaction, onto this node's maintenance thread.
    fn hand_over_compactions(
        c: &mut postgres::Client,
        store: &Inner,
    ) -> Result<(), postgres::Error> {
        let rows = c.query(
            "DELETE FROM compaction_due WHERE chart_id IN
                 (SELECT chart_id FROM compaction_due ORDER BY at LIMIT 1000)
             RETURNING chart_id",
            &[],
        )?;
        for row in rows {
            if let Ok(id) = row.get::<_, &str>(0).parse::<ChartId>() {
                store.schedule(Job::Compact(id));
            }
        }
        Ok(())
    }
}
