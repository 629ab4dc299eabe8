//! Registration commands: pending registrations (list, approve, decline), the registrations
//! list, and unregister.
use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::OptionalExtension;

use super::args::PendingCmd;
use super::db::{change, read, tx};
use super::emit;
use super::output::*;
use crate::cli::error::{Error, ErrorCode, Result};
use crate::receiver::{admin, ca, store};

pub(super) fn pending_cmd(json: bool, dir: &Path, c: PendingCmd) -> i32 {
    match c {
        PendingCmd::List { all } => emit(
            json,
            read(dir, |c| {
                let mut st = c.prepare(
                    "SELECT uuid, user, status, labels, host, folder, reason, source, created_at
                     FROM pending WHERE (?1 OR status='pending') ORDER BY created_at",
                )?;
                let rows = st.query_map([all], |r| {
                    Ok(PendingInfo {
                        uuid: r.get(0)?,
                        user: r.get(1)?,
                        status: r.get(2)?,
                        labels: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                        host: r.get(4)?,
                        folder: r.get(5)?,
                        reason: r.get(6)?,
                        source: r.get(7)?,
                        created_at: r.get(8)?,
                    })
                })?;
                Ok(PendingList {
                    ok: true,
                    registrations: rows.collect::<rusqlite::Result<_>>()?,
                })
            }),
        ),
        PendingCmd::Approve {
            uuid,
            host,
            folder,
            mode,
        } => emit(json, approve(dir, &uuid, host, &folder, &mode)),
        PendingCmd::Decline { uuid, reason } => emit(
            json,
            tx(dir, |c| {
                let n = c.execute(
                    "UPDATE pending SET status='declined', reason=?2, decided_at=?3 WHERE uuid=?1 AND status='pending'",
                    rusqlite::params![uuid, reason, store::now()],
                )?;
                if n == 0 {
                    return Err(Error::new(
                        ErrorCode::NotFound,
                        format!("no pending registration with UUID {uuid}"),
                    ));
                }
                store::audit(
                    c,
                    &store::Audit {
                        actor: "admin".into(),
                        source: "cli".into(),
                        action: "pending_decline".into(),
                        uuid: Some(uuid.clone()),
                        outcome: "declined".into(),
                        detail: reason.clone(),
                        ..Default::default()
                    },
                )?;
                Ok(change(true, "pending", &uuid, "decline"))
            }),
        ),
    }
}

fn approve(
    dir: &Path,
    uuid: &str,
    host: Option<String>,
    folder: &str,
    mode: &str,
) -> Result<ChangeOut> {
    let keys = ca::SiteKeys::load(dir).map_err(|e| Error::local_state(e.to_string()))?;
    tx(dir, |c| {
        let row: Option<(String, String, String)> = c
            .query_row(
                "SELECT csr, labels, status FROM pending WHERE uuid=?1",
                [uuid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((csr, labels, status)) = row else {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("no pending registration with UUID {uuid}"),
            ));
        };
        if status != "pending" {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("registration {uuid} is already decided ({status})"),
            ));
        }
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        let name = match host.or_else(|| labels.get(admin::DEFAULT_HOSTNAME_LABEL).cloned()) {
            Some(n) => n,
            None => {
                return Err(Error::usage(
                    "the agent sent no cmk/hostname label; give --host",
                ))
            }
        };
        if store::get_host(c, &name)?.is_some() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("host {name} already exists; an existing host is never overwritten (decline, or give another --host)"),
            ));
        }
        let spec = admin::HostSpec {
            folder: Some(folder.to_string()),
            mode: Some(mode.to_string()),
            ..Default::default()
        };
        let h = admin::build_host(c, &name, &spec)?;
        store::put_host(c, &h)?;
        let lifetime = admin::cert_lifetime(c)?;
        let v = ca::verify_csr(&csr, uuid).map_err(|e| Error::usage(e.to_string()))?;
        let issued = keys
            .sign_agent_cert(&v, uuid, lifetime)
            .map_err(|e| Error::internal(e.to_string()))?;
        store::insert_registration(
            c,
            uuid,
            &name,
            &h.mode,
            "admin",
            &issued.serial_hex,
            issued.not_after,
        )?;
        c.execute(
            "UPDATE pending SET status='success', host=?2, folder=?3, agent_cert=?4, mode=?5, decided_at=?6 WHERE uuid=?1",
            rusqlite::params![uuid, name, h.folder, issued.pem, h.mode, store::now()],
        )?;
        store::audit(
            c,
            &store::Audit {
                actor: "admin".into(),
                source: "cli".into(),
                action: "pending_approve".into(),
                host: Some(name.clone()),
                uuid: Some(uuid.to_string()),
                outcome: "registered".into(),
                detail: format!("certificate serial {}", issued.serial_hex),
            },
        )?;
        Ok(change(true, "pending", uuid, "approve"))
    })
}

pub(super) fn registrations(dir: &Path, host: Option<String>) -> Result<RegistrationList> {
    read(dir, |c| {
        let now = store::now();
        let regs = match &host {
            Some(h) => store::registrations_of_host(c, h)?,
            None => store::list_registrations(c)?,
        };
        Ok(RegistrationList {
            ok: true,
            registrations: regs
                .into_iter()
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
                .collect(),
        })
    })
}

pub(super) fn unregister(dir: &Path, host: String) -> Result<ChangeOut> {
    tx(dir, |c| {
        crate::wire::validate::validate_host_name(&host)?;
        let revoked = admin::unregister(c, &host)?;
        store::audit(
            c,
            &store::Audit {
                actor: "admin".into(),
                source: "cli".into(),
                action: "unregister".into(),
                host: Some(host.clone()),
                outcome: if revoked.is_empty() {
                    "unchanged".into()
                } else {
                    "revoked".into()
                },
                detail: revoked.join(","),
                ..Default::default()
            },
        )?;
        Ok(ChangeOut {
            ok: true,
            changed: !revoked.is_empty(),
            kind: "registration".into(),
            name: host.clone(),
            action: "unregister".into(),
            revoked,
        })
    })
}
