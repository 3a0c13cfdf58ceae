//! Demotion: telling CARP/VRRP that this machine must not be master, while
//! its session table is incomplete or one of its processes died.
//!
//! OpenBSD: the carp demote counter of an interface group (SIOCSIFGATTR adds
//! to it, like bgpd's carp.c). Linux: a file that keepalived watches with
//! `track_file` (weight -1): it holds the demotion value, or 0.

use std::io;
use std::path::PathBuf;

/// Where and by how much to demote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demoter {
    /// OpenBSD interface group, e.g. "carp".
    pub group: String,
    /// Linux keepalived track file.
    pub file: Option<PathBuf>,
    pub value: u8,
    demoted: bool,
}

impl Demoter {
    pub fn new(group: String, file: Option<PathBuf>, value: u8) -> Self {
        Demoter { group, file, value, demoted: false }
    }

    /// Whether we currently hold a demotion.
    pub fn is_demoted(&self) -> bool {
        self.demoted
    }

    /// Demotes (`on`) or lifts our demotion; idempotent.
    pub fn set(&mut self, on: bool) -> io::Result<()> {
        if on == self.demoted {
            return Ok(());
        }
        self.apply(on)?;
        self.demoted = on;
        log::info!("{} {}", if on { "demoted by" } else { "lifted demotion of" }, self.value);
        Ok(())
    }

    #[cfg(not(target_os = "openbsd"))]
    fn apply(&self, on: bool) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", if on { self.value } else { 0 }))?;
        std::fs::rename(&tmp, file).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
    }

    #[cfg(target_os = "openbsd")]
    fn apply(&self, on: bool) -> io::Result<()> {
        carp::add_demote(&self.group, if on { i32::from(self.value) } else { -i32::from(self.value) })
    }
}

/// `_IOW(group, num, size)` of <sys/ioccom.h>, portable so it can be tested.
pub const fn ioc_w(group: u8, num: u8, size: usize) -> u32 {
    const IOC_IN: u32 = 0x8000_0000;
    const IOCPARM_MASK: u32 = 0x1fff;
    IOC_IN | (((size as u32) & IOCPARM_MASK) << 16) | ((group as u32) << 8) | num as u32
}

/// `struct ifgroupreq` of OpenBSD's <net/if.h> (amd64/arm64 layout).
#[repr(C)]
pub struct IfGroupReq {
    pub name: [u8; 16],
    pub len: u32,
    /// The union that follows holds a pointer, so it is 8-aligned.
    pub align: u32,
    /// The union: we only use `ifgru_attrib.ifg_carp_demoted`, padded to the
    /// union's size (a group name or a pointer, whichever is larger).
    pub carp_demoted: i32,
    pub pad: [u8; 12],
}

/// SIOCSIFGATTR = _IOW('i', 140, struct ifgroupreq).
pub const SIOCSIFGATTR: u32 = ioc_w(b'i', 140, std::mem::size_of::<IfGroupReq>());

#[cfg(target_os = "openbsd")]
mod carp {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub fn add_demote(group: &str, delta: i32) -> io::Result<()> {
        let mut req = IfGroupReq { name: [0; 16], len: 0, align: 0, carp_demoted: delta, pad: [0; 12] };
        if group.len() >= req.name.len() {
            return Err(io::Error::other(format!("demote group \"{group}\" name too long")));
        }
        req.name[..group.len()].copy_from_slice(group.as_bytes());
        // SAFETY: socket(2); owned at once.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if s == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: SIOCSIFGATTR takes a struct ifgroupreq.
        if unsafe { libc::ioctl(s.as_raw_fd(), SIOCSIFGATTR as libc::c_ulong, &mut req) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openbsd_ioctl_layout() {
        assert_eq!(std::mem::size_of::<IfGroupReq>(), 40);
        assert_eq!(std::mem::offset_of!(IfGroupReq, carp_demoted), 24);
        // _IOW('i', 140, struct ifgroupreq) on OpenBSD amd64.
        assert_eq!(SIOCSIFGATTR, 0x8028_698c);
    }

    #[cfg(not(target_os = "openbsd"))]
    #[test]
    fn track_file_holds_the_value() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-demote-{}", std::process::id()));
        let file = dir.join("sub/demote");
        let mut d = Demoter::new("carp".into(), Some(file.clone()), 50);
        d.set(true).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "50\n");
        assert!(d.is_demoted());
        d.set(false).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
