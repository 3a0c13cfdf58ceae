//! Receive moderation: the software form of a NIC's interrupt coalescing
//! (ethtool's rx-usecs). While data flows, the engine does not wake for
//! every datagram or tun packet: after a wake-up that moved packets, it
//! waits up to [`Moderation::hold`] without watching the data descriptors,
//! then reads whatever arrived meanwhile in one batch. Fewer wake-ups, fuller
//! recvmmsg batches, and longer TCP super-packets to the tun (the coalescer
//! works per batch) are what it buys; what it costs is at most `hold` of
//! added delay for packets that arrive while traffic is flowing. The first
//! packet after a quiet period is served at once: a wait that finds
//! nothing ends the holding, and the next poll watches every descriptor.
//! A wake-up that moved a single packet (a keepalive ping, a lone ACK)
//! does not start it either, so an idle server's keepalive traffic costs
//! one wake-up a packet, not two.
//!
//! Only on Linux, whose ppoll(2) sleeps with microsecond precision; a
//! kernel that rounds short sleeps up to its clock tick (OpenBSD's 10 ms)
//! would turn the hold into a stall, so elsewhere it is off.

use std::time::Duration;

use nix::poll::PollFd;

/// The packets one wake-up must move to start (or keep) the holding.
const BURST: usize = 2;

/// The policy: whether the next wait holds the data descriptors.
pub struct Moderation {
    hold: Duration,
    busy: bool,
}

impl Moderation {
    /// `hold` zero turns moderation off.
    pub fn new(hold: Duration) -> Self {
        let hold = if cfg!(target_os = "linux") { hold } else { Duration::ZERO };
        Moderation { hold, busy: false }
    }

    /// True when the next wait leaves the data descriptors out and they
    /// are read after it whether or not they are ready.
    pub fn holding(&self) -> bool {
        self.busy && !self.hold.is_zero()
    }

    /// The wait's timeout: `wait` (the timers' and the watchdog's), no
    /// longer than the hold while holding.
    pub fn timeout(&self, wait: Duration) -> Duration {
        if self.holding() {
            wait.min(self.hold)
        } else {
            wait
        }
    }

    /// What the data descriptors moved in this wake-up: a burst starts or
    /// keeps the holding, less ends it.
    pub fn moved(&mut self, packets: usize) {
        self.busy = packets >= BURST;
    }
}

/// poll(2) with a timeout of microsecond precision where the platform has
/// ppoll (Linux), else rounded up to whole milliseconds.
pub fn wait(fds: &mut [PollFd<'_>], timeout: Duration) -> nix::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        nix::poll::ppoll(fds, Some(nix::sys::time::TimeSpec::from_duration(timeout)), None)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let ms = timeout.as_micros().div_ceil(1000);
        let t =
            nix::poll::PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(nix::poll::PollTimeout::MAX);
        nix::poll::poll(fds, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn holds_only_while_packets_move() {
        let mut m = Moderation::new(US(100));
        assert!(!m.holding(), "the first wait watches every descriptor");
        assert_eq!(m.timeout(Duration::from_secs(1)), Duration::from_secs(1));
        m.moved(3);
        assert_eq!(m.holding(), cfg!(target_os = "linux"));
        if m.holding() {
            assert_eq!(m.timeout(Duration::from_secs(1)), US(100), "the hold bounds the wait");
            assert_eq!(m.timeout(US(40)), US(40), "an earlier timer still wins");
        }
        m.moved(1);
        assert!(!m.holding(), "a lone packet is no burst");
        m.moved(2);
        assert_eq!(m.holding(), cfg!(target_os = "linux"));
        m.moved(0);
        assert!(!m.holding(), "a wait that found nothing ends the holding");
    }

    #[test]
    fn zero_is_off() {
        let mut m = Moderation::new(Duration::ZERO);
        m.moved(10);
        assert!(!m.holding());
    }

    #[test]
    fn the_wait_sleeps_about_its_timeout() {
        let t = std::time::Instant::now();
        wait(&mut [], US(2000)).unwrap();
        let took = t.elapsed();
        assert!(took >= US(2000), "slept {took:?}");
        assert!(took < Duration::from_millis(500), "slept {took:?}");
    }
}
