//! The server keeps one census document per ward: the ward's active charts, written only here
//! and synced read-only to devices, which learn from it which charts to fetch. It follows the
//! store's change feed: an admission, transfer or discharge rewrites the censuses of the wards
//! involved, and the sessions are told (a change event with the census's id) to push it.
//!
//! A census has one writer. On a database shared by several server nodes that is the node
//! holding the store's single-writer lease (`ChartStore::holds_lease`); the others keep the
//! stored censuses in memory for their devices, reloading one when the outbox tells of its new
//! version. When the lease comes to a node it reloads every stored census and rewrites them
//! from the index (charts may have moved while no one held it), continuing each document's one
//! history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartsync_core::census::{census_id, is_census_id, Census, CensusEntry};
use chartsync_core::chart::{ChartId, EncounterStatus};
use chartsync_core::store::{ChartChanged, ChartFilter, ChartStore, StoreError};

/// Census documents by their document id, with their ward.
pub type Censuses = Arc<Mutex<HashMap<ChartId, (String, Census)>>>;

pub fn lock(c: &Censuses) -> std::sync::MutexGuard<'_, HashMap<ChartId, (String, Census)>> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often a node that does not keep the censuses rereads them all, should it have missed
/// the outbox's word of one.
const REREAD: Duration = Duration::from_secs(60);

pub struct Keeper {
    store: Arc<ChartStore>,
    censuses: Censuses,
    /// Where each chart was listed, to take it off its old ward's census on a transfer.
    listed: HashMap<ChartId, String>,
    /// The lease epoch this keeper writes the censuses under; `None` while another node does.
    keeping: Option<i64>,
    last_read: Instant,
}

impl Keeper {
    /// Loads the census of every ward the store keeps, and rewrites them from the index if
    /// this store holds the lease (see [`tick`](Self::tick)).
    pub fn start(store: Arc<ChartStore>) -> Result<Keeper, StoreError> {
        let mut keeper = Keeper {
            store,
            censuses: Arc::default(),
            listed: HashMap::new(),
            keeping: None,
            last_read: Instant::now(),
        };
        keeper.reread()?;
        if let Some(epoch) = keeper.store.lease_epoch() {
            keeper.take_over(epoch)?;
        }
        Ok(keeper)
    }

    pub fn censuses(&self) -> Censuses {
        self.censuses.clone()
    }

    /// Between events, and at least every second: follows the lease. It came to this store
    /// (the censuses are rewritten from the index, and the events of those that changed are
    /// returned), or went (another node keeps them now), or neither.
    pub fn tick(&mut self) -> Vec<ChartChanged> {
        let epoch = self.store.lease_epoch();
        if epoch == self.keeping {
            if epoch.is_none() && self.last_read.elapsed() > REREAD {
                return self.reread().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "could not reread the ward censuses");
                    Vec::new()
                });
            }
            return Vec::new();
        }
        self.keeping = None;
        match epoch {
            Some(epoch) => match self.take_over(epoch) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "could not take over the ward censuses");
                    Vec::new()
                }
            },
            None => {
                tracing::info!("another node keeps the ward censuses now");
                self.reread().unwrap_or_default()
            }
        }
    }

    /// Loads every stored census over what memory holds: the events of those that changed.
    fn reread(&mut self) -> Result<Vec<ChartChanged>, StoreError> {
        self.last_read = Instant::now();
        let mut out = Vec::new();
        for census in self.store.census_docs()? {
            if let Some(event) = self.replace(census) {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Puts `census` in memory in place of the copy there: its event, if it changed.
    fn replace(&mut self, census: Census) -> Option<ChartChanged> {
        let ward = census.ward()?;
        let id = census_id(&ward);
        let heads = census.doc().get_heads();
        let mut all = lock(&self.censuses);
        let unchanged = all
            .get(&id)
            .is_some_and(|(_, c)| same_heads(c.doc().get_heads(), heads.clone()));
        all.insert(id, (ward, census));
        (!unchanged).then(|| event(id, heads))
    }

    /// The lease came to this store: every census from the store (what the last keeper
    /// wrote), then rewritten from the index.
    fn take_over(&mut self, epoch: i64) -> Result<Vec<ChartChanged>, StoreError> {
        let mut out = self.reread()?;
        self.listed.clear();
        let mut wards = self.store.wards()?;
        wards.extend(lock(&self.censuses).values().map(|(w, _)| w.clone()));
        wards.sort();
        wards.dedup();
        for ward in wards {
            if self.refresh(&ward)? {
                out.push(self.event_of(&ward));
            }
        }
        self.keeping = Some(epoch);
        tracing::info!(epoch, "this node keeps the ward censuses");
        let mut seen = std::collections::HashSet::new();
        out.retain(|e| seen.insert(e.id));
        Ok(out)
    }

    /// Rewrites a ward's census from the store's index; true if it changed. Memory takes the
    /// new census only once the store has it.
    fn refresh(&mut self, ward: &str) -> Result<bool, StoreError> {
        let active = self.store.list(&ChartFilter {
            ward: Some(ward.to_string()),
            status: Some(EncounterStatus::Active),
            ..ChartFilter::default()
        })?;
        let entries: Vec<CensusEntry> = active.iter().map(|c| CensusEntry { id: c.id }).collect();
        self.listed.retain(|_, w| w != ward);
        for e in &entries {
            self.listed.insert(e.id, ward.to_string());
        }
        let id = census_id(ward);
        let held = lock(&self.censuses).get(&id).map(|(_, c)| c.clone());
        let never_saved = held.is_none();
        let mut census = held.unwrap_or_else(|| Census::new(ward));
        let changed = census
            .set(&entries)
            .map_err(|error| StoreError::Chart { id, error })?;
        if changed || never_saved {
            self.store.save_census_doc(&census)?;
            lock(&self.censuses).insert(id, (ward.to_string(), census));
        }
        Ok(changed)
    }

    fn event_of(&self, ward: &str) -> ChartChanged {
        let id = census_id(ward);
        let heads = lock(&self.censuses)
            .get(&id)
            .map(|(_, c)| c.doc().get_heads())
            .unwrap_or_default();
        event(id, heads)
    }

    /// After a commit to a chart (or word of a census another node wrote): the census
    /// events to announce.
    pub fn on_change(&mut self, change: &ChartChanged) -> Vec<ChartChanged> {
        let id = change.id;
        if is_census_id(&id) {
            // Another node's census: memory takes the stored one before the sessions hear.
            if self.keeping.is_none() {
                match self.store.census_doc_by_id(id) {
                    Ok(Some(census)) => {
                        self.replace(census);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(census = %id, error = %e, "could not read a ward census")
                    }
                }
            }
            return Vec::new();
        }
        // A census lists a chart by its encounter's ward and status: a commit that wrote
        // nothing there (most do: observations, notes, signatures) cannot change one, and
        // costs no look at the store. Nor does anything while another node keeps them.
        if self.keeping.is_none() || !change.may_move() {
            return Vec::new();
        }
        let now = self.store.summary(id).ok().flatten().map(|s| s.ward);
        let before = self.listed.get(&id).cloned();
        let mut wards: Vec<String> = now.into_iter().chain(before).collect();
        wards.dedup();
        let mut out = Vec::new();
        for ward in wards {
            match self.refresh(&ward) {
                Ok(true) => out.push(self.event_of(&ward)),
                Ok(false) => {}
                Err(StoreError::NotLeaseHolder) => {
                    // Lost between the look and the write: the next tick hands over.
                    tracing::warn!(%ward, "the lease went elsewhere while updating a ward census");
                }
                Err(e) => tracing::error!(%ward, error = %e, "could not update the ward census"),
            }
        }
        out
    }
}

fn event(id: ChartId, heads: Vec<automerge::ChangeHash>) -> ChartChanged {
    ChartChanged {
        id,
        heads,
        sections: Default::default(),
        created: false,
    }
}

fn same_heads(mut a: Vec<automerge::ChangeHash>, mut b: Vec<automerge::ChangeHash>) -> bool {
    a.sort();
    b.sort();
    a == b
}
