//! Plain serde structs a chart reads into. A [`ChartView`] serializes to the JSON the REST API
//! and the bindings hand out; nothing here refers to automerge.

use serde::{Deserialize, Serialize};

use super::types::*;
use super::write::FormFields;

/// The whole chart as it stands at the document's current heads.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartView {
    pub schema: String,
    pub patient: PatientView,
    pub encounter: EncounterView,
    pub events: Vec<EventView>,
    /// Sorted by `recorded_at`, then id.
    pub entries: Vec<EntryView>,
    pub signatures: Vec<SignatureView>,
    pub amendments: Vec<AmendmentView>,
    pub coding: Vec<CodingView>,
    pub queries: Vec<QueryView>,
    pub forms: Vec<FormView>,
    pub roi_requests: Vec<RoiRequestView>,
    pub disclosures: Vec<DisclosureView>,
    pub case_log: Vec<CaseLogView>,
    pub handovers: Vec<HandoverView>,
    /// Registers written concurrently and not yet resolved.
    pub conflicts: Vec<super::Conflict>,
}

impl ChartView {
    /// When and by whom a coded procedure was done, as the entries it rests on document it
    /// (the operative or procedure note, the imaging result): the earliest one's clinical
    /// time and their authors, earliest first. `None` when no supporting entry is in force.
    pub fn performed(&self, coding: &CodingView) -> Option<(Timestamp, Vec<String>)> {
        let mut documented: Vec<(Timestamp, &str)> = coding
            .supporting_entries
            .iter()
            .filter_map(|id| self.entries.iter().find(|e| &e.id == id))
            .filter(|e| e.status != EntryStatus::EnteredInError)
            .map(|e| {
                let c = &e.content;
                (c.effective_at.unwrap_or(c.recorded_at), c.author.as_str())
            })
            .collect();
        documented.sort();
        let (at, _) = *documented.first()?;
        let mut by: Vec<String> = Vec::new();
        for (_, author) in documented {
            if !by.iter().any(|b| b == author) {
                by.push(author.to_string());
            }
        }
        Some((at, by))
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientView {
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub address: Option<String>,
    pub phone: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncounterView {
    pub ward: String,
    pub bed: Option<String>,
    pub class: EncounterClass,
    pub admitted_at: Timestamp,
    pub admit_source: Option<String>,
    pub attending: Option<String>,
    pub discharged_at: Option<Timestamp>,
    pub discharge_disposition: Option<String>,
    pub status: EncounterStatus,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub id: String,
    pub kind: EventKind,
    pub at: Timestamp,
    pub by: String,
    pub ward: Option<String>,
    pub bed: Option<String>,
    pub from_ward: Option<String>,
    pub from_bed: Option<String>,
    pub disposition: Option<String>,
    /// For change_of_information: the patient fields that changed (names, not values).
    pub changed_fields: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRef {
    /// The code system's token: icd10cm, icd10pcs, cpt, hcpcs, loinc, snomed.
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// What a signature covers: the fields whose hash it records.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryContent {
    pub kind: EntryKind,
    pub author: String,
    pub role: Role,
    pub recorded_at: Timestamp,
    pub effective_at: Option<Timestamp>,
    pub codes: Vec<CodeRef>,
    pub value: Option<String>,
    pub unit: Option<String>,
    pub body: String,
    /// The file of a `scanned_document` (and of no other kind). Absent from the signed JSON
    /// of every other entry, so their hashes are what they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentRef>,
}

/// The file a scanned document holds: named by the SHA-256 of its bytes, which are kept
/// outside the chart's history (the server's store, and a tablet's once it has opened it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub hash: String,
    pub media_type: MediaType,
    /// Bytes.
    pub size: u64,
    pub pages: u32,
    pub title: String,
    pub document_type: DocumentType,
    /// The date the document itself bears (a consent's signing, an outside report's), when
    /// known: `YYYY-MM-DD`.
    pub document_date: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub id: String,
    #[serde(flatten)]
    pub content: EntryContent,
    pub device: String,
    pub shift: Option<Shift>,
    /// The stored status, or `amended` / `entered_in_error` when an amendment says so.
    pub status: EntryStatus,
    pub signed: bool,
    /// Content changed concurrently with a signature: the author should turn the change
    /// into an addendum. The signed content is what [`super::Chart::signed_content`] returns.
    pub edited_after_signing: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureView {
    pub entry_id: String,
    pub signer: String,
    pub role: Role,
    pub meaning: SignatureMeaning,
    pub signed_at: Timestamp,
    /// Hex change hashes: the document as the signer saw it.
    pub heads: Vec<String>,
    /// Hex SHA-256 of the entry's content at `heads`.
    pub content_hash: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmendmentView {
    pub id: String,
    pub target_entry_id: String,
    pub target_hash: String,
    pub kind: AmendmentKind,
    pub reason: String,
    pub body: String,
    pub author: String,
    pub role: Role,
    pub at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodingView {
    pub id: String,
    pub system: String,
    pub code: String,
    pub display: Option<String>,
    pub sequence: CodingSequence,
    pub poa: Option<PresentOnAdmission>,
    pub status: CodingStatus,
    pub supporting_entries: Vec<String>,
    pub coded_by: String,
    pub coded_at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponseView {
    pub by: String,
    pub at: Timestamp,
    pub text: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryView {
    pub id: String,
    /// A query, or a deficiency added by hand.
    pub kind: QueryKind,
    pub question: String,
    pub to: String,
    pub asked_by: String,
    pub asked_at: Timestamp,
    /// The coding assignment or entry the query is about, if any.
    pub about: Option<String>,
    pub status: QueryStatus,
    pub responses: Vec<QueryResponseView>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormSignatureView {
    pub signer: String,
    /// The role in which the form was signed: a staff role or "patient", "witness", ...
    pub role: String,
    pub at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormView {
    pub id: String,
    #[serde(rename = "type")]
    pub form_type: FormType,
    pub fields: FormFields,
    pub required_signers: Vec<String>,
    pub signatures: Vec<FormSignatureView>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Required signer roles that have not signed yet.
    pub missing_signers: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoiRequestView {
    pub id: String,
    pub requester: String,
    pub recipient: String,
    pub recipient_address: String,
    pub purpose: DisclosurePurpose,
    pub scope: String,
    pub received_at: Timestamp,
    pub due_at: Timestamp,
    /// The roi_authorization form that authorizes the release.
    pub authorization: Option<String>,
    pub status: RoiStatus,
    pub status_reason: Option<String>,
    pub status_by: String,
    pub status_at: Timestamp,
    /// How the records go out; set when the release is prepared.
    pub delivery: Option<RoiDelivery>,
    /// The one 30-day extension (45 CFR 164.524(b)(2)(ii)), once taken.
    pub extension: Option<RoiExtension>,
    /// The review for information that needs an authorization naming it, once done.
    pub sensitive_review: Option<SensitiveReview>,
    /// The fee charged, once set.
    pub fee: Option<RoiFee>,
}

/// A request's extension: the notice given to the requester within the first 30 days, with
/// the reason for the delay and the date it will be answered by (the request's `due_at`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoiExtension {
    pub by: String,
    pub at: Timestamp,
    pub reason: String,
    /// The due date before the extension.
    pub original_due_at: Timestamp,
}

/// The records office's review of what a release would carry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensitiveReview {
    pub by: String,
    pub at: Timestamp,
    /// What was found; empty when nothing needs an authorization of its own.
    pub categories: Vec<SensitiveCategory>,
}

/// A release's fee, in cents. For the cost bases the total is the sum of its parts (only
/// these may be charged under 45 CFR 164.524(c)(4)); a flat fee has no parts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoiFee {
    pub basis: FeeBasis,
    /// Labor for copying, whatever the medium.
    pub labor_cents: u64,
    /// Paper, or the disc or drive for an electronic copy.
    pub supplies_cents: u64,
    pub postage_cents: u64,
    /// Preparing a summary or explanation the patient agreed to.
    pub summary_cents: u64,
    pub total_cents: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosureView {
    pub id: String,
    pub request_id: Option<String>,
    /// The patient's `roi_authorization` form the release was made under, if its request's
    /// authorization had been verified by then.
    pub authorization: Option<String>,
    pub at: Timestamp,
    pub recipient: String,
    pub recipient_address: String,
    pub description: String,
    pub purpose: DisclosurePurpose,
    pub by: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseLogView {
    pub at: Timestamp,
    pub by: String,
    pub text: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverView {
    pub from: String,
    pub to: String,
    pub shift: Shift,
    pub at: Timestamp,
    pub summary: String,
}
