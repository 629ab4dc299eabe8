//! Folders.
use crate::receiver::store::sql::{params, Connection};

use super::*;

// ---------- folders ----------

/// Creates the folder (and missing parents, without groups) or updates its groups and pull
/// interval (None: inherited).
pub fn put_folder(
    c: &Connection,
    path: &str,
    groups: &[String],
    pull_interval: Option<i64>,
) -> Result<(String, bool)> {
    let path = normalize_folder(path)?;
    let groups = normalize_groups(c, groups)?;
    let mut changed = false;
    let anc = store::folder_ancestry(&path);
    for p in &anc[..anc.len() - 1] {
        if store::get_folder(c, p)?.is_none() {
            c.execute(
                "INSERT INTO folders(path, contact_groups) VALUES(?1,'[]')",
                [p],
            )?;
            changed = true;
        }
    }
    match store::get_folder(c, &path)? {
        Some(f) if f.contact_groups == groups && f.pull_interval == pull_interval => {}
        _ => {
            c.execute(
                "INSERT INTO folders(path, contact_groups, pull_interval) VALUES(?1,?2,?3)
                 ON CONFLICT(path) DO UPDATE SET contact_groups=excluded.contact_groups,
                   pull_interval=excluded.pull_interval",
                params![path, store::to_json(&groups), pull_interval],
            )?;
            changed = true;
        }
    }
    Ok((path, changed))
}

pub fn del_folder(c: &Connection, path: &str) -> Result<bool> {
    let path = normalize_folder(path)?;
    if path == "/" {
        return Err(Error::usage("the root folder cannot be deleted"));
    }
    let sub = format!("{path}/%");
    let used: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM hosts WHERE folder=?1 OR folder LIKE ?2)
              + (SELECT COUNT(*) FROM folders WHERE path LIKE ?2)",
        params![path, sub],
        |r| r.get(0),
    )?;
    if used > 0 {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("folder {path:?} still contains hosts or subfolders"),
        ));
    }
    Ok(c.execute("DELETE FROM folders WHERE path=?1", [path])? > 0)
}

pub fn folders(c: &Connection) -> Result<Vec<Folder>> {
    Ok(store::list_folders(c)?)
}

/// Sets the site-wide pull interval in seconds (None: back to the default); unchanged →
/// false.
pub fn set_site_interval(c: &Connection, secs: Option<i64>) -> Result<bool> {
    let key = store::PULL_INTERVAL_SETTING;
    let cur = store::get_setting(c, key)?;
    let want = secs.map(|s| s.to_string());
    if cur == want {
        return Ok(false);
    }
    match want {
        Some(v) => store::set_setting(c, key, &v)?,
        None => {
            c.execute("DELETE FROM settings WHERE key=?1", [key])?;
        }
    }
    Ok(true)
}
