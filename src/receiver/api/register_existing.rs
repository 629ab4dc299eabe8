//! `register_existing` and `register_existing_token`: registering an agent for a host that
//! already exists, authenticated by a user or by a one-time token.
use std::sync::Arc;

use crate::receiver::store::sql::Connection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::audit::{a_ip, audit_base, log_outcome, refused};
use super::authn::{authenticate_for_write, check_rate};
use super::{
    check_uuid, conn_info, csr_and_sign, ext, header, into_response, parse_json, read_body,
    ApiError, ApiResult, AppState,
};
use crate::receiver::admin::tokens;
use crate::receiver::auth;
use crate::receiver::perms::{self, Principal};
use crate::receiver::store::{self, Audit};
use crate::wire::api::{ConnectionMode, RegisterExistingRequest, RegisterExistingResponse};
use crate::wire::{certs, validate};

enum Who {
    User(Box<Principal>),
    Token {
        tref: auth::TokenRef,
        secret: String,
    },
}

pub(super) async fn register_existing(State(st): State<Arc<AppState>>, req: Request) -> Response {
    into_response(register_existing_impl(st, req, false).await)
}

pub(super) async fn register_existing_token(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> Response {
    into_response(register_existing_impl(st, req, true).await)
}

async fn register_existing_impl(
    st: Arc<AppState>,
    req: Request,
    token: bool,
) -> ApiResult<RegisterExistingResponse> {
    let ci = conn_info(&req)?;
    let mut a = audit_base(
        &ci,
        if token {
            "register_existing_token"
        } else {
            "register_existing"
        },
    );
    match register_existing_inner(&st, req, token, &mut a).await {
        Ok(r) => Ok(r),
        Err(e) => Err(refused(&st, a, e).await),
    }
}

async fn register_existing_inner(
    st: &Arc<AppState>,
    req: Request,
    token: bool,
    a: &mut Audit,
) -> ApiResult<RegisterExistingResponse> {
    let (parts, body) = req.into_parts();
    // Read the (small, bounded) body before any refusal, so the client always gets to see
    // the response instead of a connection reset mid-upload.
    let body = read_body(body, st.limits.max_body).await?;
    let mut who = if token {
        check_rate(st, a_ip(a))?;
        let (tref, secret) = header(&parts.headers, "authorization")
            .and_then(auth::parse_token)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Missing or malformed CMK-TOKEN authorization",
                )
            })?;
        a.actor = format!("token:{tref}");
        Who::Token { tref, secret }
    } else {
        Who::User(Box::new(
            authenticate_for_write(st, &parts.headers, a, false).await?,
        ))
    };
    let r: RegisterExistingRequest = parse_json(&body)?;
    a.uuid = Some(r.uuid.chars().take(64).collect());
    a.host = Some(r.host_name.chars().take(253).collect());
    check_uuid(&r.uuid)?;
    // Checkmk's text; our rule is stricter (no ':' or path characters, nothing that could
    // traverse a path).
    validate::validate_host_name(&r.host_name).map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid host name: '{}'",
            r.host_name.chars().take(253).collect::<String>()
        ))
    })?;
    let issued = csr_and_sign(st, &r.csr, &r.uuid)?;
    let job = Arc::new(ExistingJob {
        serial_hex: issued.serial_hex.clone(),
        not_after: issued.not_after,
        site: st.site.clone(),
        audit: a.clone(),
        r,
    });
    // A user taken from the principal cache whom the job finds changed (a new password,
    // or gone) authenticates afresh once.
    for fresh in [false, true] {
        let mut prefetch = store::registration_prefetch(&job.r.host_name, &job.r.uuid);
        if let Who::User(p) = &who {
            prefetch = prefetch.also(store::user_and_role_queries(&p.user.name));
        }
        let j = job.clone();
        let done = st
            .db
            .write_prefetched(prefetch, move |c, pre| j.run(c, pre, who))
            .await??;
        who = match done {
            Ok(mode) => {
                return Ok(RegisterExistingResponse {
                    root_cert: st.keys.site_ca_pem.clone(),
                    agent_cert: issued.pem,
                    connection_mode: mode,
                    tether: ext(),
                })
            }
            Err(_) if fresh => break,
            Err(()) => Who::User(Box::new(
                authenticate_for_write(st, &parts.headers, a, true).await?,
            )),
        };
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Invalid credentials",
    ))
}

/// A registration's write: what the job needs of the request, for each attempt.
struct ExistingJob {
    r: RegisterExistingRequest,
    serial_hex: String,
    not_after: i64,
    site: String,
    audit: Audit,
}

impl ExistingJob {
    /// `Err(())` when the user is no longer as authenticated (see [`Principal::confirm`]).
    fn run(
        &self,
        c: &Connection,
        pre: Option<store::Prefetched>,
        who: Who,
    ) -> ApiResult<Result<ConnectionMode, ()>> {
        let r = &self.r;
        let now = store::now();
        // The registration's reads come first, then the user's.
        let (context, user_rows) = match pre {
            Some(rows) => {
                let mut rows = rows.into_iter();
                let context = store::registration_context_of(&mut rows, &r.host_name, &r.uuid)?;
                (context, Some(rows.collect()))
            }
            None => (store::registration_context(c, &r.host_name, &r.uuid)?, None),
        };
        let store::RegistrationContext {
            host,
            of_uuid,
            of_host,
        } = context;
        let may_reregister = match &who {
            Who::User(seen) => {
                let Some(p) = Principal::confirm(c, user_rows, seen)? else {
                    return Ok(Err(()));
                };
                let allowed = match &host {
                    Some(h) => perms::may_register_existing(c, &p, h)?,
                    // Only users who could see any host learn that it does not exist.
                    None => {
                        p.has(perms::REGISTER_ANY_EXISTING)
                            || p.has(perms::SEE_ALL_FOLDERS)
                            || p.has(perms::ALL_FOLDERS)
                    }
                };
                if !allowed {
                    // Checkmk's text, verbatim (its typo included): scripts match on it.
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "You have insufficient permissions to register this host. You either \
                         need the explicit permission to register any host, the explict \
                         permission to register this host or read and write access to this host.",
                    ));
                }
                p.has(perms::REREGISTER_HOST)
            }
            Who::Token { tref, secret } => {
                use_token(c, tref, secret, &r.host_name, &r.uuid, now)?;
                false
            }
        };
        let host = host.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Host {} does not exist.", r.host_name),
            )
        })?;
        check_host_here(&host, &self.site)?;
        identity_lock(
            c,
            &host.name,
            &r.uuid,
            (of_uuid, of_host),
            may_reregister,
            now,
        )?;
        let mode = ConnectionMode::parse(&host.mode).unwrap_or(ConnectionMode::Pull);
        store::insert_registration(
            c,
            &r.uuid,
            &host.name,
            mode.as_str(),
            &self.audit.actor,
            &self.serial_hex,
            self.not_after,
        )?;
        let mut ok = self.audit.clone();
        ok.outcome = "registered".into();
        ok.detail = format!("certificate serial {}", self.serial_hex);
        store::audit(c, &ok)?;
        log_outcome(&ok);
        Ok(Ok(mode))
    }
}

pub(super) fn check_host_here(host: &store::Host, site: &str) -> ApiResult<()> {
    if host.site != site {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "This host is monitored on the site {}, but you tried to register it at the site {site}.",
                host.site
            ),
        ));
    }
    if host.cluster {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "This host is a cluster host. Register its nodes instead.",
        ));
    }
    Ok(())
}

/// Validates and consumes a host-bound token inside the registration's transaction, so a
/// token can never be used twice, even by concurrent requests. A scoped enrollment token
/// never registers an existing host, and such a refusal counts no use.
fn use_token(
    c: &Connection,
    tref: &auth::TokenRef,
    secret: &str,
    host: &str,
    uuid: &str,
    now: i64,
) -> ApiResult<()> {
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let Some((t, digest)) = tokens::lookup(c, tref)? else {
        return Err(unauthorized("Invalid token".into()));
    };
    tokens::check_secret(&t, &digest, secret, now).map_err(unauthorized)?;
    if t.host.as_deref() != Some(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            match &t.host {
                Some(_) => format!("This token is not valid for host {host}."),
                None => format!(
                    "{} may only register new hosts (scope: {}); it never registers an existing host such as {host}.",
                    t.label(),
                    t.scope_text()
                ),
            },
        ));
    }
    if !tokens::count_use(c, t.id, uuid, now)? {
        return Err(unauthorized("Token has already been used".into()));
    }
    Ok(())
}

/// **ext** identity lock: a host with a live registration under another UUID is not taken
/// over unless the user may re-register hosts; then the old link is revoked. Weighs the
/// registrations of `uuid` and of `host` read before (store::registration_context).
fn identity_lock(
    c: &Connection,
    host: &str,
    uuid: &str,
    (of_uuid, of_host): (Option<store::Registration>, Vec<store::Registration>),
    may_reregister: bool,
    now: i64,
) -> ApiResult<()> {
    if let Some(reg) = of_uuid {
        if reg.host != host && reg.live(now) && !may_reregister {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "UUID {uuid} is already registered for host {}. Unregister it first \
                         (tether-receiver unregister {}) or use a user with permission {}.",
                    reg.host,
                    reg.host,
                    perms::REREGISTER_HOST
                ),
            ));
        }
    }
    let others: Vec<_> = of_host
        .into_iter()
        .filter(|r| r.uuid != uuid && r.live(now))
        .collect();
    if !others.is_empty() && !may_reregister {
        let o = &others[0];
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Host {host} is already registered with UUID {} (certificate valid until {}). \
                 Unregister it first (tether-receiver unregister {host}), or register with a user \
                 holding permission {}.",
                o.uuid,
                o.cert_not_after.map(certs::rfc3339).unwrap_or_default(),
                perms::REREGISTER_HOST
            ),
        ));
    }
    for o in others {
        store::revoke_registration(c, &o.uuid)?;
    }
    Ok(())
}
