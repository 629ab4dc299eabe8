//! JSON bodies of the agent-receiver API: requests the receiver reads (register_existing,
//! register_new, renew_certificate) with the checks applied to their fields, and the
//! answers the agent reads from a receiver.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::wire::api::*;
use tether::wire::{certs, validate};

fn check_uuid(s: &str) {
    if let Ok(u) = validate::parse_uuid_v4(s) {
        assert_eq!(u.hyphenated().to_string(), s);
        assert!(validate::looks_like_uuid(s));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<RegisterExistingRequest>(body) {
                check_uuid(&r.uuid);
                if validate::validate_host_name(&r.host_name).is_ok() {
                    assert!(!r.host_name.contains('/') && !r.host_name.contains(".."));
                }
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<RegisterNewRequest>(body) {
                check_uuid(&r.uuid);
                for v in r.agent_labels.values() {
                    let _ = validate::validate_host_name(v);
                }
            }
        }
        2 => {
            let _ = serde_json::from_slice::<RenewCertificateRequest>(body);
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<RegisterExistingResponse>(body) {
                let _ = certs::certs_from_pem(&r.root_cert);
                if let Ok(der) = certs::cert_from_pem(&r.agent_cert) {
                    let _ = certs::cert_info(&der);
                }
            }
        }
        4 => {
            let _ = serde_json::from_slice::<RegisterNewOngoingResponse>(body);
            let _ = serde_json::from_slice::<RegisterNewResponse>(body);
        }
        5 => {
            let _ = serde_json::from_slice::<RegistrationStatusV2Response>(body);
            let _ = serde_json::from_slice::<RegistrationStatusV1Response>(body);
        }
        6 => {
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
                let _ = e.detail_text();
            }
        }
        _ => {
            // Path segments and names the receiver and agent validate on their own.
            if let Ok(s) = std::str::from_utf8(body) {
                check_uuid(s);
                let _ = validate::validate_host_name(s);
                let _ = validate::validate_site_name(s);
                let _ = certs::parse_fingerprint(s);
                let _ = ConnectionMode::parse(s);
            }
        }
    }
});
