//! One chart, as the signed-in person sees and writes it. Every write is a durable commit to
//! the store (its index and deficiency counts included) before it returns; the sync client
//! sends it when there is a connection.

use std::sync::Arc;

use chartsync_core::chart::{
    self as core_chart, ChartError, ChartId, ChartView, CodeInput, CodingStatus, Conflict,
    Deficiency, NewAmendment, NewCoding, NewDisclosure, NewEntry, NewForm, NewQuery, NewRoiRequest,
    PatientUpdate, PresentOnAdmission, Resolution, RoiDelivery, RoiFee, RoiStatus,
    SensitiveCategory, Shift, SignatureMeaning, Staff, Timestamp,
};
use chartsync_core::store::ChartStore;

use crate::error::ChartsyncError;
use crate::tablet::Session;

#[derive(uniffi::Object)]
pub struct Chart {
    store: Arc<ChartStore>,
    id: ChartId,
    by: Staff,
    /// On a shared tablet: the signed-in person, whose key signs each change, and whose idle
    /// lock closes the chart to reads and writes alike.
    session: Option<Arc<Session>>,
}

/// How to settle a conflict: keep one of the conflicting values (by its index in
/// `Conflict.values`), or write a new value.
#[derive(uniffi::Enum)]
pub enum ConflictChoice {
    Keep { index: u32 },
    Value { value: String },
}

impl Chart {
    pub(crate) fn new(
        store: Arc<ChartStore>,
        id: ChartId,
        by: Staff,
        session: Option<Arc<Session>>,
    ) -> Arc<Chart> {
        Arc::new(Chart {
            store,
            id,
            by,
            session,
        })
    }

    /// One write, by the signed-in person, now.
    fn write<T>(
        &self,
        write: impl FnOnce(&mut core_chart::Chart, &Staff, Timestamp) -> Result<T, ChartError>,
    ) -> Result<T, ChartsyncError> {
        let now = Timestamp::now();
        match &self.session {
            None => Ok(self.store.update(self.id, |c| write(c, &self.by, now))?),
            Some(s) => Ok(s.inner.with_key(|key| {
                self.store
                    .update_signed(key, self.id, |c| write(c, &self.by, now))
            })??),
        }
    }

    fn read<T>(
        &self,
        read: impl FnOnce(&core_chart::Chart) -> Result<T, ChartError>,
    ) -> Result<T, ChartsyncError> {
        if let Some(s) = &self.session {
            // Reading counts as use; a locked session reads nothing.
            s.inner.with_key(|_| ())?;
        }
        Ok(self.store.read(self.id, read)??)
    }
}

#[uniffi::export]
impl Chart {
    pub fn id(&self) -> ChartId {
        self.id
    }

    /// The person this handle writes as.
    pub fn signed_in(&self) -> Staff {
        self.by.clone()
    }

    /// The whole chart as records: patient, encounter, entries with their signing state,
    /// coding, queries, forms, release of information, disclosures, handovers, conflicts.
    pub fn view(&self) -> Result<ChartView, ChartsyncError> {
        self.read(|c| c.view())
    }

    pub fn deficiencies(&self) -> Result<Vec<Deficiency>, ChartsyncError> {
        self.read(|c| c.deficiencies())
    }

    /// Values written concurrently on two devices, each with who wrote it.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, ChartsyncError> {
        self.read(|c| Ok(c.conflicts()))
    }

    pub fn resolve_conflict(
        &self,
        path: Vec<String>,
        choice: ConflictChoice,
    ) -> Result<(), ChartsyncError> {
        let resolution = match choice {
            ConflictChoice::Keep { index } => Resolution::Keep(index as usize),
            ConflictChoice::Value { value } => Resolution::Value(value),
        };
        self.write(|c, by, at| c.resolve_conflict(by, at, &path, resolution))
    }

    /// Records an observation, result, note, order ...; returns the entry's id.
    pub fn add_entry(&self, entry: NewEntry) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.add_entry(by, at, entry))
    }

    pub fn edit_entry_body(&self, entry_id: String, body: String) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.edit_entry_body(by, at, &entry_id, &body))
    }

    pub fn set_entry_value(
        &self,
        entry_id: String,
        value: Option<String>,
        unit: Option<String>,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| {
            c.set_entry_value(by, at, &entry_id, value.as_deref(), unit.as_deref())
        })
    }

    pub fn set_entry_codes(
        &self,
        entry_id: String,
        codes: Vec<CodeInput>,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.set_entry_codes(by, at, &entry_id, &codes))
    }

    /// Signs an entry as its author (or cosigns, attests ...). A signed entry is frozen.
    pub fn sign_entry(
        &self,
        entry_id: String,
        meaning: SignatureMeaning,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.sign_entry(by, at, &entry_id, meaning))
    }

    /// Corrects or adds to a signed entry; returns the amendment's id.
    pub fn amend(&self, amendment: NewAmendment) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.amend(by, at, amendment))
    }

    /// Assigns a diagnosis or procedure code; returns the coding's id.
    pub fn assign_code(&self, coding: NewCoding) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.assign_code(by, at, coding))
    }

    pub fn set_coding_status(
        &self,
        coding_id: String,
        status: CodingStatus,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.set_coding_status(by, at, &coding_id, status))
    }

    /// Sets an ICD-10-CM diagnosis's present-on-admission indicator (coders).
    pub fn set_coding_poa(
        &self,
        coding_id: String,
        poa: PresentOnAdmission,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.set_coding_poa(by, at, &coding_id, poa))
    }

    /// Asks a physician a query; returns its id.
    pub fn ask_query(&self, query: NewQuery) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.ask_query(by, at, query))
    }

    pub fn respond_to_query(&self, query_id: String, text: String) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.respond_to_query(by, at, &query_id, &text))
    }

    pub fn withdraw_query(&self, query_id: String) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.withdraw_query(by, at, &query_id))
    }

    /// Starts a form (consent, admission, discharge ...); returns its id.
    pub fn add_form(&self, form: NewForm) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.add_form(by, at, form))
    }

    pub fn set_form_field(
        &self,
        form_id: String,
        field: String,
        value: String,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.set_form_field(by, at, &form_id, &field, &value))
    }

    /// Records a signature on a form by `signer` (the patient, a witness ...) in
    /// `signer_role`, one of the form's required signers.
    pub fn sign_form(
        &self,
        form_id: String,
        signer: String,
        signer_role: String,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.sign_form(by, at, &form_id, &signer, &signer_role))
    }

    /// Logs a request for release of information; returns its id.
    pub fn receive_roi_request(&self, request: NewRoiRequest) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.receive_roi_request(by, at, request))
    }

    pub fn set_roi_status(
        &self,
        request_id: String,
        status: RoiStatus,
        authorization_form: Option<String>,
        reason: Option<String>,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| {
            c.set_roi_status(
                by,
                at,
                &request_id,
                status,
                authorization_form.as_deref(),
                reason.as_deref(),
            )
        })
    }

    /// Takes a request's one 30-day extension, with the reason its notice gives; returns the
    /// new due date.
    pub fn extend_roi_request(
        &self,
        request_id: String,
        reason: String,
    ) -> Result<Timestamp, ChartsyncError> {
        self.write(|c, by, at| c.extend_roi_request(by, at, &request_id, &reason))
    }

    /// Prepares a request's release: delivery, the sensitive information found, the fee.
    pub fn prepare_roi_release(
        &self,
        request_id: String,
        delivery: RoiDelivery,
        sensitive: Vec<SensitiveCategory>,
        fee: RoiFee,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| {
            c.prepare_roi_release(by, at, &request_id, delivery, &sensitive, fee)
        })
    }

    /// Appends a disclosure to the accounting of disclosures; returns its id.
    pub fn record_disclosure(&self, disclosure: NewDisclosure) -> Result<String, ChartsyncError> {
        self.write(|c, by, at| c.record_disclosure(by, at, disclosure))
    }

    pub fn log_case(&self, text: String) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.log_case(by, at, &text))
    }

    /// Hands the chart over to the next shift's nurse or physician.
    pub fn hand_over(
        &self,
        to: String,
        shift: Shift,
        summary: String,
    ) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.hand_over(by, at, &to, shift, &summary))
    }

    pub fn transfer(&self, to_ward: String, to_bed: Option<String>) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.transfer(by, at, &to_ward, to_bed.as_deref()))
    }

    pub fn discharge(&self, disposition: String) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.discharge(by, at, &disposition))
    }

    /// A change-of-information form: new name, address, phone ...
    pub fn change_information(&self, update: PatientUpdate) -> Result<(), ChartsyncError> {
        self.write(|c, by, at| c.change_information(by, at, update))
    }
}
