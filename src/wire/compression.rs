//! Payload compression of pulls (zlib, **ext** zstd) and pushes, with hard output limits so
//! a small hostile input cannot expand without bound.
use std::io::{Read, Write};

use super::WireError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Zstd,
}

impl Compression {
    /// Name used in the `compression` header of `agent_data`.
    pub fn header_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
    /// The name as stored beside the bytes (`none`, `zlib`, `zstd`).
    pub fn from_name(s: &str) -> Option<Self> {
        [Compression::None, Compression::Zlib, Compression::Zstd]
            .into_iter()
            .find(|c| c.header_name() == s)
    }
    pub fn from_header(s: &str) -> Result<Self, WireError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "zlib" => Ok(Compression::Zlib),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(WireError::UnsupportedCompression(
                s.chars().take(32).collect(),
            )),
        }
    }
}

/// zlib level 1 costs a fraction of the default level's CPU for agent output and stays
/// within a few percent of its size; the pull path is dominated by this choice.
pub const ZLIB_LEVEL: u32 = 1;
pub const ZSTD_LEVEL: i32 = 3;

pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Zlib => {
            let mut enc = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::new(ZLIB_LEVEL),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(data);
            enc.finish().unwrap_or_default()
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).unwrap_or_default(),
    }
}

/// Decompresses at most `limit` bytes of output; more is an error, not a truncation.
pub fn decompress(c: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|e| WireError::Decompression(e.to_string()))
    };
    match c {
        Compression::None => out.extend_from_slice(data),
        Compression::Zlib => {
            read(&mut flate2::read::ZlibDecoder::new(data), &mut out)?;
        }
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::new(data)
                .map_err(|e| WireError::Decompression(e.to_string()))?;
            read(&mut dec, &mut out)?;
        }
    }
    if out.len() > limit {
        return Err(WireError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_limits() {
        let data = b"<<<check_mk>>>\nVersion: 2.3\n".repeat(100);
        for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
            let z = compress(c, &data);
            assert_eq!(decompress(c, &z, data.len()).unwrap(), data);
            assert_eq!(
                decompress(c, &z, data.len() - 1),
                Err(WireError::TooLarge(data.len() - 1))
            );
        }
        assert!(decompress(Compression::Zlib, b"not zlib", 100).is_err());
        assert!(decompress(Compression::Zstd, b"not zstd", 100).is_err());
    }
}
