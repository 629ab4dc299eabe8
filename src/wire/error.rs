use thiserror::Error;

/// Errors from decoding or validating wire data. Every variant is a bad input, never a bug.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid UUID {0:?}: expected a lowercase hyphenated version-4 UUID")]
    InvalidUuid(String),
    #[error("invalid host name {0:?}: {1}")]
    InvalidHostName(String, &'static str),
    #[error("invalid site name {0:?}: use letters, digits and underscores")]
    InvalidSiteName(String),
    #[error("invalid fingerprint {0:?}: expected sha256:<64 hex digits> (colons optional)")]
    InvalidFingerprint(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid pull stream: {0}")]
    InvalidPull(String),
    #[error("unsupported compression {0:?}")]
    UnsupportedCompression(String),
    #[error("decompression failed: {0}")]
    Decompression(String),
    #[error("data exceeds the limit of {0} bytes")]
    TooLarge(usize),
}
