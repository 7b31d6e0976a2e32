//! The device sync client: keeps a tablet's store in sync with a chartsync server (or any
//! automerge-repo v1 server) over a WebSocket.
//!
//! It connects with a bearer token and syncs every chart in the store (plus any asked for with
//! [`SyncClient::fetch`]). It pushes each local commit as it lands and takes the server's pushes
//! into the store. When the network drops it reconnects with exponential backoff and jitter.
//! Sync state is kept per (server storage, chart), so a reconnect after a shift offline sends
//! only what changed. Status — offline, connecting, syncing, up to date, waiting for review,
//! sign-in required; how many charts and commits the server has not acknowledged (counted
//! from the store, so right while offline too); and the charts the server holds for review,
//! with why — is a `watch` channel; per-chart changes are the store's own change feed.
//!
//! A chart the server holds (a `chartsync/held` notice, `protocol::notice`) is held here too:
//! nothing more is sent of it on that connection, every other chart carries on, and it is
//! tried again when the cause may have changed — a decision from the server, a new token, a
//! new connection. A refused token (401) stops the retries until [`SyncClient::set_token`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use automerge::{Automerge, ChangeHash};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::chart::{Chart, ChartId, Timestamp};
use crate::protocol::{
    ChartNotice, Connection, DocSync, Incoming, LeftReason, LocalPeer, Message, PeerMetadata,
    SizeBound,
};
use crate::store::{ChartChanged, ChartFilter, ChartStore, DeviceHold, PartStored};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's sync endpoint, e.g. `ws://127.0.0.1:8080/sync`.
    pub url: String,
    /// A bearer token from `chartsync-server token`.
    pub token: String,
    /// This device's peer id (stable across restarts is best).
    pub peer_id: String,
    /// Wards whose census to follow: every chart a ward's census lists is fetched.
    pub wards: Vec<String>,
    /// Waits between reconnection attempts: doubling from `min` to `max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// What this device takes from the server in one message (the defaults suit a chart).
    /// A chart whose next message is past it is held here as behind the record, named in
    /// the status, and the connection stays up for the others.
    pub content_bounds: crate::protocol::ContentBounds,
    /// How often charts due to leave the device are looked for, online and offline (they are
    /// also looked for on each connection, and as the server's word on a chart comes in).
    pub purge_check: Duration,
}

impl ClientConfig {
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        peer_id: impl Into<String>,
    ) -> Self {
        ClientConfig {
            url: url.into(),
            token: token.into(),
            peer_id: peer_id.into(),
            wards: Vec::new(),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            content_bounds: crate::protocol::ContentBounds::default(),
            purge_check: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum SyncState {
    /// Not connected; the next attempt is due in `retry_in`.
    Offline {
        reason: String,
        retry_in: Duration,
    },
    Connecting,
    /// Connected, with messages in flight.
    Syncing,
    /// Connected, and the server has everything this device has (and the other way round).
    UpToDate,
    /// Connected, and everything is up to date but the charts in `SyncStatus::held`, which
    /// wait for a records supervisor (or for their author to sign in).
    WaitingForReview,
    /// The server refused the token (expired, or revoked): nothing is tried until a new one is
    /// given with [`SyncClient::set_token`]. Nothing local is lost meanwhile.
    SignInRequired {
        reason: String,
    },
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub state: SyncState,
    /// Charts with local changes the server has not yet acknowledged (held ones included).
    pub unacknowledged: usize,
    /// Commits in those charts the server has not yet acknowledged.
    pub unacknowledged_commits: usize,
    /// Charts whose changes the server holds for review, and why.
    pub held: Vec<DeviceHold>,
}

/// What happened to a chart on this device, beyond its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartEvent {
    /// The chart left this device's wards (a transfer, or a discharge for ward nurses), once
    /// the server had every change made to it here. It stays in the store, read-only
    /// (`ChartStore::departed`), and leaves the ward lists.
    Left { chart: ChartId, reason: LeftReason },
    /// A records supervisor rejected changes made to the chart here, for `reason`: this
    /// device's copy was set aside whole (`ChartStore::set_aside_charts`) and the record's
    /// copy is being fetched afresh. Staff re-enter what is still needed.
    SetAside { chart: ChartId, reason: String },
    /// The chart was removed from this device's store: it left the device's wards and the
    /// time to keep it read-only passed, or the tablet was revoked. The server had
    /// everything written on it here. It is listed in `ChartStore::purged_charts` (ids only),
    /// and comes back only if a ward this device follows lists it again.
    Removed { chart: ChartId, reason: LeftReason },
    /// An administrator revoked `user`'s certificate on this tablet (or the tablet itself):
    /// their sealed key is erased and they are signed out; what they wrote stays and is sent
    /// (the server holds what was proven after the revocation). They need an online sign-in.
    SignedOut { user: String },
    /// A scanned document's file someone opened ([`SyncClient::open_attachment`]) is here,
    /// whole and checked against its name: open it again to read it.
    AttachmentReady { chart: ChartId, hash: String },
    /// A file asked for did not come: the server would not send it (`reason`), or what came
    /// did not hash to its name. It is no longer asked for; opening it again asks again.
    AttachmentFailed {
        chart: ChartId,
        hash: String,
        reason: String,
    },
}

/// What opening a scanned document's file on a device gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentOpened {
    /// The file, whole and checked: it was here already.
    Here(Vec<u8>),
    /// Asked for: it comes from the server one part at a time, now if connected, else on
    /// the next connection (the ask is kept across restarts). [`ChartEvent::AttachmentReady`]
    /// says when it is here.
    Fetching,
}

enum Command {
    Fetch(ChartId),
    FetchAttachment(ChartId, String),
    SetToken(String),
    Stop,
}

pub struct SyncClient {
    store: Arc<ChartStore>,
    commands: mpsc::UnboundedSender<Command>,
    /// Fetches asked for and not yet taken up by the session: until then, not up to date.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The store's feed position up to which the client has handled local commits: a commit
    /// made after that is not yet in any status.
    handled: Arc<AtomicU64>,
    status: watch::Receiver<SyncStatus>,
    departures: broadcast::Sender<ChartEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl SyncClient {
    /// Starts syncing `store`. Call from within a multi-threaded tokio runtime.
    pub fn start(store: Arc<ChartStore>, config: ClientConfig) -> SyncClient {
        let (commands, rx) = mpsc::unbounded_channel();
        // What waits to be sent is known before the first connection, and without one.
        let ledger = Ledger::load(&store);
        let (status_tx, status) = watch::channel(ledger.status(SyncState::Connecting));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Subscribed here, not in the task: a commit made as soon as this returns is seen.
        let (store_feed, position) = store.subscribe_at();
        let handled = Arc::new(AtomicU64::new(position));
        let departures = broadcast::channel(64).0;
        let task = tokio::spawn(run(
            store.clone(),
            config,
            Channels {
                commands: rx,
                feed: store_feed,
                status: status_tx,
                pending: pending.clone(),
                handled: handled.clone(),
                ledger,
                departures: departures.clone(),
            },
        ));
        SyncClient {
            store,
            commands,
            pending,
            handled,
            status,
            departures,
            task,
        }
    }

    /// What happens to charts on this device beyond their changes: they leave its wards, or
    /// its copy is set aside after a rejection ([`ChartEvent`]).
    pub fn chart_events(&self) -> broadcast::Receiver<ChartEvent> {
        self.departures.subscribe()
    }

    /// Status changes, as they happen.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Asks the server for a chart this device has not got (it arrives in the store).
    pub fn fetch(&self, id: ChartId) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.commands.send(Command::Fetch(id)).is_err() {
            self.pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Opens the file of a scanned document chart `chart` names (`hash`, from its entry's
    /// attachment): here already, or asked for ([`AttachmentOpened`]). Files come only when
    /// opened, never with the chart; once here, a file stays until its chart leaves the device.
    pub fn open_attachment(
        &self,
        chart: ChartId,
        hash: &str,
    ) -> Result<AttachmentOpened, crate::store::StoreError> {
        match want_attachment(&self.store, chart, hash)? {
            Some(bytes) => Ok(AttachmentOpened::Here(bytes)),
            None => {
                let _ = self
                    .commands
                    .send(Command::FetchAttachment(chart, hash.to_string()));
                Ok(AttachmentOpened::Fetching)
            }
        }
    }

    /// Waits until the server and this device hold the same charts, every commit to the
    /// store before this call included; false if `timeout` passes first or the client stops.
    pub async fn wait_until_up_to_date(&self, timeout: Duration) -> bool {
        let mut status = self.status.clone();
        let target = self.store.feed_position();
        tokio::time::timeout(timeout, async {
            loop {
                let fetching = self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0;
                let seen = self.handled.load(std::sync::atomic::Ordering::SeqCst) >= target;
                match status.borrow_and_update().state {
                    SyncState::UpToDate if seen && !fetching => return true,
                    SyncState::Stopped => return false,
                    _ => {}
                }
                // A status that did not change is not published again, and a commit can be
                // handled without changing it: look again now and then as well.
                tokio::select! {
                    changed = status.changed() => if changed.is_err() {
                        return false;
                    },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Signs in again: the client reconnects with `token` at once, and tries again the charts
    /// held for reasons a new sign-in may change. Use it after `SignInRequired`, or when
    /// another person signs in on the device.
    pub fn set_token(&self, token: impl Into<String>) {
        let _ = self.commands.send(Command::SetToken(token.into()));
    }

    /// Asks the client to save its sync state and disconnect, without waiting: the status
    /// turns `Stopped` when it has. For callers that share the client.
    pub fn request_stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// Saves the sync state and disconnects.
    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.task.await;
    }
}

/// Why a session ended.
enum Ended {
    Stopped,
    Lost(String),
    /// The server refused the token.
    SignIn(String),
    /// A new token: connect again at once.
    NewToken,
}

/// What the server has not acknowledged, per chart, and what it holds: kept from the store,
/// so the counts are right offline, before the first connection and across restarts.
#[derive(Default)]
struct Ledger {
    /// Commits the server has not acknowledged, per chart that has any.
    pending: HashMap<ChartId, usize>,
    held: Vec<DeviceHold>,
}

impl Ledger {
    fn load(store: &ChartStore) -> Ledger {
        let mut ledger = Ledger {
            pending: HashMap::new(),
            held: store.device_holds().unwrap_or_default(),
        };
        for id in store.unacknowledged_charts().unwrap_or_default() {
            ledger.count(store, id);
        }
        ledger
    }

    /// Counts again one chart's commits the server has not acknowledged.
    fn count(&mut self, store: &ChartStore, id: ChartId) {
        let acked = store.acknowledged(id).unwrap_or_default();
        let n = store
            .read(id, |c| {
                let known: Vec<ChangeHash> = acked
                    .iter()
                    .filter(|h| c.doc().get_change_meta_by_hash(h).is_some())
                    .copied()
                    .collect();
                // Metadata only: `get_changes` would rebuild each change from the op set.
                c.doc().get_changes_meta(&known).len()
            })
            // A chart that cannot be read is not known to be on the server.
            .unwrap_or(1);
        if n == 0 {
            self.pending.remove(&id);
        } else {
            self.pending.insert(id, n);
        }
    }

    fn reload_held(&mut self, store: &ChartStore) {
        self.held = store.device_holds().unwrap_or_default();
    }

    fn is_held(&self, id: ChartId) -> bool {
        self.held.iter().any(|h| h.chart == id)
    }

    fn status(&self, state: SyncState) -> SyncStatus {
        SyncStatus {
            state,
            unacknowledged: self.pending.len(),
            unacknowledged_commits: self.pending.values().sum(),
            held: self.held.clone(),
        }
    }

    fn publish(&self, status: &watch::Sender<SyncStatus>, state: SyncState) {
        let next = self.status(state);
        status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

/// What the task is handed: commands in, the store's feed in, status out.
struct Channels {
    commands: mpsc::UnboundedReceiver<Command>,
    feed: std::sync::mpsc::Receiver<ChartChanged>,
    status: watch::Sender<SyncStatus>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    handled: Arc<AtomicU64>,
    ledger: Ledger,
    departures: broadcast::Sender<ChartEvent>,
}

async fn run(store: Arc<ChartStore>, mut config: ClientConfig, channels: Channels) {
    let Channels {
        mut commands,
        feed: store_feed,
        status,
        pending,
        handled,
        mut ledger,
        departures,
    } = channels;
    // Local commits, from the store's feed (a std channel) onto this task.
    let (feed_tx, mut feed) = mpsc::unbounded_channel::<ChartChanged>();
    std::thread::spawn(move || {
        for event in store_feed {
            if feed_tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut wanted: HashSet<ChartId> = HashSet::new();
    let mut backoff = config.backoff_min;
    let mut attempt: u64 = 0;
    loop {
        ledger.publish(&status, SyncState::Connecting);
        let ended = session(
            &store,
            &mut config,
            &mut Links {
                commands: &mut commands,
                feed: &mut feed,
                status: &status,
                pending: &pending,
                handled: &handled,
                ledger: &mut ledger,
                departures: &departures,
            },
            &mut wanted,
            &mut backoff,
        )
        .await;
        let (wait, state) = match ended {
            Ended::Stopped => break,
            Ended::NewToken => continue,
            Ended::Lost(reason) => {
                attempt += 1;
                let wait = jitter(backoff, attempt);
                backoff = (backoff * 2).min(config.backoff_max);
                (
                    Some(wait),
                    SyncState::Offline {
                        reason,
                        retry_in: wait,
                    },
                )
            }
            // No retries: the same token would be refused again.
            Ended::SignIn(reason) => (None, SyncState::SignInRequired { reason }),
        };
        ledger.publish(&status, state.clone());
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(365 * 86_400)));
        tokio::pin!(sleep);
        let mut purge_check = purge_timer(config.purge_check);
        loop {
            tokio::select! {
                _ = &mut sleep, if wait.is_some() => break,
                // Offline, charts due to leave go all the same; their removals are reported
                // on the next connection.
                _ = purge_check.tick() => {
                    let purged = tokio::task::block_in_place(|| store.purge_due(Timestamp::now()));
                    match purged {
                        Ok(purged) if !purged.is_empty() => {
                            for p in purged {
                                ledger.pending.remove(&p.chart);
                                let _ = departures.send(ChartEvent::Removed { chart: p.chart, reason: p.reason });
                            }
                            tokio::task::block_in_place(|| ledger.reload_held(&store));
                            ledger.publish(&status, state.clone());
                        }
                        // A store that did not answer keeps the charts: asked again next tick.
                        Ok(_) | Err(_) => {}
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Fetch(id)) => {
                        wanted.insert(id);
                        pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Kept in the store: asked for on the next connection.
                    Some(Command::FetchAttachment(..)) => {}
                    Some(Command::SetToken(token)) => {
                        config.token = token;
                        backoff = config.backoff_min;
                        break;
                    }
                    Some(Command::Stop) | None => {
                        ledger.publish(&status, SyncState::Stopped);
                        return;
                    }
                },
                // Local commits while offline wait in the store, and count in the status; the
                // next session sends them.
                Some(event) = feed.recv() => {
                    tokio::task::block_in_place(|| ledger.count(&store, event.id));
                    // Published first: a waiter that sees the commit counted as handled must
                    // see the status that includes it.
                    ledger.publish(&status, state.clone());
                    handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
    ledger.publish(&status, SyncState::Stopped);
}

/// Ticks every `period`, the first a period from now; a tick missed while busy is not made up.
fn purge_timer(period: Duration) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(10));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Between half and all of `base`, so that a ward's tablets do not reconnect in step.
fn jitter(base: Duration, attempt: u64) -> Duration {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
        ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let fraction = 0.5 + (seed % 1000) as f64 / 2000.0;
    base.mul_f64(fraction)
}

/// Counts that take effect once a status that includes them is published, or when the
/// session ends: a waiter that sees them then sees the status they changed, never the one
/// from before. Local commits handled go into `handled`; fetches taken up come out of
/// `pending`.
struct AfterPublish<F: FnMut(u64)> {
    apply: F,
    n: u64,
}

impl<F: FnMut(u64)> AfterPublish<F> {
    fn release(&mut self) {
        if self.n > 0 {
            (self.apply)(self.n);
            self.n = 0;
        }
    }
}

impl<F: FnMut(u64)> Drop for AfterPublish<F> {
    fn drop(&mut self) {
        self.release();
    }
}

/// One document on this connection.
enum Doc {
    Chart(DocSync),
    /// Asked for and not here yet.
    Wanted {
        sync: DocSync,
        doc: Box<Automerge>,
    },
    /// A ward's census, read-only: what to fetch.
    Census {
        sync: DocSync,
        doc: Box<Automerge>,
    },
    /// The server holds this chart's changes: nothing more is sent of it on this connection
    /// (the server would not take it), until a decision arrives; what the server pushes of
    /// other people's changes is still taken in (with the sync state, when there was one).
    Held(Option<DocSync>),
    /// The chart left this device's wards, and the server had everything the device wrote
    /// on it: read-only here, and nothing of it is taken from the server. It is still offered
    /// on each connection (what the device has, asking for nothing): a server restored from
    /// a backup since takes back what it had lost, and one that has it all answers that the
    /// chart left, as before.
    Departed(DocSync),
}

struct Session {
    store: Arc<ChartStore>,
    conn: Connection,
    server: String,
    server_storage: Option<String>,
    docs: HashMap<ChartId, Doc>,
    /// Taken from the client for the session, and given back when it ends.
    ledger: Ledger,
    /// The heads each chart's acknowledgement was last recorded at, to write only changes.
    acknowledged: HashMap<ChartId, Vec<ChangeHash>>,
    departures: broadcast::Sender<ChartEvent>,
    /// An enrolled tablet proves who made each change it sends.
    prover: Option<Prover>,
    /// What the server takes in one message: the defaults, lowered by what it said it takes
    /// (`ChartNotice::TooLarge`). Every chart's messages to it keep within them.
    bounds: crate::protocol::ContentBounds,
    /// What this device takes from the server in one message (`ClientConfig::content_bounds`).
    takes: crate::protocol::ContentBounds,
    /// Charts the server said were too large on this connection, and which were sent again
    /// within its bounds: a second refusal holds the chart here.
    too_large: HashSet<ChartId>,
    /// The tablet was revoked: every chart leaves it once the server has its changes.
    wiping: bool,
    /// This device's notices to the server (removals) carry a session id and a rising count.
    session_id: String,
    notices: u64,
    /// Files this connection is fetching: one ask at a time each, however often opened.
    fetching: HashSet<String>,
}

/// The session's lines to the app: commands in, local commits in, status out.
struct Links<'a> {
    commands: &'a mut mpsc::UnboundedReceiver<Command>,
    feed: &'a mut mpsc::UnboundedReceiver<ChartChanged>,
    status: &'a watch::Sender<SyncStatus>,
    pending: &'a std::sync::atomic::AtomicUsize,
    /// Counts each feed event once handled (see `SyncClient::handled`).
    handled: &'a AtomicU64,
    ledger: &'a mut Ledger,
    departures: &'a broadcast::Sender<ChartEvent>,
}

async fn session(
    store: &Arc<ChartStore>,
    config: &mut ClientConfig,
    links: &mut Links<'_>,
    wanted: &mut HashSet<ChartId>,
    backoff: &mut Duration,
) -> Ended {
    let mut request = match config.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(_) => return Ended::Lost("the server URL is not a WebSocket URL".into()),
    };
    match format!("Bearer {}", config.token).parse() {
        Ok(v) => {
            request.headers_mut().insert("authorization", v);
        }
        Err(_) => return Ended::Lost("the token is not a valid header value".into()),
    }
    let connected = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::connect_async(request),
    )
    .await;
    let mut ws = match connected {
        Err(_) => return Ended::Lost("timed out connecting".into()),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status() == 401 => {
            return Ended::SignIn(
                "the server did not accept the sign-in (expired or revoked)".into(),
            )
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            return Ended::Lost(format!(
                "the server refused the connection ({})",
                r.status()
            ))
        }
        Ok(Err(e)) => return Ended::Lost(format!("could not connect: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut conn, join) = Connection::initiate(local_peer(store, config));
    if ws
        .send(WsMessage::Binary(join.encode().into()))
        .await
        .is_err()
    {
        return Ended::Lost("the connection closed during the handshake".into());
    }
    let remote = loop {
        let frame = match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(WsMessage::Binary(b)))) => b,
            Ok(Some(Ok(_))) => continue,
            _ => return Ended::Lost("no answer to the handshake".into()),
        };
        match conn.receive(&frame) {
            Ok(Incoming::Established { remote, .. }) => break remote,
            Ok(Incoming::Closed { reason }) => return Ended::Lost(reason),
            Ok(_) => continue,
            Err(v) => return Ended::Lost(v.error.to_string()),
        }
    };
    // Connected: the next loss starts the backoff again from the bottom.
    *backoff = config.backoff_min;
    let mut s = Session::start(
        store.clone(),
        conn,
        &remote,
        std::mem::take(&mut *links.ledger),
        links.departures.clone(),
        config.content_bounds,
    );
    let ended = drive(&mut s, &mut ws, config, links, wanted).await;
    *links.ledger = std::mem::take(&mut s.ledger);
    ended
}

/// The file `hash` chart `chart` names: its bytes if here and whole, else asked for in the
/// store (`None`). A chart that names no such file is an error.
fn want_attachment(
    store: &ChartStore,
    chart: ChartId,
    hash: &str,
) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
    let named = store
        .read(chart, |c| c.attachment_ref(hash))?
        .map_err(|error| crate::store::StoreError::Chart { id: chart, error })?;
    let Some(a) = named else {
        return Err(crate::store::StoreError::Invalid(format!(
            "chart {chart} has no scanned document with that file"
        )));
    };
    if let Some(bytes) = store.attachment_bytes(hash)? {
        return Ok(Some(bytes));
    }
    store.want_attachment(chart, &a)?;
    Ok(None)
}

/// Who this device is to the server.
fn local_peer(store: &ChartStore, config: &ClientConfig) -> LocalPeer {
    LocalPeer {
        peer_id: config.peer_id.clone(),
        metadata: PeerMetadata {
            storage_id: store.storage_id().ok(),
            is_ephemeral: false,
        },
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected session: the socket and the app's lines around `s`, until the connection
/// ends, the token changes or the app stops.
async fn drive(
    s: &mut Session,
    ws: &mut Socket,
    config: &mut ClientConfig,
    links: &mut Links<'_>,
    wanted: &mut HashSet<ChartId>,
) -> Ended {
    let Links {
        commands,
        feed,
        status,
        pending,
        handled,
        ..
    } = links;
    // Fetches taken up but not yet in a published status; released however the session ends.
    let mut taken_up = AfterPublish {
        apply: |n| {
            pending.fetch_sub(n as usize, std::sync::atomic::Ordering::SeqCst);
        },
        n: 0,
    };
    let mut seen = AfterPublish {
        apply: |n| {
            handled.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        },
        n: 0,
    };
    let mut out = tokio::task::block_in_place(|| s.open_all(wanted.iter().copied(), &config.wards));
    let mut purge_check = purge_timer(config.purge_check);
    loop {
        let frames = tokio::task::block_in_place(|| s.seal(std::mem::take(&mut out)));
        for m in frames {
            if ws.send(WsMessage::Binary(m.encode().into())).await.is_err() {
                s.save_all();
                return Ended::Lost("the connection dropped".into());
            }
        }
        let state = tokio::task::block_in_place(|| s.progress());
        s.ledger.publish(status, state);
        // Fetches taken up count in the status from now on, and no longer as pending: only
        // after the status that includes them is published, or a waiter could see the old
        // "up to date" with nothing pending.
        taken_up.release();
        seen.release();
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    match tokio::task::block_in_place(|| s.on_frame(&bytes)) {
                        Ok(replies) => out.extend(replies),
                        Err(reason) => {
                            tokio::task::block_in_place(|| s.save_all());
                            return Ended::Lost(reason);
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    tokio::task::block_in_place(|| s.save_all());
                    return Ended::Lost("the connection dropped".into());
                }
                Some(Ok(_)) => {}
            },
            _ = purge_check.tick() => {
                out.extend(tokio::task::block_in_place(|| s.purge_due()));
            }
            Some(event) = feed.recv() => {
                out.extend(tokio::task::block_in_place(|| s.on_local_commit(event.id)));
                // Counted once the next status, which includes it, is out.
                seen.n += 1;
            }
            command = commands.recv() => match command {
                Some(Command::Fetch(id)) => {
                    wanted.insert(id);
                    out.extend(tokio::task::block_in_place(|| s.open(id)));
                    taken_up.n += 1;
                }
                Some(Command::FetchAttachment(chart, hash)) => {
                    out.extend(tokio::task::block_in_place(|| s.ask_attachment(chart, &hash)));
                }
                Some(Command::SetToken(token)) => {
                    config.token = token;
                    tokio::task::block_in_place(|| s.save_all());
                    let _ = ws.send(WsMessage::Close(None)).await;
                    return Ended::NewToken;
                }
                Some(Command::Stop) | None => {
                    tokio::task::block_in_place(|| s.save_all());
                    let _ = ws.send(WsMessage::Close(None)).await;
                    return Ended::Stopped;
                }
            },
        }
    }
}

/// The device's side of one connection with no socket, no task and no timer: frames in,
/// frames out, under every rule [`SyncClient`] follows (it drives the same session), each
/// event handled to the end before the next. The caller is the network: it sends the `join`
/// that [`initiate`](Self::initiate) returns, delivers the server's frames, and tells the
/// session of the store's commits (every event of [`ChartStore::subscribe`], the session's
/// own included, as the client does). Dropping it without [`close`](Self::close) is a crash:
/// the sync state since the last save is lost, what the store committed is not. The
/// deterministic simulation (`tests/tests/simulation.rs`) drives tablets through it.
pub struct DeviceSession {
    store: Arc<ChartStore>,
    config: ClientConfig,
    wanted: Vec<ChartId>,
    joining: Option<Connection>,
    session: Option<Session>,
}

impl DeviceSession {
    /// A new connection for `store` as `config` describes (its url and token are the
    /// caller's business), asking as well for the charts in `wanted`; the `join` to send.
    pub fn initiate(
        store: Arc<ChartStore>,
        config: ClientConfig,
        wanted: Vec<ChartId>,
    ) -> (DeviceSession, Message) {
        let (conn, join) = Connection::initiate(local_peer(&store, &config));
        let device = DeviceSession {
            store,
            config,
            wanted,
            joining: Some(conn),
            session: None,
        };
        (device, join)
    }

    /// Whether the handshake is done.
    pub fn is_open(&self) -> bool {
        self.session.is_some()
    }

    /// A frame from the server: what to send back, in order. `Err`: the connection is over
    /// (a violation, or the server closed it), with the sync state saved.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Vec<Message>, String> {
        if let Some(s) = self.session.as_mut() {
            return match s.on_frame(frame) {
                Ok(replies) => Ok(s.seal(replies)),
                Err(reason) => {
                    s.save_all();
                    self.session = None;
                    Err(reason)
                }
            };
        }
        let Some(conn) = self.joining.as_mut() else {
            return Err("the connection has ended".into());
        };
        match conn.receive(frame) {
            Ok(Incoming::Established { remote, .. }) => {
                let Some(conn) = self.joining.take() else {
                    return Err("the connection has ended".into());
                };
                let mut s = Session::start(
                    self.store.clone(),
                    conn,
                    &remote,
                    Ledger::load(&self.store),
                    broadcast::channel(64).0,
                    self.config.content_bounds,
                );
                let opened = s.open_all(self.wanted.iter().copied(), &self.config.wards);
                let out = s.seal(opened);
                self.session = Some(s);
                Ok(out)
            }
            Ok(Incoming::Closed { reason }) => Err(reason),
            Ok(_) => Ok(Vec::new()),
            Err(v) => Err(v.error.to_string()),
        }
    }

    /// A commit to the store (any event of its feed): what to send of it.
    pub fn local_commit(&mut self, id: ChartId) -> Vec<Message> {
        match self.session.as_mut() {
            Some(s) => {
                let out = s.on_local_commit(id);
                s.seal(out)
            }
            None => Vec::new(),
        }
    }

    /// The client's timer: removes the charts due to leave the device by the clock now
    /// (`ClientConfig::purge_check`), and what to send of it (their removals, reported).
    pub fn tick(&mut self) -> Vec<Message> {
        match self.session.as_mut() {
            Some(s) => s.purge_due(),
            None => {
                let _ = self.store.purge_due(Timestamp::now());
                Vec::new()
            }
        }
    }

    /// Asks for a chart this device has not got ([`SyncClient::fetch`]).
    pub fn fetch(&mut self, id: ChartId) -> Vec<Message> {
        self.wanted.push(id);
        match self.session.as_mut() {
            Some(s) => {
                let out: Vec<Message> = s.open(id).into_iter().collect();
                s.seal(out)
            }
            None => Vec::new(),
        }
    }

    /// Opens a scanned document's file ([`SyncClient::open_attachment`]): here already, or
    /// asked for (and the messages that ask).
    pub fn open_attachment(
        &mut self,
        chart: ChartId,
        hash: &str,
    ) -> Result<(AttachmentOpened, Vec<Message>), crate::store::StoreError> {
        if let Some(bytes) = want_attachment(&self.store, chart, hash)? {
            return Ok((AttachmentOpened::Here(bytes), Vec::new()));
        }
        let out = match self.session.as_mut() {
            Some(s) => {
                let out = s.ask_attachment(chart, hash);
                s.seal(out)
            }
            None => Vec::new(),
        };
        Ok((AttachmentOpened::Fetching, out))
    }

    /// The status [`SyncClient::status`] would publish now.
    pub fn status(&mut self) -> SyncStatus {
        match self.session.as_mut() {
            Some(s) => {
                let state = s.progress();
                s.ledger.status(state)
            }
            None => Ledger::load(&self.store).status(SyncState::Connecting),
        }
    }

    /// Ends the connection as the client does (on a drop, a new token or a stop): every
    /// document's sync state is saved.
    pub fn close(self) {
        if let Some(s) = &self.session {
            s.save_all();
        }
    }
}

impl Session {
    /// A session on an established connection to `remote`.
    fn start(
        store: Arc<ChartStore>,
        conn: Connection,
        remote: &crate::protocol::RemotePeer,
        ledger: Ledger,
        departures: broadcast::Sender<ChartEvent>,
        takes: crate::protocol::ContentBounds,
    ) -> Session {
        let prover = matches!(store.enrolment(), Ok(Some(_))).then(Prover::default);
        let store_wiping = store.wiping();
        Session {
            store,
            server: remote.peer_id.clone(),
            server_storage: remote.storage_id().map(String::from),
            conn,
            docs: HashMap::new(),
            ledger,
            acknowledged: HashMap::new(),
            departures,
            bounds: crate::protocol::ContentBounds::default(),
            takes,
            too_large: HashSet::new(),
            wiping: matches!(store_wiping, Ok(Some(_))),
            session_id: crate::seeded::uuid_v4().simple().to_string(),
            notices: 0,
            fetching: HashSet::new(),
            prover,
        }
    }

    /// Opens every chart in the store, those in `wanted`, and the census of each of `wards`.
    fn open_all(
        &mut self,
        wanted: impl IntoIterator<Item = ChartId>,
        wards: &[String],
    ) -> Vec<Message> {
        // Charts due to leave go before anything is opened; every removal the server has not
        // recorded is reported again.
        let mut out = self.purge_due();
        out.extend(self.report_purges(None));
        let local: Vec<ChartId> = self
            .store
            .list(&ChartFilter::default())
            .map(|l| l.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        for id in local.into_iter().chain(wanted) {
            out.extend(self.open(id));
        }
        for ward in wards {
            out.extend(self.open_census(ward));
        }
        out.extend(self.ask_attachments());
        out
    }

    /// Asks the server for the next part of each file wanted and not complete, unless this
    /// connection is asking for it already.
    fn ask_attachments(&mut self) -> Vec<Message> {
        let mut wanted = self.store.wanted_attachments().unwrap_or_default();
        wanted.retain(|(_, hash, _)| self.fetching.insert(hash.clone()));
        wanted
            .into_iter()
            .map(|(chart, hash, part)| {
                self.to_server(chart, &ChartNotice::AttachmentWanted { hash, part })
            })
            .collect()
    }

    /// Asks the server for the next part of one file the app opened from `chart`, unless
    /// this connection is asking for it already.
    fn ask_attachment(&mut self, chart: ChartId, hash: &str) -> Vec<Message> {
        let Ok(Some(part)) = self.store.next_part(hash) else {
            return Vec::new();
        };
        if !self.fetching.insert(hash.to_string()) {
            return Vec::new();
        }
        let hash = hash.to_string();
        vec![self.to_server(chart, &ChartNotice::AttachmentWanted { hash, part })]
    }

    /// The server asks for a part of a file (after a restore from a backup older than the
    /// filing, it lacks the file): sent if this device has the file whole and the chart names
    /// it; otherwise the server hears it is not here.
    fn give_attachment(&mut self, chart: ChartId, hash: String, part: u32) -> Vec<Message> {
        let named = self
            .store
            .read(chart, |c| c.attachment_ref(&hash))
            .ok()
            .and_then(Result::ok)
            .flatten()
            .is_some();
        let whole = named
            && self
                .store
                .attachment(&hash)
                .is_ok_and(|a| a.is_some_and(|a| a.complete));
        let notice = match whole.then(|| self.store.attachment_part(&hash, part)) {
            Some(Ok(Some(data))) => ChartNotice::AttachmentPart { hash, part, data },
            _ => ChartNotice::AttachmentUnavailable {
                hash,
                reason: "not_found".into(),
            },
        };
        vec![self.to_server(chart, &notice)]
    }

    /// A part of a file came: kept, and the next one asked for, until the file is whole.
    fn on_attachment_part(
        &mut self,
        chart: ChartId,
        hash: String,
        part: u32,
        data: &[u8],
    ) -> Vec<Message> {
        match self.store.store_attachment_part(&hash, part, data) {
            Ok(PartStored::More(next)) => {
                vec![self.to_server(chart, &ChartNotice::AttachmentWanted { hash, part: next })]
            }
            Ok(PartStored::Complete) => {
                self.fetching.remove(&hash);
                let _ = self
                    .departures
                    .send(ChartEvent::AttachmentReady { chart, hash });
                Vec::new()
            }
            Ok(PartStored::Corrupt) => {
                self.fetching.remove(&hash);
                let _ = self.store.drop_wanted_attachment(&hash);
                let _ = self.departures.send(ChartEvent::AttachmentFailed {
                    chart,
                    hash,
                    reason: "what came did not match the file's hash".into(),
                });
                Vec::new()
            }
            // Not asked for, or the store did not answer: asked again on the next connection.
            Ok(PartStored::Unwanted) | Err(_) => Vec::new(),
        }
    }

    /// A notice from this device to the server about `chart`.
    fn to_server(&mut self, chart: ChartId, notice: &ChartNotice) -> Message {
        self.notices += 1;
        Message::Ephemeral {
            document_id: chart,
            sender_id: self.conn.local().peer_id.clone(),
            target_id: self.server.clone(),
            count: self.notices,
            session_id: self.session_id.clone(),
            data: notice.encode(),
        }
    }

    /// What is to be sent of `out`: on an enrolled tablet each with its proofs; a message
    /// carrying changes nobody signed in here can prove is held back, and said so.
    fn seal(&mut self, out: Vec<Message>) -> Vec<Message> {
        let mut sealed = Vec::with_capacity(out.len());
        for mut m in out {
            if let Some(p) = self.prover.as_mut() {
                if let Some((chart, author)) = p.attach(&self.store, &mut m) {
                    self.hold_back(chart, &author);
                    continue;
                }
            }
            sealed.push(m);
        }
        sealed
    }
    fn stored_state(&self, id: ChartId) -> Option<automerge::sync::State> {
        let storage = self.server_storage.as_deref()?;
        self.store.sync_state(storage, id).ok().flatten()
    }

    /// Starts syncing a chart (one in the store, or one to ask for).
    fn open(&mut self, id: ChartId) -> Option<Message> {
        self.open_with(id, false)
    }

    /// [`open`](Self::open); `again`: the chart was departed on this connection and is back
    /// on the device's wards, and the server is asked to send again what it sent meanwhile
    /// (a departed chart takes nothing in, and automerge never sends a change twice on one
    /// connection unless asked to start over).
    fn open_with(&mut self, id: ChartId, again: bool) -> Option<Message> {
        if self.docs.contains_key(&id) {
            return None;
        }
        let me = self.conn.local().peer_id.clone();
        if self.store.departed(id).ok().flatten().is_some() {
            let mut sync = self.doc_sync(id, self.stored_state(id));
            let m = self
                .store
                .read(id, |c| sync.generate_push(c.doc(), &me, &self.server))
                .ok()
                .flatten();
            self.docs.insert(id, Doc::Departed(sync));
            return m;
        }
        if self.store.contains(id).unwrap_or(false) {
            let mut sync = self.doc_sync(id, self.stored_state(id));
            if again {
                sync.ask_again();
            }
            let m = self
                .store
                .read(id, |c| sync.generate(c.doc(), &me, &self.server))
                .ok()
                .flatten();
            self.docs.insert(id, Doc::Chart(sync));
            m
        } else {
            let mut sync = self.doc_sync(id, None);
            let doc = Box::<Automerge>::default();
            let m = sync.generate(&doc, &me, &self.server);
            self.docs.insert(id, Doc::Wanted { sync, doc });
            m
        }
    }

    /// Starts following a ward's census, from the copy kept in the store if there is one.
    fn open_census(&mut self, ward: &str) -> Option<Message> {
        let id = crate::census::census_id(ward);
        if self.docs.contains_key(&id) {
            return None;
        }
        let me = self.conn.local().peer_id.clone();
        let doc: Box<Automerge> = Box::new(
            self.store
                .census_doc(ward)
                .ok()
                .flatten()
                .map(|c| c.doc().clone())
                .unwrap_or_default(),
        );
        let mut sync = self.doc_sync(id, self.stored_state(id));
        let m = sync.generate(&doc, &me, &self.server);
        self.docs.insert(id, Doc::Census { sync, doc });
        m
    }

    fn on_local_commit(&mut self, id: ChartId) -> Vec<Message> {
        self.ledger.count(&self.store, id);
        match self.docs.get(&id) {
            Some(Doc::Chart(_)) => self.next(id).into_iter().collect(),
            // Held back for want of a proof: its author signed in, and it goes.
            Some(Doc::Held(_)) if self.held_back(id) => {
                let proven = self
                    .store
                    .unproven_changes(id)
                    .map(|u| u.is_empty())
                    .unwrap_or(false);
                if !proven {
                    return Vec::new();
                }
                let _ = self.store.clear_device_hold(id);
                self.ledger.reload_held(&self.store);
                self.docs.remove(&id);
                self.open(id).into_iter().collect()
            }
            // Written under break-glass after the chart left: sent at once (asking for
            // nothing), so the server has it before the chart's time to leave comes.
            Some(Doc::Departed(_)) => {
                let me = self.conn.local().peer_id.clone();
                let server = self.server.clone();
                let Some(Doc::Departed(sync)) = self.docs.get_mut(&id) else {
                    return Vec::new();
                };
                self.store
                    .read(id, |c| sync.generate_push(c.doc(), &me, &server))
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect()
            }
            Some(Doc::Wanted { .. } | Doc::Census { .. } | Doc::Held(_)) => Vec::new(),
            // A chart made on this device.
            None => self.open(id).into_iter().collect(),
        }
    }

    fn next(&mut self, id: ChartId) -> Option<Message> {
        let me = self.conn.local().peer_id.clone();
        let server = self.server.clone();
        let storage = self.server_storage.clone();
        let Some(Doc::Chart(sync)) = self.docs.get_mut(&id) else {
            return None;
        };
        // The server no longer shares it (a transfer off this device's wards): keep it local.
        if sync.is_unavailable() {
            return None;
        }
        let m = self
            .store
            .read(id, |c| sync.generate(c.doc(), &me, &server))
            .ok()
            .flatten();
        if m.is_none() {
            if let Some(storage) = storage {
                let _ = self.store.save_sync_state(&storage, id, sync.state());
            }
        }
        m
    }

    fn on_frame(&mut self, frame: &[u8]) -> Result<Vec<Message>, String> {
        match self.conn.receive(frame) {
            Err(v) => Err(v.error.to_string()),
            Ok(Incoming::Closed { reason }) => Err(reason),
            Ok(Incoming::Established { .. }) => Ok(Vec::new()),
            Ok(Incoming::Document(m)) => match m {
                Message::Sync {
                    document_id, data, ..
                }
                | Message::Request {
                    document_id, data, ..
                } => self.on_sync(document_id, &data),
                Message::DocUnavailable { document_id, .. } => {
                    match self.docs.get_mut(&document_id) {
                        Some(Doc::Chart(sync))
                        | Some(Doc::Wanted { sync, .. })
                        | Some(Doc::Census { sync, .. }) => sync.mark_unavailable(),
                        Some(Doc::Held(_) | Doc::Departed(_)) | None => {}
                    }
                    Ok(Vec::new())
                }
                Message::Ephemeral {
                    document_id,
                    sender_id,
                    data,
                    ..
                } if sender_id == self.server => Ok(match ChartNotice::decode(&data) {
                    Some(notice) => self.on_notice(document_id, notice),
                    None => Vec::new(),
                }),
                _ => Ok(Vec::new()),
            },
        }
    }

    /// What the server says of a chart's changes beside the sync.
    fn on_notice(&mut self, id: ChartId, notice: ChartNotice) -> Vec<Message> {
        if let ChartNotice::Revoked { serials, device } = notice {
            return self.on_revoked(id, &serials, device);
        }
        if let ChartNotice::PurgeRecorded { at } = notice {
            let _ = self.store.purge_reported(id, at);
            return Vec::new();
        }
        match notice {
            ChartNotice::AttachmentPart { hash, part, data } => {
                return self.on_attachment_part(id, hash, part, &data)
            }
            ChartNotice::AttachmentUnavailable { hash, reason } => {
                self.fetching.remove(&hash);
                let _ = self.store.drop_wanted_attachment(&hash);
                let _ = self.departures.send(ChartEvent::AttachmentFailed {
                    chart: id,
                    hash,
                    reason,
                });
                return Vec::new();
            }
            ChartNotice::AttachmentWanted { hash, part } => {
                return self.give_attachment(id, hash, part)
            }
            _ => {}
        }
        // A chart removed here meanwhile (the server answered what was sent before): nothing
        // to act on, and nothing to count as unsent.
        if !self.docs.contains_key(&id) && matches!(self.store.purged(id), Ok(Some(_))) {
            return Vec::new();
        }
        if let ChartNotice::BreakGlassFiled { signatures } = notice {
            for s in signatures {
                if let Ok(signature) = hex::decode(&s) {
                    let _ = self.store.break_glass_filed(&signature);
                }
            }
            return Vec::new();
        }
        if let Some(Doc::Census { .. }) = self.docs.get(&id) {
            // Our copy of a ward's census has changes the server has not: it was restored
            // from a backup. The census is the server's to write: start the copy afresh.
            let me = self.conn.local().peer_id.clone();
            let mut sync = self.doc_sync(id, None);
            // The fresh state is stored at once: after a crash, the old one would name the
            // old copy's changes, which the server has not got.
            if let Some(storage) = &self.server_storage {
                let _ = self.store.save_sync_state(storage, id, sync.state());
            }
            let doc = Box::<Automerge>::default();
            let m = sync.generate(&doc, &me, &self.server);
            self.docs.insert(id, Doc::Census { sync, doc });
            return m.into_iter().collect();
        }
        let since = Timestamp::now();
        let heads = self.store.read(id, |c| c.heads()).unwrap_or_default();
        let hold = |hold, reason, summary| DeviceHold {
            chart: id,
            hold,
            reason,
            summary,
            since,
            rejected: None,
        };
        // A decision on another of this chart's holds than the one this device knows of is
        // not its to act on (the server sends decisions only to the device that sent the
        // changes; a device that lost its record of the hold still acts on the answer).
        if let ChartNotice::Accepted { hold: n } | ChartNotice::Rejected { hold: n, .. } = &notice {
            let ours = match self.ledger.held.iter().find(|h| h.chart == id) {
                Some(h) => h.hold.is_none_or(|mine| mine == *n),
                None => true,
            };
            if !ours {
                return Vec::new();
            }
        }
        let reopen = match notice {
            ChartNotice::Held {
                hold: n,
                reason,
                summary,
            } => {
                let _ = self
                    .store
                    .set_device_hold(&hold(Some(n), reason, summary), &heads);
                false
            }
            ChartNotice::HoldingAreaFull { reason } => {
                let summary = "the server's holding area is full; kept here, sent again later";
                let _ = self
                    .store
                    .set_device_hold(&hold(None, reason, summary.into()), &heads);
                false
            }
            ChartNotice::Rejected { reason, .. } if self.store.set_aside(id, &reason).is_ok() => {
                // This copy can never merge with the record again: it is kept aside, and the
                // record's copy fetched afresh. The status clears.
                self.ledger.pending.remove(&id);
                self.ledger.reload_held(&self.store);
                self.acknowledged.remove(&id);
                let _ = self
                    .departures
                    .send(ChartEvent::SetAside { chart: id, reason });
                self.docs.remove(&id);
                return self.open(id).into_iter().collect();
            }
            ChartNotice::Rejected { hold: n, reason } => {
                let known = self.ledger.held.iter().find(|h| h.chart == id).cloned();
                let mut held = known.unwrap_or_else(|| {
                    hold(
                        Some(n),
                        crate::protocol::HoldReason::BreaksChartRules,
                        String::new(),
                    )
                });
                held.rejected = Some(reason);
                let _ = self.store.set_device_hold(&held, &heads);
                false
            }
            ChartNotice::Accepted { .. } => {
                let _ = self.store.clear_device_hold(id);
                true
            }
            ChartNotice::Left {
                reason,
                acknowledged,
                purge_at,
            } => return self.on_left(id, reason, acknowledged, purge_at),
            ChartNotice::TooLarge { bound, limit } => return self.on_too_large(id, bound, limit),
            ChartNotice::Revoked { .. }
            | ChartNotice::BreakGlassFiled { .. }
            | ChartNotice::Purged { .. }
            | ChartNotice::PurgeRecorded { .. }
            | ChartNotice::AttachmentWanted { .. }
            | ChartNotice::AttachmentPart { .. }
            | ChartNotice::AttachmentUnavailable { .. } => return Vec::new(),
        };
        self.ledger.reload_held(&self.store);
        // Whatever state the chart's sync was in is of no use now: start it afresh.
        if let Some(Doc::Chart(sync)) = self.docs.get(&id) {
            if let Some(storage) = &self.server_storage {
                let _ = self.store.save_sync_state(storage, id, sync.state());
            }
        }
        if reopen {
            self.docs.remove(&id);
            self.open(id).into_iter().collect()
        } else {
            let sync = match self.docs.remove(&id) {
                Some(Doc::Chart(sync) | Doc::Held(Some(sync))) => Some(sync),
                _ => None,
            };
            self.docs.insert(id, Doc::Held(sync));
            Vec::new()
        }
    }

    /// A document's sync with the server: within what this device takes, and what the
    /// server said it takes.
    fn doc_sync(&self, id: ChartId, state: Option<automerge::sync::State>) -> DocSync {
        DocSync::new(id, state)
            .with_bounds(self.takes)
            .with_peer_bounds(self.bounds)
    }

    /// The server took nothing of the chart's last message: it carried more than the server
    /// takes in one. Its bound is learned and the chart sent again within it, split into
    /// more messages; refused again, what is left is a single change past the bound, which
    /// no split can help. It is held here in plain sight (the connection stays up for every
    /// other chart) and sent again on the next connection, in case the bound was raised.
    fn on_too_large(&mut self, id: ChartId, bound: SizeBound, limit: u64) -> Vec<Message> {
        self.bounds = bound.lowered(self.bounds, limit);
        if self.too_large.insert(id) {
            self.docs.remove(&id);
            return self.open(id).into_iter().collect();
        }
        let what = match bound {
            SizeBound::Change => format!("one change inflates to more than {limit} bytes"),
            SizeBound::Message => format!("its changes inflate to more than {limit} bytes"),
            SizeBound::Changes => format!("more than {limit} changes at once"),
        };
        self.hold_here(
            id,
            crate::protocol::HoldReason::TooLarge,
            format!(
                "larger than the server accepts ({what}); kept on this tablet and sent again on the next connection"
            ),
        );
        Vec::new()
    }

    /// A message from the server this device will not take: past its bounds (a chart with
    /// a change larger than it takes) the chart is held here as behind the record, named in
    /// the status, and fetched again on the next connection; the connection stays up for
    /// the other charts. Anything else unreadable ends the connection.
    fn refused_incoming(
        &mut self,
        id: ChartId,
        error: crate::protocol::ProtocolError,
    ) -> Result<Vec<Message>, String> {
        let crate::protocol::ProtocolError::Contents { error: e, .. } = &error else {
            return Err(error.to_string());
        };
        if SizeBound::of(e).is_none() {
            return Err(error.to_string());
        }
        self.hold_here(
            id,
            crate::protocol::HoldReason::TooLarge,
            format!("the record has more than this tablet takes in one message ({e}); this copy is behind the record, and is fetched again on the next connection"),
        );
        Ok(Vec::new())
    }

    /// Holds a chart back on this tablet: it has changes made here that no one signed in can
    /// prove yet. Reported as held (with no hold on the server) until `author` signs in.
    fn hold_back(&mut self, id: ChartId, author: &str) {
        self.hold_here(
            id,
            crate::protocol::HoldReason::Unsigned,
            format!("{WAITING_FOR}{author} to sign in on this tablet"),
        );
    }

    /// Holds a chart on this tablet (no hold on the server), reported as held with `summary`
    /// until the server has its changes.
    fn hold_here(&mut self, id: ChartId, reason: crate::protocol::HoldReason, summary: String) {
        let heads = self.store.read(id, |c| c.heads()).unwrap_or_default();
        let hold = DeviceHold {
            chart: id,
            hold: None,
            reason,
            summary,
            since: Timestamp::now(),
            rejected: None,
        };
        let _ = self.store.set_device_hold(&hold, &heads);
        self.ledger.reload_held(&self.store);
        let sync = match self.docs.remove(&id) {
            Some(Doc::Chart(sync) | Doc::Held(Some(sync))) => Some(sync),
            _ => None,
        };
        self.docs.insert(id, Doc::Held(sync));
    }

    /// Whether the chart is held back here (not by the server) for want of a proof.
    fn held_back(&self, id: ChartId) -> bool {
        self.ledger.held.iter().any(|h| {
            h.chart == id
                && h.hold.is_none()
                && h.reason == crate::protocol::HoldReason::Unsigned
                && h.summary.starts_with(WAITING_FOR)
        })
    }

    /// Revocations that reach this tablet (`id` is its own device id): the people whose
    /// certificates were revoked lose their sealed keys here, and are signed out.
    /// A revoked tablet also loses every chart, each as soon as the server has
    /// what was written on it here: those it has go now, the others once sent.
    fn on_revoked(&mut self, id: ChartId, serials: &[String], device: bool) -> Vec<Message> {
        let Ok(Some(enrolment)) = self.store.enrolment() else {
            return Vec::new();
        };
        if id.as_bytes() != &enrolment.device.0 {
            return Vec::new();
        }
        for credential in self.store.credentials().unwrap_or_default() {
            let revoked = device || serials.contains(&credential.serial.to_string());
            if revoked && credential.sealed.is_some() {
                let _ = self.store.erase_credential(&credential.user, "revoked");
                let _ = self.departures.send(ChartEvent::SignedOut {
                    user: credential.user,
                });
            }
        }
        if !device {
            return Vec::new();
        }
        // Not kept across a restart if the store did not answer: the server says it again on
        // the next connection.
        let _ = self.store.set_wiping();
        self.wiping = true;
        self.purge_due()
    }

    /// Removes the charts due to leave this device (`ChartStore::purge_due`), tells the app,
    /// and reports each removal to the server.
    fn purge_due(&mut self) -> Vec<Message> {
        // A store that did not answer keeps the charts: asked again at the next check.
        let purged = self.store.purge_due(Timestamp::now()).unwrap_or_default();
        purged.into_iter().flat_map(|p| self.removed(p)).collect()
    }

    /// On a revoked tablet: removes the chart if the server has all of it.
    fn purge_if_wiping(&mut self, id: ChartId) -> Vec<Message> {
        if !self.wiping {
            return Vec::new();
        }
        match self.store.purge(id, LeftReason::Revoked) {
            Ok(Some(p)) => self.removed(p),
            // Not all of it on the server yet, or the store did not answer: kept for now.
            Ok(None) | Err(_) => Vec::new(),
        }
    }

    /// A chart was removed from the store: forgotten on this connection, the app told, and
    /// the removal reported.
    fn removed(&mut self, p: crate::store::PurgedChart) -> Vec<Message> {
        self.docs.remove(&p.chart);
        self.acknowledged.remove(&p.chart);
        self.ledger.pending.remove(&p.chart);
        self.ledger.reload_held(&self.store);
        let _ = self.departures.send(ChartEvent::Removed {
            chart: p.chart,
            reason: p.reason,
        });
        self.report_purges(Some(p.chart))
    }

    /// The removals the server has not recorded (one chart's, or all), as notices to it.
    fn report_purges(&mut self, only: Option<ChartId>) -> Vec<Message> {
        let unreported = self.store.unreported_purges().unwrap_or_default();
        unreported
            .into_iter()
            .filter(|p| only.is_none_or(|c| c == p.chart))
            .map(|p| {
                let notice = ChartNotice::Purged {
                    reason: p.reason,
                    heads: p.heads,
                    at: p.at,
                };
                self.to_server(p.chart, &notice)
            })
            .collect()
    }

    /// The chart left this device's wards. With nothing left to send it becomes read-only
    /// here; otherwise its sync starts afresh, so the rest is sent first (the server takes
    /// what was written before the move, `chart::access`), and the server says so again.
    /// From `purge_at` on, it is removed from the store (at once if that has passed).
    fn on_left(
        &mut self,
        id: ChartId,
        reason: LeftReason,
        acknowledged: Vec<ChangeHash>,
        purge_at: Option<Timestamp>,
    ) -> Vec<Message> {
        // Asked for and never had: nothing to keep read-only, and nothing more to ask for on
        // this connection (what the server still says of it is answered `doc-unavailable`).
        if matches!(self.docs.get(&id), Some(Doc::Wanted { .. })) {
            self.docs.remove(&id);
            return Vec::new();
        }
        self.record_acknowledged(id, acknowledged);
        self.ledger.count(&self.store, id);
        if self.ledger.pending.contains_key(&id) {
            self.docs.remove(&id);
            return self.open(id).into_iter().collect();
        }
        // Offered again on a new connection, and the server has it all: only the time it
        // leaves may have changed (the server's delay did, or the tablet was revoked).
        if matches!(self.docs.get(&id), Some(Doc::Departed(_))) {
            let _ = self.store.set_departed(id, reason, purge_at);
            return self.purge_due();
        }
        match self.store.set_departed(id, reason, purge_at) {
            Ok(true) => {
                let sync = self.doc_sync(id, self.stored_state(id));
                self.docs.insert(id, Doc::Departed(sync));
                let _ = self.departures.send(ChartEvent::Left { chart: id, reason });
                self.purge_due()
            }
            // A commit came in meanwhile: send it first.
            _ => {
                self.docs.remove(&id);
                self.open(id).into_iter().collect()
            }
        }
    }

    /// Records what the server now has of a chart, as its sync state says. While some of
    /// this device's changes to it are held, the server still pushes the record's heads: what
    /// it took of the same message (another nurse's changes) is acknowledged, and the held
    /// changes, which the record's heads do not cover, stay unacknowledged.
    fn acknowledge(&mut self, id: ChartId) {
        let Some(Doc::Chart(sync) | Doc::Held(Some(sync))) = self.docs.get(&id) else {
            return;
        };
        let Some(theirs) = sync.state().their_heads.clone() else {
            return;
        };
        if self.record_acknowledged(id, theirs) {
            self.ledger.count(&self.store, id);
        }
    }

    /// [`acknowledge`](Self::acknowledge); on a revoked tablet, a chart the server now has
    /// whole leaves.
    fn acknowledge_and_purge(&mut self, id: ChartId) -> Vec<Message> {
        self.acknowledge(id);
        let done = matches!(self.docs.get(&id), Some(Doc::Chart(_)))
            && !self.ledger.pending.contains_key(&id);
        if done {
            self.purge_if_wiping(id)
        } else {
            Vec::new()
        }
    }

    /// Records `heads` as what the server has of a chart, once this device knows them all (the
    /// server stores changes before it says it has them); true if that is news.
    fn record_acknowledged(&mut self, id: ChartId, heads: Vec<ChangeHash>) -> bool {
        if heads.is_empty() || self.acknowledged.get(&id) == Some(&heads) {
            return false;
        }
        let all_known = self
            .store
            .read(id, |c| {
                heads
                    .iter()
                    .all(|h| c.doc().get_change_meta_by_hash(h).is_some())
            })
            .unwrap_or(false);
        if all_known && self.store.acknowledge(id, &heads).is_ok() {
            self.acknowledged.insert(id, heads);
            return true;
        }
        false
    }

    fn on_sync(&mut self, id: ChartId, data: &[u8]) -> Result<Vec<Message>, String> {
        let mut out = self.on_sync_inner(id, data)?;
        out.extend(self.acknowledge_and_purge(id));
        Ok(out)
    }

    fn on_sync_inner(&mut self, id: ChartId, data: &[u8]) -> Result<Vec<Message>, String> {
        let me = self.conn.local().peer_id.clone();
        let server = self.server.clone();
        match self.docs.get_mut(&id) {
            // Held: other people's changes, pushed; taken in, and nothing of ours sent back.
            // A push may leave a change waiting for one the server left out (a false positive
            // of our Bloom filter): then we ask for what is missing, by hash, and the server
            // sends it (it answers a held chart's asks).
            Some(Doc::Held(Some(sync))) => {
                let msg = match sync.decode(data) {
                    Ok(msg) => msg,
                    Err(e) => return self.refused_incoming(id, e),
                };
                let ask = self
                    .store
                    .update(id, |chart| {
                        sync.receive_chart(chart, msg)
                            .map_err(|e| crate::chart::ChartError::Corrupt(e.to_string()))?;
                        Ok(sync.ask_for_missing(chart.doc(), &me, &server))
                    })
                    .map_err(|e| e.to_string())?;
                Ok(ask.into_iter().collect())
            }
            Some(Doc::Held(None)) => Ok(Vec::new()),
            // Departed: what the server says it has and lacks is heard, and it is sent what it
            // lacks; nothing of the chart is taken from it.
            Some(Doc::Departed(sync)) => {
                let msg = match sync.decode(data) {
                    Ok(msg) => msg,
                    Err(e) => return self.refused_incoming(id, e),
                };
                let next = self.store.read(id, |c| {
                    sync.hear(c.doc(), &msg)
                        .map(|()| sync.generate_push(c.doc(), &me, &server))
                });
                match next {
                    Ok(Ok(m)) => Ok(m.into_iter().collect()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Some(Doc::Chart(sync)) => {
                let msg = match sync.decode(data) {
                    Ok(msg) => msg,
                    Err(e) => return self.refused_incoming(id, e),
                };
                self.store
                    .update(id, |chart| {
                        sync.receive_chart(chart, msg)
                            .map_err(|e| crate::chart::ChartError::Corrupt(e.to_string()))
                    })
                    .map_err(|e| e.to_string())?;
                Ok(self.next(id).into_iter().collect())
            }
            Some(Doc::Wanted { sync, doc }) => {
                let msg = match sync.decode(data) {
                    Ok(msg) => msg,
                    Err(e) => return self.refused_incoming(id, e),
                };
                // A chart the tablet lacks arrives whole: those bytes are what the store
                // keeps, not compressed again.
                let whole = doc
                    .get_heads()
                    .is_empty()
                    .then(|| crate::protocol::sync::whole_document(&msg))
                    .flatten();
                sync.receive(doc, msg).map_err(|e| e.to_string())?;
                if doc.get_heads().is_empty() {
                    return Ok(sync.generate(doc, &me, &server).into_iter().collect());
                }
                let mut chart =
                    Chart::from_automerge((**doc).clone()).map_err(|e| e.to_string())?;
                if let Some(bytes) = whole {
                    chart.arrived_as(bytes);
                }
                let state = sync.state().clone();
                self.store.insert(id, chart).map_err(|e| e.to_string())?;
                self.docs
                    .insert(id, Doc::Chart(self.doc_sync(id, Some(state))));
                Ok(self.next(id).into_iter().collect())
            }
            Some(Doc::Census { sync, doc }) => {
                let msg = match sync.decode(data) {
                    Ok(msg) => msg,
                    Err(e) => return self.refused_incoming(id, e),
                };
                sync.receive(doc, msg).map_err(|e| e.to_string())?;
                let mut out: Vec<Message> = sync.generate(doc, &me, &server).into_iter().collect();
                let Ok(census) = crate::census::Census::from_automerge((**doc).clone()) else {
                    // Not arrived yet.
                    return Ok(out);
                };
                let _ = self.store.save_census_doc(&census);
                // Fetch every chart the ward lists that this device has not got; a chart that
                // left and is listed again (the patient came back) is this device's again.
                for entry in census.entries() {
                    let back = matches!(self.docs.get(&entry.id), Some(Doc::Departed(_)));
                    if back {
                        let _ = self.store.clear_departed(entry.id);
                        self.docs.remove(&entry.id);
                    }
                    if !self.docs.contains_key(&entry.id) {
                        out.extend(self.open_with(entry.id, back));
                    }
                }
                Ok(out)
            }
            // Not one this device syncs: say so, so that a peer looking for it does not wait.
            None => Ok(vec![Message::DocUnavailable {
                document_id: id,
                sender_id: me,
                target_id: server,
            }]),
        }
    }

    /// Up to date when every chart's sync has gone quiet with the server holding our heads;
    /// waiting for review when only held charts are left.
    fn progress(&mut self) -> SyncState {
        let mut busy = false;
        let mut acknowledged = Vec::new();
        for (id, doc) in &self.docs {
            match doc {
                Doc::Chart(sync) if sync.is_unavailable() => {}
                Doc::Chart(sync) => {
                    let ours: Vec<ChangeHash> =
                        self.store.read(*id, |c| c.heads()).unwrap_or_default();
                    if sync.peer_has(&ours) {
                        acknowledged.push(*id);
                    } else {
                        busy = true;
                    }
                }
                Doc::Wanted { sync, .. } => busy |= !sync.is_unavailable(),
                Doc::Census { sync, doc } => {
                    busy |= !sync.is_unavailable() && !sync.peer_has(&doc.get_heads())
                }
                Doc::Held(_) | Doc::Departed(_) => {}
            }
        }
        // A held chart whose changes the server now has (accepted while this device was away)
        // is held no longer.
        let mut cleared = false;
        for id in acknowledged {
            if self.ledger.is_held(id) && self.store.clear_device_hold(id).is_ok() {
                cleared = true;
            }
        }
        if cleared {
            self.ledger.reload_held(&self.store);
        }
        // Never "up to date" while a chart has changes the server has not acknowledged (a
        // chart it stopped sharing included): only held charts may wait.
        let waiting_elsewhere = self
            .ledger
            .pending
            .keys()
            .any(|id| !self.ledger.is_held(*id));
        if busy || waiting_elsewhere {
            SyncState::Syncing
        } else if self.ledger.held.is_empty() {
            SyncState::UpToDate
        } else {
            SyncState::WaitingForReview
        }
    }

    fn save_all(&self) {
        let Some(storage) = &self.server_storage else {
            return;
        };
        for (id, doc) in &self.docs {
            if let Doc::Chart(sync) | Doc::Census { sync, .. } | Doc::Departed(sync) = doc {
                let _ = self.store.save_sync_state(storage, *id, sync.state());
            }
        }
    }
}

/// How a chart held back on the tablet for want of a proof is described (then the author).
const WAITING_FOR: &str = "waiting for ";

/// Adds proofs of authorship to what an enrolled tablet sends: for each change a `sync` or
/// `request` carries, the proofs the store keeps, and each certificate they name the first
/// time it is needed on the connection (docs/protocol.md, "Proofs of authorship").
#[derive(Default)]
struct Prover {
    sent: HashSet<crate::trust::Serial>,
}

impl Prover {
    /// Adds the proofs; `Some((chart, author))` instead when the frame carries changes made
    /// here that no proof stands for: the frame is not to be sent.
    fn attach(&mut self, store: &ChartStore, m: &mut Message) -> Option<(ChartId, String)> {
        let (Message::Sync {
            document_id,
            data,
            proofs,
            ..
        }
        | Message::Request {
            document_id,
            data,
            proofs,
            ..
        }) = m
        else {
            return None;
        };
        let Ok(message) = automerge::sync::Message::decode(data) else {
            return None;
        };
        let hashes: Vec<ChangeHash> = crate::protocol::sync::changes_in(&message)
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        // Without proofs the server holds the changes: nothing is lost, a person sees it.
        let found = store.proofs_for(*document_id, &hashes).unwrap_or_default();
        // Break-glass recorded offline for this chart goes with it until the server files it.
        let grants: Vec<crate::trust::SignedGrant> = store
            .unfiled_break_glass(*document_id)
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.grant)
            .collect();
        if found.len() < hashes.len() {
            // Some changes have no proof: those made here and not yet acknowledged wait for
            // their author (the server already has any others).
            // Those written on this tablet by its people are held back until the author
            // signs in (and signs them); others (from before enrolment) go, and the server
            // holds them for review.
            let here = store
                .enrolment()
                .ok()
                .flatten()
                .map(|e| e.device.to_string());
            let unproven = store.unproven_changes(*document_id).unwrap_or_default();
            // An author revoked here can never sign in again: her work goes, and the server
            // holds it for review, rather than wait on the tablet for good.
            let revoked = |user: &str| {
                store
                    .credential(user)
                    .ok()
                    .flatten()
                    .is_some_and(|c| c.erased_why.as_deref() == Some("revoked"))
            };
            let waiting = unproven
                .iter()
                .filter_map(|(_, a)| a.as_ref())
                .find(|a| Some(&a.device) == here.as_ref() && !revoked(&a.user));
            if let Some(author) = waiting {
                return Some((*document_id, author.user.clone()));
            }
        }
        if found.is_empty() && grants.is_empty() {
            return None;
        }
        let mut certs = Vec::new();
        for serial in found.iter().map(|p| p.serial) {
            if self.sent.insert(serial) {
                if let Ok(Some(bytes)) = store.certificate(serial) {
                    certs.push(bytes);
                }
            }
        }
        for serial in grants.iter().map(|g| g.serial) {
            if self.sent.insert(serial) {
                if let Ok(Some(bytes)) = store.certificate(serial) {
                    certs.push(bytes);
                }
            }
        }
        *proofs = Some(Box::new(crate::trust::ProofBundle {
            certs,
            proofs: found,
            grants,
        }));
        None
    }
}
