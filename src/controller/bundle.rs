//! Connection bundles: what `proxy-register` writes and `import` reads, plus Checkmk's own
//! `registered_connections.json`, so a host can switch controllers without registering again.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys::KeyType;
use super::state::Connection;
use crate::wire::api::ConnectionMode;
use crate::wire::{certs, validate};

pub const BUNDLE_KIND: &str = "tether-connection-bundle";

/// The output of `proxy-register`: holds a private key, so it is written 0600.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Bundle {
    pub kind: String,
    pub version: u32,
    pub connection: Connection,
}

impl Bundle {
    pub fn new(connection: Connection) -> Bundle {
        Bundle {
            kind: BUNDLE_KIND.to_string(),
            version: 1,
            connection,
        }
    }
}

/// The private key must belong to the certificate, or the connection cannot work.
pub fn check_key_matches(key_pem: &str, cert_der: &[u8]) -> Result<(), String> {
    use rcgen::PublicKeyData;
    let key =
        rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("private key unreadable: {e}"))?;
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| format!("certificate unreadable: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err("the private key does not belong to the certificate".into());
    }
    Ok(())
}

/// Full validation of a connection from outside (bundle or foreign registry).
pub fn validate_connection(c: &Connection) -> Result<(), String> {
    validate::parse_uuid_v4(&c.uuid).map_err(|e| e.to_string())?;
    if !c.host_name.is_empty() {
        validate::validate_host_name(&c.host_name).map_err(|e| e.to_string())?;
    }
    if !c.site.is_empty() {
        validate::validate_site_name(&c.site).map_err(|e| e.to_string())?;
    }
    certs::cert_from_pem(&c.root_cert).map_err(|e| format!("root_cert: {e}"))?;
    let der = certs::cert_from_pem(&c.agent_cert).map_err(|e| format!("agent certificate: {e}"))?;
    let info = certs::cert_info(&der).map_err(|e| format!("agent certificate: {e}"))?;
    if info.subject_cn.as_deref() != Some(c.uuid.as_str()) {
        return Err(format!(
            "agent certificate CN {:?} does not match the connection UUID {}",
            info.subject_cn, c.uuid
        ));
    }
    check_key_matches(&c.private_key, &der)
}

#[derive(Deserialize)]
struct CmkConnection {
    uuid: String,
    private_key: String,
    certificate: String,
    root_cert: String,
}

#[derive(Deserialize)]
struct CmkRegistry {
    #[serde(default)]
    push: BTreeMap<String, CmkConnection>,
    #[serde(default)]
    pull: BTreeMap<String, CmkConnection>,
    #[serde(default)]
    pull_imported: Vec<CmkConnection>,
}

/// `server:port/site` as Checkmk keys its registry.
fn parse_site_id(id: &str) -> Option<(String, u16, String)> {
    let (addr, site) = id.rsplit_once('/')?;
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?, site.to_string()))
}

fn from_cmk(
    c: CmkConnection,
    site_id: Option<&str>,
    mode: ConnectionMode,
    host_name: &str,
) -> Result<Connection, String> {
    let (server, port, site) = match site_id {
        Some(id) => parse_site_id(id)
            .ok_or_else(|| format!("unreadable site id {id:?} (expected server:port/site)"))?,
        None => (String::new(), 0, String::new()),
    };
    let key_type = if c.private_key.contains("EC PRIVATE") {
        KeyType::Ec
    } else {
        KeyType::Rsa2048
    };
    Ok(Connection {
        uuid: c.uuid,
        server,
        port,
        site,
        host_name: host_name.to_string(),
        mode,
        root_cert: c.root_cert,
        agent_cert: c.certificate,
        private_key: c.private_key,
        key_type,
        trust: "imported".to_string(),
        registered_at: certs::now_unix(),
        fetcher_zstd: false,
    })
}

/// Parses an import document: a tether bundle, a Checkmk registry, or a single Checkmk
/// connection (`cmk-agent-ctl proxy-register` output). Every connection is validated.
pub fn parse_import(text: &str, host_name: &str) -> Result<Vec<Connection>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Vec::new();
    if value.get("kind").and_then(|k| k.as_str()) == Some(BUNDLE_KIND) {
        let b: Bundle = serde_json::from_value(value).map_err(|e| format!("bad bundle: {e}"))?;
        if b.version != 1 {
            return Err(format!("bundle version {} is not supported", b.version));
        }
        out.push(b.connection);
    } else if value.get("uuid").is_some() {
        let c: CmkConnection =
            serde_json::from_value(value).map_err(|e| format!("bad Checkmk connection: {e}"))?;
        out.push(from_cmk(c, None, ConnectionMode::Pull, host_name)?);
    } else if value.get("push").is_some()
        || value.get("pull").is_some()
        || value.get("pull_imported").is_some()
    {
        let r: CmkRegistry =
            serde_json::from_value(value).map_err(|e| format!("bad Checkmk registry: {e}"))?;
        for (id, c) in r.pull {
            out.push(from_cmk(c, Some(&id), ConnectionMode::Pull, host_name)?);
        }
        for (id, c) in r.push {
            out.push(from_cmk(c, Some(&id), ConnectionMode::Push, host_name)?);
        }
        for c in r.pull_imported {
            out.push(from_cmk(c, None, ConnectionMode::Pull, host_name)?);
        }
    } else {
        return Err("neither a tether bundle nor a Checkmk registered_connections.json".into());
    }
    for c in &out {
        validate_connection(c).map_err(|e| format!("connection {}: {e}", c.uuid))?;
    }
    Ok(out)
}
