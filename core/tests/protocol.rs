//! The wire protocol: every message survives a round trip, frames from automerge-repo's
//! JavaScript encoder decode, bad frames are typed errors (never panics), the handshake holds
//! to the spec, and a tablet and the server converge through encoded frames across dropped
//! connections.

mod common;

use std::collections::BTreeMap;

use automerge::Automerge;
use chartsync_core::chart::*;
use chartsync_core::protocol::*;
use common::*;
use proptest::prelude::*;

fn id_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9-]{1,40}"
}

fn doc_id() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}

/// Proofs of authorship as an enrolled tablet sends them (the bytes need not verify here).
fn proofs() -> impl Strategy<Value = Option<Box<chartsync_core::trust::ProofBundle>>> {
    use chartsync_core::trust::{ChangeProof, ProofBundle, Serial};
    let proof = (
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<i64>(),
        prop::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(h, s, t, sig)| ChangeProof {
            hash: automerge::ChangeHash(h),
            serial: Serial(s),
            signed_at: t,
            signature: sig.try_into().unwrap(),
        });
    proptest::option::of(
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3),
            prop::collection::vec(proof, 0..4),
        )
            .prop_map(|(certs, proofs)| {
                Box::new(ProofBundle {
                    certs,
                    proofs,
                    grants: Vec::new(),
                })
            }),
    )
}

fn metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    proptest::option::of((proptest::option::of(id_text()), any::<bool>()).prop_map(
        |(storage_id, is_ephemeral)| PeerMetadata {
            storage_id,
            is_ephemeral,
        },
    ))
}

fn message() -> impl Strategy<Value = Message> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..200);
    let ids = || proptest::collection::vec(id_text(), 0..4);
    prop_oneof![
        (
            id_text(),
            proptest::collection::vec(id_text(), 1..3),
            metadata()
        )
            .prop_map(|(s, v, m)| {
                Message::Join {
                    sender_id: s,
                    supported_protocol_versions: v,
                    peer_metadata: m,
                }
            }),
        (id_text(), id_text(), id_text(), metadata()).prop_map(|(s, v, t, m)| Message::Peer {
            sender_id: s,
            selected_protocol_version: v,
            target_id: t,
            peer_metadata: m
        }),
        id_text().prop_map(|s| Message::Leave { sender_id: s }),
        (doc_id(), id_text(), id_text(), bytes.clone(), proofs()).prop_map(|(d, s, t, b, p)| {
            Message::Request {
                document_id: d,
                sender_id: s,
                target_id: t,
                data: b,
                proofs: p,
            }
        }),
        (doc_id(), id_text(), id_text(), bytes.clone(), proofs()).prop_map(|(d, s, t, b, p)| {
            Message::Sync {
                document_id: d,
                sender_id: s,
                target_id: t,
                data: b,
                proofs: p,
            }
        }),
        (doc_id(), id_text(), id_text()).prop_map(|(d, s, t)| Message::DocUnavailable {
            document_id: d,
            sender_id: s,
            target_id: t
        }),
        (
            doc_id(),
            id_text(),
            id_text(),
            any::<u64>(),
            id_text(),
            bytes
        )
            .prop_map(|(d, s, t, c, sess, b)| Message::Ephemeral {
                document_id: d,
                sender_id: s,
                target_id: t,
                // JavaScript numbers: exact up to 2^53.
                count: c % (1 << 53),
                session_id: sess,
                data: b
            }),
        (
            "[ -~]{0,60}",
            proptest::option::of(id_text()),
            proptest::option::of(id_text())
        )
            .prop_map(|(m, s, t)| Message::Error {
                message: m,
                sender_id: s,
                target_id: t
            }),
        (id_text(), id_text(), ids(), ids()).prop_map(|(s, t, a, r)| {
            Message::RemoteSubscriptionChange {
                sender_id: s,
                target_id: t,
                add: a,
                remove: r,
            }
        }),
        (
            doc_id(),
            id_text(),
            id_text(),
            proptest::collection::btree_map(id_text(), (ids(), 0u64..(1 << 53)), 0..3)
        )
            .prop_map(|(d, s, t, h)| Message::RemoteHeadsChanged {
                document_id: d,
                sender_id: s,
                target_id: t,
                new_heads: h
                    .into_iter()
                    .map(|(k, (heads, timestamp))| (k, RemoteHeads { heads, timestamp }))
                    .collect::<BTreeMap<_, _>>()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_survives_the_wire(m in message()) {
        prop_assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn random_bytes_are_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn every_cut_of_a_valid_frame_is_an_error(m in message(), cut in any::<prop::sample::Index>()) {
        let frame = m.encode();
        let at = cut.index(frame.len());
        prop_assert!(Message::decode(&frame[..at]).is_err());
        let mut longer = frame.clone();
        longer.push(0);
        prop_assert_eq!(Message::decode(&longer), Err(ProtocolError::TrailingBytes));
    }
}

/// A `join` as automerge-repo's JavaScript client encodes it (cbor-x: 16-bit map headers, and
/// `undefined` for a peer with no storage).
const JS_JOIN: &[u8] = &[
    0xb9, 0x00, 0x04, //
    0x64, b't', b'y', b'p', b'e', 0x64, b'j', b'o', b'i', b'n', //
    0x68, b's', b'e', b'n', b'd', b'e', b'r', b'I', b'd', //
    0x67, b'b', b'r', b'o', b'w', b's', b'e', b'r', //
    0x6c, b'p', b'e', b'e', b'r', b'M', b'e', b't', b'a', b'd', b'a', b't', b'a', //
    0xb9, 0x00, 0x02, //
    0x69, b's', b't', b'o', b'r', b'a', b'g', b'e', b'I', b'd', 0xf7, //
    0x6b, b'i', b's', b'E', b'p', b'h', b'e', b'm', b'e', b'r', b'a', b'l', 0xf5, //
    0x78, 0x19, b's', b'u', b'p', b'p', b'o', b'r', b't', b'e', b'd', b'P', b'r', b'o', b't', b'o',
    b'c', b'o', b'l', b'V', b'e', b'r', b's', b'i', b'o', b'n', b's', //
    0x81, 0x61, b'1',
];

#[test]
fn a_join_from_automerge_repos_javascript_client_decodes() {
    assert_eq!(
        Message::decode(JS_JOIN).unwrap(),
        Message::Join {
            sender_id: "browser".into(),
            supported_protocol_versions: vec!["1".into()],
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true
            }),
        }
    );
}

#[test]
fn a_timestamp_javascript_wrote_as_a_float_reads_as_milliseconds() {
    let m = Message::RemoteHeadsChanged {
        document_id: DocumentId::from_bytes([7; 16]),
        sender_id: "server".into(),
        target_id: "tablet".into(),
        new_heads: BTreeMap::from([(
            "storage-1".to_string(),
            RemoteHeads {
                heads: vec![],
                timestamp: 1_720_000_000_000,
            },
        )]),
    };
    let frame = m.encode();
    // JavaScript's encoder writes Date.now() as float64, and so do we, for JavaScript's sake.
    let float = [0xfb, 0x42, 0x79, 0x07, 0x7f, 0xd3, 0x00, 0x00, 0x00];
    assert!(frame.windows(float.len()).any(|w| w == float));
    assert_eq!(Message::decode(&frame).unwrap(), m);
}

#[test]
fn bad_frames_are_refused_with_a_reason() {
    let sync = Message::Sync {
        document_id: DocumentId::from_bytes([1; 16]),
        sender_id: "a".into(),
        target_id: "b".into(),
        data: vec![1, 2, 3],
        proofs: None,
    };
    // An oversized frame is refused before it is read.
    let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        Message::decode(&huge),
        Err(ProtocolError::TooLarge { .. })
    ));
    // A claimed 2^32-element array (automerge-repo's own test of a hostile frame).
    let hostile = [0x9b, 0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(Message::decode(&hostile), Err(ProtocolError::NotAMap));
    // Unknown type, with the type's text cleaned before it reaches a log.
    let mut unknown = sync.encode();
    let at = unknown.windows(4).position(|w| w == b"sync").unwrap();
    unknown[at..at + 4].copy_from_slice(b"s\ny!");
    assert_eq!(
        Message::decode(&unknown),
        Err(ProtocolError::UnknownType("s?y?".into()))
    );
    // A sync without its data.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(4).unwrap();
    e.str("type").unwrap().str("sync").unwrap();
    e.str("documentId")
        .unwrap()
        .str(&DocumentId::from_bytes([1; 16]).to_string())
        .unwrap();
    e.str("senderId").unwrap().str("a").unwrap();
    e.str("targetId").unwrap().str("b").unwrap();
    assert_eq!(
        Message::decode(e.writer()),
        Err(ProtocolError::MissingField {
            message: "sync",
            field: "data"
        })
    );
    // Data as an array of numbers rather than bytes.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(2).unwrap();
    e.str("type").unwrap().str("sync").unwrap();
    e.str("data").unwrap().array(1).unwrap().u8(1).unwrap();
    assert!(matches!(
        Message::decode(e.writer()),
        Err(ProtocolError::WrongType { field: "data", .. })
    ));
    // A document id with a bad checksum.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(2).unwrap();
    e.str("type").unwrap().str("doc-unavailable").unwrap();
    e.str("documentId")
        .unwrap()
        .str("2j9knpCseyhnK8izDmLpGP5WMdZR")
        .unwrap();
    assert_eq!(
        Message::decode(e.writer()),
        Err(ProtocolError::BadDocumentId)
    );
}

fn peer(id: &str, storage: Option<&str>) -> LocalPeer {
    LocalPeer {
        peer_id: id.into(),
        metadata: PeerMetadata {
            storage_id: storage.map(String::from),
            is_ephemeral: storage.is_none(),
        },
    }
}

#[test]
fn the_handshake_follows_the_spec() {
    let (mut tablet, join) = Connection::initiate(peer("tablet-4west-01", Some("store-1")));
    let mut server = Connection::accept(peer("server", Some("server-store")));
    let Incoming::Established { remote, reply } = server.receive(&join.encode()).unwrap() else {
        panic!("the server did not accept the join");
    };
    assert_eq!(remote.peer_id, "tablet-4west-01");
    assert_eq!(remote.storage_id(), Some("store-1"));
    let Incoming::Established {
        remote,
        reply: none,
    } = tablet.receive(&reply.unwrap().encode()).unwrap()
    else {
        panic!("the tablet did not accept the peer message");
    };
    assert_eq!((remote.peer_id.as_str(), none), ("server", None));

    // Document messages must come from the peer that joined, addressed to us.
    let sync = |from: &str, to: &str| Message::Sync {
        document_id: DocumentId::from_bytes([3; 16]),
        sender_id: from.into(),
        target_id: to.into(),
        data: vec![0x42],
        proofs: None,
    };
    assert!(matches!(
        server.receive(&sync("tablet-4west-01", "server").encode()),
        Ok(Incoming::Document(_))
    ));
    let spoofed = server
        .receive(&sync("tablet-icu-07", "server").encode())
        .unwrap_err();
    assert!(matches!(spoofed.error, ProtocolError::WrongSender { .. }));
    assert!(matches!(
        spoofed.reply.as_deref(),
        Some(Message::Error { .. })
    ));
    assert!(server.is_closed(), "a violation closes the connection");
}

#[test]
fn a_peer_without_version_1_is_told_so_and_dropped() {
    let mut server = Connection::accept(peer("server", None));
    let join = Message::Join {
        sender_id: "old-client".into(),
        supported_protocol_versions: vec!["0".into()],
        peer_metadata: None,
    };
    let v = server.receive(&join.encode()).unwrap_err();
    assert_eq!(v.error, ProtocolError::UnsupportedVersion);
    assert_eq!(
        v.reply.as_deref(),
        Some(&Message::Error {
            message: "unsupported protocol version".into(),
            sender_id: Some("server".into()),
            target_id: Some("old-client".into()),
        })
    );
}

#[test]
fn anything_before_the_join_or_a_second_join_ends_the_connection() {
    let mut server = Connection::accept(peer("server", None));
    let sync = Message::Sync {
        document_id: DocumentId::from_bytes([3; 16]),
        sender_id: "x".into(),
        target_id: "server".into(),
        data: vec![],
        proofs: None,
    };
    let v = server.receive(&sync.encode()).unwrap_err();
    assert!(matches!(
        v.error,
        ProtocolError::Unexpected {
            expected: "a join message",
            got: "sync"
        }
    ));

    let mut server = Connection::accept(peer("server", None));
    let (_, join) = Connection::initiate(peer("tablet", None));
    server.receive(&join.encode()).unwrap();
    let again = server.receive(&join.encode()).unwrap_err();
    assert!(matches!(
        again.error,
        ProtocolError::Unexpected { got: "join", .. }
    ));
}

/// Sends every message `from` has for `to` through encoded frames until both are quiet.
/// Returns the bytes sent each way.
fn exchange(
    tablet: (&mut Automerge, &mut DocSync),
    server: (&mut Automerge, &mut DocSync),
) -> (usize, usize) {
    let (up, down) = exchange_frames(tablet, server, 20);
    (up.iter().sum(), down.iter().sum())
}

/// As [`exchange`], for up to `rounds` rounds; the size of every frame sent each way.
fn exchange_frames(
    tablet: (&mut Automerge, &mut DocSync),
    server: (&mut Automerge, &mut DocSync),
    rounds: usize,
) -> (Vec<usize>, Vec<usize>) {
    let (t_doc, t_sync) = tablet;
    let (s_doc, s_sync) = server;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let a = t_sync.generate(t_doc, "tablet", "server");
        if let Some(m) = &a {
            let frame = m.encode();
            up.push(frame.len());
            let (Message::Sync { data, .. } | Message::Request { data, .. }) =
                Message::decode(&frame).unwrap()
            else {
                panic!("not a sync message")
            };
            let msg = s_sync.decode(&data).unwrap();
            s_sync.receive(s_doc, msg).unwrap();
        }
        let b = s_sync.generate(s_doc, "server", "tablet");
        if let Some(m) = &b {
            let frame = m.encode();
            down.push(frame.len());
            let (Message::Sync { data, .. } | Message::Request { data, .. }) =
                Message::decode(&frame).unwrap()
            else {
                panic!("not a sync message")
            };
            let msg = t_sync.decode(&data).unwrap();
            t_sync.receive(t_doc, msg).unwrap();
        }
        if a.is_none() && b.is_none() {
            break;
        }
    }
    (up, down)
}

#[test]
fn a_tablet_that_lacks_a_chart_requests_it_and_receives_it_whole() {
    let mut chart = admitted();
    chart
        .add_entry(&night_nurse(), t(5), heart_rate(70))
        .unwrap();
    let id = DocumentId::random();
    let mut server = chart.doc().clone();
    let mut tablet = Automerge::new();
    let (mut s, mut t) = (DocSync::new(id, None), DocSync::new(id, None));
    let first = t.generate(&tablet, "tablet", "server").unwrap();
    assert_eq!(
        first.kind(),
        "request",
        "asking for a chart the tablet lacks"
    );
    exchange((&mut tablet, &mut t), (&mut server, &mut s));
    assert_eq!(tablet.get_heads(), server.get_heads());
    let received = Chart::from_automerge(tablet).unwrap();
    assert_eq!(received.view().unwrap().entries.len(), 1);
}

/// A chart larger than one outgoing message reaches a tablet that has nothing of it, in
/// several messages, each within the limit (plus one change's worth at most), and whole.
/// The admitted chart with `n` nursing notes, the `k`th reading `text(k)`.
fn with_notes(n: u32, text: impl Fn(u32) -> String) -> Chart {
    let mut chart = admitted();
    for k in 0..n {
        chart
            .add_entry(
                &night_nurse(),
                t(k as i64),
                NewEntry::note(EntryKind::NursingNote, &text(k)),
            )
            .unwrap();
    }
    chart
}

#[test]
fn a_chart_larger_than_a_message_reaches_a_new_tablet_in_several() {
    let chart = with_notes(40, |n| incompressible_text(1500, u64::from(n) + 1));
    let largest_change = chart
        .doc()
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().len())
        .max()
        .unwrap();
    const LIMIT: usize = 8 * 1024;
    assert!(
        chart.doc().save().len() > 4 * LIMIT,
        "the chart outgrows a message"
    );
    let id = DocumentId::random();
    let mut server = chart.doc().clone();
    let mut tablet = Automerge::new();
    let mut s = DocSync::new(id, None).with_message_limit(LIMIT);
    let mut t = DocSync::new(id, None);
    let (_, down) = exchange_frames((&mut tablet, &mut t), (&mut server, &mut s), 200);
    assert_eq!(tablet.get_heads(), server.get_heads());
    let received = Chart::from_automerge(tablet).unwrap();
    assert_eq!(received.view().unwrap().entries.len(), 40);
    assert!(down.len() >= 4, "{down:?}");
    let envelope = 1024;
    assert!(
        down.iter().all(|&f| f <= LIMIT + largest_change + envelope),
        "{down:?}"
    );
}

/// A chart whose whole history is small on the wire but inflates past what the peer takes in
/// one message (long notes that deflate well) reaches it in several messages, each within
/// the peer's bounds: automerge would send it as one document chunk the peer must refuse.
#[test]
fn a_chart_past_the_peers_bounds_once_inflated_reaches_it_in_messages_within_them() {
    let chart = with_notes(6, |_| {
        "Handover: settled overnight, obs stable. ".repeat(1500)
    });
    let bounds = chartsync_core::protocol::ContentBounds {
        changes_per_message: 100_000,
        inflated_bytes_per_change: 256 * 1024,
        inflated_bytes_per_message: 256 * 1024,
    };
    let whole = chart.doc().save();
    assert!(whole.len() < 64 * 1024, "{} bytes on the wire", whole.len());
    assert!(
        chartsync_core::protocol::contents::check([&whole[..]], &bounds).is_err(),
        "the whole chart, inflated, is past the bounds"
    );
    let id = DocumentId::random();
    let mut server = chart.doc().clone();
    let mut tablet = Automerge::new();
    let mut s = DocSync::new(id, None).with_bounds(bounds);
    // The tablet refuses (and `exchange_frames` fails on) any message past the bounds.
    let mut t = DocSync::new(id, None).with_bounds(bounds);
    let (_, down) = exchange_frames((&mut tablet, &mut t), (&mut server, &mut s), 200);
    assert_eq!(tablet.get_heads(), server.get_heads());
    let received = Chart::from_automerge(tablet).unwrap();
    assert_eq!(received.view().unwrap().entries.len(), 6);
    assert!(down.len() >= 2, "one message, past the bounds: {down:?}");
}

/// A device told by the server that it takes less (`ChartNotice::TooLarge`) keeps what it
/// sends within that, but still takes from the server what the defaults allow: a change
/// the server stored under larger bounds still reaches it.
#[test]
fn what_a_device_sends_follows_the_servers_bounds_and_what_it_takes_stays_the_default() {
    let small = ContentBounds {
        changes_per_message: 100_000,
        inflated_bytes_per_change: 256 * 1024,
        inflated_bytes_per_message: 256 * 1024,
    };
    let chart = with_notes(6, |_| {
        "Handover: settled overnight, obs stable. ".repeat(1500)
    });
    let id = DocumentId::random();
    // The device sends its chart to a server that takes `small`.
    let mut device = chart.doc().clone();
    let mut server = Automerge::new();
    let mut d = DocSync::new(id, None).with_peer_bounds(small);
    let mut s = DocSync::new(id, None).with_bounds(small);
    exchange_frames((&mut server, &mut s), (&mut device, &mut d), 200);
    assert_eq!(server.get_heads(), device.get_heads());
    // The server's whole chart, past `small` inflated, reaches a device with those peer
    // bounds as the one document automerge sends: it takes what the defaults allow
    // (`exchange_frames` fails on a message its receiver refuses).
    let mut other = Automerge::new();
    let mut o = DocSync::new(id, None).with_peer_bounds(small);
    let mut whole = DocSync::new(id, None);
    let (_, down) = exchange_frames((&mut other, &mut o), (&mut server, &mut whole), 200);
    assert_eq!(other.get_heads(), server.get_heads());
    assert!(down.len() <= 3, "{down:?}");
}

#[derive(Debug, Clone)]
enum Step {
    TabletWrites,
    ServerWrites,
    Exchange,
    /// The connection drops: both sides start again from what they stored.
    Reconnect,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Offline writes on both sides and dropped connections in any order: once the network
    /// holds long enough, tablet and server hold the same chart, and no write is lost.
    #[test]
    fn tablet_and_server_converge_across_dropped_connections(
        steps in proptest::collection::vec(prop_oneof![
            3 => Just(Step::TabletWrites),
            2 => Just(Step::ServerWrites),
            2 => Just(Step::Exchange),
            1 => Just(Step::Reconnect),
        ], 1..30)
    ) {
        let mut chart = admitted();
        let id = DocumentId::random();
        let mut server = chart.doc().clone();
        let mut tablet = Chart::load(&chart.save()).unwrap();
        let (mut s, mut ts) = (DocSync::new(id, None), DocSync::new(id, None));
        // What each side stored of its sync state at the end of its last exchange.
        let (mut s_saved, mut t_saved) = (s.state().clone(), ts.state().clone());
        let mut written = 0;
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::TabletWrites => {
                    tablet.add_entry(&night_nurse(), t(n as i64), heart_rate(60 + n as u32)).unwrap();
                    written += 1;
                }
                Step::ServerWrites => {
                    let mut c = Chart::from_automerge(server.clone()).unwrap();
                    c.add_entry(&physician(), t(n as i64), NewEntry::note(EntryKind::ProgressNote, "Seen.")).unwrap();
                    server = c.doc().clone();
                    written += 1;
                }
                Step::Exchange => {
                    let mut t_doc = tablet.doc().clone();
                    exchange((&mut t_doc, &mut ts), (&mut server, &mut s));
                    tablet = Chart::from_automerge(t_doc).unwrap();
                    s_saved = s.state().clone();
                    t_saved = ts.state().clone();
                }
                Step::Reconnect => {
                    // Stored state survives a reconnect (automerge keeps only the shared heads).
                    s = DocSync::new(id, Some(automerge::sync::State::decode(&s_saved.encode()).unwrap()));
                    ts = DocSync::new(id, Some(automerge::sync::State::decode(&t_saved.encode()).unwrap()));
                }
            }
        }
        let mut t_doc = tablet.doc().clone();
        exchange((&mut t_doc, &mut ts), (&mut server, &mut s));
        prop_assert_eq!(t_doc.get_heads(), server.get_heads());
        let entries = Chart::from_automerge(server).unwrap().view().unwrap().entries.len();
        prop_assert_eq!(entries, written);
    }
}

/// Changes that arrive before a change they depend on wait, and the missing one is asked for
/// by name; the rest come in once it arrives. Past the waiting limit the oldest are forgotten,
/// and the receiver is told so (the server then ends the connection, so the peer sends them
/// again: it never sends a change twice on one connection).
#[test]
fn changes_ahead_of_their_dependency_wait_and_it_is_asked_for_by_name() {
    let id = DocumentId::random();
    let base = admitted();
    let mut tablet = base.fork();
    let before = tablet.heads();
    for bpm in 60..66 {
        tablet
            .add_entry(&night_nurse(), t(bpm as i64), heart_rate(bpm))
            .unwrap();
    }
    let changes = tablet.doc().get_changes(&before);
    let first = changes[0].hash();
    // A message carrying every change but the first, as a bloom filter's mistake sends it.
    let later: Vec<u8> = changes[1..]
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    let message = |bytes: Vec<u8>| {
        let mut state = automerge::sync::State::new();
        let mut m =
            automerge::sync::SyncDoc::generate_sync_message(tablet.doc(), &mut state).unwrap();
        m.changes = vec![bytes].into();
        m
    };
    let server = base.fork();
    let mut sync = DocSync::new(id, None);
    let admitted = sync.admit(server.doc(), message(later.clone()));
    assert!(sync_changes(&admitted).is_empty(), "nothing can apply yet");
    assert_eq!(sync.waiting(), 5);
    let asked = sync.generate(server.doc(), "server", "tablet").unwrap();
    let Message::Sync { data, .. } = asked else {
        panic!("{asked:?}")
    };
    let need = automerge::sync::Message::decode(&data).unwrap().need;
    assert!(
        need.contains(&first),
        "the missing change is asked for by name"
    );
    assert!(!sync.forgot_waiting());

    // The first arrives: all six come in together, in order.
    let admitted = sync.admit(server.doc(), message(changes[0].raw_bytes().to_vec()));
    assert_eq!(sync_changes(&admitted).len(), 6);
    assert_eq!(sync.waiting(), 0);

    // A small waiting limit: the oldest are forgotten, and the receiver is told once.
    let mut small = DocSync::new(id, None).with_waiting_limit(later.len() / 2);
    small.admit(server.doc(), message(later));
    assert!(small.waiting() < 5);
    assert!(small.forgot_waiting());
    assert!(!small.forgot_waiting(), "told once");
}

/// A message carrying a long history backwards (each change before the one it depends on)
/// is admitted whole, in an order each change's dependencies come before it: admission
/// releases each change as its last dependency arrives, rather than scanning the rest again.
#[test]
fn a_long_history_sent_backwards_is_admitted_whole_and_in_dependency_order() {
    let id = DocumentId::random();
    let base = admitted();
    let mut tablet = base.fork();
    let before = tablet.heads();
    for n in 0..3_000i64 {
        tablet
            .add_entry(&night_nurse(), t(n % 600), heart_rate(60 + (n % 40) as u32))
            .unwrap();
    }
    let changes = tablet.doc().get_changes(&before);
    let backwards: Vec<u8> = changes
        .iter()
        .rev()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    let mut state = automerge::sync::State::new();
    let mut m = automerge::sync::SyncDoc::generate_sync_message(tablet.doc(), &mut state).unwrap();
    m.changes = vec![backwards].into();
    let server = base.fork();
    let mut sync = DocSync::new(id, None);
    let admitted = sync.admit(server.doc(), m);
    assert_eq!(sync.waiting(), 0);
    let order = sync_changes(&admitted);
    assert_eq!(order.len(), 3_000);
    let position: std::collections::HashMap<_, _> =
        order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    for c in &changes {
        for d in c.deps() {
            if let Some(dep) = position.get(d) {
                assert!(dep < &position[&c.hash()], "a change before its dependency");
            }
        }
    }
}

/// The single changes a sync message carries.
fn sync_changes(m: &automerge::sync::Message) -> Vec<automerge::ChangeHash> {
    chartsync_core::protocol::sync::changes_in(m)
        .into_iter()
        .map(|(h, _)| h)
        .collect()
}

/// Offers `data` (a sync message's bytes) as the server does, to a fork of a chart: refused
/// as corrupt, with neither the fork nor the chart changed, and no panic anywhere.
fn refused_as_corrupt(data: &[u8]) {
    let chart = admitted();
    let id = DocumentId::random();
    let mut sync = DocSync::new(id, None);
    let message = sync.decode(data).expect("the envelope decodes");
    let message = sync.admit(chart.doc(), message);
    let changes = chartsync_core::protocol::sync::changes_of(&message);
    let mut fork = chart.fork();
    assert!(matches!(
        fork.load_incremental(&changes),
        Err(ChartError::Corrupt(_))
    ));
    // automerge's own sync skips what it cannot parse: nothing of it is applied.
    let mut doc = chart.doc().clone();
    let _ = sync.receive(&mut doc, message);
    assert_eq!(doc.get_heads(), chart.doc().get_heads());
}

/// Found by fuzzing (`scripts/fuzz.sh`, target sync_message): a sync message carrying a
/// change whose operation ids overflow. automerge 0.12 panics parsing it (`OpId::new`
/// unwraps); chartsync's parsing answers with an error instead.
#[test]
fn a_change_that_makes_automerge_panic_is_refused_as_corrupt() {
    refused_as_corrupt(include_bytes!(
        "regressions/sync-message-op-id-overflow.bin"
    ));
}

/// Found by fuzzing too: a change that parses but names an actor automerge's own table lacks
/// when it is applied (`lookup_actor(..).unwrap()` in automerge 0.12). Applying it is refused
/// as corrupt.
#[test]
fn a_change_that_makes_automerge_panic_when_applied_is_refused_as_corrupt() {
    refused_as_corrupt(include_bytes!("regressions/sync-message-unknown-actor.bin"));
}

/// A sync message whose `have` carries the Bloom filter `bloom` (its bytes as automerge
/// writes them: entries, bits per entry, probes, then the bits).
fn with_bloom(bloom: &[u8]) -> Vec<u8> {
    use automerge::sync::{BloomFilter, Have, State, SyncDoc};
    let mut m = Automerge::new()
        .generate_sync_message(&mut State::new())
        .expect("a message");
    m.have = vec![Have {
        last_sync: Vec::new(),
        bloom: BloomFilter::try_from(bloom).expect("automerge parses it"),
    }];
    m.encode()
}

/// Found by fuzzing the server's session (`scripts/fuzz.sh`, target server_session): a
/// Bloom filter that claims an entry but has no bits parses, and automerge 0.12 divides by
/// its size in bits when it consults it, which panics; one that claims billions of probes
/// reserves room for them all. The server consults a device's filter to choose what to
/// send, and a tablet the server's, so either would take a connection (or, across the FFI,
/// an app) down. Such a message is refused as undecodable, and an honest filter is not.
#[test]
fn a_sync_message_whose_bloom_filter_cannot_be_consulted_is_refused() {
    let sync = DocSync::new(DocumentId::random(), None);
    let refused =
        |data: &[u8]| matches!(sync.decode(data), Err(ProtocolError::BadSyncMessage { .. }));
    // One entry, no bits per entry, seven probes: no bits at all.
    assert!(refused(&with_bloom(&[1, 0, 7])));
    // One entry, ten bits per entry, 4,000,000,000 probes.
    let mut probes = vec![1, 10];
    leb128::write::unsigned(&mut probes, 4_000_000_000).unwrap();
    probes.extend([0xff, 0xff]);
    assert!(refused(&with_bloom(&probes)));
    // No entries (an empty filter), and automerge's own filter of two changes: read.
    assert!(!refused(&with_bloom(&[])));
    let honest = automerge::sync::BloomFilter::from_hashes(
        [
            automerge::ChangeHash([1; 32]),
            automerge::ChangeHash([2; 32]),
        ]
        .iter(),
    );
    assert!(!refused(&with_bloom(&honest.to_bytes())));
}
