//! automerge-repo's WebSocket sync protocol, version "1", with no I/O: frames in, messages and
//! events out, so the server, the device client and deterministic simulation tests drive the
//! same code. docs/protocol.md describes the wire format.
//!
//! - [`message`]: the CBOR messages, strictly decoded with a frame size limit;
//! - [`connection`]: the join/peer handshake and the checks every later message passes;
//! - [`sync`]: one document kept in sync with one peer;
//! - [`contents`]: what one sync message may carry, measured before automerge inflates it;
//! - [`notice`]: what the server says of one chart's changes beside the sync (held, accepted,
//!   rejected).

pub mod connection;
pub mod contents;
mod error;
pub mod message;
pub mod notice;
pub mod sync;

pub use connection::{Connection, Incoming, LocalPeer, RemotePeer, Violation};
pub use contents::{ContentBounds, ContentError};
pub use error::ProtocolError;
pub use message::{
    DocumentId, Message, PeerMetadata, RemoteHeads, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
pub use notice::{ChartNotice, HoldReason, LeftReason, SizeBound};
pub use sync::DocSync;
