//! Administration commands: users, roles, groups, folders, hosts, rules, tokens.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use super::args::*;
use super::db::{change, read, tx};
use super::emit;
use super::output::*;
use crate::cli::error::{Error, Result};
use crate::receiver::admin::{self, PasswordInput};
use crate::receiver::{perms, store};
use crate::wire::certs;

const PASSWORD_ENV: &str = "TETHER_RECEIVER_PASSWORD";

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub fn read_password(p: &PasswordArgs) -> Result<String> {
    let pw = if let Some(f) = &p.password_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", f.display())))?;
        first_line(&s)
    } else if p.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::usage(format!("cannot read stdin: {e}")))?;
        first_line(&line)
    } else if let Ok(v) = std::env::var(PASSWORD_ENV) {
        v
    } else {
        return Err(Error::usage(format!(
            "no password given: use --password-file F, --password-stdin or {PASSWORD_ENV}"
        )));
    };
    if pw.is_empty() {
        return Err(Error::usage("the password is empty"));
    }
    Ok(pw)
}

pub(super) fn user_cmd(json: bool, dir: &Path, c: UserCmd) -> i32 {
    match c {
        UserCmd::Add {
            name,
            role,
            contact_groups,
            password,
        } => emit(
            json,
            read_password(&password).and_then(|pw| {
                tx(dir, |c| {
                    admin::put_user(c, &name, &role, &contact_groups, PasswordInput::Plain(pw))
                })
                .map(|ch| change(ch, "user", &name, "add"))
            }),
        ),
        UserCmd::Passwd { name, password } => emit(
            json,
            read_password(&password).and_then(|pw| {
                tx(dir, |c| admin::set_password(c, &name, &pw))
                    .map(|ch| change(ch, "user", &name, "update"))
            }),
        ),
        UserCmd::Del { name } => emit(
            json,
            tx(dir, |c| admin::del_user(c, &name)).map(|ch| change(ch, "user", &name, "delete")),
        ),
        UserCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(UserList {
                    ok: true,
                    users: admin::users(c)?,
                })
            }),
        ),
    }
}

pub(super) fn role_cmd(json: bool, dir: &Path, c: RoleCmd) -> i32 {
    match c {
        RoleCmd::Add { name, permissions } => emit(
            json,
            tx(dir, |c| admin::put_role(c, &name, &permissions))
                .map(|ch| change(ch, "role", &name, "add")),
        ),
        RoleCmd::Del { name } => emit(
            json,
            tx(dir, |c| admin::del_role(c, &name)).map(|ch| change(ch, "role", &name, "delete")),
        ),
        RoleCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(RoleList {
                    ok: true,
                    roles: admin::roles(c)?,
                })
            }),
        ),
        RoleCmd::Permissions => emit(
            json,
            Ok(PermissionList {
                ok: true,
                permissions: perms::ALL.iter().map(|s| s.to_string()).collect(),
            }),
        ),
    }
}

pub(super) fn group_cmd(json: bool, dir: &Path, c: GroupCmd) -> i32 {
    match c {
        GroupCmd::Add { name, alias } => emit(
            json,
            tx(dir, |c| admin::put_group(c, &name, &alias))
                .map(|ch| change(ch, "group", &name, "add")),
        ),
        GroupCmd::Del { name } => emit(
            json,
            tx(dir, |c| admin::del_group(c, &name)).map(|ch| change(ch, "group", &name, "delete")),
        ),
        GroupCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(GroupList {
                    ok: true,
                    groups: store::list_groups(c)?,
                })
            }),
        ),
    }
}

pub(super) fn folder_cmd(json: bool, dir: &Path, c: FolderCmd) -> i32 {
    match c {
        FolderCmd::Add {
            path,
            contact_groups,
            pull_interval,
        } => emit(
            json,
            tx(dir, |c| {
                let iv = pull_interval
                    .as_deref()
                    .map(admin::parse_interval)
                    .transpose()?;
                admin::put_folder(c, &path, &contact_groups, iv)
            })
            .map(|(p, ch)| change(ch, "folder", &p, "add")),
        ),
        FolderCmd::Del { path } => emit(
            json,
            tx(dir, |c| admin::del_folder(c, &path))
                .map(|ch| change(ch, "folder", &path, "delete")),
        ),
        FolderCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(FolderList {
                    ok: true,
                    folders: admin::folders(c)?,
                })
            }),
        ),
    }
}

pub(super) fn host_cmd(json: bool, dir: &Path, c: HostCmd) -> i32 {
    match c {
        HostCmd::Add {
            name,
            folder,
            contact_groups,
            site,
            cluster,
            mode,
            address,
            agent_port,
            pull_interval,
        } => {
            let spec = admin::HostSpec {
                pull_interval,
                folder: Some(folder),
                contact_groups,
                site,
                cluster,
                mode: Some(mode),
                address,
                agent_port,
            };
            emit(
                json,
                tx(dir, |c| admin::put_host(c, &name, &spec))
                    .map(|ch| change(ch, "host", &name, "add")),
            )
        }
        HostCmd::Del { name } => emit(
            json,
            tx(dir, |c| admin::del_host(c, &name)).map(|ch| change(ch, "host", &name, "delete")),
        ),
        HostCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(HostList {
                    ok: true,
                    hosts: store::list_hosts(c)?,
                })
            }),
        ),
        HostCmd::Health => emit(json, read(dir, |c| Ok(crate::receiver::health::report(c)?))),
    }
}

pub(super) fn rule_cmd(json: bool, dir: &Path, c: RuleCmd) -> i32 {
    match c {
        RuleCmd::Add {
            name,
            matches,
            create_in,
            hostname_label,
            mode,
            decline,
            hold,
            position,
        } => {
            let r = (|| {
                let mut m = BTreeMap::new();
                for kv in &matches {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| Error::usage(format!("--match {kv:?}: use KEY=VALUE")))?;
                    m.insert(k.to_string(), v.to_string());
                }
                let (action, folder, reason) = match (create_in, decline, hold) {
                    (Some(f), None, false) => ("create", Some(f), None),
                    (None, Some(r), false) => ("decline", None, Some(r)),
                    // A hold names where the host would go: that folder's scope decides.
                    (f, None, true) => ("hold", f, None),
                    _ => {
                        return Err(Error::usage(
                            "give exactly one of --create-in FOLDER, --decline REASON, --hold [--create-in FOLDER]",
                        ))
                    }
                };
                let rule = admin::Rule {
                    name: name.clone(),
                    match_labels: m,
                    action: action.into(),
                    folder,
                    hostname_label,
                    reason,
                    mode,
                };
                tx(dir, |c| admin::put_rule(c, &rule, position))
            })();
            emit(json, r.map(|ch| change(ch, "rule", &name, "add")))
        }
        RuleCmd::Del { name } => emit(
            json,
            tx(dir, |c| admin::del_rule(c, &name)).map(|ch| change(ch, "rule", &name, "delete")),
        ),
        RuleCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(RuleList {
                    ok: true,
                    rules: admin::rules(c)?,
                })
            }),
        ),
    }
}

pub(super) fn token_cmd(json: bool, dir: &Path, c: TokenCmd) -> i32 {
    match c {
        TokenCmd::Create {
            host,
            register_new,
            folder,
            labels,
            max_uses,
            ttl,
            name,
        } => {
            let scope = match host {
                Some(h) if !register_new => admin::TokenScope::Host(h),
                _ => admin::TokenScope::RegisterNew {
                    folder,
                    labels: labels.into_iter().collect(),
                },
            };
            let spec = admin::TokenSpec {
                name,
                scope,
                ttl_secs: ttl.as_secs() as i64,
                max_uses,
            };
            emit(
                json,
                tx(dir, |c| {
                    let (id, secret, expires) = admin::create_token(c, &spec, None)?;
                    let info = admin::tokens(c)?
                        .into_iter()
                        .find(|t| t.id == id)
                        .ok_or_else(|| Error::internal("token vanished"))?;
                    audit_token(c, &info, "token_create", "created")?;
                    Ok(TokenCreated {
                        ok: true,
                        id,
                        name: info.name.clone(),
                        scope: info.scope.clone(),
                        host: info.host.clone(),
                        max_uses: info.max_uses,
                        token: format!("{id}:{secret}"),
                        expires_at: certs::rfc3339(expires),
                    })
                }),
            )
        }
        TokenCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(TokenList {
                    ok: true,
                    tokens: admin::tokens(c)?,
                })
            }),
        ),
        TokenCmd::Revoke { token } => emit(
            json,
            tx(dir, |c| {
                let info = admin::find_token(c, &token)?;
                let changed = admin::revoke_token(c, info.id)?;
                if changed {
                    audit_token(c, &info, "token_revoke", "revoked")?;
                }
                Ok(changed)
            })
            .map(|ch| change(ch, "token", &token, "revoke")),
        ),
    }
}

fn audit_token(
    c: &crate::receiver::store::Connection,
    t: &admin::TokenInfo,
    action: &str,
    outcome: &str,
) -> Result<()> {
    store::audit(
        c,
        &store::Audit {
            actor: "admin".into(),
            source: "cli".into(),
            action: action.into(),
            host: t.host.clone(),
            outcome: outcome.into(),
            detail: format!("{} scope {}", t.label(), t.scope_text()),
            ..Default::default()
        },
    )?;
    Ok(())
}

pub(super) fn settings_cmd(json: bool, dir: &Path, c: SettingsCmd) -> i32 {
    let show = |dir: &Path| {
        read(dir, |c| {
            let set = store::get_setting(c, store::PULL_INTERVAL_SETTING)?.is_some();
            Ok(SettingsOut {
                ok: true,
                pull_interval_secs: store::site_interval(c)?,
                pull_interval_default: !set,
            })
        })
    };
    match c {
        SettingsCmd::Show => emit(json, show(dir)),
        SettingsCmd::Set { pull_interval } => emit(
            json,
            tx(dir, |c| {
                let Some(iv) = pull_interval.as_deref() else {
                    return Ok(false);
                };
                let secs = match iv {
                    "default" => None,
                    s => Some(admin::parse_interval(s)?),
                };
                admin::set_site_interval(c, secs)
            })
            .map(|ch| change(ch, "setting", store::PULL_INTERVAL_SETTING, "set")),
        ),
    }
}
