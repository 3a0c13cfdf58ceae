//! A takeover in slices. When this member becomes MASTER every ghost it
//! holds is its to serve, but promoting them all in one go kept the loop
//! from reading a single datagram meanwhile: 10,000 ghosts took 0.32 s,
//! and the clients' echoes queued up (docs/BENCHMARKS.md, "Failover with
//! N sessions"). So the role change only queues the ghosts; the loop
//! promotes a bounded slice of them per turn, between its reads, and a
//! queued ghost that its client's authenticated packet or tunnel traffic
//! for it touches first is promoted at once, out of turn.
//!
//! Each queued ghost keeps the renegotiation delay it got in the queue's
//! order, so the copied keys are still replaced evenly over `rekey-window`
//! whichever way a ghost is promoted. The queue holds only ghosts that
//! were in the table at the role change (a later one is promoted by its
//! authenticated packet alone, as before), so it is bounded by the table.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Ghosts promoted per loop turn: about a millisecond of work, so that a
/// turn still reads every listener and the tun device in between.
pub const SLICE: usize = 256;

/// A ghost waiting for its promotion.
struct Waiting {
    /// Its session id: a slot reused by another session is not promoted.
    sid: [u8; 8],
    /// When its copied keys are renegotiated, counted from its promotion.
    reneg_in: Duration,
}

/// The ghosts of one takeover still to promote, and what it did so far.
#[derive(Default)]
pub struct Takeover {
    /// Peer-ids in the order of their slices.
    order: VecDeque<u32>,
    waiting: HashMap<u32, Waiting>,
    /// When the role change came (`None`: no takeover under way).
    started: Option<Instant>,
    /// Ghosts queued at the role change.
    queued: usize,
    /// Promoted out of turn, by their own traffic.
    by_traffic: usize,
    /// Promoted with keys that cannot send (replaced at once).
    replaced_now: usize,
    /// The size of a slice (tests make it small to interleave).
    slice: usize,
}

/// What one slice promoted, for the caller to run.
pub type Due = Vec<(u32, [u8; 8], Duration)>;

impl Takeover {
    /// Queues `ghosts` (peer-id, session id) for promotion, each with its
    /// share of `window` for the renegotiation of its copied keys. A
    /// takeover still under way is replaced (its ghosts are in `ghosts`).
    pub fn start(&mut self, now: Instant, ghosts: Vec<(u32, [u8; 8])>, window: Duration) {
        let n = ghosts.len() as u32;
        self.order.clear();
        self.waiting.clear();
        for (i, (id, sid)) in ghosts.into_iter().enumerate() {
            let reneg_in = window * (i as u32 + 1) / n.max(1);
            self.order.push_back(id);
            self.waiting.insert(id, Waiting { sid, reneg_in });
        }
        self.started = Some(now);
        self.queued = n as usize;
        self.by_traffic = 0;
        self.replaced_now = 0;
    }

    /// Whether ghosts are still waiting: the loop must not sleep.
    pub fn under_way(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Takes ghost `id` (session `sid`) out of the queue because its own
    /// traffic came first: its renegotiation delay, `None` if it was not
    /// queued.
    pub fn claim(&mut self, id: u32, sid: &[u8; 8]) -> Option<Duration> {
        let w = self.waiting.get(&id).filter(|w| &w.sid == sid)?;
        let reneg_in = w.reneg_in;
        self.waiting.remove(&id);
        self.by_traffic += 1;
        Some(reneg_in)
    }

    /// The next slice: at most [`SLICE`] queued ghosts, skipping those
    /// already promoted by their traffic.
    pub fn next_slice(&mut self) -> Due {
        let want = if self.slice == 0 { SLICE } else { self.slice };
        let mut due = Vec::with_capacity(want.min(self.waiting.len()));
        while due.len() < want {
            let Some(id) = self.order.pop_front() else { break };
            if let Some(w) = self.waiting.remove(&id) {
                due.push((id, w.sid, w.reneg_in));
            }
        }
        due
    }

    /// A ghost of this takeover was promoted with keys it cannot send
    /// under (they are replaced at once).
    pub fn note_replaced_now(&mut self) {
        self.replaced_now += 1;
    }

    /// The summary line, once, when the last queued ghost is done.
    pub fn finished(&mut self, now: Instant) -> Option<String> {
        if self.under_way() {
            return None;
        }
        let started = self.started.take()?;
        let ms = now.saturating_duration_since(started).as_millis();
        let mut line = format!(
            "promoted: {} ghost session(s) now live in {ms} ms, {} by their own traffic first",
            self.queued, self.by_traffic
        );
        if self.replaced_now > 0 {
            line.push_str(&format!(", {} with keys replaced at once", self.replaced_now));
        }
        Some(line)
    }

    /// This member is no longer MASTER: the ghosts still queued stay
    /// ghosts. Returns how many.
    pub fn abandon(&mut self) -> usize {
        let left = self.waiting.len();
        self.order.clear();
        self.waiting.clear();
        self.started = None;
        left
    }

    /// Tests: promote `n` ghosts per slice instead of [`SLICE`].
    #[cfg(test)]
    pub fn set_slice(&mut self, n: usize) {
        self.slice = n.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(i: u32) -> [u8; 8] {
        let mut s = [0u8; 8];
        s[..4].copy_from_slice(&i.to_be_bytes());
        s
    }

    #[test]
    fn slices_skip_ghosts_their_traffic_promoted_and_keep_the_spread() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        t.set_slice(2);
        t.start(t0, (0..5).map(|i| (i * 8, sid(i))).collect(), Duration::from_secs(10));
        assert!(t.under_way());
        assert_eq!(t.claim(8, &sid(9)), None, "another session in the slot");
        assert_eq!(t.claim(8, &sid(1)), Some(Duration::from_secs(4)), "its own share of the window");
        assert_eq!(t.claim(8, &sid(1)), None, "once");
        let ids = |d: Due| d.into_iter().map(|(id, _, r)| (id, r.as_secs())).collect::<Vec<_>>();
        assert_eq!(ids(t.next_slice()), vec![(0, 2), (16, 6)]);
        assert_eq!(t.finished(t0), None);
        assert_eq!(ids(t.next_slice()), vec![(24, 8), (32, 10)]);
        assert!(!t.under_way());
        let line = t.finished(t0 + Duration::from_millis(7)).unwrap();
        assert_eq!(line, "promoted: 5 ghost session(s) now live in 7 ms, 1 by their own traffic first");
        assert_eq!(t.finished(t0), None, "said once");
    }

    #[test]
    fn abandoned_ghosts_stay_queued_no_more() {
        let mut t = Takeover::default();
        t.start(Instant::now(), vec![(1, sid(1)), (9, sid(9))], Duration::from_secs(20));
        assert_eq!(t.abandon(), 2);
        assert!(!t.under_way());
        assert_eq!(t.claim(1, &sid(1)), None);
        assert!(t.next_slice().is_empty());
        assert_eq!(t.finished(Instant::now()), None);
    }
}
