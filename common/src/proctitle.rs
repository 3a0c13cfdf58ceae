//! Process titles: the four processes are one binary, so without a title
//! ps(1) cannot tell the engine from the syncer.
//!
//! OpenBSD: setproctitle(3) replaces the command line that ps and pgrep show
//! with the program name and the title, "vpnsyncd: engine", as bgpd's and
//! relayd's processes do; etc/rc.d/vpnsyncd finds the parent by its title
//! ("vpnsyncd: parent", its `pexp`).
//!
//! Linux: prctl(PR_SET_NAME) sets the command name (comm) that `ps -e`, top
//! and pgrep show, "vpnsyncd-engine". The comm holds 15 bytes, too few for
//! "vpnsyncd: carpwatch", so the names are shorter. The command line is left
//! alone: rewriting it in place needs the memory of the original argv, which
//! Rust's runtime does not hand out, or PR_SET_MM (CAP_SYS_RESOURCE, gone in
//! the children); it still shows the child's -E/-S/-C flag. The parent keeps
//! the comm "vpnsyncd" it got from exec(2), which systemd and scripts match.

/// Which process this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Title {
    Parent,
    Engine,
    Syncer,
    Carpwatch,
}

impl Title {
    /// The title on OpenBSD (after "vpnsyncd: ") and the comm on Linux.
    fn names(self) -> (&'static std::ffi::CStr, &'static std::ffi::CStr) {
        match self {
            Title::Parent => (c"parent", c"vpnsyncd"),
            Title::Engine => (c"engine", c"vpnsyncd-engine"),
            Title::Syncer => (c"syncer", c"vpnsyncd-syncer"),
            Title::Carpwatch => (c"carpwatch", c"vpnsyncd-carp"),
        }
    }
}

/// Sets the title of the calling process. Call it before any thread starts:
/// on Linux the comm is per thread, and new threads copy the caller's.
/// A failure is logged, not returned: the title is cosmetic.
pub fn set(t: Title) {
    let (title, comm) = t.names();
    #[cfg(target_os = "openbsd")]
    {
        let _ = comm;
        // SAFETY: a constant "%s" format with one valid C string argument.
        unsafe { libc::setproctitle(c"%s".as_ptr(), title.as_ptr()) };
    }
    #[cfg(target_os = "linux")]
    {
        let _ = title;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        if unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) } == -1 {
            log::warn!("process title {comm:?}: {}", std::io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "openbsd", target_os = "linux")))]
    let _ = (title, comm);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Title; 4] = [Title::Parent, Title::Engine, Title::Syncer, Title::Carpwatch];

    #[test]
    fn linux_names_fit_the_comm() {
        // The kernel cuts a longer name to 15 bytes without a word.
        for t in ALL {
            let (_, comm) = t.names();
            assert!(comm.to_bytes().len() <= 15, "{comm:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sets_the_comm_of_the_calling_thread() {
        // A thread of its own: the test harness's threads keep their names.
        let comm = std::thread::spawn(|| {
            set(Title::Engine);
            std::fs::read_to_string("/proc/thread-self/comm").unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(comm, "vpnsyncd-engine\n");
    }
}
