//! The start of every child process: confine, then receive the configuration,
//! key material and descriptors from the parent over fd 3 until `ConfDone`.
//!
//! The parent dup2()s the child's end of its socketpair to [`PARENT_FD`]
//! before exec, as bgpd and the proc.c daemons do.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use crate::codec::{DecodeError, Reader};
use crate::imsg::{ImsgBuf, CHILD_MAXSIZE};
use crate::msg::{FdKind, ImsgType, KeyKind};

/// The descriptor a child finds its parent channel on.
pub const PARENT_FD: i32 = 3;

/// What the parent hands a child before it starts working.
#[derive(Debug, Default)]
pub struct Startup {
    /// Canonical configuration text (re-parsed with `parse_str`).
    pub conf: String,
    pub keys: Vec<(KeyKind, Vec<u8>)>,
    pub fds: Vec<(FdKind, OwnedFd)>,
}

impl Startup {
    /// The bytes of one key file, if the parent sent it.
    pub fn key(&self, kind: KeyKind) -> Option<&[u8]> {
        self.keys.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
    }

    /// Removes and returns every descriptor of `kind`, in the order sent.
    pub fn take_fds(&mut self, kind: FdKind) -> Vec<OwnedFd> {
        let (mine, rest) = std::mem::take(&mut self.fds).into_iter().partition(|(k, _)| *k == kind);
        self.fds = rest;
        mine.into_iter().map(|(_, fd)| fd).collect()
    }
}

fn bad(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Takes fd 3, drops privileges to `uid`/`gid` in the empty chroot, then
/// receives the start-up messages. Privileges go first so that nothing the
/// parent sends is ever handled with root rights.
pub fn start(uid: u32, gid: u32) -> io::Result<(ImsgBuf, Startup)> {
    // SAFETY: the parent placed our channel on PARENT_FD before exec and
    // nothing else in this process refers to it.
    let sock = unsafe { OwnedFd::from_raw_fd(PARENT_FD) };
    nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    crate::sandbox::drop_privileges(uid, gid, Path::new(crate::sandbox::CHROOT_DIR))?;
    let mut ibuf = ImsgBuf::new(sock);
    ibuf.allow_fdpass();
    ibuf.set_maxsize(CHILD_MAXSIZE);
    let mut st = Startup::default();
    loop {
        let m = ibuf.recv_blocking()?;
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::Conf => {
                st.conf = String::from_utf8(m.data).map_err(|_| bad(DecodeError("configuration is not UTF-8")))?
            }
            ImsgType::KeyMaterial => {
                let (kind, bytes) = m.data.split_first().ok_or_else(|| bad(DecodeError("empty key message")))?;
                st.keys.push((KeyKind::from_u8(*kind).map_err(bad)?, bytes.to_vec()));
            }
            ImsgType::Fd => {
                let kind = FdKind::from_u8(Reader::new(&m.data).u8().map_err(bad)?).map_err(bad)?;
                let fd = m.fd.ok_or_else(|| bad(DecodeError("fd message without a descriptor")))?;
                st.fds.push((kind, fd));
            }
            ImsgType::ConfDone => return Ok((ibuf, st)),
            other => return Err(io::Error::other(format!("unexpected {other:?} during start-up"))),
        }
    }
}
