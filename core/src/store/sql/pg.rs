//! PostgreSQL under [`Sql`](super::Sql): the rust-postgres project's blocking client (the
//! store is synchronous, as the tablets need it; the server runs store work on blocking
//! threads) in an r2d2 pool, statements prepared once per connection.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{FromSql, IsNull, ToSql, Type};

use super::{Begin, Result, Value};
use crate::store::StoreError;

/// A pooled connection and the statements prepared on it.
pub(crate) struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub(crate) fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// Opens connections for the pool, and tells it which have broken.
#[derive(Debug)]
pub(crate) struct Manager {
    pub(crate) config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(postgres::NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// What statements run on: a connection, or a transaction on one.
pub(crate) enum Target<'c> {
    Client(&'c mut PgConn),
    Tx {
        tx: postgres::Transaction<'c>,
        statements: &'c mut HashMap<String, postgres::Statement>,
    },
}

impl<'c> Target<'c> {
    pub(crate) fn prepare(&mut self, sql: &str) -> Result<postgres::Statement> {
        let (statements, client): (_, &mut dyn postgres::GenericClient) = match self {
            Target::Client(c) => (&mut c.statements, &mut c.client),
            Target::Tx { tx, statements } => (&mut **statements, tx),
        };
        if let Some(s) = statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = client.prepare(&numbered(sql)).map_err(error)?;
        statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn client(&mut self) -> &mut dyn postgres::GenericClient {
        match self {
            Target::Client(c) => &mut c.client,
            Target::Tx { tx, .. } => tx,
        }
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        self.client().batch_execute(sql).map_err(error)
    }

    pub(crate) fn begin(&mut self, begin: Begin) -> Result<Target<'_>> {
        let (client, statements) = match self {
            Target::Client(c) => (&mut c.client, &mut c.statements),
            Target::Tx { .. } => {
                return Err(StoreError::Invalid(
                    "a transaction inside a transaction".into(),
                ))
            }
        };
        let mut builder = client.build_transaction();
        if begin == Begin::Deferred {
            // A consistent view across the statements, as SQLite's read transaction gives.
            builder = builder
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true);
        }
        Ok(Target::Tx {
            tx: builder.start().map_err(error)?,
            statements,
        })
    }

    pub(crate) fn commit(self) -> Result<()> {
        match self {
            Target::Client(_) => Ok(()),
            Target::Tx { tx, .. } => tx.commit().map_err(error),
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
        let n = self
            .borrow_mut()
            .client()
            .execute(statement, &params)
            .map_err(error)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query(
        &self,
        statement: &postgres::Statement,
        values: &[Value<'_>],
    ) -> Result<Vec<postgres::Row>> {
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        self.borrow_mut()
            .client()
            .query(statement, &params)
            .map_err(error)
    }
}

/// PostgreSQL's error as the store says it: the SQLSTATE and the message, never the DETAIL
/// (which quotes the values of a row: a patient's, perhaps).
pub(crate) fn error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        None if e.is_closed() => StoreError::Database("the connection to PostgreSQL closed".into()),
        None => StoreError::Database(e.to_string()),
    }
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
}
