//! The sync client, for the apps: started with a server URL and a token, it syncs the store
//! in the background (on the library's own threads), reconnects by itself, and tells the
//! app's listener what changed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chartsync_core::chart::ChartId;
use chartsync_core::client::{self as core_client, ClientConfig, SyncState};
use chartsync_core::protocol::LeftReason;
use chartsync_core::store::DeviceHold;

use crate::error::ChartsyncError;
use crate::store::ChartStore;

/// Where to sync. The token is given apart (`SyncClient.start`, `set_token`), so that no
/// `toString()` or `repr` of this record ever prints it.
#[derive(uniffi::Record)]
pub struct SyncConfig {
    /// The server's sync endpoint, e.g. `wss://charts.hospital.example/sync`.
    pub url: String,
    /// This device's id, the same across restarts (the audit trail names it).
    pub device_id: String,
    /// Wards whose charts to keep on the device: every chart on their census is fetched.
    pub wards: Vec<String>,
}

#[derive(uniffi::Record)]
pub struct SyncStatus {
    pub state: SyncState,
    /// Charts with local changes the server has not yet acknowledged (held ones included);
    /// right while offline and before the first connection too.
    pub unacknowledged: u64,
    /// Commits in those charts the server has not yet acknowledged.
    pub unacknowledged_commits: u64,
    /// Charts whose changes the server holds for a records supervisor, with why.
    pub held: Vec<DeviceHold>,
}

impl From<core_client::SyncStatus> for SyncStatus {
    fn from(s: core_client::SyncStatus) -> Self {
        SyncStatus {
            state: s.state,
            unacknowledged: s.unacknowledged as u64,
            unacknowledged_commits: s.unacknowledged_commits as u64,
            held: s.held,
        }
    }
}

/// Implemented by the app. Called on a background thread: return quickly (post to the UI
/// thread), and do not call back into the sync client from it. A listener that throws is
/// logged and goes on hearing.
#[uniffi::export(with_foreign)]
pub trait ChartsyncListener: Send + Sync {
    /// A chart in the store changed: written on this device or received from the server.
    /// `sections`: the parts of it written (`entries`, `signatures`, `coding` ...).
    fn chart_changed(&self, id: ChartId, sections: Vec<String>);
    /// Offline, connecting, syncing, up to date, waiting for review, sign-in required; how
    /// many charts and commits wait to be sent; which charts the server holds, and why.
    fn sync_status_changed(&self, status: SyncStatus);
    /// A chart left this device's wards (a transfer; for ward nurses, a discharge), and the
    /// server has everything written on it here. It stays in the store, read-only, and leaves
    /// the ward lists.
    fn chart_left(&self, id: ChartId, reason: LeftReason);
    /// A records supervisor rejected changes made to this chart on this device, for
    /// `reason`: this device's copy was set aside whole (`ChartStore.setAsideCharts`) and the
    /// record's copy is fetched afresh. Show the nurse what to re-enter.
    fn chart_set_aside(&self, id: ChartId, reason: String);
    /// The chart was removed from this device's store: it left the device's wards and the
    /// time to keep it passed (a day, by default), or the tablet was revoked. The server had
    /// everything written on it here. Close any screen showing it; `ChartStore.purgedCharts`
    /// lists what was removed (ids only).
    fn chart_removed(&self, id: ChartId, reason: LeftReason);
    /// An administrator revoked `user`'s access on this tablet (or the tablet itself): their
    /// key here is erased. Lock any session of theirs and show the sign-in screen; what they
    /// wrote stays and is sent.
    fn signed_out(&self, user: String);
    /// A scanned document's file someone opened (`SyncClient.openAttachment`) came whole and
    /// checked against its hash: open it again to show it.
    fn attachment_ready(&self, id: ChartId, hash: String);
    /// A file asked for did not come: the server would not send it (`reason`: `not_permitted`,
    /// the chart is no longer on the tablet's wards; `not_found`), or what came did not match
    /// its hash. Say so; opening it again asks again.
    fn attachment_failed(&self, id: ChartId, hash: String, reason: String);
}

/// What opening a scanned document's file gives.
#[derive(uniffi::Enum)]
pub enum AttachmentOpened {
    /// The file, whole and checked (PDF, JPEG or PNG, as the entry's attachment says).
    Here { bytes: Vec<u8> },
    /// Asked for: now if connected, else on the next connection (kept across restarts);
    /// `attachment_ready` says when it is here.
    Fetching,
}

/// The app's listeners, each under the handle `add_listener` gave it.
#[derive(Default)]
struct Listeners {
    next: AtomicU64,
    all: Mutex<Vec<(u64, Arc<dyn ChartsyncListener>)>>,
}

impl Listeners {
    fn add(&self, listener: Arc<dyn ChartsyncListener>) -> u64 {
        let handle = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.all).push((handle, listener));
        handle
    }

    fn remove(&self, handle: u64) -> bool {
        let mut all = lock(&self.all);
        let before = all.len();
        all.retain(|(h, _)| *h != handle);
        all.len() != before
    }

    /// Tells every listener; one that throws (a panic, on this side) is logged, and it and
    /// the others go on hearing.
    fn tell(&self, what: &str, call: impl Fn(&dyn ChartsyncListener)) {
        let now: Vec<_> = lock(&self.all).clone();
        for (handle, listener) in now {
            let told =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(listener.as_ref())));
            if told.is_err() {
                tracing::warn!(
                    listener = handle,
                    call = what,
                    "an app listener threw; it keeps receiving"
                );
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The library's own threads for sync: two workers, made on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chartsync-sync")
            .enable_all()
            .build()
            .expect("the sync threads could not be started")
    })
}

#[derive(uniffi::Object)]
pub struct SyncClient {
    client: Arc<core_client::SyncClient>,
    listeners: Arc<Listeners>,
    /// Tells the listeners' threads to finish.
    stopped: Arc<AtomicBool>,
    /// The thread that tells the listeners of chart changes; joined by `stop`.
    listener_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A client the app lets go of stops too: its threads must not outlive the app's interest.
impl Drop for SyncClient {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        self.client.request_stop();
    }
}

#[uniffi::export]
impl SyncClient {
    /// Starts syncing `store` with the server as the person `token` names. Returns at once;
    /// the client connects, and reconnects with backoff whenever the network drops, until
    /// `stop`. `listener`, if given, is the first of the app's listeners (`add_listener`).
    #[uniffi::constructor]
    pub fn start(
        store: Arc<ChartStore>,
        config: SyncConfig,
        token: String,
        listener: Option<Arc<dyn ChartsyncListener>>,
    ) -> Result<Arc<Self>, ChartsyncError> {
        if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
            return Err(ChartsyncError::InvalidInput(
                "the sync URL must start with ws:// or wss://".into(),
            ));
        }
        if token.trim().is_empty() || config.device_id.trim().is_empty() {
            return Err(ChartsyncError::InvalidInput(
                "a token and a device id are required".into(),
            ));
        }
        let mut core_config = ClientConfig::new(config.url, token, config.device_id);
        core_config.wards = config.wards;
        let stopped = Arc::new(AtomicBool::new(false));
        let listeners = Arc::new(Listeners::default());
        if let Some(l) = listener {
            listeners.add(l);
        }
        // Subscribed before the client starts, so the listeners hear every change it makes.
        let feed = store.inner.subscribe();
        let client = {
            let _inside = runtime().enter();
            Arc::new(core_client::SyncClient::start(
                store.inner.clone(),
                core_config,
            ))
        };
        let (l, done) = (listeners.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name("chartsync-listener".into())
            .spawn(move || {
                while !done.load(Ordering::Acquire) {
                    match feed.recv_timeout(Duration::from_millis(250)) {
                        Ok(event) => {
                            let sections: Vec<String> = event.sections.into_iter().collect();
                            l.tell("chart_changed", |x| {
                                x.chart_changed(event.id, sections.clone())
                            });
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| ChartsyncError::Internal(format!("no listener thread: {e}")))?;
        let mut events = client.chart_events();
        let l = listeners.clone();
        runtime().spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let l = l.clone();
                        let told = tokio::task::spawn_blocking(move || match event {
                            core_client::ChartEvent::Left { chart, reason } => {
                                l.tell("chart_left", |x| x.chart_left(chart, reason))
                            }
                            core_client::ChartEvent::SetAside { chart, reason } => l
                                .tell("chart_set_aside", |x| {
                                    x.chart_set_aside(chart, reason.clone())
                                }),
                            core_client::ChartEvent::Removed { chart, reason } => {
                                l.tell("chart_removed", |x| x.chart_removed(chart, reason))
                            }
                            core_client::ChartEvent::SignedOut { user } => {
                                l.tell("signed_out", |x| x.signed_out(user.clone()))
                            }
                            core_client::ChartEvent::AttachmentReady { chart, hash } => l
                                .tell("attachment_ready", |x| {
                                    x.attachment_ready(chart, hash.clone())
                                }),
                            core_client::ChartEvent::AttachmentFailed {
                                chart,
                                hash,
                                reason,
                            } => l.tell("attachment_failed", |x| {
                                x.attachment_failed(chart, hash.clone(), reason.clone())
                            }),
                        });
                        if told.await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        let mut status = client.status();
        let l = listeners.clone();
        runtime().spawn(async move {
            loop {
                let now = status.borrow_and_update().clone();
                let last = matches!(now.state, SyncState::Stopped);
                // Off the sync threads: a slow listener must not slow the sync.
                let l = l.clone();
                let told = tokio::task::spawn_blocking(move || {
                    l.tell("sync_status_changed", |x| {
                        x.sync_status_changed(now.clone().into())
                    })
                });
                if told.await.is_err() || last || status.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(Arc::new(SyncClient {
            client,
            listeners,
            stopped,
            listener_thread: Mutex::new(Some(thread)),
        }))
    }

    /// Adds a listener; the handle removes it. Several parts of an app may listen at once.
    pub fn add_listener(&self, listener: Arc<dyn ChartsyncListener>) -> u64 {
        self.listeners.add(listener)
    }

    /// Removes a listener; false if the handle names none.
    pub fn remove_listener(&self, handle: u64) -> bool {
        self.listeners.remove(handle)
    }

    /// Signs in again with a new token: the client reconnects at once, and tries again the
    /// charts held for reasons a new sign-in may change. After `SignInRequired`, or when
    /// another person signs in on the tablet.
    pub fn set_token(&self, token: String) -> Result<(), ChartsyncError> {
        if token.trim().is_empty() {
            return Err(ChartsyncError::InvalidInput("a token is required".into()));
        }
        self.client.set_token(token);
        Ok(())
    }

    pub fn status(&self) -> SyncStatus {
        self.client.status().borrow().clone().into()
    }

    /// Asks the server for a chart this device has not got; it arrives in the store.
    pub fn fetch(&self, id: String) -> Result<(), ChartsyncError> {
        self.client.fetch(crate::error::chart_id(&id)?);
        Ok(())
    }

    /// Opens the file of one of chart `id`'s scanned documents (`hash`, from its entry's
    /// attachment): here already, or asked for. Files come only when opened, never with the
    /// chart, and stay until the chart leaves the tablet.
    pub fn open_attachment(
        &self,
        id: String,
        hash: String,
    ) -> Result<AttachmentOpened, ChartsyncError> {
        let id = crate::error::chart_id(&id)?;
        Ok(match self.client.open_attachment(id, &hash)? {
            core_client::AttachmentOpened::Here(bytes) => AttachmentOpened::Here { bytes },
            core_client::AttachmentOpened::Fetching => AttachmentOpened::Fetching,
        })
    }

    /// Waits until the server and this device hold the same charts; false if `timeout_ms`
    /// passed first.
    pub async fn wait_until_up_to_date(&self, timeout_ms: u64) -> bool {
        let client = self.client.clone();
        let timeout = Duration::from_millis(timeout_ms);
        runtime()
            .spawn(async move { client.wait_until_up_to_date(timeout).await })
            .await
            .unwrap_or(false)
    }

    /// Saves the sync state and disconnects; waits (up to 10 s) until it has. When it
    /// returns, the listener hears nothing more of chart changes.
    pub async fn stop(&self) {
        self.client.request_stop();
        self.stopped.store(true, Ordering::Release);
        let mut status = self.client.status();
        let thread = self
            .listener_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let _ = runtime()
            .spawn(async move {
                let stopped = status.wait_for(|s| matches!(s.state, SyncState::Stopped));
                let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
                if let Some(thread) = thread {
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                }
            })
            .await;
    }
}
