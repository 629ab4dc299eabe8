//! `migrate --from sqlite:DIR --to postgres://…`: a site made on SQLite through the real
//! receiver (users, hosts, rules, tokens, registrations, pending, audit, agent data) moves to
//! a throwaway PostgreSQL cluster, and `serve` carries on there: registrations verify over
//! mTLS, a token's use count continues, users log in, ids are not reused. A target that
//! alters what it stores fails verification and keeps nothing.
mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::pg::PgCluster;
use common::*;
use serde_json::{json, Value};
use tether::wire::compression::{compress, Compression};
use tether::wire::multipart;

const OUTPUT: &[u8] = b"<<<check_mk>>>\nVersion: 2.3.0\n<<<bin>>>\n\x00\x01\xff\xfe\n";

/// The highest `id` among the rows of `doc[list]` (audit entries, tokens).
fn max_id(doc: &Value, list: &str) -> i64 {
    doc[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .max()
        .unwrap()
}

fn migrate(rcv: &TestReceiver, to: &str, extra: &[&str]) -> std::process::Output {
    let from = format!("sqlite:{}", rcv.dir.path().display());
    Command::new(receiver_bin())
        .args(["migrate", "--from", &from, "--to", to, "--json"])
        .args(extra)
        .env_remove("TETHER_RECEIVER_DIR")
        .env_remove("TETHER_RECEIVER_DATABASE")
        .output()
        .expect("run migrate")
}

fn register_new(rcv: &TestReceiver, token: &str, uuid: &str, labels: Value) -> (u16, Value) {
    let (csr, _) = make_csr(uuid);
    let req = rcv
        .agent(None)
        .post(&rcv.url("register_new"))
        .set("Authorization", &format!("CMK-TOKEN {token}"));
    response(req.send_json(json!({"uuid": uuid, "csr": csr, "agent_labels": labels})))
}

fn pg_tables(db: &str) -> BTreeSet<String> {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    c.query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn pg_count(db: &str, table: &str) -> i64 {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

fn sqlite_tables(rcv: &TestReceiver) -> BTreeSet<String> {
    let c = rusqlite::Connection::open(rcv.dir.path().join("receiver.db")).unwrap();
    let mut st = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_sqlite_site_moves_to_postgres_and_carries_on() {
    // Always SQLite here, whatever backend the run puts other sites on.
    let mut rcv = TestReceiver::start_on("migr", None, &[]);
    rcv.add_user("reg", "agent_registration", "reg-pw");
    rcv.add_user("boss", "admin", "boss-pw");
    rcv.admin_json(&["group", "add", "ops", "--alias", "Operations"]);
    rcv.admin_json(&["folder", "add", "/linux", "--contact-group", "ops"]);
    rcv.add_host("h1", &["--folder", "/linux"]);
    rcv.add_host("h2", &[]);
    rcv.add_host("p1", &["--mode", "push"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "web",
        "--match",
        "role=web",
        "--create-in",
        "/linux",
    ]);
    rcv.admin_json(&["rule", "add", "held", "--match", "role=db", "--hold"]);
    // Enough hosts for several read pages (256 rows each to start with).
    let mut yaml = String::from("hosts:\n");
    for i in 0..700 {
        yaml.push_str(&format!("  - name: bulk{i:03}\n"));
    }
    let hosts_file = rcv.dir.path().join("bulk.yml");
    std::fs::write(&hosts_file, yaml).unwrap();
    rcv.admin_json(&["apply", hosts_file.to_str().unwrap()]);
    rcv.admin_json(&["token", "create", "--host", "h2", "--name", "for-h2"]);
    let t = rcv.admin_json(&[
        "token",
        "create",
        "--register-new",
        "--max-uses",
        "5",
        "--name",
        "fleet",
    ]);
    let token = t["token"].as_str().unwrap().to_string();

    // Registrations through the real receiver: an existing host, a new one by token, one held.
    let u1 = new_uuid();
    let (st, body, key1) = rcv.register_existing("reg", "reg-pw", &u1, "h1");
    assert_eq!(st, 200, "{body}");
    let cert1 = body["agent_cert"].as_str().unwrap().to_string();
    let (st, body) = register_new(
        &rcv,
        &token,
        &new_uuid(),
        json!({"role": "web", "cmk/hostname": "web1"}),
    );
    assert_eq!(st, 200, "{body}");
    let held = new_uuid();
    let (st, _) = register_new(
        &rcv,
        &token,
        &held,
        json!({"role": "db", "cmk/hostname": "db1"}),
    );
    assert_eq!(st, 200);
    // Pushed agent data (binary-safe).
    let up = new_uuid();
    let (st, body, keyp) = rcv.register_existing("reg", "reg-pw", &up, "p1");
    assert_eq!(st, 200, "{body}");
    let mtls_p = rcv.agent(Some((body["agent_cert"].as_str().unwrap(), &keyp)));
    let mp = multipart::agent_data_body(&compress(Compression::Zlib, OUTPUT));
    let (st, _) = response(
        mtls_p
            .post(&rcv.url(&format!("agent_data/{up}")))
            .set("compression", "zlib")
            .set("Content-Type", &mp.content_type)
            .send_bytes(&mp.body),
    );
    assert_eq!(st, 204);
    // The highest ids so far: PostgreSQL must continue after them.
    let audit_before = rcv.admin_json(&["audit", "--limit", "1000"]);
    let max_audit_id = max_id(&audit_before, "entries");
    let tokens_before = rcv.admin_json(&["token", "list"]);
    assert!(rcv.stop(), "the SQLite receiver stops cleanly");

    let cluster = PgCluster::shared();

    // A target that changes what it stores: verification fails, nothing is kept, the site
    // directory is not pointed at it.
    let bad = cluster.create_db();
    {
        let c = tether::receiver::store::open(&tether::receiver::store::Location::Postgres(
            tether::receiver::store::PgTarget::new(&bad, None).unwrap(),
        ))
        .unwrap();
        tether::receiver::store::migrate(&c).unwrap();
        let mut pg = postgres::Client::connect(&bad, postgres::NoTls).unwrap();
        pg.batch_execute(
            "CREATE FUNCTION tamper() RETURNS trigger AS $$ BEGIN NEW.folder := NEW.folder || '-x'; \
             RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER tamper BEFORE INSERT ON hosts FOR EACH ROW EXECUTE FUNCTION tamper();",
        )
        .unwrap();
    }
    let out = migrate(&rcv, &bad, &[]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate_json("error.schema.json", &doc);
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains("verification failed for table hosts"), "{msg}");
    for t in pg_tables(&bad) {
        assert_eq!(pg_count(&bad, &t), 0, "{t} kept rows after the rollback");
    }
    assert!(!rcv.dir.path().join("receiver.toml").exists());

    // The real migration, first without touching the site directory.
    let db = cluster.create_db();
    let out = migrate(&rcv, &db, &["--no-config"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate_json("receiver.migrate.schema.json", &rep);
    // Every table, on both sides: a table left out of the copy fails here.
    let reported: BTreeSet<String> = rep["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reported, sqlite_tables(&rcv), "{rep}");
    assert_eq!(reported, pg_tables(&db), "{rep}");
    let lite = rusqlite::Connection::open(rcv.dir.path().join("receiver.db")).unwrap();
    for t in rep["tables"].as_array().unwrap() {
        let name = t["table"].as_str().unwrap();
        let n: i64 = lite
            .query_row(&format!("SELECT COUNT(*) FROM {name}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(t["rows"].as_i64().unwrap(), n, "{name}");
        assert_eq!(pg_count(&db, name), n, "{name}");
        assert_eq!(t["sha256"].as_str().unwrap().len(), 64);
    }
    assert!(pg_count(&db, "hosts") > 700);
    for t in [
        "users",
        "hosts",
        "rules",
        "tokens",
        "registrations",
        "certs",
        "pending",
        "audit",
        "agent_data",
        "contact_groups",
        "folders",
    ] {
        assert!(
            pg_count(&db, t) > 0,
            "{t} is empty: the test site must fill it"
        );
    }
    // The copy is analyzed: the planner knows the rows (an unanalyzed table's estimate
    // stays at what it was when its indexes were made on the empty table).
    let mut pc = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    for t in ["hosts", "registrations", "audit"] {
        let estimate: f32 = pc
            .query_one(
                &format!("SELECT reltuples FROM pg_class WHERE oid = '{t}'::regclass"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(estimate as i64, pg_count(&db, t), "{t}: not analyzed");
    }
    assert!(rep["config_written"].is_null());
    assert!(rep["next_step"].as_str().unwrap().contains("database_url"));
    assert!(!rcv.dir.path().join("receiver.toml").exists());

    // Again: the target is not empty now.
    let out = migrate(&rcv, &db, &["--no-config"]);
    assert_eq!(out.status.code(), Some(7));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not empty"));
    // --force replaces it with the same content, and points the site at it.
    let out = migrate(&rcv, &db, &["--force"]);
    assert!(out.status.success());
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["tables"], rep["tables"]);
    assert!(again["replaced_rows"].as_u64().unwrap() > 0);
    assert!(again["config_written"].is_string());
    let toml = std::fs::read_to_string(rcv.dir.path().join("receiver.toml")).unwrap();
    assert!(toml.contains("database_url"), "{toml}");
    // The site is on PostgreSQL now: its old SQLite file is not its state any more.
    let out = migrate(&rcv, &cluster.create_db(), &[]);
    assert_eq!(out.status.code(), Some(7));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already puts this site on PostgreSQL"));

    // serve on PostgreSQL now (receiver.toml), and the SQLite file is no longer written.
    let lite_audit: i64 = lite
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    rcv.restart_on("127.0.0.1:0");
    // The old registration verifies over mTLS.
    let mtls = rcv.agent(Some((&cert1, &key1)));
    let (st, body) = response(
        mtls.get(&rcv.url(&format!("registration_status_v2/{u1}")))
            .call(),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "Registered");
    assert_eq!(body["hostname"], "h1");
    // Users log in with their passwords.
    let (st, body, _) = rcv.register_existing("reg", "reg-pw", &new_uuid(), "h2");
    assert_eq!(st, 200, "{body}");
    let (st, _, _) = rcv.register_existing("reg", "wrong", &new_uuid(), "h2");
    assert_eq!(st, 401);
    // The token's use count continues: 2 of 5 used before, 3 now.
    let (st, body) = register_new(
        &rcv,
        &token,
        &new_uuid(),
        json!({"role": "web", "cmk/hostname": "web2"}),
    );
    assert_eq!(st, 200, "{body}");
    let tokens = rcv.admin_json(&["token", "list"]);
    let fleet = |l: &Value| {
        l["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "fleet")
            .unwrap()
            .clone()
    };
    assert_eq!(fleet(&tokens_before)["uses"], 2);
    assert_eq!(fleet(&tokens)["uses"], 3, "{tokens}");
    // New ids continue after the old ones.
    let t3 = rcv.admin_json(&["token", "create", "--host", "h2", "--name", "after"]);
    let max_token_before = max_id(&tokens_before, "tokens");
    assert!(t3["id"].as_i64().unwrap() > max_token_before, "{t3}");
    let audit = rcv.admin_json(&["audit", "--limit", "1000"]);
    let newest = max_id(&audit, "entries");
    assert!(newest > max_audit_id);
    // The held registration is still pending, and can be approved.
    let pend = rcv.admin_json(&["pending", "list"]);
    assert_eq!(pend["registrations"][0]["uuid"], held.as_str(), "{pend}");
    rcv.admin_json(&["pending", "approve", &held, "--folder", "/linux"]);
    // Agent data came along byte for byte.
    let out = rcv.admin(&["agent-data", "p1", "--raw"]);
    assert!(out.status.success());
    assert!(out.stdout == OUTPUT);
    // All of that went to PostgreSQL, none to the SQLite file.
    let after: i64 = lite
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after, lite_audit);
    assert!(pg_count(&db, "audit") > lite_audit);
}

#[test]
fn migrate_refuses_bad_arguments() {
    let rcv = TestReceiver::start_on("migr2", None, &[]);
    let out = migrate(&rcv, "postgres://u:secret@localhost/db", &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(receiver_bin())
        .args([
            "migrate",
            "--from",
            "postgres://x/y",
            "--to",
            "host=/tmp dbname=x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
