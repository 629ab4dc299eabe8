//! A real CONNECT proxy on loopback (tests/support/connect_proxy.py) that records where
//! every tunnel went.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ConnectProxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        Self::start_mapping(&[])
    }

    /// `maps`: (from, to) ports; a tunnel to `from` goes to `to` on the same host.
    pub fn start_mapping(maps: &[(u16, u16)]) -> ConnectProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/connect_proxy.py");
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--log")
            .arg(dir.path().join("connects.log"))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--max-seconds", "300"]);
        for (from, to) in maps {
            cmd.args(["--map", &format!("{from}={to}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 for the test proxy");
        let mut p = ConnectProxy {
            child,
            dir,
            port: 0,
        };
        let start = Instant::now();
        while p.port == 0 {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                p.port = text.trim().parse().expect("port in ready file");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("connects.log")
    }

    /// Every CONNECT target so far (`host:port`), oldest first.
    pub fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
