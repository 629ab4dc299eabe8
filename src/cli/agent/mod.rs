//! The agent-side CLI, binary `tether`.
mod args;
mod commands;
pub mod views;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use schemars::schema_for;

pub use args::split_host_port;
use args::{key_type_parser, parse_label, SecretArgs, ServerArgs, TrustArgs};

use crate::cli::output::LogFormat;
use crate::controller::config::{Config, LogFormat as ConfigLogFormat};
use crate::controller::keys::KeyType;

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Register this host with Checkmk sites and serve their pulls over mutual TLS",
    long_about = "Non-interactive and idempotent: no prompts, secrets only from files, stdin or the environment, and with --json exactly one JSON document on stdout. State lives in $TETHER_HOME (default /var/lib/tether)."
)]
pub struct Cli {
    /// Print exactly one JSON document on stdout (schemas in schemas/).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr: text (colour only on a terminal; no timestamps when stderr is
    /// the systemd journal) or json (one object per line, for log shippers) [default:
    /// log_format in tether.toml, else text]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How calls to receivers are made: direct, auto (HTTPS_PROXY, except hosts in
    /// NO_PROXY), or through http://HOST:PORT (credentials only via TETHER_PROXY or
    /// tether.toml) [default: proxy in tether.toml, else direct]
    #[arg(
        long,
        global = true,
        env = "TETHER_PROXY",
        hide_env_values = true,
        value_name = "auto|direct|URL"
    )]
    pub proxy: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The `--config` of the subcommand, if it takes one.
    fn config_path(&self) -> Option<&std::path::Path> {
        match &self.command {
            Command::Status(a) => a.config.as_deref(),
            Command::Daemon(a) | Command::Pull(a) | Command::Push(a) => a.config.as_deref(),
            _ => None,
        }
    }

    /// --log-format, else `log_format` in tether.toml, else text. A configuration that does
    /// not load is reported by the command that needs it, not here.
    fn log_format(&self) -> LogFormat {
        if let Some(f) = self.log_format {
            return f;
        }
        let home = crate::controller::state::Store::from_env().home;
        match Config::load_or_default(self.config_path(), &home) {
            Ok((cfg, _)) => match cfg.log_format {
                Some(ConfigLogFormat::Json) => LogFormat::Json,
                Some(ConfigLogFormat::Text) | None => LogFormat::Text,
            },
            Err(_) => LogFormat::Text,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register this host with a site for an existing host (site: register_existing).
    Register(RegisterArgs),
    /// Register as a new host; the site creates it (or declines) by its rules.
    RegisterNew(RegisterNewArgs),
    /// Converge the drop-in enrollment files (enroll.toml, enroll.d/*.toml); idempotent.
    Enroll(EnrollArgs),
    /// Register another host and write its connection bundle (holds a private key).
    ProxyRegister(ProxyRegisterArgs),
    /// Import a connection bundle or a Checkmk registered_connections.json (FILE or -).
    Import(ImportArgs),
    /// Check that a receiver is reachable and trusted (no credentials sent, nothing stored).
    Probe(ProbeArgs),
    /// Local and remote state of every connection, and the agent source's health.
    Status(StatusArgs),
    /// Delete connections matching a UUID, host name or SERVER/SITE, ending their
    /// registrations on the sites too (a Checkmk site: local delete and a warning); none
    /// matching is an error (not_found, exit 14).
    Delete(DeleteArgs),
    /// Delete all connections (and end their registrations on the sites).
    DeleteAll {
        /// Only forget the connections here.
        #[arg(long)]
        local_only: bool,
    },
    /// Renew certificates now (all connections, or the one named).
    RenewCertificate(RenewArgs),
    /// Print the agent output, as a site would get it.
    Dump,
    /// Run the daemon: serve pulls, push, renew certificates (systemd Type=notify).
    Daemon(DaemonArgs),
    /// Run only the pull listener.
    Pull(DaemonArgs),
    /// Push agent output once for every push connection.
    Push(DaemonArgs),
    /// Pre-generate a spare RSA key so the next registration or renewal is fast.
    #[command(hide = true)]
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Write the JSON Schemas of both CLIs' outputs into DIR.
    #[command(hide = true)]
    Schemas {
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
    /// Print the shell completion script for SHELL (the packages install them).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: crate::cli::docs::Shell,
    },
    /// Write the man pages (tether.1, tether-SUBCOMMAND.1) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    Refill {
        #[arg(long, value_parser = key_type_parser(), ignore_case = true, default_value = "rsa4096")]
        key_type: KeyType,
    },
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Name of this host on the site.
    #[arg(short = 'H', long = "hostname", value_name = "HOST")]
    pub hostname: String,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Key type of the agent certificate.
    #[arg(long, value_parser = key_type_parser(), ignore_case = true, default_value = "ec")]
    pub key_type: KeyType,
    /// Replace an existing registration with this site under another host name.
    #[arg(long)]
    pub force: bool,
    /// Trust local state instead of asking the receiver whether it still knows us.
    #[arg(long)]
    pub no_query_remote: bool,
    /// If the site holds this host for another registration (a reinstalled machine), ask the
    /// approvers of its folder to hand it over (needs a user with a password; exit 10 while
    /// the request waits; run again to resume).
    #[arg(long)]
    pub request_takeover: bool,
    /// With --request-takeover: how long to wait for the decision (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", value_name = "DURATION")]
    pub takeover_wait: Duration,
}

#[derive(Debug, clap::Args)]
pub struct RegisterNewArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Agent labels the site's rules match on (repeatable), e.g. cmk/hostname:web01.
    #[arg(long = "agent-labels", value_name = "KEY:VALUE", value_parser = parse_label, num_args = 1..)]
    pub agent_labels: Vec<(String, String)>,
    /// Key type of the agent certificate.
    #[arg(long, value_parser = key_type_parser(), ignore_case = true, default_value = "ec")]
    pub key_type: KeyType,
    /// Seconds to wait for the site's decision.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Return the pending state at once instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// How often to ask the site while waiting.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// Directory with enroll.toml and enroll.d/ [default: $TETHER_HOME if set, else /etc/tether]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Wait up to this long for the site's decision on new hosts (default: do not wait;
    /// a pending enrollment is resumed by the next run or by the daemon).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
}

#[derive(Debug, clap::Args)]
pub struct ProxyRegisterArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Host name of the host the bundle is for.
    #[arg(short = 'H', long = "hostname", value_name = "HOST")]
    pub hostname: String,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Key type of the agent certificate.
    #[arg(long, value_parser = key_type_parser(), ignore_case = true, default_value = "ec")]
    pub key_type: KeyType,
    /// Write the bundle to FILE (created 0600) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Bundle or registered_connections.json; `-` reads stdin.
    pub file: String,
    /// Host name to record for Checkmk connections (they carry none).
    #[arg(short = 'H', long = "hostname")]
    pub hostname: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Do not contact the receivers.
    #[arg(long)]
    pub no_query_remote: bool,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory with enroll.toml and enroll.d/ [default: $TETHER_HOME if set, else /etc/tether]
    #[arg(long, value_name = "DIR")]
    pub enroll_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// UUID, host name, or SERVER/SITE.
    pub connection: String,
    /// Only forget the connection here; do not end its registration on the site.
    #[arg(long)]
    pub local_only: bool,
}

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// UUID, host name, or SERVER/SITE; all connections when omitted.
    pub connection: Option<String>,
}

#[derive(Debug, clap::Args, Clone)]
pub struct DaemonArgs {
    /// Configuration file (TOML); default $TETHER_HOME/tether.toml, then /etc/tether/tether.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override pull.listen (repeatable), e.g. 127.0.0.1:0 in tests.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Write the bound pull addresses here once listening (for tests and scripts).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Directory with enroll.toml and enroll.d/, converged at start [default: $TETHER_HOME
    /// if set, else /etc/tether]
    #[arg(long, value_name = "DIR")]
    pub enroll_dir: Option<PathBuf>,
}

/// Parses argv, runs the command, prints the result and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let json = std::env::args().any(|a| a == "--json");
            return commands::usage_error(json, e);
        }
    };
    crate::cli::output::init_logging(cli.verbose, cli.log_format());
    crate::wire::tls::install_default_provider();
    commands::run(cli)
}

/// Schemas of this CLI's JSON outputs.
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    use views::*;
    vec![
        (
            "tether.register.schema.json".into(),
            schema_for!(RegisterOutput),
        ),
        (
            "tether.register-new.schema.json".into(),
            schema_for!(RegisterNewOutput),
        ),
        (
            "tether.proxy-register.schema.json".into(),
            schema_for!(ProxyRegisterOutput),
        ),
        (
            "tether.bundle.schema.json".into(),
            schema_for!(crate::controller::bundle::Bundle),
        ),
        (
            "tether.import.schema.json".into(),
            schema_for!(ImportOutput),
        ),
        ("tether.probe.schema.json".into(), schema_for!(ProbeOutput)),
        (
            "tether.status.schema.json".into(),
            schema_for!(StatusOutput),
        ),
        (
            "tether.delete.schema.json".into(),
            schema_for!(DeleteOutput),
        ),
        (
            "tether.renew-certificate.schema.json".into(),
            schema_for!(RenewOutput),
        ),
        ("tether.dump.schema.json".into(), schema_for!(DumpOutput)),
        ("tether.push.schema.json".into(), schema_for!(PushOutput)),
        (
            "tether.enroll.schema.json".into(),
            schema_for!(EnrollOutput),
        ),
    ]
}
