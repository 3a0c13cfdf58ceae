//! Starting the children: fork and re-exec of our own binary (fresh address
//! space layout per child, as bgpd does), with the child's channel on fd 3.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use vpnsyncd_common::child::PARENT_FD;
use vpnsyncd_common::imsg::{ImsgBuf, CHILD_MAXSIZE};

/// The three children, with the hidden flag that selects each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Engine,
    Syncer,
    Carpwatch,
}

impl ChildKind {
    pub const ALL: [ChildKind; 3] = [ChildKind::Engine, ChildKind::Syncer, ChildKind::Carpwatch];

    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Engine => "engine",
            ChildKind::Syncer => "syncer",
            ChildKind::Carpwatch => "carpwatch",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            ChildKind::Engine => "-E",
            ChildKind::Syncer => "-S",
            ChildKind::Carpwatch => "-C",
        }
    }
}

/// A running child and the parent's end of its channel.
pub struct Child {
    pub kind: ChildKind,
    pub pid: i32,
    pub ibuf: ImsgBuf,
    /// When it last answered a heartbeat (its start until the first one).
    pub heard: Instant,
    /// The same as Unix milliseconds (0: not yet), for `show summary`.
    pub heard_ms: u64,
}

impl Child {
    pub fn new(kind: ChildKind, pid: i32, ibuf: ImsgBuf) -> Child {
        Child { kind, pid, ibuf, heard: Instant::now(), heard_ms: 0 }
    }
}

/// What every child is started with.
pub struct ExecArgs<'a> {
    pub exe: &'a std::path::Path,
    pub uid: u32,
    pub gid: u32,
    pub foreground: bool,
    pub verbose: u8,
}

/// Forks and execs one child. Our end of the socketpair becomes its imsg
/// channel; the child end is placed on fd 3 and every descriptor above it is
/// closed at exec: ours are close-on-exec already, but the parent may have
/// inherited others from whoever started it, and those must not reach a
/// child.
pub fn spawn(kind: ChildKind, a: &ExecArgs<'_>) -> io::Result<Child> {
    let (ours, theirs) = vpnsyncd_common::imsg::socketpair()?;
    let mut cmd = Command::new(a.exe);
    cmd.arg0("vpnsyncd").arg(kind.flag()).arg("-U").arg(format!("{}:{}", a.uid, a.gid));
    if a.foreground {
        cmd.arg("-d");
    }
    for _ in 0..a.verbose {
        cmd.arg("-v");
    }
    let fd = theirs.as_raw_fd();
    let max_fd = open_max();
    // SAFETY: the closure only calls async-signal-safe dup2/fcntl/close_range.
    unsafe {
        cmd.pre_exec(move || {
            if fd == PARENT_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, PARENT_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            close_above_parent_fd(max_fd)
        });
    }
    let proc = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", kind.name())))?;
    drop::<OwnedFd>(theirs);
    let mut ibuf = ImsgBuf::new(ours);
    ibuf.allow_fdpass();
    ibuf.set_maxsize(CHILD_MAXSIZE);
    Ok(Child::new(kind, proc.id() as i32, ibuf))
}

/// One past the highest descriptor number the process can hold (the loop
/// bound of the fallback below), read before fork.
fn open_max() -> i32 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 0 {
        1024
    } else {
        n.min(i64::from(i32::MAX)) as i32
    }
}

/// Linux: marks every descriptor above [`PARENT_FD`] close-on-exec with one
/// close_range(2) (5.11 and later), or one fcntl(2) each on older kernels.
/// Marking rather than closing keeps the pipe through which std reports a
/// failed exec.
#[cfg(target_os = "linux")]
fn close_above_parent_fd(max_fd: i32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let first = (PARENT_FD + 1) as libc::c_uint;
    // SAFETY: integer arguments only.
    if unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return Ok(());
    }
    for fd in PARENT_FD + 1..max_fd {
        // SAFETY: as above; EBADF for a number that is not open is expected.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// OpenBSD: closefrom(2). It also closes the pipe through which std
/// reports a failed exec, so such a failure shows as the child's death.
#[cfg(target_os = "openbsd")]
fn close_above_parent_fd(_max_fd: i32) -> io::Result<()> {
    // SAFETY: integer argument only.
    if unsafe { libc::closefrom(PARENT_FD + 1) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Describes how a child ended, for the log line that names it.
pub fn describe_exit(status: nix::sys::wait::WaitStatus) -> String {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("killed by signal {} ({}){}", sig as i32, sig.as_str(), if core { ", core dumped" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

/// Whether a child ended as the parent's teardown asks it to: by that
/// SIGTERM or with status 0. Any other end is an error worth the log's
/// attention even while stopping (it died on its own, e.g. of a sibling's
/// death, before the SIGTERM reached it).
pub fn stopped_as_told(status: nix::sys::wait::WaitStatus) -> bool {
    use nix::sys::wait::WaitStatus;
    matches!(status, WaitStatus::Exited(_, 0) | WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGTERM, _))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn exit_descriptions() {
        let p = Pid::from_raw(1);
        assert_eq!(describe_exit(WaitStatus::Exited(p, 1)), "exited with status 1");
        assert_eq!(describe_exit(WaitStatus::Signaled(p, Signal::SIGKILL, false)), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            describe_exit(WaitStatus::Signaled(p, Signal::SIGSEGV, true)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
    }

    #[test]
    fn only_sigterm_or_status_0_is_a_stop_as_told() {
        let p = Pid::from_raw(1);
        assert!(stopped_as_told(WaitStatus::Exited(p, 0)));
        assert!(stopped_as_told(WaitStatus::Signaled(p, Signal::SIGTERM, false)));
        assert!(!stopped_as_told(WaitStatus::Exited(p, 1)));
        assert!(!stopped_as_told(WaitStatus::Signaled(p, Signal::SIGSYS, false)));
        assert!(!stopped_as_told(WaitStatus::Signaled(p, Signal::SIGKILL, false)));
    }
}
