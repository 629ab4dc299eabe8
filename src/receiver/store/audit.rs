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
