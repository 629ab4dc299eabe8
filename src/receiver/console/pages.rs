//! The console's HTML, rendered on the server with maud (which escapes every value). No
//! inline script or style: the one stylesheet is served from the binary.
use maud::{html, Markup, DOCTYPE};

use super::session::Flash;
use crate::receiver::store::AuditEntry;
use crate::receiver::visibility::{HeldEntry, RegistrationView};

/// Which page is shown, for the navigation's `aria-current`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Pending,
    Registrations,
    Audit,
}

/// What every page of a logged-in user needs.
pub struct Frame<'a> {
    pub site: &'a str,
    pub base: &'a str,
    pub user: &'a str,
    pub csrf: &'a str,
    pub flash: Option<Flash>,
    pub now: i64,
}

fn head(base: &str, site: &str, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) " · tether " (site) }
            link rel="stylesheet" href={ (base) "/static/console.css" };
        }
    }
}

fn flash(f: &Option<Flash>) -> Markup {
    html! {
        @if let Some(f) = f {
            @if f.error {
                p class="flash error" role="alert" { (f.text) }
            } @else {
                p class="flash ok" role="status" { (f.text) }
            }
        }
    }
}

fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

fn layout(fr: &Frame, nav: Nav, title: &str, body: Markup) -> Markup {
    let link = |n: Nav, path: &str, label: &str| {
        html! {
            @if n == nav {
                a href={ (fr.base) "/" (path) } aria-current="page" { (label) }
            } @else {
                a href={ (fr.base) "/" (path) } { (label) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(fr.base, fr.site, title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    span class="brand" { "tether · " (fr.site) }
                    nav aria-label="Main" {
                        (link(Nav::Pending, "pending", "Pending"))
                        (link(Nav::Registrations, "registrations", "Registrations"))
                        (link(Nav::Audit, "audit", "Audit log"))
                    }
                    form class="logout" method="post" action={ (fr.base) "/logout" } {
                        (csrf_field(fr.csrf))
                        button type="submit" { "Log out " span class="who" { (fr.user) } }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (flash(&fr.flash))
                    (body)
                }
            }
        }
    }
}

/// "3 min", "2 h", "5 d": how long ago.
pub fn age(now: i64, then: i64) -> String {
    let s = (now - then).max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// UTC time for people (`2026-01-31 14:05 UTC`) and for machines (RFC 3339).
fn when(ts: i64) -> (String, String) {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ts) else {
        return (ts.to_string(), ts.to_string());
    };
    let machine = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let human = format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    );
    (human, machine)
}

fn time_el(ts: i64) -> Markup {
    let (human, machine) = when(ts);
    html! { time datetime=(machine) { (human) } }
}

pub fn login(
    base: &str,
    site: &str,
    csrf: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, site, "Log in"))
            body class="login" {
                main id="main" {
                    h1 { "tether · " (site) }
                    p { "Approve and decline the agents waiting for your folders." }
                    @if let Some(n) = notice { p class="flash ok" role="status" { (n) } }
                    @if let Some(e) = error { p class="flash error" role="alert" { (e) } }
                    form method="post" action={ (base) "/login" } {
                        (csrf_field(csrf))
                        label for="user" { "User" }
                        input id="user" name="user" type="text" autocomplete="username"
                            autocapitalize="none" spellcheck="false" required autofocus;
                        label for="password" { "Password" }
                        input id="password" name="password" type="password"
                            autocomplete="current-password" required;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A plain page for refusals (bad or missing CSRF token, unknown page).
pub fn problem(base: &str, site: &str, title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, site, title))
            body class="login" {
                main id="main" {
                    h1 { (title) }
                    p role="alert" { (text) }
                    p { a href={ (base) "/" } { "Back to the console" } }
                }
            }
        }
    }
}

fn labels(l: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        ul class="labels" {
            @for (k, v) in l {
                li { code { (k) ":" (v) } }
            }
        }
    }
}

pub fn pending(fr: &Frame, entries: &[HeldEntry], may_approve: bool) -> Markup {
    let body = html! {
        @if !may_approve {
            p { "Your role may not approve registrations in any folder." }
        }
        @if entries.is_empty() {
            p class="empty" { "No registrations are waiting for your decision." }
        } @else {
            table class="cards" {
                caption { (entries.len()) " waiting, oldest first" }
                thead {
                    tr {
                        th scope="col" { "Host" }
                        th scope="col" { "Labels" }
                        th scope="col" { "Folder" }
                        th scope="col" { "Source" }
                        th scope="col" { "Requested by" }
                        th scope="col" { "Age" }
                        th scope="col" { "Held by" }
                        th scope="col" { "Decision" }
                    }
                }
                tbody {
                    @for e in entries { (pending_row(fr, e)) }
                }
            }
        }
    };
    layout(fr, Nav::Pending, "Pending registrations", body)
}

fn pending_row(fr: &Frame, e: &HeldEntry) -> Markup {
    let p = &e.info;
    let name = p
        .host
        .clone()
        .or_else(|| {
            p.labels
                .get(crate::receiver::admin::DEFAULT_HOSTNAME_LABEL)
                .cloned()
        })
        .unwrap_or_else(|| "(no name)".into());
    let id = &p.uuid;
    let held_by = match (&e.rule, p.kind.as_str()) {
        (_, "takeover") => "takeover request".to_string(),
        (Some(r), _) => format!("rule {r}"),
        (None, _) => "no rule matched".to_string(),
    };
    html! {
        tr id={ "p-" (id) } {
            th scope="row" data-label="Host" {
                (name)
                @if p.kind == "takeover" { " " span class="tag" { "takeover" } }
                br;
                small class="uuid" { (id) }
            }
            td data-label="Labels" { (labels(&p.labels)) }
            td data-label="Folder" { (p.folder.as_deref().unwrap_or("/")) }
            td data-label="Source" { (p.source) }
            td data-label="Requested by" { (p.user) }
            td data-label="Age" { (age(fr.now, p.created_at)) " (" (time_el(p.created_at)) ")" }
            td data-label="Held by" { (held_by) }
            td data-label="Decision" class="decide" {
                form method="post" action={ (fr.base) "/pending/" (id) "/approve" } {
                    (csrf_field(fr.csrf))
                    @if p.kind == "new" {
                        details {
                            summary { "Host name" }
                            label for={ "host-" (id) } { "Create as (default " (name) ")" }
                            input id={ "host-" (id) } name="host" type="text" autocapitalize="none"
                                spellcheck="false" maxlength="253";
                        }
                    }
                    button type="submit" class="approve" {
                        "Approve" span class="vh" { " " (name) }
                    }
                }
                form method="post" action={ (fr.base) "/pending/" (id) "/decline" } {
                    (csrf_field(fr.csrf))
                    label for={ "reason-" (id) } { "Reason for declining" span class="vh" { " " (name) } }
                    input id={ "reason-" (id) } name="reason" type="text" required maxlength="500";
                    button type="submit" class="decline" {
                        "Decline" span class="vh" { " " (name) }
                    }
                }
            }
        }
    }
}

pub fn registrations(fr: &Frame, regs: &[RegistrationView]) -> Markup {
    let body = html! {
        @if regs.is_empty() {
            p class="empty" { "No registrations in your folders." }
        } @else {
            table class="cards" {
                caption { (regs.len()) " registrations, by host" }
                thead {
                    tr {
                        th scope="col" { "Host" }
                        th scope="col" { "Folder" }
                        th scope="col" { "Mode" }
                        th scope="col" { "Registered" }
                        th scope="col" { "Certificate valid until" }
                        th scope="col" { "State" }
                        th scope="col" { "Action" }
                    }
                }
                tbody {
                    @for v in regs { (registration_row(fr, v)) }
                }
            }
        }
    };
    layout(fr, Nav::Registrations, "Registrations", body)
}

fn registration_row(fr: &Frame, v: &RegistrationView) -> Markup {
    let r = &v.registration;
    let state = if r.revoked_at.is_some() {
        "revoked"
    } else if r.live(fr.now) {
        "live"
    } else {
        "expired"
    };
    html! {
        tr {
            th scope="row" data-label="Host" { (r.host) br; small class="uuid" { (r.uuid) } }
            td data-label="Folder" { (v.folder.as_deref().unwrap_or("(host deleted)")) }
            td data-label="Mode" { (r.connection_mode) }
            td data-label="Registered" { (time_el(r.registered_at)) " by " (r.registered_by) }
            td data-label="Certificate valid until" {
                @if let Some(t) = r.cert_not_after { (time_el(t)) } @else { "–" }
            }
            td data-label="State" { span class={ "state " (state) } { (state) } }
            td data-label="Action" {
                @if r.revoked_at.is_none() {
                    form method="post" action={ (fr.base) "/registrations/" (r.uuid) "/revoke" } {
                        (csrf_field(fr.csrf))
                        button type="submit" class="decline" {
                            "Revoke" span class="vh" { " " (r.host) " " (r.uuid) }
                        }
                    }
                }
            }
        }
    }
}

pub fn audit(fr: &Frame, entries: &[AuditEntry], limit: usize) -> Markup {
    let body = html! {
        @if entries.is_empty() {
            p class="empty" { "No audit entries about your folders." }
        } @else {
            table class="cards" {
                caption { "The newest " (entries.len()) " entries (at most " (limit) "), newest first" }
                thead {
                    tr {
                        th scope="col" { "Time" }
                        th scope="col" { "Action" }
                        th scope="col" { "Host" }
                        th scope="col" { "By" }
                        th scope="col" { "Source" }
                        th scope="col" { "Outcome" }
                        th scope="col" { "Detail" }
                    }
                }
                tbody {
                    @for e in entries {
                        tr {
                            th scope="row" data-label="Time" { (time_el(e.ts)) }
                            td data-label="Action" { (e.action) }
                            td data-label="Host" {
                                (e.host.as_deref().unwrap_or("–"))
                                @if let Some(u) = &e.uuid { br; small class="uuid" { (u) } }
                            }
                            td data-label="By" { (e.actor) }
                            td data-label="Source" { (e.source) }
                            td data-label="Outcome" { (e.outcome) }
                            td data-label="Detail" { (e.detail) }
                        }
                    }
                }
            }
        }
    };
    layout(fr, Nav::Audit, "Audit log", body)
}
