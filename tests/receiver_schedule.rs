//! The pull scheduler of `serve`: real receivers pull a real `tether daemon` (one daemon
//! serving many registered connections, each a host with its own UUID) over TLS on
//! loopback, on the hosts' intervals, without anyone running `fetch`. Health, compressed
//! storage, `/metrics`, and three receivers sharing one PostgreSQL database with one of
//! them killed mid-run.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, receiver_bin, sample, scrape, validate_json, TestReceiver};
use daemon::{eventually, fixture, Daemon};
use serde_json::Value;

const PW: &str = "sched-Registration-pw";

fn health(r: &TestReceiver) -> Value {
    let v = r.admin_json(&["hosts", "health"]);
    validate_json("receiver.host.health.schema.json", &v);
    v
}

fn host<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["host"] == name)
        .unwrap_or_else(|| panic!("{name} not in {h}"))
}

/// Registers `hosts` (already added) and starts one daemon serving all of them; points
/// each host at it with `extra` host flags.
fn fleet_daemon(
    r: &TestReceiver,
    a: &agent::Agent,
    hosts: &[String],
    extra: &[&str],
) -> (Daemon, Vec<fleet::FleetConn>) {
    let conns = fleet::register_fleet(r.addr, &r.site, &r.site_ca_pem(), "reg", PW, hosts, 4);
    fleet::write_registry(a.home.path(), &r.site, r.addr, &r.site_ca_pem(), &conns);
    let d = Daemon::start(a, &fleet::daemon_config(&fixture()), &[]);
    let port = d.port().to_string();
    for h in hosts {
        let mut args = vec!["--address", "127.0.0.1", "--agent-port", &port];
        args.extend_from_slice(extra);
        r.add_host(h, &args);
    }
    (d, conns)
}

#[test]
fn serve_pulls_on_the_interval_stores_compressed_and_reports_health() {
    let mport = free_port();
    let r = TestReceiver::start_with(
        "sched",
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{mport}"),
            "--pull-timeout",
            "2s",
        ],
    );
    r.add_user("reg", "agent_registration", PW);
    // Two hosts with their own interval, two inheriting theirs from a folder.
    r.admin_json(&["folder", "add", "/fast", "--pull-interval", "2s"]);
    let hosts: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    for (i, h) in hosts.iter().enumerate() {
        if i < 2 {
            r.add_host(h, &["--pull-interval", "2s"]);
        } else {
            r.add_host(h, &["--folder", "/fast"]);
        }
    }
    r.add_host("down", &["--pull-interval", "2s"]);
    r.add_host("pushy", &["--mode", "push", "--pull-interval", "2s"]);
    let a = agent::Agent::new();
    let mut names = hosts.clone();
    names.push("down".into());
    let conns = fleet::register_fleet(r.addr, &r.site, &r.site_ca_pem(), "reg", PW, &names, 2);
    fleet::write_registry(a.home.path(), &r.site, r.addr, &r.site_ca_pem(), &conns);
    let d = Daemon::start(&a, &fleet::daemon_config(&fixture()), &[]);
    let port = d.port().to_string();
    for (i, h) in hosts.iter().enumerate() {
        let mut args = vec!["--address", "127.0.0.1", "--agent-port", &port];
        if i < 2 {
            args.extend(["--pull-interval", "2s"]);
        } else {
            args.extend(["--folder", "/fast"]);
        }
        r.add_host(h, &args);
    }
    // "down" is registered, but nothing listens where it points.
    let dead = free_port().to_string();
    r.add_host(
        "down",
        &[
            "--pull-interval",
            "2s",
            "--address",
            "127.0.0.1",
            "--agent-port",
            &dead,
        ],
    );

    let want = std::fs::read(fixture()).unwrap();
    let before = scrape(mport);
    // Nobody runs fetch: serve pulls every live host on its own.
    eventually(Duration::from_secs(20), "every live host pulled", || {
        let h = health(&r);
        hosts
            .iter()
            .all(|n| host(&h, n)["last_success"].is_string())
    });
    let h = health(&r);
    for n in &hosts {
        let x = host(&h, n);
        assert_eq!(x["mode"], "pull-agent");
        assert_eq!(x["interval_secs"], 2, "{x}");
        assert_eq!(x["scheduled"], true);
        assert_eq!(x["output_bytes"], want.len(), "{x}");
        // Kept as the daemon sent it: zstd (the site announced it), far smaller.
        assert_eq!(x["compression"], "zstd", "{x}");
        let stored = x["stored_bytes"].as_i64().unwrap();
        assert!(stored > 0 && (stored as usize) < want.len() / 2, "{x}");
        assert!(x["bytes"].as_i64().unwrap() >= stored, "{x}");
        assert!(x["duration_ms"].is_i64(), "{x}");
        assert!(x["last_error_code"].is_null(), "{x}");
    }
    // Read back decompressed.
    let data = r.admin_json(&["agent-data", "s0"]);
    assert_eq!(data["via"], "pull");
    assert_eq!(data["output"].as_str().unwrap().as_bytes(), want);

    // The host whose agent is down: its error code, and stale once 1.5 intervals pass.
    eventually(
        Duration::from_secs(15),
        "down host stale with its error",
        || {
            let h = health(&r);
            let x = host(&h, "down");
            x["last_error_code"] == "connection_failed" && x["stale"] == true
        },
    );
    let h = health(&r);
    assert!(host(&h, "down")["last_success"].is_null());
    assert!(host(&h, "down")["pulls"].as_i64().unwrap() >= 1);
    // A push host is never pulled, and is stale without pushes.
    let p = host(&h, "pushy");
    assert_eq!(p["mode"], "push-agent");
    assert_eq!(p["scheduled"], false);
    assert_eq!(p["pulls"], 0);
    assert_eq!(p["stale"], true, "{p}");
    assert!(h["stale"].as_i64().unwrap() >= 2);

    // Pulled again and again on the interval.
    let pulls = |h: &Value| host(h, "s0")["pulls"].as_i64().unwrap();
    let n0 = pulls(&h);
    std::thread::sleep(Duration::from_millis(4500));
    let n1 = pulls(&health(&r));
    assert!(
        (n0 + 1..=n0 + 4).contains(&n1),
        "s0 pulled {n0} then {n1} times in 4.5 s at a 2 s interval"
    );

    // /metrics: names, site gauges, and the pull counter moved.
    let after = scrape(mport);
    for name in [
        "tether_receiver_pulls_total{outcome=\"ok\"}",
        "tether_receiver_pulls_total{outcome=\"connection_failed\"}",
        "tether_receiver_pull_duration_seconds_bucket",
        "tether_receiver_database_duration_seconds_bucket",
        "tether_receiver_registrations 5",
        "tether_receiver_stale_hosts",
        "tether_receiver_scheduled_hosts 5",
        "tether_receiver_registration_requests_total{outcome=\"registered\"} 5",
    ] {
        assert!(after.contains(name), "{name} missing:\n{after}");
    }
    let ok = "tether_receiver_pulls_total{outcome=\"ok\"}";
    assert!(
        sample(&after, ok) >= sample(&before, ok) + 4.0,
        "pull counter did not move:\n{before}\n{after}"
    );
    assert!(sample(&after, "tether_receiver_stale_hosts") >= 2.0);
    // The scheduler resumes TLS sessions: every live host was pulled at least twice.
    assert!(
        sample(
            &after,
            "tether_receiver_pull_handshakes_total{kind=\"resumed\"}"
        ) >= 1.0,
        "no pull resumed:\n{after}"
    );

    // A push is stored as sent (zlib here), and the push host is fresh again.
    let u = common::new_uuid();
    let (st, body, key) = r.register_existing("reg", PW, &u, "pushy");
    assert_eq!(st, 200, "{body}");
    let client = r.agent(Some((body["agent_cert"].as_str().unwrap(), &key)));
    let mp = tether::wire::multipart::agent_data_body(&tether::wire::compression::compress(
        tether::wire::compression::Compression::Zlib,
        &want,
    ));
    let (st, body) = common::response(
        client
            .post(&r.url(&format!("agent_data/{u}")))
            .set("compression", "zlib")
            .set("Content-Type", &mp.content_type)
            .send_bytes(&mp.body),
    );
    assert_eq!(st, 204, "{body}");
    let h = health(&r);
    let p = host(&h, "pushy");
    assert_eq!(p["compression"], "zlib", "{p}");
    assert_eq!(p["output_bytes"], want.len(), "{p}");
    assert!(
        (p["stored_bytes"].as_u64().unwrap() as usize) < want.len() / 2,
        "{p}"
    );
    assert_eq!(p["stale"], false, "{p}");
    assert_eq!(p["pulls"], 0, "{p}");
    let data = r.admin_json(&["agent-data", "pushy"]);
    assert_eq!(data["via"], "push");
    assert_eq!(data["output"].as_str().unwrap().as_bytes(), want);
    assert!(scrape(mport).contains("tether_receiver_pushes_total{outcome=\"ok\"} 1"));
    d.stop();
}

/// The receiver's own fetcher with a ticket store, as `serve` pulls: driven one pull at a
/// time so each handshake's kind can be checked.
struct Fetcher {
    rt: tokio::runtime::Runtime,
    connector: tokio_rustls::TlsConnector,
    sessions: std::sync::Arc<tether::receiver::fetch::PullSessions>,
}

impl Fetcher {
    fn new(site_dir: &std::path::Path) -> Fetcher {
        use tether::receiver::fetch;
        let keys = tether::receiver::ca::SiteKeys::load(site_dir).expect("site keys");
        let sessions = std::sync::Arc::new(fetch::PullSessions::default());
        let cfg = fetch::client_config(&keys, Some(sessions.clone())).expect("client config");
        Fetcher {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)),
            sessions,
        }
    }

    fn pull(
        &self,
        c: &fleet::FleetConn,
        port: u16,
    ) -> Result<tether::receiver::fetch::Pulled, tether::receiver::fetch::PullError> {
        let t = tether::receiver::fetch::Target {
            host: c.host.clone(),
            uuid: Some(c.uuid.clone()),
            address: "127.0.0.1".into(),
            port,
        };
        self.rt.block_on(tether::receiver::fetch::pull_one(
            &t,
            self.connector.clone(),
            Duration::from_secs(10),
            1 << 24,
        ))
    }
}

#[test]
fn pulls_resume_tls_sessions_and_a_ticket_never_outlives_the_daemons_connection() {
    let r = TestReceiver::start_with("resume", &["--no-scheduler"]);
    r.add_user("reg", "agent_registration", PW);
    let hosts: Vec<String> = vec!["t0".into(), "t1".into()];
    for h in &hosts {
        r.add_host(h, &[]);
    }
    let a = agent::Agent::new();
    let (d, conns) = fleet_daemon(&r, &a, &hosts, &[]);
    let port = d.port();
    let size = std::fs::metadata(fixture()).unwrap().len() as usize;
    let f = Fetcher::new(r.dir.path());
    let pull = |c: &fleet::FleetConn| {
        let p = f
            .pull(c, port)
            .unwrap_or_else(|e| panic!("pull {}: {} {}", c.host, e.code, e.text));
        assert_eq!(p.size, size, "{} output intact", c.host);
        p.resumed
    };

    // The first pull of a connection is a full handshake; the next ones resume with the
    // ticket the previous pull brought, and are served all the same.
    assert!(!pull(&conns[0]));
    assert_eq!(f.sessions.tickets(), 1);
    assert!(pull(&conns[0]));
    assert!(pull(&conns[0]));
    assert!(!pull(&conns[1]), "a ticket is bound to its connection");
    assert!(pull(&conns[1]));
    assert_eq!(f.sessions.tickets(), 2);

    // A restarted daemon knows none of the tickets: full handshakes, then resumption again.
    d.stop();
    let d = Daemon::start_on(
        &a,
        &fleet::daemon_config(&fixture()),
        &format!("127.0.0.1:{port}"),
        &[],
    );
    assert_eq!(
        f.sessions.tickets(),
        2,
        "the fetcher still holds both tickets"
    );
    assert!(
        !pull(&conns[0]),
        "ticket of the previous daemon process resumed"
    );
    assert!(pull(&conns[0]));

    // The site's registration removed on the agent: once the daemon has reloaded its
    // registry, a pull of that connection is refused although the fetcher offers a ticket
    // the daemon issued for it, and a full handshake is refused too.
    a.run(&["delete", &conns[0].uuid, "--local-only", "--json"])
        .ok("tether.delete.schema.json");
    let refused = {
        let start = Instant::now();
        loop {
            assert_eq!(f.sessions.tickets(), 2, "a ticket for t0 is offered");
            match f.pull(&conns[0], port) {
                Ok(_) => {
                    assert!(start.elapsed() < Duration::from_secs(20), "never refused");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => break e,
            }
        }
    };
    assert_eq!(refused.code, "tls_failed", "{}", refused.text);
    let fresh = Fetcher::new(r.dir.path());
    let e = fresh
        .pull(&conns[0], port)
        .expect_err("full handshake refused");
    assert_eq!(e.code, "tls_failed", "{}", e.text);
    // The reload dropped every ticket the daemon had issued: t1 does a full handshake again.
    assert!(!pull(&conns[1]), "ticket issued before the reload resumed");
    assert!(pull(&conns[1]));
    d.stop();
}

#[test]
fn intervals_from_cli_settings_and_apply_and_no_scheduler() {
    let r = TestReceiver::start_with("ivs", &["--no-scheduler"]);
    let s = r.admin_json(&["settings", "show"]);
    validate_json("receiver.settings.schema.json", &s);
    assert_eq!(s["pull_interval_secs"], 60);
    assert_eq!(s["pull_interval_default"], true);
    r.admin_json(&["settings", "set", "--pull-interval", "90s"]);
    assert_eq!(
        r.admin_json(&["settings", "show"])["pull_interval_secs"],
        90
    );
    let (code, _) = r.admin_json_err(&["host", "add", "bad", "--pull-interval", "0s"]);
    assert_eq!(code, 2);
    let file = r.dir.path().join("apply.yaml");
    std::fs::write(
        &file,
        "site:\n  pull_interval: 2m\nfolders:\n  - path: /dc1\n    pull_interval: 45s\n\
         hosts:\n  - name: a1\n    folder: /dc1\n  - name: a2\n    folder: /dc1\n    pull_interval: 10s\n  - name: a3\n",
    )
    .unwrap();
    let out = r.admin_json(&["apply", file.to_str().unwrap()]);
    assert_eq!(out["changed"], true, "{out}");
    let again = r.admin_json(&["apply", file.to_str().unwrap()]);
    assert_eq!(again["changed"], false, "{again}");
    let h = health(&r);
    assert_eq!(host(&h, "a1")["interval_secs"], 45);
    assert_eq!(host(&h, "a2")["interval_secs"], 10);
    assert_eq!(host(&h, "a3")["interval_secs"], 120);
    // Without a registration nothing is scheduled, and --no-scheduler pulls nothing anyway.
    assert_eq!(host(&h, "a1")["scheduled"], false);
    let hl = r.admin_json(&["host", "list"]);
    validate_json("receiver.host.list.schema.json", &hl);
    let fl = r.admin_json(&["folder", "list"]);
    validate_json("receiver.folder.list.schema.json", &fl);
}

// ---------- several receivers on PostgreSQL ----------

struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `serve` process of the site in `dir` whose scheduler trail goes to its own log.
fn serve_logged(dir: &std::path::Path, n: usize) -> Serve {
    let log = dir.join(format!("serve-{n}.log"));
    let ready = dir.join(format!("ready-{n}"));
    let child = Command::new(receiver_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--pull-timeout", "2s", "--ready-file"])
        .arg(&ready)
        .arg("--dir")
        .arg(dir)
        .env("TETHER_LOG", "warn,tether::receiver::schedule=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&ready)
        .ok()
        .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        .is_none()
    {
        assert!(Instant::now() < deadline, "serve {n} did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Serve { child, log }
}

/// (host, at_ms, owner) of every claim in a receiver's log.
fn claims(log: &std::path::Path) -> Vec<(String, i64, String)> {
    let f = std::fs::File::open(log).expect("log");
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v["message"] == "claimed")
        .map(|v| {
            (
                v["host"].as_str().unwrap_or_default().to_string(),
                v["at_ms"].as_i64().unwrap_or_default(),
                v["owner"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn three_receivers_on_postgres_split_hosts_and_take_over_from_a_killed_one() {
    const N: usize = 20;
    const INTERVAL_MS: i64 = 3000;
    // Claims run every 100 ms; a loaded 2-core machine adds scheduling delay.
    const SLACK_MS: i64 = 1500;
    let db = common::pg::PgCluster::shared().create_db();
    // This one serves registrations only; the three below pull.
    let r = TestReceiver::start_on("pgsched", Some(&db), &["--no-scheduler"]);
    r.add_user("reg", "agent_registration", PW);
    r.admin_json(&["settings", "set", "--pull-interval", "3s"]);
    let hosts: Vec<String> = (0..N).map(|i| format!("f{i:02}")).collect();
    for h in &hosts {
        r.add_host(h, &[]);
    }
    let a = agent::Agent::new();
    let (d, _) = fleet_daemon(&r, &a, &hosts, &[]);
    let mut serves: Vec<Serve> = (0..3).map(|i| serve_logged(r.dir.path(), i)).collect();
    let started = now_ms();
    std::thread::sleep(Duration::from_millis(7000));
    let killed_at = now_ms();
    let _ = serves[0].child.kill();
    let _ = serves[0].child.wait();
    std::thread::sleep(Duration::from_millis(8000));
    let ended = now_ms();
    for s in &serves[1..] {
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
    }
    for s in &mut serves[1..] {
        let _ = s.child.wait();
    }

    let mut by_host: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut owners_before_kill = BTreeSet::new();
    let mut killed_owner = None;
    for (i, s) in serves.iter().enumerate() {
        for (h, at, owner) in claims(&s.log) {
            if at < killed_at {
                owners_before_kill.insert(owner.clone());
            }
            if i == 0 {
                killed_owner = Some(owner.clone());
            }
            by_host.entry(h).or_default().push((at, owner));
        }
    }
    assert!(
        owners_before_kill.len() >= 2,
        "hosts were not split between receivers: {owners_before_kill:?}"
    );
    let killed_owner = killed_owner.expect("the killed receiver pulled before it died");
    let mut per_owner: BTreeMap<&str, usize> = BTreeMap::new();
    for v in by_host.values() {
        for (_, o) in v {
            *per_owner.entry(o.as_str()).or_default() += 1;
        }
    }
    eprintln!("claims per receiver: {per_owner:?} (killed: {killed_owner})");
    assert_eq!(by_host.len(), N, "not every host was pulled: {by_host:?}");
    for (h, mut v) in by_host {
        v.sort();
        // The first pull falls within one interval of the start (jitter spreads them).
        assert!(
            v[0].0 - started <= INTERVAL_MS + 2000 + SLACK_MS,
            "{h} first pulled {} ms after start",
            v[0].0 - started
        );
        for w in v.windows(2) {
            let gap = w[1].0 - w[0].0;
            // Never twice within an interval, whichever receivers took it...
            assert!(
                gap >= INTERVAL_MS - 300,
                "{h} pulled twice within {gap} ms: {w:?}"
            );
            // ...and never skipped, also across the kill.
            assert!(
                gap <= INTERVAL_MS + SLACK_MS,
                "{h} not pulled for {gap} ms: {w:?}"
            );
        }
        let last = v.last().unwrap();
        assert!(
            ended - last.0 <= INTERVAL_MS + SLACK_MS,
            "{h} last pulled {} ms before the end",
            ended - last.0
        );
        assert!(
            v.iter()
                .filter(|(at, _)| *at > killed_at)
                .all(|(_, o)| *o != killed_owner),
            "{h} claimed by the killed receiver after its death"
        );
    }
    // Everything pulled fine, and nothing is left leased by the receivers that stopped.
    let h = health(&r);
    for n in &hosts {
        let x = host(&h, n);
        assert!(x["last_success"].is_string(), "{x}");
        assert!(x["last_error_code"].is_null(), "{x}");
        assert!(x["pulls"].as_i64().unwrap() >= 3, "{x}");
        assert!(x["pulled_by"].is_string(), "{x}");
        assert!(x["lease_owner"].is_null(), "{x}");
    }
    d.stop();
}
