//! Argument groups shared by the registration commands. No option takes a secret value.
use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use crate::cli::error::{Error, Result};
use crate::controller::client::Target;
use crate::controller::keys::KeyType;
use crate::controller::register::{Credentials, TrustChoice};
use crate::controller::trust::TrustMode;
use crate::wire::certs;

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Receiver address: HOST or HOST:PORT (IPv6 as [ADDR]:PORT); without a port it is
    /// discovered from the site's web server.
    #[arg(short = 's', long = "server", value_name = "HOST[:PORT]")]
    pub server: String,
    /// Checkmk site name.
    #[arg(short = 'i', long = "site", value_name = "SITE")]
    pub site: String,
}

impl ServerArgs {
    pub fn target(&self) -> Result<Target> {
        Target::resolve(&self.server, &self.site)
    }
}

pub use crate::controller::client::split_host_port;

#[derive(Debug, Args, Clone, Default)]
pub struct SecretArgs {
    /// User on the site (e.g. an automation user with the agent_registration role).
    #[arg(short = 'U', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Read the password from standard input. Otherwise TETHER_PASSWORD is used.
    #[arg(long)]
    pub password_stdin: bool,
    /// Read a registration token from this file: host-bound for register, a scoped enrollment
    /// token for register-new. Otherwise TETHER_TOKEN is used.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string()
}

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl SecretArgs {
    pub fn credentials(&self, allow_token: bool) -> Result<Credentials> {
        let password = if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::usage(format!("cannot read --password-file {}: {e}", f.display()))
            })?;
            Some(first_line(&text))
        } else if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::usage(format!("cannot read the password from stdin: {e}")))?;
            Some(first_line(&text))
        } else {
            env_secret("TETHER_PASSWORD")
        };
        if password.as_deref() == Some("") {
            return Err(Error::usage("the password is empty"));
        }
        let token = if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::usage(format!("cannot read --token-file {}: {e}", f.display()))
            })?;
            Some(first_line(&text).trim().to_string())
        } else if allow_token && password.is_none() {
            env_secret("TETHER_TOKEN").map(|t| t.trim().to_string())
        } else {
            None
        };
        if token.is_some() && !allow_token {
            return Err(Error::usage(
                "this command does not accept tokens; use --user with a password",
            ));
        }
        if token.is_none() && self.user.is_none() {
            return Err(Error::usage(
                "no credentials: pass --user with --password-file/--password-stdin/TETHER_PASSWORD, or a token with --token-file/TETHER_TOKEN",
            ));
        }
        Ok(Credentials {
            user: self.user.clone(),
            password,
            token,
        })
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct TrustArgs {
    /// Trust the receiver if any certificate it presents has this SHA-256 fingerprint
    /// (sha256:HEX; colons and case do not matter).
    #[arg(long, value_name = "sha256:HEX", conflicts_with_all = ["root_ca", "trust_cert"])]
    pub trust_fingerprint: Option<String>,
    /// Trust the receiver if its chain leads to this CA (PEM file).
    #[arg(long, value_name = "FILE", conflicts_with = "trust_cert")]
    pub root_ca: Option<PathBuf>,
    /// INSECURE: trust whatever certificate the receiver presents.
    #[arg(long)]
    pub trust_cert: bool,
}

impl TrustArgs {
    pub fn choice(&self) -> Result<TrustChoice> {
        if let Some(fp) = &self.trust_fingerprint {
            return Ok(TrustChoice::Given(TrustMode::Fingerprint(
                certs::parse_fingerprint(fp)?,
            )));
        }
        if let Some(f) = &self.root_ca {
            let pem = std::fs::read_to_string(f)
                .map_err(|e| Error::usage(format!("cannot read --root-ca {}: {e}", f.display())))?;
            let roots = certs::certs_from_pem(&pem)
                .map_err(|e| Error::usage(format!("--root-ca {}: {e}", f.display())))?;
            return Ok(TrustChoice::Given(TrustMode::Roots(roots)));
        }
        if self.trust_cert {
            tracing::warn!("--trust-cert accepts any server certificate; pin it with --trust-fingerprint instead");
            return Ok(TrustChoice::Given(TrustMode::Insecure));
        }
        Ok(TrustChoice::Unspecified)
    }
    pub fn insecure(&self) -> bool {
        self.trust_cert
    }
}

/// `--key-type`: the values show in --help; older spellings (ecdsa, p256, rsa) still parse.
pub fn key_type_parser() -> impl clap::builder::TypedValueParser<Value = KeyType> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("ec")
            .aliases(["ecdsa", "p256", "ec-p256"])
            .help("ECDSA P-256"),
        PossibleValue::new("rsa2048").help("RSA, 2048 bits"),
        PossibleValue::new("rsa4096")
            .alias("rsa")
            .help("RSA, 4096 bits"),
    ])
    .map(|s| KeyType::parse(&s).unwrap_or_default())
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid label {s:?}: expected KEY:VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a:1").unwrap(), ("a".into(), Some(1)));
        assert_eq!(split_host_port("a").unwrap(), ("a".into(), None));
        assert_eq!(
            split_host_port("[::1]:8000").unwrap(),
            ("::1".into(), Some(8000))
        );
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), None));
        assert!(split_host_port("a:x").is_err());
        assert!(split_host_port(":80").is_err());
    }
}
