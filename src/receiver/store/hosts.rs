//! Hosts and their effective contact groups.
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Host {
    pub name: String,
    pub folder: String,
    pub contact_groups: Vec<String>,
    pub site: String,
    pub cluster: bool,
    /// `pull-agent` or `push-agent`.
    pub mode: String,
    pub address: Option<String>,
    pub agent_port: Option<u16>,
    /// Seconds between pulls (pushes expected) set on the host; absent: inherited from
    /// its folders or the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval: Option<i64>,
}

pub(super) fn host_row(r: &sql::Row) -> sql::Result<Host> {
    Ok(Host {
        name: r.get(0)?,
        folder: r.get(1)?,
        contact_groups: json_list(&r.get::<_, String>(2)?),
        site: r.get(3)?,
        cluster: r.get(4)?,
        mode: r.get(5)?,
        address: r.get(6)?,
        agent_port: r.get(7)?,
        pull_interval: r.get(8)?,
    })
}

pub(super) const HOST_COLS: &str =
    "name, folder, contact_groups, site, cluster, mode, address, agent_port, pull_interval";

pub fn get_host(c: &Connection, name: &str) -> sql::Result<Option<Host>> {
    c.query_row(
        &format!("SELECT {HOST_COLS} FROM hosts WHERE name=?1"),
        [name],
        host_row,
    )
    .optional()
}

pub fn list_hosts(c: &Connection) -> sql::Result<Vec<Host>> {
    let mut st = c.prepare(&format!("SELECT {HOST_COLS} FROM hosts ORDER BY name"))?;
    let rows = st.query_map([], host_row)?;
    rows.collect()
}

pub fn put_host(c: &Connection, h: &Host) -> sql::Result<()> {
    c.execute(
        "INSERT INTO hosts(name, folder, contact_groups, site, cluster, mode, address, agent_port, created_at, pull_interval)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)
         ON CONFLICT(name) DO UPDATE SET folder=excluded.folder, contact_groups=excluded.contact_groups,
           site=excluded.site, cluster=excluded.cluster, mode=excluded.mode, address=excluded.address,
           agent_port=excluded.agent_port, pull_interval=excluded.pull_interval",
        params![
            h.name,
            h.folder,
            to_json(&h.contact_groups),
            h.site,
            h.cluster,
            h.mode,
            h.address,
            h.agent_port,
            now(),
            h.pull_interval
        ],
    )?;
    Ok(())
}

/// Contact groups that make a user a contact of the host: the host's own plus its folder's.
pub fn host_groups_effective(c: &Connection, h: &Host) -> sql::Result<Vec<String>> {
    let mut g = folder_groups_effective(c, &h.folder)?;
    for x in &h.contact_groups {
        if !g.contains(x) {
            g.push(x.clone());
        }
    }
    Ok(g)
}
