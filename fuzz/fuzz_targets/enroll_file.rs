//! A drop-in `enroll.toml` (or `enroll.d/*.toml`), parsed, with the fields that are read
//! without touching the file system or the network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::controller::client;
use tether::controller::enroll::EnrollFile;
use tether::controller::keys::KeyType;
use tether::wire::{certs, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = EnrollFile::parse_str(text) else {
        return;
    };
    assert!(f.trust_fingerprint.is_some() != f.root_ca.is_some());
    let _ = client::split_host_port(&f.server);
    let _ = validate::validate_site_name(&f.site);
    if let Some(fp) = &f.trust_fingerprint {
        let _ = certs::parse_fingerprint(fp);
    }
    if let Some(k) = &f.key_type {
        let _ = KeyType::parse(k);
    }
    if let Some(h) = &f.host_name {
        let _ = validate::validate_host_name(h);
    }
});
