//! How often a client may start a renegotiation: a token bucket per
//! session. A client holding a valid certificate could otherwise send
//! P_CONTROL_SOFT_RESET_V1 again as soon as each new key is established,
//! back to back: every one costs the server a full TLS handshake (about a
//! millisecond of CPU) and a session record to the backups.
//!
//! The policy: [`BURST`] renegotiations at once, then one per [`EVERY`].
//! A stock client renegotiates on `reneg-sec` (3600 s by default),
//! `reneg-bytes` or `reneg-pkts`, so a legitimate client is rarely near the
//! limit; one with a small `reneg-bytes` on a busy tunnel may come every
//! few seconds, and is only slowed to one per [`EVERY`], never broken:
//! a refused soft reset is dropped unacknowledged (crate::session), the
//! client's reliability layer resends it 2 s, 6 s, 14 s after its first
//! try, and the first resend after a token came back starts the
//! renegotiation. A token is back at most [`EVERY`] after a refusal, so
//! that is the resend at 6 s, far inside the client's 60 s
//! `hand-window`; meanwhile it keeps sending under its established key,
//! and its key_id stays in step with ours (it moved to the refused one,
//! which is the one we then accept). A refusal that outlasted the
//! hand-window would not be safe: the client gives that key_id up but
//! keeps its counter, so its next soft reset comes with our key_id + 2,
//! which the server never takes (crate::session, `start_key_state`).
//!
//! A flooding client gets at most `BURST + 60 s / EVERY` = 15 handshakes
//! in its first minute and 12 a minute after that: about 12 ms of CPU a
//! minute, instead of one handshake per round trip. Only the client's
//! renegotiations take tokens; the server's own (`reneg-sec`, the
//! renegotiations after a takeover) never do. The bucket is not
//! replicated: a promoted session starts full, so a takeover is never
//! delayed by what the client did on the old master.

use std::time::{Duration, Instant};

/// Renegotiations a client may start back to back: a restarted reneg
/// timer or an auth-token refresh right after a renegotiation passes.
pub const BURST: u32 = 3;
/// One more renegotiation per this time: see the module documentation
/// for why a refused client waits at most this long.
pub const EVERY: Duration = Duration::from_secs(5);

/// The renegotiations a session's client may still start.
#[derive(Debug)]
pub struct RenegLimit {
    tokens: u32,
    /// When the token being earned started to be earned.
    since: Instant,
}

impl RenegLimit {
    /// A full bucket.
    pub fn new(now: Instant) -> RenegLimit {
        RenegLimit { tokens: BURST, since: now }
    }

    /// Takes a token for a renegotiation the client asks for now; false
    /// when none is left (the renegotiation must wait).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        let earned = (elapsed.as_millis() / EVERY.as_millis()).min(u128::from(BURST)) as u32;
        self.tokens = (self.tokens + earned).min(BURST);
        self.since += EVERY * earned;
        if self.tokens == BURST {
            // Full: the next token is earned from the time one is taken.
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_period() {
        let t0 = Instant::now();
        let mut l = RenegLimit::new(t0);
        assert!((0..BURST).all(|_| l.take(t0)), "the burst passes at once");
        assert!(!l.take(t0));
        assert!(!l.take(t0 + EVERY - Duration::from_millis(1)), "not before a period passed");
        assert!(l.take(t0 + EVERY));
        assert!(!l.take(t0 + EVERY), "one token per period");
        // Over a long flood: at most one per period.
        let taken = (1..=1200u32).filter(|i| l.take(t0 + EVERY + Duration::from_millis(50) * *i)).count();
        assert_eq!(taken, 12, "a minute of tries every 50 ms gets 60 s / EVERY");
    }

    #[test]
    fn an_idle_bucket_refills_to_the_burst_only() {
        let t0 = Instant::now();
        let mut l = RenegLimit::new(t0);
        assert!(l.take(t0));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.take(later)).count(), BURST as usize, "an hour's rest earns no more");
        // A client renegotiating every period is never refused.
        assert!((1..=100u32).all(|i| l.take(later + EVERY * i)));
    }

    #[test]
    fn time_going_backwards_takes_nothing_back() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut l = RenegLimit::new(t0);
        assert!(l.take(t0 - Duration::from_secs(5)), "an earlier clock still finds the tokens");
    }
}
