//! Who may start a session: the first packet of a client costs a TLS
//! session (a few KB) before anything about the client is proven, so that
//! state is bounded apart from `max clients`. A session is half-open until
//! its first key exchange is done; half-open sessions are capped in total
//! and per source IP, and never displace an established one. With
//! tls-auth/tls-crypt a first packet must also be recent and new: its
//! replay time within [`CLOCK_SLACK`] of ours and its (session id, replay
//! id, time) not seen from any source in the last minute, so one captured
//! reset cannot be replayed from many ports (the session id is part of it:
//! every client starts at replay id 1, and two that start in the same
//! second share the id and time) (OpenVPN's `--replay-window` time argument
//! plays the same role for later packets).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Half-open sessions one source IP may hold.
pub const PER_IP: usize = 4;

/// How far a first packet's replay time may be from our clock either way.
pub const CLOCK_SLACK: u64 = 60;

/// How long a first packet's (id, time) is remembered.
const REMEMBER: Duration = Duration::from_secs(60);

/// First packets remembered at most (the oldest goes first): only
/// packets that authenticated are kept, so reaching this takes a flood by
/// a holder of the tls-auth/tls-crypt key.
const RECENT_MAX: usize = 16384;

/// The cap on half-open sessions for a server of `max_clients`.
pub fn half_open_cap(max_clients: u32) -> usize {
    (max_clients as usize / 4).max(64)
}

/// What identifies a first packet: the client's session id, its replay
/// id and time (all three under the packet's authentication).
type Seen = ([u8; 8], u32, u32);

/// Why a first packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its replay time is too far from our clock.
    Stale,
    /// Its (id, time) came already, from this or another address.
    Replayed,
    /// The source IP holds [`PER_IP`] half-open sessions.
    PerIp,
    /// The half-open table is full.
    Full,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Stale => write!(
                f,
                "its tls-auth/tls-crypt time is more than {CLOCK_SLACK} s from ours (a replay, or a wrong clock)"
            ),
            Refused::Replayed => f.write_str("its tls-auth/tls-crypt replay id was seen in the last minute (a replay)"),
            Refused::PerIp => write!(f, "{PER_IP} handshakes from this address are unfinished already"),
            Refused::Full => f.write_str("too many unfinished handshakes (half-open sessions)"),
        }
    }
}

/// The half-open sessions (by peer-id, with their source IP) and the
/// first packets seen lately.
#[derive(Debug, Default)]
pub struct Admission {
    half: HashMap<u32, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
    recent: VecDeque<(Instant, Seen)>,
    seen: HashSet<Seen>,
}

impl Admission {
    /// Checks an authenticated first packet of client session `sid`, with
    /// replay id `(id, time)`, at `mono` (`unix`: Unix seconds) and
    /// remembers it. Call it only when a wrapping authenticated the packet
    /// (without one there is no replay id and the session id is anyone's).
    pub fn first_packet(&mut self, mono: Instant, unix: u64, (sid, id, time): Seen) -> Result<(), Refused> {
        if unix.abs_diff(u64::from(time)) > CLOCK_SLACK {
            return Err(Refused::Stale);
        }
        while let Some(&(t, old)) = self.recent.front() {
            if mono.saturating_duration_since(t) < REMEMBER && self.recent.len() < RECENT_MAX {
                break;
            }
            self.recent.pop_front();
            self.seen.remove(&old);
        }
        if !self.seen.insert((sid, id, time)) {
            return Err(Refused::Replayed);
        }
        self.recent.push_back((mono, (sid, id, time)));
        Ok(())
    }

    /// Whether a new half-open session from `ip` fits under `cap`.
    pub fn room(&self, ip: IpAddr, cap: usize) -> Result<(), Refused> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= PER_IP {
            return Err(Refused::PerIp);
        }
        if self.half.len() >= cap {
            return Err(Refused::Full);
        }
        Ok(())
    }

    /// Session `id` from `ip` is half-open.
    pub fn open(&mut self, id: u32, ip: IpAddr) {
        if let Some(old) = self.half.insert(id, ip) {
            self.forget_ip(old);
        }
        *self.per_ip.entry(ip).or_default() += 1;
    }

    /// Session `id` finished its key exchange or ended; true if it was
    /// half-open.
    pub fn close(&mut self, id: u32) -> bool {
        match self.half.remove(&id) {
            Some(ip) => {
                self.forget_ip(ip);
                true
            }
            None => false,
        }
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    pub fn is_half_open(&self, id: u32) -> bool {
        self.half.contains_key(&id)
    }

    /// Half-open sessions now.
    pub fn half_open(&self) -> usize {
        self.half.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_790_000_000;

    #[test]
    fn a_first_packet_is_refused_when_old_or_seen() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        let (s, t) = ([7; 8], T as u32);
        assert_eq!(a.first_packet(t0, T, (s, 1, t - 61)), Err(Refused::Stale));
        assert_eq!(a.first_packet(t0, T, (s, 1, t + 61)), Err(Refused::Stale));
        assert_eq!(a.first_packet(t0, T, (s, 1, t - 60)), Ok(()));
        assert_eq!(a.first_packet(t0, T, (s, 1, t - 60)), Err(Refused::Replayed));
        assert_eq!(a.first_packet(t0, T, (s, 2, t - 60)), Ok(()), "another id");
        assert_eq!(a.first_packet(t0, T, ([8; 8], 1, t - 60)), Ok(()), "another client, same id and time");
        // After a minute it is forgotten, and by then it is stale anyway.
        let later = t0 + REMEMBER;
        assert_eq!(a.first_packet(later, T + 60, (s, 1, t - 60)), Err(Refused::Stale));
        assert_eq!(a.first_packet(later, T + 60, (s, 1, t)), Ok(()));
        assert_eq!(a.recent.len(), 1, "the old entries expired");
    }

    #[test]
    fn the_memory_is_bounded() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        for id in 0..(RECENT_MAX as u32 + 100) {
            assert_eq!(a.first_packet(t0, T, ([1; 8], id, T as u32)), Ok(()));
        }
        assert_eq!(a.recent.len(), RECENT_MAX);
        assert_eq!(a.seen.len(), RECENT_MAX);
    }

    #[test]
    fn half_open_caps_per_ip_and_in_total() {
        let mut a = Admission::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for id in 0..PER_IP as u32 {
            assert_eq!(a.room(ip, 64), Ok(()));
            a.open(id, ip);
        }
        assert_eq!(a.room(ip, 64), Err(Refused::PerIp));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(a.room(other, PER_IP), Err(Refused::Full));
        assert_eq!(a.room(other, 64), Ok(()));
        assert!(a.close(0));
        assert!(!a.close(0), "closed once");
        assert_eq!(a.room(ip, 64), Ok(()));
        assert_eq!(a.half_open(), PER_IP - 1);
        assert_eq!(half_open_cap(250), 64);
        assert_eq!(half_open_cap(1000), 250);
        assert_eq!(Refused::PerIp.to_string(), "4 handshakes from this address are unfinished already");
    }
}
