//! The store's numbers, from one run, measured side by side so that a noisy machine moves both
//! sides of each ratio alike:
//! - committing one observation to a chart of 2,000 entries (p50/p99), beside the floor: a raw
//!   SQLite INSERT of the same bytes, same pragmas, same disk; plain and encrypted, interleaved;
//! - opening a store of 2,000 charts and listing one ward's census;
//! - bytes on disk per chart after compaction, against automerge's save();
//! - heap per automerge op when a chart is loaded (the cache's memory estimate).
//!
//! Run: `cargo bench -p chartsync-core --bench store`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use chartsync_core::chart::*;
use chartsync_core::codes::CodeSystem;
use chartsync_core::store::schema::PAGE_SIZE;
use chartsync_core::store::*;
use common::busy_chart;

/// Counts live heap bytes, to measure what a loaded chart costs.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

const COMMITS: usize = 1000;

fn nurse() -> Staff {
    Staff::new("rn.park", Role::Nurse, "tablet-4west-02")
}

fn observation(n: usize) -> NewEntry {
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
        value: Some(format!("{}", 60 + n % 40)),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}

fn at(n: usize) -> Timestamp {
    Timestamp::parse("2026-12-01T00:00:00Z")
        .unwrap()
        .plus_seconds(n as i64 * 60)
}

/// The floor: one INSERT of `bytes` in its own transaction, on a file set up as the store's.
struct Floor(rusqlite::Connection);
impl Floor {
    fn open(path: &std::path::Path, key: Option<&str>) -> Floor {
        let c = rusqlite::Connection::open(path).unwrap();
        // The store's page size, set as the store sets it.
        match key {
            Some(k) => c.execute_batch(&format!(
                "PRAGMA key = \"x'{k}'\"; PRAGMA cipher_page_size = {PAGE_SIZE};"
            )),
            None => c.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};")),
        }
        .unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, chart_id TEXT, data BLOB);",
        )
        .unwrap();
        Floor(c)
    }
    fn insert(&mut self, bytes: &[u8]) -> Duration {
        let start = Instant::now();
        let tx = self.0.transaction().unwrap();
        tx.execute(
            "INSERT INTO changes (chart_id, data) VALUES ('x', ?1)",
            [bytes],
        )
        .unwrap();
        tx.commit().unwrap();
        start.elapsed()
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn row(name: &str, mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let (p50, p95, p99) = (pct(&d, 0.5), pct(&d, 0.95), pct(&d, 0.99));
    println!("| {name} | {p50:.3} | {p95:.3} | {p99:.3} |");
    (p50, p99)
}

const HEADER: &str = "| measure | p50 | p95 | p99 |\n|---|---|---|---|";

fn commit_latency() {
    let dir = tempfile::tempdir().unwrap();
    let key = EncryptionKey::new([42; 32]);
    let hex_key = "2a".repeat(32);
    let open = |name: &str, key: Option<EncryptionKey>, compaction: Compaction| {
        ChartStore::open(
            dir.path().join(name),
            StoreOptions {
                encryption_key: key,
                compaction,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    };
    let plain = open("plain.db", None, Compaction::Background);
    let encrypted = open("encrypted.db", Some(key), Compaction::Background);
    let quiet = open("quiet.db", None, Compaction::Manual);
    let busy = busy_chart();
    let id = ChartId::random();
    plain.insert(id, busy.clone()).unwrap();
    encrypted.insert(id, busy.clone()).unwrap();
    quiet.insert(id, busy).unwrap();
    let mut floor = Floor::open(&dir.path().join("floor.db"), None);
    let mut floor_enc = Floor::open(&dir.path().join("floor-enc.db"), Some(&hex_key));

    let (mut t_plain, mut t_floor, mut t_enc, mut t_floor_enc, mut t_write, mut t_quiet) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut scratch = plain.chart(id).unwrap();
    for n in 0..COMMITS {
        // The chart API write alone, on a copy, for the breakdown.
        let start = Instant::now();
        let before = scratch.heads();
        scratch.add_entry(&nurse(), at(n), observation(n)).unwrap();
        t_write.push(start.elapsed());
        let bytes = scratch.save_after(&before);

        let start = Instant::now();
        plain
            .update(id, |c| c.add_entry(&nurse(), at(n), observation(n)))
            .unwrap();
        t_plain.push(start.elapsed());
        t_floor.push(floor.insert(&bytes));

        let start = Instant::now();
        quiet
            .update(id, |c| c.add_entry(&nurse(), at(n), observation(n)))
            .unwrap();
        t_quiet.push(start.elapsed());

        let start = Instant::now();
        encrypted
            .update(id, |c| c.add_entry(&nurse(), at(n), observation(n)))
            .unwrap();
        t_enc.push(start.elapsed());
        t_floor_enc.push(floor_enc.insert(&bytes));
    }
    println!("\n## Commit one observation to a chart of 2,000 entries ({COMMITS} commits each, interleaved; ms)\n");
    println!("{HEADER}");
    let (_, w99) = row("chart API write alone (in memory, no store)", t_write);
    let (p50, p99) = row(
        "store.update: write + durable commit + index (background compaction on)",
        t_plain,
    );
    let (q50, q99) = row(
        "store.update, compaction off (no background work competing)",
        t_quiet,
    );
    let (f50, f99) = row("floor: raw INSERT of the same bytes, same pragmas", t_floor);
    let (e50, e99) = row("store.update, encrypted (SQLCipher)", t_enc);
    let (g50, g99) = row("floor, encrypted", t_floor_enc);
    println!(
        "\nratios: store/floor p50 {:.2}x, p99 {:.2}x; compaction off: p50 {:.2}x, p99 {:.2}x; \
         store minus in-memory write p99 / floor p99 {:.2}x; \
         encrypted/plain store p50 {:.2}x, p99 {:.2}x; encrypted/plain floor p50 {:.2}x",
        p50 / f50,
        p99 / f99,
        q50 / f50,
        q99 / f99,
        (p99 - w99) / f99,
        e50 / p50,
        e99 / p99,
        g50 / f50
    );
    let _ = g99;
}

/// A store that compacts only when asked, so that the bench decides when.
fn manual_store(path: &std::path::Path) -> ChartStore {
    ChartStore::open(
        path,
        StoreOptions {
            compaction: Compaction::Manual,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn small_chart(ward: &str, n: usize) -> Chart {
    let tech = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let dr = Staff::new("dr.okafor", Role::Physician, "tablet-01");
    let mut c = Chart::create(
        NewPatient {
            mrn: format!("MRN-{n:06}"),
            family_name: format!("Family{n}"),
            given_names: "Sam".into(),
            birth_date: Some("1960-01-01".into()),
            sex: Some(Sex::Unknown),
            address: None,
            phone: None,
        },
        NewEncounter {
            ward: ward.into(),
            bed: Some(format!("{:03}", n % 500)),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: Some("dr.okafor".into()),
        },
        &tech,
        at(0),
    )
    .unwrap();
    for i in 0..9 {
        c.add_entry(&nurse(), at(i), observation(i)).unwrap();
    }
    let note = c
        .add_entry(
            &dr,
            at(10),
            NewEntry::note(EntryKind::ProgressNote, "Stable. Continue current plan."),
        )
        .unwrap();
    c.sign_entry(&dr, at(11), &note, SignatureMeaning::Author)
        .unwrap();
    c
}

fn census_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let wards = [
        "4west",
        "5east",
        "icu",
        "maternity",
        "oncology",
        "cardiology",
        "surgical",
        "renal",
    ];
    let mut saved = 0u64;
    let start = Instant::now();
    {
        let store = manual_store(&path);
        let charts: Vec<_> = (0..2000)
            .map(|n| {
                let mut c = small_chart(wards[n % wards.len()], n);
                saved += c.save().len() as u64;
                (ChartId::random(), c)
            })
            .collect();
        let mut last = 0;
        store
            .import(charts, Some(2000), |p| {
                if p.done - last >= 500 {
                    last = p.done;
                }
            })
            .unwrap();
    }
    let built = start.elapsed();
    // Fold the WAL into the file so its size is the store's.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let file = std::fs::metadata(&path).unwrap().len();

    let mut open_list = Vec::new();
    let mut listed = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let store = ChartStore::open(&path, StoreOptions::default()).unwrap();
        listed = store.census("icu").unwrap().len();
        open_list.push(start.elapsed());
        assert_eq!(store.stats().unwrap().documents_loaded, 0);
    }
    let store = ChartStore::open(&path, StoreOptions::default()).unwrap();
    let mut list_only = Vec::new();
    let mut worklist = Vec::new();
    let overdue = DeficiencyFilter {
        wards: Some(vec!["icu".into()]),
        overdue_only: true,
        ..DeficiencyFilter::default()
    };
    let now = Timestamp::now();
    for _ in 0..200 {
        let start = Instant::now();
        store.census("icu").unwrap();
        list_only.push(start.elapsed());
        let start = Instant::now();
        store.worklist(&overdue, now).unwrap();
        worklist.push(start.elapsed());
    }
    drop(store);
    // An upgrade to newer audit rules: every chart is read once as the store opens.
    let mut rebuild = Vec::new();
    for _ in 0..3 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("UPDATE store_meta SET value = '0' WHERE key = 'deficiency_rules';")
            .unwrap();
        let start = Instant::now();
        drop(ChartStore::open(&path, StoreOptions::default()).unwrap());
        rebuild.push(start.elapsed());
    }
    println!(
        "\n## A store of 2,000 charts (10 entries each; built and imported in {:.1} s)\n",
        built.as_secs_f64()
    );
    println!("{HEADER}");
    row(
        &format!("open the store and list one ward's census ({listed} charts)"),
        open_list,
    );
    row("list the census on an open store", list_only);
    row(
        "list the ward's overdue deficiencies on an open store",
        worklist,
    );
    row(
        "open after an audit-rules change: rebuild 2,000 charts' deficiency rows",
        rebuild,
    );
    println!(
        "\nbytes on disk: {file} for 2,000 charts = {} per chart; automerge save() {} per chart; ratio {:.2}x",
        file / 2000,
        saved / 2000,
        file as f64 / saved as f64
    );
}

fn busy_chart_size_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let mut busy = busy_chart();
    let id = ChartId::random();
    let compacted;
    {
        let store = manual_store(&path);
        store.insert(id, busy.clone()).unwrap();
        for n in 0..200 {
            store
                .update(id, |c| c.add_entry(&nurse(), at(n), observation(n)))
                .unwrap();
        }
        let (s, i) = store.chart_bytes(id).unwrap();
        compacted = store.read(id, |c| c.clone().save().len() as u64).unwrap();
        let start = Instant::now();
        let report = store.compact(id).unwrap();
        println!(
            "\n## The busy chart in the store\n\nafter 200 commits: snapshot {s} + changes {i} bytes; compaction folded {} changes into {} bytes in {:.1} ms",
            report.changes_folded,
            report.bytes_after,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    let vacuumed_size = |path: &std::path::Path| {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
            .unwrap();
        std::fs::metadata(path).unwrap().len()
    };
    // What the chart adds to a store: the file less an empty store's (a root page per table
    // and index).
    let empty = dir.path().join("empty.db");
    drop(ChartStore::open(&empty, StoreOptions::default()).unwrap());
    let file = vacuumed_size(&path) - vacuumed_size(&empty);
    println!(
        "bytes on disk for the chart after compaction and VACUUM (file less an empty store): {file}; automerge save() {}; ratio {:.2}x",
        compacted,
        file as f64 / compacted as f64
    );

    let before = LIVE.load(Ordering::Relaxed);
    let loaded = Chart::load(&busy.save()).unwrap();
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let stats = loaded.doc().stats();
    println!(
        "heap of the loaded chart: {heap} bytes for {} ops and {} changes = {:.0} bytes per op (all in)",
        stats.num_ops,
        stats.num_changes,
        heap as f64 / stats.num_ops as f64
    );
    drop(loaded);
}

/// Where a commit's time goes, beyond the SQLite transaction.
fn commit_breakdown() {
    let mut chart = busy_chart();
    let mut parts: Vec<(&str, Vec<Duration>)> = [
        "save_after",
        "touched_since",
        "patient + encounter",
        "deficiencies_after",
        "deficiencies_after, a code assigned (the principal-diagnosis rule)",
        "deficiencies_after, an H&P added (the H&P rules: every entry's kind)",
    ]
    .into_iter()
    .map(|n| (n, Vec::new()))
    .collect();
    for n in 0..100 {
        let before = chart.heads();
        chart.add_entry(&nurse(), at(n), observation(n)).unwrap();
        let t = Instant::now();
        let _ = chart.save_after(&before);
        parts[0].1.push(t.elapsed());
        let t = Instant::now();
        let touched = chart.touched_since(&before);
        parts[1].1.push(t.elapsed());
        let t = Instant::now();
        let _ = (chart.patient().unwrap(), chart.encounter().unwrap());
        parts[2].1.push(t.elapsed());
        let t = Instant::now();
        let _ = chart.deficiencies_after(&touched).unwrap();
        parts[3].1.push(t.elapsed());
    }
    let coder = Staff::new("cdr.wu", Role::Coder, "records-pc-2");
    for n in 0..20 {
        let before = chart.heads();
        chart
            .assign_code(
                &coder,
                at(100 + n),
                NewCoding {
                    code: CodeInput::new(CodeSystem::Icd10Cm, "E11.9"),
                    sequence: CodingSequence::Secondary,
                    poa: None,
                    supporting_entries: vec![],
                },
            )
            .unwrap();
        let touched = chart.touched_since(&before);
        let t = Instant::now();
        let _ = chart.deficiencies_after(&touched).unwrap();
        parts[4].1.push(t.elapsed());
    }
    let physician = Staff::new("dr.okafor", Role::Physician, "tablet-4west-01");
    for n in 0..20 {
        let before = chart.heads();
        chart
            .add_entry(
                &physician,
                at(200 + n),
                NewEntry::note(EntryKind::HistoryPhysical, "History and physical."),
            )
            .unwrap();
        let touched = chart.touched_since(&before);
        let t = Instant::now();
        let _ = chart.deficiencies_after(&touched).unwrap();
        parts[5].1.push(t.elapsed());
    }
    println!("\n## Where a commit's time goes (busy chart, 100 observations; ms)\n");
    println!("| step | p50 | p95 | p99 |\n|---|---|---|---|");
    for (name, d) in parts {
        row(name, d);
    }
}

/// SQLite and PostgreSQL side by side (`STORE_BENCH=engines`, with `CHARTSYNC_BENCH_POSTGRES`
/// naming a server whose database may create databases): one writer's commit latency,
/// interleaved on both; commits per second from eight writers on one store, and on PostgreSQL
/// from three stores (server nodes) on one database; and how long another node takes to hear
/// of a commit against the committing node's own feed.
#[cfg(feature = "postgres")]
fn engines() {
    let admin = std::env::var("CHARTSYNC_BENCH_POSTGRES")
        .expect("CHARTSYNC_BENCH_POSTGRES: a PostgreSQL URL whose database may create databases");
    let new_database = || {
        let name = format!("bench_{}", uuid_like());
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        // The server's URL with this database in place of its own; its parameters kept.
        let (url, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let base = url.rsplit_once('/').unwrap().0;
        match query {
            "" => format!("{base}/{name}"),
            q => format!("{base}/{name}?{q}"),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let options = || StoreOptions {
        compaction: Compaction::Manual,
        ..StoreOptions::default()
    };
    let sqlite = ChartStore::open(dir.path().join("bench.db"), options()).unwrap();
    let url = new_database();
    let pg = ChartStore::open_postgres(&url, options()).unwrap();

    // One writer, one chart, interleaved.
    let a = sqlite.create(small_chart("4west", 0)).unwrap();
    pg.insert(a, sqlite.chart(a).unwrap()).unwrap();
    let (mut t_sqlite, mut t_pg) = (vec![], vec![]);
    for n in 0..300 {
        for (store, times) in [(&sqlite, &mut t_sqlite), (&pg, &mut t_pg)] {
            let start = Instant::now();
            store
                .update(a, |c| c.add_entry(&nurse(), at(n), observation(n)))
                .unwrap();
            times.push(start.elapsed());
        }
    }
    println!(
        "\n## One writer's durable commit, SQLite and PostgreSQL interleaved (300 each; ms)\n"
    );
    println!("{HEADER}");
    let (s50, s99) = row("SQLite (file, synchronous = FULL)", t_sqlite);
    let (p50, p99) = row("PostgreSQL (loopback, synchronous_commit on)", t_pg);
    println!(
        "\nratios: PostgreSQL/SQLite p50 {:.2}x, p99 {:.2}x",
        p50 / s50,
        p99 / s99
    );

    // Eight writers, each on its own chart.
    let throughput = |stores: &[&ChartStore], label: &str| {
        let ids: Vec<ChartId> = (0..8)
            .map(|n| stores[0].create(small_chart("4west", n)).unwrap())
            .collect();
        for s in stores {
            for id in &ids {
                s.read(*id, |_| ()).unwrap();
            }
        }
        let per = 100;
        let start = Instant::now();
        std::thread::scope(|scope| {
            for (n, id) in ids.iter().enumerate() {
                let store = stores[n % stores.len()];
                scope.spawn(move || {
                    for k in 0..per {
                        store
                            .update(*id, |c| c.add_entry(&nurse(), at(k), observation(k)))
                            .unwrap();
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let rate = (8 * per) as f64 / secs;
        println!("| {label} | {rate:.0} |");
        rate
    };
    println!("\n## Durable commits per second, eight writers on eight charts (800 commits)\n");
    println!("| store | commits/s |\n|---|---|");
    let one_sqlite = throughput(&[&sqlite], "SQLite, one server");
    let one_pg = throughput(&[&pg], "PostgreSQL, one node");
    let nodes: Vec<ChartStore> = (0..3)
        .map(|_| ChartStore::open_postgres(&url, options()).unwrap())
        .collect();
    let three_pg = throughput(&nodes.iter().collect::<Vec<_>>(), "PostgreSQL, three nodes");
    println!(
        "\nratios: PostgreSQL one node / SQLite {:.2}x; three nodes / one node {:.2}x",
        one_pg / one_sqlite,
        three_pg / one_pg
    );

    // Fan-out: a commit on node 0, heard on node 0's feed and on node 1's.
    let own = nodes[0].subscribe();
    let other = nodes[1].subscribe();
    let id = nodes[0].create(small_chart("4west", 99)).unwrap();
    let wait_for = |rx: &std::sync::mpsc::Receiver<ChartChanged>,
                    heads: &[automerge::ChangeHash]| {
        let mut want = heads.to_vec();
        want.sort();
        loop {
            let mut e = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the commit is heard")
                .heads;
            e.sort();
            if e == want {
                return;
            }
        }
    };
    let (mut t_own, mut t_other) = (vec![], vec![]);
    for n in 0..200 {
        let start = Instant::now();
        nodes[0]
            .update(id, |c| c.add_entry(&nurse(), at(n), observation(n)))
            .unwrap();
        let heads = nodes[0].read(id, |c| c.heads()).unwrap();
        wait_for(&own, &heads);
        t_own.push(start.elapsed());
        wait_for(&other, &heads);
        t_other.push(start.elapsed());
    }
    println!("\n## From a commit's start to its event on the feed (200 commits; ms)\n");
    println!("{HEADER}");
    let (o50, o99) = row("the committing node's own feed", t_own);
    let (f50, f99) = row("another node's feed (outbox, NOTIFY, follower)", t_other);
    println!(
        "\nratios: other/own p50 {:.2}x, p99 {:.2}x",
        f50 / o50,
        f99 / o99
    );
}

#[cfg(feature = "postgres")]
fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; do the work only for `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("STORE_BENCH").unwrap_or_default();
    if !only.is_empty() && only != "all" {
        // STORE_BENCH=breakdown (or commit, census, busy) runs one part.
        match only.as_str() {
            "breakdown" => commit_breakdown(),
            "commit" => commit_latency(),
            "census" => census_and_size(),
            #[cfg(feature = "postgres")]
            "engines" => engines(),
            _ => busy_chart_size_and_memory(),
        }
        return;
    }
    commit_breakdown();
    commit_latency();
    census_and_size();
    busy_chart_size_and_memory();
}
