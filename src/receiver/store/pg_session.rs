//! The PostgreSQL side of [`super::sql::Connection`]: an asynchronous client driven by a
//! runtime of its own, so that several statements leave before the first answer arrives
//! (pipelining). Inside a writer job, writes whose row counts nobody needs are queued and
//! go out in front of the next statement that needs an answer: a job's savepoint travels with
//! its first read, and its writes and release with the next job's first read (or the commit).
//! A queued write that fails fails its own job only: that job is rolled back to its savepoint
//! and what was sent after it is sent again.
use std::collections::HashMap;
use std::time::Duration;

use super::sql::{pg_sql, Error, PgTarget, Result, Row, Value};

/// All writers of a PostgreSQL site take this transaction-scoped advisory lock first: the
/// same single-writer order SQLite's `BEGIN IMMEDIATE` gives, across every receiver process,
/// so token use counts, the pending queue and the audit log stay exact.
const PG_WRITE_LOCK: i64 = 0x7465_7468_6572; // "tether"

/// A job of the current write transaction (see [`super::sql::Connection::job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobId(pub(super) u64);

/// Where a job's statements start in the queue, and how many pipelines had been sent then.
pub(super) struct JobMark {
    id: JobId,
    savepoint: usize,
    sent: u64,
}

pub(super) struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    cache: HashMap<String, tokio_postgres::Statement>,
    /// Statements not sent yet, oldest first.
    queued: Vec<Queued>,
    /// The job running now (0: none; then nothing is queued).
    job: u64,
    /// The last job number given out.
    jobs: u64,
    /// Pipelines sent so far (tells whether a job reached the server).
    sent: u64,
    /// Jobs that had returned when one of their queued writes failed.
    failed: Vec<(u64, Error)>,
}

struct Queued {
    op: Op,
    /// The job the statement belongs to (0: none).
    job: u64,
    /// Whether the caller waits for its answer.
    answer: bool,
}

pub(super) enum Op {
    Simple(String),
    Execute(tokio_postgres::Statement, Vec<Value>),
    Query(tokio_postgres::Statement, Vec<Value>),
}

pub(super) enum Outcome {
    Done,
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

impl JobMark {
    pub(super) fn id(&self) -> JobId {
        self.id
    }
}

impl Pg {
    pub(super) fn connect(t: &PgTarget) -> Result<Pg> {
        let cfg = config(t)?;
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
            job: 0,
            jobs: 0,
            sent: 0,
            failed: Vec::new(),
        })
    }

    /// Whether the connection has ended. Its task learns of a dropped socket only while
    /// the runtime runs; a yield lets the runtime look at the socket once.
    pub(super) fn is_closed(&mut self) -> bool {
        self.rt.block_on(tokio::task::yield_now());
        self.client.is_closed()
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

    pub(super) fn simple(&mut self, sql: &str) -> Result<()> {
        self.pipeline(vec![Op::Simple(pg_sql(sql))]).map(|_| ())
    }

    pub(super) fn execute(&mut self, sql: &str, vals: Vec<Value>) -> Result<u64> {
        let st = self.prepare(sql)?;
        match self.pipeline(vec![Op::Execute(st, vals)])?.pop() {
            Some(Outcome::Count(n)) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Queues a write inside a job (true), or tells the caller to run it now (false).
    pub(super) fn defer(&mut self, sql: &str, vals: Vec<Value>) -> Result<bool> {
        if self.job == 0 {
            return Ok(false);
        }
        let st = self.prepare(sql)?;
        self.queued.push(Queued {
            op: Op::Execute(st, vals),
            job: self.job,
            answer: false,
        });
        Ok(true)
    }

    /// The rows of each query, all sent in one pipeline.
    pub(super) fn query_all(&mut self, queries: &[(String, Vec<Value>)]) -> Result<Vec<Vec<Row>>> {
        let ops = self.query_ops(queries)?;
        self.pipeline(ops)?
            .into_iter()
            .map(|o| rows(Some(o)))
            .collect()
    }

    fn query_ops(&mut self, queries: &[(String, Vec<Value>)]) -> Result<Vec<Op>> {
        queries
            .iter()
            .map(|(sql, vals)| Ok(Op::Query(self.prepare(sql)?, vals.clone())))
            .collect()
    }

    /// Begins the write transaction and, in the same round trip, runs `reads` under its lock.
    pub(super) fn begin_write(&mut self, reads: &[(String, Vec<Value>)]) -> Result<Vec<Vec<Row>>> {
        // Left over only if a job panicked half-way (the writer then rolled back).
        self.job = 0;
        self.queued.clear();
        self.failed.clear();
        let mut ops = vec![Op::Simple(format!(
            "BEGIN; SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"
        ))];
        ops.extend(self.query_ops(reads)?);
        match self.pipeline(ops) {
            Ok(outcomes) => outcomes
                .into_iter()
                .skip(1)
                .map(|o| rows(Some(o)))
                .collect(),
            Err(e) => {
                let _ = self.simple("ROLLBACK");
                Err(e)
            }
        }
    }

    /// COMMIT of a transaction that an error aborted rolls back without an error of its own:
    /// the `SELECT 1` in front of it fails then, so a lost batch is never reported as
    /// committed. Queued writes go first; one that fails fails only its job.
    pub(super) fn commit(&mut self) -> Result<()> {
        self.simple("SELECT 1; COMMIT")
    }

    /// Rolls back the write transaction; what was queued is dropped unsent.
    pub(super) fn rollback(&mut self) -> Result<()> {
        self.job = 0;
        self.queued.clear();
        self.failed.clear();
        self.simple("ROLLBACK")
    }

    pub(super) fn start_job(&mut self) -> JobMark {
        self.jobs += 1;
        self.job = self.jobs;
        self.queued.push(Queued {
            op: Op::Simple("SAVEPOINT job".into()),
            job: self.job,
            answer: false,
        });
        JobMark {
            id: JobId(self.job),
            savepoint: self.queued.len() - 1,
            sent: self.sent,
        }
    }

    pub(super) fn end_job<R, E>(
        &mut self,
        m: JobMark,
        r: std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.job = 0;
        // Nothing sent since the savepoint was queued: nothing of this job reached the
        // server, and what precedes the savepoint in the queue (earlier jobs') stays.
        let untouched = self.sent == m.sent;
        match r {
            Ok(v) if untouched && self.queued.len() == m.savepoint + 1 => {
                self.queued.truncate(m.savepoint);
                Ok(v)
            }
            Ok(v) => {
                // The release rides with the job's writes in the next pipeline.
                self.queued.push(Queued {
                    op: Op::Simple("RELEASE job".into()),
                    job: m.id.0,
                    answer: false,
                });
                Ok(v)
            }
            Err(e) if untouched => {
                self.queued.truncate(m.savepoint);
                Err(e)
            }
            Err(e) => {
                // Everything queued is this job's (any pipeline sends the whole queue).
                self.queued.clear();
                let _ = self.simple("ROLLBACK TO job; RELEASE job");
                Err(e)
            }
        }
    }

    /// The error that failed job `id` after it had returned, if one did.
    pub(super) fn job_failure(&mut self, id: JobId) -> Option<Error> {
        let i = self.failed.iter().position(|(j, _)| *j == id.0)?;
        Some(self.failed.swap_remove(i).1)
    }

    /// Sends the queue and then `ops` in one pipeline; returns the answers to `ops`, or
    /// the error of the first statement that failed, if it is the caller's. A failed write
    /// of an earlier job (one that had returned) fails that job alone: it is rolled back to
    /// its savepoint, the innermost one then, and what followed it is sent again.
    fn pipeline(&mut self, ops: Vec<Op>) -> Result<Vec<Outcome>> {
        let own = self.job;
        let mut all = std::mem::take(&mut self.queued);
        all.extend(ops.into_iter().map(|op| Queued {
            op,
            job: own,
            answer: true,
        }));
        loop {
            let results = self.send(&all);
            let mut answers = Vec::new();
            let mut failure = None;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(o) if all[i].answer => answers.push(o),
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some((i, e));
                        break;
                    }
                }
            }
            let Some((i, e)) = failure else {
                return Ok(answers);
            };
            let culprit = all[i].job;
            if culprit == 0 || culprit == own {
                return Err(e.into());
            }
            self.failed.push((culprit, e.into()));
            let undo = [Queued {
                op: Op::Simple("ROLLBACK TO job; RELEASE job".into()),
                job: 0,
                answer: false,
            }];
            if let Some(Err(e)) = self.send(&undo).pop() {
                return Err(e.into());
            }
            all = all
                .into_iter()
                .skip(i)
                .filter(|q| q.job != culprit)
                .collect();
        }
    }

    /// One pipeline: every request leaves before the first answer is awaited.
    fn send(&mut self, ops: &[Queued]) -> Vec<std::result::Result<Outcome, tokio_postgres::Error>> {
        self.sent += 1;
        let args: Vec<Vec<PgArg>> = ops
            .iter()
            .map(|q| match &q.op {
                Op::Simple(_) => Vec::new(),
                Op::Execute(_, v) | Op::Query(_, v) => pg_args(v),
            })
            .collect();
        let client = &self.client;
        let mut futs: Vec<Answer<'_, Outcome>> = ops
            .iter()
            .zip(&args)
            .map(|(q, a)| -> Answer<'_, Outcome> {
                let refs = arg_refs(a);
                match &q.op {
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
        self.rt.block_on(in_order(&mut futs))
    }
}

/// A request's answer on its way back.
pub(super) type Answer<'a, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'a,
    >,
>;

/// Arguments as tokio-postgres takes them.
pub(super) fn arg_refs(args: &[PgArg]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    args.iter().map(|x| x as _).collect()
}

/// The connection settings of a site's database.
pub(super) fn config(t: &PgTarget) -> Result<tokio_postgres::Config> {
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
    cfg.options(session_options(cfg.get_options()));
    Ok(cfg)
}

/// The session settings the receiver starts with, then the `options` of the database URL,
/// if it has any: the server applies them in order, so the operator's settings win.
/// - Schema upgrades are idempotent: their "already exists" notices are noise.
/// - No JIT: the planner compiles reads it costs high (the scheduler's sync of every host),
///   and on a site that was never analyzed, or one of a few thousand hosts, compiling takes
///   longer than running the read (see the receiver's README, *State on PostgreSQL*).
fn session_options(url_options: Option<&str>) -> String {
    let ours = "-c client_min_messages=warning -c jit=off";
    match url_options.map(str::trim).filter(|o| !o.is_empty()) {
        Some(theirs) => format!("{ours} {theirs}"),
        None => ours.to_string(),
    }
}

/// Awaits every future, polling them in order, so requests leave in order (each is sent on
/// its first poll) and all leave before the first answer is awaited: one pipeline.
pub(super) async fn in_order<T>(
    futs: &mut [std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>],
) -> Vec<T> {
    let mut outs: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
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
    })
    .await;
    outs.into_iter().flatten().collect()
}

pub(super) fn rows(outcome: Option<Outcome>) -> Result<Vec<Row>> {
    match outcome {
        Some(Outcome::Rows(rows)) => rows.iter().map(from_pg_row).collect(),
        _ => Ok(Vec::new()),
    }
}

impl Pg {
    pub(super) fn query(&mut self, sql: &str, vals: Vec<Value>) -> Result<Vec<Row>> {
        let st = self.prepare(sql)?;
        rows(self.pipeline(vec![Op::Query(st, vals)])?.pop())
    }
}

/// A value bound to whatever type the server inferred for its parameter.
#[derive(Debug)]
pub(super) struct PgArg(Value);

pub(super) fn pg_args(vals: &[Value]) -> Vec<PgArg> {
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

pub(super) fn from_pg_row(r: &tokio_postgres::Row) -> Result<Row> {
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
    Ok(Row::new(values))
}
