//! The site-side CLI, binary `tether-receiver`.
pub mod args;
pub mod output;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};
use schemars::schema_for;

use self::args::*;
use self::output::*;
use crate::cli::error::{CliError, CliResult, ErrorCode};
use crate::cli::output::{finish, Render};
use crate::receiver::admin::{self, PasswordInput};
use crate::receiver::{api, auth, ca, perms, store};
use crate::wire::certs;

/// Schemas of this CLI's JSON outputs.
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    let change = || schema_for!(ChangeOut);
    let mut v: Vec<(String, schemars::Schema)> = vec![
        ("receiver.init.schema.json".into(), schema_for!(InitOut)),
        (
            "receiver.fingerprint.schema.json".into(),
            schema_for!(FingerprintOut),
        ),
        ("receiver.serve.schema.json".into(), schema_for!(ServeOut)),
        ("receiver.change.schema.json".into(), change()),
        (
            "receiver.user.list.schema.json".into(),
            schema_for!(UserList),
        ),
        (
            "receiver.role.list.schema.json".into(),
            schema_for!(RoleList),
        ),
        (
            "receiver.role.permissions.schema.json".into(),
            schema_for!(PermissionList),
        ),
        (
            "receiver.group.list.schema.json".into(),
            schema_for!(GroupList),
        ),
        (
            "receiver.folder.list.schema.json".into(),
            schema_for!(FolderList),
        ),
        (
            "receiver.host.list.schema.json".into(),
            schema_for!(HostList),
        ),
        (
            "receiver.rule.list.schema.json".into(),
            schema_for!(RuleList),
        ),
        (
            "receiver.token.create.schema.json".into(),
            schema_for!(TokenCreated),
        ),
        (
            "receiver.token.list.schema.json".into(),
            schema_for!(TokenList),
        ),
        (
            "receiver.pending.list.schema.json".into(),
            schema_for!(PendingList),
        ),
        (
            "receiver.registrations.list.schema.json".into(),
            schema_for!(RegistrationList),
        ),
        ("receiver.audit.schema.json".into(), schema_for!(AuditList)),
        ("receiver.fetch.schema.json".into(), schema_for!(FetchOut)),
        (
            "receiver.agent-data.schema.json".into(),
            schema_for!(AgentDataOut),
        ),
        ("receiver.apply.schema.json".into(), schema_for!(ApplyOut)),
    ];
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Parses the command line, runs the command, prints the result; returns the exit code.
pub fn main() -> i32 {
    use clap::Parser;
    let json_requested = std::env::args().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                let _ = e.print();
                return 0;
            }
            let err = CliError::usage(e.to_string().trim().to_string());
            crate::cli::output::report_error(json_requested, &err);
            return ErrorCode::Usage.exit_code();
        }
    };
    crate::cli::output::init_logging(if matches!(cli.command, Command::Serve(_)) {
        cli.verbose.max(1)
    } else {
        cli.verbose
    });
    run(cli)
}

fn emit<T: Render>(json: bool, r: CliResult<T>) -> i32 {
    finish(json, r)
}

pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    let dir = match &cli.dir {
        Some(d) => d.clone(),
        None => {
            return emit::<FingerprintOut>(
                json,
                Err(CliError::usage(
                    "--dir DIR (or TETHER_RECEIVER_DIR) is required",
                )),
            )
        }
    };
    match cli.command {
        Command::Init(a) => emit(json, init(&dir, a)),
        Command::Fingerprint => emit(
            json,
            ca::server_fingerprint(&dir)
                .map(|fingerprint| FingerprintOut {
                    ok: true,
                    fingerprint,
                })
                .map_err(|e| {
                    CliError::local_state(e.to_string()).hint("run tether-receiver init first")
                }),
        ),
        Command::Serve(a) => emit(json, serve(&dir, a)),
        Command::User(c) => user_cmd(json, &dir, c),
        Command::Role(c) => role_cmd(json, &dir, c),
        Command::Group(c) => group_cmd(json, &dir, c),
        Command::Folder(c) => folder_cmd(json, &dir, c),
        Command::Host(c) => host_cmd(json, &dir, c),
        Command::Rule(c) => rule_cmd(json, &dir, c),
        Command::Token(c) => token_cmd(json, &dir, c),
        Command::Pending(c) => pending_cmd(json, &dir, c),
        Command::Registrations(RegistrationsCmd::List { host }) => {
            emit(json, registrations(&dir, host))
        }
        Command::Unregister { host } => emit(
            json,
            tx(&dir, |c| {
                crate::wire::validate::validate_host_name(&host)?;
                let revoked = admin::unregister(c, &host)?;
                store::audit(
                    c,
                    &store::Audit {
                        actor: "admin".into(),
                        source: "cli".into(),
                        action: "unregister".into(),
                        host: Some(host.clone()),
                        outcome: if revoked.is_empty() {
                            "unchanged".into()
                        } else {
                            "revoked".into()
                        },
                        detail: revoked.join(","),
                        ..Default::default()
                    },
                )?;
                Ok(ChangeOut {
                    ok: true,
                    changed: !revoked.is_empty(),
                    kind: "registration".into(),
                    name: host.clone(),
                    action: "unregister".into(),
                    revoked,
                })
            }),
        ),
        Command::Audit(a) => emit(
            json,
            read(&dir, |c| {
                Ok(AuditList {
                    ok: true,
                    entries: store::list_audit(c, a.host.as_deref(), a.limit.max(0))?,
                })
            }),
        ),
        Command::Fetch(a) => emit(json, crate::receiver::fetch::run(&dir, &a)),
        Command::AgentData(a) => emit(json, agent_data(&dir, &a.host)),
        Command::Apply(a) => emit(json, crate::receiver::apply::run(&dir, &a.file, a.dry_run)),
    }
}

// ---------- database helpers ----------

pub fn open_db(dir: &Path) -> CliResult<Connection> {
    let p = store::db_path(dir);
    if !p.exists() {
        return Err(
            CliError::local_state(format!("no database at {}", p.display()))
                .hint("run tether-receiver init --dir DIR --site SITE first"),
        );
    }
    let c = store::open(&p)
        .map_err(|e| CliError::local_state(format!("cannot open {}: {e}", p.display())))?;
    store::migrate(&c)?;
    Ok(c)
}

/// Runs `f` in one write transaction: all or nothing.
pub fn tx<R>(dir: &Path, f: impl FnOnce(&Connection) -> CliResult<R>) -> CliResult<R> {
    let mut c = open_db(dir)?;
    store::with_tx(&mut c, f)
}

pub fn read<R>(dir: &Path, f: impl FnOnce(&Connection) -> CliResult<R>) -> CliResult<R> {
    let c = open_db(dir)?;
    f(&c)
}

fn change(changed: bool, kind: &str, name: &str, action: &str) -> ChangeOut {
    ChangeOut {
        ok: true,
        changed,
        kind: kind.into(),
        name: name.into(),
        action: action.into(),
        revoked: Vec::new(),
    }
}

// ---------- init / serve ----------

fn init(dir: &Path, a: InitArgs) -> CliResult<InitOut> {
    crate::wire::validate::validate_site_name(&a.site)?;
    for s in &a.sans {
        if s.is_empty() || s.len() > 253 || s.contains(['/', ' ', '\\']) {
            return Err(CliError::usage(format!("invalid --san {s:?}")));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::local_state(format!("cannot create {}: {e}", dir.display())))?;
    // Check the site before creating keys, so a mismatched re-init changes nothing.
    let dbp = store::db_path(dir);
    if dbp.exists() {
        let c = open_db(dir)?;
        if let Some(s) = store::get_setting(&c, admin::SETTING_SITE)? {
            if s != a.site {
                return Err(CliError::new(
                    ErrorCode::Conflict,
                    format!(
                        "{} is already initialised for site {s:?}, not {:?}",
                        dir.display(),
                        a.site
                    ),
                ));
            }
        }
    }
    let created =
        ca::init(dir, &a.site, &a.sans).map_err(|e| CliError::local_state(e.to_string()))?;
    let lifetime = a.cert_lifetime.as_secs().max(3600) as i64;
    let db_new = !dbp.exists();
    let mut c = store::open(&dbp)
        .map_err(|e| CliError::local_state(format!("cannot create database: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dbp, std::fs::Permissions::from_mode(0o600));
    }
    let db_changed = store::with_tx(&mut c, |c| admin::init_db(c, &a.site, lifetime))?;
    let mut created = created;
    if db_new {
        created.push(store::DB_FILE.into());
    }
    Ok(InitOut {
        ok: true,
        site: a.site,
        dir: dir.display().to_string(),
        fingerprint: ca::server_fingerprint(dir)
            .map_err(|e| CliError::local_state(e.to_string()))?,
        changed: !created.is_empty() || db_changed,
        created,
    })
}

fn serve(dir: &Path, a: ServeArgs) -> CliResult<ServeOut> {
    crate::wire::tls::install_default_provider();
    let (site, lifetime) = read(dir, |c| Ok((admin::site(c)?, admin::cert_lifetime(c)?)))?;
    let keys = ca::SiteKeys::load(dir).map_err(|e| CliError::local_state(e.to_string()))?;
    let db =
        store::Db::open(&store::db_path(dir)).map_err(|e| CliError::local_state(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .map_err(|e| CliError::usage(format!("cannot listen on {}: {e}", a.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::internal(e.to_string()))?;
        let st = Arc::new(api::AppState {
            site,
            keys,
            db,
            cache: auth::CredentialCache::new(a.credential_cache_ttl),
            limiter: auth::FailureLimiter::new(a.auth_fail_burst, a.auth_fail_per_minute),
            limits: api::Limits {
                max_body: a.max_body_bytes,
                max_push: a.max_push_bytes,
                max_output: a.max_output_bytes,
                request_timeout: a.request_timeout,
                handshake_timeout: a.handshake_timeout,
                header_timeout: a.header_timeout,
            },
            cert_lifetime: lifetime,
            port: addr.port(),
            argon2_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            ),
        });
        if let Some(f) = &a.ready_file {
            ca::write_atomic(f, addr.to_string().as_bytes(), 0o644)
                .map_err(|e| CliError::local_state(e.to_string()))?;
        }
        tracing::info!("listening on https://{addr}/{}/agent-receiver/", st.site);
        crate::receiver::server::serve(st, listener, shutdown_signal())
            .await
            .map_err(CliError::local_state)?;
        tracing::info!("shut down");
        Ok(ServeOut {
            ok: true,
            listen: addr.to_string(),
        })
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---------- users, roles, groups, folders, hosts ----------

const PASSWORD_ENV: &str = "TETHER_RECEIVER_PASSWORD";

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub fn read_password(p: &PasswordArgs) -> CliResult<String> {
    let pw = if let Some(f) = &p.password_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", f.display())))?;
        first_line(&s)
    } else if p.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
        first_line(&line)
    } else if let Ok(v) = std::env::var(PASSWORD_ENV) {
        v
    } else {
        return Err(CliError::usage(format!(
            "no password given: use --password-file F, --password-stdin or {PASSWORD_ENV}"
        )));
    };
    if pw.is_empty() {
        return Err(CliError::usage("the password is empty"));
    }
    Ok(pw)
}

fn user_cmd(json: bool, dir: &Path, c: UserCmd) -> i32 {
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

fn role_cmd(json: bool, dir: &Path, c: RoleCmd) -> i32 {
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

fn group_cmd(json: bool, dir: &Path, c: GroupCmd) -> i32 {
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

fn folder_cmd(json: bool, dir: &Path, c: FolderCmd) -> i32 {
    match c {
        FolderCmd::Add {
            path,
            contact_groups,
        } => emit(
            json,
            tx(dir, |c| admin::put_folder(c, &path, &contact_groups))
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

fn host_cmd(json: bool, dir: &Path, c: HostCmd) -> i32 {
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
        } => {
            let spec = admin::HostSpec {
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
    }
}

fn rule_cmd(json: bool, dir: &Path, c: RuleCmd) -> i32 {
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
                        .ok_or_else(|| CliError::usage(format!("--match {kv:?}: use KEY=VALUE")))?;
                    m.insert(k.to_string(), v.to_string());
                }
                let (action, folder, reason) = match (create_in, decline, hold) {
                    (Some(f), None, false) => ("create", Some(f), None),
                    (None, Some(r), false) => ("decline", None, Some(r)),
                    (None, None, true) => ("hold", None, None),
                    _ => {
                        return Err(CliError::usage(
                            "give exactly one of --create-in FOLDER, --decline REASON, --hold",
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

fn token_cmd(json: bool, dir: &Path, c: TokenCmd) -> i32 {
    match c {
        TokenCmd::Create { host, ttl } => emit(
            json,
            tx(dir, |c| {
                let (id, secret, expires) = admin::create_token(c, &host, ttl.as_secs() as i64)?;
                store::audit(
                    c,
                    &store::Audit {
                        actor: "admin".into(),
                        source: "cli".into(),
                        action: "token_create".into(),
                        host: Some(host.clone()),
                        outcome: "created".into(),
                        detail: format!("token {id}"),
                        ..Default::default()
                    },
                )?;
                Ok(TokenCreated {
                    ok: true,
                    id,
                    host: host.clone(),
                    token: format!("{id}:{secret}"),
                    expires_at: certs::rfc3339(expires),
                })
            }),
        ),
        TokenCmd::List => emit(
            json,
            read(dir, |c| {
                Ok(TokenList {
                    ok: true,
                    tokens: admin::tokens(c)?,
                })
            }),
        ),
        TokenCmd::Revoke { id } => emit(
            json,
            tx(dir, |c| admin::revoke_token(c, id))
                .map(|ch| change(ch, "token", &id.to_string(), "revoke")),
        ),
    }
}

fn pending_cmd(json: bool, dir: &Path, c: PendingCmd) -> i32 {
    match c {
        PendingCmd::List { all } => emit(
            json,
            read(dir, |c| {
                let mut st = c.prepare(
                    "SELECT uuid, user, status, labels, host, folder, reason, source, created_at
                     FROM pending WHERE (?1 OR status='pending') ORDER BY created_at",
                )?;
                let rows = st.query_map([all], |r| {
                    Ok(PendingInfo {
                        uuid: r.get(0)?,
                        user: r.get(1)?,
                        status: r.get(2)?,
                        labels: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                        host: r.get(4)?,
                        folder: r.get(5)?,
                        reason: r.get(6)?,
                        source: r.get(7)?,
                        created_at: r.get(8)?,
                    })
                })?;
                Ok(PendingList {
                    ok: true,
                    registrations: rows.collect::<rusqlite::Result<_>>()?,
                })
            }),
        ),
        PendingCmd::Approve {
            uuid,
            host,
            folder,
            mode,
        } => emit(json, approve(dir, &uuid, host, &folder, &mode)),
        PendingCmd::Decline { uuid, reason } => emit(
            json,
            tx(dir, |c| {
                let n = c.execute(
                    "UPDATE pending SET status='declined', reason=?2, decided_at=?3 WHERE uuid=?1 AND status='pending'",
                    rusqlite::params![uuid, reason, store::now()],
                )?;
                if n == 0 {
                    return Err(CliError::new(
                        ErrorCode::NotFound,
                        format!("no pending registration with UUID {uuid}"),
                    ));
                }
                store::audit(
                    c,
                    &store::Audit {
                        actor: "admin".into(),
                        source: "cli".into(),
                        action: "pending_decline".into(),
                        uuid: Some(uuid.clone()),
                        outcome: "declined".into(),
                        detail: reason.clone(),
                        ..Default::default()
                    },
                )?;
                Ok(change(true, "pending", &uuid, "decline"))
            }),
        ),
    }
}

fn approve(
    dir: &Path,
    uuid: &str,
    host: Option<String>,
    folder: &str,
    mode: &str,
) -> CliResult<ChangeOut> {
    let keys = ca::SiteKeys::load(dir).map_err(|e| CliError::local_state(e.to_string()))?;
    tx(dir, |c| {
        let row: Option<(String, String, String)> = c
            .query_row(
                "SELECT csr, labels, status FROM pending WHERE uuid=?1",
                [uuid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((csr, labels, status)) = row else {
            return Err(CliError::new(
                ErrorCode::NotFound,
                format!("no pending registration with UUID {uuid}"),
            ));
        };
        if status != "pending" {
            return Err(CliError::new(
                ErrorCode::Conflict,
                format!("registration {uuid} is already decided ({status})"),
            ));
        }
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        let name = match host.or_else(|| labels.get(admin::DEFAULT_HOSTNAME_LABEL).cloned()) {
            Some(n) => n,
            None => {
                return Err(CliError::usage(
                    "the agent sent no cmk/hostname label; give --host",
                ))
            }
        };
        if store::get_host(c, &name)?.is_some() {
            return Err(CliError::new(
                ErrorCode::Conflict,
                format!("host {name} already exists; an existing host is never overwritten (decline, or give another --host)"),
            ));
        }
        let spec = admin::HostSpec {
            folder: Some(folder.to_string()),
            mode: Some(mode.to_string()),
            ..Default::default()
        };
        let h = admin::build_host(c, &name, &spec)?;
        store::put_host(c, &h)?;
        let lifetime = admin::cert_lifetime(c)?;
        let v = ca::verify_csr(&csr, uuid).map_err(|e| CliError::usage(e.to_string()))?;
        let issued = keys
            .sign_agent_cert(&v, uuid, lifetime)
            .map_err(|e| CliError::internal(e.to_string()))?;
        store::insert_registration(
            c,
            uuid,
            &name,
            &h.mode,
            "admin",
            &issued.serial_hex,
            issued.not_after,
        )?;
        c.execute(
            "UPDATE pending SET status='success', host=?2, folder=?3, agent_cert=?4, mode=?5, decided_at=?6 WHERE uuid=?1",
            rusqlite::params![uuid, name, h.folder, issued.pem, h.mode, store::now()],
        )?;
        store::audit(
            c,
            &store::Audit {
                actor: "admin".into(),
                source: "cli".into(),
                action: "pending_approve".into(),
                host: Some(name.clone()),
                uuid: Some(uuid.to_string()),
                outcome: "registered".into(),
                detail: format!("certificate serial {}", issued.serial_hex),
            },
        )?;
        Ok(change(true, "pending", uuid, "approve"))
    })
}

fn registrations(dir: &Path, host: Option<String>) -> CliResult<RegistrationList> {
    read(dir, |c| {
        let now = store::now();
        let regs = match &host {
            Some(h) => store::registrations_of_host(c, h)?,
            None => store::list_registrations(c)?,
        };
        Ok(RegistrationList {
            ok: true,
            registrations: regs
                .into_iter()
                .map(|r| RegistrationInfo {
                    state: if r.revoked_at.is_some() {
                        "revoked".into()
                    } else if r.live(now) {
                        "live".into()
                    } else {
                        "expired".into()
                    },
                    uuid: r.uuid,
                    host: r.host,
                    connection_mode: r.connection_mode,
                    registered_at: r.registered_at,
                    registered_by: r.registered_by,
                    cert_not_after: r.cert_not_after,
                })
                .collect(),
        })
    })
}

fn agent_data(dir: &Path, host: &str) -> CliResult<AgentDataOut> {
    crate::wire::validate::validate_host_name(host)?;
    read(dir, |c| {
        let Some((at, via, data)) = crate::receiver::ingest::latest_output(c, host)? else {
            return Err(CliError::new(
                ErrorCode::NotFound,
                format!("no agent data for host {host}"),
            ));
        };
        Ok(AgentDataOut {
            ok: true,
            host: host.to_string(),
            via,
            received_at: certs::rfc3339(at),
            age_secs: store::now() - at,
            bytes: data.len(),
            output: String::from_utf8_lossy(&data).into_owned(),
        })
    })
}
