//! The controller's registry of connections: one JSON file under `TETHER_HOME`
//! (default `/var/lib/tether`), written atomically (temp file, fsync, rename) with mode 0600,
//! behind an exclusive lock so concurrent invocations cannot lose a connection.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::keys::KeyType;
use crate::wire::api::ConnectionMode;

pub const DEFAULT_HOME: &str = "/var/lib/tether";
const REGISTRY_FILE: &str = "registry.json";
const LOCK_FILE: &str = "registry.lock";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("state file {0} is corrupt ({1}); it was left untouched: restore it from a backup or move it away to start over")]
    Corrupt(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("state in {0} is locked by another tether process (waited {1}s)")]
    Locked(PathBuf, u64),
}

/// One registration with one site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Connection {
    pub uuid: String,
    /// Receiver host name or address as given by the operator.
    pub server: String,
    pub port: u16,
    pub site: String,
    pub host_name: String,
    pub mode: ConnectionMode,
    /// Site CA: verifies the receiver and the site's pull clients.
    pub root_cert: String,
    pub agent_cert: String,
    pub private_key: String,
    #[serde(default)]
    pub key_type: KeyType,
    /// How the receiver was trusted at registration (`fingerprint`, `root_ca`, `insecure`, `imported`).
    #[serde(default)]
    pub trust: String,
    #[serde(default)]
    pub registered_at: i64,
    /// **ext**: the site's fetcher accepts zstd pulls.
    #[serde(default)]
    pub fetcher_zstd: bool,
}

impl Connection {
    pub fn server_address(&self) -> String {
        format_server(&self.server, self.port)
    }
    /// The agent certificate's facts; `None` when it is unreadable.
    pub fn cert_info(&self) -> Option<crate::wire::certs::CertInfo> {
        let der = crate::wire::certs::cert_from_pem(&self.agent_cert).ok()?;
        crate::wire::certs::cert_info(&der).ok()
    }
    pub fn same_target(&self, server: &str, port: u16, site: &str) -> bool {
        self.server.eq_ignore_ascii_case(server) && self.port == port && self.site == site
    }
}

pub fn format_server(host: &str, port: u16) -> String {
    format!("{}:{port}", url_host(host))
}

/// A host as it stands in a URL: IPv6 addresses in brackets.
pub fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// A new-host registration waiting for the site's decision; resumed by `register-new`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub uuid: String,
    pub server: String,
    pub port: u16,
    pub site: String,
    pub user: String,
    pub root_cert: String,
    pub private_key: String,
    #[serde(default)]
    pub key_type: KeyType,
    #[serde(default)]
    pub trust: String,
    pub started_at: i64,
    #[serde(default)]
    pub agent_labels: std::collections::BTreeMap<String, String>,
    /// Set for a request to take over this existing host (`register --request-takeover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover_host: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Registry {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub connections: Vec<Connection>,
    #[serde(default)]
    pub pending: Vec<Pending>,
}

impl Registry {
    pub fn find(&self, uuid: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.uuid == uuid)
    }
    /// Connections matching a user's selector: UUID, host name, or `SERVER/SITE`.
    pub fn select(&self, selector: &str) -> Vec<&Connection> {
        self.connections
            .iter()
            .filter(|c| {
                c.uuid == selector
                    || c.host_name == selector
                    || format!("{}/{}", c.server, c.site) == selector
                    || format!("{}/{}", c.server_address(), c.site) == selector
            })
            .collect()
    }
}

/// The state directory and its files.
#[derive(Debug, Clone)]
pub struct Store {
    pub home: PathBuf,
}

/// Held while a command reads, changes and writes the registry.
pub struct Lock {
    _file: File,
}

impl Store {
    pub fn from_env() -> Store {
        let home = std::env::var_os("TETHER_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HOME));
        Store { home }
    }

    pub fn new(home: impl Into<PathBuf>) -> Store {
        Store { home: home.into() }
    }

    pub fn registry_path(&self) -> PathBuf {
        self.home.join(REGISTRY_FILE)
    }

    fn ensure_home(&self) -> Result<(), StateError> {
        if !self.home.is_dir() {
            fs::create_dir_all(&self.home).map_err(|e| StateError::Dir(self.home.clone(), e))?;
            fs::set_permissions(&self.home, fs::Permissions::from_mode(0o700))
                .map_err(|e| StateError::Dir(self.home.clone(), e))?;
        }
        Ok(())
    }

    /// Takes the exclusive lock, waiting up to `wait` for another process to finish.
    pub fn lock(&self, wait: Duration) -> Result<Lock, StateError> {
        self.ensure_home()?;
        let path = self.home.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StateError::Write(path.clone(), e))?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StateError::Locked(self.home.clone(), wait.as_secs()))
                }
                Err(fs::TryLockError::Error(e)) => return Err(StateError::Write(path, e)),
            }
        }
    }

    /// Reads the registry; a missing file is an empty registry, a corrupt one an error.
    pub fn load(&self) -> Result<Registry, StateError> {
        let path = self.registry_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(StateError::Read(path, e)),
        };
        let reg: Registry = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Corrupt(path.clone(), e.to_string()))?;
        if reg.version > FORMAT_VERSION {
            return Err(StateError::Corrupt(
                path,
                format!(
                    "format version {} is newer than this tether understands",
                    reg.version
                ),
            ));
        }
        Ok(reg)
    }

    /// Writes the registry atomically. Callers hold the [`Lock`].
    pub fn save(&self, _lock: &Lock, reg: &Registry) -> Result<(), StateError> {
        let mut reg = reg.clone();
        reg.version = FORMAT_VERSION;
        let data = serde_json::to_vec_pretty(&reg)
            .map_err(|e| StateError::Corrupt(self.registry_path(), e.to_string()))?;
        write_atomic(&self.registry_path(), &data)
    }
}

/// temp file in the same directory, 0600, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let werr = |e| StateError::Write(path.to_path_buf(), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tether-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(werr)?;
    tmp.write_all(data).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
