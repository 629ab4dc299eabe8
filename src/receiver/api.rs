//! The agent-receiver REST API (spec §1): handlers, error bodies, authentication glue.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use rustls::pki_types::CertificateDer;

use super::admin::{self, Rule};
use super::auth::{self, CredentialCache, FailureLimiter};
use super::ca::{self, Issued, SiteKeys};
use super::perms::{self, Principal};
use super::store::{self, Audit, Db};
use crate::wire::api::{
    ConnectionMode, ErrorBody, ReceiverExtensions, RegisterExistingRequest,
    RegisterExistingResponse, RegisterNewOngoingResponse, RegisterNewRequest, RegisterNewResponse,
    RegistrationStatusV2Response, RenewCertificateRequest, RenewCertificateResponse,
};
use crate::wire::{certs, paths, validate};

/// Size and time limits; every one is a `serve` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON request body.
    pub max_body: usize,
    /// Largest compressed `agent_data` push (the whole multipart body).
    pub max_push: usize,
    /// Largest agent output after decompression (push and pull).
    pub max_output: usize,
    /// Whole-request deadline, including reading the body (slow clients).
    pub request_timeout: Duration,
    /// Deadline for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Deadline for receiving a request's headers.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            max_push: 16 * 1024 * 1024,
            max_output: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub site: String,
    pub keys: SiteKeys,
    pub db: Db,
    pub cache: CredentialCache,
    pub limiter: FailureLimiter,
    pub limits: Limits,
    pub cert_lifetime: i64,
    pub port: u16,
    /// Bounds concurrent argon2 verifications: each takes ~19 MiB and tens of ms, so an
    /// unbounded number (many source addresses guessing at once) would exhaust memory.
    pub argon2_slots: tokio::sync::Semaphore,
}

/// What the TLS layer knows about the connection a request came in on.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub client_cert: Option<CertificateDer<'static>>,
}

/// A refusal: status plus Checkmk's `{"detail": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: serde_json::Value::String(detail.into()),
        }
    }
    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error; see the receiver's log",
        )
    }
    fn text(&self) -> String {
        ErrorBody {
            detail: self.detail.clone(),
        }
        .detail_text()
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<store::DbError> for ApiError {
    fn from(e: store::DbError) -> Self {
        if e.overloaded() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The receiver is overloaded; retry shortly",
            );
        }
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                detail: self.detail,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let site = state.site.clone();
    let b = paths::base(&site);
    Router::new()
        .route(&format!("{b}/register_existing"), post(register_existing))
        .route(
            &format!("{b}/register_existing_token"),
            post(register_existing_token),
        )
        .route(&format!("{b}/register_new"), post(register_new))
        .route(
            &format!("{b}/register_new_ongoing/{{uuid}}"),
            post(register_new_ongoing),
        )
        .route(
            &format!("{b}/registration_status_v2/{{uuid}}"),
            get(registration_status_v2),
        )
        .route(
            &format!("{b}/renew_certificate/{{uuid}}"),
            post(renew_certificate),
        )
        .route(
            &format!("{b}/agent_data/{{uuid}}"),
            post(super::ingest::agent_data),
        )
        .route(&paths::discover_receiver(&site), get(discover))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        // Bodies are read with explicit limits (read_body), not axum's default.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Bounds the whole request, body included, so a slow client cannot hold a worker forever.
async fn deadline(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "Request timed out").into_response(),
    }
}

async fn discover(State(st): State<Arc<AppState>>) -> String {
    st.port.to_string()
}

fn conn_info(req: &Request) -> ApiResult<ConnInfo> {
    req.extensions()
        .get::<ConnInfo>()
        .cloned()
        .ok_or_else(|| ApiError::internal("request without connection info"))
}

/// Reads the body up to `limit` bytes; more is 413, not a truncation.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_big {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body exceeds the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("Cannot read request body: {e}"))
        }
    })
}

/// FastAPI-style 422 for bodies that are not the expected JSON.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: serde_json::json!([{"loc": ["body"], "msg": e.to_string(), "type": "value_error"}]),
    })
}

/// A non-v4 UUID fails validation like Checkmk's pydantic `UUID4` field: 422.
fn check_uuid(uuid: &str) -> ApiResult<()> {
    validate::parse_uuid_v4(uuid).map(|_| ()).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: serde_json::json!([{"loc": ["uuid"], "msg": e.to_string(), "type": "uuid_parsing"}]),
    })
}

fn ext() -> Option<ReceiverExtensions> {
    Some(ReceiverExtensions { fetcher_zstd: true })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Records an attempt; failures to audit are logged but never turn a success into an error.
pub async fn record(st: &AppState, a: Audit) {
    let r = st
        .db
        .write(move |c| store::audit(c, &a).map_err(store::DbError::from))
        .await;
    if let Err(e) | Ok(Err(e)) = r {
        tracing::error!("cannot write audit log: {e}");
    }
}

/// Audits a refusal and feeds authentication failures to the rate limiter.
async fn refused(st: &AppState, mut a: Audit, e: ApiError) -> ApiError {
    if e.status == StatusCode::UNAUTHORIZED {
        st.limiter.failed(a_ip(&a));
    }
    a.outcome = format!("refused {}", e.status.as_u16());
    a.detail = e.text();
    log_outcome(&a);
    record(st, a).await;
    e
}

/// One log line per attempt, with what the audit log holds (never a secret).
fn log_outcome(a: &Audit) {
    tracing::info!(
        "{} by {} from {}: host={} uuid={}: {} {}",
        a.action,
        a.actor,
        a.source,
        a.host.as_deref().unwrap_or("-"),
        a.uuid.as_deref().unwrap_or("-"),
        a.outcome,
        a.detail
    );
}

fn a_ip(a: &Audit) -> IpAddr {
    a.source
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| a.source.parse::<IpAddr>())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn check_rate(st: &AppState, ip: IpAddr) -> ApiResult<()> {
    if st.limiter.allowed(ip) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed authentication attempts from {ip}; wait and try again."),
        ))
    }
}

/// HTTP Basic authentication against the user table, with the verified-credential cache.
async fn authenticate(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    a: &mut Audit,
) -> ApiResult<Principal> {
    let ip = a_ip(a);
    check_rate(st, ip)?;
    let Some((user, password)) = header(headers, "authorization").and_then(auth::parse_basic)
    else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing or malformed HTTP Basic credentials",
        ));
    };
    a.actor = user.chars().take(128).collect();
    let db = st.db.clone();
    let name = user.clone();
    let found = db.read(move |c| match store::get_user(c, &name)? {
        Some(u) => Ok(Some(Principal::load(c, u)?)),
        None => Ok(None),
    })?;
    let denied = || ApiError::new(StatusCode::UNAUTHORIZED, "Invalid credentials");
    match found {
        Some(p) if st.cache.hit(&user, &password, &p.user.pw_hash) => Ok(p),
        Some(p) => {
            let _slot = st
                .argon2_slots
                .acquire()
                .await
                .map_err(ApiError::internal)?;
            let hash = p.user.pw_hash.clone();
            let pw = password.clone();
            let ok = tokio::task::spawn_blocking(move || auth::verify_password(&pw, &hash))
                .await
                .unwrap_or(false);
            if ok {
                st.cache.insert(&user, &password, &p.user.pw_hash);
                Ok(p)
            } else {
                Err(denied())
            }
        }
        None => {
            let _slot = st
                .argon2_slots
                .acquire()
                .await
                .map_err(ApiError::internal)?;
            let _ = tokio::task::spawn_blocking(move || auth::dummy_verify(&password)).await;
            Err(denied())
        }
    }
}

fn audit_base(ci: &ConnInfo, action: &str) -> Audit {
    Audit {
        actor: "-".into(),
        source: ci.peer.to_string(),
        action: action.into(),
        ..Default::default()
    }
}

/// Parses and verifies a CSR, and signs the agent certificate up front: signing is cheap and
/// keeps crypto out of the single writer; a refused request simply discards the result.
fn csr_and_sign(st: &AppState, csr: &str, uuid: &str) -> ApiResult<Issued> {
    let v = ca::verify_csr(csr, uuid).map_err(|e| ApiError::bad_request(e.to_string()))?;
    st.keys
        .sign_agent_cert(&v, uuid, st.cert_lifetime)
        .map_err(ApiError::internal)
}

// ---------- register_existing (user or token) ----------

enum Who {
    User(Box<Principal>),
    Token { id: i64, secret: String },
}

async fn register_existing(State(st): State<Arc<AppState>>, req: Request) -> Response {
    into_response(register_existing_impl(st, req, false).await)
}

async fn register_existing_token(State(st): State<Arc<AppState>>, req: Request) -> Response {
    into_response(register_existing_impl(st, req, true).await)
}

fn into_response<T: serde::Serialize>(r: ApiResult<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
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
    let who = if token {
        check_rate(st, a_ip(a))?;
        let (id, secret) = header(&parts.headers, "authorization")
            .and_then(auth::parse_token)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Missing or malformed CMK-TOKEN authorization",
                )
            })?;
        a.actor = format!("token:{id}");
        Who::Token { id, secret }
    } else {
        Who::User(Box::new(authenticate(st, &parts.headers, a).await?))
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
    let site = st.site.clone();
    let audit = a.clone();
    let mode = st
        .db
        .write(move |c| -> ApiResult<ConnectionMode> {
            let now = store::now();
            let host = store::get_host(c, &r.host_name)?;
            let may_reregister = match &who {
                Who::User(p) => {
                    let allowed = match &host {
                        Some(h) => perms::may_register_existing(c, p, h)?,
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
                Who::Token { id, secret } => {
                    use_token(c, *id, secret, &r.host_name, &r.uuid, now)?;
                    false
                }
            };
            let host = host.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("Host {} does not exist.", r.host_name),
                )
            })?;
            check_host_here(&host, &site)?;
            identity_lock(c, &host.name, &r.uuid, may_reregister, now)?;
            let mode = ConnectionMode::parse(&host.mode).unwrap_or(ConnectionMode::Pull);
            let by = audit.actor.clone();
            store::insert_registration(
                c,
                &r.uuid,
                &host.name,
                mode.as_str(),
                &by,
                &issued.serial_hex,
                issued.not_after,
            )?;
            let mut ok = audit.clone();
            ok.outcome = "registered".into();
            ok.detail = format!("certificate serial {}", issued.serial_hex);
            store::audit(c, &ok)?;
            log_outcome(&ok);
            Ok(mode)
        })
        .await??;
    Ok(RegisterExistingResponse {
        root_cert: st.keys.site_ca_pem.clone(),
        agent_cert: issued.pem,
        connection_mode: mode,
        tether: ext(),
    })
}

fn check_host_here(host: &store::Host, site: &str) -> ApiResult<()> {
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

/// Validates and consumes a one-time token inside the registration's transaction, so a token
/// can never be used twice, even by concurrent requests.
fn use_token(
    c: &Connection,
    id: i64,
    secret: &str,
    host: &str,
    uuid: &str,
    now: i64,
) -> ApiResult<()> {
    type TokenRow = (String, Vec<u8>, i64, Option<i64>, bool);
    let row: Option<TokenRow> = c
        .query_row(
            "SELECT host, secret_sha256, expires_at, used_at, revoked FROM tokens WHERE id=?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
    let Some((thost, digest, expires, used, revoked)) = row else {
        return Err(unauthorized("Invalid token"));
    };
    if !auth::token_matches(secret, &digest) {
        return Err(unauthorized("Invalid token"));
    }
    if revoked {
        return Err(unauthorized("Token has been revoked"));
    }
    if used.is_some() {
        return Err(unauthorized("Token has already been used"));
    }
    if expires <= now {
        return Err(unauthorized("Token has expired"));
    }
    if thost != host {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("This token is not valid for host {host}."),
        ));
    }
    c.execute(
        "UPDATE tokens SET used_at=?2, used_by_uuid=?3 WHERE id=?1",
        params![id, now, uuid],
    )?;
    Ok(())
}

/// **ext** identity lock: a host with a live registration under another UUID is not taken
/// over unless the user may re-register hosts; then the old link is revoked.
fn identity_lock(
    c: &Connection,
    host: &str,
    uuid: &str,
    may_reregister: bool,
    now: i64,
) -> ApiResult<()> {
    if let Some(reg) = store::get_registration(c, uuid)? {
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
    let others: Vec<_> = store::registrations_of_host(c, host)?
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

// ---------- mTLS endpoints ----------

/// Checks the verified client certificate against the UUID in the path and our records.
pub fn mtls(st: &AppState, ci: &ConnInfo, uuid: &str) -> ApiResult<()> {
    // As in Checkmk, the certificate is compared with the URL first: any path that is not
    // exactly the certificate's UUID is a 400 mismatch, whether or not it is a valid UUID.
    // Checkmk's status and text for a request without a client certificate.
    let der = ci.client_cert.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!(
            "Verified client UUID (missing: no client certificate provided) does not match UUID in URL ({uuid})"
        ))
    })?;
    let info = certs::cert_info(der).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cn = info.subject_cn.clone().unwrap_or_default();
    if cn != uuid {
        return Err(ApiError::bad_request(format!(
            "Verified client UUID ({cn}) does not match UUID in URL ({uuid})"
        )));
    }
    let serial = info.serial_hex.clone();
    match st.db.read(move |c| store::cert_state(c, &serial))? {
        None => Err(ApiError::bad_request(
            "Client certificate is unknown to this site",
        )),
        Some((_, Some(_))) => Err(ApiError::bad_request("Client certificate has been revoked")),
        Some((owner, None)) if owner != uuid => Err(ApiError::bad_request(
            "Client certificate was issued to another UUID",
        )),
        Some(_) => Ok(()),
    }
}

async fn registration_status_v2(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let ci = conn_info(&req);
    let r = async {
        let ci = ci?;
        mtls(&st, &ci, &uuid)?;
        let u = uuid.clone();
        let now = store::now();
        let status = st.db.read(move |c| {
            let Some(reg) = store::get_registration(c, &u)? else {
                return Ok(RegistrationStatusV2Response::NotRegistered);
            };
            if !reg.live(now) {
                return Ok(RegistrationStatusV2Response::NotRegistered);
            }
            Ok(match store::get_host(c, &reg.host)? {
                Some(h) => RegistrationStatusV2Response::Registered {
                    hostname: h.name,
                    connection_mode: ConnectionMode::parse(&h.mode).unwrap_or(ConnectionMode::Pull),
                },
                None => RegistrationStatusV2Response::NotRegistered,
            })
        })?;
        Ok(status)
    }
    .await;
    into_response(r)
}

async fn renew_certificate(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let ci = conn_info(&req)?;
        let mut a = audit_base(&ci, "renew_certificate");
        a.actor = format!("uuid:{}", uuid.chars().take(64).collect::<String>());
        a.uuid = Some(uuid.chars().take(64).collect());
        let inner = async {
            let body = read_body(req.into_body(), st.limits.max_body).await?;
            mtls(&st, &ci, &uuid)?;
            let r: RenewCertificateRequest = parse_json(&body)?;
            let issued = csr_and_sign(&st, &r.csr, &uuid)?;
            let u = uuid.clone();
            let mut ok = a.clone();
            let pem = issued.pem.clone();
            st.db
                .write(move |c| -> ApiResult<()> {
                    let reg = store::get_registration(c, &u)?
                        .filter(|r| r.revoked_at.is_none())
                        .ok_or_else(|| {
                            ApiError::new(StatusCode::FORBIDDEN, "Host is not registered")
                        })?;
                    store::insert_cert(c, &issued.serial_hex, &u, issued.not_after)?;
                    ok.host = Some(reg.host);
                    ok.outcome = "renewed".into();
                    ok.detail = format!("certificate serial {}", issued.serial_hex);
                    store::audit(c, &ok)?;
                    log_outcome(&ok);
                    Ok(())
                })
                .await??;
            Ok(RenewCertificateResponse { agent_cert: pem })
        };
        match inner.await {
            Ok(v) => Ok(v),
            Err(e) => Err(refused(&st, a, e).await),
        }
    }
    .await;
    into_response(r)
}

// ---------- new hosts ----------

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
    Hold,
}

fn decide(rules: &[Rule], labels: &BTreeMap<String, String>) -> (Option<String>, Decision) {
    let Some(rule) = rules.iter().find(|r| r.matches(labels)) else {
        return (None, Decision::Hold);
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
        _ => (name, Decision::Hold),
    }
}

async fn register_new(State(st): State<Arc<AppState>>, req: Request) -> Response {
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

async fn register_new_inner(
    st: &Arc<AppState>,
    req: Request,
    a: &mut Audit,
) -> ApiResult<RegisterNewResponse> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, st.limits.max_body).await?;
    let p = authenticate(st, &parts.headers, a).await?;
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
            let prev: Option<(String, String)> = c
                .query_row(
                    "SELECT user, status FROM pending WHERE uuid=?1",
                    [&r.uuid],
                    |x| Ok((x.get(0)?, x.get(1)?)),
                )
                .optional()?;
            if let Some((user, status)) = prev {
                if user != p.user.name || status == "success" {
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
            let out = match decision {
                Decision::Create { folder, host, mode } => {
                    if !perms::may_register_new(c, &p, &folder)? {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            format!(
                                "Insufficient permissions: user {} may not create hosts in \
                                 folder {folder}.",
                                p.user.name
                            ),
                        ));
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
                            },
                        )?;
                        store::insert_registration(
                            c,
                            &r.uuid,
                            &host,
                            mode.as_str(),
                            &p.user.name,
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
                Decision::Hold => NewOutcome {
                    status: "pending",
                    ..NewOutcome::default()
                },
            };
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
                    p.user.name,
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
            store::audit(c, &ok)?;
            log_outcome(&ok);
            Ok(())
        })
        .await??;
    Ok(RegisterNewResponse {
        root_cert: st.keys.site_ca_pem.clone(),
    })
}

async fn register_new_ongoing(
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
            let p = authenticate(&st, &headers, &mut a).await?;
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
            if user != p.user.name {
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
