//! Which accepted TCP connections the receiver takes on: a global cap on open connections
//! and a per-source-address cap on open connections, both refused before any TLS (a flood
//! costs one accept each; refusals are logged at most once a second per kind), and per source
//! address a cap on TLS handshakes in progress. A handshake over that cap waits for a slot
//! (within the handshake timeout) instead of being reset: a burst from one address (a NAT, an
//! Ansible controller with many forks) is smoothed, while the key-exchange work one address
//! can demand at once stays bounded.
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::wire::per_ip::{PerIp, Slot};

/// The caps (`serve --max-connections`, `--max-connections-per-ip`,
/// `--max-handshakes-per-ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub connections: usize,
    pub connections_per_ip: usize,
    pub handshakes_per_ip: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            connections: 4096,
            connections_per_ip: 256,
            handshakes_per_ip: 32,
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Connections,
    ConnectionsPerIp,
}

impl Refused {
    fn what(self) -> &'static str {
        match self {
            Refused::Connections => "the receiver's connection limit (--max-connections)",
            Refused::ConnectionsPerIp => {
                "its address's connection limit (--max-connections-per-ip)"
            }
        }
    }
}

/// What an admitted connection holds; dropping it frees the slots.
pub struct Admitted {
    _conn: OwnedSemaphorePermit,
    _ip_conn: Slot,
    ip: std::net::IpAddr,
}

/// A TLS handshake slot of one source address; dropping it wakes the waiting handshakes.
pub struct HandshakeSlot {
    slot: Option<Slot>,
    freed: Arc<Notify>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.slot = None;
        self.freed.notify_waiters();
    }
}

pub struct Admission {
    caps: Caps,
    conns: Arc<Semaphore>,
    per_ip: PerIp,
    handshakes: PerIp,
    freed: Arc<Notify>,
    log: [RefusalLog; 2],
}

impl Admission {
    pub fn new(caps: Caps) -> Admission {
        Admission {
            caps,
            conns: Arc::new(Semaphore::new(caps.connections)),
            per_ip: PerIp::default(),
            handshakes: PerIp::default(),
            freed: Arc::new(Notify::new()),
            log: Default::default(),
        }
    }

    /// Waits until the connection's address has a free handshake slot (the caller bounds
    /// the wait with the handshake timeout).
    pub async fn handshake(&self, conn: &Admitted) -> HandshakeSlot {
        loop {
            // Registered before the attempt, so a slot freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self
                .handshakes
                .acquire(conn.ip, self.caps.handshakes_per_ip)
            {
                return HandshakeSlot {
                    slot: Some(slot),
                    freed: self.freed.clone(),
                };
            }
            freed.await;
        }
    }

    /// Admits a connection from `ip`, or logs (rate-limited) why not.
    pub fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let r = self.try_admit(ip);
        if let Err(why) = r {
            self.log[why as usize].refused(ip, why);
        }
        r.ok()
    }

    fn try_admit(&self, ip: IpAddr) -> Result<Admitted, Refused> {
        let conn = self
            .conns
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Connections)?;
        let ip_conn = self
            .per_ip
            .acquire(ip, self.caps.connections_per_ip)
            .ok_or(Refused::ConnectionsPerIp)?;
        Ok(Admitted {
            _conn: conn,
            _ip_conn: ip_conn,
            ip,
        })
    }
}

/// One warning per second at most, counting the refusals it stood for.
#[derive(Default)]
struct RefusalLog {
    /// Milliseconds since `EPOCH` of the last warning, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
const LOG_EVERY: Duration = Duration::from_secs(1);

impl RefusalLog {
    fn refused(&self, ip: IpAddr, why: Refused) {
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if !due
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let more = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %ip,
            refused_since_last_warning = more,
            "connection refused: over {}",
            why.what()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_connections_and_queues_handshakes() {
        let a = Admission::new(Caps {
            connections: 4,
            connections_per_ip: 3,
            handshakes_per_ip: 2,
        });
        let x: IpAddr = "192.0.2.1".parse().unwrap();
        let y: IpAddr = "192.0.2.2".parse().unwrap();
        let c1 = a.admit(x).unwrap();
        let c2 = a.admit(x).unwrap();
        let c3 = a.admit(x).unwrap();
        assert_eq!(a.try_admit(x).err(), Some(Refused::ConnectionsPerIp));
        let h1 = a.handshake(&c1).await;
        let _h2 = a.handshake(&c2).await;
        // The third handshake of x waits until one of the first two is done...
        let wait = tokio::time::timeout(Duration::from_millis(50), a.handshake(&c3));
        assert!(wait.await.is_err());
        // ...while y's does not wait at all.
        let c4 = a.admit(y).unwrap();
        let _h4 = a.handshake(&c4).await;
        assert_eq!(a.try_admit(y).err(), Some(Refused::Connections));
        let (third, ()) = tokio::join!(a.handshake(&c3), async move { drop(h1) });
        drop(third);
        drop(c1);
        assert!(a.admit(y).is_some());
    }
}
