//! The agent-receiver REST API (spec §1): handlers, error bodies, authentication glue.
//!
//! This module holds the shared state, the error type and its response mapping, the router and
//! the request helpers; the handlers live in the submodules.
pub mod admin_api;
mod audit;
mod authn;
mod lifecycle;
mod mtls;
mod register_existing;
mod register_new;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rustls::pki_types::CertificateDer;

use super::auth::{CredentialCache, FailureLimiter};
use super::ca::{self, Issued, SiteKeys};
use super::store::{self, Db};
use crate::wire::api::{ErrorBody, ReceiverExtensions};
use crate::wire::{paths, validate};

pub use self::audit::record;
pub(crate) use self::authn::{check_rate, verify_user};
pub use self::mtls::mtls;
use self::mtls::{registration_status_v1, registration_status_v2, renew_certificate};
use self::register_existing::{register_existing, register_existing_token};
use self::register_new::{register_new, register_new_ongoing};

/// Behaviours of other Checkmk receivers that tether's controller must cope with, switched
/// on only to test that (hidden `serve --emulate`); a normal receiver has none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Emulate {
    /// No `registration_status_v2` route (older layouts).
    NoRegistrationStatusV2,
    /// No `registration_status` route either.
    NoRegistrationStatus,
    /// No `register_existing_token` route (Checkmk before tokens).
    NoTokenEndpoint,
    /// `register_new` and `register_new_ongoing` answer 501, as the Raw edition does.
    RawEdition,
    /// Certificates of unregistered connections stay valid, as in Checkmk (which removes
    /// only the host link): mTLS routes then answer from the link (403 "Host is not
    /// registered") instead of refusing the certificate.
    NoRevocation,
    /// None of tether's own routes (`tether/unregister`, `tether/request_takeover`).
    NoTetherRoutes,
}

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
    /// Deadline for receiving a request's headers; also how long an idle kept-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Caps on open connections and handshakes in progress.
    pub caps: crate::receiver::admission::Caps,
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
            caps: Default::default(),
        }
    }
}

pub struct AppState {
    pub site: String,
    pub keys: SiteKeys,
    pub db: Db,
    pub cache: CredentialCache,
    /// Users as read by recent registrations (see [`crate::receiver::auth::PrincipalCache`]).
    pub principals: crate::receiver::auth::PrincipalCache,
    pub limiter: FailureLimiter,
    pub limits: Limits,
    pub cert_lifetime: i64,
    pub port: u16,
    /// Bounds concurrent argon2 verifications: each takes ~19 MiB and tens of ms, so an
    /// unbounded number (many source addresses guessing at once) would exhaust memory.
    pub argon2_slots: tokio::sync::Semaphore,
    pub emulate: Vec<Emulate>,
    /// The web console (`serve --no-console`: None, its paths answer 404).
    pub console: Option<crate::receiver::console::Console>,
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

impl From<crate::receiver::store::sql::Error> for ApiError {
    fn from(e: crate::receiver::store::sql::Error) -> Self {
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

/// Counts answered registration requests for `/metrics` by outcome.
async fn count_registration(req: Request, next: axum::middleware::Next) -> Response {
    let new = req.uri().path().ends_with("/register_new");
    let resp = next.run(req).await;
    super::metrics::registration(match (resp.status().is_success(), new) {
        (false, _) => "refused",
        (true, true) => "new",
        (true, false) => "registered",
    });
    resp
}

pub fn router(state: Arc<AppState>) -> Router {
    let site = state.site.clone();
    let b = paths::base(&site);
    let without = |e: Emulate| state.emulate.contains(&e);
    let counted = || axum::middleware::from_fn(count_registration);
    let mut r = Router::new().route(
        &format!("{b}/register_existing"),
        post(register_existing).layer(counted()),
    );
    if !without(Emulate::NoTokenEndpoint) {
        r = r.route(
            &format!("{b}/register_existing_token"),
            post(register_existing_token).layer(counted()),
        );
    }
    if without(Emulate::RawEdition) {
        r = r
            .route(&format!("{b}/register_new"), post(raw_edition))
            .route(
                &format!("{b}/register_new_ongoing/{{uuid}}"),
                post(raw_edition),
            );
    } else {
        r = r
            .route(
                &format!("{b}/register_new"),
                post(register_new).layer(counted()),
            )
            .route(
                &format!("{b}/register_new_ongoing/{{uuid}}"),
                post(register_new_ongoing),
            );
    }
    if !without(Emulate::NoRegistrationStatusV2) {
        r = r.route(
            &format!("{b}/registration_status_v2/{{uuid}}"),
            get(registration_status_v2),
        );
    }
    if !without(Emulate::NoRegistrationStatus) {
        r = r.route(
            &format!("{b}/registration_status/{{uuid}}"),
            get(registration_status_v1),
        );
    }
    r.route(
        &format!("{b}/renew_certificate/{{uuid}}"),
        post(renew_certificate),
    )
    .route(
        &format!("{b}/agent_data/{{uuid}}"),
        post(super::ingest::agent_data),
    )
    .route(
        &format!("{}/pending", admin_api::base(&site)),
        get(admin_api::list_pending),
    )
    .route(
        &format!("{}/pending/{{uuid}}/approve", admin_api::base(&site)),
        post(admin_api::approve),
    )
    .route(
        &format!("{}/pending/{{uuid}}/decline", admin_api::base(&site)),
        post(admin_api::decline),
    )
    .route(
        &format!("{}/registrations", admin_api::base(&site)),
        get(admin_api::list_registrations),
    )
    .route(
        &format!("{}/hosts/{{name}}/unregister", admin_api::base(&site)),
        post(admin_api::unregister_host),
    )
    .route(
        &format!("{}/audit", admin_api::base(&site)),
        get(admin_api::audit),
    )
    .merge(if without(Emulate::NoTetherRoutes) {
        Router::new()
    } else {
        Router::new()
            .route(
                &paths::unregister(&site, "{uuid}"),
                post(lifecycle::unregister),
            )
            .route(
                &paths::request_takeover(&site),
                post(lifecycle::request_takeover),
            )
    })
    .route(&paths::discover_receiver(&site), get(discover))
    .merge(crate::receiver::console::routes(&state))
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

async fn raw_edition() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "The Checkmk Raw edition does not support registration of new hosts",
    )
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
/// An oversize body is read on (and discarded) up to `DRAIN_CAP`, so a
/// client still writing it receives the 413 instead of a broken pipe.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    const DRAIN_CAP: usize = 1 << 20;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("Cannot read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > limit.max(DRAIN_CAP) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(buf))
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
/// Parses and verifies a CSR, and signs the agent certificate up front: signing is cheap and
/// keeps crypto out of the single writer; a refused request simply discards the result.
fn csr_and_sign(st: &AppState, csr: &str, uuid: &str) -> ApiResult<Issued> {
    let v = ca::verify_csr(csr, uuid).map_err(|e| ApiError::bad_request(e.to_string()))?;
    st.keys
        .sign_agent_cert(&v, uuid, st.cert_lifetime)
        .map_err(ApiError::internal)
}

fn into_response<T: serde::Serialize>(r: ApiResult<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
