//! A credential-free check that the receiver is reachable and trusted as the operator asked:
//! what Ansible's check mode and cautious operators run before registering.
use super::client::{self, Client, Target};
use super::register::TrustChoice;
use super::trust::TrustMode;
use crate::error::Result;
use crate::wire::paths;

pub struct Probe {
    pub trust: &'static str,
    pub server_fingerprints: Vec<String>,
}

/// Handshakes with the chosen trust and sends one unauthenticated request. Any HTTP
/// answer proves reachability and trust; nothing is stored and no secret is sent.
pub fn probe(target: &Target, trust: &TrustChoice) -> Result<Probe> {
    let mode = match trust {
        TrustChoice::Given(m) => m.clone(),
        // The same failure `register` gives: exit 8 with the fingerprints to verify.
        TrustChoice::Unspecified => {
            let fps = client::probe_fingerprints(&target.host, target.port)?;
            return Err(super::register::untrusted_error(target, fps));
        }
    };
    let label = mode.label();
    let insecure = matches!(mode, TrustMode::Insecure);
    let c = Client::new(target.clone(), mode, None)?;
    let fps = c.reachable(&paths::discover_receiver(&target.site))?;
    Ok(Probe {
        trust: if insecure { "insecure" } else { label },
        server_fingerprints: fps,
    })
}
