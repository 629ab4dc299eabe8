//! What a person responsible for folders sees and may change from the web console: the
//! approval queue, the registrations and the audit entries of the folders they may approve in
//! (`perms::may_approve`). Everything outside them is absent, never refused by name.
use std::collections::HashMap;

use super::store::sql::{Connection, OptionalExtension};

use super::approvals::{self, Decider, PendingInfo};
use super::perms::{self, Principal};
use super::store::{self, AuditEntry, Registration};
use crate::error::{Error, ErrorCode, Result};

/// A queue entry with the rule that held it.
#[derive(Debug, Clone)]
pub struct HeldEntry {
    pub info: PendingInfo,
    /// Name of the `hold` rule; None when no rule matched (held by default) or for takeovers.
    pub rule: Option<String>,
}

/// A registration with the folder of its host (None once the host is deleted).
#[derive(Debug, Clone)]
pub struct RegistrationView {
    pub registration: Registration,
    pub folder: Option<String>,
}

/// Remembers folder decisions within one listing: many rows share few folders.
struct Scope<'a> {
    c: &'a Connection,
    p: &'a Principal,
    folders: HashMap<String, bool>,
}

impl<'a> Scope<'a> {
    fn new(c: &'a Connection, p: &'a Principal) -> Self {
        Scope {
            c,
            p,
            folders: HashMap::new(),
        }
    }

    fn folder(&mut self, f: &str) -> super::store::sql::Result<bool> {
        if let Some(v) = self.folders.get(f) {
            return Ok(*v);
        }
        let v = perms::may_approve(self.c, self.p, f)?;
        self.folders.insert(f.to_string(), v);
        Ok(v)
    }

    /// A host that no longer exists belongs to no folder: only `approve_any` sees it.
    fn host(&mut self, name: &str) -> super::store::sql::Result<bool> {
        match store::get_host(self.c, name)? {
            Some(h) => self.folder(&h.folder),
            None => Ok(self.p.has(perms::APPROVE_ANY)),
        }
    }
}

/// The folder that decides who may approve a queue entry.
pub fn target_folder(p: &PendingInfo) -> &str {
    p.folder.as_deref().unwrap_or("/")
}

/// The rule recorded when the registration was held (the `register_new` audit entry).
pub fn holding_rule(c: &Connection, uuid: &str) -> super::store::sql::Result<Option<String>> {
    let detail: Option<String> = c
        .query_row(
            "SELECT detail FROM audit WHERE uuid=?1 AND action='register_new'
             AND outcome='new: pending' ORDER BY id DESC LIMIT 1",
            [uuid],
            |r| r.get(0),
        )
        .optional()?;
    // The detail reads "rule NAME[: reason][; token use]"; rule names hold no ':' or ';'.
    Ok(detail.and_then(|d| {
        let rest = d.strip_prefix("rule ")?;
        let name = rest.split([':', ';']).next()?.trim();
        (!name.is_empty()).then(|| name.to_string())
    }))
}

/// Undecided queue entries `p` may decide on, oldest first.
pub fn pending_for(c: &Connection, p: &Principal) -> Result<Vec<HeldEntry>> {
    let mut scope = Scope::new(c, p);
    let mut out = Vec::new();
    for info in approvals::list(c, false)? {
        if scope.folder(target_folder(&info))? {
            let rule = if info.kind == "new" {
                holding_rule(c, &info.uuid)?
            } else {
                None
            };
            out.push(HeldEntry { info, rule });
        }
    }
    Ok(out)
}

/// Registrations of hosts in folders `p` may approve in, by host name.
pub fn registrations_for(c: &Connection, p: &Principal) -> Result<Vec<RegistrationView>> {
    let mut scope = Scope::new(c, p);
    let mut out = Vec::new();
    for r in store::list_registrations(c)? {
        let folder = store::get_host(c, &r.host)?.map(|h| h.folder);
        let visible = match &folder {
            Some(f) => scope.folder(f)?,
            None => p.has(perms::APPROVE_ANY),
        };
        if visible {
            out.push(RegistrationView {
                registration: r,
                folder,
            });
        }
    }
    Ok(out)
}

/// Revokes one registration (and its certificates) if `p` may see it; audited as `unregister`.
pub fn revoke_for(c: &Connection, p: &Principal, uuid: &str, by: &Decider) -> Result<Registration> {
    let absent = || {
        Error::new(
            ErrorCode::NotFound,
            format!("no registration with UUID {uuid}"),
        )
    };
    let r = store::get_registration(c, uuid)?.ok_or_else(absent)?;
    if !Scope::new(c, p).host(&r.host)? {
        return Err(absent());
    }
    if r.revoked_at.is_some() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("registration {uuid} of host {} is already revoked", r.host),
        ));
    }
    store::revoke_registration(c, uuid)?;
    store::audit(
        c,
        &store::Audit {
            actor: by.actor.clone(),
            source: by.source.clone(),
            action: "unregister".into(),
            host: Some(r.host.clone()),
            uuid: Some(uuid.to_string()),
            outcome: "revoked".into(),
            detail: uuid.to_string(),
        },
    )?;
    Ok(r)
}

/// How many audit rows one listing looks at, at most, to find `limit` visible ones.
const AUDIT_SCAN: usize = 20_000;

/// The newest `limit` audit entries about `p`'s folders, newest first: entries naming a host
/// in such a folder, or a UUID whose queue entry or registration belongs there.
pub fn audit_for(c: &Connection, p: &Principal, limit: usize) -> Result<Vec<AuditEntry>> {
    let mut scope = Scope::new(c, p);
    let all = p.has(perms::APPROVE_ANY);
    let mut st = c.prepare(
        "SELECT id, ts, actor, source, action, host, uuid, outcome, detail FROM audit
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map([AUDIT_SCAN as i64], |r| {
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
    let mut out = Vec::new();
    for e in rows {
        let e = e?;
        if out.len() >= limit {
            break;
        }
        if all || visible_entry(c, &mut scope, &e)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn visible_entry(c: &Connection, scope: &mut Scope, e: &AuditEntry) -> Result<bool> {
    if let Some(h) = &e.host {
        if store::get_host(c, h)?.is_some() {
            return Ok(scope.host(h)?);
        }
    }
    let Some(uuid) = &e.uuid else {
        return Ok(false);
    };
    let queued: Option<Option<String>> = c
        .query_row("SELECT folder FROM pending WHERE uuid=?1", [uuid], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(folder) = queued {
        return Ok(scope.folder(folder.as_deref().unwrap_or("/"))?);
    }
    if let Some(r) = store::get_registration(c, uuid)? {
        return Ok(scope.host(&r.host)?);
    }
    Ok(false)
}

fn may_decide(c: &Connection, p: &Principal, uuid: &str) -> Result<PendingInfo> {
    let absent = || {
        Error::new(
            ErrorCode::NotFound,
            format!("no pending registration with UUID {uuid}"),
        )
    };
    let entry = approvals::get(c, uuid)?.ok_or_else(absent)?;
    if !perms::may_approve(c, p, target_folder(&entry))? {
        return Err(absent());
    }
    Ok(entry)
}

/// Approves a queue entry `p` may decide on (checked in the caller's transaction, so the
/// decision is taken once); returns the host name.
pub fn approve_for(
    c: &Connection,
    keys: &super::ca::SiteKeys,
    p: &Principal,
    uuid: &str,
    opts: &approvals::ApproveOptions,
    by: &Decider,
) -> Result<String> {
    may_decide(c, p, uuid)?;
    if let Some(f) = &opts.folder {
        if !perms::may_approve(c, p, f)? {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("you may not create hosts in folder {f}"),
            ));
        }
    }
    approvals::approve(c, keys, uuid, opts, by)
}

/// Declines a queue entry `p` may decide on, with the reason the waiting agent receives.
pub fn decline_for(
    c: &Connection,
    p: &Principal,
    uuid: &str,
    reason: &str,
    by: &Decider,
) -> Result<PendingInfo> {
    let entry = may_decide(c, p, uuid)?;
    approvals::decline(c, uuid, reason, by)?;
    Ok(entry)
}
