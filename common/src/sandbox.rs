//! Confinement of the child processes.
//!
//! OpenBSD: chroot to an empty directory, drop to the unprivileged user, then
//! pledge(2) with the role's promises. Children open no files, so unveil(2) is
//! not needed: without "rpath"/"wpath" they cannot open anything anyway.
//!
//! Linux has no pledge: the child chroots, drops to the user, clears its
//! capability bounding, ambient and inheritable sets (so nothing can regain a
//! capability, even through a setuid binary) and sets no_new_privs; then,
//! in place of pledge(2), installs a seccomp-bpf allow-list built from the
//! same promises ([`crate::seccomp`]). The regress test reads
//! /proc/PID/status of each child to prove it.

use std::ffi::CString;
use std::io;
use std::path::Path;

use nix::unistd::{chdir, chroot, setgroups, setresgid, setresuid, Gid, Uid, User};

/// The empty directory children chroot to.
pub const CHROOT_DIR: &str = "/var/empty";

/// Looks up the unprivileged user's uid and gid (in the parent).
pub fn resolve_user(name: &str) -> io::Result<(u32, u32)> {
    match User::from_name(name)? {
        Some(u) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown user \"{name}\": create it (useradd -r -d {CHROOT_DIR} -s /usr/sbin/nologin {name}) or set `user` in vpnsyncd.conf"),
        )),
    }
}

/// Makes sure the chroot directory exists, belongs to root and is not writable
/// by anyone else (a child's root must not be a place it can plant files).
pub fn prepare_chroot(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new().mode(0o755).recursive(true).create(dir)?;
    }
    let md = std::fs::metadata(dir)?;
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{}: must be a directory owned by root and writable only by root",
            dir.display()
        )));
    }
    Ok(())
}

/// Drops the calling child to `uid`/`gid` inside `root`. Fails unless every
/// step succeeded: a half-confined child must not run.
pub fn drop_privileges(uid: u32, gid: u32, root: &Path) -> io::Result<()> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if uid.is_root() {
        return Err(io::Error::other("refusing to run a child as root: set `user` to an unprivileged user"));
    }
    chroot(root).map_err(|e| io::Error::other(format!("chroot {}: {e}", root.display())))?;
    chdir("/")?;
    #[cfg(target_os = "linux")]
    linux::drop_bounding_set()?;
    setgroups(&[gid])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    #[cfg(target_os = "linux")]
    linux::finish()?;
    Ok(())
}

/// Restricts the process to `promises`: pledge(2) on OpenBSD, the seccomp
/// allow-list of the same promises on Linux. Called once the child holds
/// every descriptor it will use.
///
/// No unveil(2) follows: the children pledge no rpath/wpath/cpath, so they
/// cannot name any file at all, and the parent must reread whatever paths a
/// reloaded vpnsyncd.conf names (as bgpd's parent does).
pub fn pledge(promises: &str) -> io::Result<()> {
    let p = CString::new(promises).map_err(|_| io::Error::other("NUL in pledge promises"))?;
    #[cfg(target_os = "openbsd")]
    {
        // SAFETY: p is a valid C string; NULL execpromises leaves them unchanged.
        if unsafe { libc::pledge(p.as_ptr(), std::ptr::null()) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    crate::seccomp::install(promises)?;
    #[cfg(not(target_os = "openbsd"))]
    let _ = p;
    Ok(())
}

/// Makes a system call that no child's promises allow (ptrace(2)), for the
/// regress test that proves a confined child dies of it. Returns only if
/// the call was not stopped.
pub fn forbidden_syscall() {
    #[cfg(target_os = "linux")]
    // SAFETY: PTRACE_TRACEME takes no pointers.
    unsafe {
        libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0)
    };
    #[cfg(target_os = "openbsd")]
    // SAFETY: PT_TRACE_ME takes no pointers.
    unsafe {
        libc::ptrace(libc::PT_TRACE_ME, 0, std::ptr::null_mut(), 0)
    };
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    /// Removes every capability from the bounding set (needs CAP_SETPCAP,
    /// so it runs before the uid change).
    pub fn drop_bounding_set() -> io::Result<()> {
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == -1 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the kernel's last capability
                }
                return Err(io::Error::other(format!("PR_CAPBSET_DROP {cap}: {e}")));
            }
        }
        Ok(())
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

    /// After the uid change: clears the remaining sets, sets no_new_privs and
    /// checks that nothing is left.
    pub fn finish() -> io::Result<()> {
        let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        // SAFETY: header and two data structs as capset(2) requires.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_mut_ptr()) } == -1 {
            return Err(io::Error::other(format!("capset: {}", io::Error::last_os_error())));
        }
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            return Err(io::Error::other(format!("no_new_privs: {}", io::Error::last_os_error())));
        }
        let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        // SAFETY: as for capset.
        if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        if data.iter().any(|d| d.effective | d.permitted | d.inheritable != 0) {
            return Err(io::Error::other("capabilities remain after dropping privileges"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_names_the_fix() {
        let e = resolve_user("no-such-user-vpnsyncd-test").unwrap_err();
        assert!(e.to_string().contains("unknown user \"no-such-user-vpnsyncd-test\""), "{e}");
        assert_eq!(resolve_user("root").unwrap(), (0, 0));
    }

    #[test]
    fn root_child_is_refused() {
        let e = drop_privileges(0, 0, Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("refusing to run a child as root"));
    }
}
