//! CSRs sent to register_existing, register_new and renew_certificate: the receiver's check
//! (`verify_csr`), then signing, as the receiver does for a CSR that passed.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tether::receiver::ca::{self, SiteKeys};

const UUID: &str = "1b4e28ba-2fa1-4d2b-883f-0016d3cca427";

fn keys() -> &'static SiteKeys {
    static KEYS: OnceLock<(tempfile::TempDir, SiteKeys)> = OnceLock::new();
    &KEYS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            ca::init(dir.path(), "fuzz", &["localhost".to_string()]).expect("site CA");
            let keys = SiteKeys::load(dir.path()).expect("site keys");
            (dir, keys)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Odd: the bytes are the DER of a CSR, wrapped in PEM here so mutations reach the ASN.1
    // parsers; even: the text as sent.
    let pem = if mode & 1 == 1 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    } else {
        match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        }
    };
    if let Ok(v) = ca::verify_csr(&pem, UUID) {
        let issued = keys()
            .sign_agent_cert(&v, UUID, 86400)
            .expect("a verified CSR can be signed");
        assert!(!issued.pem.is_empty());
    }
});
