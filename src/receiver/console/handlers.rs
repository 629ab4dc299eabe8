//! The console's request handlers: log-in and out, the pages, and the forms that decide.
//! Every form post carries the session's CSRF token; a page without a live session sends the
//! browser to the log-in form. What a user may not decide on is absent, as in the admin API.
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;
use serde::Deserialize;

use super::pages::{self, Frame};
use super::session::{self, Lookup, Session};
use super::{base, Console};
use crate::receiver::api::{self, AppState, ConnInfo};
use crate::receiver::approvals::{ApproveOptions, Decider};
use crate::receiver::perms::{self, Principal};
use crate::receiver::store::{self, Audit};
use crate::receiver::visibility;

/// How many audit entries the audit page shows.
const AUDIT_LIMIT: usize = 200;
const MAX_REASON: usize = 500;

/// The page that answers instead (a redirect to the log-in form, a refusal); boxed, as a
/// response is large next to what succeeds.
type Refused = Box<Response>;

fn html(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn console(st: &AppState) -> Result<&Console, Refused> {
    st.console
        .as_ref()
        .ok_or_else(|| Box::new(StatusCode::NOT_FOUND.into_response()))
}

fn problem(st: &AppState, status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        pages::problem(&base(&st.site), &st.site, title, text),
    )
}

fn to_login(st: &AppState, query: &str) -> Response {
    Redirect::to(&format!("{}/login{query}", base(&st.site))).into_response()
}

fn peer(req: &Request) -> Option<ConnInfo> {
    req.extensions().get::<ConnInfo>().cloned()
}

/// A logged-in request: the session id, the session and the user as the database has it now.
struct Authed {
    id: String,
    session: Session,
    principal: Principal,
}

/// The live session of a logged-in user, or the redirect to the log-in form. The user is read
/// afresh each time: a deleted user or a changed password ends the session at once.
fn logged_in(st: &AppState, headers: &HeaderMap) -> Result<Authed, Refused> {
    let con = console(st)?;
    let id = session::cookie_id(headers, &st.site);
    let s = match con.sessions.touch(id.as_deref()) {
        Lookup::Found(s) if s.user.is_some() => s,
        Lookup::Ended => return Err(Box::new(to_login(st, "?ended=1"))),
        _ => return Err(Box::new(to_login(st, ""))),
    };
    let id = id.unwrap_or_default();
    let name = s.user.clone().unwrap_or_default();
    let found = st.db.read(move |c| Principal::lookup(c, &name));
    match found {
        Ok(Some(p)) if p.user.pw_hash == s.pw_hash => Ok(Authed {
            id,
            session: s,
            principal: p,
        }),
        Ok(_) => {
            con.sessions.remove(&id);
            Err(Box::new(to_login(st, "?ended=1")))
        }
        Err(e) => Err(Box::new(problem(
            st,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("The receiver cannot read its database now: {e}"),
        ))),
    }
}

/// Browsers say where a request comes from; a cross-site form post is refused before the
/// token is even looked at.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

fn csrf_refused(st: &AppState) -> Response {
    problem(
        st,
        StatusCode::FORBIDDEN,
        "Form refused",
        "The form was not sent from this console or has expired (missing or wrong CSRF \
         token). Reload the page and try again.",
    )
}

/// Reads a form body (bounded like every request body) into `T`.
async fn form<T: serde::de::DeserializeOwned>(st: &AppState, req: Request) -> Result<T, Refused> {
    let body = api::read_body(req.into_body(), st.limits.max_body)
        .await
        .map_err(|e| {
            Box::new(problem(
                st,
                e.status,
                "Bad request",
                "The form could not be read.",
            ))
        })?;
    serde_urlencoded::from_bytes(&body).map_err(|e| {
        Box::new(problem(
            st,
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!("The form could not be read: {e}"),
        ))
    })
}

fn frame<'a>(st: &'a AppState, b: &'a str, a: &'a Authed, con: &Console) -> Frame<'a> {
    Frame {
        site: &st.site,
        base: b,
        user: a.session.user.as_deref().unwrap_or(""),
        csrf: &a.session.csrf,
        flash: con.sessions.take_flash(&a.id),
        now: store::now(),
    }
}

fn db_error(st: &AppState, e: impl std::fmt::Display) -> Response {
    tracing::error!("console: {e}");
    problem(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The receiver cannot answer now; see its log and retry shortly.",
    )
}

pub(super) async fn root(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match logged_in(&st, &headers) {
        Ok(_) => Redirect::to(&format!("{}/pending", base(&st.site))).into_response(),
        Err(r) => *r,
    }
}

#[derive(Deserialize, Default)]
pub(super) struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    out: Option<String>,
}

pub(super) async fn login_form(
    State(st): State<Arc<AppState>>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let con = match console(&st) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let id = session::cookie_id(&headers, &st.site);
    let (id, s) = match con.sessions.touch(id.as_deref()) {
        Lookup::Found(s) if s.user.is_some() => {
            return Redirect::to(&format!("{}/pending", base(&st.site))).into_response()
        }
        Lookup::Found(s) => (id.unwrap_or_default(), s),
        _ => con.sessions.create(None, String::new()),
    };
    let notice = if q.out.is_some() {
        Some("You are logged out.")
    } else if q.ended.is_some() {
        Some("Your session has ended; log in again.")
    } else {
        None
    };
    let page = pages::login(&base(&st.site), &st.site, &s.csrf, notice, None);
    with_cookie(
        html(StatusCode::OK, page),
        &session::set_cookie(&st.site, Some(&id)),
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

async fn audit_login(st: &AppState, ci: &ConnInfo, user: &str, outcome: &str, detail: &str) {
    api::record(
        st,
        Audit {
            actor: user.chars().take(128).collect(),
            source: ci.peer.to_string(),
            action: "console_login".into(),
            outcome: outcome.into(),
            detail: detail.into(),
            ..Default::default()
        },
    )
    .await;
}

pub(super) async fn login(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let con = match console(&st) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(ci) = peer(&req) else {
        return db_error(&st, "request without connection info");
    };
    let headers = req.headers().clone();
    let old_id = session::cookie_id(&headers, &st.site);
    let f: LoginForm = match form(&st, req).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let s = match con.sessions.touch(old_id.as_deref()) {
        Lookup::Found(s) if !cross_site(&headers) && session::csrf_ok(&s, &f.csrf) => s,
        _ => return csrf_refused(&st),
    };
    let ip: IpAddr = ci.peer.ip();
    let b = base(&st.site);
    let again = |status: StatusCode, msg: &str| {
        html(status, pages::login(&b, &st.site, &s.csrf, None, Some(msg)))
    };
    if api::check_rate(&st, ip).is_err() {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed log-ins from your address; wait a minute and try again.",
        );
    }
    if f.user.is_empty() || f.user.len() > 128 {
        st.limiter.failed(ip);
        return again(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    match api::verify_user(&st, f.user.clone(), f.password).await {
        Ok(p) => {
            if let Some(old) = &old_id {
                con.sessions.remove(old);
            }
            let (id, _) = con
                .sessions
                .create(Some(p.user.name.clone()), p.user.pw_hash.clone());
            audit_login(&st, &ci, &p.user.name, "ok", "web console").await;
            tracing::info!("console log-in by {} from {}", p.user.name, ci.peer);
            with_cookie(
                Redirect::to(&format!("{b}/pending")).into_response(),
                &session::set_cookie(&st.site, Some(&id)),
            )
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            st.limiter.failed(ip);
            audit_login(
                &st,
                &ci,
                &f.user,
                "refused 401",
                "wrong user name or password",
            )
            .await;
            again(StatusCode::UNAUTHORIZED, "Wrong user name or password.")
        }
        Err(e) => again(
            e.status,
            "The receiver cannot check passwords now; retry shortly.",
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let con = match console(&st) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let headers = req.headers().clone();
    let id = session::cookie_id(&headers, &st.site);
    let f: CsrfForm = match form(&st, req).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match con.sessions.touch(id.as_deref()) {
        Lookup::Found(s) if !cross_site(&headers) && session::csrf_ok(&s, &f.csrf) => {}
        Lookup::Found(_) => return csrf_refused(&st),
        _ => return to_login(&st, ""),
    }
    if let Some(id) = &id {
        con.sessions.remove(id);
    }
    with_cookie(
        to_login(&st, "?out=1"),
        &session::set_cookie(&st.site, None),
    )
}

pub(super) async fn pending(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (a, con) = match logged_in(&st, &headers).and_then(|a| Ok((a, console(&st)?))) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let p = a.principal.clone();
    let may = p.has(perms::APPROVE_ANY) || p.has(perms::APPROVE_IN_MANAGED_FOLDER);
    let entries = match st.db.read(move |c| Ok(visibility::pending_for(c, &p))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return db_error(&st, e),
        Err(e) => return db_error(&st, e),
    };
    let b = base(&st.site);
    html(
        StatusCode::OK,
        pages::pending(&frame(&st, &b, &a, con), &entries, may),
    )
}

pub(super) async fn registrations(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (a, con) = match logged_in(&st, &headers).and_then(|a| Ok((a, console(&st)?))) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let p = a.principal.clone();
    let regs = match st
        .db
        .read(move |c| Ok(visibility::registrations_for(c, &p)))
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return db_error(&st, e),
        Err(e) => return db_error(&st, e),
    };
    let b = base(&st.site);
    html(
        StatusCode::OK,
        pages::registrations(&frame(&st, &b, &a, con), &regs),
    )
}

pub(super) async fn audit(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (a, con) = match logged_in(&st, &headers).and_then(|a| Ok((a, console(&st)?))) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let p = a.principal.clone();
    let entries = match st
        .db
        .read(move |c| Ok(visibility::audit_for(c, &p, AUDIT_LIMIT)))
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return db_error(&st, e),
        Err(e) => return db_error(&st, e),
    };
    let b = base(&st.site);
    html(
        StatusCode::OK,
        pages::audit(&frame(&st, &b, &a, con), &entries, AUDIT_LIMIT),
    )
}

/// The common part of the deciding forms: a live session, a valid token, the parsed form.
async fn posted<T: serde::de::DeserializeOwned + HasCsrf>(
    st: &AppState,
    req: Request,
) -> Result<(Authed, T, Decider), Refused> {
    let headers = req.headers().clone();
    let ci = peer(&req).ok_or_else(|| Box::new(db_error(st, "request without connection info")))?;
    let a = logged_in(st, &headers)?;
    let f: T = form(st, req).await?;
    if cross_site(&headers) || !session::csrf_ok(&a.session, f.csrf()) {
        return Err(Box::new(csrf_refused(st)));
    }
    let by = Decider {
        actor: a.principal.user.name.clone(),
        source: format!("console {}", ci.peer),
    };
    Ok((a, f, by))
}

trait HasCsrf {
    fn csrf(&self) -> &str;
}

#[derive(Deserialize)]
pub(super) struct ApproveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct DeclineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl HasCsrf for ApproveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
impl HasCsrf for DeclineForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
impl HasCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Runs a decision in the writer and leaves its outcome as the next page's message.
async fn decide<R: Send + 'static>(
    st: &AppState,
    a: &Authed,
    back: &str,
    f: impl FnOnce(&crate::receiver::store::sql::Connection) -> crate::error::Result<R> + Send + 'static,
    ok: impl FnOnce(R) -> String,
) -> Response {
    let Ok(con) = console(st) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match st.db.write(f).await {
        Ok(Ok(r)) => con.sessions.set_flash(&a.id, false, ok(r)),
        Ok(Err(e)) => con
            .sessions
            .set_flash(&a.id, true, capitalised(&e.to_string())),
        Err(e) => return db_error(st, e),
    }
    Redirect::to(&format!("{}/{back}", base(&st.site))).into_response()
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(super) async fn approve(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let (a, f, by) = match posted::<ApproveForm>(&st, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let opts = ApproveOptions {
        host: f
            .host
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty()),
        ..Default::default()
    };
    let (p, state) = (a.principal.clone(), st.clone());
    let u = uuid.clone();
    decide(
        &st,
        &a,
        "pending",
        move |c| visibility::approve_for(c, &state.keys, &p, &u, &opts, &by),
        |host| format!("Approved: host {host} is registered ({uuid})."),
    )
    .await
}

pub(super) async fn decline(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let (a, f, by) = match posted::<DeclineForm>(&st, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let reason = f.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        if let Ok(con) = console(&st) {
            con.sessions.set_flash(
                &a.id,
                true,
                format!("Give a reason (1 to {MAX_REASON} characters); the agent receives it."),
            );
        }
        return Redirect::to(&format!("{}/pending", base(&st.site))).into_response();
    }
    let p = a.principal.clone();
    let u = uuid.clone();
    let r = reason.clone();
    decide(
        &st,
        &a,
        "pending",
        move |c| visibility::decline_for(c, &p, &u, &r, &by),
        |e| {
            let name = e
                .host
                .or_else(|| {
                    e.labels
                        .get(crate::receiver::admin::DEFAULT_HOSTNAME_LABEL)
                        .cloned()
                })
                .unwrap_or(uuid);
            format!("Declined {name}: {reason}")
        },
    )
    .await
}

pub(super) async fn revoke(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    let (a, _, by) = match posted::<CsrfForm>(&st, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let p = a.principal.clone();
    let u = uuid.clone();
    decide(
        &st,
        &a,
        "registrations",
        move |c| visibility::revoke_for(c, &p, &u, &by),
        |r| format!("Revoked the registration {} of host {}.", r.uuid, r.host),
    )
    .await
}
