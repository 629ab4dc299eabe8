//! Registration flows: existing host (password or token), new host (site decides), and
//! proxy registration (bundle for another host). Idempotent: an existing, valid
//! registration the receiver confirms is left alone.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::client::{self, Auth, Client, Target};
use super::keys::{self, KeyType};
use super::refusals::{explain, Route};
use super::remote::{self, SiteStatus};
use super::state::{Connection, Lock, Pending, Registry, Store};
use super::trust::TrustMode;
use crate::error::{Error, ErrorCode, Result};
use crate::wire::api::{
    RegisterExistingRequest, RegisterExistingResponse, RegisterNewOngoingResponse,
    RegisterNewRequest, RegisterNewResponse,
};
use crate::wire::{certs, paths};

pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Secrets as they arrived (file, stdin, env); never from argv.
#[derive(Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl Credentials {
    fn auth(&self) -> Result<Auth<'_>> {
        if let Some(t) = &self.token {
            return Ok(Auth::Token(t));
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Ok(Auth::Basic { user, password }),
            (None, _) => Err(Error::usage("no user given: pass --user (-U), or a one-time token with --token-file / TETHER_TOKEN")),
            (Some(_), None) => Err(Error::usage(
                "no password given: use --password-file FILE, --password-stdin, or the TETHER_PASSWORD environment variable",
            )),
        }
    }
}

/// How the receiver is trusted on this call, as the operator asked.
pub enum TrustChoice {
    Given(TrustMode),
    /// No option: fail with the fingerprints unless stored state already trusts the site.
    Unspecified,
}

pub struct RegisterOptions {
    pub target: Target,
    pub host_name: String,
    pub creds: Credentials,
    pub trust: TrustChoice,
    pub key_type: KeyType,
    pub force: bool,
    pub query_remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Registered,
    Unchanged,
    Replaced,
}

pub struct Outcome {
    pub action: Action,
    pub connection: Connection,
    /// Connections removed because this one replaced them.
    pub replaced: Vec<String>,
    /// Set when an existing registration for this host was renewed by registering again.
    pub reason: Option<Reason>,
    pub warnings: Vec<String>,
}

pub(crate) fn lock_and_load(store: &Store) -> Result<(Lock, Registry)> {
    let lock = store.lock(LOCK_WAIT).map_err(state_err)?;
    let reg = store.load().map_err(state_err)?;
    Ok((lock, reg))
}

pub fn state_err(e: super::state::StateError) -> Error {
    Error::local_state(e.to_string())
}

/// Resolves the trust for a first contact; without an option, shows the fingerprints.
pub(crate) fn resolve_trust(
    choice: &TrustChoice,
    target: &Target,
    reg: &Registry,
) -> Result<TrustMode> {
    match choice {
        TrustChoice::Given(m) => Ok(m.clone()),
        TrustChoice::Unspecified => {
            // A site this host is already registered with is trusted by its stored root.
            let known = reg
                .connections
                .iter()
                .find(|c| c.same_target(&target.host, target.port, &target.site));
            if let Some(c) = known {
                let roots = certs::certs_from_pem(&c.root_cert)
                    .map_err(|e| Error::local_state(format!("stored root certificate: {e}")))?;
                return Ok(TrustMode::Roots(roots));
            }
            let fps = client::probe_fingerprints(&target.host, target.port)?;
            Err(untrusted_error(target, fps))
        }
    }
}

/// No trust option for a first contact: exit 8, with what the server presented.
pub fn untrusted_error(target: &Target, fingerprints: Vec<String>) -> Error {
    Error::new(
        ErrorCode::Trust,
        format!(
            "the receiver at {} is not trusted yet and no trust option was given",
            super::state::format_server(&target.host, target.port)
        ),
    )
    .fingerprints(fingerprints)
    .hint("compare with `tether-receiver fingerprint` on the site, then pass --trust-fingerprint sha256:HEX (or --root-ca FILE)")
}

/// What a receiver returned (registration or renewal) must form a working connection
/// before anything is stored: the same checks an imported bundle gets.
pub fn accept_from_receiver(c: Connection) -> Result<Connection> {
    super::bundle::validate_connection(&c).map_err(|e| {
        Error::new(
            ErrorCode::Protocol,
            format!("the receiver returned an unusable registration: {e}"),
        )
    })?;
    Ok(c)
}

/// Why `register` registered again although this host already had a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `--force`.
    Forced,
    /// The stored certificate has expired (or is unreadable).
    CertificateExpired,
    /// The site no longer links this connection: unregistered, revoked, or another
    /// controller registered the same host name since.
    NotRegisteredOnSite,
    /// The site links this connection to a different host name.
    SiteLinksOtherHost,
    /// The site changed the host's connection mode (pull/push).
    ConnectionModeChanged,
    /// The site's approvers handed the host over from another registration.
    TakenOver,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::CertificateExpired => "certificate_expired",
            Reason::NotRegisteredOnSite => "not_registered_on_site",
            Reason::SiteLinksOtherHost => "site_links_other_host",
            Reason::ConnectionModeChanged => "connection_mode_changed",
            Reason::TakenOver => "taken_over",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Forced => "--force was given",
            Reason::CertificateExpired => "the stored certificate had expired",
            Reason::NotRegisteredOnSite => "the site no longer linked this connection (unregistered, or another controller registered this host name: check that no second machine uses it)",
            Reason::SiteLinksOtherHost => "the site linked this connection to another host name",
            Reason::ConnectionModeChanged => "the site changed the host's connection mode",
            Reason::TakenOver => {
                "the site's approvers handed this host over from its previous registration"
            }
        }
    }
}

/// Whether the receiver still links this connection to this host: `None` when it does
/// (or cannot say), else why not. An unreachable receiver is an error.
fn remote_check(
    c: &Connection,
    host_name: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Reason>> {
    match remote::registration_status(c) {
        Ok(SiteStatus::Registered {
            hostname,
            connection_mode,
        }) => Ok(if hostname != host_name {
            Some(Reason::SiteLinksOtherHost)
        } else if connection_mode != c.mode {
            Some(Reason::ConnectionModeChanged)
        } else {
            None
        }),
        Ok(SiteStatus::NotRegistered) => Ok(Some(Reason::NotRegisteredOnSite)),
        Ok(SiteStatus::Unverifiable(why)) => {
            // Re-registering on every run because the site cannot answer would churn
            // certificates and fight the identity lock; keep what we have.
            warnings.push(format!(
                "{why}; kept the local registration without confirming it"
            ));
            Ok(None)
        }
        Err(e)
            if e.code() == ErrorCode::NotRegistered
                || matches!(e.0.http_status, Some(400..=404)) =>
        {
            tracing::info!("receiver no longer accepts connection {}: {e}", c.uuid);
            Ok(Some(Reason::NotRegisteredOnSite))
        }
        Err(e) => Err(e),
    }
}

pub fn register(store: &Store, opts: RegisterOptions) -> Result<Outcome> {
    let (lock, mut reg) = lock_and_load(store)?;
    let t = &opts.target;
    let same_target: Vec<Connection> = reg
        .connections
        .iter()
        .filter(|c| c.same_target(&t.host, t.port, &t.site))
        .cloned()
        .collect();
    let mut reuse_uuid = None;
    let mut replaced = Vec::new();
    let mut reason = None;
    let mut warnings = Vec::new();
    for c in &same_target {
        if c.host_name == opts.host_name {
            reason = if opts.force {
                Some(Reason::Forced)
            } else if !cert_valid(c) {
                Some(Reason::CertificateExpired)
            } else if opts.query_remote {
                remote_check(c, &opts.host_name, &mut warnings)?
            } else {
                None
            };
            if reason.is_none() {
                return Ok(Outcome {
                    action: Action::Unchanged,
                    connection: c.clone(),
                    replaced,
                    reason,
                    warnings,
                });
            }
            if let Some(r) = reason {
                tracing::warn!("registering {} again: {}", opts.host_name, r.describe());
            }
            // Expired, unknown to the receiver, or forced: register again under the same
            // identity, so the site's identity lock sees the same controller.
            reuse_uuid = Some(c.uuid.clone());
        } else if !opts.force {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "this host is already registered with {}/{} as {:?} (connection {}); refusing to register it as {:?}",
                    c.server_address(), c.site, c.host_name, c.uuid, opts.host_name
                ),
            )
            .hint("pass --force to replace that registration, or delete it first (tether delete UUID)"));
        } else {
            replaced.push(c.uuid.clone());
        }
    }
    let trust = resolve_trust(&opts.trust, t, &reg)?;
    let uuid = reuse_uuid.unwrap_or_else(|| Uuid::new_v4().to_string());
    let new =
        keys::new_key_and_csr_from(&store.home, &uuid, opts.key_type).map_err(Error::internal)?;
    let connection = register_existing(&opts, trust, uuid.clone(), new)?;
    reg.connections
        .retain(|c| !replaced.contains(&c.uuid) && c.uuid != uuid);
    reg.connections.push(connection.clone());
    store.save(&lock, &reg).map_err(state_err)?;
    keys::refill_in_background(&store.home, opts.key_type);
    let action = if replaced.is_empty() {
        Action::Registered
    } else {
        Action::Replaced
    };
    Ok(Outcome {
        action,
        connection,
        replaced,
        reason,
        warnings,
    })
}

pub fn cert_valid(c: &Connection) -> bool {
    c.cert_info().is_some_and(|i| i.valid_at(certs::now_unix()))
}

/// Registers for another host: nothing is stored here, the bundle goes to the caller.
pub fn proxy_register(opts: RegisterOptions) -> Result<Connection> {
    let trust = resolve_trust(&opts.trust, &opts.target, &Registry::default())?;
    let uuid = Uuid::new_v4().to_string();
    let new = keys::new_key_and_csr(&uuid, opts.key_type).map_err(Error::internal)?;
    register_existing(&opts, trust, uuid, new)
}

/// One `register_existing(_token)` call; the checked result as a connection to store.
fn register_existing(
    opts: &RegisterOptions,
    trust: TrustMode,
    uuid: String,
    new: keys::NewKey,
) -> Result<Connection> {
    let t = &opts.target;
    let trust_label = trust.label().to_string();
    let client = Client::new(t.clone(), trust, None)?;
    let auth = opts.creds.auth()?;
    let (path, route) = match auth {
        Auth::Token(_) => (
            paths::register_existing_token(&t.site),
            Route::RegisterExistingToken,
        ),
        _ => (paths::register_existing(&t.site), Route::RegisterExisting),
    };
    let body = RegisterExistingRequest {
        uuid: uuid.clone(),
        csr: new.csr_pem,
        host_name: opts.host_name.clone(),
    };
    tracing::info!(server = %t.host, site = %t.site, host = %opts.host_name, "registering");
    let resp: RegisterExistingResponse = client
        .post_json(&path, &auth, Some(&body))
        .map_err(|e| explain(&client, route, e))?;
    accept_from_receiver(Connection {
        uuid,
        server: t.host.clone(),
        port: t.port,
        site: t.site.clone(),
        host_name: opts.host_name.clone(),
        mode: resp.connection_mode,
        root_cert: resp.root_cert,
        agent_cert: resp.agent_cert,
        private_key: new.key_pem,
        key_type: opts.key_type,
        trust: trust_label,
        registered_at: certs::now_unix(),
        fetcher_zstd: resp.tether.map(|x| x.fetcher_zstd).unwrap_or(false),
    })
}

pub struct RegisterNewOptions {
    pub target: Target,
    pub creds: Credentials,
    pub trust: TrustChoice,
    pub key_type: KeyType,
    pub labels: BTreeMap<String, String>,
    pub wait: Option<Duration>,
    /// Pause between two `register_new_ongoing` polls.
    pub poll_interval: Duration,
}

pub enum NewOutcome {
    Registered {
        connection: Connection,
        resumed: bool,
    },
    Pending {
        uuid: String,
        resumed: bool,
    },
}

/// Starts (or resumes) a new-host registration and waits for the site's decision.
pub fn register_new(store: &Store, opts: RegisterNewOptions) -> Result<NewOutcome> {
    let t = opts.target.clone();
    // Checked before anything is sent; the same credentials (user or scoped token) start
    // and poll.
    let auth = opts.creds.auth()?;
    let auth_user = match &auth {
        Auth::Token(t) => format!("token:{}", t.split(':').next().unwrap_or_default()),
        _ => opts.creds.user.clone().unwrap_or_default(),
    };
    let (pending, resumed) = {
        let (lock, mut reg) = lock_and_load(store)?;
        let existing = reg
            .pending
            .iter()
            .find(|p| {
                p.takeover_host.is_none()
                    && p.server.eq_ignore_ascii_case(&t.host)
                    && p.port == t.port
                    && p.site == t.site
            })
            .cloned();
        match existing {
            Some(p) => (p, true),
            None => {
                let trust = resolve_trust(&opts.trust, &t, &reg)?;
                let trust_label = trust.label().to_string();
                let uuid = Uuid::new_v4().to_string();
                let new = keys::new_key_and_csr_from(&store.home, &uuid, opts.key_type)
                    .map_err(Error::internal)?;
                let client = Client::new(t.clone(), trust, None)?;
                let body = RegisterNewRequest {
                    uuid: uuid.clone(),
                    csr: new.csr_pem,
                    agent_labels: opts.labels.clone(),
                };
                let resp: RegisterNewResponse = client
                    .post_json(&paths::register_new(&t.site), &auth, Some(&body))
                    .map_err(|e| explain(&client, Route::RegisterNew, e))?;
                certs::cert_from_pem(&resp.root_cert).map_err(|e| {
                    Error::new(
                        ErrorCode::Protocol,
                        format!("the receiver returned an unusable root certificate: {e}"),
                    )
                })?;
                let p = Pending {
                    uuid,
                    server: t.host.clone(),
                    port: t.port,
                    site: t.site.clone(),
                    user: auth_user,
                    root_cert: resp.root_cert,
                    private_key: new.key_pem,
                    key_type: opts.key_type,
                    trust: trust_label,
                    started_at: certs::now_unix(),
                    agent_labels: opts.labels.clone(),
                    takeover_host: None,
                };
                reg.pending.push(p.clone());
                store.save(&lock, &reg).map_err(state_err)?;
                (p, false)
            }
        }
    };
    await_decision(
        store,
        &t,
        &auth,
        pending,
        resumed,
        opts.wait,
        opts.poll_interval,
    )
}

/// Polls `register_new_ongoing` for a queued registration (new host or takeover) until the
/// site decides or `wait` runs out (`None`: ask once).
pub(crate) fn await_decision(
    store: &Store,
    t: &Target,
    auth: &Auth<'_>,
    pending: Pending,
    resumed: bool,
    wait: Option<Duration>,
    poll_interval: Duration,
) -> Result<NewOutcome> {
    let roots = certs::certs_from_pem(&pending.root_cert)
        .map_err(|e| Error::local_state(format!("pending registration root certificate: {e}")))?;
    let client = Client::new(t.clone(), TrustMode::Roots(roots), None)?;
    let deadline = wait.map(|w| Instant::now() + w);
    let started = Instant::now();
    let mut announced = false;
    loop {
        let status: RegisterNewOngoingResponse = client
            .post_json::<(), _>(
                &paths::register_new_ongoing(&t.site, &pending.uuid),
                auth,
                None,
            )
            .map_err(|e| explain(&client, Route::RegisterNewOngoing, e))?;
        match status {
            RegisterNewOngoingResponse::InProgress => {
                let Some(deadline) = deadline else {
                    return Ok(NewOutcome::Pending {
                        uuid: pending.uuid,
                        resumed,
                    });
                };
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorCode::Pending,
                        format!("the site has not decided on registration {} yet", pending.uuid),
                    )
                    .hint("run the same command again to resume waiting, or ask the site to approve it (tether-receiver pending approve)"));
                }
                if !announced {
                    eprintln!(
                        "waiting for the site to decide on registration {} (timeout {}s)…",
                        pending.uuid,
                        wait.map(|w| w.as_secs()).unwrap_or(0)
                    );
                    announced = true;
                } else if started.elapsed().as_secs() % 10 < 2 {
                    eprintln!("  still pending after {}s", started.elapsed().as_secs());
                }
                std::thread::sleep(
                    poll_interval.min(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(100)),
                    ),
                );
            }
            RegisterNewOngoingResponse::Declined { reason } => {
                remove_pending(store, &pending.uuid)?;
                return Err(Error::new(
                    ErrorCode::Declined,
                    format!("the site declined the registration: {reason}"),
                ));
            }
            RegisterNewOngoingResponse::Success {
                agent_cert,
                connection_mode,
                tether,
            } => {
                let mut connection = accept_from_receiver(Connection {
                    uuid: pending.uuid.clone(),
                    server: pending.server.clone(),
                    port: pending.port,
                    site: pending.site.clone(),
                    host_name: pending.takeover_host.clone().unwrap_or_default(),
                    mode: connection_mode,
                    root_cert: pending.root_cert.clone(),
                    agent_cert,
                    private_key: pending.private_key.clone(),
                    key_type: pending.key_type,
                    trust: pending.trust.clone(),
                    registered_at: certs::now_unix(),
                    fetcher_zstd: tether.map(|x| x.fetcher_zstd).unwrap_or(false),
                })?;
                // The site chose the host name; learn it over the new mTLS identity.
                if let Ok(SiteStatus::Registered { hostname, .. }) =
                    remote::registration_status(&connection)
                {
                    connection.host_name = hostname;
                }
                let lock = store.lock(LOCK_WAIT).map_err(state_err)?;
                let mut reg = store.load().map_err(state_err)?;
                reg.pending.retain(|p| p.uuid != pending.uuid);
                // A takeover replaces whatever this machine still had for that host there.
                reg.connections.retain(|c| {
                    c.uuid != connection.uuid
                        && !(pending.takeover_host.is_some()
                            && c.same_target(&t.host, t.port, &t.site))
                });
                reg.connections.push(connection.clone());
                store.save(&lock, &reg).map_err(state_err)?;
                return Ok(NewOutcome::Registered {
                    connection,
                    resumed,
                });
            }
        }
    }
}

fn remove_pending(store: &Store, uuid: &str) -> Result<()> {
    let (lock, mut reg) = lock_and_load(store)?;
    reg.pending.retain(|p| p.uuid != uuid);
    store.save(&lock, &reg).map_err(state_err)
}
