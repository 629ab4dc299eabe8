//! The committed JSON Schemas of tether-receiver's outputs match the Rust types.
//! `TETHER_WRITE_SCHEMAS=1 cargo test --test receiver_schemas` rewrites them.
use std::path::Path;

#[test]
fn receiver_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    if std::env::var_os("TETHER_WRITE_SCHEMAS").is_some() {
        tether::cli::schemas::write_all(&dir).expect("write schemas");
    }
    let mut all = tether::cli::receiver::schemas();
    all.push((
        "error.schema.json".into(),
        schemars::schema_for!(tether::cli::error::ErrorDocument),
    ));
    for (name, schema) in all {
        let want = tether::cli::schemas::render(&schema);
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert_eq!(
            have, want,
            "schemas/{name} is stale; run with TETHER_WRITE_SCHEMAS=1"
        );
    }
}
