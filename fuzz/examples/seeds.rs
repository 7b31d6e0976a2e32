//! Writes the fuzz corpus's starting inputs: real frames, real sync messages from an exchange
//! of a chart, stored charts and a store file. Run once when the formats change:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus`.

use std::path::Path;

use automerge::sync::SyncDoc;
use chartsync_core::protocol::{Connection, DocSync, DocumentId, LocalPeer, Message, PeerMetadata};
use chartsync_core::store::{ChartStore, Compaction, StoreOptions};

#[path = "../support.rs"]
mod support;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("a corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: seeds <corpus directory>");
    let dir = Path::new(&dir);
    let mut chart = support::with_entries();
    let id = DocumentId::random();

    // Frames: a handshake, and each kind of message about a document.
    let peer = |id: &str| LocalPeer {
        peer_id: id.into(),
        metadata: PeerMetadata {
            storage_id: Some(format!("{id}-storage")),
            is_ephemeral: false,
        },
    };
    let (_, join) = Connection::initiate(peer("tablet-4west-02"));
    write(dir, "frame", "join", &join.encode());
    let mut server = Connection::accept(peer("chartsync-server"));
    if let Ok(chartsync_core::protocol::Incoming::Established {
        reply: Some(reply), ..
    }) = server.receive(&join.encode())
    {
        write(dir, "frame", "peer", &reply.encode());
    }

    // A whole exchange of the chart with a tablet that has nothing of it: every message each
    // way is a sync message seed, and a frame seed.
    let mut tablet = automerge::Automerge::new();
    let mut server_doc = chart.doc().clone();
    let (mut t, mut s) = (DocSync::new(id, None), DocSync::new(id, None));
    for round in 0..6 {
        if let Some(m) = t.generate(&tablet, "tablet", "server") {
            write(dir, "frame", &format!("up-{round}"), &m.encode());
            if let Message::Sync { data, .. } | Message::Request { data, .. } = &m {
                write(dir, "sync_message", &format!("up-{round}"), data);
                if let Ok(msg) = s.decode(data) {
                    let _ = s.receive(&mut server_doc, msg);
                }
            }
        }
        if let Some(m) = s.generate(&server_doc, "server", "tablet") {
            write(dir, "frame", &format!("down-{round}"), &m.encode());
            if let Message::Sync { data, .. } | Message::Request { data, .. } = &m {
                write(dir, "sync_message", &format!("down-{round}"), data);
                if let Ok(msg) = t.decode(data) {
                    let _ = t.receive(&mut tablet, msg);
                }
            }
        }
    }
    // A tablet's own new changes, as a sync message carrying them.
    let mut ahead = chart.fork();
    let nurse = chartsync_core::chart::Staff::new(
        "rn.park",
        chartsync_core::chart::Role::Nurse,
        "tablet-4west-02",
    );
    let _ = ahead.add_entry(
        &nurse,
        chartsync_core::chart::Timestamp::parse("2026-11-27T21:00:00Z").expect("a time"),
        chartsync_core::chart::NewEntry::note(
            chartsync_core::chart::EntryKind::NursingNote,
            "Comfortable.",
        ),
    );
    let mut message = chart
        .doc()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a message");
    message.changes = vec![ahead.save_after(&chart.doc().get_heads())].into();
    let new_changes = message.encode();
    write(dir, "sync_message", "new-changes", &new_changes);

    // A connection's frames (`server_session`: [document][kind][length u16 LE][bytes]):
    // the tablet's new changes to its ward's chart; its first message for a chart it has
    // nothing of, on its ward and on another; a new chart, whole.
    let frame = |doc: u8, kind: u8, bytes: &[u8]| {
        let len = (bytes.len().min(u16::MAX as usize) as u16).to_le_bytes();
        [[doc, kind, len[0], len[1]].as_slice(), bytes].concat()
    };
    let first = automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a first message")
        .encode();
    write(
        dir,
        "server_session",
        "new-changes",
        &frame(0, 0, &new_changes),
    );
    write(
        dir,
        "server_session",
        "asks-own-and-other",
        &[
            frame(0, 1, &first),
            frame(1, 1, &first),
            frame(3, 1, &first),
        ]
        .concat(),
    );
    let mut whole = automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a message");
    whole.heads = chart.doc().get_heads();
    whole.changes = vec![chart.save()].into();
    write(
        dir,
        "server_session",
        "new-chart",
        &[frame(2, 0, &first), frame(2, 0, &whole.encode())].concat(),
    );

    // Stored charts: a snapshot, and a snapshot with changes after it.
    let saved = chart.save();
    write(
        dir,
        "stored",
        "snapshot",
        &[[1u8].as_slice(), &saved].concat(),
    );
    let after = ahead.save_after(&chart.doc().get_heads());
    write(
        dir,
        "stored",
        "snapshot-and-changes",
        &[[1u8].as_slice(), &saved, &after].concat(),
    );
    // A store file with the chart in it.
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let path = tmp.path().join("charts.db");
    {
        let store = ChartStore::open(
            &path,
            StoreOptions {
                compaction: Compaction::Manual,
                ..StoreOptions::default()
            },
        )
        .expect("a store");
        store.create(chart.clone()).expect("stored");
        store.checkpoint().expect("folded");
    }
    write(
        dir,
        "stored",
        "store-file",
        &[[0u8].as_slice(), &std::fs::read(&path).expect("read")].concat(),
    );
}
