//! Agent-side benchmarks (release): `cargo bench --bench tether_bench [-- SECTION...]`.
//! Sections: compression, register, status, pull, pull-load, fetch. Prints figures; asserts
//! nothing. `pull` reports the daemon's CPU per pull as a ratio to a minimal rustls server
//! (the floor) measured in the same run, since absolute figures drift ~2x between days on
//! shared machines.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::wire::compression::{self, Compression};
use tether::wire::{certs, pull};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
mod support;
use support::{admin, cpu_secs, Proc as Daemon, RECEIVER};
const PASSWORD: &str = "bench-password-123";

fn fixture() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-output-linux.txt");
    std::fs::read(p).expect("tests/fixtures/agent-output-linux.txt")
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-output-linux.txt")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<44} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  min {:>8.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        ms[0]
    );
}

fn compression_bench() {
    println!("== compression of the 100 KB fixture (per operation)");
    let data = fixture();
    for (name, c) in [
        ("zlib level 1", Compression::Zlib),
        ("zstd level 3", Compression::Zstd),
    ] {
        let n = 300;
        let t = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            out = compression::compress(c, &data);
        }
        let comp_ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            compression::decompress(c, &out, 1 << 24).unwrap();
        }
        let de_ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!(
            "{name:<14} {} -> {} bytes (ratio {:.2})  compress {comp_ms:.3} ms  decompress {de_ms:.3} ms",
            data.len(),
            out.len(),
            data.len() as f64 / out.len() as f64
        );
    }
    // Checkmk's controller uses zlib's default level (6).
    let t = Instant::now();
    let mut len = 0;
    for _ in 0..100 {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        len = e.finish().unwrap().len();
    }
    println!(
        "zlib level 6   {} -> {len} bytes  compress {:.3} ms (Checkmk's setting)",
        data.len(),
        t.elapsed().as_secs_f64() * 10.0
    );
}

struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    fingerprint: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rcv_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(RECEIVER)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn start_receiver(site: &str, hosts: usize) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let out = rcv_cmd(dir.path(), &["init", "--site", site, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("init --json");
    let fingerprint = v["fingerprint"].as_str().unwrap().to_string();
    admin(
        dir.path(),
        &[
            "user",
            "add",
            "reg",
            "--role",
            "agent_registration",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    for i in 0..hosts {
        assert!(rcv_cmd(dir.path(), &["host", "add", &format!("h{i}")])
            .status
            .success());
    }
    let ready = dir.path().join("ready");
    let child = Command::new(RECEIVER)
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let addr = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if !s.trim().is_empty() {
                break s.trim().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    };
    Receiver {
        child,
        dir,
        addr,
        fingerprint,
    }
}

fn register(rcv: &Receiver, home: &Path, host: &str, key: &str) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let out = Command::new(TETHER)
        .args([
            "register",
            "--json",
            "-s",
            &rcv.addr,
            "-i",
            "bench",
            "-H",
            host,
            "-U",
            "reg",
            "--trust-fingerprint",
            &rcv.fingerprint,
            "--key-type",
            key,
        ])
        .env("TETHER_HOME", home)
        .env("TETHER_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let el = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        v["ok"],
        true,
        "register failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (el, v)
}

fn register_bench() {
    println!("== tether register wall time (spawn to exit, loopback, pinned fingerprint)");
    let rcv = start_receiver("bench", 64);
    for (key, n) in [("ec", 30), ("rsa2048", 10), ("rsa4096", 8)] {
        let mut ms = Vec::new();
        for i in 0..n {
            let home = tempfile::tempdir().unwrap();
            let (el, _) = register(&rcv, home.path(), &format!("h{i}"), key);
            ms.push(el.as_secs_f64() * 1000.0);
            // Unregister so the next run with this host name is not refused by the identity lock.
            rcv_cmd(rcv.dir.path(), &["unregister", &format!("h{i}")]);
        }
        summary(
            &format!("register --key-type {key} (key generated inline)"),
            ms,
        );
    }
    // As on a host where the package ran `tether keys refill` at install, or the daemon
    // keeps a spare key: the RSA key already exists when `register` starts.
    for key in ["rsa2048", "rsa4096"] {
        let mut ms = Vec::new();
        for i in 0..8 {
            let home = tempfile::tempdir().unwrap();
            let refill = Command::new(TETHER)
                .args(["keys", "refill", "--key-type", key])
                .env("TETHER_HOME", home.path())
                .status()
                .unwrap();
            assert!(refill.success());
            let (el, _) = register(&rcv, home.path(), &format!("h{}", 50 + i), key);
            ms.push(el.as_secs_f64() * 1000.0);
            rcv_cmd(rcv.dir.path(), &["unregister", &format!("h{}", 50 + i)]);
        }
        summary(&format!("register --key-type {key} (spare key ready)"), ms);
    }
    let home = tempfile::tempdir().unwrap();
    register(&rcv, home.path(), "h40", "ec");
    let mut ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(TETHER)
            .args([
                "register",
                "--json",
                "-s",
                &rcv.addr,
                "-i",
                "bench",
                "-H",
                "h40",
                "-U",
                "reg",
                "--trust-fingerprint",
                &rcv.fingerprint,
            ])
            .env("TETHER_HOME", home.path())
            .env("TETHER_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"changed\": false"));
    }
    summary("register again (changed: false, remote check)", ms);
}

fn status_bench() {
    println!("== tether status --json --no-query-remote");
    let rcv = start_receiver("bench", 1);
    let home = tempfile::tempdir().unwrap();
    register(&rcv, home.path(), "h0", "ec");
    let mut ms = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let out = Command::new(TETHER)
            .args(["status", "--json", "--no-query-remote"])
            .env("TETHER_HOME", home.path())
            .output()
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
    }
    summary("status --json --no-query-remote", ms);
}

fn start_daemon(home: &Path, extra: &str) -> Daemon {
    start_daemon_bin(Path::new(TETHER), home, extra)
}

fn start_daemon_bin(bin: &Path, home: &Path, extra: &str) -> Daemon {
    std::fs::write(
        home.join("tether.toml"),
        format!(
            "[agent]\nfile = {:?}\n[pull]\nmax_connections_per_ip = 1024\n{extra}\n",
            fixture_path().display().to_string()
        ),
    )
    .unwrap();
    let ready = home.join("ready");
    let mut cmd = Command::new(bin);
    cmd.args(["daemon", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("TETHER_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Owned by a Daemon at once, so a timeout below still kills it.
    let mut d = Daemon {
        child: cmd.spawn().unwrap(),
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if let Some(l) = s.lines().next() {
                d.addr = l.parse().unwrap();
                return d;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A site-side client: the receiver's server certificate as client certificate, the
/// agent certificate verified against the agent-signing CA with name = UUID.
/// `resume`: reuse TLS sessions. Checkmk's fetcher does a full handshake per pull, so the
/// headline figures are without resumption.
fn site_client(rcv_dir: &Path, resume: bool) -> Arc<rustls::ClientConfig> {
    let read = |n: &str| std::fs::read_to_string(rcv_dir.join("ca").join(n)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certs::cert_from_pem(&read("agent-ca.pem")).unwrap())
        .unwrap();
    let chain = certs::certs_from_pem(&read("server.pem")).unwrap();
    let key = certs::key_from_pem(&read("server.key")).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(tether::wire::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

fn pull_once(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, uuid: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(&m, b"16");
    let name = rustls::pki_types::ServerName::try_from(uuid.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = Vec::with_capacity(64 << 10);
    tls.read_to_end(&mut buf).unwrap();
    pull::decode(&buf, 1 << 24).unwrap().len()
}

/// argv[1] that turns this binary into the floor server (see `floor`).
const FLOOR_ARG: &str = "__pull-floor";

/// The floor: the least a pull can cost with the daemon's TLS stack. It does what the
/// daemon's pull does on the wire (`16`, TLS 1.3 with the certificate chosen by SNI, the
/// client certificate verified against the connection's site CA, the precompressed frame,
/// close_notify) and nothing else: no registry, no agent source, no cache, no runtime,
/// no session tickets (each pull is a full handshake, so tickets are never used).
mod floor {
    use std::collections::HashMap;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;

    use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
    use rustls::sign::CertifiedKey;
    use tether::wire::{certs, tls};

    /// The daemon's certificate choice: by SNI, none for an unknown name.
    #[derive(Debug)]
    struct BySni(HashMap<String, Arc<CertifiedKey>>);

    impl ResolvesServerCert for BySni {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            hello.server_name().and_then(|n| self.0.get(n)).cloned()
        }
    }

    /// `args`: UUID, agent certificate PEM, agent key PEM, site CA PEM, frame file.
    /// Prints the bound address, then serves until killed.
    pub fn serve(args: &[String]) {
        let read = |p: &String| std::fs::read_to_string(p).unwrap();
        let provider = tls::provider();
        let ck = CertifiedKey::from_der(
            certs::certs_from_pem(&read(&args[1])).unwrap(),
            certs::key_from_pem(&read(&args[2])).unwrap(),
            &provider,
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for r in certs::certs_from_pem(&read(&args[3])).unwrap() {
            roots.add(r).unwrap();
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(BySni(HashMap::from([(
                args[0].clone(),
                Arc::new(ck),
            )]))));
        cfg.send_tls13_tickets = 0;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let cfg = Arc::new(cfg);
        let frame: Arc<[u8]> = std::fs::read(&args[4]).unwrap().into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        println!("{}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        // A few threads blocked in accept: concurrency without a runtime.
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (l, cfg, frame) = (listener.try_clone().unwrap(), cfg.clone(), frame.clone());
                std::thread::spawn(move || loop {
                    if let Ok((s, _)) = l.accept() {
                        let _ = pull(s, &cfg, &frame);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
    }

    fn pull(
        mut sock: TcpStream,
        cfg: &Arc<rustls::ServerConfig>,
        frame: &[u8],
    ) -> std::io::Result<()> {
        sock.set_nodelay(true)?;
        sock.write_all(b"16")?;
        let conn = rustls::ServerConnection::new(cfg.clone()).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        tls.write_all(frame)?;
        tls.conn.send_close_notify();
        tls.flush()?;
        tls.sock.shutdown(Shutdown::Write)
    }
}

struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_floor(args: &[&Path]) -> Floor {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(FLOOR_ARG)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Floor {
        child,
        addr: line.trim().parse().expect("floor address"),
    }
}

/// One pull with the rustls client; returns the decrypted stream (frame) undecoded.
fn pull_raw(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, uuid: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(&m, b"16");
    let name = rustls::pki_types::ServerName::try_from(uuid.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = Vec::with_capacity(64 << 10);
    tls.read_to_end(&mut buf).unwrap();
    buf
}

#[derive(Clone, Copy)]
enum PullClient {
    Rustls,
    OpenSsl,
}

impl PullClient {
    fn label(self) -> &'static str {
        match self {
            PullClient::Rustls => "rustls client",
            PullClient::OpenSsl => "OpenSSL client",
        }
    }
}

/// Pulls from `addr` one after another for `secs`, full handshake each; returns the count.
fn pull_for(
    client: PullClient,
    addr: SocketAddr,
    uuid: &str,
    site: &Path,
    rustls_cfg: &Arc<rustls::ClientConfig>,
    frame_len: usize,
    secs: f64,
) -> u64 {
    match client {
        PullClient::Rustls => {
            let t = Instant::now();
            let mut n = 0;
            while t.elapsed().as_secs_f64() < secs {
                assert_eq!(pull_raw(addr, rustls_cfg, uuid).len(), frame_len);
                n += 1;
            }
            n
        }
        PullClient::OpenSsl => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pull_client.py");
            let out = Command::new("python3")
                .arg(script)
                .args(["--port", &addr.port().to_string(), "--sni", uuid])
                .arg("--cert")
                .arg(site.join("server.pem"))
                .arg("--key")
                .arg(site.join("server.key"))
                .arg("--ca")
                .arg(site.join("agent-ca.pem"))
                .args(["--seconds", &secs.to_string()])
                .output()
                .expect("python3");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert_eq!(
                v["ok"],
                true,
                "OpenSSL client: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(v["wire_bytes"].as_u64(), Some(frame_len as u64));
            v["pulls"].as_u64().unwrap()
        }
    }
}

/// Waits until `pid` has used no CPU for half a second (at most 60 s).
fn settle(pid: u32) {
    let start = Instant::now();
    let mut last = cpu_secs(pid);
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_secs(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Daemon CPU per pull divided by the floor's, both measured in this run by alternating
/// windows, per client (rustls, OpenSSL via Python) and key type.
/// `TETHER_BENCH_BASELINE=/path/to/tether` adds another build's daemon (say, the previous
/// commit's) as a third server in the same windows, for a before/after in one run.
fn pull_ratio_bench() {
    let secs: f64 = std::env::var("TETHER_BENCH_PULL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rounds = 4;
    println!("== daemon CPU per pull ÷ floor CPU per pull (release, loopback, zlib frame of the 100 KB fixture, full handshake per pull, one client at a time)");
    println!("   floor: minimal rustls server in its own process, same certificates, same client-certificate check, same bytes");
    println!("   {rounds} alternating windows of {secs} s per server and client; CPU = utime+stime from /proc/PID/stat");
    let rcv = start_receiver("bench", 2);
    let site = rcv.dir.path().join("ca");
    let rustls_cfg = site_client(rcv.dir.path(), false);
    let work = tempfile::tempdir().unwrap();
    let frame = pull::encode(Compression::Zlib, &fixture());
    let frame_path = work.path().join("frame");
    std::fs::write(&frame_path, &frame).unwrap();
    for (i, (key, label)) in [("ec", "EC P-256"), ("rsa4096", "RSA-4096")]
        .into_iter()
        .enumerate()
    {
        let home = tempfile::tempdir().unwrap();
        let (_, v) = register(&rcv, home.path(), &format!("h{i}"), key);
        let uuid = v["connection"]["uuid"].as_str().unwrap().to_string();
        // A Checkmk site: zlib (and Python has no zstd module anyway).
        let p = home.path().join("registry.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"fetcher_zstd\": true", "\"fetcher_zstd\": false");
        std::fs::write(&p, &text).unwrap();
        let reg: serde_json::Value = serde_json::from_str(&text).unwrap();
        let conn = &reg["connections"][0];
        let file = |name: &str, field: &str| {
            let path = work.path().join(format!("{key}-{name}"));
            std::fs::write(&path, conn[field].as_str().unwrap()).unwrap();
            path
        };
        let (cert, pkey, root) = (
            file("cert.pem", "agent_cert"),
            file("key.pem", "private_key"),
            file("root.pem", "root_cert"),
        );
        let d = start_daemon(home.path(), "");
        let f = start_floor(&[Path::new(&uuid), &cert, &pkey, &root, &frame_path]);
        let baseline = std::env::var_os("TETHER_BENCH_BASELINE").map(|bin| {
            let home2 = tempfile::tempdir().unwrap();
            std::fs::copy(
                home.path().join("registry.json"),
                home2.path().join("registry.json"),
            )
            .unwrap();
            (start_daemon_bin(Path::new(&bin), home2.path(), ""), home2)
        });
        // The daemon generates a spare RSA key at start (seconds of CPU): measure after it.
        settle(d.child.id());
        // Both serve the very same bytes.
        assert_eq!(pull_raw(d.addr, &rustls_cfg, &uuid), frame);
        assert_eq!(pull_raw(f.addr, &rustls_cfg, &uuid), frame);
        let mut servers = vec![(d.child.id(), d.addr), (f.child.id(), f.addr)];
        if let Some((b, _)) = &baseline {
            settle(b.child.id());
            assert_eq!(pull_raw(b.addr, &rustls_cfg, &uuid), frame);
            servers.push((b.child.id(), b.addr));
        }
        for client in [PullClient::Rustls, PullClient::OpenSsl] {
            // [daemon, floor, baseline]: (CPU seconds, pulls)
            let mut tot = [(0.0f64, 0u64); 3];
            for r in 0..rounds {
                let mut order: Vec<usize> = (0..servers.len()).collect();
                order.rotate_left(r % servers.len());
                for s in order {
                    let (pid, addr) = servers[s];
                    let cpu0 = cpu_secs(pid);
                    let n = pull_for(client, addr, &uuid, &site, &rustls_cfg, frame.len(), secs);
                    tot[s].0 += cpu_secs(pid) - cpu0;
                    tot[s].1 += n;
                }
            }
            let per = |(cpu, n): (f64, u64)| cpu * 1000.0 / n as f64;
            let (dm, fm) = (per(tot[0]), per(tot[1]));
            println!(
                "{label:<9} {:<15} daemon ÷ floor {:>5.2}   (daemon {dm:.3} ms/pull over {} pulls, floor {fm:.3} ms/pull over {} pulls)",
                client.label(),
                dm / fm,
                tot[0].1,
                tot[1].1
            );
            if baseline.is_some() {
                let bm = per(tot[2]);
                println!(
                    "{label:<9} {:<15} baseline ÷ floor {:>5.2}   (baseline daemon {bm:.3} ms/pull over {} pulls)",
                    client.label(),
                    bm / fm,
                    tot[2].1
                );
            }
        }
    }
}

fn pull_load_bench() {
    println!(
        "== pulls from one daemon (release, loopback, 100 KB fixture, client on the same 2 cores)"
    );
    let rcv = start_receiver("bench", 4);
    let full = site_client(rcv.dir.path(), false);
    let resumed = site_client(rcv.dir.path(), true);
    for (i, (key, label, zstd)) in [
        ("ec", "EC P-256", true),
        ("ec", "EC P-256", false),
        ("rsa4096", "RSA-4096", false),
    ]
    .into_iter()
    .enumerate()
    {
        let home = tempfile::tempdir().unwrap();
        let (_, v) = register(&rcv, home.path(), &format!("h{i}"), key);
        let uuid = v["connection"]["uuid"].as_str().unwrap().to_string();
        if !zstd {
            // Pretend the site were Checkmk: zlib only.
            let p = home.path().join("registry.json");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("\"fetcher_zstd\": true", "\"fetcher_zstd\": false");
            std::fs::write(&p, text).unwrap();
        }
        let d = start_daemon(home.path(), "");
        let pid = d.child.id();
        settle(pid);
        let idle = rss_kb(pid, "VmRSS:");
        let comp = if zstd { "zstd" } else { "zlib" };
        for (threads, resume) in [(1usize, false), (4, false), (4, true)] {
            let cfg = if resume {
                resumed.clone()
            } else {
                full.clone()
            };
            pull_once(d.addr, &cfg, &uuid);
            let count = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let cpu0 = cpu_secs(pid);
            let t = Instant::now();
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (count, stop, cfg, uuid, addr) = (
                        count.clone(),
                        stop.clone(),
                        cfg.clone(),
                        uuid.clone(),
                        d.addr,
                    );
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            pull_once(addr, &cfg, &uuid);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(4));
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.join().unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let n = count.load(Ordering::Relaxed) as f64;
            let cpu = cpu_secs(pid) - cpu0;
            println!(
                "{label:<9} {comp}  {threads} client thread(s){}: {:>7.0} pulls/s  daemon CPU {:.3} ms/pull",
                if resume { ", TLS resumption" } else { "" },
                n / secs,
                cpu * 1000.0 / n
            );
        }
        println!(
            "{label:<9} {comp}  daemon RSS idle {} KB, peak {} KB",
            idle,
            rss_kb(pid, "VmHWM:")
        );
    }
}

fn fetch_bench() {
    println!("== tether-receiver fetch --all against many daemons");
    let n = 24;
    let rcv = start_receiver("bench", n);
    let mut daemons = Vec::new();
    let mut homes = Vec::new();
    for i in 0..n {
        let home = tempfile::tempdir().unwrap();
        register(&rcv, home.path(), &format!("h{i}"), "ec");
        let d = start_daemon(home.path(), "");
        rcv_cmd(
            rcv.dir.path(),
            &[
                "host",
                "add",
                &format!("h{i}"),
                "--address",
                "127.0.0.1",
                "--agent-port",
                &d.addr.port().to_string(),
            ],
        );
        daemons.push(d);
        homes.push(home);
    }
    for conc in [4, 16] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = rcv_cmd(
                rcv.dir.path(),
                &[
                    "fetch",
                    "--all",
                    "--concurrency",
                    &conc.to_string(),
                    "--json",
                ],
            );
            let el = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            rates.push(n as f64 / el);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("fetch --all --concurrency {conc:<3} {n} agents: {:.0} pulls/s (median of 3, including process start)", rates[1]);
    }
}

fn main() {
    // The floor server runs in its own process (this binary, re-executed), so its CPU is
    // read from /proc exactly as the daemon's is.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(FLOOR_ARG) {
        floor::serve(&argv[2..]);
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    if want("compression") {
        compression_bench();
    }
    if want("register") {
        register_bench();
    }
    if want("status") {
        status_bench();
    }
    if want("pull") {
        pull_ratio_bench();
    }
    if want("pull-load") {
        pull_load_bench();
    }
    if want("fetch") {
        fetch_bench();
    }
}
