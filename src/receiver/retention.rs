//! Keeps the audit log within the site's retention while `serve` runs: a pass at start and
//! then hourly, in short batches through the group-commit writer, so a prune of millions of
//! rows never stalls registrations.
use std::time::Duration;

use crate::receiver::store::{self, AuditPruned, Db, Retention};

const PERIOD: Duration = Duration::from_secs(3600);

/// Prunes until nothing is outside `r`; returns what went.
pub async fn prune_now(db: &Db, r: Retention) -> Result<AuditPruned, store::DbError> {
    let mut total = AuditPruned::default();
    loop {
        let now = store::now();
        let batch = db
            .write(move |c| store::prune_audit_batch(c, &r, now))
            .await??;
        if batch.is_empty() {
            return Ok(total);
        }
        total.add(&batch);
        // Let queued registrations in between batches.
        tokio::task::yield_now().await;
    }
}

/// Runs for the life of the server.
pub async fn run(db: Db, r: Retention) {
    if r.max_age_secs.is_none() && r.max_rows.is_none() {
        return;
    }
    loop {
        match prune_now(&db, r).await {
            Ok(p) if !p.is_empty() => tracing::info!(
                deleted_by_age = p.deleted_by_age,
                deleted_by_rows = p.deleted_by_rows,
                "audit log pruned to its retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("audit log retention: {e}"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}
