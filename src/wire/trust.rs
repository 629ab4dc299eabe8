//! How a client (the controller, or `tether-receiver pending --server`) decides to trust a
//! receiver: a pinned SHA-256 fingerprint on first contact, an operator-supplied CA, explicit
//! insecurity, or (after registration) the connection's stored `root_cert`. Host names are not checked, as in Checkmk (spec §2);
//! instead a server certificate whose CN is a UUID (an agent certificate) is refused.
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::wire::certs;
use crate::wire::validate::looks_like_uuid;

/// How the server is trusted for one request.
#[derive(Debug, Clone)]
pub enum TrustMode {
    /// Any certificate of the presented chain must have this SHA-256 digest.
    Fingerprint([u8; 32]),
    /// The chain must lead to one of these roots.
    Roots(Vec<CertificateDer<'static>>),
    /// No verification at all (`--trust-cert`); reported as insecure.
    Insecure,
}

impl TrustMode {
    /// Name reported in JSON output and stored with the connection.
    pub fn label(&self) -> &'static str {
        match self {
            TrustMode::Fingerprint(_) => "fingerprint",
            TrustMode::Roots(_) => "root_ca",
            TrustMode::Insecure => "insecure",
        }
    }
}

/// What the verifier saw: lets a trust failure show the operator the fingerprints to pin.
#[derive(Debug, Default)]
pub struct Observed {
    pub chain_fingerprints: Vec<String>,
    pub failure: Option<String>,
}

#[derive(Debug)]
pub struct Verifier {
    mode: TrustMode,
    observed: Arc<Mutex<Observed>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Verifier {
    pub fn new(mode: TrustMode) -> (Arc<Self>, Arc<Mutex<Observed>>) {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let v = Arc::new(Verifier {
            mode,
            observed: observed.clone(),
            provider: crate::wire::tls::provider(),
        });
        (v, observed)
    }

    fn fail(&self, why: String) -> rustls::Error {
        if let Ok(mut o) = self.observed.lock() {
            o.failure = Some(why.clone());
        }
        rustls::Error::General(why)
    }
}

/// Verifies `end_entity` + `intermediates` up to one of `roots`, for server or client
/// authentication, ignoring names (the caller checks CNs where the protocol asks).
pub fn verify_chain(
    roots: &[CertificateDer<'static>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    server: bool,
) -> Result<(), String> {
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    if anchors.is_empty() {
        return Err("no usable root certificate".into());
    }
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| e.to_string())?;
    let usage = if server {
        webpki::KeyUsage::server_auth()
    } else {
        webpki::KeyUsage::client_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("certificate chain does not lead to the trusted root: {e}"))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&CertificateDer<'_>> =
            std::iter::once(end_entity).chain(intermediates).collect();
        if let Ok(mut o) = self.observed.lock() {
            o.chain_fingerprints = chain.iter().map(|c| certs::fingerprint_of(c)).collect();
        }
        match &self.mode {
            TrustMode::Insecure => {}
            TrustMode::Fingerprint(pin) => {
                if !chain.iter().any(|c| &certs::sha256(c) == pin) {
                    return Err(self.fail(format!(
                        "no certificate presented by the server matches the pinned fingerprint {}",
                        certs::format_fingerprint(pin)
                    )));
                }
            }
            TrustMode::Roots(roots) => {
                verify_chain(roots, end_entity, intermediates, now, true)
                    .map_err(|e| self.fail(e))?;
            }
        }
        // An agent certificate (CN = UUID) must never pose as the receiver.
        if let Ok(info) = certs::cert_info(end_entity) {
            if info.subject_cn.as_deref().is_some_and(looks_like_uuid) {
                return Err(self
                    .fail("the server presented an agent certificate (CN is a UUID)".to_string()));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
