//! Linux counterpart of pledge(2): a seccomp-bpf allow-list built from the
//! same promise string a child passes to [`crate::sandbox::pledge`].
//!
//! Each promise names the system calls a child really makes under it once
//! set-up is over (measured with `strace -f -c` over the lab runs, see
//! docs/PRIVSEP.md). The lists are tighter than OpenBSD's promises: the
//! parent opened every socket, so no promise lets a child create, bind or
//! connect one. Any other system call kills the whole child
//! (`SECCOMP_RET_KILL_PROCESS`), and the parent, seeing a child die, demotes
//! the node and stops.
//!
//! One exception is made for syslog(3): when the log daemon went away, glibc
//! tries to reconnect with `socket(AF_UNIX, SOCK_DGRAM)`. In the chroot that
//! could never succeed, so a second filter answers it with `EACCES` instead
//! of killing the child for a syslogd restart.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// The programs of a child: the allow-list (anything else kills), the
/// `EACCES` answers and the `ENOSYS` ones.
pub struct Programs {
    allow: BpfProgram,
    refuse: BpfProgram,
    nosys: BpfProgram,
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("seccomp: {e}"))
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> io::Result<SeccompCondition> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(err)
}

/// Allows `nr` whatever its arguments (overrides narrower rules).
fn any(rules: &mut Rules, nr: i64) {
    rules.insert(nr, Vec::new());
}

/// Allows `nr` when every condition holds (or-ed with earlier rules for it).
fn when(rules: &mut Rules, nr: i64, conds: Vec<SeccompCondition>) -> io::Result<()> {
    let rule = SeccompRule::new(conds).map_err(err)?;
    match rules.get_mut(&nr) {
        Some(v) if v.is_empty() => {} // already allowed with any arguments
        Some(v) => v.push(rule),
        None => {
            rules.insert(nr, vec![rule]);
        }
    }
    Ok(())
}

/// Allows `nr` when argument `index` equals one of `values`.
fn one_of(rules: &mut Rules, nr: i64, index: u8, values: &[u64]) -> io::Result<()> {
    for v in values {
        when(rules, nr, vec![arg(index, SeccompCmpOp::Eq, *v)?])?;
    }
    Ok(())
}

/// What every child does: compute, allocate, tell the time, log, and move
/// bytes on descriptors it already holds (imsg with SCM_RIGHTS, UDP batches,
/// the tun device, netlink).
///
/// Measured in the lab (regress/openvpn.sh under `strace -ff`, after the
/// filter): the engine made write, poll, read, recvmmsg, sendmmsg, recvmsg,
/// sendmsg, sendto, getrandom, accept4, getpid, getsockopt, fcntl, close and
/// brk; the syncer and carpwatch a subset. The rest are paths the lab does
/// not reach but a child must survive: the allocator's large blocks
/// (mmap, munmap, mremap, madvise, mprotect), clock_gettime where the vDSO
/// falls back to the kernel, recvfrom on the sync and netlink sockets,
/// futex, rt_sigreturn/restart_syscall after a stop signal (SIGSTOP,
/// SIGCONT) interrupted a poll, and sigaltstack, with which Rust's exit
/// removes the main thread's signal stack (without it a child that exits
/// on an error, e.g. when its parent hangs, dies of SIGSYS instead).
fn stdio(r: &mut Rules) -> io::Result<()> {
    use libc::*;
    for nr in [
        SYS_read,
        SYS_write,
        // A tun with a virtio_net_hdr: header and packet in one write.
        SYS_writev,
        SYS_close,
        SYS_recvfrom,
        SYS_recvmsg,
        SYS_recvmmsg,
        SYS_sendto,
        SYS_sendmsg,
        SYS_sendmmsg,
        SYS_clock_gettime,
        SYS_getpid,
        SYS_getrandom,
        SYS_brk,
        SYS_munmap,
        SYS_mremap,
        SYS_madvise,
        SYS_futex,
        SYS_rt_sigreturn,
        SYS_restart_syscall,
        SYS_sigaltstack,
        SYS_exit_group,
    ] {
        any(r, nr);
    }
    // poll(2) is ppoll in glibc where the kernel has no poll (aarch64,
    // riscv64); the engine's receive moderation uses ppoll everywhere for
    // its microsecond timeout (engine/src/moderate.rs). Both are in
    // pledge's "stdio".
    #[cfg(target_arch = "x86_64")]
    any(r, SYS_poll);
    any(r, SYS_ppoll);
    // Memory, never executable: nothing is loaded after set-up.
    let no_exec = || arg(2, SeccompCmpOp::MaskedEq(PROT_EXEC as u64), 0);
    when(r, SYS_mmap, vec![no_exec()?])?;
    when(r, SYS_mprotect, vec![no_exec()?])?;
    // Descriptor flags (non-blocking, close-on-exec), nothing else.
    one_of(r, SYS_fcntl, 1, &[F_GETFD as u64, F_SETFD as u64, F_GETFL as u64, F_SETFL as u64])?;
    // glibc's syslog(3) reconnect, answered by the refuse filter.
    when(r, SYS_socket, vec![arg(0, SeccompCmpOp::Eq, AF_UNIX as u64)?])?;
    threads(r)
}

/// Threads, which pledge's "stdio" allows (__tfork): the engine's data
/// threads (engine/src/shard.rs, `data-threads`). glibc's pthread_create
/// blocks signals around clone, and the new thread registers its robust
/// futex list and its rseq area, names itself (prctl PR_SET_NAME) and
/// reads its affinity and thread id (pthread_getattr_np, for its stack
/// guard).
/// clone3, whose flags lie in memory a filter cannot read, is answered
/// ENOSYS (the nosys program), on which glibc falls back to clone, which
/// is allowed for threads only: a new process (no CLONE_THREAD) kills.
fn threads(r: &mut Rules) -> io::Result<()> {
    use libc::*;
    for nr in [
        SYS_rt_sigprocmask,
        SYS_set_robust_list,
        SYS_rseq,
        SYS_sched_getaffinity,
        SYS_gettid,
        SYS_exit,
        SYS_sched_yield,
        SYS_clone3,
    ] {
        any(r, nr);
    }
    let thread = CLONE_THREAD as u64;
    when(r, SYS_clone, vec![arg(0, SeccompCmpOp::MaskedEq(thread), thread)?])?;
    when(r, SYS_prctl, vec![arg(0, SeccompCmpOp::Eq, PR_SET_NAME as u64)?])?;
    // The first thread made installs a signal action (measured in the lab
    // under SECCOMP_RET_LOG); sigaction is in pledge's "stdio" too.
    any(r, SYS_rt_sigaction);
    Ok(())
}

/// The engine's control socket: accepting a connection and reading the
/// caller's credentials (the engine refuses non-root callers).
fn unix(r: &mut Rules) -> io::Result<()> {
    any(r, libc::SYS_accept4);
    when(
        r,
        libc::SYS_getsockopt,
        vec![arg(1, SeccompCmpOp::Eq, libc::SOL_SOCKET as u64)?, arg(2, SeccompCmpOp::Eq, libc::SO_PEERCRED as u64)?],
    )
}

/// The allow-list for a pledge(2) promise string. Promises without a Linux
/// meaning are refused, so a typo cannot silently widen a filter.
fn rules(promises: &str) -> io::Result<Rules> {
    let mut r = Rules::new();
    stdio(&mut r)?;
    for p in promises.split_ascii_whitespace() {
        match p {
            "stdio" => {}
            // The parent opened, bound and configured the UDP sockets and
            // the netlink socket: sending and receiving is stdio's part.
            "inet" | "route" => {}
            "unix" => unix(&mut r)?,
            other => return Err(err(format!("no Linux filter for pledge promise \"{other}\""))),
        }
    }
    if !promises.split_ascii_whitespace().any(|p| p == "stdio") {
        return Err(err(format!("promises \"{promises}\" lack \"stdio\", which every child needs")));
    }
    Ok(r)
}

fn arch() -> io::Result<TargetArch> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        err(format!("no filter for the {} architecture (x86_64, aarch64 and riscv64 have one)", std::env::consts::ARCH))
    })
}

/// Compiles the programs for `promises` (allocates; do it before
/// [`apply`], which must not).
pub fn compile(promises: &str) -> io::Result<Programs> {
    let arch = arch()?;
    let allow = SeccompFilter::new(rules(promises)?, SeccompAction::KillProcess, SeccompAction::Allow, arch)
        .and_then(BpfProgram::try_from)
        .map_err(err)?;
    let mut refuse = Rules::new();
    any(&mut refuse, libc::SYS_socket);
    let refuse = SeccompFilter::new(refuse, SeccompAction::Allow, SeccompAction::Errno(libc::EACCES as u32), arch)
        .and_then(BpfProgram::try_from)
        .map_err(err)?;
    let mut nosys = Rules::new();
    any(&mut nosys, libc::SYS_clone3);
    let nosys = SeccompFilter::new(nosys, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)
        .and_then(BpfProgram::try_from)
        .map_err(err)?;
    Ok(Programs { allow, refuse, nosys })
}

/// Installs the programs on the calling thread (children have one when
/// they install them; the threads they start later inherit them). From
/// here on the kernel's verdict for a call is the strictest of them: kill
/// for anything not allowed, `EACCES` for an AF_UNIX socket(), `ENOSYS`
/// for clone3. The allow-list goes last, since it forbids seccomp(2)
/// itself.
pub fn apply(p: &Programs) -> io::Result<()> {
    seccompiler::apply_filter(&p.refuse).map_err(err)?;
    seccompiler::apply_filter(&p.nosys).map_err(err)?;
    seccompiler::apply_filter(&p.allow).map_err(err)
}

/// Compiles and installs the filter for `promises`.
pub fn install(promises: &str) -> io::Result<()> {
    apply(&compile(promises)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_has_a_filter() {
        for promises in ["stdio inet unix", "stdio inet", "stdio route"] {
            let p = compile(promises).unwrap();
            assert!(!p.allow.is_empty() && !p.refuse.is_empty(), "{promises}");
        }
    }

    #[test]
    fn only_the_engine_may_accept() {
        assert!(rules("stdio inet unix").unwrap().contains_key(&libc::SYS_accept4));
        assert!(!rules("stdio inet").unwrap().contains_key(&libc::SYS_accept4));
        assert!(!rules("stdio route").unwrap().contains_key(&libc::SYS_bind));
    }

    #[test]
    fn unknown_or_missing_promises_are_refused() {
        let e = compile("stdio inet dns").err().unwrap().to_string();
        assert_eq!(e, "seccomp: no Linux filter for pledge promise \"dns\"");
        let e = compile("inet").err().unwrap().to_string();
        assert!(e.contains("lack \"stdio\""), "{e}");
    }

    /// How a forked child that installed `promises` and then ran `f` ended.
    fn run_confined(promises: &str, f: fn()) -> nix::sys::wait::WaitStatus {
        use nix::unistd::{fork, ForkResult};
        // Compiled before fork: the child of a multi-threaded test process
        // must not allocate.
        let p = compile(promises).unwrap();
        // SAFETY: the child only makes raw system calls, then _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if apply(&p).is_err() {
                    // SAFETY: _exit is always safe to call.
                    unsafe { libc::_exit(2) };
                }
                f();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).unwrap(),
        }
    }

    /// A confined child may start threads (the engine's data threads),
    /// not processes.
    #[test]
    fn threads_but_no_processes() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let ok = run_confined("stdio inet unix", || {
            let t = std::thread::Builder::new().name("data1".into()).spawn(|| 7);
            if !t.is_ok_and(|t| t.join().ok() == Some(7)) {
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(3) };
            }
        });
        assert!(matches!(ok, WaitStatus::Exited(_, 0)), "{ok:?}");
        // SAFETY: fork in a child that then only exits.
        let killed = run_confined("stdio inet unix", || unsafe {
            if libc::fork() == 0 {
                libc::_exit(0);
            }
        });
        assert!(matches!(killed, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "{killed:?}");
    }

    #[test]
    fn allowed_calls_run_and_a_forbidden_one_kills() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let ok = run_confined("stdio inet", || {
            // SAFETY: plain system calls on no memory of ours.
            unsafe {
                libc::getpid();
                // AF_UNIX socket(): refused with EACCES, not killed.
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
                if fd != -1 || *libc::__errno_location() != libc::EACCES {
                    libc::_exit(3);
                }
                // Writable memory, as the allocator maps it.
                let rw = libc::PROT_READ | libc::PROT_WRITE;
                let p = libc::mmap(std::ptr::null_mut(), 1 << 20, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
                if p == libc::MAP_FAILED || libc::munmap(p, 1 << 20) != 0 {
                    libc::_exit(4);
                }
            }
        });
        assert!(matches!(ok, WaitStatus::Exited(_, 0)), "{ok:?}");
        // SAFETY: a plain system call.
        let killed = run_confined("stdio inet", || unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        });
        assert!(matches!(killed, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "{killed:?}");
        let killed = run_confined("stdio inet unix", || {
            crate::sandbox::forbidden_syscall();
        });
        assert!(matches!(killed, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "{killed:?}");
        // SAFETY: a fresh anonymous mapping, never touched.
        let killed = run_confined("stdio route", || unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_EXEC, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        });
        assert!(matches!(killed, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "{killed:?}");
    }
}
