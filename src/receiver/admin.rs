//! Admin operations on the database, shared by the CLI commands and `apply`. Each runs inside
//! the caller's transaction and reports whether it changed anything, so repeating a command
//! (or an apply) is a no-op.
use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::perms;
use super::store::{self, Folder, Host, Role, User};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::validate;

pub fn db_err(e: rusqlite::Error) -> Error {
    Error::local_state(format!("database error: {e}"))
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        db_err(e)
    }
}

pub const SETTING_SITE: &str = "site";
pub const SETTING_CERT_LIFETIME: &str = "agent_cert_lifetime_secs";
pub const DEFAULT_CERT_LIFETIME: i64 = 90 * 86400;

/// Creates the schema, built-in roles and the root folder; leaves existing data alone.
pub fn init_db(c: &Connection, site: &str, lifetime_secs: i64) -> Result<bool> {
    store::migrate(c)?;
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
    for (name, ps) in perms::builtin_roles() {
        if store::get_role(c, name)?.is_none() {
            c.execute(
                "INSERT INTO roles(name, builtin, permissions) VALUES(?1, 1, ?2)",
                params![name, store::to_json(&ps)],
            )?;
            changed = true;
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

// ---------- users ----------

pub enum PasswordInput {
    Plain(String),
    Hash(String),
    /// Keep the current password (apply without a password for an existing user).
    Keep,
}

pub fn put_user(
    c: &Connection,
    name: &str,
    role: &str,
    groups: &[String],
    password: PasswordInput,
) -> Result<bool> {
    validate_name("user", name)?;
    if store::get_role(c, role)?.is_none() {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("role {role:?} does not exist"),
        ));
    }
    let groups = normalize_groups(c, groups)?;
    let existing = store::get_user(c, name)?;
    let new_hash = match (&password, &existing) {
        (PasswordInput::Plain(p), Some(u)) if super::auth::verify_password(p, &u.pw_hash) => None,
        (PasswordInput::Plain(p), _) => {
            if p.is_empty() {
                return Err(Error::usage("the password is empty"));
            }
            Some(super::auth::hash_password(p).map_err(Error::internal)?)
        }
        (PasswordInput::Hash(h), Some(u)) if *h == u.pw_hash => None,
        (PasswordInput::Hash(h), _) => {
            if !super::auth::valid_hash(h) {
                return Err(Error::usage("password_hash is not an argon2 PHC string"));
            }
            Some(h.clone())
        }
        (PasswordInput::Keep, Some(_)) => None,
        (PasswordInput::Keep, None) => {
            return Err(Error::usage(format!("user {name:?} needs a password")))
        }
    };
    match existing {
        None => {
            c.execute(
                "INSERT INTO users(name, role, pw_hash, contact_groups) VALUES(?1,?2,?3,?4)",
                params![
                    name,
                    role,
                    new_hash.unwrap_or_default(),
                    store::to_json(&groups)
                ],
            )?;
            Ok(true)
        }
        Some(u) => {
            let mut changed = false;
            if u.role != role || u.contact_groups != groups {
                c.execute(
                    "UPDATE users SET role=?2, contact_groups=?3 WHERE name=?1",
                    params![name, role, store::to_json(&groups)],
                )?;
                changed = true;
            }
            if let Some(h) = new_hash {
                c.execute(
                    "UPDATE users SET pw_hash=?2, pw_version=pw_version+1 WHERE name=?1",
                    params![name, h],
                )?;
                changed = true;
            }
            Ok(changed)
        }
    }
}

pub fn set_password(c: &Connection, name: &str, password: &str) -> Result<bool> {
    let u = store::get_user(c, name)?
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("user {name:?} does not exist")))?;
    put_user(
        c,
        name,
        &u.role,
        &u.contact_groups,
        PasswordInput::Plain(password.to_string()),
    )
}

pub fn del_user(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM users WHERE name=?1", [name])? > 0)
}

pub fn users(c: &Connection) -> Result<Vec<User>> {
    Ok(store::list_users(c)?)
}

// ---------- roles ----------

pub fn put_role(c: &Connection, name: &str, permissions: &[String]) -> Result<bool> {
    validate_name("role", name)?;
    if perms::is_builtin(name) {
        return Err(Error::usage(format!(
            "role {name:?} is built in and cannot be changed"
        )));
    }
    let mut ps: Vec<String> = Vec::new();
    for p in permissions {
        if !perms::is_known(p) {
            return Err(Error::usage(format!(
                "unknown permission {p:?}; known: {}",
                perms::ALL.join(", ")
            )));
        }
        if !ps.contains(p) {
            ps.push(p.clone());
        }
    }
    ps.sort();
    match store::get_role(c, name)? {
        Some(r) if r.permissions == ps => Ok(false),
        _ => {
            c.execute(
                "INSERT INTO roles(name, builtin, permissions) VALUES(?1,0,?2)
                 ON CONFLICT(name) DO UPDATE SET permissions=excluded.permissions",
                params![name, store::to_json(&ps)],
            )?;
            Ok(true)
        }
    }
}

pub fn del_role(c: &Connection, name: &str) -> Result<bool> {
    if perms::is_builtin(name) {
        return Err(Error::usage(format!(
            "role {name:?} is built in and cannot be deleted"
        )));
    }
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users WHERE role=?1", [name], |r| {
        r.get(0)
    })?;
    if users > 0 {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("role {name:?} is still assigned to {users} user(s)"),
        ));
    }
    Ok(c.execute("DELETE FROM roles WHERE name=?1", [name])? > 0)
}

pub fn roles(c: &Connection) -> Result<Vec<Role>> {
    Ok(store::list_roles(c)?)
}

// ---------- contact groups ----------

pub fn put_group(c: &Connection, name: &str, alias: &str) -> Result<bool> {
    validate_name("contact group", name)?;
    let cur: Option<String> = c
        .query_row(
            "SELECT alias FROM contact_groups WHERE name=?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    if cur.as_deref() == Some(alias) {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO contact_groups(name, alias) VALUES(?1,?2)
         ON CONFLICT(name) DO UPDATE SET alias=excluded.alias",
        params![name, alias],
    )?;
    Ok(true)
}

pub fn del_group(c: &Connection, name: &str) -> Result<bool> {
    let like = format!("%\"{name}\"%");
    let used: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM users WHERE contact_groups LIKE ?1)
              + (SELECT COUNT(*) FROM hosts WHERE contact_groups LIKE ?1)
              + (SELECT COUNT(*) FROM folders WHERE contact_groups LIKE ?1)",
        [&like],
        |r| r.get(0),
    )?;
    if used > 0 {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "contact group {name:?} is still in use by {used} user(s), host(s) or folder(s)"
            ),
        ));
    }
    Ok(c.execute("DELETE FROM contact_groups WHERE name=?1", [name])? > 0)
}

// ---------- folders ----------

/// Creates the folder (and missing parents, without groups) or updates its groups.
pub fn put_folder(c: &Connection, path: &str, groups: &[String]) -> Result<(String, bool)> {
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
        Some(f) if f.contact_groups == groups => {}
        _ => {
            c.execute(
                "INSERT INTO folders(path, contact_groups) VALUES(?1,?2)
                 ON CONFLICT(path) DO UPDATE SET contact_groups=excluded.contact_groups",
                params![path, store::to_json(&groups)],
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

// ---------- hosts ----------

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub contact_groups: Vec<String>,
    /// Monitoring site; default: this site.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub cluster: bool,
    /// `pull` (default) or `push`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub agent_port: Option<u16>,
}

pub fn build_host(c: &Connection, name: &str, spec: &HostSpec) -> Result<Host> {
    validate::validate_host_name(name)?;
    let folder = normalize_folder(spec.folder.as_deref().unwrap_or("/"))?;
    if store::get_folder(c, &folder)?.is_none() {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("folder {folder:?} does not exist"),
        ));
    }
    let site = match &spec.site {
        Some(s) => {
            validate::validate_site_name(s)?;
            s.clone()
        }
        None => site(c)?,
    };
    let mode = match spec.mode.as_deref() {
        None => crate::wire::api::ConnectionMode::Pull,
        Some(m) => crate::wire::api::ConnectionMode::parse(m)
            .ok_or_else(|| Error::usage(format!("invalid mode {m:?}: use pull or push")))?,
    };
    if let Some(a) = &spec.address {
        if a.is_empty() || a.len() > 253 || a.chars().any(|ch| ch.is_whitespace() || ch == '/') {
            return Err(Error::usage(format!("invalid address {a:?}")));
        }
    }
    Ok(Host {
        name: name.to_string(),
        folder,
        contact_groups: normalize_groups(c, &spec.contact_groups)?,
        site,
        cluster: spec.cluster,
        mode: mode.as_str().to_string(),
        address: spec.address.clone(),
        agent_port: spec.agent_port,
    })
}

/// Adds the host or updates it to `spec`; unchanged → false.
pub fn put_host(c: &Connection, name: &str, spec: &HostSpec) -> Result<bool> {
    let h = build_host(c, name, spec)?;
    if store::get_host(c, name)?.as_ref() == Some(&h) {
        return Ok(false);
    }
    store::put_host(c, &h)?;
    Ok(true)
}

pub fn del_host(c: &Connection, name: &str) -> Result<bool> {
    for r in store::registrations_of_host(c, name)? {
        store::revoke_registration(c, &r.uuid)?;
    }
    c.execute("DELETE FROM agent_data WHERE host=?1", [name])?;
    Ok(c.execute("DELETE FROM hosts WHERE name=?1", [name])? > 0)
}

// ---------- rules ----------

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Labels the agent must send, all of them, with these values ("*": any value).
    #[serde(default, rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    /// `create`, `decline` or `hold`.
    pub action: String,
    /// Target folder of `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Label holding the new host's name (default `cmk/hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_label: Option<String>,
    /// Reason given to the agent on `decline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Connection mode of created hosts: `pull` (default) or `push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

pub const DEFAULT_HOSTNAME_LABEL: &str = "cmk/hostname";

impl Rule {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| v == "*" || x == v))
    }
}

pub fn normalize_rule(c: &Connection, r: &Rule) -> Result<Rule> {
    validate_name("rule", &r.name)?;
    let mut r = r.clone();
    match r.action.as_str() {
        "create" => {
            let f = normalize_folder(r.folder.as_deref().unwrap_or("/"))?;
            if store::get_folder(c, &f)?.is_none() {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!("folder {f:?} does not exist"),
                ));
            }
            r.folder = Some(f);
            r.reason = None;
            if let Some(m) = &r.mode {
                let m = crate::wire::api::ConnectionMode::parse(m)
                    .ok_or_else(|| Error::usage(format!("invalid mode {m:?}: use pull or push")))?;
                r.mode = Some(m.as_str().to_string());
            }
        }
        "decline" => {
            r.folder = None;
            r.hostname_label = None;
            r.mode = None;
            if r.reason.is_none() {
                r.reason = Some(format!("Declined by rule {}", r.name));
            }
        }
        "hold" => {
            r.folder = None;
            r.reason = None;
            r.mode = None;
        }
        a => {
            return Err(Error::usage(format!(
                "invalid rule action {a:?}: use create, decline or hold"
            )))
        }
    }
    Ok(r)
}

pub fn rules(c: &Connection) -> Result<Vec<Rule>> {
    let mut st = c.prepare(
        "SELECT name, match_labels, action, folder, hostname_label, reason, mode FROM rules ORDER BY position, name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Rule {
            name: r.get(0)?,
            match_labels: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
            action: r.get(2)?,
            folder: r.get(3)?,
            hostname_label: r.get(4)?,
            reason: r.get(5)?,
            mode: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Replaces the whole ordered rule list; unchanged → false.
pub fn set_rules(c: &Connection, new: &[Rule]) -> Result<bool> {
    let mut norm = Vec::new();
    for r in new {
        let n = normalize_rule(c, r)?;
        if norm.iter().any(|x: &Rule| x.name == n.name) {
            return Err(Error::usage(format!("rule {:?} appears twice", n.name)));
        }
        norm.push(n);
    }
    if rules(c)? == norm {
        return Ok(false);
    }
    c.execute("DELETE FROM rules", [])?;
    for (i, r) in norm.iter().enumerate() {
        c.execute(
            "INSERT INTO rules(name, position, match_labels, action, folder, hostname_label, reason, mode)
             VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
            params![
                r.name,
                i as i64,
                store::to_json(&r.match_labels),
                r.action,
                r.folder,
                r.hostname_label,
                r.reason,
                r.mode
            ],
        )?;
    }
    Ok(true)
}

/// Adds or replaces one rule; `position` None keeps an existing rule's place or appends.
pub fn put_rule(c: &Connection, rule: &Rule, position: Option<usize>) -> Result<bool> {
    let mut all = rules(c)?;
    let cur = all.iter().position(|r| r.name == rule.name);
    let at = match (position, cur) {
        (Some(p), _) => p,
        (None, Some(i)) => i,
        (None, None) => all.len(),
    };
    if let Some(i) = cur {
        all.remove(i);
    }
    let at = at.min(all.len());
    all.insert(at, rule.clone());
    set_rules(c, &all)
}

pub fn del_rule(c: &Connection, name: &str) -> Result<bool> {
    let mut all = rules(c)?;
    let before = all.len();
    all.retain(|r| r.name != name);
    if all.len() == before {
        return Ok(false);
    }
    set_rules(c, &all)
}

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
        params![host, super::auth::token_digest(&secret), t, expires],
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

/// Revokes every registration of the host; returns the UUIDs revoked.
pub fn unregister(c: &Connection, host: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in store::registrations_of_host(c, host)? {
        if r.revoked_at.is_none() {
            store::revoke_registration(c, &r.uuid)?;
            out.push(r.uuid);
        }
    }
    Ok(out)
}
