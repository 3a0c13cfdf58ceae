//! The readiness set over every client socket (mio: epoll on Linux, kqueue
//! on the BSDs): with 10,000 sockets, poll(2) would hand the kernel (and
//! scan back) every descriptor at each wake-up; these return only the
//! ready ones, so a wake-up costs what arrived. Readiness is edge
//! triggered: the caller reads each ready socket until it would block.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

pub struct Epoll {
    poll: Poll,
    events: Events,
}

/// Ready descriptors handed back by one wait, at most.
const EVENTS: usize = 1024;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll { poll: Poll::new()?, events: Events::with_capacity(EVENTS) })
    }

    /// Watches `fd` for reading; its readiness comes back as `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        self.poll.registry().register(&mut SourceFd(&raw), Token(token as usize), Interest::READABLE)
    }

    /// Waits at most `timeout`; returns the tokens of the ready
    /// descriptors (none after a signal).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = u64> + '_> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e),
        }
        Ok(self.events.iter().map(|e| e.token().0 as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn hands_back_only_the_ready_socket() {
        let mut ep = Epoll::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        ep.add(a.as_fd(), 7).unwrap();
        ep.add(b.as_fd(), 9).unwrap();
        assert_eq!(ep.wait(Duration::ZERO).unwrap().count(), 0, "nothing sent yet");
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let ready: Vec<u64> = ep.wait(Duration::from_secs(2)).unwrap().collect();
        assert_eq!(ready, [9]);
    }
}
