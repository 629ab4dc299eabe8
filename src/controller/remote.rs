//! mTLS calls a registered connection makes to its receiver.
use super::client::{Client, ClientCert, Target};
use super::refusals::{self, explain, Route};
use super::state::Connection;
use super::trust::TrustMode;
use crate::error::{Error, Result};
use crate::wire::api::{
    ConnectionMode, RegistrationStatusV1Response, RegistrationStatusV2Response,
    RenewCertificateRequest, RenewCertificateResponse,
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

/// What the site says about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteStatus {
    Registered {
        hostname: String,
        connection_mode: ConnectionMode,
    },
    NotRegistered,
    /// The receiver offers no status endpoint this controller knows: nothing can be
    /// concluded, so nothing should be changed because of it.
    Unverifiable(String),
}

/// Asks `registration_status_v2`, falling back to the older `registration_status` on
/// receivers that route only that one.
pub fn registration_status(c: &Connection) -> Result<SiteStatus> {
    if c.server.is_empty() {
        return Err(Error::usage(
            "imported connection without a receiver address",
        ));
    }
    let client = mtls_client(c)?;
    match client.get_json(&paths::registration_status_v2(&c.site, &c.uuid)) {
        Ok(RegistrationStatusV2Response::Registered {
            hostname,
            connection_mode,
        }) => {
            return Ok(SiteStatus::Registered {
                hostname,
                connection_mode,
            })
        }
        Ok(RegistrationStatusV2Response::NotRegistered) => return Ok(SiteStatus::NotRegistered),
        Err(e) if !refusals::is_unrouted(&e) => return Err(explain(&client, Route::Mtls, e)),
        Err(_) => tracing::debug!(
            "no registration_status_v2 on {}; trying registration_status",
            c.site
        ),
    }
    let v1: Result<RegistrationStatusV1Response> =
        client.get_json(&paths::registration_status_v1(&c.site, &c.uuid));
    match v1 {
        Ok(RegistrationStatusV1Response {
            hostname: Some(hostname),
            connection_type: Some(connection_mode),
            ..
        }) => Ok(SiteStatus::Registered {
            hostname,
            connection_mode,
        }),
        // Linked to nothing yet (a new-host registration in progress) or not at all.
        Ok(_) => Ok(SiteStatus::NotRegistered),
        Err(e) if refusals::is_unrouted(&e) => Ok(SiteStatus::Unverifiable(format!(
            "the receiver of site {} offers neither registration_status_v2 nor registration_status",
            c.site
        ))),
        Err(e) if e.0.http_status == Some(404) => Ok(SiteStatus::NotRegistered),
        Err(e) => Err(explain(&client, Route::Mtls, e)),
    }
}

pub fn renew_certificate(c: &Connection, csr: String) -> Result<RenewCertificateResponse> {
    let client = mtls_client(c)?;
    client
        .post_json(
            &paths::renew_certificate(&c.site, &c.uuid),
            &super::client::Auth::None,
            Some(&RenewCertificateRequest { csr }),
        )
        .map_err(|e| explain(&client, Route::Mtls, e))
}
