//! The ends of a registration on the site: `tether delete` ends it there too (**ext**
//! `tether/unregister/{uuid}`, mTLS), and a machine that lost its state asks to take its host
//! name over (**ext** `tether/request_takeover`), which the site's approvers decide.
use std::time::Duration;

use uuid::Uuid;

use super::client::{Auth, Client};
use super::keys;
use super::refusals::{self, explain, Route};
use super::register::{
    await_decision, lock_and_load, register, resolve_trust, state_err, NewOutcome, Outcome,
    RegisterOptions,
};
use super::remote;
use super::state::{Connection, Pending, Store};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::api::{RegisterExistingRequest, RegisterNewResponse};
use crate::wire::{certs, paths};

/// One deleted connection and what the site made of it.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub uuid: String,
    /// `Some(true)`: the site ended the registration (or had already); `Some(false)`: it did
    /// not (see `warning`); `None`: not asked (local only, pending, or imported without a
    /// receiver address).
    pub site_unregistered: Option<bool>,
    pub warning: Option<String>,
}

/// Asks the site to end this connection's registration, authenticated by its certificate.
fn unregister_on_site(c: &Connection) -> (Option<bool>, Option<String>) {
    if c.server.is_empty() {
        return (None, None);
    }
    let client = match remote::mtls_client(c) {
        Ok(cl) => cl,
        Err(e) => {
            return (
                Some(false),
                Some(format!("not unregistered on the site: {e}")),
            )
        }
    };
    match client.post_bytes(&paths::unregister(&c.site, &c.uuid), &[], b"") {
        Ok(_) => (Some(true), None),
        Err(e) if refusals::is_unrouted(&e) => (
            Some(false),
            Some(format!(
                "site {} cannot end registrations on request (a Checkmk receiver): the host stays registered there until an administrator removes it or its certificate expires",
                c.site
            )),
        ),
        Err(e) => match explain(&client, Route::Mtls, e) {
            // Already ended (unregistered, revoked, taken over): nothing left to do there.
            e if e.code() == ErrorCode::NotRegistered => (Some(true), None),
            e => (
                Some(false),
                Some(format!(
                    "not unregistered on the site ({e}); the registration stays there until an administrator removes it or it expires"
                )),
            ),
        },
    }
}

/// Deletes the connections (and pending registrations) matching `selector` (all when
/// `None`). Unless `local_only`, each connection's registration is ended on its site first;
/// the local delete happens either way, and a site that could not be reached is a warning.
pub fn delete(store: &Store, selector: Option<&str>, local_only: bool) -> Result<Vec<Deleted>> {
    let (lock, mut reg) = lock_and_load(store)?;
    let victims: Vec<Connection> = match selector {
        Some(s) => reg.select(s).into_iter().cloned().collect(),
        None => reg.connections.clone(),
    };
    let pending_victims: Vec<String> = reg
        .pending
        .iter()
        .filter(|p| selector.is_none_or(|s| p.uuid == s))
        .map(|p| p.uuid.clone())
        .collect();
    if victims.is_empty() && pending_victims.is_empty() {
        // A selector that matches nothing is an error, so a typo does not pass for success;
        // deleting everything from an empty registry stays a no-op.
        if let Some(s) = selector {
            return Err(
                Error::new(ErrorCode::NotFound, format!("no connection matches {s:?}"))
                    .hint("tether status lists the connections (UUID, host name, SERVER/SITE)"),
            );
        }
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in &victims {
        let (site_unregistered, warning) = if local_only {
            (None, None)
        } else {
            unregister_on_site(c)
        };
        if let Some(w) = &warning {
            tracing::warn!("{w}");
        }
        out.push(Deleted {
            uuid: c.uuid.clone(),
            site_unregistered,
            warning,
        });
    }
    let gone: Vec<&str> = victims.iter().map(|c| c.uuid.as_str()).collect();
    reg.connections.retain(|c| !gone.contains(&c.uuid.as_str()));
    reg.pending.retain(|p| !pending_victims.contains(&p.uuid));
    store.save(&lock, &reg).map_err(state_err)?;
    out.extend(pending_victims.into_iter().map(|uuid| Deleted {
        uuid,
        site_unregistered: None,
        warning: None,
    }));
    Ok(out)
}

/// What `register --request-takeover` ended with.
pub enum TakeoverOutcome {
    /// No takeover was needed: registered (or unchanged) directly.
    Registered(Outcome),
    /// The request is in the site's queue, or was approved now.
    Queued(NewOutcome),
}

/// Registers; if the site's identity lock holds the host for another registration, files a
/// takeover request instead (or resumes the one filed before) and waits up to `wait`.
pub fn register_or_request_takeover(
    store: &Store,
    opts: RegisterOptions,
    wait: Option<Duration>,
    poll_interval: Duration,
) -> Result<TakeoverOutcome> {
    let t = opts.target.clone();
    let host = opts.host_name.clone();
    let resume = {
        let (_lock, reg) = lock_and_load(store)?;
        reg.pending
            .iter()
            .find(|p| {
                p.takeover_host.as_deref() == Some(host.as_str())
                    && p.server.eq_ignore_ascii_case(&t.host)
                    && p.port == t.port
                    && p.site == t.site
            })
            .cloned()
    };
    let auth_owned = (opts.creds.user.clone(), opts.creds.password.clone());
    let (Some(user), Some(password)) = (&auth_owned.0, &auth_owned.1) else {
        return Err(Error::usage(
            "--request-takeover needs a user and a password (tokens never take a host over)",
        ));
    };
    let auth = Auth::Basic { user, password };
    if let Some(p) = resume {
        return await_decision(store, &t, &auth, p, true, wait, poll_interval)
            .map(TakeoverOutcome::Queued);
    }
    let trust_choice = match &opts.trust {
        super::register::TrustChoice::Given(m) => super::register::TrustChoice::Given(m.clone()),
        super::register::TrustChoice::Unspecified => super::register::TrustChoice::Unspecified,
    };
    let key_type = opts.key_type;
    match register(store, opts) {
        Err(e) if e.code() == ErrorCode::Conflict && e.0.http_status == Some(409) => {
            tracing::info!("the site holds {host} for another registration; requesting a takeover");
        }
        other => return other.map(TakeoverOutcome::Registered),
    }
    let (lock, mut reg) = lock_and_load(store)?;
    let trust = resolve_trust(&trust_choice, &t, &reg)?;
    let trust_label = trust.label().to_string();
    let uuid = Uuid::new_v4().to_string();
    let new = keys::new_key_and_csr_from(&store.home, &uuid, key_type).map_err(Error::internal)?;
    let client = Client::new(t.clone(), trust, None)?;
    let body = RegisterExistingRequest {
        uuid: uuid.clone(),
        csr: new.csr_pem,
        host_name: host.clone(),
    };
    let resp: RegisterNewResponse = client
        .post_json(&paths::request_takeover(&t.site), &auth, Some(&body))
        .map_err(|e| {
            if refusals::is_unrouted(&e) {
                Error::new(
                    ErrorCode::Unsupported,
                    format!("the receiver of site {} does not take takeover requests (a Checkmk receiver)", t.site),
                )
                .hint("ask an administrator to unregister the old registration, or use a user with agent_registration.reregister_host")
            } else {
                explain(&client, Route::RegisterExisting, e)
            }
        })?;
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
        user: user.clone(),
        root_cert: resp.root_cert,
        private_key: new.key_pem,
        key_type,
        trust: trust_label,
        started_at: certs::now_unix(),
        agent_labels: Default::default(),
        takeover_host: Some(host),
    };
    reg.pending.push(p.clone());
    store.save(&lock, &reg).map_err(state_err)?;
    drop(lock);
    await_decision(store, &t, &auth, p, false, wait, poll_interval).map(TakeoverOutcome::Queued)
}
