//! End-to-end: the real `tether` against a real tether-receiver over HTTPS on loopback.
#[path = "support/agent.rs"]
mod agent;
mod common;

use std::os::unix::fs::PermissionsExt;

use agent::{receiver_with_hosts, Agent, PASSWORD};

#[test]
fn register_is_idempotent_and_state_is_private() {
    let rcv = receiver_with_hosts("s1");
    let a = Agent::new();
    let first = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(first["changed"], true);
    assert_eq!(first["action"], "registered");
    assert_eq!(first["insecure"], false);
    let c = &first["connection"];
    assert_eq!(c["host_name"], "h1");
    assert_eq!(c["site"], "s1");
    assert_eq!(c["connection_mode"], "pull-agent");
    assert_eq!(c["trust"], "fingerprint");
    assert_eq!(c["certificate"]["valid"], true);
    assert_eq!(c["fetcher_zstd"], true);
    let mode = std::fs::metadata(a.path("registry.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Second run: the receiver confirms, nothing changes.
    let second = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(second["changed"], false);
    assert_eq!(second["action"], "unchanged");
    assert_eq!(second["connection"]["uuid"], c["uuid"]);
    // Local-only check trusts state without contacting the receiver.
    let third = a
        .register(&rcv, "h1", "reg", &["--no-query-remote"])
        .ok("tether.register.schema.json");
    assert_eq!(third["changed"], false);

    let status = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(status["connections"][0]["remote"]["status"], "registered");
    assert_eq!(status["connections"][0]["remote"]["hostname"], "h1");
    let local = a
        .run(&["status", "--json", "--no-query-remote"])
        .ok("tether.status.schema.json");
    assert_eq!(local["connections"][0]["remote"]["status"], "not_queried");

    // Unregistered on the site: register again (same identity), changed.
    rcv.admin_json(&["unregister", "h1"]);
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "rejected");
    assert_eq!(st["connections"][0]["remote"]["error"]["http_status"], 400);
    let again = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(again["changed"], true);
    assert_eq!(again["reason"], "not_registered_on_site");
    assert_eq!(a.connections().len(), 1);
}

#[test]
fn secrets_arrive_by_file_stdin_and_env_never_argv() {
    let rcv = receiver_with_hosts("s2");
    let server = rcv.server();
    let base = [
        "register",
        "--json",
        "-s",
        &server,
        "-i",
        "s2",
        "-U",
        "reg",
        "--trust-fingerprint",
        &rcv.fingerprint,
    ];

    let a = Agent::new();
    let pwfile = a.path("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let mut args = base.to_vec();
    args.extend(["-H", "h1", "--password-file", pwfile.to_str().unwrap()]);
    a.run(&args).ok("tether.register.schema.json");

    let b = Agent::new();
    let mut args = base.to_vec();
    args.extend(["-H", "h2"]);
    b.run_with(&args, None, &[("TETHER_PASSWORD", PASSWORD)])
        .ok("tether.register.schema.json");

    let c = Agent::new();
    let mut args = base.to_vec();
    args.extend(["-H", "h3", "--password-stdin"]);
    let r = c.run_with(&args, Some(PASSWORD), &[]);
    r.ok("tether.register.schema.json");
    assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD));

    // No option accepts a password value.
    let d = Agent::new();
    let mut args = base.to_vec();
    args.extend(["-H", "h3", "--password", PASSWORD]);
    d.run(&args).err("usage", 2);
    // Missing password: a clear usage error, no prompt (stdin is closed).
    let mut args = base.to_vec();
    args.extend(["-H", "h3"]);
    let e = d.run(&args).err("usage", 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("password"));
}

#[test]
fn refusals_map_to_documented_codes_and_change_nothing() {
    let rcv = receiver_with_hosts("s3");
    rcv.add_user("plain", "user", PASSWORD);
    rcv.add_host("elsewhere", &["--site", "other"]);
    rcv.add_host("clu", &["--cluster"]);
    let a = Agent::new();
    let server = rcv.server();

    // Wrong password.
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "s3",
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        Some("wrong"),
        &[],
    );
    let e = r.err("auth_failed", 3);
    assert_eq!(e["error"]["http_status"], 401);
    assert!(e["error"]["hint"].is_string());
    // No registration permission.
    let e = a
        .register(&rcv, "h1", "plain", &[])
        .err("permission_denied", 4);
    assert_eq!(e["error"]["http_status"], 403);
    // Unknown host.
    let e = a
        .register(&rcv, "nosuchhost", "reg", &[])
        .err("host_not_found", 5);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    // Wrong site and cluster.
    a.register(&rcv, "elsewhere", "reg", &[])
        .err("wrong_site", 6);
    a.register(&rcv, "clu", "reg", &[]).err("wrong_site", 6);
    // Invalid host name never leaves the machine.
    a.register(&rcv, "../etc", "reg", &[]).err("usage", 2);
    assert!(a.connections().is_empty(), "nothing stored after refusals");

    // Nothing listens here.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &format!("127.0.0.1:{port}"),
            "-i",
            "s3",
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
    r.err("network", 9);
}

#[test]
fn trust_is_pinned_never_prompted() {
    let rcv = receiver_with_hosts("s4");
    let a = Agent::new();
    let server = rcv.server();
    // No trust option: fails and shows what to pin.
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "s4",
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
        ],
        Some(PASSWORD),
        &[],
    );
    let e = r.err("trust", 8);
    let fps: Vec<String> = e["error"]["server_fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        fps.contains(&rcv.fingerprint),
        "{fps:?} should list {}",
        rcv.fingerprint
    );
    assert!(r.stderr.contains(&rcv.fingerprint));

    // A wrong pin fails before any credentials are sent.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let e = a.register_with_pin(&rcv, "h1", &wrong).err("trust", 8);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("pinned fingerprint"));
    assert!(a.connections().is_empty());

    // Colons and upper case are accepted.
    let hex = rcv.fingerprint.trim_start_matches("sha256:").to_uppercase();
    let colons: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    a.register_with_pin(&rcv, "h1", &colons.join(":"))
        .ok("tether.register.schema.json");

    // --root-ca with the site CA from the stored connection.
    let root = a.connections()[0]["root_cert"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Agent::new();
    std::fs::write(b.path("ca.pem"), root).unwrap();
    let r = b.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "s4",
            "-H",
            "h2",
            "-U",
            "reg",
            "--password-stdin",
            "--root-ca",
            b.path("ca.pem").to_str().unwrap(),
        ],
        Some(PASSWORD),
        &[],
    );
    assert_eq!(
        r.ok("tether.register.schema.json")["connection"]["trust"],
        "root_ca"
    );

    // --trust-cert works but says it is insecure.
    let c = Agent::new();
    let r = c.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            "s4",
            "-H",
            "h3",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-cert",
        ],
        Some(PASSWORD),
        &[],
    );
    let v = r.ok("tether.register.schema.json");
    assert_eq!(v["insecure"], true);
    // A warning through the logger (so --log-format json keeps stderr one format).
    assert!(
        r.stderr.contains("WARN") && r.stderr.contains("--trust-cert accepts any"),
        "{}",
        r.stderr
    );
}

impl Agent {
    fn register_with_pin(&self, rcv: &common::TestReceiver, host: &str, pin: &str) -> agent::Run {
        let server = rcv.server();
        self.run_with(
            &[
                "register",
                "--json",
                "-s",
                &server,
                "-i",
                &rcv.site,
                "-H",
                host,
                "-U",
                "reg",
                "--password-stdin",
                "--trust-fingerprint",
                pin,
            ],
            Some(PASSWORD),
            &[],
        )
    }
}

#[test]
fn identity_lock_force_and_host_name_conflicts() {
    let rcv = receiver_with_hosts("s5");
    let a = Agent::new();
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    // Another controller cannot take over h1 with registration rights alone.
    let other = Agent::new();
    let e = other.register(&rcv, "h1", "reg", &[]).err("conflict", 7);
    assert_eq!(e["error"]["http_status"], 409);
    // The same controller under another host name: local conflict unless --force.
    let e = a.register(&rcv, "h2", "reg", &[]).err("conflict", 7);
    assert!(e["error"]["hint"].as_str().unwrap().contains("--force"));
    let v = a
        .register(&rcv, "h2", "reg", &["--force"])
        .ok("tether.register.schema.json");
    assert_eq!(v["action"], "replaced");
    assert_eq!(v["replaced"].as_array().unwrap().len(), 1);
    let conns = a.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["host_name"], "h2");
}

#[test]
fn concurrent_registers_keep_one_connection() {
    let rcv = receiver_with_hosts("s6");
    let a = Agent::new();
    let runs: Vec<agent::Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| a.register(&rcv, "h1", "reg", &[])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let changed: Vec<bool> = runs
        .iter()
        .map(|r| {
            r.ok("tether.register.schema.json")["changed"]
                .as_bool()
                .unwrap()
        })
        .collect();
    assert_eq!(
        changed.iter().filter(|c| **c).count(),
        1,
        "exactly one run registers: {changed:?}"
    );
    assert_eq!(a.connections().len(), 1);
}

#[test]
fn corrupt_state_is_reported_and_left_alone() {
    let rcv = receiver_with_hosts("s7");
    let a = Agent::new();
    std::fs::write(a.path("registry.json"), b"{ not json").unwrap();
    let e = a.register(&rcv, "h1", "reg", &[]).err("local_state", 12);
    assert!(e["error"]["message"].as_str().unwrap().contains("corrupt"));
    a.run(&["status", "--json"]).err("local_state", 12);
    a.run(&["delete-all", "--json"]).err("local_state", 12);
    assert_eq!(
        std::fs::read(a.path("registry.json")).unwrap(),
        b"{ not json"
    );
}

#[test]
fn delete_renew_proxy_and_import() {
    let rcv = receiver_with_hosts("s8");
    let a = Agent::new();
    let v = a
        .register(&rcv, "h1", "reg", &["--key-type", "rsa2048"])
        .ok("tether.register.schema.json");
    assert_eq!(v["connection"]["key_type"], "rsa2048");
    let uuid = v["connection"]["uuid"].as_str().unwrap().to_string();
    let serial = v["connection"]["certificate"]["serial"].clone();

    // A spare RSA key is generated in the background for the next renewal or registration.
    let spare = a.path("keys/spare-rsa2048.pem");
    wait_for(|| spare.exists(), "spare RSA key");
    let spare_pem = std::fs::read_to_string(&spare).unwrap();
    let r = a
        .run(&["renew-certificate", "--json"])
        .ok("tether.renew-certificate.schema.json");
    let renewed_key = a.connections()[0]["private_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(renewed_key, spare_pem, "renewal used the spare key");
    wait_for(
        || std::fs::read_to_string(&spare).is_ok_and(|p| p != spare_pem),
        "a fresh spare key",
    );
    assert_eq!(r["renewed"][0]["uuid"], uuid.as_str());
    assert_ne!(r["renewed"][0]["certificate"]["serial"], serial);
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(
        st["connections"][0]["remote"]["status"], "registered",
        "renewed certificate works for mTLS"
    );

    // Proxy registration: the bundle is written 0600 and imports elsewhere.
    let server = rcv.server();
    let out = a.path("bundle.json");
    let p = a.run_with(
        &[
            "proxy-register",
            "--json",
            "-s",
            &server,
            "-i",
            "s8",
            "-H",
            "h2",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
            "--output",
            out.to_str().unwrap(),
        ],
        Some(PASSWORD),
        &[],
    );
    p.ok("tether.proxy-register.schema.json");
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    common::validate_json("tether.bundle.schema.json", &bundle);
    let b = Agent::new();
    let imp = b
        .run(&["import", "--json", out.to_str().unwrap()])
        .ok("tether.import.schema.json");
    assert_eq!(imp["changed"], true);
    assert_eq!(imp["imported"][0]["host_name"], "h2");
    let again = b
        .run(&["import", "--json", out.to_str().unwrap()])
        .ok("tether.import.schema.json");
    assert_eq!(again["changed"], false);
    let st = b.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "registered");

    // A tampered bundle is refused and nothing is stored.
    let mut bad = bundle.clone();
    bad["connection"]["private_key"] = a.connections()[0]["private_key"].clone();
    let c = Agent::new();
    std::fs::write(c.path("bad.json"), bad.to_string()).unwrap();
    let e = c
        .run(&["import", "--json", c.path("bad.json").to_str().unwrap()])
        .err("usage", 2);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not belong"));
    assert!(c.connections().is_empty());

    // Checkmk's registered_connections.json imports too (switching controllers).
    let conn = &a.connections()[0];
    let cmk = serde_json::json!({
        "push": {},
        "pull": { format!("{server}/s8"): {
            "uuid": conn["uuid"], "private_key": conn["private_key"],
            "certificate": conn["agent_cert"], "root_cert": conn["root_cert"]
        }},
        "pull_imported": []
    });
    let d = Agent::new();
    std::fs::write(d.path("cmk.json"), cmk.to_string()).unwrap();
    let imp = d
        .run(&[
            "import",
            "--json",
            "-H",
            "h1",
            d.path("cmk.json").to_str().unwrap(),
        ])
        .ok("tether.import.schema.json");
    assert_eq!(imp["imported"][0]["uuid"], uuid.as_str());
    let st = d.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "registered");

    // Delete is local; deleting what is gone is not_found (exit 14).
    let del = a
        .run(&["delete", "--json", &uuid])
        .ok("tether.delete.schema.json");
    assert_eq!(del["deleted"][0], uuid.as_str());
    a.run(&["delete", "--json", &uuid]).err("not_found", 14);
    let all = b
        .run(&["delete-all", "--json"])
        .ok("tether.delete.schema.json");
    assert_eq!(all["changed"], true);
    assert!(b.connections().is_empty());
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn usage_errors_are_json_too() {
    let a = Agent::new();
    let r = a.run(&["register", "--json", "--bogus"]);
    r.err("usage", 2);
    let r = a.run(&[
        "register",
        "--json",
        "-s",
        "127.0.0.1:1",
        "-i",
        "s",
        "-H",
        "h",
        "-U",
        "u",
        "--trust-fingerprint",
        "sha256:zz",
    ]);
    r.err("usage", 2);
}

#[test]
fn status_reports_remote_errors_per_connection() {
    let rcv = receiver_with_hosts("s9");
    let a = Agent::new();
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    drop(rcv);
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["connections"][0]["remote"]["status"], "error");
    assert_eq!(st["connections"][0]["remote"]["error"]["code"], "network");
}

#[test]
fn port_discovery_failure_says_what_to_do() {
    // Without :PORT the port is asked from the site's web server (443, then 80); nothing
    // serves those on loopback here, so the error must name the fix.
    if std::net::TcpStream::connect("127.0.0.1:443").is_ok()
        || std::net::TcpStream::connect("127.0.0.1:80").is_ok()
    {
        return; // a web server on this machine would answer; nothing to prove here
    }
    let a = Agent::new();
    let r = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            "127.0.0.1",
            "-i",
            "s",
            "-H",
            "h",
            "-U",
            "u",
            "--password-stdin",
            "--trust-fingerprint",
            &format!("sha256:{}", "00".repeat(32)),
        ],
        Some(PASSWORD),
        &[],
    );
    let e = r.err("network", 9);
    assert!(e["error"]["message"].as_str().unwrap().contains("discover"));
    assert!(e["error"]["hint"].as_str().unwrap().contains(":8000"));
}

#[test]
fn probe_checks_trust_without_credentials() {
    let rcv = receiver_with_hosts("s10");
    let a = Agent::new();
    let server = rcv.server();
    let ok = a
        .run(&[
            "probe",
            "--json",
            "-s",
            &server,
            "-i",
            "s10",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ])
        .ok("tether.probe.schema.json");
    assert_eq!(ok["changed"], false);
    assert_eq!(ok["trust"], "fingerprint");
    assert!(ok["server_fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == rcv.fingerprint.as_str()));
    let wrong = format!("sha256:{}", "cd".repeat(32));
    a.run(&[
        "probe",
        "--json",
        "-s",
        &server,
        "-i",
        "s10",
        "--trust-fingerprint",
        &wrong,
    ])
    .err("trust", 8);
    let e = a
        .run(&["probe", "--json", "-s", &server, "-i", "s10"])
        .err("trust", 8);
    assert!(e["error"]["server_fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == rcv.fingerprint.as_str()));
    assert!(!a.path("registry.json").exists(), "a probe stores nothing");
    // Nothing reached the audit log: no credentials were sent.
    let audit = rcv.admin_json(&["audit"]);
    assert!(audit["entries"].as_array().unwrap().is_empty(), "{audit}");
}
