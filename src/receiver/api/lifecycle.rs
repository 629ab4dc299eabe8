//! **ext** routes for the ends of a registration that the agent side asks for: a controller
//! ending its own registration (`tether delete`), and a controller that lost its state asking
//! to take its host name over (`tether register --request-takeover`), which waits in the
//! approval queue like a held new host.
use std::sync::Arc;

use crate::receiver::store::sql::{params, OptionalExtension};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::audit::{audit_base, log_outcome, refused};
use super::authn::authenticate;
use super::mtls::mtls;
use super::register_existing::check_host_here;
use super::{
    check_uuid, conn_info, into_response, parse_json, read_body, ApiError, ApiResult, AppState,
};
use crate::receiver::{ca, perms, store};
use crate::wire::api::{RegisterExistingRequest, RegisterNewResponse};
use crate::wire::validate;

/// The controller authenticated by the certificate of `uuid` revokes that registration and
/// every certificate of it. 204; a second call meets a revoked certificate (400).
pub(super) async fn unregister(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let ci = match conn_info(&req) {
        Ok(ci) => ci,
        Err(e) => return e.into_response(),
    };
    let mut a = audit_base(&ci, "unregister_self");
    a.actor = format!("uuid:{}", uuid.chars().take(64).collect::<String>());
    a.uuid = Some(uuid.chars().take(64).collect());
    let inner = async {
        mtls(&st, &ci, &uuid)?;
        let u = uuid.clone();
        let mut ok = a.clone();
        st.db
            .write(move |c| -> ApiResult<()> {
                let reg = store::get_registration(c, &u)?;
                store::revoke_registration(c, &u)?;
                ok.host = reg.map(|r| r.host);
                ok.outcome = "revoked".into();
                ok.detail = "the controller ended its registration".into();
                store::audit(c, &ok)?;
                log_outcome(&ok);
                Ok(())
            })
            .await??;
        Ok(())
    };
    match inner.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(&st, a, e).await.into_response(),
    }
}

/// Files a request to take over an existing host for a new UUID. The user needs the same
/// right as for registering that host; an approver of the host's folder (or an admin) decides.
/// The controller then polls `register_new_ongoing/{uuid}` as for a held new host.
pub(super) async fn request_takeover(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let r = async {
        let ci = conn_info(&req)?;
        let mut a = audit_base(&ci, "request_takeover");
        let inner = async {
            let (parts, body) = req.into_parts();
            let body = read_body(body, st.limits.max_body).await?;
            let p = authenticate(&st, &parts.headers, &mut a).await?;
            let r: RegisterExistingRequest = parse_json(&body)?;
            a.uuid = Some(r.uuid.chars().take(64).collect());
            a.host = Some(r.host_name.chars().take(253).collect());
            check_uuid(&r.uuid)?;
            validate::validate_host_name(&r.host_name)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            ca::verify_csr(&r.csr, &r.uuid).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let site = st.site.clone();
            let mut ok = a.clone();
            st.db
                .write(move |c| -> ApiResult<()> {
                    let now = store::now();
                    let host = store::get_host(c, &r.host_name)?;
                    let allowed = match &host {
                        Some(h) => perms::may_register_existing(c, &p, h)?,
                        None => false,
                    };
                    if !allowed {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "You have insufficient permissions to register this host.",
                        ));
                    }
                    let host = host.ok_or_else(|| {
                        ApiError::new(StatusCode::NOT_FOUND, format!("Host {} does not exist.", r.host_name))
                    })?;
                    check_host_here(&host, &site)?;
                    let held_by_other = store::registrations_of_host(c, &host.name)?
                        .iter()
                        .any(|x| x.uuid != r.uuid && x.live(now));
                    if !held_by_other {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            format!(
                                "Host {} has no live registration to take over; register it directly.",
                                host.name
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
                    match prev {
                        // The same request again (a re-run): still waiting.
                        Some((user, status)) if user == p.user.name && status == "pending" => {
                            return Ok(())
                        }
                        Some(_) => {
                            return Err(ApiError::new(
                                StatusCode::CONFLICT,
                                format!("A registration with UUID {} already exists; use a new UUID.", r.uuid),
                            ))
                        }
                        None => {}
                    }
                    c.execute(
                        "INSERT INTO pending(uuid, user, csr, labels, status, host, folder,
                             created_at, source, kind)
                         VALUES(?1,?2,?3,'{}','pending',?4,?5,?6,?7,'takeover')",
                        params![r.uuid, p.user.name, r.csr, host.name, host.folder, now, ok.source],
                    )?;
                    ok.outcome = "takeover: pending".into();
                    ok.detail = format!("awaits approval in folder {}", host.folder);
                    store::audit(c, &ok)?;
                    log_outcome(&ok);
                    Ok(())
                })
                .await??;
            Ok(RegisterNewResponse {
                root_cert: st.keys.site_ca_pem.clone(),
            })
        };
        match inner.await {
            Ok(v) => Ok(v),
            Err(e) => Err(refused(&st, a, e).await),
        }
    }
    .await;
    into_response(r)
}
