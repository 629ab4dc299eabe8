//! New-host registration (site rules, pending approval, decline) and one-time tokens.
#[path = "support/agent.rs"]
mod agent;
mod common;

use agent::{receiver_with_hosts, Agent, PASSWORD};

fn register_new(
    a: &Agent,
    rcv: &common::TestReceiver,
    user: &str,
    labels: &[&str],
    extra: &[&str],
) -> agent::Run {
    let server = rcv.server();
    let mut args = vec![
        "register-new",
        "--json",
        "-s",
        &server,
        "-i",
        &rcv.site,
        "-U",
        user,
        "--password-stdin",
        "--trust-fingerprint",
        &rcv.fingerprint,
    ];
    for l in labels {
        args.push("--agent-labels");
        args.push(l);
    }
    args.extend_from_slice(extra);
    a.run_with(&args, Some(PASSWORD), &[])
}

#[test]
fn rules_create_hold_and_decline() {
    let rcv = receiver_with_hosts("n1");
    rcv.admin_json(&["folder", "add", "/auto"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "create",
        "--match",
        "env=prod",
        "--create-in",
        "/auto",
    ]);
    rcv.admin_json(&["rule", "add", "hold", "--match", "env=hold", "--hold"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "no",
        "--match",
        "env=lab",
        "--decline",
        "lab hosts are not monitored",
    ]);

    // Created by rule, host name from cmk/hostname.
    let a = Agent::new();
    let v = register_new(
        &a,
        &rcv,
        "reg",
        &["cmk/hostname:new1", "env:prod"],
        &["--timeout", "20"],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(v["status"], "success");
    assert_eq!(v["connection"]["host_name"], "new1");
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "registered");

    // Held for approval: --no-wait returns pending, a rerun resumes the same registration.
    let b = Agent::new();
    let p = register_new(
        &b,
        &rcv,
        "reg",
        &["cmk/hostname:new2", "env:hold"],
        &["--no-wait"],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(p["status"], "pending");
    let uuid = p["uuid"].as_str().unwrap().to_string();
    let e = register_new(
        &b,
        &rcv,
        "reg",
        &["cmk/hostname:new2", "env:hold"],
        &["--timeout", "1"],
    );
    e.err("pending", 10);
    assert!(
        e.stderr.contains("waiting"),
        "progress on stderr: {}",
        e.stderr
    );
    let st = b
        .run(&["status", "--json", "--no-query-remote"])
        .ok("tether.status.schema.json");
    assert_eq!(st["pending"][0]["uuid"], uuid.as_str());
    // Only the user who started it may poll it.
    rcv.add_user("other", "agent_registration", PASSWORD);
    let e = register_new(
        &b,
        &rcv,
        "other",
        &["cmk/hostname:new2", "env:hold"],
        &["--timeout", "1"],
    );
    assert_ne!(e.code, 0);
    rcv.admin_json(&["pending", "approve", &uuid, "--host", "new2"]);
    let v = register_new(
        &b,
        &rcv,
        "reg",
        &["cmk/hostname:new2", "env:hold"],
        &["--timeout", "20"],
    )
    .ok("tether.register-new.schema.json");
    assert_eq!(v["resumed"], true);
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(v["connection"]["host_name"], "new2");

    // Declined by rule, with the site's reason.
    let c = Agent::new();
    let e = register_new(
        &c,
        &rcv,
        "reg",
        &["cmk/hostname:new3", "env:lab"],
        &["--timeout", "20"],
    )
    .err("declined", 11);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("lab hosts are not monitored"));
    assert!(c.registry()["pending"]
        .as_array()
        .map(|p| p.is_empty())
        .unwrap_or(true));

    // An existing host is never overwritten.
    let d = Agent::new();
    let e = register_new(
        &d,
        &rcv,
        "reg",
        &["cmk/hostname:h1", "env:prod"],
        &["--timeout", "20"],
    )
    .err("declined", 11);
    assert!(e["error"]["message"].as_str().unwrap().contains("h1"));

    // A user without registration rights cannot start one.
    rcv.add_user("plain", "user", PASSWORD);
    register_new(
        &Agent::new(),
        &rcv,
        "plain",
        &["cmk/hostname:new4", "env:prod"],
        &[],
    )
    .err("permission_denied", 4);
}

#[test]
fn one_time_tokens() {
    let rcv = receiver_with_hosts("n2");
    let tok = rcv.admin_json(&["token", "create", "--host", "h1", "--ttl", "1h"]);
    let token = tok["token"].as_str().expect("token in output").to_string();
    let server = rcv.server();
    let args = [
        "register",
        "--json",
        "-s",
        &server,
        "-i",
        "n2",
        "-H",
        "h1",
        "--trust-fingerprint",
        &rcv.fingerprint,
    ];
    let a = Agent::new();
    a.run_with(&args, None, &[("TETHER_TOKEN", &token)])
        .ok("tether.register.schema.json");
    // Reused token: refused.
    let b = Agent::new();
    b.run_with(&args, None, &[("TETHER_TOKEN", &token)])
        .err("auth_failed", 3);
    // Token bound to h1 cannot register h2; token from a file works the same way.
    let tok2 = rcv.admin_json(&["token", "create", "--host", "h1", "--ttl", "1h"]);
    std::fs::write(b.path("tok"), tok2["token"].as_str().unwrap()).unwrap();
    let tok_path = b.path("tok");
    let args2 = [
        "register",
        "--json",
        "-s",
        &server,
        "-i",
        "n2",
        "-H",
        "h2",
        "--trust-fingerprint",
        &rcv.fingerprint,
        "--token-file",
        tok_path.to_str().unwrap(),
    ];
    let r = b.run(&args2);
    assert!(
        r.code == 3 || r.code == 4,
        "token for h1 used for h2: {}",
        r.stdout
    );
}

/// Checkmk's receiver (gunicorn/uvicorn) closes idle keep-alive connections after 2 s, just
/// as the next 2 s poll goes out, so a poll sent on a pooled connection meets a closed
/// socket ("Unexpected EOF", exit 9 at random). The stand-in receiver closes every
/// kept-alive connection as the second request arrives on it: each poll must go out on a
/// connection of its own, and the wait end in `pending` (exit 10).
#[test]
fn polls_survive_the_receiver_closing_kept_alive_connections() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let init = Command::new(common::receiver_bin())
        .args(["init", "--site", "ka", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("init");
    assert!(init.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&init.stdout).expect("init json");
    let fingerprint = doc["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let ready = dir.path().join("ready");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/closing_receiver.py");
    let mut server = Command::new("python3")
        .arg(script)
        .arg("--dir")
        .arg(dir.path())
        .args(["--site", "ka", "--ready-file"])
        .arg(&ready)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the stand-in receiver");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let addr = std::fs::read_to_string(&ready).expect("stand-in receiver ready");
    let a = Agent::new();
    let r = a.run_with(
        &[
            "register-new",
            "--json",
            "-s",
            &addr,
            "-i",
            "ka",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &fingerprint,
            "--agent-labels",
            "cmk/hostname:held1",
            "--timeout",
            "3",
            "--poll-interval",
            "300ms",
        ],
        Some(PASSWORD),
        &[],
    );
    let _ = server.kill();
    let _ = server.wait();
    let v = r.err("pending", 10);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not decided"));
}
