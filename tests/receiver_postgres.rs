//! Several receivers on one PostgreSQL database behave as one: token use counts and the
//! pending queue stay exact under concurrent requests to different `serve` processes. A real
//! throwaway PostgreSQL cluster (tests/support/postgres.rs), real receivers, real TLS.
mod common;

use common::pg::PgCluster;
use common::{make_csr, new_uuid, response, TestReceiver};
use serde_json::{json, Value};

fn pg_site(name: &str) -> TestReceiver {
    pg_site_on(name, &PgCluster::shared().create_db())
}

fn pg_site_on(name: &str, db: &str) -> TestReceiver {
    let rcv = TestReceiver::start_on(name, Some(db), &[]);
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

/// A fresh SQLite file in `dir` and a fresh database on the shared PostgreSQL cluster, for
/// tests that run the store's functions on both backends.
fn both_backends(dir: &std::path::Path) -> [tether::receiver::store::Location; 2] {
    use tether::receiver::store::{Location, PgTarget};
    [
        Location::Sqlite(dir.join("site.db")),
        Location::Postgres(PgTarget {
            url: PgCluster::shared().create_db(),
            password: None,
        }),
    ]
}

/// A new site's store on each backend, migrated, with where it lives (for messages).
fn both_stores(
    dir: &std::path::Path,
) -> Vec<(
    tether::receiver::store::Location,
    tether::receiver::store::Connection,
)> {
    use tether::receiver::store;
    both_backends(dir)
        .into_iter()
        .map(|loc| {
            let c = store::open(&loc).unwrap();
            store::migrate(&c).unwrap();
            (loc, c)
        })
        .collect()
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

/// The writer's jobs on both backends: each job's writes stand or fall together, a failing
/// job leaves the others' writes alone, and a transaction an error aborted is never reported
/// as committed. On PostgreSQL a job's savepoint, queued writes and release travel in
/// pipelines with the next job's statements (src/receiver/store/pg_session.rs), so a write
/// that fails is found after its job returned: this pins down that it fails that job alone.
#[test]
fn writer_jobs_keep_exactly_their_own_writes() {
    use tether::receiver::store::sql::{params, Connection, Error, JobId, Location};
    let dir = tempfile::tempdir().unwrap();
    for loc in both_backends(dir.path()) {
        let pg = matches!(loc, Location::Postgres(_));
        let c = Connection::open(&loc).unwrap();
        c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .unwrap();
        let insert = "INSERT INTO t(k, v) VALUES(?1, ?2)";
        // The job's own result, or the failure found after it returned.
        let fate = |c: &Connection, (id, r): (JobId, Result<(), Error>)| match r {
            Ok(()) => c.job_failure(id).map_or(Ok(()), Err),
            Err(e) => Err(e),
        };
        c.begin_write().unwrap();
        // Reads, then queued writes: kept.
        let (_, r) = c.job(|c| -> Result<usize, Error> {
            let n = c.query("SELECT k FROM t", params![])?.len();
            c.defer(insert, params!["a", 1])?;
            c.defer(insert, params!["b", 2])?;
            Ok(n)
        });
        assert_eq!(r.unwrap(), 0, "{loc:?}");
        // An immediate write, then a queued one (the approval queue's pattern): both kept.
        let ok = c.job(|c| {
            assert_eq!(c.execute(insert, params!["c", 3])?, 1);
            c.defer(insert, params!["d", 4])
        });
        // A queued write that breaks the key fails its job and undoes its other write; on
        // PostgreSQL that is found with the next job's first statement.
        let dup = c.job(|c| {
            c.defer(insert, params!["e", 5])?;
            c.defer(insert, params!["a", 6])
        });
        let dup_now = dup.1.as_ref().map_err(|e| e.is_unique_violation()).err();
        // A job that gives up after queuing writes: none of them happen.
        let (_, r) = c.job(|c| -> Result<(), Error> {
            c.defer(insert, params!["f", 7])?;
            Err(Error::Other("refused".into()))
        });
        assert!(r.is_err());
        // A read-only job sees what the batch's jobs before it wrote, and nothing of the
        // failed one.
        let (_, r) = c.job(|c| -> Result<(String, i64), Error> {
            c.query_row(
                "SELECT STRING_AGG(k, ',' ORDER BY k), CAST(SUM(v) AS BIGINT) FROM t",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        });
        if pg {
            assert_eq!(r.unwrap(), ("a,b,c,d".to_string(), 10));
        }
        // Two jobs whose writes are both still queued at the commit; the second fails.
        let last_ok = c.job(|c| c.defer(insert, params!["g", 8]));
        let last_dup = c.job(|c| {
            c.defer(insert, params!["h", 9])?;
            c.defer(insert, params!["b", 10])
        });
        c.commit().unwrap();
        fate(&c, ok).unwrap();
        fate(&c, last_ok).unwrap();
        match dup_now {
            Some(unique) => assert!(unique, "{loc:?}"),
            None => assert!(fate(&c, dup).unwrap_err().is_unique_violation(), "{loc:?}"),
        }
        assert!(fate(&c, last_dup).unwrap_err().is_unique_violation());
        let rows: Vec<(String, i64)> = c
            .query("SELECT k, v FROM t ORDER BY k", params![])
            .unwrap()
            .iter()
            .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
            .collect();
        let want: Vec<(String, i64)> = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("g", 8)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(rows, want, "{loc:?}");

        // A statement that fails outside any job aborts the transaction on PostgreSQL:
        // its commit must fail rather than report a rollback as success.
        c.begin_write().unwrap();
        assert!(c.execute(insert, params!["a", 9]).is_err());
        if pg {
            assert!(
                c.commit().is_err(),
                "an aborted transaction was reported committed"
            );
            c.rollback().unwrap();
        } else {
            c.commit().unwrap();
        }
    }
}

/// A database restart, a failover or an operator's `pg_terminate_backend` drops every
/// connection a receiver holds: the requests after it open new ones instead of failing until
/// the receiver is restarted.
#[test]
fn a_receiver_outlives_losing_its_database_connections() {
    let db = PgCluster::shared().create_db();
    let rcv = pg_site_on("pg5", &db);
    let t = rcv.admin_json(&["token", "create", "--register-new", "--max-uses", "20"]);
    let token = t["token"].as_str().unwrap().to_string();
    let labels = |n: &str| json!({"role": "web", "cmk/hostname": n});
    let before = register_new_at(&rcv, rcv.addr, &token, &new_uuid(), labels("before"));
    assert_eq!(before, 200);
    // Concurrent requests leave several read connections in the pool, all dropped below.
    std::thread::scope(|s| {
        for i in 0..8 {
            let (rcv, token, labels) = (&rcv, &token, &labels);
            s.spawn(move || {
                let name = format!("busy{i}");
                let st = register_new_at(rcv, rcv.addr, token, &new_uuid(), labels(&name));
                assert_eq!(st, 200, "{name}");
            });
        }
    });
    // A user's registration reads the user on the shared client, and the host in the writer.
    rcv.add_user("ops", "agent_registration", "ops-secret-1");
    rcv.add_host("old1", &[]);
    rcv.add_host("old2", &[]);
    let (st, body, _) = rcv.register_existing("ops", "ops-secret-1", &new_uuid(), "old1");
    assert_eq!(st, 200, "{body}");
    let mut admin = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let dropped = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .len();
    // At least the writer's, the flusher's and a reader's.
    assert!(dropped >= 3, "{dropped} connections dropped");
    for i in 0..3 {
        let name = format!("after{i}");
        let status = register_new_at(&rcv, rcv.addr, &token, &new_uuid(), labels(&name));
        assert_eq!(
            status, 200,
            "registration {name} after the connections were dropped"
        );
    }
    let (st, body, _) = rcv.register_existing("ops", "ops-secret-1", &new_uuid(), "old2");
    assert_eq!(st, 200, "{body}");
    let hosts = rcv.admin_json(&["host", "list"]);
    let names: Vec<&str> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    for n in ["before", "after0", "after1", "after2"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

/// The scheduler's sync reads the site and computes its changes outside the writer, then
/// applies them in parts (one short writer job each, a statement per kind of change): the
/// parts together do exactly what one pass did, on both backends, and a part applied twice
/// (two receivers syncing at once) changes nothing more.
#[test]
fn the_schedule_sync_applies_in_parts_on_both_backends() {
    use tether::receiver::store::{self, Host};
    let dir = tempfile::tempdir().unwrap();
    for (loc, c) in both_stores(dir.path()) {
        let host = |name: &str, mode: &str| Host {
            name: name.into(),
            folder: "/".into(),
            contact_groups: Vec::new(),
            site: "s".into(),
            cluster: false,
            mode: mode.into(),
            address: None,
            agent_port: None,
            pull_interval: None,
        };
        let now = store::now();
        let now_ms = store::now_ms();
        for i in 0..600 {
            let name = format!("h{i}");
            store::put_host(&c, &host(&name, "pull-agent")).unwrap();
            let uuid = format!("00000000-0000-4000-8000-{i:012}");
            store::insert_registration(
                &c,
                &uuid,
                &name,
                "pull-agent",
                "t",
                &format!("s{i}"),
                now + 86400,
            )
            .unwrap();
        }
        store::put_host(&c, &host("pushy", "push-agent")).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO pull_state(host, active, interval_ms, next_due) VALUES
               ('h1', 1, 120000, {far}), ('pushy', 1, 60000, 0),
               ('gone', 0, 60000, 0), ('gone2', 1, 60000, 0)",
            far = now_ms + 110_000
        ))
        .unwrap();

        let view = store::read_schedule(&c, now, now_ms).unwrap();
        assert_eq!(view.targets.len(), 600, "{loc:?}");
        let ch = view.changes;
        assert_eq!(ch.add.len(), 599, "{loc:?}");
        assert_eq!(ch.set, [("h1".to_string(), 60_000)], "{loc:?}");
        let mut retire = ch.retire.clone();
        retire.sort();
        assert_eq!(retire, ["gone", "gone2", "pushy"], "{loc:?}");
        let parts = ch.split(256);
        assert_eq!(
            parts
                .iter()
                .map(|p| p.add.len() + p.set.len() + p.retire.len())
                .collect::<Vec<_>>(),
            [256, 256, 91]
        );
        let mut changed = 0;
        for p in &parts {
            c.begin_write().unwrap();
            changed += store::apply_schedule_changes(&c, p, now_ms).unwrap();
            c.commit().unwrap();
        }
        // 599 new rows, h1 set, pushy deactivated, gone and gone2 deleted.
        assert_eq!(changed, 603, "{loc:?}");
        assert_eq!(
            store::apply_schedule_changes(&c, &parts[0], now_ms).unwrap(),
            0
        );
        assert!(store::read_schedule(&c, now, now_ms)
            .unwrap()
            .changes
            .is_empty());

        let st = store::all_pull_states(&c).unwrap();
        assert!(
            !st.contains_key("gone") && !st.contains_key("gone2"),
            "{loc:?}"
        );
        assert!(!st["pushy"].active, "{loc:?}");
        // The shorter interval does not wait out the longer one already scheduled.
        assert_eq!(st["h1"].interval_ms, 60_000);
        assert!(st["h1"].next_due <= now_ms + 60_000, "{loc:?}");
        for i in 0..600 {
            let r = &st[&format!("h{i}")];
            assert!(r.active && r.interval_ms == 60_000, "{loc:?}");
            assert!((now_ms..=now_ms + 60_000).contains(&r.next_due), "{loc:?}");
        }
    }
}

/// Which hosts the scheduler pulls, on both backends: pull hosts that are no cluster, with
/// a live registration (not revoked, a certificate not expired nor revoked), the newest
/// when there are several; where their agents listen and at which interval.
#[test]
fn the_scheduler_pulls_exactly_the_live_pull_hosts_on_both_backends() {
    use tether::receiver::store;
    let dir = tempfile::tempdir().unwrap();
    for (loc, c) in both_stores(dir.path()) {
        let now = store::now();
        let (live, past) = (now + 86400, now - 10);
        c.execute_batch(&format!(
            "INSERT INTO hosts(name, folder, site, cluster, mode, address, agent_port, created_at,
                               pull_interval) VALUES
               ('a', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL),
               ('b', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL),
               ('c', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL),
               ('d', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL),
               ('e', '/', 's', 0, 'push-agent', NULL, NULL, 0, NULL),
               ('f', '/', 's', 1, 'pull-agent', NULL, NULL, 0, NULL),
               ('g', '/', 's', 0, 'pull-agent', '10.0.0.7', 16556, 0, 30),
               ('h', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL),
               ('i', '/', 's', 0, 'pull-agent', NULL, NULL, 0, NULL);
             INSERT INTO registrations(uuid, host, mode, registered_at, registered_by, revoked_at)
             VALUES ('ua', 'a', 'pull-agent', 100, 't', NULL),
               ('ub-old', 'b', 'pull-agent', 100, 't', NULL),
               ('ub-new', 'b', 'pull-agent', 200, 't', NULL),
               ('uc', 'c', 'pull-agent', 100, 't', 150),
               ('ud', 'd', 'pull-agent', 100, 't', NULL),
               ('ue', 'e', 'pull-agent', 100, 't', NULL),
               ('uf', 'f', 'pull-agent', 100, 't', NULL),
               ('ug', 'g', 'pull-agent', 100, 't', NULL),
               ('ui', 'i', 'pull-agent', 100, 't', NULL);
             INSERT INTO certs(serial, uuid, not_after, issued_at, revoked_at) VALUES
               ('1', 'ua', {live}, 0, NULL), ('2', 'ub-old', {live}, 0, NULL),
               ('3', 'ub-new', {live}, 0, NULL), ('4', 'uc', {live}, 0, NULL),
               ('5', 'ud', {past}, 0, NULL), ('6', 'ue', {live}, 0, NULL),
               ('7', 'uf', {live}, 0, NULL), ('8', 'ug', {past}, 0, NULL),
               ('9', 'ug', {live}, 0, NULL), ('10', 'ui', {live}, 0, 150);"
        ))
        .unwrap();
        let view = store::read_schedule(&c, now, store::now_ms()).unwrap();
        let mut got: Vec<_> = view
            .targets
            .iter()
            .map(|t| {
                (
                    t.host.as_str(),
                    t.uuid.as_str(),
                    t.address.as_str(),
                    t.port,
                    t.interval_ms,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a", "ua", "a", 6556, 60_000),
                ("b", "ub-new", "b", 6556, 60_000),
                ("g", "ug", "10.0.0.7", 16556, 30_000),
            ],
            "{loc:?}"
        );
        // Every pull host gets a row, and only those.
        let mut added: Vec<_> = view.changes.add.iter().map(|a| a.0.as_str()).collect();
        added.sort();
        assert_eq!(added, ["a", "b", "g"], "{loc:?}");
    }
}

#[test]
fn the_database_urls_options_reach_the_session_after_the_receivers_own() {
    use tether::receiver::store::{self, Location, PgTarget};
    let db = PgCluster::shared().create_db();
    let settings = |url: String| -> (String, String) {
        let c = store::open(&Location::Postgres(PgTarget {
            url,
            password: None,
        }))
        .expect("open the database");
        let rows = c
            .query(
                "SELECT current_setting('jit'), current_setting('work_mem')",
                [],
            )
            .expect("read the session's settings");
        (rows[0].get(0).unwrap(), rows[0].get(1).unwrap())
    };
    // The receiver's own default: no JIT (compiling its big reads costs more than it saves).
    assert_eq!(settings(db.clone()).0, "off");
    // An operator's options are kept, and applied after the receiver's, so they win.
    assert_eq!(
        settings(format!("{db} options='-c work_mem=1234kB -c jit=on'")),
        ("on".to_string(), "1234kB".to_string())
    );
}
