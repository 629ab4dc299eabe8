//! The audit trail of registration attempts: audit rows, log lines, refusals.
use std::net::{IpAddr, SocketAddr};

use axum::http::StatusCode;

use super::{ApiError, AppState, ConnInfo};
use crate::receiver::store::{self, Audit};

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
pub(super) async fn refused(st: &AppState, mut a: Audit, e: ApiError) -> ApiError {
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
pub(super) fn log_outcome(a: &Audit) {
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

pub(super) fn a_ip(a: &Audit) -> IpAddr {
    a.source
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| a.source.parse::<IpAddr>())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

pub(super) fn audit_base(ci: &ConnInfo, action: &str) -> Audit {
    Audit {
        actor: "-".into(),
        source: ci.peer.to_string(),
        action: action.into(),
        ..Default::default()
    }
}
