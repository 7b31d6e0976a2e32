//! The server with no sockets, no tasks and no threads of its own choosing: its store, the
//! hub every connection shares, the ward census keeper and the change feed, driven by a
//! caller that delivers every frame and every commit itself, in an order it chooses. The
//! deterministic simulation (`tests/tests/simulation.rs`) runs the server's real rules
//! through it; nothing here is used by `chartsync-server serve`.

use std::path::Path;
use std::sync::Arc;

use chartsync_core::chart::{ChartId, Role};
use chartsync_core::protocol::ChartNotice;
use chartsync_core::store::{Actor, ChartChanged, ChartStore, Receipts, StoreError, StoreOptions};
use chartsync_core::tablet::{EnrolRequest, EnrolResponse, SignInRequest, SignInResponse};
use chartsync_core::trust::DeviceId;

use crate::auth::Access;
use crate::sync::{Hub, Limits, ServerConnection};

pub struct InProcessServer {
    hub: Arc<Hub>,
    keeper: crate::census::Keeper,
    /// The store's commits not yet handed to the census keeper and the connections.
    feed: std::sync::mpsc::Receiver<ChartChanged>,
    data_dir: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl InProcessServer {
    /// Opens (or makes) a server's data directory as `serve --unencrypted-store` would:
    /// `charts.db`, the receipts beside it, the certificate issuer's key and the storage id.
    /// After `chartsync-records restore` (the `restored` marker), the changes accepted before
    /// are taken back without the checks, as in `serve`.
    pub fn open(
        data_dir: &Path,
        limits: Limits,
    ) -> Result<InProcessServer, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(data_dir)?;
        let receipts_path = data_dir.join(crate::RECEIPTS_FILE);
        let recovery = if data_dir.join(crate::RECOVERY_MARKER).exists() {
            Some(Arc::new(Receipts::load(&receipts_path)?))
        } else {
            None
        };
        let options = StoreOptions {
            receipts: Some(Arc::new(Receipts::open(&receipts_path)?)),
            ..StoreOptions::default()
        };
        let store = Arc::new(ChartStore::open(data_dir.join("charts.db"), options)?);
        let trust = Arc::new(crate::directory::Trust::load_or_create(
            data_dir,
            chartsync_core::trust::Policy::default(),
        )?);
        let keeper = crate::census::Keeper::start(store.clone())?;
        let feed = store.subscribe();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let hub = Arc::new(Hub::new(
            store,
            crate::storage_id(data_dir)?,
            trust,
            (tokio::sync::broadcast::channel(16).0, keeper.censuses()),
            shutdown,
            recovery,
            limits,
        )?);
        Ok(InProcessServer {
            hub,
            keeper,
            feed,
            data_dir: data_dir.to_path_buf(),
            _stop: stop,
        })
    }

    /// Backs the store up into the new file `to`, as `chartsync-records backup` does.
    pub fn backup(&self, to: &Path) -> Result<(), StoreError> {
        chartsync_core::store::backup::backup(
            &self.data_dir.join("charts.db"),
            to,
            &StoreOptions::default(),
        )
        .map(|_| ())
    }

    /// With the server stopped, puts the backup `from` in place and marks the directory as
    /// restored, as `chartsync-records restore` does; `open` then takes back from tablets
    /// what the server had accepted since.
    pub fn restore(data_dir: &Path, from: &Path) -> Result<(), Box<dyn std::error::Error>> {
        chartsync_core::store::backup::restore(
            from,
            &data_dir.join("charts.db"),
            &StoreOptions::default(),
        )?;
        crate::mark_restored(data_dir)?;
        Ok(())
    }

    pub fn store(&self) -> &Arc<ChartStore> {
        &self.hub.store
    }

    /// A device's connection with `access`, as `GET /sync` accepts one; `None` past the
    /// connections its sign-in may hold.
    pub fn accept(&self, access: Access) -> Option<ServerConnection> {
        ServerConnection::accept(&self.hub, access)
    }

    /// Every commit since the last call, each followed by the census changes it caused:
    /// what `serve` broadcasts to its connections, for the caller to deliver.
    pub fn commits(&mut self) -> Vec<ChartChanged> {
        let mut out = Vec::new();
        while let Ok(event) = self.feed.try_recv() {
            let census = self.keeper.on_change(&event);
            out.push(event);
            out.extend(census);
        }
        out
    }

    /// A records supervisor accepts held changes (`reject: None`) or rejects them with a
    /// reason, as `POST /api/holds/{id}/accept` and `…/reject` do: what the device that sent
    /// them is to be told (`ServerConnection::decided`).
    pub fn decide(
        &self,
        hold: i64,
        reject: Option<&str>,
    ) -> Result<(ChartId, String, ChartNotice), StoreError> {
        let reviewer = Actor {
            user: "records.supervisor".into(),
            role: Role::RecordsSupervisor.token().into(),
            device: "records-office".into(),
        };
        let batch = match reject {
            None => self.hub.store.accept_hold(hold, &reviewer)?,
            Some(reason) => self.hub.store.reject_hold(hold, &reviewer, reason)?,
        };
        let notice = crate::holds::notice_of(&batch);
        Ok((batch.chart, batch.device, notice))
    }

    /// A person in the staff directory with a password, as `PUT /api/staff/{user}` puts one.
    pub fn add_staff(
        &self,
        user: &str,
        role: Role,
        wards: &[String],
        password: &str,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let phc = crate::directory::hash_password(password)?;
        let member = chartsync_core::store::NewStaff {
            user,
            role,
            wards,
            password: Some(&phc),
            source: "local",
        };
        self.hub.store.put_staff(&administrator(), &member)?;
        Ok(())
    }

    /// A one-time enrolment code for a tablet serving `wards`, as an administrator prints one.
    pub fn enrolment_code(&self, label: &str, wards: &[String]) -> Result<String, StoreError> {
        crate::directory::enrolment(&self.hub.store, &administrator(), label, wards, 24)
            .map(|(code, _)| code)
    }

    /// A challenge for a tablet to sign, as `POST /api/devices/challenge` gives.
    pub fn challenge(&self) -> Option<[u8; 32]> {
        self.hub.trust.challenge()
    }

    /// `POST /api/devices/enrol`: the answer, or the refusal's status.
    pub fn enrol(&self, request: &EnrolRequest) -> Result<EnrolResponse, String> {
        crate::directory::redeem(&self.hub.trust, &self.hub.store, request)
            .map_err(|r| format!("enrolment refused ({})", r.status()))
    }

    /// `POST /api/devices/{id}/sign-in`: the certificate, or the refusal's status.
    pub fn sign_in(
        &self,
        device: DeviceId,
        request: SignInRequest,
    ) -> Result<SignInResponse, String> {
        crate::directory::certify(&self.hub.trust, &self.hub.store, device, request)
            .map_err(|r| format!("sign-in refused ({})", r.status()))
    }

    /// Stops the denial audit's writer (what `serve` does as it stops).
    pub fn close(self) {
        self.hub.denial_audit.finish();
    }
}

/// Who manages the directory here: the in-process server's administrator.
fn administrator() -> Actor {
    Actor {
        user: "admin".into(),
        role: Role::Admin.token().into(),
        device: "records-office".into(),
    }
}
