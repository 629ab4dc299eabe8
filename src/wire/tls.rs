//! The one crypto provider both sides use, so TLS and certificate code agree on algorithms.
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs the provider process-wide (for libraries that consult the default).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}
