//! The ends of a registration: `tether delete` ends it on the site too, and a reinstalled
//! machine asks to take its host name over through the approval queue. Real receiver, real
//! binaries, a registration-only user throughout.
#[path = "support/agent.rs"]
mod agent;
mod common;

use agent::{receiver_with_hosts, Agent};
use common::TestReceiver;
use serde_json::Value;

fn registration_states(rcv: &TestReceiver, host: &str) -> Vec<String> {
    let l = rcv.admin_json(&["registrations", "list", "--host", host]);
    l["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn delete_ends_the_registration_on_the_site() {
    let rcv = receiver_with_hosts("l1");
    let a = Agent::new();
    let reg = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let uuid = reg["connection"]["uuid"].as_str().unwrap().to_string();
    let d = a
        .run(&["delete", "h1", "--json"])
        .ok("tether.delete.schema.json");
    assert_eq!(d["deleted"][0], uuid.as_str());
    assert_eq!(d["unregistered_on_site"][0], uuid.as_str(), "{d}");
    assert!(d.get("warnings").is_none(), "{d}");
    assert_eq!(registration_states(&rcv, "h1"), vec!["revoked"]);
    let audit = rcv.admin_json(&["audit", "--host", "h1"]);
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "unregister_self" && e["outcome"] == "revoked"));
    // The host can enroll again with a registration-only user: no identity lock left.
    let b = Agent::new();
    b.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
}

#[test]
fn delete_against_a_site_without_the_endpoint_warns_and_deletes_locally() {
    let rcv = TestReceiver::start_with("l2", &["--emulate", "no-tether-routes"]);
    rcv.add_user("reg", "agent_registration", agent::PASSWORD);
    rcv.add_host("h2", &[]);
    rcv.add_host("h1", &[]);
    let a = Agent::new();
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let d = a
        .run(&["delete", "h1", "--json"])
        .ok("tether.delete.schema.json");
    assert_eq!(d["changed"], true);
    assert_eq!(d["unregistered_on_site"], Value::Array(vec![]));
    assert!(
        d["warnings"][0]
            .as_str()
            .unwrap()
            .contains("stays registered"),
        "{d}"
    );
    assert!(a.connections().is_empty());
    assert_eq!(registration_states(&rcv, "h1"), vec!["live"]);
    // --local-only never asks the site.
    let b = Agent::new();
    b.register(&rcv, "h2", "reg", &[])
        .ok("tether.register.schema.json");
    let d = b
        .run(&["delete", "h2", "--local-only", "--json"])
        .ok("tether.delete.schema.json");
    assert!(d.get("warnings").is_none(), "{d}");
}

#[test]
fn a_reinstalled_machine_takes_its_name_over_through_the_queue() {
    let rcv = receiver_with_hosts("l3");
    let old = Agent::new();
    let first = old
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let old_uuid = first["connection"]["uuid"].as_str().unwrap().to_string();

    // The reinstalled machine: a fresh state directory meets the identity lock, and the hint
    // names the way out.
    let new = Agent::new();
    let e = new.register(&rcv, "h1", "reg", &[]).err("conflict", 7);
    let hint = e["error"]["hint"].as_str().unwrap();
    assert!(hint.contains("--request-takeover"), "{hint}");
    assert!(hint.contains("reregister_host"), "{hint}");

    let r = new.register(&rcv, "h1", "reg", &["--request-takeover"]);
    r.err("pending", 10);
    let queue = rcv.admin_json(&["pending", "list"]);
    let entry = &queue["registrations"][0];
    assert_eq!(entry["kind"], "takeover", "{queue}");
    assert_eq!(entry["host"], "h1");
    assert_eq!(entry["folder"], "/");
    let req_uuid = entry["uuid"].as_str().unwrap().to_string();
    // Nothing changed yet: the old registration is live.
    assert_eq!(
        old.run(&["status", "--json"]).json()["connections"][0]["remote"]["status"],
        "registered"
    );

    rcv.admin_json(&["pending", "approve", &req_uuid]);
    let done = new
        .register(&rcv, "h1", "reg", &["--request-takeover"])
        .ok("tether.register.schema.json");
    assert_eq!(done["reason"], "taken_over", "{done}");
    assert_eq!(done["connection"]["uuid"], req_uuid.as_str());
    assert_eq!(done["connection"]["host_name"], "h1");
    let st = old
        .run(&["status", "--json"])
        .ok("tether.status.schema.json");
    assert_eq!(
        st["connections"][0]["remote"]["status"], "rejected",
        "old one revoked"
    );
    let audit = rcv.admin_json(&["audit", "--host", "h1"]);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "taken over"
                && e["detail"].as_str().unwrap().contains(&old_uuid))
    );

    // A second takeover attempt that the site declines: exit 11 with the reason.
    let third = Agent::new();
    third
        .register(&rcv, "h1", "reg", &["--request-takeover"])
        .err("pending", 10);
    let queue = rcv.admin_json(&["pending", "list"]);
    let uuid = queue["registrations"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    rcv.admin_json(&[
        "pending",
        "decline",
        &uuid,
        "--reason",
        "h1 was not reinstalled",
    ]);
    let e = third
        .register(&rcv, "h1", "reg", &["--request-takeover"])
        .err("declined", 11);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not reinstalled"));
    // The approved controller is untouched.
    let st = new
        .run(&["status", "--json"])
        .ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "registered");
}
