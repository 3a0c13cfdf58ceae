//! How long the engine's poll loop sleeps: until the next deadline of the
//! server's timer queue (crate::timers), not a fixed tick, so an idle
//! server wakes for its keepalive events and heartbeats, not N sessions ×
//! 5 times a second.
//!
//! Two bounds keep it honest. Timers run at most once per [`MIN_GAP`]: a
//! session with work in flight (a handshake, unacknowledged packets) is
//! due "at once" (crate::wake), and without the floor the loop would spin
//! while any handshake is under way; with it such sessions run as often as
//! they did under the old 200 ms tick. And the loop sleeps at most
//! [`MAX_SLEEP`], so the parent watchdog (common/src/heartbeat.rs) is
//! checked every second even when no deadline and no heartbeat comes.

use std::time::{Duration, Instant};

/// The shortest time between two runs of the timers.
pub const MIN_GAP: Duration = Duration::from_millis(200);
/// The longest poll timeout: the heartbeat interval.
pub const MAX_SLEEP: Duration = vpnsyncd_common::heartbeat::INTERVAL;

#[derive(Default)]
pub struct Sleep {
    /// When the timers last ran.
    last_run: Option<Instant>,
}

impl Sleep {
    /// When the timers must run for `deadline` (the server's earliest),
    /// no sooner than [`MIN_GAP`] after their last run.
    pub fn run_at(&self, deadline: Option<Instant>) -> Option<Instant> {
        let floor = self.last_run.map(|t| t + MIN_GAP);
        deadline.map(|d| floor.map_or(d, |f| d.max(f)))
    }

    /// The poll timeout at `now`: until the timers are due, at most
    /// [`MAX_SLEEP`]. `deadlines` are the earliest of each source (the
    /// server's queue, the status file, the watchdog).
    pub fn timeout(&self, now: Instant, deadlines: &[Option<Instant>]) -> Duration {
        let earliest = deadlines.iter().flatten().min().copied();
        self.run_at(earliest).map_or(MAX_SLEEP, |t| t.saturating_duration_since(now)).min(MAX_SLEEP)
    }

    /// Whether the timers run now for `deadline`; if so, the run is noted.
    pub fn due(&mut self, now: Instant, deadline: Option<Instant>) -> bool {
        let due = self.run_at(deadline).is_some_and(|t| t <= now);
        if due {
            self.last_run = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sleeps_until_the_deadline_at_most_a_heartbeat() {
        let t0 = Instant::now();
        let s = Sleep::default();
        assert_eq!(s.timeout(t0, &[Some(t0 + ms(350)), None]), ms(350));
        assert_eq!(s.timeout(t0, &[Some(t0 + ms(900)), Some(t0 + ms(600))]), ms(600), "the earliest source");
        assert_eq!(s.timeout(t0, &[None]), MAX_SLEEP, "nothing queued: the watchdog's second");
        assert_eq!(s.timeout(t0, &[Some(t0 + Duration::from_secs(9))]), MAX_SLEEP);
        assert_eq!(s.timeout(t0 + ms(500), &[Some(t0)]), Duration::ZERO, "a passed deadline: at once");
    }

    #[test]
    fn work_due_at_once_runs_no_more_often_than_the_gap() {
        let t0 = Instant::now();
        let mut s = Sleep::default();
        assert!(s.due(t0, Some(t0)), "the first run is not held back");
        assert!(!s.due(t0 + ms(50), Some(t0 + ms(50))), "due at once, but within the gap");
        assert_eq!(s.timeout(t0 + ms(50), &[Some(t0 + ms(50))]), ms(150));
        assert!(s.due(t0 + MIN_GAP, Some(t0 + ms(50))));
        assert!(!s.due(t0 + ms(900), None), "nothing queued: nothing to run");
        assert!(!s.due(t0 + ms(900), Some(t0 + ms(901))), "a deadline ahead is not due");
    }
}
