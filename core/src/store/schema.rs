//! The store's file: how a connection is set up (the pragmas, chosen in docs/store.md), how a
//! file is recognised as ours, and the numbered migrations that bring it to this version.
//!
//! Nothing is written to a file until it is known to be empty or ours: a foreign, corrupt or
//! newer file is refused and left exactly as it was.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::StoreError;
use super::options::{Durability, StoreOptions};

/// `PRAGMA application_id` of a chartsync store: "CHSY".
pub const APPLICATION_ID: i32 = 0x4348_5359;

/// The migrations, in order; the store's version is how many have run. Released files are
/// never edited (a test pins their hashes): change the schema with a new file.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_audit.sql"),
    include_str!("migrations/003_chart_audit.sql"),
    include_str!("migrations/004_sync_outcomes.sql"),
    include_str!("migrations/005_devices_and_proofs.sql"),
    include_str!("migrations/006_audit_chain.sql"),
    include_str!("migrations/007_census_ids_only.sql"),
    include_str!("migrations/008_deficiency_work.sql"),
    include_str!("migrations/009_delinquency_days.sql"),
    include_str!("migrations/010_index_for_records.sql"),
    include_str!("migrations/011_accounting_requests.sql"),
    include_str!("migrations/012_outbox.sql"),
    include_str!("migrations/013_lease.sql"),
    include_str!("migrations/014_charts_leave_tablets.sql"),
    include_str!("migrations/015_retention.sql"),
    include_str!("migrations/016_bulk_export.sql"),
    include_str!("migrations/017_attachments.sql"),
];

/// Bytes per database page. A chart's snapshot is a few kilobytes and SQLite keeps a row whole
/// in one page when it fits: with 4 KiB pages a 2.2 KB snapshot takes a page of its own, with
/// 8 KiB pages three share one (docs/store.md has the measurements). Never change it: an
/// encrypted store only opens with the page size it was made with.
pub const PAGE_SIZE: u32 = 8192;

/// The version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens one connection with the per-connection settings. `create`: make the file if it does
/// not exist (only the writer does).
pub(crate) fn connect(
    path: &Path,
    options: &StoreOptions,
    create: bool,
) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    // Until the file is known to be ours, closing must not checkpoint a write-ahead log into
    // it (SQLite does so on the last close). `prepare` lifts this for the writer.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    if let Some(key) = &options.encryption_key {
        // SQLCipher answers cipher_version; plain SQLite ignores both pragmas, which would
        // leave a file the app believes encrypted in plain text.
        let cipher: Option<String> = conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))
            .ok();
        if cipher.is_none_or(|v| v.is_empty()) {
            return Err(StoreError::EncryptionUnavailable);
        }
        // SQLCipher logs a failed decryption (a wrong key) to stderr; the error says it.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        conn.execute_batch(&format!(
            "PRAGMA key = {}; PRAGMA cipher_page_size = {PAGE_SIZE};",
            key.pragma_literal()
        ))?;
    }
    let wrong_key = |e: StoreError| match (e, options.encryption_key.is_some()) {
        (StoreError::NotADatabase, true) => StoreError::WrongKey,
        (e, _) => e,
    };
    // The first read of the file: a wrong key or a file that is not SQLite fails here.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| wrong_key(e.into()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cell_size_check = ON;"
    ))?;
    Ok(conn)
}

/// Recognises the file, runs the migrations it lacks, and switches it to WAL.
pub(crate) fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    let application_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    let fresh = application_id == 0 && version == 0 && objects == 0;
    if !fresh && application_id != APPLICATION_ID {
        return Err(StoreError::ForeignDatabase { application_id });
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "the store's version is {version}"
        )));
    }
    if version > VERSION {
        return Err(StoreError::NewerVersion {
            found: version,
            supported: VERSION,
        });
    }
    if fresh {
        // Only an empty file takes a page size (an encrypted one took it from the key setup).
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))?;
    }
    if version < VERSION {
        migrate(conn, version, VERSION)?;
    }
    // Readers never block the writer, and a commit is one append to the log.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite(rusqlite::Error::InvalidQuery));
    }
    // After a checkpoint, shrink the log back to this size rather than keep its largest.
    conn.execute_batch("PRAGMA journal_size_limit = 67108864;")?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
    // Checkpoints run on the store's maintenance thread, not inside commits.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
    Ok(())
}

/// Runs migrations `from+1 ..= to` in one transaction: a crash or error part-way leaves the
/// store at `from`.
pub(crate) fn migrate(conn: &mut Connection, from: i64, to: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for v in from..to {
        tx.execute_batch(MIGRATIONS[v as usize])?;
    }
    tx.execute_batch(&format!(
        "PRAGMA user_version = {to}; PRAGMA application_id = {APPLICATION_ID};"
    ))?;
    tx.commit()?;
    Ok(())
}

/// The store on PostgreSQL: its migrations, and how a database is recognised as ours.
#[cfg(feature = "postgres")]
pub mod postgres {
    use super::{StoreError, VERSION};
    use crate::store::sql::pg::error;

    /// PostgreSQL's migrations, each under the version it brings the store to: the same
    /// numbers as SQLite's. The first is the whole schema of version 11, when PostgreSQL came.
    pub const MIGRATIONS: &[(i64, &str)] = &[
        (11, include_str!("migrations/postgres/011_schema.sql")),
        (12, include_str!("migrations/postgres/012_outbox.sql")),
        (13, include_str!("migrations/postgres/013_lease.sql")),
        (
            14,
            include_str!("migrations/postgres/014_charts_leave_tablets.sql"),
        ),
        (15, include_str!("migrations/postgres/015_retention.sql")),
        (16, include_str!("migrations/postgres/016_bulk_export.sql")),
        (17, include_str!("migrations/postgres/017_attachments.sql")),
    ];

    /// The advisory lock under which one node at a time migrates.
    const MIGRATING: i64 = 0x4348_5359_0001;

    /// Recognises the database (its current schema empty, or ours), runs the migrations it
    /// lacks in one transaction, and refuses a schema newer than this build's: a node of an
    /// older version does not start against it.
    pub(crate) fn prepare(client: &mut ::postgres::Client) -> Result<(), StoreError> {
        crate::store::sql::pg::blocking(|| prepare_here(client))
    }

    fn prepare_here(client: &mut ::postgres::Client) -> Result<(), StoreError> {
        debug_assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(VERSION));
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATING])
            .map_err(error)?;
        let prepared = migrate(client);
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATING])
            .map_err(error);
        prepared.and(unlocked.map(|_| ()))
    }

    fn migrate(client: &mut ::postgres::Client) -> Result<(), StoreError> {
        let mut tx = client.transaction().map_err(error)?;
        let ours: bool = tx
            .query_one("SELECT to_regclass('chartsync_schema') IS NOT NULL", &[])
            .map_err(error)?
            .get(0);
        let version: i64 = if ours {
            tx.query_one("SELECT version FROM chartsync_schema", &[])
                .map_err(error)?
                .get(0)
        } else {
            let tables: i64 = tx
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema()",
                    &[],
                )
                .map_err(error)?
                .get(0);
            if tables > 0 {
                return Err(StoreError::ForeignSchema);
            }
            tx.batch_execute("CREATE TABLE chartsync_schema (version BIGINT NOT NULL)")
                .map_err(error)?;
            tx.execute("INSERT INTO chartsync_schema (version) VALUES (0)", &[])
                .map_err(error)?;
            0
        };
        if version > VERSION {
            return Err(StoreError::NewerVersion {
                found: version,
                supported: VERSION,
            });
        }
        if version == VERSION {
            return Ok(());
        }
        for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > version) {
            tx.batch_execute(sql).map_err(error)?;
            tx.execute("UPDATE chartsync_schema SET version = $1", &[to])
                .map_err(error)?;
        }
        tx.commit().map_err(error)
    }
}
