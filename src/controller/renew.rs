//! Certificate renewal (spec §2): new key and CSR with the same UUID, sent over mTLS with
//! the still valid certificate; the new certificate replaces the old one atomically.
use super::keys;
use super::register::{state_err, LOCK_WAIT};
use super::remote;
use super::state::{Connection, Store};
use crate::cli::error::{CliError, CliResult, ErrorCode};
use crate::wire::certs;

/// True when less than `below_fraction` of the certificate's lifetime is left.
pub fn needs_renewal(c: &Connection, below_fraction: f64, now: i64) -> bool {
    let Some(info) = certs::cert_from_pem(&c.agent_cert)
        .ok()
        .and_then(|d| certs::cert_info(&d).ok())
    else {
        return true;
    };
    let lifetime = info.lifetime_secs().max(1) as f64;
    (info.remaining_secs(now) as f64) < lifetime * below_fraction
}

/// Renews one connection and stores the result; returns the updated connection.
pub fn renew(store: &Store, uuid: &str) -> CliResult<Connection> {
    let lock = store.lock(LOCK_WAIT).map_err(state_err)?;
    let mut reg = store.load().map_err(state_err)?;
    let Some(idx) = reg.connections.iter().position(|c| c.uuid == uuid) else {
        return Err(CliError::new(
            ErrorCode::NotFound,
            format!("no connection {uuid}"),
        ));
    };
    let current = reg.connections[idx].clone();
    if current.server.is_empty() {
        return Err(CliError::usage(format!(
            "connection {uuid} was imported without a receiver address and cannot be renewed here"
        )));
    }
    let new = keys::new_key_and_csr_from(&store.home, uuid, current.key_type)
        .map_err(CliError::internal)?;
    let resp = remote::renew_certificate(&current, new.csr_pem)?;
    let der = certs::cert_from_pem(&resp.agent_cert).map_err(|e| {
        CliError::new(
            ErrorCode::Protocol,
            format!("renewed certificate unusable: {e}"),
        )
    })?;
    let info = certs::cert_info(&der).map_err(|e| {
        CliError::new(
            ErrorCode::Protocol,
            format!("renewed certificate unusable: {e}"),
        )
    })?;
    if info.subject_cn.as_deref() != Some(uuid) {
        return Err(CliError::new(
            ErrorCode::Protocol,
            "renewed certificate is not for this UUID",
        ));
    }
    super::bundle::check_key_matches(&new.key_pem, &der)
        .map_err(|e| CliError::new(ErrorCode::Protocol, format!("renewed certificate: {e}")))?;
    let mut updated = current;
    updated.agent_cert = resp.agent_cert;
    updated.private_key = new.key_pem;
    reg.connections[idx] = updated.clone();
    store.save(&lock, &reg).map_err(state_err)?;
    keys::refill_in_background(&store.home, updated.key_type);
    Ok(updated)
}
