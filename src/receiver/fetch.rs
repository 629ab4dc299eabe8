//! The fetcher: pulls agent output as Checkmk's fetcher does (spec §3). TCP to the host's
//! address and agent port, expect the `16` marker, then TLS as the client with the site
//! certificate, SNI = connection UUID, the agent's certificate verified against the
//! agent-signing CA with name = UUID; read to EOF, decode the frame with a size limit.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls12Resumption,
    Tls13ClientSessionValue,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, NamedGroup, RootCertStore};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::SiteKeys;
use super::{admin, ingest, store};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::compression::Compression;
use crate::wire::{paths, pull, WireError};

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

/// Where and as whom to pull one host.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    /// None: legacy plaintext pull of an unregistered host (only with --allow-plaintext).
    pub uuid: Option<String>,
    pub address: String,
    pub port: u16,
}

/// TLS 1.3 tickets for resuming pulls: at most one per connection UUID (the server name),
/// only for the hosts the scheduler pulls. A resumed pull skips both certificate
/// verifications and both signatures, most of a pull's handshake CPU on either side; the
/// agent's identity rests on the full handshake that issued the first ticket (each
/// resumption brings the next one), and the daemon drops its tickets whenever its
/// connections change or it restarts. TLS 1.2 sessions are not kept.
#[derive(Debug)]
pub struct PullSessions {
    inner: Mutex<SessionMap>,
}

#[derive(Debug)]
struct SessionMap {
    slots: HashMap<ServerName<'static>, SessionSlot>,
    /// Names kept at most: the scheduler's hosts plus room for hosts added between syncs.
    cap: usize,
}

#[derive(Debug, Default)]
struct SessionSlot {
    kx_hint: Option<NamedGroup>,
    ticket: Option<Tls13ClientSessionValue>,
}

/// Names a session store keeps before the scheduler has said which hosts it pulls, and
/// beyond their number afterwards.
const SESSION_SLACK: usize = 1024;

impl Default for PullSessions {
    fn default() -> Self {
        PullSessions {
            inner: Mutex::new(SessionMap {
                slots: HashMap::new(),
                cap: SESSION_SLACK,
            }),
        }
    }
}

impl PullSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, SessionMap> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps only the tickets of `uuids` (the connections pulled now): a host whose
    /// registration ended or changed loses its ticket, and memory follows the fleet.
    pub fn keep_only<'a>(&self, uuids: impl IntoIterator<Item = &'a str>) {
        let keep: HashSet<&str> = uuids.into_iter().collect();
        let mut m = self.map();
        m.slots
            .retain(|name, _| keep.contains(name.to_str().as_ref()));
        m.cap = keep.len() + SESSION_SLACK;
    }

    /// Names holding a ticket now.
    pub fn tickets(&self) -> usize {
        self.map()
            .slots
            .values()
            .filter(|s| s.ticket.is_some())
            .count()
    }

    fn edit(&self, name: ServerName<'static>, f: impl FnOnce(&mut SessionSlot)) {
        let mut m = self.map();
        if let Some(slot) = m.slots.get_mut(&name) {
            f(slot);
        } else if m.slots.len() < m.cap {
            f(m.slots.entry(name).or_default());
        }
    }
}

impl ClientSessionStore for PullSessions {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.edit(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.map().slots.get(name).and_then(|s| s.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        // The newest ticket only: a pull resumes once per interval.
        self.edit(name, |s| s.ticket = Some(value));
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.map().slots.get_mut(name).and_then(|s| s.ticket.take())
    }
}

/// The site's TLS client for pulls: its server certificate as client certificate, agents
/// verified against the agent-signing CA. With `sessions`, pulls resume TLS 1.3 sessions
/// kept there; without, rustls' small default cache (a one-off `fetch` pulls each host once).
pub fn client_config(keys: &SiteKeys, sessions: Option<Arc<PullSessions>>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(keys.agent_ca_der.clone())
        .map_err(|e| Error::local_state(format!("agent CA: {e}")))?;
    let key = keys
        .server_key()
        .map_err(|e| Error::local_state(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(pull_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(keys.server_chain(), key)
        .map_err(|e| Error::local_state(format!("site certificate: {e}")))?;
    if let Some(s) = sessions {
        cfg.resumption = Resumption::store(s).tls12_resumption(Tls12Resumption::Disabled);
    }
    Ok(cfg)
}

/// The shared crypto provider with TLS 1.3's AES-128-GCM-SHA256 offered first (the daemon
/// follows the client's order): the keys are exchanged and signed at the 128-bit level
/// (X25519, P-256) anyway, and the SHA-384 of rustls' first choice (AES-256-GCM-SHA384)
/// has no hardware support on x86 where SHA-256 has; hashing the key schedule with it was
/// a tenth of the daemon's CPU per pull. Every suite stays on offer.
fn pull_provider() -> Arc<CryptoProvider> {
    let mut p = (*crate::wire::tls::provider()).clone();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
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

/// Agent output as one pull brought it: the frame's compression and payload (kept as
/// they are), validated by decompressing it once within the output limit.
#[derive(Debug)]
pub struct Pulled {
    pub compression: Compression,
    /// What was read; the payload starts at `start` (after the frame's header).
    data: Vec<u8>,
    start: usize,
    /// Length of the decompressed output.
    pub size: usize,
    /// Bytes read inside TLS (the whole frame).
    pub wire_bytes: usize,
    /// The TLS session was resumed with a ticket from an earlier pull.
    pub resumed: bool,
}

impl Pulled {
    /// The payload as the agent sent it (compressed with `compression`).
    pub fn payload(&self) -> &[u8] {
        &self.data[self.start..]
    }
}

/// Why a pull failed: a stable code (health reports, metrics labels) and a text.
#[derive(Debug, Clone)]
pub struct PullError {
    pub code: &'static str,
    pub text: String,
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn perr(code: &'static str, text: impl Into<String>) -> PullError {
    PullError {
        code,
        text: text.into(),
    }
}

/// Pulls one host: connect, marker, TLS (or legacy plaintext), read to EOF, validate.
/// `timeout` bounds each phase.
pub async fn pull_one(
    t: &Target,
    connector: TlsConnector,
    timeout: Duration,
    limit: usize,
) -> Result<Pulled, PullError> {
    let to = |what: &'static str| move |_| perr("timeout", format!("timeout while {what}"));
    let mut tcp = tokio::time::timeout(timeout, TcpStream::connect((t.address.as_str(), t.port)))
        .await
        .map_err(to("connecting"))?
        .map_err(|e| {
            perr(
                "connection_failed",
                format!("cannot connect to {}:{}: {e}", t.address, t.port),
            )
        })?;
    let _ = tcp.set_nodelay(true);
    let mut marker = [0u8; 2];
    tokio::time::timeout(timeout, tcp.read_exact(&mut marker))
        .await
        .map_err(to("waiting for the TLS marker"))?
        .map_err(|e| perr("no_tls", format!("no TLS marker: {e}")))?;
    let Some(uuid) = &t.uuid else {
        let data = plaintext(tcp, marker, timeout, limit).await?;
        return Ok(Pulled {
            compression: Compression::None,
            size: data.len(),
            wire_bytes: data.len(),
            data,
            start: 0,
            resumed: false,
        });
    };
    if &marker != pull::TLS_MARKER {
        // A registered host must speak TLS; plaintext would be unauthenticated data.
        return Err(perr("no_tls", "the agent did not offer TLS (no '16' marker); plaintext is refused for a registered host"));
    }
    let name = ServerName::try_from(uuid.clone())
        .map_err(|e| perr("tls_failed", format!("bad UUID as server name: {e}")))?;
    let mut tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(to("in the TLS handshake"))?
        .map_err(|e| perr("tls_failed", format!("TLS handshake failed: {e}")))?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    crate::receiver::metrics::pull_handshake(resumed);
    let mut buf = Vec::new();
    // The compressed stream can never legitimately exceed the output limit by much.
    let cap = limit as u64 + 1024;
    let mut limited = (&mut tls).take(cap + 1);
    tokio::time::timeout(timeout, limited.read_to_end(&mut buf))
        .await
        .map_err(to("reading agent data"))?
        .map_err(|e| perr("read_failed", format!("reading agent data failed: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(perr(
            "too_large",
            format!("agent data exceeds the limit of {limit} bytes"),
        ));
    }
    let _ = tls.shutdown().await;
    let mut pulled = validate_frame(buf, limit).await?;
    pulled.resumed = resumed;
    Ok(pulled)
}

/// Output a frame may declare and still be checked on the async worker: about 100 µs of
/// decompression, less than handing the check to the blocking pool and back cost a pull.
const INLINE_OUTPUT: usize = 256 * 1024;

/// Checks a pull frame (header, decompression within `limit`, `<<` start) and keeps its
/// payload compressed, in the buffer it was read into. Decompression is CPU work: a frame
/// that declares a small output (tether daemons' zstd frames carry their size) is checked
/// in place, capped at that size; anything else runs on the blocking pool.
async fn validate_frame(buf: Vec<u8>, limit: usize) -> Result<Pulled, PullError> {
    let inline = declares_small_output(&buf).then(|| check_frame(&buf, limit.min(INLINE_OUTPUT)));
    let checked = match inline {
        // Larger than it declared: checked in full against the real limit below.
        Some(Err(WireError::TooLarge(_))) if limit > INLINE_OUTPUT => None,
        other => other,
    };
    let (buf, checked) = match checked {
        Some(r) => (buf, r),
        None => tokio::task::spawn_blocking(move || {
            let r = check_frame(&buf, limit);
            (buf, r)
        })
        .await
        .map_err(|e| perr("internal", e.to_string()))?,
    };
    let (compression, start, size) = checked.map_err(|e| match e {
        WireError::TooLarge(_) => perr("too_large", e.to_string()),
        e => perr("invalid_output", e.to_string()),
    })?;
    Ok(Pulled {
        compression,
        size,
        wire_bytes: buf.len(),
        data: buf,
        start,
        resumed: false,
    })
}

/// (compression, where the payload starts, output length) of a valid frame.
fn check_frame(buf: &[u8], limit: usize) -> Result<(Compression, usize, usize), WireError> {
    let (c, payload, size) = pull::check(buf, limit)?;
    Ok((c, buf.len() - payload.len(), size))
}

/// A frame whose check is small work: uncompressed, or a zstd frame declaring an output
/// within [`INLINE_OUTPUT`] (a claim only: the check is capped at it).
fn declares_small_output(buf: &[u8]) -> bool {
    match pull::split(buf) {
        Ok((Compression::None, p)) => p.len() <= INLINE_OUTPUT,
        Ok((Compression::Zstd, p)) => matches!(
            zstd::zstd_safe::get_frame_content_size(p),
            Ok(Some(n)) if n <= INLINE_OUTPUT as u64
        ),
        _ => false,
    }
}

/// Legacy plaintext (spec §3.4): the raw agent output up to EOF. Only for hosts without a
/// registration, and only when the operator allowed it.
async fn plaintext(
    mut tcp: TcpStream,
    first: [u8; 2],
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, PullError> {
    if &first == pull::TLS_MARKER {
        return Err(perr(
            "no_registration",
            "the agent offers TLS but the host has no registration here; register it first",
        ));
    }
    let mut buf = first.to_vec();
    let mut limited = (&mut tcp).take(limit as u64 + 1);
    tokio::time::timeout(timeout, limited.read_to_end(&mut buf))
        .await
        .map_err(|_| perr("timeout", "timeout while reading agent data"))?
        .map_err(|e| perr("read_failed", format!("reading agent data failed: {e}")))?;
    if buf.len() > limit {
        return Err(perr(
            "too_large",
            format!("agent data exceeds the limit of {limit} bytes"),
        ));
    }
    if !buf.starts_with(b"<<") {
        return Err(perr(
            "invalid_output",
            "agent output does not begin with '<<'",
        ));
    }
    Ok(buf)
}

pub fn run(dir: &Path, a: &FetchOptions) -> Result<FetchOut> {
    let keys = SiteKeys::load(dir).map_err(|e| Error::local_state(e.to_string()))?;
    let conn = store::open_db(dir)?;
    admin::site(&conn)?;
    let targets = targets(&conn, a)?;
    let connector = TlsConnector::from(Arc::new(client_config(&keys, None)?));
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
                let r = pull_one(&t, connector, timeout, limit).await;
                crate::receiver::metrics::pull_finished(
                    r.as_ref().err().map_or("ok", |e| e.code),
                    start.elapsed().as_secs_f64(),
                );
                let r = match r {
                    Ok(p) => {
                        let host = t.host.clone();
                        let stored = tokio::task::spawn_blocking(move || {
                            let c = conn
                                .lock()
                                .map_err(|_| "database lock poisoned".to_string())?;
                            ingest::store_compressed(
                                &c,
                                &host,
                                "pull",
                                p.compression,
                                p.payload(),
                                p.size,
                            )
                            .map(|_| p.size)
                            .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        stored
                    }
                    Err(e) => Err(e.text),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::compression;

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_string()).unwrap()
    }

    fn check(frame: Vec<u8>, limit: usize) -> Result<(usize, usize), &'static str> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(validate_frame(frame, limit))
            .map(|p| (p.size, p.payload().len()))
            .map_err(|e| e.code)
    }

    #[test]
    fn frames_are_checked_in_place_or_on_the_pool_with_the_same_verdict() {
        let out = b"<<<check_mk>>>\n".repeat(12_800); // 200 KB: declared, checked in place
        let small = pull::encode(Compression::Zstd, &out);
        assert_eq!(
            check(small.clone(), 1 << 20),
            Ok((out.len(), small.len() - 3))
        );
        assert_eq!(check(small.clone(), out.len() - 1), Err("too_large"));
        // Two frames: the first declares 200 KB, the whole is 400 KB. Capped in place, then
        // checked in full on the pool.
        let mut two = small.clone();
        two.extend_from_slice(&compression::compress(Compression::Zstd, &out));
        assert_eq!(
            check(two.clone(), 1 << 20),
            Ok((2 * out.len(), two.len() - 3))
        );
        assert_eq!(check(two, 300 * 1024), Err("too_large"));
        // zlib declares nothing: the pool.
        let z = pull::encode(Compression::Zlib, &out);
        assert_eq!(check(z.clone(), 1 << 20), Ok((out.len(), z.len() - 3)));
        assert_eq!(
            check(pull::encode(Compression::Zstd, b"hello"), 100),
            Err("invalid_output")
        );
        assert_eq!(check(b"\x00\x00".to_vec(), 100), Err("invalid_output"));
    }

    #[test]
    fn pulls_prefer_aes128_sha256_and_offer_every_suite() {
        let all = crate::wire::tls::provider().cipher_suites.len();
        let p = pull_provider();
        assert_eq!(
            p.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(p.cipher_suites.len(), all);
    }

    #[test]
    fn sessions_follow_the_pulled_hosts_and_stay_bounded() {
        let s = PullSessions::default();
        s.set_kx_hint(name("a"), NamedGroup::X25519);
        s.set_kx_hint(name("b"), NamedGroup::X25519);
        s.keep_only(["a"]);
        assert_eq!(s.kx_hint(&name("a")), Some(NamedGroup::X25519));
        assert_eq!(
            s.kx_hint(&name("b")),
            None,
            "a host no longer pulled is forgotten"
        );
        // Names beyond the pulled hosts plus the slack are not kept.
        s.keep_only(std::iter::empty());
        for i in 0..SESSION_SLACK + 10 {
            s.set_kx_hint(name(&format!("h{i}")), NamedGroup::X25519);
        }
        assert_eq!(s.map().slots.len(), SESSION_SLACK);
        assert_eq!(s.tickets(), 0);
    }
}
