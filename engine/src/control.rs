//! The control socket, served by the engine: `vpnsyncctl` connects, sends one
//! request as an imsg and reads records until `CtlEnd` or a `CtlResult`.
//!
//! Only root may talk to it: the socket file is 0600 root, and each accepted
//! connection's peer credentials are checked as well (the engine itself runs
//! unprivileged in a chroot, so it cannot rely on the file mode alone).
//! Requests the engine cannot answer itself are forwarded with the
//! connection id as peerid: `show sync` to the syncer, `reload` and `log` to
//! the parent, and the answer is relayed back.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::ImsgType;

/// Control messages are small; a show clients record is well under this.
const CTL_MAXSIZE: usize = 16384;

/// One accepted control connection.
pub struct CtlConn {
    pub id: u32,
    pub ibuf: ImsgBuf,
}

/// The listening socket and its connections.
pub struct Control {
    listener: OwnedFd,
    pub conns: Vec<CtlConn>,
    next_id: u32,
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

impl Control {
    pub fn new(listener: OwnedFd) -> Self {
        Control { listener, conns: Vec::new(), next_id: 1 }
    }

    pub fn listener_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Accepts pending connections, refusing every non-root peer.
    pub fn accept(&mut self) {
        loop {
            let fd = match nix::sys::socket::accept4(
                self.listener.as_raw_fd(),
                nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 returned a fresh descriptor that we own.
                Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("control: accept: {e}");
                    return;
                }
            };
            match peer_uid(&fd) {
                Ok(0) => {}
                Ok(uid) => {
                    log::warn!("control: refused a connection from uid {uid}: only root may use vpnsyncctl");
                    continue;
                }
                Err(e) => {
                    log::warn!("control: peer credentials: {e}");
                    continue;
                }
            }
            let mut ibuf = ImsgBuf::new(fd);
            ibuf.set_maxsize(CTL_MAXSIZE);
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            log::debug!("control: connection {id} accepted");
            self.conns.push(CtlConn { id, ibuf });
        }
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

    /// Reads from connection `idx`; returns its complete requests, or an
    /// error after which the connection is dropped.
    pub fn read(&mut self, idx: usize) -> io::Result<Vec<Imsg>> {
        let c = &mut self.conns[idx];
        match c.ibuf.read() {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut out = Vec::new();
        while let Some(m) = c.ibuf.get()? {
            out.push(m);
        }
        Ok(out)
    }
}
