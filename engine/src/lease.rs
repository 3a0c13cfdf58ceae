//! Leases: common name -> tunnel address, so that a client gets its
//! address back when it reconnects, here or on another member after a
//! failover (the role of OpenVPN's ifconfig-pool-persist). Every member
//! learns a lease from the session records it receives (the record carries
//! the common name and the address), and keeps it after the session ends.
//!
//! Bounded: at most [`MAX_LEASES`]; when full, the lease unused longest
//! goes. A lease of a disconnected client expires after [`LEASE_LIFE`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const MAX_LEASES: usize = 16384;
/// A day: a laptop that comes back the next morning keeps its address.
pub const LEASE_LIFE: Duration = Duration::from_secs(86400);

#[derive(Debug, Default)]
pub struct Leases {
    by_cn: HashMap<String, (Ipv4Addr, Instant)>,
    /// The newest holder of each leased address.
    by_ip: HashMap<Ipv4Addr, String>,
}

impl Leases {
    /// `cn` holds (or held) `ip` as of `now`.
    pub fn set(&mut self, cn: &str, ip: Ipv4Addr, now: Instant) {
        if !self.by_cn.contains_key(cn) && self.by_cn.len() >= MAX_LEASES {
            if let Some(old) = self.by_cn.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                self.forget(&old);
            }
        }
        self.forget(cn);
        self.by_cn.insert(cn.to_string(), (ip, now));
        self.by_ip.insert(ip, cn.to_string());
    }

    fn forget(&mut self, cn: &str) {
        if let Some((ip, _)) = self.by_cn.remove(cn) {
            if self.by_ip.get(&ip).is_some_and(|o| o == cn) {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// The address leased to `cn`, unless it expired.
    pub fn get(&self, cn: &str, now: Instant) -> Option<Ipv4Addr> {
        self.by_cn.get(cn).filter(|(_, t)| now.saturating_duration_since(*t) < LEASE_LIFE).map(|(ip, _)| *ip)
    }

    /// Whether `ip` is leased, unexpired, to someone other than `cn`.
    pub fn held_by_other(&self, ip: Ipv4Addr, cn: &str, now: Instant) -> bool {
        self.by_ip.get(&ip).is_some_and(|o| o != cn && self.get(o, now) == Some(ip))
    }

    pub fn len(&self) -> usize {
        self.by_cn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_expired_and_bounded() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        let a = Ipv4Addr::new(10, 8, 0, 7);
        l.set("alice", a, t0);
        assert_eq!(l.get("alice", t0 + Duration::from_secs(3600)), Some(a));
        assert!(l.held_by_other(a, "bob", t0));
        assert!(!l.held_by_other(a, "alice", t0));
        assert_eq!(l.get("alice", t0 + LEASE_LIFE), None, "expired");
        for i in 0..MAX_LEASES as u32 {
            l.set(&format!("c{i}"), Ipv4Addr::from(i), t0 + Duration::from_secs(1 + u64::from(i)));
        }
        assert_eq!(l.len(), MAX_LEASES);
        assert_eq!(l.get("alice", t0), None, "the oldest went first");
        assert_eq!(l.get("c0", t0), Some(Ipv4Addr::from(0)));
    }
}
