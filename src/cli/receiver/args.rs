//! Command line of `tether-receiver`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tether-receiver",
    version,
    about = "Site-side agent receiver speaking the Checkmk agent-receiver API"
)]
pub struct Cli {
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Receiver directory (keys and database).
    #[arg(long, global = true, env = "TETHER_RECEIVER_DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the site's state in PostgreSQL (postgres://USER@HOST:PORT/DB, or key=value
    /// form) instead of DIR's SQLite file; every receiver given the same database serves
    /// one site. The password never goes here: --database-password-file or PGPASSWORD.
    #[arg(
        long,
        global = true,
        env = "TETHER_RECEIVER_DATABASE",
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// File holding the PostgreSQL password (first line).
    #[arg(long, global = true, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Log format on stderr: text (colour only on a terminal; no timestamps when stderr is
    /// the systemd journal) or json (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::cli::output::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the site CA, agent-signing CA, server certificate and database (idempotent).
    Init(InitArgs),
    /// Print the SHA-256 fingerprints of the server certificate and the site CA; pin the site
    /// CA's on agents (it stays valid when the server certificate is replaced).
    Fingerprint,
    /// Serve the agent-receiver API over HTTPS.
    Serve(ServeArgs),
    /// Users (passwords from a file, stdin or TETHER_RECEIVER_PASSWORD; never on argv).
    #[command(subcommand)]
    User(UserCmd),
    /// Roles: built-in admin, agent_registration, user; custom roles are permission lists.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Contact groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Folders (a tree; contact groups are inherited by subfolders and hosts).
    #[command(subcommand)]
    Folder(FolderCmd),
    /// Hosts, and their delivery health (`hosts health`).
    #[command(subcommand, alias = "hosts")]
    Host(HostCmd),
    /// Auto-registration rules for new hosts (first match wins).
    #[command(subcommand)]
    Rule(RuleCmd),
    /// Registration tokens: host-bound one-time tokens, and scoped enrollment tokens for new
    /// hosts (--register-new) that may ride in deployment packages.
    #[command(subcommand)]
    Token(TokenCmd),
    /// New-host registrations awaiting a decision; with --server, through the admin API of a
    /// remote site as one of its users (no --dir needed).
    Pending(PendingArgs),
    /// Registrations (UUID ↔ host links).
    #[command(subcommand)]
    Registrations(RegistrationsCmd),
    /// Revoke every registration (and certificate) of a host.
    Unregister { host: String },
    /// Show the audit log (oldest first).
    Audit(AuditArgs),
    /// Pull agent output like Checkmk's fetcher (TLS on port 6556).
    Fetch(FetchArgs),
    /// Show the latest pushed or pulled agent output of a host and its age; --raw hands it
    /// to Checkmk as a datasource program.
    AgentData(AgentDataArgs),
    /// Converge users, roles, groups, folders, hosts, rules and tokens to a YAML or JSON file.
    Apply(ApplyArgs),
    /// Site-wide settings (the default pull interval).
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Copy a site's whole state from its SQLite file to PostgreSQL (one verified
    /// transaction), then point the site directory at PostgreSQL. Stop the receivers first.
    Migrate(MigrateArgs),
    /// Print the shell completion script for SHELL (the packages install them).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: crate::cli::docs::Shell,
    },
    /// Write the man pages (tether-receiver.1, tether-receiver-SUBCOMMAND.1) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Site name (letters, digits, underscores); part of every URL.
    #[arg(long)]
    pub site: String,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Lifetime of issued agent certificates.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub cert_lifetime: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; `[::]` takes IPv6 and IPv4 (dual-stack); port 0 picks a free
    /// port (see --ready-file).
    #[arg(long, default_value = "[::]:8000")]
    pub listen: String,
    /// Once listening, write the bound ip:port into this file (atomically).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Largest JSON request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Largest agent_data push (compressed, whole body) in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_push_bytes: usize,
    /// Largest agent output after decompression, push and pull, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_output_bytes: usize,
    /// Deadline for a whole request, body included.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Deadline for a client's TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Deadline for receiving a request's headers (also bounds idle keep-alive waits).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Most connections open at once; beyond, new ones are closed before TLS.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections open at once from one source address.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,
    /// Most TLS handshakes in progress at once from one source address; more wait for a slot.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes_per_ip: u32,
    /// Failed authentications allowed per source address in a burst.
    #[arg(long, default_value_t = 10)]
    pub auth_fail_burst: u32,
    /// Failed authentications per source address and minute after the burst.
    #[arg(long, default_value_t = 30)]
    pub auth_fail_per_minute: u32,
    /// How long a verified password stays cached.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub credential_cache_ttl: std::time::Duration,
    /// Switch the web console (`/SITE/tether-admin/`) off: its pages answer 404. The admin
    /// API is not affected.
    /// (`TETHER_RECEIVER_NO_CONSOLE`: empty, 0, false, no or off leave it on.)
    #[arg(long, env = "TETHER_RECEIVER_NO_CONSOLE",
          value_parser = clap::builder::FalseyValueParser::new())]
    pub no_console: bool,
    /// A web console session ends after this long without a request.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration,
          env = "TETHER_RECEIVER_CONSOLE_IDLE_TIMEOUT")]
    pub console_idle_timeout: std::time::Duration,
    /// Behave like another Checkmk receiver (interop tests only).
    #[arg(long, value_enum, hide = true)]
    pub emulate: Vec<EmulateArg>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Do not pull hosts on their interval (then only `fetch` pulls).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Scheduled pulls in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub pull_concurrency: u32,
    /// Deadline of one scheduled pull (connect, handshake, read); never beyond the host's
    /// interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub pull_timeout: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP; e.g. 127.0.0.1:9650).
    /// Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// The audit log's retention (`serve` applies it at start and hourly).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Delete audit entries older than this (0 keeps them whatever their age).
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub audit_max_age: std::time::Duration,
    /// Keep at most this many audit entries, the newest (0: no limit).
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_max_rows: u64,
}

impl RetentionArgs {
    pub fn to_retention(&self) -> crate::receiver::store::Retention {
        let age = self.audit_max_age.as_secs();
        crate::receiver::store::Retention {
            max_age_secs: (age > 0).then(|| i64::try_from(age).unwrap_or(i64::MAX)),
            max_rows: (self.audit_max_rows > 0)
                .then(|| i64::try_from(self.audit_max_rows).unwrap_or(i64::MAX)),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EmulateArg {
    NoRegistrationStatusV2,
    NoRegistrationStatus,
    NoTokenEndpoint,
    RawEdition,
    NoRevocation,
    NoTetherRoutes,
}

impl EmulateArg {
    pub fn to_api(self) -> crate::receiver::api::Emulate {
        use crate::receiver::api::Emulate;
        match self {
            EmulateArg::NoRegistrationStatusV2 => Emulate::NoRegistrationStatusV2,
            EmulateArg::NoRegistrationStatus => Emulate::NoRegistrationStatus,
            EmulateArg::NoTokenEndpoint => Emulate::NoTokenEndpoint,
            EmulateArg::RawEdition => Emulate::RawEdition,
            EmulateArg::NoRevocation => Emulate::NoRevocation,
            EmulateArg::NoTetherRoutes => Emulate::NoTetherRoutes,
        }
    }
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from this file (first line).
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Read the password from stdin (first line).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user, or update role, groups and password of an existing one.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long = "contact-group")]
        contact_groups: Vec<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Change a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Delete a user.
    Del { name: String },
    /// List the users.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Add or replace a custom role.
    Add {
        name: String,
        #[arg(long = "permission", value_parser = clap::builder::PossibleValuesParser::new(crate::receiver::perms::ALL))]
        permissions: Vec<String>,
    },
    /// Delete a custom role.
    Del { name: String },
    /// List the roles.
    List,
    /// List every known permission.
    Permissions,
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Add a contact group, or set the alias of an existing one.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        alias: String,
    },
    /// Delete a contact group.
    Del { name: String },
    /// List the contact groups.
    List,
}

#[derive(Debug, Subcommand)]
pub enum FolderCmd {
    /// Add a folder (parents are created) or set its contact groups.
    Add {
        path: String,
        #[arg(long = "contact-group")]
        contact_groups: Vec<String>,
        /// Seconds between pulls for the hosts below (e.g. 30s); default: inherited.
        #[arg(long, value_name = "INTERVAL")]
        pull_interval: Option<String>,
    },
    /// Delete a folder.
    Del { path: String },
    /// List the folders.
    List,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Add a host, or update an existing one to exactly these attributes.
    Add {
        name: String,
        #[arg(long, default_value = "/")]
        folder: String,
        #[arg(long = "contact-group")]
        contact_groups: Vec<String>,
        /// Monitoring site (default: this site).
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        cluster: bool,
        /// How the site gets the host's data.
        #[arg(long, default_value = "pull", value_parser = mode_parser())]
        mode: String,
        /// Address the fetcher connects to (default: the host name).
        #[arg(long)]
        address: Option<String>,
        /// Port the fetcher connects to (default 6556).
        #[arg(long)]
        agent_port: Option<u16>,
        /// Seconds between pulls (push hosts: expected pushes), e.g. 30s; default:
        /// inherited from the folders or the site.
        #[arg(long, value_name = "INTERVAL")]
        pull_interval: Option<String>,
    },
    /// Delete a host; its registrations are revoked.
    Del { name: String },
    /// List the hosts.
    List,
    /// Per host: last output, age, stale or not, last pull error, duration, bytes, lease.
    Health,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCmd {
    /// Show the site-wide settings.
    Show,
    /// Change site-wide settings.
    Set {
        /// Seconds between pulls where no host or folder sets one (e.g. 1m); `default`
        /// restores 60 s.
        #[arg(long, value_name = "INTERVAL")]
        pull_interval: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// Add or replace a rule.
    Add {
        name: String,
        /// Label the agent must send, KEY=VALUE (VALUE * = any); repeatable, all must match.
        #[arg(long = "match")]
        matches: Vec<String>,
        /// Create the host in this folder (with --hold: where it would be created).
        #[arg(long, conflicts_with = "decline")]
        create_in: Option<String>,
        /// Label naming the new host (with --create-in).
        #[arg(long)]
        hostname_label: Option<String>,
        /// Connection mode of created hosts.
        #[arg(long, value_parser = mode_parser())]
        mode: Option<String>,
        /// Decline with this reason.
        #[arg(long, conflicts_with = "hold")]
        decline: Option<String>,
        /// Hold for manual approval.
        #[arg(long)]
        hold: bool,
        /// Position in the list (0 = first); default: keep or append.
        #[arg(long)]
        position: Option<usize>,
    },
    /// Delete a rule.
    Del { name: String },
    /// List the rules in order.
    List,
}

/// Connection modes, listed in --help (the API's long names are accepted too).
fn mode_parser() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("pull").alias("pull-agent"),
        PossibleValue::new("push").alias("push-agent"),
    ])
}

fn parse_label_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=').or_else(|| s.split_once(':')) {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token, printed once as ID:SECRET: bound to one existing host (--host, single
    /// use), or a scoped enrollment token for new hosts (--register-new) that may ride in a
    /// deployment package.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["host", "register_new"])))]
    Create {
        /// Register this existing host, once.
        #[arg(long)]
        host: Option<String>,
        /// Create new hosts through the site's rules only (never an existing host).
        #[arg(long)]
        register_new: bool,
        /// Only rules that create in this folder or below may accept it.
        #[arg(long, requires = "register_new")]
        folder: Option<String>,
        /// Agent labels every request must carry (repeatable).
        #[arg(long = "labels", value_name = "KEY=VALUE", requires = "register_new", value_parser = parse_label_kv)]
        labels: Vec<(String, String)>,
        /// How many hosts it may enroll (register_new tokens).
        #[arg(long, default_value_t = 1)]
        max_uses: i64,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// A name to find it by (list, revoke, apply, audit log).
        #[arg(long)]
        name: Option<String>,
    },
    /// Tokens with scope, uses, remaining uses, expiry and last use (never secrets).
    List,
    /// Stop a token at once: by id or name.
    Revoke { token: String },
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(subcommand)]
    pub cmd: PendingCmd,
}

/// Working on a site through its admin API instead of its directory.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The site's URL, https://HOST[:PORT]/SITE (the receiver's port; 8000 if omitted).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Site user (with --server).
    #[arg(long, global = true, requires = "server")]
    pub user: Option<String>,
    /// File holding the user's password (else TETHER_PASSWORD); never on the command line.
    #[arg(long, global = true, value_name = "FILE", requires = "server")]
    pub password_file: Option<PathBuf>,
    /// Trust the receiver whose certificate chain contains this SHA-256 fingerprint (see
    /// `tether-receiver fingerprint` on the site).
    #[arg(
        long,
        global = true,
        value_name = "sha256:HEX",
        requires = "server",
        conflicts_with = "root_ca"
    )]
    pub trust_fingerprint: Option<String>,
    /// Trust the receiver through this CA certificate (PEM, e.g. the site CA).
    #[arg(long, global = true, value_name = "FILE", requires = "server")]
    pub root_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PendingCmd {
    /// New-host registrations awaiting a decision (--all: decided ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Approve: create the host and issue its certificate.
    Approve {
        uuid: String,
        /// Host name of a new host (default: the agent's cmk/hostname label).
        #[arg(long)]
        host: Option<String>,
        /// Folder of a new host (default: the holding rule's folder, else /).
        #[arg(long)]
        folder: Option<String>,
        /// Connection mode of a new host: pull (default) or push.
        #[arg(long, value_parser = mode_parser())]
        mode: Option<String>,
    },
    /// Decline a held registration, with a reason the agent is told.
    Decline {
        uuid: String,
        #[arg(long, default_value = "Declined by the site administrator")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationsCmd {
    /// List the registrations (of one host with --host).
    List {
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub cmd: Option<AuditCmd>,
    #[arg(long)]
    pub host: Option<String>,
    /// Newest N entries.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Delete the entries outside the retention now (what `serve` does hourly).
    Prune(RetentionArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Host to pull (or --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub host: Option<String>,
    /// Pull every registered pull host.
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Timeout of each phase (connect, handshake, read).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Largest agent output after decompression in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_output_bytes: usize,
    /// Also pull hosts without a registration in legacy plaintext mode (spec §3.4).
    /// A registered host is always pulled over TLS; plaintext from it is refused.
    #[arg(long)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Args)]
pub struct AgentDataArgs {
    pub host: String,
    /// Print only the agent output, byte for byte (Checkmk's datasource program); a missing,
    /// stale (older than 1.5 intervals) output or an unknown host exits non-zero with one
    /// line on stderr.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The site directory whose receiver.db is copied: sqlite:DIR.
    #[arg(long, value_name = "sqlite:DIR")]
    pub from: String,
    /// The PostgreSQL database (URL or key=value, no password: --database-password-file or
    /// PGPASSWORD).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Replace the contents of a target database that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Do not write DIR/receiver.toml; the report says what to write.
    #[arg(long)]
    pub no_config: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    pub file: PathBuf,
    /// Report what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}
