//! The side-by-side scenarios (issue 15): chartsync-server, samod (a Rust automerge-repo
//! server, `samod-server`) and automerge-repo's own JavaScript server
//! (`tests/interop/reference-server.mjs`), each driven by our Rust tablet client
//! (`SyncClient`, a real tablet store behind it) through the same work, one server after the
//! other in one run. Each server's CPU seconds and resident memory are read from `/proc`.
//!
//! Used by the bench (`cargo bench -p chartsync-tests --bench sidebyside`, the full sizes) and
//! by the quick smoke test in the README's test command (`tests/tests/sidebyside.rs`).

// Shared by the bench and the smoke test, each of which uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use chartsync_core::chart::{ChartId, Role, Staff};
use chartsync_core::client::{ClientConfig, SyncClient};
use chartsync_core::store::ChartStore;

use crate::common;

/// The servers, in the order a run measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chartsync,
    Samod,
    Reference,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Chartsync, Kind::Samod, Kind::Reference];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Chartsync => "chartsync",
            Kind::Samod => "samod (Rust)",
            Kind::Reference => "reference (JS)",
        }
    }
}

/// How big each scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Upload: charts, and entries written on each before the tablet first connects.
    pub charts: usize,
    pub entries: usize,
    /// Shift reconnect: edits per chart on each side.
    pub edits: usize,
    /// Fan-out at a ward's pace, and (in the full run) at a busy hospital's.
    pub fanout: Fanout,
    pub busy_fanout: Option<Fanout>,
    /// Idle connections held open.
    pub idle: usize,
    /// The reconnect storm.
    pub storm: Storm,
}

/// Fan-out: tablets, the charts they all hold, edits per second across them all, how long.
#[derive(Debug, Clone, Copy)]
pub struct Fanout {
    pub tablets: usize,
    pub charts: usize,
    pub rate: f64,
    pub seconds: f64,
}

impl Fanout {
    /// Every edit reaches every other tablet.
    pub fn deliveries(&self) -> usize {
        (self.rate * self.seconds).round() as usize * (self.tablets - 1)
    }
}

/// A reconnect storm: `tablets` tablets over `wards` wards (each tablet holds its ward's
/// `charts` charts) write `edits` edits each during a network outage, then all reconnect at
/// once.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    pub tablets: usize,
    pub wards: usize,
    pub charts: usize,
    pub edits: usize,
}

impl Sizes {
    /// The sizes.
    pub const FULL: Sizes = Sizes {
        charts: 200,
        entries: 50,
        edits: 10,
        fanout: Fanout {
            tablets: 20,
            charts: 40,
            rate: 10.0,
            seconds: 30.0,
        },
        busy_fanout: Some(Fanout {
            tablets: 50,
            charts: 40,
            rate: 200.0,
            seconds: 10.0,
        }),
        idle: 2_000,
        storm: Storm {
            tablets: 500,
            wards: 25,
            charts: 20,
            edits: 5,
        },
    };
    /// The smoke test's: every step of every scenario, small.
    pub const QUICK: Sizes = Sizes {
        charts: 4,
        entries: 3,
        edits: 2,
        fanout: Fanout {
            tablets: 3,
            charts: 3,
            rate: 10.0,
            seconds: 1.5,
        },
        busy_fanout: None,
        idle: 20,
        storm: Storm {
            tablets: 6,
            wards: 2,
            charts: 3,
            edits: 2,
        },
    };
}

/// What one server used over one scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct Used {
    /// Until the tablet (or every tablet) had everything.
    pub wall: Duration,
    pub cpu_seconds: f64,
    /// The server's peak resident set over the scenario, in bytes.
    pub peak_rss: u64,
    /// The bench process's CPU seconds over the scenario: the tablet's work, with our client
    /// on every server.
    pub tablet_cpu_seconds: f64,
}

/// One server's results.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub upload: Used,
    pub first_sync: Used,
    pub reconnect: Used,
    /// The reconnect's bytes on the wire (both ways, WebSocket frames and all), and the raw
    /// bytes of the changes that had to move.
    pub reconnect_wire_bytes: u64,
    pub reconnect_change_bytes: u64,
    /// Fan-out: every edit's latency to every other tablet, in milliseconds, sorted.
    pub fanout: Used,
    pub fanout_latency_ms: Vec<f64>,
    pub busy_fanout: Option<(Used, Vec<f64>)>,
    /// Idle connections: resident bytes per connection.
    pub idle_bytes_per_connection: f64,
    /// The storm: each tablet's time to converge, in milliseconds, sorted (those that did
    /// within [`STORM_LIMIT`]).
    pub storm: Used,
    pub storm_converge_ms: Vec<f64>,
    /// The CPU seconds the storm's simulated tablets (this process) used meanwhile: they
    /// share the machine with the server.
    pub storm_tablets_cpu: f64,
    /// The second view: automerge-repo's JavaScript client as the tablet.
    pub js: JsResults,
}

/// Upload, first sync and shift reconnect with automerge-repo's JavaScript client as the
/// tablet (`tests/interop/tablet-bench.mjs`): its wall time is its own (from its first
/// connection, its documents already read from disk), its CPU the Node.js process's.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsResults {
    pub upload: Used,
    pub first_sync: Used,
    pub reconnect: Used,
}

impl Results {
    /// Each scenario's measures, and its latencies as quantiles (not every one).
    pub fn summary(&self) -> String {
        let q = |l: &[f64]| {
            format!(
                "n={} p50={:.1} p99={:.1} max={:.1} ms",
                l.len(),
                quantile(l, 0.5),
                quantile(l, 0.99),
                quantile(l, 1.0)
            )
        };
        format!(
            "upload {:?}; first sync {:?}; reconnect {:?} ({} bytes relayed, {} of changes); \
             JS tablet {:?}; fan-out {:?} {}; busy fan-out {}; idle {:.0} bytes/connection; \
             storm {:?} {}",
            self.upload,
            self.first_sync,
            self.reconnect,
            self.reconnect_wire_bytes,
            self.reconnect_change_bytes,
            self.js,
            self.fanout,
            q(&self.fanout_latency_ms),
            self.busy_fanout
                .as_ref()
                .map_or("-".into(), |(u, l)| format!("{u:?} {}", q(l))),
            self.idle_bytes_per_connection,
            self.storm,
            q(&self.storm_converge_ms),
        )
    }
}

/// A server under measurement, in its own process.
pub struct Running {
    kind: Kind,
    chartsync: Option<common::Server>,
    child: Option<Child>,
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// Where the pieces are: the binaries cargo built for the including target.
pub struct Bins {
    pub samod: &'static str,
}

impl Running {
    pub fn start(kind: Kind, bins: &Bins) -> Running {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Chartsync => {
                // `SIDEBYSIDE_CHARTSYNC_ARGS="--chart-cache-mib 8"` adds options (for A/B runs).
                let extra = std::env::var("SIDEBYSIDE_CHARTSYNC_ARGS").unwrap_or_default();
                let mut options = vec!["--max-connections-per-user", "10000"];
                options.extend(extra.split_whitespace());
                let server = common::Server::start_with(dir.path(), "127.0.0.1:0", &options);
                Running {
                    kind,
                    addr: server.addr.clone(),
                    chartsync: Some(server),
                    child: None,
                    _dir: dir,
                }
            }
            Kind::Samod => {
                let mut command = Command::new(bins.samod);
                command.arg(dir.path());
                Running::listening(kind, command, dir)
            }
            Kind::Reference => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/reference-server.mjs");
                let mut command = Command::new("node");
                command.arg(script).arg(dir.path());
                Running::listening(kind, command, dir)
            }
        }
    }

    /// Starts `command` and waits for its `LISTENING <port>`.
    fn listening(kind: Kind, mut command: Command, dir: tempfile::TempDir) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", kind.name()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{} exited before listening", kind.name()))
                .unwrap();
            if let Some(port) = line.strip_prefix("LISTENING ") {
                break port.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Running {
            kind,
            chartsync: None,
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        match (&self.chartsync, &self.child) {
            (Some(s), _) => s.child.id(),
            (None, Some(c)) => c.id(),
            (None, None) => unreachable!("a server runs in one of the two"),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// A bearer token for `user`, a nurse on `wards`; the other servers take none and are
    /// sent it anyway.
    pub fn token(&self, user: &str, wards: &[&str]) -> String {
        match &self.chartsync {
            Some(s) => s.token(user, "nurse", wards),
            None => "no-token-needed".into(),
        }
    }

    /// The server's CPU seconds so far (user and system), from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.pid().to_string())
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} for {}", self.kind.name()))
    }

    /// Resident bytes now.
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident bytes since the last [`reset_peak`](Self::reset_peak).
    pub fn peak_rss(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Starts a new peak: the kernel's high-water mark is set back to what is resident now.
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    /// Starts measuring one scenario.
    fn measure(&self) -> Measuring<'_> {
        self.reset_peak();
        Measuring {
            server: self,
            cpu: self.cpu_seconds(),
            tablet_cpu: cpu_seconds_of("self"),
            started: Instant::now(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process's CPU seconds so far (user and system), from `/proc/<pid>/stat` (`self`: this
/// one).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Past the command's name (in parentheses), the third field is the state; utime and
    // stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

struct Measuring<'a> {
    server: &'a Running,
    cpu: f64,
    tablet_cpu: f64,
    started: Instant,
}

impl Measuring<'_> {
    fn done(self) -> Used {
        Used {
            wall: self.started.elapsed(),
            cpu_seconds: self.server.cpu_seconds() - self.cpu,
            peak_rss: self.server.peak_rss(),
            tablet_cpu_seconds: cpu_seconds_of("self") - self.tablet_cpu,
        }
    }
}

const WAIT: Duration = Duration::from_secs(600);

/// How long the reconnect storm waits for every tablet to converge.
pub const STORM_LIMIT: Duration = Duration::from_secs(300);

fn nurse(user: &str, device: &str) -> Staff {
    Staff::new(user, Role::Nurse, device)
}

/// Connects `store` to `server` as `user`'s tablet on 4west; charts it has not got are
/// fetched by id (chartsync's tablets follow the ward's census instead, as they do on a ward).
fn connect(
    server: &Running,
    store: &Arc<ChartStore>,
    user: &str,
    peer: &str,
    fetch: &[ChartId],
) -> SyncClient {
    let tablet = Tablet {
        url: server.url(),
        token: server.token(user, &["4west"]),
        wards: &["4west"],
        peer,
    };
    connect_as(server, store, tablet, fetch)
}

/// Where a tablet connects, and as whom.
struct Tablet<'a> {
    url: String,
    token: String,
    wards: &'a [&'a str],
    peer: &'a str,
}

fn connect_as(
    server: &Running,
    store: &Arc<ChartStore>,
    tablet: Tablet<'_>,
    fetch: &[ChartId],
) -> SyncClient {
    let mut config = ClientConfig::new(tablet.url, tablet.token, tablet.peer);
    if server.kind == Kind::Chartsync {
        config.wards = tablet.wards.iter().map(|w| w.to_string()).collect();
    }
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    let client = SyncClient::start(store.clone(), config);
    if server.kind != Kind::Chartsync {
        for id in fetch {
            client.fetch(*id);
        }
    }
    client
}

async fn until_up_to_date(client: &SyncClient, what: &str) {
    assert!(
        client.wait_until_up_to_date(WAIT).await,
        "{what}: never up to date; {:?}",
        client.status().borrow()
    );
    let status = client.status().borrow().clone();
    assert_eq!(
        (status.unacknowledged, status.held.len()),
        (0, 0),
        "{what}: {status:?}"
    );
}

/// A tablet's store of `charts` charts on 4west, each with `entries` observations, all
/// written offline by rn.park: built once and copied for every server.
pub fn upload_template(dir: &tempfile::TempDir, charts: usize, entries: usize) -> Vec<ChartId> {
    let store = chartsync_tests::tablet_store(dir, "template");
    let park = nurse("rn.park", "tablet-4west-01");
    (0..charts)
        .map(|n| {
            let chart = chartsync_tests::admit_at(
                &format!("MRN-{n:05}"),
                "4west",
                chartsync_tests::at(0),
                &park,
            );
            let id = store.create(chart).unwrap();
            for k in 0..entries {
                store
                    .update(id, |c| {
                        c.add_entry(
                            &park,
                            chartsync_tests::at(1 + k as i64),
                            chartsync_tests::heart_rate(60 + (k % 60) as u32),
                        )
                    })
                    .unwrap();
            }
            id
        })
        .collect()
}

/// A copy of the template store, for one server's run.
fn copy_of(template: &tempfile::TempDir, into: &tempfile::TempDir) -> Arc<ChartStore> {
    std::fs::copy(
        template.path().join("template.db"),
        into.path().join("tablet-a.db"),
    )
    .unwrap();
    chartsync_tests::tablet_store(into, "tablet-a")
}

/// Writes `edits` heart rates on every chart as `user`; the last heads of each.
fn edit_all(
    store: &ChartStore,
    ids: &[ChartId],
    edits: usize,
    user: &str,
    from: i64,
) -> Vec<Vec<ChangeHash>> {
    let who = nurse(user, "tablet");
    ids.iter()
        .map(|id| {
            let mut heads = Vec::new();
            for k in 0..edits {
                heads = heart_rate(store, *id, &who, from + k as i64, 70 + k as u32);
            }
            heads
        })
        .collect()
}

/// Writes a heart rate of `bpm` on a chart as `who`, at `at` (minutes, as `chartsync_tests::at`); the
/// chart's heads after it.
fn heart_rate(store: &ChartStore, id: ChartId, who: &Staff, at: i64, bpm: u32) -> Vec<ChangeHash> {
    store
        .update(id, |c| {
            c.add_entry(
                who,
                chartsync_tests::at(at),
                chartsync_tests::heart_rate(bpm),
            )?;
            Ok(c.doc().get_heads())
        })
        .unwrap()
}

fn has_all(store: &ChartStore, id: ChartId, heads: &[ChangeHash]) -> bool {
    store
        .read(id, |c| {
            heads
                .iter()
                .all(|h| c.doc().get_change_meta_by_hash(h).is_some())
        })
        .unwrap_or(false)
}

/// Upload, a new tablet's first sync, and a shift reconnect, on one server.
pub async fn tablet_scenarios(
    kind: Kind,
    bins: &Bins,
    template: &tempfile::TempDir,
    ids: &[ChartId],
    sizes: Sizes,
    results: &mut Results,
) {
    let server = Running::start(kind, bins);
    let devices = tempfile::tempdir().unwrap();

    // Upload: a tablet with every chart, none of them on the server yet.
    let a = copy_of(template, &devices);
    let m = server.measure();
    let client = connect(&server, &a, "rn.park", "tablet-a", &[]);
    until_up_to_date(&client, "upload").await;
    let upload = m.done();
    client.stop().await;

    // First sync: a new tablet takes every chart.
    let b = chartsync_tests::tablet_store(&devices, "tablet-b");
    let m = server.measure();
    let client_b = connect(&server, &b, "rn.lee", "tablet-b", ids);
    until_up_to_date(&client_b, "first sync").await;
    let first_sync = m.done();
    assert_eq!(
        b.census("4west").unwrap().len(),
        ids.len(),
        "{}: the new tablet has every chart",
        kind.name()
    );

    // Shift reconnect: while tablet A was offline, tablet B wrote on every chart online;
    // tablet A wrote as many offline, and comes back.
    let from_b = edit_all(&b, ids, sizes.edits, "rn.lee", 1_000);
    until_up_to_date(&client_b, "tablet B's edits").await;
    client_b.stop().await;
    let before: Vec<Vec<ChangeHash>> = ids
        .iter()
        .map(|id| a.read(*id, |c| c.doc().get_heads()).unwrap())
        .collect();
    edit_all(&a, ids, sizes.edits, "rn.park", 2_000);
    // Tablet A comes back through a relay that counts the bytes each way.
    let relay = Relay::start(&server.addr).await;
    let m = server.measure();
    let tablet = Tablet {
        url: format!("ws://{}/sync", relay.addr),
        token: server.token("rn.park", &["4west"]),
        wards: &["4west"],
        peer: "tablet-a",
    };
    let client = connect_as(&server, &a, tablet, &[]);
    until_up_to_date(&client, "reconnect").await;
    for (id, heads) in ids.iter().zip(&from_b) {
        let deadline = Instant::now() + WAIT;
        while !has_all(&a, *id, heads) {
            assert!(
                Instant::now() < deadline,
                "{}: B's edits never reached A",
                kind.name()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let reconnect = m.done();
    client.stop().await;
    // What had to move: A's edits up, B's down, as the raw bytes of their changes.
    let change_bytes: usize = ids
        .iter()
        .zip(&before)
        .map(|(id, before)| {
            a.read(*id, |c| {
                c.doc()
                    .get_changes(before)
                    .iter()
                    .map(|ch| ch.raw_bytes().len())
                    .sum::<usize>()
            })
            .unwrap()
        })
        .sum();
    results.upload = upload;
    results.first_sync = first_sync;
    results.reconnect = reconnect;
    results.reconnect_wire_bytes = relay.finish().await;
    results.reconnect_change_bytes = change_bytes as u64;
}

/// The JavaScript tablet's charts: `charts` charts of `entries` observations each, written
/// offline by automerge-repo into its own storage (`a/`), the ids beside it; one set per run,
/// copied for each server.
pub fn js_template(charts: usize, entries: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (c, e) = (charts.to_string(), entries.to_string());
    node_step(&dir.path().join("a"), &["prepare", "rn.park", &c, &e]);
    dir
}

/// One step of `tests/interop/tablet-bench.mjs` on the tablet whose storage is `tablet`; the
/// step's own time (from its first connection) and the Node.js process's CPU seconds.
fn node_step(tablet: &Path, args: &[&str]) -> (Duration, f64) {
    std::fs::create_dir_all(tablet).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/tablet-bench.mjs");
    let before = children_cpu_seconds();
    let out = Command::new("node")
        .arg(script)
        .arg(args[0])
        .arg(tablet)
        .args(&args[1..])
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs the JavaScript tablet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "JS tablet {args:?}: {}: {stdout}",
        out.status
    );
    let ms: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DONE "))
        .and_then(|ms| ms.trim().parse().ok())
        .unwrap_or_else(|| panic!("JS tablet {args:?} printed no DONE: {stdout}"));
    (
        Duration::from_secs_f64(ms / 1e3),
        children_cpu_seconds() - before,
    )
}

/// CPU seconds (user and system) of this process's children that have been waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers, for which zero is a value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct given.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Upload, first sync and shift reconnect on one server with automerge-repo's JavaScript
/// client as both tablets: A uploads its charts, B (new) takes them, B writes `edits` on
/// each online while A writes as many offline, and A comes back.
pub fn js_tablet_scenarios(kind: Kind, bins: &Bins, template: &Path, sizes: Sizes) -> JsResults {
    let server = Running::start(kind, bins);
    let tablets = tempfile::tempdir().unwrap();
    copy_dir(template, tablets.path());
    let (a, b) = (tablets.path().join("a"), tablets.path().join("b"));
    let url = |user: &str| format!("{}?token={}", server.url(), server.token(user, &["4west"]));
    let step = |tablet: &Path, args: &[&str]| {
        let m = server.measure();
        let (wall, tablet_cpu) = node_step(tablet, args);
        Used {
            wall,
            tablet_cpu_seconds: tablet_cpu,
            ..m.done()
        }
    };
    let upload = step(&a, &["upload", &url("rn.park")]);
    let first_sync = step(&b, &["first", &url("rn.lee"), "a"]);
    let edits = sizes.edits.to_string();
    node_step(&b, &["edit", "rn.lee", &edits, "1000", &url("rn.lee")]);
    node_step(&a, &["edit", "rn.park", &edits, "2000"]);
    let reconnect = step(&a, &["reconnect", &url("rn.park"), "b"]);
    JsResults {
        upload,
        first_sync,
        reconnect,
    }
}

/// A TCP relay in front of a server that counts the bytes through it, both ways.
struct Relay {
    addr: String,
    bytes: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (bytes, open) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
        let to = to.to_string();
        let (b, o) = (bytes.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                    continue;
                };
                let (b, o) = (b.clone(), o.clone());
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    // Counted as they pass: a connection that ends in a reset (as the
                    // reference's may when the tablet stops) still counts what it carried.
                    let (from_tablet, to_tablet) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::join!(
                        pump(from_tablet, to_server, &b),
                        pump(from_server, to_tablet, &b)
                    );
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay {
            addr,
            bytes,
            open,
            accept,
        }
    }

    /// The bytes relayed, once every connection through it has closed.
    async fn finish(self) -> u64 {
        self.accept.abort();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            self.open.load(Ordering::SeqCst),
            0,
            "a relayed connection stayed open"
        );
        self.bytes.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either ends, adding each read to `bytes`; then closes `to`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        bytes.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Fan-out: `tablets` tablets hold the same charts; edits at `rate` a second, round the
/// tablets, each on a chart picked in turn; how long each edit takes to reach every other
/// tablet's store.
pub async fn fanout(kind: Kind, bins: &Bins, sizes: Fanout) -> (Used, Vec<f64>) {
    let server = Running::start(kind, bins);
    let devices = tempfile::tempdir().unwrap();
    // The charts, uploaded by a first tablet.
    let seed = chartsync_tests::tablet_store(&devices, "seed");
    let park = nurse("rn.park", "seed");
    let ids: Vec<ChartId> = (0..sizes.charts)
        .map(|n| {
            seed.create(chartsync_tests::admit_at(
                &format!("MRN-{n:05}"),
                "4west",
                chartsync_tests::at(0),
                &park,
            ))
            .unwrap()
        })
        .collect();
    let client = connect(&server, &seed, "rn.park", "seed", &[]);
    until_up_to_date(&client, "fan-out charts").await;
    client.stop().await;

    // Every tablet takes every chart.
    let mut tablets = Vec::new();
    for t in 0..sizes.tablets {
        let store = chartsync_tests::tablet_store(&devices, &format!("t{t}"));
        let user = format!("rn.fan{t}");
        let client = connect(&server, &store, &user, &format!("tablet-{t}"), &ids);
        tablets.push((store, client, user));
    }
    for (store, client, _) in &tablets {
        until_up_to_date(client, "fan-out first sync").await;
        assert_eq!(store.census("4west").unwrap().len(), ids.len());
    }

    // Each tablet watches its store: when an edit from another tablet lands, its latency.
    type Sent = Arc<Mutex<HashMap<ChartId, Vec<(ChangeHash, usize, Instant)>>>>;
    let sent: Sent = Arc::default();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for (t, (store, _, _)) in tablets.iter().enumerate() {
        let feed = store.subscribe();
        let (store, sent, latencies) = (store.clone(), sent.clone(), latencies.clone());
        let stop = stop.clone();
        watchers.push(std::thread::spawn(move || {
            let mut seen: std::collections::HashSet<ChangeHash> = Default::default();
            while !stop.load(Ordering::Relaxed) {
                // An edit can arrive here before its writer has noted it in `sent` (it is
                // noted once the writer's commit returns): a quiet moment looks again at
                // every chart, so that the last edits of the run are not waited for in vain.
                let charts: Vec<ChartId> = match feed.recv_timeout(Duration::from_millis(100)) {
                    Ok(changed) => vec![changed.id],
                    Err(_) => sent.lock().unwrap().keys().copied().collect(),
                };
                let pending: Vec<(ChartId, ChangeHash, Instant)> = {
                    let sent = sent.lock().unwrap();
                    charts
                        .iter()
                        .filter_map(|id| Some((id, sent.get(id)?)))
                        .flat_map(|(id, v)| {
                            v.iter()
                                .filter(|(h, from, _)| *from != t && !seen.contains(h))
                                .map(|(h, _, at)| (*id, *h, *at))
                        })
                        .collect()
                };
                for (id, hash, at) in pending {
                    if has_all(&store, id, &[hash]) {
                        seen.insert(hash);
                        latencies
                            .lock()
                            .unwrap()
                            .push(at.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }));
    }

    let m = server.measure();
    let edits = (sizes.rate * sizes.seconds).round() as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / sizes.rate));
    for k in 0..edits {
        tick.tick().await;
        let t = k % tablets.len();
        let (store, _, user) = &tablets[t];
        let id = ids[k % ids.len()];
        let who = nurse(user, "tablet");
        let at = Instant::now();
        let heads = heart_rate(store, id, &who, 3_000 + k as i64, 80);
        sent.lock()
            .unwrap()
            .entry(id)
            .or_default()
            .extend(heads.into_iter().map(|h| (h, t, at)));
    }
    let expected = edits * (tablets.len() - 1);
    let deadline = Instant::now() + WAIT;
    while latencies.lock().unwrap().len() < expected {
        assert!(
            Instant::now() < deadline,
            "{}: {} of {expected} deliveries arrived",
            kind.name(),
            latencies.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let used = m.done();
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.join().unwrap();
    }
    for (_, client, _) in tablets {
        client.stop().await;
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    (used, latencies)
}

/// Resident bytes per idle connection: `n` devices connect (the protocol's join and peer
/// messages), and hold their sockets open without a document.
pub async fn idle(kind: Kind, bins: &Bins, n: usize) -> f64 {
    raise_open_files(n);
    let server = Running::start(kind, bins);
    let token = server.token("rn.idle", &["4west"]);
    // One connection first, so that what every server sets up once is not counted.
    let first = chartsync_tests::connect(&server.addr, Some(&token), "idle-warm", "idle-warm")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss();
    let mut open = Vec::with_capacity(n);
    for k in 0..n {
        let peer = format!("idle-{k}");
        let tablet = chartsync_tests::connect(&server.addr, Some(&token), &peer, &peer)
            .await
            .unwrap_or_else(|status| panic!("{}: connection {k} refused: {status}", kind.name()));
        open.push(tablet);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss();
    drop((first, open));
    after.saturating_sub(before) as f64 / n as f64
}

/// Lets this process (and the servers it starts) hold `n` connections' sockets.
fn raise_open_files(n: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let want = (2 * n as u64 + 256).min(limit.rlim_max);
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The reconnect storm: every tablet takes its ward's charts, the network goes down, each
/// tablet writes its edits offline, and all of them reconnect at once. Each tablet's time
/// from the reconnect until it has every edit written on its ward and none of its own is
/// unacknowledged.
pub async fn storm(kind: Kind, bins: &Bins, sizes: Storm) -> (Used, Vec<f64>, f64) {
    raise_open_files(4 * sizes.tablets);
    let server = Running::start(kind, bins);
    let devices = tempfile::tempdir().unwrap();
    let wards: Vec<String> = (0..sizes.wards).map(|w| format!("w{w:02}")).collect();
    let all_wards: Vec<&str> = wards.iter().map(String::as_str).collect();
    let tokens: Vec<String> = wards
        .iter()
        .map(|w| server.token(&format!("rn.{w}"), &[w]))
        .collect();

    // Each ward's charts, uploaded by one tablet that serves them all.
    let seed = chartsync_tests::tablet_store(&devices, "seed");
    let park = nurse("rn.park", "seed");
    let charts: Vec<Vec<ChartId>> = wards
        .iter()
        .enumerate()
        .map(|(w, ward)| {
            (0..sizes.charts)
                .map(|n| {
                    let mrn = format!("MRN-{w:02}{n:03}");
                    let chart =
                        chartsync_tests::admit_at(&mrn, ward, chartsync_tests::at(0), &park);
                    seed.create(chart).unwrap()
                })
                .collect()
        })
        .collect();
    let tablet = Tablet {
        url: server.url(),
        token: server.token("rn.park", &all_wards),
        wards: &all_wards,
        peer: "seed",
    };
    let client = connect_as(&server, &seed, tablet, &[]);
    until_up_to_date(&client, "storm charts").await;
    client.stop().await;

    // Every tablet takes its ward's charts, a ward at a time, then goes offline.
    let ward_of = |t: usize| t % sizes.wards;
    let stores: Vec<Arc<ChartStore>> = (0..sizes.tablets)
        .map(|t| chartsync_tests::tablet_store(&devices, &format!("s{t}")))
        .collect();
    let peers: Vec<String> = (0..sizes.tablets).map(|t| format!("storm-{t}")).collect();
    let start = |t: usize| {
        let w = ward_of(t);
        let tablet = Tablet {
            url: server.url(),
            token: tokens[w].clone(),
            wards: &all_wards[w..=w],
            peer: &peers[t],
        };
        connect_as(&server, &stores[t], tablet, &charts[w])
    };
    for batch in (0..sizes.tablets).collect::<Vec<_>>().chunks(sizes.wards) {
        let clients: Vec<SyncClient> = batch.iter().map(|t| start(*t)).collect();
        for (t, client) in batch.iter().zip(clients) {
            until_up_to_date(&client, "storm first sync").await;
            assert_eq!(
                stores[*t].census(all_wards[ward_of(*t)]).unwrap().len(),
                sizes.charts
            );
            client.stop().await;
        }
    }

    // The outage: each tablet writes its edits, on its ward's charts in turn.
    let mut written: Vec<HashMap<ChartId, Vec<ChangeHash>>> = vec![HashMap::new(); sizes.wards];
    for (t, store) in stores.iter().enumerate() {
        let w = ward_of(t);
        let who = nurse(&format!("rn.{}", wards[w]), &peers[t]);
        for k in 0..sizes.edits {
            let id = charts[w][(t / sizes.wards + k) % sizes.charts];
            let heads = heart_rate(store, id, &who, 4_000 + k as i64, 90);
            written[w].entry(id).or_default().extend(heads);
        }
    }

    // Every tablet reconnects at once.
    eprintln!(
        "{}: storm: {} tablets reconnect",
        kind.name(),
        sizes.tablets
    );
    let tablets_cpu = cpu_seconds_of("self");
    let m = server.measure();
    let clients: Vec<SyncClient> = (0..sizes.tablets).map(start).collect();
    // A server that has not converged a tablet by then is reported so (how many did), not
    // waited on for ever.
    let waits = clients.iter().enumerate().map(|(t, client)| {
        let (store, expected) = (&stores[t], &written[ward_of(t)]);
        let converged = async move {
            if !client.wait_until_up_to_date(STORM_LIMIT).await {
                return false;
            }
            let status = client.status().borrow().clone();
            if status.unacknowledged != 0 || !status.held.is_empty() {
                eprintln!("{}: storm tablet {t}: {status:?}", kind.name());
                return false;
            }
            let mut missing: Vec<(&ChartId, &Vec<ChangeHash>)> = expected.iter().collect();
            loop {
                missing.retain(|(id, heads)| !has_all(store, **id, heads));
                if missing.is_empty() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        async move {
            match tokio::time::timeout(STORM_LIMIT, converged).await {
                Ok(true) => Some(m.started.elapsed().as_secs_f64() * 1e3),
                _ => None,
            }
        }
    });
    let mut converge_ms: Vec<f64> = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .flatten()
        .collect();
    let used = m.done();
    let tablets_cpu = cpu_seconds_of("self") - tablets_cpu;
    for client in clients {
        client.stop().await;
    }
    converge_ms.sort_by(f64::total_cmp);
    (used, converge_ms, tablets_cpu)
}

/// Every scenario on one server.
/// Whether this run measures scenario `name`: `SIDEBYSIDE_SCENARIOS=storm,busy` runs only
/// those (for profiling one scenario): `tablets` (upload, first sync, reconnect), `js` (the
/// same with the JavaScript client), `fanout`, `busy`, `idle`, `storm`.
pub fn runs(name: &str) -> bool {
    std::env::var("SIDEBYSIDE_SCENARIOS")
        .ok()
        .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
}

pub async fn run(
    kind: Kind,
    bins: &Bins,
    template: &tempfile::TempDir,
    ids: &[ChartId],
    js_template: Option<&Path>,
    sizes: Sizes,
) -> Results {
    let mut results = Results::default();
    if runs("tablets") {
        tablet_scenarios(kind, bins, template, ids, sizes, &mut results).await;
    }
    // The JavaScript tablet's charts are written once per run, when it runs `js`.
    if let Some(js_template) = js_template.filter(|_| runs("js")) {
        results.js =
            tokio::task::block_in_place(|| js_tablet_scenarios(kind, bins, js_template, sizes));
    }
    if runs("fanout") {
        (results.fanout, results.fanout_latency_ms) = fanout(kind, bins, sizes.fanout).await;
    }
    // The busy fan-out and the storm load the machine past what a ward does: a server that
    // fails one (a step that never completes) is reported so, and the others still run.
    use futures_util::FutureExt;
    if let Some(busy) = sizes.busy_fanout.filter(|_| runs("busy")) {
        match std::panic::AssertUnwindSafe(fanout(kind, bins, busy))
            .catch_unwind()
            .await
        {
            Ok(r) => results.busy_fanout = Some(r),
            Err(_) => eprintln!("{}: the busy fan-out did not complete (above)", kind.name()),
        }
    }
    if runs("idle") {
        results.idle_bytes_per_connection = idle(kind, bins, sizes.idle).await;
    }
    if runs("storm") {
        match std::panic::AssertUnwindSafe(storm(kind, bins, sizes.storm))
            .catch_unwind()
            .await
        {
            Ok(r) => {
                (
                    results.storm,
                    results.storm_converge_ms,
                    results.storm_tablets_cpu,
                ) = r
            }
            Err(_) => eprintln!("{}: the storm did not complete (above)", kind.name()),
        }
    }
    results
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}
