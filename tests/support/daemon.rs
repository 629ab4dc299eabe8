//! Starts the real `tether daemon` and pulls from it.
#![allow(dead_code)]
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::agent::Agent;

/// A real Linux agent output (~100 KB), kept in the repository.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-output-linux.txt")
}

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// `tether daemon` on 127.0.0.1 (ephemeral port), with `config` as its tether.toml.
    pub fn start(agent: &Agent, config: &str, args: &[&str]) -> Daemon {
        Self::start_on(agent, config, "127.0.0.1:0", args)
    }

    /// Like `start`, listening on `listen` (e.g. `[::]:0` for dual-stack).
    pub fn start_on(agent: &Agent, config: &str, listen: &str, args: &[&str]) -> Daemon {
        agent.write_config(config);
        let ready = agent.path("daemon.ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = agent.command(&[
            "daemon",
            "--listen",
            listen,
            "--ready-file",
            ready.to_str().unwrap(),
        ]);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Owned by a Daemon at once, so a timeout below still kills it.
        let mut d = Daemon {
            child: cmd.spawn().expect("spawn daemon"),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Some(line) = text.lines().next() {
                    d.addr = line.parse().expect("address in ready file");
                    return d;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// SIGTERM, and the daemon must exit on its own.
    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and returns what arrives before the server closes or `wait` passes.
pub fn raw_read(addr: SocketAddr, wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

/// Pull with Python's ssl (OpenSSL). Returns the client's JSON line.
pub fn python_pull(port: u16, sni: &str, cert: &Path, key: &Path, ca: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pull_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--sni", sni])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--ca")
        .arg(ca)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "pull client said {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until `f` holds, polling; panics with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
