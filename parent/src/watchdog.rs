//! The parent's side of the heartbeats (see common/src/heartbeat.rs): one
//! to every child each second, carrying when each child last answered; a
//! child that has not answered within the `watchdog` time is hung, and the
//! node demotes and goes down as on a child's death.

use std::io;
use std::time::{Duration, Instant};

use vpnsyncd_common::heartbeat::{unix_ms, Beats, INTERVAL};
use vpnsyncd_common::msg::ImsgType;

use crate::children::Child;

pub struct Watchdog {
    limit: Duration,
    /// When the next heartbeat is due.
    next: Instant,
}

impl Watchdog {
    /// `watchdog` seconds from the configuration; the first heartbeat goes
    /// at once.
    pub fn new(watchdog: u32, now: Instant) -> Self {
        Watchdog { limit: Duration::from_secs(watchdog.into()), next: now }
    }

    /// How long the main loop may sleep: until the next heartbeat or the
    /// first child's deadline, whichever comes first.
    pub fn timeout(&self, now: Instant, children: &[Child]) -> Duration {
        let first = children.iter().map(|c| c.heard + self.limit).min().map_or(self.next, |d| d.min(self.next));
        first.saturating_duration_since(now) + Duration::from_millis(10)
    }

    /// Sends every child a heartbeat when one is due.
    pub fn beat(&mut self, now: Instant, children: &mut [Child]) -> io::Result<()> {
        if now < self.next {
            return Ok(());
        }
        self.next = now + INTERVAL;
        let beats = Beats(children.iter().map(|c| (c.kind.name().to_string(), c.heard_ms)).collect()).encode();
        for c in children {
            c.ibuf.compose(ImsgType::Heartbeat as u32, 0, None, &beats)?;
        }
        Ok(())
    }

    /// A child answered.
    pub fn answered(child: &mut Child, now: Instant) {
        child.heard = now;
        child.heard_ms = unix_ms();
    }

    /// The first child silent past the limit, and why it counts as hung.
    pub fn hung(&self, now: Instant, children: &[Child]) -> Option<(usize, String)> {
        children.iter().enumerate().find_map(|(i, c)| {
            let silent = now.saturating_duration_since(c.heard);
            (silent > self.limit).then(|| {
                let why = format!(
                    "{} (pid {}) has not answered a heartbeat for {:.1} s (watchdog {} s): it is hung",
                    c.kind.name(),
                    c.pid,
                    silent.as_secs_f64(),
                    self.limit.as_secs()
                );
                (i, why)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::ChildKind;
    use vpnsyncd_common::codec::Reader;
    use vpnsyncd_common::imsg::ImsgBuf;

    fn child(kind: ChildKind, heard: Instant) -> (Child, ImsgBuf) {
        let (ours, theirs) = vpnsyncd_common::imsg::socketpair().unwrap();
        let mut c = Child::new(kind, 7, ImsgBuf::new(ours));
        c.heard = heard;
        (c, ImsgBuf::new(theirs))
    }

    /// Heartbeats go once a second and list each child's last answer; the
    /// child that stops answering is found past the limit, not before.
    #[test]
    fn beats_every_second_and_finds_the_silent_child() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(3, t0);
        let (mut e, mut e_end) = child(ChildKind::Engine, t0);
        let (s, _s_end) = child(ChildKind::Syncer, t0);
        Watchdog::answered(&mut e, t0 + Duration::from_secs(2));
        let mut kids = vec![e, s];
        w.beat(t0 + Duration::from_secs(2), &mut kids).unwrap();
        w.beat(t0 + Duration::from_millis(2500), &mut kids).unwrap();
        kids[0].ibuf.flush().unwrap();
        e_end.read().unwrap();
        let got = e_end.buffered().unwrap();
        assert_eq!(got.len(), 1, "one heartbeat per second");
        assert_eq!(got[0].hdr.ty, ImsgType::Heartbeat as u32);
        let beats = Beats::decode(&mut Reader::new(&got[0].data)).unwrap();
        assert_eq!(beats.0.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["engine", "syncer"]);
        assert!(beats.0[0].1 > 0 && beats.0[1].1 == 0, "{beats:?}");

        assert_eq!(w.timeout(t0 + Duration::from_millis(2500), &kids), Duration::from_millis(510));
        assert!(w.hung(t0 + Duration::from_millis(2900), &kids).is_none());
        let (i, why) = w.hung(t0 + Duration::from_millis(3100), &kids).unwrap();
        assert_eq!(i, 1);
        assert_eq!(why, "syncer (pid 7) has not answered a heartbeat for 3.1 s (watchdog 3 s): it is hung");
    }
}
