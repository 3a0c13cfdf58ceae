//! Receive moderation: the software form of a NIC's interrupt coalescing
//! (ethtool's rx-usecs). While clients send TCP data, the engine does not
//! wake for every few datagrams: after a wake-up whose receive batches gave
//! the coalescer (crate::offload) a burst of TCP data segments, it waits up
//! to the hold without watching the tun and the listeners, then reads
//! whatever arrived meanwhile. Fewer wake-ups, fuller recvmmsg batches and
//! longer TCP super-packets to the tun (the coalescer works per batch) are
//! what it buys; what it costs is at most the hold (plus the kernel's
//! timer slack) of added delay while such a flow lasts.
//!
//! Only TCP data from the clients starts it, because that is where it
//! pays. Measured in the lab (docs/DATAPATH.md), holding for the clients'
//! pure ACKs of a download (which nothing merges) or for the tun's
//! super-packets only delayed the ACK clock of the inside host's TCP, which
//! then sent smaller bursts: more CPU per GB, not less. A wake-up with
//! fewer than [`BURST`] segments ends the holding, so the first packet
//! after a quiet moment, keepalives, and interactive traffic are served at
//! once. Nor does it hold while a source still has packets waiting (a
//! turn used up its share, crate::batch::PER_TURN): the hold is for
//! letting a batch fill, and that one is full already. Holding then made
//! the engine a rate limiter of its own, a turn's share per hold, and the
//! senders' TCP kept a standing queue in the listener's socket while the
//! engine sat at a third of a core (docs/BENCHMARKS.md).
//!
//! Only on Linux, whose ppoll(2) sleeps with microsecond precision; a
//! kernel that rounds short sleeps up to its clock tick (OpenBSD's 10 ms)
//! would turn the hold into a stall, so elsewhere it is off.

use std::time::Duration;

use nix::poll::PollFd;

/// The TCP data segments one wake-up must coalesce to start (or keep) the
/// holding.
const BURST: usize = 2;

/// The policy: whether the next wait holds the data descriptors.
pub struct Moderation {
    hold: Duration,
    busy: bool,
    /// A source was left with packets waiting in this wake-up.
    backlog: bool,
}

impl Moderation {
    /// `hold` zero turns moderation off.
    pub fn new(hold: Duration) -> Self {
        let hold = if cfg!(target_os = "linux") { hold } else { Duration::ZERO };
        Moderation { hold, busy: false, backlog: false }
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

    /// A source (a listener, the tun) still had packets waiting when
    /// this wake-up's share of it was used up: the next wait must not hold.
    pub fn backlog(&mut self) {
        self.backlog = true;
    }

    /// The TCP data segments this wake-up gave the coalescer: a burst
    /// starts or keeps the holding, less ends it, and so does a backlog
    /// (then the next wait watches the descriptors, which are ready).
    pub fn saw(&mut self, segments: usize) {
        self.busy = segments >= BURST && !self.backlog;
        self.backlog = false;
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
        m.saw(3);
        assert_eq!(m.holding(), cfg!(target_os = "linux"));
        if m.holding() {
            assert_eq!(m.timeout(Duration::from_secs(1)), US(100), "the hold bounds the wait");
            assert_eq!(m.timeout(US(40)), US(40), "an earlier timer still wins");
        }
        m.saw(1);
        assert!(!m.holding(), "a lone segment is no burst");
        m.saw(2);
        assert_eq!(m.holding(), cfg!(target_os = "linux"));
        m.saw(0);
        assert!(!m.holding(), "a wait that found nothing ends the holding");
    }

    #[test]
    fn a_backlog_ends_the_holding_for_one_wait() {
        let mut m = Moderation::new(US(100));
        m.backlog();
        m.saw(30);
        assert!(!m.holding(), "packets already wait: nothing to hold for");
        m.saw(30);
        assert_eq!(m.holding(), cfg!(target_os = "linux"), "the backlog was of the last wake-up only");
        m.backlog();
        m.saw(0);
        m.saw(5);
        assert_eq!(m.holding(), cfg!(target_os = "linux"), "a backlog is forgotten once seen");
    }

    #[test]
    fn zero_is_off() {
        let mut m = Moderation::new(Duration::ZERO);
        m.saw(10);
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
