//! Push ingest: `POST agent_data/{uuid}` over mTLS (spec §1), and the store of the latest
//! agent output per host that pushes and pulls share.
use std::sync::Arc;

use crate::receiver::store::sql::{params, Connection, OptionalExtension};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::{mtls, read_body, ApiError, AppState};
use super::store;
use crate::wire::api::{AGENT_DATA_FIELD, COMPRESSION_HEADER};
use crate::wire::compression::{self, Compression};
use crate::wire::WireError;

/// Stores plain (uncompressed) agent output as the host's latest.
pub fn store_output(
    c: &Connection,
    host: &str,
    via: &str,
    data: &[u8],
) -> crate::receiver::store::sql::Result<()> {
    store_compressed(c, host, via, Compression::None, data, data.len())
}

/// Stores agent output as it arrived: `data` compressed with `comp`, `size` bytes once
/// decompressed. The caller has decompressed it once within the output limit, so what is
/// stored is known to be good; reads decompress again ([`latest_output`]).
pub fn store_compressed(
    c: &Connection,
    host: &str,
    via: &str,
    comp: Compression,
    data: &[u8],
    size: usize,
) -> crate::receiver::store::sql::Result<()> {
    c.execute(
        "INSERT INTO agent_data(host, received_at, via, data, compression, size) VALUES(?1,?2,?3,?4,?5,?6)
         ON CONFLICT(host) DO UPDATE SET received_at=excluded.received_at, via=excluded.via,
           data=excluded.data, compression=excluded.compression, size=excluded.size",
        params![host, store::now(), via, data, comp.header_name(), size as i64],
    )?;
    Ok(())
}

/// (received_at, via, data) of the latest output of a host, decompressed.
pub fn latest_output(
    c: &Connection,
    host: &str,
) -> crate::receiver::store::sql::Result<Option<(i64, String, Vec<u8>)>> {
    use crate::receiver::store::sql::Error as SqlError;
    type Stored = (i64, String, Vec<u8>, String, Option<i64>);
    let row: Option<Stored> = c
        .query_row(
            "SELECT received_at, via, data, compression, size FROM agent_data WHERE host=?1",
            [host],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((at, via, data, comp, size)) = row else {
        return Ok(None);
    };
    let comp = Compression::from_name(&comp).ok_or_else(|| {
        SqlError::Other(format!(
            "stored output of {host}: unknown compression {comp:?}"
        ))
    })?;
    if comp == Compression::None {
        return Ok(Some((at, via, data)));
    }
    // Validated on arrival; the recorded size bounds the inflation all the same.
    let limit = size
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(data.len() * 64);
    let plain = compression::decompress(comp, &data, limit)
        .map_err(|e| SqlError::Other(format!("stored output of {host}: {e}")))?;
    Ok(Some((at, via, plain)))
}

pub async fn agent_data(
    State(st): State<Arc<AppState>>,
    Path(uuid): Path<String>,
    req: Request,
) -> Response {
    match ingest(&st, &uuid, req).await {
        Ok(()) => {
            crate::receiver::metrics::push("ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            crate::receiver::metrics::push("refused");
            tracing::info!("agent_data from {uuid:.64} refused: {:?}", e.detail);
            e.into_response()
        }
    }
}

async fn ingest(st: &Arc<AppState>, uuid: &str, req: Request) -> Result<(), ApiError> {
    let ci = req
        .extensions()
        .get::<super::api::ConnInfo>()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no connection info"))?;
    // Read the bounded body first, so every refusal reaches the client as a response.
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, st.limits.max_push).await?;
    mtls(st, &ci, uuid)?;
    let u = uuid.to_string();
    let now = store::now();
    let host = st.db.read(move |c| {
        let Some(reg) = store::get_registration(c, &u)?.filter(|r| r.live(now)) else {
            return Ok(Err("Host is not registered".to_string()));
        };
        match store::get_host(c, &reg.host)? {
            Some(h) if h.mode == "push-agent" => Ok(Ok(h.name)),
            // Checkmk's texts, verbatim.
            Some(_) => Ok(Err("Host is not a push host".to_string())),
            None => Ok(Err("Host is not registered".to_string())),
        }
    })?;
    let host = host.map_err(|m| ApiError::new(StatusCode::FORBIDDEN, m))?;
    let (comp, payload) = push_payload(parts, bytes).await?;
    let max = st.limits.max_output;
    // Decompressed once to validate (limit, format); what is stored is the payload as sent.
    let (size, payload) = tokio::task::spawn_blocking(move || {
        compression::measure(comp, &payload, max, b"").map(|m| (m.len, payload))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        WireError::TooLarge(n) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Decompressed agent data exceeds the limit of {n} bytes"),
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, {
            tracing::info!("decompression of agent data failed: {other}");
            "Decompression of agent data failed".to_string()
        }),
    })?;
    st.db
        .write(move |c| {
            store_compressed(c, &host, "push", comp, &payload, size).map_err(ApiError::from)
        })
        .await??;
    Ok(())
}

/// Reads an `agent_data` push from the outside: the compression its header names, and the
/// (still compressed) content of the `monitoring_data` file part of its multipart body.
pub async fn push_payload(parts: Parts, bytes: Bytes) -> Result<(Compression, Bytes), ApiError> {
    let comp = match parts
        .headers
        .get(COMPRESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Missing compression header",
            ))
        }
        Some(v) => Compression::from_header(v).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Unsupported compression algorithm: {}",
                    v.chars().take(32).collect::<String>()
                ),
            )
        })?,
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid multipart body: {e}"),
        )
    })?;
    let mut payload = None;
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                if f.name() == Some(AGENT_DATA_FIELD) {
                    let b = f.bytes().await.map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            format!("Invalid multipart body: {e}"),
                        )
                    })?;
                    payload = Some(b);
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid multipart body: {e}"),
                ))
            }
        }
    }
    let payload = payload.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Multipart body has no file part {AGENT_DATA_FIELD}"),
        )
    })?;
    Ok((comp, payload))
}
