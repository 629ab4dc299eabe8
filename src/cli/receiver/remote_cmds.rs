//! `tether-receiver pending … --server URL`: the same commands and JSON output as on the site,
//! through its admin API as a site user (the API filters by that user's folder rights).
use super::args::{PendingCmd, RemoteArgs};
use super::db::change;
use super::emit;
use super::output::PendingList;
use crate::cli::error::{Error, Result};
use crate::receiver::admin_client::AdminClient;
use crate::receiver::approvals::ApproveOptions;
use crate::wire::certs;
use crate::wire::trust::TrustMode;

const PASSWORD_ENV: &str = "TETHER_PASSWORD";

fn password(r: &RemoteArgs) -> Result<String> {
    let pw = match &r.password_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", f.display())))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => std::env::var(PASSWORD_ENV).map_err(|_| {
            Error::usage(format!(
                "no password given: use --password-file F or {PASSWORD_ENV}"
            ))
        })?,
    };
    if pw.is_empty() {
        return Err(Error::usage("the password is empty"));
    }
    Ok(pw)
}

fn trust(r: &RemoteArgs) -> Result<TrustMode> {
    if let Some(fp) = &r.trust_fingerprint {
        return Ok(TrustMode::Fingerprint(
            certs::parse_fingerprint(fp).map_err(|e| Error::usage(e.to_string()))?,
        ));
    }
    if let Some(f) = &r.root_ca {
        let pem = std::fs::read_to_string(f)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", f.display())))?;
        let roots = certs::certs_from_pem(&pem)
            .map_err(|e| Error::usage(format!("{}: {e}", f.display())))?;
        return Ok(TrustMode::Roots(roots));
    }
    Err(
        Error::usage("--server needs --trust-fingerprint sha256:HEX or --root-ca FILE")
            .hint("`tether-receiver fingerprint` on the site shows the fingerprint of its site CA"),
    )
}

fn client(r: &RemoteArgs) -> Result<AdminClient> {
    let server = r.server.as_deref().unwrap_or_default();
    let user = r
        .user
        .as_deref()
        .ok_or_else(|| Error::usage("--server needs --user"))?;
    let trust = trust(r)?;
    let pw = password(r)?;
    AdminClient::new(server, user, &pw, trust)
}

pub(super) fn pending_remote(json: bool, r: &RemoteArgs, c: PendingCmd) -> i32 {
    let client = match client(r) {
        Ok(c) => c,
        Err(e) => return emit::<PendingList>(json, Err(e)),
    };
    match c {
        PendingCmd::List { all } => emit(
            json,
            if all {
                Err(Error::usage(
                    "--all is not available with --server: the admin API lists undecided registrations",
                ))
            } else {
                client.pending().map(|registrations| PendingList {
                    ok: true,
                    registrations,
                })
            },
        ),
        PendingCmd::Approve {
            uuid,
            host,
            folder,
            mode,
        } => {
            let opts = ApproveOptions { host, folder, mode };
            emit(
                json,
                client
                    .approve(&uuid, &opts)
                    .map(|_| change(true, "pending", &uuid, "approve")),
            )
        }
        PendingCmd::Decline { uuid, reason } => emit(
            json,
            client
                .decline(&uuid, &reason)
                .map(|_| change(true, "pending", &uuid, "decline")),
        ),
    }
}
