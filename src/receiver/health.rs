//! Per-host delivery health (`hosts health`, the `/metrics` gauges): when each host last
//! delivered output, whether that is stale for its interval, and how its last scheduled
//! pull went. Pull hosts are pulled by `serve`; push hosts are expected at their interval
//! as well and are stale the same way (no push within 1.5 intervals).
use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Serialize;

use super::store::{self, sql, Connection};
use crate::wire::certs;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostHealth {
    pub host: String,
    /// `pull-agent` or `push-agent`.
    pub mode: String,
    /// Seconds between expected deliveries (host, folder, site, or 60).
    pub interval_secs: i64,
    /// Pulled by the scheduler (a pull host with a live registration).
    pub scheduled: bool,
    /// When the latest output arrived (RFC 3339), by pull or push.
    pub last_success: Option<String>,
    /// Seconds since then.
    pub age_secs: Option<i64>,
    /// No output within 1.5 intervals (counted from the host's creation if none yet).
    pub stale: bool,
    /// Last scheduled pull attempt (RFC 3339).
    pub last_attempt: Option<String>,
    /// Stable code of the last pull's failure (e.g. `connection_failed`, `timeout`,
    /// `tls_failed`, `invalid_output`); absent when it succeeded.
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    /// Duration of the last pull in milliseconds.
    pub duration_ms: Option<i64>,
    /// Bytes the last pull received (the compressed frame).
    pub bytes: Option<i64>,
    /// Bytes stored for the latest output (compressed as it arrived).
    pub stored_bytes: Option<i64>,
    /// Bytes of the latest output decompressed.
    pub output_bytes: Option<i64>,
    /// Compression of the stored output: none, zlib or zstd.
    pub compression: Option<String>,
    /// The receiver holding the host's lease (a pull in progress).
    pub lease_owner: Option<String>,
    /// The receiver that made the last pull.
    pub pulled_by: Option<String>,
    /// Scheduled pulls so far, and how many of them failed.
    pub pulls: i64,
    pub failures: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthOut {
    pub ok: bool,
    pub hosts: Vec<HostHealth>,
    /// How many hosts are stale.
    pub stale: usize,
}

fn ms_to_s(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Health of every host that delivers output (clusters have none of their own).
pub fn health(c: &Connection, now: i64) -> sql::Result<Vec<HostHealth>> {
    let intervals = store::all_intervals(c)?;
    let states = store::all_pull_states(c)?;
    let mut data: HashMap<String, (i64, i64, Option<i64>, String)> = HashMap::new();
    for r in c.query(
        "SELECT host, received_at, length(data), size, compression FROM agent_data",
        [],
    )? {
        data.insert(r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
    }
    let created: HashMap<String, i64> = c
        .query("SELECT name, created_at FROM hosts", [])?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?)))
        .collect::<sql::Result<_>>()?;
    let mut out = Vec::new();
    for h in store::list_hosts(c)? {
        if h.cluster {
            continue;
        }
        let interval = intervals
            .get(&h.name)
            .copied()
            .unwrap_or(store::DEFAULT_PULL_INTERVAL);
        let st = states.get(&h.name).filter(|_| h.mode == "pull-agent");
        let d = data.get(&h.name);
        let last = d.map(|d| d.0);
        let since = last.unwrap_or_else(|| created.get(&h.name).copied().unwrap_or(now));
        out.push(HostHealth {
            mode: h.mode.clone(),
            interval_secs: interval,
            scheduled: st.is_some_and(|s| s.active),
            last_success: last.map(certs::rfc3339),
            age_secs: last.map(|t| (now - t).max(0)),
            stale: store::is_stale(since, interval, now),
            last_attempt: st
                .and_then(|s| s.last_attempt)
                .map(|t| certs::rfc3339(ms_to_s(t))),
            last_error_code: st.and_then(|s| s.last_error_code.clone()),
            last_error: st.and_then(|s| s.last_error.clone()),
            duration_ms: st.and_then(|s| s.duration_ms),
            bytes: st.and_then(|s| s.bytes),
            stored_bytes: d.map(|d| d.1),
            output_bytes: d.map(|d| d.2.unwrap_or(d.1)),
            compression: d.map(|d| d.3.clone()),
            lease_owner: st.and_then(|s| {
                s.lease_owner
                    .clone()
                    .filter(|_| s.lease_until.is_some_and(|u| u > now * 1000))
            }),
            pulled_by: st.and_then(|s| s.pulled_by.clone()),
            pulls: st.map_or(0, |s| s.pulls),
            failures: st.map_or(0, |s| s.failures),
            host: h.name,
        });
    }
    Ok(out)
}

/// The health report of the site.
pub fn report(c: &Connection) -> sql::Result<HealthOut> {
    let hosts = health(c, store::now())?;
    let stale = hosts.iter().filter(|h| h.stale).count();
    Ok(HealthOut {
        ok: true,
        hosts,
        stale,
    })
}

/// Live registrations (not revoked, certificate valid) of the site.
pub fn live_registrations(c: &Connection, now: i64) -> sql::Result<i64> {
    c.query_row(
        &format!(
            "SELECT COUNT(*) FROM registrations r WHERE {}",
            store::LIVE_REGISTRATION_SQL
        ),
        [now],
        |r| r.get(0),
    )
}
