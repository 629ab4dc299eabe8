//! What both sides must agree on: the Checkmk agent-receiver API models, pull framing,
//! compression, certificate facts and input validation (described in `src/wire/README.md`).
pub mod api;
pub mod certs;
pub mod compression;
pub mod error;
pub mod listen;
pub mod multipart;
pub mod paths;
pub mod per_ip;
pub mod pull;
pub mod tls;
pub mod trust;
pub mod validate;

pub use error::WireError;
