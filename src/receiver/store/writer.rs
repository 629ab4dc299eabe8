//! The server's connection: one writer thread that commits jobs in groups (one fsync for
//! many registrations), and a read connection beside it.
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::pg_async::AsyncPg;
use super::*;

type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Turns a job's result into its finisher once the job's fate is known: on PostgreSQL a
/// write it queued may still fail it after it returned (see `Connection::job`).
type Settle = Box<dyn FnOnce(Option<sql::Error>) -> Finisher + Send>;
type Run = Box<dyn FnOnce(&Connection, Option<Prefetched>) -> (sql::JobId, Settle) + Send>;

struct Job {
    prefetch: Option<Prefetch>,
    run: Run,
}

/// The rows of each of a [`Prefetch`]'s reads.
pub type Prefetched = Vec<Vec<sql::Row>>;

/// See [`Prefetch::keys`].
pub type KeysOf = Box<dyn Fn(&[Vec<sql::Row>]) -> Vec<String> + Send>;

/// Reads a write job has done when its batch begins: on PostgreSQL the reads of all the
/// batch's leading jobs go out with BEGIN and the lock, in one round trip, instead of one
/// round trip per job under the lock.
pub struct Prefetch {
    pub reads: Vec<(String, Vec<sql::Value>)>,
    /// The keys (e.g. `host:NAME`) of every row the job may read or write, given what its
    /// reads returned. A job gets its rows only while its keys are disjoint from those of
    /// every job before it in the batch: then none of their writes can have changed them.
    pub keys: KeysOf,
}

impl Prefetch {
    /// These reads and then `more`; the keys are still worked out from this prefetch's
    /// own rows, which come first.
    pub fn also(mut self, more: Vec<(String, Vec<sql::Value>)>) -> Prefetch {
        self.reads.extend(more);
        self
    }
}

/// Read connections for the server (WAL readers never block the writer) and one writer
/// thread that commits batches of jobs in a single transaction: each fsync then covers many
/// registrations (group commit), which is what makes durable commits fast.
#[derive(Clone)]
pub struct Db {
    loc: Location,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// PostgreSQL: the client for reads awaited on the server's runtime (see `query_all`).
    shared_reads: Option<Arc<AsyncPg>>,
    tx: mpsc::SyncSender<Job>,
}

#[derive(Debug, thiserror::Error)]
#[error("database error: {0}")]
pub struct DbError(pub String);

pub const OVERLOADED: &str = "write queue full";

impl DbError {
    pub fn overloaded(&self) -> bool {
        self.0 == OVERLOADED
    }
}

impl From<sql::Error> for DbError {
    fn from(e: sql::Error) -> Self {
        DbError(e.to_string())
    }
}

impl Db {
    pub fn open(loc: &Location) -> Result<Db, DbError> {
        let wc = open(loc)?;
        migrate(&wc)?;
        let mut wc = as_writer(wc, loc)?;
        // PostgreSQL: the writer's commits return before their WAL is flushed, so it goes on
        // with the next batch (under the advisory lock) while a flusher connection waits for
        // the flush; nobody is answered before that (see `flusher_loop`). Durability is
        // unchanged: an answer still means the write is on disk.
        let flusher = match loc {
            Location::Postgres(_) => {
                let fc = open(loc)?;
                let (ftx, frx) = mpsc::channel::<Vec<Finisher>>();
                let floc = loc.clone();
                std::thread::Builder::new()
                    .name("db-flusher".into())
                    .spawn(move || flusher_loop(fc, &floc, frx))
                    .map_err(|e| DbError(e.to_string()))?;
                Some(ftx)
            }
            Location::Sqlite(_) => None,
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(4096);
        let wloc = loc.clone();
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(&mut wc, &wloc, rx, flusher))
            .map_err(|e| DbError(e.to_string()))?;
        Ok(Db {
            loc: loc.clone(),
            readers: Arc::new(Mutex::new(Vec::new())),
            shared_reads: match loc {
                Location::Postgres(t) => Some(Arc::new(AsyncPg::new(t.clone()))),
                Location::Sqlite(_) => None,
            },
            tx,
        })
    }

    /// Independent reads for a request on the server's runtime, in one round trip on
    /// PostgreSQL: there they are awaited on a client shared by all requests, so the worker
    /// thread serves other requests meanwhile (see `pg_async`); on SQLite they run as `read`.
    /// Only a multi-threaded runtime uses the shared client: its connection task runs on the
    /// runtime that connected it, and only a multi-threaded one drives its tasks while no
    /// caller blocks on it (a current-thread runtime's task would stall between calls).
    pub async fn query_all(
        &self,
        queries: Vec<(String, Vec<sql::Value>)>,
    ) -> Result<Vec<Vec<sql::Row>>, DbError> {
        let Some(pg) = self
            .shared_reads
            .as_ref()
            .filter(|_| on_multi_thread_runtime())
        else {
            return self.read_now(|c| c.query_all(&queries));
        };
        let started = std::time::Instant::now();
        let r = pg.query_all(&queries).await;
        crate::receiver::metrics::db_op(started.elapsed().as_secs_f64());
        Ok(r?)
    }

    /// Runs a read-only closure on a pooled connection (blocking; call from spawn_blocking).
    pub fn read<R>(&self, f: impl Fn(&Connection) -> sql::Result<R>) -> Result<R, DbError> {
        // The PostgreSQL client drives its own runtime, which must not start on a thread
        // that is driving the server's: hand this worker's tasks elsewhere meanwhile.
        let in_runtime = matches!(self.loc, Location::Postgres(_)) && on_multi_thread_runtime();
        if in_runtime {
            tokio::task::block_in_place(|| self.read_now(f))
        } else {
            self.read_now(f)
        }
    }

    /// The database's dialect.
    pub fn backend(&self) -> Backend {
        match self.loc {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one self-contained statement (atomic on its own, e.g. the scheduler's claim on
    /// PostgreSQL) on a pooled connection, outside the writer and its site-wide lock.
    pub fn unlocked<R>(&self, f: impl Fn(&Connection) -> sql::Result<R>) -> Result<R, DbError> {
        self.read(f)
    }

    fn read_now<R>(&self, f: impl Fn(&Connection) -> sql::Result<R>) -> Result<R, DbError> {
        let started = std::time::Instant::now();
        let r = self.read_pooled(f);
        crate::receiver::metrics::db_op(started.elapsed().as_secs_f64());
        r
    }

    /// A read that failed because the server dropped its connection (a restart, a failover,
    /// a terminated backend) runs once more on a new connection. The pool is emptied then:
    /// its other sessions have most likely been dropped alike, and a second pooled one would
    /// fail the retry too.
    fn read_pooled<R>(&self, f: impl Fn(&Connection) -> sql::Result<R>) -> Result<R, DbError> {
        let mut retried = false;
        loop {
            let pooled = match retried {
                false => self.readers.lock().ok().and_then(|mut v| v.pop()),
                true => None,
            };
            let conn = match pooled {
                Some(c) => c,
                None => open(&self.loc)?,
            };
            let r = f(&conn);
            let lost = match &r {
                Err(e) => e.is_connection_lost() || conn.is_broken(),
                Ok(_) => false,
            };
            if lost {
                if !retried {
                    retried = true;
                    let stale = self.readers.lock().map(|mut v| std::mem::take(&mut *v));
                    drop(stale);
                    continue;
                }
            } else if let Ok(mut v) = self.readers.lock() {
                if v.len() < 16 {
                    v.push(conn);
                }
            }
            return Ok(r?);
        }
    }

    /// Runs `f` inside the writer's current transaction, isolated by a savepoint: an `Err`
    /// undoes only this job's changes. The result arrives after the batch has committed.
    pub async fn write<R, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<Result<R, E>, DbError>
    where
        R: Send + 'static,
        E: Send + 'static + From<sql::Error>,
    {
        self.submit(None, move |c, _| f(c)).await
    }

    /// [`Db::write`] for a job that reads `prefetch` first: `f` gets their rows, or `None`
    /// when it must read them itself (another job of the batch came first, see [`Prefetch`]).
    pub async fn write_prefetched<R, E>(
        &self,
        prefetch: Prefetch,
        f: impl FnOnce(&Connection, Option<Prefetched>) -> Result<R, E> + Send + 'static,
    ) -> Result<Result<R, E>, DbError>
    where
        R: Send + 'static,
        E: Send + 'static + From<sql::Error>,
    {
        self.submit(Some(prefetch), f).await
    }

    async fn submit<R, E>(
        &self,
        prefetch: Option<Prefetch>,
        f: impl FnOnce(&Connection, Option<Prefetched>) -> Result<R, E> + Send + 'static,
    ) -> Result<Result<R, E>, DbError>
    where
        R: Send + 'static,
        E: Send + 'static + From<sql::Error>,
    {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let run: Run = Box::new(move |c: &Connection, pre: Option<Prefetched>| {
            let (id, result) = c.job(|c| f(c, pre));
            let settle: Settle = Box::new(move |failed: Option<sql::Error>| {
                let result = match failed {
                    Some(e) => Err(E::from(e)),
                    None => result,
                };
                Box::new(move |commit: Result<(), String>| {
                    let _ = otx.send(commit.map(|_| result));
                }) as Finisher
            });
            (id, settle)
        });
        let job = Job { prefetch, run };
        // Never block the async worker: a full queue means overload, reported as such.
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => DbError(OVERLOADED.into()),
            mpsc::TrySendError::Disconnected(_) => DbError("writer thread stopped".into()),
        })?;
        match orx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(DbError(e)),
            Err(_) => Err(DbError(
                "database unavailable (locked or writer stopped)".into(),
            )),
        }
    }
}

/// Whether the caller runs inside a multi-threaded tokio runtime (the server's).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The settings row a flusher rewrites (its value is meaningless): one of 64 by process id,
/// so the flushers of several receivers rarely wait for each other's row lock and their
/// commits can share one WAL flush.
fn flush_key() -> String {
    format!("writer_flush_{}", std::process::id() % 64)
}

/// Answers committed batches once their WAL is on disk. The flusher's own transaction writes
/// one row and commits synchronously (a transaction that writes nothing would not wait), so
/// PostgreSQL flushes the WAL up to its commit record, which lies after every commit the
/// writer made before handing the batch over: one flush covers them all.
fn flusher_loop(mut c: Connection, loc: &Location, rx: mpsc::Receiver<Vec<Finisher>>) {
    let flush = format!(
        "INSERT INTO settings(key, value) VALUES('{}', '') \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        flush_key()
    );
    while let Ok(mut waiting) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            waiting.extend(more);
        }
        let mut r = c.execute_batch(&flush);
        if let Err(e) = &r {
            let lost = e.is_connection_lost();
            let _ = c.execute_batch("ROLLBACK");
            // A dropped connection is replaced, and the flush waited for on the new one:
            // its commit record, too, lies after every commit of the batch.
            if lost || c.is_broken() {
                if let Ok(n) = open(loc) {
                    c = n;
                    r = c.execute_batch(&flush);
                }
            }
        }
        let r = r.map_err(|e| format!("waiting for the commit to reach disk: {e}"));
        for f in waiting {
            f(r.clone());
        }
    }
}

/// `c` set up as the writer's connection: on PostgreSQL its commits do not wait for the WAL
/// flush (the flusher does, see `Db::open`).
fn as_writer(c: Connection, loc: &Location) -> sql::Result<Connection> {
    if let Location::Postgres(_) = loc {
        c.execute_batch("SET synchronous_commit = off")?;
    }
    Ok(c)
}

/// Replaces a writer connection the server dropped (a restart, a failover, a terminated
/// backend), so the writes after it go through instead of failing until a restart.
fn renew_writer(c: &mut Connection, loc: &Location, failure: Option<&sql::Error>) {
    if !failure.is_some_and(sql::Error::is_connection_lost) && !c.is_broken() {
        return;
    }
    match open(loc).and_then(|n| as_writer(n, loc)) {
        Ok(n) => {
            tracing::warn!("the database closed the writer's connection; reconnected");
            *c = n;
        }
        Err(e) => tracing::error!("the database closed the writer's connection: {e}"),
    }
}

fn writer_loop(
    c: &mut Connection,
    loc: &Location,
    rx: mpsc::Receiver<Job>,
    flusher: Option<mpsc::Sender<Vec<Finisher>>>,
) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let mut finishers = Vec::with_capacity(jobs.len());
        // The leading jobs' reads go with BEGIN (see `Prefetch`).
        let lead = jobs.iter().take_while(|j| j.prefetch.is_some()).count();
        let prefetches: Vec<Prefetch> = jobs[..lead]
            .iter_mut()
            .filter_map(|j| j.prefetch.take())
            .collect();
        let (reads, which) = distinct_reads(&prefetches);
        let mut begin = c.begin_write_reading(&reads);
        for _ in 0..3 {
            let Err(e) = &begin else { break };
            renew_writer(c, loc, Some(e));
            begin = c.begin_write_reading(&reads);
        }
        let rows = match begin {
            Ok(rows) => which.iter().filter_map(|&i| rows.get(i).cloned()).collect(),
            Err(e) => {
                // Another process held the lock beyond busy_timeout several times: fail this
                // batch (dropping a job closes its channel, and its caller reports the
                // database as unavailable), and keep serving.
                tracing::error!("database busy, dropping {} writes: {e}", jobs.len());
                continue;
            }
        };
        let mut handed = hand_out(&prefetches, rows).into_iter();
        let mut panicked = false;
        let mut settles = Vec::with_capacity(jobs.len());
        for j in jobs {
            // A panicking job (a bug) must not take the writer thread down with it: its
            // caller sees the database as unavailable, and the batch is rolled back so no
            // half-done job is committed.
            let pre = handed.next().flatten();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (j.run)(c, pre))) {
                Ok(s) => settles.push(s),
                Err(_) => panicked = true,
            }
        }
        let commit = if panicked {
            Err("a write job panicked; batch rolled back".to_string())
        } else {
            c.commit().map_err(|e| e.to_string())
        };
        for (id, settle) in settles {
            finishers.push(settle(c.job_failure(id)));
        }
        if commit.is_err() {
            let _ = c.rollback();
            renew_writer(c, loc, None);
        }
        crate::receiver::metrics::db_op(started.elapsed().as_secs_f64());
        match (&flusher, &commit) {
            (Some(fl), Ok(())) => {
                if let Err(mpsc::SendError(finishers)) = fl.send(finishers) {
                    for f in finishers {
                        f(Err("flusher thread stopped".into()));
                    }
                }
            }
            _ => {
                for f in finishers {
                    f(commit.clone());
                }
            }
        }
    }
}

/// The batch's prefetched reads, each distinct one once, and for every job's read in turn
/// the index of its distinct read. Jobs of one user read the same user row: sent once, it
/// costs the writer's serial round trip one statement per batch instead of one per job. All
/// of them run before any job, in one snapshot, so equal reads have equal rows.
fn distinct_reads(prefetches: &[Prefetch]) -> (Vec<(String, Vec<sql::Value>)>, Vec<usize>) {
    let mut distinct: Vec<(String, Vec<sql::Value>)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let which = prefetches
        .iter()
        .flat_map(|p| p.reads.iter())
        .map(|read| {
            *seen.entry(format!("{read:?}")).or_insert_with(|| {
                distinct.push(read.clone());
                distinct.len() - 1
            })
        })
        .collect();
    (distinct, which)
}

/// Each leading job's rows of the batch's prefetched `rows`, in order, as long as its keys
/// are disjoint from those of every job before it; from the first overlap on, `None` (those
/// jobs read for themselves and see the writes before them).
fn hand_out(prefetches: &[Prefetch], rows: Prefetched) -> Vec<Option<Prefetched>> {
    let mut seen = std::collections::HashSet::new();
    let mut rows = rows.into_iter();
    let mut clear = true;
    prefetches
        .iter()
        .map(|p| {
            let mine: Prefetched = rows.by_ref().take(p.reads.len()).collect();
            if !clear || mine.len() != p.reads.len() {
                clear = false;
                return None;
            }
            let keys = (p.keys)(&mine);
            clear = keys.iter().all(|k| !seen.contains(k));
            seen.extend(keys);
            clear.then_some(mine)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(keys: &'static [&'static str]) -> Prefetch {
        Prefetch {
            reads: vec![("SELECT 1".into(), Vec::new())],
            keys: Box::new(move |_| keys.iter().map(|k| k.to_string()).collect()),
        }
    }

    #[test]
    fn equal_reads_of_a_batch_go_out_once() {
        let read = |sql: &str, v: &str| (sql.to_string(), vec![sql::Value::Text(v.into())]);
        let job = |host: &str| Prefetch {
            reads: vec![read("SELECT host", host), read("SELECT user", "auto")],
            keys: Box::new(|_| Vec::new()),
        };
        let (distinct, which) = distinct_reads(&[job("a"), job("b"), job("a")]);
        assert_eq!(
            distinct,
            [
                read("SELECT host", "a"),
                read("SELECT user", "auto"),
                read("SELECT host", "b")
            ]
        );
        assert_eq!(which, [0, 1, 2, 1, 0, 1]);
    }

    #[test]
    fn rows_are_handed_out_until_the_first_overlap() {
        let ps = [
            asking(&["host:a", "uuid:1"]),
            asking(&["host:b", "uuid:2"]),
            asking(&["host:c", "uuid:1"]),
            asking(&["host:d", "uuid:4"]),
        ];
        let rows: Prefetched = (0..4)
            .map(|i| vec![sql::Row::new(vec![sql::Value::Int(i)])])
            .collect();
        let got = hand_out(&ps, rows);
        let firsts: Vec<Option<i64>> = got
            .iter()
            .map(|p| p.as_ref().map(|r| r[0][0].get::<_, i64>(0).unwrap()))
            .collect();
        // The third overlaps the first (uuid:1); the fourth follows it and must read itself.
        assert_eq!(firsts, [Some(0), Some(1), None, None]);
        // Fewer rows than reads (a failed batch start) hands out nothing.
        assert!(hand_out(&ps[..1], Vec::new()).iter().all(Option::is_none));
    }
}
