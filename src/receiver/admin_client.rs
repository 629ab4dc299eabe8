//! A client of the admin API (`/SITE/tether-admin/v1/`), for `tether-receiver pending
//! --server`: an approver decides from their own machine, with exactly the rights the API
//! grants their site user. Trust as the agent's: a pinned fingerprint or a CA file.
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::approvals::{ApproveOptions, PendingInfo};
use crate::error::{Error, ErrorCode, Result};
use crate::wire::trust::{Observed, TrustMode, Verifier};

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct AdminClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
    observed: Arc<Mutex<Observed>>,
}

#[derive(Debug, Deserialize)]
struct PendingBody {
    pending: Vec<PendingInfo>,
}

/// The answer to approve and decline.
#[derive(Debug, Deserialize)]
pub struct Decision {
    pub uuid: String,
    pub decision: String,
    pub host: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    detail: String,
    code: Option<ErrorCode>,
}

/// `https://HOST[:PORT]/SITE` (port 8000 if omitted) → the admin API's base URL.
fn api_base(url: &str) -> Result<String> {
    let bad = || {
        Error::usage(format!(
            "--server {url}: expected the site's URL, https://HOST[:PORT]/SITE"
        ))
    };
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
    let site = path.trim_end_matches('/');
    if authority.is_empty() || site.is_empty() || site.contains('/') {
        return Err(bad());
    }
    crate::wire::validate::validate_site_name(site)?;
    // Without a port: the receiver's default, not https' 443.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let authority = if has_port && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:8000")
    };
    Ok(format!("https://{authority}/{site}/tether-admin/v1"))
}

impl AdminClient {
    pub fn new(url: &str, user: &str, password: &str, trust: TrustMode) -> Result<AdminClient> {
        let base = api_base(url)?;
        let (verifier, observed) = Verifier::new(trust);
        let config = rustls::ClientConfig::builder_with_provider(crate::wire::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(config))
            .timeout(TIMEOUT)
            .redirects(0)
            .build();
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        Ok(AdminClient {
            base,
            authorization,
            agent,
            observed,
        })
    }

    /// The held registrations this user may decide on.
    pub fn pending(&self) -> Result<Vec<PendingInfo>> {
        let b: PendingBody = self.call("GET", "pending", None)?;
        Ok(b.pending)
    }

    pub fn approve(&self, uuid: &str, opts: &ApproveOptions) -> Result<Decision> {
        let mut body = serde_json::Map::new();
        for (k, v) in [
            ("host", &opts.host),
            ("folder", &opts.folder),
            ("mode", &opts.mode),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), v.clone().into());
            }
        }
        self.call(
            "POST",
            &format!("pending/{}/approve", path_segment(uuid)?),
            Some(serde_json::Value::Object(body)),
        )
    }

    pub fn decline(&self, uuid: &str, reason: &str) -> Result<Decision> {
        self.call(
            "POST",
            &format!("pending/{}/decline", path_segment(uuid)?),
            Some(serde_json::json!({ "reason": reason })),
        )
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let url = format!("{}/{path}", self.base);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.authorization);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(resp) => resp.into_json().map_err(|e| {
                Error::new(
                    ErrorCode::Protocol,
                    format!("{url}: the answer is not the expected JSON: {e}"),
                )
            }),
            Err(ureq::Error::Status(status, resp)) => {
                let mut raw = Vec::new();
                let _ = resp.into_reader().take(64 << 10).read_to_end(&mut raw);
                let (code, detail) = match serde_json::from_slice::<ErrorBody>(&raw) {
                    Ok(b) => (
                        b.code
                            .unwrap_or_else(|| ErrorCode::from_http_status(status)),
                        b.detail,
                    ),
                    Err(_) => (
                        ErrorCode::from_http_status(status),
                        format!(
                            "{url} answered {status}: {}",
                            String::from_utf8_lossy(&raw).trim()
                        ),
                    ),
                };
                let err = Error::new(code, detail).http_status(status);
                Err(if status == 401 {
                    err.hint("check --user and the password (--password-file or TETHER_PASSWORD)")
                } else {
                    err
                })
            }
            Err(ureq::Error::Transport(t)) => {
                let observed = self.observed.lock().ok();
                if let Some(o) = observed.as_ref().filter(|o| o.failure.is_some()) {
                    return Err(Error::new(
                        ErrorCode::Trust,
                        format!(
                            "cannot trust {}: {}",
                            self.base,
                            o.failure.clone().unwrap_or_default()
                        ),
                    )
                    .fingerprints(o.chain_fingerprints.clone())
                    .hint("compare with `tether-receiver fingerprint` on the site, then pin one with --trust-fingerprint or give the site CA with --root-ca"));
                }
                Err(Error::new(
                    ErrorCode::Network,
                    format!("cannot reach {}: {t}", self.base),
                ))
            }
        }
    }
}

/// A UUID goes into the URL path as is; anything else is refused before sending.
fn path_segment(uuid: &str) -> Result<&str> {
    if !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Ok(uuid)
    } else {
        Err(Error::usage(format!("{uuid:?} is not a UUID")))
    }
}

#[cfg(test)]
mod tests {
    use super::api_base;

    #[test]
    fn site_urls() {
        let b = |u: &str| api_base(u).ok();
        assert_eq!(
            b("https://m.example:8443/prod/").as_deref(),
            Some("https://m.example:8443/prod/tether-admin/v1")
        );
        assert_eq!(
            b("https://m.example/prod").as_deref(),
            Some("https://m.example:8000/prod/tether-admin/v1")
        );
        assert_eq!(
            b("https://[::1]/prod").as_deref(),
            Some("https://[::1]:8000/prod/tether-admin/v1")
        );
        assert_eq!(
            b("https://[::1]:9/prod").as_deref(),
            Some("https://[::1]:9/prod/tether-admin/v1")
        );
        for bad in [
            "http://m/prod",
            "https://m",
            "https://m/",
            "https://m/a/b",
            "m:8000/prod",
        ] {
            assert!(b(bad).is_none(), "{bad}");
        }
    }
}
