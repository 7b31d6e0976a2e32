//! The tablet's store.

use std::sync::Arc;

use chartsync_core::chart::{
    Chart as CoreChart, ChartId, Deficiency, NewEncounter, NewPatient, Staff, Timestamp,
};
use chartsync_core::store::{
    self as core_store, ChartSummary, DeficiencyFilter, EncryptionKey, StoreOptions, WorklistItem,
};

use chartsync_core::protocol::LeftReason;

use crate::chart::Chart;
use crate::error::{chart_id, ChartsyncError};
use crate::tablet::Session;

/// The tablet's chart store: one SQLite (SQLCipher) file.
#[derive(uniffi::Object)]
pub struct ChartStore {
    pub(crate) inner: Arc<core_store::ChartStore>,
}

/// A saved chart document (automerge bytes) and its id, for bulk import.
#[derive(uniffi::Record)]
pub struct ChartDocument {
    pub id: String,
    pub bytes: Vec<u8>,
}

/// A copy of a chart this device set aside after a records supervisor rejected changes made
/// to it here: kept whole, for the staff to re-enter what is still needed.
#[derive(uniffi::Record)]
pub struct SetAsideChart {
    pub chart: ChartId,
    /// The records supervisor's reason.
    pub reason: String,
    pub at: Timestamp,
}

/// A chart removed from this device's store: it left the device's wards, or the tablet was
/// revoked. Nothing of the chart is kept, only this.
#[derive(uniffi::Record)]
pub struct PurgedChart {
    pub chart: ChartId,
    pub reason: LeftReason,
    pub at: Timestamp,
    /// The server recorded the removal.
    pub reported: bool,
}

/// How far a bulk import has got.
#[derive(uniffi::Record)]
pub struct ImportStatus {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
}

/// Told after each chart of a bulk import, on the importing thread, while the import's
/// transaction is open: update a progress bar and return; do not call into the store from it.
/// The last call (done == total) comes just before the commit.
#[uniffi::export(with_foreign)]
pub trait ImportListener: Send + Sync {
    fn progress(&self, status: ImportStatus);
}

impl ChartStore {
    /// On an enrolled (shared) tablet every change is signed by the person who makes it:
    /// charts are opened with a session (`open_chart_signed`), never as a bare `Staff`.
    fn unsigned_writes(&self) -> Result<(), ChartsyncError> {
        if self.inner.enrolment()?.is_some() {
            return Err(ChartsyncError::NotPermitted(
                "this tablet is shared: sign in and open charts with the session".into(),
            ));
        }
        Ok(())
    }
}

#[uniffi::export]
impl ChartStore {
    /// Opens (or creates) the store at `path`. `encryption_key`: the 32-byte key the app keeps
    /// in the Android Keystore or the iOS Keychain; without one the file is plain SQLite. A
    /// file that is not a chart store, or that the key does not open, is left untouched.
    #[uniffi::constructor]
    pub fn open(
        path: String,
        encryption_key: Option<Vec<u8>>,
    ) -> Result<Arc<Self>, ChartsyncError> {
        let encryption_key = match encryption_key {
            None => None,
            Some(bytes) => {
                let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    ChartsyncError::InvalidInput(format!(
                        "an encryption key is 32 bytes, not {}",
                        b.len()
                    ))
                })?;
                Some(EncryptionKey::new(bytes))
            }
        };
        let options = StoreOptions {
            encryption_key,
            ..StoreOptions::default()
        };
        let inner = core_store::ChartStore::open(path, options)?;
        Ok(Arc::new(ChartStore {
            inner: Arc::new(inner),
        }))
    }

    /// A ward's active charts, by bed. Reads the index only: fast on a full ward.
    pub fn census(&self, ward: String) -> Result<Vec<ChartSummary>, ChartsyncError> {
        Ok(self.inner.census(&ward)?)
    }

    /// Every chart of one patient (all their stays), newest first.
    pub fn charts_of_patient(&self, mrn: String) -> Result<Vec<ChartSummary>, ChartsyncError> {
        Ok(self.inner.charts_of_patient(&mrn)?)
    }

    /// Copies of charts set aside after a rejection, newest first (`ChartsyncListener`'s
    /// `chart_set_aside`).
    pub fn set_aside_charts(&self) -> Result<Vec<SetAsideChart>, ChartsyncError> {
        Ok(self
            .inner
            .set_aside_charts()?
            .into_iter()
            .map(|(chart, reason, at)| SetAsideChart { chart, reason, at })
            .collect())
    }

    /// Charts removed from this device's store, newest first (`ChartsyncListener`'s
    /// `chart_removed`).
    pub fn purged_charts(&self) -> Result<Vec<PurgedChart>, ChartsyncError> {
        Ok(self
            .inner
            .purged_charts()?
            .into_iter()
            .map(|p| PurgedChart {
                chart: p.chart,
                reason: p.reason,
                at: p.at,
                reported: p.reported,
            })
            .collect())
    }

    /// One chart's summary, with its count of open deficiencies.
    pub fn summary(&self, id: String) -> Result<Option<ChartSummary>, ChartsyncError> {
        let id = chart_id(&id)?;
        Ok(self.inner.summary(id)?)
    }

    /// What is missing from a chart: unsigned notes, a missing or late history and physical,
    /// a missing discharge summary, forms without signatures, coding not final, open queries,
    /// unresolved conflicts, edits after signing; each with who must act and by when.
    pub fn deficiencies(&self, id: String) -> Result<Vec<Deficiency>, ChartsyncError> {
        let id = chart_id(&id)?;
        Ok(self.inner.deficiencies(id)?)
    }

    /// Deficiencies across the store's charts, soonest due first: a ward's (or every ward's
    /// with `None`), one person's or role's (`responsible`), or only the overdue ones. From
    /// the index: fast on a full ward.
    pub fn worklist(
        &self,
        ward: Option<String>,
        responsible: Option<String>,
        overdue_only: bool,
    ) -> Result<Vec<WorklistItem>, ChartsyncError> {
        let filter = DeficiencyFilter {
            wards: ward.map(|w| vec![w]),
            responsible,
            overdue_only,
            ..DeficiencyFilter::default()
        };
        Ok(self.inner.worklist(&filter, Timestamp::now())?)
    }

    /// Admits a patient: a new chart, committed to the store before this returns.
    pub fn create_chart(
        &self,
        patient: NewPatient,
        encounter: NewEncounter,
        by: Staff,
    ) -> Result<Arc<Chart>, ChartsyncError> {
        self.unsigned_writes()?;
        let chart = CoreChart::create(patient, encounter, &by, Timestamp::now())?;
        let id = self.inner.create(chart)?;
        Ok(Chart::new(self.inner.clone(), id, by, None))
    }

    /// On a shared tablet: admits a patient as the signed-in person, the chart's first
    /// change signed with their key.
    pub fn create_chart_signed(
        &self,
        patient: NewPatient,
        encounter: NewEncounter,
        session: Arc<Session>,
    ) -> Result<Arc<Chart>, ChartsyncError> {
        let by = session.inner.staff().clone();
        let id = session.inner.with_key(|key| {
            let chart = CoreChart::create(patient, encounter, &by, Timestamp::now())?;
            Ok::<_, ChartsyncError>(self.inner.create_signed(key, chart)?)
        })??;
        Ok(Chart::new(self.inner.clone(), id, by, Some(session)))
    }

    /// On a shared tablet: a chart as the signed-in person sees and writes it, each change
    /// signed with their key. Reads and writes fail with `Locked` once the session locks.
    pub fn open_chart_signed(
        &self,
        id: String,
        session: Arc<Session>,
    ) -> Result<Arc<Chart>, ChartsyncError> {
        let id = chart_id(&id)?;
        if self.inner.summary(id)?.is_none() {
            return Err(core_store::StoreError::NotFound(id).into());
        }
        let by = session.inner.staff().clone();
        Ok(Chart::new(self.inner.clone(), id, by, Some(session)))
    }

    /// A chart in the store, as `by` sees and writes it.
    pub fn open_chart(&self, id: String, by: Staff) -> Result<Arc<Chart>, ChartsyncError> {
        self.unsigned_writes()?;
        let id = chart_id(&id)?;
        if self.inner.summary(id)?.is_none() {
            return Err(core_store::StoreError::NotFound(id).into());
        }
        Ok(Chart::new(self.inner.clone(), id, by, None))
    }

    /// A chart's whole document, for another store's `import_charts` (a device being set up,
    /// a hand-carried copy when the network is down for long).
    pub fn export_chart(&self, id: String) -> Result<ChartDocument, ChartsyncError> {
        let chart = chart_id(&id)?;
        let bytes = self.inner.read(chart, |c| c.fork().save())?;
        Ok(ChartDocument { id, bytes })
    }

    /// Imports saved chart documents in one transaction: all of them, or (on any error)
    /// none. `listener` hears after each chart.
    pub fn import_charts(
        &self,
        documents: Vec<ChartDocument>,
        listener: Option<Arc<dyn ImportListener>>,
    ) -> Result<Vec<ChartId>, ChartsyncError> {
        let total = documents.len();
        let mut charts = Vec::with_capacity(total);
        for (index, d) in documents.into_iter().enumerate() {
            let id = chart_id(&d.id).map_err(|e| {
                ChartsyncError::InvalidInput(format!(
                    "import item {index}: {e}; nothing was imported"
                ))
            })?;
            let chart = CoreChart::load(&d.bytes).map_err(|e| {
                ChartsyncError::InvalidInput(format!(
                    "import item {index} is not a chart document ({}); nothing was imported",
                    ChartsyncError::from(e)
                ))
            })?;
            charts.push((id, chart));
        }
        Ok(self.inner.import(charts, Some(total), |p| {
            if let Some(l) = &listener {
                l.progress(ImportStatus {
                    done: p.done as u64,
                    total: p.total.unwrap_or(total) as u64,
                    bytes: p.bytes,
                });
            }
        })?)
    }
}
