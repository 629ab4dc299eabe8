//! The audit log.
use serde::{Deserialize, Serialize};

use super::*;

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

pub fn audit(c: &Connection, a: &Audit) -> sql::Result<()> {
    c.defer(
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
    )
}

pub fn list_audit(c: &Connection, host: Option<&str>, limit: i64) -> sql::Result<Vec<AuditEntry>> {
    let mut st = c.prepare(
        "SELECT id, ts, actor, source, action, host, uuid, outcome, detail FROM audit
         WHERE (CAST(?1 AS TEXT) IS NULL OR host=?1) ORDER BY id DESC LIMIT ?2",
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
    let mut v: Vec<AuditEntry> = rows.collect::<sql::Result<_>>()?;
    v.reverse();
    Ok(v)
}

/// How much of the audit log a site keeps: rows younger than `max_age_secs` and at most
/// `max_rows` of them (the newest); `None` keeps everything on that count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age_secs: Option<i64>,
    pub max_rows: Option<i64>,
}

impl Default for Retention {
    /// A year, and a million rows (a few hundred MB), whichever ends first.
    fn default() -> Self {
        Retention {
            max_age_secs: Some(365 * 86_400),
            max_rows: Some(1_000_000),
        }
    }
}

/// What one pass of [`prune_audit_batch`] (or all of them) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuditPruned {
    /// Rows removed for their age.
    pub deleted_by_age: u64,
    /// Rows removed beyond the row limit.
    pub deleted_by_rows: u64,
}

/// Rows deleted per transaction: a busy site's writer is never held for long.
pub const PRUNE_BATCH: i64 = 5_000;

/// Deletes up to [`PRUNE_BATCH`] rows outside `r` at `now`, oldest first. Call until it
/// returns zero deletions; each call is its own short write.
pub fn prune_audit_batch(c: &Connection, r: &Retention, now: i64) -> sql::Result<AuditPruned> {
    let mut out = AuditPruned::default();
    if let Some(age) = r.max_age_secs {
        out.deleted_by_age = c.execute(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ?1 ORDER BY id LIMIT ?2)",
            params![now - age, PRUNE_BATCH],
        )? as u64;
    }
    if let Some(rows) = r.max_rows {
        // The id of the newest row that falls outside the limit, if any.
        let edge: Option<i64> = c
            .query_row(
                "SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1",
                params![rows.max(0)],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(edge) = edge {
            out.deleted_by_rows = c.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                params![edge, PRUNE_BATCH],
            )? as u64;
        }
    }
    Ok(out)
}

impl AuditPruned {
    pub fn add(&mut self, o: &AuditPruned) {
        self.deleted_by_age += o.deleted_by_age;
        self.deleted_by_rows += o.deleted_by_rows;
    }

    pub fn is_empty(&self) -> bool {
        self.deleted_by_age == 0 && self.deleted_by_rows == 0
    }
}

pub fn count_audit(c: &Connection) -> sql::Result<i64> {
    c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
}
