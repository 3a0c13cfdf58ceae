//! Backpressure the bgpd way: when a channel's write queue passes its
//! high-water mark ([`crate::imsg::WRITE_HIGH_WATER`]), the process stops
//! reading the source that feeds that channel (it is left out of the poll
//! set) until the peer has taken enough. The kernel then holds, or drops,
//! what the source sends, instead of our memory growing without bound.
//!
//! [`Pause`] tracks one such source and logs once when the pause starts
//! and once when it ends, however many loop iterations it lasts.

/// Whether one source is paused, and the words to log about it.
#[derive(Debug)]
pub struct Pause {
    /// The channel whose queue is watched, e.g. "engine channel".
    channel: &'static str,
    /// The source that stops being read, e.g. "the sync socket".
    source: &'static str,
    paused: bool,
}

impl Pause {
    pub const fn new(channel: &'static str, source: &'static str) -> Pause {
        Pause { channel, source, paused: false }
    }

    /// Takes the channel's current state (`ImsgBuf::over_high_water`) and
    /// says whether the source is to be left unread. Logs on a change only.
    pub fn update(&mut self, over: bool) -> bool {
        if over != self.paused {
            self.paused = over;
            if over {
                log::warn!(
                    "{}: write queue over its high-water mark: {} is not read until it drains",
                    self.channel,
                    self.source
                );
            } else {
                log::info!("{}: write queue drained: reading {} again", self.channel, self.source);
            }
        }
        over
    }

    pub fn paused(&self) -> bool {
        self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_follows_the_queue_and_changes_only_on_a_crossing() {
        let mut p = Pause::new("engine channel", "the sync socket");
        assert!(!p.update(false));
        assert!(!p.paused());
        assert!(p.update(true));
        assert!(p.update(true));
        assert!(p.paused());
        assert!(!p.update(false));
        assert!(!p.paused());
    }
}
