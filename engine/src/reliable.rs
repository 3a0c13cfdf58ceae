//! The reliability layer of the control channel (protocol reference §5):
//! message packet-ids, in-order delivery to TLS, acknowledgements, and
//! retransmission with a doubling timeout. One per key state; sans-IO, the
//! caller passes the time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::Opcode;

/// At most this many of our packets are unacknowledged: 2.4/2.5 clients
/// have a receive window of 8 and drop (without acknowledging) anything
/// beyond it, so stay at the 2.6 value.
pub const SEND_WINDOW: u32 = 6;
/// We buffer this many out-of-order packets, as a 2.6 peer does.
pub const RECV_WINDOW: u32 = 12;
/// The first retransmission timeout (`--tls-timeout`).
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A packet is resent early once this many later packets were acknowledged.
const ACKS_BEFORE_FAST_RETRANSMIT: u8 = 3;

struct Outgoing {
    pid: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    /// `None` until first sent.
    due: Option<Instant>,
    timeout: Duration,
    later_acks: u8,
}

/// What became of a received reliable packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored for delivery; to be acknowledged.
    New,
    /// Seen before; acknowledged again (our ACK may have been lost).
    Duplicate,
    /// Too far ahead of what we expect: dropped and not acknowledged.
    OutOfWindow,
}

/// A packet to put on the wire now.
pub struct Transmit<'a> {
    pub pid: u32,
    pub opcode: Opcode,
    pub payload: &'a [u8],
}

#[derive(Default)]
pub struct Reliable {
    next_send: u32,
    outgoing: VecDeque<Outgoing>,
    next_recv: u32,
    incoming: BTreeMap<u32, (Opcode, Vec<u8>)>,
    /// Message ids to acknowledge, most recent first.
    acks: VecDeque<u32>,
}

impl Reliable {
    pub fn new() -> Reliable {
        Reliable::default()
    }

    /// Records a reliable packet from the peer.
    pub fn receive(&mut self, pid: u32, opcode: Opcode, payload: Vec<u8>) -> Received {
        if pid >= self.next_recv.saturating_add(RECV_WINDOW) {
            return Received::OutOfWindow;
        }
        self.queue_ack(pid);
        if pid < self.next_recv || self.incoming.contains_key(&pid) {
            return Received::Duplicate;
        }
        self.incoming.insert(pid, (opcode, payload));
        Received::New
    }

    fn queue_ack(&mut self, pid: u32) {
        if !self.acks.contains(&pid) {
            self.acks.push_front(pid);
        }
    }

    /// Whether the peer sent anything in this sequence yet.
    pub fn heard(&self) -> bool {
        self.next_recv > 0 || !self.incoming.is_empty()
    }

    /// The next packet in msg_pid order, if it has arrived.
    pub fn deliver(&mut self) -> Option<(Opcode, Vec<u8>)> {
        let p = self.incoming.remove(&self.next_recv)?;
        self.next_recv += 1;
        Some(p)
    }

    /// Acknowledgements from the peer. Unknown and repeated ids are normal
    /// (2.6 re-sends recent acks) and ignored.
    pub fn acked(&mut self, ids: &[u32]) {
        for id in ids {
            if let Some(i) = self.outgoing.iter().position(|o| o.pid == *id) {
                self.outgoing.remove(i);
                for o in self.outgoing.iter_mut().filter(|o| o.pid < *id && o.due.is_some()) {
                    o.later_acks = o.later_acks.saturating_add(1);
                }
            }
        }
    }

    /// Whether a new packet fits in the send window.
    pub fn can_send(&self) -> bool {
        self.next_send - self.outgoing.front().map_or(self.next_send, |o| o.pid) < SEND_WINDOW
    }

    /// Queues a new reliable packet; it goes out with the next `transmit`.
    pub fn send(&mut self, opcode: Opcode, payload: Vec<u8>) -> u32 {
        let pid = self.next_send;
        self.next_send += 1;
        self.outgoing.push_back(Outgoing { pid, opcode, payload, due: None, timeout: INITIAL_TIMEOUT, later_acks: 0 });
        pid
    }

    /// Calls `f` for every packet to (re)send now: new ones, those whose
    /// timer expired (the timeout then doubles), and those that later
    /// acknowledgements show lost.
    pub fn transmit(&mut self, now: Instant, mut f: impl FnMut(Transmit<'_>)) {
        for o in self.outgoing.iter_mut() {
            let fast = o.later_acks >= ACKS_BEFORE_FAST_RETRANSMIT;
            match o.due {
                None => o.due = Some(now + o.timeout),
                Some(due) if due <= now || fast => {
                    o.timeout *= 2;
                    o.due = Some(now + o.timeout);
                    o.later_acks = 0;
                }
                Some(_) => continue,
            }
            f(Transmit { pid: o.pid, opcode: o.opcode, payload: &o.payload });
        }
    }

    /// Up to `max` acknowledgements to send, taken off the queue.
    pub fn take_acks(&mut self, max: usize) -> Vec<u32> {
        let n = self.acks.len().min(max);
        self.acks.drain(..n).collect()
    }

    pub fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Everything we sent was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.outgoing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(r: &mut Reliable, now: Instant) -> Vec<u32> {
        let mut v = Vec::new();
        r.transmit(now, |t| v.push(t.pid));
        v
    }

    #[test]
    fn delivers_in_order_and_acks_everything() {
        let mut r = Reliable::new();
        assert_eq!(r.receive(1, Opcode::ControlV1, b"b".to_vec()), Received::New);
        assert!(r.deliver().is_none(), "0 has not arrived");
        assert_eq!(r.receive(0, Opcode::HardResetClientV2, Vec::new()), Received::New);
        assert_eq!(r.deliver().unwrap().0, Opcode::HardResetClientV2);
        assert_eq!(r.deliver().unwrap().1, b"b");
        assert_eq!(r.receive(0, Opcode::HardResetClientV2, Vec::new()), Received::Duplicate);
        assert_eq!(r.take_acks(8), vec![0, 1], "most recent first");
        assert_eq!(r.receive(1, Opcode::ControlV1, Vec::new()), Received::Duplicate);
        assert_eq!(r.take_acks(8), vec![1], "duplicates are acknowledged again");
    }

    #[test]
    fn drops_beyond_the_window_without_ack() {
        let mut r = Reliable::new();
        assert_eq!(r.receive(RECV_WINDOW, Opcode::ControlV1, Vec::new()), Received::OutOfWindow);
        assert!(!r.has_acks());
        assert_eq!(r.receive(RECV_WINDOW - 1, Opcode::ControlV1, Vec::new()), Received::New);
    }

    #[test]
    fn send_window_and_retransmission_backoff() {
        let t0 = Instant::now();
        let mut r = Reliable::new();
        for _ in 0..SEND_WINDOW {
            assert!(r.can_send());
            r.send(Opcode::ControlV1, vec![0]);
        }
        assert!(!r.can_send());
        assert_eq!(sent(&mut r, t0), vec![0, 1, 2, 3, 4, 5]);
        assert!(sent(&mut r, t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(sent(&mut r, t0 + Duration::from_secs(2)).len(), 6);
        // Doubled: the next resend is 4 s later.
        assert!(sent(&mut r, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(sent(&mut r, t0 + Duration::from_secs(6)).len(), 6);
        r.acked(&[0, 1, 7, 0]);
        assert!(r.can_send());
        // The third send was at 6 s with an 8 s timeout: next at 14 s.
        assert!(sent(&mut r, t0 + Duration::from_millis(13_999)).is_empty());
        assert_eq!(sent(&mut r, t0 + Duration::from_secs(14)), vec![2, 3, 4, 5]);
    }

    /// What a hostile peer may name: ids we never sent acknowledge
    /// nothing (nor count toward a fast resend), and ids far ahead, up to
    /// u32::MAX, are neither stored nor acknowledged.
    #[test]
    fn ids_never_sent_and_huge_ids_change_nothing() {
        let t0 = Instant::now();
        let mut r = Reliable::new();
        r.send(Opcode::ControlV1, vec![1]);
        r.send(Opcode::ControlV1, vec![2]);
        sent(&mut r, t0);
        r.acked(&[2, 3, 100, 0x7fff_ffff, u32::MAX, u32::MAX, 2, 2]);
        assert!(!r.all_acked(), "nothing we sent was acknowledged");
        assert!(sent(&mut r, t0).is_empty(), "and nothing is resent early");
        assert_eq!(sent(&mut r, t0 + INITIAL_TIMEOUT), vec![0, 1]);
        for pid in [RECV_WINDOW, 1 << 20, u32::MAX - 1, u32::MAX] {
            assert_eq!(r.receive(pid, Opcode::ControlV1, vec![0; 1000]), Received::OutOfWindow, "{pid}");
        }
        assert!(!r.has_acks() && !r.heard(), "none stored, none acknowledged");
    }

    #[test]
    fn three_later_acks_resend_early() {
        let t0 = Instant::now();
        let mut r = Reliable::new();
        for _ in 0..4 {
            r.send(Opcode::ControlV1, vec![]);
        }
        sent(&mut r, t0);
        r.acked(&[1]);
        r.acked(&[2]);
        assert!(sent(&mut r, t0).is_empty());
        r.acked(&[3]);
        assert_eq!(sent(&mut r, t0), vec![0]);
        assert!(!r.all_acked());
        r.acked(&[0]);
        assert!(r.all_acked());
    }
}
