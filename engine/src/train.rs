//! Sending the datagrams of the tun side: runs of datagrams to one peer,
//! all of one size but the last (the encrypted segments of one tun
//! super-packet, or a peer's stream of pure ACKs), go as one sendmsg(2)
//! with `UDP_SEGMENT` on Linux, up to [`MAX_SEGS`] at a time, which the
//! kernel cuts apart as late as it can; a datagram alone goes into the
//! sendmmsg batch. The batch is sent before each train so a peer's
//! datagrams leave in order. Where the kernel refuses `UDP_SEGMENT` (or
//! elsewhere than Linux) every datagram goes through the batch.
//!
//! Every datagram is written once, in place, into the buffer it is sent
//! from ([`Train::push`] says where before it is written): the singles and
//! the train's datagrams share one [`Batch`], the singles first, and a
//! train leaves as one iovec per datagram, so a datagram that turns out to
//! be alone is already where the batch sends it from.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::BorrowedFd;

use nix::sys::socket::SockaddrStorage;

use crate::batch::{Batch, BATCH, MAX_DATAGRAM};

/// The kernel's UDP_MAX_SEGMENTS (64 before Linux 6.9).
pub const MAX_SEGS: usize = 64;
/// A UDP send is at most 64 KB.
const MAX_BYTES: usize = 65535 - 8;

/// Where the datagrams go: the socket, or a test's record of the sends.
pub trait Sink {
    /// One `UDP_SEGMENT` send of `datagrams` (all `seg` bytes but the
    /// last) to `to`.
    fn send_gso(&mut self, datagrams: &[IoSlice<'_>], seg: usize, to: SocketAddr) -> io::Result<()>;
    /// The datagrams `range` of `batch`, each on its own (sendmmsg).
    fn send_batch(&mut self, batch: &mut Batch, range: Range<usize>) -> io::Result<()>;
}

impl Sink for BorrowedFd<'_> {
    fn send_gso(&mut self, datagrams: &[IoSlice<'_>], seg: usize, to: SocketAddr) -> io::Result<()> {
        sys::send_gso(*self, datagrams, seg, &SockaddrStorage::from(to))
    }

    fn send_batch(&mut self, batch: &mut Batch, range: Range<usize>) -> io::Result<()> {
        batch.send_range(*self, range)
    }
}

/// Datagrams for one peer, back to back, and the batch of the others;
/// allocated once.
pub struct Train {
    /// Every datagram held, in the order they leave: the singles, then
    /// the train's.
    held: Batch,
    /// How many of `held` are singles.
    singles: usize,
    to: Option<SocketAddr>,
    seg: usize,
    /// Datagrams and bytes of the train.
    count: usize,
    bytes: usize,
    /// A shorter datagram ended the train.
    closed: bool,
    /// `UDP_SEGMENT` worked, or has not been tried.
    gso: bool,
}

impl Default for Train {
    fn default() -> Self {
        Self::new()
    }
}

impl Train {
    pub fn new() -> Self {
        Train {
            // Fewer than BATCH singles are held when a train starts.
            held: Batch::with_capacity(BATCH + MAX_SEGS),
            singles: 0,
            to: None,
            seg: 0,
            count: 0,
            bytes: 0,
            closed: false,
            gso: cfg!(target_os = "linux"),
        }
    }

    /// Adds a datagram of `len` bytes for `to`, sending the train first
    /// when the datagram cannot join it (another peer, larger, or no
    /// room). `fill` writes the datagram in place, exactly `len` bytes, and
    /// returns false when there is nothing to send after all. Returns
    /// whether the datagram was added (false also when `len` is more than
    /// [`MAX_DATAGRAM`]).
    pub fn push(
        &mut self,
        out: &mut impl Sink,
        to: SocketAddr,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> bool {
        if len > MAX_DATAGRAM {
            return false;
        }
        let joins = self.to == Some(to)
            && !self.closed
            && len <= self.seg
            && self.count < MAX_SEGS
            && self.bytes + len <= MAX_BYTES;
        if !joins {
            self.end(out);
        }
        if !self.held.push(to, len, fill) {
            return false;
        }
        if !joins {
            self.to = Some(to);
            self.seg = len;
        }
        self.count += 1;
        self.bytes += len;
        self.closed = len < self.seg;
        true
    }

    /// Sends everything held.
    pub fn flush(&mut self, out: &mut impl Sink) {
        self.end(out);
        self.send_singles(out);
        self.clear();
    }

    /// Ends the current train: a lone datagram becomes a single, several
    /// go with one `UDP_SEGMENT` send (EAGAIN drops them: UDP semantics).
    fn end(&mut self, out: &mut impl Sink) {
        let Some(to) = self.to.take() else { return };
        let train = self.singles..self.singles + self.count;
        if self.count > 1 && self.gso {
            self.send_singles(out);
            let mut iov = [IoSlice::new(&[]); MAX_SEGS];
            for (v, i) in iov.iter_mut().zip(train.clone()) {
                *v = IoSlice::new(self.held.get(i));
            }
            match out.send_gso(&iov[..self.count], self.seg, to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::info!("UDP_SEGMENT refused ({e}): sendmmsg batches from now on");
                    self.gso = false;
                    if let Err(e) = out.send_batch(&mut self.held, train) {
                        log::debug!("send: {e}");
                    }
                }
            }
            return self.clear();
        }
        self.singles = train.end;
        self.count = 0;
        self.bytes = 0;
        self.closed = false;
        if self.singles >= BATCH {
            self.send_singles(out);
            self.clear();
        }
    }

    /// Sends the singles (the caller clears them).
    fn send_singles(&mut self, out: &mut impl Sink) {
        if self.singles == 0 {
            return;
        }
        if let Err(e) = out.send_batch(&mut self.held, 0..self.singles) {
            log::debug!("send: {e}");
        }
    }

    fn clear(&mut self) {
        self.held.clear();
        self.singles = 0;
        self.count = 0;
        self.bytes = 0;
        self.closed = false;
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;

    pub fn send_gso(sock: BorrowedFd<'_>, iov: &[IoSlice<'_>], seg: usize, to: &SockaddrStorage) -> io::Result<()> {
        let seg = seg as u16;
        sendmsg(sock.as_raw_fd(), iov, &[ControlMessage::UdpGsoSegments(&seg)], MsgFlags::MSG_DONTWAIT, Some(to))?;
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;

    pub fn send_gso(_: BorrowedFd<'_>, _: &[IoSlice<'_>], _: usize, _: &SockaddrStorage) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// Pushes a copy of `d`.
    fn push(t: &mut Train, out: &mut impl Sink, to: SocketAddr, d: &[u8]) -> bool {
        t.push(out, to, d.len(), |b| {
            b.copy_from_slice(d);
            true
        })
    }

    /// Everything sent arrives as the datagrams pushed, in order, whether
    /// the kernel cut them (UDP_SEGMENT, one iovec per datagram) or they
    /// went in the batch.
    #[test]
    fn trains_arrive_as_their_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut t = Train::new();
        let mut sent_b = Vec::new();
        let out = &mut a.as_fd();
        // 70 full ones (over MAX_SEGS), a short one, one for c, then a
        // lone one for b and a train of two.
        for i in 0..70u32 {
            let d: Vec<u8> = (0..900).map(|j| (i as u8) ^ (j as u8)).collect();
            push(&mut t, out, tb, &d);
            sent_b.push(d);
        }
        push(&mut t, out, tb, b"short");
        sent_b.push(b"short".to_vec());
        push(&mut t, out, tc, b"for c");
        for d in [&b"lone, longer"[..], b"pair", b"pair"] {
            push(&mut t, out, tb, d);
            sent_b.push(d.to_vec());
        }
        t.flush(out);
        assert_eq!(t.gso, cfg!(target_os = "linux"), "loopback takes UDP_SEGMENT");
        b.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        for want in &sent_b {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            assert_eq!(&buf[..n], &want[..]);
        }
        c.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"for c");
        assert!(t.count == 0 && t.singles == 0 && t.held.is_empty(), "nothing left after a flush");
    }

    /// What a [`Fake`] socket was given, in order: a `UDP_SEGMENT` send
    /// (peer, segment size, its iovecs joined), or one datagram of a batch.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Sent {
        Train(SocketAddr, usize, Vec<u8>),
        Single(SocketAddr, Vec<u8>),
    }

    /// A socket that records the sends; it refuses `UDP_SEGMENT` (EIO, a
    /// device without checksum offload) when told to.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub(crate) sent: Vec<Sent>,
        refuse_gso: bool,
    }

    impl Sink for Fake {
        fn send_gso(&mut self, datagrams: &[IoSlice<'_>], seg: usize, to: SocketAddr) -> io::Result<()> {
            if self.refuse_gso {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.sent.push(Sent::Train(to, seg, datagrams.iter().flat_map(|d| d.iter().copied()).collect()));
            Ok(())
        }

        fn send_batch(&mut self, batch: &mut Batch, range: Range<usize>) -> io::Result<()> {
            for i in range {
                self.sent.push(Sent::Single(batch.addr(i).unwrap(), batch.get(i).to_vec()));
            }
            Ok(())
        }
    }

    /// The train as it was before datagrams were written in place: each
    /// copied into one contiguous buffer, sent with one iovec, a lone one
    /// copied again into a batch of BATCH. The oracle of what leaves.
    struct Copying {
        buf: Vec<u8>,
        to: Option<SocketAddr>,
        seg: usize,
        count: usize,
        closed: bool,
        gso: bool,
        singles: Vec<(SocketAddr, Vec<u8>)>,
    }

    impl Copying {
        fn new() -> Self {
            Copying { buf: Vec::new(), to: None, seg: 0, count: 0, closed: false, gso: true, singles: Vec::new() }
        }

        fn push(&mut self, out: &mut Fake, to: SocketAddr, data: &[u8]) {
            let joins = self.to == Some(to)
                && !self.closed
                && data.len() <= self.seg
                && self.count < MAX_SEGS
                && self.buf.len() + data.len() <= MAX_BYTES;
            if !joins {
                self.end(out);
                self.to = Some(to);
                self.seg = data.len();
            }
            self.buf.extend_from_slice(data);
            self.count += 1;
            self.closed = data.len() < self.seg;
        }

        fn flush(&mut self, out: &mut Fake) {
            self.end(out);
            self.send_singles(out);
        }

        fn end(&mut self, out: &mut Fake) {
            let Some(to) = self.to.take() else { return };
            if self.count > 1 && self.gso {
                self.send_singles(out);
                if out.send_gso(&[IoSlice::new(&self.buf)], self.seg, to).is_ok() {
                    return self.reset();
                }
                self.gso = false;
            }
            for d in std::mem::take(&mut self.buf).chunks(self.seg.max(1)) {
                if self.singles.len() == BATCH {
                    self.send_singles(out);
                }
                self.singles.push((to, d.to_vec()));
            }
            self.reset();
        }

        fn send_singles(&mut self, out: &mut Fake) {
            out.sent.extend(self.singles.drain(..).map(|(to, d)| Sent::Single(to, d)));
        }

        fn reset(&mut self) {
            self.buf.clear();
            self.count = 0;
            self.closed = false;
        }
    }

    /// Datagrams written in place leave exactly as the copying train sent
    /// them: the same UDP_SEGMENT buffers (byte for byte, segment size,
    /// peer) and the same lone datagrams, in the same order, over runs
    /// that cross MAX_SEGS and 64 KB, short last datagrams, peers taking
    /// turns, flushes, and a socket that refuses UDP_SEGMENT.
    #[test]
    fn datagrams_written_in_place_leave_as_the_copying_train_sent_them() {
        let peers: [SocketAddr; 3] =
            ["10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap(), "[fd00::3]:3".parse().unwrap()];
        for (seed, refuse_gso) in [(1u64, false), (2, false), (3, true), (4, false)] {
            let mut rng = seed;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let (mut new, mut old) = (Train::new(), Copying::new());
            let (mut got, mut want) = (Fake { refuse_gso, ..Fake::default() }, Fake { refuse_gso, ..Fake::default() });
            let mut pushed = 0;
            for _ in 0..400 {
                let to = peers[next(3) as usize];
                let seg = 1 + next(2000) as usize;
                // A run of equal datagrams, sometimes a shorter or longer one at the end.
                for i in 0..1 + next(90) {
                    let len = match next(10) {
                        0 => 1 + next(seg as u64) as usize,
                        1 => (seg + 1 + next(40) as usize).min(MAX_DATAGRAM),
                        _ => seg,
                    };
                    let d: Vec<u8> = (0..len).map(|j| (j as u64 ^ i ^ pushed) as u8).collect();
                    assert!(push(&mut new, &mut got, to, &d));
                    old.push(&mut want, to, &d);
                    pushed += 1;
                }
                if next(8) == 0 {
                    new.flush(&mut got);
                    old.flush(&mut want);
                }
            }
            new.flush(&mut got);
            old.flush(&mut want);
            assert_eq!(got.sent.len(), want.sent.len(), "seed {seed}");
            for (i, (g, w)) in got.sent.iter().zip(&want.sent).enumerate() {
                assert!(g == w, "seed {seed}: send {i} differs");
            }
            let trains = got.sent.iter().filter(|s| matches!(s, Sent::Train(..))).count();
            assert_eq!(trains > 100, !refuse_gso, "seed {seed}: {trains} trains");
            assert_eq!(new.gso, !refuse_gso);
        }
    }

    /// A datagram whose fill gives up (it could not be encrypted) leaves
    /// no trace: the train goes on as if it had not been pushed. One
    /// larger than a datagram is refused before it is written.
    #[test]
    fn a_datagram_not_filled_is_not_sent() {
        let to: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let (mut t, mut out) = (Train::new(), Fake::default());
        for _ in 0..3 {
            assert!(push(&mut t, &mut out, to, &[7; 1000]));
        }
        assert!(!t.push(&mut out, to, 1000, |b| {
            b.fill(9);
            false
        }));
        assert!(!t.push(&mut out, to, MAX_DATAGRAM + 1, |_| unreachable!("too large to be written")));
        assert!(push(&mut t, &mut out, to, &[7; 1000]));
        assert!(out.sent.is_empty(), "nothing is sent while the train can grow");
        t.flush(&mut out);
        assert_eq!(out.sent, vec![Sent::Train(to, 1000, vec![7; 4000])]);
    }
}
