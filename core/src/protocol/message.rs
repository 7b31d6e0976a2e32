//! The messages of automerge-repo's WebSocket protocol, version "1": one CBOR map per binary
//! frame, dispatched on its `type`. docs/protocol.md lists every field and where the wire
//! differs from the package's README (which is the spec).
//!
//! Decoding is strict about what it reads and lenient about what it may skip: unknown keys
//! are skipped, CBOR `undefined` and `null` both mean "absent", numbers may come as integers
//! or (from JavaScript) floats; but a wrong type, a missing field, an unknown message type,
//! trailing bytes or an oversized frame is a typed error, never a panic.

use std::collections::BTreeMap;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use super::error::ProtocolError;
use crate::chart::ChartId;
use crate::trust::ProofBundle;

/// The key a `sync` or `request` frame carries proofs of authorship under.
pub const PROOFS_KEY: &str = "chartsync/proofs";

/// Every automerge-repo document id is 16 bytes written as base58check; charts and the
/// server's ward census documents alike.
pub type DocumentId = ChartId;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: &str = "1";

/// The largest frame accepted. A chart's whole history in one sync message is well under a
/// megabyte (the 2,000-entry bench chart saves to 132 KB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Peer ids, storage ids, session ids and error texts longer than this are refused.
pub const MAX_ID_BYTES: usize = 256;
const MAX_TEXT_BYTES: usize = 4096;

/// What a peer says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's persistent store, shared by every peer id it connects as; sync state is kept
    /// per storage id. `None`: the peer keeps nothing.
    pub storage_id: Option<String>,
    pub is_ephemeral: bool,
}

/// A storage's heads of a document, as remote-heads gossip reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// base58check change hashes.
    pub heads: Vec<String>,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Join {
        sender_id: String,
        supported_protocol_versions: Vec<String>,
        peer_metadata: Option<PeerMetadata>,
    },
    Peer {
        sender_id: String,
        selected_protocol_version: String,
        target_id: String,
        peer_metadata: Option<PeerMetadata>,
    },
    Leave {
        sender_id: String,
    },
    /// A sync message from a peer that does not have the document and asks for it.
    Request {
        document_id: DocumentId,
        sender_id: String,
        target_id: String,
        data: Vec<u8>,
        /// Proofs of authorship of the changes in `data` (`chartsync/proofs`): only an
        /// enrolled tablet sends them, only our server reads them; other peers skip the key.
        proofs: Option<Box<ProofBundle>>,
    },
    Sync {
        document_id: DocumentId,
        sender_id: String,
        target_id: String,
        data: Vec<u8>,
        proofs: Option<Box<ProofBundle>>,
    },
    /// The sender has not got the document (or may not share it).
    DocUnavailable {
        document_id: DocumentId,
        sender_id: String,
        target_id: String,
    },
    Ephemeral {
        document_id: DocumentId,
        sender_id: String,
        target_id: String,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    },
    Error {
        message: String,
        sender_id: Option<String>,
        target_id: Option<String>,
    },
    RemoteSubscriptionChange {
        sender_id: String,
        target_id: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    RemoteHeadsChanged {
        document_id: DocumentId,
        sender_id: String,
        target_id: String,
        new_heads: BTreeMap<String, RemoteHeads>,
    },
}

impl Message {
    /// A `request` (when we hold nothing of the document) or a `sync` carrying `data`, an
    /// encoded automerge sync message.
    pub fn about_document(
        request: bool,
        document_id: DocumentId,
        from: &str,
        to: &str,
        data: Vec<u8>,
    ) -> Message {
        let (sender_id, target_id) = (from.to_string(), to.to_string());
        if request {
            Message::Request {
                document_id,
                sender_id,
                target_id,
                data,
                proofs: None,
            }
        } else {
            Message::Sync {
                document_id,
                sender_id,
                target_id,
                data,
                proofs: None,
            }
        }
    }

    /// The wire name of the message's type.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Leave { .. } => "leave",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::Error { .. } => "error",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    pub fn sender_id(&self) -> Option<&str> {
        match self {
            Message::Join { sender_id, .. }
            | Message::Peer { sender_id, .. }
            | Message::Leave { sender_id }
            | Message::Request { sender_id, .. }
            | Message::Sync { sender_id, .. }
            | Message::DocUnavailable { sender_id, .. }
            | Message::Ephemeral { sender_id, .. }
            | Message::RemoteSubscriptionChange { sender_id, .. }
            | Message::RemoteHeadsChanged { sender_id, .. } => Some(sender_id),
            Message::Error { sender_id, .. } => sender_id.as_deref(),
        }
    }

    pub fn target_id(&self) -> Option<&str> {
        match self {
            Message::Peer { target_id, .. }
            | Message::Request { target_id, .. }
            | Message::Sync { target_id, .. }
            | Message::DocUnavailable { target_id, .. }
            | Message::Ephemeral { target_id, .. }
            | Message::RemoteSubscriptionChange { target_id, .. }
            | Message::RemoteHeadsChanged { target_id, .. } => Some(target_id),
            Message::Error { target_id, .. } => target_id.as_deref(),
            Message::Join { .. } | Message::Leave { .. } => None,
        }
    }

    pub fn document_id(&self) -> Option<DocumentId> {
        match self {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => Some(*document_id),
            _ => None,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = write(&mut e, self);
        e.into_writer()
    }

    /// Reads one frame.
    pub fn decode(frame: &[u8]) -> Result<Message, ProtocolError> {
        if frame.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                size: frame.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let mut d = Decoder::new(frame);
        let fields = Fields::read(&mut d)?;
        if d.position() != frame.len() {
            return Err(ProtocolError::TrailingBytes);
        }
        fields.into_message()
    }
}

type Enc<'a> = Encoder<Vec<u8>>;

fn write(
    e: &mut Enc<'_>,
    m: &Message,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    let doc = |id: &DocumentId| id.to_string();
    match m {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            peer_metadata,
        } => {
            e.map(3 + u64::from(peer_metadata.is_some()))?;
            e.str("type")?.str("join")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("supportedProtocolVersions")?
                .array(supported_protocol_versions.len() as u64)?;
            for v in supported_protocol_versions {
                e.str(v)?;
            }
            if let Some(meta) = peer_metadata {
                e.str("peerMetadata")?;
                write_metadata(e, meta)?;
            }
        }
        Message::Peer {
            sender_id,
            selected_protocol_version,
            target_id,
            peer_metadata,
        } => {
            e.map(4 + u64::from(peer_metadata.is_some()))?;
            e.str("type")?.str("peer")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("selectedProtocolVersion")?
                .str(selected_protocol_version)?;
            e.str("targetId")?.str(target_id)?;
            if let Some(meta) = peer_metadata {
                e.str("peerMetadata")?;
                write_metadata(e, meta)?;
            }
        }
        Message::Leave { sender_id } => {
            e.map(2)?;
            e.str("type")?.str("leave")?;
            e.str("senderId")?.str(sender_id)?;
        }
        Message::Request {
            document_id,
            sender_id,
            target_id,
            data,
            proofs,
        }
        | Message::Sync {
            document_id,
            sender_id,
            target_id,
            data,
            proofs,
        } => {
            e.map(5 + u64::from(proofs.is_some()))?;
            e.str("type")?.str(m.kind())?;
            e.str("documentId")?.str(&doc(document_id))?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("data")?.bytes(data)?;
            if let Some(p) = proofs {
                e.str(PROOFS_KEY)?;
                p.encode(e)?;
            }
        }
        Message::DocUnavailable {
            document_id,
            sender_id,
            target_id,
        } => {
            e.map(4)?;
            e.str("type")?.str("doc-unavailable")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(&doc(document_id))?;
        }
        Message::Ephemeral {
            document_id,
            sender_id,
            target_id,
            count,
            session_id,
            data,
        } => {
            e.map(7)?;
            e.str("type")?.str("ephemeral")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("count")?;
            write_number(e, *count)?;
            e.str("sessionId")?.str(session_id)?;
            e.str("documentId")?.str(&doc(document_id))?;
            e.str("data")?.bytes(data)?;
        }
        Message::Error {
            message,
            sender_id,
            target_id,
        } => {
            let n = 2 + u64::from(sender_id.is_some()) + u64::from(target_id.is_some());
            e.map(n)?;
            e.str("type")?.str("error")?;
            if let Some(s) = sender_id {
                e.str("senderId")?.str(s)?;
            }
            if let Some(t) = target_id {
                e.str("targetId")?.str(t)?;
            }
            e.str("message")?.str(message)?;
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            e.map(5)?;
            e.str("type")?.str("remote-subscription-change")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            for (key, list) in [("add", add), ("remove", remove)] {
                e.str(key)?.array(list.len() as u64)?;
                for s in list {
                    e.str(s)?;
                }
            }
        }
        Message::RemoteHeadsChanged {
            document_id,
            sender_id,
            target_id,
            new_heads,
        } => {
            e.map(5)?;
            e.str("type")?.str("remote-heads-changed")?;
            e.str("senderId")?.str(sender_id)?;
            e.str("targetId")?.str(target_id)?;
            e.str("documentId")?.str(&doc(document_id))?;
            e.str("newHeads")?.map(new_heads.len() as u64)?;
            for (storage, h) in new_heads {
                e.str(storage)?.map(2)?;
                e.str("heads")?.array(h.heads.len() as u64)?;
                for head in &h.heads {
                    e.str(head)?;
                }
                e.str("timestamp")?;
                write_number(e, h.timestamp)?;
            }
        }
    }
    Ok(())
}

fn write_metadata(
    e: &mut Enc<'_>,
    meta: &PeerMetadata,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    e.map(1 + u64::from(meta.storage_id.is_some()))?;
    if let Some(s) = &meta.storage_id {
        e.str("storageId")?.str(s)?;
    }
    e.str("isEphemeral")?.bool(meta.is_ephemeral)?;
    Ok(())
}

/// As JavaScript's CBOR encoder writes numbers: integers up to 2^32 - 1 as integers, larger
/// ones (millisecond timestamps) as float64, which JavaScript reads back as a number rather
/// than a BigInt.
fn write_number(
    e: &mut Enc<'_>,
    n: u64,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    if n <= u64::from(u32::MAX) {
        e.u64(n)?;
    } else {
        e.f64(n as f64)?;
    }
    Ok(())
}

/// The fields of a message as read, before its type says which are required.
#[derive(Default)]
struct Fields {
    kind: Option<String>,
    sender_id: Option<String>,
    target_id: Option<String>,
    document_id: Option<DocumentId>,
    data: Option<Vec<u8>>,
    supported_protocol_versions: Option<Vec<String>>,
    selected_protocol_version: Option<String>,
    peer_metadata: Option<PeerMetadata>,
    count: Option<u64>,
    session_id: Option<String>,
    message: Option<String>,
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
    new_heads: Option<BTreeMap<String, RemoteHeads>>,
    proofs: Option<Box<ProofBundle>>,
}

fn malformed(e: minicbor::decode::Error) -> ProtocolError {
    // minicbor's messages describe positions and CBOR types, not content.
    ProtocolError::Malformed(e.to_string())
}

/// True (and consumed) when the next value is `undefined` or `null`: an absent value.
fn absent(d: &mut Decoder<'_>) -> Result<bool, ProtocolError> {
    match d.datatype().map_err(malformed)? {
        Type::Undefined => d.undefined().map(|_| true).map_err(malformed),
        Type::Null => d.null().map(|_| true).map_err(malformed),
        _ => Ok(false),
    }
}

fn text(d: &mut Decoder<'_>, field: &'static str, limit: usize) -> Result<String, ProtocolError> {
    match d.datatype().map_err(malformed)? {
        Type::String => {
            let s = d.str().map_err(malformed)?;
            if s.len() > limit {
                return Err(ProtocolError::TooLong { field, limit });
            }
            Ok(s.to_string())
        }
        _ => Err(ProtocolError::WrongType {
            field,
            expected: "a text string",
        }),
    }
}

fn bytes(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<u8>, ProtocolError> {
    if d.datatype().map_err(malformed)? == Type::Tag {
        // A tagged byte string (cbor-x with tagUint8Array) is still a byte string.
        d.tag().map_err(malformed)?;
    }
    match d.datatype().map_err(malformed)? {
        Type::Bytes => Ok(d.bytes().map_err(malformed)?.to_vec()),
        _ => Err(ProtocolError::WrongType {
            field,
            expected: "a byte string",
        }),
    }
}

fn definite(len: Option<u64>, field: &'static str) -> Result<u64, ProtocolError> {
    len.ok_or(ProtocolError::WrongType {
        field,
        expected: "of definite length",
    })
}

fn text_list(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<String>, ProtocolError> {
    if d.datatype().map_err(malformed)? != Type::Array {
        return Err(ProtocolError::WrongType {
            field,
            expected: "an array of text",
        });
    }
    let n = definite(d.array().map_err(malformed)?, field)?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(text(d, field, MAX_ID_BYTES)?);
    }
    Ok(out)
}

/// An unsigned integer, or a float holding one (JavaScript writes large numbers as floats).
fn number(d: &mut Decoder<'_>, field: &'static str) -> Result<u64, ProtocolError> {
    let wrong = ProtocolError::WrongType {
        field,
        expected: "an unsigned integer",
    };
    match d.datatype().map_err(malformed)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64().map_err(malformed),
        Type::F32 | Type::F64 => {
            let f = d.f64().map_err(malformed)?;
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 {
                Ok(f as u64)
            } else {
                Err(wrong)
            }
        }
        _ => Err(wrong),
    }
}

fn document_id(d: &mut Decoder<'_>) -> Result<DocumentId, ProtocolError> {
    match d.datatype().map_err(malformed)? {
        Type::String => d
            .str()
            .map_err(malformed)?
            .parse()
            .map_err(|_| ProtocolError::BadDocumentId),
        Type::Bytes => {
            let b: [u8; 16] = d
                .bytes()
                .map_err(malformed)?
                .try_into()
                .map_err(|_| ProtocolError::BadDocumentId)?;
            Ok(DocumentId::from_bytes(b))
        }
        _ => Err(ProtocolError::BadDocumentId),
    }
}

fn map_len(d: &mut Decoder<'_>, field: &'static str) -> Result<u64, ProtocolError> {
    match d.datatype().map_err(malformed)? {
        Type::Map => definite(d.map().map_err(malformed)?, field),
        _ => Err(ProtocolError::WrongType {
            field,
            expected: "a map",
        }),
    }
}

fn metadata(d: &mut Decoder<'_>) -> Result<PeerMetadata, ProtocolError> {
    let mut meta = PeerMetadata::default();
    for _ in 0..map_len(d, "peerMetadata")? {
        match text(d, "peerMetadata key", MAX_ID_BYTES)?.as_str() {
            "storageId" if !absent(d)? => {
                meta.storage_id = Some(text(d, "storageId", MAX_ID_BYTES)?)
            }
            "isEphemeral" if !absent(d)? => {
                meta.is_ephemeral = match d.datatype().map_err(malformed)? {
                    Type::Bool => d.bool().map_err(malformed)?,
                    _ => {
                        return Err(ProtocolError::WrongType {
                            field: "isEphemeral",
                            expected: "a boolean",
                        })
                    }
                }
            }
            "storageId" | "isEphemeral" => {}
            _ => d.skip().map_err(malformed)?,
        }
    }
    Ok(meta)
}

fn new_heads(d: &mut Decoder<'_>) -> Result<BTreeMap<String, RemoteHeads>, ProtocolError> {
    let mut out = BTreeMap::new();
    for _ in 0..map_len(d, "newHeads")? {
        let storage = text(d, "newHeads key", MAX_ID_BYTES)?;
        let (mut heads, mut timestamp) = (None, None);
        for _ in 0..map_len(d, "newHeads entry")? {
            match text(d, "newHeads entry key", MAX_ID_BYTES)?.as_str() {
                "heads" => heads = Some(text_list(d, "heads")?),
                "timestamp" => timestamp = Some(number(d, "timestamp")?),
                _ => d.skip().map_err(malformed)?,
            }
        }
        let missing = |field| ProtocolError::MissingField {
            message: "remote-heads-changed",
            field,
        };
        out.insert(
            storage,
            RemoteHeads {
                heads: heads.ok_or(missing("heads"))?,
                timestamp: timestamp.ok_or(missing("timestamp"))?,
            },
        );
    }
    Ok(out)
}

/// A type name as it may appear in an error: short, and only the characters message types use.
fn printable_kind(kind: &str) -> String {
    let clean: String = kind
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    clean
}

impl Fields {
    fn read(d: &mut Decoder<'_>) -> Result<Fields, ProtocolError> {
        let n = match d.datatype().map_err(malformed)? {
            Type::Map => d.map().map_err(malformed)?.ok_or(ProtocolError::NotAMap)?,
            _ => return Err(ProtocolError::NotAMap),
        };
        let mut f = Fields::default();
        for _ in 0..n {
            let key = text(d, "key", MAX_ID_BYTES)?;
            if absent(d)? {
                continue;
            }
            match key.as_str() {
                "type" => f.kind = Some(text(d, "type", MAX_ID_BYTES)?),
                "senderId" => f.sender_id = Some(text(d, "senderId", MAX_ID_BYTES)?),
                "targetId" => f.target_id = Some(text(d, "targetId", MAX_ID_BYTES)?),
                "documentId" => f.document_id = Some(document_id(d)?),
                "data" => f.data = Some(bytes(d, "data")?),
                "supportedProtocolVersions" => {
                    f.supported_protocol_versions = Some(text_list(d, "supportedProtocolVersions")?)
                }
                "selectedProtocolVersion" => {
                    f.selected_protocol_version =
                        Some(text(d, "selectedProtocolVersion", MAX_ID_BYTES)?)
                }
                // automerge-repo's README calls it `metadata`; its code sends `peerMetadata`.
                "peerMetadata" | "metadata" => f.peer_metadata = Some(metadata(d)?),
                "count" => f.count = Some(number(d, "count")?),
                "sessionId" => f.session_id = Some(text(d, "sessionId", MAX_ID_BYTES)?),
                "message" => f.message = Some(text(d, "message", MAX_TEXT_BYTES)?),
                "add" => f.add = Some(text_list(d, "add")?),
                "remove" => f.remove = Some(text_list(d, "remove")?),
                "newHeads" => f.new_heads = Some(new_heads(d)?),
                PROOFS_KEY => {
                    f.proofs = Some(Box::new(
                        ProofBundle::decode(d).map_err(|e| ProtocolError::Proofs(e.to_string()))?,
                    ))
                }
                _ => d.skip().map_err(malformed)?,
            }
        }
        Ok(f)
    }

    fn into_message(self) -> Result<Message, ProtocolError> {
        let kind = self.kind.clone().ok_or(ProtocolError::MissingField {
            message: "a",
            field: "type",
        })?;
        let name: &'static str = match kind.as_str() {
            "join" => "join",
            "peer" => "peer",
            "leave" => "leave",
            "request" => "request",
            "sync" => "sync",
            "doc-unavailable" => "doc-unavailable",
            "ephemeral" => "ephemeral",
            "error" => "error",
            "remote-subscription-change" => "remote-subscription-change",
            "remote-heads-changed" => "remote-heads-changed",
            other => return Err(ProtocolError::UnknownType(printable_kind(other))),
        };
        let missing = |field: &'static str| ProtocolError::MissingField {
            message: name,
            field,
        };
        let sender = || self.sender_id.clone().ok_or(missing("senderId"));
        let target = || self.target_id.clone().ok_or(missing("targetId"));
        let document = || self.document_id.ok_or(missing("documentId"));
        let data = || self.data.clone().ok_or(missing("data"));
        Ok(match name {
            "join" => Message::Join {
                sender_id: sender()?,
                // automerge-repo's own server reads a join without versions as version 1.
                supported_protocol_versions: self
                    .supported_protocol_versions
                    .clone()
                    .unwrap_or_else(|| vec![PROTOCOL_VERSION.to_string()]),
                peer_metadata: self.peer_metadata.clone(),
            },
            "peer" => Message::Peer {
                sender_id: sender()?,
                selected_protocol_version: self
                    .selected_protocol_version
                    .clone()
                    .ok_or(missing("selectedProtocolVersion"))?,
                target_id: target()?,
                peer_metadata: self.peer_metadata.clone(),
            },
            "leave" => Message::Leave {
                sender_id: sender()?,
            },
            "request" => Message::Request {
                document_id: document()?,
                sender_id: sender()?,
                target_id: target()?,
                data: data()?,
                proofs: self.proofs.clone(),
            },
            "sync" => Message::Sync {
                document_id: document()?,
                sender_id: sender()?,
                target_id: target()?,
                data: data()?,
                proofs: self.proofs.clone(),
            },
            "doc-unavailable" => Message::DocUnavailable {
                document_id: document()?,
                sender_id: sender()?,
                target_id: target()?,
            },
            "ephemeral" => Message::Ephemeral {
                document_id: document()?,
                sender_id: sender()?,
                target_id: target()?,
                count: self.count.ok_or(missing("count"))?,
                session_id: self.session_id.clone().ok_or(missing("sessionId"))?,
                data: data()?,
            },
            "error" => Message::Error {
                message: self.message.clone().ok_or(missing("message"))?,
                sender_id: self.sender_id.clone(),
                target_id: self.target_id.clone(),
            },
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id: sender()?,
                target_id: target()?,
                add: self.add.clone().unwrap_or_default(),
                remove: self.remove.clone().unwrap_or_default(),
            },
            _ => Message::RemoteHeadsChanged {
                document_id: document()?,
                sender_id: sender()?,
                target_id: target()?,
                new_heads: self.new_heads.clone().ok_or(missing("newHeads"))?,
            },
        })
    }
}
