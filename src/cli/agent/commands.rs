//! Command implementations of the agent CLI: glue between arguments, controller, views.
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use super::views::*;
use super::{Cli, Command, DaemonArgs};
use crate::cli::error::{Error, ErrorCode, Result};
use crate::cli::output::{finish, print_json, report_error};
use crate::controller::agent_source::{self, Source};
use crate::controller::bundle::{self, Bundle};
use crate::controller::config::Config;
use crate::controller::proxy::{self, ProxySetting};
use crate::controller::register::{
    self, state_err, Action, NewOutcome, RegisterNewOptions, RegisterOptions, LOCK_WAIT,
};
use crate::controller::remote::SiteStatus;
use crate::controller::state::{self, Store};
use crate::controller::{daemon, enroll, lifecycle, push, remote, renew};
use crate::wire::api::ConnectionMode;
use crate::wire::{certs, validate};

pub fn usage_error(json: bool, e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            2
        } else {
            0
        };
    }
    let err = Error::usage(crate::cli::error::clap_message(&e)).hint("see --help");
    if json {
        report_error(true, &err);
    } else {
        let _ = e.print();
    }
    ErrorCode::Usage.exit_code()
}

pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    let store = Store::from_env();
    let contacts_receivers = !matches!(
        cli.command,
        Command::Import(_)
            | Command::Dump
            | Command::Pull(_)
            | Command::Keys { .. }
            | Command::Schemas { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
    );
    // The daemon re-reads tether.toml on SIGHUP, so it only takes the flag from here.
    let proxy_flag = match cli.proxy.as_deref().map(proxy_flag).transpose() {
        Ok(p) => p,
        Err(e) => return finish::<DeleteOutput>(json, Err(e)),
    };
    if contacts_receivers && !matches!(cli.command, Command::Daemon(_)) {
        match proxy_setting(proxy_flag.clone(), cli.config_path(), &store) {
            Ok(p) => proxy::set_default(p),
            Err(e) => return finish::<DeleteOutput>(json, Err(e)),
        }
    }
    match cli.command {
        Command::Register(a) => finish(json, cmd_register(&store, a)),
        Command::RegisterNew(a) => finish(json, cmd_register_new(&store, a)),
        Command::ProxyRegister(a) => match cmd_proxy_register(a) {
            // Without --output the bundle itself is the result document.
            Ok(ProxyResult::Stdout(b)) => {
                print_json(&b);
                0
            }
            Ok(ProxyResult::File(o)) => finish(json, Ok(o)),
            Err(e) => finish::<ProxyRegisterOutput>(json, Err(e)),
        },
        Command::Import(a) => finish(json, cmd_import(&store, a)),
        Command::Enroll(a) => cmd_enroll(json, &store, a),
        Command::Probe(a) => finish(json, cmd_probe(a)),
        Command::Status(a) => finish(json, cmd_status(&store, a)),
        Command::Delete(a) => finish(json, cmd_delete(&store, Some(&a.connection), a.local_only)),
        Command::DeleteAll { local_only } => finish(json, cmd_delete(&store, None, local_only)),
        Command::RenewCertificate(a) => finish(json, cmd_renew(&store, a.connection.as_deref())),
        Command::Dump => finish(json, cmd_dump(&store)),
        Command::Push(a) => finish(json, cmd_push(&store, &a)),
        Command::Daemon(a) => daemon_exit(json, daemon::Role::All, &store, a, proxy_flag),
        Command::Pull(a) => daemon_exit(json, daemon::Role::PullOnly, &store, a, None),
        Command::Keys {
            action: super::KeysAction::Refill { key_type },
        } => match crate::controller::keys::refill_spare(&store.home, key_type) {
            Ok(_) => 0,
            Err(e) => {
                report_error(json, &Error::local_state(format!("spare key: {e}")));
                ErrorCode::LocalState.exit_code()
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = std::io::stdout();
            match crate::cli::docs::write_completions(super::Cli::command(), shell, &mut out) {
                Ok(()) => 0,
                Err(e) => {
                    report_error(
                        json,
                        &Error::local_state(format!("writing completions: {e}")),
                    );
                    ErrorCode::LocalState.exit_code()
                }
            }
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            match crate::cli::docs::write_man_pages(super::Cli::command(), &out) {
                Ok(files) => {
                    eprintln!("wrote {} man pages to {}", files.len(), out.display());
                    0
                }
                Err(e) => {
                    report_error(json, &Error::local_state(format!("writing man pages: {e}")));
                    ErrorCode::LocalState.exit_code()
                }
            }
        }
        Command::Schemas { dir } => match crate::cli::schemas::write_all(&dir) {
            Ok(files) => {
                eprintln!("wrote {} schemas to {}", files.len(), dir.display());
                0
            }
            Err(e) => {
                report_error(json, &Error::local_state(format!("writing schemas: {e}")));
                ErrorCode::LocalState.exit_code()
            }
        },
    }
}

/// `--proxy` (or TETHER_PROXY). Credentials in it must not come from the command line,
/// where every user of the machine can read them.
fn proxy_flag(value: &str) -> Result<ProxySetting> {
    let p = ProxySetting::parse(value).map_err(|e| Error::usage(format!("--proxy: {e}")))?;
    let from_env = std::env::var("TETHER_PROXY").ok().as_deref() == Some(value);
    if p.has_credentials() && !from_env {
        return Err(Error::usage(format!(
            "--proxy {}: proxy credentials do not belong on the command line",
            p.describe()
        ))
        .hint("set the URL in TETHER_PROXY, in proxy in tether.toml (mode 0600), or in HTTPS_PROXY with --proxy auto"));
    }
    Ok(p)
}

/// The proxy for calls to receivers: --proxy, else `proxy` in tether.toml, else direct.
fn proxy_setting(
    flag: Option<ProxySetting>,
    config: Option<&std::path::Path>,
    store: &Store,
) -> Result<ProxySetting> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let (cfg, _) = Config::load_or_default(config, &store.home)
        .map_err(|e| Error::usage(format!("configuration: {e}")))?;
    cfg.proxy_setting().map_err(Error::usage)
}

fn daemon_exit(
    json: bool,
    role: daemon::Role,
    store: &Store,
    a: DaemonArgs,
    proxy_override: Option<ProxySetting>,
) -> i32 {
    let opts = daemon::Options {
        role,
        store: store.clone(),
        config_path: a.config,
        listen_override: a.listen,
        ready_file: a.ready_file,
        enroll_dir: a.enroll_dir,
        proxy_override,
    };
    match daemon::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            report_error(json, &e);
            e.code().exit_code()
        }
    }
}

/// Every file's result is in the document; the exit code is the first failure's (0 when all
/// are enrolled or pending).
fn cmd_enroll(json: bool, store: &Store, a: super::EnrollArgs) -> i32 {
    let dir = a.dir.unwrap_or_else(enroll::default_dir);
    if enroll::locate(&dir).is_empty() {
        return finish::<EnrollOutput>(json, Err(enroll::none_found(&dir)));
    }
    let results = enroll::enroll_all(store, &dir, a.wait);
    let code = enroll::first_failure(&results).map(|e| e.code());
    let out = EnrollOutput::of(&results);
    if code.is_some() && !json {
        for e in results.iter().filter_map(|r| r.error.as_ref()) {
            report_error(false, e);
        }
    }
    match code {
        None => finish(json, Ok(out)),
        Some(c) => {
            if json {
                print_json(&out);
            } else {
                eprintln!("{}", crate::cli::output::Render::text(&out));
            }
            c.exit_code()
        }
    }
}

fn cmd_register(store: &Store, a: super::RegisterArgs) -> Result<RegisterOutput> {
    validate::validate_host_name(&a.hostname)?;
    let creds = a.secrets.credentials(true)?;
    let trust = a.trust.choice()?;
    let target = a.server.target()?;
    let opts = RegisterOptions {
        target,
        host_name: a.hostname,
        creds,
        trust,
        key_type: a.key_type,
        force: a.force,
        query_remote: !a.no_query_remote,
    };
    let out = if a.request_takeover {
        let wait = (!a.takeover_wait.is_zero()).then_some(a.takeover_wait);
        match lifecycle::register_or_request_takeover(store, opts, wait, Duration::from_secs(2))? {
            lifecycle::TakeoverOutcome::Registered(out) => out,
            lifecycle::TakeoverOutcome::Queued(NewOutcome::Registered { connection, .. }) => {
                register::Outcome {
                    action: Action::Registered,
                    connection,
                    replaced: Vec::new(),
                    reason: Some(register::Reason::TakenOver),
                    warnings: Vec::new(),
                }
            }
            lifecycle::TakeoverOutcome::Queued(NewOutcome::Pending { uuid, .. }) => {
                return Err(Error::new(
                    ErrorCode::Pending,
                    format!("takeover request {uuid} awaits the site's decision"),
                )
                .hint("an approver of the host's folder or an administrator decides (tether-receiver pending approve); run the same command again to resume"));
            }
        }
    } else {
        register::register(store, opts)?
    };
    Ok(RegisterOutput {
        ok: true,
        changed: out.action != Action::Unchanged,
        action: match out.action {
            Action::Registered => "registered",
            Action::Unchanged => "unchanged",
            Action::Replaced => "replaced",
        }
        .into(),
        insecure: out.connection.trust == "insecure",
        connection: ConnectionView::of(&out.connection),
        replaced: out.replaced,
        reason: out.reason.map(|r| r.as_str().to_string()),
        reason_text: out.reason.map(|r| r.describe().to_string()),
        warnings: out.warnings,
    })
}

fn cmd_register_new(store: &Store, a: super::RegisterNewArgs) -> Result<RegisterNewOutput> {
    let creds = a.secrets.credentials(true)?;
    let trust = a.trust.choice()?;
    let target = a.server.target()?;
    let labels: BTreeMap<String, String> = a.agent_labels.into_iter().collect();
    let out = register::register_new(
        store,
        RegisterNewOptions {
            target,
            creds,
            trust,
            key_type: a.key_type,
            labels,
            wait: if a.no_wait {
                None
            } else {
                Some(Duration::from_secs(a.timeout))
            },
            poll_interval: a.poll_interval,
        },
    )?;
    Ok(match out {
        NewOutcome::Registered {
            connection,
            resumed,
        } => RegisterNewOutput {
            ok: true,
            changed: true,
            status: "success".into(),
            uuid: connection.uuid.clone(),
            resumed,
            connection: Some(ConnectionView::of(&connection)),
        },
        NewOutcome::Pending { uuid, resumed } => RegisterNewOutput {
            ok: true,
            changed: !resumed,
            status: "pending".into(),
            uuid,
            resumed,
            connection: None,
        },
    })
}

enum ProxyResult {
    Stdout(Bundle),
    File(ProxyRegisterOutput),
}

fn cmd_proxy_register(a: super::ProxyRegisterArgs) -> Result<ProxyResult> {
    validate::validate_host_name(&a.hostname)?;
    let creds = a.secrets.credentials(true)?;
    let trust = a.trust.choice()?;
    let target = a.server.target()?;
    let conn = register::proxy_register(RegisterOptions {
        target,
        host_name: a.hostname,
        creds,
        trust,
        key_type: a.key_type,
        force: false,
        query_remote: false,
    })?;
    let bundle = Bundle::new(conn.clone());
    match a.output {
        None => Ok(ProxyResult::Stdout(bundle)),
        Some(path) => {
            let data =
                serde_json::to_vec_pretty(&bundle).map_err(|e| Error::internal(e.to_string()))?;
            // 0600 from the first byte: the bundle holds a private key.
            state::write_atomic(&path, &data).map_err(state_err)?;
            Ok(ProxyResult::File(ProxyRegisterOutput {
                ok: true,
                changed: true,
                output: path.display().to_string(),
                connection: ConnectionView::of(&conn),
            }))
        }
    }
}

fn cmd_probe(a: super::ProbeArgs) -> Result<ProbeOutput> {
    let trust = a.trust.choice()?;
    let target = a.server.target()?;
    let p = crate::controller::probe::probe(&target, &trust)?;
    Ok(ProbeOutput {
        ok: true,
        changed: false,
        server: state::format_server(&target.host, target.port),
        site: target.site,
        trust: p.trust.to_string(),
        presented_certificates: crate::error::label_chain(&p.server_fingerprints),
        server_fingerprints: p.server_fingerprints,
    })
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cmd_import(store: &Store, a: super::ImportArgs) -> Result<ImportOutput> {
    let text = if a.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(16 << 20)
            .read_to_string(&mut s)
            .map_err(|e| Error::usage(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&a.file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", a.file)))?
    };
    let host = a.hostname.unwrap_or_else(local_hostname);
    let conns = bundle::parse_import(&text, &host)
        .map_err(|e| Error::usage(format!("import refused: {e}")))?;
    let lock = store.lock(LOCK_WAIT).map_err(state_err)?;
    let mut reg = store.load().map_err(state_err)?;
    let mut imported = Vec::new();
    let mut unchanged = Vec::new();
    for mut c in conns {
        if let Some(existing) = reg.find(&c.uuid) {
            c.registered_at = existing.registered_at;
            if *existing == c {
                unchanged.push(c.uuid.clone());
                continue;
            }
        }
        reg.connections.retain(|x| x.uuid != c.uuid);
        imported.push(ConnectionView::of(&c));
        reg.connections.push(c);
    }
    if !imported.is_empty() {
        store.save(&lock, &reg).map_err(state_err)?;
    }
    Ok(ImportOutput {
        ok: true,
        changed: !imported.is_empty(),
        imported,
        unchanged,
    })
}

pub fn remote_error(e: &Error) -> RemoteError {
    RemoteError {
        code: e.code(),
        message: e.0.message.clone(),
        http_status: e.0.http_status,
    }
}

fn cmd_status(store: &Store, a: super::StatusArgs) -> Result<StatusOutput> {
    let reg = store.load().map_err(state_err)?;
    let (cfg, _) =
        Config::load_or_default(a.config.as_deref(), &store.home).map_err(Error::usage)?;
    let query = |c: &state::Connection| -> RemoteView {
        if a.no_query_remote || c.server.is_empty() {
            return RemoteView {
                status: "not_queried".into(),
                hostname: None,
                connection_mode: None,
                error: None,
            };
        }
        match remote::registration_status(c) {
            Ok(SiteStatus::Registered {
                hostname,
                connection_mode,
            }) => RemoteView {
                status: "registered".into(),
                hostname: Some(hostname),
                connection_mode: Some(connection_mode),
                error: None,
            },
            Ok(SiteStatus::NotRegistered) => RemoteView {
                status: "not_registered".into(),
                hostname: None,
                connection_mode: None,
                error: None,
            },
            Ok(SiteStatus::Unverifiable(why)) => RemoteView {
                status: "unknown".into(),
                hostname: None,
                connection_mode: None,
                error: Some(RemoteError {
                    code: ErrorCode::Unsupported,
                    message: why,
                    http_status: Some(404),
                }),
            },
            Err(e) => RemoteView {
                // The receiver answered but refused our certificate (revoked, unknown):
                // register again. Anything else (network, trust) is an error.
                status: if e.code() == ErrorCode::NotRegistered
                    || matches!(e.0.http_status, Some(400..=404))
                {
                    "rejected"
                } else {
                    "error"
                }
                .into(),
                hostname: None,
                connection_mode: None,
                error: Some(remote_error(&e)),
            },
        }
    };
    // Remote queries run in parallel: a slow site must not multiply the wait.
    let remotes: Vec<RemoteView> = std::thread::scope(|s| {
        let handles: Vec<_> = reg
            .connections
            .iter()
            .map(|c| s.spawn(move || query(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| RemoteView {
                    status: "error".into(),
                    hostname: None,
                    connection_mode: None,
                    error: Some(RemoteError {
                        code: ErrorCode::Internal,
                        message: "query failed".into(),
                        http_status: None,
                    }),
                })
            })
            .collect()
    });
    let connections = reg
        .connections
        .iter()
        .zip(remotes)
        .map(|(c, remote)| ConnectionStatus {
            connection: ConnectionView::of(c),
            remote,
        })
        .collect();
    let source = Source::from_config(&cfg.agent);
    let present = source.check_present();
    let health = daemon::read_health(&store.home);
    Ok(StatusOutput {
        ok: true,
        home: store.home.display().to_string(),
        connections,
        pending: reg.pending.iter().map(PendingView::of).collect(),
        agent_source: SourceHealth {
            kind: source.kind().into(),
            location: source.describe(),
            ok: present.is_ok(),
            error: present.err(),
            last_daemon_error: health.and_then(|h| h.agent_source_error),
        },
        enrollments: enrollment_states(store, a.enroll_dir.as_deref())?,
    })
}

fn enrollment_states(store: &Store, dir: Option<&std::path::Path>) -> Result<Vec<EnrollState>> {
    let dir = dir
        .map(|d| d.to_path_buf())
        .unwrap_or_else(enroll::default_dir);
    let states = enroll::load_states(store)?;
    Ok(enroll::locate(&dir)
        .into_iter()
        .map(|f| {
            let key = f.display().to_string();
            let st = states.get(&key);
            EnrollState {
                file: key,
                status: st.map_or("not_tried".into(), |s| s.status.clone()),
                uuid: st.and_then(|s| s.uuid.clone()),
                host_name: st.and_then(|s| s.host_name.clone()),
                error_code: st.and_then(|s| s.error_code.clone()),
                error_message: st.and_then(|s| s.error_message.clone()),
                last_tried: st.map(|s| certs::rfc3339(s.last_tried)),
            }
        })
        .collect())
}

fn cmd_delete(store: &Store, selector: Option<&str>, local_only: bool) -> Result<DeleteOutput> {
    let deleted = lifecycle::delete(store, selector, local_only)?;
    Ok(DeleteOutput {
        ok: true,
        changed: !deleted.is_empty(),
        unregistered_on_site: deleted
            .iter()
            .filter(|d| d.site_unregistered == Some(true))
            .map(|d| d.uuid.clone())
            .collect(),
        warnings: deleted.iter().filter_map(|d| d.warning.clone()).collect(),
        deleted: deleted.into_iter().map(|d| d.uuid).collect(),
    })
}

fn cmd_renew(store: &Store, selector: Option<&str>) -> Result<RenewOutput> {
    let reg = store.load().map_err(state_err)?;
    let uuids: Vec<String> = match selector {
        Some(s) => reg.select(s).into_iter().map(|c| c.uuid.clone()).collect(),
        None => reg
            .connections
            .iter()
            .filter(|c| !c.server.is_empty())
            .map(|c| c.uuid.clone())
            .collect(),
    };
    if uuids.is_empty() {
        return Err(Error::new(
            ErrorCode::NotFound,
            match selector {
                Some(s) => format!("no connection matches {s:?}"),
                None => "no connections to renew".into(),
            },
        ));
    }
    let mut renewed = Vec::new();
    for u in uuids {
        renewed.push(ConnectionView::of(&renew::renew(store, &u)?));
    }
    Ok(RenewOutput {
        ok: true,
        changed: true,
        renewed,
    })
}

fn agent_output(store: &Store, config: Option<&std::path::Path>) -> Result<Vec<u8>> {
    let (cfg, _) = Config::load_or_default(config, &store.home).map_err(Error::usage)?;
    let source = Source::from_config(&cfg.agent);
    agent_source::read_output_blocking(
        &source,
        Duration::from_secs(cfg.agent.timeout_secs),
        cfg.agent.max_output_bytes,
    )
    .map_err(|e| {
        Error::new(
            ErrorCode::LocalState,
            format!("agent output unavailable: {e}"),
        )
        .hint("install the Checkmk agent package, or set [agent] command/file in tether.toml")
    })
}

fn cmd_dump(store: &Store) -> Result<DumpOutput> {
    let out = agent_output(store, None)?;
    Ok(DumpOutput {
        ok: true,
        bytes: out.len(),
        output: String::from_utf8_lossy(&out).into_owned(),
    })
}

fn cmd_push(store: &Store, a: &DaemonArgs) -> Result<PushOutput> {
    let reg = store.load().map_err(state_err)?;
    let push_conns: Vec<_> = reg
        .connections
        .iter()
        .filter(|c| c.mode == ConnectionMode::Push)
        .collect();
    if push_conns.is_empty() {
        return Ok(PushOutput {
            ok: true,
            changed: false,
            bytes: 0,
            pushed: Vec::new(),
        });
    }
    let output = agent_output(store, a.config.as_deref())?;
    let pushed: Vec<PushResult> = push_conns
        .iter()
        .map(|c| match push::push_once(c, &output) {
            Ok(()) => PushResult {
                uuid: c.uuid.clone(),
                ok: true,
                error: None,
            },
            Err(e) => PushResult {
                uuid: c.uuid.clone(),
                ok: false,
                error: Some(remote_error(&e)),
            },
        })
        .collect();
    if let Some(failed) = pushed.iter().find(|p| !p.ok) {
        let e = failed.error.as_ref();
        return Err(Error::new(
            e.map(|e| e.code).unwrap_or(ErrorCode::Protocol),
            format!(
                "push for {} failed: {}",
                failed.uuid,
                e.map(|e| e.message.as_str()).unwrap_or("")
            ),
        ));
    }
    Ok(PushOutput {
        ok: true,
        changed: true,
        bytes: output.len(),
        pushed,
    })
}
