//! Listening sockets as both sides open them: `[::]` is made dual-stack explicitly (IPv4
//! clients arrive as mapped addresses), whatever the host's `bindv6only` default says, and
//! falls back to IPv4 where the host has no IPv6.
use std::net::{IpAddr, SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Binds and listens on `addr`; the socket is non-blocking, ready for tokio's `from_std`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match make(addr) {
        Err(e) if addr.ip() == IpAddr::from([0u16; 8]) => {
            tracing::warn!("dual-stack bind on {addr} failed ({e}); listening on IPv4 only");
            make(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        r => r,
    }
}

fn make(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_v6_accepts_v4_and_v6() {
        let l = bind("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        for a in ["127.0.0.1", "::1"] {
            let ip: IpAddr = a.parse().unwrap();
            std::net::TcpStream::connect((ip, port)).unwrap();
        }
    }
}
