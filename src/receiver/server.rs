//! HTTPS listener: TCP accept loop, TLS with optional client certificates (chaining to the
//! agent-signing CA), one hyper HTTP/1 connection per socket serving the axum router, and
//! graceful shutdown.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::admission::{Admission, Admitted};
use super::api::{self, AppState, ConnInfo};
use crate::wire::tls::provider;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn tls_config(st: &AppState) -> Result<ServerConfig, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(st.keys.agent_ca_der.clone())
        .map_err(|e| format!("agent CA: {e}"))?;
    // Client certificates are optional at the TLS layer: registration uses passwords or
    // tokens; the mTLS routes check for a certificate themselves.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let key = st.keys.server_key().map_err(|e| e.to_string())?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(st.keys.server_chain(), key)
        .map_err(|e| format!("server certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves until `shutdown` resolves, then lets open requests finish (bounded).
pub async fn serve(
    st: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&st)?));
    let router = api::router(st.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a clone; when all are gone, draining is done.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    let admission = Arc::new(Admission::new(st.limits.caps));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Over a cap: dropping the socket closes it before any TLS work.
        let Some(admitted) = admission.admit(peer.ip()) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        let limits = st.limits.clone();
        let admission = admission.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let conn = Conn {
                tcp,
                peer,
                admitted,
            };
            handle(conn, &admission, acceptor, router, &limits, &mut stop).await;
        });
    }
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv()).await;
    Ok(())
}

/// An accepted connection and the admission slots it holds until it closes.
struct Conn {
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
}

async fn handle(
    conn: Conn,
    admission: &Admission,
    acceptor: TlsAcceptor,
    router: axum::Router,
    limits: &api::Limits,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    // `admitted` lives until the connection closes: it holds the connection slots.
    let Conn {
        tcp,
        peer,
        admitted,
    } = conn;
    // The wait for a handshake slot counts against the handshake timeout.
    let handshake = async {
        let _slot = admission.handshake(&admitted).await;
        acceptor.accept(tcp).await
    };
    let tls = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("TLS handshake with {peer} timed out");
            return;
        }
    };
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let info = ConnInfo { peer, client_cert };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection from {peer}: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await;
        }
    }
}

/// Raises the soft open-file limit to `want` (at most the hard limit): the usual soft
/// default of 1024 would make `accept` fail long before `--max-connections`.
pub fn raise_fd_limit(want: u64) {
    #[cfg(unix)]
    {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
            return;
        }
        let target = (want as libc::rlim_t).min(l.rlim_max);
        if l.rlim_cur >= target {
            return;
        }
        let old = l.rlim_cur;
        l.rlim_cur = target;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            tracing::warn!("cannot raise the open-file limit from {old} to {target}");
        } else if target < want as libc::rlim_t {
            tracing::warn!(
                "open-file limit {target} (hard limit) is below what --max-connections needs ({want})"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = want;
}
