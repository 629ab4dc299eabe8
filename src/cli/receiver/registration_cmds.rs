//! Registration commands: pending registrations (list, approve, decline), the registrations
//! list, and unregister.
use std::path::Path;

use super::args::PendingCmd;
use super::db::{change, read, tx};
use super::emit;
use super::output::*;
use crate::cli::error::{Error, Result};
use crate::receiver::registrations::{self, Scope};
use crate::receiver::{approvals, ca};

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
        Ok(RegistrationList {
            ok: true,
            registrations: registrations::list(c, &Scope::Everything, host.as_deref())?,
        })
    })
}

pub(super) fn unregister(dir: &Path, host: String) -> Result<ChangeOut> {
    let by = approvals::Decider {
        actor: "admin".into(),
        source: "cli".into(),
    };
    tx(dir, |c| {
        let revoked = registrations::unregister(c, &Scope::Everything, &host, &by)?;
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
