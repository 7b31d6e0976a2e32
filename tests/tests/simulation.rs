//! A deterministic simulation of the whole sync (issue 14, item 8; docs/adr/0009-sync-session.md).
//!
//! One server and several ward tablets, each with its own store on disk, run the real rules of
//! both sides with no socket, no task and no timer: the server through
//! `chartsync_server::ServerConnection` over an `InProcessServer`, each tablet through
//! `chartsync_core::client::DeviceSession`. One seed decides everything the network and the
//! people do, in order: which frame is delivered next (each connection is a pair of ordered
//! queues, as a WebSocket is; now and then a frame arrives twice or two swap places, as a
//! broken proxy might), connections cut with frames in flight (those to the tablet lost, a
//! prefix of those to the server still read), tablets going offline for a while (some for
//! hours or days of the simulated clock), crashes of a tablet or of the server (dropped with
//! their unsaved state, the store opened again from disk), a backup and a restore, tokens
//! expiring, another nurse signing in on a tablet (on the enrolled one, unlocking it with
//! her PIN), supervisors' decisions on held changes, and chart work of every kind, online
//! or not. The seed also makes every id and the clock (`chartsync_core::seeded`), so a
//! replay is exact.
//!
//! Then the network heals (every tablet online, connected afresh, until nothing moves) and
//! the run is checked:
//! - it went quiet: no connection still exchanging frames after a bounded number of steps
//!   (a loop is a failure);
//! - every change a tablet made is in the server's record or in its holding area, and a chart
//!   with held changes is named in the tablet's status (held in plain sight);
//! - every tablet has the server's record of every active chart on its wards;
//! - no change a tablet recorded as acknowledged is missing from the server, checked after
//!   every server crash and at the end;
//! - no tablet holds a chart that was never on its wards (and was not made there);
//! - no signed entry was changed after its signature;
//! - no change from the enrolled tablet was held for its proof;
//! - a tablet whose status says "up to date" has every change it made on the server.
//!
//! A failure names its seed; `SIM_SEED=n` runs that seed alone and prints what happened.
//! `SIM_SEEDS=n` runs seeds 0..n (default 200: the README's test command); `SIM_SEEDS=10000`
//! is the soak (`SIM_FIRST_SEED` starts elsewhere, to split it over processes). `SIM_STEPS`
//! sets the steps per run (default 300).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use automerge::sync::SyncDoc;
use automerge::ChangeHash;
use chartsync_core::chart::{
    AmendmentKind, ChartId, DisclosurePurpose, EncounterStatus, EntryKind, FormType, NewAmendment,
    NewDisclosure, NewEntry, NewForm, NewQuery, NewRoiRequest, PatientUpdate, Role, Shift,
    SignatureMeaning, Staff, Timestamp,
};
use chartsync_core::client::{ClientConfig, DeviceSession, SyncState};
use chartsync_core::store::{
    ChartChanged, ChartStore, Compaction, Durability, HoldStatus, StoreOptions,
};
use chartsync_core::tablet::Tablet as EnrolledTablet;
use chartsync_core::trust::KdfParams;
use chartsync_server::{Access, InProcessServer, Limits, ServerConnection};
use chartsync_tests::{admit_at, heart_rate, pneumonia};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WARDS: [&str; 3] = ["4west", "5east", "icu"];
/// The records office's token covers every ward.
const ALL: &str = "*";
/// Steps the healed network may take to go quiet before the run counts as looping.
const QUIET_WITHIN: usize = 20_000;

/// Chart work a nurse does on a tablet.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// A new patient on that ward.
    Admit(&'static str),
    Write(ChartId),
    Sign(ChartId),
    Transfer(ChartId, &'static str),
    Discharge(ChartId),
    /// An addendum to an entry the signed-in nurse signed.
    Amend(ChartId),
    /// A consent form, for the patient to sign.
    Form(ChartId),
    /// The principal diagnosis (records office).
    Code(ChartId),
    /// A request for copies logged (records office).
    Roi(ChartId),
    /// The patient's signature on a consent form, witnessed.
    SignForm(ChartId),
    /// The shift's handover to the other nurse.
    HandOver(ChartId),
    /// A query to the attending physician (records office).
    Query(ChartId),
    /// A disclosure logged (records office).
    Disclose(ChartId),
    /// A change-of-information form processed: a new phone number (records office).
    ChangeInfo(ChartId),
}

/// What travels one way on a connection.
enum Frame {
    Data(Vec<u8>),
    /// The sending side closed (or the socket failed): nothing follows.
    End,
}

struct Link {
    tablet: usize,
    device: Option<DeviceSession>,
    server: Option<ServerConnection>,
    to_server: VecDeque<Frame>,
    to_device: VecDeque<Frame>,
}

impl Link {
    fn done(&self) -> bool {
        self.device.is_none()
            && self.server.is_none()
            && self.to_server.is_empty()
            && self.to_device.is_empty()
    }
}

struct Tablet {
    name: String,
    path: PathBuf,
    store: Arc<ChartStore>,
    feed: std::sync::mpsc::Receiver<ChartChanged>,
    /// The ward it serves; `*` for the records office's PC, which serves every ward.
    ward: &'static str,
    /// A ward tablet's nurses, or the records office's technicians.
    role: Role,
    /// Which of the two people is signed in.
    nurse: usize,
    online: bool,
    /// Charts made on this tablet.
    made: HashSet<ChartId>,
    /// Charts asked for by id (`SyncClient::fetch`), asked again on every connection.
    wanted: Vec<ChartId>,
    /// Set for a tablet enrolled with the server.
    enrolled: Option<Enrolled>,
}

/// A tablet enrolled with the server (docs/adr/0008-shared-tablets.md): its two nurses signed
/// in online once each and unlock it with a PIN; every change it makes carries a proof of
/// its author, and its sync connection is the tablet's own, shared by whoever is signed in.
struct Enrolled {
    secret: [u8; 32],
    tablet: EnrolledTablet,
}

/// Who does a piece of work: a person under a token (as the sync client is given one), or a
/// nurse signed in on an enrolled tablet, whose changes are signed as hers.
enum Writer {
    Token(Staff),
    Signed(chartsync_core::tablet::Session),
}

impl Writer {
    fn staff(&self) -> Staff {
        match self {
            Writer::Token(staff) => staff.clone(),
            Writer::Signed(session) => session.staff().clone(),
        }
    }

    fn update(
        &self,
        store: &ChartStore,
        id: ChartId,
        write: impl FnOnce(
            &mut chartsync_core::chart::Chart,
        ) -> Result<(), chartsync_core::chart::ChartError>,
    ) -> Result<(), String> {
        match self {
            Writer::Token(_) => store.update(id, write).map_err(|e| e.to_string()),
            Writer::Signed(session) => session
                .with_key(|key| store.update_signed(key, id, write))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string()),
        }
    }

    /// Adds a new chart: as `id` under a token; an enrolled tablet's store picks the id.
    fn create(
        &self,
        store: &ChartStore,
        id: ChartId,
        chart: chartsync_core::chart::Chart,
    ) -> Result<ChartId, String> {
        match self {
            Writer::Token(_) => store
                .insert(id, chart)
                .map(|()| id)
                .map_err(|e| e.to_string()),
            Writer::Signed(session) => session
                .with_key(|key| store.create_signed(key, chart))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string()),
        }
    }
}

/// Every nurse's password in the directory, and each nurse's PIN on an enrolled tablet.
const PASSWORD: &str = "a long ward password";
const PINS: [&str; 2] = ["135790", "246802"];

impl Tablet {
    fn user(&self) -> String {
        match self.role {
            Role::Nurse => format!("{}.nurse{}", self.ward, self.nurse),
            _ => format!("records.tech{}", self.nurse),
        }
    }

    fn staff(&self) -> Staff {
        Staff::new(self.user(), self.role, self.name.clone())
    }

    fn serves(&self, ward: &str) -> bool {
        self.ward == ALL || self.ward == ward
    }

    /// The wards whose census it follows.
    fn wards(&self) -> Vec<String> {
        WARDS
            .iter()
            .filter(|w| self.serves(w))
            .map(|w| w.to_string())
            .collect()
    }

    fn open(path: &std::path::Path) -> Arc<ChartStore> {
        Arc::new(
            ChartStore::open(
                path,
                StoreOptions {
                    durability: Durability::Normal,
                    compaction: Compaction::Manual,
                    ..StoreOptions::default()
                },
            )
            .expect("a tablet's store opens"),
        )
    }
}

#[derive(Default, Debug)]
struct Counts {
    steps: usize,
    delivered: usize,
    cuts: usize,
    tablet_crashes: usize,
    server_crashes: usize,
    expiries: usize,
    sign_ins: usize,
    fetches: usize,
    decisions: usize,
    offline: usize,
    edits: usize,
    transfers: usize,
    held_charts: usize,
    restores: usize,
    /// Work done on the records office's PC.
    records_work: usize,
    /// Times the clock jumped (a night, a weekend), and the hours it jumped in all.
    gaps: usize,
    hours: u64,
    /// Charts removed from tablets (they left its wards, and a backup held them).
    removed: usize,
    /// Frames the network delivered twice, and pairs it delivered out of order.
    duplicated: usize,
    reordered: usize,
}

struct Sim {
    rng: ChaCha8Rng,
    dir: tempfile::TempDir,
    server: InProcessServer,
    tablets: Vec<Tablet>,
    links: Vec<Link>,
    /// Every chart made, in order.
    charts: Vec<ChartId>,
    /// Every ward each chart was ever on, as the tablets that moved it saw it.
    wards_of: HashMap<ChartId, HashSet<&'static str>>,
    /// (tablet, chart, heads) the tablet recorded as acknowledged, before a server crash.
    acknowledged: Vec<(usize, ChartId, Vec<ChangeHash>)>,
    log: Vec<String>,
    /// Every frame delivered: (events logged before it, which way, the frame).
    frames: Vec<(usize, String, Vec<u8>)>,
    verbose: bool,
    /// Every frame delivered, on stderr (`SIM_TRACE=1` with `SIM_SEED`).
    trace: bool,
    counts: Counts,
    /// This thread's ids (automerge actors, records, storage) come from the seed, and its
    /// clock is `millis`, while the simulation lives: a replay makes the same change hashes.
    seeded: chartsync_core::seeded::Seeded,
    /// The simulated time, in Unix milliseconds: every step takes `STEP_MILLIS`.
    millis: i64,
}

/// When every run starts: 2026-11-30T07:00:00Z, the day shift.
const START_MILLIS: i64 = 1_796_022_000_000;
/// The time one step of the simulation takes.
const STEP_MILLIS: i64 = 30_000;

type Checked = Result<(), String>;

impl Sim {
    /// `tablets` ward tablets, and the records office's PC after them if `records`.
    fn new(seed: u64, tablets: usize, verbose: bool) -> Sim {
        Sim::with_records(seed, tablets, false, verbose)
    }

    fn with_records(seed: u64, tablets: usize, records: bool, verbose: bool) -> Sim {
        let seeded = chartsync_core::seeded::seed_this_thread(seed, START_MILLIS);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server = InProcessServer::open(&dir.path().join("server"), Limits::default())
            .expect("the server's store opens");
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            server,
            tablets: Vec::new(),
            links: Vec::new(),
            wards_of: HashMap::new(),
            charts: Vec::new(),
            acknowledged: Vec::new(),
            log: Vec::new(),
            frames: Vec::new(),
            verbose,
            trace: verbose && std::env::var_os("SIM_TRACE").is_some(),
            counts: Counts::default(),
            dir,
            seeded,
            millis: START_MILLIS,
        };
        for i in 0..tablets + usize::from(records) {
            let pc = i == tablets;
            let name = if pc {
                "records-pc".to_string()
            } else {
                format!("tablet-{i}")
            };
            let path = sim.dir.path().join(format!("{name}.db"));
            let store = Tablet::open(&path);
            let feed = store.subscribe();
            sim.tablets.push(Tablet {
                name,
                path,
                store,
                feed,
                ward: if pc { ALL } else { WARDS[i % WARDS.len()] },
                role: if pc { Role::Technician } else { Role::Nurse },
                nurse: 0,
                online: true,
                made: HashSet::new(),
                wanted: Vec::new(),
                enrolled: None,
            });
        }
        sim
    }

    /// Keeps a delivered frame for the failure report (and prints it when tracing).
    fn keep_frame(&mut self, who: String, bytes: &[u8]) {
        if self.trace {
            eprintln!("    {who}: {}", describe(bytes));
        }
        self.frames.push((self.log.len(), who, bytes.to_vec()));
    }

    /// What happened to the charts `failure` names: the events and frames about them, in
    /// order, with the crashes and restores between.
    fn history(&self, failure: &str) -> String {
        let named: Vec<String> = self
            .charts
            .iter()
            .map(|c| c.to_string())
            .filter(|c| failure.contains(c.as_str()))
            .collect();
        let about = |text: &str| {
            named.iter().any(|c| text.contains(c.as_str()))
                || text.starts_with("the server")
                || text.contains("signs in")
                || text.contains("a supervisor")
        };
        let mut out = Vec::new();
        let mut frames = self.frames.iter().peekable();
        for (i, event) in self.log.iter().enumerate() {
            while let Some((_, who, bytes)) = frames.next_if(|(at, _, _)| *at <= i) {
                let d = describe(bytes);
                if about(&d) {
                    out.push(format!("    {who}: {d}"));
                }
            }
            if about(event) {
                out.push(format!("  {event}"));
            }
        }
        for (_, who, bytes) in frames {
            let d = describe(bytes);
            if about(&d) {
                out.push(format!("    {who}: {d}"));
            }
        }
        out.join("\n")
    }

    fn note(&mut self, what: String) {
        if self.verbose {
            eprintln!("{what}");
        }
        self.log.push(what);
    }

    fn access(&self, t: usize) -> Access {
        let tablet = &self.tablets[t];
        // An enrolled tablet connects as itself (a device token), whoever is signed in.
        let device = tablet.enrolled.as_ref().map(|e| e.tablet.device());
        Access {
            user: device.map_or_else(|| tablet.user(), |d| d.to_string()),
            role: tablet.role,
            wards: vec![tablet.ward.to_string()],
            expires_at: u64::MAX / 2,
            device,
            quarantined: false,
        }
    }

    /// Enrols tablet `t` with the server, as an administrator and its nurses would: both
    /// nurses in the directory, an enrolment code redeemed, each nurse signed in online.
    fn enrol(&mut self, t: usize) {
        let wards = vec![self.tablets[t].ward.to_string()];
        for n in 0..2 {
            let user = format!("{}.nurse{n}", self.tablets[t].ward);
            self.server
                .add_staff(&user, Role::Nurse, &wards, PASSWORD)
                .expect("a nurse in the directory");
        }
        let code = self
            .server
            .enrolment_code(&self.tablets[t].name, &wards)
            .expect("an enrolment code");
        let secret = [t as u8 + 1; 32];
        let challenge = self.server.challenge().expect("a challenge");
        let request = EnrolledTablet::enrol_request(&secret, &code, &challenge).unwrap();
        let answer = self.server.enrol(&request).expect("enrolled");
        let tablet = EnrolledTablet::finish_enrolment(
            self.tablets[t].store.clone(),
            &secret,
            "sim",
            &answer,
            KdfParams::INSECURE_FOR_TESTS,
        )
        .expect("the enrolment kept");
        self.tablets[t].enrolled = Some(Enrolled { secret, tablet });
        for n in 0..2 {
            self.certify(t, n).expect("a nurse signs in online");
        }
        self.note(format!("{t}: enrolled"));
    }

    /// Nurse `n` signs in online on enrolled tablet `t`, for a new certificate.
    fn certify(&mut self, t: usize, n: usize) -> Result<(), String> {
        let Some(e) = &self.tablets[t].enrolled else {
            return Ok(());
        };
        let user = format!("{}.nurse{n}", self.tablets[t].ward);
        let challenge = self.server.challenge().ok_or("no challenge")?;
        let (pending, request) = e.tablet.sign_in_request(&user, PASSWORD, &challenge);
        let answer = self.server.sign_in(e.tablet.device(), request)?;
        e.tablet
            .finish_sign_in(pending, &answer, PINS[n])
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Who writes on tablet `t` now. On an enrolled tablet, the nurse signed in unlocks it
    /// with her PIN; past her certificate's end she signs in online again, which needs the
    /// network: `Err` while the tablet is offline.
    fn writer(&mut self, t: usize) -> Result<Writer, String> {
        let Some(e) = &self.tablets[t].enrolled else {
            return Ok(Writer::Token(self.tablets[t].staff()));
        };
        let user = self.tablets[t].user();
        let pin = PINS[self.tablets[t].nurse];
        match e.tablet.unlock(&user, pin) {
            Ok(session) => Ok(Writer::Signed(session)),
            Err(why) if !self.tablets[t].online => Err(why.to_string()),
            Err(_) => {
                self.certify(t, self.tablets[t].nurse)?;
                self.note(format!("{t}: {user} signs in online again"));
                let e = self.tablets[t].enrolled.as_ref().expect("enrolled");
                e.tablet
                    .unlock(&user, pin)
                    .map(Writer::Signed)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn link_of(&self, t: usize) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.tablet == t && l.device.is_some())
    }

    /// A tablet with no open connection connects.
    fn connect(&mut self, t: usize) {
        if self.link_of(t).is_some() || !self.tablets[t].online {
            return;
        }
        let Some(server) = self.server.accept(self.access(t)) else {
            self.note(format!("{t}: refused a connection"));
            return;
        };
        let tablet = &self.tablets[t];
        let mut config = ClientConfig::new("sim", "", tablet.name.clone());
        config.wards = tablet.wards();
        let (device, join) =
            DeviceSession::initiate(tablet.store.clone(), config, tablet.wanted.clone());
        self.links.push(Link {
            tablet: t,
            device: Some(device),
            server: Some(server),
            to_server: VecDeque::from([Frame::Data(join.encode())]),
            to_device: VecDeque::new(),
        });
        self.note(format!("{t}: connects as {}", self.tablets[t].user()));
    }

    /// The tablet's end of link `l` ends: closed by the client (state saved) or crashed.
    fn end_device(&mut self, l: usize, saved: bool) {
        let link = &mut self.links[l];
        if let Some(device) = link.device.take() {
            if saved {
                device.close();
            }
            link.to_server.push_back(Frame::End);
        }
        link.to_device.clear();
    }

    /// The server's end of link `l` ends: closed in order (state saved) or crashed.
    fn end_server(&mut self, l: usize, saved: bool) {
        let link = &mut self.links[l];
        if let Some(server) = link.server.take() {
            if saved {
                server.finish();
            }
            link.to_device.push_back(Frame::End);
        }
        link.to_server.clear();
    }

    /// The network fails under link `l`: the tablet sees it at once; the server still reads
    /// some of what was on its way, then sees the socket fail.
    fn cut(&mut self, l: usize) {
        let keep = self.rng.random_range(0..=self.links[l].to_server.len());
        self.links[l].to_server.truncate(keep);
        self.end_device(l, true);
    }

    fn deliver_to_server(&mut self, l: usize) {
        let Some(frame) = self.links[l].to_server.pop_front() else {
            return;
        };
        self.counts.delivered += 1;
        if self.links[l].server.is_none() {
            return;
        };
        match frame {
            Frame::End => {
                self.end_server(l, true);
            }
            Frame::Data(bytes) => {
                let t = self.links[l].tablet;
                self.keep_frame(format!("{t} -> server"), &bytes);
                let Some(server) = self.links[l].server.as_mut() else {
                    return;
                };
                let effects = server.receive(&bytes);
                self.from_server(l, effects);
                self.pump_server();
            }
        }
    }

    fn from_server(&mut self, l: usize, effects: chartsync_server::Effects) {
        let link = &mut self.links[l];
        if link.device.is_some() {
            for m in effects.send {
                link.to_device.push_back(Frame::Data(m.encode()));
            }
        }
        if effects.close {
            let t = link.tablet;
            self.note(format!("{t}: the server closes the connection"));
            self.end_server(l, true);
        }
    }

    /// The server's commits, to every connection.
    fn pump_server(&mut self) {
        loop {
            let commits = self.server.commits();
            if commits.is_empty() {
                return;
            }
            for changed in &commits {
                for l in 0..self.links.len() {
                    let Some(server) = self.links[l].server.as_mut() else {
                        continue;
                    };
                    let effects = server.changed(changed);
                    self.from_server(l, effects);
                }
            }
        }
    }

    fn deliver_to_device(&mut self, l: usize) {
        let Some(frame) = self.links[l].to_device.pop_front() else {
            return;
        };
        self.counts.delivered += 1;
        let t = self.links[l].tablet;
        let Some(device) = self.links[l].device.as_mut() else {
            return;
        };
        match frame {
            Frame::End => {
                self.end_device(l, true);
            }
            Frame::Data(bytes) => match {
                let who = format!("server -> {t}");
                if self.trace {
                    eprintln!("    {who}: {}", describe(&bytes));
                }
                self.frames.push((self.log.len(), who, bytes.clone()));
                device.receive(&bytes)
            } {
                Ok(replies) => {
                    for m in replies {
                        self.links[l].to_server.push_back(Frame::Data(m.encode()));
                    }
                    self.pump_tablet(t);
                }
                Err(reason) => {
                    self.note(format!("{t}: the connection ends: {reason}"));
                    // The session saved its state already.
                    self.links[l].device = None;
                    self.links[l].to_server.push_back(Frame::End);
                }
            },
        }
    }

    /// The tablet's commits (its own work and what it took from the server), to its session.
    fn pump_tablet(&mut self, t: usize) {
        let events: Vec<ChartChanged> = self.tablets[t].feed.try_iter().collect();
        let Some(l) = self.link_of(t) else {
            return;
        };
        for event in events {
            let Some(device) = self.links[l].device.as_mut() else {
                return;
            };
            for m in device.local_commit(event.id) {
                self.links[l].to_server.push_back(Frame::Data(m.encode()));
            }
        }
    }

    /// A chart id from the seed, so that a replay picks the same charts.
    fn new_id(&mut self) -> ChartId {
        loop {
            let id = ChartId::from_bytes(self.rng.random());
            if !chartsync_core::census::is_census_id(&id) && !self.wards_of.contains_key(&id) {
                self.charts.push(id);
                return id;
            }
        }
    }

    /// Charts on the tablet that it sees as active on its ward, in the order they were made.
    fn own_charts(&self, t: usize) -> Vec<ChartId> {
        let tablet = &self.tablets[t];
        let mut ids: Vec<ChartId> = tablet
            .store
            .list(&Default::default())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| tablet.serves(&c.ward) && c.status == EncounterStatus::Active)
            .filter(|c| !matches!(tablet.store.departed(c.id), Ok(Some(_))))
            .map(|c| c.id)
            .collect();
        ids.sort_by_key(|id| self.charts.iter().position(|c| c == id));
        ids
    }

    /// Chart work on tablet `t` by whoever is signed in, online or not.
    fn work(&mut self, t: usize) {
        let charts = self.own_charts(t);
        let roll = self.rng.random_range(0..100);
        if self.tablets[t].role != Role::Nurse {
            // The records office: codes, forms and requests for copies on any active chart,
            // and at the registration desk admissions to any ward and transfers.
            if charts.is_empty() || roll < 15 {
                self.counts.records_work += 1;
                let ward = WARDS[self.rng.random_range(0..WARDS.len())];
                self.apply(t, Work::Admit(ward));
                return;
            }
            let id = charts[self.rng.random_range(0..charts.len())];
            self.counts.records_work += 1;
            let work = match roll {
                15..=34 => Work::Code(id),
                35..=49 => Work::Form(id),
                50..=64 => Work::Roi(id),
                65..=74 => Work::Query(id),
                75..=82 => Work::Disclose(id),
                83..=89 => Work::ChangeInfo(id),
                _ => Work::Transfer(id, WARDS[self.rng.random_range(0..WARDS.len())]),
            };
            self.apply(t, work);
            return;
        }
        if charts.is_empty() || roll < 12 {
            let ward = self.tablets[t].ward;
            self.apply(t, Work::Admit(ward));
            return;
        }
        let id = charts[self.rng.random_range(0..charts.len())];
        let work = match roll {
            12..=47 => Work::Write(id),
            48..=68 => Work::Sign(id),
            69..=72 => Work::Amend(id),
            73..=76 => Work::Form(id),
            77..=80 => Work::SignForm(id),
            81..=84 => Work::HandOver(id),
            85..=95 => {
                let here = self.tablets[t].ward;
                let others: Vec<&'static str> =
                    WARDS.iter().copied().filter(|w| *w != here).collect();
                Work::Transfer(id, others[self.rng.random_range(0..others.len())])
            }
            _ => Work::Discharge(id),
        };
        self.apply(t, work);
    }

    /// Does `work` on tablet `t` as whoever is signed in; the chart it was done on.
    fn apply(&mut self, t: usize, work: Work) -> ChartId {
        let writer = match self.writer(t) {
            Ok(w) => w,
            Err(why) => {
                let user = self.tablets[t].user();
                self.note(format!("{t}: {user} cannot write: {why}"));
                return match work {
                    // An id no chart has, as an admission that failed leaves: asked for by
                    // id later, it is unknown to the server.
                    Work::Admit(_) => self.new_id(),
                    Work::Write(id)
                    | Work::Sign(id)
                    | Work::Transfer(id, _)
                    | Work::Discharge(id)
                    | Work::Amend(id)
                    | Work::Form(id)
                    | Work::Code(id)
                    | Work::Roi(id)
                    | Work::SignForm(id)
                    | Work::HandOver(id)
                    | Work::Query(id)
                    | Work::Disclose(id)
                    | Work::ChangeInfo(id) => id,
                };
            }
        };
        let staff = writer.staff();
        let store = self.tablets[t].store.clone();
        let (id, result) = match work {
            Work::Admit(ward) => {
                let mrn = format!("MRN-{:06}", self.rng.random_range(0..1_000_000));
                let chart = admit_at(&mrn, ward, Timestamp::now(), &staff);
                let wanted = self.new_id();
                let made = writer.create(&store, wanted, chart);
                let id = *made.as_ref().unwrap_or(&wanted);
                if id != wanted {
                    // An enrolled tablet's store chose the id.
                    self.charts.pop();
                    self.charts.push(id);
                }
                self.tablets[t].made.insert(id);
                self.wards_of.entry(id).or_default().insert(ward);
                self.note(format!("{t}: admits {id} to {ward}"));
                (id, made.map(|_| ()))
            }
            Work::Write(id) => {
                self.counts.edits += 1;
                let entry = if self.rng.random_bool(0.5) {
                    heart_rate(self.rng.random_range(50..130))
                } else {
                    NewEntry::note(EntryKind::NursingNote, "Settled, observations stable.")
                };
                self.note(format!("{t}: writes on {id}"));
                let written = writer.update(&store, id, |c| {
                    c.add_entry(&staff, Timestamp::now(), entry).map(|_| ())
                });
                (id, written)
            }
            Work::Sign(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: signs on {id}"));
                let signed = writer.update(&store, id, |c| {
                    let unsigned = c
                        .view()?
                        .entries
                        .into_iter()
                        .find(|e| !e.signed && e.content.author == staff.user);
                    match unsigned {
                        Some(e) => {
                            c.sign_entry(&staff, Timestamp::now(), &e.id, SignatureMeaning::Author)
                        }
                        None => Ok(()),
                    }
                });
                (id, signed)
            }
            Work::Transfer(id, to) => {
                self.counts.edits += 1;
                self.counts.transfers += 1;
                self.wards_of.entry(id).or_default().insert(to);
                self.note(format!("{t}: transfers {id} to {to}"));
                (
                    id,
                    writer.update(&store, id, |c| {
                        c.transfer(&staff, Timestamp::now(), to, None)
                    }),
                )
            }
            Work::Discharge(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: discharges {id}"));
                (
                    id,
                    writer.update(&store, id, |c| {
                        c.discharge(&staff, Timestamp::now(), "home")
                    }),
                )
            }
            Work::Amend(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: amends on {id}"));
                let amended = writer.update(&store, id, |c| {
                    let signed = c
                        .view()?
                        .entries
                        .into_iter()
                        .find(|e| e.signed && e.content.author == staff.user);
                    let Some(e) = signed else { return Ok(()) };
                    let addendum = NewAmendment {
                        target_entry_id: e.id,
                        kind: AmendmentKind::Addendum,
                        reason: "later observation".into(),
                        body: "Reassessed: comfortable.".into(),
                    };
                    c.amend(&staff, Timestamp::now(), addendum).map(|_| ())
                });
                (id, amended)
            }
            Work::Form(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: adds a form to {id}"));
                let form = NewForm {
                    form_type: FormType::Consent,
                    fields: std::collections::BTreeMap::from([(
                        "procedure".to_string(),
                        "central line".to_string(),
                    )])
                    .into(),
                    required_signers: vec!["patient".into()],
                };
                let added = writer.update(&store, id, |c| {
                    c.add_form(&staff, Timestamp::now(), form).map(|_| ())
                });
                (id, added)
            }
            Work::Code(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: codes {id}"));
                let coded = writer.update(&store, id, |c| {
                    c.assign_code(&staff, Timestamp::now(), pneumonia())
                        .map(|_| ())
                });
                (id, coded)
            }
            Work::Roi(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: logs a request for copies of {id}"));
                let request = NewRoiRequest {
                    requester: "Acme Insurance".into(),
                    recipient: "Acme Insurance".into(),
                    recipient_address: "PO Box 1".into(),
                    purpose: DisclosurePurpose::Payment,
                    scope: "discharge summary".into(),
                    due_at: Timestamp::now().plus_seconds(30 * 86_400),
                };
                let logged = writer.update(&store, id, |c| {
                    c.receive_roi_request(&staff, Timestamp::now(), request)
                        .map(|_| ())
                });
                (id, logged)
            }
            Work::SignForm(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: witnesses a signature on a form on {id}"));
                let signed = writer.update(&store, id, |c| {
                    let unsigned = c
                        .view()?
                        .forms
                        .into_iter()
                        .find(|f| f.signatures.is_empty());
                    match unsigned {
                        Some(f) => {
                            c.sign_form(&staff, Timestamp::now(), &f.id, "patient", "patient")
                        }
                        None => Ok(()),
                    }
                });
                (id, signed)
            }
            Work::HandOver(id) => {
                self.counts.edits += 1;
                let to = format!(
                    "{}.nurse{}",
                    self.tablets[t].ward,
                    1 - self.tablets[t].nurse
                );
                self.note(format!("{t}: hands {id} over"));
                let handed = writer.update(&store, id, |c| {
                    c.hand_over(
                        &staff,
                        Timestamp::now(),
                        &to,
                        Shift::Night,
                        "Stable overnight.",
                    )
                });
                (id, handed)
            }
            Work::Query(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: queries the attending on {id}"));
                let query = NewQuery {
                    question: "Please document the type of pneumonia.".into(),
                    to: "dr.okafor".into(),
                    about: None,
                };
                let asked = writer.update(&store, id, |c| {
                    c.ask_query(&staff, Timestamp::now(), query).map(|_| ())
                });
                (id, asked)
            }
            Work::Disclose(id) => {
                self.counts.edits += 1;
                self.note(format!("{t}: logs a disclosure of {id}"));
                let disclosure = NewDisclosure {
                    request_id: None,
                    recipient: "County health department".into(),
                    recipient_address: "1 Main St".into(),
                    description: "communicable disease report".into(),
                    purpose: DisclosurePurpose::PublicHealth,
                };
                let logged = writer.update(&store, id, |c| {
                    c.record_disclosure(&staff, Timestamp::now(), disclosure)
                        .map(|_| ())
                });
                (id, logged)
            }
            Work::ChangeInfo(id) => {
                self.counts.edits += 1;
                let phone = format!("555-{:04}", self.rng.random_range(0..10_000));
                self.note(format!("{t}: processes a change of information on {id}"));
                let update = PatientUpdate {
                    phone: Some(phone),
                    ..PatientUpdate::default()
                };
                let changed = writer.update(&store, id, |c| {
                    c.change_information(&staff, Timestamp::now(), update)
                });
                (id, changed)
            }
        };
        if let Err(e) = result {
            self.note(format!("{t}: the work on {id} failed: {e}"));
        }
        self.pump_tablet(t);
        id
    }

    /// A nurse asks for a chart by id: any chart the hospital has, on her ward or not.
    fn fetch(&mut self, t: usize) {
        if self.charts.is_empty() {
            return;
        }
        let id = self.charts[self.rng.random_range(0..self.charts.len())];
        self.ask_for(t, id);
    }

    /// A nurse on tablet `t` asks for chart `id` by its id.
    fn ask_for(&mut self, t: usize, id: ChartId) {
        self.counts.fetches += 1;
        self.note(format!("{t}: asks for {id}"));
        self.tablets[t].wanted.push(id);
        if let Some(l) = self.link_of(t) {
            if let Some(device) = self.links[l].device.as_mut() {
                for m in device.fetch(id) {
                    self.links[l].to_server.push_back(Frame::Data(m.encode()));
                }
            }
        }
    }

    /// The next frame one way on link `l` is duplicated, or (`swap`) the next two change
    /// places.
    fn garble(&mut self, l: usize, to_server: bool, swap: bool) {
        let link = &mut self.links[l];
        let queue = if to_server {
            &mut link.to_server
        } else {
            &mut link.to_device
        };
        let Some(Frame::Data(first)) = queue.front() else {
            return;
        };
        if swap {
            if queue.len() < 2 {
                return;
            }
            queue.swap(0, 1);
            self.counts.reordered += 1;
        } else {
            let again = Frame::Data(first.clone());
            queue.push_front(again);
            self.counts.duplicated += 1;
        }
        let t = self.links[l].tablet;
        let way = if to_server {
            "to the server"
        } else {
            "to the tablet"
        };
        let what = if swap {
            "swaps two frames"
        } else {
            "duplicates a frame"
        };
        self.note(format!("{t}: the network {what} {way}"));
    }

    /// A records supervisor accepts or rejects some held changes; the device that sent them
    /// is told if it is connected (otherwise when it next syncs the chart).
    fn decide(&mut self) {
        let pending = self
            .server
            .store()
            .held_batches(None, Some(HoldStatus::Pending))
            .unwrap_or_default();
        if pending.is_empty() {
            return;
        }
        let batch = &pending[self.rng.random_range(0..pending.len())];
        let reject = self.rng.random_bool(0.4).then_some("not this patient's");
        let (id, chart) = (batch.id, batch.chart);
        self.decide_on(id, chart, reject);
    }

    /// A records supervisor decides on hold `id` (of `chart`).
    fn decide_on(&mut self, id: i64, chart: ChartId, reject: Option<&str>) {
        match self.server.decide(id, reject) {
            Ok((chart, device, notice)) => {
                self.counts.decisions += 1;
                let what = if reject.is_some() {
                    "rejects"
                } else {
                    "accepts"
                };
                self.note(format!(
                    "a supervisor {what} hold {id} of {chart} from {device}"
                ));
                for l in 0..self.links.len() {
                    if let Some(server) = self.links[l].server.as_mut() {
                        let effects = server.decided(chart, &device, notice.clone());
                        self.from_server(l, effects);
                    }
                }
                self.pump_server();
            }
            Err(e) => self.note(format!("hold {id} of {chart} is not decided: {e}")),
        }
    }

    /// The other nurse signs in on tablet `t`: the client reconnects with her token.
    fn sign_in(&mut self, t: usize) {
        self.counts.sign_ins += 1;
        let nurse = (self.tablets[t].nurse + 1) % 2;
        self.tablets[t].nurse = nurse;
        self.note(format!("{t}: {} signs in", self.tablets[t].user()));
        // On an enrolled tablet the connection is the tablet's, whoever is signed in; on
        // another, the app connects again with the new person's token.
        if let (None, Some(l)) = (&self.tablets[t].enrolled, self.link_of(t)) {
            self.end_device(l, true);
            self.connect(t);
        }
    }

    /// Records what every tablet holds as acknowledged by the server.
    fn snapshot_acknowledged(&mut self) {
        for (t, tablet) in self.tablets.iter().enumerate() {
            for c in tablet.store.list(&Default::default()).unwrap_or_default() {
                let heads = tablet.store.acknowledged(c.id).unwrap_or_default();
                if !heads.is_empty() {
                    self.acknowledged.push((t, c.id, heads));
                }
            }
        }
    }

    fn crash_server(&mut self) -> Checked {
        self.counts.server_crashes += 1;
        self.note("the server crashes".into());
        self.snapshot_acknowledged();
        self.stop_server(None)?;
        // Nothing it acknowledged may be missing once it is back. (After a restore, what it
        // acknowledged before comes back from the tablets as they sync: checked at the end.)
        if self.counts.restores > 0 {
            return Ok(());
        }
        self.check_acknowledged()
    }

    /// The server stops with its connections cut, and starts again (after a restore from
    /// `backup`, if given).
    fn stop_server(&mut self, backup: Option<PathBuf>) -> Checked {
        for l in 0..self.links.len() {
            self.end_server(l, false);
        }
        let dir = self.dir.path().join("server");
        let placeholder = self.dir.path().join("between");
        let stopped = InProcessServer::open(&placeholder, Limits::default())
            .map_err(|e| format!("a server does not open: {e}"))?;
        // The old server goes first: its store and threads end with it.
        std::mem::replace(&mut self.server, stopped).close();
        if let Some(from) = backup {
            InProcessServer::restore(&dir, &from)
                .map_err(|e| format!("the backup does not restore: {e}"))?;
        }
        let reopened = InProcessServer::open(&dir, Limits::default())
            .map_err(|e| format!("the server's store does not open again: {e}"))?;
        std::mem::replace(&mut self.server, reopened).close();
        Ok(())
    }

    /// The records office backs the server up (once a run), as it runs.
    fn backup(&mut self) {
        let to = self.dir.path().join("backup.db");
        if to.exists() {
            return;
        }
        match self.server.backup(&to) {
            Ok(()) => self.note("the server is backed up".into()),
            Err(e) => self.note(format!("the backup failed: {e}")),
        }
    }

    /// The server's disk is lost: it is restored from the backup, and what it acknowledged
    /// since comes back from the tablets (checked at the end, after the heal).
    fn restore(&mut self) -> Checked {
        let from = self.dir.path().join("backup.db");
        if !from.exists() || self.counts.restores > 0 {
            return Ok(());
        }
        self.counts.restores += 1;
        self.note("the server is restored from the backup".into());
        self.snapshot_acknowledged();
        self.stop_server(Some(from))
    }

    fn crash_tablet(&mut self, t: usize) {
        self.counts.tablet_crashes += 1;
        self.note(format!("{t}: crashes"));
        if let Some(l) = self.link_of(t) {
            let keep = self.rng.random_range(0..=self.links[l].to_server.len());
            self.links[l].to_server.truncate(keep);
            self.end_device(l, false);
        }
        // The app starts again: its store is opened afresh from what is on disk.
        let store = Tablet::open(&self.tablets[t].path);
        self.tablets[t].feed = store.subscribe();
        if let Some(e) = self.tablets[t].enrolled.as_mut() {
            e.tablet =
                EnrolledTablet::open(store.clone(), &e.secret, KdfParams::INSECURE_FOR_TESTS)
                    .expect("the enrolment reads")
                    .expect("still enrolled");
        }
        drop(std::mem::replace(&mut self.tablets[t].store, store));
    }

    fn step(&mut self) -> Checked {
        self.counts.steps += 1;
        self.millis += STEP_MILLIS;
        self.seeded.set_clock(self.millis);
        let roll = self.rng.random_range(0..1000);
        let t = self.rng.random_range(0..self.tablets.len());
        match roll {
            // The network carries a frame one way on some connection.
            0..=699 => {
                if self.links.is_empty() {
                    self.connect(t);
                    return Ok(());
                }
                let l = self.rng.random_range(0..self.links.len());
                let to_server = self.rng.random_bool(0.5);
                // Now and then the network misbehaves as a WebSocket never should (a broken
                // proxy): the next frame arrives twice, or the next two swap places.
                match self.rng.random_range(0..100) {
                    0 => self.garble(l, to_server, false),
                    1 => self.garble(l, to_server, true),
                    _ => {}
                }
                if to_server {
                    self.deliver_to_server(l);
                } else {
                    self.deliver_to_device(l);
                }
            }
            700..=829 => self.work(t),
            830..=869 => self.connect(t),
            870..=889 => {
                if let Some(l) = self.link_of(t) {
                    self.counts.cuts += 1;
                    self.note(format!("{t}: the network drops"));
                    self.cut(l);
                }
            }
            890..=909 => {
                let tablet = &mut self.tablets[t];
                tablet.online = !tablet.online;
                let online = tablet.online;
                if !online {
                    self.counts.offline += 1;
                }
                self.note(format!(
                    "{t}: goes {}",
                    if online { "online" } else { "offline" }
                ));
                if let (false, Some(l)) = (online, self.link_of(t)) {
                    self.cut(l);
                }
                // Some offline spells are long: a night, a weekend, past the window in which
                // work written before a transfer or discharge is still taken.
                if !online && self.rng.random_bool(0.25) {
                    let hours = self.rng.random_range(1..=100);
                    self.pass(hours);
                }
            }
            910..=929 => self.sign_in(t),
            930..=944 => self.expire(t),
            945..=959 => self.crash_tablet(t),
            960..=964 => self.fetch(t),
            965..=969 => self.decide(),
            980..=982 => self.backup(),
            983..=984 => self.restore()?,
            970..=979 => self.crash_server()?,
            _ => {
                // Every tablet with nothing open tries again (its backoff has passed).
                for t in 0..self.tablets.len() {
                    self.connect(t);
                }
            }
        }
        self.links.retain(|l| !l.done());
        Ok(())
    }

    /// Tablet `t`'s token expires, if it has a connection open.
    fn expire(&mut self, t: usize) {
        let open = self.link_of(t).filter(|&l| self.links[l].server.is_some());
        if let Some(l) = open {
            self.counts.expiries += 1;
            self.note(format!("{t}: the token expires"));
            if let Some(server) = self.links[l].server.as_mut() {
                let effects = server.expire();
                self.from_server(l, effects);
            }
        }
    }

    /// `hours` pass at once. Past a shift (8 hours), every open connection's token expires.
    fn pass(&mut self, hours: u64) {
        self.counts.gaps += 1;
        self.counts.hours += hours;
        self.note(format!("{hours} hours pass"));
        self.millis += hours as i64 * 3_600_000;
        self.seeded.set_clock(self.millis);
        // Each tablet's timer: charts due to leave it go, online (their removals reported)
        // or offline (reported on the next connection).
        for t in 0..self.tablets.len() {
            match self.link_of(t) {
                Some(l) => {
                    if let Some(device) = self.links[l].device.as_mut() {
                        for m in device.tick() {
                            self.links[l].to_server.push_back(Frame::Data(m.encode()));
                        }
                    }
                }
                None => {
                    let _ = self.tablets[t].store.purge_due(Timestamp::now());
                }
            }
        }
        if hours >= 8 {
            for t in 0..self.tablets.len() {
                self.expire(t);
            }
        }
    }

    /// Every tablet online and connected afresh, frames delivered until nothing moves.
    fn heal(&mut self) -> Checked {
        for tablet in &mut self.tablets {
            tablet.online = true;
        }
        for l in 0..self.links.len() {
            if self.links[l].device.is_some() {
                self.end_device(l, true);
            }
        }
        self.quiesce()?;
        for t in 0..self.tablets.len() {
            self.connect(t);
        }
        self.quiesce()
    }

    fn quiesce(&mut self) -> Checked {
        for _ in 0..QUIET_WITHIN {
            let busy: Vec<(usize, bool)> = self
                .links
                .iter()
                .enumerate()
                .flat_map(|(l, link)| {
                    let mut ways = Vec::new();
                    if !link.to_server.is_empty() {
                        ways.push((l, true));
                    }
                    if !link.to_device.is_empty() {
                        ways.push((l, false));
                    }
                    ways
                })
                .collect();
            if busy.is_empty() {
                self.links.retain(|l| !l.done());
                return Ok(());
            }
            let (l, to_server) = busy[self.rng.random_range(0..busy.len())];
            if to_server {
                self.deliver_to_server(l);
            } else {
                self.deliver_to_device(l);
            }
        }
        let mut looping: Vec<String> = Vec::new();
        for (_, _, bytes) in self.frames.iter().rev().take(40) {
            let id = chartsync_core::protocol::Message::decode(bytes)
                .ok()
                .and_then(|m| m.document_id());
            if let Some(id) = id.map(|id| id.to_string()) {
                if !looping.contains(&id) {
                    looping.push(id);
                }
            }
        }
        Err(format!(
            "still exchanging frames after {QUIET_WITHIN} deliveries: a loop, about {}",
            looping.join(", ")
        ))
    }

    fn check_acknowledged(&self) -> Checked {
        let server = self.server.store();
        for (t, id, heads) in &self.acknowledged {
            let kept = server
                .read(*id, |c| {
                    heads
                        .iter()
                        .all(|h| c.doc().get_change_meta_by_hash(h).is_some())
                })
                .unwrap_or(false);
            if !kept {
                let held: Vec<String> = heads
                    .iter()
                    .map(|h| match server.held_change(h) {
                        Ok(Some((batch, status))) => format!("{h}: held ({batch}, {status:?})"),
                        _ => format!("{h}: not held"),
                    })
                    .collect();
                return Err(format!(
                    "tablet {t} was told the server has {id} at {held:?}, and the record has not"
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Checked {
        self.snapshot_acknowledged();
        self.check_acknowledged()?;
        let server = self.server.store().clone();
        // Every change an enrolled tablet sent was signed by a nurse it certified, within her
        // certificate: none may be held for its proof, restores and crashes notwithstanding.
        for b in server.held_batches(None, None).unwrap_or_default() {
            use chartsync_core::protocol::HoldReason::*;
            if matches!(
                b.reason,
                Unsigned
                    | UnknownCertificate
                    | BadSignature
                    | ForgedAuthor
                    | AnotherDevice
                    | Revoked
            ) {
                return Err(format!(
                    "changes of {} from {} were held for their proof: {:?} ({})",
                    b.chart, b.device, b.reason, b.summary
                ));
            }
        }
        for (t, tablet) in self.tablets.iter().enumerate() {
            let link = self.links.iter_mut().find(|l| l.tablet == t);
            let status = link
                .and_then(|l| l.device.as_mut())
                .map(|d| d.status())
                .ok_or_else(|| format!("tablet {t} is not connected after the heal"))?;
            let held_here: HashSet<ChartId> = status.held.iter().map(|h| h.chart).collect();
            for c in tablet.store.list(&Default::default()).unwrap_or_default() {
                let id = c.id;
                let ever = self.wards_of.get(&id).cloned().unwrap_or_default();
                let was_here = ever.iter().any(|w| tablet.serves(w));
                if !tablet.made.contains(&id) && !was_here {
                    return Err(format!(
                        "tablet {t} on {} holds {id}, which was only ever on {ever:?}",
                        tablet.ward
                    ));
                }
                let theirs: Vec<ChangeHash> = tablet
                    .store
                    .read(id, |c| {
                        c.doc().get_changes(&[]).iter().map(|c| c.hash()).collect()
                    })
                    .map_err(|e| format!("tablet {t} cannot read {id}: {e}"))?;
                let on_server: HashSet<ChangeHash> = server
                    .read(id, |c| {
                        c.doc().get_changes(&[]).iter().map(|c| c.hash()).collect()
                    })
                    .unwrap_or_default();
                let missing: Vec<ChangeHash> = theirs
                    .into_iter()
                    .filter(|h| !on_server.contains(h))
                    .collect();
                for h in &missing {
                    if !matches!(server.held_change(h), Ok(Some(_))) {
                        return Err(format!(
                            "tablet {t}'s change {h} to {id} is neither in the record nor held"
                        ));
                    }
                }
                if !missing.is_empty() {
                    self.counts.held_charts += 1;
                    if !held_here.contains(&id) {
                        return Err(format!(
                            "tablet {t}'s changes to {id} are held, and its status does not say so"
                        ));
                    }
                }
                if !missing.is_empty() && status.state == SyncState::UpToDate {
                    return Err(format!(
                        "tablet {t} says it is up to date with changes to {id} not in the record"
                    ));
                }
            }
            // Every active chart on the tablet's ward, as the server has it.
            for c in server.list(&Default::default()).unwrap_or_default() {
                if !tablet.serves(&c.ward) || c.status != EncounterStatus::Active {
                    continue;
                }
                let heads = server.read(c.id, |c| c.heads()).unwrap_or_default();
                let has = tablet
                    .store
                    .read(c.id, |chart| {
                        heads
                            .iter()
                            .all(|h| chart.doc().get_change_meta_by_hash(h).is_some())
                    })
                    .unwrap_or(false);
                if !has {
                    let mine = tablet
                        .store
                        .read(c.id, |c| c.heads())
                        .map_err(|e| e.to_string());
                    return Err(format!(
                        "tablet {t} on {} has not got the record of {} as the server has it (server {heads:?}, tablet {mine:?}, held here {:?}, departed {:?}, read-only {:?})",
                        tablet.ward, c.id, status.held, tablet.store.departed(c.id), tablet.store.read_only(c.id)
                    ));
                }
            }
        }
        for c in server.list(&Default::default()).unwrap_or_default() {
            let edited = server
                .read(c.id, |chart| chart.edited_after_signing())
                .map_err(|e| format!("the server cannot read {}: {e}", c.id))?
                .map_err(|e| format!("the server's {} does not read: {e}", c.id))?;
            if !edited.is_empty() {
                return Err(format!("signed entries of {} changed: {edited:?}", c.id));
            }
        }
        Ok(())
    }
}

fn run(seed: u64, steps: usize, verbose: bool) -> Result<Counts, String> {
    let mut sim = Sim::with_records(seed, 4, true, verbose);
    // The second tablet on 4west is enrolled: its nurses' changes carry proofs.
    sim.enrol(3);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            sim.step()?;
        }
        sim.heal()?;
        sim.check()
    }));
    let failed = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
    };
    match failed {
        None => {
            sim.counts.removed = sim
                .tablets
                .iter()
                .map(|t| t.store.purged_charts().map(|p| p.len()).unwrap_or(0))
                .sum();
            Ok(std::mem::take(&mut sim.counts))
        }
        Some(e) => {
            Err(format!(
                "seed {seed}: {e}\nreplay: SIM_SEED={seed} cargo test -p chartsync-tests --test simulation -- --nocapture\nwhat happened to the charts named:\n{}",
                sim.history(&e)
            ))
        }
    }
}

/// A frame as a trace shows it: its kind and document.
fn describe(frame: &[u8]) -> String {
    match chartsync_core::protocol::Message::decode(frame) {
        Ok(m) => {
            let inside = match &m {
                chartsync_core::protocol::Message::Sync { data, .. }
                | chartsync_core::protocol::Message::Request { data, .. } => {
                    match automerge::sync::Message::decode(data) {
                        Ok(s) => format!(
                            ": heads {:?}, need {:?}, {} have, {} changes",
                            s.heads.iter().map(|h| short(h)).collect::<Vec<_>>(),
                            s.need.iter().map(|h| short(h)).collect::<Vec<_>>(),
                            s.have.len(),
                            s.changes.len()
                        ),
                        Err(_) => String::new(),
                    }
                }
                chartsync_core::protocol::Message::Error { message, .. } => format!(": {message}"),
                _ => String::new(),
            };
            match m.document_id() {
                Some(id) => format!("{} {id} ({} bytes){inside}", m.kind(), frame.len()),
                None => format!("{}{inside}", m.kind()),
            }
        }
        Err(e) => format!("undecodable: {e}"),
    }
}

fn short(h: &ChangeHash) -> String {
    h.to_string()[..8].to_string()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn the_whole_sync_survives_a_seeded_network_crashes_and_people() {
    let steps = env_number("SIM_STEPS").unwrap_or(300) as usize;
    let seeds: Vec<u64> = match env_number("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_number("SIM_FIRST_SEED").unwrap_or(0);
            (first..first + env_number("SIM_SEEDS").unwrap_or(200)).collect()
        }
    };
    let verbose = seeds.len() == 1;
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for (done, &seed) in seeds.iter().enumerate() {
        // A soak shows how far it has got.
        if seeds.len() > 200 && done % 250 == 0 && done > 0 {
            eprintln!(
                "{done} of {} seeds run, {} failing so far",
                seeds.len(),
                failures.len()
            );
        }
        match run(seed, steps, verbose) {
            Ok(c) => {
                total.steps += c.steps;
                total.delivered += c.delivered;
                total.cuts += c.cuts;
                total.tablet_crashes += c.tablet_crashes;
                total.server_crashes += c.server_crashes;
                total.expiries += c.expiries;
                total.sign_ins += c.sign_ins;
                total.fetches += c.fetches;
                total.decisions += c.decisions;
                total.offline += c.offline;
                total.edits += c.edits;
                total.transfers += c.transfers;
                total.held_charts += c.held_charts;
                total.restores += c.restores;
                total.records_work += c.records_work;
                total.gaps += c.gaps;
                total.hours += c.hours;
                total.removed += c.removed;
                total.duplicated += c.duplicated;
                total.reordered += c.reordered;
            }
            Err(e) => {
                eprintln!("{e}\n");
                failures.push(seed);
            }
        }
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

// Scripted runs of the seams the seeded runs found (RELIABILITY.md), each on the same world
// with the steps given rather than drawn.

impl Sim {
    /// Whether tablet `t` has every change the server's record of `id` has.
    fn has_record(&self, t: usize, id: ChartId) -> bool {
        let heads = self
            .server
            .store()
            .read(id, |c| c.heads())
            .unwrap_or_default();
        !heads.is_empty()
            && self.tablets[t]
                .store
                .read(id, |c| {
                    heads
                        .iter()
                        .all(|h| c.doc().get_change_meta_by_hash(h).is_some())
                })
                .unwrap_or(false)
    }

    /// Takes tablet `t` off the network (its connection fails) or puts it back.
    fn set_online(&mut self, t: usize, online: bool) {
        self.tablets[t].online = online;
        if let (false, Some(l)) = (online, self.link_of(t)) {
            self.cut(l);
        }
    }

    /// Delivers the frames on link `l` alone, both ways, until it is quiet; every other
    /// connection's wait.
    fn drain(&mut self, l: usize) {
        while !self.links[l].to_server.is_empty() || !self.links[l].to_device.is_empty() {
            self.deliver_to_server(l);
            self.deliver_to_device(l);
        }
    }

    fn pending_hold(&self, id: ChartId) -> Option<i64> {
        self.server
            .store()
            .held_batches(Some(id), Some(HoldStatus::Pending))
            .ok()?
            .first()
            .map(|b| b.id)
    }
}

#[test]
fn a_chart_that_left_a_tablet_comes_back_to_a_server_restored_from_before_it() {
    let mut sim = Sim::new(1, 1, false);
    sim.backup();
    sim.connect(0);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.apply(0, Work::Write(id));
    sim.apply(0, Work::Discharge(id));
    sim.quiesce().unwrap();
    assert!(
        matches!(sim.tablets[0].store.departed(id), Ok(Some(_))),
        "a nurse's discharged chart leaves her tablet once the server has it all"
    );
    sim.restore().unwrap();
    assert!(
        !sim.server.store().contains(id).unwrap(),
        "the backup is from before the chart"
    );
    sim.heal().unwrap();
    sim.check().unwrap();
    assert!(sim.server.store().contains(id).unwrap());
}

/// A discharged chart stays on the tablet, read-only, until a backup holds what was written
/// on it; after the backup and a day, the tablet removes it. A restore from that backup then
/// loses nothing the tablet removed.
#[test]
fn a_chart_leaves_a_tablet_only_once_a_backup_holds_it_and_a_restore_loses_nothing() {
    let mut sim = Sim::new(1, 1, false);
    sim.connect(0);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.apply(0, Work::Write(id));
    sim.apply(0, Work::Discharge(id));
    sim.quiesce().unwrap();
    let heads = sim.tablets[0].store.read(id, |c| c.heads()).unwrap();
    // A day and more, with no backup: kept (a restore would need it).
    sim.pass(30);
    sim.heal().unwrap();
    assert!(sim.tablets[0].store.contains(id).unwrap());
    // The backup; the next day's connection brings the time to remove it.
    sim.backup();
    sim.pass(30);
    sim.heal().unwrap();
    assert!(
        !sim.tablets[0].store.contains(id).unwrap(),
        "removed once backed up"
    );
    let removed = sim.tablets[0].store.purged(id).unwrap().unwrap();
    assert!(removed.reported);
    assert_eq!(removed.heads, heads);
    sim.restore().unwrap();
    sim.heal().unwrap();
    sim.check().unwrap();
    assert!(sim
        .server
        .store()
        .read(id, |c| heads
            .iter()
            .all(|h| c.doc().get_change_meta_by_hash(h).is_some()))
        .unwrap());
}

#[test]
fn a_chart_a_restore_lost_sent_back_by_two_tablets_is_taken_from_both() {
    let mut sim = Sim::new(2, 2, false);
    sim.tablets[1].ward = "4west";
    sim.backup();
    sim.connect(0);
    sim.connect(1);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.apply(0, Work::Write(id));
    sim.quiesce().unwrap();
    assert!(
        sim.has_record(1, id),
        "the ward's other tablet has the chart"
    );
    sim.apply(1, Work::Write(id));
    sim.restore().unwrap();
    sim.heal().unwrap();
    // Both still connected (neither refused as sending a chart under an id in use), and the
    // record has what each wrote.
    sim.check().unwrap();
    assert!(sim.has_record(0, id) && sim.has_record(1, id));
}

#[test]
fn a_tablet_whose_rejected_changes_come_again_gets_the_record_on_that_connection() {
    let mut sim = Sim::new(3, 1, false);
    sim.connect(0);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.quiesce().unwrap();
    // The first nurse writes offline; the second signs in before it is sent: held.
    sim.set_online(0, false);
    sim.apply(0, Work::Write(id));
    sim.sign_in(0);
    sim.set_online(0, true);
    sim.connect(0);
    sim.quiesce().unwrap();
    let hold = sim
        .pending_hold(id)
        .expect("the first nurse's note is held");
    // Rejected while the tablet is away; it sends the note again on its next connection.
    sim.set_online(0, false);
    sim.decide_on(hold, id, Some("written on the wrong patient"));
    sim.set_online(0, true);
    sim.connect(0);
    sim.quiesce().unwrap();
    assert!(
        sim.has_record(0, id),
        "the tablet set its copy aside and has the record again, without reconnecting"
    );
}

/// Two tablets on 4west: the first nurse on tablet 0 writes offline, the second signs in
/// before it is sent, and tablet 1 writes meanwhile; tablet 0 connects, and its note is held.
fn held_beside_another_note(seed: u64) -> (Sim, ChartId) {
    let mut sim = Sim::new(seed, 2, false);
    sim.tablets[1].ward = "4west";
    sim.connect(0);
    sim.connect(1);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.quiesce().unwrap();
    sim.set_online(0, false);
    sim.apply(0, Work::Write(id));
    sim.sign_in(0);
    sim.apply(1, Work::Write(id));
    sim.quiesce().unwrap();
    sim.set_online(0, true);
    sim.connect(0);
    sim.quiesce().unwrap();
    assert!(
        sim.pending_hold(id).is_some(),
        "the first nurse's note is held"
    );
    (sim, id)
}

#[test]
fn a_tablet_whose_changes_are_held_gets_what_others_wrote_meanwhile() {
    // The ordinary case. (The case where the tablet's first message on the connection
    // already carries the held changes, so the server never heard what it has before holding
    // them, needs a chart lost by a restore and sent back by two tablets at once; seed 158 of
    // the seeded runs goes through it.)
    let (sim, id) = held_beside_another_note(4);
    assert!(
        sim.has_record(0, id),
        "the other tablet's note reached the tablet whose changes are held"
    );
}

#[test]
fn a_tablet_whose_changes_are_held_is_sent_what_it_asks_for_by_hash() {
    // A Bloom filter's false positive makes a device miss a change and ask for it by hash
    // (`need`); the seeded runs met it about once in 400 seeds, on a chart held on that
    // connection, where the server used to ignore the ask.
    let (mut sim, id) = held_beside_another_note(5);
    let theirs = sim.server.store().read(id, |c| c.heads()).unwrap();
    // The tablet asks for the other tablet's note by its hash.
    let l = sim.link_of(0).expect("connected");
    let mut ask = automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a message");
    ask.heads = sim.tablets[0].store.read(id, |c| c.heads()).unwrap();
    ask.need = theirs.clone();
    let frame = chartsync_core::protocol::Message::Sync {
        document_id: id,
        sender_id: sim.tablets[0].name.clone(),
        target_id: "chartsync-server".into(),
        data: ask.encode(),
        proofs: None,
    };
    sim.links[l]
        .to_server
        .push_back(Frame::Data(frame.encode()));
    sim.deliver_to_server(l);
    let sent: Vec<ChangeHash> = sim.links[l]
        .to_device
        .iter()
        .filter_map(|f| match f {
            Frame::Data(bytes) => chartsync_core::protocol::Message::decode(bytes).ok(),
            Frame::End => None,
        })
        .filter_map(|m| match m {
            chartsync_core::protocol::Message::Sync { data, .. } => {
                automerge::sync::Message::decode(&data).ok()
            }
            _ => None,
        })
        .flat_map(|m| {
            chartsync_core::protocol::sync::changes_in(&m)
                .into_iter()
                .map(|(h, _)| h)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        theirs.iter().all(|h| sent.contains(h)),
        "the change asked for by hash is sent ({sent:?})"
    );
}

#[test]
fn a_tablet_whose_changes_are_held_asks_for_a_change_a_push_left_out() {
    // The tablet's side of a Bloom filter's false positive: the filter a tablet whose changes
    // are held last sent seems to hold a change it lacks, so the server's push leaves that
    // change out and the next one waits for it. The tablet asks for it by hash, on that
    // connection.
    let (mut sim, id) = held_beside_another_note(6);
    let l = sim.link_of(0).expect("connected");
    let before = sim.server.store().read(id, |c| c.heads()).unwrap();
    // The other nurse writes a note; before it reaches the server, the held tablet's filter
    // (as a false positive would) claims it.
    sim.apply(1, Work::Write(id));
    let first = sim.tablets[1].store.read(id, |c| c.heads()).unwrap();
    let (heads, mut since) = sim.tablets[0]
        .store
        .read(id, |c| {
            let since: Vec<ChangeHash> = c
                .doc()
                .get_changes(&before)
                .iter()
                .map(|c| c.hash())
                .collect();
            (c.heads(), since)
        })
        .unwrap();
    since.extend(first.iter().copied());
    let mut claim = automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a message");
    claim.heads = heads;
    claim.have = vec![automerge::sync::Have {
        last_sync: before,
        bloom: automerge::sync::BloomFilter::from_hashes(since.iter()),
    }];
    let frame = chartsync_core::protocol::Message::Sync {
        document_id: id,
        sender_id: sim.tablets[0].name.clone(),
        target_id: "chartsync-server".into(),
        data: claim.encode(),
        proofs: None,
    };
    assert!(sim.links[l].to_server.is_empty());
    sim.links[l]
        .to_server
        .push_back(Frame::Data(frame.encode()));
    sim.deliver_to_server(l);
    // She writes another note, and both reach the server, which pushes the second alone.
    sim.apply(1, Work::Write(id));
    let other = sim.link_of(1).expect("connected");
    sim.drain(other);
    sim.quiesce().unwrap();
    assert!(
        sim.has_record(0, id),
        "the held tablet asked for the note the push left out, and has the record"
    );
}

#[test]
fn a_chart_transferred_away_and_back_is_the_tablets_again() {
    let mut sim = Sim::new(6, 2, false);
    sim.connect(0);
    sim.connect(1);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.apply(0, Work::Write(id));
    sim.quiesce().unwrap();
    sim.apply(0, Work::Transfer(id, "5east"));
    sim.quiesce().unwrap();
    assert!(
        matches!(sim.tablets[0].store.departed(id), Ok(Some(_))),
        "the chart left 4west's tablet"
    );
    assert!(sim.has_record(1, id), "5east's tablet has it");
    sim.apply(1, Work::Transfer(id, "4west"));
    sim.quiesce().unwrap();
    assert!(
        matches!(sim.tablets[0].store.departed(id), Ok(None)),
        "the chart is 4west's tablet's again"
    );
    assert!(
        sim.has_record(0, id),
        "with the record, on the same connection"
    );
}

#[test]
fn a_chart_that_came_back_while_its_tablet_was_away_syncs_when_it_connects() {
    // On connecting, the tablet offers the chart it holds as departed before it hears its
    // ward's census: the server, for which the chart is the tablet's again, sends what the
    // tablet lacks, which a departed chart does not take in; then the census says the chart
    // is back, and the tablet asks for those changes again. Seen in the soak as a loop.
    let mut sim = Sim::new(7, 2, false);
    sim.connect(0);
    sim.connect(1);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.quiesce().unwrap();
    sim.apply(0, Work::Transfer(id, "5east"));
    sim.quiesce().unwrap();
    assert!(matches!(sim.tablets[0].store.departed(id), Ok(Some(_))));
    sim.set_online(0, false);
    sim.apply(1, Work::Write(id));
    sim.apply(1, Work::Transfer(id, "4west"));
    sim.quiesce().unwrap();
    sim.set_online(0, true);
    sim.connect(0);
    sim.quiesce().unwrap();
    assert!(
        matches!(sim.tablets[0].store.departed(id), Ok(None)),
        "the chart is 4west's tablet's again"
    );
    assert!(sim.has_record(0, id));
}

#[test]
fn a_chart_asked_for_that_leaves_the_ward_before_any_of_it_arrives_is_unavailable_not_left() {
    // Seed 5031 of the soak, as a loop: a nurse asked for a chart by id; it reached the
    // server on her ward, the server offered it, and before any of it went out it was
    // transferred away. The server told her tablet the chart had left, as if she had had it,
    // and answered her asks with its heads and nothing else: asked and answered for ever.
    // Either side's rule now ends it: the server answers `doc-unavailable` to a device that
    // has none of a chart that left, and a device told a chart it never had left stops
    // asking for it on that connection.
    let mut sim = Sim::with_records(7, 1, true, false);
    sim.connect(0);
    sim.set_online(1, false);
    let id = sim.apply(1, Work::Admit("4west"));
    sim.ask_for(0, id);
    sim.quiesce().unwrap();
    // The records office's PC connects; its chart reaches the server, which offers it to the
    // tablet that asked.
    sim.set_online(1, true);
    sim.connect(1);
    let (tablet, pc) = (sim.link_of(0).unwrap(), sim.link_of(1).unwrap());
    while !sim.server.store().contains(id).unwrap() {
        if sim.links[pc].to_server.is_empty() {
            sim.deliver_to_device(pc);
        } else {
            sim.deliver_to_server(pc);
        }
    }
    assert!(
        !sim.links[tablet].to_device.is_empty(),
        "the chart is offered"
    );
    // Before the tablet hears of it, the chart goes to the ICU.
    sim.apply(1, Work::Transfer(id, "icu"));
    sim.drain(pc);
    sim.quiesce().unwrap();
    assert!(
        !sim.tablets[0].store.contains(id).unwrap(),
        "the tablet on 4west never had the chart, and has it not"
    );
}

#[test]
fn a_ward_census_fetched_afresh_after_a_restore_survives_the_tablet_crashing() {
    // Seed 7139 of the soak, as a loop. After a restore, a tablet's copy of its ward's
    // census held changes the restored server had lost; told so, the tablet started its copy
    // afresh and stored the new census, then crashed before it saved its sync state. On its
    // next connection the old state named changes of the old copy, the server answered with
    // automerge's sync reset, and the tablet, which does not forget its last sync, asked
    // again: for ever. Now the tablet stores the fresh sync state when it starts its copy
    // afresh, and the server starts a copy afresh whose heads or last sync it lacks.
    let mut sim = Sim::with_records(3, 1, true, false);
    sim.backup();
    sim.connect(0);
    let id = sim.apply(0, Work::Admit("4west"));
    sim.quiesce().unwrap();
    assert!(sim.tablets[0].store.census_doc("4west").unwrap().is_some());
    sim.restore().unwrap();
    sim.quiesce().unwrap();
    // Connected again, the tablet is told to start its copy afresh, and does.
    sim.connect(0);
    sim.quiesce().unwrap();
    sim.crash_tablet(0);
    // Meanwhile the ward's census moves on: the registration desk admits a patient.
    sim.connect(1);
    sim.apply(1, Work::Admit("4west"));
    sim.quiesce().unwrap();
    sim.connect(0);
    sim.quiesce().unwrap();
    sim.heal().unwrap();
    sim.check().unwrap();
    let on_server = sim.server.store().census_doc("4west").unwrap();
    assert!(on_server
        .expect("a census")
        .entries()
        .iter()
        .any(|e| e.id == id));
}
