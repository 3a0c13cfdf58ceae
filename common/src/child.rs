//! The start of every child process: confine, then receive the configuration,
//! key material and descriptors from the parent over fd 3 until `ConfDone`.
//!
//! The parent dup2()s the child's end of its socketpair to [`PARENT_FD`]
//! before exec, as bgpd and the proc.c daemons do.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec::{DecodeError, Reader};
use crate::imsg::{ImsgBuf, CHILD_MAXSIZE};
use crate::msg::{FdKind, ImsgType, KeyKind};
use crate::secret::Secret;

/// The descriptor a child finds its parent channel on.
pub const PARENT_FD: i32 = 3;

/// Test-only: names the child (`engine`, `syncer` or `carpwatch`) that makes
/// a forbidden system call when the parent next relays a `Verbose` message
/// (`vpnsyncctl log verbose`), to prove that its filter kills it. Honoured
/// only in the foreground (`-d`), which no service manager uses.
pub const FORBIDDEN_SYSCALL_TEST_ENV: &str = "VPNSYNCD_TEST_FORBIDDEN_SYSCALL";

/// Whether this child was armed by [`FORBIDDEN_SYSCALL_TEST_ENV`].
static FORBIDDEN_SYSCALL_ARMED: AtomicBool = AtomicBool::new(false);

/// What the parent hands a child before it starts working.
#[derive(Debug, Default)]
pub struct Startup {
    /// Canonical configuration text (re-parsed with `parse_str`).
    pub conf: String,
    /// Key files, each zeroized when dropped.
    pub keys: Vec<(KeyKind, Secret)>,
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
/// parent sends is ever handled with root rights. `name` and `foreground`
/// decide whether the forbidden-syscall test is armed for this child.
pub fn start(uid: u32, gid: u32, name: &str, foreground: bool) -> io::Result<(ImsgBuf, Startup)> {
    if forbidden_syscall_armed(name, foreground, std::env::var_os(FORBIDDEN_SYSCALL_TEST_ENV).as_deref()) {
        log::warn!("test: {FORBIDDEN_SYSCALL_TEST_ENV}: this child makes a forbidden system call on the next Verbose");
        FORBIDDEN_SYSCALL_ARMED.store(true, Ordering::Relaxed);
    }
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
        let mut m = ibuf.recv_blocking()?;
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::Conf => {
                st.conf = String::from_utf8(std::mem::take(&mut *m.data))
                    .map_err(|_| bad(DecodeError("configuration is not UTF-8")))?
            }
            ImsgType::KeyMaterial => st.keys.push(key_material(m.data).map_err(bad)?),
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

/// Whether the test trigger applies to child `name`: only in the foreground,
/// and only for the child the variable names.
fn forbidden_syscall_armed(name: &str, foreground: bool, var: Option<&std::ffi::OsStr>) -> bool {
    foreground && var.is_some_and(|v| v == name)
}

/// Splits a `KeyMaterial` payload into its kind and the key bytes, in place
/// (the bytes are not copied into a second buffer).
pub fn key_material(mut data: Secret) -> Result<(KeyKind, Secret), DecodeError> {
    let kind = KeyKind::from_u8(*data.first().ok_or(DecodeError("empty key message"))?)?;
    data.remove(0);
    Ok((kind, data))
}

/// Applies a `Verbose` message from the parent. An armed child (see
/// [`FORBIDDEN_SYSCALL_TEST_ENV`]) makes its forbidden system call here.
pub fn on_verbose(level: u8) {
    if FORBIDDEN_SYSCALL_ARMED.load(Ordering::Relaxed) {
        log::warn!("test: calling ptrace(2), which the filter forbids");
        crate::sandbox::forbidden_syscall();
        log::error!("test: the forbidden ptrace(2) returned: this child is not confined");
    }
    crate::log::set_verbose(level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_test_trigger_needs_the_foreground_and_the_childs_name() {
        assert!(forbidden_syscall_armed("engine", true, Some(OsStr::new("engine"))));
        assert!(!forbidden_syscall_armed("engine", false, Some(OsStr::new("engine"))), "daemon mode ignores it");
        assert!(!forbidden_syscall_armed("syncer", true, Some(OsStr::new("engine"))));
        assert!(!forbidden_syscall_armed("engine", true, None));
    }

    #[test]
    fn key_material_is_split_in_place() {
        let (kind, bytes) = key_material(Secret::new(vec![KeyKind::Sync as u8, 1, 2, 3])).unwrap();
        assert_eq!((kind, bytes.as_slice()), (KeyKind::Sync, &[1u8, 2, 3][..]));
        assert_eq!(key_material(Secret::new(Vec::new())).unwrap_err(), DecodeError("empty key message"));
        assert!(key_material(Secret::new(vec![200])).is_err());
    }
}
