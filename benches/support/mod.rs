//! What the receiver benchmarks share: reading their knobs and running admin commands of
//! the real `tether-receiver`.
#![allow(dead_code)]
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const RECEIVER: &str = env!("CARGO_BIN_EXE_tether-receiver");

/// The receiver under test: this build, or `BENCH_RECEIVER_BIN` (another build, e.g. the
/// previous version, to compare in the same window).
pub fn receiver_bin() -> String {
    std::env::var("BENCH_RECEIVER_BIN").unwrap_or_else(|_| RECEIVER.to_string())
}

/// A numeric knob from the environment (`BENCH_…`), else its default.
pub fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Runs `tether-receiver ARGS --dir DIR` with `stdin` fed in, and insists on success.
pub fn admin(dir: &Path, args: &[&str], stdin: Option<&str>) {
    let mut c = Command::new(receiver_bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    if let (Some(s), Some(mut i)) = (stdin, c.stdin.take()) {
        i.write_all(s.as_bytes()).expect("stdin");
    }
    assert!(c.wait().expect("wait").success(), "{args:?}");
}

/// A server process of the benchmark and where it listens; killed when dropped, so a
/// failing benchmark leaves nothing running.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
