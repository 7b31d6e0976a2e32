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
