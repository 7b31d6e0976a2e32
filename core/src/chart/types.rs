//! The vocabulary of a chart: who acts on it, when, and the closed sets of values its fields
//! take. Every enumeration here is stored in the document as its snake_case token, so a web
//! client writes the same strings (docs/chart-schema.md lists them).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

use super::error::ChartError;

/// Declares a closed set of string tokens: the enum, its token, parsing, and serde as the token.
macro_rules! token_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $token:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $(#[serde(rename = $token)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The token stored in the chart document.
            pub fn token(self) -> &'static str {
                match self { $($name::$variant => $token),+ }
            }

            /// Parses a stored token.
            pub fn from_token(token: &str) -> Result<Self, ChartError> {
                match token {
                    $($token => Ok($name::$variant),)+
                    _ => Err(ChartError::InvalidValue {
                        field: $what,
                        reason: format!("not a known {} (got {} characters); expected one of: {}", $what, token.chars().count(),
                            [$($token),+].join(", ")),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.token())
            }
        }
    };
}

token_enum!(
    /// The roles a bearer token names; they decide what a person may write.
    Role, "role" {
        Technician => "technician",
        Nurse => "nurse",
        Physician => "physician",
        Coder => "coder",
        RecordsSupervisor => "records_supervisor",
        Admin => "admin",
    }
);

token_enum!(
    /// What is missing or wrong in a chart, as a records technician's audit finds it.
    DeficiencyKind, "deficiency kind" {
        UnsignedEntry => "unsigned_entry",
        FormMissingSignature => "form_missing_signature",
        OpenQuery => "open_query",
        UnresolvedConflict => "unresolved_conflict",
        EditedAfterSigning => "edited_after_signing",
        HistoryPhysicalMissing => "history_physical_missing",
        HistoryPhysicalLate => "history_physical_late",
        DischargeSummaryMissing => "discharge_summary_missing",
        CodingNotFinal => "coding_not_final",
        PoaMissing => "poa_missing",
        ReleaseDue => "release_due",
        AddedByHand => "added_by_hand",
    }
);

token_enum!(
    /// A ward's three nursing shifts.
    Shift, "shift" { Day => "day", Evening => "evening", Night => "night" }
);

token_enum!(
    /// FHIR administrative gender.
    Sex, "sex" { Female => "female", Male => "male", Other => "other", Unknown => "unknown" }
);

token_enum!(
    /// What kind of stay this chart records.
    EncounterClass, "encounter class" {
        Inpatient => "inpatient",
        Observation => "observation",
        Emergency => "emergency",
        DayCase => "day_case",
    }
);

token_enum!(
    /// Whether the patient is still on the ward.
    EncounterStatus, "encounter status" { Active => "active", Discharged => "discharged" }
);

token_enum!(
    /// Events of the stay; the events list is append-only.
    EventKind, "event kind" {
        Admit => "admit",
        Transfer => "transfer",
        Discharge => "discharge",
        ChangeOfInformation => "change_of_information",
    }
);

token_enum!(
    /// What an entry records.
    EntryKind, "entry kind" {
        Observation => "observation",
        Intervention => "intervention",
        Treatment => "treatment",
        Medication => "medication",
        LabResult => "lab_result",
        ImagingResult => "imaging_result",
        HistoryPhysical => "history_physical",
        ProgressNote => "progress_note",
        NursingNote => "nursing_note",
        ConsultNote => "consult_note",
        OperativeNote => "operative_note",
        ProcedureNote => "procedure_note",
        DischargeSummary => "discharge_summary",
        ScannedDocument => "scanned_document",
    }
);

token_enum!(
    /// What a scanned document or other attached file is (docs/chart-schema.md,
    /// "Scanned documents").
    DocumentType, "document type" {
        Consent => "consent",
        AdvanceDirective => "advance_directive",
        OutsideRecord => "outside_record",
        Correspondence => "correspondence",
        Identification => "identification",
        Insurance => "insurance",
        Other => "other",
    }
);

token_enum!(
    /// The kinds of file a scanned document may be: what its first bytes say, never a name.
    MediaType, "media type" {
        Pdf => "application/pdf",
        Jpeg => "image/jpeg",
        Png => "image/png",
    }
);

token_enum!(
    /// The stored status of an entry. `amended` and `entered_in_error` are also derived from the
    /// amendments list when reading, because a signed entry itself can no longer change.
    EntryStatus, "entry status" {
        Draft => "draft",
        Final => "final",
        Amended => "amended",
        EnteredInError => "entered_in_error",
    }
);

token_enum!(
    /// What a signature attests.
    SignatureMeaning, "signature meaning" {
        Author => "author",
        Cosign => "cosign",
        Verify => "verify",
    }
);

token_enum!(
    /// How an amendment relates to the entry it references.
    AmendmentKind, "amendment kind" {
        Addendum => "addendum",
        Correction => "correction",
        LateEntry => "late_entry",
        EnteredInError => "entered_in_error",
        PatientRequested => "patient_requested",
    }
);

token_enum!(
    /// Where a code sits on the claim.
    CodingSequence, "coding sequence" {
        Principal => "principal",
        Secondary => "secondary",
        Admitting => "admitting",
    }
);

token_enum!(
    /// Present-on-admission indicator (CMS UB-04 values; `exempt` is reported as "1").
    PresentOnAdmission, "present-on-admission indicator" {
        Yes => "Y",
        No => "N",
        Unknown => "U",
        ClinicallyUndetermined => "W",
        Exempt => "exempt",
    }
);

token_enum!(
    /// Where a code assignment is in the coding workflow.
    CodingStatus, "coding status" { Proposed => "proposed", Queried => "queried", Final => "final" }
);

token_enum!(
    /// What a record of the `queries` section is: a physician query (a coder's or the records
    /// office's question), or a deficiency a records technician added by hand (a paper form
    /// left unsigned, a dictation missing) for the physician to put right.
    QueryKind, "query kind" { Query => "query", Deficiency => "deficiency" }
);

token_enum!(
    /// A physician query's state.
    QueryStatus, "query status" { Open => "open", Answered => "answered", Withdrawn => "withdrawn" }
);

token_enum!(
    /// The forms a records office processes.
    FormType, "form type" {
        Admission => "admission",
        Discharge => "discharge",
        ChangeOfInformation => "change_of_information",
        Consent => "consent",
        RoiAuthorization => "roi_authorization",
    }
);

token_enum!(
    /// Release-of-information request lifecycle.
    RoiStatus, "release-of-information status" {
        Received => "received",
        AuthorizationVerified => "authorization_verified",
        Fulfilled => "fulfilled",
        Denied => "denied",
    }
);

token_enum!(
    /// How released records go out to their recipient.
    RoiDelivery, "delivery method" {
        Mail => "mail",
        Pickup => "pickup",
        Fax => "fax",
        Email => "email",
        Portal => "portal",
        ElectronicMedia => "electronic_media",
    }
);

impl RoiDelivery {
    /// An electronic copy (email, the patient portal, a disc or drive): the only deliveries a
    /// flat fee may be charged for.
    pub fn is_electronic(self) -> bool {
        matches!(
            self,
            RoiDelivery::Email | RoiDelivery::Portal | RoiDelivery::ElectronicMedia
        )
    }
}

token_enum!(
    /// Information a release may carry only under an authorization that names it: psychotherapy
    /// notes (45 CFR 164.508(a)(2)), substance use disorder records (42 CFR part 2), and what
    /// state law protects apart (HIV/AIDS, genetic tests, mental health, reproductive health).
    SensitiveCategory, "sensitive information category" {
        PsychotherapyNotes => "psychotherapy_notes",
        SubstanceUseDisorder => "substance_use_disorder",
        HivAids => "hiv_aids",
        Genetic => "genetic",
        MentalHealth => "mental_health",
        ReproductiveHealth => "reproductive_health",
    }
);

token_enum!(
    /// How a release's fee was set (45 CFR 164.524(c)(4), and HHS's guidance on it): no fee,
    /// the actual cost of labor, supplies and postage, an average-cost schedule of the same,
    /// or a flat fee for an electronic copy of records kept electronically.
    FeeBasis, "fee basis" {
        NoFee => "no_fee",
        ActualCost => "actual_cost",
        AverageCost => "average_cost",
        FlatElectronic => "flat_electronic",
    }
);

/// The most a flat fee for an electronic copy may be, in cents: HHS's $6.50, inclusive of
/// labor, supplies and postage.
pub const FLAT_ELECTRONIC_FEE_MAX_CENTS: u64 = 650;

/// Parses an amount of cents stored as decimal digits (`"1240"` is $12.40); a sign, a point,
/// spaces or more than 12 digits are refused.
pub fn parse_cents(s: &str) -> Result<u64, ChartError> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChartError::InvalidValue {
            field: "cents",
            reason: format!(
                "an amount is up to 12 digits of cents (got {} characters)",
                s.chars().count()
            ),
        });
    }
    s.parse().map_err(|_| ChartError::InvalidValue {
        field: "cents",
        reason: "not a whole number of cents".into(),
    })
}

token_enum!(
    /// Why records were disclosed, in the terms of 45 CFR 164.506-164.514. The accounting of
    /// disclosures (164.528) leaves out the purposes [`DisclosurePurpose::exempt_under`] names.
    DisclosurePurpose, "disclosure purpose" {
        Treatment => "treatment",
        Payment => "payment",
        HealthCareOperations => "health_care_operations",
        ToPatient => "to_patient",
        Incidental => "incidental",
        DirectoryOrInvolvedPersons => "directory_or_involved_persons",
        NationalSecurity => "national_security",
        CorrectionalCustody => "correctional_custody",
        LimitedDataSet => "limited_data_set",
        RequiredByLaw => "required_by_law",
        PublicHealth => "public_health",
        AbuseOrNeglect => "abuse_or_neglect",
        HealthOversight => "health_oversight",
        JudicialProceeding => "judicial_proceeding",
        LawEnforcement => "law_enforcement",
        Decedent => "decedent",
        OrganDonation => "organ_donation",
        Research => "research",
        SeriousThreat => "serious_threat",
        SpecializedGovernment => "specialized_government",
        WorkersCompensation => "workers_compensation",
    }
);

impl DisclosurePurpose {
    /// The paragraph of 45 CFR 164.528(a)(1) that leaves disclosures for this purpose out of
    /// an accounting, or `None` when they must be accounted for. (A disclosure made under the
    /// patient's authorization, 164.528(a)(1)(iv), is left out by its request, whatever the
    /// purpose.)
    pub fn exempt_under(self) -> Option<&'static str> {
        use DisclosurePurpose::*;
        match self {
            Treatment | Payment | HealthCareOperations => Some("164.528(a)(1)(i)"),
            ToPatient => Some("164.528(a)(1)(ii)"),
            Incidental => Some("164.528(a)(1)(iii)"),
            DirectoryOrInvolvedPersons => Some("164.528(a)(1)(v)"),
            NationalSecurity => Some("164.528(a)(1)(vi)"),
            CorrectionalCustody => Some("164.528(a)(1)(vii)"),
            LimitedDataSet => Some("164.528(a)(1)(viii)"),
            RequiredByLaw
            | PublicHealth
            | AbuseOrNeglect
            | HealthOversight
            | JudicialProceeding
            | LawEnforcement
            | Decedent
            | OrganDonation
            | Research
            | SeriousThreat
            | SpecializedGovernment
            | WorkersCompensation => None,
        }
    }
}

impl RoiStatus {
    /// Still to be answered: received, or its authorization verified.
    pub fn is_open(self) -> bool {
        matches!(self, RoiStatus::Received | RoiStatus::AuthorizationVerified)
    }

    /// The lifecycle allows received → authorization_verified → fulfilled, and denial from
    /// either open state; fulfilled and denied are final.
    pub fn may_become(self, next: RoiStatus) -> bool {
        use RoiStatus::*;
        matches!(
            (self, next),
            (Received, AuthorizationVerified)
                | (Received, Denied)
                | (AuthorizationVerified, Fulfilled)
                | (AuthorizationVerified, Denied)
        )
    }
}

impl EntryKind {
    /// Documents the author must authenticate with a signature (42 CFR 482.24(c)(1)): the
    /// notes and summaries a records technician holds a chart open for. Observations, results,
    /// medications, interventions and treatments are authenticated when recorded: the change
    /// that records them carries its author.
    pub fn requires_signature(self) -> bool {
        matches!(
            self,
            EntryKind::HistoryPhysical
                | EntryKind::ProgressNote
                | EntryKind::NursingNote
                | EntryKind::ConsultNote
                | EntryKind::OperativeNote
                | EntryKind::ProcedureNote
                | EntryKind::DischargeSummary
        )
    }
}

/// A point in time, stored as RFC 3339 in UTC (`2026-11-27T21:04:05Z`, fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

// The bindings carry a timestamp as the platform's own instant (java.time.Instant, Date,
// datetime): no string parsing in the apps.
#[cfg(feature = "uniffi")]
uniffi::custom_type!(Timestamp, std::time::SystemTime, {
    lower: |t| t.0.into(),
    try_lift: |instant| Ok(Timestamp(OffsetDateTime::from(instant))),
});

impl Timestamp {
    /// Now, from the system clock (or a simulation's, on a thread it seeded: `crate::seeded`).
    pub fn now() -> Self {
        match crate::seeded::clock() {
            Some(ms) => Timestamp::from_unix_millis(ms)
                .unwrap_or_else(|_| Timestamp(OffsetDateTime::now_utc())),
            None => Timestamp(OffsetDateTime::now_utc()),
        }
    }

    /// Parses RFC 3339; errors do not echo the input (it may be a birth date). The offset must be UTC (`Z` or `+00:00`) so that stored times compare
    /// as strings and no local-time ambiguity enters the record.
    pub fn parse(s: &str) -> Result<Self, ChartError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| ChartError::InvalidValue {
            field: "timestamp",
            reason: "not an RFC 3339 timestamp".into(),
        })?;
        if t.offset() != UtcOffset::UTC {
            return Err(ChartError::InvalidValue {
                field: "timestamp",
                reason: "not in UTC; write it with a Z offset".into(),
            });
        }
        Ok(Timestamp(t))
    }

    /// From seconds since the Unix epoch.
    pub fn from_unix(secs: i64) -> Result<Self, ChartError> {
        OffsetDateTime::from_unix_timestamp(secs)
            .map(Timestamp)
            .map_err(|_| ChartError::InvalidValue {
                field: "timestamp",
                reason: format!("{secs} seconds is out of range"),
            })
    }

    /// From milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> Result<Self, ChartError> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(Timestamp)
            .map_err(|_| ChartError::InvalidValue {
                field: "timestamp",
                reason: format!("{ms} milliseconds is out of range"),
            })
    }

    /// Milliseconds since the Unix epoch.
    /// The calendar date (UTC): what a code-set year is chosen by.
    pub fn date(self) -> Date {
        self.0.date()
    }

    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// This time plus a number of seconds (negative goes back).
    pub fn plus_seconds(self, secs: i64) -> Self {
        Timestamp(self.0 + time::Duration::seconds(secs))
    }

    /// The same instant `years` calendar years earlier (29 February becomes 28 February).
    pub fn years_before(self, years: i32) -> Self {
        let year = self.0.year() - years;
        let moved = self
            .0
            .replace_year(year)
            .or_else(|_| self.0.replace_day(28).and_then(|t| t.replace_year(year)));
        // Only 29 February can fail to move, and the 28th always exists.
        Timestamp(moved.unwrap_or(self.0))
    }

    /// The stored form.
    pub fn to_rfc3339(self) -> String {
        // Formatting a UTC OffsetDateTime with Rfc3339 cannot fail for years 0..=9999.
        self.0
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.0.unix_timestamp().to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// In an OpenAPI document: an RFC 3339 time in UTC.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a calendar date written `YYYY-MM-DD` (birth dates).
pub fn check_date(s: &str) -> Result<(), ChartError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format)
        .map(|_| ())
        .map_err(|_| ChartError::InvalidValue {
            field: "date",
            reason: "not a date written YYYY-MM-DD".into(),
        })
}

/// The person acting on a chart, and the device they act from. Every change a [`Chart`]
/// commits carries this as its automerge author, which is how `conflicts()` names who wrote
/// each value.
///
/// [`Chart`]: super::Chart
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Staff {
    pub user: String,
    pub role: Role,
    pub device: String,
}

impl Staff {
    pub fn new(user: impl Into<String>, role: Role, device: impl Into<String>) -> Self {
        Staff {
            user: user.into(),
            role,
            device: device.into(),
        }
    }

    /// User and device ids go into every change; they must be short, printable identifiers
    /// (never a person's name), so that audit logs can show them.
    pub(crate) fn check(&self) -> Result<(), ChartError> {
        check_identifier("user", &self.user)?;
        check_identifier("device", &self.device)
    }
}

/// Ids of users, devices and MRNs: 1 to 64 characters of letters, digits and `._-@:`.
pub fn check_identifier(field: &'static str, s: &str) -> Result<(), ChartError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ChartError::InvalidValue {
            field,
            reason: format!(
                "a {field} id is 1 to 64 letters, digits or . _ - @ : (got {} characters)",
                s.chars().count()
            ),
        })
    }
}

/// A new random record id (entries, codings, queries, forms, requests, events): a lowercase
/// hyphenated UUID v4, which a browser makes with `crypto.randomUUID()`.
pub fn new_id() -> String {
    crate::seeded::uuid_v4().to_string()
}

/// Checks a record id is a lowercase hyphenated UUID.
pub fn check_record_id(s: &str) -> Result<(), ChartError> {
    match uuid::Uuid::try_parse(s) {
        Ok(u) if u.to_string() == s => Ok(()),
        _ => Err(ChartError::InvalidValue {
            field: "record id",
            reason: "not a lowercase hyphenated UUID".into(),
        }),
    }
}
