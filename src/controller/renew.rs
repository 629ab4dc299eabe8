//! Certificate renewal (spec §2): new key and CSR with the same UUID, sent over mTLS with
//! the still valid certificate; the new certificate replaces the old one atomically.
use super::keys;
use super::register::{accept_from_receiver, state_err, LOCK_WAIT};
use super::remote;
use super::state::{Connection, Store};
use crate::error::{Error, ErrorCode, Result};

/// True when less than `below_fraction` of the certificate's lifetime is left.
pub fn needs_renewal(c: &Connection, below_fraction: f64, now: i64) -> bool {
    let Some(info) = c.cert_info() else {
        return true;
    };
    let lifetime = info.lifetime_secs().max(1) as f64;
    (info.remaining_secs(now) as f64) < lifetime * below_fraction
}

/// Renews one connection and stores the result; returns the updated connection.
pub fn renew(store: &Store, uuid: &str) -> Result<Connection> {
    let lock = store.lock(LOCK_WAIT).map_err(state_err)?;
    let mut reg = store.load().map_err(state_err)?;
    let Some(idx) = reg.connections.iter().position(|c| c.uuid == uuid) else {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("no connection {uuid}"),
        ));
    };
    let current = reg.connections[idx].clone();
    if current.server.is_empty() {
        return Err(Error::usage(format!(
            "connection {uuid} was imported without a receiver address and cannot be renewed here"
        )));
    }
    let new =
        keys::new_key_and_csr_from(&store.home, uuid, current.key_type).map_err(Error::internal)?;
    let resp = remote::renew_certificate(&current, new.csr_pem)?;
    let updated = accept_from_receiver(Connection {
        agent_cert: resp.agent_cert,
        private_key: new.key_pem,
        ..current
    })?;
    reg.connections[idx] = updated.clone();
    store.save(&lock, &reg).map_err(state_err)?;
    keys::refill_in_background(&store.home, updated.key_type);
    Ok(updated)
}
