//! The admin API's approval queue, filtered by folder rights: admin, approvers of folders A and
//! B, a registration-only user and no credentials; decisions are taken once under a race; the
//! waiting `tether register-new` gets the outcome. Registrations, unregister and the audit log
//! under the same rights; `tether-receiver pending --server` against a real `serve`.
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
    let route = path.split('?').next().unwrap_or_default();
    let schema = match (st, route) {
        (200, "pending") => "admin-api.pending.schema.json",
        (200, "registrations") => "admin-api.registrations.schema.json",
        (200, "audit") => "admin-api.audit.schema.json",
        (200, r) if r.ends_with("/unregister") => "admin-api.unregister.schema.json",
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

/// Registers the existing host `name` as the admin; returns its UUID.
fn registered(rcv: &TestReceiver, name: &str, folder: &str) -> String {
    rcv.add_host(name, &["--folder", folder]);
    let uuid = common::new_uuid();
    let (st, body, _) = rcv.register_existing("root", PASSWORD, &uuid, name);
    assert_eq!(st, 200, "{body}");
    uuid
}

fn hosts_of(v: &Value) -> Vec<String> {
    let mut h: Vec<String> = v["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap().to_string())
        .collect();
    h.sort();
    h
}

/// Every audit row visible to `user` (all pages, following `next_before`).
fn audit_all(rcv: &TestReceiver, user: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "audit?limit=2".to_string();
    loop {
        let (st, page) = api(rcv, "GET", &path, Some(user), None);
        assert_eq!(st, 200, "{page}");
        let entries = page["entries"].as_array().unwrap().clone();
        assert!(entries.len() <= 2);
        out.extend(entries);
        match page["next_before"].as_i64() {
            Some(b) => path = format!("audit?limit=2&before={b}"),
            None => return out,
        }
    }
}

#[test]
fn registrations_unregister_and_audit_follow_folder_rights() {
    let rcv = site();
    let ua = registered(&rcv, "ha1", "/a");
    let ub = registered(&rcv, "hb1", "/b");
    let (_held, uh) = held(&rcv, "b", "nb2");

    // GET registrations: admin all, approvers their folder, others nothing.
    let (st, all) = api(&rcv, "GET", "registrations", Some("root"), None);
    assert_eq!(st, 200);
    assert_eq!(hosts_of(&all), vec!["ha1", "hb1"]);
    let (_, a) = api(&rcv, "GET", "registrations", Some("appa"), None);
    assert_eq!(hosts_of(&a), vec!["ha1"]);
    assert_eq!(a["registrations"][0]["uuid"], ua.as_str());
    assert_eq!(a["registrations"][0]["state"], "live");
    let (_, b) = api(&rcv, "GET", "registrations", Some("appb"), None);
    assert_eq!(hosts_of(&b), vec!["hb1"]);
    let (_, a) = api(&rcv, "GET", "registrations?host=hb1", Some("appa"), None);
    assert_eq!(hosts_of(&a), Vec::<String>::new());
    let (st, r) = api(&rcv, "GET", "registrations", Some("reg"), None);
    assert_eq!((st, hosts_of(&r).len()), (200, 0));
    let (st, e) = api(&rcv, "GET", "registrations", None, None);
    assert_eq!((st, e["code"].as_str()), (401, Some("auth_failed")));
    let (st, e) = api(&rcv, "GET", "registrations?bogus=1", Some("root"), None);
    assert_eq!((st, e["code"].as_str()), (400, Some("usage")));

    // GET audit: own folders only (hosts and the registrations held for them).
    let rows = audit_all(&rcv, "root");
    let ids: Vec<i64> = rows.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {ids:?}"
    );
    let names = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|e| {
                e["host"]
                    .as_str()
                    .or(e["uuid"].as_str())
                    .unwrap_or("-")
                    .to_string()
            })
            .collect()
    };
    let all_rows = names(&rows);
    assert!(all_rows.contains(&"ha1".to_string()), "{all_rows:?}");
    assert!(all_rows.contains(&"hb1".to_string()), "{all_rows:?}");
    let a_rows = audit_all(&rcv, "appa");
    assert!(!a_rows.is_empty());
    for e in &a_rows {
        assert!(
            e["host"] == "ha1" || e["uuid"] == ua.as_str(),
            "appa sees a row of another folder: {e}"
        );
    }
    let b_rows = audit_all(&rcv, "appb");
    assert!(
        b_rows.iter().any(|e| e["uuid"] == uh.as_str()),
        "held for /b: {b_rows:?}"
    );
    for e in &b_rows {
        assert!(
            e["host"] == "hb1" || e["uuid"] == ub.as_str() || e["uuid"] == uh.as_str(),
            "appb sees a row of another folder: {e}"
        );
    }
    assert!(audit_all(&rcv, "reg").is_empty());
    let (st, _) = api(&rcv, "GET", "audit", None, None);
    assert_eq!(st, 401);
    for bad in ["audit?limit=0", "audit?limit=1001", "audit?before=x"] {
        let (st, e) = api(&rcv, "GET", bad, Some("root"), None);
        assert_eq!((st, e["code"].as_str()), (400, Some("usage")), "{bad}: {e}");
    }

    // POST hosts/{name}/unregister: another folder's host is absent, exactly like no host.
    let (st, hidden) = api(&rcv, "POST", "hosts/hb1/unregister", Some("appa"), None);
    assert_eq!(
        (st, hidden["code"].as_str()),
        (404, Some("not_found")),
        "{hidden}"
    );
    let (_, missing) = api(&rcv, "POST", "hosts/nosuch/unregister", Some("appa"), None);
    assert_eq!(
        hidden["detail"].as_str().unwrap().replace("hb1", "X"),
        missing["detail"].as_str().unwrap().replace("nosuch", "X")
    );
    let (st, _) = api(&rcv, "POST", "hosts/hb1/unregister", Some("reg"), None);
    assert_eq!(st, 404);
    let (st, _) = api(&rcv, "POST", "hosts/hb1/unregister", None, None);
    assert_eq!(st, 401);
    let (_, b) = api(&rcv, "GET", "registrations", Some("appb"), None);
    assert_eq!(
        b["registrations"][0]["state"], "live",
        "refusals changed nothing"
    );

    let (st, d) = api(&rcv, "POST", "hosts/hb1/unregister", Some("appb"), None);
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["revoked"], json!([ub]));
    let (_, b) = api(&rcv, "GET", "registrations", Some("appb"), None);
    assert_eq!(b["registrations"][0]["state"], "revoked");
    let (st, d) = api(&rcv, "POST", "hosts/hb1/unregister", Some("appb"), None);
    assert_eq!(
        (st, d["revoked"].clone()),
        (200, json!([])),
        "again: nothing to revoke"
    );
    let (_, b_after) = api(&rcv, "GET", "audit?limit=1", Some("appb"), None);
    let newest = &b_after["entries"][0];
    assert_eq!(
        (
            newest["action"].as_str(),
            newest["actor"].as_str(),
            newest["host"].as_str()
        ),
        (Some("unregister"), Some("appb"), Some("hb1"))
    );
    assert!(
        audit_all(&rcv, "appa").iter().all(|e| e["host"] != "hb1"),
        "appa does not see appb's unregister"
    );
    let (st, d) = api(&rcv, "POST", "hosts/ha1/unregister", Some("root"), None);
    assert_eq!((st, d["revoked"].clone()), (200, json!([ua])));
}

fn remote(rcv: &TestReceiver, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let server = format!("https://{}/{}", rcv.server(), rcv.site);
    let mut cmd = std::process::Command::new(common::receiver_bin());
    cmd.arg("pending")
        .args(args)
        .args(["--json", "--server", &server])
        .env_remove("TETHER_RECEIVER_DIR")
        .env_remove("TETHER_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tether-receiver");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = out.status.code().unwrap_or(-1);
    if code == 0 {
        assert_eq!(doc["ok"], true, "{doc}");
    } else {
        common::validate_json("error.schema.json", &doc);
    }
    (code, doc)
}

#[test]
fn the_remote_cli_decides_as_the_user() {
    let rcv = site();
    let (agent_a, ua) = held(&rcv, "a", "ra");
    let (_b, ub) = held(&rcv, "b", "rb");
    let tmp = tempfile::tempdir().unwrap();
    let pwf = tmp.path().join("password");
    std::fs::write(&pwf, format!("{PASSWORD}\n")).unwrap();
    let pwf = pwf.to_str().unwrap();
    let ca = tmp.path().join("site-ca.pem");
    std::fs::write(&ca, rcv.site_ca_pem()).unwrap();
    let ca = ca.to_str().unwrap();
    let fp = rcv.fingerprint.as_str();
    let as_user = |u: &'static str| -> Vec<&str> {
        vec![
            "--user",
            u,
            "--password-file",
            pwf,
            "--trust-fingerprint",
            fp,
        ]
    };

    // Same JSON as the local command, filtered by the user's folders.
    let mut args = vec!["list"];
    args.extend(as_user("appa"));
    let (code, list) = remote(&rcv, &args, &[]);
    assert_eq!(code, 0, "{list}");
    common::validate_json("receiver.pending.list.schema.json", &list);
    let seen: Vec<&str> = list["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec![ua.as_str()]);

    let mut args = vec!["approve", ub.as_str()];
    args.extend(as_user("appa"));
    let (code, e) = remote(&rcv, &args, &[]);
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (14, Some("not_found")),
        "{e}"
    );

    let mut args = vec!["approve", ua.as_str()];
    args.extend(as_user("appa"));
    let (code, d) = remote(&rcv, &args, &[]);
    assert_eq!(code, 0, "{d}");
    common::validate_json("receiver.change.schema.json", &d);
    assert_eq!(
        (d["kind"].as_str(), d["action"].as_str()),
        (Some("pending"), Some("approve"))
    );
    let done = register_new(&agent_a, &rcv, "a", "ra", &["--timeout", "10"])
        .ok("tether.register-new.schema.json");
    assert_eq!(done["status"], "success", "{done}");

    // The password from the environment, trust through the site CA file.
    let (code, d) = remote(
        &rcv,
        &[
            "decline",
            ub.as_str(),
            "--reason",
            "wrong team",
            "--user",
            "root",
            "--root-ca",
            ca,
        ],
        &[("TETHER_PASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{d}");
    let local = rcv.admin_json(&["pending", "list", "--all"]);
    let declined = local["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uuid"] == ub.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (declined["status"].as_str(), declined["reason"].as_str()),
        (Some("declined"), Some("wrong team"))
    );

    // Refusals: wrong password, wrong pin, no trust, no password.
    let (code, e) = remote(
        &rcv,
        &["list", "--user", "appa", "--trust-fingerprint", fp],
        &[("TETHER_PASSWORD", "wrong")],
    );
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (3, Some("auth_failed")),
        "{e}"
    );
    let wrong_pin = format!("sha256:{}", "00".repeat(32));
    let (code, e) = remote(
        &rcv,
        &[
            "list",
            "--user",
            "appa",
            "--password-file",
            pwf,
            "--trust-fingerprint",
            &wrong_pin,
        ],
        &[],
    );
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (8, Some("trust")),
        "{e}"
    );
    let (code, _) = remote(
        &rcv,
        &["list", "--user", "appa", "--password-file", pwf],
        &[],
    );
    assert_eq!(code, 2);
    let (code, _) = remote(
        &rcv,
        &["list", "--user", "appa", "--trust-fingerprint", fp],
        &[],
    );
    assert_eq!(code, 2);
}
