//! New-host registration with rules and approval, tokens, the identity lock, revocation,
//! rate limiting, and concurrent registrations.
mod common;

use common::*;
use serde_json::json;

fn register_new(
    r: &TestReceiver,
    user: &str,
    pw: &str,
    uuid: &str,
    labels: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (csr, _) = make_csr(uuid);
    r.post(
        &r.agent(None),
        "register_new",
        Some((user, pw)),
        &json!({"uuid": uuid, "csr": csr, "agent_labels": labels}),
    )
}

fn ongoing(r: &TestReceiver, user: &str, pw: &str, uuid: &str) -> (u16, serde_json::Value) {
    response(
        r.agent(None)
            .post(&r.url(&format!("register_new_ongoing/{uuid}")))
            .set("Authorization", &basic(user, pw))
            .call(),
    )
}

#[test]
fn new_hosts_rules_and_approval() {
    let r = TestReceiver::start("newsite");
    r.admin_json(&["group", "add", "ops"]);
    r.admin_json(&["folder", "add", "/auto", "--contact-group", "ops"]);
    r.admin_json(&["folder", "add", "/other"]);
    r.add_user("reg", "agent_registration", "pw");
    r.admin_json(&[
        "role",
        "add",
        "managednew",
        "--permission",
        "agent_registration.register_new_host_in_managed_folder",
    ]);
    let out = r.admin_stdin(
        &[
            "user",
            "add",
            "opsuser",
            "--role",
            "managednew",
            "--contact-group",
            "ops",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert!(out.status.success());
    r.admin_json(&["role", "add", "nothing"]);
    r.add_user("nobody", "nothing", "pw");
    r.add_host("taken", &[]);

    r.admin_json(&[
        "rule",
        "add",
        "deny-win",
        "--match",
        "os=windows",
        "--decline",
        "no windows here",
    ]);
    r.admin_json(&["rule", "add", "hold-db", "--match", "role=db", "--hold"]);
    r.admin_json(&[
        "rule",
        "add",
        "auto-other",
        "--match",
        "zone=other",
        "--create-in",
        "/other",
    ]);
    r.admin_json(&[
        "rule",
        "add",
        "auto",
        "--match",
        "os=linux",
        "--create-in",
        "/auto",
        "--mode",
        "push",
    ]);
    let rules = r.admin_json(&["rule", "list"]);
    validate_json("receiver.rule.list.schema.json", &rules);
    assert_eq!(rules["rules"].as_array().unwrap().len(), 4);
    // Re-adding an identical rule changes nothing.
    let again = r.admin_json(&[
        "rule",
        "add",
        "auto",
        "--match",
        "os=linux",
        "--create-in",
        "/auto",
        "--mode",
        "push",
    ]);
    assert_eq!(again["changed"], false);

    // Create: host appears in /auto with a push registration.
    let u1 = new_uuid();
    let (st, body) = register_new(
        &r,
        "reg",
        "pw",
        &u1,
        json!({"os": "linux", "cmk/hostname": "new1"}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["root_cert"].as_str().unwrap(), r.site_ca_pem());
    let (st, body) = ongoing(&r, "reg", "pw", &u1);
    assert_eq!(st, 200);
    assert_eq!(body["status"], "Success", "{body}");
    assert_eq!(body["connection_mode"], "push-agent");
    assert!(body["agent_cert"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let hosts = r.admin_json(&["host", "list"]);
    validate_json("receiver.host.list.schema.json", &hosts);
    assert!(hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "new1" && h["folder"] == "/auto"));
    // Only the user who started it may poll.
    let (st, _) = ongoing(&r, "opsuser", "pw", &u1);
    assert_eq!(st, 403);
    let (st, _) = ongoing(&r, "reg", "pw", &new_uuid());
    assert_eq!(st, 404);

    // Existing host is never overwritten: declined with the reason.
    let u2 = new_uuid();
    let (st, _) = register_new(
        &r,
        "reg",
        "pw",
        &u2,
        json!({"os": "linux", "cmk/hostname": "taken"}),
    );
    assert_eq!(st, 200);
    let (_, body) = ongoing(&r, "reg", "pw", &u2);
    assert_eq!(body["status"], "Declined");
    assert!(
        body["reason"].as_str().unwrap().contains("already exists"),
        "{body}"
    );

    // Decline rule.
    let u3 = new_uuid();
    register_new(
        &r,
        "reg",
        "pw",
        &u3,
        json!({"os": "windows", "cmk/hostname": "win1"}),
    );
    let (_, body) = ongoing(&r, "reg", "pw", &u3);
    assert_eq!(
        body,
        json!({"status": "Declined", "reason": "no windows here"})
    );

    // Managed-folder permission: allowed in /auto (contact), refused in /other.
    let u4 = new_uuid();
    let (st, body) = register_new(
        &r,
        "opsuser",
        "pw",
        &u4,
        json!({"os": "linux", "cmk/hostname": "new4"}),
    );
    assert_eq!(st, 200, "{body}");
    let (_, body) = ongoing(&r, "opsuser", "pw", &u4);
    assert_eq!(body["status"], "Success");
    let (st, _) = register_new(
        &r,
        "opsuser",
        "pw",
        &new_uuid(),
        json!({"zone": "other", "cmk/hostname": "new5"}),
    );
    assert_eq!(st, 403);
    // No registration permission at all.
    let (st, _) = register_new(
        &r,
        "nobody",
        "pw",
        &new_uuid(),
        json!({"os": "linux", "cmk/hostname": "x1"}),
    );
    assert_eq!(st, 403);

    // Hold → pending → approve; hold → decline.
    let u6 = new_uuid();
    register_new(
        &r,
        "reg",
        "pw",
        &u6,
        json!({"role": "db", "cmk/hostname": "db1"}),
    );
    let (_, body) = ongoing(&r, "reg", "pw", &u6);
    assert_eq!(body, json!({"status": "InProgress"}));
    let u7 = new_uuid();
    register_new(
        &r,
        "reg",
        "pw",
        &u7,
        json!({"role": "db", "cmk/hostname": "db2"}),
    );
    let pend = r.admin_json(&["pending", "list"]);
    validate_json("receiver.pending.list.schema.json", &pend);
    assert_eq!(pend["registrations"].as_array().unwrap().len(), 2, "{pend}");
    let ap = r.admin_json(&["pending", "approve", &u6, "--folder", "/other"]);
    validate_json("receiver.change.schema.json", &ap);
    let (_, body) = ongoing(&r, "reg", "pw", &u6);
    assert_eq!(body["status"], "Success", "{body}");
    assert_eq!(body["connection_mode"], "pull-agent");
    r.admin_json(&["pending", "decline", &u7, "--reason", "not now"]);
    let (_, body) = ongoing(&r, "reg", "pw", &u7);
    assert_eq!(body, json!({"status": "Declined", "reason": "not now"}));
    let (code, _) = r.admin_json_err(&["pending", "approve", &u7]);
    assert_eq!(code, 7);
}

#[test]
fn tokens_identity_lock_and_revocation() {
    let r = TestReceiver::start_with("tok", &["--auth-fail-burst", "1000"]);
    r.add_user("reg", "agent_registration", "pw");
    r.add_user("adm", "admin", "pw");
    r.add_host("h1", &[]);
    r.add_host("h2", &[]);

    // Tokens: bound to one host, single use, expiry, wrong secret.
    let t = r.admin_json(&["token", "create", "--host", "h1", "--ttl", "1h"]);
    validate_json("receiver.token.create.schema.json", &t);
    let token = t["token"].as_str().unwrap().to_string();
    let with_token = |tok: &str, host: &str| {
        let uuid = new_uuid();
        let (csr, key) = make_csr(&uuid);
        let (st, body) = response(
            r.agent(None)
                .post(&r.url("register_existing_token"))
                .set("Authorization", &format!("CMK-TOKEN {tok}"))
                .send_json(json!({"uuid": uuid, "csr": csr, "host_name": host})),
        );
        (st, body, uuid, key)
    };
    let (id, _) = token.split_once(':').unwrap();
    let (st, _, _, _) = with_token(&format!("{id}:{}", new_uuid()), "h1");
    assert_eq!(st, 401);
    let (st, _, _, _) = with_token(&token, "h2");
    assert_eq!(st, 403);
    let (st, body, tok_uuid, _) = with_token(&token, "h1");
    assert_eq!(st, 200, "{body}");
    let (st, body, _, _) = with_token(&token, "h1");
    assert_eq!(st, 401);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("already been used"));
    let tl = r.admin_json(&["token", "list"]);
    validate_json("receiver.token.list.schema.json", &tl);
    assert_eq!(tl["tokens"][0]["used_by_uuid"], tok_uuid.as_str());
    // Expired token.
    let t2 = r.admin_json(&["token", "create", "--host", "h2", "--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (st, body, _, _) = with_token(t2["token"].as_str().unwrap(), "h2");
    assert_eq!(st, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Identity lock: h1 is live under tok_uuid; another UUID is refused for a normal user.
    let (st, body, _) = r.register_existing("reg", "pw", &new_uuid(), "h1");
    assert_eq!(st, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("unregister"),
        "{body}"
    );
    // The same UUID may register again (e.g. a re-run of the controller).
    let (csr, _) = make_csr(&tok_uuid);
    let (st, _) = r.post(
        &r.agent(None),
        "register_existing",
        Some(("reg", "pw")),
        &json!({"uuid": tok_uuid, "csr": csr, "host_name": "h1"}),
    );
    assert_eq!(st, 200);

    // Admin holds reregister_host: takes over, the old registration is revoked.
    let first = new_uuid();
    let (st, body, key) = r.register_existing("reg", "pw", &first, "h2");
    assert_eq!(st, 200, "{body}");
    let old_cert = body["agent_cert"].as_str().unwrap().to_string();
    let old = r.agent(Some((&old_cert, &key)));
    let (st, _) = response(
        old.get(&r.url(&format!("registration_status_v2/{first}")))
            .call(),
    );
    assert_eq!(st, 200);
    let second = new_uuid();
    let (st, body, key2) = r.register_existing("adm", "pw", &second, "h2");
    assert_eq!(st, 200, "{body}");
    let new_cert = body["agent_cert"].as_str().unwrap().to_string();
    let (st, body) = response(
        old.get(&r.url(&format!("registration_status_v2/{first}")))
            .call(),
    );
    assert_eq!(st, 400, "revoked certificate must be refused: {body}");
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
    let fresh = r.agent(Some((&new_cert, &key2)));
    let (st, _) = response(
        fresh
            .get(&r.url(&format!("registration_status_v2/{second}")))
            .call(),
    );
    assert_eq!(st, 200);

    // unregister revokes: mTLS refuses the certificate afterwards.
    let un = r.admin_json(&["unregister", "h2"]);
    validate_json("receiver.change.schema.json", &un);
    assert_eq!(un["revoked"], json!([second]));
    let regs = r.admin_json(&["registrations", "list", "--host", "h2"]);
    assert!(regs["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["state"] == "revoked"));
    let (st, _) = response(
        fresh
            .get(&r.url(&format!("registration_status_v2/{second}")))
            .call(),
    );
    assert_eq!(st, 400);
    // After unregister anyone allowed may register h2 again.
    let (st, _, _) = r.register_existing("reg", "pw", &new_uuid(), "h2");
    assert_eq!(st, 200);
}

#[test]
fn failed_auth_is_rate_limited_per_address() {
    let r = TestReceiver::start_with(
        "rl",
        &["--auth-fail-burst", "3", "--auth-fail-per-minute", "1"],
    );
    r.add_user("reg", "agent_registration", "pw");
    r.add_host("h", &[]);
    for _ in 0..3 {
        let (st, _, _) = r.register_existing("reg", "bad", &new_uuid(), "h");
        assert_eq!(st, 401);
    }
    let (st, body, _) = r.register_existing("reg", "bad", &new_uuid(), "h");
    assert_eq!(st, 429, "{body}");
    // Even the right password waits while the address is blocked.
    let (st, _, _) = r.register_existing("reg", "pw", &new_uuid(), "h");
    assert_eq!(st, 429);
}

#[test]
fn concurrent_registrations_lose_nothing() {
    let r = TestReceiver::start("conc");
    r.add_user("reg", "agent_registration", "pw");
    for i in 0..50 {
        r.add_host(&format!("c{i}"), &[]);
    }
    let uuids: Vec<String> = (0..50).map(|_| new_uuid()).collect();
    std::thread::scope(|s| {
        // Admin commands change the database while serve registers: both must succeed.
        s.spawn(|| {
            for i in 0..10 {
                r.add_host(&format!("extra{i}"), &[]);
            }
        });
        for (i, u) in uuids.iter().enumerate() {
            let r = &r;
            s.spawn(move || {
                let (st, body, _) = r.register_existing("reg", "pw", u, &format!("c{i}"));
                assert_eq!(st, 200, "{body}");
            });
        }
    });
    let regs = r.admin_json(&["registrations", "list"]);
    let list = regs["registrations"].as_array().unwrap();
    assert_eq!(list.len(), 50);
    let mut seen: Vec<&str> = list.iter().map(|x| x["uuid"].as_str().unwrap()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 50);
    for u in &uuids {
        assert!(seen.contains(&u.as_str()));
    }
    let audit = r.admin_json(&["audit", "--limit", "1000"]);
    let ok = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "registered")
        .count();
    assert_eq!(ok, 50);
}

/// Registrations racing for one host or one UUID keep the identity lock exact, however the
/// writer groups them into batches (a batch's leading jobs read before it starts, see
/// `store::Prefetch`): one wins; with the re-register permission each takes the host over in
/// turn and exactly one registration stays live.
#[test]
fn racing_registrations_keep_the_identity_lock() {
    let r = TestReceiver::start("race");
    r.add_user("reg", "agent_registration", "pw");
    r.add_user("adm", "admin", "pw");
    for i in 0..3 {
        r.add_host(&format!("contested{i}"), &[]);
    }
    r.add_host("taken-over", &[]);
    for i in 0..24 {
        r.add_host(&format!("spot{i}"), &[]);
    }
    let race = |user: &'static str, targets: Vec<(String, String)>| -> Vec<u16> {
        std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(uuid, host)| {
                    let r = &r;
                    s.spawn(move || r.register_existing(user, "pw", uuid, host).0)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let live_of = |host: &str| -> Vec<String> {
        let regs = r.admin_json(&["registrations", "list", "--host", host]);
        regs["registrations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["state"] == "live")
            .map(|x| x["uuid"].as_str().unwrap().to_string())
            .collect()
    };
    let won = |st: &[u16]| st.iter().filter(|s| **s == 200).count();
    // Credentials verified once (argon2) are cached: the racers then reach the writer together.
    for (user, host) in [("reg", "warm-reg"), ("adm", "warm-adm")] {
        r.add_host(host, &[]);
        assert_eq!(r.register_existing(user, "pw", &new_uuid(), host).0, 200);
    }

    // One host, 24 UUIDs: one wins, the rest meet the identity lock (three rounds, so
    // that some batch surely holds several of them).
    for i in 0..3 {
        let host = format!("contested{i}");
        let st = race("reg", (0..24).map(|_| (new_uuid(), host.clone())).collect());
        assert_eq!(won(&st), 1, "{st:?}");
        assert!(st.iter().all(|s| *s == 200 || *s == 409), "{st:?}");
        assert_eq!(live_of(&host).len(), 1);
    }

    // One UUID, 24 hosts: it ends up registered for exactly one of them.
    let uuid = new_uuid();
    let st = race(
        "reg",
        (0..24)
            .map(|i| (uuid.clone(), format!("spot{i}")))
            .collect(),
    );
    assert_eq!(won(&st), 1, "{st:?}");
    let holders: Vec<String> = (0..24)
        .map(|i| format!("spot{i}"))
        .filter(|h| live_of(h).contains(&uuid))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");

    // With the re-register permission every registration takes the host over in turn: all
    // succeed, and only the last one stays live.
    let st = race(
        "adm",
        (0..24).map(|_| (new_uuid(), "taken-over".into())).collect(),
    );
    assert_eq!(won(&st), 24, "{st:?}");
    assert_eq!(live_of("taken-over").len(), 1);
}

/// A cold receiver facing a burst of requests by one user runs argon2 once, not once per
/// request: the others wait for that verification and take its answer.
#[test]
fn a_burst_of_one_users_requests_runs_argon2_once() {
    let mport = free_port();
    let r = TestReceiver::start_with("herd", &["--metrics-listen", &format!("127.0.0.1:{mport}")]);
    r.add_user("reg", "agent_registration", "pw");
    let hosts: Vec<String> = (0..16).map(|i| format!("herd{i}")).collect();
    for h in &hosts {
        r.add_host(h, &[]);
    }
    let st: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let r = &r;
                s.spawn(move || r.register_existing("reg", "pw", &new_uuid(), h).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(st.iter().all(|s| *s == 200), "{st:?}");
    let runs = |outcome: &str| {
        let m = scrape(mport);
        let n = sample(
            &m,
            &format!("tether_receiver_password_verifications_total{{outcome=\"{outcome}\"}}"),
        );
        (n, m)
    };
    let (ok, m) = runs("ok");
    assert_eq!(ok, 1.0, "{m}");
    // A wrong password is checked (and refused), never answered from the cache.
    let (st, _, _) = r.register_existing("reg", "wrong", &new_uuid(), "herd0");
    assert_eq!(st, 401);
    assert_eq!(runs("ok").0, 1.0);
    let (wrong, m) = runs("wrong_password");
    assert_eq!(wrong, 1.0, "{m}");
}

/// The verified-credential cache never outlives a password change or a deleted user.
#[test]
fn password_change_takes_effect_at_once() {
    let r = TestReceiver::start("pwc");
    r.add_user("reg", "agent_registration", "old-pw");
    for i in 0..3 {
        r.add_host(&format!("p{i}"), &[]);
    }
    let (st, _, _) = r.register_existing("reg", "old-pw", &new_uuid(), "p0");
    assert_eq!(st, 200);
    let out = r.admin_stdin(
        &["user", "passwd", "reg", "--password-stdin", "--json"],
        "new-pw\n",
    );
    assert!(out.status.success());
    let (st, _, _) = r.register_existing("reg", "old-pw", &new_uuid(), "p1");
    assert_eq!(st, 401, "old password still accepted from the cache");
    let (st, _, _) = r.register_existing("reg", "new-pw", &new_uuid(), "p1");
    assert_eq!(st, 200);
    r.admin_json(&["user", "del", "reg"]);
    let (st, _, _) = r.register_existing("reg", "new-pw", &new_uuid(), "p2");
    assert_eq!(st, 401);
    let users = r.admin_json(&["user", "list"]);
    validate_json("receiver.user.list.schema.json", &users);
    assert!(users["users"].as_array().unwrap().is_empty());
}

/// A registration decides with the user's role as it is when it commits, even when the
/// receiver took the user from its cache of recent requests: removing the permission
/// refuses the next registration, restoring it allows it again.
#[test]
fn role_change_takes_effect_at_once() {
    let r = TestReceiver::start("rolec");
    let enroll_may = |permission: &str| {
        r.admin_json(&["role", "add", "enroll", "--permission", permission]);
    };
    enroll_may("agent_registration.register_any_existing_host");
    r.add_user("reg", "enroll", "pw");
    for i in 0..3 {
        r.add_host(&format!("q{i}"), &[]);
    }
    let (st, _, _) = r.register_existing("reg", "pw", &new_uuid(), "q0");
    assert_eq!(st, 200);
    enroll_may("wato.see_all_folders");
    let (st, body, _) = r.register_existing("reg", "pw", &new_uuid(), "q1");
    assert_eq!(st, 403, "a removed permission still counted: {body}");
    enroll_may("agent_registration.register_any_existing_host");
    let (st, body, _) = r.register_existing("reg", "pw", &new_uuid(), "q1");
    assert_eq!(st, 200, "{body}");
}
