//! Batched UDP I/O: recvmmsg(2)/sendmmsg(2) on Linux move up to [`BATCH`]
//! datagrams per system call; elsewhere the same interface loops over
//! recvfrom/sendto. Buffers are allocated once; the data path allocates
//! nothing per packet.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::SockaddrStorage;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Packets the loop reads from each source (every listener, the tun
/// device) per turn, so that none starves the others. The tun device gets
/// the same share as a listener: what the listeners write to it is often
/// answered through it (an echo, a TCP ACK), and reading it less than they
/// wrote can fill its queue (500 packets on Linux), past which the kernel
/// drops.
pub const PER_TURN: usize = 8 * BATCH;
/// Largest datagram we handle (control packets are ≤ 1250, data ≤ tun MTU + overhead).
pub const MAX_DATAGRAM: usize = 2048;

/// A set of datagram buffers with their peer addresses and lengths.
pub struct Batch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    addrs: Vec<SockaddrStorage>,
    count: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Self::with_capacity(BATCH)
    }

    /// A batch of `n` buffers (a train holds its singles and its own
    /// datagrams in one, crate::train). Receiving fills at most [`BATCH`].
    pub fn with_capacity(n: usize) -> Self {
        let empty = SockaddrStorage::from(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));
        Batch { bufs: vec![[0u8; MAX_DATAGRAM]; n], lens: vec![0; n], addrs: vec![empty; n], count: 0 }
    }

    /// Number of datagrams held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when no further datagram fits.
    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// Datagram `i` (mutable, so it can be decrypted in place) and its peer.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>) {
        let addr = to_std(&self.addrs[i]);
        (&mut self.bufs[i][..self.lens[i]], addr)
    }

    /// Datagram `i`, as [`Batch::get_mut`] left it.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// The peer of datagram `i`.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        to_std(&self.addrs[i])
    }

    /// Appends a datagram of `len` bytes to send, which `fill` writes in
    /// place; `fill` returns false when there is nothing to send after all.
    /// Returns false (and adds nothing) then, when the batch is full or when
    /// `len` is more than a buffer.
    pub fn push(&mut self, to: SocketAddr, len: usize, fill: impl FnOnce(&mut [u8]) -> bool) -> bool {
        if self.is_full() || len > MAX_DATAGRAM {
            return false;
        }
        let i = self.count;
        if !fill(&mut self.bufs[i][..len]) {
            return false;
        }
        self.lens[i] = len;
        self.addrs[i] = SockaddrStorage::from(to);
        self.count += 1;
        true
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Receives as many datagrams as are waiting (up to [`BATCH`]),
    /// replacing the contents. `Ok(0)`: nothing was waiting.
    pub fn recv(&mut self, sock: BorrowedFd<'_>) -> io::Result<usize> {
        self.count = 0;
        sys::recv(self, sock.as_raw_fd())?;
        Ok(self.count)
    }

    /// Sends every held datagram; datagrams the socket refuses with
    /// EAGAIN are dropped (UDP semantics), other errors are reported after
    /// the batch is done. The batch is empty afterwards.
    pub fn send(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        let r = self.send_range(sock, 0..self.count);
        self.count = 0;
        r
    }

    /// Sends the held datagrams `range` as [`Batch::send`] does, [`BATCH`]
    /// per system call, and keeps them all.
    pub fn send_range(&mut self, sock: BorrowedFd<'_>, range: Range<usize>) -> io::Result<()> {
        let range = range.start..range.end.min(self.count);
        let mut res = Ok(());
        for start in range.clone().step_by(BATCH) {
            match sys::send(self, sock.as_raw_fd(), start..(start + BATCH).min(range.end)) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => res = Err(e),
            }
        }
        res
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use nix::sys::socket::SockaddrLike;

    pub fn recv(b: &mut Batch, fd: i32) -> io::Result<()> {
        // SAFETY: zeroed iovec/mmsghdr arrays are valid; we point them at our buffers.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec { iov_base: b.bufs[i].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut b.addrs[i] as *mut SockaddrStorage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<SockaddrStorage>() as libc::socklen_t;
        }
        // SAFETY: every header points at live buffers of the declared sizes.
        let n =
            unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for (i, h) in hdrs.iter().take(n as usize).enumerate() {
            b.lens[i] = h.msg_len as usize;
        }
        b.count = n as usize;
        Ok(())
    }

    /// Sends datagrams `range` (at most BATCH); false when the socket
    /// would block (the rest is dropped).
    pub fn send(b: &mut Batch, fd: i32, range: Range<usize>) -> io::Result<bool> {
        // SAFETY: as in recv.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let count = range.len();
        for (j, i) in range.enumerate() {
            iov[j] = libc::iovec { iov_base: b.bufs[i].as_mut_ptr().cast(), iov_len: b.lens[i] };
            hdrs[j].msg_hdr.msg_iov = &mut iov[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
            hdrs[j].msg_hdr.msg_name = (&mut b.addrs[i] as *mut SockaddrStorage).cast();
            hdrs[j].msg_hdr.msg_namelen = b.addrs[i].len();
        }
        let mut done = 0;
        while done < count {
            // SAFETY: headers done..count point at live buffers.
            let n = unsafe { libc::sendmmsg(fd, hdrs[done..].as_mut_ptr(), (count - done) as u32, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(false),
                    // One bad destination must not stall the rest.
                    _ if count - done > 1 => {
                        done += 1;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            done += n as usize;
        }
        Ok(true)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;
    use nix::sys::socket::{recvfrom, sendto, MsgFlags};

    pub fn recv(b: &mut Batch, fd: i32) -> io::Result<()> {
        while b.count < BATCH {
            match recvfrom::<SockaddrStorage>(fd, &mut b.bufs[b.count]) {
                Ok((n, Some(addr))) => {
                    b.lens[b.count] = n;
                    b.addrs[b.count] = addr;
                    b.count += 1;
                }
                Ok((_, None)) => {}
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn send(b: &mut Batch, fd: i32, range: Range<usize>) -> io::Result<bool> {
        let mut first_err = None;
        for i in range {
            if let Err(e) = sendto(fd, &b.bufs[i][..b.lens[i]], &b.addrs[i], MsgFlags::MSG_DONTWAIT) {
                if e != nix::errno::Errno::EAGAIN {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(true), |e| Err(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn batches_cross_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut out = Batch::new();
        for i in 0..BATCH {
            assert!(out.push(to, 4 + i, |buf| {
                buf[..4].copy_from_slice(&(i as u32).to_be_bytes());
                true
            }));
        }
        assert!(!out.push(to, 1, |_| true), "a full batch takes no more");
        out.send(a.as_fd()).unwrap();
        assert!(out.is_empty());
        let mut inb = Batch::new();
        let mut seen = 0;
        for _ in 0..100 {
            let n = inb.recv(b.as_fd()).unwrap();
            for i in 0..n {
                let (d, from) = inb.get_mut(i);
                let idx = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
                assert_eq!(d.len(), 4 + idx);
                assert_eq!(from, Some(a.local_addr().unwrap()));
                seen += 1;
            }
            if seen == BATCH {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(seen, BATCH);
        assert_eq!(inb.recv(b.as_fd()).unwrap(), 0, "nothing left");
    }
}
