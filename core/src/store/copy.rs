//! Moving a hospital's store from its SQLite file into PostgreSQL (docs/deploy.md, "Moving a
//! hospital"): every row of every table, as it is, in one transaction, then checked.
//!
//! The rows are copied, not re-made: charts keep their snapshots and changes byte for byte,
//! the audit trail keeps its hash chain (the copy's tip must be the file's), the devices' sync
//! states and the holding area come along, and the database takes the old server's storage id,
//! so every tablet knows the new servers as the server it synced with and carries on from its
//! sync states rather than starting over.

use std::collections::BTreeMap;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

use super::sql::pg::{error, Manager};
use super::sql::{Sql, Value};
use super::{AuditChain, ChartStore, Engine, StoreError, StoreOptions};

/// Tables only a database shared by several nodes has; nothing in a file to copy into them.
const DATABASE_ONLY: &[&str] = &[
    "chart_outbox",
    "chartsync_lease",
    "chartsync_schema",
    "compaction_due",
];

/// Tables others refer to, copied first (the rest follow in name order).
const FIRST: &[&str] = &["charts", "held_changes"];

/// How far a copy has got: rows copied of all the file's rows, and the table at hand; then
/// charts checked in the copy, of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyProgress {
    Rows {
        table: String,
        done: u64,
        total: u64,
    },
    Checked {
        done: u64,
        total: u64,
    },
}

/// What a copy wrote and found on checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows per table, the same on both sides.
    pub tables: BTreeMap<String, u64>,
    pub charts: u64,
    /// The audit trail's length and the tip of its hash chain, the same on both sides.
    pub audit: AuditChain,
    /// The storage id the devices know the server by, now the database's.
    pub storage_id: String,
}

impl ChartStore {
    /// Copies this store (a SQLite file, its server stopped) into the PostgreSQL database at
    /// `url`, which must hold no chartsync rows yet (a new, empty database, or one an earlier
    /// copy left empty by failing). Every table is copied in one transaction: a failure leaves
    /// the database as it was. The copy then takes `storage_id` (the old server's, from its
    /// data directory) and is checked: the same rows in every table, every chart loading with
    /// the heads the file's index gives it, and the audit chain verifying to the file's tip.
    pub fn copy_to_postgres(
        &self,
        url: &str,
        storage_id: &str,
        mut progress: impl FnMut(CopyProgress),
    ) -> Result<CopyReport, StoreError> {
        let Engine::Sqlite { .. } = &self.inner.engine else {
            return Err(StoreError::Invalid(
                "the store is in PostgreSQL already; copy from a server's data directory".into(),
            ));
        };
        let no_lease = || StoreOptions {
            lease: false,
            ..StoreOptions::default()
        };
        // Opening makes the schema, at this version (or refuses a newer or foreign one).
        let target = ChartStore::open_postgres(url, no_lease())?;
        // No node may run on the database while it is filled.
        let _lock = target.serving_lock(true)?.ok_or_else(|| {
            StoreError::Invalid(
                "a chartsync-server is running on the database; copy before starting any".into(),
            )
        })?;
        let Engine::Postgres(pool, _) = &target.inner.engine else {
            unreachable!("opened on PostgreSQL");
        };
        let source_audit = self.verify_audit()?;
        let tables = self.inner.with_reader(|sql| {
            let Sql::Sqlite(conn) = sql else {
                unreachable!("a SQLite store's readers");
            };
            copy_rows(conn, pool, storage_id, &mut progress)
        })?;
        drop(target);

        // The copy, as a node will open it.
        let copy = ChartStore::open_postgres(url, no_lease())?;
        let copied = copy.inner.with_reader(|sql| {
            let mut counts = BTreeMap::new();
            for table in tables.keys() {
                let n: i64 = sql.query_row(
                    &format!("SELECT count(*) FROM {table}"),
                    super::sql::params![],
                    |r| r.get(0),
                )?;
                counts.insert(table.clone(), n as u64);
            }
            Ok(counts)
        })?;
        let differ: Vec<String> = tables
            .iter()
            .filter(|(t, n)| copied.get(*t) != Some(n))
            .map(|(t, n)| format!("{t}: {} copied of {n}", copied.get(t).copied().unwrap_or(0)))
            .collect();
        if !differ.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the copy's rows differ from the file's ({})",
                differ.join(", ")
            )));
        }
        copy.verify()?;
        let audit = copy.verify_audit()?;
        if audit != source_audit {
            return Err(StoreError::Corrupt(
                "the copy's audit chain does not end where the file's does".into(),
            ));
        }
        let charts = self.inner.with_reader(|sql| {
            let mut stmt = sql.prepare_cached("SELECT id, heads FROM charts ORDER BY key")?;
            let rows = stmt.query_map(super::sql::params![], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let total = charts.len() as u64;
        for (done, (id, heads)) in charts.iter().enumerate() {
            let id: crate::chart::ChartId = id
                .parse()
                .map_err(|_| StoreError::Corrupt("a chart id in the file's index".into()))?;
            let mut loaded = copy.read(id, |c| c.heads())?;
            loaded.sort();
            let mut indexed = super::parse_heads_blob(heads).ok_or_else(|| {
                StoreError::Corrupt(format!("chart {id}: its heads in the file's index"))
            })?;
            indexed.sort();
            if loaded != indexed {
                return Err(StoreError::Corrupt(format!(
                    "chart {id} loads from the copy with other heads than the file's index gives"
                )));
            }
            // And its index rows agree with it.
            copy.check_chart(id)?;
            progress(CopyProgress::Checked {
                done: done as u64 + 1,
                total,
            });
        }
        Ok(CopyReport {
            tables,
            charts: total,
            audit,
            storage_id: copy.storage_id()?,
        })
    }
}

/// Every row of the file's tables into the database, in one transaction: the rows per table.
fn copy_rows(
    conn: &rusqlite::Connection,
    pool: &r2d2::Pool<Manager>,
    storage_id: &str,
    progress: &mut impl FnMut(CopyProgress),
) -> Result<BTreeMap<String, u64>, StoreError> {
    // One snapshot of the file for the whole copy.
    let read = conn.unchecked_transaction()?;
    let mut names: Vec<String> = read
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| (!FIRST.contains(&n.as_str()), n.clone()));
    let mut counts = BTreeMap::new();
    for name in &names {
        let n: i64 = read.query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| {
            r.get(0)
        })?;
        counts.insert(name.clone(), n as u64);
    }
    let total: u64 = counts.values().sum();

    // A tool's work, off any async runtime (PostgreSQL's blocking client runs its own).
    let mut pooled = pool
        .get()
        .map_err(|e| StoreError::Database(format!("no connection to PostgreSQL: {e}")))?;
    let client = pooled.client();
    {
        let mut tx = client.transaction().map_err(error)?;
        let in_database: Vec<String> = tx
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                &[],
            )
            .map_err(error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in &in_database {
            if DATABASE_ONLY.contains(&table.as_str()) || table == "store_meta" {
                continue;
            }
            if !names.contains(table) {
                return Err(StoreError::Invalid(format!(
                    "the database has a table `{table}` the file has not: the file is of another version than this build; open it with this build's server once first"
                )));
            }
            let any: bool = tx
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
                .map_err(error)?
                .get(0);
            if any {
                return Err(StoreError::Invalid(format!(
                    "the database holds a chartsync store already (table `{table}` has rows); copy only into a new, empty database"
                )));
            }
        }
        // What opening the database wrote of itself gives way to the file's.
        tx.execute("DELETE FROM store_meta", &[]).map_err(error)?;
        let mut done = 0u64;
        for name in &names {
            if !in_database.contains(name) {
                return Err(StoreError::Invalid(format!(
                    "the file has a table `{name}` the database has not"
                )));
            }
            let before = done;
            done += copy_table(&read, &mut tx, name, |n| {
                progress(CopyProgress::Rows {
                    table: name.clone(),
                    done: before + n,
                    total,
                })
            })?;
        }
        // Identity columns go on from the highest number copied.
        let identities: Vec<(String, String)> = tx
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND is_identity = 'YES'",
                &[],
            )
            .map_err(error)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (table, column) in identities {
            tx.query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                   (SELECT coalesce(max({column}), 0) FROM {table}) + 1, false)"
                ),
                &[],
            )
            .map_err(error)?;
        }
        // The devices know the server by its storage id: the database takes the old one.
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES ('storage_id', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&storage_id],
        )
        .map_err(error)?;
        let meta: i64 = tx
            .query_one("SELECT count(*) FROM store_meta", &[])
            .map_err(error)?
            .get(0);
        counts.insert("store_meta".into(), meta as u64);
        tx.commit().map_err(error)?;
    }
    drop(read);
    Ok(counts)
}

/// One table's rows, by PostgreSQL's binary `COPY`: how many.
fn copy_table(
    read: &rusqlite::Transaction<'_>,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    mut copied: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut stmt = read.prepare(&format!("SELECT * FROM \"{table}\""))?;
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let list = quoted.join(", ");
    // The database's types of the same columns, by name: a column it lacks fails here.
    let types: Vec<Type> = tx
        .prepare(&format!("SELECT {list} FROM {table} LIMIT 0"))
        .map_err(|e| {
            StoreError::Invalid(format!(
                "table `{table}` has other columns in the database than in the file: {}",
                error(e)
            ))
        })?
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let sink = tx
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))
        .map_err(error)?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        let values: Vec<Value<'_>> = (0..columns.len())
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                    rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                    rusqlite::types::ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|_| {
                                StoreError::Corrupt(format!(
                                    "table `{table}`, row {}: text that is not UTF-8",
                                    n + 1
                                ))
                            })?
                            .into(),
                    ),
                    rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec().into()),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        writer.write(&refs).map_err(|e| {
            StoreError::Invalid(format!("table `{table}`, row {}: {}", n + 1, error(e)))
        })?;
        n += 1;
        if n % 1000 == 0 {
            copied(n);
        }
    }
    writer.finish().map_err(error)?;
    copied(n);
    Ok(n)
}
