//! Registrations (UUID ↔ host links) and the certificates issued for them.
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Registration {
    pub uuid: String,
    pub host: String,
    pub connection_mode: String,
    pub registered_at: i64,
    pub registered_by: String,
    pub revoked_at: Option<i64>,
    /// Latest expiry among the connection's certificates that are not revoked.
    pub cert_not_after: Option<i64>,
}

fn reg_row(r: &sql::Row) -> sql::Result<Registration> {
    Ok(Registration {
        uuid: r.get(0)?,
        host: r.get(1)?,
        connection_mode: r.get(2)?,
        registered_at: r.get(3)?,
        registered_by: r.get(4)?,
        revoked_at: r.get(5)?,
        cert_not_after: r.get(6)?,
    })
}

const REG_SELECT: &str =
    "SELECT r.uuid, r.host, r.mode, r.registered_at, r.registered_by, r.revoked_at,
    (SELECT MAX(not_after) FROM certs c WHERE c.uuid=r.uuid AND c.revoked_at IS NULL)
    FROM registrations r";

pub fn get_registration(c: &Connection, uuid: &str) -> sql::Result<Option<Registration>> {
    c.query_row(&format!("{REG_SELECT} WHERE r.uuid=?1"), [uuid], reg_row)
        .optional()
}

pub fn registrations_of_host(c: &Connection, host: &str) -> sql::Result<Vec<Registration>> {
    let mut st = c.prepare(&format!(
        "{REG_SELECT} WHERE r.host=?1 ORDER BY r.registered_at"
    ))?;
    let rows = st.query_map([host], reg_row)?;
    rows.collect()
}

/// What registering `uuid` for `host` weighs (the host, and the identity lock's
/// registrations), read in one round trip.
pub struct RegistrationContext {
    pub host: Option<Host>,
    /// The registration of the UUID, on whatever host.
    pub of_uuid: Option<Registration>,
    /// Every registration of the host.
    pub of_host: Vec<Registration>,
}

pub fn registration_context(
    c: &Connection,
    host: &str,
    uuid: &str,
) -> sql::Result<RegistrationContext> {
    let rows = c.query_all(&registration_reads(host, uuid))?;
    registration_context_of(&mut rows.into_iter(), host, uuid)
}

/// [`registration_context`]'s reads for [`Db::write_prefetched`]. The keys are the host, the
/// UUID and every host and UUID of the registrations read: all a registration job reads or
/// changes (its registration, the ones it revokes, their certificates).
pub fn registration_prefetch(host: &str, uuid: &str) -> Prefetch {
    let (h, u) = (host.to_string(), uuid.to_string());
    Prefetch {
        reads: registration_reads(host, uuid),
        keys: Box::new(move |rows| {
            let mut keys = vec![format!("host:{h}"), format!("uuid:{u}")];
            for r in rows.get(1).into_iter().flatten() {
                if let Ok(reg) = reg_row(r) {
                    keys.push(format!("host:{}", reg.host));
                    keys.push(format!("uuid:{}", reg.uuid));
                }
            }
            keys
        }),
    }
}

fn registration_reads(host: &str, uuid: &str) -> Vec<(String, Vec<sql::Value>)> {
    vec![
        (
            format!("SELECT {HOST_COLS} FROM hosts WHERE name=?1"),
            vec![sql::Value::Text(host.into())],
        ),
        (
            format!("{REG_SELECT} WHERE r.uuid=?1 OR r.host=?2 ORDER BY r.registered_at"),
            vec![sql::Value::Text(uuid.into()), sql::Value::Text(host.into())],
        ),
    ]
}

/// [`registration_context`] from the rows of its reads, taken from the front of `rows`
/// (what follows them is left for the caller).
pub fn registration_context_of(
    rows: &mut impl Iterator<Item = Vec<sql::Row>>,
    host: &str,
    uuid: &str,
) -> sql::Result<RegistrationContext> {
    let (hosts, regs) = (
        rows.next().unwrap_or_default(),
        rows.next().unwrap_or_default(),
    );
    let host_row = hosts.first().map(host_row).transpose()?;
    let mut of_uuid = None;
    let mut of_host = Vec::new();
    for r in &regs {
        let r = reg_row(r)?;
        if r.uuid == uuid {
            of_uuid = Some(r.clone());
        }
        if r.host == host {
            of_host.push(r);
        }
    }
    Ok(RegistrationContext {
        host: host_row,
        of_uuid,
        of_host,
    })
}

pub fn list_registrations(c: &Connection) -> sql::Result<Vec<Registration>> {
    let mut st = c.prepare(&format!("{REG_SELECT} ORDER BY r.host, r.registered_at"))?;
    let rows = st.query_map([], reg_row)?;
    rows.collect()
}

/// [`Registration::live`] in SQL, for a query that reads `registrations r` with `now` as
/// `?1`: change both together.
pub const LIVE_REGISTRATION_SQL: &str = "r.revoked_at IS NULL AND EXISTS
    (SELECT 1 FROM certs ce WHERE ce.uuid = r.uuid AND ce.revoked_at IS NULL AND ce.not_after > ?1)";

impl Registration {
    /// Live: not revoked and holding a certificate that has not expired.
    pub fn live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.cert_not_after.is_some_and(|t| t > now)
    }
}

/// Records a registration of `uuid` for `host` and its first certificate.
pub fn insert_registration(
    c: &Connection,
    uuid: &str,
    host: &str,
    mode: &str,
    by: &str,
    serial: &str,
    not_after: i64,
) -> sql::Result<()> {
    let t = now();
    // The same UUID registering again (e.g. the controller re-ran registration) replaces its row.
    c.defer(
        "INSERT INTO registrations(uuid, host, mode, registered_at, registered_by, revoked_at)
         VALUES(?1,?2,?3,?4,?5,NULL)
         ON CONFLICT(uuid) DO UPDATE SET host=excluded.host, mode=excluded.mode,
            registered_at=excluded.registered_at, registered_by=excluded.registered_by, revoked_at=NULL",
        params![uuid, host, mode, t, by],
    )?;
    insert_cert(c, serial, uuid, not_after)
}

pub fn insert_cert(c: &Connection, serial: &str, uuid: &str, not_after: i64) -> sql::Result<()> {
    c.defer(
        "INSERT INTO certs(serial, uuid, not_after, issued_at) VALUES(?1,?2,?3,?4)",
        params![serial, uuid, not_after, now()],
    )
}

/// Revokes a registration and every certificate issued to its UUID.
pub fn revoke_registration(c: &Connection, uuid: &str) -> sql::Result<usize> {
    let t = now();
    let n = c.execute(
        "UPDATE registrations SET revoked_at=?2 WHERE uuid=?1 AND revoked_at IS NULL",
        params![uuid, t],
    )?;
    c.execute(
        "UPDATE certs SET revoked_at=?2 WHERE uuid=?1 AND revoked_at IS NULL",
        params![uuid, t],
    )?;
    Ok(n)
}

/// State of a client certificate serial: None = never issued here.
pub fn cert_state(c: &Connection, serial: &str) -> sql::Result<Option<(String, Option<i64>)>> {
    c.query_row(
        "SELECT uuid, revoked_at FROM certs WHERE serial=?1",
        [serial],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}
