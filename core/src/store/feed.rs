//! The change feed: after every commit, each subscriber hears which chart changed, its new
//! heads and which sections the change touched.
//!
//! Subscribers get a channel rather than a callback: events are sent in commit order while
//! the chart is still locked, and whoever reads them may call back into the store (read the
//! chart, write to it) without deadlocking the committing thread.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use automerge::ChangeHash;

use super::ChartStore;
use crate::chart::ChartId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartChanged {
    pub id: ChartId,
    pub heads: Vec<ChangeHash>,
    /// Top-level sections written (every section, for a chart new to the store).
    pub sections: BTreeSet<String>,
    /// The chart was new to the store.
    pub created: bool,
}

impl ChartChanged {
    /// Whether the commit may have moved the chart: admitted it, or written its encounter
    /// (ward, bed, status). Anything listed by ward or status can change only then.
    pub fn may_move(&self) -> bool {
        self.created || self.sections.contains(crate::chart::keys::ENCOUNTER)
    }
}

#[derive(Default)]
pub(crate) struct Feed {
    subscribers: Mutex<Vec<Sender<ChartChanged>>>,
    /// Events published so far: the feed's position.
    published: AtomicU64,
}

impl Feed {
    /// A new subscriber, and the position it starts after: it receives every event from
    /// the next one on.
    pub fn subscribe(&self) -> (Receiver<ChartChanged>, u64) {
        let mut subscribers = super::lock(&self.subscribers);
        let (tx, rx) = channel();
        subscribers.push(tx);
        (rx, self.published.load(Ordering::SeqCst))
    }

    pub fn publish(&self, event: &ChartChanged) {
        let mut subscribers = super::lock(&self.subscribers);
        self.published.fetch_add(1, Ordering::SeqCst);
        // A subscriber that dropped its receiver is forgotten.
        subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    pub fn position(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }
}

impl ChartStore {
    /// Every commit from now on, in commit order, as a channel: receive on any thread, at
    /// any pace (events wait in the channel), and drop the receiver to unsubscribe. Each event
    /// is sent before the commit's `update` returns.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<ChartChanged> {
        self.inner.feed.subscribe().0
    }

    /// [`subscribe`](Self::subscribe), with the feed position the subscription starts after
    /// (see [`feed_position`](Self::feed_position)).
    pub fn subscribe_at(&self) -> (std::sync::mpsc::Receiver<ChartChanged>, u64) {
        self.inner.feed.subscribe()
    }

    /// How many change events the feed has published since the store opened. A subscriber
    /// that has handled events up to this position has seen every commit made so far.
    pub fn feed_position(&self) -> u64 {
        self.inner.feed.position()
    }
}
