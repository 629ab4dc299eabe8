//! The receiver's database: schema, row types, queries, and the server's group-commit
//! writer. SQLite by default (a file in the site directory): WAL with `synchronous=FULL`, so
//! a registration the client saw succeed survives a power cut; admin commands open the same
//! file concurrently and `busy_timeout` makes them wait for each other instead of failing.
//! PostgreSQL when the site selects it (`--database postgres://…`): several receivers then
//! share the state, their writes serialised by one advisory lock (see [`sql`]).

mod audit;
mod folders;
mod freshness;
mod hosts;
mod pg_async;
mod pg_session;
mod pull_state;
mod registrations;
pub mod sql;
mod users;
mod writer;

pub use self::audit::*;
pub use self::folders::*;
pub use self::freshness::*;
pub use self::hosts::*;
pub use self::pull_state::*;
pub use self::registrations::*;
pub use self::users::*;
pub use self::writer::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

pub use self::sql::{params, Backend, Connection, Location, OptionalExtension, PgTarget};

use crate::error::Error;

pub const DB_FILE: &str = "receiver.db";

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

/// A PostgreSQL database chosen for this process (the command line's `--database`); unset,
/// every site directory keeps its state in its own SQLite file.
static POSTGRES: OnceLock<PgTarget> = OnceLock::new();

/// Puts this process's state in PostgreSQL instead of the site directory's SQLite file.
pub fn use_postgres(t: PgTarget) {
    let _ = POSTGRES.set(t);
}

/// The site's own choice of database: `DIR/receiver.toml` with `database_url` (and
/// `database_password_file`), so every command given `--dir` finds it.
pub const CONFIG_FILE: &str = "receiver.toml";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteConfig {
    database_url: Option<String>,
    database_password_file: Option<PathBuf>,
}

/// Where the state of the site in `dir` lives: `--database`, else `database_url` in
/// `DIR/receiver.toml`, else the SQLite file in `dir`.
pub fn location(dir: &Path) -> crate::error::Result<Location> {
    if let Some(t) = POSTGRES.get() {
        return Ok(Location::Postgres(t.clone()));
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let cfg: SiteConfig = match std::fs::read_to_string(&cfg_path) {
        Ok(s) => toml::from_str(&s)
            .map_err(|e| Error::local_state(format!("invalid {}: {e}", cfg_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SiteConfig::default(),
        Err(e) => {
            return Err(Error::local_state(format!(
                "cannot read {}: {e}",
                cfg_path.display()
            )))
        }
    };
    match cfg.database_url {
        Some(url) => {
            let pw = cfg.database_password_file.map(|p| dir.join(p));
            Ok(Location::Postgres(PgTarget::new(&url, pw.as_deref())?))
        }
        None => Ok(Location::Sqlite(db_path(dir))),
    }
}

impl PgTarget {
    /// A target from a connection string and the password's file (else `PGPASSWORD`). A
    /// password inside the URL is refused: it would sit on a command line or in a config
    /// that is not a secret.
    pub fn new(url: &str, password_file: Option<&Path>) -> crate::error::Result<PgTarget> {
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.contains('='))
        {
            return Err(Error::usage(format!(
                "the database must be a postgres:// URL or key=value string, not {:?}",
                sql::redact(url)
            )));
        }
        if sql::redact(url) != url || url.contains("password=") {
            return Err(Error::usage(
                "the database URL carries a password; put it in --database-password-file \
                 (database_password_file) or PGPASSWORD",
            ));
        }
        let password = match password_file {
            Some(f) => {
                let s = std::fs::read_to_string(f)
                    .map_err(|e| Error::local_state(format!("cannot read {}: {e}", f.display())))?;
                Some(s.lines().next().unwrap_or("").to_string())
            }
            None => std::env::var("PGPASSWORD").ok(),
        };
        Ok(PgTarget {
            url: url.to_string(),
            password,
        })
    }
}

pub fn open(loc: &Location) -> sql::Result<Connection> {
    Connection::open(loc)
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
CREATE TABLE IF NOT EXISTS pull_state (
    host TEXT PRIMARY KEY, active INTEGER NOT NULL DEFAULT 1, interval_ms INTEGER NOT NULL,
    next_due INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER,
    last_attempt INTEGER, last_success INTEGER, last_error_code TEXT, last_error TEXT,
    duration_ms INTEGER, bytes INTEGER, pulled_by TEXT,
    pulls INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS pull_state_due ON pull_state(next_due);
"#;

/// Every table of the schema, in creation order (parsed from [`SCHEMA`], so a table added
/// there is known to everything that walks the whole state, e.g. `migrate --to`).
pub fn table_names() -> Vec<&'static str> {
    SCHEMA
        .split("CREATE TABLE IF NOT EXISTS ")
        .skip(1)
        .filter_map(|rest| rest.split([' ', '(']).next())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Columns added after the first release: (table, column, declaration).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("tokens", "name", "TEXT"),
    ("tokens", "scope", "TEXT NOT NULL DEFAULT 'host'"),
    ("tokens", "folder", "TEXT"),
    ("tokens", "labels", "TEXT NOT NULL DEFAULT '{}'"),
    ("tokens", "max_uses", "INTEGER NOT NULL DEFAULT 1"),
    ("tokens", "uses", "INTEGER NOT NULL DEFAULT 0"),
    ("tokens", "last_used_at", "INTEGER"),
    ("pending", "kind", "TEXT NOT NULL DEFAULT 'new'"),
    // Seconds between scheduled pulls; NULL inherits (see `freshness`).
    ("hosts", "pull_interval", "INTEGER"),
    ("folders", "pull_interval", "INTEGER"),
    // Agent output is kept as it arrived: `data` compressed by `compression` (none, zlib,
    // zstd), `size` its length decompressed. Earlier rows hold plain output.
    ("agent_data", "compression", "TEXT NOT NULL DEFAULT 'none'"),
    ("agent_data", "size", "INTEGER"),
];

/// The schema in PostgreSQL's types: 64-bit integers, identity keys, byte arrays.
fn pg_schema() -> String {
    sql::pg_sql(
        &SCHEMA
            .replace(
                "INTEGER PRIMARY KEY AUTOINCREMENT",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            )
            .replace("INTEGER", "BIGINT")
            .replace("BLOB", "BYTEA"),
    )
}

/// Brings any earlier database up to the current schema; idempotent, one write transaction,
/// so two processes opening the same database never both add a column.
pub fn migrate(c: &Connection) -> sql::Result<()> {
    c.begin_write()?;
    let r = migrate_in_tx(c);
    match r {
        Ok(()) => c.commit(),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// [`migrate`] inside the caller's write transaction.
pub fn migrate_in_tx(c: &Connection) -> sql::Result<()> {
    match c.backend() {
        Backend::Sqlite => {
            c.execute_batch(SCHEMA)?;
            for (table, col, decl) in ADDED_COLUMNS {
                let exists = c
                    .prepare(&format!(
                        "SELECT 1 FROM pragma_table_info('{table}') WHERE name=?1"
                    ))?
                    .exists([col])?;
                if !exists {
                    c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {col} {decl}"))?;
                    if (*table, *col) == ("tokens", "uses") {
                        // Host-bound tokens used before counting existed.
                        c.execute_batch("UPDATE tokens SET uses=1 WHERE used_at IS NOT NULL")?;
                    }
                }
            }
        }
        Backend::Postgres => {
            c.execute_batch(&pg_schema())?;
            for (table, col, decl) in ADDED_COLUMNS {
                let decl = decl.replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA");
                c.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {decl}"
                ))?;
            }
        }
    }
    Ok(())
}

pub fn db_err(e: sql::Error) -> Error {
    Error::local_state(format!("database error: {e}"))
}

impl From<sql::Error> for Error {
    fn from(e: sql::Error) -> Self {
        db_err(e)
    }
}

/// Opens an initialised site's database (`init` creates it).
pub fn open_db(dir: &Path) -> crate::error::Result<Connection> {
    let loc = location(dir)?;
    if let Location::Sqlite(p) = &loc {
        if !p.exists() {
            return Err(
                Error::local_state(format!("no database at {}", p.display()))
                    .hint("run tether-receiver init --dir DIR --site SITE first"),
            );
        }
    }
    let c = open(&loc).map_err(|e| Error::local_state(format!("cannot open {loc:?}: {e}")))?;
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

/// Runs `f` in a write transaction (the write lock is taken up front, so two admin
/// commands never deadlock on a lock upgrade); commits on Ok, rolls back on Err.
pub fn with_tx<R, E: From<sql::Error>>(
    c: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R, E>,
) -> Result<R, E> {
    c.begin_write()?;
    match f(c) {
        Ok(r) => {
            if let Err(e) = c.commit() {
                let _ = c.execute_batch("ROLLBACK");
                return Err(e.into());
            }
            Ok(r)
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

// ---------- settings ----------

pub fn get_setting(c: &Connection, key: &str) -> sql::Result<Option<String>> {
    c.query_row("SELECT value FROM settings WHERE key=?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

pub fn set_setting(c: &Connection, key: &str, value: &str) -> sql::Result<()> {
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
