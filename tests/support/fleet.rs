//! A simulated fleet for scheduler tests and benches: many hosts registered with a real
//! receiver (`register_existing`, each with its own UUID, key and certificate) and served
//! by one real `tether daemon` whose registry holds all those connections.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One registered host: its connection as the daemon keeps it.
#[derive(Clone)]
pub struct FleetConn {
    pub host: String,
    pub uuid: String,
    pub cert: String,
    pub key: String,
}

/// An HTTPS client trusting only the site CA.
pub fn site_agent(site_ca_pem: &str) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut site_ca_pem.as_bytes()) {
        roots.add(c.expect("cert")).expect("add root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(cfg))
        .timeout(Duration::from_secs(60))
        .build()
}

/// Registers every host in `hosts` (which must exist) at `rcv_addr`, `threads` at a time.
pub fn register_fleet(
    rcv_addr: SocketAddr,
    site: &str,
    site_ca_pem: &str,
    user: &str,
    password: &str,
    hosts: &[String],
    threads: usize,
) -> Vec<FleetConn> {
    use base64::Engine;
    let agent = site_agent(site_ca_pem);
    let url = format!("https://{rcv_addr}/{site}/agent-receiver/register_existing");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let chunks: Vec<&[String]> = hosts.chunks(hosts.len().div_ceil(threads.max(1))).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (agent, url, auth) = (&agent, &url, &auth);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|host| {
                            let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
                            let key = rcgen::KeyPair::generate().expect("key");
                            let mut p = rcgen::CertificateParams::default();
                            let mut dn = rcgen::DistinguishedName::new();
                            dn.push(rcgen::DnType::CommonName, uuid.as_str());
                            p.distinguished_name = dn;
                            let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
                            let resp = agent
                                .post(url)
                                .set("Authorization", auth)
                                .send_json(serde_json::json!({
                                    "uuid": uuid, "csr": csr, "host_name": host
                                }))
                                .unwrap_or_else(|e| panic!("register {host}: {e}"));
                            let body: serde_json::Value = resp.into_json().expect("json");
                            FleetConn {
                                host: host.clone(),
                                uuid,
                                cert: body["agent_cert"].as_str().expect("agent_cert").into(),
                                key: key.serialize_pem(),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("register thread"))
            .collect()
    })
}

/// Writes the daemon's registry (`TETHER_HOME/registry.json`) holding every connection.
pub fn write_registry(
    home: &Path,
    site: &str,
    rcv_addr: SocketAddr,
    site_ca_pem: &str,
    conns: &[FleetConn],
) {
    let connections: Vec<serde_json::Value> = conns
        .iter()
        .map(|c| {
            serde_json::json!({
                "uuid": c.uuid,
                "server": rcv_addr.ip().to_string(),
                "port": rcv_addr.port(),
                "site": site,
                "host_name": c.host,
                "mode": "pull-agent",
                "root_cert": site_ca_pem,
                "agent_cert": c.cert,
                "private_key": c.key,
                "key_type": "ec",
                "trust": "imported",
                "registered_at": 0,
                "fetcher_zstd": true,
            })
        })
        .collect();
    let doc = serde_json::json!({"version": 1, "connections": connections, "pending": []});
    let path = home.join("registry.json");
    std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write registry");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
}

/// A daemon configuration serving `fixture` to many concurrent pulls from loopback.
pub fn daemon_config(fixture: &Path) -> String {
    format!(
        "[agent]\nfile = {:?}\n[pull]\nregistry_poll_ms = 200\nphase_timeout_secs = 5\n\
         max_connections_per_ip = 1024\n",
        fixture.display().to_string()
    )
}
