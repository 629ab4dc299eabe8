//! What a fetcher reads from an agent inside TLS: version, compression byte, payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::wire::compression::{self, Compression};
use tether::wire::pull;

/// Small, so hostile expansions hit the limit quickly.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = pull::decode(data, LIMIT) {
        assert!(out.len() <= LIMIT);
        assert!(out.starts_with(b"<<"));
    }
    // The same decompressors serve pushes, whose compression comes from a header.
    for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
        if let Ok(out) = compression::decompress(c, data, LIMIT) {
            assert!(out.len() <= LIMIT);
        }
    }
});
