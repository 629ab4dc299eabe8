//! Calls to the receiver through an HTTP proxy: a real CONNECT proxy on loopback records
//! every tunnel, so each test shows which calls went through it and which went direct.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/proxy.rs"]
mod proxy;

use std::time::Duration;

use agent::{receiver_with_hosts, Agent, PASSWORD};
use daemon::{eventually, fixture, Daemon};
use proxy::ConnectProxy;

fn tunnels_to(p: &ConnectProxy, rcv: &common::TestReceiver) -> usize {
    let want = rcv.server();
    p.connects().iter().filter(|c| **c == want).count()
}

#[test]
fn explicit_proxy_carries_registration_status_and_renewal() {
    let rcv = receiver_with_hosts("px1");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let url = p.url();
    a.register(&rcv, "h1", "reg", &["--proxy", &url])
        .ok("tether.register.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 1, "{:?}", p.connects());

    let st = a
        .run(&["status", "--json", "--proxy", &url])
        .ok("tether.status.schema.json");
    assert_eq!(
        st["connections"][0]["remote"]["status"], "registered",
        "{st}"
    );
    assert_eq!(tunnels_to(&p, &rcv), 2);

    a.run(&["renew-certificate", "--json", "--proxy", &url])
        .ok("tether.renew-certificate.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 3);

    // Without the flag (and nothing in tether.toml) the same commands go direct.
    a.run(&["status", "--json"]).ok("tether.status.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 3);
}

#[test]
fn default_is_direct_even_with_https_proxy_set() {
    let rcv = receiver_with_hosts("px2");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let server = rcv.server();
    let url = p.url();
    let out = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            &rcv.site,
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        Some(&format!("{PASSWORD}\n")),
        &[("HTTPS_PROXY", &url), ("https_proxy", &url)],
    );
    out.ok("tether.register.schema.json");
    assert!(p.connects().is_empty(), "{:?}", p.connects());
}

#[test]
fn auto_follows_https_proxy_and_no_proxy() {
    let rcv = receiver_with_hosts("px3");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let url = p.url();
    let server = rcv.server();
    let register = |env: &[(&str, &str)]| {
        a.run_with(
            &[
                "register",
                "--json",
                "--proxy",
                "auto",
                "-s",
                &server,
                "-i",
                &rcv.site,
                "-H",
                "h1",
                "-U",
                "reg",
                "--password-stdin",
                "--trust-fingerprint",
                &rcv.fingerprint,
            ],
            Some(&format!("{PASSWORD}\n")),
            env,
        )
    };
    register(&[("HTTPS_PROXY", &url)]).ok("tether.register.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 1, "{:?}", p.connects());

    // NO_PROXY names the receiver: direct, and still works.
    for no_proxy in ["127.0.0.1", "localhost,127.0.0.0/8", "*"] {
        let st = a.run_with(
            &["status", "--json", "--proxy", "auto"],
            None,
            &[("https_proxy", &url), ("NO_PROXY", no_proxy)],
        );
        let st = st.ok("tether.status.schema.json");
        assert_eq!(st["connections"][0]["remote"]["status"], "registered");
        assert_eq!(tunnels_to(&p, &rcv), 1, "NO_PROXY={no_proxy}");
    }
    // A NO_PROXY for other hosts leaves the receiver proxied.
    a.run_with(
        &["status", "--json", "--proxy", "auto"],
        None,
        &[
            ("https_proxy", &url),
            ("no_proxy", "example.com,10.0.0.0/8"),
        ],
    )
    .ok("tether.status.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 2);
    // auto without HTTPS_PROXY: direct.
    a.run(&["status", "--json", "--proxy", "auto"])
        .ok("tether.status.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 2);
}

#[test]
fn tether_toml_names_the_proxy_and_the_flag_overrides_it() {
    let rcv = receiver_with_hosts("px4");
    let p = ConnectProxy::start();
    let a = Agent::new();
    a.write_config(&format!("proxy = \"{}\"\n", p.url()));
    a.register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 1, "{:?}", p.connects());
    a.run(&["status", "--json", "--proxy", "direct"])
        .ok("tether.status.schema.json");
    assert_eq!(tunnels_to(&p, &rcv), 1);

    // A proxy the configuration cannot use is refused before anything is sent.
    a.write_config("proxy = \"socks5://127.0.0.1:1080\"\n");
    let bad = a.register(&rcv, "h2", "reg", &[]);
    let v = bad.err("usage", 2);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only http:// proxies"),
        "{v}"
    );
}

#[test]
fn port_discovery_goes_through_the_proxy() {
    let rcv = receiver_with_hosts("px5");
    // Discovery asks the site's web port (443); the proxy leads that tunnel to the receiver,
    // which answers discovery too.
    let port = rcv.addr.port();
    let p = ConnectProxy::start_mapping(&[(443, port)]);
    let a = Agent::new();
    let url = p.url();
    let out = a.run_with(
        &[
            "register",
            "--json",
            "--proxy",
            &url,
            "-s",
            "localhost",
            "-i",
            &rcv.site,
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    let v = out.ok("tether.register.schema.json");
    assert_eq!(v["connection"]["server"], format!("localhost:{port}"));
    assert_eq!(
        p.connects(),
        vec!["localhost:443".to_string(), format!("localhost:{port}")]
    );
}

#[test]
fn proxy_credentials_never_come_from_the_command_line() {
    let rcv = receiver_with_hosts("px6");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let with_creds = format!("http://proxyuser:pr0xy-secret@127.0.0.1:{}", p.port);
    let refused = a.register(&rcv, "h1", "reg", &["--proxy", &with_creds]);
    let v = refused.err("usage", 2);
    assert!(!refused.stdout.contains("pr0xy-secret"), "{v}");
    assert!(!refused.stderr.contains("pr0xy-secret"));
    assert!(p.connects().is_empty());

    // From the environment they are fine (and never shown).
    let server = rcv.server();
    let ok = a.run_with(
        &[
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            &rcv.site,
            "-H",
            "h1",
            "-U",
            "reg",
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
            "-vv",
        ],
        Some(&format!("{PASSWORD}\n")),
        &[("TETHER_PROXY", &with_creds)],
    );
    ok.ok("tether.register.schema.json");
    assert!(!ok.stderr.contains("pr0xy-secret"), "{}", ok.stderr);
    assert_eq!(tunnels_to(&p, &rcv), 1);
}

#[test]
fn an_unreachable_proxy_is_a_network_error_that_names_it() {
    let rcv = receiver_with_hosts("px7");
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = Agent::new();
    let url = format!("http://127.0.0.1:{dead}");
    let out = a.register(&rcv, "h1", "reg", &["--proxy", &url]);
    let v = out.err("network", 9);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("through the proxy {url}")), "{msg}");
    assert!(a.connections().is_empty());
}

#[test]
fn untrusted_first_contact_lists_fingerprints_through_the_proxy() {
    let rcv = receiver_with_hosts("px8");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let server = rcv.server();
    let out = a.run(&[
        "probe",
        "--json",
        "--proxy",
        &p.url(),
        "-s",
        &server,
        "-i",
        &rcv.site,
    ]);
    let v = out.err("trust", 8);
    assert_eq!(
        v["error"]["server_fingerprints"][0],
        rcv.fingerprint.as_str()
    );
    assert_eq!(tunnels_to(&p, &rcv), 1);
}

#[test]
fn an_enrollment_file_may_name_its_proxy() {
    let rcv = receiver_with_hosts("px9");
    let p = ConnectProxy::start();
    let a = Agent::new();
    let pw = a.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        a.path("enroll.toml"),
        format!(
            "server = \"{}\"\nsite = \"{}\"\ntrust_fingerprint = \"{}\"\nmode = \"existing\"\nhost_name = \"h1\"\nuser = \"reg\"\npassword_file = {:?}\nproxy = \"{}\"\n",
            rcv.server(),
            rcv.site,
            rcv.fingerprint,
            pw.display().to_string(),
            p.url()
        ),
    )
    .unwrap();
    let v = a.run(&["enroll", "--json"]).ok("tether.enroll.schema.json");
    assert_eq!(v["enrollments"][0]["status"], "enrolled", "{v}");
    assert_eq!(tunnels_to(&p, &rcv), 1);
}

#[test]
fn the_daemon_pushes_through_the_configured_proxy() {
    let rcv = receiver_with_hosts("px10");
    rcv.add_host("p1", &["--mode", "push"]);
    let p = ConnectProxy::start();
    let a = Agent::new();
    let config = format!(
        "proxy = \"{}\"\n[agent]\nfile = {:?}\n[push]\ninterval_secs = 1\njitter = 0.0\n",
        p.url(),
        fixture().display().to_string()
    );
    a.write_config(&config);
    a.register(&rcv, "p1", "reg", &[])
        .ok("tether.register.schema.json");
    let registered = tunnels_to(&p, &rcv);
    assert_eq!(registered, 1);
    let _d = Daemon::start(&a, &config, &[]);
    eventually(Duration::from_secs(15), "a push through the proxy", || {
        tunnels_to(&p, &rcv) > registered
    });
    eventually(
        Duration::from_secs(15),
        "the pushed data on the site",
        || rcv.admin(&["agent-data", "p1", "--json"]).status.success(),
    );
}
