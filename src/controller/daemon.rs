//! `tether daemon`: pull server, push loop and renewal, with registry changes picked up
//! within seconds, SIGHUP reloading the configuration and SIGTERM stopping gracefully.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::agent_source::{self, Source};
use super::config::{Config, PushConfig};
use super::proxy::{self, ProxySetting};
use super::pull_server::{self, Shared};
use super::state::{self, Store};
use super::{push, renew};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::api::ConnectionMode;
use crate::wire::certs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    PullOnly,
}

const HEALTH_FILE: &str = "health.json";

/// What the daemon last saw, for `tether status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub updated_at: i64,
    pub agent_source_error: Option<String>,
    pub last_pull_at: Option<i64>,
    pub last_push_error: Option<String>,
}

pub fn read_health(home: &Path) -> Option<Health> {
    let text = std::fs::read(home.join(HEALTH_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Records health in memory and writes it only when something a person would care
/// about changed, so a busy pull server does not write a file per pull.
pub struct HealthRecorder {
    home: PathBuf,
    inner: Mutex<Health>,
}

impl HealthRecorder {
    pub fn new(home: PathBuf) -> HealthRecorder {
        HealthRecorder {
            home,
            inner: Mutex::new(Health::default()),
        }
    }
    fn update(&self, f: impl FnOnce(&mut Health) -> bool) {
        let snapshot = {
            let Ok(mut h) = self.inner.lock() else { return };
            if !f(&mut h) {
                return;
            }
            h.updated_at = certs::now_unix();
            h.clone()
        };
        if let Ok(data) = serde_json::to_vec_pretty(&snapshot) {
            if let Err(e) = state::write_atomic(&self.home.join(HEALTH_FILE), &data) {
                tracing::warn!("cannot write health file: {e}");
            }
        }
    }
    pub fn source_ok(&self) {
        self.update(|h| h.agent_source_error.take().is_some());
    }
    pub fn source_failed(&self, e: String) {
        self.update(|h| {
            let changed = h.agent_source_error.as_deref() != Some(&e);
            h.agent_source_error = Some(e);
            changed
        });
    }
    pub fn pulled(&self) {
        let now = certs::now_unix();
        // Written at most once a minute.
        self.update(|h| {
            let stale = h.last_pull_at.is_none_or(|t| now - t >= 60);
            if stale {
                h.last_pull_at = Some(now);
            }
            stale
        });
    }
    pub fn push_result(&self, e: Option<String>) {
        self.update(|h| {
            let changed = h.last_push_error != e;
            h.last_push_error = e;
            changed
        });
    }
}

fn registry_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// What `tether daemon` / `tether pull` were asked to run.
pub struct Options {
    pub role: Role,
    pub store: Store,
    pub config_path: Option<PathBuf>,
    /// Replaces `pull.listen` (tests, scripts).
    pub listen_override: Vec<SocketAddr>,
    /// Receives the bound pull addresses once listening.
    pub ready_file: Option<PathBuf>,
    /// Where `enroll.toml` / `enroll.d/` are looked for (default: `enroll::default_dir()`).
    pub enroll_dir: Option<PathBuf>,
    /// `--proxy`: wins over `proxy` in tether.toml, also after a reload.
    pub proxy_override: Option<ProxySetting>,
}

pub fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether")
        .build()
        .map_err(|e| Error::internal(format!("runtime: {e}")))?;
    rt.block_on(run_async(opts))
}

fn load_config(path: Option<&Path>, home: &Path, listen_override: &[SocketAddr]) -> Result<Config> {
    let (mut cfg, _) = Config::load_or_default(path, home)
        .map_err(|e| Error::usage(format!("configuration: {e}")))?;
    if !listen_override.is_empty() {
        cfg.pull.listen = listen_override.to_vec();
    }
    Ok(cfg)
}

/// Push, renewal and enrollment use the proxy the configuration names (validated on load).
fn apply_proxy(cfg: &Config, flag: Option<&ProxySetting>) {
    let p = match flag {
        Some(p) => p.clone(),
        None => cfg.proxy_setting().unwrap_or_default(),
    };
    tracing::debug!("calls to receivers: {}", p.describe());
    proxy::set_default(p);
}

async fn run_async(opts: Options) -> Result<()> {
    let Options {
        role,
        store,
        config_path,
        listen_override,
        ready_file,
        enroll_dir,
        proxy_override,
    } = opts;
    let cfg = load_config(config_path.as_deref(), &store.home, &listen_override)?;
    apply_proxy(&cfg, proxy_override.as_ref());
    let reg = store.load().map_err(super::register::state_err)?;
    let health = Arc::new(HealthRecorder::new(store.home.clone()));
    let shared = Arc::new(
        Shared::new(pull_server::build_state(&reg), cfg.clone(), health.clone())
            .map_err(Error::usage)?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for addr in &cfg.pull.listen {
        let listener = pull_server::bind(*addr).map_err(|e| {
            Error::new(ErrorCode::LocalState, format!("cannot listen on {addr}: {e}"))
                .hint("another agent (cmk-agent-ctl, xinetd) may hold the port; stop it or set pull.listen")
        })?;
        let local = listener.local_addr().unwrap_or(*addr);
        tracing::info!("serving pulls on {local}");
        bound.push(local);
        tasks.push(tokio::spawn(pull_server::serve(
            listener,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(f) = &ready_file {
        let text: String = bound.iter().map(|a| format!("{a}\n")).collect();
        state::write_atomic(f, text.as_bytes()).map_err(super::register::state_err)?;
    }

    tasks.push(tokio::spawn(watch_registry(
        store.clone(),
        shared.clone(),
        stop_rx.clone(),
    )));
    if role == Role::All {
        let dir = enroll_dir.unwrap_or_else(super::enroll::default_dir);
        tasks.push(tokio::spawn(enroll_loop(
            store.clone(),
            dir,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(push_loop(
            store.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(renew_loop(
            store.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(connections = reg.connections.len(), "tether daemon ready");

    let sig = |k| signal(k).map_err(|e| Error::internal(format!("signal handler: {e}")));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match load_config(config_path.as_deref(), &store.home, &listen_override) {
                    Ok(new) => {
                        apply_proxy(&new, proxy_override.as_ref());
                        if new.pull.listen != shared.config.read().map(|c| c.pull.listen.clone()).unwrap_or_default() {
                            tracing::warn!("pull.listen changed: takes effect after a restart");
                        }
                        match shared.set_config(new) {
                            Ok(()) => tracing::info!("configuration reloaded"),
                            Err(e) => tracing::error!("configuration not reloaded: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("configuration not reloaded: {e}"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // Pulls already accepted finish (each phase has its own timeout anyway).
    let phase = shared
        .config
        .read()
        .map(|c| c.pull.phase_timeout_secs)
        .unwrap_or(20);
    if !shared.drain(Duration::from_secs(phase)).await {
        tracing::warn!("stopping with pulls still in flight");
    }
    Ok(())
}

/// Converges the drop-in enrollment files at start and retries with backoff while any fails
/// or waits for the site, so a package installed before the network is up still enrolls.
async fn enroll_loop(store: Store, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0;
    loop {
        if super::enroll::locate(&dir).is_empty() {
            return;
        }
        let (s, d) = (store.clone(), dir.clone());
        let results = tokio::task::spawn_blocking(move || super::enroll::enroll_all(&s, &d, None))
            .await
            .unwrap_or_default();
        let mut open = 0;
        for r in &results {
            match (&r.error, r.state.status.as_str()) {
                (Some(e), _) => {
                    open += 1;
                    tracing::warn!("enrollment {} failed: {e}", r.file.display());
                }
                (None, "pending") => {
                    open += 1;
                    tracing::info!("enrollment {} awaits the site's decision", r.file.display());
                }
                _ if r.changed => tracing::info!("enrolled {}", r.file.display()),
                _ => {}
            }
            if let Some(n) = &r.note {
                tracing::warn!("{n}");
            }
        }
        if open == 0 {
            return;
        }
        let wait = super::enroll::backoff(attempt);
        attempt += 1;
        if sleep_or_stop(wait, &mut stop).await {
            return;
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

/// Registry changes (register, delete, renewal) take effect within one poll interval.
async fn watch_registry(store: Store, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let path = store.registry_path();
    let mut last = registry_stamp(&path);
    loop {
        let every = shared
            .config
            .read()
            .map(|c| c.pull.registry_poll_ms)
            .unwrap_or(1000)
            .max(100);
        if sleep_or_stop(Duration::from_millis(every), &mut stop).await {
            return;
        }
        let now = registry_stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match store.load() {
            Ok(reg) => {
                let st = pull_server::build_state(&reg);
                tracing::info!(
                    pull_connections = st.pull_connections,
                    "registry changed; now serving the new set"
                );
                shared.set_state(st);
            }
            Err(e) => tracing::error!(
                "registry changed but cannot be read ({e}); still serving the previous set"
            ),
        }
    }
}

async fn push_loop(store: Store, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let cfg = shared.config.read().map(|c| c.clone()).unwrap_or_default();
        let mut result = Ok(());
        if let Ok(reg) = store.load() {
            let conns: Vec<_> = reg
                .connections
                .into_iter()
                .filter(|c| c.mode == ConnectionMode::Push)
                .collect();
            if !conns.is_empty() {
                let source = Source::from_config(&cfg.agent);
                match agent_source::read_output(
                    &source,
                    None,
                    Duration::from_secs(cfg.agent.timeout_secs),
                    cfg.agent.max_output_bytes,
                )
                .await
                {
                    Ok(out) => {
                        shared.health.source_ok();
                        let out = Arc::new(out);
                        for c in conns {
                            let out = out.clone();
                            let r = tokio::task::spawn_blocking(move || {
                                push::push_once(&c, &out).map_err(|e| format!("{}: {e}", c.uuid))
                            })
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()));
                            if let Err(e) = r {
                                result = Err(e);
                            }
                        }
                    }
                    Err(e) => {
                        shared.health.source_failed(e.clone());
                        result = Err(e);
                    }
                }
            }
        }
        match &result {
            Ok(()) => {
                failures = 0;
                shared.health.push_result(None);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!("push failed ({failures} in a row): {e}");
                shared.health.push_result(Some(e.clone()));
            }
        }
        if sleep_or_stop(push_wait(&cfg.push, failures), &mut stop).await {
            return;
        }
    }
}

/// The wait before the next push: the interval plus jitter after a success, doubling backoff
/// (capped, with a little jitter) after `failures` failures in a row.
pub fn push_wait(push: &PushConfig, failures: u32) -> Duration {
    let base = push.interval_secs as f64;
    let wait = if failures == 0 {
        base * (1.0 + rand::thread_rng().gen_range(0.0..=push.jitter.max(0.0)))
    } else {
        let backoff =
            (base * 2f64.powi(failures.min(16) as i32 - 1)).min(push.max_backoff_secs as f64);
        backoff * (1.0 + rand::thread_rng().gen_range(0.0..=0.1))
    };
    Duration::from_secs_f64(wait.max(0.1))
}

async fn renew_loop(store: Store, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Spare RSA keys for the key types in use: renewals then need no key generation.
    if let Ok(reg) = store.load() {
        let mut kinds: Vec<_> = reg.connections.iter().map(|c| c.key_type).collect();
        kinds.dedup();
        for kind in kinds {
            let home = store.home.clone();
            let _ =
                tokio::task::spawn_blocking(move || super::keys::refill_spare(&home, kind)).await;
        }
    }
    loop {
        let cfg = shared.config.read().map(|c| c.clone()).unwrap_or_default();
        let mut failed = false;
        if let Ok(reg) = store.load() {
            let now = certs::now_unix();
            for c in reg.connections.iter().filter(|c| !c.server.is_empty()) {
                if !renew::needs_renewal(c, cfg.renew.below_fraction, now) {
                    continue;
                }
                let (store2, uuid) = (store.clone(), c.uuid.clone());
                match tokio::task::spawn_blocking(move || renew::renew(&store2, &uuid)).await {
                    Ok(Ok(_)) => tracing::info!(uuid = %c.uuid, "certificate renewed"),
                    Ok(Err(e)) => {
                        failed = true;
                        tracing::warn!(uuid = %c.uuid, "renewal failed: {e}")
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!("renewal task failed: {e}")
                    }
                }
            }
        }
        // After a failure retry sooner than the regular check, but not in a tight loop.
        let every = cfg.renew.check_interval_secs.max(1);
        let wait = if failed { every.min(300) } else { every };
        if sleep_or_stop(Duration::from_secs(wait), &mut stop).await {
            return;
        }
    }
}
