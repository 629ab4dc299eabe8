//! The pull scheduler of `serve`: pulls every registered pull host on its interval.
//!
//! Each receiver loops: every few seconds it brings `pull_state` up to date with the hosts
//! (new hosts first due at a random point of their interval, so pulls are spread); whenever
//! it has free pull slots it claims due hosts in the database (`store::claim_due`: lease
//! plus `next_due = now + interval`, so several receivers on one PostgreSQL database split
//! the hosts and each host is pulled once per interval); each pull's outcome and output go
//! through the group-commit writer. A receiver that dies leaves leases that end by the
//! host's next turn at the latest, so the others take its hosts over within one interval.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsConnector;

use super::fetch::{self, PullError, PullSessions, Target};
use super::ingest;
use super::store::{self, Backend, Db, PullRecord};

/// How `serve` schedules pulls.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// Pulls in flight at once.
    pub concurrency: usize,
    /// Deadline of one pull (and of each of its phases).
    pub timeout: Duration,
    /// Largest agent output after decompression.
    pub max_output_bytes: usize,
    /// This receiver's name in leases (`host:pid` by default).
    pub owner: String,
    /// How often the schedule is brought up to date with hosts and registrations.
    pub sync_every: Duration,
}

impl ScheduleOptions {
    pub fn new(concurrency: usize, timeout: Duration, max_output_bytes: usize) -> Self {
        ScheduleOptions {
            concurrency: concurrency.max(1),
            timeout,
            max_output_bytes,
            owner: default_owner(),
            sync_every: Duration::from_secs(2),
        }
    }
}

/// `HOSTNAME:PID`: unique among the receivers of a site, and says where a lease is held.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "receiver".into());
    format!("{host}:{}", std::process::id())
}

/// How long to wait between claims when nothing is due (a host's turn is missed by at
/// most this much).
const TICK: Duration = Duration::from_millis(100);
/// Rows of `pull_state` one writer job changes at most while syncing.
const SYNC_PART: usize = 256;
/// A sync waits at least this many times its own duration before the next one.
const SYNC_SHARE: u32 = 20;
/// ... but no longer than this (a slow database must not leave new hosts unscheduled).
const SYNC_EVERY_MAX: Duration = Duration::from_secs(30);
/// Time a lease allows beyond the pull's deadline, for storing its outcome.
const LEASE_SLACK_MS: i64 = 1000;

struct Shared {
    db: Db,
    connector: TlsConnector,
    /// The client's TLS tickets, kept to the hosts pulled.
    sessions: Option<Arc<PullSessions>>,
    opts: ScheduleOptions,
    targets: RwLock<HashMap<String, Target>>,
    slots: Arc<Semaphore>,
    /// Outcomes waiting for their commit: a pull's slot is free once the pull is done (a
    /// commit takes milliseconds, far longer than a loopback pull), and this bounds what
    /// waits in memory meanwhile.
    unwritten: Arc<Semaphore>,
    finished: Notify,
}

/// Runs until `stop` turns true; then lets the pulls in flight finish (bounded by the pull
/// timeout) and gives back this receiver's leases.
/// `sessions` is the ticket store of `client`, if it resumes sessions.
pub async fn run(
    db: Db,
    client: Arc<rustls::ClientConfig>,
    sessions: Option<Arc<PullSessions>>,
    opts: ScheduleOptions,
    mut stop: watch::Receiver<bool>,
) {
    let sh = Arc::new(Shared {
        db,
        connector: TlsConnector::from(client),
        sessions,
        slots: Arc::new(Semaphore::new(opts.concurrency)),
        unwritten: Arc::new(Semaphore::new(opts.concurrency * 4)),
        opts,
        targets: RwLock::new(HashMap::new()),
        finished: Notify::new(),
    });
    tracing::info!(
        owner = %sh.opts.owner,
        concurrency = sh.opts.concurrency,
        "pull scheduler started"
    );
    // Claim in batches: waiting for a quarter of the slots keeps claims (database round
    // trips) few under load, while an idle site claims every tick.
    let batch = (sh.opts.concurrency / 4).max(1);
    let mut last_sync: Option<Instant> = None;
    let mut sync_every = sh.opts.sync_every;
    loop {
        if *stop.borrow() {
            break;
        }
        if last_sync.is_none_or(|t| t.elapsed() >= sync_every) {
            let started = Instant::now();
            if let Err(e) = sync(&sh).await {
                tracing::warn!("pull schedule not updated: {e}");
            }
            // A sync reads the whole site: on a big one it waits long enough that it costs
            // at most about 5 % of the time (a new host's first pull is at a random point
            // of its interval anyway, so a few seconds' delay does not show).
            let took = started.elapsed();
            sync_every = sh
                .opts
                .sync_every
                .max((took * SYNC_SHARE).min(SYNC_EVERY_MAX));
            tracing::debug!(
                took_ms = took.as_millis() as u64,
                next_in_ms = sync_every.as_millis() as u64,
                "pull schedule synced"
            );
            last_sync = Some(Instant::now());
        }
        let mut free = sh.slots.available_permits();
        if free < batch {
            // Busy: claim again once enough pulls have finished, or after a tick with the
            // few slots slow pulls leave free.
            let ticked = tokio::select! {
                _ = sh.finished.notified() => false,
                _ = tokio::time::sleep(TICK) => true,
                _ = stop.changed() => false,
            };
            free = sh.slots.available_permits();
            if !ticked || free == 0 {
                continue;
            }
        }
        let mut full = false;
        match claim(&sh, free).await {
            Ok(hosts) => {
                full = hosts.len() == free;
                let at = store::now_ms();
                for (host, lease_ms) in hosts {
                    // Which receiver took which host when: the trail that shows hosts
                    // split between receivers (debug level, as every pull).
                    tracing::debug!(host = %host, at_ms = at, owner = %sh.opts.owner, "claimed");
                    start_pull(&sh, host, lease_ms);
                }
            }
            Err(e) => tracing::warn!("claiming due hosts failed: {e}"),
        }
        if full {
            // More may be due: claim again as soon as slots free up (above).
            continue;
        }
        // Nothing more is due: look again in a moment.
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
    // Pulls in flight get a moment to finish (a pull lost now is made up one interval
    // later, so a stop need not wait out slow agents); then nothing of ours is leased.
    let all = sh.opts.concurrency as u32;
    let wait = sh.opts.timeout.min(Duration::from_secs(2));
    let _ = tokio::time::timeout(wait, async {
        let _pulls = sh.slots.acquire_many(all).await;
        let _writes = sh.unwritten.acquire_many(all * 4).await;
    })
    .await;
    let owner = sh.opts.owner.clone();
    match sh.db.write(move |c| store::release_leases(c, &owner)).await {
        Ok(Ok(n)) if n > 0 => tracing::info!("gave back {n} pull leases"),
        Ok(Err(e)) => tracing::warn!("giving back pull leases failed: {e}"),
        Err(e) => tracing::warn!("giving back pull leases failed: {e}"),
        _ => {}
    }
    tracing::info!("pull scheduler stopped");
}

/// Reads the hosts to pull, updates `pull_state` when it differs, and refreshes the
/// addresses and UUIDs pulls use.
async fn sync(sh: &Arc<Shared>) -> Result<(), String> {
    // The whole site is read, so off the async workers.
    let db = sh.db.clone();
    let view = tokio::task::spawn_blocking(move || {
        db.read(|c| store::read_schedule(c, store::now(), store::now_ms()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let targets = view.targets;
    if !view.changes.is_empty() {
        let mut n = 0;
        // In parts, each one short job: a fleet enrolling adds thousands of rows per sync,
        // and one job for all of them held every registration behind it (about 0.4 s for
        // 3,000 hosts, every sync).
        for part in view.changes.split(SYNC_PART) {
            n += sh
                .db
                .write(move |c| store::apply_schedule_changes(c, &part, store::now_ms()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e: store::sql::Error| e.to_string())?;
        }
        tracing::info!(
            "pull schedule updated: {n} hosts changed, {} pulled",
            targets.len()
        );
    }
    if let Some(s) = &sh.sessions {
        s.keep_only(targets.iter().map(|t| t.uuid.as_str()));
    }
    let map = targets
        .into_iter()
        .map(|t| {
            (
                t.host.clone(),
                Target {
                    host: t.host,
                    uuid: Some(t.uuid),
                    address: t.address,
                    port: t.port,
                },
            )
        })
        .collect();
    if let Ok(mut g) = sh.targets.write() {
        *g = map;
    }
    Ok(())
}

async fn claim(sh: &Arc<Shared>, limit: usize) -> Result<Vec<(String, i64)>, String> {
    let owner = sh.opts.owner.clone();
    let lease_ms = sh.opts.timeout.as_millis() as i64 + LEASE_SLACK_MS;
    let now = store::now_ms();
    match sh.db.backend() {
        // Row locks with SKIP LOCKED make the claim safe beside other receivers' claims
        // without the site's write lock.
        Backend::Postgres => sh
            .db
            .unlocked(move |c| store::claim_due(c, &owner, now, lease_ms, limit))
            .map_err(|e| e.to_string()),
        Backend::Sqlite => sh
            .db
            .write(move |c| store::claim_due(c, &owner, now, lease_ms, limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e: store::sql::Error| e.to_string()),
    }
}

fn start_pull(sh: &Arc<Shared>, host: String, lease_ms: i64) {
    let Ok(permit) = sh.slots.clone().try_acquire_owned() else {
        // Cannot happen (claims never exceed the free slots); the host is due again later.
        return;
    };
    let target = sh.targets.read().ok().and_then(|m| m.get(&host).cloned());
    let sh = sh.clone();
    tokio::spawn(async move {
        let attempt = store::now_ms();
        let started = Instant::now();
        // The pull ends before its lease does, so no other receiver pulls it meanwhile.
        let lease =
            Duration::from_millis(lease_ms.saturating_sub(LEASE_SLACK_MS / 2).max(100) as u64);
        let deadline = sh.opts.timeout.min(lease);
        let r = match &target {
            Some(t) => tokio::time::timeout(
                deadline,
                fetch::pull_one(
                    t,
                    sh.connector.clone(),
                    sh.opts.timeout,
                    sh.opts.max_output_bytes,
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(PullError {
                    code: "timeout",
                    text: format!("pull not finished within {} ms", deadline.as_millis()),
                })
            }),
            // Registration revoked or host changed since the last sync.
            None => Err(PullError {
                code: "no_registration",
                text: "the host has no live registration".into(),
            }),
        };
        let secs = started.elapsed().as_secs_f64();
        let code = r.as_ref().err().map_or("ok", |e| e.code);
        super::metrics::pull_finished(code, secs);
        tracing::debug!(
            host = %host,
            outcome = code,
            ms = (secs * 1000.0) as u64,
            owner = %sh.opts.owner,
            "scheduled pull"
        );
        let rec = PullRecord {
            host: host.clone(),
            attempt_ms: attempt,
            error: r
                .as_ref()
                .err()
                .map(|e| (e.code.to_string(), e.text.clone())),
            duration_ms: (secs * 1000.0) as i64,
            bytes: r.as_ref().map_or(0, |p| p.wire_bytes as i64),
        };
        let owner = sh.opts.owner.clone();
        let unwritten = sh.unwritten.clone().acquire_owned().await;
        drop(permit);
        sh.finished.notify_one();
        let stored = sh
            .db
            .write(move |c| {
                if let Ok(p) = &r {
                    ingest::store_compressed(c, &host, "pull", p.compression, p.payload(), p.size)?;
                }
                store::record_pull(c, &owner, &rec)
            })
            .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("storing a pull failed: {e}"),
            Err(e) => tracing::warn!("storing a pull failed: {e}"),
        }
        drop(unwritten);
    });
}
