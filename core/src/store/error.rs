//! Why a store operation failed. Messages carry chart ids, versions and SQLite's own words,
//! never a value from a chart: they are logged and shown on screens.

use crate::chart::{ChartError, ChartId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the file is not a SQLite database, or it is encrypted and no key was given; it was left untouched")]
    NotADatabase,

    #[error("the file is a SQLite database of another application (application id {application_id:#x}); it was left untouched")]
    ForeignDatabase { application_id: i32 },

    #[error("the encryption key does not open this store (or the file is not a chartsync store); it was left untouched")]
    WrongKey,

    #[error(
        "encryption was asked for, but this build's SQLite has no encryption (SQLCipher) support"
    )]
    EncryptionUnavailable,

    #[error("the store is at version {found}, newer than this app's {supported}: update the app; the file was left untouched")]
    NewerVersion { found: i64, supported: i64 },

    #[error("the store is damaged: {0}; it was left untouched for recovery")]
    Corrupt(String),

    #[error("no chart {0} in this store")]
    NotFound(ChartId),

    #[error("chart {0} is already in this store")]
    AlreadyExists(ChartId),

    #[error("chart {0} was destroyed past its retention (its certificate of destruction says when); it is never stored again")]
    Destroyed(ChartId),

    #[error("chart {id} is chart {existing}, already in this store under that id: a chart keeps the id it was made with")]
    SameChart { id: ChartId, existing: ChartId },

    #[error("chart {0} changed in the store under this copy; it will reload, try again")]
    ChangedElsewhere(ChartId),

    #[error("chart {id}: {error}")]
    Chart { id: ChartId, error: ChartError },

    #[error("chart {id}: what the store holds does not load: {reason}")]
    Unloadable { id: ChartId, reason: String },

    #[error("sync state for chart {0} could not be decoded")]
    BadSyncState(ChartId),

    #[error("import stopped at item {index}: {error}; nothing was imported")]
    Import {
        index: usize,
        error: Box<StoreError>,
    },

    #[error("{} already exists; nothing was written", .0.display())]
    Exists(std::path::PathBuf),

    #[error("no held changes {0}")]
    NoSuchHold(i64),

    #[error("held changes {id} were already {status}")]
    AlreadyDecided { id: i64, status: &'static str },

    #[error("held changes {id} cannot be accepted ({reason}): they would break the record's rules; reject them")]
    NotAcceptable { id: i64, reason: &'static str },

    #[error("held changes {id} build on changes the record has not got{}: decide those first", .first.map(|f| format!(" (held changes {f})")).unwrap_or_default())]
    DecideFirst { id: i64, first: Option<i64> },

    #[error("a reason is required to reject held changes")]
    ReasonRequired,

    #[error("no staff member {0} in the directory")]
    NoSuchStaff(String),

    #[error("no enrolled device {0}")]
    NoSuchDevice(String),

    #[error("the enrolment code is unknown, used or expired: ask an administrator for a new one")]
    BadEnrolmentCode,

    #[error("device {0} is already enrolled")]
    AlreadyEnrolled(String),

    #[error("{what} {id} is revoked")]
    Revoked { what: &'static str, id: String },

    #[error("{0}")]
    Invalid(String),

    #[error("no chart has MRN {0}: check the number")]
    NoSuchPatient(String),

    #[error("no accounting request {0}")]
    NoSuchAccountingRequest(String),

    /// What was asked is right in itself but not at this step (a request already answered,
    /// or extended once already).
    #[error("{0}")]
    OutOfTurn(String),

    #[error("the audit trail could not be written (with the rows committed beside it): {0}")]
    AuditNotWritten(String),

    #[error("chart {0} has no such open deficiency (it may have been put right since): nothing was changed")]
    NoSuchDeficiency(ChartId),

    #[error("a {0} deficiency is put right in the chart, not acknowledged: only a late H&P is acknowledged")]
    NotAcknowledgeable(&'static str),

    #[error("no break-glass grant {0}")]
    NoSuchGrant(i64),

    #[error("the audit trail was changed at row {seq}: it does not follow from the row before it")]
    AuditTampered { seq: i64 },

    #[error("SQLite: {0}")]
    Sqlite(#[source] rusqlite::Error),

    #[error("the database's schema holds tables that are not a chartsync store's; it was left untouched")]
    ForeignSchema,

    /// PostgreSQL's words: the message and its SQLSTATE, never the values of a row.
    #[error("PostgreSQL: {0}")]
    Database(String),

    /// Work for the single-writer lease's holder (a ward census, a sweep) refused: on a
    /// database shared by several server nodes, another node holds the lease now.
    #[error(
        "this server node does not hold the single-writer lease; the node that does will do this"
    )]
    NotLeaseHolder,

    /// A query that must find a row found none: the store's rows disagree with each other.
    #[error("a row the store expected is missing")]
    NoRow,

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
            return StoreError::NoRow;
        }
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StoreError::NotADatabase,
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}
