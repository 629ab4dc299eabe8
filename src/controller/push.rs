//! Push mode: agent output to the receiver's `agent_data` endpoint over mTLS (spec §1).
use super::refusals::{explain, Route};
use super::remote;
use super::state::Connection;
use crate::error::{Error, ErrorCode, Result};
use crate::wire::api::COMPRESSION_HEADER;
use crate::wire::compression::{self, Compression};
use crate::wire::{multipart, paths};

/// Sends one agent output. zstd goes only to receivers that announced it (tether's).
pub fn push_once(c: &Connection, output: &[u8]) -> Result<()> {
    let comp = if c.fetcher_zstd {
        Compression::Zstd
    } else {
        Compression::Zlib
    };
    let payload = compression::compress(comp, output);
    let body = multipart::agent_data_body(&payload);
    let client = remote::mtls_client(c)?;
    let status = client
        .post_bytes(
            &paths::agent_data(&c.site, &c.uuid),
            &[
                ("Content-Type", &body.content_type),
                (COMPRESSION_HEADER, comp.header_name()),
            ],
            &body.body,
        )
        .map_err(|e| explain(&client, Route::Mtls, e))?;
    if !(200..300).contains(&status) {
        return Err(
            Error::new(ErrorCode::Protocol, format!("push answered HTTP {status}"))
                .http_status(status),
        );
    }
    Ok(())
}
