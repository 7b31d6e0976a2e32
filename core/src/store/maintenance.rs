//! The store's upkeep: the background thread (compactions, checkpoints), integrity checks
//! and statistics.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::sql::{params, Dialect, OptionalExtension};

use super::{audit, lock, schema, AuditChain, ChartStore, Inner, StoreError};
use crate::chart::ChartId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub charts: u64,
    pub charts_cached: usize,
    pub cache_bytes: usize,
    /// Documents loaded from disk since the store opened.
    pub documents_loaded: u64,
    /// Commits whose receipts could not be written (see `Receipts`).
    pub receipts_failed: u64,
}

/// Checkpoint the write-ahead log into the file after this many commits, on the maintenance
/// thread rather than inside a commit (SQLite's automatic checkpoint would stall the commit
/// that crosses its threshold).
pub(super) const CHECKPOINT_EVERY: u32 = 100;

pub(super) enum Job {
    Compact(ChartId),
    Checkpoint,
    Stop,
}

/// The background thread: compactions and checkpoints, off the committing threads. It holds
/// the store weakly, so the store's last owner decides when the store closes.
pub(super) fn spawn_maintenance(
    inner: std::sync::Weak<Inner>,
    queue: mpsc::Receiver<Job>,
) -> Result<JoinHandle<()>, StoreError> {
    let handle = std::thread::Builder::new()
        .name("chartsync-store".into())
        .spawn(move || {
            let mut checkpointer: Option<Connection> = None;
            while let Ok(first) = queue.recv() {
                // A burst of requests is done once: each chart compacted once, one checkpoint.
                let mut compact: HashSet<ChartId> = HashSet::new();
                let mut checkpoint = false;
                for job in std::iter::once(first).chain(queue.try_iter()) {
                    match job {
                        Job::Compact(id) => {
                            compact.insert(id);
                        }
                        Job::Checkpoint => checkpoint = true,
                        Job::Stop => return,
                    }
                }
                let Some(inner) = inner.upgrade() else { return };
                for id in compact {
                    // A failure (even a panic) leaves the chart as it was; the next commit
                    // asks again.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        inner.compact(id)
                    }));
                }
                if checkpoint {
                    if let Some(r) = &inner.options.receipts {
                        let _ = r.sync();
                    }
                    // PostgreSQL checkpoints itself.
                    let Some(path) = inner.sqlite_path() else {
                        continue;
                    };
                    // PASSIVE: copies what it can without waiting for, or blocking, anyone.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if checkpointer.is_none() {
                            checkpointer = schema::connect(path, &inner.options, false).ok();
                        }
                        checkpointer
                            .as_ref()
                            .map(|c| c.execute_batch("PRAGMA wal_checkpoint(PASSIVE);"))
                    }));
                    if !matches!(result, Ok(Some(Ok(())))) {
                        checkpointer = None;
                    }
                }
            }
        })?;
    Ok(handle)
}

impl ChartStore {
    /// Folds the write-ahead log into the file now (the last connection to close does it too).
    /// A process that stops while other threads still hold the store calls this on the way out,
    /// so that the file alone is the store.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        if let Some(r) = &self.inner.options.receipts {
            r.sync()?;
        }
        let conn = self.inner.writer()?;
        if conn.dialect() == Dialect::Postgres {
            // Nothing to fold: what PostgreSQL has committed is its files'.
            return Ok(());
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", params![], |_| Ok(()))?;
        Ok(())
    }

    /// Checks the audit trail's chain from its first row: how many rows and the last link
    /// (its tip), or the first row that does not follow from the one before it.
    pub fn verify_audit(&self) -> Result<AuditChain, StoreError> {
        self.inner.with_reader(|conn| audit::verify_chain(conn))
    }

    /// The store's integrity: `Ok(())`, or what was found. On SQLite, SQLite's full check
    /// of the file. On PostgreSQL (which checks its own pages), that the store's rows hold
    /// together: every chart has its snapshot.
    pub fn verify(&self) -> Result<(), StoreError> {
        let problems: Vec<String> = self.inner.with_reader(|conn| {
            if conn.dialect() == Dialect::Postgres {
                let bare: i64 = conn.query_row(
                    "SELECT count(*) FROM charts c
                     WHERE NOT EXISTS (SELECT 1 FROM chart_snapshots s WHERE s.chart = c.key)",
                    params![],
                    |r| r.get(0),
                )?;
                return Ok(if bare == 0 {
                    vec!["ok".to_string()]
                } else {
                    vec![format!("{bare} charts have no snapshot row")]
                });
            }
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map(params![], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        if problems.len() == 1 && problems[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(problems.join("; ")))
        }
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let charts = self.inner.with_reader(|conn| {
            Ok(
                conn.query_row("SELECT count(*) FROM charts", params![], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        })? as u64;
        let cache = lock(&self.inner.cache);
        Ok(StoreStats {
            charts,
            charts_cached: cache.len(),
            cache_bytes: cache.bytes(),
            documents_loaded: self.inner.loads.load(std::sync::atomic::Ordering::Relaxed),
            receipts_failed: self
                .inner
                .receipts_failed
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Bytes a chart takes in the store: (snapshot, changes since).
    pub fn chart_bytes(&self, id: ChartId) -> Result<(u64, u64), StoreError> {
        self.inner.with_reader(|conn| {
            conn.query_row(
                "SELECT snapshot_bytes, incremental_bytes FROM charts WHERE id = ?1",
                [id.to_string()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
            .ok_or(StoreError::NotFound(id))
        })
    }
}

impl Inner {
    pub(super) fn schedule(&self, job: Job) {
        // The thread outlives every send but the last (Stop, from Drop).
        let _ = lock(&self.jobs).send(job);
    }

    /// Counts a commit; every so many, asks for a checkpoint.
    pub(super) fn committed(&self, commits: u32) {
        use std::sync::atomic::Ordering;
        let n = self
            .commits_since_checkpoint
            .fetch_add(commits, Ordering::Relaxed)
            + commits;
        if n >= CHECKPOINT_EVERY {
            self.commits_since_checkpoint.store(0, Ordering::Relaxed);
            self.schedule(Job::Checkpoint);
        }
    }
}
