//! `register_new` and `register_new_ongoing`: auto-registration of new hosts by the rules,
//! or holding them for an administrator's approval.
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::receiver::store::sql::{params, OptionalExtension};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::audit::a_ip;
use super::audit::{audit_base, log_outcome, refused};
use super::authn::{authenticate, check_rate};
use super::{
    check_uuid, conn_info, csr_and_sign, ext, header, into_response, parse_json, read_body,
    ApiError, ApiResult, AppState,
};
use crate::receiver::admin::{self, tokens, Rule};
use crate::receiver::auth;
use crate::receiver::perms::{self, Principal};
use crate::receiver::store::{self, Audit};
use crate::wire::api::{
    ConnectionMode, RegisterNewOngoingResponse, RegisterNewRequest, RegisterNewResponse,
};
use crate::wire::validate;

const MAX_LABELS: usize = 200;
const MAX_LABEL_LEN: usize = 1024;

/// The state a new registration is left in (a row of the `pending` table).
#[derive(Default)]
struct NewOutcome {
    /// pending, declined or success.
    status: &'static str,
    host: Option<String>,
    folder: Option<String>,
    reason: Option<String>,
    cert: Option<String>,
    mode: Option<String>,
}

impl NewOutcome {
    fn declined(reason: String) -> Self {
        NewOutcome {
            status: "declined",
            reason: Some(reason),
            ..NewOutcome::default()
        }
    }
    fn for_host(mut self, host: &str, folder: Option<&str>) -> Self {
        self.host = Some(host.to_string());
        self.folder = folder.map(str::to_string);
        self
    }
}

/// What a rule decided for a new registration.
enum Decision {
    Create {
        folder: String,
        host: String,
        mode: ConnectionMode,
    },
    Declined(String),
    /// Held for approval; the rule's folder (if it names one) is where the host would go.
    Hold(Option<String>),
}

fn decide(rules: &[Rule], labels: &BTreeMap<String, String>) -> (Option<String>, Decision) {
    let Some(rule) = rules.iter().find(|r| r.matches(labels)) else {
        return (None, Decision::Hold(None));
    };
    let name = Some(rule.name.clone());
    match rule.action.as_str() {
        "create" => {
            let label = rule
                .hostname_label
                .clone()
                .unwrap_or_else(|| admin::DEFAULT_HOSTNAME_LABEL.to_string());
            let Some(host) = labels.get(&label) else {
                return (
                    name,
                    Decision::Declined(format!(
                        "The agent did not send the label {label}, which names the host."
                    )),
                );
            };
            if let Err(e) = validate::validate_host_name(host) {
                return (name, Decision::Declined(e.to_string()));
            }
            (
                name,
                Decision::Create {
                    folder: rule.folder.clone().unwrap_or_else(|| "/".into()),
                    host: host.clone(),
                    mode: rule
                        .mode
                        .as_deref()
                        .and_then(ConnectionMode::parse)
                        .unwrap_or(ConnectionMode::Pull),
                },
            )
        }
        "decline" => (
            name,
            Decision::Declined(
                rule.reason
                    .clone()
                    .unwrap_or_else(|| "Declined by rule".into()),
            ),
        ),
        _ => (name, Decision::Hold(rule.folder.clone())),
    }
}

pub(super) async fn register_new(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let r = async {
        let ci = conn_info(&req)?;
        let mut a = audit_base(&ci, "register_new");
        match register_new_inner(&st, req, &mut a).await {
            Ok(v) => Ok(v),
            Err(e) => Err(refused(&st, a, e).await),
        }
    }
    .await;
    into_response(r)
}

/// Who asks to register a new host: a site user, or a scoped enrollment token.
enum NewWho {
    User(Box<Principal>),
    Token {
        tref: auth::TokenRef,
        secret: String,
    },
}

/// The name a pending registration is recorded under; polls must present the same.
fn token_actor(t: &tokens::TokenInfo) -> String {
    format!("token:{}", t.id)
}

/// Basic credentials, or (**ext**) `Authorization: CMK-TOKEN ID:SECRET`.
async fn new_who(st: &Arc<AppState>, headers: &HeaderMap, a: &mut Audit) -> ApiResult<NewWho> {
    let Some((tref, secret)) = header(headers, "authorization").and_then(auth::parse_token) else {
        return Ok(NewWho::User(Box::new(authenticate(st, headers, a).await?)));
    };
    check_rate(st, a_ip(a))?;
    a.actor = format!("token:{tref}");
    // The name only labels the audit rows; the decision is taken in the write transaction.
    let r = tref.clone();
    if let Some((t, _)) = st.db.read(move |c| tokens::lookup(c, &r))? {
        a.actor = format!("token:{} ({})", t.id, t.name.as_deref().unwrap_or("-"));
    }
    Ok(NewWho::Token { tref, secret })
}

/// Authenticates a token for `register_new` and checks what does not depend on the rules:
/// kind and required labels. Refusals count no use.
fn token_for_new(
    c: &crate::receiver::store::Connection,
    tref: &auth::TokenRef,
    secret: &str,
    labels: &BTreeMap<String, String>,
    now: i64,
) -> ApiResult<tokens::TokenInfo> {
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let (t, digest) =
        tokens::lookup(c, tref)?.ok_or_else(|| unauthorized("Invalid token".into()))?;
    tokens::check_secret(&t, &digest, secret, now).map_err(unauthorized)?;
    if let Some(h) = &t.host {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is bound to host {h} and registers only that host (register_existing_token).",
                t.label()
            ),
        ));
    }
    for (k, v) in &t.labels {
        if labels.get(k) != Some(v) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Outside the scope of {} ({}): the agent must send the label {k}={v}.",
                    t.label(),
                    t.scope_text()
                ),
            ));
        }
    }
    Ok(t)
}

fn outside_folder(t: &tokens::TokenInfo, rule: &Option<String>, folder: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "Outside the scope of {} ({}): rule {} would put the host in folder {folder}.",
            t.label(),
            t.scope_text(),
            rule.as_deref().unwrap_or("(none matched)")
        ),
    )
}

async fn register_new_inner(
    st: &Arc<AppState>,
    req: Request,
    a: &mut Audit,
) -> ApiResult<RegisterNewResponse> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, st.limits.max_body).await?;
    let who = new_who(st, &parts.headers, a).await?;
    let r: RegisterNewRequest = parse_json(&body)?;
    a.uuid = Some(r.uuid.chars().take(64).collect());
    check_uuid(&r.uuid)?;
    if r.agent_labels.len() > MAX_LABELS
        || r.agent_labels
            .iter()
            .any(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "Too many or too long agent labels (at most {MAX_LABELS}, each up to {MAX_LABEL_LEN} bytes)"
        )));
    }
    let issued = csr_and_sign(st, &r.csr, &r.uuid)?;
    let site = st.site.clone();
    let audit = a.clone();
    st.db
        .write(move |c| -> ApiResult<()> {
            let now = store::now();
            let (token, actor) = match &who {
                NewWho::User(p) => {
                    let any_new = p.has(perms::REGISTER_ANY_NEW)
                        || p.has(perms::REGISTER_NEW_IN_MANAGED_FOLDER)
                        || p.has(perms::MANAGE_HOSTS);
                    if !any_new {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            format!(
                                "Insufficient permissions: user {} may not register new hosts.",
                                p.user.name
                            ),
                        ));
                    }
                    (None, p.user.name.clone())
                }
                NewWho::Token { tref, secret } => {
                    let t = token_for_new(c, tref, secret, &r.agent_labels, now)?;
                    let actor = token_actor(&t);
                    (Some(t), actor)
                }
            };
            let prev: Option<(String, String)> = c
                .query_row(
                    "SELECT user, status FROM pending WHERE uuid=?1",
                    [&r.uuid],
                    |x| Ok((x.get(0)?, x.get(1)?)),
                )
                .optional()?;
            if let Some((user, status)) = prev {
                if user != actor || status == "success" {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!(
                            "A registration with UUID {} already exists; use a new UUID.",
                            r.uuid
                        ),
                    ));
                }
            }
            if store::get_registration(c, &r.uuid)?.is_some_and(|x| x.live(now)) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("UUID {} is already registered; use a new UUID.", r.uuid),
                ));
            }
            let rules = admin::rules(c).map_err(|e| ApiError::internal(e.to_string()))?;
            let (rule, decision) = decide(&rules, &r.agent_labels);
            // A token's folder scope bounds where the rules may put the host.
            let in_scope = |folder: &str| -> ApiResult<()> {
                match &token {
                    Some(t)
                        if !tokens::folder_within(folder, t.folder.as_deref().unwrap_or("/")) =>
                    {
                        Err(outside_folder(t, &rule, folder))
                    }
                    _ => Ok(()),
                }
            };
            let out = match decision {
                Decision::Create { folder, host, mode } => {
                    in_scope(&folder)?;
                    if let NewWho::User(p) = &who {
                        if !perms::may_register_new(c, p, &folder)? {
                            return Err(ApiError::new(
                                StatusCode::FORBIDDEN,
                                format!(
                                    "Insufficient permissions: user {} may not create hosts in \
                                     folder {folder}.",
                                    p.user.name
                                ),
                            ));
                        }
                    }
                    if store::get_folder(c, &folder)?.is_none() {
                        NewOutcome::declined(format!(
                            "The target folder {folder} of rule {} does not exist.",
                            rule.clone().unwrap_or_default()
                        ))
                        .for_host(&host, None)
                    } else if store::get_host(c, &host)?.is_some() {
                        // Never overwrite an existing host through auto-registration.
                        NewOutcome::declined(format!(
                            "Host {host} already exists; an existing host is never \
                             overwritten by a new registration."
                        ))
                        .for_host(&host, Some(&folder))
                    } else {
                        store::put_host(
                            c,
                            &store::Host {
                                name: host.clone(),
                                folder: folder.clone(),
                                contact_groups: vec![],
                                site: site.clone(),
                                cluster: false,
                                mode: mode.as_str().into(),
                                address: None,
                                agent_port: None,
                                pull_interval: None,
                            },
                        )?;
                        store::insert_registration(
                            c,
                            &r.uuid,
                            &host,
                            mode.as_str(),
                            &actor,
                            &issued.serial_hex,
                            issued.not_after,
                        )?;
                        NewOutcome {
                            status: "success",
                            cert: Some(issued.pem.clone()),
                            mode: Some(mode.as_str().to_string()),
                            ..NewOutcome::default()
                        }
                        .for_host(&host, Some(&folder))
                    }
                }
                Decision::Declined(reason) => NewOutcome::declined(reason),
                Decision::Hold(folder) => {
                    in_scope(folder.as_deref().unwrap_or("/"))?;
                    NewOutcome {
                        status: "pending",
                        folder,
                        ..NewOutcome::default()
                    }
                }
            };
            // A token pays one use for each host it creates or puts in the queue; refusals
            // and declines cost nothing. Counted in this transaction: exact under load.
            if let (Some(t), "success" | "pending") = (&token, out.status) {
                if !tokens::count_use(c, t.id, &r.uuid, now)? {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("Token has no uses left (all {} used)", t.max_uses),
                    ));
                }
            }
            let decided_at = (out.status != "pending").then_some(now);
            c.execute(
                "INSERT INTO pending(uuid, user, csr, labels, status, host, folder, reason,
                     agent_cert, mode, created_at, decided_at, source)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)
                 ON CONFLICT(uuid) DO UPDATE SET csr=excluded.csr, labels=excluded.labels,
                   status=excluded.status, host=excluded.host, folder=excluded.folder,
                   reason=excluded.reason, agent_cert=excluded.agent_cert, mode=excluded.mode,
                   created_at=excluded.created_at, decided_at=excluded.decided_at,
                   source=excluded.source",
                params![
                    r.uuid,
                    actor,
                    r.csr,
                    store::to_json(&r.agent_labels),
                    out.status,
                    out.host,
                    out.folder,
                    out.reason,
                    out.cert,
                    out.mode,
                    now,
                    decided_at,
                    audit.source
                ],
            )?;
            let mut ok = audit.clone();
            ok.host = out.host;
            ok.outcome = format!("new: {}", out.status);
            ok.detail = match (&rule, &out.reason) {
                (Some(rn), Some(rs)) => format!("rule {rn}: {rs}"),
                (Some(rn), None) => format!("rule {rn}"),
                (None, _) => "no rule matched; held for approval".into(),
            };
            if let Some(t) = &token {
                ok.detail.push_str(&format!(
                    "; {} use {}/{}",
                    t.label(),
                    t.uses + 1,
                    t.max_uses
                ));
            }
            store::audit(c, &ok)?;
            log_outcome(&ok);
            Ok(())
        })
        .await??;
    Ok(RegisterNewResponse {
        root_cert: st.keys.site_ca_pem.clone(),
    })
}

pub(super) async fn register_new_ongoing(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let r = async {
        let ci = ci?;
        let mut a = audit_base(&ci, "register_new_ongoing");
        a.uuid = Some(uuid.chars().take(64).collect());
        let inner = async {
            let actor = ongoing_actor(&st, &headers, &mut a).await?;
            check_uuid(&uuid)?;
            let u = uuid.clone();
            let row = st.db.read(move |c| {
                c.query_row(
                    "SELECT user, status, reason, agent_cert, mode FROM pending WHERE uuid=?1",
                    [&u],
                    |x| {
                        Ok((
                            x.get::<_, String>(0)?,
                            x.get::<_, String>(1)?,
                            x.get::<_, Option<String>>(2)?,
                            x.get::<_, Option<String>>(3)?,
                            x.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()
            })?;
            let Some((user, status, reason, cert, mode)) = row else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "No registration with this UUID in progress",
                ));
            };
            if user != actor {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "A registration is in progress, but it was triggered by a different user",
                ));
            }
            Ok(match status.as_str() {
                "success" => RegisterNewOngoingResponse::Success {
                    agent_cert: cert.unwrap_or_default(),
                    connection_mode: mode
                        .as_deref()
                        .and_then(ConnectionMode::parse)
                        .unwrap_or(ConnectionMode::Pull),
                    tether: ext(),
                },
                "declined" => RegisterNewOngoingResponse::Declined {
                    reason: reason.unwrap_or_default(),
                },
                _ => RegisterNewOngoingResponse::InProgress,
            })
        };
        match inner.await {
            Ok(v) => Ok(v),
            // Polls are frequent: audit only refusals, not every InProgress.
            Err(e) => Err(refused(&st, a, e).await),
        }
    }
    .await;
    into_response(r)
}

/// Who polls: the same user, or the same token (a revoked one is refused; an expired or used
/// up one may still learn the outcome of the registration it already paid for).
async fn ongoing_actor(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    a: &mut Audit,
) -> ApiResult<String> {
    match new_who(st, headers, a).await? {
        NewWho::User(p) => Ok(p.user.name),
        NewWho::Token { tref, secret } => {
            let found = st.db.read(move |c| tokens::lookup(c, &tref))?;
            match found {
                Some((t, digest)) if auth::token_matches(&secret, &digest) && !t.revoked => {
                    Ok(token_actor(&t))
                }
                _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid token")),
            }
        }
    }
}
