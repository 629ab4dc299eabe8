//! Stable machine error codes and the exit codes they map to (documented in README.md).
use schemars::JsonSchema;
use serde::Serialize;

/// `error.code` in JSON output. Stable: scripts and the Ansible/Salt modules match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
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
    /// Anything else; a bug if you see it (exit 1).
    Internal,
}

impl ErrorCode {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Internal => 1,
            ErrorCode::Usage => 2,
            ErrorCode::AuthFailed => 3,
            ErrorCode::PermissionDenied => 4,
            ErrorCode::HostNotFound => 5,
            ErrorCode::WrongSite => 6,
            ErrorCode::Conflict => 7,
            ErrorCode::Trust => 8,
            ErrorCode::Network => 9,
            ErrorCode::Pending => 10,
            ErrorCode::Declined => 11,
            ErrorCode::LocalState => 12,
            ErrorCode::Protocol => 13,
            ErrorCode::NotFound => 14,
        }
    }

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
}

/// The whole JSON document of a failed command: `{"ok": false, "error": {...}}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorDocument {
    pub ok: bool,
    pub error: ErrorInfo,
}

/// A failed command: carries everything the JSON and text renderers need.
#[derive(Debug, Clone)]
pub struct CliError(pub Box<ErrorInfo>);

impl CliError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CliError(Box::new(ErrorInfo {
            code,
            message: message.into(),
            http_status: None,
            hint: None,
            server_fingerprints: Vec::new(),
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
    pub fn fingerprints(mut self, fps: Vec<String>) -> Self {
        self.0.server_fingerprints = fps;
        self
    }
    pub fn code(&self) -> ErrorCode {
        self.0.code
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
    pub fn document(&self) -> ErrorDocument {
        ErrorDocument {
            ok: false,
            error: (*self.0).clone(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for CliError {}

impl From<crate::wire::WireError> for CliError {
    fn from(e: crate::wire::WireError) -> Self {
        CliError::usage(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;
