//! Small poll(2) helpers for the moments before an event loop runs.

use std::io;
use std::os::fd::BorrowedFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

fn wait(fd: BorrowedFd<'_>, flags: PollFlags) -> io::Result<()> {
    loop {
        match poll(&mut [PollFd::new(fd, flags)], PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until `fd` is readable (or hung up).
pub fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, PollFlags::POLLIN)
}

/// Blocks until `fd` is writable.
pub fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, PollFlags::POLLOUT)
}
