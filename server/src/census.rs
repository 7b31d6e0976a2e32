//! The server keeps one census document per ward: the ward's active charts, written only here
//! and synced read-only to devices, which learn from it which charts to fetch. It follows the
//! store's change feed: an admission, transfer or discharge rewrites the censuses of the wards
//! involved, and the sessions are told (a change event with the census's id) to push it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chartsync_core::census::{census_id, Census, CensusEntry};
use chartsync_core::chart::{ChartId, EncounterStatus};
use chartsync_core::store::{ChartChanged, ChartFilter, ChartStore};

/// Census documents by their document id, with their ward.
pub type Censuses = Arc<Mutex<HashMap<ChartId, (String, Census)>>>;

pub fn lock(c: &Censuses) -> std::sync::MutexGuard<'_, HashMap<ChartId, (String, Census)>> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Keeper {
    store: Arc<ChartStore>,
    censuses: Censuses,
    /// Where each chart was listed, to take it off its old ward's census on a transfer.
    listed: HashMap<ChartId, String>,
}

impl Keeper {
    /// Loads or builds the census of every ward the store knows.
    pub fn start(store: Arc<ChartStore>) -> Result<Keeper, chartsync_core::store::StoreError> {
        let mut keeper = Keeper {
            store,
            censuses: Arc::default(),
            listed: HashMap::new(),
        };
        for ward in keeper.store.wards()? {
            keeper.refresh(&ward)?;
        }
        Ok(keeper)
    }

    pub fn censuses(&self) -> Censuses {
        self.censuses.clone()
    }

    /// Rewrites a ward's census from the store's index; true if it changed.
    fn refresh(&mut self, ward: &str) -> Result<bool, chartsync_core::store::StoreError> {
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
        // The stored census is read once, when the ward's is not in memory yet.
        let stored = match lock(&self.censuses).contains_key(&id) {
            true => None,
            false => Some(self.store.census_doc(ward)?),
        };
        let never_saved = matches!(stored, Some(None));
        let mut all = lock(&self.censuses);
        let (_, census) = all.entry(id).or_insert_with(|| {
            (
                ward.to_string(),
                stored.flatten().unwrap_or_else(|| Census::new(ward)),
            )
        });
        let changed = census
            .set(&entries)
            .map_err(|error| chartsync_core::store::StoreError::Chart { id, error })?;
        if changed || never_saved {
            self.store.save_census_doc(census)?;
        }
        Ok(changed)
    }

    /// After a commit to a chart: the census events to announce.
    pub fn on_change(&mut self, event: &ChartChanged) -> Vec<ChartChanged> {
        let id = event.id;
        // A census lists a chart by its encounter's ward and status: a commit that wrote
        // nothing there (most do: observations, notes, signatures) cannot change one, and
        // costs no look at the store.
        if !event.may_move() {
            return Vec::new();
        }
        if lock(&self.censuses).contains_key(&id) {
            return Vec::new();
        }
        let now = self.store.summary(id).ok().flatten().map(|s| s.ward);
        let before = self.listed.get(&id).cloned();
        let mut wards: Vec<String> = now.into_iter().chain(before).collect();
        wards.dedup();
        let mut out = Vec::new();
        for ward in wards {
            match self.refresh(&ward) {
                Ok(true) => {
                    let census = census_id(&ward);
                    let heads = lock(&self.censuses)
                        .get(&census)
                        .map(|(_, c)| c.doc().get_heads())
                        .unwrap_or_default();
                    out.push(ChartChanged {
                        id: census,
                        heads,
                        sections: Default::default(),
                        created: false,
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::error!(%ward, error = %e, "could not update the ward census"),
            }
        }
        out
    }
}
