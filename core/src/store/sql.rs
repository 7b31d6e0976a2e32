//! The store's SQL, on either engine: SQLite (every tablet, and a server by default) or
//! PostgreSQL (a server of several nodes, with the `postgres` feature).
//!
//! The store's modules write their statements once, in the SQL both engines speak, with
//! numbered parameters (`?1`), and run them through [`Sql`]: a connection or a transaction of
//! either engine. Its surface is the part of rusqlite's the store uses (`prepare_cached`,
//! `execute`, `query_row`, `query_map`, `optional`), so the store reads as it did on SQLite
//! alone. Values cross as [`Value`]s, read back by what the caller asks for ([`Column`]), so
//! an integer column is an `i64` whichever engine holds it. docs/adr/0011 has why the seam is
//! here and not a second copy of the store.

use std::borrow::Cow;

use super::StoreError;

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A parameter's value, as both engines bind it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

/// What can be a statement's parameter.
pub(crate) trait Arg {
    fn value(&self) -> Value<'_>;
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_arg!(i64, i32, u32, u16, u8);

impl Arg for usize {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Arg for u64 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Arg for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl Arg for bool {
    fn value(&self) -> Value<'_> {
        Value::Bool(*self)
    }
}
impl Arg for str {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for String {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl Arg for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl<const N: usize> Arg for [u8; N] {
    fn value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl<T: Arg> Arg for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, Arg::value)
    }
}
impl<T: Arg + ?Sized> Arg for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Arg + ?Sized> Arg for Box<T> {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl Arg for Value<'_> {
    fn value(&self) -> Value<'_> {
        match self {
            Value::Text(t) => Value::Text(Cow::Borrowed(t)),
            Value::Blob(b) => Value::Blob(Cow::Borrowed(b)),
            v => v.clone(),
        }
    }
}

/// A statement's parameters: `params![…]`, an array of one type, or a slice of values.
pub(crate) trait Args {
    fn values(&self) -> Vec<Value<'_>>;
}

impl Args for [&dyn Arg] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(|a| a.value()).collect()
    }
}
impl<T: Arg, const N: usize> Args for [T; N] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(Arg::value).collect()
    }
}
impl<T: Arg> Args for Vec<T> {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(Arg::value).collect()
    }
}
impl<A: Args + ?Sized> Args for &A {
    fn values(&self) -> Vec<Value<'_>> {
        (**self).values()
    }
}

/// No parameters.
pub(crate) const NO_ARGS: [&dyn Arg; 0] = [];

/// A statement's parameters, of mixed types: `params![id.to_string(), at, data]`.
macro_rules! params {
    () => { $crate::store::sql::NO_ARGS };
    ($($p:expr),+ $(,)?) => {
        [$(&$p as &dyn $crate::store::sql::Arg),+]
    };
}
pub(crate) use params;

/// What a column can be read as.
pub(crate) trait Column: Sized {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self>;
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self>;
    /// Called for SQL NULL; only `Option` accepts it.
    fn null() -> Option<Self> {
        None
    }
}

impl Column for i64 {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_i64().ok()
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.int()
    }
}

macro_rules! narrow_int_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
                v.as_i64().ok().and_then(|i| <$t>::try_from(i).ok())
            }
            #[cfg(feature = "postgres")]
            fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
                v.int().and_then(|i| <$t>::try_from(i).ok())
            }
        }
    )*};
}
narrow_int_column!(i32, u32, u64, usize, u16, u8);

impl Column for bool {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_i64().ok().map(|i| i != 0)
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.bool().or_else(|| v.int().map(|i| i != 0))
    }
}

impl Column for f64 {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_f64()
            .ok()
            .or_else(|| v.as_i64().ok().map(|i| i as f64))
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.real().or_else(|| v.int().map(|i| i as f64))
    }
}

impl Column for String {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_str().ok().map(str::to_string)
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.text().map(str::to_string)
    }
}

impl Column for Vec<u8> {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_blob().ok().map(<[u8]>::to_vec)
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.blob().map(<[u8]>::to_vec)
    }
}

impl<const N: usize> Column for [u8; N] {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        v.as_blob().ok().and_then(|b| b.try_into().ok())
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        v.blob().and_then(|b| b.try_into().ok())
    }
}

impl<T: Column> Column for Option<T> {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Option<Self> {
        T::from_sqlite(v).map(Some)
    }
    #[cfg(feature = "postgres")]
    fn from_pg(v: pg::Raw<'_>) -> Option<Self> {
        T::from_pg(v).map(Some)
    }
    fn null() -> Option<Self> {
        Some(None)
    }
}

/// A column index, as rusqlite's `get::<_, T>(i)` takes it.
/// A whole row read as a tuple of columns, in order: `row.columns::<(String, i64)>()`.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &Row<'_>) -> Result<Self>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Column),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row<'_>) -> Result<Self> {
                Ok(($(row.get::<usize, $t>($i)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);

pub(crate) trait ColumnIndex {
    fn index(self) -> usize;
}
impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result, of either engine.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    #[cfg(feature = "postgres")]
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// The row's first columns as a tuple (see [`FromRow`]).
    pub(crate) fn columns<T: FromRow>(&self) -> Result<T> {
        T::from_row(self)
    }

    /// Column `i` as a `T`: a NULL only as an `Option`, and a value of another kind than
    /// asked (text where a number belongs) is a damaged store, said with the column's number.
    pub(crate) fn get<I: ColumnIndex, T: Column>(&self, i: I) -> Result<T> {
        let i = i.index();
        let bad = || {
            StoreError::Corrupt(format!(
                "column {i} of a row holds an unexpected kind of value"
            ))
        };
        match self {
            Row::Sqlite(r) => {
                let v = r.get_ref(i)?;
                if v == rusqlite::types::ValueRef::Null {
                    T::null().ok_or_else(bad)
                } else {
                    T::from_sqlite(v).ok_or_else(bad)
                }
            }
            #[cfg(feature = "postgres")]
            Row::Pg(r) => {
                let raw = pg::Raw::of(r, i)?;
                if raw.is_null() {
                    T::null().ok_or_else(bad)
                } else {
                    T::from_pg(raw).ok_or_else(bad)
                }
            }
        }
    }
}

/// A connection or a transaction, of either engine.
pub(crate) enum Sql<'c> {
    Sqlite(&'c rusqlite::Connection),
    /// The store's one SQLite writer, held until dropped.
    SqliteWriter(std::sync::MutexGuard<'c, rusqlite::Connection>),
    SqliteTx(rusqlite::Transaction<'c>),
    #[cfg(feature = "postgres")]
    Pg(std::cell::RefCell<pg::Target<'c>>),
}

impl<'c> From<&'c rusqlite::Connection> for Sql<'c> {
    fn from(c: &'c rusqlite::Connection) -> Self {
        Sql::Sqlite(c)
    }
}

/// How a transaction begins: `Immediate` writes (it waits for, then holds, the right to
/// write); `Deferred` reads a consistent view of several statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    Immediate,
    Deferred,
}

impl<'c> Sql<'c> {
    /// Which engine this is: for the few statements that differ (see [`Dialect`]).
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Sql::Sqlite(_) | Sql::SqliteWriter(_) | Sql::SqliteTx(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Sql::Pg(_) => Dialect::Postgres,
        }
    }

    /// Prepares `sql` once per connection and keeps it for the next call.
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        match self {
            Sql::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare_cached(sql)?)),
            Sql::SqliteWriter(c) => Ok(Stmt::Sqlite(c.prepare_cached(sql)?)),
            Sql::SqliteTx(t) => Ok(Stmt::Sqlite(t.prepare_cached(sql)?)),
            #[cfg(feature = "postgres")]
            Sql::Pg(t) => Ok(Stmt::Pg {
                statement: t.borrow_mut().prepare(sql)?,
                target: t as &dyn pg::Exec,
            }),
        }
    }

    /// [`prepare_cached`](Self::prepare_cached), for a statement made at run time.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        self.prepare_cached(sql)
    }

    pub(crate) fn execute(&self, sql: &str, args: impl Args) -> Result<usize> {
        self.prepare_cached(sql)?.execute(args)
    }

    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        args: impl Args,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(args, f)
    }

    /// Runs statements without parameters, one after another.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Sql::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Sql::SqliteWriter(c) => Ok(c.execute_batch(sql)?),
            Sql::SqliteTx(t) => Ok(t.execute_batch(sql)?),
            #[cfg(feature = "postgres")]
            Sql::Pg(t) => t.borrow_mut().batch(sql),
        }
    }

    /// Begins a transaction on this connection (not inside another).
    pub(crate) fn transaction(&mut self, begin: Begin) -> Result<Sql<'_>> {
        match self {
            Sql::Sqlite(c) => Ok(Sql::SqliteTx(sqlite_begin(c, begin)?)),
            Sql::SqliteWriter(c) => Ok(Sql::SqliteTx(sqlite_begin(c, begin)?)),
            Sql::SqliteTx(_) => Err(StoreError::Invalid(
                "a transaction inside a transaction".into(),
            )),
            #[cfg(feature = "postgres")]
            Sql::Pg(t) => Ok(Sql::Pg(std::cell::RefCell::new(t.get_mut().begin(begin)?))),
        }
    }

    /// Commits the transaction (a plain connection has nothing to commit).
    pub(crate) fn commit(self) -> Result<()> {
        match self {
            Sql::Sqlite(_) | Sql::SqliteWriter(_) => Ok(()),
            Sql::SqliteTx(t) => Ok(t.commit()?),
            #[cfg(feature = "postgres")]
            Sql::Pg(t) => t.into_inner().commit(),
        }
    }

    /// Ends a transaction that only read: nothing to keep.
    pub(crate) fn finish(self) -> Result<()> {
        match self {
            Sql::Sqlite(_) | Sql::SqliteWriter(_) => Ok(()),
            Sql::SqliteTx(t) => Ok(t.finish()?),
            #[cfg(feature = "postgres")]
            Sql::Pg(t) => t.into_inner().commit(),
        }
    }
}

/// A transaction on a SQLite connection that the caller holds alone (the writer behind its
/// mutex, or a reader taken from the pool).
pub(crate) fn sqlite_begin(
    conn: &rusqlite::Connection,
    begin: Begin,
) -> Result<rusqlite::Transaction<'_>> {
    let behavior = match begin {
        Begin::Immediate => rusqlite::TransactionBehavior::Immediate,
        Begin::Deferred => rusqlite::TransactionBehavior::Deferred,
    };
    Ok(rusqlite::Transaction::new_unchecked(conn, behavior)?)
}

impl From<String> for Value<'static> {
    fn from(s: String) -> Self {
        Value::Text(Cow::Owned(s))
    }
}
impl<T: Into<Value<'static>>> From<Option<T>> for Value<'static> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<i64> for Value<'static> {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// The few places the engines' SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `expr`, compared and sorted without regard to (ASCII) case.
    pub(crate) fn nocase(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{expr} COLLATE NOCASE"),
            Dialect::Postgres => format!("lower({expr})"),
        }
    }

    /// The JSON array of `expr` over a group's rows, in the order `order` (columns of the
    /// rows). SQLite aggregates in the order its subquery gives (the caller orders it the
    /// same way); PostgreSQL is told.
    pub(crate) fn json_array(self, expr: &str, order: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_group_array({expr})"),
            Dialect::Postgres => format!("json_agg({expr} ORDER BY {order})"),
        }
    }

    /// The pattern match that ignores (ASCII) case: SQLite's `LIKE` does.
    pub(crate) fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }

    /// The `YYYY-MM-DD` date `date` (an expression) moved by `shift` (an expression giving
    /// text such as `-150 years`).
    pub(crate) fn shift_date(self, date: &str, shift: &str) -> String {
        match self {
            Dialect::Sqlite => format!("date({date}, {shift})"),
            Dialect::Postgres => {
                format!("to_char(CAST({date} AS date) + CAST(CAST({shift} AS text) AS interval), 'YYYY-MM-DD')")
            }
        }
    }
}

/// A prepared statement.
pub(crate) enum Stmt<'s> {
    Sqlite(rusqlite::CachedStatement<'s>),
    #[cfg(feature = "postgres")]
    Pg {
        statement: postgres::Statement,
        target: &'s dyn pg::Exec,
    },
}

impl Stmt<'_> {
    pub(crate) fn execute(&mut self, args: impl Args) -> Result<usize> {
        let values = args.values();
        match self {
            Stmt::Sqlite(s) => Ok(s.execute(rusqlite::params_from_iter(values.iter()))?),
            #[cfg(feature = "postgres")]
            Stmt::Pg { statement, target } => target.execute(statement, &values),
        }
    }

    /// The first row, `f` applied; an error (see [`OptionalExtension`]) if there is none.
    pub(crate) fn query_row<T>(
        &mut self,
        args: impl Args,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut rows = self.query(args)?;
        match rows.next()? {
            Some(row) => f(&row),
            None => Err(StoreError::NoRow),
        }
    }

    /// Every row, `f` applied to each; read as the caller iterates.
    pub(crate) fn query_map<T, F>(
        &mut self,
        args: impl Args,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let mut rows = self.query(args)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(f(&row));
        }
        Ok(out.into_iter())
    }

    /// Whether the statement returns a row.
    pub(crate) fn exists(&mut self, args: impl Args) -> Result<bool> {
        Ok(self.query(args)?.next()?.is_some())
    }

    pub(crate) fn query(&mut self, args: impl Args) -> Result<Rows<'_>> {
        let values = args.values();
        match self {
            Stmt::Sqlite(s) => Ok(Rows::Sqlite(
                s.query(rusqlite::params_from_iter(values.iter()))?,
            )),
            #[cfg(feature = "postgres")]
            Stmt::Pg { statement, target } => Ok(Rows::Pg(
                target.query(statement, &values)?.into_iter(),
                None,
            )),
        }
    }
}

/// A statement's rows, one at a time.
pub(crate) enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    #[cfg(feature = "postgres")]
    Pg(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

impl Rows<'_> {
    pub(crate) fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            #[cfg(feature = "postgres")]
            Rows::Pg(rows, current) => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Pg))
            }
        }
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// `Ok(None)` for a query that found no row, as rusqlite's `OptionalExtension`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod pg;
