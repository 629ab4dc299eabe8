//! mTLS calls a registered connection makes to its receiver.
use super::client::{Client, ClientCert, Target};
use super::state::Connection;
use super::trust::TrustMode;
use crate::error::{Error, Result};
use crate::wire::api::{
    RegistrationStatusV2Response, RenewCertificateRequest, RenewCertificateResponse,
};
use crate::wire::{certs, paths};

pub fn target_of(c: &Connection) -> Target {
    Target {
        host: c.server.clone(),
        port: c.port,
        site: c.site.clone(),
    }
}

/// A client that trusts only the connection's root certificate and authenticates with
/// the connection's own certificate.
pub fn mtls_client(c: &Connection) -> Result<Client> {
    let roots = certs::certs_from_pem(&c.root_cert)
        .map_err(|e| Error::local_state(format!("connection {}: root certificate: {e}", c.uuid)))?;
    let chain = certs::certs_from_pem(&c.agent_cert).map_err(|e| {
        Error::local_state(format!("connection {}: agent certificate: {e}", c.uuid))
    })?;
    let key = certs::key_from_pem(&c.private_key)
        .map_err(|e| Error::local_state(format!("connection {}: private key: {e}", c.uuid)))?;
    Client::new(
        target_of(c),
        TrustMode::Roots(roots),
        Some(ClientCert { chain, key }),
    )
}

pub fn registration_status(c: &Connection) -> Result<RegistrationStatusV2Response> {
    if c.server.is_empty() {
        return Err(Error::usage(
            "imported connection without a receiver address",
        ));
    }
    mtls_client(c)?.get_json(&paths::registration_status_v2(&c.site, &c.uuid))
}

pub fn renew_certificate(c: &Connection, csr: String) -> Result<RenewCertificateResponse> {
    mtls_client(c)?.post_json(
        &paths::renew_certificate(&c.site, &c.uuid),
        &super::client::Auth::None,
        Some(&RenewCertificateRequest { csr }),
    )
}
