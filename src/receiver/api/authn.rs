//! Authentication of API users: HTTP Basic credentials, with rate limiting of failures.
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

use super::audit::a_ip;
use super::{header, ApiError, ApiResult, AppState};
use crate::receiver::perms::Principal;
use crate::receiver::store::Audit;
use crate::receiver::{auth, metrics};

pub(crate) fn check_rate(st: &AppState, ip: IpAddr) -> ApiResult<()> {
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
pub(super) async fn authenticate(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    a: &mut Audit,
) -> ApiResult<Principal> {
    let (user, password) = basic_credentials(st, headers, a)?;
    verify_user(st, user, password).await
}

/// [`authenticate`] for a request whose write job confirms the user in its transaction
/// ([`Principal::confirm`]): a user this process has seen lately, whose password matches the
/// hash verified before, is taken as last read, without a read of its own. `fresh` reads
/// the user in any case (the job found the cached one out of date).
pub(super) async fn authenticate_for_write(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    a: &mut Audit,
    fresh: bool,
) -> ApiResult<Principal> {
    let (user, password) = basic_credentials(st, headers, a)?;
    if fresh {
        st.principals.forget(&user);
    } else if let Some(p) = st.principals.get(&user) {
        if st.cache.hit(&user, &password, &p.user.pw_hash) {
            return Ok(p);
        }
    }
    let p = verify_user(st, user, password).await?;
    st.principals.put(p.clone());
    Ok(p)
}

fn basic_credentials(
    st: &AppState,
    headers: &HeaderMap,
    a: &mut Audit,
) -> ApiResult<(String, String)> {
    check_rate(st, a_ip(a))?;
    let Some((user, password)) = header(headers, "authorization").and_then(auth::parse_basic)
    else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing or malformed HTTP Basic credentials",
        ));
    };
    a.actor = user.chars().take(128).collect();
    Ok((user, password))
}

/// Checks a site user's password (argon2, bounded in parallel) with the verified-credential
/// cache; unknown users cost the same time. The caller checks and feeds the rate limiter.
pub(crate) async fn verify_user(
    st: &Arc<AppState>,
    user: String,
    password: String,
) -> ApiResult<Principal> {
    let found = Principal::lookup_shared(&st.db, &user).await?;
    let denied = || ApiError::new(StatusCode::UNAUTHORIZED, "Invalid credentials");
    match found {
        Some(p) => {
            let hash = &p.user.pw_hash;
            let check = async {
                let Ok(_slot) = st.argon2_slots.acquire().await else {
                    return false;
                };
                let (pw, h) = (password.clone(), hash.clone());
                let ok = tokio::task::spawn_blocking(move || auth::verify_password(&pw, &h))
                    .await
                    .unwrap_or(false);
                metrics::password_verification(if ok { "ok" } else { "wrong_password" });
                ok
            };
            if st.cache.verify(&user, &password, hash, check).await {
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
            metrics::password_verification("unknown_user");
            Err(denied())
        }
    }
}
