//! Site commands: `init`, `fingerprint`, `serve`.
use std::path::Path;
use std::sync::Arc;

use super::args::{InitArgs, ServeArgs};
use super::db::{open_db, read};
use super::output::{FingerprintOut, InitOut, ServeOut};
use crate::cli::error::{Error, ErrorCode, Result};
use crate::receiver::{admin, api, auth, ca, store};

pub(super) fn init(dir: &Path, a: InitArgs) -> Result<InitOut> {
    crate::wire::validate::validate_site_name(&a.site)?;
    for s in &a.sans {
        if s.is_empty() || s.len() > 253 || s.contains(['/', ' ', '\\']) {
            return Err(Error::usage(format!("invalid --san {s:?}")));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::local_state(format!("cannot create {}: {e}", dir.display())))?;
    // Check the site before creating keys, so a mismatched re-init changes nothing.
    let loc = store::location(dir)?;
    let dbp = store::db_path(dir);
    let is_sqlite = matches!(loc, store::Location::Sqlite(_));
    if !is_sqlite || dbp.exists() {
        let c = open_db(dir)?;
        if let Some(s) = store::get_setting(&c, admin::SETTING_SITE)? {
            if s != a.site {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "{} is already initialised for site {s:?}, not {:?}",
                        dir.display(),
                        a.site
                    ),
                ));
            }
        }
    }
    let created = ca::init(dir, &a.site, &a.sans).map_err(|e| Error::local_state(e.to_string()))?;
    let lifetime = a.cert_lifetime.as_secs().max(3600) as i64;
    let db_new = is_sqlite && !dbp.exists();
    let mut c = store::open(&loc)
        .map_err(|e| Error::local_state(format!("cannot create database: {e}")))?;
    #[cfg(unix)]
    if is_sqlite {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dbp, std::fs::Permissions::from_mode(0o600));
    }
    let db_changed = store::with_tx(&mut c, |c| admin::init_db(c, &a.site, lifetime))?;
    let mut created = created;
    if db_new {
        created.push(store::DB_FILE.into());
    }
    Ok(InitOut {
        ok: true,
        site: a.site,
        dir: dir.display().to_string(),
        fingerprint: ca::server_fingerprint(dir).map_err(|e| Error::local_state(e.to_string()))?,
        site_ca_fingerprint: ca::site_ca_fingerprint(dir)
            .map_err(|e| Error::local_state(e.to_string()))?,
        changed: !created.is_empty() || db_changed,
        created,
    })
}

pub(super) fn fingerprint(dir: &Path) -> Result<FingerprintOut> {
    let err =
        |e: ca::CaError| Error::local_state(e.to_string()).hint("run tether-receiver init first");
    let server = ca::server_fingerprint(dir).map_err(err)?;
    Ok(FingerprintOut {
        ok: true,
        fingerprint: server.clone(),
        server_certificate_fingerprint: server,
        site_ca_fingerprint: ca::site_ca_fingerprint(dir).map_err(err)?,
    })
}

pub(super) fn serve(dir: &Path, a: ServeArgs) -> Result<ServeOut> {
    if a.pull_timeout.is_zero() {
        return Err(Error::usage("--pull-timeout must be positive"));
    }
    crate::wire::tls::install_default_provider();
    let (site, lifetime) = read(dir, |c| Ok((admin::site(c)?, admin::cert_lifetime(c)?)))?;
    let keys = ca::SiteKeys::load(dir).map_err(|e| Error::local_state(e.to_string()))?;
    // Scheduled pulls resume TLS sessions: the same connections are pulled every interval.
    let pull_sessions = Arc::new(crate::receiver::fetch::PullSessions::default());
    let pull_client = Arc::new(crate::receiver::fetch::client_config(
        &keys,
        Some(pull_sessions.clone()),
    )?);
    let db =
        store::Db::open(&store::location(dir)?).map_err(|e| Error::local_state(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start runtime: {e}")))?;
    // Each connection is a file descriptor; the database, keys and logs need some more.
    crate::receiver::server::raise_fd_limit(u64::from(a.max_connections) + 256);
    rt.block_on(async move {
        let listener = listen(&a.listen)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        let st_db_for_metrics = db.clone();
        let st = Arc::new(api::AppState {
            site,
            keys,
            db,
            cache: auth::CredentialCache::new(a.credential_cache_ttl),
            principals: auth::PrincipalCache::default(),
            limiter: auth::FailureLimiter::new(a.auth_fail_burst, a.auth_fail_per_minute),
            limits: api::Limits {
                max_body: a.max_body_bytes,
                max_push: a.max_push_bytes,
                max_output: a.max_output_bytes,
                request_timeout: a.request_timeout,
                handshake_timeout: a.handshake_timeout,
                header_timeout: a.header_timeout,
                caps: crate::receiver::admission::Caps {
                    connections: a.max_connections as usize,
                    connections_per_ip: a.max_connections_per_ip as usize,
                    handshakes_per_ip: a.max_handshakes_per_ip as usize,
                },
            },
            cert_lifetime: lifetime,
            port: addr.port(),
            argon2_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            ),
            emulate: a.emulate.iter().map(|e| e.to_api()).collect(),
            console: (!a.no_console)
                .then(|| crate::receiver::console::Console::new(a.console_idle_timeout)),
        });
        let signal = shutdown_signal();
        // One signal stops the listener, the scheduler and the metrics endpoint.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop = async move {
            signal.await;
            let _ = stop_tx.send(true);
        };
        if let Some(m) = &a.metrics_listen {
            let l = listen(m)?;
            let maddr = l.local_addr().map_err(|e| Error::internal(e.to_string()))?;
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::receiver::metrics::serve(l, st_db_for_metrics, stopped).await
                {
                    tracing::error!("metrics endpoint failed: {e}");
                }
            });
            tracing::info!("metrics on http://{maddr}/metrics");
        }
        let scheduler = (!a.no_scheduler).then(|| {
            let opts = crate::receiver::schedule::ScheduleOptions::new(
                a.pull_concurrency as usize,
                a.pull_timeout,
                a.max_output_bytes,
            );
            tokio::spawn(crate::receiver::schedule::run(
                st.db.clone(),
                pull_client.clone(),
                Some(pull_sessions.clone()),
                opts,
                stop_rx.clone(),
            ))
        });
        if let Some(f) = &a.ready_file {
            ca::write_atomic(f, addr.to_string().as_bytes(), 0o644)
                .map_err(|e| Error::local_state(e.to_string()))?;
        }
        tokio::spawn(crate::receiver::retention::run(
            st.db.clone(),
            a.retention.to_retention(),
        ));
        tracing::info!("listening on https://{addr}/{}/agent-receiver/", st.site);
        crate::receiver::server::serve(st, listener, stop)
            .await
            .map_err(Error::local_state)?;
        if let Some(h) = scheduler {
            let _ = h.await;
        }
        tracing::info!("shut down");
        Ok(ServeOut {
            ok: true,
            listen: addr.to_string(),
        })
    })
}

/// `--listen` may name a host; every address it resolves to is tried in turn. `[::]`
/// takes IPv4 too.
fn listen(spec: &str) -> Result<tokio::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let fail = |e: std::io::Error| Error::usage(format!("cannot listen on {spec}: {e}"));
    let mut last = None;
    for addr in spec.to_socket_addrs().map_err(fail)? {
        match crate::wire::listen::bind(addr).and_then(tokio::net::TcpListener::from_std) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::other("the address resolves to nothing")
    })))
}

/// Installs the SIGTERM handler at once and returns what resolves on SIGTERM or Ctrl-C. Called
/// before the ready file is written: a TERM right after readiness is then a clean shutdown,
/// not the default kill.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
