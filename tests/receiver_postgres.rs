//! Several receivers on one PostgreSQL database behave as one: token use counts and the
//! pending queue stay exact under concurrent requests to different `serve` processes. A real
//! throwaway PostgreSQL cluster (tests/support/postgres.rs), real receivers, real TLS.
mod common;

use common::pg::PgCluster;
use common::{make_csr, new_uuid, response, TestReceiver};
use serde_json::{json, Value};

fn pg_site(name: &str) -> TestReceiver {
    let db = PgCluster::shared().create_db();
    let rcv = TestReceiver::start_on(name, Some(&db), &[]);
    rcv.admin_json(&["folder", "add", "/linux"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "web",
        "--match",
        "role=web",
        "--create-in",
        "/linux",
    ]);
    rcv.admin_json(&[
        "rule",
        "add",
        "held",
        "--match",
        "role=db",
        "--hold",
        "--create-in",
        "/linux",
    ]);
    rcv
}

fn register_new_at(
    rcv: &TestReceiver,
    addr: std::net::SocketAddr,
    token: &str,
    uuid: &str,
    labels: Value,
) -> u16 {
    let (csr, _) = make_csr(uuid);
    let req = rcv
        .agent(None)
        .post(&rcv.url_at(addr, "register_new"))
        .set("Authorization", &format!("CMK-TOKEN {token}"));
    response(req.send_json(json!({"uuid": uuid, "csr": csr, "agent_labels": labels}))).0
}

#[test]
fn max_uses_is_exact_across_two_receivers() {
    let rcv = pg_site("pg1");
    let peer = rcv.spawn_peer();
    let t = rcv.admin_json(&["token", "create", "--register-new", "--max-uses", "10"]);
    let token = t["token"].as_str().unwrap().to_string();
    let addrs = [rcv.addr, peer.addr];
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (rcv, token) = (&rcv, &token);
                let addr = addrs[i % 2];
                s.spawn(move || {
                    register_new_at(
                        rcv,
                        addr,
                        token,
                        &new_uuid(),
                        json!({"role": "web", "cmk/hostname": format!("par{i}")}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "statuses: {results:?}");
    assert!(
        results.iter().all(|s| *s == 200 || *s == 401 || *s == 429),
        "{results:?}"
    );
    let list = rcv.admin_json(&["token", "list"]);
    let tok = &list["tokens"][0];
    assert_eq!(tok["uses"], 10, "{list}");
    assert_eq!(tok["remaining_uses"], 0);
    let hosts = rcv.admin_json(&["host", "list"]);
    let created = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["name"].as_str().unwrap().starts_with("par"))
        .count();
    assert_eq!(created, 10);
    // Every registration left exactly one audit entry, whichever receiver took it.
    let audit = rcv.admin_json(&["audit", "--limit", "1000"]);
    let regs = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["host"].as_str().is_some_and(|h| h.starts_with("par")))
        .count();
    assert_eq!(regs, 10, "{audit}");
}

#[test]
fn a_pending_registration_is_decided_once() {
    let rcv = pg_site("pg2");
    let peer = rcv.spawn_peer();
    let t = rcv.admin_json(&["token", "create", "--register-new", "--max-uses", "5"]);
    let token = t["token"].as_str().unwrap().to_string();
    let uuid = new_uuid();
    let st = register_new_at(
        &rcv,
        peer.addr,
        &token,
        &uuid,
        json!({"role": "db", "cmk/hostname": "db1"}),
    );
    assert_eq!(st, 200);
    let pend = rcv.admin_json(&["pending", "list"]);
    assert_eq!(pend["registrations"].as_array().unwrap().len(), 1, "{pend}");
    // Four deciders at once: one approval wins, every other attempt is refused.
    let outs: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (rcv, uuid) = (&rcv, &uuid);
                s.spawn(move || {
                    let args: Vec<&str> = if i % 2 == 0 {
                        vec!["pending", "approve", uuid]
                    } else {
                        vec!["pending", "decline", uuid, "--reason", "race"]
                    };
                    rcv.admin(&args).status.success()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs.iter().filter(|o| **o).count(), 1, "{outs:?}");
    let all = rcv.admin_json(&["pending", "list", "--all"]);
    assert_eq!(all["registrations"].as_array().unwrap().len(), 1, "{all}");
}
