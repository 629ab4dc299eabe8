//! Key pairs and CSRs for agent certificates (spec §2): subject `CN=<uuid>`, SHA-256.
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

pub fn new_key_and_csr(uuid: &str, kind: KeyType) -> Result<NewKey, String> {
    let key = generate_key(kind)?;
    let csr_pem = csr_for(uuid, &key)?;
    Ok(NewKey {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}
