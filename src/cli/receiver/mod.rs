//! The site-side CLI, binary `tether-receiver`.
//!
//! This module parses the command line and dispatches; the commands live in the submodules:
//! `site_cmds` (init, fingerprint, serve), `admin_cmds` (users, roles, groups, folders, hosts,
//! rules, tokens), `registration_cmds` (pending, registrations, unregister) and `data_cmds`
//! (agent-data, audit); `db` holds the database helpers they share.
pub mod args;
pub mod output;

mod admin_cmds;
mod data_cmds;
mod db;
mod registration_cmds;
mod remote_cmds;
mod site_cmds;

use schemars::schema_for;

use self::admin_cmds::{
    folder_cmd, group_cmd, host_cmd, role_cmd, rule_cmd, settings_cmd, token_cmd, user_cmd,
};
use self::args::*;
use self::data_cmds::{agent_data, agent_data_raw, audit, audit_prune, raw_fail};
use self::output::*;
use self::registration_cmds::{pending_cmd, registrations, unregister};
use self::site_cmds::{fingerprint, init, serve};
use crate::cli::error::{Error, ErrorCode, Result};
use crate::cli::output::{finish, Render};

pub use self::admin_cmds::read_password;
pub use self::db::{open_db, read, tx};

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
        (
            "receiver.audit-prune.schema.json".into(),
            schema_for!(AuditPruneOut),
        ),
        ("receiver.fetch.schema.json".into(), schema_for!(FetchOut)),
        (
            "receiver.agent-data.schema.json".into(),
            schema_for!(AgentDataOut),
        ),
        ("receiver.apply.schema.json".into(), schema_for!(ApplyOut)),
        (
            "receiver.host.health.schema.json".into(),
            schema_for!(HealthOut),
        ),
        (
            "receiver.settings.schema.json".into(),
            schema_for!(SettingsOut),
        ),
        (
            "receiver.migrate.schema.json".into(),
            schema_for!(crate::receiver::migrate::MigrateReport),
        ),
        (
            "admin-api.pending.schema.json".into(),
            schema_for!(crate::receiver::api::admin_api::PendingListBody),
        ),
        (
            "admin-api.decision.schema.json".into(),
            schema_for!(crate::receiver::api::admin_api::DecisionBody),
        ),
        (
            "admin-api.registrations.schema.json".into(),
            schema_for!(crate::receiver::api::admin_api::RegistrationsBody),
        ),
        (
            "admin-api.unregister.schema.json".into(),
            schema_for!(crate::receiver::api::admin_api::UnregisterBody),
        ),
        (
            "admin-api.audit.schema.json".into(),
            schema_for!(crate::receiver::registrations::AuditPage),
        ),
        (
            "admin-api.error.schema.json".into(),
            schema_for!(crate::receiver::api::admin_api::AdminErrorBody),
        ),
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
            let err = Error::usage(crate::cli::error::clap_message(&e)).hint("see --help");
            crate::cli::output::report_error(json_requested, &err);
            return ErrorCode::Usage.exit_code();
        }
    };
    crate::cli::output::init_logging(
        if matches!(cli.command, Command::Serve(_)) {
            cli.verbose.max(1)
        } else {
            cli.verbose
        },
        cli.log_format
            .unwrap_or(crate::cli::output::LogFormat::Text),
    );
    run(cli)
}

/// `--database`: PostgreSQL for this process's state; the password from a file or the
/// environment, and refused inside the URL (it would sit on the command line).
fn select_database(cli: &Cli) -> Result<()> {
    let Some(url) = &cli.database else {
        if cli.database_password_file.is_some() {
            return Err(Error::usage("--database-password-file needs --database"));
        }
        return Ok(());
    };
    let t = crate::receiver::store::PgTarget::new(url, cli.database_password_file.as_deref())?;
    crate::receiver::store::use_postgres(t);
    Ok(())
}

/// The global database flags, for `migrate` (which takes its target as --to).
struct DbOpts {
    database: Option<String>,
    password_file: Option<std::path::PathBuf>,
}

fn cli_db_opts(cli: &Cli) -> DbOpts {
    DbOpts {
        database: cli.database.clone(),
        password_file: cli.database_password_file.clone(),
    }
}

/// `migrate --from sqlite:DIR --to URL`.
fn migrate(db: &DbOpts, a: MigrateArgs) -> Result<crate::receiver::migrate::MigrateReport> {
    if db.database.is_some() {
        return Err(Error::usage(
            "migrate takes the PostgreSQL database as --to, not --database",
        ));
    }
    let opts = crate::receiver::migrate::MigrateOptions {
        from_dir: crate::receiver::migrate::parse_from(&a.from)?,
        to: crate::receiver::store::PgTarget::new(&a.to, db.password_file.as_deref())?,
        password_file: db.password_file.clone(),
        force: a.force,
        no_config: a.no_config,
    };
    crate::receiver::migrate::run(&opts)
}

fn emit<T: Render>(json: bool, r: Result<T>) -> i32 {
    finish(json, r)
}

pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    // These need no receiver directory.
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = std::io::stdout();
            return match crate::cli::docs::write_completions(Cli::command(), *shell, &mut out) {
                Ok(()) => 0,
                Err(e) => emit::<FingerprintOut>(
                    json,
                    Err(Error::local_state(format!("writing completions: {e}"))),
                ),
            };
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            return match crate::cli::docs::write_man_pages(Cli::command(), out) {
                Ok(files) => {
                    eprintln!("wrote {} man pages to {}", files.len(), out.display());
                    0
                }
                Err(e) => emit::<FingerprintOut>(
                    json,
                    Err(Error::local_state(format!("writing man pages: {e}"))),
                ),
            };
        }
        _ => {}
    }
    // Remote commands work on another machine's site: no directory here.
    let db = cli_db_opts(&cli);
    let cli = match cli.command {
        Command::Migrate(a) => return emit(json, migrate(&db, a)),
        Command::Pending(a) if a.remote.server.is_some() => {
            return remote_cmds::pending_remote(json, &a.remote, a.cmd)
        }
        command => Cli { command, ..cli },
    };
    // `agent-data --raw` is Checkmk's datasource program: stdout is the agent output only,
    // and every failure is one line on stderr (Checkmk shows it as the agent's error).
    let raw = matches!(&cli.command, Command::AgentData(a) if a.raw);
    let dir = match &cli.dir {
        Some(d) => d.clone(),
        None => {
            let e = Error::usage("--dir DIR (or TETHER_RECEIVER_DIR) is required");
            return if raw {
                raw_fail(&e)
            } else {
                emit::<FingerprintOut>(json, Err(e))
            };
        }
    };
    if let Err(e) = select_database(&cli) {
        return if raw {
            raw_fail(&e)
        } else {
            emit::<FingerprintOut>(json, Err(e))
        };
    }
    match cli.command {
        Command::Init(a) => emit(json, init(&dir, a)),
        Command::Fingerprint => emit(json, fingerprint(&dir)),
        Command::Serve(a) => emit(json, serve(&dir, a)),
        Command::User(c) => user_cmd(json, &dir, c),
        Command::Role(c) => role_cmd(json, &dir, c),
        Command::Group(c) => group_cmd(json, &dir, c),
        Command::Folder(c) => folder_cmd(json, &dir, c),
        Command::Host(c) => host_cmd(json, &dir, c),
        Command::Rule(c) => rule_cmd(json, &dir, c),
        Command::Token(c) => token_cmd(json, &dir, c),
        Command::Pending(a) => pending_cmd(json, &dir, a.cmd),
        Command::Registrations(RegistrationsCmd::List { host }) => {
            emit(json, registrations(&dir, host))
        }
        Command::Unregister { host } => emit(json, unregister(&dir, host)),
        Command::Audit(AuditArgs {
            cmd: Some(AuditCmd::Prune(r)),
            ..
        }) => emit(json, audit_prune(&dir, &r)),
        Command::Audit(a) => emit(json, audit(&dir, a)),
        Command::Fetch(a) => {
            let opts = crate::receiver::fetch::FetchOptions {
                host: a.host,
                concurrency: a.concurrency,
                timeout: a.timeout,
                max_output_bytes: a.max_output_bytes,
                allow_plaintext: a.allow_plaintext,
            };
            emit(json, crate::receiver::fetch::run(&dir, &opts))
        }
        Command::AgentData(a) if a.raw => {
            if json {
                return raw_fail(&Error::usage("--raw prints the agent output, not --json"));
            }
            match agent_data_raw(&dir, &a.host) {
                Ok(()) => 0,
                Err(e) => raw_fail(&e),
            }
        }
        Command::AgentData(a) => emit(json, agent_data(&dir, &a.host)),
        Command::Apply(a) => emit(json, crate::receiver::apply::run(&dir, &a.file, a.dry_run)),
        Command::Settings(c) => settings_cmd(json, &dir, c),
        // Answered above, before the directory check.
        Command::Migrate(_) => 0,
        // Answered above, before the directory check.
        Command::Completions { .. } | Command::Man { .. } => 0,
    }
}
