//! The embedded chart store: every chart a tablet (or the server) holds, in one SQLite file.
//!
//! A chart is a snapshot (automerge `save()`) plus the changes committed since (incremental
//! saves, one row per commit). Each commit appends its changes and refreshes the chart's index
//! rows (census fields, deficiencies) in one SQLite transaction, and returns only once that
//! transaction is durable. Listings read the index rows and never load a document. Charts load
//! on demand into a cache bounded by memory; a background thread folds a chart's changes into
//! a new snapshot once they outgrow the old one. docs/store.md has the file format and why.
//!
//! One module a job: `commit` (new charts, imports, each commit with its index and audit rows),
//! `documents` (loading a chart), `charts` (listings from the index), `compaction`, `audit`,
//! `sync_state`, `census_docs`, `feed`, `maintenance` (the background thread, checks and
//! statistics); the records office's tables each have their own (`records`, `held`,
//! `directory`, `break_glass`, `accounting_requests`, ...). This module opens the store and
//! holds what they share: the writer, the readers and the cache.

mod accounting_requests;
mod attachments;
mod audit;
pub mod backup;
mod break_glass;
mod bulk;
mod cache;
mod census_docs;
mod charts;
mod commit;
mod compaction;
#[cfg(feature = "postgres")]
mod copy;
mod credentials;
mod deficiency_work;
mod delinquency;
mod directory;
mod documents;
mod error;
mod feed;
mod held;
mod lease;
mod maintenance;
mod options;
mod outbox;
mod patient_index;
mod purge;
mod receipts;
mod records;
mod retention;
pub mod schema;
mod search;
pub(crate) mod sql;
mod sync_state;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::chart::Timestamp;

pub use accounting_requests::{
    AccountingExtension, AccountingRequest, AccountingRequestStatus, NewAccountingRequest,
    ACCOUNTING_DUE_DAYS, ACCOUNTING_EXTENSION_DAYS,
};
pub use attachments::{
    attachment_hash, parts_of, NamedFile, PartStored, ScannedDocument, StoredAttachment,
    ATTACHMENT_PART_BYTES,
};
pub use audit::{Actor, AuditAction, AuditChain, AuditRecord};
pub use break_glass::{BreakGlass, BreakGlassReason, NewBreakGlass, ReviewFilter, UnfiledGrant};
pub use bulk::{BulkClient, BulkJob, NewBulkClient};
pub use charts::{ChartFilter, ChartSummary, Placement};
pub use commit::{ImportProgress, Proven};
pub use compaction::CompactionReport;
#[cfg(feature = "postgres")]
pub use copy::{CopyProgress, CopyReport};
pub use credentials::{Enrolment, LocalCredential, UnlockAttempt};

pub use deficiency_work::{Assigned, DeficiencyRef};
pub use delinquency::{
    DayCount, Delinquency, KindCount, MonthCount, DEFAULT_THRESHOLD_PERCENT, DISCHARGE_MONTHS,
};
pub use directory::{
    CredentialStatus, Device, IssuedCertificate, NewStaff, Revocation, Revoked, Severity,
    StaffMember,
};
pub use error::StoreError;
pub use feed::ChartChanged;
pub use held::{DeviceHold, Held, HeldBatch, HoldQuota, HoldStatus, NewHold};
pub use lease::LeaseHolder;
pub use maintenance::StoreStats;
pub use options::{Compaction, Durability, EncryptionKey, RebuildListener, StoreOptions};
pub use outbox::OutboxLag;
pub use patient_index::{IndexWarning, IndexWarningKind};
pub use purge::{DevicePurge, PurgeRecord, PurgedChart};
pub use receipts::Receipts;
pub use records::{
    AccountedDisclosure, Accounting, Acknowledgement, CodingQueueItem, DeficiencyFilter,
    WorklistItem, DEFAULT_BILL_HOLD_DAYS,
};
pub use retention::{
    DestructionBatch, DestructionItem, HoldScope, LegalHold, NewRetentionRule, RetentionItem,
    RetentionRule, RETENTION_FLOOR_YEARS,
};
pub use search::{ChartHit, ChartSearch, ChartSearchResult};

use audit::{insert_audit, QueuedAudit};
use cache::Cache;
use commit::{insert_deficiencies, principal_code, IndexFields};
use documents::{heads_blob, parse_heads_blob, read_document};
use maintenance::{spawn_maintenance, Job};

/// The advisory lock of [`ChartStore::serving_lock`].
#[cfg(feature = "postgres")]
const SERVING_LOCK: i64 = 0x4348_5359_0003;

#[cfg(feature = "postgres")]
pub use sql::pg::DatabaseLock;

/// Reader connections kept open between uses.
const MAX_IDLE_READERS: usize = 8;

/// Locks a mutex, carrying on if a panicking thread held it: every critical section here
/// leaves its data consistent or is followed by a reload from disk.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the store's rows are.
enum Engine {
    /// One file: one writer connection behind a mutex, and a pool of readers.
    Sqlite {
        path: PathBuf,
        writer: Mutex<Connection>,
        readers: Mutex<Vec<Connection>>,
    },
    /// A PostgreSQL database, shared by every server node: a pool of connections, each
    /// writing in its own transactions.
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<sql::pg::Manager>, sql::pg::Database),
}

struct Inner {
    engine: Engine,
    options: StoreOptions,
    cache: Mutex<Cache>,
    feed: feed::Feed,
    loads: std::sync::atomic::AtomicU64,
    /// One compaction at a time, whoever asks.
    compacting: Mutex<()>,
    /// Work for the maintenance thread.
    jobs: Mutex<mpsc::Sender<Job>>,
    commits_since_checkpoint: std::sync::atomic::AtomicU32,
    /// Whether any chart may be read-only on this device (it left the device's wards, or
    /// changes made to it here were rejected): only then does a write look the chart up (a
    /// server has none).
    read_only_somewhere: std::sync::atomic::AtomicBool,
    /// Receipts that could not be written (`StoreStats::receipts_failed`).
    receipts_failed: std::sync::atomic::AtomicU64,
    /// Audit rows waiting for the writer: see [`ChartStore::record_audit`].
    audit_queue: Mutex<Vec<QueuedAudit>>,
    /// Held by whoever commits a batch of queued audit rows.
    audit_batch: Mutex<()>,
    /// This store's name in the outbox of a database shared by several nodes: a new one at
    /// each opening.
    node: String,
    /// Whether this store does the single-writer work (see `lease`).
    lease: lease::Lease,
    /// How far the outbox's follower has got (PostgreSQL).
    outbox: outbox::Progress,
    /// Commits holding a connection at once (PostgreSQL): see `chart_lock_connection`.
    commit_slots: Slots,
}

/// A bound on how many may do something at once; each waits (blocking) for a free place.
struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A place taken in [`Slots`], given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(places: usize) -> Slots {
        Slots {
            free: Mutex::new(places.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    fn enter(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

pub struct ChartStore {
    inner: Arc<Inner>,
    maintenance: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ChartStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartStore").finish_non_exhaustive()
    }
}

impl ChartStore {
    /// Opens the store at `path`, creating it (and its folder) if there is no file there.
    /// A file that is not a chartsync store, is damaged, is encrypted with another key or was
    /// written by a newer version is refused with a typed error and left as it was.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<ChartStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut writer = schema::connect(&path, &options, true)?;
        schema::prepare(&mut writer)?;
        let engine = Engine::Sqlite {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        };
        Self::start(engine, options)
    }

    /// Opens the store in a PostgreSQL database (`postgres://user@host/db`), shared by every
    /// server node: its current schema must be empty (the store is made there) or a chartsync
    /// store, at this version or an older one (migrated, by one node at a time). A schema
    /// newer than this build is refused, so a node left on an older version does not start.
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, options: StoreOptions) -> Result<ChartStore, StoreError> {
        let database = sql::pg::Database::from_url(url)?;
        // One connection first, for its error as PostgreSQL gives it (a refused password, an
        // unverified certificate, no server there): the pool would only say it timed out.
        sql::pg::blocking(|| database.connect().map(drop)).map_err(sql::pg::error)?;
        let pool = r2d2::Pool::builder()
            .max_size(options.connections)
            .min_idle(Some(1))
            // A connection that broke (the database restarted) fails its next statement and is
            // dropped when returned; testing each one at every checkout would double the round
            // trips of every small read.
            .test_on_check_out(false)
            .connection_timeout(std::time::Duration::from_secs(30))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(sql::pg::Manager {
                database: database.clone(),
            })
            .map_err(|e| StoreError::Database(format!("could not connect: {e}")))?;
        {
            let mut conn = pool
                .get()
                .map_err(|e| StoreError::Database(format!("could not connect: {e}")))?;
            schema::postgres::prepare(conn.client())?;
        }
        Self::start(Engine::Postgres(pool, database), options)
    }

    /// On PostgreSQL, the database's counterpart of the data directory's lock file: every
    /// running server node holds it shared (`exclusive: false`) for its whole life, and the
    /// records office's offline writes (an import, a compaction) take it alone. `None` when
    /// someone holds it against us; an error on a SQLite store, whose lock is its folder's.
    #[cfg(feature = "postgres")]
    pub fn serving_lock(&self, exclusive: bool) -> Result<Option<DatabaseLock>, StoreError> {
        match &self.inner.engine {
            Engine::Postgres(pool, _) => DatabaseLock::try_take(pool, SERVING_LOCK, !exclusive),
            Engine::Sqlite { .. } => Err(StoreError::Invalid(
                "a SQLite store is locked by its data directory's lock file".into(),
            )),
        }
    }

    /// Brings a store whose schema is current into use: chains audit rows written before
    /// the chain, re-indexes if the record rules changed, and starts the maintenance thread.
    fn start(engine: Engine, options: StoreOptions) -> Result<ChartStore, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let engine_kind = match &engine {
            Engine::Sqlite { .. } => sql::Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Engine::Postgres(..) => sql::Dialect::Postgres,
        };
        let commit_slots = Slots::new(options.connections as usize / 2);
        let inner = Arc::new(Inner {
            engine,
            cache: Mutex::new(Cache::new(options.cache_bytes)),
            options,
            feed: feed::Feed::default(),
            loads: Default::default(),
            compacting: Mutex::new(()),
            jobs: Mutex::new(jobs),
            commits_since_checkpoint: Default::default(),
            read_only_somewhere: false.into(),
            receipts_failed: Default::default(),
            audit_queue: Default::default(),
            audit_batch: Default::default(),
            node: crate::seeded::uuid_v4().to_string(),
            lease: lease::Lease::new(matches!(engine_kind, sql::Dialect::Sqlite)),
            outbox: Default::default(),
            commit_slots,
        });
        {
            let mut conn = inner.writer()?;
            audit::link_unchained(&mut conn)?;
            records::rebuild_if_rules_changed(&mut conn, inner.options.on_rebuild.as_ref())?;
            let read_only_somewhere: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM device_departures)
                     OR EXISTS (SELECT 1 FROM device_holds WHERE rejected IS NOT NULL)",
                sql::params![],
                |r| r.get(0),
            )?;
            inner
                .read_only_somewhere
                .store(read_only_somewhere, std::sync::atomic::Ordering::Release);
        }
        #[cfg(feature = "postgres")]
        if let Engine::Postgres(_, database) = &inner.engine {
            // Other nodes' commits from now on; earlier ones the devices' sync states cover.
            let from: i64 = inner.writer()?.query_row(
                "SELECT CAST(coalesce(max(seq), 0) AS BIGINT) FROM chart_outbox",
                sql::params![],
                |r| r.get(0),
            )?;
            outbox::follow(
                Arc::downgrade(&inner),
                database.clone(),
                inner.node.clone(),
                from,
            )?;
            if inner.options.lease {
                lease::compete(Arc::downgrade(&inner), database.clone(), inner.node.clone())?;
            }
        }
        let maintenance = spawn_maintenance(Arc::downgrade(&inner), queue)?;
        Ok(ChartStore {
            inner,
            maintenance: Some(maintenance),
        })
    }

    /// Which engine holds the store: `"sqlite"` or `"postgresql"`.
    pub fn engine(&self) -> &'static str {
        match self.inner.dialect() {
            sql::Dialect::Sqlite => "sqlite",
            sql::Dialect::Postgres => "postgresql",
        }
    }

    /// The store's file, on SQLite; `None` in a PostgreSQL database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.sqlite_path()
    }
}

impl Drop for ChartStore {
    fn drop(&mut self) {
        if let Some(handle) = self.maintenance.take() {
            self.inner.schedule(Job::Stop);
            let _ = handle.join();
        }
    }
}

fn now_millis() -> i64 {
    Timestamp::now().unix_millis()
}

impl Inner {
    /// The store's file, on SQLite.
    fn sqlite_path(&self) -> Option<&Path> {
        match &self.engine {
            Engine::Sqlite { path, .. } => Some(path),
            #[cfg(feature = "postgres")]
            Engine::Postgres(..) => None,
        }
    }

    /// Whether other processes (server nodes) write to the store's rows too: then what is in
    /// memory is checked against the database before it is used.
    fn shared(&self) -> bool {
        self.dialect() == sql::Dialect::Postgres
    }

    /// The SQLite writer's connection itself, for tests that break the file under it.
    #[cfg(test)]
    fn sqlite_writer(&self) -> MutexGuard<'_, Connection> {
        match &self.engine {
            Engine::Sqlite { writer, .. } => lock(writer),
            #[cfg(feature = "postgres")]
            Engine::Postgres(..) => panic!("not a SQLite store"),
        }
    }

    /// A connection to hold a chart's lock on while it is written, in a database other nodes
    /// write to; `None` on SQLite, whose one writer is the lock.
    ///
    /// A commit holds this connection from reading the chart to committing it, and what it
    /// checks meanwhile (the server's rules read the store) takes another from the pool for a
    /// moment. So at most half the pool's connections are held by commits at once (the
    /// `Slot` returned beside it): the other half is always there for those reads. Without
    /// the bound, a tablet sending 200 charts at once had every connection held by a commit
    /// waiting for one more, until the pool gave up after 30 seconds.
    fn chart_lock_connection(
        &self,
    ) -> Result<(Option<sql::Sql<'_>>, Option<Slot<'_>>), StoreError> {
        match self.shared() {
            true => {
                let slot = self.commit_slots.enter();
                Ok((Some(self.writer()?), Some(slot)))
            }
            false => Ok((None, None)),
        }
    }

    /// Which SQL the store's engine speaks.
    fn dialect(&self) -> sql::Dialect {
        match &self.engine {
            Engine::Sqlite { .. } => sql::Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Engine::Postgres(..) => sql::Dialect::Postgres,
        }
    }

    /// The right to write, held until dropped (one writer at a time on SQLite): statements
    /// each committed on their own, or a transaction begun on it.
    ///
    /// On PostgreSQL each writer is a connection of its own, and commits run side by side:
    /// what must not interleave takes a lock in its transaction (see `audit::insert_audit`).
    pub(crate) fn writer(&self) -> Result<sql::Sql<'_>, StoreError> {
        match &self.engine {
            Engine::Sqlite { writer, .. } => Ok(sql::Sql::SqliteWriter(lock(writer))),
            #[cfg(feature = "postgres")]
            Engine::Postgres(pool, _) => sql::pg::pooled(pool),
        }
    }

    /// Runs `f` on a read-only connection from the pool.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut sql::Sql<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (path, readers) = match &self.engine {
            Engine::Sqlite { path, readers, .. } => (path, readers),
            #[cfg(feature = "postgres")]
            Engine::Postgres(pool, _) => return f(&mut sql::pg::pooled(pool)?),
        };
        let pooled = lock(readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = schema::connect(path, &self.options, false)?;
                c.execute_batch("PRAGMA query_only = ON;")?;
                // The file is known to be ours by now; whichever connection closes last
                // folds the log into the file, so the file alone is the store once closed.
                c.set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    false,
                )?;
                c
            }
        };
        let result = f(&mut sql::Sql::Sqlite(&conn));
        // A burst of readers leaves at most a few behind: the pool does not keep every
        // connection a busy moment opened.
        let mut idle = lock(readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}
