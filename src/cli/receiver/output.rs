//! JSON and text output of `tether-receiver` commands. Every document has `"ok": true`;
//! failures use the shared error document.

use schemars::JsonSchema;

pub use crate::receiver::apply::{ApplyChange, ApplyOut};
pub use crate::receiver::fetch::{FetchOut, FetchResult};
pub use crate::receiver::health::{HealthOut, HostHealth};
use serde::Serialize;

use crate::cli::output::Render;
use crate::receiver::admin::{Rule, TokenInfo};
use crate::receiver::store::{AuditEntry, Folder, Group, Host, Role, User};
use crate::wire::certs::rfc3339;

#[derive(Debug, Serialize, JsonSchema)]
pub struct InitOut {
    pub ok: bool,
    pub site: String,
    pub dir: String,
    /// SHA-256 of the server certificate (as `server_certificate_fingerprint`).
    pub fingerprint: String,
    /// SHA-256 of the site CA: the pin that stays valid when the server certificate is
    /// replaced (agents accept either).
    pub site_ca_fingerprint: String,
    pub changed: bool,
    /// Files created by this run (empty when nothing was missing).
    pub created: Vec<String>,
}
impl Render for InitOut {
    fn text(&self) -> String {
        format!(
            "site {} in {} ({})\n{}",
            self.site,
            self.dir,
            if self.changed {
                "initialised"
            } else {
                "unchanged"
            },
            fingerprint_text(&self.fingerprint, &self.site_ca_fingerprint)
        )
    }
}

/// What agents can pin with `--trust-fingerprint`; they accept any certificate of the chain.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FingerprintOut {
    pub ok: bool,
    /// SHA-256 of the server certificate (kept for scripts; same as
    /// `server_certificate_fingerprint`).
    pub fingerprint: String,
    /// SHA-256 of the receiver's TLS server certificate.
    pub server_certificate_fingerprint: String,
    /// SHA-256 of the site CA: pin this one; it stays valid when the server certificate is
    /// replaced.
    pub site_ca_fingerprint: String,
}
impl Render for FingerprintOut {
    fn text(&self) -> String {
        fingerprint_text(
            &self.server_certificate_fingerprint,
            &self.site_ca_fingerprint,
        )
    }
}

fn fingerprint_text(server: &str, site_ca: &str) -> String {
    format!(
        "server certificate: {server}\nsite CA:            {site_ca}\n\
         Pin the site CA on the agents (--trust-fingerprint): it stays valid when the server \
         certificate is replaced. Either fingerprint is accepted."
    )
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ServeOut {
    pub ok: bool,
    /// Address the server listened on.
    pub listen: String,
}
impl Render for ServeOut {
    fn text(&self) -> String {
        String::new()
    }
}

/// Result of a command that creates, updates or deletes one object.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChangeOut {
    pub ok: bool,
    pub changed: bool,
    /// user, role, group, folder, host, rule, token, pending, registration.
    pub kind: String,
    pub name: String,
    /// add, update, delete, approve, decline, revoke, unregister.
    pub action: String,
    /// UUIDs whose registrations this command revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
}
impl Render for ChangeOut {
    fn text(&self) -> String {
        let mut s = format!(
            "{} {} {}: {}",
            self.action,
            self.kind,
            self.name,
            if self.changed { "changed" } else { "unchanged" }
        );
        for u in &self.revoked {
            s.push_str(&format!("\nrevoked {u}"));
        }
        s
    }
}

fn table(rows: Vec<String>, empty: &str) -> String {
    if rows.is_empty() {
        empty.to_string()
    } else {
        rows.join("\n")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UserList {
    pub ok: bool,
    pub users: Vec<User>,
}
impl Render for UserList {
    fn text(&self) -> String {
        table(
            self.users
                .iter()
                .map(|u| {
                    format!(
                        "{}\trole={}\tgroups={}",
                        u.name,
                        u.role,
                        u.contact_groups.join(",")
                    )
                })
                .collect(),
            "no users",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RoleList {
    pub ok: bool,
    pub roles: Vec<Role>,
}
impl Render for RoleList {
    fn text(&self) -> String {
        table(
            self.roles
                .iter()
                .map(|r| {
                    format!(
                        "{}{}\t{}",
                        r.name,
                        if r.builtin { " (built-in)" } else { "" },
                        r.permissions.join(",")
                    )
                })
                .collect(),
            "no roles",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PermissionList {
    pub ok: bool,
    pub permissions: Vec<String>,
}
impl Render for PermissionList {
    fn text(&self) -> String {
        self.permissions.join("\n")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupList {
    pub ok: bool,
    pub groups: Vec<Group>,
}
impl Render for GroupList {
    fn text(&self) -> String {
        table(
            self.groups
                .iter()
                .map(|g| format!("{}\t{}", g.name, g.alias))
                .collect(),
            "no contact groups",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FolderList {
    pub ok: bool,
    pub folders: Vec<Folder>,
}
impl Render for FolderList {
    fn text(&self) -> String {
        table(
            self.folders
                .iter()
                .map(|f| format!("{}\tgroups={}", f.path, f.contact_groups.join(",")))
                .collect(),
            "no folders",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HostList {
    pub ok: bool,
    pub hosts: Vec<Host>,
}
impl Render for HostList {
    fn text(&self) -> String {
        table(
            self.hosts
                .iter()
                .map(|h| {
                    format!(
                        "{}\t{}\t{}\tsite={}{}\tgroups={}",
                        h.name,
                        h.folder,
                        h.mode,
                        h.site,
                        if h.cluster { " cluster" } else { "" },
                        h.contact_groups.join(",")
                    )
                })
                .collect(),
            "no hosts",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RuleList {
    pub ok: bool,
    /// In evaluation order: the first match wins.
    pub rules: Vec<Rule>,
}
impl Render for RuleList {
    fn text(&self) -> String {
        table(
            self.rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let m: Vec<String> = r
                        .match_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(
                        "{i}\t{}\tmatch {}\t{}{}",
                        r.name,
                        if m.is_empty() {
                            "*".into()
                        } else {
                            m.join(",")
                        },
                        r.action,
                        match r.action.as_str() {
                            "create" => format!(" in {}", r.folder.clone().unwrap_or_default()),
                            "decline" => format!(": {}", r.reason.clone().unwrap_or_default()),
                            _ => String::new(),
                        }
                    )
                })
                .collect(),
            "no rules",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenCreated {
    pub ok: bool,
    pub id: i64,
    pub name: Option<String>,
    /// `host` or `register_new`.
    pub scope: String,
    /// The host a host-bound token registers.
    pub host: Option<String>,
    pub max_uses: i64,
    /// `ID:SECRET`, for `Authorization: CMK-TOKEN ID:SECRET`. Shown only once.
    pub token: String,
    pub expires_at: String,
}
impl Render for TokenCreated {
    fn text(&self) -> String {
        self.token.clone()
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenList {
    pub ok: bool,
    pub tokens: Vec<TokenInfo>,
}
impl Render for TokenList {
    fn text(&self) -> String {
        table(
            self.tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked {
                        "revoked".to_string()
                    } else if t.expires_at <= crate::wire::certs::now_unix() {
                        "expired".to_string()
                    } else if t.remaining_uses == 0 {
                        "used up".to_string()
                    } else {
                        "active".to_string()
                    };
                    let last = t
                        .last_used_at
                        .map(|u| format!("last use {}", rfc3339(u)))
                        .unwrap_or_else(|| "never used".into());
                    format!(
                        "{}\t{}\t{}\tuses {}/{}\texpires {}\t{last}\t{state}",
                        t.id,
                        t.name.as_deref().unwrap_or("-"),
                        t.scope_text(),
                        t.uses,
                        t.max_uses,
                        rfc3339(t.expires_at),
                    )
                })
                .collect(),
            "no tokens",
        )
    }
}

pub use crate::receiver::approvals::PendingInfo;

#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingList {
    pub ok: bool,
    pub registrations: Vec<PendingInfo>,
}
impl Render for PendingList {
    fn text(&self) -> String {
        table(
            self.registrations
                .iter()
                .map(|p| {
                    let l: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let what = match (&p.kind[..], &p.host) {
                        ("takeover", Some(h)) => format!("takeover of {h}"),
                        _ => l.join(","),
                    };
                    format!("{}\t{}\tby {}\t{what}", p.uuid, p.status, p.user)
                })
                .collect(),
            "no pending registrations",
        )
    }
}

pub use crate::receiver::registrations::RegistrationInfo;

#[derive(Debug, Serialize, JsonSchema)]
pub struct RegistrationList {
    pub ok: bool,
    pub registrations: Vec<RegistrationInfo>,
}
impl Render for RegistrationList {
    fn text(&self) -> String {
        table(
            self.registrations
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\tby {}",
                        r.host, r.uuid, r.connection_mode, r.state, r.registered_by
                    )
                })
                .collect(),
            "no registrations",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditPruneOut {
    pub ok: bool,
    #[serde(flatten)]
    pub pruned: crate::receiver::store::AuditPruned,
    /// Entries left in the log.
    pub remaining: i64,
}
impl Render for AuditPruneOut {
    fn text(&self) -> String {
        format!(
            "deleted {} audit entries by age and {} beyond the row limit; {} remain",
            self.pruned.deleted_by_age, self.pruned.deleted_by_rows, self.remaining
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditList {
    pub ok: bool,
    pub entries: Vec<AuditEntry>,
}
impl Render for AuditList {
    fn text(&self) -> String {
        table(
            self.entries
                .iter()
                .map(|e| {
                    format!(
                        "{}\t{}\t{}\t{}\thost={}\tuuid={}\t{}\t{}",
                        rfc3339(e.ts),
                        e.actor,
                        e.source,
                        e.action,
                        e.host.clone().unwrap_or_default(),
                        e.uuid.clone().unwrap_or_default(),
                        e.outcome,
                        e.detail
                    )
                })
                .collect(),
            "audit log is empty",
        )
    }
}

impl Render for FetchOut {
    fn text(&self) -> String {
        table(
            self.results
                .iter()
                .map(|r| match &r.error {
                    None => format!("{}\tok\t{} bytes\t{} ms", r.host, r.bytes, r.duration_ms),
                    Some(e) => format!("{}\tfailed\t{e}", r.host),
                })
                .collect(),
            "no hosts to fetch",
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentDataOut {
    pub ok: bool,
    pub host: String,
    /// push or pull.
    pub via: String,
    pub received_at: String,
    pub age_secs: i64,
    pub bytes: usize,
    /// The agent output (invalid UTF-8 replaced).
    pub output: String,
}
impl Render for AgentDataOut {
    fn text(&self) -> String {
        format!(
            "# host {} via {} at {} ({} s ago, {} bytes)\n{}",
            self.host, self.via, self.received_at, self.age_secs, self.bytes, self.output
        )
    }
}

impl Render for ApplyOut {
    fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.changes {
            s.push_str(&format!("{} {} {}\n", c.action, c.kind, c.name));
        }
        s.push_str(match (self.changed, self.dry_run) {
            (false, _) => "no changes",
            (true, true) => "dry run: nothing was changed",
            (true, false) => "applied",
        });
        s
    }
}

impl Render for HealthOut {
    fn text(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<i64>| v.map_or("-".into(), |n| n.to_string());
        let mut rows = vec![
            "HOST\tMODE\tINTERVAL\tLAST SUCCESS\tAGE\tSTALE\tERROR\tDURATION MS\tBYTES\tLEASE"
                .to_string(),
        ];
        for h in &self.hosts {
            let err = match (&h.last_error_code, &h.last_error) {
                (Some(c), Some(t)) => format!("{c}: {t}"),
                (Some(c), None) => c.clone(),
                _ => "-".into(),
            };
            rows.push(format!(
                "{}\t{}\t{}s\t{}\t{}\t{}\t{err}\t{}\t{}\t{}",
                h.host,
                h.mode,
                h.interval_secs,
                opt(&h.last_success),
                h.age_secs.map_or("-".into(), |a| format!("{a}s")),
                if h.stale { "yes" } else { "no" },
                num(h.duration_ms),
                num(h.bytes),
                opt(&h.lease_owner),
            ));
        }
        if self.hosts.is_empty() {
            return "no hosts".into();
        }
        rows.join("\n")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SettingsOut {
    pub ok: bool,
    /// Seconds between pulls where no host or folder sets an interval.
    pub pull_interval_secs: i64,
    /// Whether that is the built-in default (nothing set).
    pub pull_interval_default: bool,
}
impl Render for SettingsOut {
    fn text(&self) -> String {
        format!(
            "pull_interval\t{}s{}",
            self.pull_interval_secs,
            if self.pull_interval_default {
                " (default)"
            } else {
                ""
            }
        )
    }
}

impl Render for crate::receiver::migrate::MigrateReport {
    fn text(&self) -> String {
        let mut s = format!("migrated {} to {}\n", self.from, self.to);
        for t in &self.tables {
            s.push_str(&format!(
                "  {:<16} {:>9} rows  sha256 {}\n",
                t.table, t.rows, t.sha256
            ));
        }
        for q in &self.sequences {
            s.push_str(&format!(
                "  next {}.{} = {}\n",
                q.table, q.column, q.next_id
            ));
        }
        s.push_str(&format!(
            "{} rows copied and verified (counts and digests match)\n",
            self.rows
        ));
        if self.replaced_rows > 0 {
            s.push_str(&format!(
                "{} rows the target held were replaced (--force)\n",
                self.replaced_rows
            ));
        }
        if let Some(c) = &self.config_written {
            s.push_str(&format!("wrote {c}\n"));
        }
        s.push_str(&format!("next: {}\n", self.next_step));
        s
    }
}
