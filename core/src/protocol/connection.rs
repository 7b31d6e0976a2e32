//! One connection's handshake and the checks every later message passes: the acceptor (the
//! server) waits for `join` and answers `peer`; the initiator (a tablet) sends `join` and
//! waits for `peer`. Afterwards every document message must come from the peer that joined
//! and be addressed to us. No I/O: frames in, messages out.

use super::error::ProtocolError;
use super::message::{Message, PeerMetadata, PROTOCOL_VERSION};

/// This side of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPeer {
    pub peer_id: String,
    pub metadata: PeerMetadata,
}

/// The other side, once it has introduced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    pub peer_id: String,
    pub metadata: Option<PeerMetadata>,
}

impl RemotePeer {
    /// Whose sync state to keep: the remote's storage, if it has a lasting one.
    pub fn storage_id(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .filter(|m| !m.is_ephemeral)
            .and_then(|m| m.storage_id.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitingJoin,
    AwaitingPeer,
    Established(RemotePeer),
    Closed,
}

/// What an incoming frame meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The handshake is done; send `reply` (the acceptor's `peer`) if there is one.
    Established {
        remote: RemotePeer,
        reply: Option<Message>,
    },
    /// A message for the document layer: request, sync, doc-unavailable, ephemeral, or
    /// remote heads gossip.
    Document(Message),
    /// The remote left or reported an error: close the connection.
    Closed { reason: String },
}

/// A frame that breaks the protocol: send `reply` (an `error` message) if there is one, then
/// close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub error: ProtocolError,
    pub reply: Option<Box<Message>>,
}

#[derive(Debug)]
pub struct Connection {
    local: LocalPeer,
    state: State,
}

impl Connection {
    /// The side that was connected to: it waits for the remote's `join`.
    pub fn accept(local: LocalPeer) -> Connection {
        Connection {
            local,
            state: State::AwaitingJoin,
        }
    }

    /// The side that connects: returns the `join` to send first.
    pub fn initiate(local: LocalPeer) -> (Connection, Message) {
        let join = Message::Join {
            sender_id: local.peer_id.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_string()],
            peer_metadata: Some(local.metadata.clone()),
        };
        (
            Connection {
                local,
                state: State::AwaitingPeer,
            },
            join,
        )
    }

    pub fn local(&self) -> &LocalPeer {
        &self.local
    }

    /// The remote, once the handshake is done.
    pub fn remote(&self) -> Option<&RemotePeer> {
        match &self.state {
            State::Established(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Reads one binary frame.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Incoming, Violation> {
        let message = match Message::decode(frame) {
            Ok(m) => m,
            Err(error) => return Err(self.violation(error)),
        };
        self.receive_message(message)
    }

    /// Handles one decoded message.
    pub fn receive_message(&mut self, message: Message) -> Result<Incoming, Violation> {
        match (&self.state, message) {
            (State::Closed, m) => Err(self.violation(ProtocolError::Unexpected {
                expected: "nothing on a closed connection",
                got: m.kind(),
            })),
            (
                State::AwaitingJoin,
                Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    peer_metadata,
                },
            ) => {
                if !supported_protocol_versions
                    .iter()
                    .any(|v| v == PROTOCOL_VERSION)
                {
                    let reply = self.error_to(&sender_id, "unsupported protocol version");
                    self.state = State::Closed;
                    return Err(Violation {
                        error: ProtocolError::UnsupportedVersion,
                        reply: Some(Box::new(reply)),
                    });
                }
                let remote = RemotePeer {
                    peer_id: sender_id,
                    metadata: peer_metadata,
                };
                let reply = Message::Peer {
                    sender_id: self.local.peer_id.clone(),
                    selected_protocol_version: PROTOCOL_VERSION.to_string(),
                    target_id: remote.peer_id.clone(),
                    peer_metadata: Some(self.local.metadata.clone()),
                };
                self.state = State::Established(remote.clone());
                Ok(Incoming::Established {
                    remote,
                    reply: Some(reply),
                })
            }
            (State::AwaitingJoin, m) => Err(self.violation(ProtocolError::Unexpected {
                expected: "a join message",
                got: m.kind(),
            })),
            (
                State::AwaitingPeer,
                Message::Peer {
                    sender_id,
                    selected_protocol_version,
                    target_id,
                    peer_metadata,
                },
            ) => {
                if selected_protocol_version != PROTOCOL_VERSION {
                    return Err(self.violation(ProtocolError::UnsupportedVersion));
                }
                if target_id != self.local.peer_id {
                    return Err(self.violation(ProtocolError::WrongTarget { message: "peer" }));
                }
                let remote = RemotePeer {
                    peer_id: sender_id,
                    metadata: peer_metadata,
                };
                self.state = State::Established(remote.clone());
                Ok(Incoming::Established {
                    remote,
                    reply: None,
                })
            }
            (State::AwaitingPeer, Message::Error { .. }) => {
                self.state = State::Closed;
                Ok(Incoming::Closed {
                    reason: "the server refused the handshake".into(),
                })
            }
            (State::AwaitingPeer, m) => Err(self.violation(ProtocolError::Unexpected {
                expected: "a peer message",
                got: m.kind(),
            })),
            (State::Established(_), m @ (Message::Join { .. } | Message::Peer { .. })) => Err(self
                .violation(ProtocolError::Unexpected {
                    expected: "no second handshake",
                    got: m.kind(),
                })),
            (State::Established(_), Message::Leave { .. }) => {
                self.state = State::Closed;
                Ok(Incoming::Closed {
                    reason: "the peer left".into(),
                })
            }
            (State::Established(_), Message::Error { .. }) => {
                self.state = State::Closed;
                Ok(Incoming::Closed {
                    reason: "the peer reported an error".into(),
                })
            }
            (State::Established(remote), m) => {
                // Ephemeral messages are relayed with their first sender's id; everything
                // else speaks for the peer that joined, to us.
                let from_remote = matches!(m, Message::Ephemeral { .. })
                    || m.sender_id() == Some(remote.peer_id.as_str());
                if !from_remote {
                    let error = ProtocolError::WrongSender {
                        message: m.kind(),
                        claimed: m.sender_id().unwrap_or_default().to_string(),
                        peer: remote.peer_id.clone(),
                    };
                    return Err(self.violation(error));
                }
                if m.target_id() != Some(self.local.peer_id.as_str()) {
                    return Err(self.violation(ProtocolError::WrongTarget { message: m.kind() }));
                }
                Ok(Incoming::Document(m))
            }
        }
    }

    /// An `error` message to send before closing.
    fn error_to(&self, target: &str, text: &str) -> Message {
        Message::Error {
            message: text.to_string(),
            sender_id: Some(self.local.peer_id.clone()),
            target_id: Some(target.to_string()),
        }
    }

    fn violation(&mut self, error: ProtocolError) -> Violation {
        let target = match &self.state {
            State::Established(r) => Some(r.peer_id.clone()),
            _ => None,
        };
        self.state = State::Closed;
        Violation {
            reply: Some(Box::new(Message::Error {
                message: error.to_string(),
                sender_id: Some(self.local.peer_id.clone()),
                target_id: target,
            })),
            error,
        }
    }
}
