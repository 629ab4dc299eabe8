//! What a person may see and do beyond the approval queue: registered hosts, unregistering one,
//! and the audit log, each filtered by the folder rights that decide approvals
//! (`perms::may_approve` on the host's folder, or on a held registration's target folder).
//! Shared by the admin API, the web console and the local CLI (which sees everything).
use std::collections::{HashMap, HashSet};

use super::store::sql::{self, params, Connection};
use schemars::JsonSchema;
use serde::Serialize;

use super::approvals::{self, Decider, PendingInfo};
use super::perms::{self, Principal};
use super::store::{self, AuditEntry};
use crate::error::{Error, ErrorCode, Result};

/// What one caller may see: everything (site administration, `approve_any`) or the hosts in
/// folders it may approve in, their registrations' UUIDs and the held registrations aimed at
/// those folders.
#[derive(Debug, Clone)]
pub enum Scope {
    Everything,
    Folders {
        hosts: HashSet<String>,
        uuids: HashSet<String>,
    },
}

impl Scope {
    /// The scope of `p`, computed once per request (folder rights are checked per folder, not
    /// per row).
    pub fn of(c: &Connection, p: &Principal) -> sql::Result<Scope> {
        if p.has(perms::APPROVE_ANY) {
            return Ok(Scope::Everything);
        }
        if !p.has(perms::APPROVE_IN_MANAGED_FOLDER) {
            return Ok(Scope::Folders {
                hosts: HashSet::new(),
                uuids: HashSet::new(),
            });
        }
        let mut folders: HashMap<String, bool> = HashMap::new();
        let mut may = |folder: &str| -> sql::Result<bool> {
            if let Some(v) = folders.get(folder) {
                return Ok(*v);
            }
            let v = perms::may_approve(c, p, folder)?;
            folders.insert(folder.to_string(), v);
            Ok(v)
        };
        let mut hosts = HashSet::new();
        for h in store::list_hosts(c)? {
            if may(&h.folder)? {
                hosts.insert(h.name);
            }
        }
        let mut uuids = HashSet::new();
        for r in store::list_registrations(c)? {
            if hosts.contains(&r.host) {
                uuids.insert(r.uuid);
            }
        }
        let queue = approvals::list(c, true).map_err(to_sql)?;
        for e in queue {
            if may(target_folder(&e))? {
                uuids.insert(e.uuid);
            }
        }
        Ok(Scope::Folders { hosts, uuids })
    }

    pub fn sees_host(&self, host: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Folders { hosts, .. } => hosts.contains(host),
        }
    }

    fn sees_uuid(&self, uuid: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Folders { uuids, .. } => uuids.contains(uuid),
        }
    }

    /// An audit row is visible if it names a visible host or a visible registration.
    pub fn sees_audit(&self, e: &AuditEntry) -> bool {
        matches!(self, Scope::Everything)
            || e.host.as_deref().is_some_and(|h| self.sees_host(h))
            || e.uuid.as_deref().is_some_and(|u| self.sees_uuid(u))
    }
}

fn to_sql(e: Error) -> sql::Error {
    sql::Error::Other(e.to_string())
}

/// The folder that decides who may approve a held registration.
pub fn target_folder(p: &PendingInfo) -> &str {
    p.folder.as_deref().unwrap_or("/")
}

/// The held registrations `p` may decide on (undecided ones unless `all`), oldest first.
pub fn pending_for(c: &Connection, p: &Principal, all: bool) -> sql::Result<Vec<PendingInfo>> {
    let mut out = Vec::new();
    for e in approvals::list(c, all).map_err(to_sql)? {
        if perms::may_approve(c, p, target_folder(&e))? {
            out.push(e);
        }
    }
    Ok(out)
}

/// A registration (UUID ↔ host link) with the state of its certificates.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RegistrationInfo {
    pub uuid: String,
    pub host: String,
    pub connection_mode: String,
    pub registered_at: i64,
    pub registered_by: String,
    /// live, revoked or expired.
    pub state: String,
    pub cert_not_after: Option<i64>,
}

/// Registrations of visible hosts (of `host` only, if given), by host.
pub fn list(
    c: &Connection,
    scope: &Scope,
    host: Option<&str>,
) -> sql::Result<Vec<RegistrationInfo>> {
    let now = store::now();
    let regs = match host {
        Some(h) => store::registrations_of_host(c, h)?,
        None => store::list_registrations(c)?,
    };
    Ok(regs
        .into_iter()
        .filter(|r| scope.sees_host(&r.host))
        .map(|r| RegistrationInfo {
            state: if r.revoked_at.is_some() {
                "revoked".into()
            } else if r.live(now) {
                "live".into()
            } else {
                "expired".into()
            },
            uuid: r.uuid,
            host: r.host,
            connection_mode: r.connection_mode,
            registered_at: r.registered_at,
            registered_by: r.registered_by,
            cert_not_after: r.cert_not_after,
        })
        .collect())
}

/// Revokes every live registration of `host` and the certificates issued to them, with an
/// audit row; returns the revoked UUIDs. A host outside the scope is reported exactly like one
/// that does not exist (only for a limited scope: the site administrator may unregister the
/// leftovers of a deleted host).
pub fn unregister(c: &Connection, scope: &Scope, host: &str, by: &Decider) -> Result<Vec<String>> {
    crate::wire::validate::validate_host_name(host)?;
    let absent = !scope.sees_host(host)
        || (!matches!(scope, Scope::Everything) && store::get_host(c, host)?.is_none());
    if absent {
        return Err(Error::new(ErrorCode::NotFound, format!("no host {host}")));
    }
    let revoked = super::admin::unregister(c, host)?;
    store::audit(
        c,
        &store::Audit {
            actor: by.actor.clone(),
            source: by.source.clone(),
            action: "unregister".into(),
            host: Some(host.to_string()),
            outcome: if revoked.is_empty() {
                "unchanged".into()
            } else {
                "revoked".into()
            },
            detail: revoked.join(","),
            ..Default::default()
        },
    )?;
    Ok(revoked)
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Largest page of the audit log.
pub const MAX_AUDIT_PAGE: i64 = 1000;

/// Rows read per query while filtering the audit log.
const AUDIT_BATCH: i64 = 500;

/// Up to `limit` visible audit rows with an id below `before` (all if None), newest first.
pub fn audit_page(
    c: &Connection,
    scope: &Scope,
    limit: i64,
    before: Option<i64>,
) -> sql::Result<AuditPage> {
    let limit = limit.clamp(1, MAX_AUDIT_PAGE) as usize;
    let mut st = c.prepare(
        "SELECT id, ts, actor, source, action, host, uuid, outcome, detail FROM audit
         WHERE (CAST(?1 AS BIGINT) IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let mut entries = Vec::new();
    let mut more = false;
    let mut cursor = before;
    // Read in batches: a narrow scope scans further, but never more than the log holds.
    'scan: loop {
        let batch: Vec<AuditEntry> = st
            .query_map(params![cursor, AUDIT_BATCH], |r| {
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
            })?
            .collect::<sql::Result<_>>()?;
        let Some(last) = batch.last() else { break };
        cursor = Some(last.id);
        let full = batch.len() as i64 == AUDIT_BATCH;
        for e in batch {
            if !scope.sees_audit(&e) {
                continue;
            }
            if entries.len() == limit {
                more = true;
                break 'scan;
            }
            entries.push(e);
        }
        if !full {
            break;
        }
    }
    let next_before = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage {
        entries,
        next_before,
    })
}
