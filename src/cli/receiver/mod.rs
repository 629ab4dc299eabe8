//! The site-side CLI, binary `tether-receiver`.

/// Schemas of this CLI's JSON outputs.
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    Vec::new()
}
