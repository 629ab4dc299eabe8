//! Request and response bodies of the agent-receiver REST API (spec §1).
//! Field names are the contract with Checkmk: never rename or remove one.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the site talks to the agent; decided by the site, never by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionMode {
    #[serde(rename = "pull-agent")]
    Pull,
    #[serde(rename = "push-agent")]
    Push,
}

impl ConnectionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionMode::Pull => "pull-agent",
            ConnectionMode::Push => "push-agent",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pull-agent" | "pull" => Some(ConnectionMode::Pull),
            "push-agent" | "push" => Some(ConnectionMode::Push),
            _ => None,
        }
    }
}

impl std::fmt::Display for ConnectionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `register_existing` and `register_existing_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterExistingRequest {
    pub uuid: String,
    pub csr: String,
    pub host_name: String,
}

/// **ext** flags a tether-receiver adds to registration responses; Checkmk omits them
/// and Checkmk's controller ignores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverExtensions {
    /// The site's fetcher accepts compression byte `02` (zstd) on pulls.
    #[serde(default)]
    pub fetcher_zstd: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterExistingResponse {
    pub root_cert: String,
    pub agent_cert: String,
    pub connection_mode: ConnectionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tether: Option<ReceiverExtensions>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterNewRequest {
    pub uuid: String,
    pub csr: String,
    #[serde(default)]
    pub agent_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterNewResponse {
    pub root_cert: String,
}

/// Body of `register_new_ongoing/{uuid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum RegisterNewOngoingResponse {
    InProgress,
    Declined {
        reason: String,
    },
    Success {
        agent_cert: String,
        connection_mode: ConnectionMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tether: Option<ReceiverExtensions>,
    },
}

/// Body of `registration_status_v2/{uuid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum RegistrationStatusV2Response {
    NotRegistered,
    Registered {
        hostname: String,
        connection_mode: ConnectionMode,
    },
}

/// Body of the older `registration_status/{uuid}` (receivers without `registration_status_v2`):
/// `hostname` and `type` are set once the connection is linked to a host; a UUID the site
/// does not link is a 404 with a detail of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationStatusV1Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// State of a new-host registration still in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<ConnectionMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewCertificateRequest {
    pub csr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewCertificateResponse {
    pub agent_cert: String,
}

/// Error body: `{"detail": "..."}`; 422 may carry a list, so keep it as a JSON value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub detail: serde_json::Value,
}

impl ErrorBody {
    pub fn new(detail: impl Into<String>) -> Self {
        ErrorBody {
            detail: serde_json::Value::String(detail.into()),
        }
    }

    /// The detail as one line of text, whatever shape it came in.
    pub fn detail_text(&self) -> String {
        match &self.detail {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// Multipart field and file name of `agent_data` pushes.
pub const AGENT_DATA_FIELD: &str = "monitoring_data";
pub const AGENT_DATA_FILENAME: &str = "agent_data";
/// Header naming the compression of an `agent_data` push.
pub const COMPRESSION_HEADER: &str = "compression";
/// Authorization scheme of one-time registration tokens.
pub const TOKEN_SCHEME: &str = "CMK-TOKEN";
