//! OpenVPN's management interface (the subset monitoring uses: version,
//! state, load-stats, status, kill, client-kill, quit), served by the
//! engine on the unix socket the parent binds (`management`), so that
//! openvpn-monitor, exporters and appliance scripts read vpnsyncd as they
//! read a stock server. [`command`] parses a line, [`answer`] answers it;
//! this module moves the bytes.
//!
//! Who may connect is the socket file's business (0600 root, or 0660 with
//! `group`): the parent binds it before the engine is confined. Every
//! resource a connection can make us hold is bounded: at most [`MAX_CONNS`]
//! connections (one more is told so and closed), an input line of at most
//! [`MAX_LINE`] bytes (a longer one is answered with an error and
//! skipped), and no command is read while more than [`HIGH_WATER`] bytes of
//! answers wait, so a connection holds at most that plus one answer. A
//! reader that takes nothing for [`STALL`] is dropped: the engine never
//! blocks on a write.

pub mod answer;
pub mod command;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{accept4, send, MsgFlags, SockFlag};

/// Open management connections at most (OpenVPN itself serves one).
pub const MAX_CONNS: usize = 8;
/// The longest command line read (OpenVPN's command buffer is 1024 bytes).
pub const MAX_LINE: usize = 1024;
/// Unsent answer bytes beyond which a connection's commands wait.
pub const HIGH_WATER: usize = 64 << 10;
/// A connection with answers waiting that takes none for this long is dropped.
pub const STALL: Duration = Duration::from_secs(10);
/// How long accepting stops after EMFILE or ENFILE.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// What the connection beyond [`MAX_CONNS`] reads before it is closed.
pub const FULL: &str = "ERROR: too many management connections, try again later\r\n";
/// The answer to a line longer than [`MAX_LINE`].
pub const TOO_LONG: &str = "ERROR: command line too long (at most 1024 bytes)\r\n";

/// One management connection: its input line, its unsent answers.
pub struct Conn {
    fd: OwnedFd,
    input: Vec<u8>,
    /// The current line passed [`MAX_LINE`]: skipped up to its end.
    overlong: bool,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// Since when answers have waited without a byte taken.
    stalled_since: Option<Instant>,
    /// The peer closed, an error happened, or `quit` was answered and sent.
    closing: bool,
    dead: bool,
}

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        let mut c = Conn {
            fd,
            input: Vec::new(),
            overlong: false,
            out: Vec::new(),
            sent: 0,
            stalled_since: None,
            closing: false,
            dead: false,
        };
        c.queue(answer::GREETING);
        c
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Whether its commands may be read now.
    fn ready(&self) -> bool {
        !self.closing && self.pending() < HIGH_WATER
    }

    /// What poll(2) should watch for.
    pub fn interest(&self) -> nix::poll::PollFlags {
        use nix::poll::PollFlags;
        let mut ev = PollFlags::empty();
        if self.ready() {
            ev |= PollFlags::POLLIN;
        }
        if self.pending() > 0 {
            ev |= PollFlags::POLLOUT;
        }
        ev
    }

    fn queue(&mut self, text: &str) {
        if self.stalled_since.is_none() && !text.is_empty() && self.pending() == 0 {
            self.stalled_since = Some(Instant::now());
        }
        self.out.extend_from_slice(text.as_bytes());
    }

    /// Sends what the socket takes now.
    fn flush(&mut self, now: Instant) {
        while self.pending() > 0 {
            match send(self.fd.as_raw_fd(), &self.out[self.sent..], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => {
                    self.sent += n;
                    self.stalled_since = Some(now);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        self.stalled_since = None;
    }

    /// Reads what the peer sent, up to a few lines' worth.
    fn fill(&mut self) {
        let mut buf = [0u8; 4096];
        while self.input.len() < 4 * MAX_LINE {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => {
                    // Answer what came before the end, then close.
                    self.closing = true;
                    return;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// The next complete line (CR and LF removed), or [`TOO_LONG`]'s
    /// marker `Err(())` for a line that was skipped.
    fn next_line(&mut self) -> Option<Result<String, ()>> {
        let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() > MAX_LINE {
                self.input.clear();
                self.overlong = true;
            }
            return None;
        };
        let line: Vec<u8> = self.input.drain(..=end).collect();
        if std::mem::take(&mut self.overlong) || line.len() > MAX_LINE + 1 {
            return Some(Err(()));
        }
        let text = String::from_utf8_lossy(&line);
        Some(Ok(text.trim_end_matches(['\r', '\n']).to_string()))
    }
}

/// The listening socket and its connections.
pub struct Mgmt {
    listener: OwnedFd,
    pub conns: Vec<Conn>,
    paused_until: Option<Instant>,
}

impl Mgmt {
    pub fn new(listener: OwnedFd) -> Mgmt {
        Mgmt { listener, conns: Vec::new(), paused_until: None }
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Whether the listener belongs in the poll set (not while accepting
    /// is paused after running out of descriptors).
    pub fn listening(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|t| now >= t)
    }

    /// Accepts what waits: greeted up to [`MAX_CONNS`], told [`FULL`] and
    /// closed beyond.
    pub fn accept(&mut self, now: Instant) {
        loop {
            let fd = match accept4(self.listener.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a fresh descriptor that we own.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR) => continue,
                Err(Errno::EMFILE | Errno::ENFILE) => {
                    log::warn!("management: out of descriptors; not accepting for {} s", ACCEPT_PAUSE.as_secs());
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    log::warn!("management: accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNS {
                log::warn!("management: refused a connection: {MAX_CONNS} are open");
                let _ = send(fd.as_raw_fd(), FULL.as_bytes(), MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
                continue;
            }
            log::debug!("management: connection accepted ({} open)", self.conns.len() + 1);
            let mut c = Conn::new(fd);
            c.flush(now);
            self.conns.push(c);
        }
    }

    /// Connection `i` is readable or writable: sends what waits, reads,
    /// and hands each complete command line to `serve`, which returns the
    /// answer and whether the connection ends after it.
    pub fn on_ready(&mut self, i: usize, now: Instant, mut serve: impl FnMut(&str) -> answer::Answer) {
        let c = &mut self.conns[i];
        c.flush(now);
        if c.ready() {
            c.fill();
        }
        while c.pending() < HIGH_WATER && !c.dead {
            match c.next_line() {
                None => break,
                Some(Err(())) => c.queue(TOO_LONG),
                Some(Ok(line)) => {
                    let a = serve(&line);
                    c.queue(&a.text);
                    if a.quit {
                        c.closing = true;
                        c.input.clear();
                        break;
                    }
                }
            }
        }
        c.flush(now);
        if c.closing && c.pending() == 0 {
            c.dead = true;
        }
    }

    /// Drops dead connections and readers stalled for [`STALL`].
    pub fn sweep(&mut self, now: Instant) {
        self.conns.retain(|c| {
            let stalled = c.pending() > 0 && c.stalled_since.is_some_and(|t| now.duration_since(t) >= STALL);
            if stalled {
                log::warn!("management: dropped a connection that read nothing for {} s", STALL.as_secs());
            }
            !c.dead && !stalled
        });
    }
}

#[cfg(test)]
mod tests;
