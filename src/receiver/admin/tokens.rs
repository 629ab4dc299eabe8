//! Registration tokens. Two kinds:
//! - host-bound: registers one existing host, once (`register_existing_token`);
//! - scoped enrollment tokens (`register_new` only): meant to ride in deployment packages, so
//!   assumed public. They create new hosts through the rules only, within a folder, for
//!   agents that carry the required labels, a bounded number of times, until they expire or
//!   are revoked. They never register an existing host or replace a registration.
//!
//! Only the secret's SHA-256 is stored; the secret is shown once.
use std::collections::BTreeMap;

use crate::receiver::store::sql::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::*;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Register this existing host, once.
    Host(String),
    /// Create new hosts through the rules, in `folder` or below (any when `None`), for
    /// agents that send all of `labels`.
    RegisterNew {
        folder: Option<String>,
        labels: BTreeMap<String, String>,
    },
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub name: Option<String>,
    pub scope: TokenScope,
    pub ttl_secs: i64,
    pub max_uses: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: Option<String>,
    /// `host` (one existing host, once) or `register_new` (new hosts through the rules).
    pub scope: String,
    /// The host a host-bound token registers.
    pub host: Option<String>,
    /// register_new tokens: rules must create in this folder or below.
    pub folder: Option<String>,
    /// register_new tokens: labels the agent must send.
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub remaining_uses: i64,
    pub last_used_at: Option<i64>,
    /// UUID of the last connection registered with it.
    pub used_by_uuid: Option<String>,
    pub revoked: bool,
}

impl TokenInfo {
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("token {} ({n})", self.id),
            None => format!("token {}", self.id),
        }
    }
    /// The scope in words, for refusals.
    pub fn scope_text(&self) -> String {
        match (&self.host, &self.folder) {
            (Some(h), _) => format!("host {h}"),
            (None, f) => {
                let mut s = format!("register_new in {}", f.as_deref().unwrap_or("any folder"));
                if !self.labels.is_empty() {
                    let l: Vec<String> = self
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    s.push_str(&format!(" with labels {}", l.join(",")));
                }
                s
            }
        }
    }
}

const COLUMNS: &str = "id, name, scope, host, folder, labels, created_at, expires_at, max_uses, \
                       uses, last_used_at, used_by_uuid, revoked, secret_sha256";

fn row(
    r: &crate::receiver::store::sql::Row,
) -> crate::receiver::store::sql::Result<(TokenInfo, Vec<u8>)> {
    let scope: String = r.get(2)?;
    let host: String = r.get(3)?;
    let max_uses: i64 = r.get(8)?;
    let uses: i64 = r.get(9)?;
    let revoked: bool = r.get(12)?;
    Ok((
        TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            host: (scope == "host").then_some(host),
            scope,
            folder: r.get(4)?,
            labels: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            max_uses,
            uses,
            remaining_uses: if revoked { 0 } else { (max_uses - uses).max(0) },
            last_used_at: r.get(10)?,
            used_by_uuid: r.get(11)?,
            revoked,
        },
        r.get(13)?,
    ))
}

fn validate_name(name: &str) -> Result<()> {
    // Starts with a letter, so `NAME:SECRET` is never mistaken for `ID:SECRET`.
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid token name {name:?}: a letter, then up to 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Creates a token; returns (id, secret, expiry). `secret` is generated unless given
/// (`apply` takes it from a file or the environment).
pub fn create_token(
    c: &Connection,
    spec: &TokenSpec,
    secret: Option<&str>,
) -> Result<(i64, String, i64)> {
    if spec.ttl_secs <= 0 {
        return Err(Error::usage("the token lifetime must be positive"));
    }
    if let Some(n) = &spec.name {
        validate_name(n)?;
        if token_by_name(c, n)?.is_some_and(|t| !t.revoked) {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("a token named {n} exists; revoke it first or pick another name"),
            ));
        }
    }
    let (scope, host, folder, labels, max_uses) = match &spec.scope {
        TokenScope::Host(host) => {
            validate::validate_host_name(host)?;
            if store::get_host(c, host)?.is_none() {
                return Err(Error::new(
                    ErrorCode::HostNotFound,
                    format!("Host {host} does not exist."),
                ));
            }
            if spec.max_uses != 1 {
                return Err(Error::usage(
                    "a host-bound token is single-use; --max-uses needs --register-new",
                ));
            }
            ("host", host.clone(), None, BTreeMap::new(), 1)
        }
        TokenScope::RegisterNew { folder, labels } => {
            if let Some(f) = folder {
                if store::get_folder(c, f)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::NotFound,
                        format!("folder {f} does not exist"),
                    )
                    .hint("create it first: tether-receiver folder add PATH"));
                }
            }
            if spec.max_uses < 1 {
                return Err(Error::usage("--max-uses must be at least 1"));
            }
            (
                "register_new",
                String::new(),
                folder.clone(),
                labels.clone(),
                spec.max_uses,
            )
        }
    };
    let secret = match secret {
        Some(s) => {
            if s.len() < 16 || s.contains(char::is_whitespace) {
                return Err(Error::usage(
                    "a token secret needs at least 16 characters and no whitespace",
                ));
            }
            s.to_string()
        }
        None => uuid::Uuid::new_v4().hyphenated().to_string(),
    };
    let t = store::now();
    let expires = t + spec.ttl_secs;
    let id: i64 = c.query_row(
        "INSERT INTO tokens(name, scope, host, folder, labels, secret_sha256, created_at,
             expires_at, max_uses)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9) RETURNING id",
        params![
            spec.name,
            scope,
            host,
            folder,
            store::to_json(&labels),
            crate::receiver::auth::token_digest(&secret),
            t,
            expires,
            max_uses
        ],
        |r| r.get(0),
    )?;
    Ok((id, secret, expires))
}

pub fn tokens(c: &Connection) -> Result<Vec<TokenInfo>> {
    let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))?;
    let rows = st.query_map([], |r| row(r).map(|x| x.0))?;
    Ok(rows.collect::<crate::receiver::store::sql::Result<_>>()?)
}

/// A token with its secret's digest, for authentication.
pub fn token_with_digest(
    c: &Connection,
    id: i64,
) -> crate::receiver::store::sql::Result<Option<(TokenInfo, Vec<u8>)>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM tokens WHERE id=?1"),
        [id],
        row,
    )
    .optional()
}

/// A presented token (by id, or by name: the newest one not revoked), with its digest.
pub fn lookup(
    c: &Connection,
    r: &crate::receiver::auth::TokenRef,
) -> crate::receiver::store::sql::Result<Option<(TokenInfo, Vec<u8>)>> {
    use crate::receiver::auth::TokenRef;
    match r {
        TokenRef::Id(id) => token_with_digest(c, *id),
        TokenRef::Name(n) => c
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM tokens WHERE name=?1 AND revoked=0 ORDER BY id DESC LIMIT 1"
                ),
                [n],
                row,
            )
            .optional(),
    }
}

/// The newest token of that name.
pub fn token_by_name(
    c: &Connection,
    name: &str,
) -> crate::receiver::store::sql::Result<Option<TokenInfo>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM tokens WHERE name=?1 ORDER BY id DESC LIMIT 1"),
        [name],
        |r| row(r).map(|x| x.0),
    )
    .optional()
}

/// Why a presented token does not authenticate (401 texts; Checkmk's where it has them).
pub fn check_secret(t: &TokenInfo, digest: &[u8], secret: &str, now: i64) -> Result<(), String> {
    if !crate::receiver::auth::token_matches(secret, digest) {
        return Err("Invalid token".into());
    }
    if t.revoked {
        return Err("Token has been revoked".into());
    }
    if t.expires_at <= now {
        return Err("Token has expired".into());
    }
    if t.uses >= t.max_uses {
        return Err(if t.scope == "host" {
            "Token has already been used".into()
        } else {
            format!("Token has no uses left (all {} used)", t.max_uses)
        });
    }
    Ok(())
}

/// Counts one use, inside the registration's transaction: exact under concurrency, as the
/// site's writes are serialised. False when none was left (or it was revoked meanwhile).
pub fn count_use(
    c: &Connection,
    id: i64,
    uuid: &str,
    now: i64,
) -> crate::receiver::store::sql::Result<bool> {
    let n = c.execute(
        "UPDATE tokens SET uses=uses+1, last_used_at=?2, used_at=COALESCE(used_at, ?2),
             used_by_uuid=?3
         WHERE id=?1 AND uses<max_uses AND revoked=0",
        params![id, now, uuid],
    )?;
    Ok(n == 1)
}

/// Whether `folder` is `scope` or below it.
pub fn folder_within(folder: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty() || folder == scope || folder.starts_with(&format!("{scope}/"))
}

/// Converges the named register_new token to `spec` with this secret (`apply`). Returns
/// `None` when nothing changed, else `create` or `update`. A changed secret revokes the old
/// token and creates a new one; scope and use limit change in place (uses are kept). An
/// expired token is left expired: expiry bounds a leaked secret, re-applying must not lift it.
pub fn put_token(c: &Connection, spec: &TokenSpec, secret: &str) -> Result<Option<&'static str>> {
    let name = spec
        .name
        .as_deref()
        .ok_or_else(|| Error::usage("a declared token needs a name"))?;
    let TokenScope::RegisterNew { folder, labels } = &spec.scope else {
        return Err(Error::usage(
            "only register_new tokens can be declared; host-bound tokens are one-off (token create --host)",
        ));
    };
    let existing = lookup(c, &crate::receiver::auth::TokenRef::Name(name.to_string()))?;
    let Some((t, digest)) = existing else {
        create_token(c, spec, Some(secret))?;
        return Ok(Some("create"));
    };
    if !crate::receiver::auth::token_matches(secret, &digest) {
        revoke_token(c, t.id)?;
        create_token(c, spec, Some(secret))?;
        return Ok(Some("update"));
    }
    if t.folder == *folder && t.labels == *labels && t.max_uses == spec.max_uses {
        return Ok(None);
    }
    if let Some(f) = folder {
        if store::get_folder(c, f)?.is_none() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("folder {f} does not exist"),
            ));
        }
    }
    if spec.max_uses < 1 {
        return Err(Error::usage("max_uses must be at least 1"));
    }
    c.execute(
        "UPDATE tokens SET folder=?2, labels=?3, max_uses=?4 WHERE id=?1",
        params![t.id, folder, store::to_json(labels), spec.max_uses],
    )?;
    Ok(Some("update"))
}

/// A token by id or by name.
pub fn find_token(c: &Connection, key: &str) -> Result<TokenInfo> {
    let found = match key.parse::<i64>() {
        Ok(id) => token_with_digest(c, id)?.map(|x| x.0),
        Err(_) => token_by_name(c, key)?,
    };
    found.ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no token {key}")))
}

pub fn revoke_token(c: &Connection, id: i64) -> Result<bool> {
    let n = c.execute(
        "UPDATE tokens SET revoked=1 WHERE id=?1 AND revoked=0",
        [id],
    )?;
    if n == 0 {
        let exists: Option<i64> = c
            .query_row("SELECT id FROM tokens WHERE id=?1", [id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("token {id} does not exist"),
            ));
        }
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::folder_within;

    #[test]
    fn folder_scope_is_a_path_prefix() {
        assert!(folder_within("/linux", "/linux"));
        assert!(folder_within("/linux/web", "/linux"));
        assert!(folder_within("/linux/web", "/linux/"));
        assert!(!folder_within("/linuxes", "/linux"));
        assert!(!folder_within("/", "/linux"));
        assert!(folder_within("/anything", "/"));
    }
}
