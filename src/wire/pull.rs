//! Framing of the pull protocol on TCP 6556 (spec §3).
use super::compression::{self, Compression};
use super::WireError;

/// Written by the controller right after accept, before TLS.
pub const TLS_MARKER: &[u8; 2] = b"16";
pub const VERSION: [u8; 2] = [0, 0];

pub fn compression_byte(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zlib => 1,
        Compression::Zstd => 2,
    }
}

/// The bytes the controller sends inside TLS: version, compression byte, payload.
pub fn encode(c: Compression, agent_output: &[u8]) -> Vec<u8> {
    let body = compression::compress(c, agent_output);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.extend_from_slice(&VERSION);
    out.push(compression_byte(c));
    out.extend_from_slice(&body);
    out
}

/// Decodes what a fetcher read to EOF inside TLS, inflating at most `limit` bytes.
pub fn decode(stream: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let (c, payload) = split(stream)?;
    let out = compression::decompress(c, payload, limit)?;
    if !out.starts_with(b"<<") {
        return Err(WireError::InvalidPull(
            "agent output does not begin with '<<'".to_string(),
        ));
    }
    Ok(out)
}

/// Checks a frame as [`decode`] does (header, decompression within `limit`, the `<<`
/// start) without keeping the output: the compression, the payload as it came, and the
/// output's length.
pub fn check(stream: &[u8], limit: usize) -> Result<(Compression, &[u8], usize), WireError> {
    let (c, payload) = split(stream)?;
    let m = compression::measure(c, payload, limit, b"<<")?;
    if !m.has_prefix {
        return Err(WireError::InvalidPull(
            "agent output does not begin with '<<'".to_string(),
        ));
    }
    Ok((c, payload, m.len))
}

/// The frame's compression and its still compressed payload (header checked only).
pub fn split(stream: &[u8]) -> Result<(Compression, &[u8]), WireError> {
    if stream.len() < 3 {
        return Err(WireError::InvalidPull(format!(
            "stream of {} bytes is shorter than its 3-byte header",
            stream.len()
        )));
    }
    if stream[..2] != VERSION {
        return Err(WireError::InvalidPull(format!(
            "unknown protocol version {:02x}{:02x}",
            stream[0], stream[1]
        )));
    }
    let c = match stream[2] {
        0 => Compression::None,
        1 => Compression::Zlib,
        2 => Compression::Zstd,
        b => return Err(WireError::UnsupportedCompression(format!("{b:02x}"))),
    };
    Ok((c, &stream[3..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip() {
        let out = b"<<<check_mk>>>\nVersion: 2.3.0\n";
        for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
            assert_eq!(decode(&encode(c, out), 1 << 20).unwrap(), out);
        }
        assert!(decode(b"\x00\x00", 10).is_err());
        assert!(decode(b"\x00\x01\x00<<", 10).is_err());
        assert!(decode(b"\x00\x00\x09<<", 10).is_err());
        assert!(decode(b"\x00\x00\x00hello", 10).is_err());
        for bad in [
            &b"\x00\x00"[..],
            b"\x00\x01\x00<<",
            b"\x00\x00\x09<<",
            b"\x00\x00\x00hello",
        ] {
            assert!(check(bad, 10).is_err());
        }
        for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
            let f = encode(c, out);
            assert_eq!(check(&f, 1 << 20).unwrap(), (c, &f[3..], out.len()));
            assert!(check(&f, out.len() - 1).is_err());
        }
    }
}
