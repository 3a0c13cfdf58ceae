//! The control exchange bounded in time (`-t`): a daemon that is stopped
//! or hung still accepts connections into the listen backlog (and, once
//! that is full, makes connect(2) wait), but never answers. A health check
//! such as keepalived's `vrrp_script` must fail then, not hang.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect as sys_connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no answer from the daemon within the timeout (-t)")
}

/// How long until `deadline`, or an error once it has passed.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(timed_out()),
    }
}

/// Waits for `flags` on `fd`, until the deadline if there is one.
fn wait(fd: &ImsgBuf, flags: PollFlags, deadline: Option<Instant>) -> io::Result<()> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            // Rounded up to whole milliseconds, so poll does not wake
            // before the deadline.
            Some(d) => PollTimeout::try_from(remaining(d)? + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut [PollFd::new(fd.as_fd(), flags)], timeout) {
            // The next turn finds the deadline passed.
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A non-blocking connection to the control socket at `path`. With a
/// deadline, a full listen backlog (EAGAIN) is retried until it passes.
pub fn connect(path: &str, deadline: Option<Instant>) -> io::Result<OwnedFd> {
    let Some(deadline) = deadline else {
        let stream = UnixStream::connect(path)?;
        stream.set_nonblocking(true)?;
        return Ok(OwnedFd::from(stream));
    };
    let addr = UnixAddr::new(path)?;
    loop {
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
        match sys_connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::EAGAIN | Errno::EINTR) => {
                let wait = remaining(deadline)?.min(Duration::from_millis(20));
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes the queued request, waiting while the socket is full.
pub fn flush(ibuf: &mut ImsgBuf, deadline: Option<Instant>) -> io::Result<()> {
    while ibuf.queued() > 0 {
        ibuf.write()?;
        if ibuf.queued() > 0 {
            wait(ibuf, PollFlags::POLLOUT, deadline)?;
        }
    }
    Ok(())
}

/// The next whole message of the answer.
pub fn recv(ibuf: &mut ImsgBuf, deadline: Option<Instant>) -> io::Result<Imsg> {
    loop {
        if let Some(m) = ibuf.get()? {
            return Ok(m);
        }
        wait(ibuf, PollFlags::POLLIN, deadline)?;
        match ibuf.read() {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "imsg channel closed")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}
