//! `apply FILE`: converges to the file, is idempotent, and `--dry-run` changes nothing.
mod common;

use common::*;

const FILE: &str = r#"
groups:
  - name: ops
    alias: Operations
roles:
  - name: registrar
    permissions:
      - agent_registration.register_managed_existing_host
folders:
  - path: /linux
    contact_groups: [ops]
users:
  - name: automation
    role: registrar
    contact_groups: [ops]
    password_file: automation.pw
  - name: envuser
    role: agent_registration
    password_env: APPLY_TEST_PW
hosts:
  - name: web1
    folder: /linux
  - name: push1
    folder: /linux
    mode: push
    address: 10.0.0.7
rules:
  - name: linux
    match: {os: linux}
    action: create
    folder: /linux
  - name: rest
    action: hold
"#;

fn apply(r: &TestReceiver, file: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["apply", file.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = std::process::Command::new(receiver_bin())
        .args(&args)
        .arg("--dir")
        .arg(r.dir.path())
        .env("APPLY_TEST_PW", "from-env")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{doc}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    validate_json("receiver.apply.schema.json", &doc);
    doc
}

#[test]
fn apply_converges_and_is_idempotent() {
    let r = TestReceiver::start("apply");
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("automation.pw"), "pw-from-file\n").unwrap();
    let file = cfg.path().join("site.yml");
    std::fs::write(&file, FILE).unwrap();

    let dry = apply(&r, &file, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changed"], true);
    let n = dry["changes"].as_array().unwrap().len();
    assert_eq!(
        r.admin_json(&["host", "list"])["hosts"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let first = apply(&r, &file, &[]);
    assert_eq!(first["changed"], true);
    assert_eq!(
        first["changes"].as_array().unwrap().len(),
        n,
        "dry run reported what a run does"
    );
    let second = apply(&r, &file, &[]);
    assert_eq!(second["changed"], false, "{second}");
    assert!(second["changes"].as_array().unwrap().is_empty());

    // The converged state works: the file's user registers the file's host.
    r.admin_json(&["group", "list"]);
    let (st, body, _) = r.register_existing("automation", "pw-from-file", &new_uuid(), "web1");
    assert_eq!(st, 200, "{body}");
    let (st, _, _) = r.register_existing("envuser", "from-env", &new_uuid(), "push1");
    assert_eq!(st, 200);

    // A change is reported as one update; deletions via absent.
    let changed = FILE.replace("address: 10.0.0.7", "address: 10.0.0.8");
    let changed = changed.replace("hosts:\n", "hosts:\n  - name: gone\n    absent: true\n");
    std::fs::write(&file, changed).unwrap();
    let third = apply(&r, &file, &[]);
    let ch = third["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 1, "{third}");
    assert_eq!(ch[0]["action"], "update");
    assert_eq!(ch[0]["name"], "push1");

    // A bad file changes nothing and reports a usage error.
    std::fs::write(&file, "hosts:\n  - name: ok1\n  - name: ../bad\n").unwrap();
    let (code, _) = r.admin_json_err(&["apply", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    let hosts = r.admin_json(&["host", "list"]);
    assert!(!hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "ok1"));
    std::fs::write(&file, "hosts: [{name: x, colour: red}]\n").unwrap();
    let (code, _) = r.admin_json_err(&["apply", file.to_str().unwrap()]);
    assert_eq!(code, 2);
}
