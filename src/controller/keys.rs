//! Key pairs and CSRs for agent certificates (spec §2): subject `CN=<uuid>`, SHA-256.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ECDSA P-256 by default: a handshake costs a fraction of RSA's, and keygen is instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    #[default]
    Ec,
    Rsa2048,
    Rsa4096,
}

impl KeyType {
    pub fn parse(s: &str) -> Option<KeyType> {
        match s.to_ascii_lowercase().as_str() {
            "ec" | "ecdsa" | "p256" | "ec-p256" => Some(KeyType::Ec),
            "rsa2048" => Some(KeyType::Rsa2048),
            "rsa4096" | "rsa" => Some(KeyType::Rsa4096),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ec => "ec",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa4096 => "rsa4096",
        }
    }
}

pub struct NewKey {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn generate_key(kind: KeyType) -> Result<KeyPair, String> {
    match kind {
        KeyType::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("EC key generation failed: {e}")),
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            use rsa::pkcs8::EncodePrivateKey;
            let bits = if kind == KeyType::Rsa2048 { 2048 } else { 4096 };
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
                .map_err(|e| format!("RSA key generation failed: {e}"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| format!("RSA key encoding failed: {e}"))?;
            KeyPair::from_pkcs8_der_and_sign_algo(
                &rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .map_err(|e| format!("RSA key import failed: {e}"))
        }
    }
}

/// A CSR for `uuid` signed with `key`.
pub fn csr_for(uuid: &str, key: &KeyPair) -> Result<String, String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, uuid);
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("CSR creation failed: {e}"))
}

/// A freshly generated key (no spare pool: proxy registration happens for other hosts).
pub fn new_key_and_csr(uuid: &str, kind: KeyType) -> Result<NewKey, String> {
    with_csr(generate_key(kind)?, uuid)
}

fn with_csr(key: KeyPair, uuid: &str) -> Result<NewKey, String> {
    let csr_pem = csr_for(uuid, &key)?;
    Ok(NewKey {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

// RSA-4096 generation takes seconds; a spare key generated in the background beforehand
// (by the daemon, or right after the previous registration) keeps `register` fast.
// It lives beside the registry, 0600 in the 0700 state directory, and is used once.

fn spare_path(home: &Path, kind: KeyType) -> PathBuf {
    home.join("keys")
        .join(format!("spare-{}.pem", kind.as_str()))
}

fn load_key(pem: &str, kind: KeyType) -> Option<KeyPair> {
    match kind {
        KeyType::Ec => KeyPair::from_pem(pem).ok(),
        _ => KeyPair::from_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256).ok(),
    }
}

/// Takes the spare key of `kind`, if any. Callers hold the registry lock.
pub fn take_spare(home: &Path, kind: KeyType) -> Option<KeyPair> {
    if kind == KeyType::Ec {
        return None;
    }
    let path = spare_path(home, kind);
    let pem = std::fs::read_to_string(&path).ok()?;
    // Removed before use, so a key can never serve two connections.
    std::fs::remove_file(&path).ok()?;
    load_key(&pem, kind)
}

/// Generates the spare key of `kind` unless one exists; true when it made one.
pub fn refill_spare(home: &Path, kind: KeyType) -> Result<bool, String> {
    let path = spare_path(home, kind);
    if kind == KeyType::Ec || path.exists() {
        return Ok(false);
    }
    let key = generate_key(kind)?;
    let dir = home.join("keys");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    super::state::write_atomic(&path, key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    Ok(true)
}

/// A key (the spare one when there is one) and its CSR.
pub fn new_key_and_csr_from(home: &Path, uuid: &str, kind: KeyType) -> Result<NewKey, String> {
    let key = match take_spare(home, kind) {
        Some(k) => k,
        None => generate_key(kind)?,
    };
    with_csr(key, uuid)
}

/// Starts `tether keys refill` in the background so the next RSA registration or renewal
/// finds a spare key; the current command does not wait for it.
pub fn refill_in_background(home: &Path, kind: KeyType) {
    if kind == KeyType::Ec || spare_path(home, kind).exists() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let spawned = std::process::Command::new(exe)
        .args(["keys", "refill", "--key-type", kind.as_str()])
        .env("TETHER_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    // Not waited for on purpose: it outlives this process and is reaped by init.
    drop(spawned);
}
