//! What the end-to-end tests share: simulated tablets that speak the sync protocol over a
//! real WebSocket, a plain HTTP client, and the patients and entries the scenarios use.
//!
//! The server itself is started by `tests/common` (it needs `CARGO_BIN_EXE_e2e-server`,
//! which Cargo gives to the integration tests only).

use std::time::Duration;

#[path = "../../core/tests/common/text.rs"]
mod text;

use automerge::Automerge;
use chartsync_core::protocol::{
    Connection, DocSync, DocumentId, Incoming, LocalPeer, Message, PeerMetadata,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A tablet's end of a sync connection, handshake done.
pub struct Tablet {
    pub ws: Socket,
    pub conn: Connection,
    pub peer_id: String,
    /// The size of every frame `sync` received, in order.
    pub received: Vec<usize>,
}

/// How one document's sync ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides have everything.
    Synced,
    /// The server has not got it, or may not share it.
    Unavailable,
    /// The server sent `error` (with its text) and closed.
    Refused(String),
    /// The server told us what became of our changes (held for review, accepted, rejected).
    Notice(chartsync_core::protocol::ChartNotice),
}

/// Opens `/sync` with a bearer token; `Err(status)` if the server refuses the upgrade.
pub async fn connect(
    addr: &str,
    token: Option<&str>,
    peer_id: &str,
    storage: &str,
) -> Result<Tablet, u16> {
    connect_with(addr, token, peer_id, storage, None).await
}

/// As [`connect`], with the socket's receive buffer set to `receive_buffer` bytes: a device
/// on a slow link, whose kernel takes little of what the server sends before it reads.
pub async fn connect_with(
    addr: &str,
    token: Option<&str>,
    peer_id: &str,
    storage: &str,
    receive_buffer: Option<u32>,
) -> Result<Tablet, u16> {
    let mut request = format!("ws://{addr}/sync").into_client_request().unwrap();
    if let Some(t) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = match tokio_tungstenite::client_async(request, stream).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return Err(response.status().as_u16())
        }
        Err(e) => panic!("connecting: {e}"),
    };
    let (mut conn, join) = Connection::initiate(LocalPeer {
        peer_id: peer_id.to_string(),
        metadata: PeerMetadata {
            storage_id: Some(storage.to_string()),
            is_ephemeral: false,
        },
    });
    ws.send(WsMessage::Binary(join.encode().into()))
        .await
        .unwrap();
    let frame = next_binary(&mut ws).await.expect("no peer message");
    match conn.receive(&frame).unwrap() {
        Incoming::Established { .. } => {}
        other => panic!("handshake: {other:?}"),
    }
    Ok(Tablet {
        ws,
        conn,
        peer_id: peer_id.to_string(),
        received: Vec::new(),
    })
}

async fn next_binary(ws: &mut Socket) -> Option<Vec<u8>> {
    loop {
        match ws.next().await? {
            Ok(WsMessage::Binary(b)) => return Some(b.to_vec()),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

impl Tablet {
    /// Sends one message as it is and returns the server's next one (`None` if it closed, or
    /// said nothing for two seconds): for probing exactly what the server answers.
    pub async fn ask(&mut self, message: &Message) -> Option<Message> {
        self.ws
            .send(WsMessage::Binary(message.encode().into()))
            .await
            .ok()?;
        let frame = tokio::time::timeout(Duration::from_secs(2), next_binary(&mut self.ws))
            .await
            .ok()??;
        Message::decode(&frame).ok()
    }

    /// Syncs one document until neither side has anything to say: a quiet spell of 300 ms
    /// once the server has said something about it, of 3 s before (a busy debug server can
    /// take longer than 300 ms to load a large chart and make its first answer).
    pub async fn sync(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        state: &mut DocSync,
    ) -> Outcome {
        let server = self.conn.remote().unwrap().peer_id.clone();
        let mut answered = false;
        loop {
            if let Some(m) = state.generate(doc, &self.peer_id, &server) {
                if self
                    .ws
                    .send(WsMessage::Binary(m.encode().into()))
                    .await
                    .is_err()
                {
                    return Outcome::Refused("connection closed".into());
                }
            }
            let quiet = Duration::from_millis(if answered { 300 } else { 3_000 });
            let frame = match tokio::time::timeout(quiet, next_binary(&mut self.ws)).await {
                Err(_) => return Outcome::Synced,
                Ok(None) => return Outcome::Refused("connection closed".into()),
                Ok(Some(f)) => f,
            };
            self.received.push(frame.len());
            match self.conn.receive(&frame) {
                Ok(Incoming::Document(
                    Message::Sync {
                        document_id, data, ..
                    }
                    | Message::Request {
                        document_id, data, ..
                    },
                )) if document_id == id => {
                    answered = true;
                    let msg = state.decode(&data).unwrap();
                    state.receive(doc, msg).unwrap();
                }
                Ok(Incoming::Document(Message::DocUnavailable { document_id, .. }))
                    if document_id == id =>
                {
                    return Outcome::Unavailable
                }
                Ok(Incoming::Document(Message::Ephemeral {
                    document_id, data, ..
                })) if document_id == id => {
                    if let Some(notice) = chartsync_core::protocol::ChartNotice::decode(&data) {
                        return Outcome::Notice(notice);
                    }
                }
                Ok(Incoming::Closed { .. }) => {
                    let Message::Error { message, .. } = Message::decode(&frame).unwrap() else {
                        return Outcome::Refused("closed".into());
                    };
                    return Outcome::Refused(message);
                }
                Ok(_) => {}
                Err(v) => panic!("the server broke the protocol: {}", v.error),
            }
        }
    }
}

/// A plain HTTP GET; (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http("GET", addr, path, token, None)
}

/// A plain HTTP POST of a JSON body; (status, body).
pub fn http_post(addr: &str, path: &str, token: Option<&str>, json: &str) -> (u16, String) {
    http("POST", addr, path, token, Some(json))
}

/// A plain HTTP PUT of a JSON body; (status, body).
pub fn http_put(addr: &str, path: &str, token: Option<&str>, json: &str) -> (u16, String) {
    http("PUT", addr, path, token, Some(json))
}

fn http(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
        })
        .unwrap_or_else(|| "\r\n".into());
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n{body}"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: keep the JSON or text between the chunk sizes.
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body
    };
    (status, body)
}

/// 2026-11-27T20:00:00Z plus `minutes`.
pub fn at(minutes: i64) -> chartsync_core::chart::Timestamp {
    chartsync_core::chart::Timestamp::parse("2026-11-27T20:00:00Z")
        .unwrap()
        .plus_seconds(minutes * 60)
}

/// Patient `n` of a bench, no one real: the MRN given, family name `Family{n}`.
pub fn bench_patient(mrn: String, n: usize) -> chartsync_core::chart::NewPatient {
    chartsync_core::chart::NewPatient {
        mrn,
        family_name: format!("Family{n}"),
        given_names: "Sam".into(),
        birth_date: None,
        sex: None,
        address: None,
        phone: None,
    }
}

/// Ana Rivera, admitted to 4west bed 12A by the registration clerk him.jones.
pub fn admit() -> chartsync_core::chart::Chart {
    use chartsync_core::chart::*;
    admit_at(
        "MRN-0042",
        "4west",
        at(0),
        &Staff::new("him.jones", Role::Technician, "records-pc-1"),
    )
}

/// Ana Rivera under another MRN, admitted to `ward` bed 12A at `when` by `clerk`.
pub fn admit_at(
    mrn: &str,
    ward: &str,
    when: chartsync_core::chart::Timestamp,
    clerk: &chartsync_core::chart::Staff,
) -> chartsync_core::chart::Chart {
    use chartsync_core::chart::*;
    Chart::create(
        NewPatient {
            mrn: mrn.into(),
            family_name: "Rivera".into(),
            given_names: "Ana".into(),
            birth_date: Some("1957-03-14".into()),
            sex: Some(Sex::Female),
            address: None,
            phone: None,
        },
        NewEncounter {
            ward: ward.into(),
            bed: Some("12A".into()),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: Some("dr.okafor".into()),
        },
        clerk,
        when,
    )
    .unwrap()
}

/// Community-acquired pneumonia as the principal diagnosis, present on admission.
pub fn pneumonia() -> chartsync_core::chart::NewCoding {
    use chartsync_core::chart::*;
    NewCoding {
        code: CodeInput::new(chartsync_core::codes::CodeSystem::Icd10Cm, "J18.9"),
        sequence: CodingSequence::Principal,
        poa: Some(PresentOnAdmission::Yes),
        supporting_entries: vec![],
    }
}

/// A nursing note of about `chars` letters that deflate packs small (a handover pasted over
/// and over): past a bound on inflated bytes long before it is large on the wire.
pub fn compressible_note(chars: usize) -> chartsync_core::chart::NewEntry {
    use chartsync_core::chart::*;
    let line = "Handover, bed 12A: settled overnight. ";
    NewEntry::note(EntryKind::NursingNote, &line.repeat(chars / line.len() + 1))
}

/// A nursing note of `chars` letters that do not compress (a long handover, pasted).
pub fn long_note(chars: usize, seed: u64) -> chartsync_core::chart::NewEntry {
    use chartsync_core::chart::*;
    NewEntry {
        kind: EntryKind::NursingNote,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![],
        value: None,
        unit: None,
        body: text::incompressible_text(chars, seed),
    }
}

/// A night-shift heart-rate observation.
pub fn heart_rate(bpm: u32) -> chartsync_core::chart::NewEntry {
    use chartsync_core::chart::*;
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(
            chartsync_core::codes::CodeSystem::Loinc,
            "8867-4",
        )],
        value: Some(bpm.to_string()),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}

/// A tablet's own store (fast durability; compaction only when asked).
pub fn tablet_store(
    dir: &tempfile::TempDir,
    name: &str,
) -> std::sync::Arc<chartsync_core::store::ChartStore> {
    use chartsync_core::store::{ChartStore, Compaction, Durability, StoreOptions};
    std::sync::Arc::new(
        ChartStore::open(
            dir.path().join(format!("{name}.db")),
            StoreOptions {
                durability: Durability::Normal,
                compaction: Compaction::Manual,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    )
}

/// A bench's `main`: runs `bench` on a multi-threaded runtime under `cargo bench`, and does
/// nothing under `cargo test` (which builds benches and runs them without `--bench`).
pub fn bench_main<F: std::future::Future<Output = ()>>(bench: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}
