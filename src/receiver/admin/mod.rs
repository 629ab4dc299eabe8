//! Admin operations on the database, shared by the CLI commands and `apply`. Each runs inside
//! the caller's transaction and reports whether it changed anything, so repeating a command
//! (or an apply) is a no-op.

mod folders;
mod hosts;
mod rules;
pub mod tokens;
mod users;

pub use self::folders::*;
pub use self::hosts::*;
pub use self::rules::*;
pub use self::tokens::*;
pub use self::users::*;

use std::collections::BTreeMap;

use crate::receiver::store::sql::{params, Connection};

use super::perms;
use super::store::{self, Folder, Host, Role, User};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::validate;

pub use super::store::db_err;

pub const SETTING_SITE: &str = "site";
pub const SETTING_CERT_LIFETIME: &str = "agent_cert_lifetime_secs";
pub const DEFAULT_CERT_LIFETIME: i64 = 90 * 86400;

/// Creates the schema, built-in roles and the root folder; leaves existing data alone.
pub fn init_db(c: &Connection, site: &str, lifetime_secs: i64) -> Result<bool> {
    store::migrate_in_tx(c)?;
    let mut changed = false;
    match store::get_setting(c, SETTING_SITE)? {
        Some(s) if s != site => {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("directory already initialised for site {s:?}, not {site:?}"),
            ))
        }
        Some(_) => {}
        None => {
            store::set_setting(c, SETTING_SITE, site)?;
            store::set_setting(c, SETTING_CERT_LIFETIME, &lifetime_secs.to_string())?;
            changed = true;
        }
    }
    // Built-in roles are kept current: a newer tether may add permissions to them.
    for (name, ps) in perms::builtin_roles() {
        let want: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        match store::get_role(c, name)? {
            Some(r) if r.permissions == want => {}
            Some(_) => {
                c.execute(
                    "UPDATE roles SET permissions=?2, builtin=1 WHERE name=?1",
                    params![name, store::to_json(&ps)],
                )?;
                changed = true;
            }
            None => {
                c.execute(
                    "INSERT INTO roles(name, builtin, permissions) VALUES(?1, 1, ?2)",
                    params![name, store::to_json(&ps)],
                )?;
                changed = true;
            }
        }
    }
    if store::get_folder(c, "/")?.is_none() {
        c.execute(
            "INSERT INTO folders(path, contact_groups) VALUES('/', '[]')",
            [],
        )?;
        changed = true;
    }
    Ok(changed)
}

pub fn site(c: &Connection) -> Result<String> {
    store::get_setting(c, SETTING_SITE)?
        .ok_or_else(|| Error::local_state("receiver directory is not initialised; run init"))
}

pub fn cert_lifetime(c: &Connection) -> Result<i64> {
    Ok(store::get_setting(c, SETTING_CERT_LIFETIME)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CERT_LIFETIME))
}

// ---------- names ----------

/// Names of users, roles and groups: printable, no path or shell metacharacters.
pub fn validate_name(kind: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
        && !s.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid {kind} name {:?}: use letters, digits, '_', '-', '.', '@'",
            s.chars().take(80).collect::<String>()
        )))
    }
}

/// Folder paths: "/" or "/a/b", segments like host names.
pub fn normalize_folder(s: &str) -> Result<String> {
    let t = s.trim();
    let segs: Vec<&str> = t.split('/').filter(|p| !p.is_empty()).collect();
    for seg in &segs {
        if validate::validate_host_name(seg).is_err() {
            return Err(Error::usage(format!(
                "invalid folder path {:?}: segments use letters, digits, '.', '-', '_'",
                s.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(format!("/{}", segs.join("/")))
}

fn normalize_groups(c: &Connection, groups: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        validate_name("contact group", g)?;
        if !store::group_exists(c, g)? {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("contact group {g:?} does not exist"),
            ));
        }
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    out.sort();
    Ok(out)
}
