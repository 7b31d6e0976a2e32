//! `GET /sync`: one WebSocket per device, speaking automerge-repo's protocol (core's
//! `protocol`), with the hospital's rules on top:
//! - a chart the token's wards do not cover is answered exactly as an id the store has not
//!   got, after the same work (`unseen`, `missing`);
//! - every incoming change is checked against a copy of the chart as it stood (the chart's
//!   rules, the role's sections, the author) before the store keeps it; changes that fail
//!   are kept in the
//!   holding area for a records supervisor, the device is told which chart and why (a
//!   `chartsync/held` notice, core's `protocol::notice`), and the connection and every other
//!   chart on it keep syncing;
//! - a change is durable in the store before the reply that acknowledges it;
//! - a device may send a chart the server has not got, on a ward its token covers;
//! - sync state is kept per (device storage, chart), so a reconnect sends only what changed;
//! - commits from other devices are pushed as they land.

//!
//! Each document a device mentions gets a worker of its own (a task with a queue), so a huge
//! chart being loaded, checked or sent does not hold up the other charts on the connection;
//! one document's messages are still handled strictly in order. The connection's reader only
//! checks the envelope and routes; one writer sends what every worker produces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use automerge::{Automerge, ChangeHash};
use axum::extract::ws::{Message as WsMessage, WebSocket};
use chartsync_core::chart::validate::{
    check_new_writer, check_writer, validate_changes, validate_new_changes, NewChanges, Violation,
};
use chartsync_core::chart::{
    write_access, Chart, ChartError, EncounterStatus, EntryStatus, Role, Timestamp, WriteAccess,
};
use chartsync_core::protocol::sync::{changes_of, unknown_changes};
use chartsync_core::protocol::{
    ChartNotice, Connection, DocSync, DocumentId, HoldReason, Incoming, LeftReason, LocalPeer,
    Message, RemotePeer,
};
use chartsync_core::store::{
    Actor, AuditAction, ChartChanged, ChartStore, Held, HoldQuota, HoldStatus, NamedFile, NewHold,
    PartStored, Proven, PurgeRecord, StoreError,
};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, watch};

use crate::auth::Access;
use crate::proofs::{Verifier, Writer};

/// Frames waiting for the socket, from all of a connection's documents.
const OUTGOING_QUEUE: usize = 256;
/// Messages waiting for one document's worker. automerge-repo waits for an answer before it
/// sends more about a document, so this fills only when a device floods one document.
const DOCUMENT_QUEUE: usize = 64;
/// How long one frame may wait for a device that has stopped reading before the connection
/// is given up (its workers then finish and save their sync state).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What every connection shares.
pub struct Hub {
    pub store: Arc<ChartStore>,
    pub local: LocalPeer,
    /// Every commit to the store, from its change feed.
    pub changes: broadcast::Sender<ChartChanged>,
    /// Set when the server is stopping: connections say goodbye and save their state.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub censuses: crate::census::Censuses,
    /// How many connections are open; the server waits for none before it stops.
    pub sessions: watch::Sender<usize>,
    /// How much the holding area keeps per device and in total.
    pub hold_quota: HoldQuota,
    /// A records supervisor's decision on held changes, for the devices syncing the chart.
    /// (chart, the device that sent the changes, the notice).
    pub decisions: broadcast::Sender<(DocumentId, String, ChartNotice)>,
    /// Something was revoked (over REST): tablets connected now are told at once.
    pub revocations: broadcast::Sender<()>,
    /// How long after a transfer or discharge changes written before it are still taken.
    pub move_window: std::time::Duration,
    /// How long a tablet keeps a chart read-only after it left the tablet's wards (from the
    /// transfer or discharge as charted), before removing it (`--purge-after`).
    pub purge_after: std::time::Duration,
    /// Whether a chart leaves a tablet only once a backup of the store holds what the tablet
    /// wrote on it (`ChartStore::last_backup`): off with `--purge-without-backup`, and on
    /// PostgreSQL, whose backups are the database's own.
    pub purge_needs_backup: bool,
    /// After a restore from a backup: the changes the server had accepted before, which the
    /// tablets send again and are taken back without the checks (they passed them once).
    pub recovery: Option<Arc<std::collections::HashSet<ChangeHash>>>,
    /// The certificate issuer's keys, for tablets' proofs of authorship.
    pub trust: Arc<crate::directory::Trust>,
    /// What one connection may cost (RELIABILITY.md).
    pub limits: Limits,
    /// Open sync connections by sign-in (user, or tablet id).
    pub open_by: Mutex<HashMap<String, usize>>,
    /// Writes denials' audit rows, off every reply path.
    pub denial_audit: DenialAudit,
}

impl Hub {
    /// What every connection shares, with the defaults for what the command line does not
    /// set: `feeds` are the store's commits as connections hear them and the ward censuses.
    pub fn new(
        store: Arc<ChartStore>,
        storage_id: String,
        trust: Arc<crate::directory::Trust>,
        feeds: (broadcast::Sender<ChartChanged>, crate::census::Censuses),
        shutdown: watch::Receiver<bool>,
        recovery: Option<Arc<std::collections::HashSet<ChangeHash>>>,
        limits: Limits,
    ) -> std::io::Result<Hub> {
        let (changes, censuses) = feeds;
        Ok(Hub {
            local: LocalPeer {
                peer_id: "chartsync-server".into(),
                metadata: chartsync_core::protocol::PeerMetadata {
                    storage_id: Some(storage_id),
                    is_ephemeral: false,
                },
            },
            changes,
            shutdown,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            censuses,
            hold_quota: HoldQuota::default(),
            decisions: broadcast::channel(256).0,
            move_window: chartsync_core::chart::MOVE_WINDOW,
            purge_after: DEFAULT_PURGE_AFTER,
            purge_needs_backup: store.path().is_some(),
            recovery,
            sessions: watch::Sender::new(0),
            trust,
            revocations: broadcast::channel(16).0,
            limits,
            open_by: Mutex::new(HashMap::new()),
            denial_audit: DenialAudit::start(store.clone())?,
            store,
        })
    }
}

/// How long a tablet keeps a chart that left its wards, read-only, before removing it: a shift
/// and a handover after the move, for a nurse to look back at what she charted.
pub const DEFAULT_PURGE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long a denial's audit row waits before it is written, with any that came meanwhile.
const DENIAL_AUDIT_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// One denial's audit row: who, which document (none for a count), what.
type DenialRow = (Actor, Option<DocumentId>, String);

/// Denials' audit rows, written in order by one thread of their own: handing a row over
/// costs a reply the same few nanoseconds whether or not it is audited, so the answer for
/// a chart the peer may not see leaves as soon as the answer for one that does not exist.
pub struct DenialAudit {
    rows: Mutex<Option<std::sync::mpsc::Sender<DenialRow>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DenialAudit {
    pub fn start(store: Arc<ChartStore>) -> std::io::Result<DenialAudit> {
        let (rows, queue) = std::sync::mpsc::channel::<DenialRow>();
        let writer = std::thread::Builder::new()
            .name("denial-audit".into())
            .spawn(move || {
                // Rows are written a moment after they come, together: not while the
                // answer that caused them is still being made.
                while let Ok(row) = queue.recv() {
                    std::thread::sleep(DENIAL_AUDIT_DELAY);
                    for (actor, chart, detail) in std::iter::once(row).chain(queue.try_iter()) {
                        if let Some(chart) = chart {
                            tracing::info!(user = %actor.user, %chart, "denied: {detail}");
                        }
                        if let Err(e) =
                            store.record_audit(&actor, AuditAction::Deny, chart, Some(&detail))
                        {
                            tracing::error!(error = %e, "could not write the audit trail");
                        }
                    }
                }
            })?;
        Ok(DenialAudit {
            rows: Mutex::new(Some(rows)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn send(&self, row: DenialRow) {
        if let Some(rows) = lock(&self.rows).as_ref() {
            let _ = rows.send(row);
        }
    }

    /// Writes every row handed over so far, then stops taking more: when the server stops.
    pub fn finish(&self) {
        drop(lock(&self.rows).take());
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

/// One of a sign-in's bounded connection slots, given back when dropped.
pub struct ConnectionSlot {
    hub: Arc<Hub>,
    user: String,
}

impl ConnectionSlot {
    /// A slot for `user`, if they hold fewer connections than the bound.
    pub fn take(hub: &Arc<Hub>, user: &str) -> Option<ConnectionSlot> {
        let mut open = lock(&hub.open_by);
        let n = open.entry(user.to_string()).or_insert(0);
        if *n >= hub.limits.connections_per_user {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            hub: hub.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.hub.open_by);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Bounds on one connection, each a `serve` option.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Documents one connection may name; past it the connection is closed.
    pub documents_per_connection: usize,
    /// Requests for documents the connection may not see, per `denial_window`; past it the
    /// connection is closed.
    pub denials_per_window: u32,
    pub denial_window: std::time::Duration,
    /// Sync connections one sign-in may hold open at once.
    pub connections_per_user: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle: std::time::Duration,
    /// The peer's `join` must come within this.
    pub handshake: std::time::Duration,
    /// The WebSocket read buffer a connection starts with.
    pub read_buffer_bytes: usize,
    /// Charts one connection may be sending at once that are not yet whole.
    pub pending_per_connection: usize,
    /// What one sync message may carry: changes, and bytes once inflated.
    pub content: chartsync_core::protocol::ContentBounds,
    /// Bytes one connection may have waiting in each direction (`QueueBudget`).
    pub queued_bytes: usize,
    /// Bytes of changes one outgoing sync message carries at most (`DocSync::with_message_limit`).
    pub outgoing_message_bytes: usize,
}

impl Default for Limits {
    /// A ward's tablet names a few hundred charts; a device that names ten thousand, or asks
    /// for fifty it may not see in ten seconds, is not charting.
    fn default() -> Self {
        Limits {
            documents_per_connection: 10_000,
            denials_per_window: 50,
            denial_window: std::time::Duration::from_secs(10),
            connections_per_user: 16,
            idle: std::time::Duration::from_secs(600),
            handshake: std::time::Duration::from_secs(10),
            read_buffer_bytes: 4 * 1024,
            pending_per_connection: 64,
            content: chartsync_core::protocol::ContentBounds::default(),
            queued_bytes: 32 * 1024 * 1024,
            outgoing_message_bytes: chartsync_core::protocol::sync::MAX_OUTGOING_CHANGES_BYTES,
        }
    }
}

/// A connection's requests for documents it may not see: the first of each window is
/// audited with its chart, the rest counted into one row when the window ends.
#[derive(Default)]
struct Denials {
    window_started: Option<std::time::Instant>,
    /// Counted towards the bound in this window.
    in_window: u32,
    /// Whether this window's first denial was audited with its chart.
    audited: bool,
    /// Counted and not yet audited.
    unaudited: u32,
}

/// What handling one event produced: frames to send, and whether to close afterwards.
#[derive(Default)]
struct Output {
    send: Vec<Message>,
    close: bool,
}

impl Output {
    fn send(m: Message) -> Output {
        Output {
            send: vec![m],
            close: false,
        }
    }
}

/// A connection's bytes waiting in one direction (received and not yet handled, or made and
/// not yet sent), bounded by `Limits::queued_bytes`: past it, the reader stops reading (the
/// device's TCP window fills and it waits) or the documents' workers wait to send. Control
/// frames (errors, notices of the connection) are not counted: they are small and few.
#[derive(Clone)]
struct QueueBudget {
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Bytes counted against a budget until dropped (the frame handled, or sent).
struct Queued {
    _permit: tokio::sync::OwnedSemaphorePermit,
    bytes: usize,
    budget: QueueBudget,
}

impl QueueBudget {
    fn new(limit: usize, metrics: Arc<crate::metrics::Metrics>) -> QueueBudget {
        let limit = limit.clamp(1, u32::MAX as usize);
        QueueBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
            metrics,
        }
    }

    /// Waits for room for `bytes` (a frame larger than the whole budget waits for all of it).
    async fn take(&self, bytes: usize) -> Option<Queued> {
        let bytes = bytes.clamp(1, self.limit);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .ok()?;
        self.metrics.queued_bytes.inc_by(bytes as i64);
        self.metrics
            .note_queued(self.limit - self.permits.available_permits());
        Some(Queued {
            _permit: permit,
            bytes,
            budget: self.clone(),
        })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget.metrics.queued_bytes.dec_by(self.bytes as i64);
    }
}

/// About how many bytes `m` takes on the wire: what a budget counts.
fn wire_size(m: &Message) -> usize {
    const ENVELOPE: usize = 256;
    match m {
        Message::Sync { data, .. }
        | Message::Request { data, .. }
        | Message::Ephemeral { data, .. } => data.len() + ENVELOPE,
        _ => ENVELOPE,
    }
}

/// What a document's worker is sent, with what it counts against the incoming budget.
/// Boxed, as [`Out`] is: a queue's first 32 slots are allocated when it is made, for every
/// document a connection opens.
type Queue = Box<(Event, Option<Queued>)>;

/// What goes to the connection's writer.
///
/// Messages are boxed: tokio's channel allocates its slots 32 at a time when it is made, and
/// with a message in place every idle connection would hold 5 KiB of empty slots.
enum Out {
    Frame(Box<Message>),
    /// A document's frame, counted against the connection's outgoing budget until sent.
    Counted(Box<Message>, Option<Queued>),
    /// A WebSocket ping: a live peer answers, which keeps the connection from going idle.
    Ping,
    /// Send a close frame and stop.
    Close,
}

impl Out {
    fn frame(m: Message) -> Out {
        Out::Frame(Box::new(m))
    }
}

enum Doc {
    /// A chart in the store.
    Chart(DocSync),
    /// A chart that left the device's wards (or, for ward nurses, was discharged): the device
    /// may still send what it wrote before (`chart::access`), and is told the chart left once
    /// the server has it all; nothing of the chart goes back to it.
    Departed(DocSync),
    /// A chart whose changes from this device are held for review: nothing more is taken from
    /// the device about this chart on this connection (a sync would only ask again for what
    /// is held), until a decision or a new connection; other people's changes are still
    /// pushed to it, asking for nothing (`DocSync::generate_push`).
    Held(Option<DocSync>),
    /// A ward census, which devices read and never write.
    Census(DocSync),
    /// A chart the device is sending that the store has not got yet. It takes one of the
    /// connection's slots once it holds changes still waiting for others (`sync_new`).
    Pending {
        sync: DocSync,
        doc: Box<Automerge>,
        slot: Option<PendingSlot>,
    },
}

/// One of a connection's bounded slots for charts it is still sending, given back when the
/// chart is stored, refused or dropped.
struct PendingSlot(Arc<Peer>);

impl PendingSlot {
    fn take(peer: &Arc<Peer>) -> Option<PendingSlot> {
        let limit = peer.hub.limits.pending_per_connection;
        let taken = peer
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| PendingSlot(peer.clone()))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a document's worker is told.
enum Event {
    /// `request` or `sync` from the device.
    Sync { data: Vec<u8>, request: bool },
    /// The device has not got the document either.
    Unavailable,
    /// The document changed in the store (another device, or the census keeper).
    Changed,
    /// A records supervisor decided on held changes of this chart.
    Decided(ChartNotice),
    /// The device removed the chart from its store, and says so (`ChartNotice::Purged`).
    Purged(chartsync_core::store::PurgedChart),
    /// The device asks for a part of a file the chart names (`ChartNotice::AttachmentWanted`).
    AttachmentWanted { hash: String, part: u32 },
    /// After a restore: a part of a file the server asked the device to send back.
    AttachmentPart {
        hash: String,
        part: u32,
        data: Vec<u8>,
    },
    /// After a restore: the device has not got a file the server asked it for.
    AttachmentUnavailable { hash: String },
}

/// A connection after its handshake: who is at the other end.
struct Peer {
    hub: Arc<Hub>,
    access: Access,
    remote: RemotePeer,
    /// Set when the connection is being closed for a violation: workers stop taking input.
    closing: AtomicBool,
    /// Notices (ephemeral messages) carry a session id and a count that rises with each.
    session_id: String,
    notices: AtomicU64,
    /// An enrolled tablet's connection: the proofs it sent, and the certificates it named.
    verifier: Option<Mutex<Verifier>>,
    denials: Mutex<Denials>,
    /// Charts this connection is sending that are not yet whole.
    pending: std::sync::atomic::AtomicUsize,
    /// The peer's id as logs and the audit trail show it: any text a peer chose, made
    /// printable and short.
    label: String,
}

impl Peer {
    /// Audits, off the reply path, what the connection asked for and may not see.
    fn audit_denial(&self, chart: Option<DocumentId>, detail: String) {
        let actor = Actor {
            user: self.access.user.clone(),
            role: self.access.role.token().to_string(),
            device: self.label.clone(),
        };
        self.hub.denial_audit.send((actor, chart, detail));
    }

    /// Writes the denials counted and not yet audited, as one row.
    fn flush_denials(&self, ended: &str) {
        let unaudited = std::mem::take(&mut lock(&self.denials).unaudited);
        if unaudited > 0 {
            self.audit_denial(
                None,
                format!("{unaudited} more requests for documents this token may not see ({ended})"),
            );
        }
    }
}

/// Changes a check refused: what the holding area keeps.
struct Refusal {
    reason: HoldReason,
    summary: String,
    changes: Vec<(ChangeHash, Vec<u8>)>,
    /// Whose key signed them, when a tablet's proof verified that much.
    signer: Option<Writer>,
    /// From a tablet, when no signature verified: the author the changes claim (user, role).
    /// The hold is filed under them, unverified, so a supervisor can accept it as theirs.
    claimed: Option<(String, Role)>,
}

impl Refusal {
    /// Everything a revoked tablet hands over (its session is a quarantine) is held for a
    /// records supervisor, whenever it was written: filed under the first person whose
    /// proof verified, as any tablet's hold is.
    fn quarantined(
        runs: &[(Writer, Vec<(ChangeHash, Vec<u8>)>)],
        changes: Vec<(ChangeHash, Vec<u8>)>,
    ) -> Refusal {
        Refusal {
            signer: runs
                .iter()
                .map(|(w, _)| w)
                .find(|w| w.serial.is_some())
                .cloned(),
            ..Refusal::new(HoldReason::Revoked, "sent by a revoked tablet", changes)
        }
    }

    fn new(
        reason: HoldReason,
        summary: impl Into<String>,
        changes: Vec<(ChangeHash, Vec<u8>)>,
    ) -> Refusal {
        Refusal {
            reason,
            summary: summary.into(),
            changes,
            signer: None,
            claimed: None,
        }
    }
}

/// One document on one connection.
struct Worker {
    peer: Arc<Peer>,
    id: DocumentId,
    doc: Option<Doc>,
    /// The device asked for it while it was unavailable: offered when it appears.
    asked: bool,
    /// When its sync state was last saved (or the worker started): see [`SAVE_STATE_EVERY`].
    state_saved: std::time::Instant,
    /// A change could not be pushed: the store did not answer (a database restarting, failing
    /// over). Tried again shortly, so that a device waiting on the server hears of it.
    push_failed: bool,
    /// Scanned documents' files this connection was sent of this chart: each audited once.
    files_sent: std::collections::HashSet<String>,
    /// After a restore: files of this chart the server lacks and asked the device to send
    /// back, each once a connection; and the chart's heads when it last looked for them.
    files_asked: std::collections::HashSet<String>,
    files_checked: Option<Vec<ChangeHash>>,
}

/// Whether a store error is the database being away for a while (restarting, failing over),
/// rather than something about the chart that trying again would not change.
fn store_unavailable(e: &chartsync_core::store::StoreError) -> bool {
    use chartsync_core::store::StoreError;
    matches!(e, StoreError::Database(_) | StoreError::Io(_))
}

/// How long after a failed push it is tried again.
const PUSH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often, at most, a document's sync state is saved when an exchange completes; it is
/// always saved when the connection ends. A sync state only shortens the device's next
/// exchange (one lost in a crash costs a longer one, never data), and saving it at every
/// completed exchange was a write for every change delivered to every device: a tenth of the
/// server's work in a reconnect storm (BENCHMARKS.md, "Side by side").
const SAVE_STATE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts an open connection until dropped. Made before the upgrade completes, so a server
/// that is stopping waits for a connection it has accepted but not yet started.
pub struct Live(Arc<Hub>);

impl Live {
    pub fn new(hub: &Arc<Hub>) -> Live {
        hub.sessions.send_modify(|n| *n += 1);
        Live(hub.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.sessions.send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub async fn serve_socket(
    socket: WebSocket,
    hub: Arc<Hub>,
    access: Access,
    live: (Live, ConnectionSlot),
) {
    let _live = live;
    let (tx, mut rx) = socket.split();
    let metrics = hub.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    let (out, frames) = mpsc::channel(OUTGOING_QUEUE);
    let mut writer = tokio::spawn(write_frames(tx, frames, metrics.clone()));
    let incoming = QueueBudget::new(hub.limits.queued_bytes, metrics.clone());
    let outgoing = QueueBudget::new(hub.limits.queued_bytes, metrics.clone());
    let mut writer_done = false;
    let mut feed = hub.changes.subscribe();
    let mut decisions = hub.decisions.subscribe();
    let mut revocations = hub.revocations.subscribe();
    let mut shutdown = hub.shutdown.clone();
    // The session lasts no longer than its token.
    let expiry = tokio::time::sleep(access.remaining());
    tokio::pin!(expiry);
    // The peer's `join` within the handshake time; after that, some frame (a ping will do)
    // within the idle time.
    let quiet = tokio::time::sleep(hub.limits.handshake);
    tokio::pin!(quiet);
    // Pings at a third of the idle time: a live peer's pongs keep it open.
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + hub.limits.idle / 3,
        hub.limits.idle / 3,
    );
    let mut conn = Connection::accept(hub.local.clone());
    let mut peer: Option<Arc<Peer>> = None;
    let mut workers: HashMap<DocumentId, mpsc::Sender<Queue>> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    loop {
        // The document a frame is about, and what its worker is told.
        let (id, event) = tokio::select! {
            frame = rx.next() => {
                quiet.as_mut().reset(tokio::time::Instant::now() + if peer.is_some() { hub.limits.idle } else { hub.limits.handshake });
                match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    metrics.messages_received.inc();
                    metrics.bytes_received.inc_by(bytes.len() as u64);
                    match route_frame(&mut conn, &mut peer, &hub, &access, &bytes) {
                        Routed::Reply(replies) => {
                            for m in replies {
                                let _ = out.send(Out::frame(m)).await;
                            }
                            continue;
                        }
                        Routed::Established(replies) => {
                            for m in replies {
                                let _ = out.send(Out::frame(m)).await;
                            }
                            quiet.as_mut().reset(tokio::time::Instant::now() + hub.limits.idle);
                            // A tablet hears at once which of its people were revoked.
                            if let Some(p) = &peer {
                                if let Some(m) = revoked_notice(p).await {
                                    let _ = out.send(Out::frame(m)).await;
                                }
                            }
                            continue;
                        }
                        Routed::Close(last) => {
                            for m in last {
                                let _ = out.send(Out::frame(m)).await;
                            }
                            let _ = out.send(Out::Close).await;
                            break;
                        }
                        Routed::Doc(id, event) => (id, event),
                    }
                }
                Some(Ok(WsMessage::Text(_))) => {
                    close_for_violation(&peer);
                    let text = "text frames are not part of the protocol";
                    let _ = out.send(Out::frame(connection_error(&hub, text, conn.remote()))).await;
                    let _ = out.send(Out::Close).await;
                    break;
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue, // ping and pong: answered by axum
            }},
            _ = ping.tick(), if peer.is_some() => {
                let _ = out.send(Out::Ping).await;
                continue;
            }
            _ = &mut quiet => {
                let text = if peer.is_some() {
                    "the connection was idle too long"
                } else {
                    "no join within the handshake time"
                };
                tracing::info!(user = %access.user, "{text}; disconnecting");
                metrics.closed_at_bounds.inc();
                close_for_violation(&peer);
                let _ = out.send(Out::frame(connection_error(&hub, text, conn.remote()))).await;
                let _ = out.send(Out::Close).await;
                break;
            }
            event = feed.recv() => match event {
                // A worker busy with a huge chart must not hold up the reader: a change event
                // is dropped when its queue is full, since what is queued will answer with the
                // chart as it then stands.
                Ok(changed) => {
                    if let Some(worker) = workers.get(&changed.id) {
                        if let Err(mpsc::error::TrySendError::Closed(_)) =
                            worker.try_send(Box::new((Event::Changed, None)))
                        {
                            break; // the worker is gone: see below
                        }
                    }
                    continue;
                }
                // Missed some: tell every document; automerge sends only what is new.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for worker in workers.values() {
                        let _ = worker.try_send(Box::new((Event::Changed, None)));
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            decided = decisions.recv() => match decided {
                // Only to the device that sent the changes, about a document it syncs on this
                // connection; otherwise it hears the outcome when it next sends the chart.
                Ok((id, device, notice))
                    if workers.contains_key(&id)
                        && peer.as_ref().is_some_and(|p| p.label == device) =>
                {
                    (id, Event::Decided(notice))
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            revoked = revocations.recv() => {
                if matches!(revoked, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
                if let Some(p) = &peer {
                    if let Some(m) = revoked_notice(p).await {
                        let _ = out.send(Out::frame(m)).await;
                    }
                }
                continue;
            }
            _ = shutdown.changed() => {
                let _ = out.send(Out::Close).await;
                break;
            }
            _ = &mut expiry => {
                // Nothing more is taken under it, queued or not.
                close_for_violation(&peer);
                let text = "the token has expired";
                let _ = out.send(Out::frame(connection_error(&hub, text, conn.remote()))).await;
                let _ = out.send(Out::Close).await;
                break;
            }
            // The socket failed, or a worker closed the connection.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let Some(peer) = &peer else { continue };
        if let Some(last) = too_many_documents(peer, workers.contains_key(&id), workers.len()) {
            for m in last {
                let _ = out.send(Out::frame(m)).await;
            }
            let _ = out.send(Out::Close).await;
            break;
        }
        let worker = workers.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(DOCUMENT_QUEUE);
            let worker = Worker {
                peer: peer.clone(),
                id,
                doc: None,
                asked: false,
                state_saved: std::time::Instant::now(),
                push_failed: false,
                files_sent: Default::default(),
                files_asked: Default::default(),
                files_checked: None,
            };
            running.spawn(worker.run(rx, out.clone(), outgoing.clone()));
            tx
        });
        // What the device sent counts against the incoming budget until it is handled: when
        // the budget is spent, the reader waits here and reads nothing more.
        let received = match &event {
            Event::Sync { data, .. } | Event::AttachmentPart { data, .. } => {
                incoming.take(data.len()).await
            }
            _ => None,
        };
        // A worker stops only to close the connection (or if it panicked): either way the
        // device must not be left waiting on a document nobody handles.
        if worker.send(Box::new((event, received))).await.is_err() {
            break;
        }
    }
    // Workers finish what they were given and save their sync state.
    drop(workers);
    while let Some(ended) = running.join_next().await {
        if let Err(e) = ended {
            tracing::error!(user = %access.user, error = %e, "a document worker failed");
        }
    }
    if let Some(p) = &peer {
        p.flush_denials("the connection ended");
    }
    drop(out);
    if !writer_done {
        let _ = writer.await;
    }
    metrics.connections.dec();
    // What the connection's documents took goes back to the system, not only to the
    // allocator's free lists (glibc keeps freed memory otherwise).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One device's sync connection with no socket, no task and no timer: frames in, frames out,
/// under every rule of a socket's connection (`serve_socket` routes with the same functions,
/// and its workers handle with the same `Worker`), each event handled to the end before the
/// next. The caller is the network and the clock: it delivers frames, the store's commits
/// (`changed`), supervisors' decisions, and the token's expiry, in an order it chooses. The
/// deterministic simulation (`tests/tests/simulation.rs`) drives the server through it.
pub struct ServerConnection {
    hub: Arc<Hub>,
    access: Access,
    conn: Connection,
    peer: Option<Arc<Peer>>,
    workers: HashMap<DocumentId, Worker>,
    closed: bool,
    _slot: ConnectionSlot,
}

/// What a [`ServerConnection`] does after an event: send these frames, in order, then close
/// if `close`.
#[derive(Debug, Default)]
pub struct Effects {
    pub send: Vec<Message>,
    pub close: bool,
}

impl Effects {
    fn closing(send: Vec<Message>) -> Effects {
        Effects { send, close: true }
    }
}

impl ServerConnection {
    /// A connection for `access`; `None` when its sign-in holds as many as it may
    /// (`Limits::connections_per_user`), as a socket's upgrade is refused then.
    pub fn accept(hub: &Arc<Hub>, access: Access) -> Option<ServerConnection> {
        let slot = ConnectionSlot::take(hub, &access.user)?;
        Some(ServerConnection {
            hub: hub.clone(),
            access,
            conn: Connection::accept(hub.local.clone()),
            peer: None,
            workers: HashMap::new(),
            closed: false,
            _slot: slot,
        })
    }

    /// Whether the connection has closed (nothing more is taken).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A frame from the device.
    pub fn receive(&mut self, frame: &[u8]) -> Effects {
        if self.closed {
            return Effects::default();
        }
        let routed = route_frame(
            &mut self.conn,
            &mut self.peer,
            &self.hub,
            &self.access,
            frame,
        );
        let effects = match routed {
            Routed::Reply(send) => Effects { send, close: false },
            Routed::Established(mut send) => {
                if let Some(m) = self.peer.as_deref().and_then(revoked_now) {
                    send.push(m);
                }
                Effects { send, close: false }
            }
            Routed::Close(send) => Effects::closing(send),
            Routed::Doc(id, event) => self.to_worker(id, event),
        };
        self.closed |= effects.close;
        effects
    }

    /// A commit to the store (from any connection, the census keeper, or the records office).
    pub fn changed(&mut self, changed: &ChartChanged) -> Effects {
        if self.closed || !self.workers.contains_key(&changed.id) {
            return Effects::default();
        }
        let effects = self.to_worker(changed.id, Event::Changed);
        self.closed |= effects.close;
        effects
    }

    /// A records supervisor's decision on changes `device` sent of `chart`.
    pub fn decided(&mut self, chart: DocumentId, device: &str, notice: ChartNotice) -> Effects {
        let ours = self.peer.as_ref().is_some_and(|p| p.label == device);
        if self.closed || !ours || !self.workers.contains_key(&chart) {
            return Effects::default();
        }
        let effects = self.to_worker(chart, Event::Decided(notice));
        self.closed |= effects.close;
        effects
    }

    /// The token expired: nothing more is taken under it.
    pub fn expire(&mut self) -> Effects {
        if self.closed {
            return Effects::default();
        }
        close_for_violation(&self.peer);
        self.closed = true;
        let text = "the token has expired";
        Effects::closing(vec![connection_error(&self.hub, text, self.conn.remote())])
    }

    /// The connection ended (either side, or the network): every document saves its sync
    /// state, and denials not yet audited are.
    pub fn finish(mut self) {
        for worker in self.workers.values_mut() {
            worker.finish();
        }
        if let Some(p) = &self.peer {
            p.flush_denials("the connection ended");
        }
    }

    fn to_worker(&mut self, id: DocumentId, event: Event) -> Effects {
        let Some(peer) = &self.peer else {
            return Effects::default();
        };
        let known = self.workers.contains_key(&id);
        if let Some(last) = too_many_documents(peer, known, self.workers.len()) {
            return Effects::closing(last);
        }
        let worker = self.workers.entry(id).or_insert_with(|| Worker {
            peer: peer.clone(),
            id,
            doc: None,
            asked: false,
            state_saved: std::time::Instant::now(),
            push_failed: false,
            files_sent: Default::default(),
            files_asked: Default::default(),
            files_checked: None,
        });
        match worker.take(event) {
            None => Effects::closing(Vec::new()),
            Some(Output { send, close }) => Effects { send, close },
        }
    }
}

/// What one frame from the device comes to before any document's worker sees it.
enum Routed {
    /// Nothing for a worker; these go to the device.
    Reply(Vec<Message>),
    /// The handshake is done (`peer` is set); these go to the device.
    Established(Vec<Message>),
    /// For a document's worker.
    Doc(DocumentId, Event),
    /// These go to the device, then the connection closes.
    Close(Vec<Message>),
}

/// The connection's own part of a frame: the handshake, the envelope and the proofs it
/// carries. The socket's reader and [`ServerConnection`] both route with it.
fn route_frame(
    conn: &mut Connection,
    peer: &mut Option<Arc<Peer>>,
    hub: &Arc<Hub>,
    access: &Access,
    bytes: &[u8],
) -> Routed {
    match conn.receive(bytes) {
        Err(v) => {
            tracing::warn!(user = %access.user, error = %v.error, "protocol violation; disconnecting");
            close_for_violation(peer);
            Routed::Close(v.reply.map(|m| *m).into_iter().collect())
        }
        Ok(Incoming::Established { remote, reply }) => {
            let label = printable(&remote.peer_id);
            tracing::info!(user = %access.user, role = %access.role, peer = %label, "device connected");
            *peer = Some(Arc::new(Peer {
                hub: hub.clone(),
                access: access.clone(),
                remote,
                closing: AtomicBool::new(false),
                session_id: chartsync_core::seeded::uuid_v4().simple().to_string(),
                notices: AtomicU64::new(0),
                verifier: access
                    .device
                    .map(|d| Mutex::new(Verifier::new(d, hub.trust.clone()))),
                denials: Mutex::new(Denials::default()),
                pending: std::sync::atomic::AtomicUsize::new(0),
                label,
            }));
            Routed::Established(reply.into_iter().collect())
        }
        Ok(Incoming::Closed { reason }) => {
            tracing::info!(user = %access.user, %reason, "device disconnected");
            Routed::Close(Vec::new())
        }
        Ok(Incoming::Document(m)) => {
            let request = matches!(m, Message::Request { .. });
            let (id, event, proofs) = match m {
                Message::Request {
                    document_id,
                    data,
                    proofs,
                    ..
                }
                | Message::Sync {
                    document_id,
                    data,
                    proofs,
                    ..
                } => (document_id, Event::Sync { data, request }, proofs),
                Message::DocUnavailable { document_id, .. } => {
                    (document_id, Event::Unavailable, None)
                }
                // A device's report that it removed a chart; any other ephemeral message
                // (an app's presence) is not for the server.
                Message::Ephemeral {
                    document_id, data, ..
                } => match ChartNotice::decode(&data) {
                    Some(ChartNotice::Purged { reason, heads, at }) => {
                        let purged = chartsync_core::store::PurgedChart {
                            chart: document_id,
                            reason,
                            heads,
                            at,
                            reported: false,
                        };
                        (document_id, Event::Purged(purged), None)
                    }
                    Some(ChartNotice::AttachmentWanted { hash, part }) => {
                        (document_id, Event::AttachmentWanted { hash, part }, None)
                    }
                    Some(ChartNotice::AttachmentPart { hash, part, data }) => (
                        document_id,
                        Event::AttachmentPart { hash, part, data },
                        None,
                    ),
                    Some(ChartNotice::AttachmentUnavailable { hash, .. }) => {
                        (document_id, Event::AttachmentUnavailable { hash }, None)
                    }
                    _ => return Routed::Reply(Vec::new()),
                },
                // Presence and remote-heads gossip are not used by chartsync's devices.
                _ => return Routed::Reply(Vec::new()),
            };
            if take_proofs(peer, id, proofs) {
                return Routed::Doc(id, event);
            }
            let text = "too many proofs waiting for their changes";
            Routed::Close(vec![connection_error(hub, text, conn.remote())])
        }
    }
}

/// An error about the connection as a whole.
fn connection_error(hub: &Hub, text: &str, remote: Option<&RemotePeer>) -> Message {
    Message::Error {
        message: text.to_string(),
        sender_id: Some(hub.local.peer_id.clone()),
        target_id: remote.map(|r| r.peer_id.clone()),
    }
}

/// Whether a frame about a document the connection has not named before is one too many:
/// then what to send before the connection closes.
fn too_many_documents(peer: &Arc<Peer>, known: bool, open: usize) -> Option<Vec<Message>> {
    let hub = &peer.hub;
    if known || open < hub.limits.documents_per_connection {
        return None;
    }
    tracing::warn!(user = %peer.access.user, documents = open, "too many documents on one connection; disconnecting");
    hub.metrics.closed_at_bounds.inc();
    close_for_violation(&Some(peer.clone()));
    let text = "too many documents on one connection";
    Some(vec![connection_error(hub, text, Some(&peer.remote))])
}

/// For an enrolled tablet: which certificates issued on it are revoked, and whether it is, as
/// a `chartsync/revoked` notice on its own id (`None`: nothing revoked, or not a tablet).
async fn revoked_notice(peer: &Arc<Peer>) -> Option<Message> {
    let peer = peer.clone();
    tokio::task::spawn_blocking(move || revoked_now(&peer))
        .await
        .ok()
        .flatten()
}

/// `revoked_notice`, reading the store on the caller's thread.
fn revoked_now(peer: &Peer) -> Option<Message> {
    let device = peer.access.device?;
    let store = &peer.hub.store;
    let device_revoked = store
        .device(device)
        .ok()
        .flatten()
        .is_some_and(|d| d.status != chartsync_core::store::CredentialStatus::Active);
    let serials: Vec<String> = store
        .certificates(None, Some(device))
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            chartsync_core::trust::Serial::parse(&c.serial).is_ok_and(|serial| {
                !store
                    .revocations_of(serial, &c.user, device)
                    .unwrap_or_default()
                    .is_empty()
            })
        })
        .map(|c| c.serial)
        .collect();
    if serials.is_empty() && !device_revoked {
        return None;
    }
    let notice = ChartNotice::Revoked {
        serials,
        device: device_revoked,
    };
    Some(Message::Ephemeral {
        document_id: DocumentId::from_bytes(device.0),
        sender_id: peer.hub.local.peer_id.clone(),
        target_id: peer.remote.peer_id.clone(),
        count: peer.notices.fetch_add(1, Ordering::Relaxed) + 1,
        session_id: peer.session_id.clone(),
        data: notice.encode(),
    })
}

/// A peer-chosen id as logs and the audit trail show it: letters, digits and `._:@-` kept,
/// anything else (control characters, newlines, markup) as `_`, at most 64 characters.
fn printable(id: &str) -> String {
    id.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a break-glass grant opens chart `id` to the connection now: the token's person's,
/// or one made by anyone on this tablet (a quarantined tablet gets none).
fn break_glass_open(peer: &Peer, id: DocumentId) -> bool {
    let access = &peer.access;
    if access.quarantined {
        return false;
    }
    let device = access.device.map(|d| d.to_string());
    let user = device.is_none().then_some(access.user.as_str());
    peer.hub
        .store
        .active_break_glass(user, device.as_deref(), id, Timestamp::now())
        .ok()
        .flatten()
        .is_some()
}

/// Takes in a frame's proofs of authorship before any document's worker looks for them:
/// they are the connection's (only an enrolled tablet's are read; others' are ignored).
/// `false`: too many wait for their changes, and the connection is to end.
fn take_proofs(
    peer: &Option<Arc<Peer>>,
    chart: DocumentId,
    proofs: Option<Box<chartsync_core::trust::ProofBundle>>,
) -> bool {
    let (Some(bundle), Some(p)) = (proofs, peer.as_ref()) else {
        return true;
    };
    let Some(v) = &p.verifier else {
        return true;
    };
    if lock(v).add(chart, *bundle) {
        return true;
    }
    tracing::warn!(user = %p.access.user, "too many proofs waiting for their changes; disconnecting");
    close_for_violation(peer);
    false
}

/// Stops every worker taking input: the connection is closing for a violation or an expired
/// token, and nothing more it sent is applied.
fn close_for_violation(peer: &Option<Arc<Peer>>) {
    if let Some(peer) = peer {
        peer.closing.store(true, Ordering::Release);
    }
}

/// Sends what the workers produce, in the order they produce it.
async fn write_frames(
    mut tx: SplitSink<WebSocket, WsMessage>,
    mut outgoing: mpsc::Receiver<Out>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while let Some(next) = outgoing.recv().await {
        let (m, _queued) = match next {
            Out::Frame(m) => (m, None),
            Out::Counted(m, queued) => (m, queued),
            Out::Ping => {
                let sent =
                    tokio::time::timeout(SEND_TIMEOUT, tx.send(WsMessage::Ping(Vec::new().into())));
                if !matches!(sent.await, Ok(Ok(()))) {
                    return;
                }
                continue;
            }
            Out::Close => break,
        };
        let frame = m.encode();
        metrics.messages_sent.inc();
        metrics.bytes_sent.inc_by(frame.len() as u64);
        let sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(WsMessage::Binary(frame.into())));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.send(WsMessage::Close(None))).await;
}

impl Worker {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Queue>,
        out: mpsc::Sender<Out>,
        outgoing: QueueBudget,
    ) {
        let mut retry: Option<tokio::time::Instant> = None;
        'events: loop {
            // `_received` counts against the incoming budget until the event is handled.
            let (event, _received) = tokio::select! {
                queued = events.recv() => match queued {
                    Some(queued) => *queued,
                    None => break,
                },
                _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                    (Event::Changed, None)
                }
            };
            retry = None;
            let timed = matches!(event, Event::Sync { .. });
            let started = std::time::Instant::now();
            let Some(output) = tokio::task::block_in_place(|| self.take(event)) else {
                break;
            };
            if timed {
                let seconds = started.elapsed().as_secs_f64();
                self.peer.hub.metrics.sync_seconds.observe(seconds);
            }
            if std::mem::take(&mut self.push_failed) {
                retry = Some(tokio::time::Instant::now() + PUSH_RETRY);
            }
            for m in output.send {
                let queued = outgoing.take(wire_size(&m)).await;
                if out.send(Out::Counted(Box::new(m), queued)).await.is_err() {
                    break 'events;
                }
            }
            if output.close {
                let _ = out.send(Out::Close).await;
                break;
            }
        }
        tokio::task::block_in_place(|| self.finish());
    }

    /// Handles `event` unless the connection is closing (`None`: stop taking input).
    fn take(&mut self, event: Event) -> Option<Output> {
        if self.peer.closing.load(Ordering::Acquire) {
            return None;
        }
        let output = self.handle(event);
        if output.close {
            self.peer.closing.store(true, Ordering::Release);
        }
        Some(output)
    }

    fn handle(&mut self, event: Event) -> Output {
        match event {
            Event::Sync { data, request } => {
                // Break-glass recorded offline for this chart is filed before its changes are
                // checked: they may have been made under it.
                let filed = self.file_grants();
                let mut out = self.on_sync(&data, request);
                out.send.splice(0..0, filed);
                if !out.close {
                    out.send.extend(self.ask_missing_files());
                }
                out
            }
            Event::Unavailable => {
                if let Some(Doc::Chart(s)) = &mut self.doc {
                    s.mark_unavailable();
                }
                Output::default()
            }
            Event::Changed => self.on_chart_changed(),
            Event::Decided(notice) => self.on_decision(notice),
            Event::Purged(purged) => self.on_purged(&purged),
            Event::AttachmentWanted { hash, part } => self.on_attachment_wanted(hash, part),
            Event::AttachmentPart { hash, part, data } => {
                self.on_attachment_returned(hash, part, &data)
            }
            // Not on this device: another may have it, on its next connection.
            Event::AttachmentUnavailable { hash } => {
                tracing::debug!(chart = %self.id, file = &hash[..hash.len().min(12)], "the device has not got a file the server lacks");
                Output::default()
            }
        }
    }

    /// After a restore from a backup: the files this chart names that the server lacks
    /// (filed after the backup; the entries came back from tablets, the files did not) are
    /// asked of the device, which sends back those it has whole (someone opened them there).
    /// Looked for when the chart's heads change (the entries come back in a sync), each file
    /// asked for once a connection.
    fn ask_missing_files(&mut self) -> Vec<Message> {
        if self.hub().recovery.is_none()
            || !matches!(self.doc, Some(Doc::Chart(_) | Doc::Departed(_)))
        {
            return Vec::new();
        }
        let store = self.hub().store.clone();
        let Ok(heads) = store.read(self.id, |c| c.heads()) else {
            return Vec::new();
        };
        if self.files_checked.as_ref() == Some(&heads) {
            return Vec::new();
        }
        self.files_checked = Some(heads);
        let missing = match store.missing_attachments(self.id) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "could not look for missing files");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for a in missing {
            if !self.files_asked.insert(a.hash.clone()) {
                continue;
            }
            match store.want_attachment(self.id, &a) {
                Ok(Some(part)) => {
                    tracing::info!(chart = %self.id, file = &a.hash[..12], part, "asking the device for a file lost in the restore");
                    out.push(self.notice(&ChartNotice::AttachmentWanted { hash: a.hash, part }));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(chart = %self.id, error = %e, "could not ask for a missing file")
                }
            }
        }
        out
    }

    /// A part of a file the server asked the device to send back: kept (checked against the
    /// file's size, and the whole against its hash), and the next one asked for. A part not
    /// asked for on this connection is ignored.
    fn on_attachment_returned(&mut self, hash: String, part: u32, data: &[u8]) -> Output {
        if !self.files_asked.contains(&hash) {
            return Output::default();
        }
        let store = self.hub().store.clone();
        let prefix = hash[..12].to_string();
        match store.store_attachment_part(&hash, part, data) {
            Ok(PartStored::More(next)) => {
                Output::send(self.notice(&ChartNotice::AttachmentWanted { hash, part: next }))
            }
            Ok(PartStored::Complete) => {
                tracing::info!(chart = %self.id, file = %prefix, "a file lost in the restore is back, from a device");
                let detail =
                    format!("scanned document {prefix} restored (sent back by the device)");
                self.audit(AuditAction::Write, Some(&detail));
                Output::default()
            }
            Ok(PartStored::Corrupt) => {
                tracing::warn!(chart = %self.id, file = %prefix, "a device sent back parts that are not the file; not asked again on this connection");
                Output::default()
            }
            // Another device finished it, or sent this part first.
            Ok(PartStored::Unwanted) => Output::default(),
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "could not keep a part of a file sent back");
                Output::default()
            }
        }
    }

    /// The device asks for part `part` of a scanned document's file: sent if the chart is
    /// on its wards (or open to it by break-glass) and names the file. The first part sent
    /// is audited as a read of the chart. Refusals count as denials.
    fn on_attachment_wanted(&mut self, hash: String, part: u32) -> Output {
        let store = self.hub().store.clone();
        let allowed = match store.placement(self.id) {
            Ok(Some(placed)) => self.left_reason(&placed.ward, placed.status).is_none(),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "store error");
                return Output::default();
            }
        };
        let unavailable = |this: &Self, reason: &str| {
            Output::send(this.notice(&ChartNotice::AttachmentUnavailable {
                hash: hash.clone(),
                reason: reason.into(),
            }))
        };
        if !allowed {
            if self.note_denial("scanned document of a chart outside the token", true) {
                return self.violation("too many requests for documents this token may not see");
            }
            return unavailable(self, "not_permitted");
        }
        // A document entered in error (filed on the wrong patient's chart) is not this
        // patient's: not sent to the ward.
        let in_error = store
            .read(self.id, |c| {
                c.view().map(|v| {
                    let naming: Vec<_> = v
                        .entries
                        .iter()
                        .filter(|e| {
                            e.content
                                .attachment
                                .as_ref()
                                .is_some_and(|a| a.hash == hash)
                        })
                        .collect();
                    !naming.is_empty()
                        && naming
                            .iter()
                            .all(|e| e.status == EntryStatus::EnteredInError)
                })
            })
            .map(|r| r.unwrap_or(false));
        if matches!(in_error, Ok(true)) {
            return unavailable(self, "entered_in_error");
        }
        let found = store
            .named_file(self.id, &hash)
            .and_then(|named| match named {
                NamedFile::Here => store.attachment_part(&hash, part).map(Ok),
                NamedFile::Missing(_) => Ok(Err("missing")),
                NamedFile::NotNamed => Ok(Err("not_found")),
            });
        match found {
            Ok(Err(reason)) => unavailable(self, reason),
            Ok(Ok(Some(data))) => {
                // Audited once a connection, whichever part it asks for first.
                if self.files_sent.insert(hash.clone()) {
                    let detail = format!("scanned document {} sent to the device", &hash[..12]);
                    self.audit(AuditAction::Read, Some(&detail));
                }
                Output::send(self.notice(&ChartNotice::AttachmentPart { hash, part, data }))
            }
            Ok(Ok(None)) => unavailable(self, "not_found"),
            // Not answered: the device asks again on its next connection.
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "could not read a scanned document");
                Output::default()
            }
        }
    }

    /// The device removed the chart from its store: recorded and audited (once, however
    /// often it says so), its sync state and departure forgotten, and the device answered so
    /// that it stops saying it. Nothing of the chart is sent to it after this unless it asks
    /// again, which it does only when one of its wards lists the chart again.
    fn on_purged(&mut self, purged: &chartsync_core::store::PurgedChart) -> Output {
        let storage = self.device_storage();
        let device = self.access().device.map(|d| d.to_string());
        match self.hub().store.record_device_purge(
            &self.actor(),
            &storage,
            device.as_deref(),
            purged,
        ) {
            Ok(record) => {
                match record {
                    PurgeRecord::New => {
                        tracing::info!(chart = %self.id, reason = %purged.reason.token(), "a device removed a chart")
                    }
                    PurgeRecord::Again => {}
                    PurgeRecord::NeverTold => {
                        tracing::warn!(chart = %self.id, "a device reported removing a chart it was never told left; not recorded")
                    }
                }
                self.doc = None;
                Output::send(self.notice(&ChartNotice::PurgeRecorded { at: purged.at }))
            }
            // Not answered: the device reports it again on its next connection.
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "could not record a device's removal");
                Output::default()
            }
        }
    }

    /// When the device is to remove a chart that left its wards for `reason`: `purge_after`
    /// from the transfer or discharge as charted (now, if the chart says no time), and at once
    /// for a revoked tablet. Not yet (`None`: kept read-only) while no backup holds the heads
    /// the device was told the server has: a server restored from its latest backup then
    /// still has everything a tablet removed, or the tablet still has it to send back.
    fn purge_at(&self, reason: LeftReason) -> Option<Timestamp> {
        let now = Timestamp::now();
        if reason == LeftReason::Revoked {
            return Some(now);
        }
        if self.hub().purge_needs_backup {
            let store = &self.hub().store;
            let told = store
                .departure_told_at(&self.device_storage(), self.id)
                .ok()
                .flatten()?;
            if store.last_backup().is_none_or(|backup| backup <= told) {
                return None;
            }
        }
        let moved = self
            .hub()
            .store
            .read(self.id, |c| departed_at(c, reason))
            .ok()
            .flatten()
            .unwrap_or(now)
            .min(now);
        let delay = i64::try_from(self.hub().purge_after.as_secs()).unwrap_or(i64::MAX / 2);
        Some(moved.plus_seconds(delay))
    }

    /// Tells the device of a decision on its held changes, and syncs the chart afresh: after
    /// an acceptance the device gets the record with its changes in it; after a rejection it
    /// is told again if it sends them.
    fn on_decision(&mut self, notice: ChartNotice) -> Output {
        let mut out = Output::send(self.notice(&notice));
        self.doc = None;
        if matches!(notice, ChartNotice::Accepted { .. }) {
            if let Ok(Some(s)) = self.hub().store.summary(self.id) {
                if self.access().may_see_ward(&s.ward) {
                    let state = self.stored_state();
                    self.doc = Some(Doc::Chart(self.doc_sync(state)));
                    out.send.extend(self.reply().send);
                }
            }
        }
        out
    }

    fn hub(&self) -> &Hub {
        &self.peer.hub
    }

    fn access(&self) -> &Access {
        &self.peer.access
    }

    fn local_id(&self) -> &str {
        &self.peer.hub.local.peer_id
    }

    fn remote_id(&self) -> &str {
        &self.peer.remote.peer_id
    }

    /// Who is acting, for the audit trail.
    fn actor(&self) -> Actor {
        Actor {
            user: self.access().user.clone(),
            role: self.access().role.token().to_string(),
            device: self.peer.label.clone(),
        }
    }

    /// Records an event in the audit trail; a failure is logged, not fatal to the session.
    fn audit(&self, action: AuditAction, detail: Option<&str>) {
        let id = self.id;
        if let Err(e) = self
            .hub()
            .store
            .record_audit(&self.actor(), action, Some(id), detail)
        {
            tracing::error!(chart = %id, error = %e, "could not write the audit trail");
        }
    }

    /// A document the connection may not see (or that does not exist): answered
    /// `doc-unavailable`, the audit written off the reply path (the first of each window with
    /// its chart, the rest counted into one row), and past the bound the connection closed.
    fn deny(&mut self, detail: &str) -> Output {
        if self.note_denial(detail, true) {
            tracing::warn!(user = %self.access().user, "too many requests for documents this token may not see; disconnecting");
            self.hub().metrics.closed_at_bounds.inc();
            self.peer.flush_denials("then disconnected");
            return Output {
                send: vec![self.error("too many requests for documents this token may not see")],
                close: true,
            };
        }
        self.unavailable()
    }

    /// Counts and audits one denial; `counts`: whether it counts towards the bound. Whether
    /// the connection is now past the bound.
    fn note_denial(&self, detail: &str, counts: bool) -> bool {
        let limits = self.hub().limits;
        self.hub().metrics.denials.inc();
        let now = std::time::Instant::now();
        let (first, over, closed_window) = {
            let mut d = lock(&self.peer.denials);
            let expired = d
                .window_started
                .is_none_or(|s| now.duration_since(s) >= limits.denial_window);
            let closed_window = if expired {
                let left = std::mem::take(&mut d.unaudited);
                d.window_started = Some(now);
                d.in_window = 0;
                d.audited = false;
                left
            } else {
                0
            };
            if counts {
                d.in_window += 1;
            }
            let first = !d.audited;
            if first {
                d.audited = true;
            } else {
                d.unaudited += 1;
            }
            (
                first,
                d.in_window > limits.denials_per_window,
                closed_window,
            )
        };
        if closed_window > 0 {
            self.peer.audit_denial(
                None,
                format!("{closed_window} more requests for documents this token may not see"),
            );
        }
        if first {
            self.peer.audit_denial(Some(self.id), detail.to_string());
        }
        over
    }

    /// Tells the device what was wrong, then closes the connection.
    fn violation(&self, text: &str) -> Output {
        Output {
            send: vec![self.error(text)],
            close: true,
        }
    }

    fn error(&self, text: &str) -> Message {
        Message::Error {
            message: text.to_string(),
            sender_id: Some(self.local_id().to_string()),
            target_id: Some(self.remote_id().to_string()),
        }
    }

    fn unavailable(&mut self) -> Output {
        self.asked = true;
        Output::send(Message::DocUnavailable {
            document_id: self.id,
            sender_id: self.local_id().to_string(),
            target_id: self.remote_id().to_string(),
        })
    }

    /// Sync with the device about this document, from `state`, within the connection's
    /// bounds on what one message may carry.
    fn doc_sync(&self, state: Option<automerge::sync::State>) -> DocSync {
        let limits = &self.hub().limits;
        DocSync::new(self.id, state)
            .with_bounds(limits.content)
            .with_message_limit(limits.outgoing_message_bytes)
    }

    /// The ward of a census document, if `id` is one.
    fn census_ward(&self) -> Option<String> {
        crate::census::lock(&self.hub().censuses)
            .get(&self.id)
            .map(|(ward, _)| ward.clone())
    }

    fn on_sync(&mut self, data: &[u8], is_request: bool) -> Output {
        let id = self.id;
        match &self.doc {
            // Held on this connection: see `Doc::Held`.
            Some(Doc::Held(Some(_))) => return self.answer_held(data),
            Some(Doc::Held(None)) => return Output::default(),
            _ => {}
        }
        if let Some(ward) = self.census_ward() {
            if !self.access().may_see_ward(&ward) {
                return self.deny("census of a ward outside the token");
            }
            return self.sync_census(data);
        }
        let pending = matches!(self.doc, Some(Doc::Pending { .. }));
        match self.hub().store.placement(id) {
            // Sent as new on this connection: see `unseen`.
            Ok(Some(_)) if pending => self.sync_new(data),
            Ok(Some(placed)) => match self.left_reason(&placed.ward, placed.status) {
                None => {
                    // Back on the device's wards (transferred back, readmitted): synced as
                    // any chart again, not told once more that it left.
                    if matches!(self.doc, Some(Doc::Departed(_))) {
                        self.doc = None;
                    }
                    self.sync_chart(data, None)
                }
                Some(reason) if matches!(self.doc, Some(Doc::Departed(_))) => {
                    self.sync_chart(data, Some(reason))
                }
                Some(reason) => match self.had_chart(data) {
                    Ok(true) => self.sync_chart(data, Some(reason)),
                    Ok(false) => self.unseen(data, is_request),
                    Err(out) => out,
                },
            },
            // The census of one of the token's wards, not written yet: no denial.
            Ok(None) if self.own_census(&id) => self.unavailable(),
            Ok(None) => {
                if !pending {
                    // An id the store has not got is on none of the token's wards: it is
                    // looked up for break-glass access as a chart outside them is, so that
                    // the two are answered after the same work.
                    let _ = self.break_glass_open();
                }
                if chartsync_core::census::is_census_id(&id) || (is_request && !pending) {
                    self.missing(data)
                } else {
                    self.sync_new(data)
                }
            }
            Err(e) => {
                tracing::error!(chart = %id, error = %e, "store error");
                self.violation("the server could not read its store")
            }
        }
    }

    /// Whether the device sending `data` has had this chart (`had_chart`). A message that
    /// names no heads, has nothing and carries no changes is from a device that never had it,
    /// and is told so without reading the chart: as fast as for an id the store has not got.
    fn had_chart(&self, data: &[u8]) -> Result<bool, Output> {
        let message = match self.decode(data) {
            Ok(m) => m,
            Err(out) => return Err(out),
        };
        let has_nothing = message.heads.is_empty()
            && message.have.iter().all(|h| h.last_sync.is_empty())
            && message.changes.is_empty();
        if has_nothing {
            return Ok(false);
        }
        Ok(self
            .hub()
            .store
            .read(self.id, |c| had_chart(c, &message))
            .unwrap_or(false))
    }

    /// Whether `id` is the census of a ward the token covers.
    fn own_census(&self, id: &DocumentId) -> bool {
        let access = self.access();
        !access.quarantined
            && chartsync_core::census::is_census_id(id)
            && access
                .wards
                .iter()
                .any(|w| w == crate::auth::ALL_WARDS || chartsync_core::census::census_id(w) == *id)
    }

    /// Decodes a sync message about this document within the connection's bounds: what it
    /// cannot read, or carries past them, ends the connection.
    fn decode(&self, data: &[u8]) -> Result<automerge::sync::Message, Output> {
        chartsync_core::protocol::sync::decode_bounded(self.id, data, &self.hub().limits.content)
            .map_err(|e| self.refused_message(&e))
    }

    /// A message that could not be read ends the connection, with the reason. One that
    /// carried more than a message may is refused whole and the device told so about this
    /// chart (`too-large`), and the connection stays up: the device sends it again within
    /// the bound, or holds it in plain sight. Closing would only loop: a device sends the
    /// same again on every connection. Each refusal counts as a denial, so a peer that
    /// keeps sending what it was told is too large meets that bound.
    fn refused_message(&self, e: &chartsync_core::protocol::ProtocolError) -> Output {
        use chartsync_core::protocol::{ProtocolError, SizeBound};
        let ProtocolError::Contents { error, .. } = e else {
            return self.violation(&e.to_string());
        };
        let Some(bound) = SizeBound::of(error) else {
            tracing::warn!(user = %self.access().user, peer = %self.peer.label, chart = %self.id, "{e}; disconnecting");
            self.hub().metrics.closed_at_bounds.inc();
            return self.violation(&e.to_string());
        };
        tracing::warn!(user = %self.access().user, peer = %self.peer.label, chart = %self.id, "{e}; refused, and the device told");
        self.hub().metrics.refused_too_large.inc();
        if self.note_denial("a message larger than the server accepts", true) {
            self.hub().metrics.closed_at_bounds.inc();
            self.peer.flush_denials("then disconnected");
            return self.violation("too many messages larger than the server accepts");
        }
        let limits = &self.hub().limits.content;
        let limit = match bound {
            SizeBound::Changes => limits.changes_per_message as u64,
            SizeBound::Change => limits.inflated_bytes_per_change,
            SizeBound::Message => limits.inflated_bytes_per_message,
        };
        Output::send(self.notice(&ChartNotice::TooLarge { bound, limit }))
    }

    /// A chart the connection may not see, asked for by a device that never had it: answered
    /// exactly as an id the store has not got (`missing` for a `request`, `sync_new` for a
    /// `sync`), and audited off the reply path. A `sync` is not counted towards the bound on
    /// denials, as a `sync` for an unknown id is not (new charts come that way); it takes one
    /// of the connection's slots for new charts instead, as that one would.
    fn unseen(&mut self, data: &[u8], is_request: bool) -> Output {
        if is_request {
            // Read and measured first, as `missing` does.
            if let Err(out) = self.decode(data) {
                return out;
            }
            return self.deny("chart outside the token's wards");
        }
        self.note_denial("chart outside the token's wards", false);
        self.sync_new(data)
    }

    /// An id the store has not got, asked for with a `request`: `doc-unavailable`, counted
    /// and audited as a denial is, so that a flood of unknown ids meets the same bound as a
    /// flood of forbidden ones, and the two cannot be told apart by when the connection closes.
    fn missing(&mut self, data: &[u8]) -> Output {
        if let Err(out) = self.decode(data) {
            return out;
        }
        self.deny("a document that does not exist")
    }

    /// Why the chart is no longer this connection's to read, if it is not: off the token's
    /// wards, or discharged for a ward nurse (physicians and records staff complete the
    /// record after discharge).
    fn left_reason(&self, ward: &str, status: EncounterStatus) -> Option<LeftReason> {
        let reason = left_reason(self.access(), ward, status)?;
        (!self.break_glass_open()).then_some(reason)
    }

    /// Files the break-glass grants a tablet recorded offline for this chart and sent with
    /// it (checked against the person's certificate; each once however often it is sent),
    /// and tells the tablet which are filed.
    fn file_grants(&mut self) -> Vec<Message> {
        let Some(v) = &self.peer.verifier else {
            return Vec::new();
        };
        let grants = lock(v).take_grants(self.id);
        if grants.is_empty() {
            return Vec::new();
        }
        let hub = self.hub();
        let now = Timestamp::now();
        let device = self.access().device.map(|d| d.to_string());
        let mut filed = Vec::new();
        for g in &grants {
            let writer = lock(v).check_grant(&hub.store, self.id, g, now.unix());
            let (writer, reason) = match (
                writer,
                chartsync_core::store::BreakGlassReason::from_code(&g.reason),
            ) {
                (Ok(w), Some(r)) => (w, r),
                (Err(why), _) => {
                    tracing::warn!(chart = %self.id, %why, "an offline break-glass grant was refused");
                    continue;
                }
                (_, None) => {
                    tracing::warn!(chart = %self.id, "an offline break-glass grant with an unknown reason was refused");
                    continue;
                }
            };
            let (Ok(starts_at), Ok(ends_at)) = (
                Timestamp::from_unix(g.signed_at),
                Timestamp::from_unix(g.signed_at + hub.trust.policy.break_glass_secs as i64),
            ) else {
                continue;
            };
            let by = Actor {
                user: writer.user.clone(),
                role: writer.role.token().to_string(),
                device: self.peer.label.clone(),
            };
            let serial = writer.serial.map(|s| s.0).unwrap_or_default();
            match hub
                .store
                .grant_break_glass(&chartsync_core::store::NewBreakGlass {
                    by: &by,
                    chart: self.id,
                    reason,
                    text: &g.text,
                    starts_at,
                    ends_at,
                    granted: "offline",
                    device: device.as_deref(),
                    signed: Some((&serial, &g.signature)),
                    filed: true,
                }) {
                Ok((grant, new)) => {
                    if new {
                        tracing::warn!(user = %by.user, chart = %self.id, grant = grant.id, "break-glass used offline, filed for review");
                    }
                    filed.push(hex::encode(g.signature));
                }
                Err(e) => {
                    tracing::error!(chart = %self.id, error = %e, "could not file a break-glass grant")
                }
            }
        }
        if filed.is_empty() {
            return Vec::new();
        }
        vec![self.notice(&ChartNotice::BreakGlassFiled { signatures: filed })]
    }

    /// Whether a break-glass grant opens this chart to the connection now: the token's
    /// person's, or one made by anyone on this tablet.
    fn break_glass_open(&self) -> bool {
        break_glass_open(&self.peer, self.id)
    }

    /// A ward census: read-only for devices.
    fn sync_census(&mut self, data: &[u8]) -> Output {
        if !matches!(self.doc, Some(Doc::Census(_))) {
            self.audit(AuditAction::List, Some("ward census"));
            let state = self.stored_state();
            self.doc = Some(Doc::Census(self.doc_sync(state)));
        }
        let peer = self.peer.clone();
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        let Some(Doc::Census(sync)) = &mut self.doc else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.refused_message(&e),
        };
        let mut all = crate::census::lock(&peer.hub.censuses);
        let Some((_, census)) = all.get_mut(&self.id) else {
            return Output::default();
        };
        // Changes the server already has (a device's copy of the census) are harmless.
        let unknown = unknown_changes(census.doc(), &message);
        // Heads or a last sync the server has not got, with nothing unknown carried: the
        // device's copy has census changes the server made and lost (a restore), and sent
        // them earlier on this connection or not at all. automerge would answer with a sync
        // reset for ever (the device's last sync names changes the server lacks, and a
        // device does not forget it); devices do not write censuses, so nothing is lost by
        // starting over.
        let lost = unknown == Some(0)
            && message
                .heads
                .iter()
                .chain(message.have.iter().flat_map(|h| h.last_sync.iter()))
                .any(|h| census.doc().get_change_meta_by_hash(h).is_none());
        if (unknown != Some(0) && peer.hub.recovery.is_some()) || lost {
            // After a restore a device's copy holds census changes the server made and lost;
            // nothing to keep: the device starts its copy afresh.
            drop(all);
            self.doc = None;
            return Output::send(self.notice(&ChartNotice::Held {
                hold: 0,
                reason: HoldReason::CensusIsReadOnly,
                summary: "the server was restored from a backup: fetch the ward list afresh".into(),
            }));
        }
        if unknown != Some(0) {
            // Kept like any refused change, so that nothing a device wrote is lost unseen.
            let mut scratch = census.doc().clone();
            let loaded = chartsync_core::chart::unpanicked(|| {
                scratch
                    .load_incremental(&changes_of(&message))
                    .map_err(|e| ChartError::Corrupt(e.to_string()))
            });
            let changes = new_changes(census.doc(), &scratch);
            drop(all);
            if loaded.is_err() {
                return self.violation("the sync message could not be applied");
            }
            return self.hold(Refusal::new(
                HoldReason::CensusIsReadOnly,
                "changes to a ward census",
                changes,
            ));
        }
        if sync.receive_census(census, message).is_err() {
            drop(all);
            return self.violation("the sync message could not be applied");
        }
        let reply = sync.generate(census.doc(), local, remote);
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    fn census_reply(&mut self) -> Output {
        let peer = self.peer.clone();
        let Some(Doc::Census(sync)) = &mut self.doc else {
            return Output::default();
        };
        let all = crate::census::lock(&peer.hub.censuses);
        let reply = all.get(&self.id).and_then(|(_, census)| {
            sync.generate(census.doc(), &peer.hub.local.peer_id, &peer.remote.peer_id)
        });
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    /// The stored sync state for this device's storage, if it has one.
    fn stored_state(&self) -> Option<automerge::sync::State> {
        let storage = self.peer.remote.storage_id()?;
        self.hub().store.sync_state(storage, self.id).ok().flatten()
    }

    /// A sync message about a chart in the store. `departed`: the chart is no longer this
    /// connection's to read (see [`Doc::Departed`]).
    fn sync_chart(&mut self, data: &[u8], departed: Option<LeftReason>) -> Output {
        let id = self.id;
        match (self.doc.take(), departed) {
            (Some(Doc::Chart(sync)), None) => self.doc = Some(Doc::Chart(sync)),
            (Some(Doc::Chart(sync) | Doc::Departed(sync)), Some(_)) => {
                self.doc = Some(Doc::Departed(sync))
            }
            (_, None) => {
                // The first exchange about this chart on this connection: the device reads it.
                self.audit(AuditAction::Read, None);
                let state = self.stored_state();
                self.doc = Some(Doc::Chart(self.doc_sync(state)));
            }
            (_, Some(_)) => {
                let state = self.stored_state();
                self.doc = Some(Doc::Departed(self.doc_sync(state)));
            }
        }
        let peer = self.peer.clone();
        let actor = self.actor();
        let storage = self.device_storage();
        let access = &peer.access;
        let store = &peer.hub.store;
        let Some(Doc::Chart(sync) | Doc::Departed(sync)) = &mut self.doc else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.refused_message(&e),
        };
        let device_heads = message.heads.clone();
        // What the device says it has, without its changes: heard even when they are held.
        let heard = chartsync_core::protocol::sync::without_changes(&message);
        if let Some(known) = &peer.hub.recovery {
            take_back(store, &actor, id, known, &message);
        }
        // What the device had when it was told the chart left, if it was.
        let told: Option<Vec<ChangeHash>> = match departed {
            Some(_) => store.departure_told(&storage, id).ok().flatten(),
            None => None,
        };
        let mut changed = false;
        let mut refused: Option<Refusal> = None;
        let mut settled: Vec<i64> = Vec::new();
        let proven = std::cell::RefCell::new(Proven::default());
        let token_writer = Writer {
            user: access.user.clone(),
            role: access.role,
            wards: access.wards.clone(),
            serial: None,
        };
        let verifier = peer.verifier.as_ref();
        let applied = store.update_proven(id, &proven, |chart| {
            let message = sync.admit(chart.doc(), message);
            if changes_of(&message).is_empty() {
                return sync
                    .receive_chart(chart, message)
                    .map_err(|e| ChartError::Corrupt(e.to_string()));
            }
            // The changes are applied once, to the chart itself, and checked against a copy
            // of it as it stood; if they fail, the store forgets the chart in memory (a
            // failed write: it is read again from disk) and the sync state goes back to what
            // it was, as if the message had not been received.
            let prev = chart.fork();
            let checkpoint = sync.checkpoint();
            let refuse = |sync: &mut DocSync, error: ChartError| {
                sync.rollback(checkpoint.clone());
                Err(error)
            };
            if let Err(e) = sync.receive_chart(chart, message) {
                return refuse(sync, ChartError::Corrupt(e.to_string()));
            }
            // Rebuilt from the op set once: the checks below and the store's commit read
            // the same changes.
            let new = match chart.new_changes(&prev.heads()) {
                Ok(new) => new.raw(),
                Err(r) => return refuse(sync, ChartError::Rejected(Box::new(r))),
            };
            changed = !new.is_empty();
            if !changed {
                return Ok(());
            }
            if departed.is_some() {
                if let Some(told) = &told {
                    let after = new.iter().any(|(_, bytes)| {
                        chartsync_core::chart::parse_change(&bytes[..])
                            .is_ok_and(|c| c.deps().iter().any(|d| told.contains(d)))
                    });
                    if after {
                        refused = Some(Refusal::new(
                            HoldReason::OutsideWards,
                            "written after the device was told the chart left",
                            new,
                        ));
                        return refuse(sync, ChartError::NotPermitted("held".into()));
                    }
                }
            }
            // Who wrote what: the token's user, or each change's proven author.
            let runs = match verifier {
                None => vec![(token_writer.clone(), new)],
                Some(v) => match prove(&mut lock(v), store, id, chart, &new) {
                    Ok(runs) => runs,
                    Err(r) => {
                        refused = Some(r);
                        return refuse(sync, ChartError::NotPermitted("held".into()));
                    }
                },
            };
            if access.quarantined {
                let all = runs.iter().flat_map(|(_, r)| r.clone()).collect();
                refused = Some(Refusal::quarantined(&runs, all));
                return refuse(sync, ChartError::NotPermitted("held".into()));
            }
            let checks = Checks {
                store,
                move_window: peer.hub.move_window,
                chart: id,
                verifier,
            };
            // Each writer's run is checked as theirs, on the chart as it stood before.
            let mut before: Option<Chart> = None;
            for (k, (who, run)) in runs.iter().enumerate() {
                let last = k + 1 == runs.len();
                let this_prev = before.as_ref().unwrap_or(&prev);
                let next = if last {
                    None
                } else {
                    let mut next = this_prev.fork();
                    next.load_incremental(&join(run))?;
                    Some(next)
                };
                let after = next.as_ref().unwrap_or(chart);
                match checks.run(this_prev, after, run, who) {
                    Ok(s) => settled.extend(s),
                    Err((refusal, error)) => {
                        let rest: Vec<_> = runs[k..].iter().flat_map(|(_, r)| r.clone()).collect();
                        refused = Some(Refusal {
                            changes: rest,
                            signer: who.serial.is_some().then(|| who.clone()),
                            ..refusal
                        });
                        if k == 0 {
                            return refuse(sync, error);
                        }
                        // The writers before passed: their changes are taken, and the rest
                        // held. The chart becomes what it was with theirs, and the sync
                        // state goes back (it hears the message without its changes later).
                        let taken: Vec<u8> = runs[..k].iter().flat_map(|(_, r)| join(r)).collect();
                        let mut part = prev;
                        part.load_incremental(&taken)?;
                        *chart = part;
                        sync.rollback(checkpoint);
                        *proven.borrow_mut() = proven_by(&runs[..k], verifier, &actor);
                        return Ok(());
                    }
                }
                before = next;
            }
            *proven.borrow_mut() = proven_by(&runs, verifier, &actor);
            Ok(())
        });
        if sync.forgot_waiting() {
            // More changes waited for a dependency than a document may keep, and the device
            // never sends a change twice on one connection: end it, and it sends them again.
            tracing::warn!(user = %access.user, chart = %id, "too many changes waiting for their dependencies; reconnecting the device");
            return Output {
                send: Vec::new(),
                close: true,
            };
        }
        if let Some(v) = verifier {
            // What was taken has its proofs in the store now.
            let taken: Vec<ChangeHash> = proven
                .borrow()
                .writers
                .iter()
                .flat_map(|(_, h)| h.iter().copied())
                .collect();
            lock(v).done(&taken);
        }
        if let Some(refusal) = refused {
            // The sync hears what the device has, so that what is pushed to it while its
            // changes are held is what it lacks.
            let _ = store.read(id, |c| sync.hear(c.doc(), &heard));
            return self.hold(refusal);
        }
        if let Err(e) = applied {
            // The sync state may have moved past what was stored: forget it.
            self.doc = None;
            return self.refuse(e);
        }
        if changed {
            tracing::info!(user = %access.user, chart = %id, "changes accepted");
        }
        if !settled.is_empty() {
            tracing::info!(user = %access.user, chart = %id, holds = ?settled, "held changes sent again and accepted");
            if let Err(e) = store.settle_holds(&settled, &actor) {
                tracing::error!(chart = %id, error = %e, "could not mark held changes accepted");
            }
        }
        match departed {
            None => self.reply(),
            Some(reason) => self.departed_reply(reason, &device_heads),
        }
    }

    /// Remembers that this device was told the chart left, with the heads it had: what it
    /// builds on them later was written knowing (see `departed_after_told`).
    fn told_left(&self, heads: &[ChangeHash]) {
        if heads.is_empty() {
            return;
        }
        let storage = self.device_storage();
        if let Err(e) = self
            .hub()
            .store
            .record_departure_told(&storage, self.id, heads)
        {
            tracing::error!(chart = %self.id, error = %e, "could not record a departure");
        }
    }

    /// The device's storage id, or its peer id when it has none: who a departure was told to.
    fn device_storage(&self) -> String {
        self.peer
            .remote
            .storage_id()
            .unwrap_or(&self.peer.remote.peer_id)
            .to_string()
    }

    /// For a chart that left: once the server has every change the device has, it is told
    /// so, and that the chart left; until then it is asked for what is missing, and sent
    /// nothing of the chart.
    fn departed_reply(&mut self, reason: LeftReason, device_heads: &[ChangeHash]) -> Output {
        let peer = self.peer.clone();
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        let Some(Doc::Departed(sync)) = &mut self.doc else {
            return Output::default();
        };
        let reply = peer.hub.store.read(self.id, |c| {
            let has_all = !device_heads.is_empty()
                && device_heads
                    .iter()
                    .all(|h| c.doc().get_change_meta_by_hash(h).is_some());
            if has_all {
                None
            } else {
                Some(sync.generate_asking(c.doc(), local, remote))
            }
        });
        match reply {
            Ok(Some(ask)) => Output {
                send: ask.into_iter().collect(),
                close: false,
            },
            Ok(None) => {
                self.told_left(device_heads);
                Output::send(self.notice(&ChartNotice::Left {
                    reason,
                    acknowledged: device_heads.to_vec(),
                    purge_at: self.purge_at(reason),
                }))
            }
            // Never "you are done" on a failed read: the device would stop sending.
            Err(e) => {
                tracing::error!(chart = %self.id, error = %e, "store error");
                Output::default()
            }
        }
    }

    /// Keeps refused changes in the holding area and tells the device, which holds the chart
    /// until a decision reaches it. The connection, and every other chart on it, carry on.
    fn hold(&mut self, refusal: Refusal) -> Output {
        let id = self.id;
        let connection = self.actor();
        // A tablet's changes are held under the person whose key signed them (quotas are
        // theirs); unsigned ones under the tablet.
        let actor = match (&refusal.signer, &refusal.claimed) {
            (Some(w), _) => Actor {
                user: w.user.clone(),
                role: w.role.token().to_string(),
                device: connection.device.clone(),
            },
            // Unverified (the hold's `signer` stays empty): filed under the author the
            // changes claim, whose role the acceptance then checks them against.
            (None, Some((user, role))) => Actor {
                user: user.clone(),
                role: role.token().to_string(),
                device: connection.device.clone(),
            },
            (None, None) => connection,
        };
        let hashes: Vec<ChangeHash> = refusal.changes.iter().map(|(h, _)| *h).collect();
        let proofs = self
            .peer
            .verifier
            .as_ref()
            .map(|v| lock(v).bundle_of(&hashes))
            .filter(|b| !b.is_empty())
            .map(|b| b.to_bytes());
        if let Some(v) = &self.peer.verifier {
            lock(v).done(&hashes);
        }
        let storage = self.peer.remote.storage_id().map(String::from);
        let held = self.hub().store.hold(
            NewHold {
                chart: id,
                actor: &actor,
                storage: storage.as_deref(),
                reason: refusal.reason,
                summary: &refusal.summary,
                changes: &refusal.changes,
                proofs: proofs.as_deref(),
                signer: refusal.signer.as_ref().map(|w| w.user.as_str()),
            },
            &self.hub().hold_quota,
        );
        let notice = match held {
            Ok(Held::New(hold)) => {
                tracing::warn!(user = %actor.user, peer = %actor.device, chart = %id, hold, reason = %refusal.reason, "changes held for review");
                self.hub().metrics.rejections.inc();
                self.doc = Some(Doc::Held(self.pushing()));
                if refusal.reason == HoldReason::CensusIsReadOnly {
                    // The device's copy of a census has changes the server has not (a server
                    // restored from a backup made them): it starts its copy afresh.
                    self.doc = None;
                }
                ChartNotice::Held {
                    hold,
                    reason: refusal.reason,
                    summary: refusal.summary,
                }
            }
            Ok(Held::Already(hold)) => match self.hub().store.held_batch(hold) {
                Ok(Some((batch, _))) => {
                    tracing::debug!(chart = %id, hold, "changes sent again are held already");
                    // After a rejection the device sets its copy aside and asks for the
                    // record afresh: that request is answered, not ignored as held.
                    let afresh = batch.reason == HoldReason::CensusIsReadOnly
                        || batch.status == HoldStatus::Rejected;
                    self.doc = if afresh {
                        None
                    } else {
                        Some(Doc::Held(self.pushing()))
                    };
                    match batch.status {
                        HoldStatus::Rejected => ChartNotice::Rejected {
                            hold,
                            reason: batch.decision_reason.unwrap_or_default(),
                        },
                        // Accepted changes are in the chart, and not new; pending ones wait.
                        _ => ChartNotice::Held {
                            hold,
                            reason: batch.reason,
                            summary: batch.summary,
                        },
                    }
                }
                other => {
                    tracing::error!(chart = %id, hold, found = other.is_ok(), "a held batch could not be read");
                    self.doc = None;
                    return self.violation("the server could not read its holding area");
                }
            },
            Ok(Held::QuotaExceeded) => {
                tracing::warn!(user = %actor.user, peer = %actor.device, chart = %id, "holding area full for this device; nothing held");
                self.audit(
                    AuditAction::Reject,
                    Some("the holding area is full: the device keeps the changes"),
                );
                self.doc = Some(Doc::Held(self.pushing()));
                ChartNotice::HoldingAreaFull {
                    reason: refusal.reason,
                }
            }
            Err(e) => {
                tracing::error!(chart = %id, error = %e, "could not keep changes in the holding area");
                self.doc = None;
                return self.violation("the server could not store the changes");
            }
        };
        // With the notice, what the record has that the device lacks (others' changes):
        // nothing more is asked of the device, and it does not chart on a stale copy.
        let mut out = Output::send(self.notice(&notice));
        out.send.extend(self.push_held().send);
        out
    }

    /// The sync state to push other people's changes with while this device's are held: the
    /// chart's, for a chart in the store the device may read.
    fn pushing(&mut self) -> Option<DocSync> {
        match self.doc.take() {
            Some(Doc::Chart(sync) | Doc::Held(Some(sync))) => Some(sync),
            _ => None,
        }
    }

    /// A message about a chart whose changes from this device are held: nothing it carries
    /// is taken, and nothing is asked of the device, but what it says it has and lacks is
    /// heard, and what it lacks of the record is sent. (automerge's Bloom filters can make a
    /// device miss a change and ask for it by hash: ignored, it would stay behind the record
    /// until its next connection.)
    fn answer_held(&mut self, data: &[u8]) -> Output {
        let message = match self.decode(data) {
            Ok(m) => m,
            Err(out) => return out,
        };
        let store = self.peer.hub.store.clone();
        let Some(Doc::Held(Some(sync))) = &mut self.doc else {
            return Output::default();
        };
        let _ = store.read(self.id, |c| sync.hear(c.doc(), &message));
        self.push_held()
    }

    /// Pushes the chart's new changes to a device whose own are held.
    fn push_held(&mut self) -> Output {
        let peer = self.peer.clone();
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        let Some(Doc::Held(Some(sync))) = &mut self.doc else {
            return Output::default();
        };
        let push = peer
            .hub
            .store
            .read(self.id, |c| {
                let open = c
                    .encounter()
                    .is_ok_and(|e| left_reason(&peer.access, &e.ward, e.status).is_none());
                open.then(|| sync.generate_push(c.doc(), local, remote))
                    .flatten()
            })
            .ok()
            .flatten();
        Output {
            send: push.into_iter().collect(),
            close: false,
        }
    }

    fn notice(&self, notice: &ChartNotice) -> Message {
        Message::Ephemeral {
            document_id: self.id,
            sender_id: self.local_id().to_string(),
            target_id: self.remote_id().to_string(),
            count: self.peer.notices.fetch_add(1, Ordering::Relaxed) + 1,
            session_id: self.peer.session_id.clone(),
            data: notice.encode(),
        }
    }

    /// A device sends a chart the store has not got: gather it in a scratch document, and
    /// once it is a whole chart, check it as any change and store it.
    fn sync_new(&mut self, data: &[u8]) -> Output {
        let id = self.id;
        let peer = self.peer.clone();
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        if !matches!(self.doc, Some(Doc::Pending { .. })) {
            self.doc = Some(Doc::Pending {
                sync: self.doc_sync(None),
                doc: Box::default(),
                slot: None,
            });
        }
        let Some(Doc::Pending { sync, doc, slot }) = &mut self.doc else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.refused_message(&e),
        };
        let carries = !message.changes.is_empty();
        if sync.receive(doc, message).is_err() {
            return self.violation("the sync message could not be applied");
        }
        if doc.get_heads().is_empty() {
            // Changes that came without those they build on wait in the scratch document,
            // holding memory until the rest comes: a bounded number of charts may. A chart
            // only announced (its heads, nothing yet) holds next to nothing, and a device
            // with many new charts announces them all at once (automerge-repo does), so
            // it takes no slot: a bound on those would close the connection of a tablet
            // that made more charts offline than the bound, on every reconnect.
            if carries && slot.is_none() {
                let Some(taken) = PendingSlot::take(&peer) else {
                    tracing::warn!(user = %peer.access.user, "too many new charts left unfinished at once; disconnecting");
                    peer.hub.metrics.closed_at_bounds.inc();
                    return self.violation(
                        "too many new charts left unfinished at once on one connection",
                    );
                };
                *slot = Some(taken);
            }
            // Nothing whole yet: ask for it.
            let reply = sync.generate(doc, local, remote);
            return Output {
                send: reply.into_iter().collect(),
                close: false,
            };
        }
        // Every path from here ends the pending document: it is taken, not copied.
        let candidate = std::mem::take(&mut **doc);
        let sent_heads = candidate.get_heads();
        let state = sync.state().clone();
        // An id in use by a chart this connection may not see (`unseen`): refused before any
        // check, so nothing is held under a chart that is not the device's. No device that
        // made its chart under a random id gets here.
        if !matches!(self.hub().store.summary(id), Ok(None)) {
            if self.stored_meanwhile(&candidate) {
                return self.sync_afresh();
            }
            return self.taken_id();
        }
        // Destroyed past its retention: not stored again, not even in the holding area.
        if self.hub().store.destroyed(id).unwrap_or(true) {
            tracing::warn!(chart = %id, "a device sent a chart destroyed past its retention; refused");
            self.doc = None;
            return self.unavailable();
        }
        let (chart, proven, changes) = match self.check_new_chart(candidate) {
            Ok(checked) => checked,
            Err(Ok(refusal)) => {
                self.doc = None;
                return self.hold(refusal);
            }
            Err(Err(e)) => {
                self.doc = None;
                return self.refuse(e);
            }
        };
        // Only part of what came was taken (after a restore): the sync starts afresh from
        // what the store has, and the device is told to forget what it sent on this
        // connection (automerge's sync reset), so it sends the rest again.
        let whole = chart.heads() == sent_heads;
        let state = if whole {
            state
        } else {
            automerge::sync::State {
                their_capabilities: state.their_capabilities.clone(),
                needs_reset: true,
                ..Default::default()
            }
        };
        match self.hub().store.insert_proven(id, chart, &proven) {
            Ok(()) => {}
            // A chart the server has under another id, sent as new: kept, not merged.
            Err(StoreError::SameChart { existing, .. }) => {
                self.doc = None;
                return self.hold(Refusal::new(
                    HoldReason::BreaksChartRules,
                    format!("the same chart as chart {existing}, under another id"),
                    changes,
                ));
            }
            // Taken between the check above and the insert.
            Err(StoreError::AlreadyExists(_)) => return self.taken_id(),
            // Destroyed past its retention: never stored again, and answered as a chart the
            // server has not got.
            Err(StoreError::Destroyed(_)) => {
                tracing::warn!(chart = %id, "a device sent a chart destroyed past its retention; refused");
                self.doc = None;
                return self.unavailable();
            }
            Err(e) => {
                self.doc = None;
                return self.refuse(e);
            }
        }
        if let Some(v) = &peer.verifier {
            let taken: Vec<ChangeHash> = changes.iter().map(|(h, _)| *h).collect();
            lock(v).done(&taken);
        }
        tracing::info!(user = %peer.access.user, chart = %id, "new chart from a device");
        let mut sync = self.doc_sync(Some(state));
        let reply = peer
            .hub
            .store
            .read(id, |c| sync.generate(c.doc(), local, remote))
            .ok()
            .flatten();
        self.doc = Some(Doc::Chart(sync));
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    /// Whether the chart the store now has under this id is the one the device is sending
    /// (it has the same first change): stored meanwhile from another device's copy, as when
    /// several tablets send back the charts a restored server lost.
    fn stored_meanwhile(&self, candidate: &Automerge) -> bool {
        let roots: Vec<ChangeHash> = candidate
            .get_changes_meta(&[])
            .into_iter()
            .filter(|c| c.deps.is_empty())
            .map(|c| c.hash)
            .collect();
        self.hub()
            .store
            .read(self.id, |c| {
                roots
                    .iter()
                    .any(|h| c.doc().get_change_meta_by_hash(h).is_some())
            })
            .unwrap_or(false)
    }

    /// Starts this document's sync again as for a chart in the store: the device is sent a
    /// message with no heads, which tells its sync to forget what it sent on this connection,
    /// so its answer carries everything it has, checked as changes to the stored chart.
    fn sync_afresh(&mut self) -> Output {
        self.doc = None;
        let peer = self.peer.clone();
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        let mut sync = self.doc_sync(None);
        let reply = sync.generate(&Automerge::new(), local, remote);
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    /// A new chart sent under an id already in use: refused, audited, and the connection
    /// closed; the chart under that id is untouched.
    fn taken_id(&mut self) -> Output {
        let id = self.id;
        self.doc = None;
        tracing::warn!(user = %self.access().user, peer = %self.peer.label, chart = %id, "a new chart under an id in use; disconnecting");
        self.audit(
            AuditAction::Reject,
            Some("a new chart under an id already in use"),
        );
        self.violation(&format!("chart {id} cannot be stored under this id"))
    }

    /// Checks a chart new to the store as any change is checked: what fails is held
    /// (`Err(Ok)`); what is not a chart at all breaks the protocol (`Err(Err)`). From an
    /// enrolled tablet, each change's proof is checked and each writer's changes are checked
    /// as theirs; what the store keeps with the chart comes back.
    /// The chart comes back with its changes (those taken, after a restore).
    #[allow(clippy::type_complexity)]
    fn check_new_chart(
        &self,
        doc: Automerge,
    ) -> Result<(Chart, Proven, Vec<(ChangeHash, Vec<u8>)>), Result<Refusal, StoreError>> {
        let id = self.id;
        let access = self.access();
        let all = || new_changes(&Automerge::new(), &doc);
        if chartsync_core::chart::check_schema(&doc).is_err() {
            // Not a chart: refused with the reason validation gives.
            if let Err(r) = validate_changes(&Automerge::new(), &doc) {
                return Err(Ok(Refusal::new(r.hold_reason(), r.summary(), all())));
            }
        }
        let chart =
            Chart::from_automerge(doc).map_err(|error| Err(StoreError::Chart { id, error }))?;
        // The changes, decoded once for every check below.
        let new = match NewChanges::of(chart.doc(), &[]) {
            Ok(new) => new,
            Err(r) => {
                let changes = new_changes(&Automerge::new(), chart.doc());
                return Err(Ok(Refusal::new(r.hold_reason(), r.summary(), changes)));
            }
        };
        let changes = new.raw();
        if let Err(r) = validate_new_changes(&Automerge::new(), &new) {
            let taken_back = self
                .hub()
                .recovery
                .as_ref()
                .is_some_and(|known| only_receipted_filings(&r, known));
            if !taken_back {
                return Err(Ok(Refusal::new(r.hold_reason(), r.summary(), changes)));
            }
        }
        let connection = self.actor();
        // After a restore: a chart the server had accepted, sent back by a tablet, is taken
        // back without the checks it passed once. With changes made since (which the tablet
        // sends next, as the server still lacks them), only what was accepted is taken now:
        // the rest is checked as any change is.
        if let Some(known) = &self.hub().recovery {
            use automerge::ReadDoc as _;
            let mut kept: std::collections::HashSet<ChangeHash> = Default::default();
            let mut taken = Vec::new();
            for (h, bytes) in &changes {
                let deps_kept = chart
                    .doc()
                    .get_change_by_hash(h)
                    .is_some_and(|c| c.deps().iter().all(|d| kept.contains(d)));
                if known.contains(h) && deps_kept {
                    kept.insert(*h);
                    taken.push((*h, bytes.clone()));
                }
            }
            let accepted = |chart: Chart| {
                let hashes = taken.iter().map(|(h, _)| *h).collect();
                Ok((
                    chart,
                    Proven {
                        writers: vec![(connection.clone(), hashes)],
                        certificates: Vec::new(),
                        proofs: Vec::new(),
                    },
                    taken.clone(),
                ))
            };
            if taken.len() == changes.len() {
                return accepted(chart);
            }
            let mut part = Automerge::new();
            if !taken.is_empty() && part.load_incremental(&join(&taken)).is_ok() {
                if let Ok(part) = Chart::from_automerge(part) {
                    return accepted(part);
                }
            }
        }
        let verifier = self.peer.verifier.as_ref();
        let runs = match verifier {
            None => vec![(
                Writer {
                    user: access.user.clone(),
                    role: access.role,
                    wards: access.wards.clone(),
                    serial: None,
                },
                changes.clone(),
            )],
            Some(v) => prove(&mut lock(v), &self.hub().store, id, &chart, &changes).map_err(Ok)?,
        };
        if access.quarantined {
            return Err(Ok(Refusal::quarantined(&runs, changes)));
        }
        let whole = |who: &Writer, reason, summary: String| {
            Err(Ok(Refusal {
                reason,
                summary,
                changes: changes.clone(),
                signer: who.serial.is_some().then(|| who.clone()),
                claimed: None,
            }))
        };
        let ward_ok = |who: &Writer, step: &Chart| -> Result<bool, Result<Refusal, StoreError>> {
            let ward = step
                .encounter()
                .map_err(|error| Err(StoreError::Chart { id, error }))?
                .ward;
            Ok(who.covers(&ward) && access.may_see_ward(&ward))
        };
        const OUTSIDE: &str = "a new chart on a ward outside the writer's access";
        if let [(who, _)] = runs.as_slice() {
            // One writer (every chart from a token, most from a tablet): their changes are
            // the whole chart, checked as it is, with no replay.
            if let Err(r) = check_new_writer(&new, &who.user, who.role) {
                return whole(who, r.hold_reason(), r.summary());
            }
            if !ward_ok(who, &chart)? {
                return whole(who, HoldReason::OutsideWards, OUTSIDE.into());
            }
            let proven = proven_by(&runs, verifier, &connection);
            return Ok((chart, proven, changes));
        }
        // Each writer's changes, on the chart as the writers before them left it.
        let mut before = Automerge::new();
        for (who, run) in &runs {
            let mut after = before.fork();
            if after.load_incremental(&join(run)).is_err() {
                return whole(
                    who,
                    HoldReason::BreaksChartRules,
                    "the changes do not load".into(),
                );
            }
            let Ok(step) = Chart::from_automerge(after.clone()) else {
                return whole(
                    who,
                    HoldReason::BreaksChartRules,
                    "a writer's changes come before the chart was made".into(),
                );
            };
            if let Err(r) = check_writer(&before.get_heads(), &step, &who.user, who.role) {
                return whole(who, r.hold_reason(), r.summary());
            }
            if !ward_ok(who, &step)? {
                return whole(who, HoldReason::OutsideWards, OUTSIDE.into());
            }
            before = after;
        }
        let proven = proven_by(&runs, verifier, &connection);
        Ok((chart, proven, changes))
    }

    /// What the device sent could not be taken, for a reason that is not the chart's rules
    /// (those are held: see [`Worker::hold`]): a chart that has just left the token's wards
    /// is unavailable; bytes that are not automerge changes break the protocol.
    fn refuse(&mut self, e: StoreError) -> Output {
        let id = self.id;
        match &e {
            StoreError::Chart {
                error: ChartError::NotPermitted(_),
                ..
            } => self.deny("chart outside the token's wards"),
            StoreError::Chart { error, .. } => {
                // Summaries only: an error's own text can quote a value from the chart.
                let reason = match error {
                    ChartError::InvalidCode(_) | ChartError::InvalidCodeAt { .. } => {
                        "an invalid code".to_string()
                    }
                    ChartError::Rejected(r) => r.summary(),
                    _ => "the changes could not be read".to_string(),
                };
                tracing::warn!(user = %self.access().user, peer = %self.peer.label, chart = %id, %reason, "unreadable changes; disconnecting");
                self.audit(AuditAction::Reject, Some(&reason));
                self.violation(&format!("changes to {id} refused: {reason}"))
            }
            other => {
                tracing::error!(chart = %id, error = %other, "store error");
                self.violation("the server could not store the changes")
            }
        }
    }

    /// What to send next about a chart; when there is nothing, the exchange is complete and
    /// the sync state is worth keeping (now and then: see [`SAVE_STATE_EVERY`]).
    fn reply(&mut self) -> Output {
        let peer = self.peer.clone();
        let id = self.id;
        let Some(Doc::Chart(sync)) = &mut self.doc else {
            return Output::default();
        };
        let (local, remote) = (&peer.hub.local.peer_id, &peer.remote.peer_id);
        let read = peer.hub.store.read(self.id, |c| {
            let permitted = c.encounter().is_ok_and(|e| {
                left_reason(&peer.access, &e.ward, e.status).is_none()
                    || break_glass_open(&peer, id)
            });
            permitted
                .then(|| sync.generate(c.doc(), local, remote))
                .flatten()
        });
        // The chart could not be read (the store did not answer): nothing is lost, the
        // device's next message or the retry answers it.
        self.push_failed |= read.as_ref().is_err_and(store_unavailable);
        let reply = read.ok().flatten();
        if reply.is_none() && self.state_saved.elapsed() >= SAVE_STATE_EVERY {
            if let Some(storage) = peer.remote.storage_id() {
                let _ = peer
                    .hub
                    .store
                    .save_sync_state(storage, self.id, sync.state());
                self.state_saved = std::time::Instant::now();
            }
        }
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    fn on_chart_changed(&mut self) -> Output {
        match self.doc {
            None if self.asked => self.offer(),
            Some(Doc::Census(_)) => self.census_reply(),
            Some(Doc::Held(Some(_))) => self.push_held(),
            Some(Doc::Chart(_)) => {
                // A transfer (or, for a ward nurse, a discharge) can take the chart away.
                let left = match self.hub().store.placement(self.id) {
                    Ok(Some(s)) => self.left_reason(&s.ward, s.status),
                    // The store did not answer: that is not the chart leaving. Tried again.
                    Err(e) if store_unavailable(&e) => {
                        self.push_failed = true;
                        return Output::default();
                    }
                    Ok(None) | Err(_) => Some(LeftReason::Transferred),
                };
                let Some(reason) = left else {
                    return self.reply();
                };
                let Some(Doc::Chart(sync)) = self.doc.take() else {
                    return Output::default();
                };
                // What the device has that the server holds: with nothing more to send, the
                // device keeps the chart read-only; otherwise it sends the rest first.
                let theirs = sync.state().their_heads.clone().unwrap_or_default();
                if theirs.is_empty() && sync.state().sent_hashes.is_empty() {
                    // The device has none of it (it asked, and the chart left before any of
                    // it went out): it never had the chart, and is answered as for any chart
                    // off its wards. Told it left, it would ask for it for ever.
                    return self.unavailable();
                }
                let acknowledged = self
                    .hub()
                    .store
                    .read(self.id, |c| {
                        theirs
                            .iter()
                            .all(|h| c.doc().get_change_meta_by_hash(h).is_some())
                    })
                    .unwrap_or(false)
                    .then_some(theirs)
                    .unwrap_or_default();
                self.doc = Some(Doc::Departed(sync));
                self.told_left(&acknowledged);
                // A device with some of it unacknowledged sends the rest first, and is told
                // again, with the time to remove it, once the server has it all.
                let purge_at = (!acknowledged.is_empty())
                    .then(|| self.purge_at(reason))
                    .flatten();
                Output::send(self.notice(&ChartNotice::Left {
                    reason,
                    acknowledged,
                    purge_at,
                }))
            }
            _ => Output::default(),
        }
    }

    /// A document the device asked for earlier, now here: offer it if the token covers it.
    fn offer(&mut self) -> Output {
        let census_ward = self.census_ward();
        let is_census = census_ward.is_some();
        let ward = match census_ward {
            Some(w) => Some(w),
            None => self
                .hub()
                .store
                .summary(self.id)
                .ok()
                .flatten()
                .map(|s| s.ward),
        };
        let Some(ward) = ward.filter(|w| self.access().may_see_ward(w)) else {
            return Output::default();
        };
        self.asked = false;
        let state = self.stored_state();
        if is_census {
            self.audit(AuditAction::List, Some("ward census"));
            self.doc = Some(Doc::Census(self.doc_sync(state)));
            self.census_reply()
        } else {
            tracing::debug!(%ward, chart = %self.id, "offering a chart asked for earlier");
            self.audit(AuditAction::Read, None);
            self.doc = Some(Doc::Chart(self.doc_sync(state)));
            self.reply()
        }
    }

    /// Keeps the sync state, so the device's next connection sends only what changed.
    fn finish(&mut self) {
        let Some(storage) = self.peer.remote.storage_id() else {
            return;
        };
        if let Some(Doc::Chart(sync) | Doc::Census(sync)) = &self.doc {
            let _ = self
                .hub()
                .store
                .save_sync_state(storage, self.id, sync.state());
        }
    }
}

/// The checks every incoming change passes, as the change of one writer.
struct Checks<'a> {
    store: &'a ChartStore,
    move_window: std::time::Duration,
    chart: DocumentId,
    /// A tablet's proofs: when each change was signed (a break-glass grant is checked then).
    verifier: Option<&'a Mutex<Verifier>>,
}

impl Checks<'_> {
    /// Checks `run` (the changes `after` has beyond `prev`) as `who`'s: their access to the
    /// chart's ward, what the holding area already has of them, the chart's rules, and that
    /// they wrote only what their role writes. The held batches it settles, or why not.
    fn run(
        &self,
        prev: &Chart,
        after: &Chart,
        run: &[(ChangeHash, Vec<u8>)],
        who: &Writer,
    ) -> Result<Vec<i64>, (Refusal, ChartError)> {
        let held = |reason, summary: String| {
            (
                Refusal::new(reason, summary, Vec::new()),
                ChartError::NotPermitted("held".into()),
            )
        };
        // A break-glass grant of the writer's opens the chart whatever its ward (asked once),
        // if it covered the time the changes were signed (a tablet offline for a while), or
        // now.
        let granted = std::cell::OnceCell::new();
        let covers = |w: &str| {
            who.covers(w)
                || *granted.get_or_init(|| {
                    let hashes: Vec<ChangeHash> = run.iter().map(|(h, _)| *h).collect();
                    let signed = self
                        .verifier
                        .and_then(|v| lock(v).proofs_of(&hashes).iter().map(|p| p.signed_at).max())
                        .and_then(|s| Timestamp::from_unix(s).ok());
                    [signed, Some(Timestamp::now())]
                        .into_iter()
                        .flatten()
                        .any(|at| {
                            self.store
                                .active_break_glass(Some(&who.user), None, self.chart, at)
                                .ok()
                                .flatten()
                                .is_some()
                        })
                })
        };
        let decided = write_access(
            prev,
            after,
            who.role,
            covers,
            Timestamp::now(),
            self.move_window,
        )
        .map_err(|e| {
            (
                Refusal::new(HoldReason::BreaksChartRules, "", Vec::new()),
                e,
            )
        })?;
        match decided {
            WriteAccess::Granted | WriteAccess::GrantedAsWritten { .. } => {}
            WriteAccess::Held { reason, summary } => return Err(held(reason, summary.into())),
            // On a tablet the connection reads the chart; the person who wrote it had no
            // access of their own: held for review, not refused.
            WriteAccess::NeverHad if who.serial.is_some() => {
                return Err(held(
                    HoldReason::OutsideWards,
                    format!("{}'s certificate does not cover the chart's ward", who.user),
                ))
            }
            WriteAccess::NeverHad => {
                return Err((
                    Refusal::new(HoldReason::OutsideWards, "", Vec::new()),
                    ChartError::NotPermitted("the chart is on a ward outside the token".into()),
                ))
            }
        }
        // A refused change never reaches the record by the back door of a later one.
        let before = held_before(self.store, run);
        if before.rejected {
            return Err(held(
                HoldReason::DependsOnHeld,
                "builds on changes a records supervisor rejected".into(),
            ));
        }
        // Decoded once for both checks.
        let checked = after.new_changes(&prev.heads()).and_then(|new| {
            validate_new_changes(prev.doc(), &new)?;
            check_new_writer(&new, &who.user, who.role)
        });
        if let Err(r) = checked {
            let refusal = Refusal::new(r.hold_reason(), r.summary(), Vec::new());
            return Err((refusal, ChartError::Rejected(Box::new(r))));
        }
        // Held before, and passing every check now: what held them has changed.
        Ok(before.pending)
    }
}

/// The changes' bytes, one after another, as `load_incremental` takes them.
fn join(run: &[(ChangeHash, Vec<u8>)]) -> Vec<u8> {
    run.iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

/// Checks a tablet's proofs of `new` (the changes `candidate` has beyond the chart) and
/// groups the changes, in order, into runs by the person who proved them.
fn prove(
    verifier: &mut Verifier,
    store: &ChartStore,
    id: DocumentId,
    candidate: &Chart,
    new: &[(ChangeHash, Vec<u8>)],
) -> Result<Vec<(Writer, Vec<(ChangeHash, Vec<u8>)>)>, Refusal> {
    let authors: HashMap<ChangeHash, chartsync_core::chart::Staff> = new
        .iter()
        .filter_map(|(h, bytes)| {
            let change = chartsync_core::chart::parse_change(&bytes[..]).ok()?;
            Some((*h, candidate.author_of(&change)?))
        })
        .collect();
    let hashes: Vec<ChangeHash> = new.iter().map(|(h, _)| *h).collect();
    let now_ms = Timestamp::now().unix_millis();
    let writers = verifier
        .verify(store, id, &hashes, |h| authors.get(h).cloned(), now_ms)
        .map_err(|u| Refusal {
            reason: u.reason,
            summary: u.summary,
            claimed: u
                .signer
                .is_none()
                .then(|| {
                    new.iter()
                        .find_map(|(h, _)| authors.get(h))
                        .map(|a| (a.user.clone(), a.role))
                })
                .flatten(),
            changes: new.to_vec(),
            signer: u.signer,
        })?;
    let mut runs: Vec<(Writer, Vec<(ChangeHash, Vec<u8>)>)> = Vec::new();
    for (change, writer) in new.iter().zip(writers) {
        match runs.last_mut() {
            Some((w, run)) if *w == writer => run.push(change.clone()),
            _ => runs.push((writer, vec![change.clone()])),
        }
    }
    Ok(runs)
}

/// The audit rows and proofs a commit of `runs` writes: one `write` row per writer (the
/// person, for a tablet's proven changes; the token's user otherwise).
fn proven_by(
    runs: &[(Writer, Vec<(ChangeHash, Vec<u8>)>)],
    verifier: Option<&Mutex<Verifier>>,
    connection: &Actor,
) -> Proven {
    let mut proven = Proven::default();
    for (who, run) in runs {
        let hashes: Vec<ChangeHash> = run.iter().map(|(h, _)| *h).collect();
        let actor = match who.serial {
            Some(_) => Actor {
                user: who.user.clone(),
                role: who.role.token().to_string(),
                device: connection.device.clone(),
            },
            None => connection.clone(),
        };
        if let Some(v) = verifier {
            proven.proofs.extend(lock(v).proofs_of(&hashes));
        }
        if let Some(serial) = who.serial {
            let entry = (who.user.clone(), serial.to_string());
            if !proven.certificates.contains(&entry) {
                proven.certificates.push(entry);
            }
        }
        match proven.writers.iter_mut().find(|(a, _)| *a == actor) {
            Some((_, all)) => all.extend(hashes),
            None => proven.writers.push((actor, hashes)),
        }
    }
    proven
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The changes `after` has that `before` has not, with their bytes.
fn new_changes(before: &Automerge, after: &Automerge) -> Vec<(ChangeHash, Vec<u8>)> {
    after
        .get_changes(&before.get_heads())
        .into_iter()
        .filter(|c| before.get_change_meta_by_hash(&c.hash()).is_none())
        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
        .collect()
}

/// What the holding area has of these changes already (or of what they build on).
struct HeldBefore {
    /// Pending holds with any of them: settled if the changes pass the checks now (the
    /// author signed in, access changed, the code table was updated).
    pending: Vec<i64>,
    /// Some were rejected: nothing built on them is ever merged.
    rejected: bool,
}

fn held_before(store: &ChartStore, changes: &[(ChangeHash, Vec<u8>)]) -> HeldBefore {
    let mut hashes: Vec<ChangeHash> = Vec::new();
    for (hash, bytes) in changes {
        hashes.push(*hash);
        if let Ok(change) = chartsync_core::chart::parse_change(&bytes[..]) {
            hashes.extend(change.deps().iter().copied());
        }
    }
    let mut found = HeldBefore {
        pending: Vec::new(),
        rejected: false,
    };
    for h in hashes {
        match store.held_change(&h) {
            Ok(Some((id, HoldStatus::Pending))) => found.pending.push(id),
            Ok(Some((_, HoldStatus::Rejected))) => found.rejected = true,
            _ => {}
        }
    }
    found.pending.sort_unstable();
    found.pending.dedup();
    found
}

/// Whether the device that sent `message` has had this chart: it names heads the chart has
/// (its own, the ones it last shared, or those its changes build on), or carries changes
/// it has. Change hashes cannot be guessed, so a device that never had the chart names none.
fn had_chart(chart: &Chart, message: &automerge::sync::Message) -> bool {
    let known = |h: &ChangeHash| chart.doc().get_change_meta_by_hash(h).is_some();
    message.heads.iter().any(known)
        || message.have.iter().any(|h| h.last_sync.iter().any(known))
        || chartsync_core::protocol::sync::change_deps(message)
            .iter()
            .any(known)
        // The chart's own changes, whole (a device sending back a chart a restored server
        // lost, which another device sent back first).
        || chartsync_core::protocol::sync::changes_in(message)
            .iter()
            .any(|(h, _)| known(h))
}

/// Why a chart is no longer `access`'s to read, if it is not: off the token's wards, or
/// discharged for a ward nurse (physicians and records staff complete the record after
/// discharge).
fn left_reason(access: &Access, ward: &str, status: EncounterStatus) -> Option<LeftReason> {
    if access.quarantined {
        Some(LeftReason::Revoked)
    } else if !access.may_see_ward(ward) {
        Some(LeftReason::Transferred)
    } else if status == EncounterStatus::Discharged && access.role == Role::Nurse {
        Some(LeftReason::Discharged)
    } else {
        None
    }
}

/// When a chart left a device's wards for `reason`, as charted: the latest transfer, or the
/// discharge.
fn departed_at(chart: &chartsync_core::chart::Chart, reason: LeftReason) -> Option<Timestamp> {
    let view = chart.view().ok()?;
    match reason {
        LeftReason::Discharged => view.encounter.discharged_at,
        LeftReason::Transferred => view
            .events
            .iter()
            .filter(|e| e.kind == chartsync_core::chart::EventKind::Transfer)
            .map(|e| e.at)
            .max(),
        LeftReason::Revoked => None,
    }
}

/// Whether all `r` refuses is scanned documents filed by changes the receipts name: the
/// server filed those itself (only it files them), and a tablet sends them back after a
/// restore.
fn only_receipted_filings(
    r: &chartsync_core::chart::validate::Rejection,
    known: &std::collections::HashSet<ChangeHash>,
) -> bool {
    r.violations.iter().all(|v| match v {
        Violation::ScannedDocumentFromDevice { change, .. } => change
            .parse::<ChangeHash>()
            .is_ok_and(|h| known.contains(&h)),
        _ => false,
    })
}

/// After a restore from a backup: takes back the changes in `message` the server had accepted
/// before (its receipts), whoever wrote them — a tablet sends other people's changes it got
/// through the server, which the writer check would hold. Their structure is still checked.
/// What is not receipted goes through every check as usual.
fn take_back(
    store: &ChartStore,
    actor: &Actor,
    id: DocumentId,
    known: &std::collections::HashSet<ChangeHash>,
    message: &automerge::sync::Message,
) {
    let receipted: Vec<(ChangeHash, Vec<u8>)> = chartsync_core::protocol::sync::changes_in(message)
        .into_iter()
        .filter(|(h, _)| known.contains(h))
        .collect();
    if receipted.is_empty() {
        return;
    }
    let bytes: Vec<u8> = receipted
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let taken = store.update_as(actor, id, |chart| {
        let fresh = receipted
            .iter()
            .filter(|(h, _)| chart.doc().get_change_meta_by_hash(h).is_none())
            .count();
        if fresh == 0 {
            return Ok(0);
        }
        let mut candidate = chart.fork();
        candidate.load_incremental(&bytes)?;
        if let Err(r) = validate_changes(chart.doc(), candidate.doc()) {
            if !only_receipted_filings(&r, known) {
                return Err(ChartError::Rejected(Box::new(r)));
            }
        }
        chart.load_incremental(&bytes)?;
        Ok(fresh)
    });
    match taken {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(chart = %id, changes = n, "took back changes accepted before the restore");
        }
        Err(e) => {
            // Summaries only: a violation's own text can quote a code from the chart.
            let reason = match &e {
                StoreError::Chart {
                    error: ChartError::Rejected(r),
                    ..
                } => r.summary(),
                _ => "the store could not take them".to_string(),
            };
            tracing::warn!(chart = %id, %reason, "changes accepted before the restore did not go back in; they are checked as new");
        }
    }
}
