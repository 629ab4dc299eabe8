//! Agent data: push ingest over mTLS, and pulls by the fetcher from a TLS agent on loopback.
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use common::*;
use tether::wire::compression::{compress, Compression};
use tether::wire::{multipart, pull};

const OUTPUT: &[u8] = b"<<<check_mk>>>\nVersion: 2.3.0\nAgentOS: linux\n<<<uptime>>>\n12345\n";

fn push(
    agent: &ureq::Agent,
    r: &TestReceiver,
    uuid: &str,
    comp: &str,
    payload: &[u8],
) -> (u16, serde_json::Value) {
    let mp = multipart::agent_data_body(payload);
    response(
        agent
            .post(&r.url(&format!("agent_data/{uuid}")))
            .set("compression", comp)
            .set("Content-Type", &mp.content_type)
            .send_bytes(&mp.body),
    )
}

#[test]
fn push_ingest() {
    let r = TestReceiver::start_with("push", &["--max-output-bytes", "100000"]);
    r.add_user("reg", "agent_registration", "pw");
    r.add_host("p1", &["--mode", "push"]);
    r.add_host("pull1", &[]);
    let u = new_uuid();
    let (st, body, key) = r.register_existing("reg", "pw", &u, "p1");
    assert_eq!(st, 200);
    assert_eq!(body["connection_mode"], "push-agent");
    let a = r.agent(Some((body["agent_cert"].as_str().unwrap(), &key)));

    let (st, body) = push(&a, &r, &u, "zlib", &compress(Compression::Zlib, OUTPUT));
    assert_eq!(st, 204, "{body}");
    let d = r.admin_json(&["agent-data", "p1"]);
    validate_json("receiver.agent-data.schema.json", &d);
    assert_eq!(d["output"].as_str().unwrap().as_bytes(), OUTPUT);
    assert_eq!(d["via"], "push");
    assert!(d["age_secs"].as_i64().unwrap() <= 5);

    let (st, _) = push(
        &a,
        &r,
        &u,
        "zstd",
        &compress(Compression::Zstd, b"<<<check_mk>>>\nzstd\n"),
    );
    assert_eq!(st, 204);
    let d = r.admin_json(&["agent-data", "p1"]);
    assert_eq!(d["output"], "<<<check_mk>>>\nzstd\n");

    let (st, body) = push(&a, &r, &u, "gzip", OUTPUT);
    assert_eq!(st, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Unsupported compression"),
        "{body}"
    );
    let (st, body) = push(&a, &r, &u, "zlib", b"definitely not zlib");
    assert_eq!(st, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Decompression of agent data failed"),
        "{body}"
    );
    let bomb = compress(Compression::Zlib, &vec![b'<'; 1_000_000]);
    let (st, _) = push(&a, &r, &u, "zlib", &bomb);
    assert_eq!(st, 413);
    // The refused pushes left the last good output in place.
    let d = r.admin_json(&["agent-data", "p1"]);
    assert_eq!(d["output"], "<<<check_mk>>>\nzstd\n");

    // A pull host may not push.
    let u2 = new_uuid();
    let (_, body, key2) = r.register_existing("reg", "pw", &u2, "pull1");
    let a2 = r.agent(Some((body["agent_cert"].as_str().unwrap(), &key2)));
    let (st, _) = push(&a2, &r, &u2, "zlib", &compress(Compression::Zlib, OUTPUT));
    assert_eq!(st, 403);
    // Another agent's UUID in the path.
    let (st, _) = push(&a2, &r, &u, "zlib", &compress(Compression::Zlib, OUTPUT));
    assert_eq!(st, 400);
    // Unregistered: 400 (revoked certificate).
    r.admin_json(&["unregister", "p1"]);
    let (st, _) = push(&a, &r, &u, "zlib", &compress(Compression::Zlib, OUTPUT));
    assert_eq!(st, 400);
    let (code, _) = r.admin_json_err(&["agent-data", "nosuchhost"]);
    assert_eq!(code, 14);
}

/// A minimal pull agent: `16`, then TLS as server with the agent certificate, requiring the
/// site certificate as client certificate; sends `frame` and closes.
fn spawn_agent(
    cert_pem: &str,
    key_pem: &str,
    site_ca_pem: &str,
    frame: Option<Vec<u8>>,
    conns: usize,
) -> u16 {
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut site_ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut s, _)) = l.accept() else { return };
            match &frame {
                None => {
                    // Legacy plaintext agent.
                    let _ = s.write_all(OUTPUT);
                }
                Some(frame) => {
                    let _ = s.write_all(pull::TLS_MARKER);
                    let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, s);
                    if tls.write_all(frame).is_ok() {
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                        let mut sink = [0u8; 64];
                        let _ = tls.read(&mut sink);
                    }
                }
            }
        }
    });
    port
}

#[test]
fn fetch_pulls_over_tls_and_refuses_plaintext() {
    let r = TestReceiver::start("fetch");
    r.add_user("reg", "agent_registration", "pw");
    let ca = r.site_ca_pem();
    let mut ports = Vec::new();
    for (i, comp) in [Compression::Zlib, Compression::Zstd, Compression::None]
        .into_iter()
        .enumerate()
    {
        let host = format!("a{i}");
        r.add_host(&host, &[]);
        let u = new_uuid();
        let (st, body, key) = r.register_existing("reg", "pw", &u, &host);
        assert_eq!(st, 200);
        let port = spawn_agent(
            body["agent_cert"].as_str().unwrap(),
            &key,
            &ca,
            Some(pull::encode(comp, OUTPUT)),
            2,
        );
        r.add_host(
            &host,
            &["--address", "127.0.0.1", "--agent-port", &port.to_string()],
        );
        ports.push(port);
    }
    let one = r.admin_json(&["fetch", "a0"]);
    validate_json("receiver.fetch.schema.json", &one);
    assert_eq!(one["succeeded"], 1);
    let d = r.admin_json(&["agent-data", "a0"]);
    assert_eq!(d["via"], "pull");
    assert_eq!(d["output"].as_str().unwrap().as_bytes(), OUTPUT);
    let all = r.admin_json(&["fetch", "--all", "--concurrency", "3"]);
    validate_json("receiver.fetch.schema.json", &all);
    assert_eq!(all["succeeded"], 3, "{all}");

    // Plaintext from a registered host is refused.
    r.add_host("plain", &[]);
    let u = new_uuid();
    let (_, body, key) = r.register_existing("reg", "pw", &u, "plain");
    let port = spawn_agent(body["agent_cert"].as_str().unwrap(), &key, &ca, None, 1);
    r.add_host(
        "plain",
        &["--address", "127.0.0.1", "--agent-port", &port.to_string()],
    );
    let (code, err) = r.admin_json_err(&["fetch", "plain"]);
    assert_eq!(code, 9);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plaintext"),
        "{err}"
    );

    // An unregistered host: refused by default, pulled as legacy plaintext when allowed.
    let lport = spawn_agent(body["agent_cert"].as_str().unwrap(), &key, &ca, None, 1);
    r.add_host(
        "legacy",
        &["--address", "127.0.0.1", "--agent-port", &lport.to_string()],
    );
    let (code, _) = r.admin_json_err(&["fetch", "legacy"]);
    assert_eq!(code, 14);
    let legacy = r.admin_json(&["fetch", "legacy", "--allow-plaintext"]);
    assert_eq!(legacy["succeeded"], 1, "{legacy}");
    let d = r.admin_json(&["agent-data", "legacy"]);
    assert_eq!(d["output"].as_str().unwrap().as_bytes(), OUTPUT);

    // An agent presenting a certificate for another UUID fails verification.
    r.add_host("imposter", &[]);
    let u2 = new_uuid();
    r.register_existing("reg", "pw", &u2, "imposter");
    let (_, body, key) = r.register_existing("reg", "pw", &new_uuid(), "spare-missing");
    let _ = (body, key);
    let (_, b3, k3) = {
        r.add_host("donor", &[]);
        r.register_existing("reg", "pw", &new_uuid(), "donor")
    };
    let port = spawn_agent(
        b3["agent_cert"].as_str().unwrap(),
        &k3,
        &ca,
        Some(pull::encode(Compression::Zlib, OUTPUT)),
        1,
    );
    r.add_host(
        "imposter",
        &["--address", "127.0.0.1", "--agent-port", &port.to_string()],
    );
    let (code, _) = r.admin_json_err(&["fetch", "imposter"]);
    assert_eq!(code, 9);
}

/// Audit entries from refused registrations (unknown host names): one row each.
fn refusals(r: &TestReceiver, n: usize) {
    let a = r.agent(None);
    for i in 0..n {
        let u = new_uuid();
        let (csr, _) = make_csr(&u);
        let (st, _) = r.post(
            &a,
            "register_existing",
            Some(("reg", "pw")),
            &serde_json::json!({"uuid": u, "csr": csr, "host_name": format!("nosuch{i}")}),
        );
        assert_eq!(st, 404);
    }
}

fn audit_ids(r: &TestReceiver) -> Vec<i64> {
    let v = r.admin_json(&["audit", "--limit", "100000"]);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn audit_retention_by_rows_at_serve_start_and_by_age_on_demand() {
    let mut r = TestReceiver::start_with("audit", &["--audit-max-rows", "5"]);
    r.add_user("reg", "agent_registration", "pw");
    refusals(&r, 12);
    let before = audit_ids(&r);
    assert!(before.len() >= 12, "{before:?}");
    // serve prunes at start (and hourly): the newest five stay.
    assert!(r.stop());
    r.restart_same_port();
    let mut after = audit_ids(&r);
    for _ in 0..100 {
        if after.len() <= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = audit_ids(&r);
    }
    assert_eq!(after, before[before.len() - 5..].to_vec());

    // On demand, by age: what is older than 1 s goes, a newer row stays.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refusals(&r, 1);
    let v = r.admin_json(&[
        "audit",
        "prune",
        "--audit-max-age",
        "1s",
        "--audit-max-rows",
        "0",
    ]);
    validate_json("receiver.audit-prune.schema.json", &v);
    assert_eq!(v["deleted_by_age"], 5, "{v}");
    assert_eq!(v["deleted_by_rows"], 0, "{v}");
    assert_eq!(v["remaining"], 1, "{v}");
    assert_eq!(audit_ids(&r).len(), 1);
    // Nothing left outside the retention: a second prune deletes nothing.
    let v = r.admin_json(&["audit", "prune", "--audit-max-age", "1h"]);
    assert_eq!(
        (v["deleted_by_age"].as_i64(), v["remaining"].as_i64()),
        (Some(0), Some(1))
    );
}
