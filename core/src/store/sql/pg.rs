//! PostgreSQL under [`Sql`](super::Sql): the rust-postgres project's blocking client (the
//! store is synchronous, as the tablets need it; the server runs store work on blocking
//! threads) in an r2d2 pool, statements prepared once per connection.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{FromSql, IsNull, ToSql, Type};

use super::{Begin, Result, Value};
use crate::store::StoreError;

/// Runs `f`, which blocks on PostgreSQL, where blocking is allowed. The client runs its own
/// small runtime, which must not start inside another's: a server's async worker moves its
/// other tasks away first (`block_in_place`); on a single-threaded runtime the work goes to
/// a thread of its own for the moment.
pub(crate) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// A pooled connection and the statements prepared on it.
pub(crate) struct PgConn {
    /// `None` only while it closes.
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub(crate) fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a connection is used only until it closes")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing tells the server goodbye: a blocking call too.
        if let Some(client) = self.client.take() {
            blocking(move || drop(client));
        }
    }
}

/// How the store reaches its database: the connection's settings, and TLS.
#[derive(Clone)]
pub(crate) struct Database {
    config: postgres::Config,
    /// `None` when the URL says `sslmode=disable`.
    tls: Option<postgres_openssl::MakeTlsConnector>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// From a URL as libpq takes it (`postgres://user:password@host:port/database?...`).
    ///
    /// The connection is encrypted whenever the server offers TLS (`sslmode=prefer`, the
    /// default), or must be (`sslmode=require`, `verify-ca`, `verify-full`), and the server's
    /// certificate is always verified, name included: against the system's trusted roots, and
    /// the CA in `sslrootcert=PATH` if the URL names one (a hospital's own). libpq's `prefer`
    /// and `require` encrypt without verifying; here an unverified server is refused instead,
    /// as patient data goes over this connection. `sslmode=disable` connects without TLS (a
    /// Unix socket, or a network only the servers reach).
    pub(crate) fn from_url(url: &str) -> Result<Database> {
        let invalid = || {
            StoreError::Invalid(
                "the database URL is not one PostgreSQL takes (postgres://user@host/database)"
                    .into(),
            )
        };
        let mut ca: Option<std::path::PathBuf> = None;
        let mut mode: Option<String> = None;
        // A key=value connection string (not a URL) is PostgreSQL's own to read, as it is.
        let config_text = match url::Url::parse(url) {
            Ok(mut parsed) => {
                let kept: Vec<(String, String)> = parsed
                    .query_pairs()
                    .filter_map(|(k, v)| match &*k {
                        "sslrootcert" => {
                            ca = Some(v.into_owned().into());
                            None
                        }
                        "sslmode" => {
                            mode = Some(v.into_owned());
                            None
                        }
                        _ => Some((k.into_owned(), v.into_owned())),
                    })
                    .collect();
                let mapped = match mode.as_deref() {
                    None | Some("prefer") | Some("allow") => "prefer",
                    Some("disable") => "disable",
                    Some("require") | Some("verify-ca") | Some("verify-full") => "require",
                    Some(_) => return Err(invalid()),
                };
                parsed
                    .query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair("sslmode", mapped);
                parsed.to_string()
            }
            Err(_) => url.to_string(),
        };
        let config: postgres::Config = config_text.parse().map_err(|_| invalid())?;
        if config.get_ssl_mode() == postgres::config::SslMode::Disable {
            return Ok(Database { config, tls: None });
        }
        let tls_error = |e: openssl::error::ErrorStack| {
            StoreError::Invalid(format!("TLS to the database could not be set up: {e}"))
        };
        let mut builder =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                .map_err(tls_error)?;
        if let Some(ca) = &ca {
            builder.set_ca_file(ca).map_err(|e| {
                StoreError::Invalid(format!(
                    "the database's CA certificate (sslrootcert={}) could not be read: {e}",
                    ca.display()
                ))
            })?;
        }
        Ok(Database {
            config,
            tls: Some(postgres_openssl::MakeTlsConnector::new(builder.build())),
        })
    }

    /// A new connection (blocking).
    pub(crate) fn connect(&self) -> std::result::Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }
}

/// Opens connections for the pool, and tells it which have broken.
#[derive(Debug)]
pub(crate) struct Manager {
    pub(crate) database: Database,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let client = blocking(|| self.database.connect())?;
        Ok(PgConn {
            client: Some(client),
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        let client = conn.client();
        blocking(|| client.simple_query("").map(|_| ()))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.as_ref().is_none_or(|c| c.is_closed())
    }
}

/// A connection from the pool, to run statements on (each committed on its own) or to begin
/// a transaction on.
pub(crate) fn pooled<'c>(pool: &r2d2::Pool<Manager>) -> Result<super::Sql<'c>> {
    let conn = blocking(|| pool.get())
        .map_err(|e| StoreError::Database(format!("no connection to PostgreSQL: {e}")))?;
    Ok(super::Sql::Pg(RefCell::new(Target::Pooled(conn))))
}

/// What statements run on: a connection, or a transaction on one.
pub(crate) enum Target<'c> {
    Pooled(r2d2::PooledConnection<Manager>),
    Tx {
        /// `None` once committed.
        tx: Option<postgres::Transaction<'c>>,
        statements: &'c mut HashMap<String, postgres::Statement>,
    },
}

impl Drop for Target<'_> {
    fn drop(&mut self) {
        // A transaction dropped uncommitted rolls back: a blocking call.
        if let Target::Tx { tx, .. } = self {
            if let Some(tx) = tx.take() {
                blocking(move || drop(tx));
            }
        }
    }
}

/// The connection or transaction statements go to.
enum On<'a, 'c> {
    Client(&'a mut postgres::Client),
    Tx(&'a mut postgres::Transaction<'c>),
}

impl<'c> Target<'c> {
    fn on(&mut self) -> Result<On<'_, 'c>> {
        match self {
            Target::Pooled(c) => Ok(On::Client(c.client())),
            Target::Tx { tx: Some(tx), .. } => Ok(On::Tx(tx)),
            Target::Tx { tx: None, .. } => Err(StoreError::Invalid(
                "a statement after its transaction ended".into(),
            )),
        }
    }

    pub(crate) fn prepare(&mut self, sql: &str) -> Result<postgres::Statement> {
        let cached = match self {
            Target::Pooled(c) => c.statements.get(sql),
            Target::Tx { statements, .. } => statements.get(sql),
        };
        if let Some(s) = cached {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        let statement = match self.on()? {
            On::Client(c) => blocking(|| c.prepare(&translated)),
            On::Tx(tx) => blocking(|| tx.prepare(&translated)),
        }
        .map_err(error)?;
        match self {
            Target::Pooled(c) => c.statements.insert(sql.to_string(), statement.clone()),
            Target::Tx { statements, .. } => statements.insert(sql.to_string(), statement.clone()),
        };
        Ok(statement)
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        match self.on()? {
            On::Client(c) => blocking(|| c.batch_execute(sql)),
            On::Tx(tx) => blocking(|| tx.batch_execute(sql)),
        }
        .map_err(error)
    }

    pub(crate) fn begin(&mut self, begin: Begin) -> Result<Target<'_>> {
        let c = match self {
            Target::Pooled(c) => &mut **c,
            Target::Tx { .. } => {
                return Err(StoreError::Invalid(
                    "a transaction inside a transaction".into(),
                ))
            }
        };
        let client = c
            .client
            .as_mut()
            .expect("a connection is used only until it closes");
        let tx = blocking(|| {
            let mut builder = client.build_transaction();
            if begin == Begin::Deferred {
                // A consistent view across the statements, as SQLite's read transaction gives.
                builder = builder
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true);
            }
            builder.start()
        })
        .map_err(error)?;
        Ok(Target::Tx {
            tx: Some(tx),
            statements: &mut c.statements,
        })
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        match &mut self {
            Target::Pooled(_) => Ok(()),
            Target::Tx { tx, .. } => match tx.take() {
                Some(tx) => blocking(move || tx.commit()).map_err(error),
                None => Ok(()),
            },
        }
    }
}

/// A session-level advisory lock, held on a connection of its own for as long as this lives:
/// released when dropped, or by the database when the process holding it dies (its connection
/// goes with it).
pub struct DatabaseLock {
    conn: Option<r2d2::PooledConnection<Manager>>,
    key: i64,
    shared: bool,
}

impl std::fmt::Debug for DatabaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLock")
            .field("key", &self.key)
            .field("shared", &self.shared)
            .finish()
    }
}

impl DatabaseLock {
    /// Takes the lock `key` if no one holds it against us now; `None` if someone does.
    pub(crate) fn try_take(
        pool: &r2d2::Pool<Manager>,
        key: i64,
        shared: bool,
    ) -> Result<Option<DatabaseLock>> {
        let mut conn = blocking(|| pool.get())
            .map_err(|e| StoreError::Database(format!("no connection to PostgreSQL: {e}")))?;
        let sql = if shared {
            "SELECT pg_try_advisory_lock_shared($1)"
        } else {
            "SELECT pg_try_advisory_lock($1)"
        };
        let client = conn.client();
        let taken: bool = blocking(|| client.query_one(sql, &[&key]))
            .map_err(error)?
            .get(0);
        Ok(taken.then_some(DatabaseLock {
            conn: Some(conn),
            key,
            shared,
        }))
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let sql = if self.shared {
            "SELECT pg_advisory_unlock_shared($1)"
        } else {
            "SELECT pg_advisory_unlock($1)"
        };
        let key = self.key;
        let client = conn.client();
        // Should the unlock fail, the connection is not given back to hold the lock for
        // someone else's statements: it is closed, and the lock goes with it.
        if blocking(|| client.query_one(sql, &[&key])).is_err() {
            if let Some(client) = conn.client.take() {
                blocking(move || drop(client));
            }
        }
    }
}

/// Runs prepared statements: what a [`Stmt`](super::Stmt) holds of its connection.
pub(crate) trait Exec {
    fn execute(&self, statement: &postgres::Statement, values: &[Value<'_>]) -> Result<usize>;
    fn query(
        &self,
        statement: &postgres::Statement,
        values: &[Value<'_>],
    ) -> Result<Vec<postgres::Row>>;
}

impl Exec for RefCell<Target<'_>> {
    fn execute(&self, statement: &postgres::Statement, values: &[Value<'_>]) -> Result<usize> {
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        let mut target = self.borrow_mut();
        let n = match target.on()? {
            On::Client(c) => blocking(|| c.execute(statement, &params)),
            On::Tx(tx) => blocking(|| tx.execute(statement, &params)),
        }
        .map_err(error)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query(
        &self,
        statement: &postgres::Statement,
        values: &[Value<'_>],
    ) -> Result<Vec<postgres::Row>> {
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        let mut target = self.borrow_mut();
        match target.on()? {
            On::Client(c) => blocking(|| c.query(statement, &params)),
            On::Tx(tx) => blocking(|| tx.query(statement, &params)),
        }
        .map_err(error)
    }
}

/// PostgreSQL's error as the store says it: the SQLSTATE and the message, never the DETAIL
/// (which quotes the values of a row: a patient's, perhaps).
pub(crate) fn error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        None if e.is_closed() => StoreError::Database("the connection to PostgreSQL closed".into()),
        None => match std::error::Error::source(&e) {
            // Ours (a value of the wrong kind for its column), naming kinds, never values.
            Some(why) => StoreError::Database(format!("{e}: {why}")),
            None => StoreError::Database(e.to_string()),
        },
    }
}

/// The store's statement as PostgreSQL takes it: parameters numbered its way, the column
/// `user` (a reserved word there) quoted, and SQLite's JSON functions named as PostgreSQL
/// names them. Everything else the store writes is SQL both engines read alike; what is not
/// goes through [`Dialect`](super::Dialect).
pub(crate) fn translate(sql: &str) -> String {
    let numbered = numbered(sql);
    let mut out = String::with_capacity(numbered.len() + 16);
    let mut rest = numbered.as_str();
    // Outside quotes only: the statements' string literals never hold these words.
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '\'' || c == '"') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('\'') || rest.starts_with('"') {
            let q = rest.as_bytes()[0] as char;
            let end = rest[1..].find(q).map_or(rest.len(), |e| e + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        match word {
            "user" => out.push_str("\"user\""),
            "json_group_array" => out.push_str("json_agg"),
            "json_each" => {
                // json_each($n) -> json_array_elements_text(CAST($n AS json))
                let args = rest[end..].trim_start();
                if let Some(inner) = args.strip_prefix('(') {
                    let close = inner.find(')').unwrap_or(inner.len());
                    let arg = inner[..close].trim();
                    out.push_str(&format!("json_array_elements_text(CAST({arg} AS json))"));
                    rest = &inner[(close + 1).min(inner.len())..];
                    continue;
                }
                out.push_str(word);
            }
            _ => out.push_str(word),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The statement with PostgreSQL's parameters: `?3` becomes `$3` (a bare `?` the next
/// number), outside quoted strings and identifiers.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut highest = 0u32;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => highest + 1,
                };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            None => out.push(c),
        }
    }
    out
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wrong = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {} parameter where the statement takes {ty}", self.kind()).into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(*b).to_sql(ty, out),
                Type::INT4 => i32::from(*b).to_sql(ty, out),
                Type::INT2 => i16::from(*b).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Text(t) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    t.as_ref().to_sql(ty, out)
                }
                Type::JSON => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(wrong()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_ref().to_sql(ty, out),
                _ => Err(wrong()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::Bool(_) => "boolean",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// One column's value as PostgreSQL sent it, read by the type the caller asks for.
pub(crate) struct Raw<'a> {
    ty: Type,
    bytes: Option<&'a [u8]>,
}

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: Some(raw),
        })
    }

    fn from_sql_null(
        ty: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl<'a> Raw<'a> {
    pub(crate) fn of(row: &'a postgres::Row, i: usize) -> Result<Raw<'a>> {
        row.try_get::<_, Raw<'a>>(i).map_err(error)
    }

    pub(crate) fn is_null(&self) -> bool {
        self.bytes.is_none()
    }

    fn read<T: FromSql<'a>>(&self) -> Option<T> {
        T::from_sql(&self.ty, self.bytes?).ok()
    }

    pub(crate) fn int(&self) -> Option<i64> {
        match self.ty {
            Type::INT8 => self.read::<i64>(),
            Type::INT4 => self.read::<i32>().map(i64::from),
            Type::INT2 => self.read::<i16>().map(i64::from),
            Type::BOOL => self.read::<bool>().map(i64::from),
            _ => None,
        }
    }

    pub(crate) fn bool(&self) -> Option<bool> {
        (self.ty == Type::BOOL)
            .then(|| self.read::<bool>())
            .flatten()
    }

    pub(crate) fn real(&self) -> Option<f64> {
        match self.ty {
            Type::FLOAT8 => self.read::<f64>(),
            Type::FLOAT4 => self.read::<f32>().map(f64::from),
            _ => None,
        }
    }

    pub(crate) fn text(&self) -> Option<&'a str> {
        match self.ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                std::str::from_utf8(self.bytes?).ok()
            }
            _ => None,
        }
    }

    pub(crate) fn blob(&self) -> Option<&'a [u8]> {
        (self.ty == Type::BYTEA).then_some(self.bytes).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT ?1, '?2', \"a?b\" FROM t WHERE x = ?2 AND y = ?"),
            "SELECT $1, '?2', \"a?b\" FROM t WHERE x = $2 AND y = $3"
        );
        assert_eq!(numbered("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(numbered("?10 = ?1"), "$10 = $1");
    }

    #[test]
    fn sqlite_words_become_postgresql_words() {
        assert_eq!(
            super::translate(
                "SELECT user, s.user, users FROM t WHERE ward IN (SELECT value FROM json_each( ?2)) AND x = 'user'"
            ),
            "SELECT \"user\", s.\"user\", users FROM t WHERE ward IN (SELECT value FROM json_array_elements_text(CAST($2 AS json))) AND x = 'user'"
        );
        assert_eq!(
            super::translate("SELECT json_group_array(id) FROM charts"),
            "SELECT json_agg(id) FROM charts"
        );
    }
}
