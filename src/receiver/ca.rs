//! The site's key material: site CA (trust anchor handed to controllers), agent-signing CA
//! (issues agent certificates) and the site server certificate (TLS server of the receiver,
//! TLS client of the fetcher). All keys are ECDSA P-256: cheap to sign with, and accepted by
//! every TLS stack Checkmk's controller uses.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::wire::certs;

pub const SITE_CA_CERT: &str = "site-ca.pem";
pub const SITE_CA_KEY: &str = "site-ca.key";
pub const AGENT_CA_CERT: &str = "agent-ca.pem";
pub const AGENT_CA_KEY: &str = "agent-ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Io(String),
    #[error("certificate error: {0}")]
    Cert(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Cert(e.to_string())
    }
}

/// Writes a file that only the owner can read, atomically (temp file + rename), so a crash
/// never leaves a half-written key and the key is never briefly world-readable.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), CaError> {
    write_atomic(path, data, 0o600)
}

pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |e: std::io::Error| CaError::Io(format!("cannot write {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path)
        .map_err(|e| CaError::Io(format!("cannot read {}: {e}", path.display())))
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    // Positive INTEGER: clear the top bit so DER needs no padding byte and it never reads negative.
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365 * 10);
    p.serial_number = Some(random_serial());
    p
}

/// Paths of the key material inside a receiver directory.
pub fn ca_dir(dir: &Path) -> PathBuf {
    dir.join("ca")
}

/// Creates whatever is missing; returns the names of the files it created.
/// Existing files are never replaced: running init twice changes nothing.
pub fn init(dir: &Path, site: &str, sans: &[String]) -> Result<Vec<String>, CaError> {
    let cdir = ca_dir(dir);
    fs::create_dir_all(&cdir)
        .map_err(|e| CaError::Io(format!("cannot create {}: {e}", cdir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&cdir, fs::Permissions::from_mode(0o700));
    }
    let mut created = Vec::new();
    for (cert, key, cn) in [
        (SITE_CA_CERT, SITE_CA_KEY, format!("Site '{site}' local CA")),
        (
            AGENT_CA_CERT,
            AGENT_CA_KEY,
            format!("Site '{site}' agent signing CA"),
        ),
    ] {
        if cdir.join(cert).exists() && cdir.join(key).exists() {
            continue;
        }
        let kp = KeyPair::generate()?;
        let c = ca_params(&cn).self_signed(&kp)?;
        write_private(&cdir.join(key), kp.serialize_pem().as_bytes())?;
        write_atomic(&cdir.join(cert), c.pem().as_bytes(), 0o644)?;
        created.push(cert.to_string());
    }
    if !(cdir.join(SERVER_CERT).exists() && cdir.join(SERVER_KEY).exists()) {
        let site_ca = load_issuer(&cdir.join(SITE_CA_CERT), &cdir.join(SITE_CA_KEY))?;
        let mut names: Vec<String> = Vec::new();
        for n in sans
            .iter()
            .cloned()
            .chain(["localhost".to_string(), "127.0.0.1".to_string()])
        {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let mut p = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        // CN = site name: Checkmk's controller refuses a server cert whose CN is a UUID.
        dn.push(DnType::CommonName, site);
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365 * 5);
        p.serial_number = Some(random_serial());
        let kp = KeyPair::generate()?;
        let c = p.signed_by(&kp, &site_ca)?;
        write_private(&cdir.join(SERVER_KEY), kp.serialize_pem().as_bytes())?;
        write_atomic(&cdir.join(SERVER_CERT), c.pem().as_bytes(), 0o644)?;
        created.push(SERVER_CERT.to_string());
    }
    Ok(created)
}

fn load_issuer(cert: &Path, key: &Path) -> Result<Issuer<'static, KeyPair>, CaError> {
    let kp = KeyPair::from_pem(&read(key)?)?;
    Ok(Issuer::from_ca_cert_pem(&read(cert)?, kp)?)
}

/// Everything `serve` and `fetch` need, loaded once.
pub struct SiteKeys {
    pub site_ca_pem: String,
    pub site_ca_der: CertificateDer<'static>,
    pub agent_ca_der: CertificateDer<'static>,
    pub agent_issuer: Issuer<'static, KeyPair>,
    pub server_cert_der: CertificateDer<'static>,
    pub server_key_pem: String,
}

impl SiteKeys {
    pub fn load(dir: &Path) -> Result<SiteKeys, CaError> {
        let cdir = ca_dir(dir);
        let site_ca_pem = read(&cdir.join(SITE_CA_CERT))?;
        let agent_ca_pem = read(&cdir.join(AGENT_CA_CERT))?;
        let server_pem = read(&cdir.join(SERVER_CERT))?;
        let server_key_pem = read(&cdir.join(SERVER_KEY))?;
        let c = |e: crate::wire::WireError| CaError::Cert(e.to_string());
        Ok(SiteKeys {
            site_ca_der: certs::cert_from_pem(&site_ca_pem).map_err(c)?,
            agent_ca_der: certs::cert_from_pem(&agent_ca_pem).map_err(c)?,
            agent_issuer: load_issuer(&cdir.join(AGENT_CA_CERT), &cdir.join(AGENT_CA_KEY))?,
            server_cert_der: certs::cert_from_pem(&server_pem).map_err(c)?,
            server_key_pem,
            site_ca_pem,
        })
    }

    pub fn server_key(&self) -> Result<PrivateKeyDer<'static>, CaError> {
        certs::key_from_pem(&self.server_key_pem).map_err(|e| CaError::Cert(e.to_string()))
    }

    /// Chain presented by the TLS server and by the fetcher: leaf, then the site CA.
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.server_cert_der.clone(), self.site_ca_der.clone()]
    }

    pub fn fingerprint(&self) -> String {
        certs::fingerprint_of(&self.server_cert_der)
    }
}

pub fn server_fingerprint(dir: &Path) -> Result<String, CaError> {
    file_fingerprint(&ca_dir(dir).join(SERVER_CERT))
}

/// The site CA's fingerprint: what agents store after registering, and a pin that stays
/// valid when the server certificate is replaced.
pub fn site_ca_fingerprint(dir: &Path) -> Result<String, CaError> {
    file_fingerprint(&ca_dir(dir).join(SITE_CA_CERT))
}

fn file_fingerprint(path: &Path) -> Result<String, CaError> {
    let pem = read(path)?;
    let der = certs::cert_from_pem(&pem).map_err(|e| CaError::Cert(e.to_string()))?;
    Ok(certs::fingerprint_of(&der))
}

/// A CSR that parsed, whose signature verified, and whose CN equals the UUID.
pub struct VerifiedCsr {
    params: CertificateSigningRequestParams,
}

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("Invalid CSR: {0}")]
    Invalid(String),
    #[error("UUID ({uuid}) does not match CN ({cn}) of CSR.")]
    Mismatch { uuid: String, cn: String },
}

pub fn verify_csr(pem: &str, uuid: &str) -> Result<VerifiedCsr, CsrError> {
    if pem.len() > 64 * 1024 {
        return Err(CsrError::Invalid("CSR too large".into()));
    }
    // rcgen parses and verifies the self-signature; it also refuses extensions it does not know.
    let params = CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Invalid(e.to_string()))?;
    check_key_strength(pem)?;
    let cn = params
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .and_then(dn_value_str)
        .unwrap_or_default();
    if cn != uuid {
        return Err(CsrError::Mismatch {
            uuid: uuid.to_string(),
            cn,
        });
    }
    Ok(VerifiedCsr { params })
}

/// Refuses RSA keys below 2048 bits: such a certificate would be the weakest link of the
/// connection. EC keys are limited to what the TLS stacks accept anyway.
fn check_key_strength(pem: &str) -> Result<(), CsrError> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let bad = |m: &str| CsrError::Invalid(m.to_string());
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| bad("unreadable PEM"))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
            .map_err(|_| bad("unparsable CSR"))?;
    match csr.certification_request_info.subject_pki.parsed() {
        Ok(PublicKey::RSA(k)) if k.key_size() < 2048 => {
            Err(bad("RSA keys must have at least 2048 bits"))
        }
        Ok(_) => Ok(()),
        Err(_) => Err(bad("unsupported public key")),
    }
}

fn dn_value_str(v: &rcgen::DnValue) -> Option<String> {
    use rcgen::DnValue::*;
    match v {
        Utf8String(s) => Some(s.clone()),
        PrintableString(s) => Some(s.as_str().to_string()),
        Ia5String(s) => Some(s.as_str().to_string()),
        TeletexString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// An issued agent certificate.
pub struct Issued {
    pub pem: String,
    pub serial_hex: String,
    pub not_after: i64,
}

impl SiteKeys {
    /// Signs an agent certificate: subject CN = UUID (only), SAN DNS = UUID, CA=false.
    /// Only the public key is taken from the CSR, never its requested extensions.
    pub fn sign_agent_cert(
        &self,
        csr: &VerifiedCsr,
        uuid: &str,
        lifetime_secs: i64,
    ) -> Result<Issued, CaError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, uuid);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::DnsName(
            uuid.try_into()
                .map_err(|e: rcgen::Error| CaError::Cert(e.to_string()))?,
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::seconds(lifetime_secs);
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        p.serial_number = Some(serial);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&csr.params.public_key, &self.agent_issuer)?;
        Ok(Issued {
            pem: cert.pem(),
            serial_hex,
            not_after: p.not_after.unix_timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(kp: &KeyPair, cn: &str) -> String {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.serialize_request(kp).unwrap().pem().unwrap()
    }

    #[test]
    fn csr_checks_and_signing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(init(dir.path(), "s1", &[]).unwrap().len(), 3);
        assert!(
            init(dir.path(), "s1", &[]).unwrap().is_empty(),
            "idempotent"
        );
        let keys = SiteKeys::load(dir.path()).unwrap();
        let uuid = "1b4e28ba-2fa1-4d2b-883f-0016d3cca427";
        let kp = KeyPair::generate().unwrap();
        let v = verify_csr(&csr_for(&kp, uuid), uuid).unwrap();
        let issued = keys.sign_agent_cert(&v, uuid, 3600).unwrap();
        let der = certs::cert_from_pem(&issued.pem).unwrap();
        let info = certs::cert_info(&der).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some(uuid));
        assert!(!info.is_ca);
        assert_eq!(info.serial_hex, issued.serial_hex);
        assert!(matches!(
            verify_csr(&csr_for(&kp, "other"), uuid),
            Err(CsrError::Mismatch { .. })
        ));
        assert!(verify_csr("garbage", uuid).is_err());
    }

    /// Made with `openssl req -new -newkey rsa:1024` (ring cannot sign with such a key).
    const WEAK_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBbjCB2AIBADAvMS0wKwYDVQQDDCQxYjRlMjhiYS0yZmExLTRkMmItODgzZi0w\nMDE2ZDNjY2E0MjcwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGBAMk/Y2fdfV8p\nW9E14oFc8SvRLdS09rQrIfpMC2FkdgsweFWzEU66OygPRNYMTaWVx3d17QSzb196\nx2zdpoeFaJd5p+igu7RV54Xh8E86URocfB5Ta0FqsIqR+fgSbCckZKhhf/0MGOt8\nXhcwIUEwm92X6f1KM2tjdzV+2HwWo9QzAgMBAAGgADANBgkqhkiG9w0BAQsFAAOB\ngQCDcd+ycGHzUJos39hVvL37C+kD/5eAEsQVk7dLqo8D1ppvKYHLxVivlacsgLjM\nWOfPYjwVPPZabcaQT0shujwCNInZ5r5hOIN981Bc/axxtMaWNJb+DOzCV3zfUBii\nynSekTbu0/cZ/yG6JcTpTjH/nNnvlf1iaohxkyrZmwBIfQ==\n-----END CERTIFICATE REQUEST-----\n";

    #[test]
    fn weak_rsa_keys_are_refused() {
        let uuid = "1b4e28ba-2fa1-4d2b-883f-0016d3cca427";
        // ring already refuses to verify signatures of such keys; the explicit size check
        // stays as the second line of defence.
        assert!(verify_csr(WEAK_CSR, uuid).is_err());
        assert!(check_key_strength(WEAK_CSR)
            .err()
            .is_some_and(|e| e.to_string().contains("2048")));
    }
}
