//! The server's side of a sync connection fed a device's frames: after a real `join`, any
//! sequence of `sync`, `request` and `doc-unavailable` frames with any sync-message bytes,
//! about a chart on the token's ward, a chart on another ward, an id the store has not got,
//! and the ward's census; the store's commits are delivered back to the connection as the
//! server delivers them. Through `chartsync_server::ServerConnection`, which runs every rule
//! a socket's connection runs (routing, bounds, checks, holds, the holding area, audit), over
//! a real store. Never a panic; nothing of the other ward's chart ever goes out (no message
//! about it carries one of its changes, and each decodes); every chart the store keeps still
//! loads.
//!
//! An input is frames, each `[document][kind][length: u16 LE][bytes]` (document and kind are
//! taken modulo 4 and 3). Every input starts from the same store, copied afresh.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chartsync_core::chart::{ChartId, Role, Staff, Timestamp};
use chartsync_core::protocol::{Connection, LocalPeer, Message, PeerMetadata};
use chartsync_core::store::ChartStore;
use chartsync_server::{Access, InProcessServer, Limits};
use libfuzzer_sys::fuzz_target;

#[path = "../support.rs"]
mod chartsync_fuzz_support;

const OWN: [u8; 16] = [1; 16];
const OTHER: [u8; 16] = [2; 16];
const NEW: [u8; 16] = [3; 16];

/// A server's data directory with a chart on 4west and one on icu, made once.
fn template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("chartsync-fuzz-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let server = InProcessServer::open(&dir, Limits::default()).expect("a server");
        let store = server.store();
        store
            .insert(
                ChartId::from_bytes(OWN),
                chartsync_fuzz_support::with_entries(),
            )
            .expect("the own ward's chart");
        let mut other = chartsync_fuzz_support::admitted();
        let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
        let at = Timestamp::parse("2026-11-27T20:30:00Z").expect("a time");
        other.transfer(&clerk, at, "icu", None).expect("a transfer");
        store
            .insert(ChartId::from_bytes(OTHER), other)
            .expect("the other ward's chart");
        store.checkpoint().expect("folded");
        server.close();
        dir
    })
}

/// A fresh copy of the template's files.
fn fresh() -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(template())
        .expect("the template")
        .flatten()
    {
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(entry.file_name())).expect("a copy");
        }
    }
    copy
}

fn frames(mut data: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 && out.len() < 16 {
        let (doc, kind) = (data[0] % 4, data[1] % 3);
        let len = u16::from_le_bytes([data[2], data[3]]) as usize;
        let end = (4 + len).min(data.len());
        out.push((doc, kind, &data[4..end]));
        data = &data[end..];
    }
    out
}

/// What is wrong with a message the server sent about the other ward's chart, if anything:
/// it must carry none of that chart's changes. (It may carry changes the device sent itself,
/// which a new chart under an id the device may not see is taken as, exactly as for an id
/// that does not exist.)
fn leak(m: &Message, stored: &[automerge::ChangeHash]) -> Option<String> {
    match m {
        Message::Sync { data, .. } | Message::Request { data, .. } => {
            match automerge::sync::Message::decode(data) {
                Err(_) => Some(format!("a {} that does not decode", m.kind())),
                Ok(s) => chartsync_core::protocol::sync::changes_in(&s)
                    .iter()
                    .any(|(h, _)| stored.contains(h))
                    .then(|| format!("a {} carrying the stored chart's changes", m.kind())),
            }
        }
        _ => None,
    }
}

fuzz_target!(init: chartsync_fuzz_support::keep_caught_panics(), |data: &[u8]| {
    let dir = fresh();
    let Ok(mut server) = InProcessServer::open(dir.path(), Limits::default()) else {
        panic!("the copied store does not open");
    };
    let access = Access {
        user: "rn.park".into(),
        role: Role::Nurse,
        wards: vec!["4west".into()],
        expires_at: u64::MAX / 2,
        device: None,
        quarantined: false,
    };
    let mut conn = server.accept(access).expect("a connection");
    let (_, join) = Connection::initiate(LocalPeer {
        peer_id: "tablet-4west-02".into(),
        metadata: PeerMetadata {
            storage_id: Some("tablet-storage".into()),
            is_ephemeral: false,
        },
    });
    let mut sent = conn.receive(&join.encode()).send;
    let ids = [
        ChartId::from_bytes(OWN),
        ChartId::from_bytes(OTHER),
        ChartId::from_bytes(NEW),
        chartsync_core::census::census_id("4west"),
    ];
    for (doc, kind, bytes) in frames(data) {
        let document_id = ids[doc as usize];
        let (sender_id, target_id) = ("tablet-4west-02".to_string(), "chartsync-server".to_string());
        let m = match kind {
            0 => Message::Sync { document_id, sender_id, target_id, data: bytes.to_vec(), proofs: None },
            1 => Message::Request { document_id, sender_id, target_id, data: bytes.to_vec(), proofs: None },
            _ => Message::DocUnavailable { document_id, sender_id, target_id },
        };
        let effects = conn.receive(&m.encode());
        sent.extend(effects.send);
        for changed in server.commits() {
            sent.extend(conn.changed(&changed).send);
        }
        if effects.close || conn.is_closed() {
            break;
        }
    }
    conn.finish();
    let store: &ChartStore = server.store();
    let stored: Vec<automerge::ChangeHash> = store
        .read(ids[1], |c| c.doc().get_changes(&[]).iter().map(|c| c.hash()).collect())
        .expect("the other ward's chart");
    for m in &sent {
        if m.document_id() == Some(ids[1]) {
            if let Some(what) = leak(m, &stored) {
                panic!("the other ward's chart went out: {what}");
            }
        }
    }
    for c in store.list(&Default::default()).expect("a listing") {
        store.read(c.id, |chart| chart.view().map(|_| ())).expect("readable").expect("a chart");
    }
});
