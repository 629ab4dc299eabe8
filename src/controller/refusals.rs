//! What a receiver's refusal means on the route it came from. The same status says different
//! things on different routes (a 404 from `register_existing` is an unknown host, from
//! `register_existing_token` on an older Checkmk it is a missing endpoint), so the code and
//! the hint are chosen here, where the route is known.
use super::client::Client;
use crate::error::{Error, ErrorCode};
use crate::wire::paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    RegisterExisting,
    RegisterExistingToken,
    RegisterNew,
    RegisterNewOngoing,
    /// `renew_certificate`, `agent_data`, `registration_status(_v2)`: the connection's own
    /// certificate authenticates, no user is involved.
    Mtls,
}

/// FastAPI's (and our fallback's) answer for a path nothing routes: the site or the
/// endpoint does not exist, as opposed to a route's own 404 ("Host X does not exist.").
pub fn is_unrouted(e: &Error) -> bool {
    e.0.http_status == Some(404) && e.0.server_detail.as_deref() == Some("Not Found")
}

fn detail_has(e: &Error, needle: &str) -> bool {
    e.0.server_detail
        .as_deref()
        .is_some_and(|d| d.to_ascii_lowercase().contains(needle))
}

fn recode(e: Error, code: ErrorCode, message: String, hint: &str) -> Error {
    let mut info = *e.0;
    info.code = code;
    info.message = message;
    info.hint = Some(hint.to_string());
    Error(Box::new(info))
}

const CREATE_HOST_FIRST: &str =
    "create the host on the site first, or use `tether register-new` to let the site create it";
const REGISTER_AGAIN: &str = "register again (tether register ...); if another machine now uses this host name, decide on the site which one it is";

/// Refines a refusal from `route`; errors that are not HTTP refusals pass unchanged.
pub fn explain(client: &Client, route: Route, e: Error) -> Error {
    let Some(status) = e.0.http_status else {
        return e;
    };
    if e.code() == ErrorCode::Protocol && !(500..600).contains(&status) {
        // A 2xx we could not parse: not a refusal.
        return e;
    }
    let site = client.target().site.clone();
    match (route, status) {
        (_, 404) if is_unrouted(&e) => unrouted(client, route, e),
        (Route::RegisterNew | Route::RegisterNewOngoing, 501) => recode(
            e,
            ErrorCode::Unsupported,
            "the site does not create hosts on registration (Checkmk Raw edition)".into(),
            "create the host on the site, then register it with `tether register`",
        ),
        (Route::Mtls, 400 | 403)
            if detail_has(&e, "not registered")
                || detail_has(&e, "revoked")
                || detail_has(&e, "unknown to this site") =>
        {
            let detail = e.0.server_detail.clone().unwrap_or_default();
            recode(
                e,
                ErrorCode::NotRegistered,
                format!("site {site} no longer links this connection ({detail}): it was unregistered, or another controller registered this host name"),
                REGISTER_AGAIN,
            )
        }
        (Route::Mtls, 403) if detail_has(&e, "push") => {
            e.hint("the site monitors this host in pull mode: stop pushing, or set the host to push mode on the site")
        }
        (Route::RegisterExisting | Route::RegisterExistingToken, 404) => e.hint(CREATE_HOST_FIRST),
        (Route::RegisterExisting | Route::RegisterExistingToken | Route::RegisterNew, 403) => e.hint(
            "the user needs a registration permission for this host (e.g. role agent_registration and a contact group of the host)",
        ),
        (_, 405) => e.hint(
            "register with the site that monitors this host; cluster hosts cannot be registered",
        ),
        (Route::RegisterExisting | Route::RegisterExistingToken, 409) => e.hint(
            "the site holds this host for another registration (perhaps this machine's own, before a reinstall): run again with --request-takeover so the approvers of the host's folder can hand it over, or have an administrator unregister it (tether-receiver unregister HOST); a user with agent_registration.reregister_host replaces it directly",
        ),
        _ => e,
    }
}

/// A 404 "Not Found": no such site, or (on an existing site) no such endpoint.
fn unrouted(client: &Client, route: Route, e: Error) -> Error {
    let site = client.target().site.clone();
    let server = super::state::format_server(&client.target().host, client.target().port);
    // register_existing exists on every Checkmk 2.x receiver: if it is routed, the site is.
    let site_exists = route != Route::RegisterExisting
        && client
            .route_exists(&paths::register_existing(&site))
            .unwrap_or(false);
    if !site_exists {
        return recode(
            e,
            ErrorCode::UnknownSite,
            format!("there is no agent receiver for site {site:?} at {server}"),
            "check --site (the site's name, as in https://SERVER/SITE/) and the port: each site's receiver has its own port (8000, 8001, ...)",
        );
    }
    match route {
        Route::RegisterExistingToken => recode(
            e,
            ErrorCode::Unsupported,
            format!("the receiver of site {site} does not support registration tokens (no register_existing_token endpoint; older Checkmk)"),
            "register with a user and a password file instead (--user, --password-file)",
        ),
        Route::RegisterNew | Route::RegisterNewOngoing => recode(
            e,
            ErrorCode::Unsupported,
            format!("the receiver of site {site} does not support registering new hosts"),
            "create the host on the site, then register it with `tether register`",
        ),
        _ => recode(
            e,
            ErrorCode::Unsupported,
            format!("the receiver of site {site} does not offer this endpoint"),
            "the site runs an older receiver; upgrade it or use a command it supports",
        ),
    }
}
