//! OpenBSD: the carp interface's link state from the routing socket.
//!
//! The message parsing and the state mapping are portable and tested on
//! Linux; only the watcher itself is compiled on OpenBSD.

use vpnsyncd_common::msg::Role;

/// `RTM_VERSION` of <net/route.h>.
pub const RTM_VERSION: u8 = 5;
/// `RTM_IFINFO` of <net/route.h>.
pub const RTM_IFINFO: u8 = 0xe;
/// Offset of `ifm_data.ifi_link_state` in `struct if_msghdr`: msglen(2)
/// version(1) type(1) hdrlen(2) index(2) tableid(2) pad(2) addrs(4) flags(4)
/// xflags(4), then if_data's type(1) addrlen(1) hdrlen(1) link_state(1).
const LINK_STATE_OFFSET: usize = 27;

/// carp(4) reports MASTER as link up, BACKUP as link down (sasyncd's carp.c).
pub fn role_of_link_state(state: u8) -> Role {
    const LINK_STATE_DOWN: u8 = 2;
    const LINK_STATE_UP: u8 = 4;
    const LINK_STATE_FULL_DUPLEX: u8 = 6;
    match state {
        LINK_STATE_DOWN => Role::Backup,
        LINK_STATE_UP..=LINK_STATE_FULL_DUPLEX => Role::Master,
        _ => Role::Init,
    }
}

/// Parses a routing message: `Some((ifindex, link_state))` for an RTM_IFINFO
/// of our version, `None` for anything else or anything malformed.
pub fn parse_ifinfo(msg: &[u8]) -> Option<(u16, u8)> {
    let msglen = u16::from_ne_bytes([*msg.first()?, *msg.get(1)?]) as usize;
    if msglen > msg.len() || msglen <= LINK_STATE_OFFSET || *msg.get(2)? != RTM_VERSION || *msg.get(3)? != RTM_IFINFO {
        return None;
    }
    let index = u16::from_ne_bytes([*msg.get(6)?, *msg.get(7)?]);
    Some((index, *msg.get(LINK_STATE_OFFSET)?))
}

#[cfg(target_os = "openbsd")]
pub use watcher::CarpWatcher;

#[cfg(target_os = "openbsd")]
mod watcher {
    use super::*;
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

    pub struct CarpWatcher {
        sock: OwnedFd,
        index: u16,
        role: Role,
    }

    impl CarpWatcher {
        /// The first state comes from getifaddrs(3) (if_data of the AF_LINK entry).
        pub fn new(sock: OwnedFd, interface: &str) -> io::Result<Self> {
            let index = nix::net::if_::if_nametoindex(interface)? as u16;
            let mut role = Role::Init;
            // SAFETY: getifaddrs/freeifaddrs pair; ifa_data of AF_LINK is a struct if_data.
            unsafe {
                let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
                if libc::getifaddrs(&mut ifap) == 0 {
                    let mut p = ifap;
                    while !p.is_null() {
                        let a = &*p;
                        let name = std::ffi::CStr::from_ptr(a.ifa_name).to_string_lossy();
                        if name == interface
                            && !a.ifa_addr.is_null()
                            && (*a.ifa_addr).sa_family as i32 == libc::AF_LINK
                            && !a.ifa_data.is_null()
                        {
                            role = role_of_link_state(*(a.ifa_data as *const u8).add(3));
                        }
                        p = a.ifa_next;
                    }
                    libc::freeifaddrs(ifap);
                }
            }
            Ok(CarpWatcher { sock, index, role })
        }
    }

    impl crate::Watcher for CarpWatcher {
        fn fd(&self) -> BorrowedFd<'_> {
            self.sock.as_fd()
        }

        fn read(&mut self) -> io::Result<Role> {
            let mut buf = [0u8; 2048];
            loop {
                match nix::unistd::read(self.sock.as_fd(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some((idx, state)) = parse_ifinfo(&buf[..n]) {
                            if idx == self.index {
                                self.role = role_of_link_state(state);
                            }
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let _ = self.sock.as_raw_fd();
            Ok(self.role)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifinfo(index: u16, state: u8) -> Vec<u8> {
        let mut m = vec![0u8; 64];
        m[0..2].copy_from_slice(&64u16.to_ne_bytes());
        m[2] = RTM_VERSION;
        m[3] = RTM_IFINFO;
        m[6..8].copy_from_slice(&index.to_ne_bytes());
        m[LINK_STATE_OFFSET] = state;
        m
    }

    #[test]
    fn link_states() {
        assert_eq!(role_of_link_state(0), Role::Init);
        assert_eq!(role_of_link_state(2), Role::Backup);
        assert_eq!(role_of_link_state(4), Role::Master);
        assert_eq!(role_of_link_state(6), Role::Master);
    }

    #[test]
    fn ifinfo_parsing() {
        assert_eq!(parse_ifinfo(&ifinfo(7, 4)), Some((7, 4)));
        let mut other = ifinfo(7, 4);
        other[3] = 0x1; // RTM_ADD
        assert_eq!(parse_ifinfo(&other), None);
        let mut old = ifinfo(7, 4);
        old[2] = 4;
        assert_eq!(parse_ifinfo(&old), None);
        let m = ifinfo(7, 4);
        for cut in 0..m.len() {
            assert_eq!(parse_ifinfo(&m[..cut]), None, "cut {cut}");
        }
    }
}
