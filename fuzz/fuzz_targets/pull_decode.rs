//! What a fetcher reads from an agent inside TLS: version, compression byte, payload.
//! The receiver validates frames with `pull::check` / `compression::measure` (nothing kept)
//! and hands the stored payload to Checkmk later through `decompress`: both must agree on
//! every input, or a frame accepted at the pull would fail at the hand-off.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::wire::compression::{self, Compression};
use tether::wire::pull;

/// Small, so hostile expansions hit the limit quickly.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let decoded = pull::decode(data, LIMIT);
    if let Ok(out) = &decoded {
        assert!(out.len() <= LIMIT);
        assert!(out.starts_with(b"<<"));
    }
    match (&decoded, pull::check(data, LIMIT)) {
        (Ok(out), Ok((_, _, len))) => assert_eq!(out.len(), len),
        (Err(_), Err(_)) => {}
        (d, c) => panic!(
            "decode and check disagree: {:?} vs {:?}",
            d.as_ref().map(|o| o.len()),
            c.map(|x| x.2)
        ),
    }
    // The same decompressors serve pushes, whose compression comes from a header.
    for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
        let full = compression::decompress(c, data, LIMIT);
        if let Ok(out) = &full {
            assert!(out.len() <= LIMIT);
        }
        match (full, compression::measure(c, data, LIMIT, b"<<")) {
            (Ok(out), Ok(m)) => {
                assert_eq!(out.len(), m.len);
                assert_eq!(out.starts_with(b"<<"), m.has_prefix);
            }
            (Err(_), Err(_)) => {}
            (f, m) => panic!(
                "decompress and measure disagree on {c:?}: {:?} vs {m:?}",
                f.map(|o| o.len())
            ),
        }
    }
});
