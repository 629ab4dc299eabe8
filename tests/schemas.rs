//! The committed schemas must be exactly what the Rust output types generate.
use std::path::Path;

#[test]
fn committed_schemas_match_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut drift = Vec::new();
    let all = tether::cli::schemas::all();
    assert!(all.len() >= 10, "expected schemas for both CLIs");
    for (name, schema) in &all {
        let want = tether::cli::schemas::render(schema);
        let have = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if want != have {
            drift.push(name.clone());
        }
    }
    let names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
    for entry in std::fs::read_dir(&dir).expect("schemas/ exists") {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        if file.ends_with(".json") && !names.iter().any(|n| **n == file) {
            drift.push(format!("{file} (stale: no type generates it)"));
        }
    }
    assert!(
        drift.is_empty(),
        "schemas drifted: {drift:?}; regenerate with `cargo run --bin tether -- schemas --dir schemas`"
    );
}
