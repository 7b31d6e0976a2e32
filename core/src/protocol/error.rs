//! Why a frame was refused. Messages name fields and message types, never a field's value
//! (a document id is the most they quote): they are logged.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },

    #[error("not CBOR: {0}")]
    Malformed(String),

    #[error("the proofs of authorship are malformed: {0}")]
    Proofs(String),

    #[error("a message must be a CBOR map of definite length")]
    NotAMap,

    #[error("{message} message without {field}")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },

    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },

    #[error("{field} is longer than {limit} bytes")]
    TooLong { field: &'static str, limit: usize },

    #[error("unknown message type {0:?}")]
    UnknownType(String),

    #[error("not a document id")]
    BadDocumentId,

    #[error("bytes after the end of the message")]
    TrailingBytes,

    #[error("unsupported protocol version")]
    UnsupportedVersion,

    #[error("expected {expected}, got a {got} message")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },

    #[error("{message} message from {claimed:?} on the connection of peer {peer:?}")]
    WrongSender {
        message: &'static str,
        claimed: String,
        peer: String,
    },

    #[error("{message} message addressed to another peer")]
    WrongTarget { message: &'static str },

    #[error("the sync message for {document} could not be decoded")]
    BadSyncMessage { document: String },

    #[error("the sync message for {document} is refused: {error}")]
    Contents {
        document: String,
        error: super::contents::ContentError,
    },
}
