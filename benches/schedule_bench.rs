//! Scheduled pulls per second a receiver sustains: release binaries on loopback, one real
//! `tether daemon` serving a simulated fleet (BENCH_HOSTS registered connections, each a
//! host with its own UUID and certificate, the 100 KB fixture as output), every host due
//! each second so demand exceeds what the receivers can do; SQLite and PostgreSQL, one and
//! two receivers. Counts come from each receiver's own /metrics (pulls by outcome).
//! Run: `cargo bench --bench schedule_bench [-- sqlite|postgres]` (env BENCH_HOSTS,
//! BENCH_SECS, BENCH_CONCURRENCY, BENCH_RECEIVERS=1,2; BENCH_RECEIVER_BIN and
//! BENCH_TETHER_BIN run other builds, e.g. the previous version in the same window).
//! Prints figures; asserts nothing.
#[path = "../tests/support/fleet.rs"]
mod fleet;
#[path = "../tests/support/postgres.rs"]
mod pg;

mod support;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{admin, cpu_secs, env_usize, receiver_bin, Proc};

/// The daemon under test: this build, or `BENCH_TETHER_BIN`.
fn tether_bin() -> String {
    std::env::var("BENCH_TETHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").into())
}
const PW: &str = "bench-Registration-pw";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-output-linux.txt")
}

fn wait_ready(ready: &Path, child: Child) -> Proc {
    let mut p = Proc {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(ready) {
            if let Some(a) = s.lines().next().and_then(|l| l.trim().parse().ok()) {
                p.addr = a;
                return p;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    let ready = dir.join(format!("ready-{name}"));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(receiver_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .env("TETHER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    wait_ready(&ready, child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// (ok pulls, failed pulls) so far, from a receiver's /metrics.
fn pulls(port: u16) -> (f64, f64) {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("scrape")
        .into_string()
        .expect("text");
    let mut ok = 0.0;
    let mut failed = 0.0;
    for l in text
        .lines()
        .filter(|l| l.starts_with("tether_receiver_pulls_total{"))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if l.contains("outcome=\"ok\"") {
            ok += v;
        } else {
            failed += v;
        }
    }
    (ok, failed)
}

struct Site {
    dir: tempfile::TempDir,
    registrar: Proc,
    daemon: Proc,
    _home: tempfile::TempDir,
}

fn site(backend: &str, hosts: usize) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    if backend == "postgres" {
        let db = pg::PgCluster::shared().create_db();
        std::fs::write(d.join("receiver.toml"), format!("database_url = {db:?}\n")).unwrap();
    }
    admin(d, &["init", "--site", "bench"], None);
    admin(
        d,
        &[
            "user",
            "add",
            "reg",
            "--role",
            "agent_registration",
            "--password-stdin",
        ],
        Some(&format!("{PW}\n")),
    );
    let names: Vec<String> = (0..hosts).map(|i| format!("h{i:05}")).collect();
    let yaml = |port: Option<u16>| {
        let mut y = String::from("site:\n  pull_interval: 1s\nhosts:\n");
        for n in &names {
            y.push_str(&format!("  - name: {n}\n"));
            if let Some(p) = port {
                y.push_str(&format!("    address: 127.0.0.1\n    agent_port: {p}\n"));
            }
        }
        y
    };
    let file = d.join("fleet.yaml");
    std::fs::write(&file, yaml(None)).unwrap();
    admin(d, &["apply", file.to_str().unwrap()], None);
    // Registrations only; the measured receivers are started later.
    let registrar = serve(d, "registrar", &["--no-scheduler"]);
    let ca = std::fs::read_to_string(d.join("ca/site-ca.pem")).unwrap();
    let t = Instant::now();
    let conns = fleet::register_fleet(registrar.addr, "bench", &ca, "reg", PW, &names, 8);
    eprintln!(
        "registered {hosts} hosts in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let home = tempfile::tempdir().unwrap();
    fleet::write_registry(home.path(), "bench", registrar.addr, &ca, &conns);
    std::fs::write(
        home.path().join("tether.toml"),
        fleet::daemon_config(&fixture()),
    )
    .unwrap();
    let ready = home.path().join("ready");
    let child = Command::new(tether_bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("TETHER_HOME", home.path())
        .env("TETHER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn daemon");
    let daemon = wait_ready(&ready, child);
    std::fs::write(&file, yaml(Some(daemon.addr.port()))).unwrap();
    admin(d, &["apply", file.to_str().unwrap()], None);
    Site {
        dir,
        registrar,
        daemon,
        _home: home,
    }
}

fn run(s: &Site, backend: &str, receivers: usize, secs: u64, concurrency: usize, hosts: usize) {
    let ports: Vec<u16> = (0..receivers).map(|_| free_port()).collect();
    let conc = concurrency.to_string();
    let procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serve(
                s.dir.path(),
                &format!("sched{i}"),
                &[
                    "--metrics-listen",
                    &format!("127.0.0.1:{p}"),
                    "--pull-concurrency",
                    &conc,
                    "--pull-timeout",
                    "10s",
                ],
            )
        })
        .collect();
    // The first pulls are spread over one interval; then every host is overdue all along.
    // Measure once every host has been pulled since the start: a host's first pull is a full
    // handshake, the later ones resume its TLS session, and the fleet is at the later ones.
    let warm = Instant::now();
    while ports.iter().map(|p| pulls(*p).0).sum::<f64>() < hosts as f64
        && warm.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<(f64, f64)> = ports.iter().map(|p| pulls(*p)).collect();
    let cpu0: Vec<f64> = procs.iter().map(|p| cpu_secs(p.child.id())).collect();
    let dcpu0 = cpu_secs(s.daemon.child.id());
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let el = t.elapsed().as_secs_f64();
    let after: Vec<(f64, f64)> = ports.iter().map(|p| pulls(*p)).collect();
    let cpu: Vec<f64> = procs
        .iter()
        .zip(&cpu0)
        .map(|(p, c)| cpu_secs(p.child.id()) - c)
        .collect();
    let dcpu = cpu_secs(s.daemon.child.id()) - dcpu0;
    let mut total = 0.0;
    let mut parts = Vec::new();
    for i in 0..receivers {
        let ok = (after[i].0 - before[i].0) / el;
        let failed = (after[i].1 - before[i].1) / el;
        total += ok;
        parts.push(format!(
            "r{i} {ok:.0}/s (failed {failed:.0}/s, CPU {:.0}%)",
            cpu[i] / el * 100.0
        ));
    }
    println!(
        "{backend:<8} receivers={receivers}  pulls/s total {total:>6.0}  per receiver {:>6.0}  [{}]  daemon CPU {:.0}%",
        total / receivers as f64,
        parts.join(", "),
        dcpu / el * 100.0
    );
    drop(procs);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let hosts = env_usize("BENCH_HOSTS", if quick { 20 } else { 5000 });
    let secs = env_usize("BENCH_SECS", if quick { 2 } else { 10 }) as u64;
    let conc = env_usize("BENCH_CONCURRENCY", 64);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a == "sqlite" || a == "postgres")
        .collect();
    let backends: Vec<&str> = if !wanted.is_empty() {
        wanted.iter().map(|s| s.as_str()).collect()
    } else if quick || pg::pg_bin_dir().is_none() {
        vec!["sqlite"]
    } else {
        vec!["sqlite", "postgres"]
    };
    println!(
        "== scheduled pulls: {hosts} hosts due every second, one daemon, 100 KB fixture, \
         --pull-concurrency {conc}, {secs} s windows"
    );
    for b in backends {
        let s = site(b, hosts);
        let counts: Vec<usize> = std::env::var("BENCH_RECEIVERS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 2]);
        for receivers in counts {
            run(&s, b, receivers, secs, conc, hosts);
        }
        drop(s.registrar);
    }
}
