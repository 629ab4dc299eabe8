//! The scheduler's table: one `pull_state` row per scheduled pull host, holding when it is
//! next due, who holds its lease, and how its last pull went. Times in this table are
//! milliseconds since the epoch (intervals of a few seconds need finer than seconds).
//!
//! Claiming is the one operation several receivers race on: it takes due hosts whose lease
//! is free, sets the lease and advances `next_due` by the host's interval in one statement,
//! so a host is pulled once per interval whichever receivers are alive. On PostgreSQL the
//! statement locks the rows it takes with `FOR UPDATE SKIP LOCKED` (receivers claiming at
//! once take disjoint hosts without waiting for each other, and without the site's write
//! lock); on SQLite it runs in the writer's transaction.
use std::collections::HashMap;

use super::*;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A host the scheduler pulls: its live registration and where its agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullTarget {
    pub host: String,
    pub uuid: String,
    pub address: String,
    pub port: u16,
    pub interval_ms: i64,
}

/// Each host's interval in seconds, resolved for all hosts at once (host, then the nearest
/// folder up the tree, then the site; see `freshness`).
pub fn all_intervals(c: &Connection) -> sql::Result<HashMap<String, i64>> {
    let site = site_interval(c)?;
    let folders = folder_intervals(c)?;
    let mut out = HashMap::new();
    for r in c.query("SELECT name, folder, pull_interval FROM hosts", [])? {
        let (name, folder, own): (String, String, Option<i64>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        out.insert(name, resolve_interval(own, &folder, &folders, site));
    }
    Ok(out)
}

/// Every host the scheduler should pull: mode `pull-agent`, not a cluster, with a live
/// registration (the newest when there are several), as `fetch --all` chooses them; and the
/// names of all hosts.
fn targets_and_hosts(
    c: &Connection,
    now: i64,
) -> sql::Result<(Vec<PullTarget>, std::collections::HashSet<String>)> {
    let (site, folders) = (site_interval(c)?, folder_intervals(c)?);
    // One pass over the hosts, each with its newest live registration looked up by index
    // (registrations_host, certs_uuid): the sync of a 100,000-host site read and sorted
    // every registration and built every host row in full before.
    let rows = c.query(
        &format!(
            "SELECT h.name, h.folder, h.pull_interval, h.address, h.agent_port,
                    h.mode = 'pull-agent' AND h.cluster = 0,
                    (SELECT r.uuid FROM registrations r
                      WHERE r.host = h.name AND {LIVE_REGISTRATION_SQL}
                      ORDER BY r.registered_at DESC LIMIT 1)
             FROM hosts h"
        ),
        [now],
    )?;
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.get(0)?;
        let (pulled, uuid): (bool, Option<String>) = (r.get(5)?, r.get(6)?);
        if let (true, Some(uuid)) = (pulled, uuid) {
            let (folder, own, address, port): (String, Option<i64>, Option<String>, Option<u16>) =
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let secs = resolve_interval(own, &folder, &folders, site);
            out.push(PullTarget {
                address: address.unwrap_or_else(|| name.clone()),
                port: port.unwrap_or(crate::wire::paths::DEFAULT_PULL_PORT),
                interval_ms: secs.saturating_mul(1000),
                host: name.clone(),
                uuid,
            });
        }
        names.insert(name);
    }
    Ok((out, names))
}

/// (active, interval_ms) of every row.
fn schedule_rows(c: &Connection) -> sql::Result<HashMap<String, (bool, i64)>> {
    c.query("SELECT host, active, interval_ms FROM pull_state", [])?
        .iter()
        .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .collect()
}

/// What the scheduler reads on each sync: the hosts to pull, and the changes that bring
/// `pull_state` to them.
pub struct ScheduleView {
    pub targets: Vec<PullTarget>,
    pub changes: ScheduleChanges,
}

/// The changes that bring `pull_state` to the targets: new hosts get a row first due at a
/// random point within their interval (so a fleet added at once, or a site starting, is
/// spread out, not pulled in one burst); a changed interval takes effect at once; hosts no
/// longer pulled keep their history but are not claimed; rows of deleted hosts go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScheduleChanges {
    /// New rows: (host, interval_ms, first due).
    pub add: Vec<(String, i64, i64)>,
    /// Rows to make active with this interval: (host, interval_ms).
    pub set: Vec<(String, i64)>,
    /// Active rows of hosts no longer pulled, and rows of hosts that no longer exist.
    pub retire: Vec<String>,
}

/// Reads the targets and computes the schedule's changes, outside the writer: the writer
/// then only applies them (see [`apply_schedule_changes`]).
pub fn read_schedule(c: &Connection, now: i64, now_ms: i64) -> sql::Result<ScheduleView> {
    let (targets, hosts) = targets_and_hosts(c, now)?;
    let rows = schedule_rows(c)?;
    let changes = schedule_changes(&rows, &targets, &hosts, now_ms);
    Ok(ScheduleView { targets, changes })
}

fn schedule_changes(
    rows: &HashMap<String, (bool, i64)>,
    targets: &[PullTarget],
    hosts: &std::collections::HashSet<String>,
    now_ms: i64,
) -> ScheduleChanges {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut ch = ScheduleChanges::default();
    let mut wanted = std::collections::HashSet::new();
    for t in targets {
        wanted.insert(t.host.as_str());
        match rows.get(&t.host) {
            None => {
                let first = now_ms + rng.gen_range(0..t.interval_ms.max(1));
                ch.add.push((t.host.clone(), t.interval_ms, first));
            }
            Some(&(active, iv)) if !active || iv != t.interval_ms => {
                ch.set.push((t.host.clone(), t.interval_ms));
            }
            Some(_) => {}
        }
    }
    for (host, (active, _)) in rows {
        if !wanted.contains(host.as_str()) && (*active || !hosts.contains(host)) {
            ch.retire.push(host.clone());
        }
    }
    ch
}

impl ScheduleChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.retire.is_empty()
    }

    /// The changes in parts of at most `n` rows each: each part is one short writer job,
    /// so registrations and pull outcomes are not held up behind a fleet's worth of rows.
    pub fn split(mut self, n: usize) -> Vec<ScheduleChanges> {
        let n = n.max(1);
        let mut parts = Vec::new();
        while !self.is_empty() {
            let mut p = ScheduleChanges::default();
            let mut room = n;
            p.add = take_up_to(&mut self.add, &mut room);
            p.set = take_up_to(&mut self.set, &mut room);
            p.retire = take_up_to(&mut self.retire, &mut room);
            parts.push(p);
        }
        parts
    }
}

/// The first items of `v`, as many as `room` allows (which shrinks by as many).
fn take_up_to<T>(v: &mut Vec<T>, room: &mut usize) -> Vec<T> {
    let k = (*room).min(v.len());
    *room -= k;
    v.drain(..k).collect()
}

/// Applies (a part of) [`ScheduleChanges`] in a few statements, each for many rows. Safe to
/// race with another receiver applying the same: a new row that exists is left alone, and
/// the rest sets values. Returns the rows changed.
pub fn apply_schedule_changes(
    c: &Connection,
    ch: &ScheduleChanges,
    now_ms: i64,
) -> sql::Result<usize> {
    let mut changed = 0;
    if !ch.add.is_empty() {
        let mut vals = Vec::with_capacity(ch.add.len() * 3);
        for (host, iv, first) in &ch.add {
            vals.extend([
                sql::Value::Text(host.clone()),
                sql::Value::Int(*iv),
                sql::Value::Int(*first),
            ]);
        }
        let rows = vec!["(?,1,?,?)"; ch.add.len()].join(",");
        changed += c.execute(
            &format!(
                "INSERT INTO pull_state(host, active, interval_ms, next_due) VALUES {rows}
                 ON CONFLICT(host) DO NOTHING"
            ),
            vals,
        )?;
    }
    // One statement per interval (a changed interval usually changes a folder's worth).
    let mut by_interval: std::collections::BTreeMap<i64, Vec<&str>> = Default::default();
    for (host, iv) in &ch.set {
        by_interval.entry(*iv).or_default().push(host);
    }
    for (iv, hosts) in by_interval {
        let mut vals = vec![sql::Value::Int(iv), sql::Value::Int(now_ms)];
        vals.extend(hosts.iter().map(|h| sql::Value::Text(h.to_string())));
        // A shorter interval must not wait out the longer one already scheduled.
        changed += c.execute(
            &format!(
                "UPDATE pull_state SET active=1, interval_ms=?1,
                   next_due=CASE WHEN next_due > CAST(?2 AS BIGINT) + CAST(?1 AS BIGINT)
                     THEN CAST(?2 AS BIGINT) + CAST(?1 AS BIGINT) ELSE next_due END
                 WHERE host IN ({})",
                numbered(3, hosts.len())
            ),
            vals,
        )?;
    }
    if !ch.retire.is_empty() {
        let vals: Vec<sql::Value> = ch
            .retire
            .iter()
            .map(|h| sql::Value::Text(h.clone()))
            .collect();
        changed += c.execute(
            &format!(
                "DELETE FROM pull_state WHERE host IN ({})
                 AND NOT EXISTS (SELECT 1 FROM hosts WHERE hosts.name = pull_state.host)",
                numbered(1, vals.len())
            ),
            vals.clone(),
        )?;
        changed += c.execute(
            &format!(
                "UPDATE pull_state SET active=0 WHERE active=1 AND host IN ({})",
                numbered(1, vals.len())
            ),
            vals,
        )?;
    }
    Ok(changed)
}

/// `?from, ?from+1, …` (`n` of them).
fn numbered(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Takes up to `limit` due hosts for `owner`: next due one interval from now, leased for
/// `lease_ms` but never beyond that (so a receiver that dies holding leases delays none of
/// its hosts past their next turn). Returns (host, lease length in ms), earliest due first.
pub fn claim_due(
    c: &Connection,
    owner: &str,
    now: i64,
    lease_ms: i64,
    limit: usize,
) -> sql::Result<Vec<(String, i64)>> {
    let sql = match c.backend() {
        Backend::Postgres => {
            "UPDATE pull_state p SET lease_owner=?1,
               lease_until=CAST(?2 AS BIGINT) + LEAST(CAST(?3 AS BIGINT), p.interval_ms),
               next_due=CAST(?2 AS BIGINT) + p.interval_ms
             FROM (SELECT host FROM pull_state
                   WHERE active=1 AND next_due <= ?2 AND (lease_until IS NULL OR lease_until <= ?2)
                   ORDER BY next_due LIMIT ?4 FOR UPDATE SKIP LOCKED) d
             WHERE p.host = d.host
             RETURNING p.host, p.next_due, p.lease_until"
        }
        Backend::Sqlite => {
            "UPDATE pull_state SET lease_owner=?1,
               lease_until=CAST(?2 AS BIGINT) + MIN(CAST(?3 AS BIGINT), interval_ms),
               next_due=CAST(?2 AS BIGINT) + interval_ms
             WHERE host IN (SELECT host FROM pull_state
                   WHERE active=1 AND next_due <= ?2 AND (lease_until IS NULL OR lease_until <= ?2)
                   ORDER BY next_due LIMIT ?4)
             RETURNING host, next_due, lease_until"
        }
    };
    let rows = c.query(sql, params![owner, now, lease_ms, limit as i64])?;
    let mut out: Vec<(i64, String, i64)> = rows
        .iter()
        .map(|r| Ok((r.get(1)?, r.get(0)?, r.get::<_, i64>(2)? - now)))
        .collect::<sql::Result<_>>()?;
    out.sort();
    Ok(out.into_iter().map(|(_, h, l)| (h, l)).collect())
}

/// How one pull went.
#[derive(Debug, Clone)]
pub struct PullRecord {
    pub host: String,
    pub attempt_ms: i64,
    /// None on success, else (stable code, text).
    pub error: Option<(String, String)>,
    pub duration_ms: i64,
    /// Bytes received (the compressed frame).
    pub bytes: i64,
}

/// Stores a pull's outcome and gives its lease back (if `owner` still holds it).
pub fn record_pull(c: &Connection, owner: &str, p: &PullRecord) -> sql::Result<()> {
    let (code, text) = match &p.error {
        Some((c, t)) => (Some(c.as_str()), Some(t.as_str())),
        None => (None, None),
    };
    c.execute(
        "UPDATE pull_state SET last_attempt=?2,
           last_success=CASE WHEN CAST(?3 AS TEXT) IS NULL THEN ?2 ELSE last_success END,
           last_error_code=?3, last_error=?4, duration_ms=?5, bytes=?6, pulled_by=?7,
           pulls=pulls+1,
           failures=failures + CASE WHEN CAST(?3 AS TEXT) IS NULL THEN 0 ELSE 1 END,
           lease_owner=CASE WHEN lease_owner=CAST(?7 AS TEXT) THEN NULL ELSE lease_owner END,
           lease_until=CASE WHEN lease_owner=CAST(?7 AS TEXT) THEN NULL ELSE lease_until END
         WHERE host=?1",
        params![
            p.host,
            p.attempt_ms,
            code,
            text,
            p.duration_ms,
            p.bytes,
            owner
        ],
    )?;
    Ok(())
}

/// Gives back every lease `owner` holds (a receiver stopping): the others may take those
/// hosts as soon as they are due.
pub fn release_leases(c: &Connection, owner: &str) -> sql::Result<usize> {
    c.execute(
        "UPDATE pull_state SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=?1",
        [owner],
    )
}

/// One row of `pull_state` as health reports read it.
#[derive(Debug, Clone, Default)]
pub struct PullStateRow {
    pub active: bool,
    pub interval_ms: i64,
    pub next_due: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub duration_ms: Option<i64>,
    pub bytes: Option<i64>,
    pub pulled_by: Option<String>,
    pub pulls: i64,
    pub failures: i64,
}

pub fn all_pull_states(c: &Connection) -> sql::Result<HashMap<String, PullStateRow>> {
    c.query(
        "SELECT host, active, interval_ms, next_due, lease_owner, lease_until, last_attempt,
           last_success, last_error_code, last_error, duration_ms, bytes, pulled_by, pulls,
           failures FROM pull_state",
        [],
    )?
    .iter()
    .map(|r| {
        Ok((
            r.get(0)?,
            PullStateRow {
                active: r.get(1)?,
                interval_ms: r.get(2)?,
                next_due: r.get(3)?,
                lease_owner: r.get(4)?,
                lease_until: r.get(5)?,
                last_attempt: r.get(6)?,
                last_success: r.get(7)?,
                last_error_code: r.get(8)?,
                last_error: r.get(9)?,
                duration_ms: r.get(10)?,
                bytes: r.get(11)?,
                pulled_by: r.get(12)?,
                pulls: r.get(13)?,
                failures: r.get(14)?,
            },
        ))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes that bring `pull_state` to `targets` (given here, not read).
    fn changes_for(c: &Connection, targets: &[PullTarget], now_ms: i64) -> ScheduleChanges {
        let hosts = targets_and_hosts(c, now()).unwrap().1;
        schedule_changes(&schedule_rows(c).unwrap(), targets, &hosts, now_ms)
    }

    /// Whether `pull_state` differs from `targets`.
    fn schedule_out_of_date(c: &Connection, targets: &[PullTarget]) -> sql::Result<bool> {
        Ok(!changes_for(c, targets, now_ms()).is_empty())
    }

    /// Brings `pull_state` to `targets` in one go (see [`ScheduleChanges`]). Returns the rows
    /// changed.
    fn sync_schedule(c: &Connection, targets: &[PullTarget], now_ms: i64) -> sql::Result<usize> {
        apply_schedule_changes(c, &changes_for(c, targets, now_ms), now_ms)
    }

    fn db() -> Connection {
        let c = open(&Location::Sqlite(":memory:".into())).unwrap();
        migrate(&c).unwrap();
        c
    }

    fn target(h: &str, iv: i64) -> PullTarget {
        PullTarget {
            host: h.into(),
            uuid: "u".into(),
            address: "127.0.0.1".into(),
            port: 1,
            interval_ms: iv,
        }
    }

    #[test]
    fn claims_are_exclusive_and_advance_by_the_interval() {
        let c = db();
        c.execute_batch(
            "INSERT INTO hosts(name, folder, site, mode, created_at) VALUES('a','/','s','pull-agent',0);
             INSERT INTO hosts(name, folder, site, mode, created_at) VALUES('b','/','s','pull-agent',0);",
        )
        .unwrap();
        let t = [target("a", 1000), target("b", 1000)];
        assert!(schedule_out_of_date(&c, &t).unwrap());
        assert_eq!(sync_schedule(&c, &t, 10_000).unwrap(), 2);
        assert!(!schedule_out_of_date(&c, &t).unwrap());
        // Both first due within one interval.
        let mut got = claim_due(&c, "r1", 11_000, 5000, 10).unwrap();
        got.sort();
        // The lease never outlasts the interval.
        assert_eq!(got, [("a".to_string(), 1000), ("b".to_string(), 1000)]);
        // Leased and not yet due again: nobody gets them.
        assert!(claim_due(&c, "r2", 11_100, 500, 10).unwrap().is_empty());
        record_pull(
            &c,
            "r1",
            &PullRecord {
                host: "a".into(),
                attempt_ms: 11_000,
                error: None,
                duration_ms: 5,
                bytes: 10,
            },
        )
        .unwrap();
        // Due one interval after the claim; b's lease expired, so r2 takes both.
        let mut got = claim_due(&c, "r2", 12_000, 500, 10).unwrap();
        got.sort();
        assert_eq!(got, [("a".to_string(), 500), ("b".to_string(), 500)]);
        let st = all_pull_states(&c).unwrap();
        assert_eq!(st["a"].last_success, Some(11_000));
        assert_eq!(st["a"].lease_owner.as_deref(), Some("r2"));
        assert_eq!(release_leases(&c, "r2").unwrap(), 2);
        // A host that stops being pulled is not claimed any more.
        sync_schedule(&c, &t[..1], 12_000).unwrap();
        assert_eq!(
            claim_due(&c, "r1", 20_000, 500, 10).unwrap(),
            [("a".to_string(), 500)]
        );
    }
}
