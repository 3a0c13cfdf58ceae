//! The control socket, served by the engine: `vpnsyncctl` connects, sends one
//! request as an imsg and reads records until `CtlEnd` or a `CtlResult`.
//!
//! Only root may talk to it: the socket file is 0600 root, and each accepted
//! connection's peer credentials are checked as well (the engine itself runs
//! unprivileged in a chroot, so it cannot rely on the file mode alone). A
//! refused peer gets one `CtlResult` saying why before the connection closes.
//! Requests the engine cannot answer itself are forwarded with the
//! connection id as peerid: `show sync` to the syncer, `reload` and `log` to
//! the parent, and the answer is relayed back.
//!
//! Every resource a client can make us hold is bounded, the bgpd way: a
//! connection whose unread replies pass a high-water mark, or that has too
//! many requests waiting for another process, is not read until it drains;
//! at most [`MAX_CONNS`] connections are open; when the process runs out of
//! descriptors the listener leaves the poll set for [`ACCEPT_PAUSE`] instead
//! of waking the loop again and again.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use vpnsyncd_common::ctl;
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::ImsgType;

/// Control messages are small; a show clients record is well under this.
const CTL_MAXSIZE: usize = 16384;
/// Unwritten reply bytes beyond which a connection is not read.
pub const HIGH_WATER: usize = 64 << 10;
/// Forwarded requests of one connection that may wait for an answer.
pub const MAX_IN_FLIGHT: usize = 4;
/// Open control connections at most; more wait in the listen backlog.
pub const MAX_CONNS: usize = 64;
/// How long accepting stops after EMFILE or ENFILE.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// What a refused peer reads (vpnsyncctl prints it after its own name).
pub const ROOT_ONLY: &str = "permission denied: the control socket accepts root only";

/// One accepted control connection.
pub struct CtlConn {
    pub id: u32,
    pub ibuf: ImsgBuf,
    /// Requests passed on to the parent or the syncer, not answered yet.
    in_flight: usize,
}

impl CtlConn {
    fn new(id: u32, fd: OwnedFd) -> CtlConn {
        let mut ibuf = ImsgBuf::new(fd);
        ibuf.set_maxsize(CTL_MAXSIZE);
        CtlConn { id, ibuf, in_flight: 0 }
    }

    /// Whether its next request may be served: it reads what we wrote and
    /// does not have too many requests waiting elsewhere.
    pub fn ready(&self) -> bool {
        self.ibuf.queued_bytes() < HIGH_WATER && self.in_flight < MAX_IN_FLIGHT
    }
}

/// The listening socket and its connections.
pub struct Control {
    listener: OwnedFd,
    pub conns: Vec<CtlConn>,
    next_id: u32,
    /// Accepting stopped after EMFILE/ENFILE, until then.
    paused_until: Option<Instant>,
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(fd: &OwnedFd) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        let cred = nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)?;
        Ok(cred.uid())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (uid, _gid) = nix::unistd::getpeereid(fd)?;
        Ok(uid.as_raw())
    }
}

/// Tells a refused peer why, in one write on the fresh (empty, non-blocking)
/// socket, then closes it. A peer that cannot take even that is dropped.
fn refuse(fd: OwnedFd) {
    let mut ibuf = ImsgBuf::new(fd);
    if ibuf.compose(ImsgType::CtlResult as u32, 0, None, &ctl::encode_result(&Err(ROOT_ONLY.into()))).is_ok() {
        let _ = ibuf.write();
    }
}

impl Control {
    pub fn new(listener: OwnedFd) -> Self {
        Control { listener, conns: Vec::new(), next_id: 1, paused_until: None }
    }

    pub fn listener_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Whether the listener belongs in the poll set now: not while
    /// connections are at their cap or accepting is paused.
    pub fn listening(&self, now: Instant) -> bool {
        self.conns.len() < MAX_CONNS && self.paused_until.is_none_or(|t| now >= t)
    }

    /// An accept(2) failure: out of descriptors pauses accepting (the
    /// listener would be readable at once again, and the loop would spin).
    fn accept_failed(&mut self, e: Errno, now: Instant) {
        if matches!(e, Errno::EMFILE | Errno::ENFILE) {
            log::warn!("control: accept: {e}; not accepting for {} s", ACCEPT_PAUSE.as_secs());
            self.paused_until = Some(now + ACCEPT_PAUSE);
        } else {
            log::warn!("control: accept: {e}");
        }
    }

    /// Accepts pending connections up to the cap, refusing every non-root
    /// peer with the reason.
    pub fn accept(&mut self, now: Instant) {
        while self.listening(now) {
            let fd = match nix::sys::socket::accept4(
                self.listener.as_raw_fd(),
                nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 returned a fresh descriptor that we own.
                Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => return self.accept_failed(e, now),
            };
            match peer_uid(&fd) {
                Ok(0) => {}
                Ok(uid) => {
                    log::warn!("control: refused a connection from uid {uid}: only root may use vpnsyncctl");
                    refuse(fd);
                    continue;
                }
                Err(e) => {
                    log::warn!("control: peer credentials: {e}");
                    continue;
                }
            }
            self.add(fd);
        }
    }

    fn add(&mut self, fd: OwnedFd) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        log::debug!("control: connection {id} accepted");
        self.conns.push(CtlConn::new(id, fd));
    }

    /// The connection with this id, if it is still open.
    pub fn conn(&mut self, id: u32) -> Option<&mut CtlConn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Sends `ty` with `data` to connection `id` (gone connections are skipped).
    pub fn reply(&mut self, id: u32, ty: ImsgType, data: &[u8]) {
        if let Some(c) = self.conn(id) {
            if let Err(e) = c.ibuf.compose(ty as u32, 0, None, data) {
                log::warn!("control: connection {id}: {e}");
            }
        }
    }

    /// A request of connection `id` went to another process.
    pub fn forwarded(&mut self, id: u32) {
        if let Some(c) = self.conn(id) {
            c.in_flight += 1;
        }
    }

    /// The answer to a forwarded request of connection `id` came back.
    pub fn answered(&mut self, id: u32) {
        if let Some(c) = self.conn(id) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }

    /// Reads what connection `idx` sent; an error (EOF included) means the
    /// connection is to be dropped.
    pub fn read(&mut self, idx: usize) -> io::Result<()> {
        match self.conns[idx].ibuf.read() {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next complete request of connection `idx`, unless it must drain
    /// first (requests stay buffered meanwhile).
    pub fn next_request(&mut self, idx: usize) -> io::Result<Option<Imsg>> {
        let c = &mut self.conns[idx];
        if !c.ready() {
            return Ok(None);
        }
        c.ibuf.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn control() -> (Control, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "vpnsyncd-ctl-{}-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        (Control::new(OwnedFd::from(l)), path)
    }

    /// A connected pair: the engine's end added to `c`, the client's end
    /// returned as an imsg channel.
    fn connect(c: &mut Control) -> ImsgBuf {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        c.add(OwnedFd::from(ours));
        let mut ibuf = ImsgBuf::new(OwnedFd::from(theirs));
        ibuf.set_maxsize(1 << 20);
        ibuf
    }

    /// A client that sends requests but never reads: once its replies pass
    /// the high-water mark, its further requests stay unread.
    #[test]
    fn a_client_that_does_not_read_is_not_read() {
        let (mut c, path) = control();
        let mut client = connect(&mut c);
        for _ in 0..100 {
            client.compose(ImsgType::CtlShowSummary as u32, 0, None, &[]).unwrap();
        }
        client.flush().unwrap();
        c.read(0).unwrap();
        let reply = [0u8; 1000];
        let mut served = 0;
        while let Some(_req) = c.next_request(0).unwrap() {
            served += 1;
            c.reply(1, ImsgType::CtlSummary, &reply);
            assert!(served < 100, "never stopped");
        }
        assert!(!c.conns[0].ready());
        assert!(c.conns[0].ibuf.queued_bytes() >= HIGH_WATER);
        assert!(c.conns[0].ibuf.queued_bytes() < HIGH_WATER + 2 * reply.len(), "{}", c.conns[0].ibuf.queued_bytes());
        // The client reads: the replies drain and serving resumes.
        while !c.conns[0].ready() {
            c.conns[0].ibuf.write().unwrap();
            while client.read().is_ok() {}
            while client.get().unwrap().is_some() {}
        }
        assert!(c.next_request(0).unwrap().is_some());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn forwarded_requests_are_bounded() {
        let (mut c, path) = control();
        let mut client = connect(&mut c);
        for _ in 0..10 {
            client.compose(ImsgType::CtlShowSync as u32, 0, None, &[]).unwrap();
        }
        client.flush().unwrap();
        c.read(0).unwrap();
        let mut taken = 0;
        while c.next_request(0).unwrap().is_some() {
            c.forwarded(1);
            taken += 1;
        }
        assert_eq!(taken, MAX_IN_FLIGHT);
        c.answered(1);
        assert!(c.next_request(0).unwrap().is_some());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn connections_are_capped_and_emfile_pauses_accept() {
        let (mut c, path) = control();
        let t = Instant::now();
        assert!(c.listening(t));
        let clients: Vec<ImsgBuf> = (0..MAX_CONNS).map(|_| connect(&mut c)).collect();
        assert!(!c.listening(t));
        drop(clients);
        c.conns.clear();
        c.accept_failed(Errno::EMFILE, t);
        assert!(!c.listening(t + ACCEPT_PAUSE / 2));
        assert!(c.listening(t + ACCEPT_PAUSE));
        c.accept_failed(Errno::ECONNABORTED, t + ACCEPT_PAUSE);
        assert!(c.listening(t + ACCEPT_PAUSE));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_refused_peer_reads_why() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        refuse(OwnedFd::from(ours));
        let mut client = ImsgBuf::new(OwnedFd::from(theirs));
        let m = client.recv_blocking().unwrap();
        assert_eq!(m.hdr.ty, ImsgType::CtlResult as u32);
        assert_eq!(ctl::decode_result(&m.data), Ok(Err(ROOT_ONLY.to_string())));
        assert!(client.recv_blocking().is_err(), "closed after the reason");
    }
}
