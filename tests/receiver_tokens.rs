//! Scoped enrollment tokens: what a leaked deployment-package token can and cannot do, exact
//! use counting under concurrency, expiry, revocation, audit, and `apply` by name. Real
//! receiver, real TLS, the real `tether` binary where an agent is involved.
#[path = "support/agent.rs"]
mod agent;
mod common;

use std::collections::BTreeSet;

use agent::{receiver_with_hosts, Agent};
use common::{make_csr, new_uuid, response, validate_json, TestReceiver};
use serde_json::{json, Value};

fn site() -> TestReceiver {
    let rcv = receiver_with_hosts("t1");
    for f in ["/linux", "/linux/web", "/windows"] {
        rcv.admin_json(&["folder", "add", f]);
    }
    rcv.admin_json(&[
        "rule",
        "add",
        "web",
        "--match",
        "role=web",
        "--create-in",
        "/linux/web",
    ]);
    rcv.admin_json(&[
        "rule",
        "add",
        "win",
        "--match",
        "os=windows",
        "--create-in",
        "/windows",
    ]);
    rcv.admin_json(&[
        "rule",
        "add",
        "misc",
        "--match",
        "role=misc",
        "--create-in",
        "/windows",
    ]);
    rcv.admin_json(&[
        "rule",
        "add",
        "held",
        "--match",
        "role=db",
        "--hold",
        "--create-in",
        "/linux",
    ]);
    rcv
}

fn create_token(rcv: &TestReceiver, extra: &[&str]) -> (i64, String) {
    let mut args = vec!["token", "create", "--register-new"];
    args.extend_from_slice(extra);
    let v = rcv.admin_json(&args);
    validate_json("receiver.token.create.schema.json", &v);
    (
        v["id"].as_i64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn token(rcv: &TestReceiver, id: i64) -> Value {
    let list = rcv.admin_json(&["token", "list"]);
    validate_json("receiver.token.list.schema.json", &list);
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .expect("token listed")
}

/// One raw `register_new` with a token; returns (status, body).
fn register_new_raw(rcv: &TestReceiver, token: &str, labels: Value) -> (u16, Value) {
    let uuid = new_uuid();
    let (csr, _) = make_csr(&uuid);
    let req = rcv
        .agent(None)
        .post(&rcv.url("register_new"))
        .set("Authorization", &format!("CMK-TOKEN {token}"));
    response(req.send_json(json!({"uuid": uuid, "csr": csr, "agent_labels": labels})))
}

fn detail(v: &Value) -> String {
    v["detail"].as_str().unwrap_or_default().to_string()
}

/// `tether register-new` with the token in a file.
fn enroll(
    a: &Agent,
    rcv: &TestReceiver,
    token: &str,
    labels: &[&str],
    extra: &[&str],
) -> agent::Run {
    std::fs::write(a.path("token"), token).unwrap();
    let server = rcv.server();
    let tf = a.path("token");
    let mut args = vec![
        "register-new",
        "--json",
        "-s",
        &server,
        "-i",
        &rcv.site,
        "--token-file",
        tf.to_str().unwrap(),
        "--trust-fingerprint",
        &rcv.fingerprint,
    ];
    for l in labels {
        args.extend(["--agent-labels", l]);
    }
    args.extend_from_slice(extra);
    a.run(&args)
}

#[test]
fn a_scoped_token_enrolls_new_hosts_only_within_its_scope() {
    let rcv = site();
    let (id, tok) = create_token(
        &rcv,
        &[
            "--folder",
            "/linux",
            "--labels",
            "os=linux",
            "--max-uses",
            "5",
            "--name",
            "fleet",
        ],
    );
    let before_h1 = rcv.admin_json(&["registrations", "list"]);

    // Missing the required label: refused, names the scope, costs nothing.
    let (st, body) = register_new_raw(&rcv, &tok, json!({"role": "web", "cmk/hostname": "w1"}));
    assert_eq!(st, 403, "{body}");
    assert!(detail(&body).contains("os=linux"), "{body}");
    assert!(detail(&body).contains("fleet"), "{body}");
    // A rule that creates outside the token's folder: refused.
    let (st, body) = register_new_raw(
        &rcv,
        &tok,
        json!({"os": "linux", "role": "misc", "cmk/hostname": "w2"}),
    );
    assert_eq!(st, 403, "{body}");
    assert!(detail(&body).contains("folder /windows"), "{body}");
    // No rule matches: it would be held in "/", outside /linux.
    let (st, body) = register_new_raw(&rcv, &tok, json!({"os": "linux", "cmk/hostname": "w3"}));
    assert_eq!(st, 403, "{body}");
    assert_eq!(token(&rcv, id)["uses"], 0);

    // A leaked token cannot register or take over an existing host, by either route.
    let a = Agent::new();
    std::fs::write(a.path("tok"), &tok).unwrap();
    let server = rcv.server();
    let tf = a.path("tok");
    let r = a.run(&[
        "register",
        "--json",
        "-s",
        &server,
        "-i",
        "t1",
        "-H",
        "h1",
        "--token-file",
        tf.to_str().unwrap(),
        "--trust-fingerprint",
        &rcv.fingerprint,
    ]);
    let e = r.err("permission_denied", 4);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only register new hosts"));
    // Through the rules, naming an existing host: declined, never overwritten.
    let r = enroll(
        &Agent::new(),
        &rcv,
        &tok,
        &["os:linux", "role:web", "cmk/hostname:h1"],
        &["--timeout", "5"],
    );
    let e = r.err("declined", 11);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    assert_eq!(rcv.admin_json(&["registrations", "list"]), before_h1);
    assert_eq!(
        token(&rcv, id)["uses"],
        0,
        "refusals and declines cost no use"
    );

    // Within scope: the host is created in the rule's folder, one use is counted.
    let b = Agent::new();
    let ok = enroll(
        &b,
        &rcv,
        &tok,
        &["os:linux", "role:web", "cmk/hostname:web01"],
        &[],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(ok["status"], "success", "{ok}");
    let hosts = rcv.admin_json(&["host", "list"]);
    let web01 = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "web01")
        .cloned()
        .expect("web01 created");
    assert_eq!(web01["folder"], "/linux/web");
    let t = token(&rcv, id);
    assert_eq!(t["uses"], 1);
    assert_eq!(t["remaining_uses"], 4);
    assert!(t["last_used_at"].is_i64());
    assert!(t.get("secret").is_none() && !t.to_string().contains(tok.split(':').nth(1).unwrap()));

    // Held for approval in /linux: allowed, costs a use, polled with the same token.
    let c = Agent::new();
    let r = enroll(
        &c,
        &rcv,
        &tok,
        &["os:linux", "role:db", "cmk/hostname:db01"],
        &["--no-wait"],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(r["status"], "pending", "{r}");
    assert_eq!(token(&rcv, id)["uses"], 2);
    let pending = rcv.admin_json(&["pending", "list"]);
    let uuid = pending["registrations"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    rcv.admin_json(&["pending", "approve", &uuid, "--folder", "/linux"]);
    let done = enroll(
        &c,
        &rcv,
        &tok,
        &["os:linux", "role:db", "cmk/hostname:db01"],
        &[],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(done["status"], "success", "{done}");

    // Every use and refusal is in the audit log with the token's id and name.
    let audit = rcv.admin_json(&["audit", "--limit", "1000"]);
    let rows: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["actor"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("token:{id} (fleet)"))
        })
        .collect();
    let outcomes: BTreeSet<String> = rows
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(outcomes.contains("refused 403"), "{outcomes:?}");
    assert!(outcomes.contains("new: success"), "{outcomes:?}");
    assert!(outcomes.contains("new: pending"), "{outcomes:?}");
    let secret = tok.split(':').nth(1).unwrap();
    assert!(
        !audit.to_string().contains(secret),
        "the secret is never logged"
    );
}

#[test]
fn uses_are_exact_under_concurrency() {
    let rcv = site();
    let (id, tok) = create_token(&rcv, &["--max-uses", "10"]);
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let tok = &tok;
                let rcv = &rcv;
                s.spawn(move || {
                    register_new_raw(
                        rcv,
                        tok,
                        json!({"role": "web", "cmk/hostname": format!("par{i}")}),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "statuses: {results:?}");
    assert!(
        results.iter().all(|s| *s == 200 || *s == 401 || *s == 429),
        "{results:?}"
    );
    let t = token(&rcv, id);
    assert_eq!(t["uses"], 10);
    assert_eq!(t["remaining_uses"], 0);
    let hosts = rcv.admin_json(&["host", "list"]);
    let created = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["name"].as_str().unwrap().starts_with("par"))
        .count();
    assert_eq!(created, 10);
}

#[test]
fn expiry_and_revocation_stop_a_token() {
    let rcv = site();
    let (_, short) = create_token(&rcv, &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (st, body) = register_new_raw(&rcv, &short, json!({"role": "web", "cmk/hostname": "e1"}));
    assert_eq!(st, 401);
    assert_eq!(detail(&body), "Token has expired");

    let (id, tok) = create_token(&rcv, &["--max-uses", "3", "--name", "revoke-me"]);
    let (st, _) = register_new_raw(&rcv, &tok, json!({"role": "web", "cmk/hostname": "r1"}));
    assert_eq!(st, 200);
    let v = rcv.admin_json(&["token", "revoke", "revoke-me"]);
    assert_eq!(v["changed"], true);
    let (st, body) = register_new_raw(&rcv, &tok, json!({"role": "web", "cmk/hostname": "r2"}));
    assert_eq!(st, 401);
    assert_eq!(detail(&body), "Token has been revoked");
    let t = token(&rcv, id);
    assert_eq!(t["revoked"], true);
    assert_eq!(t["remaining_uses"], 0);
    // Wrong secret for a valid id.
    let (st, _) = register_new_raw(
        &rcv,
        &format!("{id}:00000000-0000-4000-8000-000000000000"),
        json!({"role": "web"}),
    );
    assert_eq!(st, 401);
}

#[test]
fn apply_manages_tokens_by_name() {
    let rcv = site();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.secret"),
        "a-long-fleet-secret-0001\n",
    )
    .unwrap();
    let file = dir.path().join("site.yaml");
    let write = |max: u32, secret_file: &str| {
        std::fs::write(
            &file,
            format!(
                "tokens:\n  - name: fleet-linux\n    folder: /linux\n    labels: {{os: linux}}\n    max_uses: {max}\n    ttl: 7d\n    secret_file: {secret_file}\n"
            ),
        )
        .unwrap();
    };
    write(5, "fleet.secret");
    let f = file.to_str().unwrap();
    let v = rcv.admin_json(&["apply", f]);
    assert_eq!(v["changes"][0]["action"], "create", "{v}");
    assert_eq!(rcv.admin_json(&["apply", f])["changed"], false);
    // Agents present NAME:SECRET; no id has to be known when the package is built.
    let (st, body) = register_new_raw(
        &rcv,
        "fleet-linux:a-long-fleet-secret-0001",
        json!({"os": "linux", "role": "web", "cmk/hostname": "ap1"}),
    );
    assert_eq!(st, 200, "{body}");
    write(9, "fleet.secret");
    assert_eq!(
        rcv.admin_json(&["apply", f])["changes"][0]["action"],
        "update"
    );
    let list = rcv.admin_json(&["token", "list"]);
    let t = &list["tokens"][0];
    assert_eq!(
        (t["max_uses"].as_i64(), t["uses"].as_i64()),
        (Some(9), Some(1))
    );
    // A new secret replaces the token: the old secret stops working.
    std::fs::write(dir.path().join("new.secret"), "a-long-fleet-secret-0002\n").unwrap();
    write(9, "new.secret");
    assert_eq!(
        rcv.admin_json(&["apply", f])["changes"][0]["action"],
        "update"
    );
    let (st, _) = register_new_raw(
        &rcv,
        "fleet-linux:a-long-fleet-secret-0001",
        json!({"os": "linux", "role": "web", "cmk/hostname": "ap2"}),
    );
    assert_eq!(st, 401);
    let (st, _) = register_new_raw(
        &rcv,
        "fleet-linux:a-long-fleet-secret-0002",
        json!({"os": "linux", "role": "web", "cmk/hostname": "ap2"}),
    );
    assert_eq!(st, 200);
    std::fs::write(&file, "tokens:\n  - name: fleet-linux\n    absent: true\n").unwrap();
    assert_eq!(
        rcv.admin_json(&["apply", f])["changes"][0]["action"],
        "delete"
    );
    let (st, _) = register_new_raw(
        &rcv,
        "fleet-linux:a-long-fleet-secret-0002",
        json!({"os": "linux", "role": "web", "cmk/hostname": "ap3"}),
    );
    assert_eq!(st, 401);
}
