//! Registration commands: pending registrations (list, approve, decline), the registrations
//! list, and unregister.
use std::path::Path;

use super::args::PendingCmd;
use super::db::{change, read, tx};
use super::emit;
use super::output::*;
use crate::cli::error::{Error, Result};
use crate::receiver::{admin, approvals, ca, store};

pub(super) fn pending_cmd(json: bool, dir: &Path, c: PendingCmd) -> i32 {
    let admin = approvals::Decider {
        actor: "admin".into(),
        source: "cli".into(),
    };
    match c {
        PendingCmd::List { all } => emit(
            json,
            read(dir, |c| {
                Ok(PendingList {
                    ok: true,
                    registrations: approvals::list(c, all)?,
                })
            }),
        ),
        PendingCmd::Approve {
            uuid,
            host,
            folder,
            mode,
        } => {
            let r = ca::SiteKeys::load(dir)
                .map_err(|e| Error::local_state(e.to_string()))
                .and_then(|keys| {
                    let opts = approvals::ApproveOptions { host, folder, mode };
                    tx(dir, |c| approvals::approve(c, &keys, &uuid, &opts, &admin))
                });
            emit(json, r.map(|_| change(true, "pending", &uuid, "approve")))
        }
        PendingCmd::Decline { uuid, reason } => emit(
            json,
            tx(dir, |c| approvals::decline(c, &uuid, &reason, &admin))
                .map(|()| change(true, "pending", &uuid, "decline")),
        ),
    }
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
