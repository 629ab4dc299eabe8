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

/// The fields of `/proc/PID/stat` after the command name (index 0 is the state), or
/// None when the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The sum of the given `stat_fields` (clock ticks), in seconds; 0 when the process is gone.
fn stat_secs(pid: u32, fields: [usize; 2]) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let t = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(fields[0]) + t(fields[1])) / 100.0
}

/// utime + stime of a process (all its threads), in seconds; 0 when it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_secs(pid, [11, 12])
}

/// CPU seconds of a PostgreSQL cluster: its postmaster (found by the data directory on its
/// command line) and every live child (backends, WAL writer, checkpointer, …). Children
/// that exited count once the postmaster reaps them (its cutime/cstime).
pub fn cluster_cpu_secs(data_dir: &Path) -> f64 {
    let want = data_dir.to_string_lossy().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The server process itself (not the shell that started it, whose command line holds
    // the same directory).
    let Some(master) = pids.iter().copied().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres")
            && std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
    }) else {
        return 0.0;
    };
    let master_s = master.to_string();
    let children: f64 = pids
        .iter()
        .filter(|p| stat_fields(**p).is_some_and(|f| f.get(1) == Some(&master_s)))
        .map(|p| cpu_secs(*p))
        .sum();
    stat_secs(master, [13, 14]) + cpu_secs(master) + children
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
