//! JSON (and text) shapes of the agent CLI's results. Schemas in `schemas/` come from these.
use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::output::Render;
use crate::controller::state::{Connection, Pending};
use crate::error::PresentedCertificate;
use crate::wire::api::ConnectionMode;
use crate::wire::certs;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CertificateView {
    pub serial: String,
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    pub fingerprint: String,
    /// Within its validity period now.
    pub valid: bool,
    pub expires_in_days: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionView {
    pub uuid: String,
    /// `host:port` of the receiver; empty for connections imported without one.
    pub server: String,
    pub site: String,
    pub host_name: String,
    pub connection_mode: ConnectionMode,
    pub certificate: Option<CertificateView>,
    pub root_cert_fingerprint: Option<String>,
    /// How the receiver was trusted at registration: fingerprint, root_ca, insecure, imported.
    pub trust: String,
    pub key_type: String,
    pub registered_at: String,
    /// **ext**: pulls for this site may use zstd.
    pub fetcher_zstd: bool,
}

impl ConnectionView {
    pub fn of(c: &Connection) -> ConnectionView {
        let now = certs::now_unix();
        let certificate = c.cert_info().map(|i| CertificateView {
            serial: i.serial_hex.clone(),
            issuer: i.issuer_cn.clone(),
            not_before: certs::rfc3339(i.not_before),
            not_after: certs::rfc3339(i.not_after),
            fingerprint: i.fingerprint.clone(),
            valid: i.valid_at(now),
            expires_in_days: i.remaining_secs(now).div_euclid(86_400),
        });
        ConnectionView {
            uuid: c.uuid.clone(),
            server: if c.server.is_empty() {
                String::new()
            } else {
                c.server_address()
            },
            site: c.site.clone(),
            host_name: c.host_name.clone(),
            connection_mode: c.mode,
            certificate,
            root_cert_fingerprint: certs::cert_from_pem(&c.root_cert)
                .ok()
                .map(|d| certs::fingerprint_of(&d)),
            trust: c.trust.clone(),
            key_type: c.key_type.as_str().to_string(),
            registered_at: certs::rfc3339(c.registered_at),
            fetcher_zstd: c.fetcher_zstd,
        }
    }

    pub fn text(&self) -> String {
        let cert = self
            .certificate
            .as_ref()
            .map(|c| {
                format!(
                    "{} (expires {}, in {} days)",
                    if c.valid { "valid" } else { "INVALID" },
                    c.not_after,
                    c.expires_in_days
                )
            })
            .unwrap_or_else(|| "unreadable".into());
        format!(
            "{} {}\n  site:        {}/{}\n  mode:        {}\n  certificate: {}\n  trust:       {}  key: {}",
            self.host_name, self.uuid, self.server, self.site, self.connection_mode, cert, self.trust, self.key_type
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RegisterOutput {
    pub ok: bool,
    pub changed: bool,
    /// registered, unchanged or replaced.
    pub action: String,
    /// True when the receiver was trusted blindly (--trust-cert).
    pub insecure: bool,
    pub connection: ConnectionView,
    /// UUIDs of local connections this registration replaced.
    pub replaced: Vec<String>,
    /// Why this host was registered again although it had a registration: forced,
    /// certificate_expired, not_registered_on_site (unregistered, or another controller
    /// registered this host name: two machines may be fighting over it),
    /// site_links_other_host or connection_mode_changed. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The same reason in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
    /// Things the operator should know that did not stop the command.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

impl Render for RegisterOutput {
    fn text(&self) -> String {
        let head = match self.action.as_str() {
            "unchanged" => "Already registered; nothing changed.".to_string(),
            "replaced" => "Registered (replacing the previous registration).".to_string(),
            _ => match &self.reason_text {
                Some(why) => format!("Registered again: {why}."),
                None => "Registered.".to_string(),
            },
        };
        let mut warn = String::new();
        if self.insecure {
            warn.push_str(
                "\nWARNING: the receiver was trusted without verification (--trust-cert).",
            );
        }
        for w in &self.warnings {
            warn.push_str(&format!("\nWARNING: {w}"));
        }
        format!("{head}{warn}\n{}", self.connection.text())
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RegisterNewOutput {
    pub ok: bool,
    pub changed: bool,
    /// success, or pending (only with --no-wait).
    pub status: String,
    pub uuid: String,
    /// Continued a registration started by an earlier run.
    pub resumed: bool,
    pub connection: Option<ConnectionView>,
}

impl Render for RegisterNewOutput {
    fn text(&self) -> String {
        match &self.connection {
            Some(c) => format!("Registered as a new host.\n{}", c.text()),
            None => format!(
                "Registration {} is pending the site's decision; run the command again to resume.",
                self.uuid
            ),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProxyRegisterOutput {
    pub ok: bool,
    pub changed: bool,
    /// File the bundle was written to (mode 0600).
    pub output: String,
    pub connection: ConnectionView,
}

impl Render for ProxyRegisterOutput {
    fn text(&self) -> String {
        format!(
            "Connection bundle written to {} (it holds a private key: keep it secret).\n{}",
            self.output,
            self.connection.text()
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportOutput {
    pub ok: bool,
    pub changed: bool,
    pub imported: Vec<ConnectionView>,
    /// UUIDs already present with identical content.
    pub unchanged: Vec<String>,
}

impl Render for ImportOutput {
    fn text(&self) -> String {
        let mut s = format!(
            "Imported {} connection(s), {} unchanged.",
            self.imported.len(),
            self.unchanged.len()
        );
        for c in &self.imported {
            s.push('\n');
            s.push_str(&c.text());
        }
        s
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoteError {
    pub code: crate::cli::error::ErrorCode,
    pub message: String,
    pub http_status: Option<u16>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoteView {
    /// registered, not_registered, rejected (the receiver refused this connection's
    /// certificate, e.g. revoked: register again), unknown (the receiver offers no status
    /// endpoint tether knows; nothing can be concluded), error (unreachable, untrusted) or
    /// not_queried.
    pub status: String,
    pub hostname: Option<String>,
    pub connection_mode: Option<ConnectionMode>,
    pub error: Option<RemoteError>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConnectionStatus {
    #[serde(flatten)]
    pub connection: ConnectionView,
    pub remote: RemoteView,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingView {
    pub uuid: String,
    pub server: String,
    pub site: String,
    pub started_at: String,
}

impl PendingView {
    pub fn of(p: &Pending) -> PendingView {
        PendingView {
            uuid: p.uuid.clone(),
            server: crate::controller::state::format_server(&p.server, p.port),
            site: p.site.clone(),
            started_at: certs::rfc3339(p.started_at),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SourceHealth {
    /// socket, command or file.
    pub kind: String,
    pub location: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Last result the daemon recorded, if it runs.
    pub last_daemon_error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusOutput {
    pub ok: bool,
    pub home: String,
    pub connections: Vec<ConnectionStatus>,
    pub pending: Vec<PendingView>,
    pub agent_source: SourceHealth,
    /// Drop-in enrollment files and where each stands.
    pub enrollments: Vec<EnrollState>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnrollState {
    pub file: String,
    /// enrolled, pending, failed or not_tried.
    pub status: String,
    /// The connection it enrolled.
    pub uuid: Option<String>,
    pub host_name: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_tried: Option<String>,
}

impl Render for StatusOutput {
    fn text(&self) -> String {
        let mut s = String::new();
        if self.connections.is_empty() {
            s.push_str("No connections.\n");
        }
        for c in &self.connections {
            s.push_str(&c.connection.text());
            let remote = match (&c.remote.status[..], &c.remote.error) {
                (_, Some(e)) => format!("error [{}]: {}", e.code.as_str(), e.message),
                (st, None) => st.replace('_', " "),
            };
            s.push_str(&format!("\n  remote:      {remote}\n"));
        }
        for p in &self.pending {
            s.push_str(&format!(
                "pending new-host registration {} with {}/{} since {}\n",
                p.uuid, p.server, p.site, p.started_at
            ));
        }
        for e in &self.enrollments {
            s.push_str(&format!(
                "enrollment {}: {}",
                e.file,
                e.status.replace('_', " ")
            ));
            if let Some(m) = &e.error_message {
                s.push_str(&format!(" ({m})"));
            }
            if let Some(t) = &e.last_tried {
                s.push_str(&format!(", last tried {t}"));
            }
            s.push('\n');
        }
        let src = &self.agent_source;
        s.push_str(&format!(
            "agent source: {} {} — {}",
            src.kind,
            src.location,
            if src.ok {
                "ok".to_string()
            } else {
                src.error.clone().unwrap_or_default()
            }
        ));
        if let Some(e) = &src.last_daemon_error {
            s.push_str(&format!("\n  daemon reported: {e}"));
        }
        s
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    pub ok: bool,
    pub changed: bool,
    pub deleted: Vec<String>,
    /// Connections whose registration the site ended (or had already ended).
    pub unregistered_on_site: Vec<String>,
    /// Sites that did not end a registration (a Checkmk receiver, unreachable): the host
    /// stays registered there until an administrator removes it or it expires.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

impl Render for DeleteOutput {
    fn text(&self) -> String {
        if self.deleted.is_empty() {
            return "Nothing to delete.".into();
        }
        let mut s = format!("Deleted {}.", self.deleted.join(", "));
        for w in &self.warnings {
            s.push_str(&format!("\nWARNING: {w}"));
        }
        s
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RenewOutput {
    pub ok: bool,
    pub changed: bool,
    pub renewed: Vec<ConnectionView>,
}

impl Render for RenewOutput {
    fn text(&self) -> String {
        self.renewed
            .iter()
            .map(|c| format!("Renewed {}", c.text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DumpOutput {
    pub ok: bool,
    pub bytes: usize,
    /// Agent output, lossily decoded as UTF-8.
    pub output: String,
}

impl Render for DumpOutput {
    fn text(&self) -> String {
        self.output.trim_end_matches('\n').to_string()
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PushResult {
    pub uuid: String,
    pub ok: bool,
    pub error: Option<RemoteError>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PushOutput {
    pub ok: bool,
    pub changed: bool,
    pub bytes: usize,
    pub pushed: Vec<PushResult>,
}

impl Render for PushOutput {
    fn text(&self) -> String {
        if self.pushed.is_empty() {
            return "No push connections.".into();
        }
        self.pushed
            .iter()
            .map(|p| match &p.error {
                None => format!("pushed {} bytes for {}", self.bytes, p.uuid),
                Some(e) => format!("push for {} failed: {}", p.uuid, e.message),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProbeOutput {
    pub ok: bool,
    /// Always false: a probe changes nothing.
    pub changed: bool,
    pub server: String,
    pub site: String,
    /// fingerprint, root_ca or insecure.
    pub trust: String,
    /// SHA-256 fingerprints of the chain the receiver presented, leaf first.
    pub server_fingerprints: Vec<String>,
    /// The same chain, each certificate labelled (server certificate, site CA).
    pub presented_certificates: Vec<PresentedCertificate>,
}

impl Render for ProbeOutput {
    fn text(&self) -> String {
        let mut s = format!(
            "Receiver {} (site {}) is reachable and trusted ({}).",
            self.server, self.site, self.trust
        );
        for c in &self.presented_certificates {
            s.push_str(&format!(
                "\n  {:<19} {}",
                format!("{}:", c.role.label()),
                c.fingerprint
            ));
        }
        s
    }
}

/// One drop-in enrollment file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnrollView {
    pub file: String,
    /// enrolled, pending or failed.
    pub status: String,
    pub changed: bool,
    pub uuid: Option<String>,
    pub host_name: Option<String>,
    pub connection: Option<ConnectionView>,
    /// true: the token or password file was deleted; false: it could not be (see `note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_removed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub error: Option<RemoteError>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnrollOutput {
    /// False when any file failed (the exit code is the first failure's).
    pub ok: bool,
    pub changed: bool,
    pub enrollments: Vec<EnrollView>,
}

impl EnrollOutput {
    pub fn of(results: &[crate::controller::enroll::EnrollResult]) -> EnrollOutput {
        let enrollments: Vec<EnrollView> = results
            .iter()
            .map(|r| EnrollView {
                file: r.file.display().to_string(),
                status: r.state.status.clone(),
                changed: r.changed,
                uuid: r.state.uuid.clone(),
                host_name: r.state.host_name.clone(),
                connection: r.connection.as_ref().map(ConnectionView::of),
                credential_removed: r.credential_removed,
                note: r.note.clone(),
                error: r.error.as_ref().map(super::commands::remote_error),
            })
            .collect();
        EnrollOutput {
            ok: results.iter().all(|r| r.error.is_none()),
            changed: results.iter().any(|r| r.changed),
            enrollments,
        }
    }
}

impl Render for EnrollOutput {
    fn text(&self) -> String {
        self.enrollments
            .iter()
            .map(|e| {
                let what = match (e.status.as_str(), &e.error) {
                    (_, Some(err)) => format!("failed [{}]: {}", err.code.as_str(), err.message),
                    ("enrolled", None) if e.changed => format!(
                        "enrolled now as {}",
                        e.host_name.as_deref().unwrap_or("(host)")
                    ),
                    ("enrolled", None) => format!(
                        "enrolled as {} (nothing to do)",
                        e.host_name.as_deref().unwrap_or("(host)")
                    ),
                    (st, None) => format!("{st}: waiting for the site's decision"),
                };
                let mut line = format!("{}: {what}", e.file);
                if e.credential_removed == Some(true) {
                    line.push_str("; credential file deleted");
                }
                if let Some(n) = &e.note {
                    line.push_str(&format!("\n  note: {n}"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
