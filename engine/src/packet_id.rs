//! Packet ids: the per-direction counters that OpenVPN uses for replay
//! protection, both the short form of the data channel (id only) and the long
//! form of tls-auth / tls-crypt (id and a Unix time).
//!
//! The receive side is the "backtrack" window of the protocol reference §3.5
//! and §13.4: a packet is accepted when its id is new and no more than
//! [`ReplayWindow::SIZE`] - 1 below the highest id seen (for the same time).
//! OpenVPN also expires window slots older than 15 s relative to newer packets;
//! we do not, which only accepts (once) a late packet that OpenVPN would drop.
//!
//! Both halves are plain values so that the session record can carry them to
//! a backup: the backup continues with exactly the window the master had.

use std::fmt;

/// Why a received packet id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Id 0 is never sent by a conforming peer.
    Zero,
    /// The long-form time went backwards.
    TimeBacktrack,
    /// The id is below the window.
    TooOld,
    /// The id was already seen.
    Duplicate,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayError::Zero => "packet id 0",
            ReplayError::TimeBacktrack => "packet time went backwards",
            ReplayError::TooOld => "packet id below the replay window",
            ReplayError::Duplicate => "packet id already seen (replay)",
        })
    }
}

impl std::error::Error for ReplayError {}

/// The receive window of one direction of one key (or one wrap context).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Long-form time of the current window (0 for the short form).
    time: u32,
    /// Highest id accepted so far under `time`; 0 when nothing was accepted.
    highest: u32,
    /// Bit `i` set: id `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Window size in packets (OpenVPN's default `--replay-window 64`).
    pub const SIZE: u32 = 64;

    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a window from [`ReplayWindow::parts`], e.g. from a sync record.
    pub fn from_parts(time: u32, highest: u32, seen: u64) -> Self {
        Self { time, highest, seen }
    }

    /// `(time, highest id, seen bitmap)`, for serialisation.
    pub fn parts(&self) -> (u32, u32, u64) {
        (self.time, self.highest, self.seen)
    }

    /// Highest id accepted under the current time.
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// Tells whether `(id, time)` would be accepted, without recording it.
    /// Call this before authenticating, [`ReplayWindow::accept`] after.
    pub fn check(&self, id: u32, time: u32) -> Result<(), ReplayError> {
        if id == 0 {
            return Err(ReplayError::Zero);
        }
        if time < self.time {
            return Err(ReplayError::TimeBacktrack);
        }
        if time > self.time || id > self.highest {
            return Ok(());
        }
        let back = self.highest - id;
        if back >= Self::SIZE {
            return Err(ReplayError::TooOld);
        }
        if self.seen & (1u64 << back) != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Checks and records `(id, time)`.
    pub fn accept(&mut self, id: u32, time: u32) -> Result<(), ReplayError> {
        self.check(id, time)?;
        if time > self.time {
            *self = Self { time, highest: id, seen: 1 };
        } else if id > self.highest {
            let shift = id - self.highest;
            self.seen = if shift >= Self::SIZE { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = id;
        } else {
            self.seen |= 1u64 << (self.highest - id);
        }
        Ok(())
    }
}

/// The packet id counter will not wrap under the current key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketIdExhausted;

impl fmt::Display for PacketIdExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("packet id roll over: the key must be renegotiated")
    }
}

impl std::error::Error for PacketIdExhausted {}

/// The send counter of one direction: the first id sent is 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketIdSend {
    /// Last id handed out (0: none yet).
    last: u32,
    /// Long-form time, fixed at the first use (0 for the short form).
    time: u32,
}

impl PacketIdSend {
    /// Send count from which a renegotiation is due
    /// (OpenVPN's `PACKET_ID_WRAP_TRIGGER`).
    pub const REKEY_TRIGGER: u32 = 0xFF00_0000;

    /// A fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter that continues after `last` (a sync record, or a lease
    /// boundary that a new master must start past).
    pub fn from_parts(last: u32, time: u32) -> Self {
        Self { last, time }
    }

    /// `(last id, time)`, for serialisation.
    pub fn parts(&self) -> (u32, u32) {
        (self.last, self.time)
    }

    /// The next short-form id within a member's send space.
    pub fn next_in(&mut self, space: crate::sendspace::SendSpace) -> Result<u32, PacketIdExhausted> {
        self.last = space.next(self.last).ok_or(PacketIdExhausted)?;
        Ok(self.last)
    }

    /// The next long-form `(id, time)`; `now` is Unix seconds, used to set the
    /// time at first use and to roll over when the ids run out and the clock
    /// has moved on.
    pub fn next_long(&mut self, now: u32) -> Result<(u32, u32), PacketIdExhausted> {
        if self.time == 0 {
            self.time = now;
        }
        match self.last.checked_add(1) {
            Some(id) => self.last = id,
            None if now > self.time => {
                self.time = now;
                self.last = 1;
            }
            None => return Err(PacketIdExhausted),
        }
        Ok((self.last, self.time))
    }

    /// True once the counter has reached [`PacketIdSend::REKEY_TRIGGER`].
    pub fn needs_rekey(&self) -> bool {
        self.last >= Self::REKEY_TRIGGER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused() {
        assert_eq!(ReplayWindow::new().check(0, 0), Err(ReplayError::Zero));
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        for id in 1..=10 {
            w.accept(id, 0).unwrap();
        }
        assert_eq!(w.accept(10, 0), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(1, 0), Err(ReplayError::Duplicate));
        assert_eq!(w.highest(), 10);
    }

    /// The sequence the protocol reference §13.4 injected into a live client.
    #[test]
    fn lab_sequence() {
        let mut w = ReplayWindow::new();
        w.accept(1, 0).unwrap();
        assert_eq!(w.accept(1, 0), Err(ReplayError::Duplicate));
        w.accept(1000, 0).unwrap();
        assert_eq!(w.accept(500, 0), Err(ReplayError::TooOld));
        w.accept(990, 0).unwrap();
        assert_eq!(w.accept(990, 0), Err(ReplayError::Duplicate));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        w.accept(100, 0).unwrap();
        // highest - 63 is the oldest slot still inside the window.
        w.accept(100 - 63, 0).unwrap();
        assert_eq!(w.accept(100 - 64, 0), Err(ReplayError::TooOld));
        // Out of order inside the window, each once.
        w.accept(99, 0).unwrap();
        assert_eq!(w.accept(99, 0), Err(ReplayError::Duplicate));
        // A jump of 64 leaves the old highest just outside the window.
        w.accept(164, 0).unwrap();
        assert_eq!(w.accept(100, 0), Err(ReplayError::TooOld));
        w.accept(101, 0).unwrap();
        assert_eq!(w.accept(101, 0), Err(ReplayError::Duplicate));
        // A huge jump is fine.
        w.accept(u32::MAX, 0).unwrap();
        assert_eq!(w.accept(u32::MAX, 0), Err(ReplayError::Duplicate));
    }

    #[test]
    fn long_form_time() {
        let mut w = ReplayWindow::new();
        w.accept(5, 1000).unwrap();
        assert_eq!(w.accept(6, 999), Err(ReplayError::TimeBacktrack));
        // A newer time restarts the window, even with a lower id.
        w.accept(1, 1001).unwrap();
        assert_eq!(w.accept(5, 1000), Err(ReplayError::TimeBacktrack));
        assert_eq!(w.accept(1, 1001), Err(ReplayError::Duplicate));
    }

    #[test]
    fn parts_round_trip() {
        let mut w = ReplayWindow::new();
        for id in [3, 1, 7, 5] {
            w.accept(id, 42).unwrap();
        }
        let (t, h, s) = w.parts();
        let mut copy = ReplayWindow::from_parts(t, h, s);
        assert_eq!(copy, w);
        assert_eq!(copy.accept(5, 42), Err(ReplayError::Duplicate));
        copy.accept(6, 42).unwrap();
    }

    #[test]
    fn send_counter() {
        let mut s = PacketIdSend::new();
        assert_eq!(s.next_in(crate::sendspace::SendSpace::Any), Ok(1));
        assert_eq!(s.next_in(crate::sendspace::SendSpace::Any), Ok(2));
        let mut s = PacketIdSend::from_parts(u32::MAX - 1, 0);
        assert_eq!(s.next_in(crate::sendspace::SendSpace::Any), Ok(u32::MAX));
        assert_eq!(s.next_in(crate::sendspace::SendSpace::Any), Err(PacketIdExhausted));
        assert!(s.needs_rekey());
        assert!(!PacketIdSend::from_parts(0xFEFF_FFFF, 0).needs_rekey());
    }

    #[test]
    fn send_counter_long_form() {
        let mut s = PacketIdSend::new();
        assert_eq!(s.next_long(500), Ok((1, 500)));
        assert_eq!(s.next_long(900), Ok((2, 500)), "time is fixed at first use");
        let mut s = PacketIdSend::from_parts(u32::MAX, 500);
        assert_eq!(s.next_long(500), Err(PacketIdExhausted));
        assert_eq!(s.next_long(501), Ok((1, 501)));
    }
}
