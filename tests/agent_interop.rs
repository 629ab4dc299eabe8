//! The controller against receivers that behave like other Checkmk receivers: older layouts
//! (no registration_status_v2, no token endpoint), the Raw edition (no new-host
//! registration), Checkmk's link-only unregistration, and a wrong site name. The receiver is
//! the real tether-receiver with a hidden `--emulate` switch for each behaviour.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;

use agent::{Agent, PASSWORD};
use common::TestReceiver;

fn receiver(site: &str, emulate: &[&str]) -> TestReceiver {
    let mut args = Vec::new();
    for e in emulate {
        args.extend(["--emulate", e]);
    }
    let rcv = TestReceiver::start_with(site, &args);
    rcv.add_user("reg", "agent_registration", PASSWORD);
    for h in ["h1", "h2"] {
        rcv.add_host(h, &[]);
    }
    rcv
}

fn hint(v: &serde_json::Value) -> String {
    v["error"]["hint"].as_str().unwrap_or_default().to_string()
}

#[test]
fn without_registration_status_v2_the_older_route_answers() {
    let rcv = receiver("i1", &["no-registration-status-v2"]);
    let a = Agent::new();
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    // Confirmed through registration_status: no re-registration on the second run.
    let again = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(again["action"], "unchanged", "{again}");
    assert!(again.get("warnings").is_none(), "{again}");
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "registered");
    assert_eq!(st["connections"][0]["remote"]["hostname"], "h1");

    // Unregistered on the site: the older route says so, and register says why it
    // registers again.
    rcv.admin_json(&["unregister", "h1"]);
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "rejected", "{st}");
    let back = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(back["action"], "registered");
    assert_eq!(back["reason"], "not_registered_on_site", "{back}");
}

#[test]
fn without_any_status_route_registration_is_kept_not_churned() {
    let rcv = receiver(
        "i2",
        &["no-registration-status-v2", "no-registration-status"],
    );
    let a = Agent::new();
    let first = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let uuid = first["connection"]["uuid"].clone();
    let cert = a.connections()[0]["agent_cert"].clone();
    for _ in 0..2 {
        let again = a
            .register(&rcv, "h1", "reg", &[])
            .ok("tether.register.schema.json");
        assert_eq!(again["action"], "unchanged", "{again}");
        assert_eq!(again["changed"], false);
        assert_eq!(again["connection"]["uuid"], uuid);
        let w = again["warnings"][0].as_str().unwrap_or_default();
        assert!(w.contains("registration_status"), "{again}");
    }
    assert_eq!(a.connections()[0]["agent_cert"], cert, "no new certificate");
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    let remote = &st["connections"][0]["remote"];
    assert_eq!(remote["status"], "unknown", "{st}");
    assert_eq!(remote["error"]["code"], "unsupported");
}

#[test]
fn raw_edition_refuses_new_hosts_with_a_way_forward() {
    let rcv = receiver("i3", &["raw-edition"]);
    let a = Agent::new();
    let server = rcv.server();
    let r = a.run_with(
        &[
            "register-new",
            "--json",
            "-s",
            &server,
            "-i",
            "i3",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        Some(PASSWORD),
        &[],
    );
    let e = r.err("unsupported", 15);
    assert_eq!(e["error"]["http_status"], 501);
    assert!(hint(&e).contains("tether register"), "{e}");
    assert!(a.registry()["pending"]
        .as_array()
        .is_none_or(|p| p.is_empty()));
    // The error line names the status once.
    assert_eq!(r.stderr.matches("501").count(), 1, "{}", r.stderr);
}

#[test]
fn token_registration_on_a_receiver_without_tokens() {
    let rcv = receiver("i4", &["no-token-endpoint"]);
    let tok = rcv.admin_json(&["token", "create", "--host", "h1", "--ttl", "1h"]);
    let token = tok["token"].as_str().unwrap().to_string();
    let a = Agent::new();
    let server = rcv.server();
    let args = [
        "register",
        "--json",
        "-s",
        &server,
        "-i",
        "i4",
        "-H",
        "h1",
        "--trust-fingerprint",
        &rcv.fingerprint,
    ];
    let e = a
        .run_with(&args, None, &[("TETHER_TOKEN", &token)])
        .err("unsupported", 15);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("registration tokens"));
    assert!(hint(&e).contains("password"), "{e}");
    assert!(!hint(&e).contains("create the host"), "{e}");
}

#[test]
fn wrong_site_name_is_its_own_error() {
    let rcv = receiver("i5", &[]);
    let a = Agent::new();
    let server = rcv.server();
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "nosuchsite",
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        Some(PASSWORD),
        &[],
    );
    let e = r.err("unknown_site", 17);
    assert!(hint(&e).contains("--site"), "{e}");
    // An unknown host on the right site is still host_not_found, with its hint.
    let e = a
        .register(&rcv, "nosuchhost", "reg", &[])
        .err("host_not_found", 5);
    assert!(hint(&e).contains("create the host"), "{e}");
    // A token on a receiver with a token endpoint but a wrong site: unknown site too.
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "nosuchsite",
            "-H",
            "h1",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        None,
        &[("TETHER_TOKEN", "1:00000000-0000-4000-8000-000000000000")],
    );
    r.err("unknown_site", 17);
}

#[test]
fn link_only_unregistration_says_register_again() {
    // Checkmk removes the host link and leaves the certificate valid: the mTLS routes
    // answer 403 "Host is not registered", which is not a permission problem.
    let rcv = receiver("i6", &["no-revocation"]);
    rcv.add_host("p1", &["--mode", "push"]);
    let a = Agent::new();
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    rcv.admin_json(&["unregister", "h1"]);
    let r = a.run(&["renew-certificate", "--json"]);
    let e = r.err("not_registered", 16);
    assert_eq!(e["error"]["http_status"], 403);
    assert!(hint(&e).contains("register again"), "{e}");
    assert!(!hint(&e).contains("permission"), "{e}");
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "not_registered");

    // Push: the same answer from agent_data.
    let b = Agent::new();
    b.register(&rcv, "p1", "reg", &[])
        .ok("tether.register.schema.json");
    b.write_config(&format!(
        "[agent]\nfile = {:?}\n",
        daemon::fixture().display().to_string()
    ));
    rcv.admin_json(&["unregister", "p1"]);
    let e = b.run(&["push", "--json"]).err("not_registered", 16);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no longer links"));
}
