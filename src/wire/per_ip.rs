//! Counting open connections per source address, as both listeners (the agent's pull server
//! and the receiver) cap them. A slot is held for as long as its guard lives.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts held slots per source address; clones share the counts.
#[derive(Clone, Default)]
pub struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One held slot; dropping it frees the slot.
pub struct Slot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for `ip` (IPv4-mapped IPv6 counts as IPv4), unless `max` are already held.
    pub fn acquire(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                m.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            map: self.clone(),
            ip,
        })
    }

    /// Slots held by `ip` now.
    pub fn held(&self, ip: IpAddr) -> usize {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_frees_on_drop() {
        let p = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = p.acquire(a, 2).unwrap();
        let _s2 = p.acquire(mapped, 2).unwrap();
        assert!(p.acquire(a, 2).is_none());
        assert!(p.acquire(b, 2).is_some());
        drop(s1);
        assert_eq!(p.held(a), 1);
        assert!(p.acquire(a, 2).is_some());
        assert!(p.acquire(b, 0).is_none());
        assert!(p.0.lock().unwrap().get(&b).is_none());
    }
}
