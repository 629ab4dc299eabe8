//! The hand-off to Checkmk: the datasource command line from src/receiver/README.md, run
//! through the shell as Checkmk runs it, against a receiver that got its output from a real
//! `tether push`.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use agent::{receiver_with_hosts, Agent};
use daemon::{eventually, fixture};

/// The rule's command line exactly as the README gives it.
fn readme_command_line() -> String {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/receiver/README.md"),
    )
    .expect("README");
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tether-receiver agent-data $HOSTNAME$"))
        .expect("the Checkmk command line in src/receiver/README.md");
    line.to_string()
}

/// What Checkmk does: `$HOSTNAME$` replaced, the line run by the shell, the site found
/// through `TETHER_RECEIVER_DIR` from the site's environment, the binary on PATH.
fn checkmk_runs(rcv: &common::TestReceiver, host: &str) -> Output {
    let line = readme_command_line().replace("$HOSTNAME$", host);
    let bin_dir = Path::new(common::receiver_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .args(["-c", &line])
        .env("PATH", path)
        .env("TETHER_RECEIVER_DIR", rcv.dir.path())
        .env_remove("TETHER_RECEIVER_DATABASE")
        .output()
        .expect("run the datasource command")
}

/// Failed with `code`, nothing on stdout and exactly one line on stderr.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.ends_with('\n'));
    assert!(err.contains(needle), "{err}");
}

#[test]
fn checkmk_datasource_command_hands_over_fresh_output_only() {
    assert_eq!(
        readme_command_line(),
        "tether-receiver agent-data $HOSTNAME$ --raw"
    );
    let rcv = receiver_with_hosts("ck");
    rcv.add_host("p1", &["--mode", "push"]);
    let a = Agent::new();
    a.register(&rcv, "p1", "reg", &[])
        .ok("tether.register.schema.json");
    a.write_config(&format!(
        "[agent]\nfile = {:?}\n",
        fixture().display().to_string()
    ));
    let p = a.run(&["push", "--json"]).ok("tether.push.schema.json");
    assert_eq!(p["pushed"][0]["ok"], true, "{p}");

    // Byte for byte what the agent sent.
    let out = checkmk_runs(&rcv, "p1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read(fixture()).unwrap();
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "output differs from the agent's");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unknown host, a host without output (h1 was never pulled).
    assert_fails(&checkmk_runs(&rcv, "nosuchhost"), 5, "not on this");
    assert_fails(&checkmk_runs(&rcv, "h1"), 14, "no agent output");

    // A one-second interval: the output goes stale after 1.5 s.
    tether::receiver::store::tx(rcv.dir.path(), |c| {
        c.execute("UPDATE hosts SET pull_interval=1 WHERE name='p1'", [])?;
        Ok(())
    })
    .expect("set the interval");
    eventually(Duration::from_secs(10), "stale output", || {
        checkmk_runs(&rcv, "p1").status.code() == Some(18)
    });
    assert_fails(&checkmk_runs(&rcv, "p1"), 18, "stale");

    // A new push makes it fresh again.
    a.run(&["push", "--json"]).ok("tether.push.schema.json");
    let out = checkmk_runs(&rcv, "p1");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == want);

    // Without the site, still one line.
    let out = Command::new(common::receiver_bin())
        .args(["agent-data", "p1", "--raw"])
        .env_remove("TETHER_RECEIVER_DIR")
        .output()
        .unwrap();
    assert_fails(&out, 2, "--dir");
    // --raw and --json exclude each other.
    let out = Command::new(common::receiver_bin())
        .args(["agent-data", "p1", "--raw", "--json", "--dir"])
        .arg(rcv.dir.path())
        .output()
        .unwrap();
    assert_fails(&out, 2, "--raw");
}
