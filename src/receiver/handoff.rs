//! The hand-off to Checkmk: `agent-data HOST --raw` runs as the host's datasource program
//! ("Individual program call instead of agent access") and hands over the latest output only
//! while it is fresh, so a silent agent shows up in Checkmk as a failing agent, not as old
//! data that looks current.
use crate::error::{Error, ErrorCode, Result};
use crate::receiver::store::{self, Connection};

/// The latest output of `host` as stored (bytes exactly as the agent sent them), if the host
/// exists, has output, and that output is not older than 1.5 of its intervals at `now`.
pub fn fresh_output(c: &Connection, host: &str, now: i64) -> Result<Vec<u8>> {
    crate::wire::validate::validate_host_name(host)?;
    if store::get_host(c, host)?.is_none() {
        return Err(Error::new(
            ErrorCode::HostNotFound,
            format!("host {host} is not on this tether-receiver site"),
        ));
    }
    let Some((at, via, data)) = crate::receiver::ingest::latest_output(c, host)? else {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("no agent output for host {host} yet (not pushed or fetched)"),
        ));
    };
    let interval = store::host_interval(c, host)?;
    if store::is_stale(at, interval, now) {
        return Err(Error::new(
            ErrorCode::Stale,
            format!(
                "agent output of host {host} is stale: last {via} {} s ago, interval {interval} s \
                 (stale after {} s)",
                now - at,
                store::stale_after(interval)
            ),
        ));
    }
    Ok(data)
}
