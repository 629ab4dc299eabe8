//! The `Authorization` header of registration requests: Basic (user, password) and
//! CMK-TOKEN (id or name, secret).
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tether::receiver::auth::{self, TokenRef};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((user, password)) = auth::parse_basic(header) {
        assert!(!user.contains(':'));
        // What a client sends for these credentials reads back the same.
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        assert_eq!(
            auth::parse_basic(&format!("Basic {b64}")),
            Some((user, password))
        );
    }
    if let Some((tref, secret)) = auth::parse_token(header) {
        assert!(!secret.is_empty());
        if let TokenRef::Name(n) = &tref {
            assert!(n.len() <= 64 && n.starts_with(|c: char| c.is_ascii_alphabetic()));
        }
        let _ = tref.to_string();
        let _ = auth::token_digest(&secret);
    }
});
