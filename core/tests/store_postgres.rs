//! The store in a PostgreSQL database, where it differs from a file: how a database is
//! recognised as a store (or refused, untouched), schema versions across server nodes of
//! different ages, and several stores (server nodes) writing to one database at once.
//!
//! Ignored unless asked for: scripts/test.sh runs them with `--ignored` once
//! `CHARTSYNC_TEST_POSTGRES` names the PostgreSQL cluster it starts. The behaviour the two
//! engines share is tested by the rest of the suite, on both.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

/// A place on the test server: this file is about PostgreSQL only.
fn database() -> Place {
    let place = place();
    assert!(
        place.is_postgres(),
        "set {POSTGRES} to a PostgreSQL server (scripts/test.sh does) to run these tests"
    );
    place
}

/// The store as a look from outside opens it: no competing for the lease.
fn outside(place: &Place) -> ChartStore {
    place
        .open(StoreOptions {
            lease: false,
            ..StoreOptions::default()
        })
        .unwrap()
}

/// Rows of one table, read behind the store's back.
fn count(place: &Place, table: &str) -> i64 {
    let mut client = postgres::Client::connect(&place.location(), postgres::NoTls).unwrap();
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

fn schema_version(place: &Place) -> i64 {
    let mut client = postgres::Client::connect(&place.location(), postgres::NoTls).unwrap();
    client
        .query_one("SELECT version FROM chartsync_schema", &[])
        .unwrap()
        .get(0)
}

#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn an_empty_database_becomes_a_store_at_this_version_and_reopens_with_its_charts() {
    let place = database();
    let id = {
        let store = place.open(StoreOptions::default()).unwrap();
        store.create(admitted()).unwrap()
    };
    assert_eq!(schema_version(&place), schema::VERSION);
    let store = place.open(StoreOptions::default()).unwrap();
    assert!(store.contains(id).unwrap());
    assert_eq!(store.census("4west").unwrap().len(), 1);
    assert!(store.path().is_none(), "a database has no file");
    store.verify().unwrap();
}

/// A rolling upgrade: the new version's node migrated the database; a node still on this
/// version must not start against it (it would write rows the new schema does not expect).
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_schema_newer_than_this_build_is_refused_and_left_as_it_was() {
    let place = database();
    let id = {
        let store = place.open(StoreOptions::default()).unwrap();
        store.create(admitted()).unwrap()
    };
    let newer = schema::VERSION + 1;
    place.execute(&format!("UPDATE chartsync_schema SET version = {newer}"));
    let err = place.open(StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerVersion { found, supported } if found == newer && supported == schema::VERSION),
        "{err}"
    );
    assert_eq!(schema_version(&place), newer, "the version was not touched");
    assert_eq!(count(&place, "charts"), 1);
    // Put back, the store opens as before.
    place.execute(&format!(
        "UPDATE chartsync_schema SET version = {}",
        schema::VERSION
    ));
    assert!(place
        .open(StoreOptions::default())
        .unwrap()
        .contains(id)
        .unwrap());
}

#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_database_holding_another_applications_tables_is_refused_untouched() {
    let place = database();
    place.execute("CREATE TABLE invoices (id BIGINT PRIMARY KEY); INSERT INTO invoices VALUES (1)");
    let err = place.open(StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::ForeignSchema), "{err}");
    assert_eq!(count(&place, "invoices"), 1);
    let mut client = postgres::Client::connect(&place.location(), postgres::NoTls).unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing of the store's was made");
}

/// Server nodes open the store at the same moment: one migrates, the others wait for it and
/// find the schema made.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn nodes_starting_together_make_the_schema_once() {
    let place = Arc::new(database());
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let place = place.clone();
            std::thread::spawn(move || place.open(StoreOptions::default()).map(drop))
        })
        .collect();
    for o in opened {
        o.join().unwrap().unwrap();
    }
    assert_eq!(schema_version(&place), schema::VERSION);
}

/// Two nodes on one database, each auditing reads and writes at once: the audit trail is one
/// chain, every row in it once, whichever node wrote it.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn two_nodes_writing_at_once_keep_one_audit_chain() {
    let place = database();
    let a = Arc::new(place.open(StoreOptions::default()).unwrap());
    let b = Arc::new(place.open(StoreOptions::default()).unwrap());
    let charts: Vec<ChartId> = (0..4)
        .map(|n| a.create(admitted_to("4west", n)).unwrap())
        .collect();
    let nurse = |device: &str| Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: device.into(),
    };
    let per_thread = 25;
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            let actor = nurse(&format!("node-{}", n % 2));
            let id = charts[n];
            std::thread::spawn(move || {
                for k in 0..per_thread {
                    store
                        .record_audit(&actor, AuditAction::Read, Some(id), None)
                        .unwrap();
                    store
                        .update_as(&actor, id, |c| {
                            c.add_entry(&night_nurse(), t(k), heart_rate(70))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let chain = b.verify_audit().unwrap();
    assert_eq!(chain.rows, 4 * per_thread as u64 * 2);
    assert_eq!(a.verify_audit().unwrap(), chain);
    // Each node reads what the other wrote.
    for id in &charts {
        let on_a = a.read(*id, |c| c.view().unwrap().entries.len()).unwrap();
        let on_b = b.read(*id, |c| c.view().unwrap().entries.len()).unwrap();
        assert_eq!(on_a, per_thread as usize);
        assert_eq!(on_b, per_thread as usize);
    }
}

/// Two nodes writing one chart in the same instants (a nurse's tablet on one, the physician's
/// on the other): each write waits for the other's commit and builds on it; none fails, none
/// is lost, and each node reads the chart with every entry.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn two_nodes_writing_one_chart_at_once_lose_nothing() {
    let place = database();
    let a = Arc::new(place.open(StoreOptions::default()).unwrap());
    let b = Arc::new(place.open(StoreOptions::default()).unwrap());
    let id = a.create(admitted()).unwrap();
    b.read(id, |_| ()).unwrap();
    let per_node = 30;
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            std::thread::spawn(move || {
                for k in 0..per_node {
                    store
                        .update(id, |c| {
                            c.add_entry(&night_nurse(), t(k + 100 * n as i64), heart_rate(70))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for store in [&a, &b] {
        let entries = store.read(id, |c| c.view().unwrap().entries.len()).unwrap();
        assert_eq!(entries, 2 * per_node as usize);
    }
}

/// Waits (up to 20 s) until `done` holds.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One node at a time does the single-writer work; when it goes (its connection with it), the
/// next takes the lease at a higher epoch, and the database names it.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn the_lease_has_one_holder_and_moves_when_it_goes() {
    let place = database();
    let a = place.open(StoreOptions::default()).unwrap();
    until("node A takes the lease", || a.holds_lease());
    let b = place.open(StoreOptions::default()).unwrap();
    let outside = outside(&place);
    // Long enough for B to have tried a few times.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(a.holds_lease() && !b.holds_lease() && !outside.holds_lease());
    let first = outside.lease_holder().unwrap().expect("a holder on record");
    assert_eq!(
        (first.node.as_str(), Some(first.epoch)),
        (a.node(), a.lease_epoch())
    );

    drop(a);
    until("node B takes the lease once A is gone", || b.holds_lease());
    let second = outside.lease_holder().unwrap().unwrap();
    assert_eq!(second.node, b.node());
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
    assert_eq!(b.lease_epoch(), Some(second.epoch));
    assert!(
        !outside.holds_lease(),
        "a store that does not compete never holds it"
    );
}

/// A ward census has one writer: a node without the lease is refused, and so is a holder
/// whose lease has passed to another (its epoch raised) before it knew: nothing of theirs is
/// stored, while the holder's census is, and the other nodes hear of it through the outbox.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_census_is_written_only_by_the_lease_holder_of_the_moment() {
    let place = database();
    let holder = place.open(StoreOptions::default()).unwrap();
    until("the node takes the lease", || holder.holds_lease());
    let other = outside(&place);
    let heard = other.subscribe();

    let mut census = chartsync_core::census::Census::new("4west");
    census
        .set(&[chartsync_core::census::CensusEntry {
            id: ChartId::random(),
        }])
        .unwrap();
    holder.save_census_doc(&census).unwrap();
    let event = heard
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the other node hears of the census");
    assert_eq!(event.id, chartsync_core::census::census_id("4west"));
    let stored = other.census_doc("4west").unwrap().unwrap();
    assert_eq!(stored.entries(), census.entries());

    let mut diverging = census.clone();
    diverging.set(&[]).unwrap();
    let err = other.save_census_doc(&diverging).unwrap_err();
    assert!(matches!(err, StoreError::NotLeaseHolder), "{err}");

    // The lease passes on (as when a successor takes it) before the holder has noticed.
    place.execute("UPDATE chartsync_lease SET epoch = epoch + 1");
    let err = holder.save_census_doc(&diverging).unwrap_err();
    assert!(matches!(err, StoreError::NotLeaseHolder), "{err}");
    assert_eq!(
        other.census_doc("4west").unwrap().unwrap().entries(),
        census.entries(),
        "the stored census is the last holder's"
    );
    until("the holder learns it lost the lease", || {
        !holder.holds_lease()
    });
}

/// A chart due a compaction on a node without the lease is compacted by the holder; and when
/// the holder goes, by the next.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn compaction_is_the_lease_holders_and_moves_with_it() {
    let place = database();
    let options = StoreOptions {
        compaction: Compaction::Background,
        compact_min_bytes: 0,
        ..StoreOptions::default()
    };
    let holder = place.open(options.clone()).unwrap();
    until("the node takes the lease", || holder.holds_lease());
    let writer = place
        .open(StoreOptions {
            lease: false,
            ..options.clone()
        })
        .unwrap();
    let compacted = |store: &ChartStore, id, first: u64| {
        let (snapshot, changes) = store.chart_bytes(id).unwrap();
        snapshot > first && changes <= snapshot
    };
    let charting = |store: &ChartStore, id, from: i64| {
        for n in from..from + 60 {
            store
                .update(id, |c| c.add_entry(&night_nurse(), t(n), heart_rate(70)))
                .unwrap();
        }
    };

    let id = writer.create(admitted()).unwrap();
    let (first, _) = writer.chart_bytes(id).unwrap();
    charting(&writer, id, 0);
    until("the holder compacts the chart the writer made due", || {
        compacted(&writer, id, first)
    });

    // The holder goes; a new node takes the lease, and the compactions with it.
    drop(holder);
    let next = place.open(options).unwrap();
    until("the new node takes the lease", || next.holds_lease());
    let (first, _) = writer.chart_bytes(id).unwrap();
    charting(&writer, id, 100);
    until("the new holder compacts", || compacted(&writer, id, first));
    assert_eq!(
        writer
            .read(id, |c| c.view().unwrap().entries.len())
            .unwrap(),
        120
    );
}

/// Two nodes sweeping ended break-glass grants at the same moment (as during a lease's change
/// of hands, when both may think it theirs) audit each end once, and say so between them.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn two_nodes_sweeping_at_once_audit_each_ended_grant_once() {
    let place = database();
    let a = Arc::new(place.open(StoreOptions::default()).unwrap());
    let b = Arc::new(place.open(StoreOptions::default()).unwrap());
    let chart = a.create(admitted()).unwrap();
    let by = Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    };
    let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 300).unwrap();
    for _ in 0..20 {
        a.grant_break_glass(&NewBreakGlass {
            by: &by,
            chart,
            reason: BreakGlassReason::EmergencyTreatment,
            text: "rapid response",
            starts_at: Timestamp::now(),
            ends_at: soon,
            granted: "offline",
            device: Some("tablet-4west-02"),
            signed: None,
            filed: true,
        })
        .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let sweeps: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.sweep_break_glass().unwrap()
            })
        })
        .collect();
    let ended: usize = sweeps.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(ended, 20, "each grant ended by one sweep");
    let ends = a
        .audit_trail(chart)
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.action == AuditAction::BreakGlass
                && r.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("time ran out"))
        })
        .count();
    assert_eq!(ends, 20, "one audited end per grant");
    assert_eq!(
        a.verify_audit().unwrap().rows,
        b.verify_audit().unwrap().rows
    );
}

/// A server's store in its file, with charts, an audit trail and a device's sync states:
/// what a hospital moving to PostgreSQL brings.
fn a_servers_file(dir: &std::path::Path) -> (ChartStore, Vec<ChartId>) {
    let file = ChartStore::open(dir.join("charts.db"), StoreOptions::default()).unwrap();
    let nurse = Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = file
            .create(admitted_to(if n % 2 == 0 { "4west" } else { "icu" }, n))
            .unwrap();
        for k in 0..12 {
            file.update_as(&nurse, id, |c| {
                c.add_entry(&night_nurse(), t(k), heart_rate(60 + k as u32))
            })
            .unwrap();
        }
        use automerge::sync::SyncDoc;
        let mut state = automerge::sync::State::new();
        let doc = file.chart(id).unwrap().doc().clone();
        let _ = doc.generate_sync_message(&mut state);
        file.save_sync_state("tablet-storage-7", id, &state)
            .unwrap();
        ids.push(id);
    }
    (file, ids)
}

/// Moving a hospital: the file's store copied into an empty database is the same store (every
/// chart as it was, the audit chain ending where it did, the devices' sync states, the old
/// server's storage id), goes on working as one (new charts and commits, the chain still
/// whole), and the file is left as it was.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_file_copied_into_an_empty_database_is_the_same_store_and_goes_on() {
    let place = database();
    let (file, ids) = a_servers_file(place.path());
    let before = file.verify_audit().unwrap();
    let (mut rows_seen, mut rows_total, mut checked) = (0, 0, 0);
    let report = file
        .copy_to_postgres(&place.location(), "server-storage-1", |p| match p {
            CopyProgress::Rows { done, total, .. } => {
                assert!(done >= rows_seen, "progress goes forward");
                (rows_seen, rows_total) = (done, total);
            }
            CopyProgress::Checked { done, .. } => checked = done,
        })
        .unwrap();
    assert_eq!(report.charts, 5);
    assert_eq!(report.audit, before);
    assert_eq!(report.storage_id, "server-storage-1");
    assert_eq!(rows_seen, rows_total, "every row of the file copied");
    assert_eq!(checked, 5, "every chart checked in the copy");
    assert_eq!(report.tables["sync_states"], 5);

    let copy = place.open(StoreOptions::default()).unwrap();
    assert_eq!(copy.storage_id().unwrap(), "server-storage-1");
    assert_eq!(copy.verify_audit().unwrap(), before);
    for id in &ids {
        let view = |s: &ChartStore| s.read(*id, |c| c.view().unwrap()).unwrap();
        assert_eq!(view(&copy), view(&file), "chart {id}");
        let state = |s: &ChartStore| {
            s.sync_state("tablet-storage-7", *id)
                .unwrap()
                .expect("the device's sync state")
                .encode()
        };
        assert_eq!(state(&copy), state(&file));
        assert_eq!(
            copy.audit_trail(*id).unwrap().len(),
            file.audit_trail(*id).unwrap().len()
        );
    }
    assert_eq!(
        copy.census("4west").unwrap().len(),
        file.census("4west").unwrap().len()
    );

    // The copy goes on: numbering continues past the copied rows, the chain stays whole.
    let new = copy.create(admitted_to("4west", 9)).unwrap();
    let nurse = Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    };
    copy.update_as(&nurse, ids[0], |c| {
        c.add_entry(&night_nurse(), t(99), heart_rate(88))
    })
    .unwrap();
    assert!(copy.contains(new).unwrap());
    assert!(copy.verify_audit().unwrap().rows > before.rows);
    copy.verify().unwrap();
    // And the file did not move.
    assert_eq!(file.verify_audit().unwrap(), before);
    assert!(!file.contains(new).unwrap());
}

/// A copy that meets a bad row stops with the table and row named, and leaves the database
/// empty (one transaction), so it can be run again once the row is mended; a copy into a
/// database that holds a store already is refused, and changes nothing.
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_copy_is_all_or_nothing_and_never_over_a_store() {
    let place = database();
    let (file, _) = a_servers_file(place.path());
    drop(file);
    let edit = |sql: &str| {
        rusqlite::Connection::open(place.path().join("charts.db"))
            .unwrap()
            .execute_batch(sql)
            .unwrap()
    };
    // Text that is not UTF-8 (a damaged file), which the database refuses.
    edit(
        "UPDATE sync_states SET peer = CAST(x'ff' AS TEXT)
         WHERE chart_id = (SELECT min(chart_id) FROM sync_states)",
    );
    let file = ChartStore::open(place.path().join("charts.db"), StoreOptions::default()).unwrap();
    let err = file
        .copy_to_postgres(&place.location(), "server-storage-1", |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("table `sync_states`, row "),
        "{err}"
    );
    assert_eq!(count(&place, "charts"), 0, "nothing copied");
    assert_eq!(count(&place, "audit_events"), 0);

    drop(file);
    edit("UPDATE sync_states SET peer = 'tablet-storage-7' WHERE peer <> 'tablet-storage-7'");
    let file = ChartStore::open(place.path().join("charts.db"), StoreOptions::default()).unwrap();
    file.copy_to_postgres(&place.location(), "server-storage-1", |_| {})
        .unwrap();
    let charts = count(&place, "charts");
    assert_eq!(charts, 5);

    let err = file
        .copy_to_postgres(&place.location(), "server-storage-2", |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("holds a chartsync store already")),
        "{err}"
    );
    assert_eq!(count(&place, "charts"), charts);
    let copy = place.open(StoreOptions::default()).unwrap();
    assert_eq!(copy.storage_id().unwrap(), "server-storage-1");
}

/// The store's connections to its database are encrypted and the server verified, by name,
/// against the CA the URL names (`sslrootcert`, as libpq has it); a server whose certificate
/// no trusted CA signed is refused at once, with PostgreSQL's reason, by every TLS mode
/// (`prefer`, the default, included).
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn the_store_talks_to_its_database_over_verified_tls_and_refuses_an_unknown_server() {
    let ca = std::env::var("CHARTSYNC_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!("set CHARTSYNC_TEST_POSTGRES_CA to the test cluster's CA (scripts/test.sh does)")
    });
    let place = database();
    let location = place.location();
    let plain = location.split('?').next().unwrap();
    let name = plain.rsplit_once('/').unwrap().1.to_string();
    let encrypted = |database: &str| -> (i64, i64) {
        let mut c = postgres::Client::connect(&location, postgres::NoTls).unwrap();
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
                &[&database],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };

    for mode in ["verify-full", "require", "prefer"] {
        let url = format!("{plain}?sslmode={mode}&sslrootcert={ca}");
        let store = ChartStore::open_postgres(&url, StoreOptions::default()).unwrap();
        store.create(admitted()).unwrap();
        let (tls, clear) = encrypted(&name);
        assert!(
            tls >= 2 && clear == 0,
            "{mode}: {tls} encrypted, {clear} not"
        );
    }

    for mode in ["verify-full", "require", "prefer"] {
        // PostgreSQL's reason, not the pool's "timed out" thirty seconds later.
        let err =
            ChartStore::open_postgres(&format!("{plain}?sslmode={mode}"), StoreOptions::default())
                .unwrap_err();
        assert!(
            matches!(&err, StoreError::Database(m) if m.contains("certificate verify failed")),
            "{mode}: {err}"
        );
    }
    let err = ChartStore::open_postgres(
        &format!("{plain}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        StoreOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("sslrootcert")),
        "{err}"
    );
}

/// A database left at each earlier PostgreSQL version, with a chart in it, migrates to this
/// one when a node of this version opens it: the chart is kept, and what the newer versions
/// brought works (a new chart announced through the outbox, the lease taken).
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn a_database_of_every_earlier_version_migrates_keeping_its_charts() {
    // What each version after the first added, undone newest first: tables and columns, so
    // an older database is this one without them.
    let added: &[(i64, &str)] = &[
        (
            17,
            "DROP TABLE chart_attachments; DROP TABLE attachment_parts; DROP TABLE attachments;",
        ),
        (
            16,
            "DROP TABLE bulk_files; DROP TABLE bulk_jobs; DROP TABLE bulk_assertions;
             DROP TABLE bulk_clients; DROP TABLE bulk_disclosures;",
        ),
        (
            15,
            "DROP TABLE destroyed_charts; DROP TABLE destruction_items;
             DROP TABLE destruction_batches; DROP TABLE legal_holds; DROP TABLE retention_rules;",
        ),
        (
            14,
            "DROP TABLE device_purges; DROP TABLE purged_charts;
             ALTER TABLE device_departures DROP COLUMN purge_at;",
        ),
        (13, "DROP TABLE chartsync_lease; DROP TABLE compaction_due;"),
        (12, "DROP TABLE chart_outbox;"),
    ];
    let first = schema::postgres::MIGRATIONS[0].0;
    assert_eq!(
        added.len() as i64,
        schema::VERSION - first,
        "say here what the new version added"
    );
    for older in first..schema::VERSION {
        let place = database();
        let id = {
            let store = place.open(StoreOptions::default()).unwrap();
            store.create(admitted()).unwrap()
        };
        for (version, undo) in added.iter().filter(|(v, _)| *v > older) {
            place.execute(undo);
            place.execute(&format!(
                "UPDATE chartsync_schema SET version = {}",
                version - 1
            ));
        }
        assert_eq!(schema_version(&place), older);

        let store = place.open(StoreOptions::default()).unwrap();
        assert_eq!(
            schema_version(&place),
            schema::VERSION,
            "from version {older}"
        );
        assert!(store.contains(id).unwrap(), "from version {older}");
        assert_eq!(store.census("4west").unwrap().len(), 1);
        until("the migrated store takes the lease", || store.holds_lease());
        let other = outside(&place);
        let heard = other.subscribe();
        store.create(admitted_to("icu", 2)).unwrap();
        heard
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the outbox carries the new chart to the other node");
    }
}

/// Many commits at once, each reading the store while it checks its changes (as the server's
/// rules do), on a small pool: every one goes through. (A commit holds a connection from
/// reading its chart to committing; when every connection was held by a commit waiting for
/// one more, all of them waited until the pool gave up, 30 seconds later, and failed: a
/// tablet sending 200 charts at once took six minutes to reconnect.)
#[test]
#[ignore = "needs CHARTSYNC_TEST_POSTGRES: scripts/test.sh runs it on its PostgreSQL cluster"]
fn many_commits_at_once_that_read_the_store_as_they_check_never_starve_the_pool() {
    let place = database();
    let store = Arc::new(
        place
            .open(StoreOptions {
                connections: 4,
                ..StoreOptions::default()
            })
            .unwrap(),
    );
    let ids: Vec<ChartId> = (0..12)
        .map(|n| store.create(admitted_to("4west", n)).unwrap())
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(ids.len()));
    let writers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), *id);
            let other = ids[(n + 1) % ids.len()];
            std::thread::spawn(move || {
                barrier.wait();
                for k in 0..3 {
                    let reader = store.clone();
                    store
                        .update(id, |c| {
                            // What a check reads meanwhile, from the pool.
                            reader.summary(other).unwrap().expect("the other chart");
                            c.add_entry(&night_nurse(), t(k), heart_rate(70))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for id in &ids {
        assert_eq!(
            store
                .read(*id, |c| c.view().unwrap().entries.len())
                .unwrap(),
            3
        );
    }
}
