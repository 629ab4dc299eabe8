//! Errors and help that say exactly what is wrong: a delete that matches nothing, trust
//! failures that label each fingerprint, `tether-receiver fingerprint` naming what to pin,
//! and --help listing the values of enumerated options.
#[path = "support/agent.rs"]
mod agent;
mod common;

use std::process::Command;

use agent::{receiver_with_hosts, tether_bin, Agent};
use common::{receiver_bin, validate_json};

#[test]
fn delete_of_nothing_is_not_found_and_delete_all_of_nothing_is_fine() {
    let rcv = receiver_with_hosts("pe1");
    let a = Agent::new();
    a.run(&["delete", "--json", "nosuch"]).err("not_found", 14);
    let empty = a
        .run(&["delete-all", "--json"])
        .ok("tether.delete.schema.json");
    assert_eq!(empty["changed"], false);

    let reg = a
        .register(&rcv, "h1", "reg", &[])
        .ok("tether.register.schema.json");
    let v = a.run(&["delete", "--json", "nosuch"]).err("not_found", 14);
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuch"));
    assert_eq!(a.connections().len(), 1, "a failed delete changes nothing");
    let gone = a
        .run(&["delete", "--json", "h1"])
        .ok("tether.delete.schema.json");
    assert_eq!(gone["changed"], true);
    assert_eq!(gone["deleted"][0], reg["connection"]["uuid"]);
    // Deleting it again: nothing matches any more.
    let text = a.run(&["delete", "h1"]);
    assert_eq!(text.code, 14);
    assert!(text.stderr.contains("error [not_found]"), "{}", text.stderr);
}

fn site_ca_fingerprint(rcv: &common::TestReceiver) -> String {
    let fp = rcv.admin_json(&["fingerprint"]);
    validate_json("receiver.fingerprint.schema.json", &fp);
    fp["site_ca_fingerprint"].as_str().unwrap().to_string()
}

#[test]
fn trust_errors_label_server_certificate_and_site_ca() {
    let rcv = receiver_with_hosts("pe2");
    let ca = site_ca_fingerprint(&rcv);
    let a = Agent::new();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let server = rcv.server();
    let args = [
        "register",
        "-s",
        &server,
        "-i",
        &rcv.site,
        "-H",
        "h1",
        "-U",
        "reg",
        "--trust-fingerprint",
        &wrong,
    ];
    let env = [("TETHER_PASSWORD", agent::PASSWORD)];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = a.run_with(&json_args, None, &env);
    let v = out.err("trust", 8);
    let e = &v["error"];
    // Kept as it was for scripts: the chain, leaf first.
    assert_eq!(
        e["server_fingerprints"],
        serde_json::json!([rcv.fingerprint, ca])
    );
    assert_eq!(
        e["presented_certificates"],
        serde_json::json!([
            {"role": "server_certificate", "fingerprint": rcv.fingerprint},
            {"role": "site_ca", "fingerprint": ca},
        ])
    );

    let text = a.run_with(&args, None, &env);
    assert_eq!(text.code, 8);
    assert!(
        text.stderr
            .contains(&format!("server certificate: {}", rcv.fingerprint)),
        "{}",
        text.stderr
    );
    assert!(
        text.stderr.contains(&format!("site CA:            {ca}")),
        "{}",
        text.stderr
    );

    // Without a trust option: the same labels, from the probe handshake.
    let out = a.run(&["probe", "--json", "-s", &server, "-i", &rcv.site]);
    let v = out.err("trust", 8);
    assert_eq!(v["error"]["presented_certificates"][1]["role"], "site_ca");

    // The site CA's fingerprint is a valid pin.
    let ok = a.register(&rcv, "h1", "reg", &[]);
    ok.ok("tether.register.schema.json");
    let mut pinned_ca = args.to_vec();
    let last = pinned_ca.len() - 1;
    pinned_ca[last] = &ca;
    pinned_ca[6] = "h2";
    pinned_ca.extend(["--json", "--force"]);
    a.run_with(&pinned_ca, None, &env)
        .ok("tether.register.schema.json");
}

#[test]
fn receiver_fingerprint_names_both_and_which_to_pin() {
    let rcv = receiver_with_hosts("pe3");
    let fp = rcv.admin_json(&["fingerprint"]);
    validate_json("receiver.fingerprint.schema.json", &fp);
    assert_eq!(fp["fingerprint"], rcv.fingerprint.as_str());
    assert_eq!(
        fp["server_certificate_fingerprint"],
        rcv.fingerprint.as_str()
    );
    let ca = fp["site_ca_fingerprint"].as_str().unwrap();
    assert!(ca.starts_with("sha256:") && ca != rcv.fingerprint);

    let text = rcv.admin(&["fingerprint"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("server certificate: {}", rcv.fingerprint)));
    assert!(text.contains(&format!("site CA:            {ca}")));
    assert!(text.contains("Pin the site CA"), "{text}");

    // init (idempotent) shows both as well.
    let init = rcv.admin_json(&["init", "--site", &rcv.site]);
    validate_json("receiver.init.schema.json", &init);
    assert_eq!(init["site_ca_fingerprint"], ca);
}

fn short_help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).arg("-h").output().unwrap();
    assert!(out.status.success());
    // clap wraps long lines; join them so a value list reads as one.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn help_lists_the_values_of_enumerated_options() {
    for cmd in ["register", "register-new", "proxy-register"] {
        let h = short_help(tether_bin(), &[cmd]);
        assert!(
            h.contains("[possible values: ec, rsa2048, rsa4096]"),
            "{cmd}: {h}"
        );
        assert!(h.contains("[possible values: text, json]"), "{cmd}: {h}");
    }
    let h = short_help(tether_bin(), &["keys", "refill"]);
    assert!(h.contains("[possible values: ec, rsa2048, rsa4096]"), "{h}");
    for args in [
        &["host", "add"][..],
        &["rule", "add"][..],
        &["pending", "approve"][..],
    ] {
        let h = short_help(receiver_bin(), args);
        assert!(h.contains("[possible values: pull, push]"), "{args:?}: {h}");
    }
    let h = short_help(receiver_bin(), &["role", "add"]);
    assert!(
        h.contains("possible values: agent_registration.register_any_existing_host,"),
        "{h}"
    );
    let h = short_help(receiver_bin(), &["serve"]);
    assert!(h.contains("[possible values: text, json]"), "{h}");

    // Older spellings still parse (case does not matter): this fails on the network, not
    // on the arguments.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let a = Agent::new();
    for kt in ["P256", "ecdsa", "RSA2048"] {
        let out = a.run_with(
            &[
                "register",
                "--json",
                "-s",
                &dead,
                "-i",
                "s",
                "-H",
                "h1",
                "-U",
                "reg",
                "--trust-cert",
                "--key-type",
                kt,
            ],
            None,
            &[("TETHER_PASSWORD", "x")],
        );
        out.err("network", 9);
    }
    let bad = a.run(&["register", "--json", "--key-type", "dsa"]);
    let v = bad.err("usage", 2);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("possible values: ec, rsa2048, rsa4096"),
        "{v}"
    );
}
