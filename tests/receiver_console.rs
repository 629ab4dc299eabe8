//! The web console against the real `serve` over TLS, driven like a browser (cookies and
//! forms by hand): log-in, cookie flags and security headers, CSRF refusals, an approver sees
//! and decides only its folder, approving creates the host, declining reaches the agent,
//! revoking, the audit log, logout, the idle timeout, the log-in rate limit, and the off switch.
#[path = "support/agent.rs"]
mod agent;
mod common;

use std::sync::Arc;
use std::time::Duration;

use agent::{Agent, PASSWORD};
use common::TestReceiver;

/// A cookie-keeping HTTPS client that does not follow redirects (so they can be checked).
struct Browser {
    agent: ureq::Agent,
    base: String,
    site: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    fn new(rcv: &TestReceiver) -> Browser {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut rcv.site_ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Browser {
            agent: ureq::AgentBuilder::new()
                .tls_config(Arc::new(cfg))
                .redirects(0)
                .timeout(Duration::from_secs(30))
                .build(),
            base: format!("https://{}/{}/tether-admin", rcv.server(), rcv.site),
            site: rcv.site.clone(),
            cookie: None,
        }
    }

    fn finish(&mut self, r: Result<ureq::Response, ureq::Error>) -> Page {
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let headers: Vec<(String, String)> = resp
            .headers_names()
            .into_iter()
            .flat_map(|n| {
                resp.all(&n)
                    .into_iter()
                    .map(|v| (n.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let name = format!("__Host-tether-console-{}=", self.site);
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie") && v.starts_with(&name) {
                let val = v[name.len()..].split(';').next().unwrap_or("");
                self.cookie =
                    (!v.contains("Max-Age=0") && !val.is_empty()).then(|| format!("{name}{val}"));
            }
        }
        Page {
            status: resp.status(),
            headers,
            body: resp.into_string().unwrap_or_default(),
        }
    }

    fn get(&mut self, path: &str) -> Page {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let r = req.call();
        self.finish(r)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let r = req.send_string(&serde_urlencoded::to_string(form).unwrap());
        self.finish(r)
    }

    /// Opens the log-in form and logs in; returns the first page after it.
    fn login(&mut self, user: &str, password: &str) -> Page {
        let form = self.get("/login");
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        let r = self.post(
            "/login",
            &[("csrf", &csrf), ("user", user), ("password", password)],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert!(r.header("location").unwrap().ends_with("/pending"));
        self.get("/pending")
    }
}

fn site(serve_args: &[&str]) -> TestReceiver {
    let rcv = TestReceiver::start_with("con", serve_args);
    for g in ["ga", "gb"] {
        rcv.admin_json(&["group", "add", g]);
    }
    rcv.admin_json(&["folder", "add", "/a", "--contact-group", "ga"]);
    rcv.admin_json(&["folder", "add", "/b", "--contact-group", "gb"]);
    for (rule, team, folder) in [("ha", "team=a", "/a"), ("hb", "team=b", "/b")] {
        rcv.admin_json(&[
            "rule",
            "add",
            rule,
            "--match",
            team,
            "--hold",
            "--create-in",
            folder,
        ]);
    }
    rcv.add_user("reg", "agent_registration", PASSWORD);
    for (u, g) in [("appa", "ga"), ("appb", "gb")] {
        let out = rcv.admin_stdin(
            &[
                "user",
                "add",
                u,
                "--role",
                "agent_approver",
                "--contact-group",
                g,
                "--password-stdin",
                "--json",
            ],
            &format!("{PASSWORD}\n"),
        );
        assert!(out.status.success());
    }
    rcv
}

fn register_new(
    a: &Agent,
    rcv: &TestReceiver,
    team: &str,
    host: &str,
    extra: &[&str],
) -> agent::Run {
    let server = rcv.server();
    let team_label = format!("team:{team}");
    let host_label = format!("cmk/hostname:{host}");
    let mut args = vec![
        "register-new",
        "--json",
        "-s",
        &server,
        "-i",
        &rcv.site,
        "-U",
        "reg",
        "--password-stdin",
        "--trust-fingerprint",
        &rcv.fingerprint,
        "--agent-labels",
        &team_label,
        "--agent-labels",
        &host_label,
    ];
    args.extend_from_slice(extra);
    a.run_with(&args, Some(PASSWORD), &[])
}

/// A new host held for approval by `tether register-new --no-wait`: (agent, uuid).
fn held(rcv: &TestReceiver, team: &str, host: &str) -> (Agent, String) {
    let a = Agent::new();
    let r = register_new(&a, rcv, team, host, &["--no-wait"]).ok("tether.register-new.schema.json");
    assert_eq!(r["status"], "pending", "{r}");
    (a, r["uuid"].as_str().unwrap().to_string())
}

fn pending_uuids(rcv: &TestReceiver) -> Vec<String> {
    rcv.admin_json(&["pending", "list"])["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uuid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_approver_logs_in_decides_its_folder_and_logs_out() {
    let rcv = site(&[]);
    let (agent_a, ua) = held(&rcv, "a", "na");
    let (_agent_b, ub) = held(&rcv, "b", "nb");
    let (agent_d, ud) = held(&rcv, "a", "nd");
    let mut b = Browser::new(&rcv);

    // Not logged in: every page leads to the log-in form.
    let r = b.get("/pending");
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().ends_with("/login"));

    // The log-in form: session cookie flags and security headers.
    let form = b.get("/login");
    assert_eq!(form.status, 200);
    let set = form.header("set-cookie").expect("session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(set.starts_with("__Host-tether-console-con="), "{set}");
    let csp = form.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(form.header("x-frame-options"), Some("DENY"));
    assert_eq!(form.header("x-content-type-options"), Some("nosniff"));
    assert!(form.header("cache-control").unwrap().contains("no-store"));
    assert!(!form.body.contains("<script"), "no script in the page");
    assert!(form.body.contains("<label for=\"user\">"));
    let css = b.get("/static/console.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));

    // Log-in without the CSRF token, then with a wrong password: refused.
    let r = b.post("/login", &[("user", "appa"), ("password", PASSWORD)]);
    assert_eq!(r.status, 403, "{}", r.body);
    let csrf = form.csrf();
    let r = b.post(
        "/login",
        &[("csrf", &csrf), ("user", "appa"), ("password", "wrong")],
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong user name or password"));

    // Logged in: a new session id (the log-in form's is not reused).
    let before = b.cookie.clone();
    let page = b.login("appa", PASSWORD);
    assert_ne!(b.cookie, before, "session id changes at log-in");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&ua) && page.body.contains(&ud));
    assert!(page.body.contains("team:a"), "labels shown");
    assert!(page.body.contains("127.0.0.1"), "source address shown");
    assert!(page.body.contains("rule ha"), "holding rule shown");
    assert!(!page.body.contains(&ub), "another folder's entry is absent");
    assert!(!page.body.contains("nb"), "another folder's host is absent");
    let csrf = page.csrf();

    // A form without the token, or with another one, changes nothing.
    let r = b.post(&format!("/pending/{ua}/approve"), &[]);
    assert_eq!(r.status, 403);
    let r = b.post(&format!("/pending/{ua}/approve"), &[("csrf", "forged")]);
    assert_eq!(r.status, 403);
    assert!(pending_uuids(&rcv).contains(&ua));
    // Another folder's entry cannot be decided: it is absent.
    let r = b.post(&format!("/pending/{ub}/approve"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    let page = b.get("/pending");
    assert!(
        page.body.contains("No pending registration with UUID"),
        "{}",
        page.body
    );
    assert!(pending_uuids(&rcv).contains(&ub));

    // Approve: the host is created in the rule's folder and the waiting agent completes.
    let r = b.post(&format!("/pending/{ua}/approve"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    let page = b.get("/pending");
    assert!(
        page.body.contains("Approved: host na is registered"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&format!("id=\"p-{ua}\"")),
        "no longer pending"
    );
    let hosts = rcv.admin_json(&["host", "list"]);
    assert!(hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "na" && h["folder"] == "/a"));
    let done = register_new(&agent_a, &rcv, "a", "na", &["--timeout", "10"])
        .ok("tether.register-new.schema.json");
    assert_eq!(done["status"], "success", "{done}");

    // Decline with a reason: the agent exits 11 with it. An empty reason is refused.
    let r = b.post(
        &format!("/pending/{ud}/decline"),
        &[("csrf", &csrf), ("reason", "  ")],
    );
    assert_eq!(r.status, 303);
    assert!(b.get("/pending").body.contains("Give a reason"));
    let r = b.post(
        &format!("/pending/{ud}/decline"),
        &[("csrf", &csrf), ("reason", "not one of ours <b>")],
    );
    assert_eq!(r.status, 303);
    let page = b.get("/pending");
    assert!(
        page.body.contains("Declined nd: not one of ours &lt;b&gt;"),
        "escaped: {}",
        page.body
    );
    let e = register_new(&agent_d, &rcv, "a", "nd", &["--timeout", "5"]).err("declined", 11);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not one of ours <b>"));

    // Registrations of the folder, and revoking one.
    let regs = b.get("/registrations");
    assert_eq!(regs.status, 200);
    assert!(regs.body.contains(&ua) && regs.body.contains("live"));
    let r = b.post(&format!("/registrations/{ua}/revoke"), &[]);
    assert_eq!(r.status, 403, "revoke needs the token");
    let r = b.post(&format!("/registrations/{ua}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    let regs = b.get("/registrations");
    assert!(
        regs.body.contains("Revoked the registration"),
        "{}",
        regs.body
    );
    assert!(regs.body.contains("revoked"));

    // The audit log of the folder: the decisions, by this user, from the console.
    let audit = b.get("/audit");
    assert_eq!(audit.status, 200);
    for want in ["pending_approve", "pending_decline", "unregister", "appa"] {
        assert!(audit.body.contains(want), "{want} missing");
    }
    assert!(
        !audit.body.contains(&ub),
        "another folder's entries are absent"
    );

    // The approver of folder B sees only B.
    let mut other = Browser::new(&rcv);
    let page = other.login("appb", PASSWORD);
    assert!(page.body.contains(&ub) && !page.body.contains(&ud));
    assert!(!other.get("/registrations").body.contains(&ua));
    // A registration-only user sees nothing to decide.
    let mut reg = Browser::new(&rcv);
    let page = reg.login("reg", PASSWORD);
    assert!(!page.body.contains(&ub), "{}", page.body);
    assert!(page.body.contains("may not approve"));

    // Logout: the cookie is cleared and the old session id is dead.
    let old = b.cookie.clone();
    let r = b.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert!(b.cookie.is_none());
    b.cookie = old;
    let r = b.get("/pending");
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().contains("/login"));
}

#[test]
fn idle_sessions_end_and_failed_logins_are_rate_limited() {
    let rcv = site(&[
        "--console-idle-timeout",
        "1s",
        "--auth-fail-burst",
        "2",
        "--auth-fail-per-minute",
        "1",
    ]);
    let mut b = Browser::new(&rcv);
    b.login("appa", PASSWORD);
    std::thread::sleep(Duration::from_millis(1500));
    let r = b.get("/pending");
    assert_eq!(r.status, 303, "idle session ended");
    assert!(r.header("location").unwrap().ends_with("/login?ended=1"));

    let mut bad = Browser::new(&rcv);
    let csrf = bad.get("/login").csrf();
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            bad.post(
                "/login",
                &[("csrf", &csrf), ("user", "appa"), ("password", "nope")],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, vec![401, 401, 429]);
    // The limit is the API's too: the same address is refused there.
    let (st, _) = common::response(
        rcv.agent(None)
            .get(&format!(
                "https://{}/{}/tether-admin/v1/pending",
                rcv.server(),
                rcv.site
            ))
            .set("Authorization", &common::basic("appa", PASSWORD))
            .call(),
    );
    assert_eq!(st, 429);
}

#[test]
fn the_console_can_be_switched_off() {
    let rcv = TestReceiver::start_with("off", &["--no-console"]);
    let mut b = Browser::new(&rcv);
    for path in ["/login", "/pending", "/", "/static/console.css"] {
        assert_eq!(b.get(path).status, 404, "{path}");
    }
    assert_eq!(b.post("/login", &[]).status, 404);
}
