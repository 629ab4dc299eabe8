//! The admin API's approval queue, filtered by folder rights: admin, approvers of folders A and
//! B, a registration-only user and no credentials; decisions are taken once under a race; the
//! waiting `tether register-new` gets the outcome.
#[path = "support/agent.rs"]
mod agent;
mod common;

use agent::{Agent, PASSWORD};
use common::{basic, response, TestReceiver};
use serde_json::{json, Value};

fn site() -> TestReceiver {
    let rcv = TestReceiver::start("adm");
    for g in ["ga", "gb"] {
        rcv.admin_json(&["group", "add", g]);
    }
    rcv.admin_json(&["folder", "add", "/a", "--contact-group", "ga"]);
    rcv.admin_json(&["folder", "add", "/b", "--contact-group", "gb"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "ha",
        "--match",
        "team=a",
        "--hold",
        "--create-in",
        "/a",
    ]);
    rcv.admin_json(&[
        "rule",
        "add",
        "hb",
        "--match",
        "team=b",
        "--hold",
        "--create-in",
        "/b",
    ]);
    rcv.add_user("root", "admin", PASSWORD);
    rcv.add_user("reg", "agent_registration", PASSWORD);
    for (u, g) in [("appa", "ga"), ("appb", "gb")] {
        rcv.add_user(u, "agent_approver", PASSWORD);
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

fn api(
    rcv: &TestReceiver,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!(
        "https://{}/{}/tether-admin/v1/{path}",
        rcv.server(),
        rcv.site
    );
    let agent = rcv.agent(None);
    let mut req = agent.request(method, &url);
    if let Some(u) = user {
        req = req.set("Authorization", &basic(u, PASSWORD));
    }
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (st, v) = response(r);
    // Every answer matches its generated schema.
    let schema = match (st, path) {
        (200, "pending") => "admin-api.pending.schema.json",
        (200, _) => "admin-api.decision.schema.json",
        _ => "admin-api.error.schema.json",
    };
    common::validate_json(schema, &v);
    (st, v)
}

/// Starts a held new-host registration with `tether register-new --no-wait`.
fn held(rcv: &TestReceiver, team: &str, host: &str) -> (Agent, String) {
    let a = Agent::new();
    let r = register_new(&a, rcv, team, host, &["--no-wait"]).ok("tether.register-new.schema.json");
    assert_eq!(r["status"], "pending", "{r}");
    (a, r["uuid"].as_str().unwrap().to_string())
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

fn uuids(v: &Value) -> Vec<String> {
    v["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uuid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn approvers_see_and_decide_only_their_folders() {
    let rcv = site();
    let (agent_a, ua) = held(&rcv, "a", "na");
    let (_agent_b, ub) = held(&rcv, "b", "nb");

    let (st, all) = api(&rcv, "GET", "pending", Some("root"), None);
    assert_eq!(st, 200);
    let mut both = uuids(&all);
    both.sort();
    let mut want = vec![ua.clone(), ub.clone()];
    want.sort();
    assert_eq!(both, want);
    let (_, a) = api(&rcv, "GET", "pending", Some("appa"), None);
    assert_eq!(uuids(&a), vec![ua.clone()]);
    assert_eq!(a["pending"][0]["folder"], "/a");
    assert_eq!(a["pending"][0]["labels"]["team"], "a");
    let (_, b) = api(&rcv, "GET", "pending", Some("appb"), None);
    assert_eq!(uuids(&b), vec![ub.clone()]);
    let (st, r) = api(&rcv, "GET", "pending", Some("reg"), None);
    assert_eq!(
        (st, uuids(&r).len()),
        (200, 0),
        "registration-only: nothing visible"
    );
    let (st, e) = api(&rcv, "GET", "pending", None, None);
    assert_eq!(st, 401);
    assert_eq!(e["code"], "auth_failed");

    // Another folder's entry is absent, not forbidden; nothing changes.
    let (st, e) = api(
        &rcv,
        "POST",
        &format!("pending/{ua}/approve"),
        Some("appb"),
        None,
    );
    assert_eq!(st, 404, "{e}");
    assert_eq!(e["code"], "not_found");
    let (st, _) = api(
        &rcv,
        "POST",
        &format!("pending/{ua}/approve"),
        Some("reg"),
        None,
    );
    assert_eq!(st, 404);
    let (st, _) = api(&rcv, "POST", &format!("pending/{ua}/approve"), None, None);
    assert_eq!(st, 401);
    let (_, a) = api(&rcv, "GET", "pending", Some("appa"), None);
    assert_eq!(uuids(&a), vec![ua.clone()]);

    // The folder's approver decides; the waiting agent gets its certificate.
    let (st, d) = api(
        &rcv,
        "POST",
        &format!("pending/{ua}/approve"),
        Some("appa"),
        None,
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["host"], "na");
    let done = register_new(&agent_a, &rcv, "a", "na", &["--timeout", "10"])
        .ok("tether.register-new.schema.json");
    assert_eq!(done["status"], "success", "{done}");
    let hosts = rcv.admin_json(&["host", "list"]);
    assert!(hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "na" && h["folder"] == "/a"));
    // An approver cannot move the host into a folder it does not own.
    let (_c, uc) = held(&rcv, "a", "nc");
    let (st, e) = api(
        &rcv,
        "POST",
        &format!("pending/{uc}/approve"),
        Some("appa"),
        Some(json!({"folder": "/b"})),
    );
    assert_eq!(st, 403, "{e}");

    // Decline with a reason: the agent exits 11 with it.
    let (agent_d, ud) = held(&rcv, "a", "nd");
    let (st, _) = api(
        &rcv,
        "POST",
        &format!("pending/{ud}/decline"),
        Some("appa"),
        Some(json!({"reason": "not ours"})),
    );
    assert_eq!(st, 200);
    let e = register_new(&agent_d, &rcv, "a", "nd", &["--timeout", "5"]).err("declined", 11);
    assert!(e["error"]["message"].as_str().unwrap().contains("not ours"));
    let audit = rcv.admin_json(&["audit", "--limit", "1000"]);
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "pending_decline" && e["actor"] == "appa"));
}

#[test]
fn a_race_between_two_sessions_decides_once() {
    let rcv = site();
    let (_a, ub) = held(&rcv, "b", "race1");
    let results: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = [("appb", true), ("root", false)]
            .into_iter()
            .map(|(u, approve)| {
                let rcv = &rcv;
                let ub = &ub;
                s.spawn(move || {
                    if approve {
                        api(rcv, "POST", &format!("pending/{ub}/approve"), Some(u), None).0
                    } else {
                        api(
                            rcv,
                            "POST",
                            &format!("pending/{ub}/decline"),
                            Some(u),
                            Some(json!({"reason": "race"})),
                        )
                        .0
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 409], "{results:?}");
}
