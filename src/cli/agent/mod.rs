//! The agent-side CLI, binary `tether`.

/// Schemas of this CLI's JSON outputs.
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    Vec::new()
}
