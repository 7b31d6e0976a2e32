//! `GET /metrics`: Prometheus text. Counts and timings only, no ids or names.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    /// Every sync connection accepted, ever: a device reconnecting in a loop shows here.
    pub connections_opened: Counter,
    /// Sync connections refused for a missing, invalid or expired token.
    pub sign_ins_refused: Counter,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub rejections: Counter,
    /// Time to handle one incoming frame, checks and durable commit included.
    pub sync_seconds: Histogram,
    pub charts_loaded: Gauge,
    pub charts_stored: Gauge,
    /// Requests for charts or censuses a connection may not see.
    pub denials: Counter,
    /// Connections closed for going past a bound (denials, documents).
    pub closed_at_bounds: Counter,
    /// Sync messages refused whole for carrying more than a message may, the device told.
    pub refused_too_large: Counter,
    /// Bytes of frames waiting on all connections: received and not yet handled, or made
    /// and not yet sent.
    pub queued_bytes: Gauge,
    /// The most bytes one connection has had waiting in one direction since the start.
    pub queued_bytes_peak: Gauge,
    peak: std::sync::Mutex<i64>,
    /// 1 on the node holding the single-writer lease (census, compaction, sweeps), else 0.
    pub lease_held: Gauge,
    /// Since this node last read every other node's commits from the outbox.
    pub outbox_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// From the last commit heard through the outbox, on its node, to its publication here.
    pub outbox_delay: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chartsync");
        let m = Metrics {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            sign_ins_refused: Counter::default(),
            messages_received: Counter::default(),
            messages_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            rejections: Counter::default(),
            // 0.25 ms to about 4 s.
            sync_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            charts_loaded: Gauge::default(),
            charts_stored: Gauge::default(),
            denials: Counter::default(),
            closed_at_bounds: Counter::default(),
            refused_too_large: Counter::default(),
            queued_bytes: Gauge::default(),
            queued_bytes_peak: Gauge::default(),
            peak: std::sync::Mutex::new(0),
            lease_held: Gauge::default(),
            outbox_lag: Gauge::default(),
            outbox_delay: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "lease_held",
            "1 on the node holding the single-writer lease (ward censuses, compaction, sweeps), 0 on the others",
            m.lease_held.clone(),
        );
        registry.register(
            "outbox_lag_seconds",
            "Since this node last read every other node's commits (PostgreSQL, several nodes)",
            m.outbox_lag.clone(),
        );
        registry.register(
            "outbox_delay_seconds",
            "From the last commit heard from another node to its publication on this one",
            m.outbox_delay.clone(),
        );
        registry.register(
            "queued_bytes",
            "Bytes of sync frames waiting, received and not yet handled or made and not yet sent",
            m.queued_bytes.clone(),
        );
        registry.register(
            "queued_bytes_peak",
            "The most bytes one sync connection has had waiting in one direction",
            m.queued_bytes_peak.clone(),
        );
        registry.register(
            "denials",
            "Requests for charts or ward lists a connection may not see",
            m.denials.clone(),
        );
        registry.register(
            "connections_closed_at_bounds",
            "Sync connections closed for going past a bound (denials, documents)",
            m.closed_at_bounds.clone(),
        );
        registry.register(
            "messages_refused_too_large",
            "Sync messages refused whole for carrying more than one message may (the device is told)",
            m.refused_too_large.clone(),
        );
        registry.register(
            "connections",
            "Open sync connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_opened",
            "Sync connections accepted since the server started",
            m.connections_opened.clone(),
        );
        registry.register(
            "sync_sign_ins_refused",
            "Sync connections refused for a missing, invalid or expired token",
            m.sign_ins_refused.clone(),
        );
        registry.register(
            "messages_received",
            "Protocol messages received",
            m.messages_received.clone(),
        );
        registry.register(
            "messages_sent",
            "Protocol messages sent",
            m.messages_sent.clone(),
        );
        registry.register(
            "bytes_received",
            "Protocol bytes received",
            m.bytes_received.clone(),
        );
        registry.register("bytes_sent", "Protocol bytes sent", m.bytes_sent.clone());
        registry.register(
            "held_changes",
            "Batches of incoming changes held for review (the chart's rules, the writer's role)",
            m.rejections.clone(),
        );
        registry.register(
            "sync_message_seconds",
            "Time to handle one incoming sync frame, checks and durable commit included",
            m.sync_seconds.clone(),
        );
        registry.register(
            "charts_loaded",
            "Charts open in the store's memory",
            m.charts_loaded.clone(),
        );
        registry.register("charts", "Charts in the store", m.charts_stored.clone());
        Metrics { registry, ..m }
    }

    /// One connection has `bytes` waiting in one direction now.
    pub fn note_queued(&self, bytes: usize) {
        let mut peak = self.peak.lock().unwrap_or_else(|p| p.into_inner());
        if bytes as i64 > *peak {
            *peak = bytes as i64;
            self.queued_bytes_peak.set(*peak);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
