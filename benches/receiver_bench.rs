//! register_existing throughput and latency: the real release binary on loopback, durable
//! commits (SQLite: WAL, synchronous=FULL; PostgreSQL: fsync and synchronous_commit on, its
//! defaults), 16 concurrent HTTPS clients with keep-alive.
//! Run: `cargo bench --bench receiver_bench` (env BENCH_CLIENTS, BENCH_PER_CLIENT;
//! BENCH_POSTGRES=1 also runs on a throwaway PostgreSQL cluster with one and with two
//! `serve` processes on the same database, the clients split across them;
//! BENCH_PG_RTT_US=500 reaches PostgreSQL over TCP through a relay that adds that much
//! round-trip time, as a database on another host would;
//! BENCH_PG_TCP=1 reaches it over TCP on loopback instead of its unix socket;
//! BENCH_PG_STATS=1 prints, per case, the statements PostgreSQL ran during the timed part
//! (pg_stat_statements): calls per registration and execution time per call;
//! BENCH_RECEIVER_BIN=PATH runs another build of tether-receiver instead of this one).
mod support;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{admin, cluster_cpu_secs, cpu_secs, env_usize, receiver_bin};

#[path = "../tests/support/postgres.rs"]
mod pg;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let clients = env_usize("BENCH_CLIENTS", 16);
    let per = env_usize("BENCH_PER_CLIENT", if quick { 5 } else { 400 });
    let with_pg = std::env::var("BENCH_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0");
    let sqlite = if std::env::var_os("BENCH_SKIP_SQLITE").is_some() {
        f64::NAN
    } else {
        run_case("SQLite", None, None, 1, clients, per, None)
    };
    if !with_pg {
        return;
    }
    // BENCH_PG_SETTINGS="-c synchronous_commit=off" etc. isolates a cause; not the default.
    let settings = std::env::var("BENCH_PG_SETTINGS").unwrap_or_default();
    let profile = std::env::var("BENCH_PG_STATS").is_ok_and(|v| !v.is_empty() && v != "0");
    let cluster = match (settings.as_str(), profile) {
        ("", false) => pg::PgCluster::start_durable(),
        (s, _) => {
            // The profile's library loads at server start; the durable defaults stay.
            let s = match profile {
                true => format!(
                    "{} {s} -c shared_preload_libraries=pg_stat_statements",
                    pg::DURABLE_SETTINGS
                ),
                false => s.to_string(),
            };
            println!("PostgreSQL settings: {s}");
            pg::PgCluster::start_with_settings(&s)
        }
    };
    if profile {
        let mut c = cluster.client("postgres").expect("connect to postgres");
        c.batch_execute("CREATE EXTENSION pg_stat_statements")
            .expect("pg_stat_statements");
    }
    let profile = profile.then_some(&cluster);
    let rtt_us = env_usize("BENCH_PG_RTT_US", 0);
    let proxy = (rtt_us > 0).then(|| {
        println!("PostgreSQL over TCP through a relay adding {rtt_us} µs round-trip time");
        delay_proxy(cluster.port, Duration::from_micros(rtt_us as u64 / 2))
    });
    // BENCH_PG_TCP=1: over TCP on loopback rather than the cluster's unix socket.
    let tcp = std::env::var("BENCH_PG_TCP").is_ok_and(|v| !v.is_empty() && v != "0");
    let create = || {
        let db = cluster.create_db();
        match proxy {
            Some(port) => via_port(&db, port),
            None if tcp => via_port(&db, cluster.port),
            None => db,
        }
    };
    let data = Some(cluster.data_dir());
    let pg1 = run_case(
        "PostgreSQL, 1 receiver",
        Some(create()),
        data.as_deref(),
        1,
        clients,
        per,
        profile,
    );
    let pg2 = run_case(
        "PostgreSQL, 2 receivers",
        Some(create()),
        data.as_deref(),
        2,
        clients,
        per,
        profile,
    );
    for (name, r) in [("1 receiver", pg1), ("2 receivers", pg2)] {
        println!(
            "PostgreSQL ({name}) vs SQLite: {:+.1} % ({r:.0} vs {sqlite:.0} registrations/s)",
            (r / sqlite - 1.0) * 100.0
        );
    }
}

// The child is returned to the caller, which stops and waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_serve(d: &std::path::Path, ready: &std::path::Path) -> (std::process::Child, String) {
    let _ = std::fs::remove_file(ready);
    let mut server = Command::new(receiver_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(ready)
        .arg("--dir")
        .arg(d)
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(ready) {
            if !s.is_empty() {
                return (server, s.trim().to_string());
            }
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            panic!("server not ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run: a fresh site (on `db` when given), `receivers` serve processes, `clients`
/// clients round-robin across them; prints and returns registrations/s, and the CPU each
/// party spent per registration (`pg_data`: the cluster to account for; `profile`: the
/// cluster whose statements to print, see BENCH_PG_STATS).
fn run_case(
    label: &str,
    db: Option<String>,
    pg_data: Option<&std::path::Path>,
    receivers: usize,
    clients: usize,
    per: usize,
    profile: Option<&pg::PgCluster>,
) -> f64 {
    let total = clients * per;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    if let Some(db) = &db {
        std::fs::write(d.join("receiver.toml"), format!("database_url = {db:?}\n"))
            .expect("receiver.toml");
    }
    admin(d, &["init", "--site", "bench"], None);
    admin(
        d,
        &[
            "user",
            "add",
            "auto",
            "--role",
            "agent_registration",
            "--password-stdin",
        ],
        Some("bench-pw\n"),
    );
    let mut yaml = String::from("hosts:\n");
    for i in 0..total {
        yaml.push_str(&format!("  - name: h{i}\n"));
    }
    std::fs::write(d.join("hosts.yml"), yaml).expect("write");
    let hosts = d.join("hosts.yml");
    admin(d, &["apply", hosts.to_str().expect("path")], None);

    let servers: Vec<(std::process::Child, String)> = (0..receivers)
        .map(|i| spawn_serve(d, &d.join(format!("ready{i}"))))
        .collect();
    let addrs: Vec<String> = servers.iter().map(|(_, a)| a.clone()).collect();

    // Prepare every request up front: key generation is the agent's cost, not the receiver's.
    let bodies: Vec<Vec<serde_json::Value>> = (0..clients)
        .map(|c| {
            (0..per)
                .map(|k| {
                    let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
                    let key = rcgen::KeyPair::generate().expect("key");
                    let mut p = rcgen::CertificateParams::default();
                    let mut dn = rcgen::DistinguishedName::new();
                    dn.push(rcgen::DnType::CommonName, uuid.clone());
                    p.distinguished_name = dn;
                    let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
                    serde_json::json!({"uuid": uuid, "csr": csr, "host_name": format!("h{}", c * per + k)})
                })
                .collect()
        })
        .collect();
    let ca = std::fs::read_to_string(d.join("ca/site-ca.pem")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.expect("cert")).expect("root");
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let urls: Vec<String> = (0..clients)
        .map(|c| {
            format!(
                "https://{}/bench/agent-receiver/register_existing",
                addrs[c % addrs.len()]
            )
        })
        .collect();
    let auth = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("auto:bench-pw")
        )
    };
    // Warm up: one TLS connection per client and the credential cache.
    let agents: Vec<ureq::Agent> = (0..clients)
        .map(|_| ureq::AgentBuilder::new().tls_config(tls.clone()).build())
        .collect();
    for (c, a) in agents.iter().enumerate() {
        let addr = &addrs[c % addrs.len()];
        let _ = a
            .get(&format!("https://{addr}/bench/check_mk/api/1.0/domain-types/internal/actions/discover-receiver/invoke"))
            .call();
    }
    let cpu = || {
        let rcv: f64 = servers.iter().map(|(c, _)| cpu_secs(c.id())).sum();
        let pg = pg_data.map(cluster_cpu_secs).unwrap_or(0.0);
        (rcv, pg, cpu_secs(std::process::id()))
    };
    if let Some(cluster) = profile {
        let mut c = cluster.client("postgres").expect("connect to postgres");
        c.batch_execute("SELECT pg_stat_statements_reset()")
            .expect("reset statistics");
    }
    let cpu0 = cpu();
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = agents
            .iter()
            .zip(bodies.iter())
            .zip(urls.iter())
            .map(|((a, bs), url)| {
                let auth = &auth;
                s.spawn(move || {
                    let mut v = Vec::with_capacity(bs.len());
                    for b in bs {
                        let t = Instant::now();
                        let r = a.post(url).set("Authorization", auth).send_json(b.clone());
                        match r {
                            Ok(resp) if resp.status() == 200 => {}
                            Ok(resp) => panic!("status {}", resp.status()),
                            Err(e) => panic!("{e}"),
                        }
                        v.push(t.elapsed());
                    }
                    v
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    let elapsed = start.elapsed();
    let cpu1 = cpu();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    for (mut server, _) in servers {
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
    }
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "receiver register_existing [{label}]: {total} registrations, {clients} clients, {receivers} receiver(s), {:.2} s: {rate:.0} registrations/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (durable commits)",
        elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3,
    );
    // What a registration costs each party: on a receiver host of its own (the database
    // elsewhere) the receiver's share is what bounds its rate.
    let per_reg = |a: f64, b: f64| (b - a) / total as f64 * 1e3;
    println!(
        "  CPU per registration: receiver(s) {:.3} ms, PostgreSQL {:.3} ms, clients {:.3} ms",
        per_reg(cpu0.0, cpu1.0),
        per_reg(cpu0.1, cpu1.1),
        per_reg(cpu0.2, cpu1.2),
    );
    if let Some(cluster) = profile {
        statement_profile(cluster, total);
    }
    rate
}

/// The statements PostgreSQL ran since the last reset, most time first: calls per
/// registration and execution time per call. Their sum beside the server's CPU per
/// registration tells execution from the cost of each statement's round through the protocol.
fn statement_profile(cluster: &pg::PgCluster, total: usize) {
    let mut c = cluster.client("postgres").expect("connect to postgres");
    let rows = c
        .query(
            "SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g')
             FROM pg_stat_statements WHERE calls > 0 ORDER BY total_exec_time DESC",
            &[],
        )
        .expect("pg_stat_statements");
    let (mut calls_all, mut ms_all) = (0i64, 0f64);
    for r in &rows {
        let (calls, ms, q): (i64, f64, String) = (r.get(0), r.get(1), r.get(2));
        calls_all += calls;
        ms_all += ms;
        println!(
            "  {:>6.2} calls/registration {:>7.1} µs/call  {}",
            calls as f64 / total as f64,
            ms * 1e3 / calls as f64,
            q.chars().take(100).collect::<String>()
        );
    }
    println!(
        "  all statements: {:.1} per registration, {:.3} ms execution per registration",
        calls_all as f64 / total as f64,
        ms_all / total as f64
    );
}

/// The connection string pointing at `127.0.0.1:port` instead of the cluster's socket.
fn via_port(conninfo: &str, port: u16) -> String {
    conninfo
        .split(' ')
        .map(|kv| {
            if kv.starts_with("host=") {
                "host=127.0.0.1".to_string()
            } else if kv.starts_with("port=") {
                format!("port={port}")
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TCP relay in front of PostgreSQL that holds every chunk for `one_way` in each
/// direction (a delay line: chunks keep their order and spacing), as a network to a database
/// host would. Returns the port it listens on; it runs until the bench exits.
fn delay_proxy(target: u16, one_way: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let relay = move |mut from: TcpStream, mut to: TcpStream| {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            for (at, chunk) in rx {
                let due = at + one_way;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(s) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let _ = (c.set_nodelay(true), s.set_nodelay(true));
            let (c2, s2) = (c.try_clone().expect("clone"), s.try_clone().expect("clone"));
            std::thread::spawn(move || relay(c, s));
            std::thread::spawn(move || relay(s2, c2));
        }
    });
    port
}
