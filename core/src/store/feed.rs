//! The change feed: after every commit, each subscriber hears which chart changed, its new
//! heads and which sections the change touched.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

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

type Listener = Arc<dyn Fn(&ChartChanged) + Send + Sync>;

#[derive(Default)]
pub(crate) struct Feed {
    listeners: Mutex<Vec<(u64, Listener)>>,
    next: Mutex<u64>,
}

impl Feed {
    pub fn subscribe(self: &Arc<Self>, f: Listener) -> Subscription {
        let id = {
            let mut next = super::lock(&self.next);
            *next += 1;
            *next
        };
        super::lock(&self.listeners).push((id, f));
        Subscription {
            feed: Arc::downgrade(self),
            id,
        }
    }

    pub fn publish(&self, event: &ChartChanged) {
        // Call outside the lock, so a listener may subscribe or unsubscribe.
        let listeners: Vec<Listener> = super::lock(&self.listeners)
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        for f in listeners {
            f(event);
        }
    }
}

/// Keeps a listener subscribed; dropping it unsubscribes.
pub struct Subscription {
    feed: Weak<Feed>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.upgrade() {
            super::lock(&feed.listeners).retain(|(id, _)| *id != self.id);
        }
    }
}
