//! The change feed: after every commit, each subscriber hears which chart changed, its new
//! heads and which sections the change touched.
//!
//! Subscribers get a channel rather than a callback: events are sent in commit order while
//! the chart is still locked, and whoever reads them may call back into the store (read the
//! chart, write to it) without deadlocking the committing thread.

use std::collections::BTreeSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use automerge::ChangeHash;

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

#[derive(Default)]
pub(crate) struct Feed {
    subscribers: Mutex<Vec<Sender<ChartChanged>>>,
}

impl Feed {
    pub fn subscribe(&self) -> Receiver<ChartChanged> {
        let (tx, rx) = channel();
        super::lock(&self.subscribers).push(tx);
        rx
    }

    pub fn publish(&self, event: &ChartChanged) {
        // A subscriber that dropped its receiver is forgotten.
        super::lock(&self.subscribers).retain(|tx| tx.send(event.clone()).is_ok());
    }
}
