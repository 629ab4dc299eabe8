//! Data commands: the latest agent output of a host, and the audit log.
use std::path::Path;

use super::args::{AuditArgs, RetentionArgs};
use super::db::read;
use super::output::{AgentDataOut, AuditList, AuditPruneOut};
use crate::cli::error::{Error, ErrorCode, Result};
use crate::receiver::store;
use crate::wire::certs;

pub(super) fn agent_data(dir: &Path, host: &str) -> Result<AgentDataOut> {
    crate::wire::validate::validate_host_name(host)?;
    read(dir, |c| {
        let Some((at, via, data)) = crate::receiver::ingest::latest_output(c, host)? else {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("no agent data for host {host}"),
            ));
        };
        Ok(AgentDataOut {
            ok: true,
            host: host.to_string(),
            via,
            received_at: certs::rfc3339(at),
            age_secs: store::now() - at,
            bytes: data.len(),
            output: String::from_utf8_lossy(&data).into_owned(),
        })
    })
}

/// `agent-data HOST --raw`: the fresh output, byte for byte, on stdout.
pub(super) fn agent_data_raw(dir: &Path, host: &str) -> Result<()> {
    use std::io::Write;
    let data = read(dir, |c| {
        crate::receiver::handoff::fresh_output(c, host, store::now())
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)
        .and_then(|()| out.flush())
        .map_err(|e| Error::local_state(format!("writing the agent output to stdout: {e}")))
}

/// A failure of `agent-data --raw`: exactly one line on stderr (Checkmk shows the first line
/// as the agent's error), the error code's exit code.
pub(super) fn raw_fail(e: &Error) -> i32 {
    let info = e.info();
    let msg = info
        .message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("tether-receiver: {msg} [{}]", info.code.as_str());
    e.code().exit_code()
}

/// `audit prune`: the same batches as the server's hourly pass, until nothing is left.
pub(super) fn audit_prune(dir: &Path, r: &RetentionArgs) -> Result<AuditPruneOut> {
    let r = r.to_retention();
    let mut pruned = store::AuditPruned::default();
    loop {
        let now = store::now();
        let batch = store::tx(dir, |c| Ok(store::prune_audit_batch(c, &r, now)?))?;
        if batch.is_empty() {
            break;
        }
        pruned.add(&batch);
    }
    Ok(AuditPruneOut {
        ok: true,
        pruned,
        remaining: read(dir, |c| Ok(store::count_audit(c)?))?,
    })
}

pub(super) fn audit(dir: &Path, a: AuditArgs) -> Result<AuditList> {
    read(dir, |c| {
        Ok(AuditList {
            ok: true,
            entries: store::list_audit(c, a.host.as_deref(), a.limit.max(0))?,
        })
    })
}
