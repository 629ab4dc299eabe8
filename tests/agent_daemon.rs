//! The daemon against real sites: OpenSSL and tether-receiver's fetcher pull it over TLS,
//! pushes arrive, guards refuse what they must, registry and certificate changes are served
//! without a restart.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use agent::{receiver_with_hosts, Agent};
use daemon::{eventually, fixture, python_pull, raw_read, Daemon};

fn config(extra: &str) -> String {
    format!(
        "[agent]\nfile = {:?}\n[pull]\nregistry_poll_ms = 200\nphase_timeout_secs = 5\n{extra}\n",
        fixture().display().to_string()
    )
}

fn site_file(rcv: &common::TestReceiver, name: &str) -> PathBuf {
    rcv.dir.path().join("ca").join(name)
}

#[test]
fn pulls_are_served_over_mutual_tls_and_guarded() {
    let rcv = receiver_with_hosts("d1");
    let a = Agent::new();
    // Nothing registered yet: no plaintext, not even a marker.
    let d = Daemon::start(&a, &config(""), &[]);
    assert!(
        raw_read(d.addr, Duration::from_secs(2)).is_empty(),
        "no plaintext by default"
    );

    // Registered while the daemon runs: served without restart.
    let reg = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let uuid = reg["connection"]["uuid"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "marker after registration", || {
        raw_read(d.addr, Duration::from_millis(300)).starts_with(b"16")
    });

    // OpenSSL as the site: site certificate as client certificate, SNI = UUID.
    let (cert, key, agent_ca) = (
        site_file(&rcv, "server.pem"),
        site_file(&rcv, "server.key"),
        site_file(&rcv, "agent-ca.pem"),
    );
    let got = python_pull(d.port(), &uuid, &cert, &key, &agent_ca);
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["version"], "0000");
    assert_eq!(got["peer_cn"], uuid.as_str());
    let want = std::fs::read(fixture()).unwrap();
    assert_eq!(got["bytes"], want.len());
    assert!(got["head"].as_str().unwrap().starts_with("<<<"));
    assert_eq!(
        got["compression"], 2,
        "tether-receiver announced zstd at registration"
    );
    let first_serial = got["peer_serial"].clone();

    // A Checkmk site announces nothing: its pulls get zlib.
    let reg_path = a.path("registry.json");
    let text = std::fs::read_to_string(&reg_path).unwrap();
    std::fs::write(
        &reg_path,
        text.replace("\"fetcher_zstd\": true", "\"fetcher_zstd\": false"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "zlib for a Checkmk site", || {
        python_pull(d.port(), &uuid, &cert, &key, &agent_ca)["compression"] == 1
    });

    // tether-receiver's fetcher stores the output.
    rcv.add_host(
        "h1",
        &[
            "--address",
            "127.0.0.1",
            "--agent-port",
            &d.port().to_string(),
        ],
    );
    let f = rcv.admin_json(&["fetch", "h1"]);
    assert_eq!(f["ok"], true, "{f}");
    let data = rcv.admin_json(&["agent-data", "h1"]);
    assert_eq!(data["ok"], true, "{data}");

    // Wrong SNI: the handshake fails.
    let bad = python_pull(
        d.port(),
        "00000000-0000-4000-8000-000000000000",
        &cert,
        &key,
        &agent_ca,
    );
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["stage"], "tls");
    // An agent certificate is no site certificate.
    let conn = &a.connections()[0];
    std::fs::write(a.path("agent.pem"), conn["agent_cert"].as_str().unwrap()).unwrap();
    std::fs::write(a.path("agent.key"), conn["private_key"].as_str().unwrap()).unwrap();
    let bad = python_pull(
        d.port(),
        &uuid,
        &a.path("agent.pem"),
        &a.path("agent.key"),
        &agent_ca,
    );
    assert_eq!(
        bad["ok"], false,
        "agent certificate accepted as client: {bad}"
    );

    // A fourth concurrent connection from one address is closed at once.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            let mut m = [0u8; 2];
            s.read_exact(&mut m).unwrap();
            s
        })
        .collect();
    assert!(
        raw_read(d.addr, Duration::from_secs(2)).is_empty(),
        "fourth connection refused"
    );
    drop(held);
    eventually(Duration::from_secs(5), "slots released", || {
        raw_read(d.addr, Duration::from_millis(300)).starts_with(b"16")
    });

    // Renewal swaps the served certificate at once.
    a.run(&["renew-certificate", "--json"])
        .ok("tether.renew-certificate.schema.json");
    eventually(
        Duration::from_secs(10),
        "renewed certificate served",
        || {
            let g = python_pull(d.port(), &uuid, &cert, &key, &agent_ca);
            g["ok"] == true && g["peer_serial"] != first_serial
        },
    );

    // SIGHUP reloads the configuration: an allow-list without loopback refuses us.
    a.write_config(&config("allowed_ip = [\"10.0.0.0/8\"]"));
    d.signal("HUP");
    eventually(Duration::from_secs(5), "allow-list applied", || {
        raw_read(d.addr, Duration::from_millis(500)).is_empty()
    });
    a.write_config(&config("allowed_ip = [\"127.0.0.0/8\"]"));
    d.signal("HUP");
    eventually(Duration::from_secs(5), "allow-list lifted", || {
        raw_read(d.addr, Duration::from_millis(500)).starts_with(b"16")
    });

    // Deleting the registration stops serving it without a restart.
    a.run(&["delete-all", "--json"])
        .ok("tether.delete.schema.json");
    eventually(
        Duration::from_secs(10),
        "deleted connection no longer served",
        || raw_read(d.addr, Duration::from_millis(500)).is_empty(),
    );

    assert_eq!(d.stop(), 0, "graceful exit on SIGTERM");
}

#[test]
fn legacy_plaintext_only_when_enabled_and_unregistered() {
    let a = Agent::new();
    let d = Daemon::start(&a, &config("legacy_plaintext = true"), &[]);
    let got = raw_read(d.addr, Duration::from_secs(5));
    assert_eq!(got, std::fs::read(fixture()).unwrap());
}

#[test]
fn daemon_renews_by_itself() {
    let rcv = receiver_with_hosts("d2");
    let a = Agent::new();
    let v = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let serial = v["connection"]["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    // below_fraction = 1.0 renews at every check: the daemon must swap certificates itself.
    let _d = Daemon::start(
        &a,
        &config("[renew]\nbelow_fraction = 1.0\ncheck_interval_secs = 1"),
        &[],
    );
    eventually(Duration::from_secs(20), "automatic renewal", || {
        a.connections()[0]["agent_cert"].as_str() != v["connection"]["agent_cert"].as_str()
            && a.run(&["status", "--json", "--no-query-remote"]).json()["connections"][0]
                ["certificate"]["serial"]
                != serial.as_str()
    });
}

#[test]
fn push_arrives_and_broken_sources_are_reported() {
    let rcv = receiver_with_hosts("d3");
    rcv.add_host("p1", &["--mode", "push"]);
    let a = Agent::new();
    let v = a
        .register(&rcv, "p1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(v["connection"]["connection_mode"], "push-agent");
    a.write_config(&config(""));
    let p = a.run(&["push", "--json"]).ok("tether.push.schema.json");
    assert_eq!(p["pushed"][0]["ok"], true, "{p}");
    let data = rcv.admin_json(&["agent-data", "p1"]);
    assert_eq!(data["ok"], true);

    // The daemon pushes on its own schedule.
    let d = Daemon::start(&a, &config("[push]\ninterval_secs = 1\njitter = 0.0"), &[]);
    let before = serde_json::to_string(&rcv.admin_json(&["agent-data", "p1"])).unwrap();
    eventually(Duration::from_secs(15), "a daemon push", || {
        serde_json::to_string(&rcv.admin_json(&["agent-data", "p1"])).unwrap() != before
    });
    drop(d);

    // A failing agent source: dump fails clearly, the daemon reports it in status.
    let broken = "[agent]\ncommand = [\"false\"]\n[push]\ninterval_secs = 1\n";
    a.run(&["dump", "--json"]).ok("tether.dump.schema.json");
    a.write_config(broken);
    let e = a.run(&["dump", "--json"]).err("local_state", 12);
    assert!(e["error"]["message"].as_str().unwrap().contains("false"));
    let _d = Daemon::start(&a, broken, &[]);
    eventually(Duration::from_secs(15), "source failure in status", || {
        let st = a.run(&["status", "--json", "--no-query-remote"]).json();
        st["agent_source"]["last_daemon_error"].is_string()
    });
}

#[test]
fn agent_socket_protocol() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    // A stand-in for the Checkmk agent package's socket: reads one line, answers, closes.
    let a = Agent::new();
    let sock = a.path("agent.socket");
    let listener = UnixListener::bind(&sock).unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            seen.lock().unwrap().push(line);
            s.write_all(b"<<<check_mk>>>\nVersion: socket\n").unwrap();
        }
    });
    a.write_config(&format!(
        "[agent]\nsocket = {:?}\n",
        sock.display().to_string()
    ));
    let v = a.run(&["dump", "--json"]).ok("tether.dump.schema.json");
    assert_eq!(v["output"], "<<<check_mk>>>\nVersion: socket\n");
    assert_eq!(
        lines.lock().unwrap().as_slice(),
        ["\n"],
        "dump sends an empty line"
    );
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["agent_source"]["kind"], "socket");
    assert_eq!(st["agent_source"]["ok"], true);

    // A pull sends the peer address first (legacy plaintext keeps this test TLS-free).
    let d = Daemon::start(
        &a,
        &format!(
            "[agent]\nsocket = {:?}\n[pull]\nlegacy_plaintext = true\n",
            sock.display().to_string()
        ),
        &[],
    );
    assert_eq!(
        raw_read(d.addr, Duration::from_secs(5)),
        b"<<<check_mk>>>\nVersion: socket\n"
    );
    assert_eq!(lines.lock().unwrap().last().unwrap(), "127.0.0.1\n");

    // A missing socket is reported clearly.
    std::fs::remove_file(&sock).unwrap();
    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(st["agent_source"]["ok"], false);
    assert!(st["agent_source"]["error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
}

#[test]
fn dual_stack_listener_treats_mapped_ipv4_as_ipv4() {
    let a = Agent::new();
    // The allow-list names IPv4 only: an IPv4 peer on the IPv6 wildcard socket arrives as
    // ::ffff:127.0.0.1 and must still match, while ::1 must not.
    let cfg = config("legacy_plaintext = true\nallowed_ip = [\"127.0.0.0/8\"]");
    let d = Daemon::start_on(&a, &cfg, "[::]:0", &[]);
    let port = d.port();
    let want = std::fs::read(fixture()).unwrap();
    let v4: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(raw_read(v4, Duration::from_secs(5)), want);
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
        assert!(
            raw_read(v6, Duration::from_secs(2)).is_empty(),
            "::1 is not in the allow-list"
        );
    }
}

#[test]
fn sigterm_lets_a_pull_in_flight_finish() {
    let a = Agent::new();
    let slow = format!(
        "[agent]\ncommand = [\"sh\", \"-c\", \"sleep 1; cat {}\"]\n[pull]\nlegacy_plaintext = true\n",
        fixture().display()
    );
    let d = Daemon::start(&a, &slow, &[]);
    let addr = d.addr;
    let reader = std::thread::spawn(move || raw_read(addr, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.stop(), 0);
    assert_eq!(reader.join().unwrap(), std::fs::read(fixture()).unwrap());
}

#[test]
fn a_site_pulls_only_through_its_own_connection() {
    // One host registered with two sites: each site's certificate opens only its own
    // connection, even though both site CAs are trusted by the listener.
    let s1 = receiver_with_hosts("x1");
    let s2 = receiver_with_hosts("x2");
    let a = Agent::new();
    let u1 = a
        .register(&s1, "h1", "reg", &[])
        .ok("tether.register.schema.json")["connection"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let u2 = a
        .register(&s2, "h1", "reg", &[])
        .ok("tether.register.schema.json")["connection"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let d = Daemon::start(&a, &config(""), &[]);
    let (cert, key) = (site_file(&s1, "server.pem"), site_file(&s1, "server.key"));
    let ca1 = site_file(&s1, "agent-ca.pem");
    let ca2 = site_file(&s2, "agent-ca.pem");
    assert_eq!(python_pull(d.port(), &u1, &cert, &key, &ca1)["ok"], true);
    let other = python_pull(d.port(), &u2, &cert, &key, &ca2);
    assert_eq!(
        other["ok"], false,
        "site x1 pulled through x2's connection: {other}"
    );
}

#[test]
fn many_connections_to_one_site_still_handshake() {
    // The verifier names each site root once in its certificate request; a copy per
    // connection outgrew one handshake message beyond ~600 connections.
    let rcv = receiver_with_hosts("d9");
    let a = Agent::new();
    let reg = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let uuid = reg["connection"]["uuid"].as_str().unwrap().to_string();
    // 1,199 more entries with the same site root (same certificate under other UUIDs).
    let path = a.path("registry.json");
    let mut registry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let conns = registry["connections"].as_array_mut().unwrap();
    let first = conns[0].clone();
    for i in 0..1199 {
        let mut c = first.clone();
        c["uuid"] = format!("00000000-0000-4000-8000-{i:012}").into();
        conns.push(c);
    }
    std::fs::write(&path, serde_json::to_vec(&registry).unwrap()).unwrap();
    let d = Daemon::start(&a, &config(""), &[]);
    // Both fetchers: rustls (tether-receiver, at most 64 KiB per handshake message) and OpenSSL.
    rcv.add_host(
        "h1",
        &[
            "--address",
            "127.0.0.1",
            "--agent-port",
            &d.port().to_string(),
        ],
    );
    let f = rcv.admin_json(&["fetch", "h1"]);
    assert_eq!(f["ok"], true, "{f}");
    let got = python_pull(
        d.port(),
        &uuid,
        &site_file(&rcv, "server.pem"),
        &site_file(&rcv, "server.key"),
        &site_file(&rcv, "agent-ca.pem"),
    );
    assert_eq!(got["ok"], true, "{got}");
    d.stop();
}

#[test]
fn a_changed_output_file_is_served_at_the_next_pull() {
    // The daemon skips re-reading a file source whose stamp (inode, size, ctime) is unchanged
    // and older than two seconds; any write must still show at the next pull.
    let rcv = receiver_with_hosts("d8");
    let a = Agent::new();
    let uuid = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json")["connection"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let out = a.path("output.txt");
    let body = |v: &str| format!("<<<check_mk>>>\nVersion: {v}\n{}", "x".repeat(4000));
    std::fs::write(&out, body("1.0.0")).unwrap();
    let cfg = format!(
        "[agent]\nfile = {:?}\n[pull]\nregistry_poll_ms = 200\nphase_timeout_secs = 5\n",
        out.display().to_string()
    );
    let d = Daemon::start(&a, &cfg, &[]);
    let (cert, key, ca) = (
        site_file(&rcv, "server.pem"),
        site_file(&rcv, "server.key"),
        site_file(&rcv, "agent-ca.pem"),
    );
    let head = || {
        let got = python_pull(d.port(), &uuid, &cert, &key, &ca);
        assert_eq!(got["ok"], true, "{got}");
        got["head"].as_str().unwrap().to_string()
    };
    assert!(head().contains("1.0.0"));
    // Old enough to be served by its stamp; pulled twice so the stamp is cached.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(head().contains("1.0.0"));
    assert!(head().contains("1.0.0"));
    // Rewritten in place with the same size: only the ctime tells.
    std::fs::write(&out, body("2.0.0")).unwrap();
    assert!(head().contains("2.0.0"));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(head().contains("2.0.0"));
    assert!(head().contains("2.0.0"));
    // Replaced by rename (a new inode), as agents' output writers do.
    let tmp = a.path("output.tmp");
    std::fs::write(&tmp, body("3.0.0")).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    assert!(head().contains("3.0.0"));
    d.stop();
}
