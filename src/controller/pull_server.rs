//! The pull server on TCP 6556 (spec §3): `16` marker, TLS with the connection's
//! certificate chosen by SNI, the site's client certificate required, then version,
//! compression byte, payload and close_notify. Guards: allow-list, per-address limit,
//! a timeout on every phase, and no plaintext unless legacy mode is on and nothing is
//! registered.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::agent_source::{self, Source};
use super::config::Config;
use super::state::Registry;
use crate::wire::api::ConnectionMode;
use crate::wire::compression::Compression;
use crate::wire::per_ip::PerIp;
use crate::wire::validate::looks_like_uuid;
use crate::wire::{certs, pull, tls};

/// One pull connection as the listener needs it.
pub struct Served {
    /// Send zstd: the site announced support at registration.
    pub zstd: bool,
    /// The connection's own site CA: the client certificate must chain to it, so one site
    /// cannot pull through another site's connection.
    pub roots: Vec<CertificateDer<'static>>,
    /// The listener trusts other roots besides `roots` (another site), so the handshake's
    /// verification does not prove the chain ends in `roots`: check it again after it.
    pub recheck_roots: bool,
}

/// What the listener serves, rebuilt whenever the registry changes.
pub struct PullState {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Per served UUID: how to serve it.
    pub served: HashMap<String, Served>,
    /// Any connection at all: plaintext is then never served.
    pub any_registered: bool,
    pub pull_connections: usize,
}

#[derive(Debug)]
struct SniResolver(HashMap<String, Arc<CertifiedKey>>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Unknown or missing SNI: no certificate, so the handshake fails (spec §3).
        hello.server_name().and_then(|n| self.0.get(n)).cloned()
    }
}

/// The site's client certificate must chain to a stored root and must not be an agent
/// certificate (CN parses as a UUID).
#[derive(Debug)]
struct SiteClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Whether a certificate's CN makes it a site certificate, by its DER: a site presents the
    /// same certificate on every pull, and parsing it each time cost more than the lookup.
    site_cn: Mutex<Vec<(Vec<u8>, bool)>>,
}

/// Distinct client certificates remembered by `SiteClientVerifier` (one per site, usually).
const SITE_CN_CACHE: usize = 8;

impl SiteClientVerifier {
    fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        SiteClientVerifier {
            inner,
            site_cn: Mutex::new(Vec::new()),
        }
    }

    fn is_site_cert(&self, der: &CertificateDer<'_>) -> bool {
        let mut cache = self.site_cn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, ok)) = cache.iter().find(|(d, _)| d[..] == der[..]) {
            return *ok;
        }
        let cn = certs::cert_info(der).ok().and_then(|i| i.subject_cn);
        let ok = !cn.as_deref().is_none_or(looks_like_uuid);
        if cache.len() >= SITE_CN_CACHE {
            cache.remove(0);
        }
        cache.push((der.to_vec(), ok));
        ok
    }
}

impl ClientCertVerifier for SiteClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.is_site_cert(end_entity) {
            return Err(rustls::Error::General(
                "client certificate is an agent certificate, not a site certificate".into(),
            ));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether a client chain verified by an earlier handshake still verifies now. Roots and
/// signatures cannot have changed (a registry change replaces the listener and its tickets),
/// only the time: while every certificate of the chain is within its validity period, so is
/// every one on the path the handshake verified, and nothing more needs doing. Outside that
/// window (one of them expired or not yet valid) the chain is verified again in full, so a
/// resumed pull is refused exactly when a full handshake would be.
#[derive(Default)]
struct ChainValidity(Mutex<Vec<(Vec<CertificateDer<'static>>, Window)>>);

/// Unix seconds: (latest not-before, earliest not-after) over a chain.
type Window = (i64, i64);

/// Distinct client chains remembered (one per site, usually).
const CHAIN_VALIDITY_CACHE: usize = 8;

impl ChainValidity {
    fn still_valid(
        &self,
        roots: &[CertificateDer<'static>],
        chain: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let now = certs::now_unix();
        let (nb, na) = self.window(chain);
        if nb <= now && now <= na {
            return Ok(());
        }
        let (ee, rest) = chain.split_first().ok_or("no client certificate")?;
        super::trust::verify_chain(roots, ee, rest, UnixTime::now(), false)
    }

    /// The chain's window; empty when a certificate is unparsable.
    fn window(&self, chain: &[CertificateDer<'static>]) -> Window {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, w)) = cache.iter().find(|(c, _)| c[..] == chain[..]) {
            return *w;
        }
        let w = chain.iter().fold((i64::MIN, i64::MAX), |(nb, na), c| {
            match certs::cert_info(c) {
                Ok(i) => (nb.max(i.not_before), na.min(i.not_after)),
                Err(_) => (i64::MAX, i64::MIN),
            }
        });
        if cache.len() >= CHAIN_VALIDITY_CACHE {
            cache.remove(0);
        }
        cache.push((chain.to_vec(), w));
        w
    }
}

/// Builds what to serve from the registry. Broken connections are skipped with a warning
/// so one bad entry cannot take the others down.
pub fn build_state(reg: &Registry) -> PullState {
    let provider = tls::provider();
    let mut keys = HashMap::new();
    let mut roots = RootCertStore::empty();
    // Each root once: the verifier lists their names in the certificate request, and one
    // copy per connection outgrows a handshake message beyond ~600 connections to one site.
    let mut seen_roots = std::collections::HashSet::new();
    let mut served = HashMap::new();
    for c in reg
        .connections
        .iter()
        .filter(|c| c.mode == ConnectionMode::Pull)
    {
        let loaded = (|| -> Result<(Arc<CertifiedKey>, Vec<CertificateDer<'static>>), String> {
            let chain = certs::certs_from_pem(&c.agent_cert).map_err(|e| e.to_string())?;
            let key = certs::key_from_pem(&c.private_key).map_err(|e| e.to_string())?;
            let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| e.to_string())?;
            let own = certs::certs_from_pem(&c.root_cert).map_err(|e| e.to_string())?;
            for r in &own {
                if seen_roots.insert(r.as_ref().to_vec()) {
                    roots.add(r.clone()).map_err(|e| e.to_string())?;
                }
            }
            Ok((Arc::new(ck), own))
        })();
        match loaded {
            Ok((ck, own)) => {
                keys.insert(c.uuid.clone(), ck);
                served.insert(
                    c.uuid.clone(),
                    Served {
                        zstd: c.fetcher_zstd,
                        roots: own,
                        recheck_roots: true,
                    },
                );
            }
            Err(e) => tracing::warn!(uuid = %c.uuid, "connection not served: {e}"),
        }
    }
    let pull_connections = keys.len();
    // Every root the listener trusts is this connection's own: the handshake has already
    // verified the chain against exactly these, so a second verification adds nothing.
    for s in served.values_mut() {
        let own: std::collections::HashSet<&[u8]> = s.roots.iter().map(|r| r.as_ref()).collect();
        s.recheck_roots = own.len() != seen_roots.len();
    }
    let tls = if keys.is_empty() {
        None
    } else {
        match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
        {
            Ok(v) => rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    let mut cfg = b
                        .with_client_cert_verifier(Arc::new(SiteClientVerifier::new(v)))
                        .with_cert_resolver(Arc::new(SniResolver(keys)));
                    // Fetchers open a fresh connection per pull; tickets let them resume.
                    // Stateless tickets, sealed with keys that live only in this config: a
                    // registry change (a connection removed, renewed or re-registered) or a
                    // restart builds a new one, and every older ticket then fails over to a
                    // full handshake. Not rustls' session cache: its removal is a linear scan,
                    // and a fleet's worth of single-use tickets made each resumption slower.
                    match rustls::crypto::ring::Ticketer::new() {
                        Ok(t) => cfg.ticketer = t,
                        Err(e) => tracing::warn!("pulls will not resume TLS sessions: {e}"),
                    }
                    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                    // One ticket per connection is enough for a fetcher that resumes once per
                    // pull (each resumption brings a new ticket); the default of two doubled
                    // the per-pull ticket work, which Checkmk's fetcher never uses.
                    cfg.send_tls13_tickets = 1;
                    Arc::new(cfg)
                })
                .map_err(|e| tracing::error!("TLS setup: {e}"))
                .ok(),
            Err(e) => {
                tracing::error!("no usable root certificate for site clients: {e}");
                None
            }
        }
    };
    PullState {
        tls,
        served,
        any_registered: !reg.connections.is_empty(),
        pull_connections,
    }
}

/// IPv4-mapped IPv6 counts as IPv4 (spec §3).
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Last framed payload per compression: agent output often repeats between pulls
/// (always for a file source), and compressing 100 KB dominates a pull's CPU.
struct CachedFrame {
    comp: Compression,
    raw: Arc<Vec<u8>>,
    framed: Arc<Vec<u8>>,
    /// For a file source: the file's stamp, taken before `raw` was read.
    stamp: Option<FileStamp>,
}

#[derive(Default)]
struct FrameCache(Mutex<Vec<CachedFrame>>);

impl FrameCache {
    fn framed(&self, c: Compression, raw: Vec<u8>, stamp: Option<FileStamp>) -> Arc<Vec<u8>> {
        if let Ok(mut cache) = self.0.lock() {
            if let Some(e) = cache.iter_mut().find(|e| e.comp == c && *e.raw == raw) {
                e.stamp = stamp;
                return e.framed.clone();
            }
        }
        let framed = Arc::new(pull::encode(c, &raw));
        if let Ok(mut cache) = self.0.lock() {
            cache.retain(|e| e.comp != c);
            cache.push(CachedFrame {
                comp: c,
                raw: Arc::new(raw),
                framed: framed.clone(),
                stamp,
            });
        }
        framed
    }

    /// The frame of a file whose stamp has not changed since it was read.
    fn by_stamp(&self, c: Compression, stamp: &FileStamp) -> Option<Arc<Vec<u8>>> {
        let cache = self.0.lock().ok()?;
        cache
            .iter()
            .find(|e| e.comp == c && e.stamp.as_ref() == Some(stamp))
            .map(|e| e.framed.clone())
    }
}

/// What tells a file's content apart without reading it: a write, truncation or rename
/// changes the inode, size or ctime (ctime cannot be set back from user space).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

/// A regular file's stamp, if the file has been left alone long enough to trust it: two
/// changes within one tick of the kernel's coarse file clock can share a ctime, so a file
/// changed in the last seconds is read every time (git's "racily clean" rule).
fn settled_stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let now = certs::now_unix();
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() || now - m.ctime() < 2 {
        return None;
    }
    Some(FileStamp {
        path: path.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        ctime: (m.ctime(), m.ctime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// Everything the accept loop shares; `state` and `config` are swapped on reload.
pub struct Shared {
    pub state: RwLock<Arc<PullState>>,
    pub config: RwLock<Arc<Config>>,
    pub allowed: RwLock<Arc<Vec<IpNet>>>,
    per_ip: PerIp,
    cache: FrameCache,
    validity: ChainValidity,
    /// The file source's path and whether it is on a local file system (see `local_fs`).
    file_local: Mutex<Option<(std::path::PathBuf, bool)>>,
    pub health: Arc<super::daemon::HealthRecorder>,
    pub conns: tokio::sync::Semaphore,
    max_conns: usize,
}

impl Shared {
    pub fn new(
        state: PullState,
        config: Config,
        health: Arc<super::daemon::HealthRecorder>,
    ) -> Result<Shared, String> {
        let allowed = config.allowed_nets()?;
        let max = config.pull.max_connections;
        Ok(Shared {
            state: RwLock::new(Arc::new(state)),
            config: RwLock::new(Arc::new(config)),
            allowed: RwLock::new(Arc::new(allowed)),
            per_ip: PerIp::default(),
            cache: FrameCache::default(),
            validity: ChainValidity::default(),
            file_local: Mutex::new(None),
            health,
            conns: tokio::sync::Semaphore::new(max),
            max_conns: max,
        })
    }
    pub fn set_state(&self, s: PullState) {
        if let Ok(mut g) = self.state.write() {
            *g = Arc::new(s);
        }
    }
    pub fn set_config(&self, c: Config) -> Result<(), String> {
        let allowed = c.allowed_nets()?;
        if let Ok(mut g) = self.allowed.write() {
            *g = Arc::new(allowed);
        }
        if let Ok(mut g) = self.config.write() {
            *g = Arc::new(c);
        }
        Ok(())
    }
    /// Waits until no pull is in flight, or `limit` passes; true when drained.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.conns.available_permits() < self.max_conns {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
    fn state(&self) -> Arc<PullState> {
        self.state
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    fn allowed(&self, ip: IpAddr) -> bool {
        let nets = self
            .allowed
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        nets.is_empty() || nets.iter().any(|n| n.contains(&ip))
    }
}

/// Binds `addr` (`[::]` dual-stack, see `wire::listen`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(crate::wire::listen::bind(addr)?)
}

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                tokio::spawn(async move { handle(stream, peer, shared).await });
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let ip = canonical(peer.ip());
    if !shared.allowed(ip) {
        tracing::info!(%ip, "pull refused: address not in pull.allowed_ip");
        return;
    }
    let Ok(_permit) = shared.conns.try_acquire() else {
        tracing::warn!(%ip, "pull refused: connection limit reached");
        return;
    };
    let cfg = shared.config();
    let Some(_slot) = shared.per_ip.acquire(ip, cfg.pull.max_connections_per_ip) else {
        tracing::info!(%ip, "pull refused: too many concurrent connections from this address");
        return;
    };
    let _ = stream.set_nodelay(true);
    let phase = Duration::from_secs(cfg.pull.phase_timeout_secs);
    let state = shared.state();
    let Some(tls_config) = state.tls.clone() else {
        if cfg.pull.legacy_plaintext && !state.any_registered {
            if let Some(out) = agent_output(&shared, &cfg, ip).await {
                let _ = timeout(phase, stream.write_all(&out)).await;
            }
        } else {
            tracing::debug!(%ip, "pull refused: nothing registered for pull and legacy plaintext is off");
        }
        return;
    };
    if !matches!(
        timeout(phase, stream.write_all(pull::TLS_MARKER)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let mut tls = match timeout(phase, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(%ip, "pull TLS handshake refused: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%ip, "pull TLS handshake timed out");
            return;
        }
    };
    let uuid = tls
        .get_ref()
        .1
        .server_name()
        .unwrap_or_default()
        .to_string();
    let Some(conn) = state.served.get(&uuid) else {
        return;
    };
    let session = tls.get_ref().1;
    // A resumed session carries the client chain its first, full handshake verified; no
    // verifier runs now, so what could have changed since is checked here.
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let peer = session.peer_certificates().unwrap_or_default();
    let bound = peer.split_first().map(|(ee, rest)| {
        if conn.recheck_roots {
            super::trust::verify_chain(&conn.roots, ee, rest, UnixTime::now(), false)
        } else if resumed {
            shared.validity.still_valid(&conn.roots, peer)
        } else {
            Ok(())
        }
    });
    if !matches!(bound, Some(Ok(()))) {
        let why = match &bound {
            Some(Err(e)) => e.as_str(),
            _ => "no client certificate",
        };
        tracing::info!(%ip, %uuid, resumed, "pull refused: client certificate is not from this connection's site or no longer valid: {why}");
        let _ = timeout(phase, tls.shutdown()).await;
        return;
    }
    let comp = if conn.zstd {
        Compression::Zstd
    } else {
        Compression::Zlib
    };
    // A file source unchanged since its last read is not read again: reading and comparing
    // 100 KB was most of what a pull cost beyond the handshake. The stamp is taken before
    // the read, so a change during the read shows at the next pull.
    let stamp = match &cfg.agent.file {
        Some(p) => file_stamp(&shared, p, phase)
            .await
            .filter(|s| (1..=cfg.agent.max_output_bytes as u64).contains(&s.len)),
        None => None,
    };
    let cached = stamp.as_ref().and_then(|s| shared.cache.by_stamp(comp, s));
    let framed = match cached {
        Some(f) => {
            shared.health.source_ok();
            f
        }
        None => {
            let Some(raw) = agent_output(&shared, &cfg, ip).await else {
                let _ = timeout(phase, tls.shutdown()).await;
                return;
            };
            shared.cache.framed(comp, raw, stamp)
        }
    };
    if let Ok(Ok(())) = timeout(phase, tls.write_all(&framed)).await {
        // close_notify: the fetcher reads to EOF.
        let _ = timeout(phase, tls.shutdown()).await;
        shared.health.pulled();
        tracing::debug!(%ip, %uuid, bytes = framed.len(), "pull served");
    }
}

/// The settled stamp of the file source. On a local file system the stat runs in place: it
/// takes a microsecond, where the hand-off to the blocking pool and back cost a sixth of a
/// pull's CPU. Elsewhere (NFS, FUSE, ...) a stat can hang, so it runs on the pool under the
/// phase timeout, as the read does.
async fn file_stamp(shared: &Shared, path: &std::path::Path, phase: Duration) -> Option<FileStamp> {
    let known = shared
        .file_local
        .lock()
        .ok()
        .and_then(|g| g.as_ref().filter(|(p, _)| p == path).map(|(_, l)| *l));
    let local = match known {
        Some(l) => l,
        None => {
            let p = path.to_path_buf();
            let l = timeout(phase, tokio::task::spawn_blocking(move || local_fs(&p)))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            // Not remembered when unknown (no such file yet, timed out): asked again next pull.
            if let (Some(l), Ok(mut g)) = (l, shared.file_local.lock()) {
                *g = Some((path.to_path_buf(), l));
            }
            l.unwrap_or(false)
        }
    };
    if local {
        return settled_stamp(path);
    }
    let p = path.to_path_buf();
    timeout(
        phase,
        tokio::task::spawn_blocking(move || settled_stamp(&p)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten()
}

/// Whether `path` is on a disk-backed or memory file system, where a stat cannot hang.
/// Unknown types count as remote; `None` when statfs fails.
fn local_fs(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    const LOCAL: &[i64] = &[
        0xEF53,     // ext2/3/4
        0x58465342, // xfs
        0x9123683E, // btrfs
        0x01021994, // tmpfs
        0x858458F6, // ramfs
        0x794C7630, // overlayfs
        0x2FC12FC1, // zfs
        0xF2F52010, // f2fs
        0x73717368, // squashfs
    ];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(LOCAL.contains(&(st.f_type as i64)))
}

async fn agent_output(shared: &Shared, cfg: &Config, ip: IpAddr) -> Option<Vec<u8>> {
    let source = Source::from_config(&cfg.agent);
    match agent_source::read_output(
        &source,
        Some(ip),
        Duration::from_secs(cfg.agent.timeout_secs),
        cfg.agent.max_output_bytes,
    )
    .await
    {
        Ok(o) => {
            shared.health.source_ok();
            Some(o)
        }
        Err(e) => {
            tracing::error!("agent source failed: {e}");
            shared.health.source_failed(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use time::{Duration as Td, OffsetDateTime};

    fn params(cn: &str, from: Td, to: Td) -> CertificateParams {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let now = OffsetDateTime::now_utc();
        p.not_before = now + from;
        p.not_after = now + to;
        p
    }

    #[test]
    fn resumed_chain_is_refused_once_a_full_handshake_would_be() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = params("site CA", Td::days(-1), Td::days(30));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let site = |from, to| {
            let c = params("mysite", from, to)
                .signed_by(&KeyPair::generate().unwrap(), &issuer)
                .unwrap();
            vec![c.der().clone(), ca_cert.der().clone()]
        };
        let roots = vec![ca_cert.der().clone()];
        let v = ChainValidity::default();
        // Within every certificate's validity: accepted (and remembered).
        let good = site(Td::hours(-1), Td::hours(1));
        assert_eq!(v.still_valid(&roots, &good), Ok(()));
        assert_eq!(v.still_valid(&roots, &good), Ok(()));
        // Expired, or not yet valid, since the session began: refused as a full handshake is.
        assert!(v
            .still_valid(&roots, &site(Td::hours(-2), Td::hours(-1)))
            .is_err());
        assert!(v
            .still_valid(&roots, &site(Td::hours(1), Td::hours(2)))
            .is_err());
        // An expired certificate the path does not use: verified in full, and accepted as a
        // full handshake accepts it.
        let stale_key = KeyPair::generate().unwrap();
        let stale = params("unrelated", Td::days(-2), Td::days(-1))
            .self_signed(&stale_key)
            .unwrap();
        let mut extra = good.clone();
        extra.push(stale.der().clone());
        assert_eq!(v.still_valid(&roots, &extra), Ok(()));
    }
}
