//! Error rendering for both CLIs: exit codes (documented in README.md) and the JSON error
//! document. The error itself belongs to the library (`crate::error`).
use schemars::JsonSchema;
use serde::Serialize;

pub use crate::error::{Error, ErrorCode, ErrorInfo, Result};

impl ErrorCode {
    /// The process exit code for this error code (README's table).
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
            ErrorCode::Unsupported => 15,
            ErrorCode::NotRegistered => 16,
            ErrorCode::UnknownSite => 17,
            ErrorCode::Stale => 18,
        }
    }
}

/// The whole JSON document of a failed command: `{"ok": false, "error": {...}}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorDocument {
    pub ok: bool,
    pub error: ErrorInfo,
}

impl Error {
    /// The `{"ok": false, "error": ...}` document printed by `--json`.
    pub fn document(&self) -> ErrorDocument {
        ErrorDocument {
            ok: false,
            error: self.info().clone(),
        }
    }
}

/// clap's whole complaint (e.g. which required arguments are missing), without the
/// `error: ` prefix and the usage/help footer, for the JSON error document.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let body: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let msg = body.join("\n");
    let msg = msg
        .strip_prefix("error: ")
        .unwrap_or(&msg)
        .trim()
        .to_string();
    if msg.is_empty() {
        "invalid arguments".into()
    } else {
        msg
    }
}
