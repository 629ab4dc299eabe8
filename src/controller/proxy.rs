//! Which HTTP proxy, if any, carries the agent's calls to a receiver. Direct by default, as
//! Checkmk's controller is without `--detect-proxy`: a host's HTTPS_PROXY is often meant for
//! the internet, not for the monitoring site. `auto` follows HTTPS_PROXY / NO_PROXY; an
//! explicit `http://HOST:PORT` carries every call.
//!
//! The choice is made once per process (flag, then tether.toml) and applies to every client
//! built afterwards, including the ones made for stored connections; an enrollment file may
//! override it for its own registration (`scoped`).
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::RwLock;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Connect to the receiver directly (the default).
    #[default]
    Direct,
    /// HTTPS_PROXY / https_proxy, except for hosts in NO_PROXY / no_proxy.
    Auto,
    /// This proxy for every receiver.
    Url(String),
}

impl ProxySetting {
    /// `auto`, `direct` (or `none`), or an `http://[USER:PASSWORD@]HOST[:PORT]` URL.
    pub fn parse(s: &str) -> std::result::Result<ProxySetting, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ProxySetting::Auto),
            "direct" | "none" | "" => Ok(ProxySetting::Direct),
            _ => {
                check_url(s)?;
                Ok(ProxySetting::Url(s.to_string()))
            }
        }
    }

    /// Whether the setting carries credentials (they must not come from the command line).
    pub fn has_credentials(&self) -> bool {
        matches!(self, ProxySetting::Url(u) if userinfo(u).is_some())
    }

    /// The proxy URL for a request to `scheme://host`, or `None` to connect directly.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Result<Option<String>> {
        match self {
            ProxySetting::Direct => Ok(None),
            ProxySetting::Url(u) => Ok(Some(u.clone())),
            ProxySetting::Auto => {
                let names: &[&str] = if scheme == "http" {
                    &["http_proxy", "HTTP_PROXY"]
                } else {
                    &["https_proxy", "HTTPS_PROXY"]
                };
                let Some((name, url)) = names.iter().find_map(|n| env(n).map(|v| (*n, v))) else {
                    return Ok(None);
                };
                let no_proxy = env("no_proxy")
                    .or_else(|| env("NO_PROXY"))
                    .unwrap_or_default();
                if bypasses(&no_proxy, host) {
                    return Ok(None);
                }
                check_url(&url)
                    .map_err(|e| Error::usage(format!("{name} (used by --proxy auto): {e}")))?;
                Ok(Some(url))
            }
        }
    }

    /// For messages: the URL without credentials.
    pub fn describe(&self) -> String {
        match self {
            ProxySetting::Direct => "direct".into(),
            ProxySetting::Auto => "auto".into(),
            ProxySetting::Url(u) => redact(u),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(u, _)| u)
}

/// `url` with any `user:password@` replaced, safe for logs and error messages.
pub fn redact(url: &str) -> String {
    match userinfo(url) {
        Some(u) => url.replacen(&format!("{u}@"), "***@", 1),
        None => url.to_string(),
    }
}

/// Only plain-HTTP proxies (CONNECT for https) are supported; the client cannot parse an
/// IPv6 literal as proxy address, so that is refused up front with a clear message.
fn check_url(url: &str) -> std::result::Result<(), String> {
    let shown = redact(url);
    if let Some((scheme, _)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "proxy {shown}: only http:// proxies are supported (the receiver connection is tunnelled with CONNECT)"
            ));
        }
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.starts_with('[') {
        return Err(format!(
            "proxy {shown}: IPv6 addresses are not supported as proxy address; use a host name"
        ));
    }
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("proxy {shown}: expected http://HOST[:PORT]"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("proxy {shown}: invalid port {p:?}"));
        }
    }
    ureq::Proxy::new(url).map_err(|e| format!("proxy {shown}: {e}"))?;
    Ok(())
}

/// NO_PROXY as curl reads it: comma-separated host names (a name also covers its
/// subdomains; a leading dot is optional), IP addresses, CIDR ranges, or `*` for all.
/// Ports in entries are ignored.
pub fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.to_ascii_lowercase();
            if let Some(ip) = ip {
                if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                    return net.contains(&ip);
                }
                let bare = entry.trim_start_matches('[');
                let bare = bare.split(']').next().unwrap_or(bare);
                if let Ok(e) = bare.parse::<IpAddr>() {
                    return e == ip;
                }
                // `127.0.0.1:8000`: an IPv4 address with a port.
                return entry
                    .rsplit_once(':')
                    .and_then(|(a, _)| a.parse::<IpAddr>().ok())
                    == Some(ip);
            }
            let name = entry.split(':').next().unwrap_or(&entry);
            let name = name.trim_start_matches("*.").trim_start_matches('.');
            !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
        })
}

static DEFAULT: RwLock<ProxySetting> = RwLock::new(ProxySetting::Direct);

thread_local! {
    static SCOPED: RefCell<Option<ProxySetting>> = const { RefCell::new(None) };
}

/// Sets the process-wide choice (the CLI at start, the daemon at start and on reload).
pub fn set_default(p: ProxySetting) {
    if let Ok(mut d) = DEFAULT.write() {
        *d = p;
    }
}

/// The setting that applies to a client built now on this thread.
pub fn current() -> ProxySetting {
    SCOPED
        .with(|s| s.borrow().clone())
        .unwrap_or_else(|| DEFAULT.read().map(|d| d.clone()).unwrap_or_default())
}

/// Runs `f` with `p` (when given) instead of the process-wide setting on this thread.
pub fn scoped<T>(p: Option<ProxySetting>, f: impl FnOnce() -> T) -> T {
    let Some(p) = p else { return f() };
    let prev = SCOPED.with(|s| s.borrow_mut().replace(p));
    struct Restore(Option<ProxySetting>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SCOPED.with(|s| *s.borrow_mut() = prev);
        }
    }
    let _restore = Restore(prev);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(ProxySetting::parse("auto"), Ok(ProxySetting::Auto));
        assert_eq!(ProxySetting::parse("DIRECT"), Ok(ProxySetting::Direct));
        assert_eq!(
            ProxySetting::parse("http://proxy:3128"),
            Ok(ProxySetting::Url("http://proxy:3128".into()))
        );
        assert!(ProxySetting::parse("proxy.example:8080").is_ok());
        assert!(ProxySetting::parse("https://proxy:3128").is_err());
        assert!(ProxySetting::parse("socks5://proxy:1080").is_err());
        assert!(ProxySetting::parse("http://[::1]:3128").is_err());
        assert!(ProxySetting::parse("http://proxy:x").is_err());
        assert!(ProxySetting::parse("http://:3128").is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        let p = ProxySetting::parse("http://u:secret@proxy:3128").unwrap();
        assert!(p.has_credentials());
        assert_eq!(p.describe(), "http://***@proxy:3128");
        assert!(!ProxySetting::parse("http://proxy:3128")
            .unwrap()
            .has_credentials());
    }

    #[test]
    fn no_proxy_matching() {
        let np = "localhost, .corp.example,10.0.0.0/8,192.168.1.5,::1,monitor.example:8000";
        assert!(bypasses(np, "localhost"));
        assert!(bypasses(np, "a.corp.example"));
        assert!(bypasses(np, "corp.example"));
        assert!(!bypasses(np, "notcorp.example"));
        assert!(bypasses(np, "10.1.2.3"));
        assert!(bypasses(np, "192.168.1.5"));
        assert!(!bypasses(np, "192.168.1.6"));
        assert!(bypasses(np, "::1"));
        assert!(bypasses(np, "[::1]"));
        assert!(bypasses(np, "monitor.example"));
        assert!(bypasses("*", "anything"));
        assert!(!bypasses("", "anything"));
        assert!(bypasses("127.0.0.1:8000", "127.0.0.1"));
    }

    #[test]
    fn scoped_overrides_and_restores() {
        assert_eq!(current(), ProxySetting::Direct);
        scoped(Some(ProxySetting::Auto), || {
            assert_eq!(current(), ProxySetting::Auto);
        });
        assert_eq!(current(), ProxySetting::Direct);
        scoped(None, || assert_eq!(current(), ProxySetting::Direct));
    }
}
