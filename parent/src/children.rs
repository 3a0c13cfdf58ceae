//! Starting the children: fork and re-exec of our own binary (fresh address
//! space layout per child, as bgpd does), with the child's channel on fd 3.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

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
/// channel; the child end is placed on fd 3 and every other descriptor is
/// closed on exec (all of ours are close-on-exec).
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
    // SAFETY: the closure only calls async-signal-safe dup2/fcntl.
    unsafe {
        cmd.pre_exec(move || {
            if fd == PARENT_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, PARENT_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let proc = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", kind.name())))?;
    drop::<OwnedFd>(theirs);
    let mut ibuf = ImsgBuf::new(ours);
    ibuf.allow_fdpass();
    ibuf.set_maxsize(CHILD_MAXSIZE);
    Ok(Child { kind, pid: proc.id() as i32, ibuf })
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
}
