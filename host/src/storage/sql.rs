//! The SQL the stores speak, on either engine: statements written with numbered parameters (`?1`, `?2`, as SQLite
//! takes them; PostgreSQL is given `$1`, `$2`), values of five kinds, rows read by position. Statements are prepared
//! once per connection and kept. Where the engines' SQL differs (full-text search, JSON, planner hints), a store asks
//! [`Db::engine`] and says each.

use super::postgres::{self, Session};

/// Which database a connection is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A value borrowed for binding or reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(r) => ValueRef::Real(*r),
            Self::Text(t) => ValueRef::Text(t),
            Self::Blob(b) => ValueRef::Blob(b),
        }
    }
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(value: $t) -> Self {
                Self::Integer(i64::from(value))
            }
        }
    )*};
}
integer_values!(i64, i32, u32, u16, u8, bool);

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self::Real(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot reach PostgreSQL: {0}")]
    Pool(String),
    #[error("the query returned no rows")]
    NoRows,
    #[error("column {index}: {reason}")]
    Column { index: usize, reason: String },
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// A PostgreSQL error with what the server said, or what failed on the way (tokio-postgres's own message is only
/// "db error" or "error connecting to server").
pub fn postgres_message(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for SqlError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Pool(match &error {
            deadpool_postgres::PoolError::Backend(error) => postgres_message(error),
            other => other.to_string(),
        })
    }
}

/// `None` for a query that returned no rows, as rusqlite's extension of the same name.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(SqlError::NoRows) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Something that binds to a statement parameter.
pub trait Param {
    fn value(&self) -> ValueRef<'_>;
}

macro_rules! integer_params {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> ValueRef<'_> {
                ValueRef::Integer(i64::from(*self))
            }
        }
    )*};
}
integer_params!(i64, i32, u32, u16, u8, i16, i8, bool);

impl Param for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl<const N: usize> Param for [u8; N] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Value {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, Param::value)
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}

/// A statement's parameters, in order.
pub trait Params {
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for &[&dyn Param] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.value()).collect()
    }
}

/// No parameters.
impl Params for [&dyn Param; 0] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: Param> Params for [T; $n] {
            fn values(&self) -> Vec<ValueRef<'_>> {
                self.iter().map(Param::value).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8);

impl<T: Param> Params for Vec<T> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Param::value).collect()
    }
}

/// Parameters of any types, as a slice: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::storage::sql::Param] };
    ($($param:expr),+ $(,)?) => { &[$(&$param as &dyn $crate::storage::sql::Param),+] as &[&dyn $crate::storage::sql::Param] };
}
pub use params;

/// Something read from a column.
pub trait Column: Sized {
    fn column(value: ValueRef<'_>) -> Result<Self, String>;
}

fn wrong(value: ValueRef<'_>, wanted: &str) -> String {
    let found = match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    };
    format!("{found} where {wanted} was wanted")
}

impl Column for i64 {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Integer(i) => Ok(i),
            other => Err(wrong(other, "an integer")),
        }
    }
}

macro_rules! narrow_columns {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn column(value: ValueRef<'_>) -> Result<Self, String> {
                let wide = i64::column(value)?;
                <$t>::try_from(wide).map_err(|_| format!("{wide} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
narrow_columns!(i32, u32, u64, u16, u8, usize);

impl Column for bool {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        i64::column(value).map(|i| i != 0)
    }
}

impl Column for f64 {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(r) => Ok(r),
            ValueRef::Integer(i) => Ok(i as f64),
            other => Err(wrong(other, "a number")),
        }
    }
}

impl Column for String {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(t) => Ok(t.to_owned()),
            other => Err(wrong(other, "text")),
        }
    }
}

impl Column for Vec<u8> {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(wrong(other, "a blob")),
        }
    }
}

impl Column for Value {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(match value {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(r) => Self::Real(r),
            ValueRef::Text(t) => Self::Text(t.to_owned()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        })
    }
}

impl<T: Column> Column for Option<T> {
    fn column(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::column(other).map(Some),
        }
    }
}

/// A row of an answer.
pub struct Row<'r>(RowOf<'r>);

enum RowOf<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// The value of column `index` (from 0).
    pub fn get<I: RowIndex, T: Column>(&self, index: I) -> Result<T> {
        let index = index.index();
        let column = |value| T::column(value).map_err(|reason| SqlError::Column { index, reason });
        match &self.0 {
            RowOf::Sqlite(row) => {
                column(sqlite_value(row.get_ref(index)?).map_err(|reason| SqlError::Column { index, reason })?)
            }
            RowOf::Postgres(row) => column(postgres::column(row, index)?),
        }
    }
}

/// A column's position.
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>) -> Result<ValueRef<'_>, String> {
    use rusqlite::types::ValueRef as V;
    Ok(match value {
        V::Null => ValueRef::Null,
        V::Integer(i) => ValueRef::Integer(i),
        V::Real(r) => ValueRef::Real(r),
        V::Text(t) => ValueRef::Text(std::str::from_utf8(t).map_err(|e| format!("text that is not UTF-8: {e}"))?),
        V::Blob(b) => ValueRef::Blob(b),
    })
}

fn sqlite_params<'a>(values: &'a [ValueRef<'a>]) -> impl rusqlite::Params + 'a {
    use rusqlite::types::{ToSqlOutput, ValueRef as V};
    rusqlite::params_from_iter(values.iter().map(|value| {
        ToSqlOutput::Borrowed(match *value {
            ValueRef::Null => V::Null,
            ValueRef::Integer(i) => V::Integer(i),
            ValueRef::Real(r) => V::Real(r),
            ValueRef::Text(t) => V::Text(t.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        })
    }))
}

/// A connection (or a transaction on one) to run statements on.
#[derive(Clone, Copy)]
pub struct Db<'c>(Conn<'c>);

#[derive(Clone, Copy)]
enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c Session),
}

impl<'c> Db<'c> {
    pub fn sqlite(connection: &'c rusqlite::Connection) -> Self {
        Self(Conn::Sqlite(connection))
    }

    pub(super) fn postgres(session: &'c Session) -> Self {
        Self(Conn::Postgres(session))
    }

    pub fn engine(&self) -> Engine {
        match self.0 {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (its pragmas); `None` on PostgreSQL.
    pub fn as_sqlite(&self) -> Option<&'c rusqlite::Connection> {
        match self.0 {
            Conn::Sqlite(connection) => Some(connection),
            Conn::Postgres(_) => None,
        }
    }

    /// Run a statement; the rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        let values = params.values();
        match self.0 {
            Conn::Sqlite(connection) => Ok(connection.prepare_cached(sql)?.execute(sqlite_params(&values))?),
            Conn::Postgres(session) => session.execute(sql, &values),
        }
    }

    /// Run statements without parameters, one after another.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self.0 {
            Conn::Sqlite(connection) => Ok(connection.execute_batch(sql)?),
            Conn::Postgres(session) => session.execute_batch(sql),
        }
    }

    /// `read` of the first row; [`SqlError::NoRows`] when there is none.
    pub fn query_row<T>(&self, sql: &str, params: impl Params, read: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        let mut read = Some(read);
        let mut value = None;
        self.query_each(sql, params, |row| {
            if let Some(read) = read.take() {
                value = Some(read(row)?);
            }
            Ok(false)
        })?;
        value.ok_or(SqlError::NoRows)
    }

    /// `read` of every row.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl Params,
        mut read: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut values = Vec::new();
        self.query_each(sql, params, |row| {
            values.push(read(row)?);
            Ok(true)
        })?;
        Ok(values)
    }

    /// Hand each row to `each` as it comes, until it answers `false`. `each` must not run statements of its own on
    /// this connection: PostgreSQL's rows are still arriving on it (collect with [`Db::query_map`] first).
    pub fn query_each(&self, sql: &str, params: impl Params, mut each: impl FnMut(&Row) -> Result<bool>) -> Result<()> {
        let values = params.values();
        match self.0 {
            Conn::Sqlite(connection) => {
                let mut statement = connection.prepare_cached(sql)?;
                let mut rows = statement.query(sqlite_params(&values))?;
                while let Some(row) = rows.next()? {
                    if !each(&Row(RowOf::Sqlite(row)))? {
                        break;
                    }
                }
                Ok(())
            }
            Conn::Postgres(session) => session.query_each(sql, &values, |row| each(&Row(RowOf::Postgres(row)))),
        }
    }
}
