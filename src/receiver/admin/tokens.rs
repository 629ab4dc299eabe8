//! One-time registration tokens.
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::*;

// ---------- tokens ----------

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub host: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub used_by_uuid: Option<String>,
    pub revoked: bool,
}

/// Creates a token and returns (id, secret). Only the secret's SHA-256 is stored.
pub fn create_token(c: &Connection, host: &str, ttl_secs: i64) -> Result<(i64, String, i64)> {
    validate::validate_host_name(host)?;
    if store::get_host(c, host)?.is_none() {
        return Err(Error::new(
            ErrorCode::HostNotFound,
            format!("Host {host} does not exist."),
        ));
    }
    if ttl_secs <= 0 {
        return Err(Error::usage("the token lifetime must be positive"));
    }
    let secret = uuid::Uuid::new_v4().hyphenated().to_string();
    let t = store::now();
    let expires = t + ttl_secs;
    c.execute(
        "INSERT INTO tokens(host, secret_sha256, created_at, expires_at) VALUES(?1,?2,?3,?4)",
        params![
            host,
            crate::receiver::auth::token_digest(&secret),
            t,
            expires
        ],
    )?;
    Ok((c.last_insert_rowid(), secret, expires))
}

pub fn tokens(c: &Connection) -> Result<Vec<TokenInfo>> {
    let mut st = c.prepare(
        "SELECT id, host, created_at, expires_at, used_at, used_by_uuid, revoked FROM tokens ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            host: r.get(1)?,
            created_at: r.get(2)?,
            expires_at: r.get(3)?,
            used_at: r.get(4)?,
            used_by_uuid: r.get(5)?,
            revoked: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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
