//! Open charts, least recently used first out, bounded by an estimate of their memory.
//!
//! The cache holds the one slot of each chart in use, and the slot's mutex serialises
//! everything done to the chart: loading it, writing it, committing it. A slot is created
//! empty and filled by whoever locks it first, so two threads never load two copies; a slot
//! someone holds is never dropped.
//!
//! Lock order: a slot, then the cache. Nothing locks a slot while holding the cache lock.

use std::sync::{Arc, Mutex};

use automerge::{ChangeHash, ReadDoc};
use hashlink::LruCache;

use crate::chart::{Chart, ChartId};

/// Heap of a loaded chart, estimated from its size. The store bench measures it: the busy
/// chart (76,736 ops, 2,201 changes) took 2.41 MB, 31 bytes per op all in; this estimate gives
/// 2.50 MB for it.
const BYTES_PER_OP: usize = 24;
const BYTES_PER_CHANGE: usize = 300;

#[derive(Default)]
pub(crate) struct Cached {
    /// The chart as it is on disk (plus, during a write, that write's changes). `None` until
    /// loaded, and again after a write or commit failed, so the next use reloads from disk.
    pub chart: Option<Chart>,
    /// The chart's row key in the store.
    pub key: i64,
    /// The heads the store holds for the chart.
    pub stored_heads: Vec<ChangeHash>,
    /// A write is under way; a slot found still dirty (its writer panicked) reloads.
    pub dirty: bool,
    /// The chart's ward and stay, read from `chart` when first asked and forgotten at every
    /// write (see [`super::ChartStore::placement`]).
    pub placement: Option<super::Placement>,
}

pub(crate) type Slot = Arc<Mutex<Cached>>;

pub(crate) fn weight(chart: &Chart) -> usize {
    let stats = chart.doc().stats();
    stats.num_ops as usize * BYTES_PER_OP + stats.num_changes as usize * BYTES_PER_CHANGE
}

pub(crate) struct Cache {
    slots: LruCache<ChartId, (Slot, usize)>,
    total: usize,
    limit: usize,
}

impl Cache {
    pub fn new(limit: usize) -> Cache {
        Cache {
            slots: LruCache::new_unbounded(),
            total: 0,
            limit,
        }
    }

    /// The chart's slot, created empty if it has none.
    pub fn slot(&mut self, id: ChartId) -> Slot {
        if let Some((slot, _)) = self.slots.get(&id) {
            return slot.clone();
        }
        let slot = Slot::default();
        self.slots.insert(id, (slot.clone(), 0));
        self.evict();
        slot
    }

    /// The chart's slot if it has one, without making it more recently used.
    pub fn existing(&self, id: &ChartId) -> Option<Slot> {
        self.slots.peek(id).map(|(slot, _)| slot.clone())
    }

    /// Records a chart's size after it loaded or changed (`None`: it was unloaded).
    pub fn reweigh(&mut self, id: &ChartId, chart: Option<&Chart>) {
        if let Some((_, w)) = self.slots.peek_mut(id) {
            let new = chart.map(weight).unwrap_or(0);
            self.total = self.total - *w + new;
            *w = new;
        }
        self.evict();
    }

    /// Drops the slot of a chart that failed to load, if no one else holds it (the caller
    /// holds one reference, the cache another; under the cache lock no one can take another)
    /// and no one filled it meanwhile. Otherwise it stays, weighing nothing until refilled.
    pub fn forget_unloaded(&mut self, id: &ChartId, slot: &Slot) {
        let Some((s, w)) = self.slots.peek_mut(id) else {
            return;
        };
        if !Arc::ptr_eq(s, slot) {
            return;
        }
        // try_lock: the slot is unlocked by its one other holder, the caller, by now.
        let still_empty = slot.try_lock().is_ok_and(|c| c.chart.is_none());
        if !still_empty {
            return;
        }
        self.total -= *w;
        *w = 0;
        if Arc::strong_count(slot) == 2 {
            self.slots.remove(id);
        }
    }

    fn evict(&mut self) {
        if self.total <= self.limit {
            return;
        }
        // Least recently used first, only slots no one holds, only until under the limit.
        let mut over = self.total - self.limit;
        let idle: Vec<(ChartId, usize)> = self
            .slots
            .iter()
            .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
            .map(|(id, (_, w))| (*id, *w))
            .take_while(|(_, w)| {
                let go = over > 0;
                over = over.saturating_sub(*w);
                go
            })
            .collect();
        for (id, w) in idle {
            self.slots.remove(&id);
            self.total -= w;
        }
    }

    /// Charts loaded in memory.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|(_, (_, w))| *w > 0).count()
    }

    pub fn bytes(&self) -> usize {
        self.total
    }
}
