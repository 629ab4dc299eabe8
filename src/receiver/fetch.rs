//! The fetcher: pulls agent output as Checkmk's fetcher does (spec §3). TCP to the host's
//! address and agent port, expect the `16` marker, then TLS as the client with the site
//! certificate, SNI = connection UUID, the agent's certificate verified against the
//! agent-signing CA with name = UUID; read to EOF, decode the frame with a size limit.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::SiteKeys;
use super::{admin, ingest, store};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::{paths, pull};

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// One host, or None for every registered pull host.
    pub host: Option<String>,
    pub concurrency: usize,
    /// Timeout of each phase (connect, handshake, read).
    pub timeout: Duration,
    /// Largest agent output after decompression in bytes.
    pub max_output_bytes: usize,
    /// Also pull hosts without a registration in legacy plaintext mode.
    pub allow_plaintext: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FetchResult {
    pub host: String,
    pub ok: bool,
    /// Bytes of agent output stored (after decompression).
    pub bytes: usize,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FetchOut {
    pub ok: bool,
    pub results: Vec<FetchResult>,
    pub succeeded: usize,
    pub failed: usize,
}

struct Target {
    host: String,
    /// None: legacy plaintext pull of an unregistered host (only with --allow-plaintext).
    uuid: Option<String>,
    address: String,
    port: u16,
}

fn client_config(keys: &SiteKeys) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(keys.agent_ca_der.clone())
        .map_err(|e| Error::local_state(format!("agent CA: {e}")))?;
    let key = keys
        .server_key()
        .map_err(|e| Error::local_state(e.to_string()))?;
    ClientConfig::builder_with_provider(crate::wire::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(keys.server_chain(), key)
        .map_err(|e| Error::local_state(format!("site certificate: {e}")))
}

fn targets(c: &crate::receiver::store::Connection, a: &FetchOptions) -> Result<Vec<Target>> {
    let now = store::now();
    let hosts = match &a.host {
        Some(h) => {
            crate::wire::validate::validate_host_name(h)?;
            vec![store::get_host(c, h)?.ok_or_else(|| {
                Error::new(ErrorCode::HostNotFound, format!("Host {h} does not exist."))
            })?]
        }
        None => store::list_hosts(c)?
            .into_iter()
            .filter(|h| h.mode == "pull-agent" && !h.cluster)
            .collect(),
    };
    let mut out = Vec::new();
    for h in hosts {
        let live = store::registrations_of_host(c, &h.name)?
            .into_iter()
            .filter(|r| r.live(now))
            .max_by_key(|r| r.registered_at);
        let uuid = match live {
            Some(r) => Some(r.uuid),
            None if a.allow_plaintext => None,
            None if a.host.is_some() => {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!(
                        "host {} has no live registration; register its agent first \
                         (or allow legacy plaintext with --allow-plaintext)",
                        h.name
                    ),
                ))
            }
            None => continue,
        };
        out.push(Target {
            address: h.address.clone().unwrap_or_else(|| h.name.clone()),
            port: h.agent_port.unwrap_or(paths::DEFAULT_PULL_PORT),
            host: h.name,
            uuid,
        });
    }
    Ok(out)
}

async fn fetch_one(
    t: &Target,
    connector: TlsConnector,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let to = |what: &'static str| move |_| format!("timeout while {what}");
    let mut tcp = tokio::time::timeout(timeout, TcpStream::connect((t.address.as_str(), t.port)))
        .await
        .map_err(to("connecting"))?
        .map_err(|e| format!("cannot connect to {}:{}: {e}", t.address, t.port))?;
    let mut marker = [0u8; 2];
    tokio::time::timeout(timeout, tcp.read_exact(&mut marker))
        .await
        .map_err(to("waiting for the TLS marker"))?
        .map_err(|e| format!("no TLS marker: {e}"))?;
    let Some(uuid) = &t.uuid else {
        return plaintext(tcp, marker, timeout, limit).await;
    };
    if &marker != pull::TLS_MARKER {
        // A registered host must speak TLS; plaintext would be unauthenticated data.
        return Err("the agent did not offer TLS (no '16' marker); plaintext is refused for a registered host".into());
    }
    let name =
        ServerName::try_from(uuid.clone()).map_err(|e| format!("bad UUID as server name: {e}"))?;
    let mut tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(to("in the TLS handshake"))?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let mut buf = Vec::new();
    // The compressed stream can never legitimately exceed the output limit by much.
    let cap = limit as u64 + 1024;
    let mut limited = (&mut tls).take(cap + 1);
    tokio::time::timeout(timeout, limited.read_to_end(&mut buf))
        .await
        .map_err(to("reading agent data"))?
        .map_err(|e| format!("reading agent data failed: {e}"))?;
    if buf.len() as u64 > cap {
        return Err(format!("agent data exceeds the limit of {limit} bytes"));
    }
    let _ = tls.shutdown().await;
    pull::decode(&buf, limit).map_err(|e| e.to_string())
}

/// Legacy plaintext (spec §3.4): the raw agent output up to EOF. Only for hosts without a
/// registration, and only when the operator allowed it.
async fn plaintext(
    mut tcp: TcpStream,
    first: [u8; 2],
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    if &first == pull::TLS_MARKER {
        return Err(
            "the agent offers TLS but the host has no registration here; register it first".into(),
        );
    }
    let mut buf = first.to_vec();
    let mut limited = (&mut tcp).take(limit as u64 + 1);
    tokio::time::timeout(timeout, limited.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout while reading agent data".to_string())?
        .map_err(|e| format!("reading agent data failed: {e}"))?;
    if buf.len() > limit {
        return Err(format!("agent data exceeds the limit of {limit} bytes"));
    }
    if !buf.starts_with(b"<<") {
        return Err("agent output does not begin with '<<'".into());
    }
    Ok(buf)
}

pub fn run(dir: &Path, a: &FetchOptions) -> Result<FetchOut> {
    let keys = SiteKeys::load(dir).map_err(|e| Error::local_state(e.to_string()))?;
    let conn = store::open_db(dir)?;
    admin::site(&conn)?;
    let targets = targets(&conn, a)?;
    let connector = TlsConnector::from(Arc::new(client_config(&keys)?));
    let conn = Arc::new(Mutex::new(conn));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let results = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
        let mut handles = Vec::new();
        for t in targets {
            let sem = sem.clone();
            let connector = connector.clone();
            let conn = conn.clone();
            let (timeout, limit) = (a.timeout, a.max_output_bytes);
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let start = Instant::now();
                let r = fetch_one(&t, connector, timeout, limit).await;
                let r = match r {
                    Ok(data) => {
                        let host = t.host.clone();
                        let stored = tokio::task::spawn_blocking(move || {
                            let c = conn
                                .lock()
                                .map_err(|_| "database lock poisoned".to_string())?;
                            ingest::store_output(&c, &host, "pull", &data)
                                .map(|_| data.len())
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        stored
                    }
                    Err(e) => Err(e),
                };
                FetchResult {
                    host: t.host,
                    ok: r.is_ok(),
                    bytes: *r.as_ref().unwrap_or(&0),
                    duration_ms: start.elapsed().as_millis() as u64,
                    error: r.err(),
                }
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            if let Ok(r) = h.await {
                out.push(r);
            }
        }
        out
    });
    let failed = results.iter().filter(|r| !r.ok).count();
    let out = FetchOut {
        ok: failed == 0,
        succeeded: results.len() - failed,
        failed,
        results,
    };
    if a.host.is_some() && failed == 1 {
        let msg = out.results[0].error.clone().unwrap_or_default();
        return Err(Error::new(
            ErrorCode::Network,
            format!("fetch {}: {msg}", out.results[0].host),
        ));
    }
    Ok(out)
}
