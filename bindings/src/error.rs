//! The one error type the apps see. Every core error becomes one of its variants here and
//! nowhere else, and no message carries patient data: codes, names and values a person typed
//! are left out; record ids, field names and code systems are kept.

use chartsync_core::chart::ChartError;
use chartsync_core::codes::CodeError;
use chartsync_core::store::StoreError;

#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum ChartsyncError {
    /// A value the app passed is not acceptable (a field, a token, an id).
    #[error("{0}")]
    InvalidInput(String),
    /// A diagnosis, procedure or observation code that is not valid in its code system.
    #[error("{0}")]
    InvalidCode(String),
    /// No such chart, entry, form, query or request.
    #[error("{0}")]
    NotFound(String),
    /// The signed-in person's role may not do this.
    #[error("{0}")]
    NotPermitted(String),
    /// The record is signed and can no longer be edited: add an amendment instead.
    #[error("{0}")]
    Signed(String),
    /// The step is not allowed from the record's current state.
    #[error("{0}")]
    InvalidTransition(String),
    /// The encryption key does not open the store (or no key was given for an encrypted one).
    #[error("{0}")]
    WrongKey(String),
    /// The store file cannot be used as it is (another app's file, a newer version, damage).
    /// It was left untouched.
    #[error("{0}")]
    StoreFile(String),
    /// The chart changed under this write; it reloads: try again.
    #[error("{0}")]
    Retry(String),
    /// The PIN is not right (`Tablet.people` says how many tries are left).
    #[error("{0}")]
    WrongPin(String),
    /// The person must sign in online: never signed in on this tablet, their key was erased
    /// (too many wrong PINs, or revoked), or their certificate ended.
    #[error("{0}")]
    SignInRequired(String),
    /// The signed-in person was locked after being idle: enter the PIN again.
    #[error("{0}")]
    Locked(String),
    /// The server refused: a wrong password, a used or expired enrolment code, a revoked
    /// tablet or person.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached, or answered with something unexpected.
    #[error("{0}")]
    Network(String),
    /// Anything else: a bug, or the device (disk full, I/O).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ChartsyncError {
    fn from(e: StoreError) -> Self {
        use ChartsyncError::*;
        match e {
            StoreError::Chart { error, .. } => error.into(),
            StoreError::NotADatabase | StoreError::WrongKey => WrongKey(e.to_string()),
            StoreError::ForeignDatabase { .. }
            | StoreError::NewerVersion { .. }
            | StoreError::Corrupt(_)
            | StoreError::EncryptionUnavailable => StoreFile(e.to_string()),
            StoreError::NotFound(_) => NotFound(e.to_string()),
            StoreError::AlreadyExists(_) | StoreError::SameChart { .. } => {
                InvalidInput(e.to_string())
            }
            StoreError::ChangedElsewhere(_) => Retry(e.to_string()),
            StoreError::Import { index, error } => match ChartsyncError::from(*error) {
                InvalidCode(m) => InvalidCode(format!("import item {index}: {m}")),
                other => InvalidInput(format!(
                    "import stopped at item {index}: {other}; nothing was imported"
                )),
            },
            other => Internal(other.to_string()),
        }
    }
}

impl From<ChartError> for ChartsyncError {
    fn from(e: ChartError) -> Self {
        use ChartsyncError::*;
        match e {
            ChartError::InvalidCode(c) => InvalidCode(code_message(&c)),
            ChartError::InvalidCodeAt { path, error } => {
                InvalidCode(format!("{path}: {}", code_message(&error)))
            }
            ChartError::NotFound { .. } | ChartError::NoConflict { .. } => NotFound(e.to_string()),
            ChartError::EntrySigned { .. } | ChartError::FormSigned { .. } => Signed(e.to_string()),
            ChartError::NotPermitted(_) => NotPermitted(e.to_string()),
            ChartError::InvalidTransition(_) => InvalidTransition(e.to_string()),
            ChartError::Rejected(r) => NotPermitted(format!("changes refused: {}", r.summary())),
            ChartError::InvalidValue { .. } | ChartError::Missing { .. } => {
                InvalidInput(e.to_string())
            }
            other => Internal(other.to_string()),
        }
    }
}

/// A chart id the app passed, read here rather than in uniffi's lifting, so that a malformed
/// one is `InvalidInput` and not uniffi's internal error. The id is not repeated.
pub(crate) fn chart_id(text: &str) -> Result<chartsync_core::chart::ChartId, ChartsyncError> {
    text.parse().map_err(|_| {
        ChartsyncError::InvalidInput(
            "not a chart id (the base58check document id automerge-repo uses)".into(),
        )
    })
}

/// What is wrong with a code, naming its system but not the code itself.
fn code_message(e: &CodeError) -> String {
    match e {
        CodeError::Empty { system } => format!("no {system} code was given"),
        CodeError::Malformed { system, .. } => format!("not a well-formed {system} code"),
        CodeError::NotBillable { .. } => {
            "an ICD-10-CM category, not a billable code: choose a more specific code".into()
        }
        CodeError::UnknownCode { code_set, .. } => format!("not a code in {code_set}"),
        CodeError::CheckDigit { system, .. } => {
            format!("fails the {system} check digit: check the code for a typo")
        }
        CodeError::NotAConcept { .. } => "a SNOMED CT identifier that is not a concept".into(),
        CodeError::UnknownSystem { .. } => "an unknown code system".into(),
        CodeError::TableUnavailable { .. } => e.to_string(),
    }
}
