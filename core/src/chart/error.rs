//! Errors of the chart API. Messages name fields, ids and codes, never a patient's data: they
//! end up in logs and on screens outside the chart.

use crate::codes::CodeError;

/// Why a chart operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChartError {
    #[error("invalid {field}: {reason}")]
    InvalidValue { field: &'static str, reason: String },

    #[error("{field} is required")]
    Missing { field: &'static str },

    #[error("invalid code: {0}")]
    InvalidCode(#[from] CodeError),

    #[error("invalid code at {path}: {error}")]
    InvalidCodeAt { path: String, error: CodeError },

    #[error("no {what} with id {id} in this chart")]
    NotFound { what: &'static str, id: String },

    #[error("entry {entry_id} is signed and can no longer be edited; add an amendment instead")]
    EntrySigned { entry_id: String },

    #[error("form {form_id} has been signed and its fields can no longer be edited")]
    FormSigned { form_id: String },

    #[error("not permitted: {0}")]
    NotPermitted(String),

    #[error("{0}")]
    InvalidTransition(String),

    #[error("no conflict at {path}")]
    NoConflict { path: String },

    #[error("not a chart document: {0}")]
    NotAChart(String),

    #[error("the chart's schema is {found:?}; this version reads chartsync/chart@1")]
    UnsupportedSchema { found: String },

    #[error("the chart does not follow its schema at {path}: {reason}")]
    Schema { path: String, reason: String },

    #[error("the chart could not be decoded: {0}")]
    Corrupt(String),

    #[error("changes refused: {0}")]
    Rejected(Box<super::validate::Rejection>),
}

impl From<automerge::AutomergeError> for ChartError {
    fn from(e: automerge::AutomergeError) -> Self {
        // Automerge errors speak of object ids and operations, not of the values in them.
        ChartError::Corrupt(e.to_string())
    }
}
