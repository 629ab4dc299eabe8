//! Registration latency while the receiver is flooded, against the same without: the real
//! release binary on loopback with its default caps; each registration on a new TLS
//! connection from 127.0.0.1 (as an agent registers), one at a time. The flood: 2,000
//! idle connections with completed TLS handshakes from 127.0.0.2-9 (250 each, under the
//! per-address cap of 256), plus two threads opening silent connections from 127.0.0.10-11
//! as fast as they can (all but 256 per address refused before TLS; 32 of those in a
//! handshake, the rest waiting for a handshake slot).
//! Run: `cargo bench --bench flood_bench` (env BENCH_REGS, BENCH_FLOOD).
#[path = "../tests/support/raw_conn.rs"]
mod raw_conn;

mod support;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{admin, env_usize};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether-receiver")
}

struct Run {
    url: String,
    auth: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Run {
    /// `n` registrations of hosts `first..first+n`, each on its own connection: sorted latencies.
    fn register(&self, first: usize, n: usize) -> Vec<Duration> {
        let mut v: Vec<Duration> = (first..first + n)
            .map(|i| {
                let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
                let key = rcgen::KeyPair::generate().expect("key");
                let mut p = rcgen::CertificateParams::default();
                let mut dn = rcgen::DistinguishedName::new();
                dn.push(rcgen::DnType::CommonName, uuid.clone());
                p.distinguished_name = dn;
                let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
                let body =
                    serde_json::json!({"uuid": uuid, "csr": csr, "host_name": format!("h{i}")});
                let agent = ureq::AgentBuilder::new()
                    .tls_config(self.tls.clone())
                    .timeout(Duration::from_secs(30))
                    .build();
                let t = Instant::now();
                let r = agent
                    .post(&self.url)
                    .set("Authorization", &self.auth)
                    .send_json(body);
                match r {
                    Ok(resp) if resp.status() == 200 => {}
                    Ok(resp) => panic!("status {}", resp.status()),
                    Err(e) => panic!("{e}"),
                }
                t.elapsed()
            })
            .collect();
        v.sort();
        v
    }
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    raw_conn::raise_nofile();
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let regs = env_usize("BENCH_REGS", if quick { 5 } else { 200 });
    let flood = env_usize("BENCH_FLOOD", if quick { 80 } else { 2000 });
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
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
    for i in 0..2 * regs + 1 {
        yaml.push_str(&format!("  - name: h{i}\n"));
    }
    std::fs::write(d.join("hosts.yml"), yaml).expect("write");
    admin(
        d,
        &["apply", d.join("hosts.yml").to_str().expect("path")],
        None,
    );
    let ready = d.join("ready");
    let mut server = Command::new(bin())
        // Idle flood connections stay for the whole run.
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--header-timeout",
            "600s",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--dir")
        .arg(d)
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: std::net::SocketAddr = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if let Ok(a) = s.trim().parse() {
                break a;
            }
        }
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    let ca = std::fs::read_to_string(d.join("ca/site-ca.pem")).expect("ca");
    let run = Run {
        url: format!("https://{addr}/bench/agent-receiver/register_existing"),
        auth: {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("auto:bench-pw")
            )
        },
        tls: raw_conn::tls_config(&ca),
    };
    // Warm the credential cache, then the quiet run.
    run.register(2 * regs, 1);
    let quiet = run.register(0, regs);

    let held: Vec<_> = (0..flood)
        .map(|i| {
            let from = format!("127.0.0.{}", 2 + i % 8).parse().expect("ip");
            raw_conn::tls_from(&run.tls, from, addr).expect("flood connection")
        })
        .collect();
    let stop = AtomicBool::new(false);
    let churned = AtomicUsize::new(0);
    let flooded = std::thread::scope(|s| {
        for k in 0..2 {
            let (stop, churned) = (&stop, &churned);
            s.spawn(move || {
                let from = format!("127.0.0.{}", 10 + k).parse().expect("ip");
                let mut open = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(c) = raw_conn::connect_from(from, addr) {
                        open.push_back(c);
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                    if open.len() > 64 {
                        open.pop_front();
                    }
                }
            });
        }
        let l = run.register(regs, regs);
        stop.store(true, Ordering::Relaxed);
        l
    });
    drop(held);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    println!(
        "registration, new connection each, {regs} per run: quiet p50 {:.2} ms p99 {:.2} ms; \
         flooded ({flood} idle TLS connections held, {} silent connections opened meanwhile) \
         p50 {:.2} ms p99 {:.2} ms; ratio p50 {:.2}, p99 {:.2}",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        churned.load(Ordering::Relaxed),
        pct(&flooded, 0.5),
        pct(&flooded, 0.99),
        pct(&flooded, 0.5) / pct(&quiet, 0.5),
        pct(&flooded, 0.99) / pct(&quiet, 0.99),
    );
}
