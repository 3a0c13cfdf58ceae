//! Sending the datagrams of the tun side: runs of datagrams to one peer,
//! all of one size but the last (the encrypted segments of one tun
//! super-packet, or a peer's stream of pure ACKs), go as one sendmsg(2)
//! with `UDP_SEGMENT` on Linux, up to [`MAX_SEGS`] at a time, which the
//! kernel cuts apart as late as it can; a datagram alone goes into the
//! sendmmsg batch ([`Batch`]). The batch is sent before each train so a
//! peer's datagrams leave in order. Where the kernel refuses `UDP_SEGMENT`
//! (or elsewhere than Linux) every datagram goes through the batch.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use nix::sys::socket::SockaddrStorage;

use crate::batch::Batch;

/// The kernel's UDP_MAX_SEGMENTS (64 before Linux 6.9).
pub const MAX_SEGS: usize = 64;
/// A UDP send is at most 64 KB.
const MAX_BYTES: usize = 65535 - 8;

/// Datagrams for one peer, back to back, and the batch of the others;
/// allocated once.
pub struct Train {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    seg: usize,
    count: usize,
    /// A shorter datagram ended the train.
    closed: bool,
    /// `UDP_SEGMENT` worked, or has not been tried.
    gso: bool,
    singles: Batch,
}

impl Default for Train {
    fn default() -> Self {
        Self::new()
    }
}

impl Train {
    pub fn new() -> Self {
        Train {
            buf: Vec::with_capacity(MAX_BYTES),
            to: None,
            seg: 0,
            count: 0,
            closed: false,
            gso: cfg!(target_os = "linux"),
            singles: Batch::new(),
        }
    }

    /// Adds one datagram for `to`, sending the train first when the
    /// datagram cannot join it (another peer, larger, or no room).
    pub fn push(&mut self, sock: BorrowedFd<'_>, to: SocketAddr, data: &[u8]) {
        let joins = self.to == Some(to)
            && !self.closed
            && data.len() <= self.seg
            && self.count < MAX_SEGS
            && self.buf.len() + data.len() <= MAX_BYTES;
        if !joins {
            self.end(sock);
            self.to = Some(to);
            self.seg = data.len();
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
        self.closed = data.len() < self.seg;
    }

    /// Sends everything held.
    pub fn flush(&mut self, sock: BorrowedFd<'_>) {
        self.end(sock);
        self.send_singles(sock);
    }

    /// Ends the current train: a lone datagram joins the batch, several
    /// go with one `UDP_SEGMENT` send (EAGAIN drops them: UDP semantics).
    fn end(&mut self, sock: BorrowedFd<'_>) {
        let Some(to) = self.to.take() else { return };
        if self.count > 1 && self.gso {
            self.send_singles(sock);
            match sys::send_gso(sock, &self.buf, self.seg, &SockaddrStorage::from(to)) {
                Ok(()) => return self.reset(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.reset(),
                Err(e) => {
                    log::info!("UDP_SEGMENT refused ({e}): sendmmsg batches from now on");
                    self.gso = false;
                }
            }
        }
        let buf = std::mem::take(&mut self.buf);
        for d in buf.chunks(self.seg.max(1)) {
            if self.singles.is_full() {
                self.send_singles(sock);
            }
            self.singles.push(to, |b| {
                b[..d.len()].copy_from_slice(d);
                d.len()
            });
        }
        self.buf = buf;
        self.reset();
    }

    fn send_singles(&mut self, sock: BorrowedFd<'_>) {
        if self.singles.is_empty() {
            return;
        }
        if let Err(e) = self.singles.send(sock) {
            log::debug!("send: {e}");
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;

    pub fn send_gso(sock: BorrowedFd<'_>, buf: &[u8], seg: usize, to: &SockaddrStorage) -> io::Result<()> {
        let seg = seg as u16;
        let iov = [io::IoSlice::new(buf)];
        sendmsg(sock.as_raw_fd(), &iov, &[ControlMessage::UdpGsoSegments(&seg)], MsgFlags::MSG_DONTWAIT, Some(to))?;
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;

    pub fn send_gso(_: BorrowedFd<'_>, _: &[u8], _: usize, _: &SockaddrStorage) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// Everything sent arrives as the datagrams pushed, in order, whether
    /// the kernel cut them (UDP_SEGMENT) or they went in the batch.
    #[test]
    fn trains_arrive_as_their_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut t = Train::new();
        let mut sent_b = Vec::new();
        // 70 full ones (over MAX_SEGS), a short one, one for c, then a
        // lone one for b and a train of two.
        for i in 0..70u32 {
            let d: Vec<u8> = (0..900).map(|j| (i as u8) ^ (j as u8)).collect();
            t.push(a.as_fd(), tb, &d);
            sent_b.push(d);
        }
        t.push(a.as_fd(), tb, b"short");
        sent_b.push(b"short".to_vec());
        t.push(a.as_fd(), tc, b"for c");
        for d in [&b"lone, longer"[..], b"pair", b"pair"] {
            t.push(a.as_fd(), tb, d);
            sent_b.push(d.to_vec());
        }
        t.flush(a.as_fd());
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
        assert!(t.count == 0 && t.singles.is_empty(), "nothing left after a flush");
    }
}
