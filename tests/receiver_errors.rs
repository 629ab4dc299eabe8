//! Error cases of each endpoint that the flow tests do not reach: malformed authorization,
//! client certificates from elsewhere or never issued, bad bodies on register_new, missing
//! compression header, revoked tokens.
mod common;

use common::*;
use serde_json::json;

/// A certificate for `uuid` signed by the receiver's own agent CA but never recorded.
fn forged_cert(r: &TestReceiver, uuid: &str) -> (String, String) {
    let ca_key = std::fs::read_to_string(r.dir.path().join("ca/agent-ca.key")).unwrap();
    let ca_pem = std::fs::read_to_string(r.dir.path().join("ca/agent-ca.pem")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![uuid.to_string()]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, uuid);
    p.distinguished_name = dn;
    (
        p.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

#[test]
fn endpoint_error_cases() {
    let r = TestReceiver::start("errs");
    r.add_user("reg", "agent_registration", "pw");
    r.add_user("other", "agent_registration", "pw2");
    r.add_host("h1", &["--mode", "push"]);
    let a = r.agent(None);

    // register_existing_token: missing or malformed header, revoked token.
    let uuid = new_uuid();
    let (csr, _) = make_csr(&uuid);
    let body = json!({"uuid": uuid, "csr": csr, "host_name": "h1"});
    let (st, _) = r.post(&a, "register_existing_token", None, &body);
    assert_eq!(st, 401);
    let (st, _) = response(
        a.post(&r.url("register_existing_token"))
            .set("Authorization", "CMK-TOKEN not-a-token")
            .send_json(body.clone()),
    );
    assert_eq!(st, 401);
    let t = r.admin_json(&["token", "create", "--host", "h1"]);
    let id = t["id"].as_i64().unwrap().to_string();
    let rv = r.admin_json(&["token", "revoke", &id]);
    validate_json("receiver.change.schema.json", &rv);
    let (st, body_r) = response(
        a.post(&r.url("register_existing_token"))
            .set(
                "Authorization",
                &format!("CMK-TOKEN {}", t["token"].as_str().unwrap()),
            )
            .send_json(body.clone()),
    );
    assert_eq!(st, 401);
    assert!(body_r["detail"].as_str().unwrap().contains("revoked"));
    // A token for an unknown host cannot be created.
    let (code, _) = r.admin_json_err(&["token", "create", "--host", "nope"]);
    assert_eq!(code, 5);

    // register_new: no auth, invalid JSON, non-v4 UUID, CSR mismatch.
    let (st, _) = r.post(&a, "register_new", None, &json!({}));
    assert_eq!(st, 401);
    let (st, _) = response(
        a.post(&r.url("register_new"))
            .set("Authorization", &basic("reg", "pw"))
            .send_string("[1,2"),
    );
    assert_eq!(st, 422);
    let (st, _) = r.post(
        &a,
        "register_new",
        Some(("reg", "pw")),
        &json!({"uuid": "x", "csr": csr, "agent_labels": {}}),
    );
    assert_eq!(st, 422);
    let (st, b) = r.post(
        &a,
        "register_new",
        Some(("reg", "pw")),
        &json!({"uuid": new_uuid(), "csr": csr, "agent_labels": {}}),
    );
    assert_eq!(st, 400, "{b}");
    // register_new_ongoing: wrong password, bad UUID.
    let (st, _) = response(
        a.post(&r.url(&format!("register_new_ongoing/{}", new_uuid())))
            .set("Authorization", &basic("reg", "bad"))
            .call(),
    );
    assert_eq!(st, 401);
    let (st, _) = response(
        a.post(&r.url("register_new_ongoing/..%2f..%2fetc"))
            .set("Authorization", &basic("reg", "pw"))
            .call(),
    );
    assert_eq!(st, 422);

    // A certificate signed by our agent CA but never issued here is refused (400).
    let u = new_uuid();
    let (cert, key) = forged_cert(&r, &u);
    let forged = r.agent(Some((&cert, &key)));
    let (st, b) = response(
        forged
            .get(&r.url(&format!("registration_status_v2/{u}")))
            .call(),
    );
    assert_eq!(st, 400, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("unknown"));

    // A certificate from another site's agent CA fails the TLS handshake.
    let other = TestReceiver::start("elsewhere");
    other.add_user("reg", "agent_registration", "pw");
    other.add_host("x", &[]);
    let ou = new_uuid();
    let (st, ob, okey) = other.register_existing("reg", "pw", &ou, "x");
    assert_eq!(st, 200);
    let foreign = r.agent(Some((ob["agent_cert"].as_str().unwrap(), &okey)));
    assert!(foreign
        .get(&r.url(&format!("registration_status_v2/{ou}")))
        .call()
        .is_err());

    // agent_data: missing compression header, missing file part.
    let hu = new_uuid();
    let (st, hb, hkey) = r.register_existing("reg", "pw", &hu, "h1");
    assert_eq!(st, 200);
    let m = r.agent(Some((hb["agent_cert"].as_str().unwrap(), &hkey)));
    let mp = tether::wire::multipart::agent_data_body(b"x");
    let (st, b) = response(
        m.post(&r.url(&format!("agent_data/{hu}")))
            .set("Content-Type", &mp.content_type)
            .send_bytes(&mp.body),
    );
    assert_eq!(st, 400, "{b}");
    let (st, b) = response(
        m.post(&r.url(&format!("agent_data/{hu}")))
            .set("compression", "zlib")
            .set("Content-Type", "multipart/form-data; boundary=xyz")
            .send_string("--xyz--\r\n"),
    );
    assert_eq!(st, 400, "{b}");
    // Renewal by someone else's certificate for this UUID: 400 mismatch.
    let (csr2, _) = make_csr(&hu);
    let (st, _) = response(
        forged
            .post(&r.url(&format!("renew_certificate/{hu}")))
            .send_json(json!({"csr": csr2})),
    );
    assert_eq!(st, 400);

    // Unknown paths: JSON 404.
    let (st, b) = response(
        a.get(&format!(
            "https://{}/errs/agent-receiver/nothing",
            r.server()
        ))
        .call(),
    );
    assert_eq!(st, 404);
    assert_eq!(b["detail"], "Not Found");
    // Nothing above registered anything beyond the one good registration.
    let regs = r.admin_json(&["registrations", "list"]);
    assert_eq!(regs["registrations"].as_array().unwrap().len(), 1);
}
