//! Certificate facts both sides read: fingerprints, PEM decoding, subject CN and validity.
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::WireError;

/// SHA-256 over the DER encoding, as `openssl x509 -fingerprint -sha256` computes it.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Canonical display form: `sha256:` and 64 lowercase hex digits.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

pub fn fingerprint_of(der: &[u8]) -> String {
    format_fingerprint(&sha256(der))
}

/// Accepts `sha256:HEX`, bare `HEX`, with or without colons, any case.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], WireError> {
    let t = s.trim();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
    let bytes =
        hex::decode(&hex_digits).map_err(|_| WireError::InvalidFingerprint(s.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| WireError::InvalidFingerprint(s.to_string()))
}

/// All certificates of a PEM document, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, WireError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| WireError::InvalidCertificate(format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(WireError::InvalidCertificate(
            "no certificate in PEM".to_string(),
        ));
    }
    Ok(certs)
}

/// The first certificate of a PEM document.
pub fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, WireError> {
    Ok(certs_from_pem(pem)?.remove(0))
}

pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, WireError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| WireError::InvalidCertificate(format!("unreadable key PEM: {e}")))?
        .ok_or_else(|| WireError::InvalidCertificate("no private key in PEM".to_string()))
}

pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// What operators and the protocol need to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
    pub serial_hex: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub fingerprint: String,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn lifetime_secs(&self) -> i64 {
        self.not_after - self.not_before
    }
    pub fn remaining_secs(&self, now: i64) -> i64 {
        self.not_after - now
    }
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

pub fn cert_info(der: &[u8]) -> Result<CertInfo, WireError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| WireError::InvalidCertificate(format!("unparsable X.509: {e}")))?;
    let cn = |name: &x509_parser::x509::X509Name| {
        name.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
    };
    Ok(CertInfo {
        subject_cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
        serial_hex: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        fingerprint: fingerprint_of(der),
        is_ca: cert.is_ca(),
    })
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 rendering of unix seconds for human and JSON output.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let d = sha256(b"x");
        let canon = format_fingerprint(&d);
        assert_eq!(parse_fingerprint(&canon).unwrap(), d);
        let colons = hex::encode_upper(d)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), d);
        assert_eq!(parse_fingerprint(&format!("SHA256:{colons}")).unwrap(), d);
        assert!(parse_fingerprint("sha256:abcd").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }
}
