//! One document kept in sync with one remote peer: automerge's sync state, wrapped in the
//! protocol's `request` / `sync` / `doc-unavailable` messages.

use std::collections::{HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;

use super::contents::{self, ContentBounds};
use super::error::ProtocolError;
use super::message::{DocumentId, Message};

#[derive(Debug, Clone)]
pub struct DocSync {
    document_id: DocumentId,
    state: sync::State,
    unavailable: bool,
    /// Changes that arrived ahead of a change they depend on (see [`DocSync::admit`]).
    waiting: Vec<Waiting>,
    waiting_limit: usize,
    /// Some waiting changes were forgotten (see [`DocSync::forgot_waiting`]).
    forgot: bool,
    /// What one incoming message may carry (`contents`): past it, refused.
    bounds: ContentBounds,
    /// What the peer takes in one message: outgoing messages are split to keep within it.
    /// The same as `bounds` unless the peer said it takes less (`ChartNotice::TooLarge`).
    peer_bounds: ContentBounds,
    /// Bytes of changes one outgoing message carries at most (one change larger than that
    /// goes alone): a document of any size reaches a peer whose frames are bounded.
    message_limit: usize,
    /// The rest of an outgoing message that was split: sent one per call to `generate`,
    /// that is, one each time the peer answers.
    outbox: std::collections::VecDeque<Vec<u8>>,
    /// What `ask_for_missing` last asked for.
    asked: Vec<automerge::ChangeHash>,
}

/// What a generated sync message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// Changes, and what we need (with what waiting changes lack).
    Everything,
    /// What we need only: nothing of the document.
    OnlyAsk,
    /// Changes only: ask for nothing.
    OnlyChanges,
}

/// A change set aside until its dependencies arrive.
#[derive(Debug, Clone)]
struct Waiting {
    hash: automerge::ChangeHash,
    deps: Vec<automerge::ChangeHash>,
    bytes: Vec<u8>,
}

/// How many bytes of changes one document may keep waiting for their dependencies. Past it the
/// oldest are forgotten ([`DocSync::forgot_waiting`]): they were never acknowledged, but the
/// peer never sends a change twice on one connection, so the connection must end for it to
/// send them again.
pub const MAX_WAITING_BYTES: usize = 16 << 20;

/// Bytes of changes one outgoing sync message carries at most, by default: well inside the
/// 16 MiB frame limit (`MAX_MESSAGE_BYTES`).
pub const MAX_OUTGOING_CHANGES_BYTES: usize = 4 << 20;

impl DocSync {
    /// `state`: what was stored for this peer's storage after the last session, so that the
    /// first exchange sends only what changed since.
    pub fn new(document_id: DocumentId, state: Option<sync::State>) -> DocSync {
        DocSync {
            document_id,
            state: state.unwrap_or_default(),
            unavailable: false,
            waiting: Vec::new(),
            waiting_limit: MAX_WAITING_BYTES,
            forgot: false,
            bounds: ContentBounds::default(),
            peer_bounds: ContentBounds::default(),
            message_limit: MAX_OUTGOING_CHANGES_BYTES,
            outbox: std::collections::VecDeque::new(),
            asked: Vec::new(),
        }
    }

    /// Carries at most `bytes` of changes in one outgoing message (default
    /// [`MAX_OUTGOING_CHANGES_BYTES`]); more are split over several messages.
    pub fn with_message_limit(mut self, bytes: usize) -> DocSync {
        self.message_limit = bytes.max(1);
        self
    }

    /// Refuses incoming messages past `bounds` (default [`ContentBounds::default`]), and
    /// splits outgoing ones to keep within them: the peer's are taken to be the same.
    pub fn with_bounds(mut self, bounds: ContentBounds) -> DocSync {
        self.bounds = bounds;
        self.peer_bounds = bounds;
        self
    }

    /// Splits outgoing messages to keep within `bounds`, what the peer said it takes; what
    /// this side takes stays as it was.
    pub fn with_peer_bounds(mut self, bounds: ContentBounds) -> DocSync {
        self.peer_bounds = bounds;
        self
    }

    /// Keeps at most `bytes` of changes waiting for their dependencies (default
    /// [`MAX_WAITING_BYTES`]).
    pub fn with_waiting_limit(mut self, bytes: usize) -> DocSync {
        self.waiting_limit = bytes;
        self
    }

    /// Whether changes waiting for their dependencies had to be forgotten (past the limit)
    /// since last asked: the peer will not send them again on this connection, so end it.
    pub fn forgot_waiting(&mut self) -> bool {
        std::mem::take(&mut self.forgot)
    }

    pub fn document_id(&self) -> DocumentId {
        self.document_id
    }

    /// The state to store when the session ends (or after each exchange).
    pub fn state(&self) -> &sync::State {
        &self.state
    }

    /// Whether the peer has said its heads are exactly `heads` (sorted or not): it has
    /// everything we have and nothing we lack.
    pub fn peer_has(&self, heads: &[automerge::ChangeHash]) -> bool {
        let Some(theirs) = &self.state.their_heads else {
            return false;
        };
        let mut a = theirs.clone();
        let mut b = heads.to_vec();
        a.sort();
        b.sort();
        a == b
    }

    /// The peer has said it has not got the document (or may not share it).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    pub fn mark_unavailable(&mut self) {
        self.unavailable = true;
    }

    /// The next message to send, if automerge has anything to say. While we hold nothing of
    /// the document it goes out as a `request`, so the peer answers `doc-unavailable` rather
    /// than wait for a document neither side has.
    ///
    /// Changes waiting for a dependency ([`DocSync::admit`]) add what they lack to the
    /// message's `need`, so the peer sends it.
    pub fn generate(&mut self, doc: &Automerge, from: &str, to: &str) -> Option<Message> {
        let data = self.next_message(doc, Send::Everything)?;
        Some(Message::about_document(
            doc.get_heads().is_empty(),
            self.document_id,
            from,
            to,
            data,
        ))
    }

    /// A `sync` that says what we have and asks for what we lack, but carries nothing of the
    /// document: for a chart the peer may still send its own changes to, but may no longer
    /// read (it left the peer's wards).
    pub fn generate_asking(&mut self, doc: &Automerge, from: &str, to: &str) -> Option<Message> {
        let data = self.next_message(doc, Send::OnlyAsk)?;
        Some(self.sync_message(from, to, data))
    }

    /// A `sync` that asks for the changes `doc` lacks (the peer's heads we do not have, and
    /// what changes waiting in the queue depend on), if there are any, sending nothing of the
    /// document: for a chart whose changes the peer holds, after a push left out a change (a
    /// Bloom filter's false positive). The same set of changes is asked for once: a peer that
    /// cannot send them is not asked again and again, and the next connection starts afresh.
    pub fn ask_for_missing(&mut self, doc: &Automerge, from: &str, to: &str) -> Option<Message> {
        let theirs = self.state.their_heads.clone().unwrap_or_default();
        let mut missing = automerge::ReadDoc::get_missing_deps(doc, &theirs);
        missing.extend(self.lacking(doc));
        missing.sort();
        missing.dedup();
        if missing.is_empty() || missing == self.asked {
            return None;
        }
        self.asked = missing;
        self.generate_asking(doc, from, to)
    }

    /// A `sync` that sends what we have and asks for nothing: for a chart whose changes from
    /// the peer are held, so that the peer still gets everyone else's (a nurse must not chart
    /// on stale vitals while a decision waits), without asking again for what is held.
    pub fn generate_push(&mut self, doc: &Automerge, from: &str, to: &str) -> Option<Message> {
        let data = self.next_message(doc, Send::OnlyChanges)?;
        Some(self.sync_message(from, to, data))
    }

    /// automerge's next sync message, shaped as `send` says, encoded.
    fn next_message(&mut self, doc: &Automerge, send: Send) -> Option<Vec<u8>> {
        if send == Send::OnlyAsk {
            // Nothing of the document goes out any more.
            self.outbox.clear();
        } else if let Some(next) = self.outbox.pop_front() {
            return Some(next);
        }
        let mut message = doc.generate_sync_message(&mut self.state)?;
        match send {
            Send::OnlyChanges => message.need.clear(),
            Send::Everything | Send::OnlyAsk => {
                if send == Send::OnlyAsk {
                    message.changes = Vec::<Vec<u8>>::new().into();
                }
                let lacking = self.lacking(doc);
                if !lacking.is_empty() {
                    message.need.extend(lacking);
                    // The wire format wants them sorted, once each.
                    message.need.sort();
                    message.need.dedup();
                }
            }
        }
        let carried: usize = message.changes.iter().map(|c| c.len()).sum();
        // Within the limit, and (measured only then) within the peer's bounds: as it is.
        if carried <= self.message_limit && self.within_bounds(&message, carried) {
            return Some(message.encode());
        }
        Some(self.split(doc, message))
    }

    /// Whether the peer takes what `message` carries (`carried` bytes). Measured only when
    /// it could be past the bounds: deflate inflates at most [`MAX_DEFLATE_RATIO`] times,
    /// so an ordinary message costs nothing here.
    fn within_bounds(&self, message: &sync::Message, carried: usize) -> bool {
        let b = &self.peer_bounds;
        let could_pass = message.changes.len() > b.changes_per_message
            || (carried as u64).saturating_mul(MAX_DEFLATE_RATIO)
                > b.inflated_bytes_per_change
                    .min(b.inflated_bytes_per_message);
        !could_pass || contents::check(message.changes.iter().map(|c| &c[..]), b).is_ok()
    }

    /// A message whose changes are over the limit, as several: the first is returned and the
    /// rest wait in the outbox. Each carries whole changes in dependency order, so each
    /// applies in full when it arrives; all carry the same heads and summary, and only the
    /// first asks for anything.
    fn split(&mut self, doc: &Automerge, message: sync::Message) -> Vec<u8> {
        // A document chunk is the whole document (automerge sends one to a peer that has
        // little): taken apart into its changes, which are `doc`'s.
        let whole = crate::chart::chunks(&changes_of(&message))
            .map(|chunks| {
                chunks
                    .iter()
                    .any(|c| c.kind == crate::chart::CHUNK_DOCUMENT)
            })
            .unwrap_or(true);
        let changes: Vec<Vec<u8>> = if whole {
            doc.get_changes(&[])
                .into_iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect()
        } else {
            message.changes.iter().map(|c| c.to_vec()).collect()
        };
        // Each batch within the message limit and the peer's bounds; a change past them
        // goes alone (the peer then says so: `ChartNotice::TooLarge`). What the changes
        // inflate to is counted only if, deflated as far as deflate goes, they could pass
        // the peer's bound on a message: a message's worth of them seldom can.
        let carried: u64 = changes.iter().map(|c| c.len() as u64).sum();
        let measure =
            carried.saturating_mul(MAX_DEFLATE_RATIO) > self.peer_bounds.inflated_bytes_per_message;
        let mut batches: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
        let (mut size, mut inflated) = (0, 0u64);
        for change in changes {
            let change_inflated = if measure { inflated_size(&change) } else { 0 };
            let last = batches.last_mut().expect("one batch at least");
            let full = size + change.len() > self.message_limit
                || inflated.saturating_add(change_inflated)
                    > self.peer_bounds.inflated_bytes_per_message
                || last.len() >= self.peer_bounds.changes_per_message;
            if !last.is_empty() && full {
                batches.push(Vec::new());
                (size, inflated) = (0, 0);
            }
            size += change.len();
            inflated = inflated.saturating_add(change_inflated);
            batches.last_mut().expect("one batch at least").push(change);
        }
        let mut encoded = batches.into_iter().enumerate().map(|(k, batch)| {
            sync::Message {
                heads: message.heads.clone(),
                need: if k == 0 {
                    message.need.clone()
                } else {
                    Vec::new()
                },
                have: message.have.clone(),
                changes: batch.into(),
                flags: message.flags,
                version: sync::MessageVersion::V1,
            }
            .encode()
        });
        let first = encoded.next().unwrap_or_default();
        self.outbox.extend(encoded);
        first
    }

    fn sync_message(&self, from: &str, to: &str, data: Vec<u8>) -> Message {
        Message::Sync {
            document_id: self.document_id,
            sender_id: from.to_string(),
            target_id: to.to_string(),
            data,
            proofs: None,
        }
    }

    /// Asks the peer to forget what it sent about this document on this connection and send
    /// it again, with this side's next message (automerge's sync reset; to a peer that has
    /// not said it understands one, a message naming no heads, which does the same): for a
    /// document whose incoming changes were not taken in here, and are wanted now.
    pub fn ask_again(&mut self) {
        self.state.needs_reset = true;
    }

    /// Reads the automerge sync message a `request` or `sync` carries, and measures what it
    /// carries against the bounds before anything inflates it.
    pub fn decode(&self, data: &[u8]) -> Result<sync::Message, ProtocolError> {
        decode_bounded(self.document_id, data, &self.bounds)
    }

    /// Applies a decoded sync message to `doc`. Check what it carries first
    /// ([`changes_of`]) where the document has rules to keep.
    pub fn receive(
        &mut self,
        doc: &mut Automerge,
        message: sync::Message,
    ) -> Result<(), ProtocolError> {
        self.unavailable = false;
        let state = &mut self.state;
        crate::chart::unpanicked(|| {
            doc.receive_sync_message(state, message)
                .map_err(|e| crate::chart::ChartError::Corrupt(e.to_string()))
        })
        .map_err(|_| ProtocolError::BadSyncMessage {
            document: self.document_id.to_string(),
        })
    }
}

impl DocSync {
    /// The message with only the changes `doc` can apply now, together with any set aside
    /// earlier whose dependencies have now arrived; the rest are set aside.
    ///
    /// automerge's bloom filter can mistake a change for one the receiver has (about 1 in 100)
    /// and send the changes after it without it. automerge itself would queue those inside the
    /// document, but a receiver that checks changes before the document takes them (the
    /// server) must hold them outside it. They cannot simply be dropped: the sender never sends
    /// a change twice on one connection, so a dropped change would be lost to this connection
    /// and the chart would never converge. Instead they wait here, and [`DocSync::generate`]
    /// asks for the dependency they lack by name. Bytes that do not parse are left in the
    /// message for the checks to refuse.
    pub fn admit(&mut self, doc: &Automerge, mut message: sync::Message) -> sync::Message {
        let Some(c) = contents(&message) else {
            return message;
        };
        if c.changes.is_empty() && self.waiting.is_empty() {
            return message;
        }
        let mut known: HashSet<automerge::ChangeHash> = c
            .documents
            .iter()
            .flat_map(|(d, _)| d.get_changes(&[]).into_iter().map(|ch| ch.hash()))
            .collect();
        let mut kept: Vec<Vec<u8>> = c.documents.into_iter().map(|(_, b)| b).collect();
        let mut pool: Vec<Waiting> = std::mem::take(&mut self.waiting);
        let mut pooled: HashSet<automerge::ChangeHash> = pool.iter().map(|w| w.hash).collect();
        for (change, bytes) in c.changes {
            let hash = change.hash();
            if pooled.insert(hash) {
                pool.push(Waiting {
                    hash,
                    deps: change.deps().to_vec(),
                    bytes,
                });
            }
        }
        // Changes the document already has need no place in either list.
        pool.retain(|w| doc.get_change_meta_by_hash(&w.hash).is_none());
        // In dependency order, in time linear in the changes (Kahn's algorithm): each change
        // counts the dependencies it still lacks, and each admitted change releases the
        // changes that wait for it.
        let mut lacking = vec![0usize; pool.len()];
        let mut waiting_for: HashMap<automerge::ChangeHash, Vec<usize>> = HashMap::new();
        for (i, w) in pool.iter().enumerate() {
            for d in &w.deps {
                if !known.contains(d) && doc.get_change_meta_by_hash(d).is_none() {
                    lacking[i] += 1;
                    waiting_for.entry(*d).or_default().push(i);
                }
            }
        }
        let mut ready: std::collections::VecDeque<usize> =
            (0..pool.len()).filter(|&i| lacking[i] == 0).collect();
        let mut order = Vec::with_capacity(pool.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            known.insert(pool[i].hash);
            if let Some(next) = waiting_for.remove(&pool[i].hash) {
                for j in next {
                    lacking[j] -= 1;
                    if lacking[j] == 0 {
                        ready.push_back(j);
                    }
                }
            }
        }
        let mut slots: Vec<Option<Waiting>> = pool.into_iter().map(Some).collect();
        for i in order {
            if let Some(w) = slots[i].take() {
                kept.push(w.bytes);
            }
        }
        let mut pool: Vec<Waiting> = slots.into_iter().flatten().collect();
        let mut total: usize = pool.iter().map(|w| w.bytes.len()).sum();
        while total > self.waiting_limit && !pool.is_empty() {
            total -= pool.remove(0).bytes.len();
            self.forgot = true;
        }
        self.waiting = pool;
        message.changes = kept.into();
        message
    }

    /// How many changes wait for a dependency that has not arrived.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The changes waiting changes depend on that neither `doc` nor the waiting set has.
    fn lacking(&self, doc: &Automerge) -> Vec<automerge::ChangeHash> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let here: HashSet<_> = self.waiting.iter().map(|w| w.hash).collect();
        let mut out: Vec<_> = self
            .waiting
            .iter()
            .flat_map(|w| w.deps.iter().copied())
            .filter(|h| !here.contains(h) && doc.get_change_meta_by_hash(h).is_none())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Hears what `message` says the peer has, lacks and asks for (its heads, `have` and
    /// `need`) and takes none of the changes it carries: for a chart whose changes from this
    /// peer are not taken (held on the server; departed on the device), so that what is sent
    /// to the peer is what it lacks, and what it asks for by hash is answered.
    pub fn hear(&mut self, doc: &Automerge, message: &sync::Message) -> Result<(), ProtocolError> {
        // automerge hears a message on a document it may write to; with no changes in the
        // message nothing is written, but a shared one cannot be lent: a copy hears it.
        self.receive(&mut doc.clone(), without_changes(message))
    }

    /// [`DocSync::receive`] into a chart. Check the changes before keeping the chart, as the
    /// server does: it receives, checks them against a copy of the chart as it stood
    /// (`validate::validate_new_changes`, `validate::check_new_writer`), and on a refusal
    /// throws the chart away and [`rollback`](DocSync::rollback)s.
    pub fn receive_chart(
        &mut self,
        chart: &mut crate::chart::Chart,
        message: sync::Message,
    ) -> Result<(), ProtocolError> {
        self.receive(chart.doc_mut(), message)
    }
}

/// What [`DocSync::receive`] moves, kept to put back ([`DocSync::rollback`]) when what a
/// message carried is refused after the document took it.
#[derive(Clone)]
pub struct Checkpoint {
    state: sync::State,
    unavailable: bool,
}

impl DocSync {
    /// The sync state as it is now, for [`DocSync::rollback`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.state.clone(),
            unavailable: self.unavailable,
        }
    }

    /// Puts the sync state back as it was at `checkpoint`: messages received since are as
    /// if never received (the document they went into must be thrown away too).
    pub fn rollback(&mut self, checkpoint: Checkpoint) {
        self.state = checkpoint.state;
        self.unavailable = checkpoint.unavailable;
    }
}

impl DocSync {
    /// [`DocSync::receive`] into a ward census (a device does this; the server refuses census
    /// changes from devices).
    pub fn receive_census(
        &mut self,
        census: &mut crate::census::Census,
        message: sync::Message,
    ) -> Result<(), ProtocolError> {
        self.receive(census.doc_mut(), message)
    }
}

/// What a sync message says (heads, `have`, `need`), without the changes it carries.
pub fn without_changes(message: &sync::Message) -> sync::Message {
    sync::Message {
        heads: message.heads.clone(),
        need: message.need.clone(),
        have: message.have.clone(),
        changes: Vec::<Vec<u8>>::new().into(),
        flags: message.flags,
        version: message.version.clone(),
    }
}

/// The changes a sync message carries, as bytes `Chart::load_incremental` reads, so that they
/// can be checked on a copy of the document before the real one takes them.
/// Reads the automerge sync message `data` about `document`, and measures what it carries
/// against `bounds` (`contents::check`) before anything inflates it.
pub fn decode_bounded(
    document: DocumentId,
    data: &[u8],
    bounds: &ContentBounds,
) -> Result<sync::Message, ProtocolError> {
    let bad = || ProtocolError::BadSyncMessage {
        document: document.to_string(),
    };
    let message = sync::Message::decode(data).map_err(|_| bad())?;
    if !message.have.iter().all(|h| readable_bloom(&h.bloom)) {
        return Err(bad());
    }
    contents::check(message.changes.iter().map(|c| &c[..]), bounds).map_err(|error| {
        ProtocolError::Contents {
            document: document.to_string(),
            error,
        }
    })?;
    Ok(message)
}

/// The most probes a peer's Bloom filter may ask for (automerge makes 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Whether a peer's Bloom filter (a `have`'s summary of its changes) can be consulted
/// without harm. automerge 0.12 takes the filter's bit count as a divisor and reserves room
/// for its probe count before reading it, so a filter that claims entries but has no bits
/// panics when consulted, and one that claims billions of probes asks for gigabytes; both
/// parse. Found by fuzzing the server's session.
fn readable_bloom(bloom: &sync::BloomFilter) -> bool {
    let bytes = bloom.to_bytes();
    if bytes.is_empty() {
        return true;
    }
    let mut rest = &bytes[..];
    let mut next = || leb128::read::unsigned(&mut rest).ok();
    let (Some(entries), Some(bits_per_entry), Some(probes)) = (next(), next(), next()) else {
        return false;
    };
    entries == 0
        || (bits_per_entry > 0 && (1..=MAX_BLOOM_PROBES).contains(&probes) && !rest.is_empty())
}

/// The most a deflated stream can inflate by (deflate's own limit, about 1032 to 1).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// What one of our own changes inflates to (counted, nothing kept); an unreadable one
/// counts as its own size.
fn inflated_size(change: &[u8]) -> u64 {
    let unbounded = ContentBounds {
        changes_per_message: usize::MAX,
        inflated_bytes_per_change: u64::MAX / 2,
        inflated_bytes_per_message: u64::MAX / 2,
    };
    contents::check(std::iter::once(change), &unbounded)
        .map(|size| size.inflated_bytes)
        .unwrap_or(change.len() as u64)
}

pub fn changes_of(message: &sync::Message) -> Vec<u8> {
    message.changes.iter().flatten().copied().collect()
}

/// The bytes of the one whole document a sync message carries, when that is all it carries
/// (automerge sends a document whole to a peer that has none of it): taken into an empty
/// document, they are a saved form of what it becomes.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn whole_document(message: &sync::Message) -> Option<Vec<u8>> {
    let joined = changes_of(message);
    match crate::chart::chunks(&joined).ok()?.as_slice() {
        [only] if only.kind == crate::chart::CHUNK_DOCUMENT => Some(only.bytes.to_vec()),
        _ => None,
    }
}

/// The parsed contents of a sync message: whole documents, and single changes with their bytes.
struct Contents {
    documents: Vec<(Automerge, Vec<u8>)>,
    changes: Vec<(automerge::Change, Vec<u8>)>,
}

fn contents(message: &sync::Message) -> Option<Contents> {
    let joined = changes_of(message);
    let mut out = Contents {
        documents: Vec::new(),
        changes: Vec::new(),
    };
    for chunk in crate::chart::chunks(&joined).ok()? {
        if chunk.kind == crate::chart::CHUNK_DOCUMENT {
            out.documents.push((
                crate::chart::load_document(chunk.bytes).ok()?,
                chunk.bytes.to_vec(),
            ));
        } else {
            let change = crate::chart::parse_change(chunk.bytes).ok()?;
            out.changes.push((change, chunk.bytes.to_vec()));
        }
    }
    Some(out)
}

/// Each change a sync message carries, with its bytes, whole documents taken apart.
pub fn changes_in(message: &sync::Message) -> Vec<(automerge::ChangeHash, Vec<u8>)> {
    let Some(c) = contents(message) else {
        return Vec::new();
    };
    let mut out: Vec<_> = c
        .documents
        .iter()
        .flat_map(|(d, _)| {
            d.get_changes(&[])
                .into_iter()
                .map(|ch| (ch.hash(), ch.raw_bytes().to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    out.extend(c.changes.into_iter().map(|(ch, b)| (ch.hash(), b)));
    out
}

/// The dependencies of the changes a sync message carries.
pub fn change_deps(message: &sync::Message) -> Vec<automerge::ChangeHash> {
    contents(message)
        .map(|c| {
            c.changes
                .iter()
                .flat_map(|(ch, _)| ch.deps().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

/// How many of the message's changes `doc` does not already have (`None`: unreadable).
pub fn unknown_changes(doc: &Automerge, message: &sync::Message) -> Option<usize> {
    let c = contents(message)?;
    let hashes = c
        .documents
        .iter()
        .flat_map(|(d, _)| {
            d.get_changes(&[])
                .into_iter()
                .map(|ch| ch.hash())
                .collect::<Vec<_>>()
        })
        .chain(c.changes.iter().map(|(ch, _)| ch.hash()));
    Some(
        hashes
            .filter(|h| doc.get_change_meta_by_hash(h).is_none())
            .count(),
    )
}
