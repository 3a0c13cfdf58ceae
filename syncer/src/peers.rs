//! The other members: learned from their datagrams (multicast) or
//! configured (unicast), with what their heartbeats said.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vpnsyncd_common::ctl::PeerInfo;
use vpnsyncd_common::msg::Role;

use crate::core::HEARTBEAT;

/// A peer silent for three heartbeats is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    /// Its member number (from its boot id); 0 until heard.
    member: u8,
    /// When we last accepted a datagram from it (monotonic, for timers).
    heard: Option<Instant>,
    /// The same in Unix seconds, for `show sync`.
    heard_unix: u64,
    role: Role,
    /// Its last heartbeat said its table is complete.
    complete: bool,
}

#[derive(Debug, Default)]
pub struct Peers(Vec<Peer>);

impl Peers {
    /// Starts with the configured unicast peers, never heard yet.
    pub fn new(configured: &[SocketAddr]) -> Peers {
        Peers(configured.iter().map(|&a| Peer::new(a)).collect())
    }

    /// Notes an authenticated datagram from member `member` at `addr`.
    pub fn heard(&mut self, addr: SocketAddr, member: u8, now: Instant, unix: u64) {
        let i = match self.0.iter().position(|p| p.addr == addr) {
            Some(i) => i,
            None => {
                self.0.push(Peer::new(addr));
                self.0.len() - 1
            }
        };
        let p = &mut self.0[i];
        if p.heard.is_none() {
            log::info!("sync peer {addr} first heard");
        }
        p.heard = Some(now);
        p.heard_unix = unix;
        p.member = member;
    }

    /// Records a heartbeat of a peer already [`Peers::heard`].
    pub fn heartbeat(&mut self, addr: SocketAddr, role: Role, complete: bool) {
        if let Some(p) = self.0.iter_mut().find(|p| p.addr == addr) {
            p.role = role;
            p.complete = complete;
        }
    }

    /// The role `addr`'s last heartbeat gave.
    pub fn role(&self, addr: SocketAddr) -> Option<Role> {
        self.0.iter().find(|p| p.addr == addr).map(|p| p.role)
    }

    /// Whether a peer that can answer a bulk request was heard within
    /// `within`: if not, a joining member is alone and starts complete.
    pub fn complete_heard(&self, now: Instant, within: Duration) -> bool {
        self.0.iter().any(|p| p.complete && p.heard.is_some_and(|t| now.saturating_duration_since(t) < within))
    }

    /// Whether a complete member numbered below `member` was heard within
    /// `within` (it answers bulk requests when no master does).
    pub fn lower_complete_heard(&self, member: u8, now: Instant, within: Duration) -> bool {
        self.0.iter().any(|p| {
            p.member < member && p.complete && p.heard.is_some_and(|t| now.saturating_duration_since(t) < within)
        })
    }

    /// `show sync`: a peer heard once but silent for [`LOST_AFTER`] is
    /// flagged lost, so that a dead master is not shown as master.
    pub fn info(&self, now: Instant) -> Vec<PeerInfo> {
        self.0
            .iter()
            .map(|p| PeerInfo {
                address: p.addr.to_string(),
                last_heard: p.heard_unix,
                role: p.role,
                lost: p.heard.is_some_and(|t| now.saturating_duration_since(t) >= LOST_AFTER),
            })
            .collect()
    }
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        Peer { addr, member: 0, heard: None, heard_unix: 0, role: Role::Init, complete: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_lost_not_master() {
        let a: SocketAddr = "198.18.0.2:1196".parse().unwrap();
        let never: SocketAddr = "198.18.0.3:1196".parse().unwrap();
        let mut p = Peers::new(&[never]);
        let t0 = Instant::now();
        p.heard(a, 2, t0, 1000);
        p.heartbeat(a, Role::Master, true);
        let at = |p: &Peers, t: Instant| p.info(t).into_iter().map(|i| (i.role, i.lost)).collect::<Vec<_>>();
        let just_before = t0 + LOST_AFTER - Duration::from_millis(1);
        assert_eq!(at(&p, just_before), [(Role::Init, false), (Role::Master, false)]);
        assert_eq!(at(&p, t0 + LOST_AFTER), [(Role::Init, false), (Role::Master, true)]);
        // Heard again: back.
        p.heard(a, 2, t0 + LOST_AFTER, 1003);
        assert_eq!(at(&p, t0 + LOST_AFTER + Duration::from_secs(1)), [(Role::Init, false), (Role::Master, false)]);
        assert_eq!(LOST_AFTER, Duration::from_secs(3));
    }
}
