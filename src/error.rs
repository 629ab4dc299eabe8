//! The library's error: a stable machine code, a message, and what the operator can do about it.
//! The command-line layer maps codes to exit codes and renders errors (`cli::error`).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `error.code` in JSON output. Stable: scripts and the Ansible/Salt modules match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Bad command line or bad input value (exit 2).
    Usage,
    /// The server rejected the credentials or token (exit 3).
    AuthFailed,
    /// Authenticated, but the user may not do this (exit 4).
    PermissionDenied,
    /// The host does not exist on the site (exit 5).
    HostNotFound,
    /// The host is monitored by another site, or is a cluster (exit 6).
    WrongSite,
    /// Identity lock, or an existing registration that needs --force (exit 7).
    Conflict,
    /// No trust option given, or the server's certificate does not match it (exit 8).
    Trust,
    /// Server unreachable or timed out (exit 9).
    Network,
    /// A new-host registration awaits the site's decision (exit 10).
    Pending,
    /// The site declined the registration (exit 11).
    Declined,
    /// Local state missing, corrupt, locked or not writable (exit 12).
    LocalState,
    /// The server answered with something unexpected (exit 13).
    Protocol,
    /// A named object does not exist locally (exit 14).
    NotFound,
    /// The receiver does not offer this (Checkmk Raw edition: no new-host registration;
    /// older Checkmk: no token endpoint) (exit 15).
    Unsupported,
    /// No site of that name at this address (check --site) (exit 17).
    UnknownSite,
    /// The site no longer links this connection: it was unregistered or another controller
    /// took over the host name; register again (exit 16).
    NotRegistered,
    /// The latest agent output of a host is older than 1.5 of its intervals (exit 18).
    Stale,
    /// Anything else; a bug if you see it (exit 1).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Usage => "usage",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::HostNotFound => "host_not_found",
            ErrorCode::WrongSite => "wrong_site",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Trust => "trust",
            ErrorCode::Network => "network",
            ErrorCode::Pending => "pending",
            ErrorCode::Declined => "declined",
            ErrorCode::LocalState => "local_state",
            ErrorCode::Protocol => "protocol",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnknownSite => "unknown_site",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::Stale => "stale",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code a receiver's HTTP refusal maps to.
    pub fn from_http_status(status: u16) -> ErrorCode {
        match status {
            400 | 413 | 422 => ErrorCode::Usage,
            401 => ErrorCode::AuthFailed,
            403 => ErrorCode::PermissionDenied,
            404 => ErrorCode::HostNotFound,
            405 => ErrorCode::WrongSite,
            409 => ErrorCode::Conflict,
            429 => ErrorCode::AuthFailed,
            501 => ErrorCode::Unsupported,
            _ => ErrorCode::Protocol,
        }
    }
}

/// The `error` object of a failed command's JSON document.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
    /// HTTP status, where the server answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// On trust failures: SHA-256 fingerprints of the certificates the server presented,
    /// leaf first, so an operator can verify one and pin it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub server_fingerprints: Vec<String>,
    /// The same certificates with what each one is: the server certificate first, the site
    /// CA last. Pinning the site CA survives a new server certificate.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub presented_certificates: Vec<PresentedCertificate>,
    /// The receiver's own `detail` text, so callers that know the route can refine the code.
    #[serde(skip)]
    #[schemars(skip)]
    pub server_detail: Option<String>,
}

/// One certificate of the chain a receiver presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PresentedCertificate {
    pub role: CertificateRole,
    /// `sha256:HEX`, as `--trust-fingerprint` takes it.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateRole {
    /// The receiver's own TLS certificate (first in the chain).
    ServerCertificate,
    /// A CA between the server certificate and the site CA.
    IntermediateCa,
    /// The CA at the end of the chain: the site CA, which agents store after registering.
    SiteCa,
}

impl CertificateRole {
    /// For people: "server certificate", "site CA".
    pub fn label(self) -> &'static str {
        match self {
            CertificateRole::ServerCertificate => "server certificate",
            CertificateRole::IntermediateCa => "intermediate CA",
            CertificateRole::SiteCa => "site CA",
        }
    }
}

/// Labels a chain as servers present it: leaf first, the CA they chain to last.
pub fn label_chain(fingerprints: &[String]) -> Vec<PresentedCertificate> {
    let last = fingerprints.len().saturating_sub(1);
    fingerprints
        .iter()
        .enumerate()
        .map(|(i, fp)| PresentedCertificate {
            role: match i {
                0 => CertificateRole::ServerCertificate,
                i if i == last => CertificateRole::SiteCa,
                _ => CertificateRole::IntermediateCa,
            },
            fingerprint: fp.clone(),
        })
        .collect()
}

/// A failed command: carries everything the JSON and text renderers need.
#[derive(Debug, Clone)]
pub struct Error(pub Box<ErrorInfo>);

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error(Box::new(ErrorInfo {
            code,
            message: message.into(),
            http_status: None,
            hint: None,
            server_fingerprints: Vec::new(),
            presented_certificates: Vec::new(),
            server_detail: None,
        }))
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }
    pub fn http_status(mut self, status: u16) -> Self {
        self.0.http_status = Some(status);
        self
    }
    /// The chain the server presented (leaf first), kept as is and labelled.
    pub fn fingerprints(mut self, fps: Vec<String>) -> Self {
        self.0.presented_certificates = label_chain(&fps);
        self.0.server_fingerprints = fps;
        self
    }
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
    pub fn info(&self) -> &ErrorInfo {
        &self.0
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Usage, message)
    }
    pub fn local_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LocalState, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::wire::WireError> for Error {
    fn from(e: crate::wire::WireError) -> Self {
        Error::usage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
