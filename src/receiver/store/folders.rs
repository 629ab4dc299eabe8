//! The folder tree and its inherited contact groups.
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Folder {
    pub path: String,
    pub contact_groups: Vec<String>,
    /// Seconds between pulls for the hosts below, unless a subfolder or host says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval: Option<i64>,
}

fn folder_row(r: &sql::Row) -> sql::Result<Folder> {
    Ok(Folder {
        path: r.get(0)?,
        contact_groups: json_list(&r.get::<_, String>(1)?),
        pull_interval: r.get(2)?,
    })
}

pub fn get_folder(c: &Connection, path: &str) -> sql::Result<Option<Folder>> {
    c.query_row(
        "SELECT path, contact_groups, pull_interval FROM folders WHERE path=?1",
        [path],
        folder_row,
    )
    .optional()
}

pub fn list_folders(c: &Connection) -> sql::Result<Vec<Folder>> {
    let mut st =
        c.prepare("SELECT path, contact_groups, pull_interval FROM folders ORDER BY path")?;
    let rows = st.query_map([], folder_row)?;
    rows.collect()
}

pub fn folder_groups_effective(c: &Connection, path: &str) -> sql::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in folder_ancestry(path) {
        if let Some(f) = get_folder(c, &p)? {
            for g in f.contact_groups {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    Ok(out)
}

/// "/a/b" → ["/", "/a", "/a/b"].
pub fn folder_ancestry(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}
