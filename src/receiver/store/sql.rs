//! A small SQL layer with two backends: the embedded SQLite file (the default, needing
//! nothing) and a PostgreSQL server (several receivers sharing one site). The store and the
//! modules above it write portable SQL with `?N` placeholders; on PostgreSQL they become `$N`
//! and the `user` column is quoted (a reserved word there). Values travel as [`Value`], so
//! integers, text and bytes convert to whatever column type the server expects.
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

pub use super::pg_session::JobId;
use super::pg_session::Pg;

/// Where the site's state lives.
#[derive(Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL connection string (URL or `key=value` form) and the password kept apart
/// from it, so it never sits on a command line.
#[derive(Clone)]
pub struct PgTarget {
    pub url: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(t) => write!(f, "{t:?}"),
        }
    }
}

/// The URL without a password that may have been written into it.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &auth[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("query returned no rows")]
    QueryReturnedNoRows,
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Other(String),
}

fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

impl Error {
    /// The server ended the session (shutdown, a terminated backend) or the connection broke:
    /// nothing more works on it.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Postgres(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("57P") || c.starts_with("08")
                    })
            }
            _ => false,
        }
    }

    /// A unique or primary key violation (another receiver inserted the same row first).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------- values in ----------

pub trait ToSql {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_sql!(i64, i32, i16, u8, u16, u32, usize, u64);

impl ToSql for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToSql for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToSql for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToSql for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToSql for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToSql for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToSql for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// Statement parameters: `params![a, b]`, an array of one type, or `[]`.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for &[&dyn ToSql] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for [&dyn ToSql; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

#[macro_export]
#[doc(hidden)]
macro_rules! __sql_params {
    () => { &[] as &[&dyn $crate::receiver::store::sql::ToSql] };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::receiver::store::sql::ToSql),+] as &[&dyn $crate::receiver::store::sql::ToSql]
    };
}
pub use crate::__sql_params as params;

// ---------- values out ----------

pub trait FromSql: Sized {
    fn from_value(v: &Value) -> Result<Self>;
}

fn mismatch<T>(v: &Value, want: &str) -> Result<T> {
    Err(Error::Other(format!("column holds {v:?}, expected {want}")))
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_value(v: &Value) -> Result<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i)
                        .map_err(|_| Error::Other(format!("{i} out of range"))),
                    _ => mismatch(v, "an integer"),
                }
            }
        }
    )*};
}
int_from_sql!(i64, i32, u16, u32, u64, usize);

impl FromSql for bool {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            _ => mismatch(v, "a boolean"),
        }
    }
}
impl FromSql for f64 {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            _ => mismatch(v, "a number"),
        }
    }
}
impl FromSql for String {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => mismatch(v, "text"),
        }
    }
}
impl FromSql for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            _ => mismatch(v, "bytes"),
        }
    }
}
impl FromSql for Value {
    fn from_value(v: &Value) -> Result<Self> {
        Ok(v.clone())
    }
}
impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column position (one integer type, so `r.get(0)` infers it).
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row, already read off the connection.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    pub(super) fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        let v = self
            .values
            .get(i)
            .ok_or_else(|| Error::Other(format!("no column {i}")))?;
        T::from_value(v)
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }
}

// ---------- connections ----------

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Connection {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    // Always Some until dropped (see Drop).
    Postgres(RefCell<Option<Box<Pg>>>),
}

impl Connection {
    pub fn open(loc: &Location) -> Result<Connection> {
        match loc {
            Location::Sqlite(path) => {
                let c = rusqlite::Connection::open(path)?;
                c.busy_timeout(Duration::from_secs(15))?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "FULL")?;
                c.pragma_update(None, "foreign_keys", "ON")?;
                Ok(Connection {
                    inner: Inner::Sqlite(c),
                })
            }
            Location::Postgres(t) => Ok(Connection {
                inner: Inner::Postgres(RefCell::new(Some(Box::new(Pg::connect(t)?)))),
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (schema upgrades of old files).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    fn pg(&self) -> std::cell::RefMut<'_, Pg> {
        let Inner::Postgres(p) = &self.inner else {
            unreachable!("PostgreSQL session on SQLite")
        };
        std::cell::RefMut::map(p.borrow_mut(), |p| {
            &mut **p.as_mut().expect("PostgreSQL session present until drop")
        })
    }

    /// Whether the server dropped this PostgreSQL session (a restart, a failover, a
    /// terminated backend): it never works again and must be replaced.
    pub fn is_broken(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Postgres(_) => self.pg().is_closed(),
        }
    }

    /// Runs statements without parameters (schema, transaction control).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(_) => self.pg().simple(sql),
        }
    }

    /// Starts the one write transaction the site allows at a time.
    pub fn begin_write(&self) -> Result<()> {
        self.begin_write_reading(&[]).map(|_| ())
    }

    /// [`Connection::begin_write`], then `reads` inside the transaction: on PostgreSQL in the
    /// same round trip as BEGIN and the lock.
    pub fn begin_write_reading(&self, reads: &[(String, Vec<Value>)]) -> Result<Vec<Vec<Row>>> {
        match &self.inner {
            Inner::Sqlite(c) => {
                c.execute_batch("BEGIN IMMEDIATE")?;
                let r = self.query_all(reads);
                if r.is_err() {
                    let _ = c.execute_batch("ROLLBACK");
                }
                r
            }
            Inner::Postgres(_) => self.pg().begin_write(reads),
        }
    }

    /// Commits the write transaction; it fails rather than report a transaction that an
    /// error aborted (and PostgreSQL therefore rolls back) as committed.
    pub fn commit(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch("COMMIT")?),
            Inner::Postgres(_) => self.pg().commit(),
        }
    }

    /// Rolls back the write transaction (writes still queued are dropped).
    pub fn rollback(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch("ROLLBACK")?),
            Inner::Postgres(_) => self.pg().rollback(),
        }
    }

    /// Runs `f` as one job of a write transaction: a savepoint around it, so an `Err` undoes
    /// only this job's changes. On PostgreSQL the job's writes may still be unsent when it
    /// returns (see [`Connection::defer`]): if one of them fails later, the job is undone
    /// alone and [`Connection::job_failure`] tells, at the latest after the commit.
    pub fn job<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E>,
    ) -> (JobId, Result<R, E>) {
        if let Inner::Sqlite(c) = &self.inner {
            if let Err(e) = c.execute_batch("SAVEPOINT job") {
                return (JobId(0), Err(Error::from(e).into()));
            }
            let r = match f(self) {
                Ok(r) => c
                    .execute_batch("RELEASE job")
                    .map(|_| r)
                    .map_err(|e| Error::from(e).into()),
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK TO job; RELEASE job");
                    Err(e)
                }
            };
            return (JobId(0), r);
        }
        let mark = self.pg().start_job();
        let r = f(self);
        let mut pg = self.pg();
        let id = mark.id();
        (id, pg.end_job(mark, r))
    }

    /// The error that undid job `id` after it had returned (PostgreSQL only).
    pub fn job_failure(&self, id: JobId) -> Option<Error> {
        match &self.inner {
            Inner::Sqlite(_) => None,
            Inner::Postgres(_) => self.pg().job_failure(id),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let vals = params.values();
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.execute(rusqlite::params_from_iter(vals.iter().map(lite_value)))?;
                Ok(n)
            }
            Inner::Postgres(_) => Ok(self.pg().execute(sql, vals)? as usize),
        }
    }

    /// A write whose row count nobody needs. Inside a [`Connection::job`] on PostgreSQL it
    /// is queued and sent with the next statement that needs an answer (its failure then
    /// fails its job); everywhere else it runs at once.
    pub fn defer<P: Params>(&self, sql: &str, params: P) -> Result<()> {
        let vals = params.values();
        if let Inner::Postgres(_) = &self.inner {
            if self.pg().defer(sql, vals.clone())? {
                return Ok(());
            }
        }
        self.execute(sql, vals).map(|_| ())
    }

    /// Every row of a query.
    pub fn query<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        let vals = params.values();
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(vals.iter().map(lite_value)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(n);
                    for i in 0..n {
                        values.push(from_lite(r.get_ref(i)?));
                    }
                    out.push(Row { values });
                }
                Ok(out)
            }
            Inner::Postgres(_) => self.pg().query(sql, vals),
        }
    }

    pub fn query_row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        let rows = self.query(sql, params)?;
        match rows.first() {
            Some(r) => f(r),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    /// Several independent queries in one round trip on PostgreSQL (one after the other on
    /// SQLite): the rows of each.
    pub fn query_all(&self, queries: &[(String, Vec<Value>)]) -> Result<Vec<Vec<Row>>> {
        match &self.inner {
            Inner::Sqlite(_) => queries
                .iter()
                .map(|(sql, vals)| self.query(sql, vals.clone()))
                .collect(),
            Inner::Postgres(_) => self.pg().query_all(queries),
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_string(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the session's runtime panics on a thread that drives another runtime:
        // drop it on a thread of its own then.
        if let Inner::Postgres(p) = &mut self.inner {
            if let Some(pg) = p.get_mut().take() {
                if tokio::runtime::Handle::try_current().is_ok() {
                    let _ = std::thread::spawn(move || drop(pg)).join();
                } else {
                    drop(pg);
                }
            }
        }
    }
}

/// A statement to run, rusqlite-style.
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    pub fn query_map<T, P: Params>(
        &mut self,
        params: P,
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query(&self.sql, params)?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        Ok(!self.conn.query(&self.sql, params)?.is_empty())
    }
}

// ---------- SQLite conversions ----------

fn lite_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as L;
    match v {
        Value::Null => L::Null,
        Value::Int(i) => L::Integer(*i),
        Value::Real(f) => L::Real(*f),
        Value::Text(s) => L::Text(s.clone()),
        Value::Blob(b) => L::Blob(b.clone()),
    }
}

fn from_lite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as L;
    match v {
        L::Null => Value::Null,
        L::Integer(i) => Value::Int(i),
        L::Real(f) => Value::Real(f),
        L::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        L::Blob(b) => Value::Blob(b.to_vec()),
    }
}

// ---------- PostgreSQL conversions ----------

/// Portable SQL to PostgreSQL's: `?N` → `$N`, a bare `?` → the next `$N`, and the `user`
/// column quoted. String literals and quoted identifiers pass through untouched.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '\'' | '"' => {
                out.push(ch);
                for c in chars.by_ref() {
                    out.push(c);
                    if c == ch {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    digits = next.to_string();
                }
                out.push('$');
                out.push_str(&digits);
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(d) = chars
                    .peek()
                    .filter(|d| d.is_ascii_alphanumeric() || **d == '_')
                {
                    word.push(*d);
                    chars.next();
                }
                if word.eq_ignore_ascii_case("user") {
                    out.push_str("\"user\"");
                } else {
                    out.push_str(&word);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_reserved_words_translate() {
        assert_eq!(
            pg_sql("SELECT user, 'user?' FROM pending WHERE uuid=?1 AND x=?"),
            "SELECT \"user\", 'user?' FROM pending WHERE uuid=$1 AND x=$1"
        );
        assert_eq!(pg_sql("a=? AND b=?"), "a=$1 AND b=$2");
        assert_eq!(pg_sql("users.username"), "users.username");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://tether:s3cret@db:5432/site"),
            "postgres://tether:***@db:5432/site"
        );
        assert_eq!(redact("postgres://db/site"), "postgres://db/site");
    }
}
