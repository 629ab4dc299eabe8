//! Drop-in enrollment: `enroll.toml` and `enroll.d/*.toml` (in `/etc/tether`, or
//! `$TETHER_HOME` when set) each describe one registration, which `tether enroll` and the
//! daemon converge idempotently. Made for deployment packages: the package ships the files
//! and a credential file; after a successful enrollment the credential is deleted, so the
//! host does not keep a secret it no longer needs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::Target;
use super::keys::KeyType;
use super::proxy::{self, ProxySetting};
use super::register::{
    self, state_err, Credentials, NewOutcome, RegisterNewOptions, RegisterOptions, TrustChoice,
    LOCK_WAIT,
};
use super::state::{self, Connection, Store};
use super::trust::TrustMode;
use crate::error::{Error, ErrorCode, Result};
use crate::wire::certs;

pub const STATE_FILE: &str = "enroll-state.json";
pub const DEFAULT_DIR: &str = "/etc/tether";

/// One drop-in file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollFile {
    /// `HOST[:PORT]` of the receiver (without a port it is discovered).
    pub server: String,
    pub site: String,
    /// `sha256:HEX` of the receiver's certificate or the site CA.
    #[serde(default)]
    pub trust_fingerprint: Option<String>,
    /// Or a PEM file with the site CA.
    #[serde(default)]
    pub root_ca: Option<PathBuf>,
    /// `new` (the site creates the host, with a scoped token or a user) or `existing`.
    pub mode: Mode,
    /// Host name for `existing` (default: this machine's host name).
    #[serde(default)]
    pub host_name: Option<String>,
    /// Agent labels for `new`; `cmk/hostname` defaults to this machine's host name.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub key_type: Option<String>,
    /// How this file's registration reaches the receiver: `direct`, `auto` or an
    /// `http://HOST:PORT` proxy (default: as `proxy` in tether.toml / `--proxy`).
    #[serde(default)]
    pub proxy: Option<String>,
    /// Delete the token or password file once enrolled (default true).
    #[serde(default = "yes")]
    pub remove_credential: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    New,
    Existing,
}

/// Where a drop-in stands, kept in `$TETHER_HOME/enroll-state.json` (no secrets in it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    /// enrolled, pending or failed.
    pub status: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    pub last_tried: i64,
}

/// What one `enroll` run did with one file.
#[derive(Debug, Clone)]
pub struct EnrollResult {
    pub file: PathBuf,
    pub state: EntryState,
    pub changed: bool,
    pub connection: Option<Connection>,
    pub error: Option<Error>,
    /// `Some(true)` deleted, `Some(false)` could not be deleted (see `note`).
    pub credential_removed: Option<bool>,
    pub note: Option<String>,
}

/// The directory holding `enroll.toml` and `enroll.d/`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("TETHER_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// `enroll.toml`, then `enroll.d/*.toml` in name order.
pub fn locate(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let main = dir.join("enroll.toml");
    if main.is_file() {
        files.push(main);
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("enroll.d")) {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

pub fn load_states(store: &Store) -> Result<BTreeMap<String, EntryState>> {
    let path = store.home.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::local_state(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::local_state(format!("{}: {e}", path.display()))),
    }
}

fn save_state(store: &Store, file: &Path, entry: &EntryState) -> Result<()> {
    let _lock = store.lock(LOCK_WAIT).map_err(state_err)?;
    let mut all = load_states(store)?;
    all.insert(file.display().to_string(), entry.clone());
    let data = serde_json::to_vec_pretty(&all).map_err(|e| Error::internal(e.to_string()))?;
    state::write_atomic(&store.home.join(STATE_FILE), &data).map_err(state_err)
}

/// This machine's host name, as Checkmk would name it (short, lower case).
pub fn system_host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let short = raw.trim().split('.').next()?.to_ascii_lowercase();
    (!short.is_empty()).then_some(short)
}

pub fn parse_file(path: &Path) -> Result<EnrollFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    EnrollFile::parse_str(&text).map_err(|e| Error::usage(format!("{}: {e}", path.display())))
}

fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!("cannot read the {what} file {}: {e}", path.display()))
            .hint("the file is deleted after a successful enrollment; a host that must enroll again needs a new one")
    })?;
    let s = text.lines().next().unwrap_or("").trim().to_string();
    if s.is_empty() {
        return Err(Error::usage(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(s)
}

impl EnrollFile {
    /// Parses the text of a drop-in file and checks what needs no file system.
    pub fn parse_str(text: &str) -> std::result::Result<EnrollFile, String> {
        let f: EnrollFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if f.trust_fingerprint.is_some() == f.root_ca.is_some() {
            return Err("give exactly one of trust_fingerprint, root_ca (the receiver is never trusted blindly)".into());
        }
        Ok(f)
    }

    fn trust(&self) -> Result<TrustMode> {
        if let Some(fp) = &self.trust_fingerprint {
            return Ok(TrustMode::Fingerprint(certs::parse_fingerprint(fp)?));
        }
        let path = self.root_ca.as_deref().unwrap_or(Path::new(""));
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read root_ca {}: {e}", path.display())))?;
        let roots = certs::certs_from_pem(&pem)
            .map_err(|e| Error::usage(format!("root_ca {}: {e}", path.display())))?;
        Ok(TrustMode::Roots(roots))
    }

    fn credentials(&self) -> Result<Credentials> {
        let token = match &self.token_file {
            Some(p) => Some(read_secret(p, "token")?),
            None => None,
        };
        let password = match (&self.password_file, &token) {
            (Some(p), None) => Some(read_secret(p, "password")?),
            _ => None,
        };
        if token.is_none() && (self.user.is_none() || password.is_none()) {
            return Err(Error::usage(
                "no credentials: set token_file, or user and password_file",
            ));
        }
        Ok(Credentials {
            user: self.user.clone(),
            password,
            token,
        })
    }

    fn key_type(&self) -> Result<KeyType> {
        match &self.key_type {
            None => Ok(KeyType::default()),
            Some(k) => KeyType::parse(k).ok_or_else(|| {
                Error::usage(format!(
                    "unknown key_type {k:?} (use ec, rsa2048 or rsa4096)"
                ))
            }),
        }
    }

    fn proxy(&self) -> Result<Option<ProxySetting>> {
        self.proxy
            .as_deref()
            .map(|p| ProxySetting::parse(p).map_err(|e| Error::usage(format!("proxy: {e}"))))
            .transpose()
    }

    fn credential_file(&self) -> Option<&Path> {
        self.token_file.as_deref().or(self.password_file.as_deref())
    }

    /// The registration this file already produced, if it is still stored and valid.
    fn existing(&self, reg: &state::Registry, prev: Option<&EntryState>) -> Option<Connection> {
        let (host, port) = super::client::split_host_port(&self.server).ok()?;
        reg.connections
            .iter()
            .filter(|c| c.server.eq_ignore_ascii_case(&host) && c.site == self.site)
            .filter(|c| port.is_none_or(|p| p == c.port))
            .filter(|c| register::cert_valid(c))
            .find(
                |c| match (self.mode, prev.and_then(|p| p.uuid.as_deref())) {
                    (_, Some(uuid)) => c.uuid == uuid,
                    (Mode::Existing, None) => Some(&c.host_name) == self.host_name().as_ref(),
                    (Mode::New, None) => Some(&c.host_name) == self.new_host_name().as_ref(),
                },
            )
            .cloned()
    }

    fn host_name(&self) -> Option<String> {
        self.host_name.clone().or_else(system_host_name)
    }

    /// The name a new host asks for: its `cmk/hostname` label, else this machine's name.
    fn new_host_name(&self) -> Option<String> {
        self.labels
            .get("cmk/hostname")
            .cloned()
            .or_else(system_host_name)
    }
}

/// Converges one file: enrolled (nothing to do, or registered now), pending, or failed.
pub fn enroll_file(store: &Store, path: &Path, wait: Option<Duration>) -> EnrollResult {
    let prev = load_states(store)
        .ok()
        .and_then(|s| s.get(&path.display().to_string()).cloned());
    let mut result = EnrollResult {
        file: path.to_path_buf(),
        state: EntryState::default(),
        changed: false,
        connection: None,
        error: None,
        credential_removed: None,
        note: None,
    };
    let outcome = run_file(store, path, prev.as_ref(), wait);
    let now = certs::now_unix();
    let parsed = parse_file(path).ok();
    match outcome {
        Ok((Some(c), changed)) => {
            result.state = EntryState {
                status: "enrolled".into(),
                uuid: Some(c.uuid.clone()),
                host_name: (!c.host_name.is_empty()).then(|| c.host_name.clone()),
                last_tried: now,
                ..EntryState::default()
            };
            result.changed = changed;
            result.connection = Some(c);
            if let Some(f) = parsed.as_ref().filter(|f| f.remove_credential) {
                if let Some(cred) = f.credential_file().filter(|p| p.exists()) {
                    match std::fs::remove_file(cred) {
                        Ok(()) => result.credential_removed = Some(true),
                        Err(e) => {
                            result.credential_removed = Some(false);
                            result.note = Some(format!(
                                "enrolled, but the credential file {} could not be deleted ({e}); delete it by hand",
                                cred.display()
                            ));
                        }
                    }
                }
            }
        }
        Ok((None, changed)) => {
            result.changed = changed;
            result.state = EntryState {
                status: "pending".into(),
                last_tried: now,
                ..EntryState::default()
            };
        }
        Err(e) => {
            result.state = EntryState {
                status: "failed".into(),
                error_code: Some(e.code().as_str().into()),
                error_message: Some(e.to_string()),
                last_tried: now,
                ..prev.clone().unwrap_or_default()
            };
            result.state.status = "failed".into();
            result.error = Some(e);
        }
    }
    if prev.as_ref() != Some(&result.state) || result.changed {
        if let Err(e) = save_state(store, path, &result.state) {
            tracing::warn!(
                "cannot record the enrollment state of {}: {e}",
                path.display()
            );
        }
    }
    result
}

/// `Ok((Some(connection), changed))` when enrolled, `Ok((None, changed))` when pending.
fn run_file(
    store: &Store,
    path: &Path,
    prev: Option<&EntryState>,
    wait: Option<Duration>,
) -> Result<(Option<Connection>, bool)> {
    let f = parse_file(path)?;
    let reg = store.load().map_err(state_err)?;
    if let Some(c) = f.existing(&reg, prev) {
        return Ok((Some(c), false));
    }
    let trust = TrustChoice::Given(f.trust()?);
    let key_type = f.key_type()?;
    let proxy = f.proxy()?;
    let creds = f.credentials()?;
    proxy::scoped(proxy, || {
        register_file(store, &f, trust, key_type, creds, wait)
    })
}

fn register_file(
    store: &Store,
    f: &EnrollFile,
    trust: TrustChoice,
    key_type: KeyType,
    creds: Credentials,
    wait: Option<Duration>,
) -> Result<(Option<Connection>, bool)> {
    let target = Target::resolve(&f.server, &f.site)?;
    match f.mode {
        Mode::Existing => {
            let host_name = f.host_name().ok_or_else(|| {
                Error::usage("host_name is not set and this machine's host name is unknown")
            })?;
            let out = register::register(
                store,
                RegisterOptions {
                    target,
                    host_name,
                    creds,
                    trust,
                    key_type,
                    force: false,
                    query_remote: false,
                },
            )?;
            Ok((Some(out.connection), true))
        }
        Mode::New => {
            let mut labels = f.labels.clone();
            if let Some(h) = f.new_host_name() {
                labels.entry("cmk/hostname".into()).or_insert(h);
            }
            let out = register::register_new(
                store,
                RegisterNewOptions {
                    target,
                    creds,
                    trust,
                    key_type,
                    labels,
                    wait,
                    poll_interval: Duration::from_secs(2),
                },
            )?;
            Ok(match out {
                NewOutcome::Registered { connection, .. } => (Some(connection), true),
                NewOutcome::Pending { resumed, .. } => (None, !resumed),
            })
        }
    }
}

/// Every drop-in of `dir`, in order. A file that fails does not stop the others.
pub fn enroll_all(store: &Store, dir: &Path, wait: Option<Duration>) -> Vec<EnrollResult> {
    locate(dir)
        .iter()
        .map(|p| enroll_file(store, p, wait))
        .collect()
}

/// The worst outcome decides the exit: the first failure, else success.
pub fn first_failure(results: &[EnrollResult]) -> Option<&Error> {
    results.iter().find_map(|r| r.error.as_ref())
}

/// Used by the daemon: retry failed or pending drop-ins with backoff until all are enrolled.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << attempt.min(7)).min(600);
    Duration::from_secs(secs)
}

/// No drop-in at all in `dir`: a clear error for `tether enroll`.
pub fn none_found(dir: &Path) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!(
            "no enrollment files: neither {} nor {}/*.toml exist",
            dir.join("enroll.toml").display(),
            dir.join("enroll.d").display()
        ),
    )
    .hint("write an enroll.toml (see README, \"Drop-in enrollment\"), or pass --dir")
}
