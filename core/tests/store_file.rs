//! The store's file: what is refused and left untouched (another app's database, a damaged
//! file, a newer version, the wrong key), encryption at rest, and upgrades from every earlier
//! version.

mod common;

use chartsync_core::chart::*;
use chartsync_core::store::schema::{APPLICATION_ID, MIGRATIONS, VERSION};
use chartsync_core::store::*;
use common::*;
use sha2::{Digest, Sha256};

fn opts(key: Option<EncryptionKey>) -> StoreOptions {
    StoreOptions {
        encryption_key: key,
        compaction: Compaction::Manual,
        ..StoreOptions::default()
    }
}

fn key(byte: u8) -> EncryptionKey {
    EncryptionKey::new([byte; 32])
}

/// What a refused open must not change: the file and its write-ahead log (an absent log and
/// an empty one hold the same: nothing), as hashes so a failure prints briefly. The
/// shared-memory index (`-shm`) is a cache any reader rebuilds and is left out.
fn files(path: &std::path::Path) -> Vec<String> {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap().to_string_lossy()
    ));
    [read(path), read(&wal)]
        .iter()
        .map(|b| {
            format!(
                "{} bytes, sha256 {}",
                b.len(),
                hex::encode(Sha256::digest(b))
            )
        })
        .collect()
}

/// A store with one chart in it, closed.
fn store_with_a_chart(path: &std::path::Path, key: Option<EncryptionKey>) -> ChartId {
    let store = ChartStore::open(path, opts(key)).unwrap();
    let id = store.create(admitted()).unwrap();
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(10), heart_rate(72)))
        .unwrap();
    id
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    std::fs::write(
        &path,
        b"these are the ward's handover notes, not a database at all....",
    )
    .unwrap();
    let before = files(&path);
    let err = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase), "{err}");
    assert_eq!(files(&path), before);
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE pharmacy_orders (id INTEGER PRIMARY KEY, drug TEXT);")
            .unwrap();
    }
    let before = files(&path);
    let err = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(
        matches!(err, StoreError::ForeignDatabase { application_id: 0 }),
        "{err}"
    );
    assert_eq!(files(&path), before);
}

#[test]
fn a_store_from_a_newer_app_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    store_with_a_chart(&path, None);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {};", VERSION + 1))
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let before = files(&path);
    let err = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerVersion { found, supported } if found == VERSION + 1 && supported == VERSION),
        "{err}"
    );
    assert_eq!(files(&path), before);
    assert!(err.to_string().contains("update the app"));
}

#[test]
fn a_newer_store_killed_before_its_log_was_checkpointed_is_left_alone_log_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    store_with_a_chart(&path, None);
    {
        // The newer app's last act lives only in the write-ahead log when it dies.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
        conn.execute_batch(&format!(
            "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA user_version = {};",
            VERSION + 1
        ))
        .unwrap();
    }
    let wal = path.with_extension("db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let before = files(&path);
    let err = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(matches!(err, StoreError::NewerVersion { .. }), "{err}");
    assert_eq!(
        files(&path),
        before,
        "neither the file nor its log was touched"
    );
}

#[test]
fn a_store_with_a_nonsense_version_is_reported_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    store_with_a_chart(&path, None);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = -1; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let before = files(&path);
    let err = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(files(&path), before);
}

#[test]
fn a_lost_change_is_reported_and_compaction_does_not_make_the_loss_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    let store = ChartStore::open(&path, opts(None)).unwrap();
    let id = store.create(admitted()).unwrap();
    for n in 0..3 {
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(n), heart_rate(70)))
            .unwrap();
    }
    drop(store);
    let rows = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM chart_changes", [], |r| r.get(0))
            .unwrap()
    };
    {
        // A damaged page took the middle commit with it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM chart_changes WHERE seq = (SELECT min(seq) + 1 FROM chart_changes);",
        )
        .unwrap();
        assert_eq!(rows(&conn), 2);
    }
    let store = ChartStore::open(&path, opts(None)).unwrap();
    let read = store.read(id, |c| c.heads());
    assert!(
        matches!(read, Err(StoreError::Unloadable { .. })),
        "{read:?}"
    );
    let compacted = store.compact(id);
    assert!(
        matches!(compacted, Err(StoreError::Unloadable { .. })),
        "{compacted:?}"
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(rows(&conn), 2, "the surviving changes are all still there");
}

#[test]
fn a_damaged_store_is_reported_and_kept_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    let store = ChartStore::open(&path, opts(None)).unwrap();
    let ids = store
        .import(
            (0..200).map(|n| (ChartId::random(), admitted_to("4west", n))),
            None,
            |_| {},
        )
        .unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    // Scribble over the middle of the file, as a failing flash chip might.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 64 * 1024);
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let outcome = ChartStore::open(&path, opts(None)).and_then(|store| {
        store.verify()?;
        for id in &ids {
            store.read(*id, |c| c.heads())?;
        }
        Ok(())
    });
    assert!(
        matches!(outcome, Err(StoreError::Corrupt(_))),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
}

#[test]
fn an_encrypted_store_opens_only_with_its_key_and_hides_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    let id = store_with_a_chart(&path, Some(key(7)));

    let on_disk: Vec<u8> = std::fs::read_dir(dir.path())
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for secret in [
        &b"Rivera"[..],
        b"MRN-0042",
        b"Heart rate",
        b"SQLite format 3",
    ] {
        assert!(
            !on_disk.windows(secret.len()).any(|w| w == secret),
            "found {:?} in the encrypted files",
            String::from_utf8_lossy(secret)
        );
    }

    let before = files(&path);
    let wrong = ChartStore::open(&path, opts(Some(key(8)))).unwrap_err();
    assert!(matches!(wrong, StoreError::WrongKey), "{wrong}");
    let none = ChartStore::open(&path, opts(None)).unwrap_err();
    assert!(matches!(none, StoreError::NotADatabase), "{none}");
    assert_eq!(files(&path), before);

    let store = ChartStore::open(&path, opts(Some(key(7)))).unwrap();
    assert_eq!(
        store
            .read(id, |c| c.patient().unwrap().family_name)
            .unwrap(),
        "Rivera"
    );
    assert_eq!(store.census("4west").unwrap().len(), 1);
    store.verify().unwrap();
}

#[test]
fn a_plain_store_is_not_opened_as_if_it_were_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    store_with_a_chart(&path, None);
    let err = ChartStore::open(&path, opts(Some(key(1)))).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    ChartStore::open(&path, opts(None)).unwrap();
}

/// A plain store encrypted in place (`chartsync-records encrypt`): every chart and audit row
/// comes across, the key opens it and nothing else does, no patient's data is left readable
/// in the directory, and the store goes on taking commits.
#[test]
fn a_plain_store_encrypted_in_place_keeps_every_chart_and_its_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    let id = store_with_a_chart(&path, None);
    let chain = {
        let store = ChartStore::open(&path, opts(None)).unwrap();
        let actor = Actor {
            user: "him.jones".into(),
            role: "technician".into(),
            device: "records-pc-1".into(),
        };
        store
            .record_audit(&actor, AuditAction::Read, Some(id), None)
            .unwrap();
        // Left in the write-ahead log, not folded into the file: it must come across too.
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(20), heart_rate(80)))
            .unwrap();
        store.verify_audit().unwrap()
    };
    assert!(chain.rows >= 1);

    let report = backup::encrypt_in_place(&path, &key(3)).unwrap();
    assert_eq!((report.charts, report.audit_rows), (1, chain.rows));

    let on_disk: Vec<u8> = std::fs::read_dir(dir.path())
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for secret in [&b"Rivera"[..], b"MRN-0042", b"SQLite format 3"] {
        assert!(
            !on_disk.windows(secret.len()).any(|w| w == secret),
            "found {:?} in the directory",
            String::from_utf8_lossy(secret)
        );
    }
    assert!(matches!(
        ChartStore::open(&path, opts(None)).unwrap_err(),
        StoreError::NotADatabase
    ));
    assert!(matches!(
        ChartStore::open(&path, opts(Some(key(4)))).unwrap_err(),
        StoreError::WrongKey
    ));
    let store = ChartStore::open(&path, opts(Some(key(3)))).unwrap();
    assert_eq!(store.verify_audit().unwrap(), chain);
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        2
    );
    store
        .update(id, |c| c.add_entry(&night_nurse(), t(30), heart_rate(76)))
        .unwrap();
    drop(store);

    // An encrypted store is not a plain one: asked again, nothing changes.
    let before = files(&path);
    assert!(backup::encrypt_in_place(&path, &key(3)).is_err());
    assert_eq!(files(&path), before);
}

/// Released migrations are never edited: an edit would leave stores already upgraded by the
/// old text different from new ones. Add a file instead.
#[test]
fn released_migrations_are_unchanged() {
    const RELEASED: &[&str] = &[
        "47442a0c57165d6cdfbef4a29aba64a735b3cf8400e1dedd7c1407cfc053f786",
        "c1bd5bd8194cd1608176eee5d9b6a07031a57fe76b01c089dd8d4ee90a43e209",
        "b62bc2b20fc45130a8fe6acf16c7c96d4418f67c99572c1d8263e69f4ac53709",
        "4db851d25b1faaa5e7bba5c1c20560211fbc9f94a9f0f591d6509e37162b49c9",
        "9fb33ff8d45e3d64b4b5658c2738a36f026c0381f6248e589e62c5079ab96ea5",
        "924d63aa494b6819f805ee3b092cc55ce42e77956e56df619601e1a79593f4b8",
        "c2f2e814c9b6f82251a2878a5880c5635fcbfba7113d1a0396fc660809d575d3",
        "8831403d19d4b63a7bdd85ac1ef68f6ec244e18af46d3e1d3843610a2fbb1406",
        "3ed803b2f3d47e50880a776b8c6774b0043f5b762a945f58abafdd5cbc7cbe24",
        "33657de42e05a65d70071e5f5e611e15d7f45ed5e0e16885e34d687384b9c4c1",
        "6aa1b5f47f96daf90f2b414fb1c931525fabaa71b4e6385ec65292c49fc8c386",
        "cd85fdb199e44852bfe2a7b55c7bfa6c2f19d0d5ef1600441d8f75d36337bd2d",
        "a517ebd52acdd791f8cb1c1fdfecef847e6604a2a96d293784ebb244ce0764b6",
        "7a4f5acd1bbf81433805c4c619a8f80851a9216e2edb30023245b24c94eba999",
        "c667a04fe44701aeeb79d261c4f83e271a71b3a31de37ee76b58f05ba6e0b2f3",
        "b1328e4efce72bc4e63edbe5bf96b01a0b93b2b91989f01ea8fe8d6f38485a6e",
        "3e8bfb6e0bcc25895eb12d600fa4bdc307958339e6f26a1820aa7b096b332b86",
    ];
    for (n, sql) in MIGRATIONS.iter().enumerate() {
        let hash = hex::encode(Sha256::digest(sql.as_bytes()));
        if let Some(pinned) = RELEASED.get(n) {
            assert_eq!(
                &hash,
                pinned,
                "migration {} was edited after release",
                n + 1
            );
        }
    }
    assert_eq!(
        RELEASED.len(),
        MIGRATIONS.len(),
        "pin the new migration's hash here"
    );
}

/// A database as version `v` of the app left it: migrations 1..=v applied by hand.
fn database_at_version(path: &std::path::Path, v: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..v] {
        conn.execute_batch(sql).unwrap();
    }
    if v > 0 {
        conn.execute_batch(&format!(
            "PRAGMA user_version = {v}; PRAGMA application_id = {APPLICATION_ID};"
        ))
        .unwrap();
    }
}

/// A chart as a store of version `v` held it, written with that version's SQL. Version 0 is
/// the empty file and holds nothing.
fn seed_chart_at_version(path: &std::path::Path, v: usize, id: ChartId) {
    if v == 0 {
        return;
    }
    let mut chart = admitted();
    let heads: Vec<u8> = {
        let mut h = chart.heads();
        h.sort();
        h.iter().flat_map(|h| h.0).collect()
    };
    let snapshot = chart.save();
    let conn = rusqlite::Connection::open(path).unwrap();
    // Versions 1 and 2 share these tables.
    conn.execute(
        "INSERT INTO charts (id, mrn, family_name, given_names, ward, bed, status, admitted_at,
             open_deficiencies, heads, modified_at, snapshot_bytes)
         VALUES (?1, 'MRN-0042', 'Rivera', 'Ana Maria', '4west', '12A', 'active',
             '2026-11-02T08:00:00Z', 0, ?2, 0, ?3)",
        rusqlite::params![id.to_string(), heads, snapshot.len() as i64],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO chart_snapshots (chart, data)
         VALUES ((SELECT key FROM charts WHERE id = ?1), ?2)",
        rusqlite::params![id.to_string(), snapshot],
    )
    .unwrap();
}

#[test]
fn a_store_of_every_earlier_version_upgrades_and_keeps_its_charts() {
    for v in 0..VERSION as usize {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("charts.db");
        database_at_version(&path, v);
        let old = ChartId::random();
        seed_chart_at_version(&path, v, old);
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = {
            let heard = heard.clone();
            RebuildListener(std::sync::Arc::new(move |done, total| {
                heard.lock().unwrap().push((done, total))
            }))
        };
        let store = ChartStore::open(
            &path,
            StoreOptions {
                on_rebuild: Some(listener),
                ..opts(None)
            },
        )
        .unwrap();
        if v > 0 {
            assert_eq!(
                *heard.lock().unwrap(),
                vec![(0, 1), (1, 1)],
                "the rebuild's progress, from version {v}"
            );
            assert_eq!(store.census("4west").unwrap().len(), 1, "from version {v}");
            let name = store
                .read(old, |c| c.patient().unwrap().family_name)
                .unwrap();
            assert_eq!(name, "Rivera", "from version {v}");
            // The audit index is rebuilt by this version's rules: the old rows said nothing
            // was missing; the chart has no history and physical, due 24 hours in.
            let found = store.deficiencies(old).unwrap();
            assert_eq!(found.len(), 1, "from version {v}");
            assert_eq!(found[0].kind, DeficiencyKind::HistoryPhysicalMissing);
            assert!(found[0].due_at.is_some(), "from version {v}");
            assert_eq!(store.census("4west").unwrap()[0].open_deficiencies, 1);
            // Its index row holds what this version lists (attending, class, birth date:
            // version 10), filled by the rebuild.
            store.check_chart(old).unwrap();
        }
        // And the upgraded store takes new charts and writes.
        let id = store.create(admitted()).unwrap();
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(5), heart_rate(70)))
            .unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION, "from version {v}");
        drop(conn);
        let store = ChartStore::open(&path, opts(None)).unwrap();
        assert!(store.contains(id).unwrap());
        store.check_chart(id).unwrap();
    }
}

/// An upgrade whose rebuild meets a chart that no longer loads: the others are rebuilt, the
/// damaged one keeps its rows and reports its damage when opened, and the next open tries the
/// rebuild again rather than call it done.
#[test]
fn a_rules_rebuild_that_meets_a_damaged_chart_leaves_it_and_tries_again_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    database_at_version(&path, 2);
    let good = ChartId::random();
    seed_chart_at_version(&path, 2, good);
    let damaged = ChartId::random();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO charts (id, mrn, family_name, given_names, ward, bed, status, admitted_at,
             open_deficiencies, heads, modified_at, snapshot_bytes)
         VALUES (?1, 'MRN-0043', 'Doe', 'J', '4west', '12B', 'active',
             '2026-11-02T08:00:00Z', 0, ?2, 0, 9)",
        rusqlite::params![damaged.to_string(), vec![7u8; 32]],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO chart_snapshots (chart, data)
         VALUES ((SELECT key FROM charts WHERE id = ?1), x'00112233445566778899')",
        [damaged.to_string()],
    )
    .unwrap();
    drop(conn);
    let rules = || -> String {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'deficiency_rules'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };

    let store = ChartStore::open(&path, opts(None)).unwrap();
    assert_eq!(
        store.deficiencies(good).unwrap()[0].kind,
        DeficiencyKind::HistoryPhysicalMissing,
        "the good chart is rebuilt"
    );
    assert!(
        store.deficiencies(damaged).unwrap().is_empty(),
        "old rows kept"
    );
    assert!(matches!(
        store.check_chart(damaged),
        Err(StoreError::Unloadable { .. })
    ));
    drop(store);
    assert_eq!(rules(), "1", "not marked rebuilt while a chart was skipped");
    let heard = std::sync::Arc::new(std::sync::Mutex::new(0));
    let listener = {
        let heard = heard.clone();
        RebuildListener(std::sync::Arc::new(move |_, _| *heard.lock().unwrap() += 1))
    };
    ChartStore::open(
        &path,
        StoreOptions {
            on_rebuild: Some(listener),
            ..opts(None)
        },
    )
    .unwrap();
    assert!(*heard.lock().unwrap() > 0, "the next open tries again");
}

/// The audit trail is a chain: an edit, a deletion or a reordering anywhere is found, and
/// the first row that does not follow from the one before it is named. A store from before
/// the chain gets its links when it is opened.
#[test]
fn an_edited_or_deleted_audit_row_breaks_the_chain_at_that_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts.db");
    // Version 5, with three rows of trail written by hand as an older app would have.
    database_at_version(&path, 5);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for n in 0..3 {
            conn.execute(
                "INSERT INTO audit_events (at, user, role, device, action, detail)
                 VALUES (?1, 'him.jones', 'technician', 'pc', 'read', 'old')",
                [1_000 + n],
            )
            .unwrap();
        }
    }
    let store = ChartStore::open(&path, opts(None)).unwrap();
    let actor = Actor {
        user: "rn.park".into(),
        role: "nurse".into(),
        device: "tablet-4west-02".into(),
    };
    let id = store.create(admitted()).unwrap();
    for _ in 0..4 {
        store
            .record_audit(&actor, AuditAction::Read, Some(id), None)
            .unwrap();
    }
    let chain = store.verify_audit().unwrap();
    assert_eq!(chain.rows, 7, "the three old rows are linked too");
    assert!(chain.tip.is_some());
    drop(store);

    let tamper = |sql: &str| {
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let store = ChartStore::open(&copy, opts(None)).unwrap();
        let found = store.verify_audit();
        drop(store);
        std::fs::remove_file(&copy).unwrap();
        found
    };
    // A detail reworded in place.
    assert!(matches!(
        tamper("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 5"),
        Err(StoreError::AuditTampered { seq: 5 })
    ));
    // A row deleted: the next one no longer follows.
    assert!(matches!(
        tamper("DELETE FROM audit_events WHERE seq = 4"),
        Err(StoreError::AuditTampered { seq: 5 })
    ));
    // A row changed along with its own link.
    assert!(matches!(
        tamper("UPDATE audit_events SET user = 'someone.else', chain = zeroblob(32) WHERE seq = 6"),
        Err(StoreError::AuditTampered { seq: 6 })
    ));
}

/// Found by fuzzing (`scripts/fuzz.sh`, target stored): 140 bytes holding an automerge bundle
/// chunk whose run-length-encoded column stands for billions of values. automerge 0.12
/// expands it into memory (over 2 GB before the fuzzer stopped it). chartsync reads only
/// documents and changes, so it is refused as damaged before automerge sees it.
#[test]
fn a_bundle_that_would_expand_without_limit_is_refused_before_automerge_reads_it() {
    let input = include_bytes!("regressions/stored-bundle-rle-expansion.bin");
    // The fuzz target's first byte chose "a stored chart"; the rest is the chart's bytes.
    let bytes = &input[1..];
    let refused = Chart::load(bytes);
    assert!(
        matches!(&refused, Err(ChartError::Corrupt(_))),
        "{refused:?}"
    );
    let mut chart = admitted();
    let before = chart.doc().get_heads();
    assert!(matches!(
        chart.load_incremental(bytes),
        Err(ChartError::Corrupt(_))
    ));
    assert_eq!(chart.doc().get_heads(), before);
}

/// The store in a folder's `charts.db`, as a tablet opens it.
fn open_file(dir: &tempfile::TempDir) -> ChartStore {
    ChartStore::open(dir.path().join("charts.db"), opts(None)).unwrap()
}

#[test]
fn once_the_app_closes_the_store_file_alone_holds_every_chart() {
    // An IT backup that copies only `charts.db` after the app has closed must get everything.
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open_file(&dir);
        let id = store.create(admitted()).unwrap();
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(5), heart_rate(64)))
            .unwrap();
        store.census("4west").unwrap(); // a reader connection, closed after the writer
        id
    };
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("charts.db"), copy.path().join("charts.db")).unwrap();
    let store = open_file(&copy);
    assert_eq!(
        store.read(id, |c| c.view().unwrap().entries.len()).unwrap(),
        1
    );
}

#[test]
fn the_log_is_folded_into_the_file_in_the_background_while_the_app_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_file(&dir);
    let id = store.create(admitted()).unwrap();
    let file = dir.path().join("charts.db");
    let size = || std::fs::metadata(&file).unwrap().len();
    let initial = size();
    for n in 0..250 {
        store
            .update(id, |c| c.add_entry(&night_nurse(), t(n), heart_rate(70)))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while size() <= initial {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never checkpointed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// PostgreSQL's migrations, pinned as SQLite's are: a database migrated by a released version
/// is never edited again, only added to.
#[cfg(feature = "postgres")]
#[test]
fn released_postgresql_migrations_are_unchanged() {
    use chartsync_core::store::schema::postgres::MIGRATIONS;
    const RELEASED: &[(i64, &str)] = &[
        (
            11,
            "1dc8de9bd4b425022ff93f917bec2c7a9e8c89806703efc5abe2ca3c6dd0e571",
        ),
        (
            12,
            "79ce322b3d0b6d9f7431ed289478eb6119825729d530940e84ebb5fe1788fa13",
        ),
        (
            13,
            "f5942e89adc133a93f82cc6b25b53fd17f7ce30e6e0e605b1071bdb580ef32ae",
        ),
        (
            14,
            "09771a599737df77f595361eec13949da0dc1bfaa4f9b63d74c0fda889d1808c",
        ),
        (
            15,
            "70b7994fd0125113c47a67ae029b074c7530c1fdfa8df9a1d82b51442ff09823",
        ),
        (
            16,
            "46e09716ffa8e906412f5032501d17fbcec33d5063a045da1d0325d0d2bd1aa2",
        ),
        (
            17,
            "c36bd97c405c397428b9863f67e6c74ab92219bd5a7d8cf7b7ea1fe09fa684c3",
        ),
    ];
    for (n, (version, sql)) in MIGRATIONS.iter().enumerate() {
        let hash = hex::encode(Sha256::digest(sql.as_bytes()));
        if let Some((pinned_version, pinned)) = RELEASED.get(n) {
            assert_eq!(version, pinned_version);
            assert_eq!(
                &hash, pinned,
                "PostgreSQL's migration {version} was edited after release"
            );
        }
    }
    assert_eq!(
        RELEASED.len(),
        MIGRATIONS.len(),
        "pin the new migration's hash here"
    );
    assert_eq!(
        MIGRATIONS.last().map(|m| m.0),
        Some(VERSION),
        "both engines at one version"
    );
}
