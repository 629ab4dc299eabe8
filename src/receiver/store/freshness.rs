//! How often a host is expected to deliver output, and when its output is stale. The
//! interval is the host's own (`hosts.pull_interval`), else the nearest folder's up the
//! tree (`folders.pull_interval`), else the site's (`settings.pull_interval`), else 60 s.
//! Both the scheduler and `agent-data` read it here, so they agree on "stale".
use std::collections::HashMap;

use super::*;

/// Seconds between pulls when nothing overrides it.
pub const DEFAULT_PULL_INTERVAL: i64 = 60;
/// The settings key of the site-wide interval (seconds).
pub const PULL_INTERVAL_SETTING: &str = "pull_interval";

/// The site-wide interval in seconds.
pub fn site_interval(c: &Connection) -> sql::Result<i64> {
    Ok(get_setting(c, PULL_INTERVAL_SETTING)?
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_PULL_INTERVAL))
}

/// The intervals folders set themselves (seconds, by path); unset or 0 means inherited.
pub fn folder_intervals(c: &Connection) -> sql::Result<HashMap<String, i64>> {
    c.query(
        "SELECT path, pull_interval FROM folders WHERE pull_interval > 0",
        [],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .collect()
}

/// The rule itself: the host's own interval, else the nearest folder's up the tree, else
/// the site's. One place, so the scheduler, `hosts health` and `agent-data` agree.
pub fn resolve_interval(
    own: Option<i64>,
    folder: &str,
    folders: &HashMap<String, i64>,
    site: i64,
) -> i64 {
    own.filter(|v| *v > 0).unwrap_or_else(|| {
        folder_ancestry(folder)
            .iter()
            .rev()
            .find_map(|p| folders.get(p).copied())
            .unwrap_or(site)
    })
}

/// The interval in seconds that applies to a host in `folder` with its own `own` setting.
pub fn interval_for(c: &Connection, folder: &str, own: Option<i64>) -> sql::Result<i64> {
    Ok(resolve_interval(
        own,
        folder,
        &folder_intervals(c)?,
        site_interval(c)?,
    ))
}

/// The interval in seconds of a host (the site's when the host does not exist).
pub fn host_interval(c: &Connection, host: &str) -> sql::Result<i64> {
    let row: Option<(String, Option<i64>)> = c
        .query_row(
            "SELECT folder, pull_interval FROM hosts WHERE name=?1",
            [host],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        Some((folder, own)) => interval_for(c, &folder, own),
        None => site_interval(c),
    }
}

/// Output received at `received_at` is stale at `now` once it is older than 1.5 intervals.
pub fn is_stale(received_at: i64, interval: i64, now: i64) -> bool {
    (now - received_at) * 2 > interval * 3
}

/// The age (seconds) beyond which output is stale, for messages; [`is_stale`] decides.
pub fn stale_after(interval: i64) -> i64 {
    interval * 3 / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_one_and_a_half_intervals() {
        assert!(!is_stale(1000, 60, 1090));
        assert!(is_stale(1000, 60, 1091));
    }

    #[test]
    fn host_then_folder_then_site() {
        let c = open(&Location::Sqlite(":memory:".into())).unwrap();
        migrate(&c).unwrap();
        assert_eq!(host_interval(&c, "nosuch").unwrap(), DEFAULT_PULL_INTERVAL);
        set_setting(&c, PULL_INTERVAL_SETTING, "120").unwrap();
        c.execute_batch(
            "INSERT INTO folders(path, pull_interval) VALUES('/a', 30);
             INSERT INTO hosts(name, folder, site, mode, created_at) VALUES('h1','/a/b','s','pull-agent',0);
             INSERT INTO hosts(name, folder, site, mode, created_at, pull_interval) VALUES('h2','/a','s','pull-agent',0,10);
             INSERT INTO hosts(name, folder, site, mode, created_at) VALUES('h3','/','s','pull-agent',0);",
        )
        .unwrap();
        assert_eq!(host_interval(&c, "h1").unwrap(), 30);
        assert_eq!(host_interval(&c, "h2").unwrap(), 10);
        assert_eq!(host_interval(&c, "h3").unwrap(), 120);
    }
}
