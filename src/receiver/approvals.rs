//! The queue of registrations that wait for a person: new hosts held by a rule, and requests to
//! take over an existing host's name (a reinstalled machine). Approving or declining runs in the
//! caller's transaction and decides exactly once: a row that is no longer `pending` is refused.
use std::collections::BTreeMap;

use crate::receiver::store::sql::{params, Connection, OptionalExtension};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::admin;
use super::ca::{self, SiteKeys};
use super::store;
use crate::error::{Error, ErrorCode, Result};

/// A registration in the queue (or decided, with `--all`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PendingInfo {
    pub uuid: String,
    /// The user (or `token:ID`) that asked.
    pub user: String,
    /// `new` (a new host held by a rule) or `takeover` (an existing host's name, asked for by
    /// a controller that lost its registration).
    pub kind: String,
    /// pending, declined or success.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    /// For takeovers: the host. For new hosts: the name once approved.
    pub host: Option<String>,
    /// Where the host is (takeover) or would be created (from the holding rule).
    pub folder: Option<String>,
    pub reason: Option<String>,
    /// Source address of the request.
    pub source: String,
    pub created_at: i64,
}

/// Queue entries, oldest first; only undecided ones unless `all`.
pub fn list(c: &Connection, all: bool) -> Result<Vec<PendingInfo>> {
    let mut st = c.prepare(
        "SELECT uuid, user, kind, status, labels, host, folder, reason, source, created_at
         FROM pending WHERE (?1 OR status='pending') ORDER BY created_at, uuid",
    )?;
    let rows = st.query_map([all], |r| {
        Ok(PendingInfo {
            uuid: r.get(0)?,
            user: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            labels: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
            host: r.get(5)?,
            folder: r.get(6)?,
            reason: r.get(7)?,
            source: r.get(8)?,
            created_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<crate::receiver::store::sql::Result<_>>()?)
}

pub fn get(c: &Connection, uuid: &str) -> Result<Option<PendingInfo>> {
    Ok(list(c, true)?.into_iter().find(|p| p.uuid == uuid))
}

/// Who decides, for the audit log.
#[derive(Debug, Clone)]
pub struct Decider {
    pub actor: String,
    pub source: String,
}

/// What an approver may set for a new host (defaults: the agent's `cmk/hostname` label, the
/// holding rule's folder or `/`, pull).
#[derive(Debug, Clone, Default)]
pub struct ApproveOptions {
    pub host: Option<String>,
    pub folder: Option<String>,
    pub mode: Option<String>,
}

fn undecided(c: &Connection, uuid: &str) -> Result<(PendingInfo, String)> {
    let row: Option<String> = c
        .query_row("SELECT csr FROM pending WHERE uuid=?1", [uuid], |r| {
            r.get(0)
        })
        .optional()?;
    let (Some(csr), Some(p)) = (row, get(c, uuid)?) else {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("no pending registration with UUID {uuid}"),
        ));
    };
    if p.status != "pending" {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("registration {uuid} is already decided ({})", p.status),
        ));
    }
    Ok((p, csr))
}

/// Approves: creates the new host (never over an existing one), or hands an existing host to
/// the requesting controller (revoking the old registration); issues the certificate the
/// waiting controller collects. Returns the host name.
pub fn approve(
    c: &Connection,
    keys: &SiteKeys,
    uuid: &str,
    opts: &ApproveOptions,
    by: &Decider,
) -> Result<String> {
    let (p, csr) = undecided(c, uuid)?;
    let (host, revoked) = if p.kind == "takeover" {
        let name = p.host.clone().unwrap_or_default();
        let h = store::get_host(c, &name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::HostNotFound,
                format!("host {name} no longer exists; decline the takeover"),
            )
        })?;
        let mut revoked = Vec::new();
        for r in store::registrations_of_host(c, &name)? {
            if r.uuid != uuid && r.revoked_at.is_none() {
                store::revoke_registration(c, &r.uuid)?;
                revoked.push(r.uuid);
            }
        }
        (h, revoked)
    } else {
        let name = opts
            .host
            .clone()
            .or_else(|| p.labels.get(admin::DEFAULT_HOSTNAME_LABEL).cloned())
            .ok_or_else(|| {
                Error::usage("the agent sent no cmk/hostname label; give a host name")
            })?;
        if store::get_host(c, &name)?.is_some() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("host {name} already exists; an existing host is never overwritten (decline, or give another host name)"),
            ));
        }
        let spec = admin::HostSpec {
            folder: Some(
                opts.folder
                    .clone()
                    .or_else(|| p.folder.clone())
                    .unwrap_or_else(|| "/".into()),
            ),
            mode: Some(opts.mode.clone().unwrap_or_else(|| "pull".into())),
            ..Default::default()
        };
        let h = admin::build_host(c, &name, &spec)?;
        store::put_host(c, &h)?;
        (h, Vec::new())
    };
    let lifetime = admin::cert_lifetime(c)?;
    let v = ca::verify_csr(&csr, uuid).map_err(|e| Error::usage(e.to_string()))?;
    let issued = keys
        .sign_agent_cert(&v, uuid, lifetime)
        .map_err(|e| Error::internal(e.to_string()))?;
    store::insert_registration(
        c,
        uuid,
        &host.name,
        &host.mode,
        &by.actor,
        &issued.serial_hex,
        issued.not_after,
    )?;
    c.execute(
        "UPDATE pending SET status='success', host=?2, folder=?3, agent_cert=?4, mode=?5, decided_at=?6 WHERE uuid=?1",
        params![uuid, host.name, host.folder, issued.pem, host.mode, store::now()],
    )?;
    let mut detail = format!("certificate serial {}", issued.serial_hex);
    if !revoked.is_empty() {
        detail.push_str(&format!("; took over from {}", revoked.join(", ")));
    }
    store::audit(
        c,
        &store::Audit {
            actor: by.actor.clone(),
            source: by.source.clone(),
            action: "pending_approve".into(),
            host: Some(host.name.clone()),
            uuid: Some(uuid.to_string()),
            outcome: if p.kind == "takeover" {
                "taken over"
            } else {
                "registered"
            }
            .into(),
            detail,
        },
    )?;
    Ok(host.name)
}

/// Declines with a reason, which the waiting controller receives.
pub fn decline(c: &Connection, uuid: &str, reason: &str, by: &Decider) -> Result<()> {
    let (p, _) = undecided(c, uuid)?;
    c.execute(
        "UPDATE pending SET status='declined', reason=?2, decided_at=?3 WHERE uuid=?1 AND status='pending'",
        params![uuid, reason, store::now()],
    )?;
    store::audit(
        c,
        &store::Audit {
            actor: by.actor.clone(),
            source: by.source.clone(),
            action: "pending_decline".into(),
            host: p.host,
            uuid: Some(uuid.to_string()),
            outcome: "declined".into(),
            detail: reason.to_string(),
        },
    )?;
    Ok(())
}
