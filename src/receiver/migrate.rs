//! `migrate --from sqlite:DIR --to postgres://…`: copies a site's whole state from the SQLite
//! file of its directory into a PostgreSQL database, in one transaction on the target, and
//! commits only when every table's row count and content digest match on both sides.
//!
//! The tables are the schema's ([`store::table_names`]), so a table added to the schema is
//! copied without touching this file; a table in the source that the schema does not know
//! stops the migration instead of being left behind.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::receiver::store::{self, sql::Value, Backend, Connection, Location, PgTarget};

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The site directory whose `receiver.db` is copied.
    pub from_dir: PathBuf,
    /// The PostgreSQL database (its password from a file or PGPASSWORD, never the URL).
    pub to: PgTarget,
    /// The password file as given, recorded in the site's `receiver.toml`.
    pub password_file: Option<PathBuf>,
    /// Replace whatever the target holds (otherwise a non-empty target is refused).
    pub force: bool,
    /// Leave `DIR/receiver.toml` alone (the report then says what to write).
    pub no_config: bool,
}

/// `receiver.migrate`: what was copied and proven equal.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MigrateReport {
    pub ok: bool,
    /// `sqlite:PATH` of the source file.
    pub from: String,
    /// The target's connection string (no password ever sits in it).
    pub to: String,
    /// Every table of the schema, with its rows and content digest (the same on both sides).
    pub tables: Vec<TableCopy>,
    /// Rows copied in all.
    pub rows: u64,
    /// Identity sequences set past the highest id SQLite ever handed out.
    pub sequences: Vec<SequenceReset>,
    /// Rows the target held before, deleted because of --force.
    pub replaced_rows: u64,
    /// The site configuration written so every command with --dir uses PostgreSQL, or null
    /// with --no-config.
    pub config_written: Option<String>,
    /// What to do next (restart the receivers; the SQLite file stays as it was).
    pub next_step: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    /// SHA-256 over the sorted SHA-256 of every row (order-free, so the two databases'
    /// collations do not matter).
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SequenceReset {
    pub table: String,
    pub column: String,
    /// The id the next insert gets.
    pub next_id: i64,
}

/// Rows per INSERT statement (a multi-row insert saves a round trip per row), and the bytes
/// after which a batch goes out anyway (agent outputs can be megabytes each).
const INSERT_BATCH: usize = 200;
const INSERT_BYTES: usize = 8 << 20;
/// Rows per read to start with (keyset pages, so a large audit log is never held in memory
/// at once); pages shrink so one holds about PAGE_BYTES.
const READ_PAGE: i64 = 256;
const PAGE_BYTES: usize = 16 << 20;

/// Parses `sqlite:DIR` (a bare DIR also works).
pub fn parse_from(s: &str) -> Result<PathBuf> {
    let dir = s.strip_prefix("sqlite:").unwrap_or(s);
    if dir.is_empty() || s.contains("://") {
        return Err(Error::usage(format!(
            "--from takes sqlite:DIR (a site directory), not {s:?}"
        )));
    }
    Ok(PathBuf::from(dir))
}

pub fn run(o: &MigrateOptions) -> Result<MigrateReport> {
    let db = store::db_path(&o.from_dir);
    if !db.exists() {
        return Err(
            Error::local_state(format!("no database at {}", db.display()))
                .hint("--from sqlite:DIR names a site directory made by tether-receiver init"),
        );
    }
    // A site already on PostgreSQL keeps its state there; its old SQLite file is not it.
    if let Location::Postgres(t) = store::location(&o.from_dir)? {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} already puts this site on PostgreSQL ({t:?}); {} is not its state",
                o.from_dir.join(store::CONFIG_FILE).display(),
                db.display()
            ),
        ));
    }
    let src = store::open(&Location::Sqlite(db.clone()))
        .map_err(|e| Error::local_state(format!("cannot open {}: {e}", db.display())))?;
    // An older file first gets the current schema, so both sides have the same columns.
    store::migrate(&src)?;
    let dst = store::open(&Location::Postgres(o.to.clone())).map_err(|e| {
        Error::new(
            ErrorCode::Network,
            format!("cannot connect to {:?}: {e}", o.to),
        )
    })?;
    // The source's write lock for the whole copy: no receiver changes it under us (they
    // wait, or fail after their busy timeout; stop them first).
    src.begin_write()?;
    let r = copy_all(&src, &dst, o);
    let _ = src.execute_batch("ROLLBACK");
    let (tables, sequences, replaced_rows) = r?;
    let rows = tables.iter().map(|t| t.rows).sum();
    let config = site_config(&o.to.url, o.password_file.as_deref());
    let cfg_path = o.from_dir.join(store::CONFIG_FILE);
    let (config_written, next_step) = if o.no_config {
        (
            None,
            format!(
                "write {} with:\n{config}then restart every receiver of the site",
                cfg_path.display()
            ),
        )
    } else {
        crate::receiver::ca::write_atomic(&cfg_path, config.as_bytes(), 0o600).map_err(|e| {
            Error::local_state(format!(
                "the data is in PostgreSQL, but {} could not be written ({e}); write it with:\n{config}",
                cfg_path.display()
            ))
        })?;
        (
            Some(cfg_path.display().to_string()),
            format!(
                "restart every receiver of the site (tether-receiver serve --dir {}) — it now uses \
                 PostgreSQL; {} is no longer read and can be archived",
                o.from_dir.display(),
                db.display()
            ),
        )
    };
    Ok(MigrateReport {
        ok: true,
        from: format!("sqlite:{}", db.display()),
        to: store::sql::redact(&o.to.url),
        tables,
        rows,
        sequences,
        replaced_rows,
        config_written,
        next_step,
    })
}

/// The `receiver.toml` that points the site at the target.
fn site_config(url: &str, password_file: Option<&Path>) -> String {
    let mut s = format!("database_url = {}\n", toml_str(url));
    if let Some(p) = password_file {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        s.push_str(&format!(
            "database_password_file = {}\n",
            toml_str(&p.display().to_string())
        ));
    }
    s
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

type Copied = (Vec<TableCopy>, Vec<SequenceReset>, u64);

/// The copy in one target transaction: committed only when verified.
fn copy_all(src: &Connection, dst: &Connection, o: &MigrateOptions) -> Result<Copied> {
    let tables = store::table_names();
    // A table only the source has would be lost silently.
    let unknown: Vec<String> = src
        .query(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            [],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|t| !tables.contains(&t.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::local_state(format!(
            "the source has tables this version does not know: {}; use the tether-receiver that wrote it",
            unknown.join(", ")
        )));
    }
    dst.begin_write()?;
    let r = copy_in_tx(src, dst, &tables, o.force);
    match r {
        Ok(v) => {
            dst.commit()?;
            // Planner statistics for the copied rows now, not when autovacuum gets to them:
            // receivers started right away would otherwise plan for empty tables.
            if let Err(e) = dst.execute_batch(&format!("ANALYZE {}", tables.join(", "))) {
                tracing::warn!(
                    "the copy is committed, but ANALYZE failed ({e}): run ANALYZE on the database"
                );
            }
            Ok(v)
        }
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn copy_in_tx(src: &Connection, dst: &Connection, tables: &[&str], force: bool) -> Result<Copied> {
    store::migrate_in_tx(dst)?;
    let mut held = BTreeMap::new();
    for t in tables {
        let n: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
        if n > 0 {
            held.insert(t.to_string(), n);
        }
    }
    let replaced_rows = held.values().map(|n| *n as u64).sum();
    if !held.is_empty() {
        if !force {
            let list: Vec<String> = held.iter().map(|(t, n)| format!("{t} {n}")).collect();
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("the target database is not empty ({})", list.join(", ")),
            )
            .hint("--force replaces its contents"));
        }
        for t in tables {
            dst.execute(&format!("DELETE FROM {t}"), [])?;
        }
    }
    let mut copies = Vec::new();
    for t in tables {
        let cols = columns(src, t)?;
        let dst_cols = columns(dst, t)?;
        if let Some(c) = cols.iter().find(|c| !dst_cols.contains(c)) {
            return Err(Error::local_state(format!(
                "the target's table {t} has no column {c}"
            )));
        }
        let pk = primary_key(src, t)?;
        let mut hashes = Vec::new();
        let mut batch: Vec<Vec<Value>> = Vec::new();
        let mut batch_bytes = 0;
        for_each_page(src, t, &cols, &pk, |rows| {
            for r in rows {
                hashes.push(row_hash(r.values()));
                batch_bytes += row_bytes(r.values());
                batch.push(r.values().to_vec());
                if batch.len() == INSERT_BATCH || batch_bytes > INSERT_BYTES {
                    insert(dst, t, &cols, &batch)?;
                    batch.clear();
                    batch_bytes = 0;
                }
            }
            Ok(())
        })?;
        insert(dst, t, &cols, &batch)?;
        let want = TableCopy {
            table: t.to_string(),
            rows: hashes.len() as u64,
            sha256: table_digest(hashes),
        };
        // The target as it now stands inside this transaction, read back the same way.
        let got = digest(dst, t, &cols, &pk)?;
        let n: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
        if got != want || n as u64 != want.rows {
            return Err(Error::local_state(format!(
                "verification failed for table {t}: source {} rows sha256 {}, target {} rows \
                 ({n} counted) sha256 {}; nothing was committed",
                want.rows, want.sha256, got.rows, got.sha256
            )));
        }
        copies.push(want);
    }
    let sequences = reset_sequences(src, dst)?;
    Ok((copies, sequences, replaced_rows))
}

/// The table's columns in declaration order.
fn columns(c: &Connection, table: &str) -> Result<Vec<String>> {
    let rows = match c.backend() {
        Backend::Sqlite => c.query(
            "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
            [table],
        )?,
        Backend::Postgres => c.query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name::text = ?1 ORDER BY ordinal_position",
            [table],
        )?,
    };
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()?)
}

/// The single primary-key column (every table has one), for keyset paging.
fn primary_key(src: &Connection, table: &str) -> Result<String> {
    let pk: Vec<String> = src
        .query(
            "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
            [table],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()?;
    match pk.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::new(
            ErrorCode::Internal,
            format!("table {table} has no single-column primary key"),
        )),
    }
}

/// Calls `f` with pages of rows (columns `cols`), in primary-key order of that database.
fn for_each_page(
    c: &Connection,
    table: &str,
    cols: &[String],
    pk: &str,
    mut f: impl FnMut(&[store::sql::Row]) -> Result<()>,
) -> Result<()> {
    let list = cols.join(", ");
    let pk_pos = cols
        .iter()
        .position(|c| c == pk)
        .ok_or_else(|| Error::new(ErrorCode::Internal, format!("{table}: no column {pk}")))?;
    let first = format!("SELECT {list} FROM {table} ORDER BY {pk} LIMIT ?1");
    let next = format!("SELECT {list} FROM {table} WHERE {pk} > ?1 ORDER BY {pk} LIMIT ?2");
    let mut last: Option<Value> = None;
    let mut limit = READ_PAGE;
    loop {
        let rows = match &last {
            None => c.query(&first, [Value::Int(limit)])?,
            Some(v) => c.query(&next, vec![v.clone(), Value::Int(limit)])?,
        };
        f(&rows)?;
        match rows.last() {
            Some(r) if rows.len() as i64 == limit => last = Some(r.values()[pk_pos].clone()),
            _ => return Ok(()),
        }
        let bytes: usize = rows.iter().map(|r| row_bytes(r.values())).sum();
        if bytes > PAGE_BYTES {
            limit = (limit * PAGE_BYTES as i64 / bytes as i64).max(1);
        }
    }
}

fn insert(dst: &Connection, table: &str, cols: &[String], rows: &[Vec<Value>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let one = format!("({})", vec!["?"; cols.len()].join(","));
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        cols.join(", "),
        vec![one; rows.len()].join(",")
    );
    let params: Vec<Value> = rows.iter().flatten().cloned().collect();
    dst.execute(&sql, params)?;
    Ok(())
}

/// Roughly what a row weighs in memory and on the wire.
fn row_bytes(values: &[Value]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.len() + 8,
            Value::Blob(b) => b.len() + 8,
            _ => 8,
        })
        .sum()
}

/// A table's rows and digest as one database holds them.
fn digest(c: &Connection, table: &str, cols: &[String], pk: &str) -> Result<TableCopy> {
    let mut hashes = Vec::new();
    for_each_page(c, table, cols, pk, |rows| {
        hashes.extend(rows.iter().map(|r| row_hash(r.values())));
        Ok(())
    })?;
    Ok(TableCopy {
        table: table.to_string(),
        rows: hashes.len() as u64,
        sha256: table_digest(hashes),
    })
}

/// One row, canonically: a tag and length per value; text and bytes alike (SQLite may hold
/// either in a BLOB column, PostgreSQL returns BYTEA as bytes).
fn row_hash(values: &[Value]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        match v {
            Value::Null => h.update([0u8]),
            Value::Int(i) => {
                h.update([1u8]);
                h.update(i.to_be_bytes());
            }
            Value::Real(f) => {
                h.update([2u8]);
                h.update(f.to_bits().to_be_bytes());
            }
            Value::Text(s) => {
                h.update([3u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            Value::Blob(b) => {
                h.update([3u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    h.finalize().into()
}

fn table_digest(mut hashes: Vec<[u8; 32]>) -> String {
    hashes.sort_unstable();
    let mut h = Sha256::new();
    for x in &hashes {
        h.update(x);
    }
    hex::encode(h.finalize())
}

/// Every identity column of the target continues after the highest id SQLite handed out
/// (`sqlite_sequence` remembers ids of deleted rows too, e.g. pruned audit entries, so no id
/// is ever reused).
fn reset_sequences(src: &Connection, dst: &Connection) -> Result<Vec<SequenceReset>> {
    let ids = dst.query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name",
        [],
    )?;
    let mut out = Vec::new();
    for r in ids {
        let (table, column): (String, String) = (r.get(0)?, r.get(1)?);
        let seq: Option<i64> = src
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name=?1",
                [table.as_str()],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                store::sql::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let max: Option<i64> =
            dst.query_row(&format!("SELECT MAX({column}) FROM {table}"), [], |r| {
                r.get(0)
            })?;
        let last = seq.unwrap_or(0).max(max.unwrap_or(0));
        // setval(…, last, true): the next id is last + 1; with nothing used yet, 1.
        dst.query(
            "SELECT setval(pg_get_serial_sequence(?1, ?2), ?3, ?4)",
            params_of(&table, &column, last.max(1), last > 0),
        )?;
        out.push(SequenceReset {
            table,
            column,
            next_id: last + 1,
        });
    }
    Ok(out)
}

fn params_of(table: &str, column: &str, value: i64, called: bool) -> Vec<Value> {
    vec![
        Value::Text(table.to_string()),
        Value::Text(column.to_string()),
        Value::Int(value),
        Value::Int(called as i64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_schema_is_listed() {
        let c = store::open(&Location::Sqlite(":memory:".into())).unwrap();
        store::migrate(&c).unwrap();
        let mut in_db: Vec<String> = c
            .query(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'",
                [],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0).unwrap())
            .collect();
        in_db.sort();
        let mut listed: Vec<String> = store::table_names().iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(in_db, listed);
        assert!(listed.len() >= 13, "{listed:?}");
    }

    #[test]
    fn digests_ignore_row_order_and_bytes_vs_text() {
        let a = vec![Value::Int(1), Value::Text("x".into())];
        let b = vec![Value::Int(2), Value::Blob(b"x".to_vec())];
        let b2 = vec![Value::Int(2), Value::Text("x".into())];
        assert_eq!(
            table_digest(vec![row_hash(&a), row_hash(&b)]),
            table_digest(vec![row_hash(&b2), row_hash(&a)])
        );
        assert_ne!(
            table_digest(vec![row_hash(&a)]),
            table_digest(vec![row_hash(&b)])
        );
    }

    #[test]
    fn from_takes_a_sqlite_directory() {
        assert_eq!(parse_from("sqlite:/x").unwrap(), PathBuf::from("/x"));
        assert!(parse_from("postgres://h/db").is_err());
        assert!(parse_from("sqlite:").is_err());
    }
}
