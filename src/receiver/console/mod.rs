//! **ext** The web console under `/SITE/tether-admin/`, on the receiver's own port: approvers
//! log in with their site user, decide the registrations waiting for their folders, revoke
//! registrations and read the audit log of their folders. Server-rendered HTML, one stylesheet
//! compiled into the binary, no script; server-side sessions (`session`), a CSRF token on every
//! form and strict security headers on every answer.
mod handlers;
mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::api::AppState;

/// The console's settings and sessions; absent from `AppState` when it is switched off.
pub struct Console {
    pub sessions: session::Sessions,
}

impl Console {
    /// `idle_timeout`: how long a logged-in session lasts without a request.
    pub fn new(idle_timeout: Duration) -> Self {
        Console {
            sessions: session::Sessions::new(idle_timeout),
        }
    }
}

pub fn base(site: &str) -> String {
    format!("/{site}/tether-admin")
}

const CSS: &str = include_str!("console.css");

/// Every console answer: no framing, no foreign or inline content, nothing cached, no referrer.
const CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
}

/// The console's routes (none when it is switched off, so its paths answer 404).
pub fn routes(st: &Arc<AppState>) -> Router<Arc<AppState>> {
    if st.console.is_none() {
        return Router::new();
    }
    let b = base(&st.site);
    Router::new()
        .route(&b, get(handlers::root))
        .route(&format!("{b}/"), get(handlers::root))
        .route(
            &format!("{b}/login"),
            get(handlers::login_form).post(handlers::login),
        )
        .route(&format!("{b}/logout"), post(handlers::logout))
        .route(&format!("{b}/pending"), get(handlers::pending))
        .route(
            &format!("{b}/pending/{{uuid}}/approve"),
            post(handlers::approve),
        )
        .route(
            &format!("{b}/pending/{{uuid}}/decline"),
            post(handlers::decline),
        )
        .route(&format!("{b}/registrations"), get(handlers::registrations))
        .route(
            &format!("{b}/registrations/{{uuid}}/revoke"),
            post(handlers::revoke),
        )
        .route(&format!("{b}/audit"), get(handlers::audit))
        .route(&format!("{b}/static/console.css"), get(stylesheet))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn stylesheet() -> Response {
    let mut r = Response::new(axum::body::Body::from(CSS));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    r
}
