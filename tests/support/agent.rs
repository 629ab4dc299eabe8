//! Runs the real `tether` binary against a real receiver (tests/common).
#![allow(dead_code)]
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::common::{validate_json, TestReceiver};

pub const PASSWORD: &str = "s3cret-Registration-pw";

pub fn tether_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

pub const PROXY_VARS: &[&str] = &[
    "TETHER_PROXY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    /// Asserts success and validates the document against `schema`.
    pub fn ok(&self, schema: &str) -> Value {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let v = self.json();
        assert_eq!(v["ok"], true);
        validate_json(schema, &v);
        v
    }
    /// Asserts failure with `code` and the documented exit code; validates the error document.
    pub fn err(&self, code: &str, exit: i32) -> Value {
        let v = self.json();
        validate_json("error.schema.json", &v);
        assert_eq!(v["ok"], false);
        assert_eq!(
            v["error"]["code"], code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert_eq!(self.code, exit, "exit code for {code}");
        v
    }
}

pub struct Agent {
    pub home: tempfile::TempDir,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    pub fn new() -> Agent {
        Agent {
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tether_bin());
        c.args(args)
            .env("TETHER_HOME", self.home.path())
            .env_remove("TETHER_PASSWORD")
            .env_remove("TETHER_TOKEN")
            .env_remove("TETHER_CONFIG");
        // The machine's proxy settings must not leak into tests; proxy tests set their own.
        for v in PROXY_VARS {
            c.env_remove(v);
        }
        c
    }

    pub fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tether");
        if let Some(input) = stdin {
            // A command that fails before reading stdin closes it: not the test's concern.
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("wait tether");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, &[])
    }

    /// `tether register --json` with a pinned fingerprint and the password on stdin.
    pub fn register(&self, rcv: &TestReceiver, host: &str, user: &str, extra: &[&str]) -> Run {
        let server = rcv.server();
        let mut args = vec![
            "register",
            "--json",
            "-s",
            &server,
            "-i",
            &rcv.site,
            "-H",
            host,
            "-U",
            user,
            "--password-stdin",
            "--trust-fingerprint",
            &rcv.fingerprint,
        ];
        args.extend_from_slice(extra);
        self.run_with(&args, Some(&format!("{PASSWORD}\n")), &[])
    }

    pub fn registry(&self) -> Value {
        let text =
            std::fs::read_to_string(self.path("registry.json")).unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).expect("registry is JSON")
    }

    pub fn connections(&self) -> Vec<Value> {
        self.registry()["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.path("tether.toml"), toml).unwrap();
    }
}

/// A receiver with a registration-only user `reg` and hosts `h1`..`h3`.
pub fn receiver_with_hosts(site: &str) -> TestReceiver {
    let rcv = TestReceiver::start(site);
    rcv.add_user("reg", "agent_registration", PASSWORD);
    for h in ["h1", "h2", "h3"] {
        rcv.add_host(h, &[]);
    }
    rcv
}
