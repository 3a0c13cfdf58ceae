//! OpenBSD imsg framing over a Unix socket, in the current libutil layout.
//!
//! Every message starts with a 16-byte header in host byte order:
//! `u32 type; u32 len; u32 peerid; u32 pid`, where `len` counts the header and
//! its top bit ([`FD_MARK`]) says that one file descriptor travels with the
//! message (over `SCM_RIGHTS`, at most one per message). This is the layout of
//! `imsg.c` 1.42 (2025); we keep it so that ktrace/imsg tooling reads our pipes.
//!
//! [`ImsgBuf`] never blocks: the event loop reads when the socket is readable,
//! writes while [`ImsgBuf::queued`] is non-zero, and takes whole messages with
//! [`ImsgBuf::get`]. Malformed framing (a length below the header or above the
//! channel's maximum, or an fd mark without a descriptor) is an error, after
//! which the channel is to be closed.
//!
//! Payloads carry key material (key files from the parent, session keys
//! between engine and syncer), so every buffer a payload passes through is
//! zeroized when it is done with: the read buffer, the reassembly buffer
//! (grown by copying, never by `realloc`, which would leave the old bytes
//! behind), the received message and the queued one.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use zeroize::{Zeroize, Zeroizing};

/// Size of the imsg header.
pub const HEADER_SIZE: usize = 16;
/// Bit of `len` telling that a descriptor is attached.
pub const FD_MARK: u32 = 0x8000_0000;
/// Default maximum message size, header included (libutil's `MAX_IMSGSIZE`).
pub const MAX_IMSGSIZE: usize = 16384;
/// The maximum on a parent <-> child channel: one message carries a whole
/// key file (a CRL may take megabytes) or the canonical configuration.
pub const CHILD_MAXSIZE: usize = 4 << 20;

/// The high-water mark of a write queue, the bgpd way: a channel whose
/// unwritten bytes pass it is [`ImsgBuf::over_high_water`], and its owner
/// stops reading the source that feeds it (see [`crate::backpressure`])
/// until the peer has taken them. One message may pass it alone (a key
/// file of [`CHILD_MAXSIZE`]); the mark only stops the queue growing on.
pub const WRITE_HIGH_WATER: usize = 1 << 20;

/// The header of one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImsgHdr {
    pub ty: u32,
    /// Total length including the header (without the fd mark).
    pub len: u32,
    pub peerid: u32,
    pub pid: u32,
}

impl ImsgHdr {
    /// Decodes a header; returns it and whether the fd mark was set.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> (ImsgHdr, bool) {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let len = word(4);
        let hdr = ImsgHdr { ty: word(0), len: len & !FD_MARK, peerid: word(8), pid: word(12) };
        (hdr, len & FD_MARK != 0)
    }

    /// Encodes the header, setting the fd mark when `has_fd`.
    pub fn emit(&self, has_fd: bool) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let len = self.len | if has_fd { FD_MARK } else { 0 };
        for (i, w) in [self.ty, len, self.peerid, self.pid].into_iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }
}

/// One received message.
#[derive(Debug)]
pub struct Imsg {
    pub hdr: ImsgHdr,
    /// The payload, zeroized on drop.
    pub data: Zeroizing<Vec<u8>>,
    pub fd: Option<OwnedFd>,
}

/// A message waiting to be written, and how much of it went out already.
struct Outgoing {
    bytes: Zeroizing<Vec<u8>>,
    fd: Option<OwnedFd>,
    sent: usize,
}

/// A buffered, non-blocking imsg channel on one end of a socketpair.
pub struct ImsgBuf {
    sock: OwnedFd,
    rbuf: Zeroizing<Vec<u8>>,
    rfds: VecDeque<OwnedFd>,
    wq: VecDeque<Outgoing>,
    /// Bytes in `wq` not written yet, kept so the high-water check is O(1).
    pending: usize,
    allow_fdpass: bool,
    maxsize: usize,
    pid: u32,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl ImsgBuf {
    /// Wraps a connected stream socket (it should be non-blocking).
    pub fn new(sock: OwnedFd) -> Self {
        ImsgBuf {
            sock,
            rbuf: Zeroizing::new(Vec::new()),
            rfds: VecDeque::new(),
            wq: VecDeque::new(),
            pending: 0,
            allow_fdpass: false,
            maxsize: MAX_IMSGSIZE,
            pid: std::process::id(),
        }
    }

    /// Lets descriptors pass on this channel (opt-in, as `imsgbuf_allow_fdpass`).
    pub fn allow_fdpass(&mut self) {
        self.allow_fdpass = true;
    }

    /// Raises (or lowers) the largest message accepted and sent.
    pub fn set_maxsize(&mut self, max: usize) {
        self.maxsize = max.clamp(HEADER_SIZE, (FD_MARK - 1) as usize);
    }

    /// Queues a message. Fails when the message is larger than the channel's
    /// maximum or an fd is given on a channel without fd passing.
    pub fn compose(&mut self, ty: u32, peerid: u32, fd: Option<OwnedFd>, data: &[u8]) -> io::Result<()> {
        self.compose_parts(ty, peerid, fd, &[data])
    }

    /// Queues a message whose payload is `parts` one after the other, so a
    /// caller need not copy a key into a buffer of its own first.
    pub fn compose_parts(&mut self, ty: u32, peerid: u32, fd: Option<OwnedFd>, parts: &[&[u8]]) -> io::Result<()> {
        let len = HEADER_SIZE + parts.iter().map(|p| p.len()).sum::<usize>();
        if len > self.maxsize {
            return Err(invalid(format!("imsg type {ty}: {len} bytes exceed the channel maximum {}", self.maxsize)));
        }
        if fd.is_some() && !self.allow_fdpass {
            return Err(invalid(format!("imsg type {ty}: fd passing is not enabled on this channel")));
        }
        let hdr = ImsgHdr { ty, len: len as u32, peerid, pid: self.pid };
        let mut bytes = Zeroizing::new(Vec::with_capacity(len));
        bytes.extend_from_slice(&hdr.emit(fd.is_some()));
        for p in parts {
            bytes.extend_from_slice(p);
        }
        self.pending += len;
        self.wq.push_back(Outgoing { bytes, fd, sent: 0 });
        Ok(())
    }

    /// Number of messages not yet fully written.
    pub fn queued(&self) -> usize {
        self.wq.len()
    }

    /// Bytes not yet written, for a high-water mark.
    pub fn queued_bytes(&self) -> usize {
        self.pending
    }

    /// The write queue holds more than [`WRITE_HIGH_WATER`] bytes: stop
    /// feeding it.
    pub fn over_high_water(&self) -> bool {
        self.pending > WRITE_HIGH_WATER
    }

    /// Writes as much as the socket takes. `WouldBlock` is not an error.
    pub fn write(&mut self) -> io::Result<()> {
        while let Some(out) = self.wq.front_mut() {
            let iov = [IoSlice::new(&out.bytes[out.sent..])];
            let raw: [RawFd; 1];
            let cmsgs: &[ControlMessage] = match (&out.fd, out.sent) {
                (Some(fd), 0) => {
                    raw = [fd.as_raw_fd()];
                    &[ControlMessage::ScmRights(&raw)]
                }
                _ => &[],
            };
            match sendmsg::<()>(self.sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(n) => {
                    out.sent += n;
                    self.pending -= n;
                    if out.sent == out.bytes.len() {
                        self.wq.pop_front();
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes everything, blocking in poll(2) while the socket is full.
    /// Used at start-up and teardown where there is no event loop yet.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.queued() > 0 {
            self.write()?;
            if self.queued() > 0 {
                crate::poll::wait_writable(self.sock.as_fd())?;
            }
        }
        Ok(())
    }

    /// Reads what is available. Returns the number of bytes read; 0 means
    /// the peer closed the channel. `WouldBlock` is returned as an error.
    pub fn read(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 65536];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(v) = c {
                            // SAFETY: the kernel just installed these descriptors in
                            // our table; nothing else owns them.
                            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if !fds.is_empty() && !self.allow_fdpass {
            return Err(invalid("descriptor received on a channel without fd passing".into()));
        }
        self.rfds.extend(fds);
        self.append(&buf[..n]);
        buf[..n].zeroize();
        Ok(n)
    }

    /// Appends to the reassembly buffer. Growing copies into a new buffer
    /// and zeroizes the old one (a `realloc` could leave it in freed memory).
    fn append(&mut self, bytes: &[u8]) {
        let need = self.rbuf.len() + bytes.len();
        if need > self.rbuf.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(need.max(2 * self.rbuf.capacity())));
            grown.extend_from_slice(&self.rbuf);
            self.rbuf = grown;
        }
        self.rbuf.extend_from_slice(bytes);
    }

    /// Takes the next complete message, if one is buffered.
    pub fn get(&mut self) -> io::Result<Option<Imsg>> {
        let Some(head) = self.rbuf.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        let (hdr, has_fd) = ImsgHdr::parse(head);
        let len = hdr.len as usize;
        if len < HEADER_SIZE || len > self.maxsize {
            return Err(invalid(format!("imsg type {}: bad length {len}", hdr.ty)));
        }
        if self.rbuf.len() < len {
            return Ok(None);
        }
        let fd = if has_fd {
            Some(
                self.rfds
                    .pop_front()
                    .ok_or_else(|| invalid(format!("imsg type {}: fd mark without a descriptor", hdr.ty)))?,
            )
        } else {
            None
        };
        let data = Zeroizing::new(self.rbuf[HEADER_SIZE..len].to_vec());
        // The rest moves to the front; the `len` bytes past the new end
        // still hold the tail's old copy.
        self.rbuf.drain(..len);
        self.rbuf.spare_capacity_mut()[..len].zeroize();
        Ok(Some(Imsg { hdr, data, fd }))
    }

    /// Every complete message already buffered, without reading the
    /// socket. A child's start-up read may have taken messages sent after
    /// `ConfDone` (a role change) into the buffer: poll(2) will not report
    /// them, so its loop takes them from here first.
    pub fn buffered(&mut self) -> io::Result<Vec<Imsg>> {
        let mut v = Vec::new();
        while let Some(m) = self.get()? {
            v.push(m);
        }
        Ok(v)
    }

    /// Blocks until a whole message arrives. Used by a child before its event
    /// loop starts, to receive its configuration.
    pub fn recv_blocking(&mut self) -> io::Result<Imsg> {
        loop {
            if let Some(m) = self.get()? {
                return Ok(m);
            }
            crate::poll::wait_readable(self.sock.as_fd())?;
            match self.read() {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "imsg channel closed")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for ImsgBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for ImsgBuf {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A connected non-blocking, close-on-exec stream socketpair.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair as sp, AddressFamily, SockFlag, SockType};
    Ok(sp(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn pair() -> (ImsgBuf, ImsgBuf) {
        let (a, b) = socketpair().unwrap();
        let (mut a, mut b) = (ImsgBuf::new(a), ImsgBuf::new(b));
        a.allow_fdpass();
        b.allow_fdpass();
        (a, b)
    }

    /// A message that arrived in the same read as the last start-up
    /// message is kept, and handed out without another read.
    #[test]
    fn messages_read_with_the_last_startup_message_are_kept() {
        let (x, y) = socketpair().unwrap();
        let (mut parent, mut child) = (ImsgBuf::new(x), ImsgBuf::new(y));
        parent.compose(4, 0, None, &[]).unwrap();
        parent.compose(6, 0, None, &[1]).unwrap();
        parent.flush().unwrap();
        assert_eq!(child.recv_blocking().unwrap().hdr.ty, 4);
        let rest = child.buffered().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].hdr.ty, rest[0].data.as_slice()), (6, &[1u8][..]));
        assert!(child.buffered().unwrap().is_empty());
    }

    #[test]
    fn the_high_water_mark_follows_what_the_peer_takes() {
        let (mut a, mut b) = pair();
        a.set_maxsize(CHILD_MAXSIZE);
        b.set_maxsize(CHILD_MAXSIZE);
        let chunk = vec![0x5au8; 64 << 10];
        let mut composed = 0;
        while !a.over_high_water() {
            a.compose(9, 0, None, &chunk).unwrap();
            composed += 1;
            a.write().unwrap();
        }
        // The peer reads nothing: the socket buffer filled, the rest waits.
        assert!(a.queued_bytes() > WRITE_HIGH_WATER);
        assert!(a.queued_bytes() <= WRITE_HIGH_WATER + HEADER_SIZE + chunk.len());
        let mut got = 0;
        while got < composed {
            a.write().unwrap();
            // WouldBlock when the peer has nothing yet: read again later.
            let _ = b.read();
            got += b.buffered().unwrap().len();
        }
        assert_eq!((a.queued(), a.queued_bytes()), (0, 0));
        assert!(!a.over_high_water());
    }

    #[test]
    fn payloads_leave_no_copy_behind() {
        let (mut a, mut b) = pair();
        a.compose_parts(1, 0, None, &[&[7], b"key-one"]).unwrap();
        a.compose(2, 0, None, b"key-two").unwrap();
        a.flush().unwrap();
        let m1 = b.recv_blocking().unwrap();
        assert_eq!(m1.data.as_slice(), b"\x07key-one");
        // The second message was read with the first and moved to the front
        // of the buffer intact; the bytes behind it are zero.
        assert_eq!(b.rbuf.len(), HEADER_SIZE + 7);
        let stale = &b.rbuf.spare_capacity_mut()[..HEADER_SIZE + 8];
        // SAFETY: these bytes were initialized by the read, then zeroized.
        assert!(stale.iter().all(|x| unsafe { x.assume_init() } == 0));
        let m2 = b.recv_blocking().unwrap();
        assert_eq!(m2.data.as_slice(), b"key-two");
    }

    #[test]
    fn header_layout_is_libutils() {
        let hdr = ImsgHdr { ty: 7, len: 20, peerid: 3, pid: 99 };
        let b = hdr.emit(true);
        assert_eq!(&b[0..4], &7u32.to_ne_bytes());
        assert_eq!(&b[4..8], &(20u32 | FD_MARK).to_ne_bytes());
        assert_eq!(&b[8..12], &3u32.to_ne_bytes());
        assert_eq!(&b[12..16], &99u32.to_ne_bytes());
        assert_eq!(ImsgHdr::parse(&b), (hdr, true));
        assert_eq!(ImsgHdr::parse(&hdr.emit(false)), (hdr, false));
    }

    #[test]
    fn messages_and_fds_cross() {
        let (mut a, mut b) = pair();
        let mut f = tempfile();
        f.write_all(b"secret").unwrap();
        a.compose(1, 0, None, b"hello").unwrap();
        a.compose(2, 5, Some(f.into()), b"").unwrap();
        a.compose(3, 0, None, &[0u8; 5000]).unwrap();
        a.flush().unwrap();
        let m1 = b.recv_blocking().unwrap();
        assert_eq!((m1.hdr.ty, m1.data.as_slice(), m1.fd.is_none()), (1, &b"hello"[..], true));
        assert_eq!(m1.hdr.pid, std::process::id());
        let m2 = b.recv_blocking().unwrap();
        assert_eq!((m2.hdr.ty, m2.hdr.peerid, m2.data.len()), (2, 5, 0));
        let mut file = std::fs::File::from(m2.fd.expect("fd passed"));
        let mut s = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "secret");
        let m3 = b.recv_blocking().unwrap();
        assert_eq!(m3.data.len(), 5000);
    }

    #[test]
    fn oversize_and_unpermitted_fd_are_refused() {
        let (a, _b) = socketpair().unwrap();
        let mut a = ImsgBuf::new(a);
        assert!(a.compose(1, 0, None, &[0u8; MAX_IMSGSIZE]).is_err());
        assert!(a.compose(1, 0, Some(tempfile().into()), b"").is_err());
        a.set_maxsize(1 << 20);
        assert!(a.compose(1, 0, None, &[0u8; MAX_IMSGSIZE]).is_ok());
    }

    #[test]
    fn bad_framing_is_an_error() {
        let (a, b) = socketpair().unwrap();
        let mut raw = std::fs::File::from(a);
        let mut b = ImsgBuf::new(b);
        // len below the header size
        raw.write_all(&ImsgHdr { ty: 1, len: 3, peerid: 0, pid: 0 }.emit(false)).unwrap();
        b.recv_blocking().unwrap_err();
        // fd mark without a descriptor
        let (a, b) = socketpair().unwrap();
        let mut raw = std::fs::File::from(a);
        let mut b = ImsgBuf::new(b);
        b.allow_fdpass();
        raw.write_all(&ImsgHdr { ty: 1, len: 16, peerid: 0, pid: 0 }.emit(true)).unwrap();
        b.recv_blocking().unwrap_err();
    }

    #[test]
    fn eof_is_reported() {
        let (a, b) = socketpair().unwrap();
        drop(a);
        let err = ImsgBuf::new(b).recv_blocking().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn tempfile() -> std::fs::File {
        let path =
            std::env::temp_dir().join(format!("imsg-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
