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
    inflate(c, data, limit, &mut |chunk| out.extend_from_slice(chunk))?;
    Ok(out)
}

/// What decompressing a payload showed, the output itself not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Length of the decompressed output.
    pub len: usize,
    /// The output begins with the prefix asked for.
    pub has_prefix: bool,
}

/// Decompresses like [`decompress`] (at most `limit` bytes, the same errors) but keeps
/// nothing: for callers that store the payload as it came and only need to know it is
/// good, how long its output is and whether that begins with `prefix`. No output buffer
/// grows, which made up a good part of validating a 100 KB pull.
pub fn measure(
    c: Compression,
    data: &[u8],
    limit: usize,
    prefix: &[u8],
) -> Result<Measured, WireError> {
    let mut seen = 0usize;
    let mut has_prefix = true;
    let len = inflate(c, data, limit, &mut |chunk| {
        if seen < prefix.len() {
            let k = (prefix.len() - seen).min(chunk.len());
            has_prefix &= chunk[..k] == prefix[seen..seen + k];
            seen += k;
        }
    })?;
    Ok(Measured {
        len,
        has_prefix: has_prefix && len >= prefix.len(),
    })
}

/// Output buffer of [`inflate`]: zstd's recommended size, one block, so a frame whose
/// output fits is decoded straight into it.
const SCRATCH: usize = 128 * 1024;

/// A zstd context and an output buffer, reused by every decompression on a thread.
type Scratch = (Option<zstd::zstd_safe::DCtx<'static>>, Vec<u8>);

thread_local! {
    static SCRATCH_STATE: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

/// The one decompression path behind [`decompress`] and [`measure`]: the whole input at
/// once, the output handed to `sink` in [`SCRATCH`] chunks, at most `limit` bytes. They
/// must read alike: libzstd's streaming decoder judges some corrupt frames by the buffer
/// sizes it is given (an error, or no output at all), so a payload measured good must
/// decompress the same. Returns the output's length.
fn inflate(
    c: Compression,
    data: &[u8],
    limit: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<usize, WireError> {
    if c == Compression::None {
        if data.len() > limit {
            return Err(WireError::TooLarge(limit));
        }
        sink(data);
        return Ok(data.len());
    }
    SCRATCH_STATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => inflate_with(c, data, limit, &mut state, sink),
        // Only a sink that decompresses again gets here: it gets state of its own.
        Err(_) => inflate_with(c, data, limit, &mut (None, Vec::new()), sink),
    })
}

fn inflate_with(
    c: Compression,
    data: &[u8],
    limit: usize,
    (dctx, buf): &mut Scratch,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<usize, WireError> {
    if buf.len() < SCRATCH {
        buf.resize(SCRATCH, 0);
    }
    match c {
        Compression::Zlib => drain(
            &mut flate2::bufread::ZlibDecoder::new(data),
            buf,
            limit,
            sink,
        ),
        _ => {
            let ctx = match dctx {
                Some(ctx) => ctx,
                None => dctx.insert(
                    zstd::zstd_safe::DCtx::try_create()
                        .ok_or_else(|| WireError::Decompression("no zstd context".into()))?,
                ),
            };
            // A context left mid-frame by an earlier error is reset by with_context.
            let mut dec = zstd::stream::read::Decoder::with_context(data, ctx);
            drain(&mut dec, buf, limit, sink)
        }
    }
}

/// Reads `r` to its end through `buf`, handing each chunk to `sink`, within `limit`;
/// returns the output's length.
fn drain(
    r: &mut dyn Read,
    buf: &mut [u8],
    limit: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<usize, WireError> {
    let mut len = 0usize;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WireError::Decompression(e.to_string())),
        };
        len += n;
        if len > limit {
            return Err(WireError::TooLarge(limit));
        }
        sink(&buf[..n]);
    }
    Ok(len)
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

    #[test]
    fn measure_agrees_with_decompress() {
        // Larger than the scratch buffer, so the output arrives in several reads.
        let data = b"<<<check_mk>>>\nVersion: 2.3\n".repeat(20_000);
        for c in [Compression::None, Compression::Zlib, Compression::Zstd] {
            let z = compress(c, &data);
            let m = measure(c, &z, data.len(), b"<<").unwrap();
            assert_eq!(
                m,
                Measured {
                    len: data.len(),
                    has_prefix: true
                },
                "{c:?}"
            );
            assert!(!measure(c, &z, data.len(), b"<<<<").unwrap().has_prefix);
            assert_eq!(
                measure(c, &z, data.len() - 1, b""),
                Err(WireError::TooLarge(data.len() - 1)),
                "{c:?}"
            );
            // Truncated input fails as decompress fails, and the context stays usable.
            if c != Compression::None {
                assert!(
                    measure(c, &z[..z.len() / 2], data.len(), b"").is_err(),
                    "{c:?}"
                );
                assert_eq!(measure(c, &z, data.len(), b"").unwrap().len, data.len());
            }
        }
        // Concatenated zstd frames, as decompress reads them.
        let two = [
            compress(Compression::Zstd, b"<<a"),
            compress(Compression::Zstd, b"b"),
        ]
        .concat();
        assert_eq!(decompress(Compression::Zstd, &two, 10).unwrap(), b"<<ab");
        assert_eq!(measure(Compression::Zstd, &two, 10, b"<<").unwrap().len, 4);
        assert!(measure(Compression::Zlib, b"not zlib", 100, b"").is_err());
        assert!(measure(Compression::Zstd, b"not zstd", 100, b"").is_err());
        // Corrupt frames (a compressed block of size 0) that libzstd's streaming decoder
        // judges by the buffer sizes: found by fuzzing, measure said corrupt while
        // decompress returned no output. Both must give the same verdict.
        for fcs in [1_536u32, 200_000, 5_000_000] {
            let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
            f.extend_from_slice(&fcs.to_le_bytes());
            f.extend_from_slice(&[0x05, 0, 0]);
            let d = decompress(Compression::Zstd, &f, 1 << 23).map(|o| o.len());
            let m = measure(Compression::Zstd, &f, 1 << 23, b"").map(|m| m.len);
            assert_eq!(d.is_ok(), m.is_ok(), "{fcs}: {d:?} vs {m:?}");
            assert_eq!(d.ok(), m.ok());
        }
        let short = measure(
            Compression::Zstd,
            &compress(Compression::Zstd, b"<"),
            10,
            b"<<",
        );
        assert_eq!(
            short.unwrap(),
            Measured {
                len: 1,
                has_prefix: false
            }
        );
    }
}
