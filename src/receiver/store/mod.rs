//! The receiver's SQLite database: schema, row types, queries, and the server's group-commit
//! writer. Durability: WAL with `synchronous=FULL`, so a registration the client saw succeed
//! survives a power cut. Admin commands open the same file concurrently; `busy_timeout` makes
//! them wait for each other instead of failing.

mod audit;
mod folders;
mod hosts;
mod registrations;
mod users;
mod writer;

pub use self::audit::*;
pub use self::folders::*;
pub use self::hosts::*;
pub use self::registrations::*;
pub use self::users::*;
pub use self::writer::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

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
];

/// Brings any earlier database up to the current schema; idempotent, one transaction, so
/// two processes opening the same database never both add a column.
pub fn migrate(c: &Connection) -> rusqlite::Result<()> {
    // Inside a caller's transaction (init) the caller commits.
    let own_tx = c.is_autocommit();
    if own_tx {
        c.execute_batch("BEGIN IMMEDIATE")?;
    }
    let r = (|| {
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
        Ok(())
    })();
    match r {
        Ok(()) if own_tx => c.execute_batch("COMMIT"),
        Ok(()) => Ok(()),
        Err(e) => {
            if own_tx {
                let _ = c.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

pub fn db_err(e: rusqlite::Error) -> Error {
    Error::local_state(format!("database error: {e}"))
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        db_err(e)
    }
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
