//! The receiver's SQLite database: schema, row types, queries, and the server's group-commit
//! writer. Durability: WAL with `synchronous=FULL`, so a registration the client saw succeed
//! survives a power cut. Admin commands open the same file concurrently; `busy_timeout` makes
//! them wait for each other instead of failing.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub const DB_FILE: &str = "receiver.db";

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(15))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(c)
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roles (
    name TEXT PRIMARY KEY, builtin INTEGER NOT NULL DEFAULT 0, permissions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL,
    contact_groups TEXT NOT NULL DEFAULT '[]', pw_version INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS contact_groups (name TEXT PRIMARY KEY, alias TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, contact_groups TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, folder TEXT NOT NULL, contact_groups TEXT NOT NULL DEFAULT '[]',
    site TEXT NOT NULL, cluster INTEGER NOT NULL DEFAULT 0, mode TEXT NOT NULL,
    address TEXT, agent_port INTEGER, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rules (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, match_labels TEXT NOT NULL,
    action TEXT NOT NULL, folder TEXT, hostname_label TEXT, reason TEXT,
    mode TEXT);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, secret_sha256 BLOB NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER,
    used_by_uuid TEXT, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS registrations (
    uuid TEXT PRIMARY KEY, host TEXT NOT NULL, mode TEXT NOT NULL,
    registered_at INTEGER NOT NULL, registered_by TEXT NOT NULL, revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS registrations_host ON registrations(host);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY, uuid TEXT NOT NULL, not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS certs_uuid ON certs(uuid);
CREATE TABLE IF NOT EXISTS pending (
    uuid TEXT PRIMARY KEY, user TEXT NOT NULL, csr TEXT NOT NULL, labels TEXT NOT NULL,
    status TEXT NOT NULL, host TEXT, folder TEXT, reason TEXT, agent_cert TEXT, mode TEXT,
    created_at INTEGER NOT NULL, decided_at INTEGER, source TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL,
    source TEXT NOT NULL, action TEXT NOT NULL, host TEXT, uuid TEXT,
    outcome TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS agent_data (
    host TEXT PRIMARY KEY, received_at INTEGER NOT NULL, via TEXT NOT NULL, data BLOB NOT NULL);
"#;

pub fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)
}

/// Opens an initialised site's database (`init` creates it).
pub fn open_db(dir: &Path) -> crate::error::Result<Connection> {
    let p = db_path(dir);
    if !p.exists() {
        return Err(
            Error::local_state(format!("no database at {}", p.display()))
                .hint("run tether-receiver init --dir DIR --site SITE first"),
        );
    }
    let c =
        open(&p).map_err(|e| Error::local_state(format!("cannot open {}: {e}", p.display())))?;
    migrate(&c)?;
    Ok(c)
}

/// Runs `f` in one write transaction on the site's database: all or nothing.
pub fn tx<R>(
    dir: &Path,
    f: impl FnOnce(&Connection) -> crate::error::Result<R>,
) -> crate::error::Result<R> {
    let mut c = open_db(dir)?;
    with_tx(&mut c, f)
}

/// Runs `f` on the site's database without a write transaction.
pub fn read<R>(
    dir: &Path,
    f: impl FnOnce(&Connection) -> crate::error::Result<R>,
) -> crate::error::Result<R> {
    let c = open_db(dir)?;
    f(&c)
}

pub fn now() -> i64 {
    crate::wire::certs::now_unix()
}

/// Runs `f` in an IMMEDIATE transaction (the write lock is taken up front, so two admin
/// commands never deadlock on a lock upgrade); commits on Ok, rolls back on Err.
pub fn with_tx<R, E: From<rusqlite::Error>>(
    c: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R, E>,
) -> Result<R, E> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let r = f(&tx)?;
    tx.commit()?;
    Ok(r)
}

// ---------- settings ----------

pub fn get_setting(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT value FROM settings WHERE key=?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

pub fn set_setting(c: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO settings(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

// ---------- rows ----------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub role: String,
    pub contact_groups: Vec<String>,
    #[serde(skip)]
    #[schemars(skip)]
    pub pw_hash: String,
    #[serde(skip)]
    #[schemars(skip)]
    pub pw_version: i64,
}

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: r.get(1)?,
        contact_groups: json_list(&r.get::<_, String>(2)?),
        pw_hash: r.get(3)?,
        pw_version: r.get(4)?,
    })
}

const USER_COLS: &str = "name, role, contact_groups, pw_hash, pw_version";

pub fn get_user(c: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE name=?1"),
        [name],
        user_row,
    )
    .optional()
}

pub fn list_users(c: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?;
    let rows = st.query_map([], user_row)?;
    rows.collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Role {
    pub name: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
}

fn role_row(r: &rusqlite::Row) -> rusqlite::Result<Role> {
    Ok(Role {
        name: r.get(0)?,
        builtin: r.get(1)?,
        permissions: json_list(&r.get::<_, String>(2)?),
    })
}

pub fn get_role(c: &Connection, name: &str) -> rusqlite::Result<Option<Role>> {
    c.query_row(
        "SELECT name, builtin, permissions FROM roles WHERE name=?1",
        [name],
        role_row,
    )
    .optional()
}

pub fn list_roles(c: &Connection) -> rusqlite::Result<Vec<Role>> {
    let mut st = c.prepare("SELECT name, builtin, permissions FROM roles ORDER BY name")?;
    let rows = st.query_map([], role_row)?;
    rows.collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Group {
    pub name: String,
    pub alias: String,
}

pub fn list_groups(c: &Connection) -> rusqlite::Result<Vec<Group>> {
    let mut st = c.prepare("SELECT name, alias FROM contact_groups ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok(Group {
            name: r.get(0)?,
            alias: r.get(1)?,
        })
    })?;
    rows.collect()
}

pub fn group_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(
        c.query_row("SELECT 1 FROM contact_groups WHERE name=?1", [name], |_| {
            Ok(())
        })
        .optional()?
        .is_some(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Folder {
    pub path: String,
    pub contact_groups: Vec<String>,
}

fn folder_row(r: &rusqlite::Row) -> rusqlite::Result<Folder> {
    Ok(Folder {
        path: r.get(0)?,
        contact_groups: json_list(&r.get::<_, String>(1)?),
    })
}

pub fn get_folder(c: &Connection, path: &str) -> rusqlite::Result<Option<Folder>> {
    c.query_row(
        "SELECT path, contact_groups FROM folders WHERE path=?1",
        [path],
        folder_row,
    )
    .optional()
}

pub fn list_folders(c: &Connection) -> rusqlite::Result<Vec<Folder>> {
    let mut st = c.prepare("SELECT path, contact_groups FROM folders ORDER BY path")?;
    let rows = st.query_map([], folder_row)?;
    rows.collect()
}

pub fn folder_groups_effective(c: &Connection, path: &str) -> rusqlite::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in folder_ancestry(path) {
        if let Some(f) = get_folder(c, &p)? {
            for g in f.contact_groups {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    Ok(out)
}

/// "/a/b" → ["/", "/a", "/a/b"].
pub fn folder_ancestry(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Host {
    pub name: String,
    pub folder: String,
    pub contact_groups: Vec<String>,
    pub site: String,
    pub cluster: bool,
    /// `pull-agent` or `push-agent`.
    pub mode: String,
    pub address: Option<String>,
    pub agent_port: Option<u16>,
}

fn host_row(r: &rusqlite::Row) -> rusqlite::Result<Host> {
    Ok(Host {
        name: r.get(0)?,
        folder: r.get(1)?,
        contact_groups: json_list(&r.get::<_, String>(2)?),
        site: r.get(3)?,
        cluster: r.get(4)?,
        mode: r.get(5)?,
        address: r.get(6)?,
        agent_port: r.get(7)?,
    })
}

const HOST_COLS: &str = "name, folder, contact_groups, site, cluster, mode, address, agent_port";

pub fn get_host(c: &Connection, name: &str) -> rusqlite::Result<Option<Host>> {
    c.query_row(
        &format!("SELECT {HOST_COLS} FROM hosts WHERE name=?1"),
        [name],
        host_row,
    )
    .optional()
}

pub fn list_hosts(c: &Connection) -> rusqlite::Result<Vec<Host>> {
    let mut st = c.prepare(&format!("SELECT {HOST_COLS} FROM hosts ORDER BY name"))?;
    let rows = st.query_map([], host_row)?;
    rows.collect()
}

pub fn put_host(c: &Connection, h: &Host) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO hosts(name, folder, contact_groups, site, cluster, mode, address, agent_port, created_at)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)
         ON CONFLICT(name) DO UPDATE SET folder=excluded.folder, contact_groups=excluded.contact_groups,
           site=excluded.site, cluster=excluded.cluster, mode=excluded.mode, address=excluded.address,
           agent_port=excluded.agent_port",
        params![
            h.name,
            h.folder,
            to_json(&h.contact_groups),
            h.site,
            h.cluster,
            h.mode,
            h.address,
            h.agent_port,
            now()
        ],
    )?;
    Ok(())
}

/// Contact groups that make a user a contact of the host: the host's own plus its folder's.
pub fn host_groups_effective(c: &Connection, h: &Host) -> rusqlite::Result<Vec<String>> {
    let mut g = folder_groups_effective(c, &h.folder)?;
    for x in &h.contact_groups {
        if !g.contains(x) {
            g.push(x.clone());
        }
    }
    Ok(g)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Registration {
    pub uuid: String,
    pub host: String,
    pub connection_mode: String,
    pub registered_at: i64,
    pub registered_by: String,
    pub revoked_at: Option<i64>,
    /// Latest expiry among the connection's certificates that are not revoked.
    pub cert_not_after: Option<i64>,
}

fn reg_row(r: &rusqlite::Row) -> rusqlite::Result<Registration> {
    Ok(Registration {
        uuid: r.get(0)?,
        host: r.get(1)?,
        connection_mode: r.get(2)?,
        registered_at: r.get(3)?,
        registered_by: r.get(4)?,
        revoked_at: r.get(5)?,
        cert_not_after: r.get(6)?,
    })
}

const REG_SELECT: &str =
    "SELECT r.uuid, r.host, r.mode, r.registered_at, r.registered_by, r.revoked_at,
    (SELECT MAX(not_after) FROM certs c WHERE c.uuid=r.uuid AND c.revoked_at IS NULL)
    FROM registrations r";

pub fn get_registration(c: &Connection, uuid: &str) -> rusqlite::Result<Option<Registration>> {
    c.query_row(&format!("{REG_SELECT} WHERE r.uuid=?1"), [uuid], reg_row)
        .optional()
}

pub fn registrations_of_host(c: &Connection, host: &str) -> rusqlite::Result<Vec<Registration>> {
    let mut st = c.prepare(&format!(
        "{REG_SELECT} WHERE r.host=?1 ORDER BY r.registered_at"
    ))?;
    let rows = st.query_map([host], reg_row)?;
    rows.collect()
}

pub fn list_registrations(c: &Connection) -> rusqlite::Result<Vec<Registration>> {
    let mut st = c.prepare(&format!("{REG_SELECT} ORDER BY r.host, r.registered_at"))?;
    let rows = st.query_map([], reg_row)?;
    rows.collect()
}

impl Registration {
    /// Live: not revoked and holding a certificate that has not expired.
    pub fn live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.cert_not_after.is_some_and(|t| t > now)
    }
}

/// Records a registration of `uuid` for `host` and its first certificate.
pub fn insert_registration(
    c: &Connection,
    uuid: &str,
    host: &str,
    mode: &str,
    by: &str,
    serial: &str,
    not_after: i64,
) -> rusqlite::Result<()> {
    let t = now();
    // The same UUID registering again (e.g. the controller re-ran registration) replaces its row.
    c.execute(
        "INSERT INTO registrations(uuid, host, mode, registered_at, registered_by, revoked_at)
         VALUES(?1,?2,?3,?4,?5,NULL)
         ON CONFLICT(uuid) DO UPDATE SET host=excluded.host, mode=excluded.mode,
            registered_at=excluded.registered_at, registered_by=excluded.registered_by, revoked_at=NULL",
        params![uuid, host, mode, t, by],
    )?;
    insert_cert(c, serial, uuid, not_after)
}

pub fn insert_cert(
    c: &Connection,
    serial: &str,
    uuid: &str,
    not_after: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO certs(serial, uuid, not_after, issued_at) VALUES(?1,?2,?3,?4)",
        params![serial, uuid, not_after, now()],
    )?;
    Ok(())
}

/// Revokes a registration and every certificate issued to its UUID.
pub fn revoke_registration(c: &Connection, uuid: &str) -> rusqlite::Result<usize> {
    let t = now();
    let n = c.execute(
        "UPDATE registrations SET revoked_at=?2 WHERE uuid=?1 AND revoked_at IS NULL",
        params![uuid, t],
    )?;
    c.execute(
        "UPDATE certs SET revoked_at=?2 WHERE uuid=?1 AND revoked_at IS NULL",
        params![uuid, t],
    )?;
    Ok(n)
}

/// State of a client certificate serial: None = never issued here.
pub fn cert_state(c: &Connection, serial: &str) -> rusqlite::Result<Option<(String, Option<i64>)>> {
    c.query_row(
        "SELECT uuid, revoked_at FROM certs WHERE serial=?1",
        [serial],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

// ---------- audit ----------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub host: Option<String>,
    pub uuid: Option<String>,
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub actor: String,
    pub source: String,
    pub action: String,
    pub host: Option<String>,
    pub uuid: Option<String>,
    pub outcome: String,
    pub detail: String,
}

pub fn audit(c: &Connection, a: &Audit) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO audit(ts, actor, source, action, host, uuid, outcome, detail)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
        params![
            now(),
            a.actor,
            a.source,
            a.action,
            a.host,
            a.uuid,
            a.outcome,
            a.detail
        ],
    )?;
    Ok(())
}

pub fn list_audit(
    c: &Connection,
    host: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut st = c.prepare(
        "SELECT id, ts, actor, source, action, host, uuid, outcome, detail FROM audit
         WHERE (?1 IS NULL OR host=?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![host, limit], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            ts: r.get(1)?,
            actor: r.get(2)?,
            source: r.get(3)?,
            action: r.get(4)?,
            host: r.get(5)?,
            uuid: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        })
    })?;
    let mut v: Vec<AuditEntry> = rows.collect::<rusqlite::Result<_>>()?;
    v.reverse();
    Ok(v)
}

// ---------- the server's connections ----------

type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Finisher + Send>;

/// Read connections for the server (WAL readers never block the writer) and one writer
/// thread that commits batches of jobs in a single transaction: each fsync then covers many
/// registrations (group commit), which is what makes durable commits fast.
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    readers: Arc<Mutex<Vec<Connection>>>,
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

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string())
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut wc = open(path)?;
        migrate(&wc)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(4096);
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(&mut wc, rx))
            .map_err(|e| DbError(e.to_string()))?;
        Ok(Db {
            path: path.to_path_buf(),
            readers: Arc::new(Mutex::new(Vec::new())),
            tx,
        })
    }

    /// Runs a read-only closure on a pooled connection (blocking; call from spawn_blocking).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, DbError> {
        let conn = self.readers.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let r = f(&conn);
        if let Ok(mut v) = self.readers.lock() {
            if v.len() < 16 {
                v.push(conn);
            }
        }
        Ok(r?)
    }

    /// Runs `f` inside the writer's current transaction, isolated by a savepoint: an `Err`
    /// undoes only this job's changes. The result arrives after the batch has committed.
    pub async fn write<R, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<Result<R, E>, DbError>
    where
        R: Send + 'static,
        E: Send + 'static + From<rusqlite::Error>,
    {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c: &Connection| {
            let result = run_in_savepoint(c, f);
            Box::new(move |commit: Result<(), String>| {
                let _ = otx.send(commit.map(|_| result));
            }) as Finisher
        });
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

fn run_in_savepoint<R, E: From<rusqlite::Error>>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, E>,
) -> Result<R, E> {
    c.execute_batch("SAVEPOINT job")?;
    match f(c) {
        Ok(r) => {
            c.execute_batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn writer_loop(c: &mut Connection, rx: mpsc::Receiver<Job>) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut finishers = Vec::with_capacity(jobs.len());
        let mut begin = c.execute_batch("BEGIN IMMEDIATE");
        for _ in 0..3 {
            if begin.is_ok() {
                break;
            }
            begin = c.execute_batch("BEGIN IMMEDIATE");
        }
        if let Err(e) = begin {
            // Another process held the lock beyond busy_timeout several times: fail this batch
            // (dropping a job closes its channel, and its caller reports the database as
            // unavailable), and keep serving.
            tracing::error!("database busy, dropping {} writes: {e}", jobs.len());
            continue;
        }
        let mut panicked = false;
        for j in jobs {
            // A panicking job (a bug) must not take the writer thread down with it: its
            // caller sees the database as unavailable, and the batch is rolled back so no
            // half-done job is committed.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j(c))) {
                Ok(f) => finishers.push(f),
                Err(_) => panicked = true,
            }
        }
        let commit = if panicked {
            Err("a write job panicked; batch rolled back".to_string())
        } else {
            c.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        if commit.is_err() {
            let _ = c.execute_batch("ROLLBACK");
        }
        for f in finishers {
            f(commit.clone());
        }
    }
}
