//! What operators see in their logs (no colour codes off a terminal, JSON lines on request,
//! from both binaries), and the receiver listening dual-stack.
#[path = "support/agent.rs"]
mod agent;
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::{receiver_with_hosts, Agent};
use common::{receiver_bin, TestReceiver};

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `register --trust-cert` against nothing: a warning (insecure trust) and an error.
fn failing_register(a: &Agent, extra: &[&str]) -> agent::Run {
    let server = format!("127.0.0.1:{}", dead_port());
    let mut args = vec![
        "register",
        "-s",
        &server,
        "-i",
        "s",
        "-H",
        "h1",
        "-U",
        "reg",
        "--trust-cert",
        "-vv",
    ];
    args.extend_from_slice(extra);
    a.run_with(&args, None, &[("TETHER_PASSWORD", "x")])
}

fn assert_json_lines(stderr: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    lines
}

#[test]
fn agent_logs_have_no_colour_codes_off_a_terminal() {
    let a = Agent::new();
    let out = failing_register(&a, &[]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(out.stderr.contains("WARN"), "{}", out.stderr);
    assert!(out.stderr.contains("error [network]"), "{}", out.stderr);
    assert!(!out.stderr.contains("\x1b["), "{:?}", out.stderr);
}

#[test]
fn agent_json_logs_are_one_object_per_line() {
    let a = Agent::new();
    let out = failing_register(&a, &["--log-format", "json"]);
    assert_eq!(out.code, 9);
    let lines = assert_json_lines(&out.stderr);
    assert!(lines.iter().any(|l| l["level"] == "WARN"), "{lines:?}");
    let err = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("the error as a JSON line");
    assert_eq!(err["error"]["code"], "network");

    // The same from tether.toml, and --json keeps stdout one document.
    a.write_config("log_format = \"json\"\n");
    let out = failing_register(&a, &["--json"]);
    assert_json_lines(&out.stderr);
    out.err("network", 9);
    // The flag wins over the file.
    let out = failing_register(&a, &["--log-format", "text"]);
    assert!(out.stderr.contains("error [network]"), "{}", out.stderr);
}

#[test]
fn in_the_journal_lines_carry_no_timestamps_of_their_own() {
    use std::os::unix::fs::MetadataExt;
    let a = Agent::new();
    let log = a.path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let server = format!("127.0.0.1:{}", dead_port());
    // systemd names the stream it connected to stderr in JOURNAL_STREAM (device:inode).
    let status = a
        .command(&[
            "register",
            "-s",
            &server,
            "-i",
            "s",
            "-H",
            "h1",
            "-U",
            "reg",
            "--trust-cert",
        ])
        .env("TETHER_PASSWORD", "x")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(9));
    let text = std::fs::read_to_string(&log).unwrap();
    let warn = text
        .lines()
        .find(|l| l.contains("WARN"))
        .expect("a warning");
    assert!(warn.trim_start().starts_with("WARN"), "{text}");
    assert!(!text.contains("\x1b["), "{text:?}");

    // Another stream than the one systemd named: timestamps as usual.
    let out = failing_register(&a, &[]);
    let warn = out.stderr.lines().find(|l| l.contains("WARN")).unwrap();
    assert!(warn.starts_with(|c: char| c.is_ascii_digit()), "{warn}");
}

/// Runs `tether-receiver serve` on `dir` with stderr piped until it is ready, stops it with
/// SIGTERM and returns what it logged.
fn serve_log(rcv: &mut TestReceiver, extra: &[&str]) -> String {
    assert!(rcv.stop());
    let ready = rcv.dir.path().join("log-test.ready");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(receiver_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--dir")
        .arg(rcv.dir.path())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    err
}

#[test]
fn receiver_logs_plain_or_json() {
    let mut rcv = TestReceiver::start("lg1");
    let text = serve_log(&mut rcv, &[]);
    assert!(text.contains("listening on"), "{text}");
    assert!(!text.contains("\x1b["), "{text:?}");

    let json = serve_log(&mut rcv, &["--log-format", "json"]);
    let lines = assert_json_lines(&json);
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().starts_with("listening on")),
        "{lines:?}"
    );

    // Errors of commands are JSON lines too (here: a directory never initialised).
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(receiver_bin())
        .args(["--log-format", "json", "fingerprint", "--dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = assert_json_lines(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines[0]["level"], "ERROR");
}

#[test]
fn receiver_listens_dual_stack() {
    let mut rcv = receiver_with_hosts("ds1");
    assert!(rcv.stop());
    rcv.restart_on("[::]:0");
    assert!(
        rcv.addr.ip().is_unspecified() && rcv.addr.is_ipv6(),
        "{}",
        rcv.addr
    );
    let port = rcv.addr.port();
    let a = Agent::new();
    for server in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        a.run(&[
            "probe",
            "--json",
            "-s",
            &server,
            "-i",
            &rcv.site,
            "--trust-fingerprint",
            &rcv.fingerprint,
        ])
        .ok("tether.probe.schema.json");
    }
    // The default is the same: [::]:8000.
    let help = Command::new(receiver_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[default: [::]:8000]"));
}
