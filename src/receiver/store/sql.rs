//! A small SQL layer with two backends: the embedded SQLite file (the default, needing
//! nothing) and a PostgreSQL server (several receivers sharing one site). The store and the
//! modules above it write portable SQL with `?N` placeholders; on PostgreSQL they become `$N`
//! and the `user` column is quoted (a reserved word there). Values travel as [`Value`], so
//! integers, text and bytes convert to whatever column type the server expects.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

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

/// A PostgreSQL session: the asynchronous client driven by a runtime of its own, so that
/// several statements can be sent before the first answer arrives (pipelining: a writer
/// job's savepoint, its writes and its release cost one round trip, not one each).
struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    cache: HashMap<String, tokio_postgres::Statement>,
    /// Statements not sent yet: they go out in front of the next statement that needs an
    /// answer (see [`Connection::defer`]).
    queued: Vec<Op>,
    /// Inside [`Connection::job`]: only then are writes deferred.
    in_job: bool,
    /// Pipelines sent so far (tells whether a job reached the server).
    sent: u64,
}

/// One statement of a pipeline.
enum Op {
    Simple(String),
    Execute(tokio_postgres::Statement, Vec<Value>),
    Query(tokio_postgres::Statement, Vec<Value>),
}

enum Outcome {
    Done,
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

/// All writers of a PostgreSQL site take this transaction-scoped advisory lock first: the
/// same single-writer order SQLite's `BEGIN IMMEDIATE` gives, across every receiver process,
/// so token use counts, the pending queue and the audit log stay exact.
const PG_WRITE_LOCK: i64 = 0x7465_7468_6572; // "tether"

impl Pg {
    fn connect(t: &PgTarget) -> Result<Pg> {
        let mut cfg: tokio_postgres::Config = t
            .url
            .parse()
            .map_err(|e| Error::Other(format!("invalid database URL: {e}")))?;
        if let Some(pw) = &t.password {
            cfg.password(pw);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("tether-receiver");
        }
        cfg.connect_timeout(Duration::from_secs(15));
        // Schema upgrades are idempotent: their "already exists" notices are noise.
        cfg.options("-c client_min_messages=warning");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("PostgreSQL client runtime: {e}")))?;
        let (client, conn) = rt.block_on(cfg.connect(tokio_postgres::NoTls))?;
        // The connection task runs whenever this runtime waits for an answer.
        rt.spawn(async move {
            let _ = conn.await;
        });
        Ok(Pg {
            rt,
            client,
            cache: HashMap::new(),
            queued: Vec::new(),
            in_job: false,
            sent: 0,
        })
    }

    fn prepare(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(st) = self.cache.get(sql) {
            return Ok(st.clone());
        }
        let st = self.rt.block_on(self.client.prepare(&pg_sql(sql)))?;
        if self.cache.len() > 256 {
            self.cache.clear();
        }
        self.cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Sends every queued statement and then `last` in one pipeline, waits for all answers,
    /// and returns `last`'s (or the first error: statements after a failed one fail too, as
    /// the transaction is then aborted).
    fn round_trip(&mut self, last: Op) -> Result<Outcome> {
        let mut outs = self.pipeline(vec![last])?;
        outs.pop()
            .ok_or_else(|| Error::Other("no answer from PostgreSQL".into()))
    }

    /// Sends every queued statement and then `ops` in one pipeline; returns the answers to
    /// `ops`, or the first error of any statement sent.
    fn pipeline(&mut self, ops: Vec<Op>) -> Result<Vec<Outcome>> {
        let n = ops.len();
        self.sent += 1;
        let mut all = std::mem::take(&mut self.queued);
        all.extend(ops);
        let args: Vec<Vec<PgArg>> = all
            .iter()
            .map(|op| match op {
                Op::Simple(_) => Vec::new(),
                Op::Execute(_, v) | Op::Query(_, v) => pg_args(v),
            })
            .collect();
        let client = &self.client;
        type Fut<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Outcome, tokio_postgres::Error>> + 'a>,
        >;
        let mut futs: Vec<Fut<'_>> = all
            .iter()
            .zip(&args)
            .map(|(op, a)| -> Fut<'_> {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    a.iter().map(|x| x as _).collect();
                match op {
                    Op::Simple(sql) => {
                        Box::pin(
                            async move { client.batch_execute(sql).await.map(|_| Outcome::Done) },
                        )
                    }
                    Op::Execute(st, _) => {
                        Box::pin(async move { client.execute(st, &refs).await.map(Outcome::Count) })
                    }
                    Op::Query(st, _) => {
                        Box::pin(async move { client.query(st, &refs).await.map(Outcome::Rows) })
                    }
                }
            })
            .collect();
        let mut outs: Vec<Option<Result<Outcome, tokio_postgres::Error>>> =
            futs.iter().map(|_| None).collect();
        // Polled in order, so the requests leave in order (each is sent on its first poll).
        self.rt.block_on(std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
                if o.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(r) => *o = Some(r),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        }));
        drop(futs);
        let mut answers = Vec::with_capacity(n);
        let skip = outs.len() - n;
        for (i, o) in outs.into_iter().enumerate() {
            let o = o.ok_or_else(|| Error::Other("no answer from PostgreSQL".into()))??;
            if i >= skip {
                answers.push(o);
            }
        }
        Ok(answers)
    }
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

    /// Runs statements without parameters (schema, transaction control).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(_) => {
                self.pg().round_trip(Op::Simple(pg_sql(sql)))?;
                Ok(())
            }
        }
    }

    /// Starts the one write transaction the site allows at a time.
    pub fn begin_write(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Inner::Postgres(_) => {
                let mut pg = self.pg();
                let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})");
                if let Err(e) = pg.round_trip(Op::Simple(begin)) {
                    let _ = pg.round_trip(Op::Simple("ROLLBACK".into()));
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    /// Runs `f` as one job of a write transaction: a savepoint around it, so an `Err` undoes
    /// only this job's changes. On PostgreSQL the savepoint travels with the job's first
    /// statement and its release with the job's deferred writes, so a job that reads twice
    /// and then writes costs three round trips whatever the number of its writes.
    pub fn job<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E>,
    ) -> Result<R, E> {
        if let Inner::Sqlite(c) = &self.inner {
            c.execute_batch("SAVEPOINT job").map_err(Error::from)?;
            return match f(self) {
                Ok(r) => {
                    c.execute_batch("RELEASE job").map_err(Error::from)?;
                    Ok(r)
                }
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK TO job; RELEASE job");
                    Err(e)
                }
            };
        }
        let (sp, sent) = {
            let mut pg = self.pg();
            pg.in_job = true;
            pg.queued.push(Op::Simple("SAVEPOINT job".into()));
            (pg.queued.len() - 1, pg.sent)
        };
        let r = f(self);
        let mut pg = self.pg();
        pg.in_job = false;
        // Nothing sent since the savepoint was queued: nothing of this job reached the
        // server, and what precedes the savepoint in the queue (the last job's release) stays.
        let untouched = pg.sent == sent;
        match r {
            Ok(v) if untouched && pg.queued.len() == sp + 1 => {
                pg.queued.truncate(sp);
                Ok(v)
            }
            Ok(v) if pg.queued.is_empty() => {
                // Nothing left to learn the fate of: the release rides with the next statement.
                pg.queued.push(Op::Simple("RELEASE job".into()));
                Ok(v)
            }
            Ok(v) => match pg.round_trip(Op::Simple("RELEASE job".into())) {
                Ok(_) => Ok(v),
                Err(e) => {
                    let _ = pg.round_trip(Op::Simple("ROLLBACK TO job; RELEASE job".into()));
                    Err(E::from(e))
                }
            },
            Err(e) if untouched => {
                pg.queued.truncate(sp);
                Err(e)
            }
            Err(e) => {
                pg.queued.clear();
                let _ = pg.round_trip(Op::Simple("ROLLBACK TO job; RELEASE job".into()));
                Err(e)
            }
        }
    }

    /// Commits the write transaction. On PostgreSQL, COMMIT of a transaction that an error
    /// aborted rolls back without an error of its own: the `SELECT 1` in front of it fails
    /// then, so a lost batch is never reported as committed.
    pub fn commit(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch("COMMIT")?),
            Inner::Postgres(_) => {
                self.pg()
                    .round_trip(Op::Simple("SELECT 1; COMMIT".into()))?;
                Ok(())
            }
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
            Inner::Postgres(_) => {
                let mut pg = self.pg();
                let st = pg.prepare(sql)?;
                match pg.round_trip(Op::Execute(st, vals))? {
                    Outcome::Count(n) => Ok(n as usize),
                    _ => Ok(0),
                }
            }
        }
    }

    /// A write whose row count nobody needs. Inside a [`Connection::job`] on PostgreSQL it
    /// is sent with the job's next statement or at its end (its error then fails the job);
    /// everywhere else it runs at once.
    pub fn defer<P: Params>(&self, sql: &str, params: P) -> Result<()> {
        if let Inner::Postgres(_) = &self.inner {
            let mut pg = self.pg();
            if pg.in_job {
                let st = pg.prepare(sql)?;
                pg.queued.push(Op::Execute(st, params.values()));
                return Ok(());
            }
        }
        self.execute(sql, params).map(|_| ())
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
            Inner::Postgres(_) => {
                let mut pg = self.pg();
                let st = pg.prepare(sql)?;
                match pg.round_trip(Op::Query(st, vals))? {
                    Outcome::Rows(rows) => rows.iter().map(from_pg_row).collect(),
                    _ => Ok(Vec::new()),
                }
            }
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
    pub fn query_all(&self, queries: Vec<(&str, Vec<Value>)>) -> Result<Vec<Vec<Row>>> {
        match &self.inner {
            Inner::Sqlite(_) => queries
                .into_iter()
                .map(|(sql, vals)| self.query(sql, vals))
                .collect(),
            Inner::Postgres(_) => {
                let mut pg = self.pg();
                let mut ops = Vec::with_capacity(queries.len());
                for (sql, vals) in queries {
                    ops.push(Op::Query(pg.prepare(sql)?, vals));
                }
                pg.pipeline(ops)?
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Rows(rows) => rows.iter().map(from_pg_row).collect(),
                        _ => Ok(Vec::new()),
                    })
                    .collect()
            }
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

/// A value bound to whatever type the server inferred for its parameter.
#[derive(Debug)]
struct PgArg(Value);

fn pg_args(vals: &[Value]) -> Vec<PgArg> {
    vals.iter().cloned().map(PgArg).collect()
}

impl tokio_postgres::types::ToSql for PgArg {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use tokio_postgres::types::{IsNull, Type};
        let bad = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {:?} as {ty}", self.0).into()
        };
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i).map_err(|_| bad())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i).map_err(|_| bad())?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(bad()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(bad()),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                Type::INT8 => s.parse::<i64>().map_err(|_| bad())?.to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(bad()),
            },
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn from_pg_row(r: &tokio_postgres::Row) -> Result<Row> {
    use tokio_postgres::types::Type;
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|x| Value::Int(x as i64)),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|x| Value::Int(x as i64)),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|x| Value::Int(x as i64)),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|x| Value::Real(x as f64)),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref t => {
                return Err(Error::Other(format!(
                    "column {} has unsupported type {t}",
                    col.name()
                )))
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row { values })
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
