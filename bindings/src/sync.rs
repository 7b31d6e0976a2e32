//! The sync client, for the apps: started with a server URL and a token, it syncs the store
//! in the background (on the library's own threads), reconnects by itself, and tells the
//! app's listener what changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chartsync_core::chart::ChartId;
use chartsync_core::client::{self as core_client, ClientConfig, SyncState};
use chartsync_core::store::DeviceHold;

use crate::error::ChartsyncError;
use crate::store::ChartStore;

/// Where and as whom to sync.
#[derive(uniffi::Record)]
pub struct SyncConfig {
    /// The server's sync endpoint, e.g. `wss://charts.hospital.example/sync`.
    pub url: String,
    /// The signed-in person's bearer token (from `chartsync-server token`).
    pub token: String,
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
/// thread), and do not call back into the sync client from it.
#[uniffi::export(with_foreign)]
pub trait ChartsyncListener: Send + Sync {
    /// A chart in the store changed: written on this device or received from the server.
    /// `sections`: the parts of it written (`entries`, `signatures`, `coding` ...).
    fn chart_changed(&self, id: ChartId, sections: Vec<String>);
    /// Offline, connecting, syncing, up to date; and how many charts wait to be sent.
    fn sync_status_changed(&self, status: SyncStatus);
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
    /// Tells the listener's thread to finish.
    stopped: Arc<AtomicBool>,
    /// The thread that tells the listener of chart changes; joined by `stop`.
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
    /// Starts syncing `store` with the server. Returns at once; the client connects, and
    /// reconnects with backoff whenever the network drops, until `stop`.
    #[uniffi::constructor]
    pub fn start(
        store: Arc<ChartStore>,
        config: SyncConfig,
        listener: Option<Arc<dyn ChartsyncListener>>,
    ) -> Result<Arc<Self>, ChartsyncError> {
        if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
            return Err(ChartsyncError::InvalidInput(
                "the sync URL must start with ws:// or wss://".into(),
            ));
        }
        if config.token.trim().is_empty() || config.device_id.trim().is_empty() {
            return Err(ChartsyncError::InvalidInput(
                "a token and a device id are required".into(),
            ));
        }
        let mut core_config = ClientConfig::new(config.url, config.token, config.device_id);
        core_config.wards = config.wards;
        let stopped = Arc::new(AtomicBool::new(false));
        // Subscribed before the client starts, so the listener hears every change it makes.
        let feed = listener.as_ref().map(|_| store.inner.subscribe());
        let client = {
            let _inside = runtime().enter();
            Arc::new(core_client::SyncClient::start(
                store.inner.clone(),
                core_config,
            ))
        };
        let mut listener_thread = None;
        if let (Some(listener), Some(feed)) = (listener, feed) {
            let (l, done) = (listener.clone(), stopped.clone());
            let thread = std::thread::Builder::new()
                .name("chartsync-listener".into())
                .spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        match feed.recv_timeout(Duration::from_millis(250)) {
                            Ok(event) => {
                                l.chart_changed(event.id, event.sections.into_iter().collect())
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                })
                .map_err(|e| ChartsyncError::Internal(format!("no listener thread: {e}")))?;
            listener_thread = Some(thread);
            let mut status = client.status();
            runtime().spawn(async move {
                loop {
                    let now: SyncStatus = status.borrow_and_update().clone().into();
                    let last = matches!(now.state, SyncState::Stopped);
                    // Off the sync threads: a slow listener must not slow the sync.
                    let l = listener.clone();
                    let told = tokio::task::spawn_blocking(move || l.sync_status_changed(now));
                    if told.await.is_err() || last || status.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Arc::new(SyncClient {
            client,
            stopped,
            listener_thread: Mutex::new(listener_thread),
        }))
    }

    pub fn status(&self) -> SyncStatus {
        self.client.status().borrow().clone().into()
    }

    /// Asks the server for a chart this device has not got; it arrives in the store.
    pub fn fetch(&self, id: ChartId) {
        self.client.fetch(id);
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
