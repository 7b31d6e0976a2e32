//! A frame from a peer, as the server's reader and the device client take it: decoded
//! strictly or refused with a reason, through the handshake state machine on both sides;
//! never a panic. A frame that decodes encodes back to one that decodes the same.
#![no_main]

use chartsync_core::protocol::{Connection, LocalPeer, Message, PeerMetadata};
use libfuzzer_sys::fuzz_target;

#[path = "../support.rs"]
mod chartsync_fuzz_support;

fn peer(id: &str) -> LocalPeer {
    LocalPeer {
        peer_id: id.into(),
        metadata: PeerMetadata {
            storage_id: Some(format!("{id}-storage")),
            is_ephemeral: false,
        },
    }
}

fuzz_target!(init: chartsync_fuzz_support::keep_caught_panics(), |data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("what encodes decodes");
        assert_eq!(again, m);
    }
    // The server's side: first frame of a connection, then the same frame once joined.
    let mut server = Connection::accept(peer("server"));
    let _ = server.receive(data);
    let mut joined = Connection::accept(peer("server"));
    let (_, join) = Connection::initiate(peer("tablet"));
    if joined.receive(&join.encode()).is_ok() {
        let _ = joined.receive(data);
    }
    // The device's side, waiting for the server's `peer`.
    let (mut device, _) = Connection::initiate(peer("tablet"));
    let _ = device.receive(data);
});
