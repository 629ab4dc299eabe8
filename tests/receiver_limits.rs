//! The receiver under abusive clients, over real TLS: silent connections, half a
//! ClientHello and idle kept-alive connections are dropped after their timeouts; the
//! per-address caps refuse a flood from one address while others still register; the
//! global cap holds.
mod common;
#[path = "support/raw_conn.rs"]
mod raw_conn;

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use raw_conn::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A registration from 127.0.0.1; `None` when the connection was refused.
fn try_register(r: &TestReceiver, host: &str) -> Option<u16> {
    let uuid = new_uuid();
    let (csr, _) = make_csr(&uuid);
    let res = r
        .agent(None)
        .post(&r.url("register_existing"))
        .set("Authorization", &basic("reg", "pw"))
        .send_json(serde_json::json!({"uuid": uuid, "csr": csr, "host_name": host}));
    match res {
        Ok(resp) => Some(resp.status()),
        Err(ureq::Error::Status(st, _)) => Some(st),
        Err(ureq::Error::Transport(_)) => None,
    }
}

#[test]
fn silent_half_hello_and_idle_clients_are_dropped() {
    let r = TestReceiver::start_with(
        "slow",
        &["--handshake-timeout", "1s", "--header-timeout", "1s"],
    );
    let wait = Duration::from_secs(20);
    let lo = ip("127.0.0.1");

    // Connects and sends nothing.
    let mut silent = connect_from(lo, r.addr).unwrap();
    silent.set_read_timeout(Some(wait)).unwrap();
    // Half a ClientHello: a handshake record announcing 512 bytes, 40 of them sent.
    let mut half = connect_from(lo, r.addr).unwrap();
    half.set_read_timeout(Some(wait)).unwrap();
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.resize(45, 0x42);
    half.write_all(&hello).unwrap();
    // A completed request on a kept-alive connection, then nothing.
    let cfg = tls_config(&r.site_ca_pem());
    let mut idle = tls_from(&cfg, lo, r.addr).unwrap();
    let resp = get(
        &mut idle,
        "/slow/check_mk/api/1.0/domain-types/internal/actions/discover-receiver/invoke",
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    idle.sock.set_read_timeout(Some(wait)).unwrap();

    read_until_closed(&mut silent, wait).expect("silent connection");
    read_until_closed(&mut half, wait).expect("half ClientHello");
    read_until_closed(&mut idle, wait).expect("idle keep-alive connection");
    // The receiver itself is unaffected.
    let cfg2 = tls_config(&r.site_ca_pem());
    assert!(tls_from(&cfg2, lo, r.addr).is_ok());
}

#[test]
fn per_address_caps_refuse_a_flood_and_spare_other_addresses() {
    raise_nofile();
    let r = TestReceiver::start_with(
        "flood",
        &[
            "--max-handshakes-per-ip",
            "32",
            "--max-connections-per-ip",
            "40",
            "--handshake-timeout",
            "120s",
            "--header-timeout",
            "120s",
        ],
    );
    r.add_user("reg", "agent_registration", "pw");
    r.add_host("h1", &[]);
    r.add_host("h2", &[]);
    let cfg = tls_config(&r.site_ca_pem());

    // 2,000 silent connections from 127.0.0.2: its connection cap keeps 40 open (32 in a
    // handshake, 8 waiting for a handshake slot), the rest are closed before TLS.
    let flooder = ip("127.0.0.2");
    let flood: Vec<_> = (0..2000)
        .map(|_| connect_from(flooder, r.addr).expect("connect"))
        .collect();
    assert_eq!(settled_open(&flood, Duration::from_secs(30)), 40);
    // A further one from that address is closed before TLS...
    assert!(tls_from(&cfg, flooder, r.addr).is_err());
    // ...while 127.0.0.1 registers.
    assert_eq!(try_register(&r, "h1"), Some(200));

    // Completed handshakes from 127.0.0.3 count against its connection cap (40).
    let held: Vec<_> = (0..45)
        .filter_map(|_| tls_from(&cfg, ip("127.0.0.3"), r.addr).ok())
        .collect();
    assert_eq!(held.len(), 40);
    assert!(tls_from(&cfg, ip("127.0.0.4"), r.addr).is_ok());

    // Once the flood goes, its address is served again.
    drop(flood);
    let mut ok = false;
    for _ in 0..100 {
        if tls_from(&cfg, flooder, r.addr).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "127.0.0.2 still refused after its connections closed");
    assert_eq!(try_register(&r, "h2"), Some(200));
    drop(held);
}

/// A burst from one address beyond its handshake cap waits for slots instead of being reset
/// (a NAT or an Ansible controller with many forks looks like this).
#[test]
fn a_burst_from_one_address_queues_for_handshakes() {
    let r = TestReceiver::start_with("burst", &["--max-handshakes-per-ip", "2"]);
    r.add_user("reg", "agent_registration", "pw");
    for i in 0..24 {
        r.add_host(&format!("b{i}"), &[]);
    }
    let got: Vec<Option<u16>> = std::thread::scope(|s| {
        let r = &r;
        let workers: Vec<_> = (0..24)
            .map(|i| s.spawn(move || try_register(r, &format!("b{i}"))))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(got, vec![Some(200); 24]);
}

#[test]
fn global_connection_cap() {
    let r = TestReceiver::start_with(
        "cap",
        &["--max-connections", "8", "--handshake-timeout", "120s"],
    );
    r.add_user("reg", "agent_registration", "pw");
    r.add_host("h1", &[]);
    let cfg = tls_config(&r.site_ca_pem());
    let mut silent: Vec<_> = (2..10)
        .map(|i| connect_from(ip(&format!("127.0.0.{i}")), r.addr).expect("connect"))
        .collect();
    assert_eq!(settled_open(&silent, Duration::from_secs(10)), 8);
    assert!(tls_from(&cfg, ip("127.0.0.10"), r.addr).is_err());
    assert_eq!(try_register(&r, "h1"), None);
    silent.truncate(7);
    let mut st = None;
    for _ in 0..100 {
        st = try_register(&r, "h1");
        if st.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(st, Some(200));
}
