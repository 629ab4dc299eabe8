//! Hosts and their registrations.
use crate::receiver::store::sql::Connection;
use serde::{Deserialize, Serialize};

use super::*;

// ---------- hosts ----------

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub contact_groups: Vec<String>,
    /// Monitoring site; default: this site.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub cluster: bool,
    /// `pull` (default) or `push`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub agent_port: Option<u16>,
    /// Seconds between pulls (e.g. `30s`, `2m`); absent: inherited from the folders or
    /// the site.
    #[serde(default)]
    pub pull_interval: Option<String>,
}

/// A pull interval as given (`30s`, `5m`): whole seconds, at least one, at most a day.
pub fn parse_interval(s: &str) -> Result<i64> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| Error::usage(format!("invalid interval {s:?}: {e}")))?;
    let secs = d.as_secs();
    if !(1..=86_400).contains(&secs) || d.subsec_nanos() != 0 {
        return Err(Error::usage(format!(
            "invalid interval {s:?}: whole seconds from 1s to 1d"
        )));
    }
    Ok(secs as i64)
}

pub fn build_host(c: &Connection, name: &str, spec: &HostSpec) -> Result<Host> {
    validate::validate_host_name(name)?;
    let folder = normalize_folder(spec.folder.as_deref().unwrap_or("/"))?;
    if store::get_folder(c, &folder)?.is_none() {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("folder {folder:?} does not exist"),
        ));
    }
    let site = match &spec.site {
        Some(s) => {
            validate::validate_site_name(s)?;
            s.clone()
        }
        None => site(c)?,
    };
    let mode = match spec.mode.as_deref() {
        None => crate::wire::api::ConnectionMode::Pull,
        Some(m) => crate::wire::api::ConnectionMode::parse(m)
            .ok_or_else(|| Error::usage(format!("invalid mode {m:?}: use pull or push")))?,
    };
    if let Some(a) = &spec.address {
        if a.is_empty() || a.len() > 253 || a.chars().any(|ch| ch.is_whitespace() || ch == '/') {
            return Err(Error::usage(format!("invalid address {a:?}")));
        }
    }
    Ok(Host {
        name: name.to_string(),
        folder,
        contact_groups: normalize_groups(c, &spec.contact_groups)?,
        site,
        cluster: spec.cluster,
        mode: mode.as_str().to_string(),
        address: spec.address.clone(),
        agent_port: spec.agent_port,
        pull_interval: spec
            .pull_interval
            .as_deref()
            .map(parse_interval)
            .transpose()?,
    })
}

/// Adds the host or updates it to `spec`; unchanged → false.
pub fn put_host(c: &Connection, name: &str, spec: &HostSpec) -> Result<bool> {
    let h = build_host(c, name, spec)?;
    if store::get_host(c, name)?.as_ref() == Some(&h) {
        return Ok(false);
    }
    store::put_host(c, &h)?;
    Ok(true)
}

pub fn del_host(c: &Connection, name: &str) -> Result<bool> {
    for r in store::registrations_of_host(c, name)? {
        store::revoke_registration(c, &r.uuid)?;
    }
    c.execute("DELETE FROM agent_data WHERE host=?1", [name])?;
    Ok(c.execute("DELETE FROM hosts WHERE name=?1", [name])? > 0)
}

/// Revokes every registration of the host; returns the UUIDs revoked.
pub fn unregister(c: &Connection, host: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in store::registrations_of_host(c, host)? {
        if r.revoked_at.is_none() {
            store::revoke_registration(c, &r.uuid)?;
            out.push(r.uuid);
        }
    }
    Ok(out)
}
