//! The per-sender replay window: the highest sequence number accepted and a
//! 64-slot bitmap below it, as in IPsec (RFC 4303 section 3.4.3).
//!
//! A window rather than "strictly increasing" because UDP may reorder a
//! burst (a bulk answer) and dropping a reordered datagram would lose state.

/// Number of sequence numbers below the highest that are still accepted.
pub const WINDOW: u64 = 64;

#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be accepted. Checked before the (costlier)
    /// authentication; [`ReplayWindow::accept`] follows once it passed.
    /// Sequence numbers start at 1, so 0 is never valid.
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        let age = self.highest - seq;
        age < WINDOW && self.seen & (1 << age) == 0
    }

    /// Records an authenticated `seq` (which passed [`ReplayWindow::check`]).
    pub fn accept(&mut self, seq: u64) {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut ReplayWindow, seq: u64) -> bool {
        let ok = w.check(seq);
        if ok {
            w.accept(seq);
        }
        ok
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        assert!(!take(&mut w, 0));
        assert!(take(&mut w, 1));
        assert!(!take(&mut w, 1));
        assert!(take(&mut w, 100));
        assert!(take(&mut w, 37), "100 - 63 is inside the window");
        assert!(!take(&mut w, 37));
        assert!(!take(&mut w, 36), "100 - 64 is outside the window");
        assert!(take(&mut w, 99));
        assert!(take(&mut w, 300));
        assert!(!take(&mut w, 100));
        assert!(take(&mut w, 299));
        assert!(take(&mut w, u64::MAX));
        assert!(take(&mut w, u64::MAX - 1));
        assert!(!take(&mut w, 300), "a jump past the window forgets nothing old");
    }
}
