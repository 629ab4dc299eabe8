//! The body of an `agent_data` push: its `compression` header, its multipart/form-data body
//! (the Content-Type carries the boundary), then decompression under a limit.
//!
//! Input: `CONTENT-TYPE \n COMPRESSION \n BODY`.
#![no_main]

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tether::receiver::ingest;
use tether::wire::compression;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn split_line(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b'\n') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (ct, rest) = split_line(data);
    let (comp, body) = split_line(rest);
    let mut req = Request::builder().method("POST").uri("/agent_data");
    for (name, value) in [("content-type", ct), ("compression", comp)] {
        if value.is_empty() {
            continue;
        }
        match HeaderValue::from_bytes(value) {
            Ok(v) => req = req.header(name, v),
            Err(_) => return,
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let body = Bytes::copy_from_slice(body);
    if let Ok((c, payload)) = rt().block_on(ingest::push_payload(parts, body)) {
        let _ = compression::decompress(c, &payload, 1 << 20);
    }
});
