//! `tether import`: a tether connection bundle, a Checkmk registered_connections.json, or
//! one Checkmk connection; every connection is validated (UUID, names, certificates, key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::controller::bundle;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(conns) = bundle::parse_import(text, "fuzzhost") {
        for c in conns {
            assert!(bundle::validate_connection(&c).is_ok());
            let _ = c.server_address();
        }
    }
});
