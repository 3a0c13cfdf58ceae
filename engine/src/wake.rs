//! When a session's timers must run next, for the server's timer queue
//! (crate::timers): the earliest of everything [`Session::on_timer`]
//! checks. The answer may be early (a wasted run costs little) but never
//! late; a session with anything in flight (a handshake, unacknowledged
//! or unsent control packets, a record to send) is due at once, so it
//! runs at every tick, as all sessions did before the queue.

use std::time::{Duration, Instant};

use super::replication::{ghost_lifetime, PROGRESS_REFRESH};
use super::{KeyState, Now, Phase, Session};

impl KeyState {
    /// Control-channel work that the next tick must do (send, resend,
    /// acknowledge, time the handshake out).
    fn in_flight(&self) -> bool {
        self.phase != Phase::Established
            || !self.send_ok
            || !self.rel.all_acked()
            || self.rel.has_acks()
            || !self.tls_out.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

impl Session {
    /// The latest time at which [`Session::on_timer`] must run again
    /// (`now` itself: at the next tick).
    pub fn next_wake(&self, now: Now) -> Instant {
        let soon = now.mono;
        if self.closed.is_some() || !self.outbox.is_empty() || !self.data_out.is_empty() {
            return soon;
        }
        let expiries = self.keys.iter().filter_map(|k| k.expires);
        if self.ghost {
            return expiries.fold(self.synced_at + ghost_lifetime(&self.conf), Instant::min);
        }
        if self.wants_address || self.record_dirty || self.keys.iter().any(KeyState::in_flight) {
            return soon;
        }
        let (ping, timeout) = self.conf.keepalive;
        let mut at = expiries.fold(self.last_recv + Duration::from_secs(timeout.into()), Instant::min);
        if self.virtual_ip.is_some() {
            at = at.min(self.last_send + Duration::from_secs(ping.into()));
            if self.conf.replicated {
                at = at.min(self.progress_sent + PROGRESS_REFRESH);
            }
        }
        if let Some(t) = self.reneg_at {
            at = at.min(t);
        }
        let primary = self.keys.last().and_then(|k| k.established);
        if let Some(t) = primary.filter(|_| self.conf.reneg_sec > 0) {
            at = at.min(t + Duration::from_secs(self.conf.reneg_sec.into()));
        }
        at
    }
}
