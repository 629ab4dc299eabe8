//! Drop-in enrollment: `tether enroll` and the daemon converge enroll.toml / enroll.d against
//! real receivers, delete the credential afterwards, and report per-file state.
#[path = "support/agent.rs"]
mod agent;
mod common;
#[path = "support/daemon.rs"]
mod daemon;

use std::time::Duration;

use agent::{receiver_with_hosts, Agent, PASSWORD};
use common::TestReceiver;
use daemon::{eventually, Daemon};

/// A site that creates hosts labelled os=linux in /linux, and a scoped token for it.
fn site_with_token(site: &str) -> (TestReceiver, String, i64) {
    let rcv = receiver_with_hosts(site);
    rcv.admin_json(&["folder", "add", "/linux"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "linux",
        "--match",
        "os=linux",
        "--create-in",
        "/linux",
    ]);
    let t = rcv.admin_json(&[
        "token",
        "create",
        "--register-new",
        "--folder",
        "/linux",
        "--labels",
        "os=linux",
        "--max-uses",
        "5",
        "--name",
        "fleet",
    ]);
    (
        rcv,
        t["token"].as_str().unwrap().to_string(),
        t["id"].as_i64().unwrap(),
    )
}

fn new_host_file(rcv: &TestReceiver, token_file: &std::path::Path, host: &str) -> String {
    format!(
        "server = \"{}\"\nsite = \"{}\"\ntrust_fingerprint = \"{}\"\nmode = \"new\"\ntoken_file = {:?}\nlabels = {{ os = \"linux\", \"cmk/hostname\" = \"{host}\" }}\n",
        rcv.server(),
        rcv.site,
        rcv.fingerprint,
        token_file.display().to_string()
    )
}

fn uses(rcv: &TestReceiver, id: i64) -> i64 {
    let l = rcv.admin_json(&["token", "list"]);
    l["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()["uses"]
        .as_i64()
        .unwrap()
}

#[test]
fn enroll_is_idempotent_and_drops_the_credential() {
    let (rcv, token, id) = site_with_token("e1");
    let a = Agent::new();
    let tf = a.path("enroll.token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    std::fs::write(a.path("enroll.toml"), new_host_file(&rcv, &tf, "web17")).unwrap();

    let first = a.run(&["enroll", "--json"]).ok("tether.enroll.schema.json");
    let e = &first["enrollments"][0];
    assert_eq!(e["status"], "enrolled", "{first}");
    assert_eq!(e["changed"], true);
    assert_eq!(e["host_name"], "web17");
    assert_eq!(e["credential_removed"], true);
    assert!(!tf.exists(), "the token file is deleted once enrolled");
    assert_eq!(uses(&rcv, id), 1);

    let second = a.run(&["enroll", "--json"]).ok("tether.enroll.schema.json");
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(second["enrollments"][0]["status"], "enrolled");
    assert_eq!(second["enrollments"][0]["uuid"], e["uuid"]);
    assert_eq!(uses(&rcv, id), 1, "a second run sends nothing");

    let st = a.run(&["status", "--json"]).ok("tether.status.schema.json");
    let en = &st["enrollments"][0];
    assert_eq!(en["status"], "enrolled");
    assert_eq!(en["uuid"], e["uuid"]);
    assert!(en["last_tried"].is_string());
    assert_eq!(st["connections"][0]["remote"]["hostname"], "web17");
}

#[test]
fn several_sites_and_failures_are_reported_per_file() {
    let (site_a, token, _) = site_with_token("e2");
    let site_b = receiver_with_hosts("e3");
    let a = Agent::new();
    std::fs::create_dir(a.path("enroll.d")).unwrap();
    // a: a new host with a scoped token; b: an existing host with a user and password file;
    // c: a token that is wrong.
    let tf = a.path("a.token");
    std::fs::write(&tf, &token).unwrap();
    std::fs::write(
        a.path("enroll.d/a.toml"),
        new_host_file(&site_a, &tf, "app1"),
    )
    .unwrap();
    let pw = a.path("b.password");
    std::fs::write(&pw, PASSWORD).unwrap();
    std::fs::write(
        a.path("enroll.d/b.toml"),
        format!(
            "server = \"{}\"\nsite = \"e3\"\ntrust_fingerprint = \"{}\"\nmode = \"existing\"\nhost_name = \"h2\"\nuser = \"reg\"\npassword_file = {:?}\n",
            site_b.server(),
            site_b.fingerprint,
            pw.display().to_string()
        ),
    )
    .unwrap();
    let (site_c, _, _) = site_with_token("e4");
    let bad = a.path("c.token");
    std::fs::write(&bad, "1:00000000-0000-4000-8000-000000000000").unwrap();
    std::fs::write(
        a.path("enroll.d/c.toml"),
        new_host_file(&site_c, &bad, "app3"),
    )
    .unwrap();

    let r = a.run(&["enroll", "--json"]);
    assert_eq!(r.code, 3, "the first failure's exit code\n{}", r.stderr);
    let doc = r.json();
    common::validate_json("tether.enroll.schema.json", &doc);
    assert_eq!(doc["ok"], false);
    let by_file = |suffix: &str| {
        doc["enrollments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["file"].as_str().unwrap().ends_with(suffix))
            .cloned()
            .unwrap()
    };
    assert_eq!(by_file("a.toml")["status"], "enrolled");
    assert_eq!(by_file("b.toml")["status"], "enrolled");
    assert_eq!(by_file("b.toml")["host_name"], "h2");
    assert!(!pw.exists(), "the password file is deleted once enrolled");
    let c = by_file("c.toml");
    assert_eq!(c["status"], "failed");
    assert_eq!(c["error"]["code"], "auth_failed");
    assert!(bad.exists(), "a credential that did not work is kept");

    let st = a
        .run(&["status", "--json", "--no-query-remote"])
        .ok("tether.status.schema.json");
    let failed: Vec<_> = st["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{st}");
    assert_eq!(failed[0]["error_code"], "auth_failed");

    // A file that is not valid: usage, names the file, nothing else changes.
    std::fs::write(a.path("enroll.d/d.toml"), "server = 1\n").unwrap();
    let r = a.run(&["enroll", "--json"]);
    let doc = r.json();
    let d = doc["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"].as_str().unwrap().ends_with("d.toml"))
        .cloned()
        .unwrap();
    assert_eq!(d["error"]["code"], "usage");
    assert!(d["error"]["message"].as_str().unwrap().contains("d.toml"));
    assert_eq!(a.connections().len(), 2);
}

#[test]
fn no_enrollment_files_is_a_clear_error() {
    let a = Agent::new();
    let e = a.run(&["enroll", "--json"]).err("not_found", 14);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("enroll.toml"));
}

#[test]
fn the_daemon_enrolls_once_the_site_is_reachable() {
    let (mut rcv, token, _) = site_with_token("e5");
    assert!(rcv.stop());
    let a = Agent::new();
    let tf = a.path("enroll.token");
    std::fs::write(&tf, &token).unwrap();
    std::fs::write(a.path("enroll.toml"), new_host_file(&rcv, &tf, "late1")).unwrap();
    let d = Daemon::start(
        &a,
        &format!(
            "[agent]\nfile = {:?}\n[pull]\nregistry_poll_ms = 200\n",
            daemon::fixture().display().to_string()
        ),
        &[],
    );
    // The first attempt meets no receiver; the daemon keeps trying.
    eventually(Duration::from_secs(10), "a failed first attempt", || {
        let st = a.run(&["status", "--json", "--no-query-remote"]).json();
        st["enrollments"][0]["status"] == "failed"
            && st["enrollments"][0]["error_code"] == "network"
    });
    rcv.restart_same_port();
    eventually(
        Duration::from_secs(30),
        "enrollment after the site came back",
        || {
            let st = a.run(&["status", "--json", "--no-query-remote"]).json();
            st["enrollments"][0]["status"] == "enrolled"
        },
    );
    assert!(!tf.exists());
    // The new connection is served without a restart: the site pulls it.
    let host = "late1";
    rcv.admin_json(&[
        "host",
        "add",
        host,
        "--folder",
        "/linux",
        "--address",
        "127.0.0.1",
        "--agent-port",
        &d.port().to_string(),
    ]);
    eventually(
        Duration::from_secs(10),
        "a pull of the enrolled host",
        || rcv.admin(&["fetch", host, "--json"]).status.success(),
    );
    let data = rcv.admin_json(&["agent-data", host]);
    assert_eq!(data["ok"], true);
    d.stop();
}
