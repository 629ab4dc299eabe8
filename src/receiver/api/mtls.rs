//! The endpoints authenticated by the agent's client certificate (mTLS):
//! `registration_status_v2` and `renew_certificate` (`agent_data` is in `receiver::ingest`).
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::audit::{audit_base, log_outcome, refused};
use super::{
    conn_info, csr_and_sign, into_response, parse_json, read_body, ApiError, ApiResult, AppState,
    ConnInfo,
};
use crate::receiver::store;
use crate::wire::api::{
    ConnectionMode, RegistrationStatusV1Response, RegistrationStatusV2Response,
    RenewCertificateRequest, RenewCertificateResponse,
};
use crate::wire::certs;

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
        Some((_, Some(_))) if !st.emulate.contains(&super::Emulate::NoRevocation) => {
            Err(ApiError::bad_request("Client certificate has been revoked"))
        }
        Some((owner, None)) if owner != uuid => Err(ApiError::bad_request(
            "Client certificate was issued to another UUID",
        )),
        Some(_) => Ok(()),
    }
}

/// The live registration of `uuid` and its host's name and mode, if the site links it.
fn linked_host(st: &AppState, uuid: &str) -> ApiResult<Option<(String, ConnectionMode)>> {
    let u = uuid.to_string();
    let now = store::now();
    Ok(st.db.read(move |c| {
        let Some(reg) = store::get_registration(c, &u)?.filter(|r| r.live(now)) else {
            return Ok(None);
        };
        Ok(store::get_host(c, &reg.host)?.map(|h| {
            let mode = ConnectionMode::parse(&h.mode).unwrap_or(ConnectionMode::Pull);
            (h.name, mode)
        }))
    })?)
}

pub(super) async fn registration_status_v2(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let ci = conn_info(&req);
    let r = async {
        mtls(&st, &ci?, &uuid)?;
        Ok(match linked_host(&st, &uuid)? {
            Some((hostname, connection_mode)) => RegistrationStatusV2Response::Registered {
                hostname,
                connection_mode,
            },
            None => RegistrationStatusV2Response::NotRegistered,
        })
    }
    .await;
    into_response(r)
}

/// The older status route, served so that Checkmk controllers that only know it work.
pub(super) async fn registration_status_v1(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let ci = conn_info(&req);
    let r = async {
        mtls(&st, &ci?, &uuid)?;
        match linked_host(&st, &uuid)? {
            Some((hostname, mode)) => Ok(RegistrationStatusV1Response {
                hostname: Some(hostname),
                connection_type: Some(mode),
                message: Some("Host registered".into()),
                status: None,
            }),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "Host is not registered",
            )),
        }
    }
    .await;
    into_response(r)
}

pub(super) async fn renew_certificate(
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
