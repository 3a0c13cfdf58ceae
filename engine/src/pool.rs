//! The virtual IP pool of the client network (topology subnet): the lowest
//! free address is handed out, and an address can be claimed explicitly so
//! that a backup installing a synced session keeps the client's address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A range of assignable addresses and which of them are taken.
#[derive(Clone, Debug)]
pub struct Pool {
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
}

impl Pool {
    /// The pool `first..=last` (as validated by the configuration).
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        Pool { first: first.into(), last: last.into(), used: BTreeSet::new() }
    }

    /// Takes the lowest free address, if any is left.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let mut candidate = self.first;
        for &u in self.used.range(self.first..=self.last) {
            if u != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= self.last).then(|| {
            self.used.insert(candidate);
            Ipv4Addr::from(candidate)
        })
    }

    /// Takes a specific address; false when it is outside or already taken.
    pub fn claim(&mut self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        (self.first..=self.last).contains(&a) && self.used.insert(a)
    }

    /// Whether `a` lies in the range (a synced record's address must).
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(a))
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&u32::from(a));
    }

    /// Changes the range (reload). Addresses in use stay taken, even when
    /// they now lie outside it, until their sessions end.
    pub fn resize(&mut self, first: Ipv4Addr, last: Ipv4Addr) {
        self.first = first.into();
        self.last = last.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_exhaustion() {
        let mut p = Pool::new(Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 4));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 3)));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 4)));
        assert_eq!(p.allocate(), None);
        p.release(Ipv4Addr::new(10, 8, 0, 3));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 3)));
        assert_eq!(p.allocate(), None, "full again");
    }

    #[test]
    fn claims() {
        let mut p = Pool::new(Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 254));
        assert!(p.claim(Ipv4Addr::new(10, 8, 0, 2)));
        assert!(!p.claim(Ipv4Addr::new(10, 8, 0, 2)), "taken twice");
        assert!(!p.claim(Ipv4Addr::new(10, 8, 0, 1)), "outside the pool");
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 3)));
    }

    #[test]
    fn top_of_address_space() {
        let mut p = Pool::new(Ipv4Addr::new(255, 255, 255, 254), Ipv4Addr::new(255, 255, 255, 255));
        assert!(p.allocate().is_some());
        assert!(p.allocate().is_some());
        assert_eq!(p.allocate(), None);
    }
}
