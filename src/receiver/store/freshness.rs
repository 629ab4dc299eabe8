//! How often a host is expected to deliver output, and when its output is stale. The
//! interval is the host's own (`hosts.pull_interval`), else the nearest folder's up the
//! tree (`folders.pull_interval`), else the site's (`settings.pull_interval`), else 60 s.
//! Both the scheduler and `agent-data` read it here, so they agree on "stale".
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

/// The interval in seconds that applies to a host in `folder` with its own `own` setting.
pub fn interval_for(c: &Connection, folder: &str, own: Option<i64>) -> sql::Result<i64> {
    if let Some(v) = own.filter(|v| *v > 0) {
        return Ok(v);
    }
    for p in folder_ancestry(folder).iter().rev() {
        let v: Option<i64> = c
            .query_row(
                "SELECT pull_interval FROM folders WHERE path=?1",
                [p.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if let Some(v) = v.filter(|v| *v > 0) {
            return Ok(v);
        }
    }
    site_interval(c)
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
