//! Raw client connections for the abuse tests and the flood bench: TCP from a chosen
//! loopback source address (127.0.0.2, … stand for other clients), TLS handshakes by hand,
//! and telling whether the server has closed a socket.
#![allow(dead_code)]
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Raises this process's open-file limit to the hard limit (children inherit it).
pub fn raise_nofile() {
    #[cfg(unix)]
    {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
                l.rlim_cur = l.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
        }
    }
}

/// A TCP connection to `server` from `from` (any port).
pub fn connect_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&server.into(), Duration::from_secs(10))?;
    Ok(s.into())
}

/// Whether the server has closed `s` (EOF or reset); does not wait.
pub fn is_closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let r = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    r
}

/// How many of `socks` are still open, once that count stops changing (the server works
/// through its accept queue); gives up changing after `limit`.
pub fn settled_open(socks: &[TcpStream], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut last = usize::MAX;
    let mut same = 0;
    loop {
        let open = socks.iter().filter(|s| !is_closed(s)).count();
        same = if open == last { same + 1 } else { 0 };
        last = open;
        if same >= 5 || Instant::now() > deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads until the server closes (EOF, reset, a TLS error after its close); `Err` when it
/// is still open after `wait`.
pub fn read_until_closed(s: &mut impl Read, wait: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() >= wait {
                    return Err(format!("still open after {wait:?}"));
                }
            }
            Err(_) => return Ok(()),
        }
    }
}

/// A client TLS configuration trusting `site_ca_pem`.
pub fn tls_config(site_ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut site_ca_pem.as_bytes()) {
        roots.add(c.expect("cert")).expect("add root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A completed TLS handshake from `from`, or why it failed (the server closed first).
pub fn tls_from(
    cfg: &Arc<rustls::ClientConfig>,
    from: IpAddr,
    server: SocketAddr,
) -> Result<Tls, String> {
    let mut tcp = connect_from(from, server).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    while c.is_handshaking() {
        c.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(c, tcp))
}

/// Sends one keep-alive GET and reads its response (headers and Content-Length body).
pub fn get(s: &mut Tls, path: &str) -> Result<String, String> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response".into());
        }
        buf.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(text);
            }
        }
    }
}
