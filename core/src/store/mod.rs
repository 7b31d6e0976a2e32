//! The embedded chart store: every chart a tablet (or the server) holds, in one SQLite file.
//!
//! A chart is a snapshot (automerge `save()`) plus the changes committed since (incremental
//! saves, one row per commit). Each commit appends its changes and refreshes the chart's index
//! rows (census fields, deficiencies) in one SQLite transaction, and returns only once that
//! transaction is durable. Listings read the index rows and never load a document. Charts load
//! on demand into a cache bounded by memory; a background thread folds a chart's changes into
//! a new snapshot once they outgrow the old one. docs/store.md has the file format and why.

mod accounting_requests;
mod audit;
pub mod backup;
mod break_glass;
mod cache;
mod credentials;
mod deficiency_work;
mod delinquency;
mod directory;
mod error;
mod feed;
mod held;
mod options;
mod patient_index;
mod receipts;
mod records;
pub mod schema;
mod search;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use automerge::{Automerge, ChangeHash, ReadDoc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::chart::{
    Chart, ChartError, ChartId, Deficiency, EncounterStatus, RefreshScope, Timestamp,
};

pub use accounting_requests::{
    AccountingExtension, AccountingRequest, AccountingRequestStatus, NewAccountingRequest,
    ACCOUNTING_DUE_DAYS, ACCOUNTING_EXTENSION_DAYS,
};
pub use audit::{Actor, AuditAction, AuditChain, AuditRecord};
pub use break_glass::{BreakGlass, BreakGlassReason, NewBreakGlass, ReviewFilter, UnfiledGrant};
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
pub use options::{Compaction, Durability, EncryptionKey, RebuildListener, StoreOptions};
pub use patient_index::{IndexWarning, IndexWarningKind};
pub use receipts::Receipts;
pub use records::{
    AccountedDisclosure, Accounting, Acknowledgement, CodingQueueItem, DeficiencyFilter,
    WorklistItem, DEFAULT_BILL_HOLD_DAYS,
};
pub use search::{ChartHit, ChartSearch, ChartSearchResult};

use cache::{Cache, Cached, Slot};

/// A chart as a listing shows it, read from the index alone.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChartSummary {
    pub id: ChartId,
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub ward: String,
    pub bed: Option<String>,
    pub status: EncounterStatus,
    pub admitted_at: Timestamp,
    pub discharged_at: Option<Timestamp>,
    pub open_deficiencies: u32,
    /// When this store last committed a change to the chart.
    pub modified_at: Timestamp,
}

/// Where a chart is: its ward, and whether the stay is open. What decides who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub ward: String,
    pub status: EncounterStatus,
}

/// Which charts a listing returns; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ChartFilter {
    pub ward: Option<String>,
    pub mrn: Option<String>,
    pub status: Option<EncounterStatus>,
    /// Only charts committed to at or after this time.
    pub modified_since: Option<Timestamp>,
    pub limit: Option<u32>,
}

/// Progress of a bulk import, reported after each chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    pub done: usize,
    /// How many the caller said are coming, if it knows.
    pub total: Option<usize>,
    pub bytes: u64,
}

/// What compacting one chart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    /// Snapshot plus changes before.
    pub bytes_before: u64,
    /// The new snapshot (plus changes that arrived meanwhile).
    pub bytes_after: u64,
    pub changes_folded: u64,
}

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

/// Who wrote the changes of a commit from an enrolled tablet, as their proofs showed.
#[derive(Debug, Default)]
pub struct Proven {
    /// Each writer, with the changes they proved.
    pub writers: Vec<(Actor, Vec<ChangeHash>)>,
    /// The certificate each proven writer signed under (user, serial hex), for the audit row.
    pub certificates: Vec<(String, String)>,
    pub proofs: Vec<crate::trust::ChangeProof>,
}

impl Proven {
    /// "signed under certificate …" for a proven writer's audit row.
    fn detail(&self, user: &str) -> Option<String> {
        let serials: Vec<&str> = self
            .certificates
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, s)| s.as_str())
            .collect();
        (!serials.is_empty()).then(|| format!("signed under certificate {}", serials.join(", ")))
    }
}

/// What else a new chart's insert writes in its transaction.
enum Inserted<'a> {
    Plain,
    /// A `create` row in the audit trail.
    By(&'a Actor),
    /// Proofs of authorship of each change, made here (a tablet).
    Signed(&'a crate::trust::UnlockedKey),
    /// `create` rows per writer and the proofs a tablet sent (the server).
    Proven(&'a Proven),
}

/// Reader connections kept open between uses.
const MAX_IDLE_READERS: usize = 8;

/// Rows written in the same transaction as a chart's commit.
type AlsoInCommit<'a> = dyn Fn(&Transaction<'_>) -> Result<(), StoreError> + 'a;

/// Locks a mutex, carrying on if a panicking thread held it: every critical section here
/// leaves its data consistent or is followed by a reload from disk.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
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
}

/// An audit row waiting to be committed with the others queued beside it, and where its
/// outcome is told.
struct QueuedAudit {
    actor: Actor,
    action: AuditAction,
    chart: Option<ChartId>,
    detail: Option<String>,
    outcome: Arc<std::sync::OnceLock<Result<(), String>>>,
}

/// Checkpoint the write-ahead log into the file after this many commits, on the maintenance
/// thread rather than inside a commit (SQLite's automatic checkpoint would stall the commit
/// that crosses its threshold).
const CHECKPOINT_EVERY: u32 = 100;

enum Job {
    Compact(ChartId),
    Checkpoint,
    Stop,
}

/// The background thread: compactions and checkpoints, off the committing threads. It holds
/// the store weakly, so the store's last owner decides when the store closes.
fn spawn_maintenance(
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
                    // PASSIVE: copies what it can without waiting for, or blocking, anyone.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if checkpointer.is_none() {
                            checkpointer = schema::connect(&inner.path, &inner.options, false).ok();
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
        audit::link_unchained(&mut writer)?;
        records::rebuild_if_rules_changed(&mut writer, options.on_rebuild.as_ref())?;
        let read_only_somewhere: bool = writer.query_row(
            "SELECT EXISTS (SELECT 1 FROM device_departures)
                 OR EXISTS (SELECT 1 FROM device_holds WHERE rejected IS NOT NULL)",
            [],
            |r| r.get(0),
        )?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let inner = Arc::new(Inner {
            path,
            cache: Mutex::new(Cache::new(options.cache_bytes)),
            options,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            feed: feed::Feed::default(),
            loads: Default::default(),
            compacting: Mutex::new(()),
            jobs: Mutex::new(jobs),
            commits_since_checkpoint: Default::default(),
            read_only_somewhere: read_only_somewhere.into(),
            receipts_failed: Default::default(),
            audit_queue: Default::default(),
        });
        let maintenance = spawn_maintenance(Arc::downgrade(&inner), queue)?;
        Ok(ChartStore {
            inner,
            maintenance: Some(maintenance),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Adds a chart made on this device, under a new id.
    pub fn create(&self, chart: Chart) -> Result<ChartId, StoreError> {
        let id = ChartId::random();
        self.insert(id, chart)?;
        Ok(id)
    }

    /// Adds a chart under a given id (one received from a peer, or imported).
    pub fn insert(&self, id: ChartId, chart: Chart) -> Result<(), StoreError> {
        self.insert_inner(id, chart, Inserted::Plain)
    }

    /// [`ChartStore::insert`], with a `create` row in the audit trail in the same transaction.
    pub fn insert_as(&self, actor: &Actor, id: ChartId, chart: Chart) -> Result<(), StoreError> {
        self.insert_inner(id, chart, Inserted::By(actor))
    }

    /// [`ChartStore::insert_as`] for a chart from an enrolled tablet: a `create` row per
    /// verified writer, and the proofs, in the same transaction.
    pub fn insert_proven(
        &self,
        id: ChartId,
        chart: Chart,
        proven: &Proven,
    ) -> Result<(), StoreError> {
        self.insert_inner(id, chart, Inserted::Proven(proven))
    }

    /// Adds a chart made on this enrolled tablet by the signed-in person, with a proof of
    /// authorship for each of its changes, in the same transaction.
    pub fn create_signed(
        &self,
        signer: &crate::trust::UnlockedKey,
        chart: Chart,
    ) -> Result<ChartId, StoreError> {
        let id = ChartId::random();
        self.insert_inner(id, chart, Inserted::Signed(signer))?;
        Ok(id)
    }

    fn insert_inner(
        &self,
        id: ChartId,
        mut chart: Chart,
        how: Inserted<'_>,
    ) -> Result<(), StoreError> {
        let slot = lock(&self.inner.cache).slot(id);
        let mut cached = lock(&slot);
        if cached.chart.is_some() {
            return Err(StoreError::AlreadyExists(id));
        }
        chart.forget_new_changes();
        let row = NewChartRow::of(id, &mut chart)?;
        let heads = chart.heads();
        let inserted = {
            let mut conn = lock(&self.inner.writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            row.insert(&tx).and_then(|key| {
                match how {
                    Inserted::Plain => {}
                    Inserted::By(actor) => {
                        let hashes = change_hashes(&chart, &[]);
                        insert_audit(&tx, actor, AuditAction::Create, Some(id), &hashes, None)?;
                    }
                    Inserted::Signed(signer) => {
                        let proofs = credentials::prove(signer, id, &change_hashes(&chart, &[]));
                        credentials::insert_proofs(&tx, id, &proofs, None)?;
                    }
                    Inserted::Proven(proven) => {
                        for (actor, hashes) in &proven.writers {
                            let detail = proven.detail(&actor.user);
                            insert_audit(
                                &tx,
                                actor,
                                AuditAction::Create,
                                Some(id),
                                hashes,
                                detail.as_deref(),
                            )?;
                        }
                        credentials::insert_proofs(&tx, id, &proven.proofs, Some(now_millis()))?;
                    }
                }
                tx.commit()?;
                self.inner.receipt(|| change_hashes(&chart, &[]));
                // Announced before the writer is free: before any change to the chart.
                self.inner.feed.publish(&ChartChanged {
                    id,
                    heads: heads.clone(),
                    sections: all_sections(),
                    created: true,
                });
                Ok(key)
            })
        };
        let key = match inserted {
            Ok(key) => {
                self.inner.committed(1);
                key
            }
            Err(e) => {
                drop(cached);
                lock(&self.inner.cache).forget_unloaded(&id, &slot);
                return Err(e);
            }
        };
        *cached = Cached {
            chart: Some(chart),
            key,
            stored_heads: heads,
            dirty: false,
            placement: None,
        };
        lock(&self.inner.cache).reweigh(&id, cached.chart.as_ref());
        Ok(())
    }

    /// Adds many charts in one transaction: all of them, or (on any error) none. `progress`
    /// hears after each chart, from inside the transaction: it must not call the store.
    pub fn import<I>(
        &self,
        charts: I,
        total: Option<usize>,
        progress: impl FnMut(ImportProgress),
    ) -> Result<Vec<ChartId>, StoreError>
    where
        I: IntoIterator<Item = (ChartId, Chart)>,
    {
        self.import_inner(None, charts, total, progress)
    }

    /// [`ChartStore::import`], with a `create` row in the audit trail for each chart, in the
    /// same transaction.
    pub fn import_as<I>(
        &self,
        actor: &Actor,
        charts: I,
        total: Option<usize>,
        progress: impl FnMut(ImportProgress),
    ) -> Result<Vec<ChartId>, StoreError>
    where
        I: IntoIterator<Item = (ChartId, Chart)>,
    {
        self.import_inner(Some(actor), charts, total, progress)
    }

    fn import_inner<I>(
        &self,
        actor: Option<&Actor>,
        charts: I,
        total: Option<usize>,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<Vec<ChartId>, StoreError>
    where
        I: IntoIterator<Item = (ChartId, Chart)>,
    {
        let mut events = Vec::new();
        let mut receipts = Vec::new();
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut bytes = 0u64;
        for (index, (id, mut chart)) in charts.into_iter().enumerate() {
            if self.inner.options.receipts.is_some() {
                receipts.extend(change_hashes(&chart, &[]));
            }
            let row = NewChartRow::of(id, &mut chart)
                .and_then(|row| row.insert(&tx).map(|_| row))
                .and_then(|row| {
                    if let Some(actor) = actor {
                        let hashes = change_hashes(&chart, &[]);
                        insert_audit(&tx, actor, AuditAction::Create, Some(id), &hashes, None)?;
                    }
                    Ok(row)
                })
                .map_err(|error| StoreError::Import {
                    index,
                    error: Box::new(error),
                })?;
            bytes += row.snapshot.len() as u64;
            events.push(ChartChanged {
                id,
                heads: chart.heads(),
                sections: all_sections(),
                created: true,
            });
            progress(ImportProgress {
                done: index + 1,
                total,
                bytes,
            });
        }
        tx.commit()?;
        self.inner.receipt(|| receipts);
        // Announced before the writer is free: before any change to these charts.
        for e in &events {
            self.inner.feed.publish(e);
        }
        drop(conn);
        self.inner.committed(CHECKPOINT_EVERY);
        Ok(events.into_iter().map(|e| e.id).collect())
    }

    /// Changes a chart: `write` runs on the chart (a chart API write, or changes received
    /// from a peer) and whatever it changed is committed durably, with the index, before this
    /// returns. If `write` fails (or panics), or the commit does, nothing it did is kept: the
    /// chart is reloaded from disk on its next use. `write` must not call the store.
    pub fn update<T>(
        &self,
        id: ChartId,
        write: impl FnOnce(&mut Chart) -> Result<T, ChartError>,
    ) -> Result<T, StoreError> {
        self.update_inner(id, None, write, None, false)
    }

    /// [`ChartStore::update`], with a `write` row naming the committed changes in the audit
    /// trail, in the same transaction (no row when nothing changed).
    pub fn update_as<T>(
        &self,
        actor: &Actor,
        id: ChartId,
        write: impl FnOnce(&mut Chart) -> Result<T, ChartError>,
    ) -> Result<T, StoreError> {
        self.update_inner(id, Some(actor), write, None, false)
    }

    /// [`ChartStore::update`] on an enrolled tablet: each change `write` makes is proven as
    /// the signed-in person's, and the proofs are kept in the commit's transaction.
    pub fn update_signed<T>(
        &self,
        signer: &crate::trust::UnlockedKey,
        id: ChartId,
        write: impl FnOnce(&mut Chart) -> Result<T, ChartError>,
    ) -> Result<T, StoreError> {
        // A chart that left the tablet's wards is read-only here, unless the signer holds a
        // break-glass grant for it now.
        let break_glass = self
            .inner
            .read_only_somewhere
            .load(std::sync::atomic::Ordering::Acquire)
            && self
                .active_break_glass(Some(signer.user()), None, id, Timestamp::now())?
                .is_some();
        let proofs = std::cell::RefCell::new(Vec::new());
        let also =
            |tx: &Transaction<'_>| credentials::insert_proofs(tx, id, &proofs.borrow(), None);
        self.update_inner(
            id,
            None,
            |chart| {
                let before = chart.heads();
                let v = write(chart)?;
                *proofs.borrow_mut() =
                    credentials::prove(signer, id, &change_hashes(chart, &before));
                Ok(v)
            },
            Some(&also),
            break_glass,
        )
    }

    /// [`ChartStore::update`] for changes from an enrolled tablet, whose writers are known
    /// only once `write` has checked the changes' proofs: it fills `proven` with one audit
    /// `write` row per verified writer and the proofs to keep, all written in the commit's
    /// transaction.
    pub fn update_proven<T>(
        &self,
        id: ChartId,
        proven: &std::cell::RefCell<Proven>,
        write: impl FnOnce(&mut Chart) -> Result<T, ChartError>,
    ) -> Result<T, StoreError> {
        let also = |tx: &Transaction<'_>| {
            let p = proven.borrow();
            for (actor, hashes) in &p.writers {
                let detail = p.detail(&actor.user);
                insert_audit(
                    tx,
                    actor,
                    AuditAction::Write,
                    Some(id),
                    hashes,
                    detail.as_deref(),
                )?;
            }
            credentials::insert_proofs(tx, id, &p.proofs, Some(now_millis()))
        };
        self.update_inner(id, None, write, Some(&also), false)
    }

    /// `also`: more rows to write in the commit's transaction (only if the chart changed).
    fn update_inner<T>(
        &self,
        id: ChartId,
        actor: Option<&Actor>,
        write: impl FnOnce(&mut Chart) -> Result<T, ChartError>,
        also: Option<&AlsoInCommit<'_>>,
        break_glass: bool,
    ) -> Result<T, StoreError> {
        if !break_glass
            && self
                .inner
                .read_only_somewhere
                .load(std::sync::atomic::Ordering::Acquire)
        {
            if let Some(why) = self.read_only(id)? {
                return Err(StoreError::Chart {
                    id,
                    error: ChartError::NotPermitted(why.into()),
                });
            }
        }
        let slot = lock(&self.inner.cache).slot(id);
        let mut cached = self.inner.ready(id, &slot)?;
        let c = &mut *cached;
        let Some(chart) = c.chart.as_mut() else {
            return Err(StoreError::NotFound(id));
        };
        // Until the outcome is known; a panic in `write` leaves it set, and the next use of
        // the chart reloads it from disk.
        c.dirty = true;
        c.placement = None;
        let result = write(chart);
        let changed = chart.heads() != c.stored_heads;
        let outcome = match result {
            Err(error) => Err(StoreError::Chart { id, error }),
            Ok(v) if !changed => {
                chart.forget_new_changes();
                cached.dirty = false;
                return Ok(v);
            }
            Ok(v) => self
                .inner
                .persist(id, &mut cached, actor, also)
                .map(|due| (v, due)),
        };
        if let Some(chart) = &cached.chart {
            chart.forget_new_changes();
        }
        match outcome {
            Ok((v, due)) => {
                cached.dirty = false;
                lock(&self.inner.cache).reweigh(&id, cached.chart.as_ref());
                if due && self.inner.options.compaction == Compaction::Background {
                    self.inner.schedule(Job::Compact(id));
                }
                Ok(v)
            }
            Err(e) => {
                if changed {
                    // Memory must not hold what the file does not: reload on next use.
                    cached.chart = None;
                    lock(&self.inner.cache).reweigh(&id, None);
                }
                cached.dirty = false;
                Err(e)
            }
        }
    }

    /// Applies changes received from elsewhere (automerge change bytes) and commits them.
    /// Changes whose dependencies the chart lacks are refused. Check untrusted bytes with
    /// [`crate::chart::validate::validate_changes`] first.
    pub fn receive(&self, id: ChartId, changes: &[u8]) -> Result<(), StoreError> {
        self.update(id, |chart| chart.load_incremental(changes))
    }

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

    /// Merges a copy (from [`ChartStore::chart`], or a peer's replica) into the stored chart.
    pub fn merge(&self, id: ChartId, other: &Chart) -> Result<(), StoreError> {
        self.update(id, |chart| chart.merge(other))
    }

    pub fn contains(&self, id: ChartId) -> Result<bool, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM charts WHERE id = ?1",
                    [id.to_string()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    /// One chart's summary from the index, or `None` if the store has no such chart.
    pub fn summary(&self, id: ChartId) -> Result<Option<ChartSummary>, StoreError> {
        let sql = "SELECT id, mrn, family_name, given_names, ward, bed, status, admitted_at,
                          discharged_at, open_deficiencies, modified_at
                   FROM charts WHERE id = ?1";
        self.inner.with_reader(|conn| {
            conn.prepare_cached(sql)?
                .query_row([id.to_string()], summary_row)
                .optional()?
                .transpose()
        })
    }

    /// A chart's ward and stay, as its index row has them, or `None` if the store has no such
    /// chart. Read from the chart in memory when it is there (the server asks this of every
    /// commit on every connection that holds the chart: a read of the index each time was a
    /// tenth of its work in a reconnect storm), else from the index.
    pub fn placement(&self, id: ChartId) -> Result<Option<Placement>, StoreError> {
        let slot = lock(&self.inner.cache).existing(&id);
        if let Some(slot) = slot {
            let mut cached = lock(&slot);
            let c = &mut *cached;
            if let (false, Some(chart)) = (c.dirty, &c.chart) {
                if c.placement.is_none() {
                    // As the index row was written: see `IndexFields::of`.
                    c.placement = chart.encounter().ok().map(|e| Placement {
                        ward: e.ward,
                        status: e.status,
                    });
                }
                if let Some(p) = &c.placement {
                    return Ok(Some(p.clone()));
                }
            }
        }
        Ok(self.summary(id)?.map(|s| Placement {
            ward: s.ward,
            status: s.status,
        }))
    }

    /// A ward's census: the charts of patients on the ward now, by bed.
    pub fn census(&self, ward: &str) -> Result<Vec<ChartSummary>, StoreError> {
        self.list(&ChartFilter {
            ward: Some(ward.to_string()),
            status: Some(EncounterStatus::Active),
            ..ChartFilter::default()
        })
    }

    /// Every chart of one patient, newest admission first.
    pub fn charts_of_patient(&self, mrn: &str) -> Result<Vec<ChartSummary>, StoreError> {
        self.list(&ChartFilter {
            mrn: Some(mrn.to_string()),
            ..ChartFilter::default()
        })
    }

    /// Charts matching `filter`, from the index alone: by bed within a ward, else newest
    /// admission first.
    pub fn list(&self, filter: &ChartFilter) -> Result<Vec<ChartSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT id, mrn, family_name, given_names, ward, bed, status, admitted_at,
                    discharged_at, open_deficiencies, modified_at
             FROM charts WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(w) = &filter.ward {
            arg(&mut sql, "ward =", w.clone().into());
            // A chart that left this device's wards is not on its ward lists any more, though
            // the device may never have received the transfer itself.
            sql.push_str(" AND id NOT IN (SELECT chart_id FROM device_departures)");
        }
        if let Some(m) = &filter.mrn {
            arg(&mut sql, "mrn =", m.clone().into());
        }
        if let Some(s) = filter.status {
            arg(&mut sql, "status =", s.token().to_string().into());
        }
        if let Some(t) = filter.modified_since {
            arg(&mut sql, "modified_at >=", t.unix_millis().into());
        }
        sql.push_str(if filter.ward.is_some() {
            " ORDER BY bed IS NULL, bed, family_name, id"
        } else {
            " ORDER BY admitted_at DESC, id"
        });
        if let Some(n) = filter.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), summary_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }

    /// The open deficiencies of one chart, from the index.
    pub fn deficiencies(&self, id: ChartId) -> Result<Vec<Deficiency>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, section, record_id, responsible, detail, due_at FROM deficiencies
                 WHERE chart = (SELECT key FROM charts WHERE id = ?1)",
            )?;
            let rows = stmt.query_map([id.to_string()], |r| records::deficiency_row(r, 0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            // In the order a full audit gives them.
            out.sort();
            Ok(out)
        })
    }

    /// A ward's census document, if this store keeps one.
    pub fn census_doc(&self, ward: &str) -> Result<Option<crate::census::Census>, StoreError> {
        let bytes: Option<Vec<u8>> = self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT data FROM census_docs WHERE ward = ?1",
                    [ward],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        bytes
            .map(|b| {
                crate::census::Census::load(&b).map_err(|_| {
                    StoreError::Corrupt(format!("the census of ward {ward} does not load"))
                })
            })
            .transpose()
    }

    /// Keeps a ward's census document (replacing the one kept before).
    pub fn save_census_doc(&self, census: &crate::census::Census) -> Result<(), StoreError> {
        let Some(ward) = census.ward() else {
            return Err(StoreError::Corrupt("a census without a ward".into()));
        };
        let conn = lock(&self.inner.writer);
        conn.prepare_cached(
            "INSERT INTO census_docs (ward, id, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (ward) DO UPDATE SET data = ?3",
        )?
        .execute(params![
            ward,
            crate::census::census_id(&ward).to_string(),
            census.save()
        ])?;
        Ok(())
    }

    /// Every ward that has a chart or a census document in this store.
    pub fn wards(&self) -> Result<Vec<String>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ward FROM charts UNION SELECT ward FROM census_docs ORDER BY 1",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// This store's storage id: a UUID made on first use and kept in the store, which sync
    /// peers key what they know of this store by.
    pub fn storage_id(&self) -> Result<String, StoreError> {
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'storage_id'",
                [],
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
        let mut conn = lock(&self.inner.writer);
        if outcome.get().is_none() {
            // Ours is still queued: no one committed it while we waited for the writer.
            let rows = std::mem::take(&mut *lock(&self.inner.audit_queue));
            let committed = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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

    fn audit_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<AuditRecord>, StoreError> {
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
        let conn = lock(&self.inner.writer);
        // A sync state only shortens the next exchange: one lost in a crash means the peer
        // syncs from an older one (more bytes, never less data). So it is not waited onto the
        // disk; the store's next durable commit takes it there. A server saves one each time
        // a device has caught up on a chart, and waiting for the disk each time was most of
        // a busy ward's server time (BENCHMARKS.md, "Side by side").
        let durable = matches!(self.inner.options.durability, Durability::Full);
        if durable {
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        let saved = conn
            .prepare_cached(
                "INSERT INTO sync_states (peer, chart_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (peer, chart_id) DO UPDATE SET state = ?3, updated_at = ?4",
            )
            .and_then(|mut s| s.execute(params![peer, id.to_string(), state.encode(), now_millis()]));
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
        let conn = lock(&self.inner.writer);
        let forgotten = conn
            .prepare_cached("DELETE FROM sync_states WHERE updated_at < ?1")?
            .execute([before])?;
        Ok(forgotten)
    }

    /// Every commit from now on, in commit order, as a channel: receive on any thread, at
    /// any pace (events wait in the channel), and drop the receiver to unsubscribe. Each event
    /// is sent before the commit's `update` returns.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<ChartChanged> {
        self.inner.feed.subscribe().0
    }

    /// [`subscribe`](Self::subscribe), with the feed position the subscription starts after
    /// (see [`feed_position`](Self::feed_position)).
    pub fn subscribe_at(&self) -> (std::sync::mpsc::Receiver<ChartChanged>, u64) {
        self.inner.feed.subscribe()
    }

    /// How many change events the feed has published since the store opened. A subscriber
    /// that has handled events up to this position has seen every commit made so far.
    pub fn feed_position(&self) -> u64 {
        self.inner.feed.position()
    }

    /// Folds a chart's changes into a new snapshot now.
    pub fn compact(&self, id: ChartId) -> Result<CompactionReport, StoreError> {
        self.inner.compact(id)
    }

    /// Folds the write-ahead log into the file now (the last connection to close does it too).
    /// A process that stops while other threads still hold the store calls this on the way out,
    /// so that the file alone is the store.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        if let Some(r) = &self.inner.options.receipts {
            r.sync()?;
        }
        let conn = lock(&self.inner.writer);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// SQLite's full integrity check: `Ok(())`, or what it found.
    /// Checks the audit trail's chain from its first row: how many rows and the last link
    /// (its tip), or the first row that does not follow from the one before it.
    pub fn verify_audit(&self) -> Result<AuditChain, StoreError> {
        self.inner.with_reader(|conn| audit::verify_chain(conn))
    }

    pub fn verify(&self) -> Result<(), StoreError> {
        let problems: Vec<String> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
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
            Ok(conn.query_row("SELECT count(*) FROM charts", [], |r| r.get::<_, i64>(0))?)
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

impl Drop for ChartStore {
    fn drop(&mut self) {
        if let Some(handle) = self.maintenance.take() {
            self.inner.schedule(Job::Stop);
            let _ = handle.join();
        }
    }
}

fn all_sections() -> BTreeSet<String> {
    crate::chart::section_names().map(String::from).collect()
}

fn now_millis() -> i64 {
    Timestamp::now().unix_millis()
}

fn heads_blob(heads: &[ChangeHash]) -> Vec<u8> {
    let mut sorted = heads.to_vec();
    sorted.sort();
    sorted.iter().flat_map(|h| h.0).collect()
}

/// The sorted heads a `heads` column holds.
fn parse_heads_blob(blob: &[u8]) -> Option<Vec<ChangeHash>> {
    if !blob.len().is_multiple_of(32) {
        return None;
    }
    blob.chunks(32)
        .map(|c| ChangeHash::try_from(c).ok())
        .collect()
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ChartSummary, StoreError>> {
    let id: String = r.get(0)?;
    let status: String = r.get(6)?;
    let admitted: String = r.get(7)?;
    let discharged: Option<String> = r.get(8)?;
    let modified: i64 = r.get(10)?;
    let (mrn, family_name, given_names, ward, bed, open) = (
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(9)?,
    );
    let bad = |what: &str| StoreError::Corrupt(format!("chart index row with an invalid {what}"));
    let build = || -> Result<ChartSummary, StoreError> {
        Ok(ChartSummary {
            id: id.parse().map_err(|_| bad("id"))?,
            mrn,
            family_name,
            given_names,
            ward,
            bed,
            status: EncounterStatus::from_token(&status).map_err(|_| bad("status"))?,
            admitted_at: Timestamp::parse(&admitted).map_err(|_| bad("admission time"))?,
            discharged_at: discharged
                .map(|d| Timestamp::parse(&d))
                .transpose()
                .map_err(|_| bad("discharge time"))?,
            open_deficiencies: open,
            modified_at: Timestamp::from_unix_millis(modified).map_err(|_| bad("modified time"))?,
        })
    };
    Ok(build())
}

/// Everything a chart's first rows hold, computed before the transaction opens.
struct NewChartRow {
    id: ChartId,
    /// The root of the chart's history (see migration 004).
    origin: Option<ChangeHash>,
    snapshot: Vec<u8>,
    heads: Vec<u8>,
    index: IndexFields,
    deficiencies: Vec<Deficiency>,
    principal_diagnosis: Option<String>,
}

impl NewChartRow {
    fn of(id: ChartId, chart: &mut Chart) -> Result<NewChartRow, StoreError> {
        let chart_err = |error| StoreError::Chart { id, error };
        let origin = chart
            .doc()
            .get_changes_meta(&[])
            .iter()
            .filter(|c| c.deps.is_empty())
            .map(|c| c.hash)
            .min();
        Ok(NewChartRow {
            id,
            origin,
            snapshot: chart.save(),
            heads: heads_blob(&chart.heads()),
            index: IndexFields::of(chart).map_err(chart_err)?,
            deficiencies: chart.deficiencies().map_err(chart_err)?,
            principal_diagnosis: principal_code(chart).map_err(chart_err)?,
        })
    }

    /// Inserts the rows; returns the chart's key.
    fn insert(&self, tx: &Transaction<'_>) -> Result<i64, StoreError> {
        let key = self.id.to_string();
        if let Some(origin) = &self.origin {
            let existing: Option<String> = tx
                .prepare_cached("SELECT id FROM charts WHERE origin = ?1 AND id != ?2")?
                .query_row(params![&origin.0[..], key], |r| r.get(0))
                .optional()?;
            if let Some(existing) = existing {
                return Err(StoreError::SameChart {
                    id: self.id,
                    existing: existing.parse().map_err(|_| {
                        StoreError::Corrupt("a chart row with an invalid id".into())
                    })?,
                });
            }
        }
        let f = &self.index;
        let chart: Option<i64> = tx
            .prepare_cached(
                "INSERT INTO charts (id, mrn, family_name, given_names, ward, bed, status,
                     admitted_at, discharged_at, open_deficiencies, heads, modified_at,
                     snapshot_bytes, principal_diagnosis, origin, attending, encounter_class,
                     disposition, birth_date, sex)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING key",
            )?
            .query_row(
                params![
                    key,
                    f.mrn,
                    f.family_name,
                    f.given_names,
                    f.ward,
                    f.bed,
                    f.status,
                    f.admitted_at,
                    f.discharged_at,
                    self.deficiencies.len() as i64,
                    self.heads,
                    now_millis(),
                    self.snapshot.len() as i64,
                    self.principal_diagnosis,
                    self.origin.map(|o| o.0.to_vec()),
                    f.attending,
                    f.class,
                    f.disposition,
                    f.birth_date,
                    f.sex,
                ],
                |r| r.get(0),
            )
            .optional()?;
        let Some(chart) = chart else {
            return Err(StoreError::AlreadyExists(self.id));
        };
        tx.prepare_cached("INSERT INTO chart_snapshots (chart, data) VALUES (?1, ?2)")?
            .execute(params![chart, self.snapshot])?;
        insert_deficiencies(tx, chart, &self.deficiencies)?;
        Ok(chart)
    }
}

/// The census fields of a chart's index row.
pub(super) struct IndexFields {
    mrn: String,
    family_name: String,
    given_names: String,
    ward: String,
    bed: Option<String>,
    status: &'static str,
    admitted_at: String,
    discharged_at: Option<String>,
    /// What the records office lists (migration 10).
    attending: Option<String>,
    class: &'static str,
    disposition: Option<String>,
    birth_date: Option<String>,
    sex: Option<&'static str>,
}

impl IndexFields {
    pub(super) fn of(chart: &Chart) -> Result<IndexFields, ChartError> {
        let p = chart.patient()?;
        let e = chart.encounter()?;
        Ok(IndexFields {
            mrn: p.mrn,
            family_name: p.family_name,
            given_names: p.given_names,
            ward: e.ward,
            bed: e.bed,
            status: e.status.token(),
            admitted_at: e.admitted_at.to_rfc3339(),
            discharged_at: e.discharged_at.map(Timestamp::to_rfc3339),
            attending: e.attending,
            class: e.class.token(),
            disposition: e.discharge_disposition,
            birth_date: p.birth_date,
            sex: p.sex.map(|s| s.token()),
        })
    }
}

/// The hashes of the chart's changes after `heads`, for the audit trail.
fn change_hashes(chart: &Chart, heads: &[ChangeHash]) -> Vec<ChangeHash> {
    // The changes' metadata only: `get_changes` would rebuild every change from the op set.
    chart
        .doc()
        .get_changes_meta(heads)
        .iter()
        .map(|c| c.hash)
        .collect()
}

/// The principal ICD-10-CM code as the coding queue lists it.
fn principal_code(chart: &Chart) -> Result<Option<String>, ChartError> {
    Ok(chart.principal_diagnosis()?.map(|c| c.code))
}

fn insert_audit(
    tx: &Transaction<'_>,
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
    let at = now_millis();
    let chart = chart.map(|c| c.to_string());
    let chain = audit::chain_hash(
        &audit::last_link(tx)?,
        &audit::Linked {
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

fn insert_deficiencies(
    tx: &Transaction<'_>,
    chart: i64,
    deficiencies: &[Deficiency],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO deficiencies (chart, section, record_id, kind, responsible, detail, due_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for d in deficiencies {
        stmt.execute(params![
            chart,
            d.section,
            d.record_id,
            d.kind.token(),
            d.responsible,
            d.detail,
            d.due_at.map(Timestamp::to_rfc3339),
        ])?;
    }
    Ok(())
}

impl Inner {
    fn schedule(&self, job: Job) {
        // The thread outlives every send but the last (Stop, from Drop).
        let _ = lock(&self.jobs).send(job);
    }

    /// Appends a commit's change hashes to the receipts, if the store keeps them. The commit
    /// is durable already; a receipt that cannot be written costs only a review after a
    /// restore (the change would be held), so it does not fail the commit.
    fn receipt(&self, hashes: impl FnOnce() -> Vec<ChangeHash>) {
        if let Some(r) = &self.options.receipts {
            if r.record(&hashes()).is_err() {
                self.receipts_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Counts a commit; every so many, asks for a checkpoint.
    fn committed(&self, commits: u32) {
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

    /// Runs `f` on a read-only connection from the pool.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = schema::connect(&self.path, &self.options, false)?;
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
        let result = f(&mut conn);
        // A burst of readers leaves at most a few behind: the pool does not keep every
        // connection a busy moment opened.
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Locks a chart's slot, loading the chart from disk if it is not in memory (or its last
    /// writer failed or panicked part-way).
    fn ready<'a>(&self, id: ChartId, slot: &'a Slot) -> Result<MutexGuard<'a, Cached>, StoreError> {
        let mut cached = lock(slot);
        if cached.chart.is_some() && !cached.dirty {
            return Ok(cached);
        }
        match self.load(id) {
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

    /// Reads a chart's snapshot and changes in one read transaction and loads them; the
    /// result must have exactly the heads the index row records.
    fn load(&self, id: ChartId) -> Result<LoadedChart, StoreError> {
        let stored = self.with_reader(|conn| read_document(conn, id))?;
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

    /// Appends the chart's changes since the heads on disk and refreshes its index rows, in
    /// one durable transaction, and announces the commit before the writer is free (so the
    /// feed is in commit order). Returns whether the chart is due for compaction.
    fn persist(
        &self,
        id: ChartId,
        cached: &mut Cached,
        actor: Option<&Actor>,
        also: Option<&AlsoInCommit<'_>>,
    ) -> Result<bool, StoreError> {
        let chart_err = |error| StoreError::Chart { id, error };
        let Some(chart) = cached.chart.as_ref() else {
            return Err(StoreError::NotFound(id));
        };
        let before = &cached.stored_heads;
        let changes = chart.save_after(before);
        let touched = chart.touched_since(before);
        let index = IndexFields::of(chart).map_err(chart_err)?;
        let refresh = chart.deficiencies_after(&touched).map_err(chart_err)?;
        // The coding queue's principal diagnosis: read again only when coding changed.
        let principal = if touched.sections.contains(crate::chart::keys::CODING) {
            Some(principal_code(chart).map_err(chart_err)?)
        } else {
            None
        };
        let heads = chart.heads();
        let key = cached.key;

        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("INSERT INTO chart_changes (chart, data) VALUES (?1, ?2)")?
            .execute(params![key, changes])?;
        match &refresh.scope {
            RefreshScope::Chart => {
                tx.prepare_cached("DELETE FROM deficiencies WHERE chart = ?1")?
                    .execute([key])?;
            }
            RefreshScope::Records(records) => {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM deficiencies WHERE chart = ?1 AND section = ?2 AND record_id = ?3",
                )?;
                for (section, record) in records {
                    delete.execute(params![key, section, record])?;
                }
            }
        }
        insert_deficiencies(&tx, key, &refresh.deficiencies)?;
        // Only on top of the heads this copy was loaded with: anything else means the file
        // changed under it, and writing would index a chart that is not the one on disk.
        let updated = tx
            .prepare_cached(
                "UPDATE charts SET mrn = ?2, family_name = ?3, given_names = ?4, ward = ?5,
                     bed = ?6, status = ?7, admitted_at = ?8, discharged_at = ?9, heads = ?10,
                     modified_at = ?11, incremental_bytes = incremental_bytes + ?12,
                     open_deficiencies =
                         (SELECT count(*) FROM deficiencies WHERE chart = ?1),
                     principal_diagnosis = CASE WHEN ?15 THEN ?14 ELSE principal_diagnosis END,
                     attending = ?16, encounter_class = ?17, disposition = ?18, birth_date = ?19,
                     sex = ?20
                 WHERE key = ?1 AND heads = ?13
                 RETURNING snapshot_bytes, incremental_bytes",
            )?
            .query_row(
                params![
                    key,
                    index.mrn,
                    index.family_name,
                    index.given_names,
                    index.ward,
                    index.bed,
                    index.status,
                    index.admitted_at,
                    index.discharged_at,
                    heads_blob(&heads),
                    now_millis(),
                    changes.len() as i64,
                    heads_blob(before),
                    principal.clone().flatten(),
                    principal.is_some(),
                    index.attending,
                    index.class,
                    index.disposition,
                    index.birth_date,
                    index.sex,
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        let Some((snapshot, incremental)) = updated else {
            return Err(StoreError::ChangedElsewhere(id));
        };
        if let Some(actor) = actor {
            let hashes = change_hashes(chart, before);
            insert_audit(&tx, actor, AuditAction::Write, Some(id), &hashes, None)?;
        }
        if let Some(also) = also {
            also(&tx)?;
        }
        tx.commit()?;
        self.receipt(|| change_hashes(chart, before));
        self.feed.publish(&ChartChanged {
            id,
            heads: heads.clone(),
            sections: touched.sections,
            created: false,
        });
        drop(conn);
        self.committed(1);
        cached.stored_heads = heads;
        Ok(incremental as u64 > (snapshot as u64).max(self.options.compact_min_bytes))
    }

    /// Replaces a chart's snapshot and the changes folded into it, in one transaction; the
    /// new snapshot is loaded back and checked before anything is deleted.
    fn compact(&self, id: ChartId) -> Result<CompactionReport, StoreError> {
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
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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

/// A chart as loaded from the store.
struct LoadedChart {
    key: i64,
    heads: Vec<ChangeHash>,
    chart: Chart,
}

/// A chart's stored bytes: snapshot then changes, the heads its index row records, and the
/// last change's sequence number.
struct StoredDocument {
    key: i64,
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    last_seq: i64,
}

impl StoredDocument {
    /// Loads the bytes, checking that they make exactly the chart the index row describes: a
    /// change row lost or damaged would otherwise load quietly without it (automerge queues
    /// changes whose dependencies are missing), and compaction would make the loss permanent.
    fn load(&self, id: ChartId) -> Result<Automerge, StoreError> {
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

fn read_document(conn: &mut Connection, id: ChartId) -> Result<StoredDocument, StoreError> {
    // One read transaction: the row, the snapshot and the changes are of the same moment.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
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
            let data = row
                .get_ref(1)?
                .as_blob()
                .map_err(|_| StoreError::Corrupt("a stored change is not a blob".into()))?;
            bytes.extend_from_slice(data);
        }
    }
    tx.finish()?;
    Ok(StoredDocument {
        key,
        heads,
        bytes,
        last_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(store: &ChartStore) -> i64 {
        lock(&store.inner.writer)
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
        lock(&store.inner.writer)
            .execute_batch("DROP TABLE sync_states")
            .unwrap();
        assert!(store.save_sync_state("peer", id, &state).is_err());
        assert_eq!(synchronous(&store), 2);
    }

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
        lock(&store.inner.writer)
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
