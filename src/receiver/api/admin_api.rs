//! **ext** admin API for the people responsible for hosts, under `/SITE/tether-admin/v1/`:
//! the approval queue filtered by folder rights. Basic auth with the site's users (the same
//! credential cache and rate limits as registration). An entry the caller may not decide on
//! is absent, never a 403 that would confirm it exists. Errors are `{"detail", "code"}`.
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::audit_base;
use super::authn::authenticate;
use super::{conn_info, parse_json, read_body, ApiError, AppState};
use crate::error::ErrorCode;
use crate::receiver::approvals::{self, ApproveOptions, Decider, PendingInfo};
use crate::receiver::perms::{self, Principal};
use crate::receiver::registrations::{self, RegistrationInfo, Scope};

pub fn base(site: &str) -> String {
    format!("/{site}/tether-admin/v1")
}

/// `GET pending`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingListBody {
    pub pending: Vec<PendingInfo>,
}

/// `POST pending/{uuid}/approve` and `.../decline`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DecisionBody {
    pub uuid: String,
    /// approved or declined.
    pub decision: String,
    /// The host created or handed over (approve).
    pub host: Option<String>,
}

/// Error body of the admin API.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AdminErrorBody {
    pub detail: String,
    /// The same stable codes as the CLIs' `error.code`.
    pub code: ErrorCode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclineRequest {
    reason: String,
}

struct AdminError(StatusCode, ErrorCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(AdminErrorBody {
                detail: self.2,
                code: self.1,
            }),
        )
            .into_response()
    }
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        let code = match e.status.as_u16() {
            401 | 429 => ErrorCode::AuthFailed,
            403 => ErrorCode::PermissionDenied,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            400 | 413 | 422 => ErrorCode::Usage,
            _ => ErrorCode::Internal,
        };
        AdminError(e.status, code, e.text())
    }
}

impl From<crate::receiver::store::sql::Error> for AdminError {
    fn from(e: crate::receiver::store::sql::Error) -> Self {
        AdminError(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("database error: {e}"),
        )
    }
}

impl From<crate::receiver::store::DbError> for AdminError {
    fn from(e: crate::receiver::store::DbError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::error::Error> for AdminError {
    fn from(e: crate::error::Error) -> Self {
        let status = match e.code() {
            ErrorCode::NotFound | ErrorCode::HostNotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Usage => StatusCode::BAD_REQUEST,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, e.code(), e.to_string())
    }
}

fn not_visible(uuid: &str) -> AdminError {
    AdminError(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("No pending registration with UUID {uuid}"),
    )
}

/// The folder that decides who may approve an entry.
fn target_folder(p: &PendingInfo) -> &str {
    p.folder.as_deref().unwrap_or("/")
}

async fn caller(
    st: &Arc<AppState>,
    ci: Result<super::ConnInfo, ApiError>,
    headers: &axum::http::HeaderMap,
) -> Result<(Principal, Decider), AdminError> {
    let ci = ci?;
    let mut a = audit_base(&ci, "admin_api");
    let p = match authenticate(st, headers, &mut a).await {
        Ok(p) => p,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED {
                st.limiter.failed(super::audit::a_ip(&a));
            }
            return Err(e.into());
        }
    };
    let by = Decider {
        actor: p.user.name.clone(),
        source: format!("admin-api {}", ci.peer),
    };
    Ok((p, by))
}

pub(super) async fn list_pending(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let r = async {
        let (p, _) = caller(&st, ci, &headers).await?;
        let visible = st.db.read(move |c| {
            let mut out = Vec::new();
            let all = approvals::list(c, false)
                .map_err(|e| crate::receiver::store::sql::Error::Other(e.to_string()))?;
            for e in all {
                if perms::may_approve(c, &p, target_folder(&e))? {
                    out.push(e);
                }
            }
            Ok(out)
        })?;
        Ok::<_, AdminError>(Json(PendingListBody { pending: visible }))
    }
    .await;
    r.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

enum Decision {
    Approve(ApproveRequest),
    Decline(String),
}

async fn decide(st: Arc<AppState>, uuid: String, req: Request, approve: bool) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let r = async {
        let (p, by) = caller(&st, ci, &headers).await?;
        let body = read_body(req.into_body(), st.limits.max_body).await?;
        let d = if approve {
            if body.iter().all(u8::is_ascii_whitespace) {
                Decision::Approve(ApproveRequest::default())
            } else {
                Decision::Approve(parse_json(&body)?)
            }
        } else {
            let r: DeclineRequest = parse_json(&body)?;
            Decision::Decline(r.reason)
        };
        let state = st.clone();
        let u = uuid.clone();
        let host = st
            .db
            .write(move |c| -> Result<Option<String>, AdminError> {
                // Checked in the deciding transaction: visibility and "still pending" are
                // decided once, whatever another session does meanwhile.
                let entry = approvals::get(c, &u)?.ok_or_else(|| not_visible(&u))?;
                if !perms::may_approve(c, &p, target_folder(&entry))? {
                    return Err(not_visible(&u));
                }
                match d {
                    Decision::Approve(a) => {
                        if let Some(f) = &a.folder {
                            if !perms::may_approve(c, &p, f)? {
                                return Err(AdminError(
                                    StatusCode::FORBIDDEN,
                                    ErrorCode::PermissionDenied,
                                    format!("You may not create hosts in folder {f}."),
                                ));
                            }
                        }
                        let opts = ApproveOptions {
                            host: a.host,
                            folder: a.folder,
                            mode: a.mode,
                        };
                        Ok(Some(approvals::approve(c, &state.keys, &u, &opts, &by)?))
                    }
                    Decision::Decline(reason) => {
                        approvals::decline(c, &u, &reason, &by)?;
                        Ok(None)
                    }
                }
            })
            .await
            .map_err(|e| {
                AdminError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal,
                    e.to_string(),
                )
            })??;
        Ok::<_, AdminError>(Json(DecisionBody {
            uuid,
            decision: if approve { "approved" } else { "declined" }.into(),
            host,
        }))
    }
    .await;
    r.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

pub(super) async fn approve(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    decide(st, uuid, req, true).await
}

pub(super) async fn decline(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    decide(st, uuid, req, false).await
}

/// `GET registrations`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RegistrationsBody {
    pub registrations: Vec<RegistrationInfo>,
}

/// `POST hosts/{name}/unregister`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UnregisterBody {
    pub host: String,
    /// UUIDs whose registrations (and certificates) were revoked; empty if none was live.
    pub revoked: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationsQuery {
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default = "default_audit_limit")]
    limit: i64,
    before: Option<i64>,
}

fn default_audit_limit() -> i64 {
    100
}

fn query<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, AdminError> {
    axum::extract::Query::<T>::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, ErrorCode::Usage, e.body_text()))
}

fn read_scoped<R: Send + 'static>(
    st: &Arc<AppState>,
    p: Principal,
    f: impl Fn(
        &crate::receiver::store::sql::Connection,
        &Scope,
    ) -> crate::receiver::store::sql::Result<R>,
) -> Result<R, AdminError> {
    Ok(st.db.read(move |c| {
        let scope = Scope::of(c, &p)?;
        f(c, &scope)
    })?)
}

pub(super) async fn list_registrations(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let q = query::<RegistrationsQuery>(&req);
    let r = async {
        let (p, _) = caller(&st, ci, &headers).await?;
        let q = q?;
        let regs = read_scoped(&st, p, move |c, s| {
            registrations::list(c, s, q.host.as_deref())
        })?;
        Ok::<_, AdminError>(Json(RegistrationsBody {
            registrations: regs,
        }))
    }
    .await;
    r.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

pub(super) async fn unregister_host(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let r = async {
        let (p, by) = caller(&st, ci, &headers).await?;
        let host = name.clone();
        let revoked = st
            .db
            .write(move |c| -> Result<Vec<String>, AdminError> {
                // Scope and revocation in one transaction: a host moved meanwhile is judged
                // by where it is now.
                let scope = Scope::of(c, &p)?;
                Ok(registrations::unregister(c, &scope, &host, &by)?)
            })
            .await
            .map_err(|e| AdminError::from(ApiError::from(e)))??;
        Ok::<_, AdminError>(Json(UnregisterBody {
            host: name,
            revoked,
        }))
    }
    .await;
    r.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

pub(super) async fn audit(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let ci = conn_info(&req);
    let headers = req.headers().clone();
    let q = query::<AuditQuery>(&req);
    let r = async {
        let (p, _) = caller(&st, ci, &headers).await?;
        let q = q?;
        if !(1..=registrations::MAX_AUDIT_PAGE).contains(&q.limit) {
            return Err(AdminError(
                StatusCode::BAD_REQUEST,
                ErrorCode::Usage,
                format!(
                    "limit must be between 1 and {}",
                    registrations::MAX_AUDIT_PAGE
                ),
            ));
        }
        let page = read_scoped(&st, p, move |c, s| {
            registrations::audit_page(c, s, q.limit, q.before)
        })?;
        Ok(Json(page))
    }
    .await;
    r.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}
