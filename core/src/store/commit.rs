//! Writing charts: a new chart's rows, a bulk import, and each commit of changes to a chart,
//! with its index rows, audit rows and proofs in the same transaction.

use std::collections::BTreeSet;

use super::sql::{params, Begin, OptionalExtension, Sql};
use automerge::ChangeHash;

use super::audit::insert_audit;
use super::cache::Cached;
use super::documents::heads_blob;
use super::maintenance::CHECKPOINT_EVERY;
use super::{
    credentials, lock, now_millis, outbox, Actor, AuditAction, ChartChanged, ChartStore,
    Compaction, Inner, StoreError,
};
use crate::chart::{Chart, ChartError, ChartId, Deficiency, RefreshScope, Timestamp};

/// Progress of a bulk import, reported after each chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    pub done: usize,
    /// How many the caller said are coming, if it knows.
    pub total: Option<usize>,
    pub bytes: u64,
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

/// Rows written in the same transaction as a chart's commit.
type AlsoInCommit<'a> = dyn Fn(&Sql<'_>) -> Result<(), StoreError> + 'a;

impl ChartStore {
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
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            let inserted = row.insert(&tx).and_then(|key| {
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
                let event = ChartChanged {
                    id,
                    heads: heads.clone(),
                    sections: all_sections(),
                    created: true,
                };
                outbox::record(&tx, &self.inner.node, &event)?;
                tx.commit()?;
                self.inner.receipt(|| change_hashes(&chart, &[]));
                // Announced before the writer is free: before any change to the chart.
                self.inner.feed.publish(&event);
                Ok(key)
            });
            if inserted.is_ok() {
                outbox::wake(&conn);
            }
            inserted
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
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let mut bytes = 0u64;
        for (index, (id, mut chart)) in charts.into_iter().enumerate() {
            if self.inner.options.receipts.is_some() {
                receipts.extend(change_hashes(&chart, &[]));
            }
            // Anything that goes wrong with this chart names it by its place in the batch.
            let (row, event) = (|| -> Result<_, StoreError> {
                let row = NewChartRow::of(id, &mut chart)?;
                row.insert(&tx)?;
                if let Some(actor) = actor {
                    let hashes = change_hashes(&chart, &[]);
                    insert_audit(&tx, actor, AuditAction::Create, Some(id), &hashes, None)?;
                }
                let event = ChartChanged {
                    id,
                    heads: chart.heads(),
                    sections: all_sections(),
                    created: true,
                };
                outbox::record(&tx, &self.inner.node, &event)?;
                Ok((row, event))
            })()
            .map_err(|error| StoreError::Import {
                index,
                error: Box::new(error),
            })?;
            bytes += row.snapshot.len() as u64;
            events.push(event);
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
        outbox::wake(&conn);
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
        let also = |tx: &Sql<'_>| credentials::insert_proofs(tx, id, &proofs.borrow(), None);
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
        let also = |tx: &Sql<'_>| {
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
    pub(super) fn update_inner<T>(
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
        // In a database other nodes write to, one writer of a chart at a time, from before it
        // is read to its commit: without it, two nodes writing one chart at once would each
        // build on heads the other is replacing, and one would fail (`ChangedElsewhere`).
        let (mut locker, _slot) = self.inner.chart_lock_connection()?;
        let locked = match &mut locker {
            Some(conn) => Some(chart_locked(conn, id)?),
            None => None,
        };
        let slot = lock(&self.inner.cache).slot(id);
        let mut cached = self.inner.ready_via(id, &slot, locked.as_ref())?;
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
            Ok(v) => {
                let persisted = self.inner.persist(id, &mut cached, actor, also, locked);
                if let (Ok(_), Some(conn)) = (&persisted, &locker) {
                    outbox::wake(conn);
                }
                persisted.map(|due| (v, due))
            }
        };
        if let Some(chart) = &cached.chart {
            chart.forget_new_changes();
        }
        match outcome {
            Ok((v, due)) => {
                cached.dirty = false;
                lock(&self.inner.cache).reweigh(&id, cached.chart.as_ref());
                if due && self.inner.options.compaction == Compaction::Background {
                    self.inner.compaction_due(id);
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

    /// Merges a copy (from [`ChartStore::chart`], or a peer's replica) into the stored chart.
    pub fn merge(&self, id: ChartId, other: &Chart) -> Result<(), StoreError> {
        self.update(id, |chart| chart.merge(other))
    }
}

impl Inner {
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

    /// Appends the chart's changes since the heads on disk and refreshes its index rows, in
    /// one durable transaction, and announces the commit before the writer is free (so the
    /// feed is in commit order). Returns whether the chart is due for compaction.
    ///
    /// `locked`: the transaction that holds the chart's lock (a shared database), to commit
    /// in; otherwise the writer's.
    fn persist(
        &self,
        id: ChartId,
        cached: &mut Cached,
        actor: Option<&Actor>,
        also: Option<&AlsoInCommit<'_>>,
        locked: Option<Sql<'_>>,
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

        // The commit's rows, in the transaction `tx`.
        let write = |tx: &Sql<'_>| -> Result<(i64, i64, ChartChanged), StoreError> {
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
            insert_deficiencies(tx, key, &refresh.deficiencies)?;
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
                         attending = ?16, encounter_class = ?17, disposition = ?18,
                         birth_date = ?19, sex = ?20
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
                insert_audit(tx, actor, AuditAction::Write, Some(id), &hashes, None)?;
            }
            if let Some(also) = also {
                also(tx)?;
            }
            let event = ChartChanged {
                id,
                heads: heads.clone(),
                sections: touched.sections.clone(),
                created: false,
            };
            outbox::record(tx, &self.node, &event)?;
            Ok((snapshot, incremental, event))
        };
        // Once committed: the receipt, and the feed told before the writer is free (so that
        // on SQLite the feed is in commit order).
        let told = |event: &ChartChanged| {
            self.receipt(|| change_hashes(chart, before));
            self.feed.publish(event);
        };
        let (snapshot, incremental) = match locked {
            Some(tx) => {
                // The hint goes out on the lock's connection, by the caller, once this
                // transaction is over: taking another here could wait on a pool its writers
                // have emptied.
                let (snapshot, incremental, event) = write(&tx)?;
                tx.commit()?;
                told(&event);
                (snapshot, incremental)
            }
            None => {
                let mut conn = self.writer()?;
                let tx = conn.transaction(Begin::Immediate)?;
                let (snapshot, incremental, event) = write(&tx)?;
                tx.commit()?;
                told(&event);
                outbox::wake(&conn);
                (snapshot, incremental)
            }
        };
        self.committed(1);
        cached.stored_heads = heads;
        Ok(incremental as u64 > (snapshot as u64).max(self.options.compact_min_bytes))
    }
}

pub(super) fn all_sections() -> BTreeSet<String> {
    crate::chart::section_names().map(String::from).collect()
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
    fn insert(&self, tx: &Sql<'_>) -> Result<i64, StoreError> {
        super::retention::refuse_destroyed(tx, self.id, self.origin.as_ref().map(|o| &o.0[..]))?;
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
    pub(super) mrn: String,
    pub(super) family_name: String,
    pub(super) given_names: String,
    pub(super) ward: String,
    pub(super) bed: Option<String>,
    pub(super) status: &'static str,
    pub(super) admitted_at: String,
    pub(super) discharged_at: Option<String>,
    /// What the records office lists (migration 10).
    pub(super) attending: Option<String>,
    pub(super) class: &'static str,
    pub(super) disposition: Option<String>,
    pub(super) birth_date: Option<String>,
    pub(super) sex: Option<&'static str>,
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

/// Begins a transaction on `conn` holding chart `id`'s lock until it ends (PostgreSQL: an
/// advisory lock keyed by the chart, released at commit or rollback).
fn chart_locked<'c>(conn: &'c mut Sql<'_>, id: ChartId) -> Result<Sql<'c>, StoreError> {
    let tx = conn.transaction(Begin::Immediate)?;
    lock_chart(&tx, id)?;
    Ok(tx)
}

/// Takes chart `id`'s lock in transaction `tx` (PostgreSQL), until it ends.
pub(super) fn lock_chart(tx: &Sql<'_>, id: ChartId) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(?1)",
        params![chart_lock_key(id)],
    )?;
    Ok(())
}

/// A chart's advisory lock: the first eight bytes of its id's hash, with the top bit of the
/// store's own locks (`schema::postgres`, the audit chain, the serving lock) kept apart.
fn chart_lock_key(id: ChartId) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.to_string().as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes) | i64::MIN
}

/// The hashes of the chart's changes after `heads`, for the audit trail.
pub(super) fn change_hashes(chart: &Chart, heads: &[ChangeHash]) -> Vec<ChangeHash> {
    // The changes' metadata only: `get_changes` would rebuild every change from the op set.
    chart
        .doc()
        .get_changes_meta(heads)
        .iter()
        .map(|c| c.hash)
        .collect()
}

/// The principal ICD-10-CM code as the coding queue lists it.
pub(super) fn principal_code(chart: &Chart) -> Result<Option<String>, ChartError> {
    Ok(chart.principal_diagnosis()?.map(|c| c.code))
}

pub(super) fn insert_deficiencies(
    tx: &Sql<'_>,
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
