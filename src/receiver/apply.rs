//! `apply FILE`: converge groups, roles, folders, users, hosts and rules to a YAML or JSON
//! description. Everything happens in one transaction; `--dry-run` runs the same code and
//! rolls back, so what it reports is exactly what a real run would do.
use std::collections::BTreeMap;
use std::path::Path;

use crate::receiver::store::sql::Connection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::admin::{self, HostSpec, PasswordInput, Rule};
use super::store;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApplyChange {
    /// user, role, group, folder, host, rules, token, setting.
    pub kind: String,
    pub name: String,
    /// create, update or delete.
    pub action: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplyOut {
    pub ok: bool,
    pub changed: bool,
    pub dry_run: bool,
    pub changes: Vec<ApplyChange>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFile {
    #[serde(default)]
    pub site: Option<SiteItem>,
    #[serde(default)]
    pub groups: Vec<GroupItem>,
    #[serde(default)]
    pub roles: Vec<RoleItem>,
    #[serde(default)]
    pub folders: Vec<FolderItem>,
    #[serde(default)]
    pub users: Vec<UserItem>,
    #[serde(default)]
    pub hosts: Vec<HostItem>,
    /// When present, the complete ordered rule list (first match wins).
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    /// Scoped enrollment tokens (register_new), managed by name.
    #[serde(default)]
    pub tokens: Vec<TokenItem>,
}

/// A register_new token. Its secret comes from a file or the environment, never from the
/// apply file itself; agents present it as `NAME:SECRET` (or `ID:SECRET`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenItem {
    pub name: String,
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub max_uses: i64,
    /// Lifetime from creation (e.g. `30d`; default 30 days).
    #[serde(default)]
    pub ttl: Option<String>,
    /// File whose first line is the secret (relative to the apply file).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub absent: bool,
}

fn one() -> i64 {
    1
}

impl TokenItem {
    fn spec(&self) -> Result<admin::TokenSpec> {
        let ttl = match &self.ttl {
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| Error::usage(format!("token {}: ttl {t:?}: {e}", self.name)))?,
            None => std::time::Duration::from_secs(30 * 86400),
        };
        let folder = match &self.folder {
            Some(f) => Some(admin::normalize_folder(f)?),
            None => None,
        };
        Ok(admin::TokenSpec {
            name: Some(self.name.clone()),
            scope: admin::TokenScope::RegisterNew {
                folder,
                labels: self.labels.clone(),
            },
            ttl_secs: ttl.as_secs() as i64,
            max_uses: self.max_uses,
        })
    }

    fn secret(&self, base: &Path) -> Result<String> {
        let what = format!("token {}", self.name);
        match (&self.secret_file, &self.secret_env) {
            (Some(f), None) => {
                let p = base.join(f);
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    Error::usage(format!("{what}: cannot read {}: {e}", p.display()))
                })?;
                Ok(s.lines().next().unwrap_or("").trim().to_string())
            }
            (None, Some(v)) => std::env::var(v)
                .map(|s| s.trim().to_string())
                .map_err(|_| Error::usage(format!("{what}: environment variable {v} is not set"))),
            _ => Err(Error::usage(format!(
                "{what}: give exactly one of secret_file, secret_env"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupItem {
    pub name: String,
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub absent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleItem {
    pub name: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub absent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderItem {
    pub path: String,
    #[serde(default)]
    pub contact_groups: Vec<String>,
    /// Seconds between pulls for the hosts below (e.g. `30s`); absent: inherited.
    #[serde(default)]
    pub pull_interval: Option<String>,
    #[serde(default)]
    pub absent: bool,
}

/// Site-wide settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteItem {
    /// Seconds between pulls where no host or folder says otherwise (e.g. `1m`); absent:
    /// left as it is.
    #[serde(default)]
    pub pull_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserItem {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub contact_groups: Vec<String>,
    /// File whose first line is the password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A ready argon2 PHC hash.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub absent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostItem {
    pub name: String,
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub contact_groups: Vec<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub cluster: bool,
    /// pull (default) or push.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub agent_port: Option<u16>,
    /// Seconds between pulls (e.g. `30s`); absent: inherited from folders or the site.
    #[serde(default)]
    pub pull_interval: Option<String>,
    #[serde(default)]
    pub absent: bool,
}

impl HostItem {
    fn spec(&self) -> HostSpec {
        HostSpec {
            folder: self.folder.clone(),
            contact_groups: self.contact_groups.clone(),
            site: self.site.clone(),
            cluster: self.cluster,
            mode: self.mode.clone(),
            address: self.address.clone(),
            agent_port: self.agent_port,
            pull_interval: self.pull_interval.clone(),
        }
    }
}

pub fn parse(path: &Path) -> Result<ApplyFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse_str(&text, is_json).map_err(|e| Error::usage(format!("{}: {e}", path.display())))
}

/// Parses the text of an apply file: JSON when `json`, else YAML.
pub fn parse_str(text: &str, json: bool) -> std::result::Result<ApplyFile, String> {
    if json {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))
    }
}

fn user_password(u: &UserItem, base: &Path) -> Result<PasswordInput> {
    let given = [
        u.password_file.is_some(),
        u.password_env.is_some(),
        u.password_hash.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        return Err(Error::usage(format!(
            "user {}: give only one of password_file, password_env, password_hash",
            u.name
        )));
    }
    if let Some(f) = &u.password_file {
        // Relative paths are relative to the apply file, so a file and its secrets travel together.
        let p = base.join(f);
        let s = std::fs::read_to_string(&p).map_err(|e| {
            Error::usage(format!("user {}: cannot read {}: {e}", u.name, p.display()))
        })?;
        let pw = s.lines().next().unwrap_or("").to_string();
        if pw.is_empty() {
            return Err(Error::usage(format!(
                "user {}: password file is empty",
                u.name
            )));
        }
        return Ok(PasswordInput::Plain(pw));
    }
    if let Some(v) = &u.password_env {
        let pw = std::env::var(v).map_err(|_| {
            Error::usage(format!(
                "user {}: environment variable {v} is not set",
                u.name
            ))
        })?;
        return Ok(PasswordInput::Plain(pw));
    }
    if let Some(h) = &u.password_hash {
        return Ok(PasswordInput::Hash(h.clone()));
    }
    Ok(PasswordInput::Keep)
}

struct Changes(Vec<ApplyChange>);

impl Changes {
    fn note(&mut self, changed: bool, existed: bool, kind: &str, name: &str) {
        if changed {
            self.0.push(ApplyChange {
                kind: kind.into(),
                name: name.into(),
                action: if existed { "update" } else { "create" }.into(),
            });
        }
    }
    fn deleted(&mut self, changed: bool, kind: &str, name: &str) {
        if changed {
            self.0.push(ApplyChange {
                kind: kind.into(),
                name: name.into(),
                action: "delete".into(),
            });
        }
    }
}

pub fn converge(c: &Connection, f: &ApplyFile, base: &Path) -> Result<Vec<ApplyChange>> {
    let mut ch = Changes(Vec::new());
    if let Some(iv) = f.site.as_ref().and_then(|s| s.pull_interval.as_deref()) {
        let secs = admin::parse_interval(iv)?;
        ch.note(
            admin::set_site_interval(c, Some(secs))?,
            true,
            "setting",
            store::PULL_INTERVAL_SETTING,
        );
    }
    // Create in dependency order: groups → roles → folders → users → hosts → rules.
    for g in f.groups.iter().filter(|g| !g.absent) {
        let existed = store::group_exists(c, &g.name)?;
        ch.note(
            admin::put_group(c, &g.name, &g.alias)?,
            existed,
            "group",
            &g.name,
        );
    }
    for r in f.roles.iter().filter(|r| !r.absent) {
        let existed = store::get_role(c, &r.name)?.is_some();
        ch.note(
            admin::put_role(c, &r.name, &r.permissions)?,
            existed,
            "role",
            &r.name,
        );
    }
    for fo in f.folders.iter().filter(|x| !x.absent) {
        let path = admin::normalize_folder(&fo.path)?;
        let existed = store::get_folder(c, &path)?.is_some();
        let iv = fo
            .pull_interval
            .as_deref()
            .map(admin::parse_interval)
            .transpose()?;
        let (p, changed) = admin::put_folder(c, &path, &fo.contact_groups, iv)?;
        ch.note(changed, existed, "folder", &p);
    }
    for u in f.users.iter().filter(|u| !u.absent) {
        let existing = store::get_user(c, &u.name)?;
        let role = match (&u.role, &existing) {
            (Some(r), _) => r.clone(),
            (None, Some(e)) => e.role.clone(),
            (None, None) => return Err(Error::usage(format!("user {}: role is required", u.name))),
        };
        let pw = user_password(u, base)?;
        let changed = admin::put_user(c, &u.name, &role, &u.contact_groups, pw)?;
        ch.note(changed, existing.is_some(), "user", &u.name);
    }
    for h in f.hosts.iter().filter(|h| !h.absent) {
        let existed = store::get_host(c, &h.name)?.is_some();
        ch.note(
            admin::put_host(c, &h.name, &h.spec())?,
            existed,
            "host",
            &h.name,
        );
    }
    if let Some(rules) = &f.rules {
        let had = !admin::rules(c)?.is_empty();
        ch.note(admin::set_rules(c, rules)?, had, "rules", "*");
    }
    for t in f.tokens.iter().filter(|t| !t.absent) {
        let secret = t.secret(base)?;
        if let Some(action) = admin::put_token(c, &t.spec()?, &secret)? {
            ch.0.push(ApplyChange {
                kind: "token".into(),
                name: t.name.clone(),
                action: action.into(),
            });
        }
    }
    for t in f.tokens.iter().filter(|t| t.absent) {
        let found = admin::lookup(c, &crate::receiver::auth::TokenRef::Name(t.name.clone()))?;
        let revoked = match found {
            Some((info, _)) => admin::revoke_token(c, info.id)?,
            None => false,
        };
        ch.deleted(revoked, "token", &t.name);
    }
    // Delete in reverse dependency order.
    for h in f.hosts.iter().filter(|h| h.absent) {
        ch.deleted(admin::del_host(c, &h.name)?, "host", &h.name);
    }
    for u in f.users.iter().filter(|u| u.absent) {
        ch.deleted(admin::del_user(c, &u.name)?, "user", &u.name);
    }
    let mut absent_folders: Vec<&FolderItem> = f.folders.iter().filter(|x| x.absent).collect();
    // Deepest first, so a subtree can be removed in one file.
    absent_folders.sort_by_key(|x| std::cmp::Reverse(x.path.matches('/').count()));
    for fo in absent_folders {
        ch.deleted(admin::del_folder(c, &fo.path)?, "folder", &fo.path);
    }
    for r in f.roles.iter().filter(|r| r.absent) {
        ch.deleted(admin::del_role(c, &r.name)?, "role", &r.name);
    }
    for g in f.groups.iter().filter(|g| g.absent) {
        ch.deleted(admin::del_group(c, &g.name)?, "group", &g.name);
    }
    Ok(ch.0)
}

/// Marker error that rolls the dry run's transaction back while carrying its result.
struct DryRun(Vec<ApplyChange>);

pub fn run(dir: &Path, file: &Path, dry_run: bool) -> Result<ApplyOut> {
    let f = parse(file)?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let c = store::open_db(dir)?;
    admin::site(&c)?;
    c.begin_write()?;
    let result: Result<Vec<ApplyChange>, Result<DryRun, Error>> = (|| {
        let tx = &c;
        let changes = converge(tx, &f, &base).map_err(Err)?;
        if dry_run {
            // Rolled back below.
            return Err(Ok(DryRun(changes)));
        }
        if !changes.is_empty() {
            store::audit(
                tx,
                &store::Audit {
                    actor: "admin".into(),
                    source: "cli".into(),
                    action: "apply".into(),
                    outcome: "changed".into(),
                    detail: summary(&changes),
                    ..Default::default()
                },
            )
            .map_err(|e| Err(Error::from(e)))?;
        }
        tx.commit().map_err(|e| Err(Error::from(e)))?;
        Ok(changes)
    })();
    if result.is_err() {
        let _ = c.execute_batch("ROLLBACK");
    }
    let changes = match result {
        Ok(ch) => ch,
        Err(Ok(DryRun(ch))) => ch,
        Err(Err(e)) => return Err(e),
    };
    Ok(ApplyOut {
        ok: true,
        changed: !changes.is_empty(),
        dry_run,
        changes,
    })
}

fn summary(changes: &[ApplyChange]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in changes {
        *counts
            .entry(format!("{} {}", c.action, c.kind))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
