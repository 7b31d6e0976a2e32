//! `GET /sync`: one WebSocket per device, speaking automerge-repo's protocol (core's
//! `protocol`), with the hospital's rules on top:
//! - a chart the token's wards do not cover answers `doc-unavailable`, exactly as a chart that
//!   does not exist;
//! - every incoming change is checked on a fork of the chart (the chart's rules, the role's
//!   sections, the author) before the chart takes it; a peer that sends an invalid change gets
//!   `error` and is disconnected, and nothing it sent is kept;
//! - a change is durable in the store before the reply that acknowledges it;
//! - a device may send a chart the server has not got, on a ward its token covers;
//! - sync state is kept per (device storage, chart), so a reconnect sends only what changed;
//! - commits from other devices are pushed as they land.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::Automerge;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use chartsync_core::chart::validate::{check_writer, validate_changes};
use chartsync_core::chart::{Chart, ChartError};
use chartsync_core::protocol::sync::{applicable, changes_of, unknown_changes};
use chartsync_core::protocol::{
    Connection, DocSync, DocumentId, Incoming, LocalPeer, Message, RemotePeer,
};
use chartsync_core::store::{Actor, AuditAction, ChartChanged, ChartStore, StoreError};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, watch};

use crate::auth::Access;

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

enum Doc {
    /// A chart in the store.
    Chart(DocSync),
    /// A ward census, which devices read and never write.
    Census(DocSync),
    /// A chart the device is sending that the store has not got yet.
    Pending { sync: DocSync, doc: Box<Automerge> },
}

struct Session {
    hub: Arc<Hub>,
    access: Access,
    conn: Connection,
    docs: HashMap<DocumentId, Doc>,
    /// Documents the device asked for that were unavailable: offered when they appear.
    asked: std::collections::HashSet<DocumentId>,
}

pub async fn serve_socket(socket: WebSocket, hub: Arc<Hub>, access: Access) {
    let (mut tx, mut rx) = socket.split();
    let metrics = hub.metrics.clone();
    metrics.connections.inc();
    let mut feed = hub.changes.subscribe();
    let mut shutdown = hub.shutdown.clone();
    // The session lasts no longer than its token.
    let expiry = tokio::time::sleep(access.remaining());
    tokio::pin!(expiry);
    let mut session = Session {
        conn: Connection::accept(hub.local.clone()),
        hub,
        access,
        docs: HashMap::new(),
        asked: Default::default(),
    };
    loop {
        let out = tokio::select! {
            frame = rx.next() => match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    metrics.messages_received.inc();
                    metrics.bytes_received.inc_by(bytes.len() as u64);
                    let started = std::time::Instant::now();
                    let out = tokio::task::block_in_place(|| session.on_frame(&bytes));
                    metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
                    out
                }
                Some(Ok(WsMessage::Text(_))) => Output {
                    send: vec![session.error("text frames are not part of the protocol")],
                    close: true,
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue, // ping and pong: answered by axum
            },
            event = feed.recv() => match event {
                Ok(changed) => tokio::task::block_in_place(|| session.on_chart_changed(changed.id)),
                // Missed some: offer every open chart again; automerge sends only what is new.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    tokio::task::block_in_place(|| session.on_lagged())
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = shutdown.changed() => Output { send: Vec::new(), close: true },
            _ = &mut expiry => session.violation("the token has expired"),
        };
        let mut failed = false;
        for m in out.send {
            let frame = m.encode();
            metrics.messages_sent.inc();
            metrics.bytes_sent.inc_by(frame.len() as u64);
            if tx.send(WsMessage::Binary(frame.into())).await.is_err() {
                failed = true;
                break;
            }
        }
        if out.close || failed {
            let _ = tx.send(WsMessage::Close(None)).await;
            break;
        }
    }
    tokio::task::block_in_place(|| session.finish());
    metrics.connections.dec();
}

impl Session {
    fn remote(&self) -> Option<&RemotePeer> {
        self.conn.remote()
    }

    fn remote_id(&self) -> String {
        self.remote().map(|r| r.peer_id.clone()).unwrap_or_default()
    }

    /// Who is acting, for the audit trail.
    fn actor(&self) -> Actor {
        Actor {
            user: self.access.user.clone(),
            role: self.access.role.token().to_string(),
            device: self.remote_id(),
        }
    }

    /// Records an event in the audit trail; a failure is logged, not fatal to the session.
    fn audit(&self, action: AuditAction, id: DocumentId, detail: Option<&str>) {
        if let Err(e) = self
            .hub
            .store
            .record_audit(&self.actor(), action, Some(id), detail)
        {
            tracing::error!(chart = %id, error = %e, "could not write the audit trail");
        }
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
            sender_id: Some(self.hub.local.peer_id.clone()),
            target_id: self.remote().map(|r| r.peer_id.clone()),
        }
    }

    fn unavailable(&mut self, id: DocumentId) -> Output {
        self.asked.insert(id);
        Output::send(Message::DocUnavailable {
            document_id: id,
            sender_id: self.hub.local.peer_id.clone(),
            target_id: self.remote_id(),
        })
    }

    fn on_frame(&mut self, frame: &[u8]) -> Output {
        match self.conn.receive(frame) {
            Err(v) => {
                tracing::warn!(user = %self.access.user, peer = %self.remote_id(), error = %v.error, "protocol violation; disconnecting");
                Output {
                    send: v.reply.map(|m| vec![*m]).unwrap_or_default(),
                    close: true,
                }
            }
            Ok(Incoming::Established { remote, reply }) => {
                tracing::info!(user = %self.access.user, role = %self.access.role, peer = %remote.peer_id, "device connected");
                Output {
                    send: reply.into_iter().collect(),
                    close: false,
                }
            }
            Ok(Incoming::Closed { reason }) => {
                tracing::info!(user = %self.access.user, peer = %self.remote_id(), %reason, "device disconnected");
                Output {
                    send: Vec::new(),
                    close: true,
                }
            }
            Ok(Incoming::Document(m)) => match m {
                Message::Request {
                    document_id, data, ..
                } => self.on_sync(document_id, &data, true),
                Message::Sync {
                    document_id, data, ..
                } => self.on_sync(document_id, &data, false),
                Message::DocUnavailable { document_id, .. } => {
                    if let Some(Doc::Chart(s)) = self.docs.get_mut(&document_id) {
                        s.mark_unavailable();
                    }
                    Output::default()
                }
                // Presence and remote-heads gossip are not used by chartsync's devices.
                _ => Output::default(),
            },
        }
    }

    fn on_sync(&mut self, id: DocumentId, data: &[u8], is_request: bool) -> Output {
        let census_ward = crate::census::lock(&self.hub.censuses)
            .get(&id)
            .map(|(ward, _)| ward.clone());
        if let Some(ward) = census_ward {
            if !self.access.may_see_ward(&ward) {
                self.audit(
                    AuditAction::Deny,
                    id,
                    Some("census of a ward outside the token"),
                );
                return self.unavailable(id);
            }
            return self.sync_census(id, data);
        }
        let pending = matches!(self.docs.get(&id), Some(Doc::Pending { .. }));
        match self.hub.store.summary(id) {
            Ok(Some(summary)) if self.access.may_see_ward(&summary.ward) => {
                self.sync_chart(id, data)
            }
            Ok(Some(_)) => {
                tracing::info!(user = %self.access.user, chart = %id, "denied: chart outside the token's wards");
                self.audit(
                    AuditAction::Deny,
                    id,
                    Some("chart outside the token's wards"),
                );
                self.unavailable(id)
            }
            Ok(None) if is_request && !pending => self.unavailable(id),
            Ok(None) if chartsync_core::census::is_census_id(&id) => self.unavailable(id),
            Ok(None) => self.sync_new(id, data),
            Err(e) => {
                tracing::error!(chart = %id, error = %e, "store error");
                Output {
                    send: vec![self.error("the server could not read its store")],
                    close: true,
                }
            }
        }
    }

    /// A ward census: read-only for devices.
    fn sync_census(&mut self, id: DocumentId, data: &[u8]) -> Output {
        if !matches!(self.docs.get(&id), Some(Doc::Census(_))) {
            self.audit(AuditAction::List, id, Some("ward census"));
            let state = self.stored_state(id);
            self.docs.insert(id, Doc::Census(DocSync::new(id, state)));
        }
        let (local, remote) = (self.hub.local.peer_id.clone(), self.remote_id());
        let hub = self.hub.clone();
        let Some(Doc::Census(sync)) = self.docs.get_mut(&id) else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.violation(&e.to_string()),
        };
        let novel = {
            let all = crate::census::lock(&hub.censuses);
            all.get(&id)
                .map(|(_, census)| unknown_changes(census.doc(), &message))
                .unwrap_or(Some(0))
        };
        // Changes the server already has (a device's copy of the census) are harmless.
        if novel != Some(0) {
            self.hub.metrics.rejections.inc();
            self.audit(AuditAction::Reject, id, Some("changes to a ward census"));
            return Output {
                send: vec![self.error("ward censuses are written by the server only")],
                close: true,
            };
        }
        let mut all = crate::census::lock(&hub.censuses);
        let Some((_, census)) = all.get_mut(&id) else {
            return Output::default();
        };
        if sync.receive_census(census, message).is_err() {
            drop(all);
            return Output {
                send: vec![self.error("the sync message could not be applied")],
                close: true,
            };
        }
        let reply = sync.generate(census.doc(), &local, &remote);
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    fn census_reply(&mut self, id: DocumentId) -> Output {
        let (local, remote) = (self.hub.local.peer_id.clone(), self.remote_id());
        let hub = self.hub.clone();
        let Some(Doc::Census(sync)) = self.docs.get_mut(&id) else {
            return Output::default();
        };
        let all = crate::census::lock(&hub.censuses);
        let reply = all
            .get(&id)
            .and_then(|(_, census)| sync.generate(census.doc(), &local, &remote));
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    /// The stored sync state for this device's storage, if it has one.
    fn stored_state(&self, id: DocumentId) -> Option<automerge::sync::State> {
        let storage = self.remote()?.storage_id()?.to_string();
        self.hub.store.sync_state(&storage, id).ok().flatten()
    }

    fn sync_chart(&mut self, id: DocumentId, data: &[u8]) -> Output {
        if !matches!(self.docs.get(&id), Some(Doc::Chart(_))) {
            // The first exchange about this chart on this connection: the device reads it.
            self.audit(AuditAction::Read, id, None);
            let state = self.stored_state(id);
            self.docs.insert(id, Doc::Chart(DocSync::new(id, state)));
        }
        let hub = self.hub.clone();
        let actor = self.actor();
        let (user, role) = (self.access.user.clone(), self.access.role);
        let (local, remote) = (hub.local.peer_id.clone(), self.remote_id());
        let Some(Doc::Chart(sync)) = self.docs.get_mut(&id) else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.violation(&e.to_string()),
        };
        let access = self.access.clone();
        let mut changed = false;
        let applied = hub.store.update_as(&actor, id, |chart| {
            // Access is decided on the chart as it stands now: a transfer may have just moved it.
            if !access.may_see_ward(&chart.encounter()?.ward) {
                return Err(ChartError::NotPermitted(
                    "the chart is on a ward outside the token".into(),
                ));
            }
            let message = applicable(chart.doc(), message);
            let changes = changes_of(&message);
            changed = !changes.is_empty();
            if changed {
                let mut candidate = chart.fork();
                candidate.load_incremental(&changes)?;
                let reject = |r| ChartError::Rejected(Box::new(r));
                validate_changes(chart.doc(), candidate.doc()).map_err(reject)?;
                check_writer(&chart.heads(), &candidate, &user, role).map_err(reject)?;
            }
            sync.receive_chart(chart, message)
                .map_err(|e| ChartError::Corrupt(e.to_string()))
        });
        if let Err(e) = applied {
            // The sync state may have moved past what was stored: forget it.
            self.docs.remove(&id);
            return self.refuse(id, e);
        }
        if changed {
            tracing::info!(user = %self.access.user, chart = %id, "changes accepted");
        }
        self.reply(id, &local, &remote)
    }

    /// A device sends a chart the store has not got: gather it in a scratch document, and
    /// once it is a whole chart, check it as any change and store it.
    fn sync_new(&mut self, id: DocumentId, data: &[u8]) -> Output {
        let (local, remote) = (self.hub.local.peer_id.clone(), self.remote_id());
        let doc = self.docs.entry(id).or_insert_with(|| Doc::Pending {
            sync: DocSync::new(id, None),
            doc: Box::default(),
        });
        let Doc::Pending { sync, doc } = doc else {
            return Output::default();
        };
        let message = match sync.decode(data) {
            Ok(m) => m,
            Err(e) => return self.violation(&e.to_string()),
        };
        if sync.receive(doc, message).is_err() {
            return Output {
                send: vec![self.error("the sync message could not be applied")],
                close: true,
            };
        }
        if doc.get_heads().is_empty() {
            // Nothing yet: ask for it.
            let reply = sync.generate(doc, &local, &remote);
            return Output {
                send: reply.into_iter().collect(),
                close: false,
            };
        }
        let candidate = (**doc).clone();
        let state = sync.state().clone();
        match self.admit(id, candidate) {
            Ok(()) => {
                tracing::info!(user = %self.access.user, chart = %id, "new chart from a device");
                let mut sync = DocSync::new(id, Some(state));
                let reply = self
                    .hub
                    .store
                    .read(id, |c| sync.generate(c.doc(), &local, &remote))
                    .ok()
                    .flatten();
                self.docs.insert(id, Doc::Chart(sync));
                Output {
                    send: reply.into_iter().collect(),
                    close: false,
                }
            }
            Err(e) => {
                self.docs.remove(&id);
                self.refuse(id, e)
            }
        }
    }

    /// Checks a chart new to the store and stores it.
    fn admit(&self, id: DocumentId, doc: Automerge) -> Result<(), StoreError> {
        let reject = |r| StoreError::Chart {
            id,
            error: ChartError::Rejected(Box::new(r)),
        };
        validate_changes(&Automerge::new(), &doc).map_err(reject)?;
        let chart = Chart::from_automerge(doc).map_err(|error| StoreError::Chart { id, error })?;
        check_writer(&[], &chart, &self.access.user, self.access.role).map_err(reject)?;
        let ward = chart
            .encounter()
            .map_err(|error| StoreError::Chart { id, error })?
            .ward;
        if !self.access.may_see_ward(&ward) {
            return Err(StoreError::Chart {
                id,
                error: ChartError::NotPermitted("a chart on a ward outside the token".into()),
            });
        }
        self.hub.store.insert_as(&self.actor(), id, chart)
    }

    /// Refuses what the device sent: `error`, then disconnect. Nothing of it was kept.
    fn refuse(&self, id: DocumentId, e: StoreError) -> Output {
        let text = match &e {
            StoreError::Chart { error, .. } => {
                // Summaries only: a violation's own text can quote a code from the chart.
                let reason = match error {
                    ChartError::Rejected(r) => r.summary(),
                    ChartError::InvalidCode(_) | ChartError::InvalidCodeAt { .. } => {
                        "an invalid code".to_string()
                    }
                    other => other.to_string(),
                };
                tracing::warn!(user = %self.access.user, peer = %self.remote_id(), chart = %id, %reason, "changes rejected; disconnecting");
                self.audit(AuditAction::Reject, id, Some(&reason));
                self.hub.metrics.rejections.inc();
                format!("changes to {id} refused: {reason}")
            }
            other => {
                tracing::error!(chart = %id, error = %other, "store error");
                "the server could not store the changes".to_string()
            }
        };
        Output {
            send: vec![self.error(&text)],
            close: true,
        }
    }

    /// What to send next about a chart; when there is nothing, the exchange is complete and
    /// the sync state is worth keeping.
    fn reply(&mut self, id: DocumentId, local: &str, remote: &str) -> Output {
        let storage = self.remote().and_then(|r| r.storage_id()).map(String::from);
        let Some(Doc::Chart(sync)) = self.docs.get_mut(&id) else {
            return Output::default();
        };
        let access = &self.access;
        let reply = self
            .hub
            .store
            .read(id, |c| {
                let permitted = c.encounter().is_ok_and(|e| access.may_see_ward(&e.ward));
                permitted
                    .then(|| sync.generate(c.doc(), local, remote))
                    .flatten()
            })
            .ok()
            .flatten();
        if reply.is_none() {
            if let Some(storage) = storage {
                let _ = self.hub.store.save_sync_state(&storage, id, sync.state());
            }
        }
        Output {
            send: reply.into_iter().collect(),
            close: false,
        }
    }

    fn on_chart_changed(&mut self, id: DocumentId) -> Output {
        if !self.docs.contains_key(&id) && self.asked.contains(&id) && self.remote().is_some() {
            return self.offer(id);
        }
        if matches!(self.docs.get(&id), Some(Doc::Census(_))) {
            return self.census_reply(id);
        }
        if !matches!(self.docs.get(&id), Some(Doc::Chart(_))) || self.remote().is_none() {
            return Output::default();
        }
        // A transfer can take the chart off this device's wards.
        match self.hub.store.summary(id) {
            Ok(Some(s)) if self.access.may_see_ward(&s.ward) => {}
            _ => {
                // Transferred off the token's wards: tell the device it is no longer shared.
                self.docs.remove(&id);
                return self.unavailable(id);
            }
        }
        let (local, remote) = (self.hub.local.peer_id.clone(), self.remote_id());
        self.reply(id, &local, &remote)
    }

    /// A document the device asked for earlier, now here: offer it if the token covers it.
    fn offer(&mut self, id: DocumentId) -> Output {
        let census_ward = crate::census::lock(&self.hub.censuses)
            .get(&id)
            .map(|(ward, _)| ward.clone());
        let ward = match census_ward {
            Some(w) => Some(w),
            None => self.hub.store.summary(id).ok().flatten().map(|s| s.ward),
        };
        let Some(ward) = ward.filter(|w| self.access.may_see_ward(w)) else {
            return Output::default();
        };
        self.asked.remove(&id);
        let state = self.stored_state(id);
        if crate::census::lock(&self.hub.censuses).contains_key(&id) {
            self.audit(AuditAction::List, id, Some("ward census"));
            self.docs.insert(id, Doc::Census(DocSync::new(id, state)));
            self.census_reply(id)
        } else {
            tracing::debug!(%ward, chart = %id, "offering a chart asked for earlier");
            self.audit(AuditAction::Read, id, None);
            self.docs.insert(id, Doc::Chart(DocSync::new(id, state)));
            let (local, remote) = (self.hub.local.peer_id.clone(), self.remote_id());
            self.reply(id, &local, &remote)
        }
    }

    fn on_lagged(&mut self) -> Output {
        let ids: Vec<DocumentId> = self.docs.keys().chain(self.asked.iter()).copied().collect();
        let mut out = Output::default();
        for id in ids {
            out.send.extend(self.on_chart_changed(id).send);
        }
        out
    }

    fn finish(&mut self) {
        let Some(storage) = self.remote().and_then(|r| r.storage_id()).map(String::from) else {
            return;
        };
        for (id, doc) in &self.docs {
            if let Doc::Chart(sync) | Doc::Census(sync) = doc {
                let _ = self.hub.store.save_sync_state(&storage, *id, sync.state());
            }
        }
    }
}
