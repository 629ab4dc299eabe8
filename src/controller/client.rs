//! HTTPS client for the receiver API (spec §1): ureq over a rustls config with our own
//! verifier, so trust failures can show the operator what the server presented.
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::proxy;
use super::trust::{Observed, TrustMode, Verifier};
use crate::error::{Error, ErrorCode};
use crate::wire::api::ErrorBody;
use crate::wire::{paths, tls};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a receiver lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub site: String,
}

impl Target {
    /// `HOST[:PORT]` and a site; without a port it is discovered from the site's web server.
    pub fn resolve(server: &str, site: &str) -> Result<Target, Error> {
        crate::wire::validate::validate_site_name(site)?;
        let (host, port) = split_host_port(server)?;
        let port = match port {
            Some(p) => p,
            None => discover_port(&host, site)?,
        };
        Ok(Target {
            host,
            port,
            site: site.to_string(),
        })
    }

    fn base_url(&self) -> String {
        format!(
            "https://{}",
            super::state::format_server(&self.host, self.port)
        )
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, bare v6.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), Error> {
    let bad = || {
        Error::usage(format!(
            "invalid --server {s:?}: expected HOST or HOST:PORT"
        ))
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    if s.matches(':').count() > 1 {
        return Ok((s.to_string(), None));
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), Some(p.parse().map_err(|_| bad())?))),
        Some(_) => Err(bad()),
        None => Ok((s.to_string(), None)),
    }
}

/// Credentials for the registration endpoints.
pub enum Auth<'a> {
    None,
    Basic { user: &'a str, password: &'a str },
    Token(&'a str),
}

impl Auth<'_> {
    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Token(t) => Some(format!("{} {t}", crate::wire::api::TOKEN_SCHEME)),
        }
    }
}

pub struct Client {
    target: Target,
    agent: ureq::Agent,
    observed: Arc<Mutex<Observed>>,
    /// The proxy the calls go through (credentials redacted), for error messages.
    via: Option<String>,
}

pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn client_config(
    trust: TrustMode,
    client_cert: Option<ClientCert>,
) -> Result<(rustls::ClientConfig, Arc<Mutex<Observed>>), Error> {
    let (verifier, observed) = Verifier::new(trust);
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(cc) => builder
            .with_client_auth_cert(cc.chain, cc.key)
            .map_err(|e| Error::local_state(format!("stored client certificate unusable: {e}")))?,
    };
    Ok((config, observed))
}

impl Client {
    pub fn new(
        target: Target,
        trust: TrustMode,
        client_cert: Option<ClientCert>,
    ) -> Result<Client, Error> {
        let (config, observed) = client_config(trust, client_cert)?;
        // Every call on a connection of its own, as Checkmk's controller does: a receiver
        // closes idle keep-alive connections (gunicorn/uvicorn after 2 s), and a POST sent
        // on a pooled connection it is closing fails with EOF and cannot be retried safely.
        // The calls are seconds apart, so pooling saved nothing; TLS resumption keeps the
        // extra handshakes cheap.
        let builder = ureq::AgentBuilder::new()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .tls_config(Arc::new(config))
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirects(0);
        let (builder, via) = with_proxy(builder, "https", &target.host)?;
        Ok(Client {
            target,
            agent: builder.build(),
            observed,
            via,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.target.base_url(), path)
    }

    pub fn post_json<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&B>,
    ) -> Result<R, Error> {
        let mut req = self.agent.post(&self.url(path));
        if let Some(h) = auth.header() {
            req = req.set("Authorization", &h);
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        self.decode(resp)
    }

    /// GET without credentials: any HTTP answer proves reachability and trust. Returns
    /// the fingerprints of the chain the server presented.
    pub fn reachable(&self, path: &str) -> Result<Vec<String>, Error> {
        match self.agent.get(&self.url(path)).call() {
            Ok(_) | Err(ureq::Error::Status(..)) => Ok(self
                .observed
                .lock()
                .map(|o| o.chain_fingerprints.clone())
                .unwrap_or_default()),
            Err(e) => Err(self.map_error(e)),
        }
    }

    pub fn get_json<R: DeserializeOwned>(&self, path: &str) -> Result<R, Error> {
        self.decode(self.agent.get(&self.url(path)).call())
    }

    /// Whether the receiver routes `path` at all: any answer but 404 means it does (a GET
    /// on a POST route is 405). Tells "no such site" and "no such endpoint" apart.
    pub fn route_exists(&self, path: &str) -> Result<bool, Error> {
        match self.agent.get(&self.url(path)).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(status, _)) => Ok(status != 404),
            Err(e) => Err(self.map_error(e)),
        }
    }

    /// POST raw bytes (the multipart push); success is any 2xx.
    pub fn post_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<u16, Error> {
        let mut req = self.agent.post(&self.url(path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match req.send_bytes(body) {
            Ok(r) => Ok(r.status()),
            Err(e) => Err(self.map_error(e)),
        }
    }

    fn decode<R: DeserializeOwned>(
        &self,
        resp: Result<ureq::Response, ureq::Error>,
    ) -> Result<R, Error> {
        let resp = resp.map_err(|e| self.map_error(e))?;
        let status = resp.status();
        let mut body = Vec::new();
        resp.into_reader()
            .take(4 << 20)
            .read_to_end(&mut body)
            .map_err(|e| Error::new(ErrorCode::Network, format!("reading response: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorCode::Protocol,
                format!("the receiver's answer is not the expected JSON: {e}"),
            )
            .http_status(status)
        })
    }

    fn map_error(&self, e: ureq::Error) -> Error {
        match e {
            ureq::Error::Status(status, resp) => {
                let mut body = Vec::new();
                let _ = resp.into_reader().take(64 << 10).read_to_end(&mut body);
                let detail = serde_json::from_slice::<ErrorBody>(&body)
                    .map(|b| b.detail_text())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
                http_error(status, &detail)
            }
            ureq::Error::Transport(t) => {
                let observed = self.observed.lock().ok();
                if let Some(o) = observed.as_ref().filter(|o| o.failure.is_some()) {
                    return Error::new(
                        ErrorCode::Trust,
                        format!(
                            "cannot trust {}: {}",
                            self.target.base_url(),
                            o.failure.clone().unwrap_or_default()
                        ),
                    )
                    .fingerprints(o.chain_fingerprints.clone())
                    .hint("compare with `tether-receiver fingerprint` on the site (it shows the server certificate and the site CA), then pin one with --trust-fingerprint; the site CA's fingerprint stays valid when the server certificate is replaced");
                }
                match &self.via {
                    None => Error::new(
                        ErrorCode::Network,
                        format!(
                            "cannot reach the receiver at {}: {t}",
                            self.target.base_url()
                        ),
                    )
                    .hint("check --server and the port; the receiver listens on 8000 by default"),
                    Some(proxy) => Error::new(
                        ErrorCode::Network,
                        format!(
                            "cannot reach the receiver at {} through the proxy {proxy}: {t}",
                            self.target.base_url()
                        ),
                    )
                    .hint("check the proxy (--proxy, proxy in tether.toml, or HTTPS_PROXY/NO_PROXY with --proxy auto) and that it allows CONNECT to the receiver's port, then --server and the port"),
                }
            }
        }
    }
}

/// Maps a receiver refusal to an error with a code; the route-specific meaning and the hint
/// that says what to do are added by `refusals::explain`, which knows the route.
pub fn http_error(status: u16, detail: &str) -> Error {
    let mut err = Error::new(
        ErrorCode::from_http_status(status),
        format!("the receiver refused: {detail}"),
    )
    .http_status(status);
    err.0.server_detail = Some(detail.to_string());
    match status {
        401 => {
            err.hint("check the user name and the password or token; the receiver rejected them")
        }
        429 => err.hint("too many failed attempts from this address; wait and try again"),
        _ => err,
    }
}

/// Shows the operator which certificates the server presents when no trust option was
/// given: a handshake that accepts any certificate and one request without credentials
/// (through the proxy, if one applies). Nothing is trusted or stored.
pub fn probe_fingerprints(host: &str, port: u16) -> Result<Vec<String>, Error> {
    let target = Target {
        host: host.to_string(),
        port,
        site: String::new(),
    };
    let client = Client::new(target, TrustMode::Insecure, None)?;
    let result = client.agent.get(&client.url("/")).call();
    let fps = client
        .observed
        .lock()
        .map(|o| o.chain_fingerprints.clone())
        .unwrap_or_default();
    match result {
        // The handshake got as far as the certificates: that is all we asked for.
        _ if !fps.is_empty() => Ok(fps),
        Ok(_) | Err(ureq::Error::Status(..)) => Ok(fps),
        Err(e) => Err(client.map_error(e)),
    }
}

/// Adds the proxy that applies to `scheme://host` (see `proxy`); returns its redacted URL.
fn with_proxy(
    builder: ureq::AgentBuilder,
    scheme: &str,
    host: &str,
) -> Result<(ureq::AgentBuilder, Option<String>), Error> {
    match proxy::current().proxy_for(scheme, host)? {
        None => Ok((builder, None)),
        Some(url) => {
            let p = ureq::Proxy::new(&url)
                .map_err(|e| Error::usage(format!("invalid proxy {}: {e}", proxy::redact(&url))))?;
            tracing::debug!(
                "{scheme}://{host} through the proxy {}",
                proxy::redact(&url)
            );
            Ok((builder.proxy(p), Some(proxy::redact(&url))))
        }
    }
}

/// Finds the receiver port as Checkmk's controller does: ask the site's web server
/// (https, then http). The answer is only a port number; trust is established afterwards.
pub fn discover_port(host: &str, site: &str) -> Result<u16, Error> {
    let (config, _) = client_config(TrustMode::Insecure, None)?;
    let config = Arc::new(config);
    let host_only = super::state::url_host(host);
    let mut errors = Vec::new();
    for scheme in ["https", "http"] {
        let builder = ureq::AgentBuilder::new()
            .tls_config(config.clone())
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(15));
        let (builder, via) = with_proxy(builder, scheme, host)?;
        let agent = builder.build();
        let url = format!("{scheme}://{host_only}{}", paths::discover_receiver(site));
        let shown = match &via {
            Some(p) => format!("{url} (through the proxy {p})"),
            None => url.clone(),
        };
        match agent.get(&url).call() {
            Ok(r) => {
                let text = r.into_string().unwrap_or_default();
                if let Ok(p) = text.trim().trim_matches('"').parse::<u16>() {
                    return Ok(p);
                }
                errors.push(format!(
                    "{shown}: unexpected answer {:?}",
                    text.chars().take(40).collect::<String>()
                ));
            }
            Err(e) => errors.push(format!("{shown}: {e}")),
        }
    }
    Err(Error::new(
        ErrorCode::Network,
        format!(
            "could not discover the receiver port of site {site} on {host}: {}",
            errors.join("; ")
        ),
    )
    .hint("pass the port explicitly: --server HOST:8000"))
}
