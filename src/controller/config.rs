//! Daemon configuration (TOML). Looked up at `--config`, `TETHER_CONFIG`,
//! `$TETHER_HOME/tether.toml`, then `/etc/tether/tether.toml`; every key has a safe default.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::proxy::ProxySetting;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How calls to receivers are made: `direct` (default), `auto` (HTTPS_PROXY / NO_PROXY)
    /// or `http://[USER:PASSWORD@]HOST:PORT`. `--proxy` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// `text` (default) or `json` log lines on stderr. `--log-format` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    pub pull: PullConfig,
    pub push: PushConfig,
    pub renew: RenewConfig,
    pub agent: AgentConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// Addresses to listen on; `[::]:6556` is dual-stack on Linux.
    pub listen: Vec<SocketAddr>,
    /// IPs and CIDRs allowed to pull; empty allows all.
    pub allowed_ip: Vec<String>,
    pub max_connections_per_ip: usize,
    /// Timeout of each phase (marker, handshake, send).
    pub phase_timeout_secs: u64,
    /// Serve plaintext when nothing is registered (Checkmk's legacy mode). Off by default.
    pub legacy_plaintext: bool,
    /// How often the daemon looks for registry changes.
    pub registry_poll_ms: u64,
    /// Overall connection limit, to bound memory under a flood.
    pub max_connections: usize,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            listen: vec![SocketAddr::from((
                [0u16; 8],
                crate::wire::paths::DEFAULT_PULL_PORT,
            ))],
            allowed_ip: Vec::new(),
            max_connections_per_ip: 3,
            phase_timeout_secs: 20,
            legacy_plaintext: false,
            registry_poll_ms: 1000,
            max_connections: 512,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    pub interval_secs: u64,
    /// Random extra delay, as a fraction of the interval, so a fleet does not push in step.
    pub jitter: f64,
    /// Longest wait between failed attempts.
    pub max_backoff_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            interval_secs: 60,
            jitter: 0.1,
            max_backoff_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RenewConfig {
    /// Renew when less than this fraction of the certificate lifetime is left.
    pub below_fraction: f64,
    pub check_interval_secs: u64,
}

impl Default for RenewConfig {
    fn default() -> Self {
        RenewConfig {
            below_fraction: 1.0 / 3.0,
            check_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Checkmk agent socket (spec §4).
    pub socket: PathBuf,
    /// Run this command instead of using the socket (argv, no shell).
    pub command: Vec<String>,
    /// Serve this file's content (tests, benchmarks, static hosts).
    pub file: Option<PathBuf>,
    pub timeout_secs: u64,
    /// Largest agent output accepted from the source.
    pub max_output_bytes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            socket: PathBuf::from("/run/check-mk-agent.socket"),
            command: Vec::new(),
            file: None,
            timeout_secs: 60,
            max_output_bytes: 64 << 20,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates the text of a configuration file.
    pub fn parse_str(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Finds the configuration file; `None` means defaults.
    pub fn locate(explicit: Option<&Path>, home: &Path) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("TETHER_CONFIG").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(p));
        }
        [
            home.join("tether.toml"),
            PathBuf::from("/etc/tether/tether.toml"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    }

    pub fn load_or_default(
        explicit: Option<&Path>,
        home: &Path,
    ) -> Result<(Config, Option<PathBuf>), String> {
        match Self::locate(explicit, home) {
            Some(p) => Ok((Self::load(&p)?, Some(p))),
            None => Ok((Config::default(), None)),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.allowed_nets()?;
        self.proxy_setting()?;
        if self.pull.max_connections_per_ip == 0 || self.pull.phase_timeout_secs == 0 {
            return Err(
                "pull.max_connections_per_ip and pull.phase_timeout_secs must be positive".into(),
            );
        }
        // 1.0 renews at every check: useful to test renewal, never in production.
        if !(0.0..=1.0).contains(&self.renew.below_fraction) {
            return Err("renew.below_fraction must be between 0 and 1".into());
        }
        if self.push.interval_secs == 0 {
            return Err("push.interval_secs must be positive".into());
        }
        Ok(())
    }

    /// The `proxy` key; direct when absent.
    pub fn proxy_setting(&self) -> Result<ProxySetting, String> {
        match &self.proxy {
            None => Ok(ProxySetting::Direct),
            Some(p) => ProxySetting::parse(p).map_err(|e| format!("proxy: {e}")),
        }
    }

    pub fn allowed_nets(&self) -> Result<Vec<IpNet>, String> {
        self.pull
            .allowed_ip
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("pull.allowed_ip: {s:?} is neither an IP nor a CIDR"))
            })
            .collect()
    }
}
