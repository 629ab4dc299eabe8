//! URL paths of the agent receiver, all below `/SITE/agent-receiver/`.

pub const DEFAULT_RECEIVER_PORT: u16 = 8000;
pub const DEFAULT_PULL_PORT: u16 = 6556;

pub fn base(site: &str) -> String {
    format!("/{site}/agent-receiver")
}

pub fn register_existing(site: &str) -> String {
    format!("{}/register_existing", base(site))
}
pub fn register_existing_token(site: &str) -> String {
    format!("{}/register_existing_token", base(site))
}
pub fn register_new(site: &str) -> String {
    format!("{}/register_new", base(site))
}
pub fn register_new_ongoing(site: &str, uuid: &str) -> String {
    format!("{}/register_new_ongoing/{uuid}", base(site))
}
pub fn registration_status_v2(site: &str, uuid: &str) -> String {
    format!("{}/registration_status_v2/{uuid}", base(site))
}
pub fn registration_status_v1(site: &str, uuid: &str) -> String {
    format!("{}/registration_status/{uuid}", base(site))
}
pub fn renew_certificate(site: &str, uuid: &str) -> String {
    format!("{}/renew_certificate/{uuid}", base(site))
}
pub fn agent_data(site: &str, uuid: &str) -> String {
    format!("{}/agent_data/{uuid}", base(site))
}
/// Port discovery, served by Checkmk on the web port; tether-receiver serves it too.
pub fn discover_receiver(site: &str) -> String {
    format!("/{site}/check_mk/api/1.0/domain-types/internal/actions/discover-receiver/invoke")
}
/// **ext**: the controller ends its own registration (mTLS).
pub fn unregister(site: &str, uuid: &str) -> String {
    format!("{}/tether/unregister/{uuid}", base(site))
}
/// **ext**: a controller that lost its state asks to take its host name over (Basic).
pub fn request_takeover(site: &str) -> String {
    format!("{}/tether/request_takeover", base(site))
}
