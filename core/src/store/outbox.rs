//! Fan-out between server nodes on one PostgreSQL database (docs/adr/0011).
//!
//! Each commit writes a row to `chart_outbox` in its own transaction: the chart, its new heads
//! and the sections it touched, and which node made it. After the commit (never inside it: a
//! `NOTIFY` in the write transaction takes a lock that serialises every commit in the
//! database) the node sends `NOTIFY chartsync_outbox` as a wake-up hint. Every node follows
//! the outbox on a connection of its own: on the hint, or each second without one, it reads
//! the rows after the last it saw and publishes the other nodes' commits on its own feed, so
//! the devices connected to it hear of them as of a local commit. A row that commits after a
//! later one (sequence numbers are taken in one order and committed in another) is waited for
//! a while; whatever a follower still misses, the sync protocol repairs at the device's next
//! exchange, as after any reconnect.
//!
//! A SQLite store has one writer in one process, whose feed is the whole story: it writes no
//! outbox.

use std::sync::atomic::{AtomicI64, Ordering};

use super::sql::{params, Dialect, Sql};
use super::{now_millis, ChartChanged, ChartStore, StoreError};

#[cfg(feature = "postgres")]
pub(super) use follower::follow;

/// The channel of the wake-up hint.
const CHANNEL: &str = "chartsync_outbox";

/// How far a node's follower has got: what `/metrics` reports as the outbox's lag.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// When the follower last read the outbox to its end (milliseconds since the epoch).
    caught_up_at: AtomicI64,
    /// From the commit of the last row it published, on the node that made it, to its
    /// publication here (milliseconds; the two nodes' clocks count).
    last_delay_ms: AtomicI64,
}

/// See [`ChartStore::outbox_lag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLag {
    /// Since this node last read every other node's commits (the follower reads each second,
    /// or on a commit's hint): what a device here may not have heard of yet.
    pub behind_ms: u64,
    /// From the last commit heard, on the node that made it, to its publication here.
    pub last_delay_ms: u64,
}

impl ChartStore {
    /// On a database shared by several nodes, how far behind the other nodes' commits this
    /// node's feed is; `None` on SQLite (one node), or before the follower first read.
    pub fn outbox_lag(&self) -> Option<OutboxLag> {
        if self.inner.dialect() != Dialect::Postgres {
            return None;
        }
        let progress = &self.inner.outbox;
        let caught_up = progress.caught_up_at.load(Ordering::Acquire);
        (caught_up > 0).then(|| OutboxLag {
            behind_ms: (now_millis() - caught_up).max(0) as u64,
            last_delay_ms: progress.last_delay_ms.load(Ordering::Acquire).max(0) as u64,
        })
    }
}

/// Writes the commit's row, in its transaction, on a database shared by several nodes.
pub(super) fn record(tx: &Sql<'_>, node: &str, event: &ChartChanged) -> Result<(), StoreError> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let sections: Vec<&str> = event.sections.iter().map(String::as_str).collect();
    tx.prepare_cached(
        "INSERT INTO chart_outbox (chart_id, heads, sections, created, node, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        event.id.to_string(),
        super::heads_blob(&event.heads),
        sections.join(" "),
        event.created,
        node,
        now_millis()
    ])?;
    Ok(())
}

/// Wakes the other nodes' followers, once the commit is in: a hint they do not depend on.
pub(super) fn wake(conn: &Sql<'_>) {
    if conn.dialect() == Dialect::Postgres {
        let _ = conn.execute_batch(&format!("NOTIFY {CHANNEL}"));
    }
}

/// The follower: a thread per node, reading the outbox after the hint or each second.
#[cfg(feature = "postgres")]
mod follower {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::Ordering;
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use automerge::ChangeHash;
    use postgres::fallible_iterator::FallibleIterator;

    use super::CHANNEL;
    use crate::chart::ChartId;
    use crate::store::sql::pg::Database;
    use crate::store::{lock, now_millis, parse_heads_blob, ChartChanged, Inner, StoreError};

    /// How often a follower reads the outbox with no hint.
    const POLL: Duration = Duration::from_secs(1);
    /// How long a follower waits for a row whose sequence number it has not seen, while
    /// later ones have arrived (its transaction has not committed yet, or rolled back).
    const GAP_WAIT: Duration = Duration::from_secs(30);
    /// How long rows are kept: long past any follower's reach.
    const KEEP_MS: i64 = 10 * 60 * 1000;
    /// Rows read at a time.
    const BATCH: i64 = 1000;

    /// Starts the node's follower, on a thread and a connection of its own. It holds the store
    /// weakly and ends when the store closes.
    pub(in crate::store) fn follow(
        inner: Weak<Inner>,
        database: Database,
        node: String,
        from: i64,
    ) -> Result<(), StoreError> {
        std::thread::Builder::new()
            .name("chartsync-outbox".into())
            .spawn(move || Follower::new(node, from).run(&inner, &database))?;
        Ok(())
    }

    /// Where a follower is in the outbox.
    struct Follower {
        node: String,
        /// Every row up to here has been seen (or waited for long enough).
        watermark: i64,
        /// Rows seen past the watermark.
        seen: BTreeSet<i64>,
        /// Sequence numbers past the watermark not seen yet, since when.
        gaps: BTreeMap<i64, Instant>,
        last_prune: Instant,
    }

    impl Follower {
        fn new(node: String, from: i64) -> Follower {
            Follower {
                node,
                watermark: from,
                seen: BTreeSet::new(),
                gaps: BTreeMap::new(),
                last_prune: Instant::now(),
            }
        }

        fn run(mut self, inner: &Weak<Inner>, database: &Database) {
            let mut client: Option<postgres::Client> = None;
            while inner.strong_count() > 0 {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = listen(database).ok();
                }
                let Some(c) = client.as_mut() else {
                    // The database is away (restarting, failing over): try again shortly.
                    std::thread::sleep(POLL);
                    continue;
                };
                if self.round(c, inner).is_err() {
                    // A broken connection: the next round makes another.
                    client = None;
                }
            }
        }

        /// Waits for the hint (or a second), then reads and publishes what is new.
        fn round(
            &mut self,
            c: &mut postgres::Client,
            inner: &Weak<Inner>,
        ) -> Result<(), postgres::Error> {
            {
                // The hint, or a second without one; then every hint that came meanwhile.
                let mut notifications = c.notifications();
                notifications.timeout_iter(POLL).next()?;
                notifications.iter().count()?;
            }
            let rows = c.query(
                "SELECT seq, chart_id, heads, sections, created, node, at FROM chart_outbox
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&self.watermark, &BATCH],
            )?;
            let Some(store) = inner.upgrade() else {
                return Ok(());
            };
            if (rows.len() as i64) < BATCH {
                store
                    .outbox
                    .caught_up_at
                    .store(now_millis(), Ordering::Release);
            }
            for row in &rows {
                let seq: i64 = row.get(0);
                if !self.seen.insert(seq) {
                    continue;
                }
                self.gaps.remove(&seq);
                let node: &str = row.get(5);
                if node == self.node {
                    continue;
                }
                if let Some(event) = event_of(row) {
                    store.heard(&event);
                    let at: i64 = row.get(6);
                    store
                        .outbox
                        .last_delay_ms
                        .store(now_millis() - at, Ordering::Release);
                }
            }
            drop(store);
            self.advance();
            if self.last_prune.elapsed() > Duration::from_secs(60) {
                self.last_prune = Instant::now();
                c.execute(
                    "DELETE FROM chart_outbox WHERE at < $1",
                    &[&(now_millis() - KEEP_MS)],
                )?;
            }
            Ok(())
        }

        /// Moves the watermark over every row seen, and over gaps waited for long enough.
        fn advance(&mut self) {
            let Some(&highest) = self.seen.last() else {
                return;
            };
            let now = Instant::now();
            for missing in (self.watermark + 1..highest).filter(|s| !self.seen.contains(s)) {
                self.gaps.entry(missing).or_insert(now);
            }
            loop {
                let next = self.watermark + 1;
                let given_up = self
                    .gaps
                    .get(&next)
                    .is_some_and(|since| now.duration_since(*since) > GAP_WAIT);
                if self.seen.remove(&next) || given_up {
                    self.gaps.remove(&next);
                    self.watermark = next;
                } else {
                    break;
                }
            }
        }
    }

    /// The dedicated connection, listening.
    fn listen(database: &Database) -> Result<postgres::Client, postgres::Error> {
        let mut client = database.connect()?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(client)
    }

    /// The commit an outbox row tells of; `None` for a row that does not parse (written by a
    /// newer version, or damaged): the devices' next sync exchange finds the change anyway.
    fn event_of(row: &postgres::Row) -> Option<ChartChanged> {
        let id: ChartId = row.get::<_, &str>(1).parse().ok()?;
        let heads: Vec<ChangeHash> = parse_heads_blob(row.get::<_, &[u8]>(2))?;
        let sections: &str = row.get(3);
        Some(ChartChanged {
            id,
            heads,
            sections: sections.split_whitespace().map(String::from).collect(),
            created: row.get::<_, bool>(4),
        })
    }

    impl Inner {
        /// Another node's commit: what this node holds of the chart in memory is dropped if it
        /// is older, and the commit is published on this node's feed.
        fn heard(&self, event: &ChartChanged) {
            // The cache's lock is let go before the chart's is taken: a writer holds the
            // chart's and then asks for the cache's.
            let slot = lock(&self.cache).existing(&event.id);
            if let Some(slot) = slot {
                let mut cached = lock(&slot);
                let mut held = cached.stored_heads.clone();
                held.sort();
                let mut told = event.heads.clone();
                told.sort();
                if held != told && !cached.dirty {
                    cached.chart = None;
                    drop(cached);
                    lock(&self.cache).reweigh(&event.id, None);
                }
            }
            self.feed.publish(event);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A row that commits after a later one is waited for; once it comes, the watermark
        /// passes both; one that never comes is given up after the wait.
        #[test]
        fn the_watermark_waits_for_a_late_row_and_gives_up_on_a_lost_one() {
            let mut f = Follower::new("n".into(), 10);
            for s in [11, 13] {
                f.seen.insert(s);
            }
            f.advance();
            assert_eq!(f.watermark, 11);
            assert!(f.gaps.contains_key(&12));
            f.seen.insert(12);
            f.gaps.remove(&12);
            f.advance();
            assert_eq!(f.watermark, 13);
            assert!(f.seen.is_empty());

            f.seen.insert(15);
            f.advance();
            assert_eq!(f.watermark, 13, "14 may still commit");
            *f.gaps.get_mut(&14).unwrap() -= GAP_WAIT + Duration::from_secs(1);
            f.advance();
            assert_eq!(f.watermark, 15, "14 rolled back: given up after the wait");
        }
    }
}
