//! Test harness: runs the real `tether-receiver` binary (init + serve on an ephemeral
//! loopback port) and talks to it over real HTTPS.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../support/postgres.rs"]
pub mod pg;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    pg::free_port()
}

/// The receiver's `/metrics` text on `port`.
pub fn scrape(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("scrape /metrics")
        .into_string()
        .expect("metrics text")
}

/// The value of the first sample line starting with `prefix` (0 when there is none).
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn receiver_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether-receiver")
}

pub struct TestReceiver {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub site: String,
    pub fingerprint: String,
    child: Option<Child>,
    extra_serve_args: Vec<String>,
}

impl TestReceiver {
    pub fn start(site: &str) -> TestReceiver {
        Self::start_with(site, &[])
    }

    /// Like `start`, with extra `serve` flags (limits, rate limits).
    pub fn start_with(site: &str, serve_args: &[&str]) -> TestReceiver {
        // The conformance run (TETHER_TEST_BACKEND=postgres) puts every site in a fresh
        // PostgreSQL database of a throwaway cluster.
        let db = pg::backend_is_postgres().then(|| pg::PgCluster::shared().create_db());
        Self::start_on(site, db.as_deref(), serve_args)
    }

    /// A site whose state lives in the PostgreSQL database `db` (a connection string) when
    /// given: `database_url` in the site's receiver.toml, so every command finds it.
    pub fn start_on(site: &str, db: Option<&str>, serve_args: &[&str]) -> TestReceiver {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(db) = db {
            std::fs::write(
                dir.path().join("receiver.toml"),
                format!("database_url = {db:?}\n"),
            )
            .expect("write receiver.toml");
        }
        let out = Command::new(receiver_bin())
            .args(["init", "--site", site, "--json", "--dir"])
            .arg(dir.path())
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("init json");
        validate_json("receiver.init.schema.json", &doc);
        let fingerprint = doc["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string();
        let mut r = TestReceiver {
            dir,
            addr: "127.0.0.1:1".parse().expect("addr"),
            site: site.to_string(),
            fingerprint,
            child: None,
            extra_serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn_server();
        r
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready")
    }

    /// Starts the stopped server again on the port it had (a site coming back).
    pub fn restart_same_port(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let listen = self.addr.to_string();
        self.spawn_server_on(&listen);
    }

    /// Starts the stopped server again, listening on `listen` (e.g. `[::]:0`).
    pub fn restart_on(&mut self, listen: &str) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn_server_on(listen);
    }

    fn spawn_server(&mut self) {
        self.spawn_server_on("127.0.0.1:0");
    }

    fn spawn_server_on(&mut self, listen: &str) {
        let _ = std::fs::remove_file(self.ready_file());
        let child = Command::new(receiver_bin())
            .args(["serve", "--listen", listen, "--ready-file"])
            .arg(self.ready_file())
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // TETHER_TEST_LOG=1 shows the server's log, for debugging a failing test.
            .stderr(if std::env::var_os("TETHER_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(self.ready_file()) {
                if let Ok(a) = s.trim().parse() {
                    self.addr = a;
                    return;
                }
            }
            assert!(Instant::now() < deadline, "receiver did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM and waits for it; returns whether it exited cleanly.
    /// SIGKILL: the receiver dies mid-whatever, with no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Another `serve` process on the same site directory (and so the same database): the
    /// second receiver of a site on PostgreSQL. Stopped when dropped.
    pub fn spawn_peer(&self) -> Peer {
        let ready = self.dir.path().join(format!(
            "ready-peer-{}",
            PEERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let child = Command::new(receiver_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TETHER_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn serve");
        let mut peer = Peer {
            child,
            addr: "127.0.0.1:1".parse().expect("addr"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(&ready) {
                if let Ok(a) = s.trim().parse() {
                    peer.addr = a;
                    return peer;
                }
            }
            assert!(
                Instant::now() < deadline,
                "peer receiver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `endpoint` on the receiver listening at `addr` (this one or a peer).
    pub fn url_at(&self, addr: SocketAddr, endpoint: &str) -> String {
        format!("https://{addr}/{}/agent-receiver/{endpoint}", self.site)
    }

    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "https://{}/{}/agent-receiver/{endpoint}",
            self.addr, self.site
        )
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(receiver_bin())
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .expect("run admin command")
    }

    pub fn admin_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(receiver_bin())
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn admin command");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("admin output")
    }

    /// Runs with --json and asserts success; returns the document.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--json");
        let out = self.admin(&a);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
        assert_eq!(doc["ok"], true, "{doc}");
        doc
    }

    /// Runs with --json, expects failure; returns (exit code, error document).
    pub fn admin_json_err(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--json");
        let out = self.admin(&a);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("json error output");
        validate_json("error.schema.json", &doc);
        (out.status.code().unwrap_or(-1), doc)
    }

    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        let out = self.admin_stdin(
            &[
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-stdin",
                "--json",
            ],
            &format!("{password}\n"),
        );
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        validate_json("receiver.change.schema.json", &doc);
    }

    pub fn add_host(&self, name: &str, extra: &[&str]) {
        let mut a = vec!["host", "add", name];
        a.extend_from_slice(extra);
        let doc = self.admin_json(&a);
        validate_json("receiver.change.schema.json", &doc);
    }

    pub fn site_ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca/site-ca.pem")).expect("site CA")
    }

    /// An HTTPS client trusting only the site CA, optionally with a client certificate.
    pub fn agent(&self, client: Option<(&str, &str)>) -> ureq::Agent {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.site_ca_pem().as_bytes()) {
            roots.add(c.expect("cert")).expect("add root");
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let cfg = match client {
            None => b.with_no_client_auth(),
            Some((cert, key)) => {
                let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_bytes())
                    .map(|c| c.expect("cert"))
                    .collect();
                let key = rustls_pemfile::private_key(&mut key.as_bytes())
                    .expect("key")
                    .expect("key");
                b.with_client_auth_cert(certs, key).expect("client auth")
            }
        };
        ureq::AgentBuilder::new()
            .tls_config(Arc::new(cfg))
            .timeout(Duration::from_secs(30))
            .build()
    }

    /// POSTs JSON with HTTP Basic auth (if given); returns (status, body as JSON or string).
    pub fn post(
        &self,
        agent: &ureq::Agent,
        endpoint: &str,
        auth: Option<(&str, &str)>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut req = agent.post(&self.url(endpoint));
        if let Some((u, p)) = auth {
            req = req.set("Authorization", &basic(u, p));
        }
        response(req.send_json(body.clone()))
    }

    pub fn register_existing(
        &self,
        user: &str,
        pw: &str,
        uuid: &str,
        host: &str,
    ) -> (u16, serde_json::Value, String) {
        let (csr, key) = make_csr(uuid);
        let (st, body) = self.post(
            &self.agent(None),
            "register_existing",
            Some((user, pw)),
            &serde_json::json!({"uuid": uuid, "csr": csr, "host_name": host}),
        );
        (st, body, key)
    }
}

static PEERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct Peer {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

pub fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// A CSR with subject CN = `cn` and a fresh ECDSA P-256 key: (csr PEM, key PEM).
pub fn make_csr(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key).expect("csr");
    (csr.pem().expect("pem"), key.serialize_pem())
}

/// Validates `doc` against `schemas/<schema_file>`; panics with the errors.
pub fn validate_json(schema_file: &str, doc: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(schema_file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("schema {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema json");
    let v = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:?}\n{doc}");
}
