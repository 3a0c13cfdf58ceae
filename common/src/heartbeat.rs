//! Liveness between the parent and its children.
//!
//! A process that is stopped (SIGSTOP) or spins keeps its descriptors
//! open: nothing closes, nothing dies, and neither CARP nor keepalived
//! notices. So the parent sends every child a `Heartbeat` each
//! [`INTERVAL`] and each child answers at once from its event loop. The
//! parent takes a child that has not answered for `watchdog` seconds for
//! hung, demotes the node and goes down; a child that has not heard the
//! parent for as long takes the parent for hung and exits, which closes
//! the tun device (the engine) or the parent's channel (the others), so
//! that keepalived's tun tracking, or the parent once it runs again, sees
//! it. The heartbeat also carries when each child last answered, so that
//! `vpnsyncctl show summary`, served by the engine, can show it.

use std::io;
use std::time::{Duration, Instant};

use crate::codec::{DecodeError, Reader, Writer};
use crate::imsg::ImsgBuf;
use crate::msg::ImsgType;

/// How often the parent sends a heartbeat.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// At most this many children are listed in a heartbeat (there are three).
const MAX_ENTRIES: u32 = 8;

/// When each child last answered, as Unix milliseconds (0: not yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Beats(pub Vec<(String, u64)>);

impl Beats {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.0.len() as u32);
        for (name, ms) in &self.0 {
            w.str(name).u64(*ms);
        }
        w.finish()
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32()?;
        if n > MAX_ENTRIES {
            return Err(DecodeError("too many heartbeat entries"));
        }
        let beats = (0..n).map(|_| Ok((r.str()?.to_owned(), r.u64()?))).collect::<Result<_, DecodeError>>()?;
        Ok(Beats(beats))
    }
}

/// Unix milliseconds now, for the times a heartbeat carries.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A child's view of the parent: when it last sent a heartbeat.
#[derive(Clone, Debug)]
pub struct ParentWatch {
    limit: Duration,
    heard: Instant,
    /// Unix milliseconds of `heard`, for `show summary`.
    heard_ms: u64,
}

impl ParentWatch {
    /// `watchdog` seconds from the configuration; the parent counts as
    /// heard at `now` (the start of the child's event loop).
    pub fn new(watchdog: u32, now: Instant) -> Self {
        ParentWatch { limit: Duration::from_secs(watchdog.into()), heard: now, heard_ms: unix_ms() }
    }

    /// Records a heartbeat from the parent and answers it.
    pub fn on_heartbeat(&mut self, parent: &mut ImsgBuf, now: Instant) -> io::Result<()> {
        self.heard = now;
        self.heard_ms = unix_ms();
        parent.compose(ImsgType::Heartbeat as u32, 0, None, &[])
    }

    /// The limit in seconds (set at start: a reload does not change it).
    pub fn limit_secs(&self) -> u32 {
        self.limit.as_secs() as u32
    }

    /// Unix milliseconds of the last heartbeat from the parent.
    pub fn heard_ms(&self) -> u64 {
        self.heard_ms
    }

    /// How long the child may sleep before it must check again.
    pub fn next_check(&self, now: Instant) -> Duration {
        (self.heard + self.limit).saturating_duration_since(now) + Duration::from_millis(10)
    }

    /// An error, which ends the child, once the parent has been silent
    /// past the limit.
    pub fn check(&self, now: Instant) -> io::Result<()> {
        let silent = now.saturating_duration_since(self.heard);
        if silent <= self.limit {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no heartbeat from the parent for {:.1} s (watchdog {} s): the parent is hung; exiting so that the node goes down",
                silent.as_secs_f64(),
                self.limit.as_secs()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_round_trip_and_bounds() {
        let b = Beats(vec![("engine".into(), 1_700_000_000_123), ("syncer".into(), 0)]);
        let bytes = b.encode();
        let mut r = Reader::new(&bytes);
        assert_eq!(Beats::decode(&mut r), Ok(b));
        assert!(r.end().is_ok());
        let mut w = Writer::new();
        w.u32(MAX_ENTRIES + 1);
        assert_eq!(Beats::decode(&mut Reader::new(&w.finish())), Err(DecodeError("too many heartbeat entries")));
        assert!(Beats::decode(&mut Reader::new(&bytes[..bytes.len() - 1])).is_err());
    }

    /// The child exits only past the limit, and each heartbeat is answered
    /// and restarts the count.
    #[test]
    fn a_silent_parent_is_hung_past_the_limit() {
        let t0 = Instant::now();
        let mut w = ParentWatch::new(3, t0);
        assert_eq!(w.limit_secs(), 3);
        assert!(w.check(t0 + Duration::from_millis(2900)).is_ok());
        let e = w.check(t0 + Duration::from_millis(3100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().starts_with("no heartbeat from the parent for 3.1 s (watchdog 3 s)"), "{e}");

        let (ours, theirs) = crate::imsg::socketpair().unwrap();
        let (mut parent, mut end) = (ImsgBuf::new(ours), ImsgBuf::new(theirs));
        w.on_heartbeat(&mut parent, t0 + Duration::from_secs(2)).unwrap();
        assert!(w.check(t0 + Duration::from_millis(4900)).is_ok());
        assert!(w.check(t0 + Duration::from_millis(5100)).is_err());
        assert_eq!(w.next_check(t0 + Duration::from_secs(4)), Duration::from_millis(1010));
        parent.flush().unwrap();
        end.read().unwrap();
        let answers: Vec<u32> = end.buffered().unwrap().iter().map(|m| m.hdr.ty).collect();
        assert_eq!(answers, [ImsgType::Heartbeat as u32]);
    }
}
