//! The tun device's IPv6 address (`client network6`): the server's host 1
//! with the network's prefix, which also gives the kernel the connected
//! route of the IPv6 client network, gone with the device like the IPv4 one.

use std::io;

use vpnsyncd_config::Ipv6Net;

use crate::tun::{family_ioctl, ifname};

/// Gives the (up) device `name` the server's address in `net`.
pub fn configure(name: &str, net: Ipv6Net) -> io::Result<()> {
    sys::add(name, net).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{name}: IPv6 address {}/{}: {e} (is IPv6 disabled?)", net.server(), net.prefix),
        )
    })
}

fn in6_addr(a: std::net::Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: a.octets() }
}

/// Linux: SIOCSIFADDR on an AF_INET6 socket takes an in6_ifreq
/// (<linux/ipv6.h>), which names the device by index.
#[cfg(target_os = "linux")]
mod sys {
    use super::*;

    pub fn add(name: &str, net: Ipv6Net) -> io::Result<()> {
        let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("NUL in name"))?;
        ifname(name)?;
        // SAFETY: if_nametoindex on a valid C string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req = libc::in6_ifreq {
            ifr6_addr: in6_addr(net.server()),
            ifr6_prefixlen: net.prefix.into(),
            ifr6_ifindex: index as libc::c_int,
        };
        family_ioctl(libc::AF_INET6, libc::SIOCSIFADDR, &mut req)
    }
}

/// OpenBSD: SIOCAIFADDR_IN6 takes an in6_aliasreq (<netinet6/in6_var.h>),
/// with infinite lifetimes. Not compiled on Linux: keep it small.
#[cfg(target_os = "openbsd")]
mod sys {
    use super::*;

    #[repr(C)]
    struct Lifetime {
        expire: libc::time_t,
        preferred: libc::time_t,
        vltime: u32,
        pltime: u32,
    }

    #[repr(C)]
    struct In6Aliasreq {
        name: [libc::c_char; libc::IFNAMSIZ],
        addr: libc::sockaddr_in6,
        dstaddr: libc::sockaddr_in6,
        prefixmask: libc::sockaddr_in6,
        flags: libc::c_int,
        lifetime: Lifetime,
    }

    // _IOW('i', 26, struct in6_aliasreq) from <sys/sockio.h>
    const SIOCAIFADDR_IN6: libc::c_ulong = 0x8080_691a;
    const _: () = assert!(std::mem::size_of::<In6Aliasreq>() == 0x80, "SIOCAIFADDR_IN6 encodes a 128-byte request");
    /// ND6_INFINITE_LIFETIME.
    const INFINITE: u32 = 0xffff_ffff;

    fn sin6(a: std::net::Ipv6Addr) -> libc::sockaddr_in6 {
        // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
        let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        s.sin6_len = std::mem::size_of::<libc::sockaddr_in6>() as u8;
        s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        s.sin6_addr = in6_addr(a);
        s
    }

    pub fn add(name: &str, net: Ipv6Net) -> io::Result<()> {
        let mask = std::net::Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(net.prefix)).unwrap_or(0));
        // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
        let unset: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut req = In6Aliasreq {
            name: ifname(name)?,
            addr: sin6(net.server()),
            dstaddr: unset,
            prefixmask: sin6(mask),
            flags: 0,
            lifetime: Lifetime { expire: 0, preferred: 0, vltime: INFINITE, pltime: INFINITE },
        };
        family_ioctl(libc::AF_INET6, SIOCAIFADDR_IN6, &mut req)
    }
}
