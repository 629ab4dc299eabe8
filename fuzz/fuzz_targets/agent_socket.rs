//! The exchange with the Checkmk agent socket (`/run/check-mk-agent.socket`): the daemon
//! writes one line (`<peer-ip>\n`, or `\n`), reads the agent's output to EOF under a limit,
//! and frames it for the fetcher. A stand-in agent on a real unix socket answers with the
//! fuzzed output and records the line it was sent.
//!
//! Input: peer selector (0 none, 1 IPv4, 2 IPv6 + address bytes), 2-byte limit, output.
#![no_main]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tether::controller::agent_source::{self, Source};
use tether::wire::compression::Compression;
use tether::wire::pull;

#[derive(Default)]
struct Exchange {
    /// What the stand-in agent answers.
    output: Vec<u8>,
    /// The line it was sent, up to its newline.
    line: Vec<u8>,
}

struct Agent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    exchange: Arc<Mutex<Exchange>>,
    rt: tokio::runtime::Runtime,
}

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        // libFuzzer's own main does not ignore SIGPIPE as a Rust main does; the daemon runs
        // with it ignored, and a client that stops reading must not kill the fuzzer.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.socket");
        let listener = UnixListener::bind(&socket).expect("bind agent socket");
        let exchange = Arc::new(Mutex::new(Exchange::default()));
        let ex = exchange.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while line.len() < 256 {
                    match s.read(&mut b) {
                        Ok(1) => {
                            line.push(b[0]);
                            if b[0] == b'\n' {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                let output = {
                    let mut e = ex.lock().expect("exchange");
                    e.line = line;
                    e.output.clone()
                };
                let _ = s.write_all(&output);
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Agent {
            _dir: dir,
            socket,
            exchange,
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let (peer, rest) = match data.split_first() {
        Some((0, r)) => (None, r),
        Some((1, r)) if r.len() >= 4 => {
            let a: [u8; 4] = r[..4].try_into().unwrap();
            (Some(IpAddr::V4(Ipv4Addr::from(a))), &r[4..])
        }
        Some((2, r)) if r.len() >= 16 => {
            let a: [u8; 16] = r[..16].try_into().unwrap();
            (Some(IpAddr::V6(Ipv6Addr::from(a))), &r[16..])
        }
        _ => return,
    };
    if rest.len() < 2 {
        return;
    }
    let limit = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let output = &rest[2..];
    let a = agent();
    a.exchange.lock().expect("exchange").output = output.to_vec();
    let source = Source::Socket(a.socket.clone());
    let got = a.rt.block_on(agent_source::read_output(
        &source,
        peer,
        Duration::from_secs(10),
        limit,
    ));
    // One line, naming the peer exactly.
    let line = std::mem::take(&mut a.exchange.lock().expect("exchange").line);
    let text = std::str::from_utf8(&line).expect("the line is text");
    let ip = text.strip_suffix('\n').expect("the line ends in a newline");
    assert!(!ip.contains('\n'));
    match peer {
        Some(p) => assert_eq!(ip.parse::<IpAddr>().ok(), Some(p)),
        None => assert!(ip.is_empty()),
    }
    match got {
        Ok(out) => {
            assert!(!output.is_empty() && output.len() <= limit);
            assert_eq!(out, output);
            // Framed for the fetcher, it reads back the same when it is agent output.
            for c in [Compression::Zlib, Compression::Zstd] {
                match pull::decode(&pull::encode(c, &out), limit) {
                    Ok(back) => assert_eq!(back, out),
                    Err(_) => assert!(!out.starts_with(b"<<")),
                }
            }
        }
        Err(_) => assert!(output.is_empty() || output.len() > limit),
    }
});
