//! The multipart/form-data body of an `agent_data` push: one file part, as Checkmk's
//! controller sends it. The server side parses with axum's multipart extractor.
use super::api::{AGENT_DATA_FIELD, AGENT_DATA_FILENAME};

pub struct MultipartBody {
    pub content_type: String,
    pub body: Vec<u8>,
}

pub fn agent_data_body(payload: &[u8]) -> MultipartBody {
    // A random boundary cannot collide with compressed data in practice; 128 bits of it.
    let boundary = format!("tether-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(payload.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{AGENT_DATA_FIELD}\"; \
             filename=\"{AGENT_DATA_FILENAME}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    MultipartBody {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body,
    }
}
