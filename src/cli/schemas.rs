//! JSON Schemas of every command's output, generated from the Rust types. `tether schemas
//! --dir schemas` writes them; tests/schemas.rs fails when the committed files drift.
use schemars::{schema_for, Schema};

use super::error::ErrorDocument;

/// (file name, schema) for every JSON output of both CLIs.
pub fn all() -> Vec<(String, Schema)> {
    let mut v: Vec<(String, Schema)> =
        vec![("error.schema.json".into(), schema_for!(ErrorDocument))];
    v.extend(super::agent::schemas());
    v.extend(super::receiver::schemas());
    v
}

pub fn write_all(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, schema) in all() {
        let text = render(&schema);
        std::fs::write(dir.join(&name), text)?;
        written.push(name);
    }
    Ok(written)
}

pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}
