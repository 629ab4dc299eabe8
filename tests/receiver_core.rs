//! register_existing, registration_status_v2, renew_certificate, port discovery and the
//! §5 permission paths, against the real binary over real HTTPS.
mod common;

use common::*;
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

fn cert_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("one cert")
        .expect("cert")
        .to_vec()
}

#[test]
fn init_is_idempotent_and_fingerprint_matches() {
    let r = TestReceiver::start("idem");
    let again = r.admin_json(&["init", "--site", "idem"]);
    validate_json("receiver.init.schema.json", &again);
    assert_eq!(again["changed"], false);
    assert_eq!(again["fingerprint"], r.fingerprint.as_str());
    let fp = r.admin_json(&["fingerprint"]);
    validate_json("receiver.fingerprint.schema.json", &fp);
    assert_eq!(fp["fingerprint"], r.fingerprint.as_str());
    let (code, err) = r.admin_json_err(&["init", "--site", "other"]);
    assert_eq!(code, 7);
    assert_eq!(err["error"]["code"], "conflict");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["site-ca.key", "agent-ca.key", "server.key"] {
            let m = std::fs::metadata(r.dir.path().join("ca").join(k))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{k}");
        }
    }
}

#[test]
fn register_existing_status_renew_and_errors() {
    let mut r = TestReceiver::start("site1");
    r.add_user("auto", "agent_registration", "s3cret");
    r.add_user("plain", "user", "pw-plain");
    r.add_host("web1", &[]);
    r.add_host("remote1", &["--site", "othersite"]);
    r.add_host("clu1", &["--cluster"]);
    r.add_host("pushy", &["--mode", "push"]);

    // Port discovery.
    let (st, body) = response(
        r.agent(None)
            .get(&format!(
                "https://{}/site1/check_mk/api/1.0/domain-types/internal/actions/discover-receiver/invoke",
                r.server()
            ))
            .call(),
    );
    assert_eq!(st, 200);
    assert_eq!(body, json!(r.addr.port()));

    // Success.
    let uuid = new_uuid();
    let (st, body, key) = r.register_existing("auto", "s3cret", &uuid, "web1");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["connection_mode"], "pull-agent");
    assert_eq!(body["tether"]["fetcher_zstd"], true);
    assert_eq!(body["root_cert"].as_str().unwrap(), r.site_ca_pem());
    let agent_cert = body["agent_cert"].as_str().unwrap().to_string();
    let der = cert_der(&agent_cert);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        c.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        uuid
    );
    assert!(!c.is_ca());
    let san = c.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value.general_names).contains(&uuid));
    assert!(c.issuer().to_string().contains("agent signing CA"));

    // registration_status_v2 over mTLS.
    let mtls = r.agent(Some((&agent_cert, &key)));
    let (st, body) = response(
        mtls.get(&r.url(&format!("registration_status_v2/{uuid}")))
            .call(),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "Registered", "hostname": "web1", "connection_mode": "pull-agent"})
    );
    // Mismatched UUID in the URL.
    let other = new_uuid();
    let (st, body) = response(
        mtls.get(&r.url(&format!("registration_status_v2/{other}")))
            .call(),
    );
    assert_eq!(st, 400);
    assert_eq!(
        body["detail"],
        format!("Verified client UUID ({uuid}) does not match UUID in URL ({other})")
    );
    // No client certificate.
    let (st, _) = response(
        r.agent(None)
            .get(&r.url(&format!("registration_status_v2/{uuid}")))
            .call(),
    );
    assert_eq!(st, 400);

    // Renewal.
    let (csr2, key2) = make_csr(&uuid);
    let (st, body) = response(
        mtls.post(&r.url(&format!("renew_certificate/{uuid}")))
            .send_json(json!({"csr": csr2})),
    );
    assert_eq!(st, 200, "{body}");
    let renewed = body["agent_cert"].as_str().unwrap().to_string();
    let m2 = r.agent(Some((&renewed, &key2)));
    let (st, _) = response(
        m2.get(&r.url(&format!("registration_status_v2/{uuid}")))
            .call(),
    );
    assert_eq!(st, 200);
    // Renewal with a CSR for another UUID.
    let (bad_csr, _) = make_csr(&new_uuid());
    let (st, body) = response(
        m2.post(&r.url(&format!("renew_certificate/{uuid}")))
            .send_json(json!({"csr": bad_csr})),
    );
    assert_eq!(st, 400, "{body}");

    // Refusals, each with Checkmk's status and text.
    let (st, body, _) = r.register_existing("auto", "wrong", &new_uuid(), "web1");
    assert_eq!(st, 401, "{body}");
    let (st, body, _) = r.register_existing("nobody", "x", &new_uuid(), "web1");
    assert_eq!(st, 401, "{body}");
    let (st, body, _) = r.register_existing("auto", "s3cret", &new_uuid(), "missing");
    assert_eq!(
        (st, body["detail"].as_str().unwrap()),
        (404, "Host missing does not exist.")
    );
    let (st, body, _) = r.register_existing("auto", "s3cret", &new_uuid(), "remote1");
    assert_eq!(st, 405);
    assert!(
        body["detail"].as_str().unwrap().contains("othersite"),
        "{body}"
    );
    let (st, body, _) = r.register_existing("auto", "s3cret", &new_uuid(), "clu1");
    assert_eq!(st, 405);
    assert!(
        body["detail"].as_str().unwrap().contains("cluster"),
        "{body}"
    );
    // A user that is not a contact of the host.
    let (st, body, _) = r.register_existing("plain", "pw-plain", &new_uuid(), "web1");
    assert_eq!(st, 403, "{body}");

    // Bad inputs: CSR CN mismatch, non-v4 UUID, invalid JSON, path characters, oversize.
    let a = r.agent(None);
    let u = new_uuid();
    let (csr_other, _) = make_csr(&new_uuid());
    let (st, body) = r.post(
        &a,
        "register_existing",
        Some(("auto", "s3cret")),
        &json!({"uuid": u, "csr": csr_other, "host_name": "web1"}),
    );
    assert_eq!(st, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("UUID ({u}) does not match CN")),
        "{body}"
    );
    let (st, _) = r.post(&a, "register_existing", Some(("auto", "s3cret")),
        &json!({"uuid": u, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "host_name": "web1"}));
    assert_eq!(st, 400);
    let v1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let (csr_v1, _) = make_csr(v1);
    let (st, _) = r.post(
        &a,
        "register_existing",
        Some(("auto", "s3cret")),
        &json!({"uuid": v1, "csr": csr_v1, "host_name": "web1"}),
    );
    assert_eq!(st, 422);
    let (csr_u, _) = make_csr(&u);
    let (st, _) = r.post(
        &a,
        "register_existing",
        Some(("auto", "s3cret")),
        &json!({"uuid": u, "csr": csr_u, "host_name": "../etc/passwd"}),
    );
    assert_eq!(st, 400);
    let (st, body) = response(
        a.post(&r.url("register_existing"))
            .set("Authorization", &basic("auto", "s3cret"))
            .set("Content-Type", "application/json")
            .send_string("{not json"),
    );
    assert_eq!(st, 422, "{body}");
    let (st, _) = response(
        a.post(&r.url("register_existing"))
            .set("Authorization", &basic("auto", "s3cret"))
            .send_string(&"x".repeat(200_000)),
    );
    assert_eq!(st, 413);

    // None of the refusals registered anything: one live registration.
    let regs = r.admin_json(&["registrations", "list"]);
    validate_json("receiver.registrations.list.schema.json", &regs);
    assert_eq!(regs["registrations"].as_array().unwrap().len(), 1, "{regs}");
    let audit = r.admin_json(&["audit", "--limit", "1000"]);
    validate_json("receiver.audit.schema.json", &audit);
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["outcome"] == "registered" && e["host"] == "web1"));
    assert!(entries.iter().any(|e| e["outcome"] == "refused 404"));
    assert!(entries
        .iter()
        .any(|e| e["outcome"] == "refused 401" && e["actor"] == "auto"));

    // Graceful shutdown on SIGTERM.
    assert!(r.stop(), "serve did not exit cleanly on SIGTERM");
}

#[test]
fn permission_paths_for_existing_hosts() {
    let r = TestReceiver::start("perm");
    for g in ["ops", "dev"] {
        r.admin_json(&["group", "add", g]);
    }
    r.admin_json(&["folder", "add", "/linux", "--contact-group", "ops"]);
    r.admin_json(&["folder", "add", "/linux/web"]);
    r.add_host("inherit1", &["--folder", "/linux/web"]);
    r.add_host("direct1", &["--contact-group", "dev"]);
    r.add_host("other1", &[]);
    r.admin_json(&[
        "role",
        "add",
        "managed",
        "--permission",
        "agent_registration.register_managed_existing_host",
    ]);
    r.admin_json(&["role", "add", "rw", "--permission", "wato.edit_hosts"]);
    r.admin_json(&[
        "role",
        "add",
        "rwall",
        "--permission",
        "wato.edit_hosts",
        "--permission",
        "wato.all_folders",
    ]);
    r.admin_json(&[
        "role",
        "add",
        "readonly",
        "--permission",
        "wato.see_all_folders",
    ]);
    let add = |name: &str, role: &str, groups: &[&str]| {
        let mut a = vec![
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--json",
        ];
        for g in groups {
            a.push("--contact-group");
            a.push(g);
        }
        let out = r.admin_stdin(&a, "pw\n");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (args, schema) in [
        (&["role", "list"][..], "receiver.role.list.schema.json"),
        (
            &["role", "permissions"][..],
            "receiver.role.permissions.schema.json",
        ),
        (&["group", "list"][..], "receiver.group.list.schema.json"),
        (&["folder", "list"][..], "receiver.folder.list.schema.json"),
        (&["host", "list"][..], "receiver.host.list.schema.json"),
    ] {
        validate_json(schema, &r.admin_json(args));
    }
    // Built-in roles cannot be changed; unknown permissions are usage errors.
    let (code, _) = r.admin_json_err(&["role", "add", "admin"]);
    assert_eq!(code, 2);
    let (code, _) = r.admin_json_err(&["role", "add", "x", "--permission", "wato.everything"]);
    assert_eq!(code, 2);
    add("m_ops", "managed", &["ops"]);
    add("m_dev", "managed", &["dev"]);
    add("m_none", "managed", &[]);
    add("rw_ops", "rw", &["ops"]);
    add("rw_none", "rw", &[]);
    add("rwall", "rwall", &[]);
    add("ro", "readonly", &[]);
    add("adm", "admin", &[]);
    let cases = [
        ("m_ops", "inherit1", 200), // contact via folder inheritance
        ("m_dev", "direct1", 200),  // contact via host groups
        ("m_dev", "inherit1", 403),
        ("m_none", "other1", 403),
        ("rw_ops", "inherit1", 200), // folder write via contact group + edit_hosts
        ("rw_ops", "other1", 403),
        ("rw_none", "other1", 403),
        ("rwall", "other1", 200), // all folders + edit hosts
        ("ro", "other1", 403),    // read only
        ("adm", "other1", 200),
    ];
    for (user, host, want) in cases {
        // A fresh host registration each time would trip the identity lock; unregister first.
        r.admin_json(&["unregister", host]);
        let (st, body, _) = r.register_existing(user, "pw", &new_uuid(), host);
        assert_eq!(st, want, "{user} on {host}: {body}");
    }
}

/// Checkmk's own controller sends RSA CSRs (2048 or 4096 bits): those must work too.
#[test]
fn rsa_csr_like_cmk_agent_ctl() {
    use rsa::pkcs8::EncodePrivateKey;
    let r = TestReceiver::start("rsasite");
    r.add_user("auto", "agent_registration", "pw");
    r.add_host("rsa1", &[]);
    let uuid = new_uuid();
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let kp = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, uuid.clone());
    p.distinguished_name = dn;
    let csr = p.serialize_request(&kp).unwrap().pem().unwrap();
    let (st, body) = r.post(
        &r.agent(None),
        "register_existing",
        Some(("auto", "pw")),
        &json!({"uuid": uuid, "csr": csr, "host_name": "rsa1"}),
    );
    assert_eq!(st, 200, "{body}");
    let cert = body["agent_cert"].as_str().unwrap();
    let a = r.agent(Some((cert, pem.as_str())));
    let (st, body) = response(
        a.get(&r.url(&format!("registration_status_v2/{uuid}")))
            .call(),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "Registered");
}

/// Slow clients are cut off: a silent TCP peer by the handshake timeout, a trickling body by
/// the request deadline (408).
#[test]
fn slow_clients_time_out() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let r = TestReceiver::start_with(
        "slow",
        &[
            "--handshake-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--request-timeout",
            "1s",
        ],
    );
    r.add_user("auto", "agent_registration", "pw");
    let t = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut r.site_ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(r.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST /slow/agent-receiver/register_existing HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"uuid\":",
        basic("auto", "pw")
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}
